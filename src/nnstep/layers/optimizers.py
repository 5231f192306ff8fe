"""Optimizers, each one class: torch.optim's ``sgd``, ``adam``, ``adamw`` and ``rmsprop``, one
parameter at a time, out of place (``W = W − lr·g``, never ``W −= ...``: the old value stays valid
for the debugger); and torch's ``clip_grad_norm_``, which every optimizer takes
(``[optimizer] clip_grad_norm``), in an op of its own at the start of the update stage.

An optimizer type declares its options, the state it keeps between steps and writes (suffixes of
the parameter's name: ``linear1.weight.buf``), the formula of ``update P``, the update, one element
of it for explain, and its torch equivalent. ``[optimizer.schedule]`` is in :mod:`.schedules`.
"""
from __future__ import annotations

import math

import numpy as np

from nnstep.layers import Const, F, Formula, Option, OptionError, Ref, StepPow, Sym, exact

CLIP_OP = "clip grad norm"

# every optimizer takes these: clipping before the update, and [optimizer.schedule]
COMMON = {"clip_grad_norm": Option(None, "posfloat", "clip the gradients' total 2-norm to this (torch's clip_grad_norm_)"),
          "schedule": Option(None, "table", "a learning-rate schedule ([optimizer.schedule])")}


def _lerp(a, b, w):
    """torch.lerp(a, b, w): a + w·(b − a) for |w| < 0.5, else b − (b − a)·(1 − w)."""
    return a + w * (b - a) if abs(w) < 0.5 else b - (b - a) * (1 - w)


def _zeros(state, key, like):
    v = state.get(key)
    return np.zeros_like(like) if v is None else v


def grad_for_update(opt, P: str) -> str:
    """The gradient the update of P reads: clipped when [optimizer] clip_grad_norm is set (``P.grad``
    stays the raw gradient)."""
    return f"{P}.grad.clipped" if opt.clip_grad_norm is not None else f"{P}.grad"


class Optimizer:
    """An optimizer type. ``spec`` is the scenario's OptimizerSpec (every option by name)."""
    type: str = ""
    options: dict[str, Option] = {}
    torch_class: str = ""
    state_labels: dict[str, str] = {"lr": "lr in force"}    # a state tensor's label on screen, by suffix

    def __init__(self, spec):
        self.spec = spec

    def state(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(state kept from step to step, every state tensor the update op writes), as suffixes."""
        return (), ()

    def zero_state(self) -> tuple[str, ...]:
        """The state that starts as zeros before step 1, as torch's; the rest starts at the first
        step (SGD's momentum buffer is the first gradient)."""
        return ()

    def update(self, t: int, p: np.ndarray, grad: np.ndarray, state: dict, lr: float | None = None):
        """(new p, {suffix: value written}): step ``t`` (from 1) of the update of ``p`` by its
        gradient; ``state`` maps suffix -> previous value; ``lr`` the learning rate in force (a
        schedule's), else the optimizer's."""
        raise NotImplementedError

    def formula(self, P: str) -> Formula:
        """``update P``'s formula."""
        raise NotImplementedError

    def value_rule(self, P: str, name: str, idx, V, t: int):
        """One element of what ``update P`` writes (the new P, its delta, the state), from the
        elements it read. ``V(n)`` reads as the op read (the old P and state), ``V.out(n)`` as it
        wrote."""
        raise NotImplementedError

    @classmethod
    def check_options(cls, opts: dict) -> None:
        """Options that contradict each other: OptionError."""

    def torch_kwargs(self) -> list[str]:
        """The keyword arguments of ``torch.optim.<torch_class>`` besides lr."""
        return []

    # --- shared by the formulas and the element rules -----------------------------------------------
    def _kw(self, P: str) -> dict:
        opt = self.spec
        lr = Ref("lr", "state") if opt.schedule is not None else Const("lr", opt.lr)
        return dict(P=Ref(P, "old"), Pn=Ref(P, "new"), G=Ref(grad_for_update(opt, P), "grad_param"), lr=lr,
                    wd=Const("λ", opt.weight_decay), g=Sym("g"))

    def _elements(self, P, name, idx, V):
        """(idx, suffix, new(s), old(s), w, G, lr): the pieces of an element rule."""
        from nnstep.layers.expr import El, K, el
        opt = self.spec
        idx = tuple(int(i) for i in idx)
        suffix = name[len(P) + 1:] if name != P else ""
        new = lambda s: el(V.out, f"{P}.{s}", idx)                    # noqa: E731  (a state as written)
        old = lambda s: (El(f"{P}.{s}", idx, V.old(f"{P}.{s}")[idx], "before")  # noqa: E731
                         if V.old(f"{P}.{s}") is not None else None)
        w = El(P, idx, np.asarray(V(P))[idx], "before")                 # the parameter before the update
        G = el(V, grad_for_update(opt, P), idx)
        lr = K("lr", opt.lr) if opt.schedule is None else El("lr", (), V("lr"))
        return idx, suffix, new, old, w, G, lr

    def _decayed_grad(self, w, G):
        """g = grad + λ·P (torch's weight decay, L2), as a Def, or the gradient itself."""
        from nnstep.layers.expr import Def, K
        if self.spec.weight_decay:
            g = Def("g", G + K("λ", self.spec.weight_decay) * w)
            return g.ref, [g]
        return G, []

    def _delta(self, P, idx, V, w):
        from nnstep.layers.expr import El, Value
        return Value("the change the update made: new − old", El(P, idx, np.asarray(V.out(P))[idx], "after") - w)


class SGD(Optimizer):
    """torch.optim.SGD: momentum (the buffer starts at the first gradient), dampening, Nesterov,
    weight decay (L2, added to the gradient)."""
    type = "sgd"
    options = {"lr": Option(0.001, "nonnegfloat"), "momentum": Option(0.0, "nonnegfloat"),
               "dampening": Option(0.0, "float"), "nesterov": Option(False, "bool"),
               "weight_decay": Option(0.0, "nonnegfloat"), **COMMON}
    torch_class = "SGD"
    state_labels = {**Optimizer.state_labels, "buf": "momentum buf"}

    def state(self):
        return (("buf",), ("buf",)) if self.spec.momentum != 0 else ((), ())

    @classmethod
    def check_options(cls, opts):
        if opts["nesterov"] and (opts["momentum"] <= 0 or opts["dampening"] != 0):
            raise OptionError("nesterov", "nesterov needs momentum > 0 and dampening = 0 (as torch.optim.SGD)")

    def update(self, t, p, grad, state, lr=None):
        opt = self.spec
        lr = opt.lr if lr is None else float(lr)
        g = grad + opt.weight_decay * p if opt.weight_decay else grad
        if opt.momentum:
            b_old = state.get("buf")
            buf = g if b_old is None else opt.momentum * b_old + (1 - opt.dampening) * g
            d = g + opt.momentum * buf if opt.nesterov else buf
            return p - lr * d, {"buf": buf}
        return p - lr * g, {}

    def formula(self, P):
        opt, kw = self.spec, self._kw(P)
        pre, g = ("{g} = {G} + {wd}·{P};  ", "{g}") if opt.weight_decay else ("", "{G}")
        if opt.momentum:
            kw.update(buf=Ref(f"{P}.buf", "state"), mu=Const("μ", opt.momentum), tau=Const("τ", opt.dampening))
            damp = "(1 − {tau})·" if opt.dampening else ""
            step = "(" + g + " + {mu}·{buf})" if opt.nesterov else "{buf}"
            return F(pre + "{buf} = " + g + " at step 1, else {mu}·{buf} + " + damp + g + ";  "
                     "{Pn} ← {P} − {lr}·" + step, **kw)
        if opt.weight_decay:
            return F(pre + "{Pn} ← {P} − {lr}·{g}", **kw)
        return F("{Pn} ← {P} − {lr}·{G}", **kw)

    def value_rule(self, P, name, idx, V, t):
        from nnstep.layers.expr import K, Value
        opt = self.spec
        idx, suffix, new, old, w, G, lr = self._elements(P, name, idx, V)
        if suffix == "delta":
            return self._delta(P, idx, V, w)
        gr, where = self._decayed_grad(w, G)
        if opt.momentum:
            b0 = old("buf")
            if suffix == "buf":
                if b0 is None:
                    return Value("the momentum buffer starts at the first gradient", gr, where)
                return Value("the momentum buffer", K("μ", opt.momentum) * b0 + (1 - K("τ", opt.dampening)) * gr
                             if opt.dampening else K("μ", opt.momentum) * b0 + gr, where)
            if opt.nesterov:
                return Value("SGD with Nesterov momentum", w - lr * (gr + K("μ", opt.momentum) * new("buf")), where)
            return Value("SGD with momentum: a step of lr along the buffer", w - lr * new("buf"))
        return Value("SGD: a step of lr against the gradient", w - lr * gr, where)

    def torch_kwargs(self):
        opt, kw = self.spec, []
        if opt.momentum:
            kw.append(f"momentum={exact(opt.momentum)}")
        if opt.dampening:
            kw.append(f"dampening={exact(opt.dampening)}")
        if opt.nesterov:
            kw.append("nesterov=True")
        if opt.weight_decay:
            kw.append(f"weight_decay={exact(opt.weight_decay)}")
        return kw


class Adam(Optimizer):
    """torch.optim.Adam, single-tensor: exp_avg.lerp_(g, 1 − β1), exp_avg_sq·β2 + (1 − β2)·g², the
    bias corrections of step t, and weight decay (L2, added to the gradient). m and v start at 0,
    held from step 0 so the first update shows them."""
    type = "adam"
    options = {"lr": Option(0.001, "nonnegfloat"), "betas": Option((0.9, 0.999), "betas"),
               "eps": Option(1e-8, "nonnegfloat"), "weight_decay": Option(0.0, "nonnegfloat"), **COMMON}
    torch_class = "Adam"
    state_labels = {**Optimizer.state_labels, "m": "m (1st moment)", "v": "v (2nd moment)", "m_hat": "m̂ = m/(1−β1ᵗ)",
                    "v_hat": "v̂ = v/(1−β2ᵗ)"}

    def state(self):
        return ("m", "v"), ("m", "v", "m_hat", "v_hat")

    def zero_state(self):
        return ("m", "v")

    def update(self, t, p, grad, state, lr=None):
        opt = self.spec
        lr = opt.lr if lr is None else float(lr)
        g = grad + opt.weight_decay * p if opt.weight_decay else grad
        return self._adam(t, p, g, state, lr)

    def _adam(self, t, p, g, state, lr):
        b1, b2 = self.spec.betas
        # torch starts exp_avg and exp_avg_sq at zeros (the program holds them from step 0)
        m_old, v_old = _zeros(state, "m", g), _zeros(state, "v", g)
        # as torch's single-tensor Adam: exp_avg.lerp_(g, 1 − β1); exp_avg_sq.mul_(β2).addcmul_(g, g,
        # value=1 − β2). lerp(a, b, w) is a + w·(b − a) for |w| < 0.5, else b − (b − a)·(1 − w).
        m = _lerp(m_old, g, 1 - b1)
        v = v_old * b2 + (1 - b2) * g * g
        bc1 = 1 - b1 ** t
        bc2 = 1 - b2 ** t
        step_size = lr / bc1
        denom = np.sqrt(v) / math.sqrt(bc2) + self.spec.eps   # math.sqrt: a Python float keeps float32 float32
        new = p - step_size * (m / denom)
        return new, {"m": m, "v": v, "m_hat": m / bc1, "v_hat": v / bc2}

    def formula(self, P):
        opt, kw = self.spec, self._kw(P)
        b1, b2 = opt.betas
        decoupled = self.type == "adamw"
        pre = "{g} = {G} + {wd}·{P};  " if opt.weight_decay and not decoupled else "{g} = {G};  "
        start = "{P}"
        if decoupled:                          # the decay acts on the parameter, first
            kw["dec"] = Ref(f"{P}.decayed", "state")
            pre = "{dec} = {P}·(1 − {lr}·{wd});  " + pre
            start = "{dec}"
        kw.update(m=Ref(f"{P}.m", "state"), v=Ref(f"{P}.v", "state"), mh=Ref(f"{P}.m_hat", "state"),
                  vh=Ref(f"{P}.v_hat", "state"), b1=Const("β1", b1), b2=Const("β2", b2), eps=Const("ε", opt.eps),
                  t=StepPow())
        return F(pre + "{m} = {b1}·{m} + (1 − {b1})·{g};  {v} = {b2}·{v} + (1 − {b2})·{g}²;  "
                 "{mh} = {m} / (1 − {b1}{t});  {vh} = {v} / (1 − {b2}{t});  "
                 "{Pn} ← " + start + " − {lr}·{mh} / (√{vh} + {eps})", **kw)

    def value_rule(self, P, name, idx, V, t):
        from nnstep.layers import expr as X
        from nnstep.layers.expr import K, Value
        opt = self.spec
        idx, suffix, new, old, w, G, lr = self._elements(P, name, idx, V)
        if suffix == "delta":
            return self._delta(P, idx, V, w)
        gr, where = (G, []) if self.type == "adamw" else self._decayed_grad(w, G)
        b1, b2 = (K("β1", opt.betas[0]), K("β2", opt.betas[1]))
        rule = {
            "m": ("the first moment, a running average of g", lambda: b1 * old("m") + (1 - b1) * gr),
            "v": ("the second moment, a running average of g²", lambda: b2 * old("v") + (1 - b2) * X.sq(gr)),
            "m_hat": (f"m with the bias correction of step {t}", lambda: new("m") / (1 - X.Pow(b1, t))),
            "v_hat": (f"v with the bias correction of step {t}", lambda: new("v") / (1 - X.Pow(b2, t))),
            "decayed": ("AdamW's decoupled weight decay, first", lambda: w * (1 - lr * K("λ", opt.weight_decay))),
        }
        if suffix in rule:
            return Value(rule[suffix][0], rule[suffix][1](), where if suffix in ("m", "v") else [])
        start = new("decayed") if self.type == "adamw" else w
        return Value(f"{self.type}: a step of lr along m̂ / (√v̂ + ε)",
                     start - lr * new("m_hat") / (X.sqrt(new("v_hat")) + K("ε", opt.eps)))

    def torch_kwargs(self):
        opt = self.spec
        b1, b2 = opt.betas
        kw = [f"betas=({exact(b1)}, {exact(b2)})", f"eps={exact(opt.eps)}"]
        if opt.weight_decay or self.type == "adamw":       # AdamW's default (0.01) is written out too
            kw.append(f"weight_decay={exact(opt.weight_decay)}")
        return kw


class AdamW(Adam):
    """torch.optim.AdamW: the decoupled weight decay, param·(1 − lr·λ) first, then Adam's step on the
    raw gradient."""
    type = "adamw"
    options = {**Adam.options, "weight_decay": Option(0.01, "nonnegfloat")}
    torch_class = "AdamW"
    state_labels = {**Adam.state_labels, "decayed": "decayed P·(1−lr·λ)"}

    def state(self):
        return ("m", "v"), ("decayed", "m", "v", "m_hat", "v_hat")

    def update(self, t, p, grad, state, lr=None):
        opt = self.spec
        lr = opt.lr if lr is None else float(lr)
        decayed = p * (1 - lr * opt.weight_decay)
        new, w = self._adam(t, decayed, grad, state, lr)
        return new, {"decayed": decayed, **w}


class RMSprop(Optimizer):
    """torch.optim.RMSprop (single tensor): square_avg·α + (1 − α)·g²; centered: grad_avg.lerp_(g,
    1 − α) and avg = √(square_avg − grad_avg²); else √square_avg; + eps; momentum: buf·μ + g/avg,
    p − lr·buf; else p − lr·g/avg."""
    type = "rmsprop"
    options = {"lr": Option(0.01, "nonnegfloat"), "alpha": Option(0.99, "prob"), "eps": Option(1e-8, "nonnegfloat"),
               "momentum": Option(0.0, "nonnegfloat"), "centered": Option(False, "bool"),
               "weight_decay": Option(0.0, "nonnegfloat"), **COMMON}
    torch_class = "RMSprop"
    state_labels = {**Optimizer.state_labels, "buf": "momentum buf", "square_avg": "square avg of g²",
                    "grad_avg": "avg of g"}

    def state(self):
        opt = self.spec
        keep = ("square_avg",) + (("grad_avg",) if opt.centered else ()) + (("buf",) if opt.momentum else ())
        return keep, keep

    def zero_state(self):
        return self.state()[0]

    def update(self, t, p, grad, state, lr=None):
        opt = self.spec
        lr = opt.lr if lr is None else float(lr)
        g = grad + opt.weight_decay * p if opt.weight_decay else grad
        a = opt.alpha
        sq = _zeros(state, "square_avg", g) * a + (1 - a) * g * g
        out = {"square_avg": sq}
        if opt.centered:
            ga = _lerp(_zeros(state, "grad_avg", g), g, 1 - a)
            out["grad_avg"] = ga
            avg = np.sqrt(sq - ga * ga) + opt.eps
        else:
            avg = np.sqrt(sq) + opt.eps
        if opt.momentum:
            buf = _zeros(state, "buf", g) * opt.momentum + g / avg
            out["buf"] = buf
            return p - lr * buf, out
        return p - lr * (g / avg), out

    def formula(self, P):
        opt, kw = self.spec, self._kw(P)
        pre, g = ("{g} = {G} + {wd}·{P};  ", "{g}") if opt.weight_decay else ("", "{G}")
        kw.update(sq=Ref(f"{P}.square_avg", "state"), ga=Ref(f"{P}.grad_avg", "state"), buf=Ref(f"{P}.buf", "state"),
                  a=Const("α", opt.alpha), eps=Const("ε", opt.eps), mu=Const("μ", opt.momentum), avg=Sym("a"))
        body = "{sq} = {a}·{sq} + (1 − {a})·" + g + "²;  "
        if opt.centered:
            body += "{ga} = {a}·{ga} + (1 − {a})·" + g + ";  {avg} = √({sq} − {ga}²) + {eps};  "
        else:
            body += "{avg} = √{sq} + {eps};  "
        if opt.momentum:
            body += "{buf} = {mu}·{buf} + " + g + " / {avg};  {Pn} ← {P} − {lr}·{buf}"
        else:
            body += "{Pn} ← {P} − {lr}·" + g + " / {avg}"
        return F(pre + body, **kw)

    def value_rule(self, P, name, idx, V, t):
        from nnstep.layers import expr as X
        from nnstep.layers.expr import K, Lit, Value
        opt = self.spec
        idx, suffix, new, old, w, G, lr = self._elements(P, name, idx, V)
        if suffix == "delta":
            return self._delta(P, idx, V, w)
        gr, where = self._decayed_grad(w, G)
        a = K("α", opt.alpha)
        sq0, ga0 = old("square_avg"), old("grad_avg")
        if suffix == "square_avg":
            return Value("the running average of g²", (a * sq0 if sq0 is not None else Lit(0)) + (1 - a) * X.sq(gr), where)
        if suffix == "grad_avg":
            return Value("the running average of g (centered)", (a * ga0 if ga0 is not None else Lit(0)) + (1 - a) * gr,
                         where)
        avg = X.sqrt(new("square_avg") - X.sq(new("grad_avg")) if opt.centered else new("square_avg")) + K("ε", opt.eps)
        if opt.momentum:
            if suffix == "buf":
                b0 = old("buf")
                return Value("the momentum buffer of g / avg", (K("μ", opt.momentum) * b0 if b0 is not None else Lit(0))
                             + gr / avg, where)
            return Value("rmsprop with momentum: a step of lr along the buffer", w - lr * new("buf"))
        return Value("rmsprop: a step of lr along g / (√square_avg + ε)", w - lr * (gr / avg), where)

    def torch_kwargs(self):
        opt = self.spec
        kw = [f"alpha={exact(opt.alpha)}", f"eps={exact(opt.eps)}"]
        if opt.momentum:
            kw.append(f"momentum={exact(opt.momentum)}")
        if opt.centered:
            kw.append("centered=True")
        if opt.weight_decay:
            kw.append(f"weight_decay={exact(opt.weight_decay)}")
        return kw


# --- clip_grad_norm_, before any optimizer's updates ------------------------------------------------
def clip_grad_norm(grads: list[np.ndarray], max_norm: float):
    """torch.nn.utils.clip_grad_norm_(params, max_norm) (norm_type 2): the total norm is the 2-norm
    of the per-tensor 2-norms; clip_coef = max_norm / (total + 1e-6), clamped to at most 1, and every
    gradient is multiplied by it (even when it is 1). Returns (total, coef, clipped grads, their
    total norm)."""
    dt = grads[0].dtype if grads else np.dtype(np.float64)
    norms = [np.sqrt(np.sum(np.square(g, dtype=np.float64))) for g in grads]
    total = np.sqrt(np.sum(np.square(np.array(norms, dtype=np.float64))))
    coef = min(max_norm / (total + 1e-6), 1.0)
    clipped = [g * np.asarray(coef, dtype=g.dtype) for g in grads]
    after = np.sqrt(sum(float(np.sum(np.square(c, dtype=np.float64))) for c in clipped))
    return np.asarray(total, dtype=dt), np.asarray(coef, dtype=dt), clipped, np.asarray(after, dtype=dt)


def clip_formula(opt, params: list[str]) -> Formula:
    """torch.nn.utils.clip_grad_norm_(params, c): the op at the start of the update stage. Up to
    four parameters are written out one by one (so their numbers show), more as a sum over P."""
    kw = dict(N=Ref("grad_norm", "result"), c=Ref("clip_coef", "result"), Nc=Ref("clipped_norm", "result"),
              mx=Const("max_norm", opt.clip_grad_norm))
    if len(params) <= 4:
        for j, P in enumerate(params):
            kw[f"g{j}"] = Ref(f"{P}.grad", "grad_param")
            kw[f"k{j}"] = Ref(f"{P}.grad.clipped", "result")
        norm = " + ".join(f"‖{{g{j}}}‖²" for j in range(len(params)))
        after = " + ".join(f"‖{{k{j}}}‖²" for j in range(len(params)))
        each = "".join(f"{{k{j}}} = {{c}}·{{g{j}}};  " for j in range(len(params)))
        return F(f"{{N}} = √({norm});  {{c}} = min(1, {{mx}} / ({{N}} + 1e−6));  " + each
                 + f"{{Nc}} = √({after});  (the updates read the clipped gradients, P.grad stays the raw one)", **kw)
    return F(f"{{N}} = √(Σ_P ‖P.grad‖²)   (P: the {len(params)} trainable parameters);  "
             "{c} = min(1, {mx} / ({N} + 1e−6));  P.grad.clipped = {c}·P.grad   (every P, P.grad stays raw);  "
             "{Nc} = √(Σ_P ‖P.grad.clipped‖²)", **kw)


def clip_value_rule(opt, params: list[str], name: str, idx, V):
    """grad_norm, clip_coef, clipped_norm and each P.grad.clipped element, as clip_grad_norm."""
    from nnstep.layers import expr as X
    from nnstep.layers.expr import Def, El, K, Lit, Value, el, total

    idx = tuple(int(i) for i in idx)

    def norm(suffix: str, read):
        defs = []
        for P in params:
            g = f"{P}.{suffix}"
            a = np.asarray(read(g))
            at = lambda j, a=a: tuple(int(v) for v in np.unravel_index(j, a.shape))  # noqa: E731
            defs.append(Def(f"‖{g}‖²", X.Many(lambda j, a=a, g=g, at=at: X.sq(El(g, at(j), a[at(j)])),
                                               np.square(a, dtype=np.float64), more="square")))
        return defs, X.sqrt(total([d.ref for d in defs], "parameter"))

    if name in ("grad_norm", "clipped_norm"):
        defs, e = norm("grad" if name == "grad_norm" else "grad.clipped", V if name == "grad_norm" else V.out)
        what = "the 2-norm of every trainable gradient together" + (", after clipping" if name == "clipped_norm" else "")
        return Value(what, e, defs)
    N = el(V.out, "grad_norm", ())
    if name == "clip_coef":
        return Value("at most 1: max_norm over the norm, 1e−6 added to it as torch",
                     X.vmin(Lit(1), K("max_norm", opt.clip_grad_norm) / (N + Lit(1e-6, "1e−6"))))
    P = name[:-len(".grad.clipped")]
    return Value("the gradient times the clip factor", el(V.out, "clip_coef", ()) * el(V, f"{P}.grad", idx))
