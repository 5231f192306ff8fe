"""nnstep: a step-through debugger for small neural networks.

The scripting API (docs/commands.md)::

    import nnstep
    sc = nnstep.load_scenario("net.toml")
    s = nnstep.Session(sc)
    s.step(); s.back(); s.goto(2, 0); s.value("linear1.out"); s.run()
    rep = nnstep.compare(sc, {"linear1.out": my_out})   # the first op that differs
    nnstep.assert_matches(sc, {"2/linear1.weight.grad": my_grad})   # AssertionError(report text)

Everything but the error type is imported on first use, so that importing one layer of nnstep
(the engine, say) does not import the others.
"""
from .errors import ScenarioError

__version__ = "0.1.0"

_LAZY = {"load_scenario": ("scenario", "load_scenario"), "loads_scenario": ("scenario", "loads_scenario"),
         "Session": ("debugger.session", "Session"), "compare": ("debugger.compare", "compare_api"),
         "assert_matches": ("debugger.compare", "assert_matches")}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        mod, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{mod}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nnstep' has no attribute {name!r}")


__all__ = ["ScenarioError", "Session", "load_scenario", "loads_scenario", "compare", "assert_matches", "__version__"]
