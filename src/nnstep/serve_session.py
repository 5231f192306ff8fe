"""One visitor of `nnstep serve`: their own `nnstep tui` process, started and always ended.

textual-serve's AppService speaks the protocol between the page and the process (screen bytes one
way, keys and sizes the other, file downloads); this subclass owns the process's life:

- The process runs `python -m nnstep tui FILE` directly (no shell in between, which was left
  behind as an orphan when the shell was killed), in a process group of its own, so that ending the
  group ends everything it started; on Linux the kernel also kills it if the server dies.
- Its driver is nnstep's (nnstep/tui/webdriver.py), which ends the process when its input closes.
- Every write to the process is bounded in time: a process that stopped reading cannot hold the
  server up.
- ``stop()`` always returns within ``STOP_SECONDS``: the process is asked to quit, then sent
  SIGTERM, then SIGKILL, and its reader task is cancelled if it still runs.
- Sizes are clamped (nnstep/serve_policy.py), at the start and on every resize.
"""
from __future__ import annotations

import asyncio
import os
import signal
import sys

from textual_serve.app_service import AppService

from .serve_policy import clamp_size

WRITE_SECONDS = 2.0       # longest a write to a session's input may wait for the process to read
QUIT_SECONDS = 1.0        # after "quit", before SIGTERM
TERM_SECONDS = 1.0        # after SIGTERM, before SIGKILL
STOP_SECONDS = QUIT_SECONDS + TERM_SECONDS + 1.5       # stop() returns within this, whatever happens
DRIVER = "nnstep.tui.webdriver:NnstepWebDriver"


def _die_with_parent() -> None:              # runs in the child between fork and exec
    try:
        import ctypes
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)         # PR_SET_PDEATHSIG
    except Exception:                                      # noqa: BLE001 - not Linux: the driver's half
        pass


class Visitor(AppService):
    """A browser tab's session. ``argv`` is the command to run; the rest is AppService's."""

    def __init__(self, argv: list[str], **kwargs) -> None:
        super().__init__(" ".join(argv), **kwargs)
        self.argv = argv
        self.pid: int | None = None
        self._stopping: asyncio.Future | None = None

    def _build_environment(self, width: int = 80, height: int = 24) -> dict[str, str]:
        env = super()._build_environment(*clamp_size(width, height))
        env["TEXTUAL_DRIVER"] = DRIVER
        return env

    async def _open_app_process(self, width: int = 80, height: int = 24):
        self._process = process = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=self._build_environment(width, height),
            start_new_session=True, preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        self._stdin = process.stdin
        self.pid = process.pid
        return process

    async def _write(self, packet: bytes) -> bool:
        stdin = self._stdin
        if stdin is None or stdin.is_closing():
            return False
        try:
            stdin.write(packet)
            await asyncio.wait_for(stdin.drain(), WRITE_SECONDS)
        except (asyncio.TimeoutError, OSError, RuntimeError):
            return False
        return True

    async def send_bytes(self, data: bytes) -> bool:
        return await self._write(self.encode_packet(b"D", data))

    async def send_meta(self, data: dict) -> bool:
        import json
        return await self._write(self.encode_packet(b"M", json.dumps(data).encode("utf-8")))

    async def set_terminal_size(self, width, height) -> None:
        w, h = clamp_size(width, height)
        await self.send_meta({"type": "resize", "width": w, "height": h})

    async def start(self, width, height) -> None:
        await super().start(*clamp_size(width, height))

    async def run(self) -> None:
        """Relay the process's screen to the page until the process ends; then close the page's
        websocket, so that the browser shows the session as ended and its handler returns."""
        try:
            await super().run()
        finally:
            try:
                await asyncio.wait_for(self.remote_close(), 1.0)
            except (asyncio.TimeoutError, Exception):      # noqa: BLE001 - the page may be gone
                pass

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def stop(self) -> None:
        """End the session; safe to call any number of times, from any task, even while cancelled."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop())
        try:
            await asyncio.shield(self._stopping)
        except asyncio.CancelledError:
            pass

    async def _stop(self) -> None:
        try:
            await asyncio.wait_for(self._download_manager.cancel_app_downloads(
                app_service_id=self.app_service_id), 0.5)
        except (asyncio.TimeoutError, Exception):          # noqa: BLE001 - downloads die with it
            pass
        proc = self._process
        if proc is not None and proc.returncode is None:
            await self.send_meta({"type": "quit"})
            if not await self._exited(QUIT_SECONDS):
                self.signal(signal.SIGTERM)
                if not await self._exited(TERM_SECONDS):
                    self.signal(signal.SIGKILL)
                    await self._exited(1.0)
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(task, 0.5)
            except (asyncio.TimeoutError, asyncio.CancelledError, Exception):   # noqa: BLE001
                task.cancel()
        if self._stdin is not None:
            self._stdin.close()

    async def _exited(self, seconds: float) -> bool:
        proc = self._process
        if proc is None:
            return True
        try:
            await asyncio.wait_for(proc.wait(), seconds)
            return True
        except asyncio.TimeoutError:
            return False

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the session's whole process group (nothing if it is gone)."""
        if self.pid is None:
            return
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
