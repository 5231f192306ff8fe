"""Formulas as structure (layers.formula, model.formula) and what the layer types write with them: the text a user
reads and the numbers filled in, clause by clause, from the engine's tensors."""
import numpy as np
import pytest

import nnstep
from nnstep import loads_scenario
from nnstep.layers.formula import Const, F, Ref, Sym, text
from nnstep.model.formula import numbers, views
from nnstep.model.plan import Plan


def test_a_state_that_does_not_exist_yet_keeps_its_name():
    # Adam's m before the first update: the right side keeps the name, the left takes the value
    # written (0.1·g with g = 2), and g takes the value of the tensor it names
    f = F("{g} = {G};  {m} = {b}·{m} + 0.1·{g}", g=Sym("g"), G=Ref("w.grad"), m=Ref("w.m"), b=Const("β1", 0.9))
    assert text(f) == "g = w.grad;  w.m = β1·w.m + 0.1·g"
    out = numbers(f, {"w.grad": np.array([2.0]), "w.m": None}, {"w.m": np.array([0.2])})
    assert out == "g = 2;  0.2 = 0.9·w.m + 0.1·2"


def test_columns_transposes_and_negatives_as_a_textbook_writes_them():
    # a batch of scalars (N×1) is a column [a, b]ᵀ; transposed it is the row [a, b]; a transposed
    # scalar is the scalar; a negative value after an operator is parenthesised
    f = F("{W} = {g}ᵀ @ {x};  {b} = Σₙ {g};  {Wn} ← {Wo} − {lr}·{W}", W=Ref("w.grad"), g=Ref("g_out"),
          x=Ref("x"), b=Ref("b.grad"), Wn=Ref("w"), Wo=Ref("w"), lr=Const("lr", 0.5))
    before = {"g_out": np.array([[-0.25], [0.5]]), "x": np.array([[1.0], [2.0]]), "w": np.array([[1.0]])}
    after = {"w.grad": np.array([[0.75]]), "b.grad": np.array([0.25]), "w": np.array([[0.625]])}
    assert numbers(f, before, after) == "0.75 = [-0.25, 0.5] @ [1, 2]ᵀ;  0.25 = Σₙ [-0.25, 0.5]ᵀ;  0.625 ← 1 − 0.5·0.75"
    v = views(f, before, after)
    assert v[2].text == "w ← w − lr·w.grad" and v[2].num_rhs == "1 − 0.5·0.75" and v[2].num_lhs == "0.625"
    assert numbers(F("{y} = 0.1·{x}", y=Ref("y"), x=Ref("x")), {"x": np.array(-1.8)}, {"y": np.array(-0.18)}) \
        == "-0.18 = 0.1·(-1.8)"


def test_a_result_keeps_the_digits_its_numbers_make_necessary():
    # the tutorial's exploding neuron, step 4: 352.5·1 + 570·2 = 1492.5, which 4 significant digits
    # wrote "1492" beside numbers with a decimal; a product's places add up (352.5·219.5 = 77373.75)
    f = F("{W} = {g}ᵀ @ {x};  {gin} = {g} @ {w}", W=Ref("w.grad"), g=Ref("g_out"), x=Ref("x"), gin=Ref("gin"),
          w=Ref("w"))
    before = {"g_out": np.array([[352.5], [570.0]]), "x": np.array([[1.0], [2.0]]), "w": np.array([[219.5]])}
    after = {"w.grad": np.array([[1492.5]]), "gin": np.array([[352.5 * 219.5], [570 * 219.5]])}
    assert numbers(f, before, after) == "1492.5 = [352.5, 570] @ [1, 2]ᵀ;  [77373.75, 125115]ᵀ = [352.5, 570]ᵀ @ 219.5"
    # integers stay whole (not 4.706e+05), and at more digits nothing is lost either
    sq = F("{y} = {a}·{b}", y=Ref("y"), a=Ref("a"), b=Ref("b"))
    ab = {"a": np.array(-1372.0), "b": np.array(-343.0)}
    assert numbers(sq, ab, {"y": np.array(470596.0)}) == "470596 = -1372·(-343)"
    assert numbers(sq, ab, {"y": np.array(470596.0)}, digits=9) == "470596 = -1372·(-343)"
    # numbers written rounded give no place of their own: the result keeps its significant digits
    r = {"a": np.array(0.7082531), "b": np.array(2.0)}
    assert numbers(sq, r, {"y": np.array(1.4165062)}) == "1.417 = 0.7083·2"
    # a sum with a number written in full keeps that number's decimal, even beside rounded ones
    add = F("{y} = {a} + {b}", y=Ref("y"), a=Ref("a"), b=Ref("b"))
    assert numbers(add, {"a": np.array(352.5), "b": np.array(9000.12345)}, {"y": np.array(9352.62345)}) \
        == "9352.6 = 352.5 + 9000"
    # a constant (Adam's ε) is not one of the numbers: 0.9, not 0.9000000005
    up = F("{w} ← {w} − {lr}·{g} / (√{v} + {eps})", w=Ref("w"), lr=Const("lr", 0.1), g=Ref("g"), v=Ref("v"),
           eps=Const("ε", 1e-8))
    assert numbers(up, {"w": np.array(1.0), "g": np.array(2.0), "v": np.array(4.0)},
                   {"w": np.array(1 - 0.1 * 2 / (2 + 1e-8))}) == "0.9 ← 1 − 0.1·2 / (√4 + 1e-08)"


def test_an_indexed_or_large_tensor_keeps_its_name():
    f = F("{o}[n, o] = Σ {x}[n, c]", o=Ref("out"), x=Ref("x"))
    assert numbers(f, {"x": np.ones((2, 2))}, {"out": np.ones((2, 2))}) is None
    f = F("{o} = {x}", o=Ref("out"), x=Ref("x"))
    assert numbers(f, {"x": np.ones(7)}, {"out": np.ones(7)}) is None


def test_a_template_naming_an_unknown_part_is_a_bug_caught_at_once():
    with pytest.raises(KeyError, match="{nope}"):
        F("{a} = {nope}", a=Ref("a"))


# --- the layer types' formulas say what the engine computes ----------------------------------------
NET = """
[data]
x = [[1.0, 2.0], [0.5, -1.0]]
y = [[0.5], [0.0]]
[[layers]]
type = "linear"
out = 1
[loss]
type = "{loss}"
{loss_opts}
[optimizer]
type = "sgd"
lr = 0.1
{opt}
"""


def plan(loss="mse", loss_opts="", opt=""):
    return Plan(loads_scenario(NET.format(loss=loss, loss_opts=loss_opts, opt=opt)))


def by_name(p):
    return {op.name: op for op in p.ops}


def test_linear_backward_is_one_matrix_product_not_a_double_sum():
    f = by_name(plan())["backward linear1"].formula_text
    assert "linear1.weight.grad = linear1.grad_outᵀ @ input" in f and "Σₙ linear1.grad_outᵀ" not in f


def test_conv_indices_include_the_padding():
    sc = loads_scenario('[data]\nx = { random = "normal", shape = [2, 1, 5] }\ny = { random = "normal", shape = [2, 2, 5] }\n'
                        '[[layers]]\ntype = "conv1d"\nout_channels = 2\nkernel_size = 3\npadding = 1\n[loss]\ntype = "mse"\n')
    ops = by_name(Plan(sc))
    for name in ("forward conv1d1", "backward conv1d1"):
        f = ops[name].formula_text
        assert "s·i + k − p" in f and "padding p = 1" in f and "stride s = 1" in f, f


def test_cross_entropy_formula_follows_the_targets_and_its_divisor():
    idx = Plan(loads_scenario('[data]\nx = [[1.0, 2.0], [0.5, 1.0]]\ny = [0, 1]\n[[layers]]\ntype = "linear"\nout = 3\n'
                              '[loss]\ntype = "cross_entropy"\n'))
    f = by_name(idx)["backward loss"]
    assert "softmax(linear1.out) − onehot(target)" in f.formula_text and "/ N" in f.formula_text
    prob = Plan(loads_scenario('[data]\nx = [[1.0, 2.0], [0.5, 1.0]]\ny = [[0.2, 0.8, 0.0], [0.0, 0.5, 0.5]]\n'
                               '[[layers]]\ntype = "linear"\nout = 3\n[loss]\ntype = "cross_entropy"\n'))
    f = by_name(prob)["backward loss"]
    assert "onehot" not in f.formula_text and "softmax(linear1.out) · Σ_c target − target" in f.formula_text
    # logits (N, C, L): mean divides by N·L, and the numbers line says so
    sp = loads_scenario('[data]\nx = { random = "normal", shape = [2, 1, 3] }\ny = [[0, 1, 1], [1, 0, 1]]\n'
                        '[[layers]]\ntype = "conv1d"\nout_channels = 2\nkernel_size = 1\n[loss]\ntype = "cross_entropy"\n')
    s = nnstep.Session(sp)
    s.goto(1, s.program.stage_start["backward"] + 1)
    r = s.last_record
    v = views(r.op.formula, r.inputs, r.outputs)
    assert v[0].num_rhs.endswith("/ 6"), v[0].num_rhs          # N·L = 2·3


@pytest.mark.parametrize("loss,opts,sym,val", [("smooth_l1", "beta = 0.5", "β", "0.5"), ("huber", "delta = 2.0", "δ", "2")])
def test_beta_and_delta_in_both_loss_formulas_with_their_values(loss, opts, sym, val):
    s = nnstep.Session(loads_scenario(NET.format(loss=loss, loss_opts=opts, opt="")))
    s.goto(1, s.program.stage_start["backward"] + 1)
    for rec in (s.record_at(1, s.program.stage_start["loss"]), s.last_record):
        assert sym in rec.op.formula_text
        nums = "  ".join(c.numbers for c in views(rec.op.formula, rec.inputs, rec.outputs))
        assert val in nums and sym not in nums, nums


def test_weight_decay_and_lr_are_symbols_with_their_values_in_the_numbers():
    s = nnstep.Session(loads_scenario(NET.format(loss="mse", loss_opts="", opt="weight_decay = 0.01")))
    s.goto(1, s.program.stage_start["update"] + 1)
    r = s.last_record
    assert r.op.formula_text == "g = linear1.weight.grad + λ·linear1.weight;  linear1.weight ← linear1.weight − lr·g"
    v = views(r.op.formula, r.inputs, r.outputs)
    assert "0.01·" in v[0].num_rhs and "0.1·" in v[1].num_rhs and "wd" not in r.op.formula_text


def test_gelu_tanh_backward_reads_the_layer_input_not_a_raw_x():
    sc = loads_scenario('[data]\nx = [[1.0, 2.0]]\ny = [[0.5, 0.0]]\n[[layers]]\ntype = "gelu"\napproximate = "tanh"\n'
                        '[loss]\ntype = "mse"\n')
    f = by_name(Plan(sc))["backward gelu1"].formula_text
    assert "(x + " not in f and "0.044715x³" not in f and "(input + 0.044715·input³)" in f, f


def test_absent_bias_and_gamma_leave_no_term():
    sc = loads_scenario('[data]\nx = [[1.0, 2.0], [3.0, 1.0]]\ny = [[0.5], [0.0]]\n[[layers]]\ntype = "layernorm"\n'
                        'affine = false\n[[layers]]\ntype = "linear"\nout = 1\nbias = false\n[loss]\ntype = "mse"\n')
    ops = by_name(Plan(sc))
    assert ops["forward linear1"].formula_text == "linear1.out = layernorm1.out @ linear1.weightᵀ"
    for name in ("backward linear1", "forward layernorm1", "backward layernorm1"):
        assert ".bias" not in ops[name].formula_text and "layernorm1.weight" not in ops[name].formula_text


def test_the_loss_formula_says_what_its_scale_s_is_wherever_it_is_shown():
    """s (loss.scale) in the loss and backward-loss formulas is defined in the formula itself, so the
    text without numbers (the TUI's, trace's) says it, not only trace's "where" line."""
    import os
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ops = by_name(Plan(nnstep.load_scenario(os.path.join(root, "scenarios", "classic.toml"))))
    for name in ("loss", "backward loss"):
        t = ops[name].formula_text
        assert "s · " in t and "(s = 0.5: the scenario's loss.scale" in t, t
        v = views(ops[name].formula, {}, {})
        assert any("s = 0.5" in c.text for c in v)
    sc = loads_scenario('[data]\nx = [[1.0]]\ny = [[0.0]]\n[[layers]]\ntype = "linear"\nout = 1\n[loss]\ntype = "mse"\n')
    assert "loss.scale" not in by_name(Plan(sc))["loss"].formula_text     # no scale: no s to define


def test_no_formula_leaves_a_placeholder_or_defines_a_symbol_as_itself():
    """Every op of every lesson and of the engine's graph nets: no template key left in braces (the
    embedding's row read "embed.weight[{x}[…], :]"), and no symbol written as its own definition
    (attention's "split into h = h heads of d = d"), in the text or with the numbers. Attention's
    softmax says the mask in words: .scores is before it, finite; .weights is 0 where j > i."""
    import glob
    import os
    import re
    import sys
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.path.insert(0, os.path.join(root, "tests", "engine"))
    from test_engine_graph import NETS
    self_defined = re.compile(r"(?<![^\s(;])([A-Za-z]\w*) = \1(?![\w\[(.·])")
    scs = [nnstep.load_scenario(p) for p in glob.glob(os.path.join(root, "scenarios", "*.toml"))]
    scs += [loads_scenario(t) for t in NETS.values()]
    seen = 0
    for sc in scs:
        s = nnstep.Session(sc)
        s.goto(1, s.M)
        for op in s.ops:
            rec = s.record_at(1, op.index)
            for t in [op.formula_text] + [v.numbers for v in views(op.formula, rec.inputs, rec.outputs, step=1)]:
                assert "{" not in t and "}" not in t, (sc.name, op.name, t)
                assert not self_defined.search(t), (sc.name, op.name, t)
                seen += 1
    assert seen > 500
    tiny = by_name(Plan(nnstep.load_scenario(os.path.join(root, "scenarios", "tiny-lm.toml"))))
    assert "embed.weight[r, :] with r = input[…]" in tiny["forward embed"].formula_text
    assert "split into h heads of d values each" in tiny["forward attn qkv"].formula_text
    soft = tiny["forward attn softmax"].formula_text
    assert "−∞" not in soft and "over the keys j ≤ i" in soft and "exactly 0 where key j > query i" in soft
    assert "attn.scores is taken before the mask and stays finite" in soft
