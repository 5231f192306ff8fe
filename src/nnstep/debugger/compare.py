"""`nnstep compare`: the user's own values against nnstep's, tensor by tensor (README, "Headless commands").

The user gives values under nnstep's tensor names (docs/scenario-format.md): ``"hidden.out"`` for step 1, or
``"3/hidden.weight.grad"`` for step 3; ``"0/<param>"`` is an initial parameter. nnstep runs the
scenario with the one op runner (:func:`nnstep.engine.runner.advance`) and takes each named tensor
as the op that computes it wrote it. The **first difference** is the earliest op, in program order
(step, then op index), whose output disagrees with the user's value: that is where the user's bug
is, everything after it may differ only because of it.

An element agrees when ``|yours − nnstep| ≤ atol + rtol·|nnstep|`` (the rule of `[[expect]]`).

Hints are computed, never guessed: each says what the user's tensor DOES equal:
* nnstep's backward pass re-run with this step's *updated* parameters (back-propagating after
  updating), the forward values kept;
* nnstep's value times the batch size or the number of elements, or divided by it (sum vs mean);
* nnstep's value times 2 or ½ (the ½ of ½Σ(y − ŷ)²); times −1 (the sign of y − ŷ);
* the transpose of nnstep's value (a weight written (in, out) instead of torch's (out, in)).

For a user interface, :class:`Report` answers: ``first_position`` (the op to mark), ``first``
(its :class:`TensorResult`: tensor, element, both values), and for any tensor
``report.get(step, name)``: ``yours`` (in nnstep's shape), ``nnstep``, ``mask`` (True where a cell
differs) and ``error`` (|yours − nnstep| per cell).
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

import numpy as np

from ..engine.program import Program
from ..engine.runner import advance
from ..errors import ScenarioError, cut
from ..layers.base import fmt_shape as _fmt_shape
from ..model.scenario import Scenario

RTOL, ATOL = 1e-6, 1e-9


def clean(s: str) -> str:
    """Text from the user's file, safe to print (the scenario loader's rule: control characters
    shown as escapes)."""
    from ..errors import clean as _clean
    return _clean(s)


def _where(key) -> str:
    """An array's name as an error's location: quoted, safe to print, cut as key paths are."""
    return f'"{cut(clean(str(key)), 200)}"'
_KEY = re.compile(r"^(?:(\d+)/)?(.+)$")


@dataclass
class TensorResult:
    """One tensor the user gave, judged."""
    key: str                             # as the user wrote it: "hidden.out", "3/hidden.weight.grad"
    step: int
    tensor: str                          # nnstep's tensor name
    status: str                          # "agrees" | "differs" | "unknown"
    suggestion: str | None = None        # unknown: the closest tensor name, if any is close
    op_index: int | None = None          # the op of `step` that wrote the value compared (None: step 0)
    op: str | None = None                # its name ("backward linear1"); "initial" at step 0
    yours: np.ndarray | None = None      # the user's value, in nnstep's shape (float64)
    nnstep: np.ndarray | None = None     # nnstep's value (float64)
    error: np.ndarray | None = None      # |yours − nnstep| per element (inf where one is not finite)
    mask: np.ndarray | None = None       # True where the element differs
    max_error: float = 0.0
    element: tuple[int, ...] = ()        # the worst element (the one furthest beyond tolerance)
    hints: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "agrees"

    @property
    def position(self) -> tuple[int, int] | None:
        """(step, op index) of the op that wrote it, as Session.goto takes them (None at step 0)."""
        return None if self.op_index is None else (self.step, self.op_index)

    @property
    def your_value(self) -> float | None:
        return None if self.yours is None else float(self.yours[self.element])

    @property
    def nnstep_value(self) -> float | None:
        return None if self.nnstep is None else float(self.nnstep[self.element])

    def as_json(self) -> dict:
        from .. import jsonio
        d = {"key": self.key, "step": self.step, "tensor": self.tensor, "status": self.status,
             "op": self.op, "index": self.op_index}
        if self.status == "unknown":
            d["suggestion"] = self.suggestion
            return d
        d.update({"max_error": jsonio.num(self.max_error), "element": list(self.element),
                  "yours": jsonio.num(self.your_value), "nnstep": jsonio.num(self.nnstep_value),
                  "differing": int(self.mask.sum()), "size": int(self.mask.size), "hints": list(self.hints)})
        return d


@dataclass
class Report:
    scenario: str
    source: str                          # where the user's values came from ("mine.npz")
    rtol: float
    atol: float
    results: list[TensorResult]          # in the order given
    n_ops: int                           # ops per step

    # --- what a front end asks --------------------------------------------------------------------
    @property
    def unknown(self) -> list[TensorResult]:
        return [r for r in self.results if r.status == "unknown"]

    @property
    def differing(self) -> list[TensorResult]:
        return [r for r in self.results if r.status == "differs"]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def exit_code(self) -> int:
        """0 all agree, 1 a difference, 2 an unknown name (bad input)."""
        return 2 if self.unknown else (0 if self.ok else 1)

    def unknown_error(self) -> ScenarioError:
        """The bad input an unknown name is (exit 2, after the report): located at the source and
        the first unknown array's name."""
        u = self.unknown[0]
        hint = f' (did you mean "{u.suggestion}"?)' if u.suggestion else ""
        return ScenarioError(f'no tensor of this scenario is named "{cut(clean(u.tensor))}"{hint}', file=self.source,
                             where=_where(u.key))

    @property
    def first(self) -> TensorResult | None:
        """The differing tensor written earliest in the program: (step, op index), then the order
        the op writes its outputs in (the order given, for one op)."""
        d = self.differing
        if not d:
            return None
        return min(d, key=lambda r: (r.step, -1 if r.op_index is None else r.op_index))

    @property
    def first_position(self) -> tuple[int, int] | None:
        """(step, op index) of the first differing op, or None (none differs, or only at step 0)."""
        f = self.first
        return None if f is None else f.position

    @property
    def differing_positions(self) -> list[tuple[int, int]]:
        """Every (step, op index) that wrote a differing tensor, in program order (a UI's "next
        difference" walks these)."""
        return sorted({r.position for r in self.differing if r.position is not None})

    def get(self, step: int, tensor: str) -> TensorResult | None:
        for r in self.results:
            if r.step == step and r.tensor == tensor and r.status != "unknown":
                return r
        return None

    def at_op(self, step: int, index: int) -> list[TensorResult]:
        """The tensors given that this op wrote."""
        return [r for r in self.results if r.step == step and r.op_index == index and r.status != "unknown"]

    # --- text and JSON ----------------------------------------------------------------------------
    @property
    def text(self) -> str:
        return render(self)

    def __str__(self) -> str:
        return self.text

    def as_json(self) -> dict:
        f = self.first
        first = None
        if f is not None:
            first = {"step": f.step, "index": f.op_index, "op": f.op, "tensor": f.tensor, "key": f.key,
                     "element": list(f.element), **{k: v for k, v in f.as_json().items()
                                                    if k in ("yours", "nnstep", "max_error", "hints")}}
            first["error"] = first.pop("max_error")
        return {"scenario": self.scenario, "source": self.source, "rtol": self.rtol, "atol": self.atol,
                "ok": self.ok, "first": first, "tensors": [r.as_json() for r in self.results],
                "counts": {s: sum(r.status == s for r in self.results) for s in ("agrees", "differs", "unknown")}}


# --- the comparison --------------------------------------------------------------------------------
def parse_key(key: str) -> tuple[int, str] | None:
    m = _KEY.match(key)
    if not m:
        return None
    try:
        return (int(m.group(1)) if m.group(1) is not None else 1), m.group(2)
    except ValueError:                       # more digits than int() converts: no step of any run
        return None


def compare(sc: Scenario, tensors: dict, rtol: float = RTOL, atol: float = ATOL, source: str = "tensors") -> Report:
    """Judge every ``{key: array}`` against nnstep's run of ``sc``. Raises ScenarioError (located
    at ``source`` and the key) for a key whose step is no number or beyond ``train.steps``, a step
    0 that is no parameter, a value that is not numbers, and a shape that cannot match. An unknown
    tensor name is no error here: its result says "unknown" (and the report's exit code is 2)."""
    from ..model.plan import Plan

    for what, v in (("rtol", rtol), ("atol", atol)):
        if not (isinstance(v, (int, float)) and 0 <= v < float("inf")):
            raise ScenarioError(f"expected a non-negative number, got {v!r}", where=what)
    if not tensors:
        raise ScenarioError("holds no arrays: save your values under nnstep's tensor names, "
                            'e.g. numpy.savez("mine.npz", **{"linear1.out": out1})', file=source)
    plan = Plan(sc)
    names = plan.names | set(sc.param_names)
    M = len(plan.ops)
    # the op of a step whose value of each tensor is compared: the last op writing it; a tensor
    # never written in a step (a frozen parameter) as its first reader sees it; the batch with op 0
    at: dict[str, int] = {"input": 0, "target": 0}
    for op in plan.ops:
        for t in op.outputs + op.also_writes:
            at[t] = op.index
    for op in plan.ops:
        for t in op.inputs:
            at.setdefault(t, op.index)
    results: list[TensorResult] = []
    wanted: dict[tuple[int, int], list[tuple[TensorResult, np.ndarray]]] = {}
    initial: list[tuple[TensorResult, np.ndarray]] = []
    for key, value in tensors.items():
        where = _where(key)
        pk = parse_key(key) if isinstance(key, str) else None
        if pk is None:
            raise ScenarioError('expected a tensor name, or "<step>/<tensor name>"', file=source, where=where)
        step, name = pk
        if step > sc.train.steps:
            raise ScenarioError(f"step {cut(str(step))} is beyond train.steps = {sc.train.steps}", file=source,
                                where=where)
        if name not in names:
            close = difflib.get_close_matches(name, sorted(names), n=1, cutoff=0.6)
            results.append(TensorResult(key, step, name, "unknown", suggestion=close[0] if close else None))
            continue
        if step == 0 and name not in sc.initial:
            raise ScenarioError(f'step 0 has only the initial parameters, not "{cut(clean(name))}"', file=source,
                                where=where)
        a = np.asarray(value)
        if a.dtype.kind not in "biuf":
            raise ScenarioError(f"expected numbers, got an array of dtype {a.dtype}", file=source, where=where)
        r = TensorResult(key, step, name, "agrees")
        results.append(r)
        if step == 0:
            r.op = "initial"
            initial.append((r, a))
        else:
            r.op_index = at[name]
            r.op = plan.ops[at[name]].name
            wanted.setdefault((step, at[name]), []).append((r, a))

    prog = Program(sc)
    env = prog.initial_env()
    per_pred = int(np.prod(sc.layers[-1].out_shape))
    for r, a in initial:
        _judge(sc, r, a, env[r.tensor], rtol, atol, source)
    last = max((k for k, _ in wanted), default=0)
    if last:
        bstart = prog.stage_start.get("backward", M)
        ustart = prog.stage_start.get("update", M)
        snap: dict[int, dict] = {}
        steps_wanted = {k for k, _ in wanted}

        def on_op(op, k, ins):
            for r, a in wanted.get((k, op.index), ()):
                if env.get(r.tensor) is None:
                    raise ScenarioError(f"nnstep computes no value of {r.tensor} in step {k}", file=source,
                                        where=_where(r.key))
                nb = int(env["input"].shape[0])
                _judge(sc, r, a, env[r.tensor], rtol, atol, source, batch=nb, n_pred=nb * per_pred)
                if r.status == "differs" and r.tensor.endswith(".grad_in"):
                    _hint_local(plan, r, env, rtol, atol)
            if op.index == ustart - 1 and k in steps_wanted:
                snap[k] = dict(env)            # after the backward pass, before the update

        def on_boundary(k1):
            k = k1 - 1
            late = [r for (s, i), rs in wanted.items() if s == k and bstart <= i < ustart
                    for r, _ in rs if r.status == "differs"]
            if late and k in snap:
                _hint_updated(prog, sc, snap.pop(k), env, k, late, bstart, ustart, rtol, atol)
            snap.pop(k, None)

        prog.feed(env, 1)
        advance(prog, env, 1, 0, last * M, sc.train.steps, None, on_op=on_op, on_boundary=on_boundary)
    return Report(sc.name, source, rtol, atol, results, M)


def _close(a, b, rtol, atol) -> np.ndarray:
    with np.errstate(all="ignore"):
        same = (a == b) | (np.isnan(a) & np.isnan(b))
        return same | (np.abs(a - b) <= atol + rtol * np.abs(b))


def _judge(sc, r: TensorResult, mine, ref, rtol, atol, source, batch=None, n_pred=None):
    ref = np.asarray(ref, dtype=np.float64)
    mine = np.asarray(mine)
    where = _where(r.key)
    if mine.shape != ref.shape:
        if mine.size == 1 and ref.size == 1:
            mine = mine.reshape(ref.shape)
        else:
            msg = f"shape {_fmt_shape(mine.shape)} does not match {r.tensor}, which has shape {_fmt_shape(ref.shape)}"
            if mine.ndim == 2 and mine.shape[::-1] == ref.shape:
                t = _close(mine.T.astype(np.float64), ref, rtol, atol).all()
                msg += (": yours is its transpose" + (", and agrees transposed" if t else "") +
                        (" (torch's layout is (out, in): out = in @ W.T + b)" if r.tensor.endswith("weight")
                         or r.tensor.endswith("weight.grad") else ""))
            raise ScenarioError(msg, file=source, where=where)
    mine = mine.astype(np.float64)
    ok = _close(mine, ref, rtol, atol)
    with np.errstate(all="ignore"):
        err = np.abs(mine - ref)
    err = np.where(ok, np.where(np.isfinite(err), err, 0.0), np.where(np.isfinite(err), err, np.inf))
    r.yours, r.nnstep, r.error, r.mask = mine, ref, err, ~ok
    with np.errstate(all="ignore"):
        beyond = np.where(ok, -np.inf, err - rtol * np.abs(np.where(np.isfinite(ref), ref, 0.0)))
    if ok.all():
        j = int(np.argmax(err)) if err.size else 0
    else:
        beyond = np.where(np.isnan(beyond), np.inf, beyond)
        j = int(np.argmax(beyond))
    r.element = tuple(int(v) for v in np.unravel_index(j, err.shape)) if err.ndim else ()
    r.max_error = float(err.max()) if err.size else 0.0
    if ok.all():
        r.status = "agrees"
        return
    r.status = "differs"
    r.hints = _hints(sc, r.tensor, mine, ref, rtol, atol, batch, n_pred)


def _hints(sc, name, mine, ref, rtol, atol, batch, n_pred) -> list[str]:
    """What the user's differing tensor equals instead, when it is a classic mistake away."""
    hints = []
    if not np.isfinite(mine).all() or not np.any(np.abs(ref) > atol):
        return hints
    red, scale = sc.loss.reduction, sc.loss.scale
    factors = []
    for n, what in ((batch, "the batch size"), (n_pred, "the number of elements of the prediction")):
        if not n or n <= 1 or any(abs(c - n) < 1e-12 or abs(c - 1 / n) < 1e-12 for c, _ in factors):
            continue
        if red == "mean":
            factors.append((float(n), f"yours = {n} × nnstep's, and {n} is {what}: a sum where the scenario "
                                      f"takes the mean? (its loss has reduction = \"mean\")"))
        else:
            factors.append((1.0 / n, f"yours = nnstep's / {n}, and {n} is {what}: a mean where the scenario "
                                     f"sums? (its loss has reduction = \"sum\")"))
    if scale == 0.5:
        two = ("yours = 2 × nnstep's: the ½ of E = ½·Σ(target − out)² forgotten? (this scenario's loss has "
               "scale = 0.5, whose ½ cancels the 2 of the square's derivative)")
        half = ("yours = ½ × nnstep's: a ½ too many? (E = ½·Σ(target − out)² has the derivative out − target: "
                "its ½ cancels the square's 2)")
    else:
        two = (f"yours = 2 × nnstep's: a factor 2 too many? (this scenario's loss has scale = {scale:g}; the "
               "square's derivative 2·(out − target) has just one 2)")
        half = (f"yours = ½ × nnstep's: the ½ of the textbook's E = ½·Σ(target − out)²? (this scenario's loss has "
                f"scale = {scale:g}, no ½, so its derivative keeps the square's 2: 2·(out − target))")
    factors += [(2.0, two), (0.5, half),
                (-1.0, "yours = −1 × nnstep's: a sign flipped? (dLoss/dout of the squared error is "
                       "out − target, not target − out; the update subtracts lr·grad)")]
    for c, text in factors:
        if _close(mine, c * ref, rtol, atol).all():
            hints.append(text)
    if (mine.ndim == 2 and mine.shape[0] == mine.shape[1] and mine.shape[0] > 1
            and _close(mine.T, ref, rtol, atol).all()):
        hints.append("yours is the transpose of nnstep's: torch's weight layout is (out, in), out = in @ W.T + b")
    return hints


def _hint_local(plan, r: TensorResult, env, rtol, atol):
    """An element-wise layer's grad_in that equals its grad_out: the local derivative never
    multiplied in."""
    layer = r.tensor[:-len(".grad_in")]
    T = plan.types.get(layer)
    g = env.get(f"{layer}.grad_out")
    if T is None or not T.elementwise or g is None or np.shape(g) != r.yours.shape:
        return
    if _close(r.yours, np.asarray(g, dtype=np.float64), rtol, atol).all():
        r.hints.insert(0, f"yours = {layer}.grad_out, the gradient arriving at {layer}: the local derivative "
                          f"{layer}.local (d out/d in of the {T.type}) was never multiplied in: "
                          f"grad_in = grad_out ⊙ local")


def _hint_updated(prog, sc, snap, env, k, late, bstart, ustart, rtol, atol):
    """Re-run step k's backward pass from the forward values it had, with the parameters after step
    k's update: a user tensor that equals that back-propagated after updating."""
    alt = dict(snap)
    for p in sc.trainable:
        alt[p] = env[p]
    if all(alt[p] is snap[p] for p in sc.trainable):
        return
    with np.errstate(all="ignore"):
        for i in range(bstart, ustart):
            prog.fns[i](alt, k)
    for r in late:
        v = alt.get(r.tensor)
        if v is None or v is snap.get(r.tensor):
            continue
        if np.asarray(v).shape == r.yours.shape and _close(r.yours, np.asarray(v, dtype=np.float64), rtol, atol).all():
            r.hints.insert(0, f"yours = nnstep's back-propagated with the weights AFTER step {k}'s update: "
                              "the backward pass must use the weights the forward pass used (update only "
                              "once every gradient is computed)")


# --- text ------------------------------------------------------------------------------------------
def _n(v) -> str:
    return "?" if v is None else f"{v:.10g}"


def _at(r: TensorResult) -> str:
    return "[" + ", ".join(map(str, r.element)) + "]" if r.element else ""


def render(rep: Report) -> str:
    n = f"{len(rep.results)} tensor{'s' if len(rep.results) != 1 else ''}"
    given = f"{n} given" if rep.source == "tensors" else f"{n} from {rep.source}"
    L = [f"{rep.scenario}: {given} against nnstep (rtol {rep.rtol:g}, atol {rep.atol:g})"]
    f = rep.first
    if f is not None:
        where = ("the initial parameters (step 0)" if f.op_index is None
                 else f'step {f.step}, op {f.op_index + 1}/{rep.n_ops} "{f.op}"')
        L.append(f"first difference: {where}")
        L.append(f"  {f.tensor}{_at(f)}: yours {_n(f.your_value)}, nnstep {_n(f.nnstep_value)}, "
                 f"error {abs(f.your_value - f.nnstep_value) if f.your_value is not None else float('nan'):.3g}"
                 f" ({int(f.mask.sum())} of {f.mask.size} element{'s' if f.mask.size != 1 else ''} "
                 f"differ{'s' if int(f.mask.sum()) == 1 else ''})")
        for h in f.hints:
            L.append(f"  hint: {h}")
        later = [r for r in rep.differing if r is not f]
        if later:
            L.append("  (a tensor computed after it may differ only because of it: fix this one first)")
    elif rep.results and not rep.unknown:
        L.append("every tensor agrees")
    L.append("tensors:")
    w = max((len(r.key) for r in rep.results), default=0)
    for r in rep.results:
        if r.status == "unknown":
            s = f'  unknown  {clean(r.key):<{w}}  no tensor of this scenario is named "{clean(r.tensor)}"'
            s += f' (did you mean "{r.suggestion}"?)' if r.suggestion else ""
        elif r.status == "agrees":
            s = f"  agrees   {r.key:<{w}}  max error {r.max_error:.3g}"
        else:
            s = (f"  differs  {r.key:<{w}}  max error {r.max_error:.3g} at {_at(r) or 'the value'}: yours "
                 f"{_n(r.your_value)}, nnstep {_n(r.nnstep_value)}")
            if r.op:
                s += f"  ({r.op}, step {r.step})" if r.op_index is not None else "  (initial)"
        L.append(s)
        if r.status == "differs" and r is not f:
            for h in r.hints:
                L.append(f"           hint: {h}")
    c = rep.as_json()["counts"]
    L.append(f"{c['agrees']} agree, {c['differs']} differ" + (f", {c['unknown']} unknown" if c["unknown"] else ""))
    return "\n".join(L)


# --- the Python API ----------------------------------------------------------------------------------
def _scenario(scenario) -> Scenario:
    if isinstance(scenario, Scenario):
        return scenario
    from ..scenario import load_scenario
    return load_scenario(scenario)


def load_tensors(path: str) -> dict:
    """A user's .npz, read as the scenario's data files are: a regular file of at most
    MAX_FILE_BYTES (never a FIFO or a device), each array checked from its header (numbers only,
    never pickle) and all of them together at most MAX_FILE_BYTES uncompressed. Errors are located
    at the file and the array's name."""
    from ..scenario.files import _npz_keys, _npz_load, _npz_open, check_file
    from ..scenario.limits import MAX_FILE_BYTES
    from ..scenario.validate import Ctx

    ctx = Ctx(path)
    check_file(ctx, None, path, directory=", expected a .npz file")
    zf = _npz_open(ctx, None, path, path)
    out = {}
    with zf:
        keys = _npz_keys(zf)
        total = sum(zf.getinfo(k + ".npy").file_size for k in keys)
        if total > MAX_FILE_BYTES:
            raise ScenarioError(f"its arrays hold {total} bytes uncompressed, over the limit of {MAX_FILE_BYTES}",
                                file=path)
        for key in keys:
            try:
                out[key] = _npz_load(ctx, None, path, zf, key)
            except ScenarioError as e:        # the file is named once, as the location
                what = e.what[len(f'"{path}": '):] if e.what.startswith(f'"{path}": ') else e.what
                raise ScenarioError(what, file=path) from None
    return out


def compare_api(scenario, tensors, rtol: float = RTOL, atol: float = ATOL) -> Report:
    """``nnstep.compare(scenario, {name: array})``: ``scenario`` is a Scenario or a path;
    ``tensors`` a dict, or the path of a .npz."""
    sc = _scenario(scenario)
    source = "tensors"
    if isinstance(tensors, (str, bytes)) or hasattr(tensors, "__fspath__"):
        import os
        source = os.fspath(tensors)
        tensors = load_tensors(source)
    return compare(sc, dict(tensors), rtol=rtol, atol=atol, source=source)


def assert_matches(scenario, tensors, rtol: float = RTOL, atol: float = ATOL) -> Report:
    """For a course's own pytest: raise AssertionError, with the report's text as its message,
    unless every tensor given agrees with nnstep's (an unknown name fails too)."""
    rep = compare_api(scenario, tensors, rtol=rtol, atol=atol)
    if not rep.ok:
        raise AssertionError(rep.text)
    return rep
