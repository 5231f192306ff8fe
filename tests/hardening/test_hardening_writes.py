"""Issue 6.6: `run --save`, `new` and `screenshot -o` write through a temporary file and a rename;
a failure at any point (rename refused, folder unwritable, an exception or Ctrl-C mid-write) leaves
the old file intact and no temporary file behind."""
from __future__ import annotations

import os
import stat

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
