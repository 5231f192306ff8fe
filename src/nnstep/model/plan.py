"""One training step as a flat list of operations over named tensors (docs/commands.md, "Operations and tensor names").

The plan is built once per scenario from its types' classes (nnstep.layers), in topological order (as jax's jaxpr keeps
a program): ``forward <layer>`` for every layer in file order, ``loss``, ``backward loss``,
``backward <layer>`` in reverse order, ``update <layer>.<param>`` for every trainable parameter.
Each :class:`Op` names the tensors it reads and writes, each with its *role* in the operation and a
short label for the screen, and carries its formula as structured clauses. Nothing here runs: the
engine binds every op to its math (:mod:`nnstep.engine.program`), and the scenario loader uses the
names to validate breakpoints and expectations without importing the engine.

Gradients at forks: when a layer's output is read by more than one layer, its ``<layer>.grad_out``
is the sum of what each reader sends back, and ``backward <layer>`` computes that sum first, as
its first clause. When it is read by one layer, that reader's backward op writes it too (an alias of
the reader's ``grad_in``, in ``also_writes``); the last layer's is written by ``backward loss``.
"""
from __future__ import annotations

from ..layers import registry
from ..layers.formula import Clause, Formula, Ref, text as formula_text
from ..layers.optimizers import CLIP_OP, clip_formula, grad_for_update
from ..layers.records import NoInit, record
from ..layers.schedules import SCHEDULE_OP

STAGES = ("forward", "loss", "backward", "update")

ROLE_LABELS = {
    "input": "input", "param": "param", "state": "state", "extra": "", "result": "out", "output": "out",
    "upstream": "upstream ∂E/∂out", "local": "local ∂out/∂in", "grad_in": "result ∂E/∂in",
    "grad_param": "∂E/∂", "contribution": "from", "prediction": "prediction ŷ", "target": "target",
    "loss": "loss E", "loss_grad": "∂E/∂prediction", "old": "old", "new": "new", "delta": "change Δ",
}


@record(frozen=True)
class Slot:
    """A tensor an operation reads or writes: its name, its role in the operation, a short label,
    and for a gradient the tensor it is the gradient of (dLoss/d ``of``)."""
    name: str
    role: str
    label: str
    of: str = ""


@record(frozen=True, eq=False)
class Op:
    index: int
    stage: str
    name: str
    layer: str | None
    kind: str                                  # what the engine runs: forward, backward, loss, loss_backward, update
    ins: tuple[Slot, ...]
    outs: tuple[Slot, ...]
    formula: Formula
    also_writes: tuple[str, ...] = ()          # aliases it writes too: the reading layer's grad_out
    alias_src: tuple[str, ...] = ()            # ... each the same array as this output of the op
    param: str | None = None                   # update ops: the parameter
    sums: tuple[str, ...] = ()                 # a fork's backward: grad_out = Σ these, first
    arg: object = None                         # a layer step's argument (Step.arg): an RNN's time index
    inputs: tuple[str, ...] = NoInit()
    outputs: tuple[str, ...] = NoInit()

    def __post_init__(self):
        object.__setattr__(self, "inputs", tuple(dict.fromkeys(s.name for s in self.ins)))
        object.__setattr__(self, "outputs", tuple(dict.fromkeys(s.name for s in self.outs)))

    @property
    def formula_text(self) -> str:
        return formula_text(self.formula)

    def slot(self, name: str, output: bool | None = None) -> Slot | None:
        pool = self.outs if output else self.ins if output is False else self.outs + self.ins
        return next((s for s in pool if s.name == name), None)


class Names:
    """The references one layer's formulas use, each with its role in that op."""

    def __init__(self, L, plan: "Plan"):
        self.L = L
        self.xs = [Ref(x, "input") for x in L.inputs]
        self.x = self.xs[0]
        self.out = Ref(L.t("out"), "result")
        self.outr = Ref(L.t("out"), "output")
        self.g = Ref(L.t("grad_out"), "upstream")
        self.local = Ref(L.t("local"), "local")
        self.gin = Ref(plan.grad_in_name(L, 0), "grad_in")
        self.gins = [Ref(plan.grad_in_name(L, k), "grad_in") for k in range(len(L.inputs))]

    def p(self, param: str) -> Ref:
        return Ref(self.L.t(param), "param")

    def pg(self, param: str) -> Ref:
        return Ref(self.L.t(f"{param}.grad"), "grad_param")

    def e(self, extra: str) -> Ref:
        return Ref(self.L.t(extra), "extra")


class Plan:
    @classmethod
    def of(cls, sc) -> "Plan":
        """The plan of ``sc``, built once: the loader builds it to check breakpoint and expect
        names, and each Program of the scenario reads the same one (a plan is never changed once
        built). Rebuilt if what it is made of was replaced on ``sc`` since."""
        key = (tuple(sc.layers), sc.loss, sc.optimizer, getattr(sc.y, "dtype", None), sc.dtype)
        memo = sc.__dict__.get("_plan")
        if memo is not None and memo[0] == key:
            return memo[1]
        plan = cls(sc)
        sc.__dict__["_plan"] = (key, plan)
        return plan

    def __init__(self, sc):
        self.scenario = sc
        self.layers = list(sc.layers)
        self.by_name = {L.name: L for L in self.layers}
        self.types = {L.name: registry.layer_type(L.type) for L in self.layers}
        # who reads each tensor: [(layer, k)] with k the position in its inputs
        self.readers: dict[str, list[tuple[str, int]]] = {}
        for L in self.layers:
            for k, x in enumerate(L.inputs):
                self.readers.setdefault(x, []).append((L.name, k))
        self.prediction = self.layers[-1].t("out")
        # the loss, optimizer and schedule types (nnstep.layers), made for this scenario's options
        self.loss = registry.loss_types()[sc.loss.type](sc.loss)
        self.optimizer = registry.optimizer_types()[sc.optimizer.type](sc.optimizer)
        s = sc.optimizer.schedule
        self.schedule = None if s is None else registry.schedule_types()[s.type](s, sc.optimizer)
        self.ops: list[Op] = []
        self._build()
        self.op_names = [op.name for op in self.ops]
        self.names = {"input", "target"}
        for op in self.ops:
            self.names.update(op.inputs, op.outputs, op.also_writes)
        keep, _ = self.optimizer.state()
        self.persistent = list(sc.param_names)
        for L in self.layers:
            self.persistent += [L.t(s) for s in self.types[L.name].states]
        for P in sc.trainable:
            self.persistent += [f"{P}.{s}" for s in keep]
        if sc.optimizer.schedule is not None:
            self.persistent.append("lr")              # the lr in force, a schedule's state
        self.stage_start: dict[str, int] = {}
        for op in self.ops:
            self.stage_start.setdefault(op.stage, op.index)

    # --- names ------------------------------------------------------------------------------------
    def grad_in_name(self, L, k: int) -> str:
        """dLoss/d(the k-th input of L): ``<layer>.grad_in``, or ``<layer>.grad_in.<k>`` for a merge."""
        return L.t(f"grad_in.{k}") if self.types[L.name].merge else L.t("grad_in")

    def contributions(self, tensor: str) -> list[str]:
        """The gradients the readers of ``tensor`` send back, in reader order."""
        return [self.grad_in_name(self.by_name[r], k) for r, k in self.readers.get(tensor, [])]

    def label(self, role: str, name: str, L=None) -> str:
        if name == "input" and role in ("input", "prediction"):
            return "input x"
        suffix = name.rsplit(".", 1)[-1]
        if role in ("param", "grad_param", "old", "new") and L is not None:
            pname = name[len(L.name) + 1:].removesuffix(".grad")
            sym = self.types[L.name].symbols.get(pname, pname)
            return f"param {sym}" if role == "param" else f"∂E/∂{sym}" if role == "grad_param" else ROLE_LABELS[role]
        if role == "extra":
            return suffix
        if role == "state":
            return self.optimizer.state_labels.get(suffix, suffix)
        if role == "contribution":
            return f"from {name.split('.', 1)[0]}"
        if role == "grad_in" and name.count(".") == 2:
            return f"result ∂E/∂in {suffix}"
        if role == "input" and L is not None and name != "input" and len(L.inputs) > 1:
            return f"in {L.inputs.index(name)}"
        return ROLE_LABELS.get(role, role)

    # --- building ---------------------------------------------------------------------------------
    GRAD_ROLES = ("upstream", "grad_in", "grad_param", "grad", "loss_grad", "contribution")

    def _slot(self, name, role, L=None, of: str = "") -> Slot:
        return Slot(name, role, self.label(role, name, L), of or self._of(name, role, L))

    def _of(self, name: str, role: str, L) -> str:
        """The tensor a gradient is dLoss/d of, from the plan's own naming."""
        if role == "loss_grad":
            return self.prediction
        if role == "upstream" and L is not None and name == L.t("grad_out"):
            return L.t("out")
        if role in ("grad_in", "contribution"):
            r, k = self._grad_in_owner.get(name, (None, 0))
            return self.by_name[r].inputs[k] if r else ""
        if role in ("grad_param", "grad", "upstream") and name.endswith(".grad"):
            return name[:-len(".grad")]
        return ""

    def _step_slot(self, name, role, L) -> Slot:
        short = name[len(L.name) + 1:] if name.startswith(L.name + ".") else name
        if role == "grad" or (role == "upstream" and name != L.t("grad_out")):
            label = f"∂E/∂{short.removesuffix('.grad')}"
        elif role in ("result", "input", "extra") and name.startswith(L.name + ".") and short != "out":
            label = short
        else:
            label = self.label(role, name, L)
        return Slot(name, role, label, self._of(name, role, L))

    def _add(self, **kw):
        self.ops.append(Op(index=len(self.ops), **kw))

    def _build(self):
        sc = self.scenario
        self._grad_in_owner = {self.grad_in_name(L, k): (L.name, k) for L in self.layers for k in range(len(L.inputs))}
        for L in self.layers:
            T = self.types[L.name]
            n = Names(L, self)
            steps = _formula(T, "forward_steps", L, n)
            if steps:
                for st in steps:
                    self._add(stage="forward", name=f"forward {L.name} {st.suffix}", layer=L.name, kind=f"step:{st.kind}",
                              ins=tuple(self._step_slot(a, r, L) for a, r in st.ins),
                              outs=tuple(self._step_slot(a, r, L) for a, r in st.outs), formula=st.formula,
                              arg=st.arg)
                continue
            ins = [self._slot(x, "input", L) for x in L.inputs]
            ins += [self._slot(L.t(p), "param", L) for p in L.params]
            ins += [self._slot(L.t(s), "state", L) for s in T.states]
            outs = [self._slot(L.t("out"), "result", L)] + [self._slot(L.t(e), "extra", L) for e in T.extras]
            outs += [self._slot(L.t(s), "state", L) for s in T.states]
            self._add(stage="forward", name=f"forward {L.name}", layer=L.name, kind="forward", ins=tuple(ins),
                      outs=tuple(outs), formula=_formula(T, "forward_formula", L, n))
        pred = self.prediction
        y_index = getattr(sc.y, "dtype", None) is not None and sc.y.dtype.kind in "iu"
        pred_ndim = 1 + len(self.layers[-1].out_shape)
        f_loss, f_back = self.loss.formulas(pred, y_index, pred_ndim)
        lin = (self._slot(pred, "prediction"), self._slot("target", "target"))
        self._add(stage="loss", name="loss", layer=None, kind="loss", ins=lin, outs=(self._slot("loss", "loss"),),
                  formula=f_loss)
        self._add(stage="backward", name="backward loss", layer=None, kind="loss_backward", ins=lin,
                  outs=(self._slot("loss.grad", "loss_grad"),), formula=f_back,
                  also_writes=(self.layers[-1].t("grad_out"),), alias_src=("loss.grad",))
        for L in reversed(self.layers):
            self._backward(L)
        self._update_stage()

    def _update_stage(self):
        """[optimizer] clip_grad_norm's op first (it reads every trainable P.grad and writes the
        clipped P.grad.clipped the updates read), one update per trainable parameter, and a
        schedule's ``lr schedule`` last (scheduler.step() after the updates: the next step's lr)."""
        sc = self.scenario
        opt = sc.optimizer
        keep, written = self.optimizer.state()
        owner = {P: self.by_name[P.rsplit(".", 1)[0]] for P in sc.trainable}
        if opt.clip_grad_norm is not None and sc.trainable:
            ins = tuple(self._slot(f"{P}.grad", "grad_param", owner[P]) for P in sc.trainable)
            outs = (Slot("grad_norm", "result", "total norm ‖g‖"), Slot("clip_coef", "result", "factor"),
                    Slot("clipped_norm", "result", "‖g‖ after clipping"))
            outs += tuple(Slot(f"{P}.grad.clipped", "result", f"clipped {P}.grad") for P in sc.trainable)
            self._add(stage="update", name=CLIP_OP, layer=None, kind="clip", ins=ins, outs=outs,
                      formula=clip_formula(opt, list(sc.trainable)))
        lr_in = (Slot("lr", "state", "lr in force"),) if opt.schedule is not None else ()
        for P in sc.trainable:
            L = owner[P]
            G = grad_for_update(opt, P)
            gslot = self._slot(G, "grad_param", L)
            if G != f"{P}.grad":
                sym = self.types[L.name].symbols.get(P[len(L.name) + 1:], P[len(L.name) + 1:])
                gslot = Slot(G, "grad_param", f"clipped ∂E/∂{sym}")
            ins = [self._slot(P, "old", L), gslot]
            ins += [self._slot(f"{P}.{s}", "state", L) for s in keep]
            outs = [self._slot(P, "new", L), self._slot(f"{P}.delta", "delta", L)]
            outs += [self._slot(f"{P}.{s}", "state", L) for s in written]
            self._add(stage="update", name=f"update {P}", layer=L.name, kind="update", ins=tuple(ins) + lr_in,
                      outs=tuple(outs), formula=self.optimizer.formula(P), param=P)
        if opt.schedule is not None:
            self._add(stage="update", name=SCHEDULE_OP, layer=None, kind="schedule",
                      ins=(Slot("lr", "state", "lr in force"),), outs=(Slot("lr", "state", "next step's lr"),),
                      formula=self.schedule.formula())

    def _backward(self, L):
        """The backward op(s) of layer L: the fork sum first (if L's output has several readers), the
        aliases on the op that writes grad_in (the one reader of each input writes its grad_out)."""
        T = self.types[L.name]
        n = Names(L, self)
        gname = L.t("grad_out")
        contrib = self.contributions(L.t("out"))
        fork = len(contrib) > 1
        pre_ins, pre_outs, pre = [], [], ()
        if fork:                                     # a fork: the sum of what its readers send back
            pre_ins = [self._slot(c, "contribution", L) for c in contrib]
            pre_outs = [Slot(gname, "upstream", "upstream ∂E/∂out = Σ", L.t("out"))]
            parts: list = []
            for j, c in enumerate(contrib):
                parts += ([" + "] if j else []) + [Ref(c, "contribution")]
            pre = (Clause((Ref(gname, "upstream"),), tuple(parts), "="),)
        gins = [g.name for g in n.gins] if T.grads_input else []
        aliases = [(x.rsplit(".", 1)[0] + ".grad_out", gins[k]) for k, x in enumerate(L.inputs)
                   if gins and x != "input" and len(self.readers.get(x, [])) == 1]
        steps = _formula(T, "backward_steps", L, n)
        if steps:
            for j, st in enumerate(steps):
                ins = [self._step_slot(a, r, L) for a, r in st.ins]
                outs = [self._step_slot(a, r, L) for a, r in st.outs]
                first = j == 0
                if first and fork:
                    ins = pre_ins + [s for s in ins if s.name != gname]
                    outs = pre_outs + outs
                mine = [(a, src) for a, src in aliases if src in {s.name for s in outs}]
                self._add(stage="backward", name=f"backward {L.name} {st.suffix}", layer=L.name, kind=f"step:{st.kind}",
                          ins=tuple(ins), outs=tuple(outs), formula=(pre if first else ()) + st.formula,
                          also_writes=tuple(a for a, _ in mine), alias_src=tuple(s for _, s in mine),
                          sums=tuple(contrib) if (first and fork) else (), arg=st.arg)
            return
        ins = pre_ins if fork else [self._slot(gname, "upstream", L)]
        outs = list(pre_outs)
        ins += [self._slot(x, "input", L) for x in L.inputs]
        ins.append(self._slot(L.t("out"), "output", L))
        ins += [self._slot(L.t(p), "param", L) for p in L.params]
        ins += [self._slot(L.t(e), "extra", L) for e in T.extras]
        if T.elementwise:
            outs.append(self._slot(L.t("local"), "local", L))
        outs += [self._slot(L.t(f"{p}.grad"), "grad_param", L) for p in L.params]
        outs += [self._slot(g, "grad_in", L) for g in gins]
        self._add(stage="backward", name=f"backward {L.name}", layer=L.name, kind="backward", ins=tuple(ins),
                  outs=tuple(outs), formula=pre + _formula(T, "backward_formula", L, n), also_writes=tuple(a for a, _ in aliases),
                  alias_src=tuple(s for _, s in aliases), sums=tuple(contrib) if fork else ())


def _formula(T, method: str, L, n):
    """A layer type's formula (or steps): a user's type is run through plugins.call, so that its
    code raising is a located error."""
    if registry.is_builtin(T):
        return getattr(T, method)(L, n)
    from ..layers import plugins
    return plugins.call(T, method, L, n)


__all__ = ["STAGES", "Op", "Plan", "Slot"]
