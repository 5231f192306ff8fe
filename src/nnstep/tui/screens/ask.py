"""The answer box of a lesson's question, and what a missed answer shows (docs/teaching.md).

:class:`AskScreen` opens before the op runs: the question, what its ``show`` lets the learner see
(the worked example with its last step blank, the formula, or nothing), and a line to type a
number or arithmetic into. Enter answers (a typo that is no number says so and keeps the box
open), Esc skips. It dismisses with the typed text, or None for a skip.

:class:`VerdictScreen` follows a wrong answer or a skip: the engine's value beside the learner's,
the lesson's hint, and the element's whole explanation, as `e` shows it.
"""
from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Markdown, Static

from ...debugger.answer import AnswerError, parse_answer

HOW = "a number, or arithmetic such as 0.05*0.25 + 0.1*0.3 + 0.35 (exp log sqrt tanh sigmoid max min abs)"


class AskScreen(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "skip", "skip", priority=True)]
    DEFAULT_CSS = """
    AskScreen { align: center middle; }
    AskScreen > Vertical { width: 100; max-width: 100%; height: auto; max-height: 100%;
        border: round $accent; background: $surface; padding: 0 1; }
    AskScreen #ask-shown { height: auto; margin: 1 0 0 0; }
    AskScreen #ask-notes { height: auto; max-height: 8; margin: 0 0 1 0; padding: 0; color: $text-muted; }
    AskScreen Input { margin: 1 0 0 0; }
    AskScreen #ask-error { color: $error; height: auto; }
    """

    def __init__(self, title: str, lines: list[str], where: str, score: tuple[int, int], count: str = "",
                 notes: list[str] = ()):
        super().__init__()
        self._title, self._lines, self._where, self._score, self._count = title, lines, where, score, count
        self._notes = list(notes)

    def compose(self) -> ComposeResult:
        head = Text()
        head.append(f"{self._title}\n", "bold")
        head.append(self._where, "dim")
        with Vertical() as box:
            right, asked = self._score
            box.border_title = f"question{self._count}" + (f" · score {right}/{asked}" if asked else "")
            box.border_subtitle = "Enter: answer · Esc: skip"
            if self._notes:                    # what the lesson says here: the box covers its panel
                yield Markdown("\n\n".join(self._notes), id="ask-notes")
            yield Static(head, id="ask-title")
            shown = Text("\n".join(self._lines) if self._lines else "(work it out from what is on the screen)")
            if not self._lines:
                shown.stylize("dim italic")
            yield Static(shown, id="ask-shown")
            yield Input(placeholder="your answer: a number, or arithmetic such as 0.05*0.25 + 0.35", id="ask-input")
            yield Static("", id="ask-error")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        text = event.value
        try:
            parse_answer(text)
        except AnswerError as e:
            self.query_one("#ask-error", Static).update(Text(f"{e}: {HOW}"))
            return
        self.dismiss(text)

    def action_skip(self) -> None:
        self.dismiss(None)


class VerdictScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,enter,space,q", "close", "close", priority=True)]
    DEFAULT_CSS = """
    VerdictScreen { align: center middle; }
    VerdictScreen > VerticalScroll { width: 110; max-width: 100%; height: auto; max-height: 100%;
        border: round $warning; background: $surface; padding: 0 1; }
    """

    def __init__(self, verdict: Text, hint: str, explanation: str):
        super().__init__()
        self._verdict, self._hint, self._explanation = verdict, hint, explanation

    def compose(self) -> ComposeResult:
        t = Text()
        t.append_text(self._verdict)
        t.append("\n")
        if self._hint:
            t.append("\nhint: ", "bold")
            t.append(self._hint + "\n")
        t.append("\nhow nnstep computed it:\n", "bold")
        t.append(self._explanation)
        with VerticalScroll() as box:
            box.border_title = "the answer"
            box.border_subtitle = "Enter or Esc: close"
            yield Static(t)

    def action_close(self) -> None:
        self.dismiss(None)
