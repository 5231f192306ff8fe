"""Explain one number: the chain rule for one element of a parameter's gradient, with the numbers.

Pure numpy over a :class:`Session`; every value is read from the session (the engine computed it),
the explanation only multiplies and sums them again to show how they combine, and says whether that
recomputation agrees with the engine's gradient.

For a Linear layer ``net = in @ Wᵀ + b`` the weight gradient is a sum over the batch (every row of a
batch-first input, leading dimensions flattened as the engine does)::

    ∂E/∂W[o, j] = Σₙ ∂E/∂net[n, o] · in[n, j]          ∂E/∂b[o] = Σₙ ∂E/∂net[n, o]

and ``∂E/∂net`` itself comes down through the element-wise layers above the Linear one, each
contributing its local derivative: ``∂E/∂net = ∂E/∂out · ∂out/∂net`` (upstream ⊙ local). With one
sample the sum has one term and the whole thing is the textbook product
``∂E/∂w = ∂E/∂out · ∂out/∂net · ∂net/∂w``.

When the layer below the chain's top has its own Linear layer above (a hidden layer), the upstream
gradient ``∂E/∂out_h`` is expanded one more level: ``Σ_o ∂E/∂net_o · W[o, h]`` with the weights as
they were when the backward pass read them (the start of the step).

Other layers (convolutions, normalizations) get the sum-form formula of their backward operation
with the engine's value.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MAX_TERMS = 6


@dataclass
class Factor:
    symbol: str          # "∂E/∂out"
    tensor: str          # "sigmoid2.grad_out[0, 0]"
    value: float


@dataclass
class Explanation:
    param: str                           # "linear2.weight"
    index: tuple[int, ...]
    value: float | None                  # the engine's gradient element (None: not computed this step)
    lines: list[str] = field(default_factory=list)
    factors: list[Factor] = field(default_factory=list)   # the single-sample product, when it applies
    recomputed: float | None = None      # the product / sum of the shown numbers
    ok: bool = True                      # recomputed agrees with the engine

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def fmt(v: float, digits: int = 9) -> str:
    v = float(v)
    if not np.isfinite(v):
        return "NaN" if v != v else ("+Inf" if v > 0 else "-Inf")
    return f"{v:.{digits}g}"


def factor(v: float, digits: int = 9) -> str:
    """A number as a factor of a product: negatives in parentheses, as a textbook writes them."""
    t = fmt(v, digits)
    return f"({t})" if t.startswith("-") else t


def _idx(ix) -> str:
    return "[" + ", ".join(str(int(i)) for i in ix) + "]"


def grad_params(session) -> list[str]:
    """Every parameter of the scenario (frozen ones too: their gradients are computed)."""
    return list(session.scenario.initial)


def _writer_index(session, name: str) -> int | None:
    for op in session.ops:
        if name in op.outputs or name in op.also_writes:
            return op.index
    return None


def computed_this_step(session, name: str) -> bool:
    """Whether the op writing ``name`` has run in the cursor's step."""
    w = _writer_index(session, name)
    k, i = session.position
    return w is not None and w < i and k <= session.N


def explain(session, param: str, index, digits: int = 9) -> Explanation:
    """The chain rule for ``<param>.grad[index]`` at the cursor."""
    if param.endswith(".grad"):
        param = param[: -len(".grad")]
    if param not in session.scenario.initial:
        raise KeyError(f'"{param}" is not a parameter; parameters: {", ".join(session.scenario.initial)}')
    gname = f"{param}.grad"
    layer_name, pname = param.rsplit(".", 1)
    G = session.value(gname)
    index = tuple(int(i) for i in np.atleast_1d(index)) if np.ndim(index) else (int(index),)
    ex = Explanation(param, index, None)
    if G is None or not computed_this_step(session, gname):
        w = _writer_index(session, gname)
        op = session.ops[w].name if w is not None else "?"
        ex.lines = [f"∂E/∂{param}{_idx(index)} is computed by \"{op}\" (op {w + 1 if w is not None else '?'}), "
                    f"which has not run in this step yet.",
                    "Step into the backward pass (s), or back into the previous step (p), to see the chain "
                    "rule with that step's numbers."]
        ex.ok = False
        return ex
    G = np.asarray(G)
    if len(index) != G.ndim or any(not (0 <= i < n) for i, n in zip(index, G.shape)):
        raise IndexError(f"index {_idx(index)} is outside {gname}, shape {list(G.shape)}")
    ex.value = float(G[index])
    layers = session.program.layers
    li = next(i for i, L in enumerate(layers) if L.name == layer_name)
    L = layers[li]
    if L.type == "linear":
        _linear(session, ex, li, pname, index, digits)
    else:
        _generic(session, ex, li, gname, index, digits)
    return ex


def _upstream_chain(session, li: int):
    """The element-wise layers directly above layer ``li`` (through which ∂E/∂net is a product)."""
    layers = session.program.layers
    chain = []
    j = li + 1
    while j < len(layers) and layers[j].elementwise:
        chain.append(layers[j])
        j += 1
    return chain, j


def _linear(session, ex: Explanation, li: int, pname: str, index, digits: int):
    f = lambda v: fmt(v, digits)  # noqa: E731
    p = lambda v: factor(v, digits)  # noqa: E731
    prog = session.program
    L = prog.layers[li]
    n = L.name
    xin_name = prog.in_name(li)
    g_net = np.asarray(session.value(f"{n}.grad_out"))
    x = np.asarray(session.value(xin_name))
    g2 = g_net.reshape(-1, g_net.shape[-1])
    x2 = x.reshape(-1, x.shape[-1])
    rows = g2.shape[0]
    o = index[0]
    j = index[1] if pname == "weight" else None
    chain, top = _upstream_chain(session, li)
    top_grad = f"{chain[-1].name}.grad_out" if chain else f"{n}.grad_out"
    # the element-wise product per row: ∂E/∂net[r, o] = ∂E/∂top[r, o] · Π local
    up = np.asarray(session.value(top_grad)).reshape(rows, -1)[:, o] if chain else g2[:, o]
    locs = [np.asarray(session.value(f"{E.name}.local")).reshape(rows, -1)[:, o] for E in reversed(chain)]
    ex.lines.append(f"E = loss;  w = {n}.{pname}{_idx(index)};  net = {n}.out[·, {o}] "
                    f"(the weighted sum {n}.out = {xin_name} @ {n}.weightᵀ + {n}.bias)")
    # symbols of the chain, from the top down
    outs = ["out"] if len(chain) == 1 else [f"out{len(chain) - m}" for m in range(len(chain))]
    for m, E in enumerate(reversed(chain)):
        ex.lines.append(f"{outs[m]} = {E.name}.out[·, {o}]  ({E.type} of "
                        f"{'net' if m == len(chain) - 1 else outs[m + 1]})")
    syms = []
    if chain:
        syms.append((f"∂E/∂{outs[0]}", top_grad))
        for m, E in enumerate(reversed(chain)):
            below = "net" if m == len(chain) - 1 else outs[m + 1]
            syms.append((f"∂{outs[m]}/∂{below}", f"{E.name}.local"))
    else:
        syms.append(("∂E/∂net", f"{n}.grad_out"))
    wsym = "w" if pname == "weight" else "b"
    last_sym = f"∂net/∂{wsym}"
    chain_txt = " · ".join(s for s, _ in syms) + f" · {last_sym}"

    def factors_at(r):
        vals = [up[r]] + [lv[r] for lv in locs]
        last = x2[r, j] if j is not None else 1.0
        return vals, last

    if rows == 1:
        vals, last = factors_at(0)
        rix = (0, o)
        ex.factors = [Factor(s, f"{t}{_idx(rix)}", float(v)) for (s, t), v in zip(syms, vals)]
        ex.factors.append(Factor(last_sym, f"{xin_name}[0, {j}]" if j is not None else "1 (bias)", float(last)))
        prod = float(np.prod([fa.value for fa in ex.factors]))
        ex.recomputed = prod
        ex.lines.append("")
        ex.lines.append(f"∂E/∂{wsym} = {chain_txt}")
        ex.lines.append("     = " + " × ".join(p(fa.value) for fa in ex.factors))
        ex.lines.append(f"     = {f(ex.value)}")
        ex.lines.append("")
        for fa in ex.factors:
            ex.lines.append(f"  {fa.symbol:<14} = {fa.tensor:<28} = {f(fa.value)}")
    else:
        terms = []
        for r in range(rows):
            vals, last = factors_at(r)
            terms.append((float(np.prod(vals)), float(last)))
        s = float(sum(a * b for a, b in terms))
        ex.recomputed = s
        ex.lines.append("")
        if j is not None:
            ex.lines.append(f"∂E/∂w = Σₙ ∂E/∂net[n] · ∂net[n]/∂w = Σₙ {n}.grad_out[n, {o}] · {xin_name}[n, {j}]"
                            f"   ({rows} rows)")
        else:
            ex.lines.append(f"∂E/∂b = Σₙ ∂E/∂net[n] · 1 = Σₙ {n}.grad_out[n, {o}]   ({rows} rows)")
        if chain:
            ex.lines.append(f"  with ∂E/∂net[n] = {' · '.join(s for s, _ in syms)}")
        shown = terms[:MAX_TERMS]
        parts = [f"{p(a)} × {p(b)}" if j is not None else p(a) for a, b in shown]
        more = f" + … ({rows - MAX_TERMS} more)" if rows > MAX_TERMS else ""
        ex.lines.append("     = " + " + ".join(parts) + more)
        ex.lines.append(f"     = {f(ex.value)}")
        if chain:
            ex.lines.append("")
        for r in range(min(rows, 3)):
            vals, last = factors_at(r)
            detail = " × ".join(p(v) for v in vals)
            if chain:
                ex.lines.append(f"  n={r}: ∂E/∂net = {detail} = {f(np.prod(vals))}"
                                + (f";  ∂net/∂w = {xin_name}[{r}, {j}] = {f(last)}" if j is not None else ""))
    _hidden_expansion(session, ex, li, chain, top, o, rows, f)
    _verdict(ex, f)


def _hidden_expansion(session, ex: Explanation, li: int, chain, top: int, o: int, rows: int, f):
    """∂E/∂out_h = Σ_o' ∂E/∂net'[o'] · W'[o', h] when a Linear layer sits right above the chain."""
    layers = session.program.layers
    if not chain or top >= len(layers) or layers[top].type != "linear" or rows != 1:
        return
    U = layers[top]
    W = session.step_start_value(f"{U.name}.weight")
    g_up = session.value(f"{U.name}.grad_out")
    if W is None or g_up is None:
        return
    g_up = np.asarray(g_up).reshape(-1)
    W = np.asarray(W)
    top_sym = ex.factors[0].symbol if ex.factors else "∂E/∂out"
    terms = [(float(g_up[p]), float(W[p, o])) for p in range(W.shape[0])]
    ex.lines.append("")
    ex.lines.append(f"and the upstream gradient {top_sym} comes from every unit of {U.name} it feeds:")
    ex.lines.append(f"  {top_sym} = Σ_o ∂E/∂net_o · w_o = Σ_o {U.name}.grad_out[0, o] · {U.name}.weight[o, {o}]"
                    "  (weights before this step's update)")
    shown = terms[:MAX_TERMS]
    more = f" + … ({len(terms) - MAX_TERMS} more)" if len(terms) > MAX_TERMS else ""
    p = lambda v: f"({f(v)})" if f(v).startswith("-") else f(v)  # noqa: E731
    ex.lines.append("     = " + " + ".join(f"{p(a)} × {p(b)}" for a, b in shown) + more
                    + f" = {f(sum(a * b for a, b in terms))}")


def _verdict(ex: Explanation, f):
    if ex.recomputed is None or ex.value is None:
        return
    a, b = ex.recomputed, ex.value
    ex.ok = bool(np.isclose(a, b, rtol=1e-9, atol=1e-12) or (not np.isfinite(a) and not np.isfinite(b)))
    ex.lines.append("")
    if ex.ok:
        ex.lines.append(f"✓ the numbers shown combine to {f(a)}, the engine's {ex.param}.grad{_idx(ex.index)}.")
    else:
        ex.lines.append(f"! The numbers shown give {f(a)}, but the engine's {ex.param}.grad{_idx(ex.index)} is {f(b)}.")


def _generic(session, ex: Explanation, li: int, gname: str, index, digits: int):
    f = lambda v: fmt(v, digits)  # noqa: E731
    p = lambda v: factor(v, digits)  # noqa: E731
    L = session.program.layers[li]
    op = next(op for op in session.ops if gname in op.outputs)
    ex.lines.append(f"{gname}{_idx(index)} is computed by \"{op.name}\" as a sum over the batch and positions:")
    for part in op.formula.split(";  "):
        ex.lines.append(f"  {part}")
    ex.lines.append("")
    ex.lines.append(f"{gname}{_idx(index)} = {f(ex.value)}")
    chain, _ = _upstream_chain(session, li)
    if chain:
        ex.lines.append(f"where {L.name}.grad_out = {chain[-1].name}.grad_out ⊙ "
                        + " ⊙ ".join(f"{E.name}.local" for E in reversed(chain)) + " (upstream × local)")
