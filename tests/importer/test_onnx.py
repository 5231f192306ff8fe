"""`nnstep import model.onnx`: graphs built here with onnx.helper (no exporter), one per operator,
each checked against the graph's own output (onnx.reference.ReferenceEvaluator in float64, or numpy
where ONNX's default differs from nnstep's training mode); the LSTM against torch's too; what does
not map; bad input."""
import os
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto as T, helper as h, numpy_helper as nh  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

import nnstep  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from importhelp import cli, forward_values  # noqa: E402,F401  (cli: a fixture)

rng = np.random.default_rng(7)


def R(*shape):
    return rng.normal(size=shape)


def model(nodes, in_shape, inits, out_shape=None, opset=17, in_type=T.DOUBLE, out="y"):
    """A graph of ``nodes`` reading x; the output's declared shape is what it computes (the checker wants one)."""
    tensors = [nh.from_array(np.asarray(v), k) for k, v in inits.items()]
    X = h.make_tensor_value_info("x", in_type, list(in_shape))
    Y = h.make_tensor_value_info(out, T.DOUBLE, out_shape)
    m = h.make_model(h.make_graph(nodes, "g", [X], [Y], tensors), opset_imports=[h.make_opsetid("", opset)])
    if out_shape is None:
        shape = [d if isinstance(d, int) else 2 for d in in_shape]
        x = (rng.integers(0, 2, size=shape).astype(np.int32 if in_type == T.INT32 else np.int64)
             if in_type in (T.INT64, T.INT32) else rng.normal(size=shape))
        try:
            got = ReferenceEvaluator(m).run(None, {"x": x})[0]
            dims = [in_shape[0]] + list(np.shape(got)[1:])
        except Exception:                   # a graph the tests expect to be refused: any declared rank will do
            dims = list(in_shape)
        return model(nodes, in_shape, inits, dims, opset, in_type, out)
    return m


def do(cli, tmp_path, m, *extra):
    p = str(tmp_path / "m.onnx")
    onnx.save(m, p)
    out = str(tmp_path / "net.toml")
    rc, so, se = cli("import", p, "-o", out, *extra)
    return rc, so, se, out


def check(cli, tmp_path, m, types, expected=None, atol=1e-12, rtol=1e-9):
    rc, so, se, out = do(cli, tmp_path, m)
    assert rc == 0, se
    sc = nnstep.load_scenario(out)
    assert [L.type for L in sc.layers] == types
    s, outs, _ = forward_values(sc)
    x = np.asarray(s.value("input"))
    want = expected(x) if expected else ReferenceEvaluator(m).run(None, {"x": x})[0]
    np.testing.assert_allclose(outs[sc.layers[-1].name], want, rtol=rtol, atol=atol)
    return sc


N = 3
CASES = {
    "gemm_transB": ([h.make_node("Gemm", ["x", "W", "b"], ["y"], transB=1)], (N, 4), {"W": R(5, 4), "b": R(5)},
                    ["linear"]),
    "gemm_alpha_beta": ([h.make_node("Gemm", ["x", "W", "b"], ["y"], alpha=0.5, beta=2.0)], (N, 4),
                        {"W": R(4, 5), "b": R(1, 5)}, ["linear"]),
    "matmul_add": ([h.make_node("MatMul", ["x", "W"], ["m"]), h.make_node("Add", ["b", "m"], ["y"])], (N, 4),
                   {"W": R(4, 2), "b": R(2)}, ["linear"]),
    "matmul_no_bias": ([h.make_node("MatMul", ["x", "W"], ["y"])], (N, 2, 4), {"W": R(4, 3)}, ["linear"]),
    "conv1d_pools": ([h.make_node("Conv", ["x", "W", "b"], ["c"], pads=[1, 1], strides=[2]),
                      h.make_node("MaxPool", ["c"], ["p"], kernel_shape=[2], strides=[1]),
                      h.make_node("AveragePool", ["p"], ["y"], kernel_shape=[2], strides=[2])],
                     (N, 2, 9), {"W": R(3, 2, 3), "b": R(3)}, ["conv1d", "maxpool1d", "avgpool1d"]),
    "conv2d_pools": ([h.make_node("Conv", ["x", "W"], ["c"], pads=[1, 0, 1, 0], strides=[1, 2]),
                      h.make_node("AveragePool", ["c"], ["p"], kernel_shape=[2, 2], pads=[1, 1, 1, 1],
                                  count_include_pad=1),
                      h.make_node("MaxPool", ["p"], ["y"], kernel_shape=[2, 2], strides=[1, 1])],
                     (N, 2, 5, 6), {"W": R(3, 2, 3, 2)}, ["conv2d", "avgpool2d", "maxpool2d"]),
    "layernorm": ([h.make_node("LayerNormalization", ["x", "s", "b"], ["y"], axis=-2, epsilon=1e-3)], (N, 2, 3),
                  {"s": R(2, 3), "b": R(2, 3)}, ["layernorm"]),
    "activations": ([h.make_node("Relu", ["x"], ["a"]), h.make_node("LeakyRelu", ["a"], ["b"], alpha=0.3),
                     h.make_node("Sigmoid", ["x"], ["c"]), h.make_node("Tanh", ["c"], ["d"]),
                     h.make_node("Add", ["b", "d"], ["e"]), h.make_node("Gelu", ["e"], ["f"]),
                     h.make_node("Gelu", ["f"], ["g"], approximate="tanh"),
                     h.make_node("Softmax", ["g"], ["s"], axis=1), h.make_node("Identity", ["s"], ["i"]),
                     h.make_node("LogSoftmax", ["i"], ["y"])],
                    (N, 5), {}, ["relu", "leaky_relu", "sigmoid", "tanh", "add", "gelu", "gelu", "softmax",
                                 "identity", "log_softmax"]),
    "shapes": ([h.make_node("Flatten", ["x"], ["f"]), h.make_node("Reshape", ["f", "shp"], ["r"]),
                h.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1]), h.make_node("MatMul", ["r", "t"], ["m"]),
                h.make_node("Flatten", ["m"], ["y"], axis=1)],
               (N, 2, 3, 2), {"shp": np.array([-1, 3, 4], dtype=np.int64)},
               ["flatten", "reshape", "transpose", "matmul", "flatten"]),
    "merges": ([h.make_node("Mul", ["x", "x"], ["a"]), h.make_node("Mul", ["a", "two"], ["b"]),
                h.make_node("Concat", ["a", "b", "x"], ["y"], axis=-1)],
               (N, 2, 3), {"two": np.array(2.0)}, ["mul", "scale", "concat"]),
    "exported_view": ([h.make_node("Shape", ["x"], ["s"]), h.make_node("Gather", ["s", "zero"], ["n"], axis=0),
                       h.make_node("Unsqueeze", ["n", "zeros"], ["n1"]),
                       h.make_node("Concat", ["n1", "minus1"], ["shp"], axis=0),
                       h.make_node("Reshape", ["x", "shp"], ["r"]), h.make_node("Relu", ["r"], ["y"])],
                      (N, 2, 3), {"zero": np.array(0, dtype=np.int64), "zeros": np.array([0], dtype=np.int64),
                                  "minus1": np.array([-1], dtype=np.int64)}, ["reshape", "relu"]),
    "global_pools": ([h.make_node("GlobalAveragePool", ["x"], ["a"]), h.make_node("GlobalMaxPool", ["x"], ["m"]),
                      h.make_node("Add", ["a", "m"], ["y"])], (N, 2, 3, 4), {}, ["avgpool2d", "maxpool2d", "add"]),
}
OPSET = {"activations": 20}     # Gelu came in opset 20


def _activations(x):
    """The activations case in numpy, float64 (onnx's reference computes Erf, and so Gelu, in float32)."""
    import math
    erf = np.vectorize(math.erf, otypes=[np.float64])
    a = np.maximum(x, 0)
    b = np.where(a >= 0, a, 0.3 * a)
    d = np.tanh(1 / (1 + np.exp(-x)))
    e = b + d
    f = 0.5 * e * (1 + erf(e / math.sqrt(2)))
    g = 0.5 * f * (1 + np.tanh(math.sqrt(2 / math.pi) * (f + 0.044715 * f ** 3)))
    s = np.exp(g - g.max(axis=1, keepdims=True))
    s = s / s.sum(axis=1, keepdims=True)
    return s - s.max(axis=-1, keepdims=True) - np.log(np.exp(s - s.max(axis=-1, keepdims=True)).sum(axis=-1, keepdims=True))


EXPECT = {"activations": _activations}


@pytest.mark.parametrize("name", list(CASES))
def test_operator_against_the_graphs_own_output(cli, tmp_path, name):
    nodes, shape, inits, types = CASES[name]
    check(cli, tmp_path, model(nodes, shape, inits, opset=OPSET.get(name, 17)), types, EXPECT.get(name))


def test_float32_graph_is_imported_in_float64(cli, tmp_path):
    W, b = R(3, 4).astype(np.float32), R(3).astype(np.float32)
    m = model([h.make_node("Gemm", ["x", "W", "b"], ["y"], transB=1)], (N, 4), {"W": W, "b": b}, in_type=T.FLOAT)
    sc = check(cli, tmp_path, m, ["linear"], lambda x: x @ W.astype(np.float64).T + b.astype(np.float64))
    assert sc.initial["gemm1.weight"].dtype == np.float64


def test_batchnorm_in_training_mode_with_the_graphs_running_statistics(cli, tmp_path):
    s, b, mean, var = R(3), R(3), R(3), np.abs(R(3)) + 0.5
    m = model([h.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-3, momentum=0.8,
                           name="bn")], (4, 3, 5), {"s": s, "b": b, "m": mean, "v": var})

    def train_mode(x):
        mu, va = x.mean(axis=(0, 2)), x.var(axis=(0, 2))
        eps = float(np.float32(1e-3))               # ONNX's float attributes are float32
        return (x - mu[:, None]) / np.sqrt(va[:, None] + eps) * s[:, None] + b[:, None]
    sc = check(cli, tmp_path, m, ["batchnorm"], train_mode)
    L = sc.layers[0]
    # ONNX's float attributes are float32: the graph computes with those values, and so does nnstep
    assert L.options["momentum"] == 1 - float(np.float32(0.8)) and L.options["eps"] == float(np.float32(1e-3))
    ss = nnstep.Session(sc)
    np.testing.assert_array_equal(ss.value("bn.running_mean"), mean)
    ss.run()
    x = np.asarray(sc.x)
    m8 = float(np.float32(0.8))
    np.testing.assert_allclose(ss.value("bn.running_mean"), m8 * mean + (1 - m8) * x.mean(axis=(0, 2)), rtol=1e-12)


@pytest.mark.parametrize("itype", [T.INT64, T.INT32])
def test_gather_is_an_embedding(cli, tmp_path, itype):
    table = R(6, 3)
    m = model([h.make_node("Gather", ["E", "x"], ["e"]), h.make_node("Tanh", ["e"], ["y"])], (N, 4), {"E": table},
              in_type=itype)
    sc = check(cli, tmp_path, m, ["embedding", "tanh"], lambda x: np.tanh(table[x]))
    assert sc.x.dtype.kind in "iu" and sc.x.max() < 6


def _onnx_lstm(Wih, Whh, bih, bhh, H, typ="LSTM", acts=None):
    """torch's (i, f, g, o) weights as ONNX's LSTM (i, o, f, c), batch first (layout 1), Y squeezed."""
    def to_onnx(m):
        if typ != "LSTM":
            return m
        i, f, g, o = np.split(m, 4, axis=0)
        return np.concatenate([i, o, f, g], axis=0)
    inits = {"W": to_onnx(Wih)[None], "R": to_onnx(Whh)[None],
             "B": np.concatenate([to_onnx(bih), to_onnx(bhh)])[None], "ax": np.array([2], dtype=np.int64)}
    kw = {"activations": acts} if acts else {}
    nodes = [h.make_node(typ, ["x", "W", "R", "B"], ["Y"], hidden_size=H, layout=1, name="rec", **kw),
             h.make_node("Squeeze", ["Y", "ax"], ["y"])]
    return nodes, inits


@pytest.mark.parametrize("typ", ["LSTM", "RNN"])
def test_lstm_and_rnn_gate_order_against_torch(cli, tmp_path, typ):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    mod = (torch.nn.LSTM if typ == "LSTM" else torch.nn.RNN)(3, 4, batch_first=True).double()
    p = {k: v.detach().numpy() for k, v in mod.named_parameters()}
    nodes, inits = _onnx_lstm(p["weight_ih_l0"], p["weight_hh_l0"], p["bias_ih_l0"], p["bias_hh_l0"], 4, typ)
    m = model(nodes, (2, 5, 3), inits)

    def torch_out(x):
        with torch.no_grad():
            return mod(torch.from_numpy(x))[0].numpy()
    sc = check(cli, tmp_path, m, [typ.lower()], torch_out)
    np.testing.assert_array_equal(sc.initial["rec.weight_ih"], p["weight_ih_l0"])   # i, f, g, o again
    # and the graph's own output (ONNX's reference LSTM) agrees too
    s, outs, _ = forward_values(sc)
    want = ReferenceEvaluator(m).run(None, {"x": np.asarray(s.value("input"))})[0]
    np.testing.assert_allclose(outs["rec"], want, rtol=1e-9, atol=1e-12)


def test_rnn_relu_cannot_be_checked_so_is_refused(cli, tmp_path):
    """onnx's reference evaluator has no Relu RNN, so the import cannot check its numbers: it says so."""
    H = 3
    nodes, inits = _onnx_lstm(R(H, 2), R(H, H), R(H), R(H), H, "RNN", acts=["Relu"])
    rc, so, se, out = do(cli, tmp_path, model(nodes, (2, 4, 2), inits))
    assert rc == 2 and "reference evaluator cannot run it" in se and "Relu" in se, se
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]


# --- what does not map, bad input ------------------------------------------------------------------

@pytest.mark.parametrize("nodes, shape, inits, words", [
    ([h.make_node("Sin", ["x"], ["y"], name="s1")], (N, 2), {}, ['node "s1" (Sin)', "does not map", "Gemm", "LSTM"]),
    ([h.make_node("Add", ["x", "c"], ["y"], name="a1")], (N, 2), {"c": R(2)}, ['node "a1" (Add)', "constant"]),
    ([h.make_node("Transpose", ["x"], ["y"], perm=[1, 0, 2], name="t")], (N, 2, 2), {},
     ['node "t" (Transpose)', "batch"]),
    ([h.make_node("Flatten", ["x"], ["y"], axis=2, name="f")], (N, 2, 3), {}, ['node "f" (Flatten)', "batch"]),
    ([h.make_node("Conv", ["x", "W"], ["y"], group=2, name="c")], (N, 2, 5), {"W": R(2, 1, 3)},
     ['node "c" (Conv)', "group"]),
    ([h.make_node("LSTM", ["x", "W", "R"], ["y"], hidden_size=2, name="l")], (4, N, 2),
     {"W": R(1, 8, 2), "R": R(1, 8, 2)}, ['node "l" (LSTM)', "layout = 1"]),
])
def test_unmappable_operator_is_exit_2_and_nothing_is_written(cli, tmp_path, nodes, shape, inits, words):
    rc, so, se, out = do(cli, tmp_path, model(nodes, shape, inits))
    assert rc == 2
    assert se.startswith("nnstep: error: ") and se.count("\n") == 1, se
    for w in words:
        assert w in se, (w, se)
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]


def test_checker_failure_is_located(cli, tmp_path):
    m = model([h.make_node("Relu", ["x"], ["y"])], (N, 2), {})
    m.graph.node[0].input[0] = "nowhere"            # reads a value nothing defines
    p = str(tmp_path / "bad.onnx")
    with open(p, "wb") as f:
        f.write(m.SerializeToString())
    rc, so, se = cli("import", p, "-o", str(tmp_path / "n.toml"))
    assert rc == 2 and se.startswith(f"nnstep: error: {p}: fails onnx.checker: "), se


def test_not_an_onnx_file_and_missing_file(cli, tmp_path):
    p = tmp_path / "junk.onnx"
    p.write_bytes(b"\x00\x01not protobuf at all" * 3)
    rc, so, se = cli("import", str(p), "-o", str(tmp_path / "n.toml"))
    assert rc == 2 and str(p) in se and "Traceback" not in se, se
    rc, so, se = cli("import", str(tmp_path / "none.onnx"), "-o", str(tmp_path / "n.toml"))
    assert rc == 2 and se == f"nnstep: error: {tmp_path / 'none.onnx'}: no such file\n"


def test_symbolic_batch_needs_input_shape(cli, tmp_path):
    m = model([h.make_node("Relu", ["x"], ["y"])], ("N", 2), {})
    rc, so, se, out = do(cli, tmp_path, m)
    assert rc == 2 and "give --input-shape" in se
    rc, so, se, out = do(cli, tmp_path, m, "--input-shape", "5,2", "--force")
    assert rc == 0, se
    assert nnstep.load_scenario(out).x.shape == (5, 2)


def test_the_mnist_example_cnn_as_an_onnx_graph_gives_torchs_numbers(cli, tmp_path):
    """pytorch/examples' MNIST CNN written as the ONNX graph an exporter makes of it (Conv, Relu,
    MaxPool, Flatten, Gemm with transB, LogSoftmax; no Dropout, as in an inference export), with the
    torch model's weights: one command, then nnstep's forward is the torch model's (dropout off)."""
    torch = pytest.importorskip("torch")
    from importhelp import user_models
    torch.manual_seed(0)
    net = user_models().MnistNet().double().train()
    net.dropout1.p = net.dropout2.p = 0.0
    P = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    nodes = [h.make_node("Conv", ["x", "conv1.weight", "conv1.bias"], ["c1"], name="conv1"),
             h.make_node("Relu", ["c1"], ["r1"]),
             h.make_node("Conv", ["r1", "conv2.weight", "conv2.bias"], ["c2"], name="conv2"),
             h.make_node("Relu", ["c2"], ["r2"]),
             h.make_node("MaxPool", ["r2"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             h.make_node("Flatten", ["p"], ["f"]),
             h.make_node("Gemm", ["f", "fc1.weight", "fc1.bias"], ["g1"], transB=1, name="fc1"),
             h.make_node("Relu", ["g1"], ["r3"]),
             h.make_node("Gemm", ["r3", "fc2.weight", "fc2.bias"], ["g2"], transB=1, name="fc2"),
             h.make_node("LogSoftmax", ["g2"], ["y"], axis=1)]
    m = model(nodes, (2, 1, 28, 28), P, out_shape=[2, 10])
    sc = check(cli, tmp_path, m, ["conv2d", "relu", "conv2d", "relu", "maxpool2d", "flatten", "linear", "relu",
                                  "linear", "log_softmax"],
               lambda x: net(torch.from_numpy(x)).detach().numpy())
    assert [L.name for L in sc.layers][:3] == ["conv1", "relu1", "conv2"]


@pytest.mark.parametrize("name, shape, types, rtol", [
    ("MnistNet", (2, 1, 28, 28), ["conv2d", "relu", "conv2d", "relu", "maxpool2d", "flatten", "linear", "relu",
                                  "linear", "log_softmax"], 1e-9),
    ("LSTMTagger", (2, 7), ["embedding", "lstm", "linear", "log_softmax"], 1e-9),
    # the exporter folds batchnorm into the convolutions' weights in float32: the graph's numbers are
    # the model's to float32's precision only (nnstep's forward is the graph's to 1e-9: the import checks it)
    ("ResidualBlock", (2, 3, 5, 5), ["conv2d", "relu", "conv2d", "add", "relu"], 1e-5),
])
def test_what_torch_onnx_export_writes(cli, tmp_path, name, shape, types, rtol):
    """The graphs torch's own exporter writes (its TorchScript one, opset 17, inference mode: no
    dropout, batchnorm folded into the convolutions; an LSTM over time-major data between two
    Transposes, with zero initial states Expand-ed from the batch's shape), against the torch
    model in eval mode."""
    torch = pytest.importorskip("torch")
    from importhelp import user_models
    torch.manual_seed(0)
    net = getattr(user_models(), name)().eval()
    x = torch.randint(0, 10, shape) if name == "LSTMTagger" else torch.randn(*shape)
    p = str(tmp_path / "m.onnx")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(net, (x,), p, dynamo=False, opset_version=17)
        except Exception as e:                  # an exporter this torch no longer has
            pytest.skip(f"torch.onnx.export(dynamo=False) failed: {e}")
    m = onnx.load(p)
    net = net.double()
    sc = check(cli, tmp_path, m, types, lambda xb: net(torch.from_numpy(xb)).detach().numpy(),
               rtol=rtol, atol=1e-12 if rtol == 1e-9 else 1e-6)
    assert sc.n_samples == shape[0]


def test_external_weights_are_refused(cli, tmp_path):
    m = model([h.make_node("Gemm", ["x", "W"], ["y"], transB=1)], (N, 4), {"W": R(300, 4)})
    onnx.save(m, str(tmp_path / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="m.data", size_threshold=0)
    rc, so, se = cli("import", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "n.toml"))
    assert rc == 2 and "external data files" in se, se
    assert not (tmp_path / "n.toml").exists()


def test_every_declared_onnx_operator_is_among_the_tested_graphs():
    from nnstep.layers import registry
    used = set()
    for nodes, *_ in CASES.values():
        used |= {n.op_type for n in nodes}
    used |= {"BatchNormalization", "Gather", "LSTM", "RNN"}     # the tests of their own above
    declared = {op for cls in registry.builtin_types().values() for o in cls.onnx_ops for op in o.split("+")}
    assert declared - used == set()
