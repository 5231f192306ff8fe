"""`[[expect]]`: run the scenario and judge every expectation at its step (docs/scenario-format.md, "[[expect]]")."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..engine.program import Program
from ..engine.runner import Detector, Stop, advance
from ..errors import ScenarioError
from ..model.scenario import Expect, Scenario


@dataclass
class Result:
    expect: Expect
    ok: bool
    got: np.ndarray
    error: float                          # the worst element's |got − value|
    at: tuple[int, ...] | None            # that element's index, for tensors of more than one element
    why: str = ""                         # for a non-finite value: where the run first produced one


@dataclass
class Report:
    results: list[Result]
    stop: Stop | None                     # where `nnstep run` (and the TUI's continue) would stop


def judge(sc: Scenario, e: Expect, got, first_bad: Stop | None = None) -> Result:
    want = e.value
    got = np.asarray(got, dtype=np.float64)
    if want.shape != got.shape and not (want.size == 1 and got.size == 1):
        raise ScenarioError(f"shape {list(want.shape)} does not match {e.tensor}, which has shape "
                            f"{list(got.shape)} at step {e.step}", file=sc.path, where=f"{e.where}.value")
    g = got.reshape(want.shape)
    with np.errstate(all="ignore"):
        err = np.abs(g - want)
        ok = bool(np.all(err <= e.atol + e.rtol * np.abs(want)))
    err = np.where(np.isfinite(err), err, np.inf)
    j = int(np.argmax(err))
    finite = bool(np.isfinite(g).all())
    why = ""
    if not finite and first_bad is not None:
        why = (f"the run first produced a NaN/Inf at step {first_bad.op_step}: {first_bad.op} "
               f"wrote it to {first_bad.tensor}")
    return Result(e, ok and finite, g, float(err.reshape(-1)[j]),
                  tuple(int(x) for x in np.unravel_index(j, err.shape)) if err.size > 1 else None, why)


def evaluate(sc: Scenario) -> Report:
    """Run up to the last expectation's step and judge every [[expect]] at its step (the tensor's
    value once that step has finished; step 0 = the initial parameters), in file order. The run does
    not halt at a NaN/Inf or a breakpoint, so values computed before it are still judged; the first
    place where `nnstep run` would stop is reported. Raises ScenarioError for an expectation whose
    shape cannot match its tensor."""
    prog = Program(sc)
    env = prog.initial_env()
    by_step: dict[int, list[Expect]] = {}
    for e in sc.expects:
        by_step.setdefault(e.step, []).append(e)
    last = max(by_step, default=0)
    results: dict[int, Result] = {}
    for e in by_step.get(0, []):
        results[id(e)] = judge(sc, e, env[e.tensor])
    stops: list[Stop] = []
    bad: list[Stop] = []

    def sink(s: Stop) -> bool:                # note the first stop of each kind; never halt
        if not stops:
            stops.append(s)
        if s.reason == "nonfinite" and not bad:
            bad.append(s)
        return False

    def step_done(k1: int):
        for e in by_step.get(k1 - 1, []):
            results[id(e)] = judge(sc, e, env[e.tensor], bad[0] if bad else None)

    if last >= 1:
        prog.feed(env, 1)
        det = Detector(prog.ops, sc.breakpoints, op_breakpoints=False)
        advance(prog, env, 1, 0, last * len(prog.ops), sc.train.steps, det, sink=sink, on_boundary=step_done)
    return Report([results[id(e)] for e in sc.expects], stops[0] if stops else None)
