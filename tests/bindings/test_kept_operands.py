"""``dste.spmm`` on a bare ``DSTEMatrix``: its CPU operands are built once and kept on the matrix.

Every product is compared with an independent float64 SciPy product of the matrix's effective CSR
(``DSTEMatrix.decode``); the kept operands must never outlive the matrix they were built from, nor serve another
matrix (a new keep-mask) or another encoded form.
"""

from __future__ import annotations

import copy
import gc
import pickle
import weakref

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import dste
from dste.bindings import encoded_csr
from dste.format import encode, gcn_normalized
from dste.reference import reference_matrix

from .conftest import random_sparse

# fp32 products of <= ~40 terms of magnitude <= 1 against float64 (see test_encoded_order.py)
TOL = dict(rtol=1e-5, atol=1e-5)


def _graph(n: int = 500, seed: int = 3):
    adj = random_sparse(n, n, 0.02, seed=seed)
    adj = ((adj + adj.T) != 0).astype(np.float32)
    return gcn_normalized(adj, reorder="community")


def _reference(matrix, x: np.ndarray) -> np.ndarray:
    return reference_matrix(matrix) @ x.astype(np.float64)


def _kept(matrix) -> list:
    return [key for key in matrix._derived if key[0] == "dste.bindings.DSTETensor"]


def test_the_second_call_reuses_the_operands_the_first_built():
    matrix = _graph()
    x = np.random.default_rng(0).standard_normal((matrix.shape[1], 8)).astype(np.float32)
    assert _kept(matrix) == []
    first = dste.spmm(matrix, x, backend="cpu").numpy()
    assert len(_kept(matrix)) == 1
    a, b = dste.bindings.as_dste_tensor(matrix), dste.bindings.as_dste_tensor(matrix)
    assert a is not b and a.matrix is b.matrix is matrix
    assert a.values is b.values and a.host_operands is b.host_operands  # shared, not rebuilt
    second = dste.spmm(matrix, x, backend="cpu").numpy()
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(second, _reference(matrix, x), **TOL)
    assert len(_kept(matrix)) == 1


def test_a_new_mask_or_a_replaced_matrix_starts_with_nothing_kept():
    matrix = _graph()
    x = np.random.default_rng(1).standard_normal((matrix.shape[1], 4)).astype(np.float32)
    dste.spmm(matrix, x, backend="cpu")
    rows, cols = matrix.decode().nonzero()
    keep = sp.csr_matrix((np.ones(rows.size // 2, bool), (rows[::2][: rows.size // 2], cols[::2][: rows.size // 2])),
                         shape=matrix.shape)
    masked = matrix.with_mask(keep)
    assert _kept(masked) == []
    y = dste.spmm(masked, x, backend="cpu").numpy()
    np.testing.assert_allclose(y, _reference(masked, x), **TOL)
    assert not np.allclose(y, _reference(matrix, x), **TOL)  # the original's operands were not reused
    assert _kept(matrix.replace(layout=matrix.layout)) == []


def test_operands_are_kept_per_encoded_form(monkeypatch):
    matrix = _graph()
    x = np.random.default_rng(2).standard_normal((matrix.shape[1], 3)).astype(np.float32)
    monkeypatch.setattr(encoded_csr, "ORIGINAL_ORDER_MAX_COLS", 1 << 30)
    original = dste.bindings.as_dste_tensor(matrix)
    assert original.row_perm.numel() == 0
    monkeypatch.setattr(encoded_csr, "ORIGINAL_ORDER_MAX_COLS", 0)
    monkeypatch.setattr(encoded_csr, "ROW_ORDER_MAX_COLS", 0)
    monkeypatch.setattr(encoded_csr, "REORDER_MIN_REUSE_GAIN", 0.0)
    permuted = dste.bindings.as_dste_tensor(matrix)
    assert permuted.row_perm.numel() and permuted.col_perm.numel()
    assert len(_kept(matrix)) == 2
    monkeypatch.setattr(encoded_csr, "REORDER_MIN_REUSE_GAIN", float("inf"))  # the locality rule is part of the key
    assert dste.bindings.as_dste_tensor(matrix).row_perm.numel() == 0 and len(_kept(matrix)) == 3
    for wrapper in (original, permuted):
        np.testing.assert_allclose(dste.spmm(wrapper, x, backend="cpu").numpy(), _reference(matrix, x), **TOL)


def test_the_kept_operands_are_freed_with_the_matrix_and_never_pickled():
    matrix = encode(random_sparse(300, 200, 0.05, seed=4))
    x = torch.from_numpy(np.random.default_rng(3).standard_normal((200, 5)).astype(np.float32))
    dste.spmm(matrix, x, backend="cpu")
    for other in (pickle.loads(pickle.dumps(matrix)), copy.deepcopy(matrix)):
        assert _kept(other) == []
        np.testing.assert_allclose(dste.spmm(other, x, backend="cpu").numpy(), _reference(matrix, x.numpy()), **TOL)
    wrapper = pickle.loads(pickle.dumps(dste.bindings.as_dste_tensor(matrix)))
    np.testing.assert_allclose(dste.spmm(wrapper, x, backend="cpu").numpy(), _reference(matrix, x.numpy()), **TOL)
    values = weakref.ref(dste.bindings.as_dste_tensor(matrix).values)
    gone = weakref.ref(matrix)
    del matrix, wrapper
    if gone() is not None:  # the kept state holds no reference back to the matrix: refcounting alone frees it
        gc.collect()
        pytest.fail("the matrix outlived its last reference (a reference cycle through the kept operands)")
    assert values() is None


def _uniform_random_graph(n: int, degree: int = 8, seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    rows, cols = rng.integers(0, n, degree * n // 2), rng.integers(0, n, degree * n // 2)
    keep = rows != cols
    adj = sp.coo_matrix((np.ones(keep.sum(), np.float32), (rows[keep], cols[keep])), shape=(n, n)).tocsr()
    return ((adj + adj.T) > 0).astype(np.float32)


def _community_random_graph(n: int, size: int = 100, seed: int = 0) -> sp.csr_matrix:
    """Communities of ``size`` nodes, 90 % of edges inside, ids shuffled."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, n, 4 * n)
    inside = rng.random(rows.size) < 0.9
    cols = np.where(inside, rows // size * size + rng.integers(0, size, rows.size), rng.integers(0, n, rows.size))
    cols = np.minimum(cols, n - 1)
    shuffle = rng.permutation(n)
    keep = rows != cols
    adj = sp.coo_matrix((np.ones(keep.sum(), np.float32), (shuffle[rows[keep]], shuffle[cols[keep]])), shape=(n, n))
    adj = adj.tocsr()
    return ((adj + adj.T) > 0).astype(np.float32)


def _brute_force_reuse(csr: sp.csr_matrix, order: np.ndarray) -> float:
    """Entries over distinct columns, summed over every 128-row window of ``order`` (plain Python sets)."""
    entries = distinct = 0
    for start in range(0, order.size, 128):
        columns = [int(c) for r in order[start:start + 128] for c in csr.indices[csr.indptr[r]:csr.indptr[r + 1]]]
        entries += len(columns)
        distinct += len(set(columns))
    return entries / distinct


def test_window_reuse_gain_against_every_window_counted_by_hand():
    matrix = gcn_normalized(_community_random_graph(3000), reorder="community")  # 24 windows: all sampled
    csr = matrix.effective_csr()
    expected = (_brute_force_reuse(csr, matrix.row_perm.astype(np.int64))
                / _brute_force_reuse(csr, np.arange(csr.shape[0])))
    assert encoded_csr.window_reuse_gain(csr, matrix.row_perm.astype(np.int64)) == pytest.approx(expected, rel=1e-12)


def test_a_graph_without_locality_keeps_its_original_order_and_a_community_graph_its_encoded_one():
    x = np.random.default_rng(4).standard_normal((3000, 16)).astype(np.float32)
    uniform = gcn_normalized(_uniform_random_graph(3000), reorder="community")
    community = gcn_normalized(_community_random_graph(3000), reorder="community")
    assert uniform.row_perm is not None and community.row_perm is not None  # both were reordered by the encoder
    uniform_csr, community_csr = uniform.effective_csr(), community.effective_csr()
    assert encoded_csr.window_reuse_gain(uniform_csr, uniform.row_perm.astype(np.int64)) < 1.5
    assert encoded_csr.window_reuse_gain(community_csr, community.row_perm.astype(np.int64)) > 2.0
    flat, grouped = dste.bindings.as_dste_tensor(uniform), dste.bindings.as_dste_tensor(community)
    assert flat.row_perm.numel() == 0 and flat.col_perm.numel() == 0  # torch's kernel on A itself
    assert grouped.row_perm.numel() == 3000  # the encoded row order (3,000 columns: rows only)
    for matrix, wrapper in ((uniform, flat), (community, grouped)):
        np.testing.assert_allclose(dste.spmm(wrapper, x, backend="cpu").numpy(), _reference(matrix, x), **TOL)
