"""The layers table: per layer its output, local and upstream gradients, parameter gradient and
update, side by side."""
from __future__ import annotations

import numpy as np
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip
from textual.widget import Widget

from ..format import by_array, compact, nonfinite_text
from .memo import DirectLines
from .text import NONFINITE, WRITTEN


class LayersTable(DirectLines, Widget):
    """Per layer: output, local gradient, upstream gradient, parameter gradient, update. A Line-API
    widget: the rows are laid out once per update into cached Strips (a rich Table costs ~10x more)."""
    _key = None                     # what the panel shows now

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
        if key == self._key:
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
