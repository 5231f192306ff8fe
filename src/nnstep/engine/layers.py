"""Layers: forward and backward, the math of every layer type of the catalogue.

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

from ..model import catalog
from ..layers import expr as X
from ..layers.expr import Def, Lit, Value, el, total
from ..layers.terms import Factor, Rule, Term, ix
from ..layers.dense import may_overflow

class Layer:
    """The math of one layer type. Its declaration (options, parameters, state, shape rule,
    formulas) is the catalogue's class of the same ``type`` (:mod:`nnstep.model.catalog`), linked
    when the subclass is defined."""
    type: str = ""
    decl: type[catalog.LayerType] = catalog.LayerType
    options: dict[str, tuple[Any, str]] = {}
    param_names: tuple[str, ...] = ()
    state_names: tuple[str, ...] = ()
    extra_names: tuple[str, ...] = ()
    elementwise = False

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if cls.type:
            d = cls.decl = catalog.LAYERS[cls.type]
            cls.options, cls.param_names, cls.state_names = d.options, d.params, d.states
            cls.extra_names, cls.elementwise = d.extras, d.elementwise

    def __init__(self, name: str, opts: dict, in_shape: tuple[int, ...], in_shapes=None):
        self.name = name
        self.opts = opts
        self.in_shape = tuple(in_shape)
        self.in_shapes = [tuple(s) for s in in_shapes] if in_shapes else [self.in_shape]
        out, pshapes = self.decl.infer(opts, self.in_shapes)
        self.out_shape, self.param_shapes = tuple(out), pshapes

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

    # --- one element at a time, for explain (the same derivative, written per element) ------------
    def grad_rule(self, wrt: str, idx: tuple, V) -> Rule:
        """The chain rule for one element of a gradient this layer's backward writes: ``wrt`` is
        ``"grad_in"`` (``"grad_in.<k>"`` for a merge) or a parameter's name; ``V(name)`` gives the
        tensors as the backward op read them. Terms multiply elements of ``<layer>.grad_out``."""
        raise NotImplementedError(f"no element rule for {self.type}")

    def _sym(self, what: str, idx) -> str:
        return f"{what}{ix(idx)}"

    @property
    def _gname(self) -> str:
        return self.spec.t("grad_out")

    def _dout(self, r, wrt_sym: str) -> str:
        """The symbol ∂out[r]/∂(something)."""
        return f"∂{self.spec.t('out')}{ix(r)}/∂{wrt_sym}"


LAYERS: dict[str, type[Layer]] = {}

from .layers_graph import GRAPH_LAYERS  # noqa: E402  (they build on Layer above)

LAYERS.update(GRAPH_LAYERS)

from .layers_rnn import RNN_LAYERS  # noqa: E402

LAYERS.update(RNN_LAYERS)

