"""Reverse Cuthill-McKee order that is the same on every CPU.

Cuthill-McKee (Cuthill and McKee, 1969): a breadth-first search of each connected component,
started at the component's node of lowest degree, that enqueues the unvisited neighbours of
each node in order of increasing degree; reversing the visit order gives RCM. Every tie (two
start candidates or two neighbours of one degree) goes to the lower node id, so the order is a
function of the graph alone.

Why not ``scipy.sparse.csgraph.reverse_cuthill_mckee``: it ranks the start candidates with an
unstable ``np.argsort`` of the degrees, and NumPy dispatches that sort by CPU (AVX2 and AVX-512
sorting networks, or a scalar introsort), each leaving ties of equal degree in a different
order. Graphs are full of such ties, so SciPy's order, and every encoding laid out by it, moved
with the machine: the cora-like default encoding had three different byte counts on CPUs with
AVX-512, with AVX2 and with NumPy's SIMD dispatch switched off (``NPY_DISABLE_CPU_FEATURES``).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numba import njit


@njit(cache=True, nogil=True)
def _cuthill_mckee_visits(indptr, neighbours_by_degree, start_candidates):  # pragma: no cover - compiled
    n = indptr.size - 1
    visited = np.zeros(n, dtype=np.bool_)
    order = np.empty(n, dtype=np.int64)
    head = 0
    tail = 0
    for start in start_candidates:
        if visited[start]:
            continue
        visited[start] = True
        order[tail] = start
        tail += 1
        while head < tail:
            node = order[head]
            head += 1
            for position in range(indptr[node], indptr[node + 1]):
                neighbour = neighbours_by_degree[position]
                if not visited[neighbour]:
                    visited[neighbour] = True
                    order[tail] = neighbour
                    tail += 1
    return order


def reverse_cuthill_mckee_order(graph: sp.csr_matrix) -> np.ndarray:
    """RCM order (int64 [n], position -> node id) of a structurally symmetric square CSR graph.

    A node's degree is its number of stored neighbours other than itself; a self loop is
    ignored. Ties go to the lower node id (module docstring), so the order does not depend on
    the CPU, NumPy's sort dispatch or the order of a row's stored indices.
    """
    graph = sp.csr_matrix(graph)
    if not graph.has_sorted_indices:
        graph = graph.sorted_indices()
    n, m = graph.shape
    if n != m:
        raise ValueError(f"reverse_cuthill_mckee_order needs a square graph, got shape {graph.shape}")
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    indptr = graph.indptr.astype(np.int64)
    indices = graph.indices.astype(np.int64)
    row = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))
    off_diagonal = indices != row
    degree = np.bincount(row[off_diagonal], minlength=n).astype(np.int64)
    # each row's neighbours by (degree, id): a stable sort of (row, degree) over indices sorted in each row
    key = row * (int(degree.max()) + 1) + degree[indices]
    neighbours_by_degree = indices[np.argsort(key, kind="stable")]
    start_candidates = np.argsort(degree, kind="stable")
    return _cuthill_mckee_visits(indptr, neighbours_by_degree, start_candidates)[::-1].copy()
