"""``torch.library`` custom ops of DSTE: ``dste::spmm_hybrid`` and ``dste::masked_quant``.

Op boundary
-----------
Everything torch must reason about crosses the boundary as tensors:

``dste::spmm_hybrid(crow_indices, col_indices, values, row_perm, col_perm, x, handle, x_handle, backend) -> y``
    ``crow_indices [N+1]``, ``col_indices [nnz]`` (both int32, or both int64) and ``values float32 [nnz]`` are
    ``B``, the matrix's *effective* CSR (decoded INT8/FP16/BIN values with the keep-mask and row/column scales
    applied: exactly what the kernel multiplies) in DSTE's encoded order: ``B[i, j] = A[row_perm[i],
    col_perm[j]]``. ``row_perm int64 [N]`` / ``col_perm int64 [M]`` map encoded positions to original ids;
    an empty tensor means the identity. ``x float32/float64 [M, F]`` is the dense operand in original order
    (hybrid-row X is passed dequantized). ``y [N, F]`` = A @ X in original order, with ``x``'s dtype; the cpu
    backend computes ``y[row_perm] = B @ x[col_perm]`` (see :mod:`dste.bindings.encoded_csr`). N comes from
    ``crow_indices`` and M, F from ``x``, so the fake (meta) implementation needs no host object and works
    with symbolic shapes.
    ``handle`` / ``x_handle`` are integer keys into :mod:`dste.bindings.registry` naming the encoded
    ``DSTEMatrix`` / ``HybridRows`` that the kernel backends (``nkisim``, ``neuron``) launch on. The ``cpu``
    backend never reads them, so opcheck, fake tensors, autograd and ``torch.compile(fullgraph=True)`` see a
    purely functional op over tensors; a handle is a plain int (a SymInt under dynamic shapes, never
    specialised on by the op). A NaN/Inf in X that the product reads is refused on every backend, and so are
    NaN/Inf ``values`` and a ``crow_indices`` that does not run from 0 to nnz without decreasing (its entries past
    the last pointer would be left out); col_indices are checked against M. Autograd:
    the gradient with respect to ``x`` only (``values`` requiring grad is refused); no forward-mode formula, so a
    dual ``x`` is refused (``dste.spmm`` gives the tangent ``A @ T`` itself).

``dste::spmm_transpose(crow_indices, col_indices, values, row_perm, col_perm, grad, m) -> A^T @ grad``
    The backward of ``spmm_hybrid`` with respect to ``x``: ``dx[col_perm] = B^T @ grad[row_perm]`` (always
    executed on the CSR tensors; the kernels have no transposed variant). Differentiable itself, so double
    backward works.

``dste::masked_quant(values, keep, sensitivity, threshold, backend) -> 5 tensors``
    The device-side encoder with static output shapes (a per-tile dense layout: every tile gets an INT8 and an
    FP16 slab, zeros where the tile is of the other kind); :func:`dste.bindings.masked_quant` compacts them to
    the ``DSTEMatrix`` slot layout. ``keep_bits`` is returned as ``int32`` holding the ``uint32`` bit pattern
    (torch has few ``uint32`` kernels); the wrapper views it back as ``uint32``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor

from dste.format.permutation import is_permutation

from . import registry
from .backends import BackendUnavailableError
from .csr_kernel import check_csr_ids
from .encoded_csr import encoded_product, encoded_spmm_transpose

__all__ = ["spmm_hybrid", "spmm_transpose", "masked_quant_op", "TILE"]

TILE = 128  # rows per window / columns per tile (WINDOW_ROWS == TILE_COLS in dste.format.constants)
MASK_WORDS = 4  # uint32 words per 128-row mask column
OP_BACKENDS = ("cpu", "nkisim", "neuron")
_INDEX_DTYPES = (torch.int32, torch.int64)
_VALUE_DTYPES = (torch.float16, torch.float32, torch.float64)  # bfloat16 has no NumPy dtype for the CPU path


def _check_backend(backend: str) -> None:
    if backend not in OP_BACKENDS:
        raise ValueError(
            f"dste op backend must be one of {OP_BACKENDS} (resolve 'auto' first with "
            f"dste.bindings.resolve_backend), got {backend!r}"
        )


def _check_csr_operands(crow: Tensor, col: Tensor, values: Tensor, row_perm: Tensor, col_perm: Tensor,
                        dense: Tensor, m: int, what: str) -> None:
    for tensor, name in ((crow, "crow_indices"), (col, "col_indices"), (values, "values"), (row_perm, "row_perm"),
                         (col_perm, "col_perm"), (dense, what)):
        if tensor.layout != torch.strided:  # a sparse x crashed in .contiguous() with torch's own message
            raise ValueError(f"{name} must be a dense (strided) tensor, got layout {tensor.layout}")
    if crow.dim() != 1 or crow.shape[0] < 1 or crow.dtype not in _INDEX_DTYPES:
        raise ValueError(f"crow_indices must be int32 or int64 [N+1], got {crow.dtype} {tuple(crow.shape)}")
    if col.dim() != 1 or col.dtype != crow.dtype:
        raise ValueError(
            f"col_indices must be 1-D [nnz] with the dtype of crow_indices ({crow.dtype}), "
            f"got {col.dtype} {tuple(col.shape)}"
        )
    if values.dim() != 1 or values.shape[0] != col.shape[0] or values.dtype not in _VALUE_DTYPES:
        raise ValueError(
            f"values must be a float16/float32/float64 [nnz={col.shape[0]}] tensor, got {values.dtype} "
            f"{tuple(values.shape)}"
        )
    if dense.dim() != 2 or dense.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{what} must be float32/float64 [rows, F], got {dense.dtype} {tuple(dense.shape)}")
    n = crow.shape[0] - 1
    for perm, length, name in ((row_perm, n, "row_perm"), (col_perm, m, "col_perm")):
        if perm.dtype != torch.int64 or perm.dim() != 1 or perm.shape[0] not in (0, length):
            raise ValueError(
                f"{name} must be int64 [{length}] (or empty for the identity), got {perm.dtype} {tuple(perm.shape)}"
            )
        _check_permutation(_numpy(perm), name)
    crow_ids = _numpy(crow)
    if crow_ids[0] != 0:  # the forward dropped the entries before it, and the backward (SciPy) refused the operands
        raise ValueError(f"crow_indices must start at 0, got {int(crow_ids[0])}")
    # the compiled product and SciPy's transpose read X (write dX) at these ids unchecked: one pass per call
    check_csr_ids(crow_ids, _numpy(col), m, names=("crow_indices", "col_indices"))
    if crow_ids[-1] != col.shape[0]:  # the entries past it were dropped without a word
        raise ValueError(
            f"crow_indices must end at nnz = {col.shape[0]} (the length of col_indices and values: every entry in "
            f"a row), got {int(crow_ids[-1])}"
        )


def _check_values_finite(values: np.ndarray) -> None:
    """Refuse NaN/Inf ``values``: two vectorised reductions, no temporary (NumPy's min and max propagate NaN)."""
    if values.size and not (np.isfinite(values.min()) and np.isfinite(values.max())):
        raise ValueError("values contains NaN or Inf; the DSTE ops take finite values only")


def _check_permutation(perm: np.ndarray, name: str) -> None:
    """An empty array, or every id of ``0..len - 1`` once: a repeated id would leave rows of Y unwritten."""
    if not is_permutation(perm, perm.size):
        raise ValueError(f"{name} must be a permutation of 0..{perm.size - 1} (or empty for the identity)")


def _refuse_dual(t: Tensor, op: str, name: str) -> None:
    """The ops have no forward-mode AD formula, and torch drops the tangent of an input that does not require grad
    (its output would read as having tangent zero): refuse a dual operand instead."""
    if fwAD._current_level >= 0 and fwAD.unpack_dual(t).tangent is not None:
        raise NotImplementedError(
            f"dste::{op} has no forward-mode AD formula and {name} is a dual tensor; call dste.spmm, which gives "
            "the tangent of A @ X as A @ T"
        )


def _refuse_values_gradient(values: Tensor, op: str) -> None:
    if values.requires_grad:
        raise NotImplementedError(
            f"dste::{op} has no gradient with respect to the matrix's values (only X's); detach them, or use a "
            "torch sparse tensor for learnable edge weights"
        )


def _check_x_finite(x: np.ndarray, product_finite: bool) -> None:
    """Refuse NaN/Inf X, as dste.spmm and the kernel backends do. A finite product proves every row of X it reads
    finite, so X is scanned only when the product is not finite (X's rows that no entry reads go unchecked here;
    dste.spmm checks them before an eager call)."""
    if not product_finite and x.size and not (np.isfinite(x.min()) and np.isfinite(x.max())):
        raise ValueError("X contains NaN or Inf; the DSTE ops take finite values only")


def _numpy(t: Tensor) -> np.ndarray:
    return t.detach().cpu().contiguous().numpy()


def _check_handles_match(matrix, operand, operands, x: Tensor, handle: int, x_handle: int) -> None:
    """The kernel multiplies the objects the handles name, the backward the CSR operands: a handle of another
    matrix (or X) would give a forward of one product and a gradient of another. The CSR operands must equal the
    effective CSR of the matrix ``handle`` names (as ``DSTETensor`` builds it, kept on the matrix), and a dense ``x``
    the dequantized hybrid rows ``x_handle`` names, element for element: O(entries), nothing beside a simulated
    launch."""
    from .tensor import DSTETensor  # the wrapper builds (and keeps) the operands this matrix's calls pass

    n, m = operands[0].shape[0] - 1, x.shape[0]
    if tuple(int(s) for s in matrix.shape) != (n, m):
        raise ValueError(
            f"handle {int(handle)} names a matrix of shape {tuple(matrix.shape)}, but the CSR operands and x "
            f"describe [{n}, {m}]: pass the handle of the matrix the operands were built from (DSTETensor.handle, "
            "with DSTETensor.op_operands)"
        )
    expected = DSTETensor.kept_for(matrix).op_operands
    names = ("crow_indices", "col_indices", "values", "row_perm", "col_perm")
    for name, given, own in zip(names, operands, expected):
        if given is not own and not (given.shape == own.shape and torch.equal(given.to(own.dtype), own)):
            raise ValueError(
                f"handle {int(handle)} names a matrix whose {name} differ from the {name} passed: pass the handle of "
                "the matrix the operands were built from (DSTETensor.handle, with DSTETensor.op_operands)"
            )
    if x_handle == registry.NO_HANDLE:
        return
    if tuple(np.shape(operand.q)) != tuple(x.shape):
        raise ValueError(
            f"x_handle {int(x_handle)} names a hybrid-row X of shape {tuple(np.shape(operand.q))}, but x is "
            f"{tuple(x.shape)}: x must be that object's dequantize()"
        )
    if not np.array_equal(x.detach().cpu().numpy(), operand.dequantize()):
        raise ValueError(
            f"x_handle {int(x_handle)} names a hybrid-row X whose dequantize() differs from the x passed: x must be "
            "that object's dequantize() (the kernel reads the hybrid rows, the gradient the dense x)"
        )


def _run_kernel_spmm(handle: int, x_handle: int, x: Tensor, backend: str, operands: tuple[Tensor, ...]) -> Tensor:
    if handle == registry.NO_HANDLE:
        raise ValueError(
            f"backend {backend!r} runs the NKI kernel and needs the encoded DSTEMatrix: pass a registered "
            "handle (dste.spmm and DSTETensor do this)"
        )
    matrix = registry.lookup(handle)
    operand = registry.lookup(x_handle) if x_handle != registry.NO_HANDLE else x.detach().cpu().numpy()
    _check_handles_match(matrix, operand, operands, x, handle, x_handle)
    # A dense X the kernel's bf16 gather would round to Inf is refused by the launcher (BF16_ROUNDS_TO_INF).
    from dste.kernels.launch_spmm import launch_spmm_hybrid as kernel_spmm

    if x.shape[1] == 0:  # Y = A @ X of no columns, as the cpu backend gives it; no kernel launch has F = 0
        return torch.zeros((matrix.shape[0], 0), dtype=x.dtype)
    y = kernel_spmm(matrix, operand, backend=backend)  # the launcher loads the kernel file against the simulator
    y = np.asarray(y, dtype=np.float32)
    expected = (matrix.shape[0], x.shape[1])
    if y.shape != expected:
        raise RuntimeError(f"kernel returned shape {y.shape}, expected {expected}")
    return torch.from_numpy(np.ascontiguousarray(y)).to(x.dtype)


@torch.library.custom_op("dste::spmm_hybrid", mutates_args=())
def spmm_hybrid(
    crow_indices: Tensor,
    col_indices: Tensor,
    values: Tensor,
    row_perm: Tensor,
    col_perm: Tensor,
    x: Tensor,
    handle: int,
    x_handle: int,
    backend: str,
) -> Tensor:
    """Y = A @ X for A given by its encoded-order effective CSR (see module docstring); Y has X's dtype."""
    _check_backend(backend)
    _check_csr_operands(crow_indices, col_indices, values, row_perm, col_perm, x, x.shape[0], "x")
    _refuse_dual(x, "spmm_hybrid", "x")
    host_values = _numpy(values)
    if backend != "cpu":
        _check_values_finite(host_values)
        return _run_kernel_spmm(handle, x_handle, x, backend, (crow_indices, col_indices, values, row_perm, col_perm))
    x_values = _numpy(x)
    y, finite = encoded_product(
        _numpy(crow_indices), _numpy(col_indices), host_values, _numpy(row_perm), _numpy(col_perm), x_values
    )
    if not finite or not x_values.shape[1]:
        # a finite product of at least one column proves every value finite (each entry multiplies some x: a NaN
        # value gives NaN, an infinite one Inf or, times 0, NaN), so values are scanned only otherwise
        _check_values_finite(host_values)
    _check_x_finite(x_values, finite)
    return torch.from_numpy(y)


@spmm_hybrid.register_fake
def _spmm_hybrid_fake(crow_indices, col_indices, values, row_perm, col_perm, x, handle, x_handle, backend):
    torch._check(crow_indices.dim() == 1, lambda: "crow_indices must be 1-D")
    torch._check(x.dim() == 2, lambda: "x must be 2-D [M, F]")
    return x.new_empty((crow_indices.shape[0] - 1, x.shape[1]))


@torch.library.custom_op("dste::spmm_transpose", mutates_args=())
def spmm_transpose(
    crow_indices: Tensor, col_indices: Tensor, values: Tensor, row_perm: Tensor, col_perm: Tensor, grad: Tensor, m: int
) -> Tensor:
    """A^T @ grad for A [N, m] in encoded-order CSR form; the X-gradient of ``spmm_hybrid``."""
    _check_csr_operands(crow_indices, col_indices, values, row_perm, col_perm, grad, m, "grad")
    if grad.shape[0] != crow_indices.shape[0] - 1:
        raise ValueError(f"grad has {grad.shape[0]} rows, A has {crow_indices.shape[0] - 1}")
    _refuse_dual(grad, "spmm_transpose", "grad")
    _check_values_finite(_numpy(values))
    dx = encoded_spmm_transpose(
        _numpy(crow_indices), _numpy(col_indices), _numpy(values), _numpy(row_perm), _numpy(col_perm),
        _numpy(grad), m,
    )
    return torch.from_numpy(dx)


@spmm_transpose.register_fake
def _spmm_transpose_fake(crow_indices, col_indices, values, row_perm, col_perm, grad, m):
    return grad.new_empty((m, grad.shape[1]))


def _spmm_setup_context(ctx, inputs, output):
    crow_indices, col_indices, values, row_perm, col_perm, x, _handle, _x_handle, _backend = inputs
    _refuse_values_gradient(values, "spmm_hybrid")
    ctx.save_for_backward(crow_indices, col_indices, values, row_perm, col_perm)
    ctx.m = x.shape[0]


def _spmm_backward(ctx, grad_out):
    operands = ctx.saved_tensors
    grad_x = None
    if ctx.needs_input_grad[5]:
        grad_x = torch.ops.dste.spmm_transpose(*operands, grad_out, ctx.m)
    return None, None, None, None, None, grad_x, None, None, None


spmm_hybrid.register_autograd(_spmm_backward, setup_context=_spmm_setup_context)


def _transpose_setup_context(ctx, inputs, output):
    crow_indices, col_indices, values, row_perm, col_perm, _grad, _m = inputs
    _refuse_values_gradient(values, "spmm_transpose")
    ctx.save_for_backward(crow_indices, col_indices, values, row_perm, col_perm)


def _transpose_backward(ctx, grad_out):
    operands = ctx.saved_tensors
    grad_grad = None
    if ctx.needs_input_grad[5]:
        grad_grad = torch.ops.dste.spmm_hybrid(
            *operands, grad_out, registry.NO_HANDLE, registry.NO_HANDLE, "cpu"
        )
    return None, None, None, None, None, grad_grad, None


spmm_transpose.register_autograd(_transpose_backward, setup_context=_transpose_setup_context)


# -- masked_quant --------------------------------------------------------------------------------------------


def _expand_slots(kind: np.ndarray, wanted_kind: int, compact: np.ndarray, fill_shape, dtype) -> np.ndarray:
    """Per-tile dense array from the encoder's output: already per tile (``[T, ...]``, what the reference and
    kernel return) or slot-compacted (the tiles of ``wanted_kind`` in tile order)."""
    if compact.shape[0] == kind.shape[0] and compact.shape[1:] == tuple(fill_shape):
        return np.ascontiguousarray(compact, dtype=dtype)
    dense = np.zeros((kind.shape[0],) + tuple(fill_shape), dtype=dtype)
    tiles = np.flatnonzero(kind == wanted_kind)
    if tiles.size != compact.shape[0]:
        raise RuntimeError(
            f"encoder returned {compact.shape[0]} slots for {tiles.size} tiles of kind {wanted_kind}"
        )
    dense[tiles] = compact
    return dense


def _run_masked_quant(values: np.ndarray, keep: np.ndarray, sensitivity: np.ndarray, threshold: float, backend):
    if backend == "cpu":
        from dste.format.quant import masked_quant_host

        return masked_quant_host(values, keep, sensitivity, threshold)
    from dste.kernels.launch_quant import launch_masked_quant as encoder

    return encoder(values, keep, sensitivity, threshold, backend=backend)


@torch.library.custom_op("dste::masked_quant", mutates_args=())
def masked_quant_op(
    values: Tensor, keep: Tensor, sensitivity: Tensor, threshold: float, backend: str
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Encode dense tiles ``values float32 [T,128,128]`` under ``keep bool [T,128,128]``.

    Returns per-tile dense outputs ``(keep_bits int32 [T,128,4], kind uint8 [T], int8_values int8 [T,128,128],
    int8_scale float32 [T], fp16_values float16 [T,128,128])``; see the module docstring.
    """
    _check_backend(backend)
    if values.dim() != 3 or tuple(values.shape[1:]) != (TILE, TILE) or values.dtype != torch.float32:
        raise ValueError(f"values must be float32 [T, {TILE}, {TILE}], got {values.dtype} {tuple(values.shape)}")
    if keep.shape != values.shape or keep.dtype != torch.bool:
        raise ValueError(f"keep must be bool {tuple(values.shape)}, got {keep.dtype} {tuple(keep.shape)}")
    if sensitivity.shape != values.shape[:1] or not sensitivity.is_floating_point():
        raise ValueError(f"sensitivity must be float [{values.shape[0]}], got {tuple(sensitivity.shape)}")
    keep_bits, kind, int8_values, int8_scale, fp16_values = _run_masked_quant(
        values.detach().cpu().numpy(),
        keep.cpu().numpy(),
        sensitivity.detach().cpu().numpy().astype(np.float32),
        float(threshold),
        backend,
    )
    kind = np.asarray(kind, dtype=np.uint8)
    int8_dense = _expand_slots(kind, 1, np.asarray(int8_values, np.int8), (TILE, TILE), np.int8)
    scale_dense = _expand_slots(kind, 1, np.asarray(int8_scale, np.float32), (), np.float32)
    fp16_dense = _expand_slots(kind, 2, np.asarray(fp16_values, np.float16), (TILE, TILE), np.float16)
    bits = np.ascontiguousarray(np.asarray(keep_bits, dtype=np.uint32)).view(np.int32)
    return (
        torch.from_numpy(bits.copy()),
        torch.from_numpy(kind.copy()),
        torch.from_numpy(int8_dense),
        torch.from_numpy(scale_dense),
        torch.from_numpy(fp16_dense),
    )


@masked_quant_op.register_fake
def _masked_quant_fake(values, keep, sensitivity, threshold, backend):
    tiles = values.shape[0]
    return (
        values.new_empty((tiles, TILE, MASK_WORDS), dtype=torch.int32),
        values.new_empty((tiles,), dtype=torch.uint8),
        values.new_empty((tiles, TILE, TILE), dtype=torch.int8),
        values.new_empty((tiles,), dtype=torch.float32),
        values.new_empty((tiles, TILE, TILE), dtype=torch.float16),
    )
