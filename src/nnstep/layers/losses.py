"""Losses, each one class (torch.nn.functional's semantics): the element-wise ``mse``, ``l1``,
``smooth_l1``, ``huber``, ``bce`` and ``bce_with_logits`` here, ``cross_entropy`` and ``nll`` (class
indices) in :mod:`.crossentropy`.

A loss type declares its options (beside ``reduction`` and ``scale``, which every loss takes), the
formulas of the ``loss`` and ``backward loss`` ops, forward and backward, the element rules explain
checks, what targets it takes (the loader's checks), and its torch equivalent. ``reduction =
"mean"`` averages over all elements (the class-index losses over the batch and any positions, as
torch); ``scale`` multiplies the loss, and so its gradient.
"""
from __future__ import annotations

import numpy as np

from nnstep.layers import (Clause, Const, Count, F, Factor, Formula, K, Lit, Option, OptionError, Ref, Rule, Sym, Term,
                           Value, exact, expr as X, ix)

# torch's clamp of BCE's gradient denominator, max((1 − p)·p, ε): its C++ literal 1e-12 is stored in a
# float, so ε is float32's nearest value even in float64 (aten binary_cross_entropy_backward)
BCE_EPS = 9.999999960041972e-13


class TargetError(ValueError):
    """Targets a loss cannot take (raised by ``Loss.target``): the loader locates it at data.y."""


def _reduce(elem: np.ndarray, reduction: str):
    return elem.sum() if reduction == "sum" else elem.mean()


def count(n: int, reduction: str) -> float:
    """What a sum is divided by: n for ``mean``, 1 for ``sum``."""
    return 1.0 if reduction == "sum" else float(n)


def shape_text(s) -> str:
    from nnstep.layers import fmt_shape
    return fmt_shape(s)


class Loss:
    """A loss type. ``spec`` is the scenario's LossSpec (``spec.reduction``, ``spec.scale``, and
    every option of the type by name). The methods that see arrays take the prediction ``p`` and
    the target ``y`` with the class dimension first after the batch (``class_first``)."""
    type: str = ""
    options: dict[str, Option] = {
        "reduction": Option("mean", "choice:mean|sum", "mean: averaged; sum: summed"),
        "scale": Option(1.0, "float", "multiplies the loss and its gradient")}
    torch_class: str = ""

    def __init__(self, spec):
        self.spec = spec

    # --- formulas -----------------------------------------------------------------------------------
    def formulas(self, pred: str, target_is_index: bool, pred_ndim: int) -> tuple[Formula, Formula]:
        """(loss, backward loss) formulas for the prediction tensor ``pred`` (of ``pred_ndim``
        dimensions, the batch included). With a scale, each ends in a remark that says what s is,
        so wherever the formula is shown (without its numbers too) s is defined."""
        lo = self.spec
        f, b = self._formulas(pred, target_is_index, pred_ndim, self._parts(pred, pred_ndim, target_is_index))
        if lo.scale == 1:
            return f, b
        what = Clause((f"(s = {lo.scale:g}: the scenario's loss.scale, multiplying the loss and its gradient)",), (), "")
        return f + (what,), b + (what,)

    def _parts(self, pred, pred_ndim, target_is_index) -> dict:
        lo = self.spec
        return dict(P=Ref(pred, "prediction"), Y=Ref("target", "target"), L=Ref("loss", "loss"),
                    G=Ref("loss.grad", "loss_grad"), s=Const("s", lo.scale), n=Count("n", pred))

    @property
    def _s(self) -> str:
        return "{s} · " if self.spec.scale != 1 else ""

    @property
    def _div(self) -> str:
        return " / {n}" if self.spec.reduction == "mean" else ""

    def _formulas(self, pred, target_is_index, pred_ndim, kw) -> tuple[Formula, Formula]:
        raise NotImplementedError

    # --- math ---------------------------------------------------------------------------------------
    def class_first(self, p: np.ndarray, y: np.ndarray):
        """(p, y, the dim to move the gradient back to or None): the class dimension moved to 1."""
        return p, y, None

    def shared(self, p: np.ndarray):
        """What forward and backward both compute from p, made once by the program and passed to
        both as ``lp`` (cross_entropy's log_softmax); None: nothing."""
        return None

    def forward(self, p: np.ndarray, y: np.ndarray, lp=None) -> np.ndarray:
        """The loss, a 0-d array of p's dtype (``lp``: what ``shared`` made of p, or None)."""
        raise NotImplementedError

    def backward(self, p: np.ndarray, y: np.ndarray, lp=None) -> np.ndarray:
        """dLoss/dp."""
        raise NotImplementedError

    def grad_rule(self, pred: str, p, y, idx: tuple) -> Rule:
        """dLoss/dpred at one element, as a product of factors (the same derivative as backward)."""
        raise NotImplementedError

    def value_rule(self, pred: str, V, idx=()) -> Value:
        """The loss from the prediction's and target's elements, for explain."""
        raise NotImplementedError

    # --- the loader's checks ------------------------------------------------------------------------
    def target(self, y: np.ndarray, pred: tuple[int, ...], x_dtype, who: str) -> np.ndarray:
        """The targets as this loss takes them (converted), for a prediction of shape ``pred`` (the
        batch included) made by ``who``; TargetError (data.y) or OptionError (loss.<key>)."""
        if y.shape != pred:
            if y.ndim == 1 and len(pred) == 2 and pred[1] == 1:
                # one target per sample for a one-output net: read as a column, [N] -> [N, 1] (torch
                # would broadcast [N] against [N, 1] to [N, N], a classic silent bug)
                return self.target(y.reshape(-1, 1), pred, x_dtype, who)
            raise TargetError(f"targets of shape {shape_text(y.shape)} do not fit the output of {who}, "
                              f"{shape_text(pred)} ({self.type} compares them element by element)")
        return y

    def check(self, pred: tuple[int, ...], who: str) -> None:
        """Options that must fit the prediction's shape (class weights): OptionError."""

    @classmethod
    def check_options(cls, opts: dict) -> None:
        """Options that contradict each other: OptionError."""

    # --- torch ----------------------------------------------------------------------------------------
    def torch_kwargs(self) -> list[str]:
        """The keyword arguments of ``nn.<torch_class>`` besides reduction."""
        return []

    def torch_call(self, pred_ndim: int, y_is_probs: bool) -> tuple[str, str, str | None]:
        """(prediction, target, a comment or None): the arguments the exported script passes
        ``loss_fn`` (``pred`` and ``y`` as they are, or moved to torch's layout)."""
        return "pred", "y", None


class ElementwiseLoss(Loss):
    """A loss that compares prediction and target element by element: ``elem`` the loss of each
    element, ``grad`` its derivative (before the reduction and the scale), ``term`` one element as
    an expression for explain, ``factor`` its derivative as a Factor."""
    what = ""                  # the element's loss in words, for explain

    def forward(self, p, y, lp=None):
        lo = self.spec
        return np.asarray(_reduce(self.elem(p, y), lo.reduction) * lo.scale, dtype=p.dtype)

    def backward(self, p, y, lp=None):
        lo = self.spec
        return self.grad(p, y, lo.scale / count(p.size, lo.reduction))

    def elem(self, p, y):
        raise NotImplementedError

    def grad(self, p, y, c):
        """c · d elem / d p, c = scale / n."""
        raise NotImplementedError

    def grad_rule(self, pred, p, y, idx):
        lo = self.spec
        idx = tuple(int(i) for i in idx)
        c = lo.scale / count(p.size, lo.reduction)
        cs = "s/n" if lo.reduction == "mean" else "s"
        return Rule("the loss's derivative", [Term(self.factors(pred, idx, p, y, c, cs))])

    def factors(self, pred, idx, p, y, c, cs) -> tuple[Factor, ...]:
        """The derivative at ``idx`` as factors: the constant c = s/n (``cs``), then the element's."""
        pv, yv = float(p[idx]), float(y[idx])
        return (Factor(cs, "", c), self.factor(f"({pred}{ix(idx)} − target{ix(idx)})", pv, yv, idx, p))

    def factor(self, dd, pv, yv, idx, p) -> Factor:
        """d elem / d p at one element, ``dd`` the difference's symbol."""
        raise NotImplementedError

    def value_rule(self, pred, V, idx=()):
        """s · Σ ℓ / n with every element's ℓ written out (the first few; all are added up)."""
        lo = self.spec
        p, y = np.asarray(V(pred)), np.asarray(V("target"))
        n = p.size
        pv, yv = p.astype(np.float64), y.astype(np.float64)
        dv = pv - yv
        cell = lambda j: tuple(int(v) for v in np.unravel_index(j, p.shape))  # noqa: E731
        P = lambda c: X.El(pred, c, p[c])  # noqa: E731
        Y = lambda c: X.El("target", c, y[c])  # noqa: E731
        with np.errstate(all="ignore"):
            term, vals = self.term(P, Y, cell, pv, yv, dv, p.shape)
            mags = np.abs(vals) + (np.abs(pv) + np.abs(yv) + 1.0) * (1.0 + np.abs(vals))
        e = X.Many(term, vals, mags)
        if lo.reduction == "mean":
            e = e / Lit(n)
        if lo.scale != 1:
            e = K("s", lo.scale) * e
        how = f"{self.type}, {lo.reduction}" + (f" over {n:g}" if lo.reduction == "mean" else "") + f": {self.what}"
        return Value(how, e)

    def term(self, P, Y, cell, pv, yv, dv, shape):
        """(term(j): element j's loss as an expression, every element's value as an array)."""
        raise NotImplementedError


class MSE(ElementwiseLoss):
    """nn.MSELoss: (p − y)²."""
    type = "mse"
    torch_class = "MSELoss"
    what = "(prediction − target)² per element"

    def _formulas(self, pred, target_is_index, pred_ndim, kw):
        return (F("{L} = " + self._s + "Σ ({P} − {Y})²" + self._div, **kw),
                F("{G} = " + self._s + "2·({P} − {Y})" + self._div, **kw))

    def elem(self, p, y):
        d = p - y
        return d * d

    def grad(self, p, y, c):
        return 2.0 * (p - y) * c

    def factors(self, pred, idx, p, y, c, cs):
        pv, yv = float(p[idx]), float(y[idx])
        yt = f"({yv:.9g})" if yv < 0 else f"{yv:.9g}"
        return Factor("2·" + cs, "", 2.0 * c), Factor(f"({pred}{ix(idx)} − target{ix(idx)})", f"{pv:.9g} − {yt}", pv - yv)

    def term(self, P, Y, cell, pv, yv, dv, shape):
        return (lambda j: X.sq(P(cell(j)) - Y(cell(j)))), dv * dv


class L1(ElementwiseLoss):
    """nn.L1Loss: |p − y|, its derivative sign(p − y) (0 at 0, as torch)."""
    type = "l1"
    torch_class = "L1Loss"
    what = "|prediction − target| per element"

    def _formulas(self, pred, target_is_index, pred_ndim, kw):
        return (F("{L} = " + self._s + "Σ |{P} − {Y}|" + self._div, **kw),
                F("{G} = " + self._s + "sign({P} − {Y})" + self._div + "   (0 at 0)", **kw))

    def elem(self, p, y):
        return np.abs(p - y)

    def grad(self, p, y, c):
        return np.sign(p - y) * c

    def factor(self, dd, pv, yv, idx, p):
        return Factor(f"sign({dd})", "", float(np.sign(pv - yv)))

    def term(self, P, Y, cell, pv, yv, dv, shape):
        return (lambda j: X.vabs(P(cell(j)) - Y(cell(j)))), np.abs(dv)


class SmoothL1(ElementwiseLoss):
    """nn.SmoothL1Loss(beta): 0.5·d²/β where |d| < β, else |d| − 0.5·β (β = 0: L1)."""
    type = "smooth_l1"
    options = {**Loss.options, "beta": Option(1.0, "nonnegfloat", "where the quadratic part ends")}
    torch_class = "SmoothL1Loss"

    @property
    def what(self):
        if self.spec.beta == 0:
            return "|prediction − target| per element"
        return "0.5·d²/β where |d| < β, else |d| − 0.5·β, d = prediction − target"

    def _parts(self, pred, pred_ndim, target_is_index):
        return {**super()._parts(pred, pred_ndim, target_is_index), "beta": Const("β", self.spec.beta)}

    def _formulas(self, pred, target_is_index, pred_ndim, kw):
        s, div = self._s, self._div
        if self.spec.beta == 0:
            return (F("{L} = " + s + "Σ |{P} − {Y}|" + div + "   (β = 0: L1)", **kw),
                    F("{G} = " + s + "sign({P} − {Y})" + div + "   (β = 0: L1)", **kw))
        return (F("d = {P} − {Y};  {L} = " + s + "Σ (0.5·d²/{beta} where |d| < {beta}, else |d| − 0.5·{beta})" + div, **kw),
                F("d = {P} − {Y};  {G} = " + s + "(d/{beta} where |d| < {beta}, else sign(d))" + div, **kw))

    def elem(self, p, y):
        d = p - y
        ad = np.abs(d)
        beta = self.spec.beta
        return ad if beta == 0 else np.where(ad < beta, 0.5 * d * d / beta, ad - 0.5 * beta)

    def grad(self, p, y, c):
        d = p - y
        beta = self.spec.beta
        if beta == 0:
            return np.sign(d) * c
        return np.where(np.abs(d) < beta, d / beta, np.sign(d)) * c

    def factor(self, dd, pv, yv, idx, p):
        d, beta = pv - yv, self.spec.beta
        if beta == 0:
            return Factor(f"sign({dd})", "", float(np.sign(d)))
        v = d / beta if abs(d) < beta else float(np.sign(d))
        return Factor(f"d/β (|d| < β) else sign(d), d = {dd}",
                      f"d = {d:.9g}, " + ("|d| < β: d/β" if abs(d) < beta else "|d| ≥ β: sign(d)"), v)

    def term(self, P, Y, cell, pv, yv, dv, shape):
        beta = self.spec.beta
        d = lambda j: P(cell(j)) - Y(cell(j))  # noqa: E731
        if beta == 0:
            return (lambda j: X.vabs(d(j))), np.abs(dv)
        b = K("β", beta)
        term = lambda j: (Lit(0.5) * X.sq(d(j)) / b if abs(dv.flat[j]) < beta  # noqa: E731
                          else X.vabs(d(j)) - Lit(0.5) * b)
        return term, np.where(np.abs(dv) < beta, 0.5 * dv * dv / beta, np.abs(dv) - 0.5 * beta)

    def torch_kwargs(self):
        return [f"beta={exact(self.spec.beta)}"]


class Huber(ElementwiseLoss):
    """nn.HuberLoss(delta): 0.5·d² where |d| < δ, else δ·(|d| − 0.5·δ)."""
    type = "huber"
    options = {**Loss.options, "delta": Option(1.0, "posfloat", "where the quadratic part ends")}
    torch_class = "HuberLoss"
    what = "0.5·d² where |d| < δ, else δ·(|d| − 0.5·δ), d = prediction − target"

    def _parts(self, pred, pred_ndim, target_is_index):
        return {**super()._parts(pred, pred_ndim, target_is_index), "delta": Const("δ", self.spec.delta)}

    def _formulas(self, pred, target_is_index, pred_ndim, kw):
        s, div = self._s, self._div
        return (F("d = {P} − {Y};  {L} = " + s + "Σ (0.5·d² where |d| < {delta}, else {delta}·(|d| − 0.5·{delta}))" + div, **kw),
                F("d = {P} − {Y};  {G} = " + s + "(d where |d| < {delta}, else {delta}·sign(d))" + div, **kw))

    def elem(self, p, y):
        d = p - y
        ad = np.abs(d)
        delta = self.spec.delta
        return np.where(ad < delta, 0.5 * d * d, delta * (ad - 0.5 * delta))

    def grad(self, p, y, c):
        d = p - y
        delta = self.spec.delta
        return np.where(d < -delta, -delta, np.where(d > delta, delta, d)) * c

    def factor(self, dd, pv, yv, idx, p):
        d, delta = pv - yv, self.spec.delta
        v = d if abs(d) <= delta else delta * float(np.sign(d))
        return Factor(f"d (|d| < δ) else δ·sign(d), d = {dd}",
                      f"d = {d:.9g}, " + ("|d| ≤ δ: d" if abs(d) <= delta else "|d| > δ: δ·sign(d)"), v)

    def term(self, P, Y, cell, pv, yv, dv, shape):
        delta = self.spec.delta
        dl = K("δ", delta)
        d = lambda j: P(cell(j)) - Y(cell(j))  # noqa: E731
        term = lambda j: (Lit(0.5) * X.sq(d(j)) if abs(dv.flat[j]) < delta  # noqa: E731
                          else dl * (X.vabs(d(j)) - Lit(0.5) * dl))
        return term, np.where(np.abs(dv) < delta, 0.5 * dv * dv, delta * (np.abs(dv) - 0.5 * delta))

    def torch_kwargs(self):
        return [f"delta={exact(self.spec.delta)}"]


class BCE(ElementwiseLoss):
    """nn.BCELoss on probabilities, each log clamped at −100 and the gradient's denominator at
    float32's 1e-12 (as torch, even in float64)."""
    type = "bce"
    torch_class = "BCELoss"
    what = "−(y·log p + (1 − y)·log(1 − p)) per element, each log at least −100"

    def _formulas(self, pred, target_is_index, pred_ndim, kw):
        s, div = self._s, self._div
        return (F("{L} = " + s + "Σ −({Y}·max(log {P}, −100) + (1 − {Y})·max(log(1 − {P}), −100))" + div, **kw),
                F("{G} = " + s + "({P} − {Y}) / max((1 − {P})·{P}, {eps})" + div
                  + f"   (ε = {BCE_EPS!r}: 1e−12 as a float32, as torch has it, even in float64)",
                  eps=Const("ε", BCE_EPS), **kw))

    def elem(self, p, y):
        # as torch: (y − 1)·max(log1p(−p), −100) − y·max(log p, −100); log1p keeps log(1 − p)
        # accurate for a small p
        return (y - 1.0) * np.maximum(np.log1p(-p), -100.0) - y * np.maximum(np.log(p), -100.0)

    def grad(self, p, y, c):
        return (p - y) / np.maximum((1.0 - p) * p, BCE_EPS) * c

    def factor(self, dd, pv, yv, idx, p):
        v = (pv - yv) / max((1.0 - pv) * pv, BCE_EPS)
        return Factor(f"{dd} / max((1 − ŷ)·ŷ, ε)   (ε = {BCE_EPS!r}, torch's float32 1e−12)", "", v)

    def term(self, P, Y, cell, pv, yv, dv, shape):
        def term(j):
            c = cell(j)
            return -(Y(c) * X.vmax(X.log(P(c)), Lit(-100)) + (1 - Y(c)) * X.vmax(X.log(1 - P(c)), Lit(-100)))
        return term, -(yv * np.maximum(np.log(pv), -100.0) + (1 - yv) * np.maximum(np.log(1 - pv), -100.0))

    def target(self, y, pred, x_dtype, who):
        y = super().target(y, pred, x_dtype, who)
        _in_unit(y, self.type)
        return y


def _in_unit(y, what: str) -> None:
    yf = y.astype(np.float64)
    if yf.min() < 0 or yf.max() > 1:
        bad = yf.min() if yf.min() < 0 else yf.max()
        raise TargetError(f"{what} targets must lie in [0, 1], got {bad:g}")


class BCEWithLogits(ElementwiseLoss):
    """nn.BCEWithLogitsLoss(pos_weight) on logits, stably: (1 − y)·x − log σ(x), with
    log σ(x) = min(x, 0) − log1p(e^(−|x|)); pos_weight over the last dim weighs the positive term."""
    type = "bce_with_logits"
    options = {**Loss.options, "pos_weight": Option(None, "weights", "a weight per output along the last dim (or one)")}
    torch_class = "BCEWithLogitsLoss"

    @property
    def what(self):
        return ("(1 − y)·x − log σ(x) per element" + (", log σ weighted by 1 + (pos_weight − 1)·y"
                                                      if self.spec.pos_weight is not None else "")
                + ", log σ(x) = min(x, 0) − log(1 + e^(−|x|))")

    def _formulas(self, pred, target_is_index, pred_ndim, kw):
        lo, s, div = self.spec, self._s, self._div
        if lo.pos_weight is not None:
            kw["pw"] = Sym("pw")
            note = f"   (pw = pos_weight = [{', '.join(f'{w:g}' for w in lo.pos_weight)}] along the last dim)"
            return (F("{L} = " + s + "Σ ((1 − {Y})·{P} − (1 + ({pw} − 1)·{Y})·log σ({P}))" + div + note, **kw),
                    F("{G} = " + s + "((1 + ({pw} − 1)·{Y})·σ({P}) − {pw}·{Y})" + div, **kw))
        return (F("{L} = " + s + "Σ ((1 − {Y})·{P} + log(1 + e^(−{P})))" + div + "   (computed stably)", **kw),
                F("{G} = " + s + "(σ({P}) − {Y})" + div, **kw))

    def elem(self, p, y):
        # as torch: (1 − y)·x − log σ(x), with log σ(x) = min(x, 0) − log1p(e^(−|x|)), stable both ways;
        # with pos_weight: (1 − y)·x − (1 + (pos_weight − 1)·y)·log σ(x)
        logsig = np.minimum(p, 0) - np.log1p(np.exp(-np.abs(p)))
        if self.spec.pos_weight is not None:
            return (1.0 - y) * p - ((np.asarray(self.spec.pos_weight, dtype=p.dtype) - 1) * y + 1) * logsig
        return (1.0 - y) * p - logsig

    def grad(self, p, y, c):
        sig = 1.0 / (1.0 + np.exp(-p))
        if self.spec.pos_weight is not None:
            pw = np.asarray(self.spec.pos_weight, dtype=p.dtype)
            return (((pw - 1) * y + 1) * sig - pw * y) * c
        return (sig - y) * c

    def factors(self, pred, idx, p, y, c, cs):
        pv, yv, at = float(p[idx]), float(y[idx]), ix(idx)
        sg = 1.0 / (1.0 + np.exp(-pv))
        if self.spec.pos_weight is not None:
            pw = np.broadcast_to(np.asarray(self.spec.pos_weight, dtype=np.float64), p.shape[-1:])
            pj = float(pw[idx[-1]])
            v = (1 + (pj - 1) * yv) * sg - pj * yv
            return Factor(cs, "", c), Factor(f"(1 + (pos_weight − 1)·target{at})·σ({pred}{at}) − pos_weight·target{at}",
                                             f"pos_weight = {pj:g}", float(v))
        return Factor(cs, "", c), Factor(f"σ({pred}{at}) − target{at}", "", float(sg - yv))

    def term(self, P, Y, cell, pv, yv, dv, shape):
        pw = None if self.spec.pos_weight is None else np.broadcast_to(
            np.asarray(self.spec.pos_weight, dtype=np.float64), shape[-1:])

        def logsig(x):
            return X.vmin(x, Lit(0)) - X.log(1 + X.exp(-X.vabs(x)))

        def term(j):
            c = cell(j)
            ls = logsig(P(c))
            return (1 - Y(c)) * P(c) - (ls if pw is None else (1 + (Lit(pw[c[-1]]) - 1) * Y(c)) * ls)
        ls = np.minimum(pv, 0) - np.log(1 + np.exp(-np.abs(pv)))
        return term, (1 - yv) * pv - (ls if pw is None else (1 + (pw - 1) * yv) * ls)

    def target(self, y, pred, x_dtype, who):
        y = super().target(y, pred, x_dtype, who)
        _in_unit(y, self.type)
        return y

    def check(self, pred, who):
        pw = self.spec.pos_weight
        if pw is not None and len(pw) not in (1, pred[-1]):
            raise OptionError("pos_weight", f"{len(pw)} weights do not fit the last dim of {who}'s output {list(pred)}, "
                                            f"of size {pred[-1]}: give one weight per output there, or a single one "
                                            f"for all")

    def torch_kwargs(self):
        pw = self.spec.pos_weight
        return [] if pw is None else [f"pos_weight=torch.tensor([{', '.join(exact(w) for w in pw)}])"]
