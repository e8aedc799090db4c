"""Encoding a sparse or dense matrix into a :class:`DSTEMatrix` (vectorised; no loop over edges or tiles).

Pipeline: validate and canonicalise the input (COO, duplicates summed, zeros dropped) ->
factor out the row/column scales -> optional reordering -> sort entries by (window,
column position, window slot) -> split each window's columns into bitmap columns and
entry-tile entries by the modelled per-call cost (below) -> cut into tiles of 128 ->
choose each tile's kind (BIN / INT8 / FP16) -> sort tiles by (window, kind, first
column) -> pack masks and quantize values.

The bitmap-column / entry-tile split (``policy.bitmap_split``)
--------------------------------------------------------------
Both tile layouts are fixed-size arrays, so a tile costs the same whether it holds 1 or 128
columns (entries): a bitmap tile 2,317 device bytes (2 KiB keep bits, 256 B of 16-bit column
ids, 13 B window/kind/ncols/slot), an entry tile 413 B (256 B columns, 128 B rows, 16 B keep
bits, 13 B; the band of ids past 65,536 X rows, a few bytes per tile, is left out), plus 128x128 (bitmap) or 128 (entry) value bytes for INT8/FP16 tiles; and
each tile is one gather transfer per SpMM call. The modelled cost of one call is therefore

    cost = sum over tiles (device bytes + gather_transfer_bytes) + x_row_bytes * X rows gathered

with ``gather_transfer_bytes`` = 29,900 (the kernels' trn2 model: 1.3 us fixed per DMA
transfer x 23 B/ns per queue; one transfer is worth ~30 KB of queue traffic) and
``x_row_bytes`` = 136 (the price of one gathered INT8 X row with F = 128: the hybrid-row record
was 128 B + 8 B when it was set, 132 B now; ``policy.DEFAULT_X_ROW_BYTES``). A bitmap column
gathers one X row for all its c entries, an entry one row each.

``"cost"`` (default), per window with n entries: sort the columns holding at least
``bitmap_min_entries`` entries densest first (ties by column); making the k densest of them
bitmap columns (absorbing C(k) entries) costs

    ceil(k/128) * bitmap_tile + ceil((n - C(k))/128) * entry_tile + x_row_bytes * (k + n - C(k))

and the encoder takes the k = 0 .. eligible count with the least cost (ties: smaller k),
all windows at once (one sort, cumulative sums, a segmented minimum). The k densest columns
are the best k for the row count and the entry-tile count alike, so this is the exact
optimum over which columns go to bitmaps. It demotes the columns of a nearly empty last
bitmap tile to entries when the entry tiles have room (or need fewer new tiles than the
bitmap tile costs), and fills a bitmap tile's free slots with sparse columns when that
empties the last entry tile. Tiles are cut in density order; inside a tile the columns stay
in column order. Defaults of the floor: 1 for structure-only matrices (the cost decides
alone), 4 for valued ones (a bitmap column carries 128 values, so the floor keeps columns
of 1-3 entries, 128 B of values each, out of the bitmaps for memory's sake).
``x_row_bytes = gather_transfer_bytes = 0`` minimises device bytes alone (memory footprint).

List tiles (``policy.list_tiles``, cost split only): the window columns left out of the bitmaps go
to list tiles when they have 2+ entries (one gathered row per column; 1-byte row slot and 1-byte
index into the tile's column list per entry; 417 device bytes per tile) and to entry tiles when they
have 1; the prefix cost then reads ``ceil(k/128) * bitmap_tile + n * list_tile + ceil(n/2) *
gather_transfer + ceil(S/128) * entry_tile + x_row_bytes * (k + listed columns + S)`` with n = ceil(L/127)
list tiles, two of which share one gather in the ``spmm_hybrid`` kernel (:func:`_cost_with_list_tiles`).
(bench/README.md, "Device bytes with 16-bit column ids", has the measured bytes and modelled latency.)

``"count"`` (the earlier rule): every column with at least ``bitmap_min_entries`` entries
(default 2 structure-only, 4 valued) is a bitmap column, cut into tiles in column order.

Measured bytes, stretch and modelled latency of the split rules: ``bench/README.md``, "Device bytes with 16-bit
column ids" and "The split rules' first measurements (4-byte column ids)".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
# SciPy's COO -> CSR / CSR -> CSC routines, for counting sorts (see _window_column_slot_order)
from scipy.sparse import _sparsetools

from dste.checks import check_sparse_indices
from dste.format.constants import (
    COLUMN_BAND_ROWS,
    COLUMN_ID_BYTES,
    ENTRY_MASK_WORDS,
    FLOAT32_MAX,
    FLOAT32_SMALLEST_NORMAL,
    FP16_MAX,
    FP16_UNDERFLOW_AMAX,
    LIST_TILE_COLS,
    MASK_WORD_BITS,
    MASK_WORDS,
    TILE_COLS,
    WINDOW_ROWS,
    TileKind,
)
from dste.format.bits import popcount
from dste.format.errors import DSTEFormatError, meta_tensor_error
from dste.format.matrix import DSTEMatrix, entry_used_words
from dste.format.policy import (
    BITMAP_MIN_ENTRIES_BIN,
    BITMAP_MIN_ENTRIES_BIN_COST,
    BITMAP_MIN_ENTRIES_VALUED,
    EncodePolicy,
    check_policy_fields,
)
from dste.format.hybrid_rows import int8_sensitivity_robust
from dste.format.quant import INT8_QMAX, dequantize_int8, quantize_int8, to_fp16
from dste.format.permutation import inverse_permutation, is_permutation
# at import, not at the first encode: the orders' module (and Numba, for the RCM order) then load with the package
# rather than inside the first call's time and resident peak
from dste.format.reorder import compute_order

BITMAP_TILE_DEVICE_BYTES = TILE_COLS * (4 * MASK_WORDS + COLUMN_ID_BYTES) + 13
"""Device bytes of one bitmap tile without values: keep bits + column ids + window, kind,
ncols and slot (4 + 1 + 4 + 4 B), whatever its column count."""

ENTRY_TILE_DEVICE_BYTES = TILE_COLS * (COLUMN_ID_BYTES + 1) + 4 * ENTRY_MASK_WORDS + 13
"""Device bytes of one entry tile without values: column ids, row slots, keep bits and the
same 13 B of per-tile metadata, whatever its entry count."""

LIST_TILE_DEVICE_BYTES = LIST_TILE_COLS * COLUMN_ID_BYTES + 2 * TILE_COLS + 4 * ENTRY_MASK_WORDS + 17
"""Device bytes of one list tile without values: 64 column ids, a row slot and a column-list index
per entry, keep bits, and window, kind, nentries, ncols and slot (4 + 1 + 4 + 4 + 4 B)."""

LIST_TILES_PER_GATHER = 2
"""List tiles of a window whose listed rows the ``spmm_hybrid`` kernel gathers in one transfer (priced once)."""

LIST_TILE_PACK = TILE_COLS - 1
"""Entries the encoder packs per list tile (the last of a window holds the rest). Columns are cut
between consecutive tiles, so a tile of 127 consecutive list entries, whose columns all have 2+
entries except possibly the two cut at its ends, names at most 1 + 62 + 1 = 64 columns
(``LIST_TILE_COLS``); 128 could name 65."""

INT8_SCALE_BYTES = 4
"""float32 scale of an INT8 tile."""

FAITHFUL_RELATIVE_ERROR = 2.0**-11
"""Largest relative error per stored value that ``kinds="faithful"`` accepts: float16's
round-to-nearest bound (half an ulp of an 11-bit significand) over its normal range."""

MIN_STORED_MAGNITUDE = INT8_QMAX * FLOAT32_SMALLEST_NORMAL
"""Stored values are float32; a nonzero value below 127 x float32's smallest normal (1.5e-36)
would be stored as a subnormal or flushed to 0, or give an INT8 tile a subnormal scale (whose
reciprocal overflows), so :func:`encode` refuses it."""

BIN_ULP_TOLERANCE = 4 * 2.0**-24
"""A factored value within 4 float32 ulps of 1 counts as 1 (BIN), so values built as
float32 products of the scales round-trip to BIN tiles."""


# --------------------------------------------------------------------------- input
MAX_ENCODED_DIM = 2**31 - 1
"""The largest N or M a matrix can have: tile column ids, their padding id M and window row ids are int32."""


def check_encodable_shape(shape) -> None:
    """Refuse a shape the format cannot index, before any O(N) or O(M) array would exhaust memory first."""
    if max(shape) > MAX_ENCODED_DIM:
        raise DSTEFormatError(f"shape {tuple(shape)}: each dimension must be at most {MAX_ENCODED_DIM:,} (2^31 - 1: "
                              "the format stores row and column ids, and its padding id M, as int32)")


def to_coo(A):
    """Validate any supported matrix and return ``(rows int64, cols int64, values float64, (N, M))``.

    Accepted: SciPy sparse matrices/arrays of any format, NumPy arrays (or nested lists),
    torch dense / sparse COO / sparse CSR CPU tensors. Dtypes: bool, integer or real
    float. Must be 2-D with finite values and in-range, non-negative indices. Duplicates
    are summed and explicit zeros dropped. Entries come in row-major order.
    """
    canon, shape = to_csr(A)
    rows = np.repeat(np.arange(shape[0], dtype=np.int64), np.diff(canon.indptr))
    return rows, canon.indices.astype(np.int64), canon.data, shape


def to_csr(A):
    """Validate like :func:`to_coo` and return ``(canonical float64 CSR, (N, M))``.

    Canonical: column indices sorted inside each row, no duplicates (summed), no explicit
    zeros. A SciPy CSR input that is already canonical is checked in one vectorised pass
    and not rebuilt (its index arrays are shared, read-only, with the result).
    """
    if _is_torch_tensor(A):
        A = _torch_to_scipy_or_numpy(A)
    if isinstance(A, DSTEMatrix):
        raise DSTEFormatError("input is already a DSTEMatrix; use decode() to get a SciPy matrix")
    if sp.issparse(A):
        if A.ndim != 2:
            raise DSTEFormatError(f"expected a 2-D matrix, got a {A.ndim}-D sparse array")
        _check_dtype(A.dtype)
        N, M = (int(s) for s in A.shape)
        check_encodable_shape((N, M))  # before the CSR conversion allocates N + 1 row pointers
        check_sparse_indices(A, "sparse input", DSTEFormatError)
        if A.format == "csr":
            indptr, indices, vals = np.asarray(A.indptr), np.asarray(A.indices), np.asarray(A.data)
            indices, vals = indices[: indptr[-1]], vals[: indptr[-1]]
            vals = _finite_float64(vals)
            if _is_canonical(indptr, indices) and vals.all():
                canon = sp.csr_matrix((vals, indices, indptr), shape=(N, M), copy=False)
                canon.has_sorted_indices = True
                return canon, (N, M)
            # rows sorted and duplicates summed in place (SciPy's per-row sort), on copies of the caller's arrays
            own_vals = vals.copy() if np.may_share_memory(vals, A.data) else vals
            canon = sp.csr_matrix((own_vals, indices.copy(), indptr.copy()), shape=(N, M))
            canon.sum_duplicates()
            canon.eliminate_zeros()
            return canon, (N, M)
        else:
            coo = A.tocoo()
            rows = np.asarray(coo.row, dtype=np.int64)
            cols = np.asarray(coo.col, dtype=np.int64)
            vals = _finite_float64(np.asarray(coo.data))
        canon = sp.csr_matrix((vals, (rows, cols)), shape=(N, M))  # sums duplicates, sorts indices
        canon.eliminate_zeros()
        return canon, (N, M)
    if A is None or isinstance(A, (str, bytes, dict)):
        raise DSTEFormatError(f"expected a 2-D matrix (SciPy sparse, NumPy array or torch tensor), got "
                              f"{type(A).__name__}")
    dense = np.asarray(A)
    if dense.ndim != 2:
        raise DSTEFormatError(f"expected a 2-D matrix, got {type(A).__name__} of shape {dense.shape}")
    _check_dtype(dense.dtype)
    dense = _finite_float64(dense)
    return sp.csr_matrix(dense), tuple(int(s) for s in dense.shape)


def _finite_float64(values):
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).all():
        raise DSTEFormatError("input contains NaN or Inf values; only finite values can be encoded")
    return values


def _is_canonical(indptr, indices) -> bool:
    """Column indices strictly increasing inside every row (sorted, no duplicates)."""
    if indices.size < 2:
        return True
    increasing = np.diff(indices.astype(np.int64)) > 0
    row_start = np.zeros(indices.size, dtype=bool)
    row_start[indptr[1:-1][indptr[1:-1] < indices.size]] = True
    return bool((increasing | row_start[1:]).all())


def _check_dtype(dtype):
    # ml_dtypes' bfloat16 (NumPy kind "V") is a real float, read as torch's bfloat16 is: exactly, in float64
    if np.dtype(dtype).kind not in "biuf" and np.dtype(dtype).name != "bfloat16":
        raise DSTEFormatError(f"unsupported dtype {dtype}; allowed: bool, integer, real floating point (bfloat16 "
                              "included)")


def _is_torch_tensor(A) -> bool:
    return type(A).__module__.startswith("torch") and type(A).__name__ in ("Tensor", "Parameter")


def _torch_to_scipy_or_numpy(t):
    import torch

    if t.device.type == "meta":  # .cpu() failed in torch's words: "Cannot copy out of meta tensor; no data!"
        raise meta_tensor_error("the matrix", "the DSTE format")
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.detach()
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.float()
    if t.is_complex():
        raise DSTEFormatError(f"unsupported dtype {t.dtype}; allowed: bool, integer, real floating point")
    if t.layout == torch.sparse_csr:
        t = t.to_sparse_coo()
    if t.layout == torch.sparse_coo:
        if t.dim() != 2 or t.dense_dim() != 0:
            raise DSTEFormatError(
                f"expected a 2-D sparse matrix with scalar values, got shape {tuple(t.shape)} with {t.dense_dim()} "
                "dense dimension(s)"
            )
        # not coalesced here: torch sums duplicates in the tensor's own dtype (int8 100 + 100 = -56); to_coo sums
        # them as it sums a SciPy matrix's
        idx = t._indices().numpy()
        return sp.coo_matrix((t._values().numpy(), (idx[0], idx[1])), shape=tuple(t.shape))
    if t.layout != torch.strided:
        raise DSTEFormatError(f"unsupported torch layout {t.layout}; allowed: strided, sparse_coo, sparse_csr")
    return t.numpy()


def _check_scale(name, scale, length):
    if scale is None:
        return None
    scale = np.asarray(scale)
    if scale.shape != (length,):
        raise DSTEFormatError(f"{name} must have shape ({length},), got {scale.shape}")
    if scale.dtype == np.bool_:  # read as 0/1, it zeroed every row (column) it marked False
        raise TypeError(f"{name} must hold real numbers (integer or floating point scales), got a bool array")
    _check_dtype(scale.dtype)
    if not np.isfinite(scale).all():
        raise DSTEFormatError(f"{name} must be finite")
    with np.errstate(over="ignore"):  # an overflow is refused below, with the scale named
        # a copy, always: a caller's float32 buffer edited later would rewrite the matrix under its cached products
        scale32 = np.array(scale, dtype=np.float32, order="C", copy=True)
    lost = ~np.isfinite(scale32) | ((scale32 == 0) & (scale != 0))
    if lost.any():
        i = int(np.flatnonzero(lost)[0])
        raise DSTEFormatError(
            f"{name}[{i}] = {float(scale[i]):.6g} {'overflows' if scale32[i] != 0 else 'underflows to 0 in'} float32, "
            f"the scales' dtype: nonzero scales must lie within float32's range ({FLOAT32_SMALLEST_NORMAL:.3g} to "
            f"{FLOAT32_MAX:.3g} in magnitude)"
        )
    return scale32


def _check_scales(row_scale, col_scale, rows: int, cols: int):
    """``_check_scale`` of both, one copy where both name one vector (``gcn_normalized``'s D^-1/2): the matrix
    then holds it once, as the device does (``DSTEMatrix.nbytes``)."""
    checked_rows = _check_scale("row_scale", row_scale, rows)
    if col_scale is row_scale and row_scale is not None and rows == cols:
        return checked_rows, checked_rows
    return checked_rows, _check_scale("col_scale", col_scale, cols)


def _scale_magnitudes(row_scale, col_scale):
    """``|row_scale|``, ``|col_scale|`` in float64 (a single 1 for a missing one)."""
    row_abs = np.ones(1) if row_scale is None else np.abs(row_scale.astype(np.float64))
    col_abs = np.ones(1) if col_scale is None else np.abs(col_scale.astype(np.float64))
    return row_abs, col_abs


def _scaled_bounds_within_float32(smallest, largest, row_abs, col_abs) -> bool:
    """Whether every product ``row_scale_i * v * col_scale_j`` of a value with ``smallest <= |v| <= largest`` (``v``
    nonzero) is a normal float32, judged on the bounds alone (False: the bounds do not settle it)."""
    high = largest * row_abs.max() * col_abs.max()
    low = smallest * row_abs[row_abs > 0].min(initial=np.inf) * col_abs[col_abs > 0].min(initial=np.inf)
    return high <= FLOAT32_MAX and low >= FLOAT32_SMALLEST_NORMAL


def _check_scaled_range(rows, cols, stored, row_scale, col_scale, what: str = "encode: the value") -> None:
    """Refuse values whose product with their scales (``row_scale_i * v * col_scale_j``) leaves float32's normal
    range: ``decode`` and the CPU op fold the scales into float32 values, where such an entry would become 0, a
    subnormal or Inf (the kernel applies the scales apart and would differ). Checked on bounds first, per entry
    only when the bounds do not settle it."""
    if stored.size == 0 or (row_scale is None and col_scale is None):
        return
    magnitude = np.abs(stored[:1] if stored.strides == (0,) else stored)  # float32: no per-entry float64 copy
    largest = float(magnitude.max())
    if largest == 0:
        return
    smallest = float(magnitude.min(where=magnitude > 0, initial=np.inf))
    del magnitude
    row_abs, col_abs = _scale_magnitudes(row_scale, col_scale)
    if _scaled_bounds_within_float32(smallest, largest, row_abs, col_abs):
        return
    effective = (np.abs(stored).astype(np.float64) * (row_abs[rows] if row_scale is not None else 1.0)
                 * (col_abs[cols] if col_scale is not None else 1.0))
    bad = (effective > FLOAT32_MAX) | ((effective < FLOAT32_SMALLEST_NORMAL) & (effective > 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DSTEFormatError(
            f"{what} at ({int(rows[i])}, {int(cols[i])}) times its row and column scales is "
            f"{float(effective[i]):.6g}, outside float32's normal range ({FLOAT32_SMALLEST_NORMAL:.3g} to "
            f"{FLOAT32_MAX:.3g} in magnitude), where decode and the CPU op compute it. Rescale the matrix so that "
            "every scaled value is a normal float32 (or drop the entry)"
        )


def _check_perm(name, perm, length):
    if perm is None:
        return None
    perm = np.asarray(perm)
    if perm.dtype.kind not in "iu" or not is_permutation(perm, length):
        raise DSTEFormatError(f"{name} must be a permutation of 0..{length - 1} (integers, each id once)")
    return np.array(perm, dtype=np.int64, order="C", copy=True)  # a copy, as the scales (_check_scale)


def _factor(rows, cols, vals, row_scale, col_scale, scaled_input):
    """Stored (factored) float32 values: ``A_ij / (row_scale_i col_scale_j)`` for scaled input.

    A broadcast of one value (``strides == (0,)``, what ``gcn_normalized`` passes) with nothing to
    factor out is checked and converted at its one value and returned as a broadcast: no per-entry
    float32 copy or temporaries are made (they would stay resident under the tiles' peak).
    """
    unscaled = not scaled_input or (row_scale is None and col_scale is None)
    if unscaled and vals.ndim == 1 and vals.size and vals.strides == (0,):
        return np.broadcast_to(_factor(rows[:1], cols[:1], np.array(vals[:1]), None, None, False), vals.shape)
    if scaled_input and (row_scale is not None or col_scale is not None):
        denom = np.ones(vals.shape, dtype=np.float64)
        if row_scale is not None:
            denom *= row_scale[rows]
        if col_scale is not None:
            denom *= col_scale[cols]
        if (denom == 0).any():
            raise DSTEFormatError(
                "row_scale/col_scale is 0 at an entry of the matrix: its value cannot be factored out"
            )
        vals = vals / denom
    with np.errstate(over="ignore"):  # refused below, by position
        vals32 = vals.astype(np.float32)
    if not np.isfinite(vals32).all():
        i = int(np.flatnonzero(~np.isfinite(vals32))[0])
        factored = scaled_input and (row_scale is not None or col_scale is not None)
        raise DSTEFormatError(
            f"the value at ({int(rows[i])}, {int(cols[i])}){' divided by its scales' if factored else ''} is "
            f"{float(vals[i]):.6g}, beyond float32's range ({FLOAT32_MAX:.3g}), the stored values' dtype; rescale the "
            "matrix (or give row_scale/col_scale that factor the magnitude out)"
        )
    tiny = (np.abs(vals32) < MIN_STORED_MAGNITUDE) & (vals != 0)
    if tiny.any():
        where = int(np.flatnonzero(tiny)[0])
        raise DSTEFormatError(
            f"encode: value {vals[where]:.6g} at ({int(rows[where])}, {int(cols[where])}) (after its row/column scales "
            f"are factored out) is below {MIN_STORED_MAGNITUDE:.6g} (127 x float32's smallest normal): it would be "
            "stored as a subnormal or as 0, or make a subnormal INT8 scale. Rescale the matrix (row_scale / col_scale carry any magnitude) or drop the entry"
        )
    return _uniform_view(vals32)


def _uniform_view(values):
    """``values`` itself, or a read-only broadcast of its one value when all are equal
    (a structure-only matrix: its values then take no bytes per entry)."""
    if values.size and values.strides != (0,) and bool((values == values[0]).all()):
        return np.broadcast_to(values[0], values.shape)
    return values


# --------------------------------------------------------------------------- public
def encode(A, policy: EncodePolicy | None = None, *, row_perm=None, col_perm=None, **policy_fields) -> DSTEMatrix:
    """Encode ``A`` [N, M] (SciPy sparse, NumPy, torch) into a :class:`DSTEMatrix`.

    ``policy`` (or keyword fields of :class:`EncodePolicy`) sets layout, reordering,
    kinds, the FP16 threshold, the bitmap/entry split and the scales. ``row_perm`` /
    ``col_perm`` (encoded position -> original id) impose an order and skip
    ``policy.reorder``.

    Values are stored as float32 (a nonzero value whose magnitude, after the scales are
    factored out, is below 127 x float32's smallest normal, 1.5e-36, is refused: it would become
    a subnormal or 0, or give an INT8 tile a subnormal scale). Error of each tile kind, per stored value v of a tile:

    * ``BIN``: exact (a value within 4 float32 ulps of 1 counts as 1).
    * ``FP16``: ``|err| <= 2^-11 |v|`` for ``2^-14 <= |v| <= 65504`` (float16's normal range;
      ``"faithful"`` also keeps ``65504 < |v| < 65520``, which rounds to 65504 within that bound, where
      ``kinds="fp16"`` and ``masked_quant`` refuse anything past 65504);
      below 2^-14, ``|err| <= 2^-25`` absolute (subnormal spacing; values under 2^-25 become 0).
    * ``INT8``: ``|err| <= (max|v_tile| / 254) (1 + 2^-15)`` (half a step of the tile's scale, plus the float32
      rounding of the scale, of ``v / scale`` and of the dequantized product, which near a rounding tie can add
      about 1.5e-5 of the half step): relative to the tile's largest value, so values far below it lose their digits.

    ``kinds`` (default ``"faithful"``): ``"faithful"`` makes each tile BIN if all its values are 1,
    else FP16 if every value meets the 2^-11 relative bound in FP16, else INT8 if every value
    meets it in INT8, and raises :class:`DSTEFormatError` when neither does (values beyond
    float16's range or below 2^-14: rescale with ``row_scale``/``col_scale``, or opt in to a lossy
    kind). ``"auto"`` opts in to INT8: per tile BIN / INT8 / FP16 by the sensitivity rule
    (:mod:`dste.format.policy`), smaller but lossy; a tile whose largest |value| is below
    ``FP16_UNDERFLOW_AMAX`` (7.6e-6) stays INT8, which stores it better than float16's subnormals.
    ``"int8"``, ``"fp16"``, ``"bin"`` force a kind.
    """
    check_policy_fields(policy_fields, "encode", also_allowed=("policy", "row_perm", "col_perm"))
    if policy is None:
        policy = EncodePolicy(**policy_fields)
    elif not isinstance(policy, EncodePolicy):
        hint = f" (to choose tile kinds: kinds={policy!r})" if isinstance(policy, str) else ""
        raise TypeError(f"policy must be an EncodePolicy or None, got {type(policy).__name__}{hint}; policy "
                        "fields go in as keywords: encode(A, kinds=..., layout=..., reorder=...)")
    elif policy_fields:
        meta = policy.metadata()
        meta.update({k: v for k, v in policy_fields.items() if k not in ("row_scale", "col_scale")})
        new = EncodePolicy.from_metadata(meta)
        new.row_scale = policy_fields.get("row_scale", policy.row_scale)
        new.col_scale = policy_fields.get("col_scale", policy.col_scale)
        policy = new
    *entries, shape = to_coo(A)  # a list the encode empties once its sorted per-window arrays exist
    return encode_coo_owned(entries, shape, policy, row_perm=row_perm, col_perm=col_perm)


def encode_coo(rows, cols, vals, shape, policy: EncodePolicy, *, row_perm=None, col_perm=None) -> DSTEMatrix:
    """Encode validated canonical COO arrays (as returned by :func:`to_coo`)."""
    entries = [rows, cols, vals]
    del rows, cols, vals
    return encode_coo_owned(entries, shape, policy, row_perm=row_perm, col_perm=col_perm)


def encode_coo_owned(entries: list, shape, policy: EncodePolicy, *, row_perm=None, col_perm=None,
                     diagonal_rows=None) -> DSTEMatrix:
    """:func:`encode_coo` of ``entries = [rows, cols, vals]``, a list it empties (``entries.clear()``) as
    soon as the entries' sorted per-window arrays exist, so the caller's COO arrays are freed before
    the tiles are built (the encode's peak) when the caller keeps no other reference to them.
    ``diagonal_rows``: with ``policy.unit_diagonal``, the rows whose diagonal entry the entries must hold
    (default every row; :func:`reencode_windows` gives the rows of the windows it encodes)."""
    N, M = shape
    check_encodable_shape(shape)
    rows, cols, vals = entries
    row_scale, col_scale = _check_scales(policy.row_scale, policy.col_scale, N, M)
    row_perm = _check_perm("row_perm", row_perm, N)
    col_perm = _check_perm("col_perm", col_perm, M)
    if row_perm is None and col_perm is None and policy.reorder != "none":
        row_perm, col_perm = compute_order(policy.reorder, rows, cols, shape, seed=policy.seed)
    row_perm = _windows_in_row_order(row_perm, N)
    vals32 = _factor(rows, cols, vals, row_scale, col_scale, policy.scaled_input)
    _check_scaled_range(rows, cols, vals32, row_scale, col_scale)
    if policy.unit_diagonal:
        rows, cols, vals32 = _without_unit_diagonal(rows, cols, vals32, shape, diagonal_rows)
    entries[:] = [rows, cols, vals32]
    del rows, cols, vals
    split = _resolve_split(policy, vals32)
    del vals32
    meta = policy.metadata()
    meta["bitmap_min_entries"] = split.min_entries
    meta["value_bytes"] = split.value_bytes
    arrays = _encode_tiles(entries, shape, row_perm, col_perm, policy, split)
    return DSTEMatrix(
        shape=(N, M),
        window_rows=_window_rows(row_perm, N),
        row_scale=row_scale,
        col_scale=col_scale,
        row_perm=row_perm,
        col_perm=col_perm,
        layout=policy.layout,
        encode_policy=meta,
        unit_diagonal=policy.unit_diagonal,
        **arrays,
    )


def _without_unit_diagonal(rows, cols, vals32, shape, expected_rows=None):
    """The entries off the diagonal, after checking that the diagonal of ``expected_rows`` (default: every row) is
    whole and of stored value 1 (what ``EncodePolicy.unit_diagonal`` leaves implicit). The entries are canonical
    (no repeated pair), so counting the diagonal ones settles which rows have one."""
    N, M = shape
    if N != M:
        raise DSTEFormatError(f"unit_diagonal needs a square matrix, got shape {shape}")
    on_diagonal = rows == cols
    diagonal_rows = rows[on_diagonal]
    required = np.ones(N, bool) if expected_rows is None else np.zeros(N, bool)
    if expected_rows is not None:
        required[np.asarray(expected_rows, dtype=np.int64)] = True
    present = np.zeros(N, bool)
    present[diagonal_rows] = True
    missing = np.flatnonzero(required & ~present)
    if missing.size:
        raise DSTEFormatError(
            f"unit_diagonal needs every diagonal entry stored: {missing.size} of {int(required.sum())} rows have none "
            f"(first: row {missing[0]}); encode with unit_diagonal=False, or add the missing entries (A + I)")
    values = vals32[on_diagonal]
    if not (values == 1.0).all():
        bad = int(np.flatnonzero(values != 1.0)[0])
        raise DSTEFormatError(
            f"unit_diagonal needs every diagonal entry to store the value 1 (scales apart), got {values[bad]!r} at "
            f"({diagonal_rows[bad]}, {diagonal_rows[bad]}); encode with unit_diagonal=False")
    off_diagonal = ~on_diagonal
    return rows[off_diagonal], cols[off_diagonal], vals32[off_diagonal]


@dataclass(frozen=True)
class SplitRule:
    """The resolved bitmap-column / entry-tile split of one encode (see the module docstring)."""

    rule: str
    min_entries: int
    value_bytes: int
    x_row_bytes: int
    gather_transfer_bytes: int
    list_tiles: bool = False

    @property
    def list_tile_cost(self) -> int:
        """Per-call cost of one list tile besides its gathered rows and its transfer: device bytes."""
        values = TILE_COLS * self.value_bytes + (INT8_SCALE_BYTES if self.value_bytes == 1 else 0)
        return LIST_TILE_DEVICE_BYTES + values

    def list_tiles_cost(self, n_tiles):
        """Per-call cost of a window's ``n_tiles`` list tiles besides their gathered rows: device bytes, and one
        transfer per pair of them (the ``spmm_hybrid`` kernel gathers the listed rows of two list tiles of a
        window, <= 64 each, in one 128-partition gather)."""
        return n_tiles * self.list_tile_cost + -(-n_tiles // LIST_TILES_PER_GATHER) * self.gather_transfer_bytes

    @property
    def bitmap_tile_cost(self) -> int:
        """Per-call cost of one bitmap tile besides its gathered rows: device bytes + one transfer."""
        values = TILE_COLS * WINDOW_ROWS * self.value_bytes + (INT8_SCALE_BYTES if self.value_bytes == 1 else 0)
        return BITMAP_TILE_DEVICE_BYTES + values + self.gather_transfer_bytes

    @property
    def entry_tile_cost(self) -> int:
        """Per-call cost of one entry tile besides its gathered rows: device bytes + one transfer."""
        values = TILE_COLS * self.value_bytes + (INT8_SCALE_BYTES if self.value_bytes == 1 else 0)
        return ENTRY_TILE_DEVICE_BYTES + values + self.gather_transfer_bytes


def _resolve_split(policy: EncodePolicy, vals32) -> SplitRule:
    structure_only = policy.kinds == "bin" or (
        policy.kinds in ("auto", "faithful") and bool((np.abs(vals32 - 1.0) <= BIN_ULP_TOLERANCE).all())
    )
    min_entries = policy.bitmap_min_entries
    if min_entries is None:
        bin_floor = BITMAP_MIN_ENTRIES_BIN_COST if policy.bitmap_split == "cost" else BITMAP_MIN_ENTRIES_BIN
        min_entries = bin_floor if structure_only else BITMAP_MIN_ENTRIES_VALUED
    value_bytes = policy.value_bytes
    if value_bytes is None:
        value_bytes = 0 if structure_only else (2 if policy.kinds in ("fp16", "faithful") else 1)
    return SplitRule(policy.bitmap_split, min_entries, value_bytes, policy.x_row_bytes, policy.gather_transfer_bytes,
                     policy.list_tiles)


def _windows_in_row_order(row_perm, N):
    """``row_perm`` with each 128-row window's rows in ascending original id, past one band of rows (N >
    ``COLUMN_BAND_ROWS``): a window's row ids (its slot map) are then in band order and their bands take ``bands -
    1`` bytes per window (``dste.format.matrix.band_starts``) instead of a plane of bits per slot. The order keeps
    each window's set of rows, so no tile's entries, gathered X rows or modelled cost change, only which slot a row
    takes; at most one band of rows, or without a permutation, the order is kept as given."""
    if row_perm is None or N <= COLUMN_BAND_ROWS:
        return row_perm
    ordered = row_perm.copy()
    full = N - N % WINDOW_ROWS
    ordered[:full].reshape(-1, WINDOW_ROWS).sort(axis=1)
    ordered[full:].sort()
    return ordered


def _window_rows(row_perm, N) -> np.ndarray:
    n_windows = -(-N // WINDOW_ROWS)
    slots = np.full(n_windows * WINDOW_ROWS, N, dtype=np.int32)
    slots[:N] = np.arange(N) if row_perm is None else row_perm
    return slots.reshape(n_windows, WINDOW_ROWS)


# ------------------------------------------------------------------------ tiling
def _encode_tiles(entries: list, shape, row_perm, col_perm, policy, split: SplitRule) -> dict:
    """All tile arrays (sorted per the contract) for ``entries = [rows, cols, vals32]`` (emptied on the way)."""
    N, M = shape
    n_windows = -(-N // WINDOW_ROWS)
    window, col_pos, slot, cols, vals32 = _sorted_entries(entries, N, M, row_perm, col_perm)

    if policy.layout == "block":
        bitmap = _block_tiles(window, col_pos, col_perm, M)
        in_bitmap = np.ones(window.shape, dtype=bool)
        in_list = None
    else:
        bitmap, in_bitmap, in_list = _condensed_tiles(window, col_pos, cols, n_windows, M, split)
    tile_of_entry, k_of_entry, tile_window, tile_first, tile_cols, tile_ncols = bitmap
    out = _finish_bitmap_tiles(
        n_windows,
        tile_window,
        tile_first,
        tile_cols,
        tile_ncols,
        tile_of_entry,
        k_of_entry,
        slot[in_bitmap],
        _take(vals32, in_bitmap),
        policy,
    )
    del bitmap, tile_of_entry, k_of_entry
    rest = ~in_bitmap
    del in_bitmap
    if in_list is not None:
        out.update(_list_tiles(n_windows, window[in_list], col_pos[in_list], cols[in_list], slot[in_list],
                               _take(vals32, in_list), M, policy))
        rest &= ~in_list
    del in_list
    entry_tile_entries = _entry_tile_entries(rest, window, col_pos, cols, slot, vals32, n_windows, M)
    # the sorted entries are all in tiles now, or in the entry tiles' own copies: free them before those tiles
    del rest, window, col_pos, cols, slot, vals32
    out.update(_entry_tiles(n_windows, *entry_tile_entries, M, policy))
    return out


def _entry_tile_entries(selected, window, col_pos, cols, slot, vals32, n_windows, M):
    """``(window, col_pos, cols, slot, vals32)`` of the ``selected`` sorted entries in entry-tile order: as
    sorted, and past one band of X rows (M > ``COLUMN_BAND_ROWS``) each window's entries ordered by their
    column's band (stable, so by column position and slot inside a band; see :func:`_entry_tiles`). The selection
    is ordered before the arrays are gathered, so each is copied once."""
    if M > COLUMN_BAND_ROWS and window.size:
        n_bands = -(-M // COLUMN_BAND_ROWS)
        index = _index_dtype(window.size, n_windows * n_bands)
        selected = np.flatnonzero(selected).astype(index)
        band_key = window[selected].astype(index)
        band_key *= n_bands
        band_key += (cols[selected] // COLUMN_BAND_ROWS).astype(index)
        selected = selected[_stable_counting_order(band_key, n_windows * n_bands, index)]
        del band_key
    return window[selected], col_pos[selected], cols[selected], slot[selected], _take(vals32, selected)


class _PermutedColumns:
    """Original column ids of sorted entries, ``col_perm[col_pos[i]]``, made only for the
    entries asked for (a bitmap tile needs one per column, not one per entry)."""

    def __init__(self, col_perm, col_pos):
        self.col_perm, self.col_pos = col_perm, col_pos

    def __getitem__(self, index):
        return self.col_perm[self.col_pos[index]]


def _take(values, selection):
    """``values[selection]``; a broadcast (uniform) array stays a broadcast of the selected length."""
    if values.strides == (0,) and values.size:
        return np.broadcast_to(values[0], (int(np.count_nonzero(selection)) if selection.dtype == bool else len(selection),))
    return values[selection]


def _index_dtype(*sizes):
    """int32 for positions below 2^31 (half the bytes of int64), else int64."""
    return np.int32 if max(sizes, default=0) < 2**31 else np.int64


def _entries_by_window_column(rows, cols, vals32, N, M, row_perm, col_perm):
    """:func:`_sorted_entries` of the three arrays (the caller keeps its references)."""
    return _sorted_entries([rows, cols, vals32], N, M, row_perm, col_perm)


def _sorted_entries(entries: list, N, M, row_perm, col_perm):
    """``(window, col_pos, slot, cols, vals32)`` of every entry of ``entries = [rows, cols, vals32]``,
    sorted by (window, column position, slot); ``entries`` is emptied once the sort no longer needs
    the input arrays.

    window and col_pos are int32 (int64 beyond 2^31), slot uint8. The order comes from three stable
    counting sorts (:func:`_window_column_slot_order`), linear in the entries, where a comparison sort
    of one packed key took twice to three times as long at ogbn-arxiv's size. When every value is the
    same (a structure-only matrix) no permutation is carried: ``cols`` is made lazily from ``col_pos``
    and ``vals32`` stays a broadcast.
    """
    rows, cols, vals32 = entries
    index = _index_dtype(N, M)
    sparse_index = _index_dtype(N, M, vals32.size + 1)
    row_pos = _positions(rows, row_perm, sparse_index)
    col_pos = _positions(cols, col_perm, sparse_index)
    n = vals32.size
    uniform = n == 0 or bool((vals32 == vals32[0]).all())
    if uniform:
        entries.clear()  # the positions are all the sort needs: the input arrays can go first
        rows = cols = None
        window, col_pos, slot, _ = _window_column_slot_order(row_pos, col_pos, N, M, carried=None)
        window, col_pos = window.astype(index, copy=False), col_pos.astype(index, copy=False)
        sorted_cols = col_pos if col_perm is None else _PermutedColumns(col_perm.astype(index), col_pos)
        sorted_vals = np.broadcast_to(vals32[0] if n else np.float32(0), (n,))
        return window, col_pos, slot, sorted_cols, sorted_vals
    window, col_pos, slot, order = _window_column_slot_order(
        row_pos, col_pos, N, M, carried=np.arange(n, dtype=sparse_index))
    sorted_cols = np.asarray(cols).astype(index)[order]
    sorted_vals = vals32[order]
    entries.clear()
    return window.astype(index, copy=False), col_pos.astype(index, copy=False), slot, sorted_cols, sorted_vals


def _positions(ids, perm, dtype) -> np.ndarray:
    """Encoded position of each id (``inverse(perm)[ids]``, or the ids without a permutation) as ``dtype``."""
    if perm is None:
        return np.asarray(ids).astype(dtype)
    return inverse_permutation(perm).astype(dtype)[ids]


def _window_column_slot_order(row_pos, col_pos, N, M, carried):
    """``(window, col_pos, slot, carried)`` of entries at ``(row_pos, col_pos)`` (one index dtype),
    sorted by (window, column position, slot); ``carried`` (an array per entry, or None) follows the sort.

    Three stable counting sorts, each one of SciPy's sparse-format conversions (linear in the
    entries, no comparisons): COO -> CSR by row position, CSR -> CSC (which leaves each column's rows
    ascending), then the CSC entries COO -> CSR by window, which keeps them in (column, row) order
    inside each window. The conversions' C routines are called directly because the public
    constructors sum duplicate (row, column) pairs, and the third sort has them by design: every
    slot of a window column shares the pair (window, column).
    """
    index = row_pos.dtype
    n = row_pos.size
    n_windows = -(-N // WINDOW_ROWS)
    slot_bits = WINDOW_ROWS.bit_length() - 1
    payload = np.zeros(n, dtype=np.uint8) if carried is None else carried
    by_row_indptr = np.empty(N + 1, dtype=index)
    by_row_col = np.empty(n, dtype=index)
    by_row_payload = np.empty_like(payload)
    _sparsetools.coo_tocsr(N, M, n, row_pos, col_pos, payload, by_row_indptr, by_row_col, by_row_payload)
    del row_pos, col_pos, payload
    by_col_indptr = np.empty(M + 1, dtype=index)
    by_col_row = np.empty(n, dtype=index)
    by_col_payload = np.empty_like(by_row_payload)
    _sparsetools.csr_tocsc(N, M, by_row_indptr, by_row_col, by_row_payload, by_col_indptr, by_col_row, by_col_payload)
    del by_row_indptr, by_row_col, by_row_payload
    col_of_entry = np.repeat(np.arange(M, dtype=index), np.diff(by_col_indptr))
    slot = (by_col_row & (WINDOW_ROWS - 1)).astype(np.uint8)
    if carried is None:
        payload = slot
    else:  # the slot rides in the payload's low bits
        payload = (by_col_payload.astype(np.int64) << slot_bits) | slot
    del by_col_payload, slot
    window_of_entry = by_col_row
    window_of_entry >>= slot_bits
    window_indptr = np.empty(n_windows + 1, dtype=index)
    sorted_col = np.empty(n, dtype=index)
    sorted_payload = np.empty_like(payload)
    _sparsetools.coo_tocsr(n_windows, M, n, window_of_entry, col_of_entry, payload, window_indptr, sorted_col,
                           sorted_payload)
    del window_of_entry, col_of_entry, payload
    window = np.repeat(np.arange(n_windows, dtype=index), np.diff(window_indptr))
    if carried is None:
        return window, sorted_col, sorted_payload, None
    slot = (sorted_payload & (WINDOW_ROWS - 1)).astype(np.uint8)
    sorted_payload >>= slot_bits
    return window, sorted_col, slot, sorted_payload


def _condensed_tiles(window, col_pos, cols, n_windows, M, split: SplitRule):
    """Bitmap tiles of the window columns chosen by ``split``; ``in_bitmap`` flags their entries.

    Entries arrive sorted by (window, column position, slot), so each window column is one
    run ("group"). Within a tile, columns stay in column-position order.
    """
    n = window.size
    index = _index_dtype(n)
    new_col = np.ones(n, dtype=bool)
    np.not_equal(col_pos[1:], col_pos[:-1], out=new_col[1:])
    new_col[1:] |= window[1:] != window[:-1]
    # per-group arrays in the narrowest type that holds them: on a graph of little locality nearly
    # every entry is a group of its own, so each byte here is about a byte per stored entry
    group_start = np.flatnonzero(new_col).astype(index)
    group_count = np.diff(group_start, append=index(n)).astype(np.uint8)  # <= WINDOW_ROWS: one entry per slot
    group_of_entry = np.cumsum(new_col, dtype=index)
    group_of_entry -= 1
    del new_col
    group_window = window[group_start]
    eligible = group_count >= split.min_entries
    if split.rule == "cost":
        bitmap_groups, rank = _cost_split(group_window, group_count, eligible, n_windows, split)
    else:
        bitmap_groups = np.flatnonzero(eligible)
        rank = None
    b_window = group_window[bitmap_groups]
    per_window = np.bincount(b_window, minlength=n_windows)
    window_first = np.cumsum(per_window) - per_window
    if rank is None:  # column order
        rank = np.arange(bitmap_groups.size) - window_first[b_window]
    tiles_per_window = -(-per_window // TILE_COLS)
    tile_start = np.cumsum(tiles_per_window) - tiles_per_window
    g_tile = tile_start[b_window] + rank // TILE_COLS
    # bitmap_groups is in (window, column) order, so a stable sort by tile keeps columns ascending
    by_tile = np.argsort(g_tile, kind="stable")
    bitmap_groups, g_tile = bitmap_groups[by_tile], g_tile[by_tile]
    T = int(tiles_per_window.sum())
    tile_ncols = np.bincount(g_tile, minlength=T)
    g_k = np.arange(g_tile.size) - (np.cumsum(tile_ncols) - tile_ncols)[g_tile]
    tile_window = np.repeat(np.arange(n_windows), tiles_per_window)
    tile_cols = np.full((T, TILE_COLS), M, dtype=np.int64)
    tile_cols[g_tile, g_k] = cols[group_start[bitmap_groups]]
    tile_first = np.zeros(T, dtype=np.int64)
    head = g_k == 0
    tile_first[g_tile[head]] = col_pos[group_start[bitmap_groups[head]]]
    is_bitmap_group = np.zeros(group_start.size, dtype=bool)
    is_bitmap_group[bitmap_groups] = True
    list_group = (~is_bitmap_group & (group_count >= 2)) if split.list_tiles else None
    group_tile = np.full(group_start.size, -1, dtype=_index_dtype(T))
    group_k = np.full(group_start.size, -1, dtype=np.int16)
    group_tile[bitmap_groups] = g_tile
    group_k[bitmap_groups] = g_k
    # the per-group work arrays go before the per-entry ones are made (the peak of the encode)
    del bitmap_groups, by_tile, g_tile, g_k, b_window, rank, group_count, group_window, eligible, group_start, head
    in_bitmap = is_bitmap_group[group_of_entry]
    del is_bitmap_group
    in_list = None if list_group is None else list_group[group_of_entry]
    entry_group = group_of_entry[in_bitmap]
    del group_of_entry
    return (group_tile[entry_group], group_k[entry_group], tile_window, tile_first, tile_cols, tile_ncols), in_bitmap, in_list


COST_SPLIT_BLOCK_GROUPS = 1 << 16
"""Groups (window columns) the cost split works on at a time, in whole windows: its per-candidate temporaries
(about 80 B per group) then stay a few tens of MB whatever the graph's size."""


def _cost_split(group_window, group_count, eligible, n_windows, split: SplitRule):
    """:func:`_cost_split_block` over consecutive blocks of whole windows of about ``COST_SPLIT_BLOCK_GROUPS``
    groups each (the split is decided per window, so blocks are independent); same result as one call."""
    groups_per_window = np.bincount(group_window, minlength=n_windows)
    first_group = np.zeros(n_windows + 1, dtype=np.int64)
    np.cumsum(groups_per_window, out=first_group[1:])
    chosen, ranks = [], []
    start = 0
    while start < n_windows:
        # the last window whose groups still fit the block (at least one window per block)
        stop = max(int(np.searchsorted(first_group, first_group[start] + COST_SPLIT_BLOCK_GROUPS, side="right")) - 1,
                   start + 1)
        g0, g1 = int(first_group[start]), int(first_group[stop])
        block_groups, block_rank = _cost_split_block(group_window[g0:g1] - group_window.dtype.type(start),
                                                     group_count[g0:g1], eligible[g0:g1], stop - start, split)
        chosen.append(block_groups + g0)
        ranks.append(block_rank)
        start = stop
    if not chosen:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(chosen), np.concatenate(ranks)


def _cost_split_block(group_window, group_count, eligible, n_windows, split: SplitRule):
    """Per window, the k densest eligible columns that minimise the modelled call cost.

    Returns the chosen groups (in their input order, i.e. by window then column) and each
    one's density rank in its window (0 = densest; ties by column), which cuts the tiles.
    With n entries in the window, the k densest columns holding C(k) of them:
    ``cost(k) = ceil(k/128) * bitmap_tile_cost + ceil((n - C(k))/128) * entry_tile_cost
    + x_row_bytes * (k + n - C(k))``, minimised over k = 0 .. eligible columns (ties: smaller k).

    Groups arrive by window, and a group holds at most ``WINDOW_ROWS`` entries (one per slot), so
    densest-first is one counting sort of (window, count) and every per-window figure reaches
    the window's candidates by ``np.repeat`` over their contiguous runs.
    """
    n_groups = group_window.size
    groups_per_window = np.bincount(group_window, minlength=n_windows)
    entries_before_group = np.zeros(n_groups + 1, dtype=np.int64)
    np.cumsum(group_count, out=entries_before_group[1:])
    window_entries = np.diff(entries_before_group[np.r_[0, np.cumsum(groups_per_window)]])
    # per-group arrays in int32 where they fit (a group count, a window id, a rank): this is the
    # encode's peak of memory; costs and running sums stay int64
    index = _index_dtype(n_groups, n_windows * (WINDOW_ROWS + 1), int(window_entries.max(initial=0)))
    cand = np.flatnonzero(eligible).astype(index)
    c_window = group_window[cand].astype(index)
    densest_first = _stable_counting_order(c_window * (WINDOW_ROWS + 1) + (WINDOW_ROWS - group_count[cand].astype(index)),
                                           n_windows * (WINDOW_ROWS + 1), index)
    cand = cand[densest_first]
    del densest_first, c_window
    c_count = group_count[cand].astype(index)
    per_window = np.bincount(group_window[cand], minlength=n_windows)
    window_first = np.cumsum(per_window) - per_window
    rank = np.arange(cand.size, dtype=index)
    rank -= np.repeat(window_first.astype(index), per_window)
    absorbed = _cumsum_within_windows(c_count, window_first, per_window)  # C(k) for k = rank + 1
    bitmap_cost, entry_cost, x_row = split.bitmap_tile_cost, split.entry_tile_cost, split.x_row_bytes
    k_plus_one = rank.astype(np.int64) + 1
    if split.list_tiles:
        cost, zero_cost = _cost_with_list_tiles(group_window, group_count, n_windows, per_window, c_count,
                                                window_first, k_plus_one, split)
    else:
        rest = np.repeat(window_entries, per_window) - absorbed
        cost = -(-k_plus_one // TILE_COLS) * bitmap_cost + -(-rest // TILE_COLS) * entry_cost + x_row * (k_plus_one + rest)
        zero_cost = -(-window_entries // TILE_COLS) * entry_cost + x_row * window_entries  # k = 0
        del rest
    del absorbed, k_plus_one, c_count
    best = zero_cost.copy()
    has = per_window > 0
    if cand.size:
        best[has] = np.minimum(best[has], np.minimum.reduceat(cost, window_first[has]))
    # the first candidate (smallest k) of each window reaching its best cost fixes the window's k
    reaches_best = cost == np.repeat(best, per_window)
    del cost
    hit_rank = np.where(reaches_best, rank, np.iinfo(index).max)
    n_bitmap = np.zeros(n_windows, dtype=np.int64)
    if cand.size:
        n_bitmap[has] = np.minimum.reduceat(hit_rank, window_first[has]).astype(np.int64) + 1
    n_bitmap[best == zero_cost] = 0
    chosen = rank < np.repeat(n_bitmap, per_window)
    # chosen group ids are distinct: a mask over all groups puts them back in input order
    chosen_mask = np.zeros(n_groups, dtype=bool)
    chosen_mask[cand[chosen]] = True
    rank_of_group = np.zeros(n_groups, dtype=index)
    rank_of_group[cand[chosen]] = rank[chosen]
    chosen_groups = np.flatnonzero(chosen_mask)
    return chosen_groups, rank_of_group[chosen_groups]


def _cumsum_within_windows(values, window_first, per_window) -> np.ndarray:
    """Running sum (int64) of ``values`` restarted at each window: the candidates of window w are the
    ``per_window[w]`` consecutive ones from ``window_first[w]``."""
    running = np.cumsum(values, dtype=np.int64)
    running -= np.repeat(np.r_[np.int64(0), running][window_first], per_window)
    return running


def _stable_counting_order(keys, n_keys, index):
    """The permutation (``index`` dtype) that sorts ``keys`` (integers in ``[0, n_keys)``) stably:
    one counting sort, SciPy's COO -> CSR conversion with the keys as rows (see
    :func:`_window_column_slot_order` for why its C routine is called directly)."""
    n = keys.size
    indptr = np.empty(n_keys + 1, dtype=index)
    order = np.empty(n, dtype=index)
    unused = np.empty(n, dtype=np.uint8)
    _sparsetools.coo_tocsr(n_keys, max(n, 1), n, keys.astype(index, copy=False), np.arange(n, dtype=index),
                           np.zeros(n, dtype=np.uint8), indptr, order, unused)
    return order


def _cost_with_list_tiles(group_window, group_count, n_windows, per_window, c_count, window_first, k_plus_one,
                          split: SplitRule):
    """Per candidate, the window's cost when it and the denser candidates are its bitmap columns, and
    per window the cost with none, when the other columns of 2+ entries go to list tiles and the
    single-entry ones to entry tiles:

    ``cost(k) = ceil(k/128) * bitmap_tile + n(k) * list_tile + ceil(n(k)/2) * gather_transfer
    + ceil(S(k)/128) * entry_tile + x_row_bytes * (k + list columns(k) + S(k))``, n(k) = ceil(L(k)/LIST_TILE_PACK)

    with L(k) the entries of the non-bitmap columns of 2+ entries and S(k) the single-entry
    columns left. A list tile's gathered rows are its distinct columns; the one extra row of a
    column cut between two list tiles is left out of the cost.
    """
    multi = group_count >= 2
    multi_entries = np.bincount(group_window, weights=np.where(multi, group_count, 0), minlength=n_windows).astype(np.int64)
    multi_cols = np.bincount(group_window, weights=multi, minlength=n_windows).astype(np.int64)
    single_cols = np.bincount(group_window, weights=~multi, minlength=n_windows).astype(np.int64)
    c_multi = c_count >= 2
    absorbed_multi = _cumsum_within_windows(np.where(c_multi, c_count, 0), window_first, per_window)
    taken_multi = _cumsum_within_windows(c_multi, window_first, per_window)
    list_entries = np.repeat(multi_entries, per_window) - absorbed_multi
    list_cols = np.repeat(multi_cols, per_window) - taken_multi
    singles = np.repeat(single_cols, per_window) - (k_plus_one - taken_multi)
    cost = (-(-k_plus_one // TILE_COLS) * split.bitmap_tile_cost + split.list_tiles_cost(-(-list_entries // LIST_TILE_PACK))
            + -(-singles // TILE_COLS) * split.entry_tile_cost + split.x_row_bytes * (k_plus_one + list_cols + singles))
    zero_cost = (split.list_tiles_cost(-(-multi_entries // LIST_TILE_PACK)) + -(-single_cols // TILE_COLS) * split.entry_tile_cost
                 + split.x_row_bytes * (multi_cols + single_cols))
    return cost, zero_cost


def _block_tiles(window, col_pos, col_perm, M):
    n_blocks = max(-(-M // TILE_COLS), 1)
    block = col_pos // TILE_COLS
    tile_key = window.astype(np.int64) * n_blocks + block  # non-decreasing: entries are sorted by (window, col_pos)
    new_tile = np.ones(window.size, dtype=bool)
    new_tile[1:] = tile_key[1:] != tile_key[:-1]
    starts = np.flatnonzero(new_tile)
    tile_of_entry = np.cumsum(new_tile) - 1
    tile_window = window[starts]
    tile_block = block[starts]
    positions = tile_block[:, None] * TILE_COLS + np.arange(TILE_COLS)[None, :]
    valid = positions < M
    col_ids = np.minimum(positions, max(M - 1, 0))
    if col_perm is not None:
        col_ids = col_perm[col_ids]
    tile_cols = np.where(valid, col_ids, M)
    tile_ncols = valid.sum(axis=1)
    return tile_of_entry, col_pos % TILE_COLS, tile_window, tile_block * TILE_COLS, tile_cols, tile_ncols


def decide_kinds(vals32, tile_of_entry, n_tiles, policy: EncodePolicy):
    """Kind (uint8 [n]) and sensitivity S (float64 [n]) of each tile from its stored values.

    S (:func:`dste.format.hybrid_rows.int8_sensitivity_robust`) is computed for ``kinds="auto"``
    only, the one rule that reads it; it is 0 for the other kinds.
    """
    if n_tiles == 0:
        return np.zeros(0, np.uint8), np.zeros(0)
    if policy.kinds in ("faithful", "auto", "bin") and _all_one(vals32):
        # every rule below gives BIN then; skipping them saves their per-entry temporaries
        return np.full(n_tiles, TileKind.BIN, dtype=np.uint8), np.zeros(n_tiles)
    if policy.kinds == "auto":
        sensitivity = int8_sensitivity_robust(vals32, tile_of_entry, n_tiles)
    else:
        sensitivity = np.zeros(n_tiles)
    not_one = np.bincount(tile_of_entry, weights=np.abs(vals32 - 1.0) > BIN_ULP_TOLERANCE, minlength=n_tiles)
    amax = np.zeros(n_tiles, dtype=np.float32)
    np.maximum.at(amax, tile_of_entry, np.abs(vals32))
    fp16_overflow = amax > FP16_MAX
    if policy.kinds == "bin":
        kind = np.full(n_tiles, TileKind.BIN)
    elif policy.kinds == "int8":
        kind = np.full(n_tiles, TileKind.INT8)
    elif policy.kinds == "fp16":
        if fp16_overflow.any():
            raise DSTEFormatError(
                f"kinds='fp16' but a tile holds |value| {amax.max():.6g} > {FP16_MAX} (float16 max); use 'auto' or 'int8'"
            )
        kind = np.full(n_tiles, TileKind.FP16)
    elif policy.kinds == "faithful":
        kind = _faithful_kinds(vals32, tile_of_entry, n_tiles, not_one == 0, amax)
    else:
        fp16_worse = amax < FP16_UNDERFLOW_AMAX  # float16's subnormal rounding beats INT8's nowhere in such a tile
        kind = np.where(
            not_one == 0,
            TileKind.BIN,
            np.where((sensitivity >= policy.fp16_threshold) & ~fp16_overflow & ~fp16_worse, TileKind.FP16,
                     TileKind.INT8),
        )
    return kind.astype(np.uint8), sensitivity


def _all_one(vals32) -> bool:
    """Every value counts as 1 (within ``BIN_ULP_TOLERANCE``)."""
    return bool((np.abs(vals32 - np.float32(1.0)) <= BIN_ULP_TOLERANCE).all())


def _faithful_kinds(vals32, tile_of_entry, n_tiles, all_one, amax):
    """BIN / FP16 / INT8 per tile, the first that stores every value within FAITHFUL_RELATIVE_ERROR."""
    bound = np.float32(FAITHFUL_RELATIVE_ERROR) * np.abs(vals32)
    fp16_bad = np.abs(to_fp16(vals32).astype(np.float32) - vals32) > bound
    scale = np.where(amax > 0, amax / np.float32(INT8_QMAX), np.float32(1.0)).astype(np.float32)
    per_value = scale[tile_of_entry]
    int8_bad = np.abs(dequantize_int8(quantize_int8(vals32, per_value), per_value) - vals32) > bound
    fp16_ok = np.bincount(tile_of_entry, weights=fp16_bad, minlength=n_tiles) == 0
    int8_ok = np.bincount(tile_of_entry, weights=int8_bad, minlength=n_tiles) == 0
    lost = ~(all_one | fp16_ok | int8_ok)
    if lost.any():
        worst = np.flatnonzero(lost[tile_of_entry] & fp16_bad)[0]
        raise DSTEFormatError(
            f"encode(kinds='faithful'): stored value {float(vals32[worst]):.6g} cannot be kept within relative error "
            f"{FAITHFUL_RELATIVE_ERROR:.3g} by any tile kind (FP16 holds 2^-14 <= |v| <= 65504; INT8 only values near "
            "its tile's largest). Opt in to a lossy kind: kinds='fp16' (every tile FP16: values below 2^-14 keep an "
            "absolute error of at most 2^-25) or kinds='auto' (INT8 or FP16 per tile by sensitivity); or bring the "
            "values into FP16's range with row_scale / col_scale (the tiles store A[i, j] / (row_scale[i] * "
            "col_scale[j]): this helps where each row's or column's values share a magnitude; gcn_normalized does it "
            "for adjacencies)"
        )
    return np.where(all_one, TileKind.BIN, np.where(fp16_ok, TileKind.FP16, TileKind.INT8))


def _slots(kind):
    slot = np.full(kind.shape, -1, dtype=np.int32)
    for k in (TileKind.INT8, TileKind.FP16):
        sel = kind == k
        slot[sel] = np.arange(int(sel.sum()), dtype=np.int32)
    return slot


def _quantize_by_slot(vals32, slot_of_entry, n_slots):
    amax = np.zeros(n_slots, dtype=np.float32)
    np.maximum.at(amax, slot_of_entry, np.abs(vals32))
    scale = amax / np.float32(INT8_QMAX)
    scale = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)
    return quantize_int8(vals32, scale[slot_of_entry]), scale


def _values_by_kind(kind, tile_slot, tile_of_entry, position, vals32, value_shape):
    """The INT8 (quantized per tile) and FP16 value arrays of the tiles: ``(int8_values, int8_scale,
    fp16_values)``, each entry at its tile's value slot and its ``position`` (index arrays) in the tile."""
    entry_kind = kind[tile_of_entry]
    entry_slot = tile_slot[tile_of_entry]
    n8 = int((kind == TileKind.INT8).sum())
    n16 = int((kind == TileKind.FP16).sum())
    int8_values = np.zeros((n8, *value_shape), dtype=np.int8)
    fp16_values = np.zeros((n16, *value_shape), dtype=np.float16)
    sel8 = entry_kind == TileKind.INT8
    q, int8_scale = _quantize_by_slot(vals32[sel8], entry_slot[sel8], n8)
    int8_values[(entry_slot[sel8], *(p[sel8] for p in position))] = q
    sel16 = entry_kind == TileKind.FP16
    fp16_values[(entry_slot[sel16], *(p[sel16] for p in position))] = to_fp16(vals32[sel16])
    return int8_values, int8_scale, fp16_values


def _window_ptr(tile_window, n_windows):
    """CSR-style pointer: the tiles of window w are ``[ptr[w], ptr[w + 1])`` (tiles sorted by window)."""
    window_ptr = np.zeros(n_windows + 1, dtype=np.int64)
    window_ptr[1:] = np.cumsum(np.bincount(tile_window, minlength=n_windows))
    return window_ptr


def _sort_tiles(tile_window, kind, tile_first):
    order = np.lexsort((tile_first, kind, tile_window))
    # int32 ids keep the per-entry arrays indexed by them (mask word offsets included) small
    new_id = np.empty(order.size, dtype=_index_dtype(order.size * TILE_COLS * MASK_WORDS))
    new_id[order] = np.arange(order.size)
    return order, new_id


def _finish_bitmap_tiles(n_windows, tile_window, tile_first, tile_cols, tile_ncols, tile_of_entry, k, slot, vals32, policy):
    T = tile_window.size
    kind, _ = decide_kinds(vals32, tile_of_entry, T, policy)
    order, new_id = _sort_tiles(tile_window, kind, tile_first)
    tile_window, kind, tile_cols, tile_ncols = (a[order] for a in (tile_window, kind, tile_cols, tile_ncols))
    tile_of_entry = new_id[tile_of_entry]
    tile_slot = _slots(kind)
    nz = np.zeros(T * TILE_COLS * MASK_WORDS, dtype=np.uint32)
    flat = tile_of_entry * TILE_COLS  # one array updated in place: the offsets are per entry
    flat += k
    flat *= MASK_WORDS
    flat += slot // MASK_WORD_BITS
    np.bitwise_or.at(nz, flat, np.left_shift(np.uint32(1), (slot % MASK_WORD_BITS).astype(np.uint32)))
    del flat
    nz = nz.reshape(T, TILE_COLS, MASK_WORDS)
    int8_values, int8_scale, fp16_values = _values_by_kind(kind, tile_slot, tile_of_entry, (k, slot), vals32,
                                                           (TILE_COLS, WINDOW_ROWS))
    return dict(
        window_ptr=_window_ptr(tile_window, n_windows),
        tile_window=tile_window.astype(np.int32),
        tile_kind=kind,
        tile_ncols=tile_ncols.astype(np.int32),
        tile_cols=np.ascontiguousarray(tile_cols, dtype=np.int32),
        keep_bits=nz.copy(),
        nz_bits=nz,
        tile_slot=tile_slot,
        int8_values=int8_values,
        int8_scale=int8_scale,
        fp16_values=fp16_values,
    )


def _runs_per_window(n_windows, window, size):
    """Cut each window's entries (sorted by window) into consecutive runs of ``size``, one tile each: returns
    ``(tile_of_entry, position of the entry in its tile, tiles per window)``."""
    per_window = np.bincount(window, minlength=n_windows)
    tiles_per_window = -(-per_window // size)
    index = _index_dtype(window.size)
    # windows are contiguous runs, so a per-window figure reaches its entries by np.repeat; int32 and in place,
    # since on a graph of little locality nearly every entry lands here
    index_in_window = np.arange(window.size, dtype=index)
    index_in_window -= np.repeat((np.cumsum(per_window) - per_window).astype(index), per_window)
    tile_of_entry = np.repeat((np.cumsum(tiles_per_window) - tiles_per_window).astype(index), per_window)
    tile_of_entry += index_in_window // size
    position = (index_in_window % size).astype(np.uint8 if size <= 256 else index)
    return tile_of_entry, position, tiles_per_window


def _entry_tiles(n_windows, window, col_pos, cols, slot, vals32, M, policy) -> dict:
    """Entry tiles of the given entries (in :func:`_entry_tile_entries`' order): each window's entries in runs of
    128. Past one band of X rows (M > ``COLUMN_BAND_ROWS``) a window's entries come ordered by their column's band,
    so every tile's ids are in ascending band order and its bands take ``bands - 1`` bytes
    (``dste.format.matrix.band_starts``) instead of a plane of 2-3 bits per slot (300,000 columns: 4 B per tile
    against 48 B)."""
    tile_of_entry, e, tiles_per_window = _runs_per_window(n_windows, window, TILE_COLS)
    tile_of_entry, tile_window, kind, nentries, _ = _sorted_runs(n_windows, tile_of_entry, e, tiles_per_window,
                                                                 col_pos, vals32, policy)
    E = tile_window.size
    tile_slot = _slots(kind)
    etile_cols = np.full((E, TILE_COLS), M, dtype=np.int32)
    etile_cols[tile_of_entry, e] = cols
    etile_rows = np.zeros((E, TILE_COLS), dtype=np.uint8)
    etile_rows[tile_of_entry, e] = slot
    nz = entry_used_words(nentries)
    int8_values, int8_scale, fp16_values = _values_by_kind(kind, tile_slot, tile_of_entry, (e,), vals32, (TILE_COLS,))
    return dict(
        ewindow_ptr=_window_ptr(tile_window, n_windows),
        etile_window=tile_window.astype(np.int32),
        etile_kind=kind,
        etile_nentries=nentries.astype(np.int32),
        etile_cols=etile_cols,
        etile_rows=etile_rows,
        etile_keep_bits=nz.copy(),
        etile_nz_bits=nz,
        etile_slot=tile_slot,
        etile_int8_values=int8_values,
        etile_int8_scale=int8_scale,
        etile_fp16_values=fp16_values,
    )


def _list_tiles(n_windows, window, col_pos, cols, slot, vals32, M, policy) -> dict:
    """List tiles of the given entries (sorted by window, column position, slot): each window's
    entries in runs of ``LIST_TILE_PACK``, a tile's distinct columns listed in column order."""
    tile_of_entry, e, tiles_per_window = _runs_per_window(n_windows, window, LIST_TILE_PACK)
    new_column = np.ones(window.size, dtype=bool)
    new_column[1:] = (col_pos[1:] != col_pos[:-1]) | (e[1:] == 0)
    column_number = np.cumsum(new_column) - 1
    colslot = column_number - column_number[np.flatnonzero(e == 0)][tile_of_entry]
    ncols = np.bincount(tile_of_entry, weights=new_column, minlength=int(tiles_per_window.sum())).astype(np.int64)
    tile_of_entry, tile_window, kind, nentries, (ncols,) = _sorted_runs(n_windows, tile_of_entry, e,
                                                                        tiles_per_window, col_pos, vals32, policy,
                                                                        ncols)
    L = tile_window.size
    tile_slot = _slots(kind)
    ltile_cols = np.full((L, LIST_TILE_COLS), M, dtype=np.int32)
    heads = np.flatnonzero(new_column)
    ltile_cols[tile_of_entry[heads], colslot[heads]] = cols[heads]
    ltile_colslot = np.zeros((L, TILE_COLS), dtype=np.uint8)
    ltile_colslot[tile_of_entry, e] = colslot
    ltile_rows = np.zeros((L, TILE_COLS), dtype=np.uint8)
    ltile_rows[tile_of_entry, e] = slot
    nz = entry_used_words(nentries)
    int8_values, int8_scale, fp16_values = _values_by_kind(kind, tile_slot, tile_of_entry, (e,), vals32, (TILE_COLS,))
    return dict(
        lwindow_ptr=_window_ptr(tile_window, n_windows),
        ltile_window=tile_window.astype(np.int32),
        ltile_kind=kind,
        ltile_nentries=nentries.astype(np.int32),
        ltile_ncols=ncols.astype(np.int32),
        ltile_cols=ltile_cols,
        ltile_colslot=ltile_colslot,
        ltile_rows=ltile_rows,
        ltile_keep_bits=nz.copy(),
        ltile_nz_bits=nz,
        ltile_slot=tile_slot,
        ltile_int8_values=int8_values,
        ltile_int8_scale=int8_scale,
        ltile_fp16_values=fp16_values,
    )


def _sorted_runs(n_windows, tile_of_entry, e, tiles_per_window, col_pos, vals32, policy, *per_tile):
    """The runs of :func:`_runs_per_window` as the tiles of a per-entry layout (entry or list tiles), each with its
    kind, sorted by window, kind and first column, as both layouts are stored: ``(tile_of_entry`` (the sorted tile
    of each entry), ``tile_window, kind, nentries, per_tile`` (the caller's per-tile arrays in that order))."""
    T = int(tiles_per_window.sum())
    tile_window = np.repeat(np.arange(n_windows), tiles_per_window)
    nentries = np.bincount(tile_of_entry, minlength=T)
    tile_first = np.zeros(T, dtype=np.int64)
    tile_first[tile_of_entry[e == 0]] = col_pos[e == 0]
    kind, _ = decide_kinds(vals32, tile_of_entry, T, policy)
    order, new_id = _sort_tiles(tile_window, kind, tile_first)
    return new_id[tile_of_entry], tile_window[order], kind[order], nentries[order], [a[order] for a in per_tile]


# ------------------------------------------------------------- tile selection
def take_tiles(sources, picks, epicks, like: DSTEMatrix, lpicks=None, **overrides) -> DSTEMatrix:
    """A matrix made of chosen tiles of ``sources`` (window-disjoint across sources).

    ``picks[i]`` / ``epicks[i]`` / ``lpicks[i]`` index the bitmap / entry / list tiles of
    ``sources[i]``, each in contract order (``lpicks=None``: no list tiles); tiles are merged by
    window (stable) and value slots renumbered. Non-tile fields come from ``like`` unless given in
    ``overrides``.
    """
    mixed = [i for i, source in enumerate(sources) if source.unit_diagonal != like.unit_diagonal]
    if mixed:
        raise DSTEFormatError(
            f"take_tiles: source {mixed[0]} has unit_diagonal={sources[mixed[0]].unit_diagonal}, the result "
            f"{like.unit_diagonal}: a tile set with the diagonal left implicit cannot merge with one that stores it")
    bitmap = _merge_tiles(sources, picks, "tile", TILE_COLS * WINDOW_ROWS)
    entry = _merge_tiles(sources, epicks, "etile", TILE_COLS)
    if lpicks is None:
        lpicks = [np.zeros(0, np.int64) for _ in sources]
    listed = _merge_tiles(sources, lpicks, "ltile", TILE_COLS)
    n_windows = like.n_windows
    fields = dict(
        shape=like.shape,
        window_rows=like.window_rows,
        row_scale=like.row_scale,
        col_scale=like.col_scale,
        row_perm=like.row_perm,
        col_perm=like.col_perm,
        layout=like.layout,
        encode_policy=like.encode_policy,
        unit_diagonal=like.unit_diagonal,
        window_ptr=_window_ptr(bitmap["tile_window"], n_windows),
        ewindow_ptr=_window_ptr(entry["etile_window"], n_windows),
        lwindow_ptr=_window_ptr(listed["ltile_window"], n_windows),
        **bitmap,
        **entry,
        **listed,
    )
    fields.update(overrides)
    return DSTEMatrix(**fields)


def _merge_tiles(sources, picks, prefix, value_size):
    names = {
        "tile": ("tile_window", "tile_kind", "tile_ncols", "tile_cols", "keep_bits", "nz_bits"),
        "etile": ("etile_window", "etile_kind", "etile_nentries", "etile_cols", "etile_rows", "etile_keep_bits", "etile_nz_bits"),
        "ltile": ("ltile_window", "ltile_kind", "ltile_nentries", "ltile_ncols", "ltile_cols", "ltile_colslot", "ltile_rows",
                  "ltile_keep_bits", "ltile_nz_bits"),
    }[prefix]
    value_names = {
        "tile": ("int8_values", "int8_scale", "fp16_values"),
        "etile": ("etile_int8_values", "etile_int8_scale", "etile_fp16_values"),
        "ltile": ("ltile_int8_values", "ltile_int8_scale", "ltile_fp16_values"),
    }[prefix]
    picks = [np.asarray(p, dtype=np.int64) for p in picks]
    cat = {n: np.concatenate([getattr(s, n)[p] for s, p in zip(sources, picks)]) for n in names}
    source_id = np.concatenate([np.full(p.size, i) for i, p in enumerate(picks)])
    source_slot = np.concatenate([getattr(s, f"{prefix}_slot")[p] for s, p in zip(sources, picks)])
    order = np.argsort(cat[f"{prefix}_window"], kind="stable")
    out = {n: np.ascontiguousarray(a[order]) for n, a in cat.items()}
    source_id, source_slot = source_id[order], source_slot[order]
    kind = out[f"{prefix}_kind"]
    new_slot = _slots(kind)
    out[f"{prefix}_slot"] = new_slot
    int8_name, scale_name, fp16_name = value_names
    for tile_kind, value_name, extra in ((TileKind.INT8, int8_name, scale_name), (TileKind.FP16, fp16_name, None)):
        sel = kind == tile_kind
        template = getattr(sources[0], value_name)
        values = np.zeros((int(sel.sum()),) + template.shape[1:], dtype=template.dtype)
        scale = np.zeros(int(sel.sum()), dtype=np.float32)
        for i, src in enumerate(sources):
            mine = sel & (source_id == i)
            values[new_slot[mine]] = getattr(src, value_name)[source_slot[mine]]
            if extra:
                scale[new_slot[mine]] = getattr(src, extra)[source_slot[mine]]
        out[value_name] = values
        if extra:
            out[extra] = scale
    return out


# ------------------------------------------------------------------ incremental
def _same_scale(a, b) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))


def update_windows(old: DSTEMatrix, new_matrix, changed_rows, row_scale=None, col_scale=None) -> DSTEMatrix:
    """Re-encode only the windows holding ``changed_rows`` of ``new_matrix``; keep every other tile.

    ``new_matrix`` is given in the same convention as the original ``encode`` input
    (scaled or not, per ``old.encode_policy['scaled_input']``), same shape, and is read
    only at the rows of the affected windows. ``row_scale`` / ``col_scale`` replace the
    scale vectors (default: keep). The result equals a full re-encode of ``new_matrix``
    with the same permutations and policy provided the stored (factored) values of the
    untouched windows did not change; the GCN case (BIN tiles, new degree scales) always
    satisfies this. Masks of the untouched windows are kept; re-encoded windows start
    fully kept. A ``changed_rows`` that leaves out a row whose window holds a different
    number of entries in ``new_matrix`` is refused (``DSTEFormatError``); one that leaves out
    a row whose values changed, or an entry moved within its window at the same count, cannot
    be told from a correct one (the window keeps its old tiles): list every row whose entries
    or values changed.
    """
    if old.encode_policy is None:
        raise DSTEFormatError("update_windows needs the matrix's encode_policy (set by encode)")
    policy = EncodePolicy.from_metadata(old.encode_policy)
    N, M = old.shape
    rows, cols, vals, shape = to_coo(new_matrix)
    if shape != old.shape:
        raise DSTEFormatError(f"new matrix shape {shape} != encoded shape {old.shape}")
    changed_rows = np.asarray(changed_rows)
    if changed_rows.size and (changed_rows.dtype.kind not in "iu" or changed_rows.min() < 0 or changed_rows.max() >= N):
        raise DSTEFormatError(f"changed_rows must be integer row ids in [0, {N})")
    given_rows, given_cols = _check_scales(row_scale, col_scale, N, M)
    policy.row_scale = old.row_scale if row_scale is None else given_rows
    policy.col_scale = old.col_scale if col_scale is None else given_cols
    changed_scales = not (_same_scale(policy.row_scale, old.row_scale) and _same_scale(policy.col_scale, old.col_scale))
    if policy.scaled_input and changed_scales:
        raise DSTEFormatError(
            "update_windows: new scales on a matrix encoded from scaled input (values divided by their scales) would "
            "leave the untouched windows' stored values divided by the old ones; re-encode it with dste.encode. (A "
            "matrix encoded with scaled_input=False takes new scales incrementally, as gcn_update does.)"
        )
    row_pos = np.arange(N) if old.row_perm is None else inverse_permutation(old.row_perm)
    redo = np.zeros(old.n_windows, dtype=bool)
    redo[row_pos[changed_rows.astype(np.int64)] // WINDOW_ROWS] = True
    entry_window = row_pos[rows] // WINDOW_ROWS
    _check_changed_rows_cover_counts(old, redo, entry_window)
    if changed_scales:
        _check_kept_windows_in_range(old, redo, row_pos, policy.row_scale, policy.col_scale)
    sel = redo[entry_window]
    return reencode_windows(old, rows[sel], cols[sel], vals[sel], redo, policy)


def _window_entry_counts(matrix: DSTEMatrix) -> np.ndarray:
    """int64 [n_windows]: the entries each row window stores (nz bits of its tiles in every layout, plus its rows'
    unit-diagonal entries)."""
    counts = np.zeros(matrix.n_windows, dtype=np.int64)
    for window, nz_bits in ((matrix.tile_window, matrix.nz_bits), (matrix.etile_window, matrix.etile_nz_bits),
                            (matrix.ltile_window, matrix.ltile_nz_bits)):
        if window.size:
            np.add.at(counts, window.astype(np.int64), popcount(nz_bits).reshape(window.size, -1).sum(axis=1))
    if matrix.unit_diagonal:
        counts += (matrix.window_rows < matrix.shape[0]).sum(axis=1)
    return counts


def window_count_mismatches(old: DSTEMatrix, redo: np.ndarray, entry_window: np.ndarray) -> np.ndarray:
    """The row windows an update would keep (``~redo``) whose entry count in ``old`` differs from the new
    matrix's (``entry_window``: each new entry's window, int); int64, ascending."""
    new_counts = np.bincount(entry_window, minlength=old.n_windows)
    return np.flatnonzero(~redo & (new_counts != _window_entry_counts(old)))


def _check_changed_rows_cover_counts(old: DSTEMatrix, redo, entry_window) -> None:
    """Refuse a ``changed_rows`` that leaves out a window whose entry count differs between ``old`` and the new
    matrix (``entry_window``: each new entry's window): the window would keep its old tiles. A change that keeps
    every window's count (an entry moved within its row window) cannot be told this way."""
    missed = window_count_mismatches(old, redo, entry_window)
    if missed.size:
        new_counts = np.bincount(entry_window, minlength=old.n_windows)
        old_counts = _window_entry_counts(old)
        first = int(missed[0])
        rows = old.window_rows[first]
        rows = rows[rows < old.shape[0]]
        raise DSTEFormatError(
            f"update_windows: changed_rows leaves out rows whose entries changed: {missed.size} row window(s) it "
            f"would keep hold a different number of entries in new_matrix (first: window {first}, "
            f"{int(new_counts[first])} entries against {int(old_counts[first])} encoded, rows "
            f"{rows[:8].tolist()}{' ...' if rows.size > 8 else ''}); list every row whose entries changed (a "
            "superset is fine)"
        )


def stored_magnitude_bounds(matrix: DSTEMatrix) -> tuple[float, float]:
    """Bounds ``(smallest nonzero, largest)`` on the magnitudes of the stored (unscaled) values, from the tiles'
    value arrays alone: 1 for BIN tiles, ``[scale, 127 scale]`` for INT8 tiles, the FP16 values themselves."""
    low, high = np.inf, 0.0
    kinds = np.concatenate([matrix.tile_kind, matrix.etile_kind, matrix.ltile_kind])
    if (kinds == TileKind.BIN).any():
        low, high = 1.0, 1.0
    for prefix in ("", "etile_", "ltile_"):
        scales = getattr(matrix, f"{prefix}int8_scale")
        if scales.size:
            low, high = min(low, float(scales.min())), max(high, INT8_QMAX * float(scales.max()))
        values = np.abs(getattr(matrix, f"{prefix}fp16_values"))
        if values.size:
            high = max(high, float(values.max()))
            low = min(low, float(values.min(where=values > 0, initial=np.inf)))
    return low, high


def _check_kept_windows_in_range(old: DSTEMatrix, redo, row_pos, row_scale, col_scale) -> None:
    """New scales meet the stored values of the windows ``update_windows`` keeps: refuse a product outside float32's
    normal range there, as ``encode`` refuses it (the re-encoded windows are checked by their encode). On bounds
    from the tiles' value arrays first (a GCN update, BIN tiles and degree scales, always passes them); per
    entry of the kept windows only when the bounds do not settle it."""
    if row_scale is None and col_scale is None:
        return
    low, high = stored_magnitude_bounds(old)
    if high == 0 or _scaled_bounds_within_float32(low, high, *_scale_magnitudes(row_scale, col_scale)):
        return
    rows, cols, stored = old._coordinates(use_keep=False)
    kept = ~redo[row_pos[rows] // WINDOW_ROWS]
    _check_scaled_range(rows[kept], cols[kept], stored[kept], row_scale, col_scale,
                        what="update_windows: the stored value of a window it keeps")


def reencode_windows(old: DSTEMatrix, rows, cols, vals, redo, policy: EncodePolicy) -> DSTEMatrix:
    """``old`` with the windows flagged in ``redo`` (bool [n_windows]) encoded afresh from the given entries.

    ``rows, cols, vals`` are canonical COO entries (any order) of exactly the rows of the
    flagged windows; ``policy`` carries the (new) scales. Tiles of the other windows are
    kept as they are, masks included.
    """
    diagonal_rows = None
    if policy.unit_diagonal:
        diagonal_rows = old.window_rows[redo].ravel()
        diagonal_rows = diagonal_rows[diagonal_rows < old.shape[0]]
    part = encode_coo_owned([rows, cols, vals], old.shape, policy, row_perm=old.row_perm, col_perm=old.col_perm,
                            diagonal_rows=diagonal_rows)
    keep_old = np.flatnonzero(~redo[old.tile_window])
    ekeep_old = np.flatnonzero(~redo[old.etile_window])
    lkeep_old = np.flatnonzero(~redo[old.ltile_window])
    return take_tiles(
        [old, part],
        [keep_old, np.arange(part.n_tiles)],
        [ekeep_old, np.arange(part.n_etiles)],
        like=old,
        lpicks=[lkeep_old, np.arange(part.n_ltiles)],
        row_scale=policy.row_scale,
        col_scale=policy.col_scale,
    )
