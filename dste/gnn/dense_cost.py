"""Modelled NeuronCore latency of a layer's dense weight product ``H [N, K] @ W [K, O]`` (never measured).

The weight product is a dense GEMM, so it is priced the way a NeuronCore runs one: on TensorE with the weight
*stationary* and the nodes *moving*. Not as the DSTE SpMM kernel: that kernel gathers X rows and sizes its
plan by the feature width, and a weight product through it would make the node count its feature width
(hundreds of thousands of columns at arxiv scale) while W itself is tiny and dense.

Tiling (``nki.isa.nc_matmul``, aws-neuron-sdk nki/api/nki/isa/__init__.py ``nc_matmul``: the stationary tile is
at most [128 partitions, 128], the moving tile at most [128 partitions, 512], the contraction runs over the
partitions):

* W is cut into ``ceil(K/128) x ceil(O/128)`` stationary tiles, loaded once (W is a few hundred KiB);
* H is loaded row-major, each partition taking a run of consecutive node rows long enough (4 KiB) for the
  DMA to reach peak (the matmuls do not care in which order the nodes arrive: the output goes back in the
  same layout); INT8 rows are widened to bf16 on GpSimd (one instruction per transfer; the row scale is
  applied at the end, where the row is on a partition again); each [128 nodes, 128 channels] block is
  transposed on TensorE (a matmul against the identity: 128 moving columns) so the channels lie on the
  partitions, and the PSUM results are copied back to SBUF on VectorE, a 2 KiB bank per instruction;
* each 512-node moving tile of ``H^T`` meets every stationary tile: ``ceil(K/128) * ceil(O/128)`` matmuls of
  ``n <= 512`` moving columns, accumulated in PSUM over the K tiles and copied out on ScalarE;
* the result ``[O, nodes]`` is transposed back to row-major ``[nodes, O]`` (TensorE, O moving columns per
  128-node block; VectorE copies it out with a ``tensor_scalar`` that applies the INT8 row scale) and
  written out, so the SpMM that follows gathers whole node rows.

Per engine: TensorE cycles from ``dste.nkisim.cost.matmul_cycles`` (``max(n, 64)``, x4 for FP32 operands);
VectorE, ScalarE and GpSimd from ``vector_cycles`` / ``scalar_cycles`` / ``gpsimd_cycles``' rule; DMA: one transfer per 128 runs in and out
plus W, each with the fixed cost, spread over the 16 queues (``dma_fixed_ns``, ``dma_data_ns``, the
descriptor-bound model with one contiguous run of node rows per partition). The engines overlap (a software-pipelined
kernel), so the latency is the busiest engine plus one DMA fixed cost to fill the pipeline.

Assumptions (no figure documented): operands of a compressed layer run on TensorE in bf16 (INT8 weights and
rows are widened first; ``nc_matmul`` takes float operands); an FP32 layer runs in FP32 (the x4 rate); the
compressed layer writes its product in bf16 (the next step re-quantizes it), the FP32 layer in FP32; a node
row's INT8 scale travels with the row (4 more bytes in the same run).
"""

from __future__ import annotations

import math

import numpy as np
from ml_dtypes import bfloat16

from dste.nkisim import cost

__all__ = ["dense_matmul_latency_us", "PARTITIONS", "MOVING_MAX"]

PARTITIONS = 128  # contraction and stationary width per nc_matmul
MOVING_MAX = 512  # moving free size per nc_matmul
PSUM_BANK_ELEMENTS = 512  # fp32 per partition in one 2 KiB PSUM bank (dste.nkisim.cost psum_bank_bytes)
SATURATING_RUN_BYTES = 4096
"""Contiguous bytes per partition from which a DMA runs at peak (nki/deep-dives/nki-dma-bandwidth-guide.rst
'Bandwidth vs. Payload Size': >= 4 KiB saturates)."""


def _bank_copies(blocks: int, width: int, dtype, target: str, op: str) -> float:
    """VectorE cycles to copy ``blocks`` PSUM results ``[partitions, width]`` out, a bank at a time."""
    per_bank = max(PSUM_BANK_ELEMENTS // width, 1)
    full, rest = divmod(blocks, per_bank)
    cycles = full * cost.vector_cycles(per_bank * width, 1, dtype, target, op=op)
    return cycles + (cost.vector_cycles(rest * width, 1, dtype, target, op=op) if rest else 0.0)


def _rows_per_partition(row_bytes: int, num_nodes: int) -> int:
    """Consecutive node rows one partition takes per transfer: enough for a ``SATURATING_RUN_BYTES`` run,
    never more than the nodes give each partition."""
    return max(1, min(math.ceil(SATURATING_RUN_BYTES / row_bytes), math.ceil(num_nodes / PARTITIONS)))


def _check_sizes(**sizes) -> None:
    for name, value in sizes.items():
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
            raise ValueError(f"dense_matmul_latency_us: {name} must be a non-negative int, got {value!r}")


def dense_matmul_latency_us(
    num_nodes: int,
    in_features: int,
    out_features: int,
    weight_bytes: int,
    input_mode: str,
    target: str = "trn2",
) -> float:
    """Modelled µs of ``H [num_nodes, in_features] @ W [in_features, out_features]`` on one NeuronCore.

    ``input_mode``: ``"fp32"`` (FP32 H and W, FP32 matmuls), ``"fp16"`` (FP16 rows) or ``"int8-hybrid"``
    (INT8 rows + per-row scale, widened on ScalarE). ``weight_bytes``: device bytes of W as stored.
    """
    _check_sizes(num_nodes=num_nodes, in_features=in_features, out_features=out_features, weight_bytes=weight_bytes)
    if input_mode not in ("fp32", "fp16", "int8-hybrid"):
        raise ValueError(
            f"dense_matmul_latency_us: input_mode must be 'fp32', 'fp16' or 'int8-hybrid', got {input_mode!r}"
        )
    if num_nodes == 0 or in_features == 0 or out_features == 0:
        return 0.0
    fp32 = input_mode == "fp32"
    compute_dtype = np.float32 if fp32 else bfloat16
    k_tiles = math.ceil(in_features / PARTITIONS)
    o_tiles = math.ceil(out_features / PARTITIONS)
    node_blocks = math.ceil(num_nodes / PARTITIONS)
    full_moving, last_moving = divmod(num_nodes, MOVING_MAX)

    def matmuls(columns: int, count: int) -> float:
        return count * cost.matmul_cycles(columns, compute_dtype, target) if count and columns else 0.0

    product = matmuls(MOVING_MAX, full_moving * k_tiles * o_tiles) + matmuls(last_moving, k_tiles * o_tiles)
    o_widths = [min(PARTITIONS, out_features - PARTITIONS * t) for t in range(o_tiles)]
    transposes_in = matmuls(PARTITIONS, node_blocks * k_tiles)
    transposes_out = sum(matmuls(width, node_blocks) for width in o_widths)
    tensor_ns = cost.cycles_to_ns(product + transposes_in + transposes_out, "tensor", target)

    # PSUM evacuations, a bank (2 KiB per partition = PSUM_BANK_ELEMENTS fp32) per instruction: the input
    # transposes on VectorE; the output transposes on VectorE as a tensor_scalar applying the INT8 row scale
    # (the row is on the partition again); the products on ScalarE.
    vector = _bank_copies(node_blocks * k_tiles, PARTITIONS, compute_dtype, target, "copy")
    vector += sum(_bank_copies(node_blocks, width, compute_dtype, target, "tensor_scalar") for width in o_widths)
    vector_ns = cost.cycles_to_ns(vector, "vector", target)
    scalar = o_tiles * (
        full_moving * cost.scalar_cycles(MOVING_MAX, target)
        + (cost.scalar_cycles(last_moving, target) if last_moving else 0.0)
    )
    scalar_ns = cost.cycles_to_ns(scalar, "scalar", target)

    row_in = in_features * (4 if fp32 else 1 if input_mode == "int8-hybrid" else 2) + (
        4 if input_mode == "int8-hybrid" else 0
    )
    row_out = out_features * (4 if fp32 else 2)
    rows_in, rows_out = _rows_per_partition(row_in, num_nodes), _rows_per_partition(row_out, num_nodes)
    data_ns = (
        cost.dma_data_ns(num_nodes * row_in, target, "descriptor", run_bytes=rows_in * row_in)
        + cost.dma_data_ns(num_nodes * row_out, target, "descriptor", run_bytes=rows_out * row_out)
        + cost.dma_data_ns(weight_bytes, target, "descriptor", run_bytes=max(weight_bytes // in_features, 1))
    )
    transfers_in = math.ceil(num_nodes / (PARTITIONS * rows_in))
    gpsimd_ns = 0.0
    if input_mode == "int8-hybrid":  # INT8 rows widened to bf16 on GpSimd, one instruction per transfer
        per_partition = math.ceil(num_nodes / PARTITIONS) * in_features
        gpsimd = transfers_in * cost.constant("gpsimd_fixed_cycles", target) + per_partition
        gpsimd_ns = cost.cycles_to_ns(gpsimd, "gpsimd", target)
    transfers = transfers_in + math.ceil(num_nodes / (PARTITIONS * rows_out)) + 1
    queues = cost.constant("dma_queues", target)
    dma_ns = (transfers * cost.constant("dma_fixed_ns", target) + data_ns) / queues
    busiest = max(tensor_ns, vector_ns, scalar_ns, gpsimd_ns, dma_ns)
    return float((busiest + cost.constant("dma_fixed_ns", target)) / 1e3)
