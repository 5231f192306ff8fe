"""The program of a step (docs/commands.md op names and tensor names), shape inference through conv stacks,
torch's default initializations, whole-network gradients and float32 runs."""
import glob
import math
import os
import re

import numpy as np
import pytest

from enginehelp import run_step, assert_grad_close, central_diff
from nnstep import ScenarioError, loads_scenario
from nnstep.engine.program import Program
from nnstep.engine.runner import Detector

CONV_NET = """
[scenario]
seed = 3
[data]
x = { random = "normal", shape = [4, 2, 9, 8] }
y = { random = "integers", low = 0, high = 3, shape = [4] }
[[layers]]
type = "conv2d"
out_channels = 3
kernel_size = 3
stride = 2
padding = 1
[[layers]]
type = "batchnorm"
[[layers]]
type = "relu"
[[layers]]
type = "flatten"
[[layers]]
type = "linear"
out = 3
[loss]
type = "cross_entropy"
[optimizer]
type = "sgd"
lr = 0.1
momentum = 0.9
"""


def test_op_list_of_conv_batchnorm_relu_flatten_linear():
    """docs/commands.md: forward every layer in order, loss, backward loss, backward every layer in reverse,
    update every parameter in layer order."""
    prog = Program(loads_scenario(CONV_NET))
    assert [op.name for op in prog.ops] == [
        "forward conv2d1", "forward batchnorm1", "forward relu1", "forward flatten1", "forward linear1",
        "loss",
        "backward loss", "backward linear1", "backward flatten1", "backward relu1", "backward batchnorm1",
        "backward conv2d1",
        "update conv2d1.weight", "update conv2d1.bias", "update batchnorm1.weight", "update batchnorm1.bias",
        "update linear1.weight", "update linear1.bias"]
    assert [op.stage for op in prog.ops] == ["forward"] * 5 + ["loss"] + ["backward"] * 6 + ["update"] * 6
    assert [op.index for op in prog.ops] == list(range(18))
    assert [op.layer for op in prog.ops] == [
        "conv2d1", "batchnorm1", "relu1", "flatten1", "linear1", None, None, "linear1", "flatten1", "relu1",
        "batchnorm1", "conv2d1", "conv2d1", "conv2d1", "batchnorm1", "batchnorm1", "linear1", "linear1"]


def test_tensor_names_read_and_written():
    prog = Program(loads_scenario(CONV_NET))
    io = {op.name: (op.inputs, op.outputs) for op in prog.ops}
    assert io["forward conv2d1"] == (("input", "conv2d1.weight", "conv2d1.bias"), ("conv2d1.out",))
    ins, outs = io["forward batchnorm1"]
    assert ins[:3] == ("conv2d1.out", "batchnorm1.weight", "batchnorm1.bias")
    assert outs[0] == "batchnorm1.out"
    assert {"batchnorm1.running_mean", "batchnorm1.running_var"} <= set(outs)
    assert io["forward relu1"] == (("batchnorm1.out",), ("relu1.out",))
    assert io["forward linear1"] == (("flatten1.out", "linear1.weight", "linear1.bias"), ("linear1.out",))
    assert io["loss"] == (("linear1.out", "target"), ("loss",))
    assert io["backward loss"] == (("linear1.out", "target"), ("loss.grad",))
    assert io["backward linear1"][0][0] == "linear1.grad_out"
    assert io["backward linear1"][1] == ("linear1.weight.grad", "linear1.bias.grad", "linear1.grad_in")
    assert io["backward relu1"][1] == ("relu1.local", "relu1.grad_in")      # element-wise: local too
    assert io["backward conv2d1"][1] == ("conv2d1.weight.grad", "conv2d1.bias.grad", "conv2d1.grad_in")
    ins, outs = io["update linear1.weight"]
    assert ins[:2] == ("linear1.weight", "linear1.weight.grad") and "linear1.weight.buf" in ins
    assert outs[:2] == ("linear1.weight", "linear1.weight.delta") and "linear1.weight.buf" in outs
    # the upstream gradient of a layer is the grad_in of the layer after it
    by = {op.name: op for op in prog.ops}
    assert by["backward loss"].also_writes == ("linear1.grad_out",)
    assert by["backward linear1"].also_writes == ("flatten1.grad_out",)
    assert by["backward conv2d1"].also_writes == ()


def test_step_writes_every_named_tensor_with_its_shape():
    sc = loads_scenario(CONV_NET)
    prog = Program(sc)
    env = prog.initial_env()
    run_step(prog, env, 1)
    N = 4
    shapes = {"input": (N, 2, 9, 8), "conv2d1.out": (N, 3, 5, 4), "batchnorm1.out": (N, 3, 5, 4),
              "relu1.out": (N, 3, 5, 4), "relu1.local": (N, 3, 5, 4), "flatten1.out": (N, 60),
              "linear1.out": (N, 3), "loss": (), "loss.grad": (N, 3), "linear1.grad_out": (N, 3),
              "linear1.grad_in": (N, 60), "flatten1.grad_in": (N, 3, 5, 4), "conv2d1.grad_in": (N, 2, 9, 8),
              "conv2d1.weight": (3, 2, 3, 3), "conv2d1.weight.grad": (3, 2, 3, 3), "conv2d1.weight.delta": (3, 2, 3, 3),
              "batchnorm1.running_var": (3,), "linear1.weight": (3, 60), "linear1.bias.buf": (3,)}
    for name, shape in shapes.items():
        assert env[name].shape == shape, name
    assert env["loss.grad"] is env["linear1.grad_out"]        # one value, two names
    assert env["linear1.grad_in"] is env["flatten1.grad_out"]


# --- shape inference ----------------------------------------------------------------------------
def _net(layers, x_shape, loss="mse", y_shape=None):
    y = f'y = {{ random = "normal", shape = {list(y_shape)} }}' if y_shape else \
        f'y = {{ random = "integers", low = 0, high = 2, shape = [{x_shape[0]}] }}'
    body = "\n".join("[[layers]]\n" + "\n".join(f"{k} = {v}" for k, v in L.items()) for L in layers)
    return f"""
[data]
x = {{ random = "normal", shape = {list(x_shape)} }}
{y}
{body}
[loss]
type = "{loss}"
"""


def test_shapes_through_a_conv_stack_with_stride_and_padding():
    """conv2d: out = ⌊(in + 2p − k)/s⌋ + 1 per spatial dim (torch.nn.Conv2d docs).
    [2, 3, 11, 10] → conv2d(4, k 3, s 2, p 1): ⌊(11+2−3)/2⌋+1 = 6, ⌊(10+2−3)/2⌋+1 = 5 → [4, 6, 5]
    → conv2d(5, k [2, 3], s [1, 2], p 0): 6−2+1 = 5, ⌊(5−3)/2⌋+1 = 2 → [5, 5, 2] → flatten → [50]
    → linear 7 → [7]."""
    sc = loads_scenario(_net([
        {"type": '"conv2d"', "out_channels": 4, "kernel_size": 3, "stride": 2, "padding": 1},
        {"type": '"conv2d"', "out_channels": 5, "kernel_size": "[2, 3]", "stride": "[1, 2]"},
        {"type": '"flatten"'}, {"type": '"linear"', "out": 7}], (2, 3, 11, 10), y_shape=(2, 7)))
    assert [(L.in_shape, L.out_shape) for L in sc.layers] == [
        ((3, 11, 10), (4, 6, 5)), ((4, 6, 5), (5, 5, 2)), ((5, 5, 2), (50,)), ((50,), (7,))]
    assert sc.initial["conv2d1.weight"].shape == (4, 3, 3, 3)
    assert sc.initial["conv2d2.weight"].shape == (5, 4, 2, 3)
    assert sc.initial["linear1.weight"].shape == (7, 50)


def test_conv1d_shapes():
    """[3, 2, 10] → conv1d(4, k 3, s 3, p 2): ⌊(10+4−3)/3⌋+1 = 4 → [4, 4]; → conv1d(1, k 4) → [1, 1]."""
    sc = loads_scenario(_net([
        {"type": '"conv1d"', "out_channels": 4, "kernel_size": 3, "stride": 3, "padding": 2},
        {"type": '"conv1d"', "out_channels": 1, "kernel_size": 4}], (3, 2, 10), y_shape=(3, 1, 1)))
    assert [L.out_shape for L in sc.layers] == [(4, 4), (1, 1)]


def test_in_given_and_inferred():
    given = loads_scenario(_net([{"type": '"linear"', "in": 5, "out": 3}, {"type": '"relu"'},
                                 {"type": '"linear"', "in": 3, "out": 2}], (4, 5), y_shape=(4, 2)))
    inferred = loads_scenario(_net([{"type": '"linear"', "out": 3}, {"type": '"relu"'},
                                    {"type": '"linear"', "out": 2}], (4, 5), y_shape=(4, 2)))
    assert [L.in_shape for L in given.layers] == [L.in_shape for L in inferred.layers] == [(5,), (3,), (3,)]
    conv = loads_scenario(_net([{"type": '"conv1d"', "in": 2, "out_channels": 3, "kernel_size": 2}],
                               (4, 2, 6), y_shape=(4, 3, 5)))
    assert conv.initial["conv1d1.weight"].shape == (3, 2, 2)
    with pytest.raises(ScenarioError, match=r"layers\[2\]\.in: is 4 but"):
        loads_scenario(_net([{"type": '"linear"', "out": 3}, {"type": '"relu"'},
                             {"type": '"linear"', "in": 4, "out": 2}], (4, 5), y_shape=(4, 2)))


def test_kernel_larger_than_padded_input_is_bad_input():
    with pytest.raises(ScenarioError, match=r"layers\[0\]"):
        loads_scenario(_net([{"type": '"conv1d"', "out_channels": 1, "kernel_size": 5, "padding": 1}],
                            (2, 1, 2), y_shape=(2, 1, 1)))


# --- initialization -----------------------------------------------------------------------------
def _init_net(init="", seed=0, fan_in=200, conv=False):
    layers = ([{"type": '"conv2d"', "out_channels": 64, "kernel_size": 3, **({"init": init} if init else {})},
               {"type": '"flatten"'}] if conv else []) + \
             [{"type": '"linear"', "out": 300, **({"init": init} if init else {})}]
    x_shape = (2, 8, 5, 5) if conv else (2, fan_in)
    return loads_scenario(f"[scenario]\nseed = {seed}\n" + _net(layers, x_shape, y_shape=(2, 300)))


def test_kaiming_uniform_default_bounds_linear():
    """torch.nn.Linear.reset_parameters: kaiming_uniform_(a=√5) gives bound gain·√(3/fan_in) with
    gain = √(2/(1+5)), i.e. exactly 1/√fan_in; the bias is U(−1/√fan_in, 1/√fan_in) too.
    fan_in = 200: bound = 0.0707107. A uniform U(−b, b) has std b/√3."""
    sc = _init_net()
    b = 1 / math.sqrt(200)
    W, bias = sc.initial["linear1.weight"], sc.initial["linear1.bias"]
    assert W.shape == (300, 200)
    assert np.abs(W).max() <= b and np.abs(W).max() > 0.999 * b
    assert abs(W.std() - b / math.sqrt(3)) < 0.01 * b
    assert abs(W.mean()) < 0.01 * b
    assert np.abs(bias).max() <= b and np.abs(bias).max() > 0.95 * b


def test_kaiming_uniform_default_bounds_conv():
    """Conv fan_in = in_channels · kernel elements = 8·3·3 = 72: bound 1/√72 = 0.11785 for the weight
    and the bias. The linear after it has fan_in 64·3·3 = 576: bound 1/24."""
    sc = _init_net(conv=True)
    b = 1 / math.sqrt(72)
    W, bias = sc.initial["conv2d1.weight"], sc.initial["conv2d1.bias"]
    assert W.shape == (64, 8, 3, 3)
    assert np.abs(W).max() <= b and np.abs(W).max() > 0.999 * b
    assert abs(W.std() - b / math.sqrt(3)) < 0.02 * b
    assert np.abs(bias).max() <= b and np.abs(bias).max() > 0.8 * b
    assert np.abs(sc.initial["linear1.weight"]).max() <= 1 / 24


def test_seeded_reproducibility():
    a, b, c = _init_net(seed=1), _init_net(seed=1), _init_net(seed=2)
    for k in a.initial:
        assert np.array_equal(a.initial[k], b.initial[k])
        assert not np.array_equal(a.initial[k], c.initial[k])
    assert np.array_equal(a.x, b.x) and not np.array_equal(a.x, c.x)


@pytest.mark.parametrize("init,kind,scale", [
    ("kaiming_normal", "normal", math.sqrt(2 / 200)),          # std √(2/fan_in)
    ("xavier_uniform", "uniform", math.sqrt(6 / (200 + 300))), # bound √(6/(fan_in + fan_out))
    ("xavier_normal", "normal", math.sqrt(2 / (200 + 300))),   # std √(2/(fan_in + fan_out))
])
def test_other_inits_have_the_right_spread(init, kind, scale):
    W = _init_net(f'"{init}"').initial["linear1.weight"]
    if kind == "normal":
        assert abs(W.std() - scale) < 0.02 * scale
        assert np.abs(W).max() > 3 * scale                       # tails: not a uniform
    else:
        assert np.abs(W).max() <= scale and np.abs(W).max() > 0.999 * scale
        assert abs(W.std() - scale / math.sqrt(3)) < 0.02 * scale


def test_zeros_init_and_norm_layer_defaults():
    sc = loads_scenario(_net([{"type": '"linear"', "out": 4, "init": '"zeros"'}, {"type": '"batchnorm"'},
                              {"type": '"layernorm"'}], (3, 5), y_shape=(3, 4)))
    assert not sc.initial["linear1.weight"].any()
    assert (sc.initial["batchnorm1.weight"] == 1).all() and not sc.initial["batchnorm1.bias"].any()
    assert (sc.initial["layernorm1.weight"] == 1).all() and not sc.initial["layernorm1.bias"].any()


# --- the whole network against central differences -----------------------------------------------
NETS = {
    "conv-bn-relu-flatten-linear-ce": CONV_NET,
    "mlp-ln-gelu-softmax-mse": _net([{"type": '"linear"', "out": 5}, {"type": '"layernorm"'},
                                     {"type": '"gelu"'}, {"type": '"linear"', "out": 3},
                                     {"type": '"softmax"'}], (4, 3), y_shape=(4, 3)),
    "conv1d-bn-tanh-leaky-bce_logits": _net([{"type": '"conv1d"', "out_channels": 2, "kernel_size": 2,
                                              "stride": 2, "padding": 1}, {"type": '"batchnorm"'},
                                             {"type": '"tanh"'}, {"type": '"flatten"'},
                                             {"type": '"linear"', "out": 2}, {"type": '"leaky_relu"'}],
                                            (3, 2, 5), loss="bce_with_logits", y_shape=(3, 2)).replace(
        'random = "normal", shape = [3, 2] }', 'random = "uniform", shape = [3, 2] }'),
}


@pytest.mark.parametrize("name", list(NETS))
def test_whole_network_gradients_including_the_input(name):
    """Every parameter's gradient and dLoss/d(input) (the first layer's grad_in) against central
    differences of the loss through the program's own forward pass."""
    sc = loads_scenario(NETS[name])
    prog = Program(sc)
    env = prog.initial_env()
    run_step(prog, env, 1)
    first = sc.layers[0].name
    params = {p: np.array(sc.initial[p]) for p in sc.param_names}
    x = np.array(sc.x)

    def loss():
        e = prog.initial_env()
        e.update(params)
        e["input"], e["target"] = x, sc.y
        with np.errstate(all="ignore"):
            for op, fn in zip(prog.ops, prog.fns):
                if op.stage == "backward":
                    break
                fn(e, 1)
        return float(e["loss"])

    names = list(params)
    numeric = central_diff(loss, [x] + [params[p] for p in names])
    assert_grad_close(env[f"{first}.grad_in"], numeric[0], what="grad_in")
    for p, num in zip(names, numeric[1:]):
        assert_grad_close(env[f"{p}.grad"], num, what=p)


# --- float32 ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(NETS))
def test_float32_runs_stay_float32_and_agree_with_float64(name):
    """The same scenario in float32: every tensor is float32 (nothing silently upcast) and, over
    3 steps, losses and parameters agree with the float64 run to ~1e-5."""
    text = NETS[name].replace("[data]", "[train]\nsteps = 3\n[data]")
    text = text.replace("[scenario]\n", "[scenario]\ndtype = \"float32\"\n") if "[scenario]" in text else \
        "[scenario]\ndtype = \"float32\"\n" + text
    s32 = loads_scenario(text)
    s64 = loads_scenario(text.replace('dtype = "float32"', 'dtype = "float64"'))
    p32, p64 = Program(s32), Program(s64)
    e32, e64 = p32.initial_env(), p64.initial_env()
    for k in (1, 2, 3):
        # no NaN/Inf anywhere (a detector stops at the first): each run_step returns None only then
        assert run_step(p32, e32, k, Detector(p32.ops, [])) is None
        assert run_step(p64, e64, k, Detector(p64.ops, [])) is None
        for t, v in e32.items():
            if isinstance(v, np.ndarray) and v.dtype.kind == "f":
                assert v.dtype == np.float32, t
        assert float(e32["loss"]) == pytest.approx(float(e64["loss"]), rel=2e-5, abs=1e-6)
        for p in s64.param_names:
            np.testing.assert_allclose(e32[p], e64[p], rtol=1e-4, atol=2e-5, err_msg=p)


# --- what `run` skips -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(NETS))
def test_run_skips_only_what_it_never_reads(name):
    """`nnstep run` builds its Program with skip = the first layer's grad_in and every delta
    (headless.run_skip). Everything else, losses, gradients, parameters, optimizer state, is
    bit-for-bit what the full program computes, over several steps."""
    from nnstep.headless import run_skip

    text = NETS[name]
    if "momentum" not in text:
        text += '[optimizer]\ntype = "sgd"\nmomentum = 0.5\n'
    sc = loads_scenario(text)
    skip = run_skip(sc)
    assert skip == {f"{sc.layers[0].name}.grad_in"} | {f"{p}.delta" for p in sc.trainable}
    full, lean = Program(sc), Program(sc, skip=skip)
    assert [(o.name, o.inputs, o.outputs) for o in full.ops] == [(o.name, o.inputs, o.outputs) for o in lean.ops]
    ef, el = full.initial_env(), lean.initial_env()
    for k in (1, 2, 3):
        run_step(full, ef, k)
        run_step(lean, el, k)
        assert set(ef) - set(el) == skip
        for t, v in el.items():
            assert np.array_equal(v, ef[t]), t


def test_run_computes_a_skipped_tensor_a_breakpoint_reads():
    from nnstep.headless import run_skip

    sc = loads_scenario(CONV_NET + '[[breakpoints]]\nwhen = "conv2d1.grad_in absmax > 1e9"\n')
    assert "conv2d1.grad_in" not in run_skip(sc)
    assert "conv2d1.grad_in" in run_skip(sc, honor_breakpoints=False)


# --- batches ------------------------------------------------------------------------------------
def _batches(shuffle, steps=7):
    sc = loads_scenario(f"""
[scenario]
seed = 9
[data]
x = {[[float(i)] for i in range(10)]}
y = {[[float(i)] for i in range(10)]}
[[layers]]
type = "linear"
out = 1
[loss]
type = "mse"
[train]
steps = {steps}
batch_size = 4
shuffle = {"true" if shuffle else "false"}
""")
    prog = Program(sc)
    env = prog.initial_env()
    out = []
    for k in range(1, steps + 1):
        prog.feed(env, k)
        out.append(env["input"][:, 0].astype(int).tolist())
    return out


def test_batches_in_order():
    """N = 10, batch_size 4: B = ceil(10/4) = 3 batches; step k takes batch (k − 1) mod 3, the last
    one smaller."""
    assert _batches(False) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9], [0, 1, 2, 3], [4, 5, 6, 7], [8, 9], [0, 1, 2, 3]]


def test_shuffled_batches_cover_every_sample_once_per_pass():
    b = _batches(True, steps=9)
    assert [len(x) for x in b] == [4, 4, 2] * 3
    passes = [sorted(b[i] + b[i + 1] + b[i + 2]) for i in (0, 3, 6)]
    assert passes == [list(range(10))] * 3
    assert b[0:3] != b[3:6]                                   # re-drawn each pass
    assert _batches(True, steps=9) == b                       # from the seed: reproducible


def test_bias_false():
    text = _net([{"type": '"conv1d"', "out_channels": 2, "kernel_size": 2, "bias": "false"}, {"type": '"flatten"'},
                 {"type": '"linear"', "out": 2, "bias": "false"}], (3, 1, 4), y_shape=(3, 2))
    sc = loads_scenario(text)
    assert sc.param_names == ["conv1d1.weight", "linear1.weight"]
    prog = Program(sc)
    assert [op.name for op in prog.ops if op.stage == "update"] == ["update conv1d1.weight", "update linear1.weight"]
    assert prog.ops[0].inputs == ("input", "conv1d1.weight")
    env = prog.initial_env()
    run_step(prog, env, 1)
    params = {p: np.array(sc.initial[p]) for p in sc.param_names}

    def loss():
        return prog.forward_loss(params)

    num = central_diff(loss, [params["conv1d1.weight"], params["linear1.weight"]])
    assert_grad_close(env["conv1d1.weight.grad"], num[0])
    assert_grad_close(env["linear1.weight.grad"], num[1])
    assert "conv1d1.bias.grad" not in env


SHIPPED = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "..", "scenarios", "*.toml")) +
                 glob.glob(os.path.join(os.path.dirname(__file__), "..", "..", "scenarios", "*", "*.toml")))


@pytest.mark.parametrize("path", SHIPPED, ids=[os.path.basename(p) for p in SHIPPED])
def test_shipped_scenarios_in_float32_agree_with_float64(path):
    """Every shipped scenario, switched to float32, over its first (up to) 5 steps: every tensor
    stays float32, and loss and parameters agree with float64 to 1e-5 relative (measured: ≤ 4e-7)."""
    text = open(path).read()
    if re.search(r'^dtype\s*=\s*"float64"', text, flags=re.M):
        t32 = re.sub(r'^dtype\s*=\s*"float64"', 'dtype = "float32"', text, flags=re.M)
    elif re.search(r"^\[scenario\]", text, flags=re.M):
        t32 = re.sub(r"^\[scenario\]\s*$", '[scenario]\ndtype = "float32"', text, count=1, flags=re.M)
    else:
        t32 = '[scenario]\ndtype = "float32"\n' + text
    base = os.path.dirname(path)
    s32, s64 = loads_scenario(t32, base_dir=base), loads_scenario(text, base_dir=base)
    assert s32.dtype == "float32" and s64.dtype == "float64"
    p32, p64 = Program(s32), Program(s64)
    e32, e64 = p32.initial_env(), p64.initial_env()
    for k in range(1, min(5, s64.train.steps) + 1):
        if run_step(p64, e64, k, Detector(p64.ops, [])) is not None:   # a lesson that blows up on purpose
            break
        assert run_step(p32, e32, k, Detector(p32.ops, [])) is None
        assert float(e32["loss"]) == pytest.approx(float(e64["loss"]), rel=1e-5, abs=1e-7)
        for p in s64.param_names:
            assert e32[p].dtype == np.float32
            np.testing.assert_allclose(e32[p], e64[p], rtol=1e-5, atol=1e-6 * (1 + np.abs(e64[p]).max()), err_msg=p)


def test_formulas_leave_out_parameters_a_layer_does_not_have():
    """bias = false and affine = false: no `bias` term, no `.bias.grad` clause, no gamma factor."""
    sc = loads_scenario(CONV_NET.replace('type = "batchnorm"', 'type = "batchnorm"\naffine = false')
                        .replace("out = 3\n[loss]", "out = 3\nbias = false\n[loss]")
                        .replace("padding = 1", "padding = 1\nbias = false"))
    formulas = {op.name: op.formula_text for op in Program(sc).ops}
    for name in ("forward conv2d1", "backward conv2d1", "forward linear1", "backward linear1",
                 "forward batchnorm1", "backward batchnorm1"):
        assert ".bias" not in formulas[name], formulas[name]
        assert "batchnorm1.weight" not in formulas[name], formulas[name]
    assert formulas["forward linear1"] == "linear1.out = flatten1.out @ linear1.weightᵀ"
    full = {op.name: op.formula_text for op in Program(loads_scenario(CONV_NET)).ops}
    assert "linear1.bias.grad = Σₙ linear1.grad_out" in full["backward linear1"]


def test_adam_state_starts_at_zeros_as_torch():
    """torch.optim.Adam's exp_avg/exp_avg_sq start as zeros; nnstep holds them from step 0, so the
    first update reads m = v = 0 and writes m = 0.1·g, v = 0.001·g² (for the default betas)."""
    sc = loads_scenario(CONV_NET.replace('type = "sgd"\nlr = 0.1\nmomentum = 0.9', 'type = "adam"\nlr = 0.1'))
    prog = Program(sc)
    env = prog.initial_env()
    assert np.array_equal(env["linear1.weight.m"], np.zeros_like(env["linear1.weight"]))
    assert np.array_equal(env["linear1.weight.v"], np.zeros_like(env["linear1.weight"]))
    run_step(prog, env, 1)
    g = env["linear1.weight.grad"]
    np.testing.assert_array_equal(env["linear1.weight.m"], (1 - 0.9) * g)
    np.testing.assert_allclose(env["linear1.weight.v"], (1 - 0.999) * g * g, rtol=1e-15)


def test_a_left_out_delta_is_computed_where_it_could_be_born_inf():
    """`run` and a long continue leave the parameters' deltas out, but where ``new - old`` could
    overflow (or meets a NaN) it is written all the same, so the NaN/Inf check sees what full
    stepping sees; otherwise it is absent, never a stale value. Here lr = 1e300 makes the update
    of a weight of 1e300 Inf at step 1 (derivation: ŷ = 1e300·1, g = 2(ŷ - 0)·1 = 2e300, lr·g = Inf)."""
    from nnstep.engine.program import _diff_may_overflow
    from nnstep.headless import run_skip

    big = np.finfo(np.float64).max
    assert not _diff_may_overflow(np.ones(3), np.zeros(3), [None, 0.0], big / 2)
    assert _diff_may_overflow(np.array([0.6 * big]), np.array([-0.6 * big]), [None, 0.0], big / 2)
    assert _diff_may_overflow(np.array([np.nan, 1.0]), np.zeros(2), [None, 0.0], big / 2)
    assert _diff_may_overflow(np.array([np.inf]), np.zeros(1), [None, 0.0], big / 2)
    seen = [None, 0.0]
    w1 = np.array([0.3 * big])
    assert not _diff_may_overflow(w1, np.zeros(1), seen, big / 2) and seen[0] is w1
    assert _diff_may_overflow(np.array([-0.3 * big]), w1, seen, big / 2)    # old's bound taken from seen

    text = ('[data]\nx = [[1.0]]\ny = [[0.0]]\n[[layers]]\ntype = "linear"\nout = 1\nbias = false\n'
            'weight = [[1e300]]\n[loss]\ntype = "mse"\n[optimizer]\ntype = "sgd"\nlr = 1e300\n[train]\nsteps = 2\n')
    sc = loads_scenario(text)
    full, lean = Program(sc), Program(sc, skip=run_skip(sc))
    ef, el = full.initial_env(), lean.initial_env()
    run_step(full, ef, 1)
    run_step(lean, el, 1)
    assert np.isinf(el["linear1.weight.delta"]).all() and np.array_equal(el["linear1.weight.delta"], ef["linear1.weight.delta"])

    calm = text.replace("1e300", "0.5")
    sc = loads_scenario(calm)
    lean = Program(sc, skip=run_skip(sc))
    el = lean.initial_env()
    el["linear1.weight.delta"] = np.array([[123.0]])               # a stale value is removed
    run_step(lean, el, 1)
    assert "linear1.weight.delta" not in el


def test_attention_in_proj_weight_has_torchs_xavier_bound():
    """nn.MultiheadAttention draws in_proj_weight, shape (3E, E), with xavier_uniform_: torch's fans
    of a (3E, E) weight are fan_in = E, fan_out = 3E, so the bound is √(6/(E + 3E)) = √(6/4E)
    (not √(6/2E)); out_proj_weight is its Linear(E, E)'s kaiming_uniform, bound 1/√E."""
    E = 16
    sc = loads_scenario(f'[scenario]\nseed = 3\n[data]\nx = {{ random = "normal", shape = [2, 3, {E}] }}\n'
                        f'y = {{ random = "normal", shape = [2, 3, {E}] }}\n[[layers]]\ntype = "attention"\n'
                        'heads = 2\n[loss]\ntype = "mse"\n')
    W, Wo = sc.initial["attention1.in_proj_weight"], sc.initial["attention1.out_proj_weight"]
    bound = math.sqrt(6 / (4 * E))
    assert W.shape == (3 * E, E) and bound * 0.99 < np.abs(W).max() <= bound
    assert abs(W.std() - bound / math.sqrt(3)) < 0.05 * bound
    assert 0.99 / math.sqrt(E) < np.abs(Wo).max() <= 1 / math.sqrt(E)
    torch = pytest.importorskip("torch")
    mha = torch.nn.MultiheadAttention(E, 2, batch_first=True)
    fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(mha.in_proj_weight)
    assert (fan_in, fan_out) == (E, 3 * E) and math.sqrt(6 / (fan_in + fan_out)) == bound
    assert float(mha.in_proj_weight.detach().abs().max()) <= bound   # torch's own draw within that bound
