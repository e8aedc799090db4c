"""``nki.isa`` for the simulator: one vectorised NumPy operation per instruction.

This module is what ``import nki.isa`` gives. It holds the core data-movement and element-wise
instructions and re-exports the rest (``isa_vector``, ``isa_gpsimd``, ``isa_scalar``, ``isa_misc``), so
every public function of the official ``nki/api/nki/isa/__init__.py`` exists here with its official
parameter names, order and defaults. Each instruction checks its operands against the documented
rules (``isa_rules``; every refusal names its rule id and doc page), computes the result with NumPy,
and records its modelled cost in the run's profile.
"""

import contextlib
import contextvars
import warnings

import numpy as np

from . import cost, ops
from . import dtypes as dt
from .errors import InvalidActivationInputWarning, OutOfBoundsError
from .isa_common import (  # noqa: F401 - enums and handles are part of the nki.isa namespace
    MAX_PARTITIONS, NkiInstruction, NkiValidationError, dge_mode, dma_engine, engine, gpsimd_engine,
    matmul_perf_mode, nc_version, oob_mode, reduce_cmd, scalar_engine, tensor_engine, unknown_engine,
    vector_engine,
)
from .isa_common import (
    alu_op, apply_alu, bits, bits_scalar, bits_to, check_writable, column_operand, common_dtype,
    contiguous_run_elements, elementwise_cycles, engine_name, generation, instruction, is_number,
    no_psum_on_gpsimd, not_both_in_psum, on_chip, read2d, record, record_dma, reduce_alu, require_fp32_tile,
    matmul_marks, require_int, require_target, same_layout, sbuf_span, set_matmul_marks, shared_read, shared_write, target,
    tensor, two_inputs, write,
)
from .isa_alu import ACTIVATION_ALIASES, ACTIVATION_TABLE, ACTIVATION_VALID_RANGE, op_name, outside_valid_range
from .rules import violate
from .tensor import NkiTensor

MATMUL_MAX_K, MATMUL_MAX_M, MATMUL_MAX_N = 128, 128, 512
MATMUL_INPUT_DTYPES = frozenset([dt.float8_e4m3, dt.float8_e5m2, dt.bfloat16, dt.float16, dt.float32])
FP8_MATMUL_DTYPES = frozenset([dt.float8_e4m3, dt.float8_e5m2])
TRANSPOSE_TENSOR_MAX, TRANSPOSE_VECTOR_MAX = 128, 32
# nl.equal / nl.maximum are the official defaults of affine_select / select_reduce / range_select.
equal, maximum = ops.equal, ops.maximum


def get_nc_version():
    """The nc_version of the current target (gen2 = trn1/inf2, gen3 = trn2, gen4 = trn3)."""
    return nc_version(generation())


def get_nc_sub_version():
    """The silicon revision within the generation; the simulator models the first (0)."""
    return 0


# -- DMA -------------------------------------------------------------------------------------------
@instruction
def dma_copy(dst, src, priority=None, oob_mode=oob_mode.error, dge_mode=dge_mode.unknown, engine=engine.unknown,
             name=None):
    """Copy ``src`` to ``dst`` (HBM/SBUF in any direction), converting dtypes through fp32.

    An ``.ap(vector_offset=idx)`` view on src gathers rows, on dst scatters rows; ``oob_mode.skip``
    leaves rows with out-of-range indices untouched (and moves no bytes for them).
    """
    instr = "dma_copy"
    modes, oob = globals()["dge_mode"], globals()["oob_mode"]
    tensor(instr, "dst", dst)
    tensor(instr, "src", src)
    if src.buffer == "psum" or dst.buffer == "psum":
        violate("dma_copy.no_psum", f"nisa.dma_copy: {'src ' + repr(src.name) if src.buffer == 'psum' else 'dst ' + repr(dst.name)} "
                "is in PSUM; DMA cannot read PSUM (copy it to SBUF with nisa.tensor_copy first)")
    if not isinstance(oob_mode, oob):
        violate("dma_copy.oob", f"nisa.dma_copy: oob_mode must be nisa.oob_mode.error or .skip, got {oob_mode!r}")
    if not isinstance(dge_mode, modes):
        violate("dma_copy.hwdge", f"nisa.dma_copy: dge_mode must be a nisa.dge_mode member, got {dge_mode!r}")
    if priority is not None:
        require_target(instr, "priority", 4)
        if not isinstance(priority, int) or not 0 <= priority <= 3:
            violate("dma_copy.priority", f"nisa.dma_copy: priority must be an int 0-3, got {priority!r}")
    if dge_mode is modes.hwdge:
        if generation() < 3:
            violate("dma_copy.hwdge", "nisa.dma_copy: dge_mode.hwdge does not exist on NeuronCore-v2 (trn1/inf2)")
        if src.dtype != dst.dtype:
            violate("dma_copy.hwdge", f"nisa.dma_copy: dge_mode.hwdge cannot convert dtypes (src {src.dtype.name}, "
                    f"dst {dst.dtype.name}); use .view() to reinterpret")
    eng = globals()["engine"]
    if engine is not None and engine is not eng.unknown:
        if dge_mode is not modes.hwdge or engine not in (eng.sync, eng.scalar):
            violate("dma_copy.engine", f"nisa.dma_copy: engine={engine!r} is only valid as engine.sync or "
                    "engine.scalar with dge_mode=hwdge")
    indirect = src.is_indirect or dst.is_indirect
    if indirect and generation() < 3:
        violate("dma_copy.indirect_v3", "nisa.dma_copy: indirect (vector_offset) access needs software DGE with "
                f"indirect support, which starts at NeuronCore-v3 (trn2); the target is {target()}")
    if src.is_indirect and dst.is_indirect:
        violate("dma_copy.indirect", "nisa.dma_copy: src and dst cannot both use vector_offset")
    if indirect and dge_mode in (modes.hwdge, modes.none):
        violate("dma_copy.indirect", f"nisa.dma_copy: indirect (vector_offset) access needs software DGE, not "
                f"{dge_mode!r}")
    for role, t in (("dst", dst), ("src", src)):
        if t.is_on_chip and t.shape[0] > MAX_PARTITIONS:
            violate("isa.partitions", f"nisa.dma_copy: {role} {t.name!r} spans {t.shape[0]} partitions; the limit is "
                    f"{MAX_PARTITIONS}")
    if src.size != dst.size:
        violate("dma_copy.size", f"nisa.dma_copy: element counts differ (src {src.name!r} {src.shape} has {src.size}, "
                f"dst {dst.name!r} {dst.shape} has {dst.size})")
    skip = oob_mode is oob.skip
    item = max(src.dtype.itemsize, dst.dtype.itemsize)
    if indirect:
        moved, rows, row_elems = _indirect_copy(dst, src, skip)
        run_elems, descriptors = row_elems, rows
    elif skip and dynamic_address_out_of_bounds(src, dst):
        # a scalar_offset is a dynamic start address: skip skips the transfer it puts out of bounds (assumption: the
        # docs give no partial rule, so the whole transfer is skipped)
        moved, run_elems, descriptors = 0, 1, 0
    else:
        check_writable(instr, dst)
        shared_read(instr, src)
        values = src.array()
        if src.dtype != dst.dtype:
            values = dt.cast(dt.to_fp32(values), dst.dtype)
        with shared_write(instr, dst):
            dst.array()[...] = values.reshape(dst.shape)
        set_matmul_marks(dst, False)
        moved = src.size
        run_elems = max(1, min(contiguous_run_elements(src), contiguous_run_elements(dst)))
        descriptors = -(-moved // run_elems)
    record_dma(instr, moved * item, sbuf_span(dst, src), run_elems * item, descriptors, indirect)


def dynamic_address_out_of_bounds(*tensors):
    """Whether a scalar_offset (dynamic start address) puts one of ``tensors`` outside its storage."""
    for t in tensors:
        if t._scalar_offset is None:
            continue
        try:
            t.array()
        except OutOfBoundsError:
            return True
    return False


def indirect_rows(instr, view, skip):
    """The rows an indirect (vector_offset) view addresses: ``(valid [rows] bool, element_index [valid rows,
    elements per row], flat storage of view's dtype)``. An index outside the base's rows, or one whose pattern
    reaches past the storage, is refused, or skipped (``valid`` False) under ``oob_mode.skip``: skip skips a transfer
    "for a given dynamic address or index when it is out of bound" (nisa.dma_copy)."""
    ind = view._indirect
    rows = view.shape[0]
    index = ind.index.array()
    if instr != "dma_transpose" and index.size != index.shape[0]:
        violate("dma_copy.indirect", f"nisa.{instr}: the vector_offset index {ind.index.name!r} has shape "
                f"{index.shape}; only nisa.dma_transpose reads a multi-column index, {instr} takes one index per "
                "partition")
    # column by column: flat_indices = indices.T.flatten()[:rows] (isa dma_transpose); one column reads in order
    idx = index.reshape(index.shape[0], -1).T.reshape(-1)[:rows].astype(np.int64)
    valid = (idx >= 0) & (idx < ind.n_rows)
    if not valid.all() and not skip:
        p = int(np.flatnonzero(~valid)[0])
        violate("dma_copy.oob", f"nisa.{instr}: indirect index {int(idx[p])} (partition {p} of index tile "
                f"{ind.index.name!r}) is outside the allowed range [0, {ind.n_rows}) of the rows of {view.name!r}; "
                "use oob_mode=nisa.oob_mode.skip to skip it", error=OutOfBoundsError)
    offsets = view.element_offsets().reshape(rows, -1) + (idx * ind.row_bytes)[:, None]
    item = view.dtype.itemsize
    in_storage = (offsets.min(axis=1) >= 0) & (offsets.max(axis=1) + item <= view.storage.nbytes) if offsets.size \
        else np.ones(rows, dtype=bool)
    if not (in_storage | ~valid).all() and not skip:
        p = int(np.flatnonzero(valid & ~in_storage)[0])
        violate("dma_copy.oob", f"nisa.{instr}: indirect index {int(idx[p])} (partition {p} of index tile "
                f"{ind.index.name!r}) makes the access pattern on {view.name!r} reach outside its storage; use "
                "oob_mode=nisa.oob_mode.skip to skip it", error=OutOfBoundsError)
    valid &= in_storage
    offsets = offsets[valid]
    flat = view.storage.data.view(view.dtype) if view.storage.nbytes % item == 0 else None
    if flat is None or offsets.size and (offsets % item).any():
        violate("dma_copy.indirect", f"nisa.{instr}: indirect access on {view.name!r} is not aligned to "
                f"{view.dtype.name}")
    return valid, offsets // item, flat


def _indirect_copy(dst, src, skip):
    """Gather (indirect src) or scatter (indirect dst) whole rows; returns (elements, rows, elements per row)."""
    view = src if src.is_indirect else dst
    other = dst if src.is_indirect else src
    rows = view.shape[0]
    valid, element_index, flat = indirect_rows("dma_copy", view, skip)
    n_valid = int(np.count_nonzero(valid))
    if src.is_indirect:
        values = flat[element_index]
        check_writable("dma_copy", dst)
        shared_read("dma_copy", src, element_index)
        if dst.dtype != src.dtype:
            values = dt.cast(dt.to_fp32(values), dst.dtype)
        if n_valid == rows:
            with shared_write("dma_copy", dst):
                dst.array()[...] = values.reshape(dst.shape)
            set_matmul_marks(dst, False)
        else:  # the skipped rows of dst keep what they held
            dst_offsets = dst.element_offsets().reshape(rows, -1)[valid] // dst.dtype.itemsize
            with shared_write("dma_copy", dst, dst_offsets):
                dst.storage.data.view(dst.dtype)[dst_offsets] = values
            if dst.storage.matmul_written is not None:
                dst.storage.matmul_written[(dst_offsets * dst.dtype.itemsize // dst.storage.dtype.itemsize).reshape(-1)] = False
    else:
        shared_read("dma_copy", src)
        values = other.array().reshape(rows, -1)[valid]
        if dst.dtype != src.dtype:
            values = dt.cast(dt.to_fp32(values), dst.dtype)
        with shared_write("dma_copy", dst, element_index):
            flat[element_index] = values
    row_elems = view.size // max(rows, 1)
    return n_valid * row_elems, n_valid, row_elems


# -- TensorE ---------------------------------------------------------------------------------------
def _transpose_mode_result(st, mv):
    """TensorE's transpose mode (NeuronCore-v3+): ``stationary.T @ identity`` as a bit-accurate data move, so NaN/Inf
    stay where they are (nki/api/nki/isa/__init__.py, nc_matmul "Transpose mode"). Each output column copies the
    stationary row its moving column selects. Assumption: the docs describe the mode only with an identity moving
    tile, so a moving tile whose columns are not one-hot 0/1 is refused rather than given a made-up meaning."""
    one_hot = np.isin(mv, (0.0, 1.0)).all() and bool((np.count_nonzero(mv, axis=0) == 1).all())
    if not one_hot:
        violate("nc_matmul.transpose_identity", "nisa.nc_matmul: is_transpose=True moves stationary through an "
                "identity moving tile; this moving tile has columns that are not one 1.0 among 0.0s (assumption: "
                "the docs give transpose mode no other meaning)")
    rows = np.argmax(mv, axis=0)
    return st[rows, :].T.copy()


@instruction
def nc_matmul(dst, stationary, moving, is_stationary_onezero=False, is_moving_onezero=False, is_transpose=False,
              accumulate=None, tile_position=(), tile_size=(), perf_mode=matmul_perf_mode.none, name=None):
    """``dst[M, N] (=|+=) stationary[K, M].T @ moving[K, N]`` on TensorE, fp32 accumulation in PSUM.

    With ``perf_mode=double_row`` (NeuronCore-v3+, fp8 inputs) the contraction spans the partition dim
    and a first free dim of 2: ``stationary [K, 2, M]``, ``moving [K, 2, N]``.
    """
    instr = "nc_matmul"
    on_chip(instr, "stationary", stationary, ("sbuf",))
    on_chip(instr, "moving", moving, ("sbuf",))
    on_chip(instr, "dst", dst, ("psum",))
    double_row = perf_mode is matmul_perf_mode.double_row
    if not isinstance(perf_mode, matmul_perf_mode):
        violate("nc_matmul.perf_mode", f"nisa.nc_matmul: perf_mode must be a nisa.matmul_perf_mode member, got "
                f"{perf_mode!r}")
    row_size, col_size = _matmul_tiling(tile_position, tile_size)
    for role, t in (("stationary", stationary), ("moving", moving)):
        if t.dtype not in MATMUL_INPUT_DTYPES:
            violate("nc_matmul.dtype", f"nisa.nc_matmul: {role} dtype {t.dtype.name} is not a TensorE input type "
                    "(allowed: float8_e4m3, float8_e5m2, bfloat16, float16, tfloat32, float32; cast integers to bf16 first)")
    if (stationary.dtype == dt.float32) != (moving.dtype == dt.float32):
        violate("nc_matmul.dtype", f"nisa.nc_matmul: fp32/tf32 only pairs with fp32/tf32 (stationary "
                f"{stationary.dtype.name}, moving {moving.dtype.name})")
    transpose_mode = bool(is_transpose) and generation() >= 3
    # transpose mode writes FP16/BF16 input as FP16/BF16 (nki/guides/architecture/trainium2_arch.rst)
    sixteen_bit_transpose = transpose_mode and dst.dtype == stationary.dtype and dst.dtype in (dt.float16, dt.bfloat16)
    if dst.dtype != dt.float32 and not sixteen_bit_transpose:
        violate("nc_matmul.dst_dtype", f"nisa.nc_matmul: dst must be float32 on NeuronCore-v2/v3 (or, with "
                f"is_transpose=True on NeuronCore-v3+, the FP16/BF16 dtype of stationary), got {dst.dtype.name}")
    st, mv = read2d(stationary).astype(np.float32), read2d(moving).astype(np.float32)
    # TensorE reads a tfloat32 operand's 10-bit mantissa (nki/api/nki.api.shared.rst, tbl-dtype)
    st = dt.round_to_tf32(st) if dt.is_tfloat32(stationary.dtype) else st
    mv = dt.round_to_tf32(mv) if dt.is_tfloat32(moving.dtype) else mv
    k, k2 = stationary.shape[0], moving.shape[0]
    if double_row:
        require_target(instr, "perf_mode=double_row", 3)
        for role, t in (("stationary", stationary), ("moving", moving)):
            if t.dtype not in FP8_MATMUL_DTYPES:
                violate("nc_matmul.perf_mode", f"nisa.nc_matmul: double_row needs float8_e4m3/float8_e5m2 operands; "
                        f"{role} is {t.dtype.name}")
            if t.ndim < 3 or t.shape[1] != 2:
                violate("nc_matmul.perf_mode", f"nisa.nc_matmul: double_row needs {role} shaped [K, 2, ...], got {t.shape}")
        if col_size != 128:
            violate("nc_matmul.perf_mode", "nisa.nc_matmul: double_row cannot be combined with column tiling")
        st = st.reshape(k, 2, -1).reshape(2 * k, -1)
        mv = mv.reshape(k2, 2, -1).reshape(2 * k2, -1)
    m, n = st.shape[1], mv.shape[1]
    if k != k2:
        violate("nc_matmul.tile_size", f"nisa.nc_matmul: contraction dims differ (stationary K={k}, moving K={k2})")
    for label, value, limit in (("K (partition dim)", k, row_size), ("M (stationary free size)", m, col_size),
                                ("N (moving free size)", n, MATMUL_MAX_N)):
        if value > limit:
            violate("nc_matmul.tile_size", f"nisa.nc_matmul: {label} = {value} exceeds the limit {limit}")
    if dst.shape[0] != m or dst.free_size != n:
        violate("nc_matmul.tile_size", f"nisa.nc_matmul: dst shape {dst.shape} must be [M={m}, N={n}]")
    # dst's size within one bank is on_chip's isa.psum_tile_fmax; only its placement is checked here.
    _check_one_bank(dst, int(cost.constant("psum_bank_bytes", target())))
    check_writable(instr, dst)
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/Inf operands propagate as TensorE's fp32 math does
        result = _transpose_mode_result(st, mv) if transpose_mode else st.T @ mv
    written = matmul_marks(dst).copy()  # a view of the marks where dst is contiguous; they are set below
    if accumulate is None:
        # inferred per location: a location a matmul wrote accumulates, another starts (nc_matmul, "Accumulation
        # mode"); overlapping accumulation regions (the convolution pattern) are correct from 0.6 (release notes)
        add = written.reshape(m, n)
    elif accumulate is True:
        if not written.all():
            violate("nc_matmul.accumulate", f"nisa.nc_matmul: accumulate=True onto {dst.name!r}, which no matmul has "
                    "written since it was allocated (or memset/tensor_copy overwrote it): undefined on hardware")
        add = True
    elif accumulate is False:
        add = False
    else:
        violate("nc_matmul.accumulate", f"nisa.nc_matmul: accumulate must be None, False or True, got {accumulate!r}")
    out = dst.array()
    if isinstance(add, np.ndarray):
        result = np.where(add, out.reshape(m, n).astype(np.float32) + result, result)
    elif add:
        result = out.reshape(m, n).astype(np.float32) + result
    out[...] = result.reshape(dst.shape)
    set_matmul_marks(dst, True)
    wide = [t.dtype for t in (stationary, moving) if t.dtype == dt.float32]  # fp32 or tfloat32
    in_dtype = (dt.tfloat32 if all(dt.is_tfloat32(d) for d in wide) else dt.float32) if wide else dt.bfloat16
    onezero = bool(is_stationary_onezero or is_moving_onezero)
    cycles = cost.matmul_cycles(n, in_dtype, target(), onezero=onezero)
    record("tensor", instr, cycles)


def _matmul_tiling(tile_position, tile_size):
    """(row_size, column_size) of the systolic-array tile a matmul uses (128, 128 when tiling is off)."""
    position, size = tuple(tile_position or ()), tuple(tile_size or ())
    if not position and not size:
        return MATMUL_MAX_K, MATMUL_MAX_M
    if len(position) != 2 or len(size) != 2:
        violate("nc_matmul.tiling", f"nisa.nc_matmul: tile_position {tile_position!r} and tile_size {tile_size!r} "
                "must both be set as 2-tuples")
    sizes = (32, 64, 128) if generation() >= 3 else (64, 128)
    for label, value in (("row_size", size[0]), ("column_size", size[1])):
        if value not in sizes:
            violate("nc_matmul.tiling", f"nisa.nc_matmul: tile_size {label} {value} must be one of {sizes} on "
                    f"this target")
    for label, start, value in (("start_row", position[0], size[0]), ("start_column", position[1], size[1])):
        if start % value or start + value > 128:
            violate("nc_matmul.tiling", f"nisa.nc_matmul: tile_position {label} {start} must be a multiple of {value} "
                    "inside the 128x128 array")
    return size[0], size[1]


def _check_one_bank(dst, bank):
    """PSUM allocations start on a bank boundary; a matmul dst must not straddle two banks."""
    start = dst._byte_offset % dst.storage.bytes_per_partition
    extent = sum((n - 1) * s for n, s in zip(dst.shape[1:], dst._byte_strides[1:])) + dst.dtype.itemsize
    if start // bank != (start + extent - 1) // bank:
        violate("nc_matmul.psum_bank", f"nisa.nc_matmul: dst {dst.name!r} covers bytes {start}..{start + extent - 1} of "
                f"each partition, crossing a PSUM bank boundary (banks are {bank} B); a matmul output must fit one bank")


@instruction
def nc_transpose(dst, data, engine=engine.unknown, name=None):
    """``dst[F, P] = data[P, F]`` on TensorE (up to 128x128, SBUF->PSUM) or VectorE (up to 32x32)."""
    instr = "nc_transpose"
    default = "tensor" if isinstance(dst, NkiTensor) and dst.buffer == "psum" else "vector"
    eng = engine_name(engine, instr, default, ("tensor", "vector"))
    if eng == "tensor":
        on_chip(instr, "data", data, ("sbuf",))
        on_chip(instr, "dst", dst, ("psum",))
        limit = TRANSPOSE_TENSOR_MAX
    else:
        on_chip(instr, "data", data)
        on_chip(instr, "dst", dst)
        limit = TRANSPOSE_VECTOR_MAX
    p, f = data.shape[0], data.free_size
    if p > limit or f > limit:
        violate("nc_transpose.size", f"nisa.nc_transpose: data {data.shape} exceeds {limit}x{limit} on the {eng} engine")
    if dst.shape[0] != f or dst.free_size != p:
        violate("nc_transpose.size", f"nisa.nc_transpose: dst shape {dst.shape} must be [{f}, {p}] for data {data.shape}")
    if dst.dtype != data.dtype:
        violate("nc_transpose.size", f"nisa.nc_transpose: dst dtype {dst.dtype.name} must equal data dtype "
                f"{data.dtype.name}")
    if eng == "tensor" and generation() < 3 and data.dtype != dt.float32:
        # NeuronCore-v2 has no transpose mode: TensorE transposes by a matmul, whose dst is float32 there; with dst
        # in data's dtype, only float32 data has a valid dst (FP16/BF16 PSUM output is a v3 transpose-mode feature)
        violate("nc_transpose.tensor_v2", f"nisa.nc_transpose: a Tensor Engine transpose on NeuronCore-v2 "
                f"(trn1/inf2) writes float32, so data must be float32, got {data.dtype.name}")
    write(instr, dst, read2d(data).T)
    if eng == "tensor":
        record("tensor", instr, cost.matmul_cycles(p, data.dtype, target()))
    else:
        record("vector", instr, cost.vector_cycles(f, 1, data.dtype, target()))


# -- element-wise ----------------------------------------------------------------------------------
@instruction
def tensor_copy(dst, src, engine=engine.unknown, name=None):
    """Copy ``src`` to ``dst`` (bit-exact for equal dtypes, otherwise through fp32)."""
    instr = "tensor_copy"
    on_chip(instr, "dst", dst)
    on_chip(instr, "src", src)
    same_layout(instr, "dst", dst, "src", src)
    eng = engine_name(engine, instr, "vector", ("vector", "scalar", "gpsimd"))
    if eng == "scalar" and generation() < 3:
        violate("tensor_copy.engine", "nisa.tensor_copy: ScalarE cannot run tensor_copy on NeuronCore-v2; use "
                "nisa.activation(op=nl.copy)")
    no_psum_on_gpsimd(instr, eng, dst, src)
    values = read2d(src)
    # equal dtypes copy bit for bit on every engine that runs tensor_copy, ScalarE from NeuronCore-v3 on
    # (nki/guides/architecture/trainium2_arch.rst); other dtypes convert through fp32
    if src.dtype != dst.dtype:
        values = dt.to_fp32(values)
    write(instr, dst, values)
    record(eng, instr, elementwise_cycles(eng, dst.free_size, 1, common_dtype(dst, src), "copy"))


@instruction
def tensor_tensor(dst, data1, data2, op, engine=engine.unknown, name=None):
    """``dst = data1 op data2`` element-wise (fp32 math; exact int32 on GpSimd; raw bits for bitvec ops)."""
    instr = "tensor_tensor"
    spec = alu_op(instr, "op", op)
    if spec.is_unary:
        violate("tensor_tensor.binary", f"nisa.tensor_tensor: op nl.{spec.name} is unary; tensor_tensor takes a "
                "binary operator")
    two_inputs(instr, dst, "data1", data1, "data2", data2)
    not_both_in_psum(instr, "data1", data1, "data2", data2)
    all_int32 = all(t.dtype in (dt.int32, dt.uint32) for t in (dst, data1, data2))
    any_psum = any(t.buffer == "psum" for t in (dst, data1, data2))
    if spec.name == "power":
        eng = engine_name(engine, instr, "gpsimd", ("vector", "gpsimd"))
        if eng != "gpsimd":
            violate("tensor_tensor.power_gpsimd", "nisa.tensor_tensor: nl.power runs on the GpSimd engine only")
        if any_psum:
            violate("tensor_tensor.power_gpsimd", "nisa.tensor_tensor: nl.power runs on GpSimd, which cannot access PSUM")
    else:
        if engine is not None and engine is not globals()["engine"].unknown and isinstance(engine, globals()["engine"]) \
                and engine.name not in ("vector", "gpsimd"):
            violate("tensor_tensor.engine", f"nisa.tensor_tensor: engine {engine.name} is not allowed; allowed: "
                    "vector, gpsimd")
        # The stub's GpSimd default is for int32 arithmetic; bitvec operators are described on VectorE.
        int_default = all_int32 and not any_psum and not spec.is_bitvec
        eng = engine_name(engine, instr, "gpsimd" if int_default else "vector", ("vector", "gpsimd"))
    no_psum_on_gpsimd(instr, eng, dst, data1, data2)
    a, b = read2d(data1), read2d(data2)
    if spec.is_bitvec:
        for role, t in (("dst", dst), ("data1", data1), ("data2", data2)):
            require_int(instr, role, t)
        result = bits_to(spec.bits(bits(a), bits(b)), dst.dtype)
    elif eng == "gpsimd" and all_int32 and spec.exact_int is not None:
        result = spec.exact_int(a.astype(np.int64), b.astype(np.int64))
    else:
        result = apply_alu(spec, dt.to_fp32(a), dt.to_fp32(b))
    write(instr, dst, result)
    record(eng, instr, elementwise_cycles(eng, dst.free_size, 2, common_dtype(dst, data1, data2), "generic"))


SCALAR_ENGINE_COMBOS = (("multiply", "add"), ("multiply", None), ("add", None))


@instruction
def tensor_scalar(dst, data, op0, operand0, reverse0=False, op1=None, operand1=None, reverse1=False,
                  engine=engine.unknown, name=None):
    """``dst = (data op0 operand0) op1 operand1``; operands are fp32 scalars or ``[P, 1]`` tiles."""
    instr = "tensor_scalar"
    spec0 = alu_op(instr, "op0", op0)
    on_chip(instr, "dst", dst)
    on_chip(instr, "data", data)
    same_layout(instr, "dst", dst, "data", data)
    if (op1 is None) != (operand1 is None):
        violate("tensor_scalar.op1_pair", "nisa.tensor_scalar: op1 and operand1 must be given together (or both None)")
    ops_ = [(spec0, operand0, reverse0)]
    if op1 is not None:
        spec1 = alu_op(instr, "op1", op1)
        if spec1.is_bitvec != spec0.is_bitvec:
            violate("tensor_scalar.same_kind", f"nisa.tensor_scalar: op0 {op0!r} and op1 {op1!r} must both be bitvec "
                    "or both arithmetic")
        ops_.append((spec1, operand1, reverse1))
    bitvec = spec0.is_bitvec
    eng = engine_name(engine, instr, "vector", ("vector", "scalar", "gpsimd"))
    if bitvec:
        if eng != "vector":
            violate("tensor_scalar.bitvec_vector", f"nisa.tensor_scalar: bitvec operators run on VectorE only, not {eng}")
        if not (dt.is_int(dst.dtype) and dt.is_int(data.dtype)):
            violate("alu.bitvec_int", f"nisa.tensor_scalar: bitvec operators need integer data and dst (data "
                    f"{data.dtype.name}, dst {dst.dtype.name})")
    else:
        for i, (spec, operand, _) in enumerate(ops_):
            require_fp32_tile(instr, f"operand{i}", operand, "tensor_scalar.fp32_operand")
            if spec.is_unary and operand is not None and not (is_number(operand) and operand == 0):
                violate("tensor_scalar.unary_operand", f"nisa.tensor_scalar: op{i} nl.{spec.name} is unary; "
                        f"operand{i} must be None or 0, got {operand!r}")
    if eng == "gpsimd" and not (spec0.name == "rsqrt" and op1 is None):
        violate("tensor_scalar.gpsimd_rsqrt", f"nisa.tensor_scalar: engine=gpsimd is only allowed for rsqrt "
                f"(got op0 nl.{spec0.name}{', op1 ' + repr(op1) if op1 is not None else ''})")
    if eng == "scalar":
        combo = (spec0.name, ops_[1][0].name if len(ops_) > 1 else None)
        if combo not in SCALAR_ENGINE_COMBOS:
            rule = "tensor_scalar.scalar_combos" if generation() >= 3 else "tensor_scalar.scalar_combos_v2"
            violate(rule, f"nisa.tensor_scalar: ScalarE only supports nl.multiply and nl.add as (op0, op1) = "
                    f"(multiply, add), (multiply, None) or (add, None); got {combo}")
    no_psum_on_gpsimd(instr, eng, dst, data, operand0, operand1)
    p = data.shape[0]
    if bitvec:
        value = bits(read2d(data)) if dt.is_int(data.dtype) else None
        for i, (spec, operand, reverse) in enumerate(ops_):
            other = bits_scalar(column_operand(instr, f"operand{i}", operand if operand is not None else 0, p,
                                               "tensor_scalar.operand_shape", fp32=False), instr, f"operand{i}")
            value = np.asarray(spec.bits(other, value) if reverse else spec.bits(value, other), dtype=np.uint32)
        result = bits_to(value, dst.dtype)
    else:
        value = dt.to_fp32(read2d(data))
        for i, (spec, operand, reverse) in enumerate(ops_):
            other = column_operand(instr, f"operand{i}", 0.0 if operand is None else operand, p,
                                   "tensor_scalar.operand_shape")
            value = apply_alu(spec, value, other, reverse)
        result = value
    write(instr, dst, result)
    record(eng, instr, elementwise_cycles(eng, dst.free_size, 1, common_dtype(dst, data), "tensor_scalar"))


# nki.language's functions that run on Scalar Engine compute over numpy's full domain (nl.sin reduces the argument
# first: nki/api/nki.api.shared.rst, tbl-act-func note); only a kernel's own nisa activation meets the range limits.
_VALID_RANGE_APPLIES = contextvars.ContextVar("nkisim_activation_valid_range", default=True)


@contextlib.contextmanager
def full_domain():
    """Within: Scalar Engine activations as ``nki.language`` functions issue them, without the Valid Input Range
    limit (assumption: the docs state the range reduction for nl.sin only, and describe the other nl functions as
    numpy's)."""
    token = _VALID_RANGE_APPLIES.set(False)
    try:
        yield
    finally:
        _VALID_RANGE_APPLIES.reset(token)


def activation_fn(instr, op):
    """The tbl-act-func function for ``op`` as f(x, relu_param). Inputs outside the function's Valid Input Range,
    where Scalar Engine's output is invalid, give NaN and an :class:`InvalidActivationInputWarning` (assumption: the
    docs give no value there, and sin's extrapolated polynomial has no published coefficients)."""
    name = op_name(op)
    name = ACTIVATION_ALIASES.get(name, name)
    fn = ACTIVATION_TABLE.get(name)
    if fn is None:
        violate("act.in_table", f"nisa.{instr}: op {op!r} is not an activation function of tbl-act-func; allowed: "
                + ", ".join(sorted(ACTIVATION_TABLE)))
    if name not in ACTIVATION_VALID_RANGE:
        return name, fn

    def checked(x, relu_param):
        result = np.asarray(fn(x, relu_param), dtype=np.float32)
        if not _VALID_RANGE_APPLIES.get():
            return result
        outside = outside_valid_range(name, x)
        if outside.any():
            low, high, signed = ACTIVATION_VALID_RANGE[name]
            span = f"+-[{low:.6g}, {high:.6g}]" if signed else f"[{low:.6g}, {high:.6g}]"
            warnings.warn(InvalidActivationInputWarning(
                f"nisa.{instr}(op=nl.{name}): {int(outside.sum())} input(s) outside its Valid Input Range {span} "
                f"(e.g. {float(np.asarray(x)[outside].flat[0])!r}), where Scalar Engine's output is invalid; written as "
                "NaN here (nki/api/nki.api.shared.rst, tbl-act-func)" + (
                    "; nl.sin reduces the argument first" if name == "sin" else "")), stacklevel=4)
            result = np.where(outside, np.float32(np.nan), result)
        return result

    return name, checked


def scalar_engine_input(instr, data, scale, bias):
    """``data * scale + bias`` in fp32 with activation's scale/bias rules."""
    p = data.shape[0]
    require_fp32_tile(instr, "scale", scale, "activation.scale")
    x = dt.to_fp32(read2d(data)) * column_operand(instr, "scale", scale, p, "activation.scale")
    if bias is not None:
        if isinstance(bias, NkiTensor) and dt.is_tfloat32(bias.dtype):
            violate("activation.bias", f"nisa.{instr}: bias {bias.name!r} is tfloat32; bias may be any dtype but "
                    "tfloat32")
        if not isinstance(bias, NkiTensor) and generation() < 3:
            violate("activation.bias", f"nisa.{instr}: on NeuronCore-v2 (trn1/inf2) bias must be a [P, 1] tile, not a "
                    "scalar")
        x = x + column_operand(instr, "bias", bias, p, "activation.bias")
    return x


class _Accumulators:
    """Per-engine reduce registers (one fp32 per lane), shared by the accumulating instructions."""

    def __init__(self):
        self.values = {}

    def get(self, engine_name_, p):
        regs = self.values.get(engine_name_)
        return None if regs is None or regs.shape[0] < p else regs[:p]

    def set(self, engine_name_, values):
        self.values[engine_name_] = np.asarray(values, dtype=np.float32).reshape(-1, 1)


def accumulators():
    context = __import__("dste.nkisim.runtime", fromlist=["current"]).current()
    if context.isa_accumulators is None:
        context.isa_accumulators = _Accumulators()
    return context.isa_accumulators


def write_reduce_res(instr, reduce_res, values, p):
    on_chip(instr, "reduce_res", reduce_res)
    if reduce_res.shape[0] != p or reduce_res.free_size != 1:
        violate("activation.reduce_res" if "activ" in instr else "vector.reduce_res",
                f"nisa.{instr}: reduce_res must be [{p}, 1], got {reduce_res.shape}")
    write(instr, reduce_res, np.asarray(values, dtype=np.float32).reshape(p, 1))


@instruction
def activation(dst, op, data, bias=None, scale=1.0, reduce_op=None, reduce_res=None, reduce_cmd=reduce_cmd.idle,
               name=None):
    """``dst = op(data * scale + bias)`` on ScalarE in fp32, with the reduce_regs add-reduction."""
    instr = "activation"
    function, fn = activation_fn(instr, op)
    if function == "reciprocal" and bias is not None and generation() < 3:
        # "nki.isa.activation(op=nl.reciprocal) doesn't support setting bias on NeuronCore-v2" (nki.api.shared.rst)
        violate("activation.reciprocal_bias", f"nisa.{instr}: op=nl.reciprocal takes no bias on NeuronCore-v2 "
                f"(trn1/inf2), got bias {getattr(bias, 'name', bias)!r}")
    on_chip(instr, "dst", dst)
    on_chip(instr, "data", data)
    same_layout(instr, "dst", dst, "data", data)
    p = data.shape[0]
    x = scalar_engine_input(instr, data, scale, bias)
    with np.errstate(all="ignore"):
        result = np.asarray(fn(x, 0.0), dtype=np.float32)
    cmds = globals()["reduce_cmd"]
    if not isinstance(reduce_cmd, cmds):
        violate("reduce_cmd.value", f"nisa.activation: reduce_cmd must be a nisa.reduce_cmd member, got {reduce_cmd!r}")
    if reduce_op is not None and op_name(reduce_op) != "add":
        violate("activation.reduce_op", f"nisa.activation: reduce_op must be nl.add, got {reduce_op!r}")
    # idle leaves reduce_regs as they are, reduce_res given or not: a reduce_res reads them out (NKI 0.2 fixed the
    # default from zero-and-accumulate to idle, release-notes/components/nki.rst)
    acc = accumulators()
    regs = acc.get("scalar", p)
    if reduce_cmd in (cmds.reset, cmds.reset_reduce) or regs is None:
        regs = np.zeros((p, 1), dtype=np.float32)
    if reduce_cmd in (cmds.reduce, cmds.reset_reduce):
        regs = regs + result.sum(axis=1, dtype=np.float32)[:, None]
    acc.set("scalar", regs)
    write(instr, dst, result)
    if reduce_res is not None:
        write_reduce_res(instr, reduce_res, regs, p)
    record("scalar", instr, cost.scalar_cycles(dst.free_size, target()))


@instruction
def iota(dst, pattern, offset=0, channel_multiplier=0, name=None):
    """``dst[p, i...] = offset + p * channel_multiplier + sum(i_k * step_k)`` (int32 math, GpSimd, SBUF)."""
    instr = "iota"
    on_chip(instr, "dst", dst, ("sbuf",))
    values = affine_pattern(instr, "iota.pattern", pattern, offset, channel_multiplier, dst)
    result = values.astype(np.int32)
    if dt.is_float(dst.dtype):
        result = result.astype(np.float32)
    write(instr, dst, result)
    record("gpsimd", instr, cost.gpsimd_cycles(dst.free_size, 1, target()))


def affine_pattern(instr, rule, pattern, offset, channel_multiplier, dst):
    """``offset + p * channel_multiplier + sum(i_k * step_k)`` as int64 [P, free] (iota / affine_select)."""
    try:
        pattern = [(step, num) for step, num in pattern]
    except (TypeError, ValueError):
        violate(rule, f"nisa.{instr}: pattern must be [[step, num], ...], got {pattern!r}")
    offset = _register_value(offset)
    # the stubs give an int32 offset and an int32 channel multiplier (nki/api/nki/isa/__init__.py, iota); int() would
    # truncate 2.5 to 2 where the compiler refuses it
    named = [("offset", offset), ("channel_multiplier", channel_multiplier)]
    named += [(f"pattern step/num {value!r}", value) for pair in pattern for value in pair]
    for what, value in named:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or not (
                -2**31 <= int(value) < 2**31):
            violate(rule, f"nisa.{instr}: {what} must be an int32, got {value!r}")
    pattern = [(int(step), int(num)) for step, num in pattern]
    offset, channel_multiplier = int(offset), int(channel_multiplier)
    if not 1 <= len(pattern) <= 4:
        violate(rule, f"nisa.{instr}: pattern has {len(pattern)} dims; 1 to 4 are allowed")
    count = int(np.prod([num for _, num in pattern]))
    if count != dst.free_size:
        violate(rule, f"nisa.{instr}: pattern yields {count} elements per partition, dst holds {dst.free_size}")
    values = np.zeros([num for _, num in pattern], dtype=np.int64)
    for axis, (step, num) in enumerate(pattern):
        shape = [1] * len(pattern)
        shape[axis] = num
        values = values + (np.arange(num, dtype=np.int64) * step).reshape(shape)
    partition = np.arange(dst.shape[0], dtype=np.int64)[:, None] * channel_multiplier
    return offset + partition + values.reshape(1, -1)


def _register_value(value):
    return getattr(value, "value", value)


@instruction
def memset(dst, value, engine=engine.unknown, name=None):
    """Fill ``dst`` with a constant: an int for integer dtypes; a float, or an int the dtype holds exactly, for
    float dtypes."""
    instr = "memset"
    on_chip(instr, "dst", dst)
    eng = engine_name(engine, instr, "vector", ("vector", "scalar", "gpsimd"))
    if eng == "scalar":
        # memset's engine list is Vector or GpSimd; Scalar is kept for kernels written against NKI 0.3 notes.
        violate("memset.engine", "nisa.memset: engine must be nisa.engine.vector or nisa.engine.gpsimd, not scalar")
    no_psum_on_gpsimd(instr, eng, dst)
    if dt.is_int(dst.dtype):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            violate("memset.value_type", f"nisa.memset: value {value!r} ({type(value).__name__}) does not match dtype "
                    f"{dst.dtype.name}; use an int")
        info = np.iinfo(dst.dtype)
        if not info.min <= int(value) <= info.max:
            violate("memset.value_type", f"nisa.memset: value {value} is outside the range [{info.min}, {info.max}] of "
                    f"{dst.dtype.name}")
    elif isinstance(value, (bool, np.bool_)) or not isinstance(value, (float, np.floating, int, np.integer)):
        violate("memset.value_type", f"nisa.memset: value {value!r} ({type(value).__name__}) does not match dtype "
                f"{dst.dtype.name}; use a float")
    elif isinstance(value, (int, np.integer)) and float(dt.cast(np.float64(value), dst.dtype)) != int(value):
        violate("memset.value_type", f"nisa.memset: the int value {value} is not exactly a {dst.dtype.name}; use a "
                "float")
    write(instr, dst, np.full((dst.shape[0], dst.free_size), value))
    record(eng, instr, elementwise_cycles(eng, dst.free_size, 1, dst.dtype, "copy"))


@instruction
def tensor_reduce(dst, op, data, axis, negate=False, keepdims=False, name=None):
    """Reduce ``data`` over trailing free axes (VectorE; arithmetic in fp32, bitvec on raw bits)."""
    instr = "tensor_reduce"
    spec = alu_op(instr, "op", op)
    if not spec.legal_reduction:
        legal = sorted(n for n, s in __import__("dste.nkisim.isa_alu", fromlist=["ALU_TABLE"]).ALU_TABLE.items()
                       if s.legal_reduction)
        violate("alu.legal_reduction", f"nisa.tensor_reduce: op nl.{spec.name} is not a legal reduction op; allowed: "
                + ", ".join(legal))
    on_chip(instr, "dst", dst)
    on_chip(instr, "data", data)
    axes = sorted({int(a) for a in ((axis,) if isinstance(axis, (int, np.integer)) else axis)})
    nd = data.ndim
    axes = [a + nd if a < 0 else a for a in axes]
    if not axes or 0 in axes or axes != list(range(axes[0], nd)):
        violate("tensor_reduce.axis", f"nisa.tensor_reduce: axis {axis} must be consecutive trailing free axes ending "
                f"at {nd - 1} (never 0)")
    keep_shape = data.shape[: axes[0]]
    inner = int(np.prod(data.shape[axes[0]:]))
    outer = int(np.prod(keep_shape[1:])) if len(keep_shape) > 1 else 1
    if dst.shape[0] != data.shape[0] or dst.free_size != outer:
        violate("tensor_reduce.dst_size", f"nisa.tensor_reduce: dst {dst.shape} must hold {outer} elements per "
                f"partition for data {data.shape}")
    values = read2d(data).reshape(data.shape[0], outer, inner)
    if spec.is_bitvec:
        require_int(instr, "data", data)
        require_int(instr, "dst", dst)
        if negate:
            violate("tensor_reduce.negate_arith", "nisa.tensor_reduce: negate applies to arithmetic reductions only")
        result = bits_to(spec.bits.reduce(bits(values), axis=2), dst.dtype)
    else:
        result = reduce_alu(spec, dt.to_fp32(values), axis=2)
        if negate:
            result = -result
    write(instr, dst, result)
    record("vector", instr, cost.vector_cycles(data.free_size, 1, common_dtype(data), target()))


@instruction
def tensor_tensor_scan(dst, data0, data1, initial, op0, op1, reverse0=False, reverse1=False, name=None):
    """Per partition: ``r[i] = (data0[i] op0 r[i-1]) op1 data1[i]`` with ``r[-1] = initial`` (fp32)."""
    instr = "tensor_tensor_scan"
    spec0, spec1 = alu_op(instr, "op0", op0), alu_op(instr, "op1", op1)
    two_inputs(instr, dst, "data0", data0, "data1", data1)
    not_both_in_psum(instr, "data0", data0, "data1", data1)
    if spec0.is_bitvec or spec1.is_bitvec or spec0.is_unary or spec1.is_unary:
        violate("alu.in_table", "nisa.tensor_tensor_scan: op0 and op1 must be binary arithmetic operators")
    p = data0.shape[0]
    a, b = dt.to_fp32(read2d(data0)), dt.to_fp32(read2d(data1))
    init = column_operand(instr, "initial", initial, p, "tensor_scalar.operand_shape")
    prev = np.broadcast_to(np.asarray(init, dtype=np.float32).reshape(-1), (p,)).astype(np.float32)
    # The recurrence is sequential along the free axis, each step rounded to fp32 as the engine computes it (no
    # wider running sum, even for add/add); each step is vectorised over partitions.
    result = np.empty_like(a)
    for i in range(a.shape[1]):
        tmp = apply_alu(spec0, a[:, i], prev, reverse0)
        prev = apply_alu(spec1, tmp, b[:, i], reverse1)
        result[:, i] = prev
    write(instr, dst, result)
    record("vector", instr, cost.vector_cycles(dst.free_size, 2, common_dtype(dst, data0, data1), target()))


PREDICATE_DTYPES = (dt.uint8, dt.uint16, dt.uint32)


@instruction
def tensor_copy_predicated(dst, src, predicate, reverse_pred=False, name=None):
    """Where ``predicate`` is nonzero (zero with ``reverse_pred``), copy ``src`` into ``dst``; elsewhere keep ``dst``."""
    instr = "tensor_copy_predicated"
    on_chip(instr, "dst", dst)
    on_chip(instr, "predicate", predicate)
    same_layout(instr, "dst", dst, "predicate", predicate)
    if isinstance(src, NkiTensor):
        on_chip(instr, "src", src)
        same_layout(instr, "dst", dst, "src", src)
        if src.dtype != dst.dtype:
            violate("tensor_copy_predicated.same_dtype", f"nisa.tensor_copy_predicated: src {src.name!r} is "
                    f"{src.dtype.name} and dst {dst.name!r} is {dst.dtype.name}; src and dst must share one dtype")
        not_both_in_psum(instr, "src", src, "predicate", predicate, rule="tensor_copy_predicated.psum")
        values = read2d(src)
    elif is_number(src):
        values = np.full((dst.shape[0], dst.free_size), src)
    else:
        violate("isa.buffer", f"nisa.tensor_copy_predicated: src must be a tile or a number, got {src!r}")
    if predicate.dtype not in PREDICATE_DTYPES:
        violate("tensor_copy_predicated.predicate_dtype", f"nisa.tensor_copy_predicated: predicate dtype must be "
                f"uint8, uint16 or uint32, got {predicate.dtype.name}")
    mask = read2d(predicate) != 0
    if reverse_pred:
        mask = ~mask
    check_writable(instr, dst)
    current = read2d(dst)
    if not isinstance(src, NkiTensor):
        values = dt.cast(dt.to_fp32(values), dst.dtype)
    write(instr, dst, np.where(mask, values, current))
    record("vector", instr, cost.vector_cycles(dst.free_size, 2, dst.dtype, target()))


from .isa_vector import (  # noqa: E402,F401 - the rest of the official nki.isa namespace
    bn_aggr, bn_stats, dropout, exponential, max8, nc_find_index8, nc_match_replace8, nc_stream_shuffle, rand2,
    rand_get_state, rand_set_state, range_select, reciprocal, rng, scalar_tensor_tensor, select_reduce,
    set_rng_seed, tensor_scalar_cumulative, tensor_scalar_reduce,
)
from .isa_gpsimd import (  # noqa: E402,F401
    affine_select, local_gather, nc_n_gather, nonzero_with_count, sequence_bounds, tensor_partition_reduce, topk,
)
from .isa_misc import (  # noqa: E402,F401
    VirtualRegister, activate2, activation_reduce, core_barrier, dma_compute, dma_transpose, nc_matmul_mx,
    quantize_mx, register_alloc, register_load, register_move, register_store, sendrecv,
)
