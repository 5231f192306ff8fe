"""rnn and lstm (docs/scenario-format.md): torch's nn.RNN / nn.LSTM (batch_first, one layer, h0 = c0 = 0).

Forward against an element-by-element reference loop written from torch's documentation:
  nn.RNN:  h_t = tanh(x_t W_ihᵀ + b_ih + h_{t−1} W_hhᵀ + b_hh)   (relu for nonlinearity = "relu")
  nn.LSTM: i, f, g, o = the four chunks of x_t W_ihᵀ + b_ih + h_{t−1} W_hhᵀ + b_hh,
           i, f, o = σ(·), g = tanh(·);  c_t = f ⊙ c_{t−1} + i ⊙ g;  h_t = o ⊙ tanh(c_t)
Backward: every gradient tensor the engine writes (the parameters', grad_in, and each time step's
h/pre/c/gates gradients) against float64 central differences of the reference loop's loss, with
the perturbation injected into that very intermediate.
"""
import math

import numpy as np
import pytest

import nnstep
from nnstep import loads_scenario
from nnstep.engine.program import Program
from enginehelp import run_step


def scenario(kind, T=4, I=3, H=2, N=2, nonlin=None, bias=True, seed=0, extra="", steps=1, lr=0.1):
    opts = f"hidden = {H}\n"
    if nonlin:
        opts += f'nonlinearity = "{nonlin}"\n'
    if not bias:
        opts += "bias = false\n"
    return f"""
[scenario]
seed = {seed}
[data]
x = {{ random = "normal", shape = [{N}, {T}, {I}] }}
y = {{ random = "normal", shape = [{N}, {T}, {H}] }}
[[layers]]
type = "{kind}"
{opts}
{extra}
[loss]
type = "mse"
[optimizer]
type = "sgd"
lr = {lr}
[train]
steps = {steps}
"""


def sig(v):
    return 1.0 / (1.0 + math.exp(-v))


def reference(kind, x, P, nonlin="tanh", perturb=None):
    """The documented equations, one scalar at a time. ``perturb``: {(tensor, t): array (N, ·)}
    added to that time step's tensor right after it is computed (t from 1). Returns the per-step
    tensors and the output (N, T, H)."""
    perturb = perturb or {}
    N, T, I = x.shape
    Wih, Whh = P["weight_ih"], P["weight_hh"]
    G = Wih.shape[0]
    H = Whh.shape[1]
    bih = P.get("bias_ih", np.zeros(G))
    bhh = P.get("bias_hh", np.zeros(G))
    h = np.zeros((N, H))
    c = np.zeros((N, H))
    rec = {}
    out = np.zeros((N, T, H))
    for t in range(1, T + 1):
        pre = np.zeros((N, G))
        for n in range(N):
            for r in range(G):
                s = sum(x[n, t - 1, i] * Wih[r, i] for i in range(I)) + bih[r]
                s += sum(h[n, u] * Whh[r, u] for u in range(H)) + bhh[r]
                pre[n, r] = s
        pre = pre + perturb.get(("pre", t), 0)
        rec[("pre", t)] = pre
        if kind == "rnn":
            h = np.array([[math.tanh(v) if nonlin == "tanh" else max(v, 0.0) for v in row] for row in pre])
        else:
            gates = np.zeros((N, G))
            for n in range(N):
                for r in range(G):
                    gates[n, r] = math.tanh(pre[n, r]) if r // H == 2 else sig(pre[n, r])
            gates = gates + perturb.get(("gates", t), 0)
            rec[("gates", t)] = gates
            c = np.array([[gates[n, H + u] * c[n, u] + gates[n, u] * gates[n, 2 * H + u] for u in range(H)]
                          for n in range(N)])
            c = c + perturb.get(("c", t), 0)
            rec[("c", t)] = c
            h = np.array([[gates[n, 3 * H + u] * math.tanh(c[n, u]) for u in range(H)] for n in range(N)])
        h = h + perturb.get(("h", t), 0)
        rec[("h", t)] = h
        out[:, t - 1] = h
    return rec, out


def mse(out, y):
    return float(((out - y) ** 2).mean())


CASES = {
    "rnn-tanh": dict(kind="rnn"),
    "rnn-relu": dict(kind="rnn", nonlin="relu", seed=3),
    "rnn-nobias": dict(kind="rnn", bias=False, seed=1),
    "rnn-T1": dict(kind="rnn", T=1, seed=2),
    "lstm": dict(kind="lstm"),
    "lstm-nobias": dict(kind="lstm", bias=False, seed=4),
    "lstm-T1": dict(kind="lstm", T=1, H=1, seed=5),
}


def engine_env(sc):
    prog = Program(sc)
    env = prog.initial_env()
    prog.feed(env, 1)
    for fn in prog.fns[:prog.stage_start["update"]]:
        fn(env, 1)
    return prog, env


def params_of(sc, name):
    return {p.split(".", 1)[1]: np.asarray(v, dtype=np.float64) for p, v in sc.initial.items() if p.startswith(name + ".")}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_forward_matches_the_documented_equations(case):
    c = CASES[case]
    sc = loads_scenario(scenario(**c))
    prog, env = engine_env(sc)
    L = sc.layers[0].name
    rec, out = reference(c["kind"], sc.x, params_of(sc, L), c.get("nonlin") or "tanh")
    np.testing.assert_allclose(env[f"{L}.out"], out, rtol=1e-12, atol=1e-14)
    T = sc.x.shape[1]
    for (what, t), v in rec.items():
        np.testing.assert_allclose(env[f"{L}.{what}.t{t}"], v, rtol=1e-12, atol=1e-14, err_msg=f"{what}.t{t}")
    if c["kind"] == "lstm":
        np.testing.assert_allclose(env[f"{L}.c"], np.stack([rec[("c", t)] for t in range(1, T + 1)], 1), rtol=1e-12)
        np.testing.assert_allclose(env[f"{L}.gates"], np.stack([rec[("gates", t)] for t in range(1, T + 1)], 1),
                                   rtol=1e-12)
    if case == "rnn-relu":          # the case exercises both sides of the relu
        pres = np.concatenate([rec[("pre", t)].ravel() for t in range(1, T + 1)])
        assert (pres > 0).any() and (pres < 0).any()


def central(f, a, eps=1e-6):
    a = np.asarray(a, dtype=np.float64)
    g = np.zeros_like(a)
    for j in range(a.size):
        d = np.zeros(a.size)
        d[j] = eps
        g.reshape(-1)[j] = (f(d.reshape(a.shape)) - f(-d.reshape(a.shape))) / (2 * eps)
    return g


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_every_gradient_tensor_matches_central_differences(case):
    c = CASES[case]
    sc = loads_scenario(scenario(**c))
    prog, env = engine_env(sc)
    L = sc.layers[0].name
    kind, nonlin = c["kind"], c.get("nonlin") or "tanh"
    P = params_of(sc, L)
    x, y = sc.x, sc.y
    T = x.shape[1]
    checked = []
    for p in P:                                              # the parameters
        def f(d, p=p):
            Q = dict(P)
            Q[p] = P[p] + d
            return mse(reference(kind, x, Q, nonlin)[1], y)
        np.testing.assert_allclose(env[f"{L}.{p}.grad"], central(f, P[p]), rtol=1e-6, atol=1e-9, err_msg=p)
        checked.append(p)
    g_in = central(lambda d: mse(reference(kind, x + d, P, nonlin)[1], y), x)
    np.testing.assert_allclose(env[f"{L}.grad_in"], g_in, rtol=1e-6, atol=1e-9, err_msg="grad_in")
    whats = ("h", "pre") if kind == "rnn" else ("h", "c", "gates", "pre")
    for t in range(1, T + 1):                                # every time step's intermediate
        for w in whats:
            shape = env[f"{L}.{w}.t{t}"].shape
            num = central(lambda d, w=w, t=t: mse(reference(kind, x, P, nonlin, {(w, t): d})[1], y), np.zeros(shape))
            np.testing.assert_allclose(env[f"{L}.{w}.t{t}.grad"], num, rtol=1e-6, atol=1e-9, err_msg=f"{w}.t{t}")
            checked.append(f"{w}.t{t}")
    assert len(checked) == len(P) + T * len(whats)
    # the gradient actually travels back through time (nonzero recurrent terms), when T > 1
    if T > 1:
        assert np.abs(env[f"{L}.h.t1.grad"] - env[f"{L}.grad_out"][:, 0]).max() > 1e-6


def test_gradcheck_command_agrees():
    for kind in ("rnn", "lstm"):
        sc = loads_scenario(scenario(kind))
        from nnstep.engine.gradcheck import gradcheck
        rows = gradcheck(sc)
        assert len(rows) == 4 and all(r[3] < 1e-6 for r in rows), rows


def test_plan_runs_time_forward_then_back():
    sc = loads_scenario(scenario("lstm", T=3))
    names = [op.name for op in Program(sc).ops]
    assert names[:3] == ["forward lstm1 t1", "forward lstm1 t2", "forward lstm1 t3"]
    assert names[3:8] == ["loss", "backward loss", "backward lstm1 t3", "backward lstm1 t2", "backward lstm1 t1"]
    assert names[8:] == [f"update lstm1.{p}" for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    prog = Program(sc)
    assert [op.arg for op in prog.ops[:3]] == [0, 1, 2] and [op.arg for op in prog.ops[5:8]] == [2, 1, 0]


def test_parameter_layouts_and_init_bound():
    sc = loads_scenario(scenario("lstm", I=3, H=5, seed=7))
    shapes = {p: v.shape for p, v in sc.initial.items()}
    assert shapes == {"lstm1.weight_ih": (20, 3), "lstm1.weight_hh": (20, 5), "lstm1.bias_ih": (20,),
                      "lstm1.bias_hh": (20,)}
    bound = 1 / math.sqrt(5)                       # torch: uniform(-1/sqrt(hidden), 1/sqrt(hidden)) for all
    for v in sc.initial.values():
        assert np.abs(v).max() <= bound and np.abs(v).max() > 0.6 * bound
    sc = loads_scenario(scenario("rnn", H=4, bias=False))
    assert sorted(sc.initial) == ["rnn1.weight_hh", "rnn1.weight_ih"]


NET = """
[scenario]
seed = 11
[data]
x = { random = "normal", shape = [3, 5, 2] }
y = { random = "normal", shape = [3, 1] }
[[layers]]
type = "rnn"
hidden = 3
[[layers]]
type = "flatten"
[[layers]]
type = "linear"
out = 1
[loss]
type = "mse"
[optimizer]
type = "sgd"
lr = 0.2
[train]
steps = 4
"""


def test_rnn_into_linear_trains_as_the_reference_does():
    """rnn -> flatten -> linear, four SGD steps: each step's gradients equal central differences of
    the reference loss at that step's parameters, each update is p − lr·grad, and the loss falls."""
    sc = loads_scenario(NET)
    prog = Program(sc)
    env = prog.initial_env()
    x, y = sc.x, sc.y
    losses = []
    for k in range(1, 5):
        before = {p: np.array(env[p]) for p in sc.param_names}
        run_step(prog, env, k)
        losses.append(float(env["loss"]))

        def loss_of(Q):
            P = {p.split(".", 1)[1]: Q[p] for p in Q if p.startswith("rnn1.")}
            out = reference("rnn", x, P)[1].reshape(3, -1)
            pred = out @ Q["linear1.weight"].T + Q["linear1.bias"]
            return mse(pred, y)
        assert abs(loss_of(before) - losses[-1]) < 1e-12
        for p in sc.param_names:
            def f(d, p=p):
                Q = dict(before)
                Q[p] = before[p] + d
                return loss_of(Q)
            g = central(f, before[p])
            np.testing.assert_allclose(env[f"{p}.grad"], g, rtol=1e-6, atol=1e-9, err_msg=f"step {k} {p}")
            np.testing.assert_allclose(env[p], before[p] - 0.2 * env[f"{p}.grad"], rtol=1e-14, atol=1e-15)
    assert losses[-1] < losses[0]


def test_stepping_back_over_time_step_ops_is_exact():
    sc = loads_scenario(scenario("lstm", T=3, steps=2))
    s = nnstep.Session(sc)
    M = s.M
    names = sorted(n for n in s.names if n.startswith("lstm1."))
    seen = {}
    for p in range(2 * M):
        seen[p] = {n: (None if s.value(n) is None else np.array(s.value(n))) for n in names}
        s.step()
    for p in sorted(seen, reverse=True)[:M + 3]:        # walk back over a step boundary, op by op
        s.back()
        assert s.position == (p // M + 1, p % M)
        now = {n: s.value(n) for n in names}
        for n in names:
            a, b = seen[p][n], now[n]
            assert (a is None) == (b is None), (p, n)
            if a is not None:
                np.testing.assert_array_equal(np.asarray(b), a, err_msg=f"{p} {n}")
    # a goto into the middle of the backward equals a fresh session there
    s.goto(2, 6)
    fresh = nnstep.Session(sc)
    fresh.goto(2, 6)
    for n in names:
        a, b = s.value(n), fresh.value(n)
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_array_equal(a, b)


def test_breakpoints_address_one_time_step():
    src = scenario("rnn", T=4) + '[[breakpoints]]\nop = "backward rnn1 t2"\n'
    s = nnstep.Session(loads_scenario(src))
    s.run()
    assert s.ops[s.position[1]].name == "backward rnn1 t2"
    assert s.value("rnn1.h.t3.grad") is not None
    src = scenario("rnn", T=4) + '[[breakpoints]]\nwhen = "rnn1.h.t2.grad norm > 0"\n'
    s = nnstep.Session(loads_scenario(src))
    s.run()
    assert s.ops[s.position[1] - 1].name == "backward rnn1 t2"      # stopped right after the op writing it


@pytest.mark.parametrize("case", ["rnn-tanh", "rnn-relu", "lstm", "lstm-nobias"])
def test_explain_adds_up_on_every_gradient(case):
    from nnstep.debugger.explain import explain, is_gradient
    src = scenario(**CASES[case]).replace("[loss]", '[[layers]]\ntype = "linear"\nout = 2\n[loss]')
    s = nnstep.Session(loads_scenario(src))
    s.goto(1, s.program.stage_start["update"])
    n = 0
    for name in sorted(s.names):
        if not is_gradient(s, name) or s.value(name) is None:
            continue
        elems = list(np.ndindex(*np.shape(s.value(name))))
        for idx in (elems if len(elems) <= 4 else [elems[0], elems[len(elems) // 2], elems[-1]]):
            ex = explain(s, name, idx)
            assert ex.ok, (case, name, idx, ex.text)
            n += 1
    assert n >= 20
    # and a whole-sequence tensor's element is shown from the time step's op that wrote it
    ex = explain(s, "rnn1.out" if "rnn" in case else "lstm1.out", (1, 2, 0))
    assert 'by "forward' in ex.text and ' t3"' in ex.text
    assert ex.engine_value == float(s.value("rnn1.out" if "rnn" in case else "lstm1.out")[1, 2, 0])
    L = "rnn1" if "rnn" in case else "lstm1"
    assert ex.text.startswith(f"{L}.out[1, 2, 0] is {L}.h.t3[1, 0]:") and ex.value == ex.engine_value
    # a time step's pre-activation as a sum of products that adds up to the engine's number
    for k in (1, 3):
        ex = explain(s, f"{L}.pre.t{k}", (1, 1))
        assert ex.ok and "Σ over the 3 inputs at t%d" % k in ex.text, ex.text
        assert abs(ex.value - float(s.value(f"{L}.pre.t{k}")[1, 1])) < 1e-12


def test_float32_stays_float32():
    sc = loads_scenario(scenario("lstm").replace("seed = 0", 'seed = 0\ndtype = "float32"'))
    prog, env = engine_env(sc)
    for n in ("lstm1.out", "lstm1.c", "lstm1.gates.t2", "lstm1.h.t1.grad", "lstm1.weight_ih.grad", "lstm1.grad_in"):
        assert env[n].dtype == np.float32, n


STACK = """
[scenario]
seed = 5
[data]
x = { random = "normal", shape = [2, 4, 3] }
y = { random = "normal", shape = [2, 4, 2] }
[[layers]]
type = "linear"
out = 3
[[layers]]
type = "lstm"
hidden = 2
[[layers]]
type = "rnn"
hidden = 2
nonlinearity = "relu"
[[layers]]
type = "add"
inputs = ["lstm1", "rnn1"]
[loss]
type = "mse"
"""


def test_stacked_and_forked_recurrent_layers():
    """linear -> lstm -> rnn, with lstm1's output also added to rnn1's: lstm1's gradient arriving
    from two readers is summed in its first backward op (tT), linear1 gets its grad_out from the
    lstm's grad_in, and every parameter agrees with central differences; explain adds up."""
    from nnstep.debugger.explain import explain, is_gradient
    from nnstep.engine.gradcheck import gradcheck
    sc = loads_scenario(STACK)
    rows = gradcheck(sc)
    assert len(rows) == 10 and all(r[3] < 1e-6 for r in rows), rows
    prog = Program(sc)
    op = next(o for o in prog.ops if o.name == "backward lstm1 t4")
    assert op.sums == ("rnn1.grad_in", "add1.grad_in.0")
    s = nnstep.Session(sc)
    s.goto(1, s.program.stage_start["update"])
    np.testing.assert_array_equal(s.value("linear1.grad_out"), s.value("lstm1.grad_in"))
    n = 0
    for name in sorted(s.names):
        if is_gradient(s, name) and s.value(name) is not None:
            for idx in list(np.ndindex(*np.shape(s.value(name))))[:2]:
                assert explain(s, name, idx).ok, (name, idx)
                n += 1
    assert n > 60


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_backward_ops_name_their_paths_before_the_numbers(kind):
    """A time step's backward op starts with a remark in names only (it stays symbolic where the
    clauses show their numbers, as the TUI's compact view does): which term of dLoss/dh_t is the
    output path and which the recurrent path; the clause itself labels them too; explain says it."""
    from nnstep.debugger.explain import explain
    from nnstep.model.formula import views
    s = nnstep.Session(loads_scenario(scenario(kind, T=3)))
    s.goto(1, s.program.stage_start["update"])
    for k, paths in ((3, "one path"), (2, "two paths")):
        op = next(o for o in s.ops if o.name == f"backward {kind}1 t{k}")
        rec = s.record_at(1, op.index)
        v = views(op.formula, rec.inputs, rec.outputs, step=1)
        assert not v[0].filled and v[0].numbers == v[0].text and v[0].text.startswith(f"({paths} reach")
        assert f"the output path, {kind}1.grad_out[:, {k - 1}]" in v[0].text
        h = next(c for c in v if c.lhs == f"{kind}1.h.t{k}.grad")
        if k < 3:
            assert f"the recurrent path, {kind}1.pre.t{k + 1}.grad @ {kind}1.weight_hh" in v[0].text
            assert h.text.endswith("(output path + recurrent path)") and h.numbers.endswith("(output path + recurrent path)")
        if kind == "lstm":
            assert f"reach{'es' if k == 3 else ''} {kind}1.c.t{k}" in v[0].text or f"one reaches {kind}1.c.t{k}" in v[0].text
    ex = explain(s, f"{kind}1.h.t2.grad", (0, 0))
    assert ex.ok and "two paths: the output path" in ex.text and "the recurrent path" in ex.text
