"""The ``nll`` loss's formulas."""
from __future__ import annotations

from ..layers.formula import Count, F, Formula, Ref


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
