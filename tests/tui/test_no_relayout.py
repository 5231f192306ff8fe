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


@pytest.mark.slow
@pytest.mark.parametrize("name", ["classic.toml", "large.toml"])
async def test_the_second_step_relayouts_nothing(name, layouts):
    _, count = layouts
    app = make_app(sc(name))
    async with app.run_test(size=(120, 40)) as pilot:
        M = app.session.M
        for _ in range(M):                    # the first step: each op shown once, heights settle
            await pilot.press("n")
        await pilot.pause()
        layouts = count(app)
        for _ in range(M):                    # the second step, then back over it
            await pilot.press("n")
            await pilot.pause()
        for _ in range(M):
            await pilot.press("p")
            await pilot.pause()
        assert layouts == [], f"full layouts at {layouts}"


@pytest.mark.parametrize("name,size", [("classic.toml", (120, 40)), ("adam.toml", (120, 40)),
                                       ("lm.toml", (120, 40)), ("conv2d-flatten-linear.toml", (120, 40)),
                                       ("classic.toml", (80, 24))])
@pytest.mark.slow
async def test_the_first_step_relayouts_nothing(name, size, layouts):
    """The app measures the first step's ops after the first paint (tui/presize.py), so the
    operation panel has its height before the user steps: the first pass through a step, which
    grew the panel op by op (two full layouts each time), costs no layout either."""
    app = make_app(sc(name))
    async with app.run_test(size=size) as pilot:
        settled, count = layouts
        await settled(app, pilot)
        layouts = count(app)
        height = app.query_one("#op").outer_size.height
        for _ in range(app.session.M):
            await pilot.press("n")
            await pilot.pause()
            assert app.query_one("#op").outer_size.height == height, app.session.position
        assert layouts == [], f"full layouts at {layouts}"


@pytest.mark.slow
async def test_a_new_size_or_scenario_is_measured_again(tmp_path, layouts):
    """After a resize, and after r reloads a file that now holds another network, the first step
    again costs no layout (the heights are measured for the new size, the new scenario)."""
    import shutil
    path = tmp_path / "net.toml"
    shutil.copyfile(sc("classic.toml"), path)
    app = make_app(str(path))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.resize_terminal(100, 30)
        settled, count = layouts
        await settled(app, pilot)
        layouts = count(app)
        for _ in range(app.session.M):
            await pilot.press("n")
            await pilot.pause()
        assert layouts == [], f"after a resize: full layouts at {layouts}"
        shutil.copyfile(sc("adam.toml"), path)
        await pilot.press("r")
        await settled(app, pilot)
        layouts.clear()
        for _ in range(app.session.M):
            await pilot.press("n")
            await pilot.pause()
        assert layouts == [], f"after a reload: full layouts at {layouts}"


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
