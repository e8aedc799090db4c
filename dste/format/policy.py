"""Encoding policy: layout, reordering, value kinds, the FP16 rule and the bitmap/entry split.

Sensitivity score S (per tile, decides INT8 vs FP16)
----------------------------------------------------
Used by ``kinds="auto"`` (the INT8 opt-in). S is the INT8 quantization error of the tile's
nonzero stored values (after the row/column scales are factored out) in units of their
median magnitude: ``S = rms(v - q*s) / median(|v|)`` with ``s = max|v|/127`` and
``q = rne(v/s)`` (:func:`dste.format.hybrid_rows.int8_sensitivity_robust`, where the choice of
the median is justified: no outlier can move it, so S grows with the outlier). Uniformly
spread values give S ~ 0.005, Gaussian ones 0.010-0.015; a tile whose scale is stretched by a
few outliers (so the bulk rounds to 0 or +-1) gives S of 0.05 and more, up to ~1.5. A tile is
FP16 when ``S >= fp16_threshold`` (default 0.02), else INT8. Tiles whose every value is 1 are
BIN (value 1, times the row/column scales), unless a kind is forced. Per-row S of the
hybrid-row operand X is the same formula over a row.

Bitmap columns vs entry tiles
-----------------------------
``bitmap_split="cost"`` (default) picks, per window, how many of its densest eligible
columns (at least ``bitmap_min_entries`` entries) become bitmap columns by minimising a
modelled cost per SpMM call; ``"count"`` makes every eligible column a bitmap column.
See :mod:`dste.format.encoder` for the cost and the measurements behind the defaults.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field, fields

import numpy as np

from dste.format.constants import LAYOUTS
from dste.format.errors import DSTEFormatError

REORDERS = ("none", "rcm", "community", "community-fast")
KINDS = ("faithful", "auto", "bin", "int8", "fp16")
BITMAP_SPLITS = ("cost", "count")

DEFAULT_FP16_THRESHOLD = 0.02
"""S >= 0.02 -> FP16: Gaussian tiles (S 0.010-0.015) stay INT8, outlier-stretched ones (S >= 0.05) go FP16."""

BITMAP_MIN_ENTRIES_BIN = 2
"""Default floor of the ``"count"`` split for structure-only (all-BIN) matrices; see dste.format.encoder."""

BITMAP_MIN_ENTRIES_BIN_COST = 1
"""Default floor of the ``"cost"`` split for structure-only matrices: no floor, the cost decides."""

BITMAP_MIN_ENTRIES_VALUED = 4
"""Default split when tiles carry values (128 INT8/FP16 values per bitmap column); see dste.format.encoder."""

DEFAULT_X_ROW_BYTES = 136
"""Price of one gathered X row in the cost split, in bytes. Set when the hybrid-row record of
F = 128 INT8 features was ``4 * ceil(F / 4) + 8`` = 136 B (a scale and an FP16 position); the
kernel's record is now ``4 * ceil(F / 4) + 4`` = 132 B (``dste.kernels.plan.record_width``).
The weight stays at 136 so that encodings, and every figure measured on them, stay as they
are: it is a relative price (under the descriptor-bound DMA model a gathered row of 132 B
costs one descriptor, as one of 136 B would), and 4 B moves it by 3 %."""

DEFAULT_GATHER_TRANSFER_BYTES = 29_900
"""Fixed cost of one gather transfer in byte equivalents: 1.3 us per DMA transfer times one
queue's bandwidth (368 GB/s per NeuronCore-v3 over 16 queues = 23 B/ns), the trn2 figures
of the kernels' cost model (``dste.nkisim.cost``: dma_fixed_ns, dma_peak_gbps_per_nc,
dma_queues). Every tile (bitmap or entry) costs one such transfer per call."""


@dataclass(eq=False)
class EncodePolicy:
    """How to encode a sparse matrix into DSTE tiles.

    layout: ``"condensed"`` (per-window distinct columns, cut into tiles of <= 128) or
        ``"block"`` (fixed 128-wide block columns; for dense operands such as weights).
    reorder: ``"none"`` (or ``None``), ``"rcm"`` (reverse Cuthill-McKee), ``"community"``
        (METIS recursive bisection into 128-node parts, each in its intra-part RCM order) or
        ``"community-fast"`` (the parts alone); see :mod:`dste.format.reorder`.
    kinds: ``"faithful"`` (default: per tile BIN if every value is 1, else the first of FP16 /
        INT8 that keeps every value within 2^-11 relative error; refuses a matrix no kind
        keeps that well), ``"auto"`` (opt in to INT8: BIN / INT8 / FP16 per tile by the
        sensitivity rule below), or force ``"bin"`` (structure only: values become 1),
        ``"int8"`` or ``"fp16"``. Error bounds of each kind: :func:`dste.format.encoder.encode`.
    fp16_threshold: T of the rule ``S >= T -> FP16``.
    bitmap_min_entries: only a window column with at least this many entries may go to a
        bitmap tile; every other entry goes to entry tiles (condensed layout only).
        ``None``: 4 for valued matrices; for structure-only ones 1 with the cost split
        (the cost alone decides), 2 with the count split.
    bitmap_split: ``"cost"`` (default): per window, the densest eligible columns become
        bitmap columns, as many as minimise the modelled per-call cost (device bytes of
        the window's tiles + gathered X bytes + one fixed transfer cost per tile);
        ``"count"``: every eligible column becomes a bitmap column (cut in column order).
    x_row_bytes: price of one gathered X row in that cost, in bytes (default 136: the INT8
        F = 128 hybrid-row record when the weight was set; the kernel's is 132 B now, see
        ``DEFAULT_X_ROW_BYTES``).
    gather_transfer_bytes: fixed cost of one tile's gather transfer, in bytes (default
        29,900: trn2 DMA fixed cost times one queue's bandwidth).
    list_tiles: False (default): the window columns the split leaves out of the bitmaps become
        entry-tile entries. True: those with at least 2 entries go to list tiles instead (one
        gathered X row per column, 1-byte row slot + 1-byte index into the tile's column list per
        entry), only the single-entry ones to entry tiles, and the cost split prices list tiles
        (condensed layout, ``"cost"`` split only; see :mod:`dste.format.encoder`). The ``spmm_hybrid``
        kernel reads them (a window's list tiles run in pairs); off by default, and turned on by
        ``gcn_normalized``'s byte-ceiling search (``max_bytes_per_edge``) where they help meet the ceiling.
    value_bytes: bytes per stored value the cost assumes (0 BIN, 1 INT8, 2 FP16); ``None``:
        0 for structure-only matrices, 2 for ``kinds="fp16"`` or ``"faithful"``, else 1.
    row_scale, col_scale: optional float vectors [N], [M]; the encoded matrix is
        ``diag(row_scale) V diag(col_scale)``.
    scaled_input: True (default) if the matrix given to ``encode`` already includes the
        scales (stored values are ``A_ij / (row_scale_i col_scale_j)``); False if it is the
        unscaled V itself (as ``gcn_normalized`` passes the binary A+I).
    seed: random seed of the community order's tie-breaking.
    unit_diagonal: False (default): diagonal entries are stored like any other. True: the matrix must be
        square with every diagonal entry present and of stored value 1 (``gcn_normalized``'s A + I); the
        tiles leave the diagonal out and the matrix records it as implicit (``DSTEMatrix.unit_diagonal``):
        no column id, row slot or keep bit per diagonal entry, the kernel adds it per window.
    """

    layout: str = "condensed"
    reorder: str = "none"
    kinds: str = "faithful"
    fp16_threshold: float = DEFAULT_FP16_THRESHOLD
    bitmap_min_entries: int | None = None
    bitmap_split: str = "cost"
    x_row_bytes: int = DEFAULT_X_ROW_BYTES
    gather_transfer_bytes: int = DEFAULT_GATHER_TRANSFER_BYTES
    value_bytes: int | None = None
    list_tiles: bool = False
    row_scale: np.ndarray | None = field(default=None, repr=False)
    col_scale: np.ndarray | None = field(default=None, repr=False)
    scaled_input: bool = True
    seed: int = 0
    unit_diagonal: bool = False

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise DSTEFormatError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.reorder is None:  # "no reordering" spelled the Python way
            self.reorder = "none"
        if self.reorder not in REORDERS:
            raise DSTEFormatError(f"reorder must be one of {REORDERS}, got {self.reorder!r}")
        if self.kinds not in KINDS:
            raise DSTEFormatError(f"kinds must be one of {KINDS}, got {self.kinds!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise DSTEFormatError(f"seed must be an int >= 0 (the community order's tie-breaking), got {self.seed!r}")
        if isinstance(self.fp16_threshold, bool) or not isinstance(self.fp16_threshold, numbers.Real):
            raise DSTEFormatError(f"fp16_threshold must be a finite number (tiles of sensitivity S >= it go to FP16), "
                                  f"got {type(self.fp16_threshold).__name__} {self.fp16_threshold!r}")
        threshold = float(self.fp16_threshold)
        if not np.isfinite(threshold):
            raise DSTEFormatError(f"fp16_threshold must be finite, got {self.fp16_threshold!r}")
        self.fp16_threshold = threshold
        if self.bitmap_min_entries is not None:
            if not _is_whole_number(self.bitmap_min_entries) or self.bitmap_min_entries < 1:
                raise DSTEFormatError(
                    f"bitmap_min_entries must be an integer >= 1 or None, got {self.bitmap_min_entries!r}"
                )
            self.bitmap_min_entries = int(self.bitmap_min_entries)
        if self.bitmap_split not in BITMAP_SPLITS:
            raise DSTEFormatError(f"bitmap_split must be one of {BITMAP_SPLITS}, got {self.bitmap_split!r}")
        for name in ("x_row_bytes", "gather_transfer_bytes"):
            value = getattr(self, name)
            if not _is_whole_number(value) or value < 0:
                raise DSTEFormatError(f"{name} must be an integer >= 0, got {value!r}")
            setattr(self, name, int(value))
        # "False" or 0.5 read as True would encode silently wrong (scaled_input: the scales divided out, not applied)
        for name in ("list_tiles", "scaled_input", "unit_diagonal"):
            value = getattr(self, name)
            if not isinstance(value, (bool, np.bool_)):
                raise DSTEFormatError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
            setattr(self, name, bool(value))
        if self.unit_diagonal and self.layout != "condensed":
            raise DSTEFormatError(f"unit_diagonal=True needs layout='condensed', got {self.layout!r}")
        if self.list_tiles and (self.layout != "condensed" or self.bitmap_split != "cost"):
            raise DSTEFormatError(
                f"list_tiles=True needs layout='condensed' and bitmap_split='cost', got {self.layout!r} and {self.bitmap_split!r}"
            )
        if self.value_bytes is not None:
            if isinstance(self.value_bytes, bool) or self.value_bytes not in (0, 1, 2):
                raise DSTEFormatError(f"value_bytes must be 0, 1, 2 or None, got {self.value_bytes!r}")
            self.value_bytes = int(self.value_bytes)

    def metadata(self) -> dict:
        """JSON-safe description (scales excluded: they are stored in the matrix; ``unit_diagonal`` only when set,
        so the records of every other policy read as before)."""
        meta = {
            "layout": self.layout,
            "reorder": self.reorder,
            "kinds": self.kinds,
            "fp16_threshold": self.fp16_threshold,
            "bitmap_min_entries": self.bitmap_min_entries,
            "bitmap_split": self.bitmap_split,
            "x_row_bytes": self.x_row_bytes,
            "gather_transfer_bytes": self.gather_transfer_bytes,
            "value_bytes": self.value_bytes,
            "list_tiles": self.list_tiles,
            "scaled_input": bool(self.scaled_input),
            "seed": int(self.seed),
        }
        if self.unit_diagonal:
            meta["unit_diagonal"] = True
        return meta

    @classmethod
    def from_metadata(cls, meta: dict) -> "EncodePolicy":
        allowed = {
            "layout",
            "reorder",
            "kinds",
            "fp16_threshold",
            "bitmap_min_entries",
            "bitmap_split",
            "x_row_bytes",
            "gather_transfer_bytes",
            "value_bytes",
            "list_tiles",
            "scaled_input",
            "seed",
            "unit_diagonal",
        }
        unknown = set(meta) - allowed
        if unknown:
            raise DSTEFormatError(f"unknown policy keys {sorted(unknown)}; allowed: {sorted(allowed)}")
        meta = dict(meta)
        # a record without the key predates the cost split: its windows were split by count
        meta.setdefault("bitmap_split", "count")
        return cls(**meta)


def _is_whole_number(value) -> bool:
    """An int, or a finite float holding one (not a bool, None, NaN or a string)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        return False
    return bool(np.isfinite(float(value))) and int(value) == value


def check_policy_fields(given, where: str, also_allowed=(), refused=()) -> None:
    """Raise ``TypeError`` naming the keywords of ``given`` that are neither :class:`EncodePolicy` fields nor
    ``also_allowed`` (``where``'s own keywords), and listing what is allowed; ``refused`` are policy fields ``where``
    sets itself. (``EncodePolicy(**given)`` said only "got an unexpected keyword argument", for the first one.)"""
    names = [f.name for f in fields(EncodePolicy)]
    unknown = sorted(set(given) - (set(names) - set(refused)) - set(also_allowed))
    if unknown:
        allowed = [*also_allowed, *(name for name in names if name not in refused)]
        raise TypeError(f"{where} got unknown keyword argument(s) {unknown}; allowed: {', '.join(allowed)}")
