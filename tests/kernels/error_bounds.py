"""Error bound of the ``spmm_hybrid`` kernel against ``dste.reference.spmm_reference`` (float64).

Per output element, from the operands' rounding; S = sum_k |a_ik| |x_kj| over the decoded A. Every term is
the product of a bf16 stationary and a 16-bit moving element, one of which carries all the rounding:
- dense X: the stationary is keep * value * column factor rounded once to bf16 (8 significant bits, unit
  roundoff 2^-8); fp32 X is rounded to bf16 by the gather (<= 2^-8 per term), bf16/fp16 X is exact;
- hybrid-row X, BIN and INT8 bitmap slots: the moving operand is q * row scale * column factor rounded once
  to bf16 (<= 2^-8), the stationary the exact mask (times the INT8 value, exact in bf16);
- hybrid-row X, FP16 bitmap slots and entry slots: the moving operand is q, exact in bf16, and the
  stationary keep * value * factor * row scale is rounded once to bf16 (<= 2^-8);
- PSUM accumulation and the fp32 row-scale multiply: fp32, second order at these sizes.
So |Y - Y_ref| <= (2^-7 + 2^-16) * S for fp32 X ((1 + 2^-8)^2 - 1) and <= (2^-8 + 2^-11 + 2^-18) * S for
16-bit or hybrid X (one 2^-8 rounding, with room for the fp32 terms). INT8 *tile* values are not re-rounded
by the kernel (the reference decodes the same INT8 values), so every kind gets the same bound; BIN tiles
with unit scales are exact in bf16, which a tight test checks separately (2^-20 * S).
"""

from __future__ import annotations

import numpy as np

from dste.format import HybridRows
from dste.reference import reference_matrix
from dste.reference.spmm import dense_operand

BOUND_FP32_X = 2.0**-7 + 2.0**-16
"""Relative error per term |a||x| for fp32 X (both operands rounded to bf16)."""
BOUND_EXACT_X = 2.0**-8 + 2.0**-11 + 2.0**-18
"""Relative error per term for bf16 / fp16 / hybrid-row X (stationary to bf16, dequantization to fp16)."""


def per_term_bound(X) -> float:
    """The per-term bound for this X: fp32 (and float64, cast to fp32) X is rounded to bf16 by the gather."""
    if isinstance(X, HybridRows):
        return BOUND_EXACT_X
    return BOUND_FP32_X if np.asarray(X).dtype in (np.float32, np.float64) else BOUND_EXACT_X


def error_bound(A, X, per_term=None) -> np.ndarray:
    """``per_term * S`` with S = |A| |X| (A and X as ``dste.reference`` reads them), float64 ``[N, F]``."""
    per_term = per_term_bound(X) if per_term is None else per_term
    # |A| and X as the independent reference reads them: the bound does not scale with the code under test
    dense_x = dense_operand(X) if isinstance(X, HybridRows) else np.asarray(X, dtype=np.float32).astype(np.float64)
    S = abs(reference_matrix(A)) @ np.abs(dense_x)
    return per_term * np.asarray(S) + 1e-30


def assert_within_bound(Y, ref, A, X, per_term=None, slack=0.0):
    """``|Y - ref| <= error_bound(A, X) + slack`` everywhere, naming the worst element otherwise."""
    err = np.abs(np.asarray(Y, dtype=np.float64) - ref)
    limit = error_bound(A, X, per_term) + slack
    worst = np.unravel_index(np.argmax(err - limit), err.shape)
    assert (err <= limit).all(), f"error {err[worst]:.3g} > bound {limit[worst]:.3g} at {worst}"
