"""TensorCanvas: every box of the operation panel (widgets.tensorbox.TensorBox), frames included,
on one Line-API widget."""
from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from .memo import DirectLines
from .tensorbox import DOUBLE, HEAVY, ROUND, TensorBox, frame_edges


class TensorCanvas(DirectLines, ScrollView, can_focus=True):
    """The operation panel's tensors: every box drawn here, frames included, as cached Strips on one
    Line-API canvas. Stepping changes the boxes' sizes and contents but never the widget's own
    geometry (so no relayout), and only the canvas lines that changed are repainted.

    Focus: Tab and the arrow keys select a box (Tab past the last one moves focus on), Enter opens
    the selected tensor full-size, e explains it; a click opens the box under the mouse."""
    _filtered = None                   # (the app's line filters, the blank style through them)

    COMPONENT_CLASSES = {"tensor-canvas--frame", "tensor-canvas--written", "tensor-canvas--selected",
                         "tensor-canvas--selected-written"}
    DEFAULT_CSS = """
    TensorCanvas { height: 1fr; scrollbar-size-vertical: 1; }
    TensorCanvas > .tensor-canvas--frame { color: $panel-lighten-2; }
    TensorCanvas > .tensor-canvas--written { color: $warning; }
    TensorCanvas > .tensor-canvas--selected { color: $primary-lighten-3; text-style: bold; }
    TensorCanvas > .tensor-canvas--selected-written { color: $warning; text-style: bold; }
    """
    BINDINGS = [
        Binding("tab", "select(1)", "next tensor", show=False),
        Binding("shift+tab", "select(-1)", "previous tensor", show=False),
        Binding("right", "select(1)", show=False),
        Binding("left", "select(-1)", show=False),
        Binding("down", "select_row(1)", show=False),
        Binding("up", "select_row(-1)", show=False),
    ]

    class Open(Message):
        """A box was clicked: open its tensor."""

        def __init__(self, box: TensorBox):
            super().__init__()
            self.box = box

    def __init__(self, slots: int = 8, **kw):
        super().__init__(**kw)
        self.boxes = [TensorBox(k) for k in range(slots)]
        self.selected: int | None = None      # a slot
        self._lines: list[Strip] = []
        self._width = 0
        self._height = 0
        self._line_cache: dict = {}           # (width, the strips of a line and where) -> (those, the line)
        self._head_src = ()                   # the lines above the boxes (rich Text), as given
        self._head_n = 0                      # ... how many (they stay in view: the boxes scroll below)
        self._room_h = 0                      # the canvas's height, as place() was told it
        self._fits = True                     # every box in view: no scrolling
        self._head: list[Strip] | None = None  # ... and drawn
        self._frames: dict = {}
        self._framed_lines: dict = {}         # (ids of a box's lines, its size and frame) -> (those, the framed lines)
        self._ahead_lines: dict = {}          # as _line_cache, the lines composed ahead (prebuild)
        self._styles: dict | None = None

    # --- what it shows ----------------------------------------------------------------------------
    def place(self, placed: tuple, height_to_be: int | None = None, head=(), tallest: int = 0) -> None:
        """``placed``: (slot, x, y, width, height) per box shown, frames included.
        ``height_to_be``: the canvas's height once the layout in progress is done, if its owner
        knows it (the panel sets it). ``head``: lines of rich Text drawn at the top, above the
        boxes (the panel's formula; the boxes are placed below them). ``tallest``: the content's
        height at its tallest at this size, if the owner knows it: the scrolling height kept for
        every op (a new virtual size relayouts the screen)."""
        if head is not self._head_src:
            self._head_src = head
            self._head = None
        if len(head) != self._head_n and self.scroll_offset.y:
            self.refresh()                    # (the rows below the formula show other content rows)
        self._head_n = len(head)
        shown = {}
        for j, x, y, w, h in placed:
            shown[j] = Region(x, y, w, h)
        for b in self.boxes:
            b.display = b.slot in shown
            if b.display and b.region != shown[b.slot]:
                b.region = shown[b.slot]
        height = max(max((r.bottom for r in shown.values()), default=0), len(head))
        width = max((r.right for r in shown.values()), default=0)
        self._width = width
        # virtual_size is a layout reactive: a new value relayouts the whole screen. Content that
        # fits the canvas needs no scrolling, so it gets one stable value (0x0) and the step costs
        # no layout; only content larger than the canvas (a big network's heatmaps, a small
        # terminal) sets its real size. A resize places the boxes again (refresh_view).
        room_h = self.size.height if height_to_be is None else height_to_be
        self._room_h = room_h
        tall = max(height, tallest)
        fits = not shown or (0 < width <= self.size.width and 0 < tall <= room_h)
        self._height = height
        # (no horizontal scrolling while the boxes fit across: the width, which varies from op to
        # op, would be a new virtual size each time)
        virtual = Size(0, 0) if fits else Size(width if width > self.outer_size.width - 1 else 0, tall)
        if self.virtual_size != virtual:
            self.virtual_size = virtual
        if fits and (self.scroll_x or self.scroll_y):
            self.scroll_to(0, 0, animate=False)
        self._fits = fits
        if self.selected is not None and not self._selectable(self.selected):
            self.selected = None

    # The formula stays in view: its lines (the head) are drawn at the top of the canvas whatever
    # the scrolling, and the boxes scroll below them. Scrolled by y, the canvas shows the head on
    # rows 0 .. head_n - 1 and the content's rows head_n + y .. on the rest.
    def _content_row(self, row: int) -> int:
        return row if row < self._head_n else row + int(self.scroll_offset.y)

    def _scroll_for(self, top: int, bottom: int) -> int:
        """The scrolling that shows content rows top .. bottom - 1 below the head, moving the least
        from where it is (their top, if they are taller than the room below the head)."""
        y = int(self.scroll_offset.y)
        H, hn = self._room_h or self.size.height, self._head_n
        if bottom > y + H:
            y = bottom - H
        if top < y + hn:
            y = top - hn
        return max(0, y)

    def show_region(self, r: Region) -> None:
        """Scroll (the boxes, below the formula) until the region of the content is in view."""
        if not self._fits:
            self.scroll_to(y=self._scroll_for(r.y, r.bottom), animate=False, immediate=True)

    def settle(self) -> None:
        """A new op's boxes: in view, the focused one (while the canvas has focus), else those the
        op wrote, else the first ones: the content's top. A panel that does not hold every box
        showed the op's inputs and cut off what it wrote, the point of the op (tiny-lm's
        ∂E/∂scores)."""
        if self._fits:
            return
        sel = self.selected if self.has_focus else None
        if sel is not None and self._selectable(sel):
            self.show_region(self.boxes[sel].region)
            return
        written = [b.region for b in self.boxes if b.display and b.written and b.tensor_name]
        y = 0
        if written:
            top, bottom = min(r.y for r in written), max(r.bottom for r in written)
            y = max(0, min(bottom - (self._room_h or self.size.height), top - self._head_n))
        if y != self.scroll_offset.y:
            self.scroll_to(y=y, animate=False, immediate=True)

    def refresh_lines(self, y_start: int, line_count: int = 1) -> None:
        """Repaint content rows y_start .. y_start + line_count - 1 where they are on screen."""
        W = max(self.virtual_size.width, self.size.width)
        hn, dy = self._head_n, int(self.scroll_offset.y)
        a, b = y_start, y_start + line_count
        if a < hn:
            self.refresh(Region(0, a, W, min(b, hn) - a))
        lo, hi = max(a, hn + dy) - dy, b - dy
        if hi > lo:
            self.refresh(Region(0, lo, W, hi - lo))

    def visible(self) -> list[TensorBox]:
        """The boxes on the canvas now, in reading order."""
        return [b for b in self.boxes if b.display]

    def selected_box(self) -> TensorBox | None:
        if self.selected is None or not self.has_focus:
            return None
        b = self.boxes[self.selected]
        return b if b.display and b.tensor_name else None

    def redraw(self) -> None:
        """Compose the lines from the boxes; repaint only the lines that changed."""
        new = self._compose_lines()
        old = self._lines
        self._lines = new
        if len(old) != len(new):
            self.refresh()
            return
        y = 0
        n = len(new)
        while y < n:
            if old[y] is new[y] or old[y] == new[y]:
                y += 1
                continue
            y0 = y
            while y < n and not (old[y] is new[y] or old[y] == new[y]):
                y += 1
            self.refresh_lines(y0, y - y0)

    # --- drawing ----------------------------------------------------------------------------------
    def _style(self, kind: str) -> Style:
        if self._styles is None:
            base = self.rich_style
            self._styles = {"base": base}
            for k in ("frame", "written", "selected", "selected-written"):
                self._styles[k] = base + self.get_component_rich_style(f"tensor-canvas--{k}", partial=True)
        return self._styles[kind]

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles = None
        self._frames = {}
        self._framed_lines = {}
        self._ahead_lines = {}
        self._head = None
        if self.is_mounted:
            self._lines = self._compose_lines()

    def _frame(self, b: TensorBox, selected: bool):
        """(top, bottom, left/right edge) Strips of a box's frame."""
        r = b.region
        empty = not b.tensor_name
        kind = ("selected-written" if b.written else "selected") if selected else ("written" if b.written else "frame")
        key = (r.width, b.border_title, b.border_subtitle, kind, empty)
        hit = self._frames.get(key)
        if hit is None:
            if empty:                            # an empty slot of a constant layout: a blank frame
                blank = Strip.blank(r.width, self._style("base"))
                hit = (blank, blank, Segment(" ", self._style("base")))
            else:
                # the shape says focused (double) or written (heavy), the colour written (yellow):
                # in the default theme the accent a focus took was the very yellow of written
                chars = DOUBLE if selected else HEAVY if b.written else ROUND
                st = self._style(kind)
                top, bottom = frame_edges(r.width, b.border_title, b.border_subtitle, chars)
                hit = (Strip([Segment(top, st)]), Strip([Segment(bottom, st)]), Segment(chars[3], st))
            if len(self._frames) > 256:
                self._frames.clear()
            self._frames[key] = hit
        return hit

    def _head_strips(self) -> list[Strip]:
        if self._head is None:
            base = self._style("base")
            console = self.app.console               # (wrapped to the panel's width by the panel)
            self._head = [Strip(list(Segment.apply_style(line.render(console),
                                                         base + console.get_style(line.style) if line.style else base)))
                          for line in self._head_src]
        return self._head

    # the app's line filters are applied here, part by part (each part's filtered Strip is cached
    # with it), not to every new line of the canvas: a line that changed only in one box, and a
    # box built ahead, cost no filter pass over the rest (a heatmap line is ~100 segments)
    FILTERS_APPLIED = True

    def _filtering(self) -> tuple[tuple, object]:
        """(the app's line filters, the background they are given) for the canvas's lines; none
        when Textual's styles cache draws the canvas (a border or padding: it applies them)."""
        plain = self._plain if self._plain is not None else self._plain_styles()
        if not plain[0]:
            return (), None
        return tuple(self.app.get_line_filters()), plain[1]

    def _compose_lines(self) -> list[Strip]:
        base = self._style("base")
        flt, bg = self._filtering()
        fill = _filled(base, flt, bg)
        self._filtered = (flt, fill)
        boxes = [b for b in self.boxes if b.display]
        H = max(max((b.region.bottom for b in boxes), default=0), len(self._head_src))
        rows: list[list] = [[] for _ in range(H)]
        for y, strip in enumerate(self._head_strips()):
            rows[y].append((0, strip))
        sel = self.selected if self.has_focus else None
        self._box_parts(rows, boxes, sel, base)
        # a line made of the same strips at the same places is the Strip it was (most lines of a
        # step: the boxes that did not change, the formula when it did not), or the one composed
        # ahead (prebuild)
        cache: dict = {}
        # (each line as wide as the canvas at least: lines_in hands them over as they are, where a
        # narrower line was padded into a new Strip on every ask, its sequences made again)
        W = max(self._width, self.size.width)
        out = [self._line(parts, W, flt, bg, fill, cache) for parts in rows]
        self._line_cache = cache
        return out

    def _box_parts(self, rows: list[list], boxes, sel, base: Style) -> None:
        """Add each box's framed lines, left to right, to the rows of the canvas they are on."""
        for b in sorted(boxes, key=lambda b: b.region.x):
            r = b.region
            for dy, strip in enumerate(self._framed(b, b.slot == sel, base)):
                rows[r.y + dy].append((r.x, strip))

    def _line(self, parts: list, W: int, flt: tuple, bg, fill: Style, cache: dict) -> Strip:
        """One line of the canvas, ``W`` wide, from its (x, Strip) parts through the filters: the
        line kept for the same parts (shown last, or composed ahead), else composed now."""
        key = (W, flt, tuple((bx, id(strip)) for bx, strip in parts))
        for kept in (self._line_cache, self._ahead_lines):
            hit = kept.get(key)
            if hit is not None and all(a is b for (_, a), (_, b) in zip(hit[0], parts)):
                cache[key] = hit
                return hit[1]
        segs: list[Segment] = []
        x = 0
        for bx, strip in parts:
            if bx > x:
                segs.append(Segment(" " * (bx - x), fill))
                x = bx
            segs.extend(_through(strip, flt, bg))
            x += strip.cell_length
        if x < W:
            segs.append(Segment(" " * (W - x), fill))
        line = Strip(segs, max(W, x))
        cache[key] = (parts, line)
        return line

    def prebuild_steps(self, slots: list[tuple], digits: int, compare: dict | None, placed: tuple,
                       masks: dict | None = None):
        """Build the lines of ``slots`` (the operation panel's (role, name, value, written)) in
        boxes at ``placed`` (as place() takes it) into the by-array cache, frame them and compose
        the canvas lines they make below the formula (with their terminal sequences), drawing
        nothing: the app does this for the next op while the user reads the current one, so the
        key that shows it finds its lines made. A generator: one box a step, then the lines (the
        app runs a step a callback, so that a key waits for one box at most)."""
        base = self._style("base")
        flt, bg = self._filtering()
        fill = _filled(base, flt, bg)
        compare = compare or {}
        masks = masks or {}
        boxes = []
        for j, x, y, w, h in placed:
            ahead = TensorBox(j)
            ahead.region, ahead.base = Region(x, y, w, h), base
            if j < len(slots):                 # as OpPanel._fill shows them
                role, name, value, written = slots[j]
                ahead.show(name, value, role=role, written=written, digits=digits, compare=compare.get(name),
                           hidden=masks.get(name))
            else:
                ahead.show(None, None)
            if ahead._ensure():
                yield
            boxes.append(ahead)
        if not boxes:
            return
        top = min(b.region.y for b in boxes)    # (the formula's lines above are drawn with it)
        H = max(b.region.bottom for b in boxes)
        rows: list[list] = [[] for _ in range(H)]
        self._box_parts(rows, boxes, self.selected if self.has_focus else None, base)
        W = max(max(b.region.right for b in boxes), self.size.width)      # (as _compose_lines)
        if len(self._ahead_lines) > 256:
            self._ahead_lines = {}
        # (and their terminal sequences, made with the console the app writes its frames with,
        # which each Strip keeps: the frame that shows a line writes them as they are. A headless
        # app writes nothing, and a rich Style keeps the sequences of the first console that
        # renders it: a test's own console would get the headless console's colours)
        console = None if self.app.is_headless else self.app.console
        for parts in rows[top:]:
            line = self._line(parts, W, flt, bg, fill, self._ahead_lines)
            if console is not None:
                line.render(console)

    def _framed(self, b: TensorBox, selected: bool, base: Style) -> list[Strip]:
        """A box's lines with its frame, kept by its lines (as the by-array cache gives them) and
        frame, so that a box built ahead (prebuild) is framed ahead too."""
        b.base = base
        b._ensure()
        top, bottom, edge = self._frame(b, selected)
        r = b.region
        key = (id(b._strips), r.width, r.height, id(top), id(edge))
        hit = self._framed_lines.get(key)
        if hit is not None and hit[0] is b._strips and hit[1] is top and hit[2] is edge:
            return hit[3]
        lines = [top] + [Strip([edge, *b.render_line(dy), edge], r.width) for dy in range(r.height - 2)]
        if r.height > 1:
            lines.append(bottom)
        lines = lines[:r.height]
        if len(self._framed_lines) > 160:        # (the boxes shown, and those of the look-ahead's stops)
            self._framed_lines.clear()
        self._framed_lines[key] = (b._strips, top, edge, lines)       # (what the ids are of, kept)
        return lines

    def lines_in(self, lines: range, W: int) -> list[Strip]:
        dy, hn = int(self.scroll_offset.y), self._head_n
        if self._filtered is None or self._filtered[0] != self._filtering()[0]:
            self._lines = self._compose_lines()         # (the filters changed: the lines with them)
        fill = self._filtered[1]
        have, n = self._lines, len(self._lines)
        out = []
        for y in lines:
            if y >= hn:                                 # (the formula's lines do not scroll)
                y += dy
            if y < n:
                line = have[y]
                out.append(line if line.cell_length == W else line.crop(0, W).adjust_cell_length(W, fill))
            else:
                out.append(Strip.blank(W, fill))
        return out

    # --- focus and keys ---------------------------------------------------------------------------
    def _selectable(self, j: int) -> bool:
        b = self.boxes[j]
        return b.display and bool(b.tensor_name)

    def _order(self) -> list[int]:
        return [b.slot for b in sorted((b for b in self.boxes if self._selectable(b.slot)),
                                       key=lambda b: (b.region.y, b.region.x))]

    def select(self, slot: int | None) -> None:
        """Select a box (it is drawn with the accent frame while the canvas has focus)."""
        if slot == self.selected:
            return
        self.selected = slot
        self.redraw()
        if slot is not None:
            self.show_region(self.boxes[slot].region)

    def action_select(self, d: int) -> None:
        order = self._order()
        if not order:
            (self.screen.focus_next() if d > 0 else self.screen.focus_previous())
            return
        if self.selected not in order:
            self.select(order[0] if d > 0 else order[-1])
            return
        j = order.index(self.selected) + d
        if 0 <= j < len(order):
            self.select(order[j])
        else:                                     # past the last box (or before the first): move on
            self.screen.focus_next() if d > 0 else self.screen.focus_previous()

    def action_select_row(self, d: int) -> None:
        order = self._order()
        if not order:
            return
        if self.selected not in order:
            self.select(order[0])
            return
        cur = self.boxes[self.selected].region
        cx = cur.x + cur.width // 2
        rows = sorted({self.boxes[j].region.y for j in order})
        ri = rows.index(cur.y) + d
        if not 0 <= ri < len(rows):
            return
        cands = [j for j in order if self.boxes[j].region.y == rows[ri]]
        self.select(min(cands, key=lambda j: abs(self.boxes[j].region.x + self.boxes[j].region.width // 2 - cx)))

    def on_focus(self) -> None:
        if self.selected is None or not self._selectable(self.selected):
            order = self._order()
            self.selected = order[0] if order else None
        self.redraw()

    def on_blur(self) -> None:
        self.redraw()

    def box_at(self, x: int, y: int) -> TensorBox | None:
        """The box under a point of the widget (scrolling counted; the formula's rows hold none)."""
        if y < self._head_n:
            return None
        y = self._content_row(y)
        for b in self.boxes:
            if b.display and b.tensor_name and b.region.contains(x, y):
                return b
        return None

    def on_click(self, event) -> None:
        b = self.box_at(event.x, event.y)
        if b is None:
            return
        self.selected = b.slot
        self.focus()
        self.redraw()
        self.post_message(self.Open(b))


def _filled(base: Style, filters: tuple, background) -> Style:
    """``base`` as the filters leave it (the style of the canvas's blank cells)."""
    return next(iter(_through(Strip([Segment(" ", base)]), filters, background))).style if filters else base


def _through(strip: Strip, filters: tuple, background) -> Strip:
    """``strip`` through the line filters, in order (each result cached by the Strip before it)."""
    for f in filters:
        strip = strip.apply_filter(f, background)
    return strip
