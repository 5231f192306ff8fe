"""`nnstep serve FILE` (SPEC §10): the same TUI as a web page, through textual-serve.

Order matters, so that a mistake never leaves a half-started server:
1. the scenario loads (a bad one is the usual one-line error and exit 2, before anything listens);
2. textual-serve is imported (it is the optional extra `serve`; missing, the error says how to
   install it), lazily, so that the other commands' import time is unchanged;
3. the socket is bound here (a port in use is a one-line error and exit 2) and handed to aiohttp;
4. only once it listens is the URL printed.

Every browser visit runs its own `python -m nnstep tui FILE` process (textual-serve starts one per
websocket), so each visitor has their own session and their keys reach only their own process.
Ctrl-C (SIGINT) stops the server and every visitor's process: exit 130, no traceback.
"""
from __future__ import annotations

import ipaddress
import os
import shlex
import signal
import socket
import sys

from .errors import ScenarioError

INSTALL_HINT = "pip install 'nnstep[serve]'"


def is_loopback(host: str) -> bool:
    """True when ``host`` can only be reached from this machine (127.0.0.0/8, ::1, localhost)."""
    h = host.strip("[]")
    if h.lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(h, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    addrs = {ipaddress.ip_address(i[4][0].split("%")[0]) for i in infos}
    return bool(addrs) and all(a.is_loopback for a in addrs)


def url_for(host: str, port: int) -> str:
    h = host.strip("[]")
    if ":" in h:                                   # an IPv6 address
        h = f"[{h}]"
    return f"http://{h}:{port}"


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on (host, port), or a ScenarioError naming the argument."""
    h = host.strip("[]")
    try:
        infos = socket.getaddrinfo(h, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP,
                                   flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as e:
        raise ScenarioError(f"serve: --host {host}: no such host ({_reason(e)})") from None
    last: OSError | None = None
    for family, type_, proto, _, addr in infos:
        s = socket.socket(family, type_, proto)
        try:
            if os.name != "nt":
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as aiohttp does
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind(addr)
            s.listen(128)
            s.setblocking(False)
            return s
        except OSError as e:
            s.close()
            last = e
    import errno
    if last is not None and last.errno == errno.EADDRINUSE:
        raise ScenarioError(f"serve: --port {port}: {h}:{port} is already in use "
                            "(stop what is using it, or choose another --port)")
    if last is not None and last.errno == errno.EACCES:
        raise ScenarioError(f"serve: --port {port}: not allowed to listen on {h}:{port} "
                            "(ports below 1024 need root; choose another --port)")
    if last is not None and last.errno == errno.EADDRNOTAVAIL:
        raise ScenarioError(f"serve: --host {host}: not an address of this machine "
                            "(127.0.0.1: this machine only; 0.0.0.0: all its networks)")
    raise ScenarioError(f"serve: --host {host}: cannot listen there ({_reason(last)})")


def _reason(e: BaseException | None) -> str:
    if e is None:
        return "no address"
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


def tui_command(path: str) -> str:
    """The shell command textual-serve runs for each visitor: this Python, this nnstep, FILE."""
    return " ".join(shlex.quote(a) for a in (sys.executable, "-m", "nnstep", "tui", os.path.abspath(path)))


def cmd_serve(path: str, host: str, port: int) -> int:
    from .tui.launch import _load
    sc = _load(path)                        # a bad scenario: ScenarioError, exit 2, nothing listens
    try:
        from textual_serve import server as ts_server
        from textual_serve.server import Server
        from aiohttp import web
        from aiohttp.web_runner import GracefulExit
    except ImportError as e:
        missing = getattr(e, "name", None) or "textual_serve"
        raise ScenarioError(f"serve: needs textual-serve, which is not installed ({missing} is missing); "
                            f"install it with: {INSTALL_HINT}") from None

    sock = bind(host, port)
    port = sock.getsockname()[1]            # --port 0: the free port the system chose
    url = url_for(host, port)
    loopback = is_loopback(host)
    name = sc.name or os.path.basename(path)

    visitors: set = set()

    class VisitorApp(ts_server.AppService):
        """One visitor's `nnstep tui` process, remembered so that stopping the server stops it."""

        async def start(self, width: int, height: int) -> None:
            await super().start(width, height)
            visitors.add(self)

    class NnstepServer(Server):
        """textual-serve's server, listening on our socket, printing our own lines."""

        exit_code = 0

        async def on_startup(self, app) -> None:      # textual-serve prints a logo here
            pass

        async def on_shutdown(self, app) -> None:
            """Before the loop closes: tell each visitor's process to quit, and wait for it (so
            that no process outlives the server, and none exits after the loop is gone)."""
            import asyncio
            await asyncio.gather(*(v.stop() for v in visitors), return_exceptions=True)
            for v in list(visitors):
                proc = getattr(v, "_process", None)
                if proc is None:
                    continue
                try:
                    await asyncio.wait_for(proc.wait(), 5)
                except (asyncio.TimeoutError, ProcessLookupError):
                    try:
                        proc.kill()
                        await proc.wait()
                    except ProcessLookupError:
                        pass
            visitors.clear()

        async def handle_index(self, request):
            # The page holds the websocket's absolute URL: build it from the address the
            # browser used, so a student who opens http://TEACHER:8000 connects back there.
            self.public_url = f"{request.scheme}://{request.host}"
            return await Server.handle_index(self, request)

        def listening(self, *_args) -> None:
            out = sys.stdout
            out.write(f"nnstep: serving {path} ({name}) on {url}\n")
            if not loopback:
                out.write(f"  open it from another machine as http://<this machine's address>:{port}\n")
            out.write("  each browser tab gets its own session; Ctrl-C stops the server\n")
            out.flush()

        def stop(self, code: int) -> None:
            if self.exit_code:              # a second Ctrl-C while stopping: the first one is enough
                return                      # (stopping takes at most ~8 s: 5 to quit, 3 for aiohttp)
            self.exit_code = code
            raise GracefulExit()

        def serve(self, debug: bool = False) -> None:
            import asyncio
            import logging
            logging.basicConfig(level=logging.WARNING, format="nnstep serve: %(message)s")
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            loop.add_signal_handler(signal.SIGINT, self.stop, 130)
            loop.add_signal_handler(signal.SIGTERM, self.stop, 143)
            web.run_app(self._make_app(), sock=sock, handle_signals=False, loop=loop,
                        print=self.listening, access_log=None, shutdown_timeout=3.0)

    if not loopback:
        sys.stderr.write(f"nnstep: warning: --host {host} is not loopback: anyone who can reach this "
                         f"machine on port {port} can open the TUI (use --host 127.0.0.1 to keep it local)\n")
        sys.stderr.flush()
    ts_server.AppService = VisitorApp       # the class textual-serve makes for each websocket
    server = NnstepServer(tui_command(path), host=host, port=port, title=f"nnstep: {name}")
    try:
        server.serve()
    finally:
        sock.close()
        if server.exit_code:
            # stopped by a signal: a second Ctrl-C from here on (the loop and its handlers are gone,
            # the process is on its way out) must not kill it with the signal instead of its code
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if server.exit_code == 130:
        sys.stderr.write("nnstep: interrupted\n")
    return server.exit_code
