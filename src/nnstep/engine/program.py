"""The plan of one training step (:mod:`nnstep.model.plan`) bound to its math.

The plan says which tensors each operation reads and writes; the program gives every op a function
``run(env, k)`` that reads its inputs from an environment (a dict name -> array) and writes its
outputs into it. Nothing is modified in place, so keeping a reference to any value is enough to
record it.

Persistent tensors (parameters, optimizer state, batchnorm running statistics) are the only state
carried from one step to the next; a step boundary is fully described by them plus the step number
(the batch order is a pure function of the seed and the step).
"""
from __future__ import annotations

import inspect
import math
from typing import Callable, Iterable

import numpy as np

from ..model.scenario import Scenario
from ..model.plan import Op, Plan
from ..model.stats import absmax, finite_hint
from ..layers.optimizers import clip_grad_norm, grad_for_update
from ..layers import Layer, registry


def _with_sums_and_aliases(fn: Callable, op: Op) -> Callable:
    """The plan's fork sum before the op (``grad_out = Σ contributions``) and its aliases after it
    (the one reader of a tensor writes that tensor's grad_out: the same array)."""
    sums, also, src = op.sums, op.also_writes, op.alias_src
    if not sums and not also:
        return fn
    gname = next((s.name for s in op.outs if s.role == "upstream"), None) if sums else None

    def run(env, k):
        if sums:
            g = env[sums[0]]
            for c in sums[1:]:
                g = g + env[c]
            env[gname] = g
        fn(env, k)
        for a, s in zip(also, src):
            v = env.get(s)
            if v is not None:
                env[a] = v
    return run


def lean_skip(sc: Scenario, breakpoints=None) -> set[str]:
    """What a long run never reads, so a Program may leave it uncomputed: dLoss/d(the batch) of the
    layers reading it and the parameters' deltas, unless a `when` condition of ``breakpoints``
    (default: the scenario's) reads one. `nnstep run` leaves them out, and so does the session's
    long continue (which then re-derives the last two steps whole). Where one could be born Inf or
    NaN it is computed all the same, so a run stops where full stepping would."""
    skip = {f"{p}.delta" for p in sc.trainable}
    skip |= {f"{L.name}.grad_in" for L in sc.layers if L.inputs == ("input",)}
    bps = sc.breakpoints if breakpoints is None else breakpoints
    skip -= {bp.when.tensor for bp in bps if bp.when is not None and bp.when.kind == "compare"}
    return skip


def _diff_may_overflow(new: np.ndarray, old: np.ndarray, seen: list, half_max: float) -> bool:
    """Whether ``new - old`` could leave the dtype's range (``half_max``: half its largest value),
    or meets a NaN. ``seen`` holds the array last passed as ``new`` and its bound: the parameter
    an update reads is the one the previous update wrote, so each array is measured once."""
    if new.dtype.kind != "f" or not new.size:
        return False
    a = seen[1] if seen[0] is old else _magnitude(old)
    b = _magnitude(new)
    seen[0], seen[1] = new, b
    return not (a + b < half_max)


def _magnitude(x: np.ndarray) -> float:
    """An upper bound of max|x|, one BLAS pass (stats.finite_hint, the sum of squares): where that
    is finite it bounds every element by its square root, far inside max/2; else max|x| itself
    (NaN if x holds one)."""
    with np.errstate(all="ignore"):
        sq = finite_hint(x)
    return math.sqrt(sq) if sq < math.inf else absmax(x)


def make_layer(spec) -> Layer:
    """The math of one layer of a scenario: an instance of its type's class. A user's type is
    guarded (layers.plugins.guard): its code raising, or returning what the contract does not
    allow, is a located error."""
    cls = registry.layer_type(spec.type)
    if registry.is_builtin(cls):
        return cls(spec)
    from ..layers import plugins
    return plugins.guard(plugins.call(cls, "__init__", spec))


def layer_rng(seed: int, k: int, index: int) -> np.random.Generator:
    """The random numbers of layer ``index`` (its position in [[layers]], from 0) at step k:
    ``numpy.random.default_rng([seed, 4, k, index])`` (streams 0-3 are the initialization, random
    data, shuffling and gradcheck's sampling)."""
    return np.random.default_rng([seed, 4, k, index])


class Program:
    def __init__(self, sc: Scenario, skip: Iterable[str] = ()):
        """``skip``: names of tensors the caller will never read, which ops may then leave
        uncomputed (`nnstep run` reports neither dLoss/d(input) nor the parameters' deltas). The
        op list, with every op's inputs and outputs, is the same either way."""
        self.scenario = sc
        self.skip = frozenset(skip)
        self.dtype = sc.np_dtype
        self.plan = Plan.of(sc)
        self.ops: list[Op] = self.plan.ops
        self.layers: list[Layer] = []
        self.layer: dict[str, Layer] = {}
        for spec in sc.layers:
            L = make_layer(spec)
            self.layers.append(L)
            self.layer[spec.name] = L
        self.loss, self.optimizer, self.schedule = self.plan.loss, self.plan.optimizer, self.plan.schedule
        self.opt_state, self.opt_written = self.optimizer.state()
        self.persistent: list[str] = self.plan.persistent
        self.stage_start = self.plan.stage_start
        self._perm_cache: tuple[int, np.ndarray] | None = None
        self._shared_memo = [None, None]
        self.fns: list[Callable] = [self._bind(op) for op in self.ops]

    # --- binding ------------------------------------------------------------------------------------
    def _bind(self, op: Op) -> Callable:
        if op.kind == "forward":
            fn = self._fwd(op)
        elif op.kind == "backward":
            fn = self._bwd(op)
        elif op.kind == "loss":
            fn = self._loss(op)
        elif op.kind == "loss_backward":
            fn = self._loss_bwd(op)
        elif op.kind == "update":
            fn = self._upd(op)
        elif op.kind == "clip":
            fn = self._clip(op)
        elif op.kind == "schedule":
            fn = self._schedule(op)
        elif op.kind.startswith("step:"):
            fn = self._step(op)
        else:
            raise ValueError(f"no math for an op of kind {op.kind!r}")
        return _with_sums_and_aliases(fn, op)

    def _fwd(self, op: Op):
        L = self.layer[op.layer]
        spec = L.spec
        xs = spec.inputs
        x = xs[0]
        merge = L.merge
        pkeys = [(p, spec.t(p)) for p in spec.params] + [(s, spec.t(s)) for s in L.states]
        outname = spec.t("out")
        extras = [(e, spec.t(e)) for e in L.extras]
        states = [(s, spec.t(s)) for s in L.states]

        # a layer that draws random numbers (dropout) takes ``rng``: a generator seeded from the
        # scenario's seed, the step and the layer's index, so every replay of step k draws the same
        seeded = "rng" in inspect.signature(L.forward).parameters
        seed, index = self.scenario.seed, spec.index

        def run(env, k):
            xin = [env[n] for n in xs] if merge else env[x]
            kw = {"rng": layer_rng(seed, k, index)} if seeded else {}
            out, ex, st = L.forward(xin, {p: env[full] for p, full in pkeys}, **kw)
            env[outname] = out
            for e, full in extras:
                env[full] = ex[e]
            for s, full in states:
                env[full] = st[s]
        return run

    def _bwd(self, op: Op):
        L = self.layer[op.layer]
        spec = L.spec
        xs = spec.inputs
        x = xs[0]
        merge = L.merge
        pkeys = [(p, spec.t(p)) for p in spec.params]
        extras = [(e, spec.t(e)) for e in L.extras]
        gname, oname, lname = spec.t("grad_out"), spec.t("out"), spec.t("local")
        gins = [self.plan.grad_in_name(spec, k) for k in range(len(xs))] if L.grads_input else []
        gradnames = {p: spec.t(f"{p}.grad") for p in spec.params}
        kw = {}
        if (gins and all(g in self.skip for g in gins) and not op.also_writes
                and "need_in" in inspect.signature(L.backward).parameters):
            kw = {"need_in": False}

        def run(env, k):
            xin = [env[n] for n in xs] if merge else env[x]
            gin, grads, local = L.backward(env[gname], xin, env[oname], {p: env[f] for p, f in pkeys},
                                           {e: env[f] for e, f in extras}, **kw)
            if local is not None:
                env[lname] = local
            for p, gr in grads.items():
                env[gradnames[p]] = gr
            if gin is not None and gins:
                if merge:
                    for name, v in zip(gins, gin):
                        env[name] = v
                else:
                    env[gins[0]] = gin
            elif kw:                        # left out: no older value may stand in for it
                for name in gins:
                    env.pop(name, None)
        return run

    def _step(self, op: Op):
        """One operation of a layer that takes several (attention's sub-steps, an RNN's time
        steps): the layer's method named by the step's kind, reading and writing env by name, with
        the step's argument when it has one (an RNN's time index)."""
        L = self.layer[op.layer]
        fn = getattr(L, op.kind.split(":", 1)[1])
        arg = op.arg
        if arg is None:
            return lambda env, k: fn(env, k)
        return lambda env, k: fn(env, k, arg)

    def _loss(self, op: Op):
        loss = self.loss
        pred = self.plan.prediction
        memo = self._shared_memo                 # (pred, what loss.shared made of it): backward loss reuses it

        def run(env, k):
            p, y, _ = loss.class_first(env[pred], env["target"])
            shared = loss.shared(p)
            if shared is not None:
                memo[0], memo[1] = env[pred], shared
            env["loss"] = loss.forward(p, y, lp=shared)
        return run

    def _loss_bwd(self, op: Op):
        loss = self.loss
        pred = self.plan.prediction
        memo = self._shared_memo

        def run(env, k):
            p0 = env[pred]
            # the same array object (values are never modified in place): what it shares is known
            shared = memo[1] if memo[0] is p0 else None
            memo[0] = memo[1] = None                      # taken once
            p, y, back = loss.class_first(p0, env["target"])
            g = loss.backward(p, y, lp=shared)
            if back is not None:
                g = np.ascontiguousarray(np.moveaxis(g, 1, back))
            env["loss.grad"] = g
        return run

    def _upd(self, op: Op):
        opt = self.scenario.optimizer
        P = op.param
        skeys = [(s, f"{P}.{s}") for s in self.opt_state]
        gname, dname = grad_for_update(opt, P), f"{P}.delta"
        optimizer = self.optimizer
        delta = dname not in self.skip
        wnames = {s: f"{P}.{s}" for s in self.opt_written}
        sched = opt.schedule is not None

        seen = [None, 0.0]                  # the last parameter written, and its largest magnitude
        half_max = float(np.finfo(self.dtype).max) / 2 if self.dtype.kind == "f" else math.inf

        def run(env, k):
            old = env[P]
            new, written = optimizer.update(k, old, env[gname], {s: env.get(f) for s, f in skeys},
                                            lr=float(env["lr"]) if sched else None)
            env[P] = new
            if delta or _diff_may_overflow(new, old, seen, half_max):
                env[dname] = new - old      # (left out, it is still computed where it could be born Inf)
            else:
                env.pop(dname, None)        # left out: no older value may stand in for it
            for s, v in written.items():
                env[wnames[s]] = v
        return run

    def _clip(self, op: Op):
        """torch.nn.utils.clip_grad_norm_ over every trainable gradient (P.grad stays raw)."""
        params = self.scenario.trainable
        c = self.scenario.optimizer.clip_grad_norm

        def run(env, k):
            total, coef, clipped, after = clip_grad_norm([env[f"{P}.grad"] for P in params], c)
            env["grad_norm"], env["clip_coef"], env["clipped_norm"] = total, coef, after
            for P, g in zip(params, clipped):
                env[f"{P}.grad.clipped"] = g
        return run

    def _schedule(self, op: Op):
        """scheduler.step() after the updates of step k: the lr of step k + 1."""
        schedule = self.schedule

        def run(env, k):
            env["lr"] = np.asarray(schedule.next_lr(float(env["lr"]), k), dtype=np.float64)
        return run

    # --- data -------------------------------------------------------------------------------------
    def batch_indices(self, k: int):
        """Sample indices of step k's batch, or None for the whole data in order."""
        sc = self.scenario
        B, bs, N = sc.n_batches, sc.batch_size, sc.n_samples
        b, p = (k - 1) % B, (k - 1) // B
        if not sc.train.shuffle:
            return None if B == 1 else slice(b * bs, min(N, (b + 1) * bs))
        if self._perm_cache is None or self._perm_cache[0] != p:
            self._perm_cache = (p, np.random.default_rng([sc.seed, 2, p]).permutation(N))
        return self._perm_cache[1][b * bs:(b + 1) * bs]

    def feed(self, env: dict, k: int):
        idx = self.batch_indices(k)
        sc = self.scenario
        if idx is None:
            env["input"], env["target"] = sc.x, sc.y
        else:
            env["input"], env["target"] = sc.x[idx], sc.y[idx]

    # --- state ------------------------------------------------------------------------------------
    def initial_env(self) -> dict:
        sc = self.scenario
        env = {name: np.asarray(v, dtype=self.dtype) for name, v in sc.initial.items()}
        for L in self.layers:
            for s, v in L.initial_state(self.dtype).items():
                given = sc.initial_states.get(f"{L.name}.{s}")
                env[f"{L.name}.{s}"] = v if given is None else np.asarray(given, dtype=self.dtype)
        # torch.optim.Adam starts exp_avg and exp_avg_sq at zeros; holding them from step 0 lets the
        # first update show m = β1·0 + (1 − β1)·g with its real numbers (same values bit for bit)
        zero = self.optimizer.zero_state()
        for P in sc.trainable:
            for st in zero:
                env[f"{P}.{st}"] = np.zeros_like(env[P])
        if sc.optimizer.schedule is not None:
            # the lr in force at step 1 (a Python float in torch, so float64 here): the scheduler's
            # constructor has already taken its epoch-0 step (LinearLR: start_factor·lr)
            env["lr"] = np.asarray(self.schedule.initial_lr(), dtype=np.float64)
        return env

    def checkpoint(self, env: dict) -> dict:
        """The persistent state, by reference (values are never modified in place)."""
        return {n: env[n] for n in self.persistent if n in env}

    def run_until(self, env: dict, k: int, stage: str) -> dict:
        """Feed step k's batch and run its ops up to (not including) the first op of ``stage``."""
        self.feed(env, k)
        end = self.stage_start.get(stage, len(self.ops))
        with np.errstate(all="ignore"):
            for fn in self.fns[:end]:
                fn(env, k)
        return env

    def forward_loss(self, params: dict, k: int = 1) -> float:
        """The loss of step k's batch for the given parameter values (forward pass only)."""
        env = self.initial_env()
        env.update(params)
        return float(self.run_until(env, k, "backward")["loss"])
