"""Central differences in float64 against the analytic gradient of every parameter."""
from __future__ import annotations

import math
from ..layers.records import replace

import numpy as np

from ..model.scenario import Scenario
from .program import Program


def gradcheck(sc: Scenario, eps: float = 1e-6, max_elements: int = 64, step: int = 1):
    """Central differences in float64 against the analytic gradient of every parameter at ``step``'s
    batch and the initial parameters. Returns rows: (param, shape, n_checked, worst_err, index,
    analytic, numeric), none for a network without parameters. The error is
    |a − n| / max(|a|, |n|, 1e-3): relative for gradients above 1e-3, absolute (scaled by 1000)
    below, where finite differences are only good to ~1e-10."""
    sc64 = replace(sc, dtype="float64", x=sc.x.astype(np.float64) if sc.x.dtype.kind == "f" else sc.x,
                   y=sc.y.astype(np.float64) if sc.y.dtype.kind == "f" else sc.y,
                   initial={k: v.astype(np.float64) for k, v in sc.initial.items()})
    prog = Program(sc64)
    env = prog.run_until(prog.initial_env(), step, "update")
    base = {p: env[p] for p in sc64.param_names}
    rng = np.random.default_rng([sc.seed, 3])
    rows = []
    for p in sc64.param_names:
        a_full = env[f"{p}.grad"]
        size = a_full.size
        if size <= max_elements:
            idxs = range(size)
        else:
            top = np.argsort(-np.abs(a_full.ravel()))[: max_elements // 2]
            rest = rng.choice(size, size=max_elements - len(top), replace=False)
            idxs = sorted(set(top.tolist()) | set(rest.tolist()))
        worst = (-1.0, 0, 0.0, 0.0)
        for j in idxs:
            flat = base[p].ravel()
            plus = flat.copy()
            plus[j] += eps
            minus = flat.copy()
            minus[j] -= eps
            lp = prog.forward_loss({**base, p: plus.reshape(base[p].shape)}, step)
            lm = prog.forward_loss({**base, p: minus.reshape(base[p].shape)}, step)
            num = (lp - lm) / (2 * eps)
            ana = float(a_full.ravel()[j])
            err = abs(ana - num) / max(abs(ana), abs(num), 1e-3)
            if not math.isfinite(err):
                err = math.inf
            if err > worst[0]:
                worst = (err, j, ana, num)
        idx = tuple(int(i) for i in np.unravel_index(worst[1], a_full.shape))
        rows.append((p, tuple(a_full.shape), len(idxs), worst[0], idx, worst[2], worst[3]))
    return rows
