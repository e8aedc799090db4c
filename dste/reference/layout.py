"""The fixed geometry and value kinds of the DSTE format, restated from docs/CONTRACTS.md.

The reference keeps its own copy (it imports nothing from ``dste``) so a wrong constant in
``dste.format.constants`` shows up as a parity failure instead of being shared by both sides;
tests/reference checks the two copies agree.
"""

WINDOW_ROWS = 128
"""Rows per row window (contract: ``WINDOW_ROWS``)."""

TILE_COLS = 128
"""Columns per bitmap tile, entries per entry tile (contract: ``TILE_COLS``)."""

MASK_WORD_BITS = 32
"""Bits per mask word (contract: ``MASK_WORD_BITS``)."""

MASK_WORDS = WINDOW_ROWS // MASK_WORD_BITS
"""Mask words per tile column or entry tile (contract: ``MASK_WORDS`` = 4)."""

INT8_QMAX = 127
"""Symmetric INT8 range [-127, 127] (contract: ``int8_scale`` = max|v| / 127)."""

FP16_MAX = 65504.0
"""Largest finite float16: float16 casts saturate here."""

KIND_BIN, KIND_INT8, KIND_FP16 = 0, 1, 2
"""``TileKind`` values (contract: ``BIN = 0``, ``INT8 = 1``, ``FP16 = 2``)."""
