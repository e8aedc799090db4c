"""Compiled INT8 fake quantization of feature rows and the choice of their FP16 rows, for the cpu forward pass.

:func:`fake_quantize` does, in one compiled call (Numba; no fast-math except where an order-free float32 sum only
bounds), what the cpu forward pass needs of ``quantize_rows_by_fraction(x, fraction).dequantize()``, bit for bit:

* the INT8 rows as the device quantizes and the cpu op dequantizes them: ``out = (rint(x * fp32(1 / s)) + 0.0) * s``
  with the device scale ``s = max|x| * fp32(1 / 127)`` (1 for an all-zero row);
* the FP16 rows, the ``count`` rows of largest sensitivity, bit for bit ``dste.gnn.settings.row_sensitivity``: with
  ``s' = fp32(max|x| / 127)``, ``e = float64(x) - float64(fp32(rint(fp32(x / s')) * s'))``, score
  ``sqrt(mean(e^2)) / mean(|x|)`` (0 for an all-zero row), the two means summed in NumPy's own order (below); exact
  scores only for the rows that float32 bounds (:func:`score_bounds`) cannot rule out (:func:`fp16_rows`);
* those rows' float16 rounding (:func:`float16_rows`).

And the other way, for the first layer's stored feature rows: ``HybridRows.dequantize()`` of a block of rows, bit for
bit, in one call (:func:`dequantize_rows`; the FP16 rows widened from their bit patterns).

Rounding to an integer is half to even through ``(v + 1.5 * 2^23) - 1.5 * 2^23`` in float32, exact for ``|v| <
2^22``; the values rounded here are within ``127 (1 + 2^-24)^2 < 127.5`` for the rows the quantizer accepts (largest
magnitude 0, or finite and at least ``MIN_ROW_MAGNITUDE``; :func:`fake_quantize` reports any other row and the
caller runs the quantizer itself), so the clip to [-128, 127] never acts and is not repeated. A zero rounded from a
small negative is +0.0 here and -0.0 in NumPy: ``e`` and the INT8 value (``+ 0.0``) are the same either way.

NumPy's ``add.reduce`` along a contiguous row of ``F`` float64 values (``pairwise_sum`` in NumPy's
``loops_utils.h.src``): ``F < 8`` one by one from 0; ``8 <= F <= 128`` eight running sums of the values ``k, k + 8,
...`` (``k = 0..7``) combined as ``((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))``, then the last ``F mod 8``
values one by one; beyond 128 the sum of the first ``h`` and of the rest, ``h = F // 2`` rounded down to a multiple
of 8. The exact scores follow that order per row, with rows as the vector lanes (a block of rows transposed).

Measured (one thread; ``bench/README.md``, "CPU inference with the compiled row quantization"): one quantization of
1,000 x 64 at 5 % FP16 rows 49 us against 198 us for the torch/NumPy steps it replaces. Compiled on first use (7.5-10
s; ``scripts/setup.sh`` does it once through ``dste.gnn.execution.compile_quantization_passes``) and cached beside
this module (Numba's ``cache=True``; the cache tracks this file, hence the constants defined here).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from dste.format import quant as _quant

INT8_QMAX = 127
INV_INT8_QMAX = np.float32(1.0 / INT8_QMAX)
"""The quantizer's constants, defined here so that Numba's on-disk cache, which tracks this file and not the values
of globals it reads from other modules, is invalidated whenever they change; held equal to
``dste.format.quant``'s at import."""
if (INT8_QMAX, INV_INT8_QMAX) != (_quant.INT8_QMAX, _quant.INV_INT8_QMAX):
    raise ImportError("dste.gnn.row_quant's INT8 constants differ from dste.format.quant's; update them together")

ROUNDING_CONSTANT = np.float32(12582912.0)
"""1.5 * 2^23: float32 ``(v + c) - c`` is ``v`` rounded half to even for ``|v| < 2^22``."""
BLOCK_ROWS = 64
"""Rows scored together (the vector lanes); their transposed block, 64 x F float32, stays in the L1 cache."""
PAIRWISE_BLOCK = 128
"""NumPy's ``PW_BLOCKSIZE``: up to this many values one pairwise block of eight running sums."""

_JIT = dict(cache=True, nogil=True, error_model="numpy")


@njit(**_JIT)
def _score_terms(v, s):
    """``e^2`` and ``|x|`` of one value ``v`` with the score's scale ``s`` (float64)."""
    d = ((v / s + ROUNDING_CONSTANT) - ROUNDING_CONSTANT) * s
    e = np.float64(v) - np.float64(d)
    return e * e, abs(np.float64(v))


@njit(**_JIT)
def _pairwise_block(xt, s, rows, lo, n, squares, magnitudes, run_sq, run_mag):
    """For every row ``i < rows`` of the transposed block ``xt [F, BLOCK_ROWS]``: NumPy's pairwise sums of ``e^2``
    and ``|x|`` over the row's values ``lo .. lo + n - 1``, ``n <= PAIRWISE_BLOCK``, into ``squares[i]`` and
    ``magnitudes[i]`` (``run_sq``, ``run_mag``: ``[8, BLOCK_ROWS]`` work arrays for the eight running sums)."""
    if n < 8:
        for i in range(rows):
            squares[i] = 0.0
            magnitudes[i] = 0.0
        for j in range(lo, lo + n):
            for i in range(rows):
                t, m = _score_terms(xt[j, i], s[i])
                squares[i] += t
                magnitudes[i] += m
        return
    for k in range(8):
        for i in range(rows):
            t, m = _score_terms(xt[lo + k, i], s[i])
            run_sq[k, i] = t
            run_mag[k, i] = m
    end = lo + n - n % 8
    for j in range(lo + 8, end, 8):
        for k in range(8):
            for i in range(rows):
                t, m = _score_terms(xt[j + k, i], s[i])
                run_sq[k, i] += t
                run_mag[k, i] += m
    for i in range(rows):
        squares[i] = ((run_sq[0, i] + run_sq[1, i]) + (run_sq[2, i] + run_sq[3, i])) + (
            (run_sq[4, i] + run_sq[5, i]) + (run_sq[6, i] + run_sq[7, i]))
        magnitudes[i] = ((run_mag[0, i] + run_mag[1, i]) + (run_mag[2, i] + run_mag[3, i])) + (
            (run_mag[4, i] + run_mag[5, i]) + (run_mag[6, i] + run_mag[7, i]))
    for j in range(end, lo + n):
        for i in range(rows):
            t, m = _score_terms(xt[j, i], s[i])
            squares[i] += t
            magnitudes[i] += m


TREE_DEPTH = 64
"""Frames of :func:`_pairwise_rows`' explicit stack: NumPy's halving tree of ``F`` values is about
``log2(F / 128)`` deep."""


@njit(**_JIT)
def _pairwise_rows(xt, s, rows, width, sums_sq, sums_mag, run_sq, run_mag):
    """:func:`_pairwise_block` over a whole row of ``width`` values: beyond ``PAIRWISE_BLOCK`` values NumPy sums the
    first ``h`` and the rest apart and adds them (``h = n // 2`` rounded down to a multiple of 8), recursively. The
    tree is walked here with an explicit stack (Numba's cache cannot reload a recursive function): frame ``d``
    sums into ``sums_sq[d]`` / ``sums_mag[d]`` (``[TREE_DEPTH, BLOCK_ROWS]``), its children into ``d + 1``. The row
    sums end in ``sums_sq[0]`` / ``sums_mag[0]``."""
    frame_lo = np.empty(TREE_DEPTH, np.int64)
    frame_n = np.empty(TREE_DEPTH, np.int64)
    frame_state = np.empty(TREE_DEPTH, np.int64)  # 0: new, 1: first half summed, 2: both halves summed
    frame_lo[0], frame_n[0], frame_state[0] = 0, width, 0
    depth = 0
    while depth >= 0:
        lo, n, state = frame_lo[depth], frame_n[depth], frame_state[depth]
        if n <= PAIRWISE_BLOCK:
            _pairwise_block(xt, s, rows, lo, n, sums_sq[depth], sums_mag[depth], run_sq, run_mag)
            depth -= 1
            continue
        half = n // 2
        half -= half % 8
        if state == 0:
            frame_state[depth] = 1
            frame_lo[depth + 1], frame_n[depth + 1], frame_state[depth + 1] = lo, half, 0
            depth += 1
        elif state == 1:
            for i in range(rows):
                sums_sq[depth, i] = sums_sq[depth + 1, i]
                sums_mag[depth, i] = sums_mag[depth + 1, i]
            frame_state[depth] = 2
            frame_lo[depth + 1], frame_n[depth + 1], frame_state[depth + 1] = lo + half, n - half, 0
            depth += 1
        else:
            for i in range(rows):
                sums_sq[depth, i] += sums_sq[depth + 1, i]
                sums_mag[depth, i] += sums_mag[depth + 1, i]
            depth -= 1


@njit(**_JIT)
def int8_rows(x, amax, out):
    """INT8-dequantized rows of ``x`` into ``out``: ``(rint(x * fp32(1 / s)) + 0.0) * s``, ``s = amax * fp32(1 / 127)``
    (1 for an all-zero row). ``x``, ``out``: C-contiguous float32 ``[n, F]``; ``amax``: float32 ``[n]``, each row's
    largest magnitude, 0 or finite and at least ``MIN_ROW_MAGNITUDE`` (checked by the caller)."""
    n, width = x.shape
    for i in range(n):
        largest = amax[i]
        scale = largest * INV_INT8_QMAX if largest > 0 else np.float32(1.0)
        inverse = np.float32(1.0) / scale
        row = x[i]
        dequantized = out[i]
        for j in range(width):
            q = (row[j] * inverse + ROUNDING_CONSTANT) - ROUNDING_CONSTANT
            dequantized[j] = (q + np.float32(0.0)) * scale


@njit(**_JIT)
def row_scores(x, amax, rows, score):
    """The exact sensitivity (``dste.gnn.settings.row_sensitivity``'s bits) of the rows ``rows`` (int64, any order)
    of ``x`` into ``score[:rows.size]``, a transposed block of ``BLOCK_ROWS`` of them at a time."""
    width = x.shape[1]
    qmax = np.float32(INT8_QMAX)
    block = np.empty((width, BLOCK_ROWS), np.float32)
    scales = np.empty(BLOCK_ROWS, np.float32)
    sums_sq = np.empty((TREE_DEPTH, BLOCK_ROWS))
    sums_mag = np.empty((TREE_DEPTH, BLOCK_ROWS))
    run_sq = np.empty((8, BLOCK_ROWS))
    run_mag = np.empty((8, BLOCK_ROWS))
    for first in range(0, rows.size, BLOCK_ROWS):
        count = min(BLOCK_ROWS, rows.size - first)
        for i in range(count):
            row = rows[first + i]
            largest = amax[row]
            scales[i] = largest / qmax if largest > 0 else np.float32(1.0)
            for j in range(width):
                block[j, i] = x[row, j]
        _pairwise_rows(block, scales, count, width, sums_sq, sums_mag, run_sq, run_mag)
        for i in range(count):
            rms = np.sqrt(sums_sq[0, i] / width)
            mean_abs = sums_mag[0, i] / width
            score[first + i] = rms / mean_abs if mean_abs > 0 else 0.0


@njit(fastmath={"reassoc"}, **_JIT)
def _float32_sums(errors, row):
    """``sum e^2`` and ``sum |x|`` in float32, in any order (reassociated: vectorised along the row). Only for
    bounds: a float32 sum of non-negative terms errs by at most ``gamma_(F-1)`` of itself in any order."""
    squares = np.float32(0.0)
    magnitudes = np.float32(0.0)
    for j in range(errors.size):
        squares += errors[j] * errors[j]
        magnitudes += abs(row[j])
    return squares, magnitudes


UNIT_ROUNDOFF_32 = 2.0 ** -24
UNIT_ROUNDOFF_64 = 2.0 ** -53
SUBNORMAL_STEP_32 = 2.0 ** -149
BOUND_SAFETY = 4.0
"""Every error term of :func:`score_bounds` taken this many times over: the bounds only decide which rows get the
exact score, so a looser bound costs a few more exact scores, never a different choice."""


@njit(**_JIT)
def score_bounds(x, amax, lower, upper):
    """Float64 bounds ``lower <= score <= upper`` on every row's exact sensitivity, from float32 sums.

    The score's error terms ``e = x - fp32(rint(fp32(x / s')) * s')`` are computed exactly as the score does
    (float32, the same operations), and ``e`` is exact in float32: ``d = fp32(r s')`` is 0 or within a factor of 2
    of ``x`` (``x`` lies within ``s' / 2`` of ``r s'`` for ``|r| >= 1``), so ``x - d`` is exact (Sterbenz). The
    score is ``sqrt(F E) / M`` with ``E = sum e^2``, ``M = sum |x|``. Their float32 sums, in any order, err by at
    most ``gamma = (F + 1) u / (1 - (F + 1) u)`` of themselves (``u = 2^-24``; the extra ``u`` for the squares;
    Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., section 4.2), plus ``2^-149`` per square
    that underflows, absolutely; the score's own float64 sums, quotients and roots err by at most ``(F + 8)
    2^-53`` of it. Every term is taken ``BOUND_SAFETY`` times. An all-zero row scores exactly 0.
    """
    n, width = x.shape
    qmax = np.float32(INT8_QMAX)
    gamma = BOUND_SAFETY * (width + 1) * UNIT_ROUNDOFF_32 / (1.0 - (width + 1) * UNIT_ROUNDOFF_32)
    underflow = BOUND_SAFETY * width * SUBNORMAL_STEP_32
    slack = BOUND_SAFETY * (width + 16) * UNIT_ROUNDOFF_64
    errors = np.empty(width, np.float32)
    squares = np.empty(n, np.float32)
    magnitudes = np.empty(n, np.float32)
    for i in range(n):
        largest = amax[i]
        s = largest / qmax if largest > 0 else np.float32(1.0)
        row = x[i]
        for j in range(width):
            errors[j] = row[j] - ((row[j] / s + ROUNDING_CONSTANT) - ROUNDING_CONSTANT) * s
        squares[i], magnitudes[i] = _float32_sums(errors, row)
    # per row, apart from the sums so that these steps run across rows (vectorised)
    low_factor = (1.0 - gamma) * (1.0 - slack)
    high_factor = (1.0 + gamma) * (1.0 + slack)
    for i in range(n):
        sq = np.float64(squares[i])
        # an all-zero row (magnitudes 0) scores exactly 0; otherwise magnitudes >= largest >= MIN_ROW_MAGNITUDE (a
        # float32 sum of non-negative terms is at least its largest); a sum that overflowed float32 (|x| beyond
        # ~1e19) bounds nothing: 0 and inf
        mg = np.float64(magnitudes[i])
        finite = sq <= 3.5e38 and mg <= 3.5e38
        divisor = mg if mg > 0 else 1.0
        low = np.sqrt(max(sq - underflow, 0.0) / (1.0 + gamma) * width) * low_factor / divisor
        high = np.sqrt((sq + underflow) / (1.0 - gamma) * width) * high_factor / divisor
        lower[i] = (low if finite else 0.0) if mg > 0 else 0.0
        upper[i] = (high if finite else np.inf) if mg > 0 else 0.0


@njit(**_JIT)
def _kth_largest(values, k):
    """The ``k``-th largest of ``values`` (float64, no NaN; ``1 <= k <= values.size``), without changing them: a
    three-way quickselect (equal values in one step, so ties cost nothing) on a copy, pivots drawn by a fixed
    linear congruential sequence (expected linear time on any input, the same steps every run). Written out because
    Numba's ``np.partition`` takes seconds to compile."""
    work = values.copy()
    lo, hi = 0, work.size - 1
    target = k - 1  # position in descending order
    state = np.uint64(0x9E3779B97F4A7C15)
    while True:
        if lo == hi:
            return work[lo]
        state = state * np.uint64(6364136223846793005) + np.uint64(1442695040888963407)
        pivot = work[lo + np.int64((state >> np.uint64(33)) % np.uint64(hi - lo + 1))]
        # descending three-way partition: [lo, greater) > pivot, [greater, i) == pivot, (less, hi] < pivot
        greater, i, less = lo, lo, hi
        while i <= less:
            v = work[i]
            if v > pivot:
                work[i], work[greater] = work[greater], v
                greater += 1
                i += 1
            elif v < pivot:
                work[i], work[less] = work[less], v
                less -= 1
            else:
                i += 1
        if target < greater:
            hi = greater - 1
        elif target > less:
            lo = less + 1
        else:
            return pivot


@njit(**_JIT)
def fp16_rows(x, amax, count):
    """The ``count`` most sensitive rows of ``x`` (ties by lower row id), ascending: ``quantize_rows_by_fraction``'s
    FP16 rows for ``count = round(fraction * n)``, ``1 <= count < n``.

    Only rows that could be among them get the exact score: with ``L`` the ``count``-th largest lower bound of
    :func:`score_bounds`, a row whose upper bound is below ``L`` scores strictly less than ``count`` other rows.
    The rest (the candidates, ascending) are scored exactly (:func:`row_scores`) and the best ``count`` of them
    taken by :func:`best_rows`: the ranking among them is exact, and every row left out is beaten by ``count`` of
    them. (1,000 x 64 ReLU activations, 5 %: about 100 candidates.)"""
    n = x.shape[0]
    lower = np.empty(n)
    upper = np.empty(n)
    score_bounds(x, amax, lower, upper)
    floor = _kth_largest(lower, count)
    candidates = np.flatnonzero(upper >= floor)
    scores = np.empty(candidates.size)
    row_scores(x, amax, candidates, scores)
    return candidates[best_rows(scores, count)]


@njit(**_JIT)
def best_rows(score, count):
    """Positions of the ``count`` largest of ``score`` (float64 [n], no NaN; ``1 <= count <= n``), ties by lower
    position, ascending: the first ``count`` of a stable descending sort, sorted. One selection and one pass in
    position order (ascending by construction), no sort of every score."""
    n = score.size
    cutoff = _kth_largest(score, count)
    above = 0
    for i in range(n):
        if score[i] > cutoff:
            above += 1
    ties_wanted = count - above
    rows = np.empty(count, np.int64)
    taken = 0
    for i in range(n):
        value = score[i]
        if value > cutoff or (value == cutoff and ties_wanted > 0):
            if value == cutoff:
                ties_wanted -= 1
            rows[taken] = i
            taken += 1
    return rows


FLOAT16_SIGN = np.uint32(0x80000000)
FLOAT16_SMALLEST_NORMAL_EXPONENT = 113
"""float16's smallest normal, 2^-14, as a biased float32 exponent (127 - 14); below it float16's step is 2^-24."""


@njit(**_JIT)
def float16_rows(x, rows, out):
    """``out[r] = fp32(fp16(x[r]))`` for the rows ``rows``: float16's rounding (to nearest, ties to even, sign kept,
    float16 subnormals included) in float32 arithmetic, for values within float16's range (``|x| <= 65504``,
    checked by the caller). A value is rounded to a multiple of float16's step at its magnitude, ``2^(e - 10)`` for
    ``2^e <= |x| < 2^(e + 1)``, ``e >= -14``, else ``2^-24``: the quotient by a power of two is exact and below
    2^12, so the float32 rounding constant rounds it half to even, and the product is exact. (Numba has no float16
    on the CPU.)"""
    width = x.shape[1]
    step_bits = np.empty(width, np.uint32)
    step = step_bits.view(np.float32)
    rounded = np.empty(width, np.float32)
    rounded_bits = rounded.view(np.uint32)
    for r in rows:
        row = x[r]
        row_bits = row.view(np.uint32)
        for j in range(width):
            exponent = (row_bits[j] >> 23) & 0xFF
            step_bits[j] = (max(exponent, FLOAT16_SMALLEST_NORMAL_EXPONENT) - 10) << 23
        for j in range(width):
            rounded[j] = ((abs(row[j]) / step[j] + ROUNDING_CONSTANT) - ROUNDING_CONSTANT) * step[j]
        target = out[r].view(np.uint32)
        for j in range(width):
            target[j] = rounded_bits[j] | (row_bits[j] & FLOAT16_SIGN)


FLOAT16_TO_FLOAT32_EXPONENT = 112
"""float32's exponent bias minus float16's (127 - 15)."""


@njit(**_JIT)
def _float32_bits_of_float16(h):
    """The float32 bit pattern of the float16 value whose bit pattern is ``h``: exact (every float16 value is a
    float32 value); an Inf or NaN keeps its sign and significand bits. (Numba has no float16 on the CPU.)"""
    h = np.int64(h)
    sign = (h & 0x8000) << 16
    exponent = (h >> 10) & 0x1F
    significand = h & 0x3FF
    if exponent == 0x1F:
        return np.uint32(sign | 0x7F800000 | (significand << 13))
    if exponent > 0:
        return np.uint32(sign | ((exponent + FLOAT16_TO_FLOAT32_EXPONENT) << 23) | (significand << 13))
    if significand == 0:
        return np.uint32(sign)
    # a float16 subnormal, significand * 2^-24 = (significand * 2^-10) * 2^-14: shifted until its leading bit is
    # float16's implicit one, the exponent down from 2^-14's by one per shift
    exponent = FLOAT16_SMALLEST_NORMAL_EXPONENT
    while significand & 0x400 == 0:
        significand <<= 1
        exponent -= 1
    return np.uint32(sign | (exponent << 23) | ((significand & 0x3FF) << 13))


@njit(**_JIT)
def dequantize_rows(q, scale, hi_rows, hi_bits, first_row, out):
    """Rows ``first_row .. first_row + len(out) - 1`` of ``HybridRows.dequantize()`` into ``out`` (float32
    ``[rows, F]``), bit for bit: each int8 value widened and multiplied by its row's scale in float32, then the FP16
    rows among them (``hi_rows``, ascending; ``hi_bits``: their float16 values' bit patterns, uint16 ``[M_hi, F]``)
    widened exactly over theirs."""
    count, width = out.shape
    for i in range(count):
        s = scale[first_row + i]
        for j in range(width):
            out[i, j] = np.float32(q[first_row + i, j]) * s
    first = np.searchsorted(hi_rows, first_row)
    last = np.searchsorted(hi_rows, first_row + count)
    out_bits = out.view(np.uint32)
    for k in range(first, last):
        row = hi_rows[k] - first_row
        for j in range(width):
            out_bits[row, j] = _float32_bits_of_float16(hi_bits[k, j])


ROW_OUTSIDE_THE_QUANTIZER = 1
""":func:`fake_quantize`'s status when some row is outside what the quantizer accepts (a NaN or Inf, a largest
magnitude below ``MIN_ROW_MAGNITUDE`` but not 0, an FP16 row beyond float16's range): the caller runs the quantizer
itself, which raises its own error."""


@njit(**_JIT)
def fake_quantize(x, count, out, min_row_magnitude, float32_max, fp16_max):
    """``quantize_rows_by_fraction(x, fraction).dequantize()`` into ``out`` with ``count = round(fraction * n)``
    FP16 rows; returns 0, or ``ROW_OUTSIDE_THE_QUANTIZER`` (``out`` then undefined).

    Each row's largest magnitude is the largest of its values' bit patterns with the sign bit cleared (non-negative
    float32 values order as their bit patterns, and a NaN's pattern lies above Inf's, so a NaN row's maximum is a
    NaN): an integer maximum, vectorised. The quantizer's limits are passed in (``dste.format``'s constants)."""
    n, width = x.shape
    amax = np.empty(n, np.float32)
    amax_bits = amax.view(np.uint32)
    for i in range(n):
        row_bits = x[i].view(np.uint32)
        largest = np.uint32(0)
        for j in range(width):
            largest = max(largest, row_bits[j] & np.uint32(0x7FFFFFFF))
        amax_bits[i] = largest
    for i in range(n):
        m = amax[i]
        if not (m == 0 or (m >= min_row_magnitude and m <= float32_max)):  # a NaN fails every comparison
            return ROW_OUTSIDE_THE_QUANTIZER
    if count == n:
        for i in range(n):
            if amax[i] > fp16_max:
                return ROW_OUTSIDE_THE_QUANTIZER
        float16_rows(x, np.arange(n), out)
        return 0
    int8_rows(x, amax, out)
    if count == 0:
        return 0
    rows = fp16_rows(x, amax, count)
    for r in rows:
        if amax[r] > fp16_max:
            return ROW_OUTSIDE_THE_QUANTIZER
    float16_rows(x, rows, out)
    return 0
