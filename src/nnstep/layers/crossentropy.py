"""The losses over classes: ``cross_entropy`` (nn.CrossEntropyLoss on logits, with class indices
or class probabilities as targets, ``weight``, ``label_smoothing`` and ``class_dim``) and ``nll``
(nn.NLLLoss on log-probabilities). Their mean is over the batch and any positions, not the class
dimension; ``class_dim`` (torch's is 1) says where the classes are: with ``class_dim = -1`` the
logits (N, T, C) and targets (N, T) mean torch's ``cross_entropy(logits.movedim(-1, 1), targets)``.
"""
from __future__ import annotations

import numpy as np

from nnstep.layers import Const, Count, F, Factor, K, Lit, Option, OptionError, Ref, Rule, Term, Value, exact, expr as X, ix
from nnstep.layers.losses import Loss, TargetError, _reduce, count, shape_text


def log_softmax(x):
    """Over dim 1 (the class dim), max-shifted."""
    m = x.max(axis=1, keepdims=True)
    s = x - m
    return s - np.log(np.exp(s).sum(axis=1, keepdims=True))


def _class_view(w, p):
    """Class weights shaped to broadcast along dim 1 of p, as torch's weight.view(1, C, 1, ...)."""
    return np.asarray(w, dtype=p.dtype).reshape((1, -1) + (1,) * (p.ndim - 2))


class ClassLoss(Loss):
    """The family's base (no type of its own): classes along ``class_dim``, moved to dim 1."""
    torch_note = "log-probabilities"

    def class_first(self, p, y):
        cd = self.spec.class_dim % p.ndim
        if cd == 1:
            return p, y, None
        return np.moveaxis(p, cd, 1), (np.moveaxis(y, cd, 1) if y.shape == p.shape else y), cd

    def _class_dim(self, pred, what: str) -> int:
        cd = self.spec.class_dim
        if not (-len(pred) <= cd < len(pred)) or cd % len(pred) == 0:
            raise OptionError("class_dim", f"{cd} is not a class dimension of the {what} {shape_text(pred)} "
                                           f"(use 1 to {len(pred) - 1}, or -1; dim 0 is the batch)")
        return cd % len(pred)

    def _indices(self, y, C: int, who: str, whole: str) -> np.ndarray:
        yf = y.astype(np.float64)
        if not np.all(yf == np.round(yf)):
            if whole:
                raise TargetError(whole.format(bad=yf.reshape(-1)[np.flatnonzero(yf.reshape(-1) != np.round(yf.reshape(-1)))[0]]))
            raise TargetError("cross_entropy class indices must be whole numbers")
        if yf.min() < 0 or yf.max() >= C:
            bad = yf.min() if yf.min() < 0 else yf.max()
            raise TargetError(f"class index {bad:g} is out of range: {who} gives {C} classes (0 to {C - 1})")
        return y.astype(np.int64)

    def torch_call(self, pred_ndim: int, y_is_probs: bool) -> tuple[str, str, str | None]:
        cd = self.spec.class_dim % pred_ndim
        if cd == 1:
            return "pred", "y", None
        return (f"pred.movedim({cd}, 1)", f"y.movedim({cd}, 1)" if y_is_probs else "y",
                f"the classes are along dim {self.spec.class_dim} of the prediction; torch's {self.torch_class} wants "
                f"them at dim 1")

    def _value(self, pred, V, term_of_cell, what, n=None) -> Value:
        """s · Σ over the cells (samples, positions) of a term / n, for explain."""
        lo = self.spec
        p0, y0 = np.asarray(V(pred)), np.asarray(V("target"))
        p, y, back = self.class_first(p0, y0)

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
        cells = [(m,) + pos for m in range(p.shape[0]) for pos in np.ndindex(*p.shape[2:])]
        at = lambda cell, c: cell[:1] + (c,) + cell[1:]  # noqa: E731
        e, n = term_of_cell(P, Y, p, y, cells, at)
        if lo.reduction == "mean":
            e = e / Lit(n)
        if lo.scale != 1:
            e = K("s", lo.scale) * e
        how = f"{self.type}, {lo.reduction}" + (f" over {n:g}" if lo.reduction == "mean" else "") + f": {what}"
        return Value(how, e)


class CrossEntropy(ClassLoss):
    """nn.CrossEntropyLoss on logits (log-sum-exp shifted by the max), targets class indices or
    class probabilities; ``weight`` (class weights: the mean divides by the targets' summed
    weights, as torch) and ``label_smoothing`` as ATen computes them."""
    type = "cross_entropy"
    options = {**Loss.options, "class_dim": Option(1, "int", "the classes' dimension of the logits"),
               "label_smoothing": Option(0.0, "prob", "ε: the target mixed with the uniform ε/C"),
               "weight": Option(None, "weights", "a weight per class")}
    torch_class = "CrossEntropyLoss"

    def shared(self, p):
        return log_softmax(p)

    def _parts(self, pred, pred_ndim, target_is_index):
        kw = super()._parts(pred, pred_ndim, target_is_index)
        cd = self.spec.class_dim % pred_ndim
        kw["n"] = Count("N", "target") if target_is_index else Count("N", pred, tuple(a for a in range(pred_ndim) if a != cd))
        if cd != 1:
            kw["P"] = Ref(pred, "prediction", f" (classes along dim {self.spec.class_dim})")
        return kw

    def _formulas(self, pred, target_is_index, pred_ndim, kw):
        lo, s, div = self.spec, self._s, self._div
        if lo.weight is not None or lo.label_smoothing:
            return self._weighted_formulas(kw, s, target_is_index, div, lo.class_dim % pred_ndim)
        if target_is_index:
            return (F("{L} = " + s + "Σₙ −log softmax({P})[{Y}]" + div + "   (log-sum-exp shifted by the max)", **kw),
                    F("{G} = " + s + "(softmax({P}) − onehot({Y}))" + div, **kw))
        return (F("{L} = " + s + "Σₙ −Σ_c {Y} ⊙ log softmax({P})" + div + "   (class probabilities)", **kw),
                F("{G} = " + s + "(softmax({P}) · Σ_c {Y} − {Y})" + div, **kw))

    def _weighted_formulas(self, kw, s, target_is_index, div, cd):
        """With class weights w and/or label smoothing ε, as ATen computes it (``cd``: the class
        dim of the logits)."""
        lo = self.spec
        eps = lo.label_smoothing
        kw.update(eps=Const("ε", eps), C=Count("C", kw["P"].name, (cd,)))
        wtxt = f"w = [{', '.join(f'{w:g}' for w in lo.weight)}]" if lo.weight is not None else "w = 1"
        if not target_is_index:
            t = "t = {Y}·(1 − {eps}) + {eps}/{C};  " if eps else "t = {Y};  "
            return (F(t + "{L} = " + s + "Σₙ −Σ_c w_c·t_c·log softmax({P})_c" + div + f"   ({wtxt}, class probabilities)", **kw),
                    F(t + "{G} = " + s + "(softmax({P})·Σ_c w_c·t_c − w·t)" + div, **kw))
        D = " / Σₙ w[{Y}ₙ]" if lo.reduction == "mean" else ""
        nll = "w[{Y}]·(−log softmax({P})[{Y}])"
        if eps:
            return (F("{L} = " + s + "((1 − {eps})·Σₙ " + nll + " + {eps}/{C}·Σₙ Σ_c −w_c·log softmax({P})_c)" + D
                      + f"   ({wtxt})", **kw),
                    F("{G} = " + s + "((1 − {eps})·w[{Y}]·(softmax({P}) − onehot({Y})) + {eps}/{C}·(Σ_c w_c·softmax({P}) − w))"
                      + D, **kw))
        return (F("{L} = " + s + "Σₙ " + nll + D + f"   ({wtxt})", **kw),
                F("{G} = " + s + "w[{Y}]·(softmax({P}) − onehot({Y}))" + D, **kw))

    def _weighted(self, p, y, lp):
        """(loss, gradient) before the scale, with class weights and/or label smoothing, as ATen's
        cross_entropy_loss_label_smoothing (class indices: (1 − ε)·nll + ε/C·Σ_c −w_c·log p_c, the
        mean dividing both by Σₙ w[yₙ]) and cross_entropy_loss_prob_target (probabilities: the
        target smoothed to t·(1 − ε) + ε/C, the mean dividing by the number of positions, weights or
        not)."""
        lo = self.spec
        reduction, w, eps = lo.reduction, lo.weight, lo.label_smoothing
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

    def forward(self, p, y, lp=None):
        lo = self.spec
        dt = p.dtype
        if lp is None:
            lp = log_softmax(p)
        if lo.weight is not None or lo.label_smoothing:
            return np.asarray(self._weighted(p, y, lp)[0] * lo.scale, dtype=dt)
        if y.shape == p.shape:                       # class probabilities
            elem = -(y * lp).sum(axis=1)
        elif p.ndim == 2:
            elem = -lp[np.arange(p.shape[0]), y.astype(np.int64, copy=False)]
        else:
            idx = np.expand_dims(y.astype(np.int64, copy=False), 1)
            elem = -np.take_along_axis(lp, idx, axis=1)[:, 0]
        return np.asarray(_reduce(elem, lo.reduction) * lo.scale, dtype=dt)

    def backward(self, p, y, lp=None):
        lo = self.spec
        if lo.weight is not None or lo.label_smoothing:
            return self._weighted(p, y, log_softmax(p) if lp is None else lp)[1] * lo.scale
        n = p.size // p.shape[1]
        g = np.exp(log_softmax(p) if lp is None else lp)     # softmax, a fresh array
        if y.shape == p.shape:
            g = g * y.sum(axis=1, keepdims=True) - y
        elif p.ndim == 2:
            g[np.arange(p.shape[0]), y.astype(np.int64, copy=False)] -= 1.0
        else:
            idx = np.expand_dims(y.astype(np.int64, copy=False), 1)
            np.put_along_axis(g, idx, np.take_along_axis(g, idx, axis=1) - 1.0, axis=1)
        g *= lo.scale / count(n, lo.reduction)
        return g

    def grad_rule(self, pred, p, y, idx):
        lo = self.spec
        idx = tuple(int(i) for i in idx)
        at, s = ix(idx), lo.scale
        sm = float(np.exp(log_softmax(p)[idx]))
        cls = idx[1]
        rest = (idx[0],) + idx[2:]
        if lo.weight is not None or lo.label_smoothing:
            C = p.shape[1]
            eps = lo.label_smoothing
            w = np.ones(C) if lo.weight is None else np.asarray(lo.weight, dtype=np.float64)
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
        c = s / count(p.size // p.shape[1], lo.reduction)
        if y.shape == p.shape:
            tot = float(y[(idx[0], slice(None)) + idx[2:]].sum())
            f = Factor(f"softmax({pred}){at}·Σ_c target − target{at}", "", sm * tot - float(y[idx]))
        else:
            hit = 1.0 if int(y[rest]) == cls else 0.0
            f = Factor(f"softmax({pred}){at} − [target{ix(rest)} = {cls}]", f"{sm:.9g} − {hit:g}", sm - hit)
        return Rule("the loss's derivative", [Term((Factor("s/N" if lo.reduction == "mean" else "s", "", c), f))])

    def value_rule(self, pred, V, idx=()):
        lo = self.spec
        eps = lo.label_smoothing
        what = []

        def terms(P, Y, p, y, cells, at):
            C = p.shape[1]
            w = np.ones(C) if lo.weight is None else np.asarray(lo.weight, dtype=np.float64)
            wk = (lambda c: Lit(w[c])) if lo.weight is not None else None
            lse = {cell: X.Lse([P(at(cell, c)) for c in range(C)]) for cell in cells}
            if y.shape == p.shape:           # class probabilities (smoothed: t = y·(1 − ε) + ε/C)
                def tgt(cell, c):
                    yc = Y(at(cell, c))
                    return yc * (1 - K("ε", eps)) + K("ε", eps) / Lit(C) if eps else yc
                e = X.total([X.total([(wk(c) * tgt(cell, c) if wk else tgt(cell, c)) * (lse[cell] - P(at(cell, c)))
                                      for c in range(C)], "class") for cell in cells])
                what.append("−Σ_c target·log softmax per sample" + (", weighted" if lo.weight is not None else ""))
                return e, len(cells)

            def nll(cell):
                c = int(y[cell])
                d = lse[cell] - P(at(cell, c))
                return wk(c) * d if wk else d
            e = X.total([nll(cell) for cell in cells])
            n = len(cells)
            if eps:
                smooth = X.total([X.total([(wk(c) * (lse[cell] - P(at(cell, c))) if wk else lse[cell] - P(at(cell, c)))
                                           for c in range(C)], "class") for cell in cells])
                e = (1 - K("ε", eps)) * e + K("ε", eps) / Lit(C) * smooth
            if lo.weight is not None:
                n = float(sum(w[int(y[cell])] for cell in cells))
            what.append("−log softmax of each target class" + (", weighted" if lo.weight is not None else ""))
            return e, n
        v = self._value(pred, V, terms, "")
        v.how += what[0]
        return v

    def target(self, y, pred, x_dtype, who):
        if len(pred) < 2:
            raise OptionError("type", f"cross_entropy needs logits [N, C] but {who} gives {shape_text(pred)}")
        cd = self._class_dim(pred, "logits")
        C = pred[cd]
        class_shape = pred[:cd] + pred[cd + 1:]
        if y.shape == class_shape:
            return self._indices(y, C, who, "")
        if y.shape == pred:
            if y.min() < 0 or y.max() > 1:
                raise TargetError("cross_entropy class probabilities must lie in [0, 1]")
            return y.astype(x_dtype)
        raise TargetError(f"cross_entropy needs class indices of shape {shape_text(class_shape)} or "
                          f"probabilities of shape {shape_text(pred)}, got {shape_text(y.shape)}")

    def check(self, pred, who):
        w = self.spec.weight
        if w is not None:
            C = pred[self.spec.class_dim % len(pred)]
            if len(w) != C:
                raise OptionError("weight", f"expected {C} class weights, one per class ({who} gives {C} classes), "
                                            f"got {len(w)}")

    def torch_kwargs(self):
        lo, kw = self.spec, []
        if lo.weight is not None:
            kw.append(f"weight=torch.tensor([{', '.join(exact(w) for w in lo.weight)}])")
        if lo.label_smoothing:
            kw.append(f"label_smoothing={exact(lo.label_smoothing)}")
        return kw


class NLL(ClassLoss):
    """nn.NLLLoss: the prediction holds log-probabilities, the target class indices; the loss is
    minus the log-probability of each target class."""
    type = "nll"
    options = {**Loss.options, "class_dim": Option(1, "int", "the classes' dimension of the log-probabilities")}
    torch_class = "NLLLoss"

    def _parts(self, pred, pred_ndim, target_is_index):
        kw = super()._parts(pred, pred_ndim, target_is_index)
        kw["n"] = Count("N", "target")             # the number of targets: the batch and any positions
        if self.spec.class_dim % pred_ndim != 1:
            kw["P"] = Ref(pred, "prediction", f" (classes along dim {self.spec.class_dim})")
        return kw

    def _formulas(self, pred, target_is_index, pred_ndim, kw):
        s = self._s
        div = " / {n}" if self.spec.reduction == "mean" else ""
        return (F("{L} = " + s + "Σₙ −{P}[n, yₙ]" + div + "   (y = {Y}: minus the log-probability of each target class)",
                  **kw),
                F("{G} = " + s + "−onehot({Y})" + div + "   (−1 at each target class, 0 elsewhere)", **kw))

    def forward(self, p, y, lp=None):
        lo = self.spec
        idx = np.expand_dims(y.astype(np.int64, copy=False), 1)
        picked = np.take_along_axis(p, idx, axis=1)[:, 0]        # p[n, y[n, ...], ...]
        return np.asarray(_reduce(-picked, lo.reduction) * lo.scale, dtype=p.dtype)

    def backward(self, p, y, lp=None):               # −1 at each target class (scaled), 0 elsewhere
        lo = self.spec
        g = np.zeros_like(p)
        idx = np.expand_dims(y.astype(np.int64, copy=False), 1)
        np.put_along_axis(g, idx, -lo.scale / count(p.size // p.shape[1], lo.reduction), axis=1)
        return g

    def grad_rule(self, pred, p, y, idx):
        lo = self.spec
        idx = tuple(int(i) for i in idx)
        c = lo.scale / count(p.size // p.shape[1], lo.reduction)
        rest = (idx[0],) + idx[2:]
        hit = 1.0 if int(y[rest]) == idx[1] else 0.0
        return Rule("the loss's derivative", [Term((Factor("s/N" if lo.reduction == "mean" else "s", "", c),
                                                    Factor(f"−[target{ix(rest)} = {idx[1]}]", "", -hit)))])

    def value_rule(self, pred, V, idx=()):
        def terms(P, Y, p, y, cells, at):
            return X.total([-P(at(cell, int(y[cell]))) for cell in cells]), len(cells)
        return self._value(pred, V, terms, "−log-probability of each target class")

    def target(self, y, pred, x_dtype, who):
        if len(pred) < 2:
            raise OptionError("type", f"nll needs log-probabilities [N, C] but {who} gives {shape_text(pred)}")
        cd = self._class_dim(pred, "log-probabilities")
        C, class_shape = pred[cd], pred[:cd] + pred[cd + 1:]
        if y.shape != class_shape:
            raise TargetError(f"nll needs class indices of shape {shape_text(class_shape)} (one per sample"
                              f"{'' if len(class_shape) == 1 else ' and position'}), got {shape_text(y.shape)}")
        return self._indices(y, C, who, "nll targets are class indices, whole numbers, but data.y holds {bad:g}")
