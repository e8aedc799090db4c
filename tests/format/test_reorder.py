"""The community order (METIS recursive bisection) and the other reorder options.

Figure of merit: stretch = distinct (128-row window, column) pairs of A + I in an order / N,
computed here from scratch with NumPy (independent of the encoder's own count).
"""

import importlib

import numpy as np
import pytest
import scipy.sparse as sp

from dste.format import encode
from dste.format.errors import DSTEFormatError
from dste.format.partition import SAMPLE_EDGES_PER_NODE, recursive_bisection_parts, refined_bisection, sampled_edges
from dste.format.reorder import (
    _symmetric_graph,
    community_order,
    compute_order,
    label_propagation_order,
)
from dste.format.permutation import is_permutation
from tests.format.graphs import community_graph

WINDOW = 128


def window_stretch(adj, order):
    """Distinct (window of ``order``, column) pairs of adj + I, per node."""
    n = adj.shape[0]
    closed = (adj + sp.eye(n, format="csr")).tocoo()
    position = np.empty(n, dtype=np.int64)
    position[order] = np.arange(n)
    pairs = (position[closed.row] // WINDOW) * n + closed.col
    return np.unique(pairs).size / n


def generator_order(labels):
    """Every community contiguous: the order the graph was drawn in, before ids were shuffled."""
    return np.argsort(labels, kind="stable")


def assert_permutation(perm, n):
    assert perm.dtype == np.int64 and perm.shape == (n,)
    assert np.array_equal(np.sort(perm), np.arange(n))


def community_perm(adj, seed=0):
    rows, cols = adj.nonzero()
    row_perm, col_perm = compute_order("community", rows, cols, adj.shape, seed=seed)
    return row_perm, col_perm


def test_pinned_partitioner_imports_and_is_pinned():
    pymetis = importlib.import_module("pymetis")
    assert hasattr(pymetis, "part_graph")
    from pathlib import Path

    pins = Path(__file__).resolve().parents[2].joinpath("requirements.txt").read_text().split()
    assert any(line.startswith("pymetis==") for line in pins)


# Communities of 40-400 nodes (windows cut through them) and of 500-1,500 (a window holds a slice).
SHAPES = [
    dict(n_nodes=12_000, p_intra=0.85, min_size=40, max_size=400, seed=11),
    dict(n_nodes=12_000, p_intra=0.9, min_size=500, max_size=1500, seed=12),
]


@pytest.mark.parametrize("shape", SHAPES, ids=["small-communities", "large-communities"])
def test_community_order_recovers_locality_of_a_shuffled_graph(shape):
    adj, labels = community_graph(**shape)
    n = adj.shape[0]
    row_perm, col_perm = community_perm(adj)
    assert_permutation(row_perm, n)
    assert np.array_equal(row_perm, col_perm)  # a square matrix gets one symmetric order
    ours = window_stretch(adj, row_perm)
    generator = window_stretch(adj, generator_order(labels))
    shuffled = window_stretch(adj, np.arange(n))
    # The generator's order (communities contiguous) is the best one the test can name without
    # search. Measured here: 1.037x of it on small communities, 0.92x on large ones, for seeds
    # 0-2 (bench/README.md "Reordering" has the full grid); 1.05 is the project's target.
    assert ours <= 1.05 * generator, (ours, generator)
    # and far below the shuffled ids, where a window shares almost no neighbours (stretch ~ mean
    # degree + 1). Measured 0.37x (small communities) and 0.52x (1,000-node communities: a window
    # holds an eighth of one and still gathers most of it).
    assert ours < 0.6 * shuffled, (ours, shuffled)


def test_community_order_is_deterministic_for_a_seed():
    adj, _ = community_graph(5000, seed=5)
    first, _ = community_perm(adj, seed=3)
    again, _ = community_perm(adj, seed=3)
    assert np.array_equal(first, again)


def test_rectangular_matrix_gets_row_and_column_permutations():
    rng = np.random.default_rng(0)
    rect = sp.random(700, 300, density=0.02, format="csr", random_state=rng)
    rows, cols = rect.nonzero()
    row_perm, col_perm = compute_order("community", rows, cols, rect.shape)
    assert_permutation(row_perm, 700)
    assert_permutation(col_perm, 300)


@pytest.mark.parametrize("n", [0, 1, 5, 40])
def test_tiny_and_edgeless_graphs(n):
    empty = sp.csr_matrix((n, n), dtype=np.int8)
    order = community_order(empty)
    assert_permutation(order, n)


def test_parts_are_balanced_and_leaves_are_small():
    adj, _ = community_graph(4000, seed=6)
    graph, _ = _symmetric_graph(*adj.nonzero(), adj.shape)
    parts = recursive_bisection_parts(graph, 125, seed=0)
    sizes = np.bincount(parts, minlength=125)
    assert parts.min() == 0 and parts.max() == 124
    # METIS's default imbalance tolerance for recursive bisection is small (a few per cent per
    # level); 4000 / 125 = 32 nodes per part on average
    assert sizes.max() <= 40 and sizes.min() >= 24, (sizes.min(), sizes.max())


def test_non_square_graph_is_refused_by_the_partitioner():
    with pytest.raises(DSTEFormatError, match="recursive_bisection_parts.*square"):
        recursive_bisection_parts(sp.csr_matrix((3, 4)), 2)


def test_other_orders_still_work_through_encode():
    adj, _ = community_graph(900, seed=1)
    dense = adj.toarray()
    for reorder in ("none", "rcm", "community"):
        matrix = encode(adj, reorder=reorder)
        np.testing.assert_array_equal(matrix.to_dense(), dense)
    with pytest.raises(DSTEFormatError, match="unknown reorder method"):
        compute_order("metis", *adj.nonzero(), adj.shape)


def test_label_propagation_order_is_still_a_permutation():
    adj, _ = community_graph(2000, seed=7)
    graph, _ = _symmetric_graph(*adj.nonzero(), adj.shape)
    assert_permutation(label_propagation_order(graph), 2000)


def _cut_edges(graph, labels):
    coo = graph.tocoo()
    return int((labels[coo.row] != labels[coo.col]).sum()) // 2


def test_recursive_bisection_numbers_parts_along_its_tree():
    """The layout relies on it: parts [0, k/2) are one side of the first cut, a well-cut bisection,
    and parts [0, k/4) one side of the cut of that half.

    On a graph this size (409k stored entries, past ``SAMPLED_TOP_LEVELS_MIN_ENTRIES``) the top two
    levels are cut on edge samples, each refined on the graph it cuts (the whole graph, then each
    half's), so neither cut is METIS's own 2-way cut of its graph, but each must be nearly as good and
    balanced like it: the top cut within 5 % of METIS's cut edges (1.02-1.04 measured), the halves'
    cuts within 25 % (0.94-1.11 here, up to 1.18 on another seed's graph). Each quarter is then cut by
    METIS into its share of the parts.
    """
    from dste.format.partition import SAMPLED_TOP_LEVELS_MIN_ENTRIES, _index_dtype, metis_recursive_parts

    def metis_bisection(graph, first_share):
        return metis_recursive_parts(graph.indptr.astype(_index_dtype()), graph.indices.astype(_index_dtype()), 2, 0,
                                     target_shares=[first_share, 1 - first_share])

    adj, _ = community_graph(30_000, seed=2)
    graph, _ = _symmetric_graph(*adj.nonzero(), adj.shape)
    assert graph.nnz >= SAMPLED_TOP_LEVELS_MIN_ENTRIES
    n = graph.shape[0]
    for k in (4, 10, 235):
        parts = recursive_bisection_parts(graph, k, seed=0)
        first_side = (parts >= k // 2).astype(np.int64)
        assert _cut_edges(graph, first_side) <= 1.05 * _cut_edges(graph, metis_bisection(graph, (k // 2) / k)), k
        # the sides hold the parts' share of the nodes (METIS's 1.001 tolerance)
        assert abs(int((first_side == 0).sum()) - n * (k // 2) / k) <= 0.002 * n, k
        sizes = np.bincount(parts, minlength=k)
        assert sizes.min() >= 0.9 * n / k and sizes.max() <= 1.1 * n / k, (k, sizes.min(), sizes.max())
        # one level down: each half's cut between its quarters against METIS's bisection of that half
        for half, (offset, half_parts) in enumerate(((0, k // 2), (k // 2, k - k // 2))):
            half_nodes = np.flatnonzero(first_side == half)
            half_graph = graph[half_nodes][:, half_nodes].tocsr()
            half_graph.sort_indices()
            quarter_parts = half_parts // 2
            sampled = (parts[half_nodes] >= offset + quarter_parts).astype(np.int64)
            own = metis_bisection(half_graph, quarter_parts / half_parts)
            assert _cut_edges(half_graph, sampled) <= 1.25 * _cut_edges(half_graph, own), (k, half)
            assert abs(int((sampled == 0).sum()) - half_nodes.size * quarter_parts / half_parts) <= 0.002 * n, (k, half)


def test_edge_sample_is_symmetric_and_keeps_low_degree_nodes_attached():
    adj, _ = community_graph(3000, seed=3)
    graph, _ = _symmetric_graph(*adj.nonzero(), adj.shape)
    indptr, indices = sampled_edges(graph, seed=0)
    sample = sp.csr_matrix((np.ones(indices.size), indices, indptr), shape=graph.shape)
    assert (sample != sample.T).nnz == 0  # symmetric
    assert (sample - sample.multiply(graph)).nnz == 0  # a subset of the graph's edges
    degree = np.diff(graph.indptr)
    coo = graph.tocoo()
    low = np.minimum(degree[coo.row], degree[coo.col]) <= SAMPLE_EDGES_PER_NODE
    assert np.all(np.asarray(sample[coo.row[low], coo.col[low]]).ravel() == 1)  # kept with probability 1
    share = indices.size / graph.nnz
    assert 0.1 < share < 0.6, share
    again_indptr, again_indices = sampled_edges(graph, seed=0)
    assert np.array_equal(again_indptr, indptr) and np.array_equal(again_indices, indices)
    assert not np.array_equal(sampled_edges(graph, seed=1)[1], indices)


def test_refined_bisection_keeps_the_side_sizes_and_lowers_the_cut():
    adj, _ = community_graph(3000, seed=4)
    graph, _ = _symmetric_graph(*adj.nonzero(), adj.shape)
    side = np.random.default_rng(0).permutation(np.arange(3000) % 2).astype(np.int8)
    refined = refined_bisection(graph, side.copy(), passes=3)
    assert np.array_equal(np.bincount(refined), np.bincount(side))
    assert _cut_edges(graph, refined) < 0.9 * _cut_edges(graph, side)
    # a cut no pass can lower is returned unchanged
    assert np.array_equal(refined_bisection(graph, refined.copy(), passes=0), refined)


def test_community_order_lays_parts_out_in_part_order_each_in_an_rcm_order():
    adj, _ = community_graph(6000, seed=9)
    graph, _ = _symmetric_graph(*adj.nonzero(), adj.shape)
    order = community_order(graph)
    parts = recursive_bisection_parts(graph, -(-6000 // WINDOW), seed=0)
    assert is_permutation(order, 6000)
    assert np.all(np.diff(parts[order]) >= 0)  # parts contiguous, in bisection-tree order
    # inside a part RCM numbers each connected piece of the part's own subgraph contiguously
    coo = graph.tocoo()
    inside = parts[coo.row] == parts[coo.col]
    intra = sp.csr_matrix((np.ones(int(inside.sum())), (coo.row[inside], coo.col[inside])), shape=graph.shape)
    _, piece = sp.csgraph.connected_components(intra, directed=False)
    runs = np.flatnonzero(np.diff(piece[order])) + 1
    assert runs.size + 1 == piece.max() + 1  # one run per piece: no piece is split


def test_intra_part_rcm_order_holds_fewer_pairs_than_the_parts_alone():
    """Windows straddle sibling parts (parts are not exactly 128 nodes); RCM inside the parts keeps
    the straddling share of a part a connected piece, so windows gather fewer distinct X rows."""
    for seed, nodes in ((9, 6000), (11, 12000)):
        adj, _ = community_graph(nodes, seed=seed)
        graph, _ = _symmetric_graph(*adj.nonzero(), adj.shape)
        with_rcm = window_stretch(adj, community_order(graph))
        parts_alone = window_stretch(adj, community_order(graph, leaf_nodes=WINDOW))
        assert with_rcm < parts_alone


def test_community_fast_is_the_window_sized_parts_alone():
    adj, _ = community_graph(3000, seed=10)
    rows, cols = adj.nonzero()
    fast, _ = compute_order("community-fast", rows, cols, adj.shape)
    graph, _ = _symmetric_graph(rows, cols, adj.shape)
    assert np.array_equal(fast, community_order(graph, leaf_nodes=128))


def test_small_graphs_are_cut_by_one_metis_call_unless_asked_otherwise():
    """Below SAMPLED_TOP_LEVELS_MIN_ENTRIES the parts are METIS's own recursive bisection of the whole graph."""
    from dste.format.partition import SAMPLED_TOP_LEVELS_MIN_ENTRIES, _index_dtype, metis_recursive_parts

    adj, _ = community_graph(3000, seed=2)
    graph, _ = _symmetric_graph(*adj.nonzero(), adj.shape)
    assert graph.nnz < SAMPLED_TOP_LEVELS_MIN_ENTRIES
    whole = metis_recursive_parts(graph.indptr.astype(_index_dtype()), graph.indices.astype(_index_dtype()), 24, 0)
    assert np.array_equal(recursive_bisection_parts(graph, 24, seed=0), whole)
    assert np.array_equal(recursive_bisection_parts(graph, 24, seed=0, sampled_top_levels=False), whole)
    assert not np.array_equal(recursive_bisection_parts(graph, 24, seed=0, sampled_top_levels=True), whole)


def test_is_permutation_refuses_repeats_out_of_range_and_negative_ids():
    assert is_permutation(np.array([2, 0, 1]), 3)
    assert is_permutation(np.zeros(0, dtype=np.int64), 0)
    assert not is_permutation(np.array([0, 0, 2]), 3)  # a repeat leaves an id out
    assert not is_permutation(np.array([0, 1, 3]), 3)
    assert not is_permutation(np.array([-3, 1, 2]), 3)  # -3 would index id 0 from the end
    assert not is_permutation(np.array([0, 1]), 3)
    assert is_permutation(np.array([1, 0], dtype=np.uint32), 2)



def test_each_community_order_seed_gives_its_own_order():
    # METIS draws the same numbers for its seeds 0 and 1, so EncodePolicy seeds 0 and 1 gave one order
    from dste.format.reorder import community_order

    adj, _ = community_graph(3000, seed=3)
    graph = sp.csr_matrix(adj)
    orders = [community_order(graph, seed=seed) for seed in range(3)]
    assert not np.array_equal(orders[0], orders[1])
    assert not np.array_equal(orders[1], orders[2])
    np.testing.assert_array_equal(orders[0], community_order(graph, seed=0))
