"""The cpu backend's compiled CSR x dense product: SciPy's bits, one thread per call, and a finiteness flag.

``csr_product(indptr, indices, data, x, out, out_rows)`` computes ``out[out_rows[i]] = sum_p data[p] *
x[indices[p]]`` over the entries ``p`` of row ``i`` (``out_rows`` None: row ``i`` itself), each output value summed
in stored order from 0 in X's dtype (float32 or float64), as SciPy's ``csr_matvecs`` does, so the result equals
``csr @ x`` of a SciPy matrix of X's dtype bit for bit (torch's CSR kernel, MKL's here, sums in another order: about
one ulp apart).

Why a kernel of its own: the products ``dste.spmm`` runs on small and mid-size graphs take tens of microseconds,
and torch's CSR kernel (int64 indices, as a user builds them) left no room for the op's own finiteness check of X
(one thread, shuffled CSBM graphs of 1k-2k nodes: ``dste.spmm`` 0.87-0.92x of ``torch.sparse.mm`` at F = 16-64,
its sum over X alone 3-4 us of a 33 us call). Here each output row is accumulated in vector registers over the row's
entries (up to four vectors of ``VECTOR_LANES`` lanes per pass, then one masked vector of 8 or 16 lanes for the
last ``F % 16`` columns), and the kernel reports whether every output value is finite, which a caller turns into the
finiteness check of X for free (:func:`unread_rows`).

Why vector code written out: Numba's loop vectorizer unrolls a width-16 loop into 16 scalar lanes (its SLP
vectorizer, which would pack them, is off by default since a miscompilation, numba#8705), so the accumulation is
emitted as LLVM vector operations (``_row_chunk_intrinsic``). Multiplies and adds stay separate (no contraction, no
reassociation): IEEE arithmetic in the order above, hence the bits.

Column ids are not checked per entry: the check (a compare and a select on each entry's X address) cost 20-40 % of
the product at F <= 16 (1k-20k nodes, one thread). :func:`csr_product` checks its arguments with NumPy before the
kernel runs; :func:`csr_product_into` takes operands whose ids the caller has proven, as ``build_encoded_csr`` and the
torch op's operand check do once per matrix and per call (``indptr`` non-decreasing from 0 to at most
``len(indices)``, every id it covers below X's rows). Output row ids are checked once per call, before any row.
Compiled on first use and cached beside this module (``scripts/setup.sh`` compiles it once, through
:func:`compile_products`).
"""

from __future__ import annotations

import time

import numpy as np
from llvmlite import ir
from numba import literally, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["VECTOR_LANES", "check_csr_ids", "compile_products", "csr_product", "csr_product_into", "unread_rows"]

VECTOR_LANES = 16
"""Lanes of the widest accumulator: one AVX-512 register of float32 (two of AVX2; float64 twice as many)."""
NON_FINITE = 1
"""Status bit: an output value is NaN or infinite."""
BAD_TARGET = 4
"""Status bit: an output row id is outside the output's rows (nothing is written there)."""

_JIT = dict(cache=True, nogil=True, boundscheck=False)


class _RowPass:
    """LLVM IR of one pass over CSR rows' entries for ``lanes * vectors`` columns of Y (``_row_chunk_intrinsic``)."""

    def __init__(self, context, builder, sig, args, lanes: int, vectors: int):
        self.context, self.builder, self.lanes = context, builder, lanes
        self.out_type, self.x_type, self.indices_type, self.data_type = sig.args[:4]
        self.out, self.x, self.indices, self.data = (
            context.make_array(kind)(context, builder, value) for kind, value in zip(sig.args[:4], args[:4]))
        self.intp = context.get_value_type(types.intp)
        self.vector = ir.VectorType(context.get_value_type(self.x_type.dtype), lanes)
        self.vectors = vectors
        self.mask = None  # an <lanes x i1> of the lanes loaded and stored (set_count); None: every lane

    def set_count(self, count):
        """Only the first ``count`` lanes (an intp, 0 < count <= lanes) are loaded from X and stored to Y: masked
        loads and stores (``llvm.masked.load`` / ``llvm.masked.store``), which never touch memory past them."""
        builder, i32 = self.builder, ir.IntType(32)
        lane_ids = ir.Constant(ir.VectorType(i32, self.lanes), list(range(self.lanes)))
        counts = builder.shuffle_vector(
            builder.insert_element(ir.Constant(ir.VectorType(i32, self.lanes), ir.Undefined),
                                   builder.trunc(count, i32), ir.Constant(i32, 0)),
            ir.Constant(ir.VectorType(i32, self.lanes), ir.Undefined), ir.Constant(ir.VectorType(i32, self.lanes),
                                                                                  [0] * self.lanes))
        self.mask = builder.icmp_signed("<", lane_ids, counts)

    def _masked(self, name: str, function_type):
        element = "f32" if self.vector.element == ir.FloatType() else "f64"
        # LLVM's overloaded-intrinsic name: the vector type, then the (opaque) pointer's address space
        return cgutils.get_or_insert_function(self.builder.module, function_type,
                                              f"llvm.masked.{name}.v{self.lanes}{element}.p0")

    def load(self, pointer):
        pointer = self.builder.bitcast(pointer, self.vector.as_pointer())
        if self.mask is None:
            return self.builder.load(pointer, align=4)
        mask_type, i32 = self.mask.type, ir.IntType(32)
        masked_load = self._masked("load", ir.FunctionType(self.vector, [self.vector.as_pointer(), i32, mask_type,
                                                                         self.vector]))
        return self.builder.call(masked_load, [pointer, ir.Constant(i32, 4), self.mask,
                                               ir.Constant(self.vector, [0.0] * self.lanes)])

    def store_vector(self, value, pointer):
        pointer = self.builder.bitcast(pointer, self.vector.as_pointer())
        if self.mask is None:
            self.builder.store(value, pointer, align=4)
            return
        i32 = ir.IntType(32)
        masked_store = self._masked("store", ir.FunctionType(ir.VoidType(), [self.vector, self.vector.as_pointer(),
                                                                            i32, self.mask.type]))
        self.builder.call(masked_store, [value, pointer, ir.Constant(i32, 4), self.mask])

    def as_intp(self, value, kind):
        return self.context.cast(self.builder, value, kind, types.intp)

    def columns(self, column):
        return [self.builder.add(column, ir.Constant(self.intp, k * self.lanes)) for k in range(self.vectors)]

    def zeros(self):
        return [cgutils.alloca_once_value(self.builder, ir.Constant(self.vector, [0.0] * self.lanes))
                for _ in range(self.vectors)]

    def add_entry(self, entry, totals, columns):
        """``totals += data[entry] * x[indices[entry], columns]`` (the id trusted: module docstring)."""
        context, builder = self.context, self.builder
        row = builder.load(cgutils.get_item_pointer(context, builder, self.indices_type, self.indices, [entry]))
        row = context.cast(builder, row, self.indices_type.dtype, types.intp)
        scale = builder.load(cgutils.get_item_pointer(context, builder, self.data_type, self.data, [entry]))
        scales = builder.shuffle_vector(
            builder.insert_element(ir.Constant(self.vector, ir.Undefined), scale, ir.Constant(ir.IntType(32), 0)),
            ir.Constant(self.vector, ir.Undefined), ir.Constant(ir.VectorType(ir.IntType(32), self.lanes),
                                                              [0] * self.lanes))
        for total, column in zip(totals, columns):
            values = self.load(cgutils.get_item_pointer(context, builder, self.x_type, self.x, [row, column]))
            builder.store(builder.fadd(builder.load(total), builder.fmul(scales, values)), total)

    def add_entries(self, start, stop, totals, columns):
        with cgutils.for_range_slice(self.builder, start, stop, ir.Constant(self.intp, 1), intp=self.intp) as (e, _):
            self.add_entry(e, totals, columns)

    def store(self, target, totals, columns):
        """``out[target, columns] = totals``; returns an i1: every value stored is finite."""
        builder = self.builder
        all_finite = ir.Constant(ir.IntType(1), 1)
        for total, column in zip(totals, columns):
            result = builder.load(total)
            self.store_vector(result, cgutils.get_item_pointer(self.context, builder, self.out_type, self.out,
                                                               [target, column]))
            difference = builder.fsub(result, result)  # 0 for every finite value, NaN for NaN and +-Inf
            lanes_finite = builder.fcmp_ordered("==", difference, difference)
            if self.mask is not None:  # lanes past the count hold zeros; counted finite either way
                lanes_finite = builder.or_(lanes_finite, builder.not_(self.mask))
            lanes_finite = builder.bitcast(lanes_finite, ir.IntType(self.lanes))
            all_finite = builder.and_(all_finite, builder.icmp_unsigned(
                "==", lanes_finite, ir.Constant(ir.IntType(self.lanes), (1 << self.lanes) - 1)))
        return all_finite

    def status(self, all_finite):
        i32 = ir.IntType(32)
        return self.builder.select(all_finite, ir.Constant(i32, 0), ir.Constant(i32, NON_FINITE))


def _row_chunk_code(row_pass: _RowPass, sig, args):
    """The body of a chunk intrinsic: arguments ``(out, x, indices, data, target, column, start, stop[, count])``,
    a ``count`` masking the pass to that many lanes; returns the status bits."""
    target, column, start, stop, *count = (row_pass.as_intp(v, k) for v, k in zip(args[4:], sig.args[4:]))
    if count:
        row_pass.set_count(count[0])
    columns, totals = row_pass.columns(column), row_pass.zeros()
    row_pass.add_entries(start, stop, totals, columns)
    return row_pass.status(row_pass.store(target, totals, columns))


def _row_chunk_intrinsic(lanes: int, vectors: int = 1):
    """An intrinsic ``status = chunk(out, x, indices, data, target, column, start, stop)``: ``out[target, column:
    column + W] = sum_{p in [start, stop)} data[p] * x[indices[p], column: column + W]``, ``W = lanes * vectors``,
    accumulated in ``vectors`` vectors of ``lanes`` values of X's dtype from zero in entry order; returns the
    ``NON_FINITE`` bit. ``out``, ``x`` and ``data`` share one float dtype (the caller checks).
    Several vectors per pass keep several independent add chains in flight: one vector's sum is a chain of
    dependent adds, one per entry, which bounds a 16-wide pass at the add's latency."""

    @intrinsic
    def row_chunk(typingctx, out, x, indices, data, target, column, start, stop):
        def codegen(context, builder, sig, args):
            return _row_chunk_code(_RowPass(context, builder, sig, args, lanes, vectors), sig, args)

        return types.int32(out, x, indices, data, target, column, start, stop), codegen

    return row_chunk


def _masked_chunk_intrinsic(lanes: int):
    """``_row_chunk_intrinsic(lanes)`` for the last ``count`` (<= ``lanes``) columns of a row, in one pass over its
    entries with masked loads and stores: passes of 8, 4, 2 and 1 lanes read every entry up to four times (F = 7:
    0.39-0.56x torch.sparse.mm), and a pass per lane count compiled apart quadrupled the set-up's compile time."""

    @intrinsic
    def masked_chunk(typingctx, out, x, indices, data, target, column, start, stop, count):
        def codegen(context, builder, sig, args):
            return _row_chunk_code(_RowPass(context, builder, sig, args, lanes, 1), sig, args)

        return types.int32(out, x, indices, data, target, column, start, stop, count), codegen

    return masked_chunk


_chunk64 = _row_chunk_intrinsic(16, 4)
_chunk48 = _row_chunk_intrinsic(16, 3)
_chunk32 = _row_chunk_intrinsic(16, 2)
_chunk16 = _row_chunk_intrinsic(16)
_chunk1 = _row_chunk_intrinsic(1)  # a single column (a matrix-vector product): a plain scalar, no mask
# 2-8 columns in 8 masked lanes: 12-30 % faster than in 16 (1k-100k nodes, one thread); 4 lanes gained 1-3 % more
_masked16 = _masked_chunk_intrinsic(16)
_masked8 = _masked_chunk_intrinsic(8)
MASKED_16 = -16
"""The pass width that means: the last ``count`` (9-15) columns in 16 masked lanes."""
MASKED_8 = -8
"""The pass width that means: the last ``count`` (2-8) columns in 8 masked lanes."""


@njit(**_JIT)
def _rows_pass(indptr, indices, data, x, out, out_rows, width, column, count):
    """Columns ``column: column + width`` of every row of Y, ``width`` a literal (each width its own compiled pass)
    of 64, 48, 32, 16 or 1, or ``MASKED_16`` / ``MASKED_8``: the last ``count`` columns; returns the status bits. One
    chunk kind for all rows: choosing it per row cost about 4 ns a row (1k rows, F = 16: 12 us against 8 us)."""
    literally(width)
    status = 0
    permuted = out_rows.shape[0] > 0
    for i in range(indptr.shape[0] - 1):
        target = out_rows[i] if permuted else i
        start = indptr[i]
        stop = indptr[i + 1]
        if width == 64:
            status |= _chunk64(out, x, indices, data, target, column, start, stop)
        elif width == 48:
            status |= _chunk48(out, x, indices, data, target, column, start, stop)
        elif width == 32:
            status |= _chunk32(out, x, indices, data, target, column, start, stop)
        elif width == 16:
            status |= _chunk16(out, x, indices, data, target, column, start, stop)
        elif width == 1:
            status |= _chunk1(out, x, indices, data, target, column, start, stop)
        elif width == MASKED_8:
            status |= _masked8(out, x, indices, data, target, column, start, stop, count)
        else:
            status |= _masked16(out, x, indices, data, target, column, start, stop, count)
    return status


@njit(**_JIT)
def _csr_product(indptr, indices, data, x, out, out_rows):
    """Every column of Y in passes over all rows: 64 columns at a time, then one pass of 48, 32 or 16, then one of
    the last ``width % 16`` (a scalar pass for one, 8 masked lanes for 2-8, 16 for 9-15). Output row ids are
    checked once, before any pass."""
    for i in range(out_rows.shape[0]):
        if out_rows[i] < 0 or out_rows[i] >= out.shape[0]:
            return BAD_TARGET
    width = x.shape[1]
    status = 0
    column = 0
    # the pass widths are literals: each gets a _rows_pass compiled for it alone
    while column + 64 <= width:
        status |= _rows_pass(indptr, indices, data, x, out, out_rows, 64, column, 0)
        column += 64
    if width - column >= 48:
        status |= _rows_pass(indptr, indices, data, x, out, out_rows, 48, column, 0)
        column += 48
    elif width - column >= 32:
        status |= _rows_pass(indptr, indices, data, x, out, out_rows, 32, column, 0)
        column += 32
    elif width - column >= 16:
        status |= _rows_pass(indptr, indices, data, x, out, out_rows, 16, column, 0)
        column += 16
    if column + 1 == width:
        status |= _rows_pass(indptr, indices, data, x, out, out_rows, 1, column, 1)
    elif column + 8 >= width > column:
        status |= _rows_pass(indptr, indices, data, x, out, out_rows, MASKED_8, column, width - column)
    elif column < width:
        status |= _rows_pass(indptr, indices, data, x, out, out_rows, MASKED_16, column, width - column)
    return status


_EMPTY_ROWS = np.empty(0, dtype=np.int64)
_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def csr_product(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, x: np.ndarray,
                out: np.ndarray | None = None, out_rows: np.ndarray | None = None) -> tuple[np.ndarray, bool]:
    """``(out, finite)``: ``out[out_rows[i]] = (CSR @ x)[i]`` (``out_rows`` None: in row order) and whether every
    value written is finite. ``indptr``/``indices`` int32 or int64 (``indptr`` may be a slice of a larger CSR's:
    its values are positions in ``indices``), ``x`` float32 or float64 C-contiguous ``[M, F]``, ``data [nnz]`` of
    x's dtype; ``out`` C-contiguous ``[*, F]`` of x's dtype (None: a new ``[N, F]`` array), ``out_rows`` int64
    ``[N]``, the output row of each CSR row (rows of ``out`` that none names are left as they were). Raises
    ``IndexError`` if a column id is not below M or an output row id not below ``out``'s rows, ``ValueError`` if
    ``indptr`` decreases or runs past ``indices`` (:func:`check_csr_ids`, before the kernel reads anything)."""
    if x.dtype not in _FLOAT_DTYPES or data.dtype != x.dtype or x.ndim != 2 or not x.flags.c_contiguous:
        raise TypeError(f"csr_product takes a C-contiguous float32 or float64 x [M, F] and data of its dtype, got "
                        f"data {data.dtype}, x {x.dtype} {x.shape}")
    rows = indptr.shape[0] - 1
    if data.shape != indices.shape:
        raise ValueError(f"CSR arrays disagree: {indices.shape[0]} column ids, {data.shape[0]} values")
    check_csr_ids(indptr, indices, x.shape[0])
    if out is None:
        out = np.empty((rows, x.shape[1]), dtype=x.dtype)
    elif out.shape[1:] != x.shape[1:] or out.dtype != x.dtype or not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous {x.dtype} [*, {x.shape[1]}], got {out.dtype} {out.shape}")
    if out_rows is None and out.shape[0] != rows:
        raise ValueError(f"out must have the CSR's {rows} rows when out_rows is None, got {out.shape[0]}")
    if out_rows is not None and out_rows.shape != (rows,):
        raise ValueError(f"out_rows must name one output row per CSR row ({rows}), got shape {out_rows.shape}")
    return out, csr_product_into(indptr, indices, data, x, out, _EMPTY_ROWS if out_rows is None else out_rows)


def check_csr_ids(indptr: np.ndarray, indices: np.ndarray, num_x_rows: int,
                  names: tuple[str, str] = ("indptr", "indices")) -> None:
    """What the kernel trusts: ``indptr`` (1-D, at least one value) non-decreasing from at least 0 to at most
    ``len(indices)``, and every column id it covers (``indices[indptr[0]:indptr[-1]]``) in ``[0, num_x_rows)``.
    Raises ``ValueError`` (``indptr``) or ``IndexError`` (an id) saying which, by the caller's ``names`` of the two
    arrays; one NumPy pass over each array."""
    pointers, ids = names
    if indptr.ndim != 1 or indptr.shape[0] < 1 or indices.ndim != 1:
        raise ValueError(f"CSR arrays disagree: {pointers} must be 1-D with at least one value and {ids} 1-D, got "
                         f"shapes {indptr.shape} and {indices.shape}")
    first, last = int(indptr[0]), int(indptr[-1])
    if first < 0 or last > indices.shape[0] or np.any(indptr[1:] < indptr[:-1]):
        raise ValueError(f"CSR arrays disagree: {pointers} must rise from >= 0 to <= {indices.shape[0]} (the column "
                         f"ids) without decreasing; it runs from {first} to {last}")
    if last > first:
        covered = indices[first:last]
        low, high = int(covered.min()), int(covered.max())
        if low < 0 or high >= num_x_rows:
            raise IndexError(f"a column id of the CSR is outside X's {num_x_rows} rows (ids run from {low} to "
                             f"{high}): {ids} must lie in [0, {num_x_rows})")


def csr_product_into(indptr, indices, data, x, out, out_rows) -> bool:
    """:func:`csr_product` into ``out`` without its argument checks, for operands the caller built and checked
    (``out_rows`` an empty int64 array for row order): column ids are **not** checked (module docstring; what
    :func:`check_csr_ids` proves). Returns whether every value written is finite. Each check skipped is ~0.3 us,
    against products of 5-30 us on the smallest graphs."""
    status = _csr_product(indptr, indices, data, x, out, out_rows)
    if status & BAD_TARGET:
        raise IndexError(f"an out_rows id is outside out's {out.shape[0]} rows")
    return not status & NON_FINITE


def unread_rows(indices: np.ndarray, num_rows: int) -> np.ndarray:
    """The rows of X (int64 ids below ``num_rows``) that no column id in ``indices`` reads.

    A product reads every row some entry names, and a NaN or infinity it reads reaches the output (NaN propagates;
    ``v * inf`` is infinite or, for ``v = 0``, NaN; an infinity plus a finite value or another infinity stays
    infinite or becomes NaN), so a finite output proves those rows finite and the rest of X is these rows."""
    counts = np.bincount(indices, minlength=num_rows) if indices.size else np.zeros(num_rows, dtype=np.int64)
    return np.flatnonzero(counts == 0)


def compile_products() -> float:
    """Compile :func:`csr_product` for every operand type the cpu backend passes (float32/float64 X, int32/int64
    column ids), or load it from Numba's cache beside this module; returns the seconds it took. ``scripts/setup.sh``
    calls this once, so that ``dste run`` and the test workers find it cached."""
    started = time.perf_counter()
    for index_dtype in (np.int32, np.int64):
        indptr = np.array([0, 1, 1], dtype=index_dtype)
        indices = np.zeros(1, dtype=index_dtype)
        for dtype in _FLOAT_DTYPES:
            for width in (127, 32, 17):  # passes of 64, 48 and the 15-column tail; of 32; of 16 and 1
                csr_product(indptr, indices, np.ones(1, dtype=dtype), np.ones((1, width), dtype=dtype))
    return time.perf_counter() - started
