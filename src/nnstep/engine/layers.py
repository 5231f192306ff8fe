"""Layers: forward and backward, the math of every layer type of the catalogue.

Each layer writes its derivative once, next to its forward (as micrograd and early tinygrad do).
Everything is out of place: no array that has been handed out is ever modified, so the debugger can
record results by reference.

Shapes here are per sample (no batch dimension). Layouts are PyTorch's: Linear weight (out, in),
conv weight (out_channels, in_channels, *kernel), Conv1d input (N, C, L), Conv2d input (N, C, H, W).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..model import catalog
from ..layers import expr as X
from ..layers.expr import Def, Lit, Value, el, total
from ..layers.terms import Factor, Rule, Term, ix
from ..layers.dense import may_overflow

class Layer:
    """The math of one layer type. Its declaration (options, parameters, state, shape rule,
    formulas) is the catalogue's class of the same ``type`` (:mod:`nnstep.model.catalog`), linked
    when the subclass is defined."""
    type: str = ""
    decl: type[catalog.LayerType] = catalog.LayerType
    options: dict[str, tuple[Any, str]] = {}
    param_names: tuple[str, ...] = ()
    state_names: tuple[str, ...] = ()
    extra_names: tuple[str, ...] = ()
    elementwise = False

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if cls.type:
            d = cls.decl = catalog.LAYERS[cls.type]
            cls.options, cls.param_names, cls.state_names = d.options, d.params, d.states
            cls.extra_names, cls.elementwise = d.extras, d.elementwise

    def __init__(self, name: str, opts: dict, in_shape: tuple[int, ...], in_shapes=None):
        self.name = name
        self.opts = opts
        self.in_shape = tuple(in_shape)
        self.in_shapes = [tuple(s) for s in in_shapes] if in_shapes else [self.in_shape]
        out, pshapes = self.decl.infer(opts, self.in_shapes)
        self.out_shape, self.param_shapes = tuple(out), pshapes

    def initial_state(self, dtype) -> dict[str, np.ndarray]:
        return {}

    # --- math ------------------------------------------------------------------------------------
    def forward(self, x, P: dict):
        """Return (out, extras, new_state)."""
        raise NotImplementedError

    def backward(self, g, x, out, P: dict, extras: dict):
        """Return (grad_in, {param: grad}, local or None).

        Layers whose grad_in costs real work (linear, conv) also take ``need_in=False``, and then
        return None for grad_in: `nnstep run` does not compute dLoss/d(input) of the first layer
        when nothing it reports or checks reads it."""
        raise NotImplementedError

    def local(self, x, out):
        """d out / d in for element-wise layers."""
        raise NotImplementedError

    # --- one element at a time, for explain (the same derivative, written per element) ------------
    def grad_rule(self, wrt: str, idx: tuple, V) -> Rule:
        """The chain rule for one element of a gradient this layer's backward writes: ``wrt`` is
        ``"grad_in"`` (``"grad_in.<k>"`` for a merge) or a parameter's name; ``V(name)`` gives the
        tensors as the backward op read them. Terms multiply elements of ``<layer>.grad_out``."""
        raise NotImplementedError(f"no element rule for {self.type}")

    def _sym(self, what: str, idx) -> str:
        return f"{what}{ix(idx)}"

    @property
    def _gname(self) -> str:
        return self.spec.t("grad_out")

    def _dout(self, r, wrt_sym: str) -> str:
        """The symbol ∂out[r]/∂(something)."""
        return f"∂{self.spec.t('out')}{ix(r)}/∂{wrt_sym}"


class Flatten(Layer):
    type = "flatten"

    def forward(self, x, P):
        return x.reshape(x.shape[0], -1), {}, {}

    def backward(self, g, x, out, P, extras):
        return g.reshape(x.shape), {}, None

    def value_rule(self, name, idx, V):
        x = self.spec.inputs[0]
        at = (idx[0],) + tuple(int(v) for v in np.unravel_index(idx[1], np.shape(V(x))[1:]))
        return Value("a reshape moves each number, unchanged", el(V, x, at))

    def grad_rule(self, wrt, idx, V):
        x = V(self.spec.inputs[0])
        flat = int(np.ravel_multi_index(idx[1:], x.shape[1:]))
        return Rule("a reshape moves each number, unchanged", [Term((), (self._gname, (idx[0], flat)))])


def _norm_value(L, name, idx, V, cells, at, aff, over) -> Value | None:
    """One element of a normalization's out, mean or var: ``cells`` are the input's elements
    normalized together, ``at`` their entry of .mean and .var, ``aff`` the parameters' index."""
    x, t = L.spec.inputs[0], L.spec.t
    xv = np.asarray(V(x))[tuple(np.asarray(cells).T)].astype(np.float64)       # the cells' values, in order
    n = len(cells)
    mean = X.Many(lambda j: el(V, x, cells[j]), xv, more="value") / Lit(n)
    mu = Def("μ", mean, el(V, t("mean"), at))
    m = mu.ref.v()
    var = X.Many(lambda j: X.sq(el(V, x, cells[j]) - mu.ref), (xv - m) ** 2, (np.abs(xv) + abs(m)) ** 2,
                 more="value") / Lit(n)
    s2 = Def("σ²", var, el(V, t("var"), at))
    if name == t("mean"):
        return Value(f"the mean of the {n} values {over}", mean)
    if name == t("var"):
        return Value(f"the mean squared distance from μ of the {n} values {over} (biased)", var, [mu])
    if name == t("out"):
        e = (el(V, x, idx) - mu.ref) / X.sqrt(s2.ref + X.K("ε", L.opts["eps"]))
        if "weight" in L.spec.params:
            e = el(V, t("weight"), aff) * e + el(V, t("bias"), aff)
        return Value(f"normalized by the mean and variance of the {n} values {over}", e, [mu, s2])
    return None


class BatchNorm(Layer):
    """Training mode: normalize with the batch statistics (biased variance); running stats are
    updated with the unbiased variance. (N, C) and (N, C, L) as BatchNorm1d, (N, C, H, W) as 2d."""
    type = "batchnorm"

    def initial_state(self, dtype):
        C = self.in_shape[0]
        return {"running_mean": np.zeros(C, dtype=dtype), "running_var": np.ones(C, dtype=dtype)}

    def _axes(self, x):
        return (0,) + tuple(range(2, x.ndim))

    def _bshape(self, x):
        return (1, -1) + (1,) * (x.ndim - 2)

    def forward(self, x, P):
        ax = self._axes(x)
        n = x.size // x.shape[1]
        mean = x.mean(axis=ax)
        var = ((x - mean.reshape(self._bshape(x))) ** 2).mean(axis=ax)
        b = self._bshape(x)
        xhat = (x - mean.reshape(b)) / np.sqrt(var.reshape(b) + self.opts["eps"])
        out = xhat * P["weight"].reshape(b) + P["bias"].reshape(b) if "weight" in P else xhat
        m = self.opts["momentum"]
        unbiased = var * (n / (n - 1)) if n > 1 else np.full_like(var, np.nan)
        new_state = {"running_mean": (1 - m) * P["running_mean"] + m * mean,
                     "running_var": (1 - m) * P["running_var"] + m * unbiased}
        return out, {"mean": mean, "var": var}, new_state

    def backward(self, g, x, out, P, extras):
        ax = self._axes(x)
        b = self._bshape(x)
        n = x.size // x.shape[1]
        invstd = 1.0 / np.sqrt(extras["var"] + self.opts["eps"])
        xhat = (x - extras["mean"].reshape(b)) * invstd.reshape(b)
        grads = {}
        if "weight" in P:
            grads["weight"] = (g * xhat).sum(axis=ax)
            grads["bias"] = g.sum(axis=ax)
            gh = g * P["weight"].reshape(b)
        else:
            gh = g
        s1 = gh.sum(axis=ax).reshape(b)
        s2 = (gh * xhat).sum(axis=ax).reshape(b)
        gin = (invstd.reshape(b) / n) * (n * gh - s1 - xhat * s2)
        return gin, grads, None

    def value_rule(self, name, idx, V):
        t = self.spec.t
        c = idx[1] if name == t("out") else idx[0]
        shape = np.shape(V(self.spec.inputs[0]))
        cells = [(m, c) + pos for m in range(shape[0]) for pos in np.ndindex(*shape[2:])]
        if name in (t("running_mean"), t("running_var")):         # torch: the unbiased variance here
            m, n = X.K("m", self.opts["momentum"]), len(cells)
            stat = "mean" if name == t("running_mean") else "var"
            batch = _norm_value(self, t(stat), (c,), V, cells, (c,), (c,), "")
            d = Def("μ" if stat == "mean" else "σ²", batch.expr, el(V, t(stat), (c,)))
            new = d.ref if stat == "mean" else d.ref * Lit(n) / Lit(n - 1)
            return Value("the running average (momentum m) of the batch " + (
                "mean μ" if stat == "mean" else f"variance, unbiased: σ²·n/(n − 1), n = {n}"),
                (1 - m) * X.El(name, (c,), np.asarray(V(name))[c], "before") + m * new, batch.where + [d])
        return _norm_value(self, name, idx, V, cells, (c,), (c,), f"of channel {c} (over the batch"
                           + (" and positions)" if len(shape) > 2 else ")"))

    def grad_rule(self, wrt, idx, V):
        x_name = self.spec.inputs[0]
        x, mean, var = V(x_name), V(self.spec.t("mean")), V(self.spec.t("var"))
        c = idx[0] if wrt in ("weight", "bias") else idx[1]
        invstd = 1.0 / np.sqrt(var[c] + self.opts["eps"])
        xc = x[:, c]                                           # (N, *positions) of channel c
        xhat = (xc - mean[c]) * invstd
        cells = [(m,) + pos for m in range(x.shape[0]) for pos in np.ndindex(*x.shape[2:])]
        full = lambda cell: (cell[0], c) + cell[1:]             # noqa: E731
        if wrt == "weight":
            return Rule("Σ over the samples and positions of channel " + str(c),
                        [Term((Factor(self._dout(full(a), self._sym(self.spec.t("weight"), idx)), f"x̂{ix(full(a))}",
                                      float(xhat[a])),), (self._gname, full(a))) for a in cells])
        if wrt == "bias":
            return Rule("Σ over the samples and positions of channel " + str(c),
                        [Term((Factor(self._dout(full(a), self._sym(self.spec.t("bias"), idx)), "1", 1.0),),
                              (self._gname, full(a))) for a in cells])
        n = len(cells)
        gamma = float(V(self.spec.t("weight"))[c]) if "weight" in self.spec.params else 1.0
        b = (idx[0],) + tuple(idx[2:])
        terms = []
        for a in cells:                       # ∂out[a]/∂x[b] = γ/σ · (δ_ab − 1/n − x̂_a·x̂_b/n)
            J = gamma * invstd * ((1.0 if a == b else 0.0) - 1.0 / n - xhat[a] * xhat[b] / n)
            terms.append(Term((Factor(self._dout(full(a), self._sym(x_name, idx)),
                                      "γ/σ·(δ − 1/n − x̂·x̂′/n)", float(J)),), (self._gname, full(a))))
        return Rule(f"Σ over the {n} values of channel {c} that its batch statistics share", terms)


class LayerNorm(Layer):
    """Normalizes over the last ``dims`` dimensions (default all non-batch ones, as torch's
    normalized_shape = x.shape[-dims:]), biased variance, eps inside the square root."""
    type = "layernorm"

    def _axes(self, x):
        d = self.decl.ndims(self.opts, self.in_shape)
        return tuple(range(x.ndim - d, x.ndim))

    def forward(self, x, P):
        ax = self._axes(x)
        mean = x.mean(axis=ax, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=ax, keepdims=True)
        xhat = (x - mean) / np.sqrt(var + self.opts["eps"])
        out = xhat * P["weight"] + P["bias"] if "weight" in P else xhat
        lead = x.shape[:x.ndim - len(ax)]
        return out, {"mean": mean.reshape(lead), "var": var.reshape(lead)}, {}

    def backward(self, g, x, out, P, extras):
        ax = self._axes(x)
        b = x.shape[:x.ndim - len(ax)] + (1,) * len(ax)
        D = math.prod(x.shape[a] for a in ax)
        invstd = (1.0 / np.sqrt(extras["var"] + self.opts["eps"])).reshape(b)
        xhat = (x - extras["mean"].reshape(b)) * invstd
        grads = {}
        if "weight" in P:
            lead = tuple(range(x.ndim - len(ax)))
            grads["weight"] = (g * xhat).sum(axis=lead)
            grads["bias"] = g.sum(axis=lead)
            gh = g * P["weight"]
        else:
            gh = g
        s1 = gh.sum(axis=ax, keepdims=True)
        s2 = (gh * xhat).sum(axis=ax, keepdims=True)
        gin = (invstd / D) * (D * gh - s1 - xhat * s2)
        return gin, grads, None

    def value_rule(self, name, idx, V):
        shape = np.shape(V(self.spec.inputs[0]))
        nd = self.decl.ndims(self.opts, self.in_shape)
        lead = tuple(idx[:len(shape) - nd])
        cells = [lead + a for a in np.ndindex(*shape[len(shape) - nd:])]
        over = f"of {self.spec.inputs[0]}[{', '.join([str(v) for v in lead] + [':'] * nd)}]"
        return _norm_value(self, name, idx, V, cells, lead, tuple(idx[len(shape) - nd:]), over)

    def grad_rule(self, wrt, idx, V):
        x_name = self.spec.inputs[0]
        x = V(x_name)
        nd = len(self._axes(x))
        lead_shape, norm_shape = x.shape[:x.ndim - nd], x.shape[x.ndim - nd:]
        mean, var = V(self.spec.t("mean")), V(self.spec.t("var"))
        if wrt in ("weight", "bias"):         # Σ over every leading index (samples, positions)
            terms = []
            for lead in np.ndindex(*lead_shape):
                at = lead + tuple(idx)
                if wrt == "weight":
                    xh = float((x[at] - mean[lead]) / np.sqrt(var[lead] + self.opts["eps"]))
                    f = Factor(self._dout(at, self._sym(self.spec.t("weight"), idx)), f"x̂{ix(at)}", xh)
                else:
                    f = Factor(self._dout(at, self._sym(self.spec.t("bias"), idx)), "1", 1.0)
                terms.append(Term((f,), (self._gname, at)))
            return Rule("Σ over the samples (and leading positions)", terms)
        lead, bpos = tuple(idx[:x.ndim - nd]), tuple(idx[x.ndim - nd:])
        invstd = 1.0 / np.sqrt(var[lead] + self.opts["eps"])
        xhat = (x[lead] - mean[lead]) * invstd
        D = xhat.size
        gamma = V(self.spec.t("weight")) if "weight" in self.spec.params else None
        terms = []
        for a in np.ndindex(*norm_shape):     # ∂out[a]/∂x[b] = γ_a/σ · (δ_ab − 1/D − x̂_a·x̂_b/D)
            ga = float(gamma[a]) if gamma is not None else 1.0
            J = ga * invstd * ((1.0 if a == bpos else 0.0) - 1.0 / D - xhat[a] * xhat[bpos] / D)
            terms.append(Term((Factor(self._dout(lead + a, self._sym(x_name, idx)), "γ/σ·(δ − 1/D − x̂·x̂′/D)",
                                      float(J)),), (self._gname, lead + a)))
        return Rule(f"Σ over the {D} values normalized together", terms)


LAYERS: dict[str, type[Layer]] = {c.type: c for c in (Flatten, BatchNorm, LayerNorm)}

from .layers_graph import GRAPH_LAYERS  # noqa: E402  (they build on Layer above)

LAYERS.update(GRAPH_LAYERS)

from .layers_rnn import RNN_LAYERS  # noqa: E402

LAYERS.update(RNN_LAYERS)

from .layers_pool import POOL_LAYERS  # noqa: E402

LAYERS.update(POOL_LAYERS)
