"""Reference of the ``masked_quant`` kernel and of the hybrid-row quantization of X.

Written from docs/CONTRACTS.md and the kernel's documented arithmetic (dste/kernels/masked_quant.py),
with this package's own rounding (:mod:`dste.reference.quant`) and bit packing
(:mod:`dste.reference.bits`); nothing is shared with the host encoders of ``dste.format.quant``.

masked_quant_reference(values, keep, sensitivity, threshold)
------------------------------------------------------------
Inputs (T tiles, layout ``[t, k, r]`` = tile column k, window row r, as DSTEMatrix):
    values       float32 [T, 128, 128]  dense tile values (finite)
    keep         bool    [T, 128, 128]  keep-mask
    sensitivity  float   [T]            score S per tile
    threshold    float                  T of the rule S >= T -> FP16 (compared in float32)
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
    else:         kind = INT8; int8 = clip(rne(m * fp32(1/s)), -127, 127); fp16 = 0
Values outside the mask are zeroed before the scale is taken, so dropped outliers do
not stretch the scale. NeuronCores have no division instruction, so the scale is a
product with fp32(1/127) and values are multiplied by the fp32 reciprocal of the scale.
This can differ from the host encoder of ``dste.format`` (which divides) by one step
where m / s lies within an ulp of a rounding tie.

quantize_rows_reference(X, sensitivity, threshold) -> ReferenceHybridRows
-------------------------------------------------------------------------
Row i is FP16 iff ``sensitivity[i] >= threshold``: ``hi = sat_fp16(X[i])``, ``q[i] = 0``,
``scale[i] = 0``. Otherwise ``scale[i] = max|X[i]| * fp32(1/127)`` (1.0 for an all-zero row) and
``q[i] = rne_saturate(X[i] * fp32(1 / scale[i]))`` in float32 (the kernel's arithmetic). The result
is a plain :class:`ReferenceHybridRows` with the fields of the contract's ``HybridRows``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bits import pack_mask
from .checks import finite_number, finite_scores, float_dtype
from .layout import INT8_QMAX, KIND_FP16, KIND_INT8, MASK_WORDS, TILE_COLS, WINDOW_ROWS
from .quant import round_half_even_saturate, to_fp16

DEVICE_INV_QMAX = np.float32(1.0) / np.float32(INT8_QMAX)
"""fp32(1/127), the constant the device multiplies by in place of dividing by 127."""
SMALLEST_NORMAL_FP32 = np.float32(2.0 ** -126)
"""Below 127 times this a group's scale, amax / 127, would be subnormal: the launchers refuse such groups."""


@dataclass(eq=False)
class ReferenceHybridRows:
    """The hybrid-row operand as plain arrays (fields as ``HybridRows`` in docs/CONTRACTS.md)."""

    q: np.ndarray
    scale: np.ndarray
    hi_rows: np.ndarray
    hi: np.ndarray
    hi_index: np.ndarray

    def dequantize(self, dtype=np.float32) -> np.ndarray:
        """``q * scale`` per row, FP16 rows taken from ``hi`` (computed in ``dtype``: float32 or float64)."""
        dtype = float_dtype(dtype, "ReferenceHybridRows.dequantize: dtype")
        dense = np.asarray(self.q, dtype=dtype) * np.asarray(self.scale, dtype=dtype)[:, None]
        dense[np.asarray(self.hi_rows, dtype=np.int64)] = np.asarray(self.hi, dtype=dtype)
        return dense


def _device_scale(amax32: np.ndarray) -> np.ndarray:
    """Per-group device scale from float32 maxima: ``amax * fp32(1/127)``, 1 for an all-zero group."""
    return np.where(amax32 > 0, (amax32 * DEVICE_INV_QMAX).astype(np.float32), np.float32(1.0)).astype(np.float32)


def _device_quantize(values32: np.ndarray, scale32: np.ndarray) -> np.ndarray:
    """``rne_sat(v * fp32(1/s))``: the reciprocal and the product each rounded to float32."""
    reciprocal = (1.0 / scale32.astype(np.float64)).astype(np.float32)
    return round_half_even_saturate((values32 * reciprocal).astype(np.float32), np.int8)


def masked_quant_reference(values, keep, sensitivity, threshold):
    """See the module docstring; returns ``(keep_bits, kind, int8_values, int8_scale, fp16_values)``."""
    values = np.asarray(values)
    keep = np.asarray(keep)
    sensitivity = np.asarray(sensitivity)
    if values.dtype != np.float32 or values.ndim != 3 or values.shape[1:] != (TILE_COLS, WINDOW_ROWS):
        raise ValueError(
            f"masked_quant_reference: values must be float32 [T, {TILE_COLS}, {WINDOW_ROWS}], "
            f"got {values.dtype} {values.shape}"
        )
    if keep.dtype != np.bool_ or keep.shape != values.shape:
        raise ValueError(
            f"masked_quant_reference: keep must be bool with the shape of values {values.shape}, "
            f"got {keep.dtype} {keep.shape}"
        )
    T = values.shape[0]
    if sensitivity.shape != (T,) or sensitivity.dtype.kind != "f":
        raise ValueError(
            f"masked_quant_reference: sensitivity must be float [{T}], got {sensitivity.dtype} {sensitivity.shape}"
        )
    if not np.isfinite(values).all():
        raise ValueError("masked_quant_reference: values must be finite (no NaN or Inf)")
    finite_scores(sensitivity, "masked_quant_reference: sensitivity", (T,))
    threshold = finite_number(threshold, "masked_quant_reference: threshold")
    keep_bits = np.zeros((T, TILE_COLS, MASK_WORDS), np.uint32)
    kind = np.zeros(T, np.uint8)
    int8_values = np.zeros(values.shape, np.int8)
    int8_scale = np.zeros(T, np.float32)
    fp16_values = np.zeros(values.shape, np.float16)
    cut = np.float32(threshold)
    for t in range(T):
        masked = np.where(keep[t], values[t], np.float32(0.0))  # dropped entries become +0, not -0
        keep_bits[t] = pack_mask(keep[t])
        if np.float32(sensitivity[t]) >= cut:
            kind[t] = KIND_FP16
            fp16_values[t] = to_fp16(masked)
            continue
        kind[t] = KIND_INT8
        scale = _device_scale(np.float32(np.abs(masked).max()))
        int8_scale[t] = scale
        int8_values[t] = _device_quantize(masked, scale)
    return keep_bits, kind, int8_values, int8_scale, fp16_values


def quantize_rows_reference(X, sensitivity, threshold) -> ReferenceHybridRows:
    """See the module docstring."""
    X = np.asarray(X)
    if X.ndim != 2 or X.dtype.kind != "f":
        raise ValueError(f"quantize_rows_reference: X must be a 2-D float array, got {X.dtype} {X.shape}")
    X = np.asarray(X, dtype=np.float32)
    if not np.isfinite(X).all():
        raise ValueError("quantize_rows_reference: X must be finite (no NaN or Inf)")
    M, F = X.shape
    sensitivity = finite_scores(sensitivity, "quantize_rows_reference: sensitivity", (M,))
    threshold = finite_number(threshold, "quantize_rows_reference: threshold")
    amax_all = np.abs(X).max(axis=1) if F else np.zeros(M, np.float32)
    tiny = (amax_all > 0) & (amax_all < SMALLEST_NORMAL_FP32 * INT8_QMAX)
    if tiny.any():  # the kernel's launcher refuses such a row: its scale, amax / 127, would be subnormal
        raise ValueError(f"quantize_rows_reference: row {int(np.flatnonzero(tiny)[0])} would get a subnormal INT8 scale")
    is_fp16 = sensitivity.astype(np.float32) >= np.float32(threshold)
    hi_rows = np.flatnonzero(is_fp16).astype(np.int32)
    q = np.zeros((M, F), np.int8)
    scale = np.zeros(M, np.float32)
    low_rows = np.flatnonzero(~is_fp16)
    if low_rows.size:
        scale[low_rows] = _device_scale(amax_all[low_rows].astype(np.float32))
        q[low_rows] = _device_quantize(X[low_rows], scale[low_rows, None])
    hi_index = np.full(M, hi_rows.size, np.int32)
    hi_index[hi_rows] = np.arange(hi_rows.size, dtype=np.int32)
    return ReferenceHybridRows(
        q=q,
        scale=scale,
        hi_rows=hi_rows,
        hi=np.ascontiguousarray(to_fp16(X[hi_rows]).reshape(hi_rows.size, F)),
        hi_index=hi_index,
    )


__all__ = ["masked_quant_reference", "quantize_rows_reference", "ReferenceHybridRows"]
