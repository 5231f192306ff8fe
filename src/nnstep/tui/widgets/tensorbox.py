"""TensorBox: one tensor in a box, as numbers when they fit, else a colour heatmap; its lines are
built once per (tensor, size, precision) into cached Strips. TensorCanvas (widgets.tensor) draws
every box of the operation panel, frames included."""
from __future__ import annotations

import numpy as np
from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual.geometry import Region, Size
from textual.strip import Strip

from ...model.stats import all_finite
from ..format import by_array, grid_2d, keep, nonfinite_counts, nonfinite_text, num, shape_str, stats_line

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


def _rule(C: int, wcol: int, block: int) -> str:
    """The rule between stacked blocks of numbers: C columns of ``wcol``, ┼ where a │ parts the
    heads (column blocks of ``block``)."""
    return "".join(("┼" if block and j % block == 0 else "─") + "─" * wcol if j else "─" * wcol for j in range(C))


def _fit(text: str, W: int) -> str:
    return text if len(text) <= W else text[: max(0, W - 1)] + "…"


def has_nonfinite(a) -> bool:
    return any(nonfinite_counts(a))
