"""Writing files atomically: a temporary file in the same folder, then a rename, so an interrupted
write never leaves a half-written file and never destroys what was there."""
from __future__ import annotations

import io
import os
import tempfile

import numpy as np

from .errors import ScenarioError


def atomic_write_bytes(path: str, data: bytes) -> None:
    d = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(d):
        raise ScenarioError(f"no such folder: {d}", file=path)
    if os.path.isdir(path):
        raise ScenarioError("is a directory", file=path)
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=d)
    except OSError as e:
        raise ScenarioError(f"cannot write: {e.strerror or e}", file=path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise ScenarioError(f"cannot write: {e.strerror or e}", file=path) from None
        raise


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_npz(path: str, arrays: dict) -> None:
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    atomic_write_bytes(path, buf.getvalue())
