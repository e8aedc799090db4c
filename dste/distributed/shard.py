"""A rank's share of the graph before encoding: its owned node ids and their adjacency rows.

``GraphShard`` is what the partitioning host hands to each rank (``shard_graph``); a rank needs
nothing else of the graph. ``rows`` keeps global column ids: the local halo layout is built from
it by :mod:`dste.distributed.block`. ``owner`` (4 B per node) tells every rank where each of its
neighbours lives, so it can ask for exactly those rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from dste.format.gcn import warn_if_weighted as gcn_warn_if_weighted


@dataclass
class GraphShard:
    """Rows of the (symmetric) adjacency owned by one rank.

    rank, world_size: this rank and the job's size.
    owned: int64 ``[n_own]`` global ids of the owned nodes, ascending (local row i = node ``owned[i]``).
    rows: CSR ``[n_own, n]`` binary adjacency rows of the owned nodes, global column ids.
    owner: int32 ``[n]`` rank of every node of the graph.
    """

    rank: int
    world_size: int
    owned: np.ndarray
    rows: sp.csr_matrix
    owner: np.ndarray

    def __post_init__(self):
        n = self.owner.size
        if self.rows.shape != (self.owned.size, n):
            raise ValueError(f"GraphShard: rows must be [{self.owned.size}, {n}] (owned x nodes), got {self.rows.shape}")
        if self.owned.size == 0:
            raise ValueError(f"GraphShard: rank {self.rank} owns no nodes; every rank needs at least one")
        if np.any(np.diff(self.owned) <= 0):
            raise ValueError("GraphShard: owned ids must be strictly ascending")
        if np.any(self.owner[self.owned] != self.rank):
            raise ValueError(f"GraphShard: owner[] does not assign all owned nodes to rank {self.rank}")

    @property
    def n_nodes(self) -> int:
        return int(self.owner.size)

    def local_index(self, global_ids: np.ndarray) -> np.ndarray:
        """Local row of each owned global id (raises if one is not owned here)."""
        global_ids = np.asarray(global_ids, dtype=np.int64)
        pos = np.searchsorted(self.owned, global_ids)
        bad = (pos >= self.owned.size) | (self.owned[np.minimum(pos, self.owned.size - 1)] != global_ids)
        if bad.any():
            raise ValueError(f"rank {self.rank}: node ids {global_ids[bad][:5].tolist()} are not owned by this rank")
        return pos

    def with_rows(self, adj) -> "GraphShard":
        """The same ownership with new owned rows: ``adj`` is a new adjacency of the same node set
        ``[n, n]``, or only the owned rows of one ``[n_own, n]`` (the same thing when one rank owns all)."""
        n = self.n_nodes
        if adj.shape == (self.owned.size, n):
            rows = binary_rows(adj, np.arange(self.owned.size), warn_as=f"rank {self.rank}: the new snapshot's rows")
            return GraphShard(self.rank, self.world_size, self.owned, rows, self.owner)
        if adj.shape != (n, n):
            raise ValueError(
                f"rank {self.rank}: a new snapshot must keep the node set: expected [{n}, {n}] or the owned rows "
                f"[{self.owned.size}, {n}], got {adj.shape}; a graph that grows needs a new partition "
                "(partition_nodes + shard_graph)"
            )
        rows = binary_rows(adj, self.owned, warn_as=f"rank {self.rank}: the new snapshot's owned rows")
        return GraphShard(self.rank, self.world_size, self.owned, rows, self.owner)


def warn_if_weighted(values: np.ndarray, what: str, stacklevel: int = 3) -> None:
    """``dste.format.gcn.warn_if_weighted`` for the distributed GCN, which reads the adjacency as the single-process
    normalisation does; non-finite values are left to ``binary_rows``, which refuses them."""
    if np.isfinite(values).all():
        gcn_warn_if_weighted(values, f"{what}: the distributed GCN reads the adjacency", stacklevel=stacklevel + 1)


def binary_rows(adj, ids: np.ndarray, warn_as: str | None = None) -> sp.csr_matrix:
    """Rows ``ids`` of ``adj`` as a canonical binary float32 CSR (any nonzero is an edge). ``warn_as``: name the
    rows in an ``IgnoredEdgeWeightsWarning`` when their values are not all 1 (None: the caller has warned)."""
    rows = sp.csr_matrix(adj)[ids]
    if not np.isfinite(rows.data).all():
        raise ValueError("the adjacency contains NaN or Inf; edge values must be finite (any nonzero is an edge)")
    rows.sum_duplicates()
    rows.eliminate_zeros()
    if warn_as is not None:
        warn_if_weighted(rows.data, warn_as, stacklevel=4)
    rows.sort_indices()
    rows = sp.csr_matrix((np.ones(rows.nnz, dtype=np.float32), rows.indices, rows.indptr), shape=rows.shape)
    rows.has_canonical_format = True
    return rows


def shard_graph(adj, owner: np.ndarray) -> list[GraphShard]:
    """One :class:`GraphShard` per rank of ``owner`` (as returned by ``partition_nodes``)."""
    owner = np.asarray(owner)
    if owner.ndim != 1 or (owner.size and owner.dtype.kind not in "iu"):
        raise ValueError(f"shard_graph: owner must be a 1-D integer array of ranks, got {owner.dtype} {owner.shape}")
    if owner.size and (owner.min() < 0 or np.bincount(owner).min() == 0):
        raise ValueError(f"shard_graph: owner must give every node a rank in [0, world_size) and every rank a node; "
                         f"got ranks {np.unique(owner)[:8].tolist()}")
    owner = np.ascontiguousarray(owner, dtype=np.int32)
    if adj.shape != (owner.size, owner.size):
        raise ValueError(f"shard_graph: adj {adj.shape} does not match owner of {owner.size} nodes")
    world_size = int(owner.max()) + 1 if owner.size else 0
    adj = sp.csr_matrix(adj)
    if adj.has_canonical_format:
        warn_if_weighted(adj.data[adj.data != 0], "shard_graph: adj")
    else:  # duplicates summed and zeros dropped on a copy, as each rank's rows will be
        canonical = adj.copy()
        canonical.sum_duplicates()
        canonical.eliminate_zeros()
        warn_if_weighted(canonical.data, "shard_graph: adj")
    return [
        GraphShard(rank, world_size, ids, binary_rows(adj, ids), owner)
        for rank, ids in enumerate(np.flatnonzero(owner == r).astype(np.int64) for r in range(world_size))
    ]
