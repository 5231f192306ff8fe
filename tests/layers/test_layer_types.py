"""Every built-in layer type is one whole class: a type cannot be half-added. For each type the
registry finds in the family modules of nnstep.layers: its declaration (options of known kinds whose
defaults pass their own check, a symbol and an init for each parameter), its math (forward and
backward, or its steps; an element-wise type's local derivative), its formulas, the element rules
explain checks, its torch equivalent; a row in docs/scenario-format.md, a float64 central-difference
case under tests/engine/ and an export case (tests/export/ checks every type is reached)."""
import os
import re

import pytest

from nnstep.layers import Layer, Option, layer_types, registry
from nnstep.layers.base import KINDS
from nnstep.layers.init import KINDS as INIT_KINDS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILTIN = registry.builtin_types()


def _own(cls, name) -> bool:
    """Whether ``name`` is the type's own, written in its family module (not Layer's default)."""
    for c in cls.__mro__:
        if name in c.__dict__:
            return c.__module__ == cls.__module__ and c is not Layer
    return False


def test_every_family_module_is_read_and_every_type_is_in_one():
    assert sorted(BUILTIN) == sorted(layer_types())         # nothing registered in this process
    assert len(BUILTIN) == 30
    for t, cls in BUILTIN.items():
        family = cls.__module__.rsplit(".", 1)[1]
        assert family in registry.FAMILIES, (t, cls.__module__)


@pytest.mark.parametrize("t", sorted(BUILTIN))
def test_the_declaration_is_whole(t):
    cls = BUILTIN[t]
    assert cls.type == t and cls.__doc__, t
    for k, o in cls.options.items():
        assert isinstance(o, Option), (t, k)
        assert o.kind in KINDS or o.kind.startswith("choice:"), (t, k, o.kind)
        if o.kind.startswith("choice:"):
            assert o.required or o.default in o.kind[7:].split("|"), (t, k)
    for p in cls.params:
        assert p in cls.symbols, (t, p, "a symbol for the screen")
        assert cls.init.get(p, "kaiming_uniform") in INIT_KINDS, (t, p)
    if cls.params:
        assert _own(cls, "shapes"), (t, "a type with parameters gives their shapes")


@pytest.mark.parametrize("t", sorted(BUILTIN))
def test_the_math_formulas_rules_and_torch_equivalent_are_its_own(t):
    cls = BUILTIN[t]
    steps = _own(cls, "forward_steps")
    assert steps == _own(cls, "backward_steps"), t
    pieces = ["value_rule", "grad_rule", "torch_module"]
    pieces += [] if steps else ["forward", "backward", "forward_formula", "backward_formula"]
    missing = [p for p in pieces if not _own(cls, p) and not (p == "value_rule" and _own(cls, "value_window"))]
    assert not missing, (t, missing)
    if cls.elementwise:
        assert _own(cls, "local"), t


def _text(*parts) -> str:
    out = []
    for p in parts:
        p = os.path.join(ROOT, p)
        names = [os.path.join(p, f) for f in sorted(os.listdir(p)) if f.endswith(".py")] if os.path.isdir(p) else [p]
        out += [open(n, encoding="utf-8").read() for n in names]
    return "\n".join(out)


def test_every_type_is_documented_and_has_a_central_difference_case():
    docs = _text("docs/scenario-format.md")
    engine_tests = _text("tests/engine")
    for t in BUILTIN:
        assert re.search(rf"^\| [^|]*`{t}`", docs, re.M), (t, "a row of the layer tables in docs/scenario-format.md")
        assert f'"{t}"' in engine_tests, (t, "a float64 central-difference case under tests/engine/")


# --- losses, optimizers, schedules: each one class too ---------------------------------------------
LOSSES, OPTIMIZERS, SCHEDULES = registry.loss_types(), registry.optimizer_types(), registry.schedule_types()


def _own_of(cls, name, base) -> bool:
    for c in cls.__mro__:
        if name in c.__dict__:
            return c is not base
    return False


@pytest.mark.parametrize("t", sorted(LOSSES))
def test_a_loss_type_is_whole(t):
    from nnstep.layers.losses import Loss
    cls = LOSSES[t]
    assert cls.__doc__ and cls.torch_class, t
    assert list(cls.options)[:2] == ["reduction", "scale"], t              # every loss takes them, first
    missing = [m for m in ("_formulas", "forward", "backward", "grad_rule", "value_rule") if not _own_of(cls, m, Loss)]
    assert not missing, (t, missing)


@pytest.mark.parametrize("t", sorted(OPTIMIZERS))
def test_an_optimizer_type_is_whole(t):
    from nnstep.layers.optimizers import Optimizer
    cls = OPTIMIZERS[t]
    assert cls.__doc__ and cls.torch_class, t
    assert {"lr", "weight_decay", "clip_grad_norm", "schedule"} <= set(cls.options), t
    missing = [m for m in ("update", "formula", "value_rule", "state", "torch_kwargs") if not _own_of(cls, m, Optimizer)]
    assert not missing, (t, missing)


@pytest.mark.parametrize("t", sorted(SCHEDULES))
def test_a_schedule_type_is_whole(t):
    from nnstep.layers.schedules import Schedule
    cls = SCHEDULES[t]
    assert cls.__doc__ and cls.torch_class, t
    missing = [m for m in ("next_lr", "formula", "value_rule", "torch_kwargs") if not _own_of(cls, m, Schedule)]
    assert not missing, (t, missing)


def test_every_loss_optimizer_and_schedule_and_option_is_documented():
    """docs/scenario-format.md names every loss, optimizer and schedule and each of its options, and
    each has a case under tests/engine/."""
    docs = _text("docs/scenario-format.md")
    engine_tests = _text("tests/engine")
    for table in (LOSSES, OPTIMIZERS, SCHEDULES):
        for t, cls in table.items():
            assert f"`{t}`" in docs or f'"{t}"' in docs, (t, "in docs/scenario-format.md")
            assert f'"{t}"' in engine_tests, (t, "a case under tests/engine/")
            for k, o in cls.options.items():
                if k in ("schedule",):
                    continue
                assert f"`{k}`" in docs, (t, k, "documented")
