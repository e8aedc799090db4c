"""Reference of the ``masked_quant`` kernel and of the hybrid-row quantization of X.

masked_quant_reference(values, keep, sensitivity, threshold)
------------------------------------------------------------
Inputs (T tiles, layout ``[t, k, r]`` = tile column k, window row r, as DSTEMatrix):
    values       float32 [T, 128, 128]  dense tile values (finite)
    keep         bool    [T, 128, 128]  keep-mask
    sensitivity  float32 [T]            score S per tile
    threshold    float                  T of the rule S >= T -> FP16
Outputs, for every tile t:
    keep_bits    uint32 [T, 128, 4]     pack_mask(keep[t]): bit r % 32 of word r // 32 of column k
    kind         uint8  [T]             2 (FP16) if sensitivity[t] >= threshold else 1 (INT8); never BIN
    int8_values  int8   [T, 128, 128]   INT8 tiles: rne_saturate(m * fp32(1 / int8_scale[t])) with
                                        m = where(keep, values, 0), float32 products; FP16 tiles: 0
    int8_scale   float32 [T]            INT8 tiles: max|m| * fp32(1/127) (float32), 1.0 if m is all zero;
                                        FP16 tiles: 0.0
    fp16_values  float16 [T, 128, 128]  FP16 tiles: m cast with RNE, saturated at +-65504; INT8 tiles: 0
Pseudocode::

    m = values * keep
    amax = max|m| over (k, r);  s = amax * fp32(1/127) if amax > 0 else 1
    if S[t] >= T: kind = FP16; fp16 = sat_fp16(m); int8 = 0; s = 0
    else:         kind = INT8; int8 = clip(rint(m * fp32(1/s)), -127, 127); fp16 = 0
Values outside the mask are zeroed before the scale is taken, so dropped outliers do
not stretch the scale. The arithmetic is the kernel's: NeuronCores have no division
instruction, so the scale is a product with fp32(1/127) and values are multiplied by
the fp32 reciprocal of the scale. It can differ from ``dste.format``'s host encoder
(which divides) by one step where m / s lies within an ulp of a rounding tie.
Slot-compacted arrays (``int8_values[tile_slot]`` of a DSTEMatrix) are these arrays
restricted to tiles of the kind.

quantize_rows_reference(X, sensitivity, threshold) -> HybridRows
---------------------------------------------------------------
Row i is FP16 iff ``sensitivity[i] >= threshold``: ``hi = sat_fp16(X[i])``, ``q[i] = 0``,
``scale[i] = 0``. Otherwise ``scale[i] = max|X[i]| * fp32(1/127)`` (1.0 for an all-zero row) and
``q[i] = rne_saturate(X[i] * fp32(1 / scale[i]))`` in float32 (the kernel's arithmetic).
"""

from __future__ import annotations

import numpy as np

from dste.format.constants import FP16_MAX, MASK_WORDS, TILE_COLS, WINDOW_ROWS, TileKind
from dste.reference.bits import pack_mask
from dste.reference.quant import round_half_even_saturate, to_fp16

INV_INT8_QMAX = np.float32(1.0 / 127.0)


def kernel_int8_scale(values, axis):
    """``max|v| * fp32(1/127)`` over ``axis`` in float32, 1 where the group is all zero."""
    amax = np.max(np.abs(np.asarray(values, dtype=np.float32)), axis=axis).astype(np.float32)
    scale = (amax * INV_INT8_QMAX).astype(np.float32)
    return np.where(amax > 0, scale, np.float32(1.0)).astype(np.float32)


def kernel_quantize_int8(values, scale):
    """``rne_saturate(values * fp32(1 / scale))`` with float32 products."""
    inverse = (np.float32(1.0) / np.asarray(scale, dtype=np.float32)).astype(np.float32)
    return round_half_even_saturate((np.asarray(values, dtype=np.float32) * inverse).astype(np.float32), np.int8)


def masked_quant_reference(values, keep, sensitivity, threshold):
    """See the module docstring; returns ``(keep_bits, kind, int8_values, int8_scale, fp16_values)``."""
    values = np.asarray(values)
    keep = np.asarray(keep)
    sensitivity = np.asarray(sensitivity)
    if values.dtype != np.float32 or values.ndim != 3 or values.shape[1:] != (TILE_COLS, WINDOW_ROWS):
        raise ValueError(f"values must be float32 [T, {TILE_COLS}, {WINDOW_ROWS}], got {values.dtype} {values.shape}")
    if keep.dtype != np.bool_ or keep.shape != values.shape:
        raise ValueError(f"keep must be bool with the shape of values {values.shape}, got {keep.dtype} {keep.shape}")
    T = values.shape[0]
    if sensitivity.shape != (T,) or sensitivity.dtype.kind != "f":
        raise ValueError(f"sensitivity must be float [{T}], got {sensitivity.dtype} {sensitivity.shape}")
    if not np.isfinite(values).all():
        raise ValueError("values must be finite")
    masked = np.where(keep, values, np.float32(0.0)).astype(np.float32)
    is_fp16 = sensitivity.astype(np.float32) >= np.float32(threshold)
    kind = np.where(is_fp16, TileKind.FP16, TileKind.INT8).astype(np.uint8)
    scale = kernel_int8_scale(masked.reshape(T, -1), axis=1) if T else np.zeros(0, np.float32)
    q = kernel_quantize_int8(masked, scale[:, None, None]) if T else np.zeros(values.shape, np.int8)
    int8_values = np.where(is_fp16[:, None, None], np.int8(0), q).astype(np.int8)
    int8_scale_out = np.where(is_fp16, np.float32(0.0), scale).astype(np.float32)
    fp16_values = np.where(is_fp16[:, None, None], to_fp16(masked), np.float16(0.0)).astype(np.float16)
    keep_bits = pack_mask(keep).reshape(T, TILE_COLS, MASK_WORDS)
    return keep_bits, kind, int8_values, int8_scale_out, fp16_values


def quantize_rows_reference(X, sensitivity, threshold):
    """See the module docstring; returns a :class:`dste.format.hybrid_rows.HybridRows`."""
    from dste.format.hybrid_rows import HybridRows

    X = np.asarray(X)
    if X.ndim != 2 or X.dtype.kind != "f":
        raise ValueError(f"X must be a 2-D float array, got {X.dtype} {X.shape}")
    X = np.ascontiguousarray(X, dtype=np.float32)
    if not np.isfinite(X).all():
        raise ValueError("X must be finite")
    M, F = X.shape
    sensitivity = np.asarray(sensitivity)
    if sensitivity.shape != (M,):
        raise ValueError(f"sensitivity must have shape ({M},), got {sensitivity.shape}")
    is_hi = sensitivity.astype(np.float32) >= np.float32(threshold)
    hi_rows = np.flatnonzero(is_hi).astype(np.int32)
    scale = kernel_int8_scale(X, axis=1) if F else np.ones(M, np.float32)
    q = kernel_quantize_int8(X, scale[:, None]) if M else np.zeros((0, F), np.int8)
    q[is_hi] = 0
    scale = np.where(is_hi, np.float32(0.0), scale).astype(np.float32)
    hi_index = np.full(M, hi_rows.size, dtype=np.int32)
    hi_index[hi_rows] = np.arange(hi_rows.size, dtype=np.int32)
    return HybridRows(
        q=np.ascontiguousarray(q),
        scale=np.ascontiguousarray(scale),
        hi_rows=hi_rows,
        hi=np.ascontiguousarray(to_fp16(X[hi_rows]).reshape(hi_rows.size, F)),
        hi_index=hi_index,
    )


__all__ = ["masked_quant_reference", "quantize_rows_reference", "FP16_MAX"]
