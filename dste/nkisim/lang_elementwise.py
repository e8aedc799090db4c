"""Element-wise ``nl`` functions: ``nl.add(x, y)``, ``nl.exp(x)``, ... lowered to one ISA instruction each.

Binary functions become ``nisa.tensor_tensor`` (two tiles of one shape) or ``nisa.tensor_scalar``
(a tile and a scalar; ``reverse0`` when the scalar comes first). Unary functions in the activation
table become ``nisa.activation`` (ScalarE), ``rsqrt`` a GpSimd ``tensor_scalar``
(NKI 0.5 release notes); ``invert``, ``logical_not`` and ``negative`` become one
``nisa.tensor_scalar`` as their docstrings describe (XOR with all-ones, XOR with 1, times -1). The
result is a new SBUF tile of ``dtype`` (default: the input tile's dtype).
"""

import numpy as np

from . import isa, ops, runtime, version
from . import dtypes as dt
from .lang_common import emulate, is_tile, new_tile, on_chip_tile, result_dtype
from .rules_language import violate

_NOT_HARDWARE = {"divide": "nl.divide.not-hardware", "mod": "nl.mod.not-hardware", "fmod": "nl.fmod.not-hardware"}
_TRN3_ONLY = {"abs_max": "nl.abs_max.trn3-only", "abs_min": "nl.abs_min.trn3-only"}
_SCALAR_TYPES = (int, float, np.integer, np.floating)


def binary(op, x, y, dtype=None):
    name = op.name
    if name in _NOT_HARDWARE:
        hint = " (multiply by nl.reciprocal(y) instead)" if name == "divide" else ""
        violate(_NOT_HARDWARE[name], f"nl.{name}: not available as a hardware instruction{hint}")
    if name in _TRN3_ONLY:
        version.require(f"nl.{name}", introduced="0.4")
        violate(_TRN3_ONLY[name], f"nl.{name} on {runtime.current().target}: NeuronCore-v4 (trn3) only")
    if not is_tile(x) and not is_tile(y):
        violate("nl.binary.tile-operand", f"nl.{name}: x and y are both scalars ({x!r}, {y!r})")
    if name == "power" and not (is_tile(x) and is_tile(y)):
        violate("nl.power.scalar-exponent", "nl.power(tile, scalar) is not supported; pass two tiles")
    for role, value in (("x", x), ("y", y)):
        if is_tile(value):
            on_chip_tile(name, role, value)
        elif isinstance(value, bool) or not isinstance(value, _SCALAR_TYPES):
            violate("nl.binary.tile-operand", f"nl.{name}: {role} must be a tile or a number, got {value!r}")
    if is_tile(x) and is_tile(y):
        if x.shape != y.shape:
            violate("nl.binary.no-broadcast", f"nl.{name}: x {x.shape} and y {y.shape} differ in shape")
        out = new_tile(x.shape, result_dtype(dtype, x.dtype), name)
        isa.tensor_tensor(dst=out, data1=x, data2=y, op=op)
        return out
    tile, scalar, reverse = (x, y, False) if is_tile(x) else (y, x, True)
    out = new_tile(tile.shape, result_dtype(dtype, tile.dtype), name)
    isa.tensor_scalar(dst=out, data=tile, op0=op, operand0=scalar, reverse0=reverse)
    return out


def unary(op, x, dtype=None):
    name = op.name
    on_chip_tile(name, "x", x)
    out = new_tile(x.shape, result_dtype(dtype, x.dtype), name)
    if name == "invert":
        isa.tensor_scalar(dst=out, data=x, op0=ops.bitwise_xor, operand0=0xFFFFFFFF)
    elif name == "logical_not":
        isa.tensor_scalar(dst=out, data=x, op0=ops.logical_xor, operand0=1.0)
    elif name == "negative":
        isa.tensor_scalar(dst=out, data=x, op0=ops.multiply, operand0=-1.0)
    elif name == "rsqrt":
        # NKI 0.5: nl.rsqrt runs on GpSimd for precision, so PSUM inputs are refused (release notes).
        if x.buffer == "psum":
            violate("nl.rsqrt.no-psum", f"nl.rsqrt: x {x.name!r} is in PSUM; copy it to SBUF or use nisa.activation")
        isa.tensor_scalar(dst=out, data=x, op0=op, operand0=0.0, engine=isa.engine.gpsimd)
    elif op.in_activation_table:
        with isa.full_domain():
            isa.activation(dst=out, op=op, data=x)
    else:
        with np.errstate(all="ignore"):
            values = op.fn(dt.to_fp32(x.array()))
        emulate(name, "scalar" if name in ("cos", "tan") else "vector", out, values)
    return out
