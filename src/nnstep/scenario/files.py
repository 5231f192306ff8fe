"""Reading the files a scenario names: data (.npz, never with pickle; .csv; seeded random) and
weights. Paths are relative to the scenario's folder and must stay inside it; sizes are checked from
headers before anything is allocated; errors never show a file's content."""
from __future__ import annotations

import math
import os
import stat

import numpy as np

from ..errors import ScenarioError, clean, cut, did_you_mean
from .limits import MAX_CSV_BYTES, MAX_ELEMENTS, MAX_FILE_BYTES
from ..layers.base import fmt_shape as _fmt_shape
from .validate import _show


def data(d, ctx, base: str, npdt, loss, seed: int):
    """[data]: x and y, as arrays (x in the scenario's dtype; y as the loss needs it)."""
    d = ctx.table(d, "data")
    ctx.known(d, ("x", "y"), "data")
    for k in ("x", "y"):
        if k not in d:
            raise ctx.err("data", f"missing key {k}")
    rng = _LazyRng([seed, 1])
    x = _one_data(d["x"], "data.x", ctx, base, rng)
    y = _one_data(d["y"], "data.y", ctx, base, rng)
    if x.ndim == 0:
        raise ctx.err("data.x", "expected an array with a batch dimension [N, ...], got a scalar")
    if y.ndim == 0:
        raise ctx.err("data.y", "expected an array with a batch dimension [N, ...], got a scalar")
    for k, a in (("x", x), ("y", y)):      # a .npz can hold an array of shape [2, 0] or [0, 2]
        if a.size == 0:
            raise ctx.err(f"data.{k}", f"holds no numbers: its shape {_fmt_shape(a.shape)} has a dimension of size 0 "
                                       f"({'no samples' if a.shape[0] == 0 else 'every dimension needs at least 1'})")
    if x.ndim == 1:
        x = x.reshape(-1, 1)
    if x.shape[0] != y.shape[0]:
        raise ctx.err("data.y", f"has {y.shape[0]} samples but data.x has {x.shape[0]} "
                                f"(x {_fmt_shape(x.shape)}, y {_fmt_shape(y.shape)})")
    x = cast(ctx, "data.x", x, npdt, "")
    # targets are cast to the scenario's dtype so float32 stays float32; cross_entropy's are
    # settled in _check_target (class indices become integers, probabilities the dtype)
    yc = cast(ctx, "data.y", y, npdt, "")
    if loss.type not in ("cross_entropy", "nll"):
        y = yc
    return x, y


class _LazyRng:
    """default_rng(seed), made at its first draw: data read from files needs no numpy.random."""

    def __init__(self, seed):
        self._seed, self._rng = seed, None

    def __getattr__(self, name):
        if self._rng is None:
            self._rng = np.random.default_rng(self._seed)
        return getattr(self._rng, name)


def _one_data(v, where, ctx, base: str, rng) -> np.ndarray:
    if isinstance(v, dict):
        if "file" in v:
            return _file_data(v, where, ctx, base)
        if "random" in v:
            return _random_data(v, where, ctx, rng)
        raise ctx.err(where, 'expected an array, { file = "..." } or { random = "normal", shape = [...] }')
    return ctx.array(v, where)


def _resolve(ctx, where, base, f):
    """A data or weights file named in the scenario: relative to the scenario's folder and inside
    it (after following symlinks), a regular file, not too large. A shared scenario cannot read
    files elsewhere on the reader's machine (docs/errors.md, "Files")."""
    f = ctx.str_(f, where)
    shown = cut(clean(f))
    if "\x00" in f:
        raise ctx.err(where, "file name contains a NUL byte")
    if not f.strip():
        raise ctx.err(where, "expected a file name, got an empty string")
    if os.path.isabs(f) or f.startswith("~"):
        raise ctx.err(where, f'"{shown}": an absolute path; data files must be given relative to the scenario '
                             f"file, in its folder or below")
    root = os.path.realpath(base)
    p = os.path.join(base, f)
    real = os.path.realpath(p)
    if os.path.commonpath([root, real]) != root:
        raise ctx.err(where, f'"{shown}" is outside the scenario\'s folder; data files must be in the folder of '
                             f"the scenario file or below it (copy the file there)")
    check_file(ctx, where, p, f'"{shown}"', missing=" (paths are relative to the scenario file)")
    ctx.files[where] = p
    return shown, p


def check_file(ctx, where, p: str, name: str = "", missing: str = "", directory: str = "") -> None:
    """Every file nnstep reads as data passes here before it is opened (the scenario's data and
    weights files, the .npz of `compare` and `--compare`): it exists, is a regular file (a
    directory, a FIFO or a device such as /dev/zero is refused unopened: reading one could block
    forever or never end), holds at most MAX_FILE_BYTES, and may be read. ``name`` is the file as
    the message quotes it ("" where the location names it already); ``missing`` and
    ``directory`` end those two messages."""
    q = f"{name} " if name else ""
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise ctx.err(where, f"no such file{' ' + name if name else ''}{missing}") from None
    except OSError as e:
        raise ctx.err(where, f"cannot read{' ' + name if name else ''}: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ctx.err(where, f"{q}is a directory{directory}")
    if not stat.S_ISREG(st.st_mode):
        raise ctx.err(where, f"{q}is not a regular file")
    if st.st_size > MAX_FILE_BYTES:
        raise ctx.err(where, f"{q}is too large ({st.st_size} bytes, the limit is {MAX_FILE_BYTES})")
    if not os.access(p, os.R_OK):
        raise ctx.err(where, f"cannot read{' ' + name if name else ''}: permission denied")


def _file_data(v, where, ctx, base: str) -> np.ndarray:
    f, p = _resolve(ctx, f"{where}.file", base, v["file"])
    if p.lower().endswith(".npz"):
        ctx.known(v, ("file", "key"), where)
        key = ctx.str_(v.get("key", where.rsplit(".", 1)[-1]), f"{where}.key")
        arr = _npz_array(ctx, f"{where}.file", f, p, key, f"{where}.key")
    elif p.lower().endswith((".csv", ".txt")):
        ctx.known(v, ("file", "columns", "header"), where)
        arr = _csv(ctx, where, f, p, v)
    else:
        raise ctx.err(f"{where}.file", f'"{f}": expected a .npz or .csv file')
    if arr.dtype.kind not in "biuf":
        raise ctx.err(f"{where}.file", f'"{f}": expected numbers, got an array of dtype {arr.dtype}')
    return arr.astype(np.int64) if arr.dtype.kind in "biu" else arr.astype(np.float64)


class _NpzRefused(Exception):
    pass


def _npz_header(zf, member: str):
    """(shape, dtype) of a .npy member, read from its header alone: nothing is allocated or
    unpickled before the array is known to be numbers of an acceptable size."""
    from numpy.lib import format as npf

    with zf.open(member) as fh:
        version = npf.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = npf.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _, dtype = npf.read_array_header_2_0(fh)
        else:
            raise _NpzRefused(f"uses .npy format version {version[0]}.{version[1]}, which nnstep does not read")
    return tuple(shape), dtype


def _zip_errors() -> tuple[type[BaseException], ...]:
    """What zipfile raises for a damaged archive: besides its own errors, a flipped bit can name an
    unknown compression method (NotImplementedError), set the encryption flag (RuntimeError: a
    password is required) or break the deflate stream (zlib.error)."""
    import zipfile
    import zlib
    return (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, zlib.error)


def _npz_open(ctx, where, f, p):
    """The .npz archive at ``p``, by the standard library's zipfile (imported here, ~8 ms, only for
    a scenario that names a .npz: measured with whole processes, `run --steps 1` on .npz data and
    weights stays within the start-up target with it, docs/internals.md); the arrays in it are
    read by numpy.lib.format without pickle (_npz_load). tests/scenario/test_npz_reading.py fuzzes
    both with hypothesis."""
    import zipfile

    try:
        zf = zipfile.ZipFile(p)
    except OSError as e:
        raise ctx.err(where, f'cannot read "{f}": {e.strerror or e}') from None
    except (EOFError, ValueError) + _zip_errors():
        raise ctx.err(where, f'"{f}" is not a .npz file (not a zip archive as numpy.savez writes)') from None
    return zf


def _npz_load(ctx, where, f, zf, key: str) -> np.ndarray:
    """One array of an open .npz, checked from its header first: numbers only (never pickle), at
    most MAX_ELEMENTS elements."""
    member = key + ".npy"
    try:
        try:
            shape, dtype = _npz_header(zf, member)
        except _NpzRefused as e:
            raise ctx.err(where, f'"{f}": array {_show(key)} {e}') from None
        if dtype.hasobject:
            raise ctx.err(where, f'"{f}": array {_show(key)} holds Python objects, which nnstep never loads '
                                 f"(it would need pickle)")
        if dtype.kind not in "biuf":
            raise ctx.err(where, f'"{f}": array {_show(key)} has dtype {clean(str(dtype))}, expected numbers')
        n = math.prod(shape)
        if n > MAX_ELEMENTS:
            raise ctx.err(where, f'"{f}": array {_show(key)} of shape {_fmt_shape(shape)} has {_show(n)} elements, '
                                 f"over the limit of {MAX_ELEMENTS}")
        info = zf.getinfo(member)
        if info.file_size > n * dtype.itemsize + 65536:
            raise ctx.err(where, f'"{f}": array {_show(key)} is larger than its header says')
        with zf.open(member) as fh:
            from numpy.lib import format as npf
            arr = npf.read_array(fh, allow_pickle=False)
    except ScenarioError:
        raise
    except (OSError, ValueError, EOFError, KeyError, TypeError, SyntaxError) + _zip_errors() as e:
        raise ctx.err(where, f'"{f}": array {_show(key)} is damaged ({type(e).__name__})') from None
    return arr


def _npz_keys(zf) -> list[str]:
    return [n[:-4] for n in zf.namelist() if n.endswith(".npy")]


def _npz_array(ctx, where, f, p, key, keywhere):
    zf = _npz_open(ctx, where, f, p)
    with zf:
        keys = _npz_keys(zf)
        if key not in keys:
            raise ctx.err(keywhere, f'"{f}" has no array {_show(key)}{did_you_mean(key, keys)}')
        return _npz_load(ctx, where, f, zf, key)


def _csv(ctx, where, f, p, v) -> np.ndarray:
    """Comma-separated numbers. Errors give line and column numbers, never the file's text: a
    scenario must not be able to show a file's content by naming it as data."""
    import array as _array

    header = v.get("header")
    if header is not None:
        ctx.bool_(header, f"{where}.header")
    if os.path.getsize(p) > MAX_CSV_BYTES:
        raise ctx.err(f"{where}.file", f'"{f}" is too large for a .csv ({os.path.getsize(p)} bytes, the limit is '
                                       f"{MAX_CSV_BYTES}; use a .npz file)")
    try:
        with open(p, "rb") as fh:
            raw = fh.read(min(os.fstat(fh.fileno()).st_size, MAX_CSV_BYTES) + 1)
    except OSError as e:
        raise ctx.err(f"{where}.file", f'cannot read "{f}": {e.strerror or e}') from None
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if b"\x00" in raw:
        raise ctx.err(f"{where}.file", f'"{f}" is a binary file, not comma-separated text')
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ctx.err(f"{where}.file", f'"{f}" is not UTF-8 text (byte {e.start})') from None
    del raw
    flat = _array.array("d")
    ncols = None
    first = True
    for lineno, ln in enumerate(text.splitlines(), 1):
        s = ln.strip()
        if not s or s.startswith("#"):
            continue
        cells = s.split(",")
        vals = []
        for col, c in enumerate(cells, 1):
            try:
                x = float(c)
            except ValueError:
                x = None
            if x is None or not math.isfinite(x):
                if first and header is not False and x is None:
                    break                             # a header line
                what = "an empty cell" if not c.strip() else ("not a finite number" if x is not None
                                                            else "not a number")
                raise ctx.err(f"{where}.file", f'"{f}" line {lineno}, column {col}: {what}')
            vals.append(x)
        else:
            if first and header is True:
                first = False
                continue
            first = False
            if ncols is None:
                ncols = len(vals)
            elif len(vals) != ncols:
                raise ctx.err(f"{where}.file", f'"{f}" line {lineno}: {len(vals)} column{"s" if len(vals) != 1 else ""}, expected {ncols} '
                                               f"(like the first row)")
            flat.extend(vals)
            if len(flat) > MAX_ELEMENTS:
                raise ctx.err(f"{where}.file", f'"{f}" has more than {MAX_ELEMENTS} numbers, over the limit')
            continue
        first = False                                  # the header line was skipped
    if ncols is None:
        raise ctx.err(f"{where}.file", f'"{f}" holds no rows of numbers')
    a = np.frombuffer(flat, dtype=np.float64).reshape(-1, ncols).copy()
    if "columns" in v:
        cols = v["columns"]
        if not isinstance(cols, list) or not cols:
            raise ctx.err(f"{where}.columns", "expected a non-empty array of column indices")
        for i, c in enumerate(cols):
            ctx.int_(c, f"{where}.columns[{i}]", -a.shape[1], a.shape[1] - 1,
                     f"a column index below {a.shape[1]}")
        a = a[:, cols]
    if a.shape[1] == 1:
        a = a[:, 0]
    return a


def _random_data(v, where, ctx, rng) -> np.ndarray:
    kind = ctx.str_(v["random"], f"{where}.random", ("normal", "uniform", "integers"))
    extra = {"normal": ("mean", "std"), "uniform": ("low", "high"), "integers": ("low", "high")}[kind]
    ctx.known(v, ("random", "shape") + extra, where)
    if "shape" not in v:
        raise ctx.err(where, "missing key shape (for example shape = [16, 3])")
    shp = v["shape"]
    if not isinstance(shp, list) or not shp:
        raise ctx.err(f"{where}.shape", f"expected an array of positive integers, got {_show(shp)}")
    shape = tuple(ctx.posint(s, f"{where}.shape[{i}]") for i, s in enumerate(shp))
    n = math.prod(shape)
    if n > MAX_ELEMENTS:
        raise ctx.err(f"{where}.shape", f"{_fmt_shape(shape)} is {_show(n)} elements, over the limit of {MAX_ELEMENTS}")
    if kind == "normal":
        mean = ctx.num(v.get("mean", 0.0), f"{where}.mean")
        std = ctx.num(v.get("std", 1.0), f"{where}.std", 0.0, desc="a non-negative number")
        if abs(mean) > 1e300 or std > 1e300:
            raise ctx.err(where, "mean and std must be at most 1e300 in size")
        return rng.normal(mean, std, size=shape)
    if kind == "uniform":
        lo = ctx.num(v.get("low", 0.0), f"{where}.low")
        hi = ctx.num(v.get("high", 1.0), f"{where}.high")
        if hi < lo:
            raise ctx.err(f"{where}.high", f"must be at least low ({lo:g}), got {hi:g}")
        if not math.isfinite(hi - lo):
            raise ctx.err(where, f"the range [{lo:g}, {hi:g}) is too wide to draw from")
        return rng.uniform(lo, hi, size=shape)
    if "high" not in v:
        raise ctx.err(where, "missing key high (integers are drawn from [low, high))")
    lo = ctx.int_(v.get("low", 0), f"{where}.low", -2**53, 2**53, "an integer of at most 2^53 in size")
    hi = ctx.int_(v["high"], f"{where}.high", -2**53, 2**53, "an integer of at most 2^53 in size")
    if hi <= lo:
        raise ctx.err(f"{where}.high", f"must be above low ({lo}), got {hi}")
    return rng.integers(lo, hi, size=shape)


# --- layers --------------------------------------------------------------------------------------


def weights_file(ctx, v, base, layers, initial, npdt, states=None):
    """Read the weights file into ``initial``; a layer's persistent state (batchnorm's
    ``running_mean`` and ``running_var``, as `nnstep import` writes them from a trained model) into
    ``states``, by the same names. A state key of no such layer is skipped, as torch's
    state_dict holds them (and num_batches_tracked) beside the parameters."""
    from ..layers import registry

    f, p = _resolve(ctx, "scenario.weights", base, v)
    if not p.lower().endswith(".npz"):
        raise ctx.err("scenario.weights", f'"{f}": expected a .npz file (as written by nnstep run --save or numpy.savez)')
    known = {f"{s.name}.{pn}": s for s in layers for pn in s.params}
    held = {f"{s.name}.{st}": s for s in layers if registry.layer_type(s.type).states
            for st in registry.layer_type(s.type).states}
    zf = _npz_open(ctx, "scenario.weights", f, p)
    with zf:
        for key in _npz_keys(zf):
            if key in held and states is not None:
                a = _npz_load(ctx, "scenario.weights", f, zf, key)
                s = held[key]
                want = (s.in_shape[0],)           # one value per channel (batchnorm's running statistics)
                if a.shape != want:
                    raise ctx.err("scenario.weights", f'"{f}": {_show(key)} has shape {_fmt_shape(a.shape)}, the '
                                                      f"network needs {_fmt_shape(want)}")
                states[key] = cast(ctx, "scenario.weights", a, npdt, f'"{f}": {_show(key)} ')
                continue
            if key.endswith("num_batches_tracked") or key.endswith(".running_mean") or key.endswith(".running_var"):
                continue
            if key not in known:
                raise ctx.err("scenario.weights", f'"{f}" holds {_show(key)}, which is no parameter of this '
                                                  f"network{did_you_mean(key, known)}")
            a = _npz_load(ctx, "scenario.weights", f, zf, key)
            if a.shape != initial[key].shape:
                raise ctx.err("scenario.weights", f'"{f}": {_show(key)} has shape {_fmt_shape(a.shape)}, the network '
                                                  f"needs {_fmt_shape(initial[key].shape)}")
            a = cast(ctx, "scenario.weights", a, npdt, f'"{f}": {_show(key)} ')
            initial[key] = a


def cast(ctx, where, a: np.ndarray, npdt, what: str) -> np.ndarray:
    """``a`` in the scenario's dtype; refuses NaN/Inf and values float32 cannot hold."""
    with np.errstate(all="ignore"):
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise ctx.err(where, f"{what}contains a non-finite number (nan or inf)")
        b = a.astype(npdt)
        if b.dtype.kind == "f" and not np.isfinite(b).all():
            big = float(np.max(np.abs(a.astype(np.float64))))
            raise ctx.err(where, f"{what}holds {big:g}, too large for {npdt} "
                                 f"(at most {float(np.finfo(npdt).max):.4g})")
    return b


# --- names, breakpoints, expectations ------------------------------------------------------------
