"""What the screen shows, checked as a user reads it (issue "Every operation as clear as the
linear layer's", its screens half): the box an op is about is whole on screen, the formula stays
in view, formula lines and the layers table follow the digits setting and never write a result
with fewer digits than its numbers need, the causal mask is marked in the boxes, conv channels
are told apart, frames are told apart, and the status line answers the last action only."""
import os

import numpy as np

from nnstep import loads_scenario
from nnstep.tui import make_app
from nnstep.tui.widgets.panels import LayersTable
from nnstep.tui.widgets.tensor import TensorCanvas

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")


def sc(name):
    return os.path.join(HERE, "scenarios", name)


def shipped(name):
    return os.path.join(ROOT, "scenarios", name)


async def ready(app, pilot):
    """The first screen drawn and the first step measured (NnstepApp._presize)."""
    for _ in range(50):
        await pilot.pause()
        if app._presized is not None and not app._presize_pending:
            break
    await pilot.pause()


async def goto(pilot, step: int, op: int):
    """g, then "step op", Enter: the cursor before op ``op`` (op ``op - 1`` just ran)."""
    await pilot.press("g", *f"{step} {op}", "enter")
    await pilot.pause()


def formula(app) -> str:
    """The formula lines of the op panel, as drawn (wrapped lines joined)."""
    return " ".join(line.plain.strip() for line in app.query_one(TensorCanvas)._head_src)


def table_text(app) -> str:
    t = app.query_one(LayersTable)
    return "\n".join(s.text for s in t.lines_in(range(len(t._rows) + 1), t.size.width))


# --- digits -------------------------------------------------------------------------------------
async def test_formula_lines_and_the_table_follow_the_digits_setting():
    app = make_app(sc("mazur.toml"))
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(app, pilot)
        await goto(pilot, 1, 9)                  # backward linear2 just ran
        g = app.session.value("linear2.grad_out").ravel()
        for _ in range(3):
            await pilot.press("plus")
        await pilot.pause()
        assert app.digits == 9
        assert f"{g[0]:.9g}" in formula(app), formula(app)
        for _ in range(6):
            await pilot.press("minus")
        await pilot.pause()
        assert app.digits == 3
        assert f"{g[0]:.3g}, {g[1]:.3g}" in formula(app), formula(app)
        out = app.session.value("sigmoid1.out").ravel()
        assert f"{out[0]:.3g} {out[1]:.3g} " in table_text(app), table_text(app)
        assert f"{out[0]:.4g}" not in table_text(app)


async def test_a_result_is_written_with_the_decimal_its_numbers_have():
    # the tutorial's neuron with lr 1 (docs/tutorial.md, section 5): at step 4 backward linear1
    # writes 352.5·1 + 570·2 = 1492.5, which the formula line wrote "1492"
    first = """
[scenario]
name = "My first neuron"
[data]
x = [[1.0], [2.0]]
y = [[2.0], [4.0]]
[[layers]]
type = "linear"
out = 1
weight = [[0.5]]
bias = [0.0]
[loss]
type = "mse"
[optimizer]
type = "sgd"
lr = 1.0
[train]
steps = 5
"""
    app = make_app(loads_scenario(first))
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(app, pilot)
        await pilot.press("minus", "minus")     # 4 significant digits, as the formula lines had
        await goto(pilot, 4, 5)
        assert app.session.last_record.op.name == "backward linear1"
        assert "1492.5 = [352.5, 570] @ [1, 2]ᵀ" in formula(app), formula(app)


# --- the status line ----------------------------------------------------------------------------
async def test_the_status_line_answers_the_last_action_only():
    from nnstep.tui.widgets.panels import StatusBar
    app = make_app(sc("mazur.toml"))
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(app, pilot)
        bar = app.query_one(StatusBar)
        for key in ("d", "L", "tab", "G", "x"):
            await goto(pilot, 1, 8)
            assert "went to step 1, op 8" in bar.render().plain
            await pilot.press(key)
            await pilot.pause()
            assert "went to" not in bar.render().plain, key
            await pilot.press("escape")
        await pilot.press("plus")
        await pilot.pause()
        assert "7 significant digits" in bar.render().plain        # a key's own answer shows
        # a stop says where the cursor is and why: it stays until the cursor moves
        await pilot.press("b", "c")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert "stopped" in bar.render().plain
        await pilot.press("d")
        await pilot.pause()
        assert "stopped" in bar.render().plain


# --- frames -------------------------------------------------------------------------------------
def box_edges(canvas, b):
    """The top and bottom edges of box ``b`` as drawn on the canvas (cells x .. x + width)."""
    r = b.region
    lines = canvas._lines
    return lines[r.y].crop(r.x, r.right).text, lines[r.bottom - 1].crop(r.x, r.right).text


async def test_every_frame_is_as_wide_as_its_box_with_combining_marks_in_the_title():
    # Adam's update: "m̂ = m/(1−β1ᵗ)" is two characters in the first cell; the top edge was
    # counted in characters and came out one cell short of the box
    app = make_app(shipped("optim-adam.toml"))
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(app, pilot)
        await goto(pilot, 2, 1)                  # step 1's update just ran
        canvas = app.query_one(TensorCanvas)
        titles = []
        for b in canvas.visible():
            top, bottom = box_edges(canvas, b)
            titles.append(b.border_title)
            assert top[0] in "╭┏╔" and top[-1] in "╮┓╗", (b.border_title, top)
            assert bottom[0] in "╰┗╚" and bottom[-1] in "╯┛╝", (b.border_title, bottom)
        assert "m̂ = m/(1−β1ᵗ)" in titles and "v̂ = v/(1−β2ᵗ)" in titles


async def test_the_focused_box_is_told_from_the_written_ones():
    # the focus was a thin frame in the theme's accent, which in textual-dark is the very yellow of
    # "just written" (a thick frame): a focused box now has a double frame, a written one a heavy one
    app = make_app(sc("mazur.toml"))
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(app, pilot)
        await goto(pilot, 1, 9)                  # backward linear2 just ran
        canvas = app.query_one(TensorCanvas)
        await pilot.press("tab")
        await pilot.pause()
        focused = canvas.selected_box()
        assert focused is not None and not focused.written
        written = [b for b in canvas.visible() if b.written]
        assert written

        def top(b):
            r = b.region
            return canvas._lines[r.y].crop(r.x, r.right)

        def colour(strip):
            return next(seg.style.color for seg in strip if seg.text.strip())
        assert top(focused).text.startswith("╔═")
        assert all(top(b).text.startswith("┏━") for b in written)
        assert colour(top(focused)) != colour(top(written[0]))
        while not canvas.selected_box().written:
            await pilot.press("tab")
        await pilot.pause()
        b = canvas.selected_box()
        assert top(b).text.startswith("╔═") and colour(top(b)) == colour(top(written[-1] if written[-1] is not b
                                                                            else written[0]))


# --- what the boxes mark ------------------------------------------------------------------------
def box_by_name(app, name):
    return next(b for b in app.query_one(TensorCanvas).visible() if b.tensor_name == name)


def inner(b) -> list:
    """The lines inside a box's frame (Strips)."""
    return [b.render_line(y) for y in range(b.size.height)]


def number_cells(strip) -> list:
    """The numbers' segments of a line of a box, left to right (separators left out)."""
    return [seg for seg in strip if seg.text.strip() and seg.text not in ("│", " ")]


async def test_stacked_blocks_of_a_conv_are_ruled_apart():
    # a conv weight (out 2, in 2, 2, 2): each output channel's 2x2 kernels side by side (│ between
    # the input channels), the two output channels one above the other: a rule between them, as
    # between the batch's two images; attention's heads had their │, conv channels ran together
    app = make_app(sc("conv-channels.toml"))
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(app, pilot)
        await pilot.press("n")
        await pilot.pause()
        for name, rows in (("conv2d1.weight", 2), ("input", 3), ("conv2d1.out", 2)):
            lines = [s.text.rstrip() for s in inner(box_by_name(app, name))]
            rules = [j for j, t in enumerate(lines) if t and set(t) <= set("─┼")]
            assert len(rules) == 1, (name, lines)
            numbers = [j for j, t in enumerate(lines) if t and t[-1].isdigit()]
            assert [j for j in numbers if j < rules[0]][-rows:] == list(range(rules[0] - rows, rules[0])), lines
            assert [j for j in numbers if j > rules[0]] == list(range(rules[0] + 1, rules[0] + 1 + rows)), lines
            assert "┼" in lines[rules[0]], lines                # where the │ between channels crosses


async def test_the_cells_the_causal_mask_hides_are_marked_with_a_legend():
    # .scores is kept before the mask (finite where key j > query i), .weights is 0 there: the
    # boxes dim the cells the mask hides (the spec's Attention.masked) and say so on the name line
    app = make_app(shipped("tiny-lm.toml"))
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(app, pilot)
        layer = next(L for L in app.scenario.layers if L.type == "attention")
        hidden = app.session.program.plan.types[layer.name].masked(layer)
        T = hidden.shape[0]
        for op, name in ((4, "attn.scores"), (5, "attn.weights"), (18, "attn.scores.grad")):
            await goto(pilot, 1, op)             # op - 1 just ran: it wrote the tensor
            b = box_by_name(app, name)
            lines = inner(b)
            assert "hidden by the causal mask" in lines[0].text, lines[0].text
            heads = app.session.value(name).shape[1]
            rows = [number_cells(s) for s in lines[1:1 + T]]
            for i, cells in enumerate(rows):
                assert len(cells) == heads * T
                for c, seg in enumerate(cells):
                    assert bool(seg.style.dim) == bool(hidden[i, c % T]), (name, i, c, seg)
        # a box of another tensor marks nothing
        await goto(pilot, 1, 3)
        assert "hidden" not in inner(box_by_name(app, "attn.q"))[0].text
        # at 80x24 ∂E/∂scores is a heatmap: the hidden cells black, and the box says so
        await pilot.resize_terminal(80, 24)
        await goto(pilot, 1, 18)
        b = box_by_name(app, "attn.scores.grad")
        assert b.mode() == "heatmap" and "black: masked" in inner(b)[0].text, inner(b)[0].text


def test_a_heatmap_leaves_hidden_cells_out_of_its_colours():
    # a heatmap of masked scores: the hidden cells are their own colour, and a large hidden value
    # (scores are taken before the mask) does not set the scale of the others
    from nnstep.tui.widgets.tensor import C_HIDDEN, LEVELS, heat_codes
    hidden = np.triu(np.ones((4, 4), dtype=bool), 1)
    a = np.where(hidden, 100.0, 1.0)
    codes, scale = heat_codes(a, 4, 4, hidden)
    assert scale == 1.0
    assert (codes[hidden] == C_HIDDEN).all() and (codes[~hidden] == 2 * LEVELS).all()
    codes, _ = heat_codes(np.where(hidden, 100.0, 1.0), 2, 2, hidden)     # 2x2 blocks of 2x2 cells
    assert codes[0, 1] == C_HIDDEN and codes[0, 0] == codes[1, 1] == 2 * LEVELS


# --- the op panel's room ------------------------------------------------------------------------
def on_screen(app) -> list[str]:
    """The canvas's lines as the screen shows them now."""
    c = app.query_one(TensorCanvas)
    return [s.text for s in c.lines_in(range(c.size.height), c.size.width)]


def rows_in_view(app, name) -> int:
    """How many of the number rows of the box of ``name`` are on screen."""
    b = box_by_name(app, name)
    shown = on_screen(app)
    rows = [s.text.strip() for s in inner(b)[1:] if s.text.strip() and not set(s.text.strip()) <= set("─┼")]
    return sum(any(r in line for line in shown) for r in rows)


async def test_the_box_an_op_wrote_is_whole_on_screen():
    # tiny-lm at 120x40 after c n: backward attn softmax wrote ∂E/∂scores, the point of the lesson;
    # the panel holds the formula and two boxes of its three, and cut off that one
    app = make_app(shipped("tiny-lm.toml"))
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(app, pilot)
        await pilot.press("c")
        await app.workers.wait_for_complete()
        await pilot.pause()
        await pilot.press("n")
        await pilot.pause()
        assert app.session.last_record.op.name == "backward attn softmax"
        T = app.session.value("attn.scores.grad").shape[-1]
        assert rows_in_view(app, "attn.scores.grad") == T
        assert on_screen(app)[0].startswith("attn.scores.grad = attn.weights")     # and the formula
        # the next op's results, taller together than the room below the formula: the first whole,
        # the second below it; and back: ∂E/∂scores again
        await pilot.press("n")
        await pilot.pause()
        assert rows_in_view(app, "attn.q.grad") == T and rows_in_view(app, "attn.k.grad") > 0
        await pilot.press("p")
        await pilot.pause()
        assert rows_in_view(app, "attn.scores.grad") == T


async def test_without_the_layers_table_the_op_panel_takes_its_rows():
    # L hid the table and left its rows blank below the panel (the 2-2-2 net needs few)
    for name, size, keys in (("mazur.toml", (120, 40), ["L"]), ("mazur.toml", (80, 24), []),
                             ("lm.toml", (120, 40), ["L"])):
        app = make_app(sc(name))
        async with app.run_test(size=size) as pilot:
            await ready(app, pilot)
            for k in keys + ["n"]:
                await pilot.press(k)
            await pilot.pause()
            assert not app.query_one(LayersTable).display
            column = app.query_one("#right")
            shown = [w for w in column.children if w.display]
            assert sum(w.outer_size.height for w in shown) == column.size.height, (name, size)
            assert shown[0].id == "op"


async def test_the_formula_stays_in_view_while_tab_goes_through_the_boxes():
    # 80x24, the 2-2-2 net after backward linear2: the panel scrolled to the focused box and took
    # the formula's lines with it, and no key (n, r) brought them back
    app = make_app(sc("mazur.toml"))
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(app, pilot)
        await goto(pilot, 1, 9)
        canvas = app.query_one(TensorCanvas)
        first = canvas._head_src[0].plain
        assert canvas.virtual_size.height > canvas.size.height      # (the boxes do not all fit)
        for _ in range(5):
            await pilot.press("tab")
            await pilot.pause()
            b = canvas.selected_box()
            assert on_screen(app)[0] == first.ljust(len(on_screen(app)[0]))
            assert rows_in_view(app, b.tensor_name) == b.value.reshape(-1, b.value.shape[-1]).shape[0]
        for key in ("n", "r"):
            await pilot.press(key)
            await pilot.pause()
            assert on_screen(app)[0].startswith(canvas._head_src[0].plain.rstrip()), key
