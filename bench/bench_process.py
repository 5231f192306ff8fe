"""Headless runs as a user meets them (docs/commands.md, "Performance"): whole processes, alternated.

    python bench/bench_process.py              # 7 rounds
    python bench/bench_process.py --rounds 3 --steps 100
    python bench/bench_process.py --smoke      # 2 rounds of 20 steps: checks it runs

1. Training: ``nnstep run FILE --steps 300`` on a 784-128-10 ReLU MLP, batch 64, cross-entropy, SGD,
   against ``python hand.py``, a hand-written numpy script of the same training run (the same data
   and initial weights, read from the same .npz files; it prints every step's loss as ``run``
   does). Each a process of its own, alternated (A B, B A, ...), default BLAS threads for both.
   Figure: the median of the per-round ratios nnstep / hand (target 1.2x, stretch 1.05x).
2. Start-up: ``nnstep run FILE --steps 1`` against ``python -c "import numpy"`` (target: + 60 ms).
3. The session's own stepping (the TUI's ``c``): ``Session.run()`` per training step against the
   engine's per step as ``run`` drives it (the step and the |grad| its table prints), in this
   process, 5 rounds alternated (target 1.3x).

`nnstep run` ends without the interpreter's teardown (``nnstep.cli.entry``); ``--without-quick-exit``
times it ending through the teardown as well, as ``python -c "... sys.exit(main())"``, so both
figures are in one run.

Both training sides must print the same final loss (checked to 1e-9 relative), so the comparison
is of the same work. Timing is never asserted anywhere: this prints figures.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

SCENARIO = """
[scenario]
name = "784-128-10 relu mlp, whole process"
seed = 0
weights = "init.npz"
[data]
x = {{ file = "data.npz", key = "x" }}
y = {{ file = "data.npz", key = "y" }}
[[layers]]
type = "linear"
name = "fc1"
out = 128
[[layers]]
type = "relu"
[[layers]]
type = "linear"
name = "fc2"
out = 10
[loss]
type = "cross_entropy"
[optimizer]
type = "sgd"
lr = 0.01
[train]
steps = {steps}
"""

HAND = '''"""A hand-written numpy training run: 784-128-10 ReLU MLP, cross-entropy, SGD (bench_process.py)."""
import sys
import numpy as np

d = np.load("data.npz")
w = np.load("init.npz")
x, y = d["x"], d["y"]
W1, b1, W2, b2 = w["fc1.weight"], w["fc1.bias"], w["fc2.weight"], w["fc2.bias"]
lr, n = 0.01, x.shape[0]
rows = np.arange(n)
for step in range(1, int(sys.argv[1]) + 1):
    z1 = x @ W1.T + b1
    h = np.maximum(z1, 0)
    z2 = h @ W2.T + b2
    s = z2 - z2.max(axis=1, keepdims=True)
    e = np.exp(s)
    tot = e.sum(axis=1, keepdims=True)
    loss = -(s - np.log(tot))[rows, y].mean()
    g = e / tot
    g[rows, y] -= 1
    g /= n
    gW2, gb2 = g.T @ h, g.sum(axis=0)
    gz1 = (g @ W2) * (z1 > 0)
    gW1, gb1 = gz1.T @ x, gz1.sum(axis=0)
    W1, b1, W2, b2 = W1 - lr * gW1, b1 - lr * gb1, W2 - lr * gW2, b2 - lr * gb2
    print(f"{step:6d} {float(loss)!r}")
'''


# as a user's shell has it: Python caches compiled modules (this machine's agents' environment sets
# PYTHONDONTWRITEBYTECODE, which would recompile all of nnstep at every start)
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


CPU: list[float] = []                    # the CPU time (user + system) of each timed child, in order


def run_step(prog, env, k, detector=None):
    """One training step as `nnstep run` takes it (headless.cmd_run): step k's batch fed, then its
    ops through the one op runner, halting at the detector's first stop (returned; else None)."""
    from nnstep.engine.runner import advance
    prog.feed(env, k)
    M, stops = len(prog.ops), []
    advance(prog, env, k, 0, k * M, k - 1, detector, sink=lambda s: stops.append(s) or True)
    return stops[0] if stops else None



def timed(argv, cwd, extra_env=None) -> tuple[float, str]:
    import resource
    t = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=dict(ENV, **(extra_env or {})))
    dt = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    if r.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed:\n{r.stderr}")
    return dt, r.stdout


def last_loss(out: str) -> float:
    for line in reversed(out.strip().splitlines()):
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            return float(parts[1])
    raise SystemExit("no loss in the output:\n" + out[-500:])


def setup(d: str, steps: int):
    import numpy as np
    sys.path.insert(0, os.path.join(HERE, "..", "src"))
    from nnstep import load_scenario
    rng = np.random.default_rng(0)
    np.savez(os.path.join(d, "data.npz"), x=rng.standard_normal((64, 784)), y=rng.integers(0, 10, 64))
    # the initial weights: torch's default init as nnstep draws it, saved once for both sides
    plain = SCENARIO.replace('weights = "init.npz"\n', "").format(steps=steps)
    with open(os.path.join(d, "plain.toml"), "w") as f:
        f.write(plain)
    sc = load_scenario(os.path.join(d, "plain.toml"))
    np.savez(os.path.join(d, "init.npz"), **sc.initial)
    with open(os.path.join(d, "mlp.toml"), "w") as f:
        f.write(SCENARIO.format(steps=steps))
    with open(os.path.join(d, "hand.py"), "w") as f:
        f.write(HAND)


def session_vs_run(d: str, steps: int) -> tuple[float, float]:
    from nnstep import load_scenario
    from nnstep.debugger.session import Session
    from nnstep.engine.program import Program
    from nnstep.engine.runner import Detector
    from nnstep.headless import run_skip
    from nnstep.model.stats import global_norm
    sc = load_scenario(os.path.join(d, "mlp.toml"))

    grads = [f"{p}.grad" for p in sc.trainable]

    def run_side():
        # what `nnstep run` does per step: the step, then the |grad| its table prints (the session
        # records the same norms, per layer, for the TUI's gradient-norm plot)
        prog = Program(sc, skip=run_skip(sc))
        env = prog.initial_env()
        det = Detector(prog.ops, sc.breakpoints, op_breakpoints=False, skip=prog.skip)
        t = time.perf_counter()
        for k in range(1, steps + 1):
            run_step(prog, env, k, det)
            global_norm([env[g] for g in grads])
        return (time.perf_counter() - t) / steps

    def session_side():
        s = Session(sc)
        t = time.perf_counter()
        s.run()
        assert s.at_end
        return (time.perf_counter() - t) / steps

    run_side(); session_side()                     # warm: BLAS, the allocator, the caches
    tr, ts = [], []
    for r in range(5):
        for f, out in ((run_side, tr), (session_side, ts))[:: 1 if r % 2 else -1]:
            out.append(f())
    t_run, t_ses = statistics.median(tr), statistics.median(ts)
    return t_run, t_ses


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--before", metavar="SRC", help="also time `nnstep run` from another source tree (e.g. a "
                    "checkout of an older commit's src/), in the same rounds: a before/after in one run")
    ap.add_argument("--without-mallopt", action="store_true",
                    help="also time nnstep run without its allocator settings, in the same rounds")
    ap.add_argument("--without-quick-exit", action="store_true",
                    help="also time nnstep run ending through the interpreter's teardown (main() called from "
                    "`python -c`, not the console script's entry(), which skips it), in the same rounds")
    a = ap.parse_args()
    if a.smoke:
        a.rounds, a.steps = 2, 20
    nnstep = os.path.join(os.path.dirname(sys.executable), "nnstep")
    with tempfile.TemporaryDirectory() as d:
        setup(d, a.steps)
        timed([nnstep, "run", "mlp.toml", "--steps", "1"], d)          # writes the bytecode caches
        run = [nnstep, "run", "mlp.toml", "--steps", str(a.steps)]
        hand = [sys.executable, "hand.py", str(a.steps)]
        old = None
        if a.before:
            # as `nnstep` runs (python -m nnstep: cli.entry, no teardown), from the other tree
            old = [sys.executable, "-m", "nnstep", "run", "mlp.toml", "--steps", str(a.steps)]
            old_env = {"PYTHONPATH": os.path.abspath(a.before)}
            timed(old, d, old_env)
        slow = None
        if a.without_quick_exit:
            slow = [sys.executable, "-c", "import sys; from nnstep.cli import main; sys.exit(main())",
                    "run", "mlp.toml", "--steps", str(a.steps)]
        ratios, tn, th, raw, before, full = [], [], [], [], [], []
        for r in range(a.rounds):
            if r % 2:
                h, oh = timed(hand, d); n, on = timed(run, d)
            else:
                n, on = timed(run, d); h, oh = timed(hand, d)
            if a.without_mallopt:
                raw.append(timed(run, d, {"NNSTEP_NO_MALLOPT": "1"})[0] / h)
            if old is not None:
                before.append(timed(old, d, old_env)[0] / h)
            if slow is not None:
                full.append(timed(slow, d)[0] / h)
            ln, lh = last_loss(on), last_loss(oh)
            if abs(ln - lh) > 1e-9 * abs(lh):
                sys.exit(f"the two runs disagree: nnstep {ln!r}, hand {lh!r}")
            ratios.append(n / h); tn.append(n); th.append(h)
        print(f"whole process, {a.steps} steps, {a.rounds} rounds alternated, load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print(f"  nnstep run  median {statistics.median(tn) * 1000:7.0f} ms")
        print(f"  hand numpy  median {statistics.median(th) * 1000:7.0f} ms")
        print(f"  ratio (median of rounds) {statistics.median(ratios):.2f}x   target 1.20x (stretch 1.05x)")
        if raw:
            print(f"  without the allocator settings (NNSTEP_NO_MALLOPT=1): {statistics.median(raw):.2f}x")
        if before:
            print(f"  before ({a.before}): {statistics.median(before):.2f}x")
        if full:
            print(f"  with the interpreter's teardown: {statistics.median(full):.2f}x")
        one = [nnstep, "run", "mlp.toml", "--steps", "1"]
        imp = [sys.executable, "-c", "import numpy"]
        t1, ti, c1, ci, t0, c0, tf, cf = [], [], [], [], [], [], [], []
        for r in range(max(15, 3 * a.rounds) if not a.smoke else 2):     # cheap: more samples, alternated
            if r % 2:
                ti.append(timed(imp, d)[0]); ci.append(CPU[-1])
                t1.append(timed(one, d)[0]); c1.append(CPU[-1])
            else:
                t1.append(timed(one, d)[0]); c1.append(CPU[-1])
                ti.append(timed(imp, d)[0]); ci.append(CPU[-1])
            if old is not None:
                t0.append(timed(old[:-1] + ["1"], d, old_env)[0]); c0.append(CPU[-1])
            if slow is not None:
                tf.append(timed(slow[:-1] + ["1"], d)[0]); cf.append(CPU[-1])
        print(f"start-up: run --steps 1 median {statistics.median(t1) * 1000:.0f} ms, import numpy "
              f"{statistics.median(ti) * 1000:.0f} ms: +{(statistics.median(t1) - statistics.median(ti)) * 1000:.0f} ms"
              f"   target +60 ms")
        print(f"  in CPU time (user + system, less sensitive to load): +"
              f"{(statistics.median(c1) - statistics.median(ci)) * 1000:.0f} ms")
        if t0:
            print(f"  before ({a.before}): +{(statistics.median(t0) - statistics.median(ti)) * 1000:.0f} ms, "
                  f"in CPU time +{(statistics.median(c0) - statistics.median(ci)) * 1000:.0f} ms")
        if tf:
            print(f"  with the interpreter's teardown: +{(statistics.median(tf) - statistics.median(ti)) * 1000:.0f} ms, "
                  f"in CPU time +{(statistics.median(cf) - statistics.median(ci)) * 1000:.0f} ms")
        tr, ts = session_vs_run(d, a.steps)
        print(f"session stepping: Session.run() {ts * 1000:.2f} ms/step, run {tr * 1000:.2f} ms/step: "
              f"{ts / tr:.2f}x   target 1.30x")


if __name__ == "__main__":
    main()
