"""The typed scenario lives in :mod:`nnstep.model.scenario`; this name is kept for scripts that import it."""
from ..model.scenario import (Breakpoint, Condition, Expect, LayerSpec, LossSpec, OptimizerSpec,  # noqa: F401
                          Scenario, TrainSpec)
