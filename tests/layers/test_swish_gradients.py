"""The worked example's backward (examples/layers/swish.py) against float64 central differences,
with the recipe docs/layers.md gives ("A test of your own"): f(x, P) = Σ R ⊙ forward(x, P) for a
random projection R, so backward(R, ...) must be ∂f/∂x and ∂f/∂P. The same check catches a wrong
backward: each deliberate mistake below makes it fail."""
import importlib.util
import os

import numpy as np
import pytest

from nnstep.model.scenario import LayerSpec

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SWISH_PY = os.path.join(ROOT, "examples", "layers", "swish.py")


def swish_class():
    """The example's class, imported as a module of its own (not registered: no scenario here)."""
    spec = importlib.util.spec_from_file_location("swish_example_for_tests", SWISH_PY)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.Swish


def make(cls, in_shape):
    out, pshapes = cls.shapes({}, [tuple(in_shape)])
    return cls(LayerSpec(index=0, type=cls.type, name="swish1", options={}, in_shape=tuple(in_shape),
                         out_shape=tuple(out), params=tuple(pshapes), inputs=("input",),
                         in_shapes=(tuple(in_shape),)))


def numeric(f, a, eps=1e-6):
    """∂f/∂a by central differences, one element at a time, in float64 (docs/layers.md's recipe)."""
    g = np.zeros_like(a)
    for j in range(a.size):
        old = a.flat[j]
        a.flat[j] = old + eps
        fp = f()
        a.flat[j] = old - eps
        fm = f()
        a.flat[j] = old
        g.flat[j] = (fp - fm) / (2 * eps)
    return g


def errors(cls, in_shape=(5,), n=4, seed=0):
    """(worst relative error of grad_in, of ∂f/∂β) of ``cls``'s backward against differences."""
    r = np.random.default_rng(seed)
    L = make(cls, in_shape)
    x = r.standard_normal((n,) + tuple(in_shape)) * 1.5
    P = {"beta": r.standard_normal(L.param_shapes["beta"]) + 1.0}
    R = r.standard_normal((n,) + L.out_shape)
    out, extras, _ = L.forward(x, P)
    assert out.dtype == np.float64 and out.shape == x.shape
    gin, grads, local = L.backward(R, x, out, P, extras)

    def f():
        return float(np.sum(R * L.forward(x, P)[0]))

    def rel(a, b):
        return float(np.max(np.abs(a - b) / (1e-2 + np.maximum(np.abs(a), np.abs(b)))))   # rtol 1e-6, atol 1e-8
    return rel(gin, numeric(f, x)), rel(grads["beta"], numeric(f, P["beta"]))


@pytest.mark.parametrize("in_shape", [(5,), (3, 4)], ids=["features", "sequence"])
def test_the_example_backward_agrees_with_central_differences(in_shape):
    e_in, e_beta = errors(swish_class(), in_shape)
    assert e_in < 1e-6 and e_beta < 1e-6, (e_in, e_beta)


def test_the_forward_is_x_times_sigma_of_beta_x_element_by_element():
    L = make(swish_class(), (3,))
    x = np.array([[0.5, -1.0, 2.0]])
    beta = np.array([1.0, 0.5, -2.0])
    out = L.forward(x, {"beta": beta})[0]
    want = [v / (1 + np.exp(-b * v)) for v, b in zip(x[0], beta)]
    np.testing.assert_allclose(out[0], want, rtol=1e-15)


@pytest.mark.parametrize("mistake, which", [
    (lambda g, s, b, x, d: g * s, "grad_in"),                          # forgot β·x·s·(1 − s)
    (lambda g, s, b, x, d: g * (s + x * d), "grad_in"),                # forgot β
])
def test_a_wrong_grad_in_is_caught(mistake, which):
    Swish = swish_class()

    class Wrong(Swish):
        def backward(self, g, x, out, P, extras):
            gin, grads, local = Swish.backward(self, g, x, out, P, extras)
            b = P["beta"]
            s = 1 / (1 + np.exp(-b * x))
            return mistake(g, s, b, x, s * (1 - s)), grads, local
    e_in, e_beta = errors(Wrong)
    assert e_in > 1e-2 and e_beta < 1e-6, (e_in, e_beta)


def test_a_wrong_beta_gradient_is_caught():
    Swish = swish_class()

    class Wrong(Swish):
        def backward(self, g, x, out, P, extras):
            gin, grads, local = Swish.backward(self, g, x, out, P, extras)
            return gin, {"beta": grads["beta"] / x.shape[0]}, local     # a mean where the batch sums
    e_in, e_beta = errors(Wrong)
    assert e_in < 1e-6 and e_beta > 1e-2, (e_in, e_beta)
