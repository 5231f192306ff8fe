"""The panels of the main screen. Each takes plain data (a View, below) and draws it; none of them
reads the session or computes anything."""
from __future__ import annotations

import math

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Sparkline, Static

from ..format import compact, fill_numbers, num
from .tensor import TensorView, has_nonfinite

def _update(widget: Static, content, key) -> None:
    """Static.update without a new layout, skipped when nothing changed."""
    if getattr(widget, "_nn_key", None) == key:
        return
    widget._nn_key = key
    widget.update(content, layout=False)


STAGE_ICON = {"forward": "→", "loss": "Σ", "backward": "←", "update": "Δ"}
WRITTEN = "bold black on #e0b040"
NONFINITE = "bold white on red"


class HeaderBar(Static):
    def show(self, name: str, k: int, N: int, stage: str, i: int, M: int, opname: str, loss, running=False):
        t = Text(no_wrap=True, overflow="ellipsis")
        if self.app.size.width >= 100:
            t.append(" nnstep ", "bold reverse")
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
        if k <= N and opname:
            t.append(f" │ next: {opname}")
        if running:
            t.append("  ● running (Esc stops)", "bold yellow")
        _update(self, t, t.plain + str(self.app.size))


class StatusBar(Static):
    def show(self, text: str, kind: str = ""):
        style = {"stop": "bold yellow", "bad": NONFINITE, "error": "bold red"}.get(kind, "italic")
        _update(self, Text(text, style=style, overflow="ellipsis"), (text, kind))


class ProgramLines(Widget):
    """The program's lines as cached Strips (a Static with styled Content costs ~10x more to paint)."""

    DEFAULT_CSS = "ProgramLines { height: auto; width: 100%; }"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.lines: list[list[tuple[str, str]]] = []
        self._strips = None
        self._built_for = None

    def set_lines(self, lines):
        resize = len(lines) != len(self.lines)
        self.lines = lines
        self._strips = None
        self.refresh(layout=resize)

    def get_content_height(self, container, viewport, width: int) -> int:
        return len(self.lines)

    def render_line(self, y: int) -> Strip:
        W = self.size.width
        if self._strips is None or self._built_for != W:
            base = self.rich_style
            cache: dict[str, Style] = {}

            def st(name):
                if name not in cache:
                    cache[name] = base + Style.parse(name) if name else base
                return cache[name]
            out = []
            for parts in self.lines:
                segs = [Segment(t, st(sty)) for t, sty in parts]
                strip = Strip(segs)
                if strip.cell_length > W:
                    strip = strip.crop(0, max(0, W - 1)) + Strip([Segment("…", base)])
                out.append(strip.adjust_cell_length(W, base))
            self._strips, self._built_for = out, W
            self._blank = Strip.blank(W, base)
        return self._strips[y] if y < len(self._strips) else self._blank


class ProgramView(VerticalScroll):
    """Every op of the step grouped by stage; ✓ done, ▶ next, ● breakpoint."""

    def compose(self) -> ComposeResult:
        yield ProgramLines(id="program-text")

    def show(self, ops, i: int, done_all: bool, breakpoints: set[str], just_ran: int | None):
        key = (i, done_all, frozenset(breakpoints), just_ran, len(ops))
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
            lines.append([(bp, "bold red"), (f"{mark}{op.index + 1:>3} {op.name}", style)])
        self.query_one(ProgramLines).set_lines(lines)
        h = self.size.height
        if h and not (self.scroll_y <= line_of_current < self.scroll_y + h - 1):
            self.scroll_to(y=max(0, line_of_current - h // 2), animate=False)

    def text(self) -> str:
        return "\n".join("".join(t for t, _ in parts) for parts in self.query_one(ProgramLines).lines)


class LossCurve(Vertical):
    def compose(self) -> ComposeResult:
        yield Static(id="loss-label")
        yield Sparkline([], id="loss-spark")

    def show(self, history: list[tuple[int, float]]):
        key = (len(history), history[-1] if history else None)
        if key == getattr(self, "_key", None):
            return
        self._key = key
        lab = self.query_one("#loss-label", Static)
        sp = self.query_one("#loss-spark", Sparkline)
        if not history:
            lab.update(Text("loss: no step has reached the loss yet", style="dim"), layout=False)
            sp.display = False
            return
        vals = [v for _, v in history]
        finite = [v for v in vals if v == v and abs(v) != float("inf")]
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append(f"step {history[-1][0]}: ", "")
        t.append(num(vals[-1], 5), "bold")
        if len(vals) > 1:
            t.append(f" · first {num(vals[0], 4)}", "dim")
            if finite:
                t.append(f" · min {num(min(finite), 4)}", "dim")
        data = finite
        if len(data) > 2000:                          # the curve is ~100 cells wide
            data = data[:: len(data) // 2000 + 1] + data[-1:]
        if len(finite) >= 2 and min(finite) > 0 and max(finite) / min(finite) > 1000:
            data = [math.log10(v) for v in data]
            t.append(" · log scale", "italic")
        if len(finite) < len(vals):
            t.append("  NaN/Inf!", NONFINITE)
        lab.update(t, layout=False)
        sp.display = len(finite) >= 2
        sp.data = data if len(data) >= 2 else [0.0, 0.0]


class OpPanel(Vertical):
    """The current operation: formula, formula with numbers, and its tensors side by side."""
    SLOTS = 8

    def compose(self) -> ComposeResult:
        yield Static(id="op-title")
        yield Static(id="op-formula")
        with Horizontal(id="op-tensors"):
            for k in range(self.SLOTS):
                yield TensorView(id=f"slot{k}")

    def show(self, title: Text, formula: str, filled: str | None, slots: list[tuple], digits: int,
             n_boxes: int = 0):
        """``n_boxes``: how many boxes to lay out (the most any op of this stage needs), so that
        stepping within a stage never changes the layout; the unused ones are left empty."""
        _update(self.query_one("#op-title", Static), title, title.plain)
        f = Text(formula, style="italic")
        if filled:
            f.append("\n= ", "bold")
            f.append(filled)
        _update(self.query_one("#op-formula", Static), f, f.plain)
        # a constant number of boxes only where each still gets a useful width (>= 20 cells);
        # otherwise exactly the op's boxes (a relayout when the count changes)
        width = self.query_one("#op-tensors").size.width
        if n_boxes * 20 > width:
            n_boxes = len(slots)
        n_boxes = min(self.SLOTS, max(n_boxes, len(slots)))
        for k in range(self.SLOTS):
            v: TensorView = self.query_one(f"#slot{k}", TensorView)
            if k < n_boxes:
                if not v.display:
                    v.display = True
                if k < len(slots):
                    role, name, value, written = slots[k]
                    v.show(name, value, role=role, written=written, digits=digits)
                else:
                    v.show(None, None)
            elif v.display:
                v.display = False
                v.show(None, None)


class LayersTable(Widget):
    """Per layer: output, local gradient, upstream gradient, parameter gradient, update. A Line-API
    widget: the rows are laid out once per update into cached Strips (a rich Table costs ~10x more)."""

    DEFAULT_CSS = "LayersTable { height: 1fr; }"

    def __init__(self, **kw):
        super().__init__(**kw)
        self._rows: list[dict] = []
        self._narrow = False
        self._strips: list[Strip] | None = None
        self._built_for = None

    def show(self, rows: list[dict], digits: int, narrow: bool = False, note: str = ""):
        self._note = note
        key = (narrow, note, tuple(tuple((k, id(v[1]), v[2]) if isinstance(v, tuple) else (k, v)
                                   for k, v in r.items()) for r in rows))
        if key == getattr(self, "_key", None):
            return
        self._key = key
        self._rows, self._narrow = rows, narrow
        self._strips = None
        self.refresh()

    def _build(self, W: int) -> list[Strip]:
        base = self.rich_style
        cols = [("layer", "layer"), ("out", "output"), ("local", "local"), ("up", "upstream"),
                ("param", "param"), ("grad", "∂E/∂param"), ("delta", "update Δ")]
        if self._narrow:
            cols = [("layer", "layer"), ("out", "out"), ("local", "local"), ("up", "upstr"),
                    ("param", "p"), ("grad", "∂E/∂p"), ("delta", "Δ")]
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
                    line.append((_compact_cached(value), style))
            texts.append(line)
        fixed = {"layer": max([len(t[0][0]) for t in texts] + [5]),
                 "param": max([len(t[4][0]) for t in texts] + [len(cols[4][1])])}
        free = W - sum(fixed.values()) - (len(cols) - 1)
        flex = max(1, free // (len(cols) - 2))
        widths = [fixed.get(k, flex) for k, _ in cols]
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
                if len(txt) > w:
                    txt = txt[: max(0, w - 1)] + "…"
                segs.append(Segment(txt, st(sty)))
                if len(txt) < w:
                    segs.append(Segment(" " * (w - len(txt)), base))
            return Strip(segs).crop(0, W).adjust_cell_length(W, base)

        out = [strip([(t, "bold") for _, t in cols])]
        out += [strip(line) for line in texts]
        note = getattr(self, "_note", "")
        if note and W > 10:
            import textwrap
            out.append(Strip.blank(W, base))
            dim = st("dim italic")
            for ln in textwrap.wrap(note, W):
                out.append(Strip([Segment(ln, dim)]).adjust_cell_length(W, base))
        return out

    def render_line(self, y: int) -> Strip:
        W = self.size.width
        if self._strips is None or self._built_for != W:
            self._strips = self._build(W)
            self._blank = Strip.blank(W, self.rich_style)
            self._built_for = W
        return self._strips[y] if y < len(self._strips) else self._blank


_COMPACT: dict[int, tuple] = {}


def _compact_cached(value) -> str:
    """compact() and the NaN check of an array, once per array (arrays are never modified in place;
    the cache keeps a reference, so an id is never reused while cached)."""
    hit = _COMPACT.get(id(value))
    if hit is not None and hit[0] is value:
        return hit[1]
    if len(_COMPACT) > 256:
        _COMPACT.clear()
    txt = compact(value, digits=3)
    _COMPACT[id(value)] = (value, txt, has_nonfinite(value))
    return txt


def _bad_cached(value) -> bool:
    _compact_cached(value)
    return _COMPACT[id(value)][2]


def op_title(prefix: str, op, M: int) -> Text:
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append(f"{prefix} ", "dim")
    t.append(f"op {op.index + 1}/{M} ", "bold")
    t.append(op.name, "bold")
    t.append(f"  [{op.stage}]", "dim")
    return t


__all__ = ["HeaderBar", "StatusBar", "ProgramView", "LossCurve", "OpPanel", "LayersTable", "op_title",
           "fill_numbers"]
