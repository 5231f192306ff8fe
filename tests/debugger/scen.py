"""Small scenarios for the session tests, and the oracle: a fresh session replayed forward."""
import numpy as np

import nnstep

SGD_MOMENTUM = """
[scenario]
name = "sgd momentum, shuffled"
seed = 3
[data]
x = { random = "normal", shape = [5, 3] }
y = { random = "normal", shape = [5, 2] }
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
type = "sgd"
lr = 0.1
momentum = 0.9
nesterov = true
weight_decay = 0.01
[train]
steps = 9
batch_size = 2
shuffle = true
"""

ADAM_BATCHNORM = """
[scenario]
name = "adam, batchnorm, shuffled"
seed = 5
[data]
x = { random = "normal", shape = [6, 3] }
y = { random = "integers", low = 0, high = 3, shape = [6] }
[[layers]]
type = "linear"
out = 4
[[layers]]
type = "batchnorm"
[[layers]]
type = "relu"
[[layers]]
type = "linear"
out = 3
frozen = ["bias"]
[loss]
type = "cross_entropy"
[optimizer]
type = "adam"
lr = 0.05
[train]
steps = 9
batch_size = 4
shuffle = true
"""

FLOAT32_LAYERNORM = """
[scenario]
name = "float32, layernorm, gelu, dampened momentum"
seed = 7
dtype = "float32"
[data]
x = { random = "uniform", low = -2.0, high = 2.0, shape = [7, 4] }
y = { random = "normal", shape = [7, 2] }
[[layers]]
type = "linear"
out = 5
[[layers]]
type = "layernorm"
[[layers]]
type = "gelu"
[[layers]]
type = "linear"
out = 2
[loss]
type = "huber"
delta = 0.5
[optimizer]
type = "sgd"
lr = 0.05
momentum = 0.5
dampening = 0.3
[train]
steps = 8
batch_size = 3
shuffle = true
"""

SCENARIOS = {"sgd_momentum": SGD_MOMENTUM, "adam_batchnorm": ADAM_BATCHNORM, "float32_layernorm": FLOAT32_LAYERNORM}


def load(text):
    return nnstep.loads_scenario(text)


def snapshot(s):
    """What a session shows at its cursor, copied (so an in-place change elsewhere cannot hide)."""
    rec = s.last_record
    return {
        "position": s.position,
        "values": {k: (None if v is None else np.array(v, copy=True)) for k, v in s.values().items()},
        "record": None if rec is None else (rec.step, rec.index, _copy(rec.inputs), _copy(rec.outputs)),
        "losses": s.loss_history(),
        "start": {n: _c(s.step_start_value(n)) for n in sorted(s.names)},
    }


def _c(v):
    return None if v is None else np.array(v, copy=True)


def _copy(d):
    return {k: _c(v) for k, v in d.items()}


def oracle(sc):
    """Snapshots of a fresh session stepped forward op by op, by linear position 0..N*M."""
    s = nnstep.Session(sc)
    out = [snapshot(s)]
    while not s.at_end:
        s.step()
        out.append(snapshot(s))
    return out


def same(a, b) -> bool:
    if a is None or b is None:
        return a is b
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


def assert_same_dict(got: dict, want: dict, what: str):
    assert sorted(got) == sorted(want), f"{what}: names differ: {sorted(set(got) ^ set(want))}"
    bad = [k for k in want if not same(got[k], want[k])]
    assert not bad, f"{what}: differs in {bad}"


def assert_matches(s, snap, where=""):
    got = snapshot(s)
    assert got["position"] == snap["position"], where
    assert_same_dict(got["values"], snap["values"], f"values at {snap['position']} {where}")
    assert_same_dict(got["start"], snap["start"], f"step_start_value at {snap['position']} {where}")
    assert got["losses"] == snap["losses"], where
    if snap["record"] is None:
        assert got["record"] is None, where
    else:
        assert got["record"] is not None and got["record"][:2] == snap["record"][:2], where
        assert_same_dict(got["record"][2], snap["record"][2], f"last_record.inputs {where}")
        assert_same_dict(got["record"][3], snap["record"][3], f"last_record.outputs {where}")
