"""`DSTETensor`: a torch-friendly view of an encoded ``DSTEMatrix``.

The wrapper carries the matrix's effective CSR in DSTE's encoded node order (``B = P_r A P_c^T``, int32
indices, see :mod:`dste.bindings.encoded_csr`) and the two permutations as torch tensors, built once when the
wrapper is made, plus a registry handle for the kernel backends. The wrapper owns them: keep one wrapper per
matrix and reuse it (``dste.spmm`` on a bare ``DSTEMatrix`` builds them on its first call and keeps them on the
matrix, see :func:`as_dste_tensor`). It is not a ``torch.Tensor``
subclass: it is a plain object whose tensor attributes ``torch.compile`` lifts as graph inputs, so
``A.spmm(x)`` or ``dste.spmm(A, x)`` inside a compiled function becomes one ``dste::spmm_hybrid`` node (also with
``fullgraph=True``). ``A @ x`` works too, but Dynamo cannot trace the ``@`` of a non-tensor object: it breaks the
graph there, and ``fullgraph=True`` refuses it.
"""

from __future__ import annotations

import sys

import numpy as np
import scipy.sparse as sp
import torch

from dste.checks import integer
from dste.format import DSTEMatrix
from dste.format.permutation import inverse_permutation

from . import encoded_csr, registry
from .csr_kernel import unread_rows
from .encoded_csr import build_encoded_csr, original_order_csr, original_order_operands

__all__ = ["DSTETensor", "is_dste_matrix", "as_dste_tensor"]


def is_dste_matrix(obj) -> bool:
    """True for a ``dste.format.DSTEMatrix`` (or an object with the same decoding interface)."""
    if isinstance(obj, DSTEMatrix):
        return True
    return hasattr(obj, "shape") and (hasattr(obj, "effective_csr") or hasattr(obj, "decode")) and not (
        isinstance(obj, (torch.Tensor, np.ndarray)) or sp.issparse(obj)
    )


class DSTETensor:
    """A DSTE-encoded sparse matrix ``A [N, M]`` usable from torch code.

    ``A @ x`` (``x`` a float32/float64 tensor ``[M, F]``, a NumPy array or ``HybridRows``) runs
    ``dste.spmm(A, x)`` with the default backend; ``.to_dense()`` returns the effective matrix as a float32
    tensor. The wrapper is read-only: a new keep-mask gives a new wrapper via :meth:`with_mask`.

    Op operands (what ``dste::spmm_hybrid`` takes, in this order; see :attr:`op_operands`):
    ``crow_indices``, ``col_indices`` (int32, or int64 past 2^31 - 1 entries) and ``values`` (float32) of the
    effective CSR in encoded order, ``row_perm`` / ``col_perm`` (int64, encoded position -> original id;
    empty when the matrix has no reordering).
    """

    def __init__(self, matrix):
        if isinstance(matrix, DSTETensor):  # a second wrapper of the same matrix shares the operands
            self.__dict__.update(matrix.__dict__)
            return
        if not is_dste_matrix(matrix):
            raise TypeError(
                f"DSTETensor wraps a dste.format.DSTEMatrix, got {type(matrix).__name__}; "
                "encode SciPy/NumPy/torch input with dste.format.encode() first"
            )
        self.matrix = matrix
        # plain tensors even when the first call comes inside a torch.func transform (grad, vmap), which would
        # wrap them, or under torch.inference_mode, which would make them inference tensors that no later call
        # with autograd could save for backward: the operands outlive the call, and their NumPy views need storage
        with torch._C._DisableFuncTorch(), torch.inference_mode(False):
            self._encoded = build_encoded_csr(matrix)
            self.crow_indices = self._encoded.crow_indices
            self.col_indices = self._encoded.col_indices
            self.values = self._encoded.values
            self.row_perm = self._encoded.row_perm
            self.col_perm = self._encoded.col_perm
            self._shape = torch.Size(int(s) for s in matrix.shape)
            self._add_host_views()
        self._operand_versions = self._current_operand_versions()
        self.handle = registry.register(matrix)

    @classmethod
    def kept_for(cls, matrix: DSTEMatrix) -> "DSTETensor":
        """A wrapper of ``matrix`` sharing the operands kept on it (built by the first call, see
        ``as_dste_tensor``). Kept per encoded-order rule (``encoded_csr.ORIGINAL_ORDER_MAX_COLS``,
        ``ROW_ORDER_MAX_COLS`` and ``REORDER_MIN_REUSE_GAIN``, which choose the operands' form). The kept state holds no reference to the matrix,
        so the matrix is freed as soon as it is unreferenced, and its operands with it."""
        key = ("dste.bindings.DSTETensor", encoded_csr.ORIGINAL_ORDER_MAX_COLS, encoded_csr.ROW_ORDER_MAX_COLS,
               encoded_csr.REORDER_MIN_REUSE_GAIN)
        state = matrix.derived(key, lambda: _untraced(_kept_state)(cls, matrix))
        wrapper = cls.__new__(cls)
        wrapper.__dict__.update(state)
        wrapper.matrix = matrix
        return wrapper

    def _current_operand_versions(self) -> tuple[int, ...]:
        return tuple(t._version for t in self.op_operands)

    def check_operands(self) -> None:
        """Refuse operands the wrapper cannot multiply by faithfully: ``values`` asking for a gradient (the ops have
        none for it) and operands written in place since the wrapper was built (torch's version counters). The
        operands are shared by every wrapper of the matrix and kept on it, so a write would change every later
        product of the matrix while its own arrays (``decode``, ``to_dense``, the kernel backends) keep the old
        one. Checked by ``dste.spmm`` on every call, outside ``torch.compile``."""
        if self.values.requires_grad:
            raise NotImplementedError(
                "DSTETensor.values requires grad, but DSTE's products have no gradient with respect to the matrix's "
                "values (only X's): the flag would be ignored. Detach them, or use a torch sparse tensor for "
                "learnable edge weights")
        if self._current_operand_versions() != self._operand_versions:
            raise RuntimeError(
                "a DSTETensor's operand tensors (crow_indices, col_indices, values, row_perm, col_perm) were written "
                "in place; an encoded matrix is immutable, and its products must match its arrays. Encode the new "
                "matrix (dste.format.encode, or .with_mask for a new keep-mask) instead of editing the operands")

    @property
    def op_operands(self) -> tuple[torch.Tensor, ...]:
        """``(crow_indices, col_indices, values, row_perm, col_perm)``: the matrix arguments of the ops."""
        return self.crow_indices, self.col_indices, self.values, self.row_perm, self.col_perm

    def _add_host_views(self) -> None:
        """What the cpu kernel takes, as views of the operand tensors (no copies): ``host_operands``, the five
        arrays in NumPy. Rebuilt after unpickling rather than pickled: pickled views would come back as copies."""
        self.host_operands = tuple(t.numpy() for t in self.op_operands)
        if "row_inverse" not in self.__dict__:  # absent from wrappers pickled before it was kept
            # the encoded position of each original row, for the original-order operands: built once
            self.row_inverse = torch.from_numpy(inverse_permutation(self.row_perm.numpy()))
        self.host_row_inverse = self.row_inverse.numpy()
        # other forms of the operands, built on first use (original_host_operands, unread_x_rows)
        self.host_forms = {}

    def original_host_operands(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``A``'s ``(indptr, indices, data)`` in original order (the operands' index dtype), built on the first call
        and kept: the eager product of a matrix in both orders with a small X
        (``encoded_csr.RC_ORIGINAL_ORDER_MAX_X_BYTES``). Each row holds its entries in the operands' order, so its
        product has the operands' bits."""
        held = self.host_forms.get("original")
        if held is None:
            held = self.host_forms["original"] = original_order_operands(self.host_operands, self.host_row_inverse)
        return held

    def unread_x_rows(self) -> np.ndarray:
        """The rows of X (original ids, int64) that no stored entry reads, built on the first call and kept: the
        eager product checks only these for NaN and Inf when its output is finite (``csr_kernel.unread_rows``)."""
        held = self.host_forms.get("unread")
        if held is None:
            indices, col_perm = self.host_operands[1], self.host_operands[4]
            held = unread_rows(indices, int(self._shape[1]))
            if col_perm.size:  # encoded column positions to original ids
                held = np.sort(col_perm[held])
            self.host_forms["unread"] = held
        return held

    def __getstate__(self):
        self.check_operands()  # a copy would start new version counters: an edited operand would pass for the matrix
        state = self.__dict__.copy()
        state.pop("host_operands", None)
        state.pop("host_row_inverse", None)
        state.pop("host_forms", None)
        state.pop("handle", None)  # registered anew on unpickling (__setstate__)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._add_host_views()
        self._operand_versions = self._current_operand_versions()
        # a handle is a key of this process's registry: the pickled one may name another matrix here, or none
        self.handle = registry.register(self.matrix)

    def resident_nbytes(self) -> int:
        """Bytes of the CPU operands this wrapper keeps alive (with the other forms built so far)."""
        forms = int(sum(array.nbytes for array in self.host_forms.get("original", ())))
        forms += int(self.host_forms["unread"].nbytes) if "unread" in self.host_forms else 0
        return self._encoded.nbytes() + forms

    # -- tensor-like metadata -------------------------------------------------------------------------------
    @property
    def shape(self) -> torch.Size:
        return self._shape

    def size(self, dim: int | None = None):
        if dim is None:
            return self.shape
        # IndexError, as torch's Tensor.size says it, for a dim outside the two (a bare tuple index gave no range)
        return self.shape[integer(dim, "dim (a DSTETensor is 2-D)", low=-2, high=1, error=IndexError)]

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def ndim(self) -> int:
        return 2

    def dim(self) -> int:
        return 2

    @property
    def nnz(self) -> int:
        """Number of stored entries of the effective matrix (kept entries, explicit zeros included)."""
        return int(self.values.shape[0])

    def to(self, device=None, dtype=None) -> "DSTETensor":
        """Only ``cpu``/``float32`` are possible: the encoded matrix lives on the host."""
        if device is not None and torch.device(device).type != "cpu":
            raise ValueError(
                f"a DSTETensor lives on the host (cpu); got device {device!r}. Kernel backends move the "
                "encoded tiles themselves: choose backend='neuron' instead of moving the tensor"
            )
        if dtype is not None and dtype != torch.float32:
            raise TypeError(f"a DSTETensor's effective values are float32; got dtype {dtype}")
        return self

    # -- operations ------------------------------------------------------------------------------------------
    def __matmul__(self, other):
        from .api import spmm

        return spmm(self, other)

    def spmm(self, other, backend: str | None = None):
        from .api import spmm

        return spmm(self, other, backend=backend)

    def to_dense(self) -> torch.Tensor:
        """The effective matrix (masks and scales applied) as a dense float32 tensor ``[N, M]``."""
        return torch.from_numpy(self.to_scipy().toarray())

    def to_scipy(self) -> sp.csr_matrix:
        """The effective matrix as a SciPy CSR float32 matrix in original coordinates (new arrays, column ids
        sorted within each row, as ``DSTEMatrix.effective_csr()``)."""
        return original_order_csr(self._encoded)

    def with_mask(self, keep) -> "DSTETensor":
        """A wrapper of ``matrix.with_mask(keep)`` (same values, new keep-mask)."""
        return DSTETensor(self.matrix.with_mask(keep))

    def nbytes(self, *args, **kwargs):
        return self.matrix.nbytes(*args, **kwargs)

    def __repr__(self) -> str:
        n, m = self.shape
        return f"DSTETensor(shape=({n}, {m}), nnz={self.nnz}, dtype=torch.float32, device='cpu')"




def _kept_state(cls, matrix) -> dict:
    """A new wrapper's state without the matrix (``DSTETensor.kept_for``)."""
    return {name: value for name, value in cls(matrix).__dict__.items() if name != "matrix"}


def _untraced(fn):
    """``fn`` run eagerly even when a ``torch.compile``'d caller makes the first call: tracing the operands' NumPy
    build failed deep inside the fake-tensor machinery. Dynamo is imported only once something compiles (see
    ``backends._assume_constant_result``), so before that ``fn`` is returned as it is."""
    if "torch._dynamo" not in sys.modules:
        return fn
    if torch.compiler.is_compiling():  # traced: refused plainly (fullgraph=True); otherwise Dynamo runs it eagerly
        raise RuntimeError(
            "dste.spmm on a DSTEMatrix whose CPU operands are not built yet, inside torch.compile(fullgraph=True): "
            "build them before compiling (one eager dste.spmm(A, x) call), or pass a DSTETensor(A) made outside")
    return torch.compiler.disable(fn, reason="dste builds a matrix's CPU operands eagerly, once per matrix")


def as_dste_tensor(a) -> DSTETensor:
    """``a`` if it is a DSTETensor, a wrapper if it is a DSTEMatrix; ``TypeError`` otherwise.

    A ``DSTEMatrix``'s wrapper operands are built on the first call and kept on the matrix
    (``DSTEMatrix.derived``), so ``dste.spmm(A, x)`` on a bare matrix pays for them once, not on every call; they
    are freed with the matrix."""
    if isinstance(a, DSTETensor):
        return a
    if isinstance(a, DSTEMatrix):
        return DSTETensor.kept_for(a)
    if is_dste_matrix(a):
        return DSTETensor(a)
    raise TypeError(
        f"A must be a dste.format.DSTEMatrix or a DSTETensor, got {type(a).__name__}; "
        "encode SciPy/NumPy/torch matrices with dste.format.encode() (or pass them to dste.gnn layers, "
        "which encode and cache them)"
    )
