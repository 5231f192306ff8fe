"""g: a step and an op typed into the status line's prompt (widgets.status.StatusBar), and the move
done while the user has not pressed Enter yet."""
from __future__ import annotations

from .widgets.status import StatusBar


def parsed(text: str) -> tuple[int, int]:
    """(step, op counted from 1) typed in the go-to box; ValueError says what is wrong."""
    parts = text.replace(",", " ").split()
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"type two numbers, \"step op\", got {text!r}") from None
    if len(nums) == 1:
        nums.append(1)
    if len(nums) != 2:
        raise ValueError(f"type two numbers, \"step op\", got {text!r}")
    if nums[1] < 1:
        raise ValueError(f"ops count from 1, got {nums[1]}")
    return nums[0], nums[1]


class GoTo:
    AHEAD_STEPS = 4      # at most this many steps' ops re-run ahead of Enter (the UI thread)

    def __init__(self, app):
        self.app = app
        self.timer = None
        self.came_from = None     # where the screen is while a go-to typed moved the session

    def open(self) -> None:
        app = self.app
        N, M = app.session.N, app.session.M
        app.query_one(StatusBar).prompt("go to: ", f"step (1..{N}) and op (1..{M}), e.g. \"{min(2, N)} {min(3, M)}\"; "
                                        f"\"{min(2, N)}\" alone is op 1 of step {min(2, N)} · Enter: go · Esc: cancel",
                                        self.typed, changed=self.ahead_later)
        self.came_from = None

    def typed(self, text: str | None) -> None:
        """Enter (``text``) or Esc (None) in the prompt."""
        app = self.app
        back, self.came_from = self.came_from, None
        if not text or not text.strip():
            if back is not None:               # (Esc after a go-ahead: back where the screen is)
                app.session.goto(*back)
                app.refresh_view()             # (the very screen, unless a resize drew the other)
            return
        try:
            k, op = parsed(text)
            target = app.session._check_pos(k, op - 1)
            stop = app.asking.limit(target, here=back)       # (back: where the screen still is)
            app.session.goto(*(stop or target))
        except ValueError as e:
            if back is not None:
                app.session.goto(*back)
            app.notify(str(e), title="go to", severity="error")
            return
        if stop is not None:
            app.asking.stopped_for_question()
            return
        app.status = (f"went to step {k}, op {op}", "")
        app.refresh_view()

    def ahead_later(self, typed: str) -> None:
        """Go where the go-to box says while the user has not pressed Enter (see ahead), once
        typing pauses."""
        if self.timer is not None:
            self.timer.stop()
        self.timer = self.app.set_timer(self.app.ahead.AFTER, lambda: self.ahead(typed))

    def ahead(self, typed: str) -> None:
        """Move the session to the position typed (within AHEAD_STEPS steps' ops of work) and
        build its op panel's boxes and layer cells, drawing nothing: the screen still shows where
        the cursor was, and Enter then finds the move done and the boxes built (on the
        784-256-128-10 net, the ops and the heatmaps are most of what a go-to costs); Esc goes
        back. Runs only while the box still holds ``typed``."""
        app = self.app
        bar = app.query_one(StatusBar)
        s = app.session
        if app.running or bar.typed != typed:
            return
        try:
            k, op = parsed(typed)
            if s.goto_cost(k, op - 1) > self.AHEAD_STEPS * s.M:
                return
        except ValueError:
            return
        if self.came_from is None:
            self.came_from = s.position
        s.goto(k, op - 1)
        if s.last_record is not None or s.current_op is not None:
            app.ahead.prebuild(s.values(), s.last_record)
