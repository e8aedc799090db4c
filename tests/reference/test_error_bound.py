"""``dste.reference.spmm_error_bound``: the kernel's tolerance against the reference, for parity tests."""

import ml_dtypes
import numpy as np
import pytest
import scipy.sparse as sp

from dste import reference
from dste.format import encode, gcn_normalized, quantize_rows
from dste.kernels import launch_spmm_hybrid
from dste.reference.spmm import BF16_OPERANDS_BOUND, ONE_ROUNDING_BOUND


@pytest.fixture(scope="module")
def matrix():
    adj = sp.random(300, 300, density=0.03, format="csr", random_state=1)
    return gcn_normalized(((adj + adj.T) > 0).astype(np.float32), reorder="community")


def _x():
    return np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32)


@pytest.mark.parametrize("form", ["float32", "float64", "bfloat16", "float16", "hybrid"])
def test_the_kernel_lies_within_the_bound_and_uses_a_fair_share_of_it(matrix, form):
    x = _x()
    X = {"float32": x, "float64": x.astype(np.float64), "bfloat16": x.astype(ml_dtypes.bfloat16),
         "float16": x.astype(np.float16), "hybrid": quantize_rows(x, fp16_fraction=0.05)}[form]
    error = np.abs(np.asarray(launch_spmm_hybrid(matrix, X), np.float64) - reference.spmm_reference(matrix, X))
    bound = reference.spmm_error_bound(matrix, X)
    assert (error <= bound).all()
    # a bound many times the error would pass a broken kernel: the worst element uses a tenth of it at least
    assert (error / bound).max() > 0.1


def test_the_bound_is_the_per_term_error_times_the_absolute_product_worked_by_hand():
    A = encode(sp.csr_matrix(np.array([[0.5, -0.25], [0.0, 1.0]], np.float32)))  # exact in every tile kind
    x = np.array([[1.0, -2.0], [3.0, 0.5]], np.float32)
    # |A| |x| = [[0.5 * 1 + 0.25 * 3, 0.5 * 2 + 0.25 * 0.5], [1 * 3, 1 * 0.5]]
    by_hand = np.array([[1.25, 1.125], [3.0, 0.5]])
    np.testing.assert_allclose(reference.spmm_error_bound(A, x), BF16_OPERANDS_BOUND * by_hand, rtol=1e-15)
    np.testing.assert_allclose(reference.spmm_error_bound(A, x.astype(np.float16)), ONE_ROUNDING_BOUND * by_hand,
                               rtol=1e-15)


@pytest.mark.parametrize("entry", [0, 500, -1])
def test_a_kernel_that_drops_one_product_falls_outside_the_bound(matrix, entry):
    """The bound is tight enough to catch the smallest real fault: the kernel run on the matrix with one stored
    entry masked out (one product dropped) against the reference of the whole matrix."""
    x = _x()
    stored = sp.coo_matrix(reference.reference_matrix(matrix))
    keep = sp.csr_matrix(stored, dtype=bool)
    row, col = stored.row[entry], stored.col[entry]
    keep[row, col] = False
    keep.eliminate_zeros()
    y = np.asarray(launch_spmm_hybrid(matrix.with_mask(keep), x), np.float64)
    outside = np.abs(y - reference.spmm_reference(matrix, x)) > reference.spmm_error_bound(matrix, x)
    assert outside[row].any() and not np.delete(outside, row, axis=0).any()


def test_bad_operands_are_refused(matrix):
    with pytest.raises(ValueError, match=r"X must be \[M=300, F\]"):
        reference.spmm_error_bound(matrix, np.ones((299, 4), np.float32))
    with pytest.raises(ValueError, match="finite"):
        reference.spmm_error_bound(matrix, np.full((300, 4), np.nan, np.float32))
    with pytest.raises(TypeError, match="real array or hybrid rows"):
        reference.spmm_error_bound(matrix, np.full((300, 4), "a"))
