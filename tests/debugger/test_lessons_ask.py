"""Every shipped lesson that asks, played through the Session API as a course's CI plays it: each
question answered with the engine's own value is right, answered wrongly it is wrong, the score
counts both, a "numbers" question never shows its own result, and the explanation after the op
ends with the engine's value. Plus what the lessons promise about themselves: the classic lesson
fades from the worked example to nothing, the Chinese lesson is in Chinese, and no question's
answer stands in the lesson panel while its box is open."""
from __future__ import annotations

import glob
import os
import re

import numpy as np
import pytest

import nnstep
from nnstep.debugger.answer import is_right
from nnstep.debugger.lesson import Lesson

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHIPPED = sorted(glob.glob(os.path.join(ROOT, "scenarios", "*.toml")) +
                 glob.glob(os.path.join(ROOT, "scenarios", "*", "*.toml")))
LESSONS = [p for p in SHIPPED if nnstep.load_scenario(p).asks]
NAMES = [os.path.relpath(p, os.path.join(ROOT, "scenarios")) for p in LESSONS]
CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")


def test_the_lessons_that_ask():
    assert {"classic.toml", "vanishing-gradients.toml", "residual-block.toml", "attention-layer.toml",
            "lstm-gates.toml", "concat-branches.toml", "rmsprop-vs-adam.toml", "losses-zh.toml"} <= set(NAMES)


def engine_value(session, lesson: Lesson, ask) -> float:
    """The element the question asks for, as the engine computes it (without moving the cursor)."""
    env = session.env_at(ask.step, lesson.index_of[ask.op] + 1)
    return float(np.asarray(env[ask.tensor])[ask.index])


def wrong(value: float, ask) -> float:
    """value·2 + 1, unless that is the value itself (−1: concat-branches asks cat.out[0, 3] = −1)."""
    w = value * 2 + 1
    return w if not is_right(w, value, ask.rtol, ask.atol) else value * 2 + 2


def result_line(line: str, r: str) -> bool:
    """``line`` states ``r`` as a result: "  = r", or "r = ..." / "r ← ..." (a clause's left side)."""
    return (re.fullmatch(rf"\s*=\s*{re.escape(r)}\s*", line) is not None
            or re.match(rf"\s*{re.escape(r)}\s+(=|←)\s", line) is not None)


@pytest.mark.parametrize("path", LESSONS, ids=NAMES)
def test_a_lesson_played_right_then_wrong(path):
    s = nnstep.Session(nnstep.load_scenario(path))
    L = Lesson(s)
    n = len(L.asks)
    for right_pass in (True, False):
        if not right_pass:
            L.restart()
            s.goto(1, 0)
        for k, ask in enumerate(L.asks):
            s.goto(ask.step, L.index_of[ask.op])
            assert L.pending() is ask, (ask.where, s.position)
            v = engine_value(s, L, ask)
            assert np.isfinite(v), ask.where
            q = L.question()
            assert q.title.startswith(f"predict {ask.element}")      # (and the gradient it is, by name)
            if ask.show == "numbers":
                for digits in (6, 9):                    # the box as the TUI draws it, and at 6 digits
                    lines = L.question(digits=digits).lines
                    assert any("?" in ln for ln in lines), (ask.where, lines)    # "= ?" or "? = ..."
                    r = f"{v:.6g}"
                    assert not any(result_line(ln, r) for ln in lines), (ask.where, r, lines)
            elif ask.show == "formula":
                assert q.lines and not any("?" in ln for ln in q.lines), (ask.where, q.lines)
            else:
                assert q.lines == [], ask.where
            typed = repr(v) if right_pass else repr(wrong(v, ask))
            a = L.answer(typed)
            assert a.engine_value == v, ask.where           # what was asked is what the op wrote
            assert a.correct is right_pass, (ask.where, typed, v)
            assert L.score == ((k + 1 if right_pass else 0), k + 1)
            text = L.explanation(ask).rstrip()
            assert text, ask.where
            assert text.endswith(f"{a.engine_value:.9g}"), (ask.where, text.splitlines()[-1])
        assert L.score == ((n, n) if right_pass else (0, n))


def numbers_in(text: str) -> list[float]:
    return [float(t.replace("−", "-")) for t in re.findall(r"[−-]?\d+(?:\.\d+)?(?:e[+-]?\d+)?", text)]


@pytest.mark.parametrize("path", LESSONS, ids=NAMES)
def test_the_panel_never_holds_the_answer_while_the_box_is_open(path):
    """What the lesson panel shows before a question's op runs (its notes there, else the scenario's
    description), and the description anywhere, state no number that would grade right, unless the
    answer is a plain number (0, 1, −0.25, 4.5...) that a note may well contain for another reason."""
    s = nnstep.Session(nnstep.load_scenario(path))
    L = Lesson(s)
    for ask in L.asks:
        pos = (ask.step, L.index_of[ask.op])
        v = engine_value(s, L, ask)
        if len(f"{abs(v):.4g}".replace(".", "").replace("-", "").strip("0")) < 3:
            continue
        notes = L.notes_at(pos)
        shown = "\n".join(n.text for n in notes) if notes else s.scenario.description
        # the description shows wherever no note does, before the question too: it may hold no answer
        for text in (shown, s.scenario.description):
            leaks = [x for x in numbers_in(text) if is_right(x, v, ask.rtol, ask.atol)]
            assert not leaks, (ask.where, v, leaks, text)


def test_the_classic_lesson_fades():
    L = Lesson(nnstep.Session(nnstep.load_scenario(os.path.join(ROOT, "scenarios", "classic.toml"))))
    assert [a.show for a in L.asks] == ["numbers", "numbers", "formula", "nothing"]


def test_the_chinese_lesson_is_in_chinese():
    sc = nnstep.load_scenario(os.path.join(ROOT, "scenarios", "losses-zh.toml"))
    assert CJK.search(sc.name) and CJK.search(sc.description)
    assert sc.notes and all(CJK.search(n.text) for n in sc.notes)
    assert sc.asks and all(CJK.search(a.hint) for a in sc.asks)
    # one paragraph per source line: a soft break inside Chinese text would show as a space
    for n in sc.notes:
        for para in n.text.split("\n\n"):
            assert "\n" not in para.strip(), para
