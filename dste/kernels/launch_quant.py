"""Host launchers of the device-side encoder kernels (``masked_quant.py``).

- ``launch_masked_quant(values, keep, sensitivity, threshold)`` -> ``(keep_bits, kind, int8_values,
  int8_scale, fp16_values)`` in the DSTEMatrix layout (one entry per input tile; ``tile_slot``
  compaction is the caller's), equal to ``dste.reference.masked_quant.masked_quant_reference``.
  ``keep`` may be a bool mask or ``None`` with ``magnitude_threshold`` (keep |v| >= threshold).
- ``launch_quantize_rows(X, sensitivity, threshold)`` -> ``HybridRows``, equal to
  ``quantize_rows_reference``. It applies the threshold as given; the host API ``dste.quantize_rows`` with the same
  scores also keeps INT8 a row whose largest |x| is below ``FP16_UNDERFLOW_AMAX`` and refuses an FP16 row beyond
  65504, which the kernel saturates.

Tiles are processed in launches of at most ``TILES_PER_LAUNCH`` (padded to a multiple of 16 per
program with empty tiles, whose outputs are dropped), so one compiled kernel serves every call of that
size; rows likewise, padded to whole 128-row tiles per program. On trn2 every launch runs on two
logical cores (``kernel[2]``, the runtime's LNC2 default), on trn1 on one.

The scale of a group is ``max|v| * fp32(1/127)`` and the kernel multiplies by its fp32 reciprocal: a
group whose largest magnitude is nonzero but below ``dste.format.quant.MIN_INT8_AMAX`` (127 x the smallest normal fp32,
1.5e-36) would get a subnormal scale whose reciprocal overflows, so such input is refused with an error
rather than quantized to garbage.
"""

from __future__ import annotations

import numpy as np

from dste.format.constants import TILE_COLS, WINDOW_ROWS
from dste.format.quant import check_scores, hi_index_of, quantize_rows_host, refuse_subnormal_int8_scales
from dste.kernels.launch_spmm import default_lnc, require_indirect_dma
from dste.kernels.plan import check_lnc

TILES_PER_LAUNCH = 128
TILE_GROUP = 16
ROWS_PER_LAUNCH = 4096
ROWS_PER_TILE = 128

__all__ = ["launch_masked_quant", "launch_quantize_rows"]


def _kernels(backend):
    from dste.kernels.device import kernel_module

    return kernel_module("masked_quant", backend)


def _run(kernel, args, target, profiles, backend, lnc):
    from dste.kernels.device import launch

    out, prof = launch(kernel, args, lnc=lnc, target=target, backend=backend)
    profiles.append(prof)
    return out


def _merged(profiles, target):
    from dste.nkisim import Profile

    return Profile.merge_all(profiles) if profiles else Profile(target)


def launch_masked_quant(values, keep=None, sensitivity=None, threshold=0.02, *, magnitude_threshold=None,
                 target="trn2", profile=False, backend="nkisim", lnc=None):
    """Quantize T dense tiles ``[T, 128, 128]`` (layout [t, k, r]) under a keep mask (see module doc)."""
    values = np.asarray(values)
    if values.dtype != np.float32 or values.ndim != 3 or values.shape[1:] != (TILE_COLS, WINDOW_ROWS):
        raise ValueError(f"values must be float32 [T, {TILE_COLS}, {WINDOW_ROWS}], got {values.dtype} {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("values contain NaN or Inf; masked_quant needs finite values")
    T = values.shape[0]
    if keep is None:
        if magnitude_threshold is None:
            raise ValueError("give a keep mask or a magnitude_threshold")
        if isinstance(magnitude_threshold, bool) or not np.isfinite(magnitude_threshold):  # NaN kept nothing
            raise ValueError(f"magnitude_threshold must be a finite number, got {magnitude_threshold!r}")
        keep = np.abs(values) >= np.float32(magnitude_threshold)
    keep = np.asarray(keep)
    if keep.dtype != np.bool_ or keep.shape != values.shape:
        raise ValueError(f"keep must be bool with shape {values.shape}, got {keep.dtype} {keep.shape}")
    if sensitivity is None:
        raise ValueError("sensitivity (float [T]) is required")
    sensitivity = np.asarray(sensitivity)
    if sensitivity.shape != (T,) or sensitivity.dtype.kind != "f":
        raise ValueError(f"sensitivity must be float [{T}], got {sensitivity.dtype} {sensitivity.shape}")
    check_scores("launch_masked_quant", sensitivity, threshold)
    amax = np.abs(np.where(keep, values, np.float32(0))).reshape(T, -1).max(axis=1) if T else np.zeros(0)
    refuse_subnormal_int8_scales(amax, "tile")
    kernel = _kernels(backend).masked_quant_kernel
    lnc = default_lnc(target) if lnc is None else check_lnc(lnc)
    per_launch_group = TILE_GROUP * lnc
    outs = [np.zeros((T, TILE_COLS, 4), np.uint32), np.zeros(T, np.uint8), np.zeros(values.shape, np.int8),
            np.zeros(T, np.float32), np.zeros(values.shape, np.float16)]
    thr = np.array([threshold], dtype=np.float32)
    profiles = []
    for t0 in range(0, T, TILES_PER_LAUNCH):
        t1 = min(T, t0 + TILES_PER_LAUNCH)
        n = t1 - t0
        padded = -(-n // per_launch_group) * per_launch_group
        v = np.zeros((padded, TILE_COLS, WINDOW_ROWS), np.float32)
        k = np.zeros((padded, TILE_COLS, WINDOW_ROWS), np.uint8)
        s = np.zeros(padded, np.float32)
        v[:n], k[:n], s[:n] = values[t0:t1], keep[t0:t1], sensitivity[t0:t1]
        res = _run(kernel, (v, k, s, thr), target, profiles, backend, lnc)
        for dst, src in zip(outs, res):
            dst[t0:t1] = np.asarray(src).reshape((padded,) + dst.shape[1:])[:n]
    result = tuple(outs)
    return (result, _merged(profiles, target)) if profile else result


def launch_quantize_rows(X, sensitivity, threshold=0.02, *, target="trn2", profile=False, backend="nkisim", lnc=None):
    """Hybrid-row quantization of X ``[M, F]`` on the device (see module doc) -> ``HybridRows``."""
    from dste.format import HybridRows

    require_indirect_dma(target, "quantize_rows_kernel")
    X = np.asarray(X)
    if X.ndim != 2 or X.dtype.kind != "f":
        raise ValueError(f"X must be a 2-D float array, got {X.dtype} {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or Inf; quantize_rows needs finite values")
    if X.dtype.itemsize > 4 and X.size and np.abs(X).max() > np.finfo(np.float32).max:
        raise ValueError(f"X holds {X.dtype} values beyond float32's range (3.4e38), the kernel's X dtype; rescale X")
    X = np.ascontiguousarray(X, dtype=np.float32)
    M, F = X.shape
    sensitivity = np.asarray(sensitivity)
    if sensitivity.shape != (M,):
        raise ValueError(f"sensitivity must have shape ({M},), got {sensitivity.shape}")
    check_scores("launch_quantize_rows", sensitivity, threshold)
    refuse_subnormal_int8_scales(np.abs(X).max(axis=1) if F else np.zeros(M), "row")
    if F == 0:  # rows without features: nothing for the device to do, and its tiles need a positive free size
        return HybridRows(*quantize_rows_host(X, sensitivity, threshold))
    sens32 = sensitivity.astype(np.float32)
    is_hi = sens32 >= np.float32(threshold)
    hi_rows = np.flatnonzero(is_hi).astype(np.int32)
    kernel = _kernels(backend).quantize_rows_kernel
    q = np.zeros((M, F), np.int8)
    scale = np.zeros(M, np.float32)
    hi = np.zeros((hi_rows.size, F), np.float16)
    thr = np.array([threshold], dtype=np.float32)
    profiles = []
    lnc = default_lnc(target) if lnc is None else check_lnc(lnc)
    rows_multiple = ROWS_PER_TILE * lnc
    for r0 in range(0, M, ROWS_PER_LAUNCH):
        r1 = min(M, r0 + ROWS_PER_LAUNCH)
        n = r1 - r0
        padded = -(-n // rows_multiple) * rows_multiple
        local_hi = is_hi[r0:r1]
        n_hi = int(local_hi.sum())
        # padding rows are zero rows whose FP16 position is out of range (never scattered); their
        # outputs are dropped
        x_launch = np.zeros((padded, F), np.float32)
        x_launch[:n] = X[r0:r1]
        s_launch = np.zeros(padded, np.float32)
        s_launch[:n] = sens32[r0:r1]
        position = np.full(padded, max(n_hi, 1), dtype=np.int32)
        position[:n][local_hi] = np.arange(n_hi, dtype=np.int32)
        out_q, out_scale, out_hi = _run(kernel, (x_launch, s_launch, thr, position, n_hi), target, profiles, backend, lnc)
        q[r0:r1] = np.asarray(out_q)[:n]
        scale[r0:r1] = np.asarray(out_scale).reshape(-1)[:n]
        first = int(is_hi[:r0].sum())
        hi[first:first + n_hi] = np.asarray(out_hi)[:n_hi]
    hi_index = hi_index_of(hi_rows, M)
    result = HybridRows(q=q, scale=scale, hi_rows=hi_rows, hi=hi, hi_index=hi_index)
    return (result, _merged(profiles, target)) if profile else result
