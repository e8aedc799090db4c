"""Reference SpMM: ``Y = A.decode() @ X`` in float64 with SciPy (the oracle of ``spmm_hybrid``)."""

from __future__ import annotations

import numpy as np


def spmm_reference(A, X) -> np.ndarray:
    """``float64 [N, F]`` = decoded DSTE matrix (kept entries, scales applied) times X.

    ``X`` is a dense ``[M, F]`` array (any real dtype) or a ``HybridRows`` (dequantized in
    float64: ``q * scale``, FP16 rows exactly).
    """
    from dste.format.hybrid_rows import HybridRows
    from dste.format.matrix import DSTEMatrix

    if not isinstance(A, DSTEMatrix):
        raise TypeError(f"A must be a DSTEMatrix, got {type(A).__name__}")
    if isinstance(X, HybridRows):
        dense = X.dequantize(dtype=np.float64)
    else:
        dense = np.asarray(X)
        if dense.dtype.kind not in "biuf":
            raise TypeError(f"X must be a real array, got dtype {dense.dtype}")
        dense = dense.astype(np.float64)
    if dense.ndim != 2 or dense.shape[0] != A.shape[1]:
        raise ValueError(f"X must be [M={A.shape[1]}, F], got shape {dense.shape}")
    if not np.isfinite(dense).all():
        raise ValueError("X must be finite")
    return np.asarray(A.decode(effective=True, dtype=np.float64) @ dense)
