"""torch.optim.SGD, Adam, AdamW and RMSprop, one parameter at a time, out of place; torch's
clip_grad_norm_ and the four learning-rate schedules (StepLR, ExponentialLR, CosineAnnealingLR,
LinearLR) in their recursive ("chainable") form, as their ``step()`` computes them.

Each update returns the new parameter and the optimizer state it used and wrote, by name suffix
(the names are the catalogue's, model.catalog.optimizer_state), so the screen can show the momentum
buffer or Adam's m, v and bias corrections.
"""
from __future__ import annotations

import math

import numpy as np

from ..model.scenario import OptimizerSpec


def _lerp(a, b, w):
    """torch.lerp(a, b, w): a + w·(b − a) for |w| < 0.5, else b − (b − a)·(1 − w)."""
    return a + w * (b - a) if abs(w) < 0.5 else b - (b - a) * (1 - w)


def _zeros(state, key, like):
    v = state.get(key)
    return np.zeros_like(like) if v is None else v


def update(opt: OptimizerSpec, t: int, p: np.ndarray, grad: np.ndarray, state: dict, lr: float | None = None):
    """Return (new_p, written) where written maps suffixes to the values written (state and
    derived quantities). ``t`` is the 1-based step count; ``state`` maps suffix -> previous value;
    ``lr`` the learning rate in force (a schedule's), else the optimizer's."""
    lr = opt.lr if lr is None else float(lr)
    if opt.type == "adamw":
        # torch.optim.AdamW: param.mul_(1 − lr·λ), then Adam's step on the raw gradient
        decayed = p * (1 - lr * opt.weight_decay)
        new, w = _adam(opt, t, decayed, grad, state, lr)
        return new, {"decayed": decayed, **w}
    g = grad + opt.weight_decay * p if opt.weight_decay else grad
    if opt.type == "adam":
        return _adam(opt, t, p, g, state, lr)
    if opt.type == "rmsprop":
        # torch.optim.RMSprop (single tensor): square_avg.mul_(α).addcmul_(g, g, value=1 − α);
        # centered: grad_avg.lerp_(g, 1 − α), avg = sqrt(square_avg − grad_avg²); else sqrt(square_avg);
        # avg += eps; momentum: buf.mul_(μ).addcdiv_(g, avg), p −= lr·buf; else p −= lr·g/avg
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
    if opt.momentum:
        b_old = state.get("buf")
        buf = g if b_old is None else opt.momentum * b_old + (1 - opt.dampening) * g
        d = g + opt.momentum * buf if opt.nesterov else buf
        return p - lr * d, {"buf": buf}
    return p - lr * g, {}


def _adam(opt: OptimizerSpec, t: int, p: np.ndarray, g: np.ndarray, state: dict, lr: float):
    b1, b2 = opt.betas
    # torch starts exp_avg and exp_avg_sq at zeros (the program holds them from step 0)
    m_old = state.get("m")
    v_old = state.get("v")
    if m_old is None:
        m_old = np.zeros_like(g)
    if v_old is None:
        v_old = np.zeros_like(g)
    # as torch's single-tensor Adam: exp_avg.lerp_(g, 1 − β1); exp_avg_sq.mul_(β2).addcmul_(g, g,
    # value=1 − β2). lerp(a, b, w) is a + w·(b − a) for |w| < 0.5, else b − (b − a)·(1 − w).
    m = _lerp(m_old, g, 1 - b1)
    v = v_old * b2 + (1 - b2) * g * g
    bc1 = 1 - b1 ** t
    bc2 = 1 - b2 ** t
    step_size = lr / bc1
    denom = np.sqrt(v) / math.sqrt(bc2) + opt.eps   # math.sqrt: a Python float keeps float32 float32
    new = p - step_size * (m / denom)
    return new, {"m": m, "v": v, "m_hat": m / bc1, "v_hat": v / bc2}


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


def initial_lr(opt: OptimizerSpec) -> float:
    """The learning rate in force at step 1: the optimizer's, or LinearLR's start_factor times it
    (a scheduler's constructor takes its first step, epoch 0, at once)."""
    s = opt.schedule
    if s is not None and s.type == "linear":
        return opt.lr * s.start_factor
    if s is not None and s.type == "cosine" and s.warmup:
        return opt.lr * s.warmup_start          # SequentialLR's first scheduler, LinearLR, constructed
    return opt.lr


def next_lr(opt: OptimizerSpec, lr: float, epoch: int) -> float:
    """The lr after ``scheduler.step()`` takes the schedule to ``epoch`` (≥ 1), from the lr in force,
    in torch's recursive form (each get_lr(), not _get_closed_form_lr())."""
    s = opt.schedule
    base = opt.lr
    if s.type == "step":
        return lr * s.gamma if epoch % s.step_size == 0 else lr
    if s.type == "exponential":
        return lr * s.gamma
    if s.type == "cosine" and s.warmup:
        # SequentialLR([LinearLR(start_factor=warmup_start, total_iters=warmup), cosine], [warmup]):
        # LinearLR's step() before the milestone; at it, the cosine's step(0), its closed form at
        # epoch 0 (= lr₀); after it, the cosine's own recursive step() from there
        W = s.warmup
        if epoch < W:
            a = s.warmup_start
            return lr * (1.0 + (1.0 - a) / (W * a + (epoch - 1) * (1.0 - a)))
        if epoch == W:
            return s.eta_min + (base - s.eta_min) * (1 + math.cos(0.0)) / 2
        epoch -= W
    if s.type == "cosine":
        T, eta = s.t_max, s.eta_min
        if (epoch - 1 - T) % (2 * T) == 0:
            return lr + (base - eta) * (1 - math.cos(math.pi / T)) / 2
        return ((1 + math.cos(math.pi * epoch / T)) / (1 + math.cos(math.pi * (epoch - 1) / T))
                * (lr - eta) + eta)
    if s.type == "linear":
        if epoch > s.total_iters:
            return lr
        return lr * (1.0 + (s.end_factor - s.start_factor)
                     / (s.total_iters * s.start_factor + (epoch - 1) * (s.end_factor - s.start_factor)))
    raise ValueError(s.type)


# --- one element, for explain ---------------------------------------------------------------------
def value_rule(opt: OptimizerSpec, P: str, name: str, idx, V, t: int):
    """One element of what ``update P`` writes (the new P, its delta, the optimizer's state), from
    the elements it read, as :func:`update` computes them. ``V(n)`` reads as the op read (the old
    P and state), ``V.out(n)`` as it wrote."""
    from ..layers import expr as X
    from ..layers.expr import Def, El, K, Lit, Value, el
    from ..model.catalog import grad_for_update

    idx = tuple(int(i) for i in idx)
    suffix = name[len(P) + 1:] if name != P else ""
    new = lambda s: el(V.out, f"{P}.{s}", idx)                    # noqa: E731  (a state as written)
    old = lambda s: (El(f"{P}.{s}", idx, V.old(f"{P}.{s}")[idx], "before")  # noqa: E731
                     if V.old(f"{P}.{s}") is not None else None)
    w = El(P, idx, np.asarray(V(P))[idx], "before")                 # the parameter before the update
    G = el(V, grad_for_update(opt, P), idx)
    lr = K("lr", opt.lr) if opt.schedule is None else El("lr", (), V("lr"))
    if suffix == "delta":
        return Value("the change the update made: new − old", El(P, idx, np.asarray(V.out(P))[idx], "after") - w)
    wd = opt.weight_decay and opt.type != "adamw"
    g = Def("g", G + K("λ", opt.weight_decay) * w) if wd else None
    gr = g.ref if g else G
    where = [g] if g else []
    if opt.type in ("adam", "adamw"):
        b1, b2 = (K("β1", opt.betas[0]), K("β2", opt.betas[1]))
        rule = {
            "m": ("the first moment, a running average of g", b1 * old("m") + (1 - b1) * gr),
            "v": ("the second moment, a running average of g²", b2 * old("v") + (1 - b2) * X.sq(gr)),
            "m_hat": (f"m with the bias correction of step {t}", new("m") / (1 - X.Pow(b1, t))),
            "v_hat": (f"v with the bias correction of step {t}", new("v") / (1 - X.Pow(b2, t))),
            "decayed": ("AdamW's decoupled weight decay, first", w * (1 - lr * K("λ", opt.weight_decay))),
        }
        if suffix in rule:
            return Value(rule[suffix][0], rule[suffix][1], where if suffix in ("m", "v") else [])
        start = new("decayed") if opt.type == "adamw" else w
        return Value(f"{opt.type}: a step of lr along m̂ / (√v̂ + ε)",
                     start - lr * new("m_hat") / (X.sqrt(new("v_hat")) + K("ε", opt.eps)))
    if opt.type == "rmsprop":
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


def clip_value_rule(opt: OptimizerSpec, params: list[str], name: str, idx, V):
    """grad_norm, clip_coef, clipped_norm and each P.grad.clipped element, as clip_grad_norm."""
    from ..layers import expr as X
    from ..layers.expr import Def, El, K, Lit, Value, el, total

    idx = tuple(int(i) for i in idx)

    def norm(suffix: str, read) -> tuple[list, X.X]:
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


def schedule_value_rule(opt: OptimizerSpec, V, t: int):
    """The next step's lr, as :func:`next_lr` computes it from the lr in force (t: this step)."""
    from ..layers import expr as X
    from ..layers.expr import El, K, Lit, Value

    s = opt.schedule
    lr = El("lr", (), V("lr"), f"in force at step {t}")
    T = Lit(t, str(t))
    if s.type == "step":
        if t % s.step_size == 0:
            return Value(f"step {t} is a multiple of step_size = {s.step_size}: the lr times γ", K("γ", s.gamma) * lr)
        return Value(f"step {t} is not a multiple of step_size = {s.step_size}: the lr stays", lr)
    if s.type == "exponential":
        return Value("the lr times γ", K("γ", s.gamma) * lr)
    if s.type == "linear":
        if t > s.total_iters:
            return Value(f"step {t} is past total_iters = {s.total_iters}: the lr stays", lr)
        a, z, n = K("start", s.start_factor), K("end", s.end_factor), K("total_iters", s.total_iters)
        return Value("LinearLR's recursive step", lr * (1 + (z - a) / (n * a + (T - 1) * (z - a))))
    epoch, base = t, K("lr₀", opt.lr)
    if s.warmup:
        W, a = K("W", s.warmup), K("start", s.warmup_start)
        if t < s.warmup:
            return Value(f"the warm-up (step {t} < W): LinearLR's recursive step",
                         lr * (1 + (1 - a) / (W * a + (T - 1) * (1 - a))))
        if t == s.warmup:
            return Value("the end of the warm-up: the cosine starts at lr₀", base)
        epoch -= s.warmup
    eta, Tm, u = K("η_min", s.eta_min), K("T_max", s.t_max), Lit(epoch, str(epoch))
    if (epoch - 1 - s.t_max) % (2 * s.t_max) == 0:
        return Value("CosineAnnealingLR at a restart of its period", lr + (base - eta) * (1 - X.cos(Lit(math.pi, "π") / Tm)) / 2)
    return Value("CosineAnnealingLR's recursive step", eta + (lr - eta) * (1 + X.cos(Lit(math.pi, "π") * u / Tm))
                 / (1 + X.cos(Lit(math.pi, "π") * (u - 1) / Tm)))
