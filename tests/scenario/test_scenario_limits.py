"""Issue 6.2: data, layers or steps that would exhaust memory are refused with a clear error
before anything large is allocated (measured with tracemalloc, which numpy reports to)."""
from __future__ import annotations

import tracemalloc

import pytest

from hardcases import BASE, npz_huge_header
from nnstep.errors import ScenarioError
from nnstep.scenario import load_scenario, loads_scenario
from nnstep.scenario import limits as loader

CASES = {
    "random 10^13": BASE.replace("x = [[1.0, 2.0], [3.0, 4.0]]", 'x = { random = "normal", shape = [10000000, 1000000] }'),
    "random just over": BASE.replace("x = [[1.0, 2.0], [3.0, 4.0]]", 'x = { random = "uniform", shape = [50000001] }'),
    "out 10^12": BASE.replace("out = 3", "out = 1000000000000"),
    "parameters in total": BASE.replace("out = 3", "out = 10000000").replace("out = 1", "out = 4\n\n[[layers]]\ntype = \"linear\"\nout = 1"),
    "conv padding": '[data]\nx = { random = "normal", shape = [2, 1, 5] }\ny = [0, 1]\n[[layers]]\ntype = "conv1d"\n'
                    'out_channels = 1\nkernel_size = 3\npadding = 1000000000\nstride = 1000000000\n'
                    '[[layers]]\ntype = "flatten"\n[loss]\ntype = "cross_entropy"\n',
    "conv kernel": '[data]\nx = { random = "normal", shape = [1, 1, 100, 100] }\ny = [0]\n[[layers]]\ntype = "conv2d"\n'
                   'out_channels = 1\nkernel_size = 80\n[[layers]]\ntype = "flatten"\n[loss]\ntype = "cross_entropy"\n',
    "steps": BASE + "\n[train]\nsteps = 10000001\n",
}


@pytest.mark.parametrize("name", list(CASES))
def test_refused_before_allocating(name):
    tracemalloc.start()
    try:
        with pytest.raises(ScenarioError) as e:
            loads_scenario(CASES[name], path="net.toml", base_dir="/nonexistent")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "limit" in str(e.value) or "at most" in str(e.value)
    assert peak < 8 * 2**20, f"{peak} bytes allocated before refusing"


def test_npz_header_refused_before_reading(tmp_path):
    npz_huge_header(str(tmp_path / "big.npz"))
    (tmp_path / "net.toml").write_text(BASE.replace("x = [[1.0, 2.0], [3.0, 4.0]]", 'x = { file = "big.npz" }'))
    tracemalloc.start()
    try:
        with pytest.raises(ScenarioError, match="over the limit"):
            load_scenario(str(tmp_path / "net.toml"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20


def test_batch_size_makes_a_big_dataset_fit():
    """The activation limit is per batch: the same net on the same 100000 samples is refused with
    full-batch training and accepted with batch_size = 64."""
    text = BASE.replace("x = [[1.0, 2.0], [3.0, 4.0]]", 'x = { random = "normal", shape = [100000, 2] }') \
        .replace("y = [[1.0], [2.0]]", 'y = { random = "normal", shape = [100000, 1] }').replace("out = 3", "out = 600")
    with pytest.raises(ScenarioError, match="over the limit"):
        loads_scenario(text, path="net.toml")
    sc = loads_scenario(text + "\n[train]\nbatch_size = 64\n", path="net.toml")
    assert sc.batch_size == 64


def test_limits_are_stated_in_the_docs():
    import os
    doc = open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "errors.md"), encoding="utf-8").read()
    for n in (loader.MAX_ELEMENTS, loader.MAX_TOTAL_PARAMS, loader.MAX_ACTIVATIONS, loader.MAX_STEPS,
              loader.MAX_LAYERS, loader.MAX_KERNEL, loader.MAX_MERGE_INPUTS):
        assert f"{n:,}" in doc, n
    assert f"{loader.MAX_SCENARIO_BYTES // 2**20} MB" in doc and f"{loader.MAX_FILE_BYTES // 2**20} MB" in doc
    assert f"{loader.MAX_CSV_BYTES // 2**20} MB" in doc and f"| {loader.MAX_NDIM} |" in doc


def test_scenario_file_size_and_devices(tmp_path):
    big = tmp_path / "big.toml"
    with open(big, "wb") as f:
        f.truncate(loader.MAX_SCENARIO_BYTES + 1)
    with pytest.raises(ScenarioError, match="file is too large"):
        load_scenario(str(big))
    with pytest.raises(ScenarioError, match="is not a regular file"):
        load_scenario("/dev/zero")
