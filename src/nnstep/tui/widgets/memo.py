"""Widgets that hand the compositor the very same lines again when nothing in them changed.

Textual's compositor asks every widget under the bounding box of a frame's changes for its lines,
and the header (row 0) changes on every key, so every widget on the screen is asked on every key.
Textual's styles cache then keeps the widget's lines, but each ask still works out the widget's
background (walking its ancestors), its border titles, its filters and crop: 0.1-0.2 ms a widget,
about a millisecond and a half of each key over the 15 widgets of the main screen (render_lines
timed per widget in-process, 40 keys of the classic lesson).

``MemoLines.render_lines`` returns the list it returned last time when the styles cache would
return the same lines: no line of the crop is dirty and each is the very Strip object it was. The
styles cache's lines change exactly when Textual repaints the widget (a refresh, a resize, a style
or theme change all go through the widget's dirty regions), so this is as fresh as Textual's own cache.
What Textual applies after its cache, per ask, is part of the key: the crop, the app's line filters
and the hover style (links)."""
from __future__ import annotations

from textual.containers import Horizontal, Vertical
from textual.screen import Screen

from .. import compat


class MemoLines:
    """A mixin, first among the bases, for a widget (or container) whose lines can be reused."""

    _memo = None

    def render_lines(self, crop):
        if not compat.CAN_REUSE:          # (a Textual without them: every ask drawn as Textual draws it)
            return super().render_lines(crop)
        cache, dirty = compat.styles_cache_lines(self)
        key = (crop, tuple(self.app.get_line_filters()), self.hover_style)
        memo = self._memo
        if memo is not None and memo[0] == key:
            lines = crop.line_range
            if (not dirty or dirty.isdisjoint(lines)) and all(
                    cache.get(y) is s for y, s in zip(lines, memo[1])):
                return memo[2]
        strips = super().render_lines(crop)
        self._memo = (key, [cache.get(y) for y in crop.line_range], strips)
        return strips


class DirectLines(MemoLines):
    """A mixin, first among the bases, for a Line-API widget whose ``render_line`` gives whole,
    cached Strips of its own width (its style's background included): while the widget has no
    border, padding, outline, tint, hatch or opacity, its lines go to the compositor as they are,
    with only the app's line filters applied (each Strip keeps its filtered self), without the
    styles cache. The styles cache's per-line work (borders, padding, opacity, tint, a new Strip
    for every line) was about half of a repainted line's cost; an op repaints 20-40 lines.
    With any of those styles, the widget is drawn as any other (MemoLines)."""

    _plain = None                  # (no styles the cache would apply, the widget's background)
    FILTERS_APPLIED = False        # lines_in gives its lines through the app's line filters already

    # a stylesheet or theme change notifies; a style set in code (widget.styles.border = ...)
    # refreshes the whole widget: either may bring a border or a background. (A refresh of some
    # regions, the panels' own repaint of the lines that changed, does not.)
    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._plain = None

    def refresh(self, *regions, repaint: bool = True, layout: bool = False, recompose: bool = False):
        if not regions:
            self._plain = None
        if repaint and not layout and not recompose and compat.repaint_now(self, regions):
            return self
        # (else Textual's own way: see compat.repaint_now for what the direct way skips)
        return super().refresh(*regions, repaint=repaint, layout=layout, recompose=recompose)

    def _plain_styles(self):
        s = self.styles
        plain = (not any(edge for edge, _ in s.border) and not any(edge for edge, _ in s.outline)
                 and not any(s.padding) and not s.tint.a and s.opacity == 1.0 and s.text_opacity == 1.0
                 and not (s.has_rule("hatch") and s.hatch != "none"))
        return plain, self.background_colors[1]

    def lines_in(self, lines: range, width: int) -> list:
        """Lines ``lines`` of the widget, ``width`` (its own) wide, as whole Strips: what each
        DirectLines widget defines (in one call, without asking for its size once a line: each
        ask walks to the screen's map, a sixth of a frame's time in a profile)."""
        raise NotImplementedError

    def render_line(self, y: int):
        # (what the styles cache asks for, when the widget has a border or padding after all)
        return self.lines_in(range(y, y + 1), self.size.width)[0]

    def render_lines(self, crop):
        plain = self._plain
        if plain is None:
            plain = self._plain = self._plain_styles()
        if not plain[0]:
            return super().render_lines(crop)
        W = self.size.width
        strips = self.lines_in(crop.line_range, W)
        background = plain[1]
        if not self.FILTERS_APPLIED:
            for line_filter in self.app.get_line_filters():
                strips = [strip.apply_filter(line_filter, background) for strip in strips]
        x1, x2 = crop.column_span
        if x1 or x2 != W:
            strips = [strip.crop(x1, x2) for strip in strips]
        return strips


class MemoHorizontal(MemoLines, Horizontal):
    pass


class MemoVertical(MemoLines, Vertical):
    pass


class MemoScreen(MemoLines, Screen):
    pass
