"""The catalogue's pooling, dropout and log-softmax layers (docs/scenario-format.md), and the ``nll`` loss's formulas.

Pooling takes per-sample ``(C, L)`` (1d) or ``(C, H, W)`` (2d), as conv1d/conv2d do, with torch's
options: ``kernel_size`` (required), ``stride`` (default: the kernel size), ``padding`` (0, at most
half the kernel); ``kernel_size``, ``stride`` and ``padding`` may be an integer or a list of two for
2d. Max pooling pads with −∞ and records which input won each window in ``<layer>.argmax`` (torch's
``return_indices``: the flat index into the input's spatial positions, the first maximum on a tie);
average pooling divides by the whole kernel (count_include_pad = true).

``dropout`` is training-mode dropout whose mask, ``<layer>.mask`` (0 or 1/(1 − p)), is drawn from the
scenario's seed, the step and the layer (see engine/layers_pool.py), so every replay shows the same one.
"""
from __future__ import annotations

import math

from .catalog import LayerType, ShapeError, fmt_shape
from ..layers.formula import Const, Count, F, Formula, Ref

SAME = "kernel_size"          # the default stride: the kernel size, as torch's stride=None


def pool_geometry(opts: dict, nd: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(kernel, stride, padding), one entry per spatial dimension."""
    def tup(v):
        return tuple(v) if isinstance(v, (list, tuple)) else (v,) * nd
    k = tup(opts["kernel_size"])
    s = k if opts.get("stride", SAME) == SAME else tup(opts["stride"])
    return k, s, tup(opts.get("padding", 0))


def _one(v) -> str:
    return str(v[0]) if len(set(v)) == 1 else "(" + ", ".join(map(str, v)) + ")"


class _Pool(LayerType):
    nd = 1
    options = {"kernel_size": (None, "posints"), "stride": (SAME, "posints"), "padding": (0, "nonnegints")}
    pad_with = "0"

    @classmethod
    def infer(cls, opts, in_shapes):
        nd, s = cls.nd, in_shapes[0]
        if len(s) != nd + 1:
            want = "(N, C, L)" if nd == 1 else "(N, C, H, W)"
            raise ShapeError(f"{cls.type} expects input {want}, so a per-sample shape of {nd + 1} dims, "
                             f"got {fmt_shape(s)}")
        for name in ("kernel_size", "stride", "padding"):
            v = opts.get(name)
            if isinstance(v, (list, tuple)) and len(v) != nd:
                raise ShapeError(f"{name} must be an integer or a list of {nd}, got {list(v)}")
        k, st, p = pool_geometry(opts, nd)
        if any(p[d] > k[d] // 2 for d in range(nd)):
            raise ShapeError(f"padding {list(p)} is more than half of kernel_size {list(k)} (as torch: pad "
                             f"should be at most half of effective kernel size)")
        padded = tuple(s[1 + d] + 2 * p[d] for d in range(nd))
        if any(padded[d] < k[d] for d in range(nd)):
            raise ShapeError(f"kernel_size {list(k)} is larger than the padded input {fmt_shape(padded)}")
        return (s[0],) + tuple((padded[d] - k[d]) // st[d] + 1 for d in range(nd)), {}

    @classmethod
    def kernel_elements(cls, L) -> int:
        return math.prod(pool_geometry(L.options, cls.nd)[0])

    @classmethod
    def _geometry(cls, L) -> str:
        k, st, p = pool_geometry(L.options, cls.nd)
        dims = "" if cls.nd == 1 else ", i and k over each of the 2 spatial dims"
        return (f"(window {_one(k)}, stride s = {_one(st)}, padding p = {_one(p)} of {cls.pad_with} "
                f"on each side{dims})")


class _MaxPool(_Pool):
    extras = ("argmax",)
    pad_with = "−∞"

    @classmethod
    def intermediates(cls, opts, in_shapes, out_shape):
        return [("argmax", tuple(out_shape), 1)]

    @classmethod
    def fwd_formula(cls, L, n):
        return F("{out}[n, c, i] = max_k {x}[n, c, s·i + k − p];  {arg}[n, c, i] = where in {x} that max is "
                 "(the flat index of its position, the first one on a tie, as torch);  " + cls._geometry(L),
                 out=n.out, x=n.x, arg=n.e("argmax"))

    @classmethod
    def bwd_formula(cls, L, n):
        return F("{gin}[n, c, j] = Σ_i {g}[n, c, i] · [{arg}[n, c, i] = j];  (each window sends its whole "
                 "gradient to the input that won it, and 0 to the others)",
                 gin=n.gin, g=n.g, arg=n.e("argmax"))


class _AvgPool(_Pool):
    @classmethod
    def fwd_formula(cls, L, n):
        K = cls.kernel_elements(L)
        return F("{out}[n, c, i] = (1/{K}) · Σ_k {x}[n, c, s·i + k − p];  (K = " + str(K) + ", the kernel's "
                 "elements, padding zeros included);  " + cls._geometry(L), out=n.out, x=n.x, K=Const("K", K))

    @classmethod
    def bwd_formula(cls, L, n):
        return F("{gin}[n, c, j] = Σ_i {g}[n, c, i] / {K} over the windows i that cover j;  (each of a "
                 "window's K = " + str(cls.kernel_elements(L)) + " inputs gets 1/K of its gradient)", gin=n.gin, g=n.g,
                 K=Const("K", cls.kernel_elements(L)))


class MaxPool1d(_MaxPool):
    type = "maxpool1d"
    nd = 1


class MaxPool2d(_MaxPool):
    type = "maxpool2d"
    nd = 2


class AvgPool1d(_AvgPool):
    type = "avgpool1d"
    nd = 1


class AvgPool2d(_AvgPool):
    type = "avgpool2d"
    nd = 2


class Dropout(LayerType):
    """nn.Dropout(p) in training mode: out = in ⊙ mask, mask = 0 or 1/(1 − p), drawn per step."""
    type = "dropout"
    options = {"p": (0.5, "prob_open")}
    extras = ("mask",)

    @classmethod
    def intermediates(cls, opts, in_shapes, out_shape):
        return [("mask", tuple(in_shapes[0]), 1)]

    @classmethod
    def fwd_formula(cls, L, n):
        p = Const("p", L.options["p"])
        return F("{mask} = [u < 1 − {p}] / (1 − {p}), u uniform in [0, 1), drawn from the seed, the step and "
                 "the layer;  {out} = {x} ⊙ {mask}", mask=n.e("mask"), p=p, out=n.out, x=n.x)

    @classmethod
    def bwd_formula(cls, L, n):
        return F("{gin} = {g} ⊙ {mask};  (a dropped input gets no gradient, a kept one 1/(1 − p) of it)",
                 gin=n.gin, g=n.g, mask=n.e("mask"))


POOL_LAYERS: dict[str, type[LayerType]] = {c.type: c for c in (
    MaxPool1d, MaxPool2d, AvgPool1d, AvgPool2d, Dropout)}


def nll_formulas(lo, pred: str, pred_ndim: int, kw: dict) -> tuple[Formula, Formula]:
    """``nll`` (nn.NLLLoss): the prediction holds log-probabilities, the target class indices."""
    s = "{s} · " if lo.scale != 1 else ""
    kw["n"] = Count("N", "target")             # the number of targets: the batch and any positions
    div = " / {n}" if lo.reduction == "mean" else ""
    if lo.class_dim % pred_ndim != 1:
        kw["P"] = Ref(pred, "prediction", f" (classes along dim {lo.class_dim})")
    return (F("{L} = " + s + "Σₙ −{P}[n, yₙ]" + div + "   (y = {Y}: minus the log-probability of each target class)",
              **kw),
            F("{G} = " + s + "−onehot({Y})" + div + "   (−1 at each target class, 0 elsewhere)", **kw))
