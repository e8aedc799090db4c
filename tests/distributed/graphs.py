"""Small graphs for the distributed tests: a generated Cora-sized graph with shuffled node ids."""

import numpy as np
import scipy.sparse as sp

from dste.data import make_graph
from dste.reference import gcn_normalization


def shuffled_graph(seed: int = 0):
    """``(adj CSR float32, x float32)`` of cora-like (2,708 nodes) with node ids randomly permuted."""
    g = make_graph("cora-like", seed=seed)
    perm = np.random.default_rng(seed + 1).permutation(g.adj.shape[0])
    adj = sp.csr_matrix(g.adj)[perm][:, perm].tocsr()
    adj.sort_indices()
    return adj.astype(np.float32), np.ascontiguousarray(g.x[perm], dtype=np.float32)


def toggle_edges(adj, pairs):
    """A copy of the symmetric ``adj`` with each undirected pair (i, j) flipped (added if absent, else removed)."""
    lil = sp.lil_matrix(adj, dtype=np.float32)
    for i, j in pairs:
        value = 0.0 if lil[i, j] else 1.0
        lil[i, j] = value
        lil[j, i] = value
    out = sp.csr_matrix(lil)
    out.eliminate_zeros()
    return out


def gcn_float64(adj, x, weights):
    """Independent float64 SciPy GCN: relu(Â X W1 + b1), then Â H W2 + b2, Â = D^-1/2 (A + I) D^-1/2."""
    a_hat = gcn_normalization(adj)
    w1, b1, w2, b2 = (t.double().numpy() for t in (weights.w1, weights.b1, weights.w2, weights.b2))
    h1 = np.maximum(a_hat @ (x.astype(np.float64) @ w1) + b1, 0.0)
    return a_hat @ (h1 @ w2) + b2


def gcn_kernel_error_bound(adj, x, weights):
    """Per-logit bound on |kernel GCN - gcn_float64| from the kernel's documented per-term error
    (``dste.reference.spmm.BF16_OPERANDS_BOUND``, β: X and Â's values rounded to bf16). Layer 1's product
    Â (X W1) errs by at most β |Â| |X W1|; ReLU passes an error on at most as large; W2 carries it to
    |δ| |W2|; layer 2 errs by β |Â| (|H W2| + |δ| |W2|) plus Â times that carried error."""
    from dste.reference.spmm import BF16_OPERANDS_BOUND as beta

    a_hat = abs(gcn_normalization(adj))
    w1, b1, w2 = (t.double().numpy() for t in (weights.w1, weights.b1, weights.w2))
    z1 = x.astype(np.float64) @ w1
    h1 = np.maximum(a_hat @ z1 + b1, 0.0)
    carried = (beta * (a_hat @ np.abs(z1))) @ np.abs(w2)
    return beta * (a_hat @ (np.abs(h1 @ w2) + carried)) + a_hat @ carried
