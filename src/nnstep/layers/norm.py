"""Normalizations: ``batchnorm`` (torch's nn.BatchNorm1d/2d in training mode) and ``layernorm``
(nn.LayerNorm). Both write the statistics they normalize with as extras, ``<layer>.mean`` and
``<layer>.var`` (biased), and take eps inside the square root; ``affine = false`` leaves out γ and β
together, as torch's affine=False.
"""
from __future__ import annotations

import math

import numpy as np

from nnstep.layers import (Const, Count, Def, F, Factor, Layer, Lit, Option, OptionError, Ref, Rule, ShapeError, Term,
                           Value, el, exact, expr as X, fmt_shape, ix)


class Norm(Layer):
    """The family's base (no type of its own): γ and β, the backward's formula."""
    params = ("weight", "bias")
    bias_params = ()                # no bias switch: `affine = false` leaves out γ and β together, as torch's
    symbols = {"weight": "γ", "bias": "β"}
    extras = ("mean", "var")
    init = {"weight": "ones", "bias": "zeros"}
    psum = "Σ"                      # the sum over what the parameters are shared across
    shared = ""                     # what the statistics' sums run over

    @classmethod
    def _count(cls, L, n) -> Count:
        """How many values one mean and variance are taken over."""
        raise NotImplementedError

    @classmethod
    def backward_formula(cls, L, n):
        t = "x̂ = ({x} − {mean}) / √({var} + {eps})"
        if L.has("weight"):
            t += ";  {Wg} = " + cls.psum + " {g} ⊙ x̂;  {bg} = " + cls.psum + " {g};  ĝ = {g} ⊙ {W}"
        else:
            t += ";  ĝ = {g}"
        t += ";  {gin} = (1/{c}) / √({var} + {eps}) · ({c}·ĝ − Σĝ − x̂·Σ(ĝ ⊙ x̂));  (Σ over " + cls.shared + ")"
        return F(t, x=n.x, mean=n.e("mean"), var=n.e("var"), eps=Const("ε", L.options["eps"]), g=n.g,
                 Wg=n.pg("weight"), bg=n.pg("bias"), W=n.p("weight"), gin=n.gin, c=cls._count(L, n))

def norm_value(L, name, idx, V, cells, at, aff, over) -> Value | None:
    """One element of a normalization's out, mean or var: ``cells`` are the input's elements
    normalized together, ``at`` their entry of .mean and .var, ``aff`` the parameters' index."""
    x, t = L.x, L.t
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
        if L.has("weight"):
            e = el(V, t("weight"), aff) * e + el(V, t("bias"), aff)
        return Value(f"normalized by the mean and variance of the {n} values {over}", e, [mu, s2])
    return None


class BatchNorm(Norm):
    """Training mode: normalize with the batch statistics (biased variance); running statistics
    updated with the unbiased variance. (N, C) and (N, C, L) as BatchNorm1d, (N, C, H, W) as
    BatchNorm2d."""
    type = "batchnorm"
    torch_modules = ("BatchNorm1d", "BatchNorm2d")
    onnx_ops = ("BatchNormalization",)
    options = {"eps": Option(1e-5, "posfloat"), "momentum": Option(0.1, "prob"), "affine": Option(True, "bool")}
    states = ("running_mean", "running_var")

    @classmethod
    def shapes(cls, opts, in_shapes):
        s = in_shapes[0]
        if len(s) not in (1, 2, 3):
            raise ShapeError(f"batchnorm expects (N, C), (N, C, L) or (N, C, H, W), got per-sample shape "
                             f"{fmt_shape(s)}")
        return s, ({"weight": (s[0],), "bias": (s[0],)} if opts["affine"] else {})

    shared = "n and positions, per channel"

    @classmethod
    def _count(cls, L, n):
        return Count("n", n.x.name, (0,) + tuple(range(2, 1 + len(L.in_shape))))

    @classmethod
    def forward_formula(cls, L, n):
        aff = "{W} ⊙ x̂ + {b}" if L.has("weight") else "x̂"
        over = "meanₙ" if len(L.in_shape) == 1 else "mean over n and positions"
        return F("{mean} = " + over + " {x};  {var} = " + over + " ({x} − {mean})²;  "
                 "x̂ = ({x} − {mean}) / √({var} + {eps});  {out} = " + aff + ";  "
                 "{rm} ← (1 − {m})·{rm} + {m}·{mean};  {rv} ← (1 − {m})·{rv} + {m}·{var}·{n}/({n} − 1)",
                 mean=n.e("mean"), var=n.e("var"), x=n.x, out=n.out, W=n.p("weight"), b=n.p("bias"),
                 eps=Const("ε", L.options["eps"]), m=Const("m", L.options["momentum"]),
                 rm=Ref(L.t("running_mean"), "state"), rv=Ref(L.t("running_var"), "state"), n=cls._count(L, n))

    @classmethod
    def check_size(cls, name, opts, in_shape, out_shape, batch, smallest, limits):
        """torch refuses training-mode batchnorm with one value per channel (its variance is 0 and
        the unbiased running variance divides by n − 1 = 0); so does nnstep, at load time."""
        per_channel = smallest * math.prod(in_shape[1:])
        if per_channel < 2:
            raise OptionError(None, f"{name} (batchnorm) would see 1 value per channel in a batch of {smallest} "
                                    f"(per-sample shape {fmt_shape(in_shape)}); training-mode batch statistics "
                                    f"need at least 2, as in torch (use a larger batch_size or more samples)")

    @classmethod
    def torch_module(cls, L):
        o = L.options
        nd = 2 if len(L.in_shape) == 3 else 1
        aff = "" if o["affine"] else ", affine=False"
        return (f"nn.BatchNorm{nd}d({L.in_shape[0]}, eps={exact(o['eps'])}, momentum={exact(o['momentum'])}{aff})",
                "training mode: the batch's statistics (biased variance)")

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
        shape = np.shape(V(self.x))
        cells = [(m, c) + pos for m in range(shape[0]) for pos in np.ndindex(*shape[2:])]
        if name in (t("running_mean"), t("running_var")):         # torch: the unbiased variance here
            m, n = X.K("m", self.opts["momentum"]), len(cells)
            stat = "mean" if name == t("running_mean") else "var"
            batch = norm_value(self, t(stat), (c,), V, cells, (c,), (c,), "")
            d = Def("μ" if stat == "mean" else "σ²", batch.expr, el(V, t(stat), (c,)))
            new = d.ref if stat == "mean" else d.ref * Lit(n) / Lit(n - 1)
            return Value("the running average (momentum m) of the batch " + (
                "mean μ" if stat == "mean" else f"variance, unbiased: σ²·n/(n − 1), n = {n}"),
                (1 - m) * X.El(name, (c,), np.asarray(V(name))[c], "before") + m * new, batch.where + [d])
        return norm_value(self, name, idx, V, cells, (c,), (c,), f"of channel {c} (over the batch"
                           + (" and positions)" if len(shape) > 2 else ")"))

    def grad_rule(self, wrt, idx, V):
        x_name = self.x
        x, mean, var = V(x_name), V(self.t("mean")), V(self.t("var"))
        c = idx[0] if wrt in ("weight", "bias") else idx[1]
        invstd = 1.0 / np.sqrt(var[c] + self.opts["eps"])
        xc = x[:, c]                                           # (N, *positions) of channel c
        xhat = (xc - mean[c]) * invstd
        cells = [(m,) + pos for m in range(x.shape[0]) for pos in np.ndindex(*x.shape[2:])]
        full = lambda cell: (cell[0], c) + cell[1:]             # noqa: E731
        if wrt == "weight":
            return Rule("Σ over the samples and positions of channel " + str(c),
                        [Term((Factor(self.dout(full(a), self.sym(self.t("weight"), idx)), f"x̂{ix(full(a))}",
                                      float(xhat[a])),), (self.grad_out, full(a))) for a in cells])
        if wrt == "bias":
            return Rule("Σ over the samples and positions of channel " + str(c),
                        [Term((Factor(self.dout(full(a), self.sym(self.t("bias"), idx)), "1", 1.0),),
                              (self.grad_out, full(a))) for a in cells])
        n = len(cells)
        gamma = float(V(self.t("weight"))[c]) if self.has("weight") else 1.0
        b = (idx[0],) + tuple(idx[2:])
        terms = []
        for a in cells:                       # ∂out[a]/∂x[b] = γ/σ · (δ_ab − 1/n − x̂_a·x̂_b/n)
            J = gamma * invstd * ((1.0 if a == b else 0.0) - 1.0 / n - xhat[a] * xhat[b] / n)
            terms.append(Term((Factor(self.dout(full(a), self.sym(x_name, idx)),
                                      "γ/σ·(δ − 1/n − x̂·x̂′/n)", float(J)),), (self.grad_out, full(a))))
        return Rule(f"Σ over the {n} values of channel {c} that its batch statistics share", terms)


class LayerNorm(Norm):
    """Normalizes over the last ``dims`` dimensions (default all non-batch ones, as torch's
    normalized_shape = x.shape[-dims:]), biased variance, eps inside the square root."""
    type = "layernorm"
    torch_modules = ("LayerNorm",)
    onnx_ops = ("LayerNormalization",)
    options = {"eps": Option(1e-5, "posfloat"), "affine": Option(True, "bool"), "dims": Option(0, "posint")}   # 0: all

    @classmethod
    def ndims(cls, opts, in_shape) -> int:
        return opts.get("dims") or len(in_shape)

    @classmethod
    def shapes(cls, opts, in_shapes):
        s = in_shapes[0]
        d = cls.ndims(opts, s)
        if d > len(s) or d < 1:
            raise ShapeError(f"dims = {opts.get('dims')} but the per-sample shape {fmt_shape(s)} has {len(s)} "
                             f"dimension{'s' if len(s) != 1 else ''}")
        shp = tuple(s[len(s) - d:])
        return s, ({"weight": shp, "bias": shp} if opts["affine"] else {})

    psum = "Σₙ"
    shared = "the normalized values"

    @classmethod
    def _count(cls, L, n):
        d = cls.ndims(L.options, L.in_shape)
        return Count("D", n.x.name, tuple(range(1 + len(L.in_shape) - d, 1 + len(L.in_shape))))

    @classmethod
    def forward_formula(cls, L, n):
        aff = "{W} ⊙ x̂ + {b}" if L.has("weight") else "x̂"
        return F("{mean} = mean {x} over its last {D} values;  {var} = mean ({x} − {mean})²;  "
                 "x̂ = ({x} − {mean}) / √({var} + {eps});  {out} = " + aff,
                 mean=n.e("mean"), var=n.e("var"), x=n.x, out=n.out, W=n.p("weight"), b=n.p("bias"),
                 eps=Const("ε", L.options["eps"]), D=cls._count(L, n))

    @classmethod
    def torch_module(cls, L):
        o = L.options
        d = cls.ndims(o, L.in_shape)
        shp = list(L.in_shape[len(L.in_shape) - d:])
        aff = "" if o["affine"] else ", elementwise_affine=False"
        return f"nn.LayerNorm({shp}, eps={exact(o['eps'])}{aff})", ("over the last dim" if d == 1 else f"over the last {d} dims")

    def _axes(self, x):
        d = self.ndims(self.opts, self.in_shape)
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
        shape = np.shape(V(self.x))
        nd = self.ndims(self.opts, self.in_shape)
        lead = tuple(idx[:len(shape) - nd])
        cells = [lead + a for a in np.ndindex(*shape[len(shape) - nd:])]
        over = f"of {self.x}[{', '.join([str(v) for v in lead] + [':'] * nd)}]"
        return norm_value(self, name, idx, V, cells, lead, tuple(idx[len(shape) - nd:]), over)

    def grad_rule(self, wrt, idx, V):
        x_name = self.x
        x = V(x_name)
        nd = len(self._axes(x))
        lead_shape, norm_shape = x.shape[:x.ndim - nd], x.shape[x.ndim - nd:]
        mean, var = V(self.t("mean")), V(self.t("var"))
        if wrt in ("weight", "bias"):         # Σ over every leading index (samples, positions)
            terms = []
            for lead in np.ndindex(*lead_shape):
                at = lead + tuple(idx)
                if wrt == "weight":
                    xh = float((x[at] - mean[lead]) / np.sqrt(var[lead] + self.opts["eps"]))
                    f = Factor(self.dout(at, self.sym(self.t("weight"), idx)), f"x̂{ix(at)}", xh)
                else:
                    f = Factor(self.dout(at, self.sym(self.t("bias"), idx)), "1", 1.0)
                terms.append(Term((f,), (self.grad_out, at)))
            return Rule("Σ over the samples (and leading positions)", terms)
        lead, bpos = tuple(idx[:x.ndim - nd]), tuple(idx[x.ndim - nd:])
        invstd = 1.0 / np.sqrt(var[lead] + self.opts["eps"])
        xhat = (x[lead] - mean[lead]) * invstd
        D = xhat.size
        gamma = V(self.t("weight")) if self.has("weight") else None
        terms = []
        for a in np.ndindex(*norm_shape):     # ∂out[a]/∂x[b] = γ_a/σ · (δ_ab − 1/D − x̂_a·x̂_b/D)
            ga = float(gamma[a]) if gamma is not None else 1.0
            J = ga * invstd * ((1.0 if a == bpos else 0.0) - 1.0 / D - xhat[a] * xhat[bpos] / D)
            terms.append(Term((Factor(self.dout(lead + a, self.sym(x_name, idx)), "γ/σ·(δ − 1/D − x̂·x̂′/D)",
                                      float(J)),), (self.grad_out, lead + a)))
        return Rule(f"Σ over the {D} values normalized together", terms)
