"""The headless workload of the performance targets (docs/commands.md): nnstep's training step against a hand-written numpy step.

A 784-128-10 ReLU MLP, batch 64, cross-entropy (mean), plain SGD, random data, float64 and float32.
In the same process, step by step, alternating which goes first, it times:
  hand    a hand-written numpy forward / backward / SGD step (the baseline), and
  nnstep  the one op runner exactly as `nnstep run` drives it: every op of docs/commands.md with its named
          outputs, the stop detector's NaN/Inf check after every op (engine.runner), and the first layer's
          grad_in and the deltas left out, as `run` leaves them out (it reports neither; trace and
          the debugger compute them),
and prints the median time of each and their ratio (target, docs/commands.md, in-process: nnstep/hand ≤ 1.1). The 2-2-2 classic
net is timed the same way, for information (per-op overhead dominates there).

    python bench/bench_run.py            # full: many repetitions
    python bench/bench_run.py --smoke    # a few seconds, for CI
    python bench/bench_run.py --threads 2

Timing is never asserted: this prints figures. Note: OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, when set
on this machine, slow numpy's BLAS; compare runs with the same environment.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

# BLAS threads, before numpy loads: 1 by default (--threads N to change). On a shared 2-core machine
# a 2-thread GEMM whose second thread is descheduled can take 100x longer; one thread keeps the
# figures steady, and both sides of the comparison run with the same setting.
_threads = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--threads=")), None)
if _threads is None and "--threads" in sys.argv[:-1]:
    _threads = sys.argv[sys.argv.index("--threads") + 1]
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = _threads or os.environ.get(_v, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from nnstep import loads_scenario                      # noqa: E402
from nnstep.engine.program import Program              # noqa: E402
from nnstep.engine.runner import Detector             # noqa: E402
from nnstep.headless import run_skip                  # noqa: E402

MLP = """
[scenario]
name = "784-128-10 relu mlp"
seed = 0
dtype = "{dtype}"
[data]
x = {{ random = "normal", shape = [64, 784] }}
y = {{ random = "integers", low = 0, high = 10, shape = [64] }}
[[layers]]
type = "linear"
out = 128
[[layers]]
type = "relu"
[[layers]]
type = "linear"
out = 10
[loss]
type = "cross_entropy"
[optimizer]
type = "sgd"
lr = 0.01
"""

CLASSIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scenarios", "classic.toml")


def run_step(prog, env, k, detector=None):
    """One training step as `nnstep run` takes it (headless.cmd_run): step k's batch fed, then its
    ops through the one op runner, halting at the detector's first stop (returned; else None)."""
    from nnstep.engine.runner import advance
    prog.feed(env, k)
    M, stops = len(prog.ops), []
    advance(prog, env, k, 0, k * M, k - 1, detector, sink=lambda s: stops.append(s) or True)
    return stops[0] if stops else None


class Engine:
    """What `nnstep run` does per step (headless.cmd_run): a Program that skips what run never
    reads (the first layer's grad_in, the deltas), each step through the runner with the detector."""

    def __init__(self, sc):
        self.prog = Program(sc, skip=run_skip(sc))
        self.env = self.prog.initial_env()
        self.check = Detector(self.prog.ops, sc.breakpoints, op_breakpoints=False, skip=self.prog.skip)
        self.k = 0

    def step(self):
        self.k += 1
        stop = run_step(self.prog, self.env, self.k, self.check)
        assert stop is None, stop
        return self.env["loss"]


class Hand:
    """A hand-written numpy step for an MLP of Linear layers with ReLU (or sigmoid) between them:
    forward, cross-entropy or ½·Σ squared error, backward, SGD. What someone would write by hand."""

    def __init__(self, sc):
        self.W = [sc.initial[f"{L.name}.weight"] for L in sc.layers if L.type == "linear"]
        self.b = [sc.initial[f"{L.name}.bias"] for L in sc.layers if L.type == "linear"]
        self.act = next(L.type for L in sc.layers if L.type != "linear")
        self.x, self.y = sc.x, sc.y
        self.lr = sc.optimizer.lr
        self.loss = sc.loss
        self.frozen_bias = any("bias" in L.frozen for L in sc.layers)

    def step(self):
        W1, W2 = self.W
        b1, b2 = self.b
        x, y = self.x, self.y
        z1 = x @ W1.T + b1
        if self.act == "relu":
            h = np.maximum(z1, 0)
        else:
            h = 1 / (1 + np.exp(-z1))
        z2 = h @ W2.T + b2
        if self.loss.type == "cross_entropy":
            n = z2.shape[0]
            s = z2 - z2.max(axis=1, keepdims=True)
            e = np.exp(s)
            lse = np.log(e.sum(axis=1, keepdims=True))
            loss = -(s - lse)[np.arange(n), y].mean()
            g = e / e.sum(axis=1, keepdims=True)
            g[np.arange(n), y] -= 1
            g /= n
        else:                                           # classic: sigmoid out, ½·Σ(out − y)²
            o = 1 / (1 + np.exp(-z2))
            loss = 0.5 * ((o - y) ** 2).sum()
            g = (o - y) * o * (1 - o)
        gW2 = g.T @ h
        gb2 = g.sum(axis=0)
        gh = g @ W2
        gz1 = gh * (z1 > 0) if self.act == "relu" else gh * h * (1 - h)
        gW1 = gz1.T @ x
        gb1 = gz1.sum(axis=0)
        self.W = [W1 - self.lr * gW1, W2 - self.lr * gW2]
        if not self.frozen_bias:
            self.b = [b1 - self.lr * gb1, b2 - self.lr * gb2]
        return loss


def bench(sc, reps, warmup):
    """Median seconds per step of each. Steps are interleaved one by one (A B, then B A, ...) and
    timed one at a time: on a shared machine a step now and then loses a time slice to another
    process (a 4 ms spike), which the median of single steps ignores."""
    a, b = Hand(sc), Engine(sc)
    # both compute the same thing: check the first step's loss agrees
    la, lb = float(a.step()), float(b.step())
    assert abs(la - lb) <= 1e-4 * abs(la) + 1e-6, (la, lb)
    for _ in range(warmup):
        a.step()
        b.step()
    ta, tb = [], []
    clock = time.perf_counter
    sa, sb = a.step, b.step
    for r in range(reps):
        if r % 2:
            t0 = clock(); sa(); t1 = clock(); sb(); t2 = clock()
            ta.append(t1 - t0); tb.append(t2 - t1)
        else:
            t0 = clock(); sb(); t1 = clock(); sa(); t2 = clock()
            tb.append(t1 - t0); ta.append(t2 - t1)
    return statistics.median(ta), statistics.median(tb)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="a few seconds, for CI")
    ap.add_argument("--reps", type=int, default=None, help="timed steps per workload")
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1)")
    args = ap.parse_args(argv)
    reps = args.reps or (101 if args.smoke else 1001)
    warm = 10 if args.smoke else 50
    try:
        from threadpoolctl import threadpool_info
        blas = ", ".join(f"{i['internal_api']} {i.get('architecture', '')} {i['num_threads']} threads"
                         for i in threadpool_info())
    except Exception:                                 # threadpoolctl is optional
        blas = "?"
    print(f"numpy {np.__version__}; BLAS: {blas}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '')}")
    print(f"{'workload':<34} {'hand (ms)':>10} {'nnstep (ms)':>12} {'ratio':>7}   target")
    ratios = {}
    for dtype in ("float64", "float32"):
        sc = loads_scenario(MLP.format(dtype=dtype))
        h, e = bench(sc, reps, warm)
        ratios[dtype] = e / h
        print(f"{'784-128-10 relu, batch 64, ' + dtype:<34} {h * 1e3:>10.3f} {e * 1e3:>12.3f} {e / h:>7.2f}   ≤ 1.1")
    from nnstep import load_scenario
    sc = load_scenario(CLASSIC)
    h, e = bench(sc, reps * (3 if args.smoke else 10), warm * 10)
    print(f"{'2-2-2 classic (information)':<34} {h * 1e3:>10.4f} {e * 1e3:>12.4f} {e / h:>7.2f}")
    worst = max(ratios.values())
    print(f"headless ratio (worst of float64/float32): {worst:.2f} — "
          + ("within the 1.1 target" if worst <= 1.1 else "ABOVE the 1.1 target"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
