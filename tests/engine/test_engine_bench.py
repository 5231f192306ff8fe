"""bench/bench_run.py keeps working (it prints figures; no timing is asserted here)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_bench_run_smoke():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "bench_run.py"), "--smoke", "--reps", "3"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert any(ln.startswith("784-128-10 relu, batch 64, float64") for ln in lines)
    assert any(ln.startswith("784-128-10 relu, batch 64, float32") for ln in lines)
    assert any(ln.startswith("2-2-2 classic") for ln in lines)
    assert "headless ratio" in lines[-1]


def test_bench_tui_smoke():
    """The real-terminal benchmark drives nnstep and the trivial app in a pty (no timing asserted)."""
    import pytest
    pytest.importorskip("pyte")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "bench_tui.py"), "--smoke",
                        os.path.join(ROOT, "bench", "classic_2_2_2.toml")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "trivial Textual app" in out and "bench/classic_2_2_2.toml" in out and "targets (docs/commands.md, Performance)" in out


def test_bench_process_smoke():
    """The whole-process benchmark runs nnstep and the hand-written script and checks they agree on
    the final loss (it exits non-zero if not); no timing is asserted."""
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "bench_process.py"), "--smoke"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "ratio (median of rounds)" in out and "start-up: run --steps 1" in out and "session stepping" in out
