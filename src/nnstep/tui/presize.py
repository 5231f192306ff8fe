"""The operation panel's height, measured ahead: every op of the first step is shown to the panel
(measuring only) at this screen size, in a session of its own, so that the panel takes the height
the tallest needs now. Stepping through the first step then never grows it: each growth is a
relayout of the whole screen, the slowest a key gets (tests/tui/test_no_relayout.py)."""
from __future__ import annotations

from ..debugger.session import Session
from . import view
from .ahead import written
from .widgets.oppanel import OpPanel


class Presize:
    def __init__(self, app):
        self.app = app
        self.done_for = None          # (session, size, digits, layers shown, lesson rows) measured for
        self.measured: set = set()    # ... every such key measured so far
        self.pending = False

    @property
    def settled(self) -> bool:
        """Measured for the screen as it is now, nothing pending."""
        return self.done_for is not None and not self.pending

    def key(self):
        # (the lesson panel's rows too: the op panel takes the rest of the column, a room of its own)
        app = self.app
        return app.session, tuple(app.size), app.digits, app.layers_shown, app.lesson_rows

    def later(self) -> None:
        """After the next paint, if the scenario, the size, the precision or the layout is new (a
        big network's panel has one constant height anyway)."""
        if not self.app.big and not self.pending and self.done_for != self.key():
            self.pending = True
            self.app.call_after_refresh(self.run)

    def forget(self) -> None:
        """A new scenario."""
        self.measured.clear()

    def run(self) -> None:
        app = self.app
        self.pending = False
        key = self.key()
        if app.big or self.done_for == key or not app.is_running:
            return
        self.done_for = key
        if key in self.measured:               # (measured before: a lesson note came and went)
            return
        self.measured.add(key)
        s = Session(app.scenario)
        panel = app.query_one(OpPanel)
        room = app.op_room(len(view.layer_rows(s, app.writer, set())))
        for _ in range(s.M):
            rec = s.step()
            if rec is None:
                break
            panel.show(**app.op_view(s, rec, written(rec)), digits=app.digits, room=room, measure=True)
        if not app.running:
            app.refresh_view()
