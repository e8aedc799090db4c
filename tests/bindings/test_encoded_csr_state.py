"""The cpu backend's execution keeps no state between calls: no module-level pool, lock, thread-local or
``global`` rebinding, and the helper threads of a split product end with the call (also when a piece fails).
Every result is a fresh array."""

from __future__ import annotations

import ast
import inspect
import threading

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from dste.bindings import encoded_csr

from .conftest import random_sparse

STATEFUL_CONSTRUCTORS = {"local", "Lock", "RLock", "ThreadPoolExecutor", "ProcessPoolExecutor", "lru_cache", "cache"}


def _called_name(node: ast.expr) -> str:
    func = node.func if isinstance(node, ast.Call) else node
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _module_level_constructors(tree: ast.Module):
    """Calls run once at import: module-level statements and decorators (function bodies run per call)."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield from node.decorator_list
        else:
            yield from (n for n in ast.walk(node) if isinstance(n, ast.Call))


def test_module_defines_no_shared_state():
    tree = ast.parse(inspect.getsource(encoded_csr))
    rebound = [node.names for node in ast.walk(tree) if isinstance(node, (ast.Global, ast.Nonlocal))]
    assert not rebound, f"functions rebind module names {rebound}: state would outlive a call"
    for node in _module_level_constructors(tree):
        assert _called_name(node) not in STATEFUL_CONSTRUCTORS, (
            f"line {node.lineno}: module-level {_called_name(node)} keeps state across calls"
        )


def _rows_only_operands(n=300, m=200):
    a = sp.csr_matrix(random_sparse(n, m, 0.05, seed=5), dtype=np.float32)
    a.sort_indices()
    row_perm = np.random.default_rng(6).permutation(n)
    b = sp.csr_matrix(a[row_perm])
    b.sort_indices()
    empty = np.empty(0, dtype=np.int64)
    return a, (b.indptr.astype(np.int32), b.indices.astype(np.int32), b.data, row_perm, empty)


def test_rows_only_results_are_fresh_arrays():
    a, arrays = _rows_only_operands()
    rng = np.random.default_rng(7)
    x1, x2 = (rng.standard_normal((200, 8)).astype(np.float32) for _ in range(2))
    y1 = encoded_csr.encoded_spmm(*arrays, x1)
    kept = y1.copy()
    y2 = encoded_csr.encoded_spmm(*arrays, x2)
    np.testing.assert_array_equal(y1, kept)  # the second call wrote nothing into the first result
    assert not np.shares_memory(y1, y2)
    # each row summed in A's order from zero in float32, as SciPy does: its bits
    np.testing.assert_array_equal(y2, a @ x2)


def _split_operands():
    a = random_sparse(300, 200, 0.05, seed=3)
    a = sp.csr_matrix(a, dtype=np.float32)
    a.sort_indices()
    rng = np.random.default_rng(4)
    row_perm, col_perm = rng.permutation(300), rng.permutation(200)
    b = sp.csr_matrix(a[row_perm][:, col_perm])
    b.sort_indices()
    arrays = (b.indptr.astype(np.int32), b.indices.astype(np.int32), b.data, row_perm, col_perm)
    return a, arrays, rng.standard_normal((200, 8)).astype(np.float32)


@pytest.fixture
def split_over_three_threads(monkeypatch):
    monkeypatch.setattr(encoded_csr, "PARALLEL_MIN_MULTIPLY_ADDS", 0)
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    yield
    torch.set_num_threads(threads)


def _helper_threads():
    return [t for t in threading.enumerate() if t.name.startswith("dste-spmm")]


def test_split_product_leaves_no_threads_behind(split_over_three_threads):
    a, arrays, x = _split_operands()
    assert len(encoded_csr._row_blocks(arrays[0], 3)) == 3
    y = encoded_csr.encoded_spmm(*arrays, x)
    # fp32 products of <= ~25 terms against float64: rounding stays well below 1e-5
    np.testing.assert_allclose(y, a.astype(np.float64) @ x.astype(np.float64), rtol=1e-5, atol=1e-5)
    assert _helper_threads() == []


def test_error_in_a_helper_piece_reaches_the_caller(split_over_three_threads, monkeypatch):
    _, arrays, x = _split_operands()
    real_product = encoded_csr.csr_product_into

    def failing_off_the_calling_thread(*args, **kwargs):
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("piece failed")
        return real_product(*args, **kwargs)

    monkeypatch.setattr(encoded_csr, "csr_product_into", failing_off_the_calling_thread)
    with pytest.raises(RuntimeError, match="piece failed"):
        encoded_csr.encoded_spmm(*arrays, x)
    assert _helper_threads() == []
