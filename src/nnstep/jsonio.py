"""JSON conversion of arrays (docs/commands.md): nested lists of full-precision floats; a non-finite number
is the string "nan", "inf" or "-inf"."""
from __future__ import annotations

import math

import numpy as np


def _fix(v):
    if isinstance(v, list):
        return [_fix(e) for e in v]
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


def arr(a) -> object:
    a = np.asarray(a)
    if a.dtype.kind in "biu":
        return a.tolist()
    v = a.astype(np.float64).tolist()
    if not np.isfinite(a).all():
        v = _fix(v)
    return v


def num(x: float):
    x = float(x)
    return x if math.isfinite(x) else _fix(x)
