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

from hardcases import BASE
from nnstep.errors import ScenarioError

PY = [sys.executable, "-m", "nnstep"]
DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "docs", "errors.md")


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
