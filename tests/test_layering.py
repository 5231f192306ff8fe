"""The layering of STYLE.md, proved by importing each layer in a fresh interpreter and listing what
came with it: layers <- model <- scenario, model <- engine <- debugger <- (TUI | CLI printers).
Parsing imports no engine, the engine imports no parser, the layer types import nothing of
nnstep's but errors, and nothing below tui/ imports Textual."""
import json
import subprocess
import sys

import pytest

def loaded(code: str) -> list[str]:
    prog = code + "\nimport sys, json\nprint(json.dumps(sorted(m for m in sys.modules if m.startswith(('nnstep', 'textual')))))"
    r = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_the_scenario_loader_loads_no_engine_module():
    mods = loaded("import nnstep.scenario\nnnstep.scenario.load_scenario('scenarios/classic.toml')")
    assert "nnstep.scenario.loader" in mods
    assert not [m for m in mods if m.startswith("nnstep.engine")], mods


def test_the_engine_loads_no_scenario_loader():
    mods = loaded("import nnstep.engine.program, nnstep.engine.runner, nnstep.engine.gradcheck")
    assert "nnstep.engine.program" in mods
    assert not [m for m in mods if m.startswith("nnstep.scenario")], mods


def test_the_model_imports_nothing_of_nnsteps_but_the_layers_and_errors():
    mods = loaded("import nnstep.model.scenario, nnstep.model.plan, nnstep.model.formula, nnstep.model.stats")
    below = [m for m in mods if m.startswith("nnstep.") and not m.startswith(("nnstep.model", "nnstep.layers",
                                                                              "nnstep.errors"))]
    assert not below, below


def test_the_layer_types_import_nothing_of_nnsteps_but_errors():
    code = "import nnstep.layers\nnnstep.layers.layer_types()"
    mods = loaded(code)
    assert "nnstep.layers.dense" in mods, mods
    below = [m for m in mods if m.startswith("nnstep.") and not m.startswith(("nnstep.layers", "nnstep.errors"))]
    assert not below, below


@pytest.mark.parametrize("code", [
    "import nnstep.debugger.session, nnstep.debugger.explain, nnstep.debugger.expect",
    "import nnstep.headless",
    "import nnstep.tui.view, nnstep.tui.format",
])
def test_no_textual_below_the_widgets(code):
    mods = loaded(code)
    assert not [m for m in mods if m.startswith("textual")], mods
