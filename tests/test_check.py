"""`nnstep check FILE...` (docs/commands.md): each [[expect]] printed as pass/FAIL with expected, got and
the worst element's error; a summary per file and over all files; exit 0 all pass, 1 any fails,
2 any bad input.

The numbers are derived by hand for a one-weight linear net with no activation:
x = [[2], [4]], w = 0.5, b = 0: linear1.out = [[1], [2]]; y = [[3], [2]]: mse (mean) loss =
((1-3)² + (2-2)²)/2 = 2; dL/dout = 2·(out - y)/2 = [[-2], [0]]; dL/dw = Σ x·dL/dout = -4;
SGD with lr 0.1: w after step 1 = 0.5 + 0.4 = 0.9.
"""
import pytest

from nnstep.cli import main

NET = """
[scenario]
name = "one weight"
[data]
x = [[2.0], [4.0]]
y = [[3.0], [2.0]]
[[layers]]
type = "linear"
out = 1
weight = [[0.5]]
bias = [0.0]
[loss]
type = "mse"
[optimizer]
type = "sgd"
lr = 0.1
[train]
steps = 2
"""

PASSING = NET + """
[[expect]]
step = 0
tensor = "linear1.weight"
value = [[0.5]]
[[expect]]
step = 1
tensor = "linear1.out"
value = [[1.0], [2.0]]
[[expect]]
step = 1
tensor = "loss"
value = 2.0
[[expect]]
step = 1
tensor = "linear1.weight.grad"
value = -4.0
[[expect]]
step = 1
tensor = "linear1.weight"
value = 0.9
atol = 1e-12
"""

FAILING = NET + """
[[expect]]
step = 1
tensor = "loss"
value = 2.5
[[expect]]
step = 1
tensor = "linear1.out"
value = [[1.0], [2.25]]
[[expect]]
step = 1
tensor = "linear1.weight"
value = 0.9
"""


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def check(capsys, *paths):
    code = main(["check", *paths])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_all_pass_exits_0_and_prints_each_expectation(tmp_path, capsys):
    f = write(tmp_path, "ok.toml", PASSING)
    code, out, err = check(capsys, f)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == f"{f}: one weight"
    body = [ln for ln in lines if ln.strip().startswith(("pass", "FAIL"))]
    assert len(body) == 5 and all(ln.strip().startswith("pass") for ln in body)
    assert "step 1  loss: expected 2, got 2, error 0" in out
    assert "step 1  linear1.weight.grad: expected -4, got -4, error 0" in out
    assert "step 0  linear1.weight: expected 0.5, got 0.5" in out
    assert lines[-1] == "  5 passed, 0 failed"


def test_a_failure_exits_1_with_expected_got_and_worst_element(tmp_path, capsys):
    f = write(tmp_path, "bad.toml", FAILING)
    code, out, err = check(capsys, f)
    assert code == 1
    assert "FAIL  step 1  loss: expected 2.5, got 2, error 0.5 (atol 1e-08, rtol 1e-06)" in out
    assert "FAIL  step 1  linear1.out: expected [[1. ] [2.25]], got [[1.] [2.]], error 0.25 at [1, 0]" in out
    assert "pass  step 1  linear1.weight: expected 0.9, got 0.9" in out
    assert out.splitlines()[-1] == "  1 passed, 2 failed"


def test_tolerances_decide(tmp_path, capsys):
    # got 2, want 2.001: |d| = 1e-3 passes with atol 1e-3 + rtol 0 (inclusive), fails with atol 9e-4
    base = NET + '[[expect]]\nstep = 1\ntensor = "loss"\nvalue = 2.001\n'
    assert check(capsys, write(tmp_path, "a.toml", base + "atol = 1.0001e-3\nrtol = 0\n"))[0] == 0
    assert check(capsys, write(tmp_path, "b.toml", base + "atol = 9e-4\nrtol = 0\n"))[0] == 1
    assert check(capsys, write(tmp_path, "c.toml", base + "atol = 0\nrtol = 5e-4\n"))[0] == 0   # 5e-4·2.001 > 1e-3


def test_a_nan_explains_where_it_came_from(tmp_path, capsys):
    text = NET.replace("lr = 0.1", "lr = 1e308") + '[[expect]]\nstep = 2\ntensor = "loss"\nvalue = 1.0\n' \
        '[[expect]]\nstep = 1\ntensor = "loss"\nvalue = 2.0\n'
    code, out, _ = check(capsys, write(tmp_path, "nan.toml", text))
    assert code == 1
    fail = next(ln for ln in out.splitlines() if "FAIL" in ln)
    assert "step 2  loss" in fail and "the run first produced a NaN/Inf at step 1" in fail
    assert "pass  step 1  loss: expected 2, got 2" in out       # computed before the overflow: still judged


@pytest.mark.parametrize("extra, where", [
    ('[[expect]]\nstep = 3\ntensor = "loss"\nvalue = 1.0\n', "expect[0].step"),
    ('[[expect]]\nstep = 1\ntensor = "los"\nvalue = 1.0\n', "expect[0].tensor"),
    ('[[expect]]\nstep = 1\ntensor = "linear1.out"\nvalue = [1.0, 2.0, 3.0]\n', "expect[0].value"),
    ('[[expect]]\nstep = 0\ntensor = "loss"\nvalue = 1.0\n', "expect[0].step"),
])
def test_bad_input_exits_2_naming_the_key(tmp_path, capsys, extra, where):
    f = write(tmp_path, "bad.toml", NET + extra)
    code, out, err = check(capsys, f)
    assert code == 2
    assert err.startswith(f"nnstep: error: {f}: {where}: ") and "Traceback" not in err
    assert out.strip() == f"{f}: bad input (see the error above)"


def test_many_files_summarize_and_take_the_worst_exit(tmp_path, capsys):
    ok = write(tmp_path, "ok.toml", PASSING)
    bad = write(tmp_path, "fail.toml", FAILING)
    broken = write(tmp_path, "broken.toml", NET + "[[expect]]\nstep = 1\n")
    missing = str(tmp_path / "missing.toml")
    code, out, _ = check(capsys, ok, ok)
    assert code == 0 and out.splitlines()[-1] == "2 files: 10 passed, 0 failed"
    code, out, _ = check(capsys, ok, bad)
    assert code == 1 and out.splitlines()[-1] == "2 files: 6 passed, 2 failed"
    assert f"{ok}: one weight" in out and f"{bad}: one weight" in out
    code, out, err = check(capsys, ok, bad, broken)
    assert code == 2 and out.splitlines()[-1] == "3 files: 6 passed, 2 failed, 1 bad input"
    assert "expect[0]: missing key tensor" in err
    code, out, err = check(capsys, missing, ok)
    assert code == 2 and "no such file" in err and out.splitlines()[-1] == "2 files: 5 passed, 0 failed, 1 bad input"


def test_check_says_where_run_would_stop_and_still_judges_past_it(tmp_path, capsys):
    """The same detector as run: a condition that holds at step 1 is reported, and the
    expectations of step 2 are still judged on the run continued past it."""
    p = tmp_path / "bp.toml"
    p.write_text(PASSING + '\n[[breakpoints]]\nwhen = "loss mean > 1"\n')
    assert main(["check", str(p)]) == 0
    out = capsys.readouterr().out
    assert "note: `nnstep run` would stop here: stopped at step 1 after loss" in out
    assert "5 passed, 0 failed" in out
