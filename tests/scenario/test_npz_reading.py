"""Reading .npz files (scenario/files.py): the standard library's zipfile for the archive and
numpy.lib.format, without pickle, for each array. What numpy.savez and savez_compressed write, and
any other zip numpy.load reads, loads the very arrays numpy reads; a damaged or hostile file, found
by hand-picked cuts and bit flips and by hypothesis, loads those same arrays or is refused with a
ScenarioError: never other numbers, never another exception."""
import io
import os
import random
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nnstep import ScenarioError, loads_scenario

ARRAYS = {"w": np.random.default_rng(3).standard_normal((12, 5)), "i": np.arange(7), "s.x": np.float32(2.5)}


def _zip(path, members, compression=zipfile.ZIP_STORED, comment=b""):
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        for name, arr in members.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arr), allow_pickle=False)
            z.writestr(name, buf.getvalue())
        z.comment = comment


def _scenario_with(tmp_path, raw: bytes | None = None, x="x", y="y"):
    if raw is not None:
        (tmp_path / "d.npz").write_bytes(raw)
    text = ('scenario = { name = "t" }\n'
            f'data = {{ x = {{ file = "d.npz", key = "{x}" }}, y = {{ file = "d.npz", key = "{y}" }} }}\n'
            'loss = { type = "mse" }\noptimizer = { type = "sgd", lr = 0.1 }\n'
            '[[layers]]\ntype = "linear"\nname = "fc"\nout = 2\n')
    return loads_scenario(text, path=str(tmp_path / "s.toml"), base_dir=str(tmp_path))


X = np.random.default_rng(5).standard_normal((6, 3))
Y = np.random.default_rng(6).standard_normal((6, 2))


def _saved(save) -> bytes:
    buf = io.BytesIO()
    save(buf, x=X, y=Y)
    return buf.getvalue()


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_reads_what_numpy_writes(tmp_path, save):
    sc = _scenario_with(tmp_path, _saved(save))
    assert np.array_equal(sc.x, X) and np.array_equal(sc.y, Y)


@pytest.mark.parametrize("kind", ["bzip2", "lzma", "comment", "zip64"])
def test_other_zips_read_the_same(tmp_path, kind):
    p = tmp_path / "d.npz"
    members = {"x.npy": X, "y.npy": Y}
    if kind == "bzip2":
        _zip(p, members, zipfile.ZIP_BZIP2)
    elif kind == "lzma":
        _zip(p, members, zipfile.ZIP_LZMA)
    elif kind == "comment":
        _zip(p, members, comment=b"written by hand")
    else:
        with zipfile.ZipFile(p, "w") as z:
            for name, arr in members.items():
                with z.open(name, "w", force_zip64=True) as fh:
                    np.lib.format.write_array(fh, arr, allow_pickle=False)
    ref = np.load(p, allow_pickle=False)
    sc = _scenario_with(tmp_path)
    assert np.array_equal(sc.x, ref["x"]) and np.array_equal(sc.y, ref["y"])


def test_a_name_that_is_not_ascii(tmp_path):
    _zip(tmp_path / "d.npz", {"gewicht\u00e4.npy": X, "y.npy": Y})
    sc = _scenario_with(tmp_path, x="gewicht\u00e4")
    assert np.array_equal(sc.x, X)


def _loads_the_same_or_refuses(tmp_path, raw: bytes) -> bool:
    """True if ``raw`` loads X and Y exactly, False if it is refused; anything else fails."""
    try:
        sc = _scenario_with(tmp_path, raw)
    except ScenarioError as e:
        assert str(e).startswith(str(tmp_path / "s.toml")) and "\n" not in str(e)
        return False
    assert np.array_equal(sc.x, X) and np.array_equal(sc.y, Y)
    return True


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_damaged_files_load_the_same_numbers_or_refuse(tmp_path, save):
    """Every cut and single-bit flip of a sample of places either loads the very arrays (a byte
    that changes nothing that matters, such as a timestamp) or is refused."""
    good = _saved(save)
    rng = random.Random(0)
    cases = [good[:n] for n in sorted(rng.sample(range(len(good)), 40))]
    for pos in rng.sample(range(len(good)), min(len(good), 300)):
        b = bytearray(good)
        b[pos] ^= 1 << rng.randrange(8)
        cases.append(bytes(b))
    outcomes = [_loads_the_same_or_refuses(tmp_path, raw) for raw in cases]
    assert outcomes.count(False) > 200 and outcomes.count(True) > 0   # both outcomes met, so both checked


GOOD = {"savez": _saved(np.savez), "savez_compressed": _saved(np.savez_compressed)}


@st.composite
def mangled(draw):
    """A valid .npz with a few edits: bytes overwritten, cut out, inserted or the file cut short."""
    raw = bytearray(GOOD[draw(st.sampled_from(sorted(GOOD)))])
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(raw)))
        kind = draw(st.sampled_from(["set", "delete", "insert", "cut"]))
        if kind == "set" and at < len(raw):
            raw[at] = draw(st.integers(0, 255))
        elif kind == "delete":
            del raw[at:at + draw(st.integers(1, 16))]
        elif kind == "insert":
            raw[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "cut":
            del raw[at:]
    return bytes(raw)


@settings(max_examples=int(os.environ.get("NNSTEP_FUZZ_EXAMPLES", "150")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(raw=st.one_of(mangled(), st.binary(max_size=600)))
def test_fuzzed_files_load_the_same_numbers_or_refuse(tmp_path, raw):
    _loads_the_same_or_refuses(tmp_path, raw)


def test_not_a_zip_is_named(tmp_path):
    with pytest.raises(ScenarioError, match="not a .npz file"):
        _scenario_with(tmp_path, b"x,y\n1,2\n" * 10)
    with pytest.raises(ScenarioError, match="not a .npz file"):
        _scenario_with(tmp_path, b"")
    assert os.path.exists(tmp_path / "d.npz")
