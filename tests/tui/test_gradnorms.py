"""The per-layer gradient-norm log (Session.grad_norm_arrays) and its plot (G)."""
import os

import numpy as np
import pytest

from nnstep.debugger.session import Session
from nnstep.tui import make_app
from nnstep.tui.widgets.curves import GradNorms, LossCurve, grad_norm_text

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
SC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scenarios")


def test_the_log_holds_each_layers_gradient_norm_when_the_backward_stage_ends():
    s = Session(os.path.join(SC, "xor-tanh.toml"))
    upd = s.program.stage_start["update"]
    expected = []
    for k in range(1, 4):
        s.goto(k, upd)                                    # backward done, update not yet run
        expected.append([np.sqrt(sum(np.sum(s.value(g) ** 2) for g in gs)) for _, gs in s.grad_layers])
        ks, names, g = s.grad_norm_arrays()
        assert list(ks) == list(range(1, k + 1)) and names == [n for n, _ in s.grad_layers]
        np.testing.assert_allclose(g, expected, rtol=1e-13)
    s.goto(2, 0)                                          # back: the log is cut at the cursor
    assert list(s.grad_norm_arrays()[0]) == [1]


def test_vanishing_lesson_the_first_layers_norm_is_the_smallest():
    s = Session(os.path.join(ROOT, "scenarios", "vanishing-gradients.toml"))
    s.run()
    ks, names, g = s.grad_norm_arrays()
    assert names[0] == "linear1" and g[-1, 0] == g[-1].min() and g[-1, -1] == g[-1].max()
    text = grad_norm_text(ks, names, g, 31).plain.splitlines()
    assert text[0].startswith("log scale 1e-4 … 1e0") and text[1].startswith("linear1 ▁")
    assert text[-1].startswith("linear5 █")


async def test_G_toggles_the_plot_in_place_of_the_loss_curve():
    app = make_app(os.path.join(SC, "xor-tanh.toml"))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("G", "S", "S")
        await pilot.pause()
        g = app.query_one(GradNorms)
        assert g.display and not app.query_one(LossCurve).display
        assert "step 2" in str(g.render())
        await pilot.press("G")
        assert app.query_one(LossCurve).display and not g.display


def test_the_heading_fits_one_line_as_the_panel_narrows():
    """A wrapped heading took the row of a layer (at 80x24, the classic lesson's linear2)."""
    ks, names, g = np.array([1, 2]), ["linear1", "linear2"], np.array([[1e-3, 0.5], [2e-3, 0.4]])
    for width, head in [(31, "log scale 1e-3 … 1e0, step 2"), (23, "log 1e-3…1e0, step 2"),
                        (20, "log 1e-3…1e0, step 2"), (19, "1e-3…1e0 step 2")]:
        lines = grad_norm_text(ks, names, g, width).plain.splitlines()
        assert lines[0] == head and len(lines) == 3, (width, lines)
        assert all(len(line) <= max(width, len(head)) for line in lines), (width, lines)


@pytest.mark.slow
async def test_at_80x24_every_layers_row_shows():
    import nnstep
    for name, layers in [("classic.toml", 2), ("vanishing-gradients.toml", 5)]:
        sc = nnstep.load_scenario(os.path.join(ROOT, "scenarios", name))
        sc.asks = []                             # (S runs the step through, without its questions)
        app = make_app(sc)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("S", "G")
            await pilot.pause()
            g = app.query_one(GradNorms)
            shown = [app.screen.get_widget_at(g.content_region.x, y)[0] is g and
                     "".join(s.text for s in g.render_line(y - g.content_region.y))
                     for y in range(g.content_region.y, g.content_region.bottom)]
            rows = [r for r in shown if r and r.startswith("linear")]
            assert len(rows) == layers, (name, shown)
            assert shown[0].startswith("log 1e"), shown


async def test_the_plot_takes_the_panels_width_and_every_step():
    """Shown right after G, the plot is as wide as its panel (it drew for a panel not laid out yet:
    4 columns), and 300 steps fit its columns as means, so a norm falling over the run falls."""
    import nnstep
    from nnstep.tui.widgets.curves import grad_norm_text
    ks = np.arange(1, 301)
    g = np.logspace(0, -16, 300)[:, None]                  # a norm falling from 1 to 1e-16
    row = grad_norm_text(ks, ["linear1"], g, 31).plain.splitlines()[1]
    bars = row.split()[1]
    assert bars[0] == "█" and bars[-1] == "▁" and len(set(bars)) > 4 and len(bars) == 31 - 7 - 10, row
    app = make_app(nnstep.load_scenario(os.path.join(ROOT, "tests", "tui", "scenarios", "mazur.toml")))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("S", "G")
        await pilot.pause()
        text = str(app.query_one(GradNorms).render())
        assert text.splitlines()[0].startswith("log scale"), text


async def test_in_the_middle_of_the_first_backward_pass():
    """At op 9 of the 2-2-2 lesson linear2's gradients exist: the plot shows them so far."""
    import nnstep
    app = make_app(nnstep.load_scenario(os.path.join(ROOT, "tests", "tui", "scenarios", "mazur.toml")))
    async with app.run_test(size=(120, 40)) as pilot:
        app.session.goto(1, 8)
        await pilot.press("G")
        await pilot.pause()
        lines = str(app.query_one(GradNorms).render()).splitlines()
        assert lines[0] == "step 1's backward pass so far", lines
        w = app.session.value("linear2.weight.grad")
        assert lines[1].split() == ["linear1", "·"] and lines[2].split()[0] == "linear2"
        assert float(lines[2].split()[1]) == pytest.approx(float(np.sqrt((w ** 2).sum())), rel=1e-2)
