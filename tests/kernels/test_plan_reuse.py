"""A launch plan passed back to ``launch_spmm_hybrid`` answers for the matrix it is given, never for another.

A plan caches the packed metadata blobs (keep bits, factors, values) of the matrix it first ran with. Reused for a
matrix with the same tiles (a new keep-mask: ``with_mask``) it must repack that matrix's arrays; given a matrix
whose tiles it does not describe (another encoding of the same shape) it must refuse. Tolerance: the kernel's
documented bound (``tests/kernels/error_bounds.py``, fp32 X: (2^-7 + 2^-16) |A| |X|).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from dste.format import encode, quantize_rows
from dste.kernels import launch_spmm_hybrid
from dste.kernels.plan import plan_launches, program_plan
from dste.reference.spmm import spmm_reference
from tests.kernels.error_bounds import BOUND_FP32_X, assert_within_bound


def _matrix(seed):
    rng = np.random.default_rng(seed)
    A = sp.random(200, 150, density=0.05, random_state=rng, format="csr")
    A.data = rng.standard_normal(A.nnz)
    return encode(A, kinds="auto")


@pytest.mark.parametrize("lnc", [1, 2], ids=["LNC1", "LNC2"])
def test_a_plan_reused_for_a_new_mask_runs_the_new_mask(lnc):
    A = _matrix(0)
    X = np.random.default_rng(1).standard_normal((150, 8)).astype(np.float32)
    plan = plan_launches(A, 8, "fp32", lnc=lnc)
    launch_spmm_hybrid(A, X, plan=plan, lnc=lnc)  # packs and caches A's blobs on the plan
    entries = A.decode().tocoo()
    keep = np.random.default_rng(2).random(entries.nnz) < 0.3
    masked = A.with_mask(sp.coo_matrix((keep, (entries.row, entries.col)), shape=A.shape).tocsr())
    Y = launch_spmm_hybrid(masked, X, plan=plan, lnc=lnc)
    assert_within_bound(Y, spmm_reference(masked, X), masked, X, BOUND_FP32_X)
    # and back: the first matrix again, through the same plan
    assert_within_bound(launch_spmm_hybrid(A, X, plan=plan, lnc=lnc), spmm_reference(A, X), A, X, BOUND_FP32_X)


def test_a_plan_for_other_tiles_is_refused():
    A, other = _matrix(0), _matrix(3)
    assert A.shape == other.shape
    plan = plan_launches(A, 8, "fp32")
    X = np.ones((150, 8), np.float32)
    with pytest.raises(ValueError, match="other tiles"):
        launch_spmm_hybrid(other, X, plan=plan)
    with pytest.raises(ValueError, match="other tiles"):
        launch_spmm_hybrid(other, quantize_rows(X), plan=plan_launches(A, 8, "int8-hybrid"))
    # the program plans cut from it carry the same check
    assert program_plan(plan, 2).structure == plan.structure


def test_estimate_spmm_refuses_a_plan_made_for_other_tiles():
    """estimate_spmm prices the jobs of the plan it is given: one planned for another encoding of the same shape
    priced that matrix's jobs as this one's."""
    from dste.kernels import estimate_spmm, plan_launches

    first = _matrix(1)
    rng = np.random.default_rng(2)
    other = encode(sp.random(200, 150, density=0.3, random_state=rng, format="csr"), kinds="auto")  # more tiles
    with pytest.raises(ValueError, match="other tiles"):
        estimate_spmm(other, 8, "fp32", plan=plan_launches(first, 8, "fp32"))
    estimate_spmm(first, 8, "fp32", plan=plan_launches(first, 8, "fp32"))  # its own plan is taken


@pytest.mark.parametrize("lnc", [1, 2], ids=["LNC1", "LNC2"])
def test_a_plan_that_has_run_pickles_and_runs_again(lnc):
    """A plan caches the packed arrays of the matrix it ran with under a weak reference, which pickle refuses; the
    pickled plan leaves them out and packs them again on its first launch."""
    import pickle

    A = _matrix(0)
    X = np.random.default_rng(1).standard_normal((150, 8)).astype(np.float32)
    plan = plan_launches(A, 8, "fp32", lnc=lnc)
    launch_spmm_hybrid(A, X, plan=plan, lnc=lnc)
    restored = pickle.loads(pickle.dumps(plan))
    assert_within_bound(launch_spmm_hybrid(A, X, plan=restored, lnc=lnc), spmm_reference(A, X), A, X, BOUND_FP32_X)
