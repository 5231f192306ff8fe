"""Helpers for the tests of `nnstep serve`: a server as a real subprocess, its sessions' processes
as the kernel sees them (/proc), and websockets opened the way textual-serve's page opens them.

Each server runs in a process group of its own, and each visitor's `nnstep tui` in another (the
server starts them so, to end each whole). A test's server is killed with its group when the test
ends; its sessions die with it (the kernel's parent-death signal) and are killed by pid too, so a
failed test leaves nothing running."""
from __future__ import annotations

import asyncio
import base64
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLASSIC = os.path.join(ROOT, "scenarios", "classic.toml")
ERRORS_MD = os.path.join(ROOT, "docs", "errors.md")
CHROMIUM = "/usr/bin/chromium"
URL = re.compile(r"on (http://\S+)$", re.M)
TICKS = os.sysconf("SC_CLK_TCK")


def proc_stat(pid: int) -> tuple[int, float, int] | None:
    """(parent pid, CPU seconds used, resident MB) of a live process, None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    if fields[0] == "Z":                        # a zombie has ended; only its exit status is left
        return None
    ppid, utime, stime, rss = int(fields[1]), int(fields[11]), int(fields[12]), int(fields[21])
    return ppid, (utime + stime) / TICKS, rss * os.sysconf("SC_PAGE_SIZE") // 2**20


def alive(pid: int) -> bool:
    return proc_stat(pid) is not None


def children(pid: int) -> list[int]:
    """The live processes whose parent is ``pid``."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = proc_stat(int(d))
            if st is not None and st[0] == pid:
                out.append(int(d))
    return sorted(out)


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        items = f.read().split(b"\0")
    return dict(i.decode(errors="replace").split("=", 1) for i in items if b"=" in i)


class Served:
    """One `nnstep serve` subprocess, its output in files (no pipe can fill up and block it)."""

    def __init__(self, tmp_path, *args: str):
        self.out_path = tmp_path / f"serve-{time.monotonic_ns()}.out"
        self.err_path = self.out_path.with_suffix(".err")
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "nnstep", "serve", *args], stdout=out,
                                         stderr=err, stdin=subprocess.DEVNULL, cwd=ROOT,
                                         start_new_session=True)
        self.pgid = self.proc.pid               # the session leader's pid is its group's id
        self.seen: set[int] = set()             # every session process this test has seen

    @property
    def out(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def err(self) -> str:
        return self.err_path.read_text(errors="replace")

    def url(self, timeout: float = 60) -> str:
        """The URL the server printed once it listens."""
        t = time.monotonic()
        while time.monotonic() - t < timeout:
            m = URL.search(self.out)
            if m:
                return m.group(1)
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited {self.proc.returncode}: {self.out!r} {self.err!r}")
            time.sleep(0.05)
        raise AssertionError(f"no URL printed in {timeout} s: {self.out!r} {self.err!r}")

    @property
    def port(self) -> int:
        return int(self.url().rsplit(":", 1)[1])

    def sessions(self) -> list[int]:
        """The server's live `nnstep tui` processes (one per visitor)."""
        pids = [p for p in children(self.proc.pid) if " -m nnstep tui " in f" {cmdline(p)} "]
        self.seen.update(pids)
        return pids

    def wait_sessions(self, n: int, timeout: float = 30) -> list[int]:
        t = time.monotonic()
        while time.monotonic() - t < timeout:
            got = self.sessions()
            if len(got) == n:
                return got
            time.sleep(0.05)
        raise AssertionError(f"{len(self.sessions())} sessions after {timeout} s, want {n}")

    def left_behind(self) -> list[str]:
        """Every session process seen that is still alive, with its state (none should be)."""
        return [f"{p} {proc_stat(p)} {cmdline(p)}" for p in sorted(self.seen) if alive(p)]

    def state(self) -> str:
        """For an assertion's message: whether the server runs, and what it printed."""
        rc = self.proc.poll()
        return (f"server {'running' if rc is None else f'exited {rc}'}; stdout: {self.out[-1500:]!r}; "
                f"stderr: {self.err[-1500:]!r}")

    def wait(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout)

    def group_alive(self) -> bool:
        try:
            os.killpg(self.pgid, 0)
            return True
        except ProcessLookupError:
            return False

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.sessions()
        for pid in [self.pgid, *self.seen]:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass


@pytest.fixture
def serve(tmp_path):
    started: list[Served] = []

    def start(*args: str) -> Served:
        s = Served(tmp_path, *args)
        started.append(s)
        return s

    yield start
    for s in started:
        s.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


def stop_like_ctrl_c(s: Served) -> int:
    """What a terminal's Ctrl-C does: SIGINT to the whole foreground process group."""
    os.killpg(s.pgid, signal.SIGINT)
    return s.wait(30)


def http(port: int, path: str = "/", headers: dict[str, str] | None = None, timeout: float = 10):
    """A raw HTTP/1.1 GET (so that any Host and Origin can be sent): (status, headers, body)."""
    heads = {"Host": f"127.0.0.1:{port}", "Connection": "close", **(headers or {})}
    req = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in heads.items()) + "\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as c:
        c.sendall(req.encode())
        data = b""
        while True:
            chunk = c.recv(65536)
            if not chunk:
                break
            data += chunk
            if data.startswith(b"HTTP/1.1 101"):        # a websocket was accepted: enough
                break
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    status = int(lines[0].split()[1])
    return status, {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}, body


def ws_upgrade(port: int, query: str = "width=100&height=30", headers: dict[str, str] | None = None):
    """Open a websocket by hand and return the raw socket once the server answered (status, sock).
    The caller decides how it ends: a clean close, a reset, or silence."""
    key = base64.b64encode(os.urandom(16)).decode()
    heads = {"Host": f"127.0.0.1:{port}", "Upgrade": "websocket", "Connection": "Upgrade",
             "Sec-WebSocket-Key": key, "Sec-WebSocket-Version": "13", **(headers or {})}
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    c.sendall((f"GET /ws?{query} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in heads.items())
               + "\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = c.recv(4096)
        if not chunk:
            break
        data += chunk
    status = int(data.split(b" ", 2)[1]) if data else 0
    return status, c


def reset(sock: socket.socket) -> None:
    """End a connection as a crashed browser does: a TCP reset, no goodbye."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()


class Visit:
    """A websocket opened as the page's JS opens it (aiohttp's client), read all along as a browser
    reads it (so the server's pings are answered): ``screen`` has every byte of the screen so far,
    ``texts`` every text message (pongs)."""

    def __init__(self, session, ws):
        self.session, self.ws = session, ws
        self.screen, self.texts = b"", []
        self.closed = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        import aiohttp
        try:
            while True:
                msg = await self.ws.receive()
                if msg.type == aiohttp.WSMsgType.BINARY:
                    self.screen += msg.data
                elif msg.type == aiohttp.WSMsgType.TEXT:
                    self.texts.append(msg.data)
                else:
                    break
        finally:
            self.closed.set()

    async def until(self, needle: bytes, timeout: float = 60) -> None:
        t = time.monotonic()
        while needle not in self.screen:
            assert not self.closed.is_set(), f"the session ended before {needle!r}: {self.screen[-300:]!r}"
            assert time.monotonic() - t < timeout, f"no {needle!r} in {timeout} s"
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()
        self._reader.cancel()


async def first_frame(url: str, query: str = "width=100&height=30", needle: bytes = b"op 1/12",
                      timeout: float = 60) -> Visit:
    """A visit whose TUI has drawn its first frame (``needle`` on screen)."""
    import aiohttp
    session = aiohttp.ClientSession()
    ws = await session.ws_connect(url.replace("http", "ws") + "/ws?" + query, headers={"Origin": url})
    v = Visit(session, ws)
    await v.until(needle, timeout)
    return v


class Watcher:
    """A thread that notes, every 20 ms, when each watched process is seen gone."""

    def __init__(self):
        import threading
        self.gone: dict[int, float] = {}
        self.watched: set[int] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def watch(self, pid: int) -> None:
        with self._lock:
            self.watched.add(pid)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            with self._lock:
                for p in self.watched - set(self.gone):
                    if not alive(p):
                        self.gone[p] = time.monotonic()

    def ended_within(self, since: dict[int, float], seconds: float) -> dict[int, float]:
        """Wait (up to ``seconds`` after the latest start) until each pid of ``since`` is gone;
        {pid: seconds from its ``since`` until it was seen gone} (inf: it is still running)."""
        for p in since:
            self.watch(p)
        deadline = max(since.values(), default=time.monotonic()) + seconds + 1
        while time.monotonic() < deadline and any(p not in self.gone for p in since):
            time.sleep(0.05)
        self._stop.set()
        self._thread.join()
        return {p: (self.gone[p] - t) if p in self.gone else float("inf") for p, t in since.items()}
