"""Data movement and layout ``nl`` functions: load/store, copy, transpose, matmul, broadcast, where, gather.

Each issues the ISA instruction its docstring or the release notes name: ``nl.load`` /
``nl.store`` / ``nl.load_transpose2d`` a ``nisa.dma_copy``; ``nl.copy`` a VectorE
``nisa.tensor_copy`` (NKI 0.6 release notes); ``nl.transpose`` a TensorE ``nisa.nc_transpose``
into PSUM; ``nl.matmul`` one ``nisa.nc_matmul`` into PSUM; ``nl.where`` a ``tensor_copy_predicated``.
"""

import numpy as np

from . import dtypes as dt
from . import isa, ops
from .lang_common import emulate, hbm_tensor, is_tile, new_tile, on_chip_tile, result_dtype
from .rules_language import violate
from .tensor import NkiTensor


def load(src, dtype=None):
    """A new SBUF tile holding ``src`` (an HBM tensor), converted to ``dtype`` by the DMA."""
    hbm_tensor("load", "src", src, "nl.load.src-hbm")
    tile = new_tile(src.shape, result_dtype(dtype, src.dtype), "load")
    isa.dma_copy(dst=tile, src=src)
    return tile


def store(dst, value):
    """Write the SBUF tile ``value`` into the HBM tensor ``dst``."""
    hbm_tensor("store", "dst", dst, "nl.store.dst-hbm")
    if not isinstance(value, NkiTensor) or value.buffer != "sbuf":
        where = value.buffer if isinstance(value, NkiTensor) else type(value).__name__
        violate("nl.store.dst-hbm", f"nl.store: value must be an SBUF tile, got {where}")
    isa.dma_copy(dst=dst, src=value)


def load_transpose2d(src, dtype=None):
    """A new SBUF tile holding the 2-D HBM tensor ``src`` transposed (one DMA with a transposed pattern)."""
    hbm_tensor("load_transpose2d", "src", src, "nl.load.src-hbm")
    if src.ndim != 2:
        violate("nl.load.src-hbm", f"nl.load_transpose2d: src must be 2-D, got shape {src.shape}")
    tile = new_tile(src.shape[::-1], result_dtype(dtype, src.dtype), "load_transpose2d")
    swapped = src._derive(src.shape[::-1], src._byte_strides[::-1], src._byte_offset, what="load_transpose2d")
    isa.dma_copy(dst=tile, src=swapped)
    return tile


def copy(op, x, dtype=None):
    """A new SBUF tile with the values of the SBUF/PSUM tile ``x`` (VectorE tensor_copy)."""
    if not isinstance(x, NkiTensor) or x.buffer not in ("sbuf", "psum"):
        where = x.buffer if isinstance(x, NkiTensor) else type(x).__name__
        violate("nl.copy.on-chip", f"nl.copy: x must be an SBUF or PSUM tile, got {where}")
    out = new_tile(x.shape, result_dtype(dtype, x.dtype), "copy")
    isa.tensor_copy(dst=out, src=x, engine=isa.engine.vector)
    return out


def transpose(x, dtype=None):
    """A new PSUM tile ``x.T`` of the 2-D tile ``x`` (TensorE transpose in x's dtype; another ``dtype`` is a
    VectorE copy after it). On NeuronCore-v2, whose TensorE transposes write float32 (rule nc_transpose.tensor_v2),
    a tile of a narrower float dtype is transposed as a float32 copy (exact) and copied back to its dtype."""
    on_chip_tile("transpose", "x", x)
    if x.ndim != 2:
        violate("nl.transpose.2d", f"nl.transpose: x must be 2-D, got shape {x.shape}")
    shape = (x.shape[1], x.shape[0])
    out_dtype = result_dtype(dtype, x.dtype)
    data = x
    engine = isa.engine.tensor
    if isa.get_nc_version() is isa.nc_version.gen2 and x.dtype != dt.float32:
        # nl.transpose states no dtype limit (language L2183-2208) and nc_transpose takes "any valid NKI data type"
        # (isa L850-851). assumption: on NeuronCore-v2 an integer tile of at most [32, 32] is transposed on VectorE
        # (bit-exact, its dtype kept); a larger one whose values fp32 holds exactly (8/16-bit ints) goes through an
        # fp32 copy as floats do; a larger int32/uint32 tile stays refused (no exact route is documented).
        if not dt.is_float(x.dtype) and x.shape[0] <= 32 and x.shape[1] <= 32:
            engine = isa.engine.vector
        elif dt.is_float(x.dtype) or x.dtype.itemsize <= 2:
            data = new_tile(x.shape, dt.float32, "transpose")
            isa.tensor_copy(dst=data, src=x, engine=isa.engine.vector)
    transposed = new_tile(shape, data.dtype, "transpose", buffer="psum")
    isa.nc_transpose(dst=transposed, data=data, engine=engine)
    if out_dtype == transposed.dtype:
        return transposed
    out = new_tile(shape, out_dtype, "transpose", buffer="psum")
    isa.tensor_copy(dst=out, src=transposed, engine=isa.engine.vector)
    return out


def matmul(x, y, transpose_x=False):
    """``x.T @ y`` into a new fp32 PSUM tile (x: [K, M], y: [K, N] in SBUF); transpose_x=True is required."""
    if transpose_x is not True:
        violate("nl.matmul.transpose-x", "nl.matmul(x, y) without transpose_x=True is not supported; lay x out "
                                         "as [K, M] and pass transpose_x=True")
    on_chip_tile("matmul", "x", x)
    on_chip_tile("matmul", "y", y)
    out = new_tile((x.free_size, y.free_size), dt.float32, "matmul", buffer="psum")
    isa.nc_matmul(dst=out, stationary=x, moving=y, accumulate=False)
    return out


def broadcast_to(x, shape, dtype=None):
    """A new SBUF tile of ``shape`` repeating the size-1 dims of the SBUF/PSUM tile ``x``.

    Free dims repeat through a stride-0 view and one VectorE tensor_copy; a repeated partition dim
    needs data moved across partitions, which the simulator issues as one DMA from the stride-0
    view (assumption: the compiler's own lowering is not documented).
    """
    on_chip_tile("broadcast_to", "x", x)
    shape = tuple(int(s) for s in shape)
    out_dtype = result_dtype(dtype, x.dtype)
    if len(shape) != x.ndim or any(n != m and n != 1 for n, m in zip(x.shape, shape)):
        violate("nl.broadcast_to.rank", f"nl.broadcast_to: cannot broadcast {x.shape} to {shape} (same rank; each "
                                        "dim equal or from 1)")
    if shape == x.shape and out_dtype == x.dtype:
        return x
    view = x
    for d, (n, m) in enumerate(zip(x.shape, shape)):
        if n != m:
            view = view._broadcast_unchecked(d, m)
    out = new_tile(shape, out_dtype, "broadcast_to")
    if shape[0] != x.shape[0]:
        isa.dma_copy(dst=out, src=view)
    else:
        isa.tensor_copy(dst=out, src=view)
    return out


def expand_dims(x, axis):
    """A view of ``x`` with a size-1 dim inserted at ``axis`` (NkiTensor.expand_dim's rules)."""
    if not isinstance(x, NkiTensor):
        violate("nl.elementwise.on-chip", f"nl.expand_dims: x must be a tile, got {type(x).__name__}")
    d = x._dim(axis, "expand_dim", extra=1)
    x._keeps_partition(d, "view.expand_dim.partition", f"nl.expand_dims({x.name!r}, 0): cannot insert before the "
                                                       "partition dim of an on-chip tensor")
    return x._expand_unchecked(d)


def where(condition, x, y, dtype=None):
    """``condition ? x : y`` element-wise; condition holds 1.0 / 0.0. x and y are tiles or numbers."""
    on_chip_tile("where", "condition", condition)
    shape = condition.shape
    tiles = [v for v in (x, y) if is_tile(v)]
    for role, value in (("x", x), ("y", y)):
        if is_tile(value):
            on_chip_tile("where", role, value)
            if value.shape != shape:
                violate("nl.where.condition", f"nl.where: {role} {value.shape} and condition {shape} differ in shape")
    out = new_tile(shape, result_dtype(dtype, tiles[0].dtype if tiles else condition.dtype), "where")
    _fill("where", out, y)
    predicate = new_tile(shape, dt.uint8, "where")
    isa.tensor_scalar(dst=predicate, data=condition, op0=ops.not_equal, operand0=0.0)
    if is_tile(x):
        source = x
    else:
        source = new_tile(shape, out.dtype, "where")
        _fill("where", source, x)
    isa.tensor_copy_predicated(dst=out, src=source, predicate=predicate)
    return out


def _fill(function, out, value):
    if is_tile(value):
        isa.tensor_copy(dst=out, src=value)
    else:
        isa.memset(dst=out, value=int(value) if dt.is_int(out.dtype) else float(value))


def gather_flattened(data, indices, axis=0, dtype=None):
    """``out[p, i] = data[p].flatten()[indices[p, i]]``: a gather inside each partition (GpSimd)."""
    on_chip_tile("gather_flattened", "data", data)
    on_chip_tile("gather_flattened", "indices", indices)
    if axis != 0:
        raise NotImplementedError(f"nl.gather_flattened(axis={axis}): only the documented default axis=0 is simulated")
    if not dt.is_int(indices.dtype) or indices.shape[0] != data.shape[0]:
        violate("nl.gather_flattened.indices", f"nl.gather_flattened: indices {indices.shape} {indices.dtype.name} must "
                                               f"be integers on the {data.shape[0]} partitions of data")
    out = new_tile(indices.shape, result_dtype(dtype, data.dtype), "gather_flattened")
    gather = getattr(isa, "nc_n_gather", None)
    # nl.gather_flattened states no index dtype (language L2283-2312): any integer indices are taken; nc_n_gather,
    # whose indices are uint32, runs only for uint32 ones (assumption: the compiler lowers other integer indices)
    if gather is not None and out.dtype == data.dtype and indices.dtype == dt.uint32:
        gather(dst=out, data=data, indices=indices)
        return out
    flat = data.array().reshape(data.shape[0], -1)
    idx = indices.array().reshape(indices.shape[0], -1).astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= flat.shape[1]):
        violate("nl.gather_flattened.indices", f"nl.gather_flattened: an index lies outside [0, {flat.shape[1]})")
    values = np.take_along_axis(flat, idx, axis=1)
    return emulate("gather_flattened", "gpsimd", out, dt.to_fp32(values) if out.dtype != data.dtype else values)
