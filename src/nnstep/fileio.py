"""Writing files atomically: a temporary file in the same folder, then a rename, so an interrupted
write never leaves a half-written file and never destroys what was there.

Every file nnstep writes (`run --save`, `screenshot -o`, `new`) goes through here. On any failure,
including Ctrl-C in the middle, the temporary file is removed and the old file is left as it was.
"""
from __future__ import annotations

import contextlib
import io
import os
import signal
import tempfile

import numpy as np

from .errors import ScenarioError, Terminated


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


def _folder(path: str) -> str:
    """The folder ``path`` would be written in; ScenarioError (located at ``path``) unless it is an
    existing folder and ``path`` itself is not one."""
    d = os.path.dirname(path)
    if not os.path.exists(d or "."):
        raise ScenarioError(f'no such folder "{d}"', file=path)
    if not os.path.isdir(d or "."):
        raise ScenarioError(f'"{d}" is not a folder', file=path)
    if os.path.isdir(path):
        raise ScenarioError("is a directory", file=path)
    return d or "."


def check_output(path: str, flag: str, what: str, example: str, inputs=()) -> None:
    """An output flag's file, checked before any work is done for it (a bad --save was reported
    only after the whole run): its folder exists, is a folder and may be written in; it is not a
    folder itself; and it is none of the files the run reads, ``inputs`` ((what, path) pairs:
    Scenario.inputs), compared by real path so that a symlink or ./ hides none (and by inode, a
    hard link). ``what`` and ``example`` make the hint: "write the parameters to another file
    (--save trained.npz)"."""
    path = os.fspath(path)
    d = _folder(path)
    real = os.path.realpath(path)
    for desc, p in inputs:
        if os.path.realpath(p) == real or (os.path.exists(path) and os.path.exists(p) and os.path.samefile(path, p)):
            from .scenario.validate import _show
            raise ScenarioError(f"{_show(path)} is {desc}: write {what} to another file ({flag} {example})", where=flag)
    if not os.access(d, os.W_OK | os.X_OK):
        raise ScenarioError(f'cannot write in folder "{d}": permission denied', file=path)


def _terminated(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def _sigterm_raises():
    """While a temporary file exists, SIGTERM raises Terminated where the program is, as SIGINT
    raises KeyboardInterrupt, so the cleanup below runs: its default action ends the process on
    the spot, and a 72 MB .tmp was left behind once in six tries. Python runs signal handlers in
    the main thread only; elsewhere nothing changes."""
    try:
        old = signal.signal(signal.SIGTERM, _terminated)
    except ValueError:                              # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if old is None else old)


@contextlib.contextmanager
def _sigterm_held():
    """SIGTERM held back (delivered when this ends), where an exception would leave a file
    unnamed."""
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    except (AttributeError, ValueError, OSError):   # no pthread_sigmask here
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def atomic_write_bytes(path: str, data: bytes, overwrite: bool = True) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename. With ``overwrite=False``
    an existing file is never replaced, even one that appears while writing (the final step is a
    hard link, which fails if the name exists)."""
    path = os.fspath(path)
    d = _folder(path)
    if not overwrite and os.path.lexists(path):
        raise ScenarioError("already exists (use --force to overwrite it)", file=path)
    try:
        mode = os.stat(path).st_mode & 0o7777       # keep an existing file's permissions
    except OSError:
        mode = 0o666 & ~_umask()                    # as a plain open() would create it
    tmp = None
    with _sigterm_raises():
        try:
            with _sigterm_held():                   # not between creating the file and knowing its name
                fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=d)
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
                if tmp is not None:
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

