"""Explain one number: any element of any tensor at a step, with the engine's numbers.

For an element of a **gradient** (a parameter's gradient, ``grad_in``, ``grad_out``, ``loss.grad``)
it writes the chain rule back to the loss, as a textbook derivation. Each line expands one
gradient element into its terms, using the element rule that the layer writes next to its
vectorized backward (its ``grad_rule``, docs/layers.md): upstream gradient × local derivative, summed over
the batch, over a layer's outputs, and at a fork over every layer that reads the tensor (one term
per path). A chain of single terms is written as one product, as Mazur writes
``∂E/∂w1 = ∂E/∂out_h1 · ∂out_h1/∂net_h1 · ∂net_h1/∂w1 = 0.036350306 × 0.241300709 × 0.05``. The lines
continue with the upstream elements that appear, down to the derivative of the loss. Every line
ends in its value, and the explanation ends with a check: the numbers shown, multiplied and added,
give the engine's value on every line.

For any other tensor (an activation, the loss, a parameter after its update, optimizer state) it
shows how the element was computed: the op that wrote it, with the element's numbers in its formula.

Every number comes from the engine: the session replays the step (without moving its cursor) and
the rules read the tensors the backward pass read. The recomputation only multiplies and adds them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..model.scenario import parse_element as _parse_element
from ..layers.terms import Term, ix
from ..errors import ScenarioError
from ..layers import plugins
from .explain_values import RTOL, explain_value, initial_value

MAX_TERMS = 6          # terms written out per line (the rest are counted, and checked)
MAX_LINES = 10         # gradient elements expanded
GRAD_ROLES = ("upstream", "grad_in", "grad_param", "grad", "loss_grad")


@dataclass
class Line:
    tensor: str
    index: tuple[int, ...]
    symbol: str                  # ∂E/∂linear1.weight[0, 0]
    how: str                     # which op and rule
    text: list[str]              # the lines of its derivation
    engine: float                # the engine's value of this element
    recomputed: float | None     # the shown numbers, multiplied and added
    ok: bool
    upstream: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)


@dataclass
class Explanation:
    tensor: str
    index: tuple[int, ...]
    step: int
    value: float | None          # what the shown numbers combine to (None: nothing to explain yet)
    engine_value: float | None   # the engine's number
    lines: list[str] = field(default_factory=list)
    chain: list[Line] = field(default_factory=list)
    ok: bool = True
    checked: bool = False        # the numbers shown were recombined and compared with the engine's

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def factors(self):
        """The top line's factors when it is a single product (the textbook chain)."""
        return self._factors

    _factors: list = field(default_factory=list)

    def as_json(self) -> dict:
        return {"tensor": self.tensor, "index": list(self.index), "step": self.step, "value": self.value,
                "engine_value": self.engine_value, "text": self.text}


def fmt(v: float, digits: int = 9) -> str:
    v = float(v) + 0.0                    # + 0.0 turns IEEE's -0 (a masked score's gradient) into 0
    if not math.isfinite(v):
        return "NaN" if v != v else ("+Inf" if v > 0 else "-Inf")
    return f"{v:.{digits}g}"


def factor(v: float, digits: int = 9) -> str:
    """A number as a factor of a product: negatives in parentheses, as a textbook writes them."""
    t = fmt(v, digits)
    return f"({t})" if t.startswith("-") else t


def parse_element(text: str) -> tuple[str, tuple[int, ...] | None]:
    """``"linear1.weight.grad[0, 1]"`` -> ``("linear1.weight.grad", (0, 1))``; ``"loss"`` -> index None
    (model.scenario.parse_element, its message safe to print)."""
    from ..errors import clean
    try:
        return _parse_element(text)
    except ValueError as e:
        raise ValueError(clean(str(e))) from None


def _writers(session, name: str) -> list:
    return [op for op in session.ops if name in op.outputs or name in op.also_writes]


def _writer(session, name: str):
    """The op that completes ``name``: the last one writing it (an RNN's whole-sequence tensors and
    parameter gradients are written by every time step's op, one time step at a time)."""
    ws = _writers(session, name)
    return ws[-1] if ws else None


def _element_writer(session, name: str, step: int, index, last):
    """Of several ops writing ``name``, the one that wrote this element: as its layer says
    (``element_op``: an RNN's time step), else the earliest after which it no longer changes."""
    ws = _writers(session, name)
    L = session.program.layer.get(last.layer) if last.layer else None
    op_name = L.element_op(name, tuple(index)) if hasattr(L, "element_op") else None
    if op_name is not None:
        return next(w for w in ws if w.name == op_name)
    final = np.asarray(session.record_at(step, last.index).outputs[name])[index]
    chosen = last
    for w in reversed(ws[:-1]):
        v = np.asarray(session.record_at(step, w.index).outputs[name])[index]
        if not (v == final or (v != v and final != final)):
            break
        chosen = w
    return chosen


def computed_this_step(session, name: str) -> bool:
    """Whether the op writing ``name`` has run in the cursor's step."""
    w = _writer(session, name)
    k, i = session.position
    return w is not None and w.index < i and k <= session.N


def is_gradient(session, name: str) -> bool:
    w = _writer(session, name)
    if w is None:
        return False
    if name in w.also_writes:
        return True
    s = w.slot(name, output=True)
    return s is not None and s.role in GRAD_ROLES


class NoRule(Exception):
    """A gradient element no element rule expands (a user's layer without one, or whose rule raised)."""


class _Graph:
    """Which rule expands which gradient tensor, from the plan's slots (their roles and what each
    gradient is the gradient of)."""

    def __init__(self, session, env):
        prog = session.program
        self.prog, self.plan, self.env = prog, prog.plan, env
        self.rule: dict[str, tuple[str, str]] = {}       # gradient -> (layer, what its rule is called)
        self.of: dict[str, str] = {}
        for op in self.plan.ops:
            if op.stage != "backward" or op.layer is None:
                continue
            for sl in op.outs:
                if sl.of:
                    self.of[sl.name] = sl.of
                if sl.role in ("grad_param", "grad"):
                    self.rule[sl.name] = (op.layer, sl.of[len(op.layer) + 1:])
                elif sl.role == "grad_in":
                    self.rule[sl.name] = (op.layer, sl.name[len(op.layer) + 1:])
        self.grad_out = {L.t("grad_out"): L.name for L in self.plan.layers}
        self.sums = {op.layer: op.sums for op in self.plan.ops if op.sums}

    def V(self, name):
        return self.env[name]

    def symbol(self, name: str, idx) -> str:
        plan = self.plan
        if name == "loss.grad":
            return f"∂E/∂{plan.prediction}{ix(idx)}"
        if name in self.grad_out:
            return f"∂E/∂{self.grad_out[name]}.out{ix(idx)}"
        of = self.of.get(name, name)
        via = ""
        if name in self.rule and self.rule[name][1].startswith("grad_in") and len(plan.readers.get(of, [])) > 1:
            via = f" (via {self.rule[name][0]})"
        return f"∂E/∂{of}{ix(idx)}{via}"

    def expand(self, name: str, idx) -> tuple[str, list[Term]]:
        """(how, terms) of one gradient element: the rule of the op that computes it."""
        plan = self.plan
        idx = tuple(int(i) for i in idx)
        if name == "loss.grad":
            loss = self.prog.loss
            p, y, back = loss.class_first(self.V(plan.prediction), self.V("target"))
            at = idx if back is None else idx[:1] + (idx[back],) + tuple(v for d, v in enumerate(idx) if d not in (0, back))
            rule = loss.grad_rule(plan.prediction, p, y, at)
            return f"backward loss: {rule.how}", rule.terms
        if name in self.grad_out:
            L = self.grad_out[name]
            if L in self.sums:                           # a fork: one term per reader, per path
                return (f"backward {L}: {L}.out is read by {len(self.sums[L])} layers, so its gradient is "
                        f"the sum of what each sends back", [Term((), (c, idx)) for c in self.sums[L]])
            readers = plan.readers.get(f"{L}.out", [])
            if not readers:                              # the prediction
                return self.expand("loss.grad", idx)
            r, k = readers[0]
            return self.expand(plan.grad_in_name(plan.by_name[r], k), idx)
        if name in self.rule:
            r, wrt = self.rule[name]
            L = self.prog.layer[r]
            try:
                rule = plugins.rule(L, "grad_rule", wrt, idx, self.V)
            except ScenarioError as e:               # a user's layer whose rule raised
                raise NoRule(f"{r}'s element rule: {e}") from None
            if rule is None:
                raise NoRule(f"{r} ({L.type}) has no element rule for this gradient (its class's grad_rule: "
                             f"docs/layers.md), so explain cannot expand it: its backward's numbers stand unchecked")
            return f"backward {r}: {rule.how}", rule.terms
        raise KeyError(name)

    def inline(self, terms: list[Term]) -> list[Term]:
        """Multiply single-term expansions into the term (a chain of element-wise layers is one
        product), down to a sum or the loss."""
        out = []
        for t in terms:
            seen = 0
            while t.upstream is not None and seen < 64:
                try:
                    _, inner = self.expand(*t.upstream)
                except NoRule:
                    break
                if len(inner) != 1 or inner[0].upstream is None:
                    break
                t = Term(inner[0].factors + t.factors, inner[0].upstream)   # from the loss down
                seen += 1
            out.append(t)
        return out

    def value(self, name: str, idx) -> float:
        return float(np.asarray(self.env[name])[tuple(idx)])


def _term_value(g: _Graph, t: Term) -> float:
    v = 1.0
    for f in t.factors:
        v *= f.value
    return v * (g.value(*t.upstream) if t.upstream is not None else 1.0)


def _line(g: _Graph, name: str, idx, digits: int) -> Line:
    how, terms = g.expand(name, idx)
    if len(terms) == 1:                 # a product: the chain of single terms below it, multiplied in
        terms = g.inline(terms)
    sym = g.symbol(name, idx)
    engine = g.value(name, idx)
    f = lambda v: fmt(v, digits)  # noqa: E731
    p = lambda v: factor(v, digits)  # noqa: E731
    text = [f"{sym}   ({how})"]
    shown = terms[:MAX_TERMS]
    more = len(terms) - len(shown)
    tail = f" + … ({more} more term{'s' if more != 1 else ''})" if more else ""
    if not terms:
        text.append("  = 0   (no term reaches it)")
        return Line(name, tuple(idx), sym, how, text, engine, 0.0, abs(engine) <= 1e-300)
    if len(terms) == 1:                              # a product: the textbook chain
        t = terms[0]
        syms = ([g.symbol(*t.upstream)] if t.upstream else []) + [fa.symbol or fa.source for fa in t.factors]
        nums = ([g.value(*t.upstream)] if t.upstream else []) + [fa.value for fa in t.factors]
        text.append("  = " + " · ".join(syms))
        text.append("  = " + " × ".join(p(v) for v in nums))
        for fa in t.factors:
            if fa.source and fa.source != "1" and fa.symbol:
                text.append(f"      {fa.symbol} = {fa.source}" + ("" if fa.source[:1].isdigit() else
                                                                   f" = {f(fa.value)}"))
    else:
        def sym_term(t):
            parts = ([g.symbol(*t.upstream)] if t.upstream else []) + \
                [fa.source if fa.source and not fa.source[:1].isdigit() or fa.source == "" else fa.symbol
                 for fa in t.factors if fa.source != "1"]
            return " · ".join(x for x in parts if x) or "1"

        def num_term(t):
            nums = ([g.value(*t.upstream)] if t.upstream else []) + [fa.value for fa in t.factors if fa.source != "1"]
            return " × ".join(p(v) for v in nums)
        text.append("  = " + " + ".join(sym_term(t) for t in shown) + tail)
        text.append("  = " + " + ".join(num_term(t) for t in shown) + tail)
        if any(t.factors and any(fa.source != "1" for fa in t.factors) for t in shown):
            text.append("  = " + " + ".join(p(_term_value(g, t)) for t in shown) + tail)
    total = math.fsum(_term_value(g, t) for t in terms)
    scale = math.fsum(abs(_term_value(g, t)) for t in terms)
    rtol = RTOL.get(g.prog.scenario.dtype, 1e-4)          # float32 gradients carry float32's rounding
    ok = (abs(total - engine) <= rtol * scale + 1e-300) or (not math.isfinite(total) and not math.isfinite(engine))
    text.append(f"  = {f(total)}")
    ups = []
    for t in terms:
        if t.upstream is not None and t.upstream not in ups:
            ups.append(t.upstream)
    return Line(name, tuple(idx), sym, how, text, engine, total, ok, ups)


def explain(session, tensor: str, index=None, step: int | None = None, digits: int = 9) -> Explanation:
    """Explain ``tensor[index]`` as of ``step`` (default: the value the cursor shows: this step's
    if the op writing it has run, else the previous step's; step 0 for a parameter or other
    persistent state before the first op writing it ran: its initial value). Raises KeyError for
    an unknown tensor and IndexError for an index outside it."""
    if tensor not in session.names:
        from ..errors import did_you_mean
        from ..errors import cut
        from ..errors import clean
        raise KeyError(f'unknown tensor "{cut(clean(tensor))}"{did_you_mean(tensor, session.names)}')
    w = _writer(session, tensor)
    k, i = session.position
    asked = step
    if step is None:
        if w is None:                   # input, target, and parameters no update changes
            step = max(1, k if k <= session.N else session.N)
        else:
            step = k if (k <= session.N and w.index < i) else k - 1
    ex = Explanation(tensor, (), step, None, None)
    persistent = tensor in session.program.plan.persistent
    if step < 1 and not persistent:
        ex.lines = ([f"{tensor} has no value at step 0, before training: \"{w.name}\" (op {w.index + 1} of each "
                     f"step) computes it (only parameters and optimizer state start with a value)."] if asked == 0 else
                    [f"{tensor} has not been computed yet: \"{w.name}\" (op {w.index + 1} of each step) computes it.",
                     "Step forward past it (n, s), and explain it then."])
        ex.ok = False
        return ex
    if step < 1 or (w is None and tensor in session.scenario.initial):      # its initial value
        ex.step = 0
        env = session.env_at(1, 0)
    elif w is None or is_gradient(session, tensor):
        env = session.env_at(step, session.program.stage_start.get("update", session.M))
    else:
        rec = session.record_at(step, w.index)
        env = {**rec.inputs, **rec.outputs}
    shape = np.shape(env.get(tensor)) if env.get(tensor) is not None else None
    if shape is None:
        ex.lines = [f"{tensor} has no value at step {step}."]
        ex.ok = False
        return ex
    if index is None:
        index = (0,) * len(shape) if int(np.prod(shape)) == 1 else None
        if index is None:
            raise IndexError(f"{tensor} has shape {list(shape)}: name one element, such as {tensor}{ix((0,) * len(shape))}")
    index = tuple(int(v) for v in index)
    if len(index) != len(shape) or any(not (0 <= v < n) for v, n in zip(index, shape)):
        raise IndexError(f"index {ix(index)} is outside {tensor}, shape {list(shape)}")
    ex.index = index
    ex.engine_value = float(np.asarray(env[tensor])[index])
    if ex.step == 0:
        initial_value(session, ex, digits, fmt)
    elif w is not None and is_gradient(session, tensor):
        _chain(session, ex, env, digits)
        ex.checked = True
    elif w is None:                     # the batch
        ex.lines = [f"{tensor}{ix(index)} = {fmt(ex.engine_value, digits)}   (the batch fed in step {step}: "
                    f"no operation computes it)"]
        ex.value = ex.engine_value
    else:
        L = session.program.layer.get(w.layer) if w.layer else None
        alias = L.element_alias(tensor, index) if hasattr(L, "element_alias") else None
        if alias is not None:            # one time step's element of a whole-sequence tensor
            sub = explain(session, alias[0], alias[1], step=step, digits=digits)
            ex.lines = [f"{tensor}{ix(index)} is {alias[0]}{ix(alias[1])}:"] + sub.lines
            ex.value, ex.ok, ex.checked = sub.value, sub.ok, sub.checked
            return ex
        if len(_writers(session, tensor)) > 1:
            w = _element_writer(session, tensor, step, index, w)
        explain_value(session, ex, w, session.record_at(step, w.index), digits, fmt)
    return ex


def _chain(session, ex: Explanation, env: dict, digits: int):
    g = _Graph(session, env)
    sc = session.scenario
    ex.lines.append(f"E = loss of step {ex.step} ({sc.loss.type}, {sc.loss.reduction}"
                    + (f", scale {sc.loss.scale:g}" if sc.loss.scale != 1 else "") + "); "
                    "parameters as the backward pass read them (before this step's update)")
    ex.lines.append("")
    queue = [(ex.tensor, ex.index)]
    done: set = set()
    failed = None
    while queue and len(ex.chain) < MAX_LINES:
        name, idx = queue.pop(0)
        if (name, idx) in done:
            continue
        done.add((name, idx))
        try:
            line = _line(g, name, idx, digits)
        except NoRule as e:
            failed = f"{g.symbol(name, idx)}: {e}"
            ex.lines += [f"! {failed}", ""]
            break
        ex.chain.append(line)
        ex.lines += line.text
        ex.lines.append("")
        queue += [u for u in line.upstream if u not in done]
    left = [u for u in queue if u not in done]
    if left:
        ex.lines.append(f"… and {len(left)} more upstream element{'s' if len(left) != 1 else ''} expand the same way "
                        f"(explain one of them, e.g. {g.symbol(*left[0])}: {left[0][0]}{ix(left[0][1])})")
        ex.lines.append("")
    if not ex.chain:
        ex.ok = False
        return
    top = ex.chain[0]
    ex.value = top.recomputed
    if len(ex.chain) and top.text and len(g.inline(g.expand(top.tensor, top.index)[1])) == 1:
        ex._factors = list(g.inline(g.expand(top.tensor, top.index)[1])[0].factors)
    ex.ok = all(ln.ok for ln in ex.chain) and failed is None
    if failed is not None:
        ex.lines.append("! the lines above are checked; the expansion stops where no element rule goes on")
    elif ex.ok:
        ex.lines.append(f"✓ the numbers shown combine to the engine's value on every line: "
                        f"{ex.tensor}{ix(ex.index)} = {fmt(ex.engine_value, digits)}")
    else:
        bad = next(ln for ln in ex.chain if not ln.ok)
        ex.lines.append(f"! {bad.symbol}: the terms give {fmt(bad.recomputed, digits)}, but the engine's value is "
                        f"{fmt(bad.engine, digits)}")
