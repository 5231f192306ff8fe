"""Validation helpers: every error names the file and the key path (``layers[2].out: expected a
positive integer, got -3``), and shows what the file holds only when it is short and made safe to
print (control characters escaped)."""
from __future__ import annotations

import math
import re

import numpy as np

from ..errors import ScenarioError, clean, cut, did_you_mean
from .limits import MAX_ELEMENTS, MAX_NDIM

ALIASES = {"learning_rate": "lr", "learningrate": "lr", "epochs": "steps", "iterations": "steps",
           "units": "out", "out_features": "out", "in_features": "in", "features": "out", "size": "out",
           "filters": "out_channels", "channels": "out_channels", "kernel": "kernel_size", "beta1": "betas",
           "beta2": "betas", "epsilon": "eps", "decay": "weight_decay", "l2": "weight_decay",
           "activation": "type", "kind": "type", "batch": "batch_size", "batchsize": "batch_size",
           "layer": "layers", "loss_function": "loss", "optim": "optimizer", "expects": "expect",
           "expected": "value", "breakpoint": "breakpoints", "inputs": "x", "targets": "y", "labels": "y",
           "reduce": "reduction", "alpha": "negative_slope", "slope": "negative_slope"}
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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


def _overflows(x) -> bool:
    try:
        float(x)
    except OverflowError:
        return True
    return False


def _show(v) -> str:
    """A value of the user's, as a message shows it: a string quoted, with control characters
    escaped; every value cut to 60 characters (errors.cut)."""
    if isinstance(v, str):
        return f'"{cut(clean(v))}"'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, dict)):
        s = _small(v)
        return s if s is not None else _tname(v)
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return cut(repr(v))


class Ctx:
    """Builds errors that name the file and the key path."""

    def __init__(self, file: str):
        self.file = file
        self.files: dict[str, str] = {}      # the files read, by key path (Scenario.files)

    def err(self, where: str | None, what: str) -> ScenarioError:
        if where:
            where = cut(clean(where), 200)
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
            raise self.err(where, f"expected {desc or 'an integer'}, got {_show(v)}")
        if not -2**63 <= v < 2**63:            # beyond any size or index numpy holds (int64)
            raise self.err(where, f"expected {desc or 'an integer'} of at most 2^63 in size, got {_show(v)}")
        return v

    def posint(self, v, where, hi=None):
        return self.int_(v, where, 1, hi, "a positive integer" + (f" (at most {hi})" if hi else ""))

    def nonnegint(self, v, where, hi=None):
        return self.int_(v, where, 0, hi, "a non-negative integer" + (f" (at most {hi})" if hi else ""))

    def num(self, v, where, lo=None, hi=None, desc="a number", lo_open=False):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.err(where, f"expected {desc}, got {_got(v)}")
        try:
            v = float(v)
        except OverflowError:                  # an integer of more than 308 digits
            raise self.err(where, f"expected a finite number, got {_show(v)}, too large for a float") from None
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
            raise self.err(where, f'unknown value {_show(v)}{did_you_mean(v, choices)}')
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
            raise self.err(where, f"{_show(n)} elements is over the limit of {MAX_ELEMENTS}")
        flat: list = []
        self._flatten(v, flat, where)
        try:
            a = np.asarray(flat, dtype=np.float64)
        except OverflowError:                  # an integer of more than 308 digits
            j = next(j for j, e in enumerate(flat) if _overflows(e))
            at = "".join(f"[{int(i)}]" for i in np.unravel_index(j, shape))
            raise self.err(where + at, f"expected a finite number, got {_show(flat[j])}, too large for a float") from None
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


def opt_value(ctx: "Ctx", v, where, kind):
    """An option's value, checked against its kind (nnstep.layers.Option: the kinds are listed there)."""
    if kind == "posint":
        return ctx.posint(v, where)
    if kind == "posfloat":
        return ctx.num(v, where, 0.0, desc="a positive number", lo_open=True)
    if kind == "prob":
        return ctx.num(v, where, 0.0, 1.0, "a number in [0, 1]")
    if kind == "float":
        return ctx.num(v, where)
    if kind == "nonnegfloat":
        return ctx.num(v, where, 0.0, desc="a non-negative number")
    if kind == "prob_open":
        x = ctx.num(v, where, 0.0, 1.0, "a number in [0, 1)")
        if x >= 1.0:
            raise ctx.err(where, f"expected a number in [0, 1), got {x:g}")
        return x
    if kind == "int":
        return ctx.int_(v, where)
    if kind == "dimpair":
        if not isinstance(v, list) or len(v) != 2:
            raise ctx.err(where, f"expected two dimensions, such as [1, 2], got {_show(v)}")
        return [ctx.int_(e, f"{where}[{j}]") for j, e in enumerate(v)]
    if kind == "shape":
        if not isinstance(v, list) or not v or len(v) > MAX_NDIM:
            raise ctx.err(where, f"expected the per-sample shape as an array of at most {MAX_NDIM} positive integers "
                                 f"(one may be -1), got {_show(v)}")
        out = []
        for j, e in enumerate(v):
            d = ctx.int_(e, f"{where}[{j}]")
            if d == 0 or d < -1:
                raise ctx.err(f"{where}[{j}]", f"expected a positive integer or -1, got {_show(d)}")
            out.append(d)
        return out
    if kind == "nonnegint":
        return ctx.nonnegint(v, where)
    if kind == "bool":
        return ctx.bool_(v, where)
    if kind in ("posints", "nonnegints"):
        check = ctx.posint if kind == "posints" else ctx.nonnegint
        if isinstance(v, list):
            if not v or len(v) > 2:
                raise ctx.err(where, f"expected an integer or a list of 1 or 2 integers, got {_show(v)}")
            return [check(e, f"{where}[{j}]") for j, e in enumerate(v)]
        return check(v, where)
    if kind == "betas":                  # Adam's (β1, β2)
        if not isinstance(v, list) or len(v) != 2:
            raise ctx.err(where, f"expected an array of two numbers, got {_show(v)}")
        b = tuple(ctx.num(e, f"{where}[{i}]", 0.0, 1.0, "a number in [0, 1)") for i, e in enumerate(v))
        if b[0] >= 1 or b[1] >= 1:
            raise ctx.err(where, "each beta must be below 1")
        return b
    if kind == "weights":                # class weights, checked against the prediction once the layers are known
        if not isinstance(v, list) or not v:
            raise ctx.err(where, f"expected an array of non-negative numbers, got {_show(v)}")
        return tuple(ctx.num(e, f"{where}[{i}]", 0.0, desc="a non-negative number") for i, e in enumerate(v))
    if kind.startswith("choice:"):
        return ctx.str_(v, where, tuple(kind[7:].split("|")))
    raise AssertionError(kind)
