"""What a terminal shows, fed only the frames the app sends it, is what a whole repaint of the
screen shows, after every kind of key: nothing the app changes is left unpainted. The frames are
the compositor's own updates (only the regions that changed), rendered as the app renders them
for a terminal and played into pyte, a VT emulator; the reference is a full repaint of the
screen, played into a fresh one. This is what the DirectLines repaint (widgets.memo: a repaint
marked straight on the screen, without Textual's messages) and the panels' repaint of only the
lines that changed must keep true."""
import os

import pyte
import pytest
from rich.console import Console
from textual._compositor import CompositorUpdate

from nnstep.tui import make_app
from nnstep.tui import compat

pytestmark = pytest.mark.slow          # (seconds each: the inner loop is pytest -m "not slow")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


class Terminal:
    """A pyte screen fed the app's frames as the terminal would get them."""

    def __init__(self, app, size):
        self.app, self.size = app, size
        self.console = Console(force_terminal=True, color_system="truecolor", width=size[0], height=size[1])
        self.screen = pyte.Screen(*size)
        self.stream = pyte.Stream(self.screen)
        self.frames = 0
        display = app._display

        def _display(screen, renderable):
            if isinstance(renderable, CompositorUpdate) and screen is app.screen:
                self.stream.feed(renderable.render_segments(self.console))
                self.frames += 1
            return display(screen, renderable)
        app._display = _display

    @staticmethod
    def cells(screen):
        return [[(c.data, c.fg, c.bg, c.bold, c.italics, c.underscore, c.reverse, c.strikethrough)
                 for c in (screen.buffer[y][x] for x in range(screen.columns))] for y in range(screen.lines)]

    def assert_whole(self, when: str):
        """The screen as the frames left it equals a full repaint of the app's screen now."""
        full = pyte.Screen(*self.size)
        pyte.Stream(full).feed(self.app.screen._compositor.render_full_update().render_segments(self.console))
        got, want = self.cells(self.screen), self.cells(full)
        for y, (a, b) in enumerate(zip(got, want)):
            assert a == b, (f"{when}: row {y} of the terminal is not what the app shows\n"
                            f"terminal: {''.join(c[0] for c in a)!r}\n"
                            f"app:      {''.join(c[0] for c in b)!r}")


KEYS = [("n", "n"), ("n", "n again"), ("p", "p"), ("s", "s"), ("S", "S"), ("n", "n after S"),
        ("tab", "focus on the tensors"), ("right", "another tensor selected"), ("shift+tab", "focus away"),
        ("d", "the diagram"), ("n", "n in the diagram"), ("d", "the program again"),
        ("G", "the gradient norms"), ("n", "n with the norms"), ("G", "the loss curve again"),
        ("L", "the layers table toggled"), ("n", "n with the table toggled"), ("L", "the table toggled back"),
        ("plus", "more digits"), ("minus", "fewer digits"), ("b", "a breakpoint"), ("p", "p onto it"),
        ("question_mark", "help"), ("escape", "help closed"), ("n", "n after help")]


@pytest.mark.parametrize("name,size,direct", [
    ("tests/tui/scenarios/mazur.toml", (120, 40), True),      # the 2-2-2 lesson, no questions
    ("tests/tui/scenarios/mazur.toml", (120, 40), False),     # Textual's own repaint: the same
    ("tests/tui/scenarios/lm.toml", (80, 24), True),          # compact, scrolled panels
    ("bench/mlp_784_256_128_10.toml", (120, 40), True)])      # heatmaps
async def test_the_terminal_shows_what_the_app_shows(name, size, direct, monkeypatch):
    monkeypatch.setattr(compat, "DIRECT_REPAINT", direct and compat.DIRECT_REPAINT)
    app = make_app(os.path.join(ROOT, name))
    term = Terminal(app, size)
    async with app.run_test(size=size) as pilot:
        for _ in range(3):                    # (the first step's ops are measured after the first paint)
            await pilot.pause()
        term.assert_whole("start")
        for key, when in KEYS:
            before, at = term.frames, app.session.position
            await pilot.press(key)
            await pilot.pause()
            await pilot.pause()
            term.assert_whole(when)
            if key in "nps" and app.session.position != at and name.endswith("mazur.toml"):
                # a move is one frame (a second one would be a repaint the first missed)
                assert term.frames - before == 1, f"{when}: {term.frames - before} frames"
        for _ in range(2 * app.session.M):   # to the end of training and beyond: every op once
            await pilot.press("n")
            await pilot.pause()
        term.assert_whole("the end of training")
        await pilot.press("g", *"1 2", "enter")
        await pilot.pause()
        term.assert_whole("a go-to")


async def test_a_repaint_of_a_hidden_widget_comes_when_it_is_shown():
    """The layers table is repainted while hidden (n with the table off at 80x24, where it is
    behind L): showing it again shows its lines as of now."""
    app = make_app(os.path.join(HERE, "scenarios", "lm.toml"))
    term = Terminal(app, (80, 24))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        for key in "nnn":
            await pilot.press(key)
            await pilot.pause()
        await pilot.press("L")
        await pilot.pause()
        await pilot.pause()
        term.assert_whole("the table shown after three ops")
        assert app.query_one("#layers").display


async def test_the_sequences_the_app_writes_show_what_it_shows(monkeypatch):
    """The same, fed the very sequences the app writes to its terminal, as in a real one (not
    headless, a truecolor console): the look-ahead makes the terminal sequences of the canvas
    lines it composes ahead (TensorCanvas.prebuild), and the frames that show them write those."""
    from rich.color import ColorSystem
    from textual.strip import Strip
    from nnstep.tui.app import NnstepApp
    from nnstep.tui.widgets.tensor import TensorCanvas
    monkeypatch.setattr(NnstepApp, "is_headless", property(lambda self: False))
    app = make_app(os.path.join(ROOT, "bench", "mlp_784_256_128_10.toml"))
    app.console._color_system = ColorSystem.TRUECOLOR
    screen = pyte.Screen(120, 40)
    stream = pyte.Stream(screen)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        app._driver.write = stream.feed
        app.screen.refresh()                       # (a whole frame first, then the keys' frames)
        await pilot.pause()
        canvas = app.query_one(TensorCanvas)
        for key in ["n", "n", "n", "s", "n", "S", "p", "g", "2", "enter", "g", "1", "enter"]:
            await pilot.pause(3 * app.ahead.AFTER)            # the reader reads: the look-ahead runs
            shown = {id(line) for line in canvas._lines}
            made_ahead = {id(line) for _, line in canvas._ahead_lines.values()
                          if line._render_cache and id(line) not in shown}
            await pilot.press(key)
            await pilot.pause()
            # the reference: every line's sequences made now, from its segments (no Strip's own)
            whole = app.screen._compositor.render_full_update()
            whole.strips = [[Strip(list(strip), strip.cell_length) for strip in line] for line in whole.strips]
            full = pyte.Screen(120, 40)
            pyte.Stream(full).feed(whole.render_segments(app.console))
            assert Terminal.cells(screen) == Terminal.cells(full), f"after {key}"
            if key in "nsS":                      # (shown now: lines whose sequences were made ahead)
                assert made_ahead & {id(line) for line in canvas._lines}, key
