"""When Python's cyclic garbage collector runs while the app is up: while the user reads.

Left as it is, it ran during keys: on the 784-256-128-10 net a collection of the middle generation
(1.5-2.4 ms) came about once a key, and of the whole heap (~20 ms: the caches of strips) about
once in ten (pty timeline, gc.callbacks). Now the young generations are collected when the
look-ahead is done, and the whole heap after a second without a key; a key allocates far fewer
objects than YOUNG."""
from __future__ import annotations

import gc


class GcPolicy:
    YOUNG = 100_000          # allocations between automatic collections (Python's default: 700)
    ALL_AFTER = 1.0          # s without a key before the whole heap is collected

    def __init__(self, app):
        self.app = app
        self.was = None              # the collector's thresholds before the app (see settle)
        self.stale = False           # a reload: settle again
        self.timer = None

    def settle(self) -> None:
        """What start-up made lives as long as the app: collect it once and freeze it (never scanned
        again); from now on collect when idle (above). Again after a reload: the old scenario's
        objects are garbage now (frozen, they would never be collected)."""
        if self.was is None:
            self.was = gc.get_threshold()
            gc.set_threshold(self.YOUNG, *self.was[1:])
        self.stale = False
        gc.unfreeze()
        gc.collect()
        gc.freeze()

    def idle(self) -> None:
        """The look-ahead is done: collect the young generations now (the first time, and after a
        reload, settle: the first frame has been written by then, a collection holds the writer
        thread back), and the whole heap if no key comes for ALL_AFTER."""
        if self.was is None or self.stale:
            lesson = self.app.lesson
            if self.was is None and (lesson.asks or lesson.notes):
                from .widgets.lesson import warm_up
                warm_up()                      # (Markdown, for the first note: see widgets.lesson)
            self.settle()
        else:
            gc.collect(1)
        if self.timer is not None:
            self.timer.stop()
        self.timer = self.app.set_timer(self.ALL_AFTER, gc.collect)

    def key_came(self) -> None:
        """No collection of the whole heap now: a key came."""
        if self.timer is not None:
            self.timer.stop()
            self.timer = None

    def restore(self) -> None:
        """The collector as it was (the process may run on, e.g. tests)."""
        if self.was is not None:
            gc.set_threshold(*self.was)
            gc.unfreeze()
            self.was = None
