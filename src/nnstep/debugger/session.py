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

History
-------
Stepping back is exact and cheap: checkpoints and step-start environments (:mod:`.history`, with
the cost model), and the trail of the cursor's step with what a look-ahead computed
(:mod:`.trail`). The loss, lr and gradient norms of each step are logged as ops run
(:mod:`.steplog`).

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

import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..engine.program import Program, lean_skip
from ..engine.runner import Detector, Stop, advance
from ..model.plan import Op
from ..model.scenario import Breakpoint, Scenario
from .history import History, HistoryPolicy, OpRecord, record
from .steplog import StepLog
from .trail import Trail


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


@dataclass
class _Stops:
    """A run that looks for stops: the detector's (of the program run), each to ``sink``, which
    returns True to halt there; ``first``: no op breakpoint before the first op."""
    detector: Detector
    sink: Callable[[Stop], bool]
    first: bool = False


class _Hooks:
    """What a run of the cursor's environment (or a look-ahead's copy) does as it goes: logs each
    op's step figures, keeps the record of the last op and, with ``trail``, every position of the
    trail's step it passes; at a step boundary, the checkpoint and step-start environment the
    policy keeps, relative to step ``near``, or to the moving cursor when None."""

    def __init__(self, session: "Session", env: dict, near: int | None, trail: bool) -> None:
        self.last = None
        M, log, history = session.M, session.log, session.history
        held = session.trail.at if trail else None
        trail_k = session.trail.k if trail else None

        def on_op(op, kk, ins):
            self.last = (op, kk, ins)
            if kk == trail_k and op.index + 1 < M:
                held[op.index + 1] = (dict(env), record(op, kk, ins, env))
            log.note(op.index, kk, env)

        def on_boundary(kk):
            if near is None:                # the cursor itself moves: policy relative to it
                session._k = kk
                history.passed(kk, env, self.last, kk)
                history.prune(kk)
            else:                           # a jump: policy relative to its target step
                history.passed(kk, env, self.last, near)
        self.on_op, self.on_boundary = on_op, on_boundary


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
        self.history = History(self.program, self.policy, self.N)
        self.trail = Trail()
        self.log = StepLog(scenario, self.program)
        # per layer with trainable parameters, its parameters' gradients (the TUI's gradient-norm plot)
        self.grad_layers: list[tuple[str, tuple[str, ...]]] = self.log.grad_layers
        self.last_record: OpRecord | None = None
        self.last_stop: Stop | None = None
        self.ops_executed = 0               # every op run so far, re-runs included (for benchmarks)
        self.scanning: tuple[int, int] | None = None   # where a reverse_run's scan is, while it runs
        self._reset()

    # --- state -----------------------------------------------------------------------------------
    def _reset(self):
        self._env = self.history.reset()
        self._k, self._i = 1, 0
        self.last_record = None
        self.trail.of(1)

    def _settle(self):
        """The cursor has moved: keep its position in the trail of its step, for a move back, or
        forward again, within the step."""
        self.trail.keep(self._k, self._i, self._env, self.last_record)

    def _restore(self, how: str, src: int | None, k: int) -> tuple[dict, int, int, OpRecord | None]:
        """(environment, step, op, record of the op before) where a route (History.route) starts,
        the environment a copy: the cursor's (``here``), a position of the trail of step ``k``, a
        step-start environment or a checkpoint."""
        if how == "here":
            return dict(self._env), self._k, self._i, self.last_record
        if how == "trail":
            env, rec = self.trail.at[src]
            return dict(env), k, src, rec
        if how == "start":
            env, rec = self.history.starts[src]
            return dict(env), src, 0, rec
        return self.history.restore(src), src, 0, None

    def _put(self, env: dict, k: int, i: int, rec: OpRecord | None) -> None:
        self._env, self._k, self._i, self.last_record = env, k, i, rec

    def _from_trail(self, k: int, i: int) -> bool:
        """Put the cursor at (k, i) from the trail, if it holds that position."""
        if self.trail.get(k, i) is None:
            return False
        self._put(*self._restore("trail", i, k))
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
            from ..errors import clean, cut, did_you_mean
            raise KeyError(f'unknown tensor "{cut(clean(name))}"{did_you_mean(name, self.names)}')
        return self._env.get(name)

    def step_start_value(self, name: str):
        """A tensor's value at the start of the cursor's step, (k, 0): e.g. a parameter before this
        step's update, as the backward pass read it. None if not available."""
        st = self.history.starts.get(self._k)
        return st[0].get(name) if st is not None else None

    def values(self) -> dict:
        """Every tensor as of the cursor (a shallow copy; arrays are never modified in place)."""
        return dict(self._env)

    # --- the step log ----------------------------------------------------------------------------
    @property
    def losses(self) -> dict[int, float]:
        """Loss of every step computed so far (including steps ahead of the cursor, computed before)."""
        return self.log.losses()

    def loss_history(self) -> list[tuple[int, float]]:
        """(step, loss) of every step whose loss has been computed as of the cursor."""
        ks, ls = self.loss_arrays()
        return list(zip(ks.tolist(), ls.tolist()))

    def loss_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The same as loss_history(), as two numpy arrays (steps, losses): cheap for long runs."""
        return self.log.loss_arrays(self._k, self._i)

    def grad_norm_arrays(self) -> tuple[np.ndarray, list[str], np.ndarray]:
        """(steps, layer names, norms[step, layer]) for every step whose backward stage has run as
        of the cursor: per layer, the 2-norm over its trainable parameters' gradients."""
        return self.log.grad_norm_arrays(self._k, self._i)

    def grad_norms_so_far(self) -> list[float | None]:
        """Per layer of ``grad_layers``, the 2-norm of its parameter gradients as far as the cursor's
        step has computed them: None for a layer whose backward op has not run yet in this step
        (before the backward stage ends, grad_norm_arrays has nothing of this step)."""
        return self.log.grad_norms_so_far(self._k, self._i, self._env)

    def lr_arrays(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(steps, lr in force) for the steps of loss_arrays(), or None without a schedule."""
        return self.log.lr_arrays(self._k, self._i)

    # --- the one loop every move goes through -----------------------------------------------------
    def _loop(self, env: dict, k: int, i: int, end: int, prog=None, stops: _Stops | None = None,
              hooks: _Hooks | None = None):
        """Run ops of ``prog`` (the session's Program by default) from (k, i) in ``env`` until
        linear position ``end``, through the one op runner. ``stops``: stop where its detector
        says (see _Stops). ``hooks``: log, keep records, checkpoints and the trail as it goes (see
        _Hooks); without them, a scratch run. Returns (k, i, (op, step, inputs) of the last op
        run or None, halted). The outputs of that op are still in ``env`` when this returns
        (nothing has run since), so the caller builds its record from them."""
        prog = prog or self.program
        start = (k - 1) * self.M + i
        k, i, halted = advance(prog, env, k, i, end, self.N, stops and stops.detector,
                               first=bool(stops and stops.first), sink=stops and stops.sink,
                               on_op=hooks and hooks.on_op, on_boundary=hooks and hooks.on_boundary)
        ran = (k - 1) * self.M + i - start
        self.ops_executed += ran - (isinstance(prog, _Ready) and ran > 0)     # (the ready op did not run)
        return k, i, hooks and hooks.last, halted

    def _live(self, end: int, near: int | None = None, trail: bool = False, prog=None,
              stops: _Stops | None = None):
        """Advance the cursor's environment to ``end`` and set the cursor: checkpoints and
        step-start environments kept relative to step ``near`` (a jump's target), or to the moving
        cursor when None; ``trail``: every position of the trail's step it passes joins the trail
        (a jump's replay: the next move back finds it there, sharing its arrays)."""
        hooks = _Hooks(self, self._env, near, trail)
        k, i, last, halted = self._loop(self._env, self._k, self._i, end, prog, stops, hooks)
        self._k, self._i = k, i
        if last is not None:
            self.last_record = record(*last, self._env)
        return halted

    def _ready(self, prog=None):
        """The program for a move over the step's last op: what a look-ahead computed for it put
        in its place (_Ready), or ``prog`` (the session's) as it is."""
        ready = self.trail.last_op_ahead(self._k, self._i, self.M, self._env)
        prog = prog or self.program
        return prog if ready is None else _Ready(prog, self.M - 1, ready)

    # --- moving forward --------------------------------------------------------------------------
    def step(self) -> OpRecord | None:
        """Run the next operation; its record, or None at the end. Ignores breakpoints."""
        if self.at_end:
            return None
        k, i = self._k, self._i
        if i + 1 == self.M or not self._from_trail(k, i + 1):    # (a boundary checkpoints and prunes)
            self._live(self._lin() + 1, prog=self._ready())
            self._settle()
        return self.last_record

    def ahead(self, n: int) -> tuple[dict, OpRecord] | None:
        """The tensors ``n`` ops ahead of the cursor (after its ``n``-th next op; for the step's
        last op, before the next batch is fed) and that op's record, if a peek computed them, else
        None."""
        got = self.trail.get(self._k, self._i + n) if n >= 1 else None
        return None if got is None else (dict(got[0]), got[1])

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
        trail = self.trail.of(k)
        for j in range(i + 1, i + n + 1):
            if j not in trail:
                env = dict(self._env if j == i + 1 else trail[j - 1][0])
                if j < M:
                    hooks = _Hooks(self, env, k, False)
                    _, _, last, _ = self._loop(env, k, j - 1, (k - 1) * M + j, hooks=hooks)
                    trail[j] = (env, record(*last, env))
                else:                       # the step's last op, without its boundary: the move
                    op = self.ops[M - 1]    # there puts what it wrote in place (Trail.last_op_ahead)
                    ins = {t: env.get(t) for t in op.inputs}
                    with np.errstate(all="ignore"):
                        self.program.fns[M - 1](env, k)
                    self.ops_executed += 1
                    trail[M] = (env, record(op, k, ins, env))
                # the NaN/Inf scan of what the op wrote, ahead too (the stop detector's first
                # look: a run over this position skips it when all is finite)
                with np.errstate(all="ignore"):
                    self.trail.finite[j] = self._detector.outputs_finite(j - 1, env)
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

    def _route(self, k: int, i: int, whole: bool = True) -> tuple[str, int | None, int]:
        return self.history.route(k, i, self._lin(), self.trail, whole)

    def goto(self, step: int, index: int) -> None:
        """Move the cursor so that the first ``index`` ops of ``step`` have run (exactly)."""
        k, i = self._check_pos(step, index)
        there = (k - 1) * self.M + i
        if self._lin() == there or self._from_trail(k, i):
            return
        how, src, _ = self._route(k, i)
        if how == "here":
            self._run_trail(there)          # (what was computed ahead, from the trail)
        else:
            self._put(*self._restore(how, src, k))
            if how == "ckpt" and src == 1:
                self.history.starts[1] = (dict(self._env), None)
        lean = self._lean_end(self._lin(), k)
        if lean is not None:                # (bench_history's far jumps: ~25% fewer ms)
            self._live(lean, near=k, prog=self._fast_program()[0])
        prog = self._ready()                # (taken before the trail is made step k's)
        self.trail.of(k)
        self._live(there, near=k, trail=True, prog=prog)   # (the positions of step k it passes join the trail)
        self.history.prune(self._k)
        self._settle()

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
        state as it was then, without moving the cursor (recomputed from the cursor, the trail, the
        nearest cached step start or checkpoint). Tensors of earlier steps may be absent."""
        k, i = self._check_pos(step, index)
        there = (k - 1) * self.M + i
        if there == self._lin():
            return dict(self._env)
        env, k0, i0, _ = self._restore(*self._route(k, i, whole=False)[:2], k)
        lean = self._lean_end((k0 - 1) * self.M + i0, k)
        if lean is not None:
            k0, i0, _, _ = self._loop(env, k0, i0, lean, prog=self._fast_program()[0])
        self._loop(env, k0, i0, there)
        return env

    def record_at(self, step: int, index: int) -> OpRecord:
        """The record of op ``index`` of step ``step`` (what it read and wrote), without moving the
        cursor."""
        env = self.env_at(step, index)
        op = self.ops[index]
        ins = {n: env.get(n) for n in op.inputs}
        with np.errstate(all="ignore"):
            self.program.fns[index](env, step)
        return record(op, step, ins, env)

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
            prog, detector = fast if fast is not None else (self._ready(), self._detector)
            self._live(chunk_end, prog=prog, stops=_Stops(detector, sink, first))
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
            if i + 1 >= M or self.trail.get(k, i + 1) is None:
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
                    hit = det.after_op(ops[i], k, self._env, saved, finite=self.trail.finite.get(i + 1, False))
                if hit is not None:
                    found.append(hit)
                    break
        return first

    def _rederive(self):
        """After a lean run: the cursor's position re-run with the whole program from the latest
        checkpoint at or before the step before it (at most two steps of work)."""
        k, i = self._k, self._i
        there = (k - 1) * self.M + i
        history = self.history
        c = max(c for c in history.ckpt if c <= max(1, k - 1))
        history.starts = {}
        self._put(history.restore(c), c, 0, None)
        if c == 1:
            history.starts[1] = (dict(self._env), None)
        self.trail.reset(k)                     # (what the lean run left out is not in these)
        self._live(there, near=k)
        history.prune(self._k)
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
            c = max(c for c in self.history.ckpt if (c - 1) * M < hi)
            env = self.history.restore(c)
            found: list[Stop] = []

            def sink(s: Stop, limit=hi) -> bool:
                p = (s.step - 1) * M + s.index
                if p < upper and p <= limit:
                    found.append(s)
                return False
            k, i = c, 0
            while (k - 1) * M + i < hi:
                step_end = hi if should_stop is None else min(hi, (k - 1) * M + i + max(1, check_every))
                k, i, _, _ = self._loop(env, k, i, step_end, stops=_Stops(self._detector, sink))
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
        total = self.log.nbytes
        held = list(self.history.starts.values()) + list(self.trail.at.values())
        dicts = list(self.history.ckpt.values()) + [env for env, _ in held]
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
        return sorted(self.history.ckpt)
