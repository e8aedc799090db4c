"""DSTE's NKI kernels and their host launchers.

Kernel files (import only ``nki``, ``nki.language``, ``nki.isa``; loaded per backend by ``device.py``):

- ``spmm_hybrid.py``: ``spmm_hybrid_kernel``, Y = A @ X for one fixed-shape launch.
- ``masked_quant.py``: ``masked_quant_kernel`` and ``quantize_rows_kernel``, the device-side encoders.

Host side (the names say what runs: ``launch_*`` plans, packs and launches a kernel):

- ``launch_spmm_hybrid(A, X, target=, profile=, lnc=, backend=)`` (``launch_spmm.py``),
  ``plan_launches(A, F, x_mode)`` and ``record_width(F)`` (the bytes of one hybrid-row X record)
  (``plan.py``), the per-call FP16-row correction pass of a hybrid X
  (``correction.py``).
- ``launch_masked_quant(values, keep, sensitivity, threshold)``, ``launch_quantize_rows(X, sensitivity,
  threshold)`` (``launch_quant.py``).
- ``estimate_spmm`` (traced whole-matrix cost; ``traces=`` a ``TraceBook`` keeps the traced shapes between calls),
  ``estimate_block_layout``, ``estimate_edge_gather`` (analytic baselines) (``cost.py``): every figure *modelled*.
- ``device.py``: where a launch runs (``nkisim`` simulator or a ``neuron`` device).

The torch ops over these are ``dste.spmm`` / ``torch.ops.dste.spmm_hybrid`` (``dste.bindings``); the host
encoder of hybrid rows is ``dste.quantize_rows`` (``dste.format``).
"""

from dste.kernels.plan import plan_launches, record_width

_LAZY = {
    "launch_spmm_hybrid": "dste.kernels.launch_spmm",
    "launch_masked_quant": "dste.kernels.launch_quant",
    "launch_quantize_rows": "dste.kernels.launch_quant",
    "estimate_spmm": "dste.kernels.cost",
    "estimate_block_layout": "dste.kernels.cost",
    "estimate_edge_gather": "dste.kernels.cost",
    "SpmmEstimate": "dste.kernels.cost",
    "TraceBook": "dste.kernels.cost",
}

__all__ = ["plan_launches", "record_width", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dste.kernels' has no attribute {name!r}")
