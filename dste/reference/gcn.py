"""The GCN normalisation ``D^-1/2 (A + I) D^-1/2`` in float64 SciPy (the oracle of ``dste.format.gcn_normalized``).

Restated from docs/CONTRACTS.md: any nonzero of ``adj`` is an edge of weight 1, every node gets one self loop (an
existing one is not doubled), and D is the row degree of that binary pattern.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def gcn_normalization(adj) -> sp.csr_matrix:
    """float64 CSR ``D^-1/2 (A + I) D^-1/2`` of a square adjacency, indices sorted."""
    n = adj.shape[0]
    pattern = ((sp.csr_matrix(adj) != 0).astype(np.float64) + sp.identity(n, format="csr")) != 0
    pattern = pattern.astype(np.float64).tocsr()
    dinv = np.asarray(pattern.sum(axis=1)).ravel() ** -0.5
    normalized = (sp.diags(dinv) @ pattern @ sp.diags(dinv)).tocsr()
    normalized.sort_indices()
    return normalized
