"""Graphs, generated graphs, streams and .npz bundles refuse what they cannot read, naming it (a bool read as a
homophily, a corrupt CSR failing in SciPy's or the C++ runtime's words, a bundle's broken labels not naming the
file were all possible before)."""

import numpy as np
import pytest
import scipy.sparse as sp

from dste.data import Graph, make_graph
from dste.data.graph import canonical_adjacency
from dste.data.npz import load_npz, save_npz
from dste.data.stream import make_stream

SMALL = dict(num_nodes=300, num_edges=600, num_features=20, num_val=40, num_test=60, community_size=(16, 32))


@pytest.mark.parametrize("field, value", [("homophily", True), ("mu", True), ("homophily", "0.8"),
                                          ("locality", None)])
def test_generated_graph_rates_must_be_real_numbers(field, value):
    with pytest.raises(TypeError, match=f"{field} must be a real number"):
        make_graph("cora-like", seed=0, **SMALL, **{field: value})


def test_stream_index_must_be_an_integer_not_a_bool():
    stream = make_stream(make_graph("cora-like", seed=0, **SMALL), num_snapshots=3, seed=0)
    with pytest.raises(TypeError, match="snapshot index must be an int"):
        stream[True]
    assert stream[np.int64(1)].index == 1


def _corrupt_indptr(n=5):
    ring = sp.csr_matrix((np.ones(n, np.float32), (np.arange(n), (np.arange(n) + 1) % n)), shape=(n, n))
    indptr = ring.indptr.copy()
    indptr[2], indptr[3] = indptr[3], indptr[2]  # no longer non-decreasing
    return sp.csr_matrix((ring.data, ring.indices, indptr), shape=(n, n)), ring


def test_a_graph_or_adjacency_with_a_corrupt_csr_is_refused_by_name():
    broken, _ = _corrupt_indptr()
    with pytest.raises(ValueError, match="adjacency: its CSR indptr"):
        canonical_adjacency(broken)
    n = broken.shape[0]
    with pytest.raises(ValueError, match="adj: its CSR indptr"):  # failed in the C++ runtime's words before
        Graph(adj=broken, x=np.zeros((n, 2), np.float32), y=np.zeros(n, np.int64), num_classes=2,
              train_mask=np.ones(n, bool), val_mask=np.zeros(n, bool), test_mask=np.zeros(n, bool))
    negative = sp.csr_matrix((np.ones(1), np.array([-1]), np.array([0, 1, 1])), shape=(2, 2))
    with pytest.raises(ValueError, match="outside its shape"):
        canonical_adjacency(negative)


def test_a_bundle_whose_graph_is_broken_names_the_file(tmp_path):
    graph = make_graph("cora-like", seed=0, **SMALL)
    path = save_npz(graph, tmp_path / "g.npz")
    arrays = dict(np.load(path))
    arrays["y"] = arrays["y"].copy()
    arrays["y"][0] = 99  # past num_classes
    bad = tmp_path / "bad_labels.npz"
    np.savez(bad, **arrays)
    with pytest.raises(ValueError, match=r"bad_labels\.npz: labels must lie in"):
        load_npz(bad)
    arrays = dict(np.load(path))
    arrays["x"] = arrays["x"].astype(np.float64)
    arrays["x"][0, 0] = 1e300  # finite, but not in float32
    huge = tmp_path / "huge.npz"
    np.savez(huge, **arrays)
    with pytest.raises(ValueError, match=r"huge\.npz: x holds float64 values beyond float32's range"):
        load_npz(huge)


def test_an_unknown_stream_knob_is_refused_with_the_knobs_listed():
    graph = make_graph("cora-like", seed=0, **SMALL)
    with pytest.raises(TypeError, match=r"unknown stream knobs \['churn'\]; the knobs are StreamParams' fields: .*"
                                        r"num_snapshots"):
        make_stream(graph, num_snapshots=3, seed=0, churn=0.1)
