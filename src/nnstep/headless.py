"""The headless commands: run, check, trace, gradcheck, explain. Thin printers over the one op
runner (:func:`nnstep.engine.runner.advance`) and the one stop detector that the debugger's Session
uses too, so they stop where the TUI stops. No Textual here (a test proves it)."""
from __future__ import annotations

import os
import sys

import numpy as np

from . import jsonio
from .engine.program import Program, lean_skip
from .engine.runner import Detector, Stop, advance
from .errors import ScenarioError
from .scenario import load_scenario
from .model.scenario import Scenario
from .model.stats import global_norm


def _out(s: str = ""):
    sys.stdout.write(s + "\n")


def _steps(sc: Scenario, steps: int | None) -> int:
    return sc.train.steps if steps is None else steps


def run_skip(sc: Scenario, honor_breakpoints: bool = True) -> set[str]:
    """Tensors `run` never reads, so its Program need not compute them: dLoss/d(input) and the
    parameters' deltas, unless a `when` breakpoint reads one of them (engine.program.lean_skip).
    (`trace`, `check`, `gradcheck` and the debugger's stepping compute everything.)"""
    return lean_skip(sc, None if honor_breakpoints else [])


def _stop_text(stop: Stop) -> str:
    if stop.reason == "nonfinite":
        return (f"stopped at step {stop.op_step}: {stop.op} produced a non-finite value (NaN/Inf) in "
                f"{stop.tensor}")
    return f"stopped at step {stop.op_step} after {stop.op}: {stop.message}"


def _first_stop(stops: list):
    def sink(s: Stop) -> bool:
        stops.append(s)
        return True
    return sink


def keep_freed_memory() -> None:
    """glibc only: keep freed blocks for reuse instead of returning them to the system.

    Every op writes fresh arrays (nothing is updated in place, which the session's records rely on),
    and glibc serves each one above 128 KiB with its own mmap and unmaps it when freed, so a fresh
    process page-faults through every gradient and parameter of every step: 300 steps of a
    784-128-10 MLP took 1.32x a hand-written script without these two settings and 1.14x with them
    (bench/bench_process.py --without-mallopt, same rounds). Raising the mmap threshold to glibc's
    maximum (32 MiB) and the trim threshold lets the heap recycle them.
    Allocation never changes an arithmetic result. Anything but glibc: nothing happens."""
    if sys.platform != "linux" or os.environ.get("NNSTEP_NO_MALLOPT"):
        return
    try:
        import ctypes
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024)
    mallopt(M_TRIM_THRESHOLD, 256 * 1024 * 1024)


def cmd_run(path: str, steps: int | None, as_json: bool, save: str | None, honor_breakpoints: bool = True) -> int:
    sc = load_scenario(path)
    if save:
        from .fileio import check_output
        check_output(save, "--save", "the parameters", "trained.npz", sc.inputs)
    n = _steps(sc, steps)
    if n > 10:                      # worth it over many steps; a short run saves importing ctypes
        keep_freed_memory()
    prog = Program(sc, skip=run_skip(sc, honor_breakpoints))
    env = prog.initial_env()
    prog.feed(env, 1)
    # `run` stops where a condition holds and at a NaN/Inf origin, as the TUI's continue does; op and
    # stage breakpoints are for stepping, and a headless run passes them
    det = Detector(prog.ops, sc.breakpoints if honor_breakpoints else [], op_breakpoints=False, skip=prog.skip)
    params = sc.trainable
    initial = {name: env[name] for name in sc.param_names} if as_json else None
    rows = []
    if not as_json:
        _out(f"{sc.name}: {n} step{'s' if n != 1 else ''}, {sc.dtype}, {len(sc.layers)} layer{'s' if len(sc.layers) != 1 else ''}, "
             f"{sc.loss.type} loss, {sc.optimizer.type} (lr {sc.optimizer.lr:g})")
        _out(f"{'step':>6}  {'loss':>16}  {'|grad|':>12}" + (f"  {'lr':>12}" if sc.optimizer.schedule else ""))

    sched = sc.optimizer.schedule is not None
    lr_now = [float(env["lr"])] if sched else [None]   # the lr in force; `lr schedule` writes the next one

    def step_done(k1: int):                 # step k1 - 1 has finished (its update included)
        k = k1 - 1
        loss = float(env["loss"])
        if as_json:
            rows.append({"step": k, "loss": jsonio.num(loss),
                         "grads": {p: jsonio.arr(env[f"{p}.grad"]) for p in params},
                         "params": {p: jsonio.arr(env[p]) for p in params}})
            if sched:
                rows[-1]["lr"] = jsonio.num(lr_now[0])
        else:
            g = global_norm([env[f"{p}.grad"] for p in params])
            # 10 significant digits: 0.046945125, not the float's 0.0469451250000001 (--json keeps them all)
            _out(f"{k:>6}  {loss:>16.10g}  {g:>12.6g}" + (f"  {lr_now[0]:>12.6g}" if sched else ""))
        if sched:
            lr_now[0] = float(env["lr"])

    stops: list[Stop] = []
    advance(prog, env, 1, 0, n * len(prog.ops), n, det, sink=_first_stop(stops), on_boundary=step_done)
    stopped = stops[0] if stops else None
    if as_json:
        doc = {"scenario": sc.name, "dtype": sc.dtype,
               "initial": {p: jsonio.arr(v) for p, v in initial.items()}, "steps": rows}
        if stopped is not None:
            doc["stopped"] = stopped.as_json()
        import json
        json.dump(doc, sys.stdout)
        _out()
    if stopped is not None:
        sys.stderr.write(f"nnstep: {_stop_text(stopped)}\n")
        if save:                    # parameters the run did not finish (perhaps holding Inf) replace nothing
            sys.stderr.write(f"nnstep: --save: nothing written to {save}, since the run stopped before its end\n")
        return 1
    if save:
        from .fileio import save_npz
        save_npz(save, {name: env[name] for name in sc.param_names})
        if not as_json:
            _out(f"saved {len(sc.param_names)} parameters to {save}")
    return 0


def _fmt_array(a, precision: int = 6) -> str:
    a = np.asarray(a)
    if a.dtype.kind == "f":
        a = a + 0.0                       # −0 (a masked score's gradient) is printed as 0
    if a.ndim == 0:
        return f"{float(a):.{precision + 3}g}"
    s = np.array2string(a, precision=precision, threshold=64, edgeitems=3, max_line_width=100,
                        floatmode="maxprec")
    return f"{s}  shape {list(a.shape)}" if a.size > 8 else s


def cmd_trace(path: str, steps: int | None, as_json: bool, honor_breakpoints: bool = True) -> int:
    from .layers.formula import constants

    sc = load_scenario(path)
    n = _steps(sc, steps)
    prog = Program(sc)
    env = prog.initial_env()
    prog.feed(env, 1)
    det = Detector(prog.ops, sc.breakpoints if honor_breakpoints else [], op_breakpoints=False)
    ops_out = []
    M = len(prog.ops)

    def show(op, k, ins):
        outs = {t: env[t] for t in op.outputs}
        consts = constants(op.formula)
        if as_json:
            ops_out.append({"step": k, "index": op.index, "stage": op.stage, "name": op.name, "layer": op.layer,
                            "formula": op.formula_text, "constants": consts,
                            "inputs": {t: (jsonio.arr(v) if v is not None else None) for t, v in ins.items()},
                            "outputs": {t: jsonio.arr(v) for t, v in outs.items()}})
            return
        _out(f"step {k}  op {op.index + 1}/{M} (index {op.index})  [{op.stage}]  {op.name}")
        _out(f"    {op.formula_text}")
        if consts:
            _out("    where " + ", ".join(f"{s} = {v:g}" for s, v in consts.items()))
        for t, v in ins.items():
            _out(f"    in   {t} = " + ("(not yet computed)" if v is None else
                                       _fmt_array(v).replace("\n", "\n" + " " * (10 + len(t)))))
        for t, v in outs.items():
            _out(f"    out  {t} = " + _fmt_array(v).replace("\n", "\n" + " " * (10 + len(t))))

    stops: list[Stop] = []
    advance(prog, env, 1, 0, n * M, n, det, sink=_first_stop(stops), on_op=show)
    stopped = stops[0] if stops else None
    if as_json:
        doc = {"scenario": sc.name, "ops": ops_out}
        if stopped:
            doc["stopped"] = stopped.as_json()
        import json
        json.dump(doc, sys.stdout)
        _out()
    if stopped:
        sys.stderr.write(f"nnstep: {_stop_text(stopped)}\n")
        return 1
    return 0


# --- check ---------------------------------------------------------------------------------------
def cmd_check(paths: list[str], answers: str | None = None) -> int:
    """`nnstep check FILE...`: every expectation as pass/FAIL with expected, got and the worst
    element's error, and every [[ask]] and [[note]] checked (the op, the tensor, the index, the
    step); a summary per file, and over all files when there are several. Exit 2 if any file is
    bad input, else 1 if any expectation fails, else 0 (docs/scenario-format.md, "[[expect]]").
    ``answers``: grade that results document against the one FILE too (1 unless all are right)."""
    from .debugger.expect import evaluate

    if answers is not None and len(paths) != 1:
        sys.stderr.write(f"nnstep: error: --answers: grades the answers to one scenario; give one FILE, not "
                         f"{len(paths)}\n")
        return 2
    bad = failed = 0
    total_pass = total_fail = 0
    for path in paths:
        try:
            sc = load_scenario(path)
            report = evaluate(sc)
            lesson = _check_lesson(sc)
        except ScenarioError as e:
            sys.stderr.write(f"nnstep: error: {e}\n")
            _out(f"{path}: bad input (see the error above)")
            bad += 1
            continue
        results = report.results
        p = sum(r.ok for r in results)
        f = len(results) - p
        total_pass += p
        total_fail += f
        _out(f"{path}: {sc.name}")
        for r in results:
            e = r.expect
            tag = "pass" if r.ok else "FAIL"
            at = "" if r.at is None else " at [" + ", ".join(map(str, r.at)) + "]"
            line = (f"  {tag}  step {e.step}  {e.tensor}: expected {_short(e.value)}, got {_short(r.got)}, "
                    f"error {r.error:.3g}{at} (atol {e.atol:g}, rtol {e.rtol:g})")
            if r.why:
                line += f"  [{r.why}]"
            _out(line)
        if report.stop is not None:
            _out(f"  note: `nnstep run` would stop here: {_stop_text(report.stop)}; the expectations "
                 f"are judged on the run continued past it")
        _out(f"  {p} passed, {f} failed" if results else "  no [[expect]] in this file")
        if lesson:
            _out(f"  {lesson}")
        if f:
            failed += 1
    if len(paths) > 1:
        _out(f"{len(paths)} files: {total_pass} passed, {total_fail} failed" + (f", {bad} bad input" if bad else ""))
    if answers is not None and not bad:
        try:
            wrong = _grade(sc, answers)
        except ScenarioError as e:
            sys.stderr.write(f"nnstep: error: {e}\n")
            return 2
        failed += wrong
    return 2 if bad else (1 if failed else 0)


def _check_lesson(sc) -> str:
    """Every [[ask]]'s element inside its tensor (the loader checked the rest): ScenarioError if
    not. A line for the report, or "" when the scenario neither asks nor notes."""
    if not sc.asks and not sc.notes:
        return ""
    from .debugger.lesson import Lesson
    from .debugger.session import Session
    Lesson(Session(sc))
    def n(k, what):
        return f"{k} {what}{'' if k == 1 else 's'}"
    return f"lesson: {n(len(sc.asks), 'question')} and {n(len(sc.notes), 'note')}, all in place"


def _grade(sc, path: str) -> int:
    """`check FILE --answers RESULTS.json`: each question re-graded from what was typed; 1 if any is
    not right (wrong, skipped, unreadable or not answered), else 0."""
    from .debugger.lesson import grade, read_results
    from .debugger.session import Session
    from .errors import clean
    doc = read_results(path)
    rows = grade(Session(sc), doc, path)
    right = sum(r.correct for r in rows)
    _out(f"{clean(path)}: {right} of {len(rows)} right")
    for r in rows:
        a = r.ask
        what = f"step {a.step}  {a.op}: {a.element}"
        if r.status in ("right", "wrong"):
            said = clean(r.answer)[:80]
            shown = said if said == f"{r.value:.12g}" else f"{said} = {r.value:.9g}"
            line = f"  {r.status:<12} {what}: answered {shown}, nnstep {r.engine_value:.9g}"
        elif r.status == "unreadable":
            line = f"  {r.status:<12} {what}: answered {clean(r.answer)[:80]!r}, not a number; nnstep {r.engine_value:.9g}"
        else:
            line = f"  {r.status:<12} {what}: nnstep {r.engine_value:.9g}"
        _out(line)
    return 0 if right == len(rows) and rows else 1


def _short(a) -> str:
    a = np.asarray(a)
    if a.size == 1:
        return f"{float(a.reshape(-1)[0]):.12g}"
    s = np.array2string(a, precision=9, threshold=12, edgeitems=2, max_line_width=10_000, floatmode="maxprec")
    return " ".join(s.split())


# --- gradcheck -----------------------------------------------------------------------------------
def cmd_gradcheck(path: str, tol: float, eps: float, max_elements: int, as_json: bool = False) -> int:
    from .engine.gradcheck import gradcheck

    sc = load_scenario(path)
    rows = gradcheck(sc, eps=eps, max_elements=max_elements)
    fail = [r for r in rows if not (r[3] <= tol)]
    if as_json:
        import json
        json.dump({"scenario": sc.name, "tolerance": tol, "eps": eps, "params": [
            {"param": r[0], "shape": list(r[1]), "checked": r[2], "worst_error": jsonio.num(r[3]), "index": list(r[4]),
             "analytic": jsonio.num(r[5]), "numeric": jsonio.num(r[6]), "ok": r[3] <= tol} for r in rows]}, sys.stdout)
        _out()
        return 1 if fail else 0
    _out(f"{sc.name}: central differences (eps {eps:g}, float64) against the analytic gradient at step 1")
    if not rows:
        _out("this network has no parameters: there is no gradient to check")
        return 0
    _out(f"error = |analytic − numeric| / max(|analytic|, |numeric|, 1e-3); tolerance {tol:g}")
    w = max(len(r[0]) for r in rows)
    _out(f"  {'parameter':<{w}}  {'checked':>12}  {'worst error':>11}  {'at':<10} {'analytic':>14} {'numeric':>14}")
    for r in rows:
        size = int(np.prod(r[1])) if r[1] else 1
        tag = "ok" if r[3] <= tol else "FAIL"
        at = "[" + ",".join(map(str, r[4])) + "]"
        _out(f"  {r[0]:<{w}}  {f'{r[2]}/{size}':>12}  {r[3]:>11.2e}  {at:<10} {r[5]:>14.8g} {r[6]:>14.8g}  {tag}")
    _out(f"{len(rows) - len(fail)} of {len(rows)} parameters within tolerance")
    return 1 if fail else 0


# --- explain -------------------------------------------------------------------------------------
def cmd_explain(path: str, element: str, step: int, as_json: bool) -> int:
    """`nnstep explain FILE "TENSOR[i, j]" [--step K] [--json]` (docs/commands.md)."""
    from .debugger.explain import explain, parse_element
    from .debugger.session import Session

    sc = load_scenario(path)
    try:
        name, index = parse_element(element)
    except ValueError as e:
        raise ScenarioError(str(e), where="TENSOR") from None
    if step > sc.train.steps:
        raise ScenarioError(f"step {step} is beyond train.steps = {sc.train.steps}", file=sc.path, where="--step")
    s = Session(sc)
    try:
        ex = explain(s, name, index, step=step)
    except KeyError as e:
        raise ScenarioError(str(e.args[0]), file=sc.path, where="TENSOR") from None
    except IndexError as e:
        raise ScenarioError(str(e), file=sc.path, where="TENSOR") from None
    if as_json:
        d = ex.as_json()
        d["value"] = jsonio.num(d["value"]) if d["value"] is not None else None
        d["engine_value"] = jsonio.num(d["engine_value"]) if d["engine_value"] is not None else None
        import json
        json.dump(d, sys.stdout)
        _out()
    else:
        _out(ex.text)
    return 0 if ex.ok else 1


# --- compare -------------------------------------------------------------------------------------
def cmd_compare(path: str, mine: str, as_json: bool, rtol: float, atol: float) -> int:
    """`nnstep compare FILE MINE.npz [--json] [--rtol R --atol A]`: exit 0 all agree, 1 a
    difference, 2 bad input (an unknown tensor name among them, after the report is printed)."""
    from .debugger.compare import compare, load_tensors

    sc = load_scenario(path)
    tensors = load_tensors(mine)
    rep = compare(sc, tensors, rtol=rtol, atol=atol, source=mine)
    if as_json:
        import json
        json.dump(rep.as_json(), sys.stdout)
        _out()
    else:
        _out(rep.text)
    if rep.unknown:
        raise rep.unknown_error()
    return rep.exit_code
