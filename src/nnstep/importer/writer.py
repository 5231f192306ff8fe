"""What both importers produce and how it is written: a list of :class:`Imported` layers (type,
name, options, inputs, parameters and states as arrays) becomes the scenario's TOML text and its
weights file, checked by loading them with nnstep's own loader and running nnstep's forward on the
scenario's data against the model's own forward before anything is written.

Nothing here imports torch or onnx: a front end (``torch_fx``, ``onnx``) hands over the layers and a
``reference(x, masks)`` function that runs the model itself.
"""
from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field

import numpy as np

from ..errors import ScenarioError, cut
from ..layers import registry
from ..layers.base import exact

RTOL, ATOL = 1e-9, 1e-12               # the model's forward against nnstep's, in float64 (docs/commands.md, "Numerics")
FULL_BATCH = 64                        # data up to this many samples is one batch; more: batches of it


class Unmappable(ScenarioError):
    """A node of the model that no nnstep layer is: names the node, its operator or module, why,
    and what does map."""

    def __init__(self, source: str, node: str, op: str, why: str, maps: str):
        super().__init__(f'node "{cut(node)}" ({op}) {why}; these map to nnstep layers: {maps}', file=source)


@dataclass
class Imported:
    """One nnstep layer made from one node (or a pair: ONNX's MatMul+Add) of the model."""
    name: str
    type: str
    options: dict = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)     # tensor names: "input" or a layer's name
    params: dict[str, np.ndarray] = field(default_factory=dict)
    states: dict[str, np.ndarray] = field(default_factory=dict)
    origin: str = ""                                    # the model's node, in words, for the comment
    bias: bool = True                                   # False: a layer whose bias the model has not
    time_major: bool = False                            # (ONNX) an LSTM/RNN read through a Transpose


@dataclass
class Model:
    """What a front end hands the writer."""
    source: str                                 # as the user named it
    layers: list[Imported]
    out_shape: tuple[int, ...]                  # the model's output, per sample
    reference: object                           # reference(x, masks) -> {layer name: array}; "" key: the output
    tokens: int | None = None                   # the first layer is an embedding of this many rows: integer data
    in_shape: tuple[int, ...] = ()              # the batch it was traced on, N first


def unique_name(name: str, taken: set) -> str:
    """A layer name nnstep takes (letters, digits and _), not reserved and not taken."""
    n = "".join(c if (c.isalnum() and c.isascii()) or c == "_" else "_" for c in name) or "layer"
    if n[0].isdigit():
        n = "_" + n
    if n in ("input", "target", "loss", "lr"):
        n += "_"
    base, k = n, 1
    while n in taken:
        k += 1
        n = f"{base}_{k}"
    taken.add(n)
    return n


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return exact(float(v)) if math.isfinite(v) else ("nan" if v != v else ("inf" if v > 0 else "-inf"))
    if isinstance(v, str):
        import json
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml(e) for e in v) + "]"
    raise TypeError(f"no TOML for {v!r}")


def loss_lines(m: Model, y: np.ndarray | None) -> list[str]:
    """The placeholder loss: mse, unless the data's targets are class indices (integers with one
    dimension fewer than the output), which mse cannot take: then cross_entropy on logits, or nll
    after a log_softmax, over the output's last dimension."""
    out = tuple(m.out_shape)
    if y is None or y.dtype.kind not in "biu" or tuple(y.shape[1:]) != out[:-1] or not out:
        return ['type = "mse"']
    last = m.layers[-1]
    typ = "nll" if last.type == "log_softmax" and last.options.get("dim", -1) in (-1, len(out)) else "cross_entropy"
    lines = [f'type = "{typ}"                  # y holds class indices']
    if len(out) > 1:
        lines.append("class_dim = -1              # the classes are the output's last dimension")
    return lines


def scenario_text(m: Model, weights: str, data_lines: list[str], batch_size: int, command: str,
                  loss: list[str] | None = None) -> str:
    W = []
    w = W.append
    w(f"# Imported by `{command}`.")
    w("# Every layer is one node of the model, named after it; the parameters (and batchnorm's running")
    w(f"# statistics) are in {weights}, by nnstep's names. Step through it: nnstep <this file>")
    w("")
    w("[scenario]")
    w(f"name = {_toml(os.path.basename(m.source).rpartition(':')[2] or os.path.basename(m.source))}")
    desc = (f"Imported from {m.source} by nnstep import: one layer per node of the model, named after it. The "
            "loss and optimizer are placeholders (mse or cross-entropy, SGD): change them to the ones you train with.")
    w(f"description = {_toml(desc)}")
    w("seed = 0")
    w('dtype = "float64"')
    w(f"weights = {_toml(weights)}")
    w("")
    w("[data]")
    W.extend(data_lines)
    prev = "input"
    for L in m.layers:
        w("")
        w("[[layers]]" + (f"                 # {L.origin}" if L.origin else ""))
        w(f"type = {_toml(L.type)}")
        w(f"name = {_toml(L.name)}")
        cls = registry.layer_type(L.type)
        if cls.merge:
            w(f"inputs = {_toml(L.inputs)}")
        elif L.inputs[0] != prev:
            w(f"input = {_toml(L.inputs[0])}")
        for k, v in L.options.items():
            w(f"{k} = {_toml(v)}")
        if not L.bias and "bias" not in cls.options and cls.bias_params:
            w("bias = false")
        prev = L.name
    w("")
    w("# The loss and optimizer are placeholders: nnstep import cannot know how the model was trained.")
    w("# Change them to the ones you train with (docs/scenario-format.md lists them).")
    w("[loss]")
    W.extend(loss or ['type = "mse"'])
    w("")
    w("[optimizer]")
    w('type = "sgd"')
    w("lr = 0.01")
    w("")
    w("[train]")
    w("steps = 1")
    if batch_size:
        w(f"batch_size = {batch_size}            # step k takes the k-th slice of {batch_size} samples")
    return "\n".join(W) + "\n"


def _compare(got: np.ndarray, want: np.ndarray) -> tuple[bool, float]:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return False, math.inf
    err = np.abs(got - want)
    ok = bool(np.all(err <= ATOL + RTOL * np.abs(want)))
    return ok, float(err.max()) if err.size else 0.0


def nnstep_forward(sc) -> dict:
    """nnstep's forward of step 1 on the scenario: every tensor of the environment by name."""
    from ..engine.program import Program

    prog = Program(sc)
    env = prog.initial_env()
    prog.run_until(env, 1, "loss")
    return env


def verify(m: Model, sc) -> float:
    """The model's own forward against nnstep's on step 1's batch: every layer's output the
    reference gives, in layer order. Returns the largest absolute difference of the output;
    ScenarioError naming the first layer that differs."""
    env = nnstep_forward(sc)
    masks = {L.name: env[f"{L.name}.mask"] for L in m.layers if L.type == "dropout"}
    ref = m.reference(np.asarray(env["input"]), masks)
    for L in m.layers:
        if L.name in ref:
            ok, err = _compare(env[f"{L.name}.out"], ref[L.name])
            if not ok:
                raise ScenarioError(f"nnstep's forward differs from the model's at layer {L.name} ({L.origin}): "
                                    f"largest difference {err:.3g}; nothing was written (this is a bug in nnstep "
                                    "import: please report it with the model)", file=m.source)
    ok, err = _compare(env[f"{m.layers[-1].name}.out"], ref[""])
    if not ok:
        raise ScenarioError(f"nnstep's output differs from the model's: largest difference {err:.3g}; nothing was "
                            "written (this is a bug in nnstep import: please report it with the model)", file=m.source)
    return err


def input_shape(text: str) -> tuple[int, ...]:
    """--input-shape N,C,...: the batch's shape, N first."""
    try:
        dims = tuple(int(d) for d in text.split(",") if d.strip())
    except ValueError:
        raise ScenarioError(f"expected sizes separated by commas, as in 16,1,28,28, got {cut(repr(text))}",
                            where="--input-shape") from None
    if not dims or any(d < 1 for d in dims):
        raise ScenarioError(f"expected positive sizes separated by commas, as in 16,1,28,28, got {cut(repr(text))}",
                            where="--input-shape")
    if math.prod(dims) > 50_000_000:
        raise ScenarioError(f"{math.prod(dims)} elements is over the limit of 50000000", where="--input-shape")
    return dims


def read_data(path: str) -> tuple[np.ndarray, np.ndarray]:
    """--data data.npz: its arrays x and y (never unpickled)."""
    if not os.path.exists(path):
        raise ScenarioError("no such file", file=path)
    if not path.lower().endswith(".npz"):
        raise ScenarioError("expected a .npz file with arrays x and y (numpy.savez(path, x=..., y=...))", file=path)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("x", "y") if k not in z.files]
            if missing:
                raise ScenarioError(f"has no array {missing[0]} (it holds: {', '.join(z.files) or 'nothing'}); "
                                    "--data wants arrays x and y", file=path)
            x, y = z["x"], z["y"]
    except ScenarioError:
        raise
    except (OSError, ValueError) as e:
        raise ScenarioError(f"cannot read it as a .npz file: {cut(str(e))}", file=path) from None
    if x.ndim < 1 or x.shape[0] < 1 or y.ndim < 1 or y.shape[0] != x.shape[0]:
        raise ScenarioError(f"x {list(x.shape)} and y {list(y.shape)} must hold the same number of samples, batch "
                            "dimension first", file=path)
    if x.dtype.kind not in "biuf" or y.dtype.kind not in "biuf":
        raise ScenarioError("x and y must hold numbers", file=path)
    return x, y


def _inside(path: str, folder: str) -> bool:
    real, root = os.path.realpath(path), os.path.realpath(folder)
    return real.startswith(root.rstrip(os.sep) + os.sep)


def outputs(output: str, data: str | None) -> list[str]:
    """The files `import -o output` writes: the scenario, its weights, and a copy of --data when it
    is outside the scenario's folder."""
    folder = os.path.dirname(output) or "."
    stem = os.path.splitext(os.path.basename(output))[0]
    out = [output, os.path.join(folder, stem + ".weights.npz")]
    if data is not None and not _inside(data, folder):
        out.append(os.path.join(folder, stem + ".data.npz"))
    return out


def check_outputs(source: str, output: str, data: str | None, force: bool) -> None:
    """Before any work: every file to write can be written, is none of the inputs, and (without
    --force) does not exist yet; `nnstep new` refuses to overwrite the same way."""
    from ..fileio import check_output

    reads = [("the model", source.rsplit(":", 1)[0] if not source.lower().endswith(".onnx") else source)]
    reads += [("the --data file", data)] if data else []
    for o in outputs(output, data):
        check_output(o, "-o", "the scenario", "net.toml", [r for r in reads if os.path.exists(r[1])])
        if not force and os.path.lexists(o):
            raise ScenarioError("already exists (use --force to overwrite it)", file=o)


def write(m: Model, output: str, command: str, data: str | None, shape: tuple[int, ...] | None, force: bool) -> int:
    """Check the network (nnstep's loader, then its forward against the model's), then write the
    scenario, its weights and (for --data outside the scenario's folder) its data beside it."""
    from ..fileio import atomic_write_bytes, atomic_write_text, save_npz
    from ..scenario import loads_scenario

    folder = os.path.dirname(output) or "."
    stem = os.path.splitext(os.path.basename(output))[0]
    weights = stem + ".weights.npz"
    data_file = None
    if data is not None:
        if _inside(data, folder):
            rel = os.path.relpath(os.path.realpath(data), os.path.realpath(folder))
        else:
            data_file = stem + ".data.npz"
            rel = data_file
        x, y = read_data(data)
        n = x.shape[0]
        loss = loss_lines(m, y)
        lines = [f"x = {{ file = {_toml(rel)}, key = \"x\" }}", f"y = {{ file = {_toml(rel)}, key = \"y\" }}"]
    else:
        loss = loss_lines(m, None)
        shape = tuple(shape or m.in_shape)
        n = shape[0]
        if m.tokens is not None:
            lines = [f'x = {{ random = "integers", low = 0, high = {m.tokens}, shape = {_toml(list(shape))} }}'
                     "   # token indices, as the first layer takes them"]
        else:
            lines = [f'x = {{ random = "normal", shape = {_toml(list(shape))} }}']
        lines.append(f'y = {{ random = "normal", shape = {_toml([n] + list(m.out_shape))} }}'
                     "   # targets for the placeholder mse loss below")
        lines.insert(0, "# random data of the model's input shape; nnstep import --data data.npz (arrays x and y) "
                        "reads your own")
    batch = 0 if n <= FULL_BATCH else FULL_BATCH
    check_outputs(m.source, output, data, force)

    arrays = {}
    for L in m.layers:
        for p, a in L.params.items():
            arrays[f"{L.name}.{p}"] = np.asarray(a, dtype=np.float64)
        for s, a in L.states.items():
            arrays[f"{L.name}.{s}"] = np.asarray(a, dtype=np.float64)
    # everything is written under temporary names in the output's folder, loaded and checked from
    # there, and only then renamed into place
    import tempfile
    tmp = tempfile.mkdtemp(prefix="." + stem + ".import.", dir=folder)
    try:
        tw = os.path.join(tmp, weights)
        save_npz(tw, arrays)
        if data_file:
            dx, dy = read_data(data)
            save_npz(os.path.join(tmp, data_file), {"x": dx, "y": dy})
        text = scenario_text(m, weights, lines, batch, command, loss)
        # the check reads the same text from the output's folder, with the files written so far
        # named in the temporary folder
        t = os.path.basename(tmp)
        tlines = [ln.replace(_toml(data_file), _toml(t + "/" + data_file)) for ln in lines] if data_file else lines
        ttext = scenario_text(m, t + "/" + weights, tlines, batch, command, loss)
        try:
            sc = loads_scenario(ttext, path=output, base_dir=folder)
        except ScenarioError as e:
            raise ScenarioError(f"the scenario made from the model does not load: {e}; nothing was written",
                                file=m.source) from None
        err = verify(m, sc)
        with open(tw, "rb") as f:
            atomic_write_bytes(os.path.join(folder, weights), f.read())
        if data_file:
            with open(os.path.join(tmp, data_file), "rb") as f:
                atomic_write_bytes(os.path.join(folder, data_file), f.read())
        atomic_write_text(output, text)
    finally:
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    d = os.path.dirname(output)
    beside = f", {os.path.join(d, weights)}" + (f" and {os.path.join(d, data_file)}" if data_file else "")
    sys.stdout.write(f"wrote {output}{beside}: {len(m.layers)} layers from {m.source}\n"
                     f"  nnstep's forward on the scenario's data agrees with the model's (largest difference "
                     f"{err:.2g})\n"
                     f"  step through it:  nnstep {output}\n")
    return 0
