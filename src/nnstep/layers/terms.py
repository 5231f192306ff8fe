"""One element of a gradient, as the chain rule writes it: a sum of terms, each a product of local
factors (numbers the engine computed) and, except at the loss, one element of the upstream gradient.

Every layer type (and loss) writes these element rules next to its vectorized backward, in its own
class (``grad_rule``; docs/layers.md), so explain can expand any gradient element back to the loss, and check that the
terms add up to the number the vectorized backward wrote.
"""
from __future__ import annotations

from .records import Factory, record


@record(frozen=True)
class Factor:
    symbol: str          # what it stands for: "∂sigmoid1.out[0, 0]/∂linear1.out[0, 0]"
    source: str          # where the number comes from: "sigmoid1.local[0, 0]", "input[0, 1]"
    value: float


@record(frozen=True)
class Term:
    factors: tuple[Factor, ...] = ()
    upstream: tuple[str, tuple[int, ...]] | None = None   # (gradient tensor, index), None at the loss


@record
class Rule:
    """An element's expansion: ``how`` says in words which rule it is (``"Σₒ over linear2's
    outputs"``), ``terms`` are summed."""
    how: str
    terms: list[Term] = Factory(list)


def ix(index) -> str:
    """``[0, 1]``; nothing for a scalar's empty index."""
    return "[" + ", ".join(str(int(i)) for i in index) + "]" if len(index) else ""
