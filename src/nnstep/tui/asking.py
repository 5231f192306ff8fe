"""The app's side of a lesson that asks (docs/teaching.md): where a move forward stops for a
question, the answer box, the verdict, and what the lesson panel says where the cursor is.

The lesson itself (the questions, grading, the score, the results document) is the debugger's
:class:`~nnstep.debugger.lesson.Lesson`; this module only decides what the screen does with it:

- ``n`` (and space) before an op that carries a question opens the answer box instead of running
  it; ``s``, ``S``, ``c`` and ``g`` stop before the first question they would pass over and open
  the box there. Going back (``p``, ``C``, ``g`` backwards) never asks again.
- Enter answers: the op runs, and the lesson panel shows ✓ or ✗ with both values; after a wrong
  answer or a skip (Esc) a dialog shows the hint and the element's whole explanation.
"""
from __future__ import annotations

from rich.text import Text

from ..debugger.lesson import Answer
from .widgets.lesson import md_escape


def cjk_join(text: str) -> str:
    """A note's lines as Markdown reads them, except that a line break between two CJK characters
    joins them with no space (Markdown makes a soft break a space, which Chinese, Japanese and
    Korean text does not have)."""
    out = []
    for line in text.split("\n"):
        if out and out[-1] and line and _cjk(out[-1][-1]) and _cjk(line.lstrip()[:1]):
            out[-1] += line.lstrip()
        else:
            out.append(line)
    return "\n".join(out)


def _cjk(c: str) -> bool:
    return bool(c) and ("\u2e80" <= c <= "\u9fff" or "\uac00" <= c <= "\ud7af" or "\uf900" <= c <= "\ufaff"
                        or "\uff00" <= c <= "\uffef" or "\u3000" <= c <= "\u303f")


def num(v: float | None) -> str:
    return "—" if v is None else f"{v:.9g}"


class Asking:
    def __init__(self, app):
        self.app = app
        self.verdict: tuple[tuple[int, int], Answer] | None = None    # (where it was shown, the answer)

    @property
    def lesson(self):
        return self.app.lesson

    # --- moves ------------------------------------------------------------------------------------
    def ask_here(self) -> bool:
        """Open the answer box if a question waits before the next op (True: the move is taken)."""
        if self.lesson.pending() is None:
            return False
        self.open()
        return True

    def limit(self, target: tuple[int, int], here: tuple[int, int] | None = None) -> tuple[int, int] | None:
        """Where a move forward to ``target`` stops first for a question (None: it goes all the way)."""
        return self.lesson.stop_before(target, here)

    def stopped_for_question(self) -> None:
        """A move stopped before a question: say so and ask it."""
        a = self.lesson.pending()
        if a is None:
            return
        k, i = self.app.session.position
        self.app._status = (f"? stopped before op {i + 1} ({a.op}, step {k}): a question first", "stop")
        self.app.refresh_view()
        self.open()

    def open(self) -> None:
        from .screens.ask import AskScreen
        lesson = self.lesson
        a = lesson.pending()
        q = lesson.question(a, digits=self.app.digits)
        nth = lesson.asks.index(a) + 1
        k, i = self.app.session.position
        where = f"before op {i + 1}/{self.app.session.M} \"{a.op}\" runs (step {k})"
        notes = [cjk_join(n.text) for n in lesson.notes_at()]
        self.app.push_screen(AskScreen(q.title, q.lines, where, lesson.score, f" {nth} of {len(lesson.asks)}",
                                       notes=notes), self.answered)

    def answered(self, text: str | None) -> None:
        lesson = self.lesson
        if lesson.pending() is None:           # (a reload or a move while the box was open)
            return
        a = lesson.skip() if text is None else lesson.answer(text)
        app = self.app
        app._check_record(app.session.last_record)
        self.verdict = (app.session.position, a)
        right, asked = lesson.score
        if a.correct:
            app._status = (f"✓ right: {a.ask.element} = {num(a.engine_value)} · score {right}/{asked}", "")
        elif a.skipped:
            app._status = (f"skipped: {a.ask.element} = {num(a.engine_value)} · score {right}/{asked}", "stop")
        else:
            app._status = (f"✗ not quite: you said {num(a.value)}, nnstep has {num(a.engine_value)} · "
                           f"score {right}/{asked}", "bad")
        app.refresh_view()
        if not a.correct:
            from .screens.ask import VerdictScreen
            app.push_screen(VerdictScreen(self.verdict_text(a), a.ask.hint,
                                          lesson.explanation(a.ask, digits=app.digits)))

    @staticmethod
    def verdict_text(a: Answer) -> Text:
        t = Text()
        if a.correct:
            t.append("✓ right", "bold green")
        elif a.skipped:
            t.append("skipped", "bold yellow")
        else:
            t.append("✗ not quite", "bold red")
        t.append(f"   {a.ask.element}\n", "bold")
        if not a.skipped:
            said = a.answer if a.answer == f"{a.value:.12g}" else f"{a.answer} = {num(a.value)}"
            t.append(f"you said: {said}\n")
        t.append(f"nnstep:   {num(a.engine_value)}")
        if a.value is not None and not a.correct:
            t.append(f"   (off by {num(a.value - a.engine_value)})", "dim")
        return t

    def restart(self) -> None:
        self.lesson.restart()
        self.verdict = None

    # --- the lesson panel -------------------------------------------------------------------------
    def panel(self, short: bool = False) -> tuple[str, str, bool]:
        """(title, text, whether it is Markdown) for the lesson panel at the cursor: the verdict on
        the question just answered, else the notes here (Markdown), else the scenario's description
        (plain text; on a short screen, such as 80x24, only at the start: its rows go to the
        operation)."""
        s = self.app.session
        pos = s.position
        notes = [cjk_join(n.text) for n in self.lesson.notes_at(pos)]
        if self.verdict is not None and self.verdict[0] == pos:
            a = self.verdict[1]
            mark = "✓ right" if a.correct else ("skipped" if a.skipped else "✗ not quite")
            lines = [f"**{mark}**: {md_escape(a.ask.element)} = **{num(a.engine_value)}**"]
            if not a.skipped:
                lines.append(f"you said {md_escape(a.answer or '')}" +
                             ("" if a.answer == f"{a.value:.12g}" else f" = {num(a.value)}"))
            if not a.correct and a.ask.hint:
                lines.append(f"*hint*: {md_escape(a.ask.hint)}")
            right, asked = self.lesson.score
            return f"question · score {right}/{asked}", "\n\n".join(lines + (["---"] if notes else []) + notes), True
        if notes:
            return "lesson", "\n\n".join(notes), True
        desc = s.scenario.description.strip()
        if not desc or (short and pos != (1, 0)):
            return "", "", False
        return "about this lesson", desc, False
