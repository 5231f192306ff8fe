"""End-to-end smoke: the published 2-2-2 example through `nnstep run --json`.

Source: Matt Mazur, "A Step by Step Backpropagation Example" (2015): E_total = 0.298371109 and, after
one SGD step with lr 0.5, w5 = 0.35891648 (linear2.weight[0, 0]) and w1 = 0.149780716
(linear1.weight[0, 0]). The contract scenario also updates the biases, which do not affect these
first-step values.
"""
import json
import subprocess
import sys



def test_run_json_matches_published_example():
    import os
    path = os.path.join(os.path.dirname(__file__), "..", "src", "nnstep", "demo", "classic.toml")
    r = subprocess.run([sys.executable, "-m", "nnstep", "run", path, "--json", "--steps", "1"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    s1 = d["steps"][0]
    assert abs(s1["loss"] - 0.298371109) < 1e-9
    assert abs(s1["params"]["linear2.weight"][0][0] - 0.35891648) < 1e-8
    assert abs(s1["params"]["linear1.weight"][0][0] - 0.149780716) < 1e-9


def test_bundled_demo_is_the_classic_lesson():
    """`nnstep` alone opens the packaged demo; it must stay the same file as scenarios/classic.toml,
    whose expectations CI checks."""
    import os
    from nnstep.cli import demo_path
    root = os.path.join(os.path.dirname(__file__), "..")
    with open(demo_path(), "rb") as a, open(os.path.join(root, "scenarios", "classic.toml"), "rb") as b:
        assert a.read() == b.read()
