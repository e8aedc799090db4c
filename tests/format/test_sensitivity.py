"""The INT8 sensitivity score: outlier rows and tiles must score high, ordinary ones low."""

import numpy as np
import pytest

import dste
from dste.format import TileKind, encode
from dste.format.hybrid_rows import int8_sensitivity_robust, row_sensitivity
from dste.format.policy import DEFAULT_FP16_THRESHOLD


def _gaussian_rows(m=200, f=128, seed=0):
    return np.random.default_rng(seed).standard_normal((m, f)).astype(np.float32)


@pytest.mark.parametrize("outlier", [1e2, 1e4, 6e4])
def test_a_row_with_one_large_outlier_goes_fp16(outlier):
    x = _gaussian_rows(20)
    x[7, 3] = outlier
    hybrid = dste.quantize_rows(x)
    assert 7 in hybrid.hi_rows.tolist()
    # the ordinary entries of that row survive (INT8 would round them all to 0: error ~2.3 on N(0, 1))
    error = np.abs(hybrid.dequantize()[7] - x[7])
    assert error.max() <= 2.0**-11 * np.abs(x[7]).max() + 2.0**-24


@pytest.mark.parametrize("outlier", [1e5, 1e20])
def test_a_row_beyond_float16_range_is_refused_not_saturated(outlier):
    x = _gaussian_rows(4)
    x[2, 0] = outlier
    with pytest.raises(ValueError, match="row 2 .*float16 max"):
        dste.quantize_rows(x)
    with pytest.raises(ValueError, match=r"row 2 is chosen for FP16 \(one of the 1 most sensitive rows"):
        dste.quantize_rows(x, fp16_fraction=0.25)
    with pytest.raises(ValueError, match="sensitivity contains NaN"):
        dste.quantize_rows(x, sensitivity=np.full(4, np.nan))


def test_complex_rows_are_refused_in_torch_as_in_numpy():
    """torch's .float() drops the imaginary part with a warning only; the rows would be quantized without it."""
    import torch

    x = torch.randn(8, 4, dtype=torch.complex64)
    for rows in (x, x.numpy()):
        with pytest.raises(ValueError, match="real float, got .*complex64"):
            dste.quantize_rows(rows)


@pytest.mark.parametrize("shape", [(0, 4), (3, 0), (0, 0)])
def test_empty_input_gives_an_empty_valid_result(shape):
    hybrid = dste.quantize_rows(np.zeros(shape, np.float32))
    assert hybrid.shape == shape and hybrid.dequantize().shape == shape
    assert dste.quantize_rows(np.zeros(shape), fp16_fraction=1.0).shape == shape


def test_sensitivity_grows_with_the_outlier():
    x = _gaussian_rows(1)
    scores = []
    for outlier in (10.0, 1e2, 1e3, 1e4, 1e5):
        y = x.copy()
        y[0, 0] = outlier
        scores.append(row_sensitivity(y)[0])
    assert all(b >= a * 0.999 for a, b in zip(scores, scores[1:])), scores
    assert scores[-1] > 1.0  # the INT8 error is the whole ordinary row: ~rms / median = 1 / 0.674


def test_ordinary_rows_stay_int8():
    # Gaussian and uniform rows: the score is ~0.009 / ~0.005 at F = 128, far under T = 0.02
    gauss = row_sensitivity(_gaussian_rows(500))
    uniform = row_sensitivity(np.random.default_rng(1).uniform(-1, 1, (500, 128)))
    assert np.median(gauss) < 0.012 and gauss.max() < DEFAULT_FP16_THRESHOLD
    assert uniform.max() < 0.01
    assert dste.quantize_rows(_gaussian_rows(500)).hi_rows.size == 0


def test_zeros_do_not_change_the_score():
    x = _gaussian_rows(1, 64)
    padded = np.concatenate([x, np.zeros((1, 960), np.float32)], axis=1)
    assert row_sensitivity(padded)[0] == pytest.approx(row_sensitivity(x)[0], rel=1e-12)
    assert row_sensitivity(np.zeros((2, 5)))[0] == 0.0


def test_two_entry_row_with_an_outlier():
    # [1, 1e4]: INT8 drops the 1 entirely; the lower median is 1, so S = rms([1, 0]) / 1 = 0.707
    assert row_sensitivity(np.array([[1.0, 1e4]]))[0] == pytest.approx(np.sqrt(0.5), rel=1e-6)


def test_group_score_matches_a_direct_per_group_computation():
    rng = np.random.default_rng(3)
    values = rng.standard_normal(1000).astype(np.float32)
    values[::7] = 0.0
    groups = rng.integers(0, 9, size=1000)
    got = int8_sensitivity_robust(values, groups, 10)
    for g in range(10):
        v = values[groups == g]
        nz = v[v != 0]
        if nz.size == 0:
            assert got[g] == 0.0
            continue
        s = np.float32(np.abs(v).max() / np.float32(127))
        err = nz.astype(np.float64) - np.clip(np.rint(nz / s), -127, 127) * np.float64(s)
        median = np.sort(np.abs(nz))[(nz.size - 1) // 2]
        assert got[g] == pytest.approx(np.sqrt(np.mean(err**2)) / median, rel=1e-5)


def test_outlier_tile_goes_fp16_under_auto():
    rng = np.random.default_rng(0)
    dense = rng.standard_normal((128, 256))
    dense[5, 200] = 1e4  # second block column: one outlier
    E = encode(dense, layout="block", kinds="auto")
    kinds = {int(E.tile_cols[t, 0]) // 128: TileKind(k) for t, k in enumerate(E.tile_kind)}
    assert kinds == {0: TileKind.INT8, 1: TileKind.FP16}


@pytest.mark.parametrize("case", range(12))
def test_row_score_has_the_grouped_scores_bits(case):
    # row_sensitivity computes rows its own way (row max, per-row sort); the grouped score over the same values
    # must come out bit for bit: zeros and signed zeros, all-zero rows, outliers, tied magnitudes, wide ranges
    rng = np.random.default_rng(case)
    m, f = int(rng.integers(1, 90)), int(rng.integers(1, 70))
    x = rng.standard_normal((m, f)).astype(np.float32) * np.exp(rng.uniform(-15, 15, (m, 1))).astype(np.float32)
    x[rng.random((m, f)) < (0.7 if case % 2 else 0.05)] = 0.0
    x[rng.random((m, f)) < 0.02] *= np.float32(1e4)
    x[:: 1 + case % 5] = 0.0 if case % 3 else -0.0
    if case % 4 == 0:
        x = np.round(x * 4) / 4  # many equal magnitudes
    grouped = int8_sensitivity_robust(x.reshape(-1), np.repeat(np.arange(m), f), m)
    assert np.array_equal(row_sensitivity(x).view(np.int64), grouped.view(np.int64))


def test_a_tile_whose_sensitivity_equals_the_threshold_is_fp16():
    # S >= T -> FP16; the tile's sensitivity from the reference's formula, the threshold set to it exactly
    import scipy.sparse as sp

    from dste.reference import int8_sensitivity

    values = np.array([1.0, 0.013, 0.02, 0.5, 0.75, 0.003], np.float32)
    A = sp.csr_matrix((values, (np.arange(6), np.arange(6))), shape=(8, 8))
    tie = float(int8_sensitivity(values, np.zeros(values.size, int), 1)[0])
    kinds = lambda m: np.concatenate([m.tile_kind, m.etile_kind, m.ltile_kind]).tolist()  # noqa: E731
    assert kinds(encode(A, kinds="auto", fp16_threshold=tie, layout="block")) == [TileKind.FP16]
    above = float(np.nextafter(np.float32(tie), np.float32(1)))
    assert kinds(encode(A, kinds="auto", fp16_threshold=above, layout="block")) == [TileKind.INT8]
