"""The Textual front end. ``make_app(path)`` returns the app for a scenario file, ready for
``app.run()``, ``app.run_test()`` or pytest-textual-snapshot's ``snap_compare``::

    from nnstep.tui import make_app

    def test_lesson(snap_compare):
        assert snap_compare(make_app("lesson.toml"), press=["s", "s"])
"""


def make_app(path_or_scenario, **kw):
    from .app import make_app as _make
    return _make(path_or_scenario, **kw)


__all__ = ["make_app"]
