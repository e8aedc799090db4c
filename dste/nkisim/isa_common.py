"""What every ``nki.isa`` instruction of the simulator shares: the enums, the call wrapper, operand checks.

The enums mirror the official ones (``nki/api/nki/isa/__init__.py``) member for member, with the same
values. :func:`instruction` binds the official signature (an unknown keyword raises
``KernelSignatureError`` naming the instruction), checks live SBUF/PSUM against the target's capacity,
runs the instruction and returns an :class:`NkiInstruction` handle, as the traced API does.
"""

import contextlib
import functools
import inspect
from enum import Enum

import numpy as np

from . import cost, isa_rules, runtime, version  # noqa: F401 - isa_rules registers the rule table
from . import dtypes as dt
from .errors import KernelSignatureError, NkiValidationError  # noqa: F401 - re-exported by nki.isa
from .isa_alu import ALU_TABLE, op_name
from .rules import violate
from .tensor import ON_CHIP, NkiTensor

MAX_PARTITIONS = 128
TARGET_GENERATION = {"trn1": 2, "trn2": 3, "trn3": 4}
TARGET_LABEL = {"trn1": "NeuronCore-v2 (trn1/inf2)", "trn2": "NeuronCore-v3 (trn2)", "trn3": "NeuronCore-v4 (trn3)"}


class engine(Enum):
    tensor = 1
    vector = 5
    scalar = 2
    gpsimd = 3
    dma = 4
    sync = 6
    unknown = 0


class reduce_cmd(Enum):
    idle = 0
    reset = 1
    reduce = 2
    reset_reduce = 3
    load_reduce = 4


class dge_mode(Enum):
    unknown = 0
    swdge = 1
    hwdge = 2
    none = 3


class oob_mode(Enum):
    error = 0
    skip = 1


class matmul_perf_mode(Enum):
    none = "none"
    double_row = "double_row"


class nc_version(Enum):
    gen2 = 2
    gen3 = 3
    gen4 = 4


class dma_engine(Enum):
    dma = 1
    gpsimd_dma = 2


# Deprecated engine aliases kept by the official stubs.
tensor_engine, vector_engine, scalar_engine = engine.tensor, engine.vector, engine.scalar
gpsimd_engine, unknown_engine = engine.gpsimd, engine.unknown


class NkiInstruction:
    """The handle an instruction returns; ``depends_on`` records ordering edges (the simulator runs in order).
    ``loops``: the dynamic loops (fori_loop / while_loop / dynamic_range) around the instruction, outermost first."""

    def __init__(self, handle):
        self.handle = handle
        self.dependencies = []
        self.loops = tuple(runtime.current().dynamic_loops)

    def depends_on(self, *producers):
        for producer in producers:
            if not isinstance(producer, NkiInstruction):
                raise KernelSignatureError(f"depends_on: expected NkiInstruction handles, got {type(producer).__name__}")
            # "both instructions must sit at the same dynamic-loop nesting (or the producer in an enclosing scope).
            # You cannot wire an edge into or out of a dynamic loop" (NkiInstruction.depends_on): the producer's loops
            # are the consumer's or enclose them
            if self.loops[:len(producer.loops)] != producer.loops:
                violate("isa.depends_on.loops", f"{self.handle}.depends_on({producer.handle}): the producer sits in "
                        f"{len(producer.loops)} dynamic loop(s), the consumer in {len(self.loops)}, and the producer's "
                        "loops do not enclose the consumer; an edge cannot leave a dynamic loop (fori_loop / "
                        "while_loop / dynamic_range) or cross into another")
            self.dependencies.append(producer)
        return self

    def __repr__(self):
        return f"<NkiInstruction {self.handle}>"


# -- the call wrapper ------------------------------------------------------------------------------
def instruction(fn):
    """Bind the official signature, check capacity, run, return an NkiInstruction handle."""
    signature = inspect.signature(fn)
    allowed = tuple(signature.parameters)
    if any(p.kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD for p in signature.parameters.values()):
        raise TypeError(f"{fn.__name__}: an official instruction signature has plain parameters only")
    required = frozenset(name for name, p in signature.parameters.items() if p.default is inspect.Parameter.empty)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        unknown = [k for k in kwargs if k not in signature.parameters]
        if unknown:
            raise KernelSignatureError(
                f"nisa.{fn.__name__}: unknown keyword argument(s) {', '.join(map(repr, unknown))}; "
                f"allowed: {', '.join(allowed)}"
            )
        # With plain parameters only, a call binds iff it has no more positional arguments than parameters,
        # names none of them again by keyword and covers every parameter without a default. Checking that
        # directly is ~10x cheaper than Signature.bind, which runs only to word the error of a call that fails.
        by_position = allowed[:len(args)]
        if len(args) > len(allowed) or not kwargs.keys().isdisjoint(by_position) or not required.issubset(
            (*by_position, *kwargs)
        ):
            try:
                signature.bind(*args, **kwargs)
            except TypeError as exc:
                raise KernelSignatureError(f"nisa.{fn.__name__}: {exc}") from None
        context = runtime.current()
        context.memory.check(f"nisa.{fn.__name__}")
        _refuse_ended_body_tensors(fn.__name__, args, kwargs)
        context.instruction_engine = None
        fn(*args, **kwargs)
        named = kwargs.get("name", args[-1] if len(args) == len(allowed) else None)
        if named is not None:
            context.profile.instruction_names.add(str(named))
        _check_engine_free_size(fn.__name__, context.instruction_engine, (*zip(allowed, args), *kwargs.items()))
        return NkiInstruction(fn.__name__)

    wrapper.is_simulated = True
    return wrapper


def _refuse_ended_body_tensors(name, args, kwargs):
    """No operand may be a tensor a loop body declared after that body iteration returned (rules for migrated
    loops: such tensors "cannot be referenced outside of the loop")."""
    for value in (*args, *kwargs.values()):
        for tensor in (value if isinstance(value, (list, tuple)) else (value,)):
            storage = getattr(tensor, "storage", None)
            if storage is not None and getattr(storage, "body_ended", False):
                violate("nl.loop.body-tensor-scope", f"nisa.{name}: operand {storage.name!r} was declared inside a "
                        "fori_loop / while_loop body and is used after that iteration returned; declare it before "
                        "the loop")


VECTOR_SCALAR_SBUF_FREE_MAX = 64 * 1024
"""Elements per partition of a Vector or Scalar Engine operand in SBUF: "the free dimension size can be up to 64K
elements for SBUF" (architecture guide, Vector Engine and Scalar Engine, Layout & Tile Size)."""


def _check_engine_free_size(name, engine_name, operands):
    """Vector and Scalar Engine operands in SBUF hold at most 64K elements per partition. The engine is the one the
    instruction charged its cycles to (``record``), so the check runs once the instruction has chosen it.
    ``operands``: (parameter name, value) pairs of the call."""
    if engine_name not in ("vector", "scalar"):
        return
    for role, value in operands:
        if isinstance(value, NkiTensor) and value.buffer == "sbuf" and value.free_size > VECTOR_SCALAR_SBUF_FREE_MAX:
            violate("isa.engine_free_size", f"nisa.{name}: {role} {value.name!r} (shape {value.shape}) holds "
                    f"{value.free_size} elements per partition in SBUF; a {engine_name.capitalize()} Engine operand "
                    f"holds at most 64K ({VECTOR_SCALAR_SBUF_FREE_MAX})")


def not_simulated(fn):
    """An official instruction the simulator does not model: keeps the signature, raises NotImplementedError."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        inspect.signature(fn).bind(*args, **kwargs)
        raise NotImplementedError(
            f"nisa.{fn.__name__} is part of the official nki.isa API but is not simulated by dste.nkisim "
            f"[rule isa.not_simulated]"
        )

    wrapper.is_simulated = False
    return wrapper


# -- targets ---------------------------------------------------------------------------------------
def target():
    return runtime.current().target


def generation():
    return TARGET_GENERATION[target()]


def require_target(instr, what, minimum):
    """Refuse ``what`` (an instruction or option) below NeuronCore generation ``minimum`` (2, 3 or 4)."""
    if generation() < minimum:
        needed = {3: "NeuronCore-v3 (trn2)", 4: "NeuronCore-v4 (trn3)"}[minimum]
        violate("isa.target_only", f"nisa.{instr}: {what} is available only on {needed} and newer; the target is "
                f"{TARGET_LABEL[target()]}")


def record(engine_name, op, cycles):
    context = runtime.current()
    context.instruction_engine = engine_name  # the engine the running instruction uses (_check_engine_free_size)
    context.profile.record(engine_name, op, cycles)


def elementwise_cycles(eng, free, n_inputs, dtype, op="generic"):
    if eng == "vector":
        return cost.vector_cycles(free, n_inputs, dtype, target(), op)
    if eng == "scalar":
        return cost.scalar_cycles(free, target(), n_inputs)
    return cost.gpsimd_cycles(free, n_inputs, target())


# -- operand checks --------------------------------------------------------------------------------
def tensor(instr, role, value):
    if not isinstance(value, NkiTensor):
        violate("isa.buffer", f"nisa.{instr}: {role} must be an NkiTensor, got {type(value).__name__}")
    if value.is_on_chip and value.ndim < 2:
        violate("isa.on_chip_1d", f"nisa.{instr}: {role} {value.name!r} is a 1-D {value.buffer} tensor {value.shape}; "
                "only nisa.register_load / register_store take one (other instructions need [P, free] tiles)")
    if value.is_indirect and not instr.startswith("dma_"):
        violate("isa.indirect_operand", f"nisa.{instr}: {role} {value.name!r} uses vector_offset; only DMA "
                "instructions take vector_offset operands")
    return value


MAX_FREE_DIMS = 4
"""Free dimensions of one operand's access pattern within a partition (nki-aps.rst)."""
MIN_FREE_STRIDE, MAX_FREE_STRIDE = -2**15, 2**15 - 1
"""An access pattern's per-axis stride is an int16, in elements (the architecture guide, Data streaming)."""
MAX_FREE_AXIS = 2**16 - 1
"""An access pattern's per-axis size is a uint16, in elements (the architecture guide, Data streaming)."""


def access_pattern_free_dims(t):
    """Free dimensions left once size-1 dimensions are dropped and contiguous neighbours merged."""
    return len(access_pattern_strides(t))


def access_pattern_axes(t):
    """``(size, element stride)`` of the access pattern's free axes: size-1 dimensions dropped, contiguous neighbours
    merged (the merged axis keeps the inner stride)."""
    itemsize = t.storage.dtype.itemsize
    dims = [(n, s) for n, s in zip(t.shape[1:], t._byte_strides[1:]) if n != 1]
    axes = []
    for i, (n, s) in enumerate(dims):
        if i == 0 or dims[i - 1][1] != n * s:
            axes.append((n, s // itemsize))
        else:
            axes[-1] = (axes[-1][0] * n, s // itemsize)
    return axes


def access_pattern_strides(t):
    """Element strides of the access pattern's free axes (``access_pattern_axes``)."""
    return [s for _, s in access_pattern_axes(t)]


def _split_axis(n, stride):
    """An ``[a, b]`` pair of uint16 axis sizes (outer stride ``b * stride`` an int16) covering an axis of ``n``
    elements, or None."""
    for b in range(min(n, MAX_FREE_AXIS), 0, -1):
        if n % b == 0 and n // b <= MAX_FREE_AXIS and MIN_FREE_STRIDE <= b * stride <= MAX_FREE_STRIDE:
            return n // b, b
    return None


def long_free_axes(t):
    """The merged free axes longer than a uint16 that no ``[a, b]`` split of uint16 sizes and int16 strides covers
    within MAX_FREE_DIMS axes. The architecture guide (Data streaming, L718) gives each F axis of the ISA's access
    pattern a uint16 size: an axis of the kernel's shape is not one of them as such, since a contiguous run is
    merged and may be re-split (assumption: the compiler splits an axis of more than 65535 elements into two
    whenever a factorisation fits the pattern's uint16 sizes, int16 strides and four free axes)."""
    axes = access_pattern_axes(t)
    long = [(n, s) for n, s in axes if n > MAX_FREE_AXIS]
    if not long:
        return []
    if len(axes) + len(long) > MAX_FREE_DIMS:
        return [n for n, _ in long]
    return [n for n, s in long if _split_axis(n, s) is None]


def on_chip(instr, role, t, allowed=ON_CHIP):
    """Buffer, partition count and start-partition rules for a compute-engine operand (and its extent: an .ap view
    is bounds-checked where an instruction uses it)."""
    tensor(instr, role, t)
    if not t.is_indirect:
        t.array()
    if t.buffer not in allowed:
        violate("isa.buffer", f"nisa.{instr}: {role} {t.name!r} is in {t.buffer}; allowed: {', '.join(allowed)}")
    partitions = t.shape[0]
    if partitions > MAX_PARTITIONS:
        violate("isa.partitions", f"nisa.{instr}: {role} {t.name!r} spans {partitions} partitions; the limit is "
                f"{MAX_PARTITIONS}")
    if t._byte_strides[0] != t.storage.bytes_per_partition and partitions > 1:
        violate("isa.consecutive_partitions", f"nisa.{instr}: {role} {t.name!r} must cover consecutive partitions "
                f"(partition step {t._byte_strides[0] // max(t.storage.bytes_per_partition, 1)})")
    if t.buffer == "psum":
        fmax = int(cost.constant("psum_bank_bytes", target())) // 4  # nl.tile_size.psum_bank_fmax: fp32 per bank
        span = psum_free_span(t)
        if span > fmax:
            violate("isa.psum_tile_fmax", f"nisa.{instr}: {role} {t.name!r} spans {span} elements per partition in "
                    f"PSUM; a PSUM tile's free size is at most nl.tile_size.psum_bank_fmax = {fmax}")
    free_dims = access_pattern_free_dims(t)
    if free_dims > MAX_FREE_DIMS:
        violate("isa.free_dims", f"nisa.{instr}: {role} {t.name!r} (shape {t.shape}) needs {free_dims} free "
                f"dimensions in its access pattern; at most {MAX_FREE_DIMS} (merge or copy it first)")
    too_long = long_free_axes(t)
    if too_long:
        violate("isa.free_axis_size", f"nisa.{instr}: {role} {t.name!r} (shape {t.shape}) has a free axis of "
                f"{too_long[0]} elements; an access pattern's axis size is a uint16 (at most {MAX_FREE_AXIS} elements)")
    too_far = [s for s in access_pattern_strides(t) if not MIN_FREE_STRIDE <= s <= MAX_FREE_STRIDE]
    if too_far:
        violate("isa.free_stride", f"nisa.{instr}: {role} {t.name!r} (shape {t.shape}) steps {too_far[0]} elements "
                f"along a free axis; an access pattern's stride is an int16 ({MIN_FREE_STRIDE}..{MAX_FREE_STRIDE} "
                "elements)")
    start = t.partition_start
    legal = (0,) if partitions > 64 else (0, 64) if partitions > 32 else (0, 32, 64, 96)
    if start not in legal:
        violate("isa.start_partition", f"nisa.{instr}: {role} {t.name!r} starts at partition {start}; an operand of "
                f"{partitions} partitions may start at {', '.join(map(str, legal))}")
    return t


def psum_free_span(t):
    """Elements per partition from the first to the last one an operand's free dims address: the free size of the
    PSUM tile it reads or writes. A broadcast (stride-0) dim adds nothing, as it re-reads the same elements."""
    item = t.dtype.itemsize
    return 1 + sum((n - 1) * abs(int(stride)) // item for n, stride in zip(t.shape[1:], t._byte_strides[1:]))


def same_layout(instr, a_role, a, b_role, b):
    if a.shape[0] != b.shape[0] or a.free_size != b.free_size:
        violate("isa.same_shape", f"nisa.{instr}: {a_role} {a.shape} and {b_role} {b.shape} must have the same "
                "partition count and elements per partition")


def two_inputs(instr, dst, a_role, a, b_role, b):
    for role, t in (("dst", dst), (a_role, a), (b_role, b)):
        on_chip(instr, role, t)
    same_layout(instr, "dst", dst, a_role, a)
    same_layout(instr, "dst", dst, b_role, b)


def not_both_in_psum(instr, a_role, a, b_role, b, rule="tensor_tensor.two_psum"):
    if isinstance(a, NkiTensor) and isinstance(b, NkiTensor) and a.buffer == "psum" and b.buffer == "psum":
        violate(rule, f"nisa.{instr}: {a_role} and {b_role} cannot both be in PSUM")


def check_writable(instr, dst):
    """A destination may be any view, a broadcast (stride-0) one included: its elements are written in access-pattern
    order, the last write to an address wins (AWS's qkv_cte gives activation_reduce such a dummy dst; an
    assumption, as the docs say nothing of it). Its extent is checked here, as an .ap view's is at use."""
    if not dst.is_indirect:
        dst.array()


def read2d(t):
    """Values as [P, free]."""
    return t.array().reshape(t.shape[0], -1)


def storage_elements(t):
    return (t.element_offsets() // t.storage.dtype.itemsize).reshape(-1)


def _matmul_marks_view(t):
    """The PSUM storage's matmul marks under ``t`` as a writable view shaped like ``t``, when ``t`` covers whole
    storage elements (every view of a PSUM tile in its own dtype); None otherwise."""
    item = t.storage.dtype.itemsize
    offset, strides = t._resolved_offset(), t._byte_strides
    if t.dtype.itemsize != item or offset % item or any(stride % item for stride in strides):
        return None
    return np.ndarray(t.shape, np.bool_, buffer=t.storage.matmul_written, offset=offset // item,
                      strides=[stride // item for stride in strides])


def matmul_marks(t):
    """Whether each PSUM element under ``t`` holds a matmul result, flat (a view of the marks where ``t`` is
    contiguous: read it before marking them again)."""
    view = _matmul_marks_view(t)
    return view.reshape(-1) if view is not None else t.storage.matmul_written[storage_elements(t)]


def set_matmul_marks(t, value: bool):
    """Mark the PSUM elements under ``t`` as holding (True) or not holding (False) a matmul result."""
    if t.storage.matmul_written is None:
        return
    view = _matmul_marks_view(t)
    if view is not None:
        view[...] = value
    else:
        t.storage.matmul_written[storage_elements(t)] = value


def _shared_log(view):
    """(the launch's shared-HBM access log, program, barrier interval), or None when ``view`` is not shared."""
    context = runtime.current()
    if context.shared_access is None or view.storage.buffer != "shared_hbm":
        return None
    if not view.is_indirect:
        view.array()  # an out-of-bounds view is refused as such before the log reads its bytes
    interval = context.lockstep.arrived[context.program_id] if context.lockstep is not None else 0
    return context.shared_access, context.program_id, interval


def shared_read(instr, view, element_index=None):
    """Record a DMA's read of ``view`` (``element_index``: the storage elements an indirect access reaches) on the
    launch's shared-HBM log, which refuses races between the two cores (``races.py``)."""
    log = _shared_log(view)
    if log is not None:
        accesses, program, interval = log
        accesses.read(instr, program, interval, view, element_index)


@contextlib.contextmanager
def shared_write(instr, view, element_index=None):
    """The block writes ``view`` (see ``shared_read``): the log sees the bytes before and after it."""
    log = _shared_log(view)
    if log is None:
        yield
        return
    accesses, program, interval = log
    with accesses.write(instr, program, interval, view, element_index):
        yield


def write(instr, dst, values):
    """Cast ``values`` ([P, free] or dst-shaped) to dst's dtype and store; PSUM loses its matmul mark."""
    check_writable(instr, dst)
    out = dst.array()
    out[...] = dt.cast(values, dst.dtype).reshape(dst.shape)
    set_matmul_marks(dst, False)


def is_number(value):
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def column_operand(instr, role, value, partitions, rule, fp32=True):
    """A scalar constant or a [P, 1] tile, as a float32 scalar / [P, 1] column (raw values when not fp32)."""
    if isinstance(value, NkiTensor):
        on_chip(instr, role, value)
        if value.shape[0] != partitions or value.free_size != 1:
            violate(rule, f"nisa.{instr}: {role} {value.name!r} must be a scalar or a [{partitions}, 1] tile, got "
                    f"{value.shape}")
        column = read2d(value)
        return dt.to_fp32(column) if fp32 else column
    if not is_number(value):
        violate(rule, f"nisa.{instr}: {role} must be a number or a [{partitions}, 1] tile, got {value!r}")
    return np.float32(value) if fp32 else value


def require_fp32_tile(instr, role, value, rule):
    if isinstance(value, NkiTensor) and value.dtype != dt.float32:
        violate(rule, f"nisa.{instr}: {role} {value.name!r} is {value.dtype.name}; a tile operand here must be "
                "float32 (scalars are fp32 constants)")


def engine_name(value, instr, default, allowed):
    """The engine an instruction runs on: ``default`` for unknown/None, else one of ``allowed``."""
    if value is None or value is engine.unknown:
        return default
    if not isinstance(value, engine):
        violate("isa.engine_value", f"nisa.{instr}: engine must be a nisa.engine member, got {value!r}")
    if value.name not in allowed:
        violate("isa.engine_value", f"nisa.{instr}: engine {value.name} is not allowed; allowed: {', '.join(allowed)}")
    return value.name


def no_psum_on_gpsimd(instr, eng, *tensors):
    if eng == "gpsimd":
        for t in tensors:
            if isinstance(t, NkiTensor) and t.buffer == "psum":
                violate("isa.gpsimd_no_psum", f"nisa.{instr}: GpSimd cannot access PSUM (operand {t.name!r})")


def check_reduce_cmd(instr, value, allowed):
    if not isinstance(value, reduce_cmd) or value.name not in allowed:
        violate("reduce_cmd.value", f"nisa.{instr}: reduce_cmd {value!r} is not allowed; allowed: "
                + ", ".join(f"reduce_cmd.{a}" for a in allowed))
    return value.name


# -- ALU operators ---------------------------------------------------------------------------------
def alu_op(instr, role, op, allow=None):
    """The tbl-aluop entry for ``op``; refuses operators the table does not list or the target lacks."""
    name = op_name(op)
    spec = ALU_TABLE.get(name) if name else None
    if allow is not None and name in allow:
        spec = ALU_TABLE.get(allow[name], spec)
    if spec is None:
        violate("alu.in_table", f"nisa.{instr}: {role} {op!r} is not an ALU operator of tbl-aluop; allowed: "
                + ", ".join(sorted(ALU_TABLE)))
    if spec.name in ("abs_max", "abs_min"):
        version.require(f"nl.{spec.name} as an ALU operator", introduced="0.4")
    if spec.since_target is not None and generation() < TARGET_GENERATION[spec.since_target]:
        violate("alu.target", f"nisa.{instr}: {role} nl.{spec.name} is available only on {TARGET_LABEL[spec.since_target]}; "
                f"the target is {TARGET_LABEL[target()]}")
    return spec


def require_int(instr, role, t, rule="alu.bitvec_int"):
    if not dt.is_int(t.dtype):
        violate(rule, f"nisa.{instr}: {role} {t.name!r} is {t.dtype.name}; bitvec operators need integer dtypes")


def bits(values):
    """Raw bits of an integer array, zero-extended to uint32."""
    values = np.asarray(values)
    return values.view(dt.unsigned_view_dtype(values.dtype)).astype(np.uint32)


def bits_scalar(value, instr, role):
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "iu":
            violate("alu.bitvec_int", f"nisa.{instr}: bitvec {role} must be an integer tile, got {value.dtype.name}")
        return bits(value)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return np.uint32(int(value) & 0xFFFFFFFF)
    violate("alu.bitvec_int", f"nisa.{instr}: bitvec {role} must be an integer (or integer tile), got {value!r}")


def bits_to(values, dtype):
    """Truncate uint32 bits to dtype's width and reinterpret."""
    return np.asarray(values).astype(dt.unsigned_view_dtype(dtype)).view(dtype)


def apply_alu(spec, a, b, reverse=False):
    """``a op b`` (``b op a`` when reversed) in fp32."""
    with np.errstate(all="ignore"):
        out = spec.fp32(b, a) if reverse and not spec.is_unary else spec.fp32(a, b)
    return np.asarray(out, dtype=np.float32)


def reduce_alu(spec, values, axis):
    """Reduce ``values`` (fp32) along ``axis`` with a legal-reduction operator."""
    with np.errstate(all="ignore"):
        if spec.name == "add":
            return values.sum(axis=axis, dtype=np.float32)
        if spec.name == "multiply":
            return values.prod(axis=axis, dtype=np.float32)
        if spec.name == "maximum":
            return values.max(axis=axis)
        if spec.name == "minimum":
            return values.min(axis=axis)
        return np.asarray(np.frompyfunc(lambda x, y: spec.fp32(np.float32(x), np.float32(y)), 2, 1).reduce(
            values, axis=axis), dtype=np.float32)


def common_dtype(*tensors):
    dtypes = {t.dtype for t in tensors if isinstance(t, NkiTensor)}
    return dtypes.pop() if len(dtypes) == 1 else dt.float32


# -- DMA accounting --------------------------------------------------------------------------------
def contiguous_run_elements(t):
    """Elements in the longest innermost run of ``t`` that is contiguous in memory (within one partition
    for on-chip tensors)."""
    item = t.dtype.itemsize
    dims = list(zip(t.shape, t._byte_strides))
    if t.is_on_chip:
        dims = dims[1:]
    run, expected = 1, item
    for n, stride in reversed(dims):
        if n == 1:
            continue
        if stride != expected:
            break
        run *= n
        expected *= n
    return run


def record_dma(op, nbytes, span, contiguous_bytes, descriptors, indirect):
    """Charge one DMA to the profile with its descriptor shape (``Profile.record_dma``)."""
    profile = runtime.current().profile
    partition_start, partitions = span
    profile.record_dma(op, int(nbytes), partition_start, partitions, contiguous_bytes=int(contiguous_bytes),
                       descriptors=int(descriptors), indirect=bool(indirect))


def sbuf_span(*tensors):
    for t in tensors:
        if isinstance(t, NkiTensor) and t.is_on_chip:
            return t.partition_start, t.shape[0]
    return 0, None


def check_version(api, introduced):
    version.require(api, introduced=introduced)
