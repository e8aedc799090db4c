"""References: bit layout, hardware rounding, masked quantization, hybrid rows, SpMM."""

import numpy as np
import pytest
import scipy.sparse as sp

from dste.format import HybridRows, TileKind, encode, gcn_normalized, quantize_rows
from dste.format.errors import DSTEFormatError
from dste.reference import (
    dequantize_int8,
    int8_scale,
    masked_quant_reference,
    pack_mask,
    quantize_int8,
    quantize_rows_reference,
    round_half_even_saturate,
    spmm_reference,
    unpack_mask,
)
from dste.reference.bits import unpack_mask as unpack
from tests.format.graphs import community_graph


def test_pack_layout_bit_positions():
    mask = np.zeros((3, 128), bool)
    mask[0, 0] = True  # word 0, bit 0
    mask[1, 37] = True  # word 1, bit 5
    mask[2, 127] = True  # word 3, bit 31
    words = pack_mask(mask)
    assert words.dtype == np.uint32 and words.shape == (3, 4)
    assert words[0].tolist() == [1, 0, 0, 0]
    assert words[1].tolist() == [0, 1 << 5, 0, 0]
    assert words[2].tolist() == [0, 0, 0, 1 << 31]


def test_pack_unpack_roundtrip_random():
    mask = np.random.default_rng(0).random((5, 7, 128)) < 0.3
    np.testing.assert_array_equal(unpack_mask(pack_mask(mask)), mask)
    with pytest.raises(TypeError, match="mask must be a bool array, got dtype uint8"):
        pack_mask(mask.astype(np.uint8))
    with pytest.raises(ValueError, match=r"words must have shape \[\.\.\., 4\], got \(2, 3\)"):
        unpack_mask(np.zeros((2, 3), np.uint32))


def test_round_half_even_and_saturation():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, 127.5, 300.0, -300.0, -127.6])
    q = round_half_even_saturate(x, np.int8)
    assert q.tolist() == [0, 2, 2, 0, -2, -2, 126, 127, 127, -127, -127]
    h = round_half_even_saturate(np.array([1e6, -1e6, 1.0 + 2.0**-11]), np.float16)
    assert h.tolist() == [65504.0, -65504.0, 1.0]  # saturate; tie rounds to even (1.0)
    with pytest.raises(ValueError, match="NaN"):
        round_half_even_saturate(np.array([np.nan]), np.int8)


def test_int8_scale_rules():
    v = np.array([[0.0, 0.0], [-254.0, 1.0]], np.float32)
    s = int8_scale(v, axis=1)
    assert s.tolist() == [1.0, 2.0]  # all-zero group -> 1; else max|v| / 127
    q = quantize_int8(v, s[:, None])
    assert q.tolist() == [[0, 0], [-127, 0]]  # 0.5 ties to even 0
    np.testing.assert_array_equal(dequantize_int8(q, s[:, None]), [[0, 0], [-254, 0]])


def _tiles(rng, T):
    values = rng.normal(size=(T, 128, 128)).astype(np.float32)
    values[1, 3, 4] = 500.0  # an outlier tile
    keep = rng.random((T, 128, 128)) < 0.2
    return values, keep


def test_masked_quant_reference_contract():
    rng = np.random.default_rng(1)
    values, keep = _tiles(rng, 4)
    sens = np.array([0.0, 0.5, 0.01, 0.02], np.float32)
    bits, kind, q, scale, f16 = masked_quant_reference(values, keep, sens, 0.02)
    assert kind.tolist() == [TileKind.INT8, TileKind.FP16, TileKind.INT8, TileKind.FP16]
    np.testing.assert_array_equal(unpack(bits), keep)
    masked = np.where(keep, values, 0)
    for t in (0, 2):
        # independent float64 recomputation; float32 division may move an exact tie by one step
        s = np.abs(masked[t]).max() / 127
        assert scale[t] == pytest.approx(s, rel=1e-6)
        expected = np.clip(np.round(masked[t].astype(np.float64) / np.float64(scale[t])), -127, 127)
        assert np.abs(q[t].astype(np.int64) - expected).max() <= 1
        assert (np.abs(dequantize_int8(q[t], scale[t]) - masked[t]) <= scale[t] * (0.5 + 1e-5)).all()
        assert (f16[t] == 0).all()
    for t in (1, 3):
        assert scale[t] == 0 and (q[t] == 0).all()
        np.testing.assert_array_equal(f16[t], masked[t].astype(np.float16))
    with pytest.raises(ValueError, match="float32"):
        masked_quant_reference(values.astype(np.float64), keep, sens, 0.02)
    with pytest.raises(ValueError, match="keep"):
        masked_quant_reference(values, keep[:, :, :64], sens, 0.02)


def test_masked_quant_reference_matches_encoder_tiles():
    """The kernel's oracle and the host encoder produce the same INT8 values and scales."""
    rng = np.random.default_rng(2)
    W = rng.normal(size=(256, 256)).astype(np.float32)
    W[rng.random(W.shape) < 0.5] = 0
    E = encode(W, layout="block", kinds="int8")
    T = E.n_tiles
    dense = np.zeros((T, 128, 128), np.float32)  # [t, k, r]
    for t in range(T):
        w, b = E.tile_window[t], E.tile_cols[t, 0] // 128
        dense[t] = W[w * 128 : (w + 1) * 128, b * 128 : (b + 1) * 128].T
    keep = dense != 0  # W's own nonzero pattern: the mask the encoder should have stored
    np.testing.assert_array_equal(unpack(E.keep_bits), keep)
    _, kind, q, scale, _ = masked_quant_reference(dense, keep, np.zeros(T, np.float32), 1.0)
    np.testing.assert_array_equal(q[E.tile_slot >= 0], E.int8_values[E.tile_slot])
    np.testing.assert_array_equal(scale, E.int8_scale[E.tile_slot])


def test_quantize_rows_reference_and_host():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(50, 33)).astype(np.float32)
    X[7, 0] = 300.0  # outlier row
    X[9] = 0.0
    sens = np.zeros(50)
    sens[[7, 20]] = 1.0
    H = quantize_rows_reference(X, sens, 0.5)
    assert H.hi_rows.tolist() == [7, 20] and H.hi_index[7] == 0 and H.hi_index[0] == 2
    assert H.scale[9] == 1.0 and H.scale[7] == 0.0
    deq = H.dequantize()
    np.testing.assert_array_equal(deq[[7, 20]], X[[7, 20]].astype(np.float16).astype(np.float32))
    low = np.setdiff1d(np.arange(50), [7, 20])
    assert (np.abs(deq[low] - X[low]) <= H.scale[low, None] * (0.5 + 1e-5)).all()
    auto = quantize_rows(X)  # default sensitivity picks the outlier row
    assert 7 in auto.hi_rows
    frac = quantize_rows(X, fp16_fraction=0.1)
    assert frac.hi_rows.size == 5 and 7 in frac.hi_rows
    with pytest.raises(DSTEFormatError, match="NaN"):
        quantize_rows(np.full((2, 2), np.nan))
    with pytest.raises(DSTEFormatError, match="hi_rows must be strictly ascending"):
        HybridRows(q=H.q, scale=H.scale, hi_rows=H.hi_rows[::-1].copy(), hi=H.hi, hi_index=H.hi_index)


def test_spmm_reference_against_scipy():
    adj, _ = community_graph(800, seed=5)
    G = gcn_normalized(adj)
    X = np.random.default_rng(4).normal(size=(800, 24))
    a_hat = ((adj != 0) + sp.eye(800)).astype(np.float64)
    a_hat.data[:] = 1
    d = np.asarray(a_hat.sum(1)).ravel() ** -0.5
    expected = (sp.diags(d) @ a_hat @ sp.diags(d)) @ X
    # D^-1/2 stored as float32: relative 2^-23 per entry product, summed over ~15 terms
    np.testing.assert_allclose(spmm_reference(G, X), expected, rtol=1e-6, atol=1e-6)
    H = quantize_rows(X.astype(np.float32), fp16_fraction=0.05)
    np.testing.assert_allclose(spmm_reference(G, H), G.decode() @ H.dequantize(np.float64), rtol=1e-12)
    with pytest.raises(ValueError, match="M=800"):
        spmm_reference(G, X[:10])


def test_the_references_put_a_sensitivity_equal_to_the_threshold_in_fp16():
    # the documented rule is S >= T -> FP16 (docs/CONTRACTS.md); only a tie tells >= from >
    rng = np.random.default_rng(1)
    X = rng.standard_normal((4, 8)).astype(np.float32)
    rows = quantize_rows_reference(X, np.array([0.0, 0.02, 0.5, 0.01], np.float32), 0.02)
    assert rows.hi_rows.tolist() == [1, 2]
    values = rng.standard_normal((3, 128, 128)).astype(np.float32)
    keep = rng.random((3, 128, 128)) < 0.3
    kind = masked_quant_reference(values, keep, np.array([0.02, 0.01, 0.03], np.float32), 0.02)[1]
    assert kind.tolist() == [2, 1, 2]
