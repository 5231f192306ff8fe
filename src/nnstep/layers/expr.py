"""One element of a value, as arithmetic on the engine's numbers (for explain).

A layer (and the loss, the optimizer) writes, next to its vectorized math, how one element of what
it computes comes out of the elements it reads: an expression over those elements (``El``), the
scenario's constants (``K``) and plain numbers (``Lit``), built with Python's operators and a few
functions (``exp``, ``log``, ``sqrt``, ``tanh``, ``sig``, ``erf``, ``vmax``). The same expression
renders with names (``input[0, 1] · linear1.weight[0, 1] + …``), renders with the numbers
(``0.05 × 0.15 + …``) and evaluates them, so what explain shows is exactly what it adds up, and the
result is checked against the engine's number (``Value.check``).

Intermediates that deserve a line of their own (a normalization's mean, a softmax's row sum) are
``Def``s: shown first, then used by symbol. A Def that is an engine tensor's element (``engine``)
is checked against it too, and later lines use the engine's number.
"""
from __future__ import annotations

import math

import numpy as np

from .records import Factory, record
from .terms import ix

MAX_TERMS = 6                      # terms of a sum written out (the rest are counted, and evaluated)
SUM, MUL, NEG, POW, ATOM = 1, 2, 3, 4, 9


def _g(v: float) -> str:
    s = f"{float(v) + 0.0:.9g}"
    return s


class X:
    """An expression: its value (float64), the magnitude its rounding error scales with, and its
    text with names (``f`` None) or with numbers formatted by ``f``."""
    prec = ATOM
    _v: float | None = None

    def v(self) -> float:
        if self._v is None:
            with np.errstate(all="ignore"):
                self._v = float(self._eval())
        return self._v

    def _eval(self) -> float:
        raise NotImplementedError

    def mag(self) -> float:
        return abs(self.v())

    def txt(self, f=None) -> str:
        raise NotImplementedError

    def __add__(self, o):
        return Sum.of(self, 1, _x(o))

    def __radd__(self, o):
        return Sum.of(_x(o), 1, self)

    def __sub__(self, o):
        return Sum.of(self, -1, _x(o))

    def __rsub__(self, o):
        return Sum.of(_x(o), -1, self)

    def __mul__(self, o):
        return Mul.of(self, _x(o))

    def __rmul__(self, o):
        return Mul.of(_x(o), self)

    def __truediv__(self, o):
        return Div(self, _x(o))

    def __rtruediv__(self, o):
        return Div(_x(o), self)

    def __neg__(self):
        return Neg(self)


def _x(o) -> X:
    return o if isinstance(o, X) else Lit(float(o))


def _neg_text(t: str) -> bool:
    return t.startswith("-") or t.startswith("−")


def _wrap(x: X, f, below: int, neg: bool = True) -> str:
    """x's text, in parentheses when its precedence is below ``below`` (or, with ``neg``, when it
    reads as a negative number after an operator)."""
    t = x.txt(f)
    if x.prec < below or (neg and _neg_text(t)):
        return f"({t})"
    return t


class _Leaf(X):
    def _num(self, f) -> str:
        return f(self.v()) if f is not None else _g(self.v())


class El(_Leaf):
    """An element of an engine tensor; ``when`` tells two values of one tensor apart (a parameter
    "before" its update)."""

    def __init__(self, name: str, idx, value, when: str = ""):
        self.name, self.idx, self._v, self.when = name, tuple(int(i) for i in idx), float(value), when

    def txt(self, f=None):
        if f is not None:
            return self._num(f)
        return f"{self.name}{ix(self.idx)}" + (f" ({self.when})" if self.when else "")


def el(V, name: str, idx) -> El:
    """The element ``name[idx]`` of the tensors ``V`` gives."""
    idx = tuple(int(i) for i in idx)
    return El(name, idx, np.asarray(V(name))[idx])


class K(_Leaf):
    """A named constant of the scenario (ε, lr, β1) or of the formula (d, the head width)."""

    def __init__(self, symbol: str, value):
        self.symbol, self._v = symbol, float(value)

    def txt(self, f=None):
        return self._num(f) if f is not None else self.symbol


class Ref(K):
    """A Def's symbol, standing for its value."""


class Lit(_Leaf):
    """A plain number, the same in both texts (1, 2, ½)."""

    def __init__(self, value, text: str | None = None):
        self._v, self.text = float(value), text

    def txt(self, f=None):
        return self.text if self.text is not None else _g(self._v)


class Sum(X):
    """a ± b ± …; ``tail``: how many of the last items are written even when the sum is cut (a
    bias after a long sum of products)."""
    prec = SUM

    def __init__(self, items, more: str = "term", tail: int = 0):
        self.items = list(items)            # (sign, X)
        self.more, self.tail = more, tail

    @classmethod
    def of(cls, a: X, sign: int, b: X) -> "Sum":
        if isinstance(a, Sum) and not isinstance(a, Many):
            return Sum(a.items + [(sign, b)], a.more, a.tail + 1)
        return Sum([(1, a), (sign, b)])

    def _eval(self):
        vals = [s * x.v() for s, x in self.items]
        try:
            return math.fsum(vals)
        except (ValueError, OverflowError):            # inf − inf, or an overflow: as numpy adds
            return float(np.sum(np.asarray(vals, dtype=np.float64)))

    def mag(self):
        return math.fsum(x.mag() for _, x in self.items) if self.items else 0.0

    def txt(self, f=None):
        if not self.items:
            return "0"
        n, tail = len(self.items), min(self.tail, len(self.items))
        head = self.items[:n - tail]
        shown = head[:MAX_TERMS]
        left = len(head) - len(shown)
        out = []
        for j, (s, x) in enumerate(shown + self.items[n - tail:]):
            if j == len(shown) and left:
                out.append(f" + … ({left} more {self.more}{'s' if left != 1 else ''})")
            below = MUL if s < 0 or isinstance(x, Sum) else SUM      # a sum inside a sum keeps its parentheses
            if j == 0:
                out.append(_wrap(x, f, below, neg=False) if s > 0 else f"−{_wrap(x, f, MUL)}")
            else:
                out.append((" + " if s > 0 else " − ") + _wrap(x, f, below))
        if left and not tail:
            out.append(f" + … ({left} more {self.more}{'s' if left != 1 else ''})")
        return "".join(out)


class Many(Sum):
    """A sum of many terms (every value of a large tensor): ``make(j)`` builds term j as an
    expression, for the first few that are written; ``values`` holds every term's value, the same
    arithmetic done on the whole array, which is what is added (and ``mags`` their magnitudes)."""

    def __init__(self, make, values, mags=None, more: str = "term"):
        self.values = np.asarray(values, dtype=np.float64).ravel()
        self.mags = np.abs(self.values) if mags is None else np.asarray(mags, dtype=np.float64).ravel()
        self.make = make
        super().__init__([(1, make(j)) for j in range(min(self.values.size, MAX_TERMS))], more)

    def _eval(self):
        # the terms written out must be the ones added: a written term whose value differs from its
        # entry of ``values`` makes the sum NaN, so the check fails where it is shown
        for j, (_, e) in enumerate(self.items):
            if not agrees(e.v(), float(self.values[j]), max(e.mag(), float(self.mags[j])), 1e-9):
                return float("nan")
        try:
            return math.fsum(self.values.tolist())
        except (ValueError, OverflowError):
            return float(np.sum(self.values))

    def mag(self):
        return float(np.sum(self.mags))

    def txt(self, f=None):
        t = super().txt(f)
        left = self.values.size - len(self.items)
        return t + (f" + … ({left} more {self.more}{'s' if left != 1 else ''})" if left > 0 else "")


def _shallow(x: X) -> X:
    """x with its operands evaluated: a sum's terms, a product's factors, a quotient's sides become
    numbers, recursing only through products and quotients (a sum inside them shows its terms)."""
    if isinstance(x, Many):
        return Many(lambda j: K("", x.values[j]), x.values, x.mags, x.more)
    if isinstance(x, Sum):
        return Sum([(s, K("", e.v())) for s, e in x.items], x.more, x.tail)
    if isinstance(x, Mul):
        return Mul([_shallow(e) if isinstance(e, (Sum, Mul, Div)) else K("", e.v()) for e in x.factors])
    if isinstance(x, Div):
        return Div(*(_shallow(e) if isinstance(e, (Sum, Mul, Div)) else K("", e.v()) for e in (x.a, x.b)))
    return K("", x.v())


def partial(x: X, f) -> str | None:
    """x one level evaluated, for the line between its numbers and its value (None: nothing to add)."""
    if not isinstance(x, (Sum, Mul, Div)):
        return None
    return _shallow(x).txt(f)


def total(xs, more: str = "term") -> X:
    """Σ of the expressions ``xs`` (every one evaluated, the first few written out)."""
    xs = list(xs)
    return Sum([(1, x) for x in xs], more) if len(xs) != 1 else xs[0]


class Mul(X):
    prec = MUL

    def __init__(self, factors, sep: str = " · ", nsep: str = " × "):
        self.factors = list(factors)
        self.sep, self.nsep = sep, nsep

    @classmethod
    def of(cls, a: X, b: X) -> "Mul":
        if isinstance(a, Mul):
            return Mul(a.factors + [b], a.sep, a.nsep)
        return Mul([a, b])

    def _eval(self):
        v = np.float64(1.0)
        for x in self.factors:
            v = v * np.float64(x.v())
        return v

    def mag(self):
        m = 1.0
        for x in self.factors:
            m *= max(x.mag(), abs(x.v()))
        return m

    def txt(self, f=None):
        sep = self.nsep if f is not None else self.sep
        return sep.join(_wrap(x, f, MUL) if j else _wrap(x, f, MUL, neg=f is not None)
                        for j, x in enumerate(self.factors))


class Div(X):
    prec = MUL

    def __init__(self, a: X, b: X):
        self.a, self.b = a, b

    def _eval(self):
        return np.float64(self.a.v()) / np.float64(self.b.v())

    def mag(self):
        b = abs(self.b.v())
        return (self.a.mag() + abs(self.v()) * self.b.mag()) / b if b else math.inf

    def txt(self, f=None):
        return f"{_wrap(self.a, f, MUL, neg=False)} / {_wrap(self.b, f, POW)}"


class Neg(X):
    prec = NEG

    def __init__(self, x: X):
        self.x = x

    def _eval(self):
        return -self.x.v()

    def mag(self):
        return self.x.mag()

    def txt(self, f=None):
        return f"−{_wrap(self.x, f, MUL)}"


class Sq(X):
    prec = POW

    def __init__(self, x: X):
        self.x = x

    def _eval(self):
        return np.float64(self.x.v()) ** 2

    def mag(self):
        return max(self.x.mag(), abs(self.x.v())) ** 2

    def txt(self, f=None):
        return f"{_wrap(self.x, f, ATOM)}²"


def sq(x) -> X:
    return Sq(_x(x))


class Fn(X):
    """f(x) for a function of one number: ``form`` writes it ("e^({})", "tanh({})")."""

    def __init__(self, form: str, x: X, fn, mag):
        self.form, self.x, self.fn, self._mag = form, x, fn, mag

    def _eval(self):
        return self.fn(np.float64(self.x.v()))

    def mag(self):
        return self._mag(self)

    def txt(self, f=None):
        return self.form.format(self.x.txt(f))


def _smooth(s: Fn) -> float:                  # a function whose derivative is at most 1 in size
    return abs(s.v()) + s.x.mag()


def exp(x) -> X:
    return Fn("e^({})", _x(x), np.exp, lambda s: abs(s.v()) * (1.0 + s.x.mag()))


def log(x) -> X:
    return Fn("log({})", _x(x), np.log, lambda s: abs(s.v()) + s.x.mag() / abs(s.x.v()) if s.x.v() else math.inf)


def sqrt(x) -> X:
    return Fn("√({})", _x(x), np.sqrt, lambda s: abs(s.v()) * (1.0 + s.x.mag() / abs(s.x.v())) if s.x.v() else s.x.mag())


def tanh(x) -> X:
    return Fn("tanh({})", _x(x), np.tanh, _smooth)


def sig(x) -> X:
    """σ(x), as the engine computes it: 1 / (1 + e^(−x))."""
    return Fn("σ({})", _x(x), lambda v: 1.0 / (1.0 + np.exp(-v)), _smooth)


def erf(x) -> X:
    return Fn("erf({})", _x(x), lambda v: math.erf(float(v)), _smooth)


def vabs(x) -> X:
    return Fn("|{}|", _x(x), abs, _smooth)


def cos(x) -> X:
    return Fn("cos({})", _x(x), np.cos, _smooth)


class Pow(X):
    """x to a whole power: x³, written with a superscript (Adam's β1ᵗ)."""
    prec = POW
    _SUP = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")

    def __init__(self, x: X, n: int):
        self.x, self.n = x, int(n)

    def _eval(self):
        return np.float64(self.x.v()) ** self.n

    def mag(self):
        return abs(self.v()) * (1.0 + abs(self.n))

    def txt(self, f=None):
        return f"{_wrap(self.x, f, ATOM)}{str(self.n).translate(self._SUP)}"


class Lse(X):
    """log(e^(a) + e^(b) + …), evaluated max-shifted as the engine does (the same number)."""

    def __init__(self, items):
        self.items = list(items)

    def _eval(self):
        v = np.asarray([x.v() for x in self.items], dtype=np.float64)
        m = v.max()
        if not np.isfinite(m):
            return m
        return m + np.log(np.exp(v - m).sum())

    def mag(self):
        return max((x.mag() for x in self.items), default=0.0) + 1.0

    def txt(self, f=None):
        shown = [f"e^({x.txt(f)})" for x in self.items[:MAX_TERMS]]
        left = len(self.items) - len(shown)
        return "log(" + " + ".join(shown) + (f" + … ({left} more)" if left else "") + ")"


class Max(X):
    def __init__(self, items, form: str = "max({})", pick=max):
        self.items, self.form, self.pick = list(items), form, pick

    def _eval(self):
        vals = [x.v() for x in self.items]
        return float("nan") if any(v != v for v in vals) else self.pick(vals)

    def mag(self):
        return max((x.mag() for x in self.items), default=0.0)

    def txt(self, f=None):
        shown = [x.txt(f) for x in self.items[:MAX_TERMS + 2]]
        left = len(self.items) - len(shown)
        return self.form.format(", ".join(shown) + (f", … ({left} more)" if left else ""))


def vmax(*xs) -> X:
    return Max([_x(x) for x in xs])


def vmin(*xs) -> X:
    return Max([_x(x) for x in xs], "min({})", min)


class Pick(X):
    """One of several cases, the one that holds, with the condition it met written after it:
    ``x   (as linear1.out[0, 0] > 0)``, then ``0.3   (as 0.3 > 0)``."""
    prec = SUM

    def __init__(self, x: X, a: X, op: str, b: X):
        self.x, self.a, self.op, self.b = x, a, op, b

    def _eval(self):
        return self.x.v()

    def mag(self):
        return self.x.mag()

    def txt(self, f=None):
        return f"{self.x.txt(f)}   (as {self.a.txt(f)} {self.op} {self.b.txt(f)})"


@record
class Def:
    """An intermediate with a line of its own: ``symbol = expr``. ``engine``: the engine tensor's
    element it is (checked against it; later lines use the engine's number)."""
    symbol: str
    expr: X
    engine: El | None = None

    @property
    def ref(self) -> Ref:
        return Ref(self.symbol, self.engine.v() if self.engine is not None else self.expr.v())


@record
class Value:
    """How one element comes out of the numbers it reads: ``where`` first, then ``expr``, which
    must give the engine's number. ``how`` says it in words; ``notes`` add facts (which keys
    a mask hides), never numbers that are not checked; ``given`` elements are shown with their
    numbers (where a derivative is taken, a constant's value)."""
    how: str
    expr: X
    where: list = Factory(list)
    notes: list = Factory(list)
    given: list = Factory(list)      # numbers the element depends on that its expression does not show


def agrees(got: float, want: float, mag: float, rtol: float) -> bool:
    """Whether a recomputed number agrees with the engine's, to rounding (rtol of the magnitudes
    that went into it); two NaNs, or two infinities of the same sign, agree."""
    if not (math.isfinite(got) and math.isfinite(want)):
        return (got != got and want != want) or got == want
    return abs(got - want) <= rtol * max(mag, abs(want)) + 1e-300
