"""The cpu backend's host path: the rows-only encoded form and ``dste.spmm``'s direct call of the kernel.

* Rows-only form (``ORIGINAL_ORDER_MAX_COLS < M <= ROW_ORDER_MAX_COLS``): ``B = P_r A`` with original column
  ids, torch's CSR kernel, Y gathered back. Each row keeps A's entries in A's order, so the product has the
  bits of the original-order product.
* ``dste.spmm`` on a plain eager tensor calls the kernel without dispatching ``dste::spmm_hybrid``; the result
  must be the op's, bit for bit, and every case where torch needs to see the op (autograd, dispatch modes,
  the profiler) must still dispatch it.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import dste.bindings as db
from dste.bindings import encoded_csr, registry
from dste.format import gcn_normalized
from dste.reference import reference_matrix

FORMS = {
    "original": {"ORIGINAL_ORDER_MAX_COLS": 1 << 30},
    "rows": {"ORIGINAL_ORDER_MAX_COLS": 0, "REORDER_MIN_REUSE_GAIN": 0.0},
    "rows+columns": {"ORIGINAL_ORDER_MAX_COLS": 0, "ROW_ORDER_MAX_COLS": 0, "REORDER_MIN_REUSE_GAIN": 0.0},
}


def _community_graph(n=600, communities=12, seed=0):
    """Communities of consecutive ids, then ids shuffled: the encoder reorders rows and columns."""
    rng = np.random.default_rng(seed)
    size = n // communities
    rows, cols = [], []
    for c in range(communities):
        members = np.arange(c * size, (c + 1) * size)
        rows.append(rng.choice(members, 6 * size))
        cols.append(rng.choice(members, 6 * size))
    rows.append(rng.integers(0, n, n))
    cols.append(rng.integers(0, n, n))
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    shuffle = rng.permutation(n)
    adjacency = sp.csr_matrix((np.ones(rows.size, np.float32), (shuffle[rows], shuffle[cols])), shape=(n, n))
    adjacency = ((adjacency + adjacency.T) > 0).astype(np.float32)
    return gcn_normalized(sp.csr_matrix(adjacency))


@pytest.fixture(scope="module")
def matrix():
    matrix = _community_graph()
    assert matrix.row_perm is not None and matrix.col_perm is not None
    return matrix


def _wrapper(matrix, form, monkeypatch):
    with monkeypatch.context() as patch:
        for name, value in FORMS[form].items():
            patch.setattr(encoded_csr, name, value)
        return db.DSTETensor(matrix)


def _bits(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().view(np.uint32 if t.dtype == torch.float32 else np.uint64)


def test_each_form_holds_the_permutations_it_uses(matrix, monkeypatch):
    n, m = matrix.shape
    sizes = {form: (_wrapper(matrix, form, monkeypatch).row_perm.numel(),
                    _wrapper(matrix, form, monkeypatch).col_perm.numel()) for form in FORMS}
    assert sizes == {"original": (0, 0), "rows": (n, 0), "rows+columns": (n, m)}


def test_rows_only_form_keeps_each_row_of_a_in_order(matrix, monkeypatch):
    a = _wrapper(matrix, "rows", monkeypatch)
    effective = matrix.effective_csr()
    b = sp.csr_matrix((a.values.numpy(), a.col_indices.numpy(), a.crow_indices.numpy()), shape=matrix.shape)
    expected = effective[a.row_perm.numpy()]
    np.testing.assert_array_equal(b.indptr, expected.indptr)
    np.testing.assert_array_equal(b.indices, expected.indices)
    np.testing.assert_array_equal(b.data, expected.data)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("form", ["rows", "rows+columns"])
def test_every_form_has_the_bits_of_the_original_order_product(matrix, monkeypatch, dtype, form):
    x = torch.randn(matrix.shape[1], 24, dtype=dtype, generator=torch.Generator().manual_seed(0))
    original = db.spmm(_wrapper(matrix, "original", monkeypatch), x, backend="cpu")
    wrapper = _wrapper(matrix, form, monkeypatch)
    reordered = db.spmm(wrapper, x, backend="cpu")
    # the op itself (the operands' own kernel, never the original-order shortcut of an eager call)
    dispatched = torch.ops.dste.spmm_hybrid(*wrapper.op_operands, x, wrapper.handle, registry.NO_HANDLE, "cpu")
    assert reordered.dtype == dispatched.dtype == dtype
    assert np.array_equal(_bits(reordered), _bits(original)) and np.array_equal(_bits(dispatched), _bits(original))
    # and all agree with SciPy in float64 (float32 products: summation order and rounding only)
    reference = matrix.effective_csr().astype(np.float64) @ x.double().numpy()  # the op's own fp32 values
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(reordered.double().numpy(), reference, rtol=tolerance, atol=tolerance)


def test_a_small_x_runs_a_matrix_in_both_orders_in_original_order(matrix, monkeypatch):
    wrapper = _wrapper(matrix, "rows+columns", monkeypatch)
    x = torch.randn(matrix.shape[1], 6, generator=torch.Generator().manual_seed(2))
    monkeypatch.setattr(encoded_csr, "RC_ORIGINAL_ORDER_MAX_X_BYTES", 0)  # every X is large: the operands' kernel
    large = db.spmm(wrapper, x, backend="cpu")
    assert "original" not in wrapper.host_forms and wrapper.resident_nbytes() == wrapper._encoded.nbytes()
    monkeypatch.setattr(encoded_csr, "RC_ORIGINAL_ORDER_MAX_X_BYTES", x.numel() * 4)
    small = db.spmm(wrapper, x, backend="cpu")
    assert set(wrapper.host_forms) == {"original", "unread"}  # built on first use and kept
    assert wrapper.resident_nbytes() > wrapper._encoded.nbytes()
    assert np.array_equal(_bits(small), _bits(large))
    kept = wrapper.original_host_operands()
    assert kept is wrapper.original_host_operands()
    effective = matrix.effective_csr()
    np.testing.assert_array_equal(kept[0], effective.indptr)
    np.testing.assert_array_equal(kept[1], effective.indices)
    np.testing.assert_array_equal(kept[2], effective.data)
    copied = pickle.loads(pickle.dumps(wrapper))
    assert copied.host_forms == {}  # rebuilt on demand, never pickled
    assert np.array_equal(_bits(db.spmm(copied, x, backend="cpu")), _bits(large))


@pytest.mark.parametrize("form", sorted(FORMS))
def test_direct_call_equals_the_dispatched_op(matrix, monkeypatch, form):
    a = _wrapper(matrix, form, monkeypatch)
    x = torch.randn(matrix.shape[1], 7, generator=torch.Generator().manual_seed(1))
    direct = db.spmm(a, x, backend="cpu")
    dispatched = torch.ops.dste.spmm_hybrid(*a.op_operands, x, a.handle, registry.NO_HANDLE, "cpu")
    assert np.array_equal(_bits(direct), _bits(dispatched))
    strided = torch.randn(7, matrix.shape[1]).t()  # a non-contiguous X takes the same path
    assert np.array_equal(_bits(db.spmm(a, strided, backend="cpu")), _bits(db.spmm(a, strided.contiguous())))


@pytest.mark.parametrize("form", sorted(FORMS))
def test_an_x_that_requires_grad_under_no_grad_takes_the_eager_call_with_the_ops_bits(matrix, monkeypatch, form):
    a = _wrapper(matrix, form, monkeypatch)
    x = torch.randn(matrix.shape[1], 5, generator=torch.Generator().manual_seed(3), requires_grad=True)
    with torch.no_grad():
        direct = db.spmm(a, x, backend="cpu")
        dispatched = torch.ops.dste.spmm_hybrid(*a.op_operands, x, a.handle, registry.NO_HANDLE, "cpu")
    assert not direct.requires_grad and np.array_equal(_bits(direct), _bits(dispatched))


class _RecordOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


def test_a_dispatch_mode_still_sees_the_op(matrix):
    a = db.DSTETensor(matrix)
    x = torch.randn(matrix.shape[1], 3)
    with _RecordOps() as recorder:
        db.spmm(a, x, backend="cpu")
    assert any("dste.spmm_hybrid" in name for name in recorder.names)


def test_autograd_goes_through_the_op_and_its_gradient(matrix):
    a = db.DSTETensor(matrix)
    x = torch.randn(matrix.shape[1], 3, requires_grad=True)
    y = db.spmm(a, x, backend="cpu")
    assert y.grad_fn is not None
    y.sum().backward()
    expected = reference_matrix(matrix).T @ np.ones((matrix.shape[0], 3))
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_the_profiler_records_the_op(matrix):
    a = db.DSTETensor(matrix)
    x = torch.randn(matrix.shape[1], 3)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        db.spmm(a, x, backend="cpu")
    assert any("dste::spmm_hybrid" in event.name for event in profile.events())


def test_direct_call_still_refuses_non_finite_x(matrix):
    a = db.DSTETensor(matrix)
    x = torch.randn(matrix.shape[1], 3)
    x[5, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        db.spmm(a, x, backend="cpu")


@pytest.fixture
def two_torch_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def _product_on_one_thread(a, x):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return db.spmm(a, x, backend="cpu")
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("form", ["original", "rows"])
def test_with_more_threads_the_scipy_path_gives_the_same_product(matrix, monkeypatch, two_torch_threads, form):
    a = _wrapper(matrix, form, monkeypatch)
    x = torch.randn(matrix.shape[1], 9, generator=torch.Generator().manual_seed(2))
    on_two = db.spmm(a, x, backend="cpu")  # SciPy's kernel (torch's only runs on one thread)
    on_one = _product_on_one_thread(a, x)  # torch's kernel
    # both sum each row in stored order; a kernel may still fuse the multiply-add, so allow float32 rounding
    np.testing.assert_allclose(on_two.numpy(), on_one.numpy(), rtol=1e-6, atol=1e-6)
    monkeypatch.setattr(encoded_csr, "PARALLEL_MIN_MULTIPLY_ADDS", 0)  # split over two Python threads
    np.testing.assert_allclose(db.spmm(a, x, backend="cpu").numpy(), on_one.numpy(), rtol=1e-6, atol=1e-6)


def test_a_pickled_or_copied_wrapper_multiplies_alike_and_keeps_views(matrix):
    import copy
    import pickle

    a = db.DSTETensor(matrix)
    x = torch.randn(matrix.shape[1], 4, generator=torch.Generator().manual_seed(3))
    expected = db.spmm(a, x, backend="cpu")
    for other in (pickle.loads(pickle.dumps(a)), copy.deepcopy(a)):
        assert np.array_equal(_bits(db.spmm(other, x, backend="cpu")), _bits(expected))
        # the host arrays are views of the operand tensors again, not second copies
        assert all(np.shares_memory(array, tensor.numpy())
                   for array, tensor in zip(other.host_operands, other.op_operands) if tensor.numel())


def test_finite_values_whose_sum_overflows_are_accepted(matrix):
    # the one-pass check sums X; an infinite sum of finite values must fall back to the exact check, not raise
    a = db.DSTETensor(matrix)
    x = torch.full((matrix.shape[1], 2), 3e38)
    assert not np.isfinite(float(x.sum()))
    y = db.spmm(a, x, backend="cpu")
    assert y.shape == (matrix.shape[0], 2)
    x[0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        db.spmm(a, x, backend="cpu")
