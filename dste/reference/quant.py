"""Reference quantization arithmetic: round half to even, saturate, symmetric INT8, float16.

Written from docs/CONTRACTS.md (``References``) and the hardware rule that NeuronCore casts
round to nearest even and saturate; independent of ``dste.format.quant``. Rounding is done
explicitly in float64 (floor, then the half-way case to the even neighbour) rather than with
``np.rint``, and float16 casts start from float64, so the two sides share no code path.

INT8 is symmetric over [-127, 127] with one scale per group: ``scale = max|v| / 127`` in
float32 (1 for an all-zero group), ``q = rne_sat(v / scale)``, ``v ~ q * scale``.
The sensitivity score S of a group is the contract of ``dste.format.hybrid_rows`` (module
docstring, "The sensitivity score"); :func:`int8_sensitivity` restates it group by group.
"""

import numpy as np

from .checks import count
from .layout import FP16_MAX, INT8_QMAX


def _round_half_even(x64: np.ndarray) -> np.ndarray:
    """Nearest integer of float64 ``x64``, ties to the even neighbour (+-inf stay infinite)."""
    with np.errstate(invalid="ignore"):
        low = np.floor(x64)
        fraction = x64 - low  # exact for |x| < 2^52; NaN for +-inf (then no step up)
        low_is_odd = np.mod(low, 2.0) == 1.0
        step_up = (fraction > 0.5) | ((fraction == 0.5) & low_is_odd)
    return low + step_up


def round_half_even_saturate(x, dtype) -> np.ndarray:
    """Round ``x`` to nearest (ties to even) and saturate into ``dtype``'s finite range.

    ``dtype``: an integer type (int8 saturates to the symmetric [-127, 127]) or float16
    (saturates at +-65504). NaN is refused.
    """
    dtype = np.dtype(dtype)
    x64 = np.asarray(x, dtype=np.float64)
    if np.isnan(x64).any():
        raise ValueError("reference round_half_even_saturate: x contains NaN; only finite or +-inf values can be cast")
    if dtype == np.float16:
        return np.minimum(np.maximum(x64, -FP16_MAX), FP16_MAX).astype(np.float16)
    if dtype.kind not in "iu":
        raise TypeError(f"reference round_half_even_saturate: dtype must be an integer type or float16, got {dtype}")
    info = np.iinfo(dtype)
    low = -INT8_QMAX if dtype == np.int8 else info.min
    rounded = _round_half_even(x64)
    return np.minimum(np.maximum(rounded, float(low)), float(info.max)).astype(dtype)


def int8_scale(values, axis=None) -> np.ndarray:
    """``max|v| / 127`` in float32 over ``axis``; 1 where the group is all zero (or empty). NaN/Inf refused."""
    values = np.asarray(values, dtype=np.float32)
    if values.size == 0:
        amax = np.zeros(() if axis is None else np.delete(values.shape, axis), np.float32)
    else:
        amax = np.abs(values).max(axis=axis).astype(np.float32)
    if not np.isfinite(amax).all():  # max|v| is NaN or Inf exactly where a group holds one; NaN > 0 read as "all zero"
        raise ValueError("reference int8_scale: values must be finite (no NaN or Inf)")
    with np.errstate(divide="ignore"):
        scale = (amax / np.float32(INT8_QMAX)).astype(np.float32)
    return np.where(amax > 0, scale, np.float32(1.0)).astype(np.float32)


def quantize_int8(values, scale) -> np.ndarray:
    """``rne_sat(values / scale)``: float32 quotient, then RNE into [-127, 127]."""
    values = np.asarray(values, dtype=np.float32)
    scale = np.asarray(scale, dtype=np.float32)
    if not (np.isfinite(scale) & (scale > 0)).all():
        raise ValueError("reference quantize_int8: every scale must be finite and > 0")
    return round_half_even_saturate((values / scale).astype(np.float32), np.int8)


def dequantize_int8(q, scale) -> np.ndarray:
    """``q * scale`` as a float32 product; ``q`` INT8 steps (integers in [-127, 127]), ``scale`` finite."""
    q = np.asarray(q)
    if q.dtype.kind not in "iu":
        raise TypeError(f"reference dequantize_int8: q must hold INT8 steps (an integer array), got dtype {q.dtype}")
    if q.size and (q.min() < -INT8_QMAX or q.max() > INT8_QMAX):
        raise ValueError(f"reference dequantize_int8: q must lie in [-{INT8_QMAX}, {INT8_QMAX}], got {q.min()} .. "
                         f"{q.max()}")
    scale = np.asarray(scale, dtype=np.float32)
    if not np.isfinite(scale).all():
        raise ValueError("reference dequantize_int8: scale must be finite")
    return (q.astype(np.float32) * scale).astype(np.float32)


def to_fp16(values) -> np.ndarray:
    """Cast to float16 with RNE, saturating at +-65504."""
    return round_half_even_saturate(values, np.float16)


def int8_sensitivity(values, group_ids, n_groups: int) -> np.ndarray:
    """Sensitivity S (float64 [n_groups]) of each group of ``values`` under INT8, group by group.

    For group g with scale ``s = max|v| / 127`` (float32; 1 if all zero): the INT8 error of each
    value is ``e = v - fp32(rne_sat(v / s) * s)`` (in float64); over the group's NONZERO values,
    ``S = sqrt(mean e^2) / rho`` with rho the lower median of |v| (the ``(n - 1) // 2``-th
    smallest); ``S = 0`` for a group without nonzero values.
    """
    n_groups = count(n_groups, "reference int8_sensitivity: n_groups")
    values = np.asarray(values, dtype=np.float32).reshape(-1)
    group_ids = np.asarray(group_ids).reshape(-1)
    if group_ids.dtype.kind not in "iu":
        raise TypeError(f"reference int8_sensitivity: group_ids must be integers, got dtype {group_ids.dtype}")
    if values.shape != group_ids.shape:
        raise ValueError(f"reference int8_sensitivity: values {values.shape} and group_ids {group_ids.shape} differ")
    if not np.isfinite(values).all():
        raise ValueError("reference int8_sensitivity: values must be finite (no NaN or Inf)")
    if group_ids.size and (group_ids.min() < 0 or group_ids.max() >= n_groups):
        raise ValueError(f"reference int8_sensitivity: group_ids must lie in [0, {n_groups})")
    out = np.zeros(n_groups, dtype=np.float64)
    order = np.argsort(group_ids, kind="stable")
    groups, starts = np.unique(group_ids[order], return_index=True)
    for g, members in zip(groups, np.split(order, starts[1:])):
        v = values[members]
        s = int8_scale(v)
        error = v.astype(np.float64) - dequantize_int8(quantize_int8(v, s), s).astype(np.float64)
        nonzero = v != 0
        if not nonzero.any():
            continue
        magnitudes = np.sort(np.abs(v[nonzero]).astype(np.float64))
        rho = magnitudes[(magnitudes.size - 1) // 2]
        out[g] = np.sqrt(np.mean(error[nonzero] ** 2)) / rho
    return out
