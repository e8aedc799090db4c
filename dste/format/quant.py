"""Quantization arithmetic of the DSTE format: round half to even, then saturate.

Every float->int8 and float->float16 conversion of the format goes through
:func:`round_half_even_saturate` (NeuronCore casts round to nearest even and saturate).
All arithmetic is float32, as on the Vector/Scalar engines.

INT8 is symmetric over [-127, 127] with one scale per group (tile or row); an all-zero
group gets scale 1 so dequantization never divides by zero. Two arithmetics exist:

* host encoder (:func:`int8_scale`, :func:`quantize_int8`): ``scale = max|v| / 127`` and
  ``q = rne_sat(v / scale)``, float32 divisions;
* device (:func:`device_int8_scale`, :func:`device_quantize_int8`, used by
  :func:`masked_quant_host` and :func:`quantize_rows_host`): NeuronCores have no division
  instruction, so ``scale = max|v| * fp32(1/127)`` and ``q = rne_sat(v * fp32(1/scale))``.
  They can differ from the host encoder by one step where v / scale lies within an ulp of a
  rounding tie. The ``masked_quant`` kernel (dste/kernels/masked_quant.py) computes exactly this.
"""

from __future__ import annotations

import numpy as np

from dste.format.bits import pack_mask
from dste.format.constants import FP16_MAX, INT8_QMAX, MASK_WORDS, TILE_COLS, WINDOW_ROWS, TileKind

INV_INT8_QMAX = np.float32(1.0 / INT8_QMAX)
"""fp32(1/127): the device multiplies by it instead of dividing by 127."""

BLOCK_VALUES = 1 << 16
"""Values per block of :func:`row_blocks`: the row-wise passes over a whole activation matrix take it a few
hundred rows at a time, so each pass's temporaries stay in cache and are reused instead of being allocated
(and faulted in) at full size: at ogbn-arxiv's size a layer input is 87 MB of float32 and quantizing it,
pass by pass over the whole array, was more than a quarter of the main job. Every step is per value or per row, so
the results are those of the whole array, bit for bit."""


def row_blocks(num_rows: int, row_width: int):
    """Slices of ``num_rows`` rows, ``BLOCK_VALUES // row_width`` rows each (at least one; none for no rows)."""
    step = max(1, BLOCK_VALUES // max(int(row_width), 1))
    for start in range(0, int(num_rows), step):
        yield slice(start, min(start + step, int(num_rows)))


def row_abs_max(X) -> np.ndarray:
    """max |x| of each row of the 2-D float ``X`` (F >= 1), taken by :func:`row_blocks`."""
    row_max = np.empty(X.shape[0], dtype=X.dtype)
    for rows in row_blocks(X.shape[0], X.shape[1]):
        np.abs(X[rows]).max(axis=1, out=row_max[rows])
    return row_max


def all_finite(x: np.ndarray) -> bool:
    """Whether every value of the 2-D array ``x`` is finite (taken by :func:`row_blocks`)."""
    return all(bool(np.isfinite(x[rows]).all()) for rows in row_blocks(x.shape[0], x.shape[1]))


def round_half_even_saturate(x, dtype) -> np.ndarray:
    """Round ``x`` to nearest (ties to even) and saturate into ``dtype``'s finite range.

    ``dtype`` is an integer type (rounded with ``np.rint``, clipped to its range; int8 to the
    symmetric [-127, 127]) or ``float16`` (cast with RNE, clipped to +-65504). NaN is refused.
    """
    dtype = np.dtype(dtype)
    x = np.asarray(x)
    if np.isnan(x).any():
        raise ValueError("round_half_even_saturate: x contains NaN; only finite or +-inf values can be cast")
    if dtype == np.float16:
        return np.clip(x, -FP16_MAX, FP16_MAX).astype(np.float16)
    if dtype.kind not in "iu":
        raise TypeError(f"round_half_even_saturate: dtype must be an integer type or float16, got {dtype}")
    info = np.iinfo(dtype)
    low, high = info.min, info.max
    if dtype == np.int8:
        low = -INT8_QMAX  # symmetric range: -128 is never produced
    rounded = np.rint(x)
    np.clip(rounded, low, high, out=rounded)  # in place: the hybrid-row quantizer runs on whole feature matrices
    return rounded.astype(dtype)


def int8_scale(values, axis=None) -> np.ndarray:
    """Host encoder's symmetric INT8 scale ``max|v| / 127`` (float32) over ``axis``; 1 where all zero. NaN/Inf
    refused."""
    values = np.asarray(values, dtype=np.float32)
    amax = np.max(np.abs(values), axis=axis) if values.size else np.float32(0.0)
    if not np.isfinite(amax).all():  # NaN where a group holds one: "NaN > 0" is False, so it read as all zero
        raise ValueError("int8_scale: values must be finite (no NaN or Inf)")
    scale = np.asarray(amax, dtype=np.float32) / np.float32(INT8_QMAX)
    return np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)


def quantize_int8(values, scale) -> np.ndarray:
    """Host encoder's ``rne_sat(values / scale)`` in float32; ``scale`` broadcasts against ``values``."""
    values = np.asarray(values, dtype=np.float32)
    scale = np.asarray(scale, dtype=np.float32)
    if (scale <= 0).any() or not np.isfinite(scale).all():
        raise ValueError("quantize_int8: scale must be finite and > 0 everywhere")
    return round_half_even_saturate(values / scale, np.int8)


def dequantize_int8(q, scale) -> np.ndarray:
    """``q * scale`` in float32."""
    return np.asarray(q).astype(np.float32) * np.asarray(scale, dtype=np.float32)


def to_fp16(values) -> np.ndarray:
    """float32 -> float16 with RNE and saturation at +-65504."""
    return round_half_even_saturate(np.asarray(values, dtype=np.float32), np.float16)


def device_int8_scale(values, axis) -> np.ndarray:
    """Device scale ``max|v| * fp32(1/127)`` over ``axis`` in float32, 1 where the group is all zero."""
    return device_int8_scale_of_amax(np.max(np.abs(np.asarray(values, dtype=np.float32)), axis=axis))


def device_int8_scale_of_amax(amax) -> np.ndarray:
    """``device_int8_scale`` from the groups' largest magnitudes ``amax``, for callers that have them already."""
    amax = np.asarray(amax).astype(np.float32)
    scale = (amax * INV_INT8_QMAX).astype(np.float32)
    return np.where(amax > 0, scale, np.float32(1.0)).astype(np.float32)


def device_quantize_int8(values, scale) -> np.ndarray:
    """Device quantization ``rne_sat(values * fp32(1 / scale))`` with float32 products."""
    inverse = (np.float32(1.0) / np.asarray(scale, dtype=np.float32)).astype(np.float32)
    product = np.multiply(np.asarray(values, dtype=np.float32), inverse, dtype=np.float32)
    return round_half_even_saturate(product, np.int8)


MIN_INT8_AMAX = INT8_QMAX * float(np.finfo(np.float32).tiny)
"""A group (tile or row) whose largest |value| is nonzero but below 127 x float32's smallest normal would get a
subnormal INT8 scale (``amax / 127``) whose reciprocal overflows: its entries would come back wrong."""


def refuse_subnormal_int8_scales(amax, what: str, error: type[ValueError] = ValueError) -> None:
    """``error`` naming the first ``what`` (tile, row) whose largest magnitude ``amax`` is nonzero but below
    :data:`MIN_INT8_AMAX`; the host twins, the kernel launchers and ``quantize_rows`` refuse the same groups."""
    tiny = (amax > 0) & (amax < MIN_INT8_AMAX)
    if tiny.any():
        i = int(np.flatnonzero(tiny)[0])
        raise error(
            f"{what} {i} has largest magnitude {float(amax[i]):.3g}, nonzero but below {MIN_INT8_AMAX:.3g} "
            f"(127 x the smallest normal float32): its INT8 scale would be subnormal; rescale the input "
            f"or zero such values"
        )


def hi_index_of(hi_rows: np.ndarray, num_rows: int) -> np.ndarray:
    """``hi_index int32 [num_rows]`` of hybrid rows: an FP16 row's position in ``hi_rows``, ``len(hi_rows)`` for
    an INT8 row."""
    hi_index = np.full(num_rows, hi_rows.size, dtype=np.int32)
    hi_index[hi_rows] = np.arange(hi_rows.size, dtype=np.int32)
    return hi_index


def check_scores(where: str, sensitivity: np.ndarray, threshold) -> None:
    """Refuse scores or a threshold the comparison ``sensitivity >= threshold`` would misread, for the host twins
    and the kernel launchers alike: a NaN score compared False, so its tile or row went INT8; a NaN or infinite
    threshold sent every one to INT8; a bool array or a ``True`` threshold compared as 0/1, all without a word."""
    if sensitivity.dtype.kind not in "iuf":
        raise ValueError(f"{where}: sensitivity must hold real scores (an integer or float array), got dtype "
                         f"{sensitivity.dtype}")
    if not np.isfinite(sensitivity.astype(np.float64)).all():
        raise ValueError(f"{where}: sensitivity contains NaN or Inf; every score must be finite")
    if isinstance(threshold, (bool, np.bool_)) or not isinstance(threshold, (int, float, np.integer, np.floating)) \
            or not np.isfinite(threshold):
        raise ValueError(f"{where}: threshold must be a finite number, got {threshold!r}")


def masked_quant_host(values, keep, sensitivity, threshold):
    """Host twin of the ``masked_quant`` kernel: the same outputs, bit for bit, with NumPy.

    ``values float32 [T, 128, 128]`` (layout [t, k, r]), ``keep bool`` of the same shape,
    ``sensitivity float [T]``, ``threshold`` float. Returns ``(keep_bits uint32 [T, 128, 4],
    kind uint8 [T], int8_values int8 [T, 128, 128], int8_scale float32 [T], fp16_values
    float16 [T, 128, 128])``, one entry per tile: with ``m = where(keep, values, 0)``, a tile
    with ``sensitivity >= threshold`` is FP16 (``fp16 = sat_fp16(m)``, INT8 part and scale 0),
    any other INT8 (device arithmetic above, FP16 part 0).
    """
    values = np.asarray(values)
    keep = np.asarray(keep)
    sensitivity = np.asarray(sensitivity)
    if values.dtype != np.float32 or values.ndim != 3 or values.shape[1:] != (TILE_COLS, WINDOW_ROWS):
        raise ValueError(
            f"masked_quant_host: values must be float32 [T, {TILE_COLS}, {WINDOW_ROWS}], "
            f"got {values.dtype} {values.shape}"
        )
    if keep.dtype != np.bool_ or keep.shape != values.shape:
        raise ValueError(
            f"masked_quant_host: keep must be bool with the shape of values {values.shape}, got {keep.dtype} {keep.shape}"
        )
    T = values.shape[0]
    if sensitivity.shape != (T,) or sensitivity.dtype.kind != "f":
        raise ValueError(f"masked_quant_host: sensitivity must be float [{T}], got {sensitivity.dtype} {sensitivity.shape}")
    if not np.isfinite(values).all():
        raise ValueError("masked_quant_host: values must be finite (no NaN or Inf)")
    check_scores("masked_quant_host", sensitivity, threshold)
    masked = np.where(keep, values, np.float32(0.0)).astype(np.float32)
    refuse_subnormal_int8_scales(np.abs(masked).reshape(T, -1).max(axis=1) if T else np.zeros(0), "tile")
    is_fp16 = sensitivity.astype(np.float32) >= np.float32(threshold)
    kind = np.where(is_fp16, TileKind.FP16, TileKind.INT8).astype(np.uint8)
    scale = device_int8_scale(masked.reshape(T, -1), axis=1) if T else np.zeros(0, np.float32)
    q = device_quantize_int8(masked, scale[:, None, None]) if T else np.zeros(values.shape, np.int8)
    int8_values = np.where(is_fp16[:, None, None], np.int8(0), q).astype(np.int8)
    int8_scale_out = np.where(is_fp16, np.float32(0.0), scale).astype(np.float32)
    fp16_values = np.where(is_fp16[:, None, None], to_fp16(masked), np.float16(0.0)).astype(np.float16)
    keep_bits = pack_mask(keep).reshape(T, TILE_COLS, MASK_WORDS)
    return keep_bits, kind, int8_values, int8_scale_out, fp16_values


def quantize_rows_host(X, sensitivity, threshold, *, row_max=None):
    """Hybrid-row arrays of ``X float32 [M, F]`` with the device arithmetic (the kernel's ``quantize_rows``).

    Row i is FP16 iff ``sensitivity[i] >= threshold`` (compared in float32): ``hi = sat_fp16(X[i])``,
    ``q[i] = 0``, ``scale[i] = 0``; otherwise ``scale[i] = max|X[i]| * fp32(1/127)`` (1 for an
    all-zero row) and ``q[i] = rne_sat(X[i] * fp32(1/scale[i]))``. Returns ``(q int8 [M, F],
    scale float32 [M], hi_rows int32 [M_hi], hi float16 [M_hi, F], hi_index int32 [M])``, the
    fields of :class:`dste.format.hybrid_rows.HybridRows`. A row whose largest |x| is nonzero but below
    ``MIN_INT8_AMAX`` is refused, as the launcher refuses it; ``row_max`` (float32 [M]): those largest |x|
    where the caller has taken them already, else they are taken here.
    """
    X = np.asarray(X)
    if X.ndim != 2 or X.dtype.kind != "f":
        raise ValueError(f"quantize_rows_host: X must be a 2-D float array, got {X.dtype} {X.shape}")
    X = np.ascontiguousarray(X, dtype=np.float32)
    if not all_finite(X):
        raise ValueError("quantize_rows_host: X must be finite (no NaN or Inf)")
    M, F = X.shape
    sensitivity = np.asarray(sensitivity)
    if sensitivity.shape != (M,):
        raise ValueError(f"quantize_rows_host: sensitivity must have shape ({M},), got {sensitivity.shape}")
    check_scores("quantize_rows_host", sensitivity, threshold)
    if F:  # as the kernel's launcher refuses them: the quantized row would be +-127 x a subnormal scale
        refuse_subnormal_int8_scales(row_abs_max(X) if row_max is None else np.asarray(row_max),
                                     "quantize_rows_host: row")
    is_hi = sensitivity.astype(np.float32) >= np.float32(threshold)
    hi_rows = np.flatnonzero(is_hi).astype(np.int32)
    if hi_rows.size == M:
        # every row is FP16: the INT8 part is all zero, as the rows below would make it, without computing it
        q, scale = np.zeros((M, F), np.int8), np.zeros(M, np.float32)
    else:
        scale = np.ones(M, np.float32)
        q = np.zeros((M, F), np.int8)
        if F:
            for rows in row_blocks(M, F):
                scale[rows] = device_int8_scale(X[rows], axis=1)
                q[rows] = device_quantize_int8(X[rows], scale[rows, None])
        q[is_hi] = 0
        scale = np.where(is_hi, np.float32(0.0), scale).astype(np.float32)
    hi_index = hi_index_of(hi_rows, M)
    hi = to_fp16(X[hi_rows]).reshape(hi_rows.size, F)
    return np.ascontiguousarray(q), np.ascontiguousarray(scale), hi_rows, np.ascontiguousarray(hi), hi_index
