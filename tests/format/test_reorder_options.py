"""The reorder option as encode / gcn_normalized accept it: None means no reordering, "community-fast" is reachable."""

import numpy as np
import pytest
import scipy.sparse as sp

from dste.format import encode, gcn_normalized
from dste.format.errors import DSTEFormatError
from dste.format.policy import EncodePolicy
from dste.format.reorder import compute_order
from tests.format.graphs import community_graph


def test_reorder_none_is_no_reordering():
    adj, _ = community_graph(600, seed=3)
    unordered = encode(adj, reorder=None)
    explicit = encode(adj, reorder="none")
    assert unordered.row_perm is None and unordered.col_perm is None
    assert unordered.encode_policy["reorder"] == "none"
    assert np.array_equal(unordered.tile_cols, explicit.tile_cols)
    assert (unordered.decode(effective=False) != explicit.decode(effective=False)).nnz == 0
    assert EncodePolicy(reorder=None).reorder == "none"


def test_community_fast_reachable_from_encode_and_gcn_normalized():
    adj, _ = community_graph(900, seed=4)
    closed = (adj + sp.eye(adj.shape[0], format="csr")).tocsr()
    rows, cols = closed.nonzero()
    expected, _ = compute_order("community-fast", rows, cols, closed.shape)
    A = gcn_normalized(adj, reorder="community-fast")
    assert A.encode_policy["reorder"] == "community-fast"
    assert np.array_equal(A.row_perm, expected)
    B = encode(adj, reorder="community-fast")
    assert np.array_equal(np.sort(B.row_perm), np.arange(adj.shape[0]))


def test_unknown_reorder_names_the_allowed_ones():
    with pytest.raises(DSTEFormatError, match="community-fast"):
        EncodePolicy(reorder="metis")
