"""TOML scenario -> validated, typed :class:`~nnstep.model.scenario.Scenario` (docs/scenario-format.md).
No math is imported here: the loader builds on :mod:`nnstep.model` and :mod:`nnstep.layers` only (a
test proves it)."""
from .conditions import parse_condition
from .loader import load_scenario, loads_scenario

__all__ = ["load_scenario", "loads_scenario", "parse_condition"]
