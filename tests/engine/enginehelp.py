"""Helpers for the engine tests: float64 central differences and layer construction."""
import numpy as np


from nnstep.layers import layer_type
from nnstep.model.scenario import LayerSpec


def make_layer(type_, in_shape, name=None, in_shapes=None, **opts):
    """A layer as the loader builds it: every option filled in with its default, every parameter
    present."""
    cls = layer_type(type_)
    full = {k: opts.get(k, o.default) for k, o in cls.options.items()}
    unknown = set(opts) - set(full)
    assert not unknown, unknown
    in_shapes = [tuple(s) for s in in_shapes] if in_shapes else [tuple(in_shape)]
    out, pshapes = cls.shapes(full, in_shapes)
    name = name or f"{type_}1"
    inputs = tuple(["input"] + [f"in{k}.out" for k in range(1, len(in_shapes))])
    return cls(LayerSpec(index=0, type=type_, name=name, options=full, in_shape=tuple(in_shapes[0]),
                         out_shape=tuple(out), params=tuple(pshapes), inputs=inputs, in_shapes=tuple(in_shapes)))


def central_diff(f, arrays, eps=1e-6):
    """d f / d a for every array a in ``arrays`` (a list), by central differences, in float64.
    ``f()`` reads the arrays, which are perturbed in place one element at a time and restored."""
    out = []
    for a in arrays:
        g = np.zeros_like(a, dtype=np.float64)
        flat = a.reshape(-1)
        gflat = g.reshape(-1)
        for j in range(flat.size):
            old = flat[j]
            flat[j] = old + eps
            fp = f()
            flat[j] = old - eps
            fm = f()
            flat[j] = old
            gflat[j] = (fp - fm) / (2 * eps)
        out.append(g)
    return out


def assert_grad_close(analytic, numeric, rtol=1e-6, atol=1e-8, what=""):
    analytic = np.asarray(analytic, dtype=np.float64)
    assert analytic.shape == numeric.shape, (what, analytic.shape, numeric.shape)
    err = np.abs(analytic - numeric)
    bound = atol + rtol * np.maximum(np.abs(analytic), np.abs(numeric))
    assert np.all(err <= bound), f"{what}: worst error {err.max():.3g} (analytic {analytic.ravel()[:6]}, numeric {numeric.ravel()[:6]})"


def rng(seed=12345):
    return np.random.default_rng(seed)


# --- losses and optimizers, as the program drives them --------------------------------------------
def loss(kind, reduction="mean", scale=1.0, **opts):
    """A loss type's class made for these options (nnstep.layers.losses / crossentropy)."""
    from nnstep.layers.registry import loss_types
    from nnstep.model.scenario import LossSpec
    return loss_types()[kind](LossSpec(kind, reduction=reduction, scale=scale, **opts))


def loss_forward(kind, p, y, reduction, scale, lp=None, **opts):
    return loss(kind, reduction, scale, **opts).forward(p, y, lp=lp)


def loss_backward(kind, p, y, reduction, scale, lp=None, **opts):
    return loss(kind, reduction, scale, **opts).backward(p, y, lp=lp)


def optimizer(spec):
    """An optimizer type's class made for an OptimizerSpec (nnstep.layers.optimizers)."""
    from nnstep.layers.registry import optimizer_types
    return optimizer_types()[spec.type](spec)


def update(spec, t, p, grad, state, lr=None):
    return optimizer(spec).update(t, p, grad, state, lr=lr)


def optimizer_state(spec):
    return optimizer(spec).state()


def schedule(opt):
    """The schedule type's class of an OptimizerSpec's schedule (nnstep.layers.schedules)."""
    from nnstep.layers.registry import schedule_types
    return schedule_types()[opt.schedule.type](opt.schedule, opt)


def run_step(prog, env: dict, k: int, detector=None):
    """Feed step k's batch and run all its ops in ``env`` through the one op runner. With a
    ``detector`` (:class:`~nnstep.engine.runner.Detector`), halt at its first stop and return it;
    else None."""
    from nnstep.engine.runner import advance
    prog.feed(env, k)
    M = len(prog.ops)
    stops = []
    advance(prog, env, k, 0, k * M, k - 1, detector, sink=lambda s: stops.append(s) or True)
    return stops[0] if stops else None


# A small network to train, for the optimizers' and the losses' tests: SMALL_NET.format(opt=...) with
# the [optimizer] table's lines
SMALL_NET = """
[scenario]
seed = 4
[data]
x = {{ random = "normal", shape = [6, 3] }}
y = {{ random = "normal", shape = [6, 2] }}
[[layers]]
type = "linear"
out = 4
[[layers]]
type = "tanh"
[[layers]]
type = "linear"
out = 2
[loss]
type = "mse"
[optimizer]
{opt}
[train]
steps = 6
batch_size = 4
"""
