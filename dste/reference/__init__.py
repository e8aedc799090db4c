"""NumPy/SciPy references of the DSTE format and kernels (the parity oracles).

They import nothing from ``dste``: every semantic is restated here from docs/CONTRACTS.md
(geometry in :mod:`dste.reference.layout`), so a parity test compares two independent
computations rather than the format's code with itself. Production code uses
``dste.format.quant`` / ``dste.format.bits``, never this package.
"""

from .bits import pack_mask, unpack_mask
from .gcn import gcn_normalization
from .masked_quant import ReferenceHybridRows, masked_quant_reference, quantize_rows_reference
from .quant import (
    dequantize_int8,
    int8_scale,
    int8_sensitivity,
    quantize_int8,
    round_half_even_saturate,
    to_fp16,
)
from .spmm import reference_matrix, spmm_error_bound, spmm_reference

__all__ = [
    "pack_mask",
    "unpack_mask",
    "round_half_even_saturate",
    "int8_scale",
    "quantize_int8",
    "dequantize_int8",
    "to_fp16",
    "int8_sensitivity",
    "reference_matrix",
    "spmm_reference",
    "spmm_error_bound",
    "gcn_normalization",
    "masked_quant_reference",
    "quantize_rows_reference",
    "ReferenceHybridRows",
]
