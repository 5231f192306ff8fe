"""A learner's typed answer: a number, or arithmetic over numbers (docs/teaching.md).

``0.05*0.25 + 0.1*0.3 + 0.35``, ``sigmoid(0.3775)``, ``0.7514 - 0.01``, ``2^-3``. The text is parsed
by Python's own parser into a tree, and only a whitelist of its nodes is computed here, in floats:
numbers, ``+ - * / **`` (``^`` too), parentheses, and the functions ``exp log sqrt tanh sigmoid
max min abs`` (and the constants ``pi``, ``e``). Nothing is ever evaluated as Python. The signs a
student may copy from nnstep's own formulas, ``× · ÷ −``, mean what they show.
"""
from __future__ import annotations

import ast
import math

MAX_LENGTH = 300            # characters of an answer
MAX_NODES = 200             # parts of its tree
MAX_DEPTH = 30              # nesting of its parentheses and operators


class AnswerError(ValueError):
    """Why a typed answer is not a number nnstep can read (a message for the learner)."""


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


FUNCTIONS = {
    "exp": (math.exp, 1), "log": (math.log, 1), "ln": (math.log, 1), "sqrt": (math.sqrt, 1),
    "tanh": (math.tanh, 1), "sigmoid": (_sigmoid, 1), "abs": (abs, 1),
    "max": (max, None), "min": (min, None),
}
CONSTANTS = {"pi": math.pi, "e": math.e}
SIGNS = {"×": "*", "·": "*", "÷": "/", "−": "-", "^": "**", "–": "-", "，": ",", "（": "(", "）": ")"}
_BIN = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
        ast.Div: lambda a, b: a / b, ast.Pow: lambda a, b: a ** b}


def normalise(text: str) -> str:
    return "".join(SIGNS.get(c, c) for c in text).strip()


def parse_answer(text: str) -> float:
    """The value of a typed answer; AnswerError says what is wrong with it."""
    if not isinstance(text, str) or not text.strip():
        raise AnswerError("type a number, or arithmetic such as 0.05*0.25 + 0.35")
    if len(text) > MAX_LENGTH:
        raise AnswerError(f"an answer is at most {MAX_LENGTH} characters")
    src = normalise(text)
    try:
        tree = ast.parse(src, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise AnswerError(f"not a number or arithmetic: {text.strip()[:60]!r}") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise AnswerError("too long an expression: simplify it a little")
    try:
        v = _value(tree.body, 0)
    except ZeroDivisionError:
        raise AnswerError("division by zero") from None
    except OverflowError:
        raise AnswerError("too large a number") from None
    except (ValueError, TypeError) as e:          # log(-1), sqrt(-1), 0 ** -1 ...
        raise AnswerError(f"not defined: {e}") from None
    if isinstance(v, complex) or not math.isfinite(v):
        raise AnswerError("the answer is not a finite real number")
    return float(v)


def _value(node, depth: int) -> float:
    if depth > MAX_DEPTH:
        raise AnswerError("nested too deeply")
    d = depth + 1
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _value(node.operand, d)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
        a, b = _value(node.left, d), _value(node.right, d)
        if isinstance(node.op, ast.Pow) and abs(b) > 1e4 and abs(a) != 1:
            raise OverflowError
        return _BIN[type(node.op)](a, b)
    if isinstance(node, ast.Name) and node.id in CONSTANTS:
        return CONSTANTS[node.id]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        fn = FUNCTIONS.get(node.func.id)
        if fn is None:
            raise AnswerError(f"unknown function {node.func.id!r} (use {', '.join(FUNCTIONS)})")
        f, arity = fn
        args = [_value(a, d) for a in node.args]
        if (arity is not None and len(args) != arity) or not args:
            raise AnswerError(f"{node.func.id} takes {arity or 'one or more'} number{'s' if arity != 1 else ''}")
        return f(*args)
    if isinstance(node, ast.Name):
        raise AnswerError(f"unknown name {node.id!r}: type numbers (and exp, log, sqrt, tanh, sigmoid, max, "
                          "min, abs)")
    raise AnswerError("only numbers, + - * / ** ( ) and exp log sqrt tanh sigmoid max min abs")


def is_right(value: float, engine: float, rtol: float, atol: float) -> bool:
    """Right when within ``atol + rtol·|engine|`` of the engine's value (as [[expect]] compares)."""
    return abs(value - engine) <= atol + rtol * abs(engine)
