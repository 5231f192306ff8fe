"""Which layer types there are: nnstep's own, one module per family in this package, and the ones
registered from a file the user names on the command line (``--layers mylayers.py``, or
``load_scenario(path, layers=[...])``; :mod:`.plugins`). A scenario never names code: a type it
names is looked up here, and an unknown one is the loader's located error.

The built-in table is made on first use, by importing each family module and taking every
:class:`~nnstep.layers.base.Layer` subclass it defines with a ``type`` of its own: the same way a
user's file is read. A registered type may not replace a built-in one.
"""
from __future__ import annotations

import importlib

from .base import Layer

# the family modules of nnstep's own layer types, in the order the docs list them
FAMILIES = ("dense", "activations", "conv", "pooling", "norm", "dropout", "merges", "shapes", "attention",
            "recurrent")

_builtin: dict[str, type[Layer]] | None = None
_registered: dict[str, type[Layer]] = {}
_origin: dict[type, str] = {}              # a registered class -> the file it came from, as the user named it
_all: dict[str, type[Layer]] | None = None


def layer_classes(module, base: type = Layer) -> list[type]:
    """The types a module defines: its subclasses of ``base`` (a layer, a loss, ...) with a
    ``type`` set in their own body (a base class of a family, without one, is not a type)."""
    out = []
    for v in vars(module).values():
        if (isinstance(v, type) and issubclass(v, base) and v.__module__ == module.__name__
                and isinstance(v.__dict__.get("type"), str) and v.__dict__["type"]):
            out.append(v)
    return out


_other: dict[str, dict] = {}


def _table(kind: str, modules: tuple[str, ...], base: tuple[str, str]) -> dict:
    """The types of a kind (losses, ...) the modules define, by name, made on first use."""
    if kind not in _other:
        cls = getattr(importlib.import_module(f".{base[0]}", __package__), base[1])
        _other[kind] = {c.type: c for m in modules
                        for c in layer_classes(importlib.import_module(f".{m}", __package__), cls)}
    return _other[kind]


def loss_types() -> dict:
    """Every loss type by name (layers/losses.py, layers/crossentropy.py)."""
    return _table("loss", ("losses", "crossentropy"), ("losses", "Loss"))


def optimizer_types() -> dict:
    """Every optimizer type by name (layers/optimizers.py)."""
    return _table("optimizer", ("optimizers",), ("optimizers", "Optimizer"))


def schedule_types() -> dict:
    """Every learning-rate schedule by name (layers/schedules.py)."""
    return _table("schedule", ("schedules",), ("schedules", "Schedule"))


def builtin_types() -> dict[str, type[Layer]]:
    """nnstep's own layer types by name."""
    global _builtin
    if _builtin is None:
        table: dict[str, type[Layer]] = {}
        for family in FAMILIES:
            module = importlib.import_module(f".{family}", __package__)
            for cls in layer_classes(module):
                table[cls.type] = cls
        _builtin = table
    return _builtin


def layer_types() -> dict[str, type[Layer]]:
    """Every layer type by name: the built-in ones, then the registered ones."""
    global _all
    if _all is None:
        _all = {**builtin_types(), **_registered}
    return _all


def layer_type(name: str) -> type[Layer]:
    """The class of a layer type (KeyError for an unknown one)."""
    return layer_types()[name]


def is_builtin(cls_or_name) -> bool:
    """Whether a type (by name) or a class is one of nnstep's own."""
    if isinstance(cls_or_name, str):
        return cls_or_name in builtin_types()
    return builtin_types().get(cls_or_name.type) is cls_or_name


def origin(cls) -> str | None:
    """The file a registered type came from (as the user named it); None for a built-in one."""
    return _origin.get(cls)


def registered() -> dict[str, type[Layer]]:
    """The types registered from users' files, by name."""
    return dict(_registered)


def add(cls: type[Layer], file: str | None) -> None:
    """Register a checked class (plugins.register checks it first)."""
    global _all
    _registered[cls.type] = cls
    _origin[cls] = file or "<registered>"
    _all = None


def remove(name: str) -> None:
    """Forget a registered type (tests)."""
    global _all
    cls = _registered.pop(name, None)
    _origin.pop(cls, None)
    _all = None
