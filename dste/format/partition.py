"""Balanced graph partitioning through METIS (the ``pymetis`` binding), for the community order.

One job: split a symmetric graph into ``n_parts`` parts of near-equal node count with few
edges between them, by METIS's multilevel recursive bisection (``METIS_PartGraphRecursive``).
Recursive bisection numbers its parts along the bisection tree: parts ``[0, k/2)`` come from
one half of the first cut and ``[k/2, k)`` from the other, and so on down, so sorting nodes by
part id gives a nested order in which any run of consecutive parts is itself a well-cut piece
of the graph. That is what lets fixed 128-row windows, which need not fall on part boundaries,
still hold nodes that share neighbours.

METIS is single-threaded and, for a fixed ``seed``, deterministic.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from dste.format.errors import DSTEFormatError


REFINEMENT_ITERATIONS: int | None = 1
"""METIS's refinement iterations per uncoarsening level (``METIS_OPTION_NITER``; None: METIS's
default, 10). One pass takes 0.2-0.3 s (a fifth) off a METIS call at ogbn-arxiv's size; measured
on the 14 graphs of ``bench/test_reorder.py``, the community order's stretch moves by -0.9 % to
+2.5 % against 10 passes on 13 of them, +6.7 % on the 84k-node, 128-node-community, 95 %-local one
(still 2.5 % below the earlier two-METIS-call order there); +0.5 % on ``arxiv-scale`` (bench/README.md,
"Encode time and memory")."""


def _pymetis():
    try:
        import pymetis
    except ImportError as exc:  # pinned in requirements.txt; a clear message if an install skipped it
        raise DSTEFormatError(
            "reorder='community' needs the METIS binding 'pymetis' (pinned in requirements.txt); "
            f"it could not be imported: {exc}"
        ) from exc
    return pymetis


def recursive_bisection_parts(graph: sp.csr_matrix, n_parts: int, seed: int = 0) -> np.ndarray:
    """Part id (int64 ``[n]``, in ``[0, n_parts)``) of each node of a symmetric graph.

    ``graph``: CSR, symmetric, no self loops (METIS requires both; values are ignored).
    ``n_parts`` is clipped to ``[1, n]``. Part ids follow the bisection tree (see module docstring).
    """
    n = graph.shape[0]
    if graph.shape[0] != graph.shape[1]:
        raise DSTEFormatError(f"recursive_bisection_parts: graph must be square, got shape {graph.shape}")
    n_parts = int(min(max(n_parts, 1), n))
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if n_parts == 1:
        return np.zeros(n, dtype=np.int64)
    pymetis = _pymetis()
    adjacency = pymetis.CSRAdjacency(
        adj_starts=np.ascontiguousarray(graph.indptr, dtype=np.int32),
        adjacent=np.ascontiguousarray(graph.indices, dtype=np.int32),
    )
    options = pymetis.Options(seed=int(seed))
    if REFINEMENT_ITERATIONS is not None:
        options.niter = REFINEMENT_ITERATIONS
    _, parts = pymetis.part_graph(n_parts, adjacency, options=options, recursive=True)
    return np.asarray(parts, dtype=np.int64)
