"""One meaning for every stop: `nnstep run --json`, `nnstep trace --json` and `Session.run()` (what
the TUI's continue drives) stop at the same step, op, tensor and reason, for random conditions on
every kind of tensor: the batch, activations, local derivatives, gradients, parameters, deltas,
optimizer state and the loss. The thresholds are drawn from the values the run really takes, so
most conditions fire somewhere in the middle of it."""
import json

import numpy as np

import nnstep
from nnstep.cli import main
from nnstep.model.stats import STATS, stat

NET = """
[scenario]
seed = 7
[data]
x = { random = "normal", shape = [6, 3] }
y = { random = "normal", shape = [6, 2] }
[[layers]]
type = "linear"
out = 4
[[layers]]
type = "tanh"
[[layers]]
type = "linear"
out = 2
[loss]
type = "mse"
[optimizer]
type = "sgd"
lr = 0.2
momentum = 0.9
[train]
steps = 12
batch_size = 2
shuffle = true
"""


def observed(sc):
    """Every tensor's statistics over the whole run, from a session stepped op by op."""
    s = nnstep.Session(sc)
    seen: dict[str, dict[str, list]] = {}
    while not s.at_end:
        s.step()
        for name in s.names:
            v = s.value(name)
            if v is not None:
                for st in STATS:
                    seen.setdefault(name, {}).setdefault(st, []).append(stat(v, st))
    return seen


def test_run_trace_and_session_stop_at_the_same_place(tmp_path, capsys):
    base = nnstep.loads_scenario(NET)
    seen = observed(base)
    names = sorted(seen)
    kinds = {n.rsplit(".", 1)[-1] for n in names}
    assert {"input", "target", "loss", "out", "local", "grad", "grad_out", "grad_in", "weight", "bias", "delta",
            "buf"} <= kinds | set(names)
    rng = np.random.default_rng(2026)
    fired = 0
    for case in range(60):
        name = names[case % len(names)] if case < len(names) else names[rng.integers(len(names))]
        st = STATS[rng.integers(len(STATS))]
        op = ["<", "<=", ">", ">="][rng.integers(4)]
        vals = seen[name][st]
        number = float(np.quantile(vals, rng.uniform(0.05, 0.95)))
        when = f"{name} {st} {op} {number!r}"
        p = tmp_path / f"c{case}.toml"
        p.write_text(NET + f'\n[[breakpoints]]\nwhen = "{when}"\n')
        rc = main(["run", str(p), "--json"])
        run = json.loads(capsys.readouterr().out).get("stopped")
        main(["trace", str(p), "--json"])
        trace = json.loads(capsys.readouterr().out).get("stopped")
        s = nnstep.Session(nnstep.load_scenario(str(p)))
        stop = s.run()
        sess = stop.as_json() if stop.reason in ("breakpoint", "nonfinite") else None
        assert run == trace == sess, (when, run, trace, sess)
        assert rc == (1 if run else 0)
        fired += run is not None
    assert fired >= 30                   # most of them fire somewhere, so the comparison says something


GRAD_IN_OVERFLOW = """
[data]
x = [[1e-250, 1e-250]]
y = [[0.0]]
[[layers]]
type = "linear"
out = 1
weight = [[1e200, 1e200]]
bias = false
[loss]
type = "mse"
scale = 1e200
[optimizer]
type = "sgd"
lr = 0.0
[train]
steps = 8
"""


def test_an_inf_born_in_the_batchs_gradient_stops_run_and_the_session_alike(tmp_path):
    """dLoss/d(input) of the first layer is left out by `run` and by a long continue (nothing reads
    it); where it could overflow it is computed all the same, so both stop where it is born:
    g = 1e200·2·(ŷ − y) with ŷ = 2e-50, and g·W = 4e150·1e200 = 4e350 > 1.8e308."""
    import json
    import subprocess
    import sys
    p = tmp_path / "net.toml"
    p.write_text(GRAD_IN_OVERFLOW)
    s = nnstep.Session(str(p))
    stop = s.run()
    assert (stop.reason, stop.op, stop.tensor) == ("nonfinite", "backward linear1", "linear1.grad_in")
    r = subprocess.run([sys.executable, "-m", "nnstep", "run", str(p), "--json"], capture_output=True, text=True)
    doc = json.loads(r.stdout)
    assert r.returncode == 1 and doc["stopped"]["op"] == "backward linear1"
    assert doc["stopped"]["tensor"] == "linear1.grad_in"
