"""Load and validate a scenario file (SPEC §2) into a :class:`Scenario`.

Every error is a :class:`ScenarioError` naming the file and either ``line:col`` (TOML syntax) or the
key path (``layers[2].out: expected a positive integer, got -3``). Nothing from the file is ever
evaluated, and npz files are read with ``allow_pickle=False``.
"""
from __future__ import annotations

import math
import os
import re
import stat
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
MAX_ACTIVATIONS = 100_000_000    # all layers' outputs for one batch (the backward pass doubles it)
MAX_STEPS = 10_000_000
MAX_LAYERS = 1000
MAX_KERNEL = 4096                # elements of one conv kernel (the backward pass loops over them)
MAX_NDIM = 8                     # dimensions of an inline array
MAX_FILE_BYTES = 512 * 1024 * 1024   # a data or weights file
MAX_SCENARIO_BYTES = 16 * 1024 * 1024  # the TOML file itself (put big data in a .npz)
MAX_CSV_BYTES = 256 * 1024 * 1024

TOP_KEYS = ("scenario", "data", "layers", "loss", "optimizer", "train", "breakpoints", "expect")
STAGES = ("forward", "loss", "backward", "update")
DTYPES = ("float64", "float32")
OPT_KEYS = {"sgd": ("type", "lr", "momentum", "dampening", "nesterov", "weight_decay"),
            "adam": ("type", "lr", "betas", "eps", "weight_decay")}
LOSS_KEYS = {t: ("type", "reduction", "scale") for t in LOSSES}
LOSS_KEYS["smooth_l1"] += ("beta",)
LOSS_KEYS["huber"] += ("delta",)
COMMON_LAYER_KEYS = ("type", "name", "frozen", "weight", "bias", "init", "in")
# names people bring from other tools, for the "did you mean" hint
ALIASES = {"learning_rate": "lr", "learningrate": "lr", "epochs": "steps", "iterations": "steps",
           "units": "out", "out_features": "out", "in_features": "in", "features": "out", "size": "out",
           "filters": "out_channels", "channels": "out_channels", "kernel": "kernel_size", "beta1": "betas",
           "beta2": "betas", "epsilon": "eps", "decay": "weight_decay", "l2": "weight_decay",
           "activation": "type", "kind": "type", "batch": "batch_size", "batchsize": "batch_size",
           "layer": "layers", "loss_function": "loss", "optim": "optimizer", "expects": "expect",
           "expected": "value", "breakpoint": "breakpoints", "inputs": "x", "targets": "y", "labels": "y",
           "reduce": "reduction", "alpha": "negative_slope", "slope": "negative_slope"}
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
    import datetime
    if isinstance(v, datetime.datetime):
        return "a date-time"
    if isinstance(v, datetime.date):
        return "a date"
    if isinstance(v, datetime.time):
        return "a time"
    return type(v).__name__


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def clean(s: str) -> str:
    """Text from a file, safe to print: control characters (terminal escapes, bidi overrides)
    are shown as escapes, never sent to the terminal."""
    return _CONTROL.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), s)


def _small(v, budget: int = 40) -> str | None:
    """A short TOML-like rendering of ``v``, or None if it would exceed ``budget`` characters.
    Never walks more than ``budget`` items, so a huge or deeply nested value costs nothing."""
    out: list[str] = []
    n = 0

    def walk(x, depth):
        nonlocal n
        n += 1
        if n > budget or depth > 8:
            raise OverflowError
        if isinstance(x, bool):
            out.append("true" if x else "false")
        elif isinstance(x, (int, float)):
            out.append(repr(x))
        elif isinstance(x, str):
            out.append(f'"{clean(x)}"')
        elif isinstance(x, dict):
            out.append("{")
            for i, (k, e) in enumerate(x.items()):
                out.append((", " if i else "") + clean(k) + " = ")
                walk(e, depth + 1)
            out.append("}")
        elif isinstance(x, list):
            out.append("[")
            for i, e in enumerate(x):
                if i:
                    out.append(", ")
                walk(e, depth + 1)
            out.append("]")
        else:
            raise OverflowError
        if sum(map(len, out)) > budget:
            raise OverflowError

    try:
        walk(v, 0)
    except OverflowError:
        return None
    return "".join(out)


def _got(v) -> str:
    """What the file holds, for "expected X, got ...": its kind, and the value when it is short."""
    if isinstance(v, (list, dict)):
        s = _small(v)
        return _tname(v) + (f" {s}" if s is not None else "")
    return f"{_tname(v)} {_show(v)}"


def _show(v) -> str:
    if isinstance(v, str):
        s = clean(v)
        return f'"{s}"' if len(s) <= 60 else f'"{s[:57]}..."'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, dict)):
        s = _small(v)
        return s if s is not None else _tname(v)
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return repr(v)


class _Ctx:
    """Builds errors that name the file and the key path."""

    def __init__(self, file: str):
        self.file = file

    def err(self, where: str | None, what: str) -> ScenarioError:
        if where:
            where = clean(where)
            where = where if len(where) <= 200 else where[:197] + "..."
        return ScenarioError(clean(what), file=self.file, where=where)

    def table(self, v, where: str) -> dict:
        if not isinstance(v, dict):
            raise self.err(where, f"expected a table, got {_tname(v)}")
        return v

    def known(self, d: dict, allowed, where: str, what: str = "key"):
        for k in d:
            if k not in allowed:
                path = f"{where}.{k}" if where else k
                alias = ALIASES.get(k.lower())
                hint = f' (did you mean "{alias}"?)' if alias in allowed else did_you_mean(k, allowed)
                raise self.err(path, f"unknown {what}{hint}")

    def int_(self, v, where, lo=None, hi=None, desc=None):
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.err(where, f"expected {desc or 'an integer'}, got {_got(v)}")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise self.err(where, f"expected {desc or 'an integer'}, got {v}")
        return v

    def posint(self, v, where, hi=None):
        return self.int_(v, where, 1, hi, "a positive integer" + (f" (at most {hi})" if hi else ""))

    def nonnegint(self, v, where, hi=None):
        return self.int_(v, where, 0, hi, "a non-negative integer" + (f" (at most {hi})" if hi else ""))

    def num(self, v, where, lo=None, hi=None, desc="a number", lo_open=False):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.err(where, f"expected {desc}, got {_got(v)}")
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
            raise self.err(where, f"expected true or false, got {_got(v)}")
        return v

    def str_(self, v, where, choices=None):
        if not isinstance(v, str):
            raise self.err(where, f"expected a string, got {_got(v)}")
        if choices is not None and v not in choices:
            raise self.err(where, f'unknown value "{v}"{did_you_mean(v, choices)}')
        return v

    def array(self, v, where, dtype=np.float64, allow_scalar=False) -> np.ndarray:
        """A rectangular array of numbers from nested TOML arrays."""
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if allow_scalar:
                return np.asarray(v, dtype=dtype)
            raise self.err(where, f"expected an array of numbers, got {_got(v)}")
        if not isinstance(v, list):
            raise self.err(where, f"expected an array of numbers, got {_got(v)}")
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
            if len(shape) > MAX_NDIM:
                raise self.err(where, f"array nested more than {MAX_NDIM} deep")
        if 0 in shape:
            raise self.err(where, "is an empty array")
        self._check_rect(v, tuple(shape), where, [])
        return tuple(shape)

    def _check_rect(self, v, shape, where, idx):
        if not shape:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                at = "".join(f"[{i}]" for i in idx)
                raise self.err(where + at, f"expected a number, got {_got(v)}")
            return
        if not isinstance(v, list) or len(v) != shape[0]:
            at = "".join(f"[{i}]" for i in idx)
            got = (f"{len(v)} element{'s' if len(v) != 1 else ''}" if isinstance(v, list)
                   else f"{_got(v)}")
            raise self.err(where + at, f"ragged array: expected {shape[0]} element{'s' if shape[0] != 1 else ''} "
                                       f"here (like the first row), got {got}")
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
    shown = clean(path)
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise ScenarioError("is a directory, not a scenario file", file=shown)
        if not stat.S_ISREG(st.st_mode):
            raise ScenarioError("is not a regular file", file=shown)
        if st.st_size > MAX_SCENARIO_BYTES:
            raise ScenarioError(f"file is too large ({st.st_size} bytes; a scenario may have at most "
                                f"{MAX_SCENARIO_BYTES} — put big data in a .npz file)", file=shown)
        with open(path, "rb") as f:
            raw = f.read(min(st.st_size, MAX_SCENARIO_BYTES) + 1)   # read(n) reserves n bytes up front
    except FileNotFoundError:
        raise ScenarioError("no such file", file=shown) from None
    except PermissionError:
        raise ScenarioError("permission denied", file=shown) from None
    except IsADirectoryError:
        raise ScenarioError("is a directory, not a scenario file", file=shown) from None
    except (OSError, ValueError) as e:
        raise ScenarioError(f"cannot read: {getattr(e, 'strerror', None) or e}", file=shown) from None
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]                      # a UTF-8 byte order mark, as some Windows editors write
    if b"\x00" in raw:
        raise ScenarioError("a binary file, not a TOML scenario", file=shown)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ScenarioError(f"not UTF-8 text (byte {e.start}); is this a TOML scenario?", file=shown) from None
    return loads_scenario(text, path=path, base_dir=os.path.dirname(os.path.abspath(path)))


def loads_scenario(text: str, path: str = "<string>", base_dir: str | None = None) -> Scenario:
    ctx = _Ctx(clean(path))
    path_shown = ctx.file
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        if m:
            what = msg[:m.start()].strip()
            raise ScenarioError(f"TOML syntax: {clean(what)}",
                                file=f"{path_shown}:{m.group(1)}:{m.group(2)}") from None
        m = re.search(r"\(at end of document\)", msg)
        lines = text.count("\n") + 1
        raise ScenarioError(f"TOML syntax: {clean(msg.replace('(at end of document)', '').strip())} (at end of file)",
                            file=f"{path_shown}:{lines}:1") from None
    except RecursionError:
        line, col = _deep_position(text)
        raise ScenarioError("TOML syntax: arrays or tables nested too deeply",
                            file=f"{path_shown}:{line}:{col}" if line else path_shown) from None
    return _build(doc, ctx, path, base_dir or os.getcwd(), text)


def _deep_position(text: str, limit: int = 64) -> tuple[int, int]:
    """Line and column (from 1) where brackets and braces first nest ``limit`` deep, skipping
    strings and comments; (0, 0) if they never do."""
    depth, line, col, quote, i = 0, 1, 0, "", 0
    while i < len(text):
        c = text[i]
        col += 1
        if c == "\n":
            line, col = line + 1, 0
            quote = ""                     # comments and one-line strings end here
        elif quote == "#":
            pass
        elif quote:
            if c == "\\" and quote == '"':
                i, col = i + 1, col + 1
            elif c == quote:
                quote = ""
        elif c in "\"'#":
            quote = c
        elif c in "[{":
            depth += 1
            if depth >= limit:
                return line, col
        elif c in "]}":
            depth -= 1
        i += 1
    return 0, 0


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
    # shown on the terminal by run and the TUI: control characters become visible escapes
    name = clean(ctx.str_(meta.get("name", stem), "scenario.name"))
    desc = "\n".join(clean(line) for line in ctx.str_(meta.get("description", ""), "scenario.description").split("\n"))
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
    batch = x.shape[0] if train.batch_size <= 0 else min(x.shape[0], train.batch_size)
    layers, initial = _layers(doc["layers"], ctx, x, npdt, seed, batch)
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
    x = _cast(ctx, "data.x", x, npdt, "")
    # targets are cast to the scenario's dtype so float32 stays float32; cross_entropy's are
    # settled in _check_target (class indices become integers, probabilities the dtype)
    yc = _cast(ctx, "data.y", y, npdt, "")
    if loss.type != "cross_entropy":
        y = yc
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
    """A data or weights file named in the scenario: relative to the scenario's folder and inside
    it (after following symlinks), a regular file, not too large. A shared scenario cannot read
    files elsewhere on the reader's machine (docs/errors.md, "Files")."""
    f = ctx.str_(f, where)
    shown = clean(f)
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
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise ctx.err(where, f'no such file "{shown}" (paths are relative to the scenario file)') from None
    except OSError as e:
        raise ctx.err(where, f'cannot read "{shown}": {e.strerror or e}') from None
    if stat.S_ISDIR(st.st_mode):
        raise ctx.err(where, f'"{shown}" is a directory')
    if not stat.S_ISREG(st.st_mode):
        raise ctx.err(where, f'"{shown}" is not a regular file')
    if st.st_size > MAX_FILE_BYTES:
        raise ctx.err(where, f'"{shown}" is too large ({st.st_size} bytes, the limit is {MAX_FILE_BYTES})')
    if not os.access(p, os.R_OK):
        raise ctx.err(where, f'cannot read "{shown}": permission denied')
    return shown, p


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


def _npz_open(ctx, where, f, p):
    import zipfile

    try:
        zf = zipfile.ZipFile(p)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError):
        raise ctx.err(where, f'"{f}" is not a .npz file (not a zip archive as numpy.savez writes)') from None
    except OSError as e:
        raise ctx.err(where, f'cannot read "{f}": {e.strerror or e}') from None
    return zf


def _npz_load(ctx, where, f, zf, key: str) -> np.ndarray:
    """One array of an open .npz, checked from its header first: numbers only (never pickle), at
    most MAX_ELEMENTS elements."""
    import zipfile

    member = key + ".npy"
    try:
        try:
            shape, dtype = _npz_header(zf, member)
        except _NpzRefused as e:
            raise ctx.err(where, f'"{f}": array "{clean(key)}" {e}') from None
        if dtype.hasobject:
            raise ctx.err(where, f'"{f}": array "{clean(key)}" holds Python objects, which nnstep never loads '
                                 f"(it would need pickle)")
        if dtype.kind not in "biuf":
            raise ctx.err(where, f'"{f}": array "{clean(key)}" has dtype {clean(str(dtype))}, expected numbers')
        n = math.prod(shape)
        if n > MAX_ELEMENTS:
            raise ctx.err(where, f'"{f}": array "{clean(key)}" of shape {_fmt_shape(shape)} has {n} elements, '
                                 f"over the limit of {MAX_ELEMENTS}")
        info = zf.getinfo(member)
        if info.file_size > n * dtype.itemsize + 65536:
            raise ctx.err(where, f'"{f}": array "{clean(key)}" is larger than its header says')
        with zf.open(member) as fh:
            from numpy.lib import format as npf
            arr = npf.read_array(fh, allow_pickle=False)
    except ScenarioError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError, TypeError, SyntaxError) as e:
        raise ctx.err(where, f'"{f}": array "{clean(key)}" is damaged ({type(e).__name__})') from None
    return arr


def _npz_keys(zf) -> list[str]:
    return [n[:-4] for n in zf.namelist() if n.endswith(".npy")]


def _npz_array(ctx, where, f, p, key, keywhere):
    zf = _npz_open(ctx, where, f, p)
    with zf:
        keys = _npz_keys(zf)
        if key not in keys:
            raise ctx.err(keywhere, f'"{f}" has no array "{clean(key)}"{did_you_mean(key, keys)}')
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
def _layers(v, ctx: _Ctx, x: np.ndarray, npdt, seed: int, batch: int):
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
    acts = 0
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
                    src = ""
                    if typ in ("linear", "conv1d", "conv2d") and p == "weight":
                        src = (f"; {'in' if typ == 'linear' else 'in_channels'} = "
                               f"{pshapes[p][1]} comes from {prev}, per-sample shape {_fmt_shape(shape)}")
                    raise ctx.err(f"{where}.{p}", f"expected shape {_fmt_shape(pshapes[p])}{lay}, got "
                                                  f"{_fmt_shape(a.shape)}{src}")
                initial[full] = _cast(ctx, f"{where}.{p}", a, npdt, "")
            else:
                initial[full] = layer.default_init(p, pshapes[p], rng, init).astype(npdt)
        frozen = t.get("frozen", [])
        if isinstance(frozen, str):
            frozen = [frozen]
        if not isinstance(frozen, list):
            raise ctx.err(f"{where}.frozen", f"expected an array of parameter names, got {_show(frozen)}")
        for j, fz in enumerate(frozen):
            ctx.str_(fz, f"{where}.frozen[{j}]", tuple(present))
        _work_limits(ctx, where, name, typ, opts, shape, tuple(layer.out_shape), batch)
        acts += batch * math.prod(layer.out_shape)
        if acts > MAX_ACTIVATIONS:
            raise ctx.err(where, f"the layers' outputs up to {name} add up to {acts} elements per batch of "
                                 f"{batch}, over the limit of {MAX_ACTIVATIONS} (use a smaller batch_size)")
        if typ == "batchnorm":
            # torch refuses training-mode batchnorm with one value per channel (its variance is 0 and
            # the unbiased running variance divides by n - 1 = 0); so does nnstep, at load time
            n_all = x.shape[0]
            smallest = n_all % batch or batch
            per_channel = smallest * math.prod(shape[1:])
            if per_channel < 2:
                raise ctx.err(where, f"{name} (batchnorm) would see 1 value per channel in a batch of {smallest} "
                                     f"(per-sample shape {_fmt_shape(shape)}); training-mode batch statistics "
                                     f"need at least 2, as in torch (use a larger batch_size or more samples)")
        specs.append(LayerSpec(index=i, type=typ, name=name, options=opts, in_shape=shape,
                               out_shape=tuple(layer.out_shape), params=tuple(present), frozen=tuple(frozen)))
        shape = tuple(layer.out_shape)
    return specs, initial


def _work_limits(ctx: _Ctx, where, name, typ, opts, in_shape, out_shape, batch: int):
    """Refuse a layer whose output or working arrays for one batch would be too large, before
    anything is allocated: a conv's padded input and its unfolded windows (N·C·positions·kernel)."""
    n_out = batch * math.prod(out_shape)
    if n_out > MAX_ELEMENTS:
        raise ctx.err(where, f"the output of {name}, {_fmt_shape((batch,) + out_shape)} per batch, has "
                             f"{n_out} elements, over the limit of {MAX_ELEMENTS}")
    if typ in ("conv1d", "conv2d"):
        nd = 1 if typ == "conv1d" else 2
        tup = (lambda v: tuple(v) if isinstance(v, list) else (v,) * nd)
        k, p = tup(opts["kernel_size"]), tup(opts["padding"])
        if math.prod(k) > MAX_KERNEL:
            raise ctx.err(f"{where}.kernel_size", f"{list(k)} is {math.prod(k)} elements per kernel, over the "
                                                  f"limit of {MAX_KERNEL}")
        padded = batch * in_shape[0] * math.prod(in_shape[1 + d] + 2 * p[d] for d in range(nd))
        if padded > MAX_ELEMENTS:
            raise ctx.err(f"{where}.padding", f"the padded input of {name} would have {padded} elements, over "
                                              f"the limit of {MAX_ELEMENTS}")
        windows = batch * in_shape[0] * math.prod(out_shape[1:]) * math.prod(k)
        if windows > MAX_ELEMENTS:
            raise ctx.err(where, f"{name} would unfold {windows} input elements per batch (N·C·positions·kernel), "
                                 f"over the limit of {MAX_ELEMENTS} (use a smaller batch_size or kernel)")


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
    known = {f"{s.name}.{pn}": s for s in layers for pn in s.params}
    zf = _npz_open(ctx, "scenario.weights", f, p)
    with zf:
        for key in _npz_keys(zf):
            if key.endswith("num_batches_tracked") or key.endswith(".running_mean") or key.endswith(".running_var"):
                continue
            if key not in known:
                raise ctx.err("scenario.weights", f'"{f}" holds "{clean(key)}", which is no parameter of this '
                                                  f"network{did_you_mean(key, known)}")
            a = _npz_load(ctx, "scenario.weights", f, zf, key)
            if a.shape != initial[key].shape:
                raise ctx.err("scenario.weights", f'"{f}": "{key}" has shape {_fmt_shape(a.shape)}, the network '
                                                  f"needs {_fmt_shape(initial[key].shape)}")
            a = _cast(ctx, "scenario.weights", a, npdt, f'"{f}": "{key}" ')
            initial[key] = a


def _cast(ctx, where, a: np.ndarray, npdt, what: str) -> np.ndarray:
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
        raise ctx.err(where, f"expected a string, got {_got(text)}")
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
    return Condition(kind="compare", tensor=tensor, stat=st, op=op, number=number, text=clean(text.strip()))


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
