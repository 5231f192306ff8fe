"""Issue 6.4: no numpy warning ever reaches the terminal. Overflow, 0·log 0 and division by zero are
either handled as PyTorch handles them, or stop the run naming the operation and the tensor. The
same holds in float32.

The blow-up scenarios run in one `python -W error` process (warnings become exceptions there, so a
stray warning would show up as a traceback), through run, run --json, trace --json, check and
gradcheck."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# name -> (scenario text with {dt} for the dtype and {big}/{huge} for magnitudes, expected stop or None)
BLOWUPS = {
    # a product that overflows in the forward pass
    "forward-overflow": ("""
[scenario]
dtype = "{dt}"
[data]
x = [[{big}, 1.0]]
y = [[0.0]]
[[layers]]
type = "linear"
out = 1
weight = [[{big}, 1.0]]
[loss]
type = "mse"
[train]
steps = 2
""", ("forward linear1", "linear1.out")),
    # a learning rate that sends the weights to infinity in the first update
    "update-overflow": ("""
[scenario]
dtype = "{dt}"
[data]
x = [[1.0, 2.0], [3.0, 4.0]]
y = [[1.0], [0.0]]
[[layers]]
type = "linear"
out = 2
weight = [[1.0, 1.0], [1.0, -1.0]]
[[layers]]
type = "tanh"
[[layers]]
type = "linear"
out = 1
[loss]
type = "mse"
scale = {big}
[optimizer]
type = "sgd"
lr = {huge}
[train]
steps = 3
""", ("update linear1.weight", "linear1.weight")),
    # Adam with eps = 0 on a zero gradient: 0/0
    "adam-zero-over-zero": ("""
[scenario]
dtype = "{dt}"
[data]
x = [[0.0]]
y = [[0.0]]
[[layers]]
type = "linear"
out = 1
weight = [[1.0]]
bias = false
[loss]
type = "mse"
[optimizer]
type = "adam"
lr = 0.1
eps = 0.0
""", ("update linear1.weight", "linear1.weight")),
    # BCE on a saturated sigmoid: log(0) is clamped at -100 as torch does, so the loss is
    # -(0·max(log 1, -100) + 1·max(log 0, -100)) = 100 and nothing stops
    "bce-log-zero": ("""
[scenario]
dtype = "{dt}"
[data]
x = [[1000.0]]
y = [[0.0]]
[[layers]]
type = "linear"
out = 1
weight = [[1.0]]
bias = false
[[layers]]
type = "sigmoid"
[loss]
type = "bce"
[optimizer]
type = "sgd"
lr = 0.0
""", None),
    # huge logits: cross-entropy from max-shifted log-sum-exp stays finite,
    # loss = logsumexp(z) - z[1] = z0 - z1 = 2·{big}
    "cross-entropy-huge-logits": ("""
[scenario]
dtype = "{dt}"
[data]
x = [[{big}, -{big}]]
y = [1]
[[layers]]
type = "linear"
out = 2
weight = [[1.0, 0.0], [0.0, 1.0]]
bias = false
[loss]
type = "cross_entropy"
[optimizer]
type = "sgd"
lr = 0.0
""", None),
    # a finite gradient too large to square: run's gradient-norm column shows inf, without a warning
    "huge-gradient": ("""
[scenario]
dtype = "{dt}"
[data]
x = [[{big}, 1.0]]
y = [[0.0]]
[[layers]]
type = "linear"
out = 1
weight = [[1.0, 1.0]]
[loss]
type = "l1"
[optimizer]
type = "sgd"
lr = 0.0
""", None),
}
MAGNITUDE = {"float64": {"big": "1e200", "huge": "1e300"}, "float32": {"big": "1e30", "huge": "1e38"}}

DRIVER = """
import json, sys
from nnstep.cli import main
rc = {}
for path in sys.argv[1:]:
    for cmd in (["run"], ["run", "--json"], ["trace", "--json"], ["check"], ["gradcheck"]):
        sys.stdout.write("@@ " + json.dumps([path] + cmd) + "\\n")
        sys.stdout.flush()
        rc[" ".join([path] + cmd)] = main(cmd + [path])
        sys.stdout.write("\\n")
from nnstep import Session
stops = {}
for path in sys.argv[1:]:            # the debugger's path, as the TUI drives it
    s = Session(path)
    st = s.run()
    stops[path] = [st.reason, st.op, st.tensor]
    s.back()
    s.step()
    s.goto(1, 0)
    s.run()
sys.stdout.write("@@SESSION " + json.dumps(stops) + "\\n")
sys.stdout.write("@@RC " + json.dumps(rc) + "\\n")
"""


@pytest.mark.parametrize("dt", ["float64", "float32"])
def test_blowups_without_warnings(dt, tmp_path):
    paths = []
    for name, (text, _) in BLOWUPS.items():
        p = tmp_path / f"{name}.toml"
        p.write_text(text.format(dt=dt, **MAGNITUDE[dt]))
        paths.append(str(p))
    r = subprocess.run([sys.executable, "-W", "error", "-c", DRIVER, *paths], capture_output=True, text=True,
                       timeout=120, cwd=str(tmp_path))
    assert "Traceback" not in r.stderr, r.stderr
    assert "Warning" not in r.stderr and "warning" not in r.stderr.lower(), r.stderr
    assert r.returncode == 0, r.stderr
    rc = json.loads(r.stdout.rsplit("@@RC ", 1)[1])
    session = json.loads(r.stdout.rsplit("@@SESSION ", 1)[1].split("\n", 1)[0])
    # the stops, one line per run/trace, naming the op and the tensor
    stops = re.findall(r"nnstep: stopped at step (\d+): (.+?) produced a non-finite value \(NaN/Inf\) in (\S+)",
                       r.stderr)
    outputs = {}
    for chunk in r.stdout.split("@@ ")[1:]:
        head, _, body = chunk.partition("\n")
        if head.startswith("RC"):
            continue
        outputs[tuple(json.loads(head))] = body
    for name, (_, stop) in BLOWUPS.items():
        p = str(tmp_path / f"{name}.toml")
        run_json = json.loads(outputs[(p, "run", "--json")])
        trace_json = json.loads(outputs[(p, "trace", "--json")])
        assert session[p] == (["end", None, None] if stop is None else ["nonfinite", *stop])
        if stop is None:
            assert rc[f"{p} run"] == 0 and rc[f"{p} run --json"] == 0 and rc[f"{p} trace --json"] == 0
            assert "stopped" not in run_json
            loss = run_json["steps"][0]["loss"]
            if name == "bce-log-zero":
                assert loss == 100.0
            elif name == "huge-gradient":             # |1·big + 1·1 + 0 − 0| = big
                assert loss == pytest.approx(float(MAGNITUDE[dt]["big"]), rel=1e-6)
            else:
                assert loss == pytest.approx(2 * float(MAGNITUDE[dt]["big"]), rel=1e-6)
        else:
            op, tensor = stop
            assert rc[f"{p} run"] == 1 and rc[f"{p} run --json"] == 1 and rc[f"{p} trace --json"] == 1
            assert run_json["stopped"]["op"] == op and run_json["stopped"]["tensor"] == tensor
            assert run_json["stopped"]["reason"] == "nonfinite"
            assert trace_json["stopped"]["op"] == op and trace_json["stopped"]["tensor"] == tensor
            assert sum(1 for s in stops if s[1] == op and s[2] == tensor) >= 3   # run, run --json, trace
        assert rc[f"{p} check"] == 0               # no [[expect]]: nothing to fail, and it ran to the end
        # gradcheck fails where central differences cannot work: a loss that overflows to Inf at the
        # initial weights (forward-overflow), or one so large (1e300) that a 1e-6 step is lost in its
        # rounding (huge-gradient); everywhere else the analytic gradient is confirmed
        assert rc[f"{p} gradcheck"] == (1 if name in ("forward-overflow", "huge-gradient") else 0), name


def test_shipped_scenarios_run_without_warnings():
    """Every shipped scenario, float64 as written, through run and gradcheck with warnings as errors."""
    scen = sorted(os.path.join(ROOT, "scenarios", f) for f in os.listdir(os.path.join(ROOT, "scenarios"))
                  if f.endswith(".toml"))
    code = ("import sys\nfrom nnstep.cli import main\n"
            "bad = [p for p in sys.argv[1:] for c in ('run', 'gradcheck') if main([c, p]) == 2]\n"
            "sys.exit(3 if bad else 0)\n")
    r = subprocess.run([sys.executable, "-W", "error", "-c", code, *scen], capture_output=True, text=True, timeout=300)
    assert "Traceback" not in r.stderr and "Warning" not in r.stderr, r.stderr[-2000:]
    assert r.returncode == 0, r.stderr[-2000:]
