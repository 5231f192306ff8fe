"""torch.optim.SGD and torch.optim.Adam, one parameter at a time, out of place.

Each update returns the new parameter and the optimizer state it used and wrote, by name suffix
(the names are the catalogue's, spec.catalog.optimizer_state), so the screen can show the momentum
buffer or Adam's m, v and bias corrections.
"""
from __future__ import annotations

import math

import numpy as np

from ..spec.model import OptimizerSpec


def update(opt: OptimizerSpec, t: int, p: np.ndarray, grad: np.ndarray, state: dict):
    """Return (new_p, written) where written maps suffixes to the values written (state and
    derived quantities). ``t`` is the 1-based step count; ``state`` maps suffix -> previous value."""
    g = grad + opt.weight_decay * p if opt.weight_decay else grad
    if opt.type == "adam":
        b1, b2 = opt.betas
        # torch starts exp_avg and exp_avg_sq at zeros (the program holds them from step 0)
        m_old = state.get("m")
        v_old = state.get("v")
        if m_old is None:
            m_old = np.zeros_like(g)
        if v_old is None:
            v_old = np.zeros_like(g)
        # as torch's single-tensor Adam: exp_avg.lerp_(g, 1 − β1); exp_avg_sq.mul_(β2).addcmul_(g, g,
        # value=1 − β2). lerp(a, b, w) is a + w·(b − a) for |w| < 0.5, else b − (b − a)·(1 − w).
        w = 1 - b1
        m = m_old + w * (g - m_old) if abs(w) < 0.5 else g - (g - m_old) * (1 - w)
        v = v_old * b2 + (1 - b2) * g * g
        bc1 = 1 - b1 ** t
        bc2 = 1 - b2 ** t
        step_size = opt.lr / bc1
        denom = np.sqrt(v) / math.sqrt(bc2) + opt.eps   # math.sqrt: a Python float keeps float32 float32
        new = p - step_size * (m / denom)
        return new, {"m": m, "v": v, "m_hat": m / bc1, "v_hat": v / bc2}
    if opt.momentum:
        b_old = state.get("buf")
        buf = g if b_old is None else opt.momentum * b_old + (1 - opt.dampening) * g
        d = g + opt.momentum * buf if opt.nesterov else buf
        return p - opt.lr * d, {"buf": buf}
    return p - opt.lr * g, {}
