"""Row/column orders that raise tile density: reverse Cuthill-McKee and a community order.

Both return ``(row_perm, col_perm)`` int64 (encoded position -> original id). A square
matrix gets one symmetric order of the graph ``A + A^T``; a rectangular one is ordered
as the bipartite graph of its rows and columns.

Community order (``reorder="community"``)
-----------------------------------------
METIS multilevel recursive bisection (``dste.format.partition``, the ``pymetis`` binding)
cuts the graph into leaves of about ``leaf`` nodes, and nodes are laid out by leaf id.
Recursive bisection numbers parts along its bisection tree, so every run of consecutive
leaves is itself a well-cut piece of the graph. Two leaf sizes are tried
(``LEAF_CANDIDATES``), three orders in all, and the one with the fewest distinct
(window, column) pairs is kept:

- 128-node leaves: every 128-row window is one METIS part (up to the parts' few-per-cent
  imbalance, which shifts window boundaries into a sibling part);
- 32-node leaves: a window holds about four sibling leaves; where communities do not fit
  windows this keeps each community contiguous and lets windows cut through it, as a
  community detector's order would;
- the same 32-node leaves with strongly linked leaves joined into contiguous groups
  (``LEAF_JOIN_SHARE``), for communities that a balanced cut split across the tree.

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
from dste.format.partition import recursive_bisection_parts

LEAF_CANDIDATES = (WINDOW_ROWS, 32)
"""Leaf sizes tried by the community order (``bench/test_reorder.py``, measured stretch):

128-node leaves make every window one METIS part: best where communities fit windows (the
``arxiv-scale`` presets, communities of 64-128 nodes: 5-9 % below the generator's own order).
32-node leaves keep a community's leaves adjacent while windows cut through them, as the
generator's order does: better where communities do not fit windows (48-160 nodes: 128-node
leaves 7-29 % above the generator's order, 32-node leaves 0-9 %). On communities of 1,000+
nodes both are 7-19 % below the generator's order (32-node leaves by 1-3 % more)."""

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

    ``"community-fast"`` is the community order's first candidate alone (128-node leaves, one
    METIS call): about 40 % of its time, the same order wherever that candidate wins (the
    ``arxiv-scale`` presets), up to 29 % more X rows where communities do not fit windows.
    """
    N, M = shape
    graph, n_nodes = _symmetric_graph(rows, cols, shape)
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
    N, M = shape
    if N == M:
        src, dst, n = rows, cols, N
    else:
        src, dst, n = rows, cols + N, N + M
    keep = src != dst
    src, dst = src[keep], dst[keep]
    data = np.ones(2 * src.size, dtype=np.int8)
    graph = sp.csr_matrix((data, (np.concatenate([src, dst]), np.concatenate([dst, src]))), shape=(n, n))
    graph.sum_duplicates()
    graph.data[:] = 1
    return graph, n


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

    ``leaf_nodes=None`` tries every size in ``LEAF_CANDIDATES`` (those below a window also
    with leaves joined, see ``LEAF_JOIN_SHARE``) and keeps the order with the fewest distinct
    (window, column) pairs (ties: the earlier one). ``leaf_nodes=k`` is one METIS call into
    ``ceil(n / k)`` leaves.
    """
    n = graph.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if leaf_nodes is not None:
        if leaf_nodes < 1:
            raise DSTEFormatError(f"community_order: leaf_nodes must be >= 1, got {leaf_nodes}")
        parts = recursive_bisection_parts(graph, -(-n // leaf_nodes), seed=seed)
        # stable within a leaf: ties keep the original id order, so the result depends only on the parts
        return np.argsort(parts, kind="stable").astype(np.int64)
    best_order, best_pairs = None, None
    for candidate in LEAF_CANDIDATES:
        parts = recursive_bisection_parts(graph, -(-n // candidate), seed=seed)
        orders = [np.argsort(parts, kind="stable").astype(np.int64)]
        if candidate < WINDOW_ROWS:
            orders.append(_joined_leaf_order(graph, parts))
        for order in orders:
            pairs = window_column_pairs(graph, order)
            if best_pairs is None or pairs < best_pairs:
                best_order, best_pairs = order, pairs
    return best_order


def _joined_leaf_order(graph: sp.csr_matrix, parts: np.ndarray) -> np.ndarray:
    """Nodes by (group of strongly linked leaves, leaf id); see ``LEAF_JOIN_SHARE``."""
    n = graph.shape[0]
    n_leaves = int(parts.max()) + 1
    membership = sp.csr_matrix((np.ones(n, dtype=np.float64), (np.arange(n), parts)), shape=(n, n_leaves))
    links = (membership.T @ graph.astype(np.float64) @ membership).tocoo()  # edge endpoints between leaves
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
    order's stretch times the node count (the self loop counts: GCN adds it).
    """
    n = graph.shape[0]
    window = np.empty(n, dtype=np.int64)
    window[order] = np.arange(n, dtype=np.int64) // WINDOW_ROWS
    rows = np.repeat(window, np.diff(graph.indptr))
    pairs = sp.csr_matrix(
        (np.ones(graph.nnz + n, dtype=np.int8),
         (np.concatenate([rows, window]), np.concatenate([graph.indices, np.arange(n)]))),
        shape=(int(window.max()) + 1, n),
    )
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
