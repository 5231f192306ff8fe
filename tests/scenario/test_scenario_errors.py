"""Issue 6.1 / issue 2: every class of bad input in docs/errors.md gives exit 2, one line
`nnstep: error: <where>: <what>` with the location, and no traceback; and the catalogue in
docs/errors.md shows exactly the message a real run prints."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from hardcases import CASES, Case

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = os.path.join(ROOT, "docs", "errors.md")


def make(case: Case, work, monkeypatch):
    """Lay out the case's files in ``work`` and make it the working directory."""
    work.mkdir()
    for name, content in case.files.items():
        if name.startswith("chmod "):
            continue
        p = work / name.rstrip("/")
        if name.endswith("/"):
            p.mkdir()
        elif callable(content):
            content(str(p))
        elif isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
    for name, mode in case.files.items():
        if name.startswith("chmod "):
            target = work / name[6:]
            os.chmod(target, mode)
            try:                                   # root reads anyway: simulate the denial
                open(target, "rb").close()
                import nnstep.scenario.loader as loader
                real = os.access
                monkeypatch.setattr(loader.os, "access",
                                    lambda p, m, _t=str(target), _r=real: False if os.path.abspath(p) == _t else _r(p, m))
            except PermissionError:
                pass
    if case.toml is not None:
        p = work / "net.toml"
        if isinstance(case.toml, bytes):
            p.write_bytes(case.toml)
        else:
            p.write_text(case.toml)
    monkeypatch.chdir(work)


def within(seconds: int, f, *args):
    """f(*args), failed with TimeoutError after ``seconds`` (a case that hangs, such as a FIFO
    opened for reading, fails instead of stopping the whole test run). SIGALRM interrupts a
    blocking open() too."""
    def timeout(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")
    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(seconds)
    try:
        return f(*args)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def location(case: Case) -> str:
    if case.where:
        return case.where
    return case.message.rsplit(": ", 1)[0].split(": ")[0] if case.message.count(": ") >= 1 else case.message


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_error_case(case, tmp_path, monkeypatch, capsys):
    from nnstep.cli import main

    make(case, tmp_path / "work", monkeypatch)
    rc = within(20, main, list(case.argv))
    out, err = capsys.readouterr()
    assert rc == 2, (out, err)
    assert "Traceback" not in err
    first = err.splitlines()[0]
    assert first.startswith("nnstep: error: ")
    assert first == "nnstep: error: " + case.message
    assert location(case) in first
    # the key path or line:col follows the file name
    if case.message.startswith("net.toml:") and case.id not in ("no-such-file", "directory", "empty-file",
                                                               "binary-file", "not-utf8", "missing-table"):
        assert re.match(r"net\.toml(:\d+:\d+|: [a-z_]+(\[\d+\])*(\.[a-z_]+(\[\d+\])*)*): ", case.message), case.message


def test_catalogue_is_documented_verbatim():
    """docs/errors.md shows each message exactly as the CLI prints it (the test above proves the
    CLI prints it), under an anchor named after the case."""
    doc = open(DOC, encoding="utf-8").read()
    missing = [c.id for c in CASES if "nnstep: error: " + c.message not in doc]
    assert not missing, missing
    anchors = [c.id for c in CASES if f'<a id="{c.id}"></a>' not in doc]
    assert not anchors, anchors


def test_catalogue_covers_issue_6_classes():
    ids = {c.id for c in CASES}
    for need in ("toml-syntax", "unknown-key", "unknown-layer-type", "wrong-type", "negative", "ragged-array",
                 "mixed-array-string", "mixed-array-bool", "weight-shape", "conv-after-linear", "class-index",
                 "bce-target", "missing-data-file", "unreadable-data-file", "not-npz", "npz-objects",
                 "duplicate-layer-name", "unknown-tensor-expect", "unknown-tensor-breakpoint",
                 "malformed-condition", "empty-file", "key-of-other-type"):
        assert need in ids


@pytest.mark.parametrize("case_id", ["toml-syntax", "npz-objects", "limit-random-data", "directory"])
def test_error_through_a_real_process(case_id, tmp_path, monkeypatch):
    """The same through `python -m nnstep`, as a user runs it: stderr is one line (two for argparse)."""
    case = next(c for c in CASES if c.id == case_id)
    make(case, tmp_path / "work", monkeypatch)
    r = subprocess.run([sys.executable, "-m", "nnstep", *case.argv], capture_output=True, text=True,
                       cwd=str(tmp_path / "work"), timeout=60)
    assert r.returncode == 2
    assert r.stderr == "nnstep: error: " + case.message + "\n"
    assert r.stdout == ""


def test_check_reports_bad_file_and_continues(tmp_path, monkeypatch, capsys):
    """`check` over several files: a bad one is reported with its location, the others still run,
    and the exit code is 2."""
    from hardcases import BASE
    from nnstep.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "good.toml").write_text(BASE + '\n[[expect]]\nstep = 0\ntensor = "linear1.bias"\nvalue = [0, 0, 0]\n'
                                               'atol = 10\n')
    (tmp_path / "bad.toml").write_text(BASE.replace("out = 3", "out = 0"))
    rc = main(["check", "bad.toml", "good.toml"])
    out, err = capsys.readouterr()
    assert rc == 2
    assert err == "nnstep: error: bad.toml: layers[0].out: expected a positive integer, got 0\n"
    assert "1 passed, 0 failed" in out


def test_control_characters_never_reach_the_terminal(tmp_path, monkeypatch, capsys):
    """A shared scenario cannot send terminal escape sequences through an error message."""
    from hardcases import BASE
    from nnstep.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.toml").write_text(BASE.replace("lr = 0.1", '"lr\\u001b[2J\\u202e" = 0.1'))
    assert main(["run", "net.toml"]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\u202e" not in err
    assert "optimizer.lr\\x1b[2J\\u202e: unknown key" in err


def test_csv_errors_never_show_file_content(tmp_path, monkeypatch, capsys):
    """A scenario naming a private text file as data learns at most a line and column number."""
    from hardcases import BASE
    from nnstep.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "secret.csv").write_text("1,2\nhunter2,swordfish\n")
    (tmp_path / "net.toml").write_text(BASE.replace("x = [[1.0, 2.0], [3.0, 4.0]]", 'x = { file = "secret.csv" }'))
    assert main(["run", "net.toml"]) == 2
    err = capsys.readouterr().err
    assert "hunter2" not in err and "swordfish" not in err
    assert '"secret.csv" line 2, column 1: not a number' in err


def test_symlink_out_of_the_folder_is_refused(tmp_path, monkeypatch, capsys):
    from hardcases import BASE
    from nnstep.cli import main

    (tmp_path / "outside.csv").write_text("1,2\n3,4\n")
    work = tmp_path / "work"
    work.mkdir()
    os.symlink(tmp_path / "outside.csv", work / "x.csv")
    (work / "sub").mkdir()
    (work / "sub" / "inside.csv").write_text("1,2\n3,4\n")
    monkeypatch.chdir(work)
    (work / "net.toml").write_text(BASE.replace("x = [[1.0, 2.0], [3.0, 4.0]]", 'x = { file = "x.csv" }'))
    assert main(["run", "net.toml"]) == 2
    assert "is outside the scenario's folder" in capsys.readouterr().err
    (work / "net.toml").write_text(BASE.replace("x = [[1.0, 2.0], [3.0, 4.0]]", 'x = { file = "sub/inside.csv" }'))
    assert main(["run", "net.toml"]) == 0


def test_bom_and_crlf_are_accepted(tmp_path, monkeypatch, capsys):
    from hardcases import BASE
    from nnstep.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.toml").write_bytes(b"\xef\xbb\xbf" + BASE.replace("\n", "\r\n").encode())
    assert main(["run", "net.toml"]) == 0


def test_names_shown_on_the_terminal_are_cleaned():
    """A scenario's name, description and condition text are printed by run and the TUI."""
    from hardcases import BASE
    from nnstep.scenario import loads_scenario

    sc = loads_scenario('[scenario]\nname = "a\\u001b]0;pwned\\u0007b"\ndescription = "line 1\\nline\\u001b[2J 2"\n\n'
                        + BASE + '\n[[breakpoints]]\nwhen = "loss max >\\u001c1"\n', path="net.toml")
    assert sc.name == "a\\x1b]0;pwned\\x07b"
    assert sc.description == "line 1\nline\\x1b[2J 2"
    assert "\x1c" not in sc.breakpoints[0].when.text


def test_the_flatten_hint_also_comes_with_a_layer_that_cannot_take_the_shape():
    """A linear after a convolution carries the image's dims on; the first layer that cannot take
    them says so, with the same hint as the targets' check (docs/errors.md#missing-flatten)."""
    from nnstep import loads_scenario
    from nnstep.errors import ScenarioError
    text = ('[data]\nx = { random = "normal", shape = [2, 1, 5, 5] }\ny = [[0.0], [1.0]]\n[[layers]]\ntype = "conv2d"\n'
            'out_channels = 2\nkernel_size = 3\n[[layers]]\ntype = "linear"\nout = 4\n[[layers]]\ntype = "maxpool1d"\n'
            'kernel_size = 2\n[[layers]]\ntype = "flatten"\n[[layers]]\ntype = "linear"\nout = 1\n[loss]\ntype = "mse"\n')
    with pytest.raises(ScenarioError) as e:
        loads_scenario(text)
    assert e.value.where == "layers[2]" and "maxpool1d expects input (N, C, L)" in str(e.value)
    assert str(e.value).endswith('is a flatten missing? layers[1] (linear1) reads layers[0] (conv2d1), per-sample '
                                 'shape [2, 3, 3], and a linear works on the last dim only, so the other dims carry '
                                 'on: add [[layers]] type = "flatten" before it')
    ok = text.replace('[[layers]]\ntype = "linear"\nout = 4\n', '[[layers]]\ntype = "flatten"\n[[layers]]\ntype = "linear"\nout = 4\n', 1)
    with pytest.raises(ScenarioError) as e:          # flattened: no hint (a different mistake remains)
        loads_scenario(ok)
    assert "flatten missing" not in str(e.value)
