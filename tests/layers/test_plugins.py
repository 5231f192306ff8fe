"""A user's own layer types (``--layers``, docs/layers.md): the worked example steps, checks and
exports; a scenario never names code; and everything a user's file can get wrong is one located
line, exit 2, never a traceback: raising at import, no layer class, replacing a built-in type,
forward or backward raising or returning a wrong shape, a shape rule returning nonsense. A wrong
backward fails gradcheck, which names the parameter."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import nnstep
from nnstep.cli import main
from nnstep.layers import plugins, registry

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SWISH_PY = os.path.join(ROOT, "examples", "layers", "swish.py")
SWISH_TOML = os.path.join(ROOT, "examples", "layers", "swish.toml")


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


# --- the worked example ------------------------------------------------------------------------------
def test_the_example_passes_gradcheck_and_its_expectations(capsys):
    rc, out, err = run(capsys, "gradcheck", SWISH_TOML, "--layers", SWISH_PY)
    assert rc == 0, out + err
    assert "swish1.beta" in out and "5 of 5 parameters within tolerance" in out
    rc, out, err = run(capsys, "check", SWISH_TOML, "--layers", SWISH_PY)
    assert rc == 0 and "3 passed, 0 failed" in out, out + err


def test_the_example_runs_and_explains_with_its_rules(capsys):
    rc, out, err = run(capsys, "run", SWISH_TOML, "--layers", SWISH_PY)
    assert rc == 0 and "     3 " in out, err
    rc, out, err = run(capsys, "explain", SWISH_TOML, "swish1.beta.grad[0]", "--layers", SWISH_PY)
    assert rc == 0 and "(backward swish1: Σ over the batch)" in out
    assert "✓ the numbers shown combine to the engine's value on every line" in out
    rc, out, err = run(capsys, "explain", SWISH_TOML, "linear1.weight.grad[0, 0]", "--layers", SWISH_PY)
    assert rc == 0 and "element-wise: upstream × ∂out/∂x" in out and "✓" in out
    rc, out, err = run(capsys, "explain", SWISH_TOML, "swish1.out[0, 1]", "--layers", SWISH_PY)
    assert rc == 0 and "σ(swish1.beta[1] · linear1.out[0, 1])" in out


def test_the_python_api_takes_the_files_too():
    sc = nnstep.load_scenario(SWISH_TOML, layers=[SWISH_PY])
    s = nnstep.Session(sc)
    s.run()
    assert s.at_end
    assert sc.layers[1].type == "swish" and sc.initial["swish1.beta"].tolist() == [1.0, 0.5]


def test_the_example_is_written_for_torch_and_agrees(tmp_path, capsys):
    pytest.importorskip("torch")
    ref = tmp_path / "ref.py"
    rc, out, err = run(capsys, "export", SWISH_TOML, "--torch", "-o", str(ref), "--layers", SWISH_PY)
    assert rc == 0, err
    assert "class Swish(nn.Module):" in ref.read_text()
    theirs = json.loads(subprocess.run([sys.executable, str(ref)], capture_output=True, text=True, check=True).stdout)
    rc, out, err = run(capsys, "run", SWISH_TOML, "--json", "--layers", SWISH_PY)
    ours = json.loads(out)
    for a, b in zip(ours["steps"], theirs["steps"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-12)
        for k in a["grads"]:
            np.testing.assert_allclose(a["grads"][k], b["grads"][k], rtol=1e-10, atol=1e-14)


def test_the_debugger_shows_its_formula(tmp_path, capsys):
    """`nnstep screenshot ... --layers`: the backward op of the user's layer, its formula on screen."""
    svg = tmp_path / "s.svg"
    rc, out, err = run(capsys, "screenshot", SWISH_TOML, "--layers", SWISH_PY, "--keys", "n n n n n n n",
                       "--size", "120x40", "-o", str(svg))
    assert rc == 0, err
    import html
    import re
    text = html.unescape("".join(re.findall(r">([^<>]+)</text>", svg.read_text()))).replace("\xa0", " ")
    assert "backward swish1" in text
    assert "s = σ([1, 0.5] ⊙ linear1.out)" in text.replace(" ", " ")


# --- a scenario never names code ---------------------------------------------------------------------
def test_an_unknown_type_without_layers_is_a_located_error_with_the_hint(capsys):
    rc, out, err = run(capsys, "run", SWISH_TOML)
    assert rc == 2
    assert err.startswith(f"nnstep: error: {SWISH_TOML}: layers[1].type: unknown value \"swish\"")
    assert "--layers FILE.py (docs/layers.md)" in err


def test_a_typo_of_a_builtin_type_keeps_its_hint():
    with pytest.raises(nnstep.ScenarioError) as e:
        nnstep.loads_scenario('[data]\nx = [[1.0]]\ny = [[1.0]]\n[[layers]]\ntype = "sigmod"\n[loss]\ntype = "mse"\n',
                              path="net.toml")
    assert str(e.value) == 'net.toml: layers[0].type: unknown value "sigmod" (did you mean "sigmoid"?)'


# --- what a user's file can get wrong ----------------------------------------------------------------
SCENARIO = """
[data]
x = [[0.5, -1.0, 2.0], [1.5, 0.25, -0.5], [-1.0, 2.0, 0.75], [0.0, -0.5, 1.0]]
y = [[0.25], [-0.5], [1.0], [0.5]]
[[layers]]
type = "linear"
out = 2
[[layers]]
type = "{type}"
[[layers]]
type = "linear"
out = 1
[loss]
type = "mse"
"""


def plugin(tmp_path, body: str, type_: str = "myswish", name: str = "mylayers.py"):
    """A user's layer file and a scenario that uses its type; (file, scenario) paths."""
    py = tmp_path / name
    py.write_text(textwrap.dedent(body))
    toml = tmp_path / "net.toml"
    toml.write_text(SCENARIO.format(type=type_))
    return str(py), str(toml)


SWISH_BODY = open(SWISH_PY, encoding="utf-8").read().replace('type = "swish"', 'type = "myswish"')


def test_a_wrong_backward_fails_gradcheck_naming_the_parameter(tmp_path, capsys):
    py, toml = plugin(tmp_path, SWISH_BODY.replace("dbeta = (g * x * x * d)", "dbeta = (g * x * d)"))
    rc, out, err = run(capsys, "gradcheck", toml, "--layers", py)
    assert rc == 1
    bad = [line for line in out.splitlines() if line.rstrip().endswith("FAIL")]
    assert [line.split()[0] for line in bad] == ["myswish1.beta"], out


def test_a_wrong_grad_in_fails_the_parameters_below_it(tmp_path, capsys):
    py, toml = plugin(tmp_path, SWISH_BODY.replace("grad_in = g * (s + b * x * d)", "grad_in = g * s"))
    rc, out, err = run(capsys, "gradcheck", toml, "--layers", py)
    assert rc == 1
    bad = {line.split()[0] for line in out.splitlines() if line.rstrip().endswith("FAIL")}
    assert bad == {"linear1.weight", "linear1.bias"}, out


def test_the_docs_gradcheck_table_is_what_gradcheck_prints(tmp_path, capsys):
    """docs/layers.md shows gradcheck on the example with grad_in = g * s: that very table."""
    wrong = tmp_path / "swish_wrong.py"
    wrong.write_text(open(SWISH_PY, encoding="utf-8").read().replace("grad_in = g * (s + b * x * d)", "grad_in = g * s"))
    rc, out, err = run(capsys, "gradcheck", SWISH_TOML, "--layers", str(wrong))
    assert rc == 1
    doc = open(os.path.join(ROOT, "docs", "layers.md"), encoding="utf-8").read()
    block = doc.split("$ nnstep gradcheck examples/layers/swish.toml --layers swish_wrong.py\n", 1)[1].split("```")[0]
    assert block.strip() and block in out, out


def test_the_docs_explain_lines_are_what_explain_prints(capsys):
    rc, out, err = run(capsys, "explain", SWISH_TOML, "swish1.out[0, 1]", "--layers", SWISH_PY)
    assert rc == 0
    doc = open(os.path.join(ROOT, "docs", "layers.md"), encoding="utf-8").read()
    block = doc.split('$ nnstep explain examples/layers/swish.toml "swish1.out[0, 1]" --layers '
                      'examples/layers/swish.py\n', 1)[1].split("```")[0]
    assert block.strip() and block in out, out


def test_a_file_that_raises_at_import_is_a_located_error(tmp_path, capsys):
    py, toml = plugin(tmp_path, "x = 1\nfrom nnstep.layers import Layer\nraise_here = undefined_name\n")
    rc, out, err = run(capsys, "run", toml, "--layers", py)
    assert rc == 2
    assert err == f"nnstep: error: {py}: line 3: importing it raised NameError: name 'undefined_name' is not defined\n"


def test_a_syntax_error_names_its_line(tmp_path, capsys):
    py, toml = plugin(tmp_path, "from nnstep.layers import Layer\n\nclass Bad(Layer:\n    pass\n")
    rc, out, err = run(capsys, "run", toml, "--layers", py)
    assert rc == 2 and err.startswith(f"nnstep: error: {py}: line 3: SyntaxError: "), err


def test_a_file_without_layer_types_and_a_missing_file(tmp_path, capsys):
    py, toml = plugin(tmp_path, "import numpy\nSWISH = 1\n")
    rc, out, err = run(capsys, "run", toml, "--layers", py)
    assert rc == 2 and err == (f"nnstep: error: {py}: defines no layer type: a class of its own that subclasses "
                               "nnstep.layers.Layer and sets type = \"...\" (docs/layers.md)\n")
    rc, out, err = run(capsys, "run", toml, "--layers", str(tmp_path / "nope.py"))
    assert rc == 2 and "nope.py: no such file" in err


def test_a_builtin_type_is_never_replaced(tmp_path, capsys):
    py, toml = plugin(tmp_path, SWISH_BODY.replace('type = "myswish"', 'type = "relu"').replace("class Swish", "class Relu"),
                      type_="relu")
    rc, out, err = run(capsys, "run", toml, "--layers", py)
    assert rc == 2
    assert err == (f"nnstep: error: {py}: Relu.type: \"relu\" is one of nnstep's own layer types, and a layer of your "
                   "own may not replace it: give yours a type of its own\n")
    assert registry.layer_type("relu").__module__ == "nnstep.layers.activations"


def test_one_type_from_two_files_is_refused(tmp_path, capsys):
    py, toml = plugin(tmp_path, SWISH_BODY)
    other = tmp_path / "other.py"
    other.write_text(SWISH_BODY)
    rc, out, err = run(capsys, "run", toml, "--layers", py, "--layers", str(other))
    assert rc == 2 and f"{other}: Swish.type: \"myswish\" is registered already, by Swish from {py}" in err


def test_a_forward_that_raises_is_a_located_error(tmp_path, capsys):
    py, toml = plugin(tmp_path, SWISH_BODY.replace("s = sigmoid(P[\"beta\"] * x)", "s = sigmoid(P[\"beta\"] * x[:, :1].T)"))
    rc, out, err = run(capsys, "run", toml, "--layers", py)
    assert rc == 2
    assert err.startswith(f"nnstep: error: {py}: Swish.forward: raised ValueError: operands could not be broadcast")
    assert err.rstrip().endswith(")") and "(line " in err


def test_a_backward_returning_a_wrong_shape_is_named(tmp_path, capsys):
    """The message of docs/layers.md: which method, which value, its shape and the one expected."""
    py, toml = plugin(tmp_path, SWISH_BODY.replace("grad_in = g * (s + b * x * d)", "grad_in = g @ np.ones((2, 3))"))
    rc, out, err = run(capsys, "run", toml, "--layers", py)
    assert rc == 2
    assert err == f"nnstep: error: {py}: Swish.backward: returned grad_in of shape [4, 3], expected [4, 2]\n"


def test_a_forward_in_the_wrong_dtype_and_a_missing_gradient(tmp_path, capsys):
    py, toml = plugin(tmp_path, SWISH_BODY.replace("return x * s, {}, {}", "return (x * s).astype(np.float32), {}, {}"))
    rc, out, err = run(capsys, "run", toml, "--layers", py)
    assert rc == 2 and err.endswith("Swish.forward: returned out of dtype float32, expected float64 (the scenario's dtype)\n")
    plugins._loaded.clear()
    registry.remove("myswish")
    py, toml = plugin(tmp_path, SWISH_BODY.replace('return grad_in, {"beta": dbeta}, None', "return grad_in, {}, None"),
                      name="second.py")
    rc, out, err = run(capsys, "run", toml, "--layers", py)
    assert rc == 2 and err.endswith("Swish.backward: returned no gradient for its parameter 'beta'\n"), err


def test_a_shape_rule_returning_nonsense_is_named(tmp_path, capsys):
    py, toml = plugin(tmp_path, SWISH_BODY.replace('return s, {"beta": (s[-1],)}', 'return s, {"gamma": (2,)}'))
    rc, out, err = run(capsys, "run", toml, "--layers", py)
    assert rc == 2 and f"{py}: Swish.shapes: returned (" in err and "expected (out_shape, {param: shape})" in err


def test_the_debugger_reports_a_broken_layer_before_any_screen(tmp_path):
    """tui and screenshot run step 1 once first: a backward that raises is exit 2, one line."""
    py, toml = plugin(tmp_path, SWISH_BODY.replace("grad_in = g * (s + b * x * d)", "grad_in = g * missing_name"))
    r = subprocess.run([sys.executable, "-m", "nnstep", "screenshot", toml, "--layers", py, "-o",
                        str(tmp_path / "s.svg")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.startswith(f"nnstep: error: {py}: Swish.backward: raised NameError: name 'missing_name' is not "
                               "defined (line ")
    assert "Traceback" not in r.stderr and not (tmp_path / "s.svg").exists()


def test_explain_without_element_rules_says_so(tmp_path, capsys):
    body = SWISH_BODY.replace("    def value_rule(self, name, idx, V):", "    def _value_rule(self, name, idx, V):")
    body = body.replace("    def grad_rule(self, wrt, idx, V):", "    def _grad_rule(self, wrt, idx, V):")
    py, toml = plugin(tmp_path, body)
    rc, out, err = run(capsys, "explain", toml, "myswish1.beta.grad[0]", "--layers", py)
    assert rc == 1, err                        # nothing could be checked
    assert "myswish1 (myswish) has no element rule for this gradient (its class's grad_rule: docs/layers.md)" in out
    rc, out, err = run(capsys, "explain", toml, "myswish1.out[0, 0]", "--layers", py)
    assert rc == 0 and "myswish1.out = linear1.out ⊙ σ(myswish1.beta ⊙ linear1.out)" in out


def test_the_example_files_are_what_the_docs_show():
    """docs/layers.md quotes the example's class: every line it quotes is in the file as written."""
    doc = open(os.path.join(ROOT, "docs", "layers.md"), encoding="utf-8").read()
    src = open(SWISH_PY, encoding="utf-8").read()
    blocks = [b.split("```", 1)[0] for b in doc.split("```python")[1:]]
    assert len(blocks) >= 4
    for block in blocks:
        if "def numeric(" in block:            # the recipe for a test of one's own, not the example
            continue
        for line in block.strip("\n").split("\n"):
            if line.strip() and line.strip() != "...":
                assert line in src, line


def test_serve_passes_the_files_to_every_session():
    from nnstep.serve import tui_argv
    argv = tui_argv("net.toml", layers=["mine.py"])
    assert argv[-2:] == ["--layers", os.path.abspath("mine.py")]


def test_every_command_that_reads_a_scenario_takes_layers():
    from nnstep.cli import COMMANDS, build_parser
    for c in COMMANDS:
        if c in ("new", "import"):           # they write a scenario (import maps to built-in types only)
            continue
        assert "--layers" in build_parser(c).commands[c].format_help(), c
