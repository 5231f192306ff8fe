"""A big network's next op is computed while the user reads the current one (tui/ahead.py, LookAhead.step:
Session.peek into the trail, its boxes built where they are placed): the n after it runs no op and
builds no box, and the screen is the one stepping without it gives."""
import os

import pytest

from nnstep.tui import make_app
from nnstep.tui.widgets import tensor, tensorbox

from test_terminal_frames import Terminal

pytestmark = pytest.mark.slow          # (seconds each: the inner loop is pytest -m "not slow")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MLP = os.path.join(ROOT, "bench", "mlp_784_256_128_10.toml")


def count_composed(monkeypatch, reading=(False,)) -> list:
    """Count the canvas lines below the formula that a key composes (TensorCanvas._line, neither
    the line shown before nor one composed ahead) in the one-item list returned; none while
    ``reading[0]`` (the look-ahead's own), nor a blank line between the formula and the boxes
    (one Segment)."""
    composed = [0]
    real = tensor.TensorCanvas._line

    def line(self, parts, W, flt, bg, fill, cache):
        if not reading[0] and cache is not self._ahead_lines:
            key = (W, flt, tuple((bx, id(strip)) for bx, strip in parts))
            kept = key in self._line_cache or key in self._ahead_lines
            head = {id(h) for h in self._head_strips()}
            composed[0] += bool(parts) and not kept and not any(id(strip) in head for _, strip in parts)
        return real(self, parts, W, flt, bg, fill, cache)
    monkeypatch.setattr(tensor.TensorCanvas, "_line", line)
    return composed


async def screens(ahead: bool, monkeypatch, keys="nnnnnnnnnnpn", read=None, path=MLP):
    """The terminal after each key (a reader's pause after each: ``read`` s, or twice the
    look-ahead's delay), and the box builds, ops and canvas lines (below the formula) each key
    cost."""
    app = make_app(path)
    if not ahead:
        monkeypatch.setattr(app.ahead, "AFTER", 3600.0)
    built = [0]
    real = tensorbox.TensorBox._build

    reading = [False]
    extra_ops = [0]

    def count(self, W, H):
        if not reading[0]:
            built[-1] += 1               # (what is built while the reader reads is not the key's)
        return real(self, W, H)
    monkeypatch.setattr(tensorbox.TensorBox, "_build", count)
    composed = count_composed(monkeypatch, reading)
    ahead_of = app.ahead.step

    def computing_ahead():
        reading[0] = True
        ran = app.session.ops_executed
        try:
            ahead_of()
        finally:
            reading[0] = False
            extra_ops[0] += app.session.ops_executed - ran
    app.ahead.step = computing_ahead
    term = Terminal(app, (120, 40))
    out = []
    async with app.run_test(size=(120, 40)) as pilot:
        for _ in range(3):
            await pilot.pause()
        for key in keys:
            await pilot.pause(read or (2 * app.ahead.AFTER if ahead else 0.06))      # the reader reads
            built[-1] = composed[0] = 0
            ran = app.session.ops_executed - extra_ops[0]
            await pilot.press(key)
            await pilot.pause()
            out.append((Terminal.cells(term.screen), built[-1], app.session.ops_executed - extra_ops[0] - ran,
                        composed[0]))
            built[-1] = 0
            term.assert_whole(f"after {key}")
    return out


async def test_the_next_op_is_ready_when_n_comes(monkeypatch):
    ahead = await screens(True, monkeypatch)
    plain = await screens(False, monkeypatch)
    assert [a[0] for a in ahead] == [p[0] for p in plain], "computing ahead changed the screen"
    # the first ten ops of step 1 (forward, loss, backward: the stage changes included), a p and
    # an n again: nothing left to run, build or compose (below the formula) at any key
    assert all(a[1] == 0 and a[2] == 0 and a[3] == 0 for a in ahead), str([a[1:] for a in ahead])
    assert all(p[2] == 1 for p in plain[:10]) and sum(p[1] for p in plain) > 10
    assert sum(p[3] for p in plain) > 10 * 10


async def test_the_end_of_the_stage_and_of_the_step_are_ready_when_s_and_S_come(monkeypatch):
    """While the reader reads, the look-ahead goes on op by op to the end of the step (the last
    op's outputs too, Session.peek): s and S then run no op and build no box, and the screens are
    those without it (the end of each stage, two steps' boundaries, an n and a p among them)."""
    keys = "ssssSnpsS"
    ahead = await screens(True, monkeypatch, keys=keys, read=0.5)
    plain = await screens(False, monkeypatch, keys=keys, read=0.06)
    assert [a[0] for a in ahead] == [p[0] for p in plain], "computing ahead changed the screen"
    assert all(a[1] == 0 and a[2] == 0 and a[3] == 0 for a in ahead), [(k, *a[1:]) for k, a in zip(keys, ahead)]
    assert sum(p[2] for p in plain) > 2 * 10 and sum(p[1] for p in plain) > 10 and sum(p[3] for p in plain) > 50


async def test_a_go_to_typed_is_done_before_enter(monkeypatch):
    """While the go-to box holds a position (typing paused), the session goes there and builds its
    boxes: Enter runs no op and builds no box, and shows what a go-to without it shows; Esc goes
    back to where the screen is, exactly."""
    import numpy as np
    got = {}
    for ahead in (True, False):
        app = make_app(MLP)
        app.ahead.step = lambda: None               # (the look-ahead of n, s, S: the tests above)
        if not ahead:
            monkeypatch.setattr(app.goto, "ahead_later", lambda typed: None)
        built = [0]
        real = tensorbox.TensorBox._build

        def count(self, W, H, real=real):
            built[0] += 1
            return real(self, W, H)
        monkeypatch.setattr(tensorbox.TensorBox, "_build", count)
        composed = count_composed(monkeypatch)
        term = Terminal(app, (120, 40))
        out = []
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            for typed in ("2 10", "1 3", "3", "1 1"):
                await pilot.press("g", *typed.replace(" ", "space").split("space")[0], *(
                    ["space", *typed.split()[1]] if " " in typed else []))
                await pilot.pause(0.3)                  # typing pauses
                built[0], ran, composed[0] = 0, app.session.ops_executed, 0
                await pilot.press("enter")
                await pilot.pause()
                out.append((Terminal.cells(term.screen), app.session.position, built[0],
                            app.session.ops_executed - ran, composed[0]))
                term.assert_whole(f"after go to {typed}")
            # Esc after a go-ahead: the session back where the screen is
            here, shown = app.session.position, Terminal.cells(term.screen)
            before = {n: np.array(v) for n, v in app.session.values().items() if v is not None}
            await pilot.press("g", "1", "space", "7")
            await pilot.pause(0.3)
            assert ahead is False or app.session.position == (1, 6)
            await pilot.press("escape")
            await pilot.pause()
            assert app.session.position == here and Terminal.cells(term.screen) == shown
            after = app.session.values()
            assert all(np.array_equal(v, after[n]) for n, v in before.items())
        got[ahead] = out
    assert [o[:2] for o in got[True]] == [o[:2] for o in got[False]], "going ahead changed the screen"
    # (1, 0): the start of training, where the panel shows the first op's inputs
    assert [o[1] for o in got[True]] == [(2, 9), (1, 2), (3, 0), (1, 0)]
    assert all(o[2] == 0 and o[3] == 0 and o[4] == 0 for o in got[True]), [o[2:] for o in got[True]]
    assert sum(o[2] for o in got[False]) > 0 and sum(o[3] for o in got[False]) > 0
    assert all(o[4] > 5 for o in got[False]), [o[4] for o in got[False]]


async def test_a_small_network_is_computed_ahead_too(monkeypatch):
    """The 2-2-2 lesson: its boxes are placed by their sizes (OpPanel._plan, the one layout show()
    draws): n, s and S after a reader's pause run no op and build no box, with the screens of
    stepping without it. (Its boxes are numbers, whose size does not depend on the formula's
    lines, so this does not tell whether the look-ahead passed the formula: a heatmap's height
    does depend on it.)"""
    classic = os.path.join(ROOT, "tests", "tui", "scenarios", "mazur.toml")
    keys = "nnnnspnSsn"
    ahead = await screens(True, monkeypatch, keys=keys, read=0.3, path=classic)
    plain = await screens(False, monkeypatch, keys=keys, read=0.06, path=classic)
    assert [a[0] for a in ahead] == [p[0] for p in plain], "computing ahead changed the screen"
    assert all(a[1] == 0 and a[2] == 0 and a[3] == 0 for a in ahead), [(k, *a[1:]) for k, a in zip(keys, ahead)]
    assert sum(p[2] for p in plain) > 5 and sum(p[1] for p in plain) > 5 and sum(p[3] for p in plain) > 10


async def test_the_canvas_hands_over_its_lines_as_they_are():
    """Each canvas line is as wide as the canvas, so the compositor gets the very Strips composed
    (and made ahead, with their sequences), not a padded copy made on every ask (the 2-2-2
    lesson's boxes do not fill the canvas's width)."""
    from nnstep.tui.widgets.tensor import TensorCanvas
    for path in (os.path.join(ROOT, "tests", "tui", "scenarios", "mazur.toml"), MLP):
        app = make_app(path)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            for key in "nnSn":
                await pilot.press(key)
                await pilot.pause(0.1)
                canvas = app.query_one(TensorCanvas)
                W = canvas.size.width
                got = canvas.lines_in(range(len(canvas._lines)), W)
                assert all(a is b for a, b in zip(got, canvas._lines)), (path, key)
                assert all(line.cell_length == W for line in got)
