"""Scale-out: graphs larger than one NeuronCore, row-partitioned over ``torch.distributed`` ranks.

Each rank owns a block of rows (``partition_nodes`` -> ``shard_graph``), encodes them as a DSTE
matrix in a local halo layout (``encode_block``), exchanges exactly the X rows its tiles need
(``HaloPlan``, one ``all_to_all_single`` per layer) and runs ``dste.spmm`` on its block.

    torchrun --standalone --nproc-per-node 4 -m dste.distributed --dataset arxiv-scale --check
    dste.distributed.spawn(fn, world_size)   # fn(comm, *args) on local processes (tests)

``sizing`` gives the figures to size a cluster (device bytes, halo rows, modelled latencies).
"""

from importlib import import_module

_LAZY = {
    "partition_nodes": "dste.distributed.partition",
    "GraphShard": "dste.distributed.shard",
    "shard_graph": "dste.distributed.shard",
    "LocalBlock": "dste.distributed.block",
    "encode_block": "dste.distributed.block",
    "HaloPlan": "dste.distributed.halo",
    "build_halo_plan": "dste.distributed.halo",
    "refresh_halo_plan": "dste.distributed.halo",
    "Comm": "dste.distributed.runtime",
    "RankFailure": "dste.distributed.runtime",
    "init_distributed": "dste.distributed.runtime",
    "spawn": "dste.distributed.launch",
    "DistributedJobError": "dste.distributed.launch",
    "RankOutcome": "dste.distributed.launch",
    "GCNWeights": "dste.distributed.gcn",
    "DistributedGCN": "dste.distributed.gcn",
    "gcn_reference": "dste.distributed.gcn",
    "scatter_graph": "dste.distributed.jobs",
    "run_gcn_inference": "dste.distributed.jobs",
    "cluster_sizing": "dste.distributed.sizing",
    "paper_sizing": "dste.distributed.sizing",
}

__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dste.distributed' has no attribute {name!r}")
