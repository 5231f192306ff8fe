"""The loss options (cross_entropy weight / label_smoothing, bce_with_logits pos_weight), each
against an independent element-by-element re-implementation of torch's documented loss (written
here from the torch.nn documentation, not by calling the engine), and through the program."""

import math

import numpy as np
import pytest

from enginehelp import SMALL_NET, assert_grad_close, central_diff, rng
from nnstep import ScenarioError, loads_scenario
from enginehelp import loss, loss_backward, loss_forward
from nnstep.engine.program import Program
from nnstep.model.formula import views
from nnstep.model.scenario import LossSpec


TRAIN = SMALL_NET


# --- losses ------------------------------------------------------------------------------------------
def _lsm(z):
    m = max(z)
    lse = m + math.log(sum(math.exp(v - m) for v in z))
    return [v - lse for v in z]


def ref_ce(p, y, reduction, w=None, eps=0.0):
    """nn.CrossEntropyLoss from its documentation, one sample (position) at a time. Class indices:
    l_n = −w[y_n]·log softmax(x_n)[y_n]; with label smoothing ε over C classes, as ATen computes it:
    (1 − ε)·Σ l_n + ε/C·Σ_n Σ_c −w_c·log softmax(x_n)_c, mean dividing by Σ_n w[y_n]. Class
    probabilities: targets t·(1 − ε) + ε/C, l_n = −Σ_c w_c·t_c·log softmax(x_n)_c, mean dividing by
    the number of positions."""
    C = p.shape[1]
    w = [1.0] * C if w is None else list(w)
    rows = np.moveaxis(p, 1, -1).reshape(-1, C)
    if y.shape == p.shape:
        ts = np.moveaxis(y, 1, -1).reshape(-1, C)
        tot = 0.0
        for z, t in zip(rows, ts):
            lp = _lsm(list(z))
            tot += -sum(w[c] * (t[c] * (1 - eps) + eps / C) * lp[c] for c in range(C))
        return tot / (1 if reduction == "sum" else len(rows))
    nll = smooth = den = 0.0
    for z, c in zip(rows, y.reshape(-1)):
        lp = _lsm(list(z))
        nll += -w[int(c)] * lp[int(c)]
        smooth += -sum(w[j] * lp[j] for j in range(C))
        den += w[int(c)]
    d = 1.0 if reduction == "sum" else den
    return (1 - eps) * nll / d + eps / C * smooth / d


CE_CASES = [
    dict(w=(1.0, 2.0, 0.5), eps=0.0), dict(w=None, eps=0.1), dict(w=(0.3, 1.0, 2.5), eps=0.25),
]


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("case", range(len(CE_CASES)))
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 4)], ids=["NC", "NCL"])
@pytest.mark.parametrize("target", ["index", "prob"])
def test_cross_entropy_weight_and_smoothing(reduction, case, shape, target):
    kw = CE_CASES[case]
    r = rng(7 + case)
    p = r.normal(size=shape) * 2
    if target == "index":
        y = r.integers(0, 3, size=(shape[0],) + shape[2:])
    else:
        y = r.random(size=shape)
        y = y / y.sum(axis=1, keepdims=True)
    s = 1.7
    got = loss_forward("cross_entropy", p, y, reduction, s, weight=kw["w"], label_smoothing=kw["eps"])
    assert float(got) == pytest.approx(s * ref_ce(p, y, reduction, kw["w"], kw["eps"]), rel=1e-13)
    g = loss_backward("cross_entropy", p, y, reduction, s, weight=kw["w"], label_smoothing=kw["eps"])
    pp = p.copy()
    num, = central_diff(lambda: float(loss_forward("cross_entropy", pp, y, reduction, s, weight=kw["w"],
                                                   label_smoothing=kw["eps"])), [pp], eps=1e-5)
    # h = 1e-5: the summed loss is ~20, so h = 1e-6 would leave ~3e-9 of rounding in the differences
    assert_grad_close(g, num, rtol=1e-7, atol=1e-9, what="cross_entropy")
    lo = LossSpec("cross_entropy", reduction, s, weight=kw["w"], label_smoothing=kw["eps"])
    for idx in np.ndindex(*shape):
        rule = loss(lo.type, **lo.options).grad_rule("pred", p, y, idx)
        v = sum(math.prod(f.value for f in t.factors) for t in rule.terms)
        assert v == pytest.approx(float(g[idx]), rel=1e-12, abs=1e-15), idx


def test_cross_entropy_weighted_mean_by_hand():
    """Two samples, logits 0 (softmax 1/2 each), targets [0, 1], weights [1, 3]: each −log ½ = ln 2,
    weighted 1·ln2 + 3·ln2 = 4 ln 2; the mean divides by w[0] + w[1] = 4: the loss is ln 2 (not
    4 ln 2 / 2 = 2 ln 2, which dividing by the batch would give)."""
    p = np.zeros((2, 2))
    y = np.array([0, 1])
    got = loss_forward("cross_entropy", p, y, "mean", 1.0, weight=(1.0, 3.0))
    assert float(got) == pytest.approx(math.log(2), rel=1e-15)


def ref_bce_pw(p, y, pw, reduction):
    """nn.BCEWithLogitsLoss with pos_weight p_c (docs): l = −[p_c·y·log σ(x) + (1 − y)·log(1 − σ(x))],
    p_c along the last dim."""
    out = []
    C = p.shape[-1]
    for idx in np.ndindex(*p.shape):
        x, t = float(p[idx]), float(y[idx])
        pc = pw[idx[-1] % len(pw)] if len(pw) == C else pw[0]
        sig = 1 / (1 + math.exp(-x))
        out.append(-(pc * t * math.log(sig) + (1 - t) * math.log(1 - sig)))
    return sum(out) / (1 if reduction == "sum" else len(out))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("pw", [(2.0, 0.5, 1.0), (3.0,)], ids=["per-class", "one"])
def test_bce_with_logits_pos_weight(reduction, pw):
    r = rng(3)
    p = r.normal(size=(2, 4, 3)) * 2
    y = r.random(size=(2, 4, 3))
    got = loss_forward("bce_with_logits", p, y, reduction, 0.5, pos_weight=pw)
    assert float(got) == pytest.approx(0.5 * ref_bce_pw(p, y, pw, reduction), rel=1e-13)
    g = loss_backward("bce_with_logits", p, y, reduction, 0.5, pos_weight=pw)
    pp = p.copy()
    num, = central_diff(lambda: float(loss_forward("bce_with_logits", pp, y, reduction, 0.5, pos_weight=pw)), [pp], eps=1e-5)
    assert_grad_close(g, num, rtol=1e-7, atol=1e-9, what="bce_with_logits pos_weight")
    lo = LossSpec("bce_with_logits", reduction, 0.5, pos_weight=pw)
    for idx in np.ndindex(*p.shape):
        rule = loss(lo.type, **lo.options).grad_rule("pred", p, y, idx)
        v = sum(math.prod(f.value for f in t.factors) for t in rule.terms)
        assert v == pytest.approx(float(g[idx]), rel=1e-12, abs=1e-15), idx


def test_loss_options_loaded_and_checked():
    base = TRAIN.format(opt='type = "sgd"').replace('type = "mse"', 'type = "cross_entropy"\nweight = [1, 2]\nlabel_smoothing = 0.1')
    base = base.replace('y = { random = "normal", shape = [6, 2] }', "y = [0, 1, 1, 0, 1, 0]")
    lo = loads_scenario(base).loss
    assert (lo.weight, lo.label_smoothing) == ((1.0, 2.0), 0.1)
    with pytest.raises(ScenarioError, match=r"loss.weight: expected 2 class weights"):
        loads_scenario(base.replace("weight = [1, 2]", "weight = [1, 2, 3]"))
    with pytest.raises(ScenarioError, match=r"loss.pos_weight: unknown key"):
        loads_scenario(base.replace("weight = [1, 2]", "pos_weight = [1, 2]"))


def test_cross_entropy_weight_with_class_dim_last_through_the_program():
    """Logits (N, T, C) with class_dim = -1, class weights and smoothing: the program's loss is
    torch's cross_entropy(logits.movedim(-1, 1), targets, weight, label_smoothing), and the loss
    formula counts C along the class dim."""
    text = """
[scenario]
seed = 2
[data]
x = { random = "normal", shape = [3, 4, 2] }
y = [[0, 2, 1, 1], [2, 2, 0, 1], [1, 0, 0, 2]]
[[layers]]
type = "linear"
out = 3
[loss]
type = "cross_entropy"
class_dim = -1
weight = [0.5, 2.0, 1.0]
label_smoothing = 0.2
"""
    sc = loads_scenario(text)
    prog = Program(sc)
    env = prog.initial_env()
    prog.run_until(env, 1, "backward")
    logits = env["linear1.out"]
    want = ref_ce(np.moveaxis(logits, -1, 1), sc.y, "mean", (0.5, 2.0, 1.0), 0.2)
    assert float(env["loss"]) == pytest.approx(want, rel=1e-13)
    op = next(o for o in prog.ops if o.name == "loss")
    assert "0.2/3·" in views(op.formula, {n: env[n] for n in op.inputs}, {"loss": env["loss"]})[0].numbers   # C = 3, not T = 4
