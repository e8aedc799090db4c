"""dste.format.rcm: reverse Cuthill-McKee with every tie to the lower id, the same on every CPU.

The reference is a plain-Python Cuthill-McKee written from the definition (adjacency sets, a
deque, ``sorted`` by (degree, id)); the compiled pass sorts each node's new neighbours by one
(degree, id) key as it enqueues them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import deque

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from dste.format.rcm import reverse_cuthill_mckee_order


def _reference_rcm(n: int, rows, cols) -> list[int]:
    neighbours = [set() for _ in range(n)]
    for u, v in zip(rows, cols):
        if u != v:
            neighbours[u].add(v)
            neighbours[v].add(u)
    degree = [len(s) for s in neighbours]
    by_degree = lambda node: (degree[node], node)  # noqa: E731
    visited = [False] * n
    order: list[int] = []
    for start in sorted(range(n), key=by_degree):
        if visited[start]:
            continue
        visited[start] = True
        queue = deque([start])
        while queue:
            node = queue.popleft()
            order.append(node)
            for neighbour in sorted((u for u in neighbours[node] if not visited[u]), key=by_degree):
                visited[neighbour] = True
                queue.append(neighbour)
    return order[::-1]


def _symmetric(n, rows, cols, shuffle_rows_of=None):
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    graph = sp.csr_matrix((np.ones(2 * rows.size, dtype=bool), (np.r_[rows, cols], np.r_[cols, rows])), shape=(n, n))
    graph.sum_duplicates()
    if shuffle_rows_of is not None:  # unsorted indices inside rows, as a caller may hand over
        rng = np.random.default_rng(shuffle_rows_of)
        for r in range(n):
            segment = slice(graph.indptr[r], graph.indptr[r + 1])
            graph.indices[segment] = rng.permutation(graph.indices[segment])
        graph.has_sorted_indices = False
    return graph


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40).flatmap(lambda n: st.tuples(
    st.just(n), st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=3 * n),
    st.integers(0, 2**31 - 1))))
def test_matches_a_plain_python_cuthill_mckee(case):
    n, edges, shuffle_seed = case
    rows, cols = [e[0] for e in edges], [e[1] for e in edges]
    graph = _symmetric(n, rows, cols, shuffle_rows_of=shuffle_seed)  # self loops kept: they must be ignored
    order = reverse_cuthill_mckee_order(graph)
    assert order.dtype == np.int64
    assert order.tolist() == _reference_rcm(n, rows, cols)


def test_matches_the_reference_on_a_graph_full_of_degree_ties():
    rng = np.random.default_rng(3)
    n = 600
    rows, cols = rng.integers(0, n, 1500), rng.integers(0, n, 1500)
    assert reverse_cuthill_mckee_order(_symmetric(n, rows, cols)).tolist() == _reference_rcm(n, rows, cols)


def test_a_shuffled_path_gets_bandwidth_one():
    n = 200
    label = np.random.default_rng(0).permutation(n)
    graph = _symmetric(n, label[:-1], label[1:])
    position = np.empty(n, dtype=np.int64)
    position[reverse_cuthill_mckee_order(graph)] = np.arange(n)
    coo = graph.tocoo()
    assert np.abs(position[coo.row] - position[coo.col]).max() == 1


def test_empty_and_non_square_graphs():
    assert reverse_cuthill_mckee_order(sp.csr_matrix((0, 0), dtype=bool)).shape == (0,)
    assert reverse_cuthill_mckee_order(sp.csr_matrix((5, 5), dtype=bool)).tolist() == [4, 3, 2, 1, 0]
    with pytest.raises(ValueError, match="square graph, got shape \\(3, 4\\)"):
        reverse_cuthill_mckee_order(sp.csr_matrix((3, 4), dtype=bool))


_SUBPROCESS_PROBE = """
import hashlib, json, sys
import numpy as np
from dste.data import load_dataset
from dste.format import gcn_normalized
from dste.format.reorder import community_order, symmetric_graph_of
ties = np.random.default_rng(0).integers(1, 6, size=3000)
adj = load_dataset("cora-like").adj
encoded = gcn_normalized(adj, reorder="community")
print(json.dumps({
    "argsort_ties": hashlib.sha256(np.argsort(ties).tobytes()).hexdigest(),
    "community_order": hashlib.sha256(community_order(symmetric_graph_of(adj)).tobytes()).hexdigest(),
    "row_perm": hashlib.sha256(encoded.row_perm.tobytes()).hexdigest(),
    "device_bytes": encoded.nbytes()["device_total"],
}))
"""


def _probe(env_extra: dict) -> dict:
    env = {**os.environ, **env_extra}
    done = subprocess.run([sys.executable, "-c", _SUBPROCESS_PROBE], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _dispatched_simd_features() -> list[str]:
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    except ImportError:  # NumPy 1.x layout
        return []
    return [name for name in __cpu_dispatch__ if __cpu_features__.get(name)]


def test_the_default_encoding_does_not_move_with_numpys_simd_sort():
    """NumPy's unstable argsort leaves ties in a CPU-dependent order (SIMD sorting networks or an
    introsort); with the dispatched SIMD features switched off the encoding must stay bit for bit."""
    features = _dispatched_simd_features()
    if not features:
        pytest.skip("this CPU runs none of NumPy's dispatched SIMD features: nothing to switch off")
    native = _probe({})
    scalar = _probe({"NPY_DISABLE_CPU_FEATURES": " ".join(features)})
    if native["argsort_ties"] == scalar["argsort_ties"]:
        pytest.skip(f"switching off {features} leaves NumPy's argsort tie order unchanged on this CPU")
    for field in ("community_order", "row_perm", "device_bytes"):
        assert native[field] == scalar[field], f"{field} moved with NumPy's SIMD dispatch ({features} off)"
