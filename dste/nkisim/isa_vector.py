"""Vector Engine instructions of ``nki.isa`` beyond the core element-wise ones (and the PRNG family).

Each follows its docstring in ``nki/api/nki/isa/__init__.py``. The accumulating instructions share
one set of Vector Engine reduce registers per run (``isa.accumulators``), as the docs describe.
Random numbers come from a NumPy generator seeded by ``set_rng_seed`` / ``rand_set_state``: the
statistics (uniform bits, drop rate) match, the bit streams of the hardware XORWOW do not.
"""

import numpy as np

from . import cost, ops, runtime
from . import dtypes as dt
from .isa_alu import ALU_TABLE, op_name
from .isa_common import (
    alu_op, apply_alu, check_reduce_cmd, check_version, column_operand, common_dtype, dge_mode, dma_engine, engine,  # noqa: F401
    engine_name, generation, instruction, is_number, no_psum_on_gpsimd, not_both_in_psum, on_chip, oob_mode,
    read2d, record, reduce_alu, reduce_cmd, require_fp32_tile, require_target, same_layout, target, write,
)
from .rules import violate
from .tensor import NkiTensor

FP32_MIN = float(np.finfo(np.float32).min)


def _vector_cycles(free, n_inputs, dtype):
    return cost.vector_cycles(free, n_inputs, dtype, target())


def _accumulate(instr, cmd, p, values, spec, init=None):
    """Update the Vector Engine reduce registers with ``values`` [P, free] per ``cmd``; returns them."""
    from .isa import accumulators

    acc = accumulators()
    regs = acc.get("vector", p)
    identity = np.float32(spec.reduce_identity if spec.reduce_identity is not None else 0.0)
    if cmd in ("reset_reduce", "reset") or regs is None:
        regs = np.full((p, 1), identity, dtype=np.float32)
    if cmd == "load_reduce":
        regs = np.broadcast_to(np.asarray(init, dtype=np.float32).reshape(-1, 1), (p, 1)).astype(np.float32)
    if cmd in ("reset_reduce", "reduce", "load_reduce"):
        both = np.concatenate([regs, values.astype(np.float32)], axis=1)
        regs = reduce_alu(spec, both, axis=1).reshape(p, 1).astype(np.float32)
    acc.set("vector", regs)
    return regs


def _write_reduce(instr, reduce_res, regs, p, negate=False):
    if reduce_res is None:
        return
    on_chip(instr, "reduce_res", reduce_res)
    if reduce_res.shape[0] != p or reduce_res.free_size != 1:
        violate("vector.reduce_res", f"nisa.{instr}: reduce_res must be [{p}, 1], got {reduce_res.shape}")
    write(instr, reduce_res, -regs if negate else regs)


def _reduce_spec(instr, op, allowed, aliases=None):
    name = op_name(op)
    name = (aliases or {}).get(name, name)
    if name not in allowed:
        violate("vector.reduce_op", f"nisa.{instr}: reduce_op {op!r} is not allowed; allowed: "
                + ", ".join(f"nl.{a}" for a in allowed))
    return ALU_TABLE[name]


@instruction
def tensor_scalar_reduce(dst, data, op0, operand0, reduce_op, reduce_res=None, reverse0=False,
                         reduce_cmd=reduce_cmd.reset_reduce, reduce_init=None, reduce_res_negate=False, name=None):
    """``dst = data op0 operand0``; ``reduce_res = reduce_op(dst)`` along the free dims (VectorE)."""
    instr = "tensor_scalar_reduce"
    spec = alu_op(instr, "op0", op0)
    if spec.is_bitvec:
        violate("alu.in_table", f"nisa.{instr}: op0 must be an arithmetic operator, got nl.{spec.name}")
    rspec = _reduce_spec(instr, reduce_op, ("add", "multiply", "maximum", "minimum"),
                         aliases={"max": "maximum", "min": "minimum"})
    cmd = check_reduce_cmd(instr, reduce_cmd, ("reset_reduce", "reduce", "load_reduce"))
    if reduce_res is None:
        check_version("nisa.tensor_scalar_reduce(reduce_res=None)", "0.6")
    if reduce_init is not None and cmd != "load_reduce":
        violate("reduce_cmd.value", f"nisa.{instr}: reduce_init is only set with reduce_cmd.load_reduce")
    if cmd == "load_reduce" and reduce_init is None:
        violate("reduce_cmd.value", f"nisa.{instr}: reduce_cmd.load_reduce needs reduce_init")
    on_chip(instr, "dst", dst)
    on_chip(instr, "data", data)
    same_layout(instr, "dst", dst, "data", data)
    require_fp32_tile(instr, "operand0", operand0, "tensor_scalar.fp32_operand")
    # isa L2579-2582, L2595-2596: operand0 "Must be None or 0 when op0 is a unary operator"; reverse0 "(not supported
    # yet) ... <-- currently not supported yet."; reduce_init "Supported dtypes: float32".
    if spec.is_unary and operand0 is not None and not (is_number(operand0) and operand0 == 0):
        violate("tensor_scalar_reduce.operands", f"nisa.{instr}: op0 nl.{spec.name} is unary; operand0 must be None "
                f"or 0, got {operand0!r}")
    if reverse0:
        violate("tensor_scalar_reduce.operands", f"nisa.{instr}: reverse0=True is not supported yet")
    if isinstance(reduce_init, NkiTensor) and reduce_init.dtype != dt.float32:
        violate("tensor_scalar_reduce.operands", f"nisa.{instr}: reduce_init {reduce_init.name!r} is "
                f"{dt.name(reduce_init.dtype)}; its supported dtype is float32")
    p = data.shape[0]
    other = column_operand(instr, "operand0", 0.0 if operand0 is None else operand0, p, "tensor_scalar.operand_shape")
    result = apply_alu(spec, dt.to_fp32(read2d(data)), other, reverse0)
    init = None if reduce_init is None else column_operand(instr, "reduce_init", reduce_init, p, "vector.reduce_res")
    regs = _accumulate(instr, cmd, p, result, rspec, init)
    write(instr, dst, result)
    _write_reduce(instr, reduce_res, regs, p, reduce_res_negate)
    record("vector", instr, _vector_cycles(dst.free_size, 1, common_dtype(dst, data)))


@instruction
def tensor_scalar_cumulative(dst, src, op0, op1, imm0, imm1=None, reduce_cmd=reduce_cmd.reset_reduce, name=None):
    """``reg = op1(op0(src[i], imm0), reg); dst[i] = reg`` along the free dims (VectorE)."""
    instr = "tensor_scalar_cumulative"
    spec0 = alu_op(instr, "op0", op0)
    if spec0.is_bitvec:
        violate("alu.in_table", f"nisa.{instr}: op0 must be an arithmetic operator, got nl.{spec0.name}")
    spec1 = _reduce_spec(instr, op1, ("add", "subtract", "multiply", "maximum", "minimum"),
                         aliases={"max": "maximum", "min": "minimum"})
    cmd = check_reduce_cmd(instr, reduce_cmd, ("reset_reduce", "reduce", "load_reduce"))
    on_chip(instr, "dst", dst)
    on_chip(instr, "src", src)
    same_layout(instr, "dst", dst, "src", src)
    for role, t in (("dst", dst), ("src", src)):
        # "restricted to BF16, FP16, FP32, FP8, UINT8, UINT16, INT8, INT16": neither int32/uint32 nor tfloat32
        if t.dtype in (dt.int32, dt.uint32) or dt.is_tfloat32(t.dtype):
            violate("tensor_scalar_cumulative.dtype", f"nisa.{instr}: {role} {t.name!r} is {dt.name(t.dtype)}; "
                    "src and dst are BF16, FP16, FP32, FP8, UINT8, UINT16, INT8 or INT16")
    for role, value in (("imm0", imm0), ("imm1", imm1)):
        require_fp32_tile(instr, role, value, "tensor_scalar.fp32_operand")
    p = src.shape[0]
    values = apply_alu(spec0, dt.to_fp32(read2d(src)), column_operand(instr, "imm0", imm0, p, "tensor_scalar.operand_shape"))
    from .isa import accumulators

    acc = accumulators()
    regs = acc.get("vector", p)
    # isa L1274-1276: ``elif reduce_cmd == load_reduce: reg = imm1`` whatever the register held before, even
    # when this is the run's first accumulating instruction (no earlier register state).
    if cmd == "load_reduce":
        if imm1 is None:
            violate("reduce_cmd.value", f"nisa.{instr}: reduce_cmd.load_reduce needs imm1")
        regs = np.broadcast_to(np.asarray(column_operand(instr, "imm1", imm1, p, "tensor_scalar.operand_shape"),
                                          dtype=np.float32).reshape(-1), (p,)).astype(np.float32)
    elif cmd == "reset_reduce" or regs is None:
        regs = np.full((p,), spec1.reduce_identity, dtype=np.float32)
    else:
        regs = regs.reshape(p)
    out = np.empty_like(values)
    for i in range(values.shape[1]):  # a sequential scan; each step is vectorised over partitions
        regs = apply_alu(spec1, values[:, i], regs)
        out[:, i] = regs
    acc.set("vector", regs)
    write(instr, dst, out)
    record("vector", instr, _vector_cycles(dst.free_size, 1, common_dtype(dst, src)))


@instruction
def scalar_tensor_tensor(dst, data, op0, operand0, op1, operand1, reverse0=False, reverse1=False, name=None):
    """``dst = (data op0 operand0) op1 operand1``: operand0 scalar or [P, 1], operand1 shaped like data (VectorE)."""
    instr = "scalar_tensor_tensor"
    spec0, spec1 = alu_op(instr, "op0", op0), alu_op(instr, "op1", op1)
    for role, spec in (("op0", spec0), ("op1", spec1)):
        if spec.is_bitvec:
            violate("scalar_tensor_tensor.operands", f"nisa.{instr}: {role} must be arithmetic, got nl.{spec.name}")
    on_chip(instr, "dst", dst)
    on_chip(instr, "data", data)
    if not isinstance(operand1, NkiTensor):
        violate("scalar_tensor_tensor.operands", f"nisa.{instr}: operand1 must be a tile shaped like data")
    on_chip(instr, "operand1", operand1)
    same_layout(instr, "dst", dst, "data", data)
    same_layout(instr, "data", data, "operand1", operand1)
    not_both_in_psum(instr, "data", data, "operand1", operand1, rule="scalar_tensor_tensor.operands")
    p = data.shape[0]
    tmp = apply_alu(spec0, dt.to_fp32(read2d(data)),
                    column_operand(instr, "operand0", operand0, p, "scalar_tensor_tensor.operands"), reverse0)
    result = apply_alu(spec1, tmp, dt.to_fp32(read2d(operand1)), reverse1)
    write(instr, dst, result)
    record("vector", instr, _vector_cycles(dst.free_size, 2, common_dtype(dst, data, operand1)))


@instruction
def reciprocal(dst, data, name=None):
    """``dst = 1 / data`` in fp32 on VectorE."""
    instr = "reciprocal"
    on_chip(instr, "dst", dst)
    on_chip(instr, "data", data)
    same_layout(instr, "dst", dst, "data", data)
    with np.errstate(divide="ignore"):
        write(instr, dst, np.float32(1.0) / dt.to_fp32(read2d(data)))
    # nki.api.shared.rst (nki-engine-sel): max(MIN_II, 8 * N) VectorE cycles.
    record("vector", instr, float(max(64, 8 * data.free_size)))


@instruction
def exponential(dst, src, max_value=0.0, reduce_res=None, reduce_cmd=reduce_cmd.idle, reduce_init=0.0, name=None):
    """``dst = exp(src - max_value)`` with an optional running sum (VectorE, NeuronCore-v4+)."""
    instr = "exponential"
    require_target(instr, "nisa.exponential", 4)
    cmd = check_reduce_cmd(instr, reduce_cmd, ("idle", "reset_reduce", "reduce", "load_reduce"))
    on_chip(instr, "dst", dst)
    on_chip(instr, "src", src)
    same_layout(instr, "dst", dst, "src", src)
    p = src.shape[0]
    require_fp32_tile(instr, "max_value", max_value, "tensor_scalar.fp32_operand")
    with np.errstate(over="ignore"):
        result = np.exp(dt.to_fp32(read2d(src)) - column_operand(instr, "max_value", max_value, p,
                                                                 "tensor_scalar.operand_shape")).astype(np.float32)
    if cmd != "load_reduce" and is_number(reduce_init) and reduce_init != 0.0:
        violate("reduce_cmd.value", f"nisa.{instr}: reduce_init must be 0.0 unless reduce_cmd is load_reduce")
    if cmd != "idle":
        init = column_operand(instr, "reduce_init", reduce_init, p, "vector.reduce_res")
        regs = _accumulate(instr, cmd, p, result, ALU_TABLE["add"], init)
        _write_reduce(instr, reduce_res, regs, p)
    write(instr, dst, result)
    record("vector", instr, _vector_cycles(dst.free_size, 1, common_dtype(dst, src)))


@instruction
def select_reduce(dst, predicate, on_true, on_false, reduce_res=None, reduce_cmd=reduce_cmd.idle, reduce_op=ops.maximum,
                  reverse_pred=False, name=None):
    """``dst = where(predicate, on_true, on_false)`` with an optional max reduction (VectorE)."""
    instr = "select_reduce"
    rspec = _reduce_spec(instr, reduce_op, ("maximum",), aliases={"max": "maximum"})
    cmd = check_reduce_cmd(instr, reduce_cmd, ("idle", "reset_reduce", "reduce"))
    for role, t in (("dst", dst), ("predicate", predicate), ("on_true", on_true)):
        on_chip(instr, role, t)
    same_layout(instr, "dst", dst, "on_true", on_true)
    same_layout(instr, "dst", dst, "predicate", predicate)
    not_both_in_psum(instr, "on_true", on_true, "predicate", predicate, rule="select_reduce.operands")
    if predicate.dtype not in (dt.int8, dt.uint8, dt.int16, dt.uint16):
        violate("select_reduce.operands", f"nisa.{instr}: predicate dtype must be int8/uint8/int16/uint16, got "
                f"{predicate.dtype.name}")
    if on_true.dtype in (dt.int32, dt.uint32) or dt.is_tfloat32(on_true.dtype):
        violate("select_reduce.operands", f"nisa.{instr}: on_true dtype {dt.name(on_true.dtype)} is not allowed "
                "(no tfloat32, int32, uint32)")
    # on_false: a float32 scalar or a [P, 1] vector, which may have any dtype (only a scalar must be float32)
    p = on_true.shape[0]
    false_values = column_operand(instr, "on_false", on_false, p, "select_reduce.operands")
    mask = read2d(predicate) != 0
    if reverse_pred:
        mask = ~mask
    result = np.where(mask, dt.to_fp32(read2d(on_true)), false_values).astype(np.float32)
    if cmd != "idle":
        if reduce_res is not None and not dt.is_float(reduce_res.dtype):
            violate("select_reduce.operands", f"nisa.{instr}: reduce_res must be a float dtype")
        regs = _accumulate(instr, cmd, p, result, rspec)
        _write_reduce(instr, reduce_res, regs, p)
    write(instr, dst, result)
    record("vector", instr, _vector_cycles(dst.free_size, 2, common_dtype(dst, on_true)))


RANGE_COMPARISONS = ("equal", "less", "less_equal", "greater", "greater_equal")


@instruction
def range_select(dst, on_true_tile, comp_op0, comp_op1, bound0, bound1, reduce_cmd=reduce_cmd.reset_reduce,
                 reduce_res=None, reduce_op=ops.maximum, range_start=0, on_false_value=..., name=None):
    """Keep ``on_true_tile`` where ``comp_op0(i, bound0) and comp_op1(i, bound1)`` for free index ``i +
    range_start``, else ``on_false_value`` (FP32_MIN); max-reduce the result (VectorE, NeuronCore-v3+)."""
    instr = "range_select"
    require_target(instr, "nisa.range_select", 3)
    specs = []
    for role, op in (("comp_op0", comp_op0), ("comp_op1", comp_op1)):
        if op_name(op) not in RANGE_COMPARISONS:
            violate("range_select.operands", f"nisa.{instr}: {role} {op!r} must be one of "
                    + ", ".join(f"nl.{c}" for c in RANGE_COMPARISONS))
        specs.append(ALU_TABLE[op_name(op)])
    rspec = _reduce_spec(instr, reduce_op, ("maximum",), aliases={"max": "maximum"})
    cmd = check_reduce_cmd(instr, reduce_cmd, ("idle", "reset_reduce", "reduce", "load_reduce"))
    if isinstance(range_start, (bool, np.bool_)) or not isinstance(range_start, (int, np.integer)):
        # ":param range_start: ... must be a compile-time integer" (int() would truncate 2.5 to 2)
        violate("range_select.operands", f"nisa.{instr}: range_start must be a compile-time integer, got "
                f"{range_start!r}")
    on_chip(instr, "dst", dst)
    on_chip(instr, "on_true_tile", on_true_tile)
    same_layout(instr, "dst", dst, "on_true_tile", on_true_tile)
    if not dt.is_float(on_true_tile.dtype):
        violate("range_select.operands", f"nisa.{instr}: on_true_tile must be a float dtype, got {on_true_tile.dtype.name}")
    p = on_true_tile.shape[0]
    bounds = []
    for role, bound in (("bound0", bound0), ("bound1", bound1)):
        if not isinstance(bound, NkiTensor) or bound.dtype != dt.float32:
            violate("range_select.operands", f"nisa.{instr}: {role} must be a float32 [P, 1] tile")
        bounds.append(column_operand(instr, role, bound, p, "range_select.operands"))
    fill = FP32_MIN if on_false_value is ... else on_false_value
    if not is_number(fill) or np.float32(fill) != np.float32(FP32_MIN):
        violate("range_select.operands", f"nisa.{instr}: on_false_value must be FP32_MIN (-3.4028235e+38), got "
                f"{on_false_value!r}")
    index = (int(range_start) + np.arange(on_true_tile.free_size, dtype=np.float32))[None, :]
    mask = (specs[0].fp32(index, bounds[0]) != 0) & (specs[1].fp32(index, bounds[1]) != 0)
    result = np.where(mask, dt.to_fp32(read2d(on_true_tile)), np.float32(fill)).astype(np.float32)
    if cmd != "idle":
        regs = _accumulate(instr, cmd, p, result, rspec)
        _write_reduce(instr, reduce_res, regs, p)
    write(instr, dst, result)
    record("vector", instr, _vector_cycles(dst.free_size, 1, common_dtype(dst, on_true_tile)))


BN_STATS_FMAX = 512


@instruction
def bn_stats(dst, data, name=None):
    """Per partition: (count, mean, var*count) of the even then the odd elements (VectorE, fp32)."""
    instr = "bn_stats"
    on_chip(instr, "dst", dst)
    on_chip(instr, "data", data)
    p, n = data.shape[0], data.free_size
    if n > BN_STATS_FMAX:
        violate("bn_stats.size", f"nisa.{instr}: data has {n} elements per partition; the limit is {BN_STATS_FMAX}")
    if dst.shape[0] != p or dst.free_size != 6:
        violate("bn_stats.size", f"nisa.{instr}: dst must be [{p}, 6], got {dst.shape}")
    x = dt.to_fp32(read2d(data)).astype(np.float64)
    out = []
    for half in (x[:, 0::2], x[:, 1::2]):
        count = half.shape[1]
        mean = half.mean(axis=1) if count else np.zeros(p)
        m2 = ((half - mean[:, None]) ** 2).sum(axis=1) if count else np.zeros(p)
        out += [np.full(p, count, dtype=np.float64), mean, m2]
    write(instr, dst, np.stack(out, axis=1).astype(np.float32))
    record("vector", instr, _vector_cycles(n, 1, data.dtype))


@instruction
def bn_aggr(dst, data, name=None):
    """Combine (count, mean, var*count) triples per partition into (mean, variance) (VectorE, fp32)."""
    instr = "bn_aggr"
    on_chip(instr, "dst", dst)
    on_chip(instr, "data", data)
    p, n = data.shape[0], data.free_size
    if n % 3:
        violate("bn_aggr.size", f"nisa.{instr}: data holds {n} elements per partition; a multiple of 3 is needed")
    if dst.shape[0] != p or dst.free_size != 2:
        violate("bn_aggr.size", f"nisa.{instr}: dst must be [{p}, 2], got {dst.shape}")
    t = dt.to_fp32(read2d(data)).astype(np.float64).reshape(p, n // 3, 3)
    count, mean, m2 = t[..., 0], t[..., 1], t[..., 2]
    total = count.sum(axis=1)
    safe = np.where(total > 0, total, 1.0)
    grand = (count * mean).sum(axis=1) / safe
    var = (m2 + count * (mean - grand[:, None]) ** 2).sum(axis=1) / safe
    write(instr, dst, np.stack([grand, var], axis=1).astype(np.float32))
    record("vector", instr, _vector_cycles(n, 1, data.dtype))


def _eight_check(instr, dst, src, dst_role="dst", src_role="src"):
    on_chip(instr, dst_role, dst)
    on_chip(instr, src_role, src)
    # "The source tile can be up to 3-dimensional, while the output tile is always 2-dimensional" (max8); "The data
    # tensor can be up to 3-dimensional", dst "a 2D tile ... [par_dim, 8]" (nc_find_index8)
    if src.ndim > 3 or dst.ndim != 2:
        violate("max8.size", f"nisa.{instr}: {src_role} {src.shape} may have up to 3 dimensions and {dst_role} "
                f"{dst.shape} must have 2")
    p, n = src.shape[0], src.free_size
    if not 8 <= n <= 16384:
        violate("max8.size", f"nisa.{instr}: src has {n} elements per partition; 8..16384 are allowed")
    if dst.shape[0] != p or dst.free_size != 8:
        violate("max8.size", f"nisa.{instr}: {dst_role} must be [{p}, 8], got {dst.shape}")
    return p, n


@instruction
def max8(dst, src, name=None):
    """The 8 largest values of each partition, in descending order (VectorE, fp32 compare)."""
    instr = "max8"
    _eight_check(instr, dst, src)
    x = dt.to_fp32(read2d(src))
    write(instr, dst, -np.sort(-x, axis=1)[:, :8])
    record("vector", instr, _vector_cycles(src.free_size, 1, src.dtype))


@instruction
def nc_find_index8(dst, data, vals, name=None):
    """Index of the first occurrence of each of the 8 ``vals`` per partition; all-ones when absent; a
    repeated value advances to its next occurrence (VectorE)."""
    instr = "nc_find_index8"
    p, n = _eight_check(instr, dst, data, "dst", "data")
    on_chip(instr, "vals", vals)
    if vals.shape[0] != p or vals.free_size != 8 or vals.ndim > 3:
        violate("max8.size", f"nisa.{instr}: vals must hold 8 elements per partition in up to 3 dimensions, got "
                f"{vals.shape}")
    if dst.dtype not in (dt.uint16, dt.uint32):
        violate("nc_find_index8.dtype", f"nisa.{instr}: dst must be uint16 or uint32, got {dst.dtype.name}")
    x, v = dt.to_fp32(read2d(data)), dt.to_fp32(read2d(vals))
    sentinel = np.iinfo(dst.dtype).max
    out = np.full((p, 8), sentinel, dtype=np.int64)
    for row in range(p):  # per partition: a tiny match loop over 8 values
        used = np.zeros(n, dtype=bool)
        for j in range(8):
            hits = np.flatnonzero((x[row] == v[row, j]) & ~used)
            if hits.size:
                out[row, j] = hits[0]
                used[hits[0]] = True
    write(instr, dst, out)
    record("vector", instr, _vector_cycles(n, 1, data.dtype))


@instruction
def nc_match_replace8(dst, data, vals, imm, dst_idx=None, name=None):
    """Replace the first occurrence of each of the 8 ``vals`` with ``imm`` (vals taken in reverse order, so
    duplicates pair with ascending positions from the last slot down); indices to ``dst_idx`` (VectorE)."""
    instr = "nc_match_replace8"
    on_chip(instr, "dst", dst)
    on_chip(instr, "data", data)
    on_chip(instr, "vals", vals)
    same_layout(instr, "dst", dst, "data", data)
    p, n = data.shape[0], data.free_size
    if vals.shape[0] != p or vals.free_size != 8:
        violate("max8.size", f"nisa.{instr}: vals must hold 8 elements per partition, got {vals.shape}")
    if not is_number(imm):
        violate("max8.size", f"nisa.{instr}: imm must be a float, got {imm!r}")
    x, v = dt.to_fp32(read2d(data)).copy(), dt.to_fp32(read2d(vals))
    idx = np.zeros((p, 8), dtype=np.int64)
    for row in range(p):
        used = np.zeros(n, dtype=bool)
        for j in range(7, -1, -1):
            hits = np.flatnonzero((x[row] == v[row, j]) & ~used)
            if hits.size:
                idx[row, j] = hits[0]
                used[hits[0]] = True
        x[row, used] = np.float32(imm)
    write(instr, dst, x)
    if dst_idx is not None:
        on_chip(instr, "dst_idx", dst_idx)
        if dst_idx.shape[0] != p or dst_idx.free_size != 8:
            violate("max8.size", f"nisa.{instr}: dst_idx must be [{p}, 8], got {dst_idx.shape}")
        write(instr, dst_idx, idx)
    record("vector", instr, _vector_cycles(n, 1, data.dtype))


@instruction
def nc_stream_shuffle(dst, src, shuffle_mask, name=None):
    """Within every 32-partition quadrant, ``dst[i] = src[shuffle_mask[i]]`` (255 leaves dst[i]) (VectorE)."""
    instr = "nc_stream_shuffle"
    on_chip(instr, "dst", dst)
    on_chip(instr, "src", src)
    try:
        mask = [int(m) for m in shuffle_mask]
    except (TypeError, ValueError):
        mask = None
    if mask is None or len(mask) != 32 or any(not (0 <= m < 32 or m == 255) for m in mask):
        violate("nc_stream_shuffle.mask", f"nisa.{instr}: shuffle_mask must be 32 ints in 0..31 or 255, got "
                f"{shuffle_mask!r}")
    if dst.dtype != src.dtype or dst.free_size != src.free_size:
        violate("nc_stream_shuffle.mask", f"nisa.{instr}: dst and src must share dtype and elements per partition")
    # constraint 3 of the docstring: both starts follow the larger operand's quadrant count, not each its own
    active = -(-max(src.shape[0], dst.shape[0]) // 32) * 32
    legal = (0,) if active > 64 else (0, 64) if active > 32 else (0, 32, 64, 96)
    for role, t in (("src", src), ("dst", dst)):
        if t.partition_start not in legal:
            violate("nc_stream_shuffle.start_partition", f"nisa.{instr}: {role} starts at partition "
                    f"{t.partition_start}; with {active} active partitions (src {src.shape[0]}, dst {dst.shape[0]}) "
                    f"src and dst may start at {', '.join(map(str, legal))}")
    s, d = read2d(src).copy(), read2d(dst).copy()
    for q0 in range(0, max(dst.shape[0], 1), 32):
        for i, m in enumerate(mask):
            if m != 255 and q0 + i < d.shape[0] and q0 + m < s.shape[0]:
                d[q0 + i] = s[q0 + m]
    write(instr, dst, d)
    record("vector", instr, _vector_cycles(src.free_size, 1, src.dtype))


# -- random numbers --------------------------------------------------------------------------------
def _generator(engine_key):
    gens = runtime.current().isa_rng
    if engine_key not in gens:
        gens[engine_key] = np.random.default_rng(0)
    return gens[engine_key]


def _seed(engine_key, seed_values):
    runtime.current().isa_rng[engine_key] = np.random.default_rng(
        np.asarray(seed_values, dtype=np.uint64).reshape(-1).tolist())


@instruction
def rng(dst, engine=engine.vector, name=None):
    """32 random bits per element, truncated to dst's integer width (Vector; GpSimd from v3)."""
    instr = "rng"
    eng = engine_name(engine, instr, "vector", ("vector", "gpsimd"))
    if eng == "gpsimd":
        require_target(instr, "engine=gpsimd", 3)
    on_chip(instr, "dst", dst)
    no_psum_on_gpsimd(instr, eng, dst)
    if dst.dtype not in (dt.int8, dt.int16, dt.int32, dt.uint8, dt.uint16, dt.uint32):
        violate("rng.operands", f"nisa.{instr}: dst must be an integer dtype, got {dst.dtype.name}")
    raw = _generator(eng).integers(0, 2**32, size=(dst.shape[0], dst.free_size), dtype=np.uint64).astype(np.uint32)
    write(instr, dst, raw.astype(dt.unsigned_view_dtype(dst.dtype)).view(dst.dtype))
    record(eng, instr, cost.vector_cycles(dst.free_size, 1, dst.dtype, target()))


@instruction
def set_rng_seed(src_seeds, name=None):
    """Seed the Vector Engine PRNG from a [1, 1] 32-bit tensor."""
    instr = "set_rng_seed"
    on_chip(instr, "src_seeds", src_seeds)
    if src_seeds.size != 1 or src_seeds.dtype.itemsize != 4:
        violate("set_rng_seed.operands", f"nisa.{instr}: src_seeds must be a [1, 1] 32-bit tensor, got "
                f"{src_seeds.shape} {src_seeds.dtype.name}")
    _seed("vector", src_seeds.array().view(np.uint32))
    record("vector", instr, _vector_cycles(1, 1, src_seeds.dtype))


def _rng_state_engine(instr, engine):
    """The engine of a PRNG-state instruction: NeuronCore-v3+, GpSimd (default) or, from v4, Vector."""
    require_target(instr, f"nisa.{instr}", 3)
    eng = engine_name(engine, instr, "gpsimd", ("gpsimd", "vector"))
    if eng == "vector":
        require_target(instr, "engine=vector", 4)
    return eng


def _state_operand(instr, t, eng):
    if t.dtype != dt.uint32:
        violate("rand_state.operands", f"nisa.{instr}: the PRNG state tensor must be uint32, got {t.dtype.name}")
    need = 6 if eng == "gpsimd" else 24
    if t.free_size != need:
        violate("rand_state.operands", f"nisa.{instr}: the XORWOW state is {need} elements per lane on {eng}, got "
                f"{t.free_size}")


@instruction
def rand_set_state(src_seeds, engine=engine.gpsimd, name=None):
    """Seed the engine's per-lane PRNG states (NeuronCore-v3+; Vector from v4)."""
    instr = "rand_set_state"
    eng = _rng_state_engine(instr, engine)
    on_chip(instr, "src_seeds", src_seeds, ("sbuf",))
    _state_operand(instr, src_seeds, eng)
    _seed(eng, src_seeds.array().view(np.uint32))
    runtime.current().isa_rng_state[eng] = read2d(src_seeds).copy()
    record(eng, instr, cost.gpsimd_cycles(src_seeds.free_size, 1, target()))


@instruction
def rand_get_state(dst, engine=engine.gpsimd, name=None):
    """Store the engine's PRNG states (the seeds last set; the simulator does not model XORWOW steps)."""
    instr = "rand_get_state"
    eng = _rng_state_engine(instr, engine)
    on_chip(instr, "dst", dst)
    no_psum_on_gpsimd(instr, eng, dst)
    _state_operand(instr, dst, eng)
    state = runtime.current().isa_rng_state.get(eng)
    if state is None or state.shape[0] < dst.shape[0]:
        state = np.zeros((dst.shape[0], dst.free_size), dtype=np.uint32)
    write(instr, dst, state[: dst.shape[0]])
    record(eng, instr, cost.gpsimd_cycles(dst.free_size, 1, target()))


@instruction
def rand2(dst, min, max, name=None):  # noqa: A002 - official parameter names
    """Uniform random values in [min, max] (fp32, cast to dst) on VectorE (NeuronCore-v4+)."""
    instr = "rand2"
    require_target(instr, "nisa.rand2", 4)
    on_chip(instr, "dst", dst)
    p = dst.shape[0]
    lo = column_operand(instr, "min", min, p, "rng.operands")
    hi = column_operand(instr, "max", max, p, "rng.operands")
    if np.any(np.asarray(lo) >= np.asarray(hi)):
        violate("rng.operands", f"nisa.{instr}: min must be below max")
    u = _generator("vector").random((p, dst.free_size), dtype=np.float32)
    write(instr, dst, lo + u * (hi - lo))
    record("vector", instr, _vector_cycles(dst.free_size, 1, dst.dtype))


@instruction
def dropout(dst, data, prob, name=None):
    """Zero each element with probability ``prob`` (scalar or [P, 1]) (VectorE)."""
    instr = "dropout"
    on_chip(instr, "dst", dst)
    on_chip(instr, "data", data)
    same_layout(instr, "dst", dst, "data", data)
    if dst.dtype != data.dtype:
        violate("dropout.operands", f"nisa.{instr}: dst dtype {dst.dtype.name} must equal data dtype {data.dtype.name}")
    if isinstance(prob, NkiTensor) and dt.is_int(data.dtype) and prob.dtype != dt.float32:
        violate("dropout.operands", f"nisa.{instr}: prob must be float32 for integer data, got {prob.dtype.name}")
    if isinstance(prob, NkiTensor) and not dt.is_float(prob.dtype):
        violate("dropout.operands", f"nisa.{instr}: prob must be a float dtype, got {prob.dtype.name}")
    p = data.shape[0]
    drop = column_operand(instr, "prob", prob, p, "dropout.operands")
    u = _generator("vector").random((p, data.free_size), dtype=np.float32)
    values = read2d(data)
    write(instr, dst, np.where(u < drop, np.zeros((), dtype=values.dtype), values))
    record("vector", instr, _vector_cycles(dst.free_size, 1, dst.dtype))
