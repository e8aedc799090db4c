"""Bad arguments to the gnn room's public functions are refused with errors that name the argument and what is
allowed, before any work: never a silent wrong answer (an integer input casting the weights to int, a NaN scored as
an ordinary row, a truthy string read as True), never an error in NumPy's, torch's or SciPy's own words."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from dste.gnn import CompressedWeight, GCNConv


@pytest.fixture(scope="module")
def weight():
    return CompressedWeight(torch.from_numpy(np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)))


# ---------------------------------------------------------------------------------------------- CompressedWeight
@pytest.mark.parametrize("dtype", [torch.long, torch.int32, torch.bool, torch.complex64])
def test_compressed_weight_refuses_a_non_float_input(weight, dtype):
    # an int64 h ran as h @ W with W cast to int64 (weights truncated); a bool h failed in torch's words
    with pytest.raises(TypeError, match=r"input h must be a floating-point tensor \(float32, float64.*got torch\."):
        weight(torch.ones(2, 8, dtype=dtype))


def test_compressed_weight_refuses_a_numpy_input(weight):
    with pytest.raises(TypeError, match=r"input h must be a torch tensor \[N, 8\], got ndarray.*torch.from_numpy"):
        weight(np.ones((2, 8), np.float32))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_compressed_weight_refuses_non_finite_input_as_dste_spmm_does(weight, bad, layout):
    h = torch.ones(5, 8)
    h[3, 2] = bad
    if layout == "sparse":
        h = h.to_sparse()
    with pytest.raises(ValueError, match="h contains NaN or Inf; the DSTE ops take finite values only"):
        weight(h)


def test_compressed_weight_takes_finite_input_whose_sum_overflows(weight):
    # the one-thread check sums h: a sum that overflows to Inf falls back to the exact check instead of refusing
    h = torch.full((4, 8), 3e38)
    assert torch.equal(weight(h), h @ weight.dense_effective(torch.float32))
    h[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        weight(h)


def test_compressed_weight_valid_inputs_are_unchanged(weight):
    rng = np.random.default_rng(1)
    h = torch.from_numpy(rng.standard_normal((6, 8)).astype(np.float32))
    assert torch.equal(weight(h), h @ weight.dense_effective(torch.float32))
    assert torch.equal(weight(h.double()), h.double() @ weight.dense_effective(torch.float64))
    assert torch.equal(weight(h.half()), h.half() @ weight.dense_effective(torch.float16))
    assert torch.equal(weight(h.to_sparse()), h.to_sparse() @ weight.dense_effective(torch.float32))


@pytest.mark.parametrize(
    "fields, error, message",
    [
        ({"fp16_threshold": True}, TypeError, "fp16_threshold must be a real number, got bool"),
        ({"fp16_threshold": "0.1"}, TypeError, "fp16_threshold must be a real number, got str"),
        ({"fp16_threshold": float("nan")}, ValueError, "fp16_threshold must be a finite number"),
        ({"sparsity": "0.5"}, TypeError, "sparsity must be a real number, got str"),
        ({"sparsity": True}, TypeError, "sparsity must be a real number, got bool"),
        ({"sparsity": 1.0}, ValueError, r"sparsity must lie in \[0, 1\)"),
        ({"sparsity": float("nan")}, ValueError, r"sparsity must lie in \[0, 1\)"),
    ],
)
def test_compressed_weight_settings_must_be_real_numbers(fields, error, message):
    with pytest.raises(error, match=message):
        CompressedWeight(torch.ones(8, 4), **fields)
    with pytest.raises(error, match=message):
        GCNConv(8, 4).compress_weights(**fields)


def test_magnitude_keep_mask_refuses_a_bool_sparsity():
    from dste.gnn import magnitude_keep_mask

    with pytest.raises(TypeError, match="sparsity must be a real number, got bool"):
        magnitude_keep_mask(np.ones((4, 4)), False)
    assert magnitude_keep_mask(np.ones((4, 4)), np.float32(0.25)).sum() == 12
