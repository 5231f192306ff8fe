"""Issue 29, inputs that crash or hang: each is refused with one located line and exit 2, within a
few seconds, never a traceback (the catalogue cases of these are in hardcases.py; the tests here
are the ones that need a real process, a time bound or a look inside)."""
from __future__ import annotations

import os
import re
import resource
import subprocess
import sys

import numpy as np
import pytest

from hardcases import ATTENTION_T, BASE
from nnstep.errors import ScenarioError

PY = [sys.executable, "-m", "nnstep"]
DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "docs", "errors.md")


SEQ = ('[data]\nx = { random = "normal", shape = [2, 4, 2] }\ny = { random = "normal", shape = [2, 4, 3] }\n'
       '[[layers]]\n@LAYER@\n[loss]\ntype = "mse"\n')
# a per-sample [3, 2, 2] @ [1, 2, 4]: b's copy is shared by the three matrices of a
MATMUL_BROADCAST = ('[data]\nx = { random = "normal", shape = [2, 12] }\ny = { random = "normal", shape = [2, 3, 2, 4] }\n'
                    '[[layers]]\ntype = "reshape"\nshape = [3, 2, 2]\n'
                    '[[layers]]\ntype = "linear"\ninput = "input"\nout = 8\n'
                    '[[layers]]\ntype = "reshape"\nshape = [1, 2, 4]\n'
                    '[[layers]]\ntype = "matmul"\ninputs = ["reshape1", "reshape2"]\n[loss]\ntype = "mse"\n')


def nnstep(args, cwd, timeout=30, memory=None):
    """`python -m nnstep ARGS` as a user runs it; ``memory`` (bytes) caps its address space, so a
    read that never ends fails fast instead of taking the machine's memory."""
    limit = None
    if memory:
        def limit():
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    return subprocess.run(PY + list(args), cwd=str(cwd), capture_output=True, text=True, timeout=timeout,
                          preexec_fn=limit)


def one_error(r, text: str):
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    assert r.stderr == f"nnstep: error: {text}\n"


def documented(anchor: str, stderr: str):
    """docs/errors.md shows this message, word for word, under this anchor."""
    doc = open(DOC, encoding="utf-8").read()
    assert f'<a id="{anchor}"></a>' in doc
    section = doc.split(f'<a id="{anchor}"></a>', 1)[1].split("\n### ", 1)[0]
    assert stderr.strip() in section, (anchor, stderr)


# --- compare reads only regular files ------------------------------------------------------------------
@pytest.mark.parametrize("argv", [("compare", "net.toml", "mine.npz"), ("net.toml", "--compare", "mine.npz")],
                         ids=["compare", "tui-flag"])
def test_compare_of_a_fifo_does_not_hang(tmp_path, argv):
    """Opening a FIFO blocks until a writer comes, forever here: refused from its stat. The TUI
    flag is refused the same way before the app is built (a hang would be a timeout here)."""
    (tmp_path / "net.toml").write_text(BASE)
    os.mkfifo(tmp_path / "mine.npz")
    one_error(nnstep(argv, tmp_path, timeout=20), "mine.npz: is not a regular file")


def test_compare_of_dev_zero_does_not_read_forever(tmp_path):
    """Not a catalogue case run in-process: unfixed, it would read until memory runs out."""
    (tmp_path / "net.toml").write_text(BASE)
    r = nnstep(["compare", "net.toml", "/dev/zero"], tmp_path, timeout=20, memory=3 * 2**30)
    one_error(r, "/dev/zero: is not a regular file")
    documented("compare-device", r.stderr)


def test_compare_npz_arrays_in_all_are_limited(tmp_path, monkeypatch):
    """Each array of a compare .npz is checked from its header as a data file's is; all of them
    together are limited too (a data file gives one array; compare reads every one)."""
    from nnstep.debugger.compare import load_tensors
    from nnstep.scenario import limits

    np.savez(tmp_path / "mine.npz", **{"linear1.out": np.zeros((2, 3)), "2/linear1.out": np.zeros((2, 3))})
    assert sorted(load_tensors(str(tmp_path / "mine.npz"))) == ["2/linear1.out", "linear1.out"]
    one = 128 + 6 * 8                              # a .npy header (128 bytes, numpy's format 1.0) and 6 doubles
    monkeypatch.setattr(limits, "MAX_FILE_BYTES", 2 * one - 1)
    with pytest.raises(ScenarioError) as e:
        load_tensors(str(tmp_path / "mine.npz"))
    assert str(e.value) == f"{tmp_path / 'mine.npz'}: its arrays hold {2 * one} bytes uncompressed, over the limit of {2 * one - 1}"


# --- every tensor a layer makes is within the limits, checked before anything is allocated ----------
@pytest.mark.parametrize("case_id", ["limit-attention-scores", "limit-lstm-gates", "limit-activations-total"])
def test_intermediates_refused_before_allocating(case_id):
    """The scenario loads without allocating the tensor it refuses (the loader reads shapes only);
    unrefused, the first step would allocate it: attention's scores for T = 40,000 are 25.6 GB."""
    import tracemalloc

    from hardcases import CASES
    from nnstep.scenario import loads_scenario

    case = next(c for c in CASES if c.id == case_id)
    tracemalloc.start()
    try:
        with pytest.raises(ScenarioError) as e:
            loads_scenario(case.toml, path="net.toml")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(e.value) == case.message
    assert peak < 64 * 2**20, peak           # the data itself (the lstm's is 1,000,000 samples) and no more


@pytest.mark.parametrize("type_", ["attention", "lstm", "rnn", "matmul", "maxpool1d", "dropout"])
def test_declared_intermediates_are_what_the_engine_makes(type_):
    """Each layer's declared tensors (its class's ``intermediates``) against what its forward and
    backward really write into the environment: every tensor written is within the largest
    declared or input/output/parameter size (so the loader's limits cover it), and every declared
    one that is a named tensor is written with that shape."""
    from nnstep.engine.program import Program
    from nnstep.scenario import loads_scenario
    from nnstep.layers import layer_type

    nets = {
        "attention": ATTENTION_T.replace("@T@", "5"),
        "lstm": SEQ.replace("@LAYER@", 'type = "lstm"\nhidden = 3'),
        "rnn": SEQ.replace("@LAYER@", 'type = "rnn"\nhidden = 3'),
        "matmul": MATMUL_BROADCAST,
        "maxpool1d": '[data]\nx = { random = "normal", shape = [2, 3, 6] }\ny = { random = "normal", shape = [2, 3, 3] }\n'
                     '[[layers]]\ntype = "maxpool1d"\nkernel_size = 2\n[loss]\ntype = "mse"\n',
        "dropout": BASE.replace('type = "relu"', 'type = "dropout"'),
    }
    sc = loads_scenario(nets[type_], path="net.toml")
    prog = Program(sc)
    env = prog.initial_env()
    prog.feed(env, 1)
    for fn in prog.fns:
        fn(env, 1)
    N = sc.x.shape[0]
    for L in sc.layers:
        if L.type != type_:
            continue
        T = layer_type(L.type)
        declared = T.intermediates(L.options, L.in_shapes, L.out_shape)
        bound = max([N * int(np.prod(s)) for _, s, _ in declared]
                    + [N * int(np.prod(s)) for s in L.in_shapes + (L.out_shape,)]
                    + [np.asarray(sc.initial[f"{L.name}.{p}"]).size for p in L.params])
        mine = {k: v for k, v in env.items() if k.startswith(L.name + ".") and isinstance(v, np.ndarray)}
        assert mine
        for k, v in mine.items():
            assert v.size <= bound, (k, v.shape, bound)
        for label, shp, _ in declared:
            if label.isidentifier():
                assert env[f"{L.name}.{label}"].shape == (N,) + tuple(shp), label



def test_a_layer_without_a_bias_takes_no_bias_key():
    """embedding has a weight only: its `bias = [...]` was accepted and dropped, like a parameter
    that a switch leaves out (the catalogue cases); it is an unknown key."""
    from hardcases import LM_BASE
    from nnstep.scenario import loads_scenario

    with pytest.raises(ScenarioError) as e:
        loads_scenario(LM_BASE.replace("dim = 4", "dim = 4\nbias = [1.0]"), path="net.toml")
    assert str(e.value).startswith("net.toml: layers[0].bias: unknown key (expected one of: dim, frozen,")


# --- values in messages are cut to 60 characters ------------------------------------------------------
BIG = "9" * 4000                 # a TOML integer of 4000 digits (Python converts at most 4300 by default)
LM = ATTENTION_T.replace("@T@", "3")
CE = BASE.replace('type = "mse"', 'type = "cross_entropy"').replace("out = 1\n", "out = 3\n").replace(
    "y = [[1.0], [2.0]]", "y = [0, 1]")
LONG_VALUES = {
    "class_dim": (CE.replace('type = "cross_entropy"', f'type = "cross_entropy"\nclass_dim = {BIG}'),),
    "linear out": (BASE.replace("out = 3", f"out = {BIG}"),),
    "lr": (BASE.replace("lr = 0.1", f"lr = {BIG}"),),
    "negative lr": (BASE.replace("lr = 0.1", f"lr = -{BIG}"),),
    "steps": (BASE + f"\n[train]\nsteps = {BIG}\n",),
    "batch_size": (BASE + f"\n[train]\nbatch_size = {BIG}\n",),
    "seed": (f"[scenario]\nseed = {BIG}\n" + BASE,),
    "data value": (BASE.replace("[3.0, 4.0]", f"[3.0, {BIG}]"),),
    "a float in an int": (BASE.replace("out = 3", f"out = {BIG}.5"),),
    "token 1e300": (LM.replace('x = { random = "integers", low = 0, high = 3, shape = [1, 3] }',
                               "x = [[0, 1, 1e300]]"),),
    "class 1e300": (CE.replace("y = [0, 1]", "y = [0, 1e300]"),),
    "heads": (LM.replace("heads = 2", f"heads = {BIG}"),),
    "embedding num": (LM.replace("num = 3", f"num = {BIG}"),),
    "kernel_size": (BASE.replace('type = "relu"', f'type = "maxpool1d"\nkernel_size = {BIG}'),),
    "reshape": (BASE.replace('type = "relu"', "type = \"reshape\"\nshape = [" + ", ".join(["9223372036854775807"] * 8) + "]"),),
    "random shape": (BASE.replace("x = [[1.0, 2.0], [3.0, 4.0]]",
                                  'x = { random = "normal", shape = [' + ", ".join(["9223372036854775807"] * 4) + "] }"),),
    "schedule": (BASE + f'\n[optimizer.schedule]\ntype = "step"\nstep_size = {BIG}\n',),
    "expect step": (BASE + f'\n[[expect]]\nstep = {BIG}\ntensor = "loss"\nvalue = 0.0\n',),
    "breakpoint number": (BASE + f'\n[[breakpoints]]\nwhen = "loss max > {BIG}e"\n',),
    "digits over int()'s limit": (BASE.replace("out = 3", "out = " + "9" * 5000),),
    "--steps": (BASE, "run", "net.toml", "--steps", BIG),
    "--steps beyond int()": (BASE, "run", "net.toml", "--steps", "9" * 5000),
    "--tol": (BASE, "gradcheck", "net.toml", "--tol", "x" * 5000),
    "--size": (BASE, "screenshot", "net.toml", "--size", BIG + "x40", "-o", "s.svg"),
    "explain index": (BASE, "explain", "net.toml", f"linear1.out[0, {BIG}]"),
    "explain name": (BASE, "explain", "net.toml", "a" * 5000),
    "layer name": (BASE.replace('type = "relu"', 'type = "relu"\nname = "' + "r" * 5000 + '"\ninput = "' + "q" * 5000 + '"'),),
    "condition": (BASE + '\n[[breakpoints]]\nwhen = "' + "a" * 5000 + ' max > 1"\n',),
    "file name": (BASE.replace("x = [[1.0, 2.0], [3.0, 4.0]]", 'x = { file = "' + "f" * 5000 + '.npz" }'),),
    "loss type": (BASE.replace('type = "mse"', 'type = "' + "m" * 5000 + '"'),),
    "compare step": (BASE, "compare", "net.toml", "big-step.npz"),
    "compare shape": (BASE, "compare", "net.toml", "big-shape.npz"),
}


@pytest.mark.parametrize("name", list(LONG_VALUES))
def test_long_values_are_cut_in_messages(name, tmp_path, monkeypatch, capsys):
    """A message shows a value of the user's in at most 60 characters, however long the value
    (a 4000-digit integer was printed whole, in a 4,000-character line), and never a traceback."""
    from nnstep.cli import main

    toml, *argv = LONG_VALUES[name]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.toml").write_text(toml)
    np.savez(tmp_path / "big-step.npz", **{BIG + "/loss": np.array(1.0)})
    np.savez(tmp_path / "big-shape.npz", **{"linear1.out": np.zeros([1] * 40)})
    rc = main(argv or ["run", "net.toml"])
    err = capsys.readouterr().err
    assert rc == 2, err[-3000:]
    line = err.splitlines()[0]
    assert line.startswith("nnstep: error: ") and "Traceback" not in err
    words = lambda text: re.sub(r"[\"'\[\](),]", " ", text).split()      # noqa: E731
    assert max(map(len, words(line))) <= 200, line[:400]                  # a location (a key path) is cut at 200
    what = line.split(": ")[-1]
    assert max(map(len, words(what))) <= 60, what[:400]                   # a value at 60


def test_a_merge_of_100000_inputs_is_refused_within_seconds(tmp_path):
    """A 1.1 MB scenario of one add of 100,000 inputs took 5.7 s to run (and the TUI did not open in
    20 s): refused when it loads, at the limit on a merge's inputs (a generous bound: a hang or a
    run of the whole would go past it)."""
    from nnstep.scenario.limits import MAX_MERGE_INPUTS

    (tmp_path / "net.toml").write_text(
        '[data]\nx = [[1.0, 2.0], [3.0, 4.0]]\ny = [[1.0, 0.0], [2.0, 1.0]]\n\n[[layers]]\ntype = "linear"\nout = 2\n\n'
        '[[layers]]\ntype = "add"\ninputs = [' + ", ".join(['"linear1"'] * 100_000) + ']\n\n[loss]\ntype = "mse"\n')
    one_error(nnstep(["run", "net.toml"], tmp_path, timeout=15),
              f"net.toml: layers[1].inputs: 100000 inputs is over the limit of {MAX_MERGE_INPUTS} for one add layer "
              f"(merge the tensors in stages)")
