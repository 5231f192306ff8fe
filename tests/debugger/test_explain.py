"""explain(): any element of any tensor, with the engine's numbers (issue "One engine of record").

Golden numbers: Matt Mazur, "A Step by Step Backpropagation Example" (2015), the 2-2-2 sigmoid net
of classic.toml (lr 0.5, E = ½·Σ(target − out)²). For w5 (linear2.weight[0, 0]):
  ∂E/∂out_o1 = 0.74136507, ∂out_o1/∂net_o1 = 0.186815602, ∂net_o1/∂w5 = out_h1 = 0.593269992,
  ∂E/∂w5 = 0.082167041.
For w1 (linear1.weight[0, 0]):
  ∂E/∂out_h1 = 0.036350306, ∂out_h1/∂net_h1 = 0.241300709, ∂net_h1/∂w1 = i1 = 0.05,
  ∂E/∂w1 = 0.000438568, where ∂E/∂out_h1 = ∂E_o1/∂out_h1 + ∂E_o2/∂out_h1
  = 0.138498562 × 0.40 + (−0.038098236) × 0.50 = 0.055399425 + (−0.019049119).
"""
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import nnstep
from nnstep.cli import main
from nnstep.debugger.explain import computed_this_step, explain, is_gradient, parse_element
from nnstep.layers import dense as L

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TUI = os.path.join(ROOT, "tests", "tui", "scenarios")
CLASSIC = os.path.join(TUI, "classic.toml")


def after_backward(path):
    s = nnstep.Session(nnstep.load_scenario(path))
    s.goto(1, s.program.stage_start["update"])
    return s


def test_mazur_w5_is_his_product():
    s = after_backward(CLASSIC)
    ex = explain(s, "linear2.weight.grad", (0, 0))
    assert [f.source for f in ex.factors] == ["sigmoid2.local[0, 0]", "sigmoid1.out[0, 0]"]
    top = ex.chain[0]
    assert top.text[1] == ("  = ∂E/∂sigmoid2.out[0, 0] · ∂sigmoid2.out[0, 0]/∂linear2.out[0, 0] · "
                           "∂linear2.out[0, 0]/∂linear2.weight[0, 0]")
    assert top.text[2] == "  = 0.74136507 × 0.186815602 × 0.593269992"
    assert abs(ex.value - 0.082167041) < 1e-9 and ex.ok
    assert ex.value == pytest.approx(s.value("linear2.weight.grad")[0, 0], rel=1e-15)
    # the chain ends at the loss: ∂E/∂out_o1 = 2·½·(out_o1 − target_o1) = 0.75136507 − 0.01
    assert "∂E/∂sigmoid2.out[0, 0]   (backward loss: the loss's derivative)" in ex.text
    assert "0.75136507 − 0.01" in ex.text


def test_mazur_w1_reads_as_his_post_with_his_numbers():
    s = after_backward(CLASSIC)
    ex = explain(s, "linear1.weight.grad", (0, 0))
    t = ex.text
    assert "= ∂E/∂sigmoid1.out[0, 0] · ∂sigmoid1.out[0, 0]/∂linear1.out[0, 0] · ∂linear1.out[0, 0]/∂linear1.weight[0, 0]" in t
    assert "= 0.0363503064 × 0.241300709 × 0.05" in t
    # ∂E/∂out_h1 as the sum over both outputs, the weights before the update, Mazur's two terms
    assert "= ∂E/∂linear2.out[0, 0] · linear2.weight[0, 0] + ∂E/∂linear2.out[0, 1] · linear2.weight[1, 0]" in t
    assert "= 0.138498562 × 0.4 + (-0.0380982365) × 0.5" in t
    assert "= 0.0553994247 + (-0.0190491183)" in t
    assert abs(ex.value - 0.000438568) < 1e-9 and ex.ok
    assert t.rstrip().endswith("linear1.weight.grad[0, 0] = 0.000438567734")


def test_the_chain_uses_the_weights_before_the_update_wherever_the_cursor_is():
    s = after_backward(CLASSIC)
    before = explain(s, "linear1.weight.grad", (0, 0)).text
    s.goto(1, s.M - 1)                      # linear2.weight has been updated by now
    assert explain(s, "linear1.weight.grad", (0, 0)).text == before


def test_every_gradient_element_of_every_shipped_lesson_adds_up():
    """The element rules (each layer's and loss's grad_rule, nnstep.layers) against the vectorized backward: for every
    gradient tensor of every shipped scenario, its first and last elements (and all of a small
    tensor) are expanded, and each line's terms must sum to the engine's value."""
    checked = 0
    for path in sorted(glob.glob(os.path.join(ROOT, "scenarios", "*.toml")) + glob.glob(os.path.join(ROOT, "scenarios", "*", "*.toml"))):
        s = after_backward(path)
        for name in sorted(s.names):
            if not is_gradient(s, name) or s.value(name) is None:
                continue
            shape = np.shape(s.value(name))
            elems = list(np.ndindex(*shape))
            for idx in (elems if len(elems) <= 8 else [elems[0], elems[len(elems) // 2], elems[-1]]):
                ex = explain(s, name, idx)
                assert ex.ok, (path, name, idx, ex.text)
                assert ex.engine_value == s.value(name)[idx]
                checked += 1
    assert checked > 300


def test_a_wrong_element_rule_is_caught(monkeypatch):
    """The check at the end can fail: a rule that doubles every weight factor no longer adds up."""
    real = L.Linear.grad_rule

    def wrong(self, wrt, idx, V):
        r = real(self, wrt, idx, V)
        from nnstep.layers.terms import Factor, Term
        r.terms = [Term(tuple(Factor(f.symbol, f.source, 2 * f.value) for f in t.factors), t.upstream)
                   for t in r.terms]
        return r
    monkeypatch.setattr(L.Linear, "grad_rule", wrong)
    ex = explain(after_backward(CLASSIC), "linear1.weight.grad", (0, 0))
    assert not ex.ok and "! " in ex.text and "but the engine's value is" in ex.text


@pytest.mark.parametrize("param,index", [("linear1.weight", (0, 1)), ("linear1.bias", (1,)), ("linear2.weight", (0, 1))])
def test_batch_sums_show_one_term_per_sample(param, index):
    s = after_backward(os.path.join(TUI, "xor-tanh.toml"))
    ex = explain(s, f"{param}.grad", index)
    n = s.scenario.batch_size
    assert f"Σ over the {n} rows of the batch" in ex.chain[0].how
    assert ex.chain[0].text[1].count("∂E/∂") == n
    assert ex.ok


def test_large_tensors_are_cut_but_every_term_is_checked():
    s = after_backward(os.path.join(TUI, "large.toml"))
    ex = explain(s, "linear1.weight.grad", (0, 0))
    assert "more term" in ex.text and ex.ok


def test_values_show_how_they_were_computed():
    s = after_backward(CLASSIC)
    ex = explain(s, "linear1.out", (0, 0))         # Mazur: net_h1 = 0.15·0.05 + 0.2·0.1 + 0.35 = 0.3775
    assert "input[0, 0] · linear1.weight[0, 0] + input[0, 1] · linear1.weight[0, 1] + linear1.bias[0]" in ex.text
    assert "= 0.05 × 0.15 + 0.1 × 0.2 + 0.35" in ex.text and ex.value == pytest.approx(0.3775) and ex.ok
    ex = explain(s, "sigmoid1.out", (0, 0))        # Mazur: out_h1 = 0.593269992
    assert "= 1 / (1 + e^(−0.3775))\n  = 1 / (1 + 0.685573202)\n  = 0.593269992" in ex.text and ex.ok and ex.checked
    s.goto(2, 0)
    ex = explain(s, "linear2.weight", (0, 0))       # Mazur: w5+ = 0.4 − 0.5·0.082167041 = 0.35891648
    assert "linear2.weight[0, 0] (after) = linear2.weight[0, 0] (before) − lr · linear2.weight.grad[0, 0]" in ex.text
    assert "= 0.4 − 0.5 × 0.0821670406\n  = 0.4 − 0.0410835203\n  = 0.35891648" in ex.text and ex.ok and ex.checked


def test_not_yet_computed_says_which_op():
    s = nnstep.Session(nnstep.load_scenario(CLASSIC))
    ex = explain(s, "linear2.weight.grad", (0, 0))
    assert ex.value is None and not ex.ok
    assert '"backward linear2"' in ex.text
    assert not computed_this_step(s, "linear2.weight.grad")


def test_bad_tensor_and_index():
    s = after_backward(CLASSIC)
    with pytest.raises(KeyError, match="did you mean"):
        explain(s, "linear1.wieght.grad", (0, 0))
    with pytest.raises(IndexError, match="outside"):
        explain(s, "linear1.weight.grad", (5, 0))
    assert parse_element("linear1.weight.grad[0, 1]") == ("linear1.weight.grad", (0, 1))
    assert parse_element("loss") == ("loss", None)
    with pytest.raises(ValueError):
        parse_element("__import__('os')")


def test_cli_explain_text_and_json(capsys):
    assert main(["explain", CLASSIC, "linear1.weight.grad[0, 0]"]) == 0
    out = capsys.readouterr().out
    assert "0.0363503064 × 0.241300709 × 0.05" in out and out.rstrip().endswith("0.000438567734")
    assert main(["explain", CLASSIC, "linear2.weight.grad[0,0]", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert set(d) == {"tensor", "index", "step", "value", "engine_value", "text"}
    assert d["tensor"] == "linear2.weight.grad" and d["index"] == [0, 0] and d["step"] == 1
    assert abs(d["value"] - 0.082167041) < 1e-9 and d["value"] == pytest.approx(d["engine_value"], rel=1e-15)


@pytest.mark.parametrize("args,what", [
    (["linear1.wieght.grad[0, 0]"], 'did you mean "linear1.weight.grad"'),
    (["linear1.weight.grad[9, 0]"], "outside"),
    (["linear1.weight.grad[0, 0]", "--step", "5"], "beyond train.steps"),
    (["linear1.weight.grad(0)"], "expected a tensor and an index"),
])
def test_cli_explain_bad_input(capsys, args, what):
    assert main(["explain", CLASSIC] + args) == 2
    err = capsys.readouterr().err
    assert err.startswith("nnstep: error:") and what in err and "Traceback" not in err


def test_explain_never_imports_textual():
    code = ("import sys, nnstep; from nnstep.debugger import explain; "
            "assert 'textual' not in sys.modules, 'textual imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_a_layer_without_bias_gets_no_bias_term(tmp_path):
    p = tmp_path / "nb.toml"
    p.write_text('[data]\nx = [[1.0, 2.0]]\ny = [[0.5]]\n[[layers]]\ntype = "linear"\nout = 1\nweight = [[0.5, -1.0]]\n'
                 'bias = false\n[loss]\ntype = "mse"\n')
    s = after_backward(str(p))
    ex = explain(s, "linear1.out", (0, 0))
    assert "bias" not in ex.text and "= 1 × 0.5 + 2 × (-1)" in ex.text and ex.value == -1.5 and ex.ok
