"""Row/column orders that raise tile density: reverse Cuthill-McKee and a community order.

Both return ``(row_perm, col_perm)`` int64 (encoded position -> original id). A square
matrix gets one symmetric order of the graph ``A + A^T``; a rectangular one is ordered
as the bipartite graph of its rows and columns.

Community order (``reorder="community"``)
-----------------------------------------
METIS multilevel recursive bisection (``dste.format.partition``, the ``pymetis`` binding)
cuts the graph into leaves of about ``leaf`` nodes, and nodes are laid out by leaf id.
Recursive bisection numbers parts along its bisection tree, so every run of consecutive
leaves is itself a well-cut piece of the graph. One partition into window-sized (128-node)
parts (its first cut made on an edge sample, then one METIS call per side, which keeps METIS's
resident memory to half the graph's edges; see ``dste.format.partition``) gives the orders
below; the one with the fewest distinct (window, column) pairs is kept:

- the parts themselves: every 128-row window is one METIS part (up to the parts' small
  imbalance, which shifts window boundaries into a sibling part);
- each part cut into 8 slices of its intra-part reverse Cuthill-McKee order, with
  strongly linked slices joined into contiguous groups (``SPLIT_CANDIDATES``,
  ``LEAF_JOIN_SHARE``): where communities do not fit windows, the pieces of a community
  that the balanced cut put into two parts come back together and windows cut through it,
  as a community detector's order would.

Deterministic for a fixed seed (METIS is single-threaded and seeded).

Why a balanced partitioner and not a community detector: stretch (distinct (128-row
window, column) pairs / nodes) depends on windows of exactly 128 rows sharing columns,
whatever the community sizes of the graph. A community detector finds groups of any size
(too small: many share a window; too large: a window holds a slice of one, in no useful
order). The former hand-written label propagation (kept as
:func:`label_propagation_order` for comparison) stopped at median communities of 2-3
nodes on graphs of 1,000-node communities. Measurements (communities of 64 to 5,000
nodes, 60-95 % of edges inside, 20k-300k nodes, shuffled ids) are in
``bench/test_reorder.py`` and ``bench/README.md``, section "Reordering".
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components, reverse_cuthill_mckee

from dste.format.constants import WINDOW_ROWS
from dste.format.errors import DSTEFormatError
from dste.format.partition import recursive_bisection_parts, release_free_heap


def inverse_permutation(perm) -> np.ndarray:
    """``inverse[perm] = arange(len(perm))`` as int64: the encoded position of each original id (empty for an
    empty ``perm``)."""
    perm = np.asarray(perm)
    inverse = np.empty(perm.shape[0], dtype=np.int64)
    inverse[perm] = np.arange(perm.shape[0], dtype=np.int64)
    return inverse


def is_permutation(perm: np.ndarray, length: int) -> bool:
    """``perm`` (an integer array) holds every id of ``0..length - 1`` exactly once: a range check and one pass, no
    sort (a negative id would otherwise index from the end)."""
    if perm.shape != (length,):
        return False
    if length and (perm.min() < 0 or perm.max() >= length):
        return False
    seen = np.zeros(length, dtype=bool)
    seen[perm] = True
    return bool(seen.all())

SPLIT_CANDIDATES = (8,)
"""Besides the window-sized parts themselves, the community order tries the parts cut into this
many RCM slices each, with strongly linked slices joined (``LEAF_JOIN_SHARE``), and keeps the
order with the fewest pairs. Joined slices of neighbouring parts let windows cut through a
community instead of splitting it between two parts, as a finer METIS tree did before (32-node
leaves: a second METIS call, 1.8x the time of the first) at about a twelfth of its time.
Measured on the 14 graphs of ``bench/test_reorder.py`` against that former order: stretch
0.95-1.03x (communities of 48-5,000 nodes; on the ``arxiv-scale`` presets the parts themselves
win). 2 slices won nowhere by more than 0.5 % and cost 0.25 s at arxiv size, so they are not tried."""

LEAF_JOIN_SHARE = 0.2
"""Leaves smaller than a window are also tried joined: two leaves whose shared edges are at
least this share of the smaller one's edge endpoints are one group, and groups (connected
components of such links) are laid out contiguously. A balanced cut splits a community into
leaves that the bisection tree may place far apart; joining puts them back together. Measured
0.05-0.3 (0.2 best or tied on 5 of 7 graphs): up to 2 % fewer pairs on communities of 48-160 nodes,
no change on larger ones (their leaves share only a few per cent of their edges with each other)."""

MAX_LP_ROUNDS = 30
LP_STOP_FRACTION = 1e-3


def compute_order(method: str, rows, cols, shape, seed: int = 0):
    """``(row_perm, col_perm)`` for ``method`` in {"rcm", "community", "community-fast"} from COO structure.

    ``"community-fast"`` is the community order's first candidate alone (the window-sized METIS
    parts, without trying the joined slices): the same order wherever that candidate wins (the
    ``arxiv-scale`` presets), up to 24 % more X rows where communities do not fit windows.
    """
    graph, _ = _symmetric_graph(rows, cols, shape)
    return order_of_graph(method, graph, shape, seed=seed)


def order_of_graph(method: str, graph: sp.csr_matrix, shape, seed: int = 0):
    """:func:`compute_order` from the graph :func:`symmetric_graph_of` made of the matrix of ``shape``."""
    N, M = shape
    if method == "rcm":
        order = rcm_order(graph)
    elif method == "community":
        order = community_order(graph, seed=seed)
    elif method == "community-fast":
        order = community_order(graph, seed=seed, leaf_nodes=WINDOW_ROWS)
    else:
        raise DSTEFormatError(
            f"unknown reorder method {method!r}; allowed: 'rcm', 'community', 'community-fast'"
        )
    if N == M:
        return order, order.copy()
    row_perm = order[order < N]
    col_perm = order[order >= N] - N
    return row_perm.astype(np.int64), col_perm.astype(np.int64)


def _symmetric_graph(rows, cols, shape):
    """``(graph, n)``: the boolean CSR pattern of ``A + A^T`` without self loops (bipartite if not square)."""
    N, M = shape
    pattern = sp.csr_matrix(
        (np.ones(len(rows), dtype=bool), (np.asarray(rows, dtype=np.int32), np.asarray(cols, dtype=np.int32))),
        shape=(N, M),
    )
    return symmetric_graph_of(pattern), (N if N == M else N + M)


def symmetric_graph_of(matrix: sp.spmatrix) -> sp.csr_matrix:
    """The boolean CSR pattern (int32 indices) of ``A + A^T`` without self loops; a rectangular
    ``A`` [N, M] becomes its bipartite graph on N + M nodes (rows first)."""
    pattern = sp.csr_matrix(matrix, dtype=bool, copy=False)
    N, M = pattern.shape
    if N != M:
        pattern = sp.bmat([[None, pattern], [pattern.T, None]], format="csr", dtype=bool)
    graph = (pattern + pattern.T.tocsr()).tocsr()  # boolean sum: the union of the two patterns
    graph.setdiag(False)
    graph.eliminate_zeros()
    graph.indptr = graph.indptr.astype(np.int32, copy=False)
    graph.indices = graph.indices.astype(np.int32, copy=False)
    graph.sort_indices()
    return graph


def rcm_order(graph: sp.csr_matrix) -> np.ndarray:
    """Reverse Cuthill-McKee order of a symmetric graph (SciPy csgraph)."""
    if graph.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    return reverse_cuthill_mckee(graph, symmetric_mode=True).astype(np.int64)


def label_propagation(graph: sp.csr_matrix, seed: int = 0) -> np.ndarray:
    """Community label (int64 [n]) of each node of a symmetric graph without self loops.

    Every node counts its neighbours' labels (one sort of the (node, label) pairs per
    round), takes the most frequent one (ties: keep the current label, else random); only a
    random half of the nodes move per round, which stops the two-colour oscillation of
    synchronous propagation. At most ``MAX_LP_ROUNDS`` rounds; stops when fewer than
    ``LP_STOP_FRACTION`` of the nodes change.
    """
    n = graph.shape[0]
    labels = np.arange(n, dtype=np.int64)
    if graph.nnz == 0:
        return labels
    rng = np.random.default_rng(seed)
    src = np.repeat(np.arange(n, dtype=np.int64), np.diff(graph.indptr))
    dst = graph.indices.astype(np.int64)
    for _ in range(MAX_LP_ROUNDS):
        pair = np.sort(src * n + labels[dst])  # grouped by node, then label
        boundary = np.ones(pair.size, dtype=bool)
        boundary[1:] = pair[1:] != pair[:-1]
        starts = np.flatnonzero(boundary)
        counts = np.diff(np.append(starts, pair.size))
        node = pair[starts] // n
        label = pair[starts] % n
        # score: count first, then "is my current label", then a random tie-break
        score = counts * 4096 + (label == labels[node]) * 2048 + rng.integers(0, 2048, size=starts.size)
        node_start = np.ones(node.size, dtype=bool)
        node_start[1:] = node[1:] != node[:-1]
        first = np.flatnonzero(node_start)
        best = np.maximum.reduceat(score, first)
        is_best = score == np.repeat(best, np.diff(np.append(first, node.size)))
        winner_node = node[is_best]
        winner_label = label[is_best]
        unique_winner = np.ones(winner_node.size, dtype=bool)
        unique_winner[1:] = winner_node[1:] != winner_node[:-1]
        winner_node, winner_label = winner_node[unique_winner], winner_label[unique_winner]
        movers = rng.random(winner_node.size) < 0.5
        winner_node, winner_label = winner_node[movers], winner_label[movers]
        changed = labels[winner_node] != winner_label
        labels[winner_node] = winner_label
        if changed.sum() < LP_STOP_FRACTION * n:
            break
    return labels


def community_order(graph: sp.csr_matrix, seed: int = 0, leaf_nodes: int | None = None) -> np.ndarray:
    """Nodes laid out by METIS recursive-bisection leaf (see module docstring).

    ``leaf_nodes=None``: one METIS call into window-sized parts, then the candidates of
    ``SPLIT_CANDIDATES`` (parts cut into RCM slices, strongly linked slices joined), keeping
    the order with the fewest distinct (window, column) pairs (ties: the earlier one).
    ``leaf_nodes=k`` is one METIS call into ``ceil(n / k)`` leaves, laid out by leaf.
    """
    n = graph.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if leaf_nodes is not None and leaf_nodes < 1:
        raise DSTEFormatError(f"community_order: leaf_nodes must be >= 1, got {leaf_nodes}")
    parts = recursive_bisection_parts(graph, -(-n // (leaf_nodes or WINDOW_ROWS)), seed=seed)
    # stable within a leaf: ties keep the original id order, so the result depends only on the parts
    best_order = np.argsort(parts, kind="stable")
    if leaf_nodes is not None:
        release_free_heap()
        return best_order.astype(np.int64)
    best_pairs = window_column_pairs(graph, best_order)
    for slices in SPLIT_CANDIDATES:
        order = _joined_leaf_order(graph, _rcm_slices(graph, parts, slices))
        pairs = window_column_pairs(graph, order)
        if pairs < best_pairs:
            best_order, best_pairs = order, pairs
    # what METIS and the candidates freed would otherwise stay resident under the encode's peak
    release_free_heap()
    return best_order.astype(np.int64)


def _rcm_slices(graph: sp.csr_matrix, parts: np.ndarray, slices: int) -> np.ndarray:
    """Leaf id (int64 [n]) of each node: every part cut into ``slices`` runs of its intra-part RCM order.

    RCM numbers each connected component of the intra-part graph contiguously and keeps
    neighbours close, so a run is a piece of the part whose nodes share neighbours.
    """
    n = graph.shape[0]
    row = np.repeat(np.arange(n, dtype=np.int32), np.diff(graph.indptr))
    inside = parts[row] == parts[graph.indices]
    intra_indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(row[inside], minlength=n), out=intra_indptr[1:])
    del row
    intra = sp.csr_matrix((np.ones(int(intra_indptr[-1]), dtype=np.int8), graph.indices[inside], intra_indptr), shape=(n, n))
    del inside
    rank = np.empty(n, dtype=np.int64)
    rank[reverse_cuthill_mckee(intra, symmetric_mode=True)] = np.arange(n)
    del intra
    order = np.lexsort((rank, parts))
    part_in_order = parts[order]
    size = np.bincount(parts)
    first = np.cumsum(size) - size
    within = np.arange(n) - first[part_in_order]
    leaf = np.empty(n, dtype=np.int64)
    leaf[order] = part_in_order * slices + (within * slices) // size[part_in_order]
    return leaf


def _joined_leaf_order(graph: sp.csr_matrix, parts: np.ndarray) -> np.ndarray:
    """Nodes by (group of strongly linked leaves, leaf id); see ``LEAF_JOIN_SHARE``."""
    n = graph.shape[0]
    n_leaves = int(parts.max()) + 1
    membership = sp.csr_matrix(
        (np.ones(n, dtype=np.float32), parts.astype(np.int32), np.arange(n + 1, dtype=np.int32)), shape=(n, n_leaves)
    )
    # edge endpoints between leaves; float32 counts are exact below 2^24 per leaf pair
    pattern = sp.csr_matrix((np.ones(graph.nnz, dtype=np.float32), graph.indices, graph.indptr), shape=graph.shape)
    links = (membership.T.tocsr() @ (pattern @ membership)).tocoo()
    del pattern
    endpoints = np.bincount(links.row, weights=links.data, minlength=n_leaves)
    strong = (links.row != links.col) & (
        links.data >= LEAF_JOIN_SHARE * np.minimum(endpoints[links.row], endpoints[links.col])
    )
    joined = sp.csr_matrix(
        (np.ones(int(strong.sum()), dtype=np.int8), (links.row[strong], links.col[strong])), shape=(n_leaves, n_leaves)
    )
    _, group = connected_components(joined, directed=False)
    # a group sits where its first leaf sits in the bisection order, its leaves in tree order
    group_start = np.full(int(group.max()) + 1, n_leaves, dtype=np.int64)
    np.minimum.at(group_start, group, np.arange(n_leaves))
    leaf_rank = np.empty(n_leaves, dtype=np.int64)
    leaf_rank[np.lexsort((np.arange(n_leaves), group_start[group]))] = np.arange(n_leaves)
    return np.argsort(leaf_rank[parts], kind="stable").astype(np.int64)


def window_column_pairs(graph: sp.csr_matrix, order: np.ndarray) -> int:
    """Distinct (128-row window, column) pairs of ``graph + I`` laid out in ``order``.

    Each pair is one X row the kernel gathers, whatever the tile layout, so this is the
    order's stretch times the node count (the self loop counts: GCN adds it). Counted as
    the pattern of (window membership)^T (graph + I), a sparse product whose only large
    array is its output (one entry per pair).
    """
    n = graph.shape[0]
    if n == 0:
        return 0
    window = np.empty(n, dtype=np.int32)
    window[order] = np.arange(n, dtype=np.int32) // WINDOW_ROWS
    n_windows = int(window.max()) + 1
    # boolean sums are logical or, so no count can wrap to 0 and be dropped
    windows_by_node = sp.csr_matrix(
        (np.ones(n, dtype=bool), window, np.arange(n + 1, dtype=np.int32)), shape=(n, n_windows)
    ).T.tocsr()
    pattern = sp.csr_matrix((np.ones(graph.nnz, dtype=bool), graph.indices, graph.indptr), shape=graph.shape)
    pairs = windows_by_node @ pattern + windows_by_node
    pairs.sum_duplicates()
    return int(pairs.nnz)


def label_propagation_order(graph: sp.csr_matrix, seed: int = 0) -> np.ndarray:
    """The former community order: label propagation, then RCM on the intra-community graph.

    Kept for measurement only (``bench/test_reorder.py``). RCM numbers each connected
    component contiguously, so every community is a contiguous run with a band inside.
    """
    n = graph.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    labels = label_propagation(graph, seed=seed)
    coo = graph.tocoo()
    intra = labels[coo.row] == labels[coo.col]
    intra_graph = sp.csr_matrix(
        (np.ones(int(intra.sum()), dtype=np.int8), (coo.row[intra], coo.col[intra])), shape=(n, n)
    )
    return rcm_order(intra_graph)
