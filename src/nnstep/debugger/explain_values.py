"""explain for a value (anything but a gradient): how one element was computed, with its own numbers.

The op that wrote the element has an element rule (:mod:`nnstep.layers.expr`): the layer's
``value_rule`` for a forward op (and an element-wise layer's local derivative), the loss's, the
optimizer's for an update, the clipping and the schedule. The rule is an expression over the
elements the op read; it is written with names, then with their numbers, then its value, which must
agree with the engine's number (the check). Intermediates with a line of their own (a mean, a row's
sum) come first, each checked against the engine's tensor when it is one.

Before any operation ran, a parameter (or any persistent state) holds its initial value: where that
came from is said (the scenario's inline array, the weights file, torch's default init with its
bound). An op without a rule shows its formula with the element's numbers, unchecked.
"""
from __future__ import annotations

import numpy as np

from ..errors import ScenarioError
from ..layers import plugins
from ..layers.optimizers import clip_value_rule
from ..layers.expr import Value, agrees, partial
from ..layers.terms import ix
from ..model.formula import views

RTOL = {"float64": 1e-9, "float32": 1e-4}       # rounding allowed between a recomputation and the engine


class Reader:
    """The tensors of one op as its rule reads them: ``V(name)`` as the op read it (its inputs
    first: a parameter before its update), ``V.out(name)`` as the op wrote it."""

    def __init__(self, rec):
        self.ins, self.outs = rec.inputs, rec.outputs

    def __call__(self, name):
        v = self.ins.get(name)
        return self.outs[name] if v is None else v

    def out(self, name):
        v = self.outs.get(name)
        return self.ins[name] if v is None else v

    def old(self, name):
        """As the op read it, or None when it did not (a momentum buffer before step 1)."""
        return self.ins.get(name)


def rule_for(session, w, name: str, idx, V, step: int) -> Value | None:
    """The element rule of op ``w`` (run in step ``step``) for ``name[idx]``, or None when it has none."""
    sc, prog = session.scenario, session.program
    if w.kind == "loss":
        return prog.loss.value_rule(prog.plan.prediction, V, idx)
    if w.kind == "update":
        return prog.optimizer.value_rule(w.param, name, idx, V, step)
    if w.kind == "clip":
        return clip_value_rule(sc.optimizer, list(sc.trainable), name, idx, V)
    if w.kind == "schedule":
        return prog.schedule.value_rule(V, step)
    L = session.program.layer.get(w.layer) if w.layer else None
    if L is not None:
        return plugins.rule(L, "value_rule", name, tuple(int(i) for i in idx), V)
    return None


def render(v: Value, target: str, f, rtol: float) -> tuple[list[str], float, bool]:
    """The rule's lines (the intermediates, then the element: names, numbers, value), what the
    numbers give, and whether every checked line agrees with the engine."""
    lines, ok = [], True
    for d in v.where:
        head = f"{d.symbol} = " + (f"{d.engine.txt()} = " if d.engine is not None else "")
        sym, num, val = d.expr.txt(), d.expr.txt(f), d.expr.v()
        pad = " " * (4 + len(d.symbol))
        lines.append("  " + head + sym)
        for t in _steps(d.expr, sym, num, val, f):
            lines.append(pad + "= " + t)
        if d.engine is not None and not agrees(val, d.engine.v(), d.expr.mag(), rtol):
            ok = False
            lines.append(pad + f"! the engine's {d.engine.txt()} is {f(d.engine.v())}")
    sym, num, val = v.expr.txt(), v.expr.txt(f), v.expr.v()
    lines.append(f"  {target} = {sym}   ({v.how})")
    lines += [f"  = {t}" for t in _steps(v.expr, sym, num, val, f)]
    if v.given:
        lines.append("  (with " + ", ".join(f"{g.txt()} = {f(g.v())}" for g in v.given) + ")")
    lines += [f"  {n}" for n in v.notes]
    return lines, val, ok


def _steps(x, sym: str, num: str, val: float, f) -> list[str]:
    """The lines after ``sym``: the numbers, the terms' values, the value (each once)."""
    out = [num] if num != sym else []
    mid = partial(x, f)
    if mid is not None and mid != num and mid != f(val):
        out.append(mid)
    if f(val) not in out:
        out.append(f(val))
    return out


def explain_value(session, ex, w, rec, digits: int, fmt):
    """``ex`` for the element of a value that op ``w`` wrote (``rec``: its record)."""
    f = lambda v: fmt(v, digits)  # noqa: E731
    name, idx = ex.tensor, ex.index
    ex.lines.append(f"{name}{ix(idx)} is computed by \"{w.name}\" (op {w.index + 1}, step {ex.step}):")
    L = session.program.layer.get(w.layer) if w.layer else None
    V = Reader(rec)
    rtol = RTOL.get(session.scenario.dtype, 1e-4)
    window = getattr(L, "value_window", None) if w.kind == "forward" and name == L.spec.t("out") else None
    try:
        rule = None if window is not None else rule_for(session, w, name, idx, V, ex.step)
    except ScenarioError as e:                 # a user's layer whose element rule raised
        ex.lines.append(f"  ! its element rule: {e}; its formula with the element's numbers instead, unchecked:")
        rule = None
    if window is not None:                                          # pooling: the element's window
        lines, ex.value, scale = window(idx, V, f)
        ex.lines += ["  " + ln for ln in lines]
        ex.ok = ex.value == ex.engine_value or agrees(ex.value, ex.engine_value, scale, min(rtol, 1e-12) if
                                                      session.scenario.dtype == "float64" else rtol)
        ex.checked = True
    elif rule is not None:
        # a tensor the op reads and writes (a parameter's update, the lr): the new value is "(after)"
        target = f"{name}{ix(idx)}" + (" (after)" if rec.inputs.get(name) is not None else "")
        lines, ex.value, ok = render(rule, target, f, rtol)
        ex.lines += lines
        ex.ok = ok and agrees(ex.value, ex.engine_value, rule.expr.mag(), rtol)
        ex.checked = True
    else:
        _formula(ex, w, rec, digits)
    ex.lines.append("")
    ex.lines.append(f"{name}{ix(idx)} = {f(ex.engine_value)}" + ("" if ex.ok else "   ! the terms above do not add up to it"))


def _formula(ex, w, rec, digits):
    """No rule: the op's formula, every tensor with the element's own shape taken at the element
    (exact for element-wise clauses), the whole tensor otherwise. Not checked."""
    name, idx = ex.tensor, ex.index
    shape = np.shape(rec.outputs[name])
    formula, inputs = w.formula, rec.inputs
    if w.kind.startswith("step:"):
        # an op of several clauses (a time step): the clauses writing this tensor, the values
        # written by the others taken as they came out of the op
        mine = tuple(c for c in formula if c.arrow and any(getattr(p, "name", None) == name for p in c.lhs))
        if mine:
            formula = mine
            inputs = {**{n: v for n, v in rec.outputs.items() if n not in rec.inputs and n != name}, **rec.inputs}
    before = {n: _at(v, shape, idx) for n, v in inputs.items()}
    after = {n: _at(v, shape, idx) for n, v in rec.outputs.items()}
    for c in views(formula, before, after, step=ex.step, digits=digits):
        ex.lines.append(f"  {c.text}")
        if c.filled and c.numbers != c.text:
            ex.lines.append(f"    {c.numbers}")
    ex.value = ex.engine_value


def _at(v, shape, idx):
    if v is None:
        return None
    a = np.asarray(v)
    if a.shape == shape and a.ndim:
        return a[idx]
    return a


def initial_value(session, ex, digits: int, fmt) -> None:
    """A parameter or other persistent state before any op of the run wrote it: its initial value
    (step 0), and where it came from."""
    f = lambda v: fmt(v, digits)  # noqa: E731
    name, idx = ex.tensor, ex.index
    sc = session.scenario
    origin = sc.origins.get(name) if hasattr(sc, "origins") else None
    if origin is None:
        origin = _state_origin(session, name)
    ex.value = ex.engine_value
    ex.checked = True
    ex.lines = [f"{name}{ix(idx)} = {f(ex.engine_value)}: the initial value (step 0), before any operation ran",
                f"  {origin}"]
    w = _first_writer(session, name)
    if w is not None:
        ex.lines.append(f"  (\"{w.name}\", op {w.index + 1} of each step, writes it: explain it at step 1 or later "
                        f"for how it changes)")
    elif name in sc.initial:
        ex.lines.append("  (frozen: no update changes it, so this is its value at every step)")


def _first_writer(session, name):
    return next((op for op in session.ops if name in op.outputs), None)


def _state_origin(session, name: str) -> str:
    """Where a persistent tensor that is no parameter starts: batchnorm's running statistics,
    the optimizer's state, the schedule's lr."""
    opt = session.scenario.optimizer
    if name.endswith(".running_mean"):
        return "torch's initial running mean of a BatchNorm: 0"
    if name.endswith(".running_var"):
        return "torch's initial running variance of a BatchNorm: 1"
    if name == "lr":
        return (f"the learning rate in force at step 1: {opt.schedule.type} schedule from lr₀ = {opt.lr:g}"
                + (" (its constructor's first step: start_factor·lr₀)" if opt.schedule.type == "linear" else ""))
    suffix = name.rsplit(".", 1)[-1]
    return f"the optimizer's state {suffix} starts at 0, as torch's ({opt.type})"
