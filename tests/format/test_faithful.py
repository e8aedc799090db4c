"""The default encoding is faithful: values are kept within float16's 2^-11 relative bound or refused."""

import re

import numpy as np
import pytest
import scipy.sparse as sp

import dste
from dste.format import DSTEFormatError, TileKind, encode


def _normalised(n=300, seed=0):
    rng = np.random.default_rng(seed)
    adj = sp.random(n, n, density=0.02, random_state=rng, format="csr")
    adj = ((adj + adj.T) > 0).astype(np.float64) + sp.eye(n)
    d = np.asarray(adj.sum(axis=1)).ravel() ** -0.5
    return sp.diags(d) @ adj @ sp.diags(d)


def test_default_encode_of_a_normalised_matrix_is_within_fp16_relative_error():
    A = _normalised().tocsr()
    E = dste.encode(A)
    assert E.encode_policy["kinds"] == "faithful"
    assert set(np.unique(np.concatenate([E.tile_kind, E.etile_kind]))) <= {TileKind.FP16}
    D = E.decode().tocsr()
    rel = abs(D - A).max() / abs(A).data.min()
    # float16 rounds to nearest: half an ulp of an 11-bit significand, 2^-11 relative (INT8 gave 1.3e-2)
    assert abs(D - A).multiply(sp.csr_matrix((1.0 / np.abs(A.data), A.indices, A.indptr), shape=A.shape)).max() <= 2.0**-11
    assert rel < 1e-2


def test_int8_is_an_explicit_opt_in():
    A = _normalised().tocsr()
    E = dste.encode(A, kinds="int8")
    assert (E.tile_kind == TileKind.INT8).all() and (E.etile_kind == TileKind.INT8).all()


def test_binary_stays_bin_and_exact():
    A = (_normalised() > 0).astype(np.float32)
    E = dste.encode(A)
    assert (E.tile_kind == TileKind.BIN).all() and (E.etile_kind == TileKind.BIN).all()
    assert abs(E.decode() - A).max() == 0


def test_values_beyond_float16_that_int8_keeps_exactly_use_int8():
    # every value of the tile is +-c with c > 65504: INT8 stores q = +-127 and scale c / 127 within 2^-11
    A = np.zeros((4, 4))
    A[0, 0], A[1, 2] = 1e6, -1e6
    E = encode(A)
    assert set(E.etile_kind.tolist()) | set(E.tile_kind.tolist()) == {TileKind.INT8}
    np.testing.assert_allclose(E.to_dense(), A, rtol=2.0**-11)


@pytest.mark.parametrize("values", [(1e6, 1.0), (1e-6, 1.0), (3e-7, 1e-7)])
def test_values_no_kind_keeps_faithfully_are_refused(values):
    A = np.zeros((2, 2))
    A.flat[: len(values)] = values
    with pytest.raises(DSTEFormatError, match="faithful.*kinds='fp16'.*2\\^-25.*kinds='auto'.*row_scale"):
        encode(A)
    encode(A, kinds="auto")  # the lossy kinds remain available on request
    if max(values) <= 65504:  # the message's bound for FP16 tiles: below 2^-14, half FP16's subnormal step
        np.testing.assert_allclose(encode(A, kinds="fp16").to_dense(), A, rtol=2.0**-11, atol=2.0**-25)


@pytest.mark.parametrize("tiny", [1e-44, 1e-39, -3e-40])
def test_values_below_float32_normal_range_are_refused_not_flushed(tiny):
    A = np.array([[1.0, tiny], [0.0, 2.0]])
    for kinds in ("faithful", "auto", "int8", "fp16", "bin"):
        with pytest.raises(DSTEFormatError, match=r"\(0, 1\).*smallest normal"):
            encode(A, kinds=kinds)


def test_small_but_normal_values_survive_with_scales():
    A = sp.csr_matrix(np.array([[1e-30, 2e-30], [0.0, 3e-30]]))
    E = encode(A, row_scale=np.array([1e-30, 1e-30], np.float32))
    np.testing.assert_allclose(E.to_dense(), A.toarray(), rtol=1e-6)


@pytest.mark.parametrize("scale, word", [(1e-25, "1e-50"), (1e20, "1e\\+40")])
def test_scaled_values_outside_float32_range_are_refused(scale, word):
    """row_scale_i * v * col_scale_j is what decode and the CPU op compute in float32: 1e-50 would become 0 there
    (the kernel, which applies the scales apart, would not), 1e40 Inf."""
    S = sp.random(64, 64, density=0.1, format="csr", random_state=0)
    S.data[:] = 1.0
    s = np.full(64, scale, np.float32)
    with pytest.raises(DSTEFormatError, match=f"times its row and column scales is {word}.*float32's normal range"):
        encode(S, row_scale=s, col_scale=s, scaled_input=False)
    # the same magnitudes given as scaled input (values 1e-50 / 1e40 to factor) are refused alike
    with pytest.raises(DSTEFormatError, match="float32"):
        encode(S * (scale * scale), row_scale=s, col_scale=s)
    # within range the product is kept: 1e-17 scales on 1.0 give 1e-34, a normal float32
    t = np.full(64, 1e-17, np.float32)
    E = encode(S, row_scale=t, col_scale=t, scaled_input=False)
    expected = (t.astype(np.float64)[:, None] * S.toarray() * t.astype(np.float64)[None, :]) @ np.ones(64)
    np.testing.assert_allclose(dste.spmm(E, np.ones((64, 1), np.float32)).numpy()[:, 0], expected, rtol=1e-6)


@pytest.mark.parametrize("value, what", [(1e-50, "underflows to 0"), (1e50, "overflows")])
def test_scales_that_float32_cannot_hold_are_refused_not_cast(value, what):
    S = sp.random(50, 50, density=0.1, format="csr", random_state=0)
    with pytest.raises(DSTEFormatError, match=re.escape(f"row_scale[0] = {value:g} {what}")):
        encode(S, row_scale=np.full(50, value), scaled_input=False)


@pytest.mark.parametrize("seed", ["x", -1, 1.5, True])
def test_the_reorder_seed_must_be_a_non_negative_int(seed):
    with pytest.raises(DSTEFormatError, match="seed must be an int >= 0"):
        encode(sp.eye(4, format="csr"), reorder="community", seed=seed)
