"""The web server of `nnstep serve`: textual-serve's page and protocol, nnstep's rules.

- Every request passes the guard first (nnstep/serve_policy.py): a foreign `Host`, a foreign
  `Origin` or another site fetching the page is answered 403, before any process starts.
- At most ``max_sessions`` sessions run at once. A page opened beyond that says the class is full
  (503), and so does a websocket (no process is started for it).
- A session is a :class:`~nnstep.serve_session.Visitor`: one process per websocket, ended within a
  few seconds of its browser going away (a closed tab, a crash, a reset connection, or silence:
  the server pings every ``HEARTBEAT`` seconds and ends a session whose browser does not answer).
- Ctrl-C or SIGTERM: the server stops listening, ends every session, and exits 130 / 143. A
  watchdog thread ends the process (and every session's process group) ``DEADLINE`` seconds after
  the signal, whatever state the event loop is in.
- No directory listings; no page of this server may be framed by another site.
"""
from __future__ import annotations

import asyncio
import html
import json
import logging
import os
import signal
import sys
import threading

import aiohttp
from aiohttp import web
from aiohttp.web_runner import GracefulExit
from textual_serve.server import Server

from .serve import tui_argv, url_for
from .serve_policy import fetch_refusal, host_refusal, origin_refusal
from .serve_session import Visitor

FULL_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}: the class is full</title>
<style>body {{ background: #0c181f; color: #eee; font: 18px menlo, monospace; margin: 15vh auto;
max-width: 40em; line-height: 1.5 }} a {{ color: #8cf }}</style></head>
<body><h1>The class is full</h1>
<p>{title} is open in {n} browser tabs, as many as this server allows (--max-sessions {n}).</p>
<p>Close a tab you no longer use, then <a href="/">try again</a>.</p></body></html>
"""
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",                          # no other site frames a session
    "Content-Security-Policy": "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
HEARTBEAT = 2.0           # seconds between pings: a browser that vanished is noticed within 3 s
MAX_MESSAGE = 64 * 1024   # the page sends keys and sizes, a few bytes at a time
DEADLINE = 4.5            # after Ctrl-C / SIGTERM the process is gone by then, whatever happens

log = logging.getLogger("nnstep.serve")


class Classroom(Server):
    """textual-serve's server, listening on our socket, under nnstep's rules."""

    def __init__(self, path: str, name: str, host: str, port: int, max_sessions: int, sock,
                 loopback: bool, predict: bool = False, layers=()) -> None:
        self.argv = tui_argv(path, predict, layers)
        super().__init__(" ".join(self.argv), host=host, port=port, title=f"nnstep: {name}")
        self.path, self.name, self.sock, self.loopback = path, name, sock, loopback
        self.max_sessions = max_sessions
        self.url = url_for(host, port)
        self.sessions = 0                      # websockets admitted (each has, or will have, a process)
        self.visitors: set[Visitor] = set()
        self.sockets: set[web.WebSocketResponse] = set()
        self.exit_code = 0
        self.refused = 0                       # requests the guard turned away
        self.done = False                      # the loop has finished: the deadline has nothing to do

    # --- the guard --------------------------------------------------------------------------------

    @web.middleware
    async def guard(self, request: web.Request, handler):
        why = (host_refusal(request.headers.get("Host"), self.host, self.port)
               or origin_refusal(request.headers.get("Origin"), request.headers.get("Host", ""), request.scheme)
               or fetch_refusal(request.headers.get("Sec-Fetch-Site"), request.headers.get("Sec-Fetch-Mode")))
        if why:
            self.refused += 1              # (a hostile page may retry in a loop: the first few are
            if self.refused <= 20 or self.refused % 1000 == 0:      # logged, then one in a thousand)
                log.warning("refused %s %s: %s%s", request.method, request.path[:80], why,
                            f" ({self.refused} refused so far)" if self.refused > 20 else "")
            return web.Response(status=403, text=f"nnstep serve: refused: {why}\n")
        return await handler(request)

    @staticmethod
    async def _headers(request: web.Request, response: web.StreamResponse) -> None:
        for k, v in SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)

    async def _make_app(self) -> web.Application:
        import aiohttp_jinja2
        import jinja2
        app = web.Application(middlewares=[self.guard], client_max_size=MAX_MESSAGE)
        aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(self.templates_path))
        app.add_routes([
            web.get("/", self.handle_index, name="index"),
            web.get("/ws", self.handle_websocket, name="websocket"),
            web.get("/download/{key}", self.handle_download, name="download"),
            web.static("/static", self.statics_path, show_index=False, name="static"),
        ])
        app.on_response_prepare.append(self._headers)
        app.on_shutdown.append(self.on_shutdown)
        return app

    # --- pages and sessions -----------------------------------------------------------------------

    def full(self) -> bool:
        return self.sessions >= self.max_sessions

    def full_page(self) -> web.Response:
        return web.Response(status=503, content_type="text/html",
                            text=FULL_PAGE.format(title=html.escape(self.title), n=self.max_sessions))

    async def handle_index(self, request: web.Request):
        if self.full():
            return self.full_page()
        # The page holds the websocket's absolute URL: the address the browser used (the guard
        # has checked it is this server's), so a student who opens http://TEACHER:8000 connects there.
        self.public_url = f"{request.scheme}://{request.host}"
        return await Server.handle_index(self, request)

    async def handle_websocket(self, request: web.Request) -> web.StreamResponse:
        if self.exit_code or self.full():
            return self.full_page() if not self.exit_code else web.Response(status=503, text="stopping\n")
        self.sessions += 1
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=MAX_MESSAGE)
        visitor: Visitor | None = None
        try:
            await ws.prepare(request)
            self.sockets.add(ws)
            visitor = Visitor(self.argv, write_bytes=ws.send_bytes, write_str=ws.send_str, close=ws.close,
                              download_manager=self.download_manager)
            self.visitors.add(visitor)
            await visitor.start(request.query.get("width"), request.query.get("height"))
            await self._relay(ws, visitor)
        except (asyncio.CancelledError, ConnectionError, aiohttp.ClientError):
            pass
        except Exception as e:                 # noqa: BLE001 - one session's trouble is not the server's
            log.warning("a session ended on %s: %s", type(e).__name__, str(e)[:200])
        finally:
            if visitor is not None:
                await visitor.stop()
                self.visitors.discard(visitor)
            self.sessions -= 1
            self.sockets.discard(ws)
            if ws.prepared and not ws.closed:
                try:
                    await asyncio.wait_for(ws.close(), 1.0)
                except (asyncio.TimeoutError, asyncio.CancelledError, Exception):   # noqa: BLE001
                    pass
        if not ws.prepared:                    # the browser left during the handshake
            return web.Response(status=499)
        return ws

    async def _relay(self, ws: web.WebSocketResponse, visitor: Visitor) -> None:
        """The page's messages to the session, until either side goes. Anything malformed is ignored."""
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                if msg.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE):
                    break
                continue
            try:
                envelope = json.loads(msg.data)
            except ValueError:
                continue
            if not isinstance(envelope, list) or not envelope:
                continue
            kind, data = envelope[0], (envelope[1] if len(envelope) > 1 else None)
            if kind == "stdin" and isinstance(data, str):
                await visitor.send_bytes(data.encode("utf-8", "replace"))
            elif kind == "resize" and isinstance(data, dict):
                await visitor.set_terminal_size(data.get("width"), data.get("height"))
            elif kind == "ping":
                await ws.send_json(["pong", data if isinstance(data, (str, int, float)) else None])
            elif kind == "blur":
                await visitor.blur()
            elif kind == "focus":
                await visitor.focus()
            if not visitor.running:
                break

    # --- starting and stopping --------------------------------------------------------------------

    async def on_startup(self, app) -> None:       # textual-serve prints a logo here
        pass

    async def on_shutdown(self, app) -> None:
        """Before the loop closes: end every session (each within a few seconds), and close the pages."""
        await asyncio.gather(*(v.stop() for v in list(self.visitors)), return_exceptions=True)
        await asyncio.gather(*(asyncio.wait_for(ws.close(code=aiohttp.WSCloseCode.GOING_AWAY), 1.0)
                               for ws in list(self.sockets)), return_exceptions=True)

    def listening(self, *_args) -> None:
        out = sys.stdout
        out.write(f"nnstep: serving {self.path} ({self.name}) on {self.url}\n")
        if not self.loopback:
            out.write(f"  open it from another machine as http://<this machine's address>:{self.port}\n")
        out.write(f"  each browser tab gets its own session (at most {self.max_sessions}); Ctrl-C stops the server\n")
        out.flush()

    def stop(self, code: int) -> None:
        if self.exit_code:                    # a second Ctrl-C while stopping: the deadline holds
            return
        self.exit_code = code
        threading.Thread(target=self._deadline, daemon=True, name="nnstep-serve-deadline").start()
        raise GracefulExit()

    def _deadline(self) -> None:
        """DEADLINE seconds after the signal: end every session's group and the process, if the
        event loop has not managed to."""
        threading.Event().wait(DEADLINE)
        if self.done:
            return
        for v in list(self.visitors):
            v.signal(signal.SIGKILL)
        if self.exit_code == 130:
            sys.stderr.write("nnstep: interrupted\n")
        try:
            sys.stderr.flush()
            sys.stdout.flush()
        finally:
            os._exit(self.exit_code)

    def serve(self, debug: bool = False) -> int:
        logging.basicConfig(level=logging.WARNING, format="nnstep serve: %(message)s")
        logging.getLogger("aiohttp.access").setLevel(logging.ERROR)
        # "Application failed to start" is textual-serve's word for a session ended before its
        # first screen: a tab closed while loading, which is no error (a session's own errors
        # still reach the server's output: its stderr is relayed when it ends)
        logging.getLogger("textual-serve").setLevel(logging.CRITICAL)
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        loop.add_signal_handler(signal.SIGINT, self.stop, 130)
        loop.add_signal_handler(signal.SIGTERM, self.stop, 143)
        try:
            web.run_app(self._make_app(), sock=self.sock, handle_signals=False, loop=loop,
                        print=self.listening, access_log=None, shutdown_timeout=1.0)
        finally:
            self.done = True
            self.sock.close()
            if self.exit_code:
                # stopped by a signal: a second Ctrl-C from here on (the loop and its handlers are
                # gone, the process is on its way out) must not kill it with the signal instead
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if self.exit_code == 130:
            sys.stderr.write("nnstep: interrupted\n")
        return self.exit_code
