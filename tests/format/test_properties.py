"""Hypothesis properties: exact round trips, INT8 half-step bound, mask replacement == masked encoding."""

import numpy as np
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from dste.format import TileKind, encode

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
    rows, cols, _ = E._coordinates()
    # the step of each entry's own tile: recover it through a one-hot probe of the tile's scale
    step = _entry_steps(E)
    key_sorted = np.lexsort((cols, rows))
    original = np.asarray(A[rows, cols]).ravel()
    decoded = np.asarray(E.decode()[rows, cols]).ravel()
    err = np.abs(decoded - original)[key_sorted]
    # half a step, plus float32 rounding of v / scale (relative 2^-24 of |v| <= 127 steps)
    assert (err <= step[key_sorted] * (0.5 + 127 * 2.0**-23)).all()


def _ascending_positions(words):
    """Flat word index of every set bit, in ascending ``word * 32 + bit`` order (``_coordinates``' order)."""
    from dste.reference.bits import set_bit_positions

    positions = [idx * 32 + bit for idx, bit in set_bit_positions(words)]
    return np.sort(np.concatenate(positions)) // 32 if positions else np.zeros(0, np.int64)


def _entry_steps(E):
    """INT8 scale of the tile holding each kept entry, in ``_coordinates`` order."""
    tiles = _ascending_positions(E.keep_bits) // 512
    etiles = _ascending_positions(E.etile_keep_bits) // 4
    return np.concatenate([
        E.int8_scale[E.tile_slot[tiles]].astype(np.float64),
        E.etile_int8_scale[E.etile_slot[etiles]].astype(np.float64),
    ])


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
