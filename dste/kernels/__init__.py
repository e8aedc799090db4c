"""DSTE's NKI kernels and their host launchers.

- ``spmm_hybrid(A, X, target=, profile=)``, ``plan_launches(A, F, x_mode)``: Y = A @ X
  (kernel in ``spmm_hybrid_kernel.py``).
- ``masked_quant(values, keep, sensitivity, threshold)``, ``quantize_rows(X, sensitivity, threshold)``:
  the device-side encoders (kernels in ``masked_quant_kernel.py``).
- ``estimate_spmm``, ``estimate_block_layout``, ``estimate_edge_gather`` (``cost.py``): modelled
  whole-matrix cost from the launch plan, with the simulator's cost functions.

Kernel modules import ``nki``; the launchers install ``dste.nkisim`` under that name when the real
SDK is not importable, so importing this package never needs it.
"""

from dste.kernels.plan import plan_launches

_LAZY = {
    "spmm_hybrid": "dste.kernels.spmm_hybrid",
    "masked_quant": "dste.kernels.masked_quant",
    "quantize_rows": "dste.kernels.masked_quant",
    "estimate_spmm": "dste.kernels.cost",
    "estimate_block_layout": "dste.kernels.cost",
    "estimate_edge_gather": "dste.kernels.cost",
    "SpmmEstimate": "dste.kernels.cost",
}

__all__ = ["plan_launches", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dste.kernels' has no attribute {name!r}")
