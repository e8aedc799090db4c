"""``nki.language`` for the simulator: dtypes, buffers, tile sizes, allocation, ranges, ops.

Register this module as ``nki.language`` with :func:`dste.nkisim.install`.
"""

import builtins

from . import runtime
from .dtypes import (  # noqa: F401 - re-exported NKI dtypes
    bfloat16,
    bool_,
    float8_e4m3,
    float8_e4m3fn,
    float8_e5m2,
    float8_e8m0fnu,
    float16,
    float32,
    int8,
    int16,
    int32,
    tfloat32,
    uint8,
    uint16,
    uint32,
)
from .errors import ConstraintError
from .ops import (  # noqa: F401 - re-exported operators and activation functions
    abs,
    abs_max,
    add,
    bitwise_and,
    bitwise_or,
    bitwise_xor,
    copy,
    cos,
    divide,
    equal,
    erf,
    exp,
    gelu,
    gelu_apprx_tanh,
    greater,
    greater_equal,
    identity,
    invert,
    left_shift,
    less,
    less_equal,
    log,
    logical_and,
    logical_or,
    logical_xor,
    max,
    maximum,
    min,
    minimum,
    mod,
    multiply,
    not_equal,
    power,
    reciprocal,
    relu,
    right_shift,
    rsqrt,
    sigmoid,
    sign,
    silu,
    sin,
    softplus,
    sqrt,
    square,
    subtract,
    tanh,
)
from .tensor import DynSlice, NkiTensor, allocate


class Buffer:
    """A memory location (``nl.sbuf``, ``nl.psum``, ``nl.hbm``, ``nl.shared_hbm``, ``nl.private_hbm``)."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"nl.{self.name}"


sbuf = Buffer("sbuf")
psum = Buffer("psum")
hbm = Buffer("hbm")
shared_hbm = Buffer("shared_hbm")
private_hbm = Buffer("private_hbm")
_BUFFERS = {b.name: b for b in (sbuf, psum, hbm, shared_hbm, private_hbm)}


class tile_size:  # noqa: N801 - NKI's name
    """Hardware tile limits (NKI_NOTES §2)."""

    pmax = 128
    psum_bank_fmax = 512
    psum_fmax = 512
    gemm_stationary_fmax = 128
    gemm_moving_fmax = 512
    psum_num_banks = 8


def _buffer_name(buffer):
    if isinstance(buffer, Buffer):
        return buffer.name
    if isinstance(buffer, str) and buffer in _BUFFERS:
        return buffer
    raise ConstraintError(f"unknown buffer {buffer!r}; allowed: nl.sbuf, nl.psum, nl.hbm, nl.shared_hbm, nl.private_hbm")


def ndarray(shape, dtype, buffer=sbuf, name="", address=None):
    """A new tensor. On-chip and new HBM memory is uninitialised (NaN for floats, 4 for integers)."""
    buf = _buffer_name(buffer)
    context = runtime.current()
    if buf == "shared_hbm" and context.shared_outputs is not None:
        return _shared_allocation(context, shape, dtype, name)
    return allocate(shape, dtype, buf, name)


def _shared_allocation(context, shape, dtype, name):
    """Under LNC2, the k-th shared_hbm allocation of every program names the same tensor."""
    k = context.shared_count
    context.shared_count += 1
    if context.program_id == 0:
        tensor = allocate(shape, dtype, "shared_hbm", name)
        context.shared_outputs.append(tensor)
        return tensor
    first = context.shared_outputs[k]
    tensor = allocate(shape, dtype, "shared_hbm", name, fill=False)
    if tensor.shape != first.shape or tensor.dtype != first.dtype:
        raise ConstraintError(
            f"shared_hbm allocation #{k} differs between programs: {first.shape} {first.dtype.name} "
            f"vs {tensor.shape} {tensor.dtype.name} (all programs must allocate the same outputs)"
        )
    return first


def zeros(shape, dtype, buffer=sbuf, name=""):
    """A new zero-filled tensor (counts as one memset on an on-chip buffer)."""
    from . import isa

    tensor = ndarray(shape, dtype, buffer=buffer, name=name)
    if tensor.is_on_chip:
        isa.memset(tensor, 0 if tensor.dtype.kind in "iu" else 0.0)
    else:
        tensor.array()[...] = 0
    return tensor


def ds(start, size, step=1):
    """Dynamic-slice-style index: ``size`` elements from ``start``."""
    return DynSlice(start, size, step)


def affine_range(start, stop=None, step=1):
    return builtins.range(start, stop, step) if stop is not None else builtins.range(start)


def sequential_range(start, stop=None, step=1):
    return builtins.range(start, stop, step) if stop is not None else builtins.range(start)


def static_range(start, stop=None, step=1):
    return builtins.range(start, stop, step) if stop is not None else builtins.range(start)


def program_id(axis=0):
    if axis != 0:
        raise ConstraintError(f"nl.program_id(axis={axis}): only axis 0 exists (launch grids are 1-D)")
    return runtime.current().program_id


def num_programs(axes=None):
    return runtime.current().num_programs


def program_ndim():
    return 1


def load(src, dtype=None):
    """A new SBUF tile holding ``src`` (one DMA)."""
    from . import isa

    if not isinstance(src, NkiTensor):
        raise ConstraintError(f"nl.load: src must be an NkiTensor, got {type(src).__name__}")
    tile = ndarray(src.shape, dtype or src.dtype, buffer=sbuf, name=f"load_{src.name}")
    isa.dma_copy(dst=tile, src=src)
    return tile


def store(dst, value):
    """Write the on-chip tile ``value`` to ``dst`` (one DMA)."""
    from . import isa

    isa.dma_copy(dst=dst, src=value)


def binary_op(op, x, y, dtype=None):
    """``nl.<op>(x, y)``: a new SBUF tile from tensor_tensor (two tiles) or tensor_scalar (tile, scalar)."""
    from . import isa

    if not isinstance(x, NkiTensor):
        raise ConstraintError(f"nl.{op.name}: first operand must be a tile, got {type(x).__name__}")
    out = ndarray(x.shape, dtype or x.dtype, buffer=sbuf, name=f"{op.name}_result")
    if isinstance(y, NkiTensor) and y.shape == x.shape:
        isa.tensor_tensor(dst=out, data1=x, data2=y, op=op)
    else:
        isa.tensor_scalar(dst=out, data=x, op0=op, operand0=y)
    return out


def unary_activation(fn, x, dtype=None):
    """``nl.<fn>(x)``: a new SBUF tile from one ScalarE activation."""
    from . import isa

    out = ndarray(x.shape, dtype or x.dtype, buffer=sbuf, name=f"{fn.name}_result")
    isa.activation(dst=out, op=fn, data=x)
    return out
