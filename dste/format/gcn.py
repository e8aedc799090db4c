"""GCN normalisation as a DSTE matrix: binary (A + I) in BIN tiles with D^-1/2 as row and column scales.

``D^-1/2 (A + I) D^-1/2`` then costs no value bytes at all: the tiles hold only the
structure (keep bitmaps / entries) and the two scale vectors carry the normalisation.
Because the stored values stay 1 when degrees change, a dynamic graph re-encodes only
the windows whose rows changed and swaps the scale vectors (:func:`gcn_update`).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from dste.format.encoder import encode_coo, to_coo, update_windows
from dste.format.errors import DSTEFormatError
from dste.format.matrix import DSTEMatrix
from dste.format.policy import EncodePolicy


def gcn_structure(adj, add_self_loops: bool = True):
    """``(rows, cols, ones, shape, deg_inv_sqrt float32)`` of the binary (A + I) of a square matrix."""
    rows, cols, _, shape = to_coo(adj)
    if shape[0] != shape[1]:
        raise DSTEFormatError(f"GCN normalisation needs a square adjacency, got shape {shape}")
    n = shape[0]
    if add_self_loops:
        keep = rows != cols
        loops = np.arange(n, dtype=np.int64)
        rows = np.concatenate([rows[keep], loops])
        cols = np.concatenate([cols[keep], loops])
        order = np.lexsort((cols, rows))
        rows, cols = rows[order], cols[order]
    degree = np.bincount(rows, minlength=n).astype(np.float64)
    deg_inv_sqrt = np.zeros(n, dtype=np.float64)
    deg_inv_sqrt[degree > 0] = degree[degree > 0] ** -0.5
    return rows, cols, np.ones(rows.size), shape, deg_inv_sqrt.astype(np.float32)


def gcn_normalized(
    adj,
    add_self_loops: bool = True,
    policy: EncodePolicy | None = None,
    *,
    row_perm=None,
    col_perm=None,
    **policy_fields,
) -> DSTEMatrix:
    """Encode ``D^-1/2 (A + I) D^-1/2`` of a square adjacency (any nonzero = edge).

    D is the row degree of the binary (A + I) (self loops added once, existing ones not
    doubled). Default policy: community order, auto kinds (all tiles BIN). Rows of
    degree 0 (only without self loops) get scale 0. ``row_perm``/``col_perm`` impose an
    order (encoded position -> original id) instead of ``policy.reorder``.
    """
    rows, cols, ones, shape, dinv = gcn_structure(adj, add_self_loops)
    if policy is None:
        policy_fields.setdefault("reorder", "community")
        policy = EncodePolicy(**policy_fields)
    policy.row_scale = dinv
    policy.col_scale = dinv
    policy.scaled_input = False
    return encode_coo(rows, cols, ones, shape, policy, row_perm=row_perm, col_perm=col_perm)


def gcn_update(encoded: DSTEMatrix, new_adj, add_self_loops: bool = True, changed_rows=None) -> DSTEMatrix:
    """Incremental :func:`gcn_normalized` for a changed adjacency (same node set, same order).

    Rows whose structure differs from ``encoded``'s are found by comparison unless
    ``changed_rows`` is given; only their windows are re-encoded, and the degree scales
    are replaced. Equals ``gcn_normalized(new_adj)`` with the same permutation.
    """
    rows, cols, ones, shape, dinv = gcn_structure(new_adj, add_self_loops)
    new_structure = sp.csr_matrix((ones, (rows, cols)), shape=shape)
    if changed_rows is None:
        old_structure = encoded.decode(effective=False, scaled=False)
        old_structure.data[:] = 1
        diff = (abs(new_structure - old_structure)).tocsr()
        diff.eliminate_zeros()
        changed_rows = np.flatnonzero(np.diff(diff.indptr))
    return update_windows(encoded, new_structure, changed_rows, row_scale=dinv, col_scale=dinv)
