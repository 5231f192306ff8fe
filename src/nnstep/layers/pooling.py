"""Pooling: ``maxpool1d``, ``maxpool2d``, ``avgpool1d``, ``avgpool2d`` (torch's nn.MaxPool1d/2d,
nn.AvgPool1d/2d), on per-sample ``(C, L)`` (1d) or ``(C, H, W)`` (2d) as the convolutions, with
torch's options: ``kernel_size`` (required), ``stride`` (default: the kernel size), ``padding`` (0,
at most half the kernel); each may be an integer or a list of two for 2d.

Max pooling pads with −∞ and keeps, per window, where its maximum came from (``<layer>.argmax``,
torch's ``return_indices``: the flat index into the input's spatial positions of that sample and
channel). A tie goes to the first maximum in the window's row-major order, and a NaN wins its
window, as torch's CPU kernel (``val > maxval || isnan(val)``, so the last NaN). Its backward sends
each window's gradient to that one input, adding where windows overlap, in the order of the
windows. Average pooling divides every window's sum by the kernel's size (count_include_pad = true).
"""
from __future__ import annotations

import math

import numpy as np

from nnstep.layers import (Const, F, Factor, Layer, Lit, Option, Rule, ShapeError, Term, Value, el, expr as X, fmt_shape,
                           ints_text, ix, per_dim)
from nnstep.layers.conv import check_windows

SAME = "kernel_size"          # the default stride: the kernel size, as torch's stride=None


def pool_geometry(opts: dict, nd: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(kernel, stride, padding), one entry per spatial dimension."""
    k = per_dim(opts["kernel_size"], nd)
    s = k if opts.get("stride", SAME) == SAME else per_dim(opts["stride"], nd)
    return k, s, per_dim(opts.get("padding", 0), nd)


class Pool(Layer):
    """The family's base (no type of its own): ``nd`` spatial dimensions, ``fill`` the padding."""
    nd = 1
    fill = 0.0
    image = True
    options = {"kernel_size": Option(kind="posints"), "stride": Option(SAME, "posints"), "padding": Option(0, "nonnegints")}
    pad_with = "0"

    @classmethod
    def shapes(cls, opts, in_shapes):
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
        return (f"(window {ints_text(k)}, stride s = {ints_text(st)}, padding p = {ints_text(p)} of {cls.pad_with} "
                f"on each side{dims})")

    @classmethod
    def check_size(cls, name, opts, in_shape, out_shape, batch, smallest, limits):
        check_windows(name, cls.nd, opts, in_shape, out_shape, batch, limits)

    @classmethod
    def torch_module(cls, L):
        o = L.options
        st = "" if o.get("stride", SAME) == SAME else f", stride={ints_text(o['stride'])}"
        return (f"nn.{cls.torch_name}{cls.nd}d(kernel_size={ints_text(o['kernel_size'])}{st}, "
                f"padding={ints_text(o['padding'])})", cls.torch_note)

    def geometry(self):
        return pool_geometry(self.opts, self.nd)

    def _windows(self, x, fill=None):
        """(N, C, *out_spatial, *kernel), a view of the padded input."""
        nd = self.nd
        k, s, p = self.geometry()
        if any(p):
            x = np.pad(x, [(0, 0), (0, 0)] + [(pi, pi) for pi in p],
                       constant_values=self.fill if fill is None else fill)
        w = np.lib.stride_tricks.sliding_window_view(x, k, axis=tuple(range(2, 2 + nd)))
        return w[(slice(None), slice(None)) + tuple(slice(None, None, si) for si in s)]

    def _covering(self, j, osp):
        """The (window, kernel offset) pairs whose window covers input position j: s·i + k − p = j."""
        k, s, p = self.geometry()
        out = []
        for kk in np.ndindex(*k):
            i = []
            for d in range(self.nd):
                q, rem = divmod(j[d] + p[d] - kk[d], s[d])
                if rem or not (0 <= q < osp[d]):
                    break
                i.append(q)
            else:
                out.append((tuple(i), kk))
        return sorted(out)


    def value_window(self, idx, V, fmt):
        """For explain: one output element from its window's numbers, as (lines, value, scale),
        ``fmt`` formatting a number; scale bounds the rounding (the window's largest magnitude)."""
        k, s, p = self.geometry()
        x_name = self.x
        x = V(x_name)
        n, c, i = idx[0], idx[1], tuple(idx[2:])
        cells = []
        for kk in np.ndindex(*k):
            j = tuple(s[d] * i[d] + kk[d] - p[d] for d in range(self.nd))
            if all(0 <= j[d] < x.shape[2 + d] for d in range(self.nd)):
                cells.append((f"{x_name}{ix((n, c) + j)}", float(x[(n, c) + j]), j))
            else:
                cells.append(("padding", self.fill, None))
        scale = max((abs(v) for _, v, j in cells if j is not None), default=0.0)
        lines, value = self._window_lines(idx, cells, V, fmt)
        return lines, value, scale


class MaxPool(Pool):
    """The largest of each window; ``argmax`` says where it is."""
    fill = -np.inf
    torch_name = "MaxPool"
    torch_note = "the largest of each window (padding is −inf)"
    extras = ("argmax",)
    pad_with = "−∞"

    @classmethod
    def intermediates(cls, opts, in_shapes, out_shape):
        return [("argmax", tuple(out_shape), 1)]

    @classmethod
    def forward_formula(cls, L, n):
        return F("{out}[n, c, i] = max_k {x}[n, c, s·i + k − p];  {arg}[n, c, i] = where in {x} that max is "
                 "(the flat index of its position, the first one on a tie, as torch);  " + cls._geometry(L),
                 out=n.out, x=n.x, arg=n.e("argmax"))

    @classmethod
    def backward_formula(cls, L, n):
        return F("{gin}[n, c, j] = Σ_i {g}[n, c, i] · [{arg}[n, c, i] = j];  (each window sends its whole "
                 "gradient to the input that won it, and 0 to the others)",
                 gin=n.gin, g=n.g, arg=n.e("argmax"))

    def forward(self, x, P):
        nd = self.nd
        k, s, p = self.geometry()
        win = self._windows(x)
        lead = win.shape[:2 + nd]
        flat = win.reshape(lead + (-1,))                  # (N, C, *osp, K), window in row-major order
        kidx = np.argmax(flat, axis=-1)                   # the first maximum on a tie
        nan = np.isnan(flat)
        if nan.any():                                     # torch: a NaN wins (the last one in the window)
            last = flat.shape[-1] - 1 - np.argmax(nan[..., ::-1], axis=-1)
            kidx = np.where(nan.any(axis=-1), last, kidx)
        if any(p):
            # a window whose values are all −∞ ties with its padding: torch then names the window's
            # first position inside the input (its maximum starts there), never the padding
            inside = self._windows(np.ones((1, 1) + x.shape[2:], dtype=bool), fill=False)
            inside = inside.reshape((1, 1) + lead[2:] + (-1,))
            first = np.argmax(inside, axis=-1)
            kidx = np.where(np.take_along_axis(inside, kidx[..., None], axis=-1)[..., 0], kidx, first)
        out = np.take_along_axis(flat, kidx[..., None], axis=-1)[..., 0]
        # where that maximum is in the (unpadded) input: j_d = s_d·i_d + k_d − p_d, flattened row-major
        offs = np.unravel_index(kidx, k)
        sp = x.shape[2:]
        arg = np.zeros(kidx.shape, dtype=np.int64)
        for d in range(nd):
            i_d = np.arange(lead[2 + d]).reshape((1, 1) + tuple(-1 if e == d else 1 for e in range(nd)))
            arg = arg * sp[d] + (s[d] * i_d + offs[d] - p[d])
        return np.ascontiguousarray(out), {"argmax": arg}, {}

    def value_rule(self, name, idx, V):
        """argmax: the flat position, in the sample's and channel's input, of its window's maximum."""
        if name != self.t("argmax"):
            return None
        a = int(V(self.t("argmax"))[tuple(idx)])
        sp = np.shape(V(self.x))[2:]
        at = tuple(int(v) for v in np.unravel_index(a, sp))
        x = self.x
        e = Lit(at[0], str(at[0])) if len(at) == 1 else Lit(at[0], str(at[0])) * Lit(sp[1], str(sp[1])) + Lit(at[1], str(at[1]))
        win = X.Def("max", X.Max([el(V, x, (idx[0], idx[1]) + j) for j in self._window_positions(idx, sp)]))
        return Value(f"where in {x}[{idx[0]}, {idx[1]}] its window's maximum is" + (
            ", row · width + column" if len(at) == 2 else "") + f": {x}{ix((idx[0], idx[1]) + at)}, the first of "
            f"the maxima (as torch)", e, [win])

    def _window_positions(self, idx, sp):
        k, s, p = self.geometry()
        i = tuple(idx[2:])
        out = []
        for kk in np.ndindex(*k):
            j = tuple(s[d] * i[d] + kk[d] - p[d] for d in range(self.nd))
            if all(0 <= j[d] < sp[d] for d in range(self.nd)):
                out.append(j)
        return out

    def _window_lines(self, idx, cells, V, fmt):
        a = int(V(self.t("argmax"))[tuple(idx)])
        x = V(self.x)
        at = np.unravel_index(a, x.shape[2:])
        val = float(x[(idx[0], idx[1]) + tuple(int(v) for v in at)])
        tie = sum(1 for _, v, j in cells if j is not None and v == val) > 1
        out = f"{self.t('out')}{ix(idx)}"
        return ([f"{out} = max over its window of " + ", ".join(f"{nm} = {fmt(v)}" if j is not None
                                                               else "padding −∞" for nm, v, j in cells),
                 f"  = {fmt(val)}, at {self.x}{ix((idx[0], idx[1]) + tuple(int(v) for v in at))}"
                 f" ({self.t('argmax')}{ix(idx)} = {a}" + (": the first of the tied maxima, as torch" if tie else "")
                 + ")"], val)

    def backward(self, g, x, out, P, extras):
        N, C = x.shape[:2]
        S = math.prod(x.shape[2:])
        arg = extras["argmax"]
        # one running sum per input element, in the order of the windows (as torch's CPU kernel)
        at = (np.arange(N * C).reshape(N, C, *(1,) * self.nd) * S + arg).ravel()
        gin = np.bincount(at, weights=g.ravel(), minlength=N * C * S).astype(g.dtype, copy=False)
        return gin.reshape(x.shape), {}, None

    def grad_rule(self, wrt, idx, V):
        x_name, a_name = self.x, self.t("argmax")
        x, arg = V(x_name), V(a_name)
        n, c, j = idx[0], idx[1], tuple(idx[2:])
        me = int(np.ravel_multi_index(j, x.shape[2:]))
        terms = []
        for i, _kk in self._covering(j, arg.shape[2:]):          # each window covers j at one offset
            at = (n, c) + i
            won = int(arg[at]) == me
            terms.append(Term((Factor(self.dout(at, self.sym(x_name, idx)), f"[{a_name}{ix(at)} = {me}]",
                                      1.0 if won else 0.0),), (self.grad_out, at)))
        return Rule("Σ over the windows that cover this input: 1 where it won the window, else 0", terms)


class AvgPool(Pool):
    """The mean of each window, padding's zeros counted."""
    torch_name = "AvgPool"
    torch_note = "the mean of each window, padding's zeros counted (count_include_pad=True)"
    @classmethod
    def forward_formula(cls, L, n):
        K = cls.kernel_elements(L)
        return F("{out}[n, c, i] = (1/{K}) · Σ_k {x}[n, c, s·i + k − p];  (K = " + str(K) + ", the kernel's "
                 "elements, padding zeros included);  " + cls._geometry(L), out=n.out, x=n.x, K=Const("K", K))

    @classmethod
    def backward_formula(cls, L, n):
        return F("{gin}[n, c, j] = Σ_i {g}[n, c, i] / {K} over the windows i that cover j;  (each of a "
                 "window's K = " + str(cls.kernel_elements(L)) + " inputs gets 1/K of its gradient)", gin=n.gin, g=n.g,
                 K=Const("K", cls.kernel_elements(L)))
    def forward(self, x, P):
        nd = self.nd
        K = math.prod(self.geometry()[0])
        win = self._windows(x)
        return np.ascontiguousarray(win.sum(axis=tuple(range(2 + nd, 2 + 2 * nd))) / K), {}, {}

    def _window_lines(self, idx, cells, V, fmt):
        K = len(cells)
        total = math.fsum(v for _, v, _j in cells)
        out = f"{self.t('out')}{ix(idx)}"
        return ([f"{out} = (1/{K}) · (" + " + ".join(nm if j is not None else "0 (padding)" for nm, _v, j in cells) + ")",
                 "  = (1/%d) · (%s)" % (K, " + ".join(fmt(v) for _, v, _j in cells)),
                 f"  = {fmt(total)} / {K} = {fmt(total / K)}"], total / K)

    def backward(self, g, x, out, P, extras):
        nd = self.nd
        k, s, p = self.geometry()
        K = math.prod(k)
        share = g / K
        padded = tuple(x.shape[2 + d] + 2 * p[d] for d in range(nd))
        gx = np.zeros(x.shape[:2] + padded, dtype=g.dtype)
        osp = g.shape[2:]
        for kk in np.ndindex(*k):
            sl = (slice(None), slice(None)) + tuple(
                slice(kk[d], kk[d] + s[d] * (osp[d] - 1) + 1, s[d]) for d in range(nd))
            gx[sl] = gx[sl] + share
        if any(p):
            gx = gx[(slice(None), slice(None)) + tuple(slice(p[d], p[d] + x.shape[2 + d]) for d in range(nd))]
        return np.ascontiguousarray(gx), {}, None

    def grad_rule(self, wrt, idx, V):
        x_name = self.x
        g = V(self.grad_out)
        K = math.prod(self.geometry()[0])
        n, c, j = idx[0], idx[1], tuple(idx[2:])
        terms = [Term((Factor(self.dout((n, c) + i, self.sym(x_name, idx)), f"1/{K}", 1.0 / K),),
                      (self.grad_out, (n, c) + i)) for i, _kk in self._covering(j, g.shape[2:])]
        return Rule(f"Σ over the windows that cover this input, each sending 1/{K} of its gradient", terms)


class MaxPool1d(MaxPool):
    """nn.MaxPool1d: (N, C, L) -> (N, C, L')."""
    type = "maxpool1d"
    torch_modules = ("MaxPool1d", "AdaptiveMaxPool1d")
    torch_functions = ("F.max_pool1d", "F.adaptive_max_pool1d")
    onnx_ops = ("MaxPool",)
    nd = 1


class MaxPool2d(MaxPool):
    """nn.MaxPool2d: (N, C, H, W) -> (N, C, H', W')."""
    type = "maxpool2d"
    torch_modules = ("MaxPool2d", "AdaptiveMaxPool2d")
    torch_functions = ("F.max_pool2d", "F.adaptive_max_pool2d")
    onnx_ops = ("MaxPool", "GlobalMaxPool")
    nd = 2


class AvgPool1d(AvgPool):
    """nn.AvgPool1d: (N, C, L) -> (N, C, L')."""
    type = "avgpool1d"
    torch_modules = ("AvgPool1d", "AdaptiveAvgPool1d")
    torch_functions = ("F.avg_pool1d", "F.adaptive_avg_pool1d")
    onnx_ops = ("AveragePool",)
    nd = 1


class AvgPool2d(AvgPool):
    """nn.AvgPool2d: (N, C, H, W) -> (N, C, H', W')."""
    type = "avgpool2d"
    torch_modules = ("AvgPool2d", "AdaptiveAvgPool2d")
    torch_functions = ("F.avg_pool2d", "F.adaptive_avg_pool2d")
    onnx_ops = ("AveragePool", "GlobalAveragePool")
    nd = 2
