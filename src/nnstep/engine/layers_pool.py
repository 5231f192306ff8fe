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

from ..model.catalog_pool import pool_geometry
from ..layers import expr as X
from ..layers.expr import K, Lit, Value, el
from .layers import Layer
from ..layers.terms import Factor, Rule, Term, ix


class _PoolNd(Layer):
    nd = 1
    fill = 0.0

    def geometry(self):
        return pool_geometry(self.opts, self.nd)

    def _windows(self, x, fill=None):
        """(N, C, *out_spatial, *kernel), a view of the padded input."""
        nd = self.nd
        k, s, p = self.geometry()
        if any(p):
            x = np.pad(x, [(0, 0), (0, 0)] + [(pi, pi) for pi in p],
                       constant_values=self.fill if fill is None else fill)
        w = np.lib.stride_tricks.sliding_window_view(x, k, axis=tuple(range(2, 2 + nd)))
        return w[(slice(None), slice(None)) + tuple(slice(None, None, si) for si in s)]

    def _covering(self, j, osp):
        """The (window, kernel offset) pairs whose window covers input position j: s·i + k − p = j."""
        k, s, p = self.geometry()
        out = []
        for kk in np.ndindex(*k):
            i = []
            for d in range(self.nd):
                q, rem = divmod(j[d] + p[d] - kk[d], s[d])
                if rem or not (0 <= q < osp[d]):
                    break
                i.append(q)
            else:
                out.append((tuple(i), kk))
        return sorted(out)


    def value_window(self, idx, V, fmt):
        """For explain: one output element from its window's numbers, as (lines, value, scale),
        ``fmt`` formatting a number; scale bounds the rounding (the window's largest magnitude)."""
        k, s, p = self.geometry()
        x_name = self.spec.inputs[0]
        x = V(x_name)
        n, c, i = idx[0], idx[1], tuple(idx[2:])
        cells = []
        for kk in np.ndindex(*k):
            j = tuple(s[d] * i[d] + kk[d] - p[d] for d in range(self.nd))
            if all(0 <= j[d] < x.shape[2 + d] for d in range(self.nd)):
                cells.append((f"{x_name}{ix((n, c) + j)}", float(x[(n, c) + j]), j))
            else:
                cells.append(("padding", self.fill, None))
        scale = max((abs(v) for _, v, j in cells if j is not None), default=0.0)
        lines, value = self._window_lines(idx, cells, V, fmt)
        return lines, value, scale


class _MaxPoolNd(_PoolNd):
    fill = -np.inf

    def forward(self, x, P):
        nd = self.nd
        k, s, p = self.geometry()
        win = self._windows(x)
        lead = win.shape[:2 + nd]
        flat = win.reshape(lead + (-1,))                  # (N, C, *osp, K), window in row-major order
        kidx = np.argmax(flat, axis=-1)                   # the first maximum on a tie
        nan = np.isnan(flat)
        if nan.any():                                     # torch: a NaN wins (the last one in the window)
            last = flat.shape[-1] - 1 - np.argmax(nan[..., ::-1], axis=-1)
            kidx = np.where(nan.any(axis=-1), last, kidx)
        if any(p):
            # a window whose values are all −∞ ties with its padding: torch then names the window's
            # first position inside the input (its maximum starts there), never the padding
            inside = self._windows(np.ones((1, 1) + x.shape[2:], dtype=bool), fill=False)
            inside = inside.reshape((1, 1) + lead[2:] + (-1,))
            first = np.argmax(inside, axis=-1)
            kidx = np.where(np.take_along_axis(inside, kidx[..., None], axis=-1)[..., 0], kidx, first)
        out = np.take_along_axis(flat, kidx[..., None], axis=-1)[..., 0]
        # where that maximum is in the (unpadded) input: j_d = s_d·i_d + k_d − p_d, flattened row-major
        offs = np.unravel_index(kidx, k)
        sp = x.shape[2:]
        arg = np.zeros(kidx.shape, dtype=np.int64)
        for d in range(nd):
            i_d = np.arange(lead[2 + d]).reshape((1, 1) + tuple(-1 if e == d else 1 for e in range(nd)))
            arg = arg * sp[d] + (s[d] * i_d + offs[d] - p[d])
        return np.ascontiguousarray(out), {"argmax": arg}, {}

    def value_rule(self, name, idx, V):
        """argmax: the flat position, in the sample's and channel's input, of its window's maximum."""
        if name != self.spec.t("argmax"):
            return None
        a = int(V(self.spec.t("argmax"))[tuple(idx)])
        sp = np.shape(V(self.spec.inputs[0]))[2:]
        at = tuple(int(v) for v in np.unravel_index(a, sp))
        x = self.spec.inputs[0]
        e = Lit(at[0], str(at[0])) if len(at) == 1 else Lit(at[0], str(at[0])) * Lit(sp[1], str(sp[1])) + Lit(at[1], str(at[1]))
        win = X.Def("max", X.Max([el(V, x, (idx[0], idx[1]) + j) for j in self._window_positions(idx, sp)]))
        return Value(f"where in {x}[{idx[0]}, {idx[1]}] its window's maximum is" + (
            ", row · width + column" if len(at) == 2 else "") + f": {x}{ix((idx[0], idx[1]) + at)}, the first of "
            f"the maxima (as torch)", e, [win])

    def _window_positions(self, idx, sp):
        k, s, p = self.geometry()
        i = tuple(idx[2:])
        out = []
        for kk in np.ndindex(*k):
            j = tuple(s[d] * i[d] + kk[d] - p[d] for d in range(self.nd))
            if all(0 <= j[d] < sp[d] for d in range(self.nd)):
                out.append(j)
        return out

    def _window_lines(self, idx, cells, V, fmt):
        a = int(V(self.spec.t("argmax"))[tuple(idx)])
        x = V(self.spec.inputs[0])
        at = np.unravel_index(a, x.shape[2:])
        val = float(x[(idx[0], idx[1]) + tuple(int(v) for v in at)])
        tie = sum(1 for _, v, j in cells if j is not None and v == val) > 1
        out = f"{self.spec.t('out')}{ix(idx)}"
        return ([f"{out} = max over its window of " + ", ".join(f"{nm} = {fmt(v)}" if j is not None
                                                               else "padding −∞" for nm, v, j in cells),
                 f"  = {fmt(val)}, at {self.spec.inputs[0]}{ix((idx[0], idx[1]) + tuple(int(v) for v in at))}"
                 f" ({self.spec.t('argmax')}{ix(idx)} = {a}" + (": the first of the tied maxima, as torch" if tie else "")
                 + ")"], val)

    def backward(self, g, x, out, P, extras):
        N, C = x.shape[:2]
        S = math.prod(x.shape[2:])
        arg = extras["argmax"]
        # one running sum per input element, in the order of the windows (as torch's CPU kernel)
        at = (np.arange(N * C).reshape(N, C, *(1,) * self.nd) * S + arg).ravel()
        gin = np.bincount(at, weights=g.ravel(), minlength=N * C * S).astype(g.dtype, copy=False)
        return gin.reshape(x.shape), {}, None

    def grad_rule(self, wrt, idx, V):
        x_name, a_name = self.spec.inputs[0], self.spec.t("argmax")
        x, arg = V(x_name), V(a_name)
        n, c, j = idx[0], idx[1], tuple(idx[2:])
        me = int(np.ravel_multi_index(j, x.shape[2:]))
        terms = []
        for i, _kk in self._covering(j, arg.shape[2:]):          # each window covers j at one offset
            at = (n, c) + i
            won = int(arg[at]) == me
            terms.append(Term((Factor(self._dout(at, self._sym(x_name, idx)), f"[{a_name}{ix(at)} = {me}]",
                                      1.0 if won else 0.0),), (self._gname, at)))
        return Rule("Σ over the windows that cover this input: 1 where it won the window, else 0", terms)


class _AvgPoolNd(_PoolNd):
    def forward(self, x, P):
        nd = self.nd
        K = math.prod(self.geometry()[0])
        win = self._windows(x)
        return np.ascontiguousarray(win.sum(axis=tuple(range(2 + nd, 2 + 2 * nd))) / K), {}, {}

    def _window_lines(self, idx, cells, V, fmt):
        K = len(cells)
        total = math.fsum(v for _, v, _j in cells)
        out = f"{self.spec.t('out')}{ix(idx)}"
        return ([f"{out} = (1/{K}) · (" + " + ".join(nm if j is not None else "0 (padding)" for nm, _v, j in cells) + ")",
                 "  = (1/%d) · (%s)" % (K, " + ".join(fmt(v) for _, v, _j in cells)),
                 f"  = {fmt(total)} / {K} = {fmt(total / K)}"], total / K)

    def backward(self, g, x, out, P, extras):
        nd = self.nd
        k, s, p = self.geometry()
        K = math.prod(k)
        share = g / K
        padded = tuple(x.shape[2 + d] + 2 * p[d] for d in range(nd))
        gx = np.zeros(x.shape[:2] + padded, dtype=g.dtype)
        osp = g.shape[2:]
        for kk in np.ndindex(*k):
            sl = (slice(None), slice(None)) + tuple(
                slice(kk[d], kk[d] + s[d] * (osp[d] - 1) + 1, s[d]) for d in range(nd))
            gx[sl] = gx[sl] + share
        if any(p):
            gx = gx[(slice(None), slice(None)) + tuple(slice(p[d], p[d] + x.shape[2 + d]) for d in range(nd))]
        return np.ascontiguousarray(gx), {}, None

    def grad_rule(self, wrt, idx, V):
        x_name = self.spec.inputs[0]
        g = V(self._gname)
        K = math.prod(self.geometry()[0])
        n, c, j = idx[0], idx[1], tuple(idx[2:])
        terms = [Term((Factor(self._dout((n, c) + i, self._sym(x_name, idx)), f"1/{K}", 1.0 / K),),
                      (self._gname, (n, c) + i)) for i, _kk in self._covering(j, g.shape[2:])]
        return Rule(f"Σ over the windows that cover this input, each sending 1/{K} of its gradient", terms)


class MaxPool1d(_MaxPoolNd):
    type = "maxpool1d"
    nd = 1


class MaxPool2d(_MaxPoolNd):
    type = "maxpool2d"
    nd = 2


class AvgPool1d(_AvgPoolNd):
    type = "avgpool1d"
    nd = 1


class AvgPool2d(_AvgPoolNd):
    type = "avgpool2d"
    nd = 2


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


POOL_LAYERS: dict[str, type[Layer]] = {c.type: c for c in (
    MaxPool1d, MaxPool2d, AvgPool1d, AvgPool2d, Dropout)}
