"""The error catalogue of docs/errors.md as data: each case is a scenario (plus any files it needs),
the command, and the exact message a user sees. test_scenario_errors.py runs every case through the
CLI and checks the message, and that docs/errors.md shows it verbatim.

Scenarios are written as net.toml in a fresh folder that is also the working directory, so the
messages are the ones a user running `nnstep run net.toml` sees.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

BASE = """\
[data]
x = [[1.0, 2.0], [3.0, 4.0]]
y = [[1.0], [2.0]]

[[layers]]
type = "linear"
out = 3

[[layers]]
type = "relu"

[[layers]]
type = "linear"
out = 1

[loss]
type = "mse"

[optimizer]
type = "sgd"
lr = 0.1
"""


def sub(old: str, new: str, base: str = BASE) -> str:
    assert old in base, old
    return base.replace(old, new, 1)


def npz_objects(path):
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object), y=np.zeros((2, 1)))


def npz_ok(path):
    np.savez(path, x=np.ones((2, 2)), y=np.zeros((2, 1)))


def npz_huge_header(path):
    """A .npz whose header claims 10^13 elements (a few hundred bytes on disk): must be refused
    from the header, before numpy allocates anything."""
    import io
    import zipfile
    from numpy.lib import format as npf

    b = io.BytesIO()
    npf.write_array_header_1_0(b, {"descr": "<f8", "fortran_order": False, "shape": (10_000_000, 1_000_000)})
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", b.getvalue() + b"\0" * 64)


# one attention layer over a sequence of @T@ tokens (the limits of its scores)
ATTENTION_T = ('[data]\nx = { random = "integers", low = 0, high = 3, shape = [1, @T@] }\ny = { random = "integers", low = 0, high = 3, shape = [1, @T@] }\n\n[[layers]]\ntype = "embedding"\nnum = 3\ndim = 4\n\n[[layers]]\ntype = "attention"\nheads = 2\n\n[[layers]]\ntype = "linear"\nout = 3\n\n[loss]\ntype = "cross_entropy"\nclass_dim = -1\n')


@dataclass
class Case:
    id: str                    # also the anchor in docs/errors.md
    title: str
    toml: str | bytes | None   # net.toml's content; None: the case makes no net.toml
    message: str               # the whole stderr line after "nnstep: error: "
    files: dict = field(default_factory=dict)   # name -> str | bytes | callable(path)
    argv: tuple = ("run", "net.toml")
    where: str = ""            # the location the message must carry (defaults to the text before the last ": ")


CASES = [
    # --- the file itself ---
    Case("no-such-file", "The scenario file does not exist", None,
         "net.toml: no such file"),
    Case("directory", "The scenario path is a directory", None,
         "net.toml: is a directory, not a scenario file", files={"net.toml/": None}),
    Case("empty-file", "An empty file", "",
         "net.toml: empty scenario: it needs at least [data], [[layers]] and [loss]"),
    Case("binary-file", "A binary file", b"\x7fELF\x02\x01\x01\x00\x00\x00garbage",
         "net.toml: a binary file, not a TOML scenario"),
    Case("not-utf8", "Text that is not UTF-8", b"[data]\nx = [1.0]\n# caf\xe9\n",
         "net.toml: not UTF-8 text (byte 22); is this a TOML scenario?"),
    Case("toml-syntax", "TOML syntax", sub("out = 3", "out = = 3"),
         "net.toml:7:7: TOML syntax: Invalid value"),
    Case("toml-unclosed", "TOML syntax: an unclosed array", sub("x = [[1.0, 2.0], [3.0, 4.0]]", "x = [[1.0, 2.0], [3.0, 4.0]"),
         "net.toml:3:1: TOML syntax: Unclosed array"),
    Case("toml-too-deep", "TOML syntax: nesting deeper than the parser can follow",
         sub("x = [[1.0, 2.0], [3.0, 4.0]]", "x = " + "[" * 3000 + "]" * 3000),
         "net.toml:2:68: TOML syntax: arrays or tables nested too deeply"),
    Case("missing-table", "A required table is missing", BASE.split("[loss]")[0],
         'net.toml: missing [loss] (add [loss] with type = "mse", for example)'),
    # --- keys and types ---
    Case("unknown-key", "Unknown key", sub("lr = 0.1", "learning_rate = 0.1"),
         'net.toml: optimizer.learning_rate: unknown key (did you mean "lr"?)'),
    Case("unknown-table", "Unknown top-level table", BASE + "\n[trian]\nsteps = 3\n",
         'net.toml: trian: unknown table (did you mean "train"?)'),
    Case("key-of-other-type", "A key that belongs to another type", sub('type = "sgd"', 'type = "adam"\nmomentum = 0.9'),
         "net.toml: optimizer.momentum: unknown key (expected one of: betas, clip_grad_norm, eps, lr, schedule, type, weight_decay)"),
    Case("activation-key", "An activation given as a key of a layer", sub("out = 3", 'out = 3\nactivation = "tanh"'),
         'net.toml: layers[0].activation: unknown key: in nnstep an activation is a layer of its own (add a '
         '[[layers]] table with type = "tanh" after this one)', where="layers[0].activation"),
    Case("unknown-layer-type", "Unknown layer type", sub('type = "relu"', 'type = "rellu"'),
         'net.toml: layers[1].type: unknown value "rellu" (did you mean "relu"?)'),
    Case("unknown-loss-type", "Unknown loss type", sub('type = "mse"', 'type = "mean_squared"'),
         'net.toml: loss.type: unknown value "mean_squared" (expected one of: bce, bce_with_logits, '
         'cross_entropy, huber, l1, mse, nll, smooth_l1)'),
    Case("wrong-type", "Wrong type", sub("out = 3", 'out = "3"'),
         'net.toml: layers[0].out: expected a positive integer, got a string "3"'),
    Case("wrong-type-table", "A value where a table belongs", "optimizer = 0.1\n" + BASE.split("[optimizer]")[0],
         "net.toml: optimizer: expected a table, got a number"),
    Case("missing-key", "A required key is missing", sub("out = 3\n", ""),
         "net.toml: layers[0]: missing key out (a linear layer needs it)"),
    # --- values ---
    Case("negative", "Out of range: a negative size", sub("out = 3", "out = -3"),
         "net.toml: layers[0].out: expected a positive integer, got -3"),
    Case("out-of-range-prob", "Out of range: a probability", BASE.replace('type = "relu"', 'type = "batchnorm"\nmomentum = 1.5'),
         "net.toml: layers[1].momentum: expected a number in [0, 1], got 1.5"),
    Case("negative-lr", "Out of range: a negative learning rate", sub("lr = 0.1", "lr = -0.1"),
         "net.toml: optimizer.lr: expected a non-negative number, got -0.1"),
    Case("nan-value", "NaN or infinity in the file", sub("lr = 0.1", "lr = nan"),
         "net.toml: optimizer.lr: expected a finite number, got nan"),
    Case("float32-overflow", "A value float32 cannot hold", '[scenario]\ndtype = "float32"\n\n'
         + sub("x = [[1.0, 2.0], [3.0, 4.0]]", "x = [[1e300, 2.0], [3.0, 4.0]]"),
         "net.toml: data.x: holds 1e+300, too large for float32 (at most 3.403e+38)"),
    Case("nesterov", "Options that contradict each other", sub("lr = 0.1", "lr = 0.1\nnesterov = true"),
         "net.toml: optimizer.nesterov: nesterov needs momentum > 0 and dampening = 0 (as torch.optim.SGD)"),
    # --- arrays ---
    Case("ragged-array", "Ragged array", sub("x = [[1.0, 2.0], [3.0, 4.0]]", "x = [[1.0, 2.0], [3.0]]"),
         "net.toml: data.x[1]: ragged array: expected 2 elements here (like the first row), got 1 element"),
    Case("mixed-array-string", "Mixed array: a string among numbers", sub("x = [[1.0, 2.0], [3.0, 4.0]]", 'x = [[1.0, "a"], [3.0, 4.0]]'),
         'net.toml: data.x[0][1]: expected a number, got a string "a"'),
    Case("mixed-array-bool", "Mixed array: a boolean among numbers", sub("x = [[1.0, 2.0], [3.0, 4.0]]", "x = [[1.0, true], [3.0, 4.0]]"),
         "net.toml: data.x[0][1]: expected a number, got a boolean true"),
    Case("mixed-depth", "Mixed array: numbers and arrays", sub("x = [[1.0, 2.0], [3.0, 4.0]]", "x = [[1.0, 2.0], 3.0]"),
         "net.toml: data.x[1]: ragged array: expected 2 elements here (like the first row), got a number 3.0"),
    Case("empty-array", "An empty array", sub("x = [[1.0, 2.0], [3.0, 4.0]]", "x = []"),
         "net.toml: data.x: is an empty array"),
    Case("too-deep", "An array nested too deeply", sub("x = [[1.0, 2.0], [3.0, 4.0]]", "x = " + "[" * 12 + "1.0" + "]" * 12),
         "net.toml: data.x: array nested more than 8 deep"),
    # --- shapes through the stack ---
    Case("sample-count", "x and y hold different numbers of samples", sub("y = [[1.0], [2.0]]", "y = [[1.0], [2.0], [3.0]]"),
         "net.toml: data.y: has 3 samples but data.x has 2 (x [2, 2], y [3, 1])"),
    Case("weight-shape", "A given weight of the wrong shape", sub("out = 1", "out = 1\nweight = [[0.1, 0.2]]"),
         "net.toml: layers[2].weight: expected shape [1, 3] (out, in), got [1, 2]; in = 3 comes from "
         "layers[1] (relu1), per-sample shape [3]"),
    Case("in-mismatch", "A stated input size that does not match", sub("out = 1", "out = 1\nin = 4"),
         "net.toml: layers[2].in: is 4 but layers[1] (relu1) gives per-sample shape [3] (so in = 3)"),
    Case("conv-after-linear", "A convolution fed a flat tensor", sub('type = "relu"', 'type = "conv1d"\nout_channels = 2\nkernel_size = 3'),
         "net.toml: layers[1]: conv1d1 (conv1d) cannot take the output of layers[0] (linear1), per-sample "
         "shape [3]: conv1d expects input (N, C, L), so a per-sample shape of 2 dims, got [3]"),
    Case("missing-flatten", "A convolution fed to a linear layer without a flatten",
         '[data]\nx = { random = "normal", shape = [2, 1, 5, 5] }\ny = [0, 1]\n\n'
         '[[layers]]\ntype = "conv2d"\nout_channels = 2\nkernel_size = 3\n\n[[layers]]\ntype = "relu"\n\n'
         '[[layers]]\ntype = "linear"\nout = 2\n\n[loss]\ntype = "cross_entropy"\n',
         "net.toml: data.y: cross_entropy needs class indices of shape [2, 3, 2] or probabilities of shape "
         "[2, 2, 3, 2], got [2]; is a flatten missing? layers[2] (linear1) reads layers[1] (relu1), per-sample "
         "shape [2, 3, 3], and a linear works on the last dim only, so the other dims carry on: add [[layers]] "
         'type = "flatten" before it', where="data.y"),
    Case("conv-kernel", "A kernel larger than its input",
         '[data]\nx = { random = "normal", shape = [2, 1, 4, 4] }\ny = [0, 1]\n\n'
         '[[layers]]\ntype = "conv2d"\nout_channels = 2\nkernel_size = 5\n\n'
         '[[layers]]\ntype = "flatten"\n\n[loss]\ntype = "cross_entropy"\n',
         "net.toml: layers[0]: conv2d1 (conv2d) cannot take the output of the data, per-sample shape "
         "[1, 4, 4]: kernel_size [5, 5] is larger than the padded input [4, 4]"),
    Case("batchnorm-one-value", "BatchNorm with one value per channel",
         '[data]\nx = [[1.0, 2.0], [3.0, 4.0], [5.0, 1.0]]\ny = [[1.0], [2.0], [3.0]]\n\n'
         '[[layers]]\ntype = "batchnorm"\n\n[[layers]]\ntype = "linear"\nout = 1\n\n[loss]\ntype = "mse"\n\n'
         '[train]\nbatch_size = 2\n',
         "net.toml: layers[0]: batchnorm1 (batchnorm) would see 1 value per channel in a batch of 1 (per-sample "
         "shape [2]); training-mode batch statistics need at least 2, as in torch (use a larger batch_size or "
         "more samples)"),
    Case("target-shape", "Targets that do not fit the output", sub("y = [[1.0], [2.0]]", "y = [[1.0, 0.0], [2.0, 0.0]]"),
         "net.toml: data.y: targets of shape [2, 2] do not fit the output of layers[2] (linear2), [2, 1] "
         "(mse compares them element by element)"),
    # --- targets and losses ---
    Case("class-index", "A class index out of range",
         sub('type = "mse"', 'type = "cross_entropy"', sub("y = [[1.0], [2.0]]", "y = [0, 3]", sub("out = 1", "out = 3"))),
         "net.toml: data.y: class index 3 is out of range: layers[2] (linear2) gives 3 classes (0 to 2)"),
    Case("class-fraction", "A class index that is not a whole number",
         sub('type = "mse"', 'type = "cross_entropy"', sub("y = [[1.0], [2.0]]", "y = [0, 1.5]", sub("out = 1", "out = 3"))),
         "net.toml: data.y: cross_entropy class indices must be whole numbers"),
    Case("bce-target", "BCE targets outside [0, 1]",
         sub('type = "mse"', 'type = "bce"', sub("y = [[1.0], [2.0]]", "y = [[1.0], [2.0]]",
                                                  sub("out = 1", 'out = 1\n\n[[layers]]\ntype = "sigmoid"'))),
         "net.toml: data.y: bce targets must lie in [0, 1], got 2"),
    # --- data files ---
    Case("missing-data-file", "A data file that does not exist", sub("x = [[1.0, 2.0], [3.0, 4.0]]", 'x = { file = "digits.npz" }'),
         'net.toml: data.x.file: no such file "digits.npz" (paths are relative to the scenario file)'),
    Case("data-file-directory", "A data file that is a directory", sub("x = [[1.0, 2.0], [3.0, 4.0]]", 'x = { file = "data.csv" }'),
         'net.toml: data.x.file: "data.csv" is a directory', files={"data.csv/": None}),
    Case("unreadable-data-file", "A data file you may not read", sub("x = [[1.0, 2.0], [3.0, 4.0]]", 'x = { file = "x.csv" }'),
         'net.toml: data.x.file: cannot read "x.csv": permission denied', files={"x.csv": "1,2\n3,4\n", "chmod x.csv": 0}),
    Case("absolute-path", "An absolute path", sub("x = [[1.0, 2.0], [3.0, 4.0]]", 'x = { file = "/etc/passwd.csv" }'),
         'net.toml: data.x.file: "/etc/passwd.csv": an absolute path; data files must be given relative to '
         "the scenario file, in its folder or below"),
    Case("outside-folder", "A path that leaves the scenario's folder", sub("x = [[1.0, 2.0], [3.0, 4.0]]", 'x = { file = "../x.csv" }'),
         'net.toml: data.x.file: "../x.csv" is outside the scenario\'s folder; data files must be in the folder '
         "of the scenario file or below it (copy the file there)"),
    Case("wrong-extension", "A file type nnstep does not read", sub("x = [[1.0, 2.0], [3.0, 4.0]]", 'x = { file = "x.json" }'),
         'net.toml: data.x.file: "x.json": expected a .npz or .csv file', files={"x.json": "[[1, 2], [3, 4]]"}),
    Case("not-npz", "A file named .npz that is not one", sub("x = [[1.0, 2.0], [3.0, 4.0]]", 'x = { file = "x.npz" }'),
         'net.toml: data.x.file: "x.npz" is not a .npz file (not a zip archive as numpy.savez writes)',
         files={"x.npz": "1,2\n3,4\n"}),
    Case("npz-objects", "A .npz holding Python objects (pickle)", sub("x = [[1.0, 2.0], [3.0, 4.0]]", 'x = { file = "d.npz" }'),
         'net.toml: data.x.file: "d.npz": array "x" holds Python objects, which nnstep never loads (it would '
         "need pickle)", files={"d.npz": npz_objects}),
    Case("npz-key", "A .npz without the array named", sub("x = [[1.0, 2.0], [3.0, 4.0]]", 'x = { file = "d.npz", key = "inputs" }'),
         'net.toml: data.x.key: "d.npz" has no array "inputs" (expected one of: x, y)', files={"d.npz": npz_ok}),
    Case("npz-empty-tokens", "A .npz of token sequences of length 0",
         '[data]\nx = { file = "d.npz" }\ny = { file = "d.npz" }\n\n[[layers]]\ntype = "embedding"\nnum = 3\ndim = 4\n\n'
         '[[layers]]\ntype = "attention"\nheads = 2\n\n[[layers]]\ntype = "linear"\nout = 3\n\n'
         '[loss]\ntype = "cross_entropy"\nclass_dim = -1\n',
         "net.toml: data.x: holds no numbers: its shape [2, 0] has a dimension of size 0 (every dimension needs at least 1)",
         files={"d.npz": lambda p: np.savez(p, x=np.zeros((2, 0)), y=np.zeros((2, 0)))}),
    Case("npz-empty-sequence", "A .npz of sequences with no time steps",
         '[data]\nx = { file = "d.npz" }\ny = { file = "d.npz" }\n\n[[layers]]\ntype = "lstm"\nhidden = 3\n\n'
         '[loss]\ntype = "mse"\n',
         "net.toml: data.x: holds no numbers: its shape [2, 0, 2] has a dimension of size 0 (every dimension needs at least 1)",
         files={"d.npz": lambda p: np.savez(p, x=np.zeros((2, 0, 2)), y=np.zeros((2, 0, 3)))}),
    Case("npz-no-samples", "A .npz with no samples",
         sub("y = [[1.0], [2.0]]", 'y = { file = "d.npz" }', sub("x = [[1.0, 2.0], [3.0, 4.0]]", 'x = { file = "d.npz" }')),
         "net.toml: data.x: holds no numbers: its shape [0, 2] has a dimension of size 0 (no samples)",
         files={"d.npz": lambda p: np.savez(p, x=np.zeros((0, 2)), y=np.zeros((0, 1)))}),
    Case("csv-text-cell", "A .csv cell that is not a number", sub("x = [[1.0, 2.0], [3.0, 4.0]]", 'x = { file = "x.csv" }'),
         'net.toml: data.x.file: "x.csv" line 3, column 2: not a number', files={"x.csv": "a,b\n1,2\n3,oops\n"}),
    Case("csv-ragged", "A .csv with rows of different lengths", sub("x = [[1.0, 2.0], [3.0, 4.0]]", 'x = { file = "x.csv" }'),
         'net.toml: data.x.file: "x.csv" line 2: 1 column, expected 2 (like the first row)', files={"x.csv": "1,2\n3\n"}),
    Case("weights-shape", "A weights file that does not fit the network", "[scenario]\nweights = \"w.npz\"\n\n" + BASE,
         'net.toml: scenario.weights: "w.npz": "linear1.weight" has shape [2, 2], the network needs [3, 2]',
         files={"w.npz": lambda p: np.savez(p, **{"linear1.weight": np.ones((2, 2))})}),
    # --- names ---
    Case("duplicate-layer-name", "Duplicate layer names", sub('type = "relu"', 'type = "relu"\nname = "linear1"'),
         'net.toml: layers[1].name: duplicate layer name "linear1" (layers[0] has it too)'),
    Case("unknown-tensor-expect", "An unknown tensor in [[expect]]",
         BASE + '\n[[expect]]\nstep = 1\ntensor = "linear1.weigth"\nvalue = 0.0\n',
         'net.toml: expect[0].tensor: unknown tensor "linear1.weigth" (did you mean "linear1.weight"?)'),
    Case("expect-step", "An [[expect]] step beyond the run", BASE + '\n[[expect]]\nstep = 5\ntensor = "loss"\nvalue = 0.0\n',
         "net.toml: expect[0].step: step 5 is beyond train.steps = 1"),
    Case("expect-shape", "An expected value of the wrong shape", BASE + '\n[[expect]]\nstep = 1\ntensor = "linear2.out"\nvalue = [1.0, 2.0, 3.0]\n',
         "net.toml: expect[0].value: shape [3] does not match linear2.out, which has shape [2, 1] at step 1",
         argv=("check", "net.toml")),
    Case("unknown-op-breakpoint", "An unknown operation in a breakpoint", BASE + '\n[[breakpoints]]\nop = "backward linear3"\n',
         'net.toml: breakpoints[0].op: unknown value "backward linear3" (did you mean "backward linear2"?)'),
    Case("unknown-tensor-breakpoint", "An unknown tensor in a condition", BASE + '\n[[breakpoints]]\nwhen = "linear1.grad norm > 10"\n',
         'net.toml: breakpoints[0].when: unknown tensor "linear1.grad" (did you mean "linear1.grad_in"?)'),
    Case("malformed-condition", "A malformed condition", BASE + '\n[[breakpoints]]\nwhen = "linear1.out is big"\n',
         'net.toml: breakpoints[0].when: malformed condition "linear1.out is big": expected "<tensor> <stat> '
         '<op> <number>" (for example "linear1.weight.grad norm > 10") or "nonfinite"'),
    Case("unknown-stat", "An unknown statistic in a condition", BASE + '\n[[breakpoints]]\nwhen = "linear1.out average > 1"\n',
         'net.toml: breakpoints[0].when: unknown statistic "average" (expected one of: absmax, max, mean, min, norm)'),
    # --- limits ---
    Case("limit-random-data", "Limit: random data too large",
         sub("x = [[1.0, 2.0], [3.0, 4.0]]", 'x = { random = "normal", shape = [10000000, 1000000] }'),
         "net.toml: data.x.shape: [10000000, 1000000] is 10000000000000 elements, over the limit of 50000000"),
    Case("limit-npz-header", "Limit: a .npz array too large", sub("x = [[1.0, 2.0], [3.0, 4.0]]", 'x = { file = "big.npz" }'),
         'net.toml: data.x.file: "big.npz": array "x" of shape [10000000, 1000000] has 10000000000000 elements, '
         "over the limit of 50000000", files={"big.npz": npz_huge_header}),
    Case("limit-parameters", "Limit: too many parameters", sub("out = 3", "out = 1000000000000"),
         "net.toml: layers[0]: linear1.weight of shape [1000000000000, 2] would take the parameter count to "
         "2000000000000, over the limit of 50000000"),
    Case("limit-steps", "Limit: too many steps", BASE + "\n[train]\nsteps = 100000000000\n",
         "net.toml: train.steps: expected a positive integer (at most 10000000), got 100000000000"),
    Case("limit-activations", "Limit: a layer output too large for one batch",
         sub("x = [[1.0, 2.0], [3.0, 4.0]]", 'x = { random = "normal", shape = [100000, 2] }',
             sub("y = [[1.0], [2.0]]", 'y = { random = "normal", shape = [100000, 1] }', sub("out = 3", "out = 1000"))),
         "net.toml: layers[0]: the output of linear1, [100000, 1000] per batch, has 100000000 elements, over the "
         "limit of 50000000"),
    Case("limit-conv", "Limit: a convolution that would unfold too much",
         '[data]\nx = { random = "normal", shape = [64, 3, 64, 64] }\ny = { random = "integers", low = 0, high = 2, shape = [64] }\n\n'
         '[[layers]]\ntype = "conv2d"\nout_channels = 1\nkernel_size = 9\npadding = 4\n\n'
         '[[layers]]\ntype = "flatten"\n\n[[layers]]\ntype = "linear"\nout = 2\n\n[loss]\ntype = "cross_entropy"\n',
         "net.toml: layers[0]: conv2d1 would unfold 63700992 input elements per batch (N·C·positions·kernel), "
         "over the limit of 50000000 (use a smaller batch_size or kernel)"),
    Case("limit-attention-scores", "Limit: attention over too long a sequence",
         ATTENTION_T.replace("@T@", "40000"),
         "net.toml: layers[1]: attention1.scores, [1, 2, 40000, 40000] per batch, has 3200000000 elements, over the "
         "limit of 50000000 (use a smaller batch_size or smaller inputs)"),
    Case("limit-lstm-gates", "Limit: an lstm whose gates are too large for one batch",
         '[data]\nx = { random = "normal", shape = [1000000, 1, 1] }\ny = { random = "normal", shape = [1000000] }\n\n'
         '[[layers]]\ntype = "lstm"\nhidden = 13\n\n[loss]\ntype = "mse"\n',
         "net.toml: layers[0]: lstm1.gates, [1000000, 1, 52] per batch, has 52000000 elements, over the limit of "
         "50000000 (use a smaller batch_size or smaller inputs)"),
    Case("limit-activations-total", "Limit: the tensors of one batch, added up",
         ATTENTION_T.replace("@T@", "5000"),
         "net.toml: layers[1]: the layers' outputs and the tensors they make, up to attention1, add up to 100180000 "
         "elements per batch of 1, over the limit of 100000000 (use a smaller batch_size or smaller inputs)"),
    Case("limit-layers", "Limit: too many layers", sub("out = 1", "out = 1" + '\n\n[[layers]]\ntype = "identity"' * 1000),
         "net.toml: layers: 1003 layers is over the limit of 1000"),
    Case("limit-steps-argument", "Limit: too many steps on the command line", BASE,
         "nnstep run: argument --steps: expected at most 10000000 steps, got 100000000000",
         argv=("run", "net.toml", "--steps", "100000000000"), where="--steps"),
    # --- arguments ---
    Case("bad-argument", "A bad command-line argument", BASE,
         "nnstep run: argument --steps: expected a positive integer, got 0", argv=("run", "net.toml", "--steps", "0"),
         where="--steps"),
    Case("unknown-argument", "An argument no command takes", BASE,
         "nnstep tui: unrecognized arguments: --nope", argv=("net.toml", "--nope"), where="--nope"),
]

# --- graph networks (docs/scenario-format.md) ---
GRAPH_BASE = '[data]\nx = [[1.0, 2.0], [3.0, 4.0]]\ny = [[1.0, 0.0], [2.0, 1.0]]\n\n[[layers]]\ntype = "linear"\nout = 2\n\n[[layers]]\ntype = "relu"\n\n[[layers]]\ntype = "add"\ninputs = ["linear1", "relu1"]\n\n[loss]\ntype = "mse"\n'
LM_BASE = '[data]\nx = [[0, 1, 2], [2, 1, 0]]\ny = [[1, 2, 0], [1, 0, 2]]\n\n[[layers]]\ntype = "embedding"\nnum = 3\ndim = 4\n\n[[layers]]\ntype = "attention"\nheads = 2\n\n[[layers]]\ntype = "linear"\nout = 3\n\n[loss]\ntype = "cross_entropy"\nclass_dim = -1\n'

GRAPH_CASES = [
    Case('graph-unknown-input', 'A layer reads an unknown layer', '[data]\nx = [[1.0, 2.0], [3.0, 4.0]]\ny = [[1.0, 0.0], [2.0, 1.0]]\n\n[[layers]]\ntype = "linear"\nout = 2\n\n[[layers]]\ntype = "relu"\n\n[[layers]]\ntype = "add"\ninputs = ["linear1", "rleu1"]\n\n[loss]\ntype = "mse"\n',
         'net.toml: layers[2].inputs[1]: unknown layer "rleu1" (did you mean "relu1"?)'),
    Case('graph-later-input', 'A layer reads a layer that comes later', '[data]\nx = [[1.0, 2.0], [3.0, 4.0]]\ny = [[1.0, 0.0], [2.0, 1.0]]\n\n[[layers]]\ntype = "linear"\nout = 2\n\n[[layers]]\ntype = "relu"\ninput = "add1"\n\n[[layers]]\ntype = "add"\ninputs = ["linear1", "relu1"]\n\n[loss]\ntype = "mse"\n',
         'net.toml: layers[1].input: "add1" is layers[2] (add1), which comes later: a layer reads only the batch ("input") or layers above it (list the layers in the order they run)'),
    Case('graph-inputs-on-one-input-layer', 'inputs on a layer that reads one tensor', '[data]\nx = [[1.0, 2.0], [3.0, 4.0]]\ny = [[1.0, 0.0], [2.0, 1.0]]\n\n[[layers]]\ntype = "linear"\nout = 2\n\n[[layers]]\ntype = "relu"\ninputs = ["linear1"]\n\n[[layers]]\ntype = "add"\ninputs = ["linear1", "relu1"]\n\n[loss]\ntype = "mse"\n',
         'net.toml: layers[1].inputs: a relu layer reads one tensor: name it with input = "<layer>" (inputs = [...] is for the merge layers: add, mul, concat, matmul)'),
    Case('graph-input-on-merge', 'input on a merge layer', '[data]\nx = [[1.0, 2.0], [3.0, 4.0]]\ny = [[1.0, 0.0], [2.0, 1.0]]\n\n[[layers]]\ntype = "linear"\nout = 2\n\n[[layers]]\ntype = "relu"\n\n[[layers]]\ntype = "add"\ninput = "linear1"\n\n[loss]\ntype = "mse"\n',
         'net.toml: layers[2].input: an add layer merges several tensors: name them with inputs = ["<layer>", "<layer>"]'),
    Case('graph-merge-one-input', 'A merge of one tensor', '[data]\nx = [[1.0, 2.0], [3.0, 4.0]]\ny = [[1.0, 0.0], [2.0, 1.0]]\n\n[[layers]]\ntype = "linear"\nout = 2\n\n[[layers]]\ntype = "relu"\n\n[[layers]]\ntype = "add"\ninputs = ["relu1"]\n\n[loss]\ntype = "mse"\n',
         'net.toml: layers[2].inputs: an add layer reads at least 2 tensors, got 1'),
    Case('graph-add-shapes', 'add of two shapes', '[data]\nx = [[1.0, 2.0], [3.0, 4.0]]\ny = [[1.0, 0.0], [2.0, 1.0]]\n\n[[layers]]\ntype = "linear"\nout = 2\n\n[[layers]]\ntype = "linear"\nout = 3\n\n[[layers]]\ntype = "add"\ninputs = ["linear1", "linear2"]\n\n[loss]\ntype = "mse"\n',
         'net.toml: layers[2]: add1 (add) cannot merge layers[0] (linear1) [N, 2] and layers[1] (linear2) [N, 3]: add needs inputs of one shape, got [N, 2] and [N, 3]'),
    Case('graph-concat-shapes', 'concat of shapes that differ off its dim', '[data]\nx = [[1.0, 2.0], [3.0, 4.0]]\ny = [[1.0, 0.0, 1.0, 1.0], [2.0, 1.0, 1.0, 1.0]]\n\n[[layers]]\ntype = "linear"\nout = 2\n\n[[layers]]\ntype = "reshape"\nshape = [2, 1]\n\n[[layers]]\ntype = "concat"\ndim = 1\ninputs = ["linear1", "reshape1"]\n\n[loss]\ntype = "mse"\n',
         'net.toml: layers[2]: concat1 (concat) cannot merge layers[0] (linear1) [N, 2] and layers[1] (reshape1) [N, 2, 1]: concat along dim 1 needs every other dimension equal, got [N, 2] and [N, 2, 1]'),
    Case('graph-matmul-shapes', 'matmul of shapes that do not chain', '[data]\nx = [[1.0, 2.0], [3.0, 4.0]]\ny = [[1.0, 0.0], [2.0, 1.0]]\n\n[[layers]]\ntype = "reshape"\nshape = [1, 2]\n\n[[layers]]\ntype = "reshape"\ninput = "input"\nshape = [1, 2]\n\n[[layers]]\ntype = "matmul"\ninputs = ["reshape1", "reshape2"]\n\n[loss]\ntype = "mse"\n',
         "net.toml: layers[2]: matmul1 (matmul) cannot merge layers[0] (reshape1) [N, 1, 2] and layers[1] (reshape2) [N, 1, 2]: matmul (…, n, k) @ (…, k, m) needs a's last dimension to equal b's second-to-last, got [N, 1, 2] @ [N, 1, 2] (2 ≠ 1)"),
    Case('graph-dead-branch', 'A dead branch', '[data]\nx = [[1.0, 2.0], [3.0, 4.0]]\ny = [[1.0, 0.0], [2.0, 1.0]]\n\n[[layers]]\ntype = "linear"\nout = 2\n\n[[layers]]\ntype = "relu"\n\n[[layers]]\ntype = "add"\ninputs = ["linear1", "linear1"]\n\n[loss]\ntype = "mse"\n',
         "net.toml: layers[1]: the output of relu1 is read by no later layer (a dead branch): every layer but the last must feed another, and the last layer's output is the prediction"),
    Case('graph-heads', 'heads that do not divide E', '[data]\nx = [[0, 1, 2], [2, 1, 0]]\ny = [[1, 2, 0], [1, 0, 2]]\n\n[[layers]]\ntype = "embedding"\nnum = 3\ndim = 4\n\n[[layers]]\ntype = "attention"\nheads = 3\n\n[[layers]]\ntype = "linear"\nout = 3\n\n[loss]\ntype = "cross_entropy"\nclass_dim = -1\n',
         'net.toml: layers[1]: attention1 (attention) cannot take the output of layers[0] (embedding1), per-sample shape [3, 4]: heads = 3 does not divide the embedding size E = 4'),
    Case('graph-token-range', 'A token index outside [0, num)', '[data]\nx = [[0, 1, 3], [2, 1, 0]]\ny = [[1, 2, 0], [1, 0, 2]]\n\n[[layers]]\ntype = "embedding"\nnum = 3\ndim = 4\n\n[[layers]]\ntype = "attention"\nheads = 2\n\n[[layers]]\ntype = "linear"\nout = 3\n\n[loss]\ntype = "cross_entropy"\nclass_dim = -1\n',
         'net.toml: data.x: token index 3 is outside [0, 3): embedding1 has num = 3 rows'),
    Case('graph-token-fraction', 'Token data that are not whole numbers', '[data]\nx = [[0, 1, 2.5], [2, 1, 0]]\ny = [[1, 2, 0], [1, 0, 2]]\n\n[[layers]]\ntype = "embedding"\nnum = 3\ndim = 4\n\n[[layers]]\ntype = "attention"\nheads = 2\n\n[[layers]]\ntype = "linear"\nout = 3\n\n[loss]\ntype = "cross_entropy"\nclass_dim = -1\n',
         'net.toml: data.x: embedding1 (embedding) reads token indices, whole numbers, but data.x holds 2.5'),
    Case('graph-class-dim', 'A class_dim the logits do not have', '[data]\nx = [[0, 1, 2], [2, 1, 0]]\ny = [[1, 2, 0], [1, 0, 2]]\n\n[[layers]]\ntype = "embedding"\nnum = 3\ndim = 4\n\n[[layers]]\ntype = "attention"\nheads = 2\n\n[[layers]]\ntype = "linear"\nout = 3\n\n[loss]\ntype = "cross_entropy"\nclass_dim = 3\n',
         'net.toml: loss.class_dim: 3 is not a class dimension of the logits [2, 3, 3] (use 1 to 2, or -1; dim 0 is the batch)'),
]

CASES += GRAPH_CASES

# --- recurrent layers (docs/scenario-format.md) ---
RNN_BASE = ('[data]\nx = [[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]]\ny = [[[1.0], [2.0], [3.0]]]\n\n'
            '[[layers]]\ntype = "rnn"\nhidden = 1\n\n[loss]\ntype = "mse"\n')

RNN_CASES = [
    Case("rnn-hidden-missing", "An rnn without hidden", sub("hidden = 1\n", "", RNN_BASE),
         "net.toml: layers[0]: missing key hidden (an rnn layer needs it)"),
    Case("rnn-hidden-zero", "An rnn with hidden = 0", sub("hidden = 1", "hidden = 0", RNN_BASE),
         "net.toml: layers[0].hidden: expected a positive integer, got 0"),
    Case("rnn-nonlinearity", "An rnn nonlinearity torch does not have", sub("hidden = 1", 'hidden = 1\nnonlinearity = "sigmoid"', RNN_BASE),
         'net.toml: layers[0].nonlinearity: unknown value "sigmoid" (expected one of: relu, tanh)'),
    Case("rnn-not-a-sequence", "An rnn on data that is not (N, T, I)",
         '[data]\nx = [[1.0, 2.0], [3.0, 4.0]]\ny = [[1.0], [2.0]]\n\n[[layers]]\ntype = "rnn"\nhidden = 1\n\n[loss]\ntype = "mse"\n',
         "net.toml: layers[0]: rnn1 (rnn) cannot take the output of the data, per-sample shape [2]: rnn expects input "
         "(N, T, I): a per-sample shape of 2 dims (time steps, features), got [2]"),
    Case("lstm-nonlinearity", "An lstm with a nonlinearity", sub('type = "rnn"\nhidden = 1', 'type = "lstm"\nhidden = 1\nnonlinearity = "relu"', RNN_BASE),
         "net.toml: layers[0].nonlinearity: unknown key (expected one of: bias, bias_hh, bias_ih, frozen, hidden, in, "
         "init, input, name, type, weight_hh, weight_ih)"),
    Case("rnn-work-limit", "An rnn over too many time steps for its batch",
         sub("x = [[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]]\ny = [[[1.0], [2.0], [3.0]]]",
             'x = { random = "normal", shape = [64, 2000, 1] }\ny = { random = "normal", shape = [64, 2000, 8] }',
             RNN_BASE).replace("hidden = 1", "hidden = 8"),
         "net.toml: layers[0]: rnn1 over 2000 time steps would copy 2048000000 elements per batch, filling its "
         "(N, T, ·) tensors one time step at a time (N·T²·hidden), over the limit of 1000000000 (use fewer time "
         "steps or a smaller batch_size)"),
    Case("lstm-weight-shape", "An lstm weight in the wrong layout", sub('type = "rnn"\nhidden = 1', 'type = "lstm"\nhidden = 1\nweight_hh = [[1.0, 0.5]]', RNN_BASE),
         "net.toml: layers[0].weight_hh: expected shape [4, 1] (4·hidden, hidden), the gates i, f, g, o stacked, got [1, 2]"),
]

CASES += RNN_CASES
# Optimizers, clipping, schedules and the loss options of docs/scenario-format.md
CE3 = sub("out = 1", "out = 3", sub("y = [[1.0], [2.0]]", "y = [0, 2]"))
BCE = sub("y = [[1.0], [2.0]]", "y = [[1.0], [0.0]]")
OPTIM_CASES = [
    Case("clip-nonpositive", "clip_grad_norm that is not positive", sub("lr = 0.1", "lr = 0.1\nclip_grad_norm = 0"),
         "net.toml: optimizer.clip_grad_norm: expected a positive number, got 0"),
    Case("schedule-unknown-type", "An unknown schedule type", BASE + '\n[optimizer.schedule]\ntype = "cosin"\nt_max = 5\n',
         'net.toml: optimizer.schedule.type: unknown value "cosin" (did you mean "cosine"?)'),
    Case("schedule-missing-option", "A schedule without its required option", BASE + '\n[optimizer.schedule]\ntype = "step"\n',
         "net.toml: optimizer.schedule: missing key step_size (StepLR needs it)"),
    Case("schedule-other-option", "An option of another schedule type",
         BASE + '\n[optimizer.schedule]\ntype = "cosine"\nt_max = 10\ngamma = 0.5\n',
         "net.toml: optimizer.schedule.gamma: unknown key (expected one of: eta_min, t_max, type, warmup, warmup_start)"),
    Case("schedule-linear-factor", "A LinearLR start_factor above 1",
         BASE + '\n[optimizer.schedule]\ntype = "linear"\nstart_factor = 2\n',
         "net.toml: optimizer.schedule.start_factor: expected a number in (0, 1], got 2"),
    Case("rmsprop-other-key", "A key of another optimizer", sub('type = "sgd"', 'type = "rmsprop"\nbetas = [0.9, 0.999]'),
         "net.toml: optimizer.betas: unknown key (expected one of: alpha, centered, clip_grad_norm, eps, lr, momentum, schedule, type, weight_decay)"),
    Case("ce-weight-length", "Class weights of the wrong length", sub('type = "mse"', 'type = "cross_entropy"\nweight = [1.0, 2.0]', CE3),
         "net.toml: loss.weight: expected 3 class weights, one per class (layers[2] (linear2) gives 3 classes), got 2"),
    Case("label-smoothing-range", "label_smoothing outside [0, 1]", sub('type = "mse"', 'type = "cross_entropy"\nlabel_smoothing = 1.5', CE3),
         "net.toml: loss.label_smoothing: expected a number in [0, 1], got 1.5"),
    Case("pos-weight-length", "pos_weight of the wrong shape", sub('type = "mse"', 'type = "bce_with_logits"\npos_weight = [1.0, 2.0]', BCE),
         "net.toml: loss.pos_weight: 2 weights do not fit the last dim of layers[2] (linear2)'s output [2, 1], of size 1: give one weight per output there, or a single one for all"),
]

CASES += OPTIM_CASES


# --- pooling, dropout, nll (docs/scenario-format.md) ---
POOL_BASE = ('[data]\nx = [[[[1.0, 2.0, 0.0], [3.0, 4.0, 1.0], [0.0, 1.0, 2.0]]]]\ny = [[[[1.0]]]]\n\n'
             '[[layers]]\ntype = "maxpool2d"\nkernel_size = 2\n\n[loss]\ntype = "mse"\n')
DROP_BASE = ('[data]\nx = [[1.0, 2.0], [3.0, 4.0]]\ny = [[1.0], [2.0]]\n\n[[layers]]\ntype = "linear"\nout = 3\n\n'
             '[[layers]]\ntype = "dropout"\np = 0.5\n\n[[layers]]\ntype = "linear"\nout = 1\n\n[loss]\ntype = "mse"\n')
NLL_BASE = ('[data]\nx = [[1.0, 2.0], [3.0, 4.0]]\ny = [0, 2]\n\n[[layers]]\ntype = "linear"\nout = 3\n\n'
            '[[layers]]\ntype = "log_softmax"\n\n[loss]\ntype = "nll"\n')

POOL_CASES = [
    Case("dropout-p-one", "Dropout with p = 1", sub("p = 0.5", "p = 1.0", DROP_BASE),
         "net.toml: layers[1].p: expected a number in [0, 1), got 1"),
    Case("dropout-p-negative", "Dropout with a negative p", sub("p = 0.5", "p = -0.1", DROP_BASE),
         "net.toml: layers[1].p: expected a number in [0, 1), got -0.1"),
    Case("pool-window", "A pooling window larger than its padded input", sub("kernel_size = 2", "kernel_size = 4", POOL_BASE),
         "net.toml: layers[0]: maxpool2d1 (maxpool2d) cannot take the output of the data, per-sample shape [1, 3, 3]: "
         "kernel_size [4, 4] is larger than the padded input [3, 3]"),
    Case("pool-padding", "Pooling padding over half the kernel", sub("kernel_size = 2", "kernel_size = 2\npadding = 2", POOL_BASE),
         "net.toml: layers[0]: maxpool2d1 (maxpool2d) cannot take the output of the data, per-sample shape [1, 3, 3]: "
         "padding [2, 2] is more than half of kernel_size [2, 2] (as torch: pad should be at most half of effective "
         "kernel size)"),
    Case("pool-flat-input", "Pooling fed a flat tensor", sub('type = "dropout"\np = 0.5', 'type = "maxpool1d"\nkernel_size = 2', DROP_BASE),
         "net.toml: layers[1]: maxpool1d1 (maxpool1d) cannot take the output of layers[0] (linear1), per-sample shape [3]: "
         "maxpool1d expects input (N, C, L), so a per-sample shape of 2 dims, got [3]"),
    Case("nll-class-range", "An nll target outside the classes", sub("y = [0, 2]", "y = [0, 3]", NLL_BASE),
         "net.toml: data.y: class index 3 is out of range: layers[1] (log_softmax1) gives 3 classes (0 to 2)"),
    Case("nll-class-fraction", "nll targets that are not whole numbers", sub("y = [0, 2]", "y = [0, 1.5]", NLL_BASE),
         "net.toml: data.y: nll targets are class indices, whole numbers, but data.y holds 1.5"),
    Case("nll-target-shape", "nll targets that are not one class index per sample",
         sub("y = [0, 2]", "y = [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]", NLL_BASE),
         "net.toml: data.y: nll needs class indices of shape [2] (one per sample), got [2, 3]"),
]

CASES += POOL_CASES

# the cosine's warm-up (SequentialLR of LinearLR and CosineAnnealingLR)
WARMUP_CASES = [
    Case("schedule-warmup-start", "A warm-up start above 1",
         BASE + '\n[optimizer.schedule]\ntype = "cosine"\nt_max = 10\nwarmup = 3\nwarmup_start = 1.5\n',
         "net.toml: optimizer.schedule.warmup_start: expected a number in (0, 1], got 1.5"),
]

CASES += WARMUP_CASES

# --- compare and export (docs/commands.md) ---
def mine_npz(**arrays):
    """A user's own values as `nnstep compare` reads them."""
    def make(path):
        np.savez(path, **arrays)
    return make


_CMP = ("compare", "net.toml", "mine.npz")
COMPARE_CASES = [
    Case("compare-npz-objects", "compare: a .npz holding Python objects (pickle)", BASE,
         'mine.npz: array "linear1.out" holds Python objects, which nnstep never loads (it would need pickle)',
         files={"mine.npz": mine_npz(**{"linear1.out": np.array([{"a": 1}, None], dtype=object)})}, argv=_CMP),
    Case("compare-not-npz", "compare: a file that is not a .npz", BASE,
         'mine.npz: "mine.npz" is not a .npz file (not a zip archive as numpy.savez writes)',
         files={"mine.npz": "linear1.out = [1, 2, 3]\n"}, argv=_CMP),
    Case("compare-no-file", "compare: the .npz does not exist", BASE, "mine.npz: no such file", argv=_CMP),
    Case("compare-fifo", "compare: a FIFO, not a file", BASE, "mine.npz: is not a regular file",
         files={"mine.npz": os.mkfifo}, argv=_CMP),
    Case("compare-empty", "compare: a .npz with no arrays", BASE,
         "mine.npz: holds no arrays: save your values under nnstep's tensor names, e.g. "
         'numpy.savez("mine.npz", **{"linear1.out": out1})',
         files={"mine.npz": mine_npz()}, argv=_CMP),
    Case("compare-unknown-tensor", "compare: a name that is not a tensor", BASE,
         'mine.npz: "linear1.outt": no tensor of this scenario is named "linear1.outt" (did you mean "linear1.out"?)',
         files={"mine.npz": mine_npz(**{"linear1.outt": np.zeros((2, 3))})}, argv=_CMP),
    Case("compare-shape", "compare: a shape that does not match", BASE,
         'mine.npz: "linear1.out": shape [3] does not match linear1.out, which has shape [2, 3]',
         files={"mine.npz": mine_npz(**{"linear1.out": np.zeros(3)})}, argv=_CMP),
    Case("compare-transposed", "compare: a weight in the (in, out) layout", BASE,
         'mine.npz: "linear1.weight.grad": shape [2, 3] does not match linear1.weight.grad, which has shape '
         "[3, 2]: yours is its transpose (torch's layout is (out, in): out = in @ W.T + b)",
         files={"mine.npz": mine_npz(**{"linear1.weight.grad": np.zeros((2, 3))})}, argv=_CMP),
    Case("compare-step", "compare: a step beyond train.steps", BASE,
         'mine.npz: "2/loss": step 2 is beyond train.steps = 1',
         files={"mine.npz": mine_npz(**{"2/loss": np.array(1.0)})}, argv=_CMP),
    Case("compare-step-0", "compare: step 0 of a tensor that is no parameter", BASE,
         'mine.npz: "0/linear1.out": step 0 has only the initial parameters, not "linear1.out"',
         files={"mine.npz": mine_npz(**{"0/linear1.out": np.zeros((2, 3))})}, argv=_CMP),
    Case("compare-tolerance", "compare: a negative tolerance", BASE,
         "nnstep compare: argument --rtol: expected a non-negative number, got -1",
         files={"mine.npz": mine_npz(loss=np.array(1.0))}, argv=_CMP + ("--rtol", "-1"), where="--rtol"),
    Case("export-no-folder", "export: the output folder does not exist", BASE,
         'out/ref.py: no such folder "out"', argv=("export", "net.toml", "--torch", "-o", "out/ref.py")),
    Case("export-over-scenario", "export: the output is the scenario itself", BASE,
         '-o: "net.toml" is the scenario itself: write the script to another file (-o ref.py)', where="-o",
         argv=("export", "net.toml", "--torch", "-o", "net.toml")),
]

CASES += COMPARE_CASES
# `nnstep serve` (README, "In a classroom"). Only the cases that fail before a socket is bound run in-process here;
# a port in use, a foreign host and the missing extra are in tests/test_serve.py (real processes).
SERVE_CASES = [
    Case("serve-port-range", "A port out of range", BASE,
         "nnstep serve: argument --port: expected a port number 0..65535, got 70000",
         argv=("serve", "net.toml", "--port", "70000")),
]

CASES += SERVE_CASES
# `nnstep serve --max-sessions` out of range (docs/errors.md, "Serving a classroom")
CASES += [
    Case("serve-max-sessions", "A session cap out of range", BASE,
         "nnstep serve: argument --max-sessions: expected a whole number of sessions 1..256, got 0",
         argv=("serve", "net.toml", "--max-sessions", "0")),
]

# A lesson's [[ask]] and [[note]] (docs/teaching.md). The loader checks the op, the tensor and the
# step; the index is checked against the tensor's shape when `check` (or the TUI) opens the lesson.
ASK = '\n[[ask]]\nop = "forward linear1"\ntensor = "linear1.out[0, 0]"\n'
LESSON_CASES = [
    Case("ask-unknown-op", "A question before an op the scenario does not have",
         BASE + ASK.replace('op = "forward linear1"', 'op = "forward linear3"'),
         'net.toml: ask[0].op: no operation "forward linear3" in this scenario (did you mean "forward linear2"?)'),
    Case("ask-not-written", "A question about a tensor its op does not write",
         BASE + ASK.replace('"linear1.out[0, 0]"', '"relu1.out[0, 0]"'),
         'net.toml: ask[0].tensor: "relu1.out" is written by "forward relu1", not by "forward linear1"'),
    Case("ask-not-an-element", "A question that names no element",
         BASE + ASK.replace('"linear1.out[0, 0]"', '"linear1.out(0, 0)"'),
         'net.toml: ask[0].tensor: expected one element of a tensor, such as "sigmoid2.grad_in[0, 1]", '
         'got "linear1.out(0, 0)"'),
    Case("ask-index-range", "A question about an element outside its tensor",
         BASE + ASK.replace('"linear1.out[0, 0]"', '"linear1.out[0, 3]"'),
         "net.toml: ask[0].tensor: index 3 is out of range for dimension 1 of linear1.out, of size 3 "
         "(shape [2, 3]; indices count from 0)", argv=("check", "net.toml")),
    Case("ask-index-rank", "A question with too few indices",
         BASE + ASK.replace('"linear1.out[0, 0]"', '"linear1.out[1]"'),
         'net.toml: ask[0].tensor: linear1.out has shape [2, 3]: give 2 indices, got 1 (e.g. "linear1.out[0, 0]")',
         argv=("check", "net.toml")),
    Case("ask-step", "A question in a step that does not run",
         BASE + ASK + "step = 3\n",
         "net.toml: ask[0].step: step 3 is beyond train.steps = 1"),
    Case("ask-twice", "Two questions before one op",
         BASE + ASK + ASK.replace("[0, 0]", "[1, 2]"),
         'net.toml: ask[1]: ask[0] already asks before "forward linear1" in step 1: one question per operation and step'),
    Case("ask-show", "An unknown show",
         BASE + ASK + 'show = "everything"\n',
         'net.toml: ask[0].show: unknown value "everything" (expected one of: formula, nothing, numbers)'),
    Case("note-op-and-stage", "A note at an op and a stage",
         BASE + '\n[[note]]\nop = "loss"\nstage = "backward"\ntext = "Here the loss turns into gradients."\n',
         "net.toml: note[0]: expected at most one of op or stage, got both"),
    Case("note-no-text", "A note without text",
         BASE + '\n[[note]]\nstage = "backward"\n',
         "net.toml: note[0]: missing key text (what the lesson says there)"),
    Case("note-step", "A note's step that is no step",
         BASE + '\n[[note]]\nstage = "backward"\nstep = "often"\ntext = "Watch the gradients."\n',
         'net.toml: note[0].step: expected a step number or "every", got "often"'),
    Case("answers-not-json", "check --answers: a results file that is not JSON", BASE + ASK,
         "results.json: not a results document (JSON): Expecting value: line 1 column 1 (char 0)",
         files={"results.json": "score: 3/4\n"}, argv=("check", "net.toml", "--answers", "results.json")),
    Case("answers-shape", "check --answers: an answer without its fields", BASE + ASK,
         "results.json: answers[0]: missing or not a str: answer",
         files={"results.json": '{"scenario": "net", "score": [1, 1], "answers": [{"step": 1, "op": '
                                 '"forward linear1", "tensor": "linear1.out", "index": [0, 0]}]}'},
         argv=("check", "net.toml", "--answers", "results.json")),
    Case("answers-two-files", "check --answers with two scenarios", BASE + ASK,
         "--answers: grades the answers to one scenario; give one FILE, not 2",
         files={"results.json": "{}"}, argv=("check", "net.toml", "net.toml", "--answers", "results.json")),
]

CASES += LESSON_CASES

# --- a switch that leaves out a parameter the layer's table gives (issue 29) ---
CONTRADICTION_CASES = [
    Case("attention-bias-false-with-bias", "attention: bias = false with in_proj_bias",
         sub("heads = 2", "heads = 2\nbias = false\nin_proj_bias = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]",
             LM_BASE),
         "net.toml: layers[1].in_proj_bias: given, but bias = false leaves attention1 without in_proj_bias (drop "
         "in_proj_bias, or set bias = true)"),
    Case("lstm-bias-false-with-bias", "lstm: bias = false with bias_ih",
         sub('type = "rnn"\nhidden = 1', 'type = "lstm"\nhidden = 1\nbias = false\nbias_ih = [0.5, 0.0, 0.0, 0.0]', RNN_BASE),
         "net.toml: layers[0].bias_ih: given, but bias = false leaves lstm1 without bias_ih (drop bias_ih, or set "
         "bias = true)"),
    Case("affine-false-with-weight", "batchnorm: affine = false with weight",
         sub('type = "relu"', 'type = "batchnorm"\naffine = false\nweight = [1.0, 1.0, 1.0]'),
         "net.toml: layers[1].weight: given, but affine = false leaves batchnorm1 without weight (drop weight, or "
         "set affine = true)"),
    Case("norm-bias-false", "batchnorm: bias = false",
         sub('type = "relu"', 'type = "batchnorm"\nbias = false'),
         "net.toml: layers[1].bias: batchnorm1 (batchnorm) has no bias switch: affine = false leaves out its weight "
         "and bias together, as torch's affine=False"),
]

CASES += CONTRADICTION_CASES

# --- values too long for a message, or too large to hold (issue 29) ---
_BIG = "9" * 4000
_CUT = "9" * 57 + "..."        # errors.cut: 60 characters
LONG_CASES = [
    Case("long-integer", "An integer of 4000 digits",
         sub('type = "mse"', f'type = "cross_entropy"\nclass_dim = {_BIG}',
             sub("y = [[1.0], [2.0]]", "y = [0, 1]", sub("out = 1\n", "out = 3\n"))),
         f"net.toml: loss.class_dim: expected an integer of at most 2^63 in size, got {_CUT}"),
    Case("number-too-large-for-float", "A number too large for a float", sub("lr = 0.1", f"lr = {_BIG}"),
         f"net.toml: optimizer.lr: expected a finite number, got {_CUT}, too large for a float"),
    Case("integer-too-many-digits", "An integer of more digits than Python reads", sub("out = 3", "out = " + "9" * 5000),
         "net.toml:7:7: TOML syntax: an integer of more than 4300 digits"),
    Case("token-huge", "A token index of 1e300",
         sub("x = [[0, 1, 2], [2, 1, 0]]", "x = [[0, 1, 1e300], [2, 1, 0]]", LM_BASE),
         "net.toml: data.x: token index 1e+300 is outside [0, 3): embedding1 has num = 3 rows"),
]

CASES += LONG_CASES

# --- a merge of very many inputs (issue 29) ---
LIMIT_MERGE_CASES = [
    Case("limit-merge-inputs", "Limit: a merge of too many inputs",
         sub('inputs = ["linear1", "relu1"]', "inputs = [" + ", ".join(['"linear1"'] * 65) + "]", GRAPH_BASE)
         .replace('[[layers]]\ntype = "relu"\n\n', ""),
         "net.toml: layers[1].inputs: 65 inputs is over the limit of 64 for one add layer (merge the tensors in stages)"),
]

CASES += LIMIT_MERGE_CASES

# --- an output that is one of the run's own inputs, or that cannot be written (issue 29) ---
_DATA_NPZ = sub("x = [[1.0, 2.0], [3.0, 4.0]]", 'x = { file = "d.npz" }')
OUTPUT_CASES = [
    Case("save-over-scenario", "run --save: the output is the scenario itself", BASE,
         '--save: "net.toml" is the scenario itself: write the parameters to another file (--save trained.npz)',
         argv=("run", "net.toml", "--save", "net.toml"), where="--save"),
    Case("save-over-data", "run --save: the output is a data file of the scenario", _DATA_NPZ,
         '--save: "./d.npz" is the scenario\'s data file (data.x.file): write the parameters to another file '
         "(--save trained.npz)",
         files={"d.npz": npz_ok}, argv=("run", "net.toml", "--save", "./d.npz"), where="--save"),
    Case("screenshot-over-scenario", "screenshot -o: the output is the scenario itself", BASE,
         '-o: "net.toml" is the scenario itself: write the screenshot to another file (-o shot.svg)',
         argv=("screenshot", "net.toml", "-o", "net.toml"), where="-o"),
    Case("save-no-folder", "run --save: the output folder does not exist", BASE,
         'nosuchdir/w.npz: no such folder "nosuchdir"', argv=("run", "net.toml", "--save", "nosuchdir/w.npz")),
    Case("save-folder-is-a-file", "run --save: the output folder is a file", BASE,
         'net.toml/w.npz: "net.toml" is not a folder', argv=("run", "net.toml", "--save", "net.toml/w.npz")),
]

CASES += OUTPUT_CASES

KEY_CASES = [
    Case("screenshot-unknown-key", "screenshot --keys: a key that is no key", BASE,
         '--keys: unknown key "nonsense": a key is a character or a Textual key name, such as enter, escape, space, '
         "tab, up, question_mark or ctrl+p",
         files={"shot.svg": "<svg>old</svg>"}, argv=("screenshot", "net.toml", "--keys", "nonsense ctrl+zz", "-o", "shot.svg"),
         where="--keys"),
]

CASES += KEY_CASES

# --- a user's own layer types: --layers FILE.py (docs/layers.md) ---
_SWISH = open(os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                           "examples", "layers", "swish.py"), encoding="utf-8").read()
_USES_SWISH = sub('type = "relu"', 'type = "swish"')
_WITH_LAYERS = ("run", "net.toml", "--layers", "mylayers.py")
_TYPES = ("add, attention, avgpool1d, avgpool2d, batchnorm, concat, conv1d, conv2d, dropout, embedding, flatten, gelu, "
          "identity, layernorm, leaky_relu, linear, log_softmax, lstm, matmul, maxpool1d, maxpool2d, mul, relu, "
          "reshape, rnn, scale, sigmoid, softmax, tanh, transpose")
LAYERS_CASES = [
    Case("layers-unknown-type", "A layer type of your own, without --layers", _USES_SWISH,
         f'net.toml: layers[1].type: unknown value "swish" (expected one of: {_TYPES}); a layer type of your own is '
         "read from the Python file that defines it, named on the command line: --layers FILE.py (docs/layers.md)"),
    Case("layers-import-raises", "--layers: the file raises as it is imported", _USES_SWISH,
         "mylayers.py: line 6: importing it raised AttributeError: module 'numpy' has no attribute 'sigmoid'",
         files={"mylayers.py": 'import numpy as np\nfrom nnstep.layers import Layer\n\nclass Swish(Layer):\n'
                               '    type = "swish"\n    scale = np.sigmoid(1.0)\n'}, argv=_WITH_LAYERS,
         where="mylayers.py: line 6"),
    Case("layers-no-class", "--layers: a file that defines no layer type", _USES_SWISH,
         'mylayers.py: defines no layer type: a class of its own that subclasses nnstep.layers.Layer and sets '
         'type = "..." (docs/layers.md)',
         files={"mylayers.py": "import numpy as np\n\n\ndef swish(x, beta):\n    return x / (1 + np.exp(-beta * x))\n"},
         argv=_WITH_LAYERS, where="mylayers.py"),
    Case("layers-builtin-type", "--layers: a type that is one of nnstep's own", BASE,
         'mylayers.py: Swish.type: "relu" is one of nnstep\'s own layer types, and a layer of your own may not '
         "replace it: give yours a type of its own",
         files={"mylayers.py": _SWISH.replace('type = "swish"', 'type = "relu"')}, argv=_WITH_LAYERS),
    Case("layers-wrong-shape", "--layers: a backward that returns a wrong shape", _USES_SWISH,
         "mylayers.py: Swish.backward: returned grad_in of shape [2, 2], expected [2, 3]",
         files={"mylayers.py": _SWISH.replace("grad_in = g * (s + b * x * d)", "grad_in = g[:, :2]")},
         argv=_WITH_LAYERS),
]

CASES += LAYERS_CASES
