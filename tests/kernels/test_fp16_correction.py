"""The FP16-row correction pass of ``spmm_hybrid`` (hybrid X with FP16 rows).

Parity against ``dste.reference.spmm_reference`` within the kernel's documented bound
(``tests/kernels/error_bounds.py``: (2^-8 + 2^-11 + 2^-18) * |A| |X| for hybrid X; the correction
stationary rounds keep * value * column factor to bf16 once, like the main pass, and FP16 rows are
exact in the fp16 moving operand, so the same bound applies).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from dste.format import EncodePolicy, encode, gcn_normalized, quantize_rows
from dste.kernels import launch_spmm_hybrid as spmm_hybrid
from dste.kernels.correction import NO_CORRECTION, correction_entries, plan_corrections
from dste.kernels.plan import plan_launches
from dste.reference.spmm import spmm_reference
from tests.kernels.error_bounds import BOUND_EXACT_X, assert_within_bound, error_bound


def hub_graph(n, density, hubs, seed):
    """Symmetric random graph plus hub nodes adjacent to every node (their columns touch every window)."""
    rng = np.random.default_rng(seed)
    adj = sp.random(n, n, density=density, random_state=rng, format="lil")
    for h in hubs:
        adj[h, :] = 1.0
        adj[:, h] = 1.0
    adj = adj.tocsr()
    return ((adj + adj.T) > 0).astype(np.float32)


def hybrid_with_rows(X, hi_rows):
    """Hybrid X whose FP16 rows are exactly ``hi_rows`` (sensitivity 1 there, 0 elsewhere)."""
    sensitivity = np.zeros(X.shape[0])
    sensitivity[list(hi_rows)] = 1.0
    return quantize_rows(X, sensitivity, threshold=0.5)


def check(A, X, **kwargs):
    Y = spmm_hybrid(A, X, **kwargs)
    ref = spmm_reference(A, X)
    assert Y.dtype == np.float32 and Y.shape == ref.shape
    assert_within_bound(Y, ref, A, X, BOUND_EXACT_X)
    return Y


@pytest.fixture(scope="module")
def hub_matrix():
    # 700 nodes: 6 windows; hubs 3 and 400 are in every window's columns
    return gcn_normalized(hub_graph(700, 0.01, hubs=(3, 400), seed=1), reorder="community")


@pytest.mark.parametrize("fraction", [0.01, 0.05, 0.3, 1.0])
def test_parity_with_fp16_fractions(hub_matrix, fraction):
    A = hub_matrix
    X = np.random.default_rng(2).standard_normal((A.shape[1], 64)).astype(np.float32)
    H = quantize_rows(X, fp16_fraction=fraction)
    assert H.hi.shape[0] == round(fraction * A.shape[1])
    check(A, H)
    # the FP16 rows matter: a result without their contribution would break the bound
    int8_part = H.dequantize().astype(np.float64)
    int8_part[H.hi_rows] = 0.0
    contribution = spmm_reference(A, H) - A.decode() @ int8_part
    assert (np.abs(contribution) > error_bound(A, H)).any()


def test_rows_in_every_window_and_many_tiles(hub_matrix):
    """Hub rows (in every window) in FP16, plus enough FP16 rows that some group needs several tiles."""
    A = hub_matrix
    X = np.random.default_rng(3).standard_normal((A.shape[1], 128)).astype(np.float32)
    H = hybrid_with_rows(X, [3, 400, *range(10, 700, 3)])
    plan = plan_launches(A, 128, "int8-hybrid")
    jobs = plan_corrections(A, plan, H.hi_index, H.hi.shape[0])
    entries = correction_entries(A, plan, H.hi_index, H.hi.shape[0])
    assert len(entries) == sum(len(j.entries) for j in jobs)
    windows_of_hubs = {int(w) for j in jobs for w, p in zip(j.entries.window, j.entries.hi_pos) if p in (0, 1)}
    assert len(windows_of_hubs) >= 2
    assert any(j.shape.tiles_per_group >= 2 or j.shape.group_windows >= 2 for j in jobs)
    check(A, H, plan=plan)


def test_column_fp16_in_bitmap_and_entry_tiles():
    """Column 5 is a bitmap column in window 0 (many entries) and an entry in window 1 (one)."""
    rng = np.random.default_rng(4)
    A_sp = sp.random(256, 200, density=0.01, random_state=rng, format="lil")
    for r in range(0, 128, 4):
        A_sp[r, 5] = 1.0 + rng.random()
    A_sp[130, 5] = -2.0
    A_sp = A_sp.tocsr()
    A = encode(A_sp, EncodePolicy(kinds="auto", bitmap_min_entries=3, bitmap_split="count"))
    assert 5 in A.tile_cols[A.tile_window == 0] and 5 in A.etile_cols[A.etile_window == 1]
    X = rng.standard_normal((200, 32)).astype(np.float32)
    H = hybrid_with_rows(X, [5, 17])
    entries = correction_entries(A, plan_launches(A, 32, "int8-hybrid"), H.hi_index, H.hi.shape[0])
    assert (entries.hi_pos == 0).sum() == 33  # 32 bitmap entries + 1 entry-tile entry of column 5
    check(A, H)


def test_fp16_rows_absent_from_a():
    """FP16 rows that no entry of A names: no correction tiles, same result as without them."""
    A_sp = sp.random(300, 260, density=0.03, random_state=np.random.default_rng(5), format="csr")
    A_sp = (A_sp @ sp.diags((np.arange(260) < 250).astype(np.float64))).tocsr()
    A_sp.eliminate_zeros()
    A = encode(A_sp, kinds="int8")
    X = np.random.default_rng(6).standard_normal((260, 16)).astype(np.float32)
    H = hybrid_with_rows(X, range(250, 260))
    plan = plan_launches(A, 16, "int8-hybrid")
    assert all(j.shape == NO_CORRECTION for j in plan_corrections(A, plan, H.hi_index, H.hi.shape[0]))
    Y, prof = spmm_hybrid(A, H, profile=True)
    Y0, prof0 = spmm_hybrid(A, quantize_rows(X, fp16_fraction=0.0), profile=True)
    assert prof.dma_transfers == prof0.dma_transfers
    check(A, H)


def test_split_launch_when_correction_exceeds_instruction_cap(monkeypatch):
    """A launch whose correction pass does not fit the instruction cap runs as two half launches."""
    from dste.kernels import plan as plan_mod

    # original order keeps the two hub rows (hundreds of entries each) in different windows, so every
    # single window's correction pass fits the cap set below while a whole launch's does not
    A = gcn_normalized(hub_graph(700, 0.01, hubs=(3, 400), seed=1), reorder="none")
    X = np.random.default_rng(7).standard_normal((A.shape[1], 64)).astype(np.float32)
    H = quantize_rows(X, fp16_fraction=1.0)
    plan = plan_launches(A, 64, "int8-hybrid")
    widest = max(l.bucket.windows for l in plan.launches)
    assert widest >= 2
    main = max(plan_mod.launch_instructions(l.bucket) for l in plan.launches)
    monkeypatch.setattr(plan_mod, "MAX_INSTRUCTIONS_PER_LAUNCH", main + 40)
    jobs = plan_corrections(A, plan, H.hi_index, H.hi.shape[0])
    assert any(j.plan_index is None for j in jobs) and len(jobs) > len(plan.launches)
    check(A, H, plan=plan)


def test_estimate_matches_profile_with_fp16_rows(hub_matrix):
    from dste.kernels.cost import estimate_spmm

    A = hub_matrix
    H = quantize_rows(np.random.default_rng(8).standard_normal((A.shape[1], 128)).astype(np.float32), fp16_fraction=0.05)
    _, prof = spmm_hybrid(A, H, profile=True)
    est = estimate_spmm(A, 128, "int8-hybrid", X=H)
    assert est.dma_transfers == prof.dma_transfers and est.instructions == prof.total_instructions
    assert est.dma_bytes == prof.dma_bytes
    assert est.latency_us == pytest.approx(prof.latency_overlapped_us, rel=1e-9)
    # by fraction alone: same launches, correction priced for a random set of that size
    by_fraction = estimate_spmm(A, 128, "int8-hybrid", hi_fraction=0.05)
    assert by_fraction.launches == est.launches and by_fraction.latency_us > estimate_spmm(A, 128, "int8-hybrid").latency_us


def test_correction_layout_and_buffer_budget():
    """The correction blob holds, in order, one FP16-row position and one window row per
    entry slot and one weight per slot and window of the group; the resident gathered tiles
    fit the correction SBUF budget (two fp16 buffers of F per partition each)."""
    from dste.kernels import correction

    for n, g in [(1, 1), (12, 4), (64, 256)]:
        assert correction.correction_layout(n, g) == {
            "hi_pos": (0, n), "rows": (n, n), "weight": (2 * n, n * g), "total": 2 * n + n * g}
    for c, f in [(1, 64), (24, 128), (300, 4096)]:
        tiles = correction.correction_buffer_tiles(correction.CorrectionShape(1, c), f)
        assert 1 <= tiles <= c
        assert tiles == 1 or 2 * tiles * 2 * f <= correction.CORRECTION_SBUF_BYTES


def test_pack_correction_refuses_a_group_with_more_entries_than_its_tiles():
    """A group's entries fill its C tiles of 128 slots in window order: with one window and one tile per group,
    128 entries of window 0 fill tile 0 and window 1's entry starts tile 1; a 129th entry of window 0 would land in
    tile 1, window 1's, and is refused."""
    from dste.kernels.correction import CorrectionEntries, CorrectionShape, pack_correction

    def entries(windows):
        n = len(windows)
        return CorrectionEntries(np.zeros(n, np.int64), np.asarray(windows, np.int64), np.arange(n) % 128,
                                 np.zeros(n, np.int32), np.ones(n, np.float32))

    shape = CorrectionShape(group_windows=1, tiles_per_group=1)
    tile, part = pack_correction(entries([0] * 128 + [1]), 2, shape)
    assert tile.tolist() == [0] * 128 + [1]
    assert part.tolist() == list(range(128)) + [0]
    with pytest.raises(ValueError, match="a correction group holds 129 entries; the shape holds 128"):
        pack_correction(entries([0] * 129), 2, shape)


def test_rejects_non_finite_fp16_rows(hub_matrix):
    H = quantize_rows(np.ones((hub_matrix.shape[1], 8), np.float32), fp16_fraction=0.1)
    H.hi[0, 0] = np.inf
    with pytest.raises(ValueError, match="hi must be finite"):
        spmm_hybrid(hub_matrix, H)


def test_rejects_hybrid_with_wrong_rows(hub_matrix):
    H = quantize_rows(np.ones((hub_matrix.shape[1] + 1, 8), np.float32), fp16_fraction=0.1)
    with pytest.raises(ValueError, match="needs M = "):
        spmm_hybrid(hub_matrix, H)


def test_balanced_window_order_evens_group_loads():
    from dste.kernels.correction import balanced_window_order

    load = np.array([100, 100, 10, 10, 100, 100, 10, 10, 0, 55])
    order = balanced_window_order(load, 2)
    assert sorted(order.tolist()) == list(range(10))
    groups = load[order].reshape(5, 2).sum(axis=1)
    # launch order puts 200 entries in one group (two tiles); balanced, every group fits one tile of 128
    assert load.reshape(5, 2).sum(axis=1).max() == 200 and groups.max() <= 128
    # a last group with fewer places than G
    order = balanced_window_order(np.array([5, 1, 4, 2, 3]), 2)
    assert sorted(order.tolist()) == list(range(5))


def test_windows_reordered_for_even_correction_groups():
    """Windows 0, 1, 4, 5 hold 100 FP16-column entries each and the others 10: in launch order a group
    of two windows needs two correction tiles; the launch runs its windows in balanced order instead
    (one tile per group), with the result in original rows and estimate == profile."""
    from dste.kernels.cost import estimate_spmm

    rng = np.random.default_rng(11)
    n, n_hi = 1024, 50
    background = sp.random(n, n, density=0.004, random_state=rng, format="csr")
    background = (background @ sp.diags((np.arange(n) >= n_hi).astype(np.float64))).tolil()
    for r in range(n):
        if r % 128 < (100 if r // 128 in (0, 1, 4, 5) else 10):
            background[r, rng.integers(0, n_hi)] = 1.0
    A = encode(background.tocsr())
    H = hybrid_with_rows(rng.standard_normal((n, 32)).astype(np.float32), range(n_hi))
    plan = plan_launches(A, 32, "int8-hybrid")
    jobs = plan_corrections(A, plan, H.hi_index, H.hi.shape[0])
    assert len(plan.launches) == 1 and len(jobs) == 1
    job = jobs[0]
    assert job.plan_index is None and job.shape.group_windows == 2 and job.shape.tiles_per_group == 1
    assert sorted(job.launch.windows.tolist()) == sorted(plan.launches[0].windows.tolist())
    assert not np.array_equal(job.launch.windows, plan.launches[0].windows)
    Y, prof = spmm_hybrid(A, H, profile=True)
    assert_within_bound(Y, spmm_reference(A, H), A, H, BOUND_EXACT_X)
    est = estimate_spmm(A, 32, "int8-hybrid", X=H)
    assert est.dma_transfers == prof.dma_transfers and est.instructions == prof.total_instructions
    assert est.latency_us == pytest.approx(prof.latency_overlapped_us, rel=1e-9)
