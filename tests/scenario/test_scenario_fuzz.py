"""Issue 6.3: generated scenario documents, valid and mutated, through the loader and a short run.
The only exception that may come out is nnstep's own ScenarioError, and no numpy warning may be
raised (warnings are errors inside the test).

Bounded for CI: NNSTEP_FUZZ_EXAMPLES (default 300) examples per test. For a long local run:

    NNSTEP_FUZZ_EXAMPLES=10000 NNSTEP_FUZZ_REPORT=1 .venv/bin/pytest -s tests/scenario/test_scenario_fuzz.py

NNSTEP_FUZZ_REPORT=1 prints how many documents were generated, loaded, refused, run and crashed.
"""
from __future__ import annotations

import copy
import datetime
import json
import math
import os
import re
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nnstep.engine.program import Program
from nnstep.errors import ScenarioError
from nnstep.scenario import loads_scenario

EXAMPLES = int(os.environ.get("NNSTEP_FUZZ_EXAMPLES", "300"))
STATS = {"documents": 0, "loaded": 0, "refused": 0, "ran": 0, "crashes": 0}
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


# --- a small TOML writer (no new dependency) -----------------------------------------------------
BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def key(k: str) -> str:
    return k if BARE.match(k) else json.dumps(k)


def value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)              # JSON's escapes are all valid in TOML basic strings
    if isinstance(v, list):
        return "[" + ", ".join(value(e) for e in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{key(k)} = {value(e)}" for k, e in v.items()) + "}"
    if isinstance(v, (datetime.date, datetime.time)):
        return v.isoformat()
    raise TypeError(type(v))


def to_toml(doc: dict) -> str:
    head, body = [], []
    for k, v in doc.items():
        if isinstance(v, dict):
            body.append(f"\n[{key(k)}]")
            body += [f"{key(a)} = {value(b)}" for a, b in v.items()]
        elif isinstance(v, list) and v and all(isinstance(e, dict) for e in v):
            for e in v:
                body.append(f"\n[[{key(k)}]]")
                body += [f"{key(a)} = {value(b)}" for a, b in e.items()]
        else:
            head.append(f"{key(k)} = {value(v)}")
    return "\n".join(head + body) + "\n"


def test_toml_writer_round_trips():
    import tomllib
    doc = {"a": 1, "s": {"x": [[1.5, -2.0]], "q": "a\"b\\c\n\u0001", "t": {"k": True}},
           "layers": [{"type": "linear", "out": 3}, {"type": "relu"}], "odd key": -1e308}
    assert tomllib.loads(to_toml(doc)) == doc


# --- valid scenarios from a small grammar ----------------------------------------------------------
finite = st.floats(-3, 3, allow_nan=False, allow_infinity=False)


def arr(draw, shape):
    return np.asarray(draw(st.lists(finite, min_size=math.prod(shape), max_size=math.prod(shape)))).reshape(shape).tolist()


@st.composite
def scenarios(draw):
    n = draw(st.integers(1, 4))
    kind = draw(st.sampled_from(["flat", "flat", "conv1d", "conv2d"]))
    loss = draw(st.sampled_from(["mse", "l1", "smooth_l1", "huber", "cross_entropy", "bce", "bce_with_logits"]))
    layers = []
    if kind == "flat":
        f = draw(st.integers(1, 3))
        xshape = [n, f]
        for _ in range(draw(st.integers(0, 3))):
            t = draw(st.sampled_from(["linear", "relu", "leaky_relu", "sigmoid", "tanh", "gelu", "identity",
                                      "batchnorm", "layernorm", "softmax"]))
            L = {"type": t}
            if t == "linear":
                L["out"] = draw(st.integers(1, 4))
                if draw(st.booleans()):
                    L["bias"] = False
            if t == "gelu":
                L["approximate"] = draw(st.sampled_from(["none", "tanh"]))
            if t == "leaky_relu":
                L["negative_slope"] = draw(finite)
            layers.append(L)
    else:
        c = draw(st.integers(1, 2))
        sp = [draw(st.integers(3, 5))] * (1 if kind == "conv1d" else 2)
        xshape = [n, c] + sp
        layers.append({"type": kind, "out_channels": draw(st.integers(1, 2)), "kernel_size": draw(st.integers(1, 3)),
                       "stride": draw(st.integers(1, 2)), "padding": draw(st.integers(0, 1))})
        if draw(st.booleans()):
            layers.append({"type": "batchnorm"})
        layers.append({"type": draw(st.sampled_from(["relu", "tanh"]))})
        layers.append({"type": "flatten"})
    classes = draw(st.integers(2, 3))
    outs = classes if loss == "cross_entropy" else draw(st.integers(1, 2))
    layers.append({"type": "linear", "out": outs})
    if loss == "bce":
        layers.append({"type": "sigmoid"})
    if draw(st.booleans()):
        x = arr(draw, xshape)
    else:
        x = {"random": "normal", "shape": xshape, "seed_note": None}
        del x["seed_note"]
    if loss == "cross_entropy":
        y = draw(st.lists(st.integers(0, classes - 1), min_size=n, max_size=n))
    elif loss in ("bce", "bce_with_logits"):
        y = np.asarray(draw(st.lists(st.floats(0, 1), min_size=n * outs, max_size=n * outs))).reshape(n, outs).tolist()
    else:
        y = arr(draw, [n, outs])
    doc = {"scenario": {"seed": draw(st.integers(0, 5)), "dtype": draw(st.sampled_from(["float64", "float32"]))},
           "data": {"x": x, "y": y}, "layers": layers,
           "loss": {"type": loss, "reduction": draw(st.sampled_from(["mean", "sum"]))}}
    if draw(st.booleans()):
        doc["optimizer"] = {"type": "sgd", "lr": draw(st.floats(0, 1)), "momentum": draw(st.sampled_from([0.0, 0.9]))}
    else:
        doc["optimizer"] = {"type": "adam", "lr": draw(st.floats(0, 0.1))}
    doc["train"] = {"steps": draw(st.integers(1, 3)), "batch_size": draw(st.integers(0, n)),
                    "shuffle": draw(st.booleans())}
    if any(L["type"] == "batchnorm" for L in layers):
        # training-mode batchnorm needs 2+ values per channel in every batch (torch refuses 1):
        # full batches of 2+ samples keep such documents valid
        if n < 2:
            doc["layers"] = [L for L in layers if L["type"] != "batchnorm"]
        doc["train"]["batch_size"] = 0
    if draw(st.booleans()):
        doc["breakpoints"] = [draw(st.sampled_from([{"stage": "update"}, {"when": "loss max > 1"}, {"when": "nonfinite"},
                                                    {"op": "loss"}]))]
    if draw(st.booleans()):
        doc["expect"] = [{"step": 1, "tensor": "loss", "value": 0.5, "atol": 1.0}]
    return doc


# --- mutations -------------------------------------------------------------------------------------
junk = st.one_of(
    st.integers(-3, 3), st.sampled_from([-1, 0, 10**12, -10**12, 2**63, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e308, -1e308, 1e-320, 3.5e38]),
    st.booleans(), st.text(max_size=8), st.sampled_from(["linear", "relu", "conv2d", "sgd", "adam", "mse", "", "x"]),
    st.lists(st.integers(-2, 5), max_size=3), st.lists(st.lists(finite, max_size=3), max_size=3),
    st.just([1, "a"]), st.just([[1, 2], [3]]), st.just([1, True]), st.just({}),
    st.dates(), st.times(), st.datetimes(),
    st.just({"random": "normal", "shape": [10**7, 10**6]}), st.just({"file": "../../etc/passwd"}),
    st.just({"file": "missing.npz"}), st.just({"file": "ok.npz"}), st.just({"file": "ok.npz", "key": "y"}),
    st.just({"file": "ok.csv"}), st.just({"file": "ok.csv", "columns": [0]}), st.just({"file": "obj.npz"}),
    st.just("ok.npz"), st.just("w.npz"), st.just({"random": "integers", "low": 0, "high": 10**20, "shape": [2]}),
)


def paths(doc, prefix=()):
    """Every (container, key) in the document."""
    out = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.append((doc, k))
            out += paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.append((doc, i))
            out += paths(v, prefix + (i,))
    return out


@st.composite
def mutated(draw):
    doc = draw(scenarios())
    for _ in range(draw(st.integers(1, 3))):
        spots = paths(doc)
        holder, k = spots[draw(st.integers(0, len(spots) - 1))]
        what = draw(st.sampled_from(["replace", "replace", "drop", "add", "shuffle"]))
        if what == "replace":
            holder[k] = copy.deepcopy(draw(junk))    # st.just values are shared between examples
        elif what == "drop":
            del holder[k]
        elif what == "add" and isinstance(holder, dict):
            holder[draw(st.sampled_from(["momentum", "betas", "out", "lrr", "typo", "in", "name", "frozen",
                                         "weight", "bias", "eps", "kernel_size"]))] = copy.deepcopy(draw(junk))
        elif what == "shuffle" and isinstance(doc.get("layers"), list):
            doc["layers"] = draw(st.permutations(doc["layers"]))
    text = to_toml(doc)
    if draw(st.integers(0, 5)) == 0:                   # damage the text itself
        i = draw(st.integers(0, len(text)))
        text = text[:i] + draw(st.sampled_from(["", "[", "]", "=", '"', "\n[[layers]]\n", "\x00", "\ufeff", "{"])) \
            + text[i + draw(st.integers(0, 5)):]
    return text


# --- the property ----------------------------------------------------------------------------------
def exercise(text: str, base: str):
    STATS["documents"] += 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                sc = loads_scenario(text, path="fuzz.toml", base_dir=base)
            except ScenarioError as e:
                STATS["refused"] += 1
                msg = str(e)
                assert msg.startswith("fuzz.toml"), msg
                assert "\x1b" not in msg and "\n" not in msg
                return
            STATS["loaded"] += 1
            prog = Program(sc)
            env = prog.initial_env()
            for k in range(1, min(2, sc.train.steps) + 1):
                prog.run_until(env, k, "done")          # (every op of step k)
            STATS["ran"] += 1
    except BaseException:
        STATS["crashes"] += 1
        raise


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    np.savez(d / "ok.npz", x=np.ones((2, 2)), y=np.zeros((2, 1)))
    np.savez(d / "obj.npz", x=np.array([None, {}], dtype=object))
    np.savez(d / "w.npz", **{"linear1.weight": np.ones((1, 1)), "linear1.bias": np.zeros(1)})
    (d / "ok.csv").write_text("a,b\n1,2\n3,4\n")
    yield str(d)
    if os.environ.get("NNSTEP_FUZZ_REPORT"):
        print(f"\nnnstep fuzz: {STATS['documents']} documents, {STATS['loaded']} loaded "
              f"({STATS['ran']} ran 1-2 steps), {STATS['refused']} refused with ScenarioError, "
              f"{STATS['crashes']} crashes")


def test_valid_scenarios_load_and_run(fuzz_dir):
    @SETTINGS
    @given(scenarios())
    def prop(doc):
        before = STATS["refused"]
        exercise(to_toml(doc), fuzz_dir)
        assert STATS["refused"] == before, "a grammar-valid scenario was refused"
    prop()


def test_mutated_scenarios_fail_cleanly(fuzz_dir):
    @SETTINGS
    @given(mutated())
    def prop(text):
        exercise(text, fuzz_dir)
    prop()
    assert STATS["crashes"] == 0
