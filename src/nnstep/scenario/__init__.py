"""TOML scenario -> validated, typed :class:`Scenario` (docs/scenario-format.md). No math is imported here: the
loader builds on :mod:`nnstep.spec` only (a test proves it)."""
from ..model.scenario import (Breakpoint, Condition, Expect, LayerSpec, LossSpec, OptimizerSpec, Scenario,
                          TrainSpec)
from .conditions import parse_condition
from .loader import load_scenario, loads_scenario

__all__ = ["Breakpoint", "Condition", "Expect", "LayerSpec", "LossSpec", "OptimizerSpec", "Scenario",
           "TrainSpec", "load_scenario", "loads_scenario", "parse_condition"]
