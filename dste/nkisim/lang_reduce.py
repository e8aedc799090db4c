"""Reductions and normalisations: ``nl.sum/prod/max/min/mean/var/all``, ``nl.softmax``, ``nl.rms_norm``.

Reductions lower to ``nisa.tensor_reduce`` (VectorE), which only reduces the last contiguous free
dims; that is also the documented limit of the ``axis`` argument. ``mean`` and ``var`` keep fp32
intermediates (the ``mean`` docstring says so; ``var`` is assumed to do the same). On-chip results
stay at least 2-D: reducing every free dim without ``keepdims`` leaves a ``(P, 1)`` tile.
"""

import math

from . import dtypes as dt
from . import isa, ops
from .lang_common import new_tile, on_chip_tile, result_dtype
from .rules_language import violate

# tensor_reduce takes the legal reduction operators of tbl-aluop (nl.maximum / nl.minimum, not nl.max / nl.min).
_REDUCE_OP = {"sum": ops.add, "prod": ops.multiply, "max": ops.maximum, "min": ops.minimum}


def reduction_axes(function, x, axis):
    """The sorted, non-negative axes; they must be the last contiguous free dims (never 0)."""
    items = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    try:
        axes = sorted({int(a) + (x.ndim if int(a) < 0 else 0) for a in items})
    except (TypeError, ValueError):
        violate("nl.reduce.axis", f"nl.{function}: axis must be an int or a list of ints, got {axis!r}")
    if not axes or axes[0] < 1 or axes != list(range(axes[0], x.ndim)):
        violate("nl.reduce.axis", f"nl.{function}: axis {axis!r} on a {x.ndim}-D tile must be the last contiguous "
                                  f"free dims, e.g. [{x.ndim - 1}] or [1..{x.ndim - 1}]; never the partition dim 0")
    return axes


def _shape(x, axes, keepdims):
    if keepdims:
        return tuple(1 if i in axes else n for i, n in enumerate(x.shape))
    shape = tuple(n for i, n in enumerate(x.shape) if i not in axes)
    return shape if len(shape) >= 2 else shape + (1,)


def _reduce_into(function, op, x, axes, keepdims, dtype):
    out = new_tile(_shape(x, axes, keepdims), dtype, function)
    isa.tensor_reduce(dst=out, op=op, data=x, axis=axes, keepdims=keepdims)
    return out


def _broadcast_back(reduced_keepdims, x, axes):
    """The keepdims-shaped tile as a stride-0 view of ``x``'s shape (free dims only)."""
    view = reduced_keepdims
    for a in axes:
        view = view._broadcast_unchecked(a, x.shape[a])
    return view


def reduce(op, x, axis, dtype=None, keepdims=False):
    function = op.name
    on_chip_tile(function, "x", x)
    axes = reduction_axes(function, x, axis)
    out_dtype = result_dtype(dtype, x.dtype)
    if function in _REDUCE_OP:
        return _reduce_into(function, _REDUCE_OP[function], x, axes, keepdims, out_dtype)
    count = math.prod(x.shape[a] for a in axes)
    if function == "mean":
        total = _reduce_into(function, ops.add, x, axes, keepdims, dt.float32)
        out = new_tile(total.shape, out_dtype, function)
        isa.tensor_scalar(dst=out, data=total, op0=ops.multiply, operand0=1.0 / count)
        return out
    if function == "var":
        # keepdims is ignored: "result always has keepdims=True shape" (stub docstring).
        total = _reduce_into(function, ops.add, x, axes, True, dt.float32)
        mean = new_tile(total.shape, dt.float32, function)
        isa.tensor_scalar(dst=mean, data=total, op0=ops.multiply, operand0=1.0 / count)
        centred = new_tile(x.shape, dt.float32, function)
        isa.tensor_tensor(dst=centred, data1=x, data2=_broadcast_back(mean, x, axes), op=ops.subtract)
        squared = new_tile(x.shape, dt.float32, function)
        isa.activation(dst=squared, op=ops.square, data=centred)
        sum_sq = _reduce_into(function, ops.add, squared, axes, True, dt.float32)
        out = new_tile(sum_sq.shape, out_dtype, function)
        isa.tensor_scalar(dst=out, data=sum_sq, op0=ops.multiply, operand0=1.0 / count)
        return out
    if function == "all":
        nonzero = new_tile(x.shape, dt.float32, function)
        isa.tensor_scalar(dst=nonzero, data=x, op0=ops.not_equal, operand0=0.0)
        return _reduce_into(function, ops.minimum, nonzero, axes, keepdims, out_dtype)
    raise NotImplementedError(f"nl.{function} is not simulated")


def softmax(x, axis=-1, dtype=None):
    """exp(x - max) / sum(exp(x - max)) over ``axis`` (fp32 intermediates)."""
    on_chip_tile("softmax", "x", x)
    axes = reduction_axes("softmax", x, axis)
    peak = _reduce_into("softmax", ops.maximum, x, axes, True, dt.float32)
    shifted = new_tile(x.shape, dt.float32, "softmax")
    isa.tensor_tensor(dst=shifted, data1=x, data2=_broadcast_back(peak, x, axes), op=ops.subtract)
    exps = new_tile(x.shape, dt.float32, "softmax")
    isa.activation(dst=exps, op=ops.exp, data=shifted)
    total = _reduce_into("softmax", ops.add, exps, axes, True, dt.float32)
    inverse = new_tile(total.shape, dt.float32, "softmax")
    with isa.full_domain():
        isa.activation(dst=inverse, op=ops.reciprocal, data=total)
    out = new_tile(x.shape, result_dtype(dtype, x.dtype), "softmax")
    isa.tensor_tensor(dst=out, data1=exps, data2=_broadcast_back(inverse, x, axes), op=ops.multiply)
    return out


def rms_norm(x, w, axis, n, epsilon=1e-06, dtype=None, compute_dtype=None):
    """``x / sqrt(sum(x^2 over axis) / n + epsilon) * w``."""
    on_chip_tile("rms_norm", "x", x)
    on_chip_tile("rms_norm", "w", w)
    if w.shape != x.shape:
        violate("nl.rms_norm.weight", f"nl.rms_norm: w {w.shape} must have the shape of x {x.shape}")
    axes = reduction_axes("rms_norm", x, axis)
    work = result_dtype(compute_dtype, dt.float32)
    squared = new_tile(x.shape, work, "rms_norm")
    isa.activation(dst=squared, op=ops.square, data=x)
    total = _reduce_into("rms_norm", ops.add, squared, axes, True, work)
    mean_sq = new_tile(total.shape, work, "rms_norm")
    isa.tensor_scalar(dst=mean_sq, data=total, op0=ops.multiply, operand0=1.0 / float(n), op1=ops.add,
                      operand1=float(epsilon))
    inv_rms = new_tile(total.shape, work, "rms_norm")
    with isa.full_domain():
        isa.activation(dst=inv_rms, op=ops.rsqrt, data=mean_sq)
    normed = new_tile(x.shape, work, "rms_norm")
    isa.tensor_tensor(dst=normed, data1=x, data2=_broadcast_back(inv_rms, x, axes), op=ops.multiply)
    out = new_tile(x.shape, result_dtype(dtype, x.dtype), "rms_norm")
    isa.tensor_tensor(dst=out, data1=normed, data2=w, op=ops.multiply)
    return out
