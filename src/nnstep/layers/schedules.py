"""Learning-rate schedules (``[optimizer.schedule]``), each one class: torch.optim.lr_scheduler's
``step`` (StepLR), ``exponential`` (ExponentialLR), ``cosine`` (CosineAnnealingLR, optionally after a
linear warm-up: SequentialLR) and ``linear`` (LinearLR), stepped once after each training step's
updates (the ``lr schedule`` op), in torch's recursive ("chainable") form, as each ``step()``
computes it. The learning rate in force is then a persistent tensor ``lr`` (float64, a Python float
in torch): the optimizer's lr, or what the scheduler's constructor made of it, at step 1.
"""
from __future__ import annotations

import math

from nnstep.layers import Const, F, Formula, Option, OptionError, Ref, StepNum, exact

SCHEDULE_OP = "lr schedule"


class Schedule:
    """A schedule type. ``spec`` is the scenario's ScheduleSpec (every option by name); ``opt`` the
    OptimizerSpec it belongs to (its lr is the base, lr₀)."""
    type: str = ""
    options: dict[str, Option] = {}
    torch_class: str = ""

    def __init__(self, spec, opt):
        self.spec, self.opt = spec, opt

    @classmethod
    def check_options(cls, opts: dict) -> None:
        """Options that contradict each other, or that torch's constructor refuses: OptionError."""

    def initial_lr(self) -> float:
        """The learning rate in force at step 1 (a scheduler's constructor takes its first step,
        epoch 0, at once)."""
        return self.opt.lr

    def next_lr(self, lr: float, epoch: int) -> float:
        """The lr after ``scheduler.step()`` takes the schedule to ``epoch`` (≥ 1), from the lr in
        force, in torch's recursive form (each get_lr(), not _get_closed_form_lr())."""
        raise NotImplementedError

    def formula(self) -> Formula:
        """``lr schedule``'s formula: the lr of the next step (t: this step, the scheduler's new
        last_epoch)."""
        raise NotImplementedError

    def _head(self) -> str:
        return f"({self.torch_class}.step() after the updates, t = this step: the next step's lr);  "

    def value_rule(self, V, t: int):
        """The next step's lr, as next_lr computes it from the lr in force (t: this step)."""
        raise NotImplementedError

    def torch_lines(self) -> list[str]:
        """The statements making ``scheduler`` from ``optimizer`` in the exported script."""
        kw = ", ".join(f"{k}={exact(v)}" for k, v in self.torch_kwargs())
        return [f"scheduler = torch.optim.lr_scheduler.{self.torch_class}(optimizer, {kw})   # stepped after each update"]

    def torch_kwargs(self) -> list[tuple[str, object]]:
        return []

    def _lr(self, V, t):
        from nnstep.layers.expr import El, Lit
        return El("lr", (), V("lr"), f"in force at step {t}"), Lit(t, str(t))


class StepLR(Schedule):
    """torch's StepLR: the lr times γ every step_size steps."""
    type = "step"
    options = {"step_size": Option(kind="posint"), "gamma": Option(0.1, "nonnegfloat")}
    torch_class = "StepLR"

    def next_lr(self, lr, epoch):
        s = self.spec
        return lr * s.gamma if epoch % s.step_size == 0 else lr

    def formula(self):
        s = self.spec
        return F(self._head() + "{lr} ← {g}·{lr} if {t} mod {n} = 0, else {lr}", lr=Ref("lr", "state"), t=StepNum(),
                 g=Const("γ", s.gamma), n=Const("step_size", s.step_size))

    def value_rule(self, V, t):
        from nnstep.layers.expr import K, Value
        s = self.spec
        lr, _ = self._lr(V, t)
        if t % s.step_size == 0:
            return Value(f"step {t} is a multiple of step_size = {s.step_size}: the lr times γ", K("γ", s.gamma) * lr)
        return Value(f"step {t} is not a multiple of step_size = {s.step_size}: the lr stays", lr)

    def torch_kwargs(self):
        return [("step_size", self.spec.step_size), ("gamma", self.spec.gamma)]


class ExponentialLR(Schedule):
    """torch's ExponentialLR: the lr times γ after every step."""
    type = "exponential"
    options = {"gamma": Option(kind="nonnegfloat")}
    torch_class = "ExponentialLR"

    def next_lr(self, lr, epoch):
        return lr * self.spec.gamma

    def formula(self):
        return F(self._head() + "{lr} ← {g}·{lr}", lr=Ref("lr", "state"), g=Const("γ", self.spec.gamma))

    def value_rule(self, V, t):
        from nnstep.layers.expr import K, Value
        lr, _ = self._lr(V, t)
        return Value("the lr times γ", K("γ", self.spec.gamma) * lr)

    def torch_kwargs(self):
        return [("gamma", self.spec.gamma)]


class CosineLR(Schedule):
    """torch's CosineAnnealingLR(t_max, eta_min); with ``warmup`` W > 0 first a linear warm-up from
    warmup_start·lr₀ over W steps: SequentialLR([LinearLR(start_factor=warmup_start,
    total_iters=W), the cosine], milestones=[W])."""
    type = "cosine"
    options = {"t_max": Option(kind="posint"), "eta_min": Option(0.0, "nonnegfloat"),
               "warmup": Option(0, "nonnegint", "steps of linear warm-up first (0: none)"),
               "warmup_start": Option(1.0 / 3, "posfloat", "the warm-up's start_factor, in (0, 1]")}
    torch_class = "CosineAnnealingLR"

    @classmethod
    def check_options(cls, opts):
        if not 0 < opts["warmup_start"] <= 1:
            raise OptionError("warmup_start", f"expected a number in (0, 1], got {opts['warmup_start']:g}")

    def initial_lr(self):
        return self.opt.lr * self.spec.warmup_start if self.spec.warmup else self.opt.lr

    def next_lr(self, lr, epoch):
        s, base = self.spec, self.opt.lr
        if s.warmup:
            # LinearLR's step() before the milestone; at it, the cosine's step(0), its closed form at
            # epoch 0 (= lr₀); after it, the cosine's own recursive step() from there
            W = s.warmup
            if epoch < W:
                a = s.warmup_start
                return lr * (1.0 + (1.0 - a) / (W * a + (epoch - 1) * (1.0 - a)))
            if epoch == W:
                return s.eta_min + (base - s.eta_min) * (1 + math.cos(0.0)) / 2
            epoch -= W
        T, eta = s.t_max, s.eta_min
        if (epoch - 1 - T) % (2 * T) == 0:
            return lr + (base - eta) * (1 - math.cos(math.pi / T)) / 2
        return ((1 + math.cos(math.pi * epoch / T)) / (1 + math.cos(math.pi * (epoch - 1) / T))
                * (lr - eta) + eta)

    def formula(self):
        s, opt = self.spec, self.opt
        kw = dict(lr=Ref("lr", "state"), t=StepNum(), T=Const("T_max", s.t_max), e=Const("η_min", s.eta_min),
                  b=Const("lr₀", opt.lr), T2=Const("2·T_max", 2 * s.t_max))
        if s.warmup:
            kw.update(W=Const("W", s.warmup), a=Const("start", s.warmup_start))
            head = ("(SequentialLR.step() after the updates, t = this step: the next step's lr, after a linear "
                    "warm-up over W steps the cosine from lr₀, counted from u = t − W);  ")
            return F(head + "{lr} ← {lr}·(1 + (1 − {a}) / ({W}·{a} + ({t} − 1)·(1 − {a}))) if {t} < {W};  "
                     "{lr} ← {b} if {t} = {W};  "
                     "{lr} ← {lr} + ({b} − {e})·(1 − cos(π/{T}))/2 if u − 1 ≡ {T} mod {T2}, "
                     "else {e} + ({lr} − {e})·(1 + cos(π·u/{T})) / (1 + cos(π·(u − 1)/{T})), if {t} > {W};  "
                     "(the lr of step 1 is start·lr₀, set by the warm-up's constructor)", **kw)
        return F(self._head() + "{lr} ← {lr} + ({b} − {e})·(1 − cos(π/{T}))/2 if ({t} − 1) mod {T2} = {T}, "
                 "else {e} + ({lr} − {e})·(1 + cos(π·{t}/{T})) / (1 + cos(π·({t} − 1)/{T}))", **kw)

    def value_rule(self, V, t):
        from nnstep.layers import expr as X
        from nnstep.layers.expr import K, Lit, Value
        s, opt = self.spec, self.opt
        lr, T = self._lr(V, t)
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
            return Value("CosineAnnealingLR at a restart of its period",
                         lr + (base - eta) * (1 - X.cos(Lit(math.pi, "π") / Tm)) / 2)
        return Value("CosineAnnealingLR's recursive step", eta + (lr - eta) * (1 + X.cos(Lit(math.pi, "π") * u / Tm))
                     / (1 + X.cos(Lit(math.pi, "π") * (u - 1) / Tm)))

    def torch_kwargs(self):
        return [("T_max", self.spec.t_max), ("eta_min", self.spec.eta_min)]

    def torch_lines(self):
        s = self.spec
        if not s.warmup:
            return super().torch_lines()
        kw = ", ".join(f"{k}={exact(v)}" for k, v in self.torch_kwargs())
        return ["# a linear warm-up, then the cosine: torch's SequentialLR switches at the milestone",
                f"warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor={exact(s.warmup_start)}, "
                f"total_iters={s.warmup})",
                f"cosine = torch.optim.lr_scheduler.{self.torch_class}(optimizer, {kw})",
                f"scheduler = torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, cosine], milestones=[{s.warmup}])"
                "   # stepped after each update"]


class LinearLR(Schedule):
    """torch's LinearLR: the lr's factor goes linearly from start_factor to end_factor over
    total_iters steps (the constructor sets start_factor·lr₀ for step 1)."""
    type = "linear"
    options = {"start_factor": Option(1.0 / 3, "posfloat", "in (0, 1]"), "end_factor": Option(1.0, "nonnegfloat", "in [0, 1]"),
               "total_iters": Option(5, "posint")}
    torch_class = "LinearLR"

    @classmethod
    def check_options(cls, opts):
        # as torch.optim.lr_scheduler.LinearLR's constructor
        if not 0 < opts["start_factor"] <= 1:
            raise OptionError("start_factor", f"expected a number in (0, 1], got {opts['start_factor']:g}")
        if opts["end_factor"] > 1:
            raise OptionError("end_factor", f"expected a number in [0, 1], got {opts['end_factor']:g}")

    def initial_lr(self):
        return self.opt.lr * self.spec.start_factor

    def next_lr(self, lr, epoch):
        s = self.spec
        if epoch > s.total_iters:
            return lr
        return lr * (1.0 + (s.end_factor - s.start_factor)
                     / (s.total_iters * s.start_factor + (epoch - 1) * (s.end_factor - s.start_factor)))

    def formula(self):
        s = self.spec
        return F(self._head() + "{lr} ← {lr}·(1 + ({z} − {a}) / ({n}·{a} + ({t} − 1)·({z} − {a}))) if {t} ≤ {n}, else {lr};  "
                 "(the lr of step 1 is start·lr₀, set by LinearLR's constructor)", lr=Ref("lr", "state"), t=StepNum(),
                 a=Const("start", s.start_factor), z=Const("end", s.end_factor), n=Const("total_iters", s.total_iters))

    def value_rule(self, V, t):
        from nnstep.layers.expr import K, Value
        s = self.spec
        lr, T = self._lr(V, t)
        if t > s.total_iters:
            return Value(f"step {t} is past total_iters = {s.total_iters}: the lr stays", lr)
        a, z, n = K("start", s.start_factor), K("end", s.end_factor), K("total_iters", s.total_iters)
        return Value("LinearLR's recursive step", lr * (1 + (z - a) / (n * a + (T - 1) * (z - a))))

    def torch_kwargs(self):
        s = self.spec
        return [("start_factor", s.start_factor), ("end_factor", s.end_factor), ("total_iters", s.total_iters)]
