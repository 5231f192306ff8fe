"""The help screen (go-to is typed into the status line: widgets.panels.StatusBar)."""
from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

HELP = [
    ("Stepping", [
        ("n / space", "next operation"),
        ("p", "previous operation (stepping back is exact)"),
        ("s", "run to the next stage (forward → loss → backward → update)"),
        ("S", "run to the end of this training step"),
        ("c", "continue to a breakpoint, a NaN/Inf, or the end (Esc interrupts)"),
        ("C", "reverse-continue: back to the previous breakpoint or NaN/Inf"),
        ("f", "with --compare MINE.npz: to the next op that differs from yours"),
        ("g", "go to a step and op, typed as \"step op\" (op counts from 1)"),
        ("r", "restart: reload the scenario file and go back to the start"),
    ]),
    ("A lesson's questions", [
        ("", "before an op that asks, n (and s, S, c, g) opens the answer box:"),
        ("", "type a number or arithmetic (0.05*0.25 + 0.35), Enter; Esc skips"),
        ("a", "your answers: where --record saves them, or download them (browser)"),
    ]),
    ("Looking", [
        ("b", "toggle a breakpoint on the next operation (● in the program);"),
        ("", "right after a stop on a `when` condition, b removes that condition"),
        ("Tab", "move between the tensors of the current operation"),
        ("Enter", "open the focused tensor full-size, with row and column indices"),
        ("e", "explain one number: the chain rule for one element of a gradient"),
        ("d", "the network as a graph in place of the program (d again: back)"),
        ("G", "each layer's gradient norm, log scale, in place of the loss curve"),
        ("L", "the layers table on / off (off at first on a short screen)"),
        ("+ / -", "more / fewer significant digits: boxes, formulas, the table"),
        ("ctrl+p", "command palette: every action, and \"open <tensor>\" for any tensor"),
        ("?", "this help"),
        ("q", "quit"),
    ]),
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


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 84; max-width: 100%; height: auto; max-height: 100%;
        border: round $accent; background: $surface; padding: 0 1; }
    """

    def compose(self) -> ComposeResult:
        t = Text()
        t.append("nnstep — keys\n", "bold")
        for title, rows in HELP:
            t.append(f"\n{title}\n", "bold underline")
            for k, what in rows:
                t.append(f"  {k:<12}", "bold")
                t.append(f"{what}\n")
        t.append("\nEsc or ? closes this help.", "dim")
        with VerticalScroll():
            yield Static(t)

    def action_dismiss(self) -> None:
        self.dismiss(None)
