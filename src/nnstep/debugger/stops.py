"""Why the cursor stopped: the answer the session gives after run(), reverse_run() and friends."""
from __future__ import annotations

from dataclasses import dataclass

from ..scenario.model import Breakpoint


@dataclass(frozen=True)
class Stop:
    reason: str                      # "breakpoint" | "nonfinite" | "end" | "start" | "interrupted"
    step: int                        # the position the cursor stopped at
    index: int
    op: str | None = None            # the op that triggered it (the one about to run, or the one just run)
    tensor: str | None = None        # the tensor that triggered it (conditions, NaN/Inf)
    value: float | None = None       # the statistic compared, or the first non-finite element
    breakpoint: Breakpoint | None = None
    detail: str = ""

    @property
    def message(self) -> str:
        if self.reason == "end":
            return "reached the end of training"
        if self.reason == "start":
            return "reached the start: no earlier stop"
        if self.reason == "interrupted":
            return f"interrupted at step {self.step}, op {self.index}"
        if self.reason == "nonfinite":
            return f"{self.op} produced a non-finite value ({_num(self.value)}) in {self.tensor}"
        bp = self.breakpoint
        if bp is not None and bp.when is not None and bp.when.kind == "compare":
            w = bp.when
            return f"breakpoint {bp.where}: {w.tensor} {w.stat} = {_num(self.value)} {w.op} {w.number:g}, after {self.op}"
        if bp is not None and bp.stage:
            return f"breakpoint {bp.where}: entering stage {bp.stage} (before {self.op})"
        if bp is not None:
            return f"breakpoint {bp.where}: before {self.op}"
        return f"breakpoint before {self.op}"

    def as_json(self) -> dict:
        return {"step": self.step, "op": self.op, "tensor": self.tensor, "reason": self.reason}


def _num(v) -> str:
    if v is None:
        return "?"
    return f"{v:.6g}"
