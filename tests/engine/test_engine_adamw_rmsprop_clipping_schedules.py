"""AdamW, RMSprop, gradient clipping and learning-rate schedules, each against an independent
element-by-element re-implementation of torch's documented algorithm (written here from the
torch.optim / torch.nn documentation, not by calling the engine), over several steps.

torch.optim.AdamW, as documented (γ lr, λ weight_decay, amsgrad off):
    θ_t ← θ_{t−1} − γ·λ·θ_{t−1}
    m_t ← β1·m_{t−1} + (1 − β1)·g_t;   v_t ← β2·v_{t−1} + (1 − β2)·g_t²      (m_0 = v_0 = 0)
    m̂_t ← m_t / (1 − β1^t);   v̂_t ← v_t / (1 − β2^t)
    θ_t ← θ_t − γ·m̂_t / (√v̂_t + ε)
torch.optim.RMSprop, as documented (α alpha, μ momentum):
    if λ ≠ 0: g_t ← g_t + λ·θ_{t−1}
    v_t ← α·v_{t−1} + (1 − α)·g_t²;   ṽ_t ← v_t                               (v_0 = b_0 = g^ave_0 = 0)
    if centered: g^ave_t ← α·g^ave_{t−1} + (1 − α)·g_t;   ṽ_t ← ṽ_t − (g^ave_t)²
    if μ > 0: b_t ← μ·b_{t−1} + g_t / (√ṽ_t + ε);   θ_t ← θ_{t−1} − γ·b_t
    else:     θ_t ← θ_{t−1} − γ·g_t / (√ṽ_t + ε)
torch.nn.utils.clip_grad_norm_(params, max_norm): total = ‖(‖g_1‖, …, ‖g_P‖)‖₂ (the 2-norm of all
    gradient elements together); clip_coef = max_norm / (total + 1e−6); every gradient is multiplied
    by min(clip_coef, 1).
"""
import itertools
import math

import numpy as np
import pytest

from nnstep import loads_scenario
from enginehelp import SMALL_NET, run_step, loss, optimizer_state, schedule, update
from nnstep.engine.program import Program
from nnstep.model.formula import views
from nnstep.model.scenario import OptimizerSpec, ScheduleSpec


# --- references, element by element ----------------------------------------------------------------
class RefAdamW:
    def __init__(self, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        self.lr, (self.b1, self.b2), self.eps, self.wd = lr, betas, eps, weight_decay
        self.m = self.v = None
        self.t = 0

    def step(self, theta, grad, lr=None):
        lr = self.lr if lr is None else lr
        self.t += 1
        th, g = theta.reshape(-1).tolist(), grad.reshape(-1).tolist()
        if self.m is None:
            self.m, self.v = [0.0] * len(th), [0.0] * len(th)
        out = []
        for i in range(len(th)):
            x = th[i] - lr * self.wd * th[i]
            self.m[i] = self.b1 * self.m[i] + (1 - self.b1) * g[i]
            self.v[i] = self.b2 * self.v[i] + (1 - self.b2) * g[i] * g[i]
            mh = self.m[i] / (1 - self.b1 ** self.t)
            vh = self.v[i] / (1 - self.b2 ** self.t)
            out.append(x - lr * mh / (math.sqrt(vh) + self.eps))
        return np.array(out).reshape(theta.shape)


class RefRMSprop:
    def __init__(self, lr=0.01, alpha=0.99, eps=1e-8, momentum=0.0, centered=False, weight_decay=0.0):
        self.lr, self.a, self.eps, self.mu, self.centered, self.wd = lr, alpha, eps, momentum, centered, weight_decay
        self.v = self.b = self.ga = None

    def step(self, theta, grad, lr=None):
        lr = self.lr if lr is None else lr
        th, gr = theta.reshape(-1).tolist(), grad.reshape(-1).tolist()
        if self.v is None:
            self.v, self.b, self.ga = [0.0] * len(th), [0.0] * len(th), [0.0] * len(th)
        out = []
        for i in range(len(th)):
            g = gr[i] + self.wd * th[i] if self.wd != 0 else gr[i]
            self.v[i] = self.a * self.v[i] + (1 - self.a) * g * g
            vt = self.v[i]
            if self.centered:
                self.ga[i] = self.a * self.ga[i] + (1 - self.a) * g
                vt = vt - self.ga[i] ** 2
            if self.mu > 0:
                self.b[i] = self.mu * self.b[i] + g / (math.sqrt(vt) + self.eps)
                out.append(th[i] - lr * self.b[i])
            else:
                out.append(th[i] - lr * g / (math.sqrt(vt) + self.eps))
        return np.array(out).reshape(theta.shape)


A = np.array([[3.0, 0.5, 0.0], [0.5, 1.0, -0.3], [0.0, -0.3, 2.0]])
B = np.array([1.0, -2.0, 0.5])


def quad_grad(theta):
    """f(θ) = ½θᵀAθ − bᵀθ, so the gradient depends on where the optimizer has gone."""
    return A @ theta - B


def engine_run(spec, theta0, grad_fn, steps):
    theta, state, out = theta0, {}, []
    for t in range(1, steps + 1):
        new, written = update(spec, t, theta, grad_fn(theta), state)
        state = {s: written[s] for s in optimizer_state(spec)[0]}
        theta = new
        out.append(theta)
    return out


ADAMW_CASES = {
    "default": dict(lr=0.001),
    "no_decay": dict(lr=0.05, weight_decay=0.0),
    "strong_decay": dict(lr=0.1, weight_decay=0.5),
    "betas_eps": dict(lr=0.1, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05),
}
RMS_CASES = {f"mu{mu}-c{int(c)}-wd{wd}": dict(lr=0.01, momentum=mu, centered=c, weight_decay=wd)
             for mu, c, wd in itertools.product((0.0, 0.9), (False, True), (0.0, 0.1))}
RMS_CASES["alpha_eps_lr"] = dict(lr=0.05, alpha=0.9, eps=1e-4, momentum=0.5, centered=True, weight_decay=0.02)
RMS_CASES["alpha_half"] = dict(lr=0.02, alpha=0.5)          # 1 − α = 0.5: torch's lerp takes its other branch


@pytest.mark.parametrize("name", list(ADAMW_CASES))
def test_adamw_against_docs_pseudocode(name):
    kw = dict(ADAMW_CASES[name])
    spec = OptimizerSpec(type="adamw", **{"weight_decay": 0.01, **kw})
    theta0 = np.array([0.3, -1.2, 2.0])
    got = engine_run(spec, theta0, quad_grad, 8)
    ref, theta = RefAdamW(**kw), theta0
    for t in range(8):
        theta = ref.step(theta, quad_grad(theta))
        np.testing.assert_allclose(got[t], theta, rtol=1e-13, atol=1e-15, err_msg=f"step {t + 1}")


@pytest.mark.parametrize("name", list(RMS_CASES))
def test_rmsprop_against_docs_pseudocode(name):
    kw = RMS_CASES[name]
    spec = OptimizerSpec(type="rmsprop", **kw)
    theta0 = np.array([[0.3, -1.2, 2.0]]).T[:, 0]
    got = engine_run(spec, theta0, quad_grad, 8)
    ref, theta = RefRMSprop(**kw), theta0
    for t in range(8):
        theta = ref.step(theta, quad_grad(theta))
        np.testing.assert_allclose(got[t], theta, rtol=1e-12, atol=1e-15, err_msg=f"step {t + 1}")


def _one(spec, p, g, t=1, state=None, lr=None):
    new, written = update(spec, t, np.array([p]), np.array([g]), state or {}, lr=lr)
    return float(new[0]), {k: float(v[0]) for k, v in written.items()}


def test_adamw_step1_by_hand():
    """θ = 1, ∇ = 2, lr 0.1, λ = 0.5: decayed θ = 1·(1 − 0.1·0.5) = 0.95; m̂ = 2, v̂ = 4 (as Adam's
    step 1), so θ₁ = 0.95 − 0.1·2/(2 + 1e−8) = 0.95 − 0.1/(1 + 5e−9) = 0.8500000005 (to 1e−17).
    Adam with weight_decay 0.5 instead adds λθ to the gradient: g = 2.5, θ₁ = 1 − 0.1·2.5/(2.5 + 1e−8)
    = 0.9000000004: the coupled decay is normalized away by Adam's step, the decoupled one is not."""
    p1, w = _one(OptimizerSpec("adamw", lr=0.1, weight_decay=0.5), 1.0, 2.0)
    assert w["decayed"] == pytest.approx(0.95, rel=1e-15)
    assert p1 == pytest.approx(0.8500000005, abs=1e-15)     # a few ulps of 0.85
    assert w["m_hat"] == pytest.approx(2.0, rel=1e-14) and w["v_hat"] == pytest.approx(4.0, rel=1e-12)


def test_rmsprop_step1_by_hand():
    """θ = 1, ∇ = 2, lr 0.01, α 0.99: v = 0.01·4 = 0.04, √v = 0.2, θ₁ = 1 − 0.01·2/(0.2 + 1e−8)
    = 0.9 + 5e−10·... ≈ 0.90000000500 (2/0.20000001 = 9.9999995, so θ₁ = 1 − 0.099999995 = 0.900000005).
    Centered: g_ave = 0.01·2 = 0.02, ṽ = 0.04 − 0.0004 = 0.0396, θ₁ = 1 − 0.02/(√0.0396 + 1e−8).
    Momentum 0.9: b = 0 + 2/(0.2 + 1e−8) = 9.9999995, θ₁ = 1 − 0.01·b, the same as without at step 1."""
    p1, w = _one(OptimizerSpec("rmsprop", lr=0.01), 1.0, 2.0)
    assert w["square_avg"] == pytest.approx(0.04, rel=1e-14)
    assert p1 == pytest.approx(0.900000005, abs=1e-15)
    p1, w = _one(OptimizerSpec("rmsprop", lr=0.01, centered=True), 1.0, 2.0)
    assert w["grad_avg"] == pytest.approx(0.02, rel=1e-14)
    assert p1 == pytest.approx(1 - 0.02 / (math.sqrt(0.0396) + 1e-8), rel=1e-15)
    p1, w = _one(OptimizerSpec("rmsprop", lr=0.01, momentum=0.9), 1.0, 2.0)
    assert w["buf"] == pytest.approx(9.9999995, rel=1e-14) and p1 == pytest.approx(0.900000005, abs=1e-15)


TRAIN = SMALL_NET


@pytest.mark.parametrize("opt,ref", [
    ('type = "adamw"\nlr = 0.01', lambda: RefAdamW(0.01)),
    ('type = "adamw"\nlr = 0.02\nweight_decay = 0.3\nbetas = [0.8, 0.95]', lambda: RefAdamW(0.02, (0.8, 0.95), weight_decay=0.3)),
    ('type = "rmsprop"', lambda: RefRMSprop()),
    ('type = "rmsprop"\nmomentum = 0.9\ncentered = true\nweight_decay = 0.05',
     lambda: RefRMSprop(momentum=0.9, centered=True, weight_decay=0.05)),
], ids=["adamw-default", "adamw-wd-betas", "rmsprop-default", "rmsprop-all"])
def test_program_carries_optimizer_state_across_steps(opt, ref):
    """Through the whole program, with batches: each step's update equals the reference applied to
    that step's gradient, so the state (square_avg, grad_avg, buf; m, v, t) is carried right."""
    sc = loads_scenario(TRAIN.format(opt=opt))
    prog = Program(sc)
    env = prog.initial_env()
    refs = {p: ref() for p in sc.trainable}
    for k in range(1, 7):
        old = {p: env[p] for p in sc.trainable}
        run_step(prog, env, k)
        for p in sc.trainable:
            want = refs[p].step(old[p], env[f"{p}.grad"])
            np.testing.assert_allclose(env[p], want, rtol=1e-12, atol=1e-15, err_msg=f"{p} step {k}")


def test_defaults_are_torchs():
    """adamw: lr 0.001, weight_decay 0.01; rmsprop: lr 0.01, alpha 0.99, eps 1e-8, momentum 0."""
    o = loads_scenario(TRAIN.format(opt='type = "adamw"')).optimizer
    assert (o.lr, o.weight_decay, o.betas, o.eps) == (0.001, 0.01, (0.9, 0.999), 1e-8)
    o = loads_scenario(TRAIN.format(opt='type = "rmsprop"')).optimizer
    assert (o.lr, o.alpha, o.eps, o.momentum, o.centered, o.weight_decay) == (0.01, 0.99, 1e-8, 0.0, False, 0.0)
    assert optimizer_state(o) == (("square_avg",), ("square_avg",))


def test_rmsprop_state_tensors_are_in_the_update_op():
    sc = loads_scenario(TRAIN.format(opt='type = "rmsprop"\nmomentum = 0.5\ncentered = true'))
    op = next(o for o in Program(sc).ops if o.name == "update linear1.weight")
    for s in ("square_avg", "grad_avg", "buf"):
        assert f"linear1.weight.{s}" in op.inputs and f"linear1.weight.{s}" in op.outputs


def test_adamw_formula_shows_the_decoupled_decay_with_numbers():
    sc = loads_scenario(TRAIN.format(opt='type = "adamw"\nlr = 0.5\nweight_decay = 0.1').replace("out = 2", "out = 1")
                        .replace("shape = [6, 2]", "shape = [6, 1]"))
    prog = Program(sc)
    env = prog.initial_env()
    run_step(prog, env, 1)
    op = next(o for o in prog.ops if o.name == "update linear2.bias")
    before = {"linear2.bias": sc.initial["linear2.bias"]}
    vs = views(op.formula, before, {"linear2.bias.decayed": env["linear2.bias.decayed"]}, step=1)
    assert vs[0].text == "linear2.bias.decayed = linear2.bias·(1 − lr·λ)"
    b0 = float(sc.initial["linear2.bias"][0])
    assert vs[0].numbers == f"{b0 * 0.95:.4g} = {b0:.4g}·(1 − 0.5·0.1)"
    assert "linear2.bias.decayed − lr·" in vs[-1].text


# --- clipping --------------------------------------------------------------------------------------
CLIP = TRAIN.replace("[train]", "clip_grad_norm = {c}\n[train]")


@pytest.mark.parametrize("c", [0.05, 1e6])
def test_clip_grad_norm_as_torch(c):
    """The op's norm, factor and clipped gradients against loops over every element; P.grad stays
    the raw gradient (the same as a run without clipping), and SGD's update reads the clipped one."""
    sc = loads_scenario(CLIP.format(opt='type = "sgd"\nlr = 0.1', c=c))
    raw = loads_scenario(TRAIN.format(opt='type = "sgd"\nlr = 0.1'))
    prog, prog_raw = Program(sc), Program(raw)
    assert [o.name for o in prog.ops if o.stage == "update"][0] == "clip grad norm"
    env, env_raw = prog.initial_env(), prog_raw.initial_env()
    run_step(prog, env, 1)
    run_step(prog_raw, env_raw, 1)
    total = math.sqrt(sum(v * v for P in sc.trainable for v in env[f"{P}.grad"].reshape(-1).tolist()))
    coef = min(1.0, c / (total + 1e-6))
    assert float(env["grad_norm"]) == pytest.approx(total, rel=1e-14)
    assert float(env["clip_coef"]) == pytest.approx(coef, rel=1e-14)
    assert float(env["clipped_norm"]) == pytest.approx(coef * total, rel=1e-13)
    if c < 1:
        assert coef < 1 and float(env["clipped_norm"]) == pytest.approx(c, rel=1e-5)
    else:
        assert coef == 1.0
    for P in sc.trainable:
        np.testing.assert_array_equal(env[f"{P}.grad"], env_raw[f"{P}.grad"])      # raw
        clipped = np.array([coef * v for v in env[f"{P}.grad"].reshape(-1).tolist()]).reshape(env[f"{P}.grad"].shape)
        np.testing.assert_allclose(env[f"{P}.grad.clipped"], clipped, rtol=1e-14, atol=0)
        np.testing.assert_allclose(env[f"{P}.delta"], -0.1 * clipped, rtol=1e-12, atol=1e-18)


def test_clip_with_adam_over_steps():
    """Adam on the clipped gradient, six steps: the reference reads coef·g each step."""
    sc = loads_scenario(CLIP.format(opt='type = "adamw"\nlr = 0.01', c=0.1))
    prog = Program(sc)
    env = prog.initial_env()
    refs = {p: RefAdamW(0.01) for p in sc.trainable}
    for k in range(1, 7):
        old = {p: env[p] for p in sc.trainable}
        run_step(prog, env, k)
        total = math.sqrt(sum(float(np.sum(env[f"{P}.grad"] ** 2)) for P in sc.trainable))
        coef = min(1.0, 0.1 / (total + 1e-6))
        for p in sc.trainable:
            want = refs[p].step(old[p], coef * env[f"{p}.grad"])
            np.testing.assert_allclose(env[p], want, rtol=1e-11, atol=1e-15, err_msg=f"{p} step {k}")


def test_run_json_grads_stay_raw(tmp_path, capsys):
    import json

    from nnstep.cli import main
    f = tmp_path / "c.toml"
    f.write_text(CLIP.format(opt='type = "sgd"\nlr = 0.1', c=0.01))
    assert main(["run", str(f), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    sc = loads_scenario(CLIP.format(opt='type = "sgd"\nlr = 0.1', c=0.01))
    prog = Program(sc)
    env = prog.initial_env()
    run_step(prog, env, 1)
    for P in sc.trainable:
        np.testing.assert_array_equal(np.array(doc["steps"][0]["grads"][P]), env[f"{P}.grad"])
    assert "lr" not in doc["steps"][0]                     # no schedule, no lr field


# --- schedules --------------------------------------------------------------------------------------
def closed_form(s: ScheduleSpec, base: float, e: int) -> float:
    """The lr after e scheduler steps, from the formulas of the torch.optim.lr_scheduler docs:
    StepLR base·γ^⌊e/step_size⌋; ExponentialLR base·γ^e; CosineAnnealingLR
    η_min + ½(base − η_min)(1 + cos(π·e/T_max)); LinearLR base·(start + (end − start)·min(e, n)/n)."""
    if s.type == "step":
        return base * s.gamma ** (e // s.step_size)
    if s.type == "exponential":
        return base * s.gamma ** e
    if s.type == "cosine":
        return s.eta_min + 0.5 * (base - s.eta_min) * (1 + math.cos(math.pi * e / s.t_max))
    return base * (s.start_factor + (s.end_factor - s.start_factor) * min(e, s.total_iters) / s.total_iters)


def recursive_docs(s: ScheduleSpec, base: float, steps: int) -> list[float]:
    """The recursive forms the CosineAnnealingLR docs give (η_{t+1} from η_t, with the restart step
    at T_cur = (2k+1)·T_max) and LinearLR's chained factor; lrs after 0..steps scheduler steps."""
    lrs = [base * s.start_factor if s.type == "linear" else base]
    for e in range(1, steps + 1):
        lr = lrs[-1]
        if s.type == "cosine":
            T, eta = s.t_max, s.eta_min
            if (e - 1 - T) % (2 * T) == 0:
                lr = lr + (base - eta) * (1 - math.cos(math.pi / T)) / 2
            else:
                lr = (1 + math.cos(math.pi * e / T)) / (1 + math.cos(math.pi * (e - 1) / T)) * (lr - eta) + eta
        elif s.type == "linear":
            if e <= s.total_iters:
                d = s.end_factor - s.start_factor
                lr = lr * (1 + d / (s.total_iters * s.start_factor + (e - 1) * d))
        elif s.type == "step":
            lr = lr * s.gamma if e % s.step_size == 0 else lr
        else:
            lr = lr * s.gamma
        lrs.append(lr)
    return lrs


SCHEDULES = {
    "step": ScheduleSpec("step", step_size=3, gamma=0.5),
    "exponential": ScheduleSpec("exponential", gamma=0.9),
    "cosine": ScheduleSpec("cosine", t_max=6, eta_min=0.001),
    "cosine-eta0": ScheduleSpec("cosine", t_max=7),
    "linear": ScheduleSpec("linear"),
    "linear-down": ScheduleSpec("linear", start_factor=1.0, end_factor=0.1, total_iters=8),
}


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedule_over_20_steps(name):
    """The engine's lr after each step, against the docs' closed form (to 1e-12: the recursive form
    torch steps with rounds differently) and the recursive form (to 1e-14)."""
    s = SCHEDULES[name]
    opt = OptimizerSpec("sgd", lr=0.1, schedule=s)
    lr = schedule(opt).initial_lr()
    rec = recursive_docs(s, 0.1, 20)
    assert lr == pytest.approx(closed_form(s, 0.1, 0), rel=1e-15)
    for e in range(1, 21):
        lr = schedule(opt).next_lr(lr, e)
        assert lr == pytest.approx(closed_form(s, 0.1, e), rel=1e-12, abs=1e-15), e
        assert lr == pytest.approx(rec[e], rel=1e-14, abs=1e-17), e


SCHED = TRAIN.replace("[train]", "[optimizer.schedule]\n{sched}\n[train]").replace("steps = 6", "steps = 20")


@pytest.mark.parametrize("sched,spec", [
    ('type = "cosine"\nt_max = 6\neta_min = 0.001', SCHEDULES["cosine"]),
    ('type = "linear"', SCHEDULES["linear"]),
    ('type = "step"\nstep_size = 3\ngamma = 0.5', SCHEDULES["step"]),
    ('type = "exponential"\ngamma = 0.9', SCHEDULES["exponential"]),
], ids=["cosine", "linear", "step", "exponential"])
def test_program_uses_the_lr_in_force(sched, spec, tmp_path, capsys):
    """Through the program, 20 steps of SGD: the update of step k moves by −lr_k·g with lr_k the
    closed form after k − 1 scheduler steps; the tensor `lr` at the end of step k is lr_{k+1}; and
    `run --json` reports lr_k with step k."""
    import json

    from nnstep.cli import main
    text = SCHED.format(opt='type = "sgd"\nlr = 0.1', sched=sched)
    sc = loads_scenario(text)
    assert sc.optimizer.schedule == spec
    prog = Program(sc)
    assert prog.ops[-1].name == "lr schedule" and prog.ops[-1].stage == "update"
    env = prog.initial_env()
    for k in range(1, 21):
        lr_k = closed_form(spec, 0.1, k - 1)
        old = {p: env[p] for p in sc.trainable}
        run_step(prog, env, k)
        for p in sc.trainable:
            np.testing.assert_allclose(env[p], old[p] - lr_k * env[f"{p}.grad"], rtol=1e-12, atol=1e-16)
        assert float(env["lr"]) == pytest.approx(closed_form(spec, 0.1, k), rel=1e-12, abs=1e-15)
    f = tmp_path / "s.toml"
    f.write_text(text)
    assert main(["run", str(f), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["lr"] for r in doc["steps"]] == pytest.approx([closed_form(spec, 0.1, k - 1) for k in range(1, 21)],
                                                           rel=1e-12, abs=1e-15)


def test_update_formula_shows_this_steps_lr():
    """The update op reads the tensor `lr`, so its formula's numbers show the lr of this step."""
    sc = loads_scenario(SCHED.format(opt='type = "sgd"\nlr = 0.1', sched='type = "step"\nstep_size = 1\ngamma = 0.5')
                        .replace("out = 2", "out = 1").replace("shape = [6, 2]", "shape = [6, 1]"))
    prog = Program(sc)
    env = prog.initial_env()
    run_step(prog, env, 1)
    run_step(prog, env, 2)                                       # step 3 runs with lr 0.1·0.5² = 0.025
    op = next(o for o in prog.ops if o.name == "update linear2.bias")
    before = {n: env[n] for n in op.inputs}
    vs = views(op.formula, before, {}, step=3)
    assert vs[-1].text == "linear2.bias ← linear2.bias − lr·linear2.bias.grad"
    assert "− 0.025·" in vs[-1].numbers
    sop = prog.ops[-1]
    vs = views(sop.formula, {"lr": np.asarray(0.025)}, {"lr": np.asarray(0.0125)}, step=3)
    assert vs[1].numbers == "0.0125 ← 0.5·0.025 if 3 mod 1 = 0, else 0.025"
