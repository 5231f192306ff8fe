"""Number formatting for the screen (no Textual here). The statistics come from the one statistics
module, nnstep.model.stats, which breakpoints and the JSON outputs use too."""
from __future__ import annotations

import numpy as np

from ..model.formula import num as _num
from ..model.stats import nonfinite_counts, norm, summary

__all__ = ["by_array", "num", "shape_str", "as_2d", "grid_2d", "nonfinite_counts", "stats_line", "nonfinite_text", "compact", "norm", "keep"]


def num(v, digits: int = 6) -> str:
    return _num(v, digits)


def shape_str(a) -> str:
    a = np.asarray(a)
    return "×".join(str(d) for d in a.shape) if a.ndim else "scalar"


def as_2d(a) -> np.ndarray:
    """How a tensor is laid out on screen: scalars 1×1, vectors one row, N-d as rows × last dim."""
    a = np.asarray(a)
    if a.ndim == 0:
        return a.reshape(1, 1)
    if a.ndim == 1:
        return a.reshape(1, -1)
    return a.reshape(-1, a.shape[-1])


def grid_2d(a) -> tuple[np.ndarray, int, int]:
    """How the operation panel lays a tensor out: as :func:`as_2d`, except that a 4-D tensor
    ``(N, h, T, d)`` (attention's q, k, v, scores, weights, per head; a conv's (N, C, H, W) or its
    weight (out, in, kh, kw)) has its heads side by side: row ``n·T + i``, column block ``h`` holds
    ``a[n, h, i, :]``, so each head is a T×d (T×T) grid. Returns the layout, the width of a column
    block (0: no blocks) and the height of a row block (0: none; the rows of one sample, of one
    output channel, whose blocks are stacked: a 3-D or higher tensor whose leading axes hold more
    than one of them)."""
    a = np.asarray(a)
    if a.ndim == 4:
        N, h, T, d = a.shape
        return a.transpose(0, 2, 1, 3).reshape(N * T, h * d), (d if h > 1 else 0), (T if N > 1 and T > 1 else 0)
    rows = a.shape[-2] if a.ndim >= 3 and a.shape[-2] > 1 and int(np.prod(a.shape[:-2])) > 1 else 0
    return as_2d(a), 0, rows


class by_array:
    """A small cache of what is derived from an array, keyed by the array's identity and the other
    arguments. Arrays the session hands out are never modified in place, and each entry keeps a
    reference to its array, so an id cannot be reused while it is cached. Stepping shows the same
    arrays again and again (an op's inputs were the last op's outputs; a step back shows what was
    shown): their statistics, heatmaps and lines are computed once. Least recently used entries
    go first."""

    def __init__(self, size: int = 256):
        from collections import OrderedDict
        self.size = size
        self.d: OrderedDict = OrderedDict()

    def get(self, a, key):
        hit = self.d.get((id(a), key))
        if hit is not None and hit[0] is a:
            self.d.move_to_end((id(a), key))
            return hit[1]
        return None

    def put(self, a, key, value):
        self.d[(id(a), key)] = (a, value)
        if len(self.d) > self.size:
            self.d.popitem(last=False)
        return value

    def memo(self, a, key, compute):
        """What ``compute()`` gives for ``a`` under ``key``, computed on the first call only."""
        hit = self.get(a, key)
        return self.put(a, key, compute()) if hit is None else hit


_TEXT = by_array(512)


def stats_line(a) -> str:
    return _TEXT.memo(a, "stats", lambda: _stats_line(a))


def _stats_line(a) -> str:
    a = np.asarray(a)
    if a.size == 0:
        return "empty"
    s = summary(a)
    if s is None:
        return "no finite values"
    return f"min {num(s['min'], 3)} max {num(s['max'], 3)} mean {num(s['mean'], 3)} norm {num(s['norm'], 3)}"


def nonfinite_text(a) -> str:
    return _TEXT.memo(a, "bad", lambda: _nonfinite_text(a))


def _nonfinite_text(a) -> str:
    nan, pinf, ninf = nonfinite_counts(a)
    parts = [f"{n} {w}" for n, w in ((nan, "NaN"), (pinf, "+Inf"), (ninf, "-Inf")) if n]
    return ("⚠ " + ", ".join(parts)) if parts else ""


def compact(a, digits: int = 4, max_numbers: int = 2) -> str:
    """A short cell: the numbers of a tiny tensor, else its shape and norm."""
    a = np.asarray(a)
    if a.size <= max_numbers:
        return " ".join(num(v, digits) for v in a.ravel())
    bad = nonfinite_text(a)
    if bad:
        return f"{shape_str(a)} {bad}"
    return f"{shape_str(a)} ‖{num(_TEXT.memo(a, 'norm', lambda: norm(a)), 3)}‖"


def keep(kept: dict, key, value, most: int = 8):
    """``value`` remembered under ``key`` in ``kept``, the oldest forgotten past ``most`` (the last
    few drawings of a panel: going back to what was shown lately draws nothing). Returns it."""
    if len(kept) >= most:
        kept.pop(next(iter(kept)))
    kept[key] = value
    return value
