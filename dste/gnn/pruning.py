"""Edge pruning of a propagation matrix: the structure it is pruned from, and the two pruning policies.

:class:`PropagationPlan` holds one graph's propagation as a binary structure (rows, cols) with row/column
scales, plus its unpruned DSTE encoding (whose node order every pruned version reuses).

Policies (passed to :class:`dste.gnn.execution.GraphInference` as ``pruning=``):

* :class:`GatherAwarePruning` (the default; what ``dste run`` uses) -- an edge (i <- j) is scored by its
  propagation weight times the norm of the FP32 message it carries (|A_ij| * ||z_j||), divided by the number
  of edges sharing its gathered X row inside the 128-row window: an edge alone in its window column costs one
  whole gathered row of DMA, so it goes before an equally weak edge that shares a row. The kept edges are
  re-encoded (same node order, BIN tiles), so dropped edges really remove gathered rows and tiles from the
  kernel's plan, and each row's scale is raised so the row keeps its aggregation mass (for mean aggregation:
  exactly the mean over the kept neighbours).
* :class:`MagnitudeMaskPruning` -- drops the smallest effective values |A_ij| (edges between high-degree
  nodes) through the dynamic keep-mask of the unpruned matrix: no re-encoding, no re-scaling, the tiles stay.

Both drop ``floor(s * E_off)`` of the E_off off-diagonal entries, ties in storage order, and keep self loops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from dste.format import EncodePolicy
from dste.format.encoder import encode_coo
from dste.format.gcn import gcn_structure

from .adjacency import NORMALIZATIONS, encode_propagation, to_scipy_adjacency

__all__ = [
    "PropagationPlan",
    "GatherAwarePruning",
    "MagnitudeMaskPruning",
    "PRUNING_POLICIES",
    "gather_aware_keep",
    "magnitude_keep",
]

WINDOW_ROWS = 128  # rows per window of the DSTE format (dste.format.constants.WINDOW_ROWS)


@dataclass
class PropagationPlan:
    """One graph's propagation: binary structure, scales, and its unpruned DSTE encoding ``base``."""

    rows: np.ndarray  # int64 [nnz] of the binary structure (self loops included for GCN)
    cols: np.ndarray
    row_scale: np.ndarray  # float32 [n]: D^-1/2 (GCN) or 1/deg (mean)
    col_scale: np.ndarray | None  # float32 [n] (GCN) or None
    base: object  # DSTEMatrix

    @classmethod
    def build(cls, adj, norm: str) -> "PropagationPlan":
        """The plan of a binary SciPy adjacency ``[n, n]`` (row = target) under ``gcn`` or ``mean``."""
        if norm not in NORMALIZATIONS:
            raise ValueError(f"norm must be one of {NORMALIZATIONS}, got {norm!r}")
        # one edge per listed pair, stored zeros dropped: the structure the pruned matrices are built from must be
        # the unpruned base's (a raw duplicate counted twice in a row's mean, a stored zero became an edge)
        binary = to_scipy_adjacency(adj)
        base = encode_propagation(binary, norm)
        if norm == "gcn":
            rows, cols, _, _, dinv = gcn_structure(binary)
            return cls(rows, cols, dinv, dinv, base)
        coo = binary.tocoo()
        order = np.lexsort((coo.col, coo.row))
        rows, cols = coo.row[order].astype(np.int64), coo.col[order].astype(np.int64)
        degree = np.bincount(rows, minlength=adj.shape[0]).astype(np.float32)
        scale = np.where(degree > 0, 1.0 / np.maximum(degree, 1), 0.0).astype(np.float32)
        return cls(rows, cols, scale, None, base)

    @property
    def num_nodes(self) -> int:
        return int(self.row_scale.size)

    def weights(self) -> np.ndarray:
        """Propagation weight of every structure entry (row scale times column scale)."""
        col_scale = self.col_scale if self.col_scale is not None else np.ones(self.num_nodes, np.float32)
        return self.row_scale[self.rows] * col_scale[self.cols]


def _check_sparsity(sparsity: float) -> None:
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must lie in [0, 1), got {sparsity}")


def _drop_lowest(score: np.ndarray, off_diagonal: np.ndarray, sparsity: float, size: int) -> np.ndarray:
    keep = np.ones(size, dtype=bool)
    n_drop = int(math.floor(sparsity * off_diagonal.size))
    if n_drop:
        order = np.argsort(score, kind="stable")  # deterministic: ties dropped in storage order
        keep[off_diagonal[order[:n_drop]]] = False
    return keep


def gather_aware_keep(plan: PropagationPlan, message: np.ndarray, sparsity: float) -> np.ndarray:
    """Keep flags over ``plan``'s entries under :class:`GatherAwarePruning` (see the module docstring)."""
    _check_sparsity(sparsity)
    rows, cols = plan.rows, plan.cols
    off_diagonal = np.flatnonzero(rows != cols)
    if int(math.floor(sparsity * off_diagonal.size)) == 0:
        return np.ones(rows.size, dtype=bool)
    n = plan.num_nodes
    norms = np.linalg.norm(message, axis=1)
    row_perm = plan.base.row_perm
    position = np.empty(n, dtype=np.int64)
    position[row_perm if row_perm is not None else np.arange(n)] = np.arange(n)
    window_column = (position[rows] // WINDOW_ROWS) * n + cols
    _, inverse, sharing = np.unique(window_column, return_inverse=True, return_counts=True)
    score = plan.weights() * norms[cols] / sharing[inverse]
    return _drop_lowest(score[off_diagonal], off_diagonal, sparsity, rows.size)


def magnitude_keep(effective: sp.csr_matrix, sparsity: float) -> sp.csr_matrix:
    """Boolean keep-mask over ``effective``'s entries dropping the smallest off-diagonal |values|."""
    _check_sparsity(sparsity)
    coo = effective.tocoo()
    off_diagonal = np.flatnonzero(coo.row != coo.col)
    keep = _drop_lowest(np.abs(coo.data[off_diagonal]), off_diagonal, sparsity, coo.nnz)
    return sp.csr_matrix((np.ones(int(keep.sum()), dtype=bool), (coo.row[keep], coo.col[keep])), shape=coo.shape)


class GatherAwarePruning:
    """Message-weighted, gather-aware scores; the kept edges re-encoded with row mass preserved."""

    name = "gather-aware"

    def prune(self, plan: PropagationPlan, sparsity: float, message: np.ndarray):
        keep = gather_aware_keep(plan, message, sparsity)
        rows, cols = plan.rows[keep], plan.cols[keep]
        col_scale = plan.col_scale if plan.col_scale is not None else np.ones_like(plan.row_scale)
        full_mass = np.bincount(plan.rows, weights=col_scale[plan.cols], minlength=plan.num_nodes)
        kept_mass = np.bincount(rows, weights=col_scale[cols], minlength=plan.num_nodes)
        boost = np.where(kept_mass > 0, full_mass / np.maximum(kept_mass, 1e-30), 0.0)
        row_scale = (plan.row_scale * boost).astype(np.float32)
        policy = EncodePolicy(kinds="bin", row_scale=row_scale, col_scale=plan.col_scale, scaled_input=False)
        shape = (plan.num_nodes, plan.num_nodes)
        return encode_coo(
            rows, cols, np.ones(rows.size), shape, policy, row_perm=plan.base.row_perm, col_perm=plan.base.col_perm
        )

    def __repr__(self) -> str:
        return "GatherAwarePruning()"


class MagnitudeMaskPruning:
    """Smallest effective values dropped through the unpruned matrix's keep-mask (no re-encoding)."""

    name = "magnitude-mask"

    def prune(self, plan: PropagationPlan, sparsity: float, message: np.ndarray | None = None):
        effective = plan.base.decode(effective=True, dtype=np.float32)
        return plan.base.with_mask(magnitude_keep(effective, sparsity))

    def __repr__(self) -> str:
        return "MagnitudeMaskPruning()"


PRUNING_POLICIES = {policy.name: policy for policy in (GatherAwarePruning, MagnitudeMaskPruning)}
