"""explain for values (issue 30): every layer's forward values with their own numbers, as linear and
max pooling had them; normalization outputs without a crash; copies named by their source
element; an initial weight as the initial value, with where it came from; a check that catches a
wrong rule. The numbers below are the lessons' own (each lesson derives them in its comments)."""
import os

import numpy as np
import pytest

import nnstep
from nnstep.cli import main
from nnstep.debugger.explain import explain

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def lesson(name, at="end"):
    s = nnstep.Session(nnstep.load_scenario(os.path.join(ROOT, "scenarios", name)))
    if at == "end":
        s.goto(1, s.M)
    return s


def test_a_convolution_shows_its_window_times_its_kernel():
    """conv2d-flatten-linear: out[0, 0, 1, 0] = the window [[0, 2], [1, 4]] × the kernel [[1, 0], [0, −1]] = −4
    (it ended at "= −4" with only the general formula)."""
    ex = explain(lesson("conv2d-flatten-linear.toml"), "conv2d1.out", (0, 0, 1, 0))
    assert "input[0, 0, 1, 0] · conv2d1.weight[0, 0, 0, 0] + input[0, 0, 1, 1] · conv2d1.weight[0, 0, 0, 1]" in ex.text
    assert "= 0 × 1 + 2 × 0 + 1 × 0 + 4 × (-1) + 0\n" in ex.text
    assert ex.ok and ex.checked and ex.value == -4.0


def test_an_attention_weight_shows_its_row_of_scores_their_exponentials_and_sum():
    """tiny-lm, head 0, query 2: scores [ln 2, ln 2, 2 ln 2] (key 3 masked); m = 2 ln 2; the
    exponentials 1/2, 1/2, 1; their sum 2; weight of key 1 = (1/2)/2 = 0.25."""
    s = lesson("tiny-lm.toml")
    ex = explain(s, "attn.weights", (0, 0, 2, 1))
    t = ex.text
    assert "m = max(attn.scores[0, 0, 2, 0], attn.scores[0, 0, 2, 1], attn.scores[0, 0, 2, 2])" in t
    assert "= max(0.693147181, 0.693147181, 1.38629436)" in t
    assert "= 0.5 + 0.5 + 1\n" in t and "= 0.5 / 2\n  = 0.25" in t
    assert ex.ok and ex.checked and ex.value == pytest.approx(0.25, abs=1e-15)
    hidden = explain(s, "attn.weights", (0, 0, 1, 3))             # a masked key: exactly 0, and said so
    assert hidden.value == 0.0 and "the causal mask hides it, its weight is exactly 0" in hidden.text
    assert "−∞" not in hidden.text
    score = explain(s, "attn.scores", (0, 0, 1, 3))               # its score: before the mask, finite
    assert score.ok and "the score is taken before the mask" in score.text
    assert "/ √(d)" in score.text and "/ √(2)" in score.text


@pytest.mark.parametrize("tensor,idx,what", [
    ("attn.q", (0, 1, 2, 0), "row 2 of [q | k | v]"),
    ("attn.context", (0, 2, 1), "head 0's weighted sum of the values"),
    ("attn.out", (0, 3, 2), "the output projection"),
])
def test_the_attention_substeps_show_their_products(tensor, idx, what):
    ex = explain(lesson("tiny-lm.toml"), tensor, idx)
    assert what in ex.text and " × " in ex.text and ex.ok and ex.checked


@pytest.mark.parametrize("lesson_name,tensor,idx", [
    ("layernorm.toml", "layernorm1.out", (0, 3)), ("batchnorm-train.toml", "batchnorm1.out", (1, 0)),
    ("batchnorm-train.toml", "batchnorm1.running_mean", (0,))])
def test_normalization_outputs_are_explained_not_a_crash(capsys, lesson_name, tensor, idx):
    """`explain layernorm.toml "layernorm1.out[0, 3]"` exited 2 with "TENSOR: tuple index out of range"."""
    path = os.path.join(ROOT, "scenarios", lesson_name)
    assert main(["explain", path, f"{tensor}[{', '.join(map(str, idx))}]"]) == 0
    out = capsys.readouterr().out
    assert "μ = " in out and "σ² = " in out or "running average" in out


def test_mean_and_variance_show_the_numbers_averaged():
    """layernorm.toml, sample 0 = [1, 2, 3, 4]: μ = (1 + 2 + 3 + 4)/4 = 2.5, σ² = (2.25 + 0.25 + 0.25 + 2.25)/4
    = 1.25, and out[0, 3] = (4 − 2.5)/√(1.25 + 1e−5) = 1.34163542 (it said "4 = meanₙ input")."""
    s = lesson("layernorm.toml")
    mean, var, out = (explain(s, t, i) for t, i in (("layernorm1.mean", (0,)), ("layernorm1.var", (0,)),
                                                     ("layernorm1.out", (0, 3))))
    assert "= (1 + 2 + 3 + 4) / 4\n" in mean.text and mean.value == 2.5
    assert "= ((1 − 2.5)² + (2 − 2.5)² + (3 − 2.5)² + (4 − 2.5)²) / 4\n" in var.text and var.value == 1.25
    assert "= 1 × (4 − 2.5) / √(1.25 + 1e-05) + 0\n" in out.text
    assert all(e.ok and e.checked for e in (mean, var, out))


@pytest.mark.parametrize("lesson_name,tensor,idx,source", [
    ("bptt-vanishing.toml", "flatten1.out", (0, 5), "rnn1.out[0, 5, 0]"),
    ("tiny-lm.toml", "embed.out", (0, 2, 1), "embed.weight[2, 1]"),
    ("attention-primitives.toml", "kT.out", (0, 1, 2), "k.out[0, 2, 1]"),
])
def test_copies_name_their_source_element(lesson_name, tensor, idx, source):
    """A reshape said "0.2225 = reshape(rnn1.out, [N, −1])": now the element it moved."""
    ex = explain(lesson(lesson_name), tensor, idx)
    assert f"{tensor}{list(idx)} = {source}   (" in ex.text
    assert ex.ok and ex.checked


def test_the_embedding_names_the_token_that_picks_the_row():
    ex = explain(lesson("tiny-lm.toml"), "embed.out", (0, 2, 1))
    assert "the token input[0, 2] = 2 picks row 2 of the table" in ex.text


def test_matmul_the_clipped_gradient_and_a_large_loss_show_their_own_numbers():
    """matmul said "1.386 = q.out @ kT.out"; the clip "P.grad.clipped = 0.377·P.grad"; a loss over a
    larger tensor only its formula."""
    mm = explain(lesson("attention-primitives.toml"), "qk.out", (0, 1, 2))
    assert "= 0 × 1 + 1.38629436 × 1 + 0 × 0 + 0 × 0" in mm.text and mm.ok and mm.checked
    clip = explain(lesson("clipping.toml"), "linear1.weight.grad.clipped", (0, 0))
    assert "= clip_coef · linear1.weight.grad[0, 0]" in clip.text and "= 0.0374999953 × 8" in clip.text and clip.ok
    s = lesson("dropout-mask.toml")
    big = explain(s, "dropout2.out", (0, 0, 1, 1))
    assert " × " in big.text and big.ok and big.checked
    loss = explain(lesson("softmax-cross-entropy.toml"), "loss")
    assert "= ((log(e^(2) + e^(1) + e^(0)) − 2) + (log(e^(0) + e^(0) + e^(0)) − 0)) / 2" in loss.text and loss.ok


def test_the_initial_value_says_where_it_came_from(tmp_path):
    """Before any update (step 0) a weight was "computed by update …, which has not run yet"."""
    s = nnstep.Session(nnstep.load_scenario(os.path.join(ROOT, "scenarios", "classic.toml")))
    ex = explain(s, "linear1.weight", (0, 1))
    assert ex.step == 0 and ex.ok and ex.value == 0.2
    assert ex.text.startswith("linear1.weight[0, 1] = 0.2: the initial value (step 0)")
    assert "given in the scenario: layers[0].weight" in ex.text and "has not run" not in ex.text
    p = tmp_path / "net.toml"
    p.write_text('[scenario]\nseed = 1\nweights = "w.npz"\n[data]\nx = [[1.0, 2.0]]\ny = [[0.0]]\n[[layers]]\n'
                 'type = "linear"\nout = 3\n[[layers]]\ntype = "linear"\nout = 1\n[loss]\ntype = "mse"\n')
    np.savez(tmp_path / "w.npz", **{"linear2.weight": np.array([[0.5, -0.5, 0.25]])})
    s = nnstep.Session(nnstep.load_scenario(str(p)))
    assert 'from the weights file "w.npz"' in explain(s, "linear2.weight", (0, 1)).text
    drawn = explain(s, "linear1.weight", (2, 1)).text           # fan_in = 2: U(−1/√2, 1/√2)
    assert "kaiming_uniform(a = √5): U(−1/√fan_in, 1/√fan_in), fan_in = 2, so U(−0.707107, 0.707107)" in drawn
    assert "from the scenario's seed (1)" in drawn
    bias = explain(s, "linear2.bias", (0,)).text                 # fan_in = 3
    assert "bias init: U(−1/√fan_in, 1/√fan_in), fan_in = 3, so U(−0.57735, 0.57735)" in bias


def test_a_gradient_before_its_backward_op_says_which_op_computes_it():
    s = nnstep.Session(nnstep.load_scenario(os.path.join(ROOT, "scenarios", "classic.toml")))
    s.goto(1, 3)
    ex = explain(s, "sigmoid2.grad_in", (0, 0))
    assert not ex.ok and ex.value is None
    assert ex.text.startswith('sigmoid2.grad_in has not been computed yet: "backward sigmoid2" (op 7 of each step)')


def test_a_rule_whose_numbers_do_not_add_up_is_flagged(monkeypatch):
    """The check is honest: a rule that shows a wrong term is caught on the line it is shown."""
    from nnstep.layers import dense as L
    from nnstep.layers.expr import Lit

    real = L.Linear.value_rule

    def wrong(self, name, idx, V):
        v = real(self, name, idx, V)
        v.expr = v.expr + Lit(0.001)
        return v
    monkeypatch.setattr(L.Linear, "value_rule", wrong)
    ex = explain(lesson("classic.toml"), "linear1.out", (0, 0))
    assert not ex.ok and ex.text.endswith("! the terms above do not add up to it")


def test_a_wrong_intermediate_is_flagged_on_its_own_line(monkeypatch):
    from nnstep.layers import norm as L
    from nnstep.layers.expr import El

    real = L.norm_value

    def wrong(Lr, name, idx, V, cells, at, aff, over):
        v = real(Lr, name, idx, V, cells, at, aff, over)
        for d in v.where:
            if d.symbol == "μ":
                d.engine = El(d.engine.name, d.engine.idx, d.engine.v() + 1)     # an engine mean that disagrees
        return v
    monkeypatch.setattr(L, "norm_value", wrong)
    ex = explain(lesson("layernorm.toml"), "layernorm1.out", (0, 3))
    assert not ex.ok and "! the engine's layernorm1.mean[0] is 3.5" in ex.text


def test_a_large_sum_adds_every_term_and_its_written_terms_must_be_those():
    """A sum over a large tensor (a loss over 50176 elements, a gradient's norm) writes its first
    terms and adds every one from the same arithmetic on the whole array; a written term that is not
    the one added makes the sum NaN, so the check fails where it is shown."""
    from nnstep.layers.expr import Lit, Many
    vals = np.arange(1.0, 101.0)
    good = Many(lambda j: Lit(j + 1.0), vals)
    assert good.v() == 5050.0 and good.txt().endswith("+ … (94 more terms)")
    bad = Many(lambda j: Lit(j + 2.0), vals)
    assert bad.v() != bad.v()
    s = nnstep.Session(nnstep.loads_scenario(
        '[data]\nx = { random = "normal", shape = [64, 30] }\ny = { random = "normal", shape = [64, 30] }\n'
        '[[layers]]\ntype = "linear"\nout = 30\n[loss]\ntype = "huber"\ndelta = 0.5\n'))
    s.goto(1, s.M)
    ex = explain(s, "loss")
    assert ex.ok and ex.checked and "(1914 more terms)) / 1920" in ex.text


def test_float32_explanations_check_to_float32s_rounding():
    """A float32 scenario's gradients were always flagged: the check allowed 1e−9 of the terms'
    size, and float32 rounds at 1e−7. It allows float32's rounding now, and still catches a rule
    that is wrong."""
    import sys
    sys.path.insert(0, HERE)
    from scen import FLOAT32_LAYERNORM
    s = nnstep.Session(nnstep.loads_scenario(FLOAT32_LAYERNORM))
    s.goto(1, s.program.stage_start["update"])
    for name, idx in (("linear1.weight.grad", (0, 0)), ("layernorm1.grad_in", (1, 2)), ("layernorm1.out", (1, 2)),
                      ("gelu1.out", (0, 1))):
        ex = explain(s, name, idx)
        assert ex.ok and ex.checked, ex.text


def test_cli_explain_step_0_is_the_initial_value(capsys):
    """A parameter's step-0 value is its initial value (docs/scenario-format.md's tensor names):
    `explain --step 0` shows it; a tensor that only an op computes has none then."""
    path = os.path.join(ROOT, "scenarios", "classic.toml")
    assert main(["explain", path, "linear1.weight[0, 1]", "--step", "0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("linear1.weight[0, 1] = 0.2: the initial value (step 0)") and "layers[0].weight" in out
    assert main(["explain", path, "linear1.out[0, 1]", "--step", "0"]) == 1
    assert "has no value at step 0" in capsys.readouterr().out
