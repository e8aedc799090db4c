"""``nki.isa`` for the simulator: one vectorised NumPy operation per instruction.

Every instruction takes ``dst`` first, writes it, and returns None. Keyword
names follow the NKI 0.3-0.6 signatures (NKI_NOTES §3); an unknown keyword
raises ``TypeError`` naming the instruction. Before running, each instruction
checks the live SBUF/PSUM allocations against the target's capacity, then its
operands' buffers, partition counts, shapes and dtypes, then records its
modelled cost in the run's profile.
"""

import functools
import inspect

import numpy as np

from . import cost, runtime
from . import dtypes as dt
from .errors import ConstraintError, KernelSignatureError, OutOfBoundsError
from .ops import BITVEC, ActivationFunction, AluActivation, AluOp
from .tensor import ON_CHIP, NkiTensor

MAX_PARTITIONS = 128
MATMUL_MAX_K, MATMUL_MAX_M, MATMUL_MAX_N = 128, 128, 512
MATMUL_INPUT_DTYPES = frozenset([dt.float8_e4m3, dt.float8_e5m2, dt.bfloat16, dt.float16, dt.float32])
TRANSPOSE_TENSOR_MAX, TRANSPOSE_VECTOR_MAX = 128, 32


class _Enum:
    """A small named-constant namespace (``nisa.oob_mode.skip`` etc.)."""

    def __init__(self, kind, names):
        self._kind = kind
        for name in names:
            setattr(self, name, _Value(kind, name))


class _Value:
    def __init__(self, kind, name):
        self.kind, self.name = kind, name

    def __repr__(self):
        return f"nisa.{self.kind}.{self.name}"


oob_mode = _Enum("oob_mode", ["error", "skip"])
dge_mode = _Enum("dge_mode", ["unknown", "none", "swdge", "hwdge"])
engine = _Enum("engine", ["unknown", "tensor", "vector", "scalar", "gpsimd", "sync"])
reduce_cmd = _Enum("reduce_cmd", ["idle", "reset", "reduce", "reset_reduce"])
matmul_perf_mode = _Enum("matmul_perf_mode", ["none", "double_row"])
nc_version = _Enum("nc_version", ["gen2", "gen3", "gen4"])


def get_nc_version():
    return nc_version.gen2 if runtime.current().target == "trn1" else nc_version.gen3


# -- instruction wrapper -----------------------------------------------------------------------
def instruction(fn):
    """Check keyword names, run the capacity check, call the instruction, return None."""
    signature = inspect.signature(fn)
    allowed = list(signature.parameters)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        unknown = [k for k in kwargs if k not in signature.parameters]
        if unknown:
            raise KernelSignatureError(
                f"nisa.{fn.__name__}: unknown keyword argument(s) {', '.join(map(repr, unknown))}; "
                f"allowed: {', '.join(allowed)}"
            )
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise KernelSignatureError(f"nisa.{fn.__name__}: {exc}") from None
        bound.apply_defaults()
        runtime.current().memory.check(f"nisa.{fn.__name__}")
        fn(*bound.args, **bound.kwargs)
        return None

    return wrapper


def _target():
    return runtime.current().target


def _record(engine_name, op, cycles):
    runtime.current().profile.record(engine_name, op, cycles)


def _tensor(instr, role, value):
    if not isinstance(value, NkiTensor):
        raise ConstraintError(f"nisa.{instr}: {role} must be an NkiTensor, got {type(value).__name__}")
    if value.is_indirect and instr != "dma_copy":
        raise ConstraintError(f"nisa.{instr}: {role} {value.name!r} uses vector_offset; only dma_copy takes indirect operands")
    return value


def _on_chip(instr, role, t, allowed=ON_CHIP):
    """Buffer, partition count and start-partition rules for a compute-engine operand."""
    _tensor(instr, role, t)
    if t.buffer not in allowed:
        raise ConstraintError(
            f"nisa.{instr}: {role} {t.name!r} is in {t.buffer}; allowed: {', '.join(allowed)}"
        )
    partitions = t.shape[0]
    if partitions > MAX_PARTITIONS:
        raise ConstraintError(f"nisa.{instr}: {role} {t.name!r} spans {partitions} partitions; the limit is {MAX_PARTITIONS}")
    if t._byte_strides[0] != t.storage.bytes_per_partition and partitions > 1:
        raise ConstraintError(
            f"nisa.{instr}: {role} {t.name!r} must cover consecutive partitions (partition step "
            f"{t._byte_strides[0] // max(t.storage.bytes_per_partition, 1)})"
        )
    start = t.partition_start
    if partitions > 64:
        legal = (0,)
    elif partitions > 32:
        legal = (0, 64)
    else:
        legal = (0, 32, 64, 96)
    if start not in legal:
        raise ConstraintError(
            f"nisa.{instr}: {role} {t.name!r} starts at partition {start}; an operand of {partitions} partitions "
            f"may start at {', '.join(map(str, legal))}"
        )
    return t


def _same_layout(instr, a_role, a, b_role, b):
    if a.shape[0] != b.shape[0] or a.free_size != b.free_size:
        raise ConstraintError(
            f"nisa.{instr}: {a_role} {a.shape} and {b_role} {b.shape} must have the same partition count "
            "and elements per partition"
        )


def _two_inputs(instr, dst, a_role, a, b_role, b):
    """``dst`` and two inputs all on chip, each input shaped like ``dst``."""
    for role, t in (("dst", dst), (a_role, a), (b_role, b)):
        _on_chip(instr, role, t)
    _same_layout(instr, "dst", dst, a_role, a)
    _same_layout(instr, "dst", dst, b_role, b)


def _not_both_in_psum(instr, a_role, a, b_role, b):
    if a.buffer == "psum" and b.buffer == "psum":
        raise ConstraintError(f"nisa.{instr}: {a_role} and {b_role} cannot both be in PSUM")


def _check_writable(instr, dst):
    if any(s == 0 and n > 1 for s, n in zip(dst._byte_strides, dst.shape)):
        raise ConstraintError(f"nisa.{instr}: dst {dst.name!r} is a broadcast (stride-0) view and cannot be written")


def _read2d(t):
    """Values as [P, free] (a copy when the view is not reshapeable in place)."""
    return t.array().reshape(t.shape[0], -1)


def _vector_operand(instr, role, value, partitions):
    """A scalar or a [P, 1] tile as an fp32 column (or raw NumPy for bitvec)."""
    if isinstance(value, NkiTensor):
        _on_chip(instr, role, value)
        if value.shape[0] != partitions or value.free_size != 1:
            raise ConstraintError(
                f"nisa.{instr}: {role} {value.name!r} must be a scalar or a [{partitions}, 1] tile, got {value.shape}"
            )
        return _read2d(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConstraintError(f"nisa.{instr}: {role} must be a number or a [P, 1] tile, got {value!r}")
    return value


def _write(instr, dst, values):
    """Cast ``values`` ([P, free] or dst-shaped) to dst's dtype and store; PSUM loses its matmul mark."""
    _check_writable(instr, dst)
    out = dst.array()
    out[...] = dt.cast(values, dst.dtype).reshape(dst.shape)
    if dst.storage.matmul_written is not None:
        dst.storage.matmul_written[_storage_elements(dst)] = False


def _storage_elements(t):
    return (t.element_offsets() // t.storage.dtype.itemsize).reshape(-1)


def _bits(values):
    """Raw bits of an integer array, zero-extended to uint32."""
    values = np.asarray(values)
    if values.dtype.kind not in "iu":
        raise ConstraintError(f"bitvec operand must be an integer dtype, got {values.dtype.name}")
    return values.view(dt.unsigned_view_dtype(values.dtype)).astype(np.uint32)


def _bits_scalar(value, instr, role):
    if isinstance(value, np.ndarray):
        return _bits(value)
    if isinstance(value, (int, np.integer)):
        return np.uint32(int(value) & 0xFFFFFFFF)
    raise ConstraintError(f"nisa.{instr}: bitvec {role} must be an integer (or integer tile), got {value!r}")


def _bits_to(values, dtype):
    """Truncate uint32 bits to dtype's width and reinterpret."""
    unsigned = dt.unsigned_view_dtype(dtype)
    return values.astype(unsigned).view(dtype)


def _common_dtype(*tensors):
    """The operands' shared dtype, or float32 when they differ (for the VectorE speed rule)."""
    dtypes = {t.dtype for t in tensors if isinstance(t, NkiTensor)}
    return dtypes.pop() if len(dtypes) == 1 else dt.float32


def _engine_name(value, instr, default, allowed):
    if value is None or value is engine.unknown:
        return default
    if not isinstance(value, _Value) or value.kind != "engine":
        raise ConstraintError(f"nisa.{instr}: engine must be a nisa.engine value, got {value!r}")
    if value.name not in allowed:
        raise ConstraintError(f"nisa.{instr}: engine {value.name} is not allowed; allowed: {', '.join(allowed)}")
    return value.name


def _no_psum_on_gpsimd(instr, eng, *tensors):
    if eng == "gpsimd":
        for t in tensors:
            if isinstance(t, NkiTensor) and t.buffer == "psum":
                raise ConstraintError(f"nisa.{instr}: GpSimd cannot access PSUM (operand {t.name!r})")


def _elementwise_cycles(eng, free, n_inputs, dtype, op):
    target = _target()
    if eng == "vector":
        return cost.vector_cycles(free, n_inputs, dtype, target, op)
    if eng == "scalar":
        return cost.scalar_cycles(free, target, n_inputs)
    return cost.gpsimd_cycles(free, n_inputs, target)


def _check_op(instr, role, op):
    if not isinstance(op, AluOp):
        raise ConstraintError(f"nisa.{instr}: {role} must be an nl ALU operator (nl.add, nl.right_shift, ...), got {op!r}")
    return op


# -- DMA ---------------------------------------------------------------------------------------
@instruction
def dma_copy(dst, src, priority=None, oob_mode=oob_mode.error, dge_mode=dge_mode.unknown, engine=engine.unknown, name=None):
    """Copy ``src`` to ``dst`` (HBM<->SBUF, HBM->HBM, SBUF->SBUF), converting dtypes through fp32.

    An ``.ap(vector_offset=idx)`` view on src gathers rows, on dst scatters rows;
    ``oob_mode.skip`` leaves rows with out-of-range indices untouched (and moves
    no bytes for them).
    """
    instr = "dma_copy"
    _tensor(instr, "dst", dst)
    _tensor(instr, "src", src)
    if src.buffer == "psum":
        raise ConstraintError(f"nisa.dma_copy: src {src.name!r} is in PSUM; DMA cannot read PSUM (copy it to SBUF first)")
    if oob_mode not in (globals()["oob_mode"].error, globals()["oob_mode"].skip):
        raise ConstraintError(f"nisa.dma_copy: oob_mode must be nisa.oob_mode.error or .skip, got {oob_mode!r}")
    modes = globals()["dge_mode"]
    if dge_mode is modes.hwdge:
        if _target() == "trn1":
            raise ConstraintError("nisa.dma_copy: dge_mode.hwdge does not exist on NeuronCore-v2 (trn1/inf2)")
        if src.dtype != dst.dtype:
            raise ConstraintError(
                f"nisa.dma_copy: dge_mode.hwdge cannot convert dtypes (src {src.dtype.name}, dst {dst.dtype.name})"
            )
    if src.is_indirect and dst.is_indirect:
        raise ConstraintError("nisa.dma_copy: src and dst cannot both use vector_offset")
    if (src.is_indirect or dst.is_indirect) and dge_mode in (modes.hwdge, modes.none):
        raise ConstraintError(f"nisa.dma_copy: indirect (vector_offset) access needs software DGE, not {dge_mode!r}")
    for role, t in (("dst", dst), ("src", src)):
        if t.is_on_chip and t.shape[0] > MAX_PARTITIONS:
            raise ConstraintError(f"nisa.dma_copy: {role} {t.name!r} spans {t.shape[0]} partitions; the limit is {MAX_PARTITIONS}")
    if src.size != dst.size:
        raise ConstraintError(
            f"nisa.dma_copy: element counts differ (src {src.name!r} {src.shape} has {src.size}, "
            f"dst {dst.name!r} {dst.shape} has {dst.size})"
        )
    skip = oob_mode is globals()["oob_mode"].skip
    item = max(src.dtype.itemsize, dst.dtype.itemsize)
    if src.is_indirect or dst.is_indirect:
        moved = _indirect_copy(dst, src, skip)
    else:
        _check_writable(instr, dst)
        values = src.array()
        if src.dtype != dst.dtype:
            values = dt.cast(dt.to_fp32(values), dst.dtype)
        dst.array()[...] = values.reshape(dst.shape)
        if dst.storage.matmul_written is not None:
            dst.storage.matmul_written[_storage_elements(dst)] = False
        moved = src.size
    sbuf_side = dst if dst.is_on_chip else src if src.is_on_chip else None
    span = (sbuf_side.partition_start, sbuf_side.shape[0]) if sbuf_side is not None else (0, None)
    runtime.current().profile.record_dma("dma_copy", moved * item, *span)


def _indirect_copy(dst, src, skip):
    """Gather (indirect src) or scatter (indirect dst) whole rows; returns the elements moved."""
    view = src if src.is_indirect else dst
    other = dst if src.is_indirect else src
    ind = view._indirect
    rows = view.shape[0]
    idx = ind.index.array().reshape(-1).astype(np.int64)
    valid = (idx >= 0) & (idx < ind.n_rows)
    if not valid.all() and not skip:
        p = int(np.flatnonzero(~valid)[0])
        raise OutOfBoundsError(
            f"nisa.dma_copy: indirect index {int(idx[p])} (partition {p} of index tile {ind.index.name!r}) is outside "
            f"the allowed range [0, {ind.n_rows}) of the rows of {view.name!r}; use oob_mode=nisa.oob_mode.skip to skip it"
        )
    offsets = view.element_offsets().reshape(rows, -1) + (idx * ind.row_bytes)[:, None]
    item = view.dtype.itemsize
    limit = view.storage.nbytes
    offsets = offsets[valid]
    if offsets.size and (offsets.min() < 0 or offsets.max() + item > limit):
        raise OutOfBoundsError(f"nisa.dma_copy: indirect access pattern on {view.name!r} reaches outside its storage")
    flat = view.storage.data.view(view.dtype) if view.storage.nbytes % item == 0 else None
    if flat is None or offsets.size and (offsets % item).any():
        raise ConstraintError(f"nisa.dma_copy: indirect access on {view.name!r} is not aligned to {view.dtype.name}")
    element_index = offsets // item
    if src.is_indirect:
        values = flat[element_index]
        _check_writable("dma_copy", dst)
        dst_offsets = dst.element_offsets().reshape(rows, -1)[valid] // dst.dtype.itemsize
        if dst.dtype != src.dtype:
            values = dt.cast(dt.to_fp32(values), dst.dtype)
        dst.storage.data.view(dst.dtype)[dst_offsets] = values
        if dst.storage.matmul_written is not None:
            dst.storage.matmul_written[(dst_offsets * dst.dtype.itemsize // dst.storage.dtype.itemsize).reshape(-1)] = False
    else:
        values = other.array().reshape(rows, -1)[valid]
        if dst.dtype != src.dtype:
            values = dt.cast(dt.to_fp32(values), dst.dtype)
        flat[element_index] = values
    return int(valid.sum()) * (view.size // max(rows, 1))


# -- TensorE -----------------------------------------------------------------------------------
@instruction
def nc_matmul(dst, stationary, moving, is_stationary_onezero=False, is_moving_onezero=False, is_transpose=False,
              accumulate=None, tile_position=(), tile_size=(), perf_mode=matmul_perf_mode.none, name=None):
    """``dst[M, N] (=|+=) stationary[K, M].T @ moving[K, N]`` on TensorE, fp32 accumulation in PSUM."""
    instr = "nc_matmul"
    _on_chip(instr, "stationary", stationary, ("sbuf",))
    _on_chip(instr, "moving", moving, ("sbuf",))
    _on_chip(instr, "dst", dst, ("psum",))
    if is_transpose or tile_position or tile_size or perf_mode is not matmul_perf_mode.none:
        raise NotImplementedError(
            "nisa.nc_matmul: is_transpose, tile_position, tile_size and perf_mode are not simulated"
        )
    for role, t in (("stationary", stationary), ("moving", moving)):
        if t.dtype not in MATMUL_INPUT_DTYPES:
            raise ConstraintError(
                f"nisa.nc_matmul: {role} dtype {t.dtype.name} is not a TensorE input type "
                f"(allowed: float8_e4m3, float8_e5m2, bfloat16, float16, tfloat32, float32; cast integers to bf16 first)"
            )
    if (stationary.dtype == dt.float32) != (moving.dtype == dt.float32):
        raise ConstraintError(
            f"nisa.nc_matmul: fp32/tf32 only pairs with fp32/tf32 (stationary {stationary.dtype.name}, moving {moving.dtype.name})"
        )
    if dst.dtype != dt.float32:
        raise ConstraintError(f"nisa.nc_matmul: dst must be float32 on NeuronCore-v2/v3, got {dst.dtype.name}")
    k, m = stationary.shape[0], stationary.free_size
    k2, n = moving.shape[0], moving.free_size
    if k != k2:
        raise ConstraintError(f"nisa.nc_matmul: contraction dims differ (stationary K={k}, moving K={k2})")
    for label, value, limit in (("K (partition dim)", k, MATMUL_MAX_K), ("M (stationary free size)", m, MATMUL_MAX_M),
                                ("N (moving free size)", n, MATMUL_MAX_N)):
        if value > limit:
            raise ConstraintError(f"nisa.nc_matmul: {label} = {value} exceeds the limit {limit}")
    if dst.shape[0] != m or dst.free_size != n:
        raise ConstraintError(f"nisa.nc_matmul: dst shape {dst.shape} must be [M={m}, N={n}]")
    bank = int(cost.constant("psum_bank_bytes", _target()))
    if n * dst.dtype.itemsize > bank:
        raise ConstraintError(
            f"nisa.nc_matmul: dst needs {n * dst.dtype.itemsize} B per partition, more than one PSUM bank ({bank} B)"
        )
    _check_one_bank(dst, bank)
    _check_writable(instr, dst)
    result = _read2d(stationary).astype(np.float32).T @ _read2d(moving).astype(np.float32)
    elements = _storage_elements(dst)
    written = dst.storage.matmul_written[elements]
    if accumulate is None:
        add = bool(written.all())
        if written.any() and not add:
            raise ConstraintError(
                f"nisa.nc_matmul: accumulate=None on {dst.name!r} where only part of dst holds an earlier matmul "
                "result; pass accumulate=False or True explicitly"
            )
    elif accumulate is True:
        if not written.all():
            raise ConstraintError(
                f"nisa.nc_matmul: accumulate=True onto {dst.name!r}, which no matmul has written since it was "
                "allocated (or memset/tensor_copy overwrote it): undefined on hardware"
            )
        add = True
    elif accumulate is False:
        add = False
    else:
        raise ConstraintError(f"nisa.nc_matmul: accumulate must be None, False or True, got {accumulate!r}")
    out = dst.array()
    if add:
        result = out.reshape(m, n).astype(np.float32) + result
    out[...] = result.reshape(dst.shape)
    dst.storage.matmul_written[elements] = True
    in_dtype = dt.float32 if dt.float32 in (stationary.dtype, moving.dtype) else dt.bfloat16
    onezero = bool(is_stationary_onezero or is_moving_onezero)
    _record("tensor", instr, cost.matmul_cycles(n, in_dtype, _target(), onezero=onezero))


def _check_one_bank(dst, bank):
    """PSUM allocations start on a bank boundary; a matmul dst must not straddle two banks."""
    start = dst._byte_offset % dst.storage.bytes_per_partition
    extent = sum((n - 1) * s for n, s in zip(dst.shape[1:], dst._byte_strides[1:])) + dst.dtype.itemsize
    if start // bank != (start + extent - 1) // bank:
        raise ConstraintError(
            f"nisa.nc_matmul: dst {dst.name!r} covers bytes {start}..{start + extent - 1} of each partition, "
            f"crossing a PSUM bank boundary (banks are {bank} B); a matmul output must fit one bank"
        )


@instruction
def nc_transpose(dst, data, engine=engine.unknown, name=None):
    """``dst[F, P] = data[P, F]`` on TensorE (up to 128x128, SBUF->PSUM) or VectorE (up to 32x32)."""
    instr = "nc_transpose"
    eng = _engine_name(engine, instr, "tensor", ("tensor", "vector"))
    if eng == "tensor":
        _on_chip(instr, "data", data, ("sbuf",))
        _on_chip(instr, "dst", dst, ("psum",))
        limit = TRANSPOSE_TENSOR_MAX
    else:
        _on_chip(instr, "data", data)
        _on_chip(instr, "dst", dst)
        limit = TRANSPOSE_VECTOR_MAX
    p, f = data.shape[0], data.free_size
    if p > limit or f > limit:
        raise ConstraintError(f"nisa.nc_transpose: data {data.shape} exceeds {limit}x{limit} on the {eng} engine")
    if dst.shape[0] != f or dst.free_size != p:
        raise ConstraintError(f"nisa.nc_transpose: dst shape {dst.shape} must be [{f}, {p}] for data {data.shape}")
    if dst.dtype != data.dtype:
        raise ConstraintError(f"nisa.nc_transpose: dst dtype {dst.dtype.name} must equal data dtype {data.dtype.name}")
    _write(instr, dst, _read2d(data).T)
    if eng == "tensor":
        _record("tensor", instr, cost.matmul_cycles(p, data.dtype, _target()))
    else:
        _record("vector", instr, cost.vector_cycles(f, 1, data.dtype, _target()))


# -- element-wise --------------------------------------------------------------------------------
@instruction
def tensor_copy(dst, src, engine=engine.unknown, name=None):
    """Copy ``src`` to ``dst`` (bit-exact for equal dtypes, otherwise through fp32)."""
    instr = "tensor_copy"
    _on_chip(instr, "dst", dst)
    _on_chip(instr, "src", src)
    _same_layout(instr, "dst", dst, "src", src)
    eng = _engine_name(engine, instr, "vector", ("vector", "scalar", "gpsimd"))
    if eng == "scalar" and _target() == "trn1":
        raise ConstraintError("nisa.tensor_copy: ScalarE cannot run tensor_copy on NeuronCore-v2; use nisa.activation(op=nl.copy)")
    _no_psum_on_gpsimd(instr, eng, dst, src)
    values = _read2d(src)
    if src.dtype != dst.dtype:
        values = dt.to_fp32(values)
    _write(instr, dst, values)
    _record(eng, instr, _elementwise_cycles(eng, dst.free_size, 1, _common_dtype(dst, src), "copy"))


@instruction
def tensor_tensor(dst, data1, data2, op, engine=engine.unknown, name=None):
    """``dst = data1 op data2`` element-wise (fp32 math; exact int32 on GpSimd; raw bits for bitvec ops)."""
    instr = "tensor_tensor"
    _check_op(instr, "op", op)
    _two_inputs(instr, dst, "data1", data1, "data2", data2)
    _not_both_in_psum(instr, "data1", data1, "data2", data2)
    all_int32 = all(t.dtype in (dt.int32, dt.uint32) for t in (dst, data1, data2))
    any_psum = any(t.buffer == "psum" for t in (dst, data1, data2))
    eng = _engine_name(engine, instr, "gpsimd" if all_int32 and not any_psum else "vector", ("vector", "gpsimd"))
    _no_psum_on_gpsimd(instr, eng, dst, data1, data2)
    a, b = _read2d(data1), _read2d(data2)
    if op.kind == BITVEC:
        for role, t in (("dst", dst), ("data1", data1), ("data2", data2)):
            if not dt.is_int(t.dtype):
                raise ConstraintError(f"nisa.tensor_tensor: bitvec op {op!r} needs integer dtypes; {role} is {t.dtype.name}")
        result = _bits_to(op.bits(_bits(a), _bits(b)), dst.dtype)
    elif eng == "gpsimd" and all_int32 and op.exact_int is not None:
        result = op.exact_int(a.astype(np.int64), b.astype(np.int64))
    else:
        result = op.fp32(dt.to_fp32(a), dt.to_fp32(b))
    _write(instr, dst, result)
    _record(eng, instr, _elementwise_cycles(eng, dst.free_size, 2, _common_dtype(dst, data1, data2), "generic"))


@instruction
def tensor_scalar(dst, data, op0, operand0, reverse0=False, op1=None, operand1=None, reverse1=False,
                  engine=engine.unknown, name=None):
    """``dst = (data op0 operand0) op1 operand1``, operands scalars or ``[P, 1]`` tiles."""
    instr = "tensor_scalar"
    _check_op(instr, "op0", op0)
    _on_chip(instr, "dst", dst)
    _on_chip(instr, "data", data)
    _same_layout(instr, "dst", dst, "data", data)
    if (op1 is None) != (operand1 is None):
        raise ConstraintError("nisa.tensor_scalar: op1 and operand1 must be given together (or both None)")
    ops = [(op0, operand0, reverse0)]
    if op1 is not None:
        _check_op(instr, "op1", op1)
        if op1.is_bitvec != op0.is_bitvec:
            raise ConstraintError(f"nisa.tensor_scalar: op0 {op0!r} and op1 {op1!r} must both be bitvec or both arithmetic")
        ops.append((op1, operand1, reverse1))
    bitvec = op0.is_bitvec
    eng = _engine_name(engine, instr, "vector", ("vector", "scalar", "gpsimd"))
    if bitvec:
        if eng != "vector":
            raise ConstraintError(f"nisa.tensor_scalar: bitvec operators run on VectorE only, not {eng}")
        if not (dt.is_int(dst.dtype) and dt.is_int(data.dtype)):
            raise ConstraintError(
                f"nisa.tensor_scalar: bitvec operators need integer data and dst (data {data.dtype.name}, dst {dst.dtype.name})"
            )
    if eng == "scalar" and any(op.name not in ("multiply", "add") for op, _, _ in ops):
        raise ConstraintError("nisa.tensor_scalar: ScalarE only supports nl.multiply and nl.add")
    _no_psum_on_gpsimd(instr, eng, dst, data, operand0, operand1)
    p = data.shape[0]
    if bitvec:
        value = _bits(_read2d(data))
        for i, (op, operand, reverse) in enumerate(ops):
            other = _bits_scalar(_vector_operand(instr, f"operand{i}", operand, p), instr, f"operand{i}")
            value = op.bits(other, value) if reverse else op.bits(value, other)
            value = np.asarray(value, dtype=np.uint32)
        result = _bits_to(value, dst.dtype)
    else:
        value = dt.to_fp32(_read2d(data))
        for i, (op, operand, reverse) in enumerate(ops):
            other = _vector_operand(instr, f"operand{i}", operand, p)
            other = dt.to_fp32(other) if isinstance(other, np.ndarray) else np.float32(other)
            value = op.fp32(other, value) if reverse else op.fp32(value, other)
            value = np.asarray(value, dtype=np.float32)
        result = value
    _write(instr, dst, result)
    _record(eng, instr, _elementwise_cycles(eng, dst.free_size, 1, _common_dtype(dst, data), "tensor_scalar"))


@instruction
def activation(dst, op, data, bias=None, scale=1.0, reduce_op=None, reduce_res=None, reduce_cmd=reduce_cmd.idle, name=None):
    """``dst = op(data * scale + bias)`` on ScalarE in fp32; optional add-reduction into ``reduce_res``."""
    instr = "activation"
    if not isinstance(op, (ActivationFunction, AluActivation)):
        raise ConstraintError(f"nisa.activation: op must be an activation function (nl.copy, nl.exp, ...), got {op!r}")
    _on_chip(instr, "dst", dst)
    _on_chip(instr, "data", data)
    _same_layout(instr, "dst", dst, "data", data)
    p = data.shape[0]
    x = dt.to_fp32(_read2d(data))
    scale_value = _vector_operand(instr, "scale", scale, p)
    x = x * (dt.to_fp32(scale_value) if isinstance(scale_value, np.ndarray) else np.float32(scale_value))
    if bias is not None:
        if not isinstance(bias, NkiTensor) and _target() == "trn1":
            raise ConstraintError("nisa.activation: on NeuronCore-v2 (trn1/inf2) bias must be a [P, 1] tile, not a scalar")
        bias_value = _vector_operand(instr, "bias", bias, p)
        x = x + (dt.to_fp32(bias_value) if isinstance(bias_value, np.ndarray) else np.float32(bias_value))
    with np.errstate(all="ignore"):
        result = np.asarray(op.fn(x), dtype=np.float32)
    _write(instr, dst, result)
    if reduce_op is not None or reduce_res is not None:
        if reduce_op is None or reduce_op.name != "add" or reduce_res is None:
            raise ConstraintError("nisa.activation: the optional reduction needs reduce_op=nl.add and a reduce_res tile")
        _on_chip(instr, "reduce_res", reduce_res)
        if reduce_res.shape[0] != p or reduce_res.free_size != 1:
            raise ConstraintError(f"nisa.activation: reduce_res must be [{p}, 1], got {reduce_res.shape}")
        _write(instr, reduce_res, result.sum(axis=1, dtype=np.float32)[:, None])
    _record("scalar", instr, cost.scalar_cycles(dst.free_size, _target()))


@instruction
def iota(dst, pattern, offset=0, channel_multiplier=0, name=None):
    """``dst[p, i...] = offset + p * channel_multiplier + sum(i_k * step_k)`` (int32 math, GpSimd, SBUF)."""
    instr = "iota"
    _on_chip(instr, "dst", dst, ("sbuf",))
    try:
        pattern = [(int(step), int(num)) for step, num in pattern]
    except (TypeError, ValueError) as exc:
        raise ConstraintError(f"nisa.iota: pattern must be [[step, num], ...], got {pattern!r}") from exc
    if not 1 <= len(pattern) <= 4:
        raise ConstraintError(f"nisa.iota: pattern has {len(pattern)} dims; 1 to 4 are allowed")
    count = int(np.prod([num for _, num in pattern]))
    if count != dst.free_size:
        raise ConstraintError(f"nisa.iota: pattern yields {count} elements per partition, dst holds {dst.free_size}")
    values = np.zeros([num for _, num in pattern], dtype=np.int64)
    for axis, (step, num) in enumerate(pattern):
        shape = [1] * len(pattern)
        shape[axis] = num
        values = values + (np.arange(num, dtype=np.int64) * step).reshape(shape)
    partition = np.arange(dst.shape[0], dtype=np.int64)[:, None] * int(channel_multiplier)
    result = (int(offset) + partition + values.reshape(1, -1)).astype(np.int32)
    if dt.is_float(dst.dtype):
        result = result.astype(np.float32)
    _write(instr, dst, result)
    _record("gpsimd", instr, cost.gpsimd_cycles(dst.free_size, 1, _target()))


@instruction
def memset(dst, value, engine=engine.unknown, name=None):
    """Fill ``dst`` with a constant whose Python type matches the dtype (int for integers, float for floats)."""
    instr = "memset"
    _on_chip(instr, "dst", dst)
    eng = _engine_name(engine, instr, "vector", ("vector", "scalar", "gpsimd"))
    _no_psum_on_gpsimd(instr, eng, dst)
    if dt.is_int(dst.dtype):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise ConstraintError(
                f"nisa.memset: value {value!r} ({type(value).__name__}) does not match dtype {dst.dtype.name}; use an int"
            )
        info = np.iinfo(dst.dtype)
        if not info.min <= int(value) <= info.max:
            raise ConstraintError(f"nisa.memset: value {value} is outside the range [{info.min}, {info.max}] of {dst.dtype.name}")
    elif isinstance(value, (bool, np.bool_)) or not isinstance(value, (float, np.floating)):
        raise ConstraintError(
            f"nisa.memset: value {value!r} ({type(value).__name__}) does not match dtype {dst.dtype.name}; use a float"
        )
    _write(instr, dst, np.full((dst.shape[0], dst.free_size), value))
    _record(eng, instr, _elementwise_cycles(eng, dst.free_size, 1, dst.dtype, "copy"))


@instruction
def tensor_reduce(dst, op, data, axis, negate=False, keepdims=False, name=None):
    """Reduce ``data`` over trailing free axes (VectorE; arithmetic in fp32, bitvec on raw bits)."""
    instr = "tensor_reduce"
    _check_op(instr, "op", op)
    _on_chip(instr, "dst", dst)
    _on_chip(instr, "data", data)
    axes = sorted({int(a) for a in ((axis,) if isinstance(axis, (int, np.integer)) else axis)})
    nd = data.ndim
    axes = [a + nd if a < 0 else a for a in axes]
    if not axes or 0 in axes or axes != list(range(axes[0], nd)):
        raise ConstraintError(
            f"nisa.tensor_reduce: axis {axis} must be consecutive trailing free axes ending at {nd - 1} (never 0)"
        )
    keep_shape = data.shape[: axes[0]]
    inner = int(np.prod(data.shape[axes[0]:]))
    outer = int(np.prod(keep_shape[1:])) if len(keep_shape) > 1 else 1
    if dst.shape[0] != data.shape[0] or dst.free_size != outer:
        raise ConstraintError(f"nisa.tensor_reduce: dst {dst.shape} must hold {outer} elements per partition for data {data.shape}")
    values = _read2d(data).reshape(data.shape[0], outer, inner)
    if op.kind == BITVEC:
        if not (dt.is_int(data.dtype) and dt.is_int(dst.dtype)):
            raise ConstraintError(f"nisa.tensor_reduce: bitvec op {op!r} needs integer data and dst")
        result = _bits_to(op.bits.reduce(_bits(values), axis=2), dst.dtype)
    else:
        reducers = {"add": np.sum, "subtract": None, "multiply": np.prod, "max": np.max, "maximum": np.max,
                    "min": np.min, "minimum": np.min}
        reducer = reducers.get(op.name)
        if reducer is None:
            raise ConstraintError(f"nisa.tensor_reduce: op {op!r} cannot reduce; allowed: add, multiply, max, min, bitwise ops")
        result = reducer(dt.to_fp32(values), axis=2).astype(np.float32)
        if negate:
            result = -result
    _write(instr, dst, result)
    _record("vector", instr, cost.vector_cycles(data.free_size, 1, _common_dtype(data), _target()))


@instruction
def tensor_tensor_scan(dst, data0, data1, initial, op0, op1, reverse0=False, reverse1=False, name=None):
    """Per partition: ``r[i] = (data0[i] op0 r[i-1]) op1 data1[i]`` with ``r[-1] = initial`` (fp32)."""
    instr = "tensor_tensor_scan"
    _check_op(instr, "op0", op0)
    _check_op(instr, "op1", op1)
    _two_inputs(instr, dst, "data0", data0, "data1", data1)
    _not_both_in_psum(instr, "data0", data0, "data1", data1)
    if op0.is_bitvec or op1.is_bitvec:
        raise ConstraintError("nisa.tensor_tensor_scan: op0 and op1 must be arithmetic operators")
    p = data0.shape[0]
    a, b = dt.to_fp32(_read2d(data0)), dt.to_fp32(_read2d(data1))
    init = _vector_operand(instr, "initial", initial, p)
    prev = dt.to_fp32(init).reshape(p) if isinstance(init, np.ndarray) else np.full(p, init, dtype=np.float32)
    if op0.name == op1.name == "add" and not reverse0 and not reverse1:
        result = (np.cumsum((a + b).astype(np.float64), axis=1) + prev[:, None]).astype(np.float32)
    else:
        # The recurrence is sequential along the free axis; each step is vectorised over partitions.
        result = np.empty_like(a)
        for i in range(a.shape[1]):
            tmp = op0.fp32(prev, a[:, i]) if reverse0 else op0.fp32(a[:, i], prev)
            prev = np.asarray(op1.fp32(b[:, i], tmp) if reverse1 else op1.fp32(tmp, b[:, i]), dtype=np.float32)
            result[:, i] = prev
    _write(instr, dst, result)
    _record("vector", instr, cost.vector_cycles(dst.free_size, 2, _common_dtype(dst, data0, data1), _target()))


@instruction
def tensor_copy_predicated(dst, src, predicate, reverse_pred=False, name=None):
    """Where ``predicate`` is nonzero (zero with ``reverse_pred``), copy ``src`` into ``dst``; elsewhere keep ``dst``."""
    instr = "tensor_copy_predicated"
    _two_inputs(instr, dst, "src", src, "predicate", predicate)
    if predicate.dtype not in (dt.uint8, dt.uint16, dt.uint32):
        raise ConstraintError(
            f"nisa.tensor_copy_predicated: predicate dtype must be uint8, uint16 or uint32, got {predicate.dtype.name}"
        )
    mask = _read2d(predicate) != 0
    if reverse_pred:
        mask = ~mask
    values = _read2d(src)
    if src.dtype != dst.dtype:
        values = dt.cast(dt.to_fp32(values), dst.dtype)
    _write(instr, dst, np.where(mask, values, _read2d(dst)))
    _record("vector", instr, cost.vector_cycles(dst.free_size, 2, _common_dtype(dst, src), _target()))
