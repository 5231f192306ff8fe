"""Losses with torch.nn.functional's semantics. Each returns the scalar loss and dLoss/dpred.

`reduction = "mean"` averages over all elements, except cross_entropy which averages over the
batch (and any extra spatial dims, as torch does); `scale` multiplies the loss (and so its gradient).
"""
from __future__ import annotations

import numpy as np

from ..model.catalog import BCE_EPS         # BCE's gradient clamp, float32's 1e-12 as torch has it


def _reduce(elem: np.ndarray, reduction: str):
    return elem.sum() if reduction == "sum" else elem.mean()


def _count(n: int, reduction: str) -> float:
    return 1.0 if reduction == "sum" else float(n)


def _class_view(w, p):
    """Class weights shaped to broadcast along dim 1 of p, as torch's weight.view(1, C, 1, ...)."""
    return np.asarray(w, dtype=p.dtype).reshape((1, -1) + (1,) * (p.ndim - 2))


def _ce_weighted(p, y, lp, reduction, w, eps):
    """cross_entropy with class weights ``w`` (or None) and label smoothing ``eps``, as ATen's
    cross_entropy_loss_label_smoothing (class indices: (1 − ε)·nll + ε/C·Σ_c −w_c·log p_c, the mean
    dividing both by Σₙ w[yₙ]) and cross_entropy_loss_prob_target (probabilities: the target
    smoothed to t·(1 − ε) + ε/C, the mean dividing by the number of positions, weights or not).
    Returns (loss before scale, gradient before scale)."""
    C = p.shape[1]
    sm = np.exp(lp)
    wb = np.ones((1, C) + (1,) * (p.ndim - 2), dtype=p.dtype) if w is None else _class_view(w, p)
    if y.shape == p.shape:
        t = y * (1 - eps) + eps / C if eps else y
        wt = wb * t
        elem = -(lp * wt).sum()
        n = 1.0 if reduction == "sum" else float(p.size // C)
        g = sm * wt.sum(axis=1, keepdims=True) - wt
        return elem / n, g / n
    idx = np.expand_dims(y.astype(np.int64, copy=False), 1)
    wvec = wb.reshape(-1)
    wy = wvec[idx]                                           # w[yₙ], shape (N, 1, ...)
    nll = -(np.take_along_axis(lp, idx, axis=1) * wy).sum()
    D = 1.0 if reduction == "sum" else float(wy.sum())
    smooth = -(lp * wb).sum()
    loss = (1 - eps) * (nll / D) + (smooth / D) * (eps / C) if eps else nll / D
    onehot = np.zeros_like(p)
    np.put_along_axis(onehot, idx, 1.0, axis=1)
    g = (1 - eps) * wy * (sm - onehot)
    if eps:
        g = g + (eps / C) * (wvec.sum() * sm - wb)
    return loss, g / D


def loss_forward(kind: str, p: np.ndarray, y: np.ndarray, reduction: str, scale: float, beta=1.0, delta=1.0,
                 lp=None, weight=None, label_smoothing=0.0, pos_weight=None):
    """The scalar loss. For cross_entropy, ``lp`` may pass log_softmax(p) when already computed;
    ``weight`` (class weights) and ``label_smoothing`` are cross_entropy's, ``pos_weight``
    bce_with_logits' (over the last dim)."""
    dt = p.dtype
    if kind == "nll":
        return np.asarray(_reduce(-_picked(p, y), reduction) * scale, dtype=dt)
    if kind == "cross_entropy":
        if lp is None:
            lp = log_softmax(p)
        if weight is not None or label_smoothing:
            return np.asarray(_ce_weighted(p, y, lp, reduction, weight, label_smoothing)[0] * scale, dtype=dt)
        if y.shape == p.shape:                       # class probabilities
            elem = -(y * lp).sum(axis=1)
        elif p.ndim == 2:
            elem = -lp[np.arange(p.shape[0]), y.astype(np.int64, copy=False)]
        else:
            idx = np.expand_dims(y.astype(np.int64, copy=False), 1)
            elem = -np.take_along_axis(lp, idx, axis=1)[:, 0]
        return np.asarray(_reduce(elem, reduction) * scale, dtype=dt)
    if kind == "bce":
        # as torch: (y − 1)·max(log1p(−p), −100) − y·max(log p, −100); log1p keeps log(1 − p)
        # accurate for a small p
        elem = (y - 1.0) * np.maximum(np.log1p(-p), -100.0) - y * np.maximum(np.log(p), -100.0)
    elif kind == "bce_with_logits":
        # as torch: (1 − y)·x − log σ(x), with log σ(x) = min(x, 0) − log1p(e^(−|x|)), stable both ways;
        # with pos_weight: (1 − y)·x − (1 + (pos_weight − 1)·y)·log σ(x)
        logsig = np.minimum(p, 0) - np.log1p(np.exp(-np.abs(p)))
        if pos_weight is not None:
            elem = (1.0 - y) * p - ((np.asarray(pos_weight, dtype=dt) - 1) * y + 1) * logsig
        else:
            elem = (1.0 - y) * p - logsig
    else:
        d = p - y
        if kind == "mse":
            elem = d * d
        elif kind == "l1":
            elem = np.abs(d)
        elif kind == "smooth_l1":
            ad = np.abs(d)
            elem = ad if beta == 0 else np.where(ad < beta, 0.5 * d * d / beta, ad - 0.5 * beta)
        elif kind == "huber":
            ad = np.abs(d)
            elem = np.where(ad < delta, 0.5 * d * d, delta * (ad - 0.5 * delta))
        else:
            raise ValueError(kind)
    return np.asarray(_reduce(elem, reduction) * scale, dtype=dt)


def loss_backward(kind: str, p: np.ndarray, y: np.ndarray, reduction: str, scale: float, beta=1.0, delta=1.0,
                  lp=None, weight=None, label_smoothing=0.0, pos_weight=None):
    """dLoss/dpred. For cross_entropy, ``lp`` may pass log_softmax(p) when already computed."""
    if kind == "cross_entropy" and (weight is not None or label_smoothing):
        g = _ce_weighted(p, y, log_softmax(p) if lp is None else lp, reduction, weight, label_smoothing)[1]
        return g * scale
    if kind == "nll":                                 # −1 at each target class (scaled), 0 elsewhere
        g = np.zeros_like(p)
        idx = np.expand_dims(y.astype(np.int64, copy=False), 1)
        np.put_along_axis(g, idx, -scale / _count(p.size // p.shape[1], reduction), axis=1)
        return g
    if kind == "cross_entropy":
        n = p.size // p.shape[1]
        g = np.exp(log_softmax(p) if lp is None else lp)     # softmax, a fresh array
        if y.shape == p.shape:
            g = g * y.sum(axis=1, keepdims=True) - y
        elif p.ndim == 2:
            g[np.arange(p.shape[0]), y.astype(np.int64, copy=False)] -= 1.0
        else:
            idx = np.expand_dims(y.astype(np.int64, copy=False), 1)
            np.put_along_axis(g, idx, np.take_along_axis(g, idx, axis=1) - 1.0, axis=1)
        g *= scale / _count(n, reduction)
        return g
    c = scale / _count(p.size, reduction)
    if kind == "bce":
        return (p - y) / np.maximum((1.0 - p) * p, BCE_EPS) * c
    if kind == "bce_with_logits":
        sig = 1.0 / (1.0 + np.exp(-p))
        if pos_weight is not None:
            pw = np.asarray(pos_weight, dtype=p.dtype)
            return (((pw - 1) * y + 1) * sig - pw * y) * c
        return (sig - y) * c
    d = p - y
    if kind == "mse":
        return 2.0 * d * c
    if kind == "l1":
        return np.sign(d) * c
    if kind == "smooth_l1":
        if beta == 0:
            return np.sign(d) * c
        return np.where(np.abs(d) < beta, d / beta, np.sign(d)) * c
    if kind == "huber":
        return np.where(d < -delta, -delta, np.where(d > delta, delta, d)) * c
    raise ValueError(kind)


def _picked(p, y):
    """p[n, y[n, ...], ...]: each target's entry along the class dim 1 (nll)."""
    idx = np.expand_dims(y.astype(np.int64, copy=False), 1)
    return np.take_along_axis(p, idx, axis=1)[:, 0]


def log_softmax(x):
    """Over dim 1 (the class dim), max-shifted."""
    m = x.max(axis=1, keepdims=True)
    s = x - m
    return s - np.log(np.exp(s).sum(axis=1, keepdims=True))


def grad_rule(lo, pred: str, p: np.ndarray, y: np.ndarray, idx: tuple):
    """dLoss/dpred at one element, as a product of factors (the same derivative as loss_backward,
    written per element, for explain)."""
    from ..layers.terms import Factor, Rule, Term, ix

    idx = tuple(int(i) for i in idx)
    at = ix(idx)
    kind, s = lo.type, lo.scale
    if kind == "cross_entropy" and (lo.weight is not None or lo.label_smoothing):
        C = p.shape[1]
        eps = lo.label_smoothing
        w = np.ones(C) if lo.weight is None else np.asarray(lo.weight, dtype=np.float64)
        sm = float(np.exp(log_softmax(p)[idx]))
        cls = idx[1]
        rest = (idx[0],) + idx[2:]
        if y.shape == p.shape:
            t = y[(idx[0], slice(None)) + idx[2:]] * (1 - eps) + eps / C
            wt = w * t
            v = sm * float(wt.sum()) - float(wt[cls])
            D = 1.0 if lo.reduction == "sum" else float(p.size // C)
            f = Factor(f"softmax({pred}){at}·Σ_c w_c·t_c − w_{cls}·t_{cls}   (t = target·(1 − ε) + ε/C)", "", v)
            dl = "s/N" if lo.reduction == "mean" else "s"
        else:
            yi = y.astype(np.int64)
            hit = 1.0 if int(yi[rest]) == cls else 0.0
            wy = float(w[int(yi[rest])])
            v = (1 - eps) * wy * (sm - hit) + eps / C * (float(w.sum()) * sm - float(w[cls]))
            D = 1.0 if lo.reduction == "sum" else float(w[yi].sum())
            f = Factor(f"(1 − ε)·w[target{ix(rest)}]·(softmax({pred}){at} − [target{ix(rest)} = {cls}]) "
                       f"+ ε/C·(Σ_c w_c·softmax({pred}){at} − w_{cls})", f"ε = {eps:g}, C = {C}", v)
            dl = "s/Σₙ w[targetₙ]" if lo.reduction == "mean" else "s"
        return Rule("the loss's derivative", [Term((Factor(dl, "", s / D), f))])
    if kind == "nll":
        c = s / _count(p.size // p.shape[1], lo.reduction)
        rest = (idx[0],) + idx[2:]
        hit = 1.0 if int(y[rest]) == idx[1] else 0.0
        return Rule("the loss's derivative", [Term((Factor("s/N" if lo.reduction == "mean" else "s", "", c),
                                                    Factor(f"−[target{ix(rest)} = {idx[1]}]", "", -hit)))])
    if kind == "cross_entropy":
        n = p.size // p.shape[1]
        c = s / _count(n, lo.reduction)
        sm = float(np.exp(log_softmax(p)[idx]))
        cls = idx[1]
        rest = (idx[0],) + idx[2:]
        if y.shape == p.shape:
            tot = float(y[(idx[0], slice(None)) + idx[2:]].sum())
            v = sm * tot - float(y[idx])
            f = Factor(f"softmax({pred}){at}·Σ_c target − target{at}", "", v)
        else:
            hit = 1.0 if int(y[rest]) == cls else 0.0
            v = sm - hit
            f = Factor(f"softmax({pred}){at} − [target{ix(rest)} = {cls}]", f"{sm:.9g} − {hit:g}", v)
        return Rule("the loss's derivative", [Term((Factor("s/N" if lo.reduction == "mean" else "s", "", c), f))])
    c = s / _count(p.size, lo.reduction)
    cs = "s/n" if lo.reduction == "mean" else "s"
    pv, yv = float(p[idx]), float(y[idx])
    d = pv - yv
    dd = f"({pred}{at} − target{at})"
    if kind == "mse":
        yt = f"({yv:.9g})" if yv < 0 else f"{yv:.9g}"
        return Rule("the loss's derivative", [Term((Factor("2·" + cs, "", 2.0 * c), Factor(dd, f"{pv:.9g} − {yt}", d)))])
    if kind == "l1" or (kind == "smooth_l1" and lo.beta == 0):
        return Rule("the loss's derivative", [Term((Factor(cs, "", c), Factor(f"sign({dd})", "", float(np.sign(d)))))])
    if kind == "smooth_l1":
        v = d / lo.beta if abs(d) < lo.beta else float(np.sign(d))
        return Rule("the loss's derivative", [Term((Factor(cs, "", c), Factor(
            f"d/β (|d| < β) else sign(d), d = {dd}",
            f"d = {d:.9g}, " + ("|d| < β: d/β" if abs(d) < lo.beta else "|d| ≥ β: sign(d)"), v)))])
    if kind == "huber":
        v = d if abs(d) <= lo.delta else lo.delta * float(np.sign(d))
        return Rule("the loss's derivative", [Term((Factor(cs, "", c), Factor(
            f"d (|d| < δ) else δ·sign(d), d = {dd}",
            f"d = {d:.9g}, " + ("|d| ≤ δ: d" if abs(d) <= lo.delta else "|d| > δ: δ·sign(d)"), v)))])
    if kind == "bce":
        v = d / max((1.0 - pv) * pv, BCE_EPS)
        return Rule("the loss's derivative", [Term((Factor(cs, "", c), Factor(
            f"{dd} / max((1 − ŷ)·ŷ, ε)   (ε = {BCE_EPS!r}, torch's float32 1e−12)", "", v)))])
    if kind == "bce_with_logits" and lo.pos_weight is not None:
        pw = np.broadcast_to(np.asarray(lo.pos_weight, dtype=np.float64), p.shape[-1:])
        pj = float(pw[idx[-1]])
        sg = 1.0 / (1.0 + np.exp(-pv))
        v = (1 + (pj - 1) * yv) * sg - pj * yv
        return Rule("the loss's derivative", [Term((Factor(cs, "", c), Factor(
            f"(1 + (pos_weight − 1)·target{at})·σ({pred}{at}) − pos_weight·target{at}", f"pos_weight = {pj:g}", float(v))))])
    if kind == "bce_with_logits":
        v = 1.0 / (1.0 + np.exp(-pv)) - yv
        return Rule("the loss's derivative", [Term((Factor(cs, "", c), Factor(f"σ({pred}{at}) − target{at}", "", float(v))))])
    raise ValueError(kind)


def class_first(lo, p: np.ndarray, y: np.ndarray):
    """cross_entropy with ``class_dim`` other than 1: the logits (and probability targets) with the
    class dim moved to 1, as torch's ``cross_entropy(logits.movedim(class_dim, 1), targets)``.
    Returns (p, y, dim to move the gradient back to, or None)."""
    if lo.type not in ("cross_entropy", "nll"):
        return p, y, None
    cd = lo.class_dim % p.ndim
    if cd == 1:
        return p, y, None
    return np.moveaxis(p, cd, 1), (np.moveaxis(y, cd, 1) if y.shape == p.shape else y), cd


def value_rule(lo, pred: str, V, idx=()):
    """The loss (a scalar) from the prediction's and target's elements, for explain: s · Σ ℓ / n
    with every element's ℓ written out (the first few; all are added up)."""
    from ..layers import expr as X
    from ..layers.expr import K, Lit, Value, total

    p0, y0 = np.asarray(V(pred)), np.asarray(V("target"))
    p, y, back = class_first(lo, p0, y0)

    def P(at):                               # the prediction's element at ``at`` in class-first order
        at = tuple(int(i) for i in at)
        if back is not None:
            at = at[:1] + at[2:back + 1] + at[1:2] + at[back + 1:]
        return X.El(pred, at, p0[at])

    def Y(at):
        at = tuple(int(i) for i in at)
        if back is not None and y.shape == p.shape:
            at = at[:1] + at[2:back + 1] + at[1:2] + at[back + 1:]
        return X.El("target", at, y0[at])

    t, s = lo.type, lo.scale
    if t in ("cross_entropy", "nll"):
        C = p.shape[1]
        cells = [(n,) + pos for n in range(p.shape[0]) for pos in np.ndindex(*p.shape[2:])]
        at = lambda cell, c: cell[:1] + (c,) + cell[1:]  # noqa: E731
        if t == "nll":
            terms = [-P(at(cell, int(y[cell]))) for cell in cells]
            e, n, what = total(terms), len(cells), "−log-probability of each target class"
        else:
            w = np.ones(C) if lo.weight is None else np.asarray(lo.weight, dtype=np.float64)
            wk = (lambda c: Lit(w[c])) if lo.weight is not None else None
            eps = lo.label_smoothing
            lse = {cell: X.Lse([P(at(cell, c)) for c in range(C)]) for cell in cells}
            if y.shape == p.shape:           # class probabilities (smoothed: t = y·(1 − ε) + ε/C)
                def tgt(cell, c):
                    yc = Y(at(cell, c))
                    return yc * (1 - K("ε", eps)) + K("ε", eps) / Lit(C) if eps else yc
                terms = [total([(wk(c) * tgt(cell, c) if wk else tgt(cell, c)) * (lse[cell] - P(at(cell, c)))
                                for c in range(C)], "class") for cell in cells]
                e, n = total(terms), len(cells)
                what = "−Σ_c target·log softmax per sample" + (", weighted" if lo.weight is not None else "")
            else:
                def nll(cell):
                    c = int(y[cell])
                    d = lse[cell] - P(at(cell, c))
                    return wk(c) * d if wk else d
                e = total([nll(cell) for cell in cells])
                n = len(cells)
                if eps:
                    smooth = total([total([(wk(c) * (lse[cell] - P(at(cell, c))) if wk else lse[cell] - P(at(cell, c)))
                                           for c in range(C)], "class") for cell in cells])
                    e = (1 - K("ε", eps)) * e + K("ε", eps) / Lit(C) * smooth
                if lo.weight is not None:
                    n = float(sum(w[int(y[cell])] for cell in cells))
                what = "−log softmax of each target class" + (", weighted" if lo.weight is not None else "")
    else:
        # an element-wise loss: every element's term, the first few written as expressions, all of
        # them added from the same arithmetic on the whole arrays (a loss may cover many elements)
        n = p.size
        pv, yv = p.astype(np.float64), y.astype(np.float64)
        dv = pv - yv
        cell = lambda j: tuple(int(v) for v in np.unravel_index(j, p.shape))  # noqa: E731
        d = lambda j: P(cell(j)) - Y(cell(j))  # noqa: E731
        with np.errstate(all="ignore"):
            if t == "mse":
                term, vals, what = (lambda j: X.sq(d(j))), dv * dv, "(prediction − target)² per element"
            elif t == "l1" or (t == "smooth_l1" and lo.beta == 0):
                term, vals, what = (lambda j: X.vabs(d(j))), np.abs(dv), "|prediction − target| per element"
            elif t == "smooth_l1":
                b = K("β", lo.beta)
                term = lambda j: (Lit(0.5) * X.sq(d(j)) / b if abs(dv.flat[j]) < lo.beta  # noqa: E731
                                  else X.vabs(d(j)) - Lit(0.5) * b)
                vals = np.where(np.abs(dv) < lo.beta, 0.5 * dv * dv / lo.beta, np.abs(dv) - 0.5 * lo.beta)
                what = "0.5·d²/β where |d| < β, else |d| − 0.5·β, d = prediction − target"
            elif t == "huber":
                dl = K("δ", lo.delta)
                term = lambda j: (Lit(0.5) * X.sq(d(j)) if abs(dv.flat[j]) < lo.delta  # noqa: E731
                                  else dl * (X.vabs(d(j)) - Lit(0.5) * dl))
                vals = np.where(np.abs(dv) < lo.delta, 0.5 * dv * dv, lo.delta * (np.abs(dv) - 0.5 * lo.delta))
                what = "0.5·d² where |d| < δ, else δ·(|d| − 0.5·δ), d = prediction − target"
            elif t == "bce":
                def term(j):
                    c = cell(j)
                    return -(Y(c) * X.vmax(X.log(P(c)), Lit(-100)) + (1 - Y(c)) * X.vmax(X.log(1 - P(c)), Lit(-100)))
                vals = -(yv * np.maximum(np.log(pv), -100.0) + (1 - yv) * np.maximum(np.log(1 - pv), -100.0))
                what = "−(y·log p + (1 − y)·log(1 − p)) per element, each log at least −100"
            else:                                 # bce_with_logits, stably: (1 − y)·x − log σ(x)
                def logsig(x):
                    return X.vmin(x, Lit(0)) - X.log(1 + X.exp(-X.vabs(x)))
                pw = None if lo.pos_weight is None else np.broadcast_to(np.asarray(lo.pos_weight, dtype=np.float64),
                                                                        p.shape[-1:])

                def term(j):
                    c = cell(j)
                    ls = logsig(P(c))
                    return (1 - Y(c)) * P(c) - (ls if pw is None else (1 + (Lit(pw[c[-1]]) - 1) * Y(c)) * ls)
                ls = np.minimum(pv, 0) - np.log(1 + np.exp(-np.abs(pv)))
                vals = (1 - yv) * pv - (ls if pw is None else (1 + (pw - 1) * yv) * ls)
                what = "(1 − y)·x − log σ(x) per element" + (", log σ weighted by 1 + (pos_weight − 1)·y" if pw is not None
                                                              else "") + ", log σ(x) = min(x, 0) − log(1 + e^(−|x|))"
            mags = np.abs(vals) + (np.abs(pv) + np.abs(yv) + 1.0) * (1.0 + np.abs(vals))
        e = X.Many(term, vals, mags)
    if lo.reduction == "mean":
        e = e / Lit(n)
    if s != 1:
        e = K("s", s) * e
    how = f"{t}, {lo.reduction}" + (f" over {n:g}" if lo.reduction == "mean" else "") + f": {what}"
    return Value(how, e)
