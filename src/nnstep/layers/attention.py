"""``attention``: torch's nn.MultiheadAttention(E, heads, bias=bias, batch_first=True) called as
mha(x, x, x, need_weights=False) (self-attention), with a causal mask when ``causal``. Every
sub-step is an operation of its own, forward (qkv, scores, softmax, context, out) and backward (in
reverse), each with its tensors: ``<layer>.q``, ``.k``, ``.v`` (N, heads, T, E/heads), ``.scores``
(N, heads, T, T) (q·kᵀ/√(E/heads), before the mask, so always finite), ``.weights`` (their softmax
over the unmasked keys: exactly 0 where the mask hides one), ``.context`` (N, T, E), and their
gradients (docs/scenario-format.md)."""
from __future__ import annotations

import math

import numpy as np

from nnstep.layers import (Const, F, Factor, K, Layer, Lit, Option, Ref, Rule, ShapeError, Step, Term, Value, el,
                           expr as X, fmt_shape, ix, total)
from nnstep.layers.activations import softmax_row


class Attention(Layer):
    """nn.MultiheadAttention(E, heads, bias=bias, batch_first=True) called as mha(x, x, x,
    need_weights=False), with a causal mask when ``causal``. Five operations forward and five
    backward, each with its tensors (docs/scenario-format.md)."""
    type = "attention"
    torch_modules = ("MultiheadAttention",)
    options = {"heads": Option(1, "posint"), "causal": Option(False, "bool"), "bias": Option(True, "bool")}
    params = ("in_proj_weight", "in_proj_bias", "out_proj_weight", "out_proj_bias")
    symbols = {"in_proj_weight": "W_in", "in_proj_bias": "b_in", "out_proj_weight": "W_o", "out_proj_bias": "b_o"}
    bias_params = ("in_proj_bias", "out_proj_bias")
    extras = ("q", "k", "v", "scores", "weights", "context")
    init = {"in_proj_weight": "xavier_uniform", "in_proj_bias": "zeros", "out_proj_weight": "kaiming_uniform",
            "out_proj_bias": "zeros"}
    STEPS = ("qkv", "scores", "softmax", "context", "out")

    @classmethod
    def shapes(cls, opts, in_shapes):
        s = tuple(in_shapes[0])
        if len(s) != 2:
            raise ShapeError(f"attention expects input (N, T, E): a per-sample shape of 2 dims, got {fmt_shape(s)}")
        T, E = s
        h = opts["heads"]
        if E % h:
            raise ShapeError(f"heads = {h} does not divide the embedding size E = {E}")
        P = {"in_proj_weight": (3 * E, E), "out_proj_weight": (E, E)}
        if opts.get("bias", True):
            P.update({"in_proj_bias": (3 * E,), "out_proj_bias": (E,)})
        return s, dict(sorted(P.items(), key=lambda kv: cls.params.index(kv[0])))

    @classmethod
    def fans(cls, opts, in_shape):
        """torch's fans of the (3E, E) in_proj_weight, which xavier_uniform_ draws from with bound
        √(6/(E + 3E)); out_proj_weight's kaiming_uniform reads only fan_in, E, as its Linear(E, E)."""
        return in_shape[-1], 3 * in_shape[-1]

    @classmethod
    def masked(cls, L) -> "np.ndarray | None":
        """The (query i, key j) cells the causal mask hides, as a (T, T) boolean array, True where
        key j comes after query i: there ``.weights`` (and ``.scores.grad``) are exactly 0, while
        ``.scores`` holds the unmasked q·k/√d. None without the mask. The engine masks with it; a
        screen can mark those cells of any (…, T, T) tensor of the layer."""
        if not L.options["causal"]:
            return None
        T = L.in_shape[0]
        return np.triu(np.ones((T, T), dtype=bool), 1)

    @classmethod
    def masked_tensors(cls, L) -> dict:
        """With the causal mask: the (N, h, T, T) tensors whose (query i, key j) cells it hides,
        ``.scores`` (taken before the mask, finite there), ``.weights`` (exactly 0 there) and their
        gradients (``.scores.grad`` 0 there, ``.weights.grad`` not: the mask stops it), each with
        masked()."""
        hidden = cls.masked(L)
        if hidden is None:
            return {}
        return {L.t(n): hidden for n in ("scores", "weights", "scores.grad", "weights.grad")}

    @classmethod
    def intermediates(cls, opts, in_shapes, out_shape):
        T, E = in_shapes[0]
        h = opts["heads"]
        d = E // h
        return [("projection [q | k | v]", (T, 3 * E), 1), ("q", (h, T, d), 1), ("k", (h, T, d), 1),
                ("v", (h, T, d), 1), ("scores", (h, T, T), 1), ("weights", (h, T, T), 1), ("context", (T, E), 1)]

    @classmethod
    def _refs(cls, L, n):
        t = L.t
        return dict(x=n.x, out=n.out, g=n.g, gin=n.gin, Wi=n.p("in_proj_weight"), bi=n.p("in_proj_bias"),
                    Wo=n.p("out_proj_weight"), bo=n.p("out_proj_bias"), Wig=n.pg("in_proj_weight"),
                    big=n.pg("in_proj_bias"), Wog=n.pg("out_proj_weight"), bog=n.pg("out_proj_bias"),
                    q=Ref(t("q"), "extra"), k=Ref(t("k"), "extra"), v=Ref(t("v"), "extra"),
                    S=Ref(t("scores"), "extra"), A=Ref(t("weights"), "extra"), C=Ref(t("context"), "extra"),
                    qg=Ref(t("q.grad"), "grad"), kg=Ref(t("k.grad"), "grad"), vg=Ref(t("v.grad"), "grad"),
                    Sg=Ref(t("scores.grad"), "grad"), Ag=Ref(t("weights.grad"), "grad"),
                    Cg=Ref(t("context.grad"), "grad"),
                    d=Const("d", L.in_shape[1] // L.options["heads"]), h=Const("h", L.options["heads"]))

    @classmethod
    def forward_steps(cls, L, n):
        r = cls._refs(L, n)
        b = L.has("in_proj_bias")
        t = L.t
        P = [p for p in ("in_proj_weight", "in_proj_bias") if L.has(p)]
        causal = L.options["causal"]
        return [
            Step("qkv", "qkv", ((n.x.name, "input"),) + tuple((t(p), "param") for p in P),
                 ((t("q"), "result"), (t("k"), "result"), (t("v"), "result")),
                 F("[q | k | v] = {x} @ {Wi}ᵀ" + (" + {bi}" if b else "") + ";  "
                   "split into {h} heads of {d} values each: {q}, {k}, {v}   (N, heads, T, E/heads)", **r)),
            Step("scores", "scores", ((t("q"), "input"), (t("k"), "input")), ((t("scores"), "result"),),
                 F("{S} = {q} @ {k}ᵀ / √{d}   (N, h, T, T): query i against key j", **r)),
            Step("softmax", "softmax", ((t("scores"), "input"),), ((t("weights"), "result"),),
                 F("{A} = softmax({S}) over the keys j" + (
                     " ≤ i, the keys the causal mask leaves to query i;  (masked: %s is exactly 0 where key j > "
                     "query i, a later key, while %s is taken before the mask and stays finite there)"
                     % (t("weights"), t("scores")) if causal else ""), **r)),
            Step("context", "context", ((t("weights"), "input"), (t("v"), "input")), ((t("context"), "result"),),
                 F("{C} = {A} @ {v}, the heads side by side again   (N, T, E)", **r)),
            Step("out", "out", ((t("context"), "input"),) + tuple((t(p), "param") for p in ("out_proj_weight",
                                                                                        "out_proj_bias") if L.has(p)),
                 ((n.out.name, "result"),),
                 F("{out} = {C} @ {Wo}ᵀ" + (" + {bo}" if L.has("out_proj_bias") else ""), **r)),
        ]

    @classmethod
    def backward_steps(cls, L, n):
        r = cls._refs(L, n)
        t = L.t
        bo = L.has("out_proj_bias")
        bi = L.has("in_proj_bias")
        return [
            Step("out", "back_out", ((n.g.name, "upstream"), (t("context"), "input"), (t("out_proj_weight"), "param")),
                 ((t("out_proj_weight.grad"), "grad_param"),) + (((t("out_proj_bias.grad"), "grad_param"),) if bo else ())
                 + ((t("context.grad"), "grad"),),
                 F("{Wog} = {g}ᵀ @ {C}" + (";  {bog} = Σₙ {g}" if bo else "") + ";  {Cg} = {g} @ {Wo}", **r)),
            Step("context", "back_context", ((t("context.grad"), "upstream"), (t("weights"), "input"), (t("v"), "input")),
                 ((t("weights.grad"), "grad"), (t("v.grad"), "grad")),
                 F("{Ag} = {Cg} @ {v}ᵀ;  {vg} = {A}ᵀ @ {Cg};  (per head)", **r)),
            Step("softmax", "back_softmax", ((t("weights.grad"), "upstream"), (t("weights"), "input")),
                 ((t("scores.grad"), "grad"),),
                 F("{Sg} = {A} ⊙ ({Ag} − Σⱼ({Ag} ⊙ {A}))" + ("   (0 where the mask hid a key: there A = 0)"
                                                            if L.options["causal"] else ""), **r)),
            Step("scores", "back_scores", ((t("scores.grad"), "upstream"), (t("q"), "input"), (t("k"), "input")),
                 ((t("q.grad"), "grad"), (t("k.grad"), "grad")),
                 F("{qg} = {Sg} @ {k} / √{d};  {kg} = {Sg}ᵀ @ {q} / √{d}", **r)),
            Step("qkv", "back_qkv", ((t("q.grad"), "upstream"), (t("k.grad"), "upstream"), (t("v.grad"), "upstream"),
                                     (n.x.name, "input"), (t("in_proj_weight"), "param")),
                 ((t("in_proj_weight.grad"), "grad_param"),) + (((t("in_proj_bias.grad"), "grad_param"),) if bi else ())
                 + ((n.gin.name, "grad_in"),),
                 F("G = [{qg} | {kg} | {vg}], the heads merged back   (N, T, 3E);  {Wig} = Gᵀ @ {x}"
                   + (";  {big} = Σₙ G" if bi else "") + ";  {gin} = G @ {Wi}", **r)),
        ]

    @classmethod
    def torch_module(cls, L):
        E = L.in_shape[-1]
        bias = "" if L.options["bias"] else ", bias=False"
        return (f"nn.MultiheadAttention({E}, num_heads={L.options['heads']}{bias}, batch_first=True)",
                "self-attention: query = key = value = its input")

    @classmethod
    def torch_forward(cls, L, ins, me, out):
        a, T = ins[0], L.in_shape[0]
        if L.options["causal"]:
            return [f"mask = torch.triu(torch.ones({T}, {T}, dtype=torch.bool), diagonal=1)   # True: key j > query i, hidden",
                    f"{out}, _ = {me}({a}, {a}, {a}, need_weights=False, attn_mask=mask)"]
        return [f"{out}, _ = {me}({a}, {a}, {a}, need_weights=False)"]

    @classmethod
    def torch_param(cls, L, param, me):
        if param.startswith("out_proj_"):
            return f"{me}.out_proj.{param[len('out_proj_'):]}"
        return f"{me}.{param}"

    def __init__(self, spec):
        super().__init__(spec)
        self.T, self.E = self.in_shape
        self.h = self.opts["heads"]
        self.d = self.E // self.h

    def _heads(self, a):              # (N, T, E) -> (N, h, T, d)
        N = a.shape[0]
        return a.reshape(N, self.T, self.h, self.d).transpose(0, 2, 1, 3)

    def _merge(self, a):              # (N, h, T, d) -> (N, T, E)
        N = a.shape[0]
        return np.ascontiguousarray(a.transpose(0, 2, 1, 3)).reshape(N, self.T, self.E)

    # --- forward ----------------------------------------------------------------------------------
    def qkv(self, env, k):
        x = env[self.x]
        W = env[self.t("in_proj_weight")]
        y = x @ W.T
        if self.has("in_proj_bias"):
            y = y + env[self.t("in_proj_bias")]
        E = self.E
        env[self.t("q")] = np.ascontiguousarray(self._heads(y[..., :E]))
        env[self.t("k")] = np.ascontiguousarray(self._heads(y[..., E:2 * E]))
        env[self.t("v")] = np.ascontiguousarray(self._heads(y[..., 2 * E:]))

    def scores(self, env, k):
        q, kk = env[self.t("q")], env[self.t("k")]
        env[self.t("scores")] = (q @ np.swapaxes(kk, -1, -2)) / math.sqrt(self.d)

    def softmax(self, env, k):
        S = env[self.t("scores")]
        hidden = self.masked(self.spec)              # key j > query i, with a causal mask
        if hidden is not None:
            S = np.where(hidden, -np.inf, S)
        e = np.exp(S - S.max(axis=-1, keepdims=True))
        env[self.t("weights")] = e / e.sum(axis=-1, keepdims=True)

    def context(self, env, k):
        env[self.t("context")] = self._merge(env[self.t("weights")] @ env[self.t("v")])

    def out(self, env, k):
        C = env[self.t("context")]
        y = C @ env[self.t("out_proj_weight")].T
        if self.has("out_proj_bias"):
            y = y + env[self.t("out_proj_bias")]
        env[self.t("out")] = y

    # --- backward ---------------------------------------------------------------------------------
    def back_out(self, env, k):
        g, C, W = env[self.t("grad_out")], env[self.t("context")], env[self.t("out_proj_weight")]
        E = self.E
        env[self.t("out_proj_weight.grad")] = g.reshape(-1, E).T @ C.reshape(-1, E)
        if self.has("out_proj_bias"):
            env[self.t("out_proj_bias.grad")] = g.reshape(-1, E).sum(axis=0)
        env[self.t("context.grad")] = g @ W

    def back_context(self, env, k):
        Cg = self._heads(env[self.t("context.grad")])
        A, v = env[self.t("weights")], env[self.t("v")]
        env[self.t("weights.grad")] = Cg @ np.swapaxes(v, -1, -2)
        env[self.t("v.grad")] = np.swapaxes(A, -1, -2) @ Cg

    def back_softmax(self, env, k):
        A, Ag = env[self.t("weights")], env[self.t("weights.grad")]
        env[self.t("scores.grad")] = A * (Ag - (Ag * A).sum(axis=-1, keepdims=True))

    def back_scores(self, env, k):
        Sg, q, kk = env[self.t("scores.grad")], env[self.t("q")], env[self.t("k")]
        s = math.sqrt(self.d)
        env[self.t("q.grad")] = (Sg @ kk) / s
        env[self.t("k.grad")] = (np.swapaxes(Sg, -1, -2) @ q) / s

    def back_qkv(self, env, k):
        G = np.concatenate([self._merge(env[self.t(t)]) for t in ("q.grad", "k.grad", "v.grad")], axis=-1)
        x, W = env[self.x], env[self.t("in_proj_weight")]
        env[self.t("in_proj_weight.grad")] = G.reshape(-1, 3 * self.E).T @ x.reshape(-1, self.E)
        if self.has("in_proj_bias"):
            env[self.t("in_proj_bias.grad")] = G.reshape(-1, 3 * self.E).sum(axis=0)
        env[self.t("grad_in")] = G @ W

    # --- one element --------------------------------------------------------------------------------
    def value_rule(self, name, idx, V):
        """q, k, v (a row of the input projection), scores (q·k/√d), weights (the softmax of a
        row of scores, over the keys the mask leaves), context (the weighted sum of v), out."""
        n_, idx = self.t, tuple(int(v) for v in idx)
        what = name[len(self.name) + 1:]
        x = self.x
        if what in ("q", "k", "v"):
            n, h, t, dd = idx
            r = "qkv".index(what) * self.E + h * self.d + dd
            e = total([el(V, x, (n, t, c)) * el(V, n_("in_proj_weight"), (r, c)) for c in range(self.E)])
            if self.has("in_proj_bias"):
                e = e + el(V, n_("in_proj_bias"), (r,))
            return Value(f"row {r} of [q | k | v] = x @ W_inᵀ: head {h}'s {what}, dim {dd}", e)
        if what == "scores":
            n, h, i, j = idx
            e = total([el(V, n_("q"), (n, h, i, c)) * el(V, n_("k"), (n, h, j, c)) for c in range(self.d)])
            note = []
            hidden = self.masked(self.spec)
            if hidden is not None and hidden[i, j]:
                note = [f"(key {j} comes after query {i}: the causal mask hides it in the softmax, but the score is "
                        f"taken before the mask, so it is this finite number)"]
            return Value(f"query {i} · key {j} over the head's d = {self.d} dims, / √d", e / X.sqrt(K("d", self.d)), [], note)
        if what == "weights":
            n, h, i, j = idx
            hidden = self.masked(self.spec)
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
            if self.has("out_proj_bias"):
                e = e + el(V, n_("out_proj_bias"), (o,))
            return Value(f"the output projection: Σ over the {self.E} context values", e)
        return None

    def _qkv_at(self, r: int, n: int, t: int):
        """Column r of [q | k | v] at (n, t): which gradient tensor and element it is."""
        which, c = divmod(r, self.E)
        h, dd = divmod(c, self.d)
        return self.t(("q", "k", "v")[which] + ".grad"), (n, h, t, dd)

    def grad_rule(self, wrt, idx, V):
        n_ = self.t
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
            x = V(self.x)
            terms = []
            for n in range(x.shape[0]):
                for t in range(self.T):
                    up = self._qkv_at(r, n, t)
                    f = (Factor("", sym(self.x, (n, t, idx[1])), float(x[n, t, idx[1]]))
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
