"""A formula's clauses with their numbers filled in: what the op panel, ``trace`` and ``explain``
show under a formula (the vocabulary the layers write formulas in is :mod:`nnstep.layers.formula`)."""
from __future__ import annotations

import re
from typing import Mapping

import numpy as np

from ..layers.records import record
from ..layers.formula import (_SUPER, Const, Count, Formula, Ref, StepNum, StepPow, Sym, _text,
                              side_text)


MAX_DIGITS = 15          # significant digits a float64 holds faithfully


FULL_DIGITS = 12         # a result is written in full up to this many significant digits


def num(v, digits: int = 4, decimals: int | None = None, exact: bool = False) -> str:
    """``v`` to ``digits`` significant digits. ``decimals``: a result written beside the numbers it
    was computed from keeps the precision that those of them written in full give it: down to
    their finest place at least (in digits after the point: 1 for 352.5, 0 for 570, -2 for
    1.23e+05; so 352.5 + 570·2 is 1492.5, not 1492, and -1372·-343 is 470596, not 4.706e+05),
    and, when every one of them is written in full (``exact``), the result in full if it is a
    decimal down to twice that place (352.5·219.5 is 77373.75: a product's places add up), of at
    most FULL_DIGITS digits. At most MAX_DIGITS."""
    v = float(v)
    if v != v:
        return "NaN"
    if v == float("inf"):
        return "+Inf"
    if v == float("-inf"):
        return "-Inf"
    if decimals is not None and v:
        e = int(f"{v:e}".rsplit("e", 1)[1])          # (the exponent of its first digit)
        if exact:
            for p in range(digits, min(FULL_DIGITS, e + 1 + (2 * decimals if decimals > 0 else decimals)) + 1):
                s = f"{v:.{p}g}"
                if in_full(s, v):
                    return s
        digits = max(digits, min(MAX_DIGITS, e + 1 + decimals))
    s = f"{v:.{digits}g}"
    return "0" if s == "-0" else s


def in_full(text: str, v: float) -> bool:
    """Whether ``text`` is ``v`` written in full (but for float64's rounding of a few operations)."""
    return abs(float(text) - v) <= 1e-15 * abs(v)


_NUMBER = re.compile(r"-?\d+(?:\.(\d+))?(?:e([+-]\d+))?")


def decimals_of(text: str) -> int | None:
    """The last place the number ``text`` (as num writes it) shows, in digits after the point:
    352.5 gives 1, 1e-05 5, 570 0, 1.5e+10 -9; None for NaN or an infinity."""
    m = _NUMBER.fullmatch(text)
    if m is None:
        return None
    return len(m.group(1) or "") - int(m.group(2) or 0)


def inline(a, digits: int = 4, decimals: int | None = None, exact: bool = False) -> str:
    """A small tensor written inline: a scalar as a number, a column (a batch of scalars) as
    ``[a, b]ᵀ``, a matrix as rows in brackets. ``decimals``, ``exact``: as num."""
    a = np.asarray(a)

    def f(v):
        return num(v, digits, decimals, exact)
    if a.size == 1:
        return f(a.ravel()[0])
    if a.ndim == 2 and a.shape[1] == 1:
        return "[" + ", ".join(f(v) for v in a.ravel()) + "]ᵀ"
    if a.ndim >= 2 and a.shape[0] > 1:
        return "[" + ", ".join("[" + ", ".join(f(v) for v in np.ravel(r)) + "]" for r in a) + "]"
    return "[" + ", ".join(f(v) for v in a.ravel()) + "]"


def _const(v: float) -> str:
    return f"{v:g}"


@record(frozen=True)
class ClauseView:
    """One clause, as text and with the numbers: ``lhs arrow rhs`` and ``num_lhs arrow num_rhs``.
    ``filled``: some tensor of it was written as numbers (else the numbers line says nothing new)."""
    lhs: str
    arrow: str
    rhs: str
    num_lhs: str
    num_rhs: str
    filled: bool

    @property
    def text(self) -> str:
        return f"{self.lhs} {self.arrow} {self.rhs}" if self.arrow else self.lhs

    @property
    def numbers(self) -> str:
        return f"{self.num_lhs} {self.arrow} {self.num_rhs}" if self.arrow else self.num_lhs


def views(formula: Formula, before: Mapping, after: Mapping, step: int | None = None, max_size: int = 6,
          digits: int = 4) -> list[ClauseView]:
    """Every clause with the numbers of its small tensors filled in. In ``lhs = rhs`` the left side
    takes the value the op wrote (``after``), the right side the value as it was when the clause ran
    (``before``, then what earlier clauses wrote). A tensor with an index, one larger than
    ``max_size`` elements or of more than 2 dimensions keeps its name. A local symbol defined as one
    tensor (``g = P.grad``) takes that tensor's value. Constants become their values, a Count the
    size of this step's tensor, StepPow the step number. The left side's numbers keep as many
    digits after the point as the right side's tensors show (``1492.5 = [352.5, 570] @ [1, 2]ᵀ``,
    not ``1492``), so that a reader redoing the arithmetic finds the number written."""
    current = {n: v for n, v in before.items() if v is not None}
    syms: dict[str, object] = {}
    out = []
    for c in formula:
        # a local symbol that stands for one tensor ("g = linear1.weight.grad") takes its value
        rhs_refs = [p for p in c.rhs if not (isinstance(p, str) and not p.strip())]
        if (c.arrow and len(c.lhs) == 1 and isinstance(c.lhs[0], Sym) and len(rhs_refs) == 1
                and isinstance(rhs_refs[0], Ref) and not rhs_refs[0].index and rhs_refs[0].take is None):
            v = current.get(rhs_refs[0].name)
            if v is not None:
                syms[c.lhs[0].text] = v
        filled = [False]
        # the finest place of the right side's tensors' numbers written in full, and whether all are
        shown: list = [None, True]

        def value(v, T, is_lhs):
            if is_lhs:
                return _value_text(v, T, digits, *shown)
            for x in np.ravel(v):
                t = num(x, digits)
                d = decimals_of(t)
                if d is None:
                    continue
                if not in_full(t, float(x)):
                    shown[1] = False
                elif shown[0] is None or d > shown[0]:
                    shown[0] = d
            return _value_text(v, T, digits)

        def render(parts, source, is_lhs):
            buf: list[str] = []
            for p in parts:
                prev = "".join(buf).rstrip()
                if isinstance(p, Ref):
                    v = None if p.index else _taken(p, source.get(p.name))
                    if v is None or np.asarray(v).size > max_size or np.ndim(v) > 2:
                        buf.append(_text(p))
                        continue
                    buf.append(_paren(value(v, p.T, is_lhs), prev))
                    filled[0] = True
                elif isinstance(p, Sym) and not is_lhs and (p.text in syms or p.of is not None):
                    v = syms.get(p.text) if p.of is None else _taken(p.of, source.get(p.of.name))
                    if v is None:
                        buf.append(p.text)
                        continue
                    if np.asarray(v).size <= max_size and np.ndim(v) <= 2:
                        buf.append(_paren(value(v, False, False), prev))
                        filled[0] = True
                    else:
                        buf.append(p.text)
                elif isinstance(p, Const):
                    buf.append(_paren(_const(p.value), prev))
                elif isinstance(p, Count):
                    v = current.get(p.tensor, after.get(p.tensor))
                    if v is None:
                        buf.append(p.symbol)
                    else:
                        shp = np.shape(v)
                        axes = range(len(shp)) if p.axes is None else p.axes
                        buf.append(str(int(np.prod([shp[a] for a in axes]))))
                elif isinstance(p, StepPow):
                    buf.append(str(step).translate(_SUPER) if step is not None else "ᵗ")
                elif isinstance(p, StepNum):
                    buf.append(str(step) if step is not None else p.symbol)
                else:
                    buf.append(_text(p))
            return "".join(buf)

        rhs_num = render(c.rhs, current, False)
        lhs_num = render(c.lhs, after, True) if c.arrow else render(c.lhs, current, False)
        for p in c.lhs:
            if isinstance(p, Ref) and not p.index and p.take is None and after.get(p.name) is not None:
                current[p.name] = after[p.name]
        out.append(ClauseView(side_text(c.lhs), c.arrow, side_text(c.rhs), lhs_num, rhs_num, filled[0]))
    return out


def _taken(p: Ref, v):
    """A Ref's value: the tensor, or its slice when the Ref takes one."""
    if v is None or p.take is None:
        return v
    a = np.asarray(v)
    if len(p.take) == 2:
        return np.take(a, p.take[1], axis=p.take[0])
    return np.take(a, range(p.take[1], p.take[2]), axis=p.take[0])


def numbers(formula: Formula, before: Mapping, after: Mapping, **kw) -> str | None:
    """The whole formula with the numbers (``;  `` between clauses), or None when no tensor of it
    was small enough to show."""
    vs = views(formula, before, after, **kw)
    if not any(v.filled for v in vs):
        return None
    return ";  ".join(v.numbers for v in vs)


def _value_text(v, transposed: bool, digits: int, decimals: int | None = None, exact: bool = False) -> str:
    txt = inline(v, digits, decimals, exact)
    if transposed:                       # a scalar stays a scalar, a column becomes a row
        if np.asarray(v).size == 1:
            pass
        elif txt.endswith("]ᵀ"):
            txt = txt[:-1]
        else:
            txt += "ᵀ"
    return txt


def _paren(txt: str, before: str) -> str:
    """A negative number after an operator in parentheses, as a textbook writes it: 0.1·(-1.8)."""
    if txt.startswith("-") and before and before[-1] not in "=←([,;":
        return f"({txt})"
    return txt
