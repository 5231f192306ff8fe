"""Number formatting and the substitution of values into formulas (no Textual here)."""
from __future__ import annotations

import re

import numpy as np


def num(v, digits: int = 6) -> str:
    v = float(v)
    if v != v:
        return "NaN"
    if v == float("inf"):
        return "+Inf"
    if v == float("-inf"):
        return "-Inf"
    s = f"{v:.{digits}g}"
    return "0" if s == "-0" else s


def shape_str(a) -> str:
    a = np.asarray(a)
    return "×".join(str(d) for d in a.shape) if a.ndim else "scalar"


def as_2d(a) -> np.ndarray:
    """How a tensor is laid out on screen: scalars 1×1, vectors one row, N-d as rows × last dim."""
    a = np.asarray(a)
    if a.ndim == 0:
        return a.reshape(1, 1)
    if a.ndim == 1:
        return a.reshape(1, -1)
    return a.reshape(-1, a.shape[-1])


def nonfinite_counts(a) -> tuple[int, int, int]:
    a = np.asarray(a)
    with np.errstate(over="ignore", invalid="ignore"):     # huge finite values: the slow path
        total = np.add.reduce(a, axis=None) if a.size else 0.0
    if a.size == 0 or np.isfinite(total):
        return 0, 0, 0
    return int(np.isnan(a).sum()), int(np.isposinf(a).sum()), int(np.isneginf(a).sum())


def stats_line(a) -> str:
    a = np.asarray(a, dtype=np.float64)
    if a.size == 0:
        return "empty"
    nan, pinf, ninf = nonfinite_counts(a)
    f = a[np.isfinite(a)] if (nan or pinf or ninf) else a
    if f.size == 0:
        body = "no finite values"
    else:
        body = (f"min {num(f.min(), 3)} max {num(f.max(), 3)} "
                f"mean {num(_mean(f), 3)} norm {num(norm(f), 3)}")
    return body


def nonfinite_text(a) -> str:
    nan, pinf, ninf = nonfinite_counts(a)
    parts = [f"{n} {w}" for n, w in ((nan, "NaN"), (pinf, "+Inf"), (ninf, "-Inf")) if n]
    return ("⚠ " + ", ".join(parts)) if parts else ""


def compact(a, digits: int = 4, max_numbers: int = 2) -> str:
    """A short cell: the numbers of a tiny tensor, else its shape and norm."""
    a = np.asarray(a)
    if a.size <= max_numbers:
        return " ".join(num(v, digits) for v in a.ravel())
    bad = nonfinite_text(a)
    if bad:
        return f"{shape_str(a)} {bad}"
    return f"{shape_str(a)} ‖{num(norm(a), 3)}‖"


def _mean(f) -> float:
    scale = float(np.max(np.abs(f)))
    return scale * float(np.mean(f / scale)) if scale > 0 and np.isfinite(scale) else float(np.mean(f))


def norm(a) -> float:
    """The 2-norm of finite values, without overflow in the squares (1e200 has norm 1e200, not Inf)."""
    a = np.asarray(a, dtype=np.float64)
    scale = float(np.max(np.abs(a))) if a.size else 0.0
    if scale == 0.0 or not np.isfinite(scale):
        return scale
    return scale * float(np.sqrt(np.sum((a / scale) ** 2)))


def inline(a, digits: int = 4) -> str:
    a = np.asarray(a)
    if a.size == 1:
        return num(a.ravel()[0], digits)
    if a.ndim == 2 and a.shape[1] == 1:           # a column (a batch of scalars): [a, b]ᵀ
        return "[" + ", ".join(num(v, digits) for v in a.ravel()) + "]ᵀ"
    if a.ndim >= 2 and a.shape[0] > 1:           # rows, each in brackets
        return "[" + ", ".join("[" + ", ".join(num(v, digits) for v in np.ravel(r)) + "]" for r in a) + "]"
    return "[" + ", ".join(num(v, digits) for v in a.ravel()) + "]"


_NAME_END = r"(?![A-Za-z0-9_.])"


def fill_numbers(formula: str, before: dict, after: dict, max_size: int = 6, digits: int = 4) -> str | None:
    """The formula with tiny tensors' names replaced by their values, clause by clause: in
    ``lhs = rhs`` (or ``lhs ← rhs``) the left side takes the value written, the right side the value
    as it was when that clause ran (inputs first, then what earlier clauses wrote). None when nothing
    was small enough to fill in."""
    before = dict(before)
    for clause in formula.split(";  "):     # "g = linear1.weight.grad": g stands for that tensor
        m = re.fullmatch(r"\s*([A-Za-z_]\w*) = ([A-Za-z_][\w.]*)\s*", clause)
        if m and m.group(1) not in before and m.group(1) not in after and before.get(m.group(2)) is not None:
            before[m.group(1)] = before[m.group(2)]
    names = sorted(set(before) | set(after), key=len, reverse=True)
    if not names:
        return None
    # a name followed by an index (conv1d1.bias[o]) is one element in index notation: left alone
    pat = re.compile(r"(?<![A-Za-z0-9_.])(" + "|".join(re.escape(n) for n in names) + ")" + _NAME_END
                     + r"(?!\[)(ᵀ?)")
    current = {n: v for n, v in before.items() if v is not None}
    changed = False
    out = []

    def sub(text, source):
        nonlocal changed

        def rep(m):
            nonlocal changed
            # the right side takes only values that existed when the clause ran (a state such as
            # Adam's m that did not exist before the first step keeps its name)
            v = source.get(m.group(1))
            if v is None or np.asarray(v).size > max_size or np.ndim(v) > 2:
                return m.group(0)
            changed = True
            txt = inline(v, digits)
            if m.group(2):                        # transposed: a scalar stays, a column is a row
                a = np.asarray(v)
                if a.size == 1:
                    pass
                elif txt.endswith("]ᵀ"):
                    txt = txt[:-1]
                else:
                    txt += "ᵀ"
            before_it = text[:m.start()].rstrip()
            if txt.startswith("-") and before_it and before_it[-1] not in "=←([,;":
                txt = f"({txt})"                  # 0.1·(-1.8), not 0.1·-1.8
            return txt
        return pat.sub(rep, text)

    for clause in formula.split(";  "):
        m = re.search(r"\s(=|←)\s", clause)
        if m is None:
            out.append(sub(clause, current))
            continue
        lhs, op, rhs = clause[:m.start()], m.group(1), clause[m.end():]
        rhs_txt = sub(rhs, current)
        lhs_names = [x.group(1) for x in pat.finditer(lhs)]
        lhs_txt = sub(lhs, after)
        for n in lhs_names:
            if after.get(n) is not None:
                current[n] = after[n]
        out.append(f"{lhs_txt} {op} {rhs_txt}")
    return ";  ".join(out) if changed else None
