"""The ``cpu`` backend's operand: the effective CSR in DSTE's encoded (reordered) node order, and its product.

A ``DSTEMatrix`` stores a reordering: ``row_perm[i]`` is the original row at encoded position i and
``col_perm[j]`` the original column at encoded position j. In that order the rows of a 128-row window gather
few, nearby rows of X, while in the original (often random) order every row gathers X rows from anywhere.
So the CPU path multiplies

    B = P_r A P_c^T        (B[i, j] = A[row_perm[i], col_perm[j]])
    Y[row_perm] = B @ X[col_perm]                   (forward)
    dX[col_perm] = B^T @ dY[row_perm]               (X-gradient)

with ``B`` built once per matrix: int32 ``indptr``/``indices`` (int64 only past 2^31 - 1 entries) and the very
float32 values of ``matrix.effective_csr()``. How much of the order ``B`` takes depends on the column count M:

* ``M <= ORIGINAL_ORDER_MAX_COLS`` (or no reordering): ``B = A``, empty permutations. X stays cache-resident in
  any order.
* ``M <= ROW_ORDER_MAX_COLS``: rows in encoded order, column ids original (``col_perm`` empty, ``B = P_r A``).
  Consecutive rows are neighbours, so the X rows they read are reused while in cache; X is read in place (an
  X row of F >= 16 float32 is a whole cache line already, gathering it buys no spatial locality) and each row of
  Y is written at its original position.
* larger: both orders (``Y[row_perm] = B @ X[col_perm]``): once X leaves the last-level cache the gathered X's
  locality pays for its copy.

The forward product is the compiled kernel of :mod:`dste.bindings.csr_kernel` in every form: each row of Y summed
in stored order from zero in X's dtype, written to its original row by the kernel itself (``out_rows``), with a
flag saying whether every value of Y is finite (``dste.spmm`` builds its finiteness check of X on it). Each row of
``B`` holds its entries in the order of A's row (sorted by original column id, so in the third form the encoded
column ids of a row are not sorted), so every form gives the bits of SciPy's ``A @ X`` in original order. That
lets an eager call of a matrix in both orders run the original-order product when X is small
(``RC_ORIGINAL_ORDER_MAX_X_BYTES``) with the bits the op gives. (Sorting the third form's rows by encoded id gave
other bits than the other forms, and made its product 5-16 % faster at 60k-300k nodes, F = 32-128, with SciPy's
kernel.) The form thresholds below were measured with the kernels the product ran before (torch's CSR kernel for
the first two forms, SciPy's for the third); the compiled kernel is faster than both in every form measured
(``bench/README.md``, "Scaling").

The encoded order pays only where it groups rows that read the same X rows. A graph without such structure
(a uniform random graph, say) gains nothing from it, and the gathers cost: there ``B = A`` whatever M. The
measure is the reuse of X rows within 128-row windows, ``entries / distinct columns`` summed over windows,
in encoded against original row order (``window_reuse_gain``, on up to ``REUSE_SAMPLE_WINDOWS`` windows spread
over each order); below ``REORDER_MIN_REUSE_GAIN`` the original order is kept. On a uniform random graph (mean
degree 8, gain 1.28-1.31; one thread, interleaved with torch.sparse.mm on the int64 CSR, F = 32 and 128) both
orders ran 0.34-0.64x of torch.sparse.mm at 20k nodes and 0.64-0.88x at 100k, where the original order ran
torch's own kernel (int32 indices); shuffled CSBM graphs (gain 3.1-3.9) keep their orders.

Products of at least ``PARALLEL_MIN_MULTIPLY_ADDS`` multiply-adds are split by rows, balanced by nonzeros, over
``torch.get_num_threads()`` Python threads (the kernel releases the GIL), each writing its rows of Y in place; the
helper threads are started per call (the calling thread works too), and the gathered copy of X and Y are fresh
arrays, so the module keeps no state between calls. A persistent pool and a reused gather buffer were measured
side by side in one process on 2 shared cores (medians of 21-41 interleaved calls; ratio = stateless /
stateful), with SciPy's kernel:

- gather buffer, 20k and 40k nodes (community order), F = 32/64/128, 1 and 2 threads: 0.87-1.16 for
  ``encoded_spmm``, its transpose and ``dste.spmm`` where the buffer applied, and 0.72-1.03 where it did not
  (X above its 8 MiB cap), i.e. within noise. A fresh X[col_perm] takes no page faults per call (glibc's
  adaptive mmap threshold keeps it in the heap), which was the buffer's reason to exist.
- threads per call: 1.15-1.26 at 1-4x the old parallel threshold of 2^21 multiply-adds (8k nodes, F = 32 and
  128), 0.995-1.07 at 8x, 0.99-1.04 from 16x on (1.015 at arxiv-scale, F = 128, where 2 threads beat 1 by
  1.21x). Hence ``PARALLEL_MIN_MULTIPLY_ADDS`` = 2^25.
"""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp
import torch

from dste.format import DSTEMatrix
from dste.format.constants import WINDOW_ROWS
from dste.format.permutation import inverse_permutation, is_permutation

from .csr_kernel import check_csr_ids, csr_product_into

__all__ = ["EncodedCSR", "build_encoded_csr", "eager_spmm", "encoded_product", "encoded_spmm", "encoded_spmm_transpose",
           "original_order_csr", "original_order_operands", "window_reuse_gain"]

INT32_MAX = np.iinfo(np.int32).max
# Products below this many multiply-adds (nnz * F) run on the calling thread alone: starting the helper
# threads costs 0.2-0.5 ms per call on a loaded 2-core machine (15-26 % of a product of 2^21-2^23
# multiply-adds, up to 7 % at 2^24, < 5 % from 2^25; see the module docstring).
PARALLEL_MIN_MULTIPLY_ADDS = 1 << 25
# Matrices with at most this many columns are executed in original order (empty permutations): their X (M x F floats)
# stays cache-resident in any order. Shuffled CSBM graphs, one thread, F = 32/64/128, min of 41 interleaved, torch's
# kernel into a kept work buffer: the encoded row order with the Y gather was as fast at 1k nodes (0.059/0.110/0.210 ms
# against 0.060/0.114/0.219 in original order) and faster from 2k on (2k: 0.101/0.212/0.434 against 0.108/0.227/0.453;
# 3k: 0.150/0.331/0.699 against 0.164/0.353/0.738; 5k-10k: 4-15 %). (4096 before the inverse was kept: building it per
# call ate the gain.)
ORIGINAL_ORDER_MAX_COLS = 1024
# Up to this many columns only the rows take the encoded order (see the module docstring). Shuffled CSBM graphs, one
# thread, against torch.sparse.mm (int64 CSR), with the kernels of the time: rows-only with torch's kernel 1.16-1.18x at
# 10k nodes and 1.11-1.77x at 30k (F = 32-128), where both orders with SciPy's kernel were 0.70-1.09x; at 100k and F =
# 128 (X 51 MB, past the 32 MB last-level cache) both orders with SciPy were 2.3x, rows-only 1.3x.
ROW_ORDER_MAX_COLS = 49152
# The encoded order is used only when its 128-row windows reuse X rows this many times more than the original
# order's (see the module docstring): uniform random graphs 1.28-1.31, a 20k CSBM with 30 % of edges local 1.61
# (rows-only and original order within 7 % of each other there), cora-like 1.79, shuffled CSBM graphs 3.1-3.9.
REORDER_MIN_REUSE_GAIN = 1.5
# Up to this many bytes of X, an eager call on a matrix in both orders (M > ROW_ORDER_MAX_COLS) runs A in original
# order (built on first use and kept by the wrapper): X stays in the last-level cache (32 MB here) in any order,
# and the gathers of X and Y then cost more than the order saves. Shuffled CSBM graphs, one thread, min of 9
# interleaved, torch.sparse.mm (int64) / dste.spmm with torch's kernel, both orders only -> with this rule: 60k
# nodes F = 16 / 32 / 64: 0.93 / 0.82-0.92 / 0.91-0.99 -> 1.43 / 1.30-1.34 / 1.12; 100k F = 16: 0.75 -> 1.35,
# F = 32 (12.8 MB) 1.03-1.09 -> 0.95-0.99 (level within run-to-run noise).
RC_ORIGINAL_ORDER_MAX_X_BYTES = 16 << 20
_NO_PERMUTATION = np.empty(0, dtype=np.int64)
# Windows sampled (evenly spread, so the choice is deterministic) per order by ``window_reuse_gain``.
REUSE_SAMPLE_WINDOWS = 64


class EncodedCSR:
    """Tensors of ``B`` and the permutations, as the op takes them.

    ``crow_indices int32 [N+1]``, ``col_indices int32 [nnz]`` (int64 past 2^31 - 1 entries), ``values float32
    [nnz]``, ``row_perm int64 [N]`` / ``col_perm int64 [M]`` (empty when the matrix has no reordering in that
    dimension), ``shape (N, M)``.
    """

    __slots__ = ("crow_indices", "col_indices", "values", "row_perm", "col_perm", "shape")

    def __init__(self, crow_indices, col_indices, values, row_perm, col_perm, shape):
        self.crow_indices = crow_indices
        self.col_indices = col_indices
        self.values = values
        self.row_perm = row_perm
        self.col_perm = col_perm
        self.shape = shape

    def nbytes(self) -> int:
        """Bytes held by these tensors (a permutation shared with the matrix counts too)."""
        tensors = (self.crow_indices, self.col_indices, self.values, self.row_perm, self.col_perm)
        return int(sum(t.numel() * t.element_size() for t in tensors))


def _effective_csr(matrix) -> sp.csr_matrix:
    """The matrix's effective float32 CSR.

    A ``DSTEMatrix`` is decoded afresh (``decode(effective=True, dtype=float32)``: the values of its public
    ``effective_csr()``) rather than through ``effective_csr()``, which would keep a second resident copy of
    the matrix beside ``B`` in the matrix's own cache.
    """
    if isinstance(matrix, DSTEMatrix):
        return matrix.decode(effective=True, dtype=np.float32)
    if hasattr(matrix, "effective_csr"):
        return matrix.effective_csr()
    return matrix.decode(effective=True)


def _permutation(perm, length: int, what: str) -> np.ndarray | None:
    """``perm`` as int64, or None when absent or the identity."""
    if perm is None:
        return None
    perm = np.asarray(perm)
    if perm.shape != (length,) or perm.dtype.kind not in "iu":
        raise ValueError(f"the matrix's {what} must be an integer array [{length}], got {perm.dtype} {perm.shape}")
    perm = perm.astype(np.int64, copy=False)
    if np.array_equal(perm, np.arange(length)):
        return None
    if not is_permutation(perm, length):
        raise ValueError(f"the matrix's {what} is not a permutation of 0..{length - 1}")
    return perm


def _shared_tensor(array: np.ndarray) -> torch.Tensor:
    """``torch.from_numpy(array)`` for an array that may be one of a DSTEMatrix's own, which are read-only: the
    tensor shares its memory (no copy; the op only reads its operands), without torch's warning about it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def _window_reuse(indptr: np.ndarray, indices: np.ndarray, order: np.ndarray) -> float:
    """Entries per distinct column over up to ``REUSE_SAMPLE_WINDOWS`` evenly spread 128-row windows of the rows
    in ``order`` (original row ids): how often a window reuses the X rows it gathers."""
    n_windows = -(-order.size // WINDOW_ROWS)
    picked = np.unique(np.linspace(0, n_windows - 1, min(n_windows, REUSE_SAMPLE_WINDOWS)).astype(np.int64))
    entries = distinct = 0
    for window in picked.tolist():
        rows = order[window * WINDOW_ROWS:(window + 1) * WINDOW_ROWS]
        columns = np.concatenate([indices[indptr[r]:indptr[r + 1]] for r in rows.tolist()])
        entries += columns.size
        distinct += np.unique(columns).size
    return entries / distinct if distinct else 1.0


def window_reuse_gain(csr: sp.csr_matrix, row_perm: np.ndarray) -> float:
    """X-row reuse of 128-row windows in the encoded row order ``row_perm`` over that in the original order
    (``REORDER_MIN_REUSE_GAIN``)."""
    original = _window_reuse(csr.indptr, csr.indices, np.arange(csr.shape[0], dtype=np.int64))
    return _window_reuse(csr.indptr, csr.indices, row_perm) / original


def build_encoded_csr(matrix) -> EncodedCSR:
    """``B`` and the permutations of ``matrix`` (a DSTEMatrix or anything with ``shape`` and
    ``effective_csr()`` / ``decode(effective=True)``)."""
    csr = sp.csr_matrix(_effective_csr(matrix))
    n, m = (int(s) for s in matrix.shape)
    if csr.shape != (n, m):
        raise ValueError(f"decoded matrix has shape {csr.shape}, but the matrix says {(n, m)}")
    values = np.asarray(csr.data, dtype=np.float32)
    if not np.isfinite(values).all():
        raise ValueError("the DSTE matrix decodes to NaN or Inf values; re-encode it from finite data")
    row_perm = _permutation(getattr(matrix, "row_perm", None), n, "row_perm")
    col_perm = _permutation(getattr(matrix, "col_perm", None), m, "col_perm")
    if m <= ORIGINAL_ORDER_MAX_COLS or (
            row_perm is not None and window_reuse_gain(csr, row_perm) < REORDER_MIN_REUSE_GAIN):
        row_perm = col_perm = None
    elif m <= ROW_ORDER_MAX_COLS:
        col_perm = None
    indptr, indices = csr.indptr, csr.indices
    if row_perm is not None:  # rows of B in encoded order
        indptr, source = _rows_in_order(indptr, row_perm)
        indices, values = indices[source], values[source]
    if col_perm is not None:  # column ids to encoded positions; each row keeps A's order (module docstring)
        indices = inverse_permutation(col_perm)[indices]
    index_dtype = np.int32 if max(csr.nnz, n, m) <= INT32_MAX else np.int64
    encoded = sp.csr_matrix(
        (np.ascontiguousarray(values, dtype=np.float32), indices.astype(index_dtype), indptr.astype(index_dtype)),
        shape=(n, m),
    )
    if col_perm is None:  # already sorted; the encoded column ids of the third form keep A's order (module docstring)
        encoded.sort_indices()
    check_csr_ids(encoded.indptr, encoded.indices, m)  # once per matrix: the product trusts them (csr_kernel)
    empty = torch.empty(0, dtype=torch.int64)
    return EncodedCSR(
        crow_indices=torch.from_numpy(encoded.indptr),
        col_indices=torch.from_numpy(encoded.indices),
        values=torch.from_numpy(encoded.data),
        row_perm=empty if row_perm is None else _shared_tensor(row_perm),
        col_perm=empty if col_perm is None else _shared_tensor(col_perm),
        shape=(n, m),
    )


def original_order_csr(operands: EncodedCSR) -> sp.csr_matrix:
    """``A`` in original coordinates (rows in order, column ids sorted), new arrays."""
    arrays = tuple(t.numpy() for t in (operands.crow_indices, operands.col_indices, operands.values,
                                       operands.row_perm, operands.col_perm))
    indptr, indices, values = original_order_operands(arrays, inverse_permutation(arrays[3]))
    csr = sp.csr_matrix((values.copy(), indices.copy(), indptr.copy()), shape=operands.shape)
    csr.sort_indices()  # each row holds A's order already (module docstring); kept as the contract's guarantee
    return csr


# -- execution -----------------------------------------------------------------------------------------------

def _row_blocks(indptr: np.ndarray, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous row ranges with about equal nonzeros."""
    n = indptr.shape[0] - 1
    targets = (np.arange(1, parts, dtype=np.int64) * int(indptr[-1])) // parts
    cuts = [0, *np.searchsorted(indptr, targets).tolist(), n]
    return [(lo, hi) for lo, hi in zip(cuts[:-1], cuts[1:]) if hi > lo]


def _workers_for(nnz: int, width: int) -> int:
    threads = max(1, torch.get_num_threads())
    return threads if threads > 1 and nnz * width >= PARALLEL_MIN_MULTIPLY_ADDS else 1


def _run_split(helpers: ThreadPoolExecutor, work, pieces: list[tuple[int, int]]) -> None:
    """``work(lo, hi)`` for every piece: the first on the calling thread, the others on ``helpers``; returns when
    all are done and re-raises the first error (the executor's exit waits for any piece still running)."""
    futures = [helpers.submit(work, lo, hi) for lo, hi in pieces[1:]]
    work(*pieces[0])
    for future in futures:
        future.result()


def _to_original_rows(encoded: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """``out`` with ``out[perm] = encoded``, written as the gather ``out = encoded[perm^-1]``.

    The gather streams its output once and reads rows at random; the scatter it replaces wrote rows at
    random, which at 300k nodes x 128 float32 took 3x longer (1 thread: 96 ms against 318 ms).
    """
    return np.take(encoded, inverse_permutation(perm), axis=0)


def original_order_operands(host_operands, row_inverse: np.ndarray):
    """``(indptr, indices, data)`` of ``A`` in original order (rows and column ids) from operands in encoded order,
    each row's entries in their stored order (A's), with the index dtype of the operands."""
    crow, col, values, row_perm, col_perm = host_operands
    if not row_perm.size:
        return crow, (col_perm[col].astype(col.dtype) if col_perm.size else col), values
    indptr, source = _rows_in_order(crow, row_inverse)
    indices = col[source]
    if col_perm.size:
        indices = col_perm[indices]
    return indptr.astype(crow.dtype), indices.astype(col.dtype), values[source]


def _rows_in_order(indptr: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(int64 indptr, int64 source)`` of the CSR whose row i is row ``order[i]`` of the CSR with ``indptr``, each
    row's entries kept in their order: ``source`` names, per entry of the new CSR, its position in the old one."""
    lengths = np.diff(indptr)[order]
    new_indptr = np.zeros(order.shape[0] + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_indptr[1:])
    starts = np.repeat(indptr[order].astype(np.int64) - new_indptr[:-1], lengths)
    return new_indptr, starts + np.arange(int(new_indptr[-1]), dtype=np.int64)


def _product(crow, col, data, x: np.ndarray, row_perm: np.ndarray) -> tuple[np.ndarray, bool]:
    """``(Y, finite)``: ``Y[row_perm] = B @ x`` (``row_perm`` empty: ``Y = B @ x``) by the compiled kernel, which
    writes each row of Y at its original position itself; large products split by rows over
    ``torch.get_num_threads()`` threads (the kernel releases the GIL). ``finite``: every value of Y is. The
    operands' ids are trusted (``build_encoded_csr`` or the op's operand check proved them)."""
    n, width = crow.shape[0] - 1, x.shape[1]
    y = np.empty((n, width), dtype=x.dtype)
    workers = _workers_for(col.shape[0], width)
    blocks = _row_blocks(crow, workers) if workers > 1 else []
    if len(blocks) <= 1:
        return y, csr_product_into(crow, col, data, x, y, row_perm)
    finite = []

    def run(lo, hi):
        out, out_rows = (y, row_perm[lo:hi]) if row_perm.size else (y[lo:hi], row_perm)
        finite.append(csr_product_into(crow[lo:hi + 1], col, data, x, out, out_rows))

    # the helper threads live for this call only; the calling thread takes the first block
    with ThreadPoolExecutor(len(blocks) - 1, thread_name_prefix="dste-spmm") as helpers:
        _run_split(helpers, run, blocks)
    return y, all(finite)


def encoded_product(crow, col, values, row_perm, col_perm, x: np.ndarray) -> tuple[np.ndarray, bool]:
    """``(Y [N, F], finite)`` with ``Y[row_perm] = B @ X[col_perm]`` (NumPy in, NumPy out; dtype of x) and whether
    every value of Y is finite (see ``csr_kernel.unread_rows`` for what that proves about X). The column ids are
    trusted: operands as ``build_encoded_csr`` makes them, or checked with ``csr_kernel.check_csr_ids``."""
    n = crow.shape[0] - 1
    if n == 0 or x.shape[1] == 0:
        return np.zeros((n, x.shape[1]), dtype=x.dtype), True
    data = values if values.dtype == x.dtype else values.astype(x.dtype)
    x_encoded = np.take(x, col_perm, axis=0) if col_perm.size else np.ascontiguousarray(x)
    return _product(crow, col, data, x_encoded, row_perm)


def encoded_spmm(crow, col, values, row_perm, col_perm, x: np.ndarray) -> np.ndarray:
    """``Y [N, F]`` with ``Y[row_perm] = B @ X[col_perm]`` (NumPy in, NumPy out; dtype of x)."""
    return encoded_product(crow, col, values, row_perm, col_perm, x)[0]


def eager_spmm(host_operands, x: torch.Tensor, original_operands=None) -> tuple[torch.Tensor, bool]:
    """``(Y, finite)``: ``encoded_product`` of a contiguous torch tensor ``x`` for ``dste.spmm``'s eager cpu call,
    Y a torch tensor. ``original_operands``: a callable returning ``A``'s arrays in original order (built on first
    use by the caller, who keeps them): a matrix in both orders with an X of at most
    ``RC_ORIGINAL_ORDER_MAX_X_BYTES`` runs in original order, without the gather of X (the same bits, module
    docstring)."""
    crow, col, values, row_perm, col_perm = host_operands
    x_values = x.numpy()
    if col_perm.size and original_operands is not None and x_values.nbytes <= RC_ORIGINAL_ORDER_MAX_X_BYTES:
        crow, col, values = original_operands()
        row_perm = col_perm = _NO_PERMUTATION
    width = x_values.shape[1]
    if (x_values.dtype == values.dtype and not col_perm.size and crow.shape[0] > 1
            and (col.shape[0] * width < PARALLEL_MIN_MULTIPLY_ADDS or torch.get_num_threads() == 1)):
        # the commonest call, without encoded_product's layers; Y allocated by NumPy and wrapped (torch.empty and
        # its .numpy() view cost 1.2 us more): the layers were ~5 us of a 15 us product at 1k nodes, F = 1
        y = np.empty((crow.shape[0] - 1, width), dtype=x_values.dtype)
        return torch.from_numpy(y), csr_product_into(crow, col, values, x_values, y, row_perm)
    y, finite = encoded_product(crow, col, values, row_perm, col_perm, x_values)
    return torch.from_numpy(y), finite


def encoded_spmm_transpose(crow, col, values, row_perm, col_perm, grad: np.ndarray, m: int) -> np.ndarray:
    """``dX [m, F]`` with ``dX[col_perm] = B^T @ dY[row_perm]`` (NumPy in, NumPy out; dtype of grad)."""
    n = crow.shape[0] - 1
    data = values if values.dtype == grad.dtype else values.astype(grad.dtype)
    grad_encoded = np.take(grad, row_perm, axis=0) if row_perm.size else grad
    b = sp.csr_matrix((data, col, crow), shape=(n, m))
    dx_encoded = np.asarray(b.T @ grad_encoded, dtype=grad.dtype)
    if not col_perm.size:
        return np.ascontiguousarray(dx_encoded)
    return _to_original_rows(dx_encoded, col_perm)
