"""`nnstep export FILE --torch -o ref.py` (docs/commands.md): a standalone PyTorch script that rebuilds the
scenario (the same layers, initial weights, data, batches, loss, optimizer and steps) and prints
the `run --json` document (docs/commands.md), so nnstep's numbers can be checked against torch's.

nnstep never imports torch: this module writes Python source text. Every number is written
exactly: Python's ``repr`` of a float64 is the shortest text that reads back as the same float.
The batch order comes from the engine (:meth:`Program.batch_indices`, the one place that decides
it), written out as lists of sample indices when `shuffle` draws it from the seed.

A scenario this module cannot write faithfully (a layer type, loss or optimizer option it does not
know) is refused with a located error, never written approximately.
"""
from __future__ import annotations

import keyword
import math

import numpy as np

from .errors import ScenarioError
from .layers import registry
from .layers.base import exact as _f
from .model.scenario import Scenario

# nn.Module's own attribute names (torch 2.13): a layer of one of these names gets an attribute
# with a trailing underscore, so `self.train` never hides Module.train
_MODULE_ATTRS = frozenset("""T_destination add_module apply bfloat16 buffers call_super_init children compile
cpu cuda double dump_patches eval extra_repr float forward get_buffer get_extra_state get_parameter
get_submodule half ipu load_state_dict modules mtia named_buffers named_children named_modules
named_parameters parameters register_backward_hook register_buffer register_forward_hook
register_forward_pre_hook register_full_backward_hook register_full_backward_pre_hook
register_load_state_dict_post_hook register_load_state_dict_pre_hook register_module register_parameter
register_state_dict_post_hook register_state_dict_pre_hook requires_grad_ set_extra_state set_submodule
share_memory state_dict to to_empty train type xpu zero_grad training""".split())
_LOCAL_NAMES = frozenset({"x", "self", "torch", "nn", "json", "math", "mask"})

_TRAIN_FIELDS = {"steps", "batch_size", "shuffle"}


def _lit(a: np.ndarray, indent: int) -> str:
    """An array as a nested list literal, exact, one innermost row per line."""
    a = np.asarray(a)
    if a.ndim == 0:
        return _f(a.item())
    if a.ndim == 1:
        return "[" + ", ".join(_f(v) for v in a.tolist()) + "]"
    pad = " " * (indent + 4)
    rows = [pad + _lit(r, indent + 4) for r in a]
    return "[\n" + ",\n".join(rows) + ",\n" + " " * indent + "]"


def _refuse(sc: Scenario, where: str, what: str):
    raise ScenarioError(what, file=sc.path, where=where)


def _check_fields(sc: Scenario, obj, known: set, where: str, what: str):
    from .layers import records
    for name, default in records.fields(obj):
        if name in known:
            continue
        default = None if default is records.MISSING else default
        v = getattr(obj, name)
        if v != default and v is not None and not (isinstance(v, (tuple, list, dict)) and not v):
            _refuse(sc, f"{where}.{name}", f"export --torch does not write {what} {name} yet: "
                                             "no script is written rather than a wrong one")


def check_exportable(sc: Scenario) -> None:
    """Raise a located ScenarioError for anything the exporter would not write faithfully. Every
    loss, optimizer and schedule type writes all its options (its class's torch_kwargs); a layer
    type without a torch equivalent is refused."""
    for L in sc.layers:
        if _torch(L, "torch_module", L) is None:
            _refuse(sc, f"layers[{L.index}].type", f"a {L.type} layer has no torch equivalent (its class defines no "
                                                   "torch_module: docs/layers.md): no script is written rather than "
                                                   "a wrong one")
    _check_fields(sc, sc.train, _TRAIN_FIELDS, "train", "train")


class _Names:
    """Python names for layers: attributes of the module and locals of forward()."""

    def __init__(self, sc: Scenario):
        self.attr, self.var = {}, {}
        for L in sc.layers:
            n = L.name
            self.attr[n] = n + "_" if (n in _MODULE_ATTRS or keyword.iskeyword(n) or n.startswith("_")) else n
            self.var[n] = n + "_" if (n in _LOCAL_NAMES or keyword.iskeyword(n)) else n

    def of(self, tensor: str) -> str:
        if tensor == "input":
            return "x"
        return self.var[tensor[:-len(".out")]]


def _torch(L, method: str, *args):
    """A layer class's torch hook (a user's through plugins.call: its code raising is a located error)."""
    cls = registry.layer_type(L.type)
    if registry.is_builtin(cls):
        return getattr(cls, method)(*args)
    from .layers import plugins
    return plugins.call(cls, method, *args)


def _module(L) -> tuple[str | None, str]:
    """(constructor source or None, comment) for a layer that is an nn.Module."""
    return _torch(L, "torch_module", L)


def _forward_line(L, names: _Names) -> list[str]:
    """The statement(s) of forward() computing this layer's output."""
    return _torch(L, "torch_forward", L, [names.of(i) for i in L.inputs], f"self.{names.attr[L.name]}",
                  names.var[L.name])


def _param_ref(L, p: str, names: _Names) -> str:
    return _torch(L, "torch_param", L, p, f"net.{names.attr[L.name]}")


# above this many numbers (data, initial parameters, dropout masks, shuffled orders), they go to an
# .npz beside the script instead of into it
INLINE_LIMIT = 200_000


def size_of(sc: Scenario) -> int:
    """How many numbers the script would hold inline."""
    n = sc.x.size + sc.y.size + sum(int(np.asarray(v).size) for v in sc.initial.values())
    n += sum(int(np.asarray(v).size) for v in sc.initial_states.values())
    n += sum(sc.train.steps * sc.batch_size * math.prod(L.out_shape) for L in _drawn(sc))
    if sc.train.shuffle:
        n += -(-sc.train.steps // sc.n_batches) * sc.n_samples
    return int(n)


class _Arrays:
    """Where the script's arrays live: written inline as exact literals, or (``npz`` names a file)
    stored in that .npz beside the script and read from it by name."""

    def __init__(self, npz: str | None):
        self.npz = npz
        self.arrays: dict[str, np.ndarray] = {}

    def __call__(self, key: str, a, indent: int) -> str:
        a = np.asarray(a)
        if self.npz is None:
            return _lit(a, indent)
        self.arrays[key] = a
        return f'ARRAYS["{key}"]'


def script(sc: Scenario, source: str) -> str:
    """The PyTorch script for ``sc``, every number inline (``source``: the scenario's path, named in
    its docstring)."""
    return build(sc, source, None)[0]


def build(sc: Scenario, source: str, npz: str | None) -> tuple[str, dict]:
    """(the script, the arrays of the .npz ``npz`` beside it; empty when ``npz`` is None)."""
    from .engine.program import Program

    check_exportable(sc)
    A = _Arrays(npz)
    names = _Names(sc)
    dt = "torch.float64" if sc.dtype == "float64" else "torch.float32"
    lo, opt, tr = sc.loss, sc.optimizer, sc.train
    W = []
    w = W.append
    w(f'"""{_doc(sc.name)}: the scenario {_doc(source)}, rebuilt in PyTorch.')
    w("")
    w(f"Written by `nnstep export {_doc(source)} --torch`. Run it with torch installed: it trains the same")
    w("network on the same data, batches, loss and optimizer, and prints the document that")
    w(f"`nnstep run {_doc(source)} --json` prints, so the two can be compared number by number.")
    if npz is None:
        w("Every number below is written exactly (Python's repr of a float64 reads back as the same float).")
    else:
        w(f"The data and initial parameters are in {_doc(npz)} beside it, exactly (float64 .npy arrays).")
    if any(bp.when is not None and bp.when.kind == "compare" for bp in sc.breakpoints):
        w("The scenario's `when` breakpoints are the debugger's: this script runs every step (compare it")
        w("with `nnstep run --json --ignore-breakpoints`).")
    w('"""')
    w("import json")
    w("import math")
    w("")
    if npz is not None:
        w("import os")
        w("")
        w("import numpy as np                   # only to read the arrays file beside this script")
    w("import torch")
    w("from torch import nn")
    w("")
    if npz is not None:
        w(f"ARRAYS = np.load(os.path.join(os.path.dirname(os.path.abspath(__file__)), {npz!r}), allow_pickle=False)")
        w("")
    w(f"DTYPE = {dt}")
    w("torch.set_default_dtype(DTYPE)       # parameters made below are " + sc.dtype)
    w("")
    # --- data ---------------------------------------------------------------------------------------
    w("# --- the data: every sample, batch dimension first ------------------------------------------")
    xdt = "torch.long" if sc.x.dtype.kind in "biu" else "DTYPE"
    ydt = "torch.long" if sc.y.dtype.kind in "biu" else "DTYPE"
    w(f"X = torch.tensor({A('x', sc.x, 0)}, dtype={xdt})" + ("   # token indices" if xdt == "torch.long" else ""))
    w(f"Y = torch.tensor({A('y', sc.y, 0)}, dtype={ydt})" + ("   # class indices" if ydt == "torch.long" else ""))
    w("")
    drawn = _drawn(sc)                   # layers that draw at random (dropout's mask): nnstep's draws are data
    if drawn:
        values = _drawn_values(sc, drawn)
        w("# --- what the layers drew at random, as nnstep drew them --------------------------------------")
        w("# nnstep draws from the scenario's seed, the step and the layer (numpy's PCG64), so that every")
        w("# replay shows the same numbers; torch's generator would draw others. So they are data here:")
        w("# RANDOM[layer][k - 1] is step k's (dropout: its mask, 0 (dropped) or 1/(1 − p) (kept)); STEP is")
        w("# the step being trained.")
        w("RANDOM = {")
        for L in drawn:
            w(f"    {L.name!r}: [")
            for k, m in enumerate(values[L.name], 1):
                w(f"        # step {k}")
                w(f"        {A(f'random/{L.name}/{k}', m, 8)},")
            w("    ],")
        w("}")
        w("STEP = 1")
        w("")
        w("")
    sources: dict[str, str] = {}          # the module classes the layer types need (a user's own), by source
    for L in sc.layers:
        src = registry.layer_type(L.type).torch_source.strip("\n")
        if src:
            sources.setdefault(src, L.type)
    for src, typ in sources.items():
        w(f"# --- what the {typ} layer type's torch equivalent needs (its class's torch_source) " + "-" * 20)
        W.extend(src.split("\n"))
        w("")
        w("")
    # --- the network --------------------------------------------------------------------------------
    w("# --- the network: one attribute per [[layers]] entry, named as in the scenario ---------------")
    w("class Net(nn.Module):")
    w("    def __init__(self):")
    w("        super().__init__()")
    for L in sc.layers:
        ctor, note = _module(L)
        if ctor is not None:
            w(f"        self.{names.attr[L.name]} = {ctor}" + (f"   # {note}" if note else ""))
    if not any(_module(L)[0] for L in sc.layers):
        w("        pass")
    w("")
    w("    def forward(self, x):")
    for L in sc.layers:
        for line in _forward_line(L, names):
            w(f"        {line}")
    w(f"        return {names.var[sc.layers[-1].name]}")
    w("")
    w("")
    w("net = Net()")
    w("net.train()                          # training mode, as nnstep steps it (batch statistics, dropout)")
    w("")
    w("# nnstep's parameter names and the torch tensors they are")
    w("PARAMS = {")
    for L in sc.layers:
        for p in L.params:
            w(f'    "{L.name}.{p}": {_param_ref(L, p, names)},')
    w("}")
    w("")
    w("# --- the initial parameters, exactly the scenario's --------------------------------------------")
    w("INITIAL = {")
    for name in sc.param_names:
        w(f'    "{name}": {A("initial/" + name, np.asarray(sc.initial[name], dtype=np.float64), 4)},')
    w("}")
    w("with torch.no_grad():")
    w("    for name, value in INITIAL.items():")
    w("        PARAMS[name].copy_(torch.tensor(value, dtype=DTYPE))")
    if sc.initial_states:
        w("")
        w("# the layers' states from the scenario's weights file (batchnorm's running statistics)")
        w("STATES = {")
        for name, value in sc.initial_states.items():
            layer, st = name.rsplit(".", 1)
            L = next(L for L in sc.layers if L.name == layer)
            w(f'    "{name}": ({_param_ref(L, st, names)}, {A("state/" + name, np.asarray(value, dtype=np.float64), 4)}),')
        w("}")
        w("with torch.no_grad():")
        w("    for buffer, value in STATES.values():")
        w("        buffer.copy_(torch.tensor(value, dtype=DTYPE))")
    frozen = [p for p in sc.param_names if p not in sc.trainable]
    if frozen:
        w("")
        w("# frozen parameters: their gradient is still computed by nnstep, but they are never updated")
        w(f"for name in {frozen!r}:")
        w("    PARAMS[name].requires_grad_(False)")
    w(f"TRAINABLE = {sc.trainable!r}")
    w("")
    # --- loss ---------------------------------------------------------------------------------------
    w("# --- the loss -----------------------------------------------------------------------------------")
    loss = registry.loss_types()[lo.type](lo)
    kw = [f'reduction="{lo.reduction}"'] + loss.torch_kwargs()
    w(f"loss_fn = nn.{loss.torch_class}({', '.join(kw)})")
    p_expr, y_expr, why = loss.torch_call(1 + len(sc.layers[-1].out_shape), sc.y.dtype.kind == "f")
    w("")
    w("")
    w("def loss_of(pred, y):")
    if why:
        w(f"    # {why}")
    call = f"loss_fn({p_expr}, {y_expr})"
    if lo.scale != 1:
        w(f"    return {call} * {_f(lo.scale)}   # loss.scale")
    else:
        w(f"    return {call}")
    w("")
    w("")
    # --- optimizer ----------------------------------------------------------------------------------
    w("# --- the optimizer (foreach=False: one parameter at a time, the loop torch's documentation shows) --")
    params = "[PARAMS[name] for name in TRAINABLE]"
    if not sc.trainable:
        w("# nothing to train here, but torch's optimizers (and so the schedules) need one parameter:")
        w("# an empty tensor stands in for it")
        params = "[torch.zeros(0, requires_grad=True)]"
    optimizer = registry.optimizer_types()[opt.type](opt)
    okw = [f"lr={_f(opt.lr)}"] + optimizer.torch_kwargs()
    w(f"optimizer = torch.optim.{optimizer.torch_class}({params}, {', '.join(okw)}, foreach=False)")
    sch = opt.schedule
    if sch is not None:
        for line in registry.schedule_types()[sch.type](sch, opt).torch_lines():
            w(line)
    w("")
    # --- batches ------------------------------------------------------------------------------------
    w("# --- the batches ---------------------------------------------------------------------------------")
    B, bs, N = sc.n_batches, sc.batch_size, sc.n_samples
    n = tr.steps
    if tr.shuffle:
        prog = Program(sc)
        passes = -(-n // B)
        w(f"# {N} samples in batches of {bs}: step k takes batch b = (k − 1) mod {B} of pass p = (k − 1) // {B}.")
        w("# shuffle = true: nnstep draws each pass's order from the seed (numpy's PCG64, which torch")
        w("# does not have), so the orders are written out here, one list of sample indices per pass.")
        orders = [np.concatenate([np.asarray(prog.batch_indices(p * B + b + 1)) for b in range(B)])
                  for p in range(passes)]
        if npz is None:
            w("ORDER = [")
            for p, idx in enumerate(orders):
                w(f"    {idx.tolist()!r},   # pass {p + 1}")
            w("]")
        else:
            w(f"ORDER = {A('order', np.stack(orders), 0)}   # row p - 1: pass p's order")
        w(f"BATCH_SIZE, N_BATCHES = {bs}, {B}")
        w("")
        w("")
        w("def batch(k):")
        w("    b, p = (k - 1) % N_BATCHES, (k - 1) // N_BATCHES")
        w("    idx = torch.tensor(ORDER[p][b * BATCH_SIZE:(b + 1) * BATCH_SIZE])")
        w("    return X[idx], Y[idx]")
    elif B == 1:
        w(f"# train.batch_size = {tr.batch_size}: every step takes the whole data, " +
          (f"all {N} samples in order" if N > 1 else "its one sample"))
        w("def batch(k):")
        w("    return X, Y")
    else:
        w(f"# {N} samples in batches of {bs}: step k takes the consecutive slice b = (k − 1) mod {B}")
        w(f"# (the last may be smaller)")
        w(f"BATCH_SIZE, N_BATCHES = {bs}, {B}")
        w("")
        w("")
        w("def batch(k):")
        w("    b = (k - 1) % N_BATCHES")
        w("    return X[b * BATCH_SIZE:(b + 1) * BATCH_SIZE], Y[b * BATCH_SIZE:(b + 1) * BATCH_SIZE]")
    w("")
    w("")
    # --- JSON ---------------------------------------------------------------------------------------
    w("def as_json(t):")
    w('    """A tensor as nested lists of floats; a non-finite number as "nan", "inf" or "-inf", as nnstep prints them."""')
    w("    def fix(v):")
    w("        if isinstance(v, list):")
    w("            return [fix(e) for e in v]")
    w("        if math.isfinite(v):")
    w("            return v")
    w('        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")')
    w("    return fix(t.detach().to(torch.float64).tolist())")
    w("")
    w("")
    # --- training -----------------------------------------------------------------------------------
    w("# --- training: the steps nnstep steps through --------------------------------------------------")
    w(f"STEPS = {n}")
    w(f'doc = {{"scenario": {json_str(sc.name)}, "dtype": "{sc.dtype}",')
    w('       "initial": {name: as_json(p) for name, p in PARAMS.items()}, "steps": []}')
    w("for k in range(1, STEPS + 1):")
    w("    x, y = batch(k)")
    if drawn:
        w("    STEP = k                                     # the step whose random draws the layers use")
    w("    optimizer.zero_grad()")
    w("    loss = loss_of(net(x), y)                    # forward and loss")
    if sc.trainable:
        w("    loss.backward()                              # backward: every .grad")
    w("    grads = {name: PARAMS[name].grad.clone() for name in TRAINABLE}" +
      ("   # reported before clipping" if opt.clip_grad_norm is not None else ""))
    if opt.clip_grad_norm is not None:
        w(f"    torch.nn.utils.clip_grad_norm_({params}, {_f(opt.clip_grad_norm)}, foreach=False)")
    if sch is not None:
        w('    lr = optimizer.param_groups[0]["lr"]          # the lr in force for this step')
    w("    optimizer.step()                             # update")
    if sch is not None:
        w("    scheduler.step()                             # the next step's lr")
    w("    # nnstep stops at the first operation that produces a NaN/Inf, and that step is not reported")
    w('    computed = {"loss": loss, **{name + ".grad": g for name, g in grads.items()},')
    w("                **{name: PARAMS[name] for name in TRAINABLE}}")
    w("    bad = [name for name, t in computed.items() if not torch.isfinite(t).all()]")
    w("    if bad:")
    w('        doc["stopped"] = {"step": k, "op": None, "tensor": bad[0], "reason": "nonfinite"}')
    w("        break")
    w('    doc["steps"].append({"step": k, "loss": as_json(loss),')
    w('                         "grads": {name: as_json(g) for name, g in grads.items()},')
    w('                         "params": {name: as_json(PARAMS[name]) for name in TRAINABLE}})')
    if sch is not None:
        w('    doc["steps"][-1]["lr"] = lr')
    w("print(json.dumps(doc))")
    return "\n".join(W) + "\n", A.arrays


def _drawn(sc: Scenario) -> list:
    """The layers whose forward draws an extra tensor at random (a class's ``torch_random_extra``)."""
    return [L for L in sc.layers if registry.layer_type(L.type).torch_random_extra]


def _drawn_values(sc: Scenario, layers) -> dict:
    """Every step's random draw of each layer, as the engine draws them (one run of the program:
    the draw of step k depends on the step and the batch's shape only)."""
    from .engine.program import Program
    from .engine.runner import advance

    prog = Program(sc)
    env = prog.initial_env()
    out = {L.name: [] for L in layers}
    extra = {L.name: L.t(registry.layer_type(L.type).torch_random_extra) for L in layers}

    def step_done(k1):
        for L in layers:
            out[L.name].append(np.asarray(env[extra[L.name]], dtype=np.float64))

    prog.feed(env, 1)
    advance(prog, env, 1, 0, sc.train.steps * len(prog.ops), sc.train.steps, None, on_boundary=step_done)
    return out


def json_str(s: str) -> str:
    import json
    return json.dumps(s)


def _doc(s: str) -> str:
    """Text safe inside a triple-quoted docstring."""
    return s.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')


def cmd_export(path: str, output: str) -> int:
    from .fileio import atomic_write_text
    from .scenario import load_scenario

    import os

    from .fileio import check_output

    sc = load_scenario(path)
    check_output(output, "-o", "the script", "ref.py", sc.inputs)
    npz = None
    if size_of(sc) > INLINE_LIMIT:
        npz = os.path.splitext(os.path.basename(output))[0] + ".arrays.npz"
        check_output(os.path.join(os.path.dirname(output), npz), "-o", "the script's arrays (beside it, named after "
                     "it)", "ref.py", sc.inputs)
    text, arrays = build(sc, path, npz)
    if npz is not None:
        from .fileio import save_npz
        save_npz(os.path.join(os.path.dirname(output), npz), arrays)
    atomic_write_text(output, text)
    import sys
    beside = f" (and its arrays, {os.path.join(os.path.dirname(output), npz)})" if npz else ""
    sys.stdout.write(f"wrote {output}{beside}: {sc.name} in PyTorch ({len(sc.layers)} layers, {sc.train.steps} "
                     f"step{'s' if sc.train.steps != 1 else ''}); run it with `python {output}`\n")
    return 0
