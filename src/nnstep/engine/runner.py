"""The one op runner and the one stop detector. `nnstep run`, `trace`, `check`, `gradcheck` and the
debugger's Session all move through training with :func:`advance`, and all stop where
:class:`Detector` says, so they cannot disagree about where a run stops.

Where a run stops (the meaning every front end shares):

* an **op breakpoint** (``op = "backward linear1"``, every step) stops *before* the op, at
  ``(k, index of the op)``; a **stage breakpoint** before the first op of the stage;
* a **condition** (``when = "<tensor> <stat> <op> <number>"``) is checked after every op that writes
  the tensor, and stops *after* that op, at ``(k, i + 1)``, when it holds. The batch, ``input`` and
  ``target``, is fed with the step's first operation: a condition on it is checked after op 1 of
  every step, step 1 included;
* **NaN/Inf** (on by default) stops after an op that writes a non-finite value while every tensor it
  read was finite: at the origin, not where a NaN merely propagates;
* a position just past the last op of step k is written ``(k + 1, 0)``.

:func:`advance` does only the work it is asked for: without a detector and without callbacks it is
the bare loop over the ops' functions that `nnstep run` needs.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ..layers.records import record
from ..model.scenario import Breakpoint
from ..model.stats import all_finite, finite_hint, first_nonfinite

REASONS = ("breakpoint", "nonfinite", "until", "end", "start", "interrupted")


@record(frozen=True)
class Stop:
    """Why the cursor stopped: where, which breakpoint (its key path in the scenario and what it
    watches), which op triggered it, and for a condition or a NaN/Inf which tensor and value (the
    statistic compared, or the first non-finite element and its index)."""
    reason: str                      # one of REASONS; "until" = run(until=...) reached its position
    step: int                        # the position the cursor stopped at
    index: int
    op: str | None = None            # the op that triggered it (the one about to run, or the one just run)
    tensor: str | None = None        # the tensor that triggered it (conditions, NaN/Inf)
    value: float | None = None       # the statistic compared, or the first non-finite element
    breakpoint: Breakpoint | None = None
    detail: str = ""
    stage: str | None = None         # the stage of ``op``
    element: tuple[int, ...] | None = None   # NaN/Inf: index of the first non-finite element
    after: bool = False              # the stop is after ``op`` (a condition, a NaN/Inf), not before it

    @property
    def kind(self) -> str:
        """What kind of stop: "op", "stage", "when", "nonfinite", or the reason for the others."""
        bp = self.breakpoint
        if self.reason == "breakpoint" and bp is not None:
            return "op" if bp.op else ("stage" if bp.stage else "when")
        return self.reason

    @property
    def position(self) -> tuple[int, int]:
        return (self.step, self.index)

    @property
    def op_step(self) -> int:
        """The step of the op that triggered it (a stop after the last op of step k is at (k+1, 0))."""
        return self.step - 1 if (self.after and self.index == 0) else self.step

    @property
    def message(self) -> str:
        if self.reason == "end":
            return "reached the end of training"
        if self.reason == "until":
            return f"reached step {self.step}, op {self.index}"
        if self.reason == "start":
            return "reached the start: no earlier stop"
        if self.reason == "interrupted":
            return f"interrupted at step {self.step}, op {self.index}"
        if self.reason == "nonfinite":
            at = "" if not self.element else "[" + ", ".join(map(str, self.element)) + "]"
            return (f"{self.op} produced a non-finite value: {self.tensor}{at} = {_num(self.value)} "
                    f"(step {self.op_step}; its inputs were finite)")
        bp = self.breakpoint
        if bp is not None and bp.when is not None and bp.when.kind == "compare":
            w = bp.when
            fed = w.tensor in ("input", "target")
            where = (f"in step {self.op_step}'s batch, fed with {self.op}" if fed
                     else f"after {self.op} in step {self.op_step}")
            return (f"breakpoint {bp.where} (when \"{w.text}\"): {w.tensor} {w.stat} = {_num(self.value)} "
                    f"{w.op} {w.number:g}, {where}")
        if bp is not None and bp.stage:
            return f"breakpoint {bp.where}: entering stage {bp.stage}, before {self.op} in step {self.step}"
        if bp is not None:
            return f"breakpoint {bp.where}: before {self.op} in step {self.step}"
        return f"breakpoint before {self.op}"

    def as_json(self) -> dict:
        """The ``stopped`` object of ``run --json`` and ``trace --json``: ``step`` is the op's step."""
        return {"step": self.op_step, "op": self.op, "tensor": self.tensor, "reason": self.reason}


def _num(v) -> str:
    return "?" if v is None else f"{v:.6g}"


class Detector:
    """Every stop rule of a scenario's breakpoints over one program, indexed by op."""

    def __init__(self, ops, breakpoints, *, nonfinite: bool = True, conditions: bool = True,
                 op_breakpoints: bool = True, skip=frozenset()):
        self.nonfinite = nonfinite
        self.before: dict[int, Breakpoint] = {}          # op index -> breakpoint before it
        self.op_names: set[str] = set()
        first: dict[str, int] = {}
        for op in ops:
            first.setdefault(op.stage, op.index)
        by_name = {op.name: op.index for op in ops}
        if op_breakpoints:
            for bp in breakpoints:
                if bp.op and bp.op in by_name:
                    self.op_names.add(bp.op)
                    self.before.setdefault(by_name[bp.op], bp)
                elif bp.stage and bp.stage in first:
                    self.before.setdefault(first[bp.stage], bp)
        conds: dict[str, list[Breakpoint]] = {}
        if conditions:
            for bp in breakpoints:
                if bp.when is not None and bp.when.kind == "compare":
                    conds.setdefault(bp.when.tensor, []).append(bp)
        self.after: dict[int, list[Breakpoint]] = {}
        for op in ops:
            written = op.outputs + op.also_writes + (("input", "target") if op.index == 0 else ())
            bps = [bp for t in written for bp in conds.get(t, [])]
            if bps:
                self.after[op.index] = bps
        # what each op's NaN/Inf check looks at: the outputs it computes
        # every output, left-out ones included: a Program that leaves a tensor out writes none (a
        # stale value is removed), and computes it anyway where it could be born non-finite
        self.checked = [tuple(op.outputs) for op in ops]
        # inputs an op overwrites (update P reads and writes P): their old values are kept to judge
        # whether the op's inputs were finite
        self.overwritten = [tuple(t for t in op.inputs if t in op.outputs) for op in ops]
        self.ops = ops

    @property
    def empty(self) -> bool:
        return not (self.nonfinite or self.before or self.after)

    def after_op(self, op, k: int, env: dict, saved: dict | None, finite: bool = False) -> Stop | None:
        """After ``op`` of step k ran: a NaN/Inf origin, or a condition that holds. ``finite``:
        what the op wrote is known to be all finite numbers (scanned ahead): no NaN/Inf scan."""
        i = op.index
        if self.nonfinite and not finite:
            if not self.outputs_finite(i, env):
                for t in self.checked[i]:
                    v = env.get(t)
                    if v is not None and not all_finite(v):
                        if self._inputs_finite(op, env, saved):
                            val, el = first_nonfinite(v)
                            return Stop("nonfinite", k, i + 1, op=op.name, tensor=t, value=val, element=el,
                                        stage=op.stage, after=True)
                        break
        bps = self.after.get(i)
        if bps:
            for bp in bps:
                v = env.get(bp.when.tensor)
                if v is None:
                    continue
                ok, s = bp.when.holds(v)
                if ok:
                    return Stop("breakpoint", k, i + 1, op=op.name, tensor=bp.when.tensor, value=s, breakpoint=bp,
                                stage=op.stage, after=True)
        return None

    def outputs_finite(self, i: int, env: dict) -> bool:
        """Whether what op ``i`` wrote in ``env`` is all finite: one finite_hint over its outputs
        (finite unless one is not; run under ``np.errstate(over="ignore")``)."""
        total = 0.0
        for t in self.checked[i]:
            v = env.get(t)
            if v is not None:
                total += finite_hint(v)
        return math.isfinite(total)

    def _inputs_finite(self, op, env, saved) -> bool:
        over = self.overwritten[op.index]
        for t in op.inputs:
            v = saved.get(t) if (over and t in over and saved is not None) else env.get(t)
            if v is not None and not all_finite(v):
                return False
        return True


def advance(prog, env: dict, k: int, i: int, end: int, n_steps: int, detector: Detector | None = None, *,
            first: bool = False, sink: Callable[[Stop], bool] | None = None,
            on_op: Callable | None = None, on_boundary: Callable[[int], None] | None = None):
    """Run the ops of ``prog`` in ``env`` from position (k, i) up to linear position ``end``
    (``(k - 1)·M + i`` counts ops from the start). After the last op of step k, step k + 1's batch
    is fed (while k + 1 <= n_steps) and ``on_boundary(k + 1)`` is called.

    ``on_op(op, k, ins)`` is called after every op with the values it read (captured only when
    ``on_op`` is given). With a ``detector``, every stop goes to ``sink(stop)``, which returns True
    to halt there; ``first``: no op breakpoint before the very first op (continuing from a
    breakpoint moves on). Returns ``(k, i, halted)``."""
    ops, fns = prog.ops, prog.fns
    M = len(ops)
    pos = (k - 1) * M + i
    det = detector if detector is not None and not detector.empty else None
    before = det.before if det is not None else None
    over = det.overwritten if det is not None else None
    with np.errstate(all="ignore"):
        while pos < end:
            if before and not first and i in before:
                bp = before[i]
                if sink(Stop("breakpoint", k, i, op=ops[i].name, breakpoint=bp, stage=ops[i].stage)):
                    return k, i, True
            first = False
            op = ops[i]
            if on_op is not None:
                ins = {n: env.get(n) for n in op.inputs}
                saved = ins
            elif det is not None and over[i]:
                ins = None
                saved = {n: env.get(n) for n in over[i]}
            else:
                ins = saved = None
            fns[i](env, k)
            if on_op is not None:
                on_op(op, k, ins)
            hit = det.after_op(op, k, env, saved) if det is not None else None
            i += 1
            pos += 1
            if i == M:
                k, i = k + 1, 0
                if k <= n_steps:
                    prog.feed(env, k)
                if on_boundary is not None:
                    on_boundary(k)
                if hit is not None:
                    hit = Stop(hit.reason, k, 0, op=hit.op, tensor=hit.tensor, value=hit.value,
                               breakpoint=hit.breakpoint, stage=hit.stage, element=hit.element, after=True)
            if hit is not None and sink(hit):
                return k, i, True
    return k, i, False
