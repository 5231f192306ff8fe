"""Conditions, breakpoints and expectations: parsed and checked against the plan's names, never
evaluated as code."""
from __future__ import annotations

import math
import re

from ..errors import did_you_mean
from ..spec.model import Breakpoint, Condition, Expect, Scenario
from ..spec.stats import STATS
from .validate import Ctx, _got, _show, clean

STAGES = ("forward", "loss", "backward", "update")
COND_RE = re.compile(r"^\s*(\S+)\s+(\w+)\s*(<=|>=|==|!=|<|>)\s*(\S+)\s*$")



def parse_condition(text: str, names, ctx: Ctx | None = None, where: str = "when") -> Condition:
    """A ``when`` condition from the SPEC §2 grammar, ``"<tensor> <stat> <op> <number>"`` or
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
