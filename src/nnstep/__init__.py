"""nnstep: a step-through debugger for small neural networks.

The scripting API (SPEC §4b)::

    import nnstep
    sc = nnstep.load_scenario("net.toml")
    s = nnstep.Session(sc)
    s.step(); s.back(); s.goto(2, 0); s.value("linear1.out"); s.run()
"""
from .errors import ScenarioError
from .scenario import load_scenario, loads_scenario

__version__ = "0.1.0"


def __getattr__(name):
    if name == "Session":
        from .debugger.session import Session
        return Session
    raise AttributeError(name)


__all__ = ["ScenarioError", "Session", "load_scenario", "loads_scenario", "__version__"]
