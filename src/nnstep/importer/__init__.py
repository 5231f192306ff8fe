"""`nnstep import SOURCE -o net.toml` (docs/import.md): a model trained elsewhere as a scenario and
its weights. SOURCE is a PyTorch model (``path/to/file.py:Name`` or ``package.module:Name``, traced
with torch.fx: :mod:`.torch_fx`) or an ONNX graph (``model.onnx``: :mod:`.onnx`); both hand their
layers to :mod:`.writer`, which checks nnstep's forward against the model's before it writes
anything. torch and onnx are optional extras, imported only here and only by this command.
"""
from __future__ import annotations

import shlex

from ..errors import ScenarioError


def cmd_import(source: str, output: str, input_shape: str | None, data: str | None, force: bool) -> int:
    from . import writer

    if input_shape is not None and data is not None:
        raise ScenarioError("give --input-shape or --data, not both (the data's x has its own shape)",
                            where="--input-shape")
    if input_shape is None and data is None and not source.lower().endswith(".onnx"):
        raise ScenarioError("expected --input-shape N,C,... (random data of that shape) or --data data.npz (arrays "
                            "x and y): the model is traced on a batch", where="import")
    if not output.endswith(".toml"):
        raise ScenarioError("expected a .toml file to write (-o net.toml)", where="-o")
    writer.check_outputs(source, output, data, force)
    # the model is traced and checked on at most one batch (writer.FULL_BATCH samples): the shapes
    # per sample are the same, and the scenario's step 1 takes that batch
    if data is not None:
        x, _ = writer.read_data(data)
        x = x[:writer.FULL_BATCH]
        shape = None
    else:
        shape = writer.input_shape(input_shape) if input_shape is not None else None
        x = None
    trace = None if shape is None else (min(shape[0], writer.FULL_BATCH),) + tuple(shape[1:])
    if source.lower().endswith(".onnx"):
        from . import onnx as onnx_import
        model = onnx_import.load(source, x, trace)
    else:
        from . import torch_fx
        model = torch_fx.load(source, x, trace)
    command = "nnstep import " + " ".join(shlex.quote(a) for a in [source, "-o", output] +
                                          (["--data", data] if data else ["--input-shape", input_shape] if input_shape else []))
    return writer.write(model, output, command, data, shape, force)
