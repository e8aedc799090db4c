"""check_sparse_indices: a sparse matrix whose index arrays do not fit its shape is refused in the project's words,
by the encoder, the controller's state features and the partitioner alike."""

import numpy as np
import pytest
import scipy.sparse as sp

from dste.checks import check_sparse_indices
from dste.controller.state import graph_features
from dste.distributed.partition import partition_nodes
from dste.format import encode
from dste.format.errors import DSTEFormatError


def _csr(indices, indptr, n=3):
    return sp.csr_matrix((np.ones(len(indices)), np.asarray(indices), np.asarray(indptr)), shape=(n, n))


BAD_CSR = {
    "negative column": (_csr([1, -1, 0], [0, 1, 2, 3]), "outside its shape"),
    "column past the shape": (_csr([1, 5, 0], [0, 1, 2, 3]), "outside its shape"),
    "decreasing indptr": (_csr([1, 2, 0], [0, 2, 1, 3]), "indptr"),
}


@pytest.mark.parametrize("name", sorted(BAD_CSR))
def test_every_room_refuses_a_corrupt_csr_in_the_same_words(name):
    adj, words = BAD_CSR[name]
    with pytest.raises(ValueError, match=words):
        check_sparse_indices(adj, "adj")
    with pytest.raises(DSTEFormatError, match=words):
        encode(adj)
    with pytest.raises(ValueError, match=words):
        graph_features(adj, np.ones((3, 2), np.float32))
    with pytest.raises(ValueError, match=words):
        partition_nodes(adj, 2)


def test_csc_and_coo_are_checked_on_their_own_axes():
    wide = sp.csc_matrix((np.ones(1), np.array([3]), np.array([0, 1, 1])), shape=(3, 2))  # row id 3 of 3 rows
    with pytest.raises(ValueError, match=r"found 3 .. 3, allowed 0 .. 2"):
        check_sparse_indices(wide, "x")
    ok = sp.csc_matrix((np.ones(1), np.array([2]), np.array([0, 1, 1])), shape=(3, 2))
    check_sparse_indices(ok, "x")
    coo = sp.coo_matrix((np.ones(1), (np.array([0]), np.array([3]))), shape=(5, 4))
    coo.col[0] = 4  # SciPy checks COO ids at construction; a later write is not
    with pytest.raises(ValueError, match="outside its shape"):
        check_sparse_indices(coo, "x")


def test_graph_features_read_a_stored_zero_as_no_edge_and_refuse_nan_weights():
    rng = np.random.default_rng(0)
    dense = (rng.random((40, 40)) < 0.1).astype(np.float64)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    with_zeros = sp.csr_matrix(dense)
    with_zeros.data[::3] = 0.0  # stored, not eliminated
    pattern = with_zeros.copy()
    pattern.eliminate_zeros()
    assert with_zeros.nnz > pattern.nnz
    np.testing.assert_array_equal(graph_features(with_zeros, x), graph_features(pattern, x))
    nan_weights = pattern.copy()
    nan_weights.data[0] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf edge weights"):
        graph_features(nan_weights, x)


def test_partition_refuses_nan_edge_values():
    adj = sp.csr_matrix(np.array([[0, 1.0, 0], [1.0, 0, np.nan], [0, np.nan, 0]]))
    with pytest.raises(ValueError, match="NaN or Inf edge values"):
        partition_nodes(adj, 2)
