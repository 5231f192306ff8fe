"""The scripting API and its value() rule (docs/commands.md), on the scenarios of scen.py."""
import numpy as np
import pytest

import nnstep

from scen import ADAM_BATCHNORM, SGD_MOMENTUM, load


def test_positions_follow_spec_4c():
    s = nnstep.Session(load(SGD_MOMENTUM))
    M, N = s.M, s.N
    assert s.position == (1, 0) and s.at_start and s.stage == "forward" and s.current_op.index == 0
    assert s.back() is None and s.position == (1, 0)
    s.goto(2, M)                                           # (k, M) is (k+1, 0)
    assert s.position == (3, 0)
    s.goto(N + 1, 0)
    assert s.at_end and s.current_op is None and s.stage == "done" and s.step() is None
    for bad in [(0, 0), (1, M + 1), (N + 1, 1), (N + 2, 0), (1, -1), (1.0, 0), (True, 0)]:
        with pytest.raises(ValueError):
            s.goto(*bad)
    assert s.position == (N + 1, 0)
    assert s.back().name == s.ops[-1].name and s.position == (N, M - 1)


def test_value_is_the_latest_at_or_before_the_cursor():
    sc = load(SGD_MOMENTUM)
    s = nnstep.Session(sc)
    assert s.value("linear1.out") is None                  # step 1 has not computed it yet
    assert np.array_equal(s.value("linear1.weight"), sc.initial["linear1.weight"])
    with pytest.raises(KeyError, match='did you mean "linear1.out"'):
        s.value("linear1.outt")
    s.finish_step()
    out1 = s.value("linear1.out")
    w1 = s.value("linear1.weight")
    s.step()                                               # forward linear1 of step 2
    out2 = s.value("linear1.out")
    assert not np.array_equal(out1, out2)
    assert s.value("loss") == s.loss_history()[0][1]       # loss not computed in step 2 yet: step 1's
    assert s.value("linear1.weight") is w1                 # a parameter is its current value
    # at (k, 0), input and target are already step k's batch (fed at the boundary)
    prog = nnstep.Session(sc).program
    for k in (1, 2, 3, 4):
        s.goto(k, 0)
        idx = prog.batch_indices(k)
        assert np.array_equal(s.value("input"), sc.x[idx]) and np.array_equal(s.value("target"), sc.y[idx])
    # the update of step 1 is visible once it has run, and equals old - new
    s.goto(1, s.M - 1)
    last = s.ops[-1]
    old = s.value(last.param)
    s.step()
    assert np.array_equal(s.value(f"{last.param}.delta"), s.value(last.param) - old)
    assert s.step_start_value(last.param) is not None


def test_shuffle_redraws_the_order_each_pass_and_is_the_same_on_replay():
    sc = load(SGD_MOMENTUM)                                # 5 samples, batch 2: 3 batches per pass
    s = nnstep.Session(sc)
    order = []
    for k in range(1, 7):
        s.goto(k, 0)
        order.append(s.value("input"))
    first, second = np.concatenate(order[:3]), np.concatenate(order[3:])
    assert sorted(map(tuple, first)) == sorted(map(tuple, sc.x)) == sorted(map(tuple, second))
    assert not np.array_equal(first, second)
    t = nnstep.Session(sc)
    t.goto(5, 0)
    t.goto(2, 0)
    assert np.array_equal(t.value("input"), order[1])


def test_last_record_holds_what_the_op_read_and_wrote():
    s = nnstep.Session(load(ADAM_BATCHNORM))
    s.goto(2, 0)
    s.goto(1, 1)
    rec = s.last_record
    assert (rec.step, rec.index, rec.name, rec.stage) == (1, 0, "forward linear1", "forward")
    x, W, b = rec.inputs["input"], rec.inputs["linear1.weight"], rec.inputs["linear1.bias"]
    assert np.array_equal(rec.outputs["linear1.out"], x @ W.T + b)
    upd = next(op for op in s.ops if op.stage == "update")
    s.goto(3, upd.index + 1)
    rec = s.last_record
    assert rec.name == upd.name and rec.inputs[upd.param] is s.step_start_value(upd.param)
    assert np.array_equal(rec.outputs[f"{upd.param}.delta"], rec.outputs[upd.param] - rec.inputs[upd.param])


def test_session_takes_a_path_and_bad_input_raises_scenario_error(tmp_path):
    p = tmp_path / "net.toml"
    p.write_text(SGD_MOMENTUM)
    s = nnstep.Session(str(p))
    assert s.N == 9
    p.write_text(SGD_MOMENTUM.replace("out = 4", "out = -4"))
    with pytest.raises(nnstep.ScenarioError, match=r"layers\[0\]\.out"):
        nnstep.Session(str(p))


def test_loss_history_and_losses():
    s = nnstep.Session(load(SGD_MOMENTUM))
    assert s.loss_history() == []
    loss_at = next(op.index for op in s.ops if op.name == "loss")
    s.goto(3, loss_at)
    assert [k for k, _ in s.loss_history()] == [1, 2]
    s.step()
    assert [k for k, _ in s.loss_history()] == [1, 2, 3] and s.loss_history()[-1][1] == float(s.value("loss"))
    s.goto(1, 0)
    assert s.loss_history() == [] and sorted(s.losses) == [1, 2, 3]


def test_breakpoints_can_be_added_and_removed():
    s = nnstep.Session(load(SGD_MOMENTUM))
    bp = s.break_when("loss mean > 0")
    r = s.run()
    assert r.breakpoint is bp and r.op == "loss"
    assert s.remove_breakpoint(bp) is True and s.remove_breakpoint(bp) is False
    assert s.run().reason == "end"
