"""Load and validate a scenario file (docs/scenario-format.md) into a :class:`Scenario`.

Every error is a :class:`ScenarioError` naming the file and either ``line:col`` (TOML syntax) or the
key path (``layers[2].out: expected a positive integer, got -3``). Nothing from the file is ever
evaluated, and npz files are read with ``allow_pickle=False``. The parts: :mod:`.validate` (the
checking helpers), :mod:`.files` (data and weights files), :mod:`.layers` (layers, shapes, limits),
:mod:`.conditions` (breakpoints and expectations).
"""
from __future__ import annotations

import os
import re
import stat
import sys
import tomllib
from typing import Any

import numpy as np

from ..errors import ScenarioError, clean
from ..model.scenario import LossSpec, OptimizerSpec, Scenario, ScheduleSpec, TrainSpec
from ..model.plan import Plan
from . import conditions
from .files import data as _data, weights_file as _weights_file
from ..layers import OptionError, registry
from ..layers.init import init_text
from .layers import PendingInit, hook, check_target as _check_target, draw_pending as _draw_pending
from .layers import layers as _layers
from .limits import MAX_SCENARIO_BYTES, MAX_STEPS
from .validate import Ctx, opt_value

TOP_KEYS = ("scenario", "data", "layers", "loss", "optimizer", "train", "breakpoints", "expect", "ask", "note")
DTYPES = ("float64", "float32")

def load_scenario(path: str | os.PathLike, layers=()) -> Scenario:
    """The scenario file ``path``, validated. ``layers``: Python files of the user's own layer
    types to register first (``--layers``; docs/layers.md), by their paths: a scenario never names
    code."""
    if layers:
        from ..layers import load_layers
        load_layers(layers)
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


def loads_scenario(text: str, path: str = "<string>", base_dir: str | None = None, layers=()) -> Scenario:
    """A scenario from its TOML text (``path`` names it in messages; files are read relative to
    ``base_dir``); ``layers`` as load_scenario's."""
    if layers:
        from ..layers import load_layers
        load_layers(layers)
    ctx = Ctx(clean(path))
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
    except ValueError:                     # an integer of more digits than int() converts
        limit = sys.get_int_max_str_digits()
        m = re.search(r"[0-9][0-9_]{%d,}" % limit, text)
        line, col = (text.count("\n", 0, m.start()) + 1, m.start() - text.rfind("\n", 0, m.start())) if m else (0, 0)
        raise ScenarioError(f"TOML syntax: an integer of more than {limit} digits",
                            file=f"{path_shown}:{line}:{col}" if line else path_shown) from None
    except RecursionError:
        line, col = _deep_position(text)
        raise ScenarioError("TOML syntax: arrays or tables nested too deeply",
                            file=f"{path_shown}:{line}:{col}" if line else path_shown) from None
    return _build(doc, ctx, path, base_dir or os.getcwd(), text)


def _origins(layers, initial: dict, seed: int) -> dict[str, str]:
    """Where each initial parameter comes from, in words: the scenario's own array, or the init it
    is drawn from (a weights file overrides either, afterwards)."""
    index = {L.name: L.index for L in layers}
    out = {}
    for n, v in initial.items():
        layer, p = n.rsplit(".", 1)
        out[n] = (init_text(v.kind, v.fans, seed) if isinstance(v, PendingInit)
                  else f"given in the scenario: layers[{index[layer]}].{p}")
    return out


def _typed(ctx, t: dict, where: str, types: dict, default: str | None = None):
    """A [loss], [optimizer] or [optimizer.schedule] table: (its type's class, every option checked
    against its kind, the defaults from the class, contradictions refused by the class)."""
    if "type" not in t and default is None:
        raise ctx.err(where, f"missing key type (one of: {', '.join(types)})")
    typ = ctx.str_(t.get("type", default), f"{where}.type", tuple(types))
    cls = types[typ]
    ctx.known(t, ("type",) + tuple(cls.options), where)
    opts: dict[str, Any] = {}
    for k, o in cls.options.items():
        if o.kind == "table":
            opts[k] = _schedule(ctx, t[k], f"{where}.{k}") if k in t else o.default
        elif k in t:
            opts[k] = opt_value(ctx, t[k], f"{where}.{k}", o.kind)
        elif o.required:
            raise ctx.err(where, f"missing key {k} ({cls.torch_class} needs it)")
        else:
            opts[k] = o.default
    try:
        cls.check_options(opts)
    except OptionError as e:
        raise ctx.err(f"{where}.{e.key}" if e.key else where, e.message) from None
    return cls, opts


def _schedule(ctx, v, where: str) -> ScheduleSpec:
    """[optimizer.schedule]: a torch.optim.lr_scheduler by type, with its options (layers/schedules.py)."""
    t = ctx.table(v, where)
    cls, opts = _typed(ctx, t, where, registry.schedule_types())
    return ScheduleSpec(cls.type, **opts)


def _token_data(ctx, layers, x):
    """Data read by a layer of integer input (an embedding) are token indices: whole numbers, in
    the range its class allows (``check_tokens``), kept as integers."""
    readers = [L for L in layers if registry.layer_type(L.type).int_input and L.inputs[0] == "input"]
    if not readers:
        return x
    if not np.all(np.isfinite(x)) or not np.all(x == np.round(x)):
        bad = x.reshape(-1)[np.flatnonzero(x.reshape(-1) != np.round(x.reshape(-1)))[0]]
        raise ctx.err("data.x", f"{readers[0].name} ({readers[0].type}) reads token indices, whole numbers, but "
                                f"data.x holds {bad:g}")
    for L in readers:
        try:
            hook(registry.layer_type(L.type), "check_tokens", L.name, L.options, float(x.min()), float(x.max()),
                  expect=(OptionError,))
        except OptionError as e:
            raise ctx.err("data.x", e.message) from None
    return x.astype(np.int64)


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


def _build(doc: dict, ctx: Ctx, path: str, base: str, text: str) -> Scenario:
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
    lcls, lopts = _typed(ctx, lo, "loss", registry.loss_types())
    loss = LossSpec(lcls.type, **lopts)

    # [optimizer]
    op = ctx.table(doc.get("optimizer", {"type": "sgd"}), "optimizer")
    ocls, oopts = _typed(ctx, op, "optimizer", registry.optimizer_types(), default="sgd")
    optimizer = OptimizerSpec(ocls.type, **oopts)

    # [data]
    x, y = _data(doc["data"], ctx, base, npdt, loss, seed)

    # [[layers]]
    batch = x.shape[0] if train.batch_size <= 0 else min(x.shape[0], train.batch_size)
    layers, initial, pending = _layers(doc["layers"], ctx, x, npdt, seed, batch)
    y = _check_target(ctx, loss, layers, x, y)
    x = _token_data(ctx, layers, x)

    # weights file
    origins = _origins(layers, initial, seed)
    states: dict[str, np.ndarray] = {}
    if "weights" in meta:
        given = dict(initial)
        _weights_file(ctx, meta["weights"], base, layers, initial, npdt, states)
        for n, v in initial.items():
            if v is not given[n]:
                origins[n] = f'from the weights file "{meta["weights"]}" (scenario.weights), its array "{n}"'
    _draw_pending(initial, pending, seed)

    sc = Scenario(path=path, name=name, description=desc, seed=seed, dtype=dtype, x=x, y=y, layers=layers,
                  loss=loss, optimizer=optimizer, train=train, initial=initial, source=text, files=dict(ctx.files),
                  origins=origins, initial_states=states)
    # a batch larger than the data is the whole data, as a DataLoader would give
    plan = Plan.of(sc)
    sc.breakpoints = conditions.breakpoints(doc.get("breakpoints", []), ctx, plan.names, plan.op_names)
    sc.expects = conditions.expects(doc.get("expect", []), ctx, plan.names, sc)
    sc.asks = conditions.asks(doc.get("ask", []), ctx, plan, sc)
    sc.notes = conditions.notes(doc.get("note", []), ctx, plan, sc)
    return sc

