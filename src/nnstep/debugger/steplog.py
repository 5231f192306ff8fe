"""What the session logs once per training step as ops run: the loss, the learning rate in force
(with a schedule) and, per layer with trainable parameters, the 2-norm of its parameter gradients
(the TUI's loss curve and gradient-norm plot). Arrays indexed by step, grown by doubling as steps
are reached: 9 bytes a step for the loss, 8 more per layer and for the lr."""
from __future__ import annotations

import numpy as np

from ..model.stats import global_norm


class StepLog:
    def __init__(self, scenario, program) -> None:
        self.N = scenario.train.steps
        ops = program.ops
        self.M = len(ops)
        st = program.stage_start
        self.loss_at = st["loss"]                              # the op that writes `loss`
        self.gnorm_at = (st["update"] if "update" in st else self.M) - 1   # the backward stage's last op
        tr = set(scenario.trainable)
        self.grad_layers: list[tuple[str, tuple[str, ...]]] = [
            (L.name, ps) for L in scenario.layers
            if (ps := tuple(f"{L.name}.{p}.grad" for p in L.params if f"{L.name}.{p}" in tr))]
        self.writer: dict[str, int] = {}                      # a tensor -> the last op of a step writing it
        for op in ops:
            for name in op.outputs:
                self.writer[name] = op.index
        size = min(self.N + 2, 1024)
        self.loss = np.full(size, np.nan)                      # loss of step k, once computed
        self.has_loss = np.zeros(size, dtype=bool)
        self.gnorm = np.full((size, len(self.grad_layers)), np.nan)
        self.lr = np.full(size, np.nan) if scenario.optimizer.schedule is not None else None

    def note(self, index: int, k: int, env: dict) -> None:
        """Op ``index`` of step ``k`` has just run in ``env``: log what it completed."""
        if index == self.loss_at:
            if k >= len(self.loss):
                self._grow(k)
            self.loss[k] = env["loss"]
            self.has_loss[k] = True
            if self.lr is not None:
                self.lr[k] = env["lr"]
        if index == self.gnorm_at and self.grad_layers:
            if k >= len(self.gnorm):
                self._grow(k)
            self.gnorm[k] = [global_norm([env[g] for g in gs]) for _, gs in self.grad_layers]

    def _grow(self, k: int) -> None:
        size = min(self.N + 2, max(2 * len(self.loss), k + 1))
        loss, has = np.full(size, np.nan), np.zeros(size, dtype=bool)
        loss[:len(self.loss)], has[:len(self.has_loss)] = self.loss, self.has_loss
        g = np.full((size, self.gnorm.shape[1]), np.nan)
        g[:len(self.gnorm)] = self.gnorm
        self.loss, self.has_loss, self.gnorm = loss, has, g
        if self.lr is not None:
            lr = np.full(size, np.nan)
            lr[:len(self.lr)] = self.lr
            self.lr = lr

    # --- as of a cursor at (k, i) -----------------------------------------------------------------
    def losses(self) -> dict[int, float]:
        ks = np.flatnonzero(self.has_loss)
        return {int(k): float(self.loss[k]) for k in ks}

    def loss_arrays(self, k: int, i: int) -> tuple[np.ndarray, np.ndarray]:
        done = k if (k <= self.N and i > self.loss_at) else k - 1
        ks = np.flatnonzero(self.has_loss[1:done + 1]) + 1
        return ks, self.loss[ks]

    def grad_norm_arrays(self, k: int, i: int) -> tuple[np.ndarray, list[str], np.ndarray]:
        done = k if (k <= self.N and i > self.gnorm_at) else k - 1
        ks = np.flatnonzero(~np.isnan(self.gnorm[1:done + 1, 0]) if self.grad_layers else
                            np.zeros(0, dtype=bool)) + 1
        return ks, [n for n, _ in self.grad_layers], self.gnorm[ks]

    def grad_norms_so_far(self, k: int, i: int, env: dict) -> list[float | None]:
        if k > self.N:
            return [None] * len(self.grad_layers)
        last = self.writer
        return [global_norm([env[g] for g in gs]) if all(last.get(g, self.M) < i for g in gs) else None
                for _, gs in self.grad_layers]

    def lr_arrays(self, k: int, i: int) -> tuple[np.ndarray, np.ndarray] | None:
        if self.lr is None:
            return None
        ks, _ = self.loss_arrays(k, i)
        return ks, self.lr[ks]

    @property
    def nbytes(self) -> int:
        return self.loss.nbytes + self.has_loss.nbytes + (self.lr.nbytes if self.lr is not None else 0)
