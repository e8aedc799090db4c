"""16-bit column ids: the blob's band offsets, their on-chip widening, and parity past 65,536 X rows.

Tolerances: the kernel's documented error bound (``tests/kernels/error_bounds.py``), as in
``test_spmm_hybrid.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import dste.nkisim as nkisim
from dste.format import EncodePolicy, encode, quantize_rows
from dste.format.matrix import device_column_id_bytes
from dste.kernels import launch_spmm_hybrid as spmm_hybrid
from dste.kernels import plan as plan_mod
from dste.kernels.device import kernel_module
from dste.nkisim.errors import ConstraintError
from dste.reference.spmm import spmm_reference
from tests.kernels.error_bounds import BOUND_EXACT_X, BOUND_FP32_X, assert_within_bound
from tests.format.value_checks import assert_fp16_roundtrip

BAND = 65536


def wide_matrix(n_rows=200, n_cols=3 * BAND + 1000, seed=0):
    """A short, wide matrix whose columns fall in all four bands of X, with the band edges themselves
    (65,535 / 65,536, 131,071 / 131,072, the last column) and a few dense columns (bitmap tiles)."""
    rng = np.random.default_rng(seed)
    A = sp.random(n_rows, n_cols, density=6e-5, random_state=rng, format="lil", dtype=np.float64)
    edges = [0, BAND - 1, BAND, 2 * BAND - 1, 2 * BAND, 3 * BAND - 1, 3 * BAND, n_cols - 1]
    for c in sorted({c for c in edges if c < n_cols}):  # dense columns: many entries each in a window, so some become bitmap columns
        for r in rng.choice(n_rows, size=40, replace=False):
            A[r, c] = 1.0
    A = A.tocsr()
    A.data = rng.standard_normal(A.nnz)
    A.eliminate_zeros()
    return A


@pytest.fixture(scope="module")
def encoded():
    return encode(wide_matrix(), EncodePolicy(kinds="fp16"))


def test_wide_matrix_uses_both_layouts_and_every_band(encoded):
    E = encoded
    assert E.n_tiles and E.n_etiles
    cols = np.concatenate([E.tile_cols[E.tile_cols < E.shape[1]], E.etile_cols[E.etile_cols < E.shape[1]]])
    assert set(np.unique(cols // BAND)) == {0, 1, 2, 3}


@pytest.mark.parametrize("lnc", [1, 2])
def test_parity_across_bands_dense_x(encoded, lnc):
    X = np.random.default_rng(1).standard_normal((encoded.shape[1], 8)).astype(np.float32)
    Y = spmm_hybrid(encoded, X, lnc=lnc)
    assert_within_bound(Y, spmm_reference(encoded, X), encoded, X, BOUND_FP32_X)


def test_parity_across_bands_in_shuffled_order():
    """Shuffled column order: the encoder reorders each window's entry-tile entries by band (their band-start form),
    so the kernel runs tiles whose entries are not in column order; the product is unchanged."""
    A = wide_matrix(seed=4)
    E = encode(A, EncodePolicy(kinds="fp16"), col_perm=np.random.default_rng(5).permutation(A.shape[1]))
    used = np.arange(128) < E.etile_nentries[:, None]
    assert E.n_etiles and not ((np.diff(E.etile_cols // BAND, axis=1) < 0) & used[:, 1:]).any()
    X = np.random.default_rng(6).standard_normal((A.shape[1], 8)).astype(np.float32)
    assert_within_bound(spmm_hybrid(E, X, lnc=1), spmm_reference(E, X), E, X, BOUND_FP32_X)
    assert_fp16_roundtrip(E, A)  # FP16 values of the same entries


def test_parity_across_bands_hybrid_x(encoded):
    Xq = quantize_rows(np.random.default_rng(2).standard_normal((encoded.shape[1], 8)).astype(np.float32))
    Y = spmm_hybrid(encoded, Xq)
    assert_within_bound(Y, spmm_reference(encoded, Xq), encoded, Xq, BOUND_EXACT_X)


def test_blob_holds_uint16_offsets_and_uint8_bands(encoded):
    """Unpacking the blob's id regions gives back every slot's original column id (padding: 0xFFFF, 255)."""
    E, M = encoded, encoded.shape[1]
    plan = plan_mod.plan_launches(E, 8, "fp32")
    for launch in plan.launches:
        b = launch.bucket
        assert b.wide_ids
        blob = plan_mod.pack_launch(E, launch)["metadata"]
        layout = plan_mod.metadata_layout(b.windows, b.bitmap, b.entry, True)
        for prefix, tiles, cols_of in (("bm", launch.bitmap_tiles, E.tile_cols), ("en", launch.entry_tiles, E.etile_cols)):
            flat = tiles.reshape(-1)
            if not flat.size:
                continue
            expected = np.where(flat[:, None] >= 0, cols_of[np.maximum(flat, 0)], M).T  # [128, S]

            def region(name, dtype):
                start, words = layout[name]
                return blob[:, start:start + words].view(dtype)[:, :flat.size]

            offsets, bands = region(f"{prefix}_cols", np.uint16), region(f"{prefix}_band", np.uint8)
            pad = expected >= M
            assert (offsets[pad] == 0xFFFF).all() and (bands[pad] == 255).all()
            assert np.array_equal(bands[~pad].astype(np.int64) * BAND + offsets[~pad], expected[~pad])


def test_narrow_x_blob_has_no_band_regions():
    A = encode(wide_matrix(n_cols=BAND - 1), EncodePolicy(kinds="fp16"))
    plan = plan_mod.plan_launches(A, 8, "fp32")
    for launch in plan.launches:
        assert not launch.bucket.wide_ids
        layout = plan_mod.metadata_layout(launch.bucket.windows, launch.bucket.bitmap, launch.bucket.entry)
        assert layout["bm_band"][1] == layout["en_band"][1] == 0
    X = np.random.default_rng(3).standard_normal((A.shape[1], 4)).astype(np.float32)
    assert_within_bound(spmm_hybrid(A, X), spmm_reference(A, X), A, X, BOUND_FP32_X)


@pytest.mark.parametrize("n_cols", [3 * BAND + 1000, BAND - 1])
def test_kernel_widens_ids_once_per_region(n_cols):
    """The trace holds the widening, on GpSimd, once per id region (bitmap, entry): past 65,535 rows a memset
    of the band-rows constant and two tensor_tensor (band x 65536, + offset) per region, below it one tensor_copy
    per region. Counted as the difference to the same launch's trace with the widening left out."""
    A = encode(wide_matrix(n_cols=n_cols), EncodePolicy(kinds="bin"))
    Xq = quantize_rows(np.random.default_rng(4).standard_normal((A.shape[1], 8)).astype(np.float32))
    plan = plan_mod.plan_launches(A, 8, "int8-hybrid")
    launch = plan.launches[0]
    single = plan_mod.LaunchPlan(plan.shape, plan.features, plan.x_mode, [launch])
    _, prof = spmm_hybrid(A, Xq, plan=single, profile=True, lnc=1)
    kernel = kernel_module("spmm_hybrid", "nkisim")
    original = kernel._widened_ids
    calls = []

    def recording(offsets, bands, name):
        calls.append((offsets.dtype, None if bands is None else bands.dtype))
        return original(offsets, bands, name)

    kernel._widened_ids = recording
    try:
        single2 = plan_mod.LaunchPlan(plan.shape, plan.features, plan.x_mode, [launch])
        spmm_hybrid(A, Xq, plan=single2, profile=True, lnc=1)
    finally:
        kernel._widened_ids = original
    regions = int(launch.bucket.bitmap_slots > 0) + int(launch.bucket.entry_slots > 0)
    wide = n_cols >= BAND
    # the output row ids first (200 rows: no band), then the column id regions
    assert len(calls) == 1 + regions and all(str(o) == "uint16" for o, _ in calls)
    assert calls[0][1] is None
    assert all((b is not None) == wide for _, b in calls[1:])
    assert prof.ops.get("tensor_tensor", 0) >= (2 * regions if wide else 0)
    assert prof.ops.get("tensor_copy", 0) >= (0 if wide else regions)


def _gather_kernel(widen):
    """A minimal gather: 16-bit ids loaded from HBM, optionally widened to int32 by tensor_copy on VectorE."""
    import nki.isa as nisa
    import nki.language as nl

    def kernel(x, ids16):
        ids = nl.ndarray((128, 1), dtype=nl.uint16, buffer=nl.sbuf, name="ids16")
        nisa.dma_copy(dst=ids, src=ids16)
        index = ids
        if widen:
            index = nl.ndarray((128, 1), dtype=nl.int32, buffer=nl.sbuf, name="ids32")
            nisa.tensor_copy(dst=index, src=ids, engine=nisa.engine.vector)
        rows = nl.ndarray((128, x.shape[1]), dtype=x.dtype, buffer=nl.sbuf, name="rows")
        nisa.memset(dst=rows, value=0.0)
        nisa.dma_copy(dst=rows, src=x.ap(pattern=[[x.shape[1], 128], [1, x.shape[1]]], offset=0,
                                         vector_offset=index, indirect_dim=0), oob_mode=nisa.oob_mode.skip)
        out = nl.ndarray((128, x.shape[1]), dtype=x.dtype, buffer=nl.shared_hbm, name="out")
        nisa.dma_copy(dst=out, src=rows)
        return out

    return kernel


def test_simulator_refuses_uint16_gather_indices_and_takes_the_widened_ones():
    """The indirect DMA takes only int32/uint32 index tiles (rule view.ap.vector-offset); the tensor_copy
    widening (uint16 -> int32 through fp32, exact) is what makes the gather legal, and 0xFFFF past M is skipped."""
    nkisim.install()
    import nki

    rng = np.random.default_rng(5)
    x = rng.standard_normal((BAND - 1, 4)).astype(np.float32)
    ids = rng.integers(0, BAND - 1, size=(128, 1)).astype(np.uint16)
    ids[[3, 70]] = 0xFFFF
    with pytest.raises(ConstraintError, match="view.ap.vector-offset"):
        nkisim.profile(nki.jit(_gather_kernel(widen=False)), x, ids)
    out, _ = nkisim.profile(nki.jit(_gather_kernel(widen=True)), x, ids)
    expected = np.where(ids < x.shape[0], 1, 0) * x[np.minimum(ids[:, 0], x.shape[0] - 1)]
    assert np.array_equal(np.asarray(out), expected)


def test_nbytes_counts_16_bit_ids_and_the_bands(encoded):
    E = encoded
    slots = E.tile_cols.size + E.etile_cols.size
    report = E.nbytes()
    nb = report["device"]["column_ids"]
    # 4 bands, ids in ascending band order in every tile (no reordering: bitmap columns ascend, entry tiles are
    # stored by band): 3 band-start bytes per tile beside the 2-byte offsets, not a 2-bit plane per slot
    assert nb == 2 * slots + 3 * (E.n_tiles + E.n_etiles)
    shuffled = encode(wide_matrix(), EncodePolicy(kinds="fp16"),
                      col_perm=np.random.default_rng(3).permutation(E.shape[1]))
    assert shuffled.n_tiles and (np.diff(shuffled.tile_cols // BAND, axis=1) < 0).any()
    # bitmap columns in shuffled order leave band order: their layout keeps the 2-bit plane; entry tiles do not
    assert shuffled.nbytes()["device"]["column_ids"] == (
        2 * shuffled.tile_cols.size + shuffled.tile_cols.size * 2 // 8
        + 2 * shuffled.etile_cols.size + 3 * shuffled.n_etiles)
    # the host keeps the int32 form
    assert report["host_only"]["tile_cols"] + report["host_only"]["etile_cols"] == 4 * slots
    narrow = encode(wide_matrix(n_cols=BAND), EncodePolicy(kinds="fp16"))
    assert narrow.nbytes()["device"]["column_ids"] == 2 * (narrow.tile_cols.size + narrow.etile_cols.size)
    assert device_column_id_bytes(128, BAND + 1) == 256 + 16


def test_kernel_file_keeps_its_band_constants_in_step_with_the_planner():
    k = kernel_module("spmm_hybrid", "nkisim")
    assert (k.COLUMN_BAND_ROWS, k.PAD_BAND) == (plan_mod.COLUMN_BAND_ROWS, plan_mod.PAD_BAND)
    assert k.uses_bands(BAND) and not k.uses_bands(BAND - 1)


def test_planner_refuses_more_x_rows_than_a_band_byte_reaches():
    """255 x 65,536 rows is the last X a uint8 band (255 = padding) can address."""
    from types import SimpleNamespace

    too_wide = SimpleNamespace(shape=(128, 255 * BAND + 1))
    with pytest.raises(ValueError, match="16-bit column ids"):
        plan_mod.plan_launches(too_wide, 8, "fp32")


def test_x_of_exactly_65536_rows_carries_bands():
    """PAD_OFFSET 0xFFFF is "out of range on its own when M < 65536" (dste/kernels/plan.py): at M = 65,536 the last
    real column id, 65,535, is 0xFFFF too, so only a band (0 against PAD_BAND 255) tells the two apart."""
    assert not plan_mod.uses_bands(BAND - 1)
    assert plan_mod.uses_bands(BAND)
    cols = np.array([0, BAND - 2, BAND - 1, BAND], np.int32)  # BAND is padding when M = BAND
    offsets, bands = plan_mod.split_column_ids(cols, BAND, plan_mod.uses_bands(BAND))
    assert offsets.tolist() == [0, 0xFFFE, 0xFFFF, 0xFFFF]
    assert bands is not None and bands.tolist() == [0, 0, 0, 255]
