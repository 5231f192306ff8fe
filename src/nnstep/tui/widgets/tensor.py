"""TensorView: one tensor in a box, as numbers when they fit, else a colour heatmap.

A Line-API widget: the lines are built once per (tensor, size, precision) into cached Strips and
render_line only indexes them (STYLE.md: ~2 ms per repaint instead of ~12 ms through Static).
"""
from __future__ import annotations

import numpy as np
from rich.segment import Segment
from rich.style import Style
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget

from ..format import as_2d, grid_2d, nonfinite_counts, nonfinite_text, num, shape_str, stats_line

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


PALETTE = _palette() + [NAN_C, PINF_C, NINF_C]      # codes: 0..2L colours, then NaN, +Inf, -Inf
C_NAN, C_PINF, C_NINF = 2 * LEVELS + 1, 2 * LEVELS + 2, 2 * LEVELS + 3
_STYLES: dict[tuple[int, int], Style] = {}
_BAD = {C_NAN: "N", C_PINF: "∞", C_NINF: "∞"}
BAD_STYLE = Style(color="white", bgcolor="red", bold=True)


def _cell_style(top: int, bottom: int) -> Style:
    s = _STYLES.get((top, bottom))
    if s is None:
        bad = top if top > 2 * LEVELS else bottom
        if bad > 2 * LEVELS:
            s = Style(color="#000000", bgcolor=PALETTE[bad], bold=True)
        else:
            s = Style(color=PALETTE[top], bgcolor=PALETTE[bottom])
        _STYLES[(top, bottom)] = s
    return s


def _bins(n: int, m: int) -> np.ndarray:
    return np.linspace(0, n, m + 1).astype(int)[:-1]


def heat_codes(a2: np.ndarray, rows: int, cols: int) -> tuple[np.ndarray, float]:
    """Reduce a 2-d array to at most rows × cols colour codes (block means; a block holding a NaN or
    Inf shows it). Returns (codes, scale)."""
    a2 = np.asarray(a2, dtype=np.float64)
    R, C = a2.shape
    rows, cols = max(1, min(rows, R)), max(1, min(cols, C))
    finite = np.isfinite(a2)
    allf = bool(finite.all())
    z = a2 if allf else np.where(finite, a2, 0.0)
    rb, cb = _bins(R, rows), _bins(C, cols)
    if rows == R and cols == C:
        m = z
    else:
        s = np.add.reduceat(np.add.reduceat(z, rb, axis=0), cb, axis=1)
        cnt = np.add.reduceat(np.add.reduceat(np.ones_like(z), rb, axis=0), cb, axis=1)
        m = s / cnt
    scale = float(np.abs(z).max()) if z.size else 0.0
    q = np.zeros(m.shape, dtype=np.int64) + LEVELS
    if scale > 0:
        q = np.rint(m / scale * LEVELS).astype(np.int64) + LEVELS
        np.clip(q, 0, 2 * LEVELS, out=q)
    if not allf:
        for mask, code in ((np.isneginf(a2), C_NINF), (np.isposinf(a2), C_PINF), (np.isnan(a2), C_NAN)):
            if mask.any():
                hit = np.add.reduceat(np.add.reduceat(mask.astype(np.int64), rb, axis=0), cb, axis=1) > 0
                q[hit] = code
    return q, scale


def heat_strips(codes: np.ndarray, width: int, bg: Style) -> list[Strip]:
    """Two rows of codes per line with the upper half block."""
    out = []
    R = codes.shape[0]
    for r in range(0, R, 2):
        top = codes[r]
        bot = codes[r + 1] if r + 1 < R else None
        segs = []
        for c in range(codes.shape[1]):
            t = int(top[c])
            if bot is None:
                b = -1
                if t > 2 * LEVELS:
                    segs.append(Segment(_BAD[t], _cell_style(t, t)))
                else:
                    segs.append(Segment("▀", Style(color=PALETTE[t])))
                continue
            b = int(bot[c])
            if t > 2 * LEVELS or b > 2 * LEVELS:
                segs.append(Segment(_BAD[t if t > 2 * LEVELS else b], _cell_style(t, b)))
            else:
                segs.append(Segment("▀", _cell_style(t, b)))
        out.append(Strip(Segment.simplify(segs)).adjust_cell_length(width, bg))
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


# a tensor is drawn as numbers (never a heatmap) when it is at most this big: every tensor of the
# shipped lesson networks is, and a student must be able to read each of its numbers
MAX_NUMBERS = 64
MAX_NUMBER_ROWS = 16


def natural_size(name: str | None, value, role: str, digits: int, max_width: int,
                 compare=None) -> tuple[int, int] | None:
    """The box (width, height, borders included) that shows every number of ``value`` with its name
    and role, at ``digits`` significant digits or fewer (down to 3) to fit ``max_width``; None when the
    tensor is too big for numbers (it is drawn as a heatmap in a box of any size instead)."""
    frame = max(len(role) + 4, len(shape_str(value)) + 3 if value is not None else 0, len(name or ""))
    if value is None:
        w = max(frame, len("· not computed yet") if name else 0)
        return min(max_width, w + 2), 4
    a = np.asarray(value)
    a2, _ = grid_2d(a)
    R, C = a2.shape
    if a.size > MAX_NUMBERS or R > MAX_NUMBER_ROWS:
        return None
    theirs = compare_2d(a, compare)
    for d in range(digits, min(digits, 3) - 1, -1):
        cells = number_lines(a2, d, theirs)
        wcol = max(len(s) for row in cells for s in row)
        w = max(frame, C * (wcol + 1) - 1) + 2
        if w <= max_width:
            return w, 2 + 1 + R                 # no stats line: every number is there
    return None


class TensorView(Widget, can_focus=True):
    """A tensor in a titled box. ``show(name, value, ...)`` swaps what it shows."""

    DEFAULT_CSS = """
    TensorView { height: 1fr; width: 1fr; border: round $panel-lighten-2; padding: 0 0; }
    TensorView:focus { border: round $accent; }
    TensorView.-written { border: heavy $warning; }
    TensorView.-written:focus { border: heavy $accent; }
    TensorView.-stale { color: $text-muted; }
    TensorView.-empty { border: round transparent; }
    """

    class Open(Message):
        def __init__(self, view: "TensorView"):
            super().__init__()
            self.view = view

    def __init__(self, **kw):
        super().__init__(**kw)
        self.tensor_name: str | None = None
        self.value = None
        self.digits = 6
        self.stale = False
        self.force_heatmap = False
        self._strips: list[Strip] | None = None
        self._built_for = None

    def show(self, name: str | None, value, role: str = "", written: bool = False, digits: int = 6,
             stale: bool = False, compare=None) -> None:
        """``compare``: (the user's values, where they differ) from nnstep compare: each differing
        cell shows both, marked."""
        key = (name, id(value), role, written, digits, stale, None if compare is None else id(compare[0]))
        self.compare = compare
        if key == getattr(self, "_key", None) and (value is None or value is self.value):
            return                        # the same array (arrays are never modified in place)
        self._key = key
        self.tensor_name = name
        self.value = None if value is None else np.asarray(value)
        self.digits = digits
        self.stale = stale
        self.border_title = role
        self.border_subtitle = shape_str(self.value) if self.value is not None else ""
        self.set_class(written, "-written")
        self.set_class(name is None, "-empty")
        self.can_focus = name is not None
        self.set_class(stale, "-stale")
        self._strips = None
        self.refresh()

    def on_click(self) -> None:
        self.post_message(self.Open(self))

    # --- rendering --------------------------------------------------------------------------------
    def mode(self) -> str:
        """'numbers' or 'heatmap' for the current size (for tests and the help text)."""
        self._ensure()
        return self._mode

    def _ensure(self):
        key = (self.size.width, self.size.height)
        if self._strips is None or self._built_for != key:
            self._strips = self._build(*key)
            self._blank = Strip.blank(key[0], self.rich_style)
            self._built_for = key

    def _build(self, W: int, H: int) -> list[Strip]:
        base = self.rich_style
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
        a2, block = grid_2d(a)
        H0 = H + len(lines)
        bad = nonfinite_text(a)
        R, C = a2.shape
        # numbers, if every one fits with the chosen precision
        cells = None
        if R <= H and a.size <= max(H * 16, MAX_NUMBERS) and not self.force_heatmap:
            # the chosen precision, or fewer digits (down to 3) before giving up on numbers
            theirs = compare_2d(a, getattr(self, "compare", None))
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
            if a.size > 8 and R < H:
                lines.append(Strip([Segment(_fit(bad or stats_line(a), W), base + (BAD_STYLE if bad else dim))]))
            for row in cells:
                segs = []
                for j, s in enumerate(row):
                    if j:                          # heads side by side: │ between their grids
                        segs.append(Segment("│", base + dim) if block and j % block == 0 else Segment(" ", st))
                    segs.append(Segment(s.rjust(wcol), BAD_STYLE if s in ("NaN", "+Inf", "-Inf") or "≠" in s else st))
                lines.append(Strip(segs))
        else:
            self._mode = "heatmap"
            head = H >= 3
            theirs = compare_2d(a, getattr(self, "compare", None))
            if theirs is not None and theirs[1].any():
                bad = f"≠ {int(theirs[1].sum())} of {a.size} differ from yours (Enter: full size)"
            if head:
                lines.append(Strip([Segment(_fit(bad or stats_line(a), W), base + (BAD_STYLE if bad else dim))]))
            avail = H0 - len(lines) - (1 if H >= 4 else 0)
            codes, scale = heat_codes(a2, max(1, avail) * 2, W)
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
        return [s.crop(0, W).adjust_cell_length(W, base) for s in lines[:H0]]

    def render_line(self, y: int) -> Strip:
        self._ensure()
        if y < len(self._strips):
            return self._strips[y]
        return self._blank


def _fit(text: str, W: int) -> str:
    return text if len(text) <= W else text[: max(0, W - 1)] + "…"


def has_nonfinite(a) -> bool:
    return any(nonfinite_counts(a))
