"""nnstep FILE --compare MINE.npz: where the user's own values differ from nnstep's, as the app shows
it (the report is the debugger's: debugger.compare)."""
from __future__ import annotations


class Comparing:
    def __init__(self, app, report):
        self.app = app
        self.report = report              # a debugger.compare.Report, or None

    def differs(self, step: int) -> frozenset:
        """Indices of step's ops that wrote a tensor differing from the user's."""
        if self.report is None:
            return frozenset()
        return frozenset(i for k, i in self.report.differing_positions if k == step)

    def theirs(self, step: int, index: int) -> dict | None:
        """{tensor: (the user's value, where it differs)} for what this op wrote."""
        if self.report is None:
            return None
        return {r.tensor: (r.yours, r.mask) for r in self.report.at_op(step, index)
                if r.status == "differs" and r.yours is not None}

    def first_status(self) -> str:
        f = self.report.first
        if f is None:
            return f"compare: every one of the {len(self.report.results)} tensors given agrees with nnstep"
        el = "[" + ", ".join(map(str, f.element)) + "]" if f.element else ""
        where = f"step {f.step}, op {f.op_index + 1} {f.op}" if f.op_index is not None else "the initial values"
        return (f"≠ first difference: {f.tensor}{el} at {where}: yours {f.your_value:.6g}, nnstep "
                f"{f.nnstep_value:.6g} · f: go to the next difference")

    def next_difference(self) -> None:
        """The cursor just after the next op (cyclically) that wrote a tensor differing from the
        user's: the op panel shows it, each differing cell with both values."""
        app, report = self.app, self.report
        if report is None:
            app.status = ("no comparison: open with nnstep FILE --compare MINE.npz", "")
            app.refresh_view()
            return
        pos = report.differing_positions
        if not pos:
            app.status = (self.first_status(), "")
            app.refresh_view()
            return
        s = app.session
        rec = s.last_record
        here = (rec.step, rec.op.index) if rec is not None else (0, -1)
        nxt = next((p for p in pos if p > here), pos[0])
        k, i = nxt
        s.goto(k, i + 1) if i + 1 < s.M else s.goto(k + 1, 0)
        n = pos.index(nxt) + 1
        diffs = [r for r in report.at_op(k, i) if r.status == "differs"]
        what = ", ".join(f"{r.tensor} ({int(r.mask.sum())} of {r.mask.size})" for r in diffs)
        app.status = (f"≠ difference {n} of {len(pos)}: step {k}, op {i + 1} {s.ops[i].name}: {what} "
                      f"differ from yours (nnstep≠yours in each cell) · f: next", "stop")
        app.refresh_view()
