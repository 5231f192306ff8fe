"""The per-layer gradient-norm log (Session.grad_norm_arrays) and its plot (G)."""
import os

import numpy as np

from nnstep.debugger.session import Session
from nnstep.tui import make_app
from nnstep.tui.widgets.panels import GradNorms, LossCurve, grad_norm_text

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


def without_lesson(path: str, tmp_path) -> str:
    """A copy of a shipped scenario without its [[ask]] and [[note]] tables: S runs to the end of
    the step instead of stopping before the lesson's first question."""
    out, keep = [], True
    for line in open(path, encoding="utf-8").read().splitlines():
        if line.startswith("["):
            keep = line.strip() not in ("[[ask]]", "[[note]]")
        if keep:
            out.append(line)
    copy = tmp_path / os.path.basename(path)
    copy.write_text("\n".join(out) + "\n", encoding="utf-8")
    return str(copy)


async def test_at_80x24_every_layers_row_shows(tmp_path):
    for name, layers in [("classic.toml", 2), ("vanishing-gradients.toml", 5)]:
        app = make_app(without_lesson(os.path.join(ROOT, "scenarios", name), tmp_path))
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
