"""The look-ahead: what the next keys show, computed while the user reads (docs/internals.md, "What a
key costs in the TUI"). It runs the session's next ops into its trail (Session.peek: the cursor
does not move) and, where n, s and S would land, builds the op panel's boxes and the layer cells
from the trail's arrays, drawing nothing; n, s and S then find everything done."""
from __future__ import annotations

from . import view
from .widgets.layers import LayersTable
from .widgets.oppanel import OpPanel


def written(rec) -> set:
    """The tensors the op of ``rec`` wrote (none before the first op)."""
    return set(rec.outputs) | set(rec.op.also_writes) if rec is not None else set()


class LookAhead:
    AFTER = 0.03             # s after a redraw: past the frame, before a reader's next key

    def __init__(self, app):
        self.app = app
        self.timer = None
        self.at = None                 # the position the look-ahead works for, and
        self.n = 0                     # ... how many ops ahead of it it has gone
        self.stops: tuple = ()         # ... where n, s and S land from it (op counts ahead)
        self.work = None               # ... and the landing point's panel being built (steps)
        self.table_names = None        # the tensors of the layers table (the same at any position)

    def forget(self) -> None:
        """A new scenario: its layers table's tensors are others."""
        self.table_names = None

    def later(self) -> None:
        """Start again from the session's position, once the frame is out (see step)."""
        app = self.app
        if self.timer is not None:
            self.timer.stop()
        app.gc_policy.key_came()
        s = app.session
        self.at = k, i = s.position
        self.n = 0
        self.work = None
        self.stops = ()
        if not s.at_end:                      # the next op, the end of its stage, of the step
            stage_end = next((t for t in range(i, s.M) if s.ops[t].stage != s.ops[i].stage), s.M)
            self.stops = (1, stage_end - i, s.M - i)
        self.timer = app.set_timer(self.AFTER, self.step)

    def step(self) -> None:
        """One op more ahead of the cursor into the session's trail (Session.peek), then again
        after any key waiting (call_later), up to the step's end; where n, s and S would land
        (the next op, the end of the stage, the end of the step) the op panel's boxes are built
        and framed where it will place them (OpPanel's plan, as show() will) and the layer cells
        formatted, from the trail's arrays (the cursor does not move). So n, s and S find
        everything done: on the 784-256-128-10 net the ops, their heatmaps and the norms in the
        table are most of what those keys cost. Each call is one op, or one box of a landing
        point's panel, or its table's cells (a key that comes meanwhile waits for that much, ~1-3
        ms; a whole panel of heatmaps was up to 12 ms); the positions stay in the trail while the
        cursor is in the step."""
        app = self.app
        s = app.session
        if app.running or s.position != self.at or not app.screen_stack \
                or app.screen is not app.screen_stack[0]:
            return                             # (moved on, running, a dialog open)
        if self.work is not None:              # a landing point's panel, a box a call
            if next(self.work, StopIteration) is StopIteration:
                self.work = None
            app.call_later(self.step)
            return
        n = self.n + 1
        if not self.stops or n > self.stops[-1] or not s.peek(n):
            app.gc_policy.idle()               # (done: the step's end, or training's)
            return
        self.n = n
        if n in self.stops:
            self.work = self.prebuild_steps(*s.ahead(n))
        app.call_later(self.step)

    def prebuild(self, env: dict, rec) -> None:
        """Build the boxes of the op panel showing ``rec`` (the op just run; None: the start of
        training, where the panel shows the next op's inputs) where the panel will place them, and
        format the layer cells of the tensors in ``env``, drawing nothing."""
        for _ in self.prebuild_steps(env, rec):
            pass

    def prebuild_steps(self, env: dict, rec):
        """prebuild, a box a step (a generator: the look-ahead runs a step a callback)."""
        app = self.app
        if rec is not None:
            op, ins, outs, step = rec.op, rec.inputs, dict(rec.outputs), rec.step
            compare = app.comparing.theirs(rec.step, op.index)
        else:                                   # (as the app's op view shows it)
            op, step, compare = app.session.current_op, app.session.position[0], None
            ins, outs = {n: env.get(n) for n in op.inputs}, {n: None for n in op.outputs}
        slots = view.op_slots(op, ins, outs, written(rec))
        # (a small network's places depend on its formula's lines: the numbers in them)
        clauses = () if app.big else view.formula_views(op, ins, outs, step=step, digits=app.digits)
        yield from app.query_one(OpPanel).prebuild_steps(slots, app.digits, app.stage_boxes.get(op.stage, 0),
                                                         app.room, compare, clauses, app.big, app.masks)
        yield
        if self.table_names is None:
            self.table_names = [c[0] for r in view.layer_rows(app.session, app.writer, set())
                                for c in r.values() if isinstance(c, tuple)]
        LayersTable.prebuild([env.get(t) for t in self.table_names], app.digits)
