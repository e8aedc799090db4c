"""The cpu backend's encoded-order execution: ``y[row_perm] = B @ x[col_perm]`` with ``B = P_r A P_c^T``.

Every result is compared with an independent float64 SciPy product of the matrix's effective CSR in original
coordinates (``DSTEMatrix.effective_csr()``) or with ``dste.reference.spmm_reference``.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import dste.bindings as db
from dste.bindings import encoded_csr, registry
from dste.format import gcn_normalized
from dste.format.encoder import encode
from dste.reference.spmm import spmm_reference

from .conftest import random_sparse

# fp32 values and sums of <= ~60 terms of magnitude <= 1 against float64: rounding stays below
# 60 * 2^-24 * max|partial sum| ~ 4e-6, so 1e-5 relative/absolute is tight without being flaky.
TOL = dict(rtol=1e-5, atol=1e-5)


def _community_graph(n: int = 400):
    adj = random_sparse(n, n, 0.02, seed=11)
    adj = ((adj + adj.T) != 0).astype(np.float32)
    return gcn_normalized(adj, reorder="community")


def _permuted_rectangular(row_only: bool = False, n: int = 260, m: int = 170):
    """Non-square INT8/FP16-valued weights with explicit random row and column orders."""
    rng = np.random.default_rng(5)
    weights = random_sparse(n, m, 0.08, seed=6)
    row_perm = rng.permutation(n)
    col_perm = None if row_only else rng.permutation(m)
    return encode(weights, fp16_threshold=0.02, row_perm=row_perm, col_perm=col_perm)


MATRICES = {
    "community_square": _community_graph,
    "permuted_rectangular": _permuted_rectangular,
    "row_perm_only": lambda: _permuted_rectangular(row_only=True),
}


# The numerical Jacobians of gradcheck/gradgradcheck cost one product per input and output element, so those
# checks get smaller versions of the same three cases: still more than one 128-row window, still a community
# reordering / explicit row (and column) orders, sizes still not multiples of 128.
SMALL_MATRICES = {
    "community_square": lambda: _community_graph(n=160),
    "permuted_rectangular": lambda: _permuted_rectangular(n=140, m=90),
    "row_perm_only": lambda: _permuted_rectangular(row_only=True, n=140, m=90),
}


def _assert_reordered(matrix):
    assert matrix.row_perm is not None and not np.array_equal(matrix.row_perm, np.arange(matrix.shape[0]))
    assert matrix.n_windows > 1


@pytest.fixture(autouse=True, params=["rows", "rows+columns"])
def encoded_order_for_small_matrices(request, monkeypatch):
    """These matrices are small; lift the size rules so their operands really are permuted, in both encoded
    forms: rows only (column ids original, torch's CSR kernel) and rows and columns (SciPy's kernel)."""
    monkeypatch.setattr(encoded_csr, "ORIGINAL_ORDER_MAX_COLS", 0)
    monkeypatch.setattr(encoded_csr, "REORDER_MIN_REUSE_GAIN", 0.0)  # random matrices: keep their order anyway
    if request.param == "rows+columns":
        monkeypatch.setattr(encoded_csr, "ROW_ORDER_MAX_COLS", 0)
    return request.param


@pytest.fixture(params=sorted(MATRICES))
def reordered(request):
    matrix = MATRICES[request.param]()
    _assert_reordered(matrix)
    return matrix


@pytest.fixture(params=sorted(SMALL_MATRICES))
def small_reordered(request):
    matrix = SMALL_MATRICES[request.param]()
    _assert_reordered(matrix)
    if request.param != "row_perm_only":
        assert matrix.col_perm is not None and not np.array_equal(matrix.col_perm, np.arange(matrix.shape[1]))
    return matrix


def test_operands_are_the_effective_csr_permuted(reordered):
    a = db.DSTETensor(reordered)
    effective = reordered.effective_csr()
    n, m = reordered.shape
    assert a.crow_indices.dtype == torch.int32 and a.col_indices.dtype == torch.int32
    assert a.values.dtype == torch.float32 and a.row_perm.dtype == torch.int64
    assert a.row_perm.shape == (n,) and a.col_perm.shape in ((m,), (0,))
    b = sp.csr_matrix((a.values.numpy(), a.col_indices.numpy(), a.crow_indices.numpy()), shape=(n, m))
    col_perm = a.col_perm.numpy() if a.col_perm.numel() else np.arange(m)
    expected = effective[a.row_perm.numpy()][:, col_perm]
    # each row of B holds A's row's entries in A's order (sorted by original column id), whatever the form: the
    # kernels sum a row in stored order, so every form has the bits of the original-order product
    reordered_rows = effective[a.row_perm.numpy()]
    np.testing.assert_array_equal(b.indptr, reordered_rows.indptr)
    np.testing.assert_array_equal(col_perm[b.indices], reordered_rows.indices)
    np.testing.assert_array_equal(b.data, reordered_rows.data)
    # the same float32 numbers, bit for bit, only moved
    assert (b != expected).nnz == 0 and b.nnz == effective.nnz
    # to_scipy gives back the original coordinates exactly
    back = a.to_scipy()
    np.testing.assert_array_equal(back.indptr, effective.indptr)
    np.testing.assert_array_equal(back.indices, effective.indices)
    np.testing.assert_array_equal(back.data, effective.data)


def test_matrix_without_reordering_gets_empty_permutations(small_matrix):
    a = db.DSTETensor(small_matrix)
    assert a.row_perm.numel() == 0 and a.col_perm.numel() == 0


def test_small_matrix_runs_in_original_order(monkeypatch):
    monkeypatch.setattr(encoded_csr, "ORIGINAL_ORDER_MAX_COLS", 8192)
    matrix = _community_graph()
    a = db.DSTETensor(matrix)
    assert a.row_perm.numel() == 0 and a.col_perm.numel() == 0
    effective = matrix.effective_csr()
    np.testing.assert_array_equal(a.col_indices.numpy(), effective.indices)
    np.testing.assert_array_equal(a.values.numpy(), effective.data)
    x = torch.randn(matrix.shape[1], 4)
    np.testing.assert_allclose(db.spmm(a, x, backend="cpu").double().numpy(), spmm_reference(matrix, x.numpy()), **TOL)


def test_identity_permutation_is_skipped():
    weights = random_sparse(90, 60, 0.1, seed=3)
    matrix = encode(weights, row_perm=np.arange(90), col_perm=np.arange(60))
    a = db.DSTETensor(matrix)
    assert a.row_perm.numel() == 0 and a.col_perm.numel() == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_matches_reference(reordered, dtype):
    x = torch.randn(reordered.shape[1], 7, dtype=dtype)
    got = db.spmm(reordered, x, backend="cpu")
    assert got.dtype == dtype and got.shape == (reordered.shape[0], 7)
    np.testing.assert_allclose(got.double().numpy(), spmm_reference(reordered, x.double().numpy()), **TOL)


def test_backward_is_transpose_product(reordered):
    x = torch.randn(reordered.shape[1], 5, requires_grad=True)
    grad_out = torch.randn(reordered.shape[0], 5)
    db.spmm(reordered, x, backend="cpu").backward(grad_out)
    effective = sp.csr_matrix(reordered.effective_csr(), dtype=np.float64)
    np.testing.assert_allclose(x.grad.double().numpy(), effective.T @ grad_out.double().numpy(), **TOL)


def test_split_over_threads_matches_one_thread(reordered, monkeypatch):
    """Force the row-split path even on a small matrix: each block's rows are scattered to their own places."""
    x = torch.randn(reordered.shape[1], 6)
    single = db.spmm(reordered, x, backend="cpu")
    monkeypatch.setattr(encoded_csr, "PARALLEL_MIN_MULTIPLY_ADDS", 0)
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        split = db.spmm(reordered, x, backend="cpu")
    finally:
        torch.set_num_threads(threads)
    # each row's sum is computed by the same SciPy loop in the same order: identical bits
    assert torch.equal(split, single)


def test_opcheck_and_gradcheck_on_reordered(small_reordered):
    a = db.DSTETensor(small_reordered)
    assert a.row_perm.numel() == a.shape[0]  # the op really runs in encoded order
    x = torch.randn(a.shape[1], 3, requires_grad=True)
    torch.library.opcheck(torch.ops.dste.spmm_hybrid.default, (*a.op_operands, x, a.handle, registry.NO_HANDLE, "cpu"))
    grad = torch.randn(a.shape[0], 2, requires_grad=True)
    torch.library.opcheck(torch.ops.dste.spmm_transpose.default, (*a.op_operands, grad, a.shape[1]))
    x64 = torch.randn(a.shape[1], 2, dtype=torch.float64, requires_grad=True)
    # fast mode compares the analytical and numerical Jacobians along random directions (u^T J v) instead of
    # one finite difference per element: the op is linear in x, so a misplaced permutation or a missing
    # transpose changes that product for almost every direction. test_ops.py keeps the element-wise check on
    # an unreordered matrix, and test_backward_is_transpose_product checks the whole transpose against SciPy.
    assert torch.autograd.gradcheck(lambda t: db.spmm(a, t, backend="cpu"), (x64,), fast_mode=True)
    assert torch.autograd.gradgradcheck(lambda t: db.spmm(a, t, backend="cpu"), (x64,), fast_mode=True)


def test_compile_fullgraph_on_reordered(reordered):
    a = db.DSTETensor(reordered)
    compiled = torch.compile(lambda x: torch.tanh(db.spmm(a, x, backend="cpu")), fullgraph=True, backend="aot_eager")
    x = torch.randn(a.shape[1], 4, requires_grad=True)
    got = compiled(x)
    np.testing.assert_allclose(got.detach().double().numpy(), np.tanh(spmm_reference(reordered, x.detach().numpy())), **TOL)
    got.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape


def test_op_rejects_bad_permutation_tensors(reordered):
    a = db.DSTETensor(reordered)
    crow, col, values, row_perm, col_perm = a.op_operands
    x = torch.zeros(a.shape[1], 2)
    with pytest.raises(ValueError, match="row_perm must be int64"):
        torch.ops.dste.spmm_hybrid(crow, col, values, row_perm[:-1], col_perm, x, -1, -1, "cpu")
    with pytest.raises(ValueError, match="row_perm must be int64"):
        torch.ops.dste.spmm_hybrid(crow, col, values, row_perm.int(), col_perm, x, -1, -1, "cpu")
    with pytest.raises(ValueError, match="col_indices must be 1-D"):
        torch.ops.dste.spmm_hybrid(crow, col.long(), values, row_perm, col_perm, x, -1, -1, "cpu")
    repeated = row_perm.clone()
    repeated[1] = repeated[0]  # a row of Y nobody writes
    with pytest.raises(ValueError, match="row_perm must be a permutation"):
        torch.ops.dste.spmm_hybrid(crow, col, values, repeated, col_perm, x, -1, -1, "cpu")
    if col_perm.numel():  # the forms in row order only keep no column order
        negative = col_perm.clone()
        negative[0] = -1
        with pytest.raises(ValueError, match="col_perm must be a permutation"):
            torch.ops.dste.spmm_hybrid(crow, col, values, row_perm, negative, x, -1, -1, "cpu")


def test_op_rejects_ids_the_product_would_read_out_of_bounds(reordered):
    # the compiled product and the transpose read and write at these ids unchecked: the op checks them first
    a = db.DSTETensor(reordered)
    crow, col, values, row_perm, col_perm = a.op_operands
    x = torch.zeros(a.shape[1], 2)
    grad = torch.zeros(a.shape[0], 2)
    past = col.clone()
    past[-1] = a.shape[1]
    with pytest.raises(IndexError, match=f"outside X's {a.shape[1]} rows"):
        torch.ops.dste.spmm_hybrid(crow, past, values, row_perm, col_perm, x, -1, -1, "cpu")
    with pytest.raises(IndexError, match=f"outside X's {a.shape[1]} rows"):
        torch.ops.dste.spmm_transpose(crow, past, values, row_perm, col_perm, grad, a.shape[1])
    long_row = crow.clone()
    long_row[1] = crow[-1] + 5
    with pytest.raises(ValueError, match="without decreasing"):
        torch.ops.dste.spmm_hybrid(long_row, col, values, row_perm, col_perm, x, -1, -1, "cpu")


def test_nan_in_x_is_still_rejected(reordered):
    x = torch.randn(reordered.shape[1], 3)
    x[-1, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        db.spmm(reordered, x, backend="cpu")
    x[-1, 1] = -float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        db.spmm(reordered, x, backend="cpu")


def test_building_the_operands_leaves_no_cached_copy_in_the_matrix(encoded_order_for_small_matrices):
    matrix = _permuted_rectangular()
    a = db.DSTETensor(matrix)
    assert matrix._effective_csr is None  # only B stays resident
    n, m = matrix.shape
    nnz = a.nnz
    permuted = n + (m if encoded_order_for_small_matrices == "rows+columns" else 0)  # rows-only: no column perm
    assert a.col_perm.numel() == permuted - n
    # int32 indptr + int32 indices + float32 values + int64 permutations
    assert a.resident_nbytes() == 4 * (n + 1) + 8 * nnz + 8 * permuted
