"""`nnstep FILE --compare MINE.npz`: the TUI over a comparison with the user's own values (the
your-own-backprop lesson's mine.py, bug included): the differing ops marked in the program, f to the
next one, each differing cell showing nnstep≠yours."""
import os
import subprocess
import sys

import numpy as np
import pytest

from nnstep.debugger.compare import compare, load_tensors
from nnstep.scenario import load_scenario
from nnstep.tui import make_app
from nnstep.tui.widgets.program import ProgramView
from nnstep.tui.widgets.status import StatusBar
from nnstep.tui.widgets.tensor import TensorCanvas

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LESSON = os.path.join(ROOT, "scenarios", "your-own-backprop")
NET = os.path.join(LESSON, "net.toml")


def mine(tmp_path) -> str:
    out = str(tmp_path / "mine.npz")
    r = subprocess.run([sys.executable, os.path.join(LESSON, "mine.py"), out], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return out


@pytest.mark.slow
async def test_the_differing_ops_are_marked_and_f_goes_to_each_with_both_values(tmp_path):
    sc = load_scenario(NET)
    report = compare(sc, load_tensors(mine(tmp_path)))
    first = report.first
    assert (first.step, first.op, first.tensor) == (1, "backward sigmoid1", "sigmoid1.grad_in")
    app = make_app(sc, compare=report)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert "first difference: sigmoid1.grad_in" in str(app.query_one(StatusBar).render())
        program = app.query_one(ProgramView).text().splitlines()
        marked = [ln for ln in program if "≠ yours" in ln]
        assert any("backward sigmoid1" in ln for ln in marked)
        assert not any("forward" in ln for ln in marked)            # the forward pass agrees
        await pilot.press("f")
        await pilot.pause()
        k, i = app.session.position
        assert (k, i - 1) == first.position                        # the op just ran is the first difference
        box = next(v for v in app.query_one(TensorCanvas).visible() if v.display and v.tensor_name == "sigmoid1.grad_in")
        lines = [s.text for s in box._strips] if box._strips else []
        text = "\n".join(lines)
        # nnstep's 0.28125 beside the user's 1.125 (sigmoid1.grad_out: the local derivative left out)
        rows = text.splitlines()[1:]
        assert "0.28125≠1.125" in rows[1]
        assert rows[0].split()[-1] == "0"                          # element [0, 2] agrees: one value, no ≠
        positions = report.differing_positions
        for _ in range(len(positions)):                            # f walks every difference, cyclically
            await pilot.press("f")
        await pilot.pause()
        assert (app.session.position[0], app.session.position[1] - 1) == first.position


async def test_with_every_value_right_nothing_is_marked(tmp_path):
    from nnstep.debugger.session import Session
    sc = load_scenario(NET)
    s = Session(sc)
    s.goto(1, s.program.stage_start["update"])
    right = {n: s.value(n) for n in ("linear1.out", "sigmoid1.grad_in", "linear1.weight.grad")}
    ref = compare(sc, right)
    assert ref.ok
    app = make_app(sc, compare=ref)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert "every one of the 3 tensors given agrees with nnstep" in str(app.query_one(StatusBar).render())
        assert "≠" not in app.query_one(ProgramView).text()


def test_bad_input_is_refused_before_the_tui_opens(tmp_path, capsys):
    from nnstep.cli import main
    bad = tmp_path / "mine.npz"
    np.savez(bad, **{"sigmoid1.gradin": np.zeros((2, 3))})
    assert main([NET, "--compare", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nnstep: error: ") and 'did you mean "sigmoid1.grad_in"' in err
    assert main([NET, "--compare", str(tmp_path / "nope.npz")]) == 2
