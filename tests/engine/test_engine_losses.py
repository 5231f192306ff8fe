"""Every loss, both reductions and a scale, against float64 central differences and against an
element-by-element reference written from the torch.nn.functional documentation; plus torch's edge
cases (L1'(0) = 0, BCE's log clamp at −100, cross-entropy from logits of 1000)."""
import math

import numpy as np
import pytest

from enginehelp import assert_grad_close, central_diff, rng
from enginehelp import loss_backward, loss_forward
from nnstep.layers.registry import loss_types

LOSSES = tuple(loss_types())


def _log_softmax_row(z):
    m = max(z)
    lse = m + math.log(sum(math.exp(v - m) for v in z))
    return [v - lse for v in z]


def ref_elements(kind, p, y, beta=1.0, delta=1.0):
    """Per-element (or, for cross_entropy, per-sample) losses with plain Python math, from the docs:
    MSELoss (x−y)²; L1Loss |x−y|; SmoothL1Loss 0.5(x−y)²/β if |x−y| < β else |x−y| − 0.5β;
    HuberLoss 0.5(x−y)² if |x−y| < δ else δ(|x−y| − 0.5δ); BCELoss −[y·log x + (1−y)·log(1−x)] with
    each log clamped to ≥ −100; BCEWithLogitsLoss −[y·log σ(x) + (1−y)·log(1 − σ(x))];
    CrossEntropyLoss −log softmax(x)[class] or −Σ_c y_c·log softmax(x)_c over dim 1; NLLLoss
    −x[class] (x holds log-probabilities), one per target."""
    if kind == "nll":
        q = np.moveaxis(p, 1, -1).reshape(-1, p.shape[1])
        return [-float(z[int(c)]) for z, c in zip(q, y.reshape(-1))]
    if kind == "cross_entropy":
        p = np.moveaxis(p, 1, -1)                         # (N, ..., C)
        rows = p.reshape(-1, p.shape[-1])
        if y.shape == np.moveaxis(p, -1, 1).shape:        # probabilities
            yr = np.moveaxis(y, 1, -1).reshape(-1, p.shape[-1])
            return [-sum(yc * lc for yc, lc in zip(yy, _log_softmax_row(list(z)))) for z, yy in zip(rows, yr)]
        return [-_log_softmax_row(list(z))[int(c)] for z, c in zip(rows, y.reshape(-1))]
    out = []
    for a, b in zip(p.reshape(-1).tolist(), y.reshape(-1).tolist()):
        d = a - b
        if kind == "mse":
            out.append(d * d)
        elif kind == "l1":
            out.append(abs(d))
        elif kind == "smooth_l1":
            out.append(abs(d) if beta == 0 else (0.5 * d * d / beta if abs(d) < beta else abs(d) - 0.5 * beta))
        elif kind == "huber":
            out.append(0.5 * d * d if abs(d) < delta else delta * (abs(d) - 0.5 * delta))
        elif kind == "bce":
            lx = max(math.log(a), -100.0) if a > 0 else -100.0
            l1x = max(math.log(1 - a), -100.0) if a < 1 else -100.0
            out.append(-(b * lx + (1 - b) * l1x))
        elif kind == "bce_with_logits":
            log_sig = -math.log1p(math.exp(-a)) if a > -30 else a - math.log1p(math.exp(a))
            log_1msig = -a + log_sig                          # log(1 − σ(a)) = log σ(a) − a
            out.append(-(b * log_sig + (1 - b) * log_1msig))
    return out


def _data(kind, shape, r, spatial=False):
    p = r.standard_normal(shape)
    if kind in ("cross_entropy", "nll"):
        C = shape[1]
        cls_shape = (shape[0],) + shape[2:]
        return p, r.integers(0, C, size=cls_shape)
    y = r.standard_normal(shape)
    if kind == "bce":
        p = r.uniform(0.05, 0.95, size=shape)
        y = r.uniform(0, 1, size=shape)
    if kind == "bce_with_logits":
        y = r.uniform(0, 1, size=shape)
    return p, y


CASES = []
for kind in LOSSES:
    for red in ("mean", "sum"):
        CASES.append((kind, red, {}))
CASES += [("smooth_l1", "mean", {"beta": 0.5}), ("smooth_l1", "sum", {"beta": 2.5}),
          ("smooth_l1", "mean", {"beta": 0.0}),
          ("huber", "mean", {"delta": 0.7}), ("huber", "sum", {"delta": 2.5})]


@pytest.mark.parametrize("kind,red,kw", CASES, ids=[f"{k}-{r}-{kw}" for k, r, kw in CASES])
@pytest.mark.parametrize("scale", [1.0, 0.5, 3.0])
def test_loss_value_and_gradient(kind, red, kw, scale):
    r = rng(7)
    p, y = _data(kind, (4, 3), r)
    if kind in ("smooth_l1", "huber"):
        thr = kw.get("beta", kw.get("delta", 1.0))
        d = p - y
        d[np.abs(np.abs(d) - thr) < 0.05] += 0.2      # off the seam, where the second derivative jumps
        p = y + d
        if thr:
            assert (np.abs(d) < thr).any() and (np.abs(d) > thr).any(), "both branches are exercised"
    loss = loss_forward(kind, p, y, red, scale, **kw)
    elems = ref_elements(kind, p, y, **kw)
    want = scale * (sum(elems) if red == "sum" else sum(elems) / len(elems))
    assert float(loss) == pytest.approx(want, rel=1e-13, abs=1e-15)
    assert loss.shape == () and loss.dtype == np.float64
    g = loss_backward(kind, p, y, red, scale, **kw)
    (num,) = central_diff(lambda: float(loss_forward(kind, p, y, red, scale, **kw)), [p])
    assert_grad_close(g, num, what=f"{kind} grad")


@pytest.mark.parametrize("red", ["mean", "sum"])
@pytest.mark.parametrize("target", ["indices", "probabilities"])
@pytest.mark.parametrize("shape", [(5, 4), (3, 4, 2)], ids=["NC", "NCL"])
def test_cross_entropy_indices_and_probabilities(red, target, shape):
    """`mean` averages over the batch (and any extra dims: N·L elements), for class indices and for
    class probabilities alike (torch: input.numel() / C)."""
    r = rng(11)
    p = r.standard_normal(shape) * 3
    if target == "indices":
        y = r.integers(0, shape[1], size=(shape[0],) + shape[2:])
    else:
        y = r.uniform(0, 1, size=shape)
        y = y / y.sum(axis=1, keepdims=True)
    loss = loss_forward("cross_entropy", p, y, red, 0.5)
    elems = ref_elements("cross_entropy", p, y)
    assert len(elems) == math.prod(shape) // shape[1]
    want = 0.5 * (sum(elems) if red == "sum" else sum(elems) / len(elems))
    assert float(loss) == pytest.approx(want, rel=1e-13)
    g = loss_backward("cross_entropy", p, y, red, 0.5)
    (num,) = central_diff(lambda: float(loss_forward("cross_entropy", p, y, red, 0.5)), [p])
    assert_grad_close(g, num, what="cross_entropy grad")


def test_cross_entropy_probabilities_that_do_not_sum_to_one():
    """torch accepts any probabilities: loss = −Σ y·log softmax(x), gradient softmax(x)·Σy − y."""
    p = np.array([[0.2, -0.3, 1.0]])
    y = np.array([[0.5, 0.5, 0.5]])
    g = loss_backward("cross_entropy", p, y, "sum", 1.0)
    (num,) = central_diff(lambda: float(loss_forward("cross_entropy", p, y, "sum", 1.0)), [p])
    assert_grad_close(g, num)


def test_cross_entropy_is_stable_for_logits_of_1000():
    """Logits [1000, 0, −1000], class 1: log-sum-exp = 1000 + log(1 + e^−1000 + e^−2000) = 1000, so
    the loss is 1000 − 0 = 1000 exactly, and the gradient softmax − onehot = [1, −1, 0]. A naive
    exp(1000) would overflow to inf and give NaN."""
    p = np.array([[1000.0, 0.0, -1000.0]])
    y = np.array([1])
    assert float(loss_forward("cross_entropy", p, y, "mean", 1.0)) == 1000.0
    assert loss_backward("cross_entropy", p, y, "mean", 1.0).tolist() == [[1.0, -1.0, 0.0]]
    assert float(loss_forward("cross_entropy", p, np.array([0]), "mean", 1.0)) == 0.0


def test_l1_and_smooth_l1_derivative_at_zero_is_zero():
    """torch: sign(0) = 0, so where prediction == target the L1 gradient is 0 (also smooth_l1 with
    beta = 0, which is L1, and huber/smooth_l1/mse, whose gradient is d-proportional there)."""
    p = np.array([[1.0, 2.0, 3.0]])
    y = np.array([[1.0, 0.0, 5.0]])
    assert loss_backward("l1", p, y, "sum", 1.0).tolist() == [[0.0, 1.0, -1.0]]
    assert loss_backward("smooth_l1", p, y, "sum", 1.0, beta=0.0).tolist() == [[0.0, 1.0, -1.0]]
    for kind in ("mse", "huber", "smooth_l1"):
        assert loss_backward(kind, p, y, "sum", 1.0)[0, 0] == 0.0


def test_smooth_l1_and_huber_at_the_threshold():
    """Hand values, d = pred − target: smooth_l1 (β = 2) at d = 1: 0.5·1/2 = 0.25, gradient d/β = 0.5;
    at d = 3: 3 − 1 = 2, gradient 1. huber (δ = 2) at d = 1: 0.5, gradient 1; at d = −3:
    2·(3 − 1) = 4, gradient −δ = −2. So huber = β·smooth_l1 when δ = β (torch's docs say so)."""
    p = np.array([1.0, -3.0, 3.0])
    y = np.zeros(3)
    assert loss_forward("smooth_l1", p, y, "sum", 1.0, beta=2.0) == pytest.approx(0.25 + 2.0 + 2.0)
    assert loss_backward("smooth_l1", p, y, "sum", 1.0, beta=2.0).tolist() == [0.5, -1.0, 1.0]
    assert loss_forward("huber", p, y, "sum", 1.0, delta=2.0) == pytest.approx(0.5 + 4.0 + 4.0)
    assert loss_backward("huber", p, y, "sum", 1.0, delta=2.0).tolist() == [1.0, -2.0, 2.0]


def test_bce_clamps_its_logs_at_minus_100():
    """torch.nn.BCELoss: "our solution is that BCELoss clamps its log function outputs to be greater
    than or equal to −100". So p = 0 with y = 1 costs exactly 100 (not inf), and p = 1 with y = 0
    too; p = 1 with y = 1 costs 0. With reduction mean over these 3: (100 + 100 + 0)/3."""
    p = np.array([[0.0, 1.0, 1.0]])
    y = np.array([[1.0, 0.0, 1.0]])
    with np.errstate(all="ignore"):
        assert float(loss_forward("bce", p, y, "mean", 1.0)) == pytest.approx(200.0 / 3, rel=1e-15)
        g = loss_backward("bce", p, y, "mean", 1.0)
    # torch's backward: (p − y) / max((1 − p)·p, ε), ε = 1e−12 as a float32: finite, ∓1/(3ε) at the ends
    eps = float(np.float32(1e-12))
    assert np.isfinite(g).all()
    np.testing.assert_allclose(g, [[-1 / (3 * eps), 1 / (3 * eps), 0.0]], rtol=1e-15)
    # e^−100 ≈ 3.7e−44: a p below it hits the clamp, just above it not quite
    assert float(loss_forward("bce", np.array([1e-50]), np.array([1.0]), "sum", 1.0)) == 100.0
    assert float(loss_forward("bce", np.array([1e-40]), np.array([1.0]), "sum", 1.0)) == pytest.approx(
        -math.log(1e-40), rel=1e-15)


def test_bce_with_logits_is_stable_for_large_logits():
    """log(1 + e^−x) computed stably: x = 800, y = 0 gives (1 − 0)·800 + log(1 + e^−800) = 800;
    x = −800, y = 1 gives 0 + 800 = 800; x = 800, y = 1 gives 0."""
    p = np.array([800.0, -800.0, 800.0])
    y = np.array([0.0, 1.0, 1.0])
    with np.errstate(over="ignore"):                 # e^800 → inf in σ is harmless: 1/(1 + inf) = 0
        assert loss_forward("bce_with_logits", p, y, "sum", 1.0) == 1600.0
        assert loss_backward("bce_with_logits", p, y, "sum", 1.0).tolist() == [1.0, -1.0, 0.0]


def test_scale_multiplies_value_and_gradient():
    r = rng(3)
    p, y = r.standard_normal((3, 2)), r.standard_normal((3, 2))
    for kind in ("mse", "l1", "huber"):
        a = loss_forward(kind, p, y, "mean", 1.0)
        b = loss_forward(kind, p, y, "mean", 0.25)
        assert float(b) == pytest.approx(0.25 * float(a), rel=1e-15)
        np.testing.assert_allclose(loss_backward(kind, p, y, "mean", 0.25),
                                   0.25 * loss_backward(kind, p, y, "mean", 1.0), rtol=1e-15)


@pytest.mark.parametrize("kind", LOSSES)
def test_float32_stays_float32(kind):
    r = rng(5)
    p, y = _data(kind, (3, 4), r)
    p = p.astype(np.float32)
    if kind != "cross_entropy":
        y = y.astype(np.float32)
    assert loss_forward(kind, p, y, "mean", 0.5).dtype == np.float32
    assert loss_backward(kind, p, y, "mean", 0.5).dtype == np.float32


@pytest.mark.parametrize("shape,probs", [((5, 4), False), ((3, 4, 2), False), ((5, 4), True)])
def test_cross_entropy_with_precomputed_log_softmax_is_identical(shape, probs):
    """The program's loss op hands its log_softmax to `backward loss`: same bits either way."""
    from nnstep.layers.crossentropy import log_softmax

    r = rng(13)
    p = r.standard_normal(shape)
    y = r.uniform(0, 1, size=shape) if probs else r.integers(0, shape[1], size=(shape[0],) + shape[2:])
    lp = log_softmax(p)
    for red in ("mean", "sum"):
        assert loss_forward("cross_entropy", p, y, red, 0.5, lp=lp) == loss_forward("cross_entropy", p, y, red, 0.5)
        assert np.array_equal(loss_backward("cross_entropy", p, y, red, 0.5, lp=lp),
                              loss_backward("cross_entropy", p, y, red, 0.5))
    assert np.array_equal(lp, log_softmax(p))                 # lp itself is not modified


def test_bce_logs_keep_full_precision_for_tiny_terms():
    """As torch (log1p for log(1 − p), log σ(x) = min(x, 0) − log1p(e^−|x|)), the small terms keep
    their relative precision: bce at p = 1e−10, y = 0 is −log(1 − 1e−10) = 1e−10 + 5e−21 (a plain
    log(1 − p) gives 1.00000008e−10); bce_with_logits at x = 40, y = 1 is log(1 + e^−40) =
    4.248354255291589e−18 (a plain log(1 + e^−40) gives 0)."""
    assert float(loss_forward("bce", np.array([1e-10]), np.array([0.0]), "sum", 1.0)) == pytest.approx(
        1e-10 + 5e-21, rel=1e-15)
    assert float(loss_forward("bce_with_logits", np.array([40.0]), np.array([1.0]), "sum", 1.0)) == pytest.approx(
        math.exp(-40.0), rel=1e-15)


BCE_CLAMPED = """
[data]
x = [[30.0]]
y = [[0.0]]
[[layers]]
type = "linear"
out = 1
weight = [[1.0]]
bias = [0.0]
[[layers]]
type = "sigmoid"
[loss]
type = "bce"
reduction = "sum"
"""


def test_bce_gradient_clamps_at_float32s_1e_12_as_torch_even_in_float64():
    """σ(30) = 0.9999999999999065, so (1 − p)·p = 9.35e−14 is below the clamp. torch's
    binary_cross_entropy_backward clamps it at the C++ literal 1e-12 stored in a float,
    9.999999960041972e-13, even for float64 tensors: torch 2.13 prints loss.grad =
    1000000003995.7094 for this net (1e12 exactly with a float64 1e-12 would be 999999999999.9065)."""
    import nnstep
    from nnstep.layers.losses import BCE_EPS
    assert BCE_EPS == float(np.float32(1e-12)) == 9.999999960041972e-13
    s = nnstep.Session(nnstep.loads_scenario(BCE_CLAMPED))
    s.goto(1, s.program.stage_start["update"])
    assert float(s.value("loss.grad")[0, 0]) == 1000000003995.7094
    from nnstep.debugger.explain import explain
    ex = explain(s, "loss.grad", (0, 0))
    assert ex.ok and ex.value == pytest.approx(1000000003995.7094, rel=1e-15) and "9.999999960041972e-13" in ex.text
    torch = pytest.importorskip("torch")
    lin = torch.nn.Linear(1, 1).double()
    with torch.no_grad():
        lin.weight.fill_(1.0)
        lin.bias.fill_(0.0)
    p = torch.sigmoid(lin(torch.tensor([[30.0]], dtype=torch.float64)))
    p.retain_grad()
    torch.nn.functional.binary_cross_entropy(p, torch.zeros(1, 1, dtype=torch.float64), reduction="sum").backward()
    assert float(s.value("loss.grad")[0, 0]) == p.grad.item()
