"""Graph networks (docs/scenario-format.md): every gradient tensor of a network, parameters and intermediates
(fork sums, merges' grad_in.k, attention's q/k/v/scores/weights/context gradients), against float64
central differences of the loss; and the attention layer against the same head built from
primitives.

The finite-difference oracle is generic: run the step's forward ops, then for a tensor X written
by op w, perturb one element of X and re-run only the ops after w up to the loss. dLoss/dX by
central differences must equal the engine's gradient of X: <layer>.grad_out for a layer's output,
<layer>.<t>.grad for attention's intermediates, the sum of the readers' grad_in for the batch.
"""
import numpy as np
import pytest

from nnstep import loads_scenario
from nnstep.engine.program import Program

RESIDUAL = """
[scenario]
seed = 1
[data]
x = { random = "normal", shape = [4, 3] }
y = { random = "normal", shape = [4, 3] }
[[layers]]
type = "linear"
name = "h"
out = 3
[[layers]]
type = "tanh"
[[layers]]
type = "linear"
out = 3
[[layers]]
type = "add"
inputs = ["h", "linear2"]
[[layers]]
type = "linear"
out = 2
[loss]
type = "mse"
""".replace('y = { random = "normal", shape = [4, 3] }', 'y = { random = "normal", shape = [4, 2] }')

GATED = """
[scenario]
seed = 2
[data]
x = { random = "normal", shape = [3, 4] }
y = { random = "normal", shape = [3, 3] }
[[layers]]
type = "linear"
name = "value"
out = 3
[[layers]]
type = "linear"
name = "gate_in"
input = "input"
out = 3
[[layers]]
type = "sigmoid"
name = "gate"
[[layers]]
type = "mul"
inputs = ["value", "gate"]
[loss]
type = "mse"
"""

CONCAT = """
[scenario]
seed = 3
[data]
x = { random = "normal", shape = [3, 2] }
y = [0, 2, 1]
[[layers]]
type = "linear"
name = "a"
out = 3
[[layers]]
type = "relu"
[[layers]]
type = "linear"
name = "b"
input = "input"
out = 2
[[layers]]
type = "tanh"
[[layers]]
type = "concat"
inputs = ["relu1", "tanh1", "input"]
[[layers]]
type = "linear"
out = 3
[loss]
type = "cross_entropy"
"""

# one attention head from primitives: q, k, v as linears, kᵀ, q @ kᵀ, / √E, softmax, @ v, out
PRIMITIVES = """
[scenario]
seed = 4
[data]
x = { random = "normal", shape = [2, 3, 4] }
y = { random = "normal", shape = [2, 3, 4] }
[[layers]]
type = "linear"
name = "q"
out = 4
[[layers]]
type = "linear"
name = "k"
input = "input"
out = 4
[[layers]]
type = "linear"
name = "v"
input = "input"
out = 4
[[layers]]
type = "transpose"
name = "kT"
input = "k"
dims = [1, 2]
[[layers]]
type = "matmul"
name = "qk"
inputs = ["q", "kT"]
[[layers]]
type = "scale"
name = "scores"
by = 0.5
[[layers]]
type = "softmax"
name = "weights"
[[layers]]
type = "matmul"
name = "context"
inputs = ["weights", "v"]
[[layers]]
type = "linear"
name = "out"
out = 4
[loss]
type = "mse"
"""

ATTENTION = """
[scenario]
seed = 5
[data]
x = { random = "normal", shape = [2, 3, 4] }
y = { random = "normal", shape = [2, 3, 4] }
[[layers]]
type = "attention"
heads = @HEADS@
causal = @CAUSAL@
bias = @BIAS@
[[layers]]
type = "linear"
out = 4
[loss]
type = "mse"
"""

LM = """
[scenario]
seed = 6
[data]
x = [[3, 1, 4, 1], [0, 2, 2, 5]]
y = [[1, 4, 1, 5], [2, 2, 5, 0]]
[[layers]]
type = "embedding"
num = 6
dim = 4
[[layers]]
type = "attention"
heads = 2
causal = true
[[layers]]
type = "add"
inputs = ["embedding1", "attention1"]
[[layers]]
type = "layernorm"
dims = 1
[[layers]]
type = "linear"
out = 6
[loss]
type = "cross_entropy"
class_dim = -1
"""

MISC = """
[scenario]
seed = 7
[data]
x = { random = "normal", shape = [2, 2, 3] }
y = { random = "normal", shape = [2, 2, 3] }
[[layers]]
type = "reshape"
shape = [3, 2]
[[layers]]
type = "scale"
by = -0.5
[[layers]]
type = "transpose"
dims = [-1, 1]
[[layers]]
type = "matmul"
inputs = ["transpose1", "reshape1"]
[[layers]]
type = "matmul"
inputs = ["matmul1", "transpose1"]
[loss]
type = "mse"
"""

def att(heads, causal, bias):
    return ATTENTION.replace("@HEADS@", str(heads)).replace("@CAUSAL@", causal).replace("@BIAS@", bias)


NETS = {"residual": RESIDUAL, "gated": GATED, "concat": CONCAT, "primitives": PRIMITIVES,
        "attention": att(2, "false", "true"),
        "attention-causal-nobias": att(1, "true", "false"),
        "attention-4heads-causal": att(4, "true", "true"), "lm": LM, "misc": MISC}


def forward_env(prog):
    env = prog.initial_env()
    prog.feed(env, 1)
    with np.errstate(all="ignore"):
        for fn in prog.fns[:prog.stage_start.get("update", len(prog.ops))]:   # all but the updates
            fn(env, 1)
    return env


def loss_after(prog, env, writer: int, name: str, value):
    """The loss with tensor ``name`` (written by op ``writer``) replaced by ``value``: the ops after
    it re-run, up to the loss."""
    e = dict(env)
    e[name] = value
    end = prog.stage_start["backward"]
    for fn in prog.fns[writer + 1:end]:
        fn(e, 1)
    return float(e["loss"])


def grad_of(prog, env, name):
    """The engine's dLoss/d(name)."""
    plan = prog.plan
    if name == "input":
        gs = [env[c] for c in plan.contributions("input") if c in env]
        return sum(gs) if gs else None
    for op in plan.ops:
        for s in op.outs:
            if s.of == name and s.role in ("upstream", "grad"):
                return env[s.name]
    L = name.rsplit(".", 1)[0]
    return env.get(f"{L}.grad_out") if name.endswith(".out") else None


@pytest.mark.parametrize("net", list(NETS), ids=list(NETS))
def test_every_gradient_tensor_matches_central_differences(net):
    sc = loads_scenario(NETS[net])
    prog = Program(sc)
    env = forward_env(prog)
    checked = 0
    for op in prog.ops:
        if op.stage != "forward":
            continue
        for s in op.outs:
            name = s.name
            if s.role not in ("result",) or np.asarray(env[name]).dtype.kind != "f":
                continue
            g = grad_of(prog, env, name)
            assert g is not None, name
            x = np.ascontiguousarray(env[name], dtype=np.float64)
            num = np.zeros_like(x)
            eps = 1e-6
            for j in range(x.size):
                xp, xm = x.copy().reshape(-1), x.copy().reshape(-1)
                xp[j] += eps
                xm[j] -= eps
                num.reshape(-1)[j] = (loss_after(prog, env, op.index, name, xp.reshape(x.shape))
                                      - loss_after(prog, env, op.index, name, xm.reshape(x.shape))) / (2 * eps)
            np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-9, err_msg=f"{net}: dLoss/d{name}")
            checked += 1
    # parameters and the batch
    for p in sc.param_names:
        w = np.array(env[p])
        num = np.zeros_like(w)
        for j in range(w.size):
            for sign in (1, -1):
                wp = w.copy().reshape(-1)
                wp[j] += sign * 1e-6
                e = prog.initial_env()
                e[p] = wp.reshape(w.shape)
                prog.feed(e, 1)
                for fn in prog.fns[:prog.stage_start["backward"]]:
                    fn(e, 1)
                num.reshape(-1)[j] += sign * float(e["loss"]) / 2e-6
        np.testing.assert_allclose(env[f"{p}.grad"], num, rtol=1e-6, atol=1e-9, err_msg=f"{net}: dLoss/d{p}")
        checked += 1
    assert checked >= 3


def test_attention_layer_equals_the_head_built_from_primitives():
    """One head, no mask: the attention layer with in_proj = [Wq; Wk; Wv] and the primitives net
    with the same weights give the same output, loss and gradients (in_proj_weight.grad is the
    three linears' gradients stacked), to float64 rounding."""
    prim = loads_scenario(PRIMITIVES.replace("by = 0.5", "by = 0.5"))   # 1/√E with E = 4
    lay = loads_scenario(att(1, "false", "true").replace(
        '[[layers]]\ntype = "linear"\nout = 4\n', '[[layers]]\ntype = "linear"\nname = "out"\nout = 4\n')
        .replace("seed = 5", "seed = 4"))
    W = {n: prim.initial[f"{n}.weight"] for n in ("q", "k", "v")}
    b = {n: prim.initial[f"{n}.bias"] for n in ("q", "k", "v")}
    lay.initial["attention1.in_proj_weight"] = np.concatenate([W["q"], W["k"], W["v"]])
    lay.initial["attention1.in_proj_bias"] = np.concatenate([b["q"], b["k"], b["v"]])
    # the primitives' context feeds "out" directly; the layer has its own out_proj: make it the identity
    lay.initial["attention1.out_proj_weight"] = np.eye(4)
    lay.initial["attention1.out_proj_bias"] = np.zeros(4)
    for p in ("out.weight", "out.bias"):
        lay.initial[p] = prim.initial[p]
    lay.x, lay.y = prim.x, prim.y
    pa, pp = Program(lay), Program(prim)
    ea, ep = forward_env(pa), forward_env(pp)
    assert float(ea["loss"]) == pytest.approx(float(ep["loss"]), rel=1e-14)
    np.testing.assert_allclose(ea["attention1.weights"][:, 0], ep["weights.out"], rtol=1e-13)
    np.testing.assert_allclose(ea["attention1.context"], ep["context.out"], rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(ea["attention1.in_proj_weight.grad"],
                               np.concatenate([ep[f"{n}.weight.grad"] for n in ("q", "k", "v")]), rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(ea["attention1.grad_in"], sum(ep[f"{n}.grad_in"] for n in ("q", "k", "v")),
                               rtol=1e-11, atol=1e-14)
    # the layer's scores are the primitives' scores.out (q·kᵀ/√E), its weights their weights.out
    np.testing.assert_allclose(ea["attention1.scores.grad"][:, 0], ep["scores.grad_out"], rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(ea["attention1.weights.grad"][:, 0], ep["weights.grad_out"], rtol=1e-11, atol=1e-14)


def test_the_causal_mask_puts_exact_zeros_in_the_weights_and_their_gradients():
    sc = loads_scenario(att(2, "true", "true"))
    prog = Program(sc)
    env = forward_env(prog)
    A, S = env["attention1.weights"], env["attention1.scores"]
    hidden = np.triu(np.ones((3, 3), dtype=bool), 1)
    assert np.all(A[..., hidden] == 0.0) and np.all(A[..., ~hidden] > 0)
    assert np.all(np.isfinite(S))                         # scores are before the mask: always finite
    np.testing.assert_allclose(A.sum(axis=-1), 1.0, rtol=1e-15)
    assert np.all(env["attention1.scores.grad"][..., hidden] == 0.0)


@pytest.mark.parametrize("net", list(NETS), ids=list(NETS))
def test_explain_adds_up_on_every_gradient_of_the_graph(net):
    """explain's element rules (merges, shape layers, embedding, every attention sub-step, fork
    sums) against the vectorized backward: every line of every explanation adds up."""
    import nnstep
    from nnstep.debugger.explain import explain, is_gradient
    s = nnstep.Session(loads_scenario(NETS[net]))
    s.goto(1, s.program.stage_start.get("update", s.M - 1) if "update" in s.program.stage_start else 0)
    if "update" not in s.program.stage_start:
        s.goto(2, 0)
    n = 0
    for name in sorted(s.names):
        if not is_gradient(s, name) or s.value(name) is None:
            continue
        elems = list(np.ndindex(*np.shape(s.value(name))))
        for idx in (elems if len(elems) <= 4 else [elems[0], elems[len(elems) // 2], elems[-1]]):
            ex = explain(s, name, idx)
            assert ex.ok, (net, name, idx, ex.text)
            n += 1
    assert n >= 5


def test_the_mask_helper_names_the_cells_the_engine_zeroes():
    """layers.attention.Attention.masked(L): the (T, T) cells a causal mask hides, for the engine and
    for any screen that marks them; None without the mask."""
    from nnstep.layers.attention import Attention
    sc = loads_scenario(att(2, "true", "true"))
    L = sc.layers[0]
    hidden = Attention.masked(L)
    env = forward_env(Program(sc))
    assert hidden.shape == (3, 3) and np.array_equal(env["attention1.weights"][0, 0] == 0.0, hidden)
    assert np.all(np.isfinite(env["attention1.scores"][..., hidden]))
    assert Attention.masked(loads_scenario(att(2, "false", "true")).layers[0]) is None
