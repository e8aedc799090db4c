"""The cpu backend's execution keeps no state between calls: no module-level pool, lock, thread-local or
``global`` rebinding, and the helper threads of a split product end with the call (also when a piece fails).
The rows-only product's work buffer belongs to the caller that passes one (``DSTETensor`` keeps one per thread):
capped in size and never aliased by a result."""

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


def test_rows_only_results_do_not_alias_the_work_buffer():
    a, arrays = _rows_only_operands()
    rng = np.random.default_rng(7)
    x1, x2 = (rng.standard_normal((200, 8)).astype(np.float32) for _ in range(2))
    work = threading.local()
    y1 = encoded_csr.encoded_spmm(*arrays, x1, work=work)
    kept = y1.copy()
    y2 = encoded_csr.encoded_spmm(*arrays, x2, work=work)  # same shape: reuses this thread's buffer
    assert getattr(work, str(torch.float32)).numel() == 300 * 8
    np.testing.assert_array_equal(y1, kept)
    assert not np.shares_memory(y1, y2)
    # fp32 products of <= ~15 terms against float64: rounding stays well below 1e-5
    np.testing.assert_allclose(y2, a.astype(np.float64) @ x2.astype(np.float64), rtol=1e-5, atol=1e-5)


def test_work_buffer_stays_below_its_cap(monkeypatch):
    a, arrays = _rows_only_operands()
    x = np.random.default_rng(8).standard_normal((200, 8)).astype(np.float32)
    work = threading.local()
    monkeypatch.setattr(encoded_csr, "ENCODED_ROWS_BUFFER_MAX_BYTES", 300 * 8 * 4 - 1)  # one byte short
    assert encoded_csr._encoded_rows_buffer(work, 300, 8, torch.float32, 4) is None
    np.testing.assert_allclose(encoded_csr.encoded_spmm(*arrays, x, work=work),
                               a.astype(np.float64) @ x.astype(np.float64), rtol=1e-5, atol=1e-5)
    assert encoded_csr._encoded_rows_buffer(None, 300, 8, torch.float32, 4) is None  # no caller buffer: none
    monkeypatch.setattr(encoded_csr, "ENCODED_ROWS_BUFFER_MAX_BYTES", 300 * 8 * 4)
    assert encoded_csr._encoded_rows_buffer(work, 300, 8, torch.float32, 4).shape == (300, 8)


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
    real_csr_matrix = sp.csr_matrix

    def failing_off_the_calling_thread(*args, **kwargs):
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("piece failed")
        return real_csr_matrix(*args, **kwargs)

    monkeypatch.setattr(encoded_csr.sp, "csr_matrix", failing_off_the_calling_thread)
    with pytest.raises(RuntimeError, match="piece failed"):
        encoded_csr.encoded_spmm(*arrays, x)
    assert _helper_threads() == []


def test_the_work_buffer_belongs_to_the_wrapper_and_is_rebuilt_after_pickling(monkeypatch):
    """6000 nodes: past ``ORIGINAL_ORDER_MAX_COLS``, so the wrapper runs the rows-only product that uses the buffer.
    The random graph is drawn with a ``Generator``: ``sp.random`` with an integer seed samples its positions by
    permuting all 36M cells (1.8 s), a ``Generator`` draws them directly (7 ms); the claim holds for any graph."""
    import pickle

    from dste.bindings import DSTETensor, spmm
    from dste.format import gcn_normalized

    adjacency = sp.random(6000, 6000, density=0.002, random_state=np.random.default_rng(1), format="csr",
                          dtype=np.float32)
    monkeypatch.setattr(encoded_csr, "REORDER_MIN_REUSE_GAIN", 0.0)  # a random graph: keep its order anyway
    wrapper = DSTETensor(gcn_normalized(((adjacency + adjacency.T) > 0).astype(np.float32)))
    assert wrapper.row_perm.numel() and not wrapper.col_perm.numel()  # the rows-only product
    x = torch.from_numpy(np.random.default_rng(9).standard_normal((6000, 8)).astype(np.float32))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the rows-only torch-kernel path runs on one torch thread
    try:
        first, second = spmm(wrapper, x), spmm(wrapper, x)
        # one flat float32 tensor and its last [6000, 8] view over the same memory
        assert sorted(vars(wrapper.host_work)) == [str(torch.float32), f"{torch.float32} view"]
        view = getattr(wrapper.host_work, f"{torch.float32} view")
        assert view.shape == (6000, 8) and view.data_ptr() == getattr(wrapper.host_work, str(torch.float32)).data_ptr()
        assert torch.equal(first, second) and not np.shares_memory(first.numpy(), second.numpy())
        copied = pickle.loads(pickle.dumps(wrapper))
        assert copied.host_work is not wrapper.host_work and not vars(copied.host_work)
        assert torch.equal(spmm(copied, x), first)
    finally:
        torch.set_num_threads(threads)
