"""``NkiTensor``: a strided view (shape, strides, offset, dtype) of a buffer's storage.

Storage is a flat byte array per allocation. A view is turned into a NumPy
array with ``np.ndarray(buffer=..., offset=..., strides=...)`` so every
instruction works on whole tiles with one NumPy operation.

On-chip (SBUF/PSUM) tensors have the partition dim first; their storage is laid
out partition-major, so the partition stride equals the per-partition element
count (which is what ``.ap`` expects as its first stride).
"""

import math

import numpy as np

from . import dtypes as dt
from .errors import ConstraintError, KernelSignatureError, OutOfBoundsError

ON_CHIP = ("sbuf", "psum")
HBM_BUFFERS = ("hbm", "shared_hbm", "private_hbm")
MAX_PARTITIONS = 128


class Storage:
    """One allocation: a flat byte array plus where it lives."""

    __slots__ = ("data", "buffer", "shape", "dtype", "name", "matmul_written", "__weakref__")

    def __init__(self, shape, dtype, buffer, name):
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.buffer = buffer
        self.name = name
        self.data = np.empty(math.prod(self.shape) * self.dtype.itemsize, dtype=np.uint8)
        # PSUM only: which elements were last written by nc_matmul (accumulate=None/True rules).
        self.matmul_written = np.zeros(math.prod(self.shape), dtype=bool) if buffer == "psum" else None

    @property
    def nbytes(self):
        return self.data.size

    @property
    def bytes_per_partition(self):
        return math.prod(self.shape[1:]) * self.dtype.itemsize

    def fill_uninitialised(self):
        """NaN for floats, 4 for integers: reads of never-written memory show up."""
        flat = self.data.view(self.dtype)
        flat[...] = np.nan if dt.is_float(self.dtype) else 4


class DynSlice:
    """``nl.ds(start, size, step=1)``: ``size`` elements from ``start``."""

    __slots__ = ("start", "size", "step")

    def __init__(self, start, size, step=1):
        self.start, self.size, self.step = int(start), int(size), int(step)
        if self.size < 0 or self.step == 0:
            raise ValueError(f"nl.ds(start={start}, size={size}, step={step}): size must be >= 0 and step != 0")

    def __repr__(self):
        return f"ds({self.start}, {self.size}, {self.step})"


class _Indirect:
    """A vector_offset access: row p of the view starts at row ``idx[p]`` of the base tensor."""

    __slots__ = ("index", "row_bytes", "n_rows")

    def __init__(self, index, row_bytes, n_rows):
        self.index, self.row_bytes, self.n_rows = index, row_bytes, n_rows


class NkiTensor:
    """A strided view of a storage. Offsets and strides are kept in bytes internally."""

    __slots__ = ("storage", "shape", "dtype", "_byte_strides", "_byte_offset", "_scalar_offset", "_indirect", "__weakref__")

    def __init__(self, storage, shape, byte_strides, byte_offset, dtype, scalar_offset=None, indirect=None):
        self.storage = storage
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self._byte_strides = tuple(int(s) for s in byte_strides)
        self._byte_offset = int(byte_offset)
        self._scalar_offset = scalar_offset  # (source, bytes per unit) resolved at use time
        self._indirect = indirect

    # -- basic properties ------------------------------------------------------------------
    @property
    def buffer(self):
        return self.storage.buffer

    @property
    def name(self):
        return self.storage.name

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def strides(self):
        """Strides in elements of ``dtype``."""
        return tuple(s // self.dtype.itemsize for s in self._byte_strides)

    @property
    def offset(self):
        """Offset from the start of storage in elements of ``dtype``."""
        return self._byte_offset // self.dtype.itemsize

    @property
    def is_on_chip(self):
        return self.buffer in ON_CHIP

    @property
    def is_indirect(self):
        return self._indirect is not None

    @property
    def size(self):
        return math.prod(self.shape)

    @property
    def free_size(self):
        """Elements per partition (on-chip) / per leading row."""
        return math.prod(self.shape[1:]) if self.ndim > 1 else 1

    @property
    def partition_start(self):
        return self._byte_offset // self.storage.bytes_per_partition if self.storage.bytes_per_partition else 0

    def __repr__(self):
        return (
            f"NkiTensor(name={self.name!r}, shape={self.shape}, dtype={self.dtype.name}, "
            f"buffer={self.buffer}, offset={self.offset}, strides={self.strides})"
        )

    def __len__(self):
        return self.shape[0]

    # -- NumPy access (simulator internals and tests) --------------------------------------
    def _resolved_offset(self):
        offset = self._byte_offset
        if self._scalar_offset is not None:
            source, unit_bytes = self._scalar_offset
            offset += _scalar_value(source) * unit_bytes
        return offset

    def array(self):
        """The NumPy view this tensor denotes (writes go to storage). Not for indirect views."""
        if self._indirect is not None:
            raise ConstraintError(
                f"tensor {self.name!r} uses vector_offset (indirect access), which only nisa.dma_copy supports"
            )
        offset = self._resolved_offset()
        _check_extent(self, offset)
        return np.ndarray(self.shape, self.dtype, buffer=self.storage.data, offset=offset, strides=self._byte_strides)

    def numpy(self):
        """A copy of the values (simulator-only helper, e.g. for tests)."""
        return np.array(self.array())

    def element_offsets(self):
        """Byte offset of each element (for indirect gathers and overlap checks)."""
        offs = np.full(self.shape, self._resolved_offset(), dtype=np.int64)
        for axis, (n, stride) in enumerate(zip(self.shape, self._byte_strides)):
            shape = [1] * self.ndim
            shape[axis] = n
            offs = offs + (np.arange(n, dtype=np.int64) * stride).reshape(shape)
        return offs

    # -- views -----------------------------------------------------------------------------
    def _derive(self, shape, byte_strides, byte_offset, dtype=None):
        if self._indirect is not None:
            raise ConstraintError(f"cannot take a view of the indirect access on {self.name!r}")
        view = NkiTensor(self.storage, shape, byte_strides, byte_offset, dtype or self.dtype, self._scalar_offset)
        if view.is_on_chip and view.ndim < 2:
            raise ConstraintError(f"on-chip tensor {self.name!r} views must stay at least 2-D (got shape {view.shape})")
        return view

    def __getitem__(self, key):
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            i = [k is Ellipsis for k in key].index(True)
            fill = self.ndim - (len(key) - 1)
            key = key[:i] + (slice(None),) * fill + key[i + 1:]
        if len(key) > self.ndim:
            raise OutOfBoundsError(f"too many indices ({len(key)}) for {self.name!r} of shape {self.shape}")
        key = key + (slice(None),) * (self.ndim - len(key))
        keep_int_dims = self.is_on_chip and sum(not _is_int(k) for k in key) < 2
        shape, strides, offset = [], [], self._byte_offset
        for axis, (k, n, stride) in enumerate(zip(key, self.shape, self._byte_strides)):
            if _is_int(k):
                i = int(k)
                if i < 0:
                    i += n
                if not 0 <= i < n:
                    raise OutOfBoundsError(f"index {int(k)} out of range [0, {n}) on axis {axis} of {self.name!r} {self.shape}")
                offset += i * stride
                if keep_int_dims:
                    shape.append(1)
                    strides.append(stride)
                continue
            start, size, step = _slice_params(k, n, axis, self)
            offset += start * stride
            shape.append(size)
            strides.append(stride * step)
        return self._derive(shape, strides, offset)

    def __setitem__(self, key, value):
        raise KernelSignatureError(
            "assigning into a tensor is not an NKI operation; write it with an instruction, e.g. "
            "nisa.tensor_copy(dst=t[...], src=value) or nisa.dma_copy(dst=t[...], src=value)"
        )

    def reshape(self, shape):
        shape = tuple(int(s) for s in (shape if isinstance(shape, (tuple, list)) else (shape,)))
        if math.prod(shape) != self.size:
            raise ConstraintError(f"reshape of {self.name!r} from {self.shape} to {shape} changes the element count")
        if not self._is_contiguous():
            raise ConstraintError(f"reshape of {self.name!r}: only contiguous views can be reshaped (strides {self.strides})")
        if self.is_on_chip and shape[0] != self.shape[0]:
            raise ConstraintError(
                f"reshape of on-chip tensor {self.name!r} from {self.shape} to {shape} must keep the partition dim"
            )
        if self.is_on_chip:
            part_stride = self._byte_strides[0]
            strides = [part_stride] + _contiguous_strides(shape[1:], self.dtype.itemsize)
        else:
            strides = _contiguous_strides(shape, self.dtype.itemsize)
        return self._derive(shape, strides, self._byte_offset)

    def _is_contiguous(self):
        """Contiguous within the free dims (and across rows for HBM tensors)."""
        dims = list(zip(self.shape, self._byte_strides))
        if self.is_on_chip:
            dims = dims[1:]
        expected = self.dtype.itemsize
        for n, stride in reversed(dims):
            if n != 1 and stride != expected:
                return False
            expected *= n
        return True

    def view(self, dtype):
        """Reinterpret the bits as ``dtype``; the last dim is rescaled by the itemsize ratio."""
        dtype = dt.as_dtype(dtype)
        old, new = self.dtype.itemsize, dtype.itemsize
        if old == new:
            return self._derive(self.shape, self._byte_strides, self._byte_offset, dtype)
        if self._byte_strides[-1] != old:
            raise ConstraintError(f"view({dtype.name}) of {self.name!r} needs a unit-stride last dim")
        last_bytes = self.shape[-1] * old
        if last_bytes % new or self._byte_offset % new:
            raise ConstraintError(
                f"view({dtype.name}) of {self.name!r}: last dim of {self.shape[-1]} x {old} B is not a multiple of {new} B"
            )
        shape = self.shape[:-1] + (last_bytes // new,)
        strides = self._byte_strides[:-1] + (new,)
        return self._derive(shape, strides, self._byte_offset, dtype)

    def permute(self, dims):
        dims = tuple(int(d) for d in dims)
        if sorted(dims) != list(range(self.ndim)):
            raise ConstraintError(f"permute{dims} is not a permutation of the {self.ndim} dims of {self.name!r}")
        if self.is_on_chip and dims[0] != 0:
            raise ConstraintError(f"permute of on-chip tensor {self.name!r} must keep the partition dim first")
        return self._derive([self.shape[d] for d in dims], [self._byte_strides[d] for d in dims], self._byte_offset)

    def broadcast_to(self, shape):
        """Stride-0 view: dims of size 1 (or new leading free dims) repeat."""
        shape = tuple(int(s) for s in shape)
        if len(shape) < self.ndim:
            raise ConstraintError(f"broadcast_to{shape} has fewer dims than {self.name!r} {self.shape}")
        pad = len(shape) - self.ndim
        if pad and self.is_on_chip:
            raise ConstraintError(f"broadcast_to{shape}: on-chip tensor {self.name!r} must keep its rank")
        src_shape = (1,) * pad + self.shape
        src_strides = (0,) * pad + self._byte_strides
        strides = []
        for axis, (n_old, n_new, stride) in enumerate(zip(src_shape, shape, src_strides)):
            if n_old == n_new:
                strides.append(stride)
            elif n_old == 1:
                if axis == 0 and self.is_on_chip:
                    raise ConstraintError(
                        f"broadcast of on-chip tensor {self.name!r} along the partition dim is not a free view "
                        "(copy across partitions with a matmul against ones or a DMA)"
                    )
                strides.append(0)
            else:
                raise ConstraintError(f"cannot broadcast {self.name!r} {self.shape} to {shape}")
        return self._derive(shape, strides, self._byte_offset)

    def broadcast(self, dim, size):
        """Repeat size-1 dim ``dim`` ``size`` times (stride 0)."""
        shape = list(self.shape)
        shape[dim] = size
        return self.broadcast_to(shape)

    def ap(self, pattern, offset=None, scalar_offset=None, vector_offset=None, indirect_dim=0, dtype=None):
        """Access pattern over the *base storage* (ignoring this view).

        ``pattern`` is ``[[stride, count], ...]`` in elements of ``dtype``. On SBUF/PSUM the
        first stride must be the per-partition element count. ``scalar_offset`` (int, 1x1
        SBUF tensor) adds ``s * prod(base.shape[indirect_dim+1:])`` elements; ``vector_offset``
        (an SBUF ``[P, 1]`` int32/uint32 tensor, HBM base only, ``indirect_dim=0`` only) makes
        row ``p`` start at base row ``idx[p]`` (the first pattern stride is then ignored).
        """
        storage = self.storage
        dtype = self.dtype if dtype is None else dt.as_dtype(dtype)
        item = dtype.itemsize
        try:
            pattern = [(int(s), int(c)) for s, c in pattern]
        except (TypeError, ValueError) as exc:
            raise ConstraintError(f".ap pattern must be a list of [stride, count] pairs, got {pattern!r}") from exc
        if not pattern or len(pattern) > 5:
            raise ConstraintError(f".ap pattern on {self.name!r} must have 1 to 5 [stride, count] pairs, got {len(pattern)}")
        strides = [s * item for s, _ in pattern]
        shape = [c for _, c in pattern]
        if storage.buffer in ON_CHIP:
            per_partition = storage.bytes_per_partition // item
            if pattern[0][0] != per_partition:
                raise ConstraintError(
                    f".ap on {storage.buffer} tensor {self.name!r}: the first stride must be the per-partition "
                    f"element count {per_partition}, got {pattern[0][0]}"
                )
        byte_offset = (0 if offset is None else int(offset)) * item
        if indirect_dim != 0:
            raise ConstraintError(f".ap(indirect_dim={indirect_dim}) on {self.name!r}: only indirect_dim=0 is supported")
        scalar = None
        if scalar_offset is not None:
            unit = math.prod(storage.shape[indirect_dim + 1:]) * storage.dtype.itemsize
            _scalar_value(scalar_offset)  # validate now
            scalar = (scalar_offset, unit)
        indirect = None
        if vector_offset is not None:
            if storage.buffer not in HBM_BUFFERS:
                raise ConstraintError(
                    f".ap(vector_offset=...) on {self.name!r}: indirect access needs an HBM base tensor, not {storage.buffer}"
                )
            _check_index_tensor(vector_offset, shape[0], self.name)
            row_bytes = math.prod(storage.shape[1:]) * storage.dtype.itemsize
            indirect = _Indirect(vector_offset, row_bytes, storage.shape[0])
            strides[0] = 0
        view = NkiTensor(storage, shape, strides, byte_offset, dtype, scalar, indirect)
        if indirect is None and scalar is None:
            _check_extent(view, byte_offset)
        return view


def _is_int(k):
    return isinstance(k, (int, np.integer)) and not isinstance(k, bool)


def _slice_params(k, n, axis, tensor):
    if isinstance(k, DynSlice):
        start, size, step = k.start, k.size, k.step
        if size and not (0 <= start < n and 0 <= start + (size - 1) * step < n):
            raise OutOfBoundsError(
                f"{k!r} out of range [0, {n}) on axis {axis} of {tensor.name!r} {tensor.shape}"
            )
        return start, size, step
    if isinstance(k, slice):
        step = 1 if k.step is None else int(k.step)
        if step <= 0:
            raise ConstraintError(f"slice step must be positive, got {step} on axis {axis} of {tensor.name!r}")
        start = 0 if k.start is None else int(k.start)
        stop = n if k.stop is None else int(k.stop)
        if start < 0:
            start += n
        if stop < 0:
            stop += n
        if not (0 <= start <= n and 0 <= stop <= n):
            raise OutOfBoundsError(
                f"slice {start}:{stop} out of range [0, {n}] on axis {axis} of {tensor.name!r} {tensor.shape}"
            )
        size = max(0, (stop - start + step - 1) // step)
        return start, size, step
    raise KernelSignatureError(f"unsupported index {k!r} on axis {axis} of {tensor.name!r}: use ints, slices or nl.ds")


def _contiguous_strides(shape, itemsize):
    strides, acc = [], itemsize
    for n in reversed(shape):
        strides.append(acc)
        acc *= n
    return list(reversed(strides))


def _check_extent(view, byte_offset):
    if view.size == 0:
        return
    lo = hi = byte_offset
    for n, s in zip(view.shape, view._byte_strides):
        if s >= 0:
            hi += (n - 1) * s
        else:
            lo += (n - 1) * s
    if lo < 0 or hi + view.dtype.itemsize > view.storage.nbytes:
        raise OutOfBoundsError(
            f"view of {view.name!r} (shape {view.shape}, offset {byte_offset // view.dtype.itemsize}) reaches "
            f"outside its {view.storage.nbytes} B storage"
        )


def _check_index_tensor(index, rows, name):
    if not isinstance(index, NkiTensor):
        raise ConstraintError(f".ap(vector_offset=...) on {name!r} needs an SBUF NkiTensor of indices, got {type(index).__name__}")
    if index.buffer != "sbuf":
        raise ConstraintError(f".ap(vector_offset=...) on {name!r}: the index tensor must be in SBUF, not {index.buffer}")
    if index.dtype not in (dt.int32, dt.uint32):
        raise ConstraintError(f".ap(vector_offset=...) on {name!r}: index dtype must be int32 or uint32, got {index.dtype.name}")
    if index.shape != (rows, 1):
        raise ConstraintError(f".ap(vector_offset=...) on {name!r}: index shape must be ({rows}, 1), got {index.shape}")


def _scalar_value(source):
    """An int scalar offset from a Python int or a 1x1 tensor."""
    if _is_int(source):
        return int(source)
    if isinstance(source, NkiTensor):
        if source.size != 1:
            raise ConstraintError(f"scalar_offset tensor {source.name!r} must hold one element, shape is {source.shape}")
        if not dt.is_int(source.dtype):
            raise ConstraintError(f"scalar_offset tensor {source.name!r} must be an integer dtype, got {source.dtype.name}")
        return int(source.array().reshape(-1)[0])
    value = getattr(source, "value", None)
    if _is_int(value):
        return int(value)
    raise ConstraintError(f"scalar_offset must be an int or a 1x1 integer tensor, got {type(source).__name__}")


def allocate(shape, dtype, buffer, name="", fill=True):
    """A new tensor over fresh storage (contiguous, partition-major)."""
    from . import runtime

    shape = tuple(int(s) for s in (shape if isinstance(shape, (tuple, list)) else (shape,)))
    dtype = dt.as_dtype(dtype)
    if any(s <= 0 for s in shape):
        raise ConstraintError(f"allocation {name!r}: every dim must be positive, got shape {shape}")
    if buffer in ON_CHIP:
        if len(shape) < 2:
            raise ConstraintError(f"{buffer} allocation {name!r} needs a partition dim and a free dim, got shape {shape}")
        if shape[0] > MAX_PARTITIONS:
            raise ConstraintError(
                f"{buffer} allocation {name!r}: partition dim {shape[0]} exceeds the {MAX_PARTITIONS} partitions (pmax)"
            )
    context = runtime.current()
    storage = Storage(shape, dtype, buffer, name or f"{buffer}_tensor")
    context.memory.allocate(storage)
    if fill:
        storage.fill_uninitialised()
    return NkiTensor(storage, shape, _contiguous_strides(shape, dtype.itemsize), 0, dtype)


def from_numpy(array, buffer="hbm", name="input"):
    """An HBM tensor holding a copy of ``array``."""
    array = np.ascontiguousarray(array)
    dtype = dt.as_dtype(array.dtype)
    tensor = allocate(array.shape if array.ndim else (1,), dtype, buffer, name, fill=False)
    tensor.array()[...] = array.astype(dtype, copy=False).reshape(tensor.shape)
    return tensor
