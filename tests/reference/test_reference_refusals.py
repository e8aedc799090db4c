"""The references refuse what the format's functions refuse: an oracle that answers a NaN score, a string threshold
or an out-of-range id compares its answer to a question the code under test (rightly) declines. Each case below
gave a number or a NumPy/SciPy error before; where the format has a twin, it refuses the same input."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import dste
from dste.format import DSTEFormatError
from dste.format import quant as format_quant
from dste.format.hybrid_rows import int8_sensitivity_robust
from dste.reference import (
    dequantize_int8,
    gcn_normalization,
    int8_scale,
    int8_sensitivity,
    masked_quant_reference,
    quantize_rows_reference,
    spmm_reference,
)
from dste.reference.masked_quant import ReferenceHybridRows


def _tile():
    values = np.random.default_rng(0).standard_normal((1, 128, 128)).astype(np.float32)
    return values, np.ones(values.shape, bool)


@pytest.mark.parametrize("scale_of", [int8_scale, format_quant.int8_scale])
def test_int8_scale_refuses_non_finite_values(scale_of):
    # NaN > 0 is False: a group holding a NaN got the all-zero group's scale, 1.0
    for values in ([1.0, np.nan, 3.0], [1.0, np.inf]):
        with pytest.raises(ValueError, match="int8_scale: values must be finite"):
            scale_of(values)
    with pytest.raises(ValueError, match="finite"):
        scale_of(np.array([[1.0, 2.0], [np.nan, 0.0]]), axis=1)
    assert scale_of([0.0, -254.0]) == np.float32(2.0)


@pytest.mark.parametrize("threshold", [float("nan"), float("inf")])
def test_masked_quant_reference_refuses_a_non_finite_threshold_as_the_host_twin_does(threshold):
    values, keep = _tile()
    scores = np.zeros(1, np.float32)
    with pytest.raises(ValueError, match="threshold must be a finite number"):
        masked_quant_reference(values, keep, scores, threshold)
    with pytest.raises(ValueError, match="masked_quant_host: threshold must be a finite number"):
        format_quant.masked_quant_host(values, keep, scores, threshold)


@pytest.mark.parametrize("threshold", ["0.02", True, None])
def test_masked_quant_reference_refuses_a_threshold_that_is_not_a_number(threshold):
    values, keep = _tile()
    with pytest.raises(TypeError, match="masked_quant_reference: threshold must be a real number"):
        masked_quant_reference(values, keep, np.zeros(1, np.float32), threshold)


def test_the_references_refuse_a_nan_score():
    values, keep = _tile()
    with pytest.raises(ValueError, match="masked_quant_reference: sensitivity contains NaN"):
        masked_quant_reference(values, keep, np.array([np.nan], np.float32), 0.02)
    X = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match="quantize_rows_reference: sensitivity contains NaN"):
        quantize_rows_reference(X, np.full(4, np.nan), 0.02)
    with pytest.raises(DSTEFormatError, match="sensitivity contains NaN"):
        dste.quantize_rows(X, sensitivity=np.full(4, np.nan), threshold=0.02)


@pytest.mark.parametrize("scores", [np.ones(4, bool), ["a"] * 4])
def test_quantize_rows_reference_takes_real_scores_as_quantize_rows_does(scores):
    X = np.ones((4, 3), np.float32)
    with pytest.raises(TypeError, match="quantize_rows_reference: sensitivity must hold real numbers"):
        quantize_rows_reference(X, scores, 0.5)
    with pytest.raises(TypeError, match="sensitivity must hold real numbers"):
        dste.quantize_rows(X, sensitivity=scores, threshold=0.5)
    with pytest.raises(TypeError, match="threshold must be a real number"):
        quantize_rows_reference(X, np.zeros(4), "0.5")


def test_gcn_normalization_refuses_what_gcn_normalized_refuses():
    with_nan = sp.csr_matrix(np.array([[0.0, np.nan], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="adj holds NaN or Inf"):  # a NaN is != 0: it read as an edge
        gcn_normalization(with_nan)
    with pytest.raises(DSTEFormatError, match="NaN or Inf"):
        dste.gcn_normalized(with_nan)
    with pytest.raises(ValueError, match=r"adj must be square \[N, N\], got shape \(2, 3\)"):
        gcn_normalization(sp.csr_matrix(np.ones((2, 3))))
    with pytest.raises(ValueError, match="2-D array, got shape \\(3,\\)"):
        gcn_normalization(np.ones(3))
    for wrong in (None, "abc"):
        with pytest.raises(TypeError, match=f"SciPy sparse matrix or a 2-D array, got {type(wrong).__name__}"):
            gcn_normalization(wrong)


def test_gcn_normalization_of_a_dense_array_equals_that_of_its_sparse_form():
    adj = (np.random.default_rng(2).random((30, 30)) < 0.1).astype(np.float64)
    assert abs(gcn_normalization(adj) - gcn_normalization(sp.csr_matrix(adj))).max() == 0


def test_dequantize_int8_takes_int8_steps():
    with pytest.raises(TypeError, match="q must hold INT8 steps"):
        dequantize_int8([1.5, 300.0], 0.1)
    with pytest.raises(ValueError, match=r"q must lie in \[-127, 127\]"):
        dequantize_int8(np.array([1, 300]), 0.1)
    with pytest.raises(ValueError, match="scale must be finite"):
        dequantize_int8(np.array([1, 2], np.int8), np.nan)
    np.testing.assert_array_equal(dequantize_int8(np.array([-127, 3], np.int8), 0.5), [-63.5, 1.5])


@pytest.mark.parametrize("sensitivity_of", [int8_sensitivity, int8_sensitivity_robust])
def test_int8_sensitivity_takes_a_group_count(sensitivity_of):
    for n_groups, error in ((1.5, TypeError), (True, TypeError), ("2", TypeError), (-1, ValueError)):
        with pytest.raises(error, match="n_groups must"):
            sensitivity_of([1.0, 2.0], [0, 0], n_groups)
    assert sensitivity_of([1.0, 2.0], [0, 0], np.int64(2)).shape == (2,)


def test_int8_sensitivity_reference_refuses_nan_values_and_float_group_ids():
    with pytest.raises(ValueError, match="values must be finite"):
        int8_sensitivity([1.0, np.nan], [0, 0], 1)
    with pytest.raises(TypeError, match="group_ids must be integers"):
        int8_sensitivity([1.0, 2.0], [0.0, 0.5], 1)


def test_spmm_reference_refuses_hybrid_rows_whose_ids_are_outside_x():
    A = dste.encode(sp.random(60, 50, density=0.1, format="csr", random_state=0))
    rows = dste.quantize_rows(np.random.default_rng(1).standard_normal((50, 4)).astype(np.float32))
    outside = ReferenceHybridRows(q=rows.q, scale=rows.scale, hi_rows=np.array([99]),
                                  hi=np.zeros((1, 4), np.float16), hi_index=rows.hi_index)
    with pytest.raises(ValueError, match=r"hi_rows must be row ids in \[0, 50\), got 99 .. 99"):
        spmm_reference(A, outside)
    mismatched = ReferenceHybridRows(q=rows.q, scale=rows.scale[:10], hi_rows=rows.hi_rows, hi=rows.hi,
                                     hi_index=rows.hi_index)
    with pytest.raises(ValueError, match=r"needs q \[M, F\], scale \[M\]"):
        spmm_reference(A, mismatched)
    np.testing.assert_allclose(spmm_reference(A, rows), A.decode() @ rows.dequantize(np.float64), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.int32, np.float16, "hello"])
def test_reference_dequantize_takes_the_dtypes_the_format_takes(dtype):
    reference = quantize_rows_reference(np.ones((3, 2), np.float32), np.zeros(3), 0.5)
    with pytest.raises(ValueError, match="dequantize: dtype must be float32 or float64"):
        reference.dequantize(dtype)
    with pytest.raises(DSTEFormatError, match="dequantize dtype must be float32 or float64"):
        dste.quantize_rows(np.ones((3, 2), np.float32)).dequantize(dtype)
