"""Dense layers: ``linear`` (torch's nn.Linear) and ``embedding`` (nn.Embedding, a table's rows).

Each is one class: options, shape rule, parameters and torch's init, formulas, forward and
backward, the element rules explain checks, and the torch equivalent (docs/layers.md).
"""
from __future__ import annotations

import math

import numpy as np

from nnstep.layers import F, Factor, Layer, Option, OptionError, Ref, Rule, ShapeError, Term, Value, el, fmt_shape, total


def may_overflow(g, W, terms: int) -> bool:
    """Whether a sum of ``terms`` products of elements of g and W could leave the dtype's range.
    A grad_in nothing reads (``need_in=False``) is still computed then, so that an Inf or NaN it
    would be born with is still found where it is born (the stop detector checks what is written)."""
    if not g.size or not W.size:
        return False
    big = float(np.finfo(g.dtype).max) if g.dtype.kind == "f" else math.inf
    with np.errstate(all="ignore"):            # max and min: no |·| copy on the hot path
        a = max(float(g.max()), -float(g.min()))
        if a * terms < 0.25:                   # |W| ≤ big (finite), so the sum stays under big/4:
            return False                       # no need to look at W (the usual case)
        b = max(float(W.max()), -float(W.min()))
    return not (a * b * terms < big / 4)


class Linear(Layer):
    """nn.Linear(in, out): out = in @ Wᵀ + b over the last dimension; leading dimensions carry on,
    as torch's."""
    type = "linear"
    torch_modules = ("Linear",)
    onnx_ops = ("Gemm", "MatMul+Add")
    options = {"out": Option(kind="posint", doc="output features")}
    params = ("weight", "bias")
    symbols = {"weight": "W", "bias": "b"}
    in_dim = -1
    layouts = {"weight": "(out, in)"}
    in_param = ("weight", "in")

    @classmethod
    def shapes(cls, opts, in_shapes):
        s = in_shapes[0]
        if len(s) < 1:
            raise ShapeError(f"linear needs an input with a feature dimension, got per-sample shape {fmt_shape(s)}")
        return s[:-1] + (opts["out"],), {"weight": (opts["out"], s[-1]), "bias": (opts["out"],)}

    @classmethod
    def fans(cls, opts, in_shape):
        return in_shape[-1], opts["out"]

    @classmethod
    def forward_formula(cls, L, n):
        b = " + {b}" if L.has("bias") else ""
        return F("{out} = {x} @ {W}ᵀ" + b, out=n.out, x=n.x, W=n.p("weight"), b=n.p("bias"))

    @classmethod
    def backward_formula(cls, L, n):
        rows = "the batch" if len(L.in_shape) == 1 else "the batch and the leading dims"
        t = "{Wg} = {g}ᵀ @ {x}"
        if L.has("bias"):
            t += ";  {bg} = Σₙ {g}"
        t += ";  {gin} = {g} @ {W};  (sums run over the rows of " + rows + ")"
        return F(t, Wg=n.pg("weight"), bg=n.pg("bias"), g=n.g, x=n.x, gin=n.gin, W=n.p("weight"))

    @classmethod
    def torch_module(cls, L):
        bias = "" if L.has("bias") else ", bias=False"
        return f"nn.Linear({L.in_shape[-1]}, {L.options['out']}{bias})", "out = in @ W.T + b"

    def forward(self, x, P):
        out = x @ P["weight"].T
        if "bias" in P:
            out = out + P["bias"]
        return out, {}, {}

    def backward(self, g, x, out, P, extras, need_in=True):
        W = P["weight"]
        if g.ndim == 2:
            grads = {"weight": g.T @ x}
        else:
            grads = {"weight": g.reshape(-1, g.shape[-1]).T @ x.reshape(-1, x.shape[-1])}
        if "bias" in P:
            grads["bias"] = np.add.reduce(g.reshape(-1, g.shape[-1]), axis=0)
        if not need_in and may_overflow(g, W, W.shape[0]):
            need_in = True
        return (g @ W if need_in else None), grads, None

    def value_rule(self, name, idx, V):
        """out[r, o] = Σ_j x[r, j]·W[o, j] + b[o], one element."""
        if name != self.t("out"):
            return None
        x, w = self.x, self.t("weight")
        r, o = tuple(idx[:-1]), idx[-1]
        n = V(w).shape[1]
        e = total([el(V, x, r + (j,)) * el(V, w, (o, j)) for j in range(n)])
        if self.has("bias"):
            e = e + el(V, self.t("bias"), (o,))
        return Value(f"Σ over the {n} inputs", e)

    def grad_rule(self, wrt, idx, V):
        x = V(self.x)
        rows = list(np.ndindex(*x.shape[:-1]))
        batch = f"Σ over the {len(rows)} row{'s' if len(rows) != 1 else ''} of the batch"
        if wrt == "weight":                  # out[r, o] = Σ_j x[r, j]·W[o, j] + b[o]
            o, j = idx
            return Rule(batch, [Term((Factor(self.dout(r + (o,), self.sym(self.t("weight"), idx)),
                                             self.sym(self.x, r + (j,)), float(x[r + (j,)])),), (self.grad_out, r + (o,)))
                                for r in rows])
        if wrt == "bias":
            o, = idx
            return Rule(batch, [Term((Factor(self.dout(r + (o,), self.sym(self.t("bias"), idx)), "1", 1.0),),
                                     (self.grad_out, r + (o,))) for r in rows])
        W = V(self.t("weight"))          # grad_in[r, j] = Σ_o g[r, o]·W[o, j]
        r, j = tuple(idx[:-1]), idx[-1]
        return Rule(f"Σₒ over the {W.shape[0]} outputs of {self.name}",
                    [Term((Factor(self.dout(r + (o,), self.sym(self.x, idx)),
                                  self.sym(self.t("weight"), (o, j)), float(W[o, j])),), (self.grad_out, r + (o,)))
                     for o in range(W.shape[0])])


class Embedding(Layer):
    """nn.Embedding(num, dim): token indices (N, ...) -> rows of the table (N, ..., dim)."""
    type = "embedding"
    torch_modules = ("Embedding",)
    onnx_ops = ("Gather",)
    options = {"num": Option(kind="posint", doc="rows of the table: tokens take values 0 to num − 1"),
               "dim": Option(kind="posint", doc="the width of a row")}
    params = ("weight",)
    symbols = {"weight": "W"}
    init = {"weight": "normal"}              # torch: normal_(0, 1)
    grads_input = False
    int_input = True

    @classmethod
    def shapes(cls, opts, in_shapes):
        return tuple(in_shapes[0]) + (opts["dim"],), {"weight": (opts["num"], opts["dim"])}

    @classmethod
    def fans(cls, opts, in_shape):
        return opts["num"], opts["dim"]

    @classmethod
    def check_tokens(cls, name: str, opts: dict, low: float, high: float) -> None:
        """The token indices the data holds (their least and greatest) against the table: OptionError."""
        num = opts["num"]
        if low < 0 or high >= num:
            v = low if low < 0 else high
            raise OptionError(None, f"token index {v:g} is outside [0, {num}): {name} has num = {num} rows")

    @classmethod
    def forward_formula(cls, L, n):
        return F("{out}[…, :] = {W}[r, :] with r = {x}[…]   (each token r picks row r of the table)", out=n.out,
                 x=Ref(n.x.name, "input", "[…]"), W=Ref(L.t("weight"), "param", "[r, :]"))

    @classmethod
    def backward_formula(cls, L, n):
        return F("{Wg}[r, :] = Σ over the tokens t with {x}[t] = r of {g}[t, :];  (token indices get no gradient)",
                 Wg=n.pg("weight"), x=n.x, g=n.g)

    @classmethod
    def torch_module(cls, L):
        return f"nn.Embedding({L.options['num']}, {L.options['dim']})", "token i -> row i of the weight"

    def forward(self, x, P):
        return P["weight"][x], {}, {}

    def backward(self, g, x, out, P, extras):
        W = P["weight"]
        gW = np.zeros_like(W)
        np.add.at(gW, x.reshape(-1), g.reshape(-1, W.shape[1]))
        return None, {"weight": gW}, None

    def value_rule(self, name, idx, V):
        tok = el(V, self.x, idx[:-1])
        r = int(tok.v())
        return Value(f"a copy: the token {self.sym(self.x, idx[:-1])} = {r} picks row {r} of the table",
                     el(V, self.t("weight"), (r, idx[-1])))

    def grad_rule(self, wrt, idx, V):
        r, c = idx
        x = V(self.x)
        terms = [Term((Factor(self.dout(p + (c,), self.sym(self.t("weight"), idx)), "1", 1.0),),
                      (self.grad_out, tuple(int(v) for v in p) + (c,))) for p in zip(*np.nonzero(x == r))]
        return Rule(f"Σ over the {len(terms)} token{'s' if len(terms) != 1 else ''} equal to {r}", terms)
