"""The status line, and the prompt that g types into."""
from __future__ import annotations

from rich.text import Text

from .text import NONFINITE, TextLines


class StatusBar(TextLines):
    """The status line, and the prompt that ``g`` types into (a line editor of its own: a dialog
    screen relayouts and repaints the whole main screen when it closes, about 100 ms here)."""
    PAD = 1

    def __init__(self, **kw):
        super().__init__(**kw)
        self._shown = ("", "")
        self._prompt = None           # [label, what is typed, callback, hint]

    @property
    def prompting(self) -> bool:
        return self._prompt is not None

    def show(self, text: str, kind: str = ""):
        self._shown = (text, kind)
        if self._prompt is None:
            self._draw(text, kind)

    def _draw(self, text: str, kind: str):
        style = {"stop": "bold yellow", "bad": NONFINITE, "error": "bold red"}.get(kind, "italic")
        self.set_text(Text(text, style=style, overflow="ellipsis"), (text, kind))

    def prompt(self, label: str, hint: str, done, changed=None) -> None:
        """Take the keys (the app passes them on: ``prompt_key``) until Enter (``done(typed)``)
        or Esc (``done(None)``); ``label`` is shown before what is typed, ``hint`` after it;
        ``changed(typed)`` after each key that changes what is typed. Focus does not move: a
        focus change repaints the whole screen (Screen.focused is a repainting reactive)."""
        self._prompt = [label, "", done, hint]
        self._changed = changed
        self._draw_prompt()

    @property
    def typed(self) -> str | None:
        """What is typed in the prompt now (None: no prompt)."""
        return None if self._prompt is None else self._prompt[1]

    def _draw_prompt(self) -> None:
        label, typed, _, hint = self._prompt
        t = Text(overflow="ellipsis", no_wrap=True)
        t.append(label, "bold")
        t.append(typed, "bold")
        t.append("▏", "bold")
        t.append(f"   {hint}", "dim")
        self.set_text(t, ("prompt", label, typed, hint))

    def prompt_key(self, event) -> None:
        """A key while prompting: Enter, Esc, Backspace, Ctrl+U (clear), or a character typed."""
        if event.key == "enter":
            self.end_prompt(True)
            return
        if event.key == "escape":
            self.end_prompt(False)
            return
        if event.key == "backspace":
            self._prompt[1] = self._prompt[1][:-1]
        elif event.key == "ctrl+u":
            self._prompt[1] = ""
        elif event.is_printable and event.character and len(self._prompt[1]) < 40:
            self._prompt[1] += event.character
        before = self._key
        self._draw_prompt()
        if self._key != before and self._changed is not None:
            self._changed(self._prompt[1])

    def end_prompt(self, ok: bool) -> None:
        if self._prompt is None:
            return
        typed, done = self._prompt[1], self._prompt[2]
        self._prompt = None
        self._draw(*self._shown)
        done(typed if ok else None)
