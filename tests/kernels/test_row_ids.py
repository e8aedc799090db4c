"""16-bit output row ids: the kernel places each window's rows of Y itself, from the metadata blob.

Parity of the simulated ``spmm_hybrid`` against ``dste.reference.spmm_reference`` with the kernel's documented
bound (``tests/kernels/error_bounds.py``) for Y below and above 65,536 rows (then every row id carries a band),
LNC1 and LNC2, dense and hybrid X; the blob's row-id regions; the widening on GpSimd; and the device bytes.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from dste.format import EncodePolicy, encode, quantize_rows
from dste.format.matrix import device_column_id_bytes
from dste.kernels import launch_spmm_hybrid as spmm_hybrid
from dste.kernels import plan as plan_mod
from dste.kernels.device import kernel_module
from dste.reference.spmm import spmm_reference
from tests.format.value_checks import check_int8_tiles_against_input
from tests.kernels.error_bounds import BOUND_EXACT_X, BOUND_FP32_X, assert_within_bound

BAND = 65536


def tall_matrix(n_rows, n_cols=300, seed=0):
    """Entries in a few row blocks only, including the band edges (65,535 / 65,536) and the last row, so the
    last window holds slots past N (padding) and every other window is empty (skipped by the planner)."""
    rng = np.random.default_rng(seed)
    picked = [0, 5, 127, 128, 700, n_rows - 1]
    if n_rows > BAND:
        picked += [BAND - 1, BAND, BAND + 3, 2 * BAND - 1 if 2 * BAND - 1 < n_rows else n_rows - 2]
    rows, cols = [], []
    for r in sorted(set(picked)):
        chosen = rng.choice(n_cols, size=40, replace=False)
        rows += [r] * len(chosen)
        cols += list(chosen)
    dense_col = rng.choice(n_rows, size=60, replace=False)  # one column shared by many rows of one window
    rows += list(dense_col)
    cols += [7] * len(dense_col)
    A = sp.csr_matrix((rng.standard_normal(len(rows)), (rows, cols)), shape=(n_rows, n_cols))
    A.sum_duplicates()
    return A


@pytest.fixture(scope="module", params=[BAND - 2000, BAND + 5000])
def tall(request):
    A_sp = tall_matrix(request.param)
    return A_sp, encode(A_sp, EncodePolicy(kinds="int8"))


@pytest.mark.parametrize("lnc", [1, 2])
@pytest.mark.parametrize("hybrid", [False, True])
def test_rows_land_at_their_original_ids(tall, lnc, hybrid):
    A_sp, A = tall
    X = np.random.default_rng(3).standard_normal((A.shape[1], 24)).astype(np.float32)
    if hybrid:
        X = quantize_rows(X, fp16_fraction=0.05)
    Y = spmm_hybrid(A, X, lnc=lnc)
    ref = spmm_reference(A, X)
    assert Y.shape == (A_sp.shape[0], 24)
    assert_within_bound(Y, ref, A, X, BOUND_EXACT_X if hybrid else BOUND_FP32_X)
    empty = np.diff(A_sp.indptr) == 0
    assert (Y[empty] == 0).all()  # rows no launch writes keep the launcher's zeros
    assert np.abs(Y[~empty]).max() > 0


def test_rows_land_at_their_original_ids_in_a_shuffled_order_past_65535_rows():
    """A shuffled row order past one band: the encoder sorts each window's rows by original id (band-ordered slot
    maps); the kernel still writes every row where it belongs."""
    A_sp = tall_matrix(BAND + 5000, seed=2)
    A = encode(A_sp, EncodePolicy(kinds="int8"), row_perm=np.random.default_rng(7).permutation(A_sp.shape[0]))
    X = np.random.default_rng(8).standard_normal((A.shape[1], 8)).astype(np.float32)
    Y = spmm_hybrid(A, X, lnc=1)
    assert_within_bound(Y, spmm_reference(A, X), A, X, BOUND_FP32_X)
    assert check_int8_tiles_against_input(A, A_sp) > 0  # INT8 values of the same entries, at the reference's scale


def test_the_blob_holds_16_bit_row_ids_with_a_band_past_65535_rows(tall):
    _, A = tall
    N = A.shape[0]
    plan = plan_mod.plan_launches(A, 24, "fp32")
    for launch in plan.launches:
        b = launch.bucket
        assert b.wide_rows == (N >= BAND)
        layout = plan_mod.metadata_layout(b.windows, b.bitmap, b.entry, b.wide_ids, b.lists, b.wide_rows)
        blob = plan_mod.pack_launch(A, launch)["metadata"]
        start, words = layout["out_rows"]
        offsets = blob[:, start:start + words].view(np.uint16)[:, :b.windows]  # [slot r, window w]
        rows = plan_mod.launch_rows(A, launch).T
        if b.wide_rows:
            start, words = layout["out_band"]
            bands = blob[:, start:start + words].view(np.uint8)[:, :b.windows].astype(np.int64)
            widened = bands * BAND + offsets
            assert (widened[rows < N] == rows[rows < N]).all()
            assert (bands[rows >= N] == plan_mod.PAD_BAND).all()
        else:
            assert layout["out_band"][1] == 0
            assert (offsets[rows < N] == rows[rows < N]).all()
        # a slot holding no row (past N, or a padding window) is out of range, so its scatter row is skipped
        assert (offsets[rows >= N] == plan_mod.PAD_OFFSET).all()


def test_the_kernel_widens_the_row_ids_once_per_launch(tall):
    _, A = tall
    N = A.shape[0]
    plan = plan_mod.plan_launches(A, 8, "fp32")
    launch = plan.launches[0]
    single = plan_mod.LaunchPlan(plan.shape, plan.features, plan.x_mode, [launch])
    kernel = kernel_module("spmm_hybrid", "nkisim")
    original = kernel._widened_ids
    calls = []

    def recording(offsets, bands, name):
        calls.append((name, str(offsets.dtype), None if bands is None else str(bands.dtype)))
        return original(offsets, bands, name)

    kernel._widened_ids = recording
    try:
        _, prof = spmm_hybrid(A, np.ones((A.shape[1], 8), np.float32), plan=single, profile=True, lnc=1)
    finally:
        kernel._widened_ids = original
    out = [c for c in calls if c[0] == "out_ids"]
    assert out == [("out_ids", "uint16", "uint8" if N >= BAND else None)]
    # one scatter per window of the launch: every DMA is a gather, the blob or a scatter
    assert prof.dma_transfers == launch.bucket.windows * launch.bucket.slots_per_window + 1 + launch.bucket.windows


def test_device_bytes_count_the_window_slot_map_as_16_bit_ids(tall):
    _, A = tall
    nb = A.nbytes()
    N = A.shape[0]
    # the windows' row ids ascend (rows in original order), so past 65,536 rows their bands take one start byte per
    # window and band boundary instead of a plane of bits per slot
    bands = -(-N // BAND)
    slot_map = 2 * A.window_rows.size + (A.window_rows.shape[0] * (bands - 1) if N > BAND else 0)
    assert nb["device"]["row_ids"] == int(A.etile_rows.nbytes + A.ltile_rows.nbytes) + slot_map
    assert device_column_id_bytes(A.window_rows.size, N) == 2 * A.window_rows.size + (
        -(-A.window_rows.size // 8) if N > BAND else 0)
    assert nb["host_only"]["window_rows"] == A.window_rows.nbytes  # the int32 host form


def test_a_matrix_with_more_rows_than_the_bands_reach_is_refused():
    from dste.kernels.plan import PAD_BAND, plan_launches

    class Tall:  # only the shape is read before the refusal
        shape = (PAD_BAND * BAND + 1, 10)
        ltile_window = np.zeros(0)

    with pytest.raises(ValueError, match="output row ids"):
        plan_launches(Tall(), 8, "fp32")
