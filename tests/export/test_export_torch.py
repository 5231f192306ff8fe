"""`nnstep export FILE --torch` against real PyTorch (docs/commands.md): every shipped scenario, and
scenarios written here to reach every layer type, loss, optimizer option and batch order, is
exported; the scripts run in ONE process (torch imported once, tests/export/torchrun.py); each
prints its `run --json` document, which must agree with `nnstep run --json` to 1e-9 relative
(1e-12 absolute; float32 scenarios to float32's precision) on every number. A failure lists
the tensors that differ.

Needs torch (the `torch` extra: pip install -e '.[torch]'); skipped without it. The tests of
the refusals and of the script's text need no torch.
"""
from __future__ import annotations

import contextlib
import glob
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from nnstep.errors import ScenarioError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))
SHIPPED = sorted(glob.glob(os.path.join(ROOT, "scenarios", "*.toml")) +
                 glob.glob(os.path.join(ROOT, "scenarios", "*", "*.toml")))

# Scenarios that reach what the shipped lessons do not: every layer type and option, every loss,
# SGD's and Adam's options, mini-batches in order and shuffled, float32.
EXTRA = {
    "conv1d-bn1d-nesterov": """
[scenario]
seed = 3
[data]
x = { random = "normal", shape = [7, 2, 6] }
y = { random = "normal", shape = [7, 3] }
[[layers]]
type = "conv1d"
out_channels = 3
kernel_size = 3
stride = 2
padding = 1
bias = false
[[layers]]
type = "batchnorm"
eps = 1e-3
momentum = 0.2
[[layers]]
type = "leaky_relu"
negative_slope = 0.1
[[layers]]
type = "flatten"
[[layers]]
type = "linear"
out = 3
[[layers]]
type = "gelu"
approximate = "tanh"
[loss]
type = "huber"
delta = 0.5
[optimizer]
type = "sgd"
lr = 0.05
momentum = 0.9
nesterov = true
weight_decay = 0.01
[train]
steps = 5
batch_size = 3
shuffle = true
""",
    "conv2d-bn2d-adam-bce": """
[scenario]
seed = 5
[data]
x = { random = "uniform", low = -1.0, high = 1.0, shape = [4, 2, 4, 5] }
y = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]]
[[layers]]
type = "conv2d"
out_channels = 2
kernel_size = [2, 3]
stride = [1, 2]
padding = [1, 0]
[[layers]]
type = "batchnorm"
affine = false
[[layers]]
type = "tanh"
[[layers]]
type = "flatten"
[[layers]]
type = "layernorm"
eps = 1e-4
[[layers]]
type = "gelu"
[[layers]]
type = "linear"
out = 2
init = "xavier_normal"
[[layers]]
type = "sigmoid"
[loss]
type = "bce"
[optimizer]
type = "adam"
lr = 0.01
betas = [0.8, 0.99]
eps = 1e-6
weight_decay = 0.1
[train]
steps = 3
batch_size = 3
""",
    "graph-ops": """
[scenario]
seed = 7
[data]
x = { random = "normal", shape = [3, 4, 2] }
y = { random = "normal", shape = [3, 4, 4] }
[[layers]]
name = "a"
type = "linear"
out = 2
[[layers]]
name = "b"
type = "layernorm"
input = "input"
dims = 1
[[layers]]
name = "cat"
type = "concat"
inputs = ["a", "b"]
dim = -1
[[layers]]
name = "t"
type = "transpose"
dims = [1, 2]
[[layers]]
name = "m"
type = "matmul"
inputs = ["cat", "t"]
[[layers]]
name = "s"
type = "scale"
by = 0.3
[[layers]]
name = "sm"
type = "softmax"
dim = 1
[[layers]]
name = "id"
type = "identity"
input = "m"
[[layers]]
name = "prod"
type = "mul"
inputs = ["sm", "id"]
[[layers]]
name = "r"
type = "reshape"
input = "prod"
shape = [16]
[[layers]]
name = "back"
type = "reshape"
shape = [4, 4]
[[layers]]
name = "sum"
type = "add"
inputs = ["back", "prod", "id"]
[[layers]]
name = "train"
type = "relu"
[loss]
type = "smooth_l1"
beta = 0.5
reduction = "sum"
[optimizer]
type = "sgd"
lr = 0.01
momentum = 0.5
dampening = 0.25
[train]
steps = 3
""",
    "ce-probabilities": """
[scenario]
seed = 11
[data]
x = { random = "normal", shape = [5, 3] }
y = [[0.2, 0.8, 0.0], [1.0, 0.0, 0.0], [0.1, 0.1, 0.8], [0.5, 0.25, 0.25], [0.0, 0.0, 1.0]]
[[layers]]
type = "linear"
out = 4
init = "kaiming_normal"
[[layers]]
type = "relu"
[[layers]]
type = "linear"
out = 3
bias = false
[loss]
type = "cross_entropy"
reduction = "sum"
scale = 2.0
[optimizer]
type = "sgd"
lr = 0.1
[train]
steps = 4
batch_size = 2
""",
    "lm-attention-bias-false-float32": """
[scenario]
seed = 2
dtype = "float32"
[data]
x = [[0, 1, 2, 3], [3, 2, 1, 0], [1, 1, 2, 2]]
y = [[1, 2, 3, 0], [2, 1, 0, 3], [1, 2, 2, 1]]
[[layers]]
type = "embedding"
num = 4
dim = 4
[[layers]]
type = "attention"
heads = 2
bias = false
[[layers]]
type = "attention"
heads = 1
causal = true
[[layers]]
type = "linear"
out = 4
[loss]
type = "cross_entropy"
class_dim = -1
# not Adam: the key bias's gradient is exactly 0 in exact arithmetic (softmax ignores a shift shared
# by every key), so it is rounding noise, which Adam would normalize to steps of size lr
[optimizer]
type = "sgd"
lr = 0.5
momentum = 0.9
[train]
steps = 3
shuffle = true
batch_size = 2
""",
    "rnn-relu-lstm-no-bias": """
[scenario]
seed = 9
[data]
x = { random = "normal", shape = [3, 4, 2] }
y = { random = "normal", shape = [3, 4, 2] }
[[layers]]
type = "rnn"
hidden = 3
nonlinearity = "relu"
[[layers]]
type = "lstm"
hidden = 2
bias = false
[[layers]]
type = "rnn"
hidden = 2
[loss]
type = "mse"
[optimizer]
type = "adam"
lr = 0.01
[train]
steps = 3
batch_size = 2
""",
    "rmsprop-centered-clip-step-lr-ce-weights": """
[scenario]
seed = 13
[data]
x = { random = "normal", shape = [6, 3] }
y = [0, 2, 1, 2, 0, 1]
[[layers]]
type = "linear"
out = 5
[[layers]]
type = "tanh"
[[layers]]
type = "linear"
out = 3
[loss]
type = "cross_entropy"
weight = [1.0, 2.5, 0.5]
label_smoothing = 0.1
[optimizer]
type = "rmsprop"
lr = 0.02
alpha = 0.9
eps = 1e-6
momentum = 0.5
centered = true
weight_decay = 0.01
clip_grad_norm = 0.5
[optimizer.schedule]
type = "step"
step_size = 2
gamma = 0.5
[train]
steps = 5
batch_size = 4
""",
    "rmsprop-plain-exponential": """
[scenario]
seed = 14
[data]
x = { random = "normal", shape = [4, 2] }
y = { random = "normal", shape = [4, 1] }
[[layers]]
type = "linear"
out = 1
[loss]
type = "mse"
[optimizer]
type = "rmsprop"
[optimizer.schedule]
type = "exponential"
gamma = 0.9
[train]
steps = 3
""",
    "adamw-pos-weight-ce-last-dim": """
[scenario]
seed = 15
[data]
x = { random = "normal", shape = [4, 3] }
y = [[1.0, 0.0], [0.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
[[layers]]
type = "linear"
out = 2
[loss]
type = "bce_with_logits"
pos_weight = [3.0, 0.5]
[optimizer]
type = "adamw"
lr = 0.05
[optimizer.schedule]
type = "cosine"
t_max = 2
eta_min = 0.001
[train]
steps = 5
""",
    "cosine-warmup-rmsprop": """
[scenario]
seed = 17
[data]
x = { random = "normal", shape = [4, 2] }
y = { random = "normal", shape = [4, 2] }
[[layers]]
type = "linear"
out = 2
[loss]
type = "mse"
[optimizer]
type = "sgd"
lr = 0.1
momentum = 0.9
[optimizer.schedule]
type = "cosine"
t_max = 3
eta_min = 0.01
warmup = 2
warmup_start = 0.1
[train]
steps = 9
""",
    "ce-class-dim-weighted-smoothed": """
[scenario]
seed = 16
[data]
x = { random = "normal", shape = [2, 3, 4] }
y = [[0, 1, 2], [2, 2, 0]]
[[layers]]
type = "linear"
out = 3
[loss]
type = "cross_entropy"
class_dim = -1
weight = [0.5, 1.0, 2.0]
label_smoothing = 0.2
reduction = "mean"
[optimizer]
type = "adamw"
lr = 0.1
weight_decay = 0.3
clip_grad_norm = 1.0
[train]
steps = 3
""",
    "no-parameters-with-a-schedule": """
[data]
x = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
y = [[0.5, 0.25, 0.25], [0.0, 0.0, 1.0]]
[[layers]]
type = "softmax"
[loss]
type = "mse"
[optimizer]
type = "adam"
[optimizer.schedule]
type = "exponential"
gamma = 0.5
[train]
steps = 2
""",
    "all-frozen": """
[data]
x = [[1.0, 2.0]]
y = [[0.5]]
[[layers]]
type = "linear"
out = 1
frozen = ["weight", "bias"]
[loss]
type = "l1"
[optimizer]
type = "sgd"
lr = 0.1
clip_grad_norm = 1.0
[train]
steps = 2
""",
    "smooth-l1-beta0-l1-softmax": """
[scenario]
seed = 4
[data]
x = { random = "normal", shape = [4, 3] }
y = { random = "uniform", shape = [4, 3] }
[[layers]]
type = "linear"
out = 3
init = "xavier_uniform"
[[layers]]
type = "softmax"
[loss]
type = "smooth_l1"
beta = 0.0
[optimizer]
type = "adam"
lr = 0.1
[train]
steps = 2
""",
    "bce-logits-mse-mean-l1": """
[data]
x = [[1.0, -2.0], [0.5, 0.25], [-1.5, 3.0]]
y = [[1.0], [0.0], [1.0]]
[[layers]]
type = "linear"
out = 1
weight = [[0.3, -0.2]]
bias = [0.1]
[loss]
type = "bce_with_logits"
[optimizer]
type = "sgd"
lr = 0.5
weight_decay = 0.1
[train]
steps = 3
batch_size = 2
""",
    # matmul per sample: [3, 2, 2] @ [2, 4] and [2, 3] @ [4, 3, 2], the batch kept (torch.matmul of
    # the batched tensors would pair the batch of N = 3 with the leading 3)
    "matmul-per-sample-broadcast": """
[scenario]
seed = 11
[data]
x = { random = "normal", shape = [3, 2] }
y = { random = "normal", shape = [3, 3, 2, 4] }
[[layers]]
type = "linear"
out = 12
[[layers]]
type = "reshape"
shape = [3, 2, 2]
[[layers]]
type = "linear"
input = "input"
out = 8
[[layers]]
type = "reshape"
shape = [2, 4]
[[layers]]
type = "matmul"
inputs = ["reshape1", "reshape2"]
[loss]
type = "mse"
[optimizer]
type = "sgd"
lr = 0.1
[train]
steps = 2
""",
}


# pooling, dropout, log_softmax and nll (docs/scenario-format.md): written by the exporter, run here
POOL_EXTRA = {
    "pool-dropout-logsoftmax-nll": """
[scenario]
seed = 21
[data]
x = { random = "normal", shape = [5, 2, 6, 7] }
y = [0, 2, 1, 1, 2]
[[layers]]
type = "conv2d"
out_channels = 2
kernel_size = 3
padding = 1
[[layers]]
type = "maxpool2d"
kernel_size = [2, 3]
stride = [2, 2]
padding = [1, 1]
[[layers]]
type = "dropout"
p = 0.3
[[layers]]
type = "avgpool2d"
kernel_size = 2
stride = 1
padding = 1
[[layers]]
type = "flatten"
[[layers]]
type = "linear"
out = 3
[[layers]]
type = "log_softmax"
[loss]
type = "nll"
reduction = "sum"
[optimizer]
type = "sgd"
lr = 0.05
[train]
steps = 3
batch_size = 2
shuffle = true
""",
    "pool1d-nll-class-dim": """
[scenario]
seed = 22
[data]
x = { random = "normal", shape = [3, 2, 9] }
y = [[0, 1, 2, 1], [2, 2, 1, 0], [1, 0, 0, 2]]
[[layers]]
type = "maxpool1d"
kernel_size = 3
[[layers]]
type = "avgpool1d"
kernel_size = 2
stride = 1
padding = 1
[[layers]]
type = "dropout"
[[layers]]
type = "transpose"
dims = [1, 2]
[[layers]]
type = "linear"
out = 3
[[layers]]
type = "log_softmax"
dim = -1
[loss]
type = "nll"
class_dim = -1
[optimizer]
type = "adam"
lr = 0.05
[train]
steps = 3
""",
}
EXTRA.update(POOL_EXTRA)


def nnstep_run_json(path: str) -> dict:
    from nnstep.headless import cmd_run

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cmd_run(path, None, True, None, honor_breakpoints=False)
    doc = json.loads(buf.getvalue())
    assert rc in (0, 1)
    return doc


def differences(ref: dict, got: dict, rtol: float, atol: float) -> list[str]:
    """Every number of two `run --json` documents compared; a list of what differs."""
    out = []
    for k in ("scenario", "dtype"):
        if ref.get(k) != got.get(k):
            out.append(f"{k}: nnstep {ref.get(k)!r}, torch {got.get(k)!r}")

    def arr(v):
        return np.array(v, dtype=object).astype(str).astype(np.float64) if v is not None else None

    def cmp(what, a, b):
        if a is None or b is None:
            out.append(f"{what}: missing in {'torch' if b is None else 'nnstep'}")
            return
        a, b = arr(a), arr(b)
        if a.shape != b.shape:
            out.append(f"{what}: shape nnstep {list(a.shape)}, torch {list(b.shape)}")
            return
        with np.errstate(all="ignore"):
            ok = (a == b) | (np.isnan(a) & np.isnan(b)) | (np.abs(a - b) <= atol + rtol * np.abs(a))
        if not ok.all():
            j = np.unravel_index(int(np.argmax(np.where(ok, 0, np.abs(a - b) + 1))), a.shape)
            out.append(f"{what}{[int(i) for i in j]}: nnstep {float(a[j])!r}, torch {float(b[j])!r}")

    ri, gi = ref.get("initial", {}), got.get("initial", {})
    if sorted(ri) != sorted(gi):
        out.append(f"initial: nnstep has {sorted(ri)}, torch {sorted(gi)}")
    for p in ri:
        cmp(f"initial {p}", ri[p], gi.get(p))
    rs, gs = ref.get("steps", []), got.get("steps", [])
    if len(rs) != len(gs):
        out.append(f"steps: nnstep {len(rs)}, torch {len(gs)}")
    for r, g in zip(rs, gs):
        k = r["step"]
        if g.get("step") != k:
            out.append(f"step numbers: nnstep {k}, torch {g.get('step')}")
        cmp(f"step {k} loss", r["loss"], g.get("loss"))
        if "lr" in r or "lr" in g:
            cmp(f"step {k} lr", r.get("lr"), g.get("lr"))
        for part in ("grads", "params"):
            if sorted(r[part]) != sorted(g.get(part, {})):
                out.append(f"step {k} {part}: nnstep has {sorted(r[part])}, torch {sorted(g.get(part, {}))}")
            for p in r[part]:
                cmp(f"step {k} {part} {p}", r[part][p], g.get(part, {}).get(p))
    rst, gst = ref.get("stopped"), got.get("stopped")
    if (rst is None) != (gst is None) or (rst and (rst["step"], rst["reason"]) != (gst["step"], gst["reason"])):
        out.append(f"stopped: nnstep {rst}, torch {gst}")
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{case: (scenario path, exported script, the script's JSON output)}: one torch process."""
    pytest.importorskip("torch")
    from nnstep.export_torch import cmd_export

    d = tmp_path_factory.mktemp("export")
    cases = {}
    for path in SHIPPED:
        cases[os.path.relpath(path, ROOT)] = path
    for name, text in EXTRA.items():
        p = d / f"{name}.toml"
        p.write_text(text)
        cases[name] = str(p)
    scripts = {}
    for i, (case, path) in enumerate(cases.items()):
        out = str(d / f"ref{i}.py")
        with contextlib.redirect_stdout(io.StringIO()):
            assert cmd_export(path, out) == 0
        scripts[case] = out
    # large scenarios keep their arrays in an .npz beside the script: the same cases that way
    import nnstep.export_torch as ex
    for case in NPZ_CASES:
        if case not in cases:
            continue
        out = str(d / f"npz{len(scripts)}.py")
        limit, ex.INLINE_LIMIT = ex.INLINE_LIMIT, 0
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                assert cmd_export(cases[case], out) == 0
        finally:
            ex.INLINE_LIMIT = limit
        assert os.path.exists(out[:-3] + ".arrays.npz") and "ARRAYS = np.load(" in open(out).read()
        cases[case + " (npz)"] = cases[case]
        scripts[case + " (npz)"] = out
    r = subprocess.run([sys.executable, os.path.join(HERE, "torchrun.py"), *scripts.values()],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    outs = json.loads(r.stdout)
    return {case: (cases[case], scripts[case], outs[scripts[case]]) for case in cases}


NPZ_CASES = ["scenarios/classic.toml", "conv1d-bn1d-nesterov", "pool-dropout-logsoftmax-nll"]
CASES = [os.path.relpath(p, ROOT) for p in SHIPPED] + list(EXTRA)
CASES += [c + " (npz)" for c in NPZ_CASES if c in CASES]


@pytest.mark.parametrize("case", CASES)
def test_exported_script_agrees_with_nnstep_run(case, exported):
    path, script, out = exported[case]
    assert not out.startswith("ERROR"), f"{script} failed:\n{out}"
    got = json.loads(out)
    ref = nnstep_run_json(path)
    f32 = ref["dtype"] == "float32"
    diff = differences(ref, got, rtol=2e-4 if f32 else 1e-9, atol=1e-6 if f32 else 1e-12)
    assert not diff, f"{case}: the exported script ({script}) differs from nnstep run --json in:\n  " + \
        "\n  ".join(diff[:40])
    assert ref["steps"], "a scenario that trains no step compares nothing"


def test_the_comparison_can_fail(exported):
    """The check above is not vacuous: one changed number in torch's document is found."""
    path, _, out = exported["scenarios/classic.toml"]
    got = json.loads(out)
    got["steps"][0]["grads"]["linear1.weight"][1][0] *= 1 + 1e-8
    diff = differences(nnstep_run_json(path), got, 1e-9, 1e-12)
    assert len(diff) == 1 and diff[0].startswith("step 1 grads linear1.weight[1, 0]"), diff


def test_extra_scenarios_reach_every_layer_loss_and_optimizer():
    """The cases above cover everything the exporter writes (a type added to it and to no case
    fails here)."""
    from nnstep.layers import layer_types
    from nnstep.layers.registry import loss_types
    from nnstep.scenario import load_scenario, loads_scenario

    types, losses, opts, seen = set(), set(), set(), set()
    for sc in [load_scenario(p) for p in SHIPPED] + [loads_scenario(t) for t in EXTRA.values()]:
        types |= {L.type for L in sc.layers}
        losses.add(sc.loss.type)
        o, lo = sc.optimizer, sc.loss
        opts |= {f"{o.type}.{k}" for k in ("momentum", "dampening", "nesterov", "weight_decay") if getattr(o, k, None)}
        seen.add(o.type)
        seen |= {o.schedule.type} if o.schedule else set()
        seen |= {"warmup"} if o.schedule and getattr(o.schedule, "warmup", 0) else set()
        seen |= {"clip"} if o.clip_grad_norm else set()
        seen |= {"centered"} if getattr(o, "centered", False) else set()
        seen |= {k for k in ("label_smoothing", "weight", "pos_weight") if getattr(lo, k, None)}
    assert set(layer_types()) <= types, set(layer_types()) - types
    assert set(loss_types()) <= losses, set(loss_types()) - losses
    assert {"sgd.momentum", "sgd.dampening", "sgd.nesterov", "sgd.weight_decay", "adam.weight_decay",
            "rmsprop.momentum", "rmsprop.weight_decay", "adamw.weight_decay"} <= opts
    assert {"sgd", "adam", "adamw", "rmsprop", "step", "exponential", "cosine", "linear", "warmup", "clip", "centered",
            "label_smoothing", "weight", "pos_weight"} <= seen


# --- no torch needed --------------------------------------------------------------------------------
def test_every_type_has_a_torch_equivalent():
    """Every layer type says what it is in torch (a new one without is refused by export, and this
    test says which); every loss, optimizer and schedule names its torch class."""
    from nnstep.layers import Layer, layer_types
    from nnstep.layers.registry import loss_types, optimizer_types, schedule_types

    assert [t for t, cls in layer_types().items() if cls.torch_module.__func__ is Layer.torch_module.__func__] == []
    for table in (loss_types(), optimizer_types(), schedule_types()):
        assert [t for t, cls in table.items() if not cls.torch_class] == []


def test_weights_and_data_are_written_exactly(tmp_path):
    """Numbers that print long (1/3, 0.1 + 0.2, 2^-1074, -0.0) read back bit for bit."""
    from nnstep.export_torch import _lit

    a = np.array([[1 / 3, 0.1 + 0.2, 5e-324], [-0.0, 1e308, -123456789.123456789]])
    back = np.array(eval(_lit(a, 0)))  # noqa: S307 - our own output, numbers only
    assert back.tobytes() == a.tobytes()


def test_a_type_the_exporter_does_not_write_is_refused(monkeypatch, tmp_path):
    """Rather than a wrong script: a located error, exit 2, no file written."""
    import nnstep.export_torch as ex
    from nnstep.cli import main

    from nnstep.layers import layer_type

    monkeypatch.setattr(layer_type("tanh"), "torch_module", classmethod(lambda cls, L: None))
    src = os.path.join(ROOT, "scenarios", "xor-tanh.toml")
    out = tmp_path / "ref.py"
    with pytest.raises(ScenarioError) as e:
        ex.script(__import__("nnstep").load_scenario(src), src)
    assert "layers[1].type: a tanh layer has no torch equivalent" in str(e.value)
    assert main(["export", src, "--torch", "-o", str(out)]) == 2
    assert not out.exists()


def test_export_never_imports_torch():
    """nnstep itself never imports torch: run, compare and export in one fresh interpreter."""
    code = f"""
import sys, contextlib, io, numpy as np
from nnstep.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    main(["run", {os.path.join(ROOT, "scenarios", "tiny-lm.toml")!r}])
    main(["export", {os.path.join(ROOT, "scenarios", "tiny-lm.toml")!r}, "--torch", "-o", sys.argv[1]])
    import nnstep
    nnstep.compare({os.path.join(ROOT, "scenarios", "classic.toml")!r}, {{"loss": np.array(0.3)}})
print(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
"""
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        r = subprocess.run([sys.executable, "-c", code, os.path.join(d, "ref.py")], capture_output=True, text=True,
                           timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("path", SHIPPED, ids=[os.path.relpath(p, ROOT) for p in SHIPPED])
def test_the_script_is_standalone(path, tmp_path, capsys):
    """Valid Python importing json, math and torch only (nothing of nnstep's, no file read), from
    the command line as a user runs it."""
    import ast

    from nnstep.cli import main

    out = tmp_path / "ref.py"
    assert main(["export", path, "--torch", "-o", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out}: ")
    tree = ast.parse(out.read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported == {"json", "math", "torch"}
    assert "open(" not in out.read_text() and not (tmp_path / "ref.arrays.npz").exists()
