"""The nnstep TUI: a view over a debugger Session. It computes nothing itself; every number it shows
comes from the session (the engine)."""
from __future__ import annotations

import gc
import threading
import time
from dataclasses import dataclass
from typing import Iterable

import numpy as np
from textual import events, on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.command import CommandPalette, Hit, Hits, Provider
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Button, Input, OptionList

from ..debugger.lesson import Lesson
from ..debugger.session import Session
from ..model.scenario import Scenario
from . import view
from .widgets.panels import DiagramView, GradNorms, HeaderBar, KeyBar, LayersTable, LossCurve, OpPanel, ProgramView, StatusBar, op_title
from .asking import Asking
from .widgets.lesson import LessonPanel
from .widgets.memo import MemoHorizontal, MemoScreen, MemoVertical
from .widgets.tensor import MAX_NUMBERS, TensorCanvas, has_nonfinite

THEME = "textual-dark"

# (action, title in the palette, help)
ACTIONS = [
    ("next", "Next operation", "run the next operation (n, space)"),
    ("prev", "Previous operation", "undo one operation, exactly (p)"),
    ("stage", "Next stage", "run to the first operation of the next stage (s)"),
    ("finish", "End of step", "run to the end of this training step (S)"),
    ("continue", "Continue", "run to the next breakpoint, NaN/Inf or the end (c)"),
    ("reverse", "Reverse-continue", "back to the previous breakpoint or NaN/Inf (C)"),
    ("breakpoint", "Toggle breakpoint", "stop before the next operation in every step (b)"),
    ("goto", "Go to…", "a step and an operation, typed (g)"),
    ("restart", "Restart", "reload the scenario file and go back to the start (r)"),
    ("next_difference", "Next difference from yours", "with --compare MINE.npz: go to the next op whose outputs differ from your values (f)"),
    ("diagram", "Network diagram", "show the network as a graph in place of the program, and back (d)"),
    ("layers", "Layers table", "show or hide the layers table (hidden by default on a short screen such as 80x24) (L)"),
    ("gradnorms", "Gradient norms per layer", "plot each layer's gradient norm over the steps, log scale, in place of the loss curve (G)"),
    ("explain", "Explain one number", "the chain rule for an element of a gradient, or how a value was computed (e)"),
    ("open_tensor", "Open tensor full-size", "the focused tensor with row and column indices (Enter)"),
    ("digits(1)", "More digits", "show more significant digits (+)"),
    ("digits(-1)", "Fewer digits", "show fewer significant digits (-)"),
    ("answers", "Your answers", "a lesson's questions: save your answers (--record), or download them in a browser (a)"),
    ("interrupt", "Interrupt", "stop a running continue (Esc)"),
    ("help", "Help", "all keys (?)"),
    ("quit", "Quit", "leave nnstep (q)"),
]


@dataclass
class Progress(Message):
    """Posted by the continue worker: a cheap snapshot of where it is (for a reverse-continue, the
    step its scan has reached)."""
    position: tuple[int, int]
    history: list | None
    scanning: tuple[int, int] | None = None


@dataclass
class RunDone(Message):
    stop: object
    error: str | None = None


class TensorCommands(Provider):
    """'open <tensor>' and 'explain <param>' for every tensor of the scenario."""

    async def search(self, query: str) -> Hits:
        app = self.app
        if not isinstance(app, NnstepApp) or app.running:
            return
        m = self.matcher(query)
        for name in sorted(app.session.names):
            for verb, cb in (("open", app.open_tensor_by_name),):
                text = f"{verb} {name}"
                score = m.match(text)
                if score > 0:
                    yield Hit(score, m.highlight(text), lambda n=name, c=cb: c(n), help="show this tensor full-size")
        for name in sorted(app.session.names):
            text = f"explain {name}"
            score = m.match(text)
            if score > 0:
                yield Hit(score, m.highlight(text), lambda n=name: app.explain_tensor(n),
                          help="the chain rule for one element (a gradient), or how it was computed")


def _written(rec) -> set:
    """The tensors the op of ``rec`` wrote (none before the first op)."""
    return set(rec.outputs) | set(rec.op.also_writes) if rec is not None else set()


class NnstepApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "nnstep"
    COMMANDS = App.COMMANDS | {TensorCommands}
    BINDINGS = [
        Binding("n", "next", "next", tooltip="run the next operation"),
        Binding("space", "next", "next", show=False),
        Binding("p", "prev", "prev", tooltip="undo one operation"),
        Binding("s", "stage", "stage"),
        Binding("S", "finish", "step", key_display="S"),
        Binding("c", "continue", "cont"),
        Binding("C", "reverse", "rev", key_display="C"),
        Binding("b", "breakpoint", "break"),
        Binding("g", "goto", "goto"),
        Binding("e", "explain", "explain"),
        Binding("enter", "open_tensor", "open", show=False),
        Binding("plus,equals_sign", "digits(1)", "digits+", show=False),
        Binding("minus", "digits(-1)", "digits-", show=False),
        Binding("escape", "interrupt", "stop", priority=True),
        Binding("question_mark", "help", "help", key_display="?"),
        Binding("q", "quit", "quit"),
        Binding("r", "restart", "reload"),
        Binding("f", "next_difference", "≠next", show=False),
        Binding("d", "diagram", "graph"),
        Binding("G", "gradnorms", "norms", key_display="G"),
        Binding("a", "answers", "answers", show=False),
        Binding("L", "layers", "layers", key_display="L"),   # last: the first cut off in a narrow footer
    ]

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
        self.digits = 6
        self.show_diagram = False
        self.compare = compare              # a debugger.compare.Report: the user's own values
        self.show_gradnorms = False
        self.layers_toggled = False         # L: the layers table off (tall screens) or on (short)
        self.check_every = check_every
        self._interrupt = threading.Event()
        self._status = (self._intro(scenario), "")
        if compare is not None:
            self._status = (self._compare_status(), "stop")
        self._index_writers()
        self._ahead_timer = self._goto_timer = None
        self._ahead_at = None                 # the position the look-ahead works for, and
        self._ahead_n = 0                     # ... how many ops ahead of it it has gone
        self._ahead_stops: tuple = ()         # ... where n, s and S land from it (op counts ahead)
        self._ahead_work = None               # ... and the landing point's panel being built (steps)
        self._gc_was = None                   # the collector's thresholds before the app (see _gc_settle)
        self._gc_stale = False                # a reload: settle again
        self._gc_timer = None
        self._goto_from = None                # where the screen is while a go-to typed moved the session
        self._presized = None                 # (session, size, digits, layers shown, lesson rows) measured for
        self._measured: set = set()           # ... every such key measured so far
        self._presize_pending = False
        self.theme = THEME

    @staticmethod
    def _intro(sc) -> str:
        return ("n: next operation · s: next stage · S: end of step · c: continue · e: explain a number · "
                "?: all keys")

    def _index_writers(self):
        self._stage_boxes = view.stage_boxes(self.session.ops)
        # a network whose parameters are too big for numbers gets the constant box layout
        self._big = any(np.size(v) > MAX_NUMBERS for v in self.session.scenario.initial.values())
        self.writer = view.writers(self.session.ops)
        self._masks = view.masked_cells(self.session)       # cells a mask hides, as the spec says
        self._table_names = None

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

    # Python's cyclic garbage collector, left as it is, ran during keys: on the 784-256-128-10 net
    # a collection of the middle generation (1.5-2.4 ms) came about once a key, and of the whole
    # heap (~20 ms: the caches of strips) about once in ten (pty timeline, gc.callbacks). It now
    # runs while the user reads: the young generations when the look-ahead is done, the whole
    # heap after a second without a key; a key allocates far fewer objects than GC_YOUNG.
    GC_YOUNG = 100_000          # allocations between automatic collections (Python's default: 700)
    GC_ALL_AFTER = 1.0          # s without a key before the whole heap is collected

    def _gc_settle(self) -> None:
        """What start-up made lives as long as the app: collect it once and freeze it (never scanned
        again); from now on collect when idle (above). Again after a reload: the old scenario's
        objects are garbage now (frozen, they would never be collected)."""
        if self._gc_was is None:
            self._gc_was = gc.get_threshold()
            gc.set_threshold(self.GC_YOUNG, *self._gc_was[1:])
        self._gc_stale = False
        gc.unfreeze()
        gc.collect()
        gc.freeze()

    def _gc_idle(self) -> None:
        """The look-ahead is done: collect the young generations now (the first time, and after a
        reload, settle: the first frame has been written by then, a collection holds the writer
        thread back), and the whole heap if no key comes for GC_ALL_AFTER."""
        if self._gc_was is None or self._gc_stale:
            if self._gc_was is None and (self.lesson.asks or self.lesson.notes):
                from .widgets.lesson import warm_up
                warm_up()                      # (Markdown, for the first note: see widgets.lesson)
            self._gc_settle()
        else:
            gc.collect(1)
        if self._gc_timer is not None:
            self._gc_timer.stop()
        self._gc_timer = self.set_timer(self.GC_ALL_AFTER, gc.collect)

    def _gc_restore(self) -> None:
        if self._gc_was is not None:           # (as it was: the process may run on, e.g. tests)
            gc.set_threshold(*self._gc_was)
            gc.unfreeze()
            self._gc_was = None

    def on_resize(self, event) -> None:
        size = tuple(event.size)
        if size == getattr(self, "_drawn_at", None) == getattr(self, "_classes_at", None):
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
        shown = self.layers_toggled == getattr(self, "_short", False)
        try:
            self.query_one("#layers-box").display = shown
            self.query_one(LayersTable).display = shown
        except Exception:
            pass
        self._layers_shown = shown

    # --- drawing ----------------------------------------------------------------------------------
    shown_position = (1, 0)
    """The session's position the screen shows: it drew it last (the look-ahead of a go-to moves
    the session ahead of the screen until Enter, see _goto_ahead)."""

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
        narrow = getattr(self, "_narrow", False)
        with self.batch_update():
            lr = float(s.value("lr")) if s.scenario.optimizer.schedule is not None and not at_end else None
            right, asked = self.lesson.score
            self.query_one(HeaderBar).show(s.scenario.name, k, N, s.stage, i, M, cur.name if cur else "", loss, lr=lr,
                                           score=(right, asked) if asked else None)
            self._lesson_rows = self._lesson_height() if self.query_one(LessonPanel).show(*self.asking.panel(getattr(self, "_short", False))) else 0
            text, kind = self._status
            if not text:
                text, kind = self._intro(s.scenario), ""
            self.query_one(StatusBar).show(text, kind)
            bps = {b.op for b in s.breakpoints if b.op}
            if self.show_diagram:
                from .diagram import current_node
                self.query_one(DiagramView).show(s.scenario, current_node(rec.op if rec else cur))
            else:
                self.query_one(ProgramView).show(s.ops, i, at_end, bps, rec.index if rec else None,
                                                 self._differs(rec.step if rec is not None and rec.step != k else k))
            if self.show_gradnorms:
                self.query_one(GradNorms).show(*s.grad_norm_arrays(), now=s.grad_norms_so_far(), step=k)
            else:
                lra = s.lr_arrays()
                self.query_one(LossCurve).show(hist, None if lra is None else lra[1].tolist())
            written = _written(rec)
            rows = view.layer_rows(s, self.writer, written)
            self._room = self._op_room(len(rows))
            self.query_one(OpPanel).show(**self._op_view(s, rec, written), digits=self.digits,
                                         room=self._room, big=self._big)
            self.query_one(LayersTable).show(rows, self.digits, narrow)
        self._bindings_changed()
        self._ahead_later()
        if not self._big and not self._presize_pending and self._presized != self._presize_key():
            self._presize_pending = True           # a new scenario, size, precision or layout
            self.call_after_refresh(self._presize)

    def _op_view(self, s: Session, rec, written: set) -> dict:
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
                    compare=self._theirs(rec.step, op.index) if rec is not None else None,
                    n_boxes=self._stage_boxes.get(op.stage, 0), stage=op.stage, masks=self._masks)

    def _prebuild(self, env: dict, rec) -> None:
        """Build the boxes of the op panel showing ``rec`` (the op just run; None: the start of
        training, where the panel shows the next op's inputs) where the panel will place them, and
        format the layer cells of the tensors in ``env``, drawing nothing (see _ahead)."""
        for _ in self._prebuild_steps(env, rec):
            pass

    def _prebuild_steps(self, env: dict, rec):
        """_prebuild, a box a step (a generator: the look-ahead runs a step a callback)."""
        if rec is not None:
            op, ins, outs, step = rec.op, rec.inputs, dict(rec.outputs), rec.step
            compare = self._theirs(rec.step, op.index)
        else:                                   # (as _op_view shows it)
            op, step, compare = self.session.current_op, self.session.position[0], None
            ins, outs = {n: env.get(n) for n in op.inputs}, {n: None for n in op.outputs}
        slots = view.op_slots(op, ins, outs, _written(rec))
        # (a small network's places depend on its formula's lines: the numbers in them)
        clauses = () if self._big else view.formula_views(op, ins, outs, step=step, digits=self.digits)
        yield from self.query_one(OpPanel).prebuild_steps(slots, self.digits, self._stage_boxes.get(op.stage, 0),
                                                          self._room, compare, clauses, self._big, self._masks)
        yield
        if self._table_names is None:           # (the tensors of the layers table: the same at any position)
            self._table_names = [c[0] for r in view.layer_rows(self.session, self.writer, set())
                                 for c in r.values() if isinstance(c, tuple)]
        LayersTable.prebuild([env.get(t) for t in self._table_names], self.digits)

    AHEAD_AFTER = 0.03       # s after a redraw: past the frame, before a reader's next key

    def _ahead_later(self) -> None:
        """Compute what the next keys show while the user reads (see _ahead)."""
        if self._ahead_timer is not None:
            self._ahead_timer.stop()
        if self._gc_timer is not None:
            self._gc_timer.stop()
            self._gc_timer = None
        s = self.session
        self._ahead_at = k, i = s.position
        self._ahead_n = 0
        self._ahead_work = None
        self._ahead_stops = ()
        if not s.at_end:                      # the next op, the end of its stage, of the step
            stage_end = next((t for t in range(i, s.M) if s.ops[t].stage != s.ops[i].stage), s.M)
            self._ahead_stops = (1, stage_end - i, s.M - i)
        self._ahead_timer = self.set_timer(self.AHEAD_AFTER, self._ahead)

    def _ahead(self) -> None:
        """One op more ahead of the cursor into the session's trail (Session.peek), then again
        after any key waiting (call_later), up to the step's end; where n, s and S would land
        (the next op, the end of the stage, the end of the step) the op panel's boxes are built
        and framed where it will place them (OpPanel._plan, as show() will) and the layer cells
        formatted, from the trail's arrays (the cursor does not move). So n, s and S find
        everything done: on the 784-256-128-10 net the ops, their heatmaps and the norms in the
        table are most of what those keys cost. Each call is one op, or one box of a landing
        point's panel, or its table's cells (a key that comes meanwhile waits for that much, ~1-3
        ms; a whole panel of heatmaps was up to 12 ms); the positions stay in the trail while the
        cursor is in the step."""
        s = self.session
        here = s.position
        if self.running or here != self._ahead_at or not self.screen_stack \
                or self.screen is not self.screen_stack[0]:
            return                             # (moved on, running, a dialog open)
        if self._ahead_work is not None:       # a landing point's panel, a box a call
            if next(self._ahead_work, StopIteration) is StopIteration:
                self._ahead_work = None
            self.call_later(self._ahead)
            return
        n = self._ahead_n + 1
        if not self._ahead_stops or n > self._ahead_stops[-1] or not s.peek(n):
            self._gc_idle()                    # (done: the step's end, or training's)
            return
        self._ahead_n = n
        if n in self._ahead_stops:
            self._ahead_work = self._prebuild_steps(*s.ahead(n))
        self.call_later(self._ahead)

    def _presize_key(self):
        # (the lesson panel's rows too: the op panel takes the rest of the column, a room of its own)
        return (self.session, tuple(self.size), self.digits, getattr(self, "_layers_shown", True),
                getattr(self, "_lesson_rows", 0))

    def _presize(self) -> None:
        """Measure every op of the first step at this screen size, in a session of its own, so that
        the operation panel takes the height the tallest needs now: stepping through the first
        step then never grows it (each growth is a relayout of the whole screen, the slowest a key
        gets). Runs after the first paint; a big network's panel has one constant height anyway."""
        self._presize_pending = False
        key = self._presize_key()
        if self._big or self._presized == key or not self.is_running:
            return
        self._presized = key
        if key in self._measured:              # (measured before: a lesson note came and went)
            return
        self._measured.add(key)
        s = Session(self.scenario)
        panel = self.query_one(OpPanel)
        room = self._op_room(len(view.layer_rows(s, self.writer, set())))
        for _ in range(s.M):
            rec = s.step()
            if rec is None:
                break
            written = _written(rec)
            panel.show(**self._op_view(s, rec, written), digits=self.digits, room=room, measure=True)
        if not self.running:
            self.refresh_view()

    def action_layers(self) -> None:
        self.layers_toggled = not self.layers_toggled
        self._apply_layers_shown()
        self.query_one(OpPanel)._height = None
        self.refresh_view()

    def _op_room(self, layer_rows: int) -> tuple[int, int, bool]:
        """(inner width, most rows, whether it takes them all) of the operation panel, from the
        screen size (app.tcss: the left column is 33 wide, 25 when narrow; header 1, status 2 or 1
        when short, footer 1). The layers table below keeps its header and rows (up to a third of
        the column); without it (L, or a short screen) the panel takes the whole column but the
        lesson's rows (it left them blank below it)."""
        w, h = self.size
        right = w - (33 if w >= 100 else 25)
        col = h - 1 - (1 if h < 32 else 2) - 1
        shown = getattr(self, "_layers_shown", True)
        layers = min(3 + layer_rows, max(5, col // 3)) if shown else 0
        return max(10, right - 2), max(8, col - layers - getattr(self, "_lesson_rows", 0)), not shown

    def _lesson_height(self) -> int:
        """The lesson panel's rows (app.tcss: 7, or 5 on a short screen)."""
        return 5 if getattr(self, "_short", False) else 7

    def _bindings_changed(self) -> None:
        """The footer's keys, dim where the action cannot run now; redrawn only when that changes."""
        state = tuple(self.check_action(b.action.split("(")[0], ()) for b in self.BINDINGS)
        if state != getattr(self, "_binding_state", None):
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
            self._status = ("", "")
            return
        kind = {"nonfinite": "bad", "breakpoint": "stop"}.get(stop.reason, "stop")
        msg = stop.message
        if stop.reason == "interrupted":       # the screen counts ops from 1 (the session from 0)
            msg = f"interrupted (Esc) at step {stop.step}, before op {stop.index + 1}/{self.session.M}"
            if getattr(self, "_run_kind", "") == "reverse":
                msg = (f"reverse-continue interrupted (Esc) before it found an earlier stop; the cursor "
                       f"stayed at step {stop.step}, op {stop.index + 1}/{self.session.M}")
        self._status = (f"■ stopped: {msg}", kind)

    def _check_record(self, rec) -> None:
        """A single step can produce a NaN/Inf too: say so, naming the op and tensor."""
        self._status = ("", "")
        if rec is None:
            self._status = ("■ at the end of training", "stop")
            return
        for t, v in rec.outputs.items():
            if v is not None and has_nonfinite(v):
                self._status = (f"■ {rec.op.name} produced a non-finite value in {t}", "bad")
                return

    # --- actions ----------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
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
            self._status = (f"your answers ({right}/{asked} right) are in {self.record}, rewritten after each one", "")
            self.refresh_view()
            return
        name = f"{self.scenario.name or 'lesson'}-answers.json".replace("/", "_").replace(" ", "_")
        import io
        self.deliver_text(io.StringIO(doc), save_filename=name, open_method="download", mime_type="application/json")
        self._status = (f"your answers ({right}/{asked} right): {name}" +
                        (" (downloading)" if self.is_web else " (saved in your downloads folder)"), "")
        self.refresh_view()

    def action_next(self) -> None:
        if self.asking.ask_here():               # a question before this op: the answer box instead
            return
        self._check_record(self.session.step())
        self.refresh_view()

    def action_prev(self) -> None:
        self.session.back()
        self._status = ("", "")
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
            self._status = (f"removed breakpoint {stop.breakpoint.where}: when \"{stop.breakpoint.when.text}\"", "")
            self.refresh_view()
            return
        on = s.toggle_breakpoint(op.name)
        self._status = (f"breakpoint {'set before' if on else 'removed from'} \"{op.name}\"", "")
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
                if self._status[0] and not self._status[1] and not self._opens_prompt(event.key):
                    self._answered(bar)
                if not event.is_forwarded and self._own_key(event):
                    # Textual would pass the key up from the focused widget through each of its
                    # parents (a message hop each, ~0.2 ms) to reach this same binding: run it at once
                    self.app_focus = True
                    event.stop()
                    await self._check_bindings(event.key)
                    return
        await super().on_event(event)

    def _opens_prompt(self, key: str) -> bool:
        """g: its prompt covers the status line, and Esc brings back what the line said."""
        return any(b.action == "goto" for b in self._bindings.key_to_bindings.get(key, ()))

    def _answered(self, bar) -> None:
        """A key: the status line's answer to the last action ("went to step 1, op 8", "7
        significant digits") is done with; the action of this key says its own, or the intro
        shows. A stop, a NaN/Inf or an error stays until the cursor moves (n, p, ... clear it)."""
        self._status = ("", "")
        if bar is not None:
            bar.show(self._intro(self.session.scenario), "")

    def _own_key(self, event: events.Key) -> bool:
        """Whether the key is one of the app's own bindings (a letter, space, a sign) that no widget
        from the focused one up binds or handles (a binding, ``key_<name>`` or ``on_key``), so that
        it would reach the app's binding unchanged."""
        key = event.key
        if key not in self._bindings.key_to_bindings or not (len(key) == 1 or key in self.OWN_NAMED_KEYS):
            return False
        node = self.focused
        while node is not None and node is not self:
            if key in node._bindings.key_to_bindings or hasattr(node, f"key_{event.name}") or \
                    hasattr(node, f"_key_{event.name}") or hasattr(node, "on_key") or \
                    type(node)._on_key is not Widget._on_key:
                return False
            node = node._parent
        return True

    OWN_NAMED_KEYS = frozenset({"space", "plus", "equals_sign", "minus", "question_mark"})

    def _status_bar(self):
        from textual.css.query import NoMatches
        try:
            return self.query_one(StatusBar)
        except NoMatches:                  # not composed yet, or shutting down
            return None

    def action_goto(self) -> None:
        N, M = self.session.N, self.session.M
        self.query_one(StatusBar).prompt("go to: ", f"step (1..{N}) and op (1..{M}), e.g. \"{min(2, N)} {min(3, M)}\"; "
                                         f"\"{min(2, N)}\" alone is op 1 of step {min(2, N)} · Enter: go · Esc: cancel",
                                         self._goto_typed, changed=self._goto_ahead_later)
        self._goto_from = None

    @staticmethod
    def _goto_parsed(text: str) -> tuple[int, int]:
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

    def _goto_typed(self, text: str | None) -> None:
        back, self._goto_from = self._goto_from, None
        if not text or not text.strip():
            if back is not None:               # (Esc after a go-ahead: back where the screen is)
                self.session.goto(*back)
                self.refresh_view()                # (the very screen, unless a resize drew the other)
            return
        try:
            k, op = self._goto_parsed(text)
            target = self.session._check_pos(k, op - 1)
            stop = self.asking.limit(target, here=back)       # (back: where the screen still is)
            self.session.goto(*(stop or target))
        except ValueError as e:
            if back is not None:
                self.session.goto(*back)
            self.notify(str(e), title="go to", severity="error")
            return
        if stop is not None:
            self.asking.stopped_for_question()
            return
        self._status = (f"went to step {k}, op {op}", "")
        self.refresh_view()

    GOTO_AHEAD_STEPS = 4      # at most this many steps' ops re-run ahead of Enter (the UI thread)

    def _goto_ahead_later(self, typed: str) -> None:
        """Go where the go-to box says while the user has not pressed Enter (see _goto_ahead),
        once typing pauses."""
        if self._goto_timer is not None:
            self._goto_timer.stop()
        self._goto_timer = self.set_timer(self.AHEAD_AFTER, lambda: self._goto_ahead(typed))

    def _goto_ahead(self, typed: str) -> None:
        """Move the session to the position typed (within GOTO_AHEAD_STEPS steps' ops of work)
        and build its op panel's boxes and layer cells, drawing nothing: the screen still shows
        where the cursor was, and Enter then finds the move done and the boxes built (on the
        784-256-128-10 net, the ops and the heatmaps are most of what a go-to costs); Esc goes
        back. Runs only while the box still holds ``typed``."""
        bar = self.query_one(StatusBar)
        s = self.session
        if self.running or bar.typed != typed:
            return
        try:
            k, op = self._goto_parsed(typed)
            if s.goto_cost(k, op - 1) > self.GOTO_AHEAD_STEPS * s.M:
                return
        except ValueError:
            return
        if self._goto_from is None:
            self._goto_from = s.position
        s.goto(k, op - 1)
        if s.last_record is not None or s.current_op is not None:
            self._prebuild(s.values(), s.last_record)

    def action_restart(self) -> None:
        if self.path is not None:
            from ..errors import ScenarioError
            from ..scenario import load_scenario
            try:
                sc = load_scenario(self.path)
            except ScenarioError as e:
                self.notify(f"{e}\nKept the scenario as it was loaded.", title="reload failed", severity="error",
                            timeout=10)
                self._status = (f"reload failed: {e}", "error")
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
            self._measured.clear()
            self._status = (f"reloaded {self.path}; back at the start", "")
        else:
            self.session.restart()
            self.asking.restart()
            self._status = ("restarted", "")
        self.refresh_view()
        self._gc_stale = self.path is not None   # (the old scenario: collected at the next idle)

    def action_digits(self, d: int) -> None:
        self.digits = min(15, max(2, self.digits + d))
        self._status = (f"{self.digits} significant digits", "")
        self.refresh_view()

    # --- nnstep FILE --compare MINE.npz ----------------------------------------------------------------
    def _differs(self, step: int) -> frozenset:
        """Indices of step's ops that wrote a tensor differing from the user's."""
        if self.compare is None:
            return frozenset()
        return frozenset(i for k, i in self.compare.differing_positions if k == step)

    def _theirs(self, step: int, index: int) -> dict | None:
        """{tensor: (the user's value, where it differs)} for what this op wrote."""
        if self.compare is None:
            return None
        return {r.tensor: (r.yours, r.mask) for r in self.compare.at_op(step, index)
                if r.status == "differs" and r.yours is not None}

    def _compare_status(self) -> str:
        f = self.compare.first
        if f is None:
            return f"compare: every one of the {len(self.compare.results)} tensors given agrees with nnstep"
        el = "[" + ", ".join(map(str, f.element)) + "]" if f.element else ""
        where = f"step {f.step}, op {f.op_index + 1} {f.op}" if f.op_index is not None else "the initial values"
        return (f"≠ first difference: {f.tensor}{el} at {where}: yours {f.your_value:.6g}, nnstep "
                f"{f.nnstep_value:.6g} · f: go to the next difference")

    def action_next_difference(self) -> None:
        """The cursor just after the next op (cyclically) that wrote a tensor differing from the
        user's: the op panel shows it, each differing cell with both values."""
        if self.compare is None:
            self._status = ("no comparison: open with nnstep FILE --compare MINE.npz", "")
            self.refresh_view()
            return
        pos = self.compare.differing_positions
        if not pos:
            self._status = (self._compare_status(), "")
            self.refresh_view()
            return
        rec = self.session.last_record
        here = (rec.step, rec.op.index) if rec is not None else (0, -1)
        nxt = next((p for p in pos if p > here), pos[0])
        k, i = nxt
        self.session.goto(k, i + 1) if i + 1 < self.session.M else self.session.goto(k + 1, 0)
        n = pos.index(nxt) + 1
        diffs = [r for r in self.compare.at_op(k, i) if r.status == "differs"]
        what = ", ".join(f"{r.tensor} ({int(r.mask.sum())} of {r.mask.size})" for r in diffs)
        self._status = (f"≠ difference {n} of {len(pos)}: step {k}, op {i + 1} {self.session.ops[i].name}: {what} "
                        f"differ from yours (nnstep≠yours in each cell) · f: next", "stop")
        self.refresh_view()

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

    # --- tensors and explanations -----------------------------------------------------------------
    def action_open_tensor(self) -> None:
        canvas = self.query_one(TensorCanvas)
        box = canvas.selected_box()
        if box is None:
            boxes = [b for b in canvas.visible() if b.tensor_name and b.value is not None]
            box = boxes[0] if boxes else None
        if box is None or box.value is None:
            self.notify("no tensor to open here", severity="warning")
            return
        self._open(box.tensor_name, box.value)

    def on_tensor_canvas_open(self, message: TensorCanvas.Open) -> None:
        if message.box.value is not None and not self.running:
            self._open(message.box.tensor_name, message.box.value)

    def open_tensor_by_name(self, name: str) -> None:
        v = self.session.value(name)
        if v is None:
            self.notify(f"{name} has not been computed yet", severity="warning")
            return
        self._open(name, v)

    def _open(self, name: str, value, index=None) -> None:
        """The tensor full-size; selecting an element explains it (the chain rule for a gradient,
        its op's formula with the element's numbers for any other value)."""
        from ..debugger.explain import explain as explain_element, is_gradient
        from .screens.tensor import TensorScreen

        s = self.session

        def fn(ix, n=name):
            try:
                return explain_element(s, n, ix).text
            except (KeyError, IndexError, ValueError) as e:
                return str(e)
        note = ("select an element: its chain rule is below" if is_gradient(s, name)
                else "select an element: how it was computed is below")
        self.push_screen(TensorScreen(name, value, self.digits, explain=fn, index=index, note=note))

    def action_explain(self) -> None:
        """Explain the focused tensor; with no box focused, what the op on screen is about: the
        first tensor the op just run wrote, or at the start the next op's first parameter (its
        initial value) or input."""
        s = self.session
        f = self.query_one(TensorCanvas).selected_box()
        if f is not None and f.value is not None:
            self.explain_tensor(f.tensor_name)
            return
        rec = s.last_record
        if rec is not None:
            cands = [t for t in rec.outputs if rec.outputs[t] is not None]
        else:
            op = s.current_op
            cands = [sl.name for sl in op.ins if sl.role == "param"] + list(op.inputs) if op is not None else []
        cands = [t for t in cands if t in s.names and s.value(t) is not None]
        self.explain_tensor(cands[0] if cands else None)

    def explain_tensor(self, name: str | None) -> None:
        from ..debugger.explain import explain as explain_element

        s = self.session
        if name is None:
            self.notify("nothing computed here to explain yet: step forward (n)", severity="warning")
            return
        if s.value(name) is None:
            k, i = s.position
            if i == 0 and k > 1:
                s.back()
                self._status = (f"went back one op, into step {k - 1}, where {name} is computed", "")
                self.refresh_view()
            else:
                self.notify(explain_element(s, name).text, title="explain", severity="warning", timeout=8)
                return
        v = s.value(name)
        self._open(name, v, index=(0,) * np.ndim(v))

    # --- the continue worker ----------------------------------------------------------------------
    def _start_run(self, kind: str) -> None:
        if self.running:
            return
        self._interrupt.clear()
        self._run_kind = kind
        # a continue stops before the first question on its way (where it asks)
        self._run_until = self.asking.limit((self.session.N + 1, 0)) if kind == "continue" else None
        self.running = True
        self._status = ("running… (Esc interrupts)" if kind == "continue" else "running backwards… (Esc interrupts)",
                        "stop")
        self.query_one(StatusBar).show(*self._status)
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
            self._status = (f"running backwards… searching step {sk} for an earlier stop (Esc interrupts)", "stop")
            self.query_one(StatusBar).show(*self._status)
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
            self._status = (f"error while running: {msg.error}", "error")
        else:
            self._set_stop(msg.stop)
            if self._run_kind == "continue" and self._run_until is not None \
                    and self.session.position == self._run_until:
                self.asking.stopped_for_question()
                return
        self.refresh_view()

    def on_unmount(self) -> None:
        self._interrupt.set()                  # quitting while a continue runs stops its thread
        self._gc_restore()

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
        for action, title, help in ACTIONS:
            name = action.split("(")[0]
            if self.check_action(name, ()) is not True:
                continue
            yield SystemCommand(title, help, lambda a=action: self.call_later(self.run_action, a))
        yield SystemCommand("Theme", "change the colour theme", self.action_change_theme)
        yield SystemCommand("Screenshot", "save an SVG of this screen", self.deliver_screenshot)


class Palette(CommandPalette):
    """Textual's command palette, deaf once it is no longer on top. Enter pressed quickly three
    times (ctrl+p, Enter, Enter, Enter) selects the highlighted command twice before the first
    selection is handled: Textual 8.2.8 then ran it, dismissed the palette, and on the second
    selection dismissed it again, popping the app's last screen (ScreenStackError: Can't pop
    screen). A selection or submission that arrives once the palette is closed is dropped."""

    @on(Input.Submitted)
    @on(Button.Pressed)
    @on(OptionList.OptionSelected)
    def _not_when_closed(self, event) -> None:
        if self.app.screen is not self:
            event.prevent_default()         # CommandPalette's own handler of it does not run
            event.stop()


def make_app(path_or_scenario, **kw) -> NnstepApp:
    """The app for a scenario file (or a loaded Scenario), ready for ``app.run()``, ``app.run_test()``
    or pytest-textual-snapshot's ``snap_compare``. Raises nnstep.ScenarioError for a bad file."""
    if isinstance(path_or_scenario, Scenario):
        return NnstepApp(path_or_scenario, path=None if path_or_scenario.path == "<string>"
                         else path_or_scenario.path, **kw)
    from ..scenario import load_scenario
    path = str(path_or_scenario)
    return NnstepApp(load_scenario(path), path=path, **kw)
