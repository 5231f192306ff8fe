"""The trail of the cursor's step: the environment at every position of that step the cursor has
stood on, a replay passed or a look-ahead (``Session.peek``) computed, each with the record of the
op before it; dropped when the cursor leaves the step. A move onto a position it holds puts those
very arrays back and runs no op (the cost model is :mod:`.history`'s docstring)."""
from __future__ import annotations

from .history import OpRecord


class Trail:
    def __init__(self) -> None:
        self.k: int | None = None
        self.at: dict[int, tuple[dict, OpRecord | None]] = {}   # position i -> (environment, record)
        self.finite: dict[int, bool] = {}   # positions peeked whose op wrote only finite numbers

    def of(self, k: int) -> dict:
        """The positions, made step k's (emptied if they were another step's)."""
        if self.k != k:
            self.reset(k)
        return self.at

    def reset(self, k: int) -> None:
        """Empty, for step k."""
        self.k, self.at, self.finite = k, {}, {}

    def get(self, k: int, i: int) -> tuple[dict, OpRecord | None] | None:
        return self.at.get(i) if k == self.k else None

    def below(self, k: int, i: int) -> int | None:
        """The trail's nearest position before (k, i), in step k."""
        return max((t for t in self.at if t < i), default=None) if k == self.k else None

    def keep(self, k: int, i: int, env: dict, rec: OpRecord | None) -> None:
        """The cursor stands at (k, i): keep its position (not the step start: that is the history's)."""
        self.of(k)
        if i:
            self.at[i] = (dict(env), rec)

    def last_op_ahead(self, k: int, i: int, M: int, here: dict) -> dict | None:
        """At a step's last op (``i + 1 == M``), what it writes if a look-ahead computed it: the
        tensors of the trail's position M (the step done, the next batch not fed) that the
        cursor's environment ``here`` lacks; None if the look-ahead ran from other arrays (a
        replay's)."""
        if i + 1 != M or k != self.k or M not in self.at:
            return None
        base = self.at.get(M - 1, (None,))[0]
        if base is None or len(base) != len(here) or any(here.get(n) is not v for n, v in base.items()):
            return None
        return {n: v for n, v in self.at[M][0].items() if here.get(n) is not v}
