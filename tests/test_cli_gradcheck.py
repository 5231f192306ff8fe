"""`nnstep gradcheck`: passes (exit 0) on the classic net and every shipped scenario, and fails
(exit 1) when an analytic gradient is wrong."""
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from nnstep import load_scenario, loads_scenario
from nnstep.cli import main
from nnstep.layers import activations, dense
from nnstep.engine.gradcheck import gradcheck

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSIC = os.path.join(ROOT, "scenarios", "classic.toml")
SHIPPED = sorted(glob.glob(os.path.join(ROOT, "scenarios", "*.toml")) + glob.glob(os.path.join(ROOT, "scenarios", "*", "*.toml")))


def test_classic_subprocess():
    r = subprocess.run([sys.executable, "-m", "nnstep", "gradcheck", CLASSIC], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "4 of 4 parameters within tolerance" in r.stdout


@pytest.mark.parametrize("path", SHIPPED, ids=[os.path.basename(p) for p in SHIPPED])
def test_shipped_scenarios_pass(path, capsys):
    assert main(["gradcheck", path, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["params"] and all(p["ok"] for p in d["params"])
    assert all(p["worst_error"] <= 1e-5 for p in d["params"])


NET = """
[scenario]
seed = 5
[data]
x = { random = "normal", shape = [5, 3] }
y = { random = "normal", shape = [5, 2] }
[[layers]]
type = "linear"
out = 4
[[layers]]
type = "sigmoid"
[[layers]]
type = "linear"
out = 2
[loss]
type = "mse"
"""


def test_wrong_analytic_gradient_fails(monkeypatch, tmp_path, capsys):
    """Break the sigmoid's local derivative (out·(1 − out) → out): gradcheck must catch it in every
    parameter below the sigmoid, and only there."""
    sc = loads_scenario(NET)
    good = {r[0]: r[3] for r in gradcheck(sc)}
    assert all(e < 1e-7 for e in good.values()), good
    monkeypatch.setattr(activations.Sigmoid, "local", lambda self, x, out: out)
    bad = {r[0]: r[3] for r in gradcheck(sc)}
    assert bad["linear1.weight"] > 1e-2 and bad["linear1.bias"] > 1e-2
    assert bad["linear2.weight"] < 1e-7 and bad["linear2.bias"] < 1e-7      # above the sigmoid: untouched
    p = tmp_path / "net.toml"
    p.write_text(NET)
    assert main(["gradcheck", str(p)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "2 of 4 parameters within tolerance" in out


def test_wrong_weight_gradient_fails(monkeypatch):
    """A Linear backward that forgets to transpose-sum correctly (scales dW by 2) is caught."""
    sc = loads_scenario(NET)
    orig = dense.Linear.backward

    def wrong(self, g, x, out, P, extras):
        gin, grads, loc = orig(self, g, x, out, P, extras)
        return gin, {**grads, "weight": 2 * grads["weight"]}, loc

    monkeypatch.setattr(dense.Linear, "backward", wrong)
    rows = gradcheck(sc)
    assert all(r[3] > 0.1 for r in rows if r[0].endswith(".weight"))
    assert all(r[3] < 1e-7 for r in rows if r[0] == "linear2.bias")


def test_gradcheck_checks_in_float64_for_a_float32_scenario(capsys, tmp_path):
    p = tmp_path / "f32.toml"
    p.write_text(NET.replace("seed = 5", 'seed = 5\ndtype = "float32"'))
    assert load_scenario(str(p)).dtype == "float32"
    assert main(["gradcheck", str(p), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert max(q["worst_error"] for q in d["params"]) < 1e-7       # float64 precision, not float32's


def test_large_parameters_are_sampled(capsys, tmp_path):
    p = tmp_path / "big.toml"
    p.write_text(NET.replace("out = 4", "out = 40"))
    assert main(["gradcheck", str(p), "--json", "--max-elements", "16"]) == 0
    d = json.loads(capsys.readouterr().out)
    w1 = next(q for q in d["params"] if q["param"] == "linear1.weight")
    assert w1["checked"] == 16 and w1["shape"] == [40, 3]
    assert np.isfinite(w1["analytic"]) and w1["ok"]


def test_a_network_without_parameters_has_nothing_to_check(tmp_path, capsys):
    p = tmp_path / "none.toml"
    p.write_text('[data]\nx = [[1.0, -2.0]]\ny = [[0.5, 0.0]]\n[[layers]]\ntype = "sigmoid"\n[loss]\ntype = "mse"\n')
    assert main(["gradcheck", str(p)]) == 0
    out = capsys.readouterr()
    assert "no parameters: there is no gradient to check" in out.out and "Traceback" not in out.err
    assert main(["gradcheck", str(p), "--json"]) == 0
    import json
    assert json.loads(capsys.readouterr().out)["params"] == []
