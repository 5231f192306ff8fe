"""Writing files atomically: a temporary file in the same folder, then a rename, so an interrupted
write never leaves a half-written file and never destroys what was there.

Every file nnstep writes (`run --save`, `screenshot -o`, `new`) goes through here. On any failure,
including Ctrl-C in the middle, the temporary file is removed and the old file is left as it was.
"""
from __future__ import annotations

import io
import os
import tempfile

import numpy as np

from .errors import ScenarioError


def _umask() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    m = os.umask(0o022)
    os.umask(m)
    return m


def atomic_write_bytes(path: str, data: bytes, overwrite: bool = True) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename. With ``overwrite=False``
    an existing file is never replaced, even one that appears while writing (the final step is a
    hard link, which fails if the name exists)."""
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(d):
        raise ScenarioError(f"no such folder: {d}", file=path)
    if os.path.isdir(path):
        raise ScenarioError("is a directory", file=path)
    if not overwrite and os.path.lexists(path):
        raise ScenarioError("already exists (use --force to overwrite it)", file=path)
    try:
        mode = os.stat(path).st_mode & 0o7777       # keep an existing file's permissions
    except OSError:
        mode = 0o666 & ~_umask()                    # as a plain open() would create it
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=d)
    except OSError as e:
        raise ScenarioError(f"cannot write: {e.strerror or e}", file=path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise ScenarioError("already exists (use --force to overwrite it)", file=path) from None
            except OSError:                         # no hard links here (some network/FAT mounts)
                if os.path.lexists(path):
                    raise ScenarioError("already exists (use --force to overwrite it)", file=path) from None
                os.replace(tmp, path)
            else:
                os.unlink(tmp)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise ScenarioError(f"cannot write: {e.strerror or e}", file=path) from None
        raise


def atomic_write_text(path: str, text: str, overwrite: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


def save_npz(path: str, arrays: dict) -> None:
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    atomic_write_bytes(path, buf.getvalue())


def check_writable(path: str, flag: str) -> None:
    """Whether a file can be written at ``path`` (given with ``flag``), asked before any work: its
    folder exists and may be written in, and ``path`` is no folder. ScenarioError, naming ``flag``."""
    from .scenario.validate import clean
    folder = os.path.dirname(os.path.abspath(path)) or "."
    shown = clean(path)
    if os.path.isdir(path):
        raise ScenarioError(f'"{shown}" is a folder: name a file in it', where=flag)
    if not os.path.isdir(folder):
        raise ScenarioError(f'"{shown}": the folder {clean(folder)} does not exist (create it first)', where=flag)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ScenarioError(f'"{shown}": the folder {clean(folder)} is not writable', where=flag)
