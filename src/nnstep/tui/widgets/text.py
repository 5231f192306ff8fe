"""Text drawn as whole, cached lines (TextLines), and the styles the panels share."""
from __future__ import annotations

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.strip import Strip
from textual.widget import Widget

from ..format import keep
from .memo import DirectLines


def _fitted(segments: list, W: int, base: Style) -> Strip:
    """One line of ``W`` cells: the segments, padded with ``base`` or cut (one Strip made where
    they fit, not three: each Strip sets up seven caches)."""
    n = sum(cell_len(seg.text) for seg in segments)
    if n > W:
        return Strip(segments).crop(0, W).adjust_cell_length(W, base)
    if n < W:
        segments.append(Segment(" " * (W - n), base))
    return Strip(segments, W)


class TextLines(DirectLines, Widget):
    """Rich Text drawn from cached Strips (Line API): wrapped once per text and width, and only the
    lines that changed are repainted. A Static renders its Content again through Textual's styles
    cache on every repaint (about a third of a millisecond a line here, per key, py-spy)."""

    DEFAULT_CSS = "TextLines { height: auto; width: 100%; }"

    def __init__(self, **kw):
        super().__init__(**kw)
        self._text = Text()
        self._key = None
        self._wrapped = None             # (width, rich Lines) given by the owner, who wrapped them already
        self._strips: list[Strip] | None = None
        self._built_for = None
        self._base = None
        self._drawings: dict = {}        # key -> lines, at _built_for: the last few texts drawn

    def render(self) -> Text:
        """What it shows (the pipeline draws render_line; this is for tests and screen readers)."""
        return self._text

    def set_text(self, text: Text, key=None, wrapped=None) -> None:
        """Show ``text``; ``key`` says when it is the same as before (default: its text and
        spans); ``wrapped``: (width, rich Lines) if the caller has wrapped it at that width."""
        if key is None:
            key = (text.plain, tuple(text.spans), str(text.style))
        if key == self._key:
            return
        self._key = key
        self._text = text
        self._wrapped = wrapped
        old = self._strips
        self._strips = None
        W = self.size.width
        if old is None or not W or not self.is_mounted:
            self.refresh()
            return
        new = self._drawn(key, W)
        if len(new) != len(old):
            self.refresh()
            return
        from textual.geometry import Region
        changed = [Region(0, y, W, 1) for y, (a, b) in enumerate(zip(old, new)) if a is not b and a != b]
        if changed:
            self.refresh(*changed)

    def _drawn(self, key, W: int) -> list[Strip]:
        """The lines of the text set now (``key``), as drawn before at this width and style if it
        was shown lately (the header and status of a position gone back to), else drawn now."""
        if self._base is not None and self._built_for == (W, self._base):
            hit = self._drawings.get(key)
            if hit is not None:
                self._strips = hit
                return hit
        else:
            self._drawings = {}
        return keep(self._drawings, key, self._build(W))

    def wrap(self, text: Text, width: int):
        return text.wrap(self.app.console, max(1, width))

    PAD = 0
    """Blank columns drawn at either side (CSS padding would send every line through Textual's
    styles cache: ~0.15 ms a repaint)."""

    def _build(self, W: int) -> list[Strip]:
        if self._base is None:
            self._base = self.rich_style          # (it walks the ancestors' styles: kept)
        base = self._base
        text = self._text
        pad = self._pad(W)
        inner = W - 2 * pad
        if self._wrapped is not None and self._wrapped[0] == inner:
            lines = self._wrapped[1]
        elif "\n" not in text.plain and text.cell_len <= inner:
            lines = [text]                        # one line that fits: nothing to wrap
        else:
            lines = self.wrap(text, inner)
        console = self.app.console
        # (in the background alone, as Textual draws padding)
        edge = [Segment(" " * pad, Style(bgcolor=base.bgcolor))] if pad else []
        # Text.render leaves out the Text's own style (rich applies it in __rich_console__)
        strips = [_fitted(edge + list(Segment.apply_style(line.render(console), base + console.get_style(line.style)
                                                          if line.style else base)), W - pad, base)
                  for line in lines]
        if pad:
            strips = [Strip([*strip, *edge], W) for strip in strips]
        self._strips, self._built_for = strips, (W, base)
        self._blank = Strip([*edge, Segment(" " * inner, base), *edge], W) if pad else Strip.blank(W, base)
        return strips

    def _pad(self, W: int) -> int:
        return min(self.PAD, max(0, (W - 1) // 2))

    def get_content_height(self, container, viewport, width: int) -> int:
        return len(self.wrap(self._text, width - 2 * self._pad(width)))

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._strips = None
        self._base = None

    def lines_in(self, lines: range, W: int) -> list[Strip]:
        if self._strips is None or self._built_for[0] != W:
            self._build(W)
        strips, n = self._strips, len(self._strips)
        return [strips[y] if y < n else self._blank for y in lines]


STAGE_ICON = {"forward": "→", "loss": "Σ", "backward": "←", "update": "Δ"}
WRITTEN = "bold black on #e0b040"
NONFINITE = "bold white on red"


_WRAPS: dict = {}


def wrapped(text: Text, width: int, console):
    """``text`` wrapped at ``width`` (rich Lines), remembered: stepping back and forth shows the
    same formulas again, and wrapping is most of what a formula costs."""
    key = (text.plain, tuple(text.spans), width)
    hit = _WRAPS.get(key)
    if hit is None:
        if len(_WRAPS) > 512:
            _WRAPS.clear()
        hit = _WRAPS[key] = text.wrap(console, max(1, width))
    return hit
