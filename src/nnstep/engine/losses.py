"""Losses with torch.nn.functional's semantics. Each returns the scalar loss and dLoss/dpred.

`reduction = "mean"` averages over all elements, except cross_entropy which averages over the
batch (and any extra spatial dims, as torch does); `scale` multiplies the loss (and so its gradient).
"""
from __future__ import annotations

import numpy as np

def _reduce(elem: np.ndarray, reduction: str):
    return elem.sum() if reduction == "sum" else elem.mean()


def _count(n: int, reduction: str) -> float:
    return 1.0 if reduction == "sum" else float(n)


def loss_forward(kind: str, p: np.ndarray, y: np.ndarray, reduction: str, scale: float, beta=1.0, delta=1.0,
                 lp=None):
    """The scalar loss. For cross_entropy, ``lp`` may pass log_softmax(p) when already computed."""
    dt = p.dtype
    if kind == "nll":
        return np.asarray(_reduce(-_picked(p, y), reduction) * scale, dtype=dt)
    if kind == "cross_entropy":
        if lp is None:
            lp = log_softmax(p)
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
        # as torch: (1 − y)·x − log σ(x), with log σ(x) = min(x, 0) − log1p(e^(−|x|)), stable both ways
        elem = (1.0 - y) * p - (np.minimum(p, 0) - np.log1p(np.exp(-np.abs(p))))
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
                  lp=None):
    """dLoss/dpred. For cross_entropy, ``lp`` may pass log_softmax(p) when already computed."""
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
        return (p - y) / np.maximum((1.0 - p) * p, 1e-12) * c
    if kind == "bce_with_logits":
        return (1.0 / (1.0 + np.exp(-p)) - y) * c
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
    from .terms import Factor, Rule, Term, ix

    idx = tuple(int(i) for i in idx)
    at = ix(idx)
    kind, s = lo.type, lo.scale
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
            f"d/β (|d| < β) else sign(d), d = {dd}", f"d = {d:.9g}", v)))])
    if kind == "huber":
        v = d if abs(d) <= lo.delta else lo.delta * float(np.sign(d))
        return Rule("the loss's derivative", [Term((Factor(cs, "", c), Factor(
            f"d (|d| < δ) else δ·sign(d), d = {dd}", f"d = {d:.9g}", v)))])
    if kind == "bce":
        v = d / max((1.0 - pv) * pv, 1e-12)
        return Rule("the loss's derivative", [Term((Factor(cs, "", c), Factor(
            f"{dd} / max((1 − ŷ)·ŷ, 1e−12)", "", v)))])
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
