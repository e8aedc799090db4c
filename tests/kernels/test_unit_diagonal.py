"""``spmm_hybrid`` on a matrix whose diagonal is implicit (``DSTEMatrix.unit_diagonal``).

The kernel adds the diagonal from each window's own output rows. Parity is checked against an independent SciPy
``D^-1/2 (A + I) D^-1/2`` built here from the adjacency (not from the format), within the kernel's documented
bound (``tests/kernels/error_bounds.py``: the diagonal slot is an entry slot, so the entry slots' bound holds);
the planner's mirror must charge each engine what the traced kernel charges, and the instruction bound must hold.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from dste.format import gcn_normalized
from dste.kernels import launch_spmm_hybrid as spmm_hybrid
from dste.kernels.correction import plan_corrections
from dste.kernels.mirror import launch_cost
from dste.kernels.plan import LaunchPlan, launch_instructions, plan_launches, program_plan
from tests.format.graphs import gcn_reference, uniform_graph
from tests.kernels.error_bounds import assert_within_bound, error_bound
from tests.kernels.test_fp16_correction import hybrid_with_rows

ENGINES = ("tensor", "vector", "scalar", "gpsimd", "dma")


@pytest.mark.parametrize("x_dtype", [np.float32, np.float16])
@pytest.mark.parametrize("lnc", [1, 2])
def test_dense_x_matches_scipy_with_the_diagonal_left_to_the_kernel(x_dtype, lnc):
    adj = uniform_graph(900, 1.0, seed=0)
    A = gcn_normalized(adj, unit_diagonal=True)
    assert A.unit_diagonal and A.n_windows == 8
    X = np.random.default_rng(1).standard_normal((900, 24)).astype(x_dtype)
    Y = spmm_hybrid(A, X, lnc=lnc)
    assert_within_bound(Y, gcn_reference(adj) @ X.astype(np.float64), A, X)
    isolated = np.flatnonzero(np.diff(adj.indptr) == 0)
    assert isolated.size > 200
    # an isolated node's row of A + I is its diagonal alone: D^-1/2 I D^-1/2 = 1, so y = x (to the bf16 operand)
    np.testing.assert_allclose(Y[isolated], X[isolated].astype(np.float32), rtol=2.0**-7, atol=0)


def test_hybrid_x_with_fp16_rows_reaches_the_diagonal_through_the_correction_pass():
    adj = uniform_graph(1000, 2.0, seed=2)
    A = gcn_normalized(adj, unit_diagonal=True)
    X = np.random.default_rng(3).standard_normal((1000, 40)).astype(np.float32)
    hi_rows = np.arange(0, 1000, 7)
    H = hybrid_with_rows(X, hi_rows)
    Y = spmm_hybrid(A, H)
    assert_within_bound(Y, gcn_reference(adj) @ H.dequantize().astype(np.float64), A, H)
    # without the correction entries of the diagonal, the FP16 rows' own terms would be missing
    isolated_hi = np.intersect1d(hi_rows, np.flatnonzero(np.diff(adj.indptr) == 0))
    assert isolated_hi.size
    np.testing.assert_allclose(Y[isolated_hi], H.dequantize()[isolated_hi], rtol=2.0**-7, atol=0)


def test_windows_without_tiles_are_planned_and_written():
    """A graph of isolated nodes has no tile at all: every window is its diagonal slot alone, and y = x."""
    adj = sp.csr_matrix((300, 300), dtype=np.float32)
    A = gcn_normalized(adj, unit_diagonal=True)
    assert A.n_tiles == A.n_etiles == A.n_ltiles == 0 and A.nnz_stored == 300
    plan = plan_launches(A, 8, "fp32")
    assert sorted(int(w) for launch in plan.launches for w in launch.windows if w >= 0) == [0, 1, 2]
    X = np.random.default_rng(4).standard_normal((300, 8)).astype(np.float32)
    np.testing.assert_allclose(spmm_hybrid(A, X), X, rtol=2.0**-7, atol=0)


@pytest.mark.parametrize("x_mode,F,degree", [("fp32", 64, 3.0), ("int8-hybrid", 48, 3.0), ("fp32", 2048, 24.0)])
def test_the_mirror_charges_what_the_trace_charges(x_mode, F, degree):
    n = 1200 if degree < 10 else 3000
    adj = uniform_graph(n, degree, seed=5)
    A = gcn_normalized(adj, unit_diagonal=True)
    X = np.random.default_rng(6).standard_normal((n, F)).astype(np.float32)
    if x_mode == "int8-hybrid":
        X = hybrid_with_rows(X, np.arange(0, n, 11))
    plan = plan_launches(A, F, x_mode, lnc=1)
    assert all(launch.bucket.diagonal for launch in plan.launches)
    if F == 2048:
        assert any(l.bucket.slots_per_window > l.bucket.group_size() for l in plan.launches), "groups of slots"
    _, prof = spmm_hybrid(A, X, profile=True, plan=plan, lnc=1)
    hi = (X.hi_index, int(X.hi.shape[0])) if x_mode == "int8-hybrid" else (None, 0)
    jobs = plan_corrections(A, program_plan(plan, 1), *hi, "trn2")
    costs = [launch_cost(A, job.launch, "trn2", (job.shape, job.valid)) for job in jobs]
    for model in ("optimistic", "descriptor"):
        traced = prof.engine_busy_ns(model)
        for engine in ENGINES:
            if engine == "dma":
                mirrored = max(np.sum([c.profile.dma_queue_ns_by_model[model] for c in costs], axis=0))
            else:
                mirrored = sum(c.busy_ns(model)[engine] for c in costs)
            assert mirrored == pytest.approx(traced[engine], rel=1e-9), (model, engine)
    assert sum(c.instructions for c in costs) == prof.total_instructions
    assert sum(c.bytes for c in costs) == prof.dma_bytes
    if x_mode == "fp32":  # the planner's instruction bound of each launch (no correction pass)
        for launch in plan.launches:
            one = LaunchPlan(plan.shape, plan.features, plan.x_mode, [launch])
            _, p = spmm_hybrid(A, X, profile=True, plan=one, lnc=1)
            assert p.total_instructions <= launch_instructions(launch.bucket)


def test_banded_row_ids_gather_the_diagonal_rows():
    """N >= 65,536: output row ids, and with them the diagonal's X rows, carry a band. One launch of a few windows
    (the rest of y stays zero) against the reference rows it writes."""
    n = 70_000
    adj = uniform_graph(n, 0.5, seed=7)
    A = gcn_normalized(adj, unit_diagonal=True)
    F = 8
    plan = plan_launches(A, F, "fp32", lnc=1)
    launch = next(l for l in plan.launches if (l.windows >= 0).sum() >= 2)
    one = LaunchPlan(plan.shape, F, "fp32", [launch])
    X = np.random.default_rng(8).standard_normal((n, F)).astype(np.float32)
    Y = spmm_hybrid(A, X, plan=one, lnc=1)
    rows = A.window_rows[launch.windows[launch.windows >= 0]].ravel()
    rows = rows[rows < n]
    assert rows.max() >= 65_536, "the launch writes rows of the second band"
    reference = gcn_reference(adj)[rows] @ X.astype(np.float64)
    bound = error_bound(A, X)[rows]
    assert (np.abs(Y[rows] - reference) <= bound).all()
    assert np.abs(Y[rows]).sum() > 0


@pytest.mark.parametrize("mode", ["fp32", "int8-hybrid"])
def test_the_estimate_prices_the_diagonal_as_the_trace_does(mode):
    """``estimate_spmm`` traces each launch shape once and prices the rest by their gathered rows: the diagonal's
    rows must be among them (a launch of the same shape gathers as many diagonal rows as it has rows)."""
    from dste.format import quantize_rows
    from dste.kernels.cost import estimate_spmm

    adj = uniform_graph(3000, 1.0, seed=9)
    A = gcn_normalized(adj, unit_diagonal=True)
    X = np.random.default_rng(10).standard_normal((3000, 32)).astype(np.float32)
    if mode == "int8-hybrid":
        X = quantize_rows(X, fp16_fraction=0.1)
    _, prof = spmm_hybrid(A, X, profile=True)
    est = estimate_spmm(A, 32, mode, X=X if mode == "int8-hybrid" else None)
    assert est.dma_bytes == prof.dma_bytes
    assert est.dma_transfers == prof.dma_transfers
    assert est.instructions == prof.total_instructions
    assert est.latency_us == pytest.approx(prof.latency_overlapped_us, rel=1e-9)
