"""Merges: ``add``, ``mul``, ``concat`` and ``matmul``, the layers that read two or more tensors
(``inputs = [...]``): the joins of a graph network. ``forward`` gets a list of arrays and
``backward`` returns one gradient per input, ``<layer>.grad_in.<k>``. Shapes are per sample (no
batch dimension); a ``dim`` counts the batch as 0, as torch does on the batched tensor."""
from __future__ import annotations

import numpy as np

from nnstep.layers import (F, Factor, Layer, Option, Ref, Rule, ShapeError, Term, Value, check_dim, el, expr as X,
                           fmt_shape, total)


def _nshape(s) -> str:
    return fmt_shape(("N",) + tuple(s))


def _dim(d: int, nd_batched: int) -> int:
    return d % nd_batched


def _unbroadcast(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``g`` down to ``shape`` over the dimensions broadcasting added or stretched."""
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for d, n in enumerate(shape):
        if n == 1 and g.shape[d] != 1:
            g = g.sum(axis=d, keepdims=True)
    return g


class Merge(Layer):
    """The family's base (no type of its own): reads ``inputs = [...]``, two or more tensors."""
    merge = True
    arity = (2, None)

    @classmethod
    def _same(cls, in_shapes):
        for s in in_shapes[1:]:
            if tuple(s) != tuple(in_shapes[0]):
                raise ShapeError(f"{cls.type} needs inputs of one shape, got "
                                 + " and ".join(_nshape(x) for x in in_shapes))

    @classmethod
    def _sum_text(cls, n, op: str) -> tuple[str, dict]:
        parts = {f"x{k}": x for k, x in enumerate(n.xs)}
        return f" {op} ".join("{x%d}" % k for k in range(len(n.xs))), parts


class Add(Merge):
    """The element-wise sum of tensors of one shape (a residual connection)."""
    type = "add"
    torch_functions = ("+", "torch.add")
    onnx_ops = ("Add",)

    @classmethod
    def shapes(cls, opts, in_shapes):
        cls._same(in_shapes)
        return tuple(in_shapes[0]), {}

    @classmethod
    def forward_formula(cls, L, n):
        t, parts = cls._sum_text(n, "+")
        return F("{out} = " + t, out=n.out, **parts)

    @classmethod
    def backward_formula(cls, L, n):
        parts = {f"gin{k}": g for k, g in enumerate(n.gins)}
        return F(";  ".join("{gin%d} = {g}" % k for k in range(len(n.gins)))
                 + ";  (a sum passes the upstream gradient to each input unchanged)", g=n.g, **parts)

    @classmethod
    def torch_module(cls, L):
        return None, ""

    @classmethod
    def torch_forward(cls, L, ins, me, out):
        return [f"{out} = " + " + ".join(ins)]

    def forward(self, xs, P):
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out, {}, {}

    def backward(self, g, xs, out, P, extras):
        return [g for _ in xs], {}, None

    def value_rule(self, name, idx, V):
        return Value("element-wise sum", total([el(V, x, idx) for x in self.spec.inputs]))

    def grad_rule(self, wrt, idx, V):
        k = int(wrt.rsplit(".", 1)[1])
        return Rule("a sum passes the upstream gradient on unchanged", [Term(
            (Factor(self.dout(idx, self.sym(self.spec.inputs[k], idx)), "1", 1.0),), (self.grad_out, tuple(idx)))])


class Mul(Merge):
    """The element-wise product of tensors of one shape (a gate)."""
    type = "mul"
    torch_functions = ("*", "torch.mul")
    onnx_ops = ("Mul",)

    @classmethod
    def shapes(cls, opts, in_shapes):
        cls._same(in_shapes)
        return tuple(in_shapes[0]), {}

    @classmethod
    def forward_formula(cls, L, n):
        t, parts = cls._sum_text(n, "⊙")
        return F("{out} = " + t, out=n.out, **parts)

    @classmethod
    def backward_formula(cls, L, n):
        parts = {f"x{k}": x for k, x in enumerate(n.xs)}
        parts.update({f"gin{k}": g for k, g in enumerate(n.gins)})
        clauses = []
        for k in range(len(n.xs)):
            others = " ⊙ ".join("{x%d}" % j for j in range(len(n.xs)) if j != k)
            clauses.append("{gin%d} = {g} ⊙ %s" % (k, others))
        return F(";  ".join(clauses) + ";  (the product rule: each input's gradient is the upstream times "
                 "the other factors)", g=n.g, **parts)

    @classmethod
    def torch_module(cls, L):
        return None, ""

    @classmethod
    def torch_forward(cls, L, ins, me, out):
        return [f"{out} = " + " * ".join(ins)]

    def forward(self, xs, P):
        out = xs[0]
        for x in xs[1:]:
            out = out * x
        return out, {}, {}

    def value_rule(self, name, idx, V):
        return Value("element-wise product", X.Mul([el(V, x, idx) for x in self.spec.inputs]))

    def backward(self, g, xs, out, P, extras):
        grads = []
        for k in range(len(xs)):
            gk = g
            for j, x in enumerate(xs):
                if j != k:
                    gk = gk * x
            grads.append(gk)
        return grads, {}, None

    def grad_rule(self, wrt, idx, V):
        k = int(wrt.rsplit(".", 1)[1])
        idx = tuple(idx)
        factors = tuple(Factor("", self.sym(x, idx), float(V(x)[idx])) for j, x in enumerate(self.spec.inputs) if j != k)
        return Rule("the product rule: the upstream times the other factors", [Term(factors, (self.grad_out, idx))])


class Concat(Merge):
    """torch.cat along ``dim`` of the batched tensor (not 0, the batch)."""
    type = "concat"
    torch_functions = ("torch.cat",)
    onnx_ops = ("Concat",)
    options = {"dim": Option(-1, "int")}

    @classmethod
    def shapes(cls, opts, in_shapes):
        s0 = tuple(in_shapes[0])
        check_dim(opts["dim"], s0)
        d = _dim(opts["dim"], len(s0) + 1) - 1            # per-sample axis
        total = 0
        for s in in_shapes:
            if len(s) != len(s0) or any(a != b for j, (a, b) in enumerate(zip(s, s0)) if j != d):
                raise ShapeError(f"concat along dim {opts['dim']} needs every other dimension equal, got "
                                 + " and ".join(_nshape(x) for x in in_shapes))
            total += s[d]
        out = list(s0)
        out[d] = total
        return tuple(out), {}

    @classmethod
    def forward_formula(cls, L, n):
        parts = {f"x{k}": x for k, x in enumerate(n.xs)}
        return F("{out} = cat(" + ", ".join("{x%d}" % k for k in range(len(n.xs))) + f"; dim {L.options['dim']})",
                 out=n.out, **parts)

    @classmethod
    def backward_formula(cls, L, n):
        d = _dim(L.options["dim"], len(L.in_shapes[0]) + 1)
        parts, clauses, at = {}, [], 0
        for k, g in enumerate(n.gins):
            w = L.in_shapes[k][d - 1]
            parts[f"gin{k}"] = g
            parts[f"g{k}"] = Ref(n.g.name, n.g.role, f"[dim {d}: {at}..{at + w - 1}]")
            clauses.append("{gin%d} = {g%d}" % (k, k))
            at += w
        return F(";  ".join(clauses) + ";  (each input gets back its own slice of the upstream gradient)", **parts)

    @classmethod
    def torch_module(cls, L):
        return None, ""

    @classmethod
    def torch_forward(cls, L, ins, me, out):
        return [f"{out} = torch.cat([{', '.join(ins)}], dim={L.options['dim']})"]

    def _axis(self, nd):
        return self.opts["dim"] % nd

    def forward(self, xs, P):
        return np.concatenate(xs, axis=self._axis(xs[0].ndim)), {}, {}

    def value_rule(self, name, idx, V):
        ax = self._axis(len(idx))
        at = list(idx)
        for k, x in enumerate(self.spec.inputs):
            w = self.in_shapes[k][ax - 1]
            if at[ax] < w:
                return Value(f"a copy: position {idx[ax]} along dim {ax} falls in input {k} ({x}), at {at[ax]}",
                             el(V, x, at))
            at[ax] -= w
        raise IndexError(idx)

    def backward(self, g, xs, out, P, extras):
        ax = self._axis(g.ndim)
        cuts = np.cumsum([x.shape[ax] for x in xs])[:-1]
        return [np.ascontiguousarray(p) for p in np.split(g, cuts, axis=ax)], {}, None

    def grad_rule(self, wrt, idx, V):
        k = int(wrt.rsplit(".", 1)[1])
        ax = self._axis(len(idx))
        offset = sum(self.in_shapes[j][ax - 1] for j in range(k))
        at = list(idx)
        at[ax] += offset
        return Rule(f"its slice of the upstream gradient (offset {offset} along dim {ax})", [Term(
            (Factor(self.dout(tuple(at), self.sym(self.spec.inputs[k], idx)), "1", 1.0),), (self.grad_out, tuple(at)))])


class Matmul(Merge):
    """Per sample: the batch dim is kept, and the two inputs' per-sample leading dims broadcast
    against each other as numpy's and torch's matmul broadcast them, (…, n, k) @ (…, k, m). An
    input with fewer per-sample dims gets size-1 dims after the batch (on the batched tensors
    that is torch.matmul(a[:, None], b) for a (N, n, k) and b (N, B, k, m); torch.matmul(a, b)
    would pair the batch of a with B instead)."""
    type = "matmul"
    torch_functions = ("torch.matmul", "@")
    onnx_ops = ("MatMul",)
    arity = (2, 2)

    @classmethod
    def shapes(cls, opts, in_shapes):
        if len(in_shapes) != 2:
            raise ShapeError(f"matmul multiplies exactly two tensors, got {len(in_shapes)} inputs")
        a, b = (tuple(s) for s in in_shapes)
        if len(a) < 2 or len(b) < 2:
            raise ShapeError(f"matmul needs a matrix per sample in each input (at least 2 dimensions besides "
                             f"the batch), got {_nshape(a)} and {_nshape(b)}")
        if a[-1] != b[-2]:
            raise ShapeError(f"matmul (…, n, k) @ (…, k, m) needs a's last dimension to equal b's second-to-last, "
                             f"got {_nshape(a)} @ {_nshape(b)} ({a[-1]} ≠ {b[-2]})")
        try:
            lead = np.broadcast_shapes(a[:-2], b[:-2])
        except ValueError:
            raise ShapeError(f"matmul's leading dimensions do not broadcast: {_nshape(a)} @ {_nshape(b)}") from None
        return tuple(lead) + (a[-2], b[-1]), {}

    @classmethod
    def intermediates(cls, opts, in_shapes, out_shape):
        """An input whose leading dims broadcast gets its gradient for every copy first, (…, n, k)
        or (…, k, m) with the output's leading dims, and then the sum over the copies."""
        lead = tuple(out_shape[:-2])
        out = []
        for k, s in enumerate(in_shapes):
            if tuple(s[:-2]) != lead:
                out.append((f"gradient of inputs[{k}] before the sum over its broadcast copies", lead + tuple(s[-2:]), 0))
        return out

    @classmethod
    def forward_formula(cls, L, n):
        return F("{out} = {a} @ {b}   (per sample and leading index)", out=n.out, a=n.xs[0], b=n.xs[1])

    @classmethod
    def backward_formula(cls, L, n):
        a, b = n.xs
        return F("{ga} = {g} @ {b}ᵀ;  {gb} = {a}ᵀ @ {g};  (ᵀ swaps the last two dims; broadcast dims are summed)",
                 ga=n.gins[0], gb=n.gins[1], g=n.g, a=a, b=b)

    @classmethod
    def torch_module(cls, L):
        return None, ""

    @classmethod
    def torch_forward(cls, L, ins, me, out):
        nd = max(len(s) for s in L.in_shapes)       # per sample: the lower-rank input gets size-1 dims after the batch
        x = [v + ("[:" + ", None" * (nd - len(s)) + "]" if len(s) < nd else "") for v, s in zip(ins, L.in_shapes)]
        return [f"{out} = torch.matmul({x[0]}, {x[1]})"]

    @staticmethod
    def _aligned(x, nd: int):
        """``x`` (N, …) with size-1 dims after the batch, to ``nd`` dims in all (a view)."""
        return x.reshape(x.shape[:1] + (1,) * (nd - x.ndim) + x.shape[1:])

    def forward(self, xs, P):
        nd = max(x.ndim for x in xs)
        return np.matmul(*(self._aligned(x, nd) for x in xs)), {}, {}

    def value_rule(self, name, idx, V):
        """out[.., i, j] = Σ_m a[.., i, m]·b[.., m, j], a broadcast dim read at 0."""
        a, b = self.spec.inputs
        A, B = np.shape(V(a)), np.shape(V(b))
        lead, i, j = tuple(idx[:-2]), idx[-2], idx[-1]

        def at(shape):
            off = len(lead) - (len(shape) - 2)
            return tuple(0 if shape[d] == 1 else lead[off + d] for d in range(len(shape) - 2))
        return Value(f"row {i} of {a} times column {j} of {b}: Σ over the {A[-1]} products",
                     total([el(V, a, at(A) + (i, m)) * el(V, b, at(B) + (m, j)) for m in range(A[-1])], "product"))

    def backward(self, g, xs, out, P, extras):
        a, b = (self._aligned(x, g.ndim) for x in xs)
        ga = np.matmul(g, np.swapaxes(b, -1, -2))          # (N, lead, n, k): one per broadcast copy
        gb = np.matmul(np.swapaxes(a, -1, -2), g)          # (N, lead, k, m)
        return [np.ascontiguousarray(_unbroadcast(gx, x.shape).reshape(x0.shape))
                for gx, x, x0 in ((ga, a, xs[0]), (gb, b, xs[1]))], {}, None

    def grad_rule(self, wrt, idx, V):
        k = int(wrt.rsplit(".", 1)[1])
        a_name, b_name = self.spec.inputs
        a, b, g = V(a_name), V(b_name), V(self.grad_out)
        mine = a if k == 0 else b
        other_name = b_name if k == 0 else a_name
        other = b if k == 0 else a
        idx = tuple(idx)
        terms = []
        for lead in np.ndindex(*g.shape[:-2]):
            # which element of each input this output position reads: the same sample; per-sample
            # leading dims aligned from the right, a broadcast (size-1) dim read at index 0
            def at(x, lead=lead):
                per = x.shape[1:-2]
                off = len(lead) - 1 - len(per)
                return (lead[0],) + tuple(0 if per[d] == 1 else lead[1 + off + d] for d in range(len(per)))
            if at(mine) != idx[:-2]:
                continue
            i, j = idx[-2], idx[-1]
            if k == 0:                     # a[.., i, j]: Σ_m g[.., i, m] · b[.., j, m]
                for m in range(g.shape[-1]):
                    bi = at(other) + (j, m)
                    terms.append(Term((Factor(self.dout(lead + (i, m), self.sym(a_name, idx)), self.sym(other_name, bi),
                                              float(other[bi])),), (self.grad_out, lead + (i, m))))
            else:                          # b[.., i, j]: Σ_n a[.., n, i] · g[.., n, j]
                for n in range(g.shape[-2]):
                    ai = at(other) + (n, i)
                    terms.append(Term((Factor(self.dout(lead + (n, j), self.sym(b_name, idx)), self.sym(other_name, ai),
                                              float(other[ai])),), (self.grad_out, lead + (n, j))))
        return Rule("Σ over the products this element enters (and any broadcast copies)", terms)
