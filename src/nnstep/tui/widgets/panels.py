"""The panels of the main screen. Each takes plain data (a View, below) and draws it; none of them
reads the session or computes anything."""
from __future__ import annotations

import math

import numpy as np


from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.strip import Strip
from textual.widget import Widget
from textual.renderables._blend_colors import blend_colors
from textual.widgets import Sparkline, Static

from .. import diagram
from ..format import as_2d, by_array, compact, grid_2d, keep, nonfinite_text, num
from .memo import DirectLines, MemoLines
from .tensor import TensorCanvas, natural_size

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


class HeaderBar(TextLines):
    def show(self, name: str, k: int, N: int, stage: str, i: int, M: int, opname: str, loss, running=False,
             lr=None, score=None):
        """``lr``: the learning rate in force this step (a schedule's ``lr`` tensor), or None;
        ``score``: a lesson's (right, asked), once a question has been asked."""
        t = Text(no_wrap=True, overflow="ellipsis")
        width = self.app.size.width
        if width >= 100:
            t.append(" nnstep ", "bold reverse")
        lr_text = f" │ lr {num(lr, 6)}" if lr is not None else ""
        if score is not None:
            lr_text += f" │ score {score[0]}/{score[1]}"
        # the name gives way first, so step, stage, op and the loss always fit (80 columns included)
        fixed = len(t.plain) + len(f"│ step {k}/{N} │ {stage} │ op {i + 1}/{M} │ loss ") + 12 + 2 + len(lr_text)
        room = max(8, width - fixed)
        if len(name) > room:
            name = name[:room - 1] + "…"
        t.append(f" {name} ", "bold")
        t.append("│ ")
        t.append(f"step {k}/{N}" if k <= N else f"done {N}/{N}", "bold")
        t.append(" │ ")
        t.append(stage, "bold")
        t.append(" │ ")
        t.append(f"op {i + 1}/{M}" if k <= N else "end of training")
        t.append(" │ loss ")
        bad = loss is not None and (loss != loss or loss in (float("inf"), float("-inf")))
        t.append(num(loss, 9) if loss is not None else "—", NONFINITE if bad else "bold")
        if lr_text:
            t.append(lr_text)
        if k <= N and opname:
            t.append(f" │ next: {opname}")
        if running:
            t.append("  ● running (Esc stops)", "bold yellow")
        self.set_text(t, (t.plain, width))


class KeyBar(DirectLines, Widget):
    """The footer of keys, one line drawn here: Textual's Footer is a widget per key, measured on
    every relayout and recomposed whenever an action's availability changes (an eighth of the
    app's time per key, py-spy). Keys the app cannot run now are dim; what does not fit is cut
    from the end (the order of the bindings puts the least needed last)."""

    DEFAULT_CSS = "KeyBar { height: 1; width: 100%; }"

    def __init__(self, **kw):
        super().__init__(**kw)
        self._state = None
        self._strips: dict = {}          # (state, width) -> the line: the footers drawn so far
        self.show_command_palette = True

    def set_keys(self, keys: list[tuple[str, str, bool]]):
        """(key as shown, what it does, available now)."""
        state = (tuple(keys), self.show_command_palette)
        if state != self._state:
            self._state = state
            self.refresh()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._strips = {}

    def lines_in(self, lines: range, W: int) -> list[Strip]:
        return [self._line(W) if y == 0 and self._state is not None else Strip.blank(W, self.rich_style)
                for y in lines]

    def _line(self, W: int) -> Strip:
        hit = self._strips.get((self._state, W))
        if hit is None:
            base = self.rich_style
            keys, palette = self._state
            key_on, key_off = Style(bold=True, color="#ffa62b"), Style(dim=True, color="#ffa62b")
            right = [Segment("▏", Style(dim=True)), Segment("^p", key_on), Segment(" palette ", base)] if palette else []
            room = W - sum(len(s.text) for s in right)
            # "n next p prev ...", or "nnext pprev ..." on a narrow screen (Textual's compact footer),
            # so that help and quit stay in reach at 80 columns
            gap = " " if W >= 100 else ""
            segs, used = [], 0
            for k, what, on in keys:
                cell = [Segment(k, key_on if on else key_off), Segment(f"{gap}{what} ", base if on else base + Style(dim=True))]
                n = len(k) + len(what) + 1 + len(gap)
                if used + n > room:
                    break
                segs += cell
                used += n
            segs.append(Segment(" " * max(0, room - used), base))
            hit = keep(self._strips, (self._state, W), Strip(segs + right).crop(0, W).adjust_cell_length(W, base))
        return hit


class StatusBar(TextLines):
    """The status line, and the prompt that ``g`` types into (a line editor of its own: a dialog
    screen relayouts and repaints the whole main screen when it closes, about 100 ms here)."""
    PAD = 1

    def __init__(self, **kw):
        super().__init__(**kw)
        self._shown = ("", "")
        self._prompt = None           # [label, what is typed, callback, hint]

    @property
    def prompting(self) -> bool:
        return self._prompt is not None

    def show(self, text: str, kind: str = ""):
        self._shown = (text, kind)
        if self._prompt is None:
            self._draw(text, kind)

    def _draw(self, text: str, kind: str):
        style = {"stop": "bold yellow", "bad": NONFINITE, "error": "bold red"}.get(kind, "italic")
        self.set_text(Text(text, style=style, overflow="ellipsis"), (text, kind))

    def prompt(self, label: str, hint: str, done, changed=None) -> None:
        """Take the keys (the app passes them on: ``prompt_key``) until Enter (``done(typed)``)
        or Esc (``done(None)``); ``label`` is shown before what is typed, ``hint`` after it;
        ``changed(typed)`` after each key that changes what is typed. Focus does not move: a
        focus change repaints the whole screen (Screen.focused is a repainting reactive)."""
        self._prompt = [label, "", done, hint]
        self._changed = changed
        self._draw_prompt()

    @property
    def typed(self) -> str | None:
        """What is typed in the prompt now (None: no prompt)."""
        return None if self._prompt is None else self._prompt[1]

    def _draw_prompt(self) -> None:
        label, typed, _, hint = self._prompt
        t = Text(overflow="ellipsis", no_wrap=True)
        t.append(label, "bold")
        t.append(typed, "bold")
        t.append("▏", "bold")
        t.append(f"   {hint}", "dim")
        self.set_text(t, ("prompt", label, typed, hint))

    def prompt_key(self, event) -> None:
        """A key while prompting: Enter, Esc, Backspace, Ctrl+U (clear), or a character typed."""
        if event.key == "enter":
            self.end_prompt(True)
            return
        if event.key == "escape":
            self.end_prompt(False)
            return
        if event.key == "backspace":
            self._prompt[1] = self._prompt[1][:-1]
        elif event.key == "ctrl+u":
            self._prompt[1] = ""
        elif event.is_printable and event.character and len(self._prompt[1]) < 40:
            self._prompt[1] += event.character
        before = self._key
        self._draw_prompt()
        if self._key != before and self._changed is not None:
            self._changed(self._prompt[1])

    def end_prompt(self, ok: bool) -> None:
        if self._prompt is None:
            return
        typed, done = self._prompt[1], self._prompt[2]
        self._prompt = None
        self._draw(*self._shown)
        done(typed if ok else None)


class ProgramLines(DirectLines, Widget):
    """The program's lines as cached Strips (a Static with styled Content costs ~10x more to paint)."""

    DEFAULT_CSS = "ProgramLines { height: auto; width: 100%; }"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.lines: list[list[tuple[str, str]]] = []
        self._strips = None
        self._built_for = None

    def set_lines(self, lines):
        resize = len(lines) != len(self.lines)
        if resize or self._strips is None:
            self.lines = lines
            self._strips = None
            if resize:
                # the height as a style, not as auto's content height: Textual keeps a widget's
                # box model by a count of its layout requests, and a second request before the
                # first is handled does not count, so a layout in between kept the first height
                # (the diagram drawn as a list at 0x0, then as a graph at its size: cut to the
                # list's rows). A new style is a new key.
                self.styles.height = len(lines)
            self.refresh()
            return
        # one step moves a marker or two: repaint only the lines that changed (a whole-widget
        # refresh re-renders every line through Textual's styles cache, per key)
        changed = [y for y, (a, b) in enumerate(zip(self.lines, lines)) if a != b]
        self.lines = lines
        if not changed:
            return
        from textual.geometry import Region
        W = self.size.width
        for y in changed:
            self._strips[y] = None
        self.refresh(*(Region(0, y, W, 1) for y in changed))

    def get_content_height(self, container, viewport, width: int) -> int:
        return len(self.lines)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._strips = None                # built again with the new style

    def _strip(self, parts, W: int) -> Strip:
        key = tuple(parts)                 # (a line drawn before at this width: an op done, then
        hit = self._drawn.get(key)         # not done again after a step back or a go-to)
        if hit is not None:
            return hit
        base = self._base                  # rich_style walks the ancestors' styles: kept
        cache = self._style_cache

        def st(name):
            if name not in cache:
                cache[name] = base + Style.parse(name) if name else base
            return cache[name]
        strip = Strip([Segment(t, st(sty)) for t, sty in parts])
        if strip.cell_length > W:
            strip = strip.crop(0, max(0, W - 1)) + Strip([Segment("…", base)])
        strip = strip.adjust_cell_length(W, base)
        if len(self._drawn) > 4 * max(16, len(self.lines)):
            self._drawn.clear()
        self._drawn[key] = strip
        return strip

    def lines_in(self, lines: range, W: int) -> list[Strip]:
        if self._strips is None or self._built_for != W:
            self._style_cache: dict[str, Style] = {}
            self._drawn: dict = {}          # a line's parts -> its Strip, at this width and style
            self._base = self.rich_style
            self._strips, self._built_for = [self._strip(p, W) for p in self.lines], W
            self._blank = Strip.blank(W, self._base)
        strips, n = self._strips, len(self._strips)
        out = []
        for y in lines:
            s = strips[y] if y < n else self._blank
            if s is None:
                s = strips[y] = self._strip(self.lines[y], W)
            out.append(s)
        return out


def fit_name(op, room: int) -> str:
    """An op's name in ``room`` columns of the program, keeping what tells it from its neighbours:
    first the stage word goes (its section's heading says it: "backward lstm1 t3" → "lstm1 t3"),
    then the start of what is left ("…attn softmax" → "…n softmax"), never the end."""
    name = op.name
    if len(name) <= room:
        return name
    head, _, rest = name.partition(" ")
    if head == op.stage and rest:
        name = rest
    if len(name) <= room or room < 2:
        return name
    return "…" + name[-(room - 1):]


def graph_mark(op) -> str:
    """Where the graph forks and merges, in the program: a fork's backward sums what its readers
    sent back (Σ of n); a merge's ops read (forward) or send back to (backward) several layers."""
    n = sum(1 for s in op.ins if s.role == "contribution")
    if n:
        return f" Σ{n}"
    own = f"{op.layer}."
    if op.stage == "forward" and len({s.name for s in op.ins if s.role == "input" and not s.name.startswith(own)
                                      and (s.name == "input" or s.name.endswith(".out"))}) > 1:
        return " ⊕"
    if op.stage == "backward" and any(s.name.endswith(".grad_in.1") for s in op.outs):
        return " ⊕"
    return ""


class ProgramView(MemoLines, VerticalScroll):
    """Every op of the step grouped by stage; ✓ done, ▶ next, ● breakpoint."""

    def compose(self) -> ComposeResult:
        yield ProgramLines(id="program-text")

    def show(self, ops, i: int, done_all: bool, breakpoints: set[str], just_ran: int | None,
             differs: frozenset = frozenset()):
        """``differs``: indices of this step's ops whose outputs differ from the user's (compare)."""
        room = (self.size.width or 31) - 1              # (the scrollbar's column)
        key = (i, done_all, frozenset(breakpoints), just_ran, len(ops), differs, room)
        if key == getattr(self, "_key", None):
            return
        self._key = key
        lines = []
        stage = None
        line_of_current = 0
        for op in ops:
            if op.stage != stage:
                stage = op.stage
                lines.append([(f"{STAGE_ICON.get(stage, '')} {stage}", "bold underline")])
            bp = "●" if op.name in breakpoints else " "
            if done_all or op.index < i:
                mark, style = "✓", "dim"
            elif op.index == i:
                mark, style = "▶", "bold reverse"
                line_of_current = len(lines)
            else:
                mark, style = " ", ""
            if just_ran == op.index:
                style = WRITTEN
            gm = graph_mark(op)
            lines.append([(bp, "bold red"), (f"{mark}{op.index + 1:>3} {fit_name(op, room - 6 - len(gm))}", style)]
                         + ([(gm, "dim" if style != WRITTEN else style)] if gm else [])
                         + ([(" ≠ yours", "bold red")] if op.index in differs else []))
        self.query_one(ProgramLines).set_lines(lines)
        h = self.size.height
        if h and not (self.scroll_y <= line_of_current < self.scroll_y + h - 1):
            self.scroll_to(y=max(0, line_of_current - h // 2), animate=False)

    def text(self) -> str:
        return "\n".join("".join(t for t, _ in parts) for parts in self.query_one(ProgramLines).lines)


class DiagramView(MemoLines, VerticalScroll):
    """The network as a graph (tui.diagram): boxes for layers, lanes for skips and merges, the
    current op's layer marked; a one-line-per-layer list when the panel is too narrow or short."""

    def compose(self) -> ComposeResult:
        yield ProgramLines(id="diagram-text")

    def show(self, scenario, current: str | None):
        W, H = self.size.width, self.size.height
        self._args = (scenario, current)
        if not (W and H):
            # not laid out yet (d was just pressed): on_resize draws it at its size. Drawn at 0x0
            # too, the list's lines came first and the graph's (more of them) at the resize; when
            # the screen's layout ran between the two, Textual kept the first height (its box model
            # is cached by a count of layout requests, and a second request before the first is
            # handled does not count), and the graph was cut to the list's rows for good
            return
        key = (id(scenario), current, W, H)
        if key == getattr(self, "_key", None):
            return
        self._key = key
        n = len(scenario.layers) + 2
        as_graph = W >= diagram.graph_width(scenario) + 14 and 2 * n - 1 <= H
        lines, cur = (diagram.graph_lines if as_graph else diagram.list_lines)(scenario, current)
        self.as_graph = as_graph
        self.query_one(ProgramLines).set_lines(lines)
        if H and not (self.scroll_y <= cur < self.scroll_y + H - 1):
            self.scroll_to(y=max(0, cur - H // 2), animate=False)

    def on_resize(self) -> None:
        if getattr(self, "_args", None):
            self.show(*self._args)

    def text(self) -> str:
        return "\n".join("".join(t for t, _ in parts) for parts in self.query_one(ProgramLines).lines)


class SparkLines(DirectLines, Sparkline):
    """Textual's Sparkline (its look, colours and component classes), drawn once per data and size
    into cached Strips (Line API): a Sparkline renders its bars again through the styles cache on
    every ask, 1.4 ms of each key that adds a loss (py-spy, the 784-256-128-10 net). Drawing the
    bars is still ~0.8 ms (a Style made per bar): the last few drawings are kept by their data, so
    going back to a step, or stepping back over a loss op and on again, draws nothing."""

    _drawn = None                       # ((W, H), strips, a blank line): the data's drawing now
    _data_key = ()                      # the data, as a tuple

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self._drawings: dict = {}       # (data, W, H) -> (strips, blank), in the style now

    def watch_data(self) -> None:
        self._drawn = None
        self._data_key = tuple(self.data or ())

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._drawn = None                  # (drawn again in the new style: rich_style is read then)
        self._drawings = {}

    def lines_in(self, lines: range, W: int) -> list[Strip]:
        H = self.size.height
        if self._drawn is None or self._drawn[0] != (W, H):
            key = (self._data_key, W, H)
            hit = self._drawings.get(key)
            if hit is None:
                base = self.rich_style          # (it walks the ancestors' styles: once per drawing)
                hit = keep(self._drawings, key, ([Strip(line).adjust_cell_length(W, base)
                                                   for line in spark_lines(self.render(), max(1, H), base)],
                                                  Strip.blank(W, base)))
            self._drawn = ((W, H), *hit)
        _, strips, blank = self._drawn
        return [strips[y] if y < len(strips) else blank for y in lines]


def spark_lines(spark, H: int, base: Style) -> list[list[Segment]]:
    """The lines of Textual's Sparkline renderable ``spark`` (its data, size, colours, summary),
    ``H`` high, in ``base``: the segments console.render_lines(spark, ..., style=base, pad=True)
    gives, made with one colour a column (the renderable blends and makes a Style for every bar of
    every line, and rich adds ``base`` to each: ~0.5 ms a drawing, 0.9 ms in the app)."""
    data, W = spark.data, spark.width
    if not data:
        return [[Segment(" " * W, base)] for _ in range(H - 1)] + [[Segment("▁" * W, base + spark.min_color)]]
    if len(data) == 1:
        return [[Segment("█" * W, base + spark.max_color)] for _ in range(H)]
    bars = spark.BARS
    per_line = len(bars)
    levels = per_line * (spark.height or 1) - 1
    lo, hi = min(data), max(data)
    extent = hi - lo or 1
    buckets = tuple(spark._buckets(list(data), num_buckets=W))
    step = len(buckets) / W
    c0, c1 = spark.min_color.color, spark.max_color.color
    cols = []
    at = 0.0
    for _ in range(W):                       # as the renderable walks its buckets
        ratio = (spark.summary_function(buckets[int(at)]) - lo) / extent
        cols.append((int(ratio * levels), base + Style.from_color(blend_colors(c0, c1, ratio))))
        at += step
    blank = Segment(" ", base)
    out = []
    for i in reversed(range(spark.height or 1)):
        low, high = i * per_line, (i + 1) * per_line
        out.append([blank if b < low else Segment("█" if b >= high else bars[b % per_line], st) for b, st in cols])
    out = out[:H]
    return out + [[Segment(" " * W, base)] for _ in range(H - len(out))]


class LossCurve(MemoLines, Vertical):
    def compose(self) -> ComposeResult:
        yield TextLines(id="loss-label")
        yield SparkLines([], id="loss-spark")
        yield TextLines(id="lr-label")
        yield SparkLines([], id="lr-spark")

    KEEP = object()

    def show(self, history: list[tuple[int, float]], lrs=None):
        """``lrs``: with a schedule, the lr in force at each step of ``history`` (the engine's
        tensor `lr`, logged by the session), plotted under the loss; None hides that part, KEEP
        leaves it as it is (the progress of a run)."""
        key = (len(history), history[-1] if history else None)
        if lrs is not self.KEEP:
            key += (None if lrs is None else len(lrs),)
        if key == getattr(self, "_key", None):
            return
        self._key = key
        if lrs is not self.KEEP:
            self._show_lr(lrs)
        lab = self.query_one("#loss-label", TextLines)
        sp = self.query_one("#loss-spark", Sparkline)
        if not history:
            lab.set_text(Text("no loss computed yet", style="dim"))
            sp.data = []                      # blank, but in place: showing it later is no relayout
            return
        vals = [v for _, v in history]
        finite = [v for v in vals if v == v and abs(v) != float("inf")]
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append(f"step {history[-1][0]}: ", "")
        t.append(num(vals[-1], 5), "bold")
        data = finite
        if len(data) > 2000:                          # the curve is ~100 cells wide
            data = data[:: len(data) // 2000 + 1] + data[-1:]
        log = len(finite) >= 2 and min(finite) > 0 and max(finite) / min(finite) > 1000
        if log:
            data = [math.log10(v) for v in data]
        title = ("loss curve (log scale)" if log else "loss curve") + (" · lr" if self.has_class("-lr") else "")
        if title != self.border_title:        # (setting it repaints the whole panel, even unchanged)
            self.border_title = title
        if len(finite) < len(vals):
            t.append(" NaN/Inf!", NONFINITE)
        if len(vals) > 1:                     # a second line: the left column is narrow
            t.append(f"\nfirst {num(vals[0], 4)}", "dim")
            if finite:
                t.append(f" · min {num(min(finite), 4)}", "dim")
        lab.set_text(t)
        sp.data = data if len(finite) >= 2 else []

    def _show_lr(self, lrs):
        lab = self.query_one("#lr-label", TextLines)
        sp = self.query_one("#lr-spark", Sparkline)
        self.set_class(lrs is not None, "-lr")
        lab.display = sp.display = lrs is not None
        if lrs is None:
            return
        vals = [float(v) for v in lrs if v == v]
        if not vals:
            lab.set_text(Text("lr: no step yet", style="dim"))
            sp.display = False
            return
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append("lr ", "")
        t.append(num(vals[-1], 5), "bold")
        t.append(f"  (min {num(min(vals), 3)} · max {num(max(vals), 3)})", "dim")
        lab.set_text(t)
        data = vals if len(vals) <= 2000 else vals[:: len(vals) // 2000 + 1] + vals[-1:]
        sp.display = len(vals) >= 2
        sp.data = data if len(data) >= 2 else [0.0, 0.0]


SPARK = "▁▂▃▄▅▆▇█"


def grad_norm_text(steps, names, norms, width: int, now=None, step: int | None = None) -> Text:
    """Per layer, its parameter-gradient norm over the steps taken, as a sparkline on one log scale
    shared by every layer (so a vanishing gradient is a low row, an exploding one a high row),
    then the last value. ``norms[step, layer]`` comes from the session. More steps than columns
    are shown whole, each column the mean of its steps' logs. Before the first backward stage
    has ended, ``now`` (the session's norms so far in ``step``, None where not computed yet)."""
    t = Text(no_wrap=True, overflow="ellipsis")
    if len(steps) == 0:
        if not names:
            t.append("no trainable parameters", "dim")
        elif now is None or all(v is None for v in now):
            t.append("no backward pass yet", "dim")
        else:
            nw = min(8, max(len(n) for n in names))
            t.append(f"step {step}'s backward pass so far" + "\n", "dim")
            for j, (name, v) in enumerate(zip(names, now)):
                t.append(f"{name[:nw]:<{nw}} ", "bold")
                t.append("·" if v is None else num(float(v), 3), "dim" if v is None else "")
                if j < len(names) - 1:
                    t.append("\n")
        return t
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log10(norms)
    fin = logs[np.isfinite(logs)]
    lo, hi = (float(fin.min()), float(fin.max())) if fin.size else (0.0, 0.0)
    nw = min(8, max(len(n) for n in names))
    room = max(4, width - nw - 10)
    a, b, k = math.floor(lo), math.ceil(hi), int(steps[-1])
    # the heading on one line (a wrapped one hid a layer's row at 80x24): shorter as the panel narrows
    heads = (f"log scale 1e{a} … 1e{b}, step {k}", f"log 1e{a}…1e{b}, step {k}", f"1e{a}…1e{b} step {k}")
    t.append(next((h for h in heads if len(h) <= width), heads[-1]) + "\n", "dim")
    cols = _columns(logs, room)
    for j, name in enumerate(names):
        t.append(f"{name[:nw]:<{nw}} ", "bold")
        for v in cols[:, j]:
            if not np.isfinite(v):
                t.append("!" if v != -np.inf else " ", NONFINITE if v != -np.inf else "")
                continue
            lev = 0 if hi <= lo else int(round((v - lo) / (hi - lo) * (len(SPARK) - 1)))
            t.append(SPARK[lev], "cyan")
        t.append(" " * (room - len(cols)) + f" {num(float(norms[-1, j]), 2)}")
        if j < len(names) - 1:
            t.append("\n")
    return t


def _columns(logs: np.ndarray, room: int) -> np.ndarray:
    """Every step in at most ``room`` columns: each column the mean log of its steps, a NaN or an
    Inf among them kept (it is what a reader must see)."""
    n = len(logs)
    if n <= room:
        return logs
    edges = np.linspace(0, n, room + 1).astype(int)
    out = np.empty((room, logs.shape[1]))
    for c in range(room):
        part = logs[edges[c]:edges[c + 1]]
        fin = np.isfinite(part)
        first_bad = part[np.argmax(~fin, axis=0), np.arange(part.shape[1])]
        with np.errstate(invalid="ignore"):
            out[c] = np.where(fin.all(axis=0), part.mean(axis=0), first_bad)
    return out


class GradNorms(MemoLines, Static):
    """The per-layer gradient-norm plot (toggled with G in place of the loss curve)."""

    def show(self, steps, names, norms, now=None, step=None):
        # (just shown, the widget has no size yet: the column it sits in has)
        width = self.size.width or max(0, self.parent.size.width - 2)
        key = (len(steps), int(steps[-1]) if len(steps) else None, width, None if len(steps) else tuple(now or ()))
        if key == getattr(self, "_key", None):
            return
        self._key = key
        self.update(grad_norm_text(steps, names, norms, max(20, width), now, step), layout=False)


class OpPanel(MemoLines, Vertical):
    """The current operation: its formula, clause by clause with the numbers of the small tensors
    under each clause (the textbook line), and its tensors in boxes sized to their content that wrap
    into rows; tensors too big for numbers are heatmaps sharing the space that is left."""
    SLOTS = 8
    MIN_HEAT_W = 20                     # a heatmap box narrower than this shows little
    MIN_HEAT_H = 6
    MAX_HEAT_H = 14                     # taller shows no more to the eye, and costs more per key

    def compose(self) -> ComposeResult:
        yield TextLines(id="op-title")
        yield TensorCanvas(self.SLOTS, id="op-tensors")

    def __init__(self, **kw):
        super().__init__(**kw)
        self._seen_h: dict = {}          # (width, most rows) -> (the panel's, its canvas content's) heights needed so far
        self._height = None              # the panel's height set now
        self._op = None                  # (the op shown: its title and its tensors)

    def show(self, title: Text, clauses: list, slots: list[tuple], digits: int,
             n_boxes: int = 0, stage: str = "", room: tuple[int, int] = (80, 19), big: bool = False,
             compare: dict | None = None, measure: bool = False, masks: dict | None = None):
        """``room``: (inner width, most rows the panel may take, borders included[, whether it takes
        them all: nothing below it but the lesson, the layers table hidden]). ``big``: a
        network with parameters too big for numbers: its boxes are laid out side by side, as many
        as the most any op of this stage needs (``n_boxes``), at a constant height, so that stepping
        within a stage never changes the layout (a relayout per key is what costs on such nets).
        ``measure``: only note the heights this op needs at this size, draw nothing (the app
        measures a step's ops before the user steps through them, so the panel never grows).
        ``masks``: {tensor: where a mask hides its cells} (view.masked_cells), marked in the boxes."""
        if big and measure:
            return
        if not measure:
            self.query_one("#op-title", TextLines).set_text(title)
            self._compare = compare or {}
            self._masks = masks or {}
        plan = self._plan(clauses, slots, digits, n_boxes, room, big, compare, measure)
        if plan is None:
            return
        self._apply(*plan)
        self._fill(slots, digits)
        op = (title.plain, tuple((name, id(value)) for _, name, value, _ in slots))
        if op != self._op:                 # another op (or the same one's new values): its boxes in view
            self._op = op
            self.query_one(TensorCanvas).settle()

    def prebuild_steps(self, slots: list, digits: int, n_boxes: int, room: tuple[int, int], compare=None,
                       clauses: list = (), big: bool = True, masks: dict | None = None):
        """An op the app computed ahead: build its boxes' lines where show() will place them,
        drawing nothing (a big network's places depend only on the stage; a small one's on the
        formula and the boxes' sizes, noted as show() notes them). A generator, a box a step
        (TensorCanvas.prebuild_steps)."""
        plan = self._plan(clauses, slots, digits, n_boxes, room, big, compare, False)
        return self.query_one(TensorCanvas).prebuild_steps(slots, digits, compare, plan[1], masks)

    def _plan(self, clauses, slots, digits, n_boxes, room, big, compare, measure):
        """Where the panel puts the formula and the boxes: (panel height, (slot, x, y, width,
        height) per box, the formula's lines, the content's height), or None when ``measure``."""
        theirs = compare or {}
        W, max_h, *fill = room
        fill = bool(fill and fill[0])
        fw = max(10, W)
        f = formula_text(clauses)
        f_wrapped = _wrapped(f, fw, self.app.console)
        f_lines = len(f_wrapped) if W > 0 else 1

        def short():
            t = formula_text(clauses, compact=True)
            lines = _wrapped(t, fw, self.app.console)
            return t, lines, (len(lines) if W > 0 else 1)
        if big:
            f_h = self.UNIFORM_FORMULA_H
            if f_lines > f_h:
                f, f_wrapped, _ = short()
            panel_h, placed = self._uniform_places(len(slots), n_boxes, W, max_h, fill)
            return panel_h, placed, (f_wrapped if len(f_wrapped) <= f_h else f_wrapped[:f_h]), 0
        boxes = [natural_size(name, value, role, digits, W, theirs.get(name)) if name else None
                 for role, name, value, _ in slots]
        numeric_only = all(b is not None for b in boxes)
        n_show = len(slots)
        if not numeric_only and all(b is None for b in boxes) and n_boxes * self.MIN_HEAT_W <= W:
            n_show = min(self.SLOTS, max(n_boxes, len(slots)))
        sizes = list(boxes) + [None] * (n_show - len(slots))
        rows = _flow(sizes, W, self.MIN_HEAT_W)
        fixed_h = sum(max(h for _, (w, h) in r) for r in rows if all(sz is not None for _, sz in r))
        heat_rows = [r for r in rows if any(sz is None for _, sz in r)]
        def heat_need(j):                 # a heatmap's rows two to a line, its stats, legend, border
            if j >= len(slots) or slots[j][2] is None:
                return self.MIN_HEAT_H
            return max(self.MIN_HEAT_H, min(self.MAX_HEAT_H, (grid_2d(slots[j][2])[0].shape[0] + 1) // 2 + 4))
        heat_needs = [max(heat_need(j) for j, sz in r if sz is None) for r in heat_rows]
        t_need = fixed_h + sum(heat_needs)
        # the panel: border 2 + title 1 + formula + tensors, within max_h; the formula first, but
        # the boxes scroll below it (it stays in view): it leaves them the tallest row of boxes
        # (up to half the room; 4 rows at least)
        budget = max(4, max_h - 3)
        tallest = max([max(h for _, (w, h) in r) for r in rows if all(sz is not None for _, sz in r)]
                      + heat_needs, default=0)
        keep = min(t_need, max(4, min(tallest, budget // 2)))
        f_h = max(1, min(f_lines, budget - keep))
        if f_h < f_lines:                  # no room for both lines of each clause: one line each
            f, f_wrapped, f_lines = short()
            f_h = max(1, min(f_lines, budget - keep))
        t_h = min(t_need, budget - f_h)
        # the panel takes its room whole (the layers table below takes its rows, up to a third of
        # the column): its height never follows the op's, so stepping never relayouts the screen
        # (a relayout repaints the whole screen, the most a key costs; as the panel followed the
        # tallest op so far, a formula whose numbers wrapped to one more line in step 2 than in
        # step 1 grew it), and no rows are left blank below the table, nor below the panel
        # without it. The canvas's content at its tallest so far at this size is its scrolling
        # height (the app measures the first step's ops before they are shown, its _presize).
        key = (W, max_h)
        _, seen_content = self._seen_h.get(key, (0, 0))
        panel_h = max_h
        heat_h = (max(self.MIN_HEAT_H, (t_h - fixed_h) // len(heat_rows)) if heat_rows else 0)
        # the canvas's content: the formula, then the boxes; the tallest so far at this size is
        # the canvas's scrolling height for every op (a new one relayouts the screen)
        content = max(f_h + fixed_h + heat_h * len(heat_rows), seen_content)
        self._seen_h[key] = (panel_h, content)
        if measure:
            return None
        if content > panel_h - 3:
            W -= 1                                 # a scrollbar will be there: the formula wraps
            f_wrapped = _wrapped(f, max(10, W), self.app.console)       # one column narrower
            grown = min(len(f_wrapped), budget) - f_h
            if grown > 0:
                f_h += grown
                content = max(content, f_h + fixed_h + heat_h * len(heat_rows))
                self._seen_h[key] = (panel_h, content)
        placed = []
        y = f_h
        for r in rows:
            heat = [j for j, sz in r if sz is None]
            rh = heat_h if heat else max(sz[1] for _, sz in r)
            used = sum(sz[0] for _, sz in r if sz is not None)
            hw = (W - used) // len(heat) if heat else 0
            x = 0
            for j, sz in r:
                w = sz[0] if sz is not None else hw
                if heat and j == heat[-1]:
                    w = W - x - sum(s[0] for jj, s in r if jj > j and s is not None)
                w = max(1, min(w, W - x)) if x < W else 1
                placed.append((j, x, y, w, rh))
                x += w
            y += rh
        return panel_h, tuple(placed), (f_wrapped if len(f_wrapped) <= f_h else f_wrapped[:f_h]), content

    def forget_heights(self) -> None:
        """A new scenario: the heights the old one needed no longer apply."""
        self._seen_h.clear()

    UNIFORM_FORMULA_H = 4

    def _uniform_places(self, n_slots: int, n_boxes: int, W: int, max_h: int, fill: bool = False) -> tuple[int, tuple]:
        """A big network's panel: its height (``fill``: all of ``max_h``), and its boxes side by side
        at one height, as many as the most any op of the stage needs (``n_boxes``): (slot, x, y,
        width, height) each."""
        f_h = self.UNIFORM_FORMULA_H
        n_show = n_slots
        if n_boxes * self.MIN_HEAT_W <= W:
            n_show = min(self.SLOTS, max(n_boxes, n_slots))
        panel_h = max_h if fill else min(max_h, 3 + f_h + 12)
        t_h = panel_h - 3 - f_h
        bw = W // max(1, n_show)
        return panel_h, tuple((j, j * bw, f_h, bw if j < n_show - 1 else W - j * bw, t_h) for j in range(n_show))

    def _apply(self, panel_h, placed, formula, content=0):
        """The panel's height (a relayout only when it changes: at a new screen size, a new
        scenario), the formula's lines and the boxes' places on the canvas (a relayout only when
        the content, at its tallest so far, outgrows the canvas)."""
        if panel_h != self._height:
            self._height = panel_h
            self.styles.height = panel_h
        self.query_one(TensorCanvas).place(placed, panel_h - 3, head=formula, tallest=content)

    def _fill(self, slots, digits):
        canvas = self.query_one(TensorCanvas)
        compare = getattr(self, "_compare", {})
        masks = getattr(self, "_masks", {})
        for k, box in enumerate(canvas.boxes):
            if k < len(slots):
                role, name, value, written = slots[k]
                box.show(name, value, role=role, written=written, digits=digits, compare=compare.get(name),
                         hidden=masks.get(name))
            else:
                box.show(None, None)
        canvas.redraw()

    def boxes(self) -> list:
        """The tensor boxes shown now (TensorBox), in slot order."""
        return self.query_one(TensorCanvas).visible()



_WRAPS: dict = {}


def _wrapped(text: Text, width: int, console):
    """``text`` wrapped at ``width`` (rich Lines), remembered: stepping back and forth shows the
    same formulas again, and wrapping is most of what a formula costs."""
    key = (text.plain, tuple(text.spans), width)
    hit = _WRAPS.get(key)
    if hit is None:
        if len(_WRAPS) > 512:
            _WRAPS.clear()
        hit = _WRAPS[key] = text.wrap(console, max(1, width))
    return hit


def formula_text(clauses, compact: bool = False) -> Text:
    """The formula clause by clause (model.formula.ClauseView), each followed by the same clause with
    the numbers; ``compact``: one line a clause, "name = right side with the numbers = value" (for a
    small screen)."""
    t = Text()
    for j, c in enumerate(clauses):
        if j:
            t.append("\n")
        if not c.filled:
            t.append(c.text, "italic")
            continue
        if compact:
            if not c.arrow:
                t.append(c.numbers, "bold")
                continue
            t.append(f"{c.lhs} {c.arrow} ", "italic")
            t.append(c.num_rhs, "bold")
            if c.num_lhs != c.lhs:
                t.append(" = ", "italic")
                t.append(c.num_lhs, "bold")
            continue
        t.append(c.text, "italic")
        if c.numbers != c.text:
            t.append("\n  ")
            t.append(c.numbers, "bold")
    return t


def _flow(sizes: list, W: int, min_heat: int) -> list[list[tuple[int, tuple | None]]]:
    """Boxes left to right, a new row when the next one does not fit (None: a heatmap, any width)."""
    rows: list[list] = [[]]
    x = 0
    for j, sz in enumerate(sizes):
        w = sz[0] if sz is not None else min_heat
        if rows[-1] and x + w > W:
            rows.append([])
            x = 0
        rows[-1].append((j, sz))
        x += w
    return [r for r in rows if r]


class LayersTable(DirectLines, Widget):
    """Per layer: output, local gradient, upstream gradient, parameter gradient, update. A Line-API
    widget: the rows are laid out once per update into cached Strips (a rich Table costs ~10x more)."""

    DEFAULT_CSS = "LayersTable { height: 1fr; }"
    MOST_NUMBERS = 4                              # a tensor of more shows shape and norm at any level

    @staticmethod
    def levels(digits: int) -> tuple:
        """(digits, most numbers a cell), tried in turn until the table fits: up to 4 numbers at the
        app's precision, then at fewer digits down to 4, then 2 numbers, then fewer digits down
        to 2 (at 4 digits, as it was: (4, 4), (4, 2), (3, 2), (2, 2))."""
        low = min(digits, 4)
        return tuple((d, 4) for d in range(digits, low - 1, -1)) + tuple((d, 2) for d in range(low, 1, -1))

    def __init__(self, **kw):
        super().__init__(**kw)
        self._rows: list[dict] = []
        self._seen_w: dict = {}
        self._seen_level: dict = {}               # (width, digits, columns) -> the level that fitted
        self._narrow = False
        self._digits = 4
        self._strips: list[Strip] | None = None
        self._built_for = None
        self._base = None                        # rich_style, kept (it walks the ancestors' styles)
        self._row_cache = (None, {})             # ((width, style, column widths), {cells: Strip})

    def show(self, rows: list[dict], digits: int, narrow: bool = False):
        """``digits``: the app's precision, the most significant digits a number takes here."""
        key = (narrow, digits, tuple(tuple((k, id(v[1]), v[2]) if isinstance(v, tuple) else (k, v)
                                   for k, v in r.items()) for r in rows))
        if key == getattr(self, "_key", None):
            return
        self._key = key
        self._rows, self._narrow, self._digits = rows, narrow, digits
        W = self.size.width
        old = self._strips
        if old is None or self._built_for != W or not W:
            self._strips = None
            self.refresh()
            return
        # a step writes a cell or two: repaint only the rows that changed
        new = self._build(W)
        self._strips = new
        changed = [y for y in range(max(len(old), len(new)))
                   if y >= len(old) or y >= len(new) or old[y] != new[y]]
        if changed:
            from textual.geometry import Region
            self.refresh(*(Region(0, y, W, 1) for y in changed))

    @staticmethod
    def prebuild(values: list, digits: int = 4) -> None:
        """Format cells of these tensors (at every precision the table may take) into the by-array
        caches, drawing nothing: the app does this for the next positions while the user reads (a
        new tensor's numbers, norm and NaN/Inf check are what a cell costs)."""
        levels = LayersTable.levels(digits)
        for v in values:
            if v is not None:
                _bad_cached(v)
                small = np.size(v) <= LayersTable.MOST_NUMBERS
                for d, maxn in levels if small else levels[:1]:
                    _compact_cached(v, d, maxn)

    def _build(self, W: int) -> list[Strip]:
        if self._base is None:
            self._base = self.rich_style
        base = self._base
        cols = [("layer", "layer"), ("out", "output"), ("local", "local"), ("up", "upstream"),
                ("param", "p"), ("grad", "∂E/∂param"), ("delta", "update Δ")]
        if self._narrow:
            cols = [("layer", "layer"), ("out", "out"), ("local", "local"), ("up", "upstr"),
                    ("param", "p"), ("grad", "∂E/∂p"), ("delta", "Δ")]
        # a column no layer has (no elementwise layer: no local derivative) takes no room
        cols = [c for c in cols if c[0] == "layer" or any(r.get(c[0]) is not None for r in self._rows)]

        def cells(digits, maxn):
            texts: list[list[tuple[str, str]]] = []
            for r in self._rows:
                line = []
                for key, _ in cols:
                    c = r.get(key)
                    if c is None:
                        line.append(("", ""))
                    elif isinstance(c, str):
                        line.append((c, "bold" if key == "layer" else ""))
                    else:
                        name, value, state = c       # state: "now" | "stale" | "written"
                        if value is None:
                            line.append(("·", "dim"))
                            continue
                        style = {"now": "", "stale": "dim", "written": WRITTEN}[state]
                        if _bad_cached(value):
                            style = NONFINITE
                        line.append((_compact_cached(value, digits, maxn), style))
                texts.append(line)
            # every column as wide as its widest cell (a 2-vector's numbers in full)
            return texts, [max([len(t[j][0]) for t in texts] + [len(h)]) for j, (_, h) in enumerate(cols)]

        avail = W - (len(cols) - 1)
        # up to 4 numbers a cell at the app's precision when they fit, else fewer digits, then 2
        # numbers (levels()); the sizes of a table of tensors of more than MOST_NUMBERS each (shape
        # and norm) are the same at any of these: one try (the 784-256-128-10 net: four before).
        # A level given up at this width is not tried again while stepping: the table keeps its
        # precision (it went 5 digits, 4, 5 from op to op) and each build tries once
        small = any(np.size(c[1]) <= self.MOST_NUMBERS for r in self._rows for c in r.values()
                    if isinstance(c, tuple) and c[1] is not None)
        at = (W, self._digits, tuple(k for k, _ in cols))
        levels = self.levels(self._digits)
        li = self._seen_level.get(at, 0)
        while True:
            texts, widths = cells(*levels[li])
            if sum(widths) <= avail or not small or li == len(levels) - 1:
                break
            li += 1
        self._seen_level[at] = li
        # columns never narrow while stepping (when there is room): the table does not shift
        seen = self._seen_w.setdefault(at, {})
        kept = [max(w, seen.get(k, 0)) for w, (k, _) in zip(widths, cols)]
        if sum(kept) <= avail:
            widths = kept
        for w, (k, _) in zip(widths, cols):
            seen[k] = max(w, seen.get(k, 0))
        if sum(widths) > avail:                   # too narrow still: cap the widest columns alike
            rest = avail - widths[0]                 # the layer's name is never cut
            lo, hi = 1, max(widths)
            while lo < hi:
                cap = (lo + hi + 1) // 2
                if sum(min(w, cap) for w in widths[1:]) <= rest:
                    lo = cap
                else:
                    hi = cap - 1
            natural = widths
            widths = widths[:1] + [min(w, lo) for w in widths[1:]]
            spare = rest - sum(widths[1:])         # what the cap left over goes to the cut columns
            while spare > 0 and any(w < n for w, n in zip(widths, natural)):
                for j in range(1, len(widths)):
                    if spare > 0 and widths[j] < natural[j]:
                        widths[j] += 1
                        spare -= 1
        styles: dict[str, Style] = {}

        def st(name):
            if name not in styles:
                styles[name] = base + Style.parse(name) if name else base
            return styles[name]

        def strip(cells):
            segs = []
            for j, ((txt, sty), w) in enumerate(zip(cells, widths)):
                if j:
                    segs.append(Segment(" ", base))
                if len(txt) > w:                  # cut between numbers, never inside one
                    cut = txt[: max(0, w - 1)]
                    if " " in cut:
                        cut = cut[: cut.rfind(" ") + 1]
                    txt = cut + "…"
                segs.append(Segment(txt, st(sty)))
                if len(txt) < w:
                    segs.append(Segment(" " * (w - len(txt)), base))
            return Strip(segs).crop(0, W).adjust_cell_length(W, base)

        # a row drawn before at these widths is the Strip it was (most rows, at each step; all
        # of them going back to a position, or to a step, shown before)
        if self._row_cache[0] != (W, base, tuple(widths)) or len(self._row_cache[1]) > 512:
            self._row_cache = ((W, base, tuple(widths)), {})
        rows = self._row_cache[1]
        out = []
        for line in [tuple((t, "bold") for _, t in cols)] + [tuple(line) for line in texts]:
            hit = rows.get(line)
            if hit is None:
                hit = rows[line] = strip(line)
            out.append(hit)
        return out

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._base = None

    def lines_in(self, lines: range, W: int) -> list[Strip]:
        if self._strips is None or self._built_for != W:
            self._strips = self._build(W)
            self._blank = Strip.blank(W, self._base)
            self._built_for = W
        strips, n = self._strips, len(self._strips)
        return [strips[y] if y < n else self._blank for y in lines]


_CELLS = by_array(512)


def _compact_cached(value, digits: int = 4, max_numbers: int = 2) -> str:
    """compact() of an array, once per array and precision (format.by_array)."""
    return _CELLS.memo(value, (digits, max_numbers), lambda: compact(value, digits=digits, max_numbers=max_numbers))


def _bad_cached(value) -> bool:
    return bool(nonfinite_text(value))          # cached per array (format.by_array)


def op_title(prefix: str, op, M: int) -> Text:
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append(f"{prefix} ", "dim")
    t.append(f"op {op.index + 1}/{M} ", "bold")
    t.append(op.name, "bold")
    t.append(f"  [{op.stage}]", "dim")
    return t


__all__ = ["HeaderBar", "StatusBar", "ProgramView", "LossCurve", "OpPanel", "LayersTable", "op_title",
           "formula_text"]
