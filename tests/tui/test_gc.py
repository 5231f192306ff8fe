"""Python's cyclic garbage collector runs while the user reads, not during a key (tui/gcpolicy.py:
GcPolicy.settle, idle): what start-up made is frozen, the young generations are collected when
the look-ahead is done, and the collector is as it was once the app has gone."""
import gc
import os

import pytest

from nnstep.tui import make_app
from nnstep.tui import gcpolicy

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MLP = os.path.join(ROOT, "bench", "mlp_784_256_128_10.toml")


@pytest.mark.slow
async def test_collections_come_between_keys_and_the_collector_is_restored(monkeypatch):
    was = gc.get_threshold()
    explicit = [False]
    real_collect = gc.collect

    def collect(*a):                      # the app's own (idle) collections
        explicit[0] = True
        try:
            return real_collect(*a)
        finally:
            explicit[0] = False
    monkeypatch.setattr(gcpolicy.gc, "collect", collect)
    automatic = []

    def seen(phase, info):
        if phase == "start" and not explicit[0]:
            automatic.append(info["generation"])
    app = make_app(MLP)
    async with app.run_test(size=(120, 40)) as pilot:
        for _ in range(3):
            await pilot.pause()
        await pilot.pause(0.2)
        assert gc.get_threshold()[0] == app.gc_policy.YOUNG and gc.get_freeze_count() > 0
        idle = [0]
        real_idle = app.gc_policy.idle

        def counted():
            idle[0] += 1
            real_idle()
        app.gc_policy.idle = counted
        gc.callbacks.append(seen)
        try:
            for key in "nnnnnnsnnSpnnS":       # the forward pass, the loss, back and on, two steps
                await pilot.press(key)
                await pilot.pause(0.25)         # the reader reads: the look-ahead runs, then the collection
        finally:
            gc.callbacks.remove(seen)
        assert automatic == [], f"automatic collections during the keys: generations {automatic}"
        assert idle[0] >= 10                  # (collected when the look-ahead was done, after each key)
    assert gc.get_threshold() == was and gc.get_freeze_count() == 0


@pytest.mark.slow
async def test_a_reload_leaves_the_old_scenario_to_the_collector(tmp_path):
    """The old session is frozen with the rest of start-up: a reload collects and freezes again,
    so that it goes, even held in a reference cycle (which only the collector frees, and never a
    frozen one)."""
    import shutil
    import weakref
    path = tmp_path / "classic.toml"
    shutil.copy(os.path.join(ROOT, "tests", "tui", "scenarios", "mazur.toml"), path)
    app = make_app(str(path))
    async with app.run_test(size=(120, 40)) as pilot:
        for _ in range(3):
            await pilot.pause()
        await pilot.pause(0.2)
        old = weakref.ref(app.session)
        app.session.cycle = [app.session]        # (frozen once the app settled again, below)
        app.gc_policy.settle()
        await pilot.press("r")
        for _ in range(3):
            await pilot.pause()
        await pilot.pause(0.2)
        assert app.session is not old() and "reloaded" in app.status[0]
        assert old() is None, "the old session outlived the reload"


async def test_the_whole_heap_is_collected_after_a_pause(monkeypatch):
    """A second without a key (here a twentieth): a collection of the oldest generation, the app
    still there."""
    app = make_app(os.path.join(ROOT, "tests", "tui", "scenarios", "mazur.toml"))
    monkeypatch.setattr(app.gc_policy, "ALL_AFTER", 0.05)
    full = []

    def seen(phase, info):
        if phase == "start" and info["generation"] == 2:
            full.append(1)
    async with app.run_test(size=(120, 40)) as pilot:
        for _ in range(3):
            await pilot.pause()
        await pilot.pause(0.3)
        await pilot.press("n")
        gc.callbacks.append(seen)
        try:
            await pilot.pause(0.4)
        finally:
            gc.callbacks.remove(seen)
        assert full, "no collection of the whole heap after the pause"
        await pilot.press("n")
        await pilot.pause()
        assert app.session.position == (1, 2)
