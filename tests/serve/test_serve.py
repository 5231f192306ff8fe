"""`nnstep serve FILE`: the TUI as a web page through textual-serve, checked in a real headless
Chromium (Debian's /usr/bin/chromium, driven by playwright), plus its bad-input and signal behaviour
through real processes. The classroom's safety (foreign pages, crowds, vanishing browsers) is
tests/serve/test_serve_safety.py.

Every server here is a subprocess in its own process group; see servehelp.py for how a test's
processes are all ended however it ends. The TUI itself only ever runs under the server, behind a
browser or a websocket: never on this terminal."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from servehelp import (CHROMIUM, CLASSIC, ERRORS_MD, ROOT, Served, alive, free_port, http,  # noqa: F401
                       listening, serve, stop_like_ctrl_c)


# --- the browser ---------------------------------------------------------------------------------

# xterm.js draws on a canvas, so the page's innerText is empty. textual-serve's bundle makes its
# Terminal in a closure (`this.terminal = new v.Terminal(...)`, then `this.terminal.open(e)`); the
# test serves the page that same bundle with one statement added after `open`, which keeps a
# reference to each Terminal in `window.__nnstepTerminals`, and reads the screen from its buffer.
OPEN = re.compile(r"this\.terminal\.open\((\w+)\),")
SCREEN_TEXT = """() => { const t = window.__nnstepTerminals[0], b = t.buffer.active, rows = [];
  for (let y = 0; y < t.rows; y++) rows.push(b.getLine(y).translateToString(true));
  return rows.join('\\n'); }"""


def open_page(browser, url: str):
    page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()

    def keep_terminal(route):
        r = route.fetch()
        body = r.text()
        assert OPEN.search(body), "textual-serve's JS no longer opens its terminal as this.terminal.open(...)"
        body = OPEN.sub(lambda m: m.group(0) + "(window.__nnstepTerminals=window.__nnstepTerminals||[])"
                        ".push(this.terminal),", body, count=1)
        route.fulfill(response=r, body=body)

    page.route("**/static/js/textual.js", keep_terminal)
    page.route(lambda u: not u.startswith(url), lambda route: route.abort())   # no web font from outside
    page.goto(url)
    page.wait_for_function("() => (window.__nnstepTerminals || []).length === 1", timeout=30_000)
    return page


def wait_text(page, needle: str, timeout_ms: int = 30_000) -> str:
    page.wait_for_function(f"() => ({SCREEN_TEXT})().includes({needle!r})", timeout=timeout_ms)
    return page.evaluate(SCREEN_TEXT)


def header(text: str) -> str:
    return next(line for line in text.splitlines() if line.strip())


@pytest.mark.browser
def test_the_tui_in_headless_chromium(serve, tmp_path):
    """Two visitors: the first types `n` in the page and the header moves from op 1/12 to op 2/12
    with the first op's output, while the second visitor's session stays at op 1/12; then Ctrl-C
    stops the server with both connected: exit 130, no traceback, no process of the group left."""
    need_chromium()
    from playwright.sync_api import sync_playwright

    s = serve(CLASSIC, "--port", "0")
    url = s.url()
    assert url.startswith("http://127.0.0.1:")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            first, second = open_page(browser, url), open_page(browser, url)
            before = wait_text(first, "op 1/12")
            wait_text(second, "op 1/12")
            assert "Mazur's 2-2-2 sigmoid network" in header(before)
            assert "0.3775" not in before
            first.click(".xterm-screen")       # focus the terminal, then a key as a student types it
            first.keyboard.press("n")
            after = wait_text(first, "op 2/12")
            # linear1.out = x W1ᵀ + b1 = [0.05·0.15 + 0.1·0.2 + 0.35, 0.05·0.25 + 0.1·0.3 + 0.35]
            #             = [0.3775, 0.3925]: Mazur's net_h1, net_h2
            assert "op 2/12" in header(after) and "op 1/12" not in header(after)
            assert "0.3775" in after and "0.3925" in after
            assert "just ran op 1/12 forward linear1" in after
            shot = tmp_path / "serve.png"
            first.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000
            if os.environ.get("NNSTEP_SERVE_SCREENSHOT"):      # regenerate the README's picture
                first.screenshot(path=os.environ["NNSTEP_SERVE_SCREENSHOT"])
            time.sleep(0.5)                     # the second session had every chance to move
            other = second.evaluate(SCREEN_TEXT)
            assert "op 1/12" in header(other) and "0.3775" not in other
            assert len(s.sessions()) == 2       # one TUI process per visitor

            assert stop_like_ctrl_c(s) == 130
        finally:
            browser.close()
    assert s.err == "nnstep: interrupted\n"
    assert "Traceback" not in s.out
    assert not s.group_alive() and not s.left_behind(), s.left_behind()


def need_chromium():
    if not os.path.exists(CHROMIUM):
        msg = f"{CHROMIUM} is missing: apt-get install -y chromium"
        if os.environ.get("CI"):
            pytest.fail(msg)                    # CI installs it (.ci/run): never skipped there
        pytest.skip(msg)


@pytest.mark.browser
def test_pages_closed_while_loading_leave_nothing_running(serve):
    """Tabs closed while the page is still loading, at every moment of it (before the page, before
    the websocket, while the TUI starts), and a browser that quits while its tab loads: within 5 s
    no session is left, none spins, and the server still serves a student and stops on Ctrl-C.
    (A headless Chromium that left at once once left a session at 95% CPU that ignored SIGTERM.)"""
    need_chromium()
    import random

    from playwright.sync_api import sync_playwright

    s = serve(CLASSIC, "--port", "0")
    url = s.url()
    rnd = random.Random(7)
    with sync_playwright() as pw:
        for round_ in range(2):
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
            try:
                for i in range(6):
                    page = browser.new_page()
                    try:
                        page.goto(url, wait_until="commit", timeout=30_000)
                    except Exception:           # noqa: BLE001 - closing mid-load may abort the navigation
                        pass
                    time.sleep(rnd.random() * 0.8 * (i % 3))
                    s.sessions()                # note the sessions started, to check on them later
                    if round_ == 1 and i == 5:
                        break                   # the whole browser quits with this tab still loading
                    page.close()
            finally:
                browser.close()
        t = time.monotonic()
        while s.sessions() and time.monotonic() - t < 5.0:
            time.sleep(0.05)
        assert s.sessions() == [] and not s.left_behind(), s.left_behind()
        print(f"{len(s.seen)} sessions started by tabs closed while loading; all ended")

        assert s.proc.poll() is None, s.state()
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = open_page(browser, url)
            assert "op 1/12" in header(wait_text(page, "op 1/12"))
            assert len(s.sessions()) == 1
            assert stop_like_ctrl_c(s) == 130
        finally:
            browser.close()
    assert s.err == "nnstep: interrupted\n" and "Traceback" not in s.out
    assert not s.left_behind(), s.left_behind()


@pytest.mark.browser
def test_a_hostile_page_in_chromium_starts_nothing(serve, tmp_path):
    """A page from another origin (another local server, as a hostile site a student opens would
    be) tries every way a page can reach the classroom: a websocket, a fetch, an iframe of the
    served page, a form post. Chromium sends them; the server refuses each, starts no session, and
    then serves a student and stops on Ctrl-C as usual."""
    need_chromium()
    import http.server
    import threading

    from playwright.sync_api import sync_playwright

    s = serve(CLASSIC, "--port", "0")
    url, port = s.url(), s.port
    evil = (f"<html><body><iframe id=f src='{url}/'></iframe>"
            f"<form id=p method=post action='{url}/ws' target=f></form><script>"
            f"window.results = [];"
            f"const ws = new WebSocket('ws://127.0.0.1:{port}/ws?width=80&height=24');"
            f"ws.onopen = () => results.push('ws open'); ws.onerror = () => results.push('ws refused');"
            f"fetch('{url}/', {{mode: 'no-cors'}}).then(() => results.push('fetched'),"
            f" () => results.push('fetch refused'));"
            f"</script></body></html>").encode()

    class Evil(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(evil)

        def log_message(self, *a):
            pass

    site = http.server.HTTPServer(("127.0.0.1", 0), Evil)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
            try:
                page = browser.new_page()
                page.goto(f"http://127.0.0.1:{site.server_port}/")
                page.wait_for_function("() => window.results.includes('ws refused')", timeout=30_000)
                time.sleep(1.0)
                assert "ws open" not in page.evaluate("window.results")
                assert s.sessions() == [] and not s.seen          # no process started, ever
                assert "refused GET /ws: Origin" in s.err, s.err  # (the fetch and the frame start nothing:
                # the page itself is harmless, and a frame of it is not drawn: X-Frame-Options)
                student = open_page(browser, url)
                assert "op 1/12" in header(wait_text(student, "op 1/12"))
                assert len(s.sessions()) == 1
                assert stop_like_ctrl_c(s) == 130
            finally:
                browser.close()
    finally:
        site.shutdown()
    assert not s.left_behind(), s.left_behind()


@pytest.mark.browser
def test_a_lesson_in_chromium_asks_and_hands_in_its_answers(serve, tmp_path):
    """The classic lesson in a browser: n, then n again opens the question before "forward
    sigmoid1"; the student types sigmoid(0.3775), Enter: ✓ and score 1/1 (Mazur's out_h1 =
    0.593269992); `a` downloads the answers, which `nnstep check --answers` grades right."""
    need_chromium()
    import json

    from playwright.sync_api import sync_playwright

    s = serve(CLASSIC, "--port", "0")
    url = s.url()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = open_page(browser, url)
            wait_text(page, "op 1/12")
            page.click(".xterm-screen")
            page.keyboard.press("n")
            wait_text(page, "op 2/12")
            page.keyboard.press("n")
            asked = wait_text(page, "predict sigmoid1.out[0, 0]")
            assert "1 / (1 + e^(−0.3775))" in asked and "= ?" in asked and "0.593269992" not in asked
            page.keyboard.type("sigmoid(0.3775)")
            page.keyboard.press("Enter")
            after = wait_text(page, "score 1/1")
            assert "✓ right: sigmoid1.out[0, 0] = 0.593269992" in after
            with page.expect_download(timeout=30_000) as dl:
                page.keyboard.press("a")
            path = tmp_path / "answers.json"
            dl.value.save_as(str(path))
            doc = json.loads(path.read_text())
            assert doc["score"] == [1, 1] and doc["answers"][0]["answer"] == "sigmoid(0.3775)"
            assert stop_like_ctrl_c(s) == 130
        finally:
            browser.close()
    r = subprocess.run([sys.executable, "-m", "nnstep", "check", CLASSIC, "--answers", str(path)],
                       capture_output=True, text=True, timeout=120)
    assert "1 of 4 right" in r.stdout and r.returncode == 1      # three questions not yet answered
    assert not s.left_behind(), s.left_behind()


# --- starting, stopping, bad input ---------------------------------------------------------------

def test_serves_on_loopback_and_ctrl_c_exits_130(serve):
    s = serve(CLASSIC, "--port", "0")
    url = s.url()
    port = int(url.rsplit(":", 1)[1])
    assert url == f"http://127.0.0.1:{port}"
    assert s.out.splitlines()[0] == \
        f"nnstep: serving {CLASSIC} (Mazur's 2-2-2 sigmoid network) on {url}"
    assert s.err == ""                          # loopback: no warning
    assert listening(port)
    with urllib.request.urlopen(url + "/", timeout=10) as r:
        page = r.read().decode()
    assert f'data-session-websocket-url="ws://127.0.0.1:{port}/ws"' in page
    assert "nnstep: Mazur&#39;s 2-2-2 sigmoid network" in page
    assert stop_like_ctrl_c(s) == 130
    assert s.err == "nnstep: interrupted\n"
    assert "Traceback" not in s.out
    assert not listening(port)


def test_sigterm_stops_quietly(serve):
    s = serve(CLASSIC, "--port", "0")
    s.url()
    os.kill(s.proc.pid, signal.SIGTERM)
    assert s.wait() == 143
    assert "Traceback" not in s.out + s.err


def test_the_page_connects_back_to_the_address_the_browser_used(serve):
    """A student opens http://TEACHER:8000: the page's websocket must go to TEACHER, not to the
    address the server listens on (0.0.0.0 is no address to connect to). TEACHER is an address
    (a name other than this machine's is refused: tests/serve/test_serve_safety.py)."""
    s = serve(CLASSIC, "--host", "0.0.0.0", "--port", "0")
    port = s.port
    status, _, page = http(port, "/", {"Host": f"192.168.1.10:{port}"})
    assert status == 200
    assert f'data-session-websocket-url="ws://192.168.1.10:{port}/ws"'.encode() in page
    status, _, page = http(port, "/", {"Host": f"localhost:{port}"})
    assert status == 200 and f'"ws://localhost:{port}/ws"'.encode() in page


def test_default_port_is_8000_on_127_0_0_1():
    from nnstep.cli import build_parser
    a = build_parser().parse_args(["serve", "x.toml"])
    assert (a.host, a.port) == ("127.0.0.1", 8000)


def test_bad_scenario_is_one_line_and_nothing_listens(serve, tmp_path, monkeypatch, capsys):
    bad = tmp_path / "net.toml"
    bad.write_text(open(CLASSIC).read().replace('type = "sigmoid"', 'type = "sigmod"', 1))
    port = free_port()
    s = serve(str(bad), "--port", str(port))
    assert s.wait() == 2
    assert s.err == f'nnstep: error: {bad}: layers[1].type: unknown value "sigmod" (did you mean "sigmoid"?)\n'
    assert s.out == ""
    assert not listening(port)
    # in-process: the scenario is refused before any socket is bound
    import nnstep.serve

    def no_bind(*a):
        raise AssertionError("bound a socket for a bad scenario")
    monkeypatch.setattr(nnstep.serve, "bind", no_bind)
    from nnstep.cli import main
    assert main(["serve", str(bad), "--port", str(port)]) == 2
    assert capsys.readouterr().err.startswith(f"nnstep: error: {bad}: layers[1].type: ")


def test_port_in_use_is_one_line_exit_2(serve):
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        s = serve(CLASSIC, "--port", str(port))
        assert s.wait() == 2
    msg = (f"nnstep: error: serve: --port {port}: 127.0.0.1:{port} is already in use "
           "(stop what is using it, or choose another --port)")
    assert s.err == msg + "\n"
    assert s.out == ""
    doc = open(ERRORS_MD, encoding="utf-8").read()
    assert msg.replace(str(port), "8000") in doc and '<a id="serve-port-in-use"></a>' in doc


def test_non_loopback_host_warns(serve):
    """--host 0.0.0.0 (every interface), on a port the system picks, stopped at once."""
    s = serve(CLASSIC, "--host", "0.0.0.0", "--port", "0")
    url = s.url()
    port = int(url.rsplit(":", 1)[1])
    assert s.err == (f"nnstep: warning: --host 0.0.0.0 is not loopback: anyone who can reach this machine "
                     f"on port {port} can open the TUI (use --host 127.0.0.1 to keep it local)\n")
    assert f"http://<this machine's address>:{port}" in s.out
    assert stop_like_ctrl_c(s) == 130


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("192.168.1.10", False), ("10.0.0.1", False)])
def test_is_loopback(host, loopback):
    from nnstep.serve import is_loopback
    assert is_loopback(host) is loopback


def test_url_for_ipv6():
    from nnstep.serve import url_for
    assert url_for("::1", 8000) == "http://[::1]:8000"
    assert url_for("127.0.0.1", 80) == "http://127.0.0.1:80"


def test_missing_extra_says_how_to_install(monkeypatch, capsys):
    """Without textual-serve (the extra `serve`), the error names the install command. The
    scenario is loaded first: a bad one is still reported as such."""
    for mod in ("textual_serve", "textual_serve.server"):
        monkeypatch.setitem(sys.modules, mod, None)       # `import textual_serve` now raises ImportError
    from nnstep.cli import main
    assert main(["serve", CLASSIC, "--port", "0"]) == 2
    err = capsys.readouterr().err
    msg = ("nnstep: error: serve: needs textual-serve, which is not installed (textual_serve is missing); "
           "install it with: pip install 'nnstep[serve]'")
    assert err == msg + "\n"
    doc = open(ERRORS_MD, encoding="utf-8").read()
    assert msg in doc and '<a id="serve-not-installed"></a>' in doc
    assert main(["serve", "no-such.toml"]) == 2
    assert capsys.readouterr().err == "nnstep: error: no-such.toml: no such file\n"


def test_other_commands_do_not_import_the_server():
    """textual-serve and aiohttp are imported by `serve` only: `run` and `check` stay as fast."""
    code = ("import sys, io, contextlib\nfrom nnstep.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    codes = [main(['run', {CLASSIC!r}]), main(['check', {CLASSIC!r}])]\n"
            "print(codes, sorted(m for m in sys.modules if m.split('.')[0] in ('textual_serve', 'aiohttp', 'jinja2')))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[0, 0] []"


def test_host_that_is_not_this_machines(serve):
    """192.0.2.1 is TEST-NET-1 (RFC 5737), never a local address: refused before any warning."""
    s = serve(CLASSIC, "--host", "192.0.2.1", "--port", "0")
    assert s.wait() == 2
    msg = ("nnstep: error: serve: --host 192.0.2.1: not an address of this machine "
           "(127.0.0.1: this machine only; 0.0.0.0: all its networks)")
    assert s.err == msg + "\n" and s.out == ""
    doc = open(ERRORS_MD, encoding="utf-8").read()
    assert msg in doc and '<a id="serve-bad-host"></a>' in doc
    s = serve(CLASSIC, "--host", "nosuch.invalid", "--port", "0")      # .invalid never resolves (RFC 6761)
    assert s.wait() == 2
    assert s.err.startswith("nnstep: error: serve: --host nosuch.invalid: no such host (")
    assert s.err.count("\n") == 1 and s.out == ""


def test_sigint_to_the_server_alone_stops_its_visitors(serve):
    """`kill -INT PID` (not a terminal's Ctrl-C to the whole group), twice: the server itself tells each
    visitor's process to quit and waits for it. A visitor here is a websocket opened as the page's
    JS opens it (aiohttp's client), which makes the server start one `nnstep tui`."""
    import asyncio

    import aiohttp

    s = serve(CLASSIC, "--port", "0")
    url = s.url()

    async def visit():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(url.replace("http", "ws") + "/ws?width=100&height=30",
                                          headers={"Origin": url}) as ws:
                got = b""
                while b"op 1/12" not in got:          # the TUI's first frame, as terminal bytes
                    msg = await asyncio.wait_for(ws.receive(), 30)
                    assert msg.type == aiohttp.WSMsgType.BINARY, msg
                    got += msg.data
                assert len(s.sessions()) == 1
                os.kill(s.proc.pid, signal.SIGINT)
                stopped.append(time.monotonic())
                time.sleep(0.05)
                try:
                    os.kill(s.proc.pid, signal.SIGINT)      # an impatient second Ctrl-C while it stops
                except ProcessLookupError:
                    pass
                while (await asyncio.wait_for(ws.receive(), 30)).type not in (
                        aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                    pass

    stopped: list[float] = []
    asyncio.run(visit())
    assert s.wait() == 130
    took = time.monotonic() - stopped[0]
    print(f"stopped in {took:.2f} s")
    # The server asks each session to quit and waits for it (a session that does not quit is
    # ended by signals, and the whole server by a deadline, well within 5 s): a session that
    # quits at once takes well under 3 s.
    assert took < 3.0, took
    assert s.err == "nnstep: interrupted\n"
    assert "Traceback" not in s.out
    assert not s.group_alive() and not s.left_behind(), s.left_behind()
