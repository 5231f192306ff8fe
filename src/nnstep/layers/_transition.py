"""While the layer families move into this package: the types not yet moved, each made one
class of the new API from its old two halves (model.catalog's declaration, engine.layers' math),
with the type-specific code the loader and the exporter had. Deleted when the last family moves."""
from __future__ import annotations

import math

from .base import REQUIRED, Layer, Option, OptionError

_made: dict | None = None



def _option(default, kind):
    return Option(REQUIRED if default is None and kind not in ("table", "weights") else default, kind)


def old_types() -> dict:
    global _made
    if _made is None:
        from ..engine import layers as old_math
        from ..model import catalog
        _made = {t: _adapt(catalog.LAYERS[t], old_math.LAYERS[t]) for t in old_math.LAYERS}
    return _made


def _adapt(decl, math_cls):
    t = decl.type

    def __init__(self, spec):
        math_cls.__init__(self, spec.name, spec.options, spec.in_shape, spec.in_shapes)
        self.spec = spec
        self.param_shapes = {p: s for p, s in self.param_shapes.items() if p in spec.params}

    cls = type(math_cls.__name__, (math_cls, Layer), {"__init__": __init__, "__module__": __name__})
    attrs = dict(
        type=t, options={k: _option(d, kind) for k, (d, kind) in decl.options.items()}, params=decl.params,
        symbols=decl.symbols, init=decl.init, bias_params=decl.bias_params, states=decl.states,
        extras=decl.extras, elementwise=decl.elementwise, merge=decl.merge, arity=decl.arity,
        grads_input=decl.grads_input, int_input=decl.int_input, in_dim=0,
        
        shapes=classmethod(lambda c, opts, in_shapes: decl.infer(opts, in_shapes)),
        fans=classmethod(lambda c, opts, in_shape: decl.fans(opts, in_shape)),
        intermediates=classmethod(lambda c, *a: decl.intermediates(*a)),
        forward_formula=classmethod(lambda c, L, n: decl.fwd_formula(L, n)),
        backward_formula=classmethod(lambda c, L, n: decl.bwd_formula(L, n)),
        forward_steps=classmethod(lambda c, L, n: decl.forward_steps(L, n)),
        backward_steps=classmethod(lambda c, L, n: decl.backward_steps(L, n)),
        check_size=classmethod(lambda c, *a: _check_size(t, *a)),
        layout=classmethod(lambda c, p, opts: _layout(t, p, opts)),
        torch_module=classmethod(lambda c, L: _module(L)),
        torch_forward=classmethod(lambda c, L, ins, me, out: _forward_line(L, ins, me, out)),
        torch_param=classmethod(lambda c, L, p, me: _param_ref(L, p, me)),
    )
    if hasattr(decl, "masked"):
        attrs["masked"] = classmethod(lambda c, L: decl.masked(L))
    if hasattr(decl, "ndims"):
        attrs["ndims"] = classmethod(lambda c, o, s: decl.ndims(o, s))
    for k, v in attrs.items():
        setattr(cls, k, v)
    return cls


def _layout(typ, p, opts):
    lay = ""
    if typ in ("rnn", "lstm"):          # torch's layouts, gates stacked i, f, g, o
        G = "4·hidden" if typ == "lstm" else "hidden"
        lay = {"weight_ih": f" ({G}, input features)", "weight_hh": f" ({G}, hidden)"}.get(p, f" ({G},)")
        lay += ", the gates i, f, g, o stacked" if typ == "lstm" else ""
    return lay


def _check_size(typ, name, opts, in_shape, out_shape, batch, smallest, limits):
    from ..layers.base import fmt_shape as _fmt_shape
    from ..scenario.validate import _show
    if typ in ("rnn", "lstm"):
        T, H = in_shape[0], opts["hidden"]
        work = batch * T * T * (H if typ == "rnn" else 6 * H)
        if work > limits.MAX_RECURRENT_WORK:
            raise OptionError(None, f"{name} over {T} time steps would copy {_show(work)} elements per batch, filling its "
                                    f"(N, T, ·) tensors one time step at a time (N·T²·{'hidden' if typ == 'rnn' else '6·hidden'}), "
                                    f"over the limit of {limits.MAX_RECURRENT_WORK} (use fewer time steps or a smaller batch_size)")


from .base import exact as _f  # noqa: E402


def _module(L):
    """(constructor source or None, comment) for a layer that is an nn.Module."""
    o, t = L.options, L.type
    if t == "attention":
        E = L.in_shape[-1]
        bias = "" if o["bias"] else ", bias=False"
        return (f"nn.MultiheadAttention({E}, num_heads={o['heads']}{bias}, batch_first=True)",
                "self-attention: query = key = value = its input")
    if t in ("rnn", "lstm"):
        bias = "" if o["bias"] else ", bias=False"
        nl = f', nonlinearity="{o["nonlinearity"]}"' if t == "rnn" else ""
        return (f"nn.{t.upper()}({L.in_shape[-1]}, {o['hidden']}{nl}{bias}, batch_first=True)",
                "one layer, h0 = 0" + (" and c0 = 0" if t == "lstm" else "") + "; its output: every hidden state")
    return None, ""


def _forward_line(L, ins, me, out):
    """The statement(s) of forward() computing this layer's output."""
    o, t = L.options, L.type
    a = ins[0]
    if t == "attention":
        T = L.in_shape[0]
        if o["causal"]:
            return [f"mask = torch.triu(torch.ones({T}, {T}, dtype=torch.bool), diagonal=1)   # True: key j > query i, hidden",
                    f"{out}, _ = {me}({a}, {a}, {a}, need_weights=False, attn_mask=mask)"]
        return [f"{out}, _ = {me}({a}, {a}, {a}, need_weights=False)"]
    if t in ("rnn", "lstm"):
        return [f"{out}, _ = {me}({a})"]
    return [f"{out} = {me}({a})"]


def _param_ref(L, p, me):
    if L.type == "attention" and p.startswith("out_proj_"):
        return f"{me}.out_proj.{p[len('out_proj_'):]}"
    if L.type in ("rnn", "lstm"):
        return f"{me}.{p}_l0"                 # torch numbers the layers of a stacked RNN: this is layer 0
    return f"{me}.{p}"
