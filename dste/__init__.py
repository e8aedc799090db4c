"""DSTE: Dynamic Sparse Tensor Encoding for GNN inference on AWS NeuronCores.

Data flows one way: encode (``dste.format``) -> kernel (``dste.kernels``) ->
op (``dste.bindings``) -> layer (``dste.gnn``) -> controller (``dste.controller``).

The most used names are available here and resolved on first use, so that
``import dste`` stays cheap (torch is imported only when an op is needed)::

    import dste
    A = dste.gcn_normalized(adj_csr)        # DSTEMatrix: BIN tiles + D^-1/2 scales
    Y = dste.spmm(A, X)                     # torch op; backend from DSTE_BACKEND or backend=
"""

from importlib import import_module

__version__ = "0.1.0"

_LAZY = {
    "DSTEMatrix": "dste.format",
    "EncodePolicy": "dste.format",
    "HybridRows": "dste.format",
    "encode": "dste.format",
    "gcn_normalized": "dste.format",
    "quantize_rows": "dste.format",
    "spmm": "dste.bindings",
    "masked_quant": "dste.bindings",
    "DSTETensor": "dste.bindings",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dste' has no attribute {name!r}")


def __dir__():
    # The lazy names are attributes too: list them for dir() and tab completion before their first use.
    return sorted({*globals(), *_LAZY})
