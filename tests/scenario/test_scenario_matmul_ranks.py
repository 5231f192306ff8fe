"""Issue 29: `matmul` of inputs whose per-sample ranks differ, such as per sample [3, 2, 2] @ [2, 4]
(batched (N, 3, 2, 2) @ (N, 2, 4)), passed validation and crashed in numpy (the batch N met the 3).

Its meaning, chosen for a layer that works per sample: the batch dim is kept, and the per-sample
leading dims broadcast as matmul broadcasts them: per sample (3, 2, 2) @ (2, 4) -> (3, 2, 4), which
is torch.matmul(a, b[:, None]) on the batched tensors. torch.matmul(a, b) itself would pair the
batch of b with a's 3 (an error unless N is 3 or 1, and a different product when N is 3). Shape
inference, the engine's forward and backward, explain and export --torch agree on it; the
references below are per-sample numpy products and float64 central differences, nothing golden."""
from __future__ import annotations

import re

import numpy as np
import pytest

from nnstep.layers import layer_type
from nnstep.model.scenario import LayerSpec
from nnstep.errors import ScenarioError
from nnstep.scenario import loads_scenario

# per-sample shapes of a and b; out per sample is broadcast(a_lead, b_lead) + (n, m)
PAIRS = [((3, 2, 2), (2, 4)), ((2, 3), (4, 3, 2)), ((3, 1, 2, 2), (4, 2, 3)), ((1, 2, 3), (5, 3, 2)),
         ((3, 2, 2), (1, 2, 4)), ((2, 2), (2, 2))]


def per_sample(a, b):
    """The meaning: one numpy matmul per sample."""
    return np.stack([np.matmul(a[n], b[n]) for n in range(a.shape[0])])


def layer(sa, sb):
    cls = layer_type("matmul")
    out, _ = cls.shapes({}, [sa, sb])
    return cls(LayerSpec(index=0, type="matmul", name="matmul1", options={}, in_shape=sa, out_shape=out, params=(),
                         inputs=("a.out", "b.out"), in_shapes=(sa, sb)))


@pytest.mark.parametrize("sa,sb", PAIRS)
@pytest.mark.parametrize("N", [2, 3])
def test_forward_is_a_matmul_per_sample(sa, sb, N):
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(N,) + sa), rng.normal(size=(N,) + sb)
    L = layer(sa, sb)
    out, _, _ = L.forward([a, b], {})
    ref = per_sample(a, b)
    assert out.shape == ref.shape == (N,) + L.out_shape
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("sa,sb", PAIRS)
def test_backward_against_central_differences(sa, sb):
    """d(Σ out ⊙ R)/d a and /d b in float64, the gradient summed over every broadcast copy."""
    rng = np.random.default_rng(2)
    N = 3
    a, b = rng.normal(size=(N,) + sa), rng.normal(size=(N,) + sb)
    L = layer(sa, sb)
    R = rng.normal(size=(N,) + L.out_shape)
    (ga, gb), _, _ = L.backward(R, [a, b], None, {}, {})
    eps = 1e-6
    for x, g in ((a, ga), (b, gb)):
        num = np.zeros_like(x)
        flat, nflat = x.reshape(-1), num.reshape(-1)
        for j in range(flat.size):
            old = flat[j]
            flat[j] = old + eps
            fp = float((per_sample(a, b) * R).sum())
            flat[j] = old - eps
            fm = float((per_sample(a, b) * R).sum())
            flat[j] = old
            nflat[j] = (fp - fm) / (2 * eps)
        assert g.shape == x.shape
        np.testing.assert_allclose(g, num, rtol=1e-7, atol=1e-8)


def test_leading_dims_that_do_not_broadcast_are_refused():
    with pytest.raises(ScenarioError) as e:
        loads_scenario(scenario((3, 2, 2), (4, 2, 5)), path="net.toml")
    assert str(e.value) == ("net.toml: layers[4]: matmul1 (matmul) cannot merge layers[2] (reshape1) [N, 3, 2, 2] and "
                            "layers[3] (reshape2) [N, 4, 2, 5]: matmul's leading dimensions do not broadcast: "
                            "[N, 3, 2, 2] @ [N, 4, 2, 5]")


def scenario(sa, sb, N=2) -> str:
    """Two linear layers on the data, reshaped to a's and b's per-sample shapes, a @ b, mse (y:
    the product's shape; a's own leading dims where they do not broadcast, for the refusal)."""
    na, nb = int(np.prod(sa)), int(np.prod(sb))
    try:
        lead = tuple(np.broadcast_shapes(sa[:-2], sb[:-2]))
    except ValueError:
        lead = sa[:-2]
    out = lead + (sa[-2], sb[-1])
    return f"""
[scenario]
seed = 4
[data]
x = {{ random = "normal", shape = [{N}, 3] }}
y = {{ random = "normal", shape = [{N}, {", ".join(map(str, out))}] }}
[[layers]]
type = "linear"
out = {na}
[[layers]]
type = "linear"
input = "input"
out = {nb}
[[layers]]
type = "reshape"
input = "linear1"
shape = [{", ".join(map(str, sa))}]
[[layers]]
type = "reshape"
input = "linear2"
shape = [{", ".join(map(str, sb))}]
[[layers]]
type = "matmul"
inputs = ["reshape1", "reshape2"]
[loss]
type = "mse"
"""


def test_scenario_runs_and_gradchecks(tmp_path, monkeypatch, capsys):
    """The whole program, as a user runs it: `run` (a traceback from numpy before), and
    `gradcheck`, whose central differences go through the matmul's backward to the linear layers."""
    from nnstep.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.toml").write_text(scenario((3, 2, 2), (2, 4)))
    assert main(["run", "net.toml"]) == 0
    assert main(["gradcheck", "net.toml"]) == 0, capsys.readouterr().out
    assert "4 of 4 parameters within tolerance" in capsys.readouterr().out


@pytest.mark.parametrize("tensor", ["matmul1.grad_in.0[1, 2, 0, 1]", "matmul1.grad_in.1[1, 0, 3]",
                                    "reshape2.grad_in[0, 5]", "linear2.weight.grad[5, 1]"])
def test_explain_agrees_with_the_engine(tensor):
    """explain's chain rule, element by element, combines to the engine's value (its own check)."""
    from nnstep.debugger.explain import explain, parse_element
    from nnstep.debugger.session import Session

    s = Session(loads_scenario(scenario((3, 2, 2), (2, 4)), path="net.toml"))
    name, index = parse_element(tensor)
    ex = explain(s, name, index, step=1)
    assert ex.ok, ex.text


@pytest.mark.parametrize("sa,sb", PAIRS)
def test_export_writes_the_same_product(sa, sb, tmp_path):
    """The script's line for the layer, read as torch reads it (a[:, None] indexes as numpy does,
    and torch.matmul broadcasts as np.matmul), gives the engine's output."""
    from nnstep.engine.program import Program
    from nnstep.export_torch import build

    sc = loads_scenario(scenario(sa, sb, N=3), path="net.toml")
    text, _ = build(sc, "net.toml", None)
    m = re.search(r"(\w+) = torch\.matmul\((\w+)((?:\[:(?:, None)+\])?), (\w+)((?:\[:(?:, None)+\])?)\)", text)
    assert m, [ln for ln in text.splitlines() if "matmul" in ln]
    prog = Program(sc)
    env = prog.initial_env()
    prog.feed(env, 1)
    for fn in prog.fns[:prog.stage_start["loss"]]:
        fn(env, 1)
    a, b = env["reshape1.out"], env["reshape2.out"]
    ea, eb = m.group(3).count("None"), m.group(5).count("None")
    a = a.reshape(a.shape[:1] + (1,) * ea + a.shape[1:])
    b = b.reshape(b.shape[:1] + (1,) * eb + b.shape[1:])
    np.testing.assert_array_equal(np.matmul(a, b), env["matmul1.out"])
