"""The cost model: one table of constants and the per-instruction cost functions.

Every figure here is a *model* built from the documented rules of thumb in
``NKI_NOTES.md`` §2 and §5 (each constant carries its source key from that
file's §0 table); none of it is measured on hardware. The kernels' analytic
estimator reuses these functions so that its numbers and the simulator's
profile agree by construction.

Public functions (``target`` is ``"trn1"``, ``"inf2"`` or ``"trn2"``):

- ``normalize_target(target) -> "trn1" | "trn2"``
- ``constant(name, target)``: one value from :data:`CONSTANTS`.
- ``engine_clock_ghz(engine, target)`` for ``"tensor" | "vector" | "scalar" | "gpsimd"``.
- ``matmul_cycles(n, dtype, target, onezero=False)``: TensorE cycles of one ``nc_matmul`` with N moving columns.
- ``vector_cycles(elems_per_partition, n_inputs, dtype, target, op="generic")``: VectorE cycles.
- ``scalar_cycles(elems_per_partition, target, n_inputs=1)``: ScalarE cycles.
- ``gpsimd_cycles(elems_per_partition, n_inputs, target)``: GpSimd cycles.
- ``dma_cost_ns(nbytes, target)``: one DMA transfer on one queue (fixed cost + bytes / queue bandwidth).
- ``dma_pick_queue(queue_busy_ns)``: the queue a new transfer is charged to (the least busy one).
- ``dma_charge(queue_busy_ns, nbytes, target, partition_start, partitions)``: add one transfer to the
  16 per-engine lanes (fixed cost on the least busy lane, bytes split over the engines that move them).
- ``cycles_to_ns(cycles, engine, target)``.
"""

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

TARGET_ALIASES = {"trn1": "trn1", "inf2": "trn1", "gen2": "trn1", "trn2": "trn2", "gen3": "trn2"}
ENGINES = ("tensor", "vector", "scalar", "gpsimd")


@dataclass(frozen=True)
class Constant:
    trn1: float
    trn2: float
    unit: str
    source: str

    def value(self, target):
        return getattr(self, normalize_target(target))


#: The single table of model constants. ``source`` names the NKI_NOTES key (§0).
CONSTANTS = {
    # memory (NKI_NOTES §2)
    "partitions": Constant(128, 128, "partitions", "A2, A3, TS (pmax)"),
    "sbuf_bytes_per_partition": Constant(180224, 212984, "B", "HC (usable SBUF bytes per partition)"),
    "psum_bytes_per_partition": Constant(16384, 16384, "B", "A2, A3, HC (8 banks x 2 KiB)"),
    "psum_bank_bytes": Constant(2048, 2048, "B", "A2 (one matmul output fits one bank)"),
    # clocks (NKI_NOTES §5 table)
    "tensor_clock_ghz": Constant(2.8, 2.4, "GHz", "A2, A3"),
    "vector_clock_ghz": Constant(1.12, 0.96, "GHz", "A2, A3"),
    "scalar_clock_ghz": Constant(1.4, 1.2, "GHz", "A2, A3"),
    "gpsimd_clock_ghz": Constant(1.4, 1.2, "GHz", "A2, A3"),
    # TensorE (NKI_NOTES §5): back-to-back MMs issue every max(N, 64) cycles; fp32 ~4x
    "matmul_min_cycles": Constant(64, 64, "cycles", "A2 (v2 figure, assumed on v3)"),
    "matmul_fp32_factor": Constant(4, 4, "x", "A2"),
    "matmul_fp32_onezero_speedup": Constant(2, 2, "x", "A2 (is_*_onezero gives 2x for fp32)"),
    # VectorE: ~N cycles per input tensor + ~100 fixed; v3 runs 16-bit floats 2x (4x copy/tensor_scalar)
    "vector_fixed_cycles": Constant(100, 100, "cycles", "A2, SH (fixed overhead)"),
    "vector_16bit_speedup": Constant(1, 2, "x", "A3 (bf16/fp16, tensor_tensor and other cases)"),
    "vector_16bit_copy_speedup": Constant(1, 4, "x", "A3 (contiguous bf16/fp16 tensor_copy/tensor_scalar)"),
    # ScalarE: ~N cycles, minimum initiation interval ~64 cycles
    "scalar_min_cycles": Constant(64, 64, "cycles", "SH, A2"),
    # GpSimd: no documented rule of thumb; modelled like v2 VectorE (N per input + fixed)
    "gpsimd_fixed_cycles": Constant(100, 100, "cycles", "assumption (no GpSimd rule in A2/A3)"),
    # DMA (NKI_NOTES §5): 16 queues per NC, ~1.3 us fixed cost per transfer, peak bandwidth per NC
    "dma_queues": Constant(16, 16, "queues", "DMA, DMABW (16 DMA engines per NC; a transfer goes to the "
                                               "least busy, see dma_pick_queue: DMA 'DMA Queues')"),
    "dma_fixed_ns": Constant(1300, 1300, "ns", "DMA (fixed cost per transfer)"),
    "dma_partitions_per_engine": Constant(8, 8, "partitions", "DMA (each of the 16 engines moves 8 of 128 SBUF "
                                                              "partitions; bytes of one transfer are split over them)"),
    "dma_peak_gbps_per_nc": Constant(272, 368, "GB/s", "DMABW"),
}

_FAST_16BIT_VECTOR_OPS = frozenset(["copy", "tensor_scalar"])


def normalize_target(target):
    """Map ``trn1``/``inf2``/``gen2`` to ``"trn1"`` and ``trn2``/``gen3`` to ``"trn2"``."""
    key = str(target).lower()
    if key not in TARGET_ALIASES:
        raise ValueError(f"unknown target {target!r}; allowed: trn1, inf2 (= NeuronCore-v2), trn2")
    return TARGET_ALIASES[key]


@lru_cache(maxsize=None)
def constant(name, target):
    # Memoised: the whole-matrix estimate looks constants up millions of times per controller run.
    return CONSTANTS[name].value(target)


def engine_clock_ghz(engine, target):
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; allowed: {', '.join(ENGINES)}")
    return constant(f"{engine}_clock_ghz", target)


def cycles_to_ns(cycles, engine, target):
    return cycles / engine_clock_ghz(engine, target)


def _is_16bit_float(dtype):
    import ml_dtypes

    return np.dtype(dtype) in (np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16))


def matmul_cycles(n, dtype, target, onezero=False):
    """TensorE cycles of one matmul streaming ``n`` moving columns: ``max(n, 64)``, x4 for fp32 inputs
    (x2 when an fp32 operand is flagged 0/1 with ``is_*_onezero``)."""
    cycles = max(int(n), constant("matmul_min_cycles", target))
    if np.dtype(dtype) == np.dtype(np.float32):
        factor = constant("matmul_fp32_factor", target)
        if onezero:
            factor /= constant("matmul_fp32_onezero_speedup", target)
        cycles *= factor
    return float(cycles)


def vector_cycles(elems_per_partition, n_inputs, dtype, target, op="generic"):
    """VectorE cycles: ``fixed + elems * n_inputs / speedup``.

    ``speedup`` is 1 on trn1; on trn2 it is 2 for bf16/fp16 operands, or 4 for
    ``op`` in ``{"copy", "tensor_scalar"}`` (contiguous 16-bit float copies and
    tensor_scalar). ``dtype`` is the operands' common dtype (pass float32 when mixed).
    """
    speedup = 1
    if _is_16bit_float(dtype):
        name = "vector_16bit_copy_speedup" if op in _FAST_16BIT_VECTOR_OPS else "vector_16bit_speedup"
        speedup = constant(name, target)
    work = int(elems_per_partition) * max(int(n_inputs), 1) / speedup
    return float(constant("vector_fixed_cycles", target) + work)


def scalar_cycles(elems_per_partition, target, n_inputs=1):
    """ScalarE cycles: ``max(elems * n_inputs, 64)``."""
    return float(max(int(elems_per_partition) * max(int(n_inputs), 1), constant("scalar_min_cycles", target)))


def gpsimd_cycles(elems_per_partition, n_inputs, target):
    """GpSimd cycles (assumed rule): ``fixed + elems * n_inputs``."""
    return float(constant("gpsimd_fixed_cycles", target) + int(elems_per_partition) * max(int(n_inputs), 1))


def dma_queue_bytes_per_ns(target):
    """Bandwidth of one DMA queue: the NC's peak spread over its 16 queues (GB/s = B/ns)."""
    return constant("dma_peak_gbps_per_nc", target) / constant("dma_queues", target)


def dma_pick_queue(queue_busy_ns):
    """Index of the queue that pays for the next transfer: the least busy one (lowest index on ties).

    The model keeps 16 serial lanes, each charging ``dma_cost_ns`` per transfer, so that the
    aggregate rate is the NC's peak bandwidth. The documentation (DMA, "Basic DMA Capabilities" and
    "DMA Queues") says a transfer is spread over up to 16 DMA engines (8 partitions each) and that
    transfers waiting on different queues are served round-robin by every engine, so an engine never
    idles while any transfer is pending. Charging each transfer to the lane that frees first is that
    work-conserving schedule; a fixed cyclic assignment (transfer i on lane i % 16) would let one lane
    queue work while others idle, which the hardware does not do.
    """
    best = 0
    for i, busy in enumerate(queue_busy_ns):
        if busy < queue_busy_ns[best]:
            best = i
    return best


def dma_engine_span(partition_start, partitions, target):
    """``(first, count)`` of the DMA engines that move a transfer whose SBUF side covers these partitions.

    DMA ("Basic DMA Capabilities", "Performance Considerations", examples 1 and 2): a transfer is
    parallelized over up to 16 DMA engines, each serving 8 SBUF partitions: A[4, 4096] runs on one
    engine, A[128, 128] on all 16, each moving its 8 rows. HBM-to-HBM transfers (no partitions) are
    taken to use all engines.
    """
    n_engines = int(constant("dma_queues", target))
    per_engine = int(constant("dma_partitions_per_engine", target))
    if partitions is None:
        return 0, n_engines
    first = int(partition_start) // per_engine
    last = (int(partition_start) + max(int(partitions), 1) - 1) // per_engine
    return first, min(last, n_engines - 1) - first + 1


def dma_charge(queue_busy_ns, nbytes, target, partition_start=0, partitions=None):
    """Charge one transfer to the per-engine lanes ``queue_busy_ns`` (modified in place).

    The fixed cost goes to the least busy lane (``dma_pick_queue``: the transfer's queue); the bytes
    are split evenly over the engines that move them (``dma_engine_span``), each at the per-engine
    bandwidth. The lanes' total equals ``dma_cost_ns(nbytes)``, so the serial bound is unchanged.
    """
    queue_busy_ns[dma_pick_queue(queue_busy_ns)] += constant("dma_fixed_ns", target)
    first, count = dma_engine_span(partition_start, partitions, target)
    share = int(nbytes) / dma_queue_bytes_per_ns(target) / count
    for lane in range(first, first + count):
        queue_busy_ns[lane] += share


def dma_cost_ns(nbytes, target):
    """One transfer on one queue: ``1300 ns + nbytes / (peak / 16)``."""
    return float(constant("dma_fixed_ns", target) + int(nbytes) / dma_queue_bytes_per_ns(target))
