"""Issue 6.5 (headless part): Ctrl-C in a headless command exits 130 without a traceback."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

from hardcases import BASE


def test_sigint_during_run_exits_130(tmp_path):
    (tmp_path / "long.toml").write_text(BASE + "\n[train]\nsteps = 10000000\n")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p = subprocess.Popen([sys.executable, "-m", "nnstep", "run", "long.toml", "--save", "w.npz"], cwd=str(tmp_path),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         # a shell's background jobs inherit SIGINT ignored, and Python then keeps it
                         # ignored: give the child the default disposition, as a terminal would
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        # wait until training is under way: the header and a few step rows are out
        for _ in range(5):
            assert p.stdout.readline(), p.stderr.read()
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130
    assert "Traceback" not in err
    assert err.endswith("nnstep: interrupted\n")
    assert not os.path.exists(tmp_path / "w.npz")                  # nothing half-saved
    assert [f for f in os.listdir(tmp_path) if f.endswith(".tmp")] == []
