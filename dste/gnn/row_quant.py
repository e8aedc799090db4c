"""Compiled INT8 fake quantization of feature rows and their FP16 scores, for the cpu forward pass.

:func:`int8_rows_and_scores` computes, in one compiled pass per row block (Numba, no fast-math: every operation is
the IEEE operation NumPy and torch perform), what the cpu forward pass needs of ``quantize_rows_by_fraction``:

* the INT8 rows as the device quantizes and the cpu op dequantizes them: ``out = (rint(x * fp32(1 / s)) + 0.0) * s``
  with the device scale ``s = max|x| * fp32(1 / 127)`` (1 for an all-zero row);
* each row's sensitivity score, bit for bit ``dste.gnn.settings.row_sensitivity``: with ``s' = fp32(max|x| / 127)``,
  ``e = float64(x) - float64(fp32(rint(fp32(x / s')) * s'))``, score ``sqrt(mean(e^2)) / mean(|x|)`` (0 for an
  all-zero row), the two means summed in NumPy's own order (below).

Rounding is half to even through ``(v + 1.5 * 2^23) - 1.5 * 2^23`` in float32, exact for ``|v| < 2^22``; the
values rounded here are within ``127 (1 + 2^-24)^2 < 127.5`` for the rows the quantizer accepts (largest magnitude 0,
or finite and at least ``MIN_ROW_MAGNITUDE``; the caller routes every other row to the quantizer itself), so the
clip to [-128, 127] never acts and is not repeated. A zero rounded from a small negative is +0.0 here and -0.0 in
NumPy: ``e`` and the INT8 value (``+ 0.0``) are the same either way.

NumPy's ``add.reduce`` along a contiguous row of ``F`` float64 values (``pairwise_sum`` in NumPy's
``loops_utils.h.src``): ``F < 8`` one by one from 0; ``8 <= F <= 128`` eight running sums of the values ``k, k + 8,
...`` (``k = 0..7``) combined as ``((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))``, then the last ``F mod 8``
values one by one; beyond 128 the sum of the first ``h`` and of the rest, ``h = F // 2`` rounded down to a multiple
of 8. The scores here follow that order per row, with rows as the vector lanes (a block of rows transposed), so
the compiled loops run across rows.

Measured (one thread, ReLU activations): 1,000 x 64 about 60 us against about 240 us for the torch/NumPy steps it
replaces (score bounds, exact scores of the candidates); 169,343 x 128, 5 % FP16 rows, about 30 ms against 150 ms.
Compiled on first use and cached beside this module (Numba's ``cache=True``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from dste.format.quant import INT8_QMAX, INV_INT8_QMAX

ROUNDING_CONSTANT = np.float32(12582912.0)
"""1.5 * 2^23: float32 ``(v + c) - c`` is ``v`` rounded half to even for ``|v| < 2^22``."""
BLOCK_ROWS = 64
"""Rows scored together (the vector lanes); their transposed block, 64 x F float32, stays in the L1 cache."""
PAIRWISE_BLOCK = 128
"""NumPy's ``PW_BLOCKSIZE``: up to this many values one pairwise block of eight running sums."""

_JIT = dict(cache=True, nogil=True, error_model="numpy")


@njit(inline="always", **_JIT)
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
def int8_rows_and_scores(x, amax, out, score):
    """INT8-dequantized rows of ``x`` into ``out`` and, if ``score`` is not empty, every row's sensitivity into it.

    ``x``, ``out``: C-contiguous float32 ``[n, F]``; ``amax``: float32 ``[n]``, each row's largest magnitude, 0 or
    finite and at least ``MIN_ROW_MAGNITUDE`` (checked by the caller); ``score``: float64 ``[n]``, or ``[0]`` for
    no scores. See the module docstring for the arithmetic.
    """
    n, width = x.shape
    inverse_qmax = INV_INT8_QMAX
    qmax = np.float32(INT8_QMAX)
    for i in range(n):
        largest = amax[i]
        scale = largest * inverse_qmax if largest > 0 else np.float32(1.0)
        inverse = np.float32(1.0) / scale
        row = x[i]
        dequantized = out[i]
        for j in range(width):
            q = (row[j] * inverse + ROUNDING_CONSTANT) - ROUNDING_CONSTANT
            dequantized[j] = (q + np.float32(0.0)) * scale
    if score.size == 0:
        return
    block = np.empty((width, BLOCK_ROWS), np.float32)
    scales = np.empty(BLOCK_ROWS, np.float32)
    sums_sq = np.empty((TREE_DEPTH, BLOCK_ROWS))
    sums_mag = np.empty((TREE_DEPTH, BLOCK_ROWS))
    run_sq = np.empty((8, BLOCK_ROWS))
    run_mag = np.empty((8, BLOCK_ROWS))
    for first in range(0, n, BLOCK_ROWS):
        rows = min(BLOCK_ROWS, n - first)
        for i in range(rows):
            largest = amax[first + i]
            scales[i] = largest / qmax if largest > 0 else np.float32(1.0)
            for j in range(width):
                block[j, i] = x[first + i, j]
        _pairwise_rows(block, scales, rows, width, sums_sq, sums_mag, run_sq, run_mag)
        for i in range(rows):
            rms = np.sqrt(sums_sq[0, i] / width)
            mean_abs = sums_mag[0, i] / width
            score[first + i] = rms / mean_abs if mean_abs > 0 else 0.0


@njit(**_JIT)
def best_rows(score, count):
    """Positions of the ``count`` largest of ``score`` (float64 [n], no NaN; ``1 <= count <= n``), ties by lower
    position, ascending: the first ``count`` of a stable descending sort, sorted. One selection and one pass in
    position order (ascending by construction), no sort of every score."""
    n = score.size
    negated = np.empty(n)
    for i in range(n):
        negated[i] = -score[i]
    cutoff = np.partition(negated, count - 1)[count - 1]  # the count-th largest score, negated
    above = 0
    for i in range(n):
        if -score[i] < cutoff:
            above += 1
    ties_wanted = count - above
    rows = np.empty(count, np.int64)
    taken = 0
    for i in range(n):
        value = -score[i]
        if value < cutoff or (value == cutoff and ties_wanted > 0):
            if value == cutoff:
                ties_wanted -= 1
            rows[taken] = i
            taken += 1
    return rows
