"""`nnstep new`: starter scenarios from the templates in this folder (one `<name>.toml` each).

A template is a complete, checked scenario; its `[scenario].description` is the one-line summary
that `nnstep new --list` prints. The file is written atomically and never over an existing file
unless `--force` is given.
"""
from __future__ import annotations

import os
import shlex
import sys
import tomllib

from ..errors import ScenarioError, did_you_mean

DEFAULT = "mlp"
_DIR = os.path.dirname(os.path.abspath(__file__))


def names() -> list[str]:
    """Template names, the default first."""
    found = sorted(f[:-5] for f in os.listdir(_DIR) if f.endswith(".toml"))
    return sorted(found, key=lambda n: (n != DEFAULT, n))


def text(name: str) -> str:
    if name not in names():
        raise ScenarioError(f'unknown template "{name}"{did_you_mean(name, names())}', where="new --template")
    with open(os.path.join(_DIR, name + ".toml"), encoding="utf-8") as f:
        return f.read()


def description(name: str) -> str:
    return tomllib.loads(text(name)).get("scenario", {}).get("description", "")


def render(name: str, path: str) -> str:
    """The template's text for a file written at ``path``: the commands in its header name it."""
    return text(name).replace("THIS_FILE", shlex.quote(os.path.basename(path)))


def cmd_new(file: str | None, template: str | None, force: bool, list_: bool) -> int:
    from ..fileio import atomic_write_text

    if list_:
        w = max(len(n) for n in names())
        for n in names():
            tag = " (default)" if n == DEFAULT else ""
            sys.stdout.write(f"{n:<{w}}  {description(n)}{tag}\n")
        return 0
    if not file:
        raise ScenarioError("expected a file name to write, as in: nnstep new net.toml", where="new")
    name = template or DEFAULT
    body = render(name, file)
    atomic_write_text(file, body, overwrite=force)
    q = shlex.quote(file)
    sys.stdout.write(f"wrote {file} (template {name})\n"
                     f"  step through it:  nnstep {q}\n"
                     f"  train headless:   nnstep run {q}\n")
    return 0
