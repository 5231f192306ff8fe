"""Random sequences of every Session move (step, back, run, interrupted run, run until, goto,
reverse, interrupted reverse, breakpoint toggles, conditions, NaN/Inf stops on and off, restart),
on scenarios long enough for a long continue (40 and 60 steps) and on the blow-up scenario, each
move checked against a fresh session at the same position (every tensor) and for bounded work
(ops executed), so a move that loops or replays far more than the history's cost model allows fails
here, outside the TUI. Written while looking for the random-key TUI test's CI hang (issue 13):
it has not found one. NNSTEP_STRESS_SEEDS=300 for a longer local run."""
import os
import random
import sys

import numpy as np
import pytest

import nnstep
from nnstep.debugger.history import HistoryPolicy
from nnstep.debugger.session import Session

from scen import SCENARIOS

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tui"))
from test_abuse import BLOWUP  # noqa: E402

TINY = HistoryPolicy(ring=1, near_span=2, near_every=2, mid_span=4, mid_every=4, far_count=2)
TEXTS = {"blowup": BLOWUP}
for _n, _t in SCENARIOS.items():
    TEXTS[_n + "_long"] = _t.replace("steps = 9", "steps = 40").replace("steps = 8", "steps = 40")
SEEDS = int(os.environ.get("NNSTEP_STRESS_SEEDS", "8"))
MOVES = ["step", "back", "run", "run", "run_int", "run_until", "goto", "reverse", "reverse_int",
         "toggle", "break_when", "restart", "next_stage", "finish_step", "nonfinite"]


def _differs(a: Session, b: Session) -> list[str]:
    bad = []
    for n in sorted(a.names):
        x, y = a.value(n), b.value(n)
        if (x is None) != (y is None) or (x is not None and not np.array_equal(x, y, equal_nan=True)):
            bad.append(n)
    return bad


def _stopper(limit: int):
    n = [0]

    def should_stop() -> bool:
        n[0] += 1
        return n[0] >= limit
    return should_stop


def _move(s: Session, rng: random.Random, kind: str):
    M, N = s.M, s.N
    if kind in ("step", "back", "restart", "next_stage", "finish_step"):
        getattr(s, kind)()
    elif kind == "run":
        return s.run(check_every=16).reason
    elif kind == "run_int":
        return s.run(should_stop=_stopper(rng.randint(1, 20)), check_every=rng.choice([1, 16, 64])).reason
    elif kind in ("run_until", "goto"):
        k, i = divmod(rng.randrange(0, N * M + 1), M)
        if kind == "goto":
            s.goto(k + 1, i)
            return (k + 1, i)
        return (k + 1, i), s.run(until=(k + 1, i), check_every=16).reason
    elif kind == "reverse":
        return s.reverse_run(check_every=16).reason
    elif kind == "reverse_int":
        return s.reverse_run(should_stop=_stopper(rng.randint(1, 20)), check_every=16).reason
    elif kind == "toggle":
        op = rng.choice(s.ops).name
        return op, s.toggle_breakpoint(op)
    elif kind == "break_when":
        t = rng.choice(sorted(n for n in s.names if "grad_in" in n or n.endswith(".out") or n == "input"))
        text = f"{t} absmax > {rng.choice([0.1, 1, 10, 1e6])}"
        s.break_when(text)
        return text
    elif kind == "nonfinite":
        s.stop_on_nonfinite = not s.stop_on_nonfinite
        return s.stop_on_nonfinite


@pytest.mark.parametrize("seed", range(SEEDS))
def test_random_moves_match_a_fresh_session_with_bounded_work(seed):
    rng = random.Random(f"stress:{seed}")
    name = sorted(TEXTS)[seed % len(TEXTS)]
    sc = nnstep.loads_scenario(TEXTS[name])
    s = Session(sc, policy=rng.choice([None, TINY]))
    M, N = s.M, s.N
    log = []
    for _ in range(120):
        kind = rng.choice(MOVES)
        before = s.ops_executed
        what = _move(s, rng, kind)
        work = s.ops_executed - before
        log.append((kind, what, s.position, work))
        # the most any move may cost: a reverse scan of everything behind the cursor plus a jump
        assert work <= 3 * N * M + 4 * M, f"{name}: {log[-12:]}"
        fresh = Session(sc)
        fresh.goto(*s.position)
        assert _differs(s, fresh) == [], f"{name}: {log[-12:]}"
