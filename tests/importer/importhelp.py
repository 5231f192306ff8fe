import importlib.util
import os
import sys

import numpy as np
import pytest

from nnstep.cli import main

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(HERE, "models.py")


def run_cli(capsys, *argv):
    """`nnstep ARGV` in process: (exit code, stdout, stderr)."""
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def user_models():
    """tests/importer/models.py as a module of the test's own (the importer imports its own copy)."""
    spec = importlib.util.spec_from_file_location("_importer_test_models", MODELS)
    m = importlib.util.module_from_spec(spec)
    sys.modules["_importer_test_models"] = m
    spec.loader.exec_module(m)
    return m


def forward_values(sc):
    """Step through the forward stage of step 1 with the session: every layer's output."""
    import nnstep
    s = nnstep.Session(sc)
    seen = []
    while True:
        r = s.step()
        if r is None or r.stage != "forward":
            break
        seen.append(r.name)
    out = {L.name: np.asarray(s.value(f"{L.name}.out")) for L in sc.layers}
    return s, out, seen


@pytest.fixture
def cli(capsys):
    return lambda *argv: run_cli(capsys, *argv)
