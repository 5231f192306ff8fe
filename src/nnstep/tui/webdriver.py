"""The driver of a visitor's `nnstep tui` under `nnstep serve`: Textual's WebDriver, made sure to end.

Textual's WebDriver turns SIGTERM into a polite "exit" message to the app, and when its input
(the server's pipe) closes it just stops reading, leaving the app running with nobody to draw for.
A session whose server or browser went away must end, however busy the app is:

- its input closes (the server stopped or died): the app is asked to exit, and the process ends
  within ``GRACE`` seconds whether or not the app managed to;
- SIGTERM or SIGINT: the same;
- its output pipe breaks (nobody reads the screen any more): the same.

The server also ends a session's whole process group itself (nnstep/serve_session.py); this is the
session's own half, for when the server cannot (it was killed)."""
from __future__ import annotations

import asyncio
import os
import signal
import threading

from textual import messages
from textual.drivers.web_driver import WebDriver

GRACE = 2.0                      # seconds the app has to exit before the process ends anyway


class NnstepWebDriver(WebDriver):
    _leaving = False

    def __init__(self, app, *args, **kw):
        super().__init__(app, *args, **kw)
        self.nnstep_app = app                   # (the driver's own reference to it is Textual's)

    def start_application_mode(self) -> None:
        super().start_application_mode()         # it sets SIGINT/SIGTERM to a polite exit only
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.leave, 128 + sig)

    def run_input_thread(self) -> None:
        super().run_input_thread()
        if not self.exit_event.is_set():       # the input ended on its own: the server is gone
            self.leave(0)

    def write(self, data: str) -> None:
        try:
            super().write(data)
        except OSError:                        # a broken pipe: nobody reads this screen any more
            self.leave(0)

    def write_meta(self, data: dict[str, object]) -> None:
        try:
            super().write_meta(data)
        except OSError:
            self.leave(0)

    def leave(self, code: int = 0) -> None:
        """Ask the app to exit, and end the process after GRACE seconds if it has not."""
        if self._leaving:
            return
        self._leaving = True
        try:
            self.nnstep_app.post_message(messages.ExitApp())
        except Exception:                      # noqa: BLE001 - the app may be half torn down
            pass
        t = threading.Timer(GRACE, os._exit, args=(code,))
        t.daemon = True
        t.start()
