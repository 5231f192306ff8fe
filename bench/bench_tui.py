"""TUI latency (SPEC §6): key press -> repainted screen, and start -> first full screen.

Run:  .venv/bin/python bench/bench_tui.py [--presses 60] [--smoke]

The scenario is bench/mlp_784_256_128_10.toml (784-256-128-10 ReLU MLP, batch 64). The app runs
headless at 120x40; the time of a key is measured from just before the key is posted to the end of
the repaint it causes: the compositor's update for the screen *and* its rendering to terminal
segments (the work a real terminal write would need), taken from the last display after the key.
Start-up is measured in a fresh process from interpreter start (before numpy and Textual are
imported) to the first full screen rendered to segments, as `nnstep FILE` would show it.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SCENARIO = os.path.join(HERE, "mlp_784_256_128_10.toml")
TARGET_MS = 50.0


def _hook_display(app, stamps: list):
    orig = app._display

    def display(screen, renderable):
        orig(screen, renderable)
        if renderable is not None:
            renderable.render_segments(app.console)
            stamps.append(time.perf_counter())
    app._display = display


async def _keys(presses: int, size=(120, 40)):
    from nnstep.tui import make_app
    app = make_app(SCENARIO)
    stamps: list[float] = []
    _hook_display(app, stamps)
    times: dict[str, list[float]] = {}
    cpu: list[float] = []
    seq = []
    # forward through steps, with some back / stage / end-of-step moves mixed in
    pattern = ["n"] * 8 + ["p", "n", "s", "n", "n", "S"]
    while len(seq) < presses:
        seq += pattern
    seq = seq[:presses]
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        for k in seq:
            stamps.clear()
            c0 = time.process_time()
            t0 = time.perf_counter()
            await pilot.press(k)
            await pilot.pause()
            if not stamps:                      # nothing repainted yet: wait for the next frame
                await pilot.pause(0.05)
            t1 = stamps[-1] if stamps else time.perf_counter()
            times.setdefault(k, []).append((t1 - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
    return times, cpu


def _startup_child():
    t0 = time.perf_counter()

    async def main():
        from nnstep.tui import make_app
        app = make_app(SCENARIO)
        stamps: list[float] = []
        _hook_display(app, stamps)
        async with app.run_test(size=(120, 40)) as pilot:
            while not stamps:
                await pilot.pause(0.005)
            print(f"{(stamps[0] - t0) * 1000:.1f}")
    asyncio.run(main())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--presses", type=int, default=60)
    ap.add_argument("--starts", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="a few presses, one start: checks it runs")
    ap.add_argument("--startup-child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.startup_child:
        _startup_child()
        return
    if a.smoke:
        a.presses, a.starts = 6, 1
    times, cpu = asyncio.run(_keys(a.presses))
    allt = [t for v in times.values() for t in v]
    print(f"key press -> repainted screen, {SCENARIO.rsplit('/', 1)[-1]}, 120x40, {len(allt)} presses")
    for k, v in times.items():
        print(f"  {k!r:>5}: median {statistics.median(v):6.1f} ms  max {max(v):6.1f} ms  (n={len(v)})")
    med = statistics.median(allt)
    print(f"  all  : median {med:6.1f} ms  p90 {sorted(allt)[int(0.9 * (len(allt) - 1))]:6.1f} ms"
          f"  -> {med / TARGET_MS:.2f}x the {TARGET_MS:.0f} ms target")
    print(f"  CPU time of this process per press (less sensitive to other load): median "
          f"{statistics.median(cpu):.1f} ms -> {statistics.median(cpu) / TARGET_MS:.2f}x the target")
    print(f"  (load average now: {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs)")
    starts = []
    for _ in range(a.starts):
        r = subprocess.run([sys.executable, os.path.abspath(__file__), "--startup-child"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            print(r.stderr)
            sys.exit(1)
        starts.append(float(r.stdout.strip().splitlines()[-1]))
    print(f"start -> first full screen (fresh process): median {statistics.median(starts):.0f} ms "
          f"over {len(starts)} starts ({', '.join(f'{s:.0f}' for s in starts)})")


if __name__ == "__main__":
    main()
