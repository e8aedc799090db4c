"""Features outside the magnitude range the job works in are scaled by a power of two, exactly; others are kept."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from dste.data import make_graph, save_npz
from dste.experiments.feature_range import FEATURE_MAGNITUDE_RANGE, feature_scale_exponent, features_in_range


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
    largest = np.abs(scaled.x).max()
    assert 1.0 <= largest < 2.0 if factor < 1 else 128.0 < largest <= 256.0
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
    assert 128.0 < np.abs(graph.x).max() <= 256.0 and graph.meta["feature_scale_exponent"] < 0
    assert "times 2^-" in capsys.readouterr().err
    assert _load_base(RunConfig(dataset="cora-like")).meta.get("feature_scale_exponent") is None


def test_features_no_one_scale_serves_are_refused_up_front(small_graph):
    """One node's row 1e6 times the others: scaled to fit FP16 storage, every other row fell to ~1e-6 and FP32
    training stayed at chance (20 %), with exit status 0."""
    x = small_graph.x.copy()
    x[17] *= 1e6
    with pytest.raises(ValueError, match=r"node 17 holds .* median node's largest \|x\| is .* Normalize"):
        feature_scale_exponent(x)
    x = small_graph.x.copy()
    x[:5] *= 1e3  # a few large rows, the typical row still trainable once they fit: scaled
    exponent = feature_scale_exponent(x)
    assert exponent < 0 and 128.0 < np.abs(np.ldexp(x, exponent)).max() <= 256.0
    for largest in (256.5, 512.0, 513.0, 1e30):  # just into (2^7, 2^8], powers of two included
        assert 128.0 < np.ldexp(largest, feature_scale_exponent(np.array([[largest]], np.float32))) <= 256.0


def test_a_row_too_small_for_an_int8_scale_is_refused_up_front(small_graph):
    """A row whose largest |x| is 1e-37 stopped the job after FP32 training, in the quantizer."""
    x = small_graph.x.copy()
    x[5] = 0.0
    x[5, 3] = 1e-37
    with pytest.raises(ValueError, match=r"node 5's features are nonzero but their largest \|x\| is 1e-37"):
        feature_scale_exponent(x)
    x[5, 3] = 0.0  # an all-zero row is fine
    assert feature_scale_exponent(x) == 0


@pytest.mark.parametrize("split", ["val_mask", "test_mask"])
def test_a_graph_without_validation_or_test_nodes_is_refused(small_graph, tmp_path, split):
    """Without test nodes every policy reported 0.00 %; without validation nodes the controller had no accuracy signal
    (greedy search 39 points under FP32): both ran to the end with exit status 0."""
    from dste.experiments.pipeline import RunConfig, _load_base

    path = tmp_path / "bundle.npz"
    save_npz(dataclasses.replace(small_graph, **{split: np.zeros_like(small_graph.val_mask)}), path)
    name = "validation" if split == "val_mask" else "test"
    with pytest.raises(ValueError, match=f"no {name} nodes .*needs at least one"):
        _load_base(RunConfig(dataset=str(path)))


def test_a_refused_run_leaves_no_empty_output_directory(small_graph, tmp_path, monkeypatch):
    from dste.experiments.pipeline import RunConfig, run

    path = tmp_path / "bundle.npz"
    save_npz(dataclasses.replace(small_graph, test_mask=np.zeros_like(small_graph.test_mask)), path)
    monkeypatch.chdir(tmp_path)
    for out in (str(tmp_path / "named"), None):
        with pytest.raises(ValueError, match="no test nodes"):
            run(RunConfig(dataset=str(path), out=out, progress=False))
    assert not (tmp_path / "named").exists() and not any((tmp_path / "runs").iterdir())


def test_a_graph_without_edges_runs_with_a_note(small_graph, tmp_path, capsys):
    import scipy.sparse as sp

    from dste.experiments.pipeline import RunConfig, _load_base

    path = tmp_path / "no_edges.npz"
    n = small_graph.num_nodes
    save_npz(dataclasses.replace(small_graph, adj=sp.csr_matrix((n, n), dtype=np.float32)), path)
    assert _load_base(RunConfig(dataset=str(path))).num_edges == 0
    assert "has no edges" in capsys.readouterr().err


def test_float64_features_just_above_a_power_of_two_still_scale_to_at_most_high():
    # feature_scale_exponent: scaled down, the largest |x| lies in (2^7, 2^8]. For nextafter(4096) in float64, log2
    # rounds to exactly 12; brute force: the largest k with max|x| * 2^k <= 256 is -5 (scaled just above 128).
    import math

    low, high = FEATURE_MAGNITUDE_RANGE
    largest = float(np.nextafter(4096.0, np.inf))
    x = np.full((4, 3), 1000.0)
    x[0, 0] = largest
    expected = max(k for k in range(-60, 1) if math.ldexp(largest, k) <= high)
    assert expected == -5
    assert feature_scale_exponent(x) == expected


def test_a_median_row_scaled_below_low_is_refused():
    # Module docstring: features whose typical (median) row would fall below the range once the outliers fit are
    # refused. Outlier 2048 scales by 2^-3; the median row's largest |x| 0.375 becomes 0.046875 < 2^-4.
    low, high = FEATURE_MAGNITUDE_RANGE
    x = np.zeros((9, 2))
    x[0, 0], x[1:, 0] = 2048.0, 0.375
    assert (low, high) == (2.0**-4, 2.0**8) and 0.375 * 2.0**-3 < low
    with pytest.raises(ValueError, match="no one scale serves"):
        feature_scale_exponent(x)
