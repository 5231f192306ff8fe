"""A lesson that asks before it shows (docs/teaching.md): the questions and notes of a scenario over
a Session, the learner's answers, the score and the results document.

A question (an ``[[ask]]``, or one made up by ``--predict``) stands before an op of a step: the
learner predicts one element that op writes. :meth:`Lesson.answer` takes what they typed, runs the
op (so the session moves exactly as ``step()`` moves it), and grades the typed value against the
engine's: right when ``|answer − value| ≤ atol + rtol·|value|``. :meth:`Lesson.skip` runs the op too
and counts the question as asked and not right. Every question is asked once: going back over it
does not ask again, and :meth:`restart` starts the score afresh.

This module knows no screen: the TUI opens its answer box where :meth:`pending` says, stops its
moves where :meth:`stop_before` says, and shows what :meth:`question` and :meth:`explanation` give;
a course's CI plays the same questions through this API, and ``nnstep check --answers`` grades a
results document with :func:`grade`.
"""
from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import ScenarioError
from ..model.scenario import Ask, Note
from .answer import AnswerError, is_right, parse_answer

PREDICT_SALT = 0x6E6E_7374        # "nnst": --predict's element choice, from the scenario's seed


@dataclass
class Answer:
    """One question as the learner met it."""
    ask: Ask
    answer: str | None               # as typed (None: skipped)
    value: float | None              # what the typed answer comes to
    engine_value: float
    correct: bool
    seconds: float

    @property
    def skipped(self) -> bool:
        return self.answer is None

    def as_json(self) -> dict:
        return {"step": self.ask.step, "op": self.ask.op, "tensor": self.ask.tensor,
                "index": list(self.ask.index), "answer": self.answer or "", "value": self.value,
                "engine_value": self.engine_value, "correct": self.correct, "skipped": self.skipped,
                "seconds": round(self.seconds, 3)}


@dataclass
class Question:
    """What the answer box shows before the op runs."""
    ask: Ask
    title: str                       # "predict sigmoid2.grad_in[0, 1]"
    lines: list[str] = field(default_factory=list)    # as ``show`` says: numbers, formula or nothing


def _shapes_after(session, step: int, indices) -> dict[int, dict]:
    """The environment just after each op index of ``step`` (computed without moving the cursor)."""
    return {i: session.env_at(step, i + 1) for i in sorted(set(indices))}


def _check_index(ask: Ask, value, sc_file: str) -> None:
    shape = np.shape(value)
    where = f"{ask.where}.tensor"
    if len(ask.index) != len(shape):
        raise ScenarioError(f"{ask.tensor} has shape {list(shape)}: give {len(shape)} "
                            f"{'index' if len(shape) == 1 else 'indices'}, got {len(ask.index)} "
                            f"(e.g. \"{ask.tensor}[{', '.join('0' for _ in shape)}]\")"
                            if shape else f"{ask.tensor} is a single number: write it without an index",
                            file=sc_file, where=where)
    for d, (i, n) in enumerate(zip(ask.index, shape)):
        if not 0 <= i < n:
            raise ScenarioError(f"index {i} is out of range for dimension {d} of {ask.tensor}, of size {n} "
                                f"(shape {list(shape)}; indices count from 0)", file=sc_file, where=where)


class Lesson:
    """The questions and notes of ``session``'s scenario, and the learner's answers so far.

    ``predict``: also ask on every op of step 1 that has no ``[[ask]]`` (one element of its first
    output, chosen from the seed). ``record``: a path rewritten atomically after every answer with
    :meth:`document`. Raises ScenarioError, located at the ``[[ask]]``, for an index outside its
    tensor."""

    def __init__(self, session, predict: bool = False, record: str | None = None):
        self.session = session
        sc = session.scenario
        self.record = record
        self.index_of = {op.name: op.index for op in session.ops}
        asks = list(sc.asks)
        steps = sorted({a.step for a in asks} | ({1} if predict else set()))
        for k in steps:
            mine = [a for a in asks if a.step == k]
            envs = _shapes_after(session, k, [self.index_of[a.op] for a in mine]
                                 + (list(range(session.M)) if predict and k == 1 else []))
            for a in mine:
                _check_index(a, envs[self.index_of[a.op]].get(a.tensor), sc.path)
            if predict and k == 1:
                asks += self._predicted(envs, {self.index_of[a.op] for a in mine})
        self.asks = sorted(asks, key=lambda a: (a.step, self.index_of[a.op]))
        self._at = {(a.step, self.index_of[a.op]): a for a in self.asks}
        self.notes: list[Note] = list(sc.notes)
        self.answers: list[Answer] = []
        self._asked: set[tuple[int, int]] = set()
        self._opened: float | None = None

    def _predicted(self, envs: dict, taken: set) -> list[Ask]:
        """--predict: one element of the first output of every op of step 1 without a question."""
        out = []
        seed = self.session.scenario.seed
        for op in self.session.ops:
            if op.index in taken or not op.outputs:
                continue
            name = op.outputs[0]
            shape = np.shape(envs[op.index].get(name))
            rng = np.random.default_rng([seed % 2**63, PREDICT_SALT, op.index])
            flat = int(rng.integers(0, max(1, int(np.prod(shape)))))
            index = tuple(int(v) for v in np.unravel_index(flat, shape)) if shape else ()
            out.append(Ask(where=f"--predict (op {op.index + 1})", step=1, op=op.name, tensor=name, index=index,
                           show="numbers"))
        return out

    # --- where the questions are -------------------------------------------------------------------
    def _lin(self, pos) -> int:
        return (pos[0] - 1) * self.session.M + pos[1]

    def pending(self) -> Ask | None:
        """The question before the next op, if it has not been asked yet."""
        if self.session.at_end:
            return None
        pos = self.session.position
        a = self._at.get(pos)
        return a if a is not None and pos not in self._asked else None

    def stop_before(self, target: tuple[int, int], here: tuple[int, int] | None = None) -> tuple[int, int] | None:
        """The first position strictly after ``here`` (the cursor) and before ``target`` whose
        question has not been asked: a move forward to ``target`` stops there first (None: nothing
        in between)."""
        here, there = self._lin(here or self.session.position), self._lin(target)
        inside = [p for p in self._at if p not in self._asked and here < self._lin(p) < there]
        return min(inside, key=self._lin, default=None)

    @property
    def score(self) -> tuple[int, int]:
        """(right, asked)."""
        return sum(a.correct for a in self.answers), len(self.answers)

    # --- asking ------------------------------------------------------------------------------------
    def question(self, ask: Ask | None = None, digits: int = 9) -> Question:
        """What to show before the op runs, as the question's ``show`` says: the element's
        explanation with its result left blank ("numbers", a worked example whose last step is the
        learner's), its formula in symbols ("formula"), or nothing but the question."""
        ask = ask or self.pending()
        if ask is None:
            raise ValueError("no question here")
        if self._opened is None:
            self._opened = time.monotonic()
        q = Question(ask, f"predict {ask.element}")
        if ask.show == "nothing":
            return q
        from .explain import explain
        ex = explain(self.session, ask.tensor, ask.index, step=ask.step, digits=digits)
        q.lines = faded(ex.lines, symbols_only=ask.show == "formula", tensor=ask.tensor)
        head = next((ln for ln in q.lines if ln.startswith("∂E/∂")), "")
        symbol = head.split("   (")[0].split(" (via")[0].strip()
        base = symbol[len("∂E/∂"):].split("[")[0]
        if symbol and ask.tensor not in (base, base + ".grad"):   # (grad_in: ∂E/∂ the input, by its name)
            q.title += f"  (= {symbol})"
        return q

    def answer(self, text: str, seconds: float | None = None) -> Answer:
        """Grade ``text`` (a number or arithmetic) for the pending question: the op runs, then the
        typed value is compared with the engine's. AnswerError (nothing runs) if it is no number."""
        ask = self._need()
        value = parse_answer(text)
        return self._settle(ask, text.strip(), value, seconds)

    def skip(self, seconds: float | None = None) -> Answer:
        """Esc: the op runs; the question counts as asked and not right."""
        return self._settle(self._need(), None, None, seconds)

    def _need(self) -> Ask:
        ask = self.pending()
        if ask is None:
            raise ValueError("no question before the next operation")
        return ask

    def _settle(self, ask: Ask, text: str | None, value: float | None, seconds: float | None) -> Answer:
        if seconds is None:
            seconds = time.monotonic() - self._opened if self._opened is not None else 0.0
        self._opened = None
        pos = self.session.position
        self.session.step()
        engine = float(np.asarray(self.session.value(ask.tensor))[ask.index])
        right = value is not None and math.isfinite(engine) and is_right(value, engine, ask.rtol, ask.atol)
        a = Answer(ask, text, value, engine, right, max(0.0, seconds))
        self._asked.add(pos)
        self.answers.append(a)
        self.save()
        return a

    def explanation(self, ask: Ask, digits: int = 9) -> str:
        """The element's whole explanation (after its op ran), as `e` shows it."""
        from .explain import explain
        return explain(self.session, ask.tensor, ask.index, step=ask.step, digits=digits).text

    def restart(self) -> None:
        """A fresh start of the lesson: every question will be asked again, the score is 0/0."""
        self.answers.clear()
        self._asked.clear()
        self._opened = None

    # --- notes ---------------------------------------------------------------------------------------
    def notes_at(self, position: tuple[int, int] | None = None) -> list[Note]:
        """The notes for where the screen is, in this order: a step's own (neither op nor stage) at
        its start; an op's while that op is next or has just run; else the stage's that the next op
        begins (s lands there), or the stage's of the op on screen."""
        s = self.session
        k, i = position or s.position
        M = s.M
        shown_k, shown_i = (k, i - 1) if i > 0 else ((k - 1, M - 1) if k > 1 else (1, None))
        nxt = None if k > s.N else s.ops[i]
        shown = s.ops[shown_i] if shown_i is not None else None
        out = [n for n in self.notes if n.op is None and n.stage is None and n.step in (None, k)] \
            if i == 0 and k <= s.N else []
        ops = [n for n in self.notes if n.op is not None and (
            (nxt is not None and n.op == nxt.name and n.step in (None, k))
            or (shown is not None and n.op == shown.name and n.step in (None, shown_k)))]
        if ops:
            return out + ops
        def of_stage(stage, step):
            return [n for n in self.notes if n.stage == stage and n.step in (None, step)]
        coming = of_stage(nxt.stage, k) if nxt is not None and s.program.stage_start.get(nxt.stage) == i else []
        return out + (coming or (of_stage(shown.stage, shown_k) if shown is not None else []))

    # --- the results document ------------------------------------------------------------------------
    def document(self) -> dict:
        right, asked = self.score
        return {"scenario": self.session.scenario.name, "score": [right, asked],
                "answers": [a.as_json() for a in self.answers]}

    def document_text(self) -> str:
        return json.dumps(self.document(), indent=2, ensure_ascii=False) + "\n"

    def save(self) -> None:
        """Rewrite the --record file (atomically: a reader never sees half a document)."""
        if self.record:
            from ..fileio import atomic_write_text
            atomic_write_text(self.record, self.document_text())


_RESULT = re.compile(r"^(.*=\s*)(?:\(?-?\d[\d.]*(?:e[+-]?\d+)?\)?|NaN|[+-]?Inf)\s*$")  # "  = 0.3775", "= 260 / 256 = 1.01562"
_LEADING = re.compile(r"^(\s*)(?:-?\d[\d.]*(?:e[+-]?\d+)?|NaN|[+-]Inf)(\s+(?:=|←)\s)")  # "    0.59 = σ(..."


def faded(lines: list[str], symbols_only: bool = False, tensor: str = "") -> list[str]:
    """An explanation (explain's lines) as a question: its first derivation, the element's own,
    with the result left blank (``= ?``), the lines below it (the upstream elements it used,
    already computed) and the final value left out. ``symbols_only``: the derivation's first line
    alone, the formula in symbols."""
    blocks, cur = [], []
    for ln in lines:
        if ln.strip():
            cur.append(ln)
        elif cur:
            blocks.append(cur)
            cur = []
    if cur:
        blocks.append(cur)
    if not blocks:
        return []
    pre, main = ([], blocks[0]) if not blocks[0][0].startswith("E = ") or len(blocks) < 2 else (blocks[0], blocks[1])
    if tensor and "is computed by" in main[0]:
        # an op of several clauses (backward sigmoid writes local and grad_in): the asked
        # tensor's clause only, since another's numbers may hold the answer
        clauses: list[list[str]] = []
        for ln in main[1:]:
            if (ln.startswith("  ") and not ln.startswith("   ") and not ln.lstrip().startswith("=")) or not clauses:
                clauses.append([ln])
            else:
                clauses[-1].append(ln)
        mine = [c for c in clauses if re.match(rf"\s*{re.escape(tensor)}[\s\[]", c[0])]
        if mine and len(mine) < len(clauses):
            main = [main[0]] + [ln for c in mine for ln in c]
    if symbols_only:
        return pre + main[:2]
    out = [_LEADING.sub(r"\1?\2", ln) for ln in main]
    if len(out) > 1 and not out[-1].lstrip().startswith("?") and _RESULT.match(out[-1]):
        out[-1] = _RESULT.match(out[-1]).group(1).rstrip() + " ?"
    return pre + out


# --- grading handed-in work ---------------------------------------------------------------------

@dataclass
class Graded:
    ask: Ask
    answer: str | None               # as the learner typed it (None: not answered or skipped)
    value: float | None
    engine_value: float
    correct: bool
    status: str                      # "right" | "wrong" | "skipped" | "not answered" | "unreadable"


MAX_RESULTS_BYTES = 16 * 2**20


def read_results(path: str) -> dict:
    """A results document (as --record writes it), read with the same care as any input: a regular
    file, at most 16 MB, JSON of the right shape. ScenarioError, located, otherwise."""
    import stat as st_
    from ..errors import clean
    shown = clean(path)
    try:
        st = os.stat(path)
        if not st_.S_ISREG(st.st_mode):
            raise ScenarioError("is not a regular file (a results document is a .json file)", file=shown)
        if st.st_size > MAX_RESULTS_BYTES:
            raise ScenarioError(f"file is too large ({st.st_size} bytes; a results document may have at most "
                                f"{MAX_RESULTS_BYTES})", file=shown)
        with open(path, "rb") as f:
            raw = f.read(MAX_RESULTS_BYTES + 1)
    except FileNotFoundError:
        raise ScenarioError("no such file", file=shown) from None
    except PermissionError:
        raise ScenarioError("permission denied", file=shown) from None
    except OSError as e:
        raise ScenarioError(f"cannot read: {getattr(e, 'strerror', None) or e}", file=shown) from None
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ScenarioError(f"not a results document (JSON): {clean(str(e))[:80]}", file=shown) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("answers"), list):
        raise ScenarioError('not a results document: expected {"scenario", "score", "answers": [...]}', file=shown)
    for j, a in enumerate(doc["answers"]):
        where = f"answers[{j}]"
        if not isinstance(a, dict):
            raise ScenarioError("expected an object", file=shown, where=where)
        for k, kind in (("step", int), ("op", str), ("tensor", str), ("index", list), ("answer", str)):
            if not isinstance(a.get(k), kind) or isinstance(a.get(k), bool):
                raise ScenarioError(f"missing or not a {kind.__name__}: {k}", file=shown, where=where)
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in a["index"]):
            raise ScenarioError("index: expected a list of whole numbers", file=shown, where=where)
    return doc


def grade(session, doc: dict, path: str = "results.json", predict: bool = False) -> list[Graded]:
    """Re-grade a results document against the scenario: every question of the lesson (and every
    other answer in the document about an op's element, e.g. from --predict), each from what was
    typed, never from the document's own ``correct`` fields. The engine's values are computed
    afresh. A question answered more than once (a restart) is graded by its last answer."""
    from ..errors import clean
    lesson = Lesson(session, predict=predict)
    given: dict[tuple, dict] = {}
    for j, a in enumerate(doc["answers"]):
        op = a["op"]
        if op not in lesson.index_of:
            raise ScenarioError(f'no operation "{clean(op)[:60]}" in this scenario', file=clean(path),
                                where=f"answers[{j}].op")
        given[(a["step"], op, a["tensor"], tuple(a["index"]))] = a
    asks = {(a.step, a.op, a.tensor, a.index): a for a in lesson.asks}
    for key, a in given.items():
        if key not in asks:
            step, op, tensor, index = key
            where = f"answers[{doc['answers'].index(a)}]"
            written = session.ops[lesson.index_of[op]].outputs + session.ops[lesson.index_of[op]].also_writes
            if tensor not in written or not 1 <= step <= session.N:
                raise ScenarioError(f'"{clean(op)[:60]}" writes no {clean(tensor)[:60]} in step {step}',
                                    file=clean(path), where=where)
            extra = Ask(where=where, step=step, op=op, tensor=tensor, index=index)
            _check_index(extra, session.env_at(step, lesson.index_of[op] + 1).get(tensor), clean(path))
            asks[key] = extra
    out = []
    for key, ask in sorted(asks.items(), key=lambda kv: (kv[0][0], lesson.index_of[kv[0][1]])):
        env = session.env_at(ask.step, lesson.index_of[ask.op] + 1)
        engine = float(np.asarray(env[ask.tensor])[ask.index])
        a = given.get(key)
        if a is None:
            out.append(Graded(ask, None, None, engine, False, "not answered"))
            continue
        text = a["answer"]
        if a.get("skipped") or not text.strip():
            out.append(Graded(ask, None, None, engine, False, "skipped"))
            continue
        try:
            value = parse_answer(text)
        except AnswerError:
            out.append(Graded(ask, text, None, engine, False, "unreadable"))
            continue
        right = math.isfinite(engine) and is_right(value, engine, ask.rtol, ask.atol)
        out.append(Graded(ask, text, value, engine, right, "right" if right else "wrong"))
    return out
