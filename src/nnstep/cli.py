"""The command line (docs/commands.md). `run`, `check`, `trace` and `gradcheck` never import Textual."""
from __future__ import annotations

import argparse
import os
import signal
import sys

from .errors import Terminated, cut

COMMANDS = ("run", "check", "trace", "gradcheck", "explain", "compare", "export", "import", "screenshot", "tui", "new",
            "serve")


def _columns() -> int:
    """The terminal's width as ``shutil.get_terminal_size`` finds it (COLUMNS, then stdout's
    terminal, then 80), without importing shutil: it pulls in bz2, lzma and fnmatch, ~6 ms of
    every `nnstep run`'s start, for a width that only --help and errors use."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns if columns > 0 else 80


class _Formatter(argparse.HelpFormatter):
    def __init__(self, prog, indent_increment=2, max_help_position=24, width=None):
        super().__init__(prog, indent_increment, max_help_position, _columns() - 2 if width is None else width)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kw):
        kw.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kw)

    def error(self, message):
        # the prefix names the program once: "nnstep: error: nnstep run: ..." for a command's parser,
        # "nnstep: error: ..." for the top level (its prog is "nnstep" itself)
        where = "" if self.prog == "nnstep" else f"{self.prog}: "
        sys.stderr.write(f"nnstep: error: {where}{message}\n"
                         f"(see '{self.prog} --help')\n")
        raise SystemExit(2)


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:                    # not an integer, or more digits than int() converts
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {cut(repr(s))}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {cut(str(v))}")
    return v


def _steps(s: str) -> int:
    v = _positive_int(s)
    if v > 10_000_000:                    # the loader's MAX_STEPS (docs/errors.md, limits)
        raise argparse.ArgumentTypeError(f"expected at most 10000000 steps, got {cut(str(v))}")
    return v


def _step_or_0(s: str) -> int:
    """explain's --step: a training step, or 0 for the initial values."""
    if s.strip() == "0":
        return 0
    return _steps(s)


def _positive_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {cut(repr(s))}") from None
    if not v > 0 or v != v or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {cut(s)}")
    return v


def _nonneg_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {cut(repr(s))}") from None
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {cut(s)}")
    return v


def _port(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number 0..65535, got {cut(repr(s))}") from None
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0..65535, got {cut(str(v))}")
    return v


def _sessions(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of sessions 1..256, got {s[:60]!r}") from None
    if not 1 <= v <= 256:
        raise argparse.ArgumentTypeError(f"expected a whole number of sessions 1..256, got {v}")
    return v


def _lesson_flags(p, record: bool = True) -> None:
    p.add_argument("--predict", action="store_true",
                   help="ask before every op of the first step: predict one number it writes, then see it")
    if record:
        p.add_argument("--record", metavar="RESULTS.json", default=None,
                       help="write your answers to RESULTS.json after each one (grade it with "
                            "`nnstep check FILE --answers RESULTS.json`)")


def _layers_flag(p) -> None:
    p.add_argument("--layers", action="append", default=[], metavar="FILE.py",
                   help="a Python file of your own layer types to register (docs/layers.md); may be given "
                        "more than once")


def demo_path() -> str:
    return os.path.join(os.path.dirname(__file__), "demo", "classic.toml")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or (``command`` given) the top level with that one subcommand: each
    subparser costs argparse formatters and translations, and `nnstep run` is to start within 60
    ms of `import numpy` (docs/commands.md, "Performance"). A command's help, usage and errors are the same either way."""
    p = _Parser(prog="nnstep", description="A terminal step-through debugger for small neural networks. "
                "`nnstep FILE` opens FILE in the TUI; `nnstep` alone opens a bundled demo.")
    from . import __version__
    p.add_argument("--version", action="version", version=f"nnstep {__version__}")
    sub = p.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")
    p.commands = sub.choices                  # the command parsers, to blame an unknown argument on

    if command in (None, "run"):
        r = sub.add_parser("run", help="train headless and print a per-step loss table (or JSON)")
        r.add_argument("file")
        r.add_argument("--steps", type=_steps, help="number of steps (default: train.steps)")
        r.add_argument("--json", action="store_true", help="print one JSON document (docs/commands.md)")
        r.add_argument("--save", metavar="OUT.npz", help="write the final parameters by name, loadable as scenario.weights")
        r.add_argument("--ignore-breakpoints", action="store_true", help="don't stop at `when` breakpoints")
        _layers_flag(r)

    if command in (None, "check"):
        c = sub.add_parser("check", help="run and evaluate every [[expect]], and check every [[ask]] and [[note]]; "
                                         "exit 1 if any expectation fails")
        c.add_argument("files", nargs="+", metavar="FILE")
        c.add_argument("--answers", metavar="RESULTS.json", default=None,
                       help="grade a learner's answers (as `nnstep FILE --record RESULTS.json` writes them) against "
                            "the one FILE: exit 0 if every question was answered right, 1 otherwise")
        _layers_flag(c)

    if command in (None, "trace"):
        t = sub.add_parser("trace", help="every operation with all its input and output tensors")
        t.add_argument("file")
        t.add_argument("--steps", type=_steps)
        t.add_argument("--json", action="store_true")
        t.add_argument("--ignore-breakpoints", action="store_true", help="don't stop at `when` breakpoints")
        _layers_flag(t)

    if command in (None, "explain"):
        e = sub.add_parser("explain", help="one number: the chain rule back to the loss, or how it was computed")
        e.add_argument("file")
        e.add_argument("element", metavar="TENSOR[i, j, ...]", help='e.g. "linear1.weight.grad[0, 1]" or "loss"')
        e.add_argument("--step", type=_step_or_0, default=1,
                       help="the training step (default 1; 0: a parameter's initial value)")
        e.add_argument("--json", action="store_true", help='{"tensor", "index", "step", "value", "engine_value", "text"}')
        _layers_flag(e)

    if command in (None, "gradcheck"):
        g = sub.add_parser("gradcheck", help="finite differences against the analytic gradient of every parameter")
        g.add_argument("file")
        g.add_argument("--tol", type=_positive_float, default=1e-5, help="largest error allowed (default 1e-5)")
        g.add_argument("--eps", type=_positive_float, default=1e-6, help="finite-difference step (default 1e-6)")
        g.add_argument("--max-elements", type=_positive_int, default=64,
                       help="elements checked per parameter: all if fewer, else the largest half and a seeded sample")
        g.add_argument("--json", action="store_true")
        _layers_flag(g)

    if command in (None, "compare"):
        m = sub.add_parser("compare", help="your own values (a .npz by nnstep's tensor names) against nnstep's: the "
                           "first op that differs, then every tensor")
        m.add_argument("file")
        m.add_argument("mine", metavar="MINE.npz", help='arrays named "<tensor>" (step 1) or "<step>/<tensor>"')
        m.add_argument("--json", action="store_true", help="one JSON document")
        m.add_argument("--rtol", type=_nonneg_float, default=1e-6, help="relative tolerance (default 1e-6)")
        m.add_argument("--atol", type=_nonneg_float, default=1e-9, help="absolute tolerance (default 1e-9)")
        _layers_flag(m)

    if command in (None, "export"):
        x = sub.add_parser("export", help="write a standalone PyTorch script that rebuilds the scenario and prints "
                           "the `run --json` document")
        x.add_argument("file")
        x.add_argument("--torch", action="store_true", required=True, help="as a PyTorch script (the one format)")
        x.add_argument("-o", "--output", required=True, metavar="OUT.py")
        _layers_flag(x)

    if command in (None, "import"):
        i = sub.add_parser("import", help="a model trained elsewhere (PyTorch, traced with torch.fx; or ONNX) as a "
                           "scenario and its weights")
        i.add_argument("source", metavar="SOURCE", help="path/to/file.py:Name or package.module:Name (an nn.Module "
                       "class, or a function returning one, built with no arguments), or model.onnx")
        i.add_argument("-o", "--output", required=True, metavar="NET.toml",
                       help="the scenario to write; its weights go beside it, NET.weights.npz")
        i.add_argument("--input-shape", metavar="N,C,...", default=None,
                       help="random data of this shape, batch first (or --data)")
        i.add_argument("--data", metavar="DATA.npz", default=None, help="your data: a .npz with arrays x and y")
        i.add_argument("--force", action="store_true", help="overwrite files that exist")

    if command in (None, "screenshot"):
        s = sub.add_parser("screenshot", help="the TUI after some keys, as SVG")
        s.add_argument("file")
        s.add_argument("--keys", default="", help='keys to press first, e.g. "n n s"')
        s.add_argument("--size", default="120x40", help="terminal size WxH (default 120x40)")
        s.add_argument("-o", "--output", required=True, metavar="OUT.svg")
        s.add_argument("--wait", type=float, default=10.0, metavar="SECONDS",
                       help="longest a key's run (c, C) may take before it is interrupted as Esc would (default 10)")
        _layers_flag(s)

    if command in (None, "tui"):
        u = sub.add_parser("tui", help="open FILE in the TUI (same as `nnstep FILE`)")
        u.add_argument("file", nargs="?")
        u.add_argument("--compare", metavar="MINE.npz", default=None,
                       help="your own values (as for `nnstep compare`): the first differing op marked, f walks them")
        u.add_argument("--rtol", type=_nonneg_float, default=1e-6, help="with --compare: relative tolerance (1e-6)")
        u.add_argument("--atol", type=_nonneg_float, default=1e-9, help="with --compare: absolute tolerance (1e-9)")
        _lesson_flags(u)
        _layers_flag(u)

    if command in (None, "serve"):
        w = sub.add_parser("serve", help="serve the TUI as a web page (each browser tab its own session)")
        w.add_argument("file")
        w.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0: every network)")
        w.add_argument("--port", type=_port, default=8000, help="port (default 8000; 0: any free port)")
        _lesson_flags(w, record=False)
        w.add_argument("--max-sessions", type=_sessions, default=32, metavar="N",
                       help="at most N browser tabs at once, each its own process (default 32); "
                            "a visitor beyond that sees a page saying the class is full")
        _layers_flag(w)

    if command in (None, "new"):
        n = sub.add_parser("new", help="write a starter scenario")
        n.add_argument("file", nargs="?")
        n.add_argument("--template", default=None, help="template name (see --list)")
        n.add_argument("--force", action="store_true", help="overwrite an existing file")
        n.add_argument("--list", action="store_true", help="list the templates")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    except (AttributeError, ValueError):
        pass
    if not argv:
        argv = ["tui"]
    elif argv[0] not in COMMANDS and not argv[0].startswith("-"):
        argv = ["tui"] + argv
    try:
        parser = build_parser(argv[0] if argv[0] in COMMANDS else None)
        a, extra = parser.parse_known_args(argv)
        if extra:                 # said by the command's own parser, so its help is the one offered
            parser.commands.get(a.command, parser).error(f"unrecognized arguments: {' '.join(extra)}")
        return _dispatch(a)
    except KeyboardInterrupt:
        sys.stderr.write("nnstep: interrupted\n")
        return 130
    except Terminated:                    # SIGTERM while a file was written (fileio): cleaned up
        sys.stderr.write("nnstep: terminated\n")
        return 143
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)


# the commands that, once main() has returned, have nothing left to do: no thread, no open file
# (their outputs are written and closed or renamed into place before they return)
_HEADLESS = ("run", "check", "trace", "gradcheck", "explain", "compare", "export", "import", "new")


def entry() -> None:
    """The `nnstep` console script and ``python -m nnstep``: main(), then, after a headless command,
    the process ends without the interpreter's teardown (freeing every module and object one by
    one, numpy's included), which is 10-30 ms of each `nnstep run` here and does nothing a user
    could see: stdout and stderr are flushed first, and those commands leave no thread or file
    open. The interactive commands exit as usual. Output that cannot be written (a full disk) is
    the error _dispatch reports for a failed write, exit 2."""
    argv = sys.argv[1:]
    rc = main(argv)
    if argv and argv[0] in _HEADLESS and not sys.flags.inspect:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except OSError as e:
                rc = _output_error(e)
        os._exit(rc)
    sys.exit(rc)


def _output_error(e: OSError) -> int:
    """`nnstep: error: <file or output>: <what>` for output that could not be written; exit 2."""
    try:
        sys.stderr.write(f"nnstep: error: {e.filename or 'output'}: {e.strerror or e}\n")
    except OSError:
        pass
    return 2


def _one_blas_thread() -> None:
    """The TUI's arrays are small, and a key runs one op: multithreaded BLAS gains nothing there,
    and on a busy machine each call waits for its second thread to be scheduled (a 64x784 @
    784x256 matmul took 30 ms instead of 0.8 ms here under a load of 2 on 2 cores). So the
    interactive commands ask for one thread, unless the user's environment says otherwise. It must
    be set before numpy is first imported; headless runs keep BLAS's default."""
    if "numpy" not in sys.modules:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, "1")


def _user_layers(a) -> None:
    """``--layers``: register the user's layer types before the scenario is read. Before a screen
    opens (tui, screenshot, serve), step 1 runs once, so that a user's layer that raises or returns
    a wrong shape is the usual one-line error, exit 2, and not a crash inside the TUI."""
    from .layers import load_layers
    classes = load_layers(a.layers)
    path = getattr(a, "file", None)
    if a.command in ("tui", "screenshot", "serve") and path:
        from .engine.program import Program
        from .scenario import load_scenario
        sc = load_scenario(path)
        if any(L.type in {c.type for c in classes} for L in sc.layers):
            prog = Program(sc)
            prog.run_until(prog.initial_env(), 1, "update")


def _dispatch(a) -> int:
    from .errors import ScenarioError

    if a.command in ("tui", "screenshot", None):
        _one_blas_thread()

    try:
        if getattr(a, "layers", None):
            _user_layers(a)
        if a.command == "run":
            from .headless import cmd_run
            return cmd_run(a.file, a.steps, a.json, a.save, not a.ignore_breakpoints)
        if a.command == "check":
            from .headless import cmd_check
            return cmd_check(a.files, a.answers)
        if a.command == "trace":
            from .headless import cmd_trace
            return cmd_trace(a.file, a.steps, a.json, not a.ignore_breakpoints)
        if a.command == "explain":
            from .headless import cmd_explain
            return cmd_explain(a.file, a.element, a.step, a.json)
        if a.command == "compare":
            from .headless import cmd_compare
            return cmd_compare(a.file, a.mine, a.json, a.rtol, a.atol)
        if a.command == "export":
            from .export_torch import cmd_export
            return cmd_export(a.file, a.output)
        if a.command == "import":
            from .importer import cmd_import
            return cmd_import(a.source, a.output, a.input_shape, a.data, a.force)
        if a.command == "gradcheck":
            from .headless import cmd_gradcheck
            return cmd_gradcheck(a.file, a.tol, a.eps, a.max_elements, a.json)
        if a.command == "new":
            from .templates import cmd_new
            return cmd_new(a.file, a.template, a.force, a.list)
        if a.command == "screenshot":
            from .tui.launch import cmd_screenshot
            return cmd_screenshot(a.file, a.keys, a.size, a.output, a.wait)
        if a.command == "serve":
            from .serve import cmd_serve
            return cmd_serve(a.file, a.host, a.port, a.max_sessions, predict=a.predict, layers=a.layers)
        if a.command == "tui" or a.command is None:
            from .tui.launch import cmd_tui
            return cmd_tui(getattr(a, "file", None) or demo_path(), getattr(a, "compare", None),
                           getattr(a, "rtol", 1e-6), getattr(a, "atol", 1e-9),
                           predict=getattr(a, "predict", False), record=getattr(a, "record", None))
    except ScenarioError as e:
        sys.stderr.write(f"nnstep: error: {e}\n")
        return 2
    except BrokenPipeError:
        return 0
    except OSError as e:                  # the output could not be written (a full disk, say)
        return _output_error(e)
    return 2
