"""A tensor full-size: every number with row and column indices, a cell cursor, and (for a
parameter's gradient) the chain rule for the selected element."""
from __future__ import annotations

from typing import Callable

import numpy as np
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Static

from ..format import as_2d, nonfinite_text, num, shape_str, stats_line

BAD = Style(color="white", bgcolor="red", bold=True)
CURSOR = Style(reverse=True, bold=True)
INDEX = Style(dim=True, bold=True)


class TensorGrid(Widget, can_focus=True):
    """Only the visible cells are formatted; arrows move the cursor and the view follows it."""

    DEFAULT_CSS = "TensorGrid { height: auto; max-height: 100%; }"
    BINDINGS = [
        Binding("up", "move(-1, 0)", show=False), Binding("down", "move(1, 0)", show=False),
        Binding("left", "move(0, -1)", show=False), Binding("right", "move(0, 1)", show=False),
        Binding("pageup", "page(-1)", show=False), Binding("pagedown", "page(1)", show=False),
        Binding("home", "edge(0)", show=False), Binding("end", "edge(1)", show=False),
    ]

    def __init__(self, value: np.ndarray, digits: int, on_move: Callable[[tuple], None], **kw):
        super().__init__(**kw)
        self.full = np.asarray(value)
        self.a2 = as_2d(self.full)
        self.digits = digits
        self.on_move = on_move
        self.r = self.c = 0
        self.top = self.left = 0

    def get_content_height(self, container, viewport, width: int) -> int:
        return self.a2.shape[0] + 1

    # geometry
    def _row_label(self, r: int) -> str:
        if self.full.ndim <= 2:
            return str(r)
        return ",".join(str(int(i)) for i in np.unravel_index(r, self.full.shape[:-1]))

    @property
    def _label_w(self) -> int:
        return max(len(self._row_label(self.a2.shape[0] - 1)), 3) + 1

    @property
    def _cell_w(self) -> int:
        return max(self.digits + 7, len(str(self.a2.shape[1] - 1))) + 1

    def _visible(self) -> tuple[int, int]:
        rows = max(1, self.size.height - 1)
        cols = max(1, (self.size.width - self._label_w) // self._cell_w)
        return rows, cols

    def index(self) -> tuple[int, ...]:
        """The selected element's index in the tensor's own shape."""
        if self.full.ndim == 0:
            return ()
        if self.full.ndim == 1:
            return (self.c,)
        return tuple(int(i) for i in np.unravel_index(self.r, self.full.shape[:-1])) + (self.c,)

    def _follow(self):
        rows, cols = self._visible()
        if self.r < self.top:
            self.top = self.r
        elif self.r >= self.top + rows:
            self.top = self.r - rows + 1
        if self.c < self.left:
            self.left = self.c
        elif self.c >= self.left + cols:
            self.left = self.c - cols + 1
        self.refresh()
        self.on_move(self.index())

    def action_move(self, dr: int, dc: int) -> None:
        R, C = self.a2.shape
        self.r = min(max(0, self.r + dr), R - 1)
        self.c = min(max(0, self.c + dc), C - 1)
        self._follow()

    def action_page(self, d: int) -> None:
        self.action_move(d * self._visible()[0], 0)

    def action_edge(self, end: int) -> None:
        R, C = self.a2.shape
        self.r, self.c = (R - 1, C - 1) if end else (0, 0)
        self._follow()

    def on_mouse_scroll_down(self, event: events.MouseScrollDown) -> None:
        self.action_move(3, 0)

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        self.action_move(-3, 0)

    def on_resize(self) -> None:
        self._follow()

    def render_line(self, y: int) -> Strip:
        W = self.size.width
        base = self.rich_style
        rows, cols = self._visible()
        R, C = self.a2.shape
        lw, cw = self._label_w, self._cell_w
        cs = range(self.left, min(C, self.left + cols))
        if y == 0:
            segs = [Segment(" " * lw, base)]
            for c in cs:
                segs.append(Segment(str(c).rjust(cw - 1) + " ", base + INDEX + (CURSOR if c == self.c else Style())))
            return Strip(segs).adjust_cell_length(W, base)
        r = self.top + y - 1
        if r >= R:
            return Strip.blank(W, base)
        segs = [Segment(self._row_label(r).rjust(lw - 1) + " ", base + INDEX + (CURSOR if r == self.r else Style()))]
        row = self.a2[r]
        for c in cs:
            s = num(row[c], self.digits)
            st = base
            if s in ("NaN", "+Inf", "-Inf"):
                st = base + BAD
            if r == self.r and c == self.c:
                st = st + CURSOR
            segs.append(Segment(s.rjust(cw - 1), st))
            segs.append(Segment(" ", base))
        return Strip(segs).crop(0, W).adjust_cell_length(W, base)


class TensorScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,enter", "close", "close"),
                Binding("plus,equals_sign", "digits(1)", "more digits"),
                Binding("minus", "digits(-1)", "fewer digits")]
    DEFAULT_CSS = """
    TensorScreen { align: center middle; }
    TensorScreen > Vertical { width: 100%; height: 100%; border: round $accent; background: $surface; }
    TensorScreen #tensor-head { height: auto; }
    TensorScreen #grid { max-height: 1fr; }
    TensorScreen #explain { height: 1fr; min-height: 8; border-top: solid $panel-lighten-2; }
    TensorScreen #explain.-none { display: none; }
    """

    def __init__(self, name: str, value, digits: int = 6, explain: Callable[[tuple], str | None] | None = None,
                 index: tuple | None = None, note: str = ""):
        super().__init__()
        self.tname = name
        self.value = np.asarray(value)
        self.digits = digits
        self.explain_fn = explain
        self.start_index = index
        self.note = note

    def compose(self) -> ComposeResult:
        with Vertical() as v:
            v.border_title = f"{self.tname}  [{shape_str(self.value)}]"
            v.border_subtitle = "arrows move · +/- digits · Esc closes"
            yield Static(self._head(), id="tensor-head")
            yield TensorGrid(self.value, self.digits, self._moved, id="grid")
            with VerticalScroll(id="explain", classes="" if self.explain_fn else "-none"):
                yield Static(id="explain-text")

    def _head(self) -> Text:
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append(f"{self.tname}  shape {shape_str(self.value)}  ", "bold")
        t.append(stats_line(self.value), "dim")
        bad = nonfinite_text(self.value)
        if bad:
            t.append("  " + bad, "bold white on red")
        if self.note:
            t.append("\n" + self.note, "italic")
        return t

    def on_mount(self) -> None:
        g = self.query_one(TensorGrid)
        if self.start_index is not None and self.value.ndim:
            idx = tuple(self.start_index)
            if self.value.ndim == 1:
                g.c = idx[0]
            else:
                g.r = int(np.ravel_multi_index(idx[:-1], self.value.shape[:-1]))
                g.c = idx[-1]
        g.focus()
        self._moved(g.index())

    def _moved(self, index: tuple) -> None:
        if self.explain_fn is None:
            return
        txt = self.explain_fn(index)
        self.query_one("#explain-text", Static).update(Text(txt or ""))

    def action_digits(self, d: int) -> None:
        g = self.query_one(TensorGrid)
        g.digits = min(15, max(2, g.digits + d))
        g.refresh()

    def action_close(self) -> None:
        self.dismiss(None)
