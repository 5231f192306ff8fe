"""torch and onnx are optional extras that only `nnstep import` imports: the rest of nnstep runs
without them, and a weights file's batchnorm statistics (which import writes) are checked."""
import ast
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import nnstep

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "src", "nnstep")
ROOT = os.path.dirname(os.path.dirname(SRC))


def test_no_module_but_the_two_importers_imports_torch_or_onnx():
    found = []
    for folder, _, files in os.walk(SRC):
        for f in files:
            if not f.endswith(".py"):
                continue
            p = os.path.join(folder, f)
            tree = ast.parse(open(p, encoding="utf-8").read())
            for node in ast.walk(tree):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
                if any(n.split(".")[0] in ("torch", "onnx") for n in names):
                    found.append(os.path.relpath(p, SRC))
    assert sorted(set(found)) == ["importer/onnx.py", "importer/torch_fx.py"]


def test_the_core_runs_without_importing_torch_or_onnx():
    code = """
import sys, json
import nnstep, nnstep.cli, nnstep.importer, nnstep.importer.writer, nnstep.export_torch
sc = nnstep.load_scenario("scenarios/residual-block.toml")
s = nnstep.Session(sc)
s.run()
nnstep.export_torch.script(sc, "x.toml")
from nnstep.cli import main
main(["run", "scenarios/classic.toml"])
print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx'))))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == []


def test_import_without_the_extra_says_how_to_get_it(tmp_path):
    """Run with torch hidden (a meta path finder that refuses it): the error names the extra."""
    code = f"""
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'onnx'):
            raise ImportError('no ' + name)
sys.meta_path.insert(0, NoTorch())
from nnstep.cli import main
sys.exit(main(["import", "m.py:Net", "-o", {str(tmp_path / 'n.toml')!r}, "--input-shape", "2,3"]))
"""
    (tmp_path / "m.py").write_text("class Net: pass\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": os.path.dirname(SRC)})
    assert r.returncode == 2
    assert "pip install 'nnstep[torch]'" in r.stderr, r.stderr
    code2 = code.replace('"m.py:Net"', '"m.onnx"')
    (tmp_path / "m.onnx").write_bytes(b"")
    r = subprocess.run([sys.executable, "-c", code2], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": os.path.dirname(SRC)})
    assert r.returncode == 2 and "pip install 'nnstep[onnx]'" in r.stderr, r.stderr


BN = """
[scenario]
weights = "w.npz"
[data]
x = [[1.0, 2.0], [3.0, 5.0], [0.0, -1.0]]
y = [[0.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
[[layers]]
type = "batchnorm"
name = "bn"
[loss]
type = "mse"
[optimizer]
type = "sgd"
"""


def test_weights_file_starts_batchnorm_running_statistics(tmp_path):
    (tmp_path / "net.toml").write_text(BN)
    np.savez(tmp_path / "w.npz", **{"bn.running_mean": np.array([0.5, -1.0]), "bn.running_var": np.array([2.0, 3.0]),
                                    "bn.num_batches_tracked": np.array(7)})
    sc = nnstep.load_scenario(str(tmp_path / "net.toml"))
    s = nnstep.Session(sc)
    np.testing.assert_array_equal(s.value("bn.running_mean"), [0.5, -1.0])
    s.run()
    x = np.asarray(sc.x)
    np.testing.assert_allclose(s.value("bn.running_mean"), 0.9 * np.array([0.5, -1.0]) + 0.1 * x.mean(axis=0))
    np.testing.assert_allclose(s.value("bn.running_var"), 0.9 * np.array([2.0, 3.0]) + 0.1 * x.var(axis=0, ddof=1))


def test_weights_file_batchnorm_statistics_of_the_wrong_shape(tmp_path):
    (tmp_path / "net.toml").write_text(BN)
    np.savez(tmp_path / "w.npz", **{"bn.running_mean": np.zeros(3)})
    with pytest.raises(nnstep.ScenarioError) as e:
        nnstep.load_scenario(str(tmp_path / "net.toml"))
    assert str(e.value).endswith('scenario.weights: "w.npz": "bn.running_mean" has shape [3], the network needs [2]')
