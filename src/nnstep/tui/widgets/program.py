"""The program (every op of the step by stage) and the network diagram, in the left column."""
from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.strip import Strip
from textual.widget import Widget

from .. import diagram
from .memo import DirectLines, MemoLines
from .text import STAGE_ICON, WRITTEN


class ProgramLines(DirectLines, Widget):
    """The program's lines as cached Strips (a Static with styled Content costs ~10x more to paint)."""

    DEFAULT_CSS = "ProgramLines { height: auto; width: 100%; }"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.lines: list[list[tuple[str, str]]] = []
        self._strips = None
        self._built_for = None

    def set_lines(self, lines):
        resize = len(lines) != len(self.lines)
        if resize or self._strips is None:
            self.lines = lines
            self._strips = None
            if resize:
                # its height as a style, not only its content's height: Textual measures a widget
                # again only when a layout is asked for with none pending (its box model is cached
                # until then), so new lines set while one was pending (the diagram drawn at no size
                # when d shows it, then at its size) kept the old height, cutting off node rows
                self.styles.height = len(lines)
            self.refresh(layout=resize)
            return
        # one step moves a marker or two: repaint only the lines that changed (a whole-widget
        # refresh re-renders every line through Textual's styles cache, per key)
        changed = [y for y, (a, b) in enumerate(zip(self.lines, lines)) if a != b]
        self.lines = lines
        if not changed:
            return
        from textual.geometry import Region
        W = self.size.width
        for y in changed:
            self._strips[y] = None
        self.refresh(*(Region(0, y, W, 1) for y in changed))

    def get_content_height(self, container, viewport, width: int) -> int:
        return len(self.lines)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._strips = None                # built again with the new style

    def _strip(self, parts, W: int) -> Strip:
        key = tuple(parts)                 # (a line drawn before at this width: an op done, then
        hit = self._drawn.get(key)         # not done again after a step back or a go-to)
        if hit is not None:
            return hit
        base = self._base                  # rich_style walks the ancestors' styles: kept
        cache = self._style_cache

        def st(name):
            if name not in cache:
                cache[name] = base + Style.parse(name) if name else base
            return cache[name]
        strip = Strip([Segment(t, st(sty)) for t, sty in parts])
        if strip.cell_length > W:
            strip = strip.crop(0, max(0, W - 1)) + Strip([Segment("…", base)])
        strip = strip.adjust_cell_length(W, base)
        if len(self._drawn) > 4 * max(16, len(self.lines)):
            self._drawn.clear()
        self._drawn[key] = strip
        return strip

    def lines_in(self, lines: range, W: int) -> list[Strip]:
        if self._strips is None or self._built_for != W:
            self._style_cache: dict[str, Style] = {}
            self._drawn: dict = {}          # a line's parts -> its Strip, at this width and style
            self._base = self.rich_style
            self._strips, self._built_for = [self._strip(p, W) for p in self.lines], W
            self._blank = Strip.blank(W, self._base)
        strips, n = self._strips, len(self._strips)
        out = []
        for y in lines:
            s = strips[y] if y < n else self._blank
            if s is None:
                s = strips[y] = self._strip(self.lines[y], W)
            out.append(s)
        return out


def fit_name(op, room: int) -> str:
    """An op's name in ``room`` columns of the program, keeping what tells it from its neighbours:
    first the stage word goes (its section's heading says it: "backward lstm1 t3" → "lstm1 t3"),
    then the start of what is left ("…attn softmax" → "…n softmax"), never the end."""
    name = op.name
    if len(name) <= room:
        return name
    head, _, rest = name.partition(" ")
    if head == op.stage and rest:
        name = rest
    if len(name) <= room or room < 2:
        return name
    return "…" + name[-(room - 1):]


def graph_mark(op) -> str:
    """Where the graph forks and merges, in the program: a fork's backward sums what its readers
    sent back (Σ of n); a merge's ops read (forward) or send back to (backward) several layers."""
    n = sum(1 for s in op.ins if s.role == "contribution")
    if n:
        return f" Σ{n}"
    own = f"{op.layer}."
    if op.stage == "forward" and len({s.name for s in op.ins if s.role == "input" and not s.name.startswith(own)
                                      and (s.name == "input" or s.name.endswith(".out"))}) > 1:
        return " ⊕"
    if op.stage == "backward" and any(s.name.endswith(".grad_in.1") for s in op.outs):
        return " ⊕"
    return ""


class ProgramView(MemoLines, VerticalScroll):
    """Every op of the step grouped by stage; ✓ done, ▶ next, ● breakpoint."""
    _key = None                     # what the panel shows now

    def compose(self) -> ComposeResult:
        yield ProgramLines(id="program-text")

    def show(self, ops, i: int, done_all: bool, breakpoints: set[str], just_ran: int | None,
             differs: frozenset = frozenset()):
        """``differs``: indices of this step's ops whose outputs differ from the user's (compare)."""
        room = (self.size.width or 31) - 1              # (the scrollbar's column)
        key = (i, done_all, frozenset(breakpoints), just_ran, len(ops), differs, room)
        if key == self._key:
            return
        self._key = key
        lines = []
        stage = None
        line_of_current = 0
        for op in ops:
            if op.stage != stage:
                stage = op.stage
                lines.append([(f"{STAGE_ICON.get(stage, '')} {stage}", "bold underline")])
            bp = "●" if op.name in breakpoints else " "
            if done_all or op.index < i:
                mark, style = "✓", "dim"
            elif op.index == i:
                mark, style = "▶", "bold reverse"
                line_of_current = len(lines)
            else:
                mark, style = " ", ""
            if just_ran == op.index:
                style = WRITTEN
            gm = graph_mark(op)
            lines.append([(bp, "bold red"), (f"{mark}{op.index + 1:>3} {fit_name(op, room - 6 - len(gm))}", style)]
                         + ([(gm, "dim" if style != WRITTEN else style)] if gm else [])
                         + ([(" ≠ yours", "bold red")] if op.index in differs else []))
        self.query_one(ProgramLines).set_lines(lines)
        h = self.size.height
        if h and not (self.scroll_y <= line_of_current < self.scroll_y + h - 1):
            self.scroll_to(y=max(0, line_of_current - h // 2), animate=False)

    def text(self) -> str:
        return "\n".join("".join(t for t, _ in parts) for parts in self.query_one(ProgramLines).lines)


class DiagramView(MemoLines, VerticalScroll):
    """The network as a graph (tui.diagram): boxes for layers, lanes for skips and merges, the
    current op's layer marked; a one-line-per-layer list when the panel is too narrow or short."""
    _args = None                    # (scenario, current node) shown
    _key = None                     # what the panel shows now

    def compose(self) -> ComposeResult:
        yield ProgramLines(id="diagram-text")

    def show(self, scenario, current: str | None):
        W, H = self.size.width, self.size.height
        key = (id(scenario), current, W, H)
        if key == self._key:
            return
        self._key = key
        self._args = (scenario, current)
        n = len(scenario.layers) + 2
        as_graph = W >= diagram.graph_width(scenario) + 14 and 2 * n - 1 <= H
        lines, cur = (diagram.graph_lines if as_graph else diagram.list_lines)(scenario, current)
        self.as_graph = as_graph
        self.query_one(ProgramLines).set_lines(lines)
        if H and not (self.scroll_y <= cur < self.scroll_y + H - 1):
            self.scroll_to(y=max(0, cur - H // 2), animate=False)

    def on_resize(self) -> None:
        if self._args:
            self.show(*self._args)

    @property
    def laid_out(self) -> bool:
        """Shown at the size the panel has now (shown when just displayed, at no size yet, the
        panel draws again once laid out: on_resize)."""
        return self._key is not None and self._key[2:] == tuple(self.size) and self.size.area > 0

    def text(self) -> str:
        return "\n".join("".join(t for t, _ in parts) for parts in self.query_one(ProgramLines).lines)
