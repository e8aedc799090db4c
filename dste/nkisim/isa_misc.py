"""The remaining ``nki.isa`` functions: Scalar Engine variants, DMA transpose/compute, virtual registers,
multi-core synchronisation, and the NeuronCore-v4-only MX instructions (refused on trn1/trn2).

Each follows its docstring in ``nki/api/nki/isa/__init__.py``.
"""

import warnings

import numpy as np

from . import cost, ops, runtime, version
from . import dtypes as dt
from .isa_alu import ALU_TABLE, BYPASS, op_name
from .isa_common import (
    KernelSignatureError, check_reduce_cmd, column_operand, contiguous_run_elements, dge_mode, dma_engine,  # noqa: F401
    engine, instruction, on_chip, oob_mode, read2d, record, record_dma, reduce_cmd, require_target,
    same_layout, sbuf_span, shared_read, shared_write, target, tensor, write,
)
from .errors import LoopIndexWriteError
from .rules import violate
from .tensor import NkiTensor


# -- Scalar Engine ---------------------------------------------------------------------------------
@instruction
def activation_reduce(dst, op, data, reduce_op, reduce_res, bias=None, scale=1.0, name=None):
    """``nisa.activation`` with ``reduce_cmd=reset_reduce`` writing ``reduce_res`` (ScalarE)."""
    from .isa import activation

    if op_name(reduce_op) != "add":
        violate("activation.reduce_op", f"nisa.activation_reduce: reduce_op must be nl.add, got {reduce_op!r}")
    activation(dst=dst, op=op, data=data, bias=bias, scale=scale, reduce_op=reduce_op, reduce_res=reduce_res,
               reduce_cmd=reduce_cmd.reset_reduce)


ACTIVATE2_COMBOS = (("multiply", "add"), ("multiply", "subtract"), ("multiply", BYPASS), ("add", BYPASS),
                    ("subtract", BYPASS), (BYPASS, BYPASS))


@instruction
def activate2(dst, op, data, imm0, imm1, op0, op1, relu_param=0.0, reverse0=False, reverse1=False, reduce_op=None,
              reduce_res=None, reduce_cmd=reduce_cmd.idle, name=None):
    """``dst = op((data op0 imm0) op1 imm1)`` with an optional reduction (ScalarE, NeuronCore-v4+)."""
    from .isa import accumulators, activation_fn

    instr = "activate2"
    version.require("nisa.activate2", introduced="0.4")
    require_target(instr, "nisa.activate2", 4)
    combo = (op_name(op0), op_name(op1))
    if combo not in ACTIVATE2_COMBOS:
        violate("activate2.ops", f"nisa.{instr}: (op0, op1) = {combo} is not one of {ACTIVATE2_COMBOS}")
    _, fn = activation_fn(instr, op)
    on_chip(instr, "dst", dst)
    on_chip(instr, "data", data)
    same_layout(instr, "dst", dst, "data", data)
    p = data.shape[0]
    x = dt.to_fp32(read2d(data))
    for name_, imm, reverse in ((combo[0], imm0, reverse0), (combo[1], imm1, reverse1)):
        if name_ != BYPASS:
            value = column_operand(instr, "imm", imm, p, "activate2.ops")
            x = ALU_TABLE[name_].fp32(value, x) if reverse else ALU_TABLE[name_].fp32(x, value)
    alpha = column_operand(instr, "relu_param", relu_param, p, "activate2.ops")
    with np.errstate(all="ignore"):
        result = np.asarray(fn(np.asarray(x, dtype=np.float32), alpha), dtype=np.float32)
    cmd = check_reduce_cmd(instr, reduce_cmd, ("idle", "reset", "reduce", "reset_reduce"))
    if cmd != "idle":
        rname = op_name(reduce_op)
        if rname not in ("add", "maximum", "minimum", "abs_max", "abs_min"):
            violate("activation.reduce_op", f"nisa.{instr}: reduce_op {reduce_op!r} is not add/maximum/minimum/"
                    "abs_max/abs_min")
        spec = ALU_TABLE[rname]
        acc = accumulators()
        regs = acc.get("scalar", p)
        if cmd in ("reset", "reset_reduce") or regs is None:
            regs = np.full((p, 1), spec.reduce_identity or 0.0, dtype=np.float32)
        if cmd in ("reduce", "reset_reduce"):
            for col in range(result.shape[1]):
                regs = spec.fp32(regs, result[:, col:col + 1]).astype(np.float32)
        acc.set("scalar", regs)
        if reduce_res is not None:
            from .isa import write_reduce_res

            write_reduce_res(instr, reduce_res, regs, p)
    write(instr, dst, result)
    record("scalar", instr, cost.scalar_cycles(dst.free_size, target()))


# -- DMA -------------------------------------------------------------------------------------------
DMA_TRANSPOSE_AXES = {2: (1, 0), 3: (2, 1, 0), 4: (3, 1, 2, 0)}


@instruction
def dma_transpose(dst, src, axes=None, priority=None, dge_mode=dge_mode.unknown, oob_mode=oob_mode.error, name=None):
    """Permute ``src`` into ``dst`` with a DMA: 2-D (1, 0), 3-D (2, 1, 0), 4-D (3, 1, 2, 0)."""
    instr = "dma_transpose"
    tensor(instr, "dst", dst)
    tensor(instr, "src", src)
    if dst.buffer != "sbuf" or src.buffer == "psum":
        violate("dma_transpose.operands", f"nisa.{instr}: dst must be in SBUF and src in HBM or SBUF (dst "
                f"{dst.buffer}, src {src.buffer})")
    if src._indirect is not None:
        _indirect_transpose(instr, dst, src, axes, dge_mode, oob_mode is not globals()["oob_mode"].error)
        return
    if priority is not None:
        require_target(instr, "priority", 4)
    modes = globals()["dge_mode"]
    # nki-dge.rst L186-204 (How .ap() Affects DGE Mode): dma_transpose with a scalar_offset takes "Any mode"
    if src._scalar_offset is None and dge_mode not in (modes.unknown, modes.hwdge):
        violate("dma_transpose.operands", f"nisa.{instr}: a direct DMA transpose takes dge_mode unknown or hwdge, got "
                f"{dge_mode!r}")
    skip = oob_mode is not globals()["oob_mode"].error
    if skip:
        # "dma_transpose with scalar_offset now supports oob_mode.skip for runtime indirect indexing" (release notes,
        # NKI 0.5.0 New Features); without a dynamic offset skip stays "only valid when src uses indirect indexing"
        if src._scalar_offset is None:
            violate("dma_copy.oob", f"nisa.{instr}: oob_mode.skip is only valid with indirect indexing (a src "
                    "with a scalar_offset); src has no dynamic offset")
        version.require("nisa.dma_transpose(oob_mode=skip) with a scalar_offset src", introduced="0.5")
    if src.dtype != dst.dtype:
        violate("dma_transpose.operands", f"nisa.{instr}: src.dtype {src.dtype.name} must equal dst.dtype {dst.dtype.name}")
    perm = DMA_TRANSPOSE_AXES.get(src.ndim)
    if perm is None or (axes is not None and tuple(axes) != perm):
        violate("dma_transpose.operands", f"nisa.{instr}: axes {axes!r} for a {src.ndim}-D src must be "
                f"{perm or 'one of (1, 0), (2, 1, 0), (3, 1, 2, 0)'}")
    if dge_mode is modes.hwdge:
        require_target(instr, "dge_mode.hwdge", 3)
        shape0_ok = src.shape[0] == 16 if src.ndim == 2 else (
            src.shape[0] in (1, 2, 4, 8, 16) and (src.shape[0] * src.shape[-2]) % 16 == 0)
        if not shape0_ok or src.shape[-1] > 128 or src.dtype.itemsize != 2:
            violate("dma_transpose.operands", f"nisa.{instr}: a hwdge transpose needs src.shape[0] == 16 (2-D) or in "
                    "{1, 2, 4, 8, 16} with shape[0]*shape[-2] % 16 == 0, src.shape[-1] <= 128 and a 2-byte dtype")
    expected = tuple(src.shape[a] for a in perm)
    if dst.shape != expected:
        violate("dma_transpose.operands", f"nisa.{instr}: dst shape {dst.shape} must be the transposed src shape "
                f"{expected}")
    item = src.dtype.itemsize
    from .isa import dynamic_address_out_of_bounds

    if skip and dynamic_address_out_of_bounds(src):
        # as dma_copy: skip skips the transfer the scalar_offset puts out of bounds (assumption: the docs give no
        # partial rule, so the whole transfer is skipped)
        record_dma(instr, 0, sbuf_span(dst, src), item, 0, False)
        return
    shared_read(instr, src)
    write(instr, dst, np.transpose(src.array(), perm))
    record_dma(instr, src.size * item, sbuf_span(dst, src), item, src.size, False)


def _indirect_transpose(instr, dst, src, axes, mode, skip):
    """DMA indirect transpose (isa L889-910): ``flat_indices = indices.T.flatten()[:src.shape[0]]; gathered =
    src[flat_indices, ...]; dst = gathered`` permuted as the direct transpose is (2-D (1, 0), 3-D (2, 1, 0), 4-D
    (3, 1, 2, 0): src's dim 0 becomes dst's last), with its documented constraints. Under oob_mode.skip an
    out-of-bounds index skips its column of dst, which keeps its value (release notes, NKI 0.5: gather transpose no
    longer overwrites valid dst with OOB zeros)."""
    from .isa import indirect_rows

    require_target(instr, "an indirect (vector_offset) dma_transpose", 3)
    modes = globals()["dge_mode"]
    if mode not in (modes.unknown, modes.swdge):
        violate("dma_transpose.operands", f"nisa.{instr}: an indirect DMA transpose takes dge_mode unknown or swdge, "
                f"got {mode!r}")
    perm = DMA_TRANSPOSE_AXES.get(src.ndim)
    index = src._indirect.index
    problems = []
    if perm is None:
        problems.append(f"a 2-D, 3-D or 4-D src (got {src.ndim}-D)")
        perm = tuple(range(src.ndim))[::-1]
    if src.ndim == 4 and 1 not in (src.shape[1], src.shape[2]):
        problems.append(f"src.shape[1] or src.shape[2] of 1 for a 4-D src (got {src.shape})")
    if src.dtype.itemsize != 2 or src.dtype != dst.dtype:
        problems.append(f"src and dst of one 2-byte dtype (src {src.dtype.name}, dst {dst.dtype.name})")
    if src.shape[-1] > 128:
        problems.append(f"src.shape[-1] <= 128 (got {src.shape[-1]})")
    if src.shape[0] % 16:
        problems.append(f"src.shape[0] divisible by 16 (got {src.shape[0]})")
    if index.dtype != dt.uint32:
        problems.append(f"uint32 indices (got {index.dtype.name})")
    if not (16 <= index.shape[0] <= 128 and index.shape[0] % 16 == 0):
        problems.append(f"indices.shape[0] in [16, 128] and divisible by 16 (got {index.shape[0]})")
    if axes is not None and tuple(axes) != perm:
        problems.append(f"axes {perm} (got {axes!r})")
    expected = tuple(src.shape[a] for a in perm)
    if dst.buffer != "sbuf" or dst.shape != expected:
        problems.append(f"an SBUF dst of shape {expected} (got {dst.buffer} {dst.shape})")
    if problems:
        violate("dma_transpose.operands", f"nisa.{instr}: an indirect DMA transpose needs " + "; ".join(problems))
    valid, element_index, flat = indirect_rows(instr, src, skip)
    shared_read(instr, src, element_index)
    gathered = flat[element_index].reshape((-1,) + src.shape[1:])  # the in-range rows of src, in order
    values = dst.array().copy()
    values[..., valid] = np.transpose(gathered, perm)
    write(instr, dst, values)
    n_valid = int(np.count_nonzero(valid))
    row_elems = src.size // max(src.shape[0], 1)
    item = src.dtype.itemsize
    record_dma(instr, n_valid * row_elems * item, sbuf_span(dst), item, n_valid * row_elems, True)


@instruction
def dma_compute(dst, srcs, reduce_op, scales=None, unique_indices=True, oob_mode=oob_mode.error, name=None):
    """``dst = sum(srcs)`` computed inside the DMA engines in fp32; with a vector_offset, a read-modify-write."""
    instr = "dma_compute"
    tensor(instr, "dst", dst)
    if op_name(reduce_op) != "add":
        violate("dma_compute.operands", f"nisa.{instr}: reduce_op must be nl.add, got {reduce_op!r}")
    if not isinstance(srcs, (list, tuple)) or not 1 <= len(srcs) <= 16:
        violate("dma_compute.operands", f"nisa.{instr}: srcs must be a list of 1 to 16 tensors")
    if scales is not None and (len(scales) != len(srcs) or any(float(s) != 1.0 for s in scales)):
        violate("dma_compute.operands", f"nisa.{instr}: scales must all be 1.0 (or None), got {scales!r}")
    for i, src in enumerate(srcs):
        tensor(instr, f"srcs[{i}]", src)
    # isa L2699: "Both srcs and dst tensors must have compile-time known addresses (unless using vector_offset for
    # indirect access)": a run-time scalar_offset (a register, a tensor, a dynamic select / index) is refused
    for role, t in (("dst", dst), *((f"srcs[{i}]", src) for i, src in enumerate(srcs))):
        if t._scalar_offset is not None and t._indirect is None:
            violate("dma_compute.static_address", f"nisa.{instr}: {role} {t.name!r} has a run-time scalar_offset; "
                    "dma_compute's tensors have compile-time addresses unless they use vector_offset")
    skip = oob_mode is not globals()["oob_mode"].error
    if skip:
        version.require("nisa.dma_compute(oob_mode=...)", introduced="0.4")
    if dst.is_indirect or any(src.is_indirect for src in srcs):
        _read_modify_write(instr, dst, srcs, unique_indices, skip)
        return
    if skip:
        violate("dma_copy.oob", f"nisa.{instr}: oob_mode.skip is only valid with vector_offset indexing")
    total = np.zeros(dst.size, dtype=np.float32)
    for i, src in enumerate(srcs):
        if src.buffer == "psum" or src.size != dst.size:
            violate("dma_compute.operands", f"nisa.{instr}: srcs[{i}] must be in HBM/SBUF with dst's {dst.size} elements")
        shared_read(instr, src)
        total = total + dt.to_fp32(src.array()).reshape(-1)
    with shared_write(instr, dst):
        write(instr, dst, total.reshape(dst.shape[0], -1) if dst.ndim > 1 else total)
    item = dst.dtype.itemsize
    run = max(1, contiguous_run_elements(dst))
    record_dma(instr, dst.size * item * (len(srcs) + 1), sbuf_span(dst, *srcs), run * item, -(-dst.size // run), False)


def _same_view(a, b):
    """Whether two tensor handles name the same elements (the "source that matches dst" of a read-modify-write)."""
    return a is b or (a.storage is b.storage and a.shape == b.shape and a.dtype == b.dtype
                      and a._byte_offset == b._byte_offset and a._byte_strides == b._byte_strides
                      and (a._indirect is None) == (b._indirect is None)
                      and (a._indirect is None or a._indirect.index is b._indirect.index))


def _read_modify_write(instr, dst, srcs, unique_indices, skip):
    """dma_compute with a vector_offset: scatter RMW ``dst(HBM)[idx] += data(SBUF)`` or gather RMW
    ``dst(SBUF) += src(HBM)[idx]``, in fp32 (nki/api/nki/isa/__init__.py, dma_compute, "Read-Modify-Write")."""
    from .isa import indirect_rows

    rule = "dma_compute.rmw"
    if len(srcs) != 2:
        violate(rule, f"nisa.{instr}: a read-modify-write (a vector_offset operand) takes exactly 2 srcs, got {len(srcs)}")
    if unique_indices is not True:
        violate(rule, f"nisa.{instr}: unique_indices must be True with vector_offset (non-unique indices are not "
                "supported)")
    if dst.is_indirect:  # scatter RMW: one source is dst itself, the other the SBUF data
        matching = [i for i, src in enumerate(srcs) if _same_view(src, dst)]
        if dst.is_on_chip or len(matching) != 1:
            violate(rule, f"nisa.{instr}: a scatter read-modify-write needs dst in HBM with a vector_offset and one "
                    "source that is that same dst view")
        data = srcs[1 - matching[0]]
        if data.is_indirect or data.buffer != "sbuf":
            violate(rule, f"nisa.{instr}: the scatter read-modify-write's data source must be a plain SBUF tile, got "
                    f"{data.name!r} in {data.buffer}")
        view, rows_of = dst, data
    else:  # gather RMW: one source is the indirect HBM view, the other dst itself
        indirect = [i for i, src in enumerate(srcs) if src.is_indirect]
        if len(indirect) != 1 or not _same_view(srcs[1 - indirect[0]], dst) or dst.buffer != "sbuf":
            violate(rule, f"nisa.{instr}: a gather read-modify-write needs dst in SBUF, one source an HBM view with "
                    "a vector_offset and the other that same dst")
        view, rows_of = srcs[indirect[0]], dst
    rows = view.shape[0]
    row_elems = view.size // max(rows, 1)
    if rows_of.size != view.size:
        violate("dma_compute.operands", f"nisa.{instr}: element counts differ ({rows_of.name!r} has {rows_of.size}, "
                f"{view.name!r} {view.size})")
    valid, element_index, flat = indirect_rows(instr, view, skip)
    if element_index.size:
        targets = element_index[:, 0]
        if np.unique(targets).size != targets.size:
            violate(rule, f"nisa.{instr}: unique_indices=True but the vector_offset names a row twice (assumption: "
                    "the docs support unique indices only, so a repeat is refused rather than given an order)")
    shared_read(instr, view, element_index)
    if dst.is_indirect:
        data_rows = dt.to_fp32(read2d(rows_of)).reshape(rows, -1)[valid]
        with shared_write(instr, view, element_index):
            flat[element_index] = dt.cast(dt.to_fp32(flat[element_index]) + data_rows, view.dtype)
    else:
        gathered = np.zeros((rows, row_elems), dtype=np.float32)
        gathered[valid] = dt.to_fp32(flat[element_index])
        write(instr, dst, dt.to_fp32(read2d(dst)).reshape(rows, -1) + gathered)
    n_valid = int(np.count_nonzero(valid))
    item = max(view.dtype.itemsize, rows_of.dtype.itemsize)
    record_dma(instr, n_valid * row_elems * item * 3, sbuf_span(rows_of), row_elems * item, n_valid, True)


# -- virtual registers -----------------------------------------------------------------------------
class VirtualRegister:
    """A virtual register of an engine sequencer: one 32-bit value, known at simulation time. It holds an integer,
    or an fp32 value after ``register_load`` of a float32 tensor ("Each register is 32-bit and supports multiple data
    types: u8, u16, u32, i8, i16, i32, and fp32", nki/get-started/nki-language-guide.rst, Dynamic Control Flow).

    The kernel itself cannot read it in Python: on hardware its value exists only while the kernel runs, so
    ``int(r)``, ``range(r)``, comparisons and arithmetic on it are refused (the tracer frontend raises
    ``TypeError``; rule ``register.python-value``); ``while r:`` runs with a ``DeprecationWarning``, as NKI 0.6
    still runs it. Instructions read it: as a loop bound, a ``scalar_offset``, or ``register_store``. ``frozen``: a
    loop index, which the kernel may not write (``nl.loop.index-read-only``) nor test in Python.
    """

    def __init__(self, state=None, frozen=False):
        self.value = None if state is None else int(state)
        self.frozen = bool(frozen)

    def read(self) -> int:
        """The integer an instruction reads as a loop bound, condition or offset (the simulator's own access)."""
        value = self.content()
        if isinstance(value, np.float32):
            violate("register.operands", f"a register holding the fp32 value {value} is used as an integer (a loop "
                    "bound, condition or offset); load it from an integer tensor (assumption: the docs give no "
                    "conversion between a register's data types)")
        return value

    def content(self):
        """The register's 32-bit value as it holds it: an int, or an np.float32 loaded from a float32 tensor."""
        if self.value is None:
            raise KernelSignatureError("VirtualRegister read before it was written")
        return self.value

    def _python_use(self, *_):
        violate("register.python-value", "a VirtualRegister's value is not known while the kernel is built: use it "
                "as a loop bound, as .ap(scalar_offset=...) or through nisa.register_store, not in int(), bool(), "
                "range(), if/while or Python arithmetic", KernelSignatureError)

    def __bool__(self):
        # ``while reg:`` still runs in NKI 0.6, deprecated (release notes, 0.6.0, Deprecated and Removed APIs)
        warnings.warn("`while reg:` / `if reg:` on a VirtualRegister is deprecated since NKI 0.6 and raises TypeError "
                      "under the tracer frontend; use nl.while_loop", DeprecationWarning, stacklevel=2)
        from .lang_control import caller_line, record_control_flow

        value = bool(self.read())
        record_control_flow(caller_line(1), "register condition", value)
        return value

    __int__ = __index__ = __float__ = _python_use
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __floordiv__ = __rfloordiv__ = _python_use
    __truediv__ = __rtruediv__ = __mod__ = __rmod__ = __lt__ = __le__ = __gt__ = __ge__ = _python_use
    __hash__ = object.__hash__

    def __eq__(self, other):
        return self is other or self._python_use()

    def __repr__(self):
        return f"VirtualRegister({self.value})"


class LoopIndex(VirtualRegister):
    """The index of a ``nl.fori_loop`` iteration: a read-only register (``nki/migration/index.rst``, rules for
    migrated loops: "The loop variable is read-only ... Read it as a runtime offset via .ap(scalar_offset=...)")."""

    def __init__(self, value):
        super().__init__(value, frozen=True)

    __bool__ = VirtualRegister._python_use

    def __repr__(self):
        return f"LoopIndex({self.value})"


def _wrap32(value):
    """A 32-bit register's integer: u32 values (up to 2**32 - 1) and i32 values are kept as written
    (nki-language-guide.rst L526: "Each register is 32-bit and supports ... u32, ... i32"); anything wider wraps to
    int32. assumption: a register read as a loop bound or offset gives the value it was written with (the docs give
    no conversion between a register's integer types)."""
    value = int(value)
    if -(1 << 31) <= value < (1 << 32):
        return value
    return int(np.int64(value).astype(np.int32))


def register_alloc(x=None):
    """A new virtual register, uninitialised or holding the immediate ``x``."""
    if x is not None and (not isinstance(x, (int, np.integer)) or isinstance(x, bool)):
        violate("register.operands", f"nisa.register_alloc: x must be None or an int, got {x!r}")
    return VirtualRegister(None if x is None else _wrap32(x))


def _register(role, value, fn):
    if not isinstance(value, VirtualRegister):
        violate("register.operands", f"nisa.{fn}: {role} must be a VirtualRegister from nisa.register_alloc, got "
                f"{type(value).__name__}")
    if role == "dst" and value.frozen:
        violate("nl.loop.index-read-only", f"nisa.{fn}: dst is a loop index, which is read-only",
                LoopIndexWriteError)
    return value


def register_move(dst, src):
    """``dst = src`` (an int constant or another register)."""
    _register("dst", dst, "register_move")
    if isinstance(src, VirtualRegister):
        dst.value = src.content()
    elif isinstance(src, (int, np.integer)) and not isinstance(src, bool):
        dst.value = _wrap32(src)
    else:
        violate("register.operands", f"nisa.register_move: src must be an int or a VirtualRegister, got {src!r}")


def _scalar_tensor(fn, role, t):
    if not isinstance(t, NkiTensor) or t.size != 1 or t.dtype.itemsize > 4 or t.buffer == "psum":
        violate("register.operands", f"nisa.{fn}: {role} must be a one-element HBM/SBUF tensor of at most 32 bits, "
                f"got {getattr(t, 'shape', t)!r}")


REGISTER_DTYPES = (dt.uint8, dt.uint16, dt.uint32, dt.int8, dt.int16, dt.int32, dt.float32)
"""The data types a register holds (nki/get-started/nki-language-guide.rst, Dynamic Control Flow)."""


def _register_dtype(fn, role, t):
    if t.dtype not in REGISTER_DTYPES or dt.is_tfloat32(t.dtype):
        violate("register.operands", f"nisa.{fn}: {role} {t.name!r} is {dt.name(t.dtype)}; a register holds u8, u16, "
                "u32, i8, i16, i32 or fp32")


def register_load(dst, src):
    """Load one value (up to 32 bits) from an HBM/SBUF tensor into a register: an fp32 value from a float32 tensor
    (kept exactly), an integer from an integer tensor."""
    _register("dst", dst, "register_load")
    _scalar_tensor("register_load", "src", src)
    _register_dtype("register_load", "src", src)
    shared_read("register_load", src)
    value = src.array().reshape(-1)[0]
    dst.value = np.float32(value) if src.dtype == dt.float32 else _wrap32(int(value))


def register_store(dst, src):
    """Store a register's value into a one-element HBM/SBUF tensor."""
    _register("src", src, "register_store")
    _scalar_tensor("register_store", "dst", dst)
    _register_dtype("register_store", "dst", dst)
    value = src.content()
    if isinstance(value, np.float32):
        if dst.dtype != dt.float32:
            violate("register.operands", f"nisa.register_store: the register holds the fp32 value {value}; dst "
                    f"{dst.name!r} is {dt.name(dst.dtype)}, expected float32 (assumption: the docs give no conversion "
                    "between a register's data types)")
        values = np.full(dst.shape, value, dtype=np.float32)
    elif dst.dtype in (dt.int32, dt.uint32):  # a 32-bit int tensor gets the register's 32 bits (u32 0xFFFFFFFF: -1)
        values = np.full(dst.shape, np.array(value & 0xFFFFFFFF, dtype=np.uint32).view(dst.dtype), dtype=dst.dtype)
    else:
        values = np.full(dst.shape, value, dtype=np.int64)
    with shared_write("register_store", dst):
        write("register_store", dst, values)


# -- multi-core ------------------------------------------------------------------------------------
@instruction
def core_barrier(data, cores, engine=engine.gpsimd, name=None):
    """Synchronise the two cores of an LNC2 launch on shared HBM ``data`` (NeuronCore-v3+).

    The first barrier of a launch whose programs run one after the other makes ``run_kernel`` run it again as two
    threads that meet at every barrier (``runtime.Lockstep``): writes made before it, on either core, are visible
    after it (isa L2601-2654: "Now both cores can safely read the complete tensor"; nki_simulator.rst L207-210: the
    official simulator runs kernel[2] as two threads that core_barrier synchronises).
    """
    instr = "core_barrier"
    require_target(instr, "nisa.core_barrier", 3)
    tensor(instr, "data", data)
    if tuple(cores) != (0, 1) or data.buffer != "shared_hbm":
        violate("isa.buffer", f"nisa.{instr}: cores must be (0, 1) and data in shared HBM (got {cores!r}, {data.buffer})")
    if runtime.current().num_programs != 2:
        violate("isa.target_only", f"nisa.{instr}: needs an LNC2 launch (kernel[2])")
    _meet_other_core("nisa.core_barrier")


def _meet_other_core(what, payload=None):
    """Wait for the other program of the kernel[2] launch at this meeting (a ``core_barrier`` or ``sendrecv``);
    returns what it brought. A launch whose programs run one after the other is run again as two threads."""
    context = runtime.current()
    if context.lockstep is None:
        raise runtime.NeedsLockstep()
    if context.program_id == 1:  # program 1 ends the interval program 0 has already run (races.SharedAccessLog)
        interval = context.lockstep.arrived[1]
        context.shared_access.end_interval(interval, f"{what} (meeting {interval + 1} of the two cores)")
    problem, theirs = context.lockstep.meet(context.program_id, what, payload)
    if problem:
        violate("core_barrier.both_cores", problem)
    return theirs


# dma_engine.gpsimd_dma's bytes per partition by element size (sendrecv docstring)
GPSIMD_DMA_MAX_BYTES = {4: 1024, 2: 512, 1: 256}


@instruction
def sendrecv(src, dst, send_to_rank, recv_from_rank, pipe_id, dma_engine=dma_engine.dma, name=None):
    """Exchange SBUF tiles between the two cores of an LNC2 launch: this core's ``src`` goes to the ``dst`` of core
    ``send_to_rank`` while ``dst`` receives the ``src`` of core ``recv_from_rank`` (NeuronCore-v3+).

    Both cores meet here as at a ``core_barrier`` (the default engine "uses the standard DMA engine with CoreBarrier
    synchronization"; an assumption for ``gpsimd_dma``), so their HBM writes before it are visible after it. Each
    core's send must be the other's receive. Charged as one DMA of ``src``'s bytes.
    """
    instr = "sendrecv"
    require_target(instr, "nisa.sendrecv", 3)
    on_chip(instr, "src", src, allowed=("sbuf",))
    on_chip(instr, "dst", dst, allowed=("sbuf",))
    engines = globals()["dma_engine"]
    problems = []
    if not isinstance(dma_engine, engines):
        problems.append(f"dma_engine a nisa.dma_engine member (got {dma_engine!r})")
    if src.dtype != dst.dtype:
        problems.append(f"src and dst of one dtype (src {src.dtype.name}, dst {dst.dtype.name})")
    if src.shape != dst.shape or src._byte_strides[1:] != dst._byte_strides[1:]:
        problems.append(f"src and dst of one shape and layout (src {src.shape}, dst {dst.shape})")
    for role, rank in (("send_to_rank", send_to_rank), ("recv_from_rank", recv_from_rank)):
        if isinstance(rank, (bool, np.bool_)) or not isinstance(rank, (int, np.integer)) or rank not in (0, 1):
            problems.append(f"{role} 0 or 1 (got {rank!r})")
    if isinstance(pipe_id, (bool, np.bool_)) or not isinstance(pipe_id, (int, np.integer)):
        problems.append(f"an int pipe_id (got {pipe_id!r})")
    if dma_engine is engines.gpsimd_dma:
        limit = GPSIMD_DMA_MAX_BYTES.get(src.dtype.itemsize)
        if limit is not None and src.free_size * src.dtype.itemsize > limit:
            problems.append(f"at most {limit} bytes per partition of a {src.dtype.itemsize * 8}-bit type with "
                            f"dma_engine.gpsimd_dma (got {src.free_size * src.dtype.itemsize})")
    if problems:
        violate("sendrecv.operands", f"nisa.{instr}: needs " + "; ".join(problems))
    context = runtime.current()
    if context.num_programs != 2:
        violate("isa.target_only", f"nisa.{instr}: needs an LNC2 launch (kernel[2])")
    me = context.program_id
    sent = src.array().copy()
    theirs = _meet_other_core(f"nisa.sendrecv (pipe_id {int(pipe_id)})",
                              (int(send_to_rank), int(recv_from_rank), sent))
    their_send, their_receive, their_values = theirs
    other = 1 - me
    mine_to = int(send_to_rank)
    if (mine_to == other) != (their_receive == me) or (their_send == me) != (int(recv_from_rank) == other):
        violate("sendrecv.operands", f"nisa.{instr}: program {me} sends to core {mine_to} and receives from core "
                f"{int(recv_from_rank)}, program {other} sends to core {their_send} and receives from core "
                f"{their_receive}: each core's send must be the other core's receive")
    received = their_values if int(recv_from_rank) == other else sent
    write(instr, dst, received)
    item = src.dtype.itemsize
    record_dma(instr, src.size * item, sbuf_span(src), src.free_size * item, src.shape[0], False)


# -- NeuronCore-v4 only ----------------------------------------------------------------------------
@instruction
def nc_matmul_mx(dst, stationary, moving, stationary_scale, moving_scale, tile_position=None, tile_size=None,
                 accumulate=None, name=None):
    """MXFP8/MXFP4 matmul (NeuronCore-v4 only; refused on trn1/trn2)."""
    require_target("nc_matmul_mx", "nisa.nc_matmul_mx", 4)
    raise NotImplementedError("nisa.nc_matmul_mx is not simulated [rule isa.not_simulated]")


@instruction
def quantize_mx(dst, src, dst_scale, name=None):
    """MXFP8 quantisation (NeuronCore-v4 only; refused on trn1/trn2)."""
    require_target("quantize_mx", "nisa.quantize_mx", 4)
    raise NotImplementedError("nisa.quantize_mx is not simulated [rule isa.not_simulated]")


del ops  # imported for parity of defaults with the other modules only
