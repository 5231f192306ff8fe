"""The TUI on the optimizer lessons: the header shows the lr in force with a schedule, AdamW's
update panel shows the decoupled decay and still the change and the new value, the clip op shows
the norm, the factor and the clipped gradient."""
import os

import pytest

from nnstep.tui import make_app
from nnstep.tui.widgets.bars import HeaderBar
from nnstep.tui.widgets.tensor import TensorCanvas

LESSONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scenarios")
SIZE = (120, 40)


def text(widget) -> str:
    return str(widget.render())


def shown(app):
    return [v.tensor_name for v in app.query_one(TensorCanvas).visible() if v.display and v.tensor_name]


@pytest.mark.slow
async def test_header_shows_the_lr_in_force():
    """lr-cosine.toml: lr₀ = 0.4, T_max = 4: 0.4 during step 1, 0.2·(1 + √2/2) = 0.341421 during
    step 2 (the `lr schedule` op at the end of step 1 wrote it), and no lr without a schedule."""
    app = make_app(os.path.join(LESSONS, "lr-cosine.toml"))
    async with app.run_test(size=SIZE) as pilot:
        assert "lr 0.4 " in text(app.query_one(HeaderBar))
        await pilot.press("S")                      # stops at the lesson's breakpoint, update
        assert app.session.position == (1, 4)
        assert "lr 0.4 " in text(app.query_one(HeaderBar))
        await pilot.press("S")
        assert app.session.position == (2, 0)
        assert "lr 0.341421" in text(app.query_one(HeaderBar))
        assert app.session.ops[-1].name == "lr schedule"
    app = make_app(os.path.join(LESSONS, "optim-adam.toml"))
    async with app.run_test(size=SIZE) as pilot:
        assert "│ lr" not in text(app.query_one(HeaderBar))


async def test_adamw_update_panel_shows_the_decay_and_the_change():
    app = make_app(os.path.join(LESSONS, "adam-vs-adamw.toml"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("c")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.session.current_op.name == "update linear1.weight"
        await pilot.press("n")
        names = shown(app)
        assert names[:3] == ["linear1.weight", "linear1.weight.grad", "linear1.weight.decayed"]
        assert names[-2:] == ["linear1.weight.delta", "linear1.weight"]       # never crowded out


async def test_clip_op_panel():
    app = make_app(os.path.join(LESSONS, "clipping.toml"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("c")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.session.current_op.name == "clip grad norm"
        await pilot.press("n")
        assert shown(app) == ["linear1.weight.grad", "grad_norm", "clip_coef", "clipped_norm",
                              "linear1.weight.grad.clipped"]


@pytest.mark.slow
async def test_lr_curve_under_the_loss_curve():
    """The session logs the engine's `lr` as each step's loss op runs: lr-warmup.toml's LinearLR
    gives 0.1, 0.2, 0.3 for steps 1-3 (0.4·(0.25 + 0.75·(k − 1)/3)); the curve's label shows the
    last; without a schedule there is neither log nor curve."""
    from nnstep.tui.widgets.curves import LossCurve
    app = make_app(os.path.join(LESSONS, "lr-warmup.toml"))
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(3):
            await pilot.press("c")
            await app.workers.wait_for_complete()
            await pilot.pause()
        ks, lrs = app.session.lr_arrays()
        assert ks.tolist() == [1, 2, 3]
        assert lrs.tolist() == [0.1, 0.2, 0.30000000000000004]     # 0.2·1.5 in float64
        curve = app.query_one(LossCurve)
        assert curve.has_class("-lr") and "lr 0.3" in text(curve.query_one("#lr-label"))
    app = make_app(os.path.join(LESSONS, "optim-adam.toml"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("S")
        assert app.session.lr_arrays() is None
        assert not app.query_one(LossCurve).has_class("-lr")
