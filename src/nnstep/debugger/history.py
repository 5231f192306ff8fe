"""The debugger session's history (:class:`~nnstep.debugger.session.Session`): the checkpoints and
step-start environments it keeps, the policy that keeps them, the one route to a position and the
one restore of a checkpoint. The trail of the cursor's step and the look-ahead are
:mod:`.trail`'s.

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
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..model.plan import Op

RING = 4
NEAR_SPAN = 16
NEAR_EVERY = 4
MID_SPAN = 128
MID_EVERY = 32
FAR_COUNT = 16


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


def record(op: Op, k: int, ins: dict, env: dict) -> OpRecord:
    """The record of ``op``, run in step k, whose outputs are (still) in ``env``."""
    return OpRecord(k, op.index, op, ins, {n: env[n] for n in op.outputs if n in env})  # (a lean run: some left out)


class History:
    """The checkpoints (``ckpt``: step -> the persistent state at its start) and step-start
    environments (``starts``: step -> (every tensor at its start, the record of the op before))."""

    def __init__(self, program, policy: HistoryPolicy, n_steps: int) -> None:
        self.program = program
        self.policy = policy
        self.far = policy.far(n_steps)
        self.M = len(program.ops)
        self.ckpt: dict[int, dict] = {}
        self.starts: dict[int, tuple[dict, OpRecord | None]] = {}

    def reset(self) -> dict:
        """Only step 1's checkpoint and start; the environment at (1, 0)."""
        env = self.program.initial_env()
        self.ckpt = {1: self.program.checkpoint(env)}
        self.program.feed(env, 1)
        self.starts = {1: (dict(env), None)}
        return env

    def keep(self, c: int, k: int) -> bool:
        """Whether the policy keeps the checkpoint of step ``c`` for a cursor in step ``k``."""
        if c == 1:
            return True
        d, pol = k - c, self.policy
        if 0 <= d <= pol.ring:
            return True
        if 0 <= d <= pol.near_span and (c - 1) % pol.near_every == 0:
            return True
        if abs(d) <= pol.mid_span and (c - 1) % pol.mid_every == 0:
            return True
        return (c - 1) % self.far == 0

    def prune(self, k: int) -> None:
        """Drop what the policy does not keep for a cursor in step ``k``."""
        for c in [c for c in self.ckpt if not self.keep(c, k)]:
            del self.ckpt[c]
        for s in [s for s in self.starts if not (k - 1 <= s <= k)]:
            del self.starts[s]

    def passed(self, k: int, env: dict, last: tuple, near: int) -> None:
        """A run has reached the start of step ``k`` in ``env`` (``last``: (op, step, inputs) of the
        op before, whose outputs are still in ``env``): its checkpoint if the policy keeps it for a
        cursor in step ``near``, its step-start environment if it is that step's or the one before."""
        if k not in self.ckpt and self.keep(k, near):
            self.ckpt[k] = self.program.checkpoint(env)
        if k >= near - 1:
            self.starts[k] = (dict(env), record(*last, env))

    def restore(self, c: int) -> dict:
        """The environment at (c, 0) from the checkpoint of step ``c``: its persistent state, and
        step c's batch fed. The one place a checkpoint is restored."""
        env = dict(self.ckpt[c])
        self.program.feed(env, c)
        return env

    def route(self, k: int, i: int, here: int, trail, whole: bool = True) -> tuple[str, int | None, int]:
        """The cheapest way to (k, i), in ops to re-run: forward from the cursor (at linear position
        ``here``), from a cached step-start environment, from a checkpoint, or from the trail's
        nearest position before the target, in the target's step. (how, from where, ops: at most
        that many, fewer where the ops ahead were computed already.) ``whole``: the position must
        hold the previous step's tensors too (the cursor's, where value() falls back to them), so a
        checkpoint is taken from step k-1 at the latest; else from step k."""
        M = self.M
        there = (k - 1) * M + i
        if here == there or trail.get(k, i) is not None:
            return "trail", i, 0
        how, src, cost = None, None, math.inf
        if there > here:
            how, cost = "here", there - here
        for s in self.starts:
            c = there - (s - 1) * M
            if 0 <= c < cost:
                how, src, cost = "start", s, c
        c = max((c for c in self.ckpt if c <= (max(1, k - 1) if whole else k)), default=1)
        if there - (c - 1) * M < cost:
            how, src, cost = "ckpt", c, there - (c - 1) * M
        below = trail.below(k, i)
        if below is not None and i - below < cost:
            how, src, cost = "trail", below, i - below
        return how, src, cost
