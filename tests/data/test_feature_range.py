"""Features outside the magnitude range the job works in are scaled by a power of two, exactly; others are kept."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from dste.data import make_graph, save_npz
from dste.data.feature_range import FEATURE_MAGNITUDE_RANGE, feature_scale_exponent, features_in_range


@pytest.fixture(scope="module")
def small_graph():
    return make_graph("cora-like", seed=0, num_nodes=600, num_edges=2000, num_features=40, num_val=100,
                      num_test=200)


@pytest.mark.parametrize("largest", [FEATURE_MAGNITUDE_RANGE[0], 0.3, 1.0, 5.0, FEATURE_MAGNITUDE_RANGE[1]])
def test_features_inside_the_range_are_left_as_they_are(small_graph, largest):
    x = small_graph.x / np.abs(small_graph.x).max() * np.float32(largest)
    graph = dataclasses.replace(small_graph, x=x.astype(np.float32))
    assert features_in_range(graph) == (graph, 0) and features_in_range(graph)[0] is graph


@pytest.mark.parametrize("factor", [1e-7, 1e-3, 1e3, 1e4, 3e6])
def test_features_outside_it_are_scaled_exactly_by_a_power_of_two(small_graph, factor):
    x = (small_graph.x * factor).astype(np.float32)
    graph = dataclasses.replace(small_graph, x=x)
    scaled, exponent = features_in_range(graph)
    assert 1.0 <= np.abs(scaled.x).max() < 2.0
    assert exponent == scaled.meta["feature_scale_exponent"] != 0
    np.testing.assert_array_equal(scaled.x, x * np.float32(2.0) ** exponent)  # a power of two: no rounding
    np.testing.assert_array_equal(scaled.adj.toarray(), graph.adj.toarray())
    np.testing.assert_array_equal(scaled.y, graph.y)


def test_zero_and_non_finite_features():
    assert feature_scale_exponent(np.zeros((3, 2), np.float32)) == 0
    assert feature_scale_exponent(np.zeros((0, 2), np.float32)) == 0
    with pytest.raises(ValueError, match="NaN or Inf"):
        feature_scale_exponent(np.array([[1.0, np.inf]], np.float32))


def test_the_job_runs_on_scaled_features_and_says_so(small_graph, tmp_path, capsys):
    """Features of 1e4 times the usual magnitude stopped ``dste run`` at its first FP16 action (FP16 saturates)."""
    from dste.experiments.pipeline import RunConfig, _load_base

    path = tmp_path / "large_features.npz"
    save_npz(dataclasses.replace(small_graph, x=(small_graph.x * 1e4).astype(np.float32)), path)
    graph = _load_base(RunConfig(dataset=str(path)))
    assert 1.0 <= np.abs(graph.x).max() < 2.0 and graph.meta["feature_scale_exponent"] < 0
    assert "times 2^-" in capsys.readouterr().err
    assert _load_base(RunConfig(dataset="cora-like")).meta.get("feature_scale_exponent") is None
