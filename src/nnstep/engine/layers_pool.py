"""Pooling, dropout and log-softmax: forward, backward and the element rules (docs/scenario-format.md).

Max pooling pads with −∞ and keeps, per window, where its maximum came from (``argmax``, torch's
``return_indices``: the flat index into the input's spatial positions of that sample and channel).
A tie goes to the first maximum in the window's row-major order, and a NaN wins its window, as
torch's CPU kernel (``val > maxval || isnan(val)``, so the last NaN). Its backward sends each
window's gradient to that one input, adding where windows overlap, in the order of the windows.

Average pooling divides every window's sum by the kernel's size (count_include_pad = true).

Dropout draws its mask from the generator the program passes (``rng``), seeded from the
scenario's seed, the step and the layer: a replay of a step draws the same mask.
"""
from __future__ import annotations

import math

import numpy as np

from ..layers import expr as X
from ..layers.expr import K, Lit, Value, el
from .layers import Layer
from ..layers.terms import Factor, Rule, Term, ix


class Dropout(Layer):
    """Training mode: out = in ⊙ mask, mask = [u < 1 − p] / (1 − p) with u uniform in [0, 1) drawn
    from ``rng`` (p = 0: a mask of ones). As torch's dropout: keep with probability 1 − p, scale by
    1/(1 − p), and multiply (its backward multiplies by the same mask)."""
    type = "dropout"

    def forward(self, x, P, rng=None):
        if rng is None:
            raise ValueError("dropout draws its mask from the generator the program passes (rng)")
        p = self.opts["p"]
        keep = rng.random(x.shape) < 1.0 - p
        mask = keep.astype(x.dtype) / x.dtype.type(1.0 - p)
        return x * mask, {"mask": mask}, {}

    def backward(self, g, x, out, P, extras):
        return g * extras["mask"], {}, None

    def value_rule(self, name, idx, V):
        m = el(V, self.spec.t("mask"), idx)
        if name == self.spec.t("out"):
            return Value("the input times the mask", el(V, self.spec.inputs[0], idx) * m)
        if name == self.spec.t("mask"):
            p = K("p", self.opts["p"])
            if m.v() == 0:
                return Value("dropped: u ≥ 1 − p for the uniform u drawn here", Lit(0), given=[p])
            return Value("kept (u < 1 − p for the uniform u drawn here), and scaled by 1/(1 − p)", 1 / (1 - p))
        return None

    def grad_rule(self, wrt, idx, V):
        m_name = self.spec.t("mask")
        m = V(m_name)
        return Rule("element-wise: upstream × mask", [Term(
            (Factor(self._dout(idx, self._sym(self.spec.inputs[0], idx)), self._sym(m_name, idx),
                    float(m[tuple(idx)])),), (self._gname, tuple(idx)))])


POOL_LAYERS: dict[str, type[Layer]] = {c.type: c for c in (Dropout,)}
