"""The command palette (ctrl+p): every action of the action table (actions.py), and "open <tensor>"
and "explain <tensor>" for every tensor of the scenario."""
from __future__ import annotations

from textual import on
from textual.command import CommandPalette, Hit, Hits, Provider
from textual.widgets import Button, Input, OptionList


class TensorCommands(Provider):
    """'open <tensor>' and 'explain <tensor>' for every tensor of the scenario."""

    async def search(self, query: str) -> Hits:
        from .app import NnstepApp
        app = self.app
        if not isinstance(app, NnstepApp) or app.running:
            return
        m = self.matcher(query)
        for verb, cb, help in (("open", app.open_tensor_by_name, "show this tensor full-size"),
                               ("explain", app.explain_tensor,
                                "the chain rule for one element (a gradient), or how it was computed")):
            for name in sorted(app.session.names):
                text = f"{verb} {name}"
                score = m.match(text)
                if score > 0:
                    yield Hit(score, m.highlight(text), lambda n=name, c=cb: c(n), help=help)


class Palette(CommandPalette):
    """Textual's command palette, deaf once it is no longer on top. Enter pressed quickly three
    times (ctrl+p, Enter, Enter, Enter) selects the highlighted command twice before the first
    selection is handled: Textual 8.2.8 then ran it, dismissed the palette, and on the second
    selection dismissed it again, popping the app's last screen (ScreenStackError: Can't pop
    screen). A selection or submission that arrives once the palette is closed is dropped."""

    @on(Input.Submitted)
    @on(Button.Pressed)
    @on(OptionList.OptionSelected)
    def _not_when_closed(self, event) -> None:
        if self.app.screen is not self:
            event.prevent_default()         # CommandPalette's own handler of it does not run
            event.stop()
