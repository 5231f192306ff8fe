"""Lessons that ask before they show, through the Session API as a course's CI plays them: the
answer parser, the questions' places, right and wrong and skipped answers, the score, the results
document (--record) and grading handed-in work (check --answers).

The golden numbers are Matt Mazur's "A Step by Step Backpropagation Example" (the classic lesson):
net_h1 = 0.05·0.15 + 0.1·0.2 + 0.35 = 0.3775; ∂E/∂out_o2 = −0.217071535 and out_o2·(1 − out_o2) =
0.175510053, so ∂E/∂net_o2 = −0.0380982365."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import nnstep
from nnstep.debugger.answer import AnswerError, parse_answer
from nnstep.debugger.lesson import Lesson, faded, grade, read_results
from nnstep.errors import ScenarioError
from nnstep.scenario import loads_scenario

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLASSIC = open(os.path.join(ROOT, "scenarios", "classic.toml"), encoding="utf-8").read()
CLASSIC = CLASSIC.split("[[ask]]")[0].split("[[note]]")[0]      # the network alone, whatever it asks
ASKS = """
[[ask]]
op = "forward linear1"
tensor = "linear1.out[0, 0]"

[[ask]]
op = "backward sigmoid2"
tensor = "sigmoid2.grad_in[0, 1]"
show = "formula"
hint = "Multiply the upstream gradient by the local derivative out·(1 − out)."

[[ask]]
op = "update linear2.weight"
tensor = "linear2.weight[0, 0]"
show = "nothing"

[[note]]
stage = "backward"
text = "The **backward** pass starts at the loss."

[[note]]
op = "backward sigmoid2"
text = "σ' = out·(1 − out) meets the upstream gradient here."
"""


def lesson(extra: str = ASKS, **kw) -> Lesson:
    return Lesson(nnstep.Session(loads_scenario(CLASSIC + extra)), **kw)


# --- the answer parser ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, value", [
    ("0.3775", 0.3775), ("  -0.038 ", -0.038), ("1e-3", 1e-3), ("0.05*0.15 + 0.1*0.2 + 0.35", 0.3775),
    ("0.05 × 0.15 + 0.1 · 0.2 + 0.35", 0.3775), ("0.75136507 − 0.01", 0.74136507), ("2^-3", 0.125),
    ("2**3", 8.0), ("(1 + 2) / 4", 0.75), ("sigmoid(0)", 0.5), ("exp(0) + log(1) + sqrt(4)", 3.0),
    ("tanh(0)", 0.0), ("max(1, 2, 3) - min(4, 5)", -1.0), ("abs(-2)", 2.0), ("sigmoid(-800)", 0.0),
    ("-(-1)", 1.0), ("3 ÷ 4", 0.75), ("pi", math.pi)])
def test_answers_that_are_numbers(text, value):
    assert parse_answer(text) == pytest.approx(value, rel=1e-15, abs=1e-300)


@pytest.mark.parametrize("text", [
    "", "   ", "x", "__import__('os').system('touch /tmp/nnstep-pwned')", "open('f')", "(1).real",
    "[1, 2]", "'1'", "1 if 1 else 2", "lambda: 1", "eval('1')", "exp(1, 2)", "max()", "1/0", "log(-1)",
    "sqrt(-1)", "10**10**10", "9" * 400, "1 +", "2 ** 5000", "-" * 100 + "1",
    "True + 1", "exp(1000)", "(-8) ** (1/3)", "1e400", "sigmoid(x=1)", "1; 2", "a.b"])
def test_answers_that_are_refused(text):
    with pytest.raises(AnswerError):
        parse_answer(text)
    assert not os.path.exists("/tmp/nnstep-pwned")


# --- where the questions are -----------------------------------------------------------------------

def test_questions_stand_before_their_ops_and_are_asked_once():
    L = lesson()
    s = L.session
    assert [(a.op, a.element) for a in L.asks] == [
        ("forward linear1", "linear1.out[0, 0]"), ("backward sigmoid2", "sigmoid2.grad_in[0, 1]"),
        ("update linear2.weight", "linear2.weight[0, 0]")]
    assert L.pending().op == "forward linear1" and s.position == (1, 0)
    # a move to the end of the step stops before the first question it would pass (the one here
    # is the key's own business: n, s, S, c and g ask it before they move)
    assert L.stop_before((2, 0)) == (1, 6)
    a = L.answer("0.05*0.15 + 0.1*0.2 + 0.35")
    assert s.position == (1, 1) and a.correct and a.engine_value == pytest.approx(0.3775, abs=1e-15)
    assert L.pending() is None
    assert L.stop_before((2, 0)) == (1, 6)                # before "backward sigmoid2"
    assert L.stop_before((1, 6)) is None                 # a move that ends there stops there anyway
    s.goto(1, 6)
    assert L.pending().op == "backward sigmoid2"
    a = L.answer("0.04")                                  # wrong: the sign and the size
    assert not a.correct and a.value == 0.04
    assert a.engine_value == pytest.approx(-0.0380982365, abs=1e-10)   # Mazur's ∂E/∂net_o2
    assert L.score == (1, 2)
    s.goto(1, 0)                                          # going back never asks again
    assert L.pending() is None and L.stop_before((2, 0)) == (1, 11)
    s.goto(1, 11)
    a = L.skip()
    assert a.skipped and not a.correct and L.score == (1, 3)
    assert L.pending() is None and L.stop_before((2, 0)) is None
    L.restart()                                           # r: the lesson and its score afresh
    assert L.score == (0, 0)
    s.goto(1, 0)
    assert L.pending() is not None


def test_a_typo_runs_nothing():
    L = lesson()
    with pytest.raises(AnswerError):
        L.answer("0.3775.1")
    assert L.session.position == (1, 0) and L.score == (0, 0) and L.pending() is not None


def test_what_each_show_shows():
    L = lesson(ASKS.replace('show = "formula"', 'show = "numbers"'))
    q = L.question()                                      # numbers: the worked example, its result blank
    assert q.title == "predict linear1.out[0, 0]"
    assert "  = 0.05 × 0.15 + 0.1 × 0.2 + 0.35" in q.lines and q.lines[-1] == "  = ?"
    assert not any("0.3775" in ln for ln in q.lines)
    L.answer("0.3775")
    L.session.goto(1, 6)
    q = L.question(digits=9)                              # a gradient: its chain's first line, blank
    text = "\n".join(q.lines)
    assert "(-0.217071535) × 0.175510053" in text and q.lines[-1] == "  = ?"
    assert "0.0380982" not in text
    L2 = lesson()
    L2.answer("0.3775")
    L2.session.goto(1, 6)
    q = L2.question()                                     # formula: symbols only
    assert not any(c.isdigit() for ln in q.lines[1:] for c in ln.replace("sigmoid2", "").replace("linear2", "")
                   .replace("[0, 1]", ""))
    L2.answer("-0.038")
    L2.session.goto(1, 11)
    assert L2.question().lines == []                      # nothing


def test_faded_keeps_only_the_asked_tensors_clause():
    """backward sigmoid1 writes local and grad_in: asked for the local derivative, the box must not
    show grad_in's clause, whose numbers hold the answer (0.241301)."""
    L = lesson('\n[[ask]]\nop = "backward sigmoid1"\ntensor = "sigmoid1.local[0, 0]"\n')
    L.session.goto(1, 8)
    text = "\n".join(L.question(digits=6).lines)
    assert "= 0.59327 × (1 − 0.59327)" in text and text.endswith("= ?")
    assert "0.241301" not in text and "grad_in" not in text


def test_predict_asks_before_every_op_of_step_1_from_the_seed():
    L = lesson("", predict=True)
    s = L.session
    assert [a.op for a in L.asks] == [op.name for op in s.ops]
    for a in L.asks:
        assert a.tensor == s.ops[[o.name for o in s.ops].index(a.op)].outputs[0] and a.show == "numbers"
    again = lesson("", predict=True)
    assert [a.index for a in again.asks] == [a.index for a in L.asks]            # from the seed
    other = Lesson(nnstep.Session(loads_scenario(CLASSIC.replace("seed = 0", "seed = 5") if "seed = 0" in CLASSIC
                                                 else CLASSIC.replace("[scenario]", "[scenario]\nseed = 5"))),
                   predict=True)
    assert [a.index for a in other.asks] != [a.index for a in L.asks]
    mixed = lesson(predict=True)                         # the lesson's own questions stay as written
    assert [a.show for a in mixed.asks if a.where.startswith("ask[")] == ["numbers", "formula", "nothing"]
    assert len(mixed.asks) == s.M
    while not s.at_end:                                   # every question answers with the engine's value
        a = L.pending()
        env = s.env_at(1, s.position[1] + 1)
        got = L.answer(repr(float(np.asarray(env[a.tensor])[a.index])))
        assert got.correct
    assert L.score == (s.M, s.M)


def test_notes_where_the_cursor_is():
    L = lesson()
    s = L.session
    assert L.notes_at() == []                            # the start of step 1: no note at the start
    s.goto(1, 5)                                          # backward loss next begins the stage: its note
    assert [n.stage for n in L.notes_at()] == ["backward"]
    s.goto(1, 4)                                          # the loss next: none
    assert L.notes_at() == []
    s.goto(1, 6)                                          # backward sigmoid2 next: its own note first
    assert [n.op for n in L.notes_at()] == ["backward sigmoid2"]
    s.goto(1, 7)                                          # ... and just after it ran
    assert [n.op for n in L.notes_at()] == ["backward sigmoid2"]
    s.goto(1, 8)                                          # elsewhere in the backward stage: the stage's
    assert [n.text for n in L.notes_at()] == ["The **backward** pass starts at the loss."]
    s.goto(1, 10)                                         # backward linear1 ran: still the stage's
    assert [n.stage for n in L.notes_at()] == ["backward"]
    s.goto(2, 0)                                          # the end: the last op was an update
    assert L.notes_at() == []


def test_the_record_is_the_documented_document(tmp_path):
    path = tmp_path / "results.json"
    L = lesson(record=str(path))
    L.answer("0.3775")
    doc = json.loads(path.read_text())
    assert doc["score"] == [1, 1] and doc["scenario"] == L.session.scenario.name
    (a,) = doc["answers"]
    assert set(a) == {"step", "op", "tensor", "index", "answer", "value", "engine_value", "correct", "skipped",
                      "seconds"}
    assert (a["step"], a["op"], a["tensor"], a["index"]) == (1, "forward linear1", "linear1.out", [0, 0])
    assert a["answer"] == "0.3775" and a["value"] == 0.3775 and a["correct"] is True and a["skipped"] is False
    L.session.goto(1, 6)
    L.skip()
    doc = json.loads(path.read_text())
    assert doc["score"] == [1, 2] and doc["answers"][1]["skipped"] is True and doc["answers"][1]["value"] is None
    assert not [p for p in os.listdir(tmp_path) if p != "results.json"]      # no temporary file left


def test_grading_handed_in_work(tmp_path):
    """check --answers re-grades from what was typed: a document that claims "correct": true for a
    wrong number is graded wrong, and a right expression marked false is graded right."""
    L = lesson()
    L.answer("0.3775")
    L.session.goto(1, 6)
    L.answer("0.04")
    doc = L.document()
    doc["answers"][0]["correct"], doc["answers"][1]["correct"] = False, True
    rows = grade(nnstep.Session(L.session.scenario), doc)
    assert [r.status for r in rows] == ["right", "wrong", "not answered"]
    doc["answers"][1]["answer"] = "-0.217071535 * 0.175510053"
    rows = grade(nnstep.Session(L.session.scenario), doc)
    assert [r.status for r in rows] == ["right", "right", "not answered"]
    doc["answers"].append({"step": 1, "op": "update linear2.weight", "tensor": "linear2.weight", "index": [0, 0],
                           "answer": "0.35891648", "skipped": False})      # Mazur's w5+ = 0.35891648
    assert all(r.correct for r in grade(nnstep.Session(L.session.scenario), doc))
    doc["answers"].append({"step": 1, "op": "forward linear1", "tensor": "linear1.out", "index": [0, 5],
                           "answer": "1"})
    with pytest.raises(ScenarioError, match=r"answers\[3\]\.tensor: index 5 is out of range"):
        grade(nnstep.Session(L.session.scenario), doc)


def test_check_answers_exit_codes(tmp_path):
    sc = tmp_path / "lesson.toml"
    sc.write_text(CLASSIC + ASKS)
    res = tmp_path / "results.json"
    L = Lesson(nnstep.Session(nnstep.load_scenario(str(sc))), record=str(res))
    L.answer("0.05*0.15 + 0.1*0.2 + 0.35")
    L.session.goto(1, 6)
    L.answer("-0.217071535 * 0.175510053")

    def check():
        return subprocess.run([sys.executable, "-m", "nnstep", "check", str(sc), "--answers", str(res)],
                              capture_output=True, text=True, timeout=120)
    r = check()
    assert r.returncode == 1, r.stderr                    # the third question was never answered
    assert "2 of 3 right" in r.stdout and "not answered" in r.stdout
    L.session.goto(1, 11)
    L.answer("0.4 - 0.5 * 0.082167041")                  # Mazur: w5+ = 0.4 − 0.5·0.082167041
    r = check()
    assert r.returncode == 0 and "3 of 3 right" in r.stdout, r.stdout
    assert "lesson: 3 questions and 2 notes, all in place" in r.stdout
    res.write_text("{")
    r = check()
    assert r.returncode == 2 and r.stderr.startswith(f"nnstep: error: {res}: not a results document")


def test_read_results_refuses_what_is_not_a_file(tmp_path):
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.raises(ScenarioError, match="not a regular file"):
        read_results(str(fifo))
    with pytest.raises(ScenarioError, match="no such file"):
        read_results(str(tmp_path / "none.json"))


def test_faded_lines():
    lines = ['x[0] is computed by "f" (op 1, step 1):', "  x[0] = a[0] · b[0]   (Σ)", "  = 2 × 3", "  = 6", "",
             "x[0] = 6"]
    assert faded(lines) == lines[:3] + ["  = ?"]
    assert faded(lines, symbols_only=True) == lines[:2]


def test_predict_works_on_every_shipped_scenario():
    """--predict makes any scenario practice: on every shipped one, every op of step 1 gets a
    question whose box shows the element's worked example with the result blank, and the engine's
    own value answers it right."""
    import glob
    paths = sorted(glob.glob(os.path.join(ROOT, "scenarios", "*.toml")) + glob.glob(os.path.join(ROOT, "scenarios", "*", "*.toml")))
    assert len(paths) > 30
    for path in paths:
        sc = nnstep.load_scenario(path)
        sc.asks = []                                  # (the lesson's own questions are tested elsewhere)
        s = nnstep.Session(sc)
        L = Lesson(s, predict=True)
        assert len(L.asks) == s.M, path
        while s.position[0] == 1:
            a = L.pending()
            q = L.question(digits=6)
            assert q.lines and q.lines[-1].strip().endswith("?") or any("?" in ln for ln in q.lines), (path, a, q.lines)
            env = s.env_at(1, s.position[1] + 1)
            got = L.answer(repr(float(np.asarray(env[a.tensor])[a.index])))
            assert got.correct, (path, a)
        assert L.score == (s.M, s.M), path
