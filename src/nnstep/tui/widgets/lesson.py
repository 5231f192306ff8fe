"""The lesson's panel: what the lesson says where the cursor is (its notes), the verdict on the
question just answered, or the scenario's description. Notes and verdicts are Markdown, as
Textual renders it; the description is plain text. Both wrap in any script (CJK included: no
spaces needed) and scroll when long; redrawn only when what the panel shows changes.

Textual's Markdown widget costs ~140 ms of imports (markdown-it, pygments' lexers), a third of a
start-up: it is imported when a note or a verdict is first shown, and ahead of that, after the
first screen, on a thread (``warm_up``), so that neither the first screen nor the first note waits.
"""
from __future__ import annotations

import threading

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_{}[]()#+-.!|<>~"})


def md_escape(text: str) -> str:
    """Text shown as it is (a learner's answer, a tensor's name) inside Markdown."""
    return text.translate(_SPECIAL)


def warm_up() -> None:
    """Import Textual's Markdown widget on a thread, ahead of the first note (see above)."""
    def load():
        from textual.widgets import _markdown  # noqa: F401
    threading.Thread(target=load, name="nnstep-markdown-import", daemon=True).start()


class LessonPanel(VerticalScroll):
    DEFAULT_CSS = """
    LessonPanel { scrollbar-size-vertical: 1; }
    LessonPanel #lesson-plain { padding: 0 1 0 0; }
    LessonPanel Markdown { margin: 0; padding: 0 1 0 0; }
    LessonPanel Markdown > MarkdownBlock { margin: 0 0 1 0; }
    """

    def __init__(self, **kw):
        super().__init__(**kw)
        self._shown = None
        self._md = None                        # the Markdown widget, once a note needed it

    def compose(self) -> ComposeResult:
        yield Static(id="lesson-plain")

    def show(self, title: str, text: str, markdown: bool = True) -> bool:
        """Show ``text`` (Markdown, or plain text) under ``title``; an empty text hides the panel.
        Returns whether the panel is shown."""
        key = (title, text, markdown)
        if key == self._shown:
            return bool(text)
        self._shown = key
        self.border_title = title
        self.display = bool(text)
        if not text:
            return False
        plain = self.query_one("#lesson-plain", Static)
        if markdown:
            if self._md is None:                # (its first text given at mounting: an update
                from textual.widgets import Markdown   # before the mount is done goes nowhere)
                self._md = Markdown(text, id="lesson-text")
                self.mount(self._md)
            else:
                self._md.update(text)
        else:
            plain.update(Text(text))
        plain.display = not markdown
        if self._md is not None:
            self._md.display = markdown
        self.scroll_home(animate=False)
        return True
