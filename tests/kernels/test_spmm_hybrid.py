"""Parity of the simulated ``spmm_hybrid`` kernel against ``dste.reference.spmm_reference``.

Tolerances: the kernel's documented error bound, derived in ``tests/kernels/error_bounds.py``
((2^-7 + 2^-16) * |A| |X| for fp32 X, (2^-8 + 2^-11 + 2^-18) * |A| |X| for 16-bit or hybrid X).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import scipy.sparse as sp

from dste.format import EncodePolicy, HybridRows, encode, quantize_rows
from dste.kernels import launch_spmm_hybrid as spmm_hybrid
from dste.reference.spmm import reference_matrix, spmm_reference
from tests.kernels.error_bounds import BOUND_EXACT_X, BOUND_FP32_X, assert_within_bound



def random_matrix(n, m, density, seed, values="gauss", empty_rows=0, empty_window=False):
    rng = np.random.default_rng(seed)
    A = sp.random(n, m, density=density, random_state=rng, format="lil", dtype=np.float64)
    if values == "ones":
        A = (A != 0).astype(np.float64).tolil()
    elif values == "outliers":
        A = A.tocsr()
        A.data = rng.standard_normal(A.nnz)
        A.data[:: max(1, A.nnz // 7)] *= 200.0
        A = A.tolil()
    else:
        A = A.tocsr()
        A.data = rng.standard_normal(A.nnz)
        A = A.tolil()
    if empty_rows:
        for r in rng.choice(n, size=empty_rows, replace=False):
            A.rows[r] = []
            A.data[r] = []
    if empty_window and n > 256:
        for r in range(128, 256):
            A.rows[r] = []
            A.data[r] = []
    A = A.tocsr()
    A.eliminate_zeros()
    return A


def check(A, X, per_term, lnc=None):
    Y = spmm_hybrid(A, X, lnc=lnc)
    ref = spmm_reference(A, X if isinstance(X, HybridRows) else np.asarray(X, dtype=np.float32))
    assert Y.dtype == np.float32 and Y.shape == ref.shape
    assert_within_bound(Y, ref, A, X, per_term)
    return Y, ref


CASES = [
    # name, n, m, density, values, kinds, bitmap_min_entries, bitmap_split, layout, reorder, F
    # layout: the tile layouts the encoding must hold ("bitmap", "entry", "both"; "any" where the name
    # claims none); "mixed" also claims several tile kinds. A case that needs bitmap tiles only pins the
    # split rule: with bitmap_split="count" every column with at least bitmap_min_entries entries is a
    # bitmap column, while the default "cost" split may move sparse columns to entry tiles.
    ("bin-ones-F64", 300, 280, 0.05, "ones", "bin", None, "cost", "any", "none", 64),
    ("int8-F1", 200, 150, 0.08, "gauss", "int8", None, "cost", "any", "none", 1),
    ("fp16-F128", 260, 300, 0.04, "gauss", "fp16", None, "cost", "any", "rcm", 128),
    ("mixed-F200", 300, 300, 0.06, "outliers", "auto", 4, "cost", "both", "community", 200),
    ("entries-only-F64", 390, 410, 0.01, "gauss", "int8", 100, "cost", "entry", "none", 64),
    ("bitmap-only-F600", 140, 130, 0.3, "gauss", "auto", 1, "count", "bitmap", "none", 600),
    ("fp16-entries-F64", 250, 260, 0.02, "outliers", "fp16", 50, "cost", "entry", "none", 64),
]
KIND_OF = {"bin": 0, "int8": 1, "fp16": 2}


def encode_case(name, n, m, density, values, kinds, min_entries, split, layout, reorder):
    """Encode a case's matrix and check it holds what the case's name claims."""
    A_sp = random_matrix(n, m, density, seed=n + m, values=values, empty_rows=5, empty_window=True)
    policy = EncodePolicy(kinds=kinds, reorder=reorder, bitmap_min_entries=min_entries, bitmap_split=split)
    A = encode(A_sp, policy)
    if layout != "any":
        assert (A.n_tiles > 0) == (layout in ("bitmap", "both")), f"{name}: {A.n_tiles} bitmap tiles, expected {layout}"
        assert (A.n_etiles > 0) == (layout in ("entry", "both")), f"{name}: {A.n_etiles} entry tiles, expected {layout}"
    assert A.n_tiles + A.n_etiles > 0, f"{name}: no tiles at all"
    all_kinds = np.concatenate([A.tile_kind, A.etile_kind])
    if kinds in KIND_OF:
        assert (all_kinds == KIND_OF[kinds]).all(), f"{name}: tile kinds {np.bincount(all_kinds)}, expected all {kinds}"
    elif name.startswith("mixed"):
        assert np.unique(all_kinds).size >= 2, f"{name}: expected mixed tile kinds, got {np.bincount(all_kinds)}"
    return A


@pytest.mark.parametrize("name,n,m,density,values,kinds,min_entries,split,layout,reorder,F", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("x_kind", ["fp32", "hybrid", "hybrid-int8-only"])
@pytest.mark.parametrize("lnc", [1, 2], ids=["LNC1", "LNC2"])
def test_parity_table(name, n, m, density, values, kinds, min_entries, split, layout, reorder, F, x_kind, lnc):
    rng = np.random.default_rng(len(name) + F)
    A = encode_case(name, n, m, density, values, kinds, min_entries, split, layout, reorder)
    X = rng.standard_normal((m, F)).astype(np.float32)
    if x_kind.startswith("hybrid"):
        X = quantize_rows(X, fp16_fraction=0.15 if x_kind == "hybrid" else 0.0)
        check(A, X, BOUND_EXACT_X, lnc)
    else:
        check(A, X, BOUND_FP32_X, lnc)


def test_several_stores_per_launch_place_every_window():
    # identical windows share one bucket: one launch of 8 windows; at F=1100 the output buffer holds 3
    # windows (16 KiB per partition), so the launch buffers 3 + 3 + 2 windows, each scattered to its rows
    from dste.kernels.plan import launch_stores, plan_launches, windows_per_store

    n, F = 1024, 1100
    pattern = sp.random(128, n, density=0.02, random_state=np.random.default_rng(11), format="csr")
    A_sp = sp.vstack([pattern] * (n // 128)).tocsr()
    A_sp.data = np.random.default_rng(12).standard_normal(A_sp.nnz)
    A = encode(A_sp, kinds="int8")
    plan = plan_launches(A, F, "fp32")
    assert [launch.bucket.windows for launch in plan.launches] == [8]
    bucket = plan.launches[0].bucket
    assert windows_per_store(8, 1, F) == 3 and launch_stores(bucket) == 8
    X = np.random.default_rng(13).standard_normal((n, F)).astype(np.float32)
    check(A, X, BOUND_FP32_X)


def test_several_stores_per_launch_apply_each_windows_row_scale():
    # as above, with GCN row scales that differ between windows: the evacuation must scale by the window's
    # row scale, not by its slot in the output buffer (equal only for the first store of a launch)
    from dste.format import gcn_normalized
    from dste.kernels.plan import plan_launches, windows_per_store
    from tests.format.graphs import gcn_reference

    n, F = 1024, 1100
    pattern = sp.random(128, n, density=0.02, random_state=np.random.default_rng(11), format="csr")
    adj = sp.vstack([pattern] * (n // 128)).tocsr()
    extra = sp.random(n, n, density=0.01, random_state=np.random.default_rng(3), format="csr") != 0
    adj = ((adj + adj.T + extra + extra.T) > 0).astype(np.float32)
    A = gcn_normalized(adj)
    plan = plan_launches(A, F, "fp32")
    assert any(launch.bucket.windows > windows_per_store(launch.bucket.windows, 1, F) for launch in plan.launches)
    assert np.unique(A.row_scale).size > 1
    X = np.random.default_rng(13).standard_normal((n, F)).astype(np.float32)
    assert_within_bound(spmm_hybrid(A, X), gcn_reference(adj) @ X.astype(np.float64), A, X)


def test_bin_with_unit_scales_is_exact_for_bf16_x():
    # BIN tiles (value 1, no scales) and bf16 X: every operand exact, fp32 accumulation of
    # <= 128 terms per matmul is exact to fp32 rounding.
    A_sp = random_matrix(333, 257, 0.05, seed=3, values="ones")
    A = encode(A_sp, kinds="bin")
    X = np.random.default_rng(1).standard_normal((257, 64)).astype(ml_dtypes.bfloat16)
    Y = spmm_hybrid(A, X)
    ref = spmm_reference(A, X.astype(np.float32))
    S = abs(reference_matrix(A)) @ np.abs(X.astype(np.float64))
    assert (np.abs(Y - ref) <= 2.0**-20 * S + 1e-30).all()


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16])
def test_16bit_dense_x(dtype):
    A_sp = random_matrix(200, 190, 0.05, seed=4)
    A = encode(A_sp, kinds="fp16")
    X = np.random.default_rng(2).standard_normal((190, 64)).astype(dtype)
    check(A, X, BOUND_EXACT_X)


def test_gcn_scales_and_reordering():
    from dste.format import gcn_normalized

    rng = np.random.default_rng(5)
    adj = sp.random(400, 400, density=0.02, random_state=rng, format="csr")
    adj = ((adj + adj.T) > 0).astype(np.float32)
    for reorder in ("none", "community"):
        A = gcn_normalized(adj, reorder=reorder)
        assert A.row_scale is not None and A.col_scale is not None
        X = rng.standard_normal((400, 128)).astype(np.float32)
        check(A, X, BOUND_FP32_X)
        check(A, quantize_rows(X, fp16_fraction=0.05), BOUND_EXACT_X)


@pytest.mark.parametrize("mask", ["zero", "one", "random"])
def test_masks(mask):
    rng = np.random.default_rng(6)
    A_sp = random_matrix(300, 300, 0.04, seed=6)
    A = encode(A_sp, kinds="auto", bitmap_min_entries=3)
    if mask == "zero":
        keep = np.zeros_like(A.keep_bits)
        A = A.replace(keep_bits=keep, etile_keep_bits=np.zeros_like(A.etile_keep_bits))
    elif mask == "one":
        A = A.with_mask(A_sp != 0)
    else:
        A = A.with_mask(sp.random(300, 300, density=0.5, random_state=rng, format="csr") != 0)
    X = rng.standard_normal((300, 64)).astype(np.float32)
    Y, ref = check(A, X, BOUND_FP32_X)
    if mask == "zero":
        assert not Y.any()


def test_empty_matrix_gives_zeros():
    A = encode(sp.csr_matrix((130, 70)))
    Y, prof = spmm_hybrid(A, np.ones((70, 8), np.float32), profile=True)
    assert Y.shape == (130, 8) and not Y.any() and prof.launches == 0


def test_profile_is_modelled_and_counts_launches():
    A = encode(random_matrix(300, 300, 0.03, seed=7))
    Y, prof = spmm_hybrid(A, np.ones((300, 32), np.float32), profile=True)
    d = prof.to_dict()
    assert d["modelled"] is True and d["launches"] >= 1 and d["dma_bytes"] > 0
    assert d["instructions"]["tensor"] >= A.n_tiles + A.n_etiles


def test_torch_input():
    torch = pytest.importorskip("torch")
    A = encode(random_matrix(140, 100, 0.05, seed=8))
    X = torch.randn(100, 16)
    Y = spmm_hybrid(A, X)
    ref = spmm_reference(A, X.numpy())
    assert_within_bound(Y, ref, A, X.numpy(), BOUND_FP32_X)  # a float32 tensor is gathered as bf16, as NumPy's is


# ---- bad input ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small():
    return encode(random_matrix(150, 120, 0.05, seed=9))


def test_rejects_wrong_rows(small):
    with pytest.raises(ValueError, match="needs M = 120"):
        spmm_hybrid(small, np.ones((121, 4), np.float32))


def test_rejects_bad_dtype(small):
    with pytest.raises(TypeError, match="not supported"):
        spmm_hybrid(small, np.ones((120, 4), np.int32))


def test_rejects_non_finite(small):
    X = np.ones((120, 4), np.float32)
    X[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        spmm_hybrid(small, X)


@pytest.mark.parametrize("hybrid", [False, True])
def test_wide_features_run_as_column_blocks(small, hybrid):
    """F above one launch's 4096 (8 PSUM banks of 512 fp32) runs as column blocks; same bound as one launch."""
    from dste.kernels import estimate_spmm
    from dste.kernels.launch_spmm import feature_blocks

    assert feature_blocks(4100) == [(0, 2560), (2560, 1540)] and feature_blocks(4096) == [(0, 4096)]
    X = np.random.default_rng(3).standard_normal((120, 4100)).astype(np.float32)
    if hybrid:
        X = quantize_rows(X, fp16_fraction=0.05)
    Y, prof = spmm_hybrid(small, X, profile=True)
    assert Y.shape == (150, 4100)
    assert_within_bound(Y, spmm_reference(small, X), small, X)
    est = estimate_spmm(small, 4100, "int8-hybrid" if hybrid else "fp32", X=X if hybrid else None)
    assert est.features == 4100 and est.dma_bytes == prof.dma_bytes
    assert est.latency_us == pytest.approx(prof.latency_overlapped_us, rel=1e-6)


def test_wide_features_are_estimated_with_the_plans_of_their_column_blocks(small):
    """A caller that keeps plans (the GNN latency model) passes one per column block; the estimate is the same as
    planning here, and plans of other widths or a single plan are refused."""
    from dste.kernels import estimate_spmm
    from dste.kernels.launch_spmm import feature_blocks
    from dste.kernels.plan import plan_launches

    plans = tuple(plan_launches(small, width, "fp16") for _, width in feature_blocks(5000))
    assert [p.features for p in plans] == [2560, 2440]
    planned_here = estimate_spmm(small, 5000, "fp16")
    assert estimate_spmm(small, 5000, "fp16", plan=plans) == planned_here
    with pytest.raises(ValueError, match="2 column blocks"):
        estimate_spmm(small, 5000, "fp16", plan=plans[0])
    with pytest.raises(ValueError, match="a block plan was made for F=2440"):
        estimate_spmm(small, 5000, "fp16", plan=plans[::-1])


def test_rejects_empty_features_and_a_plan_for_wide_features(small):
    from dste.kernels.plan import plan_launches

    with pytest.raises(ValueError, match="no columns"):
        spmm_hybrid(small, np.ones((120, 0), np.float32))
    with pytest.raises(ValueError, match="pass plan=None"):
        spmm_hybrid(small, np.ones((120, 4097), np.float32), plan=plan_launches(small, 8, "fp32"))


def test_rejects_1d(small):
    with pytest.raises(ValueError, match="2-D"):
        spmm_hybrid(small, np.ones(120, np.float32))


def test_rejects_mismatched_plan(small):
    from dste.kernels.plan import plan_launches

    plan = plan_launches(small, 8, "fp32")
    with pytest.raises(ValueError, match="plan was made for F=8"):
        spmm_hybrid(small, np.ones((120, 4), np.float32), plan=plan)


def test_rejects_non_matrix():
    with pytest.raises(TypeError, match="DSTEMatrix"):
        spmm_hybrid(np.eye(3), np.ones((3, 2), np.float32))


@pytest.mark.parametrize("lnc", [1, 2])
def test_hybrid_x_of_large_magnitude_stays_finite(lnc):
    """|x| x column factor far beyond fp16's 65504 (X ~ N(0, 1e5), column factors up to 8): on-chip operands
    are bf16 (fp32's range), so the result is finite and within the kernel's bound. A dequantization into
    fp16 on chip gave thousands of NaN here."""
    rng = np.random.default_rng(11)
    A = encode(random_matrix(300, 260, 0.05, seed=11), EncodePolicy(kinds="int8"))
    A = A.replace(col_scale=rng.uniform(0.5, 8.0, 260).astype(np.float32))
    X = quantize_rows((rng.standard_normal((260, 64)) * 1e5).astype(np.float32), fp16_fraction=0.0)
    Y = spmm_hybrid(A, X, lnc=lnc)
    assert np.isfinite(Y).all()
    assert_within_bound(Y, spmm_reference(A, X), A, X, BOUND_EXACT_X)


def test_tiny_column_factors_keep_their_precision():
    """Column scale x INT8 tile scale far below fp16's normal range (6e-5) keeps bf16's relative precision."""
    rng = np.random.default_rng(12)
    A = encode(random_matrix(200, 180, 0.06, seed=12), EncodePolicy(kinds="int8"))
    A = A.replace(col_scale=rng.uniform(1e-12, 1e-10, 180).astype(np.float32))
    X = quantize_rows(rng.standard_normal((180, 32)).astype(np.float32), fp16_fraction=0.0)
    Y = spmm_hybrid(A, X)
    ref = spmm_reference(A, X)
    assert np.abs(ref).max() > 0
    assert_within_bound(Y, ref, A, X, BOUND_EXACT_X)


def test_rejects_fp32_x_that_bf16_rounds_to_inf(small):
    """A finite fp32 value from 2^127 (2 - 2^-8) on rounds to bf16 Inf in the gather: the product came back NaN in
    every row of the windows that gathered it (the float64 reference is finite). Just below, the result is finite."""
    from dste.kernels.launch_spmm import BF16_ROUNDS_TO_INF

    X = np.zeros((120, 4), np.float32)
    X[5, 1] = np.float32(3.4e38)
    with pytest.raises(ValueError, match="rounds to Inf"):
        spmm_hybrid(small, X)
    with pytest.raises(ValueError, match="rounds to Inf"):
        spmm_hybrid(small, X.astype(np.float64))
    X[5, 1] = np.nextafter(np.float32(BF16_ROUNDS_TO_INF), np.float32(0))
    A = small.replace(col_scale=np.full(120, 1e-3, np.float32))  # |a| x ~ 1e36 stays within fp32
    Y = spmm_hybrid(A, X)
    assert np.isfinite(Y).all()
    assert_within_bound(Y, spmm_reference(A, X), A, X, BOUND_FP32_X)


def test_rejects_a_matrix_whose_values_times_column_scales_bf16_rounds_to_inf():
    """The stationary holds each stored value times its column scale in bf16: from 2^127 (2 - 2^-8) on that is Inf,
    and Y came back Inf, and NaN where X's row was 0, while the float64 product is finite. A row scale is applied in
    fp32 after the product, so the same magnitude there runs."""
    import scipy.sparse as sp
    from dste.format import encode

    X = np.array([[0.5, 0.0], [0.5, 0.0]], np.float32)
    ones = sp.csr_matrix(np.ones((2, 2), np.float32))
    huge = np.float32(3.4e38)
    for A in (encode(sp.csr_matrix(np.array([[huge, 1.0], [1.0, 1.0]], np.float32)), kinds="int8"),
              encode(ones, col_scale=np.array([huge, 1.0], np.float32), scaled_input=False)):
        with pytest.raises(ValueError, match=r"entry \(0, 0\) .* bf16 stationary rounds to Inf"):
            spmm_hybrid(A, X)
    A = encode(ones, row_scale=np.array([huge, 1.0], np.float32), scaled_input=False)
    Y = spmm_hybrid(A, X)
    np.testing.assert_allclose(Y, [[3.4e38, 0.0], [1.0, 0.0]], rtol=2**-7)


def test_a_hub_beyond_one_windows_slots_is_refused_by_window_and_kind():
    """A node of degree 60,000 touches 469 column tiles in its window, beyond the 384 of a kind one launch holds; the
    refusal said only "a window has 469 tiles of one kind"."""
    import scipy.sparse as sp

    from dste.kernels.plan import plan_launches

    n = 60_001
    hub = sp.csr_matrix((np.ones(n - 1, np.float32), (np.zeros(n - 1, np.int64), np.arange(1, n))), shape=(n, n))
    with pytest.raises(ValueError, match=r"window 0 holds 469 entry tiles of kind BIN; .* at most 384 of a kind"
                                         r".*\(a node of degree above 49,152"):
        plan_launches(encode(hub), 8, "fp32")


def test_a_window_is_refused_by_its_slots_rounded_up_to_compiled_shapes():
    """Each kind's tiles are rounded up the ladder of compiled slot counts before the window's 384 slots are counted:
    192 + 192 tiles run, 193 + 191 need 256 + 192. The refusal named neither the rounding nor the counts."""
    import scipy.sparse as sp

    from dste.kernels.plan import plan_launches

    columns = 60_000
    for bitmap, entry, refused in ((192, 192, False), (193, 191, True)):
        rows = np.r_[np.zeros(bitmap * 128, int), np.ones(bitmap * 128, int), np.full(entry * 128, 2)]
        cols = np.r_[np.arange(bitmap * 128), np.arange(bitmap * 128), bitmap * 128 + np.arange(entry * 128)]
        A = encode(sp.csr_matrix((np.ones(rows.size, np.float32), (rows, cols)), shape=(130, columns)),
                   bitmap_split="count", bitmap_min_entries=2)
        assert (A.n_tiles, A.n_etiles) == (bitmap, entry)
        if refused:
            with pytest.raises(ValueError, match=r"window 0 needs 448 tile slots \(BIN 193 -> 256, entry BIN 191 -> "
                                                 r"192: each kind's tiles rounded up"):
                plan_launches(A, 8, "fp32")
        else:
            plan_launches(A, 8, "fp32")
