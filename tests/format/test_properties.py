"""Hypothesis properties: exact round trips, INT8 half-step bound, mask replacement == masked encoding."""

import numpy as np
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from dste.format import TileKind, encode
from tests.format.value_checks import check_int8_tiles_against_input

SETTINGS = settings(max_examples=25, deadline=None)


@st.composite
def sparse_matrices(draw, values="fp16"):
    n = draw(st.integers(1, 300))
    m = draw(st.integers(1, 300))
    density = draw(st.sampled_from([0.0, 0.005, 0.03, 0.2]))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    A = sp.random(n, m, density=density, random_state=rng, format="csr")
    if values == "fp16":
        A.data = rng.integers(-1024, 1024, size=A.nnz) / 32.0  # exactly representable in float16
    elif values == "binary":
        A.data[:] = 1.0
    else:
        A.data = rng.normal(size=A.nnz) * draw(st.sampled_from([1e-3, 1.0, 1e3]))
    A.eliminate_zeros()
    return A


@SETTINGS
@given(A=sparse_matrices("fp16"), layout=st.sampled_from(["condensed", "block"]), reorder=st.sampled_from(["none", "rcm"]), split=st.integers(1, 6))
def test_fp16_representable_roundtrip_exact(A, layout, reorder, split):
    E = encode(A, kinds="fp16", layout=layout, reorder=reorder, bitmap_min_entries=split)
    E.validate(deep=True)
    D = E.decode()
    assert D.shape == A.shape
    assert abs(D - A).max() == 0


@SETTINGS
@given(A=sparse_matrices("binary"), reorder=st.sampled_from(["none", "rcm", "community"]))
def test_binary_roundtrip_exact(A, reorder):
    E = encode(A, reorder=reorder)
    assert (E.tile_kind == TileKind.BIN).all() and (E.etile_kind == TileKind.BIN).all()
    assert abs(E.decode() - A).max() == 0


@SETTINGS
@given(A=sparse_matrices("gauss"), layout=st.sampled_from(["condensed", "block"]))
def test_int8_error_at_most_half_step(A, layout):
    E = encode(A, kinds="int8", layout=layout)
    # each tile's scale from the input values it holds (the reference's max|v| / 127), each entry within half of it
    assert check_int8_tiles_against_input(E, A) == E.n_tiles + E.n_etiles + E.n_ltiles


@SETTINGS
@given(A=sparse_matrices("fp16"), keep_fraction=st.sampled_from([0.0, 0.3, 1.0]), seed=st.integers(0, 1000), kinds=st.sampled_from(["fp16", "bin"]))
def test_with_mask_equals_encoding_masked(A, keep_fraction, seed, kinds):
    rng = np.random.default_rng(seed)
    mask = rng.random(A.shape) < keep_fraction
    E = encode(A, kinds=kinds)
    masked = E.with_mask(mask)
    assert masked.int8_values is E.int8_values and masked.fp16_values is E.fp16_values  # no re-quantization
    reference = encode(A.multiply(mask).tocsr(), kinds=kinds)
    assert abs(masked.decode() - reference.decode()).toarray().max(initial=0) == 0
    assert masked.nnz_kept == reference.nnz_stored
    # re-admitting everything restores the original
    assert abs(masked.with_mask(np.ones(A.shape, bool)).decode() - E.decode()).toarray().max(initial=0) == 0


@SETTINGS
@given(A=sparse_matrices("gauss"), seed=st.integers(0, 1000))
def test_with_mask_int8_keeps_values(A, seed):
    mask = np.random.default_rng(seed).random(A.shape) < 0.5
    E = encode(A, kinds="int8")
    full = E.decode().toarray()
    np.testing.assert_array_equal(E.with_mask(mask).to_dense(), np.where(mask, full, 0.0))
