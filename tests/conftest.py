import os
import sys

import pytest

from nnstep.layers import plugins, registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCENARIOS = os.path.join(ROOT, "scenarios")
os.environ.pop("NO_COLOR", None)
# the error catalogue's scenarios (tests/scenario/hardcases.py) are shared with tests in other folders
sys.path.insert(0, os.path.join(ROOT, "tests", "scenario"))


@pytest.fixture
def scenario_dir():
    return SCENARIOS


def write(tmp_path, text, name="s.toml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


@pytest.fixture(autouse=True)
def fresh_layer_registry():
    """A test that registers a user's layer types (--layers, tests/layers/test_plugins.py) leaves the
    registry as it found it: the CLI runs in-process here, where a real run is a process of its own."""
    types, origin, loaded = dict(registry._registered), dict(registry._origin), dict(plugins._loaded)
    yield
    if registry._registered != types or plugins._loaded != loaded:
        registry._registered.clear()
        registry._registered.update(types)
        registry._origin.clear()
        registry._origin.update(origin)
        registry._all = None
        plugins._loaded.clear()
        plugins._loaded.update(loaded)
