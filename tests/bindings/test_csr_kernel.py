"""The compiled CSR product (``dste.bindings.csr_kernel``) against SciPy: the same bits at every width and dtype,
rows written where ``out_rows`` says, a finiteness flag that sees every NaN and infinity the product reads, bad ids
refused; and ``dste.spmm``'s finiteness check built on that flag."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import dste
from dste.bindings.csr_kernel import csr_product, unread_rows
from dste.format import gcn_normalized

WIDTHS = [0, 1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 24, 31, 33, 64, 100]


def _bits(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


def _matrix(n=120, m=90, density=0.08, seed=0, dtype=np.float32) -> sp.csr_matrix:
    a = sp.random(n, m, density=density, random_state=np.random.default_rng(seed), format="csr", dtype=np.float64)
    a.data = np.random.default_rng(seed + 1).standard_normal(a.nnz)  # signed values: cancellation shows in the bits
    return a.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("width", WIDTHS)
def test_product_has_scipys_bits(dtype, index_dtype, width):
    a = _matrix(dtype=dtype)
    x = np.random.default_rng(width).standard_normal((a.shape[1], width)).astype(dtype)
    y, finite = csr_product(a.indptr.astype(index_dtype), a.indices.astype(index_dtype), a.data, x)
    assert y.dtype == dtype and y.shape == (a.shape[0], width) and finite
    assert np.array_equal(_bits(y), _bits(a @ x))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 40), m=st.integers(1, 40), width=st.integers(0, 40), density=st.floats(0.0, 1.0),
       seed=st.integers(0, 2**16))
def test_product_has_scipys_bits_on_any_shape(n, m, width, density, seed):
    a = _matrix(n, m, density, seed)
    x = np.random.default_rng(seed).standard_normal((m, width)).astype(np.float32)
    y, finite = csr_product(a.indptr, a.indices, a.data, x)
    assert finite and np.array_equal(_bits(y), _bits(a @ x))


def test_rows_go_where_out_rows_says_and_a_slice_of_indptr_is_a_block_of_rows():
    a = _matrix()
    x = np.random.default_rng(2).standard_normal((a.shape[1], 20)).astype(np.float32)
    perm = np.random.default_rng(3).permutation(a.shape[0])
    y, _ = csr_product(a.indptr, a.indices, a.data, x, out_rows=perm)
    assert np.array_equal(y[perm], a @ x)
    out = np.full((a.shape[0], 20), 7.0, dtype=np.float32)
    csr_product(a.indptr[30:61], a.indices, a.data, x, out=out[30:60])  # rows 30..59 only
    assert np.array_equal(out[30:60], (a @ x)[30:60]) and (out[:30] == 7).all() and (out[60:] == 7).all()


@pytest.mark.parametrize("poison", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("column", [0, 16, 19])  # a 16-lane chunk, the 2-lane chunk, the last lane
def test_a_non_finite_value_the_product_reads_clears_the_flag(poison, column):
    a = _matrix()
    x = np.random.default_rng(4).standard_normal((a.shape[1], 20)).astype(np.float32)
    x[a.indices[5], column] = poison
    assert not csr_product(a.indptr, a.indices, a.data, x)[1]


def test_a_zero_entry_times_infinity_and_overflow_clear_the_flag():
    a = sp.csr_matrix((np.array([0.0, 1.0], np.float32), np.array([0, 1]), np.array([0, 1, 2])), shape=(2, 2))
    x = np.array([[np.inf], [1.0]], dtype=np.float32)
    assert not csr_product(a.indptr, a.indices, a.data, x)[1]  # 0 * inf is NaN
    b = sp.csr_matrix((np.array([2.0, 2.0], np.float32), np.array([0, 1]), np.array([0, 2])), shape=(1, 2))
    huge = np.full((2, 1), 3e38, dtype=np.float32)  # finite X whose products overflow
    y, finite = csr_product(b.indptr, b.indices, b.data, huge)
    assert not finite and np.isinf(y).all()


def test_bad_ids_are_refused_without_reading_or_writing_out_of_bounds():
    a = _matrix()
    x = np.ones((a.shape[1], 4), dtype=np.float32)
    bad = a.indices.copy()
    bad[7] = a.shape[1]
    with pytest.raises(IndexError, match="column id of the CSR is outside X's 90 rows"):
        csr_product(a.indptr, bad, a.data, x)
    rows = np.arange(a.shape[0])
    rows[3] = -1
    with pytest.raises(IndexError, match="out_rows id is outside out's 120 rows"):
        csr_product(a.indptr, a.indices, a.data, x, out_rows=rows)
    with pytest.raises(TypeError, match="float32 or float64"):
        csr_product(a.indptr, a.indices, a.data, x.astype(np.float16))
    with pytest.raises(TypeError, match="data of its dtype"):
        csr_product(a.indptr, a.indices, a.data, x.astype(np.float64))
    with pytest.raises(ValueError, match="CSR arrays disagree"):
        csr_product(a.indptr, a.indices[:-1], a.data[:-1], x)
    negative = a.indices.copy()
    negative[0] = -1
    with pytest.raises(IndexError, match=r"outside X's 90 rows \(ids run from -1"):
        csr_product(a.indptr, negative, a.data, x)
    falling = a.indptr.copy()
    falling[5] = falling[6] + 1  # row 4 would read past row 5's start
    with pytest.raises(ValueError, match="without decreasing"):
        csr_product(falling, a.indices, a.data, x)
    with pytest.raises(ValueError, match="CSR arrays disagree"):
        csr_product(a.indptr, a.indices, a.data[:-1], x)


def test_only_the_ids_indptr_covers_are_checked():
    # a slice of indptr covers part of the ids: a bad id outside it is never read, so it is no error
    a = _matrix()
    x = np.random.default_rng(3).standard_normal((a.shape[1], 5)).astype(np.float32)
    ids = a.indices.copy()
    ids[:a.indptr[30]] = 10**6
    y, _ = csr_product(a.indptr[30:61], ids, a.data, x)
    np.testing.assert_array_equal(_bits(y), _bits(a[30:60] @ x))


def test_unread_rows_are_the_columns_without_entries():
    a = sp.csr_matrix(np.array([[1, 0, 0, 2], [0, 0, 0, 3]], dtype=np.float32))
    assert unread_rows(a.indices, 4).tolist() == [1, 2]
    assert unread_rows(np.empty(0, np.int32), 3).tolist() == [0, 1, 2]


def _graph_with_isolated_columns():
    """A normalised graph (self-loops on every node) whose last two columns are zeroed: X rows no entry reads."""
    rng = np.random.default_rng(5)
    adjacency = sp.random(300, 300, density=0.03, random_state=rng, format="csr", dtype=np.float32)
    adjacency = ((adjacency + adjacency.T) > 0).astype(np.float32)
    normalized = gcn_normalized(adjacency).effective_csr().tolil()
    normalized[:, 298:] = 0
    matrix = sp.csr_matrix(normalized)
    matrix.eliminate_zeros()
    return dste.DSTETensor(dste.format.encode(matrix))


@pytest.mark.parametrize("row", [5, 299])  # a row the product reads, a row it does not
@pytest.mark.parametrize("poison", [np.nan, np.inf])
def test_spmm_refuses_non_finite_x_in_rows_read_and_unread(row, poison):
    wrapper = _graph_with_isolated_columns()
    assert wrapper.unread_x_rows().tolist() == [298, 299]
    x = torch.randn(300, 8)
    x[row, 3] = poison
    with pytest.raises(ValueError, match="X contains NaN or Inf"):
        dste.spmm(wrapper, x, backend="cpu")


def test_spmm_returns_an_overflowed_product_of_finite_x():
    wrapper = _graph_with_isolated_columns()
    x = torch.full((300, 4), 3e38)
    y = dste.spmm(wrapper, x, backend="cpu")  # finite input: the overflow is the product's, as torch's would be
    expected = wrapper.matrix.effective_csr() @ x.numpy()
    assert np.array_equal(np.isinf(y.numpy()), np.isinf(expected))


def _array_ending_at_a_guard_page(rows: int, width: int) -> np.ndarray:
    """A C-contiguous float32 ``[rows, width]`` array whose last byte is the last byte before a page the process
    may not touch (PROT_NONE): reading one value past it faults."""
    import ctypes
    import mmap

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    page = mmap.PAGESIZE
    nbytes = rows * width * 4
    data_pages = -(-nbytes // page)
    base = libc.mmap(None, (data_pages + 1) * page, mmap.PROT_READ | mmap.PROT_WRITE,
                     mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    assert base not in (None, ctypes.c_void_p(-1).value), "mmap failed"
    guard = base + data_pages * page
    prot_none = 0  # PROT_NONE on Linux (the mmap module does not export it)
    assert libc.mprotect(guard, page, prot_none) == 0, "mprotect failed"
    buffer = (ctypes.c_char * nbytes).from_address(guard - nbytes)  # kept alive by the array (never unmapped)
    return np.frombuffer(buffer, dtype=np.float32).reshape(rows, width)


@pytest.mark.parametrize("width", [1, 3, 7, 15, 17, 20, 33, 63])
def test_narrow_and_tail_columns_read_nothing_past_x(width):
    """The last row of X, read by the last CSR row, ends right before a page that faults when touched: the masked
    tail pass and the scalar column read only the row's own values (a full-width vector load would fault)."""
    rows = 64
    x = _array_ending_at_a_guard_page(rows, width)
    x[:] = np.random.default_rng(width).standard_normal((rows, width)).astype(np.float32)
    a = sp.csr_matrix(np.eye(rows, dtype=np.float32)[::-1] + np.eye(rows, dtype=np.float32))
    y, finite = csr_product(a.indptr, a.indices, a.data, x)
    assert finite and np.array_equal(y, a @ np.array(x))


def test_an_output_row_one_past_the_end_is_refused():
    B = sp.csr_matrix(np.array([[1.0, 2.0], [0.0, 3.0]], np.float32))
    x = np.ones((2, 4), np.float32)
    backing = np.zeros((3, 4), np.float32)
    with pytest.raises(IndexError, match="an out_rows id is outside out's 2 rows"):
        csr_product(B.indptr.astype(np.int64), B.indices.astype(np.int64), B.data, x, backing[:2],
                    np.array([0, 2], np.int64))
    assert not backing[2].any()  # nothing written past the output
