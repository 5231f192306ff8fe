"""`nnstep import file.py:Name`: every mapped module and function against the model's own forward
(torch, float64, training mode), the done models stepped through, what does not map, bad input."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import nnstep  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from importhelp import MODELS, cli, forward_values, user_models  # noqa: E402,F401  (cli: a fixture)

# model name -> the batch's shape (its first dim the batch)
CASES = {
    "TrainedMLP": (8, 20), "MnistNet": (3, 1, 28, 28), "ResidualBlock": (4, 3, 5, 5), "SelfAttentionBlock": (3, 5, 8),
    "LSTMTagger": (2, 7), "make_mlp": (4, 3), "Activations": (5, 4), "LogSoftmaxMod": (3, 4), "Conv1dPool": (2, 2, 9),
    "Conv2dPool": (2, 2, 5, 6), "BatchNorm1dMod": (6, 4), "BatchNorm1dSeq": (3, 2, 5), "LayerNormMod": (3, 4),
    "DropoutMod": (4, 4), "RNNMod": (2, 5, 3), "RNNTanh": (2, 4, 3), "Functional": (3, 4), "Shapes": (2, 6),
    "FunctionalPool": (2, 1, 9, 9), "HandAttention": (2, 3, 4), "MoreFunctional": (3, 2, 5),
    "TinyResNet": (2, 3, 8, 8), "AdaptivePools": (2, 2, 4, 6), "Causalish": (2, 3, 4), "EmbeddingMLP": (4, 5),
}

EXPECTED_TYPES = {    # what each maps to: the mapping, not only the numbers
    "MnistNet": ["conv2d", "relu", "conv2d", "relu", "maxpool2d", "dropout", "flatten", "linear", "relu", "dropout",
                 "linear", "log_softmax"],
    "ResidualBlock": ["conv2d", "batchnorm", "relu", "conv2d", "batchnorm", "add", "relu"],
    "SelfAttentionBlock": ["layernorm", "attention", "add", "layernorm", "linear", "gelu", "linear", "add"],
    "LSTMTagger": ["embedding", "lstm", "linear", "log_softmax"],
    "Functional": ["linear", "linear", "relu", "sigmoid", "add", "tanh", "mul", "relu", "scale", "scale",
                   "leaky_relu", "gelu", "concat", "relu", "sigmoid", "tanh", "softmax", "softmax", "add",
                   "log_softmax", "add", "log_softmax", "add"],
    "Shapes": ["linear", "reshape", "reshape", "transpose", "matmul", "transpose", "transpose", "matmul", "flatten",
               "reshape", "add", "reshape", "flatten"],
    "FunctionalPool": ["conv2d", "maxpool2d", "avgpool2d", "reshape", "maxpool1d", "avgpool1d"],
    "Conv1dPool": ["conv1d", "maxpool1d", "conv1d", "avgpool1d", "flatten"],
    "TinyResNet": ["conv2d", "batchnorm", "relu", "conv2d", "batchnorm", "conv2d", "batchnorm", "relu", "conv2d",
                   "batchnorm", "add", "relu", "avgpool2d", "flatten", "linear"],
    "AdaptivePools": ["maxpool2d", "avgpool2d", "reshape", "reshape", "avgpool1d", "maxpool2d", "reshape", "maxpool1d",
                      "maxpool1d", "avgpool1d", "concat"],
    "HandAttention": ["linear", "linear", "linear", "transpose", "matmul", "scale", "softmax", "matmul", "transpose"],
}


def do_import(cli, tmp_path, name, shape, *extra):
    torch.manual_seed(1234)             # the importer builds the model in this process: the same draws
    out = str(tmp_path / "net.toml")
    rc, so, se = cli("import", f"{MODELS}:{name}", "-o", out, "--input-shape", ",".join(map(str, shape)), *extra)
    assert rc == 0, se
    return out, so


def own_model(name):
    torch.manual_seed(1234)
    obj = getattr(user_models(), name)
    return obj().double().train()


def own_forward(model, x, masks, monkeypatch=None):
    """The model's own forward; a dropout applies nnstep's mask (torch would draw another): an
    nn.Dropout through a forward hook, F.dropout (when no module is left) patched for the call."""
    hooks = []
    drops = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    for m, mask in zip(drops, masks):
        hooks.append(m.register_forward_hook(lambda mod, inp, out, mask=mask: inp[0] * torch.from_numpy(mask)))
    if masks and not drops:
        left = list(masks)
        monkeypatch.setattr(torch.nn.functional, "dropout", lambda t, *a, **k: t * torch.from_numpy(left.pop(0)))
    xt = torch.from_numpy(x) if x.dtype.kind == "f" else torch.from_numpy(x.astype(np.int64))
    with torch.no_grad():
        y = model(xt)
    for h in hooks:
        h.remove()
    return y.numpy()


@pytest.mark.parametrize("name", list(CASES))
def test_imported_forward_is_the_models_own(cli, tmp_path, name, monkeypatch):
    path, said = do_import(cli, tmp_path, name, CASES[name])
    assert "agrees with the model's" in said
    sc = nnstep.load_scenario(path)
    if name in EXPECTED_TYPES:
        assert [L.type for L in sc.layers] == EXPECTED_TYPES[name]
    s, outs, seen = forward_values(sc)
    assert seen[0].startswith(f"forward {sc.layers[0].name}")
    masks = [np.asarray(s.value(f"{L.name}.mask")) for L in sc.layers if L.type == "dropout"]
    want = own_forward(own_model(name), np.asarray(s.value("input")), masks, monkeypatch)
    got = outs[sc.layers[-1].name]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_every_declared_torch_module_and_function_is_among_the_tested_models():
    """Each name a layer class declares (torch_modules, torch_functions) is mapped in at least one of
    the models test_imported_forward_is_the_models_own checks against torch."""
    from nnstep.importer import torch_fx
    from nnstep.layers import registry
    seen = set()
    for name, shape in CASES.items():
        torch.manual_seed(0)
        m = torch_fx.load(f"{MODELS}:{name}", None, shape)
        seen |= {L.origin.split(" ")[0] for L in m.layers}
    spelled = {"+": "operator.add", "*": "operator.mul", "@": "operator.matmul", "* number": "operator.mul",
               "/ number": "operator.truediv", "Tensor.permute (a swap)": "Tensor.permute",
               # F.sigmoid and F.tanh are input.sigmoid() and input.tanh() inside: fx records the method
               "F.sigmoid": "Tensor.sigmoid", "F.tanh": "Tensor.tanh"}
    missing = []
    for cls in registry.builtin_types().values():
        missing += [f"nn.{m}" for m in cls.torch_modules if f"nn.{m}" not in seen]
        missing += [f for f in cls.torch_functions if spelled.get(f, f) not in seen]
    assert not missing, missing


def test_layers_are_named_after_the_models_modules(cli, tmp_path):
    path, _ = do_import(cli, tmp_path, "MnistNet", CASES["MnistNet"])
    sc = nnstep.load_scenario(path)
    assert [L.name for L in sc.layers] == ["conv1", "relu", "conv2", "relu_1", "max_pool2d", "dropout1", "flatten",
                                           "fc1", "relu_2", "dropout2", "fc2", "log_softmax"]
    text = open(path).read()
    assert "# The loss and optimizer are placeholders" in text and 'type = "mse"' in text and 'type = "sgd"' in text
    w = np.load(tmp_path / "net.weights.npz")
    model = own_model("MnistNet")
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(w[k], v.numpy())


def test_a_top_level_sequential_names_layers_by_type_and_index(cli, tmp_path):
    path, _ = do_import(cli, tmp_path, "make_mlp", CASES["make_mlp"])
    assert [L.name for L in nnstep.load_scenario(path).layers] == ["linear0", "sigmoid1", "linear2"]
    assert sorted(np.load(tmp_path / "net.weights.npz").files) == ["linear0.bias", "linear0.weight", "linear2.bias",
                                                                   "linear2.weight"]


def test_residual_wiring_and_batchnorm_running_statistics(cli, tmp_path):
    path, _ = do_import(cli, tmp_path, "ResidualBlock", CASES["ResidualBlock"])
    sc = nnstep.load_scenario(path)
    add = next(L for L in sc.layers if L.type == "add")
    assert list(add.inputs) == ["bn2.out", "input"]              # the skip reads the batch itself
    model = own_model("ResidualBlock")
    s = nnstep.Session(sc)
    np.testing.assert_array_equal(s.value("bn1.running_mean"), np.full(3, 0.25))
    np.testing.assert_array_equal(s.value("bn1.running_var"), np.full(3, 2.0))
    s.run()                                            # the whole step
    with torch.no_grad():
        model(torch.from_numpy(np.asarray(sc.x)))     # torch updates its running statistics in training mode
    for b in ("bn1", "bn2"):
        for st in ("running_mean", "running_var"):
            np.testing.assert_allclose(s.value(f"{b}.{st}"), getattr(model, b).__getattr__(st).numpy(), rtol=1e-12)


def _torch_step(model, x, y):
    """The original model's step 1 under the scenario's placeholder loss (mse): loss and grads."""
    model.zero_grad()
    xt = torch.from_numpy(x) if x.dtype.kind == "f" else torch.from_numpy(x.astype(np.int64))
    loss = torch.nn.functional.mse_loss(model(xt), torch.from_numpy(np.asarray(y, dtype=np.float64)))
    loss.backward()
    return float(loss.detach()), {k: p.grad.numpy() for k, p in model.named_parameters()}


@pytest.mark.parametrize("name", ["ResidualBlock", "LSTMTagger", "SelfAttentionBlock"])
def test_export_torch_of_an_import_reproduces_the_original_model(cli, tmp_path, name):
    path, _ = do_import(cli, tmp_path, name, CASES[name])
    ref = str(tmp_path / "ref.py")
    rc, _, se = cli("export", path, "--torch", "-o", ref)
    assert rc == 0, se
    r = subprocess.run([sys.executable, ref], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    sc = nnstep.load_scenario(path)
    loss, grads = _torch_step(own_model(name), np.asarray(sc.x), sc.y)
    step = doc["steps"][0]
    assert step["loss"] == pytest.approx(loss, rel=1e-9)
    rc, so, se = cli("run", path, "--json")
    mine = json.loads(so)["steps"][0]
    assert mine["loss"] == pytest.approx(loss, rel=1e-9)
    compared = 0
    for k, g in grads.items():
        key = k.replace("_l0", "").replace("out_proj.", "out_proj_")
        if key in mine["grads"]:
            np.testing.assert_allclose(np.asarray(mine["grads"][key]), g, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(np.asarray(step["grads"][key]), g, rtol=1e-9, atol=1e-12)
            compared += 1
    assert compared == len(grads)


def test_data_file_beside_the_scenario_is_read_in_place(cli, tmp_path):
    rng = np.random.default_rng(3)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(6, 3)), y=rng.normal(size=(6, 2)))
    torch.manual_seed(1234)
    rc, so, se = cli("import", f"{MODELS}:make_mlp", "-o", str(tmp_path / "net.toml"), "--data", str(tmp_path / "d.npz"))
    assert rc == 0, se
    text = (tmp_path / "net.toml").read_text()
    assert 'x = { file = "d.npz", key = "x" }' in text
    assert not (tmp_path / "net.data.npz").exists()
    sc = nnstep.load_scenario(str(tmp_path / "net.toml"))
    np.testing.assert_array_equal(sc.x, np.load(tmp_path / "d.npz")["x"])


def test_data_file_elsewhere_is_copied_beside_it(cli, tmp_path):
    (tmp_path / "out").mkdir()
    rng = np.random.default_rng(3)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(70, 3)), y=rng.normal(size=(70, 2)))
    torch.manual_seed(1234)
    rc, so, se = cli("import", f"{MODELS}:make_mlp", "-o", str(tmp_path / "out" / "net.toml"), "--data",
                     str(tmp_path / "d.npz"))
    assert rc == 0, se
    assert (tmp_path / "out" / "net.data.npz").exists()
    text = (tmp_path / "out" / "net.toml").read_text()
    assert "batch_size = 64" in text                 # 70 samples: batches of 64
    sc = nnstep.load_scenario(str(tmp_path / "out" / "net.toml"))
    assert sc.x.shape == (70, 3)


# --- what does not map: exit 2, the node, its operator or module, what maps; nothing written -------

@pytest.mark.parametrize("name, shape, words", [
    ("UsesSin", (2, 3), ['node "sin"', "(torch.sin)", "does not map", "nn.Linear", "F.relu"]),
    ("UsesBilinearModule", (2, 3), ['node "soft"', "(nn.Softplus soft)", "does not map", "nn.LSTM"]),
    ("TwoLayerLSTM", (2, 4, 3), ['node "lstm"', "(nn.LSTM lstm)", "num_layers=1"]),
    ("AddsBias", (2, 3), ['node "add"', "(operator.add)", "shift"]),
    ("RNNWhole", (2, 4, 3), ['node "rnn"', "(nn.RNN rnn)", "return out[0]"]),
])
def test_unmappable_is_exit_2_naming_the_node(cli, tmp_path, name, shape, words):
    rc, so, se = cli("import", f"{MODELS}:{name}", "-o", str(tmp_path / "net.toml"), "--input-shape",
                     ",".join(map(str, shape)))
    assert rc == 2
    assert se.startswith("nnstep: error: ") and se.count("\n") == 1, se
    for w in words:
        assert w in se, (w, se)
    assert os.listdir(tmp_path) == []


def test_a_model_returning_a_tuple_is_refused(cli, tmp_path):
    rc, so, se = cli("import", f"{MODELS}:ReturnsTuple", "-o", str(tmp_path / "n.toml"), "--input-shape", "2,3")
    assert rc == 2 and "one tensor" in se
    assert os.listdir(tmp_path) == []


# --- bad input: located, one line, exit 2 ------------------------------------------------------------

@pytest.mark.parametrize("source, words", [
    ("nope/model.py:Net", ["nope/model.py: no such file"]),
    (f"{MODELS}:Nett", [f"{MODELS}: has no 'Nett'", "NeedsArgs"]),
    (f"{MODELS}:ControlFlow", ["torch.fx cannot trace it", "TraceError", "control flow"]),
    (f"{MODELS}:NeedsArgs", ["NeedsArgs() raised TypeError: ", "missing 1 required positional argument: 'width'",
                             "no arguments"]),
    (f"{MODELS}:not_a_model", ["not_a_model is a int"]),
    ("no_such_package_xyz.models:Net", ["no module named 'no_such_package_xyz'"]),
    ("justaname", ["expected path/to/file.py:Name"]),
    ("model.pt", ["model.pt: holds weights, not a model", "loads these weights"]),
])
def test_bad_source_is_a_located_error(cli, tmp_path, source, words):
    rc, so, se = cli("import", source, "-o", str(tmp_path / "net.toml"), "--input-shape", "2,3")
    assert rc == 2, se
    assert se.startswith("nnstep: error: ") and se.count("\n") == 1 and "Traceback" not in se, se
    for w in words:
        assert w in se, (w, se)
    assert os.listdir(tmp_path) == []


def test_a_file_that_raises_on_import_is_located(cli, tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\n\nraise RuntimeError('boom')\n")
    rc, so, se = cli("import", f"{bad}:Net", "-o", str(tmp_path / "net.toml"), "--input-shape", "2,3")
    assert rc == 2 and "importing it raised RuntimeError at line 3: boom" in se, se


def test_wrong_input_shape_is_said(cli, tmp_path):
    rc, so, se = cli("import", f"{MODELS}:make_mlp", "-o", str(tmp_path / "net.toml"), "--input-shape", "2,4")
    assert rc == 2 and "does not run on a batch of shape [2, 4]" in se, se


@pytest.mark.parametrize("args, words", [
    ((), ["expected --input-shape"]),
    (("--input-shape", "2,3", "--data", "d.npz"), ["not both"]),
    (("--input-shape", "2,x"), ["--input-shape", "expected"]),
    (("--input-shape", "0,3"), ["positive"]),
    (("--data", "missing.npz"), ["missing.npz: no such file"]),
])
def test_bad_flags(cli, tmp_path, args, words):
    rc, so, se = cli("import", f"{MODELS}:make_mlp", "-o", str(tmp_path / "net.toml"), *args)
    assert rc == 2, se
    for w in words:
        assert w in se, (w, se)


def test_never_overwrites_without_force(cli, tmp_path):
    out = tmp_path / "net.toml"
    out.write_text("mine\n")
    rc, so, se = cli("import", f"{MODELS}:make_mlp", "-o", str(out), "--input-shape", "2,3")
    assert rc == 2 and "already exists (use --force to overwrite it)" in se
    assert out.read_text() == "mine\n" and not (tmp_path / "net.weights.npz").exists()
    (tmp_path / "net.weights.npz").write_bytes(b"x")
    out.unlink()
    rc, so, se = cli("import", f"{MODELS}:make_mlp", "-o", str(out), "--input-shape", "2,3")
    assert rc == 2 and "net.weights.npz: already exists" in se and not out.exists()
    rc, so, se = cli("import", f"{MODELS}:make_mlp", "-o", str(out), "--input-shape", "2,3", "--force")
    assert rc == 0, se
    assert nnstep.load_scenario(str(out)).layers[0].type == "linear"


def test_package_module_name_source(cli, tmp_path, monkeypatch):
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text("from torch import nn\n\ndef tiny():\n    return nn.Sequential(nn.Linear(2, 2), nn.ReLU())\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    rc, so, se = cli("import", "mypkg.nets:tiny", "-o", str(tmp_path / "net.toml"), "--input-shape", "3,2")
    assert rc == 0, se
    assert [L.type for L in nnstep.load_scenario(str(tmp_path / "net.toml")).layers] == ["linear", "relu"]


def test_output_problems_are_found_before_tracing(cli, tmp_path):
    """The model is never built when the output cannot be written (the model here would not trace)."""
    (tmp_path / "net.toml").write_text("mine\n")
    rc, so, se = cli("import", f"{MODELS}:ControlFlow", "-o", str(tmp_path / "net.toml"), "--input-shape", "2,3")
    assert rc == 2 and "already exists" in se and "trace" not in se, se
    rc, so, se = cli("import", f"{MODELS}:make_mlp", "-o", str(tmp_path / "nope" / "net.toml"), "--input-shape", "2,3")
    assert rc == 2 and "no such folder" in se, se
    np.savez(tmp_path / "net.weights.npz", x=np.zeros((2, 3)), y=np.zeros((2, 2)))
    rc, so, se = cli("import", f"{MODELS}:make_mlp", "-o", str(tmp_path / "net.toml"), "--data",
                     str(tmp_path / "net.weights.npz"), "--force")
    assert rc == 2 and "is the --data file" in se, se


def test_class_index_targets_get_a_loss_that_takes_them(cli, tmp_path):
    """MNIST-style data, y the digit: mse cannot take class indices, so the placeholder is nll after
    the model's log_softmax (cross_entropy on logits); the big data is traced on its first batch."""
    rng = np.random.default_rng(5)
    np.savez(tmp_path / "mnist.npz", x=rng.normal(size=(100, 1, 28, 28)), y=rng.integers(0, 10, size=100))
    torch.manual_seed(1234)
    rc, so, se = cli("import", f"{MODELS}:MnistNet", "-o", str(tmp_path / "net.toml"), "--data",
                     str(tmp_path / "mnist.npz"))
    assert rc == 0, se
    sc = nnstep.load_scenario(str(tmp_path / "net.toml"))
    assert sc.loss.type == "nll" and sc.batch_size == 64
    np.savez(tmp_path / "tags.npz", x=rng.integers(0, 10, size=(4, 7)).astype(float), y=rng.integers(0, 3, size=(4, 7)))
    torch.manual_seed(1234)
    rc, so, se = cli("import", f"{MODELS}:LSTMTagger", "-o", str(tmp_path / "tagger.toml"), "--data",
                     str(tmp_path / "tags.npz"))
    assert rc == 0, se
    sc = nnstep.load_scenario(str(tmp_path / "tagger.toml"))
    assert (sc.loss.type, sc.loss.class_dim) == ("nll", -1)
    np.savez(tmp_path / "cls.npz", x=rng.normal(size=(8, 20)), y=rng.integers(0, 4, size=8))
    rc, so, se = cli("import", f"{MODELS}:TrainedMLP", "-o", str(tmp_path / "mlp.toml"), "--data",
                     str(tmp_path / "cls.npz"))
    assert rc == 0, se
    sc = nnstep.load_scenario(str(tmp_path / "mlp.toml"))
    assert sc.loss.type == "cross_entropy"
    s = nnstep.Session(sc)
    s.run()
    loss, _ = _torch_step_ce(own_model("TrainedMLP"), np.asarray(sc.x), np.asarray(sc.y))
    assert float(s.value("loss")) == pytest.approx(loss, rel=1e-9)


def _torch_step_ce(model, x, y):
    loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y.astype(np.int64)))
    return float(loss.detach()), None


def test_import_is_headless(tmp_path):
    """`nnstep import` never loads Textual, as the other headless commands (STYLE.md)."""
    code = (f"import sys\nfrom nnstep.cli import main\nrc = main(['import', {MODELS + ':make_mlp'!r}, '-o', "
            f"{str(tmp_path / 'n.toml')!r}, '--input-shape', '2,3'])\n"
            "print(rc, [m for m in sys.modules if m.startswith('textual')])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.stdout.strip().splitlines()[-1] == "0 []", r.stdout + r.stderr


def test_trace_steps_through_an_imported_lstm_tagger(cli, tmp_path):
    """`nnstep trace --json` of the imported tagger: the LSTM one op per time step, and the numbers
    of `forward hidden2tag` are the torch model's hidden2tag output."""
    path, _ = do_import(cli, tmp_path, "LSTMTagger", CASES["LSTMTagger"])
    rc, so, se = cli("trace", path, "--json")
    assert rc == 0, se
    ops = json.loads(so)["ops"]
    names = [o["name"] for o in ops if o["stage"] == "forward"]
    assert names == ["forward word_embeddings"] + [f"forward lstm t{t}" for t in range(1, 8)] + [
        "forward hidden2tag", "forward log_softmax"]
    model = own_model("LSTMTagger")
    x = np.asarray(nnstep.load_scenario(path).x)
    with torch.no_grad():
        want = model.hidden2tag(model.lstm(model.word_embeddings(torch.from_numpy(x.astype(np.int64))))[0]).numpy()
    got = next(o for o in ops if o["name"] == "forward hidden2tag")["outputs"]["hidden2tag.out"]
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-9, atol=1e-12)
