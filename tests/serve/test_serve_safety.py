"""`nnstep serve` in a classroom: a hostile page, a crowd, browsers that vanish, and Ctrl-C with
sessions in any state (docs/errors.md, "Serving a classroom"). Everything runs on loopback against
a real server process, in bounded loops; every session process the server starts is watched through
/proc (its parent, CPU time and memory), and none may be left behind.

What "ended" means here: the process is gone (or a zombie, which holds no memory and runs nothing)."""
from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import socket
import time

import pytest

from nnstep.serve_policy import (MAX_COLUMNS, MAX_ROWS, clamp_size, fetch_refusal, host_refusal,
                                 origin_refusal)
from servehelp import (CHROMIUM, CLASSIC, ERRORS_MD, Watcher, alive, environ, first_frame, http, proc_stat,  # noqa: F401
                       reset, serve, ws_upgrade)

GONE_WITHIN = 5.0          # seconds: a session ends this soon after its browser goes


def wait_gone(pids, since: float, within: float = GONE_WITHIN) -> dict[int, float]:
    """Poll until every pid has ended; {pid: seconds from ``since`` until it was seen gone}."""
    left, took = set(pids), {}
    while left and time.monotonic() - since < within + 5:
        for p in list(left):
            if not alive(p):
                took[p] = time.monotonic() - since
                left.discard(p)
        time.sleep(0.05)
    for p in left:
        took[p] = float("inf")
    return took


def new_session(s, before: set[int], timeout: float = 30) -> int:
    """The one session process that appeared since ``before``."""
    t = time.monotonic()
    while time.monotonic() - t < timeout:
        new = set(s.sessions()) - before
        if new:
            assert len(new) == 1, new
            return new.pop()
        time.sleep(0.02)
    raise AssertionError("no session process started")


# --- the rules, one by one ----------------------------------------------------------------------

@pytest.mark.parametrize("w, h, want", [
    (120, 40, (120, 40)), (20000, 5000, (MAX_COLUMNS, MAX_ROWS)), ("20000", "5000", (400, 150)),
    (0, 0, (20, 5)), (-5, -3, (20, 5)), ("x", None, (80, 24)), (1.5, True, (80, 24)),
    ("9" * 4000, "3", (80, 5)), (" 100 ", "+30", (100, 30))])
def test_sizes_are_clamped(w, h, want):
    assert clamp_size(w, h) == want


@pytest.mark.parametrize("host, served, ok", [
    ("127.0.0.1:8000", "127.0.0.1", True), ("localhost:8000", "127.0.0.1", True),
    ("LOCALHOST.:8000", "127.0.0.1", True), ("[::1]:8000", "127.0.0.1", True),
    ("127.0.0.1", "127.0.0.1", True),                      # no port: the default one, still ours
    ("evil.example:8000", "127.0.0.1", False),             # DNS rebinding: a name that is not ours
    ("evil.example:8000", "0.0.0.0", False),
    ("192.168.1.10:8000", "0.0.0.0", True),                # a student typing the teacher's address
    ("192.168.1.10:8000", "127.0.0.1", False),
    ("127.0.0.1:9999", "127.0.0.1", False), ("", "127.0.0.1", False), (None, "127.0.0.1", False),
    ("a@127.0.0.1:8000", "127.0.0.1", False), ("127.0.0.1:8000/x", "127.0.0.1", False),
    ("teacher.lan:8000", "teacher.lan", True)])
def test_host_rule(host, served, ok):
    assert (host_refusal(host, served, 8000) is None) is ok


@pytest.mark.parametrize("origin, ok", [
    (None, True), ("http://127.0.0.1:8000", True), ("HTTP://127.0.0.1:8000", True),
    ("http://evil.example", False), ("http://127.0.0.1:8001", False), ("https://127.0.0.1:8000", False),
    ("null", False), ("http://localhost:8000", False), ("garbage", False), ("http://127.0.0.1:8000@evil", False)])
def test_origin_rule(origin, ok):
    assert (origin_refusal(origin, "127.0.0.1:8000") is None) is ok


def test_fetch_rule():
    assert fetch_refusal(None, None) is None
    assert fetch_refusal("cross-site", "navigate") is None        # a link from the course's page
    assert fetch_refusal("same-origin", "cors") is None
    assert fetch_refusal("cross-site", "no-cors") and fetch_refusal("cross-site", "cors")
    assert fetch_refusal("cross-site", "websocket")


# --- a hostile page ------------------------------------------------------------------------------

def test_foreign_pages_are_refused_before_any_process_starts(serve):
    s = serve(CLASSIC, "--port", "0")
    port = s.port
    me = f"http://127.0.0.1:{port}"
    refused = [
        ("ws", {"Origin": "http://evil.example"}),
        ("ws", {"Origin": "null"}),
        ("ws", {"Host": f"evil.example:{port}"}),
        ("ws", {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}),   # rebinding
        ("page", {"Origin": "http://evil.example"}),
        ("page", {"Host": f"evil.example:{port}"}),
        ("page", {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "script"}),
        ("static", {"Origin": "http://evil.example"}),
    ]
    for kind, headers in refused:
        if kind == "ws":
            status, c = ws_upgrade(port, headers=headers)
            c.close()
        else:
            status, _, body = http(port, "/static/js/textual.js" if kind == "static" else "/", headers)
            assert body.startswith(b"nnstep serve: refused: "), body[:200]
        assert status == 403, (kind, headers, status)
    time.sleep(0.5)
    assert s.sessions() == [] and not s.seen            # no process was ever started
    assert "refused" in s.err and "Traceback" not in s.err + s.out

    # what the server does let in: its own page, a link followed from another site, its websocket
    status, heads, page = http(port, "/", {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"})
    assert status == 200 and b"data-session-websocket-url" in page
    assert heads["x-frame-options"] == "DENY"            # no other site may frame a session
    assert "frame-ancestors 'none'" in heads["content-security-policy"]
    status, c = ws_upgrade(port, headers={"Origin": me})
    assert status == 101
    s.wait_sessions(1)
    reset(c)
    assert stop_like_sigint(s) == 130


def test_no_directory_listing(serve):
    s = serve(CLASSIC, "--port", "0")
    port = s.port
    for path in ("/static/", "/static", "/static/js/", "/static/css/", "/static/../", "/static/js/../../"):
        status, _, body = http(port, path)
        assert status in (403, 404), (path, status)
        assert b"textual.js" not in body and b"Index of" not in body, path
    status, _, body = http(port, "/static/js/textual.js")
    assert status == 200 and len(body) > 10_000          # the files themselves are served
    assert stop_like_sigint(s) == 130


# --- a crowd -------------------------------------------------------------------------------------

def test_the_class_is_full_beyond_max_sessions(serve):
    """--max-sessions 2: two students work; a third gets the "class is full" page, and its websocket
    no process; once a student closes their tab, the next one gets in."""
    s = serve(CLASSIC, "--port", "0", "--max-sessions", "2")
    url, port = s.url(), s.port
    assert "(at most 2)" in s.out

    async def crowd():
        a = await first_frame(url)
        b = await first_frame(url)
        assert len(s.wait_sessions(2)) == 2
        status, _, page = http(port, "/")
        assert status == 503 and b"The class is full" in page and b"--max-sessions 2" in page
        for _ in range(3):
            status, c = ws_upgrade(port, headers={"Origin": url})
            c.close()
            assert status == 503
        await asyncio.sleep(0.5)
        assert len(s.sessions()) == 2 and len(s.seen) == 2         # the refused ones started nothing
        await a.close()
        t = time.monotonic()
        while len(s.sessions()) != 1 and time.monotonic() - t < GONE_WITHIN:
            await asyncio.sleep(0.05)
        assert len(s.sessions()) == 1
        status, _, page = http(port, "/")
        assert status == 200 and b"data-session-websocket-url" in page
        c = await first_frame(url)
        assert len(s.wait_sessions(2)) == 2
        for v in (b, c):
            await v.close()

    asyncio.run(crowd())
    assert stop_like_sigint(s) == 130
    assert not s.left_behind(), s.left_behind()


def test_a_huge_terminal_size_is_clamped(serve):
    """width=20000&height=5000 (once: a ~550 MB process that took the server down) starts a 400x150
    session; a resize to the same, or to nonsense, keeps it there and keeps it alive."""
    s = serve(CLASSIC, "--port", "0")
    url = s.url()
    rows = re.compile(rb"\x1b\[(\d+);(\d+)H")

    async def visit():
        v = await first_frame(url, "width=20000&height=5000")
        ws = v.ws
        pid = s.wait_sessions(1)[0]
        env = environ(pid)
        assert (env["COLUMNS"], env["ROWS"]) == ("400", "150")
        for resize in ({"width": 20000, "height": 5000}, {"width": "x", "height": [1]}, {"width": -1}):
            await ws.send_str(json.dumps(["resize", resize]))
        await ws.send_str("not json")
        await ws.send_str(json.dumps(["stdin", {"not": "text"}]))
        await ws.send_str(json.dumps(["resize", {"width": 20000, "height": 5000}]))
        await asyncio.sleep(3)                               # whatever the session draws meanwhile
        at = [(int(r), int(c)) for r, c in rows.findall(v.screen)]
        assert at and max(r for r, _ in at) <= MAX_ROWS and max(c for _, c in at) <= MAX_COLUMNS
        assert alive(pid) and proc_stat(pid)[2] < 400, proc_stat(pid)        # resident MB
        await ws.send_str(json.dumps(["ping", "still there?"]))
        t = time.monotonic()
        while not any("still there?" in m for m in v.texts):
            assert time.monotonic() - t < 10 and not v.closed.is_set()
            await asyncio.sleep(0.05)
        assert alive(pid)
        await v.close()

    asyncio.run(visit())
    assert stop_like_sigint(s) == 130
    assert not s.left_behind(), s.left_behind()


# --- browsers that vanish --------------------------------------------------------------------------

def test_forty_visits_that_end_every_way(serve):
    """40 connect/disconnect cycles, each ending one of five ways: a TCP reset right after the
    handshake, a reset once the first screen has arrived, a clean close, a close in the middle of
    the handshake, and a browser that goes silent (no reply to the server's pings). Every session
    ends within 5 s of its browser going, and none is left using the CPU; the server answers all along."""
    s = serve(CLASSIC, "--port", "0")
    url, port = s.url(), s.port
    rnd = random.Random(29)
    gone_at: dict[int, float] = {}
    silent: list[socket.socket] = []
    watcher = Watcher()

    for i in range(40):
        way = ("reset-at-once", "reset-after-screen", "clean-close", "mid-handshake", "silent")[i % 5]
        before = set(s.sessions())
        if way == "mid-handshake":
            c = socket.create_connection(("127.0.0.1", port), timeout=10)
            c.sendall(f"GET /ws?width=80&height=24 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode())
            reset(c)                                         # gone before the request was whole
            continue
        status, c = ws_upgrade(port, headers={"Origin": url})
        assert status == 101
        pid = new_session(s, before)
        watcher.watch(pid)
        if way == "reset-after-screen":
            c.settimeout(30)
            got = b""
            while b"op 1/12" not in got:
                chunk = c.recv(65536)
                assert chunk, f"visit {i}: the connection closed before the first screen ({got[-300:]!r})"
                got += chunk
        elif way == "clean-close":
            time.sleep(rnd.random() * 0.5)
            c.sendall(b"\x88\x80" + os.urandom(4))        # a close frame (RFC 6455: masked, empty), then FIN
            c.close()
        elif way == "silent":
            silent.append(c)                                 # held open, never read, never answered
            gone_at[pid] = time.monotonic()
            continue
        else:
            time.sleep(rnd.random() * 0.3)
        if way != "clean-close":
            reset(c)
        gone_at[pid] = time.monotonic()
    took = watcher.ended_within(gone_at, GONE_WITHIN)
    slow = {p: round(v, 2) for p, v in took.items() if v > GONE_WITHIN}
    print(f"sessions: {len(took)}, slowest end {max(took.values()):.2f} s")
    assert not slow, slow
    assert len(s.seen) == 32                                 # 8 of the 40 never became a session
    assert s.sessions() == [] and not s.left_behind(), s.left_behind()
    for c in silent:
        c.close()
    status, _, _ = http(port, "/")
    assert status == 200                                     # the server answers as before
    assert stop_like_sigint(s) == 130
    assert "Traceback" not in s.err + s.out


def test_an_idle_session_does_not_spin(serve):
    """A session waiting for a key uses next to no CPU (a spinning one used 95%)."""
    s = serve(CLASSIC, "--port", "0")
    url = s.url()

    async def visit():
        v = await first_frame(url)
        pid = s.wait_sessions(1)[0]
        await asyncio.sleep(2.0)                             # the first screen's work is done
        cpu0, t0 = proc_stat(pid)[1], time.monotonic()
        await asyncio.sleep(3.0)
        used = (proc_stat(pid)[1] - cpu0) / (time.monotonic() - t0)
        print(f"idle session: {used:.1%} of a core")
        assert used < 0.25, used
        await v.close()
        return pid

    pid = asyncio.run(visit())
    assert wait_gone([pid], time.monotonic())[pid] <= GONE_WITHIN
    assert stop_like_sigint(s) == 130


def test_sessions_end_when_the_server_is_killed(serve):
    """SIGKILL leaves the server no chance to end its sessions: they end on their own (their input
    closes; on Linux the kernel also kills them with their parent)."""
    s = serve(CLASSIC, "--port", "0")
    url = s.url()

    async def visit():
        a = await first_frame(url)
        b = await first_frame(url)
        pids = s.wait_sessions(2)
        os.kill(s.proc.pid, signal.SIGKILL)
        t = time.monotonic()
        took = wait_gone(pids, t)
        assert max(took.values()) <= GONE_WITHIN, took
        for v in (a, b):
            await v.close()

    asyncio.run(visit())
    assert not s.left_behind(), s.left_behind()


# --- stopping the server with sessions in any state ------------------------------------------------

def stop_like_sigint(s, sig: int = signal.SIGINT) -> int:
    os.kill(s.proc.pid, sig)
    return s.wait(30)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_stopping_with_sessions_in_every_state(serve, sig, code):
    """Three sessions: one at its first screen, one frozen (SIGSTOP: it reads nothing and answers
    no signal but SIGKILL), and one still starting. Ctrl-C (or SIGTERM) ends the server and all of
    them within 5 s, with the usual exit code."""
    s = serve(CLASSIC, "--port", "0")
    url, port = s.url(), s.port

    async def visit():
        a = await first_frame(url)
        b = await first_frame(url)
        frozen = s.wait_sessions(2)[1]
        os.kill(frozen, signal.SIGSTOP)
        before = set(s.sessions())
        status, c = ws_upgrade(port, headers={"Origin": url})
        assert status == 101
        new_session(s, before)
        pids = s.sessions()
        assert len(pids) == 3
        t = time.monotonic()
        os.kill(s.proc.pid, sig)
        got = await asyncio.get_running_loop().run_in_executor(None, s.wait, 30)
        stopped = time.monotonic() - t
        took = wait_gone(pids, t)
        print(f"server stopped in {stopped:.2f} s; sessions ended in {max(took.values()):.2f} s")
        assert got == code
        assert stopped <= GONE_WITHIN and max(took.values()) <= GONE_WITHIN, (stopped, took)
        c.close()
        for v in (a, b):
            await v.close()

    asyncio.run(visit())
    assert not s.left_behind(), s.left_behind()
    assert s.err == ("nnstep: interrupted\n" if code == 130 else "")
    assert "Traceback" not in s.out


def test_the_limits_are_documented():
    doc = open(ERRORS_MD, encoding="utf-8").read()
    for words in ("--max-sessions", "400", "150", "403", "class is full", "5 s"):
        assert words in doc, words
    readme = open(os.path.join(os.path.dirname(ERRORS_MD), "..", "README.md"), encoding="utf-8").read()
    assert "--max-sessions" in readme and "class is full" in readme


def test_a_broken_pipe_does_not_end_the_server(serve):
    """A session's process killed outright, then the page's keys sent on to it, and a browser that
    vanishes while the server writes a screen to it: writes into pipes and sockets whose other end
    is gone. The server (whose command line restores SIGPIPE's default action for the headless
    commands, where a closed pipe should end them quietly) must go on serving."""
    s = serve(CLASSIC, "--port", "0")
    url, port = s.url(), s.port
    with open(f"/proc/{s.proc.pid}/status") as f:
        ignored = int(next(ln for ln in f if ln.startswith("SigIgn:")).split()[1], 16)
    assert ignored & (1 << (signal.SIGPIPE - 1)), "SIGPIPE would end the server at the first write to a closed tab"

    async def visit():
        v = await first_frame(url)
        pid = s.wait_sessions(1)[0]
        os.kill(pid, signal.SIGKILL)
        for _ in range(200):                          # keys for a process that is gone
            try:
                await v.ws.send_str(json.dumps(["stdin", "n"]))
            except Exception:                         # noqa: BLE001 - the server may close the page
                break
            await asyncio.sleep(0.005)
        await v.close()
        w = await first_frame(url, "width=400&height=150")   # a big screen, then a reset mid-write
        w.ws._response.connection.transport.abort()
        await w.session.close()

    asyncio.run(visit())
    time.sleep(1.0)
    assert s.proc.poll() is None, s.state()
    status, _, _ = http(port, "/")
    assert status == 200
    assert stop_like_sigint(s) == 130
