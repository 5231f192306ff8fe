"""Layer types, and the API to write one: a layer type is one class (docs/layers.md).

nnstep's own layers live here, one module per family (:mod:`.dense`, :mod:`.activations`,
:mod:`.conv`, :mod:`.pooling`, :mod:`.norm`, :mod:`.dropout`, :mod:`.merges`, :mod:`.shapes`,
:mod:`.attention`, :mod:`.recurrent`), the losses and optimizers beside them (:mod:`.losses`,
:mod:`.optimizers`, :mod:`.schedules`). Each is written with exactly the names below, which a
user's own layer file imports too::

    from nnstep.layers import Layer, Option, F, Value, el, Rule, Term, Factor

* :class:`Layer`, :class:`Option`, :class:`Step`, :class:`ShapeError`, :class:`OptionError`: the
  class and what it declares with (:mod:`.base`);
* the formula vocabulary: :func:`F`, :class:`Ref`, :class:`Const`, :class:`Count`, :class:`Sym`
  (:mod:`.formula`);
* element rules for ``explain``: ``expr`` (:class:`Value`, :func:`el`, :class:`K`, :class:`Lit`,
  :class:`Def`, :func:`total`, and ``expr.exp``, ``expr.sqrt``, ...) for a value, and
  :class:`Rule`, :class:`Term`, :class:`Factor` for a gradient (:mod:`.terms`);
* the registry: :func:`layer_types`, :func:`layer_type`, :func:`load_layers` (:mod:`.registry`,
  :mod:`.plugins`).

This package imports nothing of nnstep's but :mod:`nnstep.errors`: the model of a step, the
scenario loader, the engine and the debugger all build on it.
"""
from . import expr
from .base import (REQUIRED, Layer, Option, OptionError, ShapeError, Step, check_dim, exact, fmt_shape, ints_text,
                   per_dim, shown)
from .expr import Def, K, Lit, Value, el, total
from .formula import F, Clause, Const, Count, Formula, Ref, StepNum, StepPow, Sym
from .registry import is_builtin, layer_type, layer_types
from .terms import Factor, Rule, Term, ix


def load_layers(paths):
    """Import each file named (once per process) and register the layer types it defines: their
    classes. A ScenarioError, located at the file, for anything wrong (docs/layers.md)."""
    from .plugins import load_layers as load
    return load(paths)


__all__ = ["REQUIRED", "Clause", "Const", "Count", "Def", "F", "Factor", "Formula", "K", "Layer", "Lit", "Option",
           "OptionError", "Ref", "Rule", "ShapeError", "Step", "StepNum", "StepPow", "Sym", "Term", "Value",
           "check_dim", "el", "exact", "expr", "fmt_shape", "ints_text", "ix", "is_builtin", "layer_type", "layer_types", "load_layers",
           "per_dim", "shown", "total"]
