"""Whole jobs on a running process group: hand out the graph, run GCN inference, collect the result.

``scatter_graph``: rank 0 partitions the graph and sends each rank its shard and feature rows
(no other rank ever holds the whole graph). ``run_gcn_inference``: the end-to-end job that
``python -m dste.distributed`` and the tests run.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from dste.checks import integer
from dste.distributed.gcn import DistributedGCN, GCNWeights
from dste.distributed.partition import check_adjacency, partition_nodes
from dste.distributed.runtime import Comm
from dste.distributed.shard import GraphShard, shard_graph


def scatter_graph(comm: Comm, adj=None, x=None, *, method: str = "metis", seed: int = 0):
    """``(shard, x_owned float32 ndarray)`` of this rank; ``adj``/``x`` are read on rank 0 only."""
    payload = None
    if comm.rank == 0:
        if adj is None or x is None:
            raise ValueError("scatter_graph: rank 0 must be given the adjacency and the features")
        with np.errstate(over="ignore"):  # a value past float32's range becomes Inf, refused below by name
            x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[0] != adj.shape[0]:
            raise ValueError(f"scatter_graph: the features must be [nodes, features] with one row per node of the "
                             f"[{adj.shape[0]}, {adj.shape[1]}] adjacency, got shape {x.shape}")
        if not np.isfinite(x).all():
            # before the partition and the encode: they failed only at the first multiply, on the ranks holding them
            bad = np.argwhere(~np.isfinite(x))
            raise ValueError(f"scatter_graph: the features hold {len(bad):,} NaN or Inf value(s) (as float32; the "
                             f"first at node {bad[0][0]}, feature {bad[0][1]}); every feature must be finite")
        owner = partition_nodes(adj, comm.world_size, method=method, seed=seed)
        shards = shard_graph(adj, owner)
        payload = [(s, x[s.owned]) for s in shards]
    shard, x_owned = comm.scatter_objects(payload, "graph shards")
    if not isinstance(shard, GraphShard) or shard.rank != comm.rank:
        raise RuntimeError(f"rank {comm.rank}: received a shard for rank {getattr(shard, 'rank', '?')}")
    return shard, x_owned


def run_gcn_inference(comm: Comm, adj=None, x=None, *, hidden: int = 64, classes: int = 8, weight_seed: int = 0,
                      method: str = "metis", backend: str = "cpu", snapshots=(), **encode_fields) -> dict:
    """Partition (on rank 0), encode, run the 2-layer GCN, then each snapshot of ``snapshots``.

    ``snapshots``: adjacencies of the same node set (read on rank 0, scattered by rows to their
    owners). Returns this rank's ``owned`` ids, ``logits`` (per graph: the base, then each snapshot),
    the per-layer traffic, the snapshot updates and the block's statistics.
    """
    # checked on every rank before the partition and the encode, which ran first before
    from dste.bindings.backends import resolve_backend

    resolve_backend(backend)
    if encode_fields.get("unit_diagonal"):
        # a rank's block is [owned rows, owned + halo columns], never square: the encode refused it in those words
        raise ValueError("run_gcn_inference: unit_diagonal=True is not supported by the distributed GCN (a rank's "
                         "block is not square); leave it out, the self loops are stored like any other entry")
    hidden = integer(hidden, "run_gcn_inference: hidden", low=1)
    classes = integer(classes, "run_gcn_inference: classes", low=1)
    shard, x_owned = scatter_graph(comm, adj, x, method=method)
    features = comm.broadcast_object(int(x_owned.shape[1]), "feature width")
    weights = GCNWeights.random(features, hidden, classes, seed=weight_seed)
    start = time.perf_counter()
    model = DistributedGCN(comm, shard, weights, backend=backend, **encode_fields)
    setup_seconds = time.perf_counter() - start
    outputs, traffic, updates = [], [], []
    with torch.no_grad():
        outputs.append(model.forward(x_owned).numpy())
        traffic.append(model.traffic)
        n_snapshots = comm.broadcast_object(len(snapshots) if comm.rank == 0 else None, "snapshot count")
        for i in range(n_snapshots):
            rows = None
            if comm.rank == 0:
                snapshot = snapshots[i]
                # before slicing: the owners' rows of a [n + k, n] matrix dropped its extra rows without a word
                check_adjacency(snapshot, f"snapshot {i}", nodes=shard.n_nodes)
                snapshot = snapshot.tocsr()  # COO, DIA and BSR, accepted as the base graph is, cannot be sliced by row
                rows = [snapshot[shard_ids] for shard_ids in _owned_lists(shard.owner, comm.world_size)]
            mine = comm.scatter_objects(rows, f"snapshot {i} rows")
            updates.append(model.apply_snapshot(mine))
            outputs.append(model.forward(x_owned).numpy())
            traffic.append(model.traffic)
    return {
        "rank": comm.rank,
        "owned": shard.owned,
        "logits": outputs,
        "traffic": traffic,
        "updates": updates,
        "setup_seconds": setup_seconds,
        "block": model.block,
        "plan": model.plan,
    }


def _owned_lists(owner: np.ndarray, world_size: int):
    return [np.flatnonzero(owner == r) for r in range(world_size)]
