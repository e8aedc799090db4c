"""The cpu backend's compiled CSR x dense product: SciPy's bits, one thread per call, and a finiteness flag.

``csr_product(indptr, indices, data, x, out, out_rows)`` computes ``out[out_rows[i]] = sum_p data[p] *
x[indices[p]]`` over the entries ``p`` of row ``i`` (``out_rows`` None: row ``i`` itself), each output value summed
in stored order from 0 in X's dtype (float32 or float64), as SciPy's ``csr_matvecs`` does, so the result equals
``csr @ x`` of a SciPy matrix of X's dtype bit for bit (and torch's CSR kernel, which sums in the same order).

Why a kernel of its own: the products ``dste.spmm`` runs on small and mid-size graphs take tens of microseconds,
and torch's CSR kernel (int64 indices, as a user builds them) left no room for the op's own finiteness check of X
(one thread, shuffled CSBM graphs of 1k-2k nodes: ``dste.spmm`` 0.87-0.92x of ``torch.sparse.mm`` at F = 16-64,
its sum over X alone 3-4 us of a 33 us call). Here each output row is a few vector registers wide
(``VECTOR_LANES`` lanes at a time, then 8, 4, 2, 1 for the rest of the width) accumulated in registers over
the row's entries, and the kernel reports whether every output value is finite, which a caller turns into the
finiteness check of X for free (:func:`unread_rows`).

Why vector code written out: Numba's loop vectorizer unrolls a width-16 loop into 16 scalar lanes (its SLP
vectorizer, which would pack them, is off by default since a miscompilation, numba#8705), so the accumulation is
emitted as LLVM vector operations (``_row_chunk``). Multiplies and adds stay separate (no contraction, no
reassociation): IEEE arithmetic in the order above, hence the bits.

Operands are trusted as ``build_encoded_csr`` makes them (``indptr`` non-decreasing, from 0 to ``len(indices)``);
a column id outside X's rows reads row 0 instead and the call raises ``IndexError``, never reading out of bounds.
Compiled on first use and cached beside this module (``scripts/setup.sh`` compiles it once, through
:func:`compile_products`).
"""

from __future__ import annotations

import time

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["VECTOR_LANES", "compile_products", "csr_product", "unread_rows"]

VECTOR_LANES = 16
"""Lanes of the widest accumulator: one AVX-512 register of float32 (two of AVX2; float64 twice as many)."""
NON_FINITE = 1
"""Status bit: an output value is NaN or infinite."""
BAD_COLUMN = 2
"""Status bit: a column id is outside X's rows."""
BAD_TARGET = 4
"""Status bit: an output row id is outside the output's rows (nothing is written there)."""

_JIT = dict(cache=True, nogil=True, boundscheck=False)


def _row_chunk_intrinsic(lanes: int):
    """An intrinsic ``status = chunk(out, x, indices, data, target, column, start, stop)``: ``out[target, column:
    column + lanes] = sum_{p in [start, stop)} data[p] * x[indices[p], column: column + lanes]``, accumulated in a
    ``lanes``-wide vector of X's dtype from zero in entry order; returns the ``NON_FINITE`` / ``BAD_COLUMN`` bits.
    ``out``, ``x`` and ``data`` share one float dtype (the caller checks)."""

    @intrinsic
    def row_chunk(typingctx, out, x, indices, data, target, column, start, stop):
        signature = types.int32(out, x, indices, data, target, column, start, stop)

        def codegen(context, builder, sig, args):
            out_type, x_type, indices_type, data_type = sig.args[:4]
            out_value, x_value, indices_value, data_value = args[:4]
            target_v, column_v, start_v, stop_v = (context.cast(builder, value, kind, types.intp)
                                                   for value, kind in zip(args[4:], sig.args[4:]))
            out_array = context.make_array(out_type)(context, builder, out_value)
            x_array = context.make_array(x_type)(context, builder, x_value)
            indices_array = context.make_array(indices_type)(context, builder, indices_value)
            data_array = context.make_array(data_type)(context, builder, data_value)
            intp = context.get_value_type(types.intp)
            vector = ir.VectorType(context.get_value_type(x_type.dtype), lanes)
            vector_pointer = vector.as_pointer()
            broadcast = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
            x_rows = builder.extract_value(x_array.shape, 0)
            total = cgutils.alloca_once_value(builder, ir.Constant(vector, [0.0] * lanes))
            bad_column = cgutils.alloca_once_value(builder, ir.Constant(ir.IntType(1), 0))
            with cgutils.for_range_slice(builder, start_v, stop_v, ir.Constant(intp, 1), intp=intp) as (entry, _):
                row = builder.load(cgutils.get_item_pointer(context, builder, indices_type, indices_array, [entry]))
                row = context.cast(builder, row, indices_type.dtype, types.intp)
                inside = builder.icmp_unsigned("<", row, x_rows)
                builder.store(builder.or_(builder.load(bad_column), builder.not_(inside)), bad_column)
                row = builder.select(inside, row, ir.Constant(intp, 0))
                scale = builder.load(cgutils.get_item_pointer(context, builder, data_type, data_array, [entry]))
                x_pointer = cgutils.get_item_pointer(context, builder, x_type, x_array, [row, column_v])
                x_values = builder.load(builder.bitcast(x_pointer, vector_pointer), align=4)
                scales = builder.shuffle_vector(
                    builder.insert_element(ir.Constant(vector, ir.Undefined), scale, ir.Constant(ir.IntType(32), 0)),
                    ir.Constant(vector, ir.Undefined), broadcast)
                builder.store(builder.fadd(builder.load(total), builder.fmul(scales, x_values)), total)
            result = builder.load(total)
            out_pointer = cgutils.get_item_pointer(context, builder, out_type, out_array, [target_v, column_v])
            builder.store(result, builder.bitcast(out_pointer, vector_pointer), align=4)
            # v - v is 0 for every finite v and NaN for NaN and +-Inf
            difference = builder.fsub(result, result)
            finite_lanes = builder.bitcast(builder.fcmp_ordered("==", difference, difference), ir.IntType(lanes))
            all_finite = builder.icmp_unsigned("==", finite_lanes, ir.Constant(ir.IntType(lanes), (1 << lanes) - 1))
            status = builder.or_(
                builder.select(all_finite, ir.Constant(ir.IntType(32), 0), ir.Constant(ir.IntType(32), NON_FINITE)),
                builder.select(builder.load(bad_column), ir.Constant(ir.IntType(32), BAD_COLUMN),
                               ir.Constant(ir.IntType(32), 0)))
            return status

        return signature, codegen

    return row_chunk


_chunk16 = _row_chunk_intrinsic(16)
_chunk8 = _row_chunk_intrinsic(8)
_chunk4 = _row_chunk_intrinsic(4)
_chunk2 = _row_chunk_intrinsic(2)
_chunk1 = _row_chunk_intrinsic(1)


@njit(**_JIT)
def _csr_product(indptr, indices, data, x, out, out_rows):
    width = x.shape[1]
    status = 0
    for i in range(indptr.shape[0] - 1):
        target = out_rows[i] if out_rows.shape[0] else i
        if target < 0 or target >= out.shape[0]:
            status |= BAD_TARGET
            continue
        start = indptr[i]
        stop = indptr[i + 1]
        column = 0
        while column + 16 <= width:
            status |= _chunk16(out, x, indices, data, target, column, start, stop)
            column += 16
        if column + 8 <= width:
            status |= _chunk8(out, x, indices, data, target, column, start, stop)
            column += 8
        if column + 4 <= width:
            status |= _chunk4(out, x, indices, data, target, column, start, stop)
            column += 4
        if column + 2 <= width:
            status |= _chunk2(out, x, indices, data, target, column, start, stop)
            column += 2
        if column < width:
            status |= _chunk1(out, x, indices, data, target, column, start, stop)
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
    ``IndexError`` if a column id is not below M or an output row id not below ``out``'s rows."""
    if x.dtype not in _FLOAT_DTYPES or data.dtype != x.dtype or x.ndim != 2 or not x.flags.c_contiguous:
        raise TypeError(f"csr_product takes a C-contiguous float32 or float64 x [M, F] and data of its dtype, got "
                        f"data {data.dtype}, x {x.dtype} {x.shape}")
    rows = indptr.shape[0] - 1
    if rows < 0 or indptr[0] < 0 or indptr[-1] > indices.shape[0] or data.shape != indices.shape:
        last = indptr[-1] if indptr.size else None
        raise ValueError(f"CSR arrays disagree: indptr of {indptr.shape[0]} values ends at {last}, "
                         f"{indices.shape[0]} column ids, {data.shape[0]} values")
    if out is None:
        out = np.empty((rows, x.shape[1]), dtype=x.dtype)
    elif out.shape[1:] != x.shape[1:] or out.dtype != x.dtype or not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous {x.dtype} [*, {x.shape[1]}], got {out.dtype} {out.shape}")
    if out_rows is None and out.shape[0] != rows:
        raise ValueError(f"out must have the CSR's {rows} rows when out_rows is None, got {out.shape[0]}")
    if out_rows is not None and out_rows.shape != (rows,):
        raise ValueError(f"out_rows must name one output row per CSR row ({rows}), got shape {out_rows.shape}")
    status = _csr_product(indptr, indices, data, x, out, _EMPTY_ROWS if out_rows is None else out_rows)
    if status & BAD_COLUMN:
        raise IndexError(f"a column id of the CSR is outside X's {x.shape[0]} rows")
    if status & BAD_TARGET:
        raise IndexError(f"an out_rows id is outside out's {out.shape[0]} rows")
    return out, not status & NON_FINITE


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
            csr_product(indptr, indices, np.ones(1, dtype=dtype), np.ones((1, 3), dtype=dtype))
    return time.perf_counter() - started
