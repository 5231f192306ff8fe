"""Issue 29: keys a user presses quickly must not crash the TUI."""
from __future__ import annotations

import os

from textual import events

from nnstep.tui import make_app

SCENARIO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tui", "scenarios", "classic.toml")


async def test_palette_then_enter_three_times_quickly():
    """ctrl+p, then Enter three times before the app has handled the first: the second and third
    both select the highlighted command, and Textual 8.2.8 ran it, closed the palette, then closed
    it again and failed (ScreenStackError: Can't pop screen). The keys are queued together, as a
    terminal delivers them (pilot.press would wait for each to be handled)."""
    app = make_app(SCENARIO)
    ran = []
    run_action = app.run_action

    async def counting(action, *args, **kw):
        ran.append(action)
        return await run_action(action, *args, **kw)
    app.run_action = counting
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+p")
        await pilot.pause()
        for _ in range(3):
            app.post_message(events.Key("enter", "\r"))
        await pilot.pause(0.3)                      # unguarded, the app fails here and run_test raises it
        assert len(app.screen_stack) == 1 and app.screen is app.screen_stack[0]      # the palette closed
        assert app.session.position != (1, 0)                                         # its command ran
    commands = [a for a in ran if a not in ("command_palette", "submit")]
    assert len(commands) == 1, ran                                                    # once
