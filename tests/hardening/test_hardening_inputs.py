"""Issue 29, inputs that crash or hang: each is refused with one located line and exit 2, within a
few seconds, never a traceback (the catalogue cases of these are in hardcases.py; the tests here
are the ones that need a real process, a time bound or a look inside)."""
from __future__ import annotations

import os
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
    """Each layer's declared tensors (catalog ``intermediates``) against what its forward and
    backward really write into the environment: every tensor written is within the largest
    declared or input/output/parameter size (so the loader's limits cover it), and every declared
    one that is a named tensor is written with that shape."""
    from nnstep.engine.program import Program
    from nnstep.scenario import loads_scenario
    from nnstep.spec import catalog

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
        T = catalog.LAYERS[L.type]
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
