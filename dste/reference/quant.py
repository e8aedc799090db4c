"""Quantization arithmetic with the hardware's rounding: round half to even, then saturate.

Every float->int8 and float->float16 conversion in the DSTE format goes through
:func:`round_half_even_saturate`, so the host encoder, the references and the
device kernels agree bit for bit (NeuronCore casts round to nearest even and
saturate). All arithmetic is float32, as on the Vector/Scalar engines.

INT8 is symmetric over [-127, 127] with one scale per group (tile or row):
``scale = max|v| / 127`` (float32), and ``scale = 1`` for an all-zero group so
dequantization never divides by zero. ``q = rne_saturate(v / scale)``.
"""

import numpy as np

from dste.format.constants import FP16_MAX, INT8_QMAX


def round_half_even_saturate(x, dtype) -> np.ndarray:
    """Round ``x`` to nearest (ties to even) and saturate into ``dtype``'s finite range.

    ``dtype`` is an integer type (rounded with ``np.rint``, clipped to its range) or
    ``float16`` (cast with RNE, clipped to +-65504). NaN input is rejected.
    """
    dtype = np.dtype(dtype)
    x = np.asarray(x)
    if np.isnan(x).any():
        raise ValueError("round_half_even_saturate: input contains NaN; only finite or +-inf values can be cast")
    if dtype == np.float16:
        return np.clip(x, -FP16_MAX, FP16_MAX).astype(np.float16)
    if dtype.kind not in "iu":
        raise TypeError(f"round_half_even_saturate: target dtype must be an integer type or float16, got {dtype}")
    info = np.iinfo(dtype)
    low, high = info.min, info.max
    if dtype == np.int8:
        low = -INT8_QMAX  # symmetric range: -128 is never produced
    return np.clip(np.rint(x), low, high).astype(dtype)


def int8_scale(values, axis=None) -> np.ndarray:
    """Symmetric INT8 scale ``max|v| / 127`` (float32) over ``axis``; 1 where the group is all zero."""
    values = np.asarray(values, dtype=np.float32)
    amax = np.max(np.abs(values), axis=axis) if values.size else np.float32(0.0)
    scale = np.asarray(amax, dtype=np.float32) / np.float32(INT8_QMAX)
    return np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)


def quantize_int8(values, scale) -> np.ndarray:
    """``rne_saturate(values / scale)`` in float32; ``scale`` broadcasts against ``values``."""
    values = np.asarray(values, dtype=np.float32)
    scale = np.asarray(scale, dtype=np.float32)
    if (scale <= 0).any() or not np.isfinite(scale).all():
        raise ValueError("quantize_int8: scales must be finite and > 0")
    return round_half_even_saturate(values / scale, np.int8)


def dequantize_int8(q, scale) -> np.ndarray:
    """``q * scale`` in float32."""
    return np.asarray(q).astype(np.float32) * np.asarray(scale, dtype=np.float32)


def to_fp16(values) -> np.ndarray:
    """float32 -> float16 with RNE and saturation at +-65504."""
    return round_half_even_saturate(np.asarray(values, dtype=np.float32), np.float16)


def int8_sensitivity(values, group_ids, n_groups: int) -> np.ndarray:
    """Sensitivity score S of each group: INT8 quantization error relative to the group's typical value.

    ``S_g = rms(v - dequant(quant(v))) / mean(|v|)`` over the values of group g, with the
    group's symmetric scale ``max|v| / 127``; 0 for an all-zero or empty group. The
    denominator is the mean magnitude (not the L2 norm, which a single outlier would
    dominate), so S measures how badly the bulk of the values is represented: about 0.005
    for uniformly spread values, 0.011 for Gaussian ones, and 0.1 and more when a few
    outliers stretch the scale so the bulk rounds to 0 or +-1. ``values`` float,
    ``group_ids`` int64 in [0, n_groups).
    """
    values = np.asarray(values, dtype=np.float32)
    group_ids = np.asarray(group_ids, dtype=np.int64)
    amax = np.zeros(n_groups, dtype=np.float32)
    np.maximum.at(amax, group_ids, np.abs(values))
    scale = amax / np.float32(INT8_QMAX)
    scale = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)
    per_value_scale = scale[group_ids]
    deq = dequantize_int8(round_half_even_saturate(values / per_value_scale, np.int8), per_value_scale)
    count = np.bincount(group_ids, minlength=n_groups).astype(np.float64)
    sq_err = np.bincount(group_ids, weights=(values.astype(np.float64) - deq) ** 2, minlength=n_groups)
    abs_sum = np.bincount(group_ids, weights=np.abs(values.astype(np.float64)), minlength=n_groups)
    safe = np.maximum(count, 1.0)
    rms = np.sqrt(sq_err / safe)
    mean_abs = abs_sum / safe
    return np.where(mean_abs > 0, rms / np.where(mean_abs > 0, mean_abs, 1.0), 0.0)
