"""Helpers shared by the ``nki.language`` implementation modules (``lang_*``)."""

import numpy as np

from . import cost, runtime
from . import dtypes as dt
from .rules_language import violate
from .tensor import HBM_BUFFERS, ON_CHIP, NkiTensor, allocate


def is_tile(value):
    return isinstance(value, NkiTensor)


def on_chip_tile(function, role, value):
    """``value`` must be an SBUF/PSUM tile (rule ``nl.elementwise.on-chip``)."""
    if not isinstance(value, NkiTensor):
        violate("nl.elementwise.on-chip", f"nl.{function}: {role} must be an SBUF or PSUM tile, got {type(value).__name__}")
    if value.buffer not in ON_CHIP:
        violate("nl.elementwise.on-chip", f"nl.{function}: {role} {value.name!r} is in {value.buffer}; load it into "
                                          "SBUF first (nl.load or nisa.dma_copy)")
    return value


def hbm_tensor(function, role, value, rule):
    if not isinstance(value, NkiTensor) or value.buffer not in HBM_BUFFERS:
        where = value.buffer if isinstance(value, NkiTensor) else type(value).__name__
        violate(rule, f"nl.{function}: {role} must be an HBM tensor, got {where}")
    return value


def new_tile(shape, dtype, function, buffer="sbuf"):
    """A fresh on-chip result tile named after the nl function that made it."""
    return allocate(tuple(shape), dt.as_dtype(dtype), buffer, f"{function}_result")


def result_dtype(dtype, default):
    return dt.as_dtype(default if dtype is None else dtype)


def emulate(function, engine, out, values, inputs=1):
    """Write ``values`` into ``out`` as one instruction on ``engine`` whose lowering is not documented.

    The rule ``nl.lowering.undocumented`` (an assumption) covers every caller: the values follow the
    stub's NumPy semantics and the cost is that of one element-wise instruction on ``engine``.
    """
    context = runtime.current()
    context.memory.check(f"nl.{function}")
    target = context.target
    out.array()[...] = dt.cast(np.asarray(values), out.dtype).reshape(out.shape)
    if engine == "vector":
        cycles = cost.vector_cycles(out.free_size, inputs, out.dtype, target)
    elif engine == "scalar":
        cycles = cost.scalar_cycles(out.free_size, target, inputs)
    else:
        cycles = cost.gpsimd_cycles(out.free_size, inputs, target)
    context.profile.record(engine, f"nl.{function}", cycles)
    return out
