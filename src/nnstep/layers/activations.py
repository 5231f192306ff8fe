"""Activations: the element-wise ``relu``, ``leaky_relu``, ``sigmoid``, ``tanh``, ``gelu`` and
``identity``, and ``softmax`` and ``log_softmax`` over a dimension (torch's namesakes).

An element-wise layer writes its local derivative d out / d in as a tensor of its own,
``<layer>.local``, and its backward is ``grad_in = grad_out ⊙ local``: the one place the chain rule
shows as a product of two tensors. Its element rules say how one element of ``out`` and of
``local`` come from the input's element there.
"""
from __future__ import annotations

import math

import numpy as np

from nnstep.layers import (Const, Def, F, Factor, Layer, Lit, Option, Rule, ShapeError, Term, Value, check_dim, el,
                           exact, expr as X, total)


def erf(x: np.ndarray) -> np.ndarray:
    """erf to double precision (libm's math.erf), element-wise, as float64; numpy has none built in.
    (map over a list is about twice as fast as np.frompyfunc's object array.)"""
    a = np.asarray(x, dtype=np.float64)
    return np.fromiter(map(math.erf, a.ravel().tolist()), dtype=np.float64, count=a.size).reshape(a.shape)


class Elementwise(Layer):
    """The family's base (no type of its own): forward ``f``, ``local``, and the templates of its
    formulas; out and local one element at a time (``out_value``, ``local_value``)."""
    elementwise = True
    fwd = "{out} = {x}"
    loc = "{local} = 1"

    @classmethod
    def consts(cls, L) -> dict:
        """The options a formula shows, as Consts."""
        return {}

    @classmethod
    def local_template(cls, L) -> str:
        return cls.loc

    @classmethod
    def forward_formula(cls, L, n):
        return F(cls.fwd, out=n.out, x=n.x, **cls.consts(L))

    @classmethod
    def backward_formula(cls, L, n):
        return F(cls.local_template(L) + ";  {gin} = {g} ⊙ {local}", local=n.local, gin=n.gin, g=n.g, x=n.x,
                 out=n.outr, **cls.consts(L))

    def forward(self, x, P):
        return self.f(x), {}, {}

    def backward(self, g, x, out, P, extras):
        loc = self.local(x, out)
        return g * loc, {}, loc

    def f(self, x):
        return x

    def value_rule(self, name, idx, V):
        """out (forward) or local (backward) at one element, from the input's element there."""
        x = el(V, self.x, idx)
        if name == self.t("out"):
            return self.out_value(x)
        if name == self.t("local"):
            return self.local_value(x, el(V, self.t("out"), idx))
        return None

    def grad_rule(self, wrt, idx, V):
        loc = V(self.t("local"))
        return Rule("element-wise: upstream × local", [Term(
            (Factor(self.dout(idx, self.sym(self.x, idx)), self.sym(self.t("local"), idx),
                    float(loc[tuple(idx)])),), (self.grad_out, tuple(idx)))])

    def out_value(self, x) -> Value:
        return Value("the same number", x)

    def local_value(self, x, out) -> Value:
        return Value("d out/d in of the identity: 1 at any input", Lit(1), given=[x])


def _case(x, then, other, how: str) -> Value:
    """``then`` where x > 0, else ``other``: the case that holds, with its condition."""
    if x.v() > 0:
        return Value(how, X.Pick(then, x, ">", Lit(0)))
    return Value(how, X.Pick(other, x, "≤", Lit(0)))


class ReLU(Elementwise):
    """nn.ReLU: max(x, 0), its slope 0 at exactly 0 as torch's."""
    type = "relu"
    torch_modules = ("ReLU",)
    torch_functions = ("F.relu", "torch.relu", "Tensor.relu")
    onnx_ops = ("Relu",)
    fwd = "{out} = max({x}, 0)"
    loc = "{local} = [{x} > 0]   (0 at 0, as torch)"

    @classmethod
    def torch_module(cls, L):
        return "nn.ReLU()", ""

    def f(self, x):
        return np.maximum(x, 0)             # propagates NaN, as torch.relu does

    def local(self, x, out):
        return (x > 0).astype(x.dtype)      # 0 at exactly 0, as torch

    def out_value(self, x):
        return Value("the larger of the input and 0", X.vmax(x, Lit(0)))

    def local_value(self, x, out):
        return _case(x, Lit(1), Lit(0), "ReLU's slope: 1 where the input is > 0, else 0 (0 at exactly 0, as torch)")


class LeakyReLU(Elementwise):
    """nn.LeakyReLU(negative_slope): x where x > 0, else a·x."""
    type = "leaky_relu"
    torch_modules = ("LeakyReLU",)
    torch_functions = ("F.leaky_relu",)
    onnx_ops = ("LeakyRelu",)
    options = {"negative_slope": Option(0.01, "float", "the slope below 0")}
    fwd = "{out} = {x} where {x} > 0, else {a}·{x}"
    loc = "{local} = 1 where {x} > 0, else {a}"

    @classmethod
    def consts(cls, L):
        return {"a": Const("a", L.options["negative_slope"])}

    @classmethod
    def torch_module(cls, L):
        return f"nn.LeakyReLU(negative_slope={exact(L.options['negative_slope'])})", ""

    def f(self, x):
        return np.where(x > 0, x, x * self.opts["negative_slope"])

    def local(self, x, out):
        return np.where(x > 0, 1.0, self.opts["negative_slope"]).astype(x.dtype)

    def out_value(self, x):
        return _case(x, x, X.K("a", self.opts["negative_slope"]) * x, "leaky ReLU: x where x > 0, else a·x")

    def local_value(self, x, out):
        return _case(x, Lit(1), X.K("a", self.opts["negative_slope"]), "leaky ReLU's slope: 1 where x > 0, else a")


class Sigmoid(Elementwise):
    """nn.Sigmoid: σ(x) = 1 / (1 + e^(−x)); its local derivative from its output, σ·(1 − σ)."""
    type = "sigmoid"
    torch_modules = ("Sigmoid",)
    torch_functions = ("F.sigmoid", "torch.sigmoid", "Tensor.sigmoid")
    onnx_ops = ("Sigmoid",)
    fwd = "{out} = σ({x}) = 1 / (1 + e^(−{x}))"
    loc = "{local} = {out} ⊙ (1 − {out})"

    @classmethod
    def torch_module(cls, L):
        return "nn.Sigmoid()", ""

    def f(self, x):
        return 1.0 / (1.0 + np.exp(-x))

    def local(self, x, out):
        return (1.0 - out) * out

    def out_value(self, x):
        return Value("the logistic sigmoid σ", 1 / (1 + X.exp(-x)))

    def local_value(self, x, out):
        return Value("σ′ = σ·(1 − σ), from the output", out * (1 - out))


class Tanh(Elementwise):
    """nn.Tanh; its local derivative from its output, 1 − tanh²."""
    type = "tanh"
    torch_modules = ("Tanh",)
    torch_functions = ("F.tanh", "torch.tanh", "Tensor.tanh")
    onnx_ops = ("Tanh",)
    fwd = "{out} = tanh({x})"
    loc = "{local} = 1 − {out}²"

    @classmethod
    def torch_module(cls, L):
        return "nn.Tanh()", ""

    def f(self, x):
        return np.tanh(x)

    def local(self, x, out):
        return 1.0 - out * out

    def out_value(self, x):
        return Value("tanh", X.tanh(x))

    def local_value(self, x, out):
        return Value("tanh′ = 1 − tanh², from the output", 1 - X.sq(out))


class GELU(Elementwise):
    """nn.GELU(approximate): x·Φ(x), exact (erf) or its tanh approximation, computed as torch's CPU kernel."""
    type = "gelu"
    torch_modules = ("GELU",)
    torch_functions = ("F.gelu",)
    onnx_ops = ("Gelu",)
    options = {"approximate": Option("none", "choice:none|tanh", '"none": the exact erf form; "tanh": its approximation')}
    # torch's constants (aten/src/ATen/native/cpu/Activation.cpp), from the C macros, so the
    # values agree with torch to the last bit where libm agrees: 1/√2 rounded correctly
    # (1.0 / math.sqrt(2.0) is one ulp below it), √(2/π) and 1/√(2π).
    SQRT1_2 = 0.70710678118654752440                          # M_SQRT1_2
    K = 1.41421356237309504880 * 1.12837916709551257390 * 0.5  # M_SQRT2 · M_2_SQRTPI · ½ = √(2/π)
    PDF = 1.12837916709551257390 * 0.70710678118654752440 * 0.5  # M_2_SQRTPI · M_SQRT1_2 · ½ = 1/√(2π)
    KAPPA = 0.044715

    @classmethod
    def forward_formula(cls, L, n):
        if L.options["approximate"] == "tanh":
            return F("{out} = ½·{x}·(1 + tanh(√(2/π)·({x} + 0.044715·{x}³)))", out=n.out, x=n.x)
        return F("{out} = {x}·Φ({x}) = ½·{x}·(1 + erf({x}/√2))", out=n.out, x=n.x)

    @classmethod
    def local_template(cls, L):
        if L.options["approximate"] == "tanh":
            return ("t = tanh(√(2/π)·({x} + 0.044715·{x}³));  "
                    "{local} = ½·(1 + t) + ½·{x}·(1 − t²)·√(2/π)·(1 + 3·0.044715·{x}²)")
        return "{local} = Φ({x}) + {x}·φ({x})   (Φ, φ: the normal CDF and density)"

    @classmethod
    def torch_module(cls, L):
        return f'nn.GELU(approximate="{L.options["approximate"]}")', ""

    def f(self, x):
        # the same operations in the same order as torch's CPU kernel
        if self.opts["approximate"] == "tanh":
            inner = self.K * (x + self.KAPPA * (x * x * x))
            return x * 0.5 * (1.0 + np.tanh(inner))
        e = erf(x * self.SQRT1_2)
        self._memo = (x, e)
        return (x * 0.5 * (1.0 + e)).astype(x.dtype)

    def _erf_again(self, x):
        """erf(x/√2) for the backward: the forward's, if it was computed for this very array (values
        are never modified in place), else anew. Taken once, then dropped."""
        memo, self._memo = getattr(self, "_memo", None), None
        if memo is not None and memo[0] is x:
            return memo[1]
        return erf(x * self.SQRT1_2)

    def local(self, x, out):
        if self.opts["approximate"] == "tanh":
            x_sq = x * x
            t = np.tanh(self.K * (x + self.KAPPA * (x_sq * x)))
            left = 0.5 * x
            return 0.5 * (1.0 + t) + left * (1.0 - t * t) * (self.K * (1.0 + 3 * self.KAPPA * x_sq))
        cdf = 0.5 * (1.0 + self._erf_again(x))
        pdf = self.PDF * np.exp(x * x * -0.5)
        return (cdf + x * pdf).astype(x.dtype)

    def _inner(self, x):
        return Def("u", Lit(self.K, "√(2/π)") * (x + Lit(self.KAPPA) * X.Pow(x, 3)))

    def out_value(self, x):
        half = Lit(0.5, "½")
        if self.opts["approximate"] == "tanh":
            u = self._inner(x)
            return Value("GELU, tanh approximation", half * x * (1 + X.tanh(u.ref)), [u])
        return Value("GELU: x·Φ(x), Φ the normal CDF", half * x * (1 + X.erf(x * Lit(self.SQRT1_2, "(1/√2)"))))

    def local_value(self, x, out):
        half = Lit(0.5, "½")
        if self.opts["approximate"] == "tanh":
            u = self._inner(x)
            t = Def("t", X.tanh(u.ref))
            return Value("the tanh approximation's derivative", half * (1 + t.ref) + half * x * (1 - X.sq(t.ref))
                         * Lit(self.K, "√(2/π)") * (1 + Lit(3 * self.KAPPA) * X.sq(x)), [u, t])
        return Value("Φ(x) + x·φ(x), Φ and φ the normal CDF and density",
                     half * (1 + X.erf(x * Lit(self.SQRT1_2, "(1/√2)")))
                     + x * Lit(self.PDF, "(1/√(2π))") * X.exp(-(X.sq(x) / 2)))


class Identity(Elementwise):
    """nn.Identity: the same numbers (a place to put a breakpoint or an expectation)."""
    type = "identity"
    torch_modules = ("Identity",)
    onnx_ops = ("Identity",)

    @classmethod
    def torch_module(cls, L):
        return "nn.Identity()", ""

    def local(self, x, out):
        return np.ones_like(x)

    def out_value(self, x):
        return Value("the identity: the same number", x)


def _dim_text(L) -> str:
    d = L.options.get("dim", -1)
    return "-1, the last" if d == -1 else str(d)


def softmax_row(V, x: str, idx, dim: int, keep=None):
    """e^(x[idx] − m) / Σ over idx's row along ``dim`` (only the positions ``keep`` allows, if
    given), as (the expression, Def m, Def Σ, the row's length)."""
    idx = tuple(int(v) for v in idx)
    d = dim % len(idx)
    row = [idx[:d] + (j,) + idx[d + 1:] for j in range(np.shape(V(x))[d]) if keep is None or keep(j)]
    xs = [el(V, x, a) for a in row]
    m = Def("m", X.Max(xs))
    z = Def("Σ", total([X.exp(v - m.ref) for v in xs]))
    return X.exp(el(V, x, idx) - m.ref) / z.ref, m, z, len(row)


class Softmax(Layer):
    """Over ``dim`` of the batched tensor (default -1), max-shifted: nn.Softmax(dim)."""
    type = "softmax"
    torch_modules = ("Softmax",)
    torch_functions = ("F.softmax", "torch.softmax", "Tensor.softmax")
    onnx_ops = ("Softmax",)
    options = {"dim": Option(-1, "int", "the dimension of the batched tensor it runs over (not 0, the batch)")}

    @classmethod
    def shapes(cls, opts, in_shapes):
        s = in_shapes[0]
        if len(s) < 1:
            raise ShapeError(f"{cls.type} needs a feature dimension")
        check_dim(opts["dim"], s)
        return s, {}

    @classmethod
    def forward_formula(cls, L, n):
        return F("{out} = e^({x} − max) / Σ e^({x} − max)   (over dim " + _dim_text(L) + ", max-shifted)",
                 out=n.out, x=n.x)

    @classmethod
    def backward_formula(cls, L, n):
        return F("{gin} = {out} ⊙ ({g} − Σ({g} ⊙ {out}))   (Σ over dim " + _dim_text(L) + ")",
                 gin=n.gin, out=n.outr, g=n.g)

    @classmethod
    def torch_module(cls, L):
        return f"nn.Softmax(dim={L.options.get('dim', -1)})", ""

    def forward(self, x, P):
        d = self.opts.get("dim", -1)
        e = np.exp(x - x.max(axis=d, keepdims=True))
        return e / e.sum(axis=d, keepdims=True), {}, {}

    def backward(self, g, x, out, P, extras):
        return out * (g - (g * out).sum(axis=self.opts.get("dim", -1), keepdims=True)), {}, None

    def value_rule(self, name, idx, V):
        """One element from its row: e^(x_i − m) / Σ_j e^(x_j − m), m the row's max."""
        if name != self.t("out"):
            return None
        e, m, z, n = softmax_row(V, self.x, idx, self.opts.get("dim", -1))
        return Value(f"the softmax over the {n} values of its row, shifted by their max m", e, [m, z])

    def grad_rule(self, wrt, idx, V):
        out = V(self.t("out"))
        d = self.opts.get("dim", -1) % out.ndim
        i = idx[d]
        terms = []
        for j in range(out.shape[d]):         # ∂out_j/∂x_i = out_j·(δ_ij − out_i)
            a = tuple(idx[:d]) + (j,) + tuple(idx[d + 1:])
            J = float(out[a]) * ((1.0 if i == j else 0.0) - float(out[tuple(idx)]))
            o = self.t("out")                 # out_j·(δ_ij − out_i), with the elements named
            src = f"{self.sym(o, a)}·({1 if i == j else 0} − {self.sym(o, idx)})"
            terms.append(Term((Factor(self.dout(a, self.sym(self.x, idx)), src, J),), (self.grad_out, a)))
        return Rule(f"Σ over the {out.shape[d]} outputs of the softmax", terms)


class LogSoftmax(Softmax):
    """Over ``dim`` of the batched tensor (default -1), max-shifted as torch:
    out = (x − max) − log Σ e^(x − max); its backward is g − e^out · Σ g. nn.LogSoftmax(dim)."""
    type = "log_softmax"
    torch_modules = ("LogSoftmax",)
    torch_functions = ("F.log_softmax", "torch.log_softmax", "Tensor.log_softmax")
    onnx_ops = ("LogSoftmax",)

    @classmethod
    def forward_formula(cls, L, n):
        return F("{out} = {x} − max − log Σ e^({x} − max)   (over dim " + _dim_text(L) + ", max-shifted)",
                 out=n.out, x=n.x)

    @classmethod
    def backward_formula(cls, L, n):
        return F("{gin} = {g} − e^{out} ⊙ Σ {g}   (e^out is the softmax; Σ over dim " + _dim_text(L) + ")",
                 gin=n.gin, out=n.outr, g=n.g)

    @classmethod
    def torch_module(cls, L):
        return f"nn.LogSoftmax(dim={L.options.get('dim', -1)})", ""

    def forward(self, x, P):
        d = self.opts.get("dim", -1)
        s = x - x.max(axis=d, keepdims=True)
        return s - np.log(np.exp(s).sum(axis=d, keepdims=True)), {}, {}

    def backward(self, g, x, out, P, extras):
        return g - np.exp(out) * g.sum(axis=self.opts.get("dim", -1), keepdims=True), {}, None

    def value_rule(self, name, idx, V):
        """x_i − m − log Σ_j e^(x_j − m), m the row's max."""
        if name != self.t("out"):
            return None
        _, m, z, n = softmax_row(V, self.x, idx, self.opts.get("dim", -1))
        return Value(f"the log-softmax over the {n} values of its row, shifted by their max m",
                     el(V, self.x, idx) - m.ref - X.log(z.ref), [m, z])

    def grad_rule(self, wrt, idx, V):
        out = V(self.t("out"))
        d = self.opts.get("dim", -1) % out.ndim
        i = idx[d]
        sm = math.exp(float(out[tuple(idx)]))
        terms = []
        for j in range(out.shape[d]):         # ∂out_j/∂x_i = δ_ij − softmax_i = δ_ij − e^(out_i)
            a = tuple(idx[:d]) + (j,) + tuple(idx[d + 1:])
            terms.append(Term((Factor(self.dout(a, self.sym(self.x, idx)), "(δ_ij − e^out_i)",
                                      (1.0 if i == j else 0.0) - sm),), (self.grad_out, a)))
        return Rule(f"Σ over the {out.shape[d]} outputs of the log_softmax", terms)
