"""The hybrid-row dense operand X [M, F]: INT8 rows with a per-row scale, FP16 rows for sensitive nodes.

LLM.int8-style outlier handling at row granularity: a row whose INT8 quantization is poor
(sensitivity S >= T, :func:`int8_sensitivity_robust` computed per row) is kept in float16;
every other row is symmetric INT8 with ``scale = max|x| / 127``. On memory-bound SpMM the
gathered X rows dominate the traffic, so this is the largest byte lever.

The sensitivity score
---------------------
For a group g of values (a row of X, or the stored values of one tile)::

    s_g   = max|v| / 127                     (1 if the group is all zero)
    e_i   = v_i - rne_sat(v_i / s_g) * s_g   (float32, as the device computes it)
    nz    = the nonzero values of the group
    rho_g = lower median of |v_i| over nz    (the (n_nz - 1) // 2-th smallest)
    S_g   = sqrt(mean over nz of e_i^2) / rho_g        (0 for a group without nonzeros)

i.e. the rms INT8 error of the group's entries in units of its typical entry. Why this form:

* The numerator is what INT8 does to the ordinary entries: the largest entry sets the scale
  and is reproduced exactly, so the error is carried by the others. With one outlier O among
  N(0, 1) values, every |x| < O/254 rounds to 0 and the numerator tends to the rms of the
  ordinary entries (about 1) as O grows.
* The denominator must not grow with the outlier. The mean |v| (the earlier denominator)
  grows as O/n, so S fell as the outlier grew (0.007 at O = 1e4, 1e-4 at 1e5 on 128
  features) and exactly the rows the FP16 path exists for stayed INT8. The median of |v| is
  moved by no single entry (by none of fewer than half of them), so S now grows with O and
  saturates near 1/0.674 = 1.5 for N(0, 1) bulk.
* Zeros are left out of both: INT8 stores them exactly, and how sparse a row is says nothing
  about how well its nonzeros are represented.

Typical values (measured in tests/format/test_sensitivity.py, F = 128): N(0, 1) rows
S ~ 0.010, uniform rows ~ 0.005, one 20-sigma outlier ~ 0.07, one 1e4 outlier ~ 1.5;
a 128 x 128 Gaussian tile ~ 0.015. The threshold T = 0.02 separates them.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from dste.checks import integer, real_scores
from dste.format.errors import DSTEFormatError, meta_tensor_error
from dste.format.matrix import decode_dtype
from dste.format.policy import DEFAULT_FP16_THRESHOLD
from dste.format.constants import FP16_MAX, FP16_UNDERFLOW_AMAX, INT8_QMAX
from dste.format.quant import (
    MIN_INT8_AMAX,
    all_finite,
    dequantize_int8,
    quantize_rows_host,
    refuse_subnormal_int8_scales,
    round_half_even_saturate,
    row_abs_max,
)


@dataclass(eq=False)
class HybridRows:
    """X as INT8 rows + FP16 rows (fields as in docs/CONTRACTS.md)."""

    q: np.ndarray
    scale: np.ndarray
    hi_rows: np.ndarray
    hi: np.ndarray
    hi_index: np.ndarray

    def __post_init__(self):
        self.validate()

    @property
    def shape(self) -> tuple:
        return tuple(int(s) for s in self.q.shape)

    def validate(self) -> "HybridRows":
        """Check dtypes, shapes and consistency; raises :class:`DSTEFormatError`."""
        expected = {"q": np.int8, "scale": np.float32, "hi_rows": np.int32, "hi": np.float16, "hi_index": np.int32}
        for name, dtype in expected.items():
            value = getattr(self, name)
            if not isinstance(value, np.ndarray) or value.dtype != dtype:
                got = getattr(value, "dtype", type(value).__name__)
                raise DSTEFormatError(f"HybridRows.{name} must be a numpy {np.dtype(dtype)} array, got {got}")
            if not value.flags.c_contiguous:
                raise DSTEFormatError(f"HybridRows.{name} must be C-contiguous")
        if self.q.ndim != 2:
            raise DSTEFormatError(f"HybridRows.q must be 2-D [M, F], got shape {self.q.shape}")
        M, F = self.q.shape
        for name in ("scale", "hi_index"):  # q sets M: name the disagreement, not one side of it
            rows = getattr(self, name).shape[0] if getattr(self, name).ndim == 1 else None
            if rows is not None and rows != M:
                raise DSTEFormatError(f"HybridRows: q has {M} rows but {name} has {rows} entries; q [M, F] sets M, "
                                      f"and scale and hi_index need one entry per row of q")
        m_hi = self.hi_rows.shape[0] if self.hi_rows.ndim == 1 else -1
        for name, shape in (("scale", (M,)), ("hi_rows", (m_hi,)), ("hi", (m_hi, F)), ("hi_index", (M,))):
            if getattr(self, name).shape != shape:
                raise DSTEFormatError(f"HybridRows.{name} must have shape {shape}, got {getattr(self, name).shape}")
        if m_hi and (self.hi_rows.min() < 0 or self.hi_rows.max() >= M or (np.diff(self.hi_rows) <= 0).any()):
            raise DSTEFormatError(f"HybridRows.hi_rows must be strictly ascending row ids in [0, {M})")
        expected_index = np.full(M, m_hi, dtype=np.int32)
        expected_index[self.hi_rows] = np.arange(m_hi, dtype=np.int32)
        if not np.array_equal(self.hi_index, expected_index):
            raise DSTEFormatError("HybridRows.hi_index must give each FP16 row's position in hi and M_hi elsewhere")
        is_hi = expected_index < m_hi
        if (self.scale[is_hi] != 0).any() or (self.q[is_hi] != 0).any():
            raise DSTEFormatError("FP16 rows must have scale 0 and all-zero q")
        low = self.scale[~is_hi]
        if (~np.isfinite(low) | (low <= 0)).any():
            raise DSTEFormatError("INT8 row scales must be finite and > 0")
        if (self.q == -128).any():
            raise DSTEFormatError("HybridRows.q must lie in [-127, 127]")
        if low.size and float(low.max()) * 127.0 > np.finfo(np.float32).max:
            # the row's q x scale must be a float32, as every op reads it; 127 x scale bounds it without a pass
            largest = np.abs(self.q).max(axis=1).astype(np.float64) * self.scale.astype(np.float64)
            if largest.max() > np.finfo(np.float32).max:
                row = int(np.argmax(largest))
                raise DSTEFormatError(f"HybridRows row {row} dequantizes to {largest[row]:.6g} (q x scale), beyond "
                                      "float32's range (3.4e38); rescale X")
        if not np.isfinite(self.hi).all():
            raise DSTEFormatError("HybridRows.hi must be finite")
        return self

    def dequantize(self, dtype=np.float32) -> np.ndarray:
        """``q * scale[:, None]`` with FP16 rows replaced by ``hi`` (computed in ``dtype``: float32 or float64, as
        ``DSTEMatrix.decode``)."""
        dtype = decode_dtype(dtype, "dequantize")
        if self.hi_rows.size == self.q.shape[0]:  # every row FP16 (hi_rows ascending: all of them, in order)
            return self.hi.astype(dtype)
        out = np.multiply(self.q, self.scale.astype(dtype)[:, None], dtype=dtype)  # one pass, the same products
        out[self.hi_rows] = self.hi.astype(dtype)
        return out

    def nbytes(self) -> dict:
        """Bytes of each array; ``total`` = what the device stores (q, scale, hi_rows, hi).

        ``hi_index`` is listed but not in ``total``: it is derived from ``hi_rows`` and read only on the
        host, to plan the FP16-row correction pass; no kernel reads it from device memory.
        """
        parts = {name: int(getattr(self, name).nbytes) for name in ("q", "scale", "hi_rows", "hi", "hi_index")}
        parts["total"] = parts["q"] + parts["scale"] + parts["hi_rows"] + parts["hi"]
        return parts


def int8_sensitivity_robust(values, group_ids, n_groups: int) -> np.ndarray:
    """Sensitivity S (float64 [n_groups]) of each group of ``values`` (module docstring).

    ``values`` float (any order), ``group_ids`` int in [0, n_groups) of the same length.
    S_g = rms over the group's nonzero values of the INT8 error (scale max|v| / 127, round
    half to even, float32) divided by the lower median of their magnitudes; 0 for a group
    with no nonzero value.
    """
    n_groups = integer(n_groups, "int8_sensitivity_robust: n_groups", low=0, error=DSTEFormatError)
    values = np.asarray(values, dtype=np.float32).reshape(-1)
    group_ids = np.asarray(group_ids, dtype=np.int64).reshape(-1)
    if values.shape != group_ids.shape:
        raise DSTEFormatError(f"int8_sensitivity_robust: values {values.shape} and group_ids {group_ids.shape} differ")
    if group_ids.size and (group_ids.min() < 0 or group_ids.max() >= n_groups):
        raise DSTEFormatError(f"int8_sensitivity_robust: group_ids must lie in [0, {n_groups})")
    magnitude = np.abs(values)
    amax = np.zeros(n_groups, dtype=np.float32)
    np.maximum.at(amax, group_ids, magnitude)
    scale = np.where(amax > 0, amax / np.float32(INT8_QMAX), np.float32(1.0)).astype(np.float32)
    per_value = scale[group_ids]
    error = values.astype(np.float64) - dequantize_int8(round_half_even_saturate(values / per_value, np.int8), per_value)
    nonzero = values != 0
    g, error, magnitude = group_ids[nonzero], error[nonzero], magnitude[nonzero]
    count = np.bincount(g, minlength=n_groups)
    mean_sq = np.bincount(g, weights=error * error, minlength=n_groups) / np.maximum(count, 1)
    order = np.lexsort((magnitude, g))  # by group, then magnitude
    first = np.cumsum(count) - count
    has = count > 0
    median = np.ones(n_groups, dtype=np.float64)
    median[has] = magnitude[order[first[has] + (count[has] - 1) // 2]]
    return np.where(has, np.sqrt(mean_sq) / median, 0.0)


def row_sensitivity(X) -> np.ndarray:
    """Per-row sensitivity S (float64 [M]) of X [M, F]: :func:`int8_sensitivity_robust` over each row."""
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise DSTEFormatError(f"row_sensitivity: X must be 2-D [M, F], got shape {X.shape}")
    M, F = X.shape
    if M == 0 or F == 0:
        return np.zeros(M, dtype=np.float64)
    # The grouped computation specialised to equal-length groups, value for value: a row max instead of
    # ``maximum.at``, a per-row sort instead of one ``lexsort`` over every value (tens of times faster),
    # and the same sequential ``bincount`` sum (its zero terms add exactly nothing).
    magnitude = np.abs(X)
    amax = magnitude.max(axis=1)
    scale = np.where(amax > 0, amax / np.float32(INT8_QMAX), np.float32(1.0)).astype(np.float32)[:, None]
    error = X.astype(np.float64) - dequantize_int8(round_half_even_saturate(X / scale, np.int8), scale)
    count = np.count_nonzero(X, axis=1)
    mean_sq = np.bincount(np.repeat(np.arange(M), F), weights=(error * error).reshape(-1), minlength=M)
    mean_sq /= np.maximum(count, 1)
    has = count > 0
    rows = np.flatnonzero(has)
    # zeros sort first, so a row's k-th smallest nonzero magnitude sits at (number of zeros) + k
    median = np.ones(M, dtype=np.float64)
    median[rows] = np.sort(magnitude[rows], axis=1)[np.arange(rows.size), (F - count[rows]) + (count[rows] - 1) // 2]
    return np.where(has, np.sqrt(mean_sq) / median, 0.0)


def quantize_rows(X, sensitivity=None, threshold: float | None = None, fp16_fraction: float | None = None) -> HybridRows:
    """Host hybrid-row quantization of X [M, F].

    FP16 rows are those with ``sensitivity >= threshold`` (default T = 0.02), or, when
    ``fp16_fraction`` is given, the ``round(fp16_fraction * M)`` most sensitive rows (ties
    by lower row id). ``sensitivity`` defaults to :func:`row_sensitivity`. A row whose largest |x| is
    nonzero but below ``FP16_UNDERFLOW_AMAX`` (7.6e-6) stays INT8 either way: float16 would hold it in
    its subnormal range, worse than INT8 does. The arithmetic is the device's,
    :func:`dste.format.quant.quantize_rows_host` (``launch_quantize_rows`` given the same scores differs by that
    rule and by saturating FP16 rows beyond 65504, which this refuses).

    Error per entry: INT8 rows ``|err| <= (max|x_row| / 254) (1 + 2^-15)`` (half a step, plus the float32
    rounding of the scale, the quotient and the product); FP16 rows ``|err| <= 2^-11 |x|``
    for ``|x| >= 2^-14`` and ``<= 2^-25`` below. A row chosen for FP16 that holds a value beyond
    float16's range (65504) is refused (:class:`DSTEFormatError`), not saturated, and so is a
    row whose largest |x| is nonzero but below 1.5e-36 (a subnormal INT8 scale). Empty X
    (M = 0 or F = 0) gives an empty, valid :class:`HybridRows`.
    """
    X = _as_features(X)
    M = X.shape[0]
    # every row's largest |x|, taken once: the INT8 scale check, float16's range and its underflow all read it
    row_max = row_abs_max(X) if X.size else np.zeros(M, np.float32)
    refuse_subnormal_int8_scales(row_max, "quantize_rows: row", DSTEFormatError)
    if sensitivity is None:
        sensitivity = row_sensitivity(X)
    # real scores: a boolean mask read as 0/1 scores made every True row FP16 at any threshold below 1
    sensitivity = real_scores(sensitivity, "sensitivity", error=DSTEFormatError)
    if sensitivity.shape != (M,):
        raise DSTEFormatError(f"sensitivity must have shape ({M},) (one score per row of X), got {sensitivity.shape}")
    for name, value in (("threshold", threshold), ("fp16_fraction", fp16_fraction)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
            raise DSTEFormatError(f"quantize_rows: {name} must be a number, got {type(value).__name__} {value!r}")
    if fp16_fraction is not None:
        if threshold is not None:
            raise DSTEFormatError("give either threshold or fp16_fraction, not both")
        if not 0.0 <= fp16_fraction <= 1.0:
            raise DSTEFormatError(f"fp16_fraction must lie in [0, 1], got {fp16_fraction}")
        n_hi = int(round(fp16_fraction * M))
        order = np.lexsort((np.arange(M), -sensitivity))
        is_hi = np.zeros(M, dtype=bool)
        is_hi[order[:n_hi]] = True
        why = f"one of the {n_hi} most sensitive rows (fp16_fraction={fp16_fraction})"
    else:
        threshold = DEFAULT_FP16_THRESHOLD if threshold is None else float(threshold)
        if not np.isfinite(threshold):
            raise DSTEFormatError(f"quantize_rows: threshold must be a finite number, got {threshold!r}")
        is_hi = sensitivity.astype(np.float32) >= np.float32(threshold)
        why = f"its sensitivity is at or above the threshold {threshold:g}"
    is_hi &= ~((row_max > 0) & (row_max < FP16_UNDERFLOW_AMAX))
    _check_fp16_range(row_max, is_hi, why)
    return HybridRows(*quantize_rows_host(X, is_hi.astype(np.float32), 0.5, row_max=row_max))


MIN_ROW_MAGNITUDE = MIN_INT8_AMAX
"""A row whose largest |x| is nonzero but below 127 x float32's smallest normal would get a
subnormal INT8 scale (its reciprocal overflows): refused, as the device launcher does."""


def _check_fp16_range(row_max, is_hi, why: str):
    """FP16 rows saturate at +-65504: refuse a row chosen for FP16 (``why``) that holds a larger value."""
    too_big = is_hi & (row_max > FP16_MAX)
    if too_big.any():
        row = int(np.flatnonzero(too_big)[0])
        raise DSTEFormatError(
            f"quantize_rows: row {row} is chosen for FP16 ({why}) but holds |x| = "
            f"{float(row_max[row]):.6g} > {FP16_MAX} (float16 max), which FP16 would saturate; scale X "
            "down (e.g. by a power of two) before quantizing"
        )


def _as_features(X) -> np.ndarray:
    if type(X).__module__.startswith("torch"):
        if X.device.type == "meta":
            raise meta_tensor_error("X", "quantize_rows")
        if X.is_complex():  # .float() would drop the imaginary part with only a warning
            raise DSTEFormatError(f"X dtype must be bool, integer or real float, got {X.dtype}")
        X = X.detach().cpu().float().numpy()
    if X is None or isinstance(X, (str, bytes, dict)):
        raise DSTEFormatError(f"X must be a 2-D array [M, F] of real numbers (NumPy array or torch tensor), got "
                              f"{type(X).__name__}")
    given = type(X).__name__
    X = np.asarray(X)
    if X.ndim != 2:
        raise DSTEFormatError(f"X must be 2-D [M, F] (a NumPy array or torch tensor of real numbers), got {given} "
                              f"of shape {X.shape}")
    if X.dtype.kind not in "biuf":
        raise DSTEFormatError(f"X dtype must be bool, integer or real float, got {X.dtype}")
    X = np.ascontiguousarray(X, dtype=np.float32)
    if not all_finite(X):
        raise DSTEFormatError("X contains NaN or Inf (or values that overflow float32)")
    return X
