"""The math of the recurrent layers (spec/catalog_rnn.py): torch's nn.RNN and nn.LSTM, one layer,
batch first, h0 = c0 = 0, one operation per time step forward and, in reverse, backward (BPTT).

As everywhere in the engine: out of place (a whole-sequence tensor filled in one time step per op
is a new array each time), float32 stays float32, and each derivative is written twice, vectorized
(the backward_t methods) and for one element (grad_rule, for explain). The element rules expand a
gradient one time step at a time: dLoss/dh_t into grad_out[:, t] and what time step t + 1 sends
back, the parameters' gradients into a sum over every time step and sample.
"""
from __future__ import annotations

import numpy as np

from ..layers import expr as X
from ..layers.expr import Def, Lit, Value, el, total
from .layers import Layer
from ..layers.terms import Factor, Rule, Term, ix


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


class _Recurrent(Layer):
    G = 1

    def __init__(self, name, opts, in_shape, in_shapes=None):
        super().__init__(name, opts, in_shape, in_shapes)
        self.T, self.I = self.in_shape
        self.H = opts["hidden"]

    def _n(self, s):
        return self.spec.t(s)

    @property
    def _bias(self) -> bool:
        return "bias_ih" in self.spec.params

    def _fill(self, env, name: str, j: int, value, first: bool, shape_tail):
        """A whole-sequence tensor with time position j set: a new array (zeros elsewhere if this op
        starts it, else a copy of the one so far)."""
        if first:
            a = np.zeros((value.shape[0], self.T) + tuple(shape_tail), dtype=value.dtype)
        else:
            a = env[name].copy()
        a[:, j] = value
        env[name] = a

    def _pre(self, env, j):
        """x_t W_ihᵀ + b_ih + h_{t−1} W_hhᵀ + b_hh, as torch adds them: (input part) + (hidden part)."""
        x = env[self.spec.inputs[0]][:, j]
        ig = x @ env[self._n("weight_ih")].T
        if self._bias:
            ig = ig + env[self._n("bias_ih")]
        if j > 0:
            hg = env[self._n(f"h.t{j}")] @ env[self._n("weight_hh")].T
            if self._bias:
                hg = hg + env[self._n("bias_hh")]
            return ig + hg
        return ig + env[self._n("bias_hh")] if self._bias else ig

    # --- backward: the parameters' sums and grad_in, shared ------------------------------------------
    def _param_grads(self, env, j, da):
        """Add time step j's share to the parameters' gradients (tT starts them) and fill grad_in."""
        acc = j < self.T - 1
        x = env[self.spec.inputs[0]][:, j]
        n_ = self._n

        def put(name, v):
            env[name] = env[name] + v if acc else v
        put(n_("weight_ih.grad"), da.T @ x)
        if j > 0:
            put(n_("weight_hh.grad"), da.T @ env[n_(f"h.t{j}")])
        elif self.T == 1:
            env[n_("weight_hh.grad")] = np.zeros_like(env[n_("weight_hh")])
        if self._bias:
            s = np.add.reduce(da, axis=0)
            put(n_("bias_ih.grad"), s)
            put(n_("bias_hh.grad"), s)
        self._fill(env, n_("grad_in"), j, da @ env[n_("weight_ih")], not acc, (self.I,))

    def _dh(self, env, j):
        g = env[self._n("grad_out")][:, j]
        if j < self.T - 1:
            return g + env[self._n(f"pre.t{j + 2}.grad")] @ env[self._n("weight_hh")]
        return np.ascontiguousarray(g)

    # --- one element ---------------------------------------------------------------------------------
    def _pre_value(self, k: int, n: int, r: int, V) -> Value:
        """pre.t<k>[n, r] = Σ_i x[n, t, i]·W_ih[r, i] + Σ_u h.t<k−1>[n, u]·W_hh[r, u] + b_ih[r] + b_hh[r]."""
        x, n_ = self.spec.inputs[0], self._n
        terms = [el(V, x, (n, k - 1, i)) * el(V, n_("weight_ih"), (r, i)) for i in range(self.I)]
        if k > 1:
            terms += [el(V, n_(f"h.t{k - 1}"), (n, u)) * el(V, n_("weight_hh"), (r, u)) for u in range(self.H)]
        e = total(terms)
        if self._bias:
            e = e + el(V, n_("bias_ih"), (r,)) + el(V, n_("bias_hh"), (r,))
        how = f"Σ over the {self.I} inputs at t{k}" + (f" and the {self.H} hidden units of t{k - 1}" if k > 1 else
                                                       " (h₀ = 0)")
        return Value(how, e)

    def value_rule(self, name: str, idx, V):
        """One element of a time step's tensors: the pre-activation as a sum of products, the
        hidden state (and an LSTM's gates and cell) from it."""
        what, _, tk = name[len(self.name) + 1:].partition(".t")
        if not tk.isdigit():
            return None
        k = int(tk)
        n, u = (int(v) for v in idx)
        if what == "pre":
            return self._pre_value(k, n, u, V)
        return self.step_value(what, k, n, u, V)

    def _pre_def(self, k, n, r, V) -> Def:
        return Def("a", self._pre_value(k, n, r, V).expr, el(V, self._n(f"pre.t{k}"), (n, r)))

    def element_alias(self, name: str, idx: tuple):
        """An element of out / c / gates as the time step's own tensor: out[n, t, u] is h.t<t+1>[n, u]."""
        what = {self._n("out"): "h", self._n("c"): "c", self._n("gates"): "gates"}.get(name)
        if what is None:
            return None
        n, j, u = (int(v) for v in idx)
        return self._n(f"{what}.t{j + 1}"), (n, u)

    def element_op(self, name: str, idx: tuple) -> str | None:
        """The op that wrote this element of a whole-sequence tensor (for explain): its time step's."""
        if name in (self._n("out"), self._n("c"), self._n("gates")):
            return f"forward {self.name} t{idx[1] + 1}"
        if name == self._n("grad_in"):
            return f"backward {self.name} t{idx[1] + 1}"
        return None

    def _local_pre(self, V, k: int, n: int, r: int) -> tuple[str, str, float, tuple]:
        """d(whatever pre.t<k>[n, r] feeds)/d pre: (symbol, source, value, upstream)."""
        raise NotImplementedError

    def grad_rule(self, wrt, idx, V):
        n_ = self._n
        idx = tuple(int(v) for v in idx)
        xname = self.spec.inputs[0]
        T = self.T
        if wrt in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            r = idx[0]
            src = xname if wrt == "weight_ih" else None
            x = V(xname)
            terms = []
            for k in range(1, T + 1):
                if wrt == "weight_hh" and k == 1:
                    continue                          # h₀ = 0
                pg = n_(f"pre.t{k}.grad")
                N = V(pg).shape[0]
                for n in range(N):
                    if wrt == "weight_ih":
                        f = Factor(f"∂{n_(f'pre.t{k}')}{ix((n, r))}/∂{n_(wrt)}{ix(idx)}",
                                   f"{src}{ix((n, k - 1, idx[1]))}", float(x[n, k - 1, idx[1]]))
                    elif wrt == "weight_hh":
                        hp = V(n_(f"h.t{k - 1}"))
                        f = Factor(f"∂{n_(f'pre.t{k}')}{ix((n, r))}/∂{n_(wrt)}{ix(idx)}",
                                   f"{n_(f'h.t{k - 1}')}{ix((n, idx[1]))}", float(hp[n, idx[1]]))
                    else:
                        f = Factor(f"∂{n_(f'pre.t{k}')}{ix((n, r))}/∂{n_(wrt)}{ix(idx)}", "1", 1.0)
                    terms.append(Term((f,), (pg, (n, r))))
            what = "every time step but t1 (h₀ = 0)" if wrt == "weight_hh" else "every time step"
            return Rule(f"BPTT: Σ over {what} and every sample", terms)
        if wrt == "grad_in":
            n, j, i = idx
            W = V(n_("weight_ih"))
            pg = n_(f"pre.t{j + 1}.grad")
            return Rule(f"Σ over the {W.shape[0]} rows of W_ih, at time step t{j + 1}", [Term(
                (Factor(f"∂{n_(f'pre.t{j + 1}')}{ix((n, r))}/∂{xname}{ix(idx)}", f"{n_('weight_ih')}{ix((r, i))}",
                        float(W[r, i])),), (pg, (n, r))) for r in range(W.shape[0])])
        what, _, tk = wrt.partition(".t")
        k = int(tk)
        n, u = idx
        if what == "h":                               # dh_t = grad_out[:, t] + Σ_r pre.t+1.grad · W_hh[r, u]
            terms = [Term((Factor(f"∂{n_('out')}{ix((n, k - 1, u))}/∂{n_(f'h.t{k}')}{ix(idx)}", "1", 1.0),),
                          (n_("grad_out"), (n, k - 1, u)))]
            if k < T:
                W = V(n_("weight_hh"))
                terms += [Term((Factor(f"∂{n_(f'pre.t{k + 1}')}{ix((n, r))}/∂{n_(f'h.t{k}')}{ix(idx)}",
                                       f"{n_('weight_hh')}{ix((r, u))}", float(W[r, u])),),
                               (n_(f"pre.t{k + 1}.grad"), (n, r))) for r in range(W.shape[0])]
                return Rule(f"two paths: the output path, h.t{k} is out[:, {k - 1}]; the recurrent path, time step "
                            f"t{k + 1} reads it through W_hh", terms)
            return Rule(f"one path, the output path: h.t{k} is out[:, {k - 1}] (the last time step: nothing comes "
                        f"back from later)", terms)
        return self.step_rule(what, k, n, u, V)

    def step_rule(self, what, k, n, u, V) -> Rule:
        raise KeyError(what)


class RNN(_Recurrent):
    type = "rnn"

    @property
    def _relu(self):
        return self.opts["nonlinearity"] == "relu"

    def forward_t(self, env, k, j):
        n_ = self._n
        a = self._pre(env, j)
        h = np.maximum(a, 0) if self._relu else np.tanh(a)
        env[n_(f"pre.t{j + 1}")] = a
        env[n_(f"h.t{j + 1}")] = h
        self._fill(env, n_("out"), j, h, j == 0, (self.H,))

    def backward_t(self, env, k, j):
        n_ = self._n
        dh = self._dh(env, j)
        if self._relu:
            da = dh * (env[n_(f"pre.t{j + 1}")] > 0).astype(dh.dtype)
        else:
            h = env[n_(f"h.t{j + 1}")]
            da = dh * (1.0 - h * h)
        env[n_(f"h.t{j + 1}.grad")] = dh
        env[n_(f"pre.t{j + 1}.grad")] = da
        self._param_grads(env, j, da)

    def step_value(self, what, k, n, u, V):
        if what != "h":
            return None
        a = self._pre_def(k, n, u, V)
        if self._relu:
            return Value(f"the hidden state: relu of its pre-activation a = pre.t{k}", X.vmax(a.ref, Lit(0)), [a])
        return Value(f"the hidden state: tanh of its pre-activation a = pre.t{k}", X.tanh(a.ref), [a])

    def step_rule(self, what, k, n, u, V):
        n_ = self._n
        if what != "pre":
            raise KeyError(what)
        if self._relu:
            a = float(V(n_(f"pre.t{k}"))[n, u])
            loc, src = (1.0 if a > 0 else 0.0), f"[{n_(f'pre.t{k}')}{ix((n, u))} > 0]"
        else:
            h = float(V(n_(f"h.t{k}"))[n, u])
            loc, src = 1.0 - h * h, f"1 − {n_(f'h.t{k}')}{ix((n, u))}²"
        return Rule("element-wise: upstream × the activation's derivative", [Term(
            (Factor(f"∂{n_(f'h.t{k}')}{ix((n, u))}/∂{n_(f'pre.t{k}')}{ix((n, u))}", src, loc),),
            (n_(f"h.t{k}.grad"), (n, u)))])


class LSTM(_Recurrent):
    type = "lstm"
    G = 4

    def forward_t(self, env, k, j):
        n_ = self._n
        H = self.H
        z = self._pre(env, j)
        i, f, o = _sigmoid(z[:, :H]), _sigmoid(z[:, H:2 * H]), _sigmoid(z[:, 3 * H:])
        g = np.tanh(z[:, 2 * H:3 * H])
        c = f * env[n_(f"c.t{j}")] + i * g if j > 0 else i * g
        h = o * np.tanh(c)
        gates = np.concatenate([i, f, g, o], axis=1)
        t = j + 1
        env[n_(f"pre.t{t}")] = z
        env[n_(f"gates.t{t}")] = gates
        env[n_(f"c.t{t}")] = c
        env[n_(f"h.t{t}")] = h
        first = j == 0
        self._fill(env, n_("out"), j, h, first, (H,))
        self._fill(env, n_("c"), j, c, first, (H,))
        self._fill(env, n_("gates"), j, gates, first, (4 * H,))

    def backward_t(self, env, k, j):
        n_ = self._n
        H = self.H
        t = j + 1
        G, c = env[n_(f"gates.t{t}")], env[n_(f"c.t{t}")]
        i, f, g, o = G[:, :H], G[:, H:2 * H], G[:, 2 * H:3 * H], G[:, 3 * H:]
        dh = self._dh(env, j)
        tc = np.tanh(c)
        dc = dh * o * (1.0 - tc * tc)
        if j < self.T - 1:
            dc = dc + env[n_(f"c.t{t + 1}.grad")] * env[n_(f"gates.t{t + 1}")][:, H:2 * H]
        df = dc * env[n_(f"c.t{j}")] if j > 0 else np.zeros_like(dc)
        dG = np.concatenate([dc * g, df, dc * i, dh * tc], axis=1)
        dz = dG * np.concatenate([i * (1.0 - i), f * (1.0 - f), 1.0 - g * g, o * (1.0 - o)], axis=1)
        env[n_(f"h.t{t}.grad")] = dh
        env[n_(f"c.t{t}.grad")] = dc
        env[n_(f"gates.t{t}.grad")] = dG
        env[n_(f"pre.t{t}.grad")] = dz
        self._param_grads(env, j, dz)

    def step_value(self, what, k, n, u, V):
        n_, H = self._n, self.H
        G = lambda j: el(V, n_(f"gates.t{k}"), (n, j))  # noqa: E731
        if what == "gates":
            b = u // H
            a = self._pre_def(k, n, u, V)
            gate = "ifgo"[b]
            act = X.tanh(a.ref) if b == 2 else X.sig(a.ref)
            return Value(f"gate {gate} (block {b} of i, f, g, o): {'tanh' if b == 2 else 'σ'} of its pre-activation "
                         f"a = pre.t{k}", act, [a])
        if what == "c":
            i, f, g = G(u), G(H + u), G(2 * H + u)
            if k == 1:
                return Value("the cell: i ⊙ g (c₀ = 0), i and g blocks 0 and 2 of the gates", i * g)
            return Value(f"the cell: f ⊙ c.t{k - 1} + i ⊙ g, with f, i, g blocks 1, 0 and 2 of the gates",
                         f * el(V, n_(f"c.t{k - 1}"), (n, u)) + i * g)
        if what == "h":
            return Value("the hidden state: o ⊙ tanh(c), o block 3 of the gates",
                         G(3 * H + u) * X.tanh(el(V, n_(f"c.t{k}"), (n, u))))
        return None

    def step_rule(self, what, k, n, u, V):
        n_ = self._n
        H = self.H
        G = V(n_(f"gates.t{k}"))
        at = lambda name, r: f"{n_(name)}{ix((n, r))}"  # noqa: E731
        if what == "c":                               # dc_t = dh_t·o·(1 − tanh²c_t) + dc_{t+1}·f_{t+1}
            c = float(V(n_(f"c.t{k}"))[n, u])
            o = float(G[n, 3 * H + u])
            tc = float(np.tanh(c))
            terms = [Term((Factor(f"∂{at(f'h.t{k}', u)}/∂{at(f'c.t{k}', u)}", f"{at(f'gates.t{k}', 3 * H + u)}·(1 − tanh²{at(f'c.t{k}', u)})", o * (1.0 - tc * tc)),),
                          (n_(f"h.t{k}.grad"), (n, u)))]
            how = "the path through h_t = o ⊙ tanh(c_t)"
            if k < self.T:
                fn = float(V(n_(f"gates.t{k + 1}"))[n, H + u])
                terms.append(Term((Factor(f"∂{at(f'c.t{k + 1}', u)}/∂{at(f'c.t{k}', u)}",
                                          at(f"gates.t{k + 1}", H + u), fn),), (n_(f"c.t{k + 1}.grad"), (n, u))))
                how = f"two paths: through h_t = o ⊙ tanh(c_t), and the cell path through c.t{k + 1} = f ⊙ c.t{k} + i ⊙ g"
            return Rule(how, terms)
        if what == "gates":
            b, v = divmod(u, H)
            if b == 3:                                # o: h = o·tanh(c)
                c = float(V(n_(f"c.t{k}"))[n, v])
                return Rule("the output gate: h_t = o ⊙ tanh(c_t)", [Term(
                    (Factor(f"∂{at(f'h.t{k}', v)}/∂{at(f'gates.t{k}', u)}", f"tanh {at(f'c.t{k}', v)}", float(np.tanh(c))),),
                    (n_(f"h.t{k}.grad"), (n, v)))])
            if b == 0:                                # i: c = f·c_prev + i·g
                val, src = float(G[n, 2 * H + v]), at(f"gates.t{k}", 2 * H + v)
            elif b == 2:                              # g
                val, src = float(G[n, v]), at(f"gates.t{k}", v)
            elif k > 1:                               # f
                val, src = float(V(n_(f"c.t{k - 1}"))[n, v]), at(f"c.t{k - 1}", v)
            else:
                val, src = 0.0, "c₀"
            return Rule(f"the {'ifg'[b] if b < 3 else 'o'} gate in c_t = f ⊙ c_(t−1) + i ⊙ g", [Term(
                (Factor(f"∂{at(f'c.t{k}', v)}/∂{at(f'gates.t{k}', u)}", src, val),), (n_(f"c.t{k}.grad"), (n, v)))])
        if what == "pre":
            b = u // H
            a = float(G[n, u])
            loc, src = ((1.0 - a * a), f"1 − {at(f'gates.t{k}', u)}²") if b == 2 else \
                (a * (1.0 - a), f"{at(f'gates.t{k}', u)}·(1 − {at(f'gates.t{k}', u)})")
            return Rule("element-wise: upstream × the gate's activation derivative", [Term(
                (Factor(f"∂{at(f'gates.t{k}', u)}/∂{at(f'pre.t{k}', u)}", src, loc),), (n_(f"gates.t{k}.grad"), (n, u)))])
        raise KeyError(what)


RNN_LAYERS = {c.type: c for c in (RNN, LSTM)}
