"""The catalogue's recurrent layers (docs/scenario-format.md, "Recurrent layers"): `rnn` (torch's nn.RNN) and `lstm` (nn.LSTM), one
layer, batch first, h0 = c0 = 0, the output every hidden state (N, T, hidden).

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
"""
from __future__ import annotations

from .catalog import LayerType, ShapeError, Step, fmt_shape
from ..layers.formula import F, Ref, Sym

PARAMS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


class _Recurrent(LayerType):
    params = PARAMS
    symbols = {"weight_ih": "W_ih", "weight_hh": "W_hh", "bias_ih": "b_ih", "bias_hh": "b_hh"}
    bias_params = ("bias_ih", "bias_hh")
    init = {p: "recurrent" for p in PARAMS}      # torch: every parameter uniform(−1/√H, 1/√H)
    needs_in_grad_work = True
    n_gates = 1

    @classmethod
    def infer(cls, opts, in_shapes):
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


class RNN(_Recurrent):
    """nn.RNN(I, hidden, nonlinearity, bias, batch_first=True), one layer, h0 = 0."""
    type = "rnn"
    options = {"hidden": (None, "posint"), "nonlinearity": ("tanh", "choice:tanh|relu"), "bias": (True, "bool")}

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


class LSTM(_Recurrent):
    """nn.LSTM(I, hidden, bias, batch_first=True), one layer, h0 = c0 = 0; gates i, f, g, o."""
    type = "lstm"
    options = {"hidden": (None, "posint"), "bias": (True, "bool")}
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


RNN_LAYERS = {c.type: c for c in (RNN, LSTM)}
