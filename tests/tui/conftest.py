import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SC = os.path.join(HERE, "scenarios")
os.environ.pop("NO_COLOR", None)
os.environ.setdefault("TEXTUAL_ANIMATIONS", "none")


def sc(name: str) -> str:
    return os.path.join(SC, name)


@pytest.fixture
def classic():
    return sc("classic.toml")


async def settled(app, pilot):
    """Until the app has measured the first step (it does so after the first paint) and painted."""
    for _ in range(50):
        await pilot.pause()
        if app.presize.settled:
            break
    await pilot.pause()


def count_layouts(app) -> list:
    """From now on, the session's position at each full layout of the app's screen."""
    screen = app.screen
    layouts = []
    orig = type(screen)._refresh_layout

    def counting(self, size=None, scroll=False):
        if self._layout_required:
            layouts.append(app.session.position)
        return orig(self, size, scroll)
    screen._refresh_layout = counting.__get__(screen)
    return layouts


@pytest.fixture
def layouts():
    """(settled, count_layouts), for the tests that count full layouts."""
    return settled, count_layouts
