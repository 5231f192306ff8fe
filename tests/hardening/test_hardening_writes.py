"""Issue 6.6: `run --save`, `new` and `screenshot -o` write through a temporary file and a rename;
a failure at any point (rename refused, folder unwritable, an exception or Ctrl-C mid-write) leaves
the old file intact and no temporary file behind."""
from __future__ import annotations

import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from hardcases import BASE
from nnstep import fileio
from nnstep.cli import main
from nnstep.errors import ScenarioError


def leftovers(folder) -> list[str]:
    return sorted(f for f in os.listdir(folder) if f.endswith(".tmp"))


def fail_replace(monkeypatch):
    def boom(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(fileio.os, "replace", boom)


# --- fileio itself ---------------------------------------------------------------------------------
def test_write_replaces_and_keeps_permissions(tmp_path):
    p = tmp_path / "f.txt"
    p.write_text("old")
    os.chmod(p, 0o640)
    fileio.atomic_write_text(str(p), "new")
    assert p.read_text() == "new"
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o640
    assert leftovers(tmp_path) == []


def test_new_file_gets_umask_permissions(tmp_path):
    old = os.umask(0o027)
    try:
        fileio.atomic_write_text(str(tmp_path / "g.txt"), "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "g.txt").st_mode) == 0o640    # 0o666 & ~0o027


def test_rename_failure_keeps_old_file(tmp_path, monkeypatch):
    p = tmp_path / "f.txt"
    p.write_text("old")
    fail_replace(monkeypatch)
    with pytest.raises(ScenarioError) as e:
        fileio.atomic_write_text(str(p), "new")
    assert str(e.value) == f"{p}: cannot write: No space left on device"
    assert p.read_text() == "old"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_exception_mid_write_keeps_old_file(tmp_path, monkeypatch, exc):
    p = tmp_path / "f.txt"
    p.write_text("old")

    def interrupted(fd):
        raise exc()
    monkeypatch.setattr(fileio.os, "fsync", interrupted)
    with pytest.raises(exc):
        fileio.atomic_write_text(str(p), "new" * 100000)
    assert p.read_text() == "old"
    assert leftovers(tmp_path) == []


def test_unwritable_folder(tmp_path, monkeypatch):
    d = tmp_path / "ro"
    d.mkdir()
    (d / "f.txt").write_text("old")
    os.chmod(d, 0o555)
    try:
        if os.access(d, os.W_OK):                 # root writes anyway: simulate the refusal
            def denied(*a, **k):
                raise PermissionError(13, "Permission denied")
            monkeypatch.setattr(fileio.tempfile, "mkstemp", denied)
        with pytest.raises(ScenarioError) as e:
            fileio.atomic_write_text(str(d / "f.txt"), "new")
        assert str(e.value).endswith("cannot write: Permission denied")
        assert (d / "f.txt").read_text() == "old"
        assert leftovers(d) == []
    finally:
        os.chmod(d, 0o755)


def test_no_overwrite_even_if_the_file_appears_during_the_write(tmp_path, monkeypatch):
    p = tmp_path / "f.txt"
    real = os.fsync

    def someone_else_writes(fd):
        real(fd)
        p.write_text("theirs")
    monkeypatch.setattr(fileio.os, "fsync", someone_else_writes)
    with pytest.raises(ScenarioError, match="already exists"):
        fileio.atomic_write_text(str(p), "mine", overwrite=False)
    assert p.read_text() == "theirs"
    assert leftovers(tmp_path) == []


def test_missing_folder_and_directory_target(tmp_path):
    with pytest.raises(ScenarioError, match="no such folder"):
        fileio.atomic_write_text(str(tmp_path / "nope" / "f.txt"), "x")
    with pytest.raises(ScenarioError, match="is a directory"):
        fileio.atomic_write_text(str(tmp_path), "x")


# --- through the commands --------------------------------------------------------------------------
def test_run_save_failure_keeps_old_weights(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.toml").write_text(BASE)
    assert main(["run", "net.toml", "--save", "w.npz"]) == 0
    before = (tmp_path / "w.npz").read_bytes()
    with np.load(tmp_path / "w.npz") as z:
        assert sorted(z.files) == ["linear1.bias", "linear1.weight", "linear2.bias", "linear2.weight"]
    capsys.readouterr()
    fail_replace(monkeypatch)
    (tmp_path / "net.toml").write_text(BASE.replace("lr = 0.1", "lr = 0.5"))
    assert main(["run", "net.toml", "--save", "w.npz"]) == 2
    err = capsys.readouterr().err
    assert err == "nnstep: error: w.npz: cannot write: No space left on device\n"
    assert (tmp_path / "w.npz").read_bytes() == before
    assert leftovers(tmp_path) == []


def test_run_save_into_missing_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.toml").write_text(BASE)
    assert main(["run", "net.toml", "--save", "nope/w.npz"]) == 2
    assert capsys.readouterr().err.startswith("nnstep: error: nope/w.npz: no such folder")


def test_new_force_failure_keeps_old_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.toml").write_text("# mine\n")
    assert main(["new", "net.toml"]) == 2
    assert capsys.readouterr().err == "nnstep: error: net.toml: already exists (use --force to overwrite it)\n"
    fail_replace(monkeypatch)
    assert main(["new", "net.toml", "--force"]) == 2
    assert (tmp_path / "net.toml").read_text() == "# mine\n"
    assert leftovers(tmp_path) == []


def test_screenshot_failure_keeps_old_file(tmp_path, monkeypatch, capsys):
    pytest.importorskip("nnstep.tui.launch")
    from nnstep.cli import demo_path

    monkeypatch.chdir(tmp_path)
    (tmp_path / "shot.svg").write_text("<svg>old</svg>")
    fail_replace(monkeypatch)
    assert main(["screenshot", demo_path(), "-o", "shot.svg"]) == 2
    assert "nnstep: error: shot.svg: cannot write: No space left on device" in capsys.readouterr().err
    assert (tmp_path / "shot.svg").read_text() == "<svg>old</svg>"
    assert leftovers(tmp_path) == []


# --- issue 29: nothing the user had is lost -----------------------------------------------------------
NAN = BASE.replace("lr = 0.1", "lr = 1e308")                     # the first update overflows: a NaN/Inf stop
WHEN = BASE + '\n[[breakpoints]]\nwhen = "loss max > 0"\n'       # a `when` breakpoint that holds at once


@pytest.mark.parametrize("text,json", [(NAN, False), (NAN, True), (WHEN, False)], ids=["nonfinite", "json", "when"])
def test_a_stopped_run_writes_nothing_to_save(tmp_path, monkeypatch, capsys, text, json):
    """A run that stops (NaN/Inf, or a `when` breakpoint) replaced old.npz with parameters holding
    Inf, which `weights =` then refused: it writes nothing, says so in one line, and exits 1."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.toml").write_text(text)
    np.savez(tmp_path / "old.npz", **{"linear1.weight": np.ones((3, 2))})
    before = (tmp_path / "old.npz").read_bytes()
    assert main(["run", "net.toml", "--save", "old.npz"] + (["--json"] if json else [])) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("nnstep: stopped at step 1")
    assert err[1:] == ["nnstep: --save: nothing written to old.npz, since the run stopped before its end"]
    assert (tmp_path / "old.npz").read_bytes() == before
    assert leftovers(tmp_path) == []


def test_the_stopped_run_is_documented():
    doc = open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "errors.md"), encoding="utf-8").read()
    assert "nnstep: --save: nothing written to old.npz, since the run stopped before its end" in doc


def test_save_is_checked_before_the_run(tmp_path):
    """--save nosuchdir/x.npz was reported after the whole run: here 10,000,000 steps, refused at
    once (a generous bound: the run itself would take hours)."""
    (tmp_path / "net.toml").write_text(BASE + "\n[train]\nsteps = 10000000\n")
    r = subprocess.run([sys.executable, "-m", "nnstep", "run", "net.toml", "--save", "nosuchdir/x.npz"],
                       cwd=str(tmp_path), capture_output=True, text=True, timeout=30)
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == 'nnstep: error: nosuchdir/x.npz: no such folder "nosuchdir"\n'


def test_an_unwritable_folder_is_refused_before_the_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.toml").write_text(BASE)
    (tmp_path / "ro").mkdir()
    os.chmod(tmp_path / "ro", 0o555)
    real = os.access                                  # root writes anyway: simulate the refusal
    monkeypatch.setattr(fileio.os, "access", lambda p, m: False if os.path.basename(os.path.abspath(p)) == "ro"
                        else real(p, m))
    try:
        assert main(["run", "net.toml", "--save", "ro/w.npz"]) == 2
    finally:
        os.chmod(tmp_path / "ro", 0o755)
    out, err = capsys.readouterr()
    assert out == "" and err == 'nnstep: error: ro/w.npz: cannot write in folder "ro": permission denied\n'


def _inputs_case(tmp_path):
    """A scenario reading d.npz as data and w.npz as weights, in a folder that also holds a
    symlink and a hard link to each file."""
    (tmp_path / "sub").mkdir()
    np.savez(tmp_path / "d.npz", x=np.array([[1.0, 2.0], [3.0, 4.0]]))
    np.savez(tmp_path / "w.npz", **{"linear2.bias": np.zeros(1)})
    (tmp_path / "net.toml").write_text('[scenario]\nweights = "w.npz"\n\n'
                                       + BASE.replace("x = [[1.0, 2.0], [3.0, 4.0]]", 'x = { file = "d.npz" }'))
    for f in ("net.toml", "d.npz", "w.npz"):
        os.symlink(tmp_path / f, tmp_path / f"sym-{f}")
        os.link(tmp_path / f, tmp_path / f"hard-{f}")


@pytest.mark.parametrize("out,what", [
    ("net.toml", "the scenario itself"), ("./sub/../net.toml", "the scenario itself"),
    ("sym-net.toml", "the scenario itself"), ("hard-net.toml", "the scenario itself"),
    ("d.npz", "the scenario's data file (data.x.file)"), ("sym-d.npz", "the scenario's data file (data.x.file)"),
    ("hard-d.npz", "the scenario's data file (data.x.file)"),
    ("w.npz", "the scenario's weights file (scenario.weights)"),
    ("sym-w.npz", "the scenario's weights file (scenario.weights)")])
@pytest.mark.parametrize("command", ["run", "screenshot", "export"])
def test_an_output_is_none_of_the_inputs(tmp_path, monkeypatch, capsys, out, what, command):
    """run --save, screenshot -o and export -o overwrote the scenario (or its data, or its
    weights); any spelling of an input, by its real path or its inode, is refused before anything
    is written."""
    monkeypatch.chdir(tmp_path)
    _inputs_case(tmp_path)
    before = {f: (tmp_path / f).read_bytes() for f in ("net.toml", "d.npz", "w.npz")}
    argv = {"run": ["run", "net.toml", "--save", out], "screenshot": ["screenshot", "net.toml", "-o", out],
            "export": ["export", "net.toml", "--torch", "-o", out]}[command]
    flag = "--save" if command == "run" else "-o"
    thing = {"run": "the parameters", "screenshot": "the screenshot", "export": "the script"}[command]
    example = {"run": "trained.npz", "screenshot": "shot.svg", "export": "ref.py"}[command]
    assert main(argv) == 2
    assert capsys.readouterr().err == (f'nnstep: error: {flag}: "{out}" is {what}: write {thing} to another file '
                                       f"({flag} {example})\n")
    assert {f: (tmp_path / f).read_bytes() for f in before} == before
    assert leftovers(tmp_path) == []


def test_export_arrays_beside_the_script_are_no_input(tmp_path, monkeypatch, capsys):
    """A large scenario's export writes its arrays beside the script, named after it: that file
    is checked as the script is."""
    from nnstep.export_torch import INLINE_LIMIT

    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "ref.arrays.npz", x=np.ones((INLINE_LIMIT, 2)), y=np.ones((INLINE_LIMIT, 1)))
    (tmp_path / "net.toml").write_text(BASE.replace("x = [[1.0, 2.0], [3.0, 4.0]]", 'x = { file = "ref.arrays.npz" }')
                                       .replace("y = [[1.0], [2.0]]", 'y = { file = "ref.arrays.npz" }'))
    assert main(["export", "net.toml", "--torch", "-o", "ref.py"]) == 2
    assert capsys.readouterr().err.startswith('nnstep: error: -o: "ref.arrays.npz" is the scenario\'s data file')
    assert not (tmp_path / "ref.py").exists()


def test_sigterm_during_a_save_leaves_no_temporary_file(tmp_path):
    """SIGTERM's default action ends the process at once: a 72 MB .tmp was left behind once in six
    tries. Here it arrives while the file is being written (os.fsync sends it to the process
    itself): the temporary file is removed as on Ctrl-C, the old file is kept, exit 143."""
    (tmp_path / "net.toml").write_text(BASE)
    (tmp_path / "w.npz").write_bytes(b"old")
    code = ("import os, signal, sys\n"
            "real = os.fsync\n"
            "def fsync(fd):\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    real(fd)\n"
            "os.fsync = fsync\n"
            "from nnstep.cli import main\n"
            "sys.exit(main(['run', 'net.toml', '--save', 'w.npz']))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
    assert r.returncode == 143, (r.returncode, r.stderr)
    assert r.stderr == "nnstep: terminated\n"
    assert (tmp_path / "w.npz").read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_screenshot_refuses_unknown_keys_before_writing(tmp_path, monkeypatch, capsys):
    """--keys "nonsense ctrl+zz" was pressed as two keys no binding has, and the SVG replaced. The
    check is Textual's knowledge of key names; every key of the app's own bindings passes it."""
    pytest.importorskip("nnstep.tui.launch")
    from nnstep.tui.app import NnstepApp
    from nnstep.tui.launch import known_key, parse_keys

    assert [k for b in NnstepApp.BINDINGS for k in b.key.split(",") if not known_key(k)] == []
    assert parse_keys("n n s S ? + - space enter esc ctrl+p shift+tab f5 up full_stop wait:50") == [
        "n", "n", "s", "S", "question_mark", "plus", "minus", "space", "enter", "escape", "ctrl+p", "shift+tab",
        "f5", "up", "full_stop", "wait:50"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.toml").write_text(BASE)
    (tmp_path / "shot.svg").write_text("<svg>old</svg>")
    for keys, bad in (("n ctrl+zz", "ctrl+zz"), ("zz", "zz"), ("ctrl+", "ctrl+"), ("wait:soon", "wait:soon")):
        assert main(["screenshot", "net.toml", "--keys", keys, "-o", "shot.svg"]) == 2
        assert capsys.readouterr().err.startswith(f'nnstep: error: --keys: unknown key "{bad}": ')
    assert (tmp_path / "shot.svg").read_text() == "<svg>old</svg>"
