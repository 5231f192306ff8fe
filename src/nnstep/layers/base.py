"""The one class a layer type is: :class:`Layer`, and what it declares with (:class:`Option`,
:class:`Step`, :class:`ShapeError`, :class:`OptionError`). docs/layers.md is the guide; this is the
reference. nnstep's own layers (the family modules beside this one) are written with exactly this,
as a user's own layer is (``--layers mylayers.py``).

A layer type has two sides, both in its one class:

* **the declaration**, class attributes and classmethods read before any number exists: by the
  scenario loader (options, parameters, shapes, torch's init), by the plan (formulas, the tensors
  its ops read and write) and by ``export --torch`` (its torch equivalent). The loader never runs
  a layer's math.
* **the math**, on an instance made for one layer of one scenario (``Layer(spec)``, ``spec`` the
  loaded :class:`nnstep.model.scenario.LayerSpec`): forward, backward, the local derivative, and
  the element rules ``explain`` checks against them.

Shapes are per sample (no batch dimension) wherever a shape is declared; the arrays the math gets
have the batch first. Layouts are torch's.
"""
from __future__ import annotations

import math
from typing import Any

from ..errors import cut
from .formula import F, Formula
from .records import record
from .terms import ix


class _Required:
    def __repr__(self):
        return "REQUIRED"


REQUIRED = _Required()
"""An option's default when the scenario must give the option."""

KINDS = ("posint", "nonnegint", "int", "posfloat", "nonnegfloat", "float", "prob", "prob_open", "bool",
         "posints", "nonnegints", "dimpair", "shape", "betas", "weights", "table")


class Option:
    """One option of a layer, loss, optimizer or schedule: its default and the values it takes.
    The loader checks a scenario's value against ``kind`` and fills in ``default`` where the
    scenario gives none (``REQUIRED``: it must). The kinds:

    ``posint`` > 0, ``nonnegint`` ≥ 0, ``int``; ``posfloat`` > 0, ``nonnegfloat`` ≥ 0, ``float``;
    ``prob`` in [0, 1], ``prob_open`` in [0, 1); ``bool``; ``posints`` / ``nonnegints`` an integer
    or a list of 1 or 2 (a kernel size); ``choice:a|b`` one of the words; ``dimpair`` two dims;
    ``shape`` a per-sample shape (one entry may be -1); ``betas`` two numbers in [0, 1);
    ``weights`` a list of non-negative numbers; ``table`` a TOML table (a schedule).
    """
    __slots__ = ("default", "kind", "doc")

    def __init__(self, default: Any = REQUIRED, kind: str = "float", doc: str = ""):
        if kind not in KINDS and not kind.startswith("choice:"):
            raise ValueError(f"unknown option kind {kind!r} (one of: {', '.join(KINDS)}, choice:a|b)")
        self.default, self.kind, self.doc = default, kind, doc

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def __repr__(self):
        return f"Option({self.default!r}, {self.kind!r})"

    def __eq__(self, other):
        return isinstance(other, Option) and (self.default, self.kind) == (other.default, other.kind)

    __hash__ = None


class ShapeError(ValueError):
    """A layer cannot take the shape it is given (raised by ``shapes``): the loader makes it a
    located error (``layers[2]: conv1 (conv1d) cannot take the output of ...: <your message>``)."""


class OptionError(ValueError):
    """Options that contradict each other, or a size over a limit: ``key`` is the option's key in
    its table (None: the table itself); the loader makes it a located error."""

    def __init__(self, key: str | None, message: str):
        super().__init__(message)
        self.key, self.message = key, message


def fmt_shape(s) -> str:
    """A shape as text, ``[2, 3]``, cut as a message cuts any value (a shape of the user's can hold
    19-digit sizes: docs/errors.md promises 60 characters)."""
    return cut("[" + ", ".join(str(d) for d in s) + "]")


def exact(v) -> str:
    """A number as exact Python source, for a torch equivalent: Python's repr of a float64 is the
    shortest text that reads back as the same float; NaN and infinities as float("...")."""
    if isinstance(v, bool):
        return repr(v)
    if isinstance(v, int) or (hasattr(v, "dtype") and getattr(v, "dtype").kind in "iu"):
        return repr(int(v))
    v = float(v)
    if math.isnan(v):
        return 'float("nan")'
    if math.isinf(v):
        return 'float("inf")' if v > 0 else '-float("inf")'
    return repr(v)


def shown(v) -> str:
    """A value in a message: its repr, cut to 60 characters (docs/errors.md)."""
    return cut(repr(v))


def ints_text(v) -> str:
    """A size option as torch takes it and a formula shows it: ``3`` when every entry is 3, else
    ``(3, 2)``."""
    v = tuple(v) if isinstance(v, (list, tuple)) else (v,)
    return str(v[0]) if len(set(v)) == 1 else "(" + ", ".join(map(str, v)) + ")"


def check_dim(dim: int, s: tuple[int, ...], what: str = "dim"):
    """``dim`` counts the batch as dim 0 (as torch on the batched tensor); dim 0 itself is refused.
    ShapeError unless it names a dimension of a tensor of per-sample shape ``s``."""
    nd = len(s) + 1
    if not (-nd <= dim < nd) or dim % nd == 0:
        raise ShapeError(f"{what} = {dim} is not a non-batch dimension of a tensor of shape "
                         f"{fmt_shape(('N',) + tuple(s))} (use 1 to {nd - 1}, or -1 to -{nd - 1})")


def per_dim(v, nd: int) -> tuple[int, ...]:
    """An option that is one integer or a list (a kernel size): one entry per spatial dimension."""
    return tuple(v) if isinstance(v, (list, tuple)) else (v,) * nd


@record(frozen=True)
class Step:
    """One operation of a layer that takes several (attention's sub-steps, an RNN's time steps):
    ``forward <layer> <suffix>`` / ``backward <layer> <suffix>``. ``ins``/``outs`` are
    (tensor, role) pairs; the engine binds ``kind`` to the layer's method of that name, called as
    ``method(env, k)``, or ``method(env, k, arg)`` when the step carries an ``arg`` (an RNN's time
    index: one method for every time step)."""
    suffix: str
    kind: str
    ins: tuple[tuple[str, str], ...]
    outs: tuple[tuple[str, str], ...]
    formula: Formula
    labels: tuple[tuple[str, str], ...] = ()     # (tensor, label) where the role's default label is vague
    arg: Any = None                              # passed to the method (None: not passed)


class Layer:
    """A layer type. Subclass it, set ``type`` and write the pieces below; docs/layers.md walks
    through one. Everything has a default except ``type``, ``forward`` and ``backward``.

    Declaration (class attributes and classmethods):

    * ``type``: the name a scenario gives (``type = "swish"``).
    * ``options``: ``{key: Option(default, kind)}``, the keys of its ``[[layers]]`` table beside
      the ones every layer takes (type, name, input(s), in, init, frozen, and one per parameter).
    * ``params``: its parameters' names in order; ``symbols`` their symbols on screen (``W``);
      ``init`` a parameter's torch initialization by name (one of ``init.KINDS``: ``"bias"``,
      ``"ones"``, ``"zeros"``, ``"normal"``, ``"recurrent"``, or a scenario's ``init`` choice);
      a parameter not in ``init`` is drawn with the layer's ``init`` key (kaiming_uniform by
      default) from ``fans``; ``bias_params``: what ``bias = false`` leaves out.
    * ``shapes(opts, in_shapes)``: the shape rule.
    * ``states``: persistent tensors that are no parameter (batchnorm's running statistics),
      ``extras``: tensors its forward writes besides ``out`` (``<layer>.<extra>``).
    * ``elementwise``: its backward also writes ``<layer>.local`` = d out / d in, element by element.
    * ``merge`` / ``arity``: it reads ``inputs = [...]``, several tensors (``forward`` then gets a
      list and ``backward`` returns one gradient per input).
    * ``forward_formula(L, n)``, ``backward_formula(L, n)``: its formulas, as structured clauses.
    * ``torch_module(L)``, ``torch_forward(L, ins, me, out)``, ``torch_param(L, p, me)``,
      ``torch_source``: its torch equivalent, for ``export --torch``.

    Math (methods of an instance, one per layer of a scenario): ``forward``, ``backward``,
    ``local`` (element-wise layers), ``initial_state``; the element rules for ``explain``:
    ``value_rule`` and ``grad_rule``.
    """
    # --- declaration ----------------------------------------------------------------------------
    type: str = ""
    options: dict[str, Option] = {}
    params: tuple[str, ...] = ()
    symbols: dict[str, str] = {}
    init: dict[str, str] = {"bias": "bias"}
    bias_params: tuple[str, ...] = ("bias",)
    states: tuple[str, ...] = ()
    extras: tuple[str, ...] = ()
    elementwise: bool = False
    merge: bool = False
    arity: tuple[int, int | None] = (1, 1)
    grads_input: bool = True            # its backward sends a gradient to its input (not an embedding's indices)
    int_input: bool = False             # reads integer data (token indices) from the batch
    in_dim: int = 0                     # the dimension a `[[layers]] in = ...` check reads: channels first
    image: bool = False                 # its output is (C, spatial...): a linear after it wants a flatten
    layouts: dict[str, str] = {}        # a parameter's layout in words, for an error about its shape
    in_param: tuple[str, str] | None = None   # (parameter, option word): its dim 1 is the input's size

    @classmethod
    def shapes(cls, opts: dict, in_shapes: list[tuple[int, ...]]) -> tuple[tuple[int, ...], dict[str, tuple[int, ...]]]:
        """(out_shape, {param: shape}) for these per-sample input shapes (one per input), with the
        options filled in; ShapeError, with a message a user can act on, where they don't fit.
        The default: the input's shape, and no parameters."""
        return tuple(in_shapes[0]), {}

    @classmethod
    def fans(cls, opts: dict, in_shape: tuple[int, ...]) -> tuple[int, int]:
        """(fan_in, fan_out) for torch's default initialization of the parameters that ``init``
        does not name (and for ``"bias"``)."""
        return 1, 1

    @classmethod
    def intermediates(cls, opts: dict, in_shapes, out_shape) -> list[tuple[str, tuple[int, ...], int]]:
        """The tensors besides its output that the layer's forward keeps, or that its forward or
        backward makes larger than its inputs, output and parameters: (name, per-sample shape, how
        many of them the forward keeps; 0 for one the backward makes and drops). The loader holds
        each to the limits of a layer's output before anything is allocated. A name that is an
        identifier is the tensor's, ``<layer>.<name>``; any other describes it."""
        return []

    @classmethod
    def masked_tensors(cls, L) -> dict:
        """{tensor: where a mask hides its cells}, for the tensors of the layer laid out (…, R, C)
        whose cells a mask of the layer hides, each with its (R, C) boolean array, True where hidden
        (a screen marks those cells). None here."""
        return {}

    @classmethod
    def check_size(cls, name: str, opts: dict, in_shape, out_shape, batch: int, smallest: int, limits) -> None:
        """Refuse, before anything is allocated, what this type cannot run on: working arrays over a
        limit (``limits``: the loader's, ``limits.MAX_ELEMENTS``, ...), or a batch it cannot use
        (``batch``: the batch size, ``smallest``: the last, smallest batch). Raise OptionError."""

    @classmethod
    def check_tokens(cls, name: str, opts: dict, low: float, high: float) -> None:
        """An ``int_input`` layer reading the batch: the least and greatest token index the data
        holds (whole numbers), against what it takes. Raise OptionError."""

    @classmethod
    def layout(cls, param: str, opts: dict) -> str:
        """A parameter's layout in words, for an error about its shape (``" (out, in)"``)."""
        text = cls.layouts.get(param)
        return f" {text}" if text else ""

    # --- formulas: the plan passes ``L`` (the LayerSpec) and ``n`` (its names, model.plan.Names) --
    @classmethod
    def forward_formula(cls, L, n) -> Formula:
        """``forward <layer>``'s formula. ``n.out``, ``n.x`` (``n.xs`` for a merge), ``n.p(param)``
        and ``n.e(extra)`` are the tensors as :class:`~nnstep.layers.formula.Ref` s."""
        return F("{out} = " + cls.type + "({x})", out=n.out, x=n.x)

    @classmethod
    def backward_formula(cls, L, n) -> Formula:
        """``backward <layer>``'s formula: ``n.gin`` (``n.gins``), ``n.g`` the upstream gradient,
        ``n.pg(param)`` a parameter's gradient, ``n.local``."""
        return F("{gin} = {g} · ∂" + cls.type + "/∂x", gin=n.gin, g=n.g)

    @classmethod
    def forward_steps(cls, L, n) -> list[Step] | None:
        """Several forward operations instead of one (None: the one ``forward <layer>``)."""
        return None

    @classmethod
    def backward_steps(cls, L, n) -> list[Step] | None:
        """Several backward operations, in the order they run (None: the one ``backward <layer>``)."""
        return None

    # --- the torch equivalent, for export --torch ------------------------------------------------
    torch_random_extra: str | None = None
    """An extra tensor the forward draws at random (dropout's ``mask``): ``export --torch`` writes
    every step's as data, since torch would draw other numbers."""

    torch_source: str = ""
    """Python source the exported script needs for this type (a module class of your own), written
    once before the network; it may use ``torch``, ``nn`` and ``math``."""

    @classmethod
    def torch_module(cls, L) -> tuple[str | None, str] | None:
        """(constructor source, comment) of the ``nn.Module`` this layer is (None as the constructor:
        no module, ``torch_forward`` says it all), or None: no torch equivalent, and ``export
        --torch`` refuses the scenario."""
        return None

    @classmethod
    def torch_forward(cls, L, ins: list[str], me: str, out: str) -> list[str]:
        """The statements of ``forward()`` computing ``out`` from the variables ``ins``, ``me`` the
        module's attribute (``self.linear1``)."""
        return [f"{out} = {me}({ins[0]})"]

    @classmethod
    def torch_param(cls, L, param: str, me: str) -> str:
        """The torch tensor a parameter is, ``me`` the module (``net.linear1``)."""
        return f"{me}.{param}"

    # --- what it is in other frameworks, for `nnstep import` (the mapping: nnstep/importer/) -----
    torch_modules: tuple[str, ...] = ()
    """The ``torch.nn`` module classes this type is (``("Linear",)``): ``nnstep import`` maps a
    traced model's leaf module of one of these classes to a layer of this type."""

    torch_functions: tuple[str, ...] = ()
    """The torch functions, tensor methods and Python operators this type is, as a user writes them
    (``"F.relu"``, ``"torch.relu"``, ``"Tensor.relu"``, ``"+"``)."""

    onnx_ops: tuple[str, ...] = ()
    """The ONNX operators this type is (``("Relu",)``; ``"MatMul+Add"``: the pair)."""

    # --- math -----------------------------------------------------------------------------------
    def __init__(self, spec):
        """The layer ``spec`` (a LayerSpec: name, options, shapes, inputs, parameters present)."""
        self.spec = spec
        self.name = spec.name
        self.opts = spec.options
        self.in_shape = tuple(spec.in_shape)
        self.in_shapes = [tuple(s) for s in spec.in_shapes] if spec.in_shapes else [self.in_shape]
        out, pshapes = self.shapes(self.opts, self.in_shapes)
        self.out_shape = tuple(out)
        self.param_shapes = {p: tuple(s) for p, s in pshapes.items() if p in spec.params}

    def t(self, suffix: str) -> str:
        """One of this layer's tensor names: ``t("out")`` is ``"<layer>.out"``."""
        return f"{self.name}.{suffix}"

    @property
    def x(self) -> str:
        """The name of the tensor it reads (the first, for a merge)."""
        return self.spec.inputs[0]

    def has(self, param: str) -> bool:
        """Whether the parameter is present (``bias = false`` leaves a bias out)."""
        return param in self.spec.params

    def initial_state(self, dtype) -> dict:
        """The ``states`` before step 1, by name."""
        return {}

    def forward(self, x, P: dict):
        """``(out, extras, new_state)`` for the batch ``x`` (a list for a merge) and the
        parameters ``P`` by name (and ``states``, as last written). ``extras`` and ``new_state``
        are dicts by name. Never modify an array you were given: write new ones. A layer that
        draws random numbers declares ``forward(self, x, P, rng=None)`` and draws from ``rng``
        only, a numpy Generator the program seeds from the scenario, the step and the layer."""
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, g, x, out, P: dict, extras: dict):
        """``(grad_in, {param: grad}, local or None)`` for the upstream gradient ``g`` =
        dLoss/d``out``: ``grad_in`` = dLoss/d``x`` (a list for a merge; None where ``grads_input``
        is False), one gradient per parameter present, and for an element-wise layer its
        ``local`` d out / d in (else None). A backward whose grad_in is costly may take
        ``need_in=False`` and return None for it (`nnstep run` leaves out dLoss/d(the batch))."""
        raise NotImplementedError(f"{type(self).__name__}.backward")

    def local(self, x, out):
        """d out / d in of an element-wise layer, element by element."""
        raise NotImplementedError(f"{type(self).__name__}.local")

    # --- one element, for explain -----------------------------------------------------------------
    def value_rule(self, name: str, idx: tuple, V):
        """How one element of a tensor this layer's forward writes (``name``: ``out``, an extra,
        or an element-wise layer's ``local``) comes out of the elements it read: a
        :class:`~nnstep.layers.expr.Value` built from ``el(V, name, idx)``, constants ``K`` and
        numbers ``Lit``. ``V(name)`` reads a tensor as the op read it. None: no rule (explain
        shows the formula with the element's numbers, unchecked)."""
        return None

    def grad_rule(self, wrt: str, idx: tuple, V):
        """The chain rule for one element of a gradient this layer's backward writes: ``wrt`` is
        ``"grad_in"`` (``"grad_in.<k>"`` for a merge) or a parameter's name. A
        :class:`~nnstep.layers.terms.Rule`: terms summed, each a product of ``Factor`` s (local
        derivatives, with their numbers) times one element of ``<layer>.grad_out``. Explain checks
        the terms against the vectorized backward. None: no rule."""
        return None

    def element_op(self, name: str, idx: tuple) -> str | None:
        """For a tensor several of its ops write (an RNN's ``out``, one time step each): the name of
        the op that wrote this element. None: the last op writing the tensor."""
        return None

    def element_alias(self, name: str, idx: tuple) -> tuple[str, tuple] | None:
        """For such a tensor: the (tensor, index) that holds this element on its own (``out[n, t,
        u]`` is ``h.t<t+1>[n, u]``), which explain explains instead. None: none."""
        return None

    # helpers for the element rules
    @property
    def grad_out(self) -> str:
        """The upstream gradient's name, ``<layer>.grad_out``."""
        return self.t("grad_out")

    def sym(self, name: str, idx) -> str:
        """An element's name: ``sym("linear1.weight", (0, 1))`` is ``"linear1.weight[0, 1]"``."""
        return f"{name}{ix(idx)}"

    def dout(self, r, wrt_sym: str) -> str:
        """The symbol ∂out[r]/∂(something)."""
        return f"∂{self.t('out')}{ix(r)}/∂{wrt_sym}"

