"""DSTE-compressed weight matrices for inference.

A linear map ``h -> h @ W`` (``W [in, out]``) is stored as the DSTE matrix of ``W^T [out, in]`` in the block
layout (fixed 128-wide block columns), with per-tile INT8 or FP16 values chosen by the sensitivity rule
(``S >= fp16_threshold`` -> FP16) and a magnitude keep-mask dropping the ``sparsity`` fraction of smallest
weights. It runs as ``(W^T_enc @ h^T)^T`` through ``dste.spmm``: the same op, values and masks as the adjacency.
"""

from __future__ import annotations

import numbers
import zlib

import numpy as np
import scipy.sparse as sp
import torch

from dste.bindings import DSTETensor, check_finite, spmm
from dste.bindings.backends import resolve_backend
from dste.checks import real_number

__all__ = ["CompressedWeight", "magnitude_keep_mask", "value_version", "INPUT_DTYPES"]

INPUT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
"""The dtypes of ``h`` a :class:`CompressedWeight` multiplies (the product keeps h's dtype; the kernel backends,
through ``dste.spmm``, take float32 and float64 only). An integer or bool ``h`` would cast the weight to its
dtype."""


def value_version(tensor: torch.Tensor) -> tuple[int, int, int]:
    """What identifies a weight's values for a copy made from them: the tensor, torch's count of in-place writes to
    it (an optimizer step and ``load_state_dict`` write in place; a new Parameter is a new tensor) and a CRC-32 of its
    bytes, since a write through ``.data`` (``p.data.copy_``, ``vector_to_parameters``) counts as no write. The CRC
    reads the tensor once: about 25 us for a 1,433 x 16 weight."""
    flat = tensor.detach().reshape(-1).cpu().contiguous()
    return id(tensor), tensor._version, zlib.crc32(flat.view(torch.uint8).numpy().data)


def magnitude_keep_mask(values: np.ndarray, sparsity: float) -> np.ndarray:
    """Boolean mask dropping ``floor(sparsity * size)`` entries of smallest magnitude and keeping the rest; among
    entries of equal magnitude at the cut the first in row-major order are dropped. (A cut by value dropped every
    entry tied with the cut-off: ``sparsity=0.1`` of an all-ones weight dropped all of it.)"""
    _check_sparsity(sparsity)
    magnitude = np.abs(values)
    n_drop = int(np.floor(sparsity * magnitude.size))
    keep = np.ones(magnitude.size, dtype=bool)
    if n_drop:
        keep[np.argsort(magnitude.ravel(), kind="stable")[:n_drop]] = False
    return keep.reshape(values.shape)


def _check_sparsity(sparsity) -> None:
    """A fraction in [0, 1): a real number, not a bool (True ran as 1) nor a string (which failed in Python's
    comparison words). The value itself is used as given, so a NumPy float32 keeps its own arithmetic."""
    if isinstance(sparsity, numbers.Real) and not isinstance(sparsity, (bool, np.bool_)):
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity must lie in [0, 1), got {sparsity!r}")
    real_number(sparsity, "sparsity")


def _check_input(h, in_features: int) -> None:
    if not isinstance(h, torch.Tensor):
        raise TypeError(f"input h must be a torch tensor [N, {in_features}], got {type(h).__name__}"
                        + ("; convert with torch.from_numpy(h)" if isinstance(h, np.ndarray) else ""))
    if h.dtype not in INPUT_DTYPES:
        allowed = ", ".join(str(dtype).removeprefix("torch.") for dtype in INPUT_DTYPES)
        raise TypeError(f"input h must be a floating-point tensor ({allowed}), got {h.dtype}; convert with "
                        "h.float()")
    if h.dim() != 2 or h.shape[1] != in_features:
        raise ValueError(f"input must be [N, {in_features}], got {tuple(h.shape)}")
    check_finite(h, "h")  # the ops' own check: skipped where torch traces (torch.compile, torch.jit.trace)


class CompressedWeight:
    """``W [in, out]`` encoded for inference; call it on ``h [N, in]`` to get ``h @ W_eff [N, out]``."""

    def __init__(self, weight: torch.Tensor, *, sparsity: float = 0.0, fp16_threshold: float | None = None):
        from dste.format.encoder import encode
        from dste.format.policy import EncodePolicy

        if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
            raise TypeError(f"weight must be a 2-D torch tensor [in, out], got {type(weight).__name__}")
        w_t = weight.detach().cpu().float().numpy().T.copy()  # [out, in]: the sparse operand of spmm
        if not np.isfinite(w_t).all():
            raise ValueError("weight contains NaN or Inf")
        _check_sparsity(sparsity)
        policy_fields = {"layout": "block", "kinds": "auto"}
        if fp16_threshold is not None:
            policy_fields["fp16_threshold"] = real_number(fp16_threshold, "fp16_threshold")
        policy = EncodePolicy(**policy_fields)
        # Encode the full structure and drop weights through the keep-mask, so a new sparsity level is a new
        # mask over the same quantized values.
        self.full = encode(sp.csr_matrix(w_t), policy=policy)
        keep = magnitude_keep_mask(w_t, sparsity) & (w_t != 0)
        self.matrix = self.full.with_mask(sp.csr_matrix(keep)) if sparsity > 0 else self.full
        self.tensor = DSTETensor(self.matrix)
        self.in_features, self.out_features = weight.shape
        self.sparsity = float(sparsity)

    def __call__(self, h: torch.Tensor, backend: str | None = None) -> torch.Tensor:
        """``h @ W_eff`` of ``h [N, in]``, a float tensor (:data:`INPUT_DTYPES`) of finite values."""
        _check_input(h, self.in_features)
        if resolve_backend(backend) == "cpu":
            # The host runs the weight product as a dense GEMM on the dequantized, masked weight: the same
            # values the kernel multiplies by, at BLAS speed (a CSR product with N columns is ~50x slower).
            return h @ self.dense_effective(h.dtype)
        return spmm(self.tensor, h.t().contiguous(), backend=backend).t()

    def dense_effective(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """:meth:`effective` as a contiguous tensor of ``dtype``, built once per dtype."""
        cache = self.__dict__.setdefault("_dense", {})
        if dtype not in cache:
            cache[dtype] = self.effective().to(dtype).contiguous()
        return cache[dtype]

    def dense_effective_transposed(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """:meth:`effective` transposed, ``[out, in]`` contiguous, built once per dtype: ``h @ this.t()`` is the
        layout of ``nn.Linear``'s own product, which this host's GEMM runs faster for narrow outputs than ``h @ W``
        with ``W [in, out]`` contiguous (one thread: 10,000 x 64 by 64 x 8 0.40 against 0.69 ms), in another
        summation order (other float32 bits)."""
        cache = self.__dict__.setdefault("_dense_transposed", {})
        if dtype not in cache:
            cache[dtype] = self.effective().t().to(dtype).contiguous()
        return cache[dtype]

    def effective(self) -> torch.Tensor:
        """The dequantized, masked weight ``[in, out]`` that inference multiplies by."""
        return self.tensor.to_dense().t()

    def nbytes(self) -> int:
        return int(self.matrix.nbytes()["device_total"])
