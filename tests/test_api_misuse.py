"""Calls a user gets slightly wrong, answered with an error that says what was wrong and what is allowed, or done
as the user meant (found by using the public API as the README presents it, outside the project's own code)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import dste
from dste.format import DSTEFormatError
from dste.gnn import GCNConv, SAGEConv
from dste.kernels import estimate_spmm, launch_spmm_hybrid
from dste.reference.spmm import spmm_reference
from tests.kernels.error_bounds import BOUND_FP32_X, assert_within_bound


@pytest.fixture(scope="module")
def matrix():
    rng = np.random.default_rng(5)
    pattern = sp.random(60, 50, density=0.1, random_state=rng, format="csr")
    pattern.data[:] = 1.0
    return pattern, dste.encode(pattern)


def test_estimate_spmm_prices_a_wrapped_matrix_and_names_what_it_takes(matrix):
    pattern, A = matrix
    assert estimate_spmm(dste.DSTETensor(A), 16).latency_us == estimate_spmm(A, 16).latency_us
    for wrong in (pattern, None):  # AttributeError: 'csr_matrix' object has no attribute 'n_ltiles'
        with pytest.raises(TypeError, match="A must be a DSTEMatrix .*got"):
            estimate_spmm(wrong, 16)


def test_encode_says_where_policy_fields_go(matrix):
    pattern, _ = matrix
    with pytest.raises(TypeError, match=r"policy must be an EncodePolicy.*kinds='int8'"):
        dste.encode(pattern, "int8")  # AttributeError: 'str' object has no attribute 'row_scale'
    with pytest.raises(DSTEFormatError, match="fp16_threshold must be a finite number.*got str"):
        dste.encode(pattern, fp16_threshold="0.1")
    for wrong in (None, "abc"):
        with pytest.raises(DSTEFormatError, match=f"2-D matrix .*got {type(wrong).__name__}"):
            dste.encode(wrong)


@pytest.mark.parametrize("name", ["threshold", "fp16_fraction"])
def test_quantize_rows_refuses_text_for_its_numbers(name):
    with pytest.raises(DSTEFormatError, match=f"{name} must be a number, got str"):
        dste.quantize_rows(np.ones((3, 4), np.float32), **{name: "0.1"})


def test_a_torch_sparse_mask_and_a_list_of_tile_bits_mask_as_their_scipy_and_tuple_forms(matrix):
    pattern, A = matrix
    keep = sp.random(60, 50, density=0.5, random_state=np.random.default_rng(6), format="coo")
    expected = A.with_mask(keep).to_dense()
    torch_keep = torch.sparse_coo_tensor(np.vstack([keep.row, keep.col]), torch.from_numpy(keep.data), keep.shape,
                                         check_invariants=True)
    np.testing.assert_array_equal(A.with_mask(torch_keep).to_dense(), expected)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: "Sparse CSR tensor support is in beta state"
        csr_keep = torch_keep.to_sparse_csr()
    np.testing.assert_array_equal(A.with_mask(csr_keep).to_dense(), expected)
    masked = A.with_mask(keep)
    bits = [masked.keep_bits, masked.etile_keep_bits]
    if A.n_ltiles:
        bits.append(masked.ltile_keep_bits)
    np.testing.assert_array_equal(A.with_mask(bits).to_dense(), expected)
    with pytest.raises(DSTEFormatError, match=r"expected a 2-D sparse matrix with scalar values, got shape \(2, 60, 50\)"):
        A.with_mask(torch.ones(2, 60, 50).to_sparse())


def test_the_launcher_takes_big_endian_x_and_refuses_a_plan_that_is_not_one(matrix):
    _, A = matrix
    x = np.random.default_rng(7).standard_normal((50, 4)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(launch_spmm_hybrid(A, x.astype(">f4"))),
                                  np.asarray(launch_spmm_hybrid(A, x)))
    assert_within_bound(launch_spmm_hybrid(A, x.astype(">f4")), spmm_reference(A, x), A, x, BOUND_FP32_X)
    with pytest.raises(TypeError, match="plan must be a LaunchPlan"):
        launch_spmm_hybrid(A, x, plan="x")


@pytest.mark.parametrize("layer_cls", [GCNConv, SAGEConv])
def test_layers_take_numpy_integer_sizes_and_refuse_fractions(layer_cls):
    layer = layer_cls(np.int64(4), np.int32(2))
    assert (layer.in_features, layer.out_features) == (4, 2) and type(layer.in_features) is int
    for wrong in (4.0, True, 0):
        with pytest.raises(ValueError, match="in_features must be a positive int"):
            layer_cls(wrong, 2)


def test_gcn_normalized_points_an_edge_index_to_the_adjacency_it_needs():
    edge_index = np.array([[0, 1, 2], [1, 2, 0]])
    with pytest.raises(DSTEFormatError, match=r"square adjacency, got shape \(2, 3\).*to_scipy_adjacency"):
        dste.gcn_normalized(edge_index)


def test_estimate_spmm_takes_a_wide_dense_x_and_names_an_x_of_another_mode(matrix):
    """Past 4,096 columns a dense X raised AttributeError ('numpy.ndarray' object has no attribute 'q'); an X of
    another dtype than x_mode was reported as a plan mismatch, with no plan passed."""
    _, A = matrix
    wide = np.ones((50, 4097), np.float32)
    assert estimate_spmm(A, 4097, "fp32", X=wide).latency_us == estimate_spmm(A, 4097, "fp32").latency_us
    with pytest.raises(ValueError, match="X is fp32 .* but x_mode='bf16'"):
        estimate_spmm(A, 16, "bf16", X=np.ones((50, 16), np.float32))
