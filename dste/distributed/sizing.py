"""Figures to size a cluster: per-rank device bytes, halo rows, and modelled per-layer latency.

Every Neuron time here is *modelled* (never measured), for Trn2. A rank is one logical NeuronCore
at LNC=2 (the Trn2 default, which ``dste.kernels.estimate_spmm`` also models): two physical
NeuronCore-v3, so 4 ranks per Trainium2 chip.

Hardware figures and their sources (pages of the aws-neuron-sdk repository):

* 96 GiB of device memory and eight NeuronCore-v3 per Trainium2 chip:
  ``about-neuron/arch/neuron-hardware/trainium2.rst`` (feature table). So 24 GiB per rank.
* 1,024 GB/s intra-instance NeuronLink-v3 bandwidth per chip, 16 chips per trn2.48xlarge, EFAv3
  3,200 Gbps per instance: ``about-neuron/arch/neuron-hardware/trn2-arch.rst`` (trn2.48xlarge table).
* Per-hop collective latency "about 1-2 us": ``neuron-runtime/explore/intranode-collective-comm.rst``
  (execution time = latency + transfer); 15 us HBM-to-HBM between servers:
  ``neuron-runtime/about/collectives.rst``.

Assumptions (not from the docs):

* A chip's NeuronLink bandwidth is shared evenly by its 4 ranks (256 GB/s each), also for
  exchanges between ranks of one chip (which may in fact go faster, through HBM).
* One halo exchange (``all_to_all``) costs one hop latency (2 us, the upper figure) per peer
  message, messages issued back to back, plus max(bytes sent, bytes received) / bandwidth; past one
  instance, the share of peers on other instances moves at the EFA rate (400 GB/s per instance,
  25 GB/s per chip, 6.25 GB/s per rank) and adds the 15 us inter-server latency once.
* The exchange and the SpMM do not overlap (their modelled times add up).
* Feature rows on the device are the kernel's ``int8-hybrid`` X records, the rows its SpMM gathers
  (``dste.kernels.plan.record_width``: F INT8 values padded to 4 B, then a 4-byte float32 scale; 132 B
  for F = 128), and travel in that form; their FP16 rows are left out (``estimate_spmm`` prices
  none either). SpMM output rows are float32.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from dste.distributed.block import encode_block
from dste.distributed.partition import partition_nodes
from dste.distributed.shard import shard_graph

GIB = 1 << 30
HBM_PER_CHIP_BYTES = 96 * GIB
RANKS_PER_CHIP = 4  # 8 NeuronCore-v3 per chip at LNC=2
HBM_PER_RANK_BYTES = HBM_PER_CHIP_BYTES // RANKS_PER_CHIP
CHIPS_PER_INSTANCE = 16
NEURONLINK_BYTES_PER_S_PER_CHIP = 1024e9
EFA_BYTES_PER_S_PER_INSTANCE = 3200e9 / 8
HOP_LATENCY_US = 2.0
INTER_SERVER_LATENCY_US = 15.0
OUTPUT_ITEMSIZE = 4
TARGET = "trn2"
X_MODE = "int8-hybrid"


def feature_row_bytes(features: int) -> int:
    """Device bytes of one hybrid INT8 feature row: the record the SpMM kernel gathers (assumption above)."""
    from dste.kernels import record_width  # one formula: the kernel's record, which estimate_spmm prices

    return record_width(_positive_int(features, "features"))


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"sizing: {name} must be an int >= 1, got {value!r}")
    return int(value)


def _rate(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not (
            np.isfinite(value) and value >= 0):
        raise ValueError(f"sizing: {name} must be a finite number >= 0, got {value!r}")
    return float(value)


def exchange_us(bytes_sent: float, bytes_received: float, world_size: int) -> float:
    """Modelled time of one halo ``all_to_all`` on one rank (assumptions in the module docstring)."""
    if world_size <= 1:
        return 0.0
    ranks_per_instance = RANKS_PER_CHIP * CHIPS_PER_INSTANCE
    peers = world_size - 1
    remote_share = max(0, world_size - ranks_per_instance) / peers
    moved = max(bytes_sent, bytes_received)
    local_bw = NEURONLINK_BYTES_PER_S_PER_CHIP / RANKS_PER_CHIP
    remote_bw = EFA_BYTES_PER_S_PER_INSTANCE / (CHIPS_PER_INSTANCE * RANKS_PER_CHIP)
    transfer_s = max(moved * (1 - remote_share) / local_bw, moved * remote_share / remote_bw)
    latency_us = peers * HOP_LATENCY_US + (INTER_SERVER_LATENCY_US if remote_share > 0 else 0.0)
    return latency_us + transfer_s * 1e6


@dataclass
class RankSizing:
    """One rank of a row-partitioned SpMM layer (bytes counted; times modelled for trn2)."""

    world_size: int
    rank: int
    owned_rows: int
    halo_rows: int
    rows_sent: int
    stored_entries: int
    matrix_device_bytes: int
    feature_bytes: int
    halo_buffer_bytes: int
    output_bytes: int
    device_bytes: int
    spmm_modelled_us: float
    spmm_optimistic_modelled_us: float
    exchange_modelled_us: float
    layer_modelled_us: float

    def to_dict(self) -> dict:
        return asdict(self)


def cluster_sizing(adj, world_size: int, features: int = 128, *, method: str = "metis", seed: int = 0,
                   estimate=True, **encode_fields) -> list[RankSizing]:
    """Partition ``adj`` over ``world_size`` ranks, encode every block (in this process) and size each rank.

    ``estimate=False`` skips ``estimate_spmm`` (the slow part) and reports 0 for the SpMM times.
    """
    from dste.kernels import estimate_spmm

    row_bytes = feature_row_bytes(features)  # refuses a width < 1 before the partition
    owner = partition_nodes(adj, world_size, method=method, seed=seed)
    blocks = [encode_block(shard, **encode_fields) for shard in shard_graph(adj, owner)]
    sent = np.sum([b.halo_counts for b in blocks], axis=0)  # rows each rank sends = rows others receive from it
    out = []
    for rank, block in enumerate(blocks):
        matrix_bytes = int(block.matrix.nbytes()["device_total"])
        feature_bytes = block.n_own * row_bytes
        halo_bytes = block.n_halo * row_bytes
        output_bytes = block.n_own * features * OUTPUT_ITEMSIZE
        spmm_us = spmm_opt_us = 0.0
        if estimate:
            est = estimate_spmm(block.matrix, features, X_MODE, TARGET)
            spmm_us = float(est.latency_us)
            spmm_opt_us = float(getattr(est, "latency_optimistic_us", est.latency_us))
        xchg_us = exchange_us(int(sent[rank]) * row_bytes, halo_bytes, world_size)
        out.append(RankSizing(
            world_size, rank, block.n_own, block.n_halo, int(sent[rank]), int(block.matrix.nnz_stored),
            matrix_bytes, feature_bytes, halo_bytes, output_bytes,
            matrix_bytes + feature_bytes + halo_bytes + output_bytes,
            spmm_us, spmm_opt_us, xchg_us, spmm_us + xchg_us,
        ))
    return out


@dataclass
class PaperSizing:
    """A cluster for a graph too large to run here, from per-entry and per-row rates measured on a smaller one."""

    ranks: int
    chips: int
    instances: int
    owned_rows: int
    stored_entries: int
    halo_rows: int
    matrix_bytes: int
    feature_bytes: int
    device_bytes: int
    hbm_fill: float
    spmm_modelled_us: float
    exchange_modelled_us: float
    layer_modelled_us: float


def paper_sizing(nodes: int, undirected_edges: int, features: int, ranks: int, *, matrix_bytes_per_entry: float,
                 spmm_us_per_entry: float, halo_rows_per_owned_row: float) -> PaperSizing:
    """Per-rank figures for ``ranks`` ranks on a graph given by its size alone (no graph, no run).

    Stored entries = 2 * undirected edges + nodes (symmetric A + I). The three rates come from a
    measured partition (``cluster_sizing``); carrying them to another graph is an assumption, stated
    wherever the result is shown. Modelled for trn2.
    """
    nodes, ranks, features = (_positive_int(v, name) for v, name in
                              ((nodes, "nodes"), (ranks, "ranks"), (features, "features")))
    if (isinstance(undirected_edges, bool) or not isinstance(undirected_edges, (int, np.integer))
            or undirected_edges < 0):
        raise ValueError(f"paper_sizing: undirected_edges must be an int >= 0, got {undirected_edges!r}")
    if ranks > nodes:
        raise ValueError(f"paper_sizing: ranks must not exceed the node count ({nodes}): every rank owns a node, "
                         f"got {ranks}")
    matrix_bytes_per_entry = _rate(matrix_bytes_per_entry, "matrix_bytes_per_entry")
    spmm_us_per_entry = _rate(spmm_us_per_entry, "spmm_us_per_entry")
    halo_rows_per_owned_row = _rate(halo_rows_per_owned_row, "halo_rows_per_owned_row")
    owned = -(-nodes // ranks)
    entries = -(-(2 * undirected_edges + nodes) // ranks)
    halo = int(min(halo_rows_per_owned_row * owned, nodes - owned))
    row_bytes = feature_row_bytes(features)
    matrix_bytes = int(entries * matrix_bytes_per_entry)
    feature_bytes = owned * row_bytes
    device = matrix_bytes + feature_bytes + halo * row_bytes + owned * features * OUTPUT_ITEMSIZE
    spmm_us = entries * spmm_us_per_entry
    xchg_us = exchange_us(halo * row_bytes, halo * row_bytes, ranks)
    chips = -(-ranks // RANKS_PER_CHIP)
    return PaperSizing(ranks, chips, -(-chips // CHIPS_PER_INSTANCE), owned, entries, halo, matrix_bytes, feature_bytes,
                       device, device / HBM_PER_RANK_BYTES, spmm_us, xchg_us, spmm_us + xchg_us)
