"""Stepping back is exact (docs/commands.md, issue 3): random walks of next, back, goto, stage and run
moves, each compared with a fresh session replayed forward to the same position: every named tensor
(values()), the last op's record, the step-start values and the loss history, bit for bit.

The history policy is shrunk (ring 1, near every 2nd within 2, mid every 4th within 4, far every 8th) so that 9 steps
exercise every path: the step-start cache, ring, mid and far checkpoints, pruning and recreation.
"""
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nnstep
from nnstep.debugger.history import HistoryPolicy

from scen import SCENARIOS, assert_matches, load, oracle

TINY = HistoryPolicy(ring=1, near_span=2, near_every=2, mid_span=4, mid_every=4, far_count=2)
POLICIES = {"tiny": TINY, "default": None}

_cache = {}


def setup(name):
    if name not in _cache:
        sc = load(SCENARIOS[name])
        _cache[name] = (sc, oracle(sc))
    return _cache[name]


def moves(n_positions):
    pos = st.integers(0, n_positions - 1)
    return st.lists(st.one_of(
        st.just(("step",)), st.just(("back",)), st.just(("back",)), st.just(("next_stage",)),
        st.just(("finish_step",)), st.just(("restart",)), st.just(("run",)), st.just(("reverse_run",)),
        st.tuples(st.just("goto"), pos), st.tuples(st.just("goto"), pos),
        st.tuples(st.just("back_n"), st.integers(1, 30)), st.just(("peek",)),
        st.tuples(st.just("peek_n"), st.integers(1, 12)),
    ), min_size=1, max_size=40)


def apply(s, move):
    kind = move[0]
    if kind == "goto":
        k, i = divmod(move[1], s.M)
        s.goto(k + 1, i)
    elif kind == "back_n":
        for _ in range(move[1]):
            s.back()
    elif kind == "peek_n":
        s.peek(move[1])
    else:
        getattr(s, kind)()


def walk(name, policy, seq, breakpoints=()):
    sc, snaps = setup(name)
    s = nnstep.Session(sc, policy=policy)
    for text in breakpoints:
        s.break_when(text)
    for op in ("backward linear1",):
        s.toggle_breakpoint(op)
    assert_matches(s, snaps[0], "fresh")
    done = []
    for m in seq:
        apply(s, m)
        done.append(m)
        k, i = s.position
        assert_matches(s, snaps[(k - 1) * s.M + i], f"after {done}")
        assert all(s.history.keep(c, k) for c in s.checkpoints), (k, s.checkpoints)     # pruned to the policy
        assert set(s.history.starts) <= {k - 1, k} and k in s.history.starts


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("name", SCENARIOS)
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_walk_matches_fresh_replay(name, policy, data):
    sc, snaps = setup(name)
    seq = data.draw(moves(len(snaps)))
    walk(name, POLICIES[policy], seq)


def test_every_position_backwards_from_the_end():
    """One op back at a time from the end to the start, under the tiny policy."""
    for name in SCENARIOS:
        sc, snaps = setup(name)
        s = nnstep.Session(sc, policy=TINY)
        s.goto(sc.train.steps + 1, 0)
        for p in range(len(snaps) - 1, -1, -1):
            assert_matches(s, snaps[p], f"{name} walking back")
            s.back()
        assert s.position == (1, 0) and s.back() is None


def test_history_stays_bounded_and_pruned():
    """Checkpoints follow the policy: dense behind the cursor, sparse far from it."""
    sc, _ = setup("sgd_momentum")
    s = nnstep.Session(sc, policy=TINY)
    s.run()
    far = TINY.far(sc.train.steps)
    k = s.position[0]
    for c in s.checkpoints:
        assert c == 1 or 0 <= k - c <= TINY.ring or (0 <= k - c <= TINY.near_span and (c - 1) % TINY.near_every == 0) \
            or (abs(k - c) <= TINY.mid_span and (c - 1) % TINY.mid_every == 0) or (c - 1) % far == 0, (c, s.checkpoints)
    assert len(s.checkpoints) < sc.train.steps
    assert s.history_bytes() > 0


def test_default_policy_keeps_a_bounded_number_of_checkpoints():
    """3,000 steps of a tiny net, then jumps: never more checkpoints than the cost model states
    (ring + near + both sides of mid + the far grid), however the cursor moved."""
    from nnstep.debugger.history import HistoryPolicy
    text = SCENARIOS["sgd_momentum"].replace("steps = 9", "steps = 3000")
    sc = load(text)
    s = nnstep.Session(sc)
    p, N = HistoryPolicy(), 3000
    bound = (p.ring + 1) + p.near_span // p.near_every + 2 * p.mid_span // p.mid_every + (-(-N // p.far(N))) + 1
    s.run()
    counts = [len(s.checkpoints)]
    for k in (2999, 1, 1500, 2900, 40, 3001, 777, 778, 700):
        s.goto(k, 0)
        counts.append(len(s.checkpoints))
        s.back()
        counts.append(len(s.checkpoints))
    assert max(counts) <= bound, (counts, bound)


def test_moves_within_a_step_put_back_the_very_arrays():
    """The trail: back within the step the cursor has walked, and forward again over it, run no
    op and give the very arrays (and record) the cursor had there, which is what lets the TUI's
    by-array caches hold on p; across a step boundary the step is re-run as before. Exactness
    against a fresh replay is what the walks above check, the trail included."""
    for name in SCENARIOS:
        sc, snaps = setup(name)
        s = nnstep.Session(sc)
        M = s.M
        seen = {}
        for i in range(1, M):                      # walk step 1 op by op
            s.step()
            seen[s.position] = (s.values(), s.last_record)
        s.goto(1, 3)
        ran = s.ops_executed
        for i in range(M - 1, 0, -1):              # and back, and forward again, over it
            s.goto(1, i)
            env, rec = seen[(1, i)]
            assert s.last_record is rec and all(s.values()[n] is v for n, v in env.items()), (name, i)
            assert_matches(s, snaps[i], f"{name} back to (1, {i})")
        for i in range(1, M - 1):
            s.step()
            assert s.last_record is seen[(1, i + 1)][1]
        assert s.ops_executed == ran, f"{name}: {s.ops_executed - ran} ops re-run within the step"
        s.step()                                   # the boundary: the next step's trail starts
        assert s.position == (2, 0) and s.ops_executed == ran + 1
        s.step()
        s.back()
        s.back()                                   # (1, M-1): not in step 2's trail, re-run
        assert s.ops_executed > ran + 2
        assert_matches(s, snaps[M - 1], f"{name} back over the boundary")


def test_peek_computes_the_next_op_ahead_without_moving():
    """Session.peek runs the next op into the trail: the cursor, what it shows and the loss log
    as of the cursor stay; the step after it runs nothing and is what stepping gives. At the end
    of a step (the boundary makes a checkpoint) and of training it does nothing."""
    for name in SCENARIOS:
        sc, snaps = setup(name)
        s = nnstep.Session(sc)
        M = s.M
        for i in range(M - 1):
            ran = s.ops_executed
            assert s.peek() and s.peek()           # (the second finds it there)
            assert s.ops_executed == ran + 1 and s.position == (1, i)
            assert_matches(s, snaps[i], f"{name}: peeked at (1, {i})")
            assert s.loss_history() == [] or i > s.log.loss_at
            s.step()
            assert s.ops_executed == ran + 1, f"{name}: the step after a peek re-ran its op"
            assert_matches(s, snaps[i + 1], f"{name}: stepped onto a peeked (1, {i + 1})")
        # the step's last op: its outputs ahead, the boundary (the next batch, a checkpoint) when
        # the cursor crosses it
        ran = s.ops_executed
        assert s.position == (1, M - 1) and s.peek() and s.peek() and not s.peek(2)
        assert s.ops_executed == ran + 1 and s.position == (1, M - 1)
        assert_matches(s, snaps[M - 1], f"{name}: peeked the step's last op")
        s.step()
        assert s.position == (2, 0) and s.ops_executed == ran + 1
        assert_matches(s, snaps[M], f"{name}: stepped over a peeked boundary")
        assert 2 in s.history.ckpt and 2 in s.history.starts
        s.goto(sc.train.steps + 1, 0)
        assert not s.peek()


def test_peek_n_computes_the_ops_ahead_one_after_another():
    """peek(n) puts the next n positions in the trail, each run once from the one before it: the
    cursor stays, and stepping or running over them runs nothing and gives what stepping gives."""
    for name in SCENARIOS:
        sc, snaps = setup(name)
        M = nnstep.Session(sc).M
        for start in (0, 1, M // 2):
            s = nnstep.Session(sc)
            s.goto(2, start)
            n = M - 1 - start
            ran = s.ops_executed
            assert not s.peek(n + 2) and s.ops_executed == ran    # (past the step's end: nothing)
            assert s.peek(1) and s.peek(n) and s.peek(n)          # (what it holds is not run again)
            assert s.ops_executed == ran + n and s.position == (2, start)
            assert_matches(s, snaps[M + start], f"{name}: peeked {n} at (2, {start})")
            assert set(range(start + 1, M)) <= set(s.trail.at)
            s.run(until=(2, M - 1))
            assert s.ops_executed == ran + n, f"{name}: a run over peeked ops re-ran some"
            assert_matches(s, snaps[2 * M - 1], f"{name}: ran onto a peeked (2, {M - 1})")
            s.goto(2, start)
            for i in range(start + 1, M):
                s.step()
                assert_matches(s, snaps[M + i], f"{name}: stepped onto a peeked (2, {i})")
            assert s.ops_executed == ran + n
            s.step()                                              # the boundary: runs its op
            assert s.ops_executed == ran + n + 1 and s.position == (3, 0)
            assert_matches(s, snaps[2 * M], f"{name}: over the boundary")
            # and with the last op peeked too: S from the start runs nothing, the boundary as ever
            s.goto(2, start)
            ran = s.ops_executed
            assert s.peek(n + 1)
            ran_ahead = s.ops_executed - ran
            assert s.ahead(1)[1].op.index == start and s.ahead(n + 1)[1].op.index == M - 1
            assert s.ahead(n + 2) is None and s.ahead(0) is None
            env, rec = s.ahead(n + 1)
            assert all(env[t] is v for t, v in rec.outputs.items())
            s.run(until=(3, 0))
            assert ran_ahead == n + 1 and s.position == (3, 0) and s.ops_executed == ran + ran_ahead
            assert_matches(s, snaps[2 * M], f"{name}: ran over a peeked boundary")
            # a run or a jump on over later steps computes their last ops (the peek was step 2's)
            for move in ("run", "goto"):
                s.goto(2, start)
                assert s.peek(n + 1)
                last = min(4, sc.train.steps)
                s.run(until=(last, M - 1)) if move == "run" else s.goto(last, M - 1)
                assert_matches(s, snaps[(last - 1) * M + M - 1], f"{name}: {move} from a peeked step 2 to ({last}, {M - 1})")


def test_a_replay_leaves_its_positions_in_the_trail():
    """A move back that re-runs the step from its start (nothing of it in the trail) leaves every
    position it passed in the trail: the moves back after it run nothing and share its arrays (one
    set of the step's tensors, not one per position: bench_history's history stays bounded)."""
    for name in SCENARIOS:
        sc, snaps = setup(name)
        s = nnstep.Session(sc)
        M = s.M
        s.goto(3, 1)
        s.goto(2, M - 1)                           # step 2 re-run from its start
        ran = s.ops_executed
        kept = {id(v) for v in s.values().values()}
        for i in range(M - 2, 0, -1):
            s.back()
            assert_matches(s, snaps[M + i], f"{name} back to (2, {i})")
        assert s.ops_executed == ran, f"{name}: {s.ops_executed - ran} ops re-run walking back"
        fresh = {id(v) for env, _ in s.trail.at.values() for v in env.values()}
        assert fresh <= kept | {id(v) for v in s.history.starts[2][0].values()}, "the trail holds arrays of another run"


def _stop(st):
    return (st.reason, st.step, st.index, st.op, st.tensor, st.after,
            None if st.breakpoint is None else st.breakpoint.where)


@pytest.mark.parametrize("conditions", [(), ("loss mean < 100",), ("nonfinite", "tanh1.out absmax > 0.5")])
def test_a_run_after_a_peek_stops_where_it_would_have(conditions):
    """run() (a short one: s, S) takes the ops peeked ahead from the trail and checks each as it
    checks an op it runs: from every position of the first two steps, after peeks of none, one,
    three and all of the step's ops left (its last one too), with op, condition and NaN/Inf breakpoints, it stops at
    the same place for the same reason, with the same values, as without a peek."""
    for name in SCENARIOS:
        sc, snaps = setup(name)
        names = {op.name for op in nnstep.Session(sc).ops}
        for p in range(2 * nnstep.Session(sc).M):
            got = []
            for peek in (0, 1, 3, "all", "end"):
                s = nnstep.Session(sc)
                s.toggle_breakpoint("backward linear1")
                for text in conditions:
                    if text.split()[0] in s.names or text == "nonfinite":
                        s.break_when(text)
                k, i = divmod(p, s.M)
                s.goto(k + 1, i)
                if peek == "end":                  # the step's last op too
                    assert s.peek(s.M - i)
                elif peek:
                    s.peek(min(s.M - 1 - i, s.M if peek == "all" else peek) or 1)
                # (a run of more than three steps goes the lean way, which a peek does not touch)
                got.append((_stop(s.run(until=(k + 3, 0))), s.position))
                assert_matches(s, snaps[(s.position[0] - 1) * s.M + s.position[1]], f"{name} from {p}")
            a, pa = got[0]
            for (b, pb), peek in zip(got[1:], (1, 3, "all", "end")):
                assert a == b and pa == pb, f"{name} from {p}, {conditions}: {a} at {pa} without a peek, {b} at {pb} after peek {peek}"
        assert "backward linear1" in names


def test_a_run_after_a_peek_finds_the_same_nan_origin():
    """The same with a NaN/Inf stop (tests/tui/scenarios/nan.toml: linear1.out overflows to Inf in
    the first op, then the loss is NaN): the origin found after a peek is the one found without."""
    import os
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tui", "scenarios", "nan.toml")
    sc = nnstep.load_scenario(path)
    M = nnstep.Session(sc).M
    reasons = set()
    for p in range(min(3, sc.train.steps) * M):
        got = []
        for peek in (False, True):
            s = nnstep.Session(sc)
            k, i = divmod(p, M)
            s.goto(k + 1, i)
            if peek:
                s.peek(M - i)
            st = s.run(until=(min(k + 3, sc.train.steps + 1), 0))
            got.append((_stop(st), repr(st.value), s.position))
            reasons.add(st.reason)
        assert got[0] == got[1], f"from {p}: {got}"
    assert "nonfinite" in reasons
