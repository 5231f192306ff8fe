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
