"""The DSTE sparse format: 128-row windows of BIN / INT8 / FP16 tiles with a dynamic keep-mask.

Public API: :class:`DSTEMatrix`, :func:`encode`, :class:`EncodePolicy`,
:func:`gcn_normalized`, :func:`gcn_update`, :class:`HybridRows`, :func:`quantize_rows`,
:func:`save`, :func:`load`, and the constants of :mod:`dste.format.constants`.
"""

from dste.format.constants import (
    FORMAT_VERSION,
    MASK_WORD_BITS,
    MASK_WORDS,
    TILE_COLS,
    WINDOW_ROWS,
    TileKind,
)
from dste.format.encode import encode, update_windows
from dste.format.errors import DSTEFileError, DSTEFormatError
from dste.format.gcn import gcn_normalized, gcn_update
from dste.format.hybrid_rows import HybridRows, quantize_rows
from dste.format.io import load, save
from dste.format.matrix import DSTEMatrix
from dste.format.policy import EncodePolicy

__all__ = [
    "WINDOW_ROWS",
    "TILE_COLS",
    "MASK_WORD_BITS",
    "MASK_WORDS",
    "FORMAT_VERSION",
    "TileKind",
    "DSTEMatrix",
    "EncodePolicy",
    "encode",
    "update_windows",
    "gcn_normalized",
    "gcn_update",
    "HybridRows",
    "quantize_rows",
    "save",
    "load",
    "DSTEFormatError",
    "DSTEFileError",
]
