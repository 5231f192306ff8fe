"""SGD (plain, momentum, dampening, nesterov, weight decay) and Adam (with weight decay) against an
independent re-implementation of the pseudo-code in the torch.optim documentation, over several
steps, plus step 1 derived by hand.

torch.optim.SGD, as documented (γ lr, λ weight_decay, μ momentum, τ dampening):
    g_t ← ∇f(θ_{t−1});  if λ ≠ 0: g_t ← g_t + λ·θ_{t−1}
    if μ ≠ 0:  b_t ← g_t if t = 1 else μ·b_{t−1} + (1 − τ)·g_t
               g_t ← g_t + μ·b_t if nesterov else b_t
    θ_t ← θ_{t−1} − γ·g_t
torch.optim.Adam, as documented (amsgrad off, maximize off):
    g_t ← ∇f(θ_{t−1});  if λ ≠ 0: g_t ← g_t + λ·θ_{t−1}
    m_t ← β1·m_{t−1} + (1 − β1)·g_t;   v_t ← β2·v_{t−1} + (1 − β2)·g_t²      (m_0 = v_0 = 0)
    m̂_t ← m_t / (1 − β1^t);   v̂_t ← v_t / (1 − β2^t)
    θ_t ← θ_{t−1} − γ·m̂_t / (√v̂_t + ε)
"""
import math

import numpy as np
import pytest

from nnstep import loads_scenario
from enginehelp import SMALL_NET, run_step, optimizer_state, update
from nnstep.engine.program import Program
from nnstep.model.scenario import OptimizerSpec


class RefSGD:
    def __init__(self, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
        self.lr, self.mu, self.tau, self.nesterov, self.wd = lr, momentum, dampening, nesterov, weight_decay
        self.b = None
        self.t = 0

    def step(self, theta, grad):
        self.t += 1
        g = grad + self.wd * theta if self.wd != 0 else grad
        if self.mu != 0:
            self.b = g if self.t == 1 else self.mu * self.b + (1 - self.tau) * g
            g = g + self.mu * self.b if self.nesterov else self.b
        return theta - self.lr * g


class RefAdam:
    def __init__(self, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        self.lr, (self.b1, self.b2), self.eps, self.wd = lr, betas, eps, weight_decay
        self.m = self.v = 0.0
        self.t = 0

    def step(self, theta, grad):
        self.t += 1
        g = grad + self.wd * theta if self.wd != 0 else grad
        self.m = self.b1 * self.m + (1 - self.b1) * g
        self.v = self.b2 * self.v + (1 - self.b2) * g * g
        m_hat = self.m / (1 - self.b1 ** self.t)
        v_hat = self.v / (1 - self.b2 ** self.t)
        return theta - self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


def engine_run(spec, theta0, grad_fn, steps):
    """Drive the optimizer's update as the program does: state carried by suffix from step to step."""
    theta, state, out = theta0, {}, []
    for t in range(1, steps + 1):
        g = grad_fn(theta)
        new, written = update(spec, t, theta, g, state)
        state = {s: written[s] for s in optimizer_state(spec)[0]}
        np.testing.assert_array_equal(theta, out[-1] if out else theta0)   # the old value is untouched
        theta = new
        out.append(theta)
    return out


A = np.array([[3.0, 0.5, 0.0], [0.5, 1.0, -0.3], [0.0, -0.3, 2.0]])
B = np.array([1.0, -2.0, 0.5])


def quad_grad(theta):
    """f(θ) = ½θᵀAθ − bᵀθ, so the gradient depends on where the optimizer has gone."""
    return A @ theta - B


SGD_CASES = {
    "plain": dict(lr=0.1),
    "weight_decay": dict(lr=0.1, weight_decay=0.05),
    "momentum": dict(lr=0.1, momentum=0.9),
    "dampening": dict(lr=0.1, momentum=0.9, dampening=0.3),
    "nesterov": dict(lr=0.1, momentum=0.9, nesterov=True),
    "nesterov_wd": dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1),
    "momentum_dampening_wd": dict(lr=0.07, momentum=0.5, dampening=0.5, weight_decay=0.2),
}
ADAM_CASES = {
    "default": dict(lr=0.001),
    "lr_betas_eps": dict(lr=0.1, betas=(0.8, 0.99), eps=1e-6),
    "weight_decay": dict(lr=0.05, weight_decay=0.1),
}


@pytest.mark.parametrize("name", list(SGD_CASES))
def test_sgd_against_docs_pseudocode(name):
    kw = SGD_CASES[name]
    spec = OptimizerSpec(type="sgd", **kw)
    theta0 = np.array([0.3, -1.2, 2.0])
    got = engine_run(spec, theta0, quad_grad, 8)
    ref, theta = RefSGD(**kw), theta0
    for t in range(8):
        theta = ref.step(theta, quad_grad(theta))
        np.testing.assert_allclose(got[t], theta, rtol=1e-13, atol=1e-15, err_msg=f"step {t + 1}")


@pytest.mark.parametrize("name", list(ADAM_CASES))
def test_adam_against_docs_pseudocode(name):
    kw = ADAM_CASES[name]
    spec = OptimizerSpec(type="adam", **kw)
    theta0 = np.array([0.3, -1.2, 2.0])
    got = engine_run(spec, theta0, quad_grad, 8)
    ref, theta = RefAdam(**kw), theta0
    for t in range(8):
        theta = ref.step(theta, quad_grad(theta))
        np.testing.assert_allclose(got[t], theta, rtol=1e-13, atol=1e-15, err_msg=f"step {t + 1}")


def _one(spec, p, g, t=1, state=None):
    new, written = update(spec, t, np.array([p]), np.array([g]), state or {})
    return float(new[0]), {k: float(v[0]) for k, v in written.items()}


def test_sgd_step1_by_hand():
    """θ = 1, ∇ = 2, lr 0.1.
    plain: 1 − 0.1·2 = 0.8.
    weight_decay 0.01: g = 2 + 0.01·1 = 2.01, θ = 1 − 0.201 = 0.799.
    momentum 0.9, dampening 0.5: the buffer STARTS at the first gradient (no dampening at step 1):
      buf = 2, θ = 1 − 0.1·2 = 0.8.
    nesterov, momentum 0.9: buf = 2, step along g + μ·buf = 2 + 1.8 = 3.8, θ = 1 − 0.38 = 0.62.
    Step 2 of momentum 0.9 / dampening 0.5 with ∇ = 4: buf = 0.9·2 + 0.5·4 = 3.8, θ = 0.8 − 0.38 = 0.42."""
    assert _one(OptimizerSpec("sgd", lr=0.1), 1.0, 2.0)[0] == pytest.approx(0.8, abs=1e-15)
    assert _one(OptimizerSpec("sgd", lr=0.1, weight_decay=0.01), 1.0, 2.0)[0] == pytest.approx(0.799, abs=1e-15)
    spec = OptimizerSpec("sgd", lr=0.1, momentum=0.9, dampening=0.5)
    p1, w = _one(spec, 1.0, 2.0)
    assert (p1, w["buf"]) == (pytest.approx(0.8, abs=1e-15), 2.0)
    p2, w2 = _one(spec, p1, 4.0, t=2, state={"buf": np.array([w["buf"]])})
    assert w2["buf"] == pytest.approx(3.8, abs=1e-15) and p2 == pytest.approx(0.42, abs=1e-15)
    p1, w = _one(OptimizerSpec("sgd", lr=0.1, momentum=0.9, nesterov=True), 1.0, 2.0)
    assert w["buf"] == 2.0 and p1 == pytest.approx(0.62, abs=1e-15)


def test_adam_step1_by_hand_and_bias_correction():
    """θ = 1, ∇ = 2, lr 0.1, betas (0.9, 0.999), eps 1e-8.
    m = 0.1·2 = 0.2, v = 0.001·4 = 0.004; m̂ = 0.2/(1 − 0.9) = 2, v̂ = 0.004/(1 − 0.999) = 4;
    θ = 1 − 0.1·2/(√4 + 1e−8) = 1 − 0.1/(1 + 5e−9) = 0.9000000005 (to 1e−17).
    So step 1 moves by ≈ lr·sign(∇) whatever the gradient's size: that is the bias correction.
    With weight_decay 0.5: g = 2 + 0.5 = 2.5, and again θ ≈ 1 − 0.1 = 0.9000000004.
    Step 2 with ∇ = 1 (no decay): m = 0.9·0.2 + 0.1 = 0.28, v = 0.999·0.004 + 0.001 = 0.004996,
    m̂ = 0.28/0.19, v̂ = 0.004996/0.001999, θ₂ = θ₁ − 0.1·m̂/(√v̂ + 1e−8)."""
    spec = OptimizerSpec("adam", lr=0.1)
    p1, w = _one(spec, 1.0, 2.0)
    assert p1 == pytest.approx(0.9000000005, abs=1e-16)
    assert w["m"] == pytest.approx(0.2, rel=1e-15) and w["v"] == pytest.approx(0.004, rel=1e-14)
    assert w["m_hat"] == pytest.approx(2.0, rel=1e-14) and w["v_hat"] == pytest.approx(4.0, rel=1e-12)
    p2, w2 = _one(spec, p1, 1.0, t=2, state={"m": np.array([w["m"]]), "v": np.array([w["v"]])})
    assert w2["m"] == pytest.approx(0.28, rel=1e-15) and w2["v"] == pytest.approx(0.004996, rel=1e-14)
    want = p1 - 0.1 * (0.28 / 0.19) / (math.sqrt(0.004996 / 0.001999) + 1e-8)
    assert p2 == pytest.approx(want, rel=1e-14)
    p1, _ = _one(OptimizerSpec("adam", lr=0.1, weight_decay=0.5), 1.0, 2.0)
    assert p1 == pytest.approx(1 - 0.1 * 2.5 / (2.5 + 1e-8), rel=1e-15)


def test_adam_eps_outside_the_bias_corrected_sqrt():
    """torch divides by √v/√(1 − β2^t) + eps (eps added AFTER the correction). With a tiny gradient
    this matters: ∇ = 1e−8, lr 1, eps 1e−8, step 1: m̂ = 1e−8, √v̂ = 1e−8, so the step is
    1e−8/(1e−8 + 1e−8) = 0.5. (eps inside the correction, √v + eps, would give ≈ 0.97.)"""
    p1, _ = _one(OptimizerSpec("adam", lr=1.0), 0.0, 1e-8)
    assert p1 == pytest.approx(-0.5, rel=1e-12)


TRAIN = SMALL_NET.replace("steps = 6", "steps = 5")


@pytest.mark.parametrize("opt,ref", [
    ('type = "sgd"\nlr = 0.1\nmomentum = 0.9\ndampening = 0.2\nweight_decay = 0.01',
     lambda: RefSGD(0.1, momentum=0.9, dampening=0.2, weight_decay=0.01)),
    ('type = "sgd"\nlr = 0.1\nmomentum = 0.9\nnesterov = true', lambda: RefSGD(0.1, momentum=0.9, nesterov=True)),
    ('type = "adam"\nlr = 0.01\nweight_decay = 0.1', lambda: RefAdam(0.01, weight_decay=0.1)),
], ids=["sgd-momentum-dampening-wd", "sgd-nesterov", "adam-wd"])
def test_program_carries_optimizer_state_across_steps(opt, ref):
    """Through the whole program, with batches: each step's update equals the reference applied to
    that step's gradient, so the state (buffer, m, v, t) is carried right from step to step."""
    sc = loads_scenario(TRAIN.format(opt=opt))
    prog = Program(sc)
    env = prog.initial_env()
    refs = {p: ref() for p in sc.trainable}
    for k in range(1, 6):
        old = {p: env[p] for p in sc.trainable}
        run_step(prog, env, k)
        for p in sc.trainable:
            want = refs[p].step(old[p], env[f"{p}.grad"])
            np.testing.assert_allclose(env[p], want, rtol=1e-13, atol=1e-15, err_msg=f"{p} step {k}")
            np.testing.assert_array_equal(env[f"{p}.delta"], env[p] - old[p])
