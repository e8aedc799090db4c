"""Fuzz: encode / gcn_normalized / with_mask / quantize_rows: a result within the documented bound or a clear error."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import dste
from dste.format import DSTEFormatError, IgnoredEdgeWeightsWarning, encode, gcn_normalized
from dste.format.constants import FP16_UNDERFLOW_AMAX

from tests.format.value_checks import check_int8_tiles_against_input

from .strategies import examples, features, sparse_values

FP16_REL = 2.0**-11  # float16 round to nearest over its normal range
FP16_ABS = 2.0**-25  # half the float16 subnormal spacing
F32_REL = 2.0**-23  # the input is rounded to float32 once, the scales add a product or two


def _clear(error: Exception) -> None:
    assert isinstance(error, (ValueError, TypeError)) and len(str(error)) > 20, repr(error)




def _bound(E, A32, kinds):
    """Per-entry documented error bound of the kinds the encoder was asked for."""
    absA = np.abs(A32)
    fp16 = FP16_REL * absA + FP16_ABS + F32_REL * absA
    if kinds in ("faithful",):
        return (FP16_REL + F32_REL) * absA
    if kinds == "fp16":
        return fp16
    step = max(E.int8_scale.max(initial=0), E.etile_int8_scale.max(initial=0))
    return np.maximum(fp16, 0.5 * step * (1 + 1e-6) + F32_REL * absA)


@settings(max_examples=examples(260))
@given(A=sparse_values(), kinds=st.sampled_from(["faithful", "faithful", "auto", "int8", "fp16", "bin"]),
       layout=st.sampled_from(["condensed", "block"]))
def test_encode_is_within_its_bound_or_refuses(A, kinds, layout):
    try:
        E = encode(A, kinds=kinds, layout=layout)
    except DSTEFormatError as error:
        _clear(error)
        return
    D = E.to_dense().astype(np.float64)
    assert np.isfinite(D).all()
    dense = A.toarray()
    if kinds == "bin":
        np.testing.assert_array_equal(D, (dense != 0).astype(np.float64))
        return
    A32 = dense.astype(np.float32).astype(np.float64)
    assert (np.abs(D - A32) <= _bound(E, A32, kinds) + 1e-300).all(), kinds
    assert ((D != 0) <= (dense != 0)).all()  # no entry appears from nowhere
    if kinds in ("int8", "auto"):
        # _bound's INT8 step is the encoder's own largest scale, which a wrong scale (max|v| / 63, or one tile's
        # taken over its window) still keeps within: each INT8 tile against the reference's scale of its own input
        check_int8_tiles_against_input(E, A)


@settings(max_examples=examples(80))
@given(A=sparse_values(max_n=60, max_m=60), reorder=st.sampled_from(["none", "rcm", "community"]),
       unit_diagonal=st.booleans())
def test_gcn_normalized_matches_scipy(A, reorder, unit_diagonal):
    if A.shape[0] != A.shape[1]:
        with pytest.raises(DSTEFormatError, match="square"):
            gcn_normalized(A, unit_diagonal=unit_diagonal)
        return
    structure = (A != 0).astype(np.float64) + sp.eye(A.shape[0])
    structure.data[:] = 1.0
    degree = np.asarray(structure.sum(axis=1)).ravel()
    d = 1.0 / np.sqrt(degree)
    expected = (sp.diags(d) @ structure @ sp.diags(d)).toarray()
    canonical = sp.csr_matrix(A)
    canonical.sum_duplicates()
    canonical.eliminate_zeros()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        G = gcn_normalized(A, reorder=reorder, unit_diagonal=unit_diagonal)
    # it reads the 0/1 pattern, and says so exactly where A holds values other than 1
    warned = any(issubclass(w.category, IgnoredEdgeWeightsWarning) for w in seen)
    assert warned == bool((canonical.data != 1).any())
    assert G.unit_diagonal == unit_diagonal and G.nnz_stored == structure.nnz
    # values are 1 (BIN) times float32 scales: two float32 roundings and one product
    np.testing.assert_allclose(G.to_dense(), expected, rtol=4 * 2.0**-24, atol=0)


@settings(max_examples=examples(80))
@given(A=sparse_values(max_n=50, max_m=50), seed=st.integers(0, 2**31 - 1), fraction=st.sampled_from([0.0, 0.3, 0.9, 1.0]))
def test_with_mask_equals_masking_the_decoded_matrix(A, seed, fraction):
    try:
        E = encode(A)
    except DSTEFormatError as error:
        _clear(error)
        return
    keep = np.random.default_rng(seed).random(A.shape) < fraction
    masked = E.with_mask(keep)
    np.testing.assert_array_equal(masked.to_dense(), np.where(keep, E.to_dense(), 0))
    with pytest.raises(ValueError, match=r"with_mask: mask shape \(\d+, \d+\) != matrix shape"):
        E.with_mask(np.ones((A.shape[0] + 1, A.shape[1]), bool))


@settings(max_examples=examples(250))
@given(X=features(), threshold=st.sampled_from([None, 0.0, 0.02, 1.0, float("inf")]))
def test_quantize_rows_is_within_its_bound_or_refuses(X, threshold):
    try:
        H = dste.quantize_rows(X, threshold=threshold)
    except (DSTEFormatError, ValueError) as error:
        _clear(error)
        return
    D = H.dequantize().astype(np.float64)
    assert D.shape == X.shape and np.isfinite(D).all()
    x = X.astype(np.float64)
    is_hi = np.zeros(X.shape[0], bool)
    is_hi[H.hi_rows] = True
    row_max = np.abs(x).max(axis=1, initial=0)[:, None]
    bound = np.where(is_hi[:, None], FP16_REL * np.abs(x) + FP16_ABS, row_max / 254 * (1 + 1e-6) + 1e-45)
    assert (np.abs(D - x) <= bound).all()
    if threshold is None and X.size:
        # a row that INT8 would wipe out (its median entry rounds to 0) must not stay INT8, unless float16 would hold
        # it worse still (largest |x| below FP16_UNDERFLOW_AMAX: its subnormal rounding, 2^-25, exceeds INT8's)
        nonzero_rows = (X != 0).sum(axis=1) >= 2
        int8_rows = ~is_hi & nonzero_rows & (row_max[:, 0] >= FP16_UNDERFLOW_AMAX)
        for i in np.flatnonzero(int8_rows):
            nz = np.abs(x[i][x[i] != 0])
            assert np.sort(nz)[(nz.size - 1) // 2] >= row_max[i, 0] / 254 * 0.999, i


@settings(max_examples=examples(60))
@given(X=features(max_m=30, max_f=20), fraction=st.sampled_from([0.0, 0.25, 1.0]))
def test_quantize_rows_fraction_picks_that_many_rows(X, fraction):
    try:
        H = dste.quantize_rows(X, fp16_fraction=fraction)
    except DSTEFormatError as error:
        assert "float16 max" in str(error) or "subnormal" in str(error)
        return
    assert H.hi_rows.size == int(round(fraction * X.shape[0]))
