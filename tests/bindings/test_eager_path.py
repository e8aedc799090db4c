"""``dste.spmm``'s eager cpu call (``encoded_csr.eager_spmm`` with the wrapper's kept inverse row order) gives the
bits of the general path (``encoded_spmm`` building the inverse per call) in every operand form, and of the
original-order product where the kernels sum rows alike; the kept inverse is the inverse and survives pickling."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

import dste.bindings as db
from dste.bindings import encoded_csr
from dste.format.encoder import encode
from dste.reference import reference_matrix

from .conftest import random_sparse


def _bits(a) -> np.ndarray:
    a = np.ascontiguousarray(a)
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


def _reordered(n: int = 300, m: int = 260):
    rng = np.random.default_rng(3)
    return encode(random_sparse(n, m, 0.05, seed=4), fp16_threshold=0.02, row_perm=rng.permutation(n),
                  col_perm=rng.permutation(m))


FORMS = {
    # column limits that put the same 260-column matrix in each of the three operand forms
    "original": (10_000, 20_000),
    "rows": (100, 20_000),
    "rows and columns": (100, 200),
}


@pytest.fixture(params=list(FORMS))
def wrapper(request, monkeypatch):
    original_max, rows_max = FORMS[request.param]
    monkeypatch.setattr(encoded_csr, "ORIGINAL_ORDER_MAX_COLS", original_max)
    monkeypatch.setattr(encoded_csr, "ROW_ORDER_MAX_COLS", rows_max)
    monkeypatch.setattr(encoded_csr, "REORDER_MIN_REUSE_GAIN", 0.0)  # whatever this random matrix's locality
    wrapped = db.DSTETensor(_reordered())
    form = ("original" if not wrapped.row_perm.numel() else "rows" if not wrapped.col_perm.numel()
            else "rows and columns")
    assert form == request.param
    return wrapped


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("width", [1, 7, 64])
def test_eager_call_has_the_bits_of_the_general_path(wrapper, dtype, width):
    x = torch.from_numpy(np.random.default_rng(width).standard_normal((wrapper.shape[1], width))).to(dtype)
    got = db.spmm(wrapper, x, backend="cpu")
    general = encoded_csr.encoded_spmm(*wrapper.host_operands, x.numpy())  # inverse built in the call
    assert got.dtype == dtype and np.array_equal(_bits(got.numpy()), _bits(general))
    # every form keeps A's entry order in each row: the bits of SciPy's product in original order, in X's dtype
    original = wrapper.matrix.effective_csr()
    expected = original.astype(x.numpy().dtype) @ x.numpy()
    assert np.array_equal(_bits(got.numpy()), _bits(expected))
    reference = reference_matrix(wrapper.matrix) @ x.numpy().astype(np.float64)
    np.testing.assert_allclose(got.numpy(), reference, rtol=1e-5, atol=1e-5)  # <= 30 terms of magnitude <= 4


def test_eager_results_are_fresh_tensors(wrapper):
    x = torch.randn(wrapper.shape[1], 16)
    first = db.spmm(wrapper, x, backend="cpu")
    kept = first.clone()
    second = db.spmm(wrapper, 2 * x, backend="cpu")
    assert not np.shares_memory(first.numpy(), second.numpy())
    assert torch.equal(first, kept)  # the second call wrote nothing into the first result


def test_kept_inverse_is_the_inverse_and_survives_pickling(wrapper):
    perm = wrapper.row_perm.numpy()
    inverse = wrapper.row_inverse.numpy()
    assert inverse.shape == perm.shape
    if perm.size:
        assert np.array_equal(inverse[perm], np.arange(perm.size))
    copied = pickle.loads(pickle.dumps(wrapper))
    assert np.array_equal(copied.host_row_inverse, inverse)
    state = wrapper.__getstate__()
    del state["row_inverse"]  # a wrapper pickled before the inverse was kept
    rebuilt = db.DSTETensor.__new__(db.DSTETensor)
    rebuilt.__setstate__(state)
    assert np.array_equal(rebuilt.host_row_inverse, inverse)
    x = torch.randn(wrapper.shape[1], 5)
    assert torch.equal(db.spmm(rebuilt, x, backend="cpu"), db.spmm(wrapper, x, backend="cpu"))


@pytest.mark.parametrize("poison", [np.nan, np.inf, -np.inf])
def test_eager_call_refuses_non_finite_x_as_the_op_does(wrapper, poison):
    x = torch.randn(wrapper.shape[1], 4)
    x[3, 1] = poison
    with pytest.raises(ValueError, match="X contains NaN or Inf; the DSTE ops take finite values only"):
        db.spmm(wrapper, x, backend="cpu")
    with pytest.raises(ValueError, match="X contains NaN or Inf"):
        db.spmm(wrapper, x.numpy(), backend="cpu")  # the general path, same error


def test_calls_the_eager_product_does_not_take_go_the_general_way(wrapper):
    m = wrapper.shape[1]
    with pytest.raises(ValueError, match="shape mismatch"):
        db.spmm(wrapper, torch.randn(m + 1, 3), backend="cpu")
    with pytest.raises(ValueError, match="must be 2-D"):
        db.spmm(wrapper, torch.randn(m), backend="cpu")
    with pytest.raises(TypeError, match="float32 or float64"):
        db.spmm(wrapper, torch.randn(m, 3).half(), backend="cpu")
    x = torch.randn(m, 3, requires_grad=True)  # autograd records: the op, whose backward is A^T dY
    y = db.spmm(wrapper, x, backend="cpu")
    y.sum().backward()
    expected = reference_matrix(wrapper.matrix).T @ np.ones((wrapper.shape[0], 3))
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-5, atol=1e-5)
    strided = torch.randn(3, m).t()  # a non-contiguous view: the same bits as its contiguous copy
    assert torch.equal(db.spmm(wrapper, strided, backend="cpu"), db.spmm(wrapper, strided.contiguous(), backend="cpu"))
