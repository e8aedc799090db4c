"""The planners' mirror of ``spmm_hybrid``: the modelled busy time of one launch, without simulating it.

``launch_cost`` charges every instruction and DMA transfer the kernel issues for a launch (keep it in step with
``dste.kernels.spmm_hybrid``) into a simulator profile (``dste.nkisim.Profile``: the very accounting a traced run
uses), so it equals a traced run of that launch per engine under both DMA models (tests/kernels/test_cost_mirror.py).
``plan_launches`` prices its merges with it and ``plan_corrections`` its correction shapes; for planning it charges
one DMA model only (``OneModelProfile``, the same figures, faster). ``estimate_spmm`` (``dste.kernels.cost``)
reports traced figures, not these.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from dste.kernels.correction import correction_buffer_tiles, correction_layout
from dste.kernels.plan import (
    RECORD_TAIL_BYTES,
    WORD_BYTES,
    feature_chunks,
    kernel_module,
    launch_rows,
    metadata_layout,
    record_width,
    uses_bands,
    windows_per_step,
    windows_per_store,
)
from dste.nkisim import Profile
from dste.nkisim import cost as nc

BF16 = np.dtype(ml_dtypes.bfloat16)
F32 = np.dtype(np.float32)
F16 = np.dtype(np.float16)
I32 = np.dtype(np.int32)
WINDOW_PARTITIONS = 128
KIND_BIN, KIND_INT8 = 0, 1  # the kernel's run kinds (``spmm_hybrid.KIND_*``)
X_ITEMSIZE = {"fp32": 4, "bf16": 2, "fp16": 2, "int8-hybrid": 1}


_CYCLES = {}
"""Per-instruction cycles by (engine, target, operands): the cost rules are pure, and a plan prices the same few
instruction forms hundreds of thousands of times."""


def _cycles(engine, rule, target, *operands):
    """``rule(*operands, target)`` (VectorE's rule takes its ``op``, the last operand, after the target), computed
    once per instruction form."""
    key = (engine, target) + operands
    cycles = _CYCLES.get(key)
    if cycles is None:
        if engine == "vector":
            cycles = rule(*operands[:-1], target, operands[-1])
        else:
            cycles = rule(*operands, target)
        cycles = _CYCLES[key] = float(cycles)
    return cycles


class OneModelProfile:
    """The part of ``dste.nkisim.Profile`` a planner reads, for one DMA model: engine cycles, software-DGE cycles,
    the 16 DMA lanes and the counts, charged with the same arithmetic in the same order (``Profile.record``,
    ``record_dma`` and ``cost.dma_charge``), so ``engine_busy_ns(model)`` is bit for bit the full profile's. It skips
    the other model and the per-op tallies, and computes each transfer form's charge once."""

    _TRANSFERS = {}  # (target, model, transfer form) -> (fixed ns, first lane, lanes, ns per lane, swdge cycles)

    def __init__(self, target, model):
        self.target, self.model = target, model
        self.engine_cycles = {engine: 0.0 for engine in nc.ENGINES}
        self.swdge_cycles = 0.0
        self.dma_queue_ns = [0.0] * int(nc.constant("dma_queues", target))
        self.dma_transfers = self.dma_bytes = self.total_instructions = 0

    @property
    def dma_queue_ns_by_model(self):
        return {self.model: self.dma_queue_ns}

    def record(self, engine, op, cycles):
        self.total_instructions += 1
        self.engine_cycles[engine] += float(cycles)

    def record_dma(self, op, nbytes, partition_start=0, partitions=None, *, contiguous_bytes=None,
                   descriptors=None, indirect=False):
        form = (self.target, self.model, nbytes, partition_start, partitions, contiguous_bytes, descriptors, indirect)
        charge = self._TRANSFERS.get(form)
        if charge is None:
            run, n_desc = nc.dma_transfer_shape(nbytes, partitions, contiguous_bytes, descriptors)
            first, count = nc.dma_engine_span(partition_start, partitions, self.target)
            charge = self._TRANSFERS[form] = (
                nc.constant("dma_fixed_ns", self.target), first, count,
                nc.dma_data_ns(nbytes, self.target, self.model, run) / count,
                nc.swdge_descriptor_cycles(n_desc, self.target) if indirect else 0.0)
        fixed, first, count, share, swdge = charge
        lanes = self.dma_queue_ns
        lanes[lanes.index(min(lanes))] += fixed  # the least busy lane, the lowest on ties (cost.dma_pick_queue)
        for lane in range(first, first + count):
            lanes[lane] += share
        if indirect:
            self.swdge_cycles += swdge
        self.total_instructions += 1
        self.dma_transfers += 1
        self.dma_bytes += int(nbytes)

    def engine_busy_ns(self, model):
        if model != self.model:
            raise ValueError(f"OneModelProfile.engine_busy_ns: this profile charged DMA model {self.model!r} only, "
                             f"not {model!r}")
        cycles = dict(self.engine_cycles)
        if model == "descriptor":
            cycles["gpsimd"] += self.swdge_cycles
        busy = {e: nc.cycles_to_ns(c, e, self.target) for e, c in cycles.items()}
        busy["dma"] = max(self.dma_queue_ns)
        return busy


class LaunchCost:
    """Busy time of one launch, charged instruction by instruction into a simulator profile
    (``dste.nkisim.Profile.record`` / ``record_dma``: the very accounting a traced run uses, both DMA models).

    ``model``: the DMA model ``busy_ns`` reports by default. ``one_model``: keep only that model's figures
    (:class:`OneModelProfile`, the same figures for it, faster: what the planners use).
    """

    def __init__(self, target, model="optimistic", one_model=False):
        self.target = nc.normalize_target(target)
        self.model = model
        self.profile = OneModelProfile(self.target, model) if one_model else Profile(self.target)

    @property
    def cycles(self):
        return self.profile.engine_cycles

    @property
    def queues(self):
        return self.profile.dma_queue_ns_by_model[self.model]

    @property
    def transfers(self):
        return self.profile.dma_transfers

    @property
    def bytes(self):
        return self.profile.dma_bytes

    @property
    def instructions(self):
        return self.profile.total_instructions

    def vector(self, elems, n_inputs, dtype, op="generic"):
        self.profile.record("vector", "vector", _cycles("vector", nc.vector_cycles, self.target, elems, n_inputs,
                                                        dtype, op))

    def gpsimd(self, elems, n_inputs):
        self.profile.record("gpsimd", "gpsimd", _cycles("gpsimd", nc.gpsimd_cycles, self.target, elems, n_inputs))

    def scalar(self, elems):
        self.profile.record("scalar", "scalar", _cycles("scalar", nc.scalar_cycles, self.target, elems))

    def matmul(self, n, dtype):
        self.profile.record("tensor", "tensor", _cycles("tensor", nc.matmul_cycles, self.target, n, dtype))

    def dma(self, nbytes, run_bytes=None, descriptors=None):
        """A transfer whose SBUF side spans all 128 partitions (one descriptor each unless told), e.g. a blob or a store."""
        self.profile.record_dma("dma_copy", int(nbytes), 0, WINDOW_PARTITIONS, contiguous_bytes=run_bytes,
                                descriptors=descriptors)

    def gather(self, rows, row_bytes):
        """An indirect gather of ``rows`` in-range rows (padding ids are skipped: no bytes, no descriptor) into 128
        partitions; software DGE builds its descriptors on GpSimd (charged under the descriptor model)."""
        self.profile.record_dma("dma_copy", int(rows) * row_bytes, 0, WINDOW_PARTITIONS, contiguous_bytes=row_bytes,
                                descriptors=int(rows), indirect=True)

    def busy_ns(self, model=None):
        return self.profile.engine_busy_ns(model or self.model)


def valid_counts(A, launch):
    """In-range column ids per bitmap slot and per entry slot (gathers move bytes only for these)."""
    bt, et = launch.bitmap_tiles.reshape(-1), launch.entry_tiles.reshape(-1)
    bvalid = np.where(bt >= 0, A.tile_ncols[np.maximum(bt, 0)] if A.tile_ncols.size else 0, 0)
    evalid = np.where(et >= 0, A.etile_nentries[np.maximum(et, 0)] if A.etile_nentries.size else 0, 0)
    return bvalid, evalid


def list_valid_counts(A, launch):
    """Listed (gathered) columns per list slot."""
    lt = launch.list_tiles.reshape(-1)
    return np.where(lt >= 0, A.ltile_ncols[np.maximum(lt, 0)] if A.ltile_ncols.size else 0, 0)


class CorrectionCost:
    """Charges of one launch's FP16-row correction pass (mirror of the kernel's ``correct``)."""

    def __init__(self, shape, valid, n_features, has_entries):
        self.shape, self.valid, self.F, self.has_entries = shape, valid, n_features, has_entries
        self.resident = correction_buffer_tiles(shape, n_features)
        self.builds = 0

    def setup(self, c, n_windows):
        words = correction_layout(self.shape.n_tiles(n_windows), self.shape.group_windows)["total"]
        c.dma(WINDOW_PARTITIONS * WORD_BYTES * words, WORD_BYTES * words)  # the correction blob
        c.gpsimd(self.resident * self.F, 1)  # memset of the gathered-row buffer
        if not self.has_entries:
            c.gpsimd(128, 1)  # row iota

    def window(self, c, w):
        G, C = self.shape.group_windows, self.shape.tiles_per_group
        g, j = divmod(w, G)
        for c0 in range(0, C, self.resident):
            n = min(C, c0 + self.resident) - c0
            if j == 0 or self.resident < C:
                for i in range(n):
                    c.gather(int(self.valid[g * C + c0 + i]), self.F * 2)
            for _ in range(n):
                if CORRECTION_ENGINES[self.builds % len(CORRECTION_ENGINES)] == "gpsimd":
                    # GpSimd has no tensor_scalar beyond rsqrt: the one-hot and the weight product are two
                    # tensor_tensor of broadcast per-entry columns
                    c.gpsimd(128, 2)
                    c.gpsimd(128, 2)
                else:
                    c.vector(128, 1, BF16, "tensor_scalar")
                self.builds += 1
                for _, width in feature_chunks(self.F):
                    c.matmul(width, BF16)


PLANNER_DMA_MODEL = nc.DEFAULT_DMA_MODEL
"""The DMA model the planners price their choices under: the one ``estimate_spmm`` reports by default."""

CORRECTION_ENGINES = ("vector", "gpsimd")
"""Engines the correction stationaries rotate over (the kernel's ``correction_engines``)."""


def launch_cost(A, launch, target, correction=None, planning=False):
    """Mirror of ``dste.kernels.spmm_hybrid.spmm_hybrid_kernel`` for one launch (keep in step with the kernel).

    ``correction``: ``(CorrectionShape, in-range rows per correction tile)`` of the FP16-row pass, or None.
    ``planning``: charge the planning DMA model only (``PLANNER_DMA_MODEL``; its figures are unchanged).
    """
    b = launch.bucket
    W, F = b.windows, b.features
    nb, ne, nli = b.bitmap_slots, b.entry_slots, b.list_slots
    n_bin, n_int8, n_fp16 = b.bitmap
    hybrid = b.x_mode == "int8-hybrid"
    group = b.group_size()
    chunks = feature_chunks(F)
    moving_dtype = F16 if b.x_mode in ("fp16", "int8-hybrid") else BF16
    x_item = X_ITEMSIZE[b.x_mode]
    gather_item = max(x_item, moving_dtype.itemsize) if not hybrid else 1
    row_bytes = F * gather_item if not hybrid else record_width(F)
    c = LaunchCost(target, PLANNER_DMA_MODEL, one_model=planning)
    bvalid, evalid = valid_counts(A, launch)
    lvalid = list_valid_counts(A, launch)
    out_rows = output_rows(A, launch)
    corr = None
    if correction is not None and correction[0].tiles_per_group:
        corr = CorrectionCost(correction[0], correction[1], F, bool(ne or nli or b.diagonal))

    c.gpsimd(128, 1)  # iota of shift amounts
    wide_rows = uses_bands(A.shape[0])  # as the kernel decides, from Y's rows
    blob_words = metadata_layout(W, b.bitmap, b.entry, b.wide_ids, b.lists, wide_rows, b.diagonal)["total"]
    c.dma(128 * WORD_BYTES * blob_words, WORD_BYTES * blob_words)  # the metadata blob
    _id_widening(c, W, wide_rows)  # the output row ids
    for slots in (W * nb, W * ne):
        if slots:  # 16-bit column ids widened to int32 gather indices, once per region
            _id_widening(c, slots, b.wide_ids)
    if ne:
        S = W * ne
        c.gpsimd(S, 1)  # uint8 entry rows -> fp32
        c.gpsimd(2, 1)  # bit masks (1 and 31)
        c.gpsimd(1, 1)
        c.vector(1, 1, I32, "tensor_scalar")
        c.vector(S, 1, F32, "tensor_scalar")
        c.vector(S, 2, F32)
        n_eint8, n_efp16 = b.entry[1], b.entry[2]
        if n_eint8:
            c.vector(W * n_eint8, 2, F32)
        if n_efp16:
            c.vector(W * n_efp16, 2, F32)
        c.gpsimd(128, 1)  # row iota
    if nli:
        S, pair_ids = W * nli, W * b.list_pairs  # one column id per pair's partition k, one row per list slot
        _id_widening(c, pair_ids, b.wide_ids)
        c.gpsimd(S, 1)  # uint8 rows -> fp32
        c.gpsimd(S, 1)  # uint8 column slots -> fp32
        if not ne:
            c.gpsimd(2, 1)  # bit masks (1 and 31)
            c.gpsimd(1, 1)
            c.vector(1, 1, I32, "tensor_scalar")
        c.vector(S, 1, F32, "tensor_scalar")
        c.vector(S, 2, F32)
        c.gpsimd(128, 1)  # column iota
        if not ne:
            c.gpsimd(128, 1)  # row iota
    diagonal = b.diagonal
    if diagonal:
        c.gpsimd(1, 1)  # partition iota
        if not (ne or nli):
            c.gpsimd(128, 1)  # row iota
    if corr is not None:
        corr.setup(c, W)
    npairs = b.list_pairs
    spw = nb + ne + npairs + int(diagonal)
    step = windows_per_step(W, spw, F, group)
    if not hybrid:
        c.vector(group * F, 1, moving_dtype, "copy")  # memset of the moving buffers
    if hybrid:
        c.gpsimd(group * RECORD_TAIL_BYTES, 1)  # memset of the record tails

    def gathers(valid, s0, n):
        for i in range(n):
            c.gather(int(valid[s0 + i]), row_bytes)

    def dequantize(n):
        for _ in range(n):
            c.scalar(F)

    kind_runs = kernel_module()._kind_runs  # the kernel's own split of a group of slots into runs of one kind

    def slot_scales(n):
        # hybrid X: per slot, the gathered rows' record scale x the column factor (entry weight), fp32
        c.vector(n, 2, F32)

    def bitmap_slots(s0, n):
        gathers(bvalid, s0, n)
        if hybrid:
            slot_scales(n)
            dequantize(n)
        # keep words (uint32) shifted into int32 sign bits, one instruction for the n slots (mixed dtypes: fp32 rate)
        c.vector(n * 128, 2, F32)
        for lo, hi, _, kind in kind_runs(s0, n, nb, n_bin, n_int8):
            elems = (hi - lo) * 128
            if hybrid and kind == KIND_BIN:
                c.vector(elems, 1, F32, "tensor_scalar")  # the bare mask: the scale rode on the moving operand
            elif hybrid and kind == KIND_INT8:
                c.vector(elems, 2, F32)  # scalar_tensor_tensor: mask x INT8 value
            else:
                c.vector(elems, 2, F32)  # scalar_tensor_tensor: mask x per-slot factor
                if kind != KIND_BIN:
                    c.gpsimd(elems, 2)  # x the tile's INT8 / FP16 values

    def one_hot_slots(valid, i0, n):
        """n entry-like slots (the kernel's ``one_hot_slots``): slot i gathers ``valid[i0 + i]`` in-range rows."""
        gathers(valid, i0, n)
        if hybrid:
            slot_scales(n)
            dequantize(n)
        for _ in range(n):
            # one-hot row x weight: a tensor_scalar on VectorE for every slot (bf16 in and out: the 16-bit rate)
            c.vector(128, 1, BF16, "tensor_scalar")

    def entry_slots(s0, n):
        one_hot_slots(evalid, s0, n)

    def list_slots(q0, n):
        """List pairs q0..q0+n (slots 2j, 2j + 1 of a window each)."""
        for i in range(n):
            w, j = divmod(q0 + i, npairs)
            halves = [w * nli + 2 * j + h for h in range(2) if 2 * j + h < nli]
            c.gather(int(sum(lvalid[s] for s in halves)), row_bytes)
        if hybrid:
            dequantize(n)
        for i in range(n):
            w, j = divmod(q0 + i, npairs)
            for _ in range(min(2, nli - 2 * j)):
                c.gpsimd(128, 2)  # column one-hot
                c.vector(128, 1, BF16, "tensor_scalar")  # row one-hot x weight
                c.matmul(128, BF16)  # their product, the pair's two accumulating
            c.scalar(128)  # PSUM -> bf16 stationary

    def diagonal_slots(w0, n):
        """The diagonal slots of windows w0..w0+n: each gathers its window's in-range output rows of X."""
        one_hot_slots(out_rows, w0, n)

    def accumulate(n):
        for _ in range(n):
            for _, width in chunks:
                c.matmul(width, BF16)

    def evacuate():
        for _, width in chunks:
            c.scalar(width)

    store_windows = windows_per_store(W, step, F)
    store_start = 0
    for w0 in range(0, W, step):
        w1 = min(W, w0 + step)
        k = w1 - w0
        if spw <= group:
            if nb:
                bitmap_slots(w0 * nb, k * nb)
            if ne:
                entry_slots(w0 * ne, k * ne)
            if nli:
                list_slots(w0 * npairs, k * npairs)
            if diagonal:
                diagonal_slots(w0, k)
            for w in range(w0, w1):
                accumulate(nb + ne + npairs + int(diagonal))
                if corr is not None:
                    corr.window(c, w)
                evacuate()
        else:
            for g0 in range(0, nb, group):
                n = min(nb, g0 + group) - g0
                bitmap_slots(w0 * nb + g0, n)
                accumulate(n)
            for g0 in range(0, ne, group):
                n = min(ne, g0 + group) - g0
                entry_slots(w0 * ne + g0, n)
                accumulate(n)
            for g0 in range(0, npairs, group):
                n = min(npairs, g0 + group) - g0
                list_slots(w0 * npairs + g0, n)
                accumulate(n)
            if diagonal:
                diagonal_slots(w0, 1)
                accumulate(1)
            if corr is not None:
                corr.window(c, w0)
            evacuate()
        if w1 - store_start == store_windows or w1 == W:
            for w in range(store_start, w1):
                # one scatter per window: its in-range rows of Y, an indirect transfer shaped like a gather
                c.gather(int(out_rows[w]), F * 4)
            store_start = w1
    return c


def _id_widening(c, n_ids, banded):
    """GpSimd widening of ``n_ids`` 16-bit ids (column ids of a region, or a launch's output row ids) to int32
    indices: one ``tensor_copy``, or with bands a memset of the band-rows constant and two ``tensor_tensor``
    (the kernel's ``_widened_ids``)."""
    if banded:
        c.gpsimd(1, 1)
        c.gpsimd(n_ids, 2)
        c.gpsimd(n_ids, 2)
    else:
        c.gpsimd(n_ids, 1)


def output_rows(A, launch) -> np.ndarray:
    """Rows of Y each window of the launch writes (its slots that hold a row; 0 for a padding window)."""
    return (launch_rows(A, launch) < A.shape[0]).sum(axis=1)
