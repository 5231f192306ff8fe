"""`nnstep FILE` and `nnstep screenshot`: load the scenario first (a bad one is a one-line error and
exit 2 before any screen appears), then import Textual."""
from __future__ import annotations

import asyncio
import time
import re
import sys

from ..errors import ScenarioError, cut as _cut


def _load(path: str):
    from ..scenario import load_scenario
    return load_scenario(path)


def _freeze_gc() -> None:
    """Everything imported and built so far lives as long as the app: out of the collector's
    sight (gc.freeze), so that its full collections, which Textual's allocations per frame set
    off, walk only what the app makes from here on (one took ~30 ms while the first screen was
    being built, and two full collections during 60 keys on the 2-2-2 lesson cost 57 ms, 32 ms
    frozen). No collection first: it would cost the start ~20 ms for a little garbage; the app
    collects and freezes again once the first screen is out (tui/gcpolicy.py, GcPolicy.settle)."""
    import gc
    gc.freeze()


def cmd_tui(path: str, compare: str | None = None, rtol: float = 1e-6, atol: float = 1e-9,
            predict: bool = False, record: str | None = None) -> int:
    sc = _load(path)               # raises ScenarioError: the CLI prints it and exits 2
    report = None
    if compare is not None:        # every bad input of `nnstep compare` is refused before the TUI opens
        from ..debugger.compare import compare as run_compare, load_tensors
        report = run_compare(sc, load_tensors(compare), rtol=rtol, atol=atol, source=compare)
        if report.unknown:
            raise report.unknown_error()
    from .app import NnstepApp
    if record is not None:                 # where the answers go: checked before the lesson starts
        from ..fileio import check_output
        check_output(record, "--record", "your answers", "results.json", sc.inputs)
    app = NnstepApp(sc, path=path, compare=report, predict=predict, record=record)
    _freeze_gc()
    app.run()
    return 0 if app.return_code is None else app.return_code


_SIZE = re.compile(r"^\s*(\d{1,6})\s*[xX×]\s*(\d{1,6})\s*$")

KEY_NAMES = {" ": "space", "?": "question_mark", "+": "plus", "-": "minus", "=": "equals_sign",
             "esc": "escape", "ret": "enter", "return": "enter"}


MODIFIERS = ("ctrl", "shift", "alt", "meta", "super", "hyper")


def known_key(key: str) -> bool:
    """Whether Textual knows ``key`` as a key: a character; a key name of its own (enter, escape,
    space, up, f1, ...) or a character's name (question_mark, full_stop, plus); any of those after
    modifiers (ctrl+p, shift+tab); or a pilot's pause, wait:<ms>. pilot.press sends any word as
    a key, and a word no key has is silently nothing (a mistyped --keys went unnoticed)."""
    from textual.keys import KEY_ALIASES, REPLACED_KEYS, Keys, key_to_character

    if key.startswith("wait:"):
        try:
            return float(key[5:]) >= 0
        except ValueError:
            return False
    *mods, base = key.split("+") if len(key) > 1 else [key]
    if not base or any(m not in MODIFIERS for m in mods):
        return False
    names = {k.value for k in Keys if "+" not in k.value and not k.value.startswith("<")}
    names |= set(KEY_ALIASES) | {a for v in KEY_ALIASES.values() for a in v if "+" not in a}
    return (len(base) == 1 and base.isprintable()) or base in names or \
        key_to_character(REPLACED_KEYS.get(base, base)) is not None


def parse_keys(keys: str) -> list[str]:
    """'n n s' -> ['n', 'n', 's']; words are Textual key names (enter, escape, tab, space, up, ...).
    ScenarioError names the first word that is no key, before anything runs or is written."""
    out = []
    for k in keys.split():
        key = KEY_NAMES.get(k.lower() if len(k) > 1 else k, k)
        if not known_key(key):
            raise ScenarioError(f'unknown key "{_cut(k)}": a key is a character or a Textual key name, such as '
                                f"enter, escape, space, tab, up, question_mark or ctrl+p", where="--keys")
        out.append(key)
    return out


def cmd_screenshot(path: str, keys: str, size: str, output: str, wait: float = 10.0) -> int:
    m = _SIZE.match(size or "")
    if not m:
        raise ScenarioError(f"--size: expected WIDTHxHEIGHT such as 120x40, got {_cut(repr(size))}")
    w, h = int(m.group(1)), int(m.group(2))
    if not (20 <= w <= 1000 and 5 <= h <= 500):
        raise ScenarioError(f"--size: {w}x{h} is outside 20x5 .. 1000x500")
    if not output:
        raise ScenarioError("-o: an output file is required")
    if not (wait > 0):
        raise ScenarioError(f"--wait: expected a number of seconds above 0, got {wait!r}")
    press = parse_keys(keys)
    sc = _load(path)
    from ..fileio import atomic_write_text, check_output
    check_output(output, "-o", "the screenshot", "shot.svg", sc.inputs)
    from .app import NnstepApp

    app = NnstepApp(sc, path=path)

    cut: list[str] = []

    async def settle(key: str):
        """Let a continue run, for at most ``wait`` seconds; then interrupt it, as Esc would."""
        t = time.monotonic()
        while app.running and time.monotonic() - t < wait:
            await asyncio.sleep(0.02)
        if app.running:
            app.action_interrupt()
            cut.append(key)
        await app.workers.wait_for_complete()

    async def shoot() -> str:
        async with app.run_test(size=(w, h), notifications=True) as pilot:
            await pilot.pause()
            for k in press:
                await pilot.press(k)
                await settle(k)
                await pilot.pause()
            await settle("")
            await pilot.pause()
            return app.export_screenshot()

    svg = asyncio.run(shoot())
    atomic_write_text(output, svg)
    if cut:
        k, i = app.session.position
        sys.stderr.write(f"nnstep: a run was still going after --wait {wait:g} s and was interrupted, as Esc "
                         f"would, at step {k}, op {i + 1}\n")
    sys.stderr.write(f"wrote {output} ({w}x{h}, keys: {' '.join(press) or 'none'})\n")
    return 0
