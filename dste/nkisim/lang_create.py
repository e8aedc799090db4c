"""Tensor creation: ``nl.ndarray/zeros/ones/full/zeros_like/empty_like/rand``, shared constants, seeds.

On-chip tensors are filled by one ``nisa.memset``; HBM tensors created by ``zeros/ones/full`` are
filled directly (no engine instruction; an assumption). ``nl.rand`` / ``nl.dropout`` draw from a
NumPy generator owned by the run (``RunContext.random_generator``, seeded alike at the start of every
run) that ``nl.random_seed`` reseeds; their lowering (``nisa.rng`` / ``rand2``) is not
simulated bit for bit (rule ``nl.lowering.undocumented``).
"""

import os

import numpy as np

from . import dtypes as dt
from . import isa, ops, runtime
from .lang_buffers import MemoryRegion, buffer_name, sbuf, shared_hbm
from .lang_common import emulate, new_tile, on_chip_tile, result_dtype
from .rules_language import violate
from .tensor import MAX_PARTITIONS, ON_CHIP, NkiTensor, allocate

_SHARED_CONSTANT_DTYPES = frozenset(
    dt.as_dtype(d) for d in ("float32", "float16", "bfloat16", "int32", "int16", "int8", "uint32", "uint16", "uint8",
                             "float8_e4m3fn", "float8_e5m2", "float8_e8m0fnu")
)


def ndarray(shape, dtype, buffer=sbuf, name="", address=None):
    """A new tensor; on-chip and new HBM memory is uninitialised (every byte 0xFF: NaN through float views, -1 or the maximum through integer ones)."""
    buf = buffer_name(buffer, "ndarray")
    if address is not None:
        try:
            partition_offset, free_offset = (int(a) for a in address)
        except (TypeError, ValueError):
            raise ValueError(f"nl.ndarray: address must be (partition_offset, free_offset), got {address!r}") from None
        if buf not in ON_CHIP or partition_offset < 0 or free_offset < 0:
            raise ValueError(f"nl.ndarray: address {address!r} needs an on-chip buffer and non-negative offsets")
        banks = _check_address(shape, dtype, buf, partition_offset, free_offset)
    context = runtime.current()
    if buf == "shared_hbm" and context.shared_outputs is not None:
        return _shared_allocation(context, shape, dtype, name)
    tensor = allocate(shape, dtype, buf, name, psum_banks=banks if address is not None else None,
                      sbuf_start=free_offset if address is not None and buf == "sbuf" else None)
    if address is not None:
        tensor.storage.partition_base = partition_offset  # instructions check the start-partition rule on this lane
    return tensor


def _check_address(shape, dtype, buf, partition_offset, free_offset):
    """An explicit address keeps the tensor inside its buffer: its partitions within the 128 lanes, its bytes within
    a partition, and a PSUM tensor at the start of a bank. The migration guide calls the free offset an element offset
    and its PSUM example passes bytes (``bank_id * 2048``), so a free offset is refused only where both readings put
    the tensor out of place. Returns the PSUM banks the tensor occupies (None in SBUF), read as bytes where that
    starts a bank (the example places a tensor "on bank 3" with ``address=(0, bank_id * 2048)``), else as
    elements: tensors placed on one bank share it (``MemoryTracker``)."""
    shape = tuple(int(s) for s in shape)
    memory = runtime.current().memory
    if partition_offset + shape[0] > MAX_PARTITIONS:
        violate("nl.ndarray.address", f"nl.ndarray: address {(partition_offset, free_offset)} places {shape[0]} "
                f"partitions from partition {partition_offset}, past the {MAX_PARTITIONS} a buffer has")
    itemsize = dt.as_dtype(dtype).itemsize
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * itemsize
    limit = memory.limits[buf]
    if free_offset + row_bytes > limit:
        violate("nl.ndarray.address", f"nl.ndarray: address {(partition_offset, free_offset)} with {row_bytes} bytes "
                f"per partition ends past the {limit} bytes of a {buf.upper()} partition")
    if buf != "psum":
        return None
    bank = memory.psum_bank_bytes
    starts = [start for start in (free_offset, free_offset * itemsize)
              if start % bank == 0 and start + row_bytes <= limit]
    if not starts:
        violate("nl.ndarray.address", f"nl.ndarray: PSUM address {(partition_offset, free_offset)} does not start a "
                f"bank ({bank} bytes) inside PSUM read as bytes or as {dt.as_dtype(dtype).name} elements")
    first = starts[0] // bank
    return range(first, first + max(1, -(-row_bytes // bank)))


def _shared_allocation(context, shape, dtype, name):
    """Under LNC2, the k-th shared_hbm allocation of every program names the same tensor."""
    from .errors import ConstraintError

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


def _fill(tensor, value):
    if tensor.is_on_chip and tensor.ndim == 1:  # an SBUF [1] tensor (rule isa.on_chip_1d): the register examples'
        tensor.array()[...] = value                    # nl.ones([1], int32, buffer=nl.sbuf)
    elif tensor.is_on_chip:
        isa.memset(dst=tensor, value=int(value) if dt.is_int(tensor.dtype) else float(value))
    else:
        tensor.array()[...] = value
    return tensor


def zeros(shape, dtype, buffer=sbuf, name=""):
    return _fill(ndarray(shape, dtype, buffer=buffer, name=name), 0)


def ones(shape, dtype, buffer=sbuf, name=""):
    return _fill(ndarray(shape, dtype, buffer=buffer, name=name), 1)


def full(shape, fill_value, dtype, buffer=sbuf, name=""):
    return _fill(ndarray(shape, dtype, buffer=buffer, name=name), fill_value)


def zeros_like(x, dtype=None, buffer=None, name=""):
    """Zeros shaped like ``x``; buffer defaults to SBUF (stub docstring)."""
    return zeros(x.shape, result_dtype(dtype, x.dtype), sbuf if buffer is None else buffer, name)


def empty_like(x, dtype=None, buffer=None, name=""):
    """An uninitialised tensor shaped like ``x``; dtype and buffer default to x's."""
    return ndarray(x.shape, result_dtype(dtype, x.dtype), MemoryRegion(x.buffer) if buffer is None else buffer, name)


def shared_constant(constant):
    """A shared-HBM tensor holding ``constant`` (a NumPy array or the path of a .npy file)."""
    if isinstance(constant, (str, os.PathLike)):
        constant = np.load(constant)
    array = np.asarray(constant)
    if array.dtype not in _SHARED_CONSTANT_DTYPES:
        violate("nl.shared_constant.dtype", f"nl.shared_constant: element type {array.dtype.name} is not supported")
    tensor = ndarray(array.shape if array.ndim else (1,), array.dtype, buffer=shared_hbm, name="shared_constant")
    tensor.array()[...] = array.reshape(tensor.shape)
    return tensor


def shared_identity_matrix(n, dtype="uint8", dst=None):
    """An n x n identity in SBUF: iota (j - p) then ``== 0``; written into ``dst`` when given."""
    n = int(n)
    if not 1 <= n <= 128:
        violate("nl.shared_identity_matrix.size", f"nl.shared_identity_matrix(n={n}): n must be in [1, 128]")
    out = dst if dst is not None else new_tile((n, n), dt.as_dtype(dtype), "shared_identity_matrix")
    if not isinstance(out, NkiTensor) or out.shape != (n, n):
        violate("nl.shared_identity_matrix.size", f"nl.shared_identity_matrix: dst must be an ({n}, {n}) tile")
    offsets = new_tile((n, n), dt.int32, "shared_identity_matrix")
    isa.iota(dst=offsets, pattern=[[1, n]], offset=0, channel_multiplier=-1)
    isa.tensor_scalar(dst=out, data=offsets, op0=ops.equal, operand0=0.0)
    return out


def random_seed(seed):
    """Reseed ``nl.rand`` / ``nl.dropout`` from a [1, 1] SBUF/PSUM tensor holding a 32-bit seed."""
    if not isinstance(seed, NkiTensor) or seed.buffer not in ON_CHIP or seed.size != 1 or seed.dtype.itemsize != 4:
        violate("nl.random_seed.tensor", f"nl.random_seed: seed must be a [1, 1] 32-bit SBUF tensor, got {seed!r}")
    value = int(np.asarray(seed.array()).reshape(-1)[0].view(np.uint32))
    context = runtime.current()
    context.random_generator = np.random.default_rng(value)
    context.profile.record("gpsimd", "nl.random_seed", 64)


def rand(shape, dtype, buffer=sbuf, name=""):
    """Uniform values in [0, 1) (one generator instruction; NumPy's generator, not the hardware's)."""
    tensor = ndarray(shape, dtype, buffer=buffer, name=name)
    values = runtime.current().random_generator.random(tensor.shape, dtype=np.float32)
    if not tensor.is_on_chip:
        tensor.array()[...] = dt.cast(values, tensor.dtype)
        return tensor
    return emulate("rand", "gpsimd", tensor, values)


def dropout(x, rate, dtype=None):
    """Zero each element of ``x`` with probability ``rate`` (a number or a (P, 1) tile); no rescaling."""
    on_chip_tile("dropout", "x", x)
    if isinstance(rate, NkiTensor):
        on_chip_tile("dropout", "rate", rate)
        if rate.shape != (x.shape[0], 1):
            violate("nl.binary.no-broadcast", f"nl.dropout: a rate tile must be ({x.shape[0]}, 1), got {rate.shape}")
        rate_values = dt.to_fp32(rate.array()).reshape(x.shape[0], *([1] * (x.ndim - 1)))
    else:
        rate_values = np.float32(rate)
    keep = runtime.current().random_generator.random(x.shape, dtype=np.float32) >= rate_values
    out = new_tile(x.shape, result_dtype(dtype, x.dtype), "dropout")
    return emulate("dropout", "vector", out, np.where(keep, dt.to_fp32(x.array()), np.float32(0)), inputs=2)


__all__ = ["MemoryRegion"]
