"""The loss curve (and the learning rate), and the gradient norms per layer, in the left column."""
from __future__ import annotations

import math

import numpy as np
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.strip import Strip
from textual.widgets import Sparkline, Static

from .. import compat
from ..format import keep, num
from .memo import DirectLines, MemoLines
from .text import NONFINITE, TextLines


class SparkLines(DirectLines, Sparkline):
    """Textual's Sparkline (its look, colours and component classes), drawn once per data and size
    into cached Strips (Line API): a Sparkline renders its bars again through the styles cache on
    every ask, 1.4 ms of each key that adds a loss (py-spy, the 784-256-128-10 net). Drawing the
    bars is still ~0.8 ms (a Style made per bar): the last few drawings are kept by their data, so
    going back to a step, or stepping back over a loss op and on again, draws nothing."""

    _drawn = None                       # ((W, H), strips, a blank line): the data's drawing now
    _data_key = ()                      # the data, as a tuple

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self._drawings: dict = {}       # (data, W, H) -> (strips, blank), in the style now

    def watch_data(self) -> None:
        self._drawn = None
        self._data_key = tuple(self.data or ())

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._drawn = None                  # (drawn again in the new style: rich_style is read then)
        self._drawings = {}

    def lines_in(self, lines: range, W: int) -> list[Strip]:
        H = self.size.height
        if self._drawn is None or self._drawn[0] != (W, H):
            key = (self._data_key, W, H)
            hit = self._drawings.get(key)
            if hit is None:
                base = self.rich_style          # (it walks the ancestors' styles: once per drawing)
                hit = keep(self._drawings, key, ([Strip(line).adjust_cell_length(W, base)
                                                   for line in spark_lines(self.render(), max(1, H), base)],
                                                  Strip.blank(W, base)))
            self._drawn = ((W, H), *hit)
        _, strips, blank = self._drawn
        return [strips[y] if y < len(strips) else blank for y in lines]


def spark_lines(spark, H: int, base: Style) -> list[list[Segment]]:
    """The lines of Textual's Sparkline renderable ``spark`` (its data, size, colours, summary),
    ``H`` high, in ``base``: the segments console.render_lines(spark, ..., style=base, pad=True)
    gives, made with one colour a column (the renderable blends and makes a Style for every bar of
    every line, and rich adds ``base`` to each: ~0.5 ms a drawing, 0.9 ms in the app). A Textual
    without the renderable's buckets and blend (compat) gets rich's rendering of it."""
    data, W = spark.data, spark.width
    if not compat.SPARK_COLUMNS:
        return _rendered(spark, W, H, base)
    if not data:
        return [[Segment(" " * W, base)] for _ in range(H - 1)] + [[Segment("▁" * W, base + spark.min_color)]]
    if len(data) == 1:
        return [[Segment("█" * W, base + spark.max_color)] for _ in range(H)]
    bars = spark.BARS
    per_line = len(bars)
    levels = per_line * (spark.height or 1) - 1
    lo, hi = min(data), max(data)
    extent = hi - lo or 1
    buckets = tuple(compat.sparkline_buckets(list(data), num_buckets=W))
    step = len(buckets) / W
    c0, c1 = spark.min_color.color, spark.max_color.color
    cols = []
    at = 0.0
    for _ in range(W):                       # as the renderable walks its buckets
        ratio = (spark.summary_function(buckets[int(at)]) - lo) / extent
        cols.append((int(ratio * levels), base + Style.from_color(compat.blend_colors(c0, c1, ratio))))
        at += step
    blank = Segment(" ", base)
    out = []
    for i in reversed(range(spark.height or 1)):
        low, high = i * per_line, (i + 1) * per_line
        out.append([blank if b < low else Segment("█" if b >= high else bars[b % per_line], st) for b, st in cols])
    out = out[:H]
    return out + [[Segment(" " * W, base)] for _ in range(H - len(out))]


_CONSOLE = None


def _rendered(spark, W: int, H: int, base: Style) -> list[list[Segment]]:
    """The lines of the renderable ``spark`` as rich renders them (what spark_lines gives faster)."""
    global _CONSOLE
    if _CONSOLE is None:
        from rich.console import Console
        _CONSOLE = Console(width=200, color_system="truecolor", force_terminal=True)
    return _CONSOLE.render_lines(spark, _CONSOLE.options.update_dimensions(W, H), style=base, pad=True)


class LossCurve(MemoLines, Vertical):
    _key = None                     # what the panel shows now
    def compose(self) -> ComposeResult:
        yield TextLines(id="loss-label")
        yield SparkLines([], id="loss-spark")
        yield TextLines(id="lr-label")
        yield SparkLines([], id="lr-spark")

    KEEP = object()

    def show(self, history: list[tuple[int, float]], lrs=None):
        """``lrs``: with a schedule, the lr in force at each step of ``history`` (the engine's
        tensor `lr`, logged by the session), plotted under the loss; None hides that part, KEEP
        leaves it as it is (the progress of a run)."""
        key = (len(history), history[-1] if history else None)
        if lrs is not self.KEEP:
            key += (None if lrs is None else len(lrs),)
        if key == self._key:
            return
        self._key = key
        if lrs is not self.KEEP:
            self._show_lr(lrs)
        lab = self.query_one("#loss-label", TextLines)
        sp = self.query_one("#loss-spark", Sparkline)
        if not history:
            lab.set_text(Text("no loss computed yet", style="dim"))
            sp.data = []                      # blank, but in place: showing it later is no relayout
            return
        vals = [v for _, v in history]
        finite = [v for v in vals if v == v and abs(v) != float("inf")]
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append(f"step {history[-1][0]}: ", "")
        t.append(num(vals[-1], 5), "bold")
        data = finite
        if len(data) > 2000:                          # the curve is ~100 cells wide
            data = data[:: len(data) // 2000 + 1] + data[-1:]
        log = len(finite) >= 2 and min(finite) > 0 and max(finite) / min(finite) > 1000
        if log:
            data = [math.log10(v) for v in data]
        title = ("loss curve (log scale)" if log else "loss curve") + (" · lr" if self.has_class("-lr") else "")
        if title != self.border_title:        # (setting it repaints the whole panel, even unchanged)
            self.border_title = title
        if len(finite) < len(vals):
            t.append(" NaN/Inf!", NONFINITE)
        if len(vals) > 1:                     # a second line: the left column is narrow
            t.append(f"\nfirst {num(vals[0], 4)}", "dim")
            if finite:
                t.append(f" · min {num(min(finite), 4)}", "dim")
        lab.set_text(t)
        sp.data = data if len(finite) >= 2 else []

    def _show_lr(self, lrs):
        lab = self.query_one("#lr-label", TextLines)
        sp = self.query_one("#lr-spark", Sparkline)
        self.set_class(lrs is not None, "-lr")
        lab.display = sp.display = lrs is not None
        if lrs is None:
            return
        vals = [float(v) for v in lrs if v == v]
        if not vals:
            lab.set_text(Text("lr: no step yet", style="dim"))
            sp.display = False
            return
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append("lr ", "")
        t.append(num(vals[-1], 5), "bold")
        t.append(f"  (min {num(min(vals), 3)} · max {num(max(vals), 3)})", "dim")
        lab.set_text(t)
        data = vals if len(vals) <= 2000 else vals[:: len(vals) // 2000 + 1] + vals[-1:]
        sp.display = len(vals) >= 2
        sp.data = data if len(data) >= 2 else [0.0, 0.0]


SPARK = "▁▂▃▄▅▆▇█"


def grad_norm_text(steps, names, norms, width: int, now=None, step: int | None = None) -> Text:
    """Per layer, its parameter-gradient norm over the steps taken, as a sparkline on one log scale
    shared by every layer (so a vanishing gradient is a low row, an exploding one a high row),
    then the last value. ``norms[step, layer]`` comes from the session. More steps than columns
    are shown whole, each column the mean of its steps' logs. Before the first backward stage
    has ended, ``now`` (the session's norms so far in ``step``, None where not computed yet)."""
    t = Text(no_wrap=True, overflow="ellipsis")
    if len(steps) == 0:
        if not names:
            t.append("no trainable parameters", "dim")
        elif now is None or all(v is None for v in now):
            t.append("no backward pass yet", "dim")
        else:
            nw = min(8, max(len(n) for n in names))
            t.append(f"step {step}'s backward pass so far" + "\n", "dim")
            for j, (name, v) in enumerate(zip(names, now)):
                t.append(f"{name[:nw]:<{nw}} ", "bold")
                t.append("·" if v is None else num(float(v), 3), "dim" if v is None else "")
                if j < len(names) - 1:
                    t.append("\n")
        return t
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log10(norms)
    fin = logs[np.isfinite(logs)]
    lo, hi = (float(fin.min()), float(fin.max())) if fin.size else (0.0, 0.0)
    nw = min(8, max(len(n) for n in names))
    room = max(4, width - nw - 10)
    a, b, k = math.floor(lo), math.ceil(hi), int(steps[-1])
    # the heading on one line (a wrapped one hid a layer's row at 80x24): shorter as the panel narrows
    heads = (f"log scale 1e{a} … 1e{b}, step {k}", f"log 1e{a}…1e{b}, step {k}", f"1e{a}…1e{b} step {k}")
    t.append(next((h for h in heads if len(h) <= width), heads[-1]) + "\n", "dim")
    cols = _columns(logs, room)
    for j, name in enumerate(names):
        t.append(f"{name[:nw]:<{nw}} ", "bold")
        for v in cols[:, j]:
            if not np.isfinite(v):
                t.append("!" if v != -np.inf else " ", NONFINITE if v != -np.inf else "")
                continue
            lev = 0 if hi <= lo else int(round((v - lo) / (hi - lo) * (len(SPARK) - 1)))
            t.append(SPARK[lev], "cyan")
        t.append(" " * (room - len(cols)) + f" {num(float(norms[-1, j]), 2)}")
        if j < len(names) - 1:
            t.append("\n")
    return t


def _columns(logs: np.ndarray, room: int) -> np.ndarray:
    """Every step in at most ``room`` columns: each column the mean log of its steps, a NaN or an
    Inf among them kept (it is what a reader must see)."""
    n = len(logs)
    if n <= room:
        return logs
    edges = np.linspace(0, n, room + 1).astype(int)
    out = np.empty((room, logs.shape[1]))
    for c in range(room):
        part = logs[edges[c]:edges[c + 1]]
        fin = np.isfinite(part)
        first_bad = part[np.argmax(~fin, axis=0), np.arange(part.shape[1])]
        with np.errstate(invalid="ignore"):
            out[c] = np.where(fin.all(axis=0), part.mean(axis=0), first_bad)
    return out


class GradNorms(MemoLines, Static):
    """The per-layer gradient-norm plot (toggled with G in place of the loss curve)."""
    _key = None                     # what the panel shows now

    def show(self, steps, names, norms, now=None, step=None):
        # (just shown, the widget has no size yet: the column it sits in has)
        width = self.size.width or max(0, self.parent.size.width - 2)
        key = (len(steps), int(steps[-1]) if len(steps) else None, width, None if len(steps) else tuple(now or ()))
        if key == self._key:
            return
        self._key = key
        self.update(grad_norm_text(steps, names, norms, max(20, width), now, step), layout=False)
