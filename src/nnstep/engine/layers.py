"""Layers: shape rules, torch's default initializations, forward and backward.

Each layer writes its derivative once, next to its forward (as micrograd and early tinygrad do).
Everything is out of place: no array that has been handed out is ever modified, so the debugger can
record results by reference.

Shapes here are per sample (no batch dimension). Layouts are PyTorch's: Linear weight (out, in),
conv weight (out_channels, in_channels, *kernel), Conv1d input (N, C, L), Conv2d input (N, C, H, W).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

def erf(x: np.ndarray) -> np.ndarray:
    """erf to double precision (libm's math.erf), element-wise, as float64; numpy has none built in.
    (map over a list is about twice as fast as np.frompyfunc's object array.)"""
    a = np.asarray(x, dtype=np.float64)
    return np.fromiter(map(math.erf, a.ravel().tolist()), dtype=np.float64, count=a.size).reshape(a.shape)


class ShapeError(ValueError):
    """A layer cannot take the shape it is given; the loader turns this into a ScenarioError."""


def _shape(s) -> str:
    return "[" + ", ".join(str(d) for d in s) + "]"


# Option tables: name -> (default, kind). Kinds are checked by the loader.
# "posint" > 0, "nonnegint" >= 0, "posfloat" > 0, "float", "prob" in [0, 1], "bool", "ints" (int or
# list of ints), "choice:a|b".
class Layer:
    type: str = ""
    elementwise = False
    param_names: tuple[str, ...] = ()
    state_names: tuple[str, ...] = ()      # persistent non-parameter tensors (batchnorm running stats)
    extra_names: tuple[str, ...] = ()      # named intermediates the forward op also writes
    options: dict[str, tuple[Any, str]] = {}
    fwd_formula = ""
    bwd_formula = ""

    def __init__(self, name: str, opts: dict, in_shape: tuple[int, ...]):
        self.name = name
        self.opts = opts
        self.in_shape = tuple(in_shape)
        self.out_shape, self.param_shapes = self.infer(opts, self.in_shape)

    # --- shapes and init -------------------------------------------------------------------------
    @classmethod
    def infer(cls, opts: dict, in_shape: tuple[int, ...]):
        """Return (out_shape, {param: shape}); raise ShapeError when the input does not fit."""
        return in_shape, {}

    def fan_in(self) -> int:
        return 1

    def default_init(self, param: str, shape, rng: np.random.Generator, init: str) -> np.ndarray:
        return init_tensor(init if param == "weight" else "bias", shape, self.fan_in(), self.fan_out(), rng)

    def fan_out(self) -> int:
        return 1

    def initial_state(self, dtype) -> dict[str, np.ndarray]:
        return {}

    # --- math ------------------------------------------------------------------------------------
    def forward(self, x, P: dict):
        """Return (out, extras, new_state)."""
        raise NotImplementedError

    def backward(self, g, x, out, P: dict, extras: dict):
        """Return (grad_in, {param: grad}, local or None).

        Layers whose grad_in costs real work (linear, conv) also take ``need_in=False``, and then
        return None for grad_in: `nnstep run` does not compute dLoss/d(input) of the first layer
        when nothing it reports or checks reads it."""
        raise NotImplementedError

    def local(self, x, out):
        """d out / d in for element-wise layers."""
        raise NotImplementedError


def init_tensor(kind: str, shape, fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
    """torch.nn.init, as the layers' reset_parameters() use it, in float64."""
    if kind in ("kaiming_uniform", "bias"):
        # kaiming_uniform_(a=sqrt(5)) gives bound = gain*sqrt(3/fan_in) with gain = sqrt(2/(1+5)):
        # exactly 1/sqrt(fan_in); torch's bias init uses the same bound.
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        return rng.uniform(-bound, bound, size=shape)
    if kind == "kaiming_normal":           # kaiming_normal_(a=0, mode=fan_in, relu): std = sqrt(2/fan_in)
        return rng.normal(0.0, math.sqrt(2.0 / fan_in), size=shape)
    if kind == "xavier_uniform":
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-bound, bound, size=shape)
    if kind == "xavier_normal":
        return rng.normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), size=shape)
    if kind == "zeros":
        return np.zeros(shape)
    if kind == "ones":
        return np.ones(shape)
    raise ValueError(kind)


INITS = ("kaiming_uniform", "kaiming_normal", "xavier_uniform", "xavier_normal", "zeros")


# ------------------------------------------------------------------------------------------------
class Linear(Layer):
    type = "linear"
    param_names = ("weight", "bias")
    options = {"out": (None, "posint")}
    fwd_formula = "{out} = {in} @ {weight}ᵀ + {bias}"
    bwd_formula = ("{weight.grad} = Σₙ {grad_out}ᵀ @ {in};  {bias.grad} = Σₙ {grad_out};  "
                   "{grad_in} = {grad_out} @ {weight}")

    @classmethod
    def infer(cls, opts, in_shape):
        if len(in_shape) < 1:
            raise ShapeError(f"linear needs an input with a feature dimension, got per-sample shape {_shape(in_shape)}")
        fin, fout = in_shape[-1], opts["out"]
        return in_shape[:-1] + (fout,), {"weight": (fout, fin), "bias": (fout,)}

    def fan_in(self):
        return self.in_shape[-1]

    def fan_out(self):
        return self.opts["out"]

    def forward(self, x, P):
        out = x @ P["weight"].T
        if "bias" in P:
            out = out + P["bias"]
        return out, {}, {}

    def backward(self, g, x, out, P, extras, need_in=True):
        W = P["weight"]
        if g.ndim == 2:
            grads = {"weight": g.T @ x}
        else:
            grads = {"weight": g.reshape(-1, g.shape[-1]).T @ x.reshape(-1, x.shape[-1])}
        if "bias" in P:
            grads["bias"] = np.add.reduce(g.reshape(-1, g.shape[-1]), axis=0)
        return (g @ W if need_in else None), grads, None


class _ConvNd(Layer):
    param_names = ("weight", "bias")
    nd = 1
    options = {"out_channels": (None, "posint"), "kernel_size": (None, "posints"),
               "stride": (1, "posints"), "padding": (0, "nonnegints")}
    fwd_formula = "{out}[n,o,…] = Σ_c,k {in}[n,c,… stride·i+k − pad] · {weight}[o,c,k] + {bias}[o]   (cross-correlation)"
    bwd_formula = ("{weight.grad}[o,c,k] = Σ_n,i {grad_out}[n,o,i] · {in}[n,c,stride·i+k];  "
                   "{bias.grad}[o] = Σ_n,i {grad_out}[n,o,i];  "
                   "{grad_in}[n,c,j] = Σ_o,k {grad_out}[n,o,i] · {weight}[o,c,k] where j = stride·i+k")

    @classmethod
    def tup(cls, v):
        return tuple(v) if isinstance(v, (list, tuple)) else (v,) * cls.nd

    @classmethod
    def infer(cls, opts, in_shape):
        nd = cls.nd
        if len(in_shape) != nd + 1:
            want = "(N, C, L)" if nd == 1 else "(N, C, H, W)"
            raise ShapeError(f"{cls.type} expects input {want}, so a per-sample shape of {nd + 1} dims, "
                             f"got {_shape(in_shape)}")
        k, s, p = cls.tup(opts["kernel_size"]), cls.tup(opts["stride"]), cls.tup(opts["padding"])
        for name, v in (("kernel_size", k), ("stride", s), ("padding", p)):
            if len(v) != nd:
                raise ShapeError(f"{name} must be an integer or a list of {nd}, got {list(v)}")
        cin = in_shape[0]
        spatial = []
        for d in range(nd):
            n = (in_shape[1 + d] + 2 * p[d] - k[d]) // s[d] + 1
            if in_shape[1 + d] + 2 * p[d] < k[d]:
                raise ShapeError(f"kernel_size {list(k)} is larger than the padded input "
                                 f"{_shape(tuple(in_shape[1 + i] + 2 * p[i] for i in range(nd)))}")
            spatial.append(n)
        cout = opts["out_channels"]
        return (cout, *spatial), {"weight": (cout, cin, *k), "bias": (cout,)}

    def fan_in(self):
        return self.in_shape[0] * int(np.prod(self.tup(self.opts["kernel_size"])))

    def fan_out(self):
        return self.opts["out_channels"] * int(np.prod(self.tup(self.opts["kernel_size"])))

    def _windows(self, x):
        nd = self.nd
        k, s, p = self.tup(self.opts["kernel_size"]), self.tup(self.opts["stride"]), self.tup(self.opts["padding"])
        if any(p):
            x = np.pad(x, [(0, 0), (0, 0)] + [(pi, pi) for pi in p])
        w = np.lib.stride_tricks.sliding_window_view(x, k, axis=tuple(range(2, 2 + nd)))
        sl = (slice(None), slice(None)) + tuple(slice(None, None, si) for si in s)
        return w[sl]                        # (N, C, *out_spatial, *k)

    def forward(self, x, P):
        nd = self.nd
        win = self._windows(x)
        W = P["weight"]
        # out[n, o, *sp] = sum_{c, *k} win[n, c, *sp, *k] * W[o, c, *k]
        axes_win = [1] + list(range(2 + nd, 2 + 2 * nd))
        axes_w = [1] + list(range(2, 2 + nd))
        out = np.tensordot(win, W, axes=(axes_win, axes_w))     # (N, *sp, O)
        out = np.moveaxis(out, -1, 1)
        if "bias" in P:
            out = out + P["bias"].reshape((1, -1) + (1,) * nd)
        return np.ascontiguousarray(out), {}, {}

    def backward(self, g, x, out, P, extras, need_in=True):
        nd = self.nd
        k, s, p = self.tup(self.opts["kernel_size"]), self.tup(self.opts["stride"]), self.tup(self.opts["padding"])
        W = P["weight"]
        win = self._windows(x)
        # dW[o, c, *k] = sum_{n, *sp} g[n, o, *sp] * win[n, c, *sp, *k]
        sp_axes = list(range(2, 2 + nd))
        gW = np.tensordot(g, win, axes=([0] + sp_axes, [0] + sp_axes))   # (O, C, *k)
        grads = {"weight": gW}
        if "bias" in P:
            grads["bias"] = g.sum(axis=tuple([0] + sp_axes))
        if not need_in:
            return None, grads, None
        # grad_in: scatter g through every kernel offset
        padded = tuple(x.shape[2 + d] + 2 * p[d] for d in range(nd))
        gx = np.zeros(x.shape[:2] + padded, dtype=g.dtype)
        osp = g.shape[2:]
        for kidx in np.ndindex(*k):
            Wk = W[(slice(None), slice(None)) + kidx]                   # (O, C)
            contrib = np.tensordot(g, Wk, axes=([1], [0]))               # (N, *sp, C)
            contrib = np.moveaxis(contrib, -1, 1)
            sl = (slice(None), slice(None)) + tuple(
                slice(kidx[d], kidx[d] + s[d] * (osp[d] - 1) + 1, s[d]) for d in range(nd))
            gx[sl] = gx[sl] + contrib
        if any(p):
            gx = gx[(slice(None), slice(None)) + tuple(slice(p[d], p[d] + x.shape[2 + d]) for d in range(nd))]
        return np.ascontiguousarray(gx), grads, None


class Conv1d(_ConvNd):
    type = "conv1d"
    nd = 1


class Conv2d(_ConvNd):
    type = "conv2d"
    nd = 2


class Flatten(Layer):
    type = "flatten"
    fwd_formula = "{out} = reshape({in}, [N, −1])"
    bwd_formula = "{grad_in} = reshape({grad_out}, shape of {in})"

    @classmethod
    def infer(cls, opts, in_shape):
        return (int(np.prod(in_shape)),), {}

    def forward(self, x, P):
        return x.reshape(x.shape[0], -1), {}, {}

    def backward(self, g, x, out, P, extras):
        return g.reshape(x.shape), {}, None


class BatchNorm(Layer):
    """Training mode: normalize with the batch statistics (biased variance); running stats are
    updated with the unbiased variance. (N, C) and (N, C, L) as BatchNorm1d, (N, C, H, W) as 2d."""
    type = "batchnorm"
    param_names = ("weight", "bias")
    state_names = ("running_mean", "running_var")
    extra_names = ("mean", "var")
    options = {"eps": (1e-5, "posfloat"), "momentum": (0.1, "prob"), "affine": (True, "bool")}
    fwd_formula = ("{mean} = meanₙ {in};  {var} = meanₙ ({in} − {mean})²;  "
                   "{out} = {weight} · ({in} − {mean}) / √({var} + eps) + {bias};  "
                   "{running_mean} ← (1 − m)·{running_mean} + m·{mean};  "
                   "{running_var} ← (1 − m)·{running_var} + m·{var}·n/(n − 1)")
    bwd_formula = ("x̂ = ({in} − {mean}) / √({var} + eps);  {weight.grad} = Σ {grad_out} ⊙ x̂;  "
                   "{bias.grad} = Σ {grad_out};  {grad_in} = (1/n)/√({var}+eps) · "
                   "(n·ĝ − Σĝ − x̂·Σ(ĝ ⊙ x̂)) with ĝ = {grad_out} ⊙ {weight}")

    @classmethod
    def infer(cls, opts, in_shape):
        if len(in_shape) not in (1, 2, 3):
            raise ShapeError(f"batchnorm expects (N, C), (N, C, L) or (N, C, H, W), got per-sample shape "
                             f"{_shape(in_shape)}")
        C = in_shape[0]
        return in_shape, ({"weight": (C,), "bias": (C,)} if opts["affine"] else {})

    def default_init(self, param, shape, rng, init):
        return np.ones(shape) if param == "weight" else np.zeros(shape)

    def initial_state(self, dtype):
        C = self.in_shape[0]
        return {"running_mean": np.zeros(C, dtype=dtype), "running_var": np.ones(C, dtype=dtype)}

    def _axes(self, x):
        return (0,) + tuple(range(2, x.ndim))

    def _bshape(self, x):
        return (1, -1) + (1,) * (x.ndim - 2)

    def forward(self, x, P):
        ax = self._axes(x)
        n = x.size // x.shape[1]
        mean = x.mean(axis=ax)
        var = ((x - mean.reshape(self._bshape(x))) ** 2).mean(axis=ax)
        b = self._bshape(x)
        xhat = (x - mean.reshape(b)) / np.sqrt(var.reshape(b) + self.opts["eps"])
        out = xhat * P["weight"].reshape(b) + P["bias"].reshape(b) if "weight" in P else xhat
        m = self.opts["momentum"]
        unbiased = var * (n / (n - 1)) if n > 1 else np.full_like(var, np.nan)
        new_state = {"running_mean": (1 - m) * P["running_mean"] + m * mean,
                     "running_var": (1 - m) * P["running_var"] + m * unbiased}
        return out, {"mean": mean, "var": var}, new_state

    def backward(self, g, x, out, P, extras):
        ax = self._axes(x)
        b = self._bshape(x)
        n = x.size // x.shape[1]
        invstd = 1.0 / np.sqrt(extras["var"] + self.opts["eps"])
        xhat = (x - extras["mean"].reshape(b)) * invstd.reshape(b)
        grads = {}
        if "weight" in P:
            grads["weight"] = (g * xhat).sum(axis=ax)
            grads["bias"] = g.sum(axis=ax)
            gh = g * P["weight"].reshape(b)
        else:
            gh = g
        s1 = gh.sum(axis=ax).reshape(b)
        s2 = (gh * xhat).sum(axis=ax).reshape(b)
        gin = (invstd.reshape(b) / n) * (n * gh - s1 - xhat * s2)
        return gin, grads, None


class LayerNorm(Layer):
    """Normalizes over all non-batch dimensions, biased variance, eps inside the square root."""
    type = "layernorm"
    param_names = ("weight", "bias")
    extra_names = ("mean", "var")
    options = {"eps": (1e-5, "posfloat"), "affine": (True, "bool")}
    fwd_formula = ("{mean} = mean {in} over each sample;  {var} = mean ({in} − {mean})²;  "
                   "{out} = {weight} ⊙ ({in} − {mean}) / √({var} + eps) + {bias}")
    bwd_formula = ("x̂ = ({in} − {mean}) / √({var} + eps);  {weight.grad} = Σₙ {grad_out} ⊙ x̂;  "
                   "{bias.grad} = Σₙ {grad_out};  {grad_in} = (1/D)/√({var}+eps) · (D·ĝ − Σĝ − x̂·Σ(ĝ ⊙ x̂)) "
                   "with ĝ = {grad_out} ⊙ {weight}")

    @classmethod
    def infer(cls, opts, in_shape):
        return in_shape, ({"weight": in_shape, "bias": in_shape} if opts["affine"] else {})

    def default_init(self, param, shape, rng, init):
        return np.ones(shape) if param == "weight" else np.zeros(shape)

    def forward(self, x, P):
        ax = tuple(range(1, x.ndim))
        mean = x.mean(axis=ax, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=ax, keepdims=True)
        xhat = (x - mean) / np.sqrt(var + self.opts["eps"])
        out = xhat * P["weight"] + P["bias"] if "weight" in P else xhat
        return out, {"mean": mean.reshape(-1), "var": var.reshape(-1)}, {}

    def backward(self, g, x, out, P, extras):
        ax = tuple(range(1, x.ndim))
        b = (-1,) + (1,) * (x.ndim - 1)
        D = x.size // x.shape[0]
        invstd = (1.0 / np.sqrt(extras["var"] + self.opts["eps"])).reshape(b)
        xhat = (x - extras["mean"].reshape(b)) * invstd
        grads = {}
        if "weight" in P:
            grads["weight"] = (g * xhat).sum(axis=0)
            grads["bias"] = g.sum(axis=0)
            gh = g * P["weight"]
        else:
            gh = g
        s1 = gh.sum(axis=ax, keepdims=True)
        s2 = (gh * xhat).sum(axis=ax, keepdims=True)
        gin = (invstd / D) * (D * gh - s1 - xhat * s2)
        return gin, grads, None


# --- element-wise activations --------------------------------------------------------------------
class _Elementwise(Layer):
    elementwise = True
    bwd_formula = "{grad_in} = {grad_out} ⊙ {local}"

    def backward(self, g, x, out, P, extras):
        loc = self.local(x, out)
        return g * loc, {}, loc

    def forward(self, x, P):
        return self.f(x), {}, {}


class ReLU(_Elementwise):
    type = "relu"
    fwd_formula = "{out} = max({in}, 0)"
    bwd_formula = "{local} = [{in} > 0];  {grad_in} = {grad_out} ⊙ {local}"

    def f(self, x):
        return np.maximum(x, 0)             # propagates NaN, as torch.relu does

    def local(self, x, out):
        return (x > 0).astype(x.dtype)      # 0 at exactly 0, as torch


class LeakyReLU(_Elementwise):
    type = "leaky_relu"
    options = {"negative_slope": (0.01, "float")}
    fwd_formula = "{out} = {in} if {in} > 0 else slope·{in}"
    bwd_formula = "{local} = 1 if {in} > 0 else slope;  {grad_in} = {grad_out} ⊙ {local}"

    def f(self, x):
        return np.where(x > 0, x, x * self.opts["negative_slope"])

    def local(self, x, out):
        return np.where(x > 0, 1.0, self.opts["negative_slope"]).astype(x.dtype)


class Sigmoid(_Elementwise):
    type = "sigmoid"
    fwd_formula = "{out} = σ({in}) = 1 / (1 + e^(−{in}))"
    bwd_formula = "{local} = {out} ⊙ (1 − {out});  {grad_in} = {grad_out} ⊙ {local}"

    def f(self, x):
        return 1.0 / (1.0 + np.exp(-x))

    def local(self, x, out):
        return (1.0 - out) * out


class Tanh(_Elementwise):
    type = "tanh"
    fwd_formula = "{out} = tanh({in})"
    bwd_formula = "{local} = 1 − {out}²;  {grad_in} = {grad_out} ⊙ {local}"

    def f(self, x):
        return np.tanh(x)

    def local(self, x, out):
        return 1.0 - out * out


class GELU(_Elementwise):
    type = "gelu"
    options = {"approximate": ("none", "choice:none|tanh")}
    # torch's constants (aten/src/ATen/native/cpu/Activation.cpp), from the C macros, so the
    # values agree with torch to the last bit where libm agrees: 1/√2 rounded correctly
    # (1.0 / math.sqrt(2.0) is one ulp below it), √(2/π) and 1/√(2π).
    SQRT1_2 = 0.70710678118654752440                          # M_SQRT1_2
    K = 1.41421356237309504880 * 1.12837916709551257390 * 0.5  # M_SQRT2 · M_2_SQRTPI · ½ = √(2/π)
    PDF = 1.12837916709551257390 * 0.70710678118654752440 * 0.5  # M_2_SQRTPI · M_SQRT1_2 · ½ = 1/√(2π)
    KAPPA = 0.044715

    @property
    def fwd_formula(self):
        if self.opts["approximate"] == "tanh":
            return "{out} = ½·{in}·(1 + tanh(√(2/π)·({in} + 0.044715·{in}³)))"
        return "{out} = {in}·Φ({in}) = ½·{in}·(1 + erf({in}/√2))"

    @property
    def bwd_formula(self):
        if self.opts["approximate"] == "tanh":
            return ("{local} = ½(1 + t) + ½·{in}·(1 − t²)·√(2/π)·(1 + 3·0.044715·{in}²), "
                    "t = tanh(√(2/π)(x + 0.044715x³));  {grad_in} = {grad_out} ⊙ {local}")
        return "{local} = Φ({in}) + {in}·φ({in});  {grad_in} = {grad_out} ⊙ {local}"

    def f(self, x):
        # the same operations in the same order as torch's CPU kernel
        if self.opts["approximate"] == "tanh":
            inner = self.K * (x + self.KAPPA * (x * x * x))
            return x * 0.5 * (1.0 + np.tanh(inner))
        e = erf(x * self.SQRT1_2)
        self._memo = (x, e)
        return (x * 0.5 * (1.0 + e)).astype(x.dtype)

    def _erf_again(self, x):
        """erf(x/√2) for the backward: the forward's, if it was computed for this very array (values
        are never modified in place), else anew. Taken once, then dropped."""
        memo, self._memo = getattr(self, "_memo", None), None
        if memo is not None and memo[0] is x:
            return memo[1]
        return erf(x * self.SQRT1_2)

    def local(self, x, out):
        if self.opts["approximate"] == "tanh":
            x_sq = x * x
            t = np.tanh(self.K * (x + self.KAPPA * (x_sq * x)))
            left = 0.5 * x
            return 0.5 * (1.0 + t) + left * (1.0 - t * t) * (self.K * (1.0 + 3 * self.KAPPA * x_sq))
        cdf = 0.5 * (1.0 + self._erf_again(x))
        pdf = self.PDF * np.exp(x * x * -0.5)
        return (cdf + x * pdf).astype(x.dtype)


class Identity(_Elementwise):
    type = "identity"
    fwd_formula = "{out} = {in}"
    bwd_formula = "{local} = 1;  {grad_in} = {grad_out} ⊙ {local}"

    def f(self, x):
        return x

    def local(self, x, out):
        return np.ones_like(x)


class Softmax(Layer):
    type = "softmax"
    fwd_formula = "{out} = e^({in} − max) / Σⱼ e^({in}ⱼ − max)   (over the last dimension)"
    bwd_formula = "{grad_in} = {out} ⊙ ({grad_out} − Σⱼ {grad_out}ⱼ·{out}ⱼ)"

    @classmethod
    def infer(cls, opts, in_shape):
        if len(in_shape) < 1:
            raise ShapeError("softmax needs a feature dimension")
        return in_shape, {}

    def forward(self, x, P):
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True), {}, {}

    def backward(self, g, x, out, P, extras):
        return out * (g - (g * out).sum(axis=-1, keepdims=True)), {}, None


LAYERS: dict[str, type[Layer]] = {c.type: c for c in (
    Linear, Conv1d, Conv2d, Flatten, BatchNorm, LayerNorm, ReLU, LeakyReLU, Sigmoid, Tanh, Softmax,
    GELU, Identity)}
