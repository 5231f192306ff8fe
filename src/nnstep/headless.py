"""The headless commands: run, check, trace, gradcheck. No Textual here (a test proves it)."""
from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import replace

import numpy as np

from . import jsonio
from .engine.program import Program
from .engine.stats import all_finite
from .errors import ScenarioError
from .scenario import load_scenario
from .scenario.model import Scenario


def _out(s: str = ""):
    sys.stdout.write(s + "\n")


def _steps(sc: Scenario, steps: int | None) -> int:
    return sc.train.steps if steps is None else steps


def first_nonfinite(op, env):
    for t in op.outputs:
        v = env.get(t)
        if v is not None and not all_finite(v):
            return t
    return None


def run_skip(sc: Scenario, honor_breakpoints: bool = True) -> set[str]:
    """Tensors `run` never reads, so its Program need not compute them: the first layer's grad_in
    (dLoss/d(input)) and the parameters' deltas, unless a `when` breakpoint reads one of them.
    (`trace`, `check`, `gradcheck` and the debugger compute everything.)"""
    skip = {f"{sc.layers[0].name}.grad_in"} | {f"{p}.delta" for p in sc.trainable}
    if honor_breakpoints:
        skip -= {bp.when.tensor for bp in sc.breakpoints if bp.when is not None and bp.when.kind == "compare"}
    return skip


def _cond_check(sc: Scenario, prog: Program, honor_breakpoints: bool):
    """A check(op, env) for Program.run_step: NaN/Inf always, `when` breakpoints if asked.
    It runs inside run_step's np.errstate(all="ignore"), after every op, so it is kept cheap: one
    sum over all of an op's outputs is finite unless one of them holds a NaN/Inf (or the sum
    overflowed, which the element-wise scan then rules out)."""
    conds = {}
    if honor_breakpoints:
        for bp in sc.breakpoints:
            if bp.when is not None and bp.when.kind == "compare":
                conds.setdefault(bp.when.tensor, []).append(bp)
    by_op = {}
    for op in prog.ops:
        lst = [bp for t in op.outputs + op.also_writes for bp in conds.get(t, [])]
        if lst:
            by_op[op.index] = lst
    outs = [tuple(t for t in op.outputs if t not in prog.skip) for op in prog.ops]
    add, isfinite = np.add.reduce, math.isfinite      # positional axis and math.isfinite: ~1 µs less an op

    def check(op, env):
        total = 0.0
        for t in outs[op.index]:
            v = env.get(t)
            if v is not None:
                total = total + add(v, None)
        if not isfinite(total):
            for t in outs[op.index]:
                v = env.get(t)
                if v is not None and not all_finite(v):
                    return {"op": op.name, "tensor": t, "reason": "nonfinite"}
        if op.index not in by_op:
            return None
        for bp in by_op[op.index]:
            ok, s = bp.when.holds(env[bp.when.tensor])
            if ok:
                return {"op": op.name, "tensor": bp.when.tensor, "reason": "breakpoint",
                        "detail": f"{bp.where}: {bp.when.tensor} {bp.when.stat} = {s:.6g} {bp.when.op} {bp.when.number:g}"}
        return None
    return check


def cmd_run(path: str, steps: int | None, as_json: bool, save: str | None, honor_breakpoints: bool = True) -> int:
    sc = load_scenario(path)
    n = _steps(sc, steps)
    prog = Program(sc, skip=run_skip(sc, honor_breakpoints))
    env = prog.initial_env()
    check = _cond_check(sc, prog, honor_breakpoints)
    params = sc.trainable
    initial = {name: env[name] for name in sc.param_names} if as_json else None
    rows = []
    stopped = None
    if not as_json:
        _out(f"{sc.name}: {n} step{'s' if n != 1 else ''}, {sc.dtype}, {len(sc.layers)} layer{'s' if len(sc.layers) != 1 else ''}, "
             f"{sc.loss.type} loss, {sc.optimizer.type} (lr {sc.optimizer.lr:g})")
        _out(f"{'step':>6}  {'loss':>22}  {'|grad|':>12}")
    # conditions on the batch itself fire where it is fed, before the step's first op (as in the session)
    feed_conds = [bp for bp in sc.breakpoints if honor_breakpoints and bp.when is not None
                  and bp.when.kind == "compare" and bp.when.tensor in ("input", "target")]
    for k in range(1, n + 1):
        if feed_conds:
            prog.feed(env, k)
            for bp in feed_conds:
                ok, s = bp.when.holds(env[bp.when.tensor])
                if ok:
                    w = bp.when
                    stopped = {"step": k, "op": prog.ops[0].name, "tensor": w.tensor, "reason": "breakpoint",
                               "detail": f"{bp.where}: {w.tensor} {w.stat} = {s:.6g} {w.op} {w.number:g}",
                               "at": "before"}
                    break
            if stopped is not None:
                break
        stop = prog.run_step(env, k, check)
        if stop is not None:
            stopped = dict(stop, step=k)
            break
        loss = float(env["loss"])
        if as_json:
            rows.append({"step": k, "loss": jsonio.num(loss),
                         "grads": {p: jsonio.arr(env[f"{p}.grad"]) for p in params},
                         "params": {p: jsonio.arr(env[p]) for p in params}})
        else:
            with np.errstate(all="ignore"):          # a huge but finite gradient: its norm is inf
                g = math.sqrt(sum(float(np.sum(np.square(env[f"{p}.grad"], dtype=np.float64))) for p in params))
            _out(f"{k:>6}  {loss:>22.15g}  {g:>12.6g}")
    if as_json:
        doc = {"scenario": sc.name, "dtype": sc.dtype,
               "initial": {p: jsonio.arr(v) for p, v in initial.items()}, "steps": rows}
        if stopped is not None:
            doc["stopped"] = {k: stopped[k] for k in ("step", "op", "tensor", "reason")}
        json.dump(doc, sys.stdout)
        _out()
    if stopped is not None:
        what = "a non-finite value (NaN/Inf)" if stopped["reason"] == "nonfinite" else "a breakpoint"
        msg = f"stopped at step {stopped['step']}: {stopped['op']} produced {what} in {stopped['tensor']}"
        if stopped["reason"] == "breakpoint":
            msg = (f"stopped at step {stopped['step']} {stopped.get('at', 'after')} {stopped['op']}: "
                   f"breakpoint {stopped['detail']}")
        sys.stderr.write(f"nnstep: {msg}\n")
    if save:
        from .fileio import save_npz
        save_npz(save, {name: env[name] for name in sc.param_names})
        if not as_json:
            _out(f"saved {len(sc.param_names)} parameters to {save}")
    return 1 if stopped is not None else 0


def _fmt_array(a, precision: int = 6) -> str:
    a = np.asarray(a)
    if a.ndim == 0:
        return f"{float(a):.{precision + 3}g}"
    s = np.array2string(a, precision=precision, threshold=64, edgeitems=3, max_line_width=100,
                        floatmode="maxprec")
    return f"{s}  shape {list(a.shape)}" if a.size > 8 else s


def cmd_trace(path: str, steps: int | None, as_json: bool) -> int:
    sc = load_scenario(path)
    n = _steps(sc, steps)
    prog = Program(sc)
    env = prog.initial_env()
    ops_out = []
    stopped = None
    M = len(prog.ops)
    for k in range(1, n + 1):
        prog.feed(env, k)
        for op in prog.ops:
            ins = {t: env.get(t) for t in op.inputs}
            prog.run_op(env, k, op.index)
            outs = {t: env[t] for t in op.outputs}
            if as_json:
                ops_out.append({"step": k, "index": op.index, "stage": op.stage, "name": op.name, "layer": op.layer,
                                "formula": op.formula,
                                "inputs": {t: (jsonio.arr(v) if v is not None else None) for t, v in ins.items()},
                                "outputs": {t: jsonio.arr(v) for t, v in outs.items()}})
            else:
                _out(f"step {k}  op {op.index + 1}/{M} (index {op.index})  [{op.stage}]  {op.name}")
                _out(f"    {op.formula}")
                for t, v in ins.items():
                    _out(f"    in   {t} = " + ("(not yet computed)" if v is None else
                                               _fmt_array(v).replace("\n", "\n" + " " * (10 + len(t)))))
                for t, v in outs.items():
                    _out(f"    out  {t} = " + _fmt_array(v).replace("\n", "\n" + " " * (10 + len(t))))
            t = first_nonfinite(op, env)
            if t is not None:
                stopped = {"step": k, "op": op.name, "tensor": t, "reason": "nonfinite"}
                break
        if stopped:
            break
    if as_json:
        doc = {"scenario": sc.name, "ops": ops_out}
        if stopped:
            doc["stopped"] = stopped
        json.dump(doc, sys.stdout)
        _out()
    if stopped:
        sys.stderr.write(f"nnstep: stopped at step {stopped['step']}: {stopped['op']} produced a non-finite "
                         f"value (NaN/Inf) in {stopped['tensor']}\n")
        return 1
    return 0


# --- check ---------------------------------------------------------------------------------------
def evaluate_expects(sc: Scenario):
    """Run the scenario up to the last expectation's step and evaluate every [[expect]] at its step
    (the tensor's value once that step has finished; step 0 = the initial parameters). Returns one
    dict per expectation, in file order: expect, ok, got, error (the worst element's |got - value|),
    at (that element's index, for tensors of more than one element) and, for a non-finite value,
    why: where the run first produced a NaN/Inf. The run does not stop at a NaN/Inf, so values
    computed before it are still judged. Raises ScenarioError for an expectation whose shape cannot
    match its tensor."""
    prog = Program(sc)
    env = prog.initial_env()
    by_step: dict[int, list] = {}
    for e in sc.expects:
        by_step.setdefault(e.step, []).append(e)
    results = {}
    last = max(by_step, default=0)
    first_bad = None

    def judge(e, got):
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
        r = {"expect": e, "ok": ok and bool(np.isfinite(g).all()), "got": g, "error": float(err.reshape(-1)[j]),
             "at": tuple(int(x) for x in np.unravel_index(j, err.shape)) if err.size > 1 else None}
        if not np.isfinite(g).all() and first_bad is not None:
            r["why"] = (f"the run first produced a NaN/Inf at step {first_bad['step']}: {first_bad['op']} "
                        f"wrote it to {first_bad['tensor']}")
        return r

    for e in by_step.get(0, []):
        results[id(e)] = judge(e, env[e.tensor])

    def note_first_bad(op, env):                  # remember the first NaN/Inf; never halts the run
        nonlocal first_bad
        t = first_nonfinite(op, env)
        if t is not None:
            first_bad = {"step": k, "op": op.name, "tensor": t}
        return None
    for k in range(1, last + 1):
        prog.run_step(env, k, note_first_bad if first_bad is None else None)
        for e in by_step.get(k, []):
            results[id(e)] = judge(e, env[e.tensor])
    return [results[id(e)] for e in sc.expects]


def _short(a) -> str:
    a = np.asarray(a)
    if a.size == 1:
        return f"{float(a.reshape(-1)[0]):.12g}"
    s = np.array2string(a, precision=9, threshold=12, edgeitems=2, max_line_width=10_000, floatmode="maxprec")
    return " ".join(s.split())


def cmd_check(paths: list[str]) -> int:
    """`nnstep check FILE...`: every expectation as pass/FAIL with expected, got and the worst
    element's error; a summary per file, and over all files when there are several. Exit 2 if any
    file is bad input, else 1 if any expectation fails, else 0 (SPEC §4c)."""
    bad = failed = 0
    total_pass = total_fail = 0
    for path in paths:
        try:
            sc = load_scenario(path)
            results = evaluate_expects(sc)
        except ScenarioError as e:
            sys.stderr.write(f"nnstep: error: {e}\n")
            _out(f"{path}: bad input (see the error above)")
            bad += 1
            continue
        p = sum(r["ok"] for r in results)
        f = len(results) - p
        total_pass += p
        total_fail += f
        _out(f"{path}: {sc.name}")
        for r in results:
            e = r["expect"]
            tag = "pass" if r["ok"] else "FAIL"
            at = "" if r["at"] is None else " at [" + ", ".join(map(str, r["at"])) + "]"
            line = (f"  {tag}  step {e.step}  {e.tensor}: expected {_short(e.value)}, got {_short(r['got'])}, "
                    f"error {r['error']:.3g}{at} (atol {e.atol:g}, rtol {e.rtol:g})")
            if "why" in r:
                line += f"  [{r['why']}]"
            _out(line)
        _out(f"  {p} passed, {f} failed" if results else "  no [[expect]] in this file")
        if f:
            failed += 1
    if len(paths) > 1:
        _out(f"{len(paths)} files: {total_pass} passed, {total_fail} failed" + (f", {bad} bad input" if bad else ""))
    return 2 if bad else (1 if failed else 0)


# --- gradcheck -----------------------------------------------------------------------------------
def gradcheck(sc: Scenario, eps: float = 1e-6, max_elements: int = 64, step: int = 1):
    """Central differences in float64 against the analytic gradient of every parameter at ``step``'s
    batch and the initial parameters. Returns rows: (param, shape, n_checked, worst_err, index,
    analytic, numeric). The error is |a − n| / max(|a|, |n|, 1e-3): relative for gradients above
    1e-3, absolute (scaled by 1000) below, where finite differences are only good to ~1e-10."""
    sc64 = replace(sc, dtype="float64", x=sc.x.astype(np.float64) if sc.x.dtype.kind == "f" else sc.x,
                   y=sc.y.astype(np.float64) if sc.y.dtype.kind == "f" else sc.y,
                   initial={k: v.astype(np.float64) for k, v in sc.initial.items()})
    prog = Program(sc64)
    env = prog.run_until(prog.initial_env(), step, "update")
    base = {p: env[p] for p in sc64.param_names}
    rng = np.random.default_rng([sc.seed, 3])
    rows = []
    for p in sc64.param_names:
        a_full = env[f"{p}.grad"]
        size = a_full.size
        if size <= max_elements:
            idxs = range(size)
        else:
            top = np.argsort(-np.abs(a_full.ravel()))[: max_elements // 2]
            rest = rng.choice(size, size=max_elements - len(top), replace=False)
            idxs = sorted(set(top.tolist()) | set(rest.tolist()))
        worst = (-1.0, 0, 0.0, 0.0)
        for j in idxs:
            flat = base[p].ravel()
            plus = flat.copy()
            plus[j] += eps
            minus = flat.copy()
            minus[j] -= eps
            lp = prog.forward_loss({**base, p: plus.reshape(base[p].shape)}, step)
            lm = prog.forward_loss({**base, p: minus.reshape(base[p].shape)}, step)
            num = (lp - lm) / (2 * eps)
            ana = float(a_full.ravel()[j])
            err = abs(ana - num) / max(abs(ana), abs(num), 1e-3)
            if not math.isfinite(err):
                err = math.inf
            if err > worst[0]:
                worst = (err, j, ana, num)
        idx = tuple(int(i) for i in np.unravel_index(worst[1], a_full.shape))
        rows.append((p, tuple(a_full.shape), len(idxs), worst[0], idx, worst[2], worst[3]))
    return rows


def cmd_gradcheck(path: str, tol: float, eps: float, max_elements: int, as_json: bool = False) -> int:
    sc = load_scenario(path)
    rows = gradcheck(sc, eps=eps, max_elements=max_elements)
    fail = [r for r in rows if not (r[3] <= tol)]
    if as_json:
        json.dump({"scenario": sc.name, "tolerance": tol, "eps": eps, "params": [
            {"param": r[0], "shape": list(r[1]), "checked": r[2], "worst_error": jsonio.num(r[3]), "index": list(r[4]),
             "analytic": jsonio.num(r[5]), "numeric": jsonio.num(r[6]), "ok": r[3] <= tol} for r in rows]}, sys.stdout)
        _out()
    else:
        _out(f"{sc.name}: central differences (eps {eps:g}, float64) against the analytic gradient at step 1")
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
