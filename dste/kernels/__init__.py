"""DSTE's NKI kernels and their host launchers.

Kernels (import only ``nki``, ``nki.language``, ``nki.isa``):

- ``spmm_hybrid.py``: ``spmm_hybrid_kernel``, Y = A @ X for one fixed-shape launch.
- ``masked_quant.py``: ``masked_quant_kernel`` and ``quantize_rows_kernel``, the device-side encoders.

Host side:

- ``spmm_hybrid(A, X, target=, profile=)`` (``launch_spmm.py``), ``plan_launches(A, F, x_mode)`` (``plan.py``),
  the per-call FP16-row correction pass of a hybrid X (``correction.py``).
- ``masked_quant(values, keep, sensitivity, threshold)``, ``quantize_rows(X, sensitivity, threshold)``
  (``launch_masked_quant.py``).
- ``estimate_spmm``, ``estimate_block_layout``, ``estimate_edge_gather`` (``cost.py``): modelled
  whole-matrix cost from the launch plan, with the simulator's cost functions.

The package attributes ``spmm_hybrid`` and ``masked_quant`` are the launchers, even after the kernel
modules of the same names are imported (reach those with ``importlib.import_module``). The launchers
install ``dste.nkisim`` as ``nki`` when the real SDK is not importable, so importing this package never
needs it.
"""

import sys
import types

from dste.kernels.plan import plan_launches

_LAZY = {
    "spmm_hybrid": "dste.kernels.launch_spmm",
    "masked_quant": "dste.kernels.launch_masked_quant",
    "quantize_rows": "dste.kernels.launch_masked_quant",
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


class _KernelsPackage(types.ModuleType):
    """Importing a kernel submodule would bind its module object to the package attribute of the same
    name (``spmm_hybrid``, ``masked_quant``) and hide the launcher; keep the launcher instead."""

    def __setattr__(self, name, value):
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _KernelsPackage
