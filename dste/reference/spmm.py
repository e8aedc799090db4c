"""Reference SpMM ``Y = A @ X`` in float64 with SciPy: the oracle of the ``spmm_hybrid`` kernel.

A is rebuilt from the public arrays of a DSTE matrix (attribute access only; no method of the
format is called) following docs/CONTRACTS.md, "Semantics (the oracle)":

* for every bitmap tile t of window w, window slot r and tile column k < ``tile_ncols[t]`` whose
  keep bit (bit ``r % 32`` of ``keep_bits[t, k, r // 32]``) is set,
  ``A[window_rows[w, r], tile_cols[t, k]] += v`` with v = 1 (BIN),
  ``int8_values[s, k, r] * int8_scale[s]`` (INT8) or ``fp16_values[s, k, r]`` (FP16), s = ``tile_slot[t]``;
* for every entry tile t of window w and entry e < ``etile_nentries[t]`` whose keep bit (bit
  ``e % 32`` of ``etile_keep_bits[t, e // 32]``) is set, ``A[window_rows[w, etile_rows[t, e]],
  etile_cols[t, e]] += v`` with v from ``etile_int8_values`` / ``etile_int8_scale`` /
  ``etile_fp16_values`` likewise;
* for every list tile t of window w and entry e < ``ltile_nentries[t]`` whose keep bit (bit ``e % 32`` of
  ``ltile_keep_bits[t, e // 32]``) is set, ``A[window_rows[w, ltile_rows[t, e]],
  ltile_cols[t, ltile_colslot[t, e]]] += v`` with v from ``ltile_int8_values`` / ``ltile_int8_scale`` /
  ``ltile_fp16_values`` likewise (a matrix without the list-tile arrays has none);
* if ``unit_diagonal`` is set (a square matrix), ``A[i, i] += 1`` for every row i (a matrix without the
  attribute has none);
* then ``A = diag(row_scale) A diag(col_scale)`` (a missing scale is the identity).

Out-of-range ids (window slots holding N, column slots holding M) are skipped, as the contract
specifies for padding. Every value is formed in float64 from the stored numbers.

``spmm_error_bound(A, X)`` is how far the ``spmm_hybrid`` kernel (the ``nkisim`` and ``neuron`` backends) may lie
from this reference, element by element, derived from the kernel's roundings (its docstring): the tolerance of a
parity test.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .bits import unpack_mask
from .layout import KIND_BIN, KIND_FP16, KIND_INT8, MASK_WORDS, TILE_COLS

_TILE_FIELDS = ("shape", "window_rows", "tile_window", "tile_kind", "tile_ncols", "tile_cols", "keep_bits",
                "tile_slot", "int8_values", "int8_scale", "fp16_values")
_ENTRY_FIELDS = ("etile_window", "etile_kind", "etile_nentries", "etile_cols", "etile_rows", "etile_keep_bits",
                 "etile_slot", "etile_int8_values", "etile_int8_scale", "etile_fp16_values")
_LIST_FIELDS = ("ltile_window", "ltile_kind", "ltile_nentries", "ltile_cols", "ltile_colslot", "ltile_rows",
                "ltile_keep_bits", "ltile_slot", "ltile_int8_values", "ltile_int8_scale", "ltile_fp16_values")
_HYBRID_FIELDS = ("q", "scale", "hi_rows", "hi")
_ML_DTYPES_FLOATS = ("bfloat16", "float8_e4m3fn", "float8_e5m2")
"""ml_dtypes' NumPy floats (dtype kind "V", not "f"), which the kernel also takes as X."""


def _stored_values(kind, slot, int8_at, int8_scale, fp16_at) -> np.ndarray:
    """float64 value of each kept entry from its tile's kind: 1, INT8 value x scale, or FP16 value."""
    values = np.ones(kind.shape, np.float64)
    is_int8 = kind == KIND_INT8
    values[is_int8] = int8_at(is_int8).astype(np.float64) * int8_scale[slot[is_int8]].astype(np.float64)
    is_fp16 = kind == KIND_FP16
    values[is_fp16] = fp16_at(is_fp16).astype(np.float64)
    unknown = ~(is_int8 | is_fp16 | (kind == KIND_BIN))
    if unknown.any():
        raise ValueError(f"spmm_reference: tile kind must be 0 (BIN), 1 (INT8) or 2 (FP16), got {int(kind[unknown][0])}")
    return values


def _bitmap_entries(A):
    """(rows, cols, values) of every kept entry of the bitmap tiles."""
    keep_bits = np.asarray(A.keep_bits)
    T = keep_bits.shape[0]
    if T == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64)
    kept = unpack_mask(keep_bits.reshape(T, TILE_COLS, MASK_WORDS))  # [t, k, r]
    used_columns = np.arange(TILE_COLS)[None, :] < np.asarray(A.tile_ncols)[:, None]
    t, k, r = np.nonzero(kept & used_columns[:, :, None])
    window = np.asarray(A.tile_window)[t]
    rows = np.asarray(A.window_rows)[window, r].astype(np.int64)
    cols = np.asarray(A.tile_cols)[t, k].astype(np.int64)
    slot = np.asarray(A.tile_slot)[t]
    int8_values, fp16_values = np.asarray(A.int8_values), np.asarray(A.fp16_values)
    values = _stored_values(
        np.asarray(A.tile_kind)[t],
        slot,
        lambda sel: int8_values[slot[sel], k[sel], r[sel]],
        np.asarray(A.int8_scale),
        lambda sel: fp16_values[slot[sel], k[sel], r[sel]],
    )
    return rows, cols, values


def _per_entry_tile_entries(A, prefix, fields, columns):
    """(rows, cols, values) of every kept entry of the tiles named ``prefix`` ("etile": entry tiles, "ltile": list
    tiles; none if A lacks ``fields``). ``columns(t, e)`` gives the column of entry e of tile t."""
    field = lambda name: np.asarray(getattr(A, f"{prefix}_{name}"))  # noqa: E731
    if not all(hasattr(A, name) for name in fields) or field("keep_bits").shape[0] == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64)
    kept = unpack_mask(field("keep_bits"))  # [t, e]
    used_entries = np.arange(TILE_COLS)[None, :] < field("nentries")[:, None]
    t, e = np.nonzero(kept & used_entries)
    window = field("window")[t]
    rows = np.asarray(A.window_rows)[window, field("rows")[t, e].astype(np.int64)].astype(np.int64)
    cols = columns(t, e).astype(np.int64)
    slot = field("slot")[t]
    int8_values, fp16_values = field("int8_values"), field("fp16_values")
    values = _stored_values(
        field("kind")[t],
        slot,
        lambda sel: int8_values[slot[sel], e[sel]],
        field("int8_scale"),
        lambda sel: fp16_values[slot[sel], e[sel]],
    )
    return rows, cols, values


def _entry_tile_entries(A):
    """(rows, cols, values) of every kept entry of the entry tiles: each entry names its column."""
    return _per_entry_tile_entries(A, "etile", _ENTRY_FIELDS, lambda t, e: np.asarray(A.etile_cols)[t, e])


def _list_tile_entries(A):
    """(rows, cols, values) of every kept entry of the list tiles: each entry names a slot of its tile's column list."""
    return _per_entry_tile_entries(
        A, "ltile", _LIST_FIELDS,
        lambda t, e: np.asarray(A.ltile_cols)[t, np.asarray(A.ltile_colslot)[t, e].astype(np.int64)],
    )


def reference_matrix(A) -> sp.csr_matrix:
    """float64 CSR ``[N, M]`` of the kept entries of DSTE matrix ``A``, scales applied (module docstring)."""
    missing = [name for name in _TILE_FIELDS if not hasattr(A, name)]
    if missing:
        raise TypeError(f"spmm_reference: A must carry the DSTE matrix arrays; {type(A).__name__} lacks {missing}")
    N, M = (int(n) for n in A.shape)
    parts = [_bitmap_entries(A), _entry_tile_entries(A), _list_tile_entries(A)]
    if getattr(A, "unit_diagonal", False):
        if N != M:
            raise ValueError(f"spmm_reference: a unit diagonal needs a square A, got shape {(N, M)}")
        diagonal = np.arange(N, dtype=np.int64)
        parts.append((diagonal, diagonal, np.ones(N, np.float64)))
    rows, cols, values = (np.concatenate(p) for p in zip(*parts))
    in_range = (rows >= 0) & (rows < N) & (cols >= 0) & (cols < M)
    rows, cols, values = rows[in_range], cols[in_range], values[in_range]
    row_scale, col_scale = getattr(A, "row_scale", None), getattr(A, "col_scale", None)
    if row_scale is not None:
        values = values * np.asarray(row_scale, np.float64)[rows]
    if col_scale is not None:
        values = values * np.asarray(col_scale, np.float64)[cols]
    return sp.coo_matrix((values, (rows, cols)), shape=(N, M)).tocsr()  # duplicates sum: the contract's +=


def _is_hybrid(X) -> bool:
    """Whether X carries the hybrid-row arrays (``q``, ``scale``, ``hi_rows``, ``hi``)."""
    return all(hasattr(X, name) for name in _HYBRID_FIELDS)


def dense_operand(X) -> np.ndarray:
    """float64 ``[M, F]`` of a dense X, or of a hybrid-row X (``q * scale`` per row, FP16 rows from ``hi``)."""
    if _is_hybrid(X):
        q, scale, hi_rows, hi = (np.asarray(getattr(X, name)) for name in _HYBRID_FIELDS)
        if (q.ndim != 2 or scale.shape != q.shape[:1] or hi_rows.ndim != 1 or hi_rows.dtype.kind not in "iu"
                or hi.shape != (hi_rows.size, q.shape[1])):
            raise ValueError(f"spmm_reference: hybrid-row X needs q [M, F], scale [M], hi_rows [M_hi] (integer row "
                             f"ids) and hi [M_hi, F]; got q {q.shape}, scale {scale.shape}, hi_rows {hi_rows.dtype} "
                             f"{hi_rows.shape}, hi {hi.shape}")
        if hi_rows.size and (hi_rows.min() < 0 or hi_rows.max() >= q.shape[0]):
            raise ValueError(f"spmm_reference: hybrid-row X's hi_rows must be row ids in [0, {q.shape[0]}), got "
                             f"{hi_rows.min()} .. {hi_rows.max()}")
        dense = q.astype(np.float64) * scale.astype(np.float64)[:, None]
        dense[hi_rows.astype(np.int64)] = hi.astype(np.float64)
        return dense
    dense = np.asarray(X)
    if dense.dtype.kind not in "biuf" and dense.dtype.name not in _ML_DTYPES_FLOATS:
        raise TypeError(f"spmm_reference: X must be a real array or hybrid rows, got dtype {dense.dtype}")
    return dense.astype(np.float64)


BF16_OPERANDS_BOUND = 2.0**-7 + 2.0**-16
"""Relative error per term ``|a| |x|`` of the kernel for a float32 (or float64) X: the gather rounds X to bf16 and
the stationary rounds ``keep * value * column factor`` to bf16, so a product carries ``(1 + 2^-8)^2 - 1``."""
ONE_ROUNDING_BOUND = 2.0**-8 + 2.0**-11 + 2.0**-18
"""Relative error per term for a bfloat16 / float16 X or hybrid rows: one of the two operands is exact in bf16 and
the other is rounded to bf16 once (``2^-8``), with room for the fp16 dequantization and the fp32 terms."""


def spmm_error_bound(A, X) -> np.ndarray:
    """float64 ``[N, F]``: ``|Y - spmm_reference(A, X)| <= bound`` for the ``spmm_hybrid`` kernel's ``Y``.

    ``bound = e * S + 1e-30`` with ``S = |A| |X|`` (A as :func:`reference_matrix` reads it, X as
    :func:`spmm_reference` does) and ``e`` the per-term error of the operands the kernel multiplies
    (:data:`BF16_OPERANDS_BOUND` for a float32 or float64 X, :data:`ONE_ROUNDING_BOUND` for a bfloat16 or float16
    X or hybrid rows). Every term is the product of a bf16 stationary and a 16-bit moving element:

    - dense X: the stationary is keep x value x column factor rounded once to bf16 (unit roundoff 2^-8); a float32
      X is rounded to bf16 by the gather, a bf16 or fp16 X is exact;
    - hybrid rows, bitmap slots of BIN and INT8 tiles: the moving operand is q x row scale x column factor rounded
      once to bf16, the stationary the exact mask (times the INT8 value, exact in bf16);
    - hybrid rows, FP16 bitmap slots and entry / list slots: the moving operand q is exact, the stationary keep x
      value x factor x row scale is rounded once to bf16;
    - PSUM accumulates in fp32 and the row factor is an fp32 multiply: second order at these sizes.

    INT8 tile values are not re-rounded by the kernel (this reference decodes the same INT8 values), so every
    tile kind gets the same bound. The bound is relative to the terms, not to the output: where products cancel,
    an output can be off by all of itself. For the ``cpu`` backend (float32 arithmetic, SciPy's bits) use float32
    tolerances instead: its error is about ``2^-24`` per term and addition, far inside this bound.
    """
    if _is_hybrid(X) or np.asarray(X).dtype not in (np.float32, np.float64):
        per_term = ONE_ROUNDING_BOUND
    else:
        per_term = BF16_OPERANDS_BOUND
    dense = _checked_operand(A, X, "spmm_error_bound")
    return per_term * np.asarray(abs(reference_matrix(A)) @ np.abs(dense)) + 1e-30


def spmm_reference(A, X) -> np.ndarray:
    """``float64 [N, F]`` = the DSTE matrix ``A`` (kept entries, scales applied) times ``X``.

    ``X`` is a dense ``[M, F]`` array (any real dtype) or any object with the hybrid-row arrays
    ``q``, ``scale``, ``hi_rows``, ``hi`` (dequantized here in float64, FP16 rows exactly).
    """
    return np.asarray(reference_matrix(A) @ _checked_operand(A, X, "spmm_reference"))


def _checked_operand(A, X, where: str) -> np.ndarray:
    """``dense_operand(X)``, refused (naming ``where``) unless it is a finite ``[M, F]`` for A's M columns."""
    dense = dense_operand(X)
    M = int(A.shape[1])
    if dense.ndim != 2 or dense.shape[0] != M:
        raise ValueError(f"{where}: X must be [M={M}, F], got shape {dense.shape}")
    if not np.isfinite(dense).all():
        raise ValueError(f"{where}: X must be finite (no NaN or Inf)")
    return dense
