"""The operation panel: the op's title, its formula with the numbers, and its tensors' boxes."""
from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical

from ..format import compact, grid_2d, keep
from .memo import MemoLines
from .tensor import TensorCanvas
from .tensorbox import natural_size
from .text import TextLines, wrapped


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
        self._compare: dict = {}         # (what show() was given last)
        self._masks: dict = {}
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
        f_wrapped = wrapped(f, fw, self.app.console)
        f_lines = len(f_wrapped) if W > 0 else 1

        def short():
            t = formula_text(clauses, compact=True)
            lines = wrapped(t, fw, self.app.console)
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
            f_wrapped = wrapped(f, max(10, W), self.app.console)       # one column narrower
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

    def forget_height(self) -> None:
        """The room changed (the layers table came or went): set the panel's height again."""
        self._height = None

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
        compare, masks = self._compare, self._masks
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


def op_title(prefix: str, op, M: int) -> Text:
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append(f"{prefix} ", "dim")
    t.append(f"op {op.index + 1}/{M} ", "bold")
    t.append(op.name, "bold")
    t.append(f"  [{op.stage}]", "dim")
    return t
