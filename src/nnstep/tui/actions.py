"""The app's keys, in one table: the app's bindings, the footer, the command palette, the help screen
and the README's key table (tests/tui/test_actions.py checks it against ``readme_table()``) all
come from it. Textual-free, so that the test and the docs can read it without the app."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Key:
    section: str | None     # the help screen's section (None: not in the help, the README)
    shown: str              # the key as the help and the README show it
    help: tuple[str, ...]   # what it does: the help's lines (the palette and the README join them)
    action: str = ""        # the app's action ("": not a binding of the app's, e.g. Tab is Textual's)
    keys: str = ""          # Textual's key names, comma-separated
    title: str = ""         # its command in the palette ("": not in the palette)
    footer: str = ""        # its label in the footer ("": not in the footer)
    display: str | None = None   # the footer's key, where Textual's name is not it


def _k(section, shown, help, action="", keys="", title="", footer="", display=None) -> Key:
    return Key(section, shown, (help,) if isinstance(help, str) else tuple(help), action, keys, title, footer,
               display)


STEPPING, LESSON, LOOKING = "Stepping", "A lesson's questions", "Looking"

KEYS = [
    _k(STEPPING, "n / space", "next operation", "next", "n,space", "Next operation", "next"),
    _k(STEPPING, "p", "previous operation (stepping back is exact)", "prev", "p", "Previous operation", "prev"),
    _k(STEPPING, "s", "run to the next stage (forward → loss → backward → update)", "stage", "s", "Next stage",
       "stage"),
    _k(STEPPING, "S", "run to the end of this training step", "finish", "S", "End of step", "step", "S"),
    _k(STEPPING, "c", "continue to a breakpoint, a NaN/Inf, or the end (Esc interrupts)", "continue", "c",
       "Continue", "cont"),
    _k(STEPPING, "C", "reverse-continue: back to the previous breakpoint or NaN/Inf", "reverse", "C",
       "Reverse-continue", "rev", "C"),
    _k(STEPPING, "f", "with --compare MINE.npz: to the next op that differs from yours", "next_difference", "f",
       "Next difference from yours"),
    _k(STEPPING, "g", "go to a step and op, typed as \"step op\" (op counts from 1)", "goto", "g", "Go to…", "goto"),
    _k(STEPPING, "r", "restart: reload the scenario file and go back to the start", "restart", "r", "Restart",
       "reload"),
    _k(LESSON, "a", "your answers: where --record saves them, or download them (browser)", "answers", "a",
       "Your answers"),
    _k(LOOKING, "b", ("toggle a breakpoint on the next operation (● in the program);",
                      "right after a stop on a `when` condition, b removes that condition"),
       "breakpoint", "b", "Toggle breakpoint", "break"),
    _k(LOOKING, "Tab", "move between the tensors of the current operation"),
    _k(LOOKING, "Enter", "open the focused tensor full-size, with row and column indices", "open_tensor", "enter",
       "Open tensor full-size"),
    _k(LOOKING, "e", "explain one number: the chain rule for one element of a gradient, or how any other "
       "value was computed", "explain", "e",
       "Explain one number", "explain"),
    _k(LOOKING, "d", "the network as a graph in place of the program (d again: back)", "diagram", "d",
       "Network diagram", "graph"),
    _k(LOOKING, "G", "each layer's gradient norm, log scale, in place of the loss curve", "gradnorms", "G",
       "Gradient norms per layer", "norms", "G"),
    _k(LOOKING, "L", "the layers table on / off (off at first on a short screen)", "layers", "L", "Layers table",
       "layers", "L"),
    _k(LOOKING, "+", "more significant digits: boxes, formulas, the table", "digits(1)", "plus,equals_sign",
       "More digits"),
    _k(LOOKING, "-", "fewer significant digits", "digits(-1)", "minus", "Fewer digits"),
    _k(LOOKING, "ctrl+p", "command palette: every action, and \"open <tensor>\" for any tensor"),
    _k(LOOKING, "?", "help: every key and what it does", "help", "question_mark", "Help", "help", "?"),
    _k(LOOKING, "q", "quit", "quit", "q", "Quit", "quit"),
    _k(None, "Esc", "stop a running continue", "interrupt", "escape", "Interrupt", "stop"),
]

# lines of a section before its keys
NOTES = {LESSON: ("before an op that asks, n (and s, S, c, g) opens the answer box:",
                  "type a number or arithmetic (0.05*0.25 + 0.35), Enter; Esc skips")}

# the footer's order: what does not fit is cut from the end, so the least needed come last
FOOTER = ("next", "prev", "stage", "finish", "continue", "reverse", "breakpoint", "goto", "explain", "interrupt",
          "help", "quit", "restart", "diagram", "gradnorms", "layers")

# keys that the app takes before any widget (a priority binding): letters, space and signs, which
# no widget of the main screen binds; on a dialog they are the dialog's (NnstepApp.check_action)
NAMED_OWN = frozenset({"space", "plus", "equals_sign", "minus", "question_mark", "escape"})


def is_own(keys: str) -> bool:
    return all(len(k) == 1 or k in NAMED_OWN for k in keys.split(","))


def bound() -> list[Key]:
    """The keys that are the app's bindings: the footer's first, in its order, then the rest."""
    keys = [k for k in KEYS if k.action]
    at = {a: i for i, a in enumerate(FOOTER)}
    return sorted(keys, key=lambda k: at.get(k.action, len(FOOTER)))


def palette_help(k: Key) -> str:
    return f"{' '.join(k.help)} ({k.shown})"


def sections() -> list[tuple[str, list[tuple[str, str]]]]:
    """The help screen's sections: (title, [(key as shown, a line of what it does)])."""
    out: dict[str, list] = {}
    for title, notes in NOTES.items():
        out.setdefault(title, []).extend(("", n) for n in notes)
    for k in KEYS:
        if k.section is None:
            continue
        rows = out.setdefault(k.section, [])
        rows.append((k.shown, k.help[0]))
        rows.extend(("", line) for line in k.help[1:])
    return [(s, out[s]) for s in (STEPPING, LESSON, LOOKING)]


def readme_table() -> str:
    """The README's key table (two keys a row), as the help says them."""
    cells = [(" / ".join(f"`{part}`" for part in k.shown.split(" / ")), " ".join(k.help))
             for k in KEYS if k.section is not None]
    if len(cells) % 2:
        cells.append(("", ""))
    rows = ["| key | does | key | does |", "| --- | --- | --- | --- |"]
    for (k1, d1), (k2, d2) in zip(cells[::2], cells[1::2]):
        rows.append(f"| {k1} | {d1} | {k2} | {d2} |")
    return "\n".join(rows) + "\n"
