"""`nnstep compare` and `nnstep.compare` / `nnstep.assert_matches` (docs/commands.md).

The lesson scenarios/your-own-backprop/ is the main case: its step 1 is derived by hand in
net.toml's comments (x = I, weights 0 and ±ln 3, so every number is a sum of products of quarters),
and every value below that is not copied from there is derived in the test's comments."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import nnstep
from nnstep.cli import main
from nnstep.errors import ScenarioError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LESSON = os.path.join(ROOT, "scenarios", "your-own-backprop")
NET = os.path.join(LESSON, "net.toml")
MINE = os.path.join(LESSON, "mine.py")
CLASSIC = os.path.join(ROOT, "scenarios", "classic.toml")

BUG = "    gz1 = gh                            # sigmoid1.grad_in"
FIX = "    gz1 = gh * h * (1.0 - h)            # sigmoid1.grad_in"

# step 1 of the lesson, by hand (net.toml's comments)
H = np.array([[0.75, 0.5, 0.25], [0.5, 0.25, 0.75]])
LOCAL = H * (1 - H)
G2 = np.array([[0.25, -0.25], [0.75, -0.375]])                       # loss.grad
W2 = np.array([[1.0, 1.0, 1.0], [-1.0, 0.0, 1.0]])
GRAD_OUT = np.array([[0.5, 0.25, 0.0], [1.125, 0.75, 0.375]])        # sigmoid1.grad_out = G2 @ W2
GRAD_IN = np.array([[0.09375, 0.0625, 0.0], [0.28125, 0.140625, 0.0703125]])
W2_NEW = np.array([[0.71875, 0.84375, 0.6875], [-0.8125, 0.109375, 1.171875]])


def run_mine(tmp_path, fixed=False) -> str:
    src = open(MINE).read()
    assert BUG in src
    if fixed:
        src = src.replace(BUG, FIX)
    p = tmp_path / "mine.py"
    p.write_text(src)
    out = str(tmp_path / "mine.npz")
    r = subprocess.run([sys.executable, str(p), out], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return out


def save(tmp_path, **arrays) -> str:
    p = str(tmp_path / "mine.npz")
    np.savez(p, **arrays)
    return p


# --- the lesson ------------------------------------------------------------------------------------
def test_the_lessons_bug_is_the_first_difference(tmp_path, capsys):
    npz = run_mine(tmp_path)
    assert main(["compare", NET, npz]) == 1
    out = capsys.readouterr().out
    assert 'first difference: step 1, op 7/12 "backward sigmoid1"' in out
    # the worst element: grad_out[1, 0] = 9/8 where nnstep has 9/8 · local[1, 0] = 9/8 · 1/4 = 9/32
    assert "sigmoid1.grad_in[1, 0]: yours 1.125, nnstep 0.28125, error 0.844 (5 of 6 elements differ)" in out
    assert "hint: yours = sigmoid1.grad_out" in out and "grad_in = grad_out ⊙ local" in out
    assert "  agrees   linear2.weight.grad" in out and "  differs  linear1.weight.grad" in out
    assert out.rstrip().endswith("10 agree, 20 differ")


def test_the_lessons_fix_makes_every_tensor_agree(tmp_path, capsys):
    npz = run_mine(tmp_path, fixed=True)
    assert main(["compare", NET, npz]) == 0
    out = capsys.readouterr().out
    assert "every tensor agrees" in out and out.rstrip().endswith("30 agree, 0 differ")


def test_the_lesson_passes_check(capsys):
    assert main(["check", NET]) == 0
    assert "10 passed, 0 failed" in capsys.readouterr().out


def test_json(tmp_path, capsys):
    npz = run_mine(tmp_path)
    assert main(["compare", NET, npz, "--json"]) == 1
    d = json.loads(capsys.readouterr().out)
    assert d["ok"] is False and d["counts"] == {"agrees": 10, "differs": 20, "unknown": 0}
    f = d["first"]
    assert (f["step"], f["index"], f["op"], f["tensor"], f["element"]) == (1, 6, "backward sigmoid1", "sigmoid1.grad_in", [1, 0])
    assert (f["yours"], f["nnstep"], f["error"]) == (1.125, 0.28125, 1.125 - 0.28125)
    t = {e["key"]: e for e in d["tensors"]}
    assert t["2/loss"]["step"] == 2 and t["2/loss"]["status"] == "differs" and t["2/loss"]["op"] == "loss"
    assert t["sigmoid1.grad_out"]["op"] == "backward linear2"      # written by its reader's backward
    assert t["sigmoid1.grad_in"]["differing"] == 5 and t["sigmoid1.grad_in"]["size"] == 6


# --- the report object (for the TUI) -----------------------------------------------------------------
def test_report_answers_what_a_front_end_asks():
    mine = {"sigmoid1.grad_in": GRAD_OUT, "linear2.weight.grad": np.array([[0.5625, 0.3125, 0.625],
                                                                            [-0.375, -0.21875, -0.34375]])}
    rep = nnstep.compare(NET, mine)
    assert rep.exit_code == 1 and not rep.ok
    assert rep.first_position == (1, 6) and rep.first.tensor == "sigmoid1.grad_in"
    r = rep.get(1, "sigmoid1.grad_in")
    np.testing.assert_array_equal(r.yours, GRAD_OUT)
    np.testing.assert_array_equal(r.nnstep, GRAD_IN)
    # grad_out[0, 2] = 0, so 0 · local = 0 agrees there and nowhere else
    np.testing.assert_array_equal(r.mask, [[True, True, False], [True, True, True]])
    assert [x.tensor for x in rep.at_op(1, 6)] == ["sigmoid1.grad_in"]
    assert rep.differing_positions == [(1, 6)]
    assert rep.get(1, "linear2.weight.grad").ok and rep.get(2, "loss") is None


def test_first_difference_is_in_program_order_not_the_order_given():
    rep = nnstep.compare(NET, {"2/loss": np.array(0.0), "linear1.weight.grad": np.zeros((3, 2)),
                               "loss.grad": G2 + 1})
    assert rep.first.tensor == "loss.grad" and rep.first_position == (1, 4)


def test_assert_matches_message_is_the_report():
    with pytest.raises(AssertionError) as e:
        nnstep.assert_matches(NET, {"sigmoid1.grad_in": GRAD_OUT})
    assert str(e.value) == nnstep.compare(NET, {"sigmoid1.grad_in": GRAD_OUT}).text
    rep = nnstep.assert_matches(NET, {"sigmoid1.grad_in": GRAD_IN, "0/linear2.weight": W2,
                                      "linear2.weight": W2_NEW, "loss": np.array([0.828125])})
    assert rep.ok and rep.exit_code == 0
    assert rep.get(0, "linear2.weight").op == "initial"


def test_unknown_name_is_reported_and_is_bad_input(tmp_path, capsys):
    rep = nnstep.compare(NET, {"sigmoid1.grad_inn": GRAD_IN, "loss": np.array(0.828125)})
    u = rep.unknown[0]
    assert u.status == "unknown" and u.suggestion == "sigmoid1.grad_in" and rep.exit_code == 2
    with pytest.raises(AssertionError):
        nnstep.assert_matches(NET, {"sigmoid1.grad_inn": GRAD_IN})
    assert main(["compare", NET, save(tmp_path, **{"sigmoid1.grad_inn": GRAD_IN, "loss": np.array(0.828125)})]) == 2
    out, err = capsys.readouterr()
    assert 'unknown  sigmoid1.grad_inn  no tensor of this scenario is named "sigmoid1.grad_inn" (did you mean "sigmoid1.grad_in"?)' in out
    assert "agrees   loss" in out
    assert err.startswith('nnstep: error: ') and '"sigmoid1.grad_inn": no tensor' in err


def test_tolerances(tmp_path, capsys):
    p = save(tmp_path, loss=np.array(0.828125 + 1e-5))
    assert main(["compare", NET, p]) == 1                       # 1e-5 > 1e-9 + 1e-6 · 0.83
    assert main(["compare", NET, p, "--atol", "2e-5"]) == 0
    assert main(["compare", NET, p, "--rtol", "2e-5", "--atol", "0"]) == 0     # 1e-5 ≤ 2e-5 · 0.83
    assert main(["compare", NET, p, "--rtol", "1e-5", "--atol", "0"]) == 1     # 1e-5 > 1e-5 · 0.83
    capsys.readouterr()


def test_bad_input_raises_located_errors():
    with pytest.raises(ScenarioError, match=r'"3/loss": step 3 is beyond train.steps = 2'):
        nnstep.compare(NET, {"3/loss": np.array(1.0)})
    with pytest.raises(ScenarioError, match=r"shape \[3\] does not match sigmoid1.out, which has shape \[2, 3\]"):
        nnstep.compare(NET, {"sigmoid1.out": np.zeros(3)})
    with pytest.raises(ScenarioError, match=r'step 0 has only the initial parameters, not "loss"'):
        nnstep.compare(NET, {"0/loss": np.array(1.0)})
    with pytest.raises(ScenarioError, match="holds no arrays"):             # a check that cannot fail
        nnstep.assert_matches(NET, {})
    with pytest.raises(ScenarioError, match="rtol: expected a non-negative number"):
        nnstep.compare(NET, {"loss": 0.828125}, rtol=-1.0)
    with pytest.raises(ScenarioError, match="expected numbers"):
        nnstep.compare(NET, {"loss": np.array("0.8")})


# --- the computed hints -------------------------------------------------------------------------------
def test_hint_back_propagated_after_updating():
    """The user updated W2 first, then sent the gradient back through the NEW W2: their
    sigmoid1.grad_out = loss.grad @ W2_new (a hand product below), not loss.grad @ W2."""
    wrong = G2 @ W2_NEW
    rep = nnstep.compare(NET, {"loss.grad": G2, "sigmoid1.grad_out": wrong, "sigmoid1.grad_in": wrong * LOCAL})
    f = rep.first
    assert f.tensor == "sigmoid1.grad_out" and f.op == "backward linear2"
    assert f.hints and "AFTER step 1's update" in f.hints[0]
    assert "AFTER step 1's update" in rep.get(1, "sigmoid1.grad_in").hints[0]
    assert "hint: yours = nnstep's back-propagated with the weights AFTER step 1's update" in rep.text
    # the right values get no such hint
    assert nnstep.compare(NET, {"sigmoid1.grad_out": GRAD_OUT}).ok


def test_hint_batch_size_and_elements():
    """loss.grad = 2·d/4 (mean over N·2 = 4 elements). Dividing by the batch size N = 2 instead
    gives 2× it; not dividing at all (a sum) gives 4× it."""
    rep = nnstep.compare(NET, {"loss.grad": 2 * G2})
    assert any("2 is the batch size: a sum where the scenario takes the mean" in h for h in rep.first.hints)
    rep = nnstep.compare(NET, {"loss.grad": 4 * G2})
    assert any("4 is the number of elements of the prediction" in h for h in rep.first.hints)
    rep = nnstep.compare(NET, {"loss.grad": 3 * G2})
    assert rep.first.hints == []
    # the lesson's loss has no ½ (scale 1): a textbook ½·Σ(y − ŷ)² gives half of nnstep's gradient
    rep = nnstep.compare(NET, {"loss.grad": G2 / 2})
    assert any("the ½ of the textbook's E = ½·Σ(target − out)²?" in h for h in rep.first.hints)


def test_hint_the_half_and_the_sign():
    """Mazur's net (classic.toml): E = ½·Σ(target − out)², so dE/dout = out − target: a user
    without the ½ has 2·(out − target). out = 0.75136507, 0.77292847 (Mazur's figures)."""
    sc = nnstep.load_scenario(CLASSIC)
    s = nnstep.Session(sc)
    s.goto(1, 6)
    g = s.value("loss.grad")
    np.testing.assert_allclose(g, [[0.75136507 - 0.01, 0.77292847 - 0.99]], atol=1e-8)
    rep = nnstep.compare(sc, {"loss.grad": 2 * g})
    assert any("the ½ of E = ½·Σ(target − out)² forgotten? (this scenario's loss has scale = 0.5" in h
               for h in rep.first.hints)
    rep = nnstep.compare(sc, {"loss.grad": g / 2})
    assert any("a ½ too many?" in h for h in rep.first.hints)
    rep = nnstep.compare(sc, {"loss.grad": -g})
    assert any("a sign flipped" in h for h in rep.first.hints)


def test_hint_transposed_square_weight():
    sc = nnstep.load_scenario(CLASSIC)
    s = nnstep.Session(sc)
    s.goto(1, 8)
    gw = s.value("linear2.weight.grad")
    rep = nnstep.compare(sc, {"linear2.weight.grad": gw.T})
    assert rep.first.hints == ["yours is the transpose of nnstep's: torch's weight layout is (out, in), out = in @ W.T + b"]


def test_frozen_parameter_and_step_0():
    rep = nnstep.compare(CLASSIC, {"linear1.bias": np.array([0.35, 0.35]), "0/linear2.bias": np.array([0.6, 0.6]),
                                   "0/linear1.weight": np.array([[0.15, 0.2], [0.25, 0.3]])})
    assert rep.ok, rep.text


def test_a_pickle_npz_is_never_loaded(tmp_path):
    p = str(tmp_path / "mine.npz")
    np.savez(p, loss=np.array([{"code": "boom"}], dtype=object))
    with pytest.raises(ScenarioError, match="holds Python objects, which nnstep never loads"):
        nnstep.compare(NET, p)


def test_readme_compare_example(monkeypatch, capsys):
    """The README's compare example runs as written, its comments hold, and it ends in the
    AssertionError it promises."""
    import re
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "nnstep.compare(" in b)
    monkeypatch.chdir(ROOT)
    with pytest.raises(AssertionError) as e:
        exec(compile(block, "README.md#compare", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "(1, 6) sigmoid1.grad_in"
    assert "first difference: step 1, op 7/12" in str(e.value)


SHIPPED = sorted(__import__("glob").glob(os.path.join(ROOT, "scenarios", "*.toml")) +
                 __import__("glob").glob(os.path.join(ROOT, "scenarios", "*", "*.toml")))


@pytest.mark.parametrize("path", SHIPPED, ids=[os.path.relpath(p, os.path.join(ROOT, "scenarios")) for p in SHIPPED])
def test_every_tensor_trace_prints_agrees_exactly(path):
    """For every shipped scenario, every tensor of steps 1-2 as `trace --json` prints it (the last
    value each step writes) is given back to compare with zero tolerance: all agree, and the op
    compare names for it is the op trace shows writing it last."""
    import contextlib
    import io

    from nnstep.headless import cmd_trace

    sc = nnstep.load_scenario(path)
    n = min(2, sc.train.steps)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
        cmd_trace(path, n, True, honor_breakpoints=False)
    last: dict[str, tuple] = {}
    for op in json.loads(buf.getvalue())["ops"]:
        for t, v in op["outputs"].items():
            a = np.array(v, dtype=object)
            a = np.vectorize(float)(a) if a.size else a.astype(float)
            last[t if op["step"] == 1 else f"{op['step']}/{t}"] = (a, op["name"])
    rep = nnstep.compare(sc, {k: a for k, (a, _) in last.items()}, rtol=0.0, atol=0.0)
    assert rep.ok, rep.text
    for r in rep.results:
        assert r.op == last[r.key][1], (r.key, r.op, last[r.key][1])


def test_the_tutorial_shows_what_compare_prints(tmp_path, monkeypatch, capsys):
    """docs/tutorial.md section 7 walks through the lesson: every line it shows of `nnstep compare`
    and `nnstep explain` is a line they print (the "..." lines stand for lines left out)."""
    import re
    doc = open(os.path.join(ROOT, "docs", "tutorial.md"), encoding="utf-8").read()
    sec = doc[doc.index("## 7. Check your own backprop"):doc.index("## Where next")]
    blocks = re.findall(r"```console\n(.*?)```", sec, re.S)
    shown_compare = blocks[0].split("$ nnstep compare net.toml mine.npz\n", 1)[1].splitlines()
    shown_explain = blocks[1].split("\n", 1)[1].splitlines()
    assert "$ python mine.py" in blocks[0]
    npz = run_mine(tmp_path)
    monkeypatch.chdir(tmp_path)
    import shutil
    shutil.copy(NET, tmp_path / "net.toml")
    assert os.path.basename(npz) == "mine.npz"
    assert main(["compare", "net.toml", "mine.npz"]) == 1
    printed = capsys.readouterr().out.splitlines()
    assert [ln for ln in shown_compare if ln != "  ..."] == [ln for ln in printed if ln in shown_compare]
    assert main(["explain", "net.toml", "sigmoid1.grad_in[1, 0]"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert all(ln in printed for ln in shown_explain if ln != "..."), shown_explain
    assert FIX.strip() in sec
