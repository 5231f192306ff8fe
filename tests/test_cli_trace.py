"""`nnstep trace --json` (docs/commands.md): every op with the tensors it reads and writes, as they were
then; update P reads P (old) and P.grad and writes P and P.delta; a forward op reads the weight from
before this step's update; layer is null for the loss ops; a NaN/Inf stops with a `stopped` object."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from nnstep.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSIC = os.path.join(ROOT, "scenarios", "classic.toml")


def trace(capsys, *args):
    code = main(["trace", *args, "--json"])
    out = capsys.readouterr()
    return code, json.loads(out.out), out.err


@pytest.fixture
def classic2(capsys):
    code, d, _ = trace(capsys, CLASSIC, "--steps", "2")
    assert code == 0
    return d


def test_document_shape(classic2):
    d = classic2
    assert set(d) == {"scenario", "ops"}
    assert d["scenario"] == "Mazur's 2-2-2 sigmoid network"
    assert len(d["ops"]) == 2 * 12              # 4 forward, loss, backward loss, 4 backward, 2 updates (biases frozen)
    for op in d["ops"]:
        assert set(op) == {"step", "index", "stage", "name", "layer", "formula", "constants", "inputs", "outputs"}
        assert isinstance(op["formula"], str) and op["formula"]
    assert [(o["step"], o["index"]) for o in d["ops"]] == [(k, i) for k in (1, 2) for i in range(12)]
    assert [o["name"] for o in d["ops"][:12]] == [
        "forward linear1", "forward sigmoid1", "forward linear2", "forward sigmoid2", "loss", "backward loss",
        "backward sigmoid2", "backward linear2", "backward sigmoid1", "backward linear1",
        "update linear1.weight", "update linear2.weight"]
    assert [o["stage"] for o in d["ops"][:12]] == ["forward"] * 4 + ["loss"] + ["backward"] * 5 + ["update"] * 2


def test_layer_is_null_for_the_loss_ops(classic2):
    by = {o["name"]: o for o in classic2["ops"][:12]}
    assert by["loss"]["layer"] is None and by["backward loss"]["layer"] is None
    assert by["forward linear2"]["layer"] == "linear2"
    assert by["update linear1.weight"]["layer"] == "linear1"


def test_update_reads_old_value_and_grad_writes_new_value_and_delta(classic2):
    for op in classic2["ops"]:
        if op["stage"] != "update":
            continue
        P = op["name"].split(" ", 1)[1]
        assert list(op["inputs"]) == [P, f"{P}.grad"]
        assert list(op["outputs"]) == [P, f"{P}.delta"]
        old, g = np.array(op["inputs"][P]), np.array(op["inputs"][f"{P}.grad"])
        new, delta = np.array(op["outputs"][P]), np.array(op["outputs"][f"{P}.delta"])
        np.testing.assert_array_equal(new, old - 0.5 * g)           # plain SGD, lr 0.5
        np.testing.assert_array_equal(delta, new - old)
        assert not np.array_equal(new, old)


def test_forward_reads_the_weight_from_before_this_steps_update(classic2):
    ops = classic2["ops"]
    f1 = ops[0]
    u1 = ops[10]
    f2 = ops[12]
    assert f1["name"] == f2["name"] == "forward linear1" and u1["name"] == "update linear1.weight"
    assert f1["inputs"]["linear1.weight"] == [[0.15, 0.20], [0.25, 0.30]]       # the initial value
    assert f2["inputs"]["linear1.weight"] == u1["outputs"]["linear1.weight"]     # step 1's result
    assert ops[22]["name"] == "update linear1.weight"
    assert ops[22]["inputs"]["linear1.weight"] == f2["inputs"]["linear1.weight"]
    assert ops[22]["outputs"]["linear1.weight"] != f2["inputs"]["linear1.weight"]
    # the hidden layer's backward uses the OLD w5..w8 (Mazur's "original weights"): step 1's
    # backward linear2 reads linear2.weight before update linear2.weight writes the new one
    b2 = ops[7]
    assert b2["name"] == "backward linear2"
    assert b2["inputs"]["linear2.weight"] == [[0.40, 0.45], [0.50, 0.55]]
    # Mazur: ∂E/∂out_h1 = 0.036350306 is linear2.grad_in[0][0]
    assert abs(b2["outputs"]["linear2.grad_in"][0][0] - 0.036350306) < 5e-9


def test_values_chain_from_op_to_op(classic2):
    """Each op's inputs are the values its predecessors wrote (as they were then)."""
    ops = classic2["ops"][:12]
    assert ops[1]["inputs"]["linear1.out"] == ops[0]["outputs"]["linear1.out"]
    assert ops[4]["inputs"]["sigmoid2.out"] == ops[3]["outputs"]["sigmoid2.out"]
    assert ops[6]["inputs"]["sigmoid2.grad_out"] == ops[5]["outputs"]["loss.grad"]
    assert ops[7]["inputs"]["linear2.grad_out"] == ops[6]["outputs"]["sigmoid2.grad_in"]
    assert ops[10]["inputs"]["linear1.weight.grad"] == ops[9]["outputs"]["linear1.weight.grad"]
    # backward of the first layer still computes grad_in, dLoss/d(input)
    assert np.array(ops[9]["outputs"]["linear1.grad_in"]).shape == (1, 2)
    # trace and run agree on the loss
    assert abs(ops[4]["outputs"]["loss"] - 0.298371109) < 5e-9


def test_momentum_state_in_trace(tmp_path, capsys):
    """With momentum the update also reads and writes the buffer; at step 1 it does not exist yet
    (null), at step 2 it is step 1's buffer."""
    p = tmp_path / "m.toml"
    p.write_text(open(CLASSIC).read().replace('type = "sgd"', 'type = "sgd"\nmomentum = 0.9'))
    code, d, _ = trace(capsys, str(p), "--steps", "2")
    assert code == 0
    u1, u2 = d["ops"][10], d["ops"][22]
    assert list(u1["inputs"]) == ["linear1.weight", "linear1.weight.grad", "linear1.weight.buf"]
    assert u1["inputs"]["linear1.weight.buf"] is None
    assert u1["outputs"]["linear1.weight.buf"] == u1["inputs"]["linear1.weight.grad"]
    assert u2["inputs"]["linear1.weight.buf"] == u1["outputs"]["linear1.weight.buf"]


NONFINITE = """
[data]
x = [[1e200]]
y = [[0.0]]
[[layers]]
type = "linear"
out = 1
weight = [[1.0]]
bias = [0.0]
[[layers]]
type = "identity"
[loss]
type = "mse"
[train]
steps = 3
"""


def test_nonfinite_stops_with_stopped_object(tmp_path, capsys):
    """1e200² overflows in the loss op of step 1: the trace holds ops 0..2 (the last one the op that
    produced the inf), then `stopped`, and exits 1."""
    p = tmp_path / "nf.toml"
    p.write_text(NONFINITE)
    code, d, err = trace(capsys, str(p))
    assert code == 1
    assert [o["name"] for o in d["ops"]] == ["forward linear1", "forward identity1", "loss"]
    assert d["ops"][-1]["outputs"]["loss"] == "inf"             # non-finite numbers as strings
    assert d["stopped"] == {"step": 1, "op": "loss", "tensor": "loss", "reason": "nonfinite"}
    assert "nnstep: stopped at step 1: loss" in err


def test_text_trace_and_subprocess():
    r = subprocess.run([sys.executable, "-m", "nnstep", "trace", CLASSIC], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "[forward]  forward linear1" in r.stdout
    assert "update linear2.weight" in r.stdout
    assert "linear1.out = input @ linear1.weightᵀ + linear1.bias" in r.stdout


def test_trace_stops_where_run_stops_at_a_condition(tmp_path, capsys):
    """trace shares run's stop detector: it lists the ops up to and including the one after which
    the condition holds, and says so, exit 1; --ignore-breakpoints runs on."""
    import json as _json
    p = tmp_path / "c.toml"
    p.write_text(open(CLASSIC).read().replace("steps = 1", "steps = 3") +
                 '\n[[breakpoints]]\nwhen = "loss mean < 0.29"\n')
    assert main(["run", str(p), "--json"]) == 1
    run = _json.loads(capsys.readouterr().out)["stopped"]
    assert main(["trace", str(p), "--json"]) == 1
    out = capsys.readouterr()
    d = _json.loads(out.out)
    assert d["stopped"] == run and run["op"] == "loss" and run["reason"] == "breakpoint"
    last = d["ops"][-1]
    assert (last["step"], last["name"]) == (run["step"], "loss")
    assert "breakpoints[" in out.err and "loss mean" in out.err
    assert main(["trace", str(p), "--json", "--ignore-breakpoints"]) == 0
    assert "stopped" not in _json.loads(capsys.readouterr().out)
