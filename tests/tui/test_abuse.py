"""The TUI under abuse (issue 6, item 5): thousands of random keys from the app's keymap, with
resizes down to 40x10 and back, on several scenarios (one of which blows up to NaN/Inf), and
nothing raises; plus ``r`` on a broken scenario file keeps the session as it was.

Reproducible: every run is driven by a seeded ``random.Random``; the seed, the scenario and the last
keys are in every failure message. Environment knobs for a larger local run:

    NNSTEP_ABUSE_KEYS=10000 .venv/bin/pytest tests/tui/test_abuse.py -s    # keys per scenario
    NNSTEP_ABUSE_SEED=123 ...                                               # another seed
    NNSTEP_ABUSE_ALL=1 ...                                                  # four more scenarios

The figure (keys pressed, resizes, runs started, reloads, exceptions) is printed per scenario (-s)."""
from __future__ import annotations

import asyncio
import os
import random
import shutil

import numpy as np
import pytest

from nnstep.debugger.session import Session
from nnstep.tui import make_app
from nnstep.tui.screens.dialogs import HelpScreen
from nnstep.tui.screens.tensor import TensorScreen
from nnstep.tui.widgets.bars import HeaderBar
from nnstep.tui.widgets.status import StatusBar

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

KEYS = int(os.environ.get("NNSTEP_ABUSE_KEYS", "700"))          # per scenario
SEED = int(os.environ.get("NNSTEP_ABUSE_SEED", "20261126"))
SIZES = [(40, 10), (60, 16), (80, 24), (100, 30), (120, 40), (160, 50)]
HOME = (120, 40)

# (key, weight) on the main screen: every binding of NnstepApp.BINDINGS except q (it quits; it is
# pressed on the modal screens, where it closes them), plus focus and scroll keys.
MAIN = [("n", 12), ("space", 6), ("p", 10), ("s", 5), ("S", 4), ("c", 3), ("C", 3), ("b", 3),
        ("g", 4), ("r", 2), ("question_mark", 2), ("e", 3), ("enter", 3), ("plus", 2),
        ("equals_sign", 1), ("minus", 2), ("escape", 3), ("tab", 4), ("shift+tab", 2), ("up", 2),
        ("down", 2), ("left", 1), ("right", 1), ("home", 1), ("end", 1), ("pageup", 1),
        ("pagedown", 1)]
# the go-to prompt (g, in the status line): digits, separators, junk text, editing keys, Enter, Escape
GOTO = ([(d, 3) for d in "0123456789"] + [("space", 4), ("comma", 1), ("minus", 1), ("full_stop", 1),
        ("backspace", 3), ("enter", 8), ("escape", 3)] + [(ch, 1) for ch in "xqnSe"] + [("left", 1),
        ("home", 1), ("tab", 1)])
# the full-size tensor view (cursor, paging, digits, closing keys) and the help
TENSOR = [("up", 4), ("down", 4), ("left", 4), ("right", 4), ("pageup", 2), ("pagedown", 2),
          ("home", 2), ("end", 2), ("plus", 1), ("minus", 1), ("tab", 1), ("e", 1), ("n", 1),
          ("escape", 3), ("enter", 2), ("q", 2)]
HELP = [("down", 2), ("up", 2), ("pagedown", 1), ("n", 1), ("escape", 2), ("question_mark", 2), ("q", 2)]


def _pick(rng: random.Random, table):
    keys, weights = zip(*table)
    return rng.choices(keys, weights)[0]


def _pool(app):
    scr = app.screen
    if scr is app.screen_stack[0] and app.query_one(StatusBar).prompting:
        return GOTO                   # g: the status line takes the keys
    if isinstance(scr, TensorScreen):
        return TENSOR
    if isinstance(scr, HelpScreen):
        return HELP
    if scr is app.screen_stack[0]:
        return MAIN
    return [("escape", 1)]           # anything else (e.g. a palette): close it


def _text(widget) -> str:
    return str(widget.render())


def _same_values(a: Session, b: Session) -> list[str]:
    bad = []
    for name in sorted(a.names):
        x, y = a.value(name), b.value(name)
        if (x is None) != (y is None):
            bad.append(name)
        elif x is not None and not np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True):
            bad.append(name)
    return bad


def _queues_empty(app) -> bool:
    try:
        nodes = [app, *app.screen.walk_children(with_self=True)]
    except Exception:
        return True
    return all(n._message_queue.empty() for n in nodes)


async def _until_queues_empty(*args, **kw) -> None:
    """Stands in for textual's wait_for_idle inside ``App._press_keys``: yield until the key event
    (sent from the driver with run_coroutine_threadsafe) has arrived and every message queue of the
    app and its screen is empty, three times in a row."""
    from textual._context import active_app
    app = active_app.get()
    calm = 0
    for _ in range(2000):
        await asyncio.sleep(0)
        calm = calm + 1 if _queues_empty(app) else 0
        if calm >= 3:
            return


@pytest.fixture
def quick_keys(monkeypatch):
    """pilot.press waits for the process to go idle twice per key (20 ms slices with under 1 ms of
    CPU; while a continue keeps a core busy, up to a second): > 40 ms a key, minutes for thousands
    of keys. Keep Pilot's press (the event goes through the driver, then Pilot waits until the
    screen and every widget have processed all pending messages) but replace the idle sleeps by
    "until every message queue is empty" (checked: the same 250 random keys on classic leave the
    same position, screen and status after every key as with Textual's own waits, except while a
    continue is still running, which a fast typist may also see). And paint at most 20 frames a second (Textual: 60): the
    screen is still painted about once per key (330 paints for 300 keys, counted on classic; 525
    at 60), and the file runs ~20% faster."""
    import textual.app
    import textual.screen
    monkeypatch.setattr(textual.app, "wait_for_idle", _until_queues_empty)
    monkeypatch.setattr(textual.screen, "UPDATE_PERIOD", 1 / 20)


async def abuse(src: str, workdir, n_keys: int, seed: int, label: str) -> dict:
    """Press n_keys random keys (resize now and then, and now and then break the scenario file on
    disk or mend it, so that r meets both); return the figures. Fails, naming the seed and the last
    keys, on an exception, a hang, an exit, a worker error, a header that disagrees with the
    session, a failed reload that changed the session, or values that differ from a fresh
    session's at the same position."""
    path = os.path.join(str(workdir), os.path.basename(src))   # r reloads from disk: a private copy
    assert os.path.realpath(path) != os.path.realpath(src)
    shutil.copyfile(src, path)                                 # (this run breaks and mends it)
    rng = random.Random(f"{seed}:{label}")
    good = open(path).read()
    broken = False
    app = make_app(path, check_every=16)
    log: list[str] = []
    fig = {"keys": 0, "resizes": 0, "runs": 0, "reloads": 0, "failed_reloads": 0, "nonfinite_seen": False,
           "exceptions": 0}

    def where() -> str:
        return (f"[{label}] seed={seed} (rerun with NNSTEP_ABUSE_SEED={seed} NNSTEP_ABUSE_KEYS={n_keys}), "
                f"after {fig['keys']} keys; last keys: {' '.join(log[-30:])}")

    async with app.run_test(size=HOME, notifications=True) as pilot:
        try:
            # fixed points: down to the smallest size and back, whatever the random stream does
            third = n_keys // 3
            forced = {third: (40, 10), third + 40: HOME, 2 * third: (40, 10), 2 * third + 40: HOME}
            for j in range(n_keys):
                if j in forced or rng.random() < 0.01:
                    w, h = forced.get(j) or rng.choice(SIZES)
                    log.append(f"<{w}x{h}>")
                    await asyncio.wait_for(pilot.resize_terminal(w, h), 30)
                    await asyncio.wait_for(pilot.pause(), 30)
                    assert tuple(app.size) == (w, h), where()
                    fig["resizes"] += 1
                if rng.random() < 0.005:
                    broken = not broken
                    log.append("<file broken>" if broken else "<file mended>")
                    with open(path, "w") as f:
                        f.write("[scenario\nname = " if broken else good)
                if rng.random() < 0.05:            # a reader's pause: a big net computes the next op
                    await asyncio.sleep(2 * app.ahead.AFTER)
                main = _pool(app) is MAIN
                key = _pick(rng, _pool(app))
                if main and key in ("c", "C") and app.check_action("continue" if key == "c" else "reverse", ()):
                    fig["runs"] += 1
                reload = main and key == "r" and app.check_action("restart", ())
                before = (app.session, app.session.position)
                log.append(key)
                try:
                    await asyncio.wait_for(pilot.press(key), 30)
                except asyncio.TimeoutError:
                    raise AssertionError(f"a key press hung: {where()}") from None
                fig["keys"] += 1
                if app._exception is not None:
                    fig["exceptions"] += 1
                    raise AssertionError(f"the app raised {app._exception!r}: {where()}") from app._exception
                assert app.is_running, f"the app exited: {where()}"
                if j % 100 == 99:
                    try:                            # a real idle wait, now and then
                        await asyncio.wait_for(pilot.pause(), 30)
                    except asyncio.TimeoutError:
                        raise AssertionError(f"the app never went idle: {where()}") from None
                status = _text(app.query_one(StatusBar))
                assert "error while running" not in status, f"{status}: {where()}"
                fig["nonfinite_seen"] |= "non-finite" in status or "NaN" in status or "Inf" in status
                if reload:
                    fig["reloads"] += 1
                    if broken:
                        fig["failed_reloads"] += 1
                        assert (app.session, app.session.position) == before, where()
                        assert "reload failed" in status, f"{status!r}: {where()}"
                    else:
                        assert app.session is not before[0] and app.session.at_start, where()
                if not app.running and app.screen is app.screen_stack[0]:
                    k, i = app.shown_position          # (a go-to typed moves the session ahead of Enter)
                    if not app.query_one(StatusBar).prompting:
                        assert (k, i) == app.session.position, f"the screen shows {(k, i)}: {where()}"
                    N, M = app.session.N, app.session.M
                    head = _text(app.query_one(HeaderBar))
                    want = f"step {k}/{N}" if k <= N else f"done {N}/{N}"
                    assert want in head, f"header {head!r} does not show {want}: {where()}"
                    if k <= N:
                        assert f"op {i + 1}/{M}" in head, f"header {head!r}: {where()}"
            # stop whatever is running (Esc interrupts), let the worker finish, close any modal
            try:                                # a hang fails here, with where it was, within a minute
                for _ in range(6):
                    await asyncio.wait_for(pilot.press("escape"), 30)
                # (not wait_for(app.workers.wait_for_complete(), 60): Textual's wait_for_complete
                # swallows the cancellation, so that wait_for returns None at the timeout instead of
                # raising, and a worker thread still running then hangs pytest when the event loop's
                # executor is shut down)
                for _ in range(600):
                    if not app.running and all(w.is_finished for w in app.workers):
                        break
                    await asyncio.sleep(0.1)
                else:
                    import faulthandler
                    import sys
                    faulthandler.dump_traceback(sys.stderr, all_threads=True)
                    raise AssertionError(f"the continue worker never finished (every thread's stack is "
                                         f"on stderr): {where()}")
                await asyncio.wait_for(pilot.pause(), 30)
            except asyncio.TimeoutError:
                raise AssertionError(f"stopping the app hung: {where()}") from None
            assert not app.running and app.screen is app.screen_stack[0], where()
            assert app._exception is None, where()
            # nothing the keys did left the session's values differing from a fresh session's at
            # the same position (reloads, back, reverse-continue, interrupted runs, goto...)
            s = app.session
            fresh = Session(s.scenario)
            fresh.goto(*s.position)
            assert _same_values(s, fresh) == [], f"values differ from a fresh session's: {where()}"
            fig["position"] = s.position
            await pilot.press("q")                  # q still quits, after all that
            for _ in range(50):
                if app.return_code is not None:
                    break
                await pilot.pause(0.02)
        except BaseException:
            print(f"\nFAILED abuse run: {where()}")
            raise
    assert app._exception is None
    assert app.return_code == 0, where()
    return fig


# The shared contract's blowup.toml (SGD with lr 5000 on a 2-3-1 linear net: Inf by step 2, then
# NaN), inlined so that the test does not depend on a file outside the repository.
BLOWUP = """\
[scenario]
name = "blowup"

[data]
x = [[1.0, 2.0], [3.0, 4.0]]
y = [[100.0], [200.0]]

[[layers]]
type = "linear"
out = 3
weight = [[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]
bias = [0.0, 0.0, 0.0]

[[layers]]
type = "linear"
out = 1
weight = [[1.0, 1.0, 1.0]]
bias = [0.0]

[loss]
type = "mse"

[optimizer]
type = "sgd"
lr = 5000.0

[train]
steps = 60
"""

SCENARIOS = [
    ("classic", os.path.join(HERE, "scenarios", "classic.toml")),      # docs/scenario-format.md: 2-2-2 sigmoid, 2 steps
    ("blowup", BLOWUP),                                                  # NaN/Inf by step 2
    ("adam", os.path.join(HERE, "scenarios", "adam.toml")),            # optimizer state; a [[breakpoints]]
    ("large", os.path.join(HERE, "scenarios", "large.toml")),          # heatmaps; the next op computed ahead
]
# more for a local run (NNSTEP_ABUSE_ALL=1): convolutions, a conditional breakpoint then an overflow
# at step 184, an overflow in the first op, batch norm
if os.environ.get("NNSTEP_ABUSE_ALL"):
    SCENARIOS += [
        ("conv2d", os.path.join(HERE, "scenarios", "conv2d-flatten-linear.toml")),
        ("exploding", os.path.join(ROOT, "scenarios", "exploding-gradients.toml")),
        ("overflow", os.path.join(HERE, "scenarios", "nan.toml")),
        ("batchnorm", os.path.join(ROOT, "scenarios", "batchnorm-train.toml")),
    ]


@pytest.mark.slow
@pytest.mark.parametrize("label,src", SCENARIOS, ids=[s[0] for s in SCENARIOS])
async def test_random_keys_and_resizes_raise_nothing(label, src, tmp_path, quick_keys):
    # a watchdog: if this scenario is still running after 10 minutes (it takes about one), every
    # thread's stack goes to stderr, where even a hang that no await's bound catches is seen
    import faulthandler
    faulthandler.dump_traceback_later(600, exit=True)     # and exit: a hung CI would land nothing for 90 min
    try:
        await _abuse_one(label, src, tmp_path)
    finally:
        faulthandler.cancel_dump_traceback_later()


async def _abuse_one(label, src, tmp_path):
    if not src.endswith(".toml"):
        (tmp_path / "src").mkdir()
        (tmp_path / "src" / f"{label}.toml").write_text(src)
        src = str(tmp_path / "src" / f"{label}.toml")
    fig = await abuse(src, tmp_path, KEYS, SEED, label)
    print(f"\nabuse {label}: {fig['keys']} keys, {fig['resizes']} resizes, {fig['runs']} runs started, "
          f"{fig['reloads']} reloads ({fig['failed_reloads']} of a broken file), {fig['exceptions']} exceptions, "
          f"non-finite seen: {fig['nonfinite_seen']}, ended at {fig['position']} (seed {SEED})")
    assert fig["keys"] == KEYS and fig["exceptions"] == 0
    assert fig["resizes"] >= 4
    if label in ("blowup", "overflow"):
        assert fig["nonfinite_seen"], "the blow-up scenario never showed its NaN/Inf"


# --- r with a broken scenario file --------------------------------------------------------------
@pytest.mark.slow
async def test_reload_of_a_broken_file_keeps_everything_then_a_mended_file_reloads(tmp_path):
    src = os.path.join(HERE, "scenarios", "classic.toml")
    good = open(src).read()
    path = tmp_path / "net.toml"
    path.write_text(good)
    app = make_app(str(path))
    async with app.run_test(size=HOME, notifications=True) as pilot:
        await pilot.press("S", "n", "n", "b", "plus")         # step 2, op 3; a breakpoint; 7 digits
        s = app.session
        assert s.position == (2, 2)
        bp = s.current_op.name
        assert s.has_op_breakpoint(bp)
        values = {k: (None if v is None else np.array(v, copy=True)) for k, v in s.values().items()}
        losses = s.loss_history()
        head = _text(app.query_one(HeaderBar))
        program = app.query_one("#program").text()
        breakages = [("[scenario\nname = ", "TOML syntax"),                          # not TOML at all
                     (good.replace('type = "mse"', 'type = "msee"'), 'loss.type: unknown value "msee"'),
                     (b"\xff\xfe[scen", "not UTF-8")]
        for n, (bad, what) in enumerate(breakages, 1):
            if isinstance(bad, bytes):
                path.write_bytes(bad)
            else:
                path.write_text(bad)
            await pilot.press("r")
            await pilot.pause()
            # nothing lost: the same session at the same position with the same values
            assert app.session is s and s.position == (2, 2)
            assert s.loss_history() == losses and s.has_op_breakpoint(bp)
            now = s.values()
            assert now.keys() == values.keys()
            for k, v in values.items():
                assert (v is None and now[k] is None) or np.array_equal(now[k], v), k
            assert app.digits == 7
            assert _text(app.query_one(HeaderBar)) == head
            assert app.query_one("#program").text() == program
            # the error is shown: in the status line and as a notification, naming file and problem
            status = _text(app.query_one(StatusBar))
            assert status.startswith("reload failed: ") and str(path) in status and what in status, status
            notes = [x for x in app._notifications if x.title == "reload failed"]
            assert len(notes) == n and notes[-1].severity == "error"
            assert str(path) in notes[-1].message and what in notes[-1].message
            assert "Kept the scenario as it was loaded" in notes[-1].message
            # and the session still works
            await pilot.press("n")
            assert s.position == (2, 3)
            await pilot.press("p")
            assert s.position == (2, 2)
        path.unlink()                                          # a file that is gone: the same
        await pilot.press("r")
        assert app.session is s and s.position == (2, 2)
        assert "no such file" in _text(app.query_one(StatusBar))
        # mended (with a different learning rate): r reloads it, back at the start
        path.write_text(good.replace("lr = 0.5", "lr = 0.25"))
        await pilot.press("r")
        assert app.session is not s and app.session.at_start
        assert app.session.scenario.optimizer.lr == 0.25
        assert app.session.has_op_breakpoint(bp)               # a breakpoint set with b survives
        assert _text(app.query_one(StatusBar)) == f"reloaded {path}; back at the start"
        assert "step 1/2" in _text(app.query_one(HeaderBar))
        # a different network altogether also reloads, and the view follows it
        path.write_text(open(os.path.join(HERE, "scenarios", "adam.toml")).read())
        await pilot.press("r", "n")
        assert app.session.scenario.name == "adam on w²" and app.session.position == (1, 1)
        assert "adam on w²" in _text(app.query_one(HeaderBar))
    assert app.return_code in (None, 0) and app._exception is None
