"""A step that changes no widget's size costs no layout (issue "An instant TUI": a relayout of the
screen repaints every widget, the most a key costs), and the identity cache behind it (by_array)."""
import os

import numpy as np
import pytest

from nnstep.tui import make_app
from nnstep.tui.format import by_array, stats_line

HERE = os.path.dirname(os.path.abspath(__file__))


def sc(name):
    return os.path.join(HERE, "scenarios", name)


@pytest.mark.parametrize("name", ["classic.toml", "large.toml"])
async def test_the_second_step_relayouts_nothing(name):
    app = make_app(sc(name))
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        M = app.session.M
        for _ in range(M):                    # the first step: each op shown once, heights settle
            await pilot.press("n")
        await pilot.pause()
        layouts = []
        orig = type(screen)._refresh_layout

        def counting(self, size=None, scroll=False):
            if self._layout_required:
                layouts.append(app.session.position)
            return orig(self, size, scroll)

        screen._refresh_layout = counting.__get__(screen)
        for _ in range(M):                    # the second step, then back over it
            await pilot.press("n")
            await pilot.pause()
        for _ in range(M):
            await pilot.press("p")
            await pilot.pause()
        assert layouts == [], f"full layouts at {layouts}"


def test_by_array_is_by_identity_and_keeps_the_array():
    cache = by_array(2)
    a = np.array([1.0, 2.0])
    b = np.array([1.0, 2.0])
    cache.put(a, "k", "for a")
    assert cache.get(a, "k") == "for a"
    assert cache.get(b, "k") is None          # equal values, another array: not the same entry
    assert cache.get(a, "other") is None
    cache.put(b, "k", "for b")
    cache.get(a, "k")                         # a used last: b goes first
    c = np.zeros(3)
    cache.put(c, "k", "for c")
    assert cache.get(b, "k") is None and cache.get(a, "k") == "for a" and cache.get(c, "k") == "for c"


def test_stats_line_is_the_same_cached_or_not():
    a = np.arange(12.0).reshape(3, 4) - 5
    first = stats_line(a)
    assert stats_line(a) == first
    # min -5, max 6, mean 0.5, norm sqrt(sum of (i-5)^2 for i = 0..11) = sqrt(146) = 12.08
    assert first == "min -5 max 6 mean 0.5 norm 12.1"
