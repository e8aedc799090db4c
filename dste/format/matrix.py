"""The encoded sparse operand: :class:`DSTEMatrix` (fields as in docs/CONTRACTS.md).

A represents ``A`` of shape [N, M] as 128-row windows. Each window's entries live in
bitmap tiles (up to 128 column ids + a 128x128 keep bitmap), entry tiles (up to 128
(column, window slot) pairs + one keep bit each) and list tiles (up to 128 (index into the
tile's list of up to 64 distinct column ids, window slot) pairs + one keep bit each). Values are BIN (1), INT8 (per-tile
scale) or FP16 per tile, then ``A = diag(row_scale) A diag(col_scale)``.

The object is immutable (its arrays are read-only views): ``with_mask``, ``compact`` and ``update_windows``
return new matrices sharing the unchanged arrays.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from dste.format.constants import (
    COLUMN_BAND_ROWS,
    COLUMN_ID_BYTES,
    ENTRY_MASK_WORDS,
    LAYOUTS,
    LIST_TILE_COLS,
    MASK_WORD_BITS,
    MASK_WORDS,
    SCALE_DTYPES,
    TILE_COLS,
    WINDOW_ROWS,
    TileKind,
)
from dste.checks import flag
from dste.format.errors import DSTEFormatError
from dste.format.permutation import is_permutation
from dste.format.bits import pack_mask, popcount, set_bits

TILE_ARRAY_FIELDS = ("tile_window", "tile_kind", "tile_ncols", "tile_cols", "keep_bits", "nz_bits", "tile_slot")
ETILE_ARRAY_FIELDS = (
    "etile_window",
    "etile_kind",
    "etile_nentries",
    "etile_cols",
    "etile_rows",
    "etile_keep_bits",
    "etile_nz_bits",
    "etile_slot",
)
LTILE_ARRAY_FIELDS = (
    "ltile_window",
    "ltile_kind",
    "ltile_nentries",
    "ltile_ncols",
    "ltile_cols",
    "ltile_colslot",
    "ltile_rows",
    "ltile_keep_bits",
    "ltile_nz_bits",
    "ltile_slot",
)
LIST_ARRAY_FIELDS = ("lwindow_ptr", *LTILE_ARRAY_FIELDS, "ltile_int8_values", "ltile_int8_scale", "ltile_fp16_values")
"""The list-tile arrays (format version 2); a matrix built without them gets empty ones."""
ARRAY_FIELDS = (
    "window_rows",
    "window_ptr",
    *TILE_ARRAY_FIELDS,
    "int8_values",
    "int8_scale",
    "fp16_values",
    "ewindow_ptr",
    *ETILE_ARRAY_FIELDS,
    "etile_int8_values",
    "etile_int8_scale",
    "etile_fp16_values",
    *LIST_ARRAY_FIELDS,
)
OPTIONAL_ARRAY_FIELDS = ("row_scale", "col_scale", "row_perm", "col_perm")
SCALE_FIELDS = ("row_scale", "col_scale")
"""The scale vectors: float32, or float16 (``SCALE_DTYPES``); consumers upcast the stored values."""

# Device-resident vs host-only arrays, and the nbytes category of each.
BYTE_CATEGORY = {
    "int8_values": "values",
    "fp16_values": "values",
    "etile_int8_values": "values",
    "etile_fp16_values": "values",
    "int8_scale": "scales",
    "etile_int8_scale": "scales",
    "row_scale": "scales",
    "col_scale": "scales",
    "keep_bits": "masks",
    "etile_keep_bits": "masks",
    "etile_rows": "row_ids",
    "window_rows": "row_ids",
    "window_ptr": "metadata",
    "ewindow_ptr": "metadata",
    "tile_window": "metadata",
    "tile_kind": "metadata",
    "tile_ncols": "metadata",
    "tile_slot": "metadata",
    "etile_window": "metadata",
    "etile_kind": "metadata",
    "etile_nentries": "metadata",
    "etile_slot": "metadata",
    "ltile_int8_values": "values",
    "ltile_fp16_values": "values",
    "ltile_int8_scale": "scales",
    "ltile_keep_bits": "masks",
    "ltile_rows": "row_ids",
    "lwindow_ptr": "metadata",
    "ltile_window": "metadata",
    "ltile_kind": "metadata",
    "ltile_nentries": "metadata",
    "ltile_ncols": "metadata",
    "ltile_slot": "metadata",
}
HOST_ONLY_FIELDS = ("nz_bits", "etile_nz_bits", "ltile_nz_bits", "row_perm", "col_perm")
TILE_LAYOUT_METADATA = (
    # (window pointer, tile window, per-tile counts, value slot, kinds) of the bitmap, entry and list tiles
    ("window_ptr", "tile_window", ("tile_ncols",), "tile_slot", "tile_kind"),
    ("ewindow_ptr", "etile_window", ("etile_nentries",), "etile_slot", "etile_kind"),
    ("lwindow_ptr", "ltile_window", ("ltile_nentries", "ltile_ncols"), "ltile_slot", "ltile_kind"),
)
"""Per-layout metadata whose device form is smaller than its host arrays (:func:`device_metadata_bytes`)."""
COLUMN_ID_FIELDS = ("tile_cols", "etile_cols", "ltile_cols")
"""Host column ids (int32, original ids); the device keeps them in the form of :func:`device_column_id_bytes`."""


def column_band_bits(M: int) -> int:
    """Bits of the band number the device keeps beside each 16-bit column offset: 0 while every id of
    X's M rows fits one band of ``COLUMN_BAND_ROWS``, else enough bits to name ``ceil(M / COLUMN_BAND_ROWS)``
    bands."""
    bands = column_bands(M)
    return 0 if bands <= 1 else int(bands - 1).bit_length()


def column_bands(M: int) -> int:
    """Bands of ``COLUMN_BAND_ROWS`` rows that X's M rows span (1 up to 65,536 rows)."""
    return max(1, -(-int(M) // COLUMN_BAND_ROWS))


def device_column_id_bytes(n_slots: int, M: int) -> int:
    """Device bytes of ``n_slots`` column-id slots (tile columns or entries, padding included, as the
    fixed-size tiles hold them): a ``uint16`` offset inside the id's band of ``COLUMN_BAND_ROWS`` X rows per
    slot, plus a plane of ``column_band_bits(M)`` bits per slot naming the band (none when M <= 65,536)."""
    return int(n_slots) * COLUMN_ID_BYTES + -(-int(n_slots) * column_band_bits(M) // 8)


def band_starts(cols: np.ndarray, used: np.ndarray, M: int) -> np.ndarray | None:
    """The band-start form of one layout's column ids, or None where it does not apply.

    ``cols`` int32 ``[tiles, slots]`` (original ids), ``used`` the used slots of each tile (the first ``used[t]``;
    the rest are padding). When X spans several bands and every tile's used ids are in ascending band order (the
    encoder stores entry tiles so past 65,536 columns), each tile's bands are fixed by where each band starts:
    ``starts[t, b - 1]`` = the first used slot whose band is at least ``b`` (``used[t]`` if none), ``uint8 [tiles,
    bands - 1]``, and :func:`bands_from_starts` gives the band of every slot back. None for a single band, for a
    tile out of band order, or when the starts would take more bytes than the band plane (more than
    ``slots * column_band_bits(M) / 8`` bands per tile: past about 100 bands for 128-slot tiles)."""
    bands = column_bands(M)
    tiles, slots = cols.shape
    if bands <= 1 or bands - 1 > slots * column_band_bits(M) // 8:
        return None
    used_slot = np.arange(slots) < np.asarray(used)[:, None]
    band = cols // COLUMN_BAND_ROWS
    if ((np.diff(band, axis=1) < 0) & used_slot[:, 1:]).any():
        return None
    starts = np.empty((tiles, bands - 1), dtype=np.uint8)
    for b in range(1, bands):
        starts[:, b - 1] = np.count_nonzero((band < b) & used_slot, axis=1)
    return starts


def bands_from_starts(starts: np.ndarray, slots: int) -> np.ndarray:
    """Band of every slot ``uint8 [tiles, slots]`` from :func:`band_starts`'s form (the number of bands that start
    at or before the slot); padding slots get the last band, as the ids' ``used`` count says which slots hold one."""
    return np.count_nonzero(np.arange(slots)[None, :, None] >= starts[:, None, :], axis=2).astype(np.uint8)


def layout_column_id_bytes(cols: np.ndarray, used: np.ndarray, M: int) -> int:
    """Device bytes of one layout's column ids: ``uint16`` offsets for every slot and the bands in the smaller form
    that applies, :func:`band_starts` (``bands - 1`` bytes per tile) or the band plane of
    :func:`device_column_id_bytes`."""
    starts = band_starts(cols, used, M)
    plane = device_column_id_bytes(cols.size, M)
    if starts is None:
        return plane
    return min(plane, int(cols.size) * COLUMN_ID_BYTES + int(starts.size))


EXPECTED_DTYPES = {
    "window_rows": np.int32,
    "window_ptr": np.int64,
    "tile_window": np.int32,
    "tile_kind": np.uint8,
    "tile_ncols": np.int32,
    "tile_cols": np.int32,
    "keep_bits": np.uint32,
    "nz_bits": np.uint32,
    "tile_slot": np.int32,
    "int8_values": np.int8,
    "int8_scale": np.float32,
    "fp16_values": np.float16,
    "ewindow_ptr": np.int64,
    "etile_window": np.int32,
    "etile_kind": np.uint8,
    "etile_nentries": np.int32,
    "etile_cols": np.int32,
    "etile_rows": np.uint8,
    "etile_keep_bits": np.uint32,
    "etile_nz_bits": np.uint32,
    "etile_slot": np.int32,
    "etile_int8_values": np.int8,
    "etile_int8_scale": np.float32,
    "etile_fp16_values": np.float16,
    "lwindow_ptr": np.int64,
    "ltile_window": np.int32,
    "ltile_kind": np.uint8,
    "ltile_nentries": np.int32,
    "ltile_ncols": np.int32,
    "ltile_cols": np.int32,
    "ltile_colslot": np.uint8,
    "ltile_rows": np.uint8,
    "ltile_keep_bits": np.uint32,
    "ltile_nz_bits": np.uint32,
    "ltile_slot": np.int32,
    "ltile_int8_values": np.int8,
    "ltile_int8_scale": np.float32,
    "ltile_fp16_values": np.float16,
    "row_scale": np.float32,  # or float16: SCALE_DTYPES
    "col_scale": np.float32,
    "row_perm": np.int64,
    "col_perm": np.int64,
}


def _fail(message: str):
    raise DSTEFormatError(message)


def decode_dtype(dtype, where: str) -> np.dtype:
    """``dtype`` as a NumPy dtype of float32 or float64, the dtypes a decoded (or dequantized) operand comes in;
    :class:`DSTEFormatError` naming ``where`` for anything else, names NumPy does not know included."""
    try:
        resolved = np.dtype(dtype)
    except (TypeError, ValueError):
        resolved = None
    if resolved not in (np.float32, np.float64):
        given = repr(dtype) if resolved is None else resolved
        raise DSTEFormatError(f"{where} dtype must be float32 or float64, got {given}")
    return resolved


@dataclass(eq=False)
class DSTEMatrix:
    """A DSTE-encoded sparse matrix; see docs/CONTRACTS.md for every field.

    ``encode_policy`` (extension to the contract) records the policy used, with
    ``bitmap_min_entries`` and ``value_bytes`` resolved, so ``update_windows`` re-encodes consistently.

    ``unit_diagonal`` (format version 3): every diagonal entry (i, i) of the square matrix holds the unscaled
    value 1 (BIN, so ``row_scale[i] * col_scale[i]`` once scaled) and is always kept, but no tile stores it, as a
    BLAS ``diag='U'`` triangular matrix leaves its diagonal out. The kernel adds it per window from the window's
    own output rows (``dste.kernels.spmm_hybrid``): no column id, row slot or keep bit per diagonal entry. It is
    counted in ``nnz_stored`` / ``nnz_kept`` and decoded like any entry. ``gcn_normalized`` sets it only on
    request (``EncodePolicy.unit_diagonal``) or where the byte ceiling needs it.
    """

    shape: tuple
    window_rows: np.ndarray
    window_ptr: np.ndarray
    tile_window: np.ndarray
    tile_kind: np.ndarray
    tile_ncols: np.ndarray
    tile_cols: np.ndarray
    keep_bits: np.ndarray
    nz_bits: np.ndarray
    tile_slot: np.ndarray
    int8_values: np.ndarray
    int8_scale: np.ndarray
    fp16_values: np.ndarray
    ewindow_ptr: np.ndarray
    etile_window: np.ndarray
    etile_kind: np.ndarray
    etile_nentries: np.ndarray
    etile_cols: np.ndarray
    etile_rows: np.ndarray
    etile_keep_bits: np.ndarray
    etile_nz_bits: np.ndarray
    etile_slot: np.ndarray
    etile_int8_values: np.ndarray
    etile_int8_scale: np.ndarray
    etile_fp16_values: np.ndarray
    lwindow_ptr: np.ndarray | None = None
    ltile_window: np.ndarray | None = None
    ltile_kind: np.ndarray | None = None
    ltile_nentries: np.ndarray | None = None
    ltile_ncols: np.ndarray | None = None
    ltile_cols: np.ndarray | None = None
    ltile_colslot: np.ndarray | None = None
    ltile_rows: np.ndarray | None = None
    ltile_keep_bits: np.ndarray | None = None
    ltile_nz_bits: np.ndarray | None = None
    ltile_slot: np.ndarray | None = None
    ltile_int8_values: np.ndarray | None = None
    ltile_int8_scale: np.ndarray | None = None
    ltile_fp16_values: np.ndarray | None = None
    row_scale: np.ndarray | None = None
    col_scale: np.ndarray | None = None
    row_perm: np.ndarray | None = None
    col_perm: np.ndarray | None = None
    layout: str = "condensed"
    encode_policy: dict | None = None
    unit_diagonal: bool = False
    _effective_csr: sp.csr_matrix | None = field(default=None, init=False, repr=False)
    _derived: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        self.shape = tuple(int(s) for s in self.shape)
        given = [name for name in LIST_ARRAY_FIELDS if getattr(self, name) is not None]
        if not given:  # a matrix without list tiles (built by code or read from a version-1 file)
            for name, value in _empty_list_tiles(self.window_rows.shape[0] if isinstance(self.window_rows, np.ndarray) else 0).items():
                setattr(self, name, value)
        elif len(given) != len(LIST_ARRAY_FIELDS):
            _fail(f"the list-tile fields come all together or not at all; given {given}, missing "
                  f"{[name for name in LIST_ARRAY_FIELDS if name not in given]}")
        self.validate(deep=False)
        # Immutable in fact, not only by convention: cached products (``derived``: the torch operands, decodes) are
        # keyed on the object, so an array edited in place would be answered from a stale cache. Read-only views
        # leave the caller's own arrays writeable; one array in two fields (GCN's row_scale is its col_scale) stays
        # one object, which is how the byte count knows it is stored once.
        views = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, np.ndarray) and value.flags.writeable:
                if id(value) not in views:
                    views[id(value)] = value.view()
                    views[id(value)].flags.writeable = False
                setattr(self, field.name, views[id(value)])
        object.__setattr__(self, "_sealed", True)

    def __setattr__(self, name, value):
        # Reassigning a field would leave the cached products (``derived``, the decoded CSR) answering for the
        # old one, as editing an array in place would.
        if name in _CONTRACT_FIELDS and self.__dict__.get("_sealed", False):
            raise AttributeError(
                f"DSTEMatrix.{name} cannot be reassigned: a matrix is immutable once built (its cached products "
                "would answer for the old value). Make a new one: with_mask(...) for another keep-mask, "
                "update_windows(...) for changed rows, matrix.replace(field=...) for the rest")
        object.__setattr__(self, name, value)

    # ------------------------------------------------------------------ sizes
    @property
    def n_windows(self) -> int:
        return int(self.window_rows.shape[0])

    @property
    def n_tiles(self) -> int:
        return int(self.tile_window.shape[0])

    @property
    def n_etiles(self) -> int:
        return int(self.etile_window.shape[0])

    @property
    def n_ltiles(self) -> int:
        return int(self.ltile_window.shape[0])

    @property
    def n_diagonal(self) -> int:
        """Entries of the unit diagonal: N when ``unit_diagonal``, else 0 (a stored diagonal is in the tiles)."""
        return self.shape[0] if self.unit_diagonal else 0

    @property
    def nnz_stored(self) -> int:
        """Stored entries (nz bits) over the three tile layouts, plus the unit diagonal's."""
        return int(popcount(self.nz_bits).sum() + popcount(self.etile_nz_bits).sum() + popcount(self.ltile_nz_bits).sum()
                   ) + self.n_diagonal

    @property
    def nnz_kept(self) -> int:
        """Entries kept by the current mask (the unit diagonal's are always kept)."""
        return int(
            popcount(self.keep_bits).sum() + popcount(self.etile_keep_bits).sum() + popcount(self.ltile_keep_bits).sum()
        ) + self.n_diagonal

    def __repr__(self) -> str:
        return (
            f"DSTEMatrix(shape={self.shape}, layout={self.layout!r}, windows={self.n_windows}, "
            f"tiles={self.n_tiles}, entry_tiles={self.n_etiles}, list_tiles={self.n_ltiles}, nnz_kept={self.nnz_kept}"
            + (", unit_diagonal=True)" if self.unit_diagonal else ")")
        )

    # ------------------------------------------------------------- validation
    def validate(self, deep: bool = True) -> "DSTEMatrix":
        """Check every field's dtype, shape and range; ``deep`` adds the O(nnz) structure checks.

        Raises :class:`DSTEFormatError` naming the field, what was found and what is allowed.
        """
        N, M = self.shape if len(self.shape) == 2 else _fail(f"shape must be (N, M), got {self.shape}")
        if N < 0 or M < 0:
            _fail(f"shape must be non-negative, got {self.shape}")
        if self.layout not in LAYOUTS:
            _fail(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if not isinstance(self.unit_diagonal, (bool, np.bool_)):
            _fail(f"unit_diagonal must be a bool, got {type(self.unit_diagonal).__name__}")
        if self.unit_diagonal and N != M:
            _fail(f"unit_diagonal needs a square matrix, got shape {self.shape}")
        for name in ARRAY_FIELDS + OPTIONAL_ARRAY_FIELDS:
            value = getattr(self, name)
            if value is None and name in OPTIONAL_ARRAY_FIELDS:
                continue
            if not isinstance(value, np.ndarray):
                _fail(f"{name} must be a numpy array, got {type(value).__name__}")
            if name in SCALE_FIELDS:
                if value.dtype.name not in SCALE_DTYPES:
                    _fail(f"{name} must have dtype float32 or float16 (docs/CONTRACTS.md), got {value.dtype}")
            elif value.dtype != EXPECTED_DTYPES[name]:
                _fail(f"{name} must have dtype {np.dtype(EXPECTED_DTYPES[name])}, got {value.dtype}")
            if not value.flags.c_contiguous:
                _fail(f"{name} must be C-contiguous")

        n_windows = -(-N // WINDOW_ROWS)
        T, E = self.tile_window.shape[0] if self.tile_window.ndim == 1 else -1, (
            self.etile_window.shape[0] if self.etile_window.ndim == 1 else -1
        )
        expect_shapes = {
            "window_rows": (n_windows, WINDOW_ROWS),
            "window_ptr": (n_windows + 1,),
            "tile_window": (T,),
            "tile_kind": (T,),
            "tile_ncols": (T,),
            "tile_cols": (T, TILE_COLS),
            "keep_bits": (T, TILE_COLS, MASK_WORDS),
            "nz_bits": (T, TILE_COLS, MASK_WORDS),
            "tile_slot": (T,),
            "ewindow_ptr": (n_windows + 1,),
            "etile_window": (E,),
            "etile_kind": (E,),
            "etile_nentries": (E,),
            "etile_cols": (E, TILE_COLS),
            "etile_rows": (E, TILE_COLS),
            "etile_keep_bits": (E, ENTRY_MASK_WORDS),
            "etile_nz_bits": (E, ENTRY_MASK_WORDS),
            "etile_slot": (E,),
        }
        if T < 0 or E < 0:
            _fail("tile_window and etile_window must be 1-D")
        for name, shape in expect_shapes.items():
            if getattr(self, name).shape != shape:
                _fail(f"{name} must have shape {shape}, got {getattr(self, name).shape}")
        n8, n16 = self.int8_values.shape[0], self.fp16_values.shape[0]
        en8, en16 = self.etile_int8_values.shape[0], self.etile_fp16_values.shape[0]
        for name, shape in {
            "int8_values": (n8, TILE_COLS, WINDOW_ROWS),
            "int8_scale": (n8,),
            "fp16_values": (n16, TILE_COLS, WINDOW_ROWS),
            "etile_int8_values": (en8, TILE_COLS),
            "etile_int8_scale": (en8,),
            "etile_fp16_values": (en16, TILE_COLS),
        }.items():
            if getattr(self, name).shape != shape:
                _fail(f"{name} must have shape {shape}, got {getattr(self, name).shape}")
        for name, length in (("row_scale", N), ("col_scale", M), ("row_perm", N), ("col_perm", M)):
            value = getattr(self, name)
            if value is None:
                continue
            if value.shape != (length,):
                _fail(f"{name} must have shape ({length},), got {value.shape}")
            if name.endswith("scale"):
                if not np.isfinite(value).all():
                    _fail(f"{name} must be finite")
            elif not is_permutation(value, length):
                _fail(f"{name} must be a permutation of 0..{length - 1}")

        # windows
        wr = self.window_rows
        if wr.size and (wr.min() < 0 or wr.max() > N):
            _fail(f"window_rows must lie in [0, N={N}] (N marks an empty slot)")
        real = wr[wr < N]
        if not is_permutation(real, N):
            _fail("window_rows must hold every original row id exactly once (other slots = N)")
        if self.row_perm is not None and not np.array_equal(real, self.row_perm):
            # updates pick the windows to re-encode through row_perm: one that does not describe the tiles would
            # re-encode the wrong windows
            _fail("window_rows must hold the rows in row_perm's order (other slots = N)")
        self._check_ptr("window_ptr", self.window_ptr, self.tile_window, n_windows, T)
        self._check_ptr("ewindow_ptr", self.ewindow_ptr, self.etile_window, n_windows, E)

        # bitmap tiles
        kinds = self.tile_kind
        if T:
            if kinds.max() > TileKind.FP16:
                _fail("tile_kind values must be 0 (BIN), 1 (INT8) or 2 (FP16)")
            order_key = self.tile_window.astype(np.int64) * 4 + kinds
            if (np.diff(order_key) < 0).any():
                _fail("tiles must be sorted by window, then kind (BIN, INT8, FP16)")
            if self.tile_ncols.min() < 1 or self.tile_ncols.max() > TILE_COLS:
                _fail(f"tile_ncols must lie in 1..{TILE_COLS}")
            used = np.arange(TILE_COLS)[None, :] < self.tile_ncols[:, None]
            cols = self.tile_cols
            if (cols[used] < 0).any() or (cols[used] >= M).any():
                _fail(f"tile_cols in used slots must lie in [0, M={M})")
            if (cols[~used] != M).any():
                _fail(f"tile_cols past tile_ncols must hold M={M}")
            sorted_cols = np.sort(cols, axis=1)
            if ((np.diff(sorted_cols, axis=1) == 0) & (sorted_cols[:, 1:] < M)).any():
                _fail("a tile lists the same column twice")
            if (self.keep_bits & ~self.nz_bits).any():
                _fail("keep_bits must be a subset of nz_bits")
            if (self.nz_bits[~used] != 0).any():
                _fail("nz_bits set in a column slot past tile_ncols")
            pad_words = pack_mask(wr == N)  # [n_windows, 4]: slots that hold no row
            if (self.nz_bits & pad_words[self.tile_window][:, None, :]).any():
                _fail("nz_bits set for a window slot that holds no row (window_rows == N)")
        self._check_slots_and_values("tile", kinds, n8, n16)

        # entry tiles
        ekinds = self.etile_kind
        if E:
            if self.layout == "block":
                _fail("the block layout has no entry tiles")
            if ekinds.max() > TileKind.FP16:
                _fail("etile_kind values must be 0 (BIN), 1 (INT8) or 2 (FP16)")
            order_key = self.etile_window.astype(np.int64) * 4 + ekinds
            if (np.diff(order_key) < 0).any():
                _fail("entry tiles must be sorted by window, then kind (BIN, INT8, FP16)")
            ne = self.etile_nentries
            if ne.min() < 1 or ne.max() > TILE_COLS:
                _fail(f"etile_nentries must lie in 1..{TILE_COLS}")
            used = np.arange(TILE_COLS)[None, :] < ne[:, None]
            cols = self.etile_cols
            if (cols[used] < 0).any() or (cols[used] >= M).any():
                _fail(f"etile_cols of used entries must lie in [0, M={M})")
            if (cols[~used] != M).any():
                _fail(f"etile_cols past etile_nentries must hold M={M}")
            if (self.etile_rows[~used] != 0).any():
                _fail("etile_rows past etile_nentries must hold 0")
            self._check_entry_rows_and_bits("etile", used, N, "an entry")
        self._check_slots_and_values("etile", ekinds, en8, en16)
        self._validate_list_tiles(N, M, n_windows)

        if deep:
            rows, cols, _ = self._coordinates(use_keep=False)
            keys = rows.astype(np.int64) * max(M, 1) + cols
            if np.unique(keys).size != keys.size:
                _fail("a (row, column) pair is stored in two tiles" + (
                    " (or a tile stores an entry of the unit diagonal)" if self.unit_diagonal else ""))
        return self

    def _validate_list_tiles(self, N, M, n_windows):
        """Shapes, ranges and order of the list tiles (docs/CONTRACTS.md, "List tiles")."""
        L = self.ltile_window.shape[0] if self.ltile_window.ndim == 1 else _fail("ltile_window must be 1-D")
        for name, shape in {
            "lwindow_ptr": (n_windows + 1,),
            "ltile_window": (L,),
            "ltile_kind": (L,),
            "ltile_nentries": (L,),
            "ltile_ncols": (L,),
            "ltile_cols": (L, LIST_TILE_COLS),
            "ltile_colslot": (L, TILE_COLS),
            "ltile_rows": (L, TILE_COLS),
            "ltile_keep_bits": (L, ENTRY_MASK_WORDS),
            "ltile_nz_bits": (L, ENTRY_MASK_WORDS),
            "ltile_slot": (L,),
        }.items():
            if getattr(self, name).shape != shape:
                _fail(f"{name} must have shape {shape}, got {getattr(self, name).shape}")
        ln8, ln16 = self.ltile_int8_values.shape[0], self.ltile_fp16_values.shape[0]
        for name, shape in {
            "ltile_int8_values": (ln8, TILE_COLS),
            "ltile_int8_scale": (ln8,),
            "ltile_fp16_values": (ln16, TILE_COLS),
        }.items():
            if getattr(self, name).shape != shape:
                _fail(f"{name} must have shape {shape}, got {getattr(self, name).shape}")
        self._check_ptr("lwindow_ptr", self.lwindow_ptr, self.ltile_window, n_windows, L)
        kinds = self.ltile_kind
        if L:
            if self.layout == "block":
                _fail("the block layout has no list tiles")
            if kinds.max() > TileKind.FP16:
                _fail("ltile_kind values must be 0 (BIN), 1 (INT8) or 2 (FP16)")
            if (np.diff(self.ltile_window.astype(np.int64) * 4 + kinds) < 0).any():
                _fail("list tiles must be sorted by window, then kind (BIN, INT8, FP16)")
            ne, nc = self.ltile_nentries, self.ltile_ncols
            if ne.min() < 1 or ne.max() > TILE_COLS:
                _fail(f"ltile_nentries must lie in 1..{TILE_COLS}")
            if nc.min() < 1 or nc.max() > LIST_TILE_COLS or (nc > ne).any():
                _fail(f"ltile_ncols must lie in 1..{LIST_TILE_COLS} and not exceed ltile_nentries")
            used_cols = np.arange(LIST_TILE_COLS)[None, :] < nc[:, None]
            cols = self.ltile_cols
            if (cols[used_cols] < 0).any() or (cols[used_cols] >= M).any():
                _fail(f"ltile_cols in used slots (< ltile_ncols) must lie in [0, M={M})")
            if (cols[~used_cols] != M).any():
                _fail(f"ltile_cols past ltile_ncols must hold M={M}")
            sorted_cols = np.sort(cols, axis=1)
            if ((np.diff(sorted_cols, axis=1) == 0) & (sorted_cols[:, 1:] < M)).any():
                _fail("a list tile lists the same column twice")
            used = np.arange(TILE_COLS)[None, :] < ne[:, None]
            colslot = self.ltile_colslot.astype(np.int64)
            if ((colslot >= nc[:, None]) & used).any():
                _fail("ltile_colslot of a used entry must lie in [0, ltile_ncols)")
            if (colslot[~used] != 0).any() or (self.ltile_rows[~used] != 0).any():
                _fail("ltile_colslot and ltile_rows past ltile_nentries must hold 0")
            referenced = np.zeros((L, LIST_TILE_COLS), dtype=bool)
            tile_index = np.broadcast_to(np.arange(L)[:, None], used.shape)
            referenced[tile_index[used], colslot[used]] = True
            if (referenced != used_cols).any():
                _fail("every listed column of a list tile (slot < ltile_ncols) must be used by one of its entries")
            self._check_entry_rows_and_bits("ltile", used, N, "a list-tile entry")
        self._check_slots_and_values("ltile", kinds, ln8, ln16)

    @staticmethod
    def _check_ptr(name, ptr, owner, n_windows, count):
        if ptr[0] != 0 or ptr[-1] != count or (np.diff(ptr) < 0).any():
            _fail(f"{name} must start at 0, be non-decreasing and end at the tile count {count}")
        expected = np.repeat(np.arange(n_windows, dtype=np.int32), np.diff(ptr))
        if not np.array_equal(owner, expected):
            _fail(f"{name} disagrees with the window of each tile")

    def _check_entry_rows_and_bits(self, prefix, used, N, what):
        """Window slots and bits of a per-entry layout (``prefix`` "etile" or "ltile", the same arrays); ``used``:
        [tiles, 128], entry e < nentries of its tile."""
        rows = getattr(self, f"{prefix}_rows")
        if rows.max() >= WINDOW_ROWS:
            _fail(f"{prefix}_rows must lie in [0, {WINDOW_ROWS})")
        keep_bits, nz_bits = getattr(self, f"{prefix}_keep_bits"), getattr(self, f"{prefix}_nz_bits")
        if (keep_bits & ~nz_bits).any():
            _fail(f"{prefix}_keep_bits must be a subset of {prefix}_nz_bits")
        if (nz_bits & ~entry_used_words(getattr(self, f"{prefix}_nentries"))).any():
            _fail(f"{prefix}_nz_bits set past {prefix}_nentries")
        row_ids = self.window_rows[getattr(self, f"{prefix}_window")[:, None], rows.astype(np.int64)]
        if ((row_ids == N) & used).any():
            _fail(f"{what} refers to a window slot that holds no row (window_rows == N)")

    def _check_slots_and_values(self, prefix, kinds, n8, n16):
        """Value slots and INT8/FP16 values of one layout: ``prefix`` "tile" (bitmap tiles, whose value arrays carry
        no prefix), "etile" or "ltile"."""
        self._check_slots(prefix, kinds, getattr(self, f"{prefix}_slot"), n8, n16)
        values = "" if prefix == "tile" else f"{prefix}_"
        int8_values, int8_scale = getattr(self, f"{values}int8_values"), getattr(self, f"{values}int8_scale")
        if n8 and (int8_values == -128).any():
            _fail(f"{values}int8_values must lie in [-127, 127]")
        if n8 and (~np.isfinite(int8_scale) | (int8_scale <= 0)).any():
            _fail(f"{values}int8_scale must be finite and > 0")
        if n16 and not np.isfinite(getattr(self, f"{values}fp16_values")).all():
            _fail(f"{values}fp16_values must be finite")

    @staticmethod
    def _check_slots(prefix, kinds, slots, n8, n16):
        is_bin = kinds == TileKind.BIN
        if (slots[is_bin] != -1).any():
            _fail(f"{prefix}_slot must be -1 for BIN tiles")
        for kind, count, label in ((TileKind.INT8, n8, "int8"), (TileKind.FP16, n16, "fp16")):
            used = slots[kinds == kind]
            if used.size != count or not np.array_equal(np.sort(used), np.arange(count)):
                _fail(
                    f"{prefix}_slot of {label.upper()} tiles must use each {label} value slot exactly once "
                    f"({count} slots, {used.size} tiles)"
                )

    # ------------------------------------------------------------ coordinates
    def _coordinates(self, use_keep: bool = True):
        """Original (row, col) of every kept (or stored) entry and its value, float64 unscaled.

        Returns ``(rows int64, cols int64, values float64)`` in no particular order; the unit diagonal's
        entries (value 1) come last.
        """
        layouts = self._set_bits_by_layout(use_keep)
        diagonal = np.arange(self.n_diagonal, dtype=np.int64)
        rows = np.concatenate([layout[2] for layout in layouts] + [diagonal]).astype(np.int64)
        cols = np.concatenate([layout[3] for layout in layouts] + [diagonal]).astype(np.int64)
        values = np.concatenate([layout[4]() for layout in layouts] + [np.ones(diagonal.size)])
        return rows, cols, values

    def _set_bits_by_layout(self, use_keep: bool):
        """For the bitmap, entry and list tiles in turn, ``(flat_word, bit, row, col, values)``: every set keep (or
        stored, ``nz``) bit in ascending flat bit position, the original row and column of its entry, and a function
        giving their values (float64, unscaled)."""
        flat_word, bit = set_bits(self.keep_bits if use_keep else self.nz_bits)
        tile, col_slot, row_slot = self._bitmap_slots(flat_word, bit)
        layouts = [(flat_word, bit, self.window_rows[self.tile_window[tile], row_slot], self.tile_cols[tile, col_slot],
                    functools.partial(self._tile_values, tile, col_slot, row_slot))]
        for prefix in ("etile", "ltile"):
            flat_word, bit = set_bits(getattr(self, f"{prefix}_keep_bits" if use_keep else f"{prefix}_nz_bits"))
            tile, entry = self._entry_slots(flat_word, bit)
            rows = self.window_rows[getattr(self, f"{prefix}_window")[tile], getattr(self, f"{prefix}_rows")[tile, entry]]
            # a list tile's entry names its column through the tile's column list
            slot = entry if prefix == "etile" else self.ltile_colslot[tile, entry]
            cols = getattr(self, f"{prefix}_cols")[tile, slot]
            layouts.append((flat_word, bit, rows, cols, functools.partial(self._per_entry_values, prefix, tile, entry)))
        return layouts

    @staticmethod
    def _bitmap_slots(flat_word, bit):
        """``(tile, column slot, window slot)`` of set bits ``(flat_word, bit)`` of bitmap-tile words ``[T, 128, 4]``."""
        tile = flat_word // (TILE_COLS * MASK_WORDS)
        col_slot = (flat_word // MASK_WORDS) % TILE_COLS
        row_slot = (flat_word % MASK_WORDS) * MASK_WORD_BITS + bit
        return tile, col_slot, row_slot

    @staticmethod
    def _entry_slots(flat_word, bit):
        """``(tile, entry)`` of set bits ``(flat_word, bit)`` of per-entry tile words ``[E, 4]`` (entry, list tiles)."""
        return flat_word // ENTRY_MASK_WORDS, (flat_word % ENTRY_MASK_WORDS) * MASK_WORD_BITS + bit

    def _tile_values(self, tile, col_slot, row_slot):
        kind = self.tile_kind[tile]
        slot = self.tile_slot[tile]
        out = np.ones(tile.shape, dtype=np.float64)
        is8 = kind == TileKind.INT8
        if is8.any():
            s = slot[is8]
            out[is8] = self.int8_values[s, col_slot[is8], row_slot[is8]].astype(np.float64) * self.int8_scale[s]
        is16 = kind == TileKind.FP16
        if is16.any():
            s = slot[is16]
            out[is16] = self.fp16_values[s, col_slot[is16], row_slot[is16]].astype(np.float64)
        return out

    def _per_entry_values(self, prefix: str, tile, entry):
        """Values of entries ``entry`` of tiles ``tile`` of a per-entry layout: ``prefix`` "etile" (entry tiles) or
        "ltile" (list tiles), whose value arrays have the same form."""
        kind = getattr(self, f"{prefix}_kind")[tile]
        slot = getattr(self, f"{prefix}_slot")[tile]
        out = np.ones(tile.shape, dtype=np.float64)
        is8 = kind == TileKind.INT8
        if is8.any():
            s = slot[is8]
            scale = getattr(self, f"{prefix}_int8_scale")[s]
            out[is8] = getattr(self, f"{prefix}_int8_values")[s, entry[is8]].astype(np.float64) * scale
        is16 = kind == TileKind.FP16
        if is16.any():
            s = slot[is16]
            out[is16] = getattr(self, f"{prefix}_fp16_values")[s, entry[is16]].astype(np.float64)
        return out

    # ---------------------------------------------------------------- decode
    def decode(self, effective: bool = True, dtype=np.float64, scaled: bool = True) -> sp.csr_matrix:
        """SciPy CSR of the encoded matrix in original coordinates.

        effective: True -> only entries kept by the mask (what the kernels multiply by);
            False -> every stored entry (nz_bits), ignoring the mask.
        scaled: apply ``row_scale`` / ``col_scale`` (default). Values are computed in float64
            from the stored INT8/FP16 numbers and scales (float16 scale vectors upcast exactly)
            and rounded once to ``dtype``.
            Kept entries whose value is 0 stay as explicit entries.
        """
        effective, scaled = flag(effective, "decode: effective"), flag(scaled, "decode: scaled")
        dtype = decode_dtype(dtype, "decode")
        rows, cols, vals = self._coordinates(use_keep=effective)
        if scaled:
            if self.row_scale is not None:
                vals = vals * self.row_scale[rows].astype(np.float64)
            if self.col_scale is not None:
                vals = vals * self.col_scale[cols].astype(np.float64)
        coo = sp.coo_matrix((vals.astype(dtype), (rows, cols)), shape=self.shape)
        csr = coo.tocsr()  # no duplicates by construction (validate(deep) checks it)
        csr.sort_indices()
        return csr

    def to_dense(self, effective: bool = True, dtype=np.float64) -> np.ndarray:
        """Dense ndarray [N, M] of :meth:`decode`."""
        return self.decode(effective=effective, dtype=dtype).toarray()

    def effective_csr(self) -> sp.csr_matrix:
        """Cached float32 CSR of the effective matrix (kept entries, dequantized, scaled).

        It holds exactly the encoded values: each entry is computed in float64 from the
        stored INT8 (times its scale) / FP16 / 1 value and the row and column scales, then
        rounded once to float32. The CPU execution path multiplies by this matrix. Do not
        modify it in place.
        """
        if self._effective_csr is None:
            self._effective_csr = self.decode(effective=True, dtype=np.float32)
        return self._effective_csr

    def derived(self, key, build):
        """``build()``, computed on the first call with ``key`` and kept on this matrix for the later ones: data that
        another room derives from the matrix alone (``dste.bindings`` keeps the CPU operands of ``dste.spmm(A, x)``
        on a bare matrix here, so they are built once per matrix, not per call). It stays valid for the matrix's
        life because a matrix is never changed in place (:meth:`replace` and :meth:`with_mask` return new matrices,
        which start with nothing kept); it is freed with the matrix and is neither pickled nor saved."""
        if key not in self._derived:
            self._derived[key] = build()
        return self._derived[key]

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_derived"] = {}  # derived data is rebuilt on demand, never pickled
        return state

    # ------------------------------------------------------------- derived
    def replace(self, **changes) -> "DSTEMatrix":
        """A new matrix with some fields replaced (validated; caches dropped)."""
        return dataclasses.replace(self, **changes)

    def with_mask(self, keep) -> "DSTEMatrix":
        """A new matrix whose keep mask is ``keep & nz_bits``, sharing every value array.

        ``keep`` is one of: a SciPy sparse or dense boolean matrix [N, M] over original
        coordinates (nonzero = keep); a ``uint32 [T, 128, 4]`` array of tile bits (only when
        the matrix has no entry or list tiles); a pair ``(tile_bits [T,128,4], etile_bits [E,4])``
        (only when it has no list tiles); or a triple ``(tile_bits, etile_bits, ltile_bits [L,4])``.
        No value is re-quantized, so entries dropped earlier can be re-admitted. Tiles whose
        mask becomes empty stay in place (see :meth:`compact` and ``stats()['live_tiles']``).
        """
        no_list_bits = np.zeros((0, ENTRY_MASK_WORDS), np.uint32)
        if isinstance(keep, list) and keep and all(isinstance(k, np.ndarray) and k.ndim >= 2 for k in keep):
            # tile bits given as a list read as the tuple they are (a mask given as a list holds 1-D rows), so a
            # wrong dtype among them gets the tuple's message, not NumPy's "inhomogeneous shape"
            keep = tuple(keep)
        from dste.format.encoder import _is_torch_tensor, _torch_to_scipy_or_numpy  # encoder imports this module

        if _is_torch_tensor(keep):  # dense as NumPy, sparse (COO, CSR) as SciPy: what encode reads
            keep = _torch_to_scipy_or_numpy(keep)
        if isinstance(keep, tuple):
            if len(keep) == 2 and self.n_ltiles:
                raise DSTEFormatError(
                    "with_mask: this matrix has list tiles; pass (tile_bits, etile_bits, ltile_bits [L,4]) or a [N, M] mask"
                )
            if len(keep) not in (2, 3):
                raise DSTEFormatError(
                    "with_mask: a tuple keep must be (tile_bits [T,128,4], etile_bits [E,4][, ltile_bits [L,4]])"
                )
            bits = [np.asarray(k) for k in keep]
            return self._with_bits(*bits) if len(bits) == 3 else self._with_bits(*bits, no_list_bits)
        if isinstance(keep, np.ndarray) and keep.dtype == np.uint32 and keep.ndim == 3:
            if self.n_etiles or self.n_ltiles:
                raise DSTEFormatError(
                    "with_mask: this matrix has entry tiles or list tiles; pass (tile_bits, etile_bits, ltile_bits) or a [N, M] mask"
                )
            return self._with_bits(keep, np.zeros((0, ENTRY_MASK_WORDS), np.uint32), no_list_bits)
        if isinstance(keep, np.ndarray) and keep.ndim == 3 and keep.shape[1:] == (TILE_COLS, ENTRY_MASK_WORDS):
            raise DSTEFormatError(f"with_mask: tile bits must be uint32 [T, {TILE_COLS}, {ENTRY_MASK_WORDS}], got "
                                  f"{keep.dtype}")
        if sp.issparse(keep):
            if keep.shape != self.shape:
                raise DSTEFormatError(f"with_mask: mask shape {keep.shape} != matrix shape {self.shape}")
            if keep.dtype.kind in "fc" and not np.isfinite(keep.data).all():
                raise DSTEFormatError("with_mask: the mask contains NaN or Inf; nonzero = keep, so it must be finite")
            # duplicates are summed as encode sums them: integers in float64, not their own dtype (uint8 128 + 128
            # would wrap to 0 and drop a kept entry)
            mask = keep.astype(np.float64 if keep.dtype.kind in "biu" else keep.dtype, copy=True).tocsr()
            mask.sum_duplicates()  # canonical (sorted columns, no duplicates): the keys below ascend strictly
            mask.eliminate_zeros()
            coo = mask.tocoo()
            keys = coo.row.astype(np.int64) * max(self.shape[1], 1) + coo.col
            lookup = lambda r, c: _isin_sorted(r * max(self.shape[1], 1) + c, keys)  # noqa: E731
        else:
            if keep is None or isinstance(keep, (str, bytes, bool, np.bool_)) or np.ndim(keep) == 0:
                raise DSTEFormatError(
                    f"with_mask: keep must be a [N, M] = {self.shape} mask (SciPy sparse, NumPy array or torch tensor; "
                    f"nonzero = keep) or the tiles' keep bits (tile_bits[, etile_bits[, ltile_bits]]), got "
                    f"{type(keep).__name__} {keep!r:.40}; to keep every stored entry pass (matrix.nz_bits, "
                    "matrix.etile_nz_bits, matrix.ltile_nz_bits)")
            dense = np.asarray(keep)
            if dense.shape != self.shape:
                raise DSTEFormatError(f"with_mask: mask shape {dense.shape} != matrix shape {self.shape}")
            if dense.dtype.kind not in "biuf":
                raise DSTEFormatError(f"with_mask: mask dtype must be bool or numeric, got {dense.dtype}")
            if dense.dtype.kind == "f" and not np.isfinite(dense).all():
                raise DSTEFormatError("with_mask: the mask contains NaN or Inf; nonzero = keep, so it must be finite")
            dense = dense != 0
            lookup = lambda r, c: dense[r, c]  # noqa: E731
        if self.unit_diagonal:
            diagonal = np.arange(self.shape[0], dtype=np.int64)
            dropped = np.flatnonzero(~np.asarray(lookup(diagonal, diagonal), dtype=bool))
            if dropped.size:
                raise DSTEFormatError(
                    f"with_mask: this matrix has a unit diagonal, which is always kept; the mask drops {dropped.size} of "
                    f"its entries (first: ({dropped[0]}, {dropped[0]})). Keep the diagonal in the mask, or encode "
                    f"without unit_diagonal to prune it")
        bits = []
        for (flat_word, bit, rows, cols, _), stored in zip(self._set_bits_by_layout(use_keep=False),
                                                            (self.nz_bits, self.etile_nz_bits, self.ltile_nz_bits)):
            kept = lookup(rows.astype(np.int64), cols.astype(np.int64))
            bits.append(_words_with_bits(stored.shape, flat_word[kept], bit[kept]))
        return self._with_bits(*bits)

    def _with_bits(self, tile_bits, etile_bits, ltile_bits) -> "DSTEMatrix":
        if ltile_bits.shape != self.ltile_nz_bits.shape or ltile_bits.dtype != np.uint32:
            raise DSTEFormatError(
                f"with_mask: list-tile bits must be uint32 {self.ltile_nz_bits.shape}, got {ltile_bits.dtype} {ltile_bits.shape}"
            )
        if tile_bits.shape != self.nz_bits.shape or tile_bits.dtype != np.uint32:
            raise DSTEFormatError(f"with_mask: tile bits must be uint32 {self.nz_bits.shape}, got {tile_bits.dtype} {tile_bits.shape}")
        if etile_bits.shape != self.etile_nz_bits.shape or etile_bits.dtype != np.uint32:
            raise DSTEFormatError(
                f"with_mask: entry-tile bits must be uint32 {self.etile_nz_bits.shape}, got {etile_bits.dtype} {etile_bits.shape}"
            )
        return self.replace(
            keep_bits=np.ascontiguousarray(tile_bits & self.nz_bits),
            etile_keep_bits=np.ascontiguousarray(etile_bits & self.etile_nz_bits),
            ltile_keep_bits=np.ascontiguousarray(ltile_bits & self.ltile_nz_bits),
        )

    def live_tiles(self):
        """Boolean masks (bitmap tiles [T], entry tiles [E]) of tiles with at least one kept entry."""
        return self.keep_bits.reshape(self.n_tiles, -1).any(axis=1) if self.n_tiles else np.zeros(0, bool), self.etile_keep_bits.any(axis=1)

    def live_list_tiles(self) -> np.ndarray:
        """Boolean mask [L] of list tiles with at least one kept entry."""
        return self.ltile_keep_bits.any(axis=1)

    def compact(self) -> "DSTEMatrix":
        """Drop tiles with no kept entry (their stored entries are dropped too: not re-admittable)."""
        from dste.format.encoder import take_tiles

        live, elive = self.live_tiles()
        return take_tiles([self], [np.flatnonzero(live)], [np.flatnonzero(elive)], like=self,
                          lpicks=[np.flatnonzero(self.live_list_tiles())])

    def update_windows(self, new_matrix, changed_rows, row_scale=None, col_scale=None) -> "DSTEMatrix":
        """Re-encode only the windows holding ``changed_rows``; see :func:`dste.format.encoder.update_windows`."""
        from dste.format.encoder import update_windows

        return update_windows(self, new_matrix, changed_rows, row_scale=row_scale, col_scale=col_scale)

    # ------------------------------------------------------------ accounting
    def nbytes(self) -> dict:
        """Exact byte accounting of every array, by category and residency.

        Returns ``{"device": {category: bytes}, "host_only": {field: bytes}, "device_total",
        "host_only_total", "total", "bytes_per_stored_edge", "bytes_per_kept_edge", "scale_dtype"}``.
        Device categories: values, scales (INT8 tile scales and row/column scale vectors at their stored
        dtype: 4 B per node as float32, 2 B as float16; ``scale_dtype`` names it),
        masks (keep bits), column_ids (the device form of ``tile_cols`` / ``etile_cols`` /
        ``ltile_cols``: :func:`layout_column_id_bytes`, 2 B per slot plus, when M > 65,536, the bands as band starts
        or a band plane, not the host's int32; and the list tiles' 1-byte ``ltile_colslot``), row_ids (entry rows, and the window
        slot map in its device form: 2 B per slot plus, when N > 65,536, the bands as band starts or a plane, as the kernel's metadata blob
        carries it to place output rows), metadata
        (window pointers, per-tile kind/ncols/slot in their device form: :func:`device_metadata_bytes`).
        Host-only: nz bits, the permutations and the int32 column ids ``tile_cols`` / ``etile_cols`` and window slot map ``window_rows`` (the host
        form of the device's 16-bit ids: ``total`` counts the ids in both forms), and the int32/int64 window pointers,
        per-tile windows, counts and slots (likewise counted in both forms). Bytes per edge use the device total.
        A ``col_scale`` that is the same object as ``row_scale`` (as ``gcn_normalized`` builds
        it) is counted once.
        """
        device = {name: 0 for name in ("values", "scales", "masks", "column_ids", "row_ids", "metadata")}
        for name, category in BYTE_CATEGORY.items():
            value = getattr(self, name)
            if value is not None and name not in SCALE_FIELDS:
                device[category] += int(value.nbytes)
        device["scales"] += sum(int(vector.nbytes) for vector in self.device_scale_vectors())
        device["column_ids"] = self.derived(("column_id_bytes",), self._column_id_bytes) + int(self.ltile_colslot.nbytes)
        # the window slot map travels like the column ids (16-bit offsets in bands of Y's N rows), not as int32
        device["row_ids"] += self.derived(("row_id_bytes",), self._row_id_bytes) - int(self.window_rows.nbytes)
        # window pointers and per-tile windows, counts and slots in their device form (device_metadata_bytes)
        metadata_forms = device_metadata_bytes(self)
        device["metadata"] += sum(metadata_forms.values()) - sum(int(getattr(self, name).nbytes) for name in metadata_forms)
        host = {name: int(getattr(self, name).nbytes) if getattr(self, name) is not None else 0 for name in HOST_ONLY_FIELDS}
        # the host keeps the ids as int32 original ids; the device's 16-bit form is counted under column_ids
        host.update({name: int(getattr(self, name).nbytes) for name in COLUMN_ID_FIELDS})
        host["window_rows"] = int(self.window_rows.nbytes)  # likewise the int32 window slot map
        host.update({name: int(getattr(self, name).nbytes) for name in metadata_forms})  # and the host metadata
        device_total = sum(device.values())
        stored, kept = self.nnz_stored, self.nnz_kept
        return {
            "device": device,
            "host_only": host,
            "device_total": device_total,
            "host_only_total": sum(host.values()),
            "total": device_total + sum(host.values()),
            "bytes_per_stored_edge": device_total / stored if stored else float("nan"),
            "bytes_per_kept_edge": device_total / kept if kept else float("nan"),
            "scale_dtype": self.scale_dtype,
        }

    def _row_id_bytes(self) -> int:
        used = np.count_nonzero(self.window_rows < self.shape[0], axis=1)
        return layout_column_id_bytes(self.window_rows, used, self.shape[0])

    def _column_id_bytes(self) -> int:
        used = (self.tile_ncols, self.etile_nentries, self.ltile_ncols)
        return sum(layout_column_id_bytes(getattr(self, name), count, self.shape[1])
                   for name, count in zip(COLUMN_ID_FIELDS, used))

    def device_scale_vectors(self) -> list:
        """The row/column scale vectors the device holds: one when ``col_scale`` is ``row_scale`` (a shared vector,
        as ``gcn_normalized`` builds GCN's D^-1/2, is uploaded once)."""
        vectors = [self.row_scale] if self.row_scale is not None else []
        if self.col_scale is not None and self.col_scale is not self.row_scale:
            vectors.append(self.col_scale)
        return vectors

    @property
    def scale_dtype(self) -> str | None:
        """``"float32"`` or ``"float16"``: the stored dtype of the scale vectors (``"float32+float16"`` when they
        differ); None without any."""
        names = sorted({value.dtype.name for value in (self.row_scale, self.col_scale) if value is not None},
                       reverse=True)
        return "+".join(names) if names else None

    def stats(self) -> dict:
        """Tile counts per layout and kind, densities, entries per bitmap column, stretch, bytes per edge.

        ``stretch`` = X rows gathered / M, where a bitmap tile gathers ``tile_ncols`` rows, an
        entry tile one row per entry, a list tile ``ltile_ncols`` rows and the unit diagonal one row per row of A.
        ``nnz_in_unit_diagonal``: its entries (0 without one). ``mean_tile_density`` = stored entries / (128 * ncols) over
        bitmap tiles. Counts of kept entries use the live mask. ``scale_dtype``: the scale vectors' stored dtype
        (float16 only from the byte-ceiling search of ``gcn_normalized``).
        """
        T, E = self.n_tiles, self.n_etiles
        kind_names = {k.name: k for k in TileKind}
        tile_nnz = popcount(self.nz_bits).reshape(T, -1).sum(axis=1) if T else np.zeros(0, np.int64)
        etile_nnz = popcount(self.etile_nz_bits).sum(axis=1) if E else np.zeros(0, np.int64)
        live, elive = self.live_tiles()
        col_nnz = popcount(self.nz_bits).sum(axis=2) if T else np.zeros((0, TILE_COLS), np.int64)
        used_cols = int(self.tile_ncols.sum())
        L = self.n_ltiles
        ltile_nnz = popcount(self.ltile_nz_bits).sum(axis=1) if L else np.zeros(0, np.int64)
        list_cols = int(self.ltile_ncols.sum())
        gathered = used_cols + int(self.etile_nentries.sum()) + list_cols + self.n_diagonal
        M = self.shape[1]
        nb = self.nbytes()
        return {
            "shape": self.shape,
            "layout": self.layout,
            "windows": self.n_windows,
            "bitmap_tiles": {name: int((self.tile_kind == k).sum()) for name, k in kind_names.items()},
            "entry_tiles": {name: int((self.etile_kind == k).sum()) for name, k in kind_names.items()},
            "n_tiles": T,
            "n_entry_tiles": E,
            "list_tiles": {name: int((self.ltile_kind == k).sum()) for name, k in kind_names.items()},
            "n_list_tiles": L,
            "live_list_tiles": int(self.live_list_tiles().sum()),
            "nnz_in_list_tiles": int(ltile_nnz.sum()),
            "mean_entries_per_list_column": float(ltile_nnz.sum() / list_cols) if list_cols else 0.0,
            "live_tiles": int(live.sum()),
            "live_entry_tiles": int(elive.sum()),
            "nnz_stored": int(tile_nnz.sum() + etile_nnz.sum() + ltile_nnz.sum()) + self.n_diagonal,
            "nnz_in_unit_diagonal": self.n_diagonal,
            "nnz_kept": self.nnz_kept,
            "nnz_in_bitmap_tiles": int(tile_nnz.sum()),
            "nnz_in_entry_tiles": int(etile_nnz.sum()),
            "mean_tile_density": float(tile_nnz.sum() / (WINDOW_ROWS * used_cols)) if used_cols else 0.0,
            "mean_entries_per_bitmap_column": float(col_nnz.sum() / used_cols) if used_cols else 0.0,
            "mean_entries_per_entry_tile": float(etile_nnz.mean()) if E else 0.0,
            "x_rows_gathered": gathered,
            "stretch": gathered / M if M else 0.0,
            "bytes_device": nb["device_total"],
            "bytes_per_stored_edge": nb["bytes_per_stored_edge"],
            "scale_dtype": self.scale_dtype,
        }

    # ------------------------------------------------------------------- io
    def save(self, path) -> None:
        """Write to one ``.npz`` file with a versioned, checksummed JSON header (see ``dste.format.io``)."""
        from dste.format.io import save

        save(self, path)

    @classmethod
    def load(cls, path) -> "DSTEMatrix":
        """Read a file written by :meth:`save`, validating version, checksum and every field."""
        from dste.format.io import load

        return load(path)


_CONTRACT_FIELDS = frozenset(field.name for field in dataclasses.fields(DSTEMatrix) if not field.name.startswith("_"))
"""The fields a built matrix refuses to reassign (the caches ``_effective_csr`` and ``_derived`` are its own)."""


def device_metadata_bytes(matrix: "DSTEMatrix") -> dict:
    """Device bytes of each layout's window pointer and per-tile metadata, by host field name.

    The device form carries what the host arrays hold in fewer bytes: a tile's window is implied by its layout's
    window pointer (tiles are sorted by window), so ``*_window`` is host-only; a layout without tiles needs no
    pointer; a count (``tile_ncols``, ``*_nentries``, ``ltile_ncols``: 1..128) is one byte; a value slot is
    carried only for INT8/FP16 tiles (a BIN tile's is -1), 4 B each. The host keeps the int32/int64 arrays
    (``host_only`` of :meth:`DSTEMatrix.nbytes` counts them, as it counts the host form of the ids).
    """
    device = {}
    for ptr, window, counts, slot, kind in TILE_LAYOUT_METADATA:
        tiles = int(getattr(matrix, window).shape[0])
        device[ptr] = int(getattr(matrix, ptr).nbytes) if tiles else 0
        device[window] = 0
        for name in counts:
            device[name] = tiles  # uint8
        device[slot] = 4 * int((getattr(matrix, kind) != TileKind.BIN).sum())
    return device


def _empty_list_tiles(n_windows: int) -> dict:
    """The list-tile fields of a matrix without list tiles."""
    return {
        "lwindow_ptr": np.zeros(n_windows + 1, np.int64),
        "ltile_window": np.zeros(0, np.int32),
        "ltile_kind": np.zeros(0, np.uint8),
        "ltile_nentries": np.zeros(0, np.int32),
        "ltile_ncols": np.zeros(0, np.int32),
        "ltile_cols": np.zeros((0, LIST_TILE_COLS), np.int32),
        "ltile_colslot": np.zeros((0, TILE_COLS), np.uint8),
        "ltile_rows": np.zeros((0, TILE_COLS), np.uint8),
        "ltile_keep_bits": np.zeros((0, ENTRY_MASK_WORDS), np.uint32),
        "ltile_nz_bits": np.zeros((0, ENTRY_MASK_WORDS), np.uint32),
        "ltile_slot": np.zeros(0, np.int32),
        "ltile_int8_values": np.zeros((0, TILE_COLS), np.int8),
        "ltile_int8_scale": np.zeros(0, np.float32),
        "ltile_fp16_values": np.zeros((0, TILE_COLS), np.float16),
    }


def entry_used_words(nentries: np.ndarray) -> np.ndarray:
    """uint32 [E, 4] with bits set for entries 0..nentries-1: the nonzero bits of per-entry tiles (entry and list
    tiles) as the encoder stores them."""
    e = np.arange(TILE_COLS)
    return pack_mask(e[None, :] < nentries[:, None])


def _words_with_bits(shape, flat_word, bit) -> np.ndarray:
    """uint32 words of ``shape`` with exactly the bits ``(flat_word, bit)`` set (flat word index into ``shape``)."""
    words = np.zeros(int(np.prod(shape)), np.uint32)
    np.bitwise_or.at(words, flat_word, np.left_shift(np.uint32(1), bit.astype(np.uint32)))
    return words.reshape(shape)


def _isin_sorted(values: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    if sorted_keys.size == 0:
        return np.zeros(values.shape, dtype=bool)
    pos = np.searchsorted(sorted_keys, values)
    pos = np.minimum(pos, sorted_keys.size - 1)
    return sorted_keys[pos] == values
