"""The hybrid-row dense operand X [M, F]: INT8 rows with a per-row scale, FP16 rows for sensitive nodes.

LLM.int8-style outlier handling at row granularity: a row whose INT8 quantization is poor
(sensitivity S >= T, S as in :mod:`dste.format.policy`, computed per row) is kept in
float16; every other row is symmetric INT8 with ``scale = max|x| / 127``. On memory-bound
SpMM the gathered X rows dominate the traffic, so this is the largest byte lever.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dste.format.errors import DSTEFormatError
from dste.format.policy import DEFAULT_FP16_THRESHOLD
from dste.reference.quant import int8_sensitivity


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
        if not np.isfinite(self.hi).all():
            raise DSTEFormatError("HybridRows.hi must be finite")
        return self

    def dequantize(self, dtype=np.float32) -> np.ndarray:
        """``q * scale[:, None]`` with FP16 rows replaced by ``hi`` (computed in ``dtype``)."""
        out = self.q.astype(dtype) * self.scale.astype(dtype)[:, None]
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


def row_sensitivity(X) -> np.ndarray:
    """Per-row sensitivity S (float64 [M]): INT8 error rms over mean |x| of each row (see dste.format.policy)."""
    X = np.asarray(X, dtype=np.float32)
    M, F = X.shape
    return int8_sensitivity(X.reshape(-1), np.repeat(np.arange(M), F), M)


def quantize_rows(X, sensitivity=None, threshold: float | None = None, fp16_fraction: float | None = None) -> HybridRows:
    """Host hybrid-row quantization of X [M, F].

    FP16 rows are those with ``sensitivity >= threshold`` (default T = 0.02), or, when
    ``fp16_fraction`` is given, the ``round(fp16_fraction * M)`` most sensitive rows (ties
    by lower row id). ``sensitivity`` defaults to :func:`row_sensitivity`. The arithmetic
    is :func:`dste.reference.masked_quant.quantize_rows_reference`.
    """
    from dste.reference.masked_quant import quantize_rows_reference

    X = _as_features(X)
    M = X.shape[0]
    if sensitivity is None:
        sensitivity = row_sensitivity(X)
    sensitivity = np.asarray(sensitivity, dtype=np.float64)
    if sensitivity.shape != (M,) or not np.isfinite(sensitivity).all():
        raise DSTEFormatError(f"sensitivity must be finite with shape ({M},), got {sensitivity.shape}")
    if fp16_fraction is not None:
        if threshold is not None:
            raise DSTEFormatError("give either threshold or fp16_fraction, not both")
        if not 0.0 <= fp16_fraction <= 1.0:
            raise DSTEFormatError(f"fp16_fraction must lie in [0, 1], got {fp16_fraction}")
        n_hi = int(round(fp16_fraction * M))
        order = np.lexsort((np.arange(M), -sensitivity))
        is_hi = np.zeros(M, dtype=np.float32)
        is_hi[order[:n_hi]] = 1.0
        return quantize_rows_reference(X, is_hi, 0.5)
    return quantize_rows_reference(X, sensitivity, DEFAULT_FP16_THRESHOLD if threshold is None else float(threshold))


def _as_features(X) -> np.ndarray:
    if type(X).__module__.startswith("torch"):
        X = X.detach().cpu().float().numpy()
    X = np.asarray(X)
    if X.ndim != 2:
        raise DSTEFormatError(f"X must be 2-D [M, F], got shape {X.shape}")
    if X.dtype.kind not in "biuf":
        raise DSTEFormatError(f"X dtype must be bool, integer or real float, got {X.dtype}")
    X = np.ascontiguousarray(X, dtype=np.float32)
    if not np.isfinite(X).all():
        raise DSTEFormatError("X contains NaN or Inf (or values that overflow float32)")
    return X
