"""GpSimd Engine instructions of ``nki.isa``: selection, gathers, partition reductions, top-k, bounds.

Each follows its docstring in ``nki/api/nki/isa/__init__.py``. GpSimd has eight cores, each wired to
16 consecutive SBUF partitions; instructions that work per core (local_gather, nonzero_with_count)
model that grouping. GpSimd never touches PSUM.
"""

import numpy as np

from . import cost, ops
from . import dtypes as dt
from .isa_alu import ALU_TABLE, op_name
from .isa_common import (
    alu_op, bits, bits_to, check_version, instruction, is_number, on_chip, read2d, record, reduce_alu, require_target, target, write,
)
from .rules import violate

CORE_PARTITIONS = 16


def _cycles(elems, n_inputs=1):
    return cost.gpsimd_cycles(elems, n_inputs, target())


@instruction
def affine_select(dst, pattern, channel_multiplier, on_true_tile, on_false_value, cmp_op=ops.equal, offset=0,
                  name=None):
    """``dst = on_true_tile where cmp_op(affine(p, i), 0) else on_false_value`` (GpSimd, SBUF)."""
    from .isa import affine_pattern

    instr = "affine_select"
    on_chip(instr, "dst", dst, ("sbuf",))
    on_chip(instr, "on_true_tile", on_true_tile, ("sbuf",))
    if on_true_tile.shape[0] != dst.shape[0] or on_true_tile.free_size != dst.free_size:
        violate("isa.same_shape", f"nisa.{instr}: on_true_tile {on_true_tile.shape} and dst {dst.shape} must match")
    spec = alu_op(instr, "cmp_op", cmp_op)
    # isa L1789 ``predicate = cmp_op(affine_value, 0)``, L1835 ":param cmp_op: comparison operator": one of the
    # comparisons of tbl-aluop (nki.api.shared.rst L102-112)
    if spec.name not in COMPARISON_OPS:
        violate("affine_select.cmp_op", f"nisa.{instr}: cmp_op must be a comparison operator ("
                + ", ".join(f"nl.{n}" for n in COMPARISON_OPS) + f"), got nl.{spec.name}")
    if not is_number(on_false_value):
        violate("affine_select.on_false", f"nisa.{instr}: on_false_value must be a float32 value, got {on_false_value!r}")
    affine = affine_pattern(instr, "iota.pattern", pattern, offset, channel_multiplier, dst).astype(np.float32)
    keep = spec.fp32(affine, np.float32(0)) != 0
    true_values = read2d(on_true_tile)
    if on_true_tile.dtype != dst.dtype:
        true_values = dt.to_fp32(true_values)
    fill = dt.cast(np.float32(on_false_value), dst.dtype)
    write(instr, dst, np.where(keep, dt.cast(true_values, dst.dtype), fill))
    record("gpsimd", instr, _cycles(dst.free_size))


COMPARISON_OPS = ("equal", "not_equal", "greater_equal", "greater", "less_equal", "less")

PARTITION_REDUCE_OPS = {"add": "add", "average": "add", "maximum": "maximum", "max": "maximum",
                        "bitwise_or": "bitwise_or", "bitwise_and": "bitwise_and"}


@instruction
def tensor_partition_reduce(dst, op, data, name=None):
    """Reduce ``data`` across its partitions into one partition (GpSimd)."""
    instr = "tensor_partition_reduce"
    name_ = op_name(op)
    if name_ not in PARTITION_REDUCE_OPS:
        violate("tensor_partition_reduce.op", f"nisa.{instr}: op {op!r} is not allowed; allowed: add, average, max, "
                "bitwise_or, bitwise_and")
    on_chip(instr, "dst", dst, ("sbuf",))
    on_chip(instr, "data", data, ("sbuf",))
    if dst.shape[0] != 1 or dst.free_size != data.free_size:
        violate("isa.same_shape", f"nisa.{instr}: dst must be [1, {data.free_size}] for data {data.shape}, got "
                f"{dst.shape}")
    spec = ALU_TABLE[PARTITION_REDUCE_OPS[name_]]
    values = read2d(data)
    if spec.is_bitvec:
        for role, t in (("data", data), ("dst", dst)):
            if not dt.is_int(t.dtype):
                violate("alu.bitvec_int", f"nisa.{instr}: {role} must be an integer dtype for nl.{spec.name}")
        result = bits_to(spec.bits.reduce(bits(values), axis=0)[None, :], dst.dtype)
    else:
        result = reduce_alu(spec, dt.to_fp32(values), axis=0)[None, :]
        if name_ == "average":
            result = result / np.float32(data.shape[0])
    write(instr, dst, result)
    record("gpsimd", instr, _cycles(data.free_size, data.shape[0]))


LOCAL_GATHER_ELEMS = (1, 2, 4, 8, 16, 32)


@instruction
def local_gather(dst, src_buffer, index, num_elem_per_idx=1, num_valid_indices=None, name=None):
    """Per GpSimd core (16 partitions): each partition gathers, along its own free axis, runs of
    ``num_elem_per_idx`` elements starting at the core's shared element offsets ``index`` (flattened partition
    first)."""
    instr = "local_gather"
    for role, t in (("dst", dst), ("src_buffer", src_buffer), ("index", index)):
        on_chip(instr, role, t, ("sbuf",))
    p = src_buffer.shape[0]
    if index.shape[0] != p or p % CORE_PARTITIONS:
        violate("local_gather.shape", f"nisa.{instr}: src_buffer and index need the same partition count, a multiple "
                f"of 16 (src_buffer {src_buffer.shape}, index {index.shape})")
    if index.dtype != dt.uint16:
        violate("local_gather.shape", f"nisa.{instr}: index must be uint16, got {index.dtype.name}")
    if num_elem_per_idx not in LOCAL_GATHER_ELEMS:
        violate("local_gather.shape", f"nisa.{instr}: num_elem_per_idx {num_elem_per_idx} must be one of "
                f"{LOCAL_GATHER_ELEMS}")
    if dst.dtype != src_buffer.dtype:
        violate("local_gather.shape", f"nisa.{instr}: dst dtype {dst.dtype.name} must equal src_buffer dtype "
                f"{src_buffer.dtype.name} (no casting)")
    per_core = index.free_size * CORE_PARTITIONS
    valid = per_core if num_valid_indices is None else int(num_valid_indices)
    if valid > per_core or valid > 4096:
        violate("local_gather.shape", f"nisa.{instr}: {valid} indices per core; at most {min(per_core, 4096)} allowed")
    cores = p // CORE_PARTITIONS
    gathered = valid * num_elem_per_idx  # per partition
    if dst.shape[0] != p or dst.free_size < gathered:
        violate("local_gather.shape", f"nisa.{instr}: dst {dst.shape} cannot hold the {gathered} elements each "
                f"partition gathers ({valid} indices x {num_elem_per_idx})")
    if dst.free_size != gathered:
        # NKI 0.6 Known Issues: num_elem_per_idx "is currently ignored unless num_valid_indices * num_elem_per_idx ==
        # dst.size / dst.shape[0]", so a larger dst gathers something else on a device
        violate("local_gather.dst-size", f"nisa.{instr}: dst holds {dst.free_size} elements per partition, not the "
                f"{gathered} each partition gathers ({valid} indices x {num_elem_per_idx}); NKI 0.6 ignores "
                "num_elem_per_idx unless they are equal, so size dst to what is gathered")
    # The SDK's NumPy semantics (nki/test/test_nki_isa_local_gather.py, NUMPY_SEMANTICS, linked from the docstring
    # as the "equivalent numpy implementation"): per core, indices_1d = index[core rows].flatten(order='F')[:valid]
    # and out[core rows] = np.take(src_buffer[core rows], indices_1d, axis=1). Every partition of a core gathers
    # from its own free axis at the core's shared offsets; the example's indices are element offsets
    # (index_hw = index * num_elem_per_idx over a [128, 512, num_elem_per_idx] src_buffer).
    src = read2d(src_buffer)
    out = read2d(dst).copy()
    idx = read2d(index).astype(np.int64)
    runs = np.arange(num_elem_per_idx)
    for core in range(cores):  # eight independent cores
        rows = slice(core * CORE_PARTITIONS, (core + 1) * CORE_PARTITIONS)
        offsets = idx[rows].T.reshape(-1)[:valid]  # the partition dimension first (order='F')
        picks = (offsets[:, None] + runs[None, :]).reshape(-1)
        if picks.size and picks.max() >= src.shape[1]:
            violate("local_gather.shape", f"nisa.{instr}: index {int(offsets.max())} + {num_elem_per_idx} elements "
                    f"reaches past the {src.shape[1]} elements of a src_buffer partition (undefined on hardware)")
        out[rows, :gathered] = src[rows][:, picks]
    write(instr, dst, out)
    record("gpsimd", instr, _cycles(gathered))


@instruction
def nc_n_gather(dst, data, indices, name=None):
    """Per partition: ``dst[p, j] = flat(data[p])[indices[p, j]]`` (GpSimd, SBUF)."""
    instr = "nc_n_gather"
    for role, t in (("dst", dst), ("data", data), ("indices", indices)):
        on_chip(instr, role, t, ("sbuf",))
    p, f = data.shape[0], data.free_size
    if indices.dtype != dt.uint32:
        violate("nc_n_gather.operands", f"nisa.{instr}: indices must be uint32, got {indices.dtype.name}")
    if dst.dtype != data.dtype:
        violate("nc_n_gather.operands", f"nisa.{instr}: dst dtype {dst.dtype.name} must equal data dtype {data.dtype.name}")
    if indices.shape[0] != p or dst.shape[0] != p or dst.free_size != indices.free_size:
        violate("nc_n_gather.operands", f"nisa.{instr}: data {data.shape}, indices {indices.shape} and dst {dst.shape} "
                "need the same partitions, and dst the indices' elements per partition")
    idx = read2d(indices).astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= f):
        violate("nc_n_gather.operands", f"nisa.{instr}: indices must lie in [0, {f}); found {int(idx.max())}")
    write(instr, dst, np.take_along_axis(read2d(data), idx, axis=1))
    record("gpsimd", instr, _cycles(indices.free_size))


@instruction
def nonzero_with_count(dst, src, index_offset=0, padding_val=-1, name=None):
    """On partitions 0, 16, ..., 112: indices of nonzeros (+ index_offset), padding, then the count (GpSimd)."""
    instr = "nonzero_with_count"
    require_target(instr, "nisa.nonzero_with_count", 3)
    on_chip(instr, "dst", dst, ("sbuf",))
    on_chip(instr, "src", src, ("sbuf",))
    if src.dtype not in (dt.float32, dt.int32) or dst.dtype != dt.int32:
        violate("nonzero_with_count.operands", f"nisa.{instr}: src must be float32/int32 and dst int32 (src "
                f"{src.dtype.name}, dst {dst.dtype.name})")
    if dst.shape[0] != src.shape[0] or dst.free_size != src.free_size + 1:
        violate("nonzero_with_count.operands", f"nisa.{instr}: dst must be [{src.shape[0]}, {src.free_size + 1}], got "
                f"{dst.shape}")
    for label, value in (("index_offset", index_offset), ("padding_val", padding_val)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            violate("nonzero_with_count.operands", f"nisa.{instr}: {label} must be an int32, got {value!r}")
    x = read2d(src)
    out = read2d(dst).astype(np.int64).copy()
    t = src.free_size
    for row in range(0, src.shape[0], CORE_PARTITIONS):  # each core's partition 0 only
        hits = np.flatnonzero(x[row] != 0)
        line = np.full(t + 1, int(padding_val), dtype=np.int64)
        line[: hits.size] = hits + int(index_offset)
        line[t] = hits.size
        out[row] = line
    write(instr, dst, out)
    record("gpsimd", instr, _cycles(t))


@instruction
def topk(val_dst, idx_dst, src, n, name=None):
    """The K largest of the first ``n`` elements of the 16-partition snake (element e at partition e % 16,
    column e // 16 of each 16-partition group), ascending, with their indices (GpSimd)."""
    instr = "topk"
    check_version("nisa.topk", "0.6")
    for role, t in (("val_dst", val_dst), ("idx_dst", idx_dst), ("src", src)):
        on_chip(instr, role, t, ("sbuf",))
    p = src.shape[0]
    k = val_dst.free_size
    problems = []
    if src.dtype != dt.bfloat16 or val_dst.dtype != dt.bfloat16:
        problems.append("src and val_dst must be bfloat16")
    if idx_dst.dtype != dt.uint32:
        problems.append("idx_dst must be uint32")
    if p % CORE_PARTITIONS or val_dst.shape[0] != p or idx_dst.shape[0] != p or idx_dst.free_size != k:
        problems.append("partitions must match and be a multiple of 16; val_dst and idx_dst [P, K]")
    if not isinstance(n, (int, np.integer)) or not 8 <= n < 65536:
        problems.append(f"8 <= n < 65536 (n={n!r})")
    elif not 1 <= k <= n or k >= 32768:
        problems.append(f"1 <= K < 32768 and K <= n (K={k})")
    elif src.free_size < -(-int(n) // 16):
        problems.append(f"src free dim >= ceil(n / 16) = {-(-int(n) // 16)}")
    if problems:
        violate("topk.operands", f"nisa.{instr}: " + "; ".join(problems))
    x = dt.to_fp32(read2d(src))
    vals = np.empty((p, k), dtype=np.float32)
    idxs = np.empty((p, k), dtype=np.int64)
    for g in range(0, p, CORE_PARTITIONS):
        snake = x[g:g + CORE_PARTITIONS].T.reshape(-1)[: int(n)]  # element e = column e // 16, partition e % 16
        order = np.argsort(-snake, kind="stable")[:k][::-1]
        vals[g:g + CORE_PARTITIONS] = snake[order]
        idxs[g:g + CORE_PARTITIONS] = order
    write(instr, val_dst, vals)
    write(instr, idx_dst, idxs)
    # topk docstring: 4*n + K GpSimd cycles per partition.
    record("gpsimd", instr, float(4 * int(n) + k))


@instruction
def sequence_bounds(dst, segment_ids, name=None):
    """For each element: [start, end) of its run of equal segment ids (end one past the run); padding (id 0) gets
    [n, -1] (GpSimd)."""
    instr = "sequence_bounds"
    on_chip(instr, "dst", dst, ("sbuf",))
    on_chip(instr, "segment_ids", segment_ids, ("sbuf",))
    n = segment_ids.free_size
    if segment_ids.shape[0] != 1 or dst.shape[0] != 1 or dst.free_size != 2 * n:
        violate("sequence_bounds.operands", f"nisa.{instr}: segment_ids must be [1, n] and dst [1, 2, n] (got "
                f"{segment_ids.shape}, {dst.shape})")
    for role, t in (("dst", dst), ("segment_ids", segment_ids)):
        if t.dtype not in (dt.float32, dt.int32):
            violate("sequence_bounds.operands", f"nisa.{instr}: {role} must be float32 or int32, got {t.dtype.name}")
    # The SDK's NumPy semantics (nki/test/test_nki_isa_sequence_bounds.py L55-92, compute_sequence_bounds): a
    # segment is a run of equal neighbouring ids; start is the run's first index, end one past its last
    # (max_bounds[i] = i + 1), so [0,1,1,2,2,2,0,3,3] ends [-1,3,3,6,6,6,-1,9,9] (L24-30).
    ids = read2d(segment_ids)[0]
    bounds = np.concatenate(([0], np.flatnonzero(ids[1:] != ids[:-1]) + 1, [n]))  # runs [bounds[k], bounds[k+1])
    run = np.repeat(np.arange(bounds.size - 1), np.diff(bounds))
    padding = ids == 0
    start = np.where(padding, n, bounds[:-1][run])
    end = np.where(padding, -1, bounds[1:][run])
    write(instr, dst, np.stack([start, end])[None, :, :].reshape(1, -1))
    record("gpsimd", instr, _cycles(n))
