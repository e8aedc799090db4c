"""The DSTE sparse format: 128-row windows of BIN / INT8 / FP16 tiles with a dynamic keep-mask.

Public API: :class:`DSTEMatrix`, :func:`encode`, :class:`EncodePolicy`,
:func:`gcn_normalized`, :func:`gcn_update`, :func:`update_windows`, :class:`HybridRows`,
:func:`quantize_rows`, :func:`save`, :func:`load`, the errors, and the constants of
:mod:`dste.format.constants`. Names are resolved on first use, so ``import dste.format`` stays
cheap. The quantization and mask-packing primitives are :mod:`dste.format.quant` and
:mod:`dste.format.bits`; ``dste.reference`` (the parity oracles) is independent of this package.
"""

from importlib import import_module

from dste.format.constants import (
    FORMAT_VERSION,
    MASK_WORD_BITS,
    MASK_WORDS,
    TILE_COLS,
    WINDOW_ROWS,
    TileKind,
)
from dste.format.errors import DSTEFileError, DSTEFormatError

_LAZY = {
    "DSTEMatrix": "dste.format.matrix",
    "EncodePolicy": "dste.format.policy",
    "encode": "dste.format.encoder",
    "update_windows": "dste.format.encoder",
    "gcn_normalized": "dste.format.gcn",
    "gcn_update": "dste.format.gcn",
    "IgnoredEdgeWeightsWarning": "dste.format.gcn",
    "HybridRows": "dste.format.hybrid_rows",
    "quantize_rows": "dste.format.hybrid_rows",
    "save": "dste.format.io",
    "load": "dste.format.io",
}

__all__ = [
    "WINDOW_ROWS",
    "TILE_COLS",
    "MASK_WORD_BITS",
    "MASK_WORDS",
    "FORMAT_VERSION",
    "TileKind",
    "DSTEFormatError",
    "DSTEFileError",
    *_LAZY,
]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dste.format' has no attribute {name!r}")
