"""The lines the app's widgets hand the compositor (widgets.memo: reused when unchanged, or given
without Textual's styles cache) are the lines Textual's own pipeline draws from scratch, after
every kind of change a user can make: stepping, focus, the other panels, a theme, a resize."""
import os

import pytest
from rich.segment import Segment
from textual.geometry import Region
from textual.widget import Widget

from nnstep.tui import make_app
from nnstep.tui.widgets.memo import DirectLines, MemoLines

HERE = os.path.dirname(os.path.abspath(__file__))


def classic():
    return make_app(os.path.join(HERE, "scenarios", "classic.toml"))


def whole(widget) -> Region:
    """A widget's whole region, as the compositor crops one it shows entirely."""
    return Region(0, 0, widget.outer_size.width, widget.outer_size.height)


async def loss_panel(pilot):
    """After the first paint: the loss panel, its whole crop and the lines it gives for it."""
    await pilot.pause()
    loss = pilot.app.query_one("#loss")
    crop = whole(loss)
    return loss, crop, loss.render_lines(crop)


def cells(strips):
    return [[(s.text, s.style) for s in Segment.simplify(list(strip))] for strip in strips]


def assert_as_textual_draws(app, when: str) -> int:
    """Every visible widget of the screen: what it gives now against Textual's own render of it
    with its styles cache emptied (Widget.render_lines: borders, padding, background, filters).
    Returns how many widgets went through the app's own path."""
    ours = 0
    for widget, (region, clip) in list(app.screen._compositor.visible_widgets.items()):
        crop = Region(0, 0, region.width, region.height)      # (as the compositor asks)
        given = widget.render_lines(crop)
        widget._styles_cache.clear()
        fresh = Widget.render_lines(widget, crop)
        assert cells(given) == cells(fresh), f"{when}: {widget!r} differs from Textual's own drawing"
        ours += isinstance(widget, MemoLines)
    return ours


@pytest.mark.slow
async def test_reused_and_direct_lines_are_what_textual_draws():
    app = classic()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert assert_as_textual_draws(app, "start") >= 12
        assert any(isinstance(w, DirectLines) for w in app.screen._compositor.visible_widgets)
        steps = [("n", "n"), ("n", "n again"), ("n", "a third n"), ("p", "p"), ("s", "s"),
                 ("tab", "focus on the tensors"), ("right", "another tensor selected"),
                 ("shift+tab", "focus away"), ("d", "the diagram"), ("d", "the program again"),
                 ("G", "the gradient norms"), ("G", "the loss curve again"), ("L", "no layers table"),
                 ("L", "the layers table again"), ("plus", "more digits"),
                 ("S", "a step's loss"), ("S", "a second loss: the curve drawn"), ("S", "a third")]
        for key, when in steps:
            await pilot.press(key)
            await pilot.pause()
            assert_as_textual_draws(app, when)
        app.theme = "textual-light"
        await pilot.pause()
        await pilot.pause()
        assert_as_textual_draws(app, "a light theme")
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        await pilot.pause()
        assert_as_textual_draws(app, "resized to 80x24 (compact)")
        await pilot.press("n")
        await pilot.pause()
        assert_as_textual_draws(app, "n at 80x24")


@pytest.mark.slow
async def test_a_widget_given_a_border_is_drawn_by_textuals_styles_cache():
    """DirectLines hands its own lines over only while nothing in its styles would change them."""
    app = classic()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        header = app.query_one("#header")
        header.styles.height = 3
        header.styles.border = ("round", "red")
        await pilot.pause()
        await pilot.pause()
        lines = header.render_lines(Region(0, 0, header.outer_size.width, 3))
        assert lines[0].text.startswith("╭") and lines[2].text.startswith("╰")
        assert "step" in lines[1].text
        assert_as_textual_draws(app, "a border on the header")


async def test_an_unchanged_widget_gives_the_same_lines_again():
    """The saving itself: a panel no key touched is not drawn again (its very list is returned)."""
    app = classic()
    async with app.run_test(size=(120, 40)) as pilot:
        loss, crop, first = await loss_panel(pilot)
        await pilot.press("n")
        await pilot.pause()
        assert loss.render_lines(crop) is first
        loss.refresh()
        assert loss.render_lines(crop) is not first


async def test_without_the_styles_cache_internals_every_ask_is_drawn_afresh(monkeypatch):
    """A Textual whose styles cache keeps its lines differently: no reuse, the same screen."""
    from nnstep.tui import compat
    monkeypatch.setattr(compat, "CAN_REUSE", False)
    app = classic()
    async with app.run_test(size=(120, 40)) as pilot:
        loss, crop, first = await loss_panel(pilot)
        assert loss.render_lines(crop) is not first
        await pilot.press("n")
        await pilot.pause()
        assert_as_textual_draws(app, "n without reuse")


@pytest.mark.slow
async def test_scrolled_panels_give_what_textual_draws():
    """The language model at 80x24 with the layers table on: the canvas is taller than its room
    and is scrolled (as the mouse wheel does), the program list follows the current op; each
    scrolled widget's lines are still Textual's own."""
    app = make_app(os.path.join(HERE, "scenarios", "lm.toml"))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        canvas = app.query_one("#op-tensors")
        program = app.query_one("#program")
        scrolled = set()
        for key in ["L"] + ["n"] * 12 + ["wheel", "wheel", "n", "wheel", "p", "p"]:
            if key == "wheel":
                canvas.scroll_down(animate=False)
            else:
                await pilot.press(key)
            await pilot.pause()
            await pilot.pause()
            if canvas.scroll_y:
                scrolled.add("canvas")
            if program.scroll_y:
                scrolled.add("program")
            assert_as_textual_draws(app, f"{key} at {app.session.position}")
        assert scrolled == {"canvas", "program"}
