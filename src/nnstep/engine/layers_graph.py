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


GRAPH_LAYERS = {c.type: c for c in (Attention,)}
