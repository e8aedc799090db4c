"""The device encoder kernels match the references bit for bit (simulated)."""

import numpy as np
import pytest

from dste.kernels import launch_masked_quant as masked_quant, launch_quantize_rows as quantize_rows
from dste.reference.masked_quant import masked_quant_reference, quantize_rows_reference

FIELDS = ("keep_bits", "kind", "int8_values", "int8_scale", "fp16_values")


def tiles(T, seed):
    rng = np.random.default_rng(seed)
    values = rng.standard_normal((T, 128, 128)).astype(np.float32)
    keep = rng.random((T, 128, 128)) < 0.4
    sensitivity = (rng.random(T) * 0.04).astype(np.float32)
    if T >= 5:
        values[0] = 0.0  # all-zero tile: scale 1
        values[1, 5, 7] = 1e6  # beyond fp16: saturates at 65504 when FP16
        sensitivity[1] = 0.5
        values[2] = np.round(values[2] * 4) / 4  # signed zeros and exact quarters
        keep[3] = True
        keep[4] = False
    return values, keep, sensitivity


@pytest.mark.parametrize("lnc", [1, 2])
@pytest.mark.parametrize("T,threshold", [(5, 0.02), (17, 0.0), (16, 1.0)])
def test_masked_quant_bit_exact(T, threshold, lnc):
    values, keep, sensitivity = tiles(T, T)
    got = masked_quant(values, keep, sensitivity, threshold, lnc=lnc)
    want = masked_quant_reference(values, keep, sensitivity, threshold)
    for name, a, b in zip(FIELDS, got, want):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert np.array_equal(a.view(np.uint8), b.view(np.uint8)), f"{name} differs in {(a != b).sum()} places"


def test_magnitude_threshold_mask():
    values, _, sensitivity = tiles(3, 1)
    got = masked_quant(values, None, sensitivity, 0.02, magnitude_threshold=0.5)
    want = masked_quant_reference(values, np.abs(values) >= 0.5, sensitivity, 0.02)
    assert all(np.array_equal(a, b) for a, b in zip(got, want))


def test_masked_quant_profile_is_modelled():
    values, keep, sensitivity = tiles(2, 2)
    _, prof = masked_quant(values, keep, sensitivity, 0.02, profile=True)
    assert prof.to_dict()["modelled"] and prof.dma_bytes > 0


@pytest.mark.parametrize("lnc", [1, 2])
@pytest.mark.parametrize("M,F,threshold", [(300, 70, 0.02), (128, 1, 0.02), (77, 600, 0.0), (130, 16, 10.0)])
def test_quantize_rows_bit_exact(M, F, threshold, lnc):
    rng = np.random.default_rng(M + F)
    X = rng.standard_normal((M, F)).astype(np.float32)
    X[4 % M] = 0.0
    X[9 % M, 0] = 1e5
    sensitivity = (rng.random(M) * 0.04).astype(np.float32)
    got = quantize_rows(X, sensitivity, threshold, lnc=lnc)
    want = quantize_rows_reference(X, sensitivity, threshold)
    for name in ("q", "scale", "hi_rows", "hi", "hi_index"):
        a, b = getattr(got, name), getattr(want, name)
        assert a.shape == b.shape and np.array_equal(a, b), name


@pytest.mark.parametrize("lnc", [1, 2])
def test_sensitivity_equal_to_the_threshold_is_fp16(lnc):
    # the rule is S >= T -> FP16 (dste.reference.masked_quant); a comparison of < against <= differs only on ties
    rng = np.random.default_rng(5)
    threshold = np.float32(0.02)
    X = rng.standard_normal((256, 32)).astype(np.float32)
    sensitivity = np.full(256, 0.01, np.float32)
    sensitivity[::5] = threshold
    got = quantize_rows(X, sensitivity, threshold, lnc=lnc)
    np.testing.assert_array_equal(np.sort(got.hi_rows), np.arange(0, 256, 5))
    values, keep, tile_sensitivity = tiles(6, 6)
    tile_sensitivity[:] = 0.01
    tile_sensitivity[[1, 4]] = threshold
    kind = masked_quant(values, keep, tile_sensitivity, threshold, lnc=lnc)[1]
    np.testing.assert_array_equal(kind, [1, 2, 1, 1, 2, 1])


def test_quantized_rows_feed_spmm():
    import scipy.sparse as sp

    from dste.format import encode
    from dste.kernels import launch_spmm_hybrid as spmm_hybrid
    from dste.reference.spmm import dense_operand, reference_matrix, spmm_reference

    rng = np.random.default_rng(3)
    X = rng.standard_normal((200, 32)).astype(np.float32)
    Xh = quantize_rows(X, (rng.random(200) * 0.04).astype(np.float32), 0.03)
    A = encode(sp.random(150, 200, density=0.05, random_state=rng, format="csr"))
    ref = spmm_reference(A, Xh)
    S = abs(reference_matrix(A)) @ np.abs(dense_operand(Xh))  # |A| |X| as the reference reads them
    assert (np.abs(spmm_hybrid(A, Xh) - ref) <= (2.0**-8 + 2.0**-11 + 2.0**-18) * S + 1e-30).all()


def test_bad_inputs():
    values, keep, sensitivity = tiles(2, 4)
    with pytest.raises(ValueError, match="float32"):
        masked_quant(values.astype(np.float64), keep, sensitivity)
    with pytest.raises(ValueError, match="keep must be bool"):
        masked_quant(values, keep.astype(np.uint8), sensitivity)
    with pytest.raises(ValueError, match="sensitivity"):
        masked_quant(values, keep, sensitivity[:1])
    bad = values.copy()
    bad[0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or Inf"):
        masked_quant(bad, keep, sensitivity)
    with pytest.raises(ValueError, match="magnitude_threshold"):
        masked_quant(values, None, sensitivity)
    with pytest.raises(ValueError, match="2-D"):
        quantize_rows(np.ones(5, np.float32), np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="NaN or Inf"):
        quantize_rows(np.full((3, 2), np.nan, np.float32), np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="beyond float32's range"):  # finite, but no float32 holds it
        quantize_rows(np.full((3, 2), 1e39), np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="sensitivity"):
        quantize_rows(np.ones((3, 2), np.float32), np.zeros(4, np.float32))


def test_host_twins_and_reference_refuse_what_the_launchers_refuse():
    """The host twins took a NaN score as INT8 and a NaN threshold as 'every tile INT8'; quantize_rows_host and the
    reference quantized a row of 1e-37 values to +-127 x a subnormal scale (every entry +-1e-37). The launchers
    refuse all three; a NaN magnitude_threshold kept nothing at all, and rows without features crashed the simulator.
    """
    from dste.format.quant import masked_quant_host, quantize_rows_host

    tiles, keep = np.ones((2, 128, 128), np.float32), np.ones((2, 128, 128), bool)
    for run in (masked_quant_host, masked_quant):
        with pytest.raises(ValueError, match="sensitivity"):
            run(tiles, keep, np.array([0.1, np.nan]), 0.5)
        with pytest.raises(ValueError, match="threshold"):
            run(tiles, keep, np.zeros(2), float("nan"))
    tiny = np.array([[1e-37, -5e-38, 3e-38, 1e-37]], np.float32)
    for run in (quantize_rows_host, quantize_rows_reference, quantize_rows):
        with pytest.raises(ValueError, match="subnormal"):
            run(tiny, np.zeros(1), 0.5)
    with pytest.raises(ValueError, match="threshold"):
        quantize_rows_host(np.ones((2, 3), np.float32), np.zeros(2), float("inf"))
    with pytest.raises(ValueError, match="magnitude_threshold"):
        masked_quant(tiles, None, np.zeros(2), 0.5, magnitude_threshold=float("nan"))
    empty = quantize_rows(np.ones((5, 0), np.float32), np.array([0.0, 1.0, 0.0, 1.0, 0.0]), 0.5)
    expected = quantize_rows_reference(np.ones((5, 0), np.float32), np.array([0.0, 1.0, 0.0, 1.0, 0.0]), 0.5)
    assert empty.q.shape == (5, 0) and np.array_equal(empty.hi_rows, expected.hi_rows)
    assert np.array_equal(empty.scale, expected.scale) and np.array_equal(empty.hi_index, expected.hi_index)


@pytest.mark.parametrize("lnc", [0, 3, True, 2.0])
def test_launchers_refuse_a_core_count_other_than_1_or_2(lnc):
    """lnc=0 failed deep in the padding arithmetic (ZeroDivisionError) and True ran as one core; both launchers
    now say what is allowed, as launch_spmm_hybrid does."""
    values = np.zeros((2, 128, 128), np.float32)
    with pytest.raises(ValueError, match="1 or 2 logical cores"):
        masked_quant(values, values != 0, np.zeros(2, np.float32), 0.02, lnc=lnc)
    with pytest.raises(ValueError, match="1 or 2 logical cores"):
        quantize_rows(np.ones((130, 3), np.float32), np.zeros(130), 0.02, lnc=lnc)


def test_the_launchers_and_their_host_twins_refuse_bool_scores_and_a_bool_threshold():
    """A bool score array compared as 0/1 and True as a threshold of 1.0: each picked FP16 tiles or rows the caller
    never scored. The launchers and the host twins share one check."""
    from dste.format.quant import masked_quant_host, quantize_rows_host
    from dste.kernels.launch_quant import launch_masked_quant, launch_quantize_rows

    rows = np.ones((4, 8), np.float32)
    for quantize in (launch_quantize_rows, quantize_rows_host):
        with pytest.raises(ValueError, match="sensitivity must hold real scores"):
            quantize(rows, np.ones(4, bool), 0.5)
        with pytest.raises(ValueError, match="threshold must be a finite number, got True"):
            quantize(rows, np.zeros(4), True)
    tiles = np.ones((1, 128, 128), np.float32)
    keep = np.ones(tiles.shape, bool)
    for quantize in (launch_masked_quant, masked_quant_host):
        with pytest.raises(ValueError, match="threshold must be a finite number, got True"):
            quantize(tiles, keep, np.zeros(1, np.float32), True)
