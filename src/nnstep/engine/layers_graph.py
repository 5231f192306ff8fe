"""The math of the graph layers (spec/catalog_graph.py): merges, shape layers, embedding and
multi-head attention. As everywhere in the engine: out of place, float32 stays float32, and each
derivative is written twice, vectorized (backward) and for one element (grad_rule, for explain)."""
from __future__ import annotations

import math

import numpy as np

from ..layers import expr as X
from ..layers.expr import K, Lit, Value, el, total
from ..layers.activations import softmax_row
from .layers import Layer
from ..layers.terms import Factor, Rule, Term, ix


def _unbroadcast(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``g`` down to ``shape`` over the dimensions broadcasting added or stretched."""
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for d, n in enumerate(shape):
        if n == 1 and g.shape[d] != 1:
            g = g.sum(axis=d, keepdims=True)
    return g


class _Merge(Layer):
    pass


class Add(_Merge):
    type = "add"

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
            (Factor(self._dout(idx, self._sym(self.spec.inputs[k], idx)), "1", 1.0),), (self._gname, tuple(idx)))])


class Mul(_Merge):
    type = "mul"

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
        factors = tuple(Factor("", self._sym(x, idx), float(V(x)[idx])) for j, x in enumerate(self.spec.inputs) if j != k)
        return Rule("the product rule: the upstream times the other factors", [Term(factors, (self._gname, idx))])


class Concat(_Merge):
    type = "concat"

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
            (Factor(self._dout(tuple(at), self._sym(self.spec.inputs[k], idx)), "1", 1.0),), (self._gname, tuple(at)))])


class Matmul(_Merge):
    """Per sample: the batch dim is kept, and the two inputs' per-sample leading dims broadcast
    against each other as numpy's and torch's matmul broadcast them, (…, n, k) @ (…, k, m). An
    input with fewer per-sample dims gets size-1 dims after the batch (on the batched tensors
    that is torch.matmul(a[:, None], b) for a (N, n, k) and b (N, B, k, m); torch.matmul(a, b)
    would pair the batch of a with B instead)."""
    type = "matmul"

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
        a, b, g = V(a_name), V(b_name), V(self._gname)
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
                    terms.append(Term((Factor(self._dout(lead + (i, m), self._sym(a_name, idx)), self._sym(other_name, bi),
                                              float(other[bi])),), (self._gname, lead + (i, m))))
            else:                          # b[.., i, j]: Σ_n a[.., n, i] · g[.., n, j]
                for n in range(g.shape[-2]):
                    ai = at(other) + (n, i)
                    terms.append(Term((Factor(self._dout(lead + (n, j), self._sym(b_name, idx)), self._sym(other_name, ai),
                                              float(other[ai])),), (self._gname, lead + (n, j))))
        return Rule("Σ over the products this element enters (and any broadcast copies)", terms)


class Transpose(Layer):
    type = "transpose"

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
        return Value(f"a transpose moves each number, unchanged (dims {a} and {b} swapped)", el(V, self.spec.inputs[0], at))

    def grad_rule(self, wrt, idx, V):
        a, b = self._axes(len(idx))
        at = list(idx)
        at[a], at[b] = at[b], at[a]
        return Rule("a transpose moves each number, unchanged", [Term((), (self._gname, tuple(at)))])


class Reshape(Layer):
    type = "reshape"

    def forward(self, x, P):
        return x.reshape((x.shape[0],) + self.out_shape), {}, {}

    def backward(self, g, x, out, P, extras):
        return g.reshape(x.shape), {}, None

    def value_rule(self, name, idx, V):
        flat = int(np.ravel_multi_index(tuple(idx[1:]), self.out_shape))
        at = (idx[0],) + tuple(int(v) for v in np.unravel_index(flat, self.in_shape))
        return Value("a reshape moves each number, unchanged", el(V, self.spec.inputs[0], at))

    def grad_rule(self, wrt, idx, V):
        flat = int(np.ravel_multi_index(tuple(idx[1:]), self.in_shape))
        at = (idx[0],) + tuple(int(v) for v in np.unravel_index(flat, self.out_shape))
        return Rule("a reshape moves each number, unchanged", [Term((), (self._gname, at))])


class Scale(Layer):
    type = "scale"

    def forward(self, x, P):
        return x * self.opts["by"], {}, {}

    def backward(self, g, x, out, P, extras):
        return g * self.opts["by"], {}, None

    def value_rule(self, name, idx, V):
        return Value("the constant factor c times the input", K("c", self.opts["by"]) * el(V, self.spec.inputs[0], idx))

    def grad_rule(self, wrt, idx, V):
        c = float(self.opts["by"])
        return Rule("the constant factor", [Term((Factor(self._dout(idx, self._sym(self.spec.inputs[0], idx)),
                                                          "c", c),), (self._gname, tuple(idx)))])


class Attention(Layer):
    """torch's nn.MultiheadAttention (batch_first, self-attention), one sub-step per operation."""
    type = "attention"

    def __init__(self, name, opts, in_shape, in_shapes=None):
        super().__init__(name, opts, in_shape, in_shapes)
        self.T, self.E = self.in_shape
        self.h = opts["heads"]
        self.d = self.E // self.h

    def _n(self, s):
        return self.spec.t(s)

    def _heads(self, a):              # (N, T, E) -> (N, h, T, d)
        N = a.shape[0]
        return a.reshape(N, self.T, self.h, self.d).transpose(0, 2, 1, 3)

    def _merge(self, a):              # (N, h, T, d) -> (N, T, E)
        N = a.shape[0]
        return np.ascontiguousarray(a.transpose(0, 2, 1, 3)).reshape(N, self.T, self.E)

    # --- forward ----------------------------------------------------------------------------------
    def qkv(self, env, k):
        x = env[self.spec.inputs[0]]
        W = env[self._n("in_proj_weight")]
        y = x @ W.T
        if "in_proj_bias" in self.spec.params:
            y = y + env[self._n("in_proj_bias")]
        E = self.E
        env[self._n("q")] = np.ascontiguousarray(self._heads(y[..., :E]))
        env[self._n("k")] = np.ascontiguousarray(self._heads(y[..., E:2 * E]))
        env[self._n("v")] = np.ascontiguousarray(self._heads(y[..., 2 * E:]))

    def scores(self, env, k):
        q, kk = env[self._n("q")], env[self._n("k")]
        env[self._n("scores")] = (q @ np.swapaxes(kk, -1, -2)) / math.sqrt(self.d)

    def softmax(self, env, k):
        S = env[self._n("scores")]
        hidden = self.decl.masked(self.spec)              # key j > query i, with a causal mask
        if hidden is not None:
            S = np.where(hidden, -np.inf, S)
        e = np.exp(S - S.max(axis=-1, keepdims=True))
        env[self._n("weights")] = e / e.sum(axis=-1, keepdims=True)

    def context(self, env, k):
        env[self._n("context")] = self._merge(env[self._n("weights")] @ env[self._n("v")])

    def out(self, env, k):
        C = env[self._n("context")]
        y = C @ env[self._n("out_proj_weight")].T
        if "out_proj_bias" in self.spec.params:
            y = y + env[self._n("out_proj_bias")]
        env[self._n("out")] = y

    # --- backward ---------------------------------------------------------------------------------
    def back_out(self, env, k):
        g, C, W = env[self._n("grad_out")], env[self._n("context")], env[self._n("out_proj_weight")]
        E = self.E
        env[self._n("out_proj_weight.grad")] = g.reshape(-1, E).T @ C.reshape(-1, E)
        if "out_proj_bias" in self.spec.params:
            env[self._n("out_proj_bias.grad")] = g.reshape(-1, E).sum(axis=0)
        env[self._n("context.grad")] = g @ W

    def back_context(self, env, k):
        Cg = self._heads(env[self._n("context.grad")])
        A, v = env[self._n("weights")], env[self._n("v")]
        env[self._n("weights.grad")] = Cg @ np.swapaxes(v, -1, -2)
        env[self._n("v.grad")] = np.swapaxes(A, -1, -2) @ Cg

    def back_softmax(self, env, k):
        A, Ag = env[self._n("weights")], env[self._n("weights.grad")]
        env[self._n("scores.grad")] = A * (Ag - (Ag * A).sum(axis=-1, keepdims=True))

    def back_scores(self, env, k):
        Sg, q, kk = env[self._n("scores.grad")], env[self._n("q")], env[self._n("k")]
        s = math.sqrt(self.d)
        env[self._n("q.grad")] = (Sg @ kk) / s
        env[self._n("k.grad")] = (np.swapaxes(Sg, -1, -2) @ q) / s

    def back_qkv(self, env, k):
        G = np.concatenate([self._merge(env[self._n(t)]) for t in ("q.grad", "k.grad", "v.grad")], axis=-1)
        x, W = env[self.spec.inputs[0]], env[self._n("in_proj_weight")]
        env[self._n("in_proj_weight.grad")] = G.reshape(-1, 3 * self.E).T @ x.reshape(-1, self.E)
        if "in_proj_bias" in self.spec.params:
            env[self._n("in_proj_bias.grad")] = G.reshape(-1, 3 * self.E).sum(axis=0)
        env[self._n("grad_in")] = G @ W

    # --- one element --------------------------------------------------------------------------------
    def value_rule(self, name, idx, V):
        """q, k, v (a row of the input projection), scores (q·k/√d), weights (the softmax of a
        row of scores, over the keys the mask leaves), context (the weighted sum of v), out."""
        n_, idx = self._n, tuple(int(v) for v in idx)
        what = name[len(self.name) + 1:]
        x = self.spec.inputs[0]
        if what in ("q", "k", "v"):
            n, h, t, dd = idx
            r = "qkv".index(what) * self.E + h * self.d + dd
            e = total([el(V, x, (n, t, c)) * el(V, n_("in_proj_weight"), (r, c)) for c in range(self.E)])
            if "in_proj_bias" in self.spec.params:
                e = e + el(V, n_("in_proj_bias"), (r,))
            return Value(f"row {r} of [q | k | v] = x @ W_inᵀ: head {h}'s {what}, dim {dd}", e)
        if what == "scores":
            n, h, i, j = idx
            e = total([el(V, n_("q"), (n, h, i, c)) * el(V, n_("k"), (n, h, j, c)) for c in range(self.d)])
            note = []
            hidden = self.decl.masked(self.spec)
            if hidden is not None and hidden[i, j]:
                note = [f"(key {j} comes after query {i}: the causal mask hides it in the softmax, but the score is "
                        f"taken before the mask, so it is this finite number)"]
            return Value(f"query {i} · key {j} over the head's d = {self.d} dims, / √d", e / X.sqrt(K("d", self.d)), [], note)
        if what == "weights":
            n, h, i, j = idx
            hidden = self.decl.masked(self.spec)
            keep = None if hidden is None else (lambda jj: not hidden[i, jj])
            e, m, z, cnt = softmax_row(V, n_("scores"), idx, -1, keep)
            if hidden is not None and hidden[i, j]:
                return Value(f"key {j} comes after query {i}: the causal mask hides it, its weight is exactly 0 "
                             f"(the softmax runs over the {cnt} keys j ≤ {i})", Lit(0), [m, z])
            return Value(f"the softmax of query {i}'s scores over the {cnt} keys" + (f" j ≤ {i} (the mask hides later ones)"
                                                                                     if hidden is not None else ""), e, [m, z])
        if what == "context":
            n, t, e_ = idx
            h, c = divmod(e_, self.d)
            return Value(f"head {h}'s weighted sum of the values over the {self.T} keys (dim {c} of v)",
                         total([el(V, n_("weights"), (n, h, t, j)) * el(V, n_("v"), (n, h, j, c)) for j in range(self.T)]))
        if what == "out":
            n, t, o = idx
            e = total([el(V, n_("context"), (n, t, c)) * el(V, n_("out_proj_weight"), (o, c)) for c in range(self.E)])
            if "out_proj_bias" in self.spec.params:
                e = e + el(V, n_("out_proj_bias"), (o,))
            return Value(f"the output projection: Σ over the {self.E} context values", e)
        return None

    def _qkv_at(self, r: int, n: int, t: int):
        """Column r of [q | k | v] at (n, t): which gradient tensor and element it is."""
        which, c = divmod(r, self.E)
        h, dd = divmod(c, self.d)
        return self._n(("q", "k", "v")[which] + ".grad"), (n, h, t, dd)

    def grad_rule(self, wrt, idx, V):
        n_ = self._n
        idx = tuple(int(v) for v in idx)
        sym = lambda name, at: f"{name}{ix(at)}"  # noqa: E731
        if wrt in ("out_proj_weight", "out_proj_bias"):
            o = idx[0]
            C = V(n_("context"))
            terms = []
            for n in range(C.shape[0]):
                for t in range(self.T):
                    f = (Factor("", sym(n_("context"), (n, t, idx[1])), float(C[n, t, idx[1]])) if wrt == "out_proj_weight"
                         else Factor("", "1", 1.0))
                    terms.append(Term((f,), (n_("grad_out"), (n, t, o))))
            return Rule("Σ over samples and positions", terms)
        if wrt == "context":
            n, t, e = idx
            W = V(n_("out_proj_weight"))
            return Rule("Σₒ through the output projection", [Term((Factor("", sym(n_("out_proj_weight"), (o, e)),
                                                                            float(W[o, e])),), (n_("grad_out"), (n, t, o)))
                                                              for o in range(self.E)])
        if wrt == "weights":
            n, h, i, j = idx
            v = V(n_("v"))
            return Rule("Σ over the head's value dims", [Term((Factor("", sym(n_("v"), (n, h, j, c)), float(v[n, h, j, c])),),
                                                              (n_("context.grad"), (n, i, h * self.d + c)))
                                                         for c in range(self.d)])
        if wrt == "v":
            n, h, j, c = idx
            A = V(n_("weights"))
            return Rule("Σ over the queries that read this value", [Term(
                (Factor("", sym(n_("weights"), (n, h, i, j)), float(A[n, h, i, j])),), (n_("context.grad"), (n, i, h * self.d + c)))
                for i in range(self.T)])
        if wrt == "scores":
            n, h, i, j = idx
            A = V(n_("weights"))
            return Rule("the softmax's Jacobian: Σ over the keys", [Term(
                (Factor("", f"{sym(n_('weights'), (n, h, i, jj))}·({1 if jj == j else 0} − {sym(n_('weights'), (n, h, i, j))})",
                        float(A[n, h, i, jj]) * ((1.0 if jj == j else 0.0) - float(A[n, h, i, j]))),),
                (n_("weights.grad"), (n, h, i, jj))) for jj in range(self.T)])
        if wrt in ("q", "k"):
            n, h, a, c = idx
            other = V(n_("k" if wrt == "q" else "q"))
            s = math.sqrt(self.d)
            if wrt == "q":
                return Rule("Σ over the keys, / √d", [Term((Factor("", f"{sym(n_('k'), (n, h, j, c))}/√d",
                                                                   float(other[n, h, j, c]) / s),), (n_("scores.grad"), (n, h, a, j)))
                                                      for j in range(self.T)])
            return Rule("Σ over the queries, / √d", [Term((Factor("", f"{sym(n_('q'), (n, h, i, c))}/√d",
                                                                  float(other[n, h, i, c]) / s),), (n_("scores.grad"), (n, h, i, a)))
                                                     for i in range(self.T)])
        if wrt in ("in_proj_weight", "in_proj_bias"):
            r = idx[0]
            x = V(self.spec.inputs[0])
            terms = []
            for n in range(x.shape[0]):
                for t in range(self.T):
                    up = self._qkv_at(r, n, t)
                    f = (Factor("", sym(self.spec.inputs[0], (n, t, idx[1])), float(x[n, t, idx[1]]))
                         if wrt == "in_proj_weight" else Factor("", "1", 1.0))
                    terms.append(Term((f,), up))
            return Rule("Σ over samples and positions", terms)
        if wrt == "grad_in":
            n, t, e = idx
            W = V(n_("in_proj_weight"))
            return Rule("Σ over the 3E columns of [q | k | v]", [Term(
                (Factor("", sym(n_("in_proj_weight"), (r, e)), float(W[r, e])),), self._qkv_at(r, n, t))
                for r in range(3 * self.E)])
        raise KeyError(wrt)


GRAPH_LAYERS = {c.type: c for c in (Add, Mul, Concat, Matmul, Transpose, Reshape, Scale, Attention)}
