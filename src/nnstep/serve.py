"""`nnstep serve FILE`: the same TUI as a web page, through textual-serve (README, "In a classroom").

Order matters, so that a mistake never leaves a half-started server:
1. the scenario loads (a bad one is the usual one-line error and exit 2, before anything listens);
2. textual-serve is imported (it is the optional extra `serve`; missing, the error says how to
   install it), lazily, so that the other commands' import time is unchanged;
3. the socket is bound here (a port in use is a one-line error and exit 2) and handed to aiohttp;
4. only once it listens is the URL printed.

Every browser visit runs its own `python -m nnstep tui FILE` process (one per websocket), so each
visitor has their own session and their keys reach only their own process. What is let in, how many
sessions run, and how each one ends are nnstep/serve_policy.py, nnstep/serve_app.py and
nnstep/serve_session.py. Ctrl-C (SIGINT) or SIGTERM stops the server and every visitor's process
within 5 s: exit 130 / 143, no traceback.
"""
from __future__ import annotations

import ipaddress
import os
import signal
import socket
import sys

from .errors import ScenarioError
from .serve_policy import DEFAULT_MAX_SESSIONS

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


def tui_argv(path: str, predict: bool = False, layers=()) -> list[str]:
    """The command each visitor's session runs: this Python, this nnstep, FILE (and --predict, and
    each --layers file the server was given)."""
    extra = [a for f in layers for a in ("--layers", os.path.abspath(f))]
    return [sys.executable, "-m", "nnstep", "tui", os.path.abspath(path)] + (["--predict"] if predict else []) + extra


def cmd_serve(path: str, host: str, port: int, max_sessions: int = DEFAULT_MAX_SESSIONS,
              predict: bool = False, layers=()) -> int:
    from .tui.launch import _load
    sc = _load(path)                        # a bad scenario: ScenarioError, exit 2, nothing listens
    try:
        from textual_serve import server  # noqa: F401 - the extra `serve`, with aiohttp
        import aiohttp  # noqa: F401
    except ImportError as e:
        missing = getattr(e, "name", None) or "textual_serve"
        raise ScenarioError(f"serve: needs textual-serve, which is not installed ({missing} is missing); "
                            f"install it with: {INSTALL_HINT}") from None
    # The command line gives SIGPIPE its default action, so that a headless command piped into
    # `head` ends quietly. A server writes into sockets and pipes whose other end may be gone at
    # any moment (a closed tab, a killed session): there the signal would end it on the spot,
    # silently, with every session. Ignored, such a write is an error the connection handles.
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    sock = bind(host, port)
    port = sock.getsockname()[1]            # --port 0: the free port the system chose
    loopback = is_loopback(host)
    if not loopback:
        sys.stderr.write(f"nnstep: warning: --host {host} is not loopback: anyone who can reach this "
                         f"machine on port {port} can open the TUI (use --host 127.0.0.1 to keep it local)\n")
        sys.stderr.flush()
    from .serve_app import Classroom
    if predict or sc.asks:                  # (each session checks its questions: a bad one, once, here)
        from .debugger.lesson import Lesson
        from .debugger.session import Session
        Lesson(Session(sc), predict=predict)
    room = Classroom(path, sc.name or os.path.basename(path), host, port, max_sessions, sock, loopback,
                     predict=predict, layers=layers)
    return room.serve()
