"""Formulas as structure: clauses made of typed references, never text to be parsed back. This is
the vocabulary a layer writes its formulas in; :mod:`nnstep.model.formula` fills them with numbers.

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
with names and symbols, ``nnstep.model.formula.views`` each clause with the numbers filled in. A
layer writes its formulas with :func:`F`, from a template in its own source (never from a
scenario).
"""
from __future__ import annotations

import re
from typing import Union

from .records import record


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
