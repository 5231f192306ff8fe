"""Everything of Textual's that nnstep's TUI uses and Textual does not publish, in one place.

Each is looked up once, at import, guarded: a Textual that has moved or renamed it gets a false
flag or None here, and the caller draws Textual's public way (the same screen, a little slower;
``tests/tui/test_compat.py`` forces every fallback and compares the screens). The tests run the
Textual that pyproject.toml pins; the reasons for each are in docs/internals.md ("What a key costs
in the TUI").

- the styles cache's lines (``Widget._styles_cache``: its ``_cache`` and ``_dirty_lines``), so that
  a widget whose lines did not change hands the compositor the same list (widgets.memo.MemoLines);
- a repaint straight to the screen (``Widget._set_dirty`` and the caches ``Widget.refresh``
  clears, ``Screen._compositor`` and ``Screen._dirty_widgets``), skipping three messages a widget
  (widgets.memo.DirectLines);
- the sparkline renderable's buckets and colour blend (``Sparkline._buckets``,
  ``textual.renderables._blend_colors``), to draw its bars one Style a column
  (widgets.curves.spark_lines).
"""
from __future__ import annotations

import asyncio

from textual.screen import Screen
from textual.widget import Widget

# --- the styles cache's lines ----------------------------------------------------------------------
try:
    from textual._styles_cache import StylesCache as _StylesCache
    CAN_REUSE = all(hasattr(_StylesCache(), a) for a in ("_cache", "_dirty_lines"))
except Exception:                         # noqa: BLE001 - any Textual that does not have it
    CAN_REUSE = False


def styles_cache_lines(widget) -> tuple[dict, set]:
    """(the lines by row, the rows to be drawn again) of ``widget``'s styles cache (CAN_REUSE)."""
    sc = widget._styles_cache
    return sc._cache, sc._dirty_lines


# --- a repaint straight to the screen -----------------------------------------------------------------
def _direct_repaint() -> bool:
    """Whether a repaint goes the way Textual 8 takes it (Widget.refresh, then the widget's idle and
    the screen's Update handler), read from the code of Screen and Widget."""
    try:
        return ("_dirty_widgets" in Screen.__init__.__code__.co_names
                and all(a in Widget.__init__.__code__.co_names for a in ("_layout_cache", "_rich_style_cache"))
                and all(hasattr(Widget, a) for a in ("_set_dirty", "clear_cached_dimensions"))
                and hasattr(Screen, "check_idle"))
    except AttributeError:
        return False


DIRECT_REPAINT = _direct_repaint()


def repaint_now(widget, regions) -> bool:
    """Repaint ``regions`` of ``widget`` (all of it: none) as Widget.refresh, the widget's idle and
    the screen's Update handler would, without the widget's Prompt, its Idle and the Update (three
    messages through two tasks). The screen is prompted once the tasks ready now have run
    (call_soon), as its Update would have come: a relayout asked for by the same key reaches it
    first, and one frame shows both. False, having done nothing, where it cannot (not mounted,
    hidden, closing, no screen or event loop, or a Textual without these internals): the caller
    refreshes Textual's way."""
    if not (DIRECT_REPAINT and widget.is_mounted and widget.display and not widget._closing
            and widget.parent is not None):
        return False
    try:
        screen = widget.screen
        loop = asyncio.get_running_loop()
    except Exception:                      # noqa: BLE001 - no screen or no event loop
        return False
    widget._layout_cache.clear()
    widget._set_dirty(*regions)
    widget.clear_cached_dimensions()
    widget._rich_style_cache.clear()
    if screen in screen._compositor:        # (as the Update handler: else the next layout paints it)
        screen._dirty_widgets.add(widget)
        loop.call_soon(screen.check_idle)
    return True


# --- the sparkline's buckets and colours -----------------------------------------------------------------
try:
    from textual.renderables._blend_colors import blend_colors
    from textual.renderables.sparkline import Sparkline as _SparklineRenderable
    sparkline_buckets = _SparklineRenderable._buckets
    SPARK_COLUMNS = callable(blend_colors) and callable(sparkline_buckets)
except Exception:                         # noqa: BLE001
    blend_colors = sparkline_buckets = None
    SPARK_COLUMNS = False
