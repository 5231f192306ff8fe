"""A Textual without the internals that tui/compat.py reaches for draws the same screens: every
fallback forced (no reuse of the styles cache's lines, Textual's own repaint, the sparkline drawn
by rich), the terminal shows, cell for cell (characters, colours, bold, ...), what it shows with
them, after steps, stages, views, a focus move, precision and the help."""
import os

import pytest

from nnstep.tui import compat, make_app
from nnstep.tui.widgets.curves import spark_lines

from test_terminal_frames import Terminal

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLASSIC = os.path.join(ROOT, "tests", "tui", "scenarios", "mazur.toml")
KEYS = ["n", "n", "s", "s", "n", "tab", "right", "shift+tab", "d", "n", "d", "G", "n", "G", "plus", "L",
        "S", "n", "p", "question_mark", "escape", "n", "p"]


async def screens(path, monkeypatch, fallback: bool) -> list:
    if fallback:
        for flag in ("CAN_REUSE", "DIRECT_REPAINT", "SPARK_COLUMNS"):
            monkeypatch.setattr(compat, flag, False)
    app = make_app(path)
    term = Terminal(app, (120, 40))
    out = []
    async with app.run_test(size=(120, 40)) as pilot:
        for _ in range(3):
            await pilot.pause()
        for key in KEYS:
            await pilot.press(key)
            await pilot.pause()
            await pilot.pause()
            term.assert_whole(f"after {key}")        # (the frames sent: a whole repaint's screen)
            out.append((key, Terminal.cells(term.screen)))
    return out


@pytest.mark.slow
async def test_the_fallbacks_draw_the_same_screens(monkeypatch):
    assert compat.CAN_REUSE and compat.DIRECT_REPAINT and compat.SPARK_COLUMNS   # (the Textual pinned)
    for path in (CLASSIC, os.path.join(ROOT, "bench", "mlp_784_256_128_10.toml")):
        fast = await screens(path, monkeypatch, False)
        with monkeypatch.context() as m:
            slow = await screens(path, m, True)
        for (key, a), (_, b) in zip(fast, slow):
            for y, (ra, rb) in enumerate(zip(a, b)):
                assert ra == rb, (f"{os.path.basename(path)}, after {key}: row {y} differs without the internals\n"
                                  f"with:    {''.join(c[0] for c in ra)!r}\nwithout: {''.join(c[0] for c in rb)!r}")


def test_the_sparkline_fallback_is_the_renderables_drawing(monkeypatch):
    from rich.color import Color
    from rich.style import Style
    from textual.renderables.sparkline import Sparkline
    spark = Sparkline([3.0, 1.0, 2.5, 0.5, 4.0], width=17, height=3, min_color=Color.parse("#004578"),
                      max_color=Color.parse("#e0b040"), summary_function=max)
    base = Style.parse("#e0e0e0 on #121212")
    fast = spark_lines(spark, 3, base)
    monkeypatch.setattr(compat, "SPARK_COLUMNS", False)
    assert spark_lines(spark, 3, base) == fast
