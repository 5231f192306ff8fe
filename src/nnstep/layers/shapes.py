"""Shapes: ``flatten``, ``transpose``, ``reshape`` and ``scale``: layers that move numbers (or
multiply them by a constant) and have no parameters. A ``dim`` counts the batch as 0, as torch
does on the batched tensor."""
from __future__ import annotations

import math

import numpy as np

from nnstep.layers import (Const, F, Factor, K, Layer, Option, Rule, ShapeError, Term, Value, check_dim, el, exact,
                           fmt_shape, shown)


def _nshape(s) -> str:
    return fmt_shape(("N",) + tuple(s))


def _dim(d: int, nd_batched: int) -> int:
    return d % nd_batched


class Flatten(Layer):
    """nn.Flatten(): (N, ...) -> (N, the product of the rest), row-major as torch."""
    type = "flatten"
    torch_modules = ("Flatten",)
    torch_functions = ("torch.flatten", "Tensor.flatten")
    onnx_ops = ("Flatten",)

    @classmethod
    def shapes(cls, opts, in_shapes):
        return (math.prod(in_shapes[0]),), {}

    @classmethod
    def forward_formula(cls, L, n):
        return F("{out} = reshape({x}, [N, −1])", out=n.out, x=n.x)

    @classmethod
    def backward_formula(cls, L, n):
        return F("{gin} = reshape({g}, " + fmt_shape(("N",) + tuple(L.in_shape)) + ")", gin=n.gin, g=n.g)

    @classmethod
    def torch_module(cls, L):
        return "nn.Flatten()", "(N, ...) -> (N, -1)"

    def forward(self, x, P):
        return x.reshape(x.shape[0], -1), {}, {}

    def backward(self, g, x, out, P, extras):
        return g.reshape(x.shape), {}, None

    def value_rule(self, name, idx, V):
        x = self.x
        at = (idx[0],) + tuple(int(v) for v in np.unravel_index(idx[1], np.shape(V(x))[1:]))
        return Value("a reshape moves each number, unchanged", el(V, x, at))

    def grad_rule(self, wrt, idx, V):
        x = V(self.x)
        flat = int(np.ravel_multi_index(idx[1:], x.shape[1:]))
        return Rule("a reshape moves each number, unchanged", [Term((), (self.grad_out, (idx[0], flat)))])


class Transpose(Layer):
    """torch.transpose(x, a, b): swaps two dimensions of the batched tensor (not 0, the batch)."""
    type = "transpose"
    torch_functions = ("torch.transpose", "Tensor.transpose", "Tensor.permute (a swap)")
    onnx_ops = ("Transpose",)
    options = {"dims": Option(kind="dimpair")}

    @classmethod
    def shapes(cls, opts, in_shapes):
        s = list(in_shapes[0])
        a, b = opts["dims"]
        for d in (a, b):
            check_dim(d, tuple(s), "dims")
        i, j = _dim(a, len(s) + 1) - 1, _dim(b, len(s) + 1) - 1
        s[i], s[j] = s[j], s[i]
        return tuple(s), {}

    @classmethod
    def forward_formula(cls, L, n):
        a, b = L.options["dims"]
        return F("{out} = transpose({x}, %d, %d)" % (a, b), out=n.out, x=n.x)

    @classmethod
    def backward_formula(cls, L, n):
        a, b = L.options["dims"]
        return F("{gin} = transpose({g}, %d, %d)" % (a, b), gin=n.gin, g=n.g)

    @classmethod
    def torch_module(cls, L):
        return None, ""

    @classmethod
    def torch_forward(cls, L, ins, me, out):
        d0, d1 = L.options["dims"]
        return [f"{out} = torch.transpose({ins[0]}, {d0}, {d1})"]

    def _axes(self, nd):
        a, b = self.opts["dims"]
        return a % nd, b % nd

    def forward(self, x, P):
        return np.swapaxes(x, *self._axes(x.ndim)), {}, {}

    def backward(self, g, x, out, P, extras):
        return np.swapaxes(g, *self._axes(g.ndim)), {}, None

    def value_rule(self, name, idx, V):
        a, b = self._axes(len(idx))
        at = list(idx)
        at[a], at[b] = at[b], at[a]
        return Value(f"a transpose moves each number, unchanged (dims {a} and {b} swapped)", el(V, self.x, at))

    def grad_rule(self, wrt, idx, V):
        a, b = self._axes(len(idx))
        at = list(idx)
        at[a], at[b] = at[b], at[a]
        return Rule("a transpose moves each number, unchanged", [Term((), (self.grad_out, tuple(at)))])


class Reshape(Layer):
    """x.reshape(N, *shape): the same numbers, row-major, in another per-sample shape (one -1 at most)."""
    type = "reshape"
    torch_functions = ("torch.reshape", "Tensor.reshape", "Tensor.view")
    onnx_ops = ("Reshape",)
    options = {"shape": Option(kind="shape")}

    @classmethod
    def shapes(cls, opts, in_shapes):
        s = tuple(in_shapes[0])
        want = list(opts["shape"])
        size = math.prod(s)
        if want.count(-1) > 1:
            raise ShapeError(f"shape {want} has more than one -1")
        known = math.prod(d for d in want if d != -1)
        if -1 in want:
            if known == 0 or size % known:
                raise ShapeError(f"cannot reshape {_nshape(s)} ({size} values a sample) to {_nshape(want)}")
            want[want.index(-1)] = size // known
        if math.prod(want) != size:
            raise ShapeError(f"cannot reshape {_nshape(s)} ({size} values a sample) to {_nshape(want)} "
                             f"({shown(math.prod(want))} values)")
        return tuple(want), {}

    @classmethod
    def forward_formula(cls, L, n):
        return F("{out} = reshape({x}, " + _nshape(L.out_shape) + ")", out=n.out, x=n.x)

    @classmethod
    def backward_formula(cls, L, n):
        return F("{gin} = reshape({g}, " + _nshape(L.in_shape) + ")", gin=n.gin, g=n.g)

    @classmethod
    def torch_module(cls, L):
        return None, ""

    @classmethod
    def torch_forward(cls, L, ins, me, out):
        a = ins[0]
        return [f"{out} = {a}.reshape({a}.shape[0], {', '.join(str(s) for s in L.out_shape)})"]

    def forward(self, x, P):
        return x.reshape((x.shape[0],) + self.out_shape), {}, {}

    def backward(self, g, x, out, P, extras):
        return g.reshape(x.shape), {}, None

    def value_rule(self, name, idx, V):
        flat = int(np.ravel_multi_index(tuple(idx[1:]), self.out_shape))
        at = (idx[0],) + tuple(int(v) for v in np.unravel_index(flat, self.in_shape))
        return Value("a reshape moves each number, unchanged", el(V, self.x, at))

    def grad_rule(self, wrt, idx, V):
        flat = int(np.ravel_multi_index(tuple(idx[1:]), self.in_shape))
        at = (idx[0],) + tuple(int(v) for v in np.unravel_index(flat, self.out_shape))
        return Rule("a reshape moves each number, unchanged", [Term((), (self.grad_out, at))])


class Scale(Layer):
    """by · x: a constant factor (a residual branch's scaling, attention's 1/√d written out)."""
    type = "scale"
    torch_functions = ("* number", "/ number")
    options = {"by": Option(kind="float")}

    @classmethod
    def forward_formula(cls, L, n):
        return F("{out} = {c}·{x}", out=n.out, x=n.x, c=Const("c", L.options["by"]))

    @classmethod
    def backward_formula(cls, L, n):
        return F("{gin} = {c}·{g}", gin=n.gin, g=n.g, c=Const("c", L.options["by"]))

    @classmethod
    def torch_module(cls, L):
        return None, ""

    @classmethod
    def torch_forward(cls, L, ins, me, out):
        return [f"{out} = {ins[0]} * {exact(L.options['by'])}"]

    def forward(self, x, P):
        return x * self.opts["by"], {}, {}

    def backward(self, g, x, out, P, extras):
        return g * self.opts["by"], {}, None

    def value_rule(self, name, idx, V):
        return Value("the constant factor c times the input", K("c", self.opts["by"]) * el(V, self.x, idx))

    def grad_rule(self, wrt, idx, V):
        c = float(self.opts["by"])
        return Rule("the constant factor", [Term((Factor(self.dout(idx, self.sym(self.x, idx)),
                                                          "c", c),), (self.grad_out, tuple(idx)))])
