"""The lesson's panel: what the lesson says where the cursor is (its notes), the verdict on the
question just answered, or the scenario's description. Markdown, as Textual renders it, wrapped in
any script (CJK included: no spaces needed) and scrolled when long; redrawn only when what it shows
changes."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Markdown

_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_{}[]()#+-.!|<>~"})


def md_escape(text: str) -> str:
    """Text shown as it is (a learner's answer, a tensor's name) inside Markdown."""
    return text.translate(_SPECIAL)


class LessonPanel(VerticalScroll):
    DEFAULT_CSS = """
    LessonPanel { scrollbar-size-vertical: 1; }
    LessonPanel Markdown { margin: 0; padding: 0 1 0 0; }
    LessonPanel Markdown > MarkdownBlock { margin: 0 0 1 0; }
    """

    def __init__(self, **kw):
        super().__init__(**kw)
        self._shown = None

    def compose(self) -> ComposeResult:
        yield Markdown(id="lesson-text")

    def show(self, title: str, text: str) -> bool:
        """Show ``text`` (Markdown) under ``title``; an empty text hides the panel. Returns whether
        the panel is shown."""
        key = (title, text)
        if key == self._shown:
            return bool(text)
        self._shown = key
        self.border_title = title
        self.display = bool(text)
        if text:
            self.query_one(Markdown).update(text)
            self.scroll_home(animate=False)
        return bool(text)
