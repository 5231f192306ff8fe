"""The typed scenario lives in :mod:`nnstep.spec.model`; this name is kept for scripts that import it."""
from ..spec.model import (Breakpoint, Condition, Expect, LayerSpec, LossSpec, OptimizerSpec,  # noqa: F401
                          Scenario, TrainSpec)
