"""The debugger session: a cursor over every operation of every training step.

Position ``(k, i)`` means the first ``i`` operations of step ``k`` have run; ``(N+1, 0)`` is the end.

History and its cost model
--------------------------
Nothing is copied per operation: the engine never modifies an array in place, so a record or a
checkpoint holds references. A *checkpoint* at step ``c`` is the persistent state at ``(c, 0)``:
parameters, optimizer state and batchnorm running statistics (about 1x the model, 2x with a momentum
buffer, 3x with Adam's m and v). The batch order is a pure function of the seed and the step, so it
needs no state. Any position ``(k, i)`` is rebuilt exactly by restoring a checkpoint ``c <= k-1`` and
re-running ``k - c`` whole steps plus ``i`` operations (the previous step must be re-run too, since
``value()`` falls back to its tensors).

Which checkpoints are kept, by distance ``d`` from the cursor's step (``_keep``):
  * ``d <= RING`` (8): every step                      -> one op back or a step back re-runs <= 2 steps
  * ``d <= MID_SPAN`` (256): every ``MID_EVERY`` (32)th -> a jump in the last 100 steps re-runs <= 33
  * anywhere: every ``far``-th, ``far`` = a power of two >= N / FAR_COUNT (24), at least 64
    -> a jump anywhere re-runs at most ``far`` steps; for N = 10,000 that is 512 steps.
  * step 1 (the initial state) always.
So about RING + MID_SPAN/MID_EVERY + FAR_COUNT = 8 + 8 + 24 = 40 checkpoints at most, whatever N is.
For the 784-128-10 net with momentum (0.8 MB of parameters + 0.8 MB of buffer) that is < 64 MB.
Checkpoints are made whenever the cursor passes a step boundary that the policy keeps (also while
re-running), and dropped when the cursor moves away. The environment at the start of the cursor's
step is also kept (a shallow dict), so stepping back inside a step re-runs only ops of that step.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..engine.program import STAGES, Op, Program
from ..engine.stats import all_finite
from ..scenario.model import Breakpoint, Scenario
from .stops import Stop

RING = 8
MID_SPAN = 256
MID_EVERY = 32
FAR_COUNT = 24


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


class Session:
    def __init__(self, scenario: Scenario | str | os.PathLike):
        if not isinstance(scenario, Scenario):
            from ..scenario import load_scenario
            scenario = load_scenario(scenario)
        self.scenario = scenario
        self.program = Program(scenario)
        self.ops: list[Op] = self.program.ops
        self.M = len(self.ops)
        self.N = scenario.train.steps
        self.stop_on_nonfinite = True
        self.breakpoints: list[Breakpoint] = list(scenario.breakpoints)
        self._index_breakpoints()
        self.names = {"input", "target"}
        for op in self.ops:
            self.names.update(op.inputs, op.outputs, op.also_writes)
        far = max(64, self.N / FAR_COUNT)
        self._far = 1 << math.ceil(math.log2(far))
        self.losses: dict[int, float] = {}
        self.last_record: OpRecord | None = None
        self.last_stop: Stop | None = None
        self._reset()

    # --- state -----------------------------------------------------------------------------------
    def _reset(self):
        env = self.program.initial_env()
        self._ckpt: dict[int, dict] = {1: self.program.checkpoint(env)}
        self._k, self._i = 1, 0
        self.program.feed(env, 1)
        self._env = env
        self._start_env = (1, dict(env))
        self.last_record = None

    def restart(self):
        """Back to (1, 0), keeping breakpoints."""
        self.goto(1, 0)
        self.last_stop = None

    @property
    def position(self) -> tuple[int, int]:
        return (self._k, self._i)

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
        """The latest value of a tensor at or before the cursor (None if not computed yet)."""
        if name not in self.names:
            from ..errors import did_you_mean
            raise KeyError(f'unknown tensor "{name}"{did_you_mean(name, self.names)}')
        return self._env.get(name)

    def loss_history(self) -> list[tuple[int, float]]:
        """(step, loss) of every step whose loss has been computed as of the cursor."""
        k = self._k
        done = k if (k <= self.N and self._i > self.program.stage_start["loss"]) else k - 1
        return [(s, self.losses[s]) for s in range(1, done + 1) if s in self.losses]

    def values(self) -> dict:
        """Every tensor as of the cursor (a shallow copy; arrays are never modified in place)."""
        return dict(self._env)

    # --- moving forward --------------------------------------------------------------------------
    def _keep(self, c: int, k: int) -> bool:
        if c == 1:
            return True
        d = abs(k - c)
        if d <= RING:
            return True
        if d <= MID_SPAN and (c - 1) % MID_EVERY == 0:
            return True
        return (c - 1) % self._far == 0

    def _prune(self):
        k = self._k
        for c in [c for c in self._ckpt if not self._keep(c, k)]:
            del self._ckpt[c]

    def _boundary(self, env: dict, k: int, target_k: int):
        """Called when ``env`` has just finished step k-1 and is at (k, 0)."""
        if k <= self.N:
            self.program.feed(env, k)
        if k not in self._ckpt and self._keep(k, target_k):
            self._ckpt[k] = self.program.checkpoint(env)

    def _exec(self, record: bool) -> OpRecord | None:
        """Run the op at the cursor and advance it."""
        k, i = self._k, self._i
        op = self.ops[i]
        env = self._env
        rec = None
        if record:
            ins = {n: env.get(n) for n in op.inputs}
            with np.errstate(all="ignore"):
                op.run(env, k)
            rec = OpRecord(k, i, op, ins, {n: env[n] for n in op.outputs})
        else:
            with np.errstate(all="ignore"):
                op.run(env, k)
        if op.stage == "loss":
            self.losses[k] = float(env["loss"])
        i += 1
        if i == self.M:
            k, i = k + 1, 0
            self._k, self._i = k, i
            self._boundary(env, k, k)
            self._start_env = (k, dict(env))
            self._prune()
        else:
            self._i = i
        return rec

    def step(self) -> OpRecord | None:
        """Run the next operation; its record, or None at the end."""
        if self.at_end:
            return None
        self.last_record = self._exec(True)
        return self.last_record

    # --- going anywhere --------------------------------------------------------------------------
    def _check_pos(self, k: int, i: int) -> tuple[int, int]:
        if not isinstance(k, (int, np.integer)) or not isinstance(i, (int, np.integer)):
            raise ValueError(f"position must be two integers, got ({k!r}, {i!r})")
        k, i = int(k), int(i)
        if i == self.M and k <= self.N:
            k, i = k + 1, 0
        if not (1 <= k <= self.N + 1) or not (0 <= i < self.M) or (k == self.N + 1 and i != 0):
            raise ValueError(f"no position ({k}, {i}): steps run 1..{self.N} with ops 0..{self.M - 1}, "
                             f"and the end is ({self.N + 1}, 0)")
        return k, i

    def goto(self, step: int, index: int) -> None:
        """Move the cursor so that the first ``index`` ops of ``step`` have run."""
        k, i = self._check_pos(step, index)
        if (k, i) == (self._k, self._i):
            return
        here = (self._k - 1) * self.M + self._i
        there = (k - 1) * self.M + i
        # cost, in ops, of each way to get there
        best = ("restore", None, math.inf)
        if there > here:
            best = ("forward", None, there - here)
        sk, senv = self._start_env
        if sk <= k and (sk - 1) * self.M <= there:
            cost = there - (sk - 1) * self.M
            if cost < best[2]:
                best = ("start", None, cost)
        c = max((c for c in self._ckpt if c <= max(1, k - 1)), default=1)
        cost = there - (c - 1) * self.M
        if cost < best[2]:
            best = ("restore", c, cost)
        how, c, _ = best
        if how == "start":
            self._env = dict(senv)
            self._k, self._i = sk, 0
        elif how == "restore":
            env = dict(self._ckpt[c])
            self.program.feed(env, c)
            self._env = env
            self._k, self._i = c, 0
            self._start_env = (c, dict(env))
        self._run_to(k, i)
        self._prune()

    def _run_to(self, k: int, i: int):
        """Run forward (no checks) to (k, i); records the last op so last_record is right."""
        target = (k - 1) * self.M + i
        while (self._k - 1) * self.M + self._i < target - 1:
            # inline of _exec(False) with checkpoints kept relative to the target
            kk, ii = self._k, self._i
            op = self.ops[ii]
            with np.errstate(all="ignore"):
                op.run(self._env, kk)
            if op.stage == "loss":
                self.losses[kk] = float(self._env["loss"])
            ii += 1
            if ii == self.M:
                kk, ii = kk + 1, 0
                self._boundary(self._env, kk, k)
                if kk == k:
                    self._start_env = (kk, dict(self._env))
            self._k, self._i = kk, ii
        if (self._k - 1) * self.M + self._i < target:
            self.last_record = self._exec(True)
        elif (k, i) == (1, 0):
            self.last_record = None

    def back(self):
        """Undo one operation, exactly. Returns the op undone, or None at (1, 0)."""
        if self.at_start:
            return None
        k, i = self._k, self._i
        k, i = (k, i - 1) if i > 0 else (k - 1, self.M - 1)
        self.goto(k, i)
        return self.ops[i]

    def next_stage(self) -> Stop | None:
        """Run to the first op of the next stage (or the next step), stopping at breakpoints."""
        if self.at_end:
            return None
        k, i = self._k, self._i
        st = self.ops[i].stage
        j = i
        while j < self.M and self.ops[j].stage == st:
            j += 1
        return self.run(until=(k, j) if j < self.M else (k + 1, 0))

    def finish_step(self) -> Stop | None:
        """Run to the end of this training step: (k+1, 0)."""
        if self.at_end:
            return None
        return self.run(until=(self._k + 1, 0))

    # --- breakpoints -----------------------------------------------------------------------------
    def _index_breakpoints(self):
        self._bp_ops: dict[str, Breakpoint] = {}
        self._bp_index: dict[int, Breakpoint] = {}
        self._conds: dict[str, list[Breakpoint]] = {}
        first = {}
        for op in self.ops:
            first.setdefault(op.stage, op.index)
        for bp in self.breakpoints:
            if bp.op:
                self._bp_ops.setdefault(bp.op, bp)
            elif bp.stage and bp.stage in first:
                self._bp_index.setdefault(first[bp.stage], bp)
            elif bp.when is not None and bp.when.kind == "compare":
                self._conds.setdefault(bp.when.tensor, []).append(bp)
        for op in self.ops:
            if op.name in self._bp_ops:
                self._bp_index.setdefault(op.index, self._bp_ops[op.name])
        self._cond_by_op = {}
        for op in self.ops:
            bps = []
            for t in op.outputs + op.also_writes:
                bps += self._conds.get(t, [])
            if bps:
                self._cond_by_op[op.index] = bps
        self.stop_on_nonfinite = self.stop_on_nonfinite

    def has_op_breakpoint(self, op_name: str) -> bool:
        return op_name in self._bp_ops

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

    def _after_op(self, op: Op, env: dict, k: int, inputs_finite: Callable[[], bool] | None):
        """Stops triggered by what ``op`` just wrote: a condition, or a new NaN/Inf."""
        if self.stop_on_nonfinite:
            for t in op.outputs:
                v = env.get(t)
                if v is not None and not all_finite(v):
                    if inputs_finite is None or inputs_finite():
                        bad = np.asarray(v).ravel()
                        first = bad[~np.isfinite(bad)][0]
                        return ("nonfinite", t, float(first), None)
        for bp in self._cond_by_op.get(op.index, ()):
            v = env.get(bp.when.tensor)
            if v is None:
                continue
            ok, s = bp.when.holds(v)
            if ok:
                return ("breakpoint", bp.when.tensor, s, bp)
        return None

    def _scan(self, env: dict, k: int, i: int, end: int, first: bool, on_stop) -> int:
        """Run ops from (k, i) in ``env`` up to the linear position ``end`` checking breakpoints.
        ``on_stop(stop) -> bool`` decides whether to halt. Returns the position reached."""
        M = self.M
        while (k - 1) * M + i < end and k <= self.N:
            if not first:
                bp = self._bp_index.get(i)
                if bp is not None:
                    s = Stop("breakpoint", k, i, op=self.ops[i].name, breakpoint=bp)
                    if on_stop(s, env, k, i):
                        return (k - 1) * M + i
            first = False
            op = self.ops[i]
            ins = [(n, env.get(n)) for n in op.inputs]
            with np.errstate(all="ignore"):
                op.run(env, k)
            if op.stage == "loss" and env is self._env:
                self.losses[k] = float(env["loss"])
            hit = self._after_op(op, env, k, lambda: all(v is None or all_finite(v) for _, v in ins))
            i += 1
            if i == M:
                k, i = k + 1, 0
                self._boundary(env, k, k)
                if env is self._env:
                    self._k, self._i = k, i
                    self._start_env = (k, dict(env))
                    self._prune()
            if env is self._env:
                self._k, self._i = k, i
            if hit is not None:
                reason, t, val, bp = hit
                s = Stop(reason, k, i, op=op.name, tensor=t, value=val, breakpoint=bp)
                if on_stop(s, env, k, i):
                    return (k - 1) * M + i
        return (k - 1) * M + i

    def run(self, until: tuple[int, int] | None = None, should_stop: Callable[[], bool] | None = None,
            check_every: int = 64) -> Stop:
        """Continue to the next breakpoint, NaN/Inf, ``until`` or the end; returns why it stopped.
        ``should_stop()`` is polled every ``check_every`` ops (for interrupting from another thread)."""
        if self.at_end:
            self.last_stop = Stop("end", self._k, self._i)
            return self.last_stop
        end = self.N * self.M if until is None else (self._check_pos(*until)[0] - 1) * self.M + self._check_pos(*until)[1]
        result: list[Stop] = []
        first = True
        while True:
            here = (self._k - 1) * self.M + self._i
            if here >= end:
                break
            chunk_end = min(end, here + max(1, check_every)) if should_stop is not None else end
            # run all but the last op of the chunk fast; _scan keeps self._env in step
            k, i = self._k, self._i

            def on_stop(s, env, kk, ii):
                result.append(s)
                return True
            self._scan(self._env, k, i, chunk_end, first, on_stop)
            first = False
            if result:
                break
            if should_stop is not None and should_stop():
                result.append(Stop("interrupted", self._k, self._i))
                break
        self._fix_last_record()
        if result:
            self.last_stop = result[0]
        elif self.at_end:
            self.last_stop = Stop("end", self._k, self._i)
        else:
            self.last_stop = Stop("until", self._k, self._i)
        return self.last_stop

    def _fix_last_record(self):
        """After a fast run, rebuild the record of the op just before the cursor."""
        if self.at_start:
            self.last_record = None
            return
        k, i = self._k, self._i
        pk, pi = (k, i - 1) if i > 0 else (k - 1, self.M - 1)
        if self.last_record is not None and (self.last_record.step, self.last_record.index) == (pk, pi):
            return
        self.goto(pk, pi)
        self.last_record = self._exec(True)

    def reverse_run(self) -> Stop:
        """Back to the previous position where a breakpoint (or a NaN/Inf) would have stopped."""
        M = self.M
        upper = (self._k - 1) * M + self._i
        if upper == 0:
            self.last_stop = Stop("start", 1, 0)
            return self.last_stop
        hi_k = self._k
        while True:
            c = max((c for c in self._ckpt if c < hi_k or c == 1), default=1)
            env = dict(self._ckpt[c])
            self.program.feed(env, c)
            found: list[Stop] = []

            def on_stop(s, e, kk, ii):
                if (s.step - 1) * M + s.index < upper:
                    found.append(s)
                return False
            self._scan(env, c, 0, upper, (c, 0) == (1, 0) and False, on_stop)
            if found:
                s = found[-1]
                self.goto(s.step, s.index)
                self.last_stop = s
                return s
            if c == 1:
                self.goto(1, 0)
                self.last_stop = Stop("start", 1, 0)
                return self.last_stop
            upper = (c - 1) * M
            hi_k = c

    # --- measurement -----------------------------------------------------------------------------
    def history_bytes(self) -> int:
        """Bytes held by the history (checkpoints, step-start cache) beyond the live environment."""
        live = {id(v) for v in self._env.values()}
        seen = set()
        total = 0
        for d in list(self._ckpt.values()) + [self._start_env[1]]:
            for v in d.values():
                if isinstance(v, np.ndarray) and id(v) not in live and id(v) not in seen:
                    seen.add(id(v))
                    total += v.nbytes
        return total

    @property
    def checkpoints(self) -> list[int]:
        return sorted(self._ckpt)
