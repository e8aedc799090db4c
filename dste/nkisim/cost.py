"""The cost model: one table of constants and the per-instruction cost functions.

Every figure here is a *model* built from the documented rules of thumb of the Neuron SDK docs (each
constant carries its source: a doc page and section of ``aws-neuron/aws-neuron-sdk``, or ``assumption: ...``);
none of it is measured on hardware. The kernels' analytic
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
- ``dma_efficiency(contiguous_bytes)``: fraction of peak DMA bandwidth reached by contiguous runs of that size
  (the descriptor-bound curve, fitted to the documented throughput figure; see ``docs/COST_MODEL.md``).
- ``dma_transfer_shape(nbytes, partitions, contiguous_bytes, descriptors)``: the run length and descriptor
  count a transfer is charged with when the caller leaves them out.
- ``swdge_descriptor_cycles(descriptors, target)``: GpSimd cycles of software descriptor generation for one
  indirect DMA (an assumption: no figure is documented).
- ``cycles_to_ns(cycles, engine, target)``.

Two DMA models sit side by side (``DMA_MODELS``): ``"optimistic"`` moves every byte at peak after the fixed
cost; ``"descriptor"`` (the default) moves them at ``peak * dma_efficiency(run length)`` and, for indirect
transfers, charges descriptor generation to GpSimd.
"""

from dataclasses import dataclass

import numpy as np

from .dtypes import is_tfloat32

DMA_MODELS = ("descriptor", "optimistic")
DEFAULT_DMA_MODEL = "descriptor"

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


#: Doc pages the sources below cite, inside the ``aws-neuron/aws-neuron-sdk`` repository (Neuron 2.32 / NKI 0.6).
ARCH_V2 = "nki/guides/architecture/trainium_inferentia2_arch.rst"
ARCH_V3 = "nki/guides/architecture/trainium2_arch.rst"
DMA_OVERVIEW = "nki/get-started/about/nki-dma-overview.rst"
DMA_BANDWIDTH = "nki/deep-dives/nki-dma-bandwidth-guide.rst"
ISA_STUBS = "nki/api/nki/isa/__init__.py"

#: The single table of model constants. ``source`` names the doc page and section each value is read from, or
#: starts with ``assumption:`` where the docs do not give it.
CONSTANTS = {
    # memory
    "partitions": Constant(128, 128, "partitions", f"{ARCH_V2} 'NeuronCore-v2 Compute Engines' (SBUF and PSUM have 128 "
                                                   "partitions each); nki/api/nki.language.tile_size.rst (pmax)"),
    "sbuf_bytes_per_partition": Constant(
        180224, 212984, "B",
        f"assumption: usable bytes per partition, below the documented 192 KiB ({ARCH_V2} 'NeuronCore-v2 Compute "
        f"Engines') and 224 KiB ({ARCH_V3} 'NeuronCore-v3 Compute Engine Updates'); the docs name the usable figure "
        "(nl.tile_size.sbuf_fmax_bytes) but do not give its value"),
    "psum_bytes_per_partition": Constant(16384, 16384, "B", f"{ARCH_V2} 'NeuronCore-v2 Compute Engines' (16 KiB per "
                                                            f"partition) and 'Near-memory accumulation in PSUM' (8 "
                                                            f"banks); {ARCH_V3} (PSUM unchanged at 2 MiB)"),
    "psum_bank_bytes": Constant(2048, 2048, "B", f"{ARCH_V2} 'Near-memory accumulation in PSUM' (a bank holds 512 "
                                                 "32-bit values per partition; one matmul output fits one bank)"),
    # clocks
    "tensor_clock_ghz": Constant(2.8, 2.4, "GHz", f"{ARCH_V2} 'NeuronCore-v2 Compute Engines' (frequency table); "
                                                  f"{ARCH_V3} 'Compute Engine Specifications'"),
    "vector_clock_ghz": Constant(1.12, 0.96, "GHz", f"{ARCH_V2} 'NeuronCore-v2 Compute Engines' (frequency table); "
                                                    f"{ARCH_V3} 'Compute Engine Specifications'"),
    "scalar_clock_ghz": Constant(1.4, 1.2, "GHz", f"{ARCH_V2} 'NeuronCore-v2 Compute Engines' (frequency table); "
                                                  f"{ARCH_V3} 'Compute Engine Specifications'"),
    "gpsimd_clock_ghz": Constant(1.4, 1.2, "GHz", f"{ARCH_V2} 'NeuronCore-v2 Compute Engines' (frequency table); "
                                                  f"{ARCH_V3} 'Compute Engine Specifications'"),
    # TensorE: back-to-back MMs issue every max(N, 64) cycles; fp32 ~4x
    "matmul_min_cycles": Constant(64, 64, "cycles", f"{ARCH_V2} 'Tensor Engine', 'Cost Model' (MM_INIT_LATENCY, 64 "
                                                    "TensorE cycles on NeuronCore-v2); assumption: the same on v3"),
    "matmul_fp32_factor": Constant(4, 4, "x", f"{ARCH_V2} 'Tensor Engine', 'Cost Model' (FP32 inputs roughly 4x); "
                                              f"{ARCH_V3} (79 BF16/FP16/TF32 against 20 FP32 TFLOPS on trn2)"),
    "matmul_fp32_onezero_speedup": Constant(2, 2, "x", f"{ISA_STUBS} nc_matmul (:param is_stationary_onezero: / "
                                                       "is_moving_onezero: 'could lead to 2x better performance' for "
                                                       "float32)"),
    # VectorE: ~N cycles per input tensor + ~100 fixed; v3 runs 16-bit floats 2x (4x copy/tensor_scalar)
    "vector_fixed_cycles": Constant(100, 100, "cycles",
                                    f"{ARCH_V2} 'Vector Engine', 'Cost Model' (a static overhead of 100 engine cycles "
                                    "for short or dependent back-to-back instructions); assumption: charged on every "
                                    "instruction, and on v3"),
    "vector_16bit_speedup": Constant(1, 2, "x", f"{ARCH_V3} 'Vector Engine Performance Mode' (2x: tensor_tensor with "
                                                "SBUF inputs, all BF16/FP16; tensor_copy/tensor_scalar not meeting "
                                                "every 4x condition)"),
    "vector_16bit_copy_speedup": Constant(1, 4, "x", f"{ARCH_V3} 'Vector Engine Performance Mode' (4x: tensor_copy "
                                                     "and tensor_scalar, SBUF, BF16/FP16, contiguous innermost dim)"),
    # ScalarE: ~N cycles, never below 64
    "scalar_min_cycles": Constant(64, 64, "cycles",
                                  "nki/api/nki.api.shared.rst, Scalar Engine cost (max(MIN_II, N), MIN_II roughly 64 "
                                  f"cycles); {ARCH_V2} 'Scalar Engine', 'Performance Consideration' (about N cycles)"),
    # GpSimd: no documented rule of thumb; modelled like v2 VectorE (N per input + fixed)
    "gpsimd_fixed_cycles": Constant(100, 100, "cycles", f"assumption: {ARCH_V2} 'GpSimd Engine', 'Cost Model' says "
                                                        "there is no rule of thumb; modelled like VectorE"),
    # DMA: 16 engines per NC, ~1.3 us fixed cost per transfer, peak bandwidth per NC
    "dma_queues": Constant(16, 16, "queues", f"{DMA_OVERVIEW} (16 DMA engines per NeuronCore; a transfer is "
                                             f"parallelized over up to 16) and {DMA_BANDWIDTH} 'Why Large Contiguous "
                                             "DMA Payloads Are Required' (16 engines per NC); assumption: a "
                                             "transfer's fixed cost goes to the least busy engine (dma_pick_queue)"),
    "dma_fixed_ns": Constant(1300, 1300, "ns", f"{DMA_BANDWIDTH} 'Why Large Contiguous DMA Payloads Are Required' "
                                               "(~1300 ns cross-engine per transfer; no generation named, used on "
                                               "both)"),
    "dma_partitions_per_engine": Constant(8, 8, "partitions", f"{DMA_OVERVIEW} 'Performance Considerations' and "
                                                              "examples 1-2 (each of the 16 engines moves 8 of 128 "
                                                              "SBUF partitions; bytes of one transfer are split over "
                                                              "them)"),
    "dma_peak_gbps_per_nc": Constant(272, 368, "GB/s", f"{DMA_BANDWIDTH} 'Why Large Contiguous DMA Payloads Are "
                                                      f"Required' and {DMA_OVERVIEW} 'Performance Considerations' "
                                                      "(tables: 17 / 23 B/ns per engine x 16; the overview's opening "
                                                      "'27.2 GB/s per engine for v2 and v3' is a theoretical figure "
                                                      "the tables do not use)"),
    # DMA efficiency against contiguous bytes per descriptor element (the descriptor-bound model):
    # efficiency(c) = x / (1 + x**k) ** (1/k), x = c / knee. Fitted (least squares on log throughput) to the
    # throughput-vs-bytes-per-partition figure of the DMA overview, normalised to its 32 KiB point.
    "dma_efficiency_knee_bytes": Constant(
        2400, 2400, "B",
        "nki/get-started/about/nki-dma-overview.rst 'Performance Considerations' (figure nki-dma-intro-1: "
        "throughput grows linearly with bytes per partition up to 1 KiB, 0.81 of the 32 KiB point at 2 KiB, "
        "0.97 at 4 KiB); nki/deep-dives/nki-dma-bandwidth-guide.rst 'Bandwidth vs. Payload Size' (< 256 B "
        "severely overhead-bound, >= 2 KiB approaches peak, >= 4 KiB saturates). Fit: knee 2419 B, k 6.3, "
        "rounded; assumption: the figure's 32 KiB point is peak and the same curve holds on trn1"),
    "dma_efficiency_sharpness": Constant(6, 6, "exponent k", f"{DMA_OVERVIEW} 'Performance Considerations' (figure "
                                                            "nki-dma-intro-1), fitted with dma_efficiency_knee_bytes "
                                                            "(fit: k 6.3, rounded)"),
    # Software DGE (nki/deep-dives/nki-dge.rst 'swdge --- software DGE': GpSimd generates the descriptors of
    # indirect DMAs and 'consumes GpSimd Engine cycles'; no cycle count is documented).
    "swdge_fixed_cycles": Constant(
        10, 10, "GpSimd cycles",
        "nki/get-started/about/nki-dma-overview.rst Example 2 profile (figure nki-dma-intro-6: the GpSimd "
        "DMA trigger of a 128-partition software-DGE copy lasts 8 ns, ~10 cycles at 1.2 GHz); assumed on trn1"),
    "swdge_cycles_per_descriptor": Constant(
        2, 2, "GpSimd cycles",
        "assumption: one descriptor element per gathered row, ~16 cycles each on one of GpSimd's 8 cores, "
        "the cores working in parallel (no figure documented in nki/deep-dives/nki-dge.rst)"),
}

_FAST_16BIT_VECTOR_OPS = frozenset(["copy", "tensor_scalar"])
# The efficiency curve is one fit, used for every target (see dma_efficiency_knee_bytes' source).
DMA_EFFICIENCY_KNEE_BYTES = float(CONSTANTS["dma_efficiency_knee_bytes"].trn2)
DMA_EFFICIENCY_SHARPNESS = CONSTANTS["dma_efficiency_sharpness"].trn2
_INVERSE_SHARPNESS = 1.0 / DMA_EFFICIENCY_SHARPNESS


def normalize_target(target):
    """Map ``trn1``/``inf2``/``gen2`` to ``"trn1"`` and ``trn2``/``gen3`` to ``"trn2"``."""
    key = str(target).lower()
    if key not in TARGET_ALIASES:
        raise ValueError(f"unknown target {target!r}; allowed: trn1, inf2 (= NeuronCore-v2), trn2")
    return TARGET_ALIASES[key]


def _values_by_target_name(constants):
    """``{(name, target): value}`` for every constant and every accepted lower-case target name (aliases
    included), so that a lookup is one dict access: the whole-matrix estimate looks constants up millions
    of times per controller run."""
    return {(name, alias): getattr(c, normalized) for name, c in constants.items()
            for alias, normalized in TARGET_ALIASES.items()}


#: :data:`CONSTANTS` resolved for each target name: ``CONSTANT_VALUES[name, target]``.
CONSTANT_VALUES = _values_by_target_name(CONSTANTS)


def constant(name, target):
    """The value of constant ``name`` (a key of :data:`CONSTANTS`) on ``target``."""
    try:
        return CONSTANT_VALUES[name, target]
    except KeyError:
        pass
    if name not in CONSTANTS:
        raise KeyError(f"unknown cost-model constant {name!r}; allowed: {', '.join(CONSTANTS)}")
    return CONSTANTS[name].value(target)  # a target spelled in upper case, or refused with the allowed names


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
    # tfloat32 streams at the BF16 rate (trn2: 79 BF16/FP16/TF32 against 20 FP32 TFLOPS)
    if np.dtype(dtype) == np.dtype(np.float32) and not is_tfloat32(dtype):
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


def dma_efficiency(contiguous_bytes):
    """Fraction of peak bandwidth reached when a DMA moves contiguous runs of ``contiguous_bytes``.

    ``x / (1 + x**k) ** (1/k)`` with ``x = contiguous_bytes / knee``: linear in the run length well below
    the knee (a fixed time per descriptor element, the documented "per-packet overhead"), 1 well above it.
    Constants and their sources: ``dma_efficiency_knee_bytes``, ``dma_efficiency_sharpness``.
    """
    c = float(contiguous_bytes)
    if c <= 0:
        return 0.0
    x = c / DMA_EFFICIENCY_KNEE_BYTES
    efficiency = x / (1.0 + x**DMA_EFFICIENCY_SHARPNESS) ** _INVERSE_SHARPNESS
    return efficiency if efficiency < 1.0 else 1.0  # rounding can overshoot 1 by an ulp


def dma_transfer_shape(nbytes, partitions=None, contiguous_bytes=None, descriptors=None):
    """``(run_bytes, descriptors)`` a transfer is charged with.

    ``descriptors`` defaults to the SBUF-side partitions (one row per partition), or 16 (one per DMA engine)
    for an HBM-to-HBM copy; ``run_bytes`` defaults to the bytes of one descriptor element
    (``nbytes / descriptors``) and never exceeds it. A transfer told it has no descriptor (a gather whose every
    row ``oob_mode.skip`` skips) has none and moves no bytes.
    """
    nbytes = int(nbytes)
    if descriptors is None:
        descriptors = int(partitions) if partitions is not None else CONSTANTS["dma_queues"].trn2
    descriptors = max(int(descriptors), 0)
    if descriptors == 0:
        if nbytes:
            raise ValueError(f"a DMA transfer of {nbytes} B needs at least one descriptor, got 0")
        return 0.0, 0
    per_descriptor = nbytes / descriptors
    run = per_descriptor if contiguous_bytes is None else min(float(contiguous_bytes), per_descriptor)
    return run, descriptors


def dma_data_ns(nbytes, target, model=DEFAULT_DMA_MODEL, run_bytes=None):
    """Time of ``nbytes`` on one engine/queue at its share of peak, slowed by ``dma_efficiency(run_bytes)``
    under the descriptor-bound model (``run_bytes=None``: the bytes are one run)."""
    _check_model(model)
    ns = int(nbytes) / dma_queue_bytes_per_ns(target)
    if model == "descriptor" and nbytes:
        ns /= dma_efficiency(run_bytes if run_bytes is not None else nbytes)
    return ns


def swdge_descriptor_cycles(descriptors, target):
    """GpSimd cycles spent generating the descriptors of one indirect (software-DGE) DMA:
    ``swdge_fixed_cycles + descriptors * swdge_cycles_per_descriptor`` (an assumption; see CONSTANTS)."""
    return float(constant("swdge_fixed_cycles", target)
                 + max(int(descriptors), 0) * constant("swdge_cycles_per_descriptor", target))


def _check_model(model):
    if model not in DMA_MODELS:
        raise ValueError(f"unknown DMA cost model {model!r}; allowed: {', '.join(DMA_MODELS)}")


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


def dma_charge(queue_busy_ns, nbytes, target, partition_start=0, partitions=None, *,
               model="optimistic", run_bytes=None):
    """Charge one transfer to the per-engine lanes ``queue_busy_ns`` (modified in place).

    The fixed cost goes to the least busy lane (``dma_pick_queue``: the transfer's queue); the bytes
    are split evenly over the engines that move them (``dma_engine_span``), each at the per-engine
    bandwidth (times ``dma_efficiency(run_bytes)`` under ``model="descriptor"``). The lanes' total
    equals ``dma_cost_ns(nbytes, ...)`` of the same model, so the serial bound matches.
    """
    queue_busy_ns[dma_pick_queue(queue_busy_ns)] += constant("dma_fixed_ns", target)
    first, count = dma_engine_span(partition_start, partitions, target)
    share = dma_data_ns(nbytes, target, model, run_bytes) / count
    for lane in range(first, first + count):
        queue_busy_ns[lane] += share


def dma_cost_ns(nbytes, target, model="optimistic", run_bytes=None):
    """One transfer on one queue: ``1300 ns + nbytes / (peak / 16)``, the bytes slowed by
    ``dma_efficiency(run_bytes)`` under ``model="descriptor"``."""
    return float(constant("dma_fixed_ns", target) + dma_data_ns(nbytes, target, model, run_bytes))
