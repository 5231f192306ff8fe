"""Summary statistics of a tensor, used by breakpoint conditions and the screen."""
from __future__ import annotations

import numpy as np

STATS = ("min", "max", "mean", "absmax", "norm")


def stat(a: np.ndarray, name: str) -> float:
    a = np.asarray(a, dtype=np.float64)
    if a.size == 0:
        return float("nan")
    with np.errstate(all="ignore"):
        if name == "min":
            return float(a.min())
        if name == "max":
            return float(a.max())
        if name == "mean":
            return float(a.mean())
        if name == "absmax":
            return float(np.abs(a).max())
        if name == "norm":
            return float(np.sqrt(np.sum(a * a)))
    raise ValueError(name)


def all_finite(a) -> bool:
    """Fast check: a sum is finite unless some element is non-finite (or it overflowed, which we
    then confirm element-wise)."""
    if not isinstance(a, np.ndarray):
        return bool(np.isfinite(a))
    with np.errstate(all="ignore"):
        if np.isfinite(np.add.reduce(a, axis=None)):
            return True
    return bool(np.isfinite(a).all())
