"""The catalogue: every layer, loss and optimizer type nnstep knows, with torch's names.

For each layer type: its options (default, kind), parameters (with the symbols the screen uses),
persistent state, the intermediates its forward writes, its shape rule, its fans for torch's default
initialization, and its formulas as structured clauses (:mod:`.formula`). The scenario loader
validates against these tables; the plan (:mod:`.plan`) builds the operations from them; the engine
supplies the math for each type under the same name. Nothing here computes a number.

Option kinds (checked by the loader): ``posint`` > 0, ``nonnegint`` >= 0, ``posfloat`` > 0,
``nonnegfloat`` >= 0, ``float``, ``prob`` in [0, 1], ``prob_open`` in [0, 1), ``bool``, ``posints``
/ ``nonnegints`` (an integer or a list of 1 or 2), ``choice:a|b``.
"""
from __future__ import annotations

from ..errors import cut
from .records import record

import math
from typing import Any

from .formula import Clause, Const, Count, F, Formula, Ref, StepNum, StepPow, Sym


# torch's clamp of BCE's gradient denominator, max((1 − p)·p, ε): its C++ literal 1e-12 is stored in a
# float, so ε is float32's nearest value even in float64 (aten binary_cross_entropy_backward)
BCE_EPS = 9.999999960041972e-13


class ShapeError(ValueError):
    """A layer cannot take the shape it is given; the loader turns this into a located error."""


def fmt_shape(s) -> str:
    """A shape as text, cut as a message cuts any value (a shape of the user's can hold 19-digit
    sizes: docs/errors.md promises 60 characters)."""
    return cut("[" + ", ".join(str(d) for d in s) + "]")


# =================================================================================================
# Layers
# =================================================================================================
@record(frozen=True)
class Step:
    """One operation of a layer that takes several (attention's sub-steps, an RNN's time steps):
    ``forward <layer> <suffix>`` / ``backward <layer> <suffix>``. ``ins``/``outs`` are
    (tensor, role) pairs; the engine binds ``kind`` to the layer's method of that name, called as
    ``method(env, k)``, or ``method(env, k, arg)`` when the step carries an ``arg`` (an RNN's time
    index: one method for every time step)."""
    suffix: str
    kind: str
    ins: tuple[tuple[str, str], ...]
    outs: tuple[tuple[str, str], ...]
    formula: Formula
    labels: tuple[tuple[str, str], ...] = ()     # (tensor, label) where the role's default label is vague
    arg: Any = None                              # passed to the method (None: not passed)


class LayerType:
    type: str = ""
    options: dict[str, tuple[Any, str]] = {}
    params: tuple[str, ...] = ()
    symbols: dict[str, str] = {"weight": "W", "bias": "b"}
    states: tuple[str, ...] = ()        # persistent non-parameter tensors (batchnorm's running stats)
    extras: tuple[str, ...] = ()        # intermediates the forward op writes too
    elementwise = False                 # its backward writes <layer>.local = d out / d in
    merge = False                       # reads `inputs = [...]`, two or more tensors
    init: dict[str, str] = {"bias": "bias"}     # a parameter's default init; others take the layer's `init`
    needs_in_grad_work = False          # grad_in costs real work (linear, conv): `run` may skip it
    grads_input = True                  # its backward sends a gradient to its input (not embedding's indices)
    arity = (1, 1)                      # how many inputs it reads (merge layers: 2 or more)
    bias_params: tuple[str, ...] = ("bias",)    # what `bias = false` removes
    int_input = False                   # reads integer data (token indices)

    @classmethod
    def forward_steps(cls, L, n) -> list[Step] | None:
        """Several forward operations instead of one (None: the one ``forward <layer>``)."""
        return None

    @classmethod
    def backward_steps(cls, L, n) -> list[Step] | None:
        """Several backward operations, in the order they run (None: the one ``backward <layer>``)."""
        return None

    @classmethod
    def infer(cls, opts: dict, in_shapes: list[tuple[int, ...]]):
        """(out_shape, {param: shape}) for these per-sample input shapes; ShapeError if they
        don't fit."""
        return tuple(in_shapes[0]), {}

    @classmethod
    def fans(cls, opts: dict, in_shape: tuple[int, ...]) -> tuple[int, int]:
        return 1, 1

    @classmethod
    def intermediates(cls, opts: dict, in_shapes, out_shape) -> list[tuple[str, tuple[int, ...], int]]:
        """The tensors besides its output that the layer's forward keeps, or that its forward or
        backward makes larger than its inputs, output and parameters: (name, per-sample shape, how
        many of them the forward keeps; 0 for one the backward makes and drops). The loader holds
        each to the limits of a layer's output before anything is allocated: one tensor's elements
        for a batch, and the ones kept in the sum over the network. A name that is an identifier is the tensor's, ``<layer>.<name>``; any other
        describes it. Every other tensor a layer makes (element-wise locals, batch statistics,
        gradients) is at most the size of an input, the output or a parameter."""
        return []

    @classmethod
    def masked_tensors(cls, L) -> dict:
        """{tensor: where a mask hides its cells}, for the tensors of the layer laid out (…, R, C)
        whose cells a mask of the layer hides, each with its (R, C) boolean array, True where hidden
        (a screen marks those cells). None here."""
        return {}

    # --- formulas: the plan passes the names (see plan.Names) -------------------------------------
    @classmethod
    def fwd_formula(cls, L, n) -> Formula:
        return F("{out} = {x}", out=n.out, x=n.x)

    @classmethod
    def bwd_formula(cls, L, n) -> Formula:
        return F("{gin} = {g}", gin=n.gin, g=n.g)


def _opts_tuple(v, nd):
    return tuple(v) if isinstance(v, (list, tuple)) else (v,) * nd


class Linear(LayerType):
    type = "linear"
    options = {"out": (None, "posint")}
    params = ("weight", "bias")
    needs_in_grad_work = True

    @classmethod
    def infer(cls, opts, in_shapes):
        s = in_shapes[0]
        if len(s) < 1:
            raise ShapeError(f"linear needs an input with a feature dimension, got per-sample shape {fmt_shape(s)}")
        return s[:-1] + (opts["out"],), {"weight": (opts["out"], s[-1]), "bias": (opts["out"],)}

    @classmethod
    def fans(cls, opts, in_shape):
        return in_shape[-1], opts["out"]

    @classmethod
    def fwd_formula(cls, L, n):
        b = " + {b}" if L.has("bias") else ""
        return F("{out} = {x} @ {W}ᵀ" + b, out=n.out, x=n.x, W=n.p("weight"), b=n.p("bias"))

    @classmethod
    def bwd_formula(cls, L, n):
        rows = "the batch" if len(L.in_shape) == 1 else "the batch and the leading dims"
        t = "{Wg} = {g}ᵀ @ {x}"
        if L.has("bias"):
            t += ";  {bg} = Σₙ {g}"
        t += ";  {gin} = {g} @ {W};  (sums run over the rows of " + rows + ")"
        return F(t, Wg=n.pg("weight"), bg=n.pg("bias"), g=n.g, x=n.x, gin=n.gin, W=n.p("weight"))


class _Conv(LayerType):
    nd = 1
    options = {"out_channels": (None, "posint"), "kernel_size": (None, "posints"),
               "stride": (1, "posints"), "padding": (0, "nonnegints")}
    params = ("weight", "bias")
    needs_in_grad_work = True

    @classmethod
    def infer(cls, opts, in_shapes):
        nd, s = cls.nd, in_shapes[0]
        if len(s) != nd + 1:
            want = "(N, C, L)" if nd == 1 else "(N, C, H, W)"
            raise ShapeError(f"{cls.type} expects input {want}, so a per-sample shape of {nd + 1} dims, "
                             f"got {fmt_shape(s)}")
        k, st, p = (_opts_tuple(opts[o], nd) for o in ("kernel_size", "stride", "padding"))
        for name, v in (("kernel_size", k), ("stride", st), ("padding", p)):
            if len(v) != nd:
                raise ShapeError(f"{name} must be an integer or a list of {nd}, got {list(v)}")
        spatial = []
        for d in range(nd):
            if s[1 + d] + 2 * p[d] < k[d]:
                raise ShapeError(f"kernel_size {list(k)} is larger than the padded input "
                                 f"{fmt_shape(tuple(s[1 + i] + 2 * p[i] for i in range(nd)))}")
            spatial.append((s[1 + d] + 2 * p[d] - k[d]) // st[d] + 1)
        cout = opts["out_channels"]
        return (cout, *spatial), {"weight": (cout, s[0], *k), "bias": (cout,)}

    @classmethod
    def fans(cls, opts, in_shape):
        k = math.prod(_opts_tuple(opts["kernel_size"], cls.nd))
        return in_shape[0] * k, opts["out_channels"] * k

    @classmethod
    def _geometry(cls, L) -> str:
        st, p = (_opts_tuple(L.options[o], cls.nd) for o in ("stride", "padding"))
        one = lambda v: str(v[0]) if len(set(v)) == 1 else "(" + ", ".join(map(str, v)) + ")"  # noqa: E731
        dims = "" if cls.nd == 1 else ", i and k over each of the 2 spatial dims"
        return f"(cross-correlation, stride s = {one(st)}, padding p = {one(p)} zeros on each side{dims})"

    @classmethod
    def fwd_formula(cls, L, n):
        b = " + {b}[o]" if L.has("bias") else ""
        return F("{out}[n, o, i] = Σ_c,k {x}[n, c, s·i + k − p] · {W}[o, c, k]" + b + ";  " + cls._geometry(L),
                 out=n.out, x=n.x, W=n.p("weight"), b=n.p("bias"))

    @classmethod
    def bwd_formula(cls, L, n):
        t = "{Wg}[o, c, k] = Σ_n,i {g}[n, o, i] · {x}[n, c, s·i + k − p]"
        if L.has("bias"):
            t += ";  {bg}[o] = Σ_n,i {g}[n, o, i]"
        t += ";  {gin}[n, c, j] = Σ_o,i,k {g}[n, o, i] · {W}[o, c, k] over s·i + k − p = j;  " + cls._geometry(L)
        return F(t, Wg=n.pg("weight"), bg=n.pg("bias"), g=n.g, x=n.x, gin=n.gin, W=n.p("weight"))


class Conv1d(_Conv):
    type = "conv1d"
    nd = 1


class Conv2d(_Conv):
    type = "conv2d"
    nd = 2


class Flatten(LayerType):
    type = "flatten"

    @classmethod
    def infer(cls, opts, in_shapes):
        return (math.prod(in_shapes[0]),), {}

    @classmethod
    def fwd_formula(cls, L, n):
        return F("{out} = reshape({x}, [N, −1])", out=n.out, x=n.x)

    @classmethod
    def bwd_formula(cls, L, n):
        return F("{gin} = reshape({g}, " + fmt_shape(("N",) + tuple(L.in_shape)) + ")", gin=n.gin, g=n.g)


class _Norm(LayerType):
    params = ("weight", "bias")
    bias_params = ()                # no bias switch: `affine = false` leaves out γ and β together, as torch's
    symbols = {"weight": "γ", "bias": "β"}
    extras = ("mean", "var")
    init = {"weight": "ones", "bias": "zeros"}
    psum = "Σ"                      # the sum over what the parameters are shared across
    shared = ""                     # what the statistics' sums run over

    @classmethod
    def _count(cls, L, n) -> Count:
        """How many values one mean and variance are taken over."""
        raise NotImplementedError

    @classmethod
    def bwd_formula(cls, L, n):
        t = "x̂ = ({x} − {mean}) / √({var} + {eps})"
        if L.has("weight"):
            t += ";  {Wg} = " + cls.psum + " {g} ⊙ x̂;  {bg} = " + cls.psum + " {g};  ĝ = {g} ⊙ {W}"
        else:
            t += ";  ĝ = {g}"
        t += ";  {gin} = (1/{c}) / √({var} + {eps}) · ({c}·ĝ − Σĝ − x̂·Σ(ĝ ⊙ x̂));  (Σ over " + cls.shared + ")"
        return F(t, x=n.x, mean=n.e("mean"), var=n.e("var"), eps=Const("ε", L.options["eps"]), g=n.g,
                 Wg=n.pg("weight"), bg=n.pg("bias"), W=n.p("weight"), gin=n.gin, c=cls._count(L, n))


class BatchNorm(_Norm):
    """Training mode: batch statistics (biased variance); running stats with the unbiased one.
    (N, C) and (N, C, L) as BatchNorm1d, (N, C, H, W) as BatchNorm2d."""
    type = "batchnorm"
    options = {"eps": (1e-5, "posfloat"), "momentum": (0.1, "prob"), "affine": (True, "bool")}
    states = ("running_mean", "running_var")

    @classmethod
    def infer(cls, opts, in_shapes):
        s = in_shapes[0]
        if len(s) not in (1, 2, 3):
            raise ShapeError(f"batchnorm expects (N, C), (N, C, L) or (N, C, H, W), got per-sample shape "
                             f"{fmt_shape(s)}")
        return s, ({"weight": (s[0],), "bias": (s[0],)} if opts["affine"] else {})

    shared = "n and positions, per channel"

    @classmethod
    def _count(cls, L, n):
        return Count("n", n.x.name, (0,) + tuple(range(2, 1 + len(L.in_shape))))

    @classmethod
    def fwd_formula(cls, L, n):
        aff = "{W} ⊙ x̂ + {b}" if L.has("weight") else "x̂"
        over = "meanₙ" if len(L.in_shape) == 1 else "mean over n and positions"
        return F("{mean} = " + over + " {x};  {var} = " + over + " ({x} − {mean})²;  "
                 "x̂ = ({x} − {mean}) / √({var} + {eps});  {out} = " + aff + ";  "
                 "{rm} ← (1 − {m})·{rm} + {m}·{mean};  {rv} ← (1 − {m})·{rv} + {m}·{var}·{n}/({n} − 1)",
                 mean=n.e("mean"), var=n.e("var"), x=n.x, out=n.out, W=n.p("weight"), b=n.p("bias"),
                 eps=Const("ε", L.options["eps"]), m=Const("m", L.options["momentum"]),
                 rm=Ref(L.t("running_mean"), "state"), rv=Ref(L.t("running_var"), "state"), n=cls._count(L, n))


class LayerNorm(_Norm):
    """Over the last ``dims`` dimensions (default: every non-batch one); biased variance, eps inside
    the square root."""
    type = "layernorm"
    options = {"eps": (1e-5, "posfloat"), "affine": (True, "bool"), "dims": (0, "posint")}   # 0: all

    @classmethod
    def ndims(cls, opts, in_shape) -> int:
        return opts.get("dims") or len(in_shape)

    @classmethod
    def infer(cls, opts, in_shapes):
        s = in_shapes[0]
        d = cls.ndims(opts, s)
        if d > len(s) or d < 1:
            raise ShapeError(f"dims = {opts.get('dims')} but the per-sample shape {fmt_shape(s)} has {len(s)} "
                             f"dimension{'s' if len(s) != 1 else ''}")
        shp = tuple(s[len(s) - d:])
        return s, ({"weight": shp, "bias": shp} if opts["affine"] else {})

    psum = "Σₙ"
    shared = "the normalized values"

    @classmethod
    def _count(cls, L, n):
        d = cls.ndims(L.options, L.in_shape)
        return Count("D", n.x.name, tuple(range(1 + len(L.in_shape) - d, 1 + len(L.in_shape))))

    @classmethod
    def fwd_formula(cls, L, n):
        aff = "{W} ⊙ x̂ + {b}" if L.has("weight") else "x̂"
        return F("{mean} = mean {x} over its last {D} values;  {var} = mean ({x} − {mean})²;  "
                 "x̂ = ({x} − {mean}) / √({var} + {eps});  {out} = " + aff,
                 mean=n.e("mean"), var=n.e("var"), x=n.x, out=n.out, W=n.p("weight"), b=n.p("bias"),
                 eps=Const("ε", L.options["eps"]), D=cls._count(L, n))


# --- element-wise activations --------------------------------------------------------------------
class _Elementwise(LayerType):
    elementwise = True
    fwd = "{out} = {x}"
    loc = "{local} = 1"

    @classmethod
    def fwd_formula(cls, L, n):
        return F(cls.fwd, out=n.out, x=n.x, **cls.consts(L))

    @classmethod
    def bwd_formula(cls, L, n):
        return F(cls.local_template(L) + ";  {gin} = {g} ⊙ {local}", local=n.local, gin=n.gin, g=n.g, x=n.x,
                 out=n.outr, **cls.consts(L))

    @classmethod
    def local_template(cls, L) -> str:
        return cls.loc

    @classmethod
    def consts(cls, L) -> dict:
        return {}


class ReLU(_Elementwise):
    type = "relu"
    fwd = "{out} = max({x}, 0)"
    loc = "{local} = [{x} > 0]   (0 at 0, as torch)"


class LeakyReLU(_Elementwise):
    type = "leaky_relu"
    options = {"negative_slope": (0.01, "float")}
    fwd = "{out} = {x} where {x} > 0, else {a}·{x}"
    loc = "{local} = 1 where {x} > 0, else {a}"

    @classmethod
    def consts(cls, L):
        return {"a": Const("a", L.options["negative_slope"])}


class Sigmoid(_Elementwise):
    type = "sigmoid"
    fwd = "{out} = σ({x}) = 1 / (1 + e^(−{x}))"
    loc = "{local} = {out} ⊙ (1 − {out})"


class Tanh(_Elementwise):
    type = "tanh"
    fwd = "{out} = tanh({x})"
    loc = "{local} = 1 − {out}²"


class GELU(_Elementwise):
    type = "gelu"
    options = {"approximate": ("none", "choice:none|tanh")}

    @classmethod
    def fwd_formula(cls, L, n):
        if L.options["approximate"] == "tanh":
            return F("{out} = ½·{x}·(1 + tanh(√(2/π)·({x} + 0.044715·{x}³)))", out=n.out, x=n.x)
        return F("{out} = {x}·Φ({x}) = ½·{x}·(1 + erf({x}/√2))", out=n.out, x=n.x)

    @classmethod
    def local_template(cls, L):
        if L.options["approximate"] == "tanh":
            return ("t = tanh(√(2/π)·({x} + 0.044715·{x}³));  "
                    "{local} = ½·(1 + t) + ½·{x}·(1 − t²)·√(2/π)·(1 + 3·0.044715·{x}²)")
        return "{local} = Φ({x}) + {x}·φ({x})   (Φ, φ: the normal CDF and density)"


class Identity(_Elementwise):
    type = "identity"


class Softmax(LayerType):
    type = "softmax"
    options = {"dim": (-1, "int")}

    @classmethod
    def infer(cls, opts, in_shapes):
        s = in_shapes[0]
        if len(s) < 1:
            raise ShapeError(f"{cls.type} needs a feature dimension")
        _check_dim(opts["dim"], s)
        return s, {}

    @classmethod
    def fwd_formula(cls, L, n):
        return F("{out} = e^({x} − max) / Σ e^({x} − max)   (over dim " + _dim_text(L) + ", max-shifted)",
                 out=n.out, x=n.x)

    @classmethod
    def bwd_formula(cls, L, n):
        return F("{gin} = {out} ⊙ ({g} − Σ({g} ⊙ {out}))   (Σ over dim " + _dim_text(L) + ")",
                 gin=n.gin, out=n.outr, g=n.g)


def _check_dim(dim: int, s: tuple[int, ...], what: str = "dim"):
    """``dim`` counts the batch as dim 0 (as torch on the batched tensor); dim 0 itself is refused."""
    nd = len(s) + 1
    if not (-nd <= dim < nd) or dim % nd == 0:
        raise ShapeError(f"{what} = {dim} is not a non-batch dimension of a tensor of shape "
                         f"{fmt_shape(('N',) + tuple(s))} (use 1 to {nd - 1}, or -1 to -{nd - 1})")


def _dim_text(L) -> str:
    d = L.options.get("dim", -1)
    return "-1, the last" if d == -1 else str(d)


LAYERS: dict[str, type[LayerType]] = {c.type: c for c in (
    Linear, Conv1d, Conv2d, Flatten, BatchNorm, LayerNorm, ReLU, LeakyReLU, Sigmoid, Tanh, Softmax,
    GELU, Identity)}

INITS = ("kaiming_uniform", "kaiming_normal", "xavier_uniform", "xavier_normal", "zeros")

from .catalog_graph import GRAPH_LAYERS  # noqa: E402  (they build on LayerType above)

LAYERS.update(GRAPH_LAYERS)

from .catalog_rnn import RNN_LAYERS  # noqa: E402

LAYERS.update(RNN_LAYERS)

from .catalog_pool import POOL_LAYERS, nll_formulas  # noqa: E402  (pooling, dropout, log_softmax; nll)

LAYERS.update(POOL_LAYERS)


# =================================================================================================
# Losses
# =================================================================================================
LOSSES = ("mse", "l1", "smooth_l1", "huber", "cross_entropy", "bce", "bce_with_logits", "nll")
LOSS_OPTIONS: dict[str, dict[str, tuple[Any, str]]] = {t: {} for t in LOSSES}
LOSS_OPTIONS["smooth_l1"] = {"beta": (1.0, "nonnegfloat")}
LOSS_OPTIONS["huber"] = {"delta": (1.0, "posfloat")}
LOSS_OPTIONS["cross_entropy"] = {"class_dim": (1, "int"), "label_smoothing": (0.0, "prob"), "weight": (None, "weights")}
LOSS_OPTIONS["bce_with_logits"] = {"pos_weight": (None, "weights")}
LOSS_OPTIONS["nll"] = {"class_dim": (1, "int")}
LOSS_COMMON = {"reduction": ("mean", "choice:mean|sum"), "scale": (1.0, "float")}


def loss_formulas(lo, pred: str, target_is_index: bool, pred_ndim: int) -> tuple[Formula, Formula]:
    """(loss, backward loss) formulas of a LossSpec, for the prediction tensor ``pred`` (of
    ``pred_ndim`` dimensions, the batch included). With a scale, each ends in a remark that says
    what s is, so wherever the formula is shown (without its numbers too) s is defined."""
    f, b = _loss_formulas(lo, pred, target_is_index, pred_ndim)
    if lo.scale == 1:
        return f, b
    what = Clause((f"(s = {lo.scale:g}: the scenario's loss.scale, multiplying the loss and its gradient)",), (), "")
    return f + (what,), b + (what,)


def _loss_formulas(lo, pred: str, target_is_index: bool, pred_ndim: int) -> tuple[Formula, Formula]:
    P, Y = Ref(pred, "prediction"), Ref("target", "target")
    L, G = Ref("loss", "loss"), Ref("loss.grad", "loss_grad")
    s = "{s} · " if lo.scale != 1 else ""
    mean = lo.reduction == "mean"
    if lo.type == "cross_entropy":
        # cross_entropy's mean is over the batch and any spatial positions: the class dim is 1
        cd = lo.class_dim % pred_ndim
        n = Count("N", "target") if target_is_index else Count("N", pred, tuple(a for a in range(pred_ndim) if a != cd))
    else:
        n = Count("n", pred)                   # every element
    div = " / {n}" if mean else ""
    kw = dict(P=P, Y=Y, L=L, G=G, s=Const("s", lo.scale), n=n, beta=Const("β", lo.beta), delta=Const("δ", lo.delta))
    t = lo.type
    if t == "nll":
        return nll_formulas(lo, pred, pred_ndim, kw)
    if t == "mse":
        return (F("{L} = " + s + "Σ ({P} − {Y})²" + div, **kw), F("{G} = " + s + "2·({P} − {Y})" + div, **kw))
    if t == "l1":
        return (F("{L} = " + s + "Σ |{P} − {Y}|" + div, **kw),
                F("{G} = " + s + "sign({P} − {Y})" + div + "   (0 at 0)", **kw))
    if t == "smooth_l1":
        if lo.beta == 0:
            return (F("{L} = " + s + "Σ |{P} − {Y}|" + div + "   (β = 0: L1)", **kw),
                    F("{G} = " + s + "sign({P} − {Y})" + div + "   (β = 0: L1)", **kw))
        return (F("d = {P} − {Y};  {L} = " + s + "Σ (0.5·d²/{beta} where |d| < {beta}, else |d| − 0.5·{beta})" + div, **kw),
                F("d = {P} − {Y};  {G} = " + s + "(d/{beta} where |d| < {beta}, else sign(d))" + div, **kw))
    if t == "huber":
        return (F("d = {P} − {Y};  {L} = " + s + "Σ (0.5·d² where |d| < {delta}, else {delta}·(|d| − 0.5·{delta}))" + div, **kw),
                F("d = {P} − {Y};  {G} = " + s + "(d where |d| < {delta}, else {delta}·sign(d))" + div, **kw))
    if t == "cross_entropy":
        if lo.class_dim % pred_ndim != 1:
            kw["P"] = Ref(pred, "prediction", f" (classes along dim {lo.class_dim})")
        if lo.weight is not None or lo.label_smoothing:
            return _ce_weighted_formulas(lo, kw, s, mean, target_is_index, div, lo.class_dim % pred_ndim)
        if target_is_index:
            return (F("{L} = " + s + "Σₙ −log softmax({P})[{Y}]" + div + "   (log-sum-exp shifted by the max)", **kw),
                    F("{G} = " + s + "(softmax({P}) − onehot({Y}))" + div, **kw))
        return (F("{L} = " + s + "Σₙ −Σ_c {Y} ⊙ log softmax({P})" + div + "   (class probabilities)", **kw),
                F("{G} = " + s + "(softmax({P}) · Σ_c {Y} − {Y})" + div, **kw))
    if t == "bce":
        return (F("{L} = " + s + "Σ −({Y}·max(log {P}, −100) + (1 − {Y})·max(log(1 − {P}), −100))" + div, **kw),
                F("{G} = " + s + "({P} − {Y}) / max((1 − {P})·{P}, {eps})" + div
                  + f"   (ε = {BCE_EPS!r}: 1e−12 as a float32, as torch has it, even in float64)",
                  eps=Const("ε", BCE_EPS), **kw))
    if t == "bce_with_logits" and lo.pos_weight is not None:
        kw["pw"] = Sym("pw")
        note = f"   (pw = pos_weight = [{', '.join(f'{w:g}' for w in lo.pos_weight)}] along the last dim)"
        return (F("{L} = " + s + "Σ ((1 − {Y})·{P} − (1 + ({pw} − 1)·{Y})·log σ({P}))" + div + note, **kw),
                F("{G} = " + s + "((1 + ({pw} − 1)·{Y})·σ({P}) − {pw}·{Y})" + div, **kw))
    if t == "bce_with_logits":
        return (F("{L} = " + s + "Σ ((1 − {Y})·{P} + log(1 + e^(−{P})))" + div + "   (computed stably)", **kw),
                F("{G} = " + s + "(σ({P}) − {Y})" + div, **kw))
    raise ValueError(t)


def _ce_weighted_formulas(lo, kw, s, mean, target_is_index, div, cd):
    """cross_entropy with class weights w and/or label smoothing ε, as ATen computes it (``cd``:
    the class dim of the logits)."""
    eps = lo.label_smoothing
    kw.update(eps=Const("ε", eps), C=Count("C", kw["P"].name, (cd,)))
    wtxt = f"w = [{', '.join(f'{w:g}' for w in lo.weight)}]" if lo.weight is not None else "w = 1"
    if not target_is_index:
        t = "t = {Y}·(1 − {eps}) + {eps}/{C};  " if eps else "t = {Y};  "
        return (F(t + "{L} = " + s + "Σₙ −Σ_c w_c·t_c·log softmax({P})_c" + div + f"   ({wtxt}, class probabilities)", **kw),
                F(t + "{G} = " + s + "(softmax({P})·Σ_c w_c·t_c − w·t)" + div, **kw))
    D = " / Σₙ w[{Y}ₙ]" if mean else ""
    nll = "w[{Y}]·(−log softmax({P})[{Y}])"
    if eps:
        return (F("{L} = " + s + "((1 − {eps})·Σₙ " + nll + " + {eps}/{C}·Σₙ Σ_c −w_c·log softmax({P})_c)" + D
                  + f"   ({wtxt})", **kw),
                F("{G} = " + s + "((1 − {eps})·w[{Y}]·(softmax({P}) − onehot({Y})) + {eps}/{C}·(Σ_c w_c·softmax({P}) − w))"
                  + D, **kw))
    return (F("{L} = " + s + "Σₙ " + nll + D + f"   ({wtxt})", **kw),
            F("{G} = " + s + "w[{Y}]·(softmax({P}) − onehot({Y}))" + D, **kw))


# =================================================================================================
# Optimizers
# =================================================================================================
OPTIMIZERS: dict[str, dict[str, tuple[Any, str]]] = {
    "sgd": {"lr": (0.001, "nonnegfloat"), "momentum": (0.0, "nonnegfloat"), "dampening": (0.0, "float"),
            "nesterov": (False, "bool"), "weight_decay": (0.0, "nonnegfloat")},
    "adam": {"lr": (0.001, "nonnegfloat"), "betas": ((0.9, 0.999), "betas"), "eps": (1e-8, "nonnegfloat"),
             "weight_decay": (0.0, "nonnegfloat")},
    "adamw": {"lr": (0.001, "nonnegfloat"), "betas": ((0.9, 0.999), "betas"), "eps": (1e-8, "nonnegfloat"),
              "weight_decay": (0.01, "nonnegfloat")},
    "rmsprop": {"lr": (0.01, "nonnegfloat"), "alpha": (0.99, "nonnegfloat"), "eps": (1e-8, "nonnegfloat"),
                "momentum": (0.0, "nonnegfloat"), "centered": (False, "bool"), "weight_decay": (0.0, "nonnegfloat")},
}
# keys every optimizer takes: clipping before the update, and [optimizer.schedule]
OPTIMIZER_COMMON = {"clip_grad_norm": (None, "posfloat"), "schedule": (None, "table")}

# [optimizer.schedule]: torch.optim.lr_scheduler's StepLR, ExponentialLR, CosineAnnealingLR, LinearLR
SCHEDULES: dict[str, dict[str, tuple[Any, str]]] = {
    "step": {"step_size": (None, "posint"), "gamma": (0.1, "nonnegfloat")},
    "exponential": {"gamma": (None, "nonnegfloat")},
    "cosine": {"t_max": (None, "posint"), "eta_min": (0.0, "nonnegfloat"),
               # a warm-up first: SequentialLR([LinearLR(start_factor=warmup_start, total_iters=warmup),
               # CosineAnnealingLR(t_max, eta_min)], milestones=[warmup]); 0: none
               "warmup": (0, "nonnegint"), "warmup_start": (1.0 / 3, "posfloat")},
    "linear": {"start_factor": (1.0 / 3, "posfloat"), "end_factor": (1.0, "nonnegfloat"), "total_iters": (5, "posint")},
}
SCHEDULE_TORCH = {"step": "StepLR", "exponential": "ExponentialLR", "cosine": "CosineAnnealingLR", "linear": "LinearLR"}
CLIP_OP = "clip grad norm"
SCHEDULE_OP = "lr schedule"


# The one list of optimizer state names: (persistent across steps, written by the update op)
def optimizer_state(opt) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(state kept from step to step, every state tensor the update op writes), as suffixes of the
    parameter's name (``linear1.weight.buf``)."""
    if opt.type == "adam":
        return ("m", "v"), ("m", "v", "m_hat", "v_hat")
    if opt.type == "adamw":
        return ("m", "v"), ("decayed", "m", "v", "m_hat", "v_hat")
    if opt.type == "rmsprop":
        keep = ("square_avg",) + (("grad_avg",) if opt.centered else ()) + (("buf",) if opt.momentum else ())
        return keep, keep
    if opt.momentum != 0:
        return ("buf",), ("buf",)
    return (), ()


def optimizer_zero_state(opt) -> tuple[str, ...]:
    """The state that starts as zeros before step 1, as torch's (Adam's exp_avg and exp_avg_sq,
    RMSprop's square_avg, grad_avg and momentum_buffer); the rest starts at the first step (SGD's
    momentum buffer is the first gradient)."""
    if opt.type in ("adam", "adamw"):
        return ("m", "v")
    if opt.type == "rmsprop":
        return optimizer_state(opt)[0]
    return ()


STATE_LABELS = {"buf": "momentum buf", "m": "m (1st moment)", "v": "v (2nd moment)", "m_hat": "m̂ = m/(1−β1ᵗ)",
                "v_hat": "v̂ = v/(1−β2ᵗ)", "decayed": "decayed P·(1−lr·λ)", "square_avg": "square avg of g²",
                "grad_avg": "avg of g", "lr": "lr in force"}


def grad_for_update(opt, P: str) -> str:
    """The gradient the update of P reads: clipped when [optimizer] clip_grad_norm is set (``P.grad``
    stays the raw gradient)."""
    return f"{P}.grad.clipped" if opt.clip_grad_norm is not None else f"{P}.grad"


def update_formula(opt, P: str) -> Formula:
    lr = Ref("lr", "state") if opt.schedule is not None else Const("lr", opt.lr)
    kw = dict(P=Ref(P, "old"), Pn=Ref(P, "new"), G=Ref(grad_for_update(opt, P), "grad_param"), lr=lr,
              wd=Const("λ", opt.weight_decay))
    kw["g"] = Sym("g")
    g = "{G}"
    pre = ""
    if opt.weight_decay and opt.type != "adamw":
        pre = "{g} = {G} + {wd}·{P};  "
        g = "{g}"
    if opt.type in ("adam", "adamw"):
        b1, b2 = opt.betas
        if not pre:
            pre = "{g} = {G};  "
            g = "{g}"
        start = "{P}"
        if opt.type == "adamw":                # decoupled: the decay acts on the parameter, first
            kw["dec"] = Ref(f"{P}.decayed", "state")
            pre = "{dec} = {P}·(1 − {lr}·{wd});  " + pre
            start = "{dec}"
        kw.update(m=Ref(f"{P}.m", "state"), v=Ref(f"{P}.v", "state"), mh=Ref(f"{P}.m_hat", "state"),
                  vh=Ref(f"{P}.v_hat", "state"), b1=Const("β1", b1), b2=Const("β2", b2), eps=Const("ε", opt.eps))
        kw["t"] = StepPow()
        return F(pre + "{m} = {b1}·{m} + (1 − {b1})·{g};  {v} = {b2}·{v} + (1 − {b2})·{g}²;  "
                 "{mh} = {m} / (1 − {b1}{t});  {vh} = {v} / (1 − {b2}{t});  "
                 "{Pn} ← " + start + " − {lr}·{mh} / (√{vh} + {eps})", **kw)
    if opt.type == "rmsprop":
        kw.update(sq=Ref(f"{P}.square_avg", "state"), ga=Ref(f"{P}.grad_avg", "state"), buf=Ref(f"{P}.buf", "state"),
                  a=Const("α", opt.alpha), eps=Const("ε", opt.eps), mu=Const("μ", opt.momentum), avg=Sym("a"))
        body = "{sq} = {a}·{sq} + (1 − {a})·" + g + "²;  "
        if opt.centered:
            body += "{ga} = {a}·{ga} + (1 − {a})·" + g + ";  {avg} = √({sq} − {ga}²) + {eps};  "
        else:
            body += "{avg} = √{sq} + {eps};  "
        if opt.momentum:
            body += "{buf} = {mu}·{buf} + " + g + " / {avg};  {Pn} ← {P} − {lr}·{buf}"
        else:
            body += "{Pn} ← {P} − {lr}·" + g + " / {avg}"
        return F(pre + body, **kw)
    if opt.momentum:
        kw.update(buf=Ref(f"{P}.buf", "state"), mu=Const("μ", opt.momentum), tau=Const("τ", opt.dampening))
        damp = "(1 − {tau})·" if opt.dampening else ""
        step = g + " + {mu}·{buf}" if opt.nesterov else "{buf}"
        step = f"({step})" if opt.nesterov else step
        return F(pre + "{buf} = " + g + " at step 1, else {mu}·{buf} + " + damp + g + ";  "
                 "{Pn} ← {P} − {lr}·" + step, **kw)
    if opt.weight_decay:
        return F(pre + "{Pn} ← {P} − {lr}·{g}", **kw)
    return F("{Pn} ← {P} − {lr}·{G}", **kw)


def clip_formula(opt, params: list[str]) -> Formula:
    """torch.nn.utils.clip_grad_norm_(params, c): the op at the start of the update stage. Up to
    four parameters are written out one by one (so their numbers show), more as a sum over P."""
    kw = dict(N=Ref("grad_norm", "result"), c=Ref("clip_coef", "result"), Nc=Ref("clipped_norm", "result"),
              mx=Const("max_norm", opt.clip_grad_norm))
    if len(params) <= 4:
        for j, P in enumerate(params):
            kw[f"g{j}"] = Ref(f"{P}.grad", "grad_param")
            kw[f"k{j}"] = Ref(f"{P}.grad.clipped", "result")
        norm = " + ".join(f"‖{{g{j}}}‖²" for j in range(len(params)))
        after = " + ".join(f"‖{{k{j}}}‖²" for j in range(len(params)))
        each = "".join(f"{{k{j}}} = {{c}}·{{g{j}}};  " for j in range(len(params)))
        return F(f"{{N}} = √({norm});  {{c}} = min(1, {{mx}} / ({{N}} + 1e−6));  " + each
                 + f"{{Nc}} = √({after});  (the updates read the clipped gradients, P.grad stays the raw one)", **kw)
    return F(f"{{N}} = √(Σ_P ‖P.grad‖²)   (P: the {len(params)} trainable parameters);  "
             "{c} = min(1, {mx} / ({N} + 1e−6));  P.grad.clipped = {c}·P.grad   (every P, P.grad stays raw);  "
             "{Nc} = √(Σ_P ‖P.grad.clipped‖²)", **kw)


def schedule_formula(opt) -> Formula:
    """scheduler.step() after this step's updates: the lr of the next step, torch's recursive form
    (t: this step, the scheduler's new last_epoch)."""
    s = opt.schedule
    kw = dict(lr=Ref("lr", "state"), t=StepNum())
    head = f"({SCHEDULE_TORCH[s.type]}.step() after the updates, t = this step: the next step's lr);  "
    if s.type == "step":
        kw.update(g=Const("γ", s.gamma), n=Const("step_size", s.step_size))
        return F(head + "{lr} ← {g}·{lr} if {t} mod {n} = 0, else {lr}", **kw)
    if s.type == "exponential":
        kw.update(g=Const("γ", s.gamma))
        return F(head + "{lr} ← {g}·{lr}", **kw)
    if s.type == "cosine" and s.warmup:
        kw.update(T=Const("T_max", s.t_max), e=Const("η_min", s.eta_min), b=Const("lr₀", opt.lr),
                  T2=Const("2·T_max", 2 * s.t_max), W=Const("W", s.warmup), a=Const("start", s.warmup_start))
        head = ("(SequentialLR.step() after the updates, t = this step: the next step's lr, after a linear "
                "warm-up over W steps the cosine from lr₀, counted from u = t − W);  ")
        return F(head + "{lr} ← {lr}·(1 + (1 − {a}) / ({W}·{a} + ({t} − 1)·(1 − {a}))) if {t} < {W};  "
                 "{lr} ← {b} if {t} = {W};  "
                 "{lr} ← {lr} + ({b} − {e})·(1 − cos(π/{T}))/2 if u − 1 ≡ {T} mod {T2}, "
                 "else {e} + ({lr} − {e})·(1 + cos(π·u/{T})) / (1 + cos(π·(u − 1)/{T})), if {t} > {W};  "
                 "(the lr of step 1 is start·lr₀, set by the warm-up's constructor)", **kw)
    if s.type == "cosine":
        kw.update(T=Const("T_max", s.t_max), e=Const("η_min", s.eta_min), b=Const("lr₀", opt.lr),
                  T2=Const("2·T_max", 2 * s.t_max))
        return F(head + "{lr} ← {lr} + ({b} − {e})·(1 − cos(π/{T}))/2 if ({t} − 1) mod {T2} = {T}, "
                 "else {e} + ({lr} − {e})·(1 + cos(π·{t}/{T})) / (1 + cos(π·({t} − 1)/{T}))", **kw)
    if s.type == "linear":
        kw.update(a=Const("start", s.start_factor), z=Const("end", s.end_factor), n=Const("total_iters", s.total_iters))
        return F(head + "{lr} ← {lr}·(1 + ({z} − {a}) / ({n}·{a} + ({t} − 1)·({z} − {a}))) if {t} ≤ {n}, else {lr};  "
                 "(the lr of step 1 is start·lr₀, set by LinearLR's constructor)", **kw)
    raise ValueError(s.type)
