"""Conditions, breakpoints and expectations: parsed and checked against the plan's names, never
evaluated as code."""
from __future__ import annotations

import math
import re

from ..errors import clean, did_you_mean
from ..model.scenario import SHOWS, Ask, Breakpoint, Condition, Expect, Note, Scenario, parse_element
from ..model.stats import STATS
from .validate import Ctx, _got, _show

STAGES = ("forward", "loss", "backward", "update")
COND_RE = re.compile(r"^\s*(\S+)\s+(\w+)\s*(<=|>=|==|!=|<|>)\s*(\S+)\s*$")



def parse_condition(text: str, names, ctx: Ctx | None = None, where: str = "when") -> Condition:
    """A ``when`` condition from the grammar of docs/scenario-format.md ("[[breakpoints]]"), ``"<tensor> <stat> <op> <number>"`` or
    ``"nonfinite"``, checked against the tensor ``names``. Parsed, never evaluated. Raises
    ScenarioError, located at ``where`` in ``ctx``'s file."""
    ctx = ctx or Ctx("<session>")
    if not isinstance(text, str):
        raise ctx.err(where, f"expected a string, got {_got(text)}")
    if text.strip() == "nonfinite":
        return Condition(kind="nonfinite", text="nonfinite")
    m = COND_RE.match(text)
    if not m:
        raise ctx.err(where, f'malformed condition {_show(text)}: expected "<tensor> <stat> <op> <number>" '
                             f'(for example "linear1.weight.grad norm > 10") or "nonfinite"')
    tensor, st, op, num = m.groups()
    if tensor not in names:
        raise ctx.err(where, f'unknown tensor {_show(tensor)}{did_you_mean(tensor, names)}')
    if st not in STATS:
        raise ctx.err(where, f'unknown statistic {_show(st)}{did_you_mean(st, STATS)}')
    try:
        number = float(num)
    except ValueError:
        raise ctx.err(where, f'{_show(num)} is not a number') from None
    if math.isnan(number):
        raise ctx.err(where, "the number cannot be nan")
    return Condition(kind="compare", tensor=tensor, stat=st, op=op, number=number, text=clean(text.strip()))


def breakpoints(v, ctx: Ctx, names, op_names) -> list[Breakpoint]:
    if not isinstance(v, list):
        raise ctx.err("breakpoints", "expected [[breakpoints]] tables")
    out = []
    for i, b in enumerate(v):
        where = f"breakpoints[{i}]"
        b = ctx.table(b, where)
        ctx.known(b, ("op", "stage", "when"), where)
        given = [k for k in ("op", "stage", "when") if k in b]
        if len(given) != 1:
            raise ctx.err(where, "expected exactly one of op, stage or when" + (f", got {', '.join(given)}" if given else ""))
        if "op" in b:
            out.append(Breakpoint(where=where, op=ctx.str_(b["op"], f"{where}.op", op_names)))
        elif "stage" in b:
            out.append(Breakpoint(where=where, stage=ctx.str_(b["stage"], f"{where}.stage", STAGES)))
        else:
            out.append(Breakpoint(where=where, when=parse_condition(b["when"], names, ctx, f"{where}.when")))
    return out


def expects(v, ctx: Ctx, names, sc: Scenario) -> list[Expect]:
    if not isinstance(v, list):
        raise ctx.err("expect", "expected [[expect]] tables")
    out = []
    for i, e in enumerate(v):
        where = f"expect[{i}]"
        e = ctx.table(e, where)
        ctx.known(e, ("step", "tensor", "value", "atol", "rtol"), where)
        for k in ("step", "tensor", "value"):
            if k not in e:
                raise ctx.err(where, f"missing key {k}")
        step = ctx.nonnegint(e["step"], f"{where}.step")
        if step > sc.train.steps:
            raise ctx.err(f"{where}.step", f"step {step} is beyond train.steps = {sc.train.steps}")
        tensor = ctx.str_(e["tensor"], f"{where}.tensor")
        if tensor not in names:
            raise ctx.err(f"{where}.tensor", f'unknown tensor {_show(tensor)}{did_you_mean(tensor, names)}')
        if step == 0 and tensor not in sc.initial:
            raise ctx.err(f"{where}.step", f'step 0 has only the initial parameters, not {_show(tensor)}')
        value = ctx.array(e["value"], f"{where}.value", allow_scalar=True)
        out.append(Expect(where=where, step=step, tensor=tensor, value=value,
                          atol=ctx.num(e.get("atol", 1e-8), f"{where}.atol", 0.0, desc="a non-negative number"),
                          rtol=ctx.num(e.get("rtol", 1e-6), f"{where}.rtol", 0.0, desc="a non-negative number")))
    return out


ASK_KEYS = ("op", "tensor", "step", "show", "rtol", "atol", "hint")
NOTE_KEYS = ("op", "stage", "step", "text")
MAX_NOTE = 20_000          # characters of a note's or a hint's text


def _op_of(v, ctx: Ctx, where: str, plan):
    name = ctx.str_(v, where)
    for op in plan.ops:
        if op.name == name:
            return op
    raise ctx.err(where, f'no operation "{name}" in this scenario{did_you_mean(name, plan.op_names)}')


def _step(v, ctx: Ctx, where: str, sc: Scenario, every: bool = False) -> int | None:
    if every and v == "every":
        return None
    if isinstance(v, str):
        alt = ' or "every"' if every else ""
        raise ctx.err(where, f'expected a step number{alt}, got "{clean(v)[:60]}"')
    step = ctx.posint(v, where)
    if step > sc.train.steps:
        raise ctx.err(where, f"step {step} is beyond train.steps = {sc.train.steps}")
    return step


def _text(v, ctx: Ctx, where: str) -> str:
    t = ctx.str_(v, where)
    if len(t) > MAX_NOTE:
        raise ctx.err(where, f"{len(t)} characters is over the limit of {MAX_NOTE}")
    return "\n".join(clean(line) for line in t.strip("\n").split("\n"))


def asks(v, ctx: Ctx, plan, sc: Scenario) -> list[Ask]:
    """[[ask]] tables, checked against the plan: the op exists, it writes the tensor, the step
    exists. (That the index is inside the tensor is checked where the shapes are known, by the
    debugger's lesson, when `check`, the TUI or the Session API open the scenario.)"""
    if not isinstance(v, list):
        raise ctx.err("ask", "expected [[ask]] tables")
    out, seen = [], {}
    for i, a in enumerate(v):
        where = f"ask[{i}]"
        a = ctx.table(a, where)
        ctx.known(a, ASK_KEYS, where)
        for k in ("op", "tensor"):
            if k not in a:
                raise ctx.err(where, f"missing key {k}" + (' (the operation before which the question is asked, '
                                                           'e.g. "backward sigmoid2")' if k == "op" else
                                                           ' (the element to predict, e.g. "sigmoid2.grad_in[0, 1]")'))
        op = _op_of(a["op"], ctx, f"{where}.op", plan)
        text = ctx.str_(a["tensor"], f"{where}.tensor")
        try:
            tensor, index = parse_element(text)
        except ValueError:
            raise ctx.err(f"{where}.tensor", f'expected one element of a tensor, such as "sigmoid2.grad_in[0, 1]", '
                                             f'got "{clean(text)[:60]}"') from None
        written = op.outputs + op.also_writes
        if tensor not in written:
            by = [o.name for o in plan.ops if tensor in o.outputs + o.also_writes]
            what = (f'"{clean(tensor)[:60]}" is written by "{by[0]}", not by "{op.name}"' if by else
                    f'"{clean(tensor)[:60]}" is not written by "{op.name}"'
                    + (did_you_mean(tensor, written) or f" (it writes {', '.join(written)})"))
            raise ctx.err(f"{where}.tensor", what)
        step = _step(a.get("step", 1), ctx, f"{where}.step", sc)
        if (step, op.index) in seen:
            raise ctx.err(where, f"{seen[(step, op.index)]} already asks before \"{op.name}\" in step {step}: "
                                 "one question per operation and step")
        seen[(step, op.index)] = where
        out.append(Ask(where=where, step=step, op=op.name, tensor=tensor, index=index or (),
                       show=ctx.str_(a.get("show", "numbers"), f"{where}.show", SHOWS),
                       rtol=ctx.num(a.get("rtol", 1e-3), f"{where}.rtol", 0.0, desc="a non-negative number"),
                       atol=ctx.num(a.get("atol", 1e-6), f"{where}.atol", 0.0, desc="a non-negative number"),
                       hint=_text(a.get("hint", ""), ctx, f"{where}.hint")))
    return out


def notes(v, ctx: Ctx, plan, sc: Scenario) -> list[Note]:
    """[[note]] tables: the op or stage exists (at most one of them), the step exists or is "every"."""
    if not isinstance(v, list):
        raise ctx.err("note", "expected [[note]] tables")
    out = []
    for i, n in enumerate(v):
        where = f"note[{i}]"
        n = ctx.table(n, where)
        ctx.known(n, NOTE_KEYS, where)
        if "text" not in n:
            raise ctx.err(where, "missing key text (what the lesson says there)")
        if "op" in n and "stage" in n:
            raise ctx.err(where, "expected at most one of op or stage, got both")
        op = _op_of(n["op"], ctx, f"{where}.op", plan).name if "op" in n else None
        stage = ctx.str_(n["stage"], f"{where}.stage", STAGES) if "stage" in n else None
        if stage is not None and stage not in plan.stage_start:
            raise ctx.err(f"{where}.stage", f'this scenario has no {stage} stage (its optimizer updates nothing)')
        out.append(Note(where=where, text=_text(n["text"], ctx, f"{where}.text"), op=op, stage=stage,
                        step=_step(n.get("step", 1), ctx, f"{where}.step", sc, every=True)))
    return out
