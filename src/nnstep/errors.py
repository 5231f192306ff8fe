"""The one error type that bad input produces.

`str(ScenarioError)` is the one-line message without the ``nnstep: error: `` prefix; the CLI adds
that prefix and exits 2 (docs/commands.md).
"""
from __future__ import annotations

import re


class ScenarioError(Exception):
    """Bad input: a scenario, a data file, an argument. Carries a location and a message."""

    def __init__(self, message: str, *, file: str | None = None, where: str | None = None):
        self.file = file
        self.where = where
        self.what = message
        parts = [p for p in (file, where) if p]
        super().__init__(": ".join(parts + [message]))


class Terminated(BaseException):
    """SIGTERM, raised where the program is while nnstep writes a file (fileio), as Ctrl-C raises
    KeyboardInterrupt, so that the write cleans up on the way out; the CLI exits 143."""


SHOWN = 60          # characters of a value a message shows (docs/errors.md, "How an error looks")


def cut(text: str, limit: int = SHOWN) -> str:
    """A value as a message shows it: at most ``limit`` characters, "..." where it was cut (a
    4000-digit integer in a scenario, or a long argument, is named, not printed whole). Every
    value of the user's that a message formats goes through here (scenario.validate._show for the
    scenario's, directly for the command line's)."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def did_you_mean(word: str, options) -> str:
    """A ' (did you mean "x"?)' hint for an unknown key or type, or ''."""
    import difflib

    options = sorted(set(options))
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if close:
        return f' (did you mean "{cut(close[0])}"?)'
    if options:
        return " (expected one of: " + ", ".join(cut(o) for o in options) + ")"
    return ""


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def clean(s: str) -> str:
    """Text from a file, safe to print: control characters (terminal escapes, bidi overrides)
    are shown as escapes, never sent to the terminal."""
    return _CONTROL.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), s)
