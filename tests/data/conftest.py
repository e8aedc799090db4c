"""Fixtures of the data-room tests."""

from pathlib import Path

import pytest

from dste.data import make_graph

SHARED_PLANETOID = Path(__file__).resolve().parents[2] / ".." / "shared" / "planetoid"


@pytest.fixture(scope="session")
def planetoid_root() -> Path:
    """The raw Planetoid files beside the repository checkout; skips when absent."""
    if not (SHARED_PLANETOID / "ind.cora.graph").is_file():
        pytest.skip(f"Planetoid files not found at {SHARED_PLANETOID}")
    return SHARED_PLANETOID.resolve()


@pytest.fixture(scope="session")
def cora_like():
    return make_graph("cora-like", seed=0)
