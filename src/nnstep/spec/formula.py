"""Formulas as structure: clauses made of typed references, never text to be parsed back.

An operation's formula is a tuple of :class:`Clause`; each clause is ``lhs = rhs`` (or ``lhs ← rhs``
for an update), and each side a tuple of parts:

* :class:`Ref`: a tensor, by its full name, with its *role* in the operation (input, param,
  upstream, local, result, state, ...), an optional index in index notation and a transpose mark;
* :class:`Const`: a constant of the scenario with its symbol and value (``lr`` = 0.5);
* :class:`Count`: a size read off a tensor's shape (the batch size ``N`` of this step's batch);
* :class:`Sym`: a symbol local to the formula (``x̂``, ``g``, ``d``);
* :class:`StepPow`: the exponent ``t`` of Adam's bias corrections (the step number);
* :class:`StepNum`: the step number ``t`` itself (a learning-rate schedule's epoch);
* a plain ``str``: operators and words.

The UI, ``trace`` and ``explain`` all render from this structure: :func:`text` gives the formula
with names and symbols, :func:`views` gives each clause with the numbers filled in. Formulas are
written in the catalogue with :func:`F`, from a template of nnstep's own (never from a scenario).
"""
from __future__ import annotations

from .records import record

import re
from typing import Mapping, Union

import numpy as np


@record(frozen=True)
class Ref:
    name: str
    role: str = ""
    index: str = ""          # "[n, o, i]": an element in index notation, never filled with numbers
    T: bool = False          # transposed
    take: tuple[int, ...] | None = None   # (axis, i): the slice at i along axis, filled with its numbers
                                          # (an RNN's time step: x[:, 2]), written "[:, 2]"; (axis, a, b):
                                          # positions a..b−1 along axis, written "[:, a:b]"


@record(frozen=True)
class Const:
    symbol: str
    value: float


@record(frozen=True)
class Count:
    """A size of this step's tensor ``tensor``: the product of its ``axes`` (None: every axis)."""
    symbol: str
    tensor: str
    axes: tuple[int, ...] | None = None


@record(frozen=True)
class Sym:
    text: str
    of: "Ref | None" = None      # the tensor (slice) it stands for: its numbers fill it in (an LSTM's gate f)


@record(frozen=True)
class StepPow:
    """``ᵗ``: the step number as an exponent (Adam's 1 − β1ᵗ)."""


@record(frozen=True)
class StepNum:
    """``t``: the step number itself (a schedule's epoch), written as a number with the values."""
    symbol: str = "t"


Part = Union[Ref, Const, Count, Sym, StepPow, StepNum, str]


@record(frozen=True)
class Clause:
    lhs: tuple[Part, ...]
    rhs: tuple[Part, ...] = ()
    arrow: str = "="          # "=", "←", or "" for a clause that is a remark only (lhs holds it)


Formula = tuple[Clause, ...]

_SUPER = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")
_TOKEN = re.compile(r"\{(\w+)\}(ᵀ)?(\[[^\]]*\])?")
_ARROW = re.compile(r" (=|←) ")


# --- writing formulas ----------------------------------------------------------------------------
def F(template: str, **parts) -> Formula:
    """A formula from a template of nnstep's own: clauses separated by ``;`` and a space, ``{key}``
    for a part given by keyword (a trailing ``ᵀ`` marks a Ref transposed, a trailing ``[…]`` its
    index), everything else text. The first `` = `` or `` ← `` of a clause splits it."""
    out = []
    for clause in re.split(r";\s+", template.strip()):
        m = _ARROW.search(clause)
        if m is None:
            out.append(Clause(_parts(clause, parts), (), ""))
        else:
            out.append(Clause(_parts(clause[:m.start()], parts), _parts(clause[m.end():], parts), m.group(1)))
    return tuple(out)


def _parts(s: str, given: dict) -> tuple[Part, ...]:
    out: list[Part] = []
    pos = 0
    for m in _TOKEN.finditer(s):
        if m.start() > pos:
            out.append(s[pos:m.start()])
        key = m.group(1)
        if key not in given:
            raise KeyError(f"formula template names {{{key}}}, which was not given")
        p = given[key]
        if isinstance(p, Ref) and (m.group(2) or m.group(3)):
            p = Ref(p.name, p.role, m.group(3) or p.index, bool(m.group(2)) or p.T, p.take)
        elif m.group(2) or m.group(3):
            p = _text(p) + (m.group(2) or "") + (m.group(3) or "")
        out.append(p)
        pos = m.end()
    if pos < len(s):
        out.append(s[pos:])
    return tuple(out)


def refs(formula: Formula):
    """Every tensor reference, in order."""
    for c in formula:
        for p in c.lhs + c.rhs:
            if isinstance(p, Ref):
                yield p


def constants(formula: Formula) -> dict[str, float]:
    """The constants a formula uses, by symbol."""
    out: dict[str, float] = {}
    for c in formula:
        for p in c.lhs + c.rhs:
            if isinstance(p, Const):
                out.setdefault(p.symbol, p.value)
    return out


# --- rendering -------------------------------------------------------------------------------------
def _text(p: Part) -> str:
    if isinstance(p, str):
        return p
    if isinstance(p, Ref):
        at = "" if p.take is None else "[" + ":, " * p.take[0] + ":".join(map(str, p.take[1:])) + "]"
        return p.name + at + p.index + ("ᵀ" if p.T else "")
    if isinstance(p, (Const, Count)):
        return p.symbol
    if isinstance(p, Sym):
        return p.text
    if isinstance(p, StepPow):
        return "ᵗ"
    if isinstance(p, StepNum):
        return p.symbol
    raise TypeError(p)


def side_text(parts) -> str:
    return "".join(_text(p) for p in parts)


def clause_text(c: Clause) -> str:
    if not c.arrow:
        return side_text(c.lhs)
    return f"{side_text(c.lhs)} {c.arrow} {side_text(c.rhs)}"


def text(formula: Formula) -> str:
    """The formula with tensor names and symbols, clauses joined by ``;  ``."""
    return ";  ".join(clause_text(c) for c in formula)


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
