"""The graph-network lessons (scenarios/attention-primitives.toml, attention-layer.toml,
tiny-lm.toml), run through the Session API.

1. attention-layer.toml is attention-primitives.toml's head as one `attention` layer: after each of
   the layer's ops, the primitives' session stopped after the op computing the same thing holds
   the same tensors (forward values, gradients, parameters), to 1e-12, on every training step.
2. The two lessons carry the same [[expect]] values on corresponding tensors.
3. tiny-lm.toml's causal mask: the softmax weights above the diagonal are exactly 0 on every step,
   and so is the score gradient there, while the gradient w.r.t. those masked weights is NOT 0
   (the loss would change if they could move; the mask is what stops it reaching the scores).
"""
import os

import numpy as np
import pytest

import nnstep

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "scenarios")


def session(name):
    return nnstep.Session(nnstep.load_scenario(os.path.join(ROOT, name)))


def after(s, k, op_name):
    """Put the cursor just after op ``op_name`` of step ``k``."""
    i = next(op.index for op in s.ops if op.name == op_name)
    s.goto(k, i + 1)


# What the layer `head` computes, as functions of the primitives' tensors: (layer tensor, f(value)).
# The layer's q/k/v/scores/weights carry a head dimension (N, heads = 1, T, ·).
h1 = lambda name: (lambda P: P(name)[:, None])                 # noqa: E731
STACK = lambda *names: (lambda P: np.concatenate([P(n) for n in names]))   # noqa: E731
CHECKPOINTS = [
    # (op of the layer, op of the primitives after which the same values exist, pairs)
    ("forward head qkv", "forward v",
     [("head.q", h1("q.out")), ("head.k", h1("k.out")), ("head.v", h1("v.out"))]),
    ("forward head scores", "forward scores",
     [("head.scores", h1("scores.out")),
      ("head.scores", lambda P: 0.5 * P("qk.out")[:, None]),
      ("head.k", lambda P: np.swapaxes(P("kT.out"), 1, 2)[:, None])]),
    ("forward head softmax", "forward weights", [("head.weights", h1("weights.out"))]),
    ("forward head context", "forward context", [("head.context", lambda P: P("context.out"))]),
    ("forward head out", "forward out", [("head.out", lambda P: P("out.out"))]),
    ("loss", "loss", [("loss", lambda P: P("loss"))]),
    ("backward loss", "backward loss", [("loss.grad", lambda P: P("loss.grad")),
                                        ("head.grad_out", lambda P: P("out.grad_out"))]),
    ("backward head out", "backward out",
     [("head.context.grad", lambda P: P("context.grad_out")),
      ("head.out_proj_weight.grad", lambda P: P("out.weight.grad"))]),
    ("backward head context", "backward context",
     [("head.weights.grad", h1("weights.grad_out")), ("head.v.grad", h1("v.grad_out"))]),
    ("backward head softmax", "backward weights", [("head.scores.grad", h1("scores.grad_out"))]),
    ("backward head scores", "backward kT",
     [("head.q.grad", h1("q.grad_out")), ("head.k.grad", h1("k.grad_out")),
      ("head.scores.grad", lambda P: 2.0 * P("qk.grad_out")[:, None])]),
    ("backward head qkv", "backward q",
     [("head.in_proj_weight.grad", STACK("q.weight.grad", "k.weight.grad", "v.weight.grad")),
      ("head.grad_in", lambda P: P("q.grad_in") + P("k.grad_in") + P("v.grad_in"))]),
    ("update head.out_proj_weight", "update out.weight",
     [("head.in_proj_weight", STACK("q.weight", "k.weight", "v.weight")),
      ("head.out_proj_weight", lambda P: P("out.weight")),
      ("head.in_proj_weight.delta", STACK("q.weight.delta", "k.weight.delta", "v.weight.delta"))]),
]


def test_the_attention_layer_lesson_equals_the_primitives_lesson_op_by_op():
    lay, prim = session("attention-layer.toml"), session("attention-primitives.toml")
    assert lay.N == prim.N >= 3
    n = 0
    for k in range(1, lay.N + 1):
        for lay_op, prim_op, pairs in CHECKPOINTS:
            after(lay, k, lay_op)
            after(prim, k, prim_op)
            for name, f in pairs:
                got, want = lay.value(name), f(prim.value)
                assert got.shape == want.shape, (k, name)
                np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=f"step {k}: {name}")
                n += 1
    # the lessons train: the parameters really move, so later steps compare new numbers
    assert not np.allclose(lay.value("head.in_proj_weight"), lay.scenario.initial["head.in_proj_weight"])
    assert n == lay.N * sum(len(p) for _, _, p in CHECKPOINTS)


def test_the_two_attention_lessons_expect_the_same_numbers():
    """Lesson 4 restates lesson 3's expectations on the layer's tensors, value for value."""
    same = {"scores.out": "head.scores", "weights.out": "head.weights", "context.out": "head.context",
            "out.out": "head.out", "loss": "loss", "weights.grad_out": "head.weights.grad",
            "scores.grad_out": "head.scores.grad"}
    prim = nnstep.load_scenario(os.path.join(ROOT, "attention-primitives.toml")).expects
    lay = nnstep.load_scenario(os.path.join(ROOT, "attention-layer.toml")).expects
    assert [same[e.tensor] for e in prim] == [e.tensor for e in lay]
    for p, q in zip(prim, lay):
        assert (p.step, p.atol, p.rtol) == (q.step, q.atol, q.rtol)
        assert np.array_equal(p.value.reshape(-1), q.value.reshape(-1)), q.tensor


def test_tiny_lm_mask_zeros_in_the_weights_and_the_score_gradients_not_the_weight_gradients():
    s = session("tiny-lm.toml")
    T = s.value("input").shape[1]
    hidden = np.triu(np.ones((T, T), dtype=bool), 1)              # key j > query i
    for k in range(1, s.N + 1):
        s.goto(k, s.M)                                            # step k done
        W, S = s.value("attn.weights"), s.value("attn.scores")
        Wg, Sg = s.value("attn.weights.grad"), s.value("attn.scores.grad")
        assert W.shape == (1, 2, T, T)                                 # two heads
        assert np.all(W[..., hidden] == 0.0), k                        # exactly 0, not 1e-300
        assert np.all(W[..., ~hidden] > 0.0), k
        assert np.all(W[..., 0, 0] == 1.0), k                          # the first query sees one key
        np.testing.assert_allclose(W.sum(-1), 1.0, rtol=1e-15)
        assert np.all(np.isfinite(S)) and np.any(S[..., hidden] != 0)  # scores are before the mask
        assert np.all(Sg[..., hidden] == 0.0), k                       # the mask stops the gradient here
        assert np.all(Sg[..., 0, :] == 0.0), k                         # w = [1]: 1·(u₀ − u₀) = 0
        assert np.all(s.value("attn.q.grad")[..., 0, :] == 0.0), k     # so the first query learns nothing
        # ... but the gradient w.r.t. the masked weights is not 0: it is dL/dcontext_i · v_j for every
        # j, masked or not (how the loss would change if query i could see key j)
        assert np.count_nonzero(Wg[..., hidden]) > Wg[..., hidden].size // 2, k
        ctx_g = s.value("attn.context.grad")
        split = ctx_g.reshape(1, T, 2, -1).transpose(0, 2, 1, 3)      # (N, heads, T, d)
        np.testing.assert_allclose(Wg, split @ np.swapaxes(s.value("attn.v"), -1, -2), rtol=1e-12, atol=1e-15)
        # the embedding: tokens 3 and 4 are never read, token 0 twice (positions 0 and 3)
        Eg, g = s.value("embed.weight.grad"), s.value("embed.grad_out")
        assert np.all(Eg[3:] == 0.0), k
        np.testing.assert_allclose(Eg[0], g[0, 0] + g[0, 3], rtol=1e-14, atol=1e-16)
        np.testing.assert_allclose(g, s.value("attn.grad_in") + s.value("res.grad_in.0"), rtol=1e-14, atol=1e-16)
    # step 1: head 2's queries are 0, so its keys get no gradient (k.grad = scores.gradᵀ·q/√d)
    s.goto(1, s.M)
    assert np.all(s.value("attn.k.grad")[:, 1] == 0.0) and np.any(s.value("attn.k.grad")[:, 0] != 0)


def test_explain_shows_a_masked_scores_gradient_as_0_not_minus_0():
    """The masked scores' gradient is w·(…) with w = 0, which IEEE may sign as -0: explain reads 0."""
    from nnstep.debugger.explain import explain, fmt
    assert fmt(-0.0) == "0" and fmt(-1e-300) == "-1e-300"
    s = session("tiny-lm.toml")
    s.goto(1, s.M)
    ex = explain(s, "attn.scores.grad", (0, 0, 1, 3))
    assert ex.ok and ex.value == 0.0
    assert "-0" not in ex.text.replace("-0.", "")                    # no "-0" standing alone


@pytest.mark.parametrize("lesson,tensor,idx,w", [
    ("attention-primitives.toml", "scores.grad_out", (0, 2, 2), "weights.out[0, 2, {j}]"),
    ("attention-layer.toml", "head.scores.grad", (0, 0, 2, 2), "head.weights[0, 0, 2, {j}]")])
def test_explain_names_the_softmax_weights_in_each_jacobian_factor(lesson, tensor, idx, w):
    """∂w_j/∂s_i = w_j·(δ_ij − w_i), written with the elements it multiplies: for query 3 of the
    attention lessons, w = [1/3, 1/3, 1/3], so the factors are −1/9, −1/9 and 2/9, and the upstream
    u = [8, 8, 10]/3 gives (−8 − 8 + 20)/27 = 4/27 (derived in attention-primitives.toml)."""
    from nnstep.debugger.explain import explain
    s = session(lesson)
    s.goto(1, s.M)
    ex = explain(s, tensor, idx)
    assert ex.ok and ex.value == pytest.approx(4 / 27, abs=1e-15)
    first = ex.text.split("\n\n")[1]                 # the line of the element itself
    for j, delta in ((0, 0), (1, 0), (2, 1)):
        assert f"{w.format(j=j)}·({delta} − {w.format(j=2)})" in first, first
    assert first.count("× (-0.111111111)") == 2 and first.count("× 0.222222222") == 1, first
