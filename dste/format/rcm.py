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
with the machine: the cora-like default encoding came out three ways, on this project's earlier
machines, on AVX2 machines, and on those with NumPy's SIMD dispatch switched off
(``NPY_DISABLE_CPU_FEATURES``).
"""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp
from numba import njit


@njit(cache=True, nogil=True)
def _off_diagonal_degrees(indptr, indices):  # pragma: no cover - compiled
    n = indptr.size - 1
    degree = np.zeros(n, dtype=np.int64)
    for node in range(n):
        for position in range(indptr[node], indptr[node + 1]):
            if indices[position] != node:
                degree[node] += 1
    return degree


@njit(cache=True, nogil=True)
def _cuthill_mckee_visits(indptr, indices, degree, start_candidates):  # pragma: no cover - compiled
    n = indptr.size - 1
    visited = np.zeros(n, dtype=np.bool_)
    order = np.empty(n, dtype=np.int64)
    # (degree, id) of a node's new neighbours as one int64 key: unique, so any sort orders them alike
    keys = np.empty(max(degree.max(), 1), dtype=np.int64)
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
            count = 0
            for position in range(indptr[node], indptr[node + 1]):
                neighbour = indices[position]
                if not visited[neighbour]:
                    visited[neighbour] = True
                    keys[count] = degree[neighbour] * n + neighbour
                    count += 1
            for key in np.sort(keys[:count]):
                order[tail] = key % n
                tail += 1
    return order


def reverse_cuthill_mckee_order(graph: sp.csr_matrix) -> np.ndarray:
    """RCM order (int64 [n], position -> node id) of a structurally symmetric square CSR graph.

    A node's degree is its number of stored neighbours other than itself; a self loop is
    ignored. Ties go to the lower node id (module docstring), so the order does not depend on
    the CPU, NumPy's sort dispatch or the order of a row's stored indices. Besides the graph it
    holds O(n) memory: the encode's peak runs through here on large graphs.
    """
    graph = sp.csr_matrix(graph)
    n, m = graph.shape
    if n != m:
        raise ValueError(f"reverse_cuthill_mckee_order needs a square graph, got shape {graph.shape}")
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    degree = _off_diagonal_degrees(graph.indptr, graph.indices)
    start_candidates = np.argsort(degree, kind="stable")
    return _cuthill_mckee_visits(graph.indptr, graph.indices, degree, start_candidates)[::-1].copy()


def compile_orders() -> float:
    """Compile the two passes above for int32 and int64 CSR graphs, or load them from Numba's cache beside this
    module; returns the seconds it took. ``scripts/setup.sh`` calls this once, so that encodes find it cached."""
    started = time.perf_counter()
    for index_dtype in (np.int32, np.int64):
        graph = sp.csr_matrix((np.ones(2, dtype=bool), np.array([1, 0], dtype=index_dtype),
                               np.array([0, 1, 2], dtype=index_dtype)), shape=(2, 2))
        graph.indices = graph.indices.astype(index_dtype)
        graph.indptr = graph.indptr.astype(index_dtype)
        reverse_cuthill_mckee_order(graph)
    return time.perf_counter() - started
