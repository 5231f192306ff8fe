"""Snapshot tests of the screens (pytest-textual-snapshot). Each was looked at as a picture before it
was committed. Update with `pytest tests/tui/test_snapshots.py --snapshot-update` after checking the
change is intended. The app comes from the public factory, as a course's own tests would use it."""
import os

from nnstep.tui import make_app

HERE = os.path.dirname(os.path.abspath(__file__))


def sc(name):
    return os.path.join(HERE, "scenarios", name)


def keys(*ks):
    """Press keys one at a time, letting a continue worker finish after each (run_before runs
    before snap_compare's own presses, so the keys go here); then until the app has measured the
    first step (its _presize, after the first paint, sets the canvas's scrolling height: whether
    it had run when the picture was taken made a scrollbar come and go)."""
    async def run(pilot):
        for k in ks:
            await pilot.press(k)
            await pilot.app.workers.wait_for_complete()
            await pilot.pause()
        for _ in range(50):
            if pilot.app._presized is not None and not pilot.app._presize_pending:
                break
            await pilot.pause()
        await pilot.pause()
    return run


def test_start(snap_compare):
    assert snap_compare(make_app(sc("classic.toml")), terminal_size=(120, 40))


def test_mid_forward(snap_compare):
    assert snap_compare(make_app(sc("classic.toml")), press=["n", "n", "n"], terminal_size=(120, 40))


def test_backward_op(snap_compare):
    # "backward sigmoid2": upstream gradient × local derivative = result, side by side
    assert snap_compare(make_app(sc("classic.toml")), press=["s", "s", "n", "n"], terminal_size=(120, 40))


def test_update_op_with_adam(snap_compare):
    # continue to the file's breakpoint before the update, then run it: old | grad | m v m̂ v̂ | Δ | new
    assert snap_compare(make_app(sc("adam.toml")), run_before=keys("c", "n"), terminal_size=(120, 40))


def test_help(snap_compare):
    assert snap_compare(make_app(sc("classic.toml")), press=["question_mark"], terminal_size=(120, 40))


def test_large_network_heatmaps(snap_compare):
    assert snap_compare(make_app(sc("large.toml")), press=["s", "s", "n"], terminal_size=(120, 40))


def test_nan_stop(snap_compare):
    assert snap_compare(make_app(sc("nan.toml")), run_before=keys("c"), terminal_size=(120, 40))


def test_80x24(snap_compare):
    assert snap_compare(make_app(sc("classic.toml")), press=["s", "s", "n", "n"], terminal_size=(80, 24))


def test_explain_view(snap_compare):
    # backward linear2 just ran; e explains what it wrote first, ∂E/∂w5 by the chain rule
    assert snap_compare(make_app(sc("classic.toml")), press=["g", "1", "space", "9", "enter", "e"],
                        terminal_size=(120, 40))


def test_attention_weights_per_head_with_the_diagram(snap_compare):
    # the tiny causal LM after "forward attention1 softmax": each head's T×T weights side by side,
    # zeros above the diagonal; the network diagram in place of the program, attention1 marked
    assert snap_compare(make_app(sc("lm.toml")), press=["d", "n", "n", "n", "n"], terminal_size=(120, 40))


def test_fork_sum_in_the_program_and_the_op_panel(snap_compare):
    # "backward embedding1": what attention1 and add1 sent back, and their sum, side by side
    assert snap_compare(make_app(sc("lm.toml")), run_before=keys("g", *"1 21", "enter"), terminal_size=(120, 40))


def test_diagram_at_80x24(snap_compare):
    assert snap_compare(make_app(sc("lm.toml")), press=["d", "n", "n"], terminal_size=(80, 24))


# --- a lesson that asks (tests/tui/test_asks.py tests the behaviour) ---------------------------------
def test_ask_before_the_op(snap_compare):
    # n before "forward linear1": the worked example with its result blank, a line to type into
    assert snap_compare(make_app(sc("lesson.toml")), press=["n"], terminal_size=(120, 40))


def test_ask_after_a_miss(snap_compare):
    # S stops before "backward sigmoid2"'s question; 0.04 is wrong: the hint and the explanation
    assert snap_compare(make_app(sc("lesson.toml")),
                        run_before=keys("n", "0", "full_stop", "3", "7", "7", "5", "enter", "S", "0",
                                        "full_stop", "0", "4", "enter"),
                        terminal_size=(120, 40))


def test_ask_answered_at_80x24(snap_compare):
    # the same question at 80x24, answered right: ✓, the score, and the lesson panel's verdict
    assert snap_compare(make_app(sc("lesson.toml")),
                        run_before=keys("n", "0", "full_stop", "3", "7", "7", "5", "enter"),
                        terminal_size=(80, 24))
