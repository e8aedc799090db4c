"""A rank's encoded row block of GCN's Â = D^-1/2 (A + I) D^-1/2, in a local halo layout.

Local columns: the rank's owned nodes first (in ``shard.owned`` order), then its halo nodes
(neighbours owned elsewhere) grouped by owning rank and ascending global id inside a group, so
the rows an ``all_to_all`` receives land in the halo section in arrival order.

The block stores the binary (A + I) rows with the owned rows' D^-1/2 as its row scale, and no
column scale: each rank multiplies the rows it owns by their own D^-1/2 before it sends or uses
them (see :mod:`dste.distributed.gcn`). A node's degree is then needed only by its owner, so an
edge change re-encodes only the ranks that own one of its endpoints; no other rank's matrix holds
a stale degree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

import dste
from dste.distributed.shard import GraphShard


@dataclass
class LocalBlock:
    """The encoded block of one rank.

    matrix: DSTEMatrix ``[n_own, n_own + n_halo]`` (BIN tiles, row scale = owned D^-1/2).
    deg_inv_sqrt: float32 ``[n_own]`` D^-1/2 of the owned nodes (degree of A + I, as ``gcn_normalized``).
    halo_ids: int64 ``[n_halo]`` global ids of the halo columns, in local column order.
    halo_counts: int64 ``[world_size]`` halo rows owned by each rank (0 for this rank).
    encode_seconds: host time spent encoding (measured).
    """

    matrix: object
    deg_inv_sqrt: np.ndarray
    halo_ids: np.ndarray
    halo_counts: np.ndarray
    encode_seconds: float

    @property
    def n_own(self) -> int:
        return int(self.deg_inv_sqrt.size)

    @property
    def n_halo(self) -> int:
        return int(self.halo_ids.size)


def gcn_rows_structure(shard: GraphShard) -> sp.csr_matrix:
    """Binary (A + I) rows of the owned nodes, global columns (an existing self loop counted once)."""
    n_own = shard.owned.size
    eye = sp.csr_matrix((np.ones(n_own, dtype=np.float32), (np.arange(n_own), shard.owned)), shape=shard.rows.shape)
    structure = (shard.rows + eye).tocsr()
    structure.sort_indices()
    structure.data[:] = 1.0
    return structure


def halo_layout(shard: GraphShard, global_cols: np.ndarray):
    """``(halo_ids, halo_counts, local_col)`` for the global column ids a block's rows touch."""
    needed = np.unique(global_cols)
    halo = needed[shard.owner[needed] != shard.rank]
    halo = halo[np.lexsort((halo, shard.owner[halo]))]
    counts = np.bincount(shard.owner[halo], minlength=shard.world_size).astype(np.int64)
    local_of_halo = shard.owned.size + np.arange(halo.size)
    is_owned = shard.owner[global_cols] == shard.rank
    local_col = np.empty(global_cols.size, dtype=np.int64)
    local_col[is_owned] = shard.local_index(global_cols[is_owned])
    order = np.argsort(halo)
    local_col[~is_owned] = local_of_halo[order[np.searchsorted(halo[order], global_cols[~is_owned])]]
    return halo.astype(np.int64), counts, local_col


def encode_block(shard: GraphShard, *, reorder: str = "community", **policy_fields) -> LocalBlock:
    """Encode ``shard``'s rows of Â into a :class:`LocalBlock` (``reorder``/``policy_fields`` go to ``dste.encode``)."""
    import time

    start = time.perf_counter()
    structure = gcn_rows_structure(shard)
    degree = np.diff(structure.indptr).astype(np.float64)
    deg_inv_sqrt = np.where(degree > 0, np.maximum(degree, 1.0) ** -0.5, 0.0).astype(np.float32)
    halo_ids, halo_counts, local_col = halo_layout(shard, structure.indices.astype(np.int64))
    n_own = shard.owned.size
    local = sp.csr_matrix(
        (structure.data.astype(np.float32), local_col, structure.indptr), shape=(n_own, n_own + halo_ids.size)
    )
    local.sort_indices()
    matrix = dste.encode(local, reorder=reorder, row_scale=deg_inv_sqrt, scaled_input=False, **policy_fields)
    return LocalBlock(matrix, deg_inv_sqrt, halo_ids, halo_counts, time.perf_counter() - start)
