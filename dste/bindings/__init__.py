"""Torch bindings of DSTE: the ``dste::spmm_hybrid`` / ``dste::masked_quant`` custom ops, backend selection,
the user-facing :func:`spmm`, and the :class:`DSTETensor` wrapper.

Importing this package registers the ops under ``torch.ops.dste``.
"""

from . import ops  # noqa: F401  (registers torch.ops.dste.*)
from .api import check_finite, is_hybrid_rows, masked_quant, spmm
from .backends import (
    BACKEND_ENV_VAR,
    BACKENDS,
    BackendUnavailableError,
    neuron_available,
    resolve_backend,
)
from .tensor import DSTETensor, as_dste_tensor, is_dste_matrix

__all__ = [
    "BACKENDS",
    "BACKEND_ENV_VAR",
    "BackendUnavailableError",
    "DSTETensor",
    "as_dste_tensor",
    "check_finite",
    "is_dste_matrix",
    "is_hybrid_rows",
    "masked_quant",
    "neuron_available",
    "resolve_backend",
    "spmm",
]
