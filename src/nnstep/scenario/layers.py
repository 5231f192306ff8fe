"""Layers from their [[layers]] tables: each type's options, shape rule and parameters read from
its class (nnstep.layers), shapes inferred, parameters given or initialized as torch initializes
them (seeded by ``scenario.seed``), limits on sizes checked before anything is allocated. A type of
the user's own (``--layers``) is held to the same contract: its code raising, or returning what
the contract does not allow, is a located error."""
from __future__ import annotations

import math

import numpy as np

from ..errors import did_you_mean
from ..layers import OptionError, ShapeError, registry
from ..layers.init import CHOICES as INITS, init_tensor
from ..model.scenario import LayerSpec, LossSpec
from . import limits
from .limits import MAX_ACTIVATIONS, MAX_ELEMENTS, MAX_LAYERS, MAX_MERGE_INPUTS, MAX_TOTAL_PARAMS
from .files import cast as _cast
from ..layers.base import fmt_shape as _fmt_shape
from .validate import NAME_RE, opt_value as _opt, _show

COMMON_LAYER_KEYS = ("type", "name", "frozen", "init", "in", "input", "inputs")
HINT = ("; a layer type of your own is read from the Python file that defines it, named on the command line: "
        "--layers FILE.py (docs/layers.md)")


def _merges(types) -> str:
    return ", ".join(t for t, c in types.items() if c.merge)


def hook(cls, method: str, *args, expect=()):
    """A layer class's declaration method: a user's through plugins.call (its code raising is a
    located error), nnstep's own directly."""
    if registry.is_builtin(cls):
        return getattr(cls, method)(*args)
    from ..layers import plugins
    return plugins.call(cls, method, *args, expect=expect)


def _shapes(cls, opts, in_shapes):
    """``cls.shapes``, and for a user's type its result checked: (out shape, {param: shape})."""
    r = hook(cls, "shapes", opts, in_shapes, expect=(ShapeError,))
    if registry.is_builtin(cls):
        return r
    from ..layers import plugins
    ok = (isinstance(r, tuple) and len(r) == 2 and _is_shape(r[0]) and isinstance(r[1], dict)
          and all(p in cls.params and _is_shape(v) for p, v in r[1].items()))
    if not ok:
        raise plugins.wrong(cls, "shapes", "returned " + _show(r) + ", expected (out_shape, {param: shape}): a "
                                           "tuple of positive sizes per sample and a shape for each of its params")
    missing = [p for p in cls.params if p not in r[1] and p not in cls.bias_params]
    if missing:
        raise plugins.wrong(cls, "shapes", f"returned no shape for its parameter {missing[0]!r}")
    return tuple(int(d) for d in r[0]), {p: tuple(int(d) for d in v) for p, v in r[1].items()}


def _is_shape(s) -> bool:
    return isinstance(s, (tuple, list)) and all(isinstance(d, (int, np.integer)) and not isinstance(d, bool)
                                                 and d > 0 for d in s)


def _unknown_type(ctx, typ, where, types):
    hint = did_you_mean(typ, types)
    close = hint.startswith(" (did you mean")
    return ctx.err(f"{where}.type", f"unknown value {_show(typ)}{hint}" + ("" if close else HINT))


class PendingInit:
    """A parameter to draw from torch's default init once it is known that some draw is needed:
    when a weights file supplies every parameter the scenario does not give inline, nothing is drawn
    (and numpy.random is never imported: a start-up cost of `nnstep run`). Whenever any draw is
    needed, every pending parameter is drawn, in layer order, so each value is what it always was."""
    __slots__ = ("kind", "shape", "fans", "dtype")

    def __init__(self, kind, shape, fans, dtype):
        self.kind, self.shape, self.fans, self.dtype = kind, tuple(shape), fans, dtype


def draw_pending(initial: dict, order: list, seed: int) -> None:
    """Replace the PendingInit placeholders of ``initial`` (see there) by their draws."""
    if not any(isinstance(initial.get(name), PendingInit) for name, _ in order):
        return
    rng = np.random.default_rng([seed, 0])
    for name, p in order:                       # the same stream as drawing in the layers' loop
        a = init_tensor(p.kind, p.shape, *p.fans, rng).astype(p.dtype)
        if isinstance(initial.get(name), PendingInit):
            initial[name] = a


def layers(v, ctx, x: np.ndarray, npdt, seed: int, batch: int):
    """[[layers]] -> (LayerSpecs, initial parameters by name, the ones still to draw)."""
    if not isinstance(v, list) or not v:
        raise ctx.err("layers", "expected at least one [[layers]] table")
    if len(v) > MAX_LAYERS:
        raise ctx.err("layers", f"{len(v)} layers is over the limit of {MAX_LAYERS}")
    types = registry.layer_types()
    pending: list[tuple[str, PendingInit]] = []
    counts: dict[str, int] = {}
    names: dict[str, int] = {}
    specs: list[LayerSpec] = []
    initial: dict[str, np.ndarray] = {}
    shapes: dict[str, tuple[int, ...]] = {"input": tuple(x.shape[1:])}   # every tensor a layer may read
    later = {}                             # every layer's name (given or "<type><k>"), for "comes later"
    seen: dict[str, int] = {}
    for j, raw in enumerate(v):
        if isinstance(raw, dict) and isinstance(raw.get("type"), str):
            seen[raw["type"]] = seen.get(raw["type"], 0) + 1
            nm = raw.get("name", f"{raw['type']}{seen[raw['type']]}")
            if isinstance(nm, str):
                later.setdefault(nm, j)
    n_all = x.shape[0]
    smallest = n_all % batch or batch      # the last batch of an epoch, the smallest
    total = 0
    acts = 0
    for i, raw in enumerate(v):
        where = f"layers[{i}]"
        t = ctx.table(raw, where)
        if "type" not in t:
            raise ctx.err(where, f"missing key type (one of: {', '.join(types)})")
        typ = ctx.str_(t["type"], f"{where}.type")
        if typ not in types:
            raise _unknown_type(ctx, typ, where, types)
        cls = types[typ]
        allowed = COMMON_LAYER_KEYS + tuple(cls.params) + tuple(cls.options)
        if not cls.params:
            allowed = tuple(k for k in allowed if k not in ("init", "frozen"))
        allowed = tuple(k for k in allowed if k != ("input" if cls.merge else "inputs"))
        if "inputs" in t and not cls.merge:
            raise ctx.err(f"{where}.inputs", f"{_a(typ)} {typ} layer reads one tensor: name it with input = \"<layer>\" "
                                             f"(inputs = [...] is for the merge layers: {_merges(types)})")
        if "input" in t and cls.merge:
            raise ctx.err(f"{where}.input", f"{_a(typ)} {typ} layer merges several tensors: name them with "
                                            f"inputs = [\"<layer>\", \"<layer>\"]")
        if "activation" in t and "activation" not in allowed:   # Keras' Dense(…, activation=…)
            act = t["activation"]
            named = f'type = "{act}"' if isinstance(act, str) and act in types else 'the activation\'s type'
            raise ctx.err(f"{where}.activation", f"unknown key: in nnstep an activation is a layer of its own "
                                                  f"(add a [[layers]] table with {named} after this one)")
        ctx.known(t, allowed, where)
        counts[typ] = counts.get(typ, 0) + 1
        name = t.get("name", f"{typ}{counts[typ]}")
        ctx.str_(name, f"{where}.name")
        if not NAME_RE.match(name):
            raise ctx.err(f"{where}.name", f'{_show(name)} is not a valid layer name (letters, digits and _, not starting with a digit)')
        if name in names:
            raise ctx.err(f"{where}.name", f'duplicate layer name {_show(name)} (layers[{names[name]}] has it too)')
        if name in ("input", "target", "loss"):
            raise ctx.err(f"{where}.name", f'{_show(name)} is reserved for a tensor name')
        names[name] = i
        opts = {}
        for k, o in cls.options.items():
            if k in t:
                opts[k] = _opt(ctx, t[k], f"{where}.{k}", o.kind)
            elif o.required:
                raise ctx.err(where, f"missing key {k} ({_a(typ)} {typ} layer needs it)")
            else:
                opts[k] = o.default
        inputs = _inputs(ctx, t, where, i, cls, typ, specs, names, later)
        in_shapes = [shapes[x] for x in inputs]
        shape = in_shapes[0]
        prev = _describe(inputs[0], specs, names)
        if "in" in t:
            given = t["in"]
            want = (shape[cls.in_dim] if shape else None) if cls.in_dim == -1 else shape[cls.in_dim]
            gin = ctx.posint(given, f"{where}.in")
            if want != gin:
                raise ctx.err(f"{where}.in", f"is {gin} but {prev} gives per-sample shape {_fmt_shape(shape)} "
                                             f"(so in = {want})")
        try:
            out_shape, pshapes = _shapes(cls, opts, in_shapes)
        except ShapeError as e:
            if cls.merge:
                what = " and ".join(f"{_describe(x, specs, names)} {_fmt_shape(('N',) + tuple(shapes[x]))}"
                                    for x in inputs)
                raise ctx.err(where, f"{name} ({typ}) cannot merge {what}: {e}") from None
            raise ctx.err(where, f"{name} ({typ}) cannot take the output of {prev}, per-sample shape "
                                 f"{_fmt_shape(shape)}: {e}{flatten_hint(specs)}") from None
        present = list(pshapes)
        for p in cls.params:                      # a parameter given that the options leave out
            if p in t and p not in pshapes and t[p] is not False:
                switch = ("bias" if p in cls.bias_params and opts.get("bias") is False
                          else "affine" if opts.get("affine") is False else None)
                if switch is None:
                    raise ctx.err(f"{where}.{p}", f"{name} ({typ}) has no {p} with these options")
                raise ctx.err(f"{where}.{p}", f"given, but {switch} = false leaves {name} without {p} (drop {p}, "
                                              f"or set {switch} = true)")
        bias_v = t.get("bias")
        if bias_v is False and "bias" not in cls.options:
            if not cls.bias_params:
                raise ctx.err(f"{where}.bias", f"{name} ({typ}) has no bias switch: affine = false leaves out its "
                                               f"weight and bias together, as torch's affine=False")
            present = [p for p in present if p not in cls.bias_params]
        elif isinstance(bias_v, bool) and "bias" not in cls.options:
            if bias_v is not True or "bias" not in pshapes:
                raise ctx.err(f"{where}.bias", f"expected an array of numbers or false, got {_show(bias_v)}")
        init = ctx.str_(t.get("init", "kaiming_uniform"), f"{where}.init", INITS)
        for p in present:
            n = math.prod(pshapes[p])
            total += n
            if n > MAX_ELEMENTS or total > MAX_TOTAL_PARAMS:
                raise ctx.err(where, f"{name}.{p} of shape {_fmt_shape(pshapes[p])} would take the parameter "
                                     f"count to {_show(total)}, over the limit of {MAX_TOTAL_PARAMS}")
        for p in present:
            full = f"{name}.{p}"
            if p in t and t[p] is not True and not (p == "bias" and "bias" in cls.options):
                a = ctx.array(t[p], f"{where}.{p}")
                if a.shape != tuple(pshapes[p]):
                    lay = hook(cls, "layout", p, opts)
                    src = ""
                    if cls.in_param is not None and p == cls.in_param[0]:
                        src = (f"; {cls.in_param[1]} = {pshapes[p][1]} comes from {prev}, per-sample shape "
                               f"{_fmt_shape(shape)}")
                    raise ctx.err(f"{where}.{p}", f"expected shape {_fmt_shape(pshapes[p])}{lay}, got "
                                                  f"{_fmt_shape(a.shape)}{src}")
                initial[full] = _cast(ctx, f"{where}.{p}", a, npdt, "")
            else:
                initial[full] = PendingInit(cls.init.get(p, init), pshapes[p], hook(cls, "fans", opts, shape), npdt)
                pending.append((full, initial[full]))
        frozen = t.get("frozen", [])
        if isinstance(frozen, str):
            frozen = [frozen]
        if not isinstance(frozen, list):
            raise ctx.err(f"{where}.frozen", f"expected an array of parameter names, got {_show(frozen)}")
        for j, fz in enumerate(frozen):
            ctx.str_(fz, f"{where}.frozen[{j}]", tuple(present))
        n_out = batch * math.prod(out_shape)
        if n_out > MAX_ELEMENTS:
            raise ctx.err(where, f"the output of {name}, {_fmt_shape((batch,) + tuple(out_shape))} per batch, has "
                                 f"{_show(n_out)} elements, over the limit of {MAX_ELEMENTS}")
        try:
            hook(cls, "check_size", name, opts, tuple(shape), tuple(out_shape), batch, smallest, limits,
                  expect=(OptionError,))
        except OptionError as e:
            raise ctx.err(f"{where}.{e.key}" if e.key else where, e.message) from None
        acts += batch * math.prod(out_shape)
        for label, shp, count in hook(cls, "intermediates", opts, in_shapes, tuple(out_shape)):
            n = batch * math.prod(shp)
            if n > MAX_ELEMENTS:
                what = f"{name}.{label}" if label.isidentifier() else f"{name}'s {label}"
                raise ctx.err(where, f"{what}, {_fmt_shape((batch,) + tuple(shp))} per batch, has {_show(n)} elements, "
                                     f"over the limit of {MAX_ELEMENTS} (use a smaller batch_size or smaller inputs)")
            acts += count * n
        if acts > MAX_ACTIVATIONS:
            raise ctx.err(where, f"the layers' outputs and the tensors they make, up to {name}, add up to {_show(acts)} "
                                 f"elements per batch of {batch}, over the limit of {MAX_ACTIVATIONS} (use a smaller "
                                 f"batch_size or smaller inputs)")
        specs.append(LayerSpec(index=i, type=typ, name=name, options=opts, in_shape=shape,
                               out_shape=tuple(out_shape), params=tuple(present), frozen=tuple(frozen),
                               inputs=tuple(inputs), in_shapes=tuple(tuple(s) for s in in_shapes)))
        shapes[f"{name}.out"] = tuple(out_shape)
    _dead_branches(ctx, specs)
    return specs, initial, pending


def _a(word: str) -> str:
    return "an" if word[:1] in "aeiou" or word in ("rnn", "lstm") else "a"     # an RNN, an LSTM


def _describe(tensor: str, specs, names) -> str:
    if tensor == "input":
        return "the data"
    layer = tensor.rsplit(".", 1)[0]
    return f"layers[{names[layer]}] ({layer})"


def _inputs(ctx, t, where, i, cls, typ, specs, names, later) -> list[str]:
    """The tensors a layer reads: the previous layer's output (the batch for the first layer),
    ``input = "<layer>"`` or, for a merge, ``inputs = [...]``; only earlier layers or "input"."""
    if cls.merge:
        if "inputs" not in t:
            raise ctx.err(where, f'missing key inputs ({_a(typ)} {typ} layer reads two or more tensors: '
                                 f'inputs = ["<layer>", "<layer>"])')
        refs = t["inputs"]
        lo, hi = cls.arity
        if isinstance(refs, list) and len(refs) > MAX_MERGE_INPUTS:
            raise ctx.err(f"{where}.inputs", f"{len(refs)} inputs is over the limit of {MAX_MERGE_INPUTS} for one "
                                             f"{typ} layer (merge the tensors in stages)")
        if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
            raise ctx.err(f"{where}.inputs", f"expected an array of layer names, got {_show(refs)}")
        if len(refs) < lo or (hi is not None and len(refs) > hi):
            want = f"exactly {lo}" if hi == lo else f"at least {lo}"
            raise ctx.err(f"{where}.inputs", f"{_a(typ)} {typ} layer reads {want} tensors, got {len(refs)}")
        wheres = [f"{where}.inputs[{k}]" for k in range(len(refs))]
    elif "input" in t:
        refs, wheres = [ctx.str_(t["input"], f"{where}.input")], [f"{where}.input"]
    else:
        return ["input"] if i == 0 else [specs[-1].t("out")]
    out = []
    for ref, w in zip(refs, wheres):
        if ref == "input":
            out.append("input")
        elif ref in names and names[ref] < i:
            out.append(f"{ref}.out")
        elif ref in later and later[ref] >= i:
            j = later[ref]
            what = "itself" if j == i else f"layers[{j}] ({ref}), which comes later"
            raise ctx.err(w, f'{_show(ref)} is {what}: a layer reads only the batch ("input") or layers above it '
                             f"(list the layers in the order they run)")
        else:
            from ..errors import did_you_mean
            raise ctx.err(w, f'unknown layer {_show(ref)}{did_you_mean(ref, list(names) + ["input"])}')
    if cls.int_input and out[0] != "input":
        raise ctx.err(wheres[0] if wheres else where, f"{_a(typ)} {typ} layer reads token indices from the data "
                                                      f"(input), not the output of another layer")
    return out


def _dead_branches(ctx, specs):
    """Every layer but the last must be read by a later one (docs/scenario-format.md, "Graph networks"): a dead branch is bad input."""
    read = {x for L in specs for x in L.inputs}
    for L in specs[:-1]:
        if L.t("out") not in read:
            raise ctx.err(f"layers[{L.index}]", f"the output of {L.name} is read by no later layer (a dead branch): "
                                                f"every layer but the last must feed another, and the last "
                                                f"layer's output is the prediction")


def flatten_hint(layers: list[LayerSpec]) -> str:
    """A hint for a shape that went wrong because a linear layer reads the output of a convolution
    or pooling (through layers that keep its shape) without a flatten: a linear works on the last
    dim only, as torch's does, so the image's other dims carry on. "" when there is none."""
    by = {L.t("out"): L for L in layers}
    types = registry.layer_types()
    for L in layers:
        if types[L.type].in_dim != -1 or L.inputs[0] not in by:
            continue
        src = by[L.inputs[0]]
        s = src
        while s is not None and not types[s.type].image and not types[s.type].merge \
                and tuple(s.out_shape) == tuple(s.in_shape):
            s = by.get(s.inputs[0])
        if s is not None and types[s.type].image:
            return (f"; is a flatten missing? layers[{L.index}] ({L.name}) reads layers[{src.index}] ({src.name}), "
                    f"per-sample shape {_fmt_shape(L.in_shape)}, and a linear works on the last dim only, so "
                    f"the other dims carry on: add [[layers]] type = \"flatten\" before it")
    return ""


def check_target(ctx, loss: LossSpec, layers: list[LayerSpec], x, y):
    """The targets as the loss takes them, checked by its class against the prediction's shape
    (and the options that must fit it, such as class weights)."""
    from ..layers.losses import TargetError
    last = layers[-1]
    pred = (x.shape[0],) + tuple(last.out_shape)
    who = f"layers[{last.index}] ({last.name})"
    lo = registry.loss_types()[loss.type](loss)
    try:
        y = lo.target(y, pred, x.dtype, who)
        lo.check(pred, who)
    except TargetError as e:
        raise ctx.err("data.y", str(e) + flatten_hint(layers)) from None
    except OptionError as e:
        raise ctx.err(f"loss.{e.key}", e.message) from None
    return y
