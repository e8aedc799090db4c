"""Format against reference: two independent computations of the same contract must agree.

Rounding, INT8 scales, FP16 casts, the masked_quant and quantize_rows arithmetic and mask packing
are deterministic IEEE float32/float64 operations on both sides, so they are compared bit for bit.
The sensitivity score sums in a different order (bincount vs per-group mean), so it gets a float64
relative tolerance. Decoded matrices are compared entry for entry: both sides form each value as
the same float64 product of stored numbers and scales.
"""

from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp

import dste.format.bits as format_bits
import dste.format.quant as format_quant
from dste import reference
from dste.format import encode, gcn_normalized, quantize_rows
from dste.format.hybrid_rows import int8_sensitivity_robust, row_sensitivity
from tests.format.graphs import community_graph


def _same_bits(a, b):
    """Equal dtype, shape and bit pattern (so +0 / -0 and float16 ties count)."""
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


# ------------------------------------------------------------------ bits
def test_mask_packing_agrees_with_format():
    mask = np.random.default_rng(0).random((6, 5, 128)) < 0.4
    mask[0, 0] = True  # all-ones words (0xFFFFFFFF): the top bit must not overflow either packing
    words = reference.pack_mask(mask)
    assert _same_bits(words, format_bits.pack_mask(mask))
    assert _same_bits(reference.unpack_mask(words), format_bits.unpack_mask(words))
    assert words[0, 0].tolist() == [0xFFFFFFFF] * 4
    np.testing.assert_array_equal(reference.unpack_mask(words), mask)


def test_reference_popcount_helpers_agree_with_format():
    words = np.random.default_rng(1).integers(0, 2**32, size=(7, 4), dtype=np.uint64).astype(np.uint32)
    np.testing.assert_array_equal(reference.bits.popcount(words), format_bits.popcount(words))
    ours = sorted((int(i), bit) for idx, bit in reference.bits.set_bit_positions(words) for i in idx)
    flat_word, bit = format_bits.set_bits(words)
    theirs = list(zip(flat_word.tolist(), bit.tolist()))
    assert theirs == ours  # the same bits, in ascending word * 32 + bit order
    assert len(ours) == int(format_bits.popcount(words).sum())


# ------------------------------------------------------------------ rounding and conversion
TIE_AND_EDGE_VALUES = np.array(
    [0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -126.5, 127.49, 127.5, 128.0, -127.5, -128.5, 1e9, -1e9,
     np.inf, -np.inf, 0.0, -0.0, 2.0**-30, 3.4e38, 4503599627370497.0],
    dtype=np.float64,
)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.uint8, np.int32])
def test_integer_rounding_agrees_with_format(dtype):
    rng = np.random.default_rng(2)
    x = np.concatenate([TIE_AND_EDGE_VALUES, rng.normal(scale=200, size=2000), np.round(rng.normal(scale=300, size=500)) + 0.5])
    ours = reference.round_half_even_saturate(x, dtype)
    assert _same_bits(ours, format_quant.round_half_even_saturate(x, dtype))
    if dtype == np.int8:
        assert ours.min() >= -127  # symmetric range


def test_float16_conversion_agrees_with_format():
    rng = np.random.default_rng(3)
    fp16_ties = (np.arange(-2000, 2000) * 2.0**-10 + 2.0**-11).astype(np.float32)  # exact halfway points near 1
    edge = np.array([65504.0, 65519.99, 65520.0, -65520.0, 1e6, 2.0**-25, 3 * 2.0**-26, 2.0**-24, -0.0], np.float32)
    x = np.concatenate([fp16_ties, edge, rng.standard_normal(4000).astype(np.float32) * 1e3])
    ours = reference.to_fp16(x)
    assert _same_bits(ours, format_quant.to_fp16(x))
    assert np.isfinite(ours).all()  # saturated, never inf


def test_int8_scale_and_quantization_agree_with_format():
    rng = np.random.default_rng(4)
    v = rng.standard_normal((64, 300)).astype(np.float32) * rng.uniform(1e-3, 1e3, (64, 1)).astype(np.float32)
    v[5] = 0.0
    scale = reference.int8_scale(v, axis=1)
    assert _same_bits(scale, format_quant.int8_scale(v, axis=1))
    assert scale[5] == 1.0
    q = reference.quantize_int8(v, scale[:, None])
    assert _same_bits(q, format_quant.quantize_int8(v, scale[:, None]))
    assert _same_bits(reference.dequantize_int8(q, scale[:, None]), format_quant.dequantize_int8(q, scale[:, None]))


# ------------------------------------------------------------------ sensitivity
def test_sensitivity_agrees_with_format():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((40, 96)).astype(np.float32)
    X[3, 7] = 1e4  # one outlier: S near 1 / 0.674
    X[4] = 0.0  # no nonzero value: S = 0
    X[6, ::2] = 0.0  # zeros are left out of both numerator and median
    X[8, :] = 0.0
    X[8, 0] = 2.0  # one nonzero, reproduced exactly: S = 0
    groups = np.repeat(np.arange(40), 96)
    ours = reference.int8_sensitivity(X.reshape(-1), groups, 41)  # group 40 is empty
    theirs = int8_sensitivity_robust(X.reshape(-1), groups, 41)
    # same float64 terms summed in a different order: a few ulps
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=0)
    np.testing.assert_allclose(ours[:40], row_sensitivity(X), rtol=1e-12, atol=0)
    assert ours[4] == 0.0 and ours[8] == 0.0 and ours[40] == 0.0
    assert ours[3] > 1.0 > 0.02 > ours[np.r_[0:3, 5:8, 9:40]].max()


def test_sensitivity_is_shuffle_invariant():
    rng = np.random.default_rng(6)
    values = rng.standard_normal(3000).astype(np.float32)
    groups = rng.integers(0, 25, size=3000)
    order = rng.permutation(3000)
    np.testing.assert_allclose(
        reference.int8_sensitivity(values, groups, 25), reference.int8_sensitivity(values[order], groups[order], 25),
        rtol=1e-12,
    )


# ------------------------------------------------------------------ masked_quant and hybrid rows
def test_masked_quant_reference_agrees_with_format_host_encoder():
    rng = np.random.default_rng(7)
    T = 6
    values = (rng.standard_normal((T, 128, 128)) * rng.uniform(1e-2, 1e2, (T, 1, 1))).astype(np.float32)
    values[2, 1, 1] = 9e4  # beyond float16: saturates in an FP16 tile
    values[4] = -values[4]
    keep = rng.random(values.shape) < 0.3
    keep[5] = False  # empty tile: scale 1, all-zero values
    sensitivity = np.array([0.0, 0.5, 0.03, 0.01, 0.02, 0.0], np.float32)
    ours = reference.masked_quant_reference(values, keep, sensitivity, 0.02)
    theirs = format_quant.masked_quant_host(values, keep, sensitivity, 0.02)
    for name, a, b in zip(("keep_bits", "kind", "int8_values", "int8_scale", "fp16_values"), ours, theirs):
        assert _same_bits(a, b), name
    assert ours[1].tolist() == [1, 2, 2, 1, 2, 1] and ours[3][5] == 1.0
    assert ours[4][2, 1, 1] == np.float16(65504.0) or not keep[2, 1, 1]


@pytest.mark.parametrize("threshold", [0.5, 0.02])
def test_quantize_rows_reference_agrees_with_format(threshold):
    rng = np.random.default_rng(8)
    X = rng.standard_normal((300, 48)).astype(np.float32)
    X[11, 3] = 500.0
    X[12] = 0.0
    sensitivity = row_sensitivity(X)
    ours = reference.quantize_rows_reference(X, sensitivity, threshold)
    theirs = quantize_rows(X, sensitivity, threshold)
    assert isinstance(ours, reference.ReferenceHybridRows)
    for name in ("q", "scale", "hi_rows", "hi", "hi_index"):
        assert _same_bits(getattr(ours, name), getattr(theirs, name)), name
    assert 11 in ours.hi_rows.tolist() and ours.scale[12] == 1.0
    np.testing.assert_array_equal(ours.dequantize(np.float64), theirs.dequantize(np.float64))


@pytest.mark.parametrize("threshold", [0.5, 0.1])
def test_quantize_rows_host_puts_a_score_equal_to_the_threshold_in_fp16(threshold):
    # continuous scores never sit on the threshold, so the parity test above cannot tell >= from > in the host twin;
    # 0.1 + 1e-12 is 0.1 in float32, where both sides compare
    X = np.random.default_rng(10).standard_normal((6, 9)).astype(np.float32)
    sensitivity = np.array([0.0, threshold, threshold, 0.05, 0.9, threshold + 1e-12])
    ours = reference.quantize_rows_reference(X, sensitivity, threshold)
    theirs = format_quant.quantize_rows_host(X, sensitivity, threshold)
    assert ours.hi_rows.tolist() == [1, 2, 4, 5]
    for name, value in zip(("q", "scale", "hi_rows", "hi", "hi_index"), theirs):
        assert _same_bits(getattr(ours, name), value), name


def test_quantize_rows_fraction_matches_reference_on_the_chosen_rows():
    X = np.random.default_rng(9).standard_normal((100, 20)).astype(np.float32)
    theirs = quantize_rows(X, fp16_fraction=0.1)
    chosen = np.zeros(100, np.float32)
    chosen[theirs.hi_rows] = 1.0
    ours = reference.quantize_rows_reference(X, chosen, 0.5)
    assert theirs.hi_rows.size == 10
    for name in ("q", "scale", "hi_rows", "hi", "hi_index"):
        assert _same_bits(getattr(ours, name), getattr(theirs, name)), name


# ------------------------------------------------------------------ SpMM oracle
def _encoded_cases():
    rng = np.random.default_rng(10)
    adj, _ = community_graph(700, seed=11)
    weights = sp.random(300, 450, density=0.04, random_state=rng, format="csr", dtype=np.float64)
    weights.data = rng.standard_normal(weights.nnz)
    weights.data[::17] *= 300.0  # outliers push some tiles to FP16 under kinds="auto"
    return {
        "gcn-community": gcn_normalized(adj, reorder="community"),
        "gcn-block": gcn_normalized(adj, layout="block"),
        "valued-faithful": encode(weights),
        "valued-auto": encode(weights, kinds="auto"),
        "valued-int8-block": encode(weights, kinds="int8", layout="block"),
    }


@pytest.fixture(scope="module")
def encoded():
    return _encoded_cases()


@pytest.mark.parametrize(
    "name", ["gcn-community", "gcn-block", "valued-faithful", "valued-auto", "valued-int8-block"]
)
def test_reference_matrix_equals_format_decode(encoded, name):
    A = encoded[name]
    ours = reference.reference_matrix(A)
    theirs = A.decode(effective=True, dtype=np.float64)
    assert ours.shape == theirs.shape and ours.nnz == theirs.nnz
    assert abs(ours - theirs).max() == 0.0  # each value is the same float64 product on both sides


def test_reference_matrix_follows_a_new_mask(encoded):
    A = encoded["gcn-community"]
    full = A.decode(effective=True)
    keep = full.copy()
    keep.data = np.random.default_rng(12).random(keep.nnz) < 0.5
    keep.eliminate_zeros()
    masked = A.with_mask(keep)
    ours = reference.reference_matrix(masked)
    assert ours.nnz == keep.nnz
    # kept entries keep their values exactly; dropped ones are gone
    np.testing.assert_array_equal(ours.toarray(), np.where(keep.toarray(), full.toarray(), 0.0))


def test_spmm_reference_reproduces_the_input_matrix(encoded):
    # an independent route to A: the faithful encoding keeps every value within float16's 2^-11
    rng = np.random.default_rng(10)
    weights = sp.random(300, 450, density=0.04, random_state=rng, format="csr", dtype=np.float64)
    weights.data = rng.standard_normal(weights.nnz)
    weights.data[::17] *= 300.0
    X = np.random.default_rng(13).standard_normal((450, 16))
    Y = reference.spmm_reference(encoded["valued-faithful"], X)
    bound = 2.0**-11 * (abs(weights) @ np.abs(X)) + 1e-12
    assert (np.abs(Y - weights @ X) <= bound).all()


def test_spmm_reference_with_hybrid_rows(encoded):
    A = encoded["gcn-community"]
    X = np.random.default_rng(14).standard_normal((700, 24)).astype(np.float32)
    H = quantize_rows(X, fp16_fraction=0.05)
    as_plain = SimpleNamespace(q=H.q, scale=H.scale, hi_rows=H.hi_rows, hi=H.hi)  # duck-typed hybrid X
    expected = A.decode() @ H.dequantize(np.float64)
    np.testing.assert_allclose(reference.spmm_reference(A, as_plain), expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(reference.spmm_reference(A, H), expected, rtol=1e-12, atol=1e-14)


def _hand_built(n=5, m=6):
    """Two windows' worth of arrays written out by hand (window 0 only used), every kind once."""
    T, E = 3, 2
    window_rows = np.full((1, 128), n, np.int32)
    window_rows[0, :n] = [4, 0, 3, 1, 2]  # slot r holds original row window_rows[0, r]
    tile_cols = np.full((T, 128), m, np.int32)
    keep = np.zeros((T, 128, 128), bool)  # [t, k, r]
    tile_cols[0, :2] = [5, 1]
    keep[0, 0, 0] = keep[0, 1, 2] = True  # BIN: A[4, 5] = 1, A[3, 1] = 1
    tile_cols[0, 2] = 3  # a stale id past ncols: the ncols rule, not the padding id, must drop it
    keep[0, 2, 1] = True  # column slot 2 >= ncols (2): ignored
    keep[0, 0, 7] = True  # slot 7 holds N (padding): skipped
    tile_cols[1, :1] = [0]
    keep[1, 0, 1] = True  # INT8: A[0, 0] = -3 * 0.5
    tile_cols[2, :1] = [5]
    keep[2, 0, 1] = True  # FP16: A[0, 5] = 0.25
    int8_values = np.zeros((1, 128, 128), np.int8)
    int8_values[0, 0, 1] = -3
    fp16_values = np.zeros((1, 128, 128), np.float16)
    fp16_values[0, 0, 1] = 0.25
    etile_cols = np.full((E, 128), m, np.int32)
    etile_rows = np.zeros((E, 128), np.uint8)
    etile_keep = np.zeros((E, 128), bool)
    etile_cols[0, :3], etile_rows[0, :3] = [2, 4, 1], [3, 4, 2]
    etile_keep[0, [0, 2]] = True  # BIN entries: A[1, 2] = 1, A[3, 1] += 1 (a duplicate pair sums)
    etile_cols[1, :2], etile_rows[1, :2] = [3, 0], [0, 4]
    etile_keep[1, :2] = True  # INT8 entries: A[4, 3] = 2 * 4, A[2, 0] = -1 * 4
    etile_cols[1, 5] = 1  # a stale id past nentries, likewise
    etile_keep[1, 5] = True  # entry 5 >= nentries (2): ignored
    return SimpleNamespace(
        shape=(n, m),
        window_rows=window_rows,
        tile_window=np.zeros(T, np.int32),
        tile_kind=np.array([0, 1, 2], np.uint8),
        tile_ncols=np.array([2, 1, 1], np.int32),
        tile_cols=tile_cols,
        keep_bits=reference.pack_mask(keep),
        tile_slot=np.array([-1, 0, 0], np.int32),
        int8_values=int8_values,
        int8_scale=np.array([0.5], np.float32),
        fp16_values=fp16_values,
        etile_window=np.zeros(E, np.int32),
        etile_kind=np.array([0, 1], np.uint8),
        etile_nentries=np.array([3, 2], np.int32),
        etile_cols=etile_cols,
        etile_rows=etile_rows,
        etile_keep_bits=reference.pack_mask(etile_keep),
        etile_slot=np.array([-1, 0], np.int32),
        etile_int8_values=np.array([[2, -1, 0, 0, 0, 9] + [0] * 122], np.int8),  # entry 5: stale, never read
        etile_int8_scale=np.array([4.0], np.float32),
        etile_fp16_values=np.zeros((0, 128), np.float16),
        row_scale=np.array([1, 2, 3, 4, 5], np.float32),
        col_scale=None,
    )


def test_spmm_reference_follows_the_contract_on_a_hand_built_matrix():
    A = _hand_built()
    expected = np.zeros((5, 6))
    expected[4, 5] = 1.0
    expected[3, 1] = 1.0 + 1.0
    expected[0, 0] = -1.5
    expected[0, 5] = 0.25
    expected[1, 2] = 1.0
    expected[4, 3] = 8.0
    expected[2, 0] = -4.0
    expected *= np.arange(1, 6)[:, None]  # diag(row_scale) A
    np.testing.assert_array_equal(reference.reference_matrix(A).toarray(), expected)
    X = np.arange(36, dtype=np.float64).reshape(6, 6)
    np.testing.assert_array_equal(reference.spmm_reference(A, X), expected @ X)
    A.col_scale = np.array([1, 1, 1, 1, 1, 0.5], np.float32)
    assert reference.reference_matrix(A)[4, 5] == 5.0 * 0.5


def test_spmm_reference_refuses_bad_operands(encoded):
    A = encoded["gcn-block"]
    with pytest.raises(ValueError, match="M=700"):
        reference.spmm_reference(A, np.zeros((10, 3)))
    with pytest.raises(ValueError, match="finite"):
        reference.spmm_reference(A, np.full((700, 2), np.nan))
    with pytest.raises(TypeError, match="lacks"):
        reference.spmm_reference(SimpleNamespace(shape=(3, 3)), np.zeros((3, 1)))
    bad = _hand_built()
    bad.tile_kind = np.array([0, 1, 7], np.uint8)
    with pytest.raises(ValueError, match="tile kind"):
        reference.reference_matrix(bad)
