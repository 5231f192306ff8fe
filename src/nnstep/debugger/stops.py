"""Why the cursor stopped: the answer the session gives after run(), reverse_run() and friends.

A :class:`Stop` says where the cursor is, which breakpoint (its key path in the scenario, e.g.
``breakpoints[1]``, and what it watches), which op triggered it, and for a condition or a NaN/Inf
which tensor and which value: the statistic compared, or the first non-finite element and its index.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..scenario.model import Breakpoint

REASONS = ("breakpoint", "nonfinite", "until", "end", "start", "interrupted")


@dataclass(frozen=True)
class Stop:
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
                    f"(step {self._op_step()}; its inputs were finite)")
        bp = self.breakpoint
        if bp is not None and bp.when is not None and bp.when.kind == "compare":
            w = bp.when
            where = (f"after {self.op} in step {self._op_step()}" if self.op is not None
                     else f"in step {self.step}'s batch")
            return (f"breakpoint {bp.where} (when \"{w.text}\"): {w.tensor} {w.stat} = {_num(self.value)} "
                    f"{w.op} {w.number:g}, {where}")
        if bp is not None and bp.stage:
            return f"breakpoint {bp.where}: entering stage {bp.stage}, before {self.op} in step {self.step}"
        if bp is not None:
            return f"breakpoint {bp.where}: before {self.op} in step {self.step}"
        return f"breakpoint before {self.op}"

    def _op_step(self) -> int:
        """The step of the op that just ran (a stop after the last op of step k is at (k+1, 0))."""
        return self.step - 1 if self.index == 0 else self.step

    def as_json(self) -> dict:
        """The ``stopped`` object of ``run --json``: ``step`` is the step the op belongs to."""
        after = self.reason == "nonfinite" or (self.kind == "when" and self.op is not None)
        return {"step": self._op_step() if after else self.step, "op": self.op, "tensor": self.tensor,
                "reason": self.reason}


def _num(v) -> str:
    if v is None:
        return "?"
    return f"{v:.6g}"
