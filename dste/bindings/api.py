"""User-facing entry points: :func:`spmm` and :func:`masked_quant`."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD

from dste.checks import real_number
from dste.format import HybridRows
from dste.format.constants import FP16_MAX
from dste.format.quant import hi_index_of

from . import ops, registry
from .backends import KERNEL_BACKENDS, resolve_backend
from .encoded_csr import eager_spmm
from .tensor import DSTETensor, as_dste_tensor

__all__ = ["spmm", "masked_quant", "is_hybrid_rows", "check_finite"]

_X_DTYPES = (torch.float32, torch.float64)
_AUTOCAST_DTYPES = (torch.float16, torch.bfloat16)  # cast to float32 under torch.autocast


def float32_under_autocast(x: torch.Tensor) -> torch.Tensor:
    """``x`` as float32 when ``torch.autocast`` made it float16/bfloat16 (autocast's float32 policy: the sparse
    product runs in float32, and the gradient flows back through the cast); ``x`` itself otherwise."""
    if x.dtype in _AUTOCAST_DTYPES and torch.is_autocast_enabled(x.device.type):
        return x.float()
    return x


def is_hybrid_rows(obj) -> bool:
    """True for a ``dste.format.HybridRows`` (or an object with its fields and ``dequantize``)."""
    if isinstance(obj, HybridRows):
        return True
    return all(hasattr(obj, name) for name in ("q", "scale", "hi_rows", "hi", "dequantize"))


def _as_hybrid_rows(rows) -> HybridRows:
    """An object with HybridRows' fields (``is_hybrid_rows``) as the ``HybridRows`` the kernel launchers take:
    validated, its ``hi_index`` rebuilt from ``hi_rows`` (FP16 rows their position, INT8 rows the FP16 count)."""
    q, hi_rows = np.asarray(rows.q), np.asarray(rows.hi_rows)
    if q.ndim != 2 or hi_rows.ndim != 1 or hi_rows.dtype.kind not in "iu" or (
            hi_rows.size and (hi_rows.min() < 0 or hi_rows.max() >= q.shape[0])):
        raise ValueError(f"hybrid-row X of type {type(rows).__name__}: q must be [M, F] and hi_rows row ids in "
                         f"[0, M); got q {q.shape}, hi_rows {hi_rows.dtype} {hi_rows.shape}")
    return HybridRows(q=q, scale=np.asarray(rows.scale), hi_rows=hi_rows.astype(np.int32), hi=np.asarray(rows.hi),
                      hi_index=hi_index_of(hi_rows, q.shape[0])).validate()


def _all_finite(x: torch.Tensor) -> bool:
    """No NaN and no Inf in ``x``.

    On one thread: a finite sum (one pass of torch's vectorised reduction) proves every value finite, since a
    NaN or Inf anywhere makes the sum NaN or Inf; only a non-finite sum (which finite values can also give, by
    overflowing) is checked exactly. Interleaved with products, so X is not cache-resident: 10k x 128 float32
    66 us against 124 us for the exact check, arxiv-scale 2.6 against 5.6 ms.
    With more threads, torch's reduction enters its thread pool, which on a loaded 2-core machine waited 4-8 ms
    per call; then the exact check alone. It is NumPy's min and max, both finite exactly when every element is
    (they propagate NaN): two vectorised reductions on a view, no temporary and no thread-pool entry
    (arxiv-scale X [169343, 128] float32 on 2 cores: 4.6 ms, against 148 ms for ``torch.isfinite(x).all()`` and
    9.3 ms for ``np.isfinite(x).all()``).
    """
    if torch._C._functorch.is_functorch_wrapped_tensor(x):  # under torch.func: its values have no storage
        return _all_finite_unwrapped(x)
    if x.layout == torch.sparse_coo:  # a sparse tensor's stored values are all it holds besides zeros
        x = x._values()
    elif x.layout != torch.strided:
        x = x.values()
    if x.numel() == 0:
        return True
    if torch.get_num_threads() == 1 and math.isfinite(x.detach().sum().item()):
        return True
    if x.dtype == torch.bfloat16:  # NumPy has no bfloat16
        return bool(torch.isfinite(x).all())
    values = x.detach().numpy()
    return bool(np.isfinite(values.min()) and np.isfinite(values.max()))


def _all_finite_unwrapped(x: torch.Tensor) -> bool:
    """:func:`_all_finite` of a tensor that ``torch.func`` (grad, vmap, jvp) wraps: the plain tensor under the
    wrappers holds every value (all of a vmap's batch), read with the transforms' dispatch switched off."""
    with torch._C._DisableFuncTorch():
        while torch._C._functorch.is_functorch_wrapped_tensor(x):
            x = torch._C._functorch.get_unwrapped(x)
        return _all_finite(x)


def check_finite(x: torch.Tensor, what: str) -> None:
    """Refuse NaN or Inf in ``x`` (dense or sparse, any float dtype, under ``torch.func`` too), naming it ``what``:
    the ops' own check, for callers that multiply outside them.

    A data-dependent check cannot be traced (torch.compile with fullgraph=True, torch.jit.trace): there it is
    skipped, and the op itself refuses a non-finite X that its product reads (ops._check_x_finite)."""
    if not torch.compiler.is_compiling() and not torch.jit.is_tracing() and not _all_finite(x):
        raise ValueError(f"{what} contains NaN or Inf; the DSTE ops take finite values only")


def _dense_operand(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        if x.layout != torch.strided:
            raise TypeError(f"X must be a dense (strided) tensor, got layout {x.layout}; call .to_dense()")
        if x.device.type == "meta":
            raise ValueError("X is on the meta device (shapes without values); DSTE ops compute on host (cpu) "
                             "tensors: A @ X of a meta X has shape [A.shape[0], X.shape[1]]")
        if x.device.type != "cpu":
            raise ValueError(
                f"X is on device {x.device}; DSTE ops take host (cpu) tensors and move data to the "
                "NeuronCore themselves. Call x.cpu()"
            )
        x = float32_under_autocast(x)
        if x.dtype not in _X_DTYPES:
            raise TypeError(f"X must be float32 or float64, got {x.dtype}; convert with x.float()")
        return x
    if isinstance(x, np.ndarray):
        if x.dtype.kind != "f" or x.dtype.itemsize not in (4, 8):
            raise TypeError(f"X must be float32 or float64, got numpy {x.dtype}; use x.astype(np.float32)")
        if not x.dtype.isnative:  # a big-endian float32 is still float32
            x = x.astype(x.dtype.newbyteorder("="))
        x = np.ascontiguousarray(x)
        if any(stride < 0 for stride in x.strides):  # a size-1 axis keeps a negative stride and C-contiguity
            x = x.copy()
        return torch.from_numpy(x)
    raise TypeError(
        f"X must be a torch tensor, a NumPy array or dste.format.HybridRows, got {type(x).__name__}"
    )


def _plain_eager_call(x: torch.Tensor) -> bool:
    """True when calling the cpu op's implementation directly is indistinguishable from dispatching the op.

    The op's dispatch (torch.library's Python custom-op layers, the operand checks of tensors the wrapper built
    itself, six tensor -> NumPy conversions) cost ~0.1 ms per call, as much as a 5k-node product at F = 32.
    Whenever torch would do something with the op call itself it goes through the op: under
    ``torch.compile`` or ``torch.jit.trace`` (which would record the product as a constant), with autograd
    recording (``x`` needs a gradient), for tensor subclasses (fake, functional, functorch-wrapped tensors), under
    an active torch function or dispatch mode, and while the autograd profiler records ops.
    """
    return (
        type(x) is torch.Tensor
        and not (x.requires_grad and torch.is_grad_enabled())
        and not torch.compiler.is_compiling()
        and not torch.jit.is_tracing()
        and not torch._C._is_torch_function_mode_enabled()
        and torch._C._len_torch_dispatch_stack() == 0
        and not torch.autograd._profiler_enabled()
        and not torch._C._functorch.is_functorch_wrapped_tensor(x)
    )


def _eager_cpu_product(a: DSTETensor, x) -> torch.Tensor | None:
    """``A @ X`` for the commonest call -- X a float32/float64 cpu tensor ``[M, F]``, a plain eager call (see
    :func:`_plain_eager_call`) -- refusing a non-finite X as the general path does, and nothing else; None for any
    other call, which the general path validates with its own errors. The general path's layers around the
    same product cost ~15 us of a 0.27 ms call at 5k nodes, F = 32 (one thread, interleaved).

    The finiteness check of X is the product's own: the compiled kernel reports whether every output value is
    finite, which proves every X row it reads finite (``csr_kernel.unread_rows``), so only the rows no entry reads
    are checked apart (none where every node has a self-loop), and all of X exactly only when the output is not
    finite (a NaN or Inf in X, or finite values whose products overflow). A separate pass over X cost 3-4 us of
    a 33 us call (1k nodes, F = 16, one thread)."""
    if not (type(x) is torch.Tensor and x.dtype in _X_DTYPES and x.layout == torch.strided and x.is_cpu
            and x.dim() == 2 and x.shape[0] == a.shape[1] and _plain_eager_call(x)):
        return None
    if x.requires_grad:  # grad mode is off here (a plain eager call); NumPy conversions refuse the flag
        x = x.detach()
    if not x.is_contiguous():
        x = x.contiguous()
    y, finite = eager_spmm(a.host_operands, x, a.original_host_operands)
    if not (finite and _rows_finite(x, a.unread_x_rows())) and not _all_finite(x):
        raise ValueError("X contains NaN or Inf; the DSTE ops take finite values only")
    return y


def _rows_finite(x: torch.Tensor, rows: np.ndarray) -> bool:
    """No NaN and no Inf in the rows ``rows`` of ``x``."""
    return not rows.size or _all_finite(x[torch.from_numpy(rows)])


def spmm(A, X, backend: str | None = None) -> torch.Tensor:
    """Y = A @ X with A a ``DSTEMatrix`` or ``DSTETensor`` ``[N, M]`` and X ``[M, F]``.

    X may be a float32/float64 CPU tensor (differentiable: the gradient with respect to X is ``A^T @ dY``),
    a NumPy array, or ``HybridRows`` (dequantized for the ``cpu`` backend; handed to the kernel as is for
    ``nkisim``/``neuron``). Returns a torch tensor ``[N, F]`` with X's dtype (float32 for HybridRows); a float64 X
    multiplies the matrix's float32 effective values (``A.decode(dtype=np.float32)``) in float64 on ``cpu``; on
    ``nkisim``/``neuron`` the kernel reads X as bf16 whatever its dtype (within 2^-7 (|A| |X|) per output) and the
    result comes back in X's dtype.
    ``backend``: ``cpu`` | ``nkisim`` | ``neuron`` | ``auto``; ``None`` reads ``DSTE_BACKEND``.
    Forward-mode AD (``torch.autograd.forward_ad``, ``torch.func.jvp``/``jacfwd``): the tangent of a dual X is
    ``A @ T``, computed on the same backend. ``torch.func.vmap`` runs one product per batch entry;
    ``torch.func.grad``/``vjp``/``jacrev`` are refused (``NotImplementedError``): use ``torch.autograd``.
    Under ``torch.autocast`` a float16/bfloat16 X is multiplied in float32 and Y is float32 (autocast's float32
    policy). ``torch.jit.trace`` records the op, the matrix's operands as constants of the trace.

    A bare ``DSTEMatrix`` gets its CPU operands built on the first call and kept on the matrix for the later ones
    (``as_dste_tensor``; they are freed with the matrix): before, every call rebuilt them (1k nodes, F = 32: 1.5 ms
    per call against 58 us through a ``DSTETensor``).
    """
    a = as_dste_tensor(A)
    if not torch.compiler.is_compiling():
        a.check_operands()
    name = resolve_backend(backend)
    if fwAD._current_level >= 0 and isinstance(X, torch.Tensor):  # inside a forward-mode AD level
        try:
            primal, tangent = fwAD.unpack_dual(X)
        except RuntimeError as error:  # torch's legacy vmap has no batching rule for unpacking a dual tensor
            raise NotImplementedError(
                "dste.spmm: forward-mode AD of a batched dual X, as torch.autograd.functional.jacobian(..., "
                "vectorize=True, strategy='forward-mode') makes it, is not supported; use torch.func.jacfwd, "
                "vectorize=False, or the default reverse mode") from error
        if tangent is not None:  # the op has no forward-mode formula; A @ X is linear, so its tangent is A @ T
            return fwAD.make_dual(spmm(a, primal, name), spmm(a, tangent, name))
    if (isinstance(X, torch.Tensor) and X.requires_grad and not torch.compiler.is_compiling()
            and torch._C._functorch.is_gradtrackingtensor(X)):
        raise NotImplementedError(
            "dste.spmm under torch.func.grad / vjp / jacrev: torch's custom ops carry no gradient rule for these "
            "transforms; use torch.autograd.grad or .backward() for the gradient with respect to X (torch.func.vmap, "
            "jvp and jacfwd are supported)"
        )
    if name == "cpu":
        y = _eager_cpu_product(a, X)
        if y is not None:
            return y
    x_handle = registry.NO_HANDLE
    if isinstance(X, torch.Tensor):  # first: the only branch traced under torch.compile
        x = _dense_operand(X)
    elif is_hybrid_rows(X):
        # Validated on every backend: HybridRows is a mutable dataclass, and the kernel launchers refuse an edited
        # one (an FP16 row with nonzero q) that dequantize alone would read without complaint.
        kernel_x = X.validate() if isinstance(X, HybridRows) else _as_hybrid_rows(X)  # held: the registry's is weak
        x = torch.from_numpy(np.ascontiguousarray(kernel_x.dequantize(), dtype=np.float32))
        if name in KERNEL_BACKENDS:
            x_handle = registry.register(kernel_x)
    else:
        x = _dense_operand(X)
    try:
        if x.dim() != 2:
            hint = "; use x[:, None] for a vector" if x.dim() == 1 else ""
            raise ValueError(f"X must be 2-D [M, F], got shape {tuple(x.shape)}{hint}")
        n, m = a.shape
        if x.shape[0] != m:
            raise ValueError(f"shape mismatch: A is [{n}, {m}] so X needs {m} rows, got X {tuple(x.shape)}")
        check_finite(x, "X")
        if name == "cpu" and _plain_eager_call(x):  # NumPy X, HybridRows
            return eager_spmm(a.host_operands, x.detach().contiguous(), a.original_host_operands)[0]
        return torch.ops.dste.spmm_hybrid(*a.op_operands, x, a.handle, x_handle, name)
    finally:
        if x_handle != registry.NO_HANDLE:
            registry.release(x_handle)


def _as_tensor(value, name: str, dtypes) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a NumPy array or torch tensor, got {type(value).__name__}")
    if value.device.type != "cpu":
        raise ValueError(f"{name} must be on the cpu, got {value.device}")
    if value.dtype not in dtypes:
        raise TypeError(f"{name} must have dtype in {[str(d) for d in dtypes]}, got {value.dtype}")
    return value


def masked_quant(values, keep, sensitivity, threshold: float, backend: str | None = None):
    """Encode dense tiles into the ``DSTEMatrix`` tile layout through ``dste::masked_quant``.

    ``values float32 [T,128,128]`` (``[tile, column k, window row r]``), ``keep bool`` of the same shape,
    ``sensitivity float [T]``, ``threshold`` T (a tile whose sensitivity, rounded to float32 as the kernel reads
    it, is at or above T, also rounded to float32, becomes FP16: the encoder's float64 comparison can differ in the
    last float32 ulp). Returns NumPy ``(keep_bits uint32 [T,128,4], kind uint8 [T], int8_values int8
    [T_int8,128,128], int8_scale float32 [T_int8], fp16_values float16 [T_fp16,128,128])``, each kind's values
    compacted to its slots in tile order (``DSTEMatrix``'s layout). ``dste.kernels.launch_masked_quant`` returns the
    same values uncompacted, one entry per input tile of both value arrays (zeros where the tile has the other
    kind).
    """
    name = resolve_backend(backend)
    values_t = _as_tensor(values, "values", (torch.float32,)).detach()  # an encoding has no gradient
    keep_t = _as_tensor(keep, "keep", (torch.bool,))
    sens_t = _as_tensor(sensitivity, "sensitivity", (torch.float32, torch.float64))
    check_finite(sens_t, "sensitivity")
    # float32 as the kernel compares it; a finite float64 beyond float32's range saturates (it is above or below every
    # float32 threshold either way) instead of reading as inf
    finfo = torch.finfo(torch.float32)
    sens_t = sens_t.clamp(finfo.min, finfo.max).float()
    tile = ops.TILE
    if values_t.dim() != 3 or tuple(values_t.shape[1:]) != (tile, tile):
        raise ValueError(f"values must be [T, {tile}, {tile}], got {tuple(values_t.shape)}")
    if keep_t.shape != values_t.shape:
        raise ValueError(f"keep must have the shape of values {tuple(values_t.shape)}, got {tuple(keep_t.shape)}")
    if sens_t.shape != values_t.shape[:1]:
        raise ValueError(f"sensitivity must be [T={values_t.shape[0]}], got {tuple(sens_t.shape)}")
    # a bool is an int to Python: True was read as the threshold 1.0
    threshold = real_number(threshold, "threshold", finite=False)
    if not np.isfinite(threshold):  # as dste.kernels.launch_masked_quant refuses it, on every backend
        raise ValueError(f"threshold must be finite, got {threshold!r}")
    check_finite(values_t, "values")
    bits, kind, int8_dense, scale_dense, fp16_dense = torch.ops.dste.masked_quant(
        values_t, keep_t, sens_t, float(threshold), name
    )
    kind_np = kind.numpy()
    int8_tiles = kind_np == 1
    fp16_tiles = kind_np == 2
    if fp16_tiles.any():  # the kernel saturates to float16's range; the encoder and quantize_rows refuse instead
        magnitude = np.where(keep_t.numpy()[fp16_tiles], np.abs(values_t.numpy()[fp16_tiles]), 0.0)
        if magnitude.max() > FP16_MAX:
            tile = int(np.flatnonzero(fp16_tiles)[int(np.argmax(magnitude.reshape(magnitude.shape[0], -1).max(axis=1)))])
            raise ValueError(
                f"masked_quant: tile {tile} becomes an FP16 tile (its sensitivity is at or above the threshold) but keeps a "
                f"value of magnitude {float(magnitude.max()):.6g}, beyond float16's largest finite value {FP16_MAX:g}; "
                "rescale the values (e.g. by a row or column scale) or drop the entry"
            )
    return (
        bits.numpy().view(np.uint32),
        kind_np,
        int8_dense.numpy()[int8_tiles],
        scale_dense.numpy()[int8_tiles],
        fp16_dense.numpy()[fp16_tiles],
    )
