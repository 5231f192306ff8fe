"""explain(): the chain rule for one element of a parameter's gradient, with the engine's numbers.

Golden numbers: Matt Mazur, "A Step by Step Backpropagation Example" (2015), the 2-2-2 sigmoid net
of classic.toml. For w5 (linear2.weight[0, 0]):
  ∂E/∂out_o1 = 0.74136507, ∂out_o1/∂net_o1 = 0.186815602, ∂net_o1/∂w5 = out_h1 = 0.593269992,
  ∂E/∂w5 = 0.082167041.
For w1 (linear1.weight[0, 0]):
  ∂E/∂out_h1 = 0.036350306, ∂out_h1/∂net_h1 = 0.241300709, ∂net_h1/∂w1 = i1 = 0.05,
  ∂E/∂w1 = 0.000438568, and ∂E/∂out_h1 = ∂E_o1/∂out_h1 + ∂E_o2/∂out_h1
  = 0.138498562 × 0.40 + (−0.038098236) × 0.50 = 0.055399425 − 0.019049118.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import nnstep
from nnstep.debugger.explain import computed_this_step, explain

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def sc(name):
    return os.path.join(HERE, "scenarios", name)


def shipped(name):
    return os.path.join(ROOT, "scenarios", name)


def session_after_backward(path):
    s = nnstep.Session(nnstep.load_scenario(path))
    s.goto(1, s.program.stage_start["update"])
    return s


def test_mazur_w5_chain_is_the_published_product():
    s = session_after_backward(sc("classic.toml"))
    ex = explain(s, "linear2.weight", (0, 0))
    assert [f.symbol for f in ex.factors] == ["∂E/∂out", "∂out/∂net", "∂net/∂w"]
    a, b, c = (f.value for f in ex.factors)
    assert abs(a - 0.74136507) < 1e-8
    assert abs(b - 0.186815602) < 1e-9
    assert abs(c - 0.593269992) < 1e-9
    assert abs(ex.value - 0.082167041) < 1e-9
    assert ex.ok and abs(ex.recomputed - ex.value) < 1e-15
    assert "∂E/∂w = ∂E/∂out · ∂out/∂net · ∂net/∂w" in ex.text
    assert "0.74136507 × 0.186815602 × 0.593269992" in ex.text
    # the factors are the session's own tensors
    assert a == s.value("sigmoid2.grad_out")[0, 0] and b == s.value("sigmoid2.local")[0, 0]
    assert c == s.value("sigmoid1.out")[0, 0]


def test_mazur_w1_hidden_layer_with_the_upstream_sum():
    s = session_after_backward(sc("classic.toml"))
    ex = explain(s, "linear1.weight", (0, 0))
    a, b, c = (f.value for f in ex.factors)
    assert abs(a - 0.036350306) < 1e-9 and abs(b - 0.241300709) < 1e-9 and c == 0.05
    assert abs(ex.value - 0.000438568) < 1e-9
    assert "0.138498562 × 0.4 + (-0.0380982365) × 0.5 = 0.0363503064" in ex.text


def test_hidden_expansion_uses_the_weights_before_the_update():
    s = session_after_backward(sc("classic.toml"))
    before = explain(s, "linear1.weight", (0, 0)).text
    s.goto(1, s.M - 1)           # linear2.weight has been updated by now
    assert not np.array_equal(s.value("linear2.weight"), s.step_start_value("linear2.weight"))
    assert explain(s, "linear1.weight", (0, 0)).text.split("and the upstream")[1] == \
        before.split("and the upstream")[1]


@pytest.mark.parametrize("param,index", [("linear1.weight", (0, 1)), ("linear1.weight", (1, 0)),
                                         ("linear1.bias", (1,)), ("linear2.weight", (0, 1)),
                                         ("linear2.bias", (0,))])
def test_batch_sum_recomputes_the_engine_gradient(param, index):
    s = session_after_backward(sc("xor-tanh.toml"))
    ex = explain(s, param, index)
    assert ex.value == s.value(f"{param}.grad")[index]
    assert ex.ok and abs(ex.recomputed - ex.value) <= 1e-12 + 1e-9 * abs(ex.value)
    assert "Σₙ" in ex.text and "rows" in ex.text


def test_every_element_of_the_large_net_agrees():
    s = session_after_backward(sc("large.toml"))
    for p in ("linear1.weight", "linear2.weight", "linear2.bias"):
        G = s.value(f"{p}.grad")
        for index in [(0,) * G.ndim, tuple(d - 1 for d in G.shape)]:
            ex = explain(s, p, index)
            assert ex.ok, ex.text


def test_not_yet_computed_says_which_op():
    s = nnstep.Session(nnstep.load_scenario(sc("classic.toml")))
    ex = explain(s, "linear2.weight", (0, 0))
    assert ex.value is None and not ex.ok
    assert '"backward linear2"' in ex.text
    assert not computed_this_step(s, "linear2.weight.grad")


def test_bad_parameter_and_index():
    s = session_after_backward(sc("classic.toml"))
    with pytest.raises(KeyError):
        explain(s, "linear9.weight", (0, 0))
    with pytest.raises(IndexError):
        explain(s, "linear1.weight", (5, 0))


def test_conv_layer_gets_the_sum_form():
    s = session_after_backward(sc("conv2d-flatten-linear.toml"))
    ex = explain(s, "conv2d1.weight", (0, 0, 0, 0))
    assert ex.value == s.value("conv2d1.weight.grad")[0, 0, 0, 0]
    assert "backward conv2d1" in ex.text and "Σ" in ex.text


def test_explain_never_imports_textual():
    code = ("import sys, nnstep; from nnstep.debugger import explain; "
            "assert 'textual' not in sys.modules, 'textual imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
