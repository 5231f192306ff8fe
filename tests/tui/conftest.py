import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SC = os.path.join(HERE, "scenarios")
os.environ.pop("NO_COLOR", None)
os.environ.setdefault("TEXTUAL_ANIMATIONS", "none")


def sc(name: str) -> str:
    return os.path.join(SC, name)


@pytest.fixture
def classic():
    return sc("classic.toml")
