"""The GCN normalisation ``D^-1/2 (A + I) D^-1/2`` in float64 SciPy (the oracle of ``dste.format.gcn_normalized``).

Restated from docs/CONTRACTS.md: any nonzero of ``adj`` is an edge of weight 1, every node gets one self loop (an
existing one is not doubled), and D is the row degree of that binary pattern.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def gcn_normalization(adj) -> sp.csr_matrix:
    """float64 CSR ``D^-1/2 (A + I) D^-1/2`` of a square adjacency (SciPy sparse or a 2-D array of finite real
    numbers), indices sorted."""
    if not (sp.issparse(adj) or isinstance(adj, (np.ndarray, list, tuple))):
        raise TypeError(f"reference gcn_normalization: adj must be a SciPy sparse matrix or a 2-D array, got "
                        f"{type(adj).__name__}")
    if not sp.issparse(adj) and np.ndim(adj) != 2:
        raise ValueError(f"reference gcn_normalization: adj must be a 2-D array, got shape {np.shape(adj)}")
    adj = sp.csr_matrix(adj if sp.issparse(adj) else np.asarray(adj))
    if adj.shape[0] != adj.shape[1]:
        raise ValueError(f"reference gcn_normalization: adj must be square [N, N], got shape {adj.shape}")
    if adj.dtype.kind not in "biuf":
        raise TypeError(f"reference gcn_normalization: adj must hold real numbers, got dtype {adj.dtype}")
    if not np.isfinite(adj.data).all():  # a NaN is != 0, so it read as an edge
        raise ValueError("reference gcn_normalization: adj holds NaN or Inf; every stored value must be finite "
                         "(any nonzero is an edge)")
    n = adj.shape[0]
    pattern = ((adj != 0).astype(np.float64) + sp.identity(n, format="csr")) != 0
    pattern = pattern.astype(np.float64).tocsr()
    dinv = np.asarray(pattern.sum(axis=1)).ravel() ** -0.5
    normalized = (sp.diags(dinv) @ pattern @ sp.diags(dinv)).tocsr()
    normalized.sort_indices()
    return normalized
