"""Small community-structured random graphs for the format tests (independent of dste.data).

Nodes are split into communities of random sizes; each undirected edge picks a uniform
source and, with probability ``p_intra``, a uniform target inside the source's community,
otherwise a uniform target anywhere. Node ids are shuffled so that locality must be
recovered by reordering.
"""

import numpy as np
import scipy.sparse as sp


def community_graph(n_nodes, mean_degree=14.0, p_intra=0.85, min_size=40, max_size=400, seed=0, shuffle=True):
    """Symmetric binary CSR adjacency (no self loops) and the community label of each node."""
    rng = np.random.default_rng(seed)
    sizes = []
    total = 0
    while total < n_nodes:
        size = int(min(rng.integers(min_size, max_size + 1), n_nodes - total))
        sizes.append(size)
        total += size
    sizes = np.array(sizes)
    starts = np.cumsum(sizes) - sizes
    label_in_order = np.repeat(np.arange(sizes.size), sizes)
    n_edges = int(n_nodes * mean_degree / 2)
    src = rng.integers(0, n_nodes, size=n_edges)
    community = label_in_order[src]
    intra = rng.random(n_edges) < p_intra
    dst = np.where(
        intra,
        starts[community] + (rng.random(n_edges) * sizes[community]).astype(np.int64),
        rng.integers(0, n_nodes, size=n_edges),
    )
    keep = src != dst
    src, dst = src[keep], dst[keep]
    relabel = rng.permutation(n_nodes) if shuffle else np.arange(n_nodes)
    src, dst = relabel[src], relabel[dst]
    adj = sp.csr_matrix((np.ones(2 * src.size), (np.concatenate([src, dst]), np.concatenate([dst, src]))), shape=(n_nodes, n_nodes))
    adj.sum_duplicates()
    adj.data[:] = 1.0
    labels = np.empty(n_nodes, dtype=np.int64)
    labels[relabel] = label_in_order
    return adj, labels


def uniform_graph(n_nodes, mean_degree, seed=0):
    """Symmetric binary CSR adjacency of a uniform random graph without self loops (at mean degree <= 1 a third or
    more of the nodes are isolated)."""
    rng = np.random.default_rng(seed)
    pairs = int(n_nodes * mean_degree / 2)
    rows, cols = rng.integers(0, n_nodes, pairs), rng.integers(0, n_nodes, pairs)
    half = sp.coo_matrix((np.ones(pairs, np.float32), (rows, cols)), shape=(n_nodes, n_nodes)).tocsr()
    adj = ((half + half.T) > 0).astype(np.float32).tolil()
    adj.setdiag(0)
    adj = adj.tocsr()
    adj.eliminate_zeros()
    return adj


def gcn_reference(adj) -> sp.csr_matrix:
    """D^-1/2 (A + I) D^-1/2 in float64, from the adjacency alone (self loops added once)."""
    with_loops = ((adj + sp.identity(adj.shape[0], format="csr")) != 0).astype(np.float64)
    dinv = 1.0 / np.sqrt(np.asarray(with_loops.sum(axis=1)).ravel())
    return sp.diags(dinv) @ with_loops @ sp.diags(dinv)
