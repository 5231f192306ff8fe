"""One training step compiled to the program of operations of SPEC §3.

The program is built once per scenario. Each :class:`Op` carries its stage, name, layer, formula
(with tensor names filled in) and the names of the tensors it reads and writes. Running an op reads
its inputs from an environment (a dict name -> array) and writes its outputs into it. Nothing is
modified in place, so keeping a reference to any value is enough to record it.

Persistent tensors (parameters, optimizer state, batchnorm running statistics) are the only state
carried from one step to the next; a step boundary is fully described by them plus the step number
(the batch order is a pure function of the seed and the step).
"""
from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from ..scenario.model import Scenario
from . import losses, optim
from .layers import LAYERS, Layer

STAGES = ("forward", "loss", "backward", "update")


@dataclass(frozen=True)
class Op:
    index: int
    stage: str
    name: str
    layer: str | None
    formula: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    param: str | None = None               # update ops: the parameter updated
    also_writes: tuple[str, ...] = ()      # aliases written too (the next layer down's grad_out)
    run: Callable = field(default=None, repr=False, compare=False)


def without_absent(template: str, L) -> str:
    """Drop the terms of parameters a layer does not have (bias = false, affine = false)."""
    for p in L.param_names:
        if p in getattr(L, "present", L.param_names):
            continue
        template = ";  ".join(seg for seg in template.split(";  ") if "{%s.grad}" % p not in seg)
        template = re.sub(r"\s*\+\s*\{%s\}(\[[^\]]*\])?" % p, "", template)
        template = re.sub(r"\{%s\}(\[[^\]]*\])?\s*[·⊙]\s*" % p, "", template)
        template = re.sub(r"\s*[·⊙]\s*\{%s\}(\[[^\]]*\])?" % p, "", template)
    return template


def fill(template: str, names: dict[str, str]) -> str:
    return re.sub(r"\{([A-Za-z_.]+)\}", lambda m: names.get(m.group(1), m.group(0)), template)


class Program:
    def __init__(self, sc: Scenario, skip: Iterable[str] = ()):
        """``skip``: names of tensors the caller will never read, which ops may then leave
        uncomputed (`nnstep run` reports neither the first layer's grad_in nor the parameters'
        deltas). The op list, with every op's inputs and outputs, is the same either way; only
        the first layer's grad_in (for layers whose backward takes ``need_in``) and update deltas
        can be skipped."""
        self.scenario = sc
        self.skip = frozenset(skip)
        self.dtype = sc.np_dtype
        self.layers: list[Layer] = []
        for spec in sc.layers:
            L = LAYERS[spec.type](spec.name, spec.options, spec.in_shape)
            L.spec = spec
            L.present = tuple(spec.params)          # params this instance has (bias = false drops one)
            self.layers.append(L)
        self.opt_state = optim.state_names(sc.optimizer)
        self.ops: list[Op] = []
        self._build()
        self.persistent: list[str] = list(sc.param_names)
        for L in self.layers:
            self.persistent += [f"{L.name}.{s}" for s in L.state_names]
        for P in sc.trainable:
            self.persistent += [f"{P}.{s}" for s in self.opt_state]
        self._perm_cache: tuple[int, np.ndarray] | None = None
        self.stage_start = {}
        for op in self.ops:
            self.stage_start.setdefault(op.stage, op.index)

    # ---------------------------------------------------------------------------------------------
    def in_name(self, i: int) -> str:
        return "input" if i == 0 else f"{self.layers[i - 1].name}.out"

    def _build(self):
        sc = self.scenario
        ops = []

        def add(**kw):
            ops.append(Op(index=len(ops), **kw))

        # forward
        for i, L in enumerate(self.layers):
            n = L.name
            x = self.in_name(i)
            pnames = [f"{n}.{p}" for p in L.present]
            snames = [f"{n}.{s}" for s in L.state_names]
            names = {"in": x, "out": f"{n}.out"}
            names.update({p: f"{n}.{p}" for p in L.param_names})
            names.update({s: f"{n}.{s}" for s in L.state_names + L.extra_names})
            outs = [f"{n}.out"] + [f"{n}.{e}" for e in L.extra_names] + snames
            add(stage="forward", name=f"forward {n}", layer=n, formula=fill(without_absent(L.fwd_formula, L), names),
                inputs=tuple([x] + pnames + snames), outputs=tuple(outs), run=self._fwd(L, x, pnames, snames))
        last = f"{self.layers[-1].name}.out"
        lo = sc.loss
        lnames = {"pred": last, "target": "target", "loss": "loss", "loss.grad": "loss.grad"}
        red = "Σ" if lo.reduction == "sum" else "mean"
        fwd_f, bwd_f = losses.FORMULAS[lo.type]
        s_txt = f"{lo.scale:g}"
        nr = "1" if lo.reduction == "sum" else ("N" if lo.type == "cross_entropy" else "numel")
        fwd_f = fill(fwd_f, lnames).replace("s · R(", f"{s_txt} · {red}(").replace("β", f"β({lo.beta:g})") \
            .replace("δ", f"δ({lo.delta:g})")
        bwd_f = fill(bwd_f, lnames).replace("s · ", f"{s_txt} · ").replace("n_R", nr)
        add(stage="loss", name="loss", layer=None, formula=fwd_f, inputs=(last, "target"), outputs=("loss",),
            run=self._loss(last))
        add(stage="backward", name="backward loss", layer=None, formula=bwd_f, inputs=(last, "target"),
            outputs=("loss.grad",), also_writes=(f"{self.layers[-1].name}.grad_out",), run=self._loss_bwd(last))
        # backward
        for i in range(len(self.layers) - 1, -1, -1):
            L = self.layers[i]
            n = L.name
            x = self.in_name(i)
            pnames = [f"{n}.{p}" for p in L.present]
            names = {"in": x, "out": f"{n}.out", "grad_out": f"{n}.grad_out", "grad_in": f"{n}.grad_in",
                     "local": f"{n}.local"}
            names.update({p: f"{n}.{p}" for p in L.param_names})
            names.update({f"{p}.grad": f"{n}.{p}.grad" for p in L.param_names})
            names.update({e: f"{n}.{e}" for e in L.extra_names})
            ins = [f"{n}.grad_out", x, f"{n}.out"] + pnames + [f"{n}.{e}" for e in L.extra_names]
            outs = ([f"{n}.local"] if L.elementwise else []) + [f"{p}.grad" for p in pnames] + [f"{n}.grad_in"]
            also = (f"{self.layers[i - 1].name}.grad_out",) if i > 0 else ()
            add(stage="backward", name=f"backward {n}", layer=n, formula=fill(without_absent(L.bwd_formula, L), names),
                inputs=tuple(ins), outputs=tuple(outs), also_writes=also, run=self._bwd(L, x, pnames, also))
        # update
        opt = sc.optimizer
        tmpl = optim.formula(opt)
        shown = ("m", "v", "m_hat", "v_hat") if opt.type == "adam" else self.opt_state
        for P in sc.trainable:
            names = {"P": P, "P.grad": f"{P}.grad"}
            names.update({f"P.{s}": f"{P}.{s}" for s in ("buf", "m", "v", "m_hat", "v_hat")})
            ins = [P, f"{P}.grad"] + [f"{P}.{s}" for s in self.opt_state]
            outs = [P, f"{P}.delta"] + [f"{P}.{s}" for s in shown]
            add(stage="update", name=f"update {P}", layer=P.rsplit(".", 1)[0], formula=fill(tmpl, names),
                inputs=tuple(ins), outputs=tuple(outs), param=P, run=self._upd(P))
        self.ops = ops

    # --- op bodies --------------------------------------------------------------------------------
    def _fwd(self, L: Layer, x: str, pnames, snames):
        n = L.name
        pkeys = [(p, f"{n}.{p}") for p in L.present] + [(s, f"{n}.{s}") for s in L.state_names]
        outname = f"{n}.out"
        extras = [(e, f"{n}.{e}") for e in L.extra_names]

        def run(env, k):
            out, ex, st = L.forward(env[x], {p: env[full] for p, full in pkeys})
            env[outname] = out
            for e, full in extras:
                env[full] = ex[e]
            for s, v in st.items():
                env[f"{n}.{s}"] = v
        return run

    def _loss(self, last):
        lo = self.scenario.loss
        ce = lo.type == "cross_entropy"
        memo = self._ce_memo = [None, None]      # (pred, its log_softmax): backward loss reuses it

        def run(env, k):
            p = env[last]
            lp = None
            if ce:
                lp = losses.log_softmax(p)
                memo[0], memo[1] = p, lp
            env["loss"] = losses.loss_forward(lo.type, p, env["target"], lo.reduction, lo.scale,
                                              lo.beta, lo.delta, lp=lp)
        return run

    def _loss_bwd(self, last):
        lo = self.scenario.loss
        alias = f"{self.layers[-1].name}.grad_out"
        memo = self._ce_memo

        def run(env, k):
            p = env[last]
            # the same array object (values are never modified in place): its log_softmax is known
            lp = memo[1] if memo[0] is p else None
            memo[0] = memo[1] = None                      # taken once
            g = losses.loss_backward(lo.type, p, env["target"], lo.reduction, lo.scale, lo.beta, lo.delta, lp=lp)
            env["loss.grad"] = g
            env[alias] = g
        return run

    def _bwd(self, L: Layer, x: str, pnames, also):
        n = L.name
        pkeys = [(p, f"{n}.{p}") for p in L.present]
        extras = [(e, f"{n}.{e}") for e in L.extra_names]
        gname, oname, ginname, lname = f"{n}.grad_out", f"{n}.out", f"{n}.grad_in", f"{n}.local"

        gradnames = {p: f"{n}.{p}.grad" for p in L.param_names}
        kw = {}
        if ginname in self.skip and not also and "need_in" in inspect.signature(L.backward).parameters:
            kw = {"need_in": False}

        def run(env, k):
            gin, grads, local = L.backward(env[gname], env[x], env[oname], {p: env[f] for p, f in pkeys},
                                           {e: env[f] for e, f in extras}, **kw)
            if local is not None:
                env[lname] = local
            for p, g in grads.items():
                env[gradnames[p]] = g
            if gin is not None:
                env[ginname] = gin
                for a in also:
                    env[a] = gin
        return run

    def _upd(self, P: str):
        opt = self.scenario.optimizer
        skeys = [(s, f"{P}.{s}") for s in self.opt_state]
        gname, dname = f"{P}.grad", f"{P}.delta"
        delta = dname not in self.skip
        wnames = {s: f"{P}.{s}" for s in ("buf", "m", "v", "m_hat", "v_hat")}

        def run(env, k):
            old = env[P]
            new, written = optim.update(opt, k, old, env[gname], {s: env.get(f) for s, f in skeys})
            env[P] = new
            if delta:
                env[dname] = new - old
            for s, v in written.items():
                env[wnames[s]] = v
        return run

    # --- data -------------------------------------------------------------------------------------
    def batch_indices(self, k: int):
        """Sample indices of step k's batch, or None for the whole data in order."""
        sc = self.scenario
        B, bs, N = sc.n_batches, sc.batch_size, sc.n_samples
        b, p = (k - 1) % B, (k - 1) // B
        if not sc.train.shuffle:
            return None if B == 1 else slice(b * bs, min(N, (b + 1) * bs))
        if self._perm_cache is None or self._perm_cache[0] != p:
            self._perm_cache = (p, np.random.default_rng([sc.seed, 2, p]).permutation(N))
        return self._perm_cache[1][b * bs:(b + 1) * bs]

    def feed(self, env: dict, k: int):
        idx = self.batch_indices(k)
        sc = self.scenario
        if idx is None:
            env["input"], env["target"] = sc.x, sc.y
        else:
            env["input"], env["target"] = sc.x[idx], sc.y[idx]

    # --- state ------------------------------------------------------------------------------------
    def initial_env(self) -> dict:
        sc = self.scenario
        env = {name: np.asarray(v, dtype=self.dtype) for name, v in sc.initial.items()}
        for L in self.layers:
            for s, v in L.initial_state(self.dtype).items():
                env[f"{L.name}.{s}"] = v
        if sc.optimizer.type == "adam":
            # torch.optim.Adam starts exp_avg and exp_avg_sq at zeros; holding them from step 0 lets the
            # first update show m = β1·0 + (1 − β1)·g with its real numbers (same values bit for bit)
            for P in sc.trainable:
                env[f"{P}.m"] = env[f"{P}.v"] = np.zeros_like(env[P])
        return env

    def checkpoint(self, env: dict) -> dict:
        """The persistent state, by reference (values are never modified in place)."""
        return {n: env[n] for n in self.persistent if n in env}

    def run_step(self, env: dict, k: int, check: Callable | None = None):
        """Run all of step k in ``env``. ``check(op, env)`` may return a stop reason to halt."""
        self.feed(env, k)
        with np.errstate(all="ignore"):
            for op in self.ops:
                op.run(env, k)
                if check is not None:
                    r = check(op, env)
                    if r is not None:
                        return r
        return None

    def run_op(self, env: dict, k: int, i: int):
        with np.errstate(all="ignore"):
            self.ops[i].run(env, k)

    def run_until(self, env: dict, k: int, stage: str) -> dict:
        """Feed step k's batch and run its ops up to (not including) the first op of ``stage``."""
        self.feed(env, k)
        with np.errstate(all="ignore"):
            for op in self.ops:
                if op.stage == stage:
                    break
                op.run(env, k)
        return env

    def forward_loss(self, params: dict, k: int = 1) -> float:
        """The loss of step k's batch for the given parameter values (forward pass only)."""
        env = self.initial_env()
        env.update(params)
        return float(self.run_until(env, k, "backward")["loss"])
