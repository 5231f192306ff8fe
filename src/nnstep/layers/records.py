"""``@record``: the part of ``@dataclass`` nnstep's value types use, without its cost at import.

Kept hand-written because the start-up target needs it (measured; docs/internals.md, "What a
headless run costs beyond numpy"). Python 3.11's ``@dataclass`` writes and compiles several methods
per class when the module is imported, for the 24 value types on `nnstep run`'s path. Counted with
callgrind (one BLAS thread; a machine too loaded to time it), ``nnstep run FILE --steps 1`` on
bench/bench_process.py's MLP (data and weights in .npz files) ran 492.2 M instructions with records
and 580.8 M with ``@dataclass``, against 372.7 M for ``import numpy``: +119 M and +208 M. At the
rate of the last measured start (+29 ms for +86.8 M), that is about +40 ms and +70 ms, and the
target is +60 ms. A record's methods are the same generic functions for every class, so defining
one costs a few microseconds.

What it does, as dataclass does: fields are the class's annotations in order, defaults are the
class attributes (``Factory(list)`` for a fresh default per instance, ``NoInit()`` for a field set
by ``__post_init__``); ``__init__`` takes them positionally or by name and then calls
``__post_init__`` if defined; ``__repr__``; ``__eq__`` over the fields (``eq=False``: identity);
``frozen=True``: assigning raises :class:`FrozenInstanceError` and instances hash by their fields.
Records are not dataclasses (``dataclasses.fields`` does not see them): :func:`fields` lists a
record's fields and defaults, and :func:`replace` copies one with changes.
"""
from __future__ import annotations

_MISSING = object()
MISSING = _MISSING          # a field without a default, as records.fields reports it


class FrozenInstanceError(AttributeError):
    """Assigning to a field of a frozen record."""


class Factory:
    """A default made fresh for each instance (dataclass's ``field(default_factory=...)``)."""
    __slots__ = ("make",)

    def __init__(self, make):
        self.make = make


class NoInit:
    """A field ``__init__`` does not take (``field(init=False)``): ``__post_init__`` sets it."""
    __slots__ = ()


def record(cls=None, *, frozen: bool = False, eq: bool = True):
    def wrap(cls):
        fields: list[tuple[str, object]] = []
        for base in reversed(cls.__mro__[1:]):
            fields += [f for f in getattr(base, "__record_fields__", ()) if f[0] not in dict(fields)]
        for name in cls.__dict__.get("__annotations__", {}):
            if name.startswith("__") or "ClassVar" in str(cls.__annotations__[name]):
                continue
            default = cls.__dict__.get(name, _MISSING)
            fields = [f for f in fields if f[0] != name] + [(name, default)]
            if name in cls.__dict__ and not isinstance(default, (Factory, NoInit)):
                pass                         # a plain default stays a class attribute, as dataclass's
            elif name in cls.__dict__:
                delattr(cls, name)
        init_fields = [(n, d) for n, d in fields if not isinstance(d, NoInit)]
        names = tuple(n for n, _ in fields)
        init_names = tuple(n for n, _ in init_fields)
        defaults = dict(init_fields)
        post = getattr(cls, "__post_init__", None)
        setattr_ = object.__setattr__

        def __init__(self, *args, **kw):
            if len(args) > len(init_names):
                raise TypeError(f"{cls.__name__}() takes {len(init_names)} arguments, got {len(args)}")
            vals = dict(zip(init_names, args))
            for k, v in kw.items():
                if k in vals or k not in defaults:
                    raise TypeError(f"{cls.__name__}() got an unexpected or repeated argument {k!r}")
                vals[k] = v
            for n in init_names:
                if n not in vals:
                    d = defaults[n]
                    if d is _MISSING:
                        raise TypeError(f"{cls.__name__}() missing the argument {n!r}")
                    vals[n] = d.make() if isinstance(d, Factory) else d
            for n, v in vals.items():
                setattr_(self, n, v)
            if post is not None:
                post(self)

        def __repr__(self):
            return f"{cls.__name__}(" + ", ".join(f"{n}={getattr(self, n, None)!r}" for n in names) + ")"

        cls.__record_fields__ = tuple(fields)
        cls.__init__ = __init__
        cls.__repr__ = __repr__
        if eq:
            def __eq__(self, other):
                if other.__class__ is not self.__class__:
                    return NotImplemented
                return all(getattr(self, n) == getattr(other, n) for n in names)
            cls.__eq__ = __eq__
            if frozen:
                cls.__hash__ = lambda self: hash(tuple(getattr(self, n) for n in names))
            else:
                cls.__hash__ = None
        if frozen:
            def __setattr__(self, name, value):
                raise FrozenInstanceError(f"cannot assign to field {name!r}")

            def __delattr__(self, name):
                raise FrozenInstanceError(f"cannot delete field {name!r}")
            cls.__setattr__ = __setattr__
            cls.__delattr__ = __delattr__
        return cls
    return wrap if cls is None else wrap(cls)


def fields(obj) -> tuple[tuple[str, object], ...]:
    """A record's fields in order, each ``(name, default)``: the default a fresh instance gets
    (a ``Factory``'s made anew), or ``MISSING`` where the field has none."""
    return tuple((n, d.make() if isinstance(d, Factory) else (MISSING if d is _MISSING else d))
                 for n, d in type(obj).__record_fields__ if not isinstance(d, NoInit))


def replace(obj, **changes):
    """A copy of a record (or a dataclass) with some fields changed (dataclasses.replace)."""
    fields = getattr(type(obj), "__record_fields__", None)
    if fields is None:
        import dataclasses
        return dataclasses.replace(obj, **changes)
    kw = {n: getattr(obj, n) for n, d in fields if not isinstance(d, NoInit)}
    kw.update(changes)
    return type(obj)(**kw)
