"""The typed, validated form of a scenario file (docs/scenario-format.md). Everything is resolved: shapes are
inferred, missing parameters are initialized, data is loaded. The scenario loader produces it and
the engine consumes it; this module imports neither."""
from __future__ import annotations

import re
from typing import Any

import numpy as np

from ..layers.records import Factory, record


@record(frozen=True)
class LayerSpec:
    index: int
    type: str
    name: str
    options: dict[str, Any]            # type-specific options, defaults filled in
    in_shape: tuple[int, ...]          # per sample (no batch dim)
    out_shape: tuple[int, ...]
    params: tuple[str, ...]            # parameter names in order, e.g. ("weight", "bias")
    frozen: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()       # the tensors it reads: "input" or "<layer>.out", in order
    in_shapes: tuple[tuple[int, ...], ...] = ()   # their per-sample shapes

    def has(self, param: str) -> bool:
        return param in self.params

    def t(self, suffix: str) -> str:
        """One of this layer's tensor names: ``t("out")`` is ``"<name>.out"``."""
        return f"{self.name}.{suffix}"


class _TypeSpec:
    """A loss, optimizer or schedule of a scenario: its ``type`` and every option of that type by
    name, the defaults filled in from the type's class (nnstep.layers), so that an option's default
    lives in one place. Options read as attributes (``lo.beta``, ``opt.lr``); a type's class lists
    them (``options``). Frozen, and equal when type and options are."""
    __slots__ = ("type", "options")

    @staticmethod
    def _types() -> dict:
        raise NotImplementedError

    def __init__(self, type: str, *args, **kw):
        types = self._types()
        if type not in types:
            raise ValueError(f"unknown {self._what} type {type!r} (one of: {', '.join(types)})")
        declared = types[type].options
        names = list(declared)
        if len(args) > len(names):
            raise TypeError(f"{type} takes {len(names)} options, got {len(args)}")
        values = dict(zip(names, args))
        for k, v in kw.items():
            if k not in declared:
                raise TypeError(f"{self._what} {type} has no option {k!r} (it has: {', '.join(names)})")
            if k in values:
                raise TypeError(f"option {k!r} given twice")
            values[k] = v
        for k, o in declared.items():
            if k not in values:
                if o.required:
                    raise TypeError(f"{self._what} {type} needs the option {k!r}")
                values[k] = o.default
        object.__setattr__(self, "type", type)
        object.__setattr__(self, "options", {k: values[k] for k in names})

    def __getattr__(self, name):
        try:
            return object.__getattribute__(self, "options")[name]
        except (KeyError, AttributeError):
            raise AttributeError(f"{type(self).__name__} of type {getattr(self, 'type', '?')!r} has no option "
                                 f"{name!r}") from None

    def __setattr__(self, name, value):
        raise AttributeError(f"a {type(self).__name__} is frozen: make a new one (replace)")

    def __eq__(self, other):
        return type(other) is type(self) and (self.type, self.options) == (other.type, other.options)

    def __hash__(self):
        return hash((self.type, tuple(self.options.items())))

    def __repr__(self):
        return f"{type(self).__name__}({self.type!r}, " + ", ".join(f"{k}={v!r}" for k, v in self.options.items()) + ")"

    def __reduce__(self):
        return (_make, (type(self), self.type, self.options))

    def replace(self, **changes):
        """A copy with some options changed."""
        return type(self)(self.type, **{**self.options, **changes})


def _make(cls, type_, options):
    return cls(type_, **options)


class LossSpec(_TypeSpec):
    """The [loss] table: ``LossSpec("mse", reduction="sum", scale=0.5)`` (layers/losses.py)."""
    __slots__ = ()
    _what = "loss"

    @staticmethod
    def _types():
        from ..layers.registry import loss_types
        return loss_types()


class OptimizerSpec(_TypeSpec):
    """The [optimizer] table: ``OptimizerSpec("adam", lr=0.01)`` (layers/optimizers.py), with
    ``clip_grad_norm`` and ``schedule`` (a ScheduleSpec or None), which every optimizer takes."""
    __slots__ = ()
    _what = "optimizer"

    @staticmethod
    def _types():
        from ..layers.registry import optimizer_types
        return optimizer_types()


class ScheduleSpec(_TypeSpec):
    """[optimizer.schedule]: ``ScheduleSpec("cosine", t_max=10)`` (layers/schedules.py), a
    torch.optim.lr_scheduler stepped once after each training step's update."""
    __slots__ = ()
    _what = "schedule"

    @staticmethod
    def _types():
        from ..layers.registry import schedule_types
        return schedule_types()


@record(frozen=True)
class TrainSpec:
    steps: int = 1
    batch_size: int = 0
    shuffle: bool = False


@record(frozen=True)
class Condition:
    """`<tensor> <stat> <op> <number>` or `nonfinite`. Parsed, never evaluated."""
    kind: str                          # "compare" | "nonfinite"
    tensor: str | None = None
    stat: str | None = None            # min | max | mean | absmax | norm
    op: str | None = None              # < <= > >= == !=
    number: float | None = None
    text: str = ""

    def holds(self, value: np.ndarray) -> tuple[bool, float]:
        """Whether the condition holds on ``value``, and the statistic it compared."""
        from .stats import stat

        s = stat(value, self.stat)
        n = self.number
        ok = {"<": s < n, "<=": s <= n, ">": s > n, ">=": s >= n, "==": s == n, "!=": s != n}[self.op]
        return bool(ok), s


@record(frozen=True)
class Breakpoint:
    where: str                         # key path, e.g. "breakpoints[1]"
    op: str | None = None
    stage: str | None = None
    when: Condition | None = None


@record(frozen=True)
class Expect:
    where: str                         # key path, e.g. "expect[0]"
    step: int
    tensor: str
    value: np.ndarray
    atol: float = 1e-8
    rtol: float = 1e-6
    line: int | None = None


ELEMENT = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(?:\[\s*(-?\d+(?:\s*,\s*-?\d+)*)?\s*\])?\s*$")


def parse_element(text: str) -> tuple[str, tuple[int, ...] | None]:
    """``"linear1.weight.grad[0, 1]"`` -> ``("linear1.weight.grad", (0, 1))``; ``"loss"`` -> index None.
    ValueError (with the text cut short, not yet cleaned of control characters) if it is neither."""
    from ..errors import cut
    m = ELEMENT.match(text)
    if not m:
        raise ValueError(f'expected a tensor and an index such as "linear1.weight.grad[0, 1]", got "{cut(text)}"')
    try:
        idx = None if m.group(2) is None else tuple(int(v) for v in m.group(2).split(","))
    except ValueError:                      # more digits than int() converts
        raise ValueError(f'an index of "{cut(text)}" is too large') from None
    if idx is not None and any(abs(i) >= 2**63 for i in idx):
        raise ValueError(f'an index of "{cut(text)}" is too large')
    return m.group(1), idx


SHOWS = ("numbers", "formula", "nothing")


@record(frozen=True)
class Ask:
    """A question a lesson asks before an op runs (docs/teaching.md): predict one element it writes."""
    where: str                         # key path, e.g. "ask[0]" (or "--predict" for one made up)
    step: int
    op: str
    tensor: str                        # the tensor's name, without the index
    index: tuple[int, ...]             # the element (() for a scalar)
    show: str = "numbers"              # what the question shows: numbers | formula | nothing
    rtol: float = 1e-3
    atol: float = 1e-6
    hint: str = ""

    @property
    def element(self) -> str:
        return self.tensor + ("[" + ", ".join(map(str, self.index)) + "]" if self.index else "")


@record(frozen=True)
class Note:
    """Narration a lesson shows when the cursor reaches an op or a stage (docs/teaching.md)."""
    where: str                         # key path, e.g. "note[0]"
    text: str
    op: str | None = None              # at most one of op / stage; neither: the start of the step
    stage: str | None = None
    step: int | None = 1               # None: every step


@record
class Scenario:
    path: str                          # the file as the user named it ("<string>" when loaded from text)
    name: str
    description: str
    seed: int
    dtype: str                         # "float64" | "float32"
    x: np.ndarray
    y: np.ndarray
    layers: list[LayerSpec]
    loss: LossSpec
    optimizer: OptimizerSpec
    train: TrainSpec
    initial: dict[str, np.ndarray]     # every parameter by name "<layer>.<param>", frozen included
    breakpoints: list[Breakpoint] = Factory(list)
    expects: list[Expect] = Factory(list)
    asks: list[Ask] = Factory(list)
    notes: list[Note] = Factory(list)
    source: str = ""                   # the TOML text, for reloading and display
    origins: dict[str, str] = Factory(dict)   # where each initial parameter came from, in words (explain)
    files: dict[str, str] = Factory(dict)   # the files it read, by key path: {"data.x.file": path, ...}
    initial_states: dict[str, np.ndarray] = Factory(dict)   # a layer state from the weights file
    #                                  ("bn1.running_mean"); the others start as the layer's initial_state

    @property
    def inputs(self) -> list[tuple[str, str]]:
        """(what, path) of every file this scenario was read from: itself, its data and weights
        files (an output of the run must be none of them)."""
        out = [("the scenario itself", self.path)] if self.path != "<string>" else []
        return out + [(f"the scenario's {'weights' if key == 'scenario.weights' else 'data'} file ({key})", p)
                      for key, p in self.files.items()]

    @property
    def np_dtype(self):
        return np.dtype(self.dtype)

    @property
    def n_samples(self) -> int:
        return int(self.x.shape[0])

    @property
    def batch_size(self) -> int:
        b = self.train.batch_size
        return self.n_samples if b <= 0 or b >= self.n_samples else b

    @property
    def n_batches(self) -> int:
        return -(-self.n_samples // self.batch_size)

    @property
    def param_names(self) -> list[str]:
        return [f"{L.name}.{p}" for L in self.layers for p in L.params]

    @property
    def trainable(self) -> list[str]:
        return [f"{L.name}.{p}" for L in self.layers for p in L.params if p not in L.frozen]
