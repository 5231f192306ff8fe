"""TUI latency in a real terminal (docs/commands.md, "Performance"): the app in a pty, its output fed to a terminal
emulator (pyte), a key timed from the moment it is written to the pty to the moment the emulated
screen shows its effect.

    python bench/bench_tui.py                       # the 2-2-2 lesson and the 784-256-128-10 MLP
    python bench/bench_tui.py bench/residual_12x256.toml bench/mlp_784_256_128_10.toml
    python bench/bench_tui.py --presses 40 --rounds 3 --smoke

For each scenario, and for a trivial Textual app (one label updated per key, bench/trivial_app.py:
the floor of Textual plus the terminal), it starts the program in a pty at 120x40 and measures:

* start: from the spawn to the first full screen (the footer's last key and the header drawn),
  after one start of each program that is not counted (it writes the compiled modules, as a
  user's first start does);
* a key (``--keys``: np, s, S, g or all; see ``measure``), written to the pty: the time until the
  header line on the emulated screen changes (the op counter; for the trivial app, its counter)
  and the last write of that repaint has been read from the pty (then nothing for 40 ms: the
  header can be painted before the panels). The time is taken when the bytes are read, before
  pyte parses them: pyte is Python, a real terminal parses a repaint in well under a millisecond.
  Everything the program is writing is read before any of it is parsed (the pty hands a repaint
  over in chunks of a few kB; parsing one chunk before reading the next counted pyte's time,
  ~1 ms a kB, as the program's: 27 ms instead of 13 ms for a key on the 2-2-2 lesson, and for
  the first screen +290 ms instead of +73 ms). The start's time is taken the same way, at the
  arrival of the first full screen's last bytes. Keys never queue. out/key: the bytes the
  program wrote per key.

Programs are measured in rounds, alternated (trivial, A, B, trivial, A, B, ...), because the
machine is shared and noisy; the ratios against the trivial app of the same run are the figures.
Needs ``pyte`` (``pip install pyte``); it is a benchmark dependency, not nnstep's.
"""
from __future__ import annotations

import argparse
import os
import select
import signal
import statistics
import struct
import sys
import time

try:
    import pyte
except ImportError:                     # pragma: no cover
    sys.exit("bench_tui needs pyte: pip install pyte")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
COLS, ROWS = 120, 40
DRAIN = 0.002          # s: a read within this of the previous one is the same write, read on
TRIVIAL = os.path.join(HERE, "trivial_app.py")


class Term:
    """A program in a pty, its screen emulated."""

    def __init__(self, argv: list[str], env: dict | None = None):
        import fcntl
        import pty
        import termios
        self.t0 = time.perf_counter()
        pid, fd = pty.fork()
        if pid == 0:                                  # the child: the program, on the pty
            os.environ.update(env or {})
            # as on a user's machine after the first start: Python keeps the compiled modules
            # (an environment that forbids it makes every start compile nnstep again, +0.1-0.2 s)
            os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
            os.environ["TERM"] = "xterm-256color"
            os.environ["COLUMNS"], os.environ["LINES"] = str(COLS), str(ROWS)
            os.execvp(argv[0], argv)
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
        self.pid, self.fd = pid, fd
        self.screen = pyte.Screen(COLS, ROWS)
        self.stream = pyte.ByteStream(self.screen)
        self.last_read = 0.0
        self.bytes = 0
        self.reads = 0

    def pump(self, timeout: float) -> bool:
        """Feed what the program wrote within ``timeout`` s; False if it wrote nothing."""
        r, _, _ = select.select([self.fd], [], [], timeout)
        if not r:
            return False
        # read everything the program is writing before parsing any of it: the pty hands over a
        # repaint in chunks of a few kB, and pyte's parsing (Python, ~1 ms a kB) between two
        # reads would otherwise count as the program's time; a real terminal parses as it reads
        chunks = []
        while r:
            try:
                data = os.read(self.fd, 1 << 16)
            except OSError:
                if chunks:
                    break
                raise SystemExit("the program exited")
            if not data:
                break
            self.last_read = time.perf_counter()  # the bytes are at the terminal (before pyte parses)
            chunks.append(data)
            r, _, _ = select.select([self.fd], [], [], DRAIN)
        data = b"".join(chunks)
        self.bytes += len(data)
        self.reads += len(chunks)
        self.stream.feed(data)
        # answer the terminal queries Textual makes (cursor position, device attributes)
        if b"\x1b[6n" in data:
            os.write(self.fd, b"\x1b[1;1R")
        if b"\x1b[c" in data:
            os.write(self.fd, b"\x1b[?62;22c")
        return True

    def cpu(self) -> float:
        """CPU seconds the program has used (user + system, from /proc): less sensitive to the
        machine's other load than the wall clock."""
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                parts = f.read().rsplit(")", 1)[1].split()
            return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return float("nan")

    def line(self, y: int) -> str:
        return self.screen.display[y]

    def wait(self, cond, limit: float = 20.0) -> float:
        """Pump until cond(); the time it took (s)."""
        t = time.perf_counter()
        while not cond():
            if time.perf_counter() - t > limit:
                raise SystemExit("timed out waiting for the screen:\n" + "\n".join(self.screen.display))
            self.pump(0.05)
        return time.perf_counter() - t

    def quiet(self, gap: float = 0.04, limit: float = 5.0) -> float:
        """Pump until the program writes nothing for ``gap`` s; the time its last write was read
        from the pty (pyte's own parsing, in Python, is this driver's cost: a real terminal parses
        a repaint in well under a millisecond)."""
        t = time.perf_counter()
        last = self.last_read
        while self.pump(gap) and time.perf_counter() - t < limit:
            last = self.last_read
        return last

    def close(self):
        try:
            os.kill(self.pid, signal.SIGTERM)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(self.fd)


def full_screen(term: Term, trivial: bool):
    if trivial:
        return lambda: "count 0" in term.line(0)
    return lambda: "op 1/" in term.line(0) and "quit" in term.line(ROWS - 1)


def _header_pos(head: str) -> tuple[int, int, int, int] | None:
    """(k, N, i, M) from nnstep's header ("step k/N ... op i/M"), None at the end of training."""
    import re
    m = re.search(r"step (\d+)/(\d+) .* op (\d+)/(\d+)", head)
    return tuple(map(int, m.groups())) if m else None


def measure(argv, trivial: bool, presses: int, mode: str = "np") -> tuple[float, list[float], float, float]:
    """Start the program, then time ``presses`` keys of ``mode``:

    * ``np``: n up to the end of training, then p back to the start, and again;
    * ``s`` / ``S``: the next stage / the end of the step, up to the end of training, then back to
      the start with g (not timed);
    * ``g``: go to a position typed in the go-to box, timed from Enter: alternately the middle of
      step 2 (the last op of step 1 on a one-step lesson) and step 1, op 1.

    The trivial app counts any key. Returns (start ms, key ms, CPU ms per key, bytes per key)."""
    env = {"OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "1")}
    term = Term(argv, env)

    def press(keys: bytes, timed: bool = True):
        before = term.line(0)
        t = time.perf_counter()
        os.write(term.fd, keys)
        if not timed:
            term.quiet(0.1)
            return None
        term.wait(lambda: term.line(0) != before, limit=30)
        # the header may be painted before the rest: the screen shows the key's effect when the
        # last write of the repaint has arrived (then nothing for 40 ms)
        return (term.quiet() - t) * 1000

    def goto(k: int, i: int, timed: bool):
        press(b"g", timed=False)
        press(f"{k} {i}".encode(), timed=False)
        return press(b"\r", timed=timed)
    try:
        term.wait(full_screen(term, trivial))
        start = term.last_read - term.t0         # when the first full screen's last bytes arrived
        term.quiet(0.15)
        times = []
        back = False
        flip = False
        cpu0, bytes0 = term.cpu(), term.bytes
        for j in range(presses):
            head = term.line(0)
            if trivial:
                times.append(press(b"g" if mode == "g" else mode[0].encode()))
                continue
            pos = _header_pos(head)
            if mode == "np":                     # n to the end of training, then p back, and again
                if "end of training" in head:
                    back = True
                elif back and pos and pos[0] == 1 and pos[2] == 1:
                    back = False
                times.append(press(b"p" if back else b"n"))
            elif mode in ("s", "S"):
                if "end of training" in head:
                    goto(1, 1, timed=False)
                times.append(press(mode.encode()))
            elif mode == "g":
                if pos is None:
                    goto(1, 1, timed=False)
                    pos = _header_pos(term.line(0))
                k, N, i, M = pos
                flip = not flip
                times.append(goto(*((2, max(1, M // 2)) if N >= 2 else (1, M)) if flip else (1, 1), timed=True))
        n = max(1, presses)
        return start * 1000, times, (term.cpu() - cpu0) * 1000 / n, (term.bytes - bytes0) / n
    finally:
        term.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("scenarios", nargs="*", default=[os.path.join(ROOT, "bench", "classic_2_2_2.toml"),
                                                     os.path.join(HERE, "mlp_784_256_128_10.toml")])
    ap.add_argument("--presses", type=int, default=40, help="keys per program per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="one round of 8 keys: checks it runs")
    ap.add_argument("--keys", default="np", help="comma-separated modes: np (n then p), s, S, g, or all")
    ap.add_argument("--before", metavar="SRC", help="also run each scenario's TUI from another source tree "
                    "(e.g. an older commit's src/, from git archive), in the same rounds: a before/after in one run")
    a = ap.parse_args()
    modes = ["np", "s", "S", "g"] if a.keys == "all" else a.keys.split(",")
    if a.smoke:
        a.rounds, a.presses = 1, 8
    nnstep = os.path.join(os.path.dirname(sys.executable), "nnstep")
    progs = [("trivial Textual app", [sys.executable, TRIVIAL], True)]
    progs += [(os.path.relpath(s, ROOT), [nnstep, s], False) for s in a.scenarios]
    if a.before:
        src = os.path.abspath(a.before)
        progs += [(f"before: {os.path.relpath(s, ROOT)}",
                   [sys.executable, "-c", f"import sys; sys.path.insert(0, {src!r}); sys.argv[0] = 'nnstep'; "
                    "from nnstep.cli import main; sys.exit(main())", s], False) for s in a.scenarios]
    for name, argv, trivial in progs:          # a first start of each, not counted: it compiles
        measure(argv, trivial, 0)              # the modules, as a user's first start does
    keys = {(name, m): [] for name, *_ in progs for m in modes}
    starts = {name: [] for name, *_ in progs}
    cpus = {(name, m): [] for name, *_ in progs for m in modes}
    out = {(name, m): [] for name, *_ in progs for m in modes}
    for _ in range(a.rounds):
        for m in modes:
            for name, argv, trivial in progs:
                s, t, c, b = measure(argv, trivial, a.presses, m)
                starts[name].append(s)
                cpus[name, m].append(c)
                out[name, m].append(b)
                keys[name, m] += t
    base_start = statistics.median(starts[progs[0][0]])
    print(f"pty {COLS}x{ROWS}, {a.rounds} rounds x {a.presses} keys, alternated; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'program':<44} {'key':>3} {'median':>8} {'p90':>8} {'ratio':>6} {'start':>8} {'+start':>8} "
          f"{'CPU/key':>8} {'out/key':>8}")
    for m in modes:
        base = statistics.median(keys[progs[0][0], m])
        for name, *_ in progs:
            v = sorted(keys[name, m])
            med, p90 = statistics.median(v), v[int(0.9 * (len(v) - 1))]
            st = statistics.median(starts[name])
            cpu = statistics.median(cpus[name, m])
            print(f"{name:<44} {m:>3} {med:6.1f}ms {p90:6.1f}ms {med / base:5.2f}x {st:6.0f}ms "
                  f"{st - base_start:+6.0f}ms {cpu:6.1f}ms {statistics.median(out[name, m]) / 1024:6.1f}kB")
    print("targets (docs/commands.md, Performance): key median <= 2x the trivial app, p90 < 50 ms; start within +250 ms of it")
    print("CPU/key: the program's own CPU time per key (user + system), the figure to profile against")


if __name__ == "__main__":
    main()
