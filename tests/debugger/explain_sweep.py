"""The explain sweep: every op of step 1, every tensor it writes, a few elements of each, explained.

A (tensor, element) pair passes when its explanation
  * does not raise;
  * checks (``ex.ok``): the numbers shown, combined as written, give the engine's value, and (``STRICT``)
    they were recombined at all (``ex.checked``; an explanation that shows a formula's numbers
    without adding them up passed the first figures, before this rule);
  * shows the element's own numbers: besides the result, a number that is the value of an element
    of one of the op's inputs (as explain prints it, 9 significant digits), or, for a copy, names
    the source element (``<input>[i, j]`` whose value is the result);
  * has no placeholder: no ``{`` or ``}``, no bare symbol defined as itself ("h = h").

``python tests/debugger/explain_sweep.py`` prints the figures (pairs passing, failing kinds, crashes);
test_explain_sweep.py asserts that all pass.
"""
from __future__ import annotations

import glob
import os
import re
import sys
from collections import Counter, defaultdict

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "engine"))

import nnstep  # noqa: E402
from nnstep.debugger.explain import explain, fmt  # noqa: E402
from nnstep.layers.formula import constants# noqa: E402

NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
INDEX = re.compile(r"(?<=[^\s(=,+×·−\-/])\[[^\]\[]*\]")          # an index right after a name
SELF = re.compile(r"(?<![^\s(;])([A-Za-z]\w*) = \1(?![\w\[(.·])")
RANDOM_GRAPHS = int(os.environ.get("NNSTEP_SWEEP_GRAPHS", "40"))
STRICT = True          # also require the numbers shown to be recombined and checked (False: the first figures' rule)


def lessons():
    paths = sorted(glob.glob(os.path.join(ROOT, "scenarios", "*.toml")) + glob.glob(os.path.join(ROOT, "scenarios", "*", "*.toml")))
    for p in paths:
        yield os.path.relpath(p, ROOT), nnstep.load_scenario(p)


def graphs(n: int = RANDOM_GRAPHS):
    """The graph nets of the engine tests, and n random graph scenarios (randgraph.py)."""
    import randgraph
    from test_engine_graph import NETS
    for k, text in NETS.items():
        yield f"engine-graph:{k}", nnstep.loads_scenario(text)
    from test_engine_rnn import CASES, scenario
    for k, kw in CASES.items():
        yield f"engine-rnn:{k}", nnstep.loads_scenario(scenario(**kw))
    import scen
    for k, text in scen.SCENARIOS.items():
        yield f"session:{k}", nnstep.loads_scenario(text)
    for seed in range(n):
        text = randgraph.scenario(seed)
        if seed % 5 == 4:                    # every fifth in float32
            text = text.replace("[scenario]\n", '[scenario]\ndtype = "float32"\n', 1)
        yield f"random:{seed}", nnstep.loads_scenario(text)


def samples(shape):
    elems = list(np.ndindex(*shape)) if len(shape) else [()]
    if len(elems) <= 3:
        return elems
    return list(dict.fromkeys([elems[0], elems[len(elems) // 2], elems[-1]]))


def kind_of(s, op, tensor: str) -> str:
    """(layer type or op kind, the tensor's suffix), time steps folded: ("lstm", "c.t*")."""
    what = op.kind.split(":")[0]
    if op.layer is not None and op.stage != "update":
        what = s.program.plan.by_name[op.layer].type
        suffix = tensor[len(op.layer) + 1:] if tensor.startswith(op.layer + ".") else tensor
    elif op.param:
        what = f"update ({s.scenario.optimizer.type})"
        suffix = tensor[len(op.param) + 1:] if tensor.startswith(op.param + ".") else "param"
    else:
        suffix = re.sub(r"^[\w]+\.", "*.", tensor) if op.stage == "update" else tensor
    suffix = re.sub(r"\.t\d+", ".t*", suffix)
    return f"{op.stage}:{what}:{suffix}"


def _values(a) -> set[str]:
    a = np.asarray(a)
    if a.dtype.kind not in "fiub" or a.size > 50_000:
        return set()
    return {fmt(v) for v in a.ravel().tolist()}


_ENV: list = [None, None]            # (session, its env after the backward pass)


def backward_env(s) -> dict:
    if _ENV[0] is not s:
        _ENV[:] = [s, s.env_at(1, s.program.stage_start.get("update", s.M))]
    return _ENV[1]


def judge(s, op, rec, tensor, idx, ex) -> str | None:
    """None when the pair passes, else why not."""
    text = ex.text
    if not ex.ok:
        return "not ok"
    if STRICT and not getattr(ex, "checked", False):
        return "not recomputed"
    if "{" in text or "}" in text:
        return "placeholder {…}"
    m = SELF.search(text)
    if m:
        return f"bare symbol: {m.group(0)!r}"
    body = "\n".join(text.split("\n")[1:]) if " is computed by " in text.split("\n")[0] else text
    shown = {t for t in NUMBER.findall(INDEX.sub("", body))}
    result = fmt(ex.engine_value)
    by = re.search(r'is computed by "([^"]+)"', text)
    if by and by.group(1) != op.name:        # the element's own op (an RNN's time step, for out[:, t])
        op = next(o for o in s.ops if o.name == by.group(1))
        rec = s.record_at(ex.step, op.index)
    ins = {n: v for n, v in rec.inputs.items() if v is not None}
    # what else the op wrote before (Adam's m for m̂, an LSTM's gates for its cell), and its constants
    ins.update({n: v for n, v in rec.outputs.items() if n != tensor and v is not None})
    ins.update({f"const {c}": np.asarray(v) for c, v in constants(op.formula).items()})
    if ex.chain:                      # a gradient: the chain's numbers come from the whole backward pass
        ins.update(backward_env(s))
    for n, v in ins.items():
        if shown & (_values(v) - {result}):
            return None
    # a copy: it names the source element, whose value is the result
    for n, v in ins.items():
        for m in re.finditer(re.escape(n) + r"\[([\d, ]+)\]", text):
            at = tuple(int(i) for i in m.group(1).split(","))
            a = np.asarray(v)
            if len(at) == a.ndim and all(0 <= i < d for i, d in zip(at, a.shape)) and fmt(a[at]) == result:
                return None
    return "no input number"


def sweep(label, sc, out: list):
    s = nnstep.Session(sc)
    s.goto(2, 0) if sc.train.steps >= 2 else s.goto(1, s.M)
    for op in s.ops:
        rec = s.record_at(1, op.index)
        for tensor in list(op.outputs) + list(op.also_writes):
            v = rec.outputs.get(tensor)
            if v is None:
                continue
            for idx in samples(np.shape(v)):
                try:
                    ex = explain(s, tensor, idx, step=1)
                    why = judge(s, op, rec, tensor, idx, ex)
                except Exception as e:                      # noqa: BLE001 (a crash is a finding)
                    why = f"crash: {type(e).__name__}: {e}"
                out.append((label, op.name, tensor, idx, kind_of(s, op, tensor), why))


def run(n_graphs: int = RANDOM_GRAPHS):
    out: list = []
    for label, sc in list(lessons()) + list(graphs(n_graphs)):
        sweep(label, sc, out)
    return out


def report(out) -> str:
    bad = [r for r in out if r[5] is not None]
    kinds = defaultdict(Counter)
    for r in bad:
        kinds[r[4]][r[5].split(":")[0]] += 1
    crashes = [r for r in bad if r[5].startswith("crash")]
    lines = [f"{len(out) - len(bad)} of {len(out)} pairs pass; {len(kinds)} kinds fail; {len(crashes)} crash"]
    for what, pick in (("lessons", lambda r: r[0].startswith("scenarios")), ("graphs", lambda r: not r[0].startswith("scenarios"))):
        mine = [r for r in out if pick(r)]
        mbad = [r for r in mine if r[5] is not None]
        lines.append(f"  {what}: {len(mine) - len(mbad)} of {len(mine)} pass, {len({r[4] for r in mbad})} kinds fail, "
                     f"{sum(1 for r in mbad if r[5].startswith('crash'))} crash")
    for k, c in sorted(kinds.items()):
        lines.append(f"  {k}: " + ", ".join(f"{w} ×{n}" for w, n in c.items()))
    seen = set()
    for r in bad:
        if r[4] in seen:
            continue
        seen.add(r[4])
        lines.append(f"  e.g. {r[0]}  {r[1]}  {r[2]}{list(r[3])}: {r[5]}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(run(int(sys.argv[1]) if len(sys.argv) > 1 else RANDOM_GRAPHS)))
