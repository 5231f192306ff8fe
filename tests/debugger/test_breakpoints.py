"""Breakpoints, stop reasons and reverse-continue (issue 3, item 3).

The oracle for where run() stops is brute force: step a fresh session op by op and list every
position where a breakpoint applies, straight from the definitions in docs/scenario-format.md:
  * op / stage breakpoints: before the op, i.e. at (k, index of the op), in every step;
  * a condition: after each op that writes its tensor, where <stat>(tensor) <op> <number> holds;
    on input/target (the batch, fed with each step's first op), after op 1 of every step, step 1
    included, at (k, 1);
  * NaN/Inf: after an op that writes a non-finite value while every input it read was finite.
run() from p stops at the first such position after p (it always runs at least one op first);
reverse_run() from p goes to the last one before p.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nnstep
from nnstep.debugger.history import HistoryPolicy
from nnstep.model.stats import stat

from scen import SGD_MOMENTUM, load

TINY = HistoryPolicy(ring=1, near_span=2, near_every=2, mid_span=4, mid_every=4, far_count=2)
OPS = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}


def brute_stops(sc, ops_bp=(), stages=(), conds=()):
    """Sorted linear positions where run() must stop, by the definitions above."""
    s = nnstep.Session(sc)
    M = s.M
    first_of = {}
    for op in s.ops:
        first_of.setdefault(op.stage, op.index)
    idx = {op.index for op in s.ops if op.name in ops_bp} | {first_of[g] for g in stages}
    stops = set()
    while not s.at_end:
        k, i = s.position
        p = (k - 1) * M + i
        if i in idx:
            stops.add(p)
        op = s.ops[i]
        ins = [s.value(n) for n in op.inputs]
        s.step()
        for t in op.outputs:
            v = s.value(t)
            if not np.isfinite(v).all():
                if all(x is None or np.isfinite(x).all() for x in ins):
                    stops.add(p + 1)
                break
        for tensor, st_, o, num in conds:
            if tensor in op.outputs + op.also_writes and OPS[o](stat(s.value(tensor), st_), num):
                stops.add(p + 1)
            # the batch this step's first op read (at (k, 1) the cursor's value of it is that batch)
            if tensor in ("input", "target") and i == 0 and OPS[o](stat(s.value(tensor), st_), num):
                stops.add(p + 1)
    return sorted(stops), M


def lin(s):
    k, i = s.position
    return (k - 1) * s.M + i


COND_TENSORS = ["loss", "linear1.weight.grad", "tanh1.out", "linear2.bias", "linear1.grad_in", "input", "target"]


@settings(max_examples=50, deadline=None)
@given(ops=st.lists(st.sampled_from(["forward tanh1", "loss", "backward linear2", "update linear2.bias",
                                     "forward linear1"]), max_size=2, unique=True),
       stages=st.lists(st.sampled_from(["forward", "loss", "backward", "update"]), max_size=1),
       conds=st.lists(st.tuples(st.sampled_from(COND_TENSORS), st.sampled_from(["min", "max", "mean", "absmax", "norm"]),
                                st.sampled_from(["<", ">"]), st.sampled_from([-0.5, 0.0, 0.3, 1.0])), max_size=2),
       start=st.integers(0, 40))
def test_run_and_reverse_run_stop_exactly_where_breakpoints_apply(ops, stages, conds, start):
    sc = load(SGD_MOMENTUM)
    want, M = brute_stops(sc, ops, stages, conds)
    s = nnstep.Session(sc, policy=TINY)
    for o in ops:
        s.toggle_breakpoint(o)
    for g in stages:
        s.add_breakpoint(nnstep.debugger.session.Breakpoint(where="test", stage=g))
    for c in conds:
        s.break_when(f"{c[0]} {c[1]} {c[2]} {c[3]}")
    end = sc.train.steps * M
    start = min(start, end)
    s.goto(start // M + 1, start % M)
    # forward: every stop after `start`, in order, then the end
    got = []
    while len(got) <= len(want):                           # bounded: a stuck run() fails, not hangs
        r = s.run()
        if r.reason == "end":
            assert lin(s) == end
            break
        assert r.reason == "breakpoint" and lin(s) == (r.step - 1) * M + r.index
        got.append(lin(s))
    assert got == [p for p in want if p > start]
    # backward: every stop before the end, in reverse order, then the start
    back = []
    while len(back) <= len(want):
        r = s.reverse_run()
        if r.reason == "start":
            assert s.position == (1, 0)
            break
        back.append(lin(s))
    assert back == [p for p in reversed(want) if p < end]


def test_op_breakpoint_stops_before_the_op_in_every_step():
    sc = load(SGD_MOMENTUM)
    s = nnstep.Session(sc)
    assert s.toggle_breakpoint("backward linear2") is True and s.has_op_breakpoint("backward linear2")
    j = next(op.index for op in s.ops if op.name == "backward linear2")
    for k in (1, 2, 3):
        r = s.run()
        assert (r.reason, r.kind, r.position, r.op) == ("breakpoint", "op", (k, j), "backward linear2")
        assert s.position == (k, j) and s.current_op.name == "backward linear2"
        assert s.last_record.index == j - 1                   # the op before it has run, not it
        assert "before backward linear2" in r.message
    assert s.toggle_breakpoint("backward linear2") is False
    assert s.run().reason == "end"
    with pytest.raises(KeyError):
        s.toggle_breakpoint("backward nothing")


def test_stage_breakpoint_stops_on_entering_the_stage():
    text = SGD_MOMENTUM + '\n[[breakpoints]]\nstage = "update"\n'
    sc = load(text)
    s = nnstep.Session(sc)
    u = next(op.index for op in s.ops if op.stage == "update")
    r = s.run()
    assert (r.kind, r.position, s.stage) == ("stage", (1, u), "update")
    assert "breakpoints[0]" in r.message and "entering stage update" in r.message
    assert s.run().position == (2, u)


def test_condition_stop_says_which_breakpoint_tensor_and_value():
    text = SGD_MOMENTUM + '\n[[breakpoints]]\nwhen = "linear1.weight.grad norm > 0.05"\n'
    sc = load(text)
    s = nnstep.Session(sc)
    r = s.run()
    assert r.reason == "breakpoint" and r.kind == "when" and r.tensor == "linear1.weight.grad"
    assert r.op == "backward linear1" and s.last_record.name == "backward linear1"   # stopped after it
    g = s.value("linear1.weight.grad")
    # the statistic the stop reports is the one the screen and the JSON show (nnstep.model.stats),
    # and it is the norm: equal to sqrt(Σ g²) up to the rounding of the scaled sum
    assert r.value == stat(g, "norm") and r.value == pytest.approx(float(np.sqrt(np.sum(g * g))), rel=1e-14)
    assert r.value > 0.05
    assert "breakpoints[0]" in r.message and "linear1.weight.grad norm =" in r.message
    # the stop is the first one: no earlier step had a gradient that large
    for k, _ in s.loss_history()[:-1]:
        t = nnstep.Session(sc)
        t.goto(k + 1, 0)
        assert stat(t.value("linear1.weight.grad"), "norm") <= 0.05


OVERFLOW = """
[scenario]
name = "overflow in the forward pass"
[data]
x = [[1e200, 2e200], [3.0, -1.0]]
y = [[1.0], [0.0]]
[[layers]]
type = "linear"
out = 1
weight = [[1e200, 1e200]]
bias = [0.0]
[loss]
type = "mse"
[optimizer]
type = "sgd"
lr = 0.1
[train]
steps = 4
"""


def test_nonfinite_stops_at_the_origin_not_where_it_spreads():
    """x @ W.T overflows to inf in forward linear1; every later NaN/Inf is read from it."""
    sc = load(OVERFLOW)
    want, M = brute_stops(sc)
    assert want == [1]                                     # after forward linear1, in step 1
    s = nnstep.Session(sc)
    r = s.run()
    assert (r.reason, r.kind, r.position, r.op, r.tensor) == ("nonfinite", "nonfinite", (1, 1), "forward linear1",
                                                              "linear1.out")
    assert r.value == math.inf and r.element == (0, 0) and s.value("linear1.out")[0, 0] == math.inf
    assert "forward linear1" in r.message and "linear1.out[0, 0] = inf" in r.message
    assert all(np.isfinite(x).all() for x in s.last_record.inputs.values())
    assert s.run().reason == "end"                         # continuing: propagation does not stop
    assert s.reverse_run().position == (1, 1)              # reverse-continue finds the origin again
    s.stop_on_nonfinite = False
    s.restart()
    assert s.run().reason == "end"


BLOWUP = """
[scenario]
name = "blow-up"
[data]
x = [[1.0, 2.0], [3.0, -1.0]]
y = [[1.0], [0.0]]
[[layers]]
type = "linear"
out = 1
weight = [[1.0, 1.0]]
bias = [0.0]
[loss]
type = "mse"
[optimizer]
type = "sgd"
lr = 1e150
[train]
steps = 6
"""


def test_every_overflow_from_finite_inputs_is_an_origin():
    """With a huge learning rate, the loss, a gradient and both updates each overflow from finite
    inputs in step 3: four origins, each a stop, forwards and backwards."""
    sc = load(BLOWUP)
    want, M = brute_stops(sc)
    s = nnstep.Session(sc)
    got = []
    while s.run().reason != "end" and len(got) <= len(want):
        got.append(lin(s))
    assert got == want and len(want) >= 2
    back = []
    while s.reverse_run().reason != "start" and len(back) <= len(want):
        back.append(lin(s))
    assert back == want[::-1]


def test_stop_reasons_end_until_start_interrupted():
    sc = load(SGD_MOMENTUM)
    s = nnstep.Session(sc)
    r = s.run(until=(2, 3))
    assert (r.reason, s.position) == ("until", (2, 3))
    r = s.run(should_stop=lambda: True, check_every=5)
    assert r.reason == "interrupted" and s.position == (2, 8)
    assert s.reverse_run().reason == "start" and s.at_start
    assert s.reverse_run().reason == "start"
    assert s.run().reason == "end" and s.at_end
    assert s.run().reason == "end" and s.last_stop.message == "reached the end of training"
    assert s.step() is None


def test_next_stage_and_finish_step():
    sc = load(SGD_MOMENTUM)
    s = nnstep.Session(sc)
    seen = []
    while s.position[0] == 1:
        seen.append(s.stage)
        s.next_stage()
    assert seen == ["forward", "loss", "backward", "update"] and s.position == (2, 0)
    s.step()
    s.finish_step()
    assert s.position == (3, 0)


def test_malformed_condition_is_a_scenario_error_with_its_key_path():
    for when, what in [("linear1.weight.grad norm >", "malformed condition"),
                       ("linear1.wieght.grad norm > 1", 'did you mean "linear1.weight.grad"'),
                       ("loss median > 1", "unknown statistic"),
                       ("loss mean > nan", "cannot be nan"),
                       ("__import__('os').system('true') > 1", "malformed condition")]:
        text = SGD_MOMENTUM + f'\n[[breakpoints]]\nop = "loss"\n[[breakpoints]]\nwhen = "{when}"\n'
        with pytest.raises(nnstep.ScenarioError) as e:
            load(text)
        assert "breakpoints[1].when" in str(e.value) and what in str(e.value), str(e.value)
    s = nnstep.Session(load(SGD_MOMENTUM))
    with pytest.raises(nnstep.ScenarioError, match="malformed"):
        s.break_when("loss > 3")


def test_condition_on_the_batch_stops_after_the_op_it_is_fed_with():
    """The batch is fed with each step's first op: a condition on input/target is checked after it,
    in step 1 too, and the stop is at (k, 1), after the op that read the batch."""
    sc = load(SGD_MOMENTUM)
    s = nnstep.Session(sc)
    s.break_when("input absmax > 1.5")
    r = s.run()
    k = r.step
    assert r.index == 1 and r.op == s.ops[0].name and r.tensor == "input"
    assert r.value == float(np.abs(s.value("input")).max()) > 1.5
    assert f"in step {k}'s batch" in r.message and r.as_json()["step"] == k
    # a batch that holds it in step 1 stops in step 1: a fresh session has run nothing yet
    assert s.last_record.step == k and s.last_record.index == 0
    s2 = nnstep.Session(sc)
    s2.break_when("input absmax > 0")
    assert s2.run().position == (1, 1)
