"""The Graph container: invariants are enforced and derived views are right."""

import numpy as np
import pytest
import scipy.sparse as sp

from dste.data import Graph, canonical_adjacency


def small_graph(**changes):
    pairs = np.array([[0, 1], [1, 2], [2, 3], [3, 0]])
    adj = canonical_adjacency(sp.coo_matrix((np.ones(4), (pairs[:, 0], pairs[:, 1])), shape=(4, 4)))
    fields = dict(
        adj=adj,
        x=np.arange(8, dtype=np.float32).reshape(4, 2),
        y=np.array([0, 1, 0, 1], dtype=np.int64),
        train_mask=np.array([1, 0, 0, 0], dtype=bool),
        val_mask=np.array([0, 1, 0, 0], dtype=bool),
        test_mask=np.array([0, 0, 1, 1], dtype=bool),
        num_classes=2,
        name="square",
    )
    fields.update(changes)
    return Graph(**fields)


def test_canonical_adjacency_symmetrises_and_drops_loops_and_duplicates():
    rows = np.array([0, 0, 1, 2, 2])
    cols = np.array([1, 1, 1, 0, 3])
    adj = canonical_adjacency(sp.coo_matrix((np.full(5, 3.0), (rows, cols)), shape=(4, 4)))
    expected = np.zeros((4, 4), dtype=np.float32)
    for i, j in [(0, 1), (0, 2), (2, 3)]:
        expected[i, j] = expected[j, i] = 1.0
    np.testing.assert_array_equal(adj.toarray(), expected)
    assert adj.dtype == np.float32 and adj.format == "csr"


def test_edge_index_and_counts_match_adjacency():
    graph = small_graph()
    src, dst = graph.edge_index()
    assert graph.edge_index().dtype == np.int64
    assert graph.num_edges == 8 and graph.num_undirected_edges == 4
    dense = np.zeros((4, 4))
    dense[src, dst] = 1
    np.testing.assert_array_equal(dense, graph.adj.toarray())
    assert graph.edge_homophily() == 0.0  # the square alternates labels
    summary = graph.summary()
    assert summary["nodes"] == 4 and summary["train"] == 1 and summary["test"] == 2


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"x": np.zeros((3, 2), dtype=np.float32)}, "rows"),
        ({"x": np.array([[np.nan, 0]] * 4, dtype=np.float32)}, "NaN"),
        ({"x": np.zeros((4, 2), dtype=np.float64)}, "float32"),
        ({"y": np.array([0, 1, 2, 0], dtype=np.int64)}, "labels must lie"),
        ({"y": np.array([0, 1, 0, 1], dtype=np.int32)}, "int64"),
        ({"val_mask": np.array([1, 0, 0, 0], dtype=bool)}, "disjoint"),
        ({"test_mask": np.array([0, 0, 1], dtype=bool)}, "test_mask"),
        ({"adj": sp.csr_matrix(np.triu(np.ones((4, 4), dtype=np.float32), 1))}, "symmetric"),
        ({"adj": sp.csr_matrix(np.eye(4, dtype=np.float32))}, "self loops"),
        ({"adj": sp.csr_matrix(2 * (np.ones((4, 4), dtype=np.float32) - np.eye(4, dtype=np.float32)))}, "binary"),
        ({"adj": sp.coo_matrix(np.zeros((4, 4), dtype=np.float32))}, "CSR"),
        ({"num_classes": 0}, "positive"),
        ({"num_classes": True, "y": np.zeros(4, dtype=np.int64)}, "positive int, got True"),  # was one class
    ],
)
def test_bad_fields_are_refused_with_a_clear_message(changes, message):
    with pytest.raises((ValueError, TypeError), match=message):
        small_graph(**changes)


def test_canonical_adjacency_says_what_it_changed():
    import warnings

    import numpy as np
    import scipy.sparse as sp

    from dste.data import canonical_adjacency
    from dste.data.graph import CanonicalizedAdjacencyWarning

    directed = sp.csr_matrix(np.array([[1, 2, 0], [0, 0, 1], [0, 1, 0]], np.float32))
    with pytest.warns(CanonicalizedAdjacencyWarning, match="1 one-way edges made two-way; 1 values other than 1 read "
                      "as 1; 1 self loops dropped"):
        canonical_adjacency(directed)
    undirected = sp.csr_matrix(np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error", CanonicalizedAdjacencyWarning)
        canonical_adjacency(undirected)
