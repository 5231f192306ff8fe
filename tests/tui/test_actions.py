"""One action table (tui/actions.py) gives the app's bindings, the footer, the command palette, the
help screen and the README's key table."""
import os

from nnstep.tui import actions, make_app
from nnstep.tui.app import NnstepApp
from nnstep.tui.screens.dialogs import HelpScreen, help_text

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLASSIC = os.path.join(ROOT, "tests", "tui", "scenarios", "mazur.toml")


def test_the_readme_key_table_is_the_action_tables():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    table = actions.readme_table()
    assert table in readme, "README.md's key table differs from tui/actions.py; it should read:\n" + table
    assert readme.count("| key | does |") == 1


def test_every_binding_is_a_key_of_the_table():
    keys = {(key, k.action) for k in actions.KEYS if k.action for key in k.keys.split(",")}
    bound = {(b.key, b.action) for b in NnstepApp.BINDINGS}
    assert bound == keys
    shown = [b.action for b in NnstepApp.BINDINGS if b.show]
    assert shown == list(actions.FOOTER)


async def test_the_help_says_every_key_of_the_table():
    from rich.console import Console
    lines = [f"  {shown:<12}{what}" for _, rows in actions.sections() for shown, what in rows]
    sections = [title for title, _ in actions.sections()]
    assert sum(len(k.help) for k in actions.KEYS if k.section) + sum(map(len, actions.NOTES.values())) == len(lines)
    app = make_app(CLASSIC)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
    shown = help_text()                     # (what the help screen shows: tests/tui/test_snapshots.py)
    console = Console(width=200, record=True, file=open(os.devnull, "w"))
    console.print(shown)
    text = [line.rstrip() for line in console.export_text().splitlines()]
    for line in lines:
        assert line.rstrip() in text
    for title in sections:
        assert title in text


async def test_the_palette_offers_every_titled_action_that_can_run():
    app = make_app(CLASSIC)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("n")
        titles = {c.title: c.help for c in app.get_system_commands(app.screen)}
        for k in actions.KEYS:
            if k.title and k.action not in ("interrupt", "answers"):     # (only while running; a lesson that asks)
                assert titles[k.title] == actions.palette_help(k)
        assert "Interrupt" not in titles
