"""TensorBox: one tensor in a box, as numbers when they fit, else a colour heatmap.

TensorBox builds a tensor's lines once per (tensor, size, precision) into cached Strips;
TensorCanvas draws every box of the operation panel, frames included, on one Line-API widget.
"""
from __future__ import annotations

import numpy as np
from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from ...model.stats import all_finite
from ..format import as_2d, by_array, grid_2d, keep, nonfinite_counts, nonfinite_text, num, shape_str, stats_line
from .memo import DirectLines

# coolwarm-like diverging scale: blue (negative) -> grey (0) -> red (positive)
_NEG = np.array([59, 76, 192])
_MID = np.array([70, 70, 70])
_POS = np.array([180, 4, 38])
LEVELS = 8                       # per side: 2*LEVELS + 1 colours
NAN_C, PINF_C, NINF_C = "#ff00ff", "#ffff00", "#00ffff"


def _palette() -> list[str]:
    out = []
    for k in range(-LEVELS, LEVELS + 1):
        t = abs(k) / LEVELS
        end = _NEG if k < 0 else _POS
        c = (_MID + (end - _MID) * t).astype(int)
        out.append("#%02x%02x%02x" % tuple(c))
    return out


HIDDEN_C = "#000000"              # a cell a mask hides (attention's causal mask)
PALETTE = _palette() + [NAN_C, PINF_C, NINF_C, HIDDEN_C]   # codes: 0..2L colours, NaN, +Inf, -Inf, hidden
C_NAN, C_PINF, C_NINF, C_HIDDEN = 2 * LEVELS + 1, 2 * LEVELS + 2, 2 * LEVELS + 3, 2 * LEVELS + 4
_STYLES: dict[tuple[int, int], Style] = {}
_BAD = {C_NAN: "N", C_PINF: "∞", C_NINF: "∞"}


def _is_bad(code: int) -> bool:
    """A NaN or an infinity (drawn as a letter); the hidden code is a colour like the scale's."""
    return C_NAN <= code <= C_NINF
BAD_STYLE = Style(color="white", bgcolor="red", bold=True)


def _cell_style(top: int, bottom: int) -> Style:
    s = _STYLES.get((top, bottom))
    if s is None:
        bad = top if _is_bad(top) else bottom
        if _is_bad(bad):
            s = Style(color="#000000", bgcolor=PALETTE[bad], bold=True)
        else:
            s = Style(color=PALETTE[top], bgcolor=PALETTE[bottom])
        _STYLES[(top, bottom)] = s
    return s


def _bins(n: int, m: int) -> np.ndarray:
    return np.linspace(0, n, m + 1).astype(int)[:-1]


def heat_codes(a2: np.ndarray, rows: int, cols: int, hidden=None) -> tuple[np.ndarray, float]:
    """Reduce a 2-d array to at most rows × cols colour codes (block means; a block holding a NaN or
    Inf shows it). ``hidden``: where a mask hides cells (as ``a2``): they take no part in the
    colours, and a block of hidden cells only is C_HIDDEN. Returns (codes, scale)."""
    a2 = np.asarray(a2, dtype=np.float64)
    R, C = a2.shape
    rows, cols = max(1, min(rows, R)), max(1, min(cols, C))
    allf = all_finite(a2)
    z = a2 if allf else np.where(np.isfinite(a2), a2, 0.0)
    if hidden is not None:
        z = np.where(hidden, 0.0, z)
    rb, cb = _bins(R, rows), _bins(C, cols)
    shown = None if hidden is None else ~hidden
    if rows == R and cols == C:
        m = z
    else:
        s = np.add.reduceat(np.add.reduceat(z, rb, axis=0), cb, axis=1)
        if shown is None:
            cnt = np.outer(np.diff(np.append(rb, R)), np.diff(np.append(cb, C)))   # each block's size
        else:                                                                     # ... its cells shown
            shown = np.add.reduceat(np.add.reduceat(shown.astype(np.int64), rb, axis=0), cb, axis=1)
            cnt = np.maximum(shown, 1)
        m = s / cnt
    scale = max(float(z.max()), -float(z.min())) if z.size else 0.0     # max |z|, no |z| copy
    q = np.zeros(m.shape, dtype=np.int64) + LEVELS
    if scale > 0:
        q = np.rint(m / scale * LEVELS).astype(np.int64) + LEVELS
        np.clip(q, 0, 2 * LEVELS, out=q)
    if shown is not None:
        q[shown == 0] = C_HIDDEN
    if not allf:
        for mask, code in ((np.isneginf(a2), C_NINF), (np.isposinf(a2), C_PINF), (np.isnan(a2), C_NAN)):
            if mask.any():
                hit = np.add.reduceat(np.add.reduceat(mask.astype(np.int64), rb, axis=0), cb, axis=1) > 0
                q[hit] = code
    return q, scale


_HEAT_SEGS: dict[tuple[int, int, int], Segment] = {}


def _heat_segment(t: int, b: int, n: int) -> Segment:
    """``n`` cells of top code ``t`` over bottom code ``b`` (-1: no bottom row), one Segment."""
    key = (t, b, n)
    seg = _HEAT_SEGS.get(key)
    if seg is None:
        if b < 0:
            seg = (Segment(_BAD[t] * n, _cell_style(t, t)) if _is_bad(t)
                   else Segment("▀" * n, Style(color=PALETTE[t])))
        elif _is_bad(t) or _is_bad(b):
            seg = Segment(_BAD[t if _is_bad(t) else b] * n, _cell_style(t, b))
        else:
            seg = Segment("▀" * n, _cell_style(t, b))
        if len(_HEAT_SEGS) > 20000:
            _HEAT_SEGS.clear()
        _HEAT_SEGS[key] = seg
    return seg


def heat_strips(codes: np.ndarray, width: int, bg: Style) -> list[Strip]:
    """Two rows of codes per line with the upper half block; runs of the same pair of colours are
    one Segment (every cell is one column wide)."""
    out = []
    R, C = codes.shape
    for r in range(0, R, 2):
        top = codes[r]
        bot = codes[r + 1] if r + 1 < R else np.full(C, -1, dtype=codes.dtype)
        # where the (top, bottom) pair changes along the line: the runs
        change = np.flatnonzero((top[1:] != top[:-1]) | (bot[1:] != bot[:-1])) + 1
        starts = [0, *change.tolist()]
        ends = [*change.tolist(), C]
        tl, bl = top.tolist(), bot.tolist()
        segs = [_heat_segment(tl[a], bl[a], e - a) for a, e in zip(starts, ends)]
        out.append(Strip(segs, C).adjust_cell_length(width, bg))
    return out


def number_lines(a2: np.ndarray, digits: int, theirs=None) -> list[list[str]]:
    """Every number as text; with ``theirs`` = (the user's values, the mask where they differ), both
    laid out as ``a2``: a differing cell reads ``nnstep≠yours`` (nnstep compare)."""
    if theirs is None:
        return [[num(v, digits) for v in row] for row in a2]
    y2, m2 = theirs
    return [[num(v, digits) + ("≠" + num(y2[r, c], digits) if m2[r, c] else "") for c, v in enumerate(row)]
            for r, row in enumerate(a2)]


def compare_2d(value, compare):
    """The user's values and the differing mask, laid out as grid_2d lays ``value`` out."""
    if compare is None or value is None:
        return None
    yours, mask = compare
    if np.shape(yours) != np.shape(value) or np.shape(mask) != np.shape(value):
        return None
    return grid_2d(np.asarray(yours, dtype=np.float64))[0], grid_2d(np.asarray(mask, dtype=bool))[0]


def hidden_2d(value, hidden):
    """Where a mask hides cells of ``value`` (``hidden``: over its last two axes), laid out as
    grid_2d lays ``value`` out; None without a mask (or one of another shape)."""
    if hidden is None or value is None:
        return None
    a = np.asarray(value)
    if a.ndim < 2 or a.shape[-2:] != np.shape(hidden):
        return None
    return grid_2d(np.broadcast_to(np.asarray(hidden, dtype=bool), a.shape))[0]


def separators(R: int, row_block: int) -> int:
    """How many rule lines the numbers of a layout of ``R`` rows in blocks of ``row_block`` take."""
    return R // row_block - 1 if row_block else 0


MASKED_LEGEND = ("   dim: hidden by the causal mask", "   dim: masked", "  (masked dim)")
MASKED_HEAT_LEGEND = ("   black: hidden by the causal mask", "   black: masked", "  (masked black)")


def _legend(lines: list, W: int, says: tuple, style: Style) -> None:
    """The longest of ``says`` that fits after the name, on the box's first line."""
    if not lines:
        return
    say = next((t for t in says if len(t) <= W - lines[0].cell_length), "")
    if say:
        lines[0] = Strip([*lines[0], Segment(say, style)])


# a tensor is drawn as numbers (never a heatmap) when it is at most this big: every tensor of the
# shipped lesson networks is, and a student must be able to read each of its numbers
MAX_NUMBERS = 64
MAX_NUMBER_ROWS = 16


def natural_size(name: str | None, value, role: str, digits: int, max_width: int,
                 compare=None) -> tuple[int, int] | None:
    """The box (width, height, borders included) that shows every number of ``value`` with its name
    and role, at ``digits`` significant digits or fewer (down to 3) to fit ``max_width``; None when the
    tensor is too big for numbers (it is drawn as a heatmap in a box of any size instead)."""
    frame = max(cell_len(role) + 4, len(shape_str(value)) + 3 if value is not None else 0, cell_len(name or ""))
    if value is None:
        w = max(frame, len("· not computed yet") if name else 0)
        return min(max_width, w + 2), 4
    a = np.asarray(value)
    a2, _, row_block = grid_2d(a)
    R, C = a2.shape
    if a.size > MAX_NUMBERS or R > MAX_NUMBER_ROWS:
        return None
    theirs = compare_2d(a, compare)
    for d in range(digits, min(digits, 3) - 1, -1):
        cells = number_lines(a2, d, theirs)
        wcol = max(len(s) for row in cells for s in row)
        w = max(frame, C * (wcol + 1) - 1) + 2
        if w <= max_width:                      # no stats line: every number is there
            return w, 2 + 1 + R + separators(R, row_block)
    return None


_BUILT = by_array(128)     # a box's lines, by (array, size, style, name, precision, ...)
_NO_VALUE: dict = {}       # ... and those of a box with no value (not computed yet, an empty slot)


class TensorBox:
    """One tensor of the operation panel: its name, role, value and the lines that show it (numbers
    when they fit, else a heatmap), built once per (tensor, size, precision) into cached Strips. Not
    a widget: the panel's one TensorCanvas draws every box with its frame (a widget per box costs a
    relayout per key, as the boxes are sized to their tensors)."""

    def __init__(self, slot: int):
        self.slot = slot
        self.tensor_name: str | None = None
        self.value = None
        self.digits = 6
        self.stale = False
        self.written = False
        self.force_heatmap = False
        self.compare = None
        self.hidden = None                # where a mask hides cells (over the last two axes)
        self.border_title = ""            # the role ("upstream ∂E/∂out", "new", ...)
        self.border_subtitle = ""         # the shape
        self.display = False              # placed on the canvas now
        self.region = Region(0, 0, 0, 0)  # on the canvas, frame included
        self.base = Style()
        self._strips: list[Strip] | None = None
        self._built_for = None
        self._key = None

    @property
    def size(self) -> Size:
        """The inside of the frame."""
        return Size(max(0, self.region.width - 2), max(0, self.region.height - 2))

    def show(self, name: str | None, value, role: str = "", written: bool = False, digits: int = 6,
             stale: bool = False, compare=None, hidden=None) -> None:
        """``compare``: (the user's values, where they differ) from nnstep compare: each differing
        cell shows both, marked. ``hidden``: where a mask hides cells, over the last two axes (the
        spec says: view.masked_cells): they are dim, and the name line says so."""
        key = (name, id(value), role, written, digits, stale, None if compare is None else id(compare[0]),
               id(hidden))
        self.compare = compare
        self.hidden = hidden
        if key == self._key and (value is None or value is self.value):
            return                        # the same array (arrays are never modified in place)
        self._key = key
        self.tensor_name = name
        self.value = None if value is None else np.asarray(value)
        self.digits = digits
        self.stale = stale
        self.written = written
        self.border_title = role
        self.border_subtitle = shape_str(self.value) if self.value is not None else ""
        self._strips = None

    def mode(self) -> str:
        """'numbers' or 'heatmap' for the current size (for tests and the help text)."""
        self._ensure()
        return self._mode

    def _ensure(self) -> bool:
        """Have the lines for the current size; whether they had to be built (not cached)."""
        key = (self.size.width, self.size.height, self.base)
        if self._strips is None or self._built_for != key:
            # the same array at the same size was drawn before (a step back, the next op's input)
            full = key + (self.tensor_name, self.digits, self.stale, self.force_heatmap,
                          None if self.compare is None else id(self.compare[0]), id(self.hidden))
            hit = _BUILT.get(self.value, full) if self.value is not None else _NO_VALUE.get(full)
            built = hit is None
            if built:
                strips = self._build(*key[:2])
                hit = (strips, self._mode)
                if self.value is not None:
                    _BUILT.put(self.value, full, hit)
                else:
                    keep(_NO_VALUE, full, hit, 256)
            self._strips, self._mode = hit
            self._blank = Strip.blank(key[0], self.base)
            self._built_for = key
            return built
        return False

    def render_line(self, y: int) -> Strip:
        """Line ``y`` of the inside of the frame."""
        self._ensure()
        if y < len(self._strips):
            return self._strips[y]
        return self._blank

    def _build(self, W: int, H: int) -> list[Strip]:
        base = self.base
        dim = Style(dim=True)
        self._mode = "empty"
        if W <= 0 or H <= 0:
            return []
        lines: list[Strip] = []
        if self.tensor_name:
            nm = self.tensor_name if len(self.tensor_name) <= W else "…" + self.tensor_name[-(W - 1):]
            lines.append(Strip([Segment(nm, base + Style(bold=True))]))
            H -= 1
        if self.value is None:
            lines.append(Strip([Segment("· not computed yet" if self.tensor_name else "", base + dim)]))
            return [s.crop(0, W).adjust_cell_length(W, base) for s in lines]
        a = self.value
        a2, block, row_block = grid_2d(a)
        hidden = hidden_2d(a, self.hidden)
        if hidden is not None and not hidden.any():
            hidden = None
        H0 = H + len(lines)
        bad = nonfinite_text(a)
        R, C = a2.shape
        seps = separators(R, row_block)
        # numbers, if every one fits with the chosen precision
        cells = None
        if R + seps <= H and a.size <= max(H * 16, MAX_NUMBERS) and not self.force_heatmap:
            # the chosen precision, or fewer digits (down to 3) before giving up on numbers
            theirs = compare_2d(a, self.compare)
            for d in range(self.digits, min(self.digits, 3) - 1, -1):
                cells = number_lines(a2, d, theirs)
                wcol = max(len(s) for row in cells for s in row)
                if C * (wcol + 1) - 1 <= W:
                    break
                cells = None
        if cells is not None:
            self._mode = "numbers"
            wcol = max(len(s) for row in cells for s in row)
            st = base + (dim if self.stale else Style())
            faint = base + dim
            if hidden is not None:                # the legend of the dim cells, on the name's line
                _legend(lines, W, MASKED_LEGEND, faint)
            if a.size > 8 and R + seps < H:
                lines.append(Strip([Segment(_fit(bad or stats_line(a), W), base + (BAD_STYLE if bad else dim))]))
            rule = None
            for r, row in enumerate(cells):
                if row_block and r and r % row_block == 0:     # stacked blocks (samples, channels): a rule
                    if rule is None:
                        rule = Strip([Segment(_rule(C, wcol, block), faint)])
                    lines.append(rule)
                segs = []
                for j, s in enumerate(row):
                    if j:                          # heads side by side: │ between their grids
                        segs.append(Segment("│", faint) if block and j % block == 0 else Segment(" ", st))
                    style = BAD_STYLE if s in ("NaN", "+Inf", "-Inf") or "≠" in s else \
                        faint if hidden is not None and hidden[r, j] else st
                    segs.append(Segment(s.rjust(wcol), style))
                lines.append(Strip(segs))
        else:
            self._mode = "heatmap"
            head = H >= 3
            theirs = compare_2d(a, self.compare)
            if theirs is not None and theirs[1].any():
                bad = f"≠ {int(theirs[1].sum())} of {a.size} differ from yours (Enter: full size)"
            if head:
                lines.append(Strip([Segment(_fit(bad or stats_line(a), W), base + (BAD_STYLE if bad else dim))]))
            avail = H0 - len(lines) - (1 if H >= 4 else 0)
            codes, scale = heat_codes(a2, max(1, avail) * 2, W, hidden)
            # a small matrix in a big box: blow each cell up (at most 4x) so it is readable
            fx = max(1, min(4, W // codes.shape[1]))
            fy = max(1, min(4, (2 * max(1, avail)) // codes.shape[0]))
            if fx > 1 or fy > 1:
                codes = np.repeat(np.repeat(codes, fy, axis=0), fx, axis=1)
            lines += heat_strips(codes, W, base)
            if H >= 4:
                lo, hi = f"-{num(scale, 2)} ", f" +{num(scale, 2)}"
                if len(lo) + len(hi) + 3 > W:               # narrow box: the scale alone
                    lo, hi = "", f" ±{num(scale, 2)}"
                nb = max(1, min(2 * LEVELS + 1, W - len(lo) - len(hi)))
                legend = [Segment(lo, base + dim)]
                for code in np.linspace(0, 2 * LEVELS, nb).round().astype(int):
                    legend.append(Segment("█", Style(color=PALETTE[code])))
                legend.append(Segment(hi, base + dim))
                if bad:
                    legend.append(Segment(" N=NaN ∞=Inf", base + BAD_STYLE))
                lines.append(Strip(legend))
            if hidden is not None:                # (on the name's line, as with numbers)
                _legend(lines, W, MASKED_HEAT_LEGEND, base + dim)
        return [s.crop(0, W).adjust_cell_length(W, base) for s in lines[:H0]]


# frames: (top-left, horizontal, top-right, vertical, bottom-left, bottom-right)
ROUND = ("╭", "─", "╮", "│", "╰", "╯")
HEAVY = ("┏", "━", "┓", "┃", "┗", "┛")        # written by the op just run
DOUBLE = ("╔", "═", "╗", "║", "╚", "╝")       # focused (Tab): Enter opens it, e explains it


def frame_edges(w: int, title: str, subtitle: str, chars) -> tuple[str, str]:
    """A box's top and bottom edges, ``w`` cells wide: the title after one rule cell at the top
    left, the subtitle before one at the bottom right (as Textual draws border titles)."""
    tl, hz, tr, _, bl, br = chars
    inner = max(0, w - 2)

    # (in cells, not characters: "m̂" is two characters in one cell, and a frame counted in
    # characters came out one cell short)
    def label(text, room):
        if not text or room < 3:
            return ""
        text = f" {text} "
        return text if cell_len(text) <= room else set_cell_size(text, max(0, room - 2)) + "… "
    t = label(title, inner - 1)
    top = tl + (hz + t + hz * (inner - 1 - cell_len(t)) if t else hz * inner) + tr
    b = label(subtitle, inner - 1)
    bottom = bl + (hz * (inner - 1 - cell_len(b)) + b + hz if b else hz * inner) + br
    return set_cell_size(top, w), set_cell_size(bottom, w)


class TensorCanvas(DirectLines, ScrollView, can_focus=True):
    """The operation panel's tensors: every box drawn here, frames included, as cached Strips on one
    Line-API canvas. Stepping changes the boxes' sizes and contents but never the widget's own
    geometry (so no relayout), and only the canvas lines that changed are repainted.

    Focus: Tab and the arrow keys select a box (Tab past the last one moves focus on), Enter opens
    the selected tensor full-size, e explains it; a click opens the box under the mouse."""

    COMPONENT_CLASSES = {"tensor-canvas--frame", "tensor-canvas--written", "tensor-canvas--selected",
                         "tensor-canvas--selected-written"}
    DEFAULT_CSS = """
    TensorCanvas { height: 1fr; scrollbar-size-vertical: 1; }
    TensorCanvas > .tensor-canvas--frame { color: $panel-lighten-2; }
    TensorCanvas > .tensor-canvas--written { color: $warning; }
    TensorCanvas > .tensor-canvas--selected { color: $primary-lighten-3; text-style: bold; }
    TensorCanvas > .tensor-canvas--selected-written { color: $warning; text-style: bold; }
    """
    BINDINGS = [
        Binding("tab", "select(1)", "next tensor", show=False),
        Binding("shift+tab", "select(-1)", "previous tensor", show=False),
        Binding("right", "select(1)", show=False),
        Binding("left", "select(-1)", show=False),
        Binding("down", "select_row(1)", show=False),
        Binding("up", "select_row(-1)", show=False),
    ]

    class Open(Message):
        """A box was clicked: open its tensor."""

        def __init__(self, box: TensorBox):
            super().__init__()
            self.box = box

    def __init__(self, slots: int = 8, **kw):
        super().__init__(**kw)
        self.boxes = [TensorBox(k) for k in range(slots)]
        self.selected: int | None = None      # a slot
        self._lines: list[Strip] = []
        self._width = 0
        self._height = 0
        self._line_cache: dict = {}           # (width, the strips of a line and where) -> (those, the line)
        self._head_src = ()                   # the lines above the boxes (rich Text), as given
        self._head_n = 0                      # ... how many (they stay in view: the boxes scroll below)
        self._room_h = 0                      # the canvas's height, as place() was told it
        self._fits = True                     # every box in view: no scrolling
        self._head: list[Strip] | None = None  # ... and drawn
        self._frames: dict = {}
        self._framed_lines: dict = {}         # (ids of a box's lines, its size and frame) -> (those, the framed lines)
        self._ahead_lines: dict = {}          # as _line_cache, the lines composed ahead (prebuild)
        self._styles: dict | None = None

    # --- what it shows ----------------------------------------------------------------------------
    def place(self, placed: tuple, height_to_be: int | None = None, head=(), tallest: int = 0) -> None:
        """``placed``: (slot, x, y, width, height) per box shown, frames included.
        ``height_to_be``: the canvas's height once the layout in progress is done, if its owner
        knows it (the panel sets it). ``head``: lines of rich Text drawn at the top, above the
        boxes (the panel's formula; the boxes are placed below them). ``tallest``: the content's
        height at its tallest at this size, if the owner knows it: the scrolling height kept for
        every op (a new virtual size relayouts the screen)."""
        if head is not self._head_src:
            self._head_src = head
            self._head = None
        if len(head) != self._head_n and self.scroll_offset.y:
            self.refresh()                    # (the rows below the formula show other content rows)
        self._head_n = len(head)
        shown = {}
        for j, x, y, w, h in placed:
            shown[j] = Region(x, y, w, h)
        for b in self.boxes:
            b.display = b.slot in shown
            if b.display and b.region != shown[b.slot]:
                b.region = shown[b.slot]
        height = max(max((r.bottom for r in shown.values()), default=0), len(head))
        width = max((r.right for r in shown.values()), default=0)
        self._width = width
        # virtual_size is a layout reactive: a new value relayouts the whole screen. Content that
        # fits the canvas needs no scrolling, so it gets one stable value (0x0) and the step costs
        # no layout; only content larger than the canvas (a big network's heatmaps, a small
        # terminal) sets its real size. A resize places the boxes again (refresh_view).
        room_h = self.size.height if height_to_be is None else height_to_be
        self._room_h = room_h
        tall = max(height, tallest)
        fits = not shown or (0 < width <= self.size.width and 0 < tall <= room_h)
        self._height = height
        # (no horizontal scrolling while the boxes fit across: the width, which varies from op to
        # op, would be a new virtual size each time)
        virtual = Size(0, 0) if fits else Size(width if width > self.outer_size.width - 1 else 0, tall)
        if self.virtual_size != virtual:
            self.virtual_size = virtual
        if fits and (self.scroll_x or self.scroll_y):
            self.scroll_to(0, 0, animate=False)
        self._fits = fits
        if self.selected is not None and not self._selectable(self.selected):
            self.selected = None

    # The formula stays in view: its lines (the head) are drawn at the top of the canvas whatever
    # the scrolling, and the boxes scroll below them. Scrolled by y, the canvas shows the head on
    # rows 0 .. head_n - 1 and the content's rows head_n + y .. on the rest.
    def _content_row(self, row: int) -> int:
        return row if row < self._head_n else row + int(self.scroll_offset.y)

    def _scroll_for(self, top: int, bottom: int) -> int:
        """The scrolling that shows content rows top .. bottom - 1 below the head, moving the least
        from where it is (their top, if they are taller than the room below the head)."""
        y = int(self.scroll_offset.y)
        H, hn = self._room_h or self.size.height, self._head_n
        if bottom > y + H:
            y = bottom - H
        if top < y + hn:
            y = top - hn
        return max(0, y)

    def show_region(self, r: Region) -> None:
        """Scroll (the boxes, below the formula) until the region of the content is in view."""
        if not self._fits:
            self.scroll_to(y=self._scroll_for(r.y, r.bottom), animate=False, immediate=True)

    def settle(self) -> None:
        """A new op's boxes: in view, the focused one (while the canvas has focus), else those the
        op wrote, else the first ones: the content's top. A panel that does not hold every box
        showed the op's inputs and cut off what it wrote, the point of the op (tiny-lm's
        ∂E/∂scores)."""
        if self._fits:
            return
        sel = self.selected if self.has_focus else None
        if sel is not None and self._selectable(sel):
            self.show_region(self.boxes[sel].region)
            return
        written = [b.region for b in self.boxes if b.display and b.written and b.tensor_name]
        y = 0
        if written:
            top, bottom = min(r.y for r in written), max(r.bottom for r in written)
            y = max(0, min(bottom - (self._room_h or self.size.height), top - self._head_n))
        if y != self.scroll_offset.y:
            self.scroll_to(y=y, animate=False, immediate=True)

    def refresh_lines(self, y_start: int, line_count: int = 1) -> None:
        """Repaint content rows y_start .. y_start + line_count - 1 where they are on screen."""
        W = max(self.virtual_size.width, self.size.width)
        hn, dy = self._head_n, int(self.scroll_offset.y)
        a, b = y_start, y_start + line_count
        if a < hn:
            self.refresh(Region(0, a, W, min(b, hn) - a))
        lo, hi = max(a, hn + dy) - dy, b - dy
        if hi > lo:
            self.refresh(Region(0, lo, W, hi - lo))

    def visible(self) -> list[TensorBox]:
        """The boxes on the canvas now, in reading order."""
        return [b for b in self.boxes if b.display]

    def selected_box(self) -> TensorBox | None:
        if self.selected is None or not self.has_focus:
            return None
        b = self.boxes[self.selected]
        return b if b.display and b.tensor_name else None

    def redraw(self) -> None:
        """Compose the lines from the boxes; repaint only the lines that changed."""
        new = self._compose_lines()
        old = self._lines
        self._lines = new
        if len(old) != len(new):
            self.refresh()
            return
        y = 0
        n = len(new)
        while y < n:
            if old[y] is new[y] or old[y] == new[y]:
                y += 1
                continue
            y0 = y
            while y < n and not (old[y] is new[y] or old[y] == new[y]):
                y += 1
            self.refresh_lines(y0, y - y0)

    # --- drawing ----------------------------------------------------------------------------------
    def _style(self, kind: str) -> Style:
        if self._styles is None:
            base = self.rich_style
            self._styles = {"base": base}
            for k in ("frame", "written", "selected", "selected-written"):
                self._styles[k] = base + self.get_component_rich_style(f"tensor-canvas--{k}", partial=True)
        return self._styles[kind]

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles = None
        self._frames = {}
        self._framed_lines = {}
        self._ahead_lines = {}
        self._head = None
        if self.is_mounted:
            self._lines = self._compose_lines()

    def _frame(self, b: TensorBox, selected: bool):
        """(top, bottom, left/right edge) Strips of a box's frame."""
        r = b.region
        empty = not b.tensor_name
        kind = ("selected-written" if b.written else "selected") if selected else ("written" if b.written else "frame")
        key = (r.width, b.border_title, b.border_subtitle, kind, empty)
        hit = self._frames.get(key)
        if hit is None:
            if empty:                            # an empty slot of a constant layout: a blank frame
                blank = Strip.blank(r.width, self._style("base"))
                hit = (blank, blank, Segment(" ", self._style("base")))
            else:
                # the shape says focused (double) or written (heavy), the colour written (yellow):
                # in the default theme the accent a focus took was the very yellow of written
                chars = DOUBLE if selected else HEAVY if b.written else ROUND
                st = self._style(kind)
                top, bottom = frame_edges(r.width, b.border_title, b.border_subtitle, chars)
                hit = (Strip([Segment(top, st)]), Strip([Segment(bottom, st)]), Segment(chars[3], st))
            if len(self._frames) > 256:
                self._frames.clear()
            self._frames[key] = hit
        return hit

    def _head_strips(self) -> list[Strip]:
        if self._head is None:
            base = self._style("base")
            console = self.app.console               # (wrapped to the panel's width by the panel)
            self._head = [Strip(list(Segment.apply_style(line.render(console),
                                                         base + console.get_style(line.style) if line.style else base)))
                          for line in self._head_src]
        return self._head

    # the app's line filters are applied here, part by part (each part's filtered Strip is cached
    # with it), not to every new line of the canvas: a line that changed only in one box, and a
    # box built ahead, cost no filter pass over the rest (a heatmap line is ~100 segments)
    FILTERS_APPLIED = True

    def _filtering(self) -> tuple[tuple, object]:
        """(the app's line filters, the background they are given) for the canvas's lines; none
        when Textual's styles cache draws the canvas (a border or padding: it applies them)."""
        plain = self._plain if self._plain is not None else self._plain_styles()
        if not plain[0]:
            return (), None
        return tuple(self.app.get_line_filters()), plain[1]

    def _compose_lines(self) -> list[Strip]:
        base = self._style("base")
        flt, bg = self._filtering()
        fill = _filled(base, flt, bg)
        self._filtered = (flt, fill)
        boxes = [b for b in self.boxes if b.display]
        H = max(max((b.region.bottom for b in boxes), default=0), len(self._head_src))
        rows: list[list] = [[] for _ in range(H)]
        for y, strip in enumerate(self._head_strips()):
            rows[y].append((0, strip))
        sel = self.selected if self.has_focus else None
        self._box_parts(rows, boxes, sel, base)
        # a line made of the same strips at the same places is the Strip it was (most lines of a
        # step: the boxes that did not change, the formula when it did not), or the one composed
        # ahead (prebuild)
        cache: dict = {}
        # (each line as wide as the canvas at least: lines_in hands them over as they are, where a
        # narrower line was padded into a new Strip on every ask, its sequences made again)
        W = max(self._width, self.size.width)
        out = [self._line(parts, W, flt, bg, fill, cache) for parts in rows]
        self._line_cache = cache
        return out

    def _box_parts(self, rows: list[list], boxes, sel, base: Style) -> None:
        """Add each box's framed lines, left to right, to the rows of the canvas they are on."""
        for b in sorted(boxes, key=lambda b: b.region.x):
            r = b.region
            for dy, strip in enumerate(self._framed(b, b.slot == sel, base)):
                rows[r.y + dy].append((r.x, strip))

    def _line(self, parts: list, W: int, flt: tuple, bg, fill: Style, cache: dict) -> Strip:
        """One line of the canvas, ``W`` wide, from its (x, Strip) parts through the filters: the
        line kept for the same parts (shown last, or composed ahead), else composed now."""
        key = (W, flt, tuple((bx, id(strip)) for bx, strip in parts))
        for kept in (self._line_cache, self._ahead_lines):
            hit = kept.get(key)
            if hit is not None and all(a is b for (_, a), (_, b) in zip(hit[0], parts)):
                cache[key] = hit
                return hit[1]
        segs: list[Segment] = []
        x = 0
        for bx, strip in parts:
            if bx > x:
                segs.append(Segment(" " * (bx - x), fill))
                x = bx
            segs.extend(_through(strip, flt, bg))
            x += strip.cell_length
        if x < W:
            segs.append(Segment(" " * (W - x), fill))
        line = Strip(segs, max(W, x))
        cache[key] = (parts, line)
        return line

    def prebuild_steps(self, slots: list[tuple], digits: int, compare: dict | None, placed: tuple,
                       masks: dict | None = None):
        """Build the lines of ``slots`` (the operation panel's (role, name, value, written)) in
        boxes at ``placed`` (as place() takes it) into the by-array cache, frame them and compose
        the canvas lines they make below the formula (with their terminal sequences), drawing
        nothing: the app does this for the next op while the user reads the current one, so the
        key that shows it finds its lines made. A generator: one box a step, then the lines (the
        app runs a step a callback, so that a key waits for one box at most)."""
        base = self._style("base")
        flt, bg = self._filtering()
        fill = _filled(base, flt, bg)
        compare = compare or {}
        masks = masks or {}
        boxes = []
        for j, x, y, w, h in placed:
            ahead = TensorBox(j)
            ahead.region, ahead.base = Region(x, y, w, h), base
            if j < len(slots):                 # as OpPanel._fill shows them
                role, name, value, written = slots[j]
                ahead.show(name, value, role=role, written=written, digits=digits, compare=compare.get(name),
                           hidden=masks.get(name))
            else:
                ahead.show(None, None)
            if ahead._ensure():
                yield
            boxes.append(ahead)
        if not boxes:
            return
        top = min(b.region.y for b in boxes)    # (the formula's lines above are drawn with it)
        H = max(b.region.bottom for b in boxes)
        rows: list[list] = [[] for _ in range(H)]
        self._box_parts(rows, boxes, self.selected if self.has_focus else None, base)
        W = max(max(b.region.right for b in boxes), self.size.width)      # (as _compose_lines)
        if len(self._ahead_lines) > 256:
            self._ahead_lines = {}
        # (and their terminal sequences, made with the console the app writes its frames with,
        # which each Strip keeps: the frame that shows a line writes them as they are. A headless
        # app writes nothing, and a rich Style keeps the sequences of the first console that
        # renders it: a test's own console would get the headless console's colours)
        console = None if self.app.is_headless else self.app.console
        for parts in rows[top:]:
            line = self._line(parts, W, flt, bg, fill, self._ahead_lines)
            if console is not None:
                line.render(console)

    def _framed(self, b: TensorBox, selected: bool, base: Style) -> list[Strip]:
        """A box's lines with its frame, kept by its lines (as the by-array cache gives them) and
        frame, so that a box built ahead (prebuild) is framed ahead too."""
        b.base = base
        b._ensure()
        top, bottom, edge = self._frame(b, selected)
        r = b.region
        key = (id(b._strips), r.width, r.height, id(top), id(edge))
        hit = self._framed_lines.get(key)
        if hit is not None and hit[0] is b._strips and hit[1] is top and hit[2] is edge:
            return hit[3]
        lines = [top] + [Strip([edge, *b.render_line(dy), edge], r.width) for dy in range(r.height - 2)]
        if r.height > 1:
            lines.append(bottom)
        lines = lines[:r.height]
        if len(self._framed_lines) > 160:        # (the boxes shown, and those of the look-ahead's stops)
            self._framed_lines.clear()
        self._framed_lines[key] = (b._strips, top, edge, lines)       # (what the ids are of, kept)
        return lines

    def lines_in(self, lines: range, W: int) -> list[Strip]:
        dy, hn = int(self.scroll_offset.y), self._head_n
        if getattr(self, "_filtered", None) is None or self._filtered[0] != self._filtering()[0]:
            self._lines = self._compose_lines()         # (the filters changed: the lines with them)
        fill = self._filtered[1]
        have, n = self._lines, len(self._lines)
        out = []
        for y in lines:
            if y >= hn:                                 # (the formula's lines do not scroll)
                y += dy
            if y < n:
                line = have[y]
                out.append(line if line.cell_length == W else line.crop(0, W).adjust_cell_length(W, fill))
            else:
                out.append(Strip.blank(W, fill))
        return out

    # --- focus and keys ---------------------------------------------------------------------------
    def _selectable(self, j: int) -> bool:
        b = self.boxes[j]
        return b.display and bool(b.tensor_name)

    def _order(self) -> list[int]:
        return [b.slot for b in sorted((b for b in self.boxes if self._selectable(b.slot)),
                                       key=lambda b: (b.region.y, b.region.x))]

    def select(self, slot: int | None) -> None:
        """Select a box (it is drawn with the accent frame while the canvas has focus)."""
        if slot == self.selected:
            return
        self.selected = slot
        self.redraw()
        if slot is not None:
            self.show_region(self.boxes[slot].region)

    def action_select(self, d: int) -> None:
        order = self._order()
        if not order:
            (self.screen.focus_next() if d > 0 else self.screen.focus_previous())
            return
        if self.selected not in order:
            self.select(order[0] if d > 0 else order[-1])
            return
        j = order.index(self.selected) + d
        if 0 <= j < len(order):
            self.select(order[j])
        else:                                     # past the last box (or before the first): move on
            self.screen.focus_next() if d > 0 else self.screen.focus_previous()

    def action_select_row(self, d: int) -> None:
        order = self._order()
        if not order:
            return
        if self.selected not in order:
            self.select(order[0])
            return
        cur = self.boxes[self.selected].region
        cx = cur.x + cur.width // 2
        rows = sorted({self.boxes[j].region.y for j in order})
        ri = rows.index(cur.y) + d
        if not 0 <= ri < len(rows):
            return
        cands = [j for j in order if self.boxes[j].region.y == rows[ri]]
        self.select(min(cands, key=lambda j: abs(self.boxes[j].region.x + self.boxes[j].region.width // 2 - cx)))

    def on_focus(self) -> None:
        if self.selected is None or not self._selectable(self.selected):
            order = self._order()
            self.selected = order[0] if order else None
        self.redraw()

    def on_blur(self) -> None:
        self.redraw()

    def box_at(self, x: int, y: int) -> TensorBox | None:
        """The box under a point of the widget (scrolling counted; the formula's rows hold none)."""
        if y < self._head_n:
            return None
        y = self._content_row(y)
        for b in self.boxes:
            if b.display and b.tensor_name and b.region.contains(x, y):
                return b
        return None

    def on_click(self, event) -> None:
        b = self.box_at(event.x, event.y)
        if b is None:
            return
        self.selected = b.slot
        self.focus()
        self.redraw()
        self.post_message(self.Open(b))


def _filled(base: Style, filters: tuple, background) -> Style:
    """``base`` as the filters leave it (the style of the canvas's blank cells)."""
    return next(iter(_through(Strip([Segment(" ", base)]), filters, background))).style if filters else base


def _through(strip: Strip, filters: tuple, background) -> Strip:
    """``strip`` through the line filters, in order (each result cached by the Strip before it)."""
    for f in filters:
        strip = strip.apply_filter(f, background)
    return strip


def _rule(C: int, wcol: int, block: int) -> str:
    """The rule between stacked blocks of numbers: C columns of ``wcol``, ┼ where a │ parts the
    heads (column blocks of ``block``)."""
    return "".join(("┼" if block and j % block == 0 else "─") + "─" * wcol if j else "─" * wcol for j in range(C))


def _fit(text: str, W: int) -> str:
    return text if len(text) <= W else text[: max(0, W - 1)] + "…"


def has_nonfinite(a) -> bool:
    return any(nonfinite_counts(a))
