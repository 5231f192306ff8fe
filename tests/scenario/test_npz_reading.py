"""The loader's own .npz reader (nnstep.scenario.npzread): it must read what numpy.savez and
savez_compressed write exactly as numpy.load does, hand anything else to zipfile, and never let a
damaged file through as different numbers."""
import io
import os
import random
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from nnstep import ScenarioError, loads_scenario
from nnstep.scenario.npzread import Archive, NotSimple, SimpleZip

ARRAYS = {"w": np.random.default_rng(3).standard_normal((12, 5)), "i": np.arange(7), "s.x": np.float32(2.5)}


def _same_as_numpy(path):
    ref = np.load(path, allow_pickle=False)
    with Archive(path) as z:
        names = z.namelist()
        assert sorted(names) == sorted(f"{k}.npy" for k in ref.files)
        for n in names:
            a = np.lib.format.read_array(z.open(n), allow_pickle=False)
            b = ref[n[:-4]]
            assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_reads_what_numpy_writes_without_zipfile(tmp_path, save):
    p = tmp_path / "a.npz"
    save(p, **ARRAYS)
    with SimpleZip(str(p)) as z:                   # no NotSimple: the fast path takes it
        for n in z.namelist():
            z.read(n)
    _same_as_numpy(p)


def test_run_imports_no_zipfile(tmp_path):
    """The point of the reader: loading a scenario with .npz data and weights imports no zipfile."""
    np.savez(tmp_path / "d.npz", x=np.ones((4, 3)), y=np.zeros((4, 2)))
    np.savez(tmp_path / "w.npz", **{"fc.weight": np.full((2, 3), 0.5), "fc.bias": np.zeros(2)})
    (tmp_path / "s.toml").write_text(
        'scenario = { name = "t", weights = "w.npz" }\n'
        'data = { x = { file = "d.npz", key = "x" }, y = { file = "d.npz", key = "y" } }\n'
        'loss = { type = "mse" }\noptimizer = { type = "sgd", lr = 0.1 }\n'
        '[[layers]]\ntype = "linear"\nname = "fc"\nout = 2\n')
    code = ("import sys; from nnstep import load_scenario; sc = load_scenario(sys.argv[1]); "
            "assert float(sc.initial['fc.weight'][0, 0]) == 0.5 and sc.x.shape == (4, 3); "
            "print('zipfile' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "s.toml")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def _zip(path, members, compression=zipfile.ZIP_STORED, comment=b""):
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        for name, arr in members.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arr), allow_pickle=False)
            z.writestr(name, buf.getvalue())
        z.comment = comment


@pytest.mark.parametrize("kind", ["bzip2", "lzma", "comment", "unicode name"])
def test_other_zips_go_to_zipfile_and_read_the_same(tmp_path, kind):
    p = tmp_path / "o.npz"
    members = {"w.npy": ARRAYS["w"], "i.npy": ARRAYS["i"]}
    if kind == "bzip2":
        _zip(p, members, zipfile.ZIP_BZIP2)
    elif kind == "lzma":
        _zip(p, members, zipfile.ZIP_LZMA)
    elif kind == "comment":
        _zip(p, members, comment=b"written by hand")
    else:
        _zip(p, {"gewicht\u00e4.npy": ARRAYS["w"]})
    if kind in ("bzip2", "lzma", "unicode name"):
        with pytest.raises(NotSimple):
            with SimpleZip(str(p)) as z:
                for n in z.namelist():
                    z.read(n)
    _same_as_numpy(p)


def test_zip64_goes_to_zipfile(tmp_path):
    p = tmp_path / "z.npz"
    with zipfile.ZipFile(p, "w") as z:
        with z.open("w.npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array(fh, ARRAYS["w"], allow_pickle=False)
    _same_as_numpy(p)


def _scenario_with(tmp_path, raw: bytes):
    (tmp_path / "d.npz").write_bytes(raw)
    text = ('scenario = { name = "t" }\n'
            'data = { x = { file = "d.npz", key = "x" }, y = { file = "d.npz", key = "y" } }\n'
            'loss = { type = "mse" }\noptimizer = { type = "sgd", lr = 0.1 }\n'
            '[[layers]]\ntype = "linear"\nname = "fc"\nout = 2\n')
    return loads_scenario(text, path=str(tmp_path / "s.toml"), base_dir=str(tmp_path))


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_damaged_files_load_the_same_numbers_or_refuse(tmp_path, save):
    """Every single-byte change and every cut of a valid .npz either loads the very arrays numpy
    reads from the intact file (a byte that changes nothing that matters, such as a timestamp) or is
    refused with a ScenarioError: never other numbers, never another exception."""
    x = np.random.default_rng(5).standard_normal((6, 3))
    y = np.random.default_rng(6).standard_normal((6, 2))
    buf = io.BytesIO()
    save(buf, x=x, y=y)
    good = buf.getvalue()
    rng = random.Random(0)
    cases = [good[:n] for n in sorted(rng.sample(range(len(good)), 40))]
    for pos in rng.sample(range(len(good)), min(len(good), 300)):
        b = bytearray(good)
        b[pos] ^= 1 << rng.randrange(8)
        cases.append(bytes(b))
    loaded = refused = 0
    for raw in cases:
        try:
            sc = _scenario_with(tmp_path, raw)
        except ScenarioError:
            refused += 1
            continue
        assert np.array_equal(sc.x, x) and np.array_equal(sc.y, y)
        loaded += 1
    assert refused > 200 and loaded > 0              # both outcomes were met, so both were checked


def test_not_a_zip_is_named(tmp_path):
    with pytest.raises(ScenarioError, match="not a .npz file"):
        _scenario_with(tmp_path, b"x,y\n1,2\n" * 10)
    with pytest.raises(ScenarioError, match="not a .npz file"):
        _scenario_with(tmp_path, b"")
    assert os.path.exists(tmp_path / "d.npz")
