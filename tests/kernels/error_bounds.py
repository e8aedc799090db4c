"""Error bound of the ``spmm_hybrid`` kernel against ``dste.reference.spmm_reference`` (float64).

The bound and its derivation are public (``dste.reference.spmm_error_bound``): per output element,
``e * S`` with S = sum_k |a_ik| |x_kj| over the decoded A and e the per-term error of the kernel's bf16 operands,
``(2^-7 + 2^-16)`` for fp32 X and ``(2^-8 + 2^-11 + 2^-18)`` for 16-bit or hybrid X. These helpers take another
``per_term`` where a test checks a tighter case (BIN tiles with unit scales are exact in bf16: 2^-20 * S).
"""

from __future__ import annotations

import numpy as np

from dste.reference import reference_matrix, spmm_error_bound
from dste.reference.spmm import BF16_OPERANDS_BOUND, ONE_ROUNDING_BOUND, dense_operand

BOUND_FP32_X = BF16_OPERANDS_BOUND
"""Relative error per term |a||x| for fp32 X (both operands rounded to bf16)."""
BOUND_EXACT_X = ONE_ROUNDING_BOUND
"""Relative error per term for bf16 / fp16 / hybrid-row X (stationary to bf16, dequantization to fp16)."""


def error_bound(A, X, per_term=None) -> np.ndarray:
    """``per_term * S`` with S = |A| |X| (A and X as ``dste.reference`` reads them), float64 ``[N, F]``; the public
    bound where ``per_term`` is None."""
    if per_term is None:
        return spmm_error_bound(A, X)
    # |A| and X as the independent reference reads them: the bound does not scale with the code under test
    S = abs(reference_matrix(A)) @ np.abs(dense_operand(X))
    return per_term * np.asarray(S) + 1e-30


def assert_within_bound(Y, ref, A, X, per_term=None, slack=0.0):
    """``|Y - ref| <= error_bound(A, X) + slack`` everywhere, naming the worst element otherwise."""
    err = np.abs(np.asarray(Y, dtype=np.float64) - ref)
    limit = error_bound(A, X, per_term) + slack
    worst = np.unravel_index(np.argmax(err - limit), err.shape)
    assert (err <= limit).all(), f"error {err[worst]:.3g} > bound {limit[worst]:.3g} at {worst}"
