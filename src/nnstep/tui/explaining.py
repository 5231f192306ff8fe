"""A tensor full-size (Enter, a click, "open <tensor>"), and one number explained (e, "explain
<tensor>"): the chain rule for an element of a gradient, how any other value was computed. The
explanations are the debugger's (debugger.explain); the modules are imported on first use (the
first screen needs none of them: ~7 ms of every start)."""
from __future__ import annotations

import numpy as np

from .widgets.tensor import TensorCanvas


class Explaining:
    def __init__(self, app):
        self.app = app

    def open_focused(self) -> None:
        """The focused box's tensor, else the first on screen with a value."""
        canvas = self.app.query_one(TensorCanvas)
        box = canvas.selected_box()
        if box is None:
            boxes = [b for b in canvas.visible() if b.tensor_name and b.value is not None]
            box = boxes[0] if boxes else None
        if box is None or box.value is None:
            self.app.notify("no tensor to open here", severity="warning")
            return
        self.open(box.tensor_name, box.value)

    def open_by_name(self, name: str) -> None:
        v = self.app.session.value(name)
        if v is None:
            self.app.notify(f"{name} has not been computed yet", severity="warning")
            return
        self.open(name, v)

    def open(self, name: str, value, index=None) -> None:
        """The tensor full-size; selecting an element explains it (the chain rule for a gradient,
        its op's formula with the element's numbers for any other value)."""
        from ..debugger.explain import explain as explain_element, is_gradient
        from .screens.tensor import TensorScreen

        s = self.app.session

        def fn(ix, n=name):
            try:
                return explain_element(s, n, ix).text
            except (KeyError, IndexError, ValueError) as e:
                return str(e)
        note = ("select an element: its chain rule is below" if is_gradient(s, name)
                else "select an element: how it was computed is below")
        self.app.push_screen(TensorScreen(name, value, self.app.digits, explain=fn, index=index, note=note))

    def explain_here(self) -> None:
        """Explain the focused tensor; with no box focused, what the op on screen is about: the
        first tensor the op just run wrote, or at the start the next op's first parameter (its
        initial value) or input."""
        s = self.app.session
        f = self.app.query_one(TensorCanvas).selected_box()
        if f is not None and f.value is not None:
            self.explain(f.tensor_name)
            return
        rec = s.last_record
        if rec is not None:
            cands = [t for t in rec.outputs if rec.outputs[t] is not None]
        else:
            op = s.current_op
            cands = [sl.name for sl in op.ins if sl.role == "param"] + list(op.inputs) if op is not None else []
        cands = [t for t in cands if t in s.names and s.value(t) is not None]
        self.explain(cands[0] if cands else None)

    def explain(self, name: str | None) -> None:
        from ..debugger.explain import explain as explain_element

        app = self.app
        s = app.session
        if name is None:
            app.notify("nothing computed here to explain yet: step forward (n)", severity="warning")
            return
        if s.value(name) is None:
            k, i = s.position
            if i == 0 and k > 1:
                s.back()
                app.status = (f"went back one op, into step {k - 1}, where {name} is computed", "")
                app.refresh_view()
            else:
                app.notify(explain_element(s, name).text, title="explain", severity="warning", timeout=8)
                return
        v = s.value(name)
        self.open(name, v, index=(0,) * np.ndim(v))
