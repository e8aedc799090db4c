"""The INT8 tiles of an encoding checked against the input matrix with the independent reference's scale.

The encoder's own scales cannot bound its own error: a scale of max|v| / 63, or one taken over a whole window
instead of the tile, still keeps every value within half of *its* step. Here each INT8 tile's scale is recomputed from
the input values of the entries the tile stores (``dste.reference.int8_scale``: max|v| / 127 in float32) and must
equal the stored one bit for bit; each stored entry's decoded value must lie within half that step of the input
(plus float32 rounding of v / s: 2^-24 relative of |v| <= 127 steps). The tile structure (which entries a tile
holds) is read from the public arrays with the reference's bit unpacking; nothing of the encoder's quantization runs.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from dste.reference import int8_scale
from dste.reference.bits import unpack_mask
from dste.reference.layout import KIND_INT8, MASK_WORDS, TILE_COLS

HALF_STEP = 0.5 + 127 * 2.0**-23


def _tiles(E):
    """``(layout, tile, rows, cols)`` of every INT8 tile's stored entries (nz bits), in original coordinates."""
    T = E.tile_kind.shape[0]
    if T:
        stored = unpack_mask(np.asarray(E.nz_bits).reshape(T, TILE_COLS, MASK_WORDS))  # [t, k, r]
        for t in np.flatnonzero(E.tile_kind == KIND_INT8):
            k, r = np.nonzero(stored[t][: E.tile_ncols[t]])
            yield "bitmap", t, E.window_rows[E.tile_window[t], r], E.tile_cols[t, k]
    for prefix in ("etile", "ltile"):
        kinds = getattr(E, f"{prefix}_kind")
        if not kinds.shape[0]:
            continue
        stored = unpack_mask(np.asarray(getattr(E, f"{prefix}_nz_bits")))  # [t, e]
        for t in np.flatnonzero(kinds == KIND_INT8):
            e = np.flatnonzero(stored[t][: getattr(E, f"{prefix}_nentries")[t]])
            rows = E.window_rows[getattr(E, f"{prefix}_window")[t], getattr(E, f"{prefix}_rows")[t, e]]
            if prefix == "etile":
                cols = E.etile_cols[t, e]
            else:
                cols = E.ltile_cols[t, E.ltile_colslot[t, e].astype(np.int64)]
            yield prefix, t, rows, cols


def check_int8_tiles_against_input(E, A) -> int:
    """Assert every INT8 tile's scale and stored values against the input ``A`` (module docstring); returns the
    number of INT8 tiles checked. ``E`` must be an unscaled encoding of ``A`` (no row/column scales)."""
    assert E.row_scale is None and E.col_scale is None, "check an unscaled encoding"
    dense = np.asarray(sp.csr_matrix(A).toarray() if sp.issparse(A) else A, dtype=np.float64)
    decoded = E.decode().toarray()
    checked = 0
    for layout, t, rows, cols in _tiles(E):
        rows, cols = rows.astype(np.int64), cols.astype(np.int64)
        prefix = "" if layout == "bitmap" else f"{layout}_"
        slot = (E.tile_slot if layout == "bitmap" else getattr(E, f"{layout}_slot"))[t]
        stored = np.float32(getattr(E, f"{prefix}int8_scale")[slot])
        expected = int8_scale(dense[rows, cols].astype(np.float32))
        assert stored.view(np.uint32) == np.float32(expected).view(np.uint32), (layout, t, stored, expected)
        error = np.abs(decoded[rows, cols] - dense[rows, cols])
        assert (error <= float(expected) * HALF_STEP).all(), (layout, t, error.max(), float(expected))
        checked += 1
    return checked


FP16_HALF_ULP = 2.0**-11
"""float16 rounds to nearest: half an ulp of its 11-bit significand, relative, for normal values."""
FP16_SUBNORMAL_HALF_SPACING = 2.0**-25
"""Below float16's smallest normal (2^-14) the spacing is 2^-24: half of it, absolute."""


def assert_fp16_roundtrip(E, A) -> None:
    """Every entry of ``A`` decodes from the FP16 encoding ``E`` within half a float16 ulp of its own value (the
    structure exactly): a bound relative to max|A| would not see a small entry dropped or mis-rounded."""
    A = sp.csr_matrix(A, dtype=np.float64)
    D = sp.csr_matrix(E.decode(), dtype=np.float64)
    assert (D != 0).nnz == A.nnz and abs((D != 0).astype(np.int8) - (A != 0).astype(np.int8)).nnz == 0
    error = np.asarray(abs(D - A)[A.nonzero()]).ravel()
    magnitude = np.abs(np.asarray(A[A.nonzero()]).ravel())
    limit = np.maximum(FP16_HALF_ULP * magnitude, FP16_SUBNORMAL_HALF_SPACING)
    assert (error <= limit).all(), f"entry off by {error.max():.3g}, more than half a float16 ulp of its value"
