"""Pooling, dropout, log_softmax and the nll loss (docs/scenario-format.md).

Forwards against element-by-element references written from the torch.nn documentation:
- MaxPool2d: out(N, C, h, w) = max over m < kH, n < kW of input(N, C, stride[0]·h + m, stride[1]·w + n),
  the input "implicitly padded with negative infinity" on both sides by `padding`; with
  return_indices, the index of that maximum in the flattened input plane (h·W + w). torch's CPU kernel
  scans the window row by row and replaces the maximum only when `val > maxval || isnan(val)`: a tie
  keeps the first, and the gradient goes to it.
- AvgPool2d: out(N, C, h, w) = 1/(kH·kW) · Σ input(N, C, stride[0]·h + m, stride[1]·w + n), zero
  padding that counts in the divisor (count_include_pad = True).
- 1d: the same with one spatial dimension. Output size ⌊(L + 2·padding − kernel) / stride⌋ + 1.
- LogSoftmax(x)_i = log(exp(x_i) / Σ_j exp(x_j)).
- NLLLoss: ℓ_n = −x[n, y_n]; mean divides by the number of targets, sum adds them.
- Dropout: zeroes each element with probability p and scales the rest by 1/(1 − p).

Backward against float64 central differences on every input, and, through whole scenarios, on every
tensor of the step.
"""
import math

import numpy as np
import pytest

from enginehelp import assert_grad_close, central_diff, loss, loss_backward, loss_forward, make_layer, rng

import nnstep
from nnstep import loads_scenario
from nnstep.engine.program import Program, layer_rng
from nnstep.model.scenario import LossSpec

N = 2


def _tup(v, nd):
    return tuple(v) if isinstance(v, (list, tuple)) else (v,) * nd


def pool_ref(x, kind, k, s, p):
    """The documented formulas as loops over 2-d inputs (a 1-d input is given as H = 1)."""
    n_, c_, H, W = x.shape
    oh = (H + 2 * p[0] - k[0]) // s[0] + 1
    ow = (W + 2 * p[1] - k[1]) // s[1] + 1
    out = np.zeros((n_, c_, oh, ow))
    arg = np.zeros((n_, c_, oh, ow), dtype=np.int64)
    for n in range(n_):
        for c in range(c_):
            for i in range(oh):
                for j in range(ow):
                    best, where, acc = -math.inf, -1, 0.0
                    for u in range(k[0]):
                        for v in range(k[1]):
                            r, q = s[0] * i + u - p[0], s[1] * j + v - p[1]
                            inside = 0 <= r < H and 0 <= q < W
                            val = x[n, c, r, q] if inside else (-math.inf if kind == "max" else 0.0)
                            acc += val if kind == "avg" else 0.0
                            if kind == "max" and (val > best or math.isnan(val)):
                                best, where = val, r * W + q
                    out[n, c, i, j] = best if kind == "max" else acc / (k[0] * k[1])
                    arg[n, c, i, j] = where
    return out, arg


POOLS = [
    ("maxpool1d", (2, 7), {"kernel_size": 2}),                              # stride = kernel, one left over
    ("maxpool1d", (2, 8), {"kernel_size": 3, "stride": 2, "padding": 1}),
    ("maxpool1d", (1, 9), {"kernel_size": 3, "stride": 1}),                 # overlapping windows
    ("maxpool1d", (1, 8), {"kernel_size": 2, "stride": 3}),                 # inputs no window covers
    ("avgpool1d", (2, 7), {"kernel_size": 2}),
    ("avgpool1d", (2, 8), {"kernel_size": 3, "stride": 2, "padding": 1}),
    ("avgpool1d", (1, 9), {"kernel_size": 4, "stride": 1, "padding": 2}),
    ("maxpool2d", (2, 4, 4), {"kernel_size": 2}),
    ("maxpool2d", (1, 5, 7), {"kernel_size": [3, 2], "stride": [2, 1], "padding": [1, 1]}),
    ("maxpool2d", (2, 5, 5), {"kernel_size": 3, "stride": 1, "padding": 1}),
    ("maxpool2d", (1, 7, 6), {"kernel_size": 2, "stride": 3}),
    ("avgpool2d", (2, 4, 4), {"kernel_size": 2}),
    ("avgpool2d", (1, 5, 7), {"kernel_size": [3, 2], "stride": [2, 1], "padding": [1, 1]}),
    ("avgpool2d", (2, 5, 5), {"kernel_size": 3, "stride": 1, "padding": 1}),
]


def _ids(c):
    return f"{c[0]}-{list(c[1])}-" + ",".join(f"{k}={v}" for k, v in c[2].items())


def _pool(case, seed=0):
    type_, in_shape, opts = case
    L = make_layer(type_, in_shape, **opts)
    x = rng(seed).standard_normal((N,) + tuple(in_shape))
    return L, x


@pytest.mark.parametrize("case", POOLS, ids=_ids)
def test_pool_forward_matches_the_documented_loops(case):
    type_, in_shape, opts = case
    L, x = _pool(case)
    out, extras, _ = L.forward(x, {})
    nd = 1 if type_.endswith("1d") else 2
    k, p = _tup(opts["kernel_size"], nd), _tup(opts.get("padding", 0), nd)
    s = _tup(opts.get("stride", opts["kernel_size"]), nd)
    kind = type_[:3]
    if nd == 1:
        ref, arg = pool_ref(x[:, :, None, :], kind, (1,) + k, (1,) + s, (0,) + p)
        ref, arg = ref[:, :, 0, :], arg[:, :, 0, :]
    else:
        ref, arg = pool_ref(x, kind, k, s, p)
    assert out.shape == (N,) + L.out_shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-14, atol=1e-15)
    if kind == "max":
        assert extras["argmax"].dtype == np.int64
        np.testing.assert_array_equal(extras["argmax"], arg)
    else:
        assert extras == {}


@pytest.mark.parametrize("case", POOLS, ids=_ids)
def test_pool_backward_matches_central_differences(case):
    """Random normal inputs have no ties, so max pooling is differentiable at them."""
    L, x = _pool(case, seed=1)
    R = rng(2).standard_normal((N,) + L.out_shape)
    out, extras, _ = L.forward(x, {})
    gin, grads, local = L.backward(R, x, out, {}, extras)
    assert grads == {} and local is None
    num = central_diff(lambda: float(np.sum(R * L.forward(x, {})[0])), [x])[0]
    assert_grad_close(gin, num, rtol=1e-7, atol=1e-9, what="grad_in")


def test_maxpool_ties_route_the_gradient_to_the_first_maximum():
    """A 1x4x4 input, kernel 2: window (0, 0) = [[3, 3], [1, 3]] holds three equal maxima; torch
    keeps the first in row-major order, input (0, 0), flat index 0, and sends it the whole
    gradient. Window (1, 1) = [[5, 5], [5, 5]] sends its gradient to (2, 2), flat index 10."""
    x = np.array([[[[3.0, 3, 0, 1], [1, 3, 2, 0], [0, 0, 5, 5], [0, 0, 5, 5]]]])
    L = make_layer("maxpool2d", (1, 4, 4), kernel_size=2)
    out, ex, _ = L.forward(x, {})
    assert out.tolist() == [[[[3.0, 2.0], [0.0, 5.0]]]]
    # window (1, 0) = [[0, 0], [0, 0]]: the first, (2, 0) = flat 8
    assert ex["argmax"].tolist() == [[[[0, 6], [8, 10]]]]
    g = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    gin = L.backward(g, x, out, {}, ex)[0]
    want = np.zeros((1, 1, 4, 4))
    want[0, 0, 0, 0], want[0, 0, 1, 2], want[0, 0, 2, 0], want[0, 0, 2, 2] = 1, 2, 3, 4
    np.testing.assert_array_equal(gin, want)


def test_maxpool_overlapping_windows_add_at_a_shared_winner():
    """x = [0, 5, 1, 2], kernel 2, stride 1: windows [0, 5], [5, 1], [1, 2] give [5, 5, 2]; x1 wins
    the first two and gets g0 + g1 = 1 + 10, x3 gets g2 = 100."""
    L = make_layer("maxpool1d", (1, 4), kernel_size=2, stride=1)
    x = np.array([[[0.0, 5, 1, 2]]])
    out, ex, _ = L.forward(x, {})
    assert out.tolist() == [[[5.0, 5.0, 2.0]]] and ex["argmax"].tolist() == [[[1, 1, 3]]]
    gin = L.backward(np.array([[[1.0, 10, 100]]]), x, out, {}, ex)[0]
    assert gin.tolist() == [[[0.0, 11.0, 0.0, 100.0]]]


def test_maxpool_padding_is_minus_infinity_and_avgpool_padding_counts():
    """x = [−1, −2], kernel 2, padding 1, stride 2: windows [pad, −1], [−2, pad]. Max pooling pads
    with −∞, so the maxima are −1 and −2 (zero padding would give 0); average pooling divides by 2
    including the pad: [−0.5, −1]."""
    x = np.array([[[-1.0, -2.0]]])
    mx = make_layer("maxpool1d", (1, 2), kernel_size=2, stride=2, padding=1)
    av = make_layer("avgpool1d", (1, 2), kernel_size=2, stride=2, padding=1)
    out, ex, _ = mx.forward(x, {})
    assert out.tolist() == [[[-1.0, -2.0]]] and ex["argmax"].tolist() == [[[0, 1]]]
    assert av.forward(x, {})[0].tolist() == [[[-0.5, -1.0]]]
    # avg: each input is in one window, so it gets 1/2 of that window's gradient
    assert av.backward(np.array([[[4.0, 6.0]]]), x, None, {}, {})[0].tolist() == [[[2.0, 3.0]]]


def test_maxpool_nan_wins_its_window_as_torch():
    L = make_layer("maxpool1d", (1, 4), kernel_size=4)
    out, ex, _ = L.forward(np.array([[[1.0, np.nan, 7.0, np.nan]]]), {})
    assert np.isnan(out[0, 0, 0]) and ex["argmax"].tolist() == [[[3]]]        # the last NaN, as torch


@pytest.mark.parametrize("typ", ["maxpool2d", "avgpool2d"])
def test_pool_stride_defaults_to_the_kernel(typ):
    a = make_layer(typ, (1, 6, 6), kernel_size=3)
    b = make_layer(typ, (1, 6, 6), kernel_size=3, stride=3)
    assert a.out_shape == b.out_shape == (1, 2, 2)
    x = rng(4).standard_normal((1, 1, 6, 6))
    np.testing.assert_array_equal(a.forward(x, {})[0], b.forward(x, {})[0])


# --- dropout --------------------------------------------------------------------------------------
def test_dropout_mask_is_zero_or_the_scale_and_out_is_in_times_mask():
    L = make_layer("dropout", (50, 40), p=0.3)
    x = rng(5).standard_normal((4, 50, 40))
    out, ex, _ = L.forward(x, {}, rng=layer_rng(7, 3, 2))
    m = ex["mask"]
    scale = 1 / (1 - 0.3)
    assert set(np.unique(m).tolist()) == {0.0, scale}
    np.testing.assert_array_equal(out, x * m)
    # kept with probability 0.7: 8000 draws, std √(8000·0.7·0.3) ≈ 41, so 6 std ≈ 246
    kept = int((m > 0).sum())
    assert abs(kept - 0.7 * m.size) < 246, kept
    # the documented draw: numpy default_rng([seed, 4, step, layer index]), u < 1 − p kept
    u = np.random.default_rng([7, 4, 3, 2]).random(x.shape)
    np.testing.assert_array_equal(m, np.where(u < 0.7, scale, 0.0))
    g = rng(6).standard_normal(x.shape)
    gin, grads, local = L.backward(g, x, out, {}, ex)
    np.testing.assert_array_equal(gin, g * m)
    assert grads == {} and local is None


def test_dropout_backward_matches_central_differences():
    L = make_layer("dropout", (3, 4), p=0.5)
    x = rng(8).standard_normal((N, 3, 4))
    R = rng(9).standard_normal(x.shape)
    out, ex, _ = L.forward(x, {}, rng=layer_rng(0, 1, 0))
    gin = L.backward(R, x, out, {}, ex)[0]
    num = central_diff(lambda: float(np.sum(R * L.forward(x, {}, rng=layer_rng(0, 1, 0))[0])), [x])[0]
    assert_grad_close(gin, num, what="grad_in")


def test_dropout_p_zero_is_the_identity_mask():
    L = make_layer("dropout", (5,), p=0.0)
    x = rng(1).standard_normal((3, 5))
    out, ex, _ = L.forward(x, {}, rng=layer_rng(0, 1, 0))
    assert np.all(ex["mask"] == 1.0)
    np.testing.assert_array_equal(out, x)


def test_dropout_without_a_generator_is_refused():
    with pytest.raises(ValueError):
        make_layer("dropout", (5,)).forward(np.ones((1, 5)), {})


DROP = """
[scenario]
seed = 11
[data]
x = { random = "normal", shape = [4, 6] }
y = { random = "normal", shape = [4, 2] }
[[layers]]
type = "linear"
out = 6
[[layers]]
type = "dropout"
p = 0.5
[[layers]]
type = "linear"
out = 2
[loss]
type = "mse"
[optimizer]
lr = 0.1
[train]
steps = 4
batch_size = 2
"""


def test_dropout_mask_is_reproducible_through_the_session():
    """The Session shows the same mask going forward, back and forward again, after a jump, and in a
    fresh session; a different step draws a different mask; and it is the documented draw."""
    sc = loads_scenario(DROP)
    s = nnstep.Session(sc)
    fwd = s.program.plan.op_names.index("forward dropout1")
    s.goto(1, fwd + 1)
    m1 = s.value("dropout1.mask").copy()
    s.back()
    s.step()
    np.testing.assert_array_equal(s.value("dropout1.mask"), m1)
    s.goto(3, fwd + 1)
    m3 = s.value("dropout1.mask").copy()
    assert not np.array_equal(m1, m3)
    s.goto(1, fwd + 1)
    np.testing.assert_array_equal(s.value("dropout1.mask"), m1)
    s.goto(3, fwd + 1)
    np.testing.assert_array_equal(s.value("dropout1.mask"), m3)
    fresh = nnstep.Session(loads_scenario(DROP))
    fresh.goto(3, fwd + 1)
    np.testing.assert_array_equal(fresh.value("dropout1.mask"), m3)
    u = np.random.default_rng([11, 4, 3, 1]).random((2, 6))       # seed 11, step 3, layers[1]
    np.testing.assert_array_equal(m3, np.where(u < 0.5, 2.0, 0.0))
    np.testing.assert_array_equal(s.value("dropout1.out"), s.value("linear1.out") * m3)
    # another seed, another mask
    other = nnstep.Session(loads_scenario(DROP.replace("seed = 11", "seed = 12")))
    other.goto(3, fwd + 1)
    assert not np.array_equal(other.value("dropout1.mask"), m3)


def test_dropout_mask_is_the_same_in_run_and_trace():
    import json
    import os
    import subprocess
    import sys
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "drop.toml")
        open(path, "w").write(DROP)
        r = subprocess.run([sys.executable, "-m", "nnstep", "trace", path, "--json"], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        ops = json.loads(r.stdout)["ops"]
        r = subprocess.run([sys.executable, "-m", "nnstep", "run", path, "--json"], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        losses_run = [st["loss"] for st in json.loads(r.stdout)["steps"]]
    s = nnstep.Session(loads_scenario(DROP))
    for k, loss in enumerate(losses_run, 1):             # `run` (which skips what it never reports) too
        s.goto(k, s.program.stage_start["backward"])
        assert float(s.value("loss")) == loss
    for op in ops:
        if op["name"] == "forward dropout1":
            s.goto(op["step"], op["index"] + 1)
            np.testing.assert_array_equal(np.array(op["outputs"]["dropout1.mask"]), s.value("dropout1.mask"))


# --- log_softmax and nll --------------------------------------------------------------------------
def test_log_softmax_forward_against_the_definition_and_stably():
    L = make_layer("log_softmax", (2, 5))
    x = rng(3).standard_normal((N, 2, 5)) * 3
    out = L.forward(x, {})[0]
    for idx in np.ndindex(N, 2):
        row = x[idx]
        lse = math.log(math.fsum(math.exp(v) for v in row))
        np.testing.assert_allclose(out[idx], row - lse, rtol=1e-14, atol=1e-14)
    # large logits: log_softmax([1000, 1001]) = [−1 − log(1 + e⁻¹), −log(1 + e⁻¹)], finite
    big = make_layer("log_softmax", (2,)).forward(np.array([[1000.0, 1001.0]]), {})[0]
    t = math.log1p(math.exp(-1))
    np.testing.assert_allclose(big, [[-1 - t, -t]], rtol=1e-14)


@pytest.mark.parametrize("shape,dim", [((5,), -1), ((3, 4), -1), ((3, 4), 1)])
def test_log_softmax_backward_matches_central_differences(shape, dim):
    L = make_layer("log_softmax", shape, dim=dim)
    x = rng(4).standard_normal((N,) + shape)
    R = rng(5).standard_normal((N,) + shape)
    out = L.forward(x, {})[0]
    gin = L.backward(R, x, out, {}, {})[0]
    num = central_diff(lambda: float(np.sum(R * L.forward(x, {})[0])), [x])[0]
    assert_grad_close(gin, num, what="grad_in")


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_nll_against_its_definition_and_central_differences(reduction):
    lp = rng(6).standard_normal((4, 3))
    y = np.array([2, 0, 1, 2])
    got = float(loss_forward("nll", lp, y, reduction, 1.0))
    picked = [-lp[n, y[n]] for n in range(4)]
    want = math.fsum(picked) / (4 if reduction == "mean" else 1)
    assert got == pytest.approx(want, rel=1e-15)
    g = loss_backward("nll", lp, y, reduction, 0.5)
    num = central_diff(lambda: float(loss_forward("nll", lp, y, reduction, 0.5)), [lp])[0]
    assert_grad_close(g, num, rtol=1e-8, atol=1e-10, what="loss.grad")
    # exactly −scale/N (or −scale) at the targets, 0 elsewhere
    hot = np.zeros((4, 3))
    hot[np.arange(4), y] = -0.5 / (4 if reduction == "mean" else 1)
    np.testing.assert_array_equal(g, hot)


def test_log_softmax_then_nll_is_cross_entropy():
    """torch: cross_entropy(x, y) = nll_loss(log_softmax(x, 1), y); both ways through whole scenarios,
    with a class dim at -1 (N, T, C)."""
    base = """
[scenario]
seed = 5
[data]
x = { random = "normal", shape = [3, 2, 4] }
y = [[0, 2], [1, 1], [2, 0]]
[[layers]]
type = "linear"
out = 3
%s
[loss]
type = "%s"
class_dim = -1
reduction = "%s"
"""
    for red in ("mean", "sum"):
        a = Program(loads_scenario(base % ('[[layers]]\ntype = "log_softmax"', "nll", red)))
        b = Program(loads_scenario(base % ("", "cross_entropy", red)))
        ea, eb = a.run_until(a.initial_env(), 1, "update"), b.run_until(b.initial_env(), 1, "update")
        assert float(ea["loss"]) == pytest.approx(float(eb["loss"]), rel=1e-14)
        np.testing.assert_allclose(ea["linear1.weight.grad"], eb["linear1.weight.grad"], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(ea["log_softmax1.grad_in"], eb["loss.grad"], rtol=1e-12, atol=1e-15)


def test_nll_class_dim_moves_the_classes():
    lp = rng(7).standard_normal((2, 3, 4))           # (N, T, C), classes last
    y = np.array([[3, 0, 1], [2, 2, 0]])
    lo = LossSpec(type="nll", class_dim=-1)
    p, yy, back = loss(lo.type, **lo.options).class_first(lp, y)
    assert back == 2
    got = float(loss_forward("nll", p, yy, "mean", 1.0))
    want = -math.fsum(lp[n, t, y[n, t]] for n in range(2) for t in range(3)) / 6
    assert got == pytest.approx(want, rel=1e-15)


# --- whole scenarios: every tensor's gradient, explain -------------------------------------------
NETS = {
    "conv-pool": """
[scenario]
seed = 3
[data]
x = { random = "normal", shape = [2, 1, 6, 6] }
y = [1, 0]
[[layers]]
type = "conv2d"
out_channels = 2
kernel_size = 3
padding = 1
[[layers]]
type = "maxpool2d"
kernel_size = 3
stride = 2
padding = 1
[[layers]]
type = "avgpool2d"
kernel_size = 2
stride = 1
[[layers]]
type = "flatten"
[[layers]]
type = "dropout"
p = 0.25
[[layers]]
type = "linear"
out = 3
[[layers]]
type = "log_softmax"
[loss]
type = "nll"
""",
    "pool1d": """
[scenario]
seed = 4
[data]
x = { random = "normal", shape = [3, 2, 9] }
y = { random = "normal", shape = [3, 2, 3] }
[[layers]]
type = "maxpool1d"
kernel_size = 3
stride = 2
padding = 1
[[layers]]
type = "avgpool1d"
kernel_size = 2
stride = 2
padding = 1
[[layers]]
type = "linear"
out = 3
[loss]
type = "mse"
""",
}


def _forward(prog, env, k=1):
    prog.feed(env, k)
    for fn in prog.fns[:prog.stage_start.get("update", len(prog.ops))]:
        fn(env, k)
    return env


@pytest.mark.parametrize("net", list(NETS))
def test_every_tensor_of_a_pooling_net_matches_central_differences(net):
    """For every layer's output X (written by op w): perturb one element, re-run the ops after w up
    to the loss; dLoss/dX by central differences against <layer>.grad_out; and every parameter."""
    sc = loads_scenario(NETS[net])
    prog = Program(sc)
    env = _forward(prog, prog.initial_env())
    end = prog.stage_start["backward"]
    checked = 0
    for op in prog.ops[:end]:
        if op.kind != "forward":
            continue
        name = op.layer + ".out"
        X = np.array(env[name], dtype=np.float64)
        num = np.zeros_like(X)
        for j in range(X.size):
            vals = []
            for sign in (1, -1):
                e = dict(env)
                xp = X.copy().reshape(-1)
                xp[j] += sign * 1e-6
                e[name] = xp.reshape(X.shape)
                for fn in prog.fns[op.index + 1:end]:
                    fn(e, 1)
                vals.append(float(e["loss"]))
            num.reshape(-1)[j] = (vals[0] - vals[1]) / 2e-6
        np.testing.assert_allclose(env[op.layer + ".grad_out"], num, rtol=1e-6, atol=1e-9, err_msg=name)
        checked += 1
    first = prog.layers[0].name
    X = np.array(env["input"], dtype=np.float64)
    num = np.zeros_like(X)
    for j in range(X.size):
        vals = []
        for sign in (1, -1):
            e = dict(env)
            xp = X.copy().reshape(-1)
            xp[j] += sign * 1e-6
            e["input"] = xp.reshape(X.shape)
            for fn in prog.fns[:end]:
                fn(e, 1)
            vals.append(float(e["loss"]))
        num.reshape(-1)[j] = (vals[0] - vals[1]) / 2e-6
    np.testing.assert_allclose(env[first + ".grad_in"], num, rtol=1e-6, atol=1e-9, err_msg="input")
    for p in sc.param_names:
        w = np.array(env[p])
        num = np.zeros_like(w)
        for j in range(w.size):
            for sign in (1, -1):
                wp = w.copy().reshape(-1)
                wp[j] += sign * 1e-6
                e = prog.initial_env()
                e[p] = wp.reshape(w.shape)
                prog.feed(e, 1)
                for fn in prog.fns[:end]:
                    fn(e, 1)
                num.reshape(-1)[j] += sign * float(e["loss"]) / 2e-6
        np.testing.assert_allclose(env[f"{p}.grad"], num, rtol=1e-6, atol=1e-9, err_msg=p)
        checked += 1
    assert checked >= 3


@pytest.mark.parametrize("net", list(NETS))
def test_explain_adds_up_on_every_gradient_of_a_pooling_net(net):
    from nnstep.debugger.explain import explain, is_gradient
    s = nnstep.Session(loads_scenario(NETS[net]))
    s.goto(1, s.program.stage_start["update"])
    n = 0
    for name in sorted(s.names):
        if not is_gradient(s, name) or s.value(name) is None:
            continue
        elems = list(np.ndindex(*np.shape(s.value(name))))
        for idx in (elems if len(elems) <= 6 else elems[::max(1, len(elems) // 6)]):
            ex = explain(s, name, idx)
            assert ex.ok, (net, name, idx, ex.text)
            n += 1
    assert n >= 20


def test_explain_names_the_max_pooling_winner():
    """Window (0, 0) of [[3, 3], [1, 3]] is won by input (0, 0): explain's rule for grad_in[0, 0, 0, 1]
    shows the window with factor 0 (it lost), for (0, 0, 0, 0) factor 1."""
    sc = loads_scenario("""
[data]
x = [[[[3.0, 3.0], [1.0, 3.0]]]]
y = [[[[1.0]]]]
[[layers]]
type = "maxpool2d"
kernel_size = 2
[loss]
type = "mse"
reduction = "sum"
""")
    from nnstep.debugger.explain import explain
    s = nnstep.Session(sc)
    s.goto(2, 0)
    won = explain(s, "maxpool2d1.grad_in", (0, 0, 0, 0))
    lost = explain(s, "maxpool2d1.grad_in", (0, 0, 0, 1))
    assert won.ok and lost.ok
    assert won.value == 4.0 and lost.value == 0.0          # 2·(3 − 1) = 4 to the winner
    assert "[maxpool2d1.argmax[0, 0, 0, 0] = 0]" in won.text
    assert "[maxpool2d1.argmax[0, 0, 0, 0] = 1]" in lost.text


def test_maxpool_window_of_minus_infinity_names_a_position_inside_the_input():
    """x = [−∞, −∞, 3], kernel 2, padding 1, stride 2: window 0 = [pad, −∞] ties; torch's index is
    the first position inside the input, 0 (not the padding), and the backward stays inside."""
    L = make_layer("maxpool1d", (1, 3), kernel_size=2, stride=2, padding=1)
    x = np.array([[[-np.inf, -np.inf, 3.0]]])
    out, ex, _ = L.forward(x, {})
    assert out.tolist() == [[[-np.inf, 3.0]]] and ex["argmax"].tolist() == [[[0, 2]]]
    assert L.backward(np.array([[[1.0, 2.0]]]), x, out, {}, ex)[0].tolist() == [[[1.0, 0.0, 2.0]]]


def test_explain_shows_a_pooled_value_from_its_window():
    """The pooling lesson's window (0, 1) = [[2, 0], [4, 4]]: max 4, the first of the tied 4s (flat
    index 6); average (2 + 0 + 4 + 4)/4 = 2.5. And every pooled element of the nets adds up."""
    import os
    from nnstep.debugger.explain import explain
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    s = nnstep.Session(nnstep.load_scenario(os.path.join(root, "scenarios", "pooling-routing.toml")))
    s.goto(1, s.program.stage_start["update"])
    mx = explain(s, "maxpool2d1.out", (0, 0, 0, 1))
    assert mx.ok and mx.value == 4.0
    assert "gain.out[0, 0, 1, 3] = 4" in mx.text
    assert "= 4, at gain.out[0, 0, 1, 2] (maxpool2d1.argmax[0, 0, 0, 1] = 6: the first of the tied maxima" in mx.text
    av = explain(s, "avgpool2d1.out", (0, 0, 0, 1))
    assert av.ok and av.value == 2.5 and "= (1/4) · (2 + 0 + 4 + 4)" in av.text
    for net in NETS.values():
        s = nnstep.Session(loads_scenario(net))
        s.goto(1, s.program.stage_start["backward"])
        for op in s.program.ops:
            if op.kind == "forward" and "pool" in s.program.layer[op.layer].type:
                name = op.layer + ".out"
                for idx in np.ndindex(*np.shape(s.value(name))):
                    ex = explain(s, name, idx)
                    assert ex.ok and ex.value == pytest.approx(ex.engine_value, rel=1e-13, abs=1e-15), ex.text


@pytest.mark.parametrize("net", list(NETS))
def test_formulas_name_their_tensors(net):
    """Every op's formula renders with real tensor names: no template key left in braces, and the
    backward of max pooling reads the argmax it routes by, average pooling names K's value."""
    prog = Program(loads_scenario(NETS[net]))
    for op in prog.ops:
        assert "{" not in op.formula_text and "}" not in op.formula_text, (op.name, op.formula_text)
    for op in prog.ops:
        if op.kind == "backward" and prog.layer[op.layer].type.startswith("maxpool"):
            assert op.layer + ".argmax" in op.inputs and op.layer + ".argmax" in op.formula_text
        if op.kind == "backward" and prog.layer[op.layer].type.startswith("avgpool"):
            K = math.prod(prog.layer[op.layer].geometry()[0])
            assert f"K = {K}" in op.formula_text
