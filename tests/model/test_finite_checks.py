"""The NaN/Inf check every op runs (model.stats.finite_hint, all_finite): a false 'finite' would let
a NaN run on unseen, so every kind of value is tried, huge finite ones included (their sum of
squares overflows, and the exact test must then clear them)."""
import math

import numpy as np
import pytest

from nnstep.model.stats import all_finite, finite_hint


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_finite_hint_is_finite_only_when_every_element_is(dtype):
    rng = np.random.default_rng(0)
    with np.errstate(all="ignore"):
        for shape in [(), (1,), (7,), (64, 128), (3, 4, 5)]:
            a = rng.standard_normal(shape).astype(dtype)
            assert math.isfinite(finite_hint(a)) and all_finite(a)
            if a.size:
                for bad in (np.nan, np.inf, -np.inf):
                    b = a.copy()
                    b.flat[a.size // 2] = bad
                    assert not math.isfinite(finite_hint(b)) and not all_finite(b)
            t = np.asarray(a).T                    # not C-contiguous: the same answer
            assert math.isfinite(finite_hint(t))
        big = np.full((10,), np.finfo(dtype).max / 2, dtype=dtype)
        assert not math.isfinite(finite_hint(big))  # its squares overflow ...
        assert all_finite(big)                     # ... and the exact test clears it
        assert all_finite(np.zeros((0, 3), dtype=dtype)) and finite_hint(np.zeros(0, dtype=dtype)) == 0.0


def test_finite_hint_of_integers_scalars_and_views():
    assert finite_hint(np.arange(10)) == 0.0 and all_finite(np.array([2**62, -2**62]))
    assert finite_hint(3.5) == 0.0 and not math.isfinite(finite_hint(float("nan")))
    assert not math.isfinite(finite_hint(np.float32("inf")))
    a = np.arange(20.0).reshape(4, 5)[:, ::2]      # a strided view
    a[1, 1] = np.nan
    assert not math.isfinite(finite_hint(a)) and not all_finite(a)
