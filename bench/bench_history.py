"""History benchmark (docs/commands.md, "Performance", issue 3): the debugger session's cost of stepping back.

On a 784-128-10 ReLU MLP (101,770 parameters), random data (640 samples, batch 64, shuffled),
cross-entropy and SGD with momentum 0.9, it runs N steps through ``Session.run()`` (default 10,000)
and then measures, each printed against its target:

* ``history_bytes()``: checkpoints, step-start environments and the loss log, beyond the live
  model (target < 64 MB); after the run and the largest seen during all the moves below;
* one operation back (``back()``), walking back 120 ops from the end (ten steps, so off the dense
  ring of checkpoints too): median and max (target < 50 ms);
* ``goto`` to random positions in the last 100 steps: median and max (target < 200 ms);
* ``goto`` to random positions anywhere: median and max (target < 2 s);

next to the time of one training step: a hand-written numpy step on the same net and batch, the
engine's step (the op runner over a whole step) and the session's own step during ``run()``. Next to each
time it prints the training steps that move re-executed, which does not depend on the machine's
load. At the end it checks, bit for bit, every tensor at the end against what the run left there,
and at one early position against a fresh session stepped there.

    python bench/bench_history.py            # 10,000 steps (under a minute on a quiet machine)
    python bench/bench_history.py --smoke    # 1,000 steps, a few seconds
    python bench/bench_history.py --steps 3000 --seed 1
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time

# One BLAS thread unless the caller chose otherwise, set before numpy loads. On a shared 2-core
# machine two OpenBLAS threads spin against other processes and a step's time swings up to 50x;
# one thread keeps the figures comparable. The session replays exactly either way (same process).
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

import nnstep  # noqa: E402
from nnstep.engine.program import Program  # noqa: E402

TARGETS = {"history": 64e6, "back": 0.050, "last100": 0.200, "anywhere": 2.0}

SCENARIO = """
[scenario]
name = "bench 784-128-10"
seed = {seed}
[data]
x = {{ random = "normal", shape = [640, 784] }}
y = {{ random = "integers", low = 0, high = 10, shape = [640] }}
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
momentum = 0.9
[train]
steps = {steps}
batch_size = 64
shuffle = true
"""


def run_step(prog, env, k, detector=None):
    """One training step as `nnstep run` takes it (headless.cmd_run): step k's batch fed, then its
    ops through the one op runner, halting at the detector's first stop (returned; else None)."""
    from nnstep.engine.runner import advance
    prog.feed(env, k)
    M, stops = len(prog.ops), []
    advance(prog, env, k, 0, k * M, k - 1, detector, sink=lambda s: stops.append(s) or True)
    return stops[0] if stops else None



def hand_step_time(sc, reps: int = 200) -> float:
    """Median time of a hand-written numpy step (forward, cross-entropy, backward, SGD momentum)."""
    x, y = sc.x[:64], sc.y[:64]
    W1, b1, W2, b2 = (sc.initial[n].copy() for n in ("linear1.weight", "linear1.bias", "linear2.weight",
                                                      "linear2.bias"))
    bufs = [None] * 4
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        h = x @ W1.T + b1
        a = np.maximum(h, 0)
        z = a @ W2.T + b2
        zs = z - z.max(axis=1, keepdims=True)
        lse = np.log(np.exp(zs).sum(axis=1, keepdims=True))
        logp = zs - lse
        _loss = -logp[np.arange(64), y].mean()
        g = np.exp(logp)
        g[np.arange(64), y] -= 1
        g /= 64
        gW2, gb2 = g.T @ a, g.sum(0)
        ga = g @ W2
        gh = ga * (h > 0)
        gW1, gb1 = gh.T @ x, gh.sum(0)
        params = [W1, b1, W2, b2]
        for j, gr in enumerate((gW1, gb1, gW2, gb2)):
            bufs[j] = gr if bufs[j] is None else 0.9 * bufs[j] + gr
            params[j] = params[j] - 0.01 * bufs[j]
        W1, b1, W2, b2 = params
        times.append(time.perf_counter() - t)
    return statistics.median(times)


WORK: list[float] = []          # steps re-executed by each timed move, in the same order


def timed(f, s=None) -> float:
    n0 = s.ops_executed if s is not None else 0
    t = time.perf_counter()
    f()
    dt = time.perf_counter() - t
    if s is not None:
        WORK.append((s.ops_executed - n0) / s.M)
    return dt


def fmt_t(s: float) -> str:
    return f"{s * 1e3:8.2f} ms"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=10_000, help="training steps to run (default 10,000)")
    ap.add_argument("--smoke", action="store_true", help="a quick run: 1,000 steps, fewer samples")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    steps = 1_000 if a.smoke else a.steps
    rng = random.Random(a.seed)
    sc = nnstep.loads_scenario(SCENARIO.format(seed=a.seed, steps=steps))
    s = nnstep.Session(sc)
    M, N = s.M, s.N
    model = sum(v.nbytes for v in sc.initial.values())
    print(f"{sc.name}: {sum(v.size for v in sc.initial.values()):,} parameters ({model / 1e6:.2f} MB), "
          f"{M} ops per step, {N:,} steps, numpy {np.__version__}, "
          f"BLAS threads {os.environ.get('OPENBLAS_NUM_THREADS')}, load average {os.getloadavg()[0]:.1f}")
    hand = hand_step_time(sc)
    prog = Program(sc)
    env = prog.initial_env()
    engine = timed(lambda: [run_step(prog, env, k) for k in range(1, 301)]) / 300

    t_run = timed(s.run)
    assert s.at_end, s.last_stop
    final = s.values()
    per_step = t_run / N
    hist_after_run = s.history_bytes()
    hist_max = hist_after_run
    print(f"  hand-written numpy step        {fmt_t(hand)}")
    print(f"  engine step (the op runner) {fmt_t(engine)}  ({engine / hand:.2f}x; every tensor, as the session computes it)")
    print(f"  session step during run()      {fmt_t(per_step)}  ({per_step / hand:.2f}x; with NaN/Inf checks and checkpoints; "
          f"run() of {N:,} steps took {t_run:.1f} s)")
    print(f"  checkpoints after the run: {len(s.checkpoints)} at steps {s.checkpoints[:3]} ... {s.checkpoints[-6:]}")

    backs = []
    for _ in range(10 * M):
        backs.append(timed(s.back, s))
        hist_max = max(hist_max, s.history_bytes())
    w_back = WORK[:]

    def jumps(lo_step: int, n: int) -> list[float]:
        nonlocal hist_max
        out = []
        for _ in range(n):
            k = rng.randint(lo_step, N)
            i = rng.randrange(M)
            out.append(timed(lambda: s.goto(k, i), s))
            assert s.position == (k, i)
            hist_max = max(hist_max, s.history_bytes())
        return out

    s.goto(N + 1, 0)
    WORK.clear()
    last100 = jumps(max(1, N - 99), 40)
    w_last100 = WORK[:]
    s.goto(N + 1, 0)
    WORK.clear()
    anywhere = jumps(1, 25)
    w_anywhere = WORK[:]

    def same(a: dict, b: dict) -> bool:
        return sorted(a) == sorted(b) and all(np.array_equal(a[n], b[n], equal_nan=True) for n in a)

    s.goto(N + 1, 0)
    exact = same(s.values(), final)
    # and somewhere early, against a fresh session stepped there forward
    k, i = rng.randint(2, min(N, 300)), rng.randrange(M)
    s.goto(k, i)
    fresh = nnstep.Session(sc)
    while fresh.position != (k, i):
        fresh.step()
    exact_early = same(s.values(), fresh.values())

    rows = [
        ("history beyond the model, after run()", hist_after_run, TARGETS["history"], None),
        ("history beyond the model, max over all moves", hist_max, TARGETS["history"], None),
        ("one op back, median", statistics.median(backs), TARGETS["back"], statistics.median(w_back)),
        ("one op back, max", max(backs), TARGETS["back"], max(w_back)),
        ("jump in the last 100 steps, median", statistics.median(last100), TARGETS["last100"],
         statistics.median(w_last100)),
        ("jump in the last 100 steps, max", max(last100), TARGETS["last100"], max(w_last100)),
        ("jump anywhere, median", statistics.median(anywhere), TARGETS["anywhere"], statistics.median(w_anywhere)),
        ("jump anywhere, max", max(anywhere), TARGETS["anywhere"], max(w_anywhere)),
    ]
    print()
    print("  'steps re-run' is the work each move re-executed, in training steps: it does not depend on")
    print("  the machine's load, and times it by the session's step time above to predict the figure.")
    print(f"  {'measure':<46} {'figure':>12} {'target':>12} {'ratio':>7}      {'steps re-run':>12}")
    ok = True
    for name, v, tgt, work in rows:
        good = v < tgt
        ok &= good
        if work is None:
            fig, tg, w = f"{v / 1e6:9.1f} MB", f"< {tgt / 1e6:.0f} MB", ""
        else:
            fig, tg, w = fmt_t(v), f"< {tgt * 1e3:.0f} ms", f"{work:12.1f}"
        print(f"  {name:<46} {fig:>12} {tg:>12} {v / tgt:6.2f}x {'ok    ' if good else 'MISSED'} {w}")
    print(f"  back at the end equals the run's own values, bit for bit: {'yes' if exact else 'NO'}")
    print(f"  at {(k, i)} every tensor equals a fresh session stepped there, bit for bit: "
          f"{'yes' if exact_early else 'NO'}")
    good = ok and exact and exact_early
    print("all targets met" if good else "SOME TARGETS MISSED")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
