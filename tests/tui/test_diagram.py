"""The network diagram (tui.diagram, no Textual) and its panel, the fork/merge marks of the
program, and attention's per-head grids in the op panel."""
import os

import numpy as np

from nnstep.scenario.loader import load_scenario, loads_scenario
from nnstep.tui import make_app
from nnstep.tui.diagram import graph_lines, list_lines, nodes
from nnstep.tui.format import grid_2d
from nnstep.tui.widgets.panels import DiagramView, ProgramLines, ProgramView, graph_mark

HERE = os.path.dirname(os.path.abspath(__file__))
LM = os.path.join(HERE, "scenarios", "lm.toml")
RES12 = os.path.join(HERE, "..", "..", "bench", "residual_12x256.toml")

RESIDUAL = """
[data]
x = [[1.0, 2.0]]
y = [[0.0, 1.0]]
[[layers]]
type = "linear"
name = "h"
out = 2
[[layers]]
type = "tanh"
[[layers]]
type = "linear"
out = 2
[[layers]]
type = "add"
inputs = ["h", "linear2"]
[loss]
type = "mse"
"""


def plain(lines):
    return ["".join(t for t, _ in parts) for parts in lines]


def test_a_residual_skip_is_a_lane_from_its_source_to_an_arrow_into_the_merge():
    sc = loads_scenario(RESIDUAL)
    lines, cur = graph_lines(sc, current="add1")
    text = plain(lines)
    # nodes on even lines: input, h, tanh1, linear2, add1, loss
    assert [t.split("●")[1].split()[0] for t in text[::2]] == ["input", "h", "tanh1", "linear2", "add1", "loss"]
    assert text[3].startswith(" ┌─┤")            # the skip leaves h while the trunk goes on to tanh1
    assert text[5].startswith(" │ │") and text[7].startswith(" │ │")   # it passes tanh1 and linear2
    assert text[8].startswith(" └▶●") and "add = h + linear2" in text[8]
    assert cur == 8 and ("add1", "bold reverse") in lines[8]


def test_every_edge_of_the_graph_is_drawn_once():
    sc = load_scenario(LM)
    ns = nodes(sc)
    text = plain(graph_lines(sc)[0])
    arrows = sum(t.count("▶") for t in text)
    trunk = sum(1 for t in text[1::2] if t.rstrip().endswith(("│", "┤")))
    edges = sum(len(set(n.reads)) for n in ns)
    assert arrows + trunk == edges


def test_the_list_form_names_what_a_layer_reads_when_it_is_not_the_one_above():
    sc = loads_scenario(RESIDUAL)
    text = plain(list_lines(sc, current="h")[0])
    assert text[1].startswith("▶h")
    assert text[4].strip().endswith("← h, linear2")
    assert "←" not in text[2]


def test_heads_side_by_side():
    a = np.arange(2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    g, block, rows = grid_2d(a)
    assert g.shape == (8, 12) and block == 4 and rows == 4       # (two samples: a rule between them)
    assert g[4 + 2, 1 * 4 + 3] == a[1, 1, 2, 3]


async def test_d_shows_the_diagram_following_the_op_and_the_program_marks_forks_and_merges():
    app = make_app(LM)
    async with app.run_test(size=(120, 40)) as pilot:
        ops = app.session.ops
        marks = {op.name: graph_mark(op) for op in ops}
        assert marks["backward embedding1"] == " Σ2"        # read by attention1 and add1
        assert marks["forward add1"] == marks["backward add1"] == " ⊕"
        assert marks["forward attention1 qkv"] == ""
        assert "backward embedding1 Σ2" in app.query_one(ProgramView).text()
        await pilot.press("d")
        dv = app.query_one(DiagramView)
        assert dv.display and not app.query_one(ProgramView).display
        await pilot.press("n", "n")                          # the cursor is in attention1
        await pilot.pause()
        assert dv.as_graph
        line = next(p for p in dv.query_one("#diagram-text").lines if ("attention1", "bold reverse") in p)
        assert "attention" in "".join(t for t, _ in line)
        text = dv.query_one("#diagram-text")
        assert text.size.height == len(text.lines)          # every row of the graph on screen
        await pilot.press("d")
        assert app.query_one(ProgramView).display and not dv.display


async def test_twelve_layers_are_a_graph_at_120x40_and_a_list_at_80x24():
    for size, graph in (((120, 40), True), ((80, 24), False)):
        app = make_app(RES12)
        async with app.run_test(size=size) as pilot:
            await pilot.press("d")
            await pilot.pause()
            dv = app.query_one(DiagramView)
            assert dv.as_graph is graph
            if not graph:
                assert "res2  add ← res1, relu2" in dv.text()


async def test_the_diagram_gets_a_row_for_every_line_whatever_came_before():
    # d draws the diagram once it has its size (at 0x0 it drew the list's lines, then the graph's
    # more lines at the resize; a layout between the two kept the list's height: the graph lost
    # its last node rows, layernorm1 to the loss, in a full test run)
    for size in ((120, 40), (80, 24)):
        app = make_app(LM)
        async with app.run_test(size=size) as pilot:
            await pilot.press("d", "n", "n")
            await pilot.pause()
            dv = app.query_one(DiagramView)
            text = dv.query_one("#diagram-text")
            assert dv.as_graph
            assert text.size.height == len(text.lines)
            assert "loss" in plain(text.lines)[-1]
            await pilot.press("d", "d")                     # hidden, then shown again
            await pilot.pause()
            assert text.size.height == len(text.lines)


async def test_a_layout_between_two_changes_of_the_line_count_keeps_no_stale_height(monkeypatch):
    # The race of the test above made to happen every time: the screen lays out right after each
    # change of the diagram's line count, before the widget's own layout request is handled.
    # (Textual's screen layout, a private method, is called here to force the order.)
    app = make_app(LM)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        dv = app.query_one(DiagramView)
        text = dv.query_one("#diagram-text")
        set_lines = ProgramLines.set_lines

        def and_a_layout(self, lines):
            set_lines(self, lines)
            if self is text:
                app.screen._refresh_layout(app.size)
        monkeypatch.setattr(ProgramLines, "set_lines", and_a_layout)
        # the two line counts of the same diagram, as a list and as a graph, one after the other
        scenario = app.session.scenario
        text.set_lines(list_lines(scenario, None)[0])
        text.set_lines(graph_lines(scenario, None)[0])
        await pilot.press("d")
        await pilot.pause()
        await pilot.pause()
        assert len(text.lines) == len(graph_lines(scenario, None)[0]) > len(list_lines(scenario, None)[0])
        assert text.size.height == len(text.lines)
