"""The README's "Scripting" example runs as written, and prints what its comments say."""
import contextlib
import io
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_readme_scripting_example_runs_and_its_comments_hold(monkeypatch):
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = text[text.index("## Scripting"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(ROOT)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md#scripting", "exec"), {})
    lines = out.getvalue().splitlines()
    assert lines[0] == "forward linear1 (1, 1)"
    assert lines[1] == "(4, 2)"
    assert lines[3] == "breakpoint (191, 4)"              # as the comment in the README says
    assert lines[4].startswith('breakpoint breakpoints[0] (when "loss mean < 0.01"): loss mean = ')
