"""Row/column orders that raise tile density: reverse Cuthill-McKee and a community order.

Both return ``(row_perm, col_perm)`` int64 (encoded position -> original id). A square
matrix gets one symmetric order of the graph ``A + A^T``; a rectangular one is ordered
as the bipartite graph of its rows and columns.

Community order (``reorder="community"``)
-----------------------------------------
METIS multilevel recursive bisection (``dste.format.partition``, the ``pymetis`` binding)
cuts the graph into window-sized (128-node) parts (on large graphs its top two levels cut on edge
samples, then one METIS call per quarter, which keeps METIS's resident memory to a quarter of the
graph's edges; see ``dste.format.partition``). Parts are laid out by part id, and the nodes of each part in the
reverse Cuthill-McKee order of the part's own subgraph (its edges between parts left out):

- recursive bisection numbers parts along its bisection tree, so every run of consecutive
  parts is itself a well-cut piece of the graph;
- parts are not exactly 128 nodes (METIS's small imbalance), so most windows straddle two
  sibling parts; RCM keeps each connected piece of a part contiguous and its neighbours
  close, so the share of a part that falls into the next window is a piece whose nodes share
  neighbours rather than an arbitrary one.

Measured on the 14 graphs of ``bench/test_reorder.py`` and a 20k-node graph of 26-43-node
communities against the former order (the better of the parts as they come and RCM slices of
them with linked slices joined, chosen by counting both orders' (window, column) pairs):
stretch -5.0 % to +0.6 %, lower on 11, at about a third of the former order's work besides
METIS (one RCM, no second order, no counting; ``bench/README.md``, "Reordering").

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

from dste.format.constants import WINDOW_ROWS
from dste.format.errors import DSTEFormatError
from dste.format.partition import recursive_bisection_parts, release_free_heap
from dste.format.rcm import reverse_cuthill_mckee_order


MAX_LP_ROUNDS = 30
LP_STOP_FRACTION = 1e-3


def compute_order(method: str, rows, cols, shape, seed: int = 0):
    """``(row_perm, col_perm)`` for ``method`` in {"rcm", "community", "community-fast"} from COO structure.

    ``"community-fast"`` is the community order without the RCM order inside each part (the
    window-sized METIS parts as they come): 0.1-0.15 s less at ogbn-arxiv size, 2-22 % more
    X rows on the graphs of ``bench/test_reorder.py``.
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
    """Reverse Cuthill-McKee order of a symmetric graph, the same on every CPU (``dste.format.rcm``)."""
    return reverse_cuthill_mckee_order(graph)


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
    """Nodes by METIS recursive-bisection part, each part in its intra-part RCM order (module docstring).

    ``leaf_nodes=None``: window-sized (``WINDOW_ROWS``) parts, each laid out in the reverse
    Cuthill-McKee order of its own subgraph. ``leaf_nodes=k``: ``ceil(n / k)`` parts, laid out
    by part alone (ties keep the original id order; ``reorder="community-fast"``).
    """
    n = graph.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if leaf_nodes is not None and leaf_nodes < 1:
        raise DSTEFormatError(f"community_order: leaf_nodes must be >= 1, got {leaf_nodes}")
    parts = recursive_bisection_parts(graph, -(-n // (leaf_nodes or WINDOW_ROWS)), seed=seed)
    if leaf_nodes is not None:
        order = np.argsort(parts, kind="stable")
    else:
        order = np.lexsort((_intra_part_rcm_rank(graph, parts), parts))
    # what METIS freed would otherwise stay resident under the encode's peak
    release_free_heap()
    return order.astype(np.int64)


def _intra_part_rcm_rank(graph: sp.csr_matrix, parts: np.ndarray) -> np.ndarray:
    """Position (int64 [n]) of each node in the RCM order of ``graph`` without its edges between parts.

    Every connected component of that graph lies inside one part, and RCM numbers each component
    contiguously, so sorting a part's nodes by this rank lays the part out in RCM order.
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
    rank[reverse_cuthill_mckee_order(intra)] = np.arange(n)
    return rank


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
