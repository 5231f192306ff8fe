"""The TUI's view-model: what each panel shows, as plain data, from the session and the plan. No
Textual here (a test proves it): app.py holds only widgets and actions, and nothing here computes
a number: every value is a tensor the engine wrote, looked up by name.

* :func:`op_slots`: the boxes of the operation panel, each (label, tensor, value, written), chosen
  by the tensors' roles in the op (upstream × local = result for an element-wise backward; the
  contributions and their sum at a fork; old | gradient | state | change | new for an update);
* :func:`layer_rows`: the layers table;
* :func:`formula_views`: the op's formula clause by clause, with its numbers;
* :func:`masked_cells`: the cells a mask hides, per tensor (the spec says which).
"""
from __future__ import annotations

from ..layers.formula import refs
from ..model.formula import views

SLOTS = 8


def op_slots(op, ins: dict, outs: dict, written: set) -> list[tuple]:
    """The boxes of the operation panel: (label, tensor name, value, written by the last op)."""
    def box(slot, values, prefix=""):
        return (prefix + slot.label, slot.name, values.get(slot.name), slot.name in written and values is outs)

    in_roles = {s.role: s for s in op.ins}
    out_by_role: dict[str, list] = {}
    for s in op.outs:
        out_by_role.setdefault(s.role, []).append(s)
    out: list[tuple] = []
    contributions = [s for s in op.ins if s.role == "contribution"]
    if contributions:                              # a fork: what each reader sent, and their sum
        out += [box(s, ins) for s in contributions]
        out += [box(s, outs) for s in out_by_role.get("upstream", [])]
    if op.stage == "update" and op.param:
        order = ["old", "grad_param"]
        out += [box(in_roles[r], ins) for r in order if r in in_roles]
        tail = [box(s, outs) for s in out_by_role.get("delta", []) + out_by_role.get("new", [])]
        # the state boxes give way first, so the change and the new value always show
        out += [box(s, outs) for s in out_by_role.get("state", [])][:max(0, SLOTS - len(out) - len(tail))]
        return (out + tail)[:SLOTS]
    if op.stage == "update" and op.kind == "schedule":
        return [box(op.ins[0], ins), box(op.outs[0], outs)]
    if "local" in out_by_role:                     # element-wise: upstream × local = result
        if not contributions:
            out.append(box(in_roles["upstream"], ins))
        out += [box(s, outs, "× ") for s in out_by_role["local"]]
        out += [box(s, outs, "= ") for s in out_by_role.get("grad_in", [])]
        return out[:SLOTS]
    named = {r.name for r in refs(op.formula)}
    shown_in = [s for s in op.ins if s.name not in op.outputs and s.role != "contribution"
                and (op.stage != "backward" or op.layer is None or s.name in named)]
    outs_list = [s for s in op.outs if not (contributions and s.role == "upstream")]
    room = max(0, SLOTS - len(outs_list) - len(out))
    out += [box(s, ins) for s in shown_in[:room]]
    out += [box(s, outs) for s in outs_list]
    return out[:SLOTS]


def formula_views(op, ins: dict, outs: dict, step: int | None = None, digits: int = 4):
    """The op's formula clause by clause, each with its numbers at ``digits`` significant digits
    (model.formula.views)."""
    return views(op.formula, ins, outs, step=step, digits=digits)


def masked_cells(session) -> dict:
    """{tensor: (R, C) boolean array, True where a mask hides the cell}: the tensors whose boxes
    mark hidden cells (an attention layer's causal mask; its layer class's masked_tensors)."""
    types = session.program.plan.types
    out: dict = {}
    for L in session.scenario.layers:
        out.update(types[L.name].masked_tensors(L))
    return out


def writers(ops) -> dict[str, int]:
    """For every tensor, the index of the op that writes it first in a step."""
    w: dict[str, int] = {}
    for op in ops:
        for t in op.outputs + op.also_writes:
            w.setdefault(t, op.index)
    return w


def stage_boxes(ops) -> dict[str, int]:
    """Boxes per stage: the most any op of the stage shows (a constant layout within a stage)."""
    n: dict[str, int] = {}
    for op in ops:
        n[op.stage] = max(len(op_slots(op, {}, {}, set())), n.get(op.stage, 0))
    return n


def layer_rows(session, writer: dict[str, int], written: set) -> list[dict]:
    """Per layer: output, local derivative, upstream gradient, and per parameter its gradient and
    update; each cell (name, value, state) with state "now", "stale" (last step's) or "written"."""
    s = session
    k, i = s.position
    at_end = s.at_end
    sc = s.scenario
    trainable = set(sc.trainable)
    types = s.program.plan.types
    rows = []

    def cell(name):
        if name is None:
            return None
        v = s.value(name) if name in s.names else None
        if v is None:
            return (name, None, "now")
        w = writer.get(name)
        if name in written:
            st = "written"
        elif at_end or w is None or w < i:
            st = "now"
        else:
            st = "stale"
        return (name, v, st)

    for L in sc.layers:
        n = L.name
        T = types[n]
        base = {"layer": n, "out": cell(f"{n}.out"),
                "local": cell(f"{n}.local") if T.elementwise else None,
                "up": cell(f"{n}.grad_out")}
        if not L.params:
            rows.append(base)
        for j, p in enumerate(L.params):
            P = f"{n}.{p}"
            r = dict(base) if j == 0 else {}
            r["param"] = T.symbols.get(p, p)
            r["grad"] = cell(f"{P}.grad")
            r["delta"] = cell(f"{P}.delta") if P in trainable else "frozen"
            rows.append(r)
    return rows
