import numpy as np
import pytest

from dste.format import DSTEFormatError, quant, quantize_rows
from dste.gnn.settings import quantize_rows_by_fraction, row_sensitivity


@pytest.mark.parametrize("fraction", [0.0, 0.1, 1.0])
def test_hybrid_rows_footprint_counts_the_device_arrays(fraction):
    rng = np.random.default_rng(0)
    M, F = 300, 40
    x = rng.normal(size=(M, F)).astype(np.float32)
    hybrid = quantize_rows(x, fp16_fraction=fraction)
    m_hi = int(round(fraction * M))
    assert hybrid.hi.shape == (m_hi, F)
    nbytes = hybrid.nbytes()
    # INT8 values for every row, a float32 scale per row, an int32 id and F float16 values per FP16 row
    assert nbytes["total"] == M * F + 4 * M + m_hi * (4 + 2 * F)
    assert nbytes["hi_index"] == 4 * M  # listed, but host-only: not in the total


def _device_int8(x):
    """Whole-array device INT8 arithmetic: scale max|x| * fp32(1/127) (1 for a zero row), q = rne_sat(x / scale)
    as x * fp32(1 / scale)."""
    amax = np.abs(x).max(axis=1)
    scale = np.where(amax > 0, (amax * np.float32(1 / 127)).astype(np.float32), np.float32(1.0))
    inverse = (np.float32(1.0) / scale).astype(np.float32)
    return np.clip(np.rint(x * inverse[:, None]), -127, 127).astype(np.int8), scale


def test_row_blocks_give_the_whole_arrays_bits(monkeypatch):
    """The row-wise passes over a layer's activations run a few hundred rows at a time: any block size gives the
    bits of the whole array at once."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((1001, 37)) * rng.lognormal(0, 2, (1001, 1))).astype(np.float32)
    x[10] = 0.0
    x[11, :2] = 300.0
    results = {}
    for values in (1 << 30, 37 * 3 + 5):  # one block; blocks of 3 rows and a last one of 2
        monkeypatch.setattr(quant, "BLOCK_VALUES", values)
        assert len(list(quant.row_blocks(*x.shape))) == (1 if values > x.size else 334)
        rows = [quantize_rows_by_fraction(x, f) for f in (0.0, 0.05, 1.0)]
        results[values] = [row_sensitivity(x)] + [getattr(r, name) for r in rows
                                                  for name in ("q", "scale", "hi_rows", "hi")] + [
            r.dequantize() for r in rows]
    for whole, blocked in zip(*results.values()):
        assert whole.dtype == blocked.dtype and whole.tobytes() == blocked.tobytes()
    q, scale = _device_int8(x)
    int8_only = quantize_rows_by_fraction(x, 0.0)
    assert np.array_equal(int8_only.q, q) and np.array_equal(int8_only.scale, scale)
    assert np.array_equal(quantize_rows_by_fraction(x, 1.0).dequantize(), x.astype(np.float16).astype(np.float32))


def test_a_non_finite_value_in_a_later_block_is_refused(monkeypatch):
    monkeypatch.setattr(quant, "BLOCK_VALUES", 16)
    x = np.ones((50, 4), np.float32)
    x[47, 2] = np.nan
    with pytest.raises(DSTEFormatError, match="NaN or Inf"):
        quantize_rows(x, fp16_fraction=0.0)


@pytest.mark.parametrize("scale", [1e-10, 1e-20])
def test_rows_and_tiles_float16_would_hold_in_its_subnormals_stay_int8(scale):
    """A row or tile of values all below 7.6e-6 went to FP16 by its score, and float16 rounded it in its subnormal
    range (1e-10 rows came back as zeros): INT8 holds it to amax / 254, which the rule now keeps."""
    import scipy.sparse as sp

    import dste
    from dste.format.constants import FP16_UNDERFLOW_AMAX

    rng = np.random.default_rng(3)
    x = (rng.lognormal(0.0, 2.0, (64, 16)) * scale).astype(np.float32)  # heavy tailed: every row scores high
    x[0] = rng.lognormal(0.0, 2.0, 16)  # a row of ordinary size, still free to go FP16
    assert np.abs(x[1:]).max() < FP16_UNDERFLOW_AMAX
    for rows in (quantize_rows(x, threshold=0.0), quantize_rows(x, fp16_fraction=1.0)):
        assert list(rows.hi_rows) == [0]
        error = np.abs(rows.dequantize().astype(np.float64) - x)
        assert (error[1:] <= np.abs(x[1:]).max(axis=1, keepdims=True) / 254 * (1 + 2.0**-15)).all()
    a = sp.csr_matrix(x[1:].astype(np.float64))
    encoded = dste.encode(a, kinds="auto", fp16_threshold=0.0)
    assert not (encoded.tile_kind == dste.format.TileKind.FP16).any()
    assert not (encoded.etile_kind == dste.format.TileKind.FP16).any()
    error = np.abs(encoded.to_dense() - a.toarray())
    assert error.max() <= np.abs(a.data).max() / 254 * (1 + 2.0**-15)


def test_the_int8_half_step_holds_with_its_float32_margin_next_to_a_rounding_tie():
    """0.8228347 / (1 / 127) lies within a float32 step of a tie: the rounded scale and quotient send it to the far
    side, 1.47e-5 of the half step past max|x| / 254. The documented bound carries (1 + 2^-15) for that."""
    import scipy.sparse as sp

    import dste

    x = np.array([[1.0, 0.8228346705436707]], np.float32)
    row_error = np.abs(quantize_rows(x, np.zeros(1, np.float32), 1.0).dequantize().astype(np.float64) - x).max()
    tile_error = np.abs(dste.encode(sp.csr_matrix(x.astype(np.float64)), kinds="int8").to_dense() - x).max()
    for error in (row_error, tile_error):
        assert 1.0 / 254 < error <= 1.0 / 254 * (1 + 2.0**-15)  # past the exact-arithmetic half step, within the bound


def test_rows_whose_q_times_scale_leaves_float32_are_refused_by_validate():
    # validate accepted them; the CPU op then said "X contains NaN or Inf" of an X that held none
    X = quantize_rows(np.array([[1.0, -2.0], [3.0, 4.0]], np.float32), fp16_fraction=0.0)
    X.scale[0] = np.float32(3e36)  # 127 x 3e36 > 3.4e38
    with pytest.raises(DSTEFormatError, match=r"HybridRows row 0 dequantizes to .* beyond float32's range"):
        X.validate()


def test_validate_refuses_an_int8_row_of_scale_zero():
    # an INT8 row's scale is > 0 (an all-zero row has scale 1): scale 0 would dequantize the row to zeros
    from dste.format import DSTEFormatError

    rows = quantize_rows(np.arange(1, 25, dtype=np.float32).reshape(3, 8), sensitivity=np.zeros(3), threshold=1.0)
    rows.scale[1] = 0.0
    with pytest.raises(DSTEFormatError, match="INT8 row scales must be finite and > 0"):
        rows.validate()


def test_fp16_fraction_breaks_ties_by_the_lower_row_id():
    X = np.random.default_rng(0).standard_normal((6, 16)).astype(np.float32)
    sensitivity = np.array([0.5, 0.1, 0.5, 0.1, 0.5, 0.1])
    assert quantize_rows(X, sensitivity=sensitivity, fp16_fraction=2 / 6).hi_rows.tolist() == [0, 2]
