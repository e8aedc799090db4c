"""Fixed geometry and enumerations of the DSTE format.

The tile geometry follows the NeuronCore Tensor Engine: a 128-row window is the
matmul's output partition count, and up to 128 gathered X rows form the
contraction (partition) dimension of one matmul.
"""

from enum import IntEnum

WINDOW_ROWS = 128
"""Rows per row window (R): the matmul output partition count."""

TILE_COLS = 128
"""Maximum columns per bitmap tile and entries per entry tile (K)."""

MASK_WORD_BITS = 32
"""Bits per mask word."""

MASK_WORDS = WINDOW_ROWS // MASK_WORD_BITS
"""Mask words per tile column (4): window slot r lives in word r // 32, bit r % 32."""

ENTRY_MASK_WORDS = TILE_COLS // MASK_WORD_BITS
"""Mask words per entry tile (4): entry e lives in word e // 32, bit e % 32."""

COLUMN_BAND_ROWS = 65536
"""X rows per column-id band: the device keeps each column id as a 16-bit offset inside its band."""

COLUMN_ID_BYTES = 2
"""Device bytes of one tile-column or entry column id (``uint16`` offset inside its band)."""

MAX_COLUMN_BANDS = 255
"""Bands a device column id can name (a ``uint8`` band number; 255 marks a padding slot), so
M <= 255 x 65,536 = 16,711,680 X rows."""

LIST_TILE_COLS = 64
"""Distinct column ids per list tile: a list tile holds up to 128 entries of columns that have at
least 2 entries in the tile's window, so at most 64 distinct columns."""

FORMAT_VERSION = 3
"""Newest on-disk format version, written by ``DSTEMatrix.save`` for a matrix with a unit diagonal (version 3 added
it: an older build must refuse such a file, not load it without its diagonal); every other matrix is written as
version 2, which older builds read. Version 2 added the list tiles; ``load`` also reads version-1 files (no list
tiles)."""

LIST_TILES_FORMAT_VERSION = 2
"""The version written for every matrix without a unit diagonal (version 2 added the list tiles)."""

UNIT_DIAGONAL_FORMAT_VERSION = 3
"""The first version whose header carries ``unit_diagonal``."""

READABLE_FORMAT_VERSIONS = (1, 2, 3)
"""Versions ``load`` accepts."""

FP16_MAX = 65504.0
"""Largest finite float16; casts to float16 saturate here."""

FP16_MIN_NORMAL = 2.0 ** -14
"""Smallest normal float16: above it a float16 holds any real to within 2^-11 relative error."""

FLOAT32_SMALLEST_NORMAL = 2.0 ** -126
FLOAT32_MAX = (2.0 - 2.0 ** -23) * 2.0 ** 127
"""float32's normal range: stored values, scales and the products the CPU op folds them into live in it."""

SCALE_DTYPES = ("float32", "float16")
"""Stored dtypes of ``row_scale`` / ``col_scale``: float32 (every encode), or float16 (the byte-ceiling search of
``gcn_normalized``, where float16 scale vectors meet the ceiling at a larger price weight than float32 ones or
float32 cannot meet it). Either way the stored value is the scale."""

INT8_QMAX = 127
"""Symmetric INT8 range is [-127, 127]; -128 is never produced."""

FP16_UNDERFLOW_AMAX = 2 * INT8_QMAX * 2.0 ** -25
"""A tile or row whose largest |value| is below this (7.6e-6) is stored worse by float16 than by INT8: float16 rounds
there in its subnormal range, by up to 2^-25, INT8 by up to amax / 254. ``kinds="auto"`` and ``quantize_rows`` keep such
tiles and rows INT8 whatever their sensitivity (float16 flushed a tile of 1e-10 values to zero)."""


class TileKind(IntEnum):
    """How a tile's values are stored."""

    BIN = 0
    """Bitmap only: every kept value is 1 (before the row/column scales)."""
    INT8 = 1
    """Per-tile symmetric INT8 values with one float32 scale."""
    FP16 = 2
    """float16 values."""


LAYOUTS = ("condensed", "block")
"""``condensed``: per-window distinct columns cut into tiles; ``block``: fixed 128-wide block columns."""
