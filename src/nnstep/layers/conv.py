"""Convolutions: ``conv1d`` and ``conv2d`` (torch's nn.Conv1d, nn.Conv2d), cross-correlation with
torch's layouts: input (N, C, L) or (N, C, H, W), weight (out_channels, in_channels, *kernel).
``kernel_size``, ``stride`` and ``padding`` may be one integer or a list of two for 2d.
"""
from __future__ import annotations

import math

import numpy as np

from nnstep.layers import (F, Factor, Layer, Option, OptionError, Rule, ShapeError, Term, Value, el, fmt_shape, ints_text,
                           per_dim, shown, total)
from nnstep.layers.dense import may_overflow


def check_windows(name: str, nd: int, opts: dict, in_shape, out_shape, batch: int, limits) -> None:
    """A kernel's size, the padded input and its unfolded windows (N·C·positions·kernel) for one
    batch, against the loader's limits (convolution and pooling unfold the same windows)."""
    k, p = per_dim(opts["kernel_size"], nd), per_dim(opts["padding"], nd)
    if math.prod(k) > limits.MAX_KERNEL:
        raise OptionError("kernel_size", f"{list(k)} is {math.prod(k)} elements per kernel, over the "
                                         f"limit of {limits.MAX_KERNEL}")
    padded = batch * in_shape[0] * math.prod(in_shape[1 + d] + 2 * p[d] for d in range(nd))
    if padded > limits.MAX_ELEMENTS:
        raise OptionError("padding", f"the padded input of {name} would have {shown(padded)} elements, over "
                                     f"the limit of {limits.MAX_ELEMENTS}")
    windows = batch * in_shape[0] * math.prod(out_shape[1:]) * math.prod(k)
    if windows > limits.MAX_ELEMENTS:
        raise OptionError(None, f"{name} would unfold {shown(windows)} input elements per batch (N·C·positions·kernel), "
                                f"over the limit of {limits.MAX_ELEMENTS} (use a smaller batch_size or kernel)")


class Conv(Layer):
    """The family's base (no type of its own): ``nd`` spatial dimensions."""
    nd = 1
    options = {"out_channels": Option(kind="posint"), "kernel_size": Option(kind="posints"),
               "stride": Option(1, "posints"), "padding": Option(0, "nonnegints")}
    params = ("weight", "bias")
    symbols = {"weight": "W", "bias": "b"}
    image = True
    in_param = ("weight", "in_channels")

    @classmethod
    def shapes(cls, opts, in_shapes):
        nd, s = cls.nd, in_shapes[0]
        if len(s) != nd + 1:
            want = "(N, C, L)" if nd == 1 else "(N, C, H, W)"
            raise ShapeError(f"{cls.type} expects input {want}, so a per-sample shape of {nd + 1} dims, "
                             f"got {fmt_shape(s)}")
        k, st, p = (per_dim(opts[o], nd) for o in ("kernel_size", "stride", "padding"))
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
        k = math.prod(per_dim(opts["kernel_size"], cls.nd))
        return in_shape[0] * k, opts["out_channels"] * k

    @classmethod
    def _geometry(cls, L) -> str:
        st, p = (per_dim(L.options[o], cls.nd) for o in ("stride", "padding"))
        dims = "" if cls.nd == 1 else ", i and k over each of the 2 spatial dims"
        return f"(cross-correlation, stride s = {ints_text(st)}, padding p = {ints_text(p)} zeros on each side{dims})"

    @classmethod
    def forward_formula(cls, L, n):
        b = " + {b}[o]" if L.has("bias") else ""
        return F("{out}[n, o, i] = Σ_c,k {x}[n, c, s·i + k − p] · {W}[o, c, k]" + b + ";  " + cls._geometry(L),
                 out=n.out, x=n.x, W=n.p("weight"), b=n.p("bias"))

    @classmethod
    def backward_formula(cls, L, n):
        t = "{Wg}[o, c, k] = Σ_n,i {g}[n, o, i] · {x}[n, c, s·i + k − p]"
        if L.has("bias"):
            t += ";  {bg}[o] = Σ_n,i {g}[n, o, i]"
        t += ";  {gin}[n, c, j] = Σ_o,i,k {g}[n, o, i] · {W}[o, c, k] over s·i + k − p = j;  " + cls._geometry(L)
        return F(t, Wg=n.pg("weight"), bg=n.pg("bias"), g=n.g, x=n.x, gin=n.gin, W=n.p("weight"))

    @classmethod
    def check_size(cls, name, opts, in_shape, out_shape, batch, smallest, limits):
        check_windows(name, cls.nd, opts, in_shape, out_shape, batch, limits)

    @classmethod
    def torch_module(cls, L):
        o = L.options
        bias = "" if L.has("bias") else ", bias=False"
        return (f"nn.Conv{cls.nd}d({L.in_shape[0]}, {o['out_channels']}, kernel_size={ints_text(o['kernel_size'])}, "
                f"stride={ints_text(o['stride'])}, padding={ints_text(o['padding'])}{bias})", "cross-correlation, as torch's")

    def tup(self, v):
        return per_dim(v, self.nd)

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
        if not need_in and not may_overflow(g, W, W.size // max(1, W.shape[1])):
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

    def value_rule(self, name, idx, V):
        """out[n, o, i] = Σ_c,k x[n, c, s·i + k − p]·W[o, c, k] + b[o]: the window × the kernel."""
        if name != self.t("out"):
            return None
        k, s, p = self.tup(self.opts["kernel_size"]), self.tup(self.opts["stride"]), self.tup(self.opts["padding"])
        x, w = self.x, self.t("weight")
        shape, C = np.shape(V(x)), np.shape(V(w))[1]
        n, o, i = idx[0], idx[1], tuple(idx[2:])
        terms = []
        for c in range(C):
            for kk in np.ndindex(*k):
                j = tuple(s[d] * i[d] + kk[d] - p[d] for d in range(self.nd))
                if all(0 <= j[d] < shape[2 + d] for d in range(self.nd)):
                    terms.append(el(V, x, (n, c) + j) * el(V, w, (o, c) + kk))
        e = total(terms, "product")
        if self.has("bias"):
            e = e + el(V, self.t("bias"), (o,))
        pad = C * math.prod(k) - len(terms)
        return Value(f"the window × the kernel: Σ over {C} channel{'s' if C != 1 else ''} and {math.prod(k)} kernel "
                     f"offsets" + (f", less {pad} on padding zeros" if pad else ""), e)

    def grad_rule(self, wrt, idx, V):
        nd = self.nd
        k, s, p = self.tup(self.opts["kernel_size"]), self.tup(self.opts["stride"]), self.tup(self.opts["padding"])
        x_name, w_name = self.x, self.t("weight")
        x, g = V(x_name), V(self.grad_out)
        N, osp = g.shape[0], g.shape[2:]
        terms = []
        if wrt in ("weight", "bias"):        # Σ over samples and output positions
            o = idx[0]
            for n in range(N):
                for i in np.ndindex(*osp):
                    if wrt == "bias":
                        terms.append(Term((Factor(self.dout((n, o) + i, self.sym(self.t("bias"), idx)), "1", 1.0),),
                                          (self.grad_out, (n, o) + i)))
                        continue
                    c, kk = idx[1], idx[2:]
                    j = tuple(s[d] * i[d] + kk[d] - p[d] for d in range(nd))
                    if all(0 <= j[d] < x.shape[2 + d] for d in range(nd)):      # else it met a padding zero
                        terms.append(Term((Factor(self.dout((n, o) + i, self.sym(w_name, idx)),
                                                  self.sym(x_name, (n, c) + j), float(x[(n, c) + j])),),
                                          (self.grad_out, (n, o) + i)))
            return Rule("Σ over the samples and output positions (padding zeros contribute nothing)", terms)
        W = V(w_name)                        # grad_in[n, c, j] = Σ_{o,k: s·i + k − p = j} g[n, o, i]·W[o, c, k]
        n, c, j = idx[0], idx[1], idx[2:]
        for o in range(W.shape[0]):
            for kk in np.ndindex(*k):
                i = []
                for d in range(nd):
                    q, rem = divmod(j[d] + p[d] - kk[d], s[d])
                    if rem or not (0 <= q < osp[d]):
                        break
                    i.append(q)
                else:
                    i = tuple(i)
                    terms.append(Term((Factor(self.dout((n, o) + i, self.sym(x_name, idx)),
                                              self.sym(w_name, (o, c) + kk), float(W[(o, c) + kk])),),
                                      (self.grad_out, (n, o) + i)))
        return Rule("Σ over the output channels and the kernel offsets whose window covers this input", terms)

class Conv1d(Conv):
    """nn.Conv1d: (N, C, L) -> (N, out_channels, L')."""
    type = "conv1d"
    torch_modules = ("Conv1d",)
    onnx_ops = ("Conv",)
    nd = 1
    layouts = {"weight": "(out_channels, in_channels, kernel)"}


class Conv2d(Conv):
    """nn.Conv2d: (N, C, H, W) -> (N, out_channels, H', W')."""
    type = "conv2d"
    torch_modules = ("Conv2d",)
    onnx_ops = ("Conv",)
    nd = 2
    layouts = {"weight": "(out_channels, in_channels, kh, kw)"}
