"""The help screen (go-to is typed into the status line: widgets.status.StatusBar)."""
from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from ..actions import sections

# the keys come from the action table (actions.py); the marks on the screen are said here
LEGEND = [
    ("Reading the screen", [
        ("✓ ▶ ●", "done, next, breakpoint (in the program)"),
        ("yellow", "what the operation just ran wrote (┏━┓ a box it wrote)"),
        ("╔═╗", "the tensor Tab has focused: Enter opens it, e explains it"),
        ("dim", "values left from the last step, not yet recomputed;"),
        ("", "in attention: cells the causal mask hides (the box says so)"),
        ("─┼─", "between a box's stacked blocks: samples, conv channels"),
        ("heatmap", "blue < 0 < red, scaled to the largest |value| shown in the legend"),
        ("N ∞", "NaN and ±Inf, in white on red or magenta/yellow/cyan in heatmaps"),
        ("a≠b", "--compare: nnstep's a beside your b, where they differ"),
    ]),
]


def help_text() -> Group:
    """The keys of the action table by section, then the legend; a long line wraps under its own
    text, not under the keys."""
    parts = [Text("nnstep — keys", "bold")]
    for title, rows in sections() + LEGEND:
        parts.append(Text(f"\n{title}", "bold underline"))
        table = Table.grid()
        table.add_column(width=14, no_wrap=True, style="bold")
        table.add_column()
        for k, what in rows:
            table.add_row(f"  {k}", what)
        parts.append(table)
    parts.append(Text("\nEsc or ? closes this help.", "dim"))
    return Group(*parts)


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 84; max-width: 100%; height: auto; max-height: 100%;
        border: round $accent; background: $surface; padding: 0 1; }
    """

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(help_text())

    def action_dismiss(self) -> None:
        self.dismiss(None)
