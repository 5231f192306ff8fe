"""The header (scenario, step, stage, op, loss) and the footer of keys."""
from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.strip import Strip
from textual.widget import Widget

from ..format import keep, num
from .memo import DirectLines
from .text import NONFINITE, TextLines


class HeaderBar(TextLines):
    def show(self, name: str, k: int, N: int, stage: str, i: int, M: int, opname: str, loss, running=False,
             lr=None, score=None):
        """``lr``: the learning rate in force this step (a schedule's ``lr`` tensor), or None;
        ``score``: a lesson's (right, asked), once a question has been asked."""
        t = Text(no_wrap=True, overflow="ellipsis")
        width = self.app.size.width
        if width >= 100:
            t.append(" nnstep ", "bold reverse")
        lr_text = f" │ lr {num(lr, 6)}" if lr is not None else ""
        if score is not None:
            lr_text += f" │ score {score[0]}/{score[1]}"
        # the name gives way first, so step, stage, op and the loss always fit (80 columns included)
        fixed = len(t.plain) + len(f"│ step {k}/{N} │ {stage} │ op {i + 1}/{M} │ loss ") + 12 + 2 + len(lr_text)
        room = max(8, width - fixed)
        if len(name) > room:
            name = name[:room - 1] + "…"
        t.append(f" {name} ", "bold")
        t.append("│ ")
        t.append(f"step {k}/{N}" if k <= N else f"done {N}/{N}", "bold")
        t.append(" │ ")
        t.append(stage, "bold")
        t.append(" │ ")
        t.append(f"op {i + 1}/{M}" if k <= N else "end of training")
        t.append(" │ loss ")
        bad = loss is not None and (loss != loss or loss in (float("inf"), float("-inf")))
        t.append(num(loss, 9) if loss is not None else "—", NONFINITE if bad else "bold")
        if lr_text:
            t.append(lr_text)
        if k <= N and opname:
            t.append(f" │ next: {opname}")
        if running:
            t.append("  ● running (Esc stops)", "bold yellow")
        self.set_text(t, (t.plain, width))


class KeyBar(DirectLines, Widget):
    """The footer of keys, one line drawn here: Textual's Footer is a widget per key, measured on
    every relayout and recomposed whenever an action's availability changes (an eighth of the
    app's time per key, py-spy). Keys the app cannot run now are dim; what does not fit is cut
    from the end (the order of the bindings puts the least needed last)."""

    DEFAULT_CSS = "KeyBar { height: 1; width: 100%; }"

    def __init__(self, **kw):
        super().__init__(**kw)
        self._state = None
        self._strips: dict = {}          # (state, width) -> the line: the footers drawn so far
        self.show_command_palette = True

    def set_keys(self, keys: list[tuple[str, str, bool]]):
        """(key as shown, what it does, available now)."""
        state = (tuple(keys), self.show_command_palette)
        if state != self._state:
            self._state = state
            self.refresh()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._strips = {}

    def lines_in(self, lines: range, W: int) -> list[Strip]:
        return [self._line(W) if y == 0 and self._state is not None else Strip.blank(W, self.rich_style)
                for y in lines]

    def _line(self, W: int) -> Strip:
        hit = self._strips.get((self._state, W))
        if hit is None:
            base = self.rich_style
            keys, palette = self._state
            key_on, key_off = Style(bold=True, color="#ffa62b"), Style(dim=True, color="#ffa62b")
            right = [Segment("▏", Style(dim=True)), Segment("^p", key_on), Segment(" palette ", base)] if palette else []
            room = W - sum(len(s.text) for s in right)
            # "n next p prev ...", or "nnext pprev ..." on a narrow screen (Textual's compact footer),
            # so that help and quit stay in reach at 80 columns
            gap = " " if W >= 100 else ""
            segs, used = [], 0
            for k, what, on in keys:
                cell = [Segment(k, key_on if on else key_off), Segment(f"{gap}{what} ", base if on else base + Style(dim=True))]
                n = len(k) + len(what) + 1 + len(gap)
                if used + n > room:
                    break
                segs += cell
                used += n
            segs.append(Segment(" " * max(0, room - used), base))
            hit = keep(self._strips, (self._state, W), Strip(segs + right).crop(0, W).adjust_cell_length(W, base))
        return hit
