"""Operands of the raw ops and arguments of the wrappers that gave a silent wrong answer or an error in another
library's words: a CSR whose last row pointer stops short of its entries, NaN/Inf values, a bool threshold, a
dimension outside a 2-D matrix. Each is refused naming the argument; valid operands keep their bits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dste
import dste.bindings as db

from .conftest import random_sparse

NO_HANDLE = -1
EMPTY = torch.empty(0, dtype=torch.int64)


def _ids(*values):
    return torch.tensor(values, dtype=torch.int32)


def _spmm(crow, col, values, x):
    return torch.ops.dste.spmm_hybrid(crow, col, values, EMPTY, EMPTY, x, NO_HANDLE, NO_HANDLE, "cpu")


def _transpose(crow, col, values, grad, m):
    return torch.ops.dste.spmm_transpose(crow, col, values, EMPTY, EMPTY, grad, m)


def test_a_row_pointer_that_stops_short_of_the_entries_is_refused():
    # crow [0, 1, 1] with two entries: the second one was dropped from Y without a word
    crow, col, values = _ids(0, 1, 1), _ids(0, 1), torch.tensor([1.0, 2.0])
    with pytest.raises(ValueError, match=r"crow_indices must end at nnz = 2 .*got 1"):
        _spmm(crow, col, values, torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"crow_indices must end at nnz = 2 .*got 1"):
        _transpose(crow, col, values, torch.ones(2, 3), 2)


def test_the_op_names_the_csr_array_that_is_wrong():
    values, x = torch.tensor([1.0, 2.0]), torch.ones(2, 3)
    with pytest.raises(ValueError, match="crow_indices must rise .* without decreasing"):
        _spmm(_ids(0, 2, 1), _ids(0, 1), values, x)
    with pytest.raises(IndexError, match=r"outside X's 2 rows .*col_indices must lie in \[0, 2\)"):
        _spmm(_ids(0, 1, 2), _ids(0, 5), values, x)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("width", [0, 1, 3])
def test_non_finite_values_are_refused_whatever_x(bad, width):
    # a NaN value with a finite X gave a NaN row of Y; an F = 0 product reads no value at all
    crow, col, values = _ids(0, 1, 2), _ids(0, 1), torch.tensor([1.0, bad])
    for x in (torch.ones(2, width), torch.zeros(2, width)):
        with pytest.raises(ValueError, match="values contains NaN or Inf"):
            _spmm(crow, col, values, x)
    with pytest.raises(ValueError, match="values contains NaN or Inf"):
        _transpose(crow, col, values, torch.ones(2, width), 2)


def test_a_non_finite_x_is_still_named_as_x():
    with pytest.raises(ValueError, match="X contains NaN or Inf"):
        _spmm(_ids(0, 1, 2), _ids(0, 1), torch.tensor([1.0, 2.0]), torch.tensor([[1.0], [float("nan")]]))


def test_valid_operands_give_the_same_bits_as_scipy():
    matrix = random_sparse(70, 40, 0.1, seed=4)
    a = db.DSTETensor(dste.encode(matrix, kinds="fp16"))
    x = torch.from_numpy(np.random.default_rng(5).standard_normal((40, 6)).astype(np.float32))
    y = torch.ops.dste.spmm_hybrid(*a.op_operands, x, NO_HANDLE, NO_HANDLE, "cpu")
    # the compiled kernel sums each row in stored order from zero, as SciPy does: the same float32 bits
    np.testing.assert_array_equal(y.numpy(), a.to_scipy() @ x.numpy())
    dx = torch.ops.dste.spmm_transpose(*a.op_operands, torch.ones(70, 2), 40)
    np.testing.assert_allclose(dx.numpy(), a.to_scipy().T @ np.ones((70, 2), np.float32), rtol=1e-6)


@pytest.mark.parametrize("threshold", [True, np.bool_(False), "0.5", None])
def test_masked_quant_refuses_a_threshold_that_is_not_a_number(threshold):
    # True was read as the threshold 1.0
    values = np.ones((1, 128, 128), np.float32)
    with pytest.raises(TypeError, match="threshold must be a real number"):
        dste.masked_quant(values, np.ones(values.shape, bool), np.ones(1, np.float32), threshold)


def test_masked_quant_takes_python_and_numpy_numbers_alike():
    values = np.random.default_rng(2).standard_normal((2, 128, 128)).astype(np.float32)
    keep, scores = np.ones(values.shape, bool), np.array([0.0, 1.0], np.float32)
    for threshold in (1, 1.0, np.float32(1.0), np.int64(1)):
        assert dste.masked_quant(values, keep, scores, threshold)[1].tolist() == [1, 2]
    with pytest.raises(ValueError, match="threshold must be finite, got nan"):
        dste.masked_quant(values, keep, scores, float("nan"))


def test_dste_tensor_size_names_the_dimensions_it_has():
    a = db.DSTETensor(dste.encode(random_sparse(30, 20, 0.2, seed=6)))
    assert (a.size(0), a.size(1), a.size(-1), a.size(-2), a.size(np.int64(1))) == (30, 20, 20, 30, 20)
    with pytest.raises(IndexError, match=r"dim \(a DSTETensor is 2-D\) must lie in \[-2, 1\], got 5"):
        a.size(5)
    for dim in (1.0, "0", True):
        with pytest.raises(TypeError, match="dim .* must be an integer"):
            a.size(dim)
