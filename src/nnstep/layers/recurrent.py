"""Recurrent layers (docs/scenario-format.md, "Recurrent layers"): ``rnn`` (torch's nn.RNN) and ``lstm``
(nn.LSTM), one layer, batch first, h0 = c0 = 0, the output every hidden state (N, T, hidden).

They step through time: the forward is one operation per time step, ``forward <layer> t1`` ...
``forward <layer> tT`` (T from the layer's input), and the backward one per time step in reverse,
``backward <layer> tT`` ... ``backward <layer> t1`` (backpropagation through time). ``t<k>`` is
time step k, counted from 1 as textbooks write x₁ … x_T after h₀ = 0: position k − 1 of the
time axis of the tensors.

Tensors of time step k, each (N, ·), written by its op:
  forward   <layer>.pre.t<k>   the pre-activation x_t W_ihᵀ + b_ih + h_{t−1} W_hhᵀ + b_hh
                               ((N, H); lstm: (N, 4H), the gates before their activations)
            <layer>.gates.t<k> lstm: the gates after their activations, [i | f | g | o]
            <layer>.c.t<k>     lstm: the cell state
            <layer>.h.t<k>     the hidden state (= out[:, k − 1])
  backward  <layer>.h.t<k>.grad      dLoss/dh_t: grad_out[:, k − 1] plus what time step k + 1 sends back
            <layer>.c.t<k>.grad      lstm: dLoss/dc_t, through h_t and through c_{t+1}
            <layer>.gates.t<k>.grad  lstm: dLoss/d(the activated gates)
            <layer>.pre.t<k>.grad    dLoss/d(the pre-activation)
The whole-sequence tensors ``<layer>.out`` (and for lstm ``<layer>.c``, ``<layer>.gates``, (N, T, ·))
are filled in one time step per forward op; the parameters' gradients and ``<layer>.grad_in`` sum
up (or fill in) one time step per backward op, complete after ``backward <layer> t1``.

Each derivative is written twice, vectorized (the backward_t methods) and for one element (grad_rule,
for explain). The element rules expand a gradient one time step at a time: dLoss/dh_t into
grad_out[:, t] and what time step t + 1 sends back, the parameters' gradients into a sum over every
time step and sample.
"""
from __future__ import annotations

import numpy as np

from nnstep.layers import (Def, F, Factor, Layer, Lit, Option, OptionError, Ref, Rule, ShapeError, Step, Sym, Term, Value,
                           el, expr as X, fmt_shape, ix, shown, total)

PARAMS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


class Recurrent(Layer):
    """The family's base (no type of its own): ``n_gates`` blocks of ``hidden`` in the pre-activation."""
    params = PARAMS
    symbols = {"weight_ih": "W_ih", "weight_hh": "W_hh", "bias_ih": "b_ih", "bias_hh": "b_hh"}
    bias_params = ("bias_ih", "bias_hh")
    init = {p: "recurrent" for p in PARAMS}      # torch: every parameter uniform(−1/√H, 1/√H)
    n_gates = 1

    @classmethod
    def shapes(cls, opts, in_shapes):
        s = tuple(in_shapes[0])
        if len(s) != 2:
            raise ShapeError(f"{cls.type} expects input (N, T, I): a per-sample shape of 2 dims (time steps, "
                             f"features), got {fmt_shape(s)}")
        T, I = s
        H = opts["hidden"]
        G = cls.n_gates * H
        P = {"weight_ih": (G, I), "weight_hh": (G, H)}
        if opts.get("bias", True):
            P.update({"bias_ih": (G,), "bias_hh": (G,)})
        return (T, H), dict(sorted(P.items(), key=lambda kv: PARAMS.index(kv[0])))

    @classmethod
    def fans(cls, opts, in_shape):
        return opts["hidden"], opts["hidden"]        # the "recurrent" init's bound is 1/√fan_in = 1/√H

    # the tensors of each time step, (N, width in units of hidden), as the forward op writes them
    STEP_TENSORS: tuple[tuple[str, int], ...] = (("pre", 1), ("h", 1))

    @classmethod
    def intermediates(cls, opts, in_shapes, out_shape):
        """Each time step's tensors (each at most the size of a whole-sequence one; lstm's
        whole-sequence c and gates, (N, T, H) and (N, T, 4H), are the largest)."""
        T, H = in_shapes[0][0], opts["hidden"]
        steps = [(f"{what}.t1 … {what}.t{T}", (w * H,), T) for what, w in cls.STEP_TENSORS]
        if cls.n_gates == 4:
            return [("gates", (T, 4 * H), 1), ("c", (T, H), 1)] + steps
        return steps

    @classmethod
    def _refs(cls, L, n, k: int) -> dict:
        t = L.t
        j = k - 1
        return dict(x=Ref(n.x.name, "input", take=(1, j)), out=n.out, g=Ref(n.g.name, "upstream", take=(1, j)),
                    gin=n.gin, ginj=Ref(n.gin.name, "grad_in", take=(1, j)), Wih=n.p("weight_ih"), Whh=n.p("weight_hh"), bih=n.p("bias_ih"), bhh=n.p("bias_hh"),
                    Wihg=n.pg("weight_ih"), Whhg=n.pg("weight_hh"), bihg=n.pg("bias_ih"), bhhg=n.pg("bias_hh"),
                    pre=Ref(t(f"pre.t{k}"), "result"), h=Ref(t(f"h.t{k}"), "result"), hp=Ref(t(f"h.t{k - 1}"), "input"),
                    hg=Ref(t(f"h.t{k}.grad"), "grad"), pg=Ref(t(f"pre.t{k}.grad"), "grad"),
                    pgn=Ref(t(f"pre.t{k + 1}.grad"), "upstream"))

    @classmethod
    def _pre_clause(cls, L, k) -> str:
        b = L.has("bias_ih")
        return ("{pre} = {x} @ {Wih}ᵀ" + (" + {bih}" if b else "") + (" + {hp} @ {Whh}ᵀ" if k > 1 else "")
                + (" + {bhh}" if b else "") + ("   (h₀ is 0: no recurrent term)" if k == 1 else ""))

    @classmethod
    def _fwd_ins(cls, L, n, k, extra=()):
        t = L.t
        ins = [(n.x.name, "input")]
        if k > 1:
            ins.append((t(f"h.t{k - 1}"), "input"))
        ins += list(extra)
        ins += [(t(p), "param") for p in ("weight_ih", "bias_ih") if L.has(p)]
        if k > 1:
            ins.append((t("weight_hh"), "param"))
        if L.has("bias_hh"):
            ins.append((t("bias_hh"), "param"))
        return ins

    @classmethod
    def _param_grads(cls, L, n, k, T) -> tuple[list[str], list, list]:
        """The clauses summing time step k into the parameters' gradients, what they read and write."""
        t = L.t
        acc = k < T                     # backward runs tT first: that op starts the sums
        clauses = ["{Wihg} = " + ("{Wihg} + " if acc else "") + "{pg}ᵀ @ {x}"]
        outs = [(t("weight_ih.grad"), "grad_param")]
        ins = [(t("weight_ih.grad"), "grad_param")] if acc else []
        if k > 1:
            clauses.append("{Whhg} = " + ("{Whhg} + " if acc else "") + "{pg}ᵀ @ {hp}")
            outs.append((t("weight_hh.grad"), "grad_param"))
            ins += [(t("weight_hh.grad"), "grad_param")] if acc else []
        elif T == 1:
            clauses.append("{Whhg} = 0   (h₀ is 0, and there is no other time step)")
            outs.append((t("weight_hh.grad"), "grad_param"))
        else:
            clauses.append("(h₀ is 0: W_hh gets nothing from t1, its gradient is complete)")
        if L.has("bias_ih"):
            for b in ("bih", "bhh"):
                clauses.append("{%sg} = " % b + ("{%sg} + " % b if acc else "") + "Σₙ {pg}")
            names = (t("bias_ih.grad"), t("bias_hh.grad"))
            outs += [(nm, "grad_param") for nm in names]
            ins += [(nm, "grad_param") for nm in names] if acc else []
        clauses.append("{ginj} = {pg} @ {Wih}")
        outs.append((n.gin.name, "grad_in"))
        ins += [(n.gin.name, "grad_in")] if acc else []
        return clauses, ins, outs

    @classmethod
    def _bwd_ins(cls, L, n, k, T):
        t = L.t
        ins = [(n.g.name, "upstream")]
        if k < T:
            ins.append((t(f"pre.t{k + 1}.grad"), "upstream"))
        return ins

    @classmethod
    def _hg_clause(cls, k, T) -> str:
        if k < T:
            return "{hg} = {g} + {pgn} @ {Whh}   (output path + recurrent path)"
        return "{hg} = {g}   (output path only: nothing comes back from later)"

    @classmethod
    def _paths(cls, L, n, k, T) -> str:
        """A remark naming the paths a time step's gradient takes, in words and names only (it
        stays symbolic where the clauses show their numbers)."""
        t = L.t
        out = f"{n.g.name}[:, {k - 1}]"
        if k == T:
            return (f"(one path reaches {t(f'h.t{k}')} at the last time step: the output path, {out}, "
                    f"from the loss through {t('out')}[:, {k - 1}]" + cls._cell_paths(L, k, last=True) + ")")
        return (f"(two paths reach {t(f'h.t{k}')}: the output path, {out}, from the loss through "
                f"{t('out')}[:, {k - 1}], and the recurrent path, {t(f'pre.t{k + 1}.grad')} @ {t('weight_hh')}, "
                f"back from time step t{k + 1}" + cls._cell_paths(L, k) + ")")

    @classmethod
    def _cell_paths(cls, L, k, last=False) -> str:
        return ""

    @classmethod
    def check_size(cls, name, opts, in_shape, out_shape, batch, smallest, limits):
        """Each time step's op writes a new (N, T, ·) array (values are never changed in place):
        N·T²·width elements per forward pass, width = hidden (lstm: out, c and gates, 6·hidden)."""
        T, H = in_shape[0], opts["hidden"]
        width = "hidden" if cls.n_gates == 1 else "6·hidden"
        work = batch * T * T * (H if cls.n_gates == 1 else 6 * H)
        if work > limits.MAX_RECURRENT_WORK:
            raise OptionError(None, f"{name} over {T} time steps would copy {shown(work)} elements per batch, filling "
                                    f"its (N, T, ·) tensors one time step at a time (N·T²·{width}), over the limit of "
                                    f"{limits.MAX_RECURRENT_WORK} (use fewer time steps or a smaller batch_size)")

    @classmethod
    def layout(cls, param, opts):
        """torch's layouts, the gates stacked i, f, g, o for an LSTM."""
        G = "4·hidden" if cls.n_gates == 4 else "hidden"
        lay = {"weight_ih": f" ({G}, input features)", "weight_hh": f" ({G}, hidden)"}.get(param, f" ({G},)")
        return lay + (", the gates i, f, g, o stacked" if cls.n_gates == 4 else "")

    @classmethod
    def torch_module(cls, L):
        o = L.options
        bias = "" if o["bias"] else ", bias=False"
        nl = f', nonlinearity="{o["nonlinearity"]}"' if "nonlinearity" in o else ""
        return (f"nn.{cls.type.upper()}({L.in_shape[-1]}, {o['hidden']}{nl}{bias}, batch_first=True)",
                "one layer, h0 = 0" + (" and c0 = 0" if cls.n_gates == 4 else "") + "; its output: every hidden state")

    @classmethod
    def torch_forward(cls, L, ins, me, out):
        return [f"{out}, _ = {me}({ins[0]})"]

    @classmethod
    def torch_param(cls, L, param, me):
        return f"{me}.{param}_l0"                 # torch numbers the layers of a stacked RNN: this is layer 0

    G = 1

    def __init__(self, spec):
        super().__init__(spec)
        self.T, self.I = self.in_shape
        self.H = self.opts["hidden"]

    @property
    def _bias(self) -> bool:
        return self.has("bias_ih")

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
        x = env[self.x][:, j]
        ig = x @ env[self.t("weight_ih")].T
        if self._bias:
            ig = ig + env[self.t("bias_ih")]
        if j > 0:
            hg = env[self.t(f"h.t{j}")] @ env[self.t("weight_hh")].T
            if self._bias:
                hg = hg + env[self.t("bias_hh")]
            return ig + hg
        return ig + env[self.t("bias_hh")] if self._bias else ig

    # --- backward: the parameters' sums and grad_in, shared ------------------------------------------
    def _add_param_grads(self, env, j, da):
        """Add time step j's share to the parameters' gradients (tT starts them) and fill grad_in."""
        acc = j < self.T - 1
        x = env[self.x][:, j]
        n_ = self.t

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
        g = env[self.t("grad_out")][:, j]
        if j < self.T - 1:
            return g + env[self.t(f"pre.t{j + 2}.grad")] @ env[self.t("weight_hh")]
        return np.ascontiguousarray(g)

    # --- one element ---------------------------------------------------------------------------------
    def _pre_value(self, k: int, n: int, r: int, V) -> Value:
        """pre.t<k>[n, r] = Σ_i x[n, t, i]·W_ih[r, i] + Σ_u h.t<k−1>[n, u]·W_hh[r, u] + b_ih[r] + b_hh[r]."""
        x, n_ = self.x, self.t
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
        return Def("a", self._pre_value(k, n, r, V).expr, el(V, self.t(f"pre.t{k}"), (n, r)))

    def element_alias(self, name: str, idx: tuple):
        """An element of out / c / gates as the time step's own tensor: out[n, t, u] is h.t<t+1>[n, u]."""
        what = {self.t("out"): "h", self.t("c"): "c", self.t("gates"): "gates"}.get(name)
        if what is None:
            return None
        n, j, u = (int(v) for v in idx)
        return self.t(f"{what}.t{j + 1}"), (n, u)

    def element_op(self, name: str, idx: tuple) -> str | None:
        """The op that wrote this element of a whole-sequence tensor (for explain): its time step's."""
        if name in (self.t("out"), self.t("c"), self.t("gates")):
            return f"forward {self.name} t{idx[1] + 1}"
        if name == self.t("grad_in"):
            return f"backward {self.name} t{idx[1] + 1}"
        return None

    def grad_rule(self, wrt, idx, V):
        n_ = self.t
        idx = tuple(int(v) for v in idx)
        xname = self.x
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


class RNN(Recurrent):
    """nn.RNN(I, hidden, nonlinearity, bias, batch_first=True), one layer, h0 = 0."""
    type = "rnn"
    torch_modules = ("RNN",)
    onnx_ops = ("RNN",)
    options = {"hidden": Option(kind="posint"), "nonlinearity": Option("tanh", "choice:tanh|relu"), "bias": Option(True, "bool")}

    @classmethod
    def forward_steps(cls, L, n):
        T = L.in_shape[0]
        t = L.t
        relu = L.options["nonlinearity"] == "relu"
        steps = []
        for k in range(1, T + 1):
            r = cls._refs(L, n, k)
            act = "max({pre}, 0)" if relu else "tanh({pre})"
            ins = cls._fwd_ins(L, n, k) + ([(n.out.name, "input")] if k > 1 else [])
            outs = [(t(f"pre.t{k}"), "result"), (t(f"h.t{k}"), "result"), (n.out.name, "result")]
            f = F(cls._pre_clause(L, k) + ";  {h} = " + act + ";  (stored as {out}[:, %d])" % (k - 1), **r)
            steps.append(Step(f"t{k}", "forward_t", tuple(ins), tuple(outs), f, arg=k - 1))
        return steps

    @classmethod
    def backward_steps(cls, L, n):
        T = L.in_shape[0]
        t = L.t
        relu = L.options["nonlinearity"] == "relu"
        steps = []
        for k in range(T, 0, -1):
            r = cls._refs(L, n, k)
            pclauses, pins, pouts = cls._param_grads(L, n, k, T)
            local = "[{pre} > 0]   (0 at 0, as torch)" if relu else "(1 − {h}²)"
            ins = cls._bwd_ins(L, n, k, T) + [(t(f"pre.t{k}") if relu else t(f"h.t{k}"), "input"), (n.x.name, "input")]
            ins += [(t(f"h.t{k - 1}"), "input")] if k > 1 else []
            ins += [(t("weight_hh"), "param")] if k < T else []
            ins += [(t("weight_ih"), "param")] + pins
            outs = [(t(f"h.t{k}.grad"), "grad"), (t(f"pre.t{k}.grad"), "grad")] + pouts
            f = F(";  ".join([cls._paths(L, n, k, T), cls._hg_clause(k, T), "{pg} = {hg} ⊙ " + local] + pclauses), **r)
            steps.append(Step(f"t{k}", "backward_t", tuple(ins), tuple(outs), f, arg=k - 1))
        return steps

    @property
    def _relu(self):
        return self.opts["nonlinearity"] == "relu"

    def forward_t(self, env, k, j):
        n_ = self.t
        a = self._pre(env, j)
        h = np.maximum(a, 0) if self._relu else np.tanh(a)
        env[n_(f"pre.t{j + 1}")] = a
        env[n_(f"h.t{j + 1}")] = h
        self._fill(env, n_("out"), j, h, j == 0, (self.H,))

    def backward_t(self, env, k, j):
        n_ = self.t
        dh = self._dh(env, j)
        if self._relu:
            da = dh * (env[n_(f"pre.t{j + 1}")] > 0).astype(dh.dtype)
        else:
            h = env[n_(f"h.t{j + 1}")]
            da = dh * (1.0 - h * h)
        env[n_(f"h.t{j + 1}.grad")] = dh
        env[n_(f"pre.t{j + 1}.grad")] = da
        self._add_param_grads(env, j, da)

    def step_value(self, what, k, n, u, V):
        if what != "h":
            return None
        a = self._pre_def(k, n, u, V)
        if self._relu:
            return Value(f"the hidden state: relu of its pre-activation a = pre.t{k}", X.vmax(a.ref, Lit(0)), [a])
        return Value(f"the hidden state: tanh of its pre-activation a = pre.t{k}", X.tanh(a.ref), [a])

    def step_rule(self, what, k, n, u, V):
        n_ = self.t
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


class LSTM(Recurrent):
    """nn.LSTM(I, hidden, bias, batch_first=True), one layer, h0 = c0 = 0; gates i, f, g, o."""
    type = "lstm"
    torch_modules = ("LSTM",)
    onnx_ops = ("LSTM",)
    options = {"hidden": Option(kind="posint"), "bias": Option(True, "bool")}
    n_gates = 4
    STEP_TENSORS = (("pre", 4), ("gates", 4), ("c", 1), ("h", 1))

    @classmethod
    def _cell_paths(cls, L, k, last=False) -> str:
        t = L.t
        if last:
            return f", and one reaches {t(f'c.t{k}')}: through {t(f'h.t{k}')}"
        return (f", and two reach {t(f'c.t{k}')}: through {t(f'h.t{k}')} (o ⊙ tanh of the cell), and the cell path, "
                f"{t(f'c.t{k + 1}.grad')} times the next forget gate f₊₁")

    @classmethod
    def _refs(cls, L, n, k):
        r = super()._refs(L, n, k)
        t = L.t
        H = L.options["hidden"]
        gates = Ref(t(f"gates.t{k}"), "result")
        for j, s in enumerate("ifgo"):          # the four gates, as symbols that show their numbers
            r["s" + s] = Sym(s, Ref(gates.name, "result", take=(1, j * H, (j + 1) * H)))
        r["sfn"] = Sym("f₊₁", Ref(t(f"gates.t{k + 1}"), "input", take=(1, H, 2 * H)))
        r.update(G=gates, c=Ref(t(f"c.t{k}"), "result"), cp=Ref(t(f"c.t{k - 1}"), "input"),
                 Gn=Ref(t(f"gates.t{k + 1}"), "input"), C=Ref(t("c"), "result"), GG=Ref(t("gates"), "result"),
                 cg=Ref(t(f"c.t{k}.grad"), "grad"), cgn=Ref(t(f"c.t{k + 1}.grad"), "upstream"),
                 Gg=Ref(t(f"gates.t{k}.grad"), "grad"))
        return r

    @classmethod
    def forward_steps(cls, L, n):
        T = L.in_shape[0]
        t = L.t
        steps = []
        for k in range(1, T + 1):
            r = cls._refs(L, n, k)
            j = k - 1
            extra = [(t(f"c.t{k - 1}"), "input")] if k > 1 else []
            ins = cls._fwd_ins(L, n, k, extra)
            if k > 1:
                ins += [(n.out.name, "input"), (t("c"), "input"), (t("gates"), "input")]
            outs = [(t(f"pre.t{k}"), "result"), (t(f"gates.t{k}"), "result"), (t(f"c.t{k}"), "result"),
                    (t(f"h.t{k}"), "result"), (n.out.name, "result"), (t("c"), "result"), (t("gates"), "result")]
            cell = "{c} = {sf} ⊙ {cp} + {si} ⊙ {sg}" if k > 1 else "{c} = {si} ⊙ {sg}   (c₀ is 0)"
            f = F(cls._pre_clause(L, k) + ";  {G} = [σ | σ | tanh | σ]({pre}), block by block: i, f, g, o"
                  ";  " + cell + ";  {h} = {so} ⊙ tanh({c})"
                  ";  (i, f, g, o: the four H-wide blocks of %s, in torch's order, stored at time position "
                  "%d of %s, %s and %s)" % (t(f"gates.t{k}"), j, t("out"), t("c"), t("gates")), **r)
            steps.append(Step(f"t{k}", "forward_t", tuple(ins), tuple(outs), f, arg=j))
        return steps

    @classmethod
    def backward_steps(cls, L, n):
        T = L.in_shape[0]
        t = L.t
        steps = []
        for k in range(T, 0, -1):
            r = cls._refs(L, n, k)
            pclauses, pins, pouts = cls._param_grads(L, n, k, T)
            ins = cls._bwd_ins(L, n, k, T)
            if k < T:
                ins += [(t(f"c.t{k + 1}.grad"), "upstream"), (t(f"gates.t{k + 1}"), "input")]
            ins += [(t(f"gates.t{k}"), "input"), (t(f"c.t{k}"), "input")]
            ins += [(t(f"c.t{k - 1}"), "input"), (t(f"h.t{k - 1}"), "input")] if k > 1 else []
            ins += [(n.x.name, "input")] + ([(t("weight_hh"), "param")] if k < T else []) + [(t("weight_ih"), "param")]
            ins += pins
            outs = [(t(f"h.t{k}.grad"), "grad"), (t(f"c.t{k}.grad"), "grad"), (t(f"gates.t{k}.grad"), "grad"),
                    (t(f"pre.t{k}.grad"), "grad")] + pouts
            cg = "{cg} = {hg} ⊙ {so} ⊙ (1 − tanh({c})²)" + (" + {cgn} ⊙ {sfn}   (through h + cell path)" if k < T
                                                            else "   (through h only)")
            fg = "{cg} ⊙ {cp}" if k > 1 else "0"
            note = (f"(i, f, g, o: the blocks of {t(f'gates.t{k}')}" + (f", f₊₁ the forget gate of {t(f'gates.t{k + 1}')}"
                                                                       if k < T else "")
                    + (", and c₀ is 0, so f gets no gradient at t1" if k == 1 else "") + ")")
            f = F(";  ".join([cls._paths(L, n, k, T), cls._hg_clause(k, T), cg,
                              "{Gg} = [{cg} ⊙ {sg} | " + fg + " | {cg} ⊙ {si} | {hg} ⊙ tanh({c})]",
                              "{pg} = {Gg} ⊙ [{si}(1 − {si}) | {sf}(1 − {sf}) | 1 − {sg}² | {so}(1 − {so})]", note]
                             + pclauses), **r)
            steps.append(Step(f"t{k}", "backward_t", tuple(ins), tuple(outs), f, arg=k - 1))
        return steps

    G = 4

    def forward_t(self, env, k, j):
        n_ = self.t
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
        n_ = self.t
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
        self._add_param_grads(env, j, dz)

    def step_value(self, what, k, n, u, V):
        n_, H = self.t, self.H
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
        n_ = self.t
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
