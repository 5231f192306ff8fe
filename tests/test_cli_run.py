"""`nnstep run`: worked examples end to end through `run --json`, the `stopped` object on a blowup,
`--save` loaded back as `scenario.weights`, and the headless commands never importing Textual."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from nnstep.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSIC = os.path.join(ROOT, "scenarios", "classic.toml")


def nnstep(*args):
    return subprocess.run([sys.executable, "-m", "nnstep", *args], capture_output=True, text=True, timeout=120)


def run_json(capsys, *args):
    code = main(["run", *args, "--json"])
    out = capsys.readouterr()
    return code, json.loads(out.out), out.err


def test_mazur_worked_example_through_run_json():
    """Source: Matt Mazur, "A Step by Step Backpropagation Example" (2015),
    https://mattmazur.com/2015/03/17/a-step-by-step-backpropagation-example/ : the 2-2-2 sigmoid net
    with i = (0.05, 0.10), target (0.01, 0.99), E = ½Σ(target − out)², one SGD step with η = 0.5.
    He publishes E_total = 0.298371109, w5⁺..w8⁺ = 0.35891648, 0.408666186, 0.511301270,
    0.561370121 and w1⁺..w4⁺ = 0.149780716, 0.19956143, 0.24975114, 0.29950229 (rounded to ~9
    digits, hence atol 5e-9); he never updates the biases (b1 = 0.35, b2 = 0.60), which
    scenarios/classic.toml freezes, so they are in `initial` but not in `grads`/`params`."""
    r = nnstep("run", CLASSIC, "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["dtype"] == "float64" and d["scenario"] == "Mazur's 2-2-2 sigmoid network"
    assert set(d["initial"]) == {"linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias"}
    assert d["initial"]["linear1.weight"] == [[0.15, 0.20], [0.25, 0.30]]
    assert [s["step"] for s in d["steps"]] == [1]
    s1 = d["steps"][0]
    assert "stopped" not in d
    assert abs(s1["loss"] - 0.298371109) < 5e-9
    assert set(s1["params"]) == set(s1["grads"]) == {"linear1.weight", "linear2.weight"}
    np.testing.assert_allclose(s1["params"]["linear2.weight"], [[0.35891648, 0.408666186], [0.511301270, 0.561370121]],
                               rtol=0, atol=5e-9)
    np.testing.assert_allclose(s1["params"]["linear1.weight"], [[0.149780716, 0.19956143], [0.24975114, 0.29950229]],
                               rtol=0, atol=5e-9)
    # ∂E/∂w5 = 0.082167041 (Mazur), and the update is exactly w − η·grad
    assert abs(s1["grads"]["linear2.weight"][0][0] - 0.082167041) < 5e-9
    for p in ("linear1.weight", "linear2.weight"):
        np.testing.assert_array_equal(np.array(s1["params"][p]),
                                      np.array(d["initial"][p]) - 0.5 * np.array(s1["grads"][p]))


CE_MOMENTUM = """
[scenario]
name = "hand-derived cross-entropy with momentum"
[data]
x = [[1.0, 2.0]]
y = [0]
[[layers]]
type = "linear"
out = 2
weight = [[0.0, 0.0], [0.0, 0.0]]
bias = [0.0, 0.0]
[loss]
type = "cross_entropy"
[optimizer]
type = "sgd"
lr = 1.0
momentum = 0.9
[train]
steps = 2
"""


def test_hand_derived_cross_entropy_with_momentum(tmp_path):
    """A second, independent worked example, derived by hand.
    Linear 2→2 from zero weights and bias, x = (1, 2), class 0, cross-entropy, SGD lr 1, momentum 0.9.
    Step 1: logits (0, 0), softmax (½, ½), loss = ln 2 = 0.6931471805599453.
      dL/dz = softmax − onehot = (−½, ½);  dW = dzᵀx = [[−½, −1], [½, 1]];  db = (−½, ½).
      The momentum buffer starts at the first gradient: buf = grad, so W₁ = −dW = [[½, 1], [−½, −1]],
      b₁ = (½, −½).
    Step 2: z = W₁x + b₁ = (½ + 2 + ½, −½ − 2 − ½) = (3, −3). With s = σ(−6) = 1/(1 + e⁶):
      softmax = (1 − s, s), loss = −log(1 − s) = log(1 + e⁻⁶) = 0.0024756851377303;
      dL/dz = (−s, s), dW = [[−s, −2s], [s, 2s]], db = (−s, s);
      buf₂ = 0.9·buf₁ + grad₂: for W[0] = 0.9·(−½, −1) + (−s, −2s) = (−0.45 − s, −0.9 − 2s),
      W₂[0] = W₁[0] − buf₂[0] = (0.95 + s, 1.9 + 2s), W₂[1] = −W₂[0]; b₂ = (0.95 + s, −0.95 − s)."""
    p = tmp_path / "ce.toml"
    p.write_text(CE_MOMENTUM)
    r = nnstep("run", str(p), "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    s = 1.0 / (1.0 + math.exp(6.0))
    s1, s2 = d["steps"]
    assert s1["loss"] == pytest.approx(math.log(2.0), rel=1e-15)
    assert s1["grads"]["linear1.weight"] == [[-0.5, -1.0], [0.5, 1.0]]
    assert s1["params"]["linear1.weight"] == [[0.5, 1.0], [-0.5, -1.0]]
    assert s1["params"]["linear1.bias"] == [0.5, -0.5]
    assert s2["loss"] == pytest.approx(math.log1p(math.exp(-6.0)), rel=1e-13)
    assert s2["loss"] == pytest.approx(0.0024756851377303, rel=1e-12)
    np.testing.assert_allclose(s2["grads"]["linear1.weight"], [[-s, -2 * s], [s, 2 * s]], rtol=1e-13)
    np.testing.assert_allclose(s2["params"]["linear1.weight"], [[0.95 + s, 1.9 + 2 * s], [-0.95 - s, -1.9 - 2 * s]],
                               rtol=1e-14)
    np.testing.assert_allclose(s2["params"]["linear1.bias"], [0.95 + s, -0.95 - s], rtol=1e-14)


BLOWUP = """
[data]
x = [[3.0]]
y = [[0.0]]
[[layers]]
type = "linear"
out = 1
weight = [[1.0]]
bias = [0.0]
[loss]
type = "mse"
reduction = "sum"
[optimizer]
type = "sgd"
lr = 1.0
[train]
steps = 500
"""


def test_run_json_stopped_on_blowup(tmp_path, capsys):
    """By hand: d = 3w + b − 0 starts at 3; loss = d², dL/dw = 2d·3, dL/db = 2d, so with lr 1 the
    next d is 3(w − 6d) + (b − 2d) = d − 20d = −19d. Step k's loss is 9·361^(k−1): finite up to
    k = 121 (≈ 7e307), inf at k = 122 (9·361¹²¹ ≈ 2.6e310 > 1.8e308). So `run` completes 121 steps
    and stops in step 122 at the `loss` op, tensor `loss`, exit 1."""
    p = tmp_path / "blowup.toml"
    p.write_text(BLOWUP)
    code, d, err = run_json(capsys, str(p))
    assert code == 1
    assert len(d["steps"]) == 121 and d["steps"][-1]["step"] == 121
    assert d["stopped"] == {"step": 122, "op": "loss", "tensor": "loss", "reason": "nonfinite"}
    for k in (1, 2, 50, 121):
        assert d["steps"][k - 1]["loss"] == pytest.approx(9.0 * 361.0 ** (k - 1), rel=1e-12)
    assert "step 122" in err and "loss" in err and "Traceback" not in err
    # the plain table says the same on stderr, with exit 1
    assert main(["run", str(p)]) == 1
    out = capsys.readouterr()
    assert "stopped at step 122" in out.err and "   121 " in out.out


def test_run_json_stopped_at_step_1(tmp_path, capsys):
    """x = 1e200, w = 1: the prediction 1e200 is finite, its square overflows in the loss op."""
    p = tmp_path / "inf.toml"
    p.write_text(BLOWUP.replace("[[3.0]]", "[[1e200]]"))
    code, d, _ = run_json(capsys, str(p))
    assert code == 1
    assert d["steps"] == []
    assert d["stopped"] == {"step": 1, "op": "loss", "tensor": "loss", "reason": "nonfinite"}
    assert d["initial"]["linear1.weight"] == [[1.0]]


def test_run_json_stopped_at_when_breakpoint(tmp_path, capsys):
    p = tmp_path / "bp.toml"
    p.write_text(BLOWUP + '[[breakpoints]]\nwhen = "linear1.weight.grad absmax > 1e6"\n')
    code, d, _ = run_json(capsys, str(p))
    # |dL/dw| = 6·3·19^(k−1) = 18·19^(k−1) passes 1e6 at k = 5 (18·19⁴ = 2.3e6; 18·19³ = 1.2e5)
    assert d["stopped"] == {"step": 5, "op": "backward linear1", "tensor": "linear1.weight.grad",
                            "reason": "breakpoint"}
    assert len(d["steps"]) == 4
    assert code == 1
    assert main(["run", str(p), "--json", "--ignore-breakpoints", "--steps", "10"]) == 0


def test_run_stops_where_a_condition_on_the_batch_holds(tmp_path, capsys):
    """A condition on `input` fires when the batch is fed, before the step's first op: with
    batch_size 1 the second sample [3, 40] (absmax 40 > 10) is step 2's batch."""
    p = tmp_path / "feed.toml"
    p.write_text('[data]\nx = [[1.0, 2.0], [3.0, 40.0]]\ny = [[1.0], [2.0]]\n[[layers]]\ntype = "linear"\n'
                 'out = 1\n[loss]\ntype = "mse"\n[train]\nsteps = 4\nbatch_size = 1\n'
                 '[[breakpoints]]\nwhen = "input absmax > 10"\n')
    code, d, _ = run_json(capsys, str(p))
    assert code == 1
    assert len(d["steps"]) == 1
    assert d["stopped"] == {"step": 2, "op": "forward linear1", "tensor": "input", "reason": "breakpoint"}


def test_save_then_load_as_weights_round_trip(tmp_path, capsys):
    """`run --save` writes the final parameters by name; `weights = "that.npz"` loads them as the
    initial parameters of another scenario (here with different weights in the file), bit for bit."""
    src = tmp_path / "classic.toml"
    src.write_text(open(CLASSIC).read().replace("steps = 1", "steps = 3"))
    out = tmp_path / "trained.npz"
    code, d, _ = run_json(capsys, str(src), "--save", str(out))
    assert code == 0
    with np.load(out, allow_pickle=False) as z:
        saved = {k: z[k] for k in z.files}
    assert set(saved) == {"linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias"}
    final = d["steps"][-1]["params"]
    for p in final:
        assert saved[p].tolist() == final[p]
    assert saved["linear1.bias"].tolist() == [0.35, 0.35]          # frozen: saved as it was

    again = tmp_path / "again.toml"
    text = open(CLASSIC).read().replace("[[0.40, 0.45], [0.50, 0.55]]", "[[9.0, 9.0], [9.0, 9.0]]")
    again.write_text(text.replace('dtype = "float64"', 'dtype = "float64"\nweights = "trained.npz"'))
    code, d2, _ = run_json(capsys, str(again))
    assert code == 0
    for p, v in saved.items():
        assert d2["initial"][p] == v.tolist()


def test_torch_style_state_dict_export_loads(tmp_path, capsys):
    """The README recipe's result: an npz of float32 arrays named "<layer>.<param>" (renamed from
    torch's "0.weight", ...), plus BatchNorm's num_batches_tracked, which nnstep skips."""
    net = tmp_path / "net.toml"
    net.write_text("""
[scenario]
weights = "w.npz"
[data]
x = [[0.5, -1.0, 2.0], [1.0, 0.0, -1.0]]
y = [[1.0, 0.0], [0.0, 1.0]]
[[layers]]
type = "linear"
out = 2
[[layers]]
type = "batchnorm"
[loss]
type = "mse"
""")
    w = np.arange(6, dtype=np.float32).reshape(2, 3) / 10
    np.savez(tmp_path / "w.npz", **{"linear1.weight": w, "linear1.bias": np.float32([1, -1]),
                                    "batchnorm1.weight": np.float32([2, 3]), "batchnorm1.bias": np.zeros(2, np.float32),
                                    "batchnorm1.num_batches_tracked": np.int64(7)})
    code, d, _ = run_json(capsys, str(net), "--steps", "1")
    assert code == 0
    assert d["initial"]["linear1.weight"] == w.astype(np.float64).tolist()
    assert d["initial"]["batchnorm1.weight"] == [2.0, 3.0]


def test_plain_table(capsys):
    assert main(["run", CLASSIC]) == 0
    out = capsys.readouterr().out
    assert "Mazur's 2-2-2 sigmoid network: 1 step, float64" in out
    assert "0.2983711088" in out and "0.29837110876" not in out    # 10 significant digits (--json: all)


def test_bad_input_exit_2_without_traceback(tmp_path, capsys):
    p = tmp_path / "bad.toml"
    p.write_text(BLOWUP.replace("out = 1", "out = -3"))
    assert main(["run", str(p), "--json"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nnstep: error: ") and "layers[0].out" in err and "Traceback" not in err
    assert main(["run", str(tmp_path / "missing.toml")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_headless_commands_never_import_textual():
    """`python -m nnstep run/trace/gradcheck/check` in a fresh interpreter, then ask sys.modules."""
    code = (
        "import sys, io, contextlib\n"
        "from nnstep.cli import main\n"
        "codes = []\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    for argv in (['run', {CLASSIC!r}, '--json'], ['trace', {CLASSIC!r}, '--json'],\n"
        f"                 ['gradcheck', {CLASSIC!r}], ['check', {CLASSIC!r}]):\n"
        "        codes.append(main(argv))\n"
        "print(codes, 'textual' in sys.modules, any(m.startswith('textual') for m in sys.modules))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[0, 0, 0, 0] False False"
    for cmd in (["run", CLASSIC], ["check", CLASSIC]):
        r = subprocess.run([sys.executable, "-X", "importtime", "-m", "nnstep", *cmd], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0
        assert "textual" not in r.stderr          # -X importtime lists every module imported


def test_huge_but_finite_values_do_not_stop_the_run(tmp_path, capsys):
    """linear1.out = [[1e308], [1e308]] is finite, though its sum overflows (the NaN check's fast
    path): run must not stop. Target = prediction, so the loss and every gradient are 0."""
    p = tmp_path / "huge.toml"
    p.write_text(BLOWUP.replace("x = [[3.0]]\ny = [[0.0]]", "x = [[1e308], [1e308]]\ny = [[1e308], [1e308]]")
                 .replace("steps = 500", "steps = 2"))
    code, d, err = run_json(capsys, str(p))
    assert code == 0, err
    assert "stopped" not in d
    assert [s["loss"] for s in d["steps"]] == [0.0, 0.0]


def test_the_console_script_ends_headless_commands_cleanly(tmp_path):
    """`nnstep run` ends with os._exit after flushing (cli.entry): everything printed arrives,
    piped or in a file, the exit code is main()'s, and a --save file is complete."""
    out = tmp_path / "w.npz"
    r = nnstep("run", CLASSIC, "--steps", "50", "--save", str(out))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[-1].startswith("saved ") and lines[-2].split()[0] == "50"
    assert set(np.load(out).files) == {"linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias"}
    log = tmp_path / "log.txt"
    with open(log, "w") as fh:                       # block-buffered: only the final flush writes it
        r2 = subprocess.run([sys.executable, "-m", "nnstep", "run", CLASSIC, "--steps", "50"], stdout=fh, timeout=120)
    assert r2.returncode == 0 and log.read_text().splitlines() == lines[:-1]
    r3 = nnstep("run", str(tmp_path / "missing.toml"))
    assert r3.returncode == 2 and r3.stderr.startswith("nnstep: error:")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_output_to_a_full_disk_is_an_error_not_a_traceback():
    for args in (["run", CLASSIC, "--steps", "3"], ["trace", CLASSIC, "--json"]):
        with open("/dev/full", "w") as full:
            r = subprocess.run([sys.executable, "-m", "nnstep", *args], stdout=full, stderr=subprocess.PIPE,
                               text=True, timeout=120)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        assert r.stderr.startswith("nnstep: error:") and "Traceback" not in r.stderr


def test_the_table_prints_the_loss_to_10_significant_digits_and_json_keeps_every_one(tmp_path, capsys):
    """The tutorial's neuron: step 4's loss is 0.046945125 in exact arithmetic, the float
    0.046945125000000074 (which the table printed to 15 digits as 0.0469451250000001); the table
    says 0.046945125, --json gives the float itself."""
    p = tmp_path / "first.toml"
    p.write_text('[data]\nx = [[1.0], [2.0]]\ny = [[2.0], [4.0]]\n[[layers]]\ntype = "linear"\nout = 1\n'
                 'weight = [[0.5]]\nbias = [0.0]\n[loss]\ntype = "mse"\n[optimizer]\ntype = "sgd"\nlr = 0.1\n'
                 '[train]\nsteps = 5\n')
    assert main(["run", str(p)]) == 0
    out = capsys.readouterr().out
    assert "     4       0.046945125      0.293701" in out and "0.0469451250000001" not in out
    code, d, _ = run_json(capsys, str(p))
    assert code == 0 and d["steps"][3]["loss"] == 0.046945125000000074


@pytest.mark.parametrize("argv,first", [
    ([CLASSIC, "--nope"], "nnstep: error: nnstep tui: unrecognized arguments: --nope"),
    (["run", CLASSIC, "--nope", "-x"], "nnstep: error: nnstep run: unrecognized arguments: --nope -x"),
    (["--nope"], "nnstep: error: unrecognized arguments: --nope"),
])
def test_an_argument_error_names_the_program_once(capsys, argv, first):
    """'nnstep: error: nnstep: unrecognized arguments' said the program twice; the command the
    argument was given to is named instead (or nothing, at the top level), with its --help."""
    assert main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == first and "nnstep: error: nnstep:" not in err[0]
    command = {"tui": "nnstep tui", "run": "nnstep run"}.get(argv[0] if argv[0] != CLASSIC else "tui", "nnstep")
    assert err[1] == f"(see '{command} --help')"
