"""`nnstep new`: every template writes a scenario that loads, runs and checks cleanly."""
from __future__ import annotations

import pytest

from nnstep import templates
from nnstep.cli import main
from nnstep.scenario import load_scenario


def test_list_names_every_template_with_a_description(capsys):
    assert main(["new", "--list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == templates.names()
    assert templates.names()[0] == "mlp" and {"mlp", "classifier", "conv"} <= set(templates.names())
    for line in out:
        assert len(line.split(None, 1)[1]) > 20          # a real one-line description
    assert "(default)" in out[0]


@pytest.mark.parametrize("name", templates.names())
def test_template_loads_runs_and_checks(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["new", "my net.toml", "--template", name]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"wrote my net.toml (template {name})")
    assert "nnstep 'my net.toml'" in out
    text = (tmp_path / "my net.toml").read_text()
    assert "THIS_FILE" not in text and "'my net.toml'" in text
    sc = load_scenario("my net.toml")
    assert sc.name == "my net" and sc.description
    assert main(["check", "my net.toml"]) == 0
    assert main(["run", "my net.toml"]) == 0
    assert main(["gradcheck", "my net.toml"]) == 0
    # the commented [[expect]] is a working example once uncommented
    body = text.replace("# [[expect]]", "[[expect]]")
    body = "\n".join(l[2:] if l.startswith("# ") and any(l[2:].startswith(k) for k in ("step =", "tensor =", "value =", "atol ="))
                     else l for l in body.splitlines())
    (tmp_path / "e.toml").write_text(body)
    capsys.readouterr()
    rc = main(["check", "e.toml"])                      # loads: its tensor and shape are right
    out = capsys.readouterr()
    assert "error" not in out.err
    # the example's value is a placeholder (0.5, atol 1e-9): judged, and failed, never refused
    assert rc == 1 and "FAIL  step 1 " in out.out and "0 passed, 1 failed" in out.out


def test_default_template_and_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["new", "a.toml"]) == 0
    assert (tmp_path / "a.toml").read_text() == templates.render("mlp", "a.toml")
    capsys.readouterr()
    assert main(["new", "b.toml", "--template", "cnn"]) == 2
    assert capsys.readouterr().err == ('nnstep: error: new --template: unknown template "cnn" '
                                       '(expected one of: classifier, conv, mlp)\n')
    assert not (tmp_path / "b.toml").exists()
    assert main(["new"]) == 2
    assert "expected a file name" in capsys.readouterr().err
    (tmp_path / "d").mkdir()
    assert main(["new", "d"]) == 2
    assert capsys.readouterr().err == "nnstep: error: d: is a directory\n"
    assert main(["new", "a.toml", "--force", "--template", "conv"]) == 0
    assert "conv2d" in (tmp_path / "a.toml").read_text()
