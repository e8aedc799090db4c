"""NumPy/SciPy references of the DSTE format and kernels (the parity oracles).

Independent of ``dste.kernels``. ``spmm`` and ``masked_quant`` are imported on
demand to keep ``dste.format`` -> ``dste.reference.bits/quant`` import order acyclic.
"""

from dste.reference.bits import pack_mask, unpack_mask
from dste.reference.quant import (
    dequantize_int8,
    int8_scale,
    quantize_int8,
    round_half_even_saturate,
)

__all__ = [
    "pack_mask",
    "unpack_mask",
    "round_half_even_saturate",
    "int8_scale",
    "quantize_int8",
    "dequantize_int8",
    "spmm_reference",
    "masked_quant_reference",
    "quantize_rows_reference",
]


def __getattr__(name):
    if name == "spmm_reference":
        from dste.reference.spmm import spmm_reference

        return spmm_reference
    if name in ("masked_quant_reference", "quantize_rows_reference"):
        from dste.reference import masked_quant

        return getattr(masked_quant, name)
    raise AttributeError(name)
