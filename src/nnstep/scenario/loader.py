"""Load and validate a scenario file (SPEC §2) into a :class:`Scenario`.

Every error is a :class:`ScenarioError` naming the file and either ``line:col`` (TOML syntax) or the
key path (``layers[2].out: expected a positive integer, got -3``). Nothing from the file is ever
evaluated, and npz files are read with ``allow_pickle=False``.
"""
from __future__ import annotations

import math
import os
import re
import tomllib
from typing import Any

import numpy as np

from ..errors import ScenarioError, did_you_mean
from ..engine import layers as L
from ..engine.losses import LOSSES
from ..engine.stats import STATS
from .model import (Breakpoint, Condition, Expect, LayerSpec, LossSpec, OptimizerSpec, Scenario,
                    TrainSpec)

# Limits: refuse before allocating anything (docs/errors.md states them).
MAX_ELEMENTS = 50_000_000        # per tensor: 400 MB in float64
MAX_TOTAL_PARAMS = 50_000_000
MAX_STEPS = 10_000_000
MAX_LAYERS = 1000
MAX_FILE_BYTES = 512 * 1024 * 1024

TOP_KEYS = ("scenario", "data", "layers", "loss", "optimizer", "train", "breakpoints", "expect")
STAGES = ("forward", "loss", "backward", "update")
DTYPES = ("float64", "float32")
OPT_KEYS = {"sgd": ("type", "lr", "momentum", "dampening", "nesterov", "weight_decay"),
            "adam": ("type", "lr", "betas", "eps", "weight_decay")}
LOSS_KEYS = {t: ("type", "reduction", "scale") for t in LOSSES}
LOSS_KEYS["smooth_l1"] += ("beta",)
LOSS_KEYS["huber"] += ("delta",)
COMMON_LAYER_KEYS = ("type", "name", "frozen", "weight", "bias", "init", "in")
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
COND_RE = re.compile(r"^\s*(\S+)\s+(\w+)\s*(<=|>=|==|!=|<|>)\s*(\S+)\s*$")


def _tname(v) -> str:
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int):
        return "an integer"
    if isinstance(v, float):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    if isinstance(v, dict):
        return "a table"
    return type(v).__name__


def _show(v) -> str:
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, dict)):
        s = repr(v)
        return s if len(s) <= 40 else _tname(v)
    return repr(v)


class _Ctx:
    """Builds errors that name the file and the key path."""

    def __init__(self, file: str):
        self.file = file

    def err(self, where: str | None, what: str) -> ScenarioError:
        return ScenarioError(what, file=self.file, where=where)

    def table(self, v, where: str) -> dict:
        if not isinstance(v, dict):
            raise self.err(where, f"expected a table, got {_tname(v)}")
        return v

    def known(self, d: dict, allowed, where: str, what: str = "key"):
        for k in d:
            if k not in allowed:
                path = f"{where}.{k}" if where else k
                raise self.err(path, f"unknown {what}{did_you_mean(k, allowed)}")

    def int_(self, v, where, lo=None, hi=None, desc=None):
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.err(where, f"expected {desc or 'an integer'}, got {_tname(v)} {_show(v)}")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise self.err(where, f"expected {desc or 'an integer'}, got {v}")
        return v

    def posint(self, v, where, hi=None):
        return self.int_(v, where, 1, hi, "a positive integer" + (f" (at most {hi})" if hi else ""))

    def nonnegint(self, v, where, hi=None):
        return self.int_(v, where, 0, hi, "a non-negative integer" + (f" (at most {hi})" if hi else ""))

    def num(self, v, where, lo=None, hi=None, desc="a number", lo_open=False):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.err(where, f"expected {desc}, got {_tname(v)} {_show(v)}")
        v = float(v)
        if not math.isfinite(v):
            raise self.err(where, f"expected a finite number, got {v}")
        if lo is not None and (v < lo or (lo_open and v == lo)):
            raise self.err(where, f"expected {desc}, got {v:g}")
        if hi is not None and v > hi:
            raise self.err(where, f"expected {desc}, got {v:g}")
        return v

    def bool_(self, v, where):
        if not isinstance(v, bool):
            raise self.err(where, f"expected true or false, got {_tname(v)} {_show(v)}")
        return v

    def str_(self, v, where, choices=None):
        if not isinstance(v, str):
            raise self.err(where, f"expected a string, got {_tname(v)} {_show(v)}")
        if choices is not None and v not in choices:
            raise self.err(where, f'unknown value "{v}"{did_you_mean(v, choices)}')
        return v

    def array(self, v, where, dtype=np.float64, allow_scalar=False) -> np.ndarray:
        """A rectangular array of numbers from nested TOML arrays."""
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if allow_scalar:
                return np.asarray(v, dtype=dtype)
            raise self.err(where, f"expected an array of numbers, got {_tname(v)} {_show(v)}")
        if not isinstance(v, list):
            raise self.err(where, f"expected an array of numbers, got {_tname(v)} {_show(v)}")
        shape = self._shape_of(v, where)
        n = int(np.prod(shape)) if shape else 1
        if n > MAX_ELEMENTS:
            raise self.err(where, f"{n} elements is over the limit of {MAX_ELEMENTS}")
        flat: list = []
        self._flatten(v, flat, where)
        a = np.asarray(flat, dtype=np.float64)
        if not np.isfinite(a).all():
            raise self.err(where, "contains a non-finite number (nan or inf)")
        return a.reshape(shape).astype(dtype)

    def _shape_of(self, v, where):
        shape = []
        cur = v
        while isinstance(cur, list):
            shape.append(len(cur))
            if not cur:
                break
            cur = cur[0]
        if 0 in shape:
            raise self.err(where, "is an empty array")
        self._check_rect(v, tuple(shape), where, [])
        return tuple(shape)

    def _check_rect(self, v, shape, where, idx):
        if not shape:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                at = "".join(f"[{i}]" for i in idx)
                raise self.err(where + at, f"expected a number, got {_tname(v)} {_show(v)}")
            return
        if not isinstance(v, list) or len(v) != shape[0]:
            at = "".join(f"[{i}]" for i in idx)
            got = f"{len(v)} elements" if isinstance(v, list) else _tname(v)
            raise self.err(where + at, f"ragged array: expected {shape[0]} elements here (like the first row), got {got}")
        for i, e in enumerate(v):
            self._check_rect(e, shape[1:], where, idx + [i])

    def _flatten(self, v, out, where):
        if isinstance(v, list):
            for e in v:
                self._flatten(e, out, where)
        else:
            out.append(v)


def _fmt_shape(s) -> str:
    return "[" + ", ".join(str(d) for d in s) + "]"


def load_scenario(path: str | os.PathLike) -> Scenario:
    path = os.fspath(path)
    try:
        if os.path.isdir(path):
            raise ScenarioError("is a directory, not a scenario file", file=path)
        size = os.path.getsize(path)
        if size > MAX_FILE_BYTES:
            raise ScenarioError(f"file is too large ({size} bytes)", file=path)
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ScenarioError("no such file", file=path) from None
    except PermissionError:
        raise ScenarioError("permission denied", file=path) from None
    except IsADirectoryError:
        raise ScenarioError("is a directory, not a scenario file", file=path) from None
    except OSError as e:
        raise ScenarioError(f"cannot read: {e.strerror or e}", file=path) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ScenarioError(f"not UTF-8 text (byte {e.start}); is this a TOML scenario?", file=path) from None
    return loads_scenario(text, path=path, base_dir=os.path.dirname(os.path.abspath(path)))


def loads_scenario(text: str, path: str = "<string>", base_dir: str | None = None) -> Scenario:
    ctx = _Ctx(path)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        if m:
            what = msg[:m.start()].strip()
            raise ScenarioError(f"TOML syntax: {what}", file=f"{path}:{m.group(1)}:{m.group(2)}") from None
        m = re.search(r"\(at end of document\)", msg)
        lines = text.count("\n") + 1
        raise ScenarioError(f"TOML syntax: {msg.replace('(at end of document)', '').strip()} (at end of file)",
                            file=f"{path}:{lines}:1") from None
    except RecursionError:
        raise ScenarioError("TOML syntax: nested too deeply", file=path) from None
    return _build(doc, ctx, path, base_dir or os.getcwd(), text)


def _build(doc: dict, ctx: _Ctx, path: str, base: str, text: str) -> Scenario:
    if not doc:
        raise ctx.err(None, "empty scenario: it needs at least [data], [[layers]] and [loss]")
    ctx.known(doc, TOP_KEYS, "", "table")
    for req in ("data", "layers", "loss"):
        if req not in doc:
            hint = {"layers": " (add a [[layers]] table)", "data": " (add [data] with x and y)",
                    "loss": ' (add [loss] with type = "mse", for example)'}[req]
            raise ctx.err(None, f"missing [{req}]{hint}")

    # [scenario]
    meta = ctx.table(doc.get("scenario", {}), "scenario")
    ctx.known(meta, ("name", "description", "seed", "dtype", "weights"), "scenario")
    stem = os.path.splitext(os.path.basename(path))[0] if path != "<string>" else "scenario"
    name = ctx.str_(meta.get("name", stem), "scenario.name")
    desc = ctx.str_(meta.get("description", ""), "scenario.description")
    seed = ctx.nonnegint(meta.get("seed", 0), "scenario.seed", 2**63 - 1)
    dtype = ctx.str_(meta.get("dtype", "float64"), "scenario.dtype", DTYPES)
    npdt = np.dtype(dtype)

    # [train] first: its values are needed to check [[expect]] steps
    tr = ctx.table(doc.get("train", {}), "train")
    ctx.known(tr, ("steps", "batch_size", "shuffle"), "train")
    train = TrainSpec(steps=ctx.posint(tr.get("steps", 1), "train.steps", MAX_STEPS),
                      batch_size=ctx.nonnegint(tr.get("batch_size", 0), "train.batch_size"),
                      shuffle=ctx.bool_(tr.get("shuffle", False), "train.shuffle"))

    # [loss]
    lo = ctx.table(doc["loss"], "loss")
    if "type" not in lo:
        raise ctx.err("loss", f"missing key type (one of: {', '.join(LOSSES)})")
    ltype = ctx.str_(lo["type"], "loss.type", LOSSES)
    ctx.known(lo, LOSS_KEYS[ltype], "loss")
    loss = LossSpec(type=ltype, reduction=ctx.str_(lo.get("reduction", "mean"), "loss.reduction", ("mean", "sum")),
                    scale=ctx.num(lo.get("scale", 1.0), "loss.scale"),
                    beta=ctx.num(lo.get("beta", 1.0), "loss.beta", 0.0, desc="a non-negative number"),
                    delta=ctx.num(lo.get("delta", 1.0), "loss.delta", 0.0, desc="a positive number", lo_open=True))

    # [optimizer]
    op = ctx.table(doc.get("optimizer", {"type": "sgd"}), "optimizer")
    otype = ctx.str_(op.get("type", "sgd"), "optimizer.type", tuple(OPT_KEYS))
    ctx.known(op, OPT_KEYS[otype], "optimizer")
    kw: dict[str, Any] = {"type": otype, "lr": ctx.num(op.get("lr", 0.001), "optimizer.lr", 0.0, desc="a non-negative number"),
                          "weight_decay": ctx.num(op.get("weight_decay", 0.0), "optimizer.weight_decay", 0.0,
                                                  desc="a non-negative number")}
    if otype == "sgd":
        kw["momentum"] = ctx.num(op.get("momentum", 0.0), "optimizer.momentum", 0.0, desc="a non-negative number")
        kw["dampening"] = ctx.num(op.get("dampening", 0.0), "optimizer.dampening")
        kw["nesterov"] = ctx.bool_(op.get("nesterov", False), "optimizer.nesterov")
        if kw["nesterov"] and (kw["momentum"] <= 0 or kw["dampening"] != 0):
            raise ctx.err("optimizer.nesterov", "nesterov needs momentum > 0 and dampening = 0 (as torch.optim.SGD)")
    else:
        b = op.get("betas", [0.9, 0.999])
        if not isinstance(b, list) or len(b) != 2:
            raise ctx.err("optimizer.betas", f"expected an array of two numbers, got {_show(b)}")
        kw["betas"] = tuple(ctx.num(v, f"optimizer.betas[{i}]", 0.0, 1.0, "a number in [0, 1)") for i, v in enumerate(b))
        if kw["betas"][0] >= 1 or kw["betas"][1] >= 1:
            raise ctx.err("optimizer.betas", "each beta must be below 1")
        kw["eps"] = ctx.num(op.get("eps", 1e-8), "optimizer.eps", 0.0, desc="a non-negative number")
    optimizer = OptimizerSpec(**kw)

    # [data]
    x, y = _data(doc["data"], ctx, base, npdt, loss, seed)

    # [[layers]]
    layers, initial = _layers(doc["layers"], ctx, x, npdt, seed)
    y = _check_target(ctx, loss, layers, x, y)

    # weights file
    if "weights" in meta:
        _weights_file(ctx, meta["weights"], base, layers, initial, npdt)

    sc = Scenario(path=path, name=name, description=desc, seed=seed, dtype=dtype, x=x, y=y, layers=layers,
                  loss=loss, optimizer=optimizer, train=train, initial=initial, source=text)
    if sc.train.batch_size > sc.n_samples:
        pass  # a batch larger than the data is the whole data, as a DataLoader would give
    names, op_names = _program_names(sc)
    sc.breakpoints = _breakpoints(doc.get("breakpoints", []), ctx, names, op_names)
    sc.expects = _expects(doc.get("expect", []), ctx, names, sc)
    return sc


# --- data ----------------------------------------------------------------------------------------
def _data(d, ctx: _Ctx, base: str, npdt, loss: LossSpec, seed: int):
    d = ctx.table(d, "data")
    ctx.known(d, ("x", "y"), "data")
    for k in ("x", "y"):
        if k not in d:
            raise ctx.err("data", f"missing key {k}")
    rng = np.random.default_rng([seed, 1])
    x = _one_data(d["x"], "data.x", ctx, base, rng)
    y = _one_data(d["y"], "data.y", ctx, base, rng)
    if x.ndim == 0:
        raise ctx.err("data.x", "expected an array with a batch dimension [N, ...], got a scalar")
    if y.ndim == 0:
        raise ctx.err("data.y", "expected an array with a batch dimension [N, ...], got a scalar")
    if x.ndim == 1:
        x = x.reshape(-1, 1)
    if x.shape[0] != y.shape[0]:
        raise ctx.err("data.y", f"has {y.shape[0]} samples but data.x has {x.shape[0]} "
                                f"(x {_fmt_shape(x.shape)}, y {_fmt_shape(y.shape)})")
    if not np.isfinite(x.astype(np.float64)).all():
        raise ctx.err("data.x", "contains a non-finite number (nan or inf)")
    if not np.isfinite(y.astype(np.float64)).all():
        raise ctx.err("data.y", "contains a non-finite number (nan or inf)")
    x = x.astype(npdt)
    # targets are cast to the scenario's dtype so float32 stays float32; cross_entropy's are
    # settled in _check_target (class indices become integers, probabilities the dtype)
    if loss.type != "cross_entropy":
        y = y.astype(npdt)
    return x, y


def _one_data(v, where, ctx: _Ctx, base: str, rng) -> np.ndarray:
    if isinstance(v, dict):
        if "file" in v:
            return _file_data(v, where, ctx, base)
        if "random" in v:
            return _random_data(v, where, ctx, rng)
        raise ctx.err(where, 'expected an array, { file = "..." } or { random = "normal", shape = [...] }')
    return ctx.array(v, where)


def _resolve(ctx, where, base, f):
    f = ctx.str_(f, where)
    if "\x00" in f:
        raise ctx.err(where, "file name contains a NUL byte")
    p = f if os.path.isabs(f) else os.path.join(base, f)
    if not os.path.exists(p):
        raise ctx.err(where, f'no such file "{f}" (paths are relative to the scenario file)')
    if os.path.isdir(p):
        raise ctx.err(where, f'"{f}" is a directory')
    if os.path.getsize(p) > MAX_FILE_BYTES:
        raise ctx.err(where, f'"{f}" is too large ({os.path.getsize(p)} bytes)')
    return f, p


def _file_data(v, where, ctx: _Ctx, base: str) -> np.ndarray:
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


def _npz_array(ctx, where, f, p, key, keywhere):
    import zipfile

    try:
        with np.load(p, allow_pickle=False) as z:
            if key not in z.files:
                raise ctx.err(keywhere, f'"{f}" has no array "{key}"{did_you_mean(key, z.files)}')
            try:
                arr = z[key]
            except ValueError as e:
                raise ctx.err(where, f'"{f}": array "{key}" holds Python objects, which nnstep never loads '
                                     f"(it would need pickle)") from None
    except ScenarioError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as e:
        raise ctx.err(where, f'"{f}" is not a readable .npz file ({type(e).__name__}: {e})') from None
    if arr.size > MAX_ELEMENTS:
        raise ctx.err(where, f"{arr.size} elements is over the limit of {MAX_ELEMENTS}")
    return arr


def _csv(ctx, where, f, p, v) -> np.ndarray:
    header = v.get("header")
    if header is not None:
        ctx.bool_(header, f"{where}.header")
    try:
        with open(p, encoding="utf-8") as fh:
            lines = [ln for ln in fh.read().splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise ctx.err(f"{where}.file", f'cannot read "{f}": {e}') from None
    rows = []
    first = True
    for lineno, ln in enumerate(lines, 1):
        s = ln.strip()
        if not s or s.startswith("#"):
            continue
        cells = [c.strip() for c in s.split(",")]
        try:
            vals = [float(c) for c in cells]
        except ValueError:
            if first and header is not False:
                first = False
                continue                              # a header line
            raise ctx.err(f"{where}.file", f'"{f}" line {lineno}: not a number in {s[:60]!r}') from None
        if first and header is True:
            first = False
            continue
        first = False
        if rows and len(vals) != len(rows[0]):
            raise ctx.err(f"{where}.file", f'"{f}" line {lineno}: {len(vals)} columns, expected {len(rows[0])}')
        rows.append(vals)
    if not rows:
        raise ctx.err(f"{where}.file", f'"{f}" holds no rows of numbers')
    a = np.asarray(rows, dtype=np.float64)
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
    if np.all(a == np.round(a)) and "columns" in v and a.ndim == 1:
        pass
    return a


def _random_data(v, where, ctx: _Ctx, rng) -> np.ndarray:
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
        raise ctx.err(f"{where}.shape", f"{_fmt_shape(shape)} is {n} elements, over the limit of {MAX_ELEMENTS}")
    if kind == "normal":
        mean = ctx.num(v.get("mean", 0.0), f"{where}.mean")
        std = ctx.num(v.get("std", 1.0), f"{where}.std", 0.0, desc="a non-negative number")
        return rng.normal(mean, std, size=shape)
    if kind == "uniform":
        lo = ctx.num(v.get("low", 0.0), f"{where}.low")
        hi = ctx.num(v.get("high", 1.0), f"{where}.high")
        if hi < lo:
            raise ctx.err(f"{where}.high", f"must be at least low ({lo:g}), got {hi:g}")
        return rng.uniform(lo, hi, size=shape)
    if "high" not in v:
        raise ctx.err(where, "missing key high (integers are drawn from [low, high))")
    lo = ctx.int_(v.get("low", 0), f"{where}.low")
    hi = ctx.int_(v["high"], f"{where}.high")
    if hi <= lo:
        raise ctx.err(f"{where}.high", f"must be above low ({lo}), got {hi}")
    return rng.integers(lo, hi, size=shape)


# --- layers --------------------------------------------------------------------------------------
def _layers(v, ctx: _Ctx, x: np.ndarray, npdt, seed: int):
    if not isinstance(v, list) or not v:
        raise ctx.err("layers", "expected at least one [[layers]] table")
    if len(v) > MAX_LAYERS:
        raise ctx.err("layers", f"{len(v)} layers is over the limit of {MAX_LAYERS}")
    rng = np.random.default_rng([seed, 0])
    counts: dict[str, int] = {}
    names: dict[str, int] = {}
    specs: list[LayerSpec] = []
    initial: dict[str, np.ndarray] = {}
    shape = tuple(x.shape[1:])
    total = 0
    for i, raw in enumerate(v):
        where = f"layers[{i}]"
        t = ctx.table(raw, where)
        if "type" not in t:
            raise ctx.err(where, f"missing key type (one of: {', '.join(L.LAYERS)})")
        typ = ctx.str_(t["type"], f"{where}.type", tuple(L.LAYERS))
        cls = L.LAYERS[typ]
        allowed = COMMON_LAYER_KEYS + tuple(cls.options)
        if not cls.param_names:
            allowed = tuple(k for k in allowed if k not in ("weight", "bias", "init", "frozen"))
        ctx.known(t, allowed, where)
        counts[typ] = counts.get(typ, 0) + 1
        name = t.get("name", f"{typ}{counts[typ]}")
        ctx.str_(name, f"{where}.name")
        if not NAME_RE.match(name):
            raise ctx.err(f"{where}.name", f'"{name}" is not a valid layer name (letters, digits and _, not starting with a digit)')
        if name in names:
            raise ctx.err(f"{where}.name", f'duplicate layer name "{name}" (layers[{names[name]}] has it too)')
        if name in ("input", "target", "loss"):
            raise ctx.err(f"{where}.name", f'"{name}" is reserved for a tensor name')
        names[name] = i
        opts = {}
        for k, (default, kind) in cls.options.items():
            if k in t:
                opts[k] = _opt(ctx, t[k], f"{where}.{k}", kind)
            elif default is None:
                raise ctx.err(where, f"missing key {k} (a {typ} layer needs it)")
            else:
                opts[k] = default
        prev = "the data" if i == 0 else f"layers[{i - 1}] ({specs[-1].name})"
        if "in" in t:
            given = t["in"]
            want = shape[0] if typ not in ("linear",) else (shape[-1] if shape else None)
            gin = ctx.posint(given, f"{where}.in")
            if want != gin:
                raise ctx.err(f"{where}.in", f"is {gin} but {prev} gives per-sample shape {_fmt_shape(shape)} "
                                             f"(so in = {want})")
        try:
            layer = cls(name, opts, shape)
        except L.ShapeError as e:
            raise ctx.err(where, f"{name} ({typ}) cannot take the output of {prev}, per-sample shape "
                                 f"{_fmt_shape(shape)}: {e}") from None
        pshapes = dict(layer.param_shapes)
        present = list(pshapes)
        bias_v = t.get("bias")
        if bias_v is False and "bias" in pshapes:
            present.remove("bias")
        elif isinstance(bias_v, bool):
            if bias_v is not True or "bias" not in pshapes:
                raise ctx.err(f"{where}.bias", f"expected an array of numbers or false, got {_show(bias_v)}")
        init = ctx.str_(t.get("init", "kaiming_uniform"), f"{where}.init", L.INITS)
        for p in present:
            n = math.prod(pshapes[p])
            total += n
            if n > MAX_ELEMENTS or total > MAX_TOTAL_PARAMS:
                raise ctx.err(where, f"{name}.{p} of shape {_fmt_shape(pshapes[p])} would take the parameter "
                                     f"count to {total}, over the limit of {MAX_TOTAL_PARAMS}")
        for p in present:
            full = f"{name}.{p}"
            if p in t and t[p] is not True:
                a = ctx.array(t[p], f"{where}.{p}")
                if a.shape != tuple(pshapes[p]):
                    lay = {"linear": " (out, in)", "conv1d": " (out_channels, in_channels, kernel)",
                           "conv2d": " (out_channels, in_channels, kh, kw)"}.get(typ, "") if p == "weight" else ""
                    raise ctx.err(f"{where}.{p}", f"expected shape {_fmt_shape(pshapes[p])}{lay}, got {_fmt_shape(a.shape)}")
                initial[full] = a.astype(npdt)
            else:
                initial[full] = layer.default_init(p, pshapes[p], rng, init).astype(npdt)
        frozen = t.get("frozen", [])
        if isinstance(frozen, str):
            frozen = [frozen]
        if not isinstance(frozen, list):
            raise ctx.err(f"{where}.frozen", f"expected an array of parameter names, got {_show(frozen)}")
        for j, fz in enumerate(frozen):
            ctx.str_(fz, f"{where}.frozen[{j}]", tuple(present))
        n_out = math.prod(layer.out_shape)
        if n_out * max(1, x.shape[0]) > MAX_ELEMENTS:
            raise ctx.err(where, f"the output {_fmt_shape((x.shape[0],) + tuple(layer.out_shape))} has "
                                 f"{n_out * x.shape[0]} elements, over the limit of {MAX_ELEMENTS}")
        specs.append(LayerSpec(index=i, type=typ, name=name, options=opts, in_shape=shape,
                               out_shape=tuple(layer.out_shape), params=tuple(present), frozen=tuple(frozen)))
        shape = tuple(layer.out_shape)
    return specs, initial


def _opt(ctx: _Ctx, v, where, kind):
    if kind == "posint":
        return ctx.posint(v, where)
    if kind == "posfloat":
        return ctx.num(v, where, 0.0, desc="a positive number", lo_open=True)
    if kind == "prob":
        return ctx.num(v, where, 0.0, 1.0, "a number in [0, 1]")
    if kind == "float":
        return ctx.num(v, where)
    if kind == "bool":
        return ctx.bool_(v, where)
    if kind in ("posints", "nonnegints"):
        check = ctx.posint if kind == "posints" else ctx.nonnegint
        if isinstance(v, list):
            if not v or len(v) > 2:
                raise ctx.err(where, f"expected an integer or a list of 1 or 2 integers, got {_show(v)}")
            return [check(e, f"{where}[{j}]") for j, e in enumerate(v)]
        return check(v, where)
    if kind.startswith("choice:"):
        return ctx.str_(v, where, tuple(kind[7:].split("|")))
    raise AssertionError(kind)


def _check_target(ctx: _Ctx, loss: LossSpec, layers: list[LayerSpec], x, y):
    last = layers[-1]
    pred = (x.shape[0],) + tuple(last.out_shape)
    who = f"layers[{last.index}] ({last.name})"
    if loss.type == "cross_entropy":
        if len(pred) < 2:
            raise ctx.err("loss.type", f"cross_entropy needs logits [N, C] but {who} gives {_fmt_shape(pred)}")
        C = pred[1]
        class_shape = (pred[0],) + pred[2:]
        if y.shape == class_shape:
            yf = y.astype(np.float64)
            if not np.all(yf == np.round(yf)):
                raise ctx.err("data.y", "cross_entropy class indices must be whole numbers")
            if yf.min() < 0 or yf.max() >= C:
                bad = yf.min() if yf.min() < 0 else yf.max()
                raise ctx.err("data.y", f"class index {int(bad)} is out of range: {who} gives {C} classes (0 to {C - 1})")
            return y.astype(np.int64)
        if y.shape == pred:
            if y.min() < 0 or y.max() > 1:
                raise ctx.err("data.y", "cross_entropy class probabilities must lie in [0, 1]")
            return y.astype(x.dtype)
        raise ctx.err("data.y", f"cross_entropy needs class indices of shape {_fmt_shape(class_shape)} or "
                                f"probabilities of shape {_fmt_shape(pred)}, got {_fmt_shape(y.shape)}")
    if y.shape != pred:
        if y.ndim == 1 and len(pred) == 2 and pred[1] == 1:
            # one target per sample for a one-output net: read as a column, [N] -> [N, 1] (torch
            # would broadcast [N] against [N, 1] to [N, N], a classic silent bug)
            return _check_target(ctx, loss, layers, x, y.reshape(-1, 1))
        raise ctx.err("data.y", f"targets of shape {_fmt_shape(y.shape)} do not fit the output of {who}, "
                                f"{_fmt_shape(pred)} ({loss.type} compares them element by element)")
    if loss.type in ("bce", "bce_with_logits"):
        yf = y.astype(np.float64)
        if yf.min() < 0 or yf.max() > 1:
            bad = yf.min() if yf.min() < 0 else yf.max()
            raise ctx.err("data.y", f"{loss.type} targets must lie in [0, 1], got {bad:g}")
    return y


def _weights_file(ctx: _Ctx, v, base, layers, initial, npdt):
    f, p = _resolve(ctx, "scenario.weights", base, v)
    if not p.lower().endswith(".npz"):
        raise ctx.err("scenario.weights", f'"{f}": expected a .npz file (as written by nnstep run --save or numpy.savez)')
    import zipfile

    known = {f"{s.name}.{pn}": s for s in layers for pn in s.params}
    try:
        with np.load(p, allow_pickle=False) as z:
            for key in z.files:
                if key.endswith("num_batches_tracked") or key.endswith(".running_mean") or key.endswith(".running_var"):
                    continue
                if key not in known:
                    raise ctx.err("scenario.weights", f'"{f}" holds "{key}", which is no parameter of this '
                                                      f"network{did_you_mean(key, known)}")
                try:
                    a = z[key]
                except ValueError:
                    raise ctx.err("scenario.weights", f'"{f}": array "{key}" holds Python objects, which nnstep '
                                                      f"never loads (it would need pickle)") from None
                if a.dtype.kind not in "biuf":
                    raise ctx.err("scenario.weights", f'"{f}": "{key}" has dtype {a.dtype}, expected numbers')
                if a.shape != initial[key].shape:
                    raise ctx.err("scenario.weights", f'"{f}": "{key}" has shape {_fmt_shape(a.shape)}, the network '
                                                      f"needs {_fmt_shape(initial[key].shape)}")
                if not np.isfinite(a).all():
                    raise ctx.err("scenario.weights", f'"{f}": "{key}" contains a non-finite number')
                initial[key] = a.astype(npdt)
    except ScenarioError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as e:
        raise ctx.err("scenario.weights", f'"{f}" is not a readable .npz file ({type(e).__name__}: {e})') from None


# --- names, breakpoints, expectations ------------------------------------------------------------
def _program_names(sc: Scenario):
    from ..engine.program import Program

    prog = Program(sc)
    names = {"input", "target"}
    for op in prog.ops:
        names.update(op.inputs)
        names.update(op.outputs)
        names.update(op.also_writes)
    return names, [op.name for op in prog.ops]


def parse_condition(text: str, ctx: _Ctx, where: str, names) -> Condition:
    if not isinstance(text, str):
        raise ctx.err(where, f"expected a string, got {_tname(text)} {_show(text)}")
    if text.strip() == "nonfinite":
        return Condition(kind="nonfinite", text="nonfinite")
    m = COND_RE.match(text)
    if not m:
        raise ctx.err(where, f'malformed condition "{text}": expected "<tensor> <stat> <op> <number>" '
                             f'(for example "linear1.weight.grad norm > 10") or "nonfinite"')
    tensor, st, op, num = m.groups()
    if tensor not in names:
        raise ctx.err(where, f'unknown tensor "{tensor}"{did_you_mean(tensor, names)}')
    if st not in STATS:
        raise ctx.err(where, f'unknown statistic "{st}"{did_you_mean(st, STATS)}')
    try:
        number = float(num)
    except ValueError:
        raise ctx.err(where, f'"{num}" is not a number') from None
    if math.isnan(number):
        raise ctx.err(where, "the number cannot be nan")
    return Condition(kind="compare", tensor=tensor, stat=st, op=op, number=number, text=text.strip())


def _breakpoints(v, ctx: _Ctx, names, op_names) -> list[Breakpoint]:
    if not isinstance(v, list):
        raise ctx.err("breakpoints", "expected [[breakpoints]] tables")
    out = []
    for i, b in enumerate(v):
        where = f"breakpoints[{i}]"
        b = ctx.table(b, where)
        ctx.known(b, ("op", "stage", "when"), where)
        given = [k for k in ("op", "stage", "when") if k in b]
        if len(given) != 1:
            raise ctx.err(where, "expected exactly one of op, stage or when" + (f", got {', '.join(given)}" if given else ""))
        if "op" in b:
            out.append(Breakpoint(where=where, op=ctx.str_(b["op"], f"{where}.op", op_names)))
        elif "stage" in b:
            out.append(Breakpoint(where=where, stage=ctx.str_(b["stage"], f"{where}.stage", STAGES)))
        else:
            out.append(Breakpoint(where=where, when=parse_condition(b["when"], ctx, f"{where}.when", names)))
    return out


def _expects(v, ctx: _Ctx, names, sc: Scenario) -> list[Expect]:
    if not isinstance(v, list):
        raise ctx.err("expect", "expected [[expect]] tables")
    out = []
    for i, e in enumerate(v):
        where = f"expect[{i}]"
        e = ctx.table(e, where)
        ctx.known(e, ("step", "tensor", "value", "atol", "rtol"), where)
        for k in ("step", "tensor", "value"):
            if k not in e:
                raise ctx.err(where, f"missing key {k}")
        step = ctx.nonnegint(e["step"], f"{where}.step")
        if step > sc.train.steps:
            raise ctx.err(f"{where}.step", f"step {step} is beyond train.steps = {sc.train.steps}")
        tensor = ctx.str_(e["tensor"], f"{where}.tensor")
        if tensor not in names:
            raise ctx.err(f"{where}.tensor", f'unknown tensor "{tensor}"{did_you_mean(tensor, names)}')
        if step == 0 and tensor not in sc.initial:
            raise ctx.err(f"{where}.step", f'step 0 has only the initial parameters, not "{tensor}"')
        value = ctx.array(e["value"], f"{where}.value", allow_scalar=True)
        out.append(Expect(where=where, step=step, tensor=tensor, value=value,
                          atol=ctx.num(e.get("atol", 1e-8), f"{where}.atol", 0.0, desc="a non-negative number"),
                          rtol=ctx.num(e.get("rtol", 1e-6), f"{where}.rtol", 0.0, desc="a non-negative number")))
    return out
