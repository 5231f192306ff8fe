"""Pilot tests: every key and palette action, stop reasons, the continue worker and its
interruption, resize, reload, the explain view, and the command line front door."""
import os
import subprocess
import sys

import pytest

import nnstep
from nnstep.tui import make_app
from nnstep.tui.actions import KEYS
from nnstep.tui.app import NnstepApp
from nnstep.tui.screens.dialogs import HelpScreen
from nnstep.tui.screens.tensor import TensorGrid, TensorScreen
from nnstep.tui.widgets.bars import HeaderBar
from nnstep.tui.widgets.status import StatusBar
from nnstep.tui.widgets.tensor import TensorCanvas

HERE = os.path.dirname(os.path.abspath(__file__))
SIZE = (120, 40)


def sc(name):
    return os.path.join(HERE, "scenarios", name)


def text(widget) -> str:
    return str(widget.render())


async def palette_ready(pilot, expect: str):
    """Wait (up to ~5 s) until the command palette's first result is the one expected."""
    from textual.command import CommandList
    for _ in range(100):
        await pilot.pause(0.05)
        lists = pilot.app.screen.query(CommandList)
        if lists and lists.first().option_count > 0:
            first = lists.first().get_option_at_index(0).prompt
            if expect in str(getattr(first, "plain", first)):
                return
    raise AssertionError(f"the command palette never offered {expect!r}")


async def settle(app, pilot):
    await app.workers.wait_for_complete()
    await pilot.pause()


# --- stepping keys ------------------------------------------------------------------------------
async def test_next_prev_and_space_move_one_op_exactly():
    app = make_app(sc("classic.toml"))
    async with app.run_test(size=SIZE) as pilot:
        s = app.session
        assert s.position == (1, 0)
        assert app.check_action("prev", ()) is None           # greyed out at the very start
        assert app.check_action("reverse", ()) is None
        await pilot.press("n")
        assert s.position == (1, 1)
        await pilot.press("space")
        assert s.position == (1, 2)
        assert app.check_action("prev", ()) is True
        out = s.value("sigmoid1.out").copy()
        await pilot.press("p")
        assert s.position == (1, 1)
        await pilot.press("n")
        assert (s.value("sigmoid1.out") == out).all()
        assert "op 3/14" in text(app.query_one(HeaderBar))


async def test_stage_and_end_of_step():
    app = make_app(sc("classic.toml"))
    async with app.run_test(size=SIZE) as pilot:
        s = app.session
        await pilot.press("s")
        assert s.current_op.stage == "loss"
        await pilot.press("s")
        assert s.current_op.stage == "backward"
        await pilot.press("S")
        assert s.position == (2, 0)
        assert "loss 0.298371109" in text(app.query_one(HeaderBar))      # Mazur's E_total
        await pilot.press("S")
        assert s.at_end
        for a in ("next", "stage", "finish", "continue", "breakpoint"):
            assert app.check_action(a, ()) is None


async def test_breakpoint_key_continue_and_reverse_continue_say_why():
    app = make_app(sc("classic.toml"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("s", "s", "n")            # before "backward sigmoid2"
        name = app.session.current_op.name
        await pilot.press("b")
        assert app.session.has_op_breakpoint(name)
        assert "●" in app.query_one("#program").text()
        await pilot.press("r")                       # reload: back to the start, breakpoints set here kept
        s = app.session
        assert s.at_start and s.has_op_breakpoint(name)
        await pilot.press("c")
        await settle(app, pilot)
        assert s.position[0] == 1 and s.current_op.name == name
        assert f"before {name}" in text(app.query_one(StatusBar))
        await pilot.press("c")
        await settle(app, pilot)
        assert s.position[0] == 2 and s.current_op.name == name
        await pilot.press("C")
        await settle(app, pilot)
        assert s.position[0] == 1 and s.current_op.name == name
        assert "breakpoint" in text(app.query_one(StatusBar))
        await pilot.press("C")
        await settle(app, pilot)
        assert s.at_start and "start" in text(app.query_one(StatusBar))


async def test_breakpoint_toggle_twice_removes_it():
    app = make_app(sc("classic.toml"))
    async with app.run_test(size=SIZE) as pilot:
        name = app.session.current_op.name
        await pilot.press("b")
        assert app.session.has_op_breakpoint(name)
        await pilot.press("b")
        assert not app.session.has_op_breakpoint(name)
        assert "removed" in text(app.query_one(StatusBar))


async def test_nan_stop_names_the_op_and_tensor():
    app = make_app(sc("nan.toml"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("c")
        await settle(app, pilot)
        st = text(app.query_one(StatusBar))
        assert "forward linear1" in st and "linear1.out" in st and "non-finite" in st
        assert app.session.last_stop.reason == "nonfinite"
        out = [v for v in app.query_one(TensorCanvas).visible() if v.tensor_name == "linear1.out"][0]
        assert "+Inf" in "".join(out.render_line(y).text for y in range(out.size.height))


async def test_single_step_into_nan_is_reported_too():
    app = make_app(sc("nan.toml"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n")
        st = text(app.query_one(StatusBar))
        assert "forward linear1" in st and "linear1.out" in st


async def test_adam_breakpoint_from_the_file_then_update_op_panel():
    app = make_app(sc("adam.toml"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("c")
        await settle(app, pilot)
        assert app.session.current_op.name == "update linear1.weight"
        assert "breakpoints[0]" in text(app.query_one(StatusBar))
        await pilot.press("n")
        names = [v.tensor_name for v in app.query_one(TensorCanvas).visible() if v.display and v.tensor_name]
        assert names == ["linear1.weight", "linear1.weight.grad", "linear1.weight.m", "linear1.weight.v",
                         "linear1.weight.m_hat", "linear1.weight.v_hat", "linear1.weight.delta",
                         "linear1.weight"]
        roles = [v.border_title for v in app.query_one(TensorCanvas).visible() if v.display and v.tensor_name]
        assert roles[0] == "old" and roles[-1] == "new" and roles[-2] == "change Δ"


# --- goto, restart, help, quit, digits ---------------------------------------------------------
async def test_goto_typed_and_errors():
    app = make_app(sc("classic.toml"))
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        status = app.query_one(StatusBar)
        await pilot.press("g")
        assert status.prompting and "go to:" in text(status)
        await pilot.press(*"2 5")
        assert "go to: 2 5" in text(status)
        # typing moves nothing on the screen (n, p... are text here); the session may go ahead to
        # the position typed (the go-to's look-ahead) and comes back on Esc (below)
        assert app.shown_position == (1, 0) and "step 1/" in text(app.query_one("#header"))
        await pilot.press("enter")
        assert not status.prompting
        assert app.session.position == (2, 4)
        assert "went to step 2, op 5" in text(status)
        await pilot.press("g", *"9 1", "enter")
        assert app.session.position == (2, 4)                  # unchanged
        assert any("no position" in n.message for n in app._notifications)
        await pilot.press("g", *"x", "enter")
        assert any("two numbers" in n.message for n in app._notifications)
        await pilot.press("g", *"13", "backspace", "enter")     # backspace edits: "1" is step 1, op 1
        assert app.session.position == (1, 0)
        await pilot.press("g", *"2 3", "escape")
        assert not status.prompting and "go to" not in text(status)
        assert app.session.position == (1, 0)
        await pilot.press("n")                                  # the keys are the app's again
        assert app.session.position == (1, 1)


async def test_goto_costs_no_layout(layouts):
    """g, typing and Enter repaint the status line and the views, but lay nothing out again (a
    dialog screen did: a full layout and repaint of the main screen when it closed)."""
    settled, count = layouts
    app = make_app(sc("classic.toml"))
    async with app.run_test(size=SIZE) as pilot:
        await settled(app, pilot)
        screen = app.screen
        layouts = count(app)
        await pilot.press("g", *"1 5", "enter")
        await pilot.pause()
        assert app.session.position == (1, 4)
        assert app.screen is screen and layouts == []


async def test_restart_reloads_and_a_broken_file_keeps_the_session(tmp_path):
    p = tmp_path / "net.toml"
    p.write_text(open(sc("classic.toml")).read())
    app = make_app(str(p))
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await pilot.press("S")
        assert app.session.position == (2, 0)
        p.write_text(open(sc("classic.toml")).read().replace("lr = 0.5", "lr = 0.25"))
        await pilot.press("r")
        assert app.session.position == (1, 0)
        assert app.session.scenario.optimizer.lr == 0.25
        await pilot.press("n", "n")
        old = app.session
        p.write_text("[scenario\nbroken")
        await pilot.press("r")
        assert app.session is old and old.position == (1, 2)
        assert any("reload failed" in (n.title or "") for n in app._notifications)
        assert "reload failed" in text(app.query_one(StatusBar))


async def test_help_toggles_and_quit():
    app = make_app(sc("classic.toml"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("question_mark")
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("q")
        assert app._exit


async def test_digits_keys_change_the_precision():
    app = make_app(sc("classic.toml"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n")
        d = app.digits
        await pilot.press("plus")
        assert app.digits == d + 1
        await pilot.press("minus", "minus")
        assert app.digits == d - 1
        v = [v for v in app.query_one(TensorCanvas).visible() if v.tensor_name == "linear1.out"][0]
        assert v.digits == d - 1


# --- tensors: open full-size, explain ------------------------------------------------------------
async def test_enter_opens_the_focused_tensor_with_indices():
    app = make_app(sc("large.toml"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n")
        views = [v for v in app.query_one(TensorCanvas).visible() if v.display]
        assert any(v.mode() == "heatmap" for v in views)
        canvas = app.query_one(TensorCanvas)
        canvas.focus()                          # Tab onto the tensors, then right: the second box
        await pilot.pause()
        assert canvas.selected_box() is views[0]
        await pilot.press("right")
        assert canvas.selected_box() is views[1]   # linear1.weight, 32x48
        await pilot.press("enter")
        assert isinstance(app.screen, TensorScreen) and app.screen.tname == "linear1.weight"
        g = app.screen.query_one(TensorGrid)
        head = g.render_line(0).text
        assert " 0 " in head and " 1 " in head            # column indices
        await pilot.press("down", "down", "right", "end")
        assert g.index() == (31, 47)
        await pilot.press("escape")
        assert not isinstance(app.screen, TensorScreen)


async def test_small_tensors_show_numbers_and_nan_is_marked_in_the_grid():
    app = make_app(sc("nan.toml"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n")
        v = [v for v in app.query_one(TensorCanvas).visible() if v.tensor_name == "input"][0]
        assert v.mode() == "numbers"
        app.open_tensor_by_name("linear1.out")
        await pilot.pause()
        g = app.screen.query_one(TensorGrid)
        assert "+Inf" in g.render_line(1).text


async def test_explain_view_shows_the_chain_rule_with_mazurs_numbers():
    app = make_app(sc("classic.toml"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("g", "1", "space", "9", "enter")   # backward linear2 just ran
        await pilot.press("e")                   # e: what it wrote first, its weight's gradient
        assert isinstance(app.screen, TensorScreen)
        assert app.screen.tname == "linear2.weight.grad"
        t = text(app.screen.query_one("#explain-text"))
        assert "∂E/∂sigmoid2.out[0, 0] · ∂sigmoid2.out[0, 0]/∂linear2.out[0, 0]" in t
        assert "0.74136507 × 0.186815602 × 0.593269992" in t
        assert "0.0821670406" in t                        # Mazur: 0.082167041
        await pilot.press("down")
        assert "∂E/∂linear2.weight[1, 0]" in text(app.screen.query_one("#explain-text"))


async def test_e_explains_what_the_op_on_screen_is_about():
    """With no box focused, e explains the first tensor the op just run wrote (n then e: a
    forward op's output, not a gradient that has not been computed yet); at the start, the next
    op's first parameter, as it was given (step 0)."""
    app = make_app(sc("classic.toml"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("e")
        assert isinstance(app.screen, TensorScreen) and app.screen.tname == "linear1.weight"
        await pilot.press("escape")
        await pilot.press("n", "e")
        assert isinstance(app.screen, TensorScreen) and app.screen.tname == "linear1.out"
        t = text(app.screen.query_one("#explain-text"))
        assert "0.05 × 0.15 + 0.1 × 0.2 + 0.35" in t and "0.3775" in t     # Mazur's net_h1
        await pilot.press("escape")
        await pilot.press("S", "e")              # the end of the step: the last update's parameter
        assert isinstance(app.screen, TensorScreen) and app.screen.tname == "linear2.bias"


# --- the continue worker -------------------------------------------------------------------------
async def test_long_continue_runs_in_a_worker_shows_progress_and_esc_interrupts():
    app = make_app(sc("long.toml"), check_every=16)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("c")
        assert app.running
        assert app.check_action("next", ()) is None         # greyed while running
        assert app.check_action("interrupt", ()) is True
        for _ in range(500):
            await pilot.pause(0.02)
            if text(app.query_one("#loss-label")).startswith("step"):
                break
        assert "running" in text(app.query_one(HeaderBar))
        assert text(app.query_one("#loss-label")).startswith("step")   # the loss curve, filled in while running
        await pilot.press("escape")
        await settle(app, pilot)
        assert not app.running
        assert app.session.last_stop.reason == "interrupted"
        assert "interrupted" in text(app.query_one(StatusBar))
        assert app.session.position > (1, 0) and not app.session.at_end
        assert "running" not in text(app.query_one(HeaderBar))


@pytest.mark.slow
async def test_reverse_continue_runs_in_the_worker_shows_progress_and_esc_interrupts():
    """C scans back from checkpoints in the worker: the status says which step the search has
    reached, Esc interrupts it, and the cursor stays where it was."""
    import time
    app = make_app(sc("long.toml"), check_every=16)
    async with app.run_test(size=SIZE) as pilot:
        s = app.session
        s.goto(40_000, 0)                      # the nearest checkpoints behind are mid-span and step 1
        app.refresh_view()
        real = s._loop

        def slow(*a, **kw):                    # a scan that takes long, as on a big net: 5 ms a chunk
            if not kw.get("live"):
                time.sleep(0.005)
            return real(*a, **kw)
        s._loop = slow
        await pilot.press("C")
        assert app.running and app.check_action("interrupt", ()) is True
        for _ in range(500):
            await pilot.pause(0.02)
            if "searching step" in text(app.query_one(StatusBar)):
                break
        assert "searching step" in text(app.query_one(StatusBar))
        await pilot.press("escape")
        await settle(app, pilot)
        assert not app.running
        assert app.session.last_stop.reason == "interrupted"
        assert app.session.position == (40_000, 0)
        assert "reverse-continue interrupted" in text(app.query_one(StatusBar))


# --- the command palette ----------------------------------------------------------------------
@pytest.mark.parametrize("action,title", [(k.action, k.title) for k in KEYS if k.title])
async def test_every_action_is_in_the_palette(action, title):
    app = make_app(sc("classic.toml"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n")                       # so that "prev" is available too
        titles = {c.title: c for c in app.get_system_commands(app.screen)}
        if action == "interrupt":
            assert title not in titles               # only while a run is going
            return
        if action == "answers":                      # only in a lesson that asks (tests/tui/test_asks.py)
            assert title not in titles
            return
        assert title in titles
        before = app.session.position
        if action in ("quit", "goto", "help", "open_tensor", "explain"):
            return                                    # these open screens / exit; their keys are tested
        titles[title].callback()
        await pilot.pause()
        await settle(app, pilot)
        if action in ("next", "stage", "finish", "continue"):
            assert app.session.position > before
        if action in ("prev", "restart", "reverse"):
            assert app.session.position < before


async def test_palette_ui_runs_an_action():
    app = make_app(sc("classic.toml"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"Next operation")
        await palette_ready(pilot, "Next operation")
        await pilot.press("enter")
        await settle(app, pilot)
        assert app.session.position == (1, 1)


# --- resize ------------------------------------------------------------------------------------
async def test_resize_to_80x24_and_back():
    app = make_app(sc("classic.toml"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("s", "s", "n")
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        assert app.screen.has_class("-narrow") and app.screen.has_class("-short")
        v = [v for v in app.query_one(TensorCanvas).visible() if v.display and v.tensor_name]
        assert all(w.size.width > 0 and w.size.height > 0 for w in v)
        assert all(w.mode() == "numbers" for w in v)         # tiny tensors still show numbers
        await pilot.press("n")
        await pilot.resize_terminal(120, 40)
        await pilot.pause()
        assert not app.screen.has_class("-narrow")


# --- command line ------------------------------------------------------------------------------
def test_bad_scenario_is_one_line_exit_2_before_textual(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[scenario]\nname = 1\n[[layers]]\ntype = 'nope'\n")
    code = ("import sys; from nnstep.cli import main; rc = main(['tui', sys.argv[1]]); "
            "print('textual' in sys.modules); sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code, str(bad)], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.startswith("nnstep: error: ") and r.stderr.count("\n") == 1
    assert r.stdout.strip() == "False"


def test_screenshot_writes_the_svg(tmp_path):
    from nnstep.cli import main
    out = tmp_path / "x.svg"
    rc = main(["screenshot", sc("classic.toml"), "--keys", "n n s", "--size", "100x30", "-o", str(out)])
    assert rc == 0
    svg = out.read_text()
    assert svg.startswith("<svg") and "loss" in svg
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_screenshot_of_a_continue_that_would_run_for_ever_is_cut_at_wait(tmp_path, capsys):
    from nnstep.cli import main
    out = tmp_path / "x.svg"
    rc = main(["screenshot", sc("long.toml"), "--keys", "c", "--wait", "0.5", "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 0 and out.read_text().startswith("<svg")
    assert "was still going after --wait 0.5 s and was interrupted" in err
    assert main(["screenshot", sc("long.toml"), "--wait", "0", "-o", str(out)]) == 2
    assert "--wait: expected a number of seconds above 0" in capsys.readouterr().err


async def test_L_hides_the_layers_table_and_it_starts_hidden_at_80x24():
    from nnstep.tui.widgets.layers import LayersTable
    for size, shown in (((120, 40), True), ((80, 24), False)):
        app = make_app(sc("classic.toml"))
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            assert app.query_one(LayersTable).display is shown
            await pilot.press("L")
            assert app.query_one(LayersTable).display is (not shown)


def test_screenshot_bad_size_and_bad_file(tmp_path, capsys):
    from nnstep.cli import main
    assert main(["screenshot", sc("classic.toml"), "--size", "big", "-o", str(tmp_path / "x.svg")]) == 2
    assert "--size" in capsys.readouterr().err
    assert main(["screenshot", str(tmp_path / "nope.toml"), "-o", str(tmp_path / "x.svg")]) == 2
    assert not (tmp_path / "x.svg").exists()


def test_make_app_accepts_a_loaded_scenario():
    app = make_app(nnstep.load_scenario(sc("classic.toml")))
    assert isinstance(app, NnstepApp) and app.session.position == (1, 0)


@pytest.mark.slow
async def test_palette_opens_any_tensor_by_name():
    app = make_app(sc("classic.toml"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("s")                        # forward done: sigmoid1.out exists
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"open sigmoid1.out")
        await palette_ready(pilot, "open sigmoid1.out")
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, TensorScreen) and app.screen.tname == "sigmoid1.out"
        assert (app.screen.value == app.session.value("sigmoid1.out")).all()


@pytest.mark.slow
async def test_quit_while_running_stops_the_worker():
    app = make_app(sc("long.toml"), check_every=16)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("c")
        await pilot.pause(0.1)
        assert app.running
        await pilot.press("q")
    assert app._interrupt.is_set()


@pytest.mark.slow
async def test_small_net_backward_op_shows_every_number_and_full_titles():
    # classic op 8 (backward linear2) has six tensors of 1x2 / 2x2: each must be numbers, not a heatmap,
    # its name uncut, at 120x40 and at 80x24 (where the boxes wrap into more rows and may scroll)
    for size in (SIZE, (80, 24)):
        app = make_app(sc("classic.toml"))
        async with app.run_test(size=size) as pilot:
            for _ in range(8):
                await pilot.press("n")
            await pilot.pause()
            views = [v for v in app.query_one(TensorCanvas).visible() if v.display and v.tensor_name]
            assert len(views) == 6
            for v in views:
                assert v.mode() == "numbers"
                assert v.render_line(0).text.strip() == v.tensor_name       # the whole name
            grad_out = app.session.value("linear2.grad_out")
            box = [v for v in views if v.tensor_name == "linear2.grad_out"][0]
            shown = box.render_line(1).text.split()
            assert [float(x) for x in shown] == pytest.approx(grad_out.ravel().tolist(), rel=1e-5)
            assert box.border_title == "upstream ∂E/∂out"


def test_stats_of_huge_finite_values_do_not_overflow():
    # the norm of [1e200, 1] is 1e200 (up to rounding), not Inf: a finite tensor never reads as Inf
    import warnings
    import numpy as np
    from nnstep.tui.format import compact, stats_line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert stats_line(np.array([1e200, 1.0])) == "min 1 max 1e+200 mean 5e+199 norm 1e+200"
        assert compact(np.array([1e308, 1e308, 0.0])) == "3 ‖1.41e+308‖"


async def test_adam_numbers_line_shows_the_step_as_t():
    app = make_app(os.path.join(HERE, "..", "..", "scenarios", "optim-adam.toml"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("S", "S")          # step 2's update just ran
        await pilot.pause()
        svg = app.export_screenshot()
        assert "0.9²)" in svg and "0.999²)" in svg


async def test_header_keeps_the_loss_at_80_columns_with_a_long_name():
    """The scenario name gives way (…) so step, stage, op and the loss always fit at 80x24."""
    app = make_app(os.path.join(HERE, "scenarios", "mazur.toml"))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("s", "s")
        await pilot.pause()
        header = text(app.query_one(HeaderBar))
        loss = app.session.losses[1]
        assert f"loss {loss:.9g}" in header, header
        assert "…" in header and "op 6/12" in header
