"""A warm-up then cosine schedule ([optimizer.schedule] type = "cosine" with warmup = W): torch's
SequentialLR([LinearLR(start_factor=warmup_start, total_iters=W), CosineAnnealingLR(t_max, eta_min)],
milestones=[W]), against a re-implementation written from torch's source (below), over 30 steps."""
import math

import numpy as np
import pytest

from nnstep import loads_scenario
from enginehelp import run_step, schedule
from nnstep.engine.program import Program


def torch_sequential(lr0, W, a, T, eta, steps):
    """The lr in force at steps 1..steps, as torch.optim.lr_scheduler computes it:
    - constructing LinearLR: last_epoch 0, lr = lr0·a; constructing CosineAnnealingLR, then
      SequentialLR resets lr to lr0, undoes both schedulers' first step and redoes LinearLR's: lr0·a;
    - SequentialLR.step(): last_epoch += 1; idx = bisect_right([W], last_epoch); at the milestone
      the cosine's step(0) (its _get_closed_form_lr at epoch 0: eta + (lr0 − eta)·(1 + cos 0)/2),
      before it LinearLR.get_lr(), after it CosineAnnealingLR.get_lr() with its own last_epoch."""
    lrs, lr = [lr0 * a], lr0 * a
    lin_epoch, cos_epoch = 0, None
    for e in range(1, steps):
        if e < W:
            lin_epoch += 1
            if lin_epoch <= W:                 # LinearLR.get_lr (end_factor 1, total_iters W)
                lr = lr * (1.0 + (1.0 - a) / (W * a + (lin_epoch - 1) * (1.0 - a)))
        elif e == W:
            cos_epoch = 0
            lr = eta + (lr0 - eta) * (1 + math.cos(math.pi * cos_epoch / T)) / 2
        else:
            cos_epoch += 1                     # CosineAnnealingLR.get_lr, recursive
            if (cos_epoch - 1 - T) % (2 * T) == 0:
                lr = lr + (lr0 - eta) * (1 - math.cos(math.pi / T)) / 2
            else:
                lr = ((1 + math.cos(math.pi * cos_epoch / T)) / (1 + math.cos(math.pi * (cos_epoch - 1) / T))
                      * (lr - eta) + eta)
        lrs.append(lr)
    return lrs


NET = """
[data]
x = [[1.0]]
y = [[0.0]]
[[layers]]
type = "linear"
out = 1
weight = [[1.0]]
bias = false
[loss]
type = "mse"
[optimizer]
type = "sgd"
lr = {lr}
[optimizer.schedule]
type = "cosine"
t_max = {T}
eta_min = {eta}
warmup = {W}
warmup_start = {a}
[train]
steps = 30
"""


@pytest.mark.parametrize("lr0, W, a, T, eta", [(0.4, 4, 0.25, 4, 0.0), (0.1, 5, 1 / 3, 20, 0.001),
                                                (0.05, 1, 0.5, 3, 0.0), (0.3, 10, 0.01, 7, 0.01)])
def test_the_program_follows_torchs_sequential_lr(lr0, W, a, T, eta):
    sc = loads_scenario(NET.format(lr=lr0, W=W, a=a, T=T, eta=eta))
    ref = torch_sequential(lr0, W, a, T, eta, 30)
    got = [schedule(sc.optimizer).initial_lr()]
    for k in range(1, 30):
        got.append(schedule(sc.optimizer).next_lr(got[-1], k))
    np.testing.assert_allclose(got, ref, rtol=1e-13, atol=1e-16)
    prog = Program(sc)                              # and through the ops, step by step
    env = prog.initial_env()
    for k in range(1, 30):
        assert float(env["lr"]) == pytest.approx(ref[k - 1], rel=1e-13, abs=1e-16)
        run_step(prog, env, k)
    assert float(env["lr"]) == pytest.approx(ref[29], rel=1e-13, abs=1e-16)


def test_without_warmup_the_cosine_is_unchanged():
    plain = loads_scenario(NET.format(lr=0.4, W=0, a=0.25, T=4, eta=0.0))
    lr = schedule(plain.optimizer).initial_lr()
    assert lr == 0.4
    assert schedule(plain.optimizer).next_lr(lr, 1) == pytest.approx(0.2 * (1 + math.sqrt(0.5)), rel=1e-15)
