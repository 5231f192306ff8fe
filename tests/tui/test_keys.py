"""The app's own keys (letters, space, signs) are priority bindings (the action table, tui/actions.py):
the app takes them at once, not after passing them up from the focused widget through each of its
parents. That gives what Textual's usual way gives, key for key, and on a dialog those keys are the
dialog's."""
import dataclasses
import os

import pytest

from nnstep.tui import make_app
from nnstep.tui.screens.dialogs import HelpScreen
from nnstep.tui.screens.tensor import TensorScreen

from test_terminal_frames import Terminal

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLASSIC = os.path.join(ROOT, "tests", "tui", "scenarios", "mazur.toml")   # the lesson without its questions

KEYS = ["n", "n", "space", "tab", "n", "s", "p", "plus", "minus", "S", "b", "c", "C", "e", "escape",
        "shift+tab", "n", "d", "n", "d", "G", "G", "L", "L", "question_mark", "escape", "g", "2", "enter", "f",
        "question_mark", "n", "q", "enter", "n", "q", "n"]


def as_textual_passes_them(app) -> int:
    """The app's bindings made ordinary ones, as Textual's usual way passes a key: from the focused
    widget up (the app's own Esc stays a priority binding, as it always was)."""
    made = 0
    for key, bindings in app._bindings.key_to_bindings.items():
        for j, b in enumerate(bindings):
            if b.priority and b.action != "interrupt":
                bindings[j] = dataclasses.replace(b, priority=False)
                made += 1
    return made


async def run(keys, priority: bool):
    app = make_app(CLASSIC)
    if not priority:
        assert as_textual_passes_them(app) > 10
    term = Terminal(app, (120, 40))
    out = []
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        for key in keys:
            await pilot.press(key)
            await pilot.pause(0.05)
            out.append((key, Terminal.cells(term.screen), app.session.position,
                        type(app.focused).__name__, [type(s).__name__ for s in app.screen_stack]))
        assert app.is_running
    return out


@pytest.mark.slow
async def test_the_app_keys_give_what_textual_gives():
    """Stepping, precision, breakpoints, views, focus moves, the help, a tensor full-size and the
    go-to box, with the canvas or the program list focused: the same screens, positions, focus and
    screens open, key for key, as every key passed through the focused widget's parents."""
    direct = await run(KEYS, True)
    plain = await run(KEYS, False)
    for d, p in zip(direct, plain):
        assert d[1:] == p[1:], f"after {d[0]}"
    assert {p[3] for p in plain} >= {"TensorCanvas", "ProgramView"}
    opened = {s for p in plain for s in p[4]}
    assert {"HelpScreen", "TensorScreen"} <= opened


async def test_on_a_dialog_the_keys_are_the_dialogs():
    """n on the help or a tensor full-size moves nothing; q closes the dialog (its binding), it does
    not quit the app."""
    app = make_app(CLASSIC)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("n")
        for opens, dialog in (("question_mark", HelpScreen), ("enter", TensorScreen)):
            await pilot.press(opens)
            await pilot.pause()
            assert isinstance(app.screen, dialog)
            await pilot.press("n", "p", "s", "plus")
            await pilot.pause()
            assert app.session.position == (1, 1) and app.digits == 6 and isinstance(app.screen, dialog)
            await pilot.press("q")
            await pilot.pause()
            assert app.is_running and app.screen is app.screen_stack[0]
        await pilot.press("n")
        await pilot.pause()
        assert app.session.position == (1, 2)
