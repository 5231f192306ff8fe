"""A user's own layer types: read from a Python file the user names on the command line
(``--layers mylayers.py``) or in Python (``load_scenario(path, layers=["mylayers.py"])``), and
registered beside nnstep's own (docs/layers.md). A scenario never names code.

Everything a user's code does is held to the layer contract, and a breach is a located error,
never a traceback: ``nnstep: error: mylayers.py: Swish.backward: returned grad_in of shape [4, 3],
expected [4, 2]``. The file raising as it is imported (``mylayers.py: line 12: NameError: ...``), a
class that is no layer type or would replace a built-in one, and, each time they run, its shape
rule, formulas, forward, backward and element rules raising or returning what the contract does
not allow (:func:`guard`, :func:`call`). nnstep's own layers are not guarded: their contract is
proved by the tests.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import sys
import traceback

import numpy as np

from ..errors import ScenarioError, clean, cut
from . import registry
from .base import Layer, Option, fmt_shape

_loaded: dict[str, tuple[str, list]] = {}        # real path -> (module name, its layer classes)
TYPE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def load_layers(paths) -> list[type[Layer]]:
    """Import each file (once per process) and register the layer types it defines; their
    classes. ScenarioError, located at the file, for anything wrong."""
    out = []
    for path in paths:
        out += load_file(os.fspath(path))
    return out


def load_file(path: str) -> list[type[Layer]]:
    shown = clean(cut(path, 200))
    real = os.path.realpath(path)
    if real in _loaded:
        return _loaded[real][1]
    if not os.path.exists(path):
        raise ScenarioError("no such file (--layers names a Python file of layer classes)", file=shown)
    if not os.path.isfile(path):
        raise ScenarioError("is not a file (--layers names a Python file of layer classes)", file=shown)
    stem = re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0]) or "layers"
    name = f"nnstep_user_layers.{stem}_{hashlib.sha1(real.encode()).hexdigest()[:8]}"
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ScenarioError("cannot be imported as Python (--layers names a .py file)", file=shown)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    except ScenarioError:
        raise
    except SyntaxError as e:
        sys.modules.pop(name, None)
        raise ScenarioError(f"SyntaxError: {clean(cut(str(e.msg)))}", file=shown,
                            where=f"line {e.lineno}" if e.lineno else None) from None
    except (KeyboardInterrupt, MemoryError):
        sys.modules.pop(name, None)
        raise
    except BaseException as e:          # its code raised (SystemExit too): the file and its line
        sys.modules.pop(name, None)
        line = _line_in(e, real)
        raise ScenarioError(f"importing it raised {_exc(e)}", file=shown,
                            where=f"line {line}" if line else None) from None
    classes = registry.layer_classes(module)
    if not classes:
        raise ScenarioError("defines no layer type: a class of its own that subclasses nnstep.layers.Layer and "
                            "sets type = \"...\" (docs/layers.md)", file=shown)
    for cls in classes:
        register(cls, shown)
    _loaded[real] = (name, classes)
    return classes


def register(cls, file: str | None = None) -> None:
    """Register a layer class under its ``type``, after checking what can be checked before it
    runs. A built-in type is never replaced; registering the same class again does nothing."""
    file = file or "<registered>"
    who = cls.__name__
    t = cls.__dict__.get("type")
    if not isinstance(t, str) or not TYPE_RE.match(t):
        raise ScenarioError(f"type must be a name of letters, digits and _ (not starting with a digit), got "
                            f"{clean(cut(repr(t)))}", file=file, where=f"{who}.type")
    if registry.is_builtin(t):
        raise ScenarioError(f'"{t}" is one of nnstep\'s own layer types, and a layer of your own may not replace it: '
                            f"give yours a type of its own", file=file, where=f"{who}.type")
    old = registry.registered().get(t)
    if old is cls:
        return
    if old is not None:
        raise ScenarioError(f'"{t}" is registered already, by {old.__name__} from {registry.origin(old)}',
                            file=file, where=f"{who}.type")
    _check_declaration(cls, file)
    registry.add(cls, file)


def _check_declaration(cls, file: str) -> None:
    who = cls.__name__

    def bad(attr, what):
        raise ScenarioError(what, file=file, where=f"{who}.{attr}")
    if not isinstance(cls.options, dict) or not all(isinstance(k, str) and isinstance(v, Option)
                                                    for k, v in cls.options.items()):
        bad("options", "expected a dict of option names to Option(default, kind) (docs/layers.md)")
    if not isinstance(cls.params, tuple) or not all(isinstance(p, str) and TYPE_RE.match(p) for p in cls.params):
        bad("params", 'expected a tuple of parameter names, such as ("weight", "bias")')
    taken = {"type", "name", "input", "inputs", "in", "init", "frozen"} | set(cls.params)
    for k in cls.options:
        if k in taken:
            bad("options", f'"{k}" is a key every layer takes (or a parameter\'s): name the option otherwise')
    steps = cls.forward_steps is not Layer.forward_steps
    if not steps and cls.forward is Layer.forward:
        bad("forward", "a layer type defines forward(self, x, P) -> (out, extras, new_state) (docs/layers.md)")
    if not steps and cls.backward is Layer.backward:
        bad("backward", "a layer type defines backward(self, g, x, out, P, extras) -> (grad_in, grads, local) "
                        "(docs/layers.md)")
    if cls.elementwise and cls.local is Layer.local and cls.backward is Layer.backward:
        bad("local", "an element-wise layer defines local(self, x, out) -> d out / d in")


# --- running a user's code ----------------------------------------------------------------------
def _exc(e: BaseException) -> str:
    return f"{type(e).__name__}: {clean(cut(str(e), 160))}" if str(e) else type(e).__name__


def _line_in(e: BaseException, real: str) -> int | None:
    """The line of ``real`` (a user's file) where ``e`` was raised, the innermost one."""
    line = None
    for fr in traceback.extract_tb(e.__traceback__):
        if os.path.realpath(fr.filename) == real:
            line = fr.lineno
    return line


def _file_of(cls) -> str:
    return registry.origin(cls) or "<registered>"


def _raised(cls, method: str, e: BaseException) -> ScenarioError:
    f = _file_of(cls)
    mod = sys.modules.get(cls.__module__)
    real = os.path.realpath(getattr(mod, "__file__", "") or "")
    line = _line_in(e, real) if real else None
    return ScenarioError(f"raised {_exc(e)}" + (f" (line {line})" if line else ""), file=f,
                         where=f"{cls.__name__}.{method}")


def call(cls, method: str, *args, expect=()):
    """``cls.<method>(*args)`` of a user's layer class, any exception it raises (but those in
    ``expect``, which the caller handles: a ShapeError from ``shapes``) a located error."""
    try:
        return cls(*args) if method == "__init__" else getattr(cls, method)(*args)
    except expect:
        raise
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as e:
        raise _raised(cls, method, e) from None


def rule(layer, method: str, *args):
    """An element rule of a layer (``value_rule``, ``grad_rule``): nnstep's own called directly,
    a user's through :func:`call` (its code raising is a located ScenarioError)."""
    cls = type(layer)
    if registry.is_builtin(cls):
        return getattr(layer, method)(*args)
    try:
        return getattr(layer, method)(*args)
    except (KeyboardInterrupt, MemoryError, ScenarioError):
        raise
    except Exception as e:
        raise _raised(cls, method, e) from None


def wrong(cls, method: str, what: str) -> ScenarioError:
    return ScenarioError(what, file=_file_of(cls), where=f"{cls.__name__}.{method}")


def _shape(a) -> str:
    return fmt_shape(np.shape(a))


def _check_array(cls, method, what, a, shape, dtype):
    if not isinstance(a, np.ndarray):
        raise wrong(cls, method, f"returned {what} as {type(a).__name__}, expected a numpy array of shape "
                                 f"{fmt_shape(shape)}")
    if a.shape != tuple(shape):
        raise wrong(cls, method, f"returned {what} of shape {_shape(a)}, expected {fmt_shape(shape)}")
    if dtype is not None and a.dtype != dtype:
        raise wrong(cls, method, f"returned {what} of dtype {a.dtype}, expected {dtype} (the scenario's dtype)")


def guard(layer: Layer) -> Layer:
    """``layer`` (an instance of a user's class) with its forward, backward and any step methods
    checked each time they run: an exception, or a result the contract does not allow, is a
    located error."""
    cls = type(layer)
    fwd, bwd = layer.forward, layer.backward
    merge = cls.merge
    extras, states = tuple(cls.extras), tuple(cls.states)
    params = tuple(layer.param_shapes)
    pshape = dict(layer.param_shapes)

    def run(method, fn, *a, **kw):
        try:
            return fn(*a, **kw)
        except (KeyboardInterrupt, MemoryError, ScenarioError):
            raise
        except Exception as e:
            raise _raised(cls, method, e) from None

    def forward(x, P, **kw):
        r = run("forward", fwd, x, P, **kw)
        if not (isinstance(r, tuple) and len(r) == 3):
            raise wrong(cls, "forward", "returned " + _what(r) + ", expected (out, extras, new_state)")
        out, ex, st = r
        x0 = x[0] if merge else x
        dt = x0.dtype if x0.dtype.kind == "f" else None
        _check_array(cls, "forward", "out", out, (x0.shape[0],) + layer.out_shape, dt)
        for name, d, want in (("extras", ex, extras), ("new_state", st, states)):
            if not isinstance(d, dict):
                raise wrong(cls, "forward", f"returned {name} as {type(d).__name__}, expected a dict")
            missing = [e for e in want if e not in d]
            if missing:
                raise wrong(cls, "forward", f"returned {name} without {missing[0]!r} (the class declares "
                                            f"{name if name == 'extras' else 'states'} = {want!r})")
        return r

    def backward(g, x, out, P, extras_, **kw):
        r = run("backward", bwd, g, x, out, P, extras_, **kw)
        if not (isinstance(r, tuple) and len(r) == 3):
            raise wrong(cls, "backward", "returned " + _what(r) + ", expected (grad_in, grads, local)")
        gin, grads, local = r
        dt = g.dtype if g.dtype.kind == "f" else None
        if cls.grads_input and not (gin is None and kw.get("need_in") is False):
            xs = x if merge else [x]
            gins = gin if merge else [gin]
            if merge and (not isinstance(gin, (list, tuple)) or len(gin) != len(xs)):
                raise wrong(cls, "backward", f"returned grad_in as {_what(gin)}, expected a list of {len(xs)} "
                                             f"arrays, one per input")
            for k, (gi, xi) in enumerate(zip(gins, xs)):
                _check_array(cls, "backward", f"grad_in[{k}]" if merge else "grad_in", gi, xi.shape, dt)
        if not isinstance(grads, dict):
            raise wrong(cls, "backward", f"returned grads as {type(grads).__name__}, expected a dict by parameter name")
        for p in params:
            if p not in grads:
                raise wrong(cls, "backward", f"returned no gradient for its parameter {p!r}")
            _check_array(cls, "backward", f"the gradient of {p}", grads[p], pshape[p], dt)
        if cls.elementwise:
            _check_array(cls, "backward", "local", local, out.shape, dt)
        return r

    import functools
    layer.forward = functools.wraps(fwd)(forward)
    layer.backward = functools.wraps(bwd)(backward)
    return layer


def _what(r) -> str:
    if isinstance(r, tuple):
        return f"a tuple of {len(r)}"
    return type(r).__name__
