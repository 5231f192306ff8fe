"""The nnstep TUI: a view over a debugger Session. It works out no number itself: every number it
shows comes from the session (the engine), which it also asks to compute the next positions ahead
while the user reads (ahead.py). The app composes the screen, draws it from the session and
runs the actions of the action table (actions.py); its helpers: the look-ahead (ahead.py), the
collector's policy (gcpolicy.py), the go-to prompt (goto.py), --compare (comparing.py), explain
and the full-size tensor (explaining.py), the lesson's questions (asking.py), the palette
(palette.py)."""
from __future__ import annotations

import threading
import time
from typing import Iterable

import numpy as np
from textual import events, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.command import CommandPalette
from textual.reactive import reactive
from textual.screen import Screen

from ..debugger.lesson import Lesson
from ..debugger.session import Session
from ..model.scenario import Scenario
from . import actions, view
from .ahead import LookAhead, written
from .asking import Asking
from .comparing import Comparing
from .explaining import Explaining
from .gcpolicy import GcPolicy
from .goto import GoTo
from .messages import Progress, RunDone
from .palette import Palette, TensorCommands
from .presize import Presize
from .widgets.bars import HeaderBar, KeyBar
from .widgets.curves import GradNorms, LossCurve
from .widgets.layers import LayersTable
from .widgets.lesson import LessonPanel
from .widgets.memo import MemoHorizontal, MemoScreen, MemoVertical
from .widgets.oppanel import OpPanel, op_title
from .widgets.program import DiagramView, ProgramView
from .widgets.status import StatusBar
from .widgets.tensorbox import MAX_NUMBERS, has_nonfinite

THEME = "textual-dark"


def _bindings(k: actions.Key) -> list[Binding]:
    """The bindings of a key of the action table: the footer shows its first key."""
    first, *more = k.keys.split(",")
    prio = actions.is_own(k.keys)
    return [Binding(first, k.action, k.footer or k.title, show=bool(k.footer), key_display=k.display, priority=prio)] + \
        [Binding(key, k.action, k.footer or k.title, show=False, priority=prio) for key in more]


# the actions that a letter, space or sign runs (a priority binding): on a dialog, those keys are the
# dialog's (check_action); Esc stays the app's while a run goes, as it always was
_OWN = frozenset(k.action.split("(")[0] for k in actions.bound() if actions.is_own(k.keys) and k.keys != "escape")


class NnstepApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "nnstep"
    COMMANDS = App.COMMANDS | {TensorCommands}
    # from the action table; the app's letters, space and signs are priority bindings: the app takes
    # them at once, not after the key has been passed up from the focused widget (a message hop a
    # parent, ~0.2 ms each), and no widget of the main screen binds them
    BINDINGS = [b for k in actions.bound() for b in _bindings(k)]

    running: reactive[bool] = reactive(False, bindings=True)

    def __init__(self, scenario: Scenario, path: str | None = None, check_every: int = 64, compare=None,
                 predict: bool = False, record: str | None = None, **kw):
        super().__init__(**kw)
        self.scenario = scenario
        self.path = path
        self.session = Session(scenario)
        self.predict, self.record = predict, record
        self.lesson = Lesson(self.session, predict=predict, record=record)   # a bad [[ask]]: ScenarioError
        self.asking = Asking(self)
        self.ahead = LookAhead(self)
        self.gc_policy = GcPolicy(self)
        self.goto = GoTo(self)
        self.comparing = Comparing(self, compare)   # compare: a debugger.compare.Report, the user's own values
        self.explaining = Explaining(self)
        self.digits = 6
        self.show_diagram = False
        self.show_gradnorms = False
        self.layers_toggled = False         # L: the layers table off (tall screens) or on (short)
        self.check_every = check_every
        self._interrupt = threading.Event()
        self.status = (self._intro(scenario), "")      # the status line: (text, kind)
        if compare is not None:
            self.status = (self.comparing.first_status(), "stop")
        self._index_writers()
        self.room = None                    # the op panel's room (op_room)
        self._drawn_at = self._classes_at = None   # the sizes refresh_view and _size_classes drew for
        self._narrow = self._short = False
        self.layers_shown = True
        self.lesson_rows = 0
        self._binding_state = None          # the footer's keys as drawn (_bindings_changed)
        self._run_kind = ""                 # "continue" or "reverse", while a run goes
        self._run_until = None
        self.presize = Presize(self)
        self.theme = THEME

    @staticmethod
    def _intro(sc) -> str:
        return ("n: next operation · s: next stage · S: end of step · c: continue · e: explain a number · "
                "?: all keys")

    def _index_writers(self):
        self.stage_boxes = view.stage_boxes(self.session.ops)
        # a network whose parameters are too big for numbers gets the constant box layout
        self.big = any(np.size(v) > MAX_NUMBERS for v in self.session.scenario.initial.values())
        self.writer = view.writers(self.session.ops)
        self.masks = view.masked_cells(self.session)       # cells a mask hides, as the scenario says
        self.ahead.forget()

    # --- layout -----------------------------------------------------------------------------------
    def get_default_screen(self) -> Screen:
        return MemoScreen(id="_default")     # (widgets.memo: its lines are reused when unchanged)

    def compose(self) -> ComposeResult:
        yield HeaderBar(id="header")
        yield StatusBar(id="status")
        with MemoHorizontal(id="main"):
            with MemoVertical(id="left"):
                yield ProgramView(id="program")
                yield DiagramView(id="diagram")
                yield LossCurve(id="loss")
                yield GradNorms(id="gradnorms")
            with MemoVertical(id="right"):
                yield OpPanel(id="op")
                yield LessonPanel(id="lesson")
                with MemoVertical(id="layers-box"):      # the frame: the table inside has none,
                    yield LayersTable(id="layers")       # so its lines skip the styles cache
        yield KeyBar(id="footer")

    def on_mount(self) -> None:
        self.query_one("#program").border_title = "program"
        self.query_one("#diagram").border_title = "network (d: program)"
        self.query_one("#program").border_subtitle = "d: network"
        self.query_one("#loss").border_title = "loss curve"
        self.query_one("#gradnorms").border_title = "‖∂E/∂params‖ per layer (G)"
        self.query_one("#op").border_title = "operation"
        self.query_one("#layers-box").border_title = ("layers: output · local ∂out/∂in · upstream ∂E/∂out · "
                                                  "∂E/∂param · update Δ = new − old")
        self._size_classes()
        self.refresh_view()

    def on_resize(self, event) -> None:
        size = tuple(event.size)
        if size == self._drawn_at == self._classes_at:
            return                    # the first Resize, at the size on_mount drew for
        self._size_classes(event.size)
        if not self.running:
            self.refresh_view()

    def _size_classes(self, size=None):
        w, h = size or self.size
        self._classes_at = (w, h)
        self._narrow = w < 100
        try:
            self.query_one(KeyBar).show_command_palette = w >= 100     # ctrl+p still works
            self._binding_state = None
        except Exception:
            pass
        self.screen.set_class(w < 100, "-narrow")
        self.screen.set_class(h < 32, "-short")
        self._short = h < 32
        self._apply_layers_shown()

    def _apply_layers_shown(self):
        """A short screen (80x24) gives the whole right column to the operation, its formula and
        boxes; the layers table comes back with L (and L hides it on a tall one)."""
        shown = self.layers_toggled == self._short
        try:
            self.query_one("#layers-box").display = shown
            self.query_one(LayersTable).display = shown
        except Exception:
            pass
        self.layers_shown = shown

    # --- drawing ----------------------------------------------------------------------------------
    shown_position = (1, 0)
    """The session's position the screen shows: it drew it last (the look-ahead of a go-to moves
    the session ahead of the screen until Enter, see goto.GoTo.ahead)."""

    def refresh_view(self) -> None:
        """Redraw every panel from the session (UI thread, never while a worker runs)."""
        self._drawn_at = tuple(self.size)
        s = self.session
        k, i = self.shown_position = s.position
        N, M = s.N, s.M
        at_end = s.at_end
        cur = s.current_op
        rec = s.last_record
        hist = s.loss_history()
        loss = hist[-1][1] if hist else None
        narrow = self._narrow
        with self.batch_update():
            lr = float(s.value("lr")) if s.scenario.optimizer.schedule is not None and not at_end else None
            right, asked = self.lesson.score
            self.query_one(HeaderBar).show(s.scenario.name, k, N, s.stage, i, M, cur.name if cur else "", loss, lr=lr,
                                           score=(right, asked) if asked else None)
            self.lesson_rows = self._lesson_height() if self.query_one(LessonPanel).show(*self.asking.panel(self._short)) else 0
            text, kind = self.status
            if not text:
                text, kind = self._intro(s.scenario), ""
            self.query_one(StatusBar).show(text, kind)
            bps = {b.op for b in s.breakpoints if b.op}
            if self.show_diagram:
                from .diagram import current_node
                self.query_one(DiagramView).show(s.scenario, current_node(rec.op if rec else cur))
            else:
                self.query_one(ProgramView).show(s.ops, i, at_end, bps, rec.index if rec else None,
                                                 self.comparing.differs(rec.step if rec is not None and rec.step != k else k))
            if self.show_gradnorms:
                self.query_one(GradNorms).show(*s.grad_norm_arrays(), now=s.grad_norms_so_far(), step=k)
            else:
                lra = s.lr_arrays()
                self.query_one(LossCurve).show(hist, None if lra is None else lra[1].tolist())
            done = written(rec)
            rows = view.layer_rows(s, self.writer, done)
            self.room = self.op_room(len(rows))
            self.query_one(OpPanel).show(**self.op_view(s, rec, done), digits=self.digits,
                                         room=self.room, big=self.big)
            self.query_one(LayersTable).show(rows, self.digits, narrow)
        self._bindings_changed()
        self.ahead.later()
        self.presize.later()

    def op_view(self, s: Session, rec, written: set) -> dict:
        """What the operation panel shows at the session's position: the op just run (or the next
        one, at the start), its formula with the numbers and its tensors."""
        k, M = s.position[0], s.M
        cur = s.current_op
        if rec is not None:
            ins, outs = rec.inputs, dict(rec.outputs)
            op = rec.op
            where = "just ran" if rec.step == k else f"just ran (step {rec.step})"
            title = op_title(where, op, M)
            if cur is not None:
                title.append(f"   next: {cur.name}", "dim")
        else:
            op = cur
            ins = {n: s.value(n) for n in op.inputs}
            outs = {n: None for n in op.outputs}
            title = op_title("next", op, M)
        # Adam's bias corrections: t is the step number (1 − β^t, as torch.optim.Adam)
        clauses = view.formula_views(op, ins, outs, step=rec.step if rec is not None else k, digits=self.digits)
        return dict(title=title, clauses=clauses, slots=view.op_slots(op, ins, outs, written),
                    compare=self.comparing.theirs(rec.step, op.index) if rec is not None else None,
                    n_boxes=self.stage_boxes.get(op.stage, 0), stage=op.stage, masks=self.masks)

    def action_layers(self) -> None:
        self.layers_toggled = not self.layers_toggled
        self._apply_layers_shown()
        self.query_one(OpPanel).forget_height()
        self.refresh_view()

    def op_room(self, layer_rows: int) -> tuple[int, int, bool]:
        """(inner width, most rows, whether it takes them all) of the operation panel, from the
        screen size (app.tcss: the left column is 33 wide, 25 when narrow; header 1, status 2 or 1
        when short, footer 1). The layers table below keeps its header and rows (up to a third of
        the column); without it (L, or a short screen) the panel takes the whole column but the
        lesson's rows (it left them blank below it)."""
        w, h = self.size
        right = w - (33 if w >= 100 else 25)
        col = h - 1 - (1 if h < 32 else 2) - 1
        shown = self.layers_shown
        layers = min(3 + layer_rows, max(5, col // 3)) if shown else 0
        return max(10, right - 2), max(8, col - layers - self.lesson_rows), not shown

    def _lesson_height(self) -> int:
        """The lesson panel's rows (app.tcss: 7, or 5 on a short screen)."""
        return 5 if self._short else 7

    def _bindings_changed(self) -> None:
        """The footer's keys, dim where the action cannot run now; redrawn only when that changes."""
        state = tuple(self.can_run(b.action.split("(")[0]) for b in self.BINDINGS)
        if state != self._binding_state:
            self._binding_state = state
            self.refresh_bindings()            # the command palette's view of the same
            # as Textual's Footer: an action that says False is hidden, None is dimmed
            self.query_one(KeyBar).set_keys([({"escape": "esc"}.get(b.key, b.key_display or b.key), b.description,
                                              bool(on)) for b, on in zip(self.BINDINGS, state)
                                             if b.show and on is not False])

    # --- status -----------------------------------------------------------------------------------
    def _set_stop(self, stop) -> None:
        if stop is None:
            return
        if stop.reason in ("until",):
            self.status = ("", "")
            return
        kind = {"nonfinite": "bad", "breakpoint": "stop"}.get(stop.reason, "stop")
        msg = stop.message
        if stop.reason == "interrupted":       # the screen counts ops from 1 (the session from 0)
            msg = f"interrupted (Esc) at step {stop.step}, before op {stop.index + 1}/{self.session.M}"
            if self._run_kind == "reverse":
                msg = (f"reverse-continue interrupted (Esc) before it found an earlier stop; the cursor "
                       f"stayed at step {stop.step}, op {stop.index + 1}/{self.session.M}")
        self.status = (f"■ stopped: {msg}", kind)

    def check_record(self, rec) -> None:
        """A single step can produce a NaN/Inf too: say so, naming the op and tensor."""
        self.status = ("", "")
        if rec is None:
            self.status = ("■ at the end of training", "stop")
            return
        for t, v in rec.outputs.items():
            if v is not None and has_nonfinite(v):
                self.status = (f"■ {rec.op.name} produced a non-finite value in {t}", "bad")
                return

    # --- actions ----------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # a dialog's keys are its own: the app's priority bindings pass them on (to the dialog's
        # bindings or its input) while one is on top; the palette's commands run when it is closing
        if action in _OWN and self.screen_stack and self.screen is not self.screen_stack[0] \
                and not isinstance(self.screen, CommandPalette):
            return False
        return self.can_run(action)

    def can_run(self, action: str) -> bool | None:
        """Whether ``action`` can run now: True, None (not now: dimmed in the footer) or False (not
        here: hidden). The footer and the palette ask this; Textual asks check_action."""
        if action == "interrupt":
            return True if self.running else False
        if self.running:
            return True if action in ("quit", "help", "command_palette") else None
        s = self.session
        if action in ("prev", "reverse") and s.at_start:
            return None
        if action in ("next", "stage", "finish", "continue", "breakpoint") and s.at_end:
            return None
        if action == "answers" and not self.lesson.asks:
            return False
        return True

    def action_answers(self) -> None:
        """Your answers so far: in a browser (nnstep serve), a download; in a terminal, where
        --record keeps them (else a file in your downloads folder, as Textual saves one)."""
        doc = self.lesson.document_text()
        right, asked = self.lesson.score
        if self.record and not self.is_web:
            self.lesson.save()
            self.status = (f"your answers ({right}/{asked} right) are in {self.record}, rewritten after each one", "")
            self.refresh_view()
            return
        name = f"{self.scenario.name or 'lesson'}-answers.json".replace("/", "_").replace(" ", "_")
        import io
        self.deliver_text(io.StringIO(doc), save_filename=name, open_method="download", mime_type="application/json")
        self.status = (f"your answers ({right}/{asked} right): {name}" +
                       (" (downloading)" if self.is_web else " (saved in your downloads folder)"), "")
        self.refresh_view()

    def action_next(self) -> None:
        if self.asking.ask_here():               # a question before this op: the answer box instead
            return
        self.check_record(self.session.step())
        self.refresh_view()

    def action_prev(self) -> None:
        self.session.back()
        self.status = ("", "")
        self.refresh_view()

    def action_stage(self) -> None:
        self._move_to(self.session.stage_end(), self.session.next_stage)

    def _move_to(self, target: tuple[int, int], move) -> None:
        """s and S: ``move()`` to ``target``, unless a question waits on the way (then to it, and ask)."""
        if self.asking.ask_here():
            return
        stop = self.asking.limit(target)
        if stop is not None:
            self._set_stop(self.session.run(until=stop))
            if self.session.position == stop:
                self.asking.stopped_for_question()
                return
        else:
            self._set_stop(move())
        self.refresh_view()

    def action_finish(self) -> None:
        if self.session.at_end:
            return
        self._move_to((self.session.position[0] + 1, 0), self.session.finish_step)

    def action_continue(self) -> None:
        if self.asking.ask_here():
            return
        self._start_run("continue")

    def action_reverse(self) -> None:
        self._start_run("reverse")

    def action_breakpoint(self) -> None:
        s = self.session
        op = s.current_op
        if op is None:
            return
        stop = s.last_stop
        if (stop is not None and stop.reason == "breakpoint" and stop.breakpoint is not None
                and stop.breakpoint.when is not None and (stop.step, stop.index) == s.position
                and stop.breakpoint in s.breakpoints):
            # right after a conditional stop, b removes that condition (it has no op to toggle)
            s.remove_breakpoint(stop.breakpoint)
            self.status = (f"removed breakpoint {stop.breakpoint.where}: when \"{stop.breakpoint.when.text}\"", "")
            self.refresh_view()
            return
        on = s.toggle_breakpoint(op.name)
        self.status = (f"breakpoint {'set before' if on else 'removed from'} \"{op.name}\"", "")
        self.refresh_view()

    async def on_event(self, event) -> None:
        # while g's prompt is open in the status line, it takes every key (before any binding or
        # focused widget sees it), and a click anywhere cancels it
        if isinstance(event, (events.Key, events.MouseDown)) and self.screen_stack and \
                self.screen is self.screen_stack[0]:
            bar = self._status_bar()
            if bar is not None and bar.prompting:
                if isinstance(event, events.Key):
                    event.stop()
                    bar.prompt_key(event)
                    return
                bar.end_prompt(False)
            elif isinstance(event, events.Key):
                if self.status[0] and not self.status[1] and event.key not in self._PROMPT_KEYS:
                    self._answered(bar)
        await super().on_event(event)

    # g: its prompt covers the status line, and Esc brings back what the line said
    _PROMPT_KEYS = frozenset(k for a in actions.KEYS if a.action == "goto" for k in a.keys.split(","))

    def _answered(self, bar) -> None:
        """A key: the status line's answer to the last action ("went to step 1, op 8", "7
        significant digits") is done with; the action of this key says its own, or the intro
        shows. A stop, a NaN/Inf or an error stays until the cursor moves (n, p, ... clear it)."""
        self.status = ("", "")
        if bar is not None:
            bar.show(self._intro(self.session.scenario), "")

    def _status_bar(self):
        from textual.css.query import NoMatches
        try:
            return self.query_one(StatusBar)
        except NoMatches:                  # not composed yet, or shutting down
            return None

    def action_goto(self) -> None:
        self.goto.open()

    def action_restart(self) -> None:
        if self.path is not None:
            from ..errors import ScenarioError
            from ..scenario import load_scenario
            try:
                sc = load_scenario(self.path)
            except ScenarioError as e:
                self.notify(f"{e}\nKept the scenario as it was loaded.", title="reload failed", severity="error",
                            timeout=10)
                self.status = (f"reload failed: {e}", "error")
                self.refresh_view()
                return
            kept = [b.op for b in self.session.breakpoints if b.op and b.where == "breakpoint (set here)"]
            lesson = Lesson(Session(sc), predict=self.predict, record=self.record)
            self.scenario = sc
            self.session = lesson.session
            self.lesson = lesson
            self.asking.verdict = None
            ops = {op.name for op in self.session.ops}
            for name in kept:                      # breakpoints toggled here survive a reload
                if name in ops and not self.session.has_op_breakpoint(name):
                    self.session.toggle_breakpoint(name)
            self._index_writers()
            self.query_one(OpPanel).forget_heights()   # the heights the old scenario needed
            self.presize.forget()
            self.status = (f"reloaded {self.path}; back at the start", "")
        else:
            self.session.restart()
            self.asking.restart()
            self.status = ("restarted", "")
        self.refresh_view()
        self.gc_policy.stale = self.path is not None   # (the old scenario: collected at the next idle)

    def action_digits(self, d: int) -> None:
        self.digits = min(15, max(2, self.digits + d))
        self.status = (f"{self.digits} significant digits", "")
        self.refresh_view()

    def action_digits(self, d: int) -> None:
        self.digits = min(15, max(2, self.digits + d))
        self.status = (f"{self.digits} significant digits", "")
        self.refresh_view()

    def action_next_difference(self) -> None:
        self.comparing.next_difference()

    def action_diagram(self) -> None:
        self.show_diagram = not self.show_diagram
        self.query_one(ProgramView).display = not self.show_diagram
        self.query_one(DiagramView).display = self.show_diagram
        self.refresh_view()

    def action_gradnorms(self) -> None:
        self.show_gradnorms = not self.show_gradnorms
        g = self.query_one(GradNorms)
        g.styles.height = min(14, 3 + len(self.session.grad_layers))
        self.query_one(LossCurve).display = not self.show_gradnorms
        g.display = self.show_gradnorms
        self.refresh_view()

    # (the explain module and the screens are imported on first use: the first screen needs none of
    # them, and importing them cost ~7 ms of every start)
    def action_help(self) -> None:
        from .screens.dialogs import HelpScreen

        if isinstance(self.screen, HelpScreen):
            self.screen.dismiss(None)
        else:
            self.push_screen(HelpScreen())

    def action_help(self) -> None:
        from .screens.dialogs import HelpScreen     # (on first use: the first screen needs no dialog)

        if isinstance(self.screen, HelpScreen):
            self.screen.dismiss(None)
        else:
            self.push_screen(HelpScreen())

    # --- tensors and explanations (explaining.py) -------------------------------------------------
    def action_open_tensor(self) -> None:
        self.explaining.open_focused()

    def on_tensor_canvas_open(self, message) -> None:
        if message.box.value is not None and not self.running:
            self.explaining.open(message.box.tensor_name, message.box.value)

    def open_tensor_by_name(self, name: str) -> None:
        self.explaining.open_by_name(name)

    def action_explain(self) -> None:
        self.explaining.explain_here()

    def explain_tensor(self, name: str | None) -> None:
        self.explaining.explain(name)

    # --- the continue worker ----------------------------------------------------------------------
    def _start_run(self, kind: str) -> None:
        if self.running:
            return
        self._interrupt.clear()
        self._run_kind = kind
        # a continue stops before the first question on its way (where it asks)
        self._run_until = self.asking.limit((self.session.N + 1, 0)) if kind == "continue" else None
        self.running = True
        self.status = ("running… (Esc interrupts)" if kind == "continue" else "running backwards… (Esc interrupts)",
                        "stop")
        self.query_one(StatusBar).show(*self.status)
        self.query_one(HeaderBar).show(self.session.scenario.name, *self._hdr(self.session.position),
                                       running=True)
        self._run_worker(kind)

    def _hdr(self, pos):
        s = self.session
        k, i = pos
        stage = s.ops[i].stage if k <= s.N else "done"
        name = s.ops[i].name if k <= s.N else ""
        return k, s.N, stage, i, s.M, name, None

    @work(thread=True, exclusive=True, group="run", exit_on_error=False)
    def _run_worker(self, kind: str) -> None:
        s = self.session
        last = [0.0, 0.05]          # time of the last progress post, interval

        def should_stop() -> bool:
            now = time.monotonic()
            if now - last[0] > last[1]:
                if kind == "continue":
                    hist = s.loss_history()
                    # long runs: post less often and at most ~2000 points (the curve is ~100 cells wide)
                    last[1] = 0.05 if len(hist) < 20_000 else 0.5
                    if len(hist) > 2000:
                        hist = hist[:: len(hist) // 2000 + 1] + hist[-1:]
                    self.post_message(Progress(s.position, hist))
                elif s.scanning is not None:      # reverse: the cursor stays; say where the scan is
                    self.post_message(Progress(s.position, None, scanning=s.scanning))
                last[0] = time.monotonic()
            return self._interrupt.is_set()

        try:
            if kind == "continue":
                stop = s.run(until=self._run_until, should_stop=should_stop, check_every=self.check_every)
            else:
                stop = s.reverse_run(should_stop=should_stop, check_every=self.check_every)
        except Exception as e:  # a bug, shown rather than lost
            self.post_message(RunDone(None, error=f"{type(e).__name__}: {e}"))
            return
        self.post_message(RunDone(stop))

    def on_progress(self, msg: Progress) -> None:
        if not self.running:
            return
        if msg.scanning is not None:
            sk, si = msg.scanning
            self.status = (f"running backwards… searching step {sk} for an earlier stop (Esc interrupts)", "stop")
            self.query_one(StatusBar).show(*self.status)
            return
        k, i = msg.position
        hist = msg.history
        loss = hist[-1][1] if hist else None
        with self.batch_update():
            h = self._hdr((k, i))
            self.query_one(HeaderBar).show(self.session.scenario.name, *h[:-1], loss, running=True)
            if not self.show_gradnorms:         # the norms plot is redrawn when the run ends
                self.query_one(LossCurve).show(hist, LossCurve.KEEP)

    def on_run_done(self, msg: RunDone) -> None:
        self.running = False
        if msg.error:
            self.status = (f"error while running: {msg.error}", "error")
        else:
            self._set_stop(msg.stop)
            if self._run_kind == "continue" and self._run_until is not None \
                    and self.session.position == self._run_until:
                self.asking.stopped_for_question()
                return
        self.refresh_view()

    def on_unmount(self) -> None:
        self._interrupt.set()                  # quitting while a continue runs stops its thread
        self.gc_policy.restore()

    def action_interrupt(self) -> None:
        if self.running:
            self._interrupt.set()

    def export_screenshot(self, *, title: str | None = None, simplify: bool = False) -> str:
        """Textual's SVG of the screen, marked ``xml:space="preserve"``: Textual writes a cell's
        spaces as no-break spaces, which browsers keep but SVG renderers such as rsvg-convert (the
        one course authors convert with) drop at the start of a text run, shifting numbers and
        indentation left ("-0.2968=  -0.2968"). `nnstep screenshot`, the palette's Screenshot and
        snapshot tests all go through here."""
        svg = super().export_screenshot(title=title, simplify=simplify)
        return svg.replace("<svg ", '<svg xml:space="preserve" ', 1)

    # --- palette ----------------------------------------------------------------------------------
    def action_command_palette(self) -> None:
        """Textual's, with the palette below (ctrl+p)."""
        if self.use_command_palette and not CommandPalette.is_open(self):
            self.push_screen(Palette(id="--command-palette"))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        for k in actions.KEYS:
            if not k.title or self.can_run(k.action.split("(")[0]) is not True:
                continue
            yield SystemCommand(k.title, actions.palette_help(k), lambda a=k.action: self.call_later(self.run_action, a))
        yield SystemCommand("Theme", "change the colour theme", self.action_change_theme)
        yield SystemCommand("Screenshot", "save an SVG of this screen", self.deliver_screenshot)


def make_app(path_or_scenario, **kw) -> NnstepApp:
    """The app for a scenario file (or a loaded Scenario), ready for ``app.run()``, ``app.run_test()``
    or pytest-textual-snapshot's ``snap_compare``. Raises nnstep.ScenarioError for a bad file."""
    if isinstance(path_or_scenario, Scenario):
        return NnstepApp(path_or_scenario, path=None if path_or_scenario.path == "<string>"
                         else path_or_scenario.path, **kw)
    from ..scenario import load_scenario
    path = str(path_or_scenario)
    return NnstepApp(load_scenario(path), path=path, **kw)
