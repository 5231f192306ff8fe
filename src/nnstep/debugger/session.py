"""The debugger session: a cursor over every operation of every training step (docs/commands.md, "The Python API").

Position ``(k, i)`` means the first ``i`` operations of step ``k`` have run; ``(N+1, 0)`` is the end.
Linear position ``p = (k-1)·M + i`` for a program of ``M`` operations.

What ``value(name)`` shows (docs/commands.md)
-------------------------------------
The latest value at or before the cursor. A tensor this step has not computed yet comes from the
previous step; before step 1 computed it, it is ``None``. Parameters, optimizer state and running
statistics are their current values. ``input`` and ``target`` are fed at the step boundary, so at
``(k, 0)`` they already hold step k's batch (the batch the next operation reads); at the very end,
``(N+1, 0)``, they keep step N's.

History and its cost model
--------------------------
Nothing is copied per operation: the engine never modifies an array in place, so records,
checkpoints and cached environments hold references. Symbols: ``T`` the time of one training
step, ``M`` operations per step, ``P`` the bytes of the persistent state (parameters, optimizer
state, batchnorm running statistics; for SGD with momentum 2x the parameters, Adam 3x), ``N`` steps.

* A *checkpoint* at step ``c`` is the persistent state at ``(c, 0)``. The batch order is a pure
  function of the seed and the step, so it needs no state. Position ``(k, i)`` is rebuilt exactly
  from any checkpoint ``c <= k-1`` by re-running ``k-c`` steps and ``i`` ops (step ``k-1`` must be
  re-run because ``value()`` falls back to its tensors); from ``c = 1`` for ``k = 1``.
* A *step-start environment* is the full environment at ``(s, 0)`` (every tensor), kept for the
  cursor's step and the one before (``s`` in ``{k-1, k}``), with the record of the op just before
  it. Extra cost: the non-persistent tensors of one step each (gradients, deltas, activations, ~P).
* The *trail* is the environment at every position of the cursor's step ``k`` the cursor has
  stood on (a dict of references each, with the record of the op before it), dropped when the
  cursor leaves the step. A move back within the step, or forward again to a position it holds,
  puts those very arrays back and runs no op, so the TUI, which caches what it drew by array,
  draws nothing anew. A replay within the step (a move back to a position the trail does not
  hold re-runs from the nearest one before it, or from the step start) adds the positions it
  passes, and ``peek(n)`` adds the next ``n`` ahead of the cursor, the step's last op's outputs
  included (a UI computes them while the user reads: a step, a short run or a jump forward over
  them then runs nothing, a run's stops checked as ever). Extra cost: one small dict per
  position, the arrays written in step ``k`` and replaced later in it (rare: an accumulated
  gradient), and the step's tensors again where a replay from the step start re-made them beside
  those of the run that first got there (bench_history: the history's maximum is 50.0 MB with
  the trail, as before it).
* Checkpoints kept, by the distance ``d = k - c`` from the cursor's step ``k`` (``_keep``):
    - ``0 <= d <= RING`` (4): every step;
    - ``0 <= d <= NEAR_SPAN`` (16): every ``NEAR_EVERY``-th (4) step boundary;
    - ``|d| <= MID_SPAN`` (128): every ``MID_EVERY``-th (32), behind and ahead of the cursor;
    - everywhere: every ``far``-th, ``far = MID_EVERY·ceil(N / (FAR_COUNT·MID_EVERY))``
      (FAR_COUNT = 16; for N = 10,000: far = 640);
    - step 1 always.
  The grids nest (far ⊂ mid ⊂ near), so a boundary often counts for two levels. Checkpoints are
  made whenever a run passes a boundary the policy keeps (relative to the cursor, or to the target
  of a jump) and dropped when the cursor moves away. Distinct ones at most: ring 5, near 4 more,
  mid 8 more (both sides), far ``ceil(N/far)`` (16 for N = 10,000, step 1 included): 33.
* So: memory ``<= 33·P + 2 step-start environments + the last record + 9 bytes·N`` (the loss
  log), and the trail (above). For the 784-128-10 MLP with SGD momentum, P = 1.63 MB and a
  step's other tensors about 2 MB: at most ~59 MB whatever the cursor has done, ~40-50 MB in
  practice (Adam's P is 1.5x that).
* Times, in re-executed work: next op: one op (none, onto a position of the trail). Back within
  a step: none onto a position of the trail, else ``< M`` ops from the step-start environment.
  Back across a boundary: ``< M`` ops from the previous step-start environment if it is cached,
  else ``<= 2T`` from the ring, and ``<= (NEAR_EVERY+2)·T`` when the cursor walks off
  the ring. A jump within MID_SPAN steps of the cursor: ``<= (MID_EVERY+1)·T`` (or the forward
  distance, if less). A jump anywhere already visited: ``<= (far+1)·T``: 641 T for N = 10,000,
  under a second at T = 1 ms. A jump beyond the furthest step ever reached runs forward to it:
  that is training, not history. ``bench/bench_history.py`` measures all of this on the
  784-128-10 network and reports, next to each time, the steps it re-executed.

Stops (``run``, ``reverse_run``)
--------------------------------
Where a run stops is decided by the one stop detector (:mod:`nnstep.engine.runner`), the same one
`nnstep run` and `trace` use: op and stage breakpoints stop *before* the op, a condition and a
NaN/Inf origin *after* the op that wrote the tensor (a condition on the batch, ``input`` or
``target``, after each step's first op). ``run()`` always executes at least one op first, so
continuing from a breakpoint moves on. ``reverse_run()`` goes back to the latest position strictly
before the cursor where ``run()`` would have stopped, rescanning forward from checkpoints, nearest
first.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..engine.program import Op, Program, lean_skip
from ..engine.runner import Detector, Stop, advance
from ..model.scenario import Breakpoint, Scenario
from ..model.stats import global_norm

RING = 4
NEAR_SPAN = 16
NEAR_EVERY = 4
MID_SPAN = 128
MID_EVERY = 32
FAR_COUNT = 16


class _Ready:
    """A Program whose op ``index``, the first time it runs, puts ``outputs`` (computed ahead)
    into the environment instead of computing them (a run may go on to later steps, where it
    computes); the rest is the Program's."""

    def __init__(self, prog, index: int, outputs: dict):
        self._prog = prog
        self.fns = list(prog.fns)
        real, pending = prog.fns[index], [outputs]

        def once(env, k):
            if pending:
                env.update(pending.pop())
            else:
                real(env, k)
        self.fns[index] = once

    def __getattr__(self, name):
        return getattr(self._prog, name)


@dataclass(frozen=True)
class HistoryPolicy:
    """Which step boundaries keep a checkpoint (see the module docstring). Tests shrink it to
    exercise every path on small scenarios; the defaults meet the targets of docs/commands.md, "Performance"."""
    ring: int = RING
    near_span: int = NEAR_SPAN
    near_every: int = NEAR_EVERY
    mid_span: int = MID_SPAN
    mid_every: int = MID_EVERY
    far_count: int = FAR_COUNT

    def far(self, n_steps: int) -> int:
        return self.mid_every * max(1, math.ceil(n_steps / (self.far_count * self.mid_every)))


@dataclass(frozen=True)
class OpRecord:
    """One executed operation: the values it read (as they were then) and wrote."""
    step: int
    index: int
    op: Op
    inputs: dict
    outputs: dict

    @property
    def name(self) -> str:
        return self.op.name

    @property
    def stage(self) -> str:
        return self.op.stage


def _record(op: Op, k: int, ins: dict, env: dict) -> OpRecord:
    """The record of ``op``, run in step k, whose outputs are (still) in ``env``."""
    return OpRecord(k, op.index, op, ins, {n: env[n] for n in op.outputs if n in env})  # (a lean run: some left out)


class Session:
    """A cursor over all operations of all training steps, with exact stepping both ways."""

    def __init__(self, scenario: Scenario | str | os.PathLike, policy: HistoryPolicy | None = None):
        if not isinstance(scenario, Scenario):
            from ..scenario import load_scenario
            scenario = load_scenario(scenario)
        self.scenario = scenario
        self.program = Program(scenario)
        self.ops: list[Op] = self.program.ops
        self.M = len(self.ops)
        self.N = scenario.train.steps
        self._nonfinite = True
        self.breakpoints: list[Breakpoint] = list(scenario.breakpoints)
        self._index_breakpoints()
        self.names = set(self.program.plan.names)
        self.policy = policy or HistoryPolicy()
        self._far = self.policy.far(self.N)
        self._loss_at = self.program.stage_start["loss"]
        size = min(self.N + 2, 1024)                     # grown by doubling as steps are reached
        self._loss = np.full(size, np.nan)               # loss of step k, once computed
        self._has_loss = np.zeros(size, dtype=bool)
        # per layer with trainable parameters, the 2-norm of its parameter gradients at each step,
        # taken once when the backward stage ends (the TUI's gradient-norm plot)
        tr = set(scenario.trainable)
        self.grad_layers: list[tuple[str, tuple[str, ...]]] = [
            (L.name, ps) for L in scenario.layers
            if (ps := tuple(f"{L.name}.{p}.grad" for p in L.params if f"{L.name}.{p}" in tr))]
        st = self.program.stage_start
        self._gnorm_at = (st["update"] if "update" in st else self.M) - 1
        self._gnorm = np.full((size, len(self.grad_layers)), np.nan)
        # with a schedule: the lr in force at step k (the tensor `lr` as the loss op ran), logged
        # alongside the loss for the TUI's curve; None without a schedule
        self._lr = np.full(size, np.nan) if scenario.optimizer.schedule is not None else None
        self.last_record: OpRecord | None = None
        self.last_stop: Stop | None = None
        self.ops_executed = 0               # every op run so far, re-runs included (for benchmarks)
        self.scanning: tuple[int, int] | None = None   # where a reverse_run's scan is, while it runs
        self._reset()

    # --- state -----------------------------------------------------------------------------------
    def _reset(self):
        env = self.program.initial_env()
        self._ckpt: dict[int, dict] = {1: self.program.checkpoint(env)}
        self.program.feed(env, 1)
        self._env = env
        self._k, self._i = 1, 0
        self._starts: dict[int, tuple[dict, OpRecord | None]] = {1: (dict(env), None)}
        self.last_record = None
        self._new_trail(1)

    def _new_trail(self, k: int) -> None:
        self._trail_k, self._trail = k, {}
        self._finite: dict[int, bool] = {}     # trail positions peeked whose op wrote only finite numbers

    def _trail_of(self, k: int) -> dict:
        """The trail, made step k's (emptied if it held another step's)."""
        if self._trail_k != k:
            self._new_trail(k)
        return self._trail

    def _settle(self):
        """The cursor has moved: keep its position in the trail of its step (see the module
        docstring) for a move back, or forward again, within the step."""
        k, i = self._k, self._i
        self._trail_of(k)
        if i:
            self._trail[i] = (dict(self._env), self.last_record)

    def _from_trail(self, k: int, i: int) -> bool:
        """Put the cursor at (k, i) from the trail, if it holds that position."""
        if k != self._trail_k or i not in self._trail:
            return False
        env, rec = self._trail[i]
        self._env = dict(env)
        self._k, self._i = k, i
        self.last_record = rec
        return True

    def restart(self):
        """Back to (1, 0), keeping breakpoints."""
        self.goto(1, 0)
        self.last_stop = None

    @property
    def position(self) -> tuple[int, int]:
        return (self._k, self._i)

    def _lin(self) -> int:
        return (self._k - 1) * self.M + self._i

    @property
    def at_start(self) -> bool:
        return self._k == 1 and self._i == 0

    @property
    def at_end(self) -> bool:
        return self._k > self.N

    @property
    def current_op(self) -> Op | None:
        """The operation that runs next (None at the end)."""
        return None if self.at_end else self.ops[self._i]

    @property
    def stage(self) -> str:
        op = self.current_op
        return op.stage if op is not None else "done"

    def value(self, name: str):
        """The latest value of a tensor at or before the cursor (None if not computed yet); see the
        module docstring for the exact rule."""
        if name not in self.names:
            from ..errors import did_you_mean
            from ..errors import cut
            from ..errors import clean
            raise KeyError(f'unknown tensor "{cut(clean(name))}"{did_you_mean(name, self.names)}')
        return self._env.get(name)

    def step_start_value(self, name: str):
        """A tensor's value at the start of the cursor's step, (k, 0): e.g. a parameter before this
        step's update, as the backward pass read it. None if not available."""
        st = self._starts.get(self._k)
        return st[0].get(name) if st is not None else None

    def values(self) -> dict:
        """Every tensor as of the cursor (a shallow copy; arrays are never modified in place)."""
        return dict(self._env)

    @property
    def losses(self) -> dict[int, float]:
        """Loss of every step computed so far (including steps ahead of the cursor, computed before)."""
        ks = np.flatnonzero(self._has_loss)
        return {int(k): float(self._loss[k]) for k in ks}

    def loss_history(self) -> list[tuple[int, float]]:
        """(step, loss) of every step whose loss has been computed as of the cursor."""
        ks, ls = self.loss_arrays()
        return list(zip(ks.tolist(), ls.tolist()))

    def loss_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The same as loss_history(), as two numpy arrays (steps, losses): cheap for long runs."""
        k = self._k
        done = k if (k <= self.N and self._i > self._loss_at) else k - 1
        ks = np.flatnonzero(self._has_loss[1:done + 1]) + 1
        return ks, self._loss[ks]

    def grad_norm_arrays(self) -> tuple[np.ndarray, list[str], np.ndarray]:
        """(steps, layer names, norms[step, layer]) for every step whose backward stage has run as
        of the cursor: per layer, the 2-norm over its trainable parameters' gradients."""
        k = self._k
        done = k if (k <= self.N and self._i > self._gnorm_at) else k - 1
        ks = np.flatnonzero(~np.isnan(self._gnorm[1:done + 1, 0]) if self.grad_layers else
                            np.zeros(0, dtype=bool)) + 1
        return ks, [n for n, _ in self.grad_layers], self._gnorm[ks]
    def grad_norms_so_far(self) -> list[float | None]:
        """Per layer of ``grad_layers``, the 2-norm of its parameter gradients as far as the cursor's
        step has computed them: None for a layer whose backward op has not run yet in this step
        (before the backward stage ends, grad_norm_arrays has nothing of this step)."""
        k, i = self._k, self._i
        if k > self.N:
            return [None] * len(self.grad_layers)
        last = getattr(self, "_grad_writer", None)
        if last is None:
            last = self._grad_writer = {}
            for op in self.ops:
                for name in op.outputs:
                    last[name] = op.index
        return [global_norm([self._env[g] for g in gs]) if all(last.get(g, self.M) < i for g in gs) else None
                for _, gs in self.grad_layers]

    def lr_arrays(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(steps, lr in force) for the steps of loss_arrays(), or None without a schedule."""
        if self._lr is None:
            return None
        ks, _ = self.loss_arrays()
        return ks, self._lr[ks]

    def _grow_loss_log(self, k: int):
        size = min(self.N + 2, max(2 * len(self._loss), k + 1))
        loss, has = np.full(size, np.nan), np.zeros(size, dtype=bool)
        loss[:len(self._loss)], has[:len(self._has_loss)] = self._loss, self._has_loss
        g = np.full((size, self._gnorm.shape[1]), np.nan)
        g[:len(self._gnorm)] = self._gnorm
        self._loss, self._has_loss, self._gnorm = loss, has, g
        if self._lr is not None:
            lr = np.full(size, np.nan)
            lr[:len(self._lr)] = self._lr
            self._lr = lr

    # --- checkpoint policy -----------------------------------------------------------------------
    def _keep(self, c: int, k: int) -> bool:
        if c == 1:
            return True
        d, pol = k - c, self.policy
        if 0 <= d <= pol.ring:
            return True
        if 0 <= d <= pol.near_span and (c - 1) % pol.near_every == 0:
            return True
        if abs(d) <= pol.mid_span and (c - 1) % pol.mid_every == 0:
            return True
        return (c - 1) % self._far == 0

    def _prune(self):
        k = self._k
        for c in [c for c in self._ckpt if not self._keep(c, k)]:
            del self._ckpt[c]
        for s in [s for s in self._starts if not (k - 1 <= s <= k)]:
            del self._starts[s]

    # --- the one loop every move goes through -----------------------------------------------------
    def _loop(self, env: dict, k: int, i: int, end: int, *, live: bool, near: int | None = None,
              check: bool = False, first: bool = False, sink: Callable[[Stop], bool] | None = None,
              fast: tuple | None = None, trail: bool = False, ready: dict | None = None):
        """Run ops from (k, i) in ``env`` until linear position ``end``, through the one op runner.

        ``live``: ``env`` is the cursor's; record losses, make checkpoints and step-start
        environments (kept relative to step ``near``, or to the moving cursor when None) and the
        record of the last op. ``check``: stop where the detector says; each stop goes to ``sink``,
        which returns True to halt there. ``first``: don't stop at an op breakpoint before the first
        op. ``trail``: every position of the trail's step it passes joins the trail (a jump's
        replay: the next move back finds it there, sharing its arrays). Returns (k, i, (op, step,
        inputs) of the last op run or None, halted). The outputs of that op are still in ``env``
        when this returns (nothing has run since), so the caller builds its record from them.
        ``ready``: what the step's last op (the first to run here) writes, computed ahead (peek):
        put into ``env`` in its place, everything else as ever (its record, stops, the boundary)."""
        M, prog = self.M, self.program
        detector = self._detector
        if fast is not None:                # (a Program that leaves out what no later op reads, its detector)
            prog, detector = fast
        if ready is not None:
            prog = _Ready(prog, M - 1, ready)
        start = (k - 1) * M + i
        last = [None]
        on_op = on_boundary = None
        if live:
            loss_at, losses = self._loss_at, self
            gnorm_at, grad_layers = self._gnorm_at, self.grad_layers

            trail_k, held = (self._trail_k, self._trail) if trail else (None, None)

            def on_op(op, kk, ins):
                last[0] = (op, kk, ins)
                if kk == trail_k and op.index + 1 < M:
                    held[op.index + 1] = (dict(env), _record(op, kk, ins, env))
                if op.index == loss_at:
                    if kk >= len(losses._loss):
                        losses._grow_loss_log(kk)
                    losses._loss[kk] = env["loss"]
                    losses._has_loss[kk] = True
                    if losses._lr is not None:
                        losses._lr[kk] = env["lr"]
                if op.index == gnorm_at and grad_layers:
                    if kk >= len(losses._gnorm):
                        losses._grow_loss_log(kk)
                    losses._gnorm[kk] = [global_norm([env[g] for g in gs]) for _, gs in grad_layers]

            def on_boundary(kk):
                if near is None:            # the cursor itself moves: policy relative to it
                    self._k = kk
                    if kk not in self._ckpt:
                        self._ckpt[kk] = prog.checkpoint(env)
                    self._starts[kk] = (dict(env), _record(*last[0], env))
                    self._prune()
                else:                       # a jump: policy relative to its target step
                    if kk not in self._ckpt and self._keep(kk, near):
                        self._ckpt[kk] = prog.checkpoint(env)
                    if kk >= near - 1:
                        self._starts[kk] = (dict(env), _record(*last[0], env))
        k, i, halted = advance(prog, env, k, i, end, self.N, detector if check else None, first=first,
                               sink=sink, on_op=on_op, on_boundary=on_boundary)
        ran = (k - 1) * M + i - start
        self.ops_executed += ran - (ready is not None and ran > 0)     # (the ready op did not run)
        return k, i, last[0], halted

    def _live(self, end: int, **kw):
        """Advance the cursor's environment to ``end`` (see _loop) and set the cursor."""
        k, i, last, halted = self._loop(self._env, self._k, self._i, end, live=True, **kw)
        self._k, self._i = k, i
        if last is not None:
            self.last_record = _record(*last, self._env)
        return halted

    # --- moving forward --------------------------------------------------------------------------
    def step(self) -> OpRecord | None:
        """Run the next operation; its record, or None at the end. Ignores breakpoints."""
        if self.at_end:
            return None
        k, i = self._k, self._i
        if i + 1 == self.M or not self._from_trail(k, i + 1):    # (a boundary checkpoints and prunes)
            self._live(self._lin() + 1, ready=self._peeked_last())
            self._settle()
        return self.last_record

    def ahead(self, n: int) -> tuple[dict, OpRecord] | None:
        """The tensors ``n`` ops ahead of the cursor (after its ``n``-th next op; for the step's
        last op, before the next batch is fed) and that op's record, if a peek computed them, else
        None."""
        k, i = self._k, self._i
        got = self._trail.get(i + n) if k == self._trail_k and n >= 1 else None
        return None if got is None else (dict(got[0]), got[1])

    def _peeked_last(self) -> dict | None:
        """At a step's last op, what it writes if a peek computed it: the tensors of the trail's
        position M (the step done, the next batch not fed) that the cursor's environment lacks."""
        k, i, M = self._k, self._i, self.M
        if i + 1 != M or k != self._trail_k or M not in self._trail:
            return None
        here = self._env
        base = self._trail.get(M - 1, (None,))[0]
        if base is None or len(base) != len(here) or any(here.get(n) is not v for n, v in base.items()):
            return None                     # (computed from other arrays than the cursor's: a replay's)
        return {n: v for n, v in self._trail[M][0].items() if here.get(n) is not v}

    def peek(self, n: int = 1) -> bool:
        """Run the next ``n`` ops ahead of the cursor, each from the position before it, in copies
        of its environment, into the trail, without moving the cursor: the next ``step()`` (or a
        ``run()`` over them) then runs nothing (a UI computes ahead while the user reads). What the
        trail holds already is not run again, so a UI may ask for one op more at a time. False
        when the step ends first (the boundary's checkpoint is made by the move itself) or at the
        end of training."""
        k, i, M = self._k, self._i, self.M
        if self.at_end or i + n > M or n < 1:
            return False
        trail = self._trail_of(k)
        for j in range(i + 1, i + n + 1):
            if j not in trail:
                env = dict(self._env if j == i + 1 else trail[j - 1][0])
                if j < M:
                    _, _, last, _ = self._loop(env, k, j - 1, (k - 1) * M + j, live=True, near=k)
                    trail[j] = (env, _record(*last, env))
                else:                       # the step's last op, without its boundary: the move
                    op = self.ops[M - 1]    # there puts what it wrote in place (_peeked_last)
                    ins = {t: env.get(t) for t in op.inputs}
                    with np.errstate(all="ignore"):
                        self.program.fns[M - 1](env, k)
                    self.ops_executed += 1
                    trail[M] = (env, _record(op, k, ins, env))
                # the NaN/Inf scan of what the op wrote, ahead too (the stop detector's first
                # look: a run over this position skips it when all is finite)
                with np.errstate(all="ignore"):
                    self._finite[j] = self._detector.outputs_finite(j - 1, env)
        return True

    # --- going anywhere --------------------------------------------------------------------------
    def _check_pos(self, k: int, i: int) -> tuple[int, int]:
        if isinstance(k, bool) or isinstance(i, bool) or not isinstance(k, (int, np.integer)) \
                or not isinstance(i, (int, np.integer)):
            raise ValueError(f"position must be two integers, got ({k!r}, {i!r})")
        k, i = int(k), int(i)
        if i == self.M and k <= self.N:
            k, i = k + 1, 0
        if not (1 <= k <= self.N + 1) or not (0 <= i < self.M) or (k == self.N + 1 and i != 0):
            raise ValueError(f"no position ({k}, {i}): steps run 1..{self.N} with ops 0..{self.M - 1}, "
                             f"and the end is ({self.N + 1}, 0)")
        return k, i

    def goto(self, step: int, index: int) -> None:
        """Move the cursor so that the first ``index`` ops of ``step`` have run (exactly)."""
        k, i = self._check_pos(step, index)
        there = (k - 1) * self.M + i
        if self._lin() == there or self._from_trail(k, i):
            return
        how, src, _ = self._route(k, i)
        if how == "here":
            self._run_trail(there)          # (what was computed ahead, from the trail)
        elif how == "trail":
            self._from_trail(k, src)
        elif how == "start":
            env, rec = self._starts[src]
            self._env = dict(env)
            self._k, self._i = src, 0
            self.last_record = rec
        elif how == "ckpt":
            env = dict(self._ckpt[src])
            self.program.feed(env, src)
            self._env = env
            self._k, self._i = src, 0
            self.last_record = None
            if src == 1:
                self._starts[1] = (dict(env), None)
        lean = self._lean_end(self._lin(), k)
        if lean is not None:                # (bench_history's far jumps: ~25% fewer ms)
            self._live(lean, near=k, fast=self._fast_program())
        ready = self._peeked_last()         # (taken before the trail is made step k's)
        self._trail_of(k)
        self._live(there, near=k, trail=True, ready=ready)   # (the positions of step k it passes join the trail)
        self._prune()
        self._settle()

    def _route(self, k: int, i: int) -> tuple[str, int | None, int]:
        """The cheapest way to (k, i), in ops to re-run: forward from here, from a cached
        step-start environment, from a checkpoint at or before step k-1, or from the trail's
        nearest position before the target, in the target's step. (how, from where, ops: at most
        that many, fewer where the ops ahead were computed already.)"""
        M = self.M
        here, there = self._lin(), (k - 1) * M + i
        if here == there or (k == self._trail_k and i in self._trail):
            return "trail", i, 0
        how, src, cost = None, None, math.inf
        if there > here:
            how, cost = "here", there - here
        for s in self._starts:
            c = there - (s - 1) * M
            if 0 <= c < cost:
                how, src, cost = "start", s, c
        c = max((c for c in self._ckpt if c <= max(1, k - 1)), default=1)
        if there - (c - 1) * M < cost:
            how, src, cost = "ckpt", c, there - (c - 1) * M
        below = max((t for t in self._trail if t < i), default=None) if k == self._trail_k else None
        if below is not None and i - below < cost:
            how, src, cost = "trail", below, i - below
        return how, src, cost

    def goto_cost(self, step: int, index: int) -> int:
        """How many ops ``goto(step, index)`` would re-run, at most (a UI decides with it
        whether to go there ahead of a key; ValueError for no such position)."""
        return self._route(*self._check_pos(step, index))[2]

    def _lean_end(self, start: int, k: int) -> int | None:
        """Where a move from linear position ``start`` to step ``k`` may run the lean program to
        (see _fast_program): the start of step k-2, so that the last two steps before the target
        run whole and every tensor there is what stepping gives, bit for bit; None when that is
        not three steps away or nothing is left out."""
        end = (k - 3) * self.M
        if end - start <= 3 * self.M or self._fast_program() is None:
            return None
        return end

    def env_at(self, step: int, index: int) -> dict:
        """Every tensor of step ``step`` computed by its first ``index`` ops, and the persistent
        state as it was then, without moving the cursor (recomputed from the nearest cached step
        start, checkpoint or the cursor itself). Tensors of earlier steps may be absent."""
        k, i = self._check_pos(step, index)
        M = self.M
        there, here = (k - 1) * M + i, self._lin()
        if there == here:
            return dict(self._env)
        src, cost = None, math.inf
        if here < there and self._k == k:
            src, cost = ("here", self._k, self._i), there - here
        for s0 in self._starts:
            if s0 <= k and there - (s0 - 1) * M < cost:
                src, cost = ("start", s0, 0), there - (s0 - 1) * M
        c = max((c for c in self._ckpt if c <= k), default=1)
        if there - (c - 1) * M < cost:
            src = ("ckpt", c, 0)
        how, k0, i0 = src
        if how == "here":
            env = dict(self._env)
        elif how == "start":
            env = dict(self._starts[k0][0])
        else:
            env = dict(self._ckpt[k0])
            self.program.feed(env, k0)
        lean = self._lean_end((k0 - 1) * M + i0, k)
        if lean is not None:
            k0, i0, _, _ = self._loop(env, k0, i0, lean, live=False, fast=self._fast_program())
        self._loop(env, k0, i0, there, live=False)
        return env

    def record_at(self, step: int, index: int) -> OpRecord:
        """The record of op ``index`` of step ``step`` (what it read and wrote), without moving the
        cursor."""
        env = self.env_at(step, index)
        op = self.ops[index]
        ins = {n: env.get(n) for n in op.inputs}
        with np.errstate(all="ignore"):
            self.program.fns[index](env, step)
        return _record(op, step, ins, env)

    def back(self) -> Op | None:
        """Undo one operation, exactly. Returns the op undone, or None at (1, 0)."""
        if self.at_start:
            return None
        k, i = self._k, self._i
        k, i = (k, i - 1) if i > 0 else (k - 1, self.M - 1)
        self.goto(k, i)
        return self.ops[i]

    def stage_end(self) -> tuple[int, int]:
        """Where ``next_stage`` goes: the first op of the next stage, or the next step's start."""
        k, i = self._k, self._i
        st = self.ops[i].stage
        j = i
        while j < self.M and self.ops[j].stage == st:
            j += 1
        return (k, j) if j < self.M else (k + 1, 0)

    def next_stage(self) -> Stop | None:
        """Run to the first op of the next stage (or the next step), stopping at breakpoints."""
        if self.at_end:
            return None
        return self.run(until=self.stage_end())

    def finish_step(self) -> Stop | None:
        """Run to the end of this training step, (k+1, 0), stopping at breakpoints."""
        if self.at_end:
            return None
        return self.run(until=(self._k + 1, 0))

    # --- breakpoints -----------------------------------------------------------------------------
    @property
    def stop_on_nonfinite(self) -> bool:
        """Stop at the op that first produces a NaN/Inf (on by default)."""
        return self._nonfinite

    @stop_on_nonfinite.setter
    def stop_on_nonfinite(self, on: bool):
        self._nonfinite = bool(on)
        self._index_breakpoints()

    def _index_breakpoints(self):
        self._detector = Detector(self.ops, self.breakpoints, nonfinite=self._nonfinite)
        self._fast = None                   # rebuilt on demand: it depends on the breakpoints

    def _fast_program(self):
        """For a long continue: (a Program that leaves out what `nnstep run` leaves out, dLoss/d(the
        batch) and the parameters' deltas, unless a `when` condition reads one; its Detector), or
        None. Where one could be born Inf or NaN it is computed all the same, so the stops are the
        ones full stepping finds."""
        if self._fast is None:
            sc = self.scenario
            skip = lean_skip(sc, self.breakpoints)
            if not skip:
                self._fast = False
            else:
                prog = Program(sc, skip=skip)
                self._fast = (prog, Detector(prog.ops, self.breakpoints, nonfinite=self._nonfinite))
        return self._fast or None

    def has_op_breakpoint(self, op_name: str) -> bool:
        return op_name in self._detector.op_names

    def toggle_breakpoint(self, op_name: str) -> bool:
        """Toggle a stop before ``op_name`` in every step. Returns whether it is now set."""
        if op_name not in {op.name for op in self.ops}:
            raise KeyError(op_name)
        on = [b for b in self.breakpoints if b.op == op_name]
        if on:
            self.breakpoints = [b for b in self.breakpoints if b.op != op_name]
        else:
            self.breakpoints.append(Breakpoint(where="breakpoint (set here)", op=op_name))
        self._index_breakpoints()
        return not on

    def add_breakpoint(self, bp: Breakpoint):
        self.breakpoints.append(bp)
        self._index_breakpoints()

    def break_when(self, text: str) -> Breakpoint:
        """Add a condition breakpoint from the grammar of docs/scenario-format.md (``"linear1.out absmax > 10"`` or
        ``"nonfinite"``). Parsed, never evaluated; raises ScenarioError if malformed."""
        from ..scenario.conditions import parse_condition
        where = f"breakpoints[{len(self.breakpoints)}].when"
        cond = parse_condition(text, self.names, where=where)
        bp = Breakpoint(where=where.rsplit(".", 1)[0], when=cond)
        if cond.kind == "nonfinite":
            self._nonfinite = True
        self.add_breakpoint(bp)
        return bp

    def remove_breakpoint(self, bp: Breakpoint) -> bool:
        """Remove one breakpoint (e.g. the condition that just stopped the run). Whether it was set."""
        n = len(self.breakpoints)
        self.breakpoints = [b for b in self.breakpoints if b is not bp]
        self._index_breakpoints()
        return len(self.breakpoints) < n

    # --- continuing ------------------------------------------------------------------------------
    def run(self, until: tuple[int, int] | None = None, should_stop: Callable[[], bool] | None = None,
            check_every: int = 64) -> Stop:
        """Continue to the next breakpoint, NaN/Inf, ``until`` or the end; returns why it stopped
        (also kept as ``last_stop``). ``should_stop()`` is polled every ``check_every`` ops (for
        interrupting from another thread)."""
        M = self.M
        if self.at_end:
            self.last_stop = Stop("end", self._k, self._i)
            return self.last_stop
        if until is None:
            end = self.N * M
        else:
            uk, ui = self._check_pos(*until)
            end = (uk - 1) * M + ui
        found: list[Stop] = []

        def sink(s: Stop) -> bool:
            found.append(s)
            return True
        # a long continue runs the lean program and then re-derives the last two steps with the
        # whole one, so that where it stops every tensor is what stepping there gives, bit for bit;
        # the step-start copies made on the way are dropped (they lack what the lean program leaves
        # out), the checkpoints kept (they hold only the persistent state, the same either way)
        # (switched off for a while after two CI runs hung in the random-key TUI test; not
        # reproduced since in ~90 runs of that test with it on, nor by a random-move stress test of
        # the session, tests/debugger/test_session_stress.py; the abuse test now bounds the
        # continue worker for real and dumps every thread's stack if it ever hangs again)
        fast = self._fast_program() if end - self._lin() > 3 * M else None
        first = True
        if fast is None:
            first = self._run_trail(end, found)
        while not found and self._lin() < end:
            here = self._lin()
            chunk_end = end if should_stop is None else min(end, here + max(1, check_every))
            self._live(chunk_end, check=True, first=first, sink=sink, fast=fast,
                       ready=None if fast is not None else self._peeked_last())
            first = False
            if found:
                break
            if should_stop is not None and self._lin() < end and should_stop():
                found.append(Stop("interrupted", self._k, self._i))
                break
        if fast is not None:
            self._rederive()
        else:
            self._settle()
        if found:
            self.last_stop = found[0]
        elif self.at_end:
            self.last_stop = Stop("end", self._k, self._i)
        else:
            self.last_stop = Stop("until", self._k, self._i)
        return self.last_stop

    def _run_trail(self, end: int, found: list | None = None) -> bool:
        """The start of a move forward over ops computed ahead (peek): each is taken from the
        trail and, for a run (``found`` given), checked by the stop detector as the op runner
        checks an op it runs (advance): an op breakpoint before it (never before the run's first
        op), a NaN/Inf origin or a condition after it. Stops go to ``found``; returns whether the
        run's first op is still to come."""
        M, det, ops = self.M, self._detector, self.ops
        check = found is not None and not det.empty
        before = det.before if check else None
        first = True
        while self._lin() < end:
            k, i = self._k, self._i
            if i + 1 >= M or k != self._trail_k or i + 1 not in self._trail:
                break
            if before and not first and i in before:
                found.append(Stop("breakpoint", k, i, op=ops[i].name, breakpoint=before[i], stage=ops[i].stage))
                break
            over = det.overwritten[i] if check else None
            saved = {n: self._env.get(n) for n in over} if over else None
            self._from_trail(k, i + 1)
            first = False
            if check:
                with np.errstate(all="ignore"):     # (as in the op runner: an overflow is a stop, not a warning)
                    hit = det.after_op(ops[i], k, self._env, saved, finite=self._finite.get(i + 1, False))
                if hit is not None:
                    found.append(hit)
                    break
        return first

    def _rederive(self):
        """After a lean run: the cursor's position re-run with the whole program from the latest
        checkpoint at or before the step before it (at most two steps of work)."""
        k, i = self._k, self._i
        there = (k - 1) * self.M + i
        c = max(c for c in self._ckpt if c <= max(1, k - 1))
        self._starts = {}
        env = dict(self._ckpt[c])
        self.program.feed(env, c)
        self._env = env
        self._k, self._i = c, 0
        self.last_record = None
        if c == 1:
            self._starts[1] = (dict(env), None)
        self._new_trail(k)                      # (what the lean run left out is not in these)
        self._live(there, near=k)
        self._prune()
        self._settle()

    def reverse_run(self, should_stop: Callable[[], bool] | None = None, check_every: int = 64) -> Stop:
        """Back to the latest position before the cursor where run() would have stopped (a
        breakpoint or a NaN/Inf origin), or to (1, 0) if there is none. Rescans forward from the
        checkpoints, nearest first, in scratch environments: the cursor moves only once the stop is
        found. ``should_stop()`` is polled every ``check_every`` ops (for interrupting from
        another thread; the cursor then stays where it was); ``scanning`` says which step the scan
        has reached, for progress."""
        M = self.M
        upper = self._lin()
        self.scanning = None
        if upper == 0:
            self.last_stop = Stop("start", 1, 0)
            return self.last_stop
        hi = upper                  # scan [c, hi); stops at exactly hi count too, except the cursor's
        while True:
            c = max(c for c in self._ckpt if (c - 1) * M < hi)
            env = dict(self._ckpt[c])
            self.program.feed(env, c)
            found: list[Stop] = []

            def sink(s: Stop, limit=hi) -> bool:
                p = (s.step - 1) * M + s.index
                if p < upper and p <= limit:
                    found.append(s)
                return False
            k, i = c, 0
            while (k - 1) * M + i < hi:
                step_end = hi if should_stop is None else min(hi, (k - 1) * M + i + max(1, check_every))
                k, i, _, _ = self._loop(env, k, i, step_end, live=False, check=True, sink=sink)
                self.scanning = (k, i)
                if should_stop is not None and (k - 1) * M + i < hi and should_stop():
                    self.scanning = None
                    self.last_stop = Stop("interrupted", self._k, self._i)
                    return self.last_stop
            self.scanning = None
            if found:
                s = found[-1]
                self.goto(s.step, s.index)
                self.last_stop = s
                return s
            if c == 1:
                self.goto(1, 0)
                self.last_stop = Stop("start", 1, 0)
                return self.last_stop
            hi = (c - 1) * M
            if should_stop is not None and should_stop():
                self.last_stop = Stop("interrupted", self._k, self._i)
                return self.last_stop

    # --- measurement -----------------------------------------------------------------------------
    def history_bytes(self) -> int:
        """Bytes held by the history (checkpoints, step-start environments, the trail, the last
        record, the loss log) beyond the live environment."""
        live = {id(v) for v in self._env.values()}
        seen = set()
        total = self._loss.nbytes + self._has_loss.nbytes + (self._lr.nbytes if self._lr is not None else 0)
        held = list(self._starts.values()) + list(self._trail.values())
        dicts = list(self._ckpt.values()) + [env for env, _ in held]
        recs = [r for _, r in held if r is not None] + \
            ([self.last_record] if self.last_record is not None else [])
        for r in recs:
            dicts += [r.inputs, r.outputs]
        for d in dicts:
            for v in d.values():
                if isinstance(v, np.ndarray) and id(v) not in live and id(v) not in seen:
                    seen.add(id(v))
                    total += v.nbytes
        return total

    @property
    def checkpoints(self) -> list[int]:
        return sorted(self._ckpt)
