"""A lesson that asks, in the TUI (Pilot): the answer box before the op, ✓ and ✗ with both values, the
hint and the explanation after a miss, Esc, the score in the header, s/S/c/g stopping before a
question, going back without asking again, r, --predict, --record, notes in any script, and the
box at 80x24. The numbers are Mazur's 2-2-2 network (see tests/debugger/test_lesson.py)."""
from __future__ import annotations

import json
import os

import pytest

from nnstep.scenario import loads_scenario
from nnstep.tui import make_app
from nnstep.tui.screens.ask import AskScreen, VerdictScreen
from nnstep.tui.widgets.lesson import LessonPanel
from nnstep.tui.widgets.bars import HeaderBar
from nnstep.tui.widgets.status import StatusBar

HERE = os.path.dirname(os.path.abspath(__file__))
CLASSIC = open(os.path.join(HERE, "scenarios", "classic.toml"), encoding="utf-8").read()
ASKS = """
[[ask]]
op = "forward linear1"
tensor = "linear1.out[0, 0]"

[[ask]]
op = "backward sigmoid2"
tensor = "sigmoid2.grad_in[0, 1]"
hint = "Multiply the upstream gradient by out·(1 − out)."

[[ask]]
op = "update linear2.weight"
tensor = "linear2.weight[0, 0]"
show = "nothing"

[[note]]
stage = "backward"
text = "The backward pass starts at the loss."
"""


def app_for(extra: str = ASKS, tmp_path=None, **kw):
    path = None
    if tmp_path is not None:
        path = tmp_path / "lesson.toml"
        path.write_text(CLASSIC + extra, encoding="utf-8")
        return make_app(str(path), **kw)
    return make_app(loads_scenario(CLASSIC + extra), **kw)


async def typed(pilot, text: str):
    for ch in text:
        await pilot.press({" ": "space", ".": "full_stop", "*": "asterisk", "+": "plus", "-": "minus",
                           "(": "left_parenthesis", ")": "right_parenthesis", "/": "slash"}.get(ch, ch))


def header(app) -> str:
    return str(app.query_one(HeaderBar).render())


def status(app) -> str:
    return str(app.query_one(StatusBar).render())


@pytest.mark.slow
async def test_right_wrong_and_skipped_answers(tmp_path):
    rec = tmp_path / "results.json"
    app = app_for(record=str(rec))
    async with app.run_test(size=(120, 40)) as pilot:
        s = app.session
        await pilot.press("n")                            # a question before op 1: the box, not the op
        assert isinstance(app.screen, AskScreen) and s.position == (1, 0)
        shown = str(app.screen.query_one("#ask-shown").render())
        assert "0.05 × 0.15 + 0.1 × 0.2 + 0.35" in shown and "= ?" in shown and "0.3775" not in shown
        await typed(pilot, "0.05*0.15 + 0.1*0.2 + 0.35")
        await pilot.press("enter")
        await pilot.pause()
        assert not isinstance(app.screen, AskScreen) and s.position == (1, 1)    # the op ran
        assert "score 1/1" in header(app) and "✓ right" in status(app)
        assert app.query_one(LessonPanel).border_title == "question · score 1/1"
        assert json.loads(rec.read_text())["score"] == [1, 1]

        await pilot.press("S")                            # S stops before the next question
        assert s.position == (1, 6) and isinstance(app.screen, AskScreen)
        await typed(pilot, "0.04")
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, VerdictScreen)      # a miss: the hint and the explanation
        text = str(app.screen.query_one("Static").render())
        assert "✗ not quite" in text and "you said: 0.04" in text and "-0.0380982365" in text
        assert "hint: Multiply the upstream gradient" in text
        assert "∂E/∂linear2.out[0, 1]" in text and "(-0.217072) × 0.17551" in text     # at the screen's 6 digits
        await pilot.press("escape")
        assert not isinstance(app.screen, VerdictScreen) and s.position == (1, 7)
        assert "score 1/2" in header(app) and "✗ not quite" in status(app)

        await pilot.press("c")                            # continue stops before the third
        await app.workers.wait_for_complete()
        await pilot.pause()
        last = [op.name for op in s.ops].index("update linear2.weight")
        assert s.position == (1, last) and isinstance(app.screen, AskScreen)
        assert "work it out" in str(app.screen.query_one("#ask-shown").render())     # show = "nothing"
        await pilot.press("escape")                       # Esc skips: asked, not right, the op runs
        await pilot.pause()
        assert isinstance(app.screen, VerdictScreen)
        await pilot.press("enter")
        assert s.position == (1, last + 1)
        assert "score 1/3" in header(app)
        doc = json.loads(rec.read_text())
        assert doc["score"] == [1, 3] and [a["skipped"] for a in doc["answers"]] == [False, False, True]

        await pilot.press("p")                            # back over the last question: not asked again
        await pilot.press("n")
        assert not isinstance(app.screen, AskScreen) and s.position == (1, last + 1)
        await pilot.press("g")
        await typed(pilot, "1 1")
        await pilot.press("enter")
        await pilot.press("S")                            # nothing left to ask: S runs to the end
        assert s.position == (2, 0) and not isinstance(app.screen, AskScreen)

        await pilot.press("r")                            # r: the lesson and its score afresh
        await pilot.pause()
        assert "score" not in header(app) and app.lesson.score == (0, 0)
        await pilot.press("n")
        assert isinstance(app.screen, AskScreen)


async def test_a_typo_keeps_the_box_open():
    app = app_for()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("n")
        await typed(pilot, "0.3775.1")
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, AskScreen) and app.session.position == (1, 0)
        assert "not a number" in str(app.screen.query_one("#ask-error").render())


async def test_s_and_g_stop_before_a_question_they_would_pass():
    app = app_for(ASKS.replace('op = "forward linear1"\ntensor = "linear1.out[0, 0]"',
                               'op = "forward sigmoid2"\ntensor = "sigmoid2.out[0, 0]"'))
    async with app.run_test(size=(120, 40)) as pilot:
        s = app.session
        await pilot.press("s")                            # the forward stage has a question at op 4
        await pilot.pause()
        assert s.position == (1, 3) and isinstance(app.screen, AskScreen)
        assert "stopped before op 4" in status(app)
        await pilot.press("escape")
        await pilot.press("escape")
        await pilot.press("g")
        await typed(pilot, "1 12")                        # a go-to over the backward question
        await pilot.press("enter")
        await pilot.pause()
        assert s.position == (1, 6) and isinstance(app.screen, AskScreen)


@pytest.mark.slow
async def test_predict_makes_any_scenario_practice():
    app = make_app(os.path.join(HERE, "scenarios", "xor-tanh.toml"), predict=True)
    async with app.run_test(size=(120, 40)) as pilot:
        assert app.check_action("answers", ()) is True
        for _ in range(3):
            await pilot.press("n")
            assert isinstance(app.screen, AskScreen)
            a = app.lesson.pending()
            await pilot.press("escape")
            await pilot.pause()
            if isinstance(app.screen, VerdictScreen):
                await pilot.press("escape")
            assert app.lesson.answers[-1].ask == a
        assert app.lesson.score == (0, 3)


async def test_the_box_fits_at_80x24():
    app = app_for()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("n")
        box = app.screen.query_one("AskScreen > Vertical")
        assert box.region.width <= 80 and box.region.height <= 24
        assert box.region.bottom <= 24
        inp = app.screen.query_one("#ask-input")
        assert inp.region.bottom <= 24 and inp.region.height > 0


NOTE_ZH = "前向传播：观察每一层的输出和梯度如何一步一步地从损失函数传回到每一个参数，这就是反向传播算法的核心思想。最后一句在这里。"


@pytest.mark.parametrize("size", [(120, 40), (80, 24)])
async def test_notes_wrap_in_any_script(size):
    """A Chinese note has no spaces: it wraps at the panel's edge, and none of it is lost."""
    app = app_for(f'\n[[note]]\nop = "forward linear1"\ntext = "{NOTE_ZH}"\n')
    async with app.run_test(size=size) as pilot:
        await pilot.pause(0.3)
        panel = app.query_one(LessonPanel)
        assert panel.border_title == "lesson" and panel.display
        from textual.geometry import Region
        rows = []
        for para in panel.query("MarkdownParagraph"):
            strips = para.render_lines(Region(0, 0, para.size.width, para.size.height))
            assert all(st.cell_length <= para.size.width <= panel.region.width for st in strips)
            rows += [st.text for st in strips]
        assert len(rows) > 1                              # wrapped, at a panel narrower than the note
        assert "".join("".join(rows).split()) == NOTE_ZH  # every character, none cut off
