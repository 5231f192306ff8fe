"""The app's own keys run at once (NnstepApp.on_event, _own_key), not passed up through the focused
widget's parents: the same as Textual's way for every key, and Textual's way wherever a widget
from the focused one up binds or handles the key."""
import os

from textual import events
from textual.binding import Binding, BindingsMap

from nnstep.tui import make_app
from nnstep.tui.widgets.tensor import TensorCanvas

from test_terminal_frames import Terminal

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLASSIC = os.path.join(ROOT, "tests", "tui", "scenarios", "mazur.toml")   # the lesson without its questions

KEYS = ["n", "n", "space", "tab", "n", "s", "p", "plus", "minus", "S", "b", "c", "C", "e", "escape",
        "shift+tab", "n", "d", "n", "d", "G", "G", "L", "L", "question_mark", "escape", "g", "2", "enter", "f"]


async def run(keys, direct: bool, monkeypatch):
    app = make_app(CLASSIC)
    if not direct:                                   # every key the way Textual passes it
        monkeypatch.setattr(app, "_own_key", lambda event: False)
    ran = []
    real = app._check_bindings

    async def checked(key, priority=False):
        ran.append((key, priority))
        return await real(key, priority)
    app._check_bindings = checked
    term = Terminal(app, (120, 40))
    out = []
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        for key in keys:
            await pilot.press(key)
            await pilot.pause(0.05)
            out.append((key, Terminal.cells(term.screen), app.session.position,
                        type(app.focused).__name__, len(app.screen_stack)))
    return out, ran


async def test_the_app_keys_give_what_textual_gives(monkeypatch):
    """Stepping, precision, breakpoints, views, focus moves, a dialog and the go-to box, with the
    canvas or the program list focused: the same screens, positions, focus and screens open, key
    for key, as every key passed through the focused widget's parents."""
    direct, ran = await run(KEYS, True, monkeypatch)
    plain, _ = await run(KEYS, False, monkeypatch)
    for d, p in zip(direct, plain):
        assert d[1:] == p[1:], f"after {d[0]}"
    assert {p[3] for p in plain} >= {"TensorCanvas", "ProgramView"}
    # the direct way was taken: a key checked at the app's level at once, not as a priority key
    # (Textual checks priority bindings first, then passes the key up)
    assert ("n", False) in ran and ran.index(("n", False)) == 0


async def test_a_widget_that_binds_or_handles_the_key_gets_it(monkeypatch):
    app = make_app(CLASSIC)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        canvas = app.query_one(TensorCanvas)
        canvas.focus()
        await pilot.pause()
        n = events.Key("n", "n")
        assert app._own_key(n)
        assert not app._own_key(events.Key("up", None))          # the canvas's own binding
        assert not app._own_key(events.Key("x", "x"))            # no binding of the app's

        got = []
        canvas.key_n = lambda: got.append("key_n")             # a handler on the focused widget
        assert not app._own_key(n)
        await pilot.press("n")
        await pilot.pause()
        assert got == ["key_n"] and app.session.position == (1, 1)   # (its handler, then the binding)
        del canvas.key_n

        bindings = canvas._bindings
        canvas._bindings = BindingsMap([Binding("n", "select(1)")])  # a binding of its own
        assert not app._own_key(n)
        await pilot.press("n")
        await pilot.pause()
        assert app.session.position == (1, 1), "the canvas's binding, not the app's, took n"
        canvas._bindings = bindings
        assert app._own_key(n)
        await pilot.press("n")
        await pilot.pause()
        assert app.session.position == (1, 2)
