"""TOML scenario -> validated, typed :class:`Scenario`."""
from .model import (Breakpoint, Condition, Expect, LayerSpec, LossSpec, OptimizerSpec, Scenario,
                    TrainSpec)
from .loader import load_scenario, loads_scenario

__all__ = ["Breakpoint", "Condition", "Expect", "LayerSpec", "LossSpec", "OptimizerSpec", "Scenario",
           "TrainSpec", "load_scenario", "loads_scenario"]
