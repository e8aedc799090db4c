"""The ``spmm_hybrid`` kernel's list-tile path against ``dste.reference.spmm_reference`` (NumPy/SciPy).

Tolerances (``tests/kernels/error_bounds.py``): a list stationary is built as ``S = P.T @ R`` on TensorE with
``P`` the exact one-hot of the entries' column slots and ``R`` the one-hot of their rows times the bf16-rounded
weight; a (column, row) pair appears in one entry at most, so S holds that one bf16 weight exactly and its
evacuation to bf16 is exact for a dense X: the same single 2^-8 rounding of the stationary as an entry tile
(``BOUND_EXACT_X`` for bf16 X, ``BOUND_FP32_X`` for fp32 X, which the gather also rounds). For a hybrid X the
evacuation also multiplies by the gathered rows' INT8 scale (one listed column per partition), a second bf16
rounding of the stationary, so the bound is ``(1 + 2^-8)^2 - 1 < BOUND_FP32_X`` per term.
"""

from __future__ import annotations

import functools

import ml_dtypes
import numpy as np
import pytest
import scipy.sparse as sp

from dste.format import encode, gcn_normalized, quantize_rows
from dste.format.constants import LIST_TILE_COLS, TileKind
from dste.kernels import launch_spmm_hybrid as spmm_hybrid
from dste.kernels.correction import correction_entries
from dste.kernels.cost import estimate_spmm
from dste.kernels.plan import launch_instructions, plan_launches, program_plan
from dste.reference.spmm import spmm_reference
from tests.format.graphs import community_graph
from tests.kernels.error_bounds import BOUND_EXACT_X, BOUND_FP32_X, assert_within_bound

LIST_FRIENDLY = dict(gather_transfer_bytes=0, x_row_bytes=136)
"""No per-transfer price: columns of a few entries go to list tiles rather than bitmap tiles."""


def _shared_columns(n_columns, per_column, n_rows=128, first_col=0, n_cols=None, seed=0, spacing=1):
    """One window of ``n_columns`` columns (ids ``first_col + spacing * c``) of ``per_column`` entries each,
    values N(0, 1)."""
    rng = np.random.default_rng(seed)
    rows, cols = [], []
    for c in range(n_columns):
        rows += [(c * 7 + i * 41) % n_rows for i in range(per_column)]
        cols += [first_col + spacing * c] * per_column
    n_cols = n_cols or first_col + spacing * n_columns
    return sp.csr_matrix((rng.standard_normal(len(rows)), (rows, cols)), shape=(n_rows, n_cols))


def _check(A, X, per_term, lnc):
    Y = spmm_hybrid(A, X, lnc=lnc)
    ref = spmm_reference(A, X if not isinstance(X, np.ndarray) else np.asarray(X, np.float32))
    assert Y.dtype == np.float32 and Y.shape == ref.shape
    assert_within_bound(Y, ref, A, X, per_term)
    return Y, ref


@pytest.mark.parametrize("kinds,expected_kind", [("bin", TileKind.BIN), ("int8", TileKind.INT8), ("fp16", TileKind.FP16)])
@pytest.mark.parametrize("lnc", [1, 2])
def test_list_tiles_of_each_kind_match_the_reference(kinds, expected_kind, lnc):
    A_in = _shared_columns(40, 3)
    if kinds == "bin":
        A_in = (A_in != 0).astype(np.float64)
    A = encode(A_in, kinds=kinds, list_tiles=True, **LIST_FRIENDLY)
    assert (A.n_tiles, A.n_etiles, A.n_ltiles) == (0, 0, 1) and A.ltile_kind[0] == expected_kind
    X = np.random.default_rng(1).standard_normal((40, 24)).astype(ml_dtypes.bfloat16)
    Y, ref = _check(A, X, BOUND_EXACT_X, lnc)
    if kinds == "bin":
        # unit weights and bf16 X: every product is exact, only fp32 accumulation rounds
        np.testing.assert_allclose(Y, ref, rtol=2.0**-20, atol=1e-6)


@functools.lru_cache(maxsize=None)  # read only by the tests (with_mask returns a new matrix)
def _graph_with_lists(n=1500, seed=3):
    adj, _ = community_graph(n, seed=seed)
    A = gcn_normalized(adj, reorder="community", list_tiles=True, **LIST_FRIENDLY)
    assert A.n_ltiles > 0 and A.n_tiles > 0 and A.n_etiles > 0
    return A


@pytest.mark.parametrize("lnc", [1, 2])
def test_graph_with_all_three_layouts_dense_x(lnc):
    A = _graph_with_lists()
    X = np.random.default_rng(2).standard_normal((A.shape[1], 40)).astype(np.float32)
    _check(A, X, BOUND_FP32_X, lnc)


@pytest.mark.parametrize("lnc", [1, 2])
def test_hybrid_x_with_fp16_rows_among_the_listed_columns(lnc):
    A = _graph_with_lists()
    rng = np.random.default_rng(4)
    X = quantize_rows(rng.standard_normal((A.shape[1], 40)).astype(np.float32), fp16_fraction=0.1)
    listed = np.unique(A.ltile_cols[A.ltile_cols < A.shape[1]])
    assert np.isin(X.hi_rows, listed).any(), "some FP16 rows must be listed columns of list tiles"
    # the correction pass lists the list tiles' entries in FP16 rows too
    plan = program_plan(plan_launches(A, 40, "int8-hybrid"), lnc)
    listed_entries = int(sum(
        ((A.ltile_cols[t, A.ltile_colslot[t, :A.ltile_nentries[t]]][:, None] == X.hi_rows[None, :]).any(axis=1)).sum()
        for t in range(A.n_ltiles)))
    entries = correction_entries(A, plan, X.hi_index, int(X.hi.shape[0]))
    # every stored entry (of any layout) in an FP16 row is corrected once, the list tiles' included
    coo = A.decode().tocoo()
    assert len(entries) == int(np.isin(coo.col, X.hi_rows).sum()) > listed_entries > 0
    _check(A, X, BOUND_FP32_X, lnc)


def test_masks_apply_to_list_tiles():
    A = _graph_with_lists(900, seed=5)
    rng = np.random.default_rng(6)
    coo = A.decode().tocoo()
    keep = rng.random(coo.nnz) < 0.6
    mask = sp.csr_matrix((keep.astype(np.float32), (coo.row, coo.col)), shape=A.shape)
    masked = A.with_mask(mask)
    assert int(masked.ltile_keep_bits.sum()) < int(A.ltile_keep_bits.sum())
    X = rng.standard_normal((A.shape[1], 16)).astype(np.float32)
    Y, ref = _check(masked, X, BOUND_FP32_X, 2)
    # the dropped entries are really gone: the unmasked product differs
    assert np.abs(spmm_reference(A, X) - ref).max() > 1e-3


def test_tile_at_the_limits_127_entries_over_64_columns():
    # 100 columns of 2 entries: packed 127 per tile in column order, the first tile names 64 columns
    # (63 whole columns and one entry of the 64th, which the next tile lists again)
    A = encode(_shared_columns(100, 2, seed=7), kinds="int8", list_tiles=True, **LIST_FRIENDLY)
    assert A.n_ltiles == 2 and A.n_tiles == 0
    full = int(np.argmax(A.ltile_nentries))
    assert (int(A.ltile_nentries[full]), int(A.ltile_ncols[full])) == (127, LIST_TILE_COLS)
    X = np.random.default_rng(8).standard_normal((A.shape[1], 20)).astype(ml_dtypes.bfloat16)
    for lnc in (1, 2):
        _check(A, X, BOUND_EXACT_X, lnc)


def test_column_bands_past_65536_x_rows():
    # listed columns on both sides of the first band boundary (2 bands: one band bit per id)
    A_in = _shared_columns(30, 3, first_col=60000, spacing=400, n_cols=75000, seed=9)
    A = encode(A_in, kinds="fp16", list_tiles=True, **LIST_FRIENDLY)
    assert A.n_ltiles == 1 and (A.ltile_cols[0, :30] >= 65536).any() and (A.ltile_cols[0, :30] < 65536).any()
    X = np.random.default_rng(10).standard_normal((A.shape[1], 4)).astype(np.float32)
    _check(A, X, BOUND_FP32_X, 1)


def test_plan_prices_list_slots_and_the_estimate_equals_a_real_run():
    A = _graph_with_lists(900, seed=11)
    plan = plan_launches(A, 64, "fp32")
    assert sum(l.bucket.list_slots for l in plan.launches) > 0
    assert plan.n_tiles == A.n_tiles + A.n_etiles + A.n_ltiles
    X = np.random.default_rng(12).standard_normal((A.shape[1], 64)).astype(np.float32)
    _, prof = spmm_hybrid(A, X, profile=True, plan=plan, lnc=1)
    est = estimate_spmm(A, 64, "fp32", plan=plan, lnc=1)
    assert est.latency_us == pytest.approx(prof.latency_us("descriptor"), rel=1e-9)
    assert est.dma_bytes == prof.dma_bytes and est.instructions == prof.total_instructions
    # the planner's instruction bound holds for every launch
    for launch in plan.launches:
        one = type(plan)(plan.shape, plan.features, plan.x_mode, [launch])
        _, p = spmm_hybrid(A, X, profile=True, plan=one, lnc=1)
        assert p.total_instructions <= launch_instructions(launch.bucket)


def test_wide_x_with_list_tiles_runs_in_column_blocks():
    from dste.kernels.launch_spmm import feature_blocks, max_features_of
    from dste.kernels.plan import MAX_FEATURES_WITH_LISTS

    A = encode(_shared_columns(40, 3, seed=13), kinds="bin", list_tiles=True, **LIST_FRIENDLY)
    assert max_features_of(A) == MAX_FEATURES_WITH_LISTS == 3584
    assert [w for _, w in feature_blocks(4096, max_features_of(A))] == [2048, 2048]
    with pytest.raises(ValueError, match="plan_launches: F=4096 with 1 list tiles"):
        plan_launches(A, 4096, "fp32")


@pytest.mark.parametrize("lnc", [1, 2])
def test_odd_list_tile_count_leaves_half_a_pair_as_padding(lnc):
    # 150 columns of 2 entries: three list tiles (127 + 127 + 46 entries) in one window = two pairs, the
    # second with an empty half; a second window with one list tile only shares the launch shape
    first = sp.vstack([_shared_columns(150, 2, seed=14), sp.csr_matrix((128, 150))])
    second = sp.csr_matrix((np.ones(6), ([130, 170, 131, 171, 132, 172], [150, 150, 151, 151, 152, 152])),
                           shape=(256, 153))
    A = encode((sp.hstack([first, sp.csr_matrix((256, 3))]) + second).tocsr(), kinds="int8", list_tiles=True,
               **LIST_FRIENDLY)
    per_window = np.diff(A.lwindow_ptr)
    assert sorted(per_window.tolist()) == [1, 3] and A.n_tiles == 0
    plan = plan_launches(A, 8, "fp32")
    assert {l.bucket.list_slots for l in plan.launches} <= {2, 4}
    X = np.random.default_rng(15).standard_normal((A.shape[1], 8)).astype(ml_dtypes.bfloat16)
    _check(A, X, BOUND_EXACT_X, lnc)
    if lnc == 1:
        return  # the wide launches below run as LNC2 whatever the parameter: once is enough
    # 3,584 features in one launch (7 accumulator banks + the list bank), 4,096 as two column blocks
    for F in (3584, 4096):
        X = np.random.default_rng(F).standard_normal((A.shape[1], F)).astype(np.float32)
        _check(A, X, BOUND_FP32_X, 2)


def test_bitvec_operators_take_no_scalar_immediates(monkeypatch):
    # The nki.isa stub types a tensor_scalar immediate as float and no doc says how a float immediate becomes a bit
    # pattern, so the kernel gives its bitvec operators (the keep-bit extraction of entry and list tiles) int32 tiles.
    import dste.nkisim.isa as isa

    immediates = []
    original = isa.bits_scalar

    def recording(value, instr, role):
        if not isinstance(value, np.ndarray):
            immediates.append((instr, role, value))
        return original(value, instr, role)

    monkeypatch.setattr(isa, "bits_scalar", recording)
    with_entries = _graph_with_lists(900, seed=5)
    lists_only = encode(_shared_columns(100, 2, seed=7), kinds="int8", list_tiles=True, **LIST_FRIENDLY)
    assert lists_only.n_ltiles > 0 and lists_only.n_etiles == 0  # the kernel's second source of the bit constants
    for A in (with_entries, lists_only):
        X = np.random.default_rng(1).standard_normal((A.shape[1], 8)).astype(np.float32)
        _check(A, X, BOUND_FP32_X, lnc=1)
    assert immediates == []
