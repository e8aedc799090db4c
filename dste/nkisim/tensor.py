"""``NkiTensor``: a strided view (shape, strides, offset, dtype) of a buffer's storage.

Storage is a flat byte array per allocation. A view is turned into a NumPy
array with ``np.ndarray(buffer=..., offset=..., strides=...)`` so every
instruction works on whole tiles with one NumPy operation.

On-chip (SBUF/PSUM) tensors have the partition dim first; their storage is laid
out partition-major, so the partition stride equals the per-partition element
count (which is what ``.ap`` expects as its first stride).
"""

import inspect
import math

import numpy as np

from . import dtypes as dt
from .errors import ConstraintError, KernelSignatureError, OutOfBoundsError

ON_CHIP = ("sbuf", "psum")
HBM_BUFFERS = ("shared_hbm", "private_hbm")
MAX_PARTITIONS = 128


class Storage:
    """One allocation: a flat byte array plus where it lives."""

    __slots__ = ("data", "buffer", "shape", "dtype", "name", "matmul_written", "body_ended", "partition_base", "memory_use",
                 "__weakref__")

    def __init__(self, shape, dtype, buffer, name):
        # the physical partition lane of the allocation's partition 0: nl.ndarray(address=(partition_offset, ...))
        # places it there ("the partition offset corresponds to a physical partition lane", nki/migration/index.rst)
        self.partition_base = 0
        # (memory.MemoryTracker, key) of an on-chip tile left to the compiler: reads and writes mark it live
        self.memory_use = None
        # True once the fori_loop / while_loop body iteration that declared it has returned (rule
        # nl.loop.body-tensor-scope): an instruction may no longer name it
        self.body_ended = False
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
        """Every byte 0xFF, so reads of never-written memory show up: NaN through any float view of the bytes
        (fp32, bf16, fp16, fp8; also an integer buffer read as floats), -1 or the maximum through integer views."""
        self.data[...] = UNINITIALISED_BYTE


# Hardware leaves a new tensor's memory undefined (language guide: "ndarray does not initialize memory").
# All-ones bytes are NaN in every float format DSTE reads, whatever dtype the tensor was declared with.
UNINITIALISED_BYTE = 0xFF


class DynSlice:
    """``nl.ds(start, size, step=1)``: ``size`` elements from ``start``."""

    __slots__ = ("start", "size", "step")

    def __init__(self, start, size, step=1):
        # ``start`` may be a register (a loop index): language L200-209, ``sb[nl.ds(i, 8), :]  # dynamic slice``
        self.start = start if _is_register(start) else int(start)
        self.size, self.step = int(size), int(step)
        if self.size < 0 or self.step == 0:
            raise ValueError(f"nl.ds(start={start}, size={size}, step={step}): size must be >= 0 and step != 0")

    def __repr__(self):
        return f"ds({self.start}, {self.size}, {self.step})"


class _Indirect:
    """A vector_offset access: row p of the view starts at row ``idx[p]`` of the base tensor."""

    __slots__ = ("index", "row_bytes", "n_rows")

    def __init__(self, index, row_bytes, n_rows):
        self.index, self.row_bytes, self.n_rows = index, row_bytes, n_rows


class _Answer:
    """The result of ``t.is_indirect`` / ``t.is_contiguous``: a bool that can also be called.

    The official API makes these methods: ``t.is_indirect()`` is the documented answer. Simulator
    code written against the earlier property form (``if t.is_indirect:``) keeps its meaning: for
    ``is_indirect`` the truth value says whether the view uses a *vector* offset (the only kind
    ``nisa.dma_copy`` gathers or scatters), see :attr:`NkiTensor.has_vector_offset`.
    """

    __slots__ = ("value", "truth", "query")

    def __init__(self, value, query, truth=None):
        self.value, self.query = bool(value), query
        self.truth = self.value if truth is None else bool(truth)

    def __bool__(self):
        return self.truth

    def __call__(self):
        from . import version

        version.require(f"NkiTensor.{self.query}()", introduced="0.5")
        return self.value

    def __eq__(self, other):
        return self.value == bool(other)

    def __hash__(self):
        return hash(self.value)

    def __repr__(self):
        return repr(self.value)


class _query:  # noqa: N801 - used as a decorator, like property
    """A method for the class (``inspect.signature`` sees ``(self)``), an :class:`_Answer` on instances."""

    def __init__(self, fn):
        self.fn = fn
        self.__doc__ = fn.__doc__

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, cls=None):
        if obj is None:
            return self.fn
        truth = obj._indirect is not None if self.name == "is_indirect" else None
        return _Answer(self.fn(obj), self.name, truth)


def _gated(introduced):
    """Refuse a view method when the followed NKI release predates it (release notes)."""

    def wrap(fn):
        def method(self, *args, **kwargs):
            from . import version

            version.require(f"NkiTensor.{fn.__name__}", introduced=introduced)
            return fn(self, *args, **kwargs)

        method.__name__, method.__qualname__, method.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
        method.__signature__ = inspect.signature(fn)
        method.__wrapped__ = fn
        return method

    return wrap


def _violate(rule_id, message, error=ConstraintError):
    from . import rules_language

    rules_language.violate(rule_id, message, error)


class NkiTensor:
    """A strided view of a storage (``nki.language.NkiTensor``). Offsets and strides are kept in bytes.

    Views share storage and never copy. The official view methods (``slice``, ``select``,
    ``permute``, ``broadcast``, ``expand_dim``, ``squeeze_dim``, ``reshape_dim``, ``flatten_dims``,
    ``reshape``, ``rearrange``, ``vector_select``, ``ap``, ``view``, ``indirect``) enforce the
    constraints of their docstrings (rule ids ``view.*``, see ``dste/nkisim/rules_language.py``).
    """

    __slots__ = ("storage", "shape", "dtype", "_byte_strides", "_byte_offset", "_scalar_offset", "_indirect", "__weakref__")

    def __init__(self, storage, shape, byte_strides, byte_offset, dtype, scalar_offset=None, indirect=None):
        self.storage = storage
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self._byte_strides = tuple(int(s) for s in byte_strides)
        self._byte_offset = int(byte_offset)
        self._scalar_offset = scalar_offset  # (source, bytes per unit) resolved at use time
        self._indirect = indirect

    # -- properties (official: shape, strides, offset, name, dtype, buffer, ndim, size) -------------------
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
    def size(self):
        return math.prod(self.shape)

    @property
    def is_on_chip(self):
        return self.buffer in ON_CHIP

    @property
    def free_size(self):
        """Elements per partition (on-chip) / per leading row."""
        return math.prod(self.shape[1:]) if self.ndim > 1 else 1

    @property
    def partition_start(self):
        """The physical partition lane of the view's first partition (an explicit address's lane + the view's)."""
        # a run-time scalar offset along the partition dim (``sb[nl.ds(i, n), :]``) moves it: read at use time
        offset = self._resolved_offset() if self._scalar_offset is not None else self._byte_offset
        within = offset // self.storage.bytes_per_partition if self.storage.bytes_per_partition else 0
        return self.storage.partition_base + within

    def __repr__(self):
        return (
            f"NkiTensor(name={self.name!r}, shape={self.shape}, dtype={self.dtype.name}, "
            f"buffer={self.buffer}, offset={self.offset}, strides={self.strides})"
        )

    def __len__(self):
        return self.shape[0]

    # -- queries -------------------------------------------------------------------------------------------
    @_query
    def is_contiguous(self):
        """True if the view covers storage contiguously (row-major); on-chip tensors skip the partition dim."""
        dims = list(zip(self.shape, self._byte_strides))
        if self.is_on_chip:
            dims = dims[1:]
        expected = self.dtype.itemsize
        for n, stride in reversed(dims):
            if n != 1 and stride != expected:
                return False
            expected *= n
        return True

    @_query
    def is_indirect(self):
        """True if this view uses indirect addressing (dynamic select, vector_select, scalar/vector offset)."""
        return self._dynamic()

    def _dynamic(self):
        return self._indirect is not None or self._scalar_offset is not None

    @property
    def has_vector_offset(self):
        """True for a gather/scatter view (``vector_select`` or ``.ap(vector_offset=...)``)."""
        return self._indirect is not None

    def get_pattern(self):
        """The view's access pattern ``[[stride, count], ...]`` in elements, one pair per dim."""
        return [[stride, count] for stride, count in zip(self.strides, self.shape)]

    # -- NumPy access (simulator internals and tests) ---------------------------------------------------
    def _resolved_offset(self):
        offset = self._byte_offset
        if self._scalar_offset is not None:
            source, unit_bytes = self._scalar_offset
            offset += _scalar_value(source) * unit_bytes
        return offset

    def array(self):
        """The NumPy view this tensor denotes (writes go to storage). Not for vector-offset views."""
        if self._indirect is not None:
            raise ConstraintError(
                f"tensor {self.name!r} uses vector_offset (indirect access), which only nisa.dma_copy supports"
            )
        offset = self._resolved_offset()
        _check_extent(self, offset)
        if self.storage.memory_use is not None:
            tracker, key = self.storage.memory_use
            tracker.use(key)
        return np.ndarray(self.shape, self.dtype, buffer=self.storage.data, offset=offset, strides=self._byte_strides)

    def numpy(self):
        """A copy of the values (simulator-only helper, e.g. for tests)."""
        return np.array(self.array())

    def element_offsets(self):
        """Byte offset of each element (for indirect gathers and overlap checks)."""
        # built from the innermost axis outwards, so only the last step is full size
        offs = np.asarray(self._resolved_offset(), dtype=np.int64)
        for n, stride in zip(reversed(self.shape), reversed(self._byte_strides)):
            offs = np.add.outer(np.arange(n, dtype=np.int64) * stride, offs)
        return offs

    # -- view construction -----------------------------------------------------------------------------------
    def _derive(self, shape, byte_strides, byte_offset, dtype=None, keeps_dim0=False, what="view"):
        """A view over the same storage. Views of a vector_select view must keep its indirect dim 0."""
        if self._indirect is not None and not keeps_dim0:
            _violate("view.indirect.chain", f"{what} of {self.name!r}: the indirect (vector_select) dim 0 cannot be "
                                            "changed, sliced or selected")
        view = NkiTensor(self.storage, shape, byte_strides, byte_offset, dtype or self.dtype, self._scalar_offset,
                         self._indirect)
        if view.is_on_chip and view.ndim < 2:
            _violate("view.on-chip-2d", f"{what} of on-chip tensor {self.name!r} would have shape {view.shape}")
        return view

    def _dim(self, dim, method, extra=0):
        """Normalise a (possibly negative) dim index; ``extra`` allows one past the end (insertion)."""
        n = self.ndim + extra
        d = int(dim)
        if d < 0:
            d += n
        if not 0 <= d < n:
            _violate("view.index.range", f".{method}(dim={dim}) on {self.name!r} {self.shape}: dim must be in "
                                         f"[{-n}, {n})", OutOfBoundsError)
        return d

    def _keeps_partition(self, dim_touched, rule, message):
        """On-chip tensors (and vector_select views) cannot touch dim 0."""
        if dim_touched == 0 and (self.is_on_chip or self._indirect is not None):
            _violate(rule, message)

    def __getitem__(self, key):
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            i = [k is Ellipsis for k in key].index(True)
            fill = self.ndim - (len(key) - 1)
            key = key[:i] + (slice(None),) * fill + key[i + 1:]
        if len(key) > self.ndim:
            _violate("view.index.range", f"too many indices ({len(key)}) for {self.name!r} of shape {self.shape}",
                     OutOfBoundsError)
        key = key + (slice(None),) * (self.ndim - len(key))
        key, dynamic = self._register_index(key)
        keep_dim0 = self._indirect is None or (isinstance(key[0], slice) and key[0] == slice(None))
        shape, strides, offset = [], [], self._byte_offset
        for axis, (k, n, stride) in enumerate(zip(key, self.shape, self._byte_strides)):
            if _is_int(k):
                i = int(k)
                if i < 0:
                    i += n
                if not 0 <= i < n:
                    _violate("view.index.range", f"index {int(k)} out of range [0, {n}) on axis {axis} of "
                                                 f"{self.name!r} {self.shape}", OutOfBoundsError)
                offset += i * stride
                if axis == 0 and self.is_on_chip:
                    # On-chip: an integer on the partition dim keeps a size-1 partition dim (__getitem__ docstring).
                    shape.append(1)
                    strides.append(stride)
                continue
            start, size, step = _slice_params(k, n, axis, self)
            offset += start * stride
            shape.append(size)
            strides.append(stride * step)
        if self.is_on_chip and len(shape) < 2:
            shape.append(1)
            strides.append(self.dtype.itemsize)
        view = self._derive(shape, strides, offset, keeps_dim0=keep_dim0, what="indexing")
        if dynamic is not None:
            view._scalar_offset = dynamic
        return view

    def _register_index(self, key):
        """``t[i]`` / ``t[nl.ds(i, n)]`` with ``i`` a register or loop index (about/index.rst L163-171, ``for i in
        nl.dynamic_range(lo, hi): process_tensor(t[i])``; language L200-209): the index becomes the view's run-time
        scalar offset along that axis, as ``.select(dim, i)`` / ``.ap(scalar_offset=i)`` give. One such index per
        view; the key gets 0 in its place. Returns (key, (register, bytes per unit) or None)."""
        dynamic, out = None, []
        for axis, k in enumerate(key):
            reg = k if _is_register(k) else k.start if isinstance(k, DynSlice) and _is_register(k.start) else None
            if reg is None:
                out.append(k)
                continue
            if dynamic is not None or self._dynamic():
                _violate("view.indirect.chain", f"indexing {self.name!r} with a register: one register index per view, "
                                                "on a view that is not already indirect")
            size = 1 if k is reg else k.size if k.step == 1 else (k.size - 1) * k.step + 1
            value = reg.value
            if value is not None and not isinstance(value, np.floating) and not (
                    0 <= value and value + size <= self.shape[axis]):
                _violate("view.index.range", f"register index {value} (extent {size}) out of range [0, "
                                             f"{self.shape[axis]}) on axis {axis} of {self.name!r} {self.shape}",
                         OutOfBoundsError)
            dynamic = (reg, self._byte_strides[axis])
            out.append(0 if k is reg else DynSlice(0, k.size, k.step))
        return tuple(out), dynamic

    def __setitem__(self, key, value):
        _violate("view.setitem", f"{self.name}[{key!r}] = ...: write it with an instruction, e.g. "
                                 "nisa.tensor_copy(dst=t[...], src=value) or nisa.dma_copy(dst=t[...], src=value)",
                 KernelSignatureError)

    def __getattr__(self, name):
        if name in _UNOFFICIAL_METHODS:
            _violate("view.unofficial-method", f"NkiTensor.{name} is not an NKI method; {_UNOFFICIAL_METHODS[name]}",
                     AttributeError)
        raise AttributeError(f"'NkiTensor' object has no attribute {name!r}")

    # -- official view methods ---------------------------------------------------------------------------
    @_gated("0.5")
    def permute(self, dims):
        """Reorder dims; on-chip tensors keep the partition dim first."""
        dims = tuple(int(d) for d in dims)
        if sorted(dims) != list(range(self.ndim)):
            _violate("view.permute.dims", f"permute{dims} is not a permutation of the {self.ndim} dims of {self.name!r}")
        if dims[0] != 0:
            self._keeps_partition(0, "view.permute.partition",
                                  f"permute{dims} of {self.buffer} tensor {self.name!r} must keep dim 0 first")
        return self._derive([self.shape[d] for d in dims], [self._byte_strides[d] for d in dims], self._byte_offset,
                            keeps_dim0=dims[0] == 0, what=f"permute{dims}")

    @_gated("0.5")
    def broadcast(self, dim, size):
        """Repeat size-1 dim ``dim`` ``size`` times (stride 0); never the partition dim of an on-chip tensor."""
        d = self._dim(dim, "broadcast")
        if self.shape[d] != 1:
            _violate("view.broadcast.size-one", f".broadcast({dim}, {size}) on {self.name!r} {self.shape}: "
                                                f"dim {d} has size {self.shape[d]}, not 1")
        self._keeps_partition(d, "view.broadcast.partition",
                              f".broadcast(0, {size}) on {self.buffer} tensor {self.name!r}: the partition dim cannot "
                              "be broadcast (copy across partitions with nl.broadcast_to or a matmul against ones)")
        return self._broadcast_unchecked(d, size)

    def _broadcast_unchecked(self, d, size):
        shape, strides = list(self.shape), list(self._byte_strides)
        shape[d], strides[d] = int(size), 0
        return self._derive(shape, strides, self._byte_offset, keeps_dim0=d != 0, what="broadcast")

    @_gated("0.5")
    def expand_dim(self, dim):
        """Insert a size-1 dim at ``dim`` (not 0 on chip)."""
        d = self._dim(dim, "expand_dim", extra=1)
        self._keeps_partition(d, "view.expand_dim.partition",
                              f".expand_dim(0) on {self.buffer} tensor {self.name!r}: cannot insert before the partition dim")
        return self._expand_unchecked(d)

    def _expand_unchecked(self, d):
        shape, strides = list(self.shape), list(self._byte_strides)
        inner = strides[d] * shape[d] if d < self.ndim else self.dtype.itemsize
        shape.insert(d, 1)
        strides.insert(d, inner)
        return self._derive(shape, strides, self._byte_offset, keeps_dim0=d != 0, what="expand_dim")

    @_gated("0.5")
    def squeeze_dim(self, dim):
        """Remove size-1 dim ``dim`` (not 0 on chip)."""
        d = self._dim(dim, "squeeze_dim")
        if self.shape[d] != 1:
            _violate("view.squeeze_dim.size-one", f".squeeze_dim({dim}) on {self.name!r} {self.shape}: "
                                                  f"dim {d} has size {self.shape[d]}, not 1")
        self._keeps_partition(d, "view.squeeze_dim.partition",
                              f".squeeze_dim(0) on {self.buffer} tensor {self.name!r}: the partition dim stays")
        shape, strides = list(self.shape), list(self._byte_strides)
        del shape[d], strides[d]
        return self._derive(shape, strides, self._byte_offset, keeps_dim0=d != 0, what="squeeze_dim")

    @_gated("0.5")
    def reshape_dim(self, dim, shape):
        """Split dim ``dim`` into ``shape`` (one entry may be -1)."""
        d = self._dim(dim, "reshape_dim")
        sizes = _infer_sizes(tuple(int(s) for s in shape), self.shape[d],
                             lambda: _violate("view.reshape_dim.product",
                                              f".reshape_dim({dim}, {tuple(shape)}) on {self.name!r} {self.shape}: "
                                              f"the sizes do not multiply to {self.shape[d]}"))
        if d == 0 and len(sizes) > 1 and sum(s != 1 for s in sizes) > 0 and sizes[0] != self.shape[0]:
            self._keeps_partition(0, "view.reshape_dim.partition",
                                  f".reshape_dim(0, {tuple(shape)}) on {self.buffer} tensor {self.name!r}: the "
                                  "partition dim cannot be split")
        return self._split_unchecked(d, sizes)

    def _split_unchecked(self, d, sizes):
        stride = self._byte_strides[d]
        new_strides = []
        acc = stride
        for n in reversed(sizes):
            new_strides.append(acc)
            acc *= n
        shape = list(self.shape[:d]) + list(sizes) + list(self.shape[d + 1:])
        strides = list(self._byte_strides[:d]) + list(reversed(new_strides)) + list(self._byte_strides[d + 1:])
        return self._derive(shape, strides, self._byte_offset, keeps_dim0=d != 0 or sizes[0] == self.shape[0],
                            what="reshape_dim")

    @_gated("0.5")
    def flatten_dims(self, start_dim, end_dim):
        """Merge dims ``start_dim..end_dim`` (inclusive), which must be contiguous in memory."""
        s, e = self._dim(start_dim, "flatten_dims"), self._dim(end_dim, "flatten_dims")
        if e < s:
            _violate("view.index.range", f".flatten_dims({start_dim}, {end_dim}) on {self.name!r}: end_dim < start_dim",
                     OutOfBoundsError)
        self._keeps_partition(s, "view.flatten_dims.partition",
                              f".flatten_dims({start_dim}, {end_dim}) on {self.buffer} tensor {self.name!r}: "
                              "start_dim must be > 0")
        return self._flatten_unchecked(s, e)

    def _flatten_unchecked(self, s, e):
        kept = [(n, st) for n, st in zip(self.shape[s:e + 1], self._byte_strides[s:e + 1]) if n != 1]
        for (n_outer, st_outer), (n_inner, st_inner) in zip(kept, kept[1:]):
            if st_outer != st_inner * n_inner:
                _violate("view.flatten_dims.contiguous",
                         f"flatten_dims({s}, {e}) on {self.name!r} {self.shape} strides {self.strides}: the dims are "
                         "not contiguous in memory")
        merged = math.prod(self.shape[s:e + 1])
        stride = kept[-1][1] if kept else self._byte_strides[e]
        shape = list(self.shape[:s]) + [merged] + list(self.shape[e + 1:])
        strides = list(self._byte_strides[:s]) + [stride] + list(self._byte_strides[e + 1:])
        return self._derive(shape, strides, self._byte_offset, keeps_dim0=s != 0, what="flatten_dims")

    def reshape(self, shape):
        """A view with ``shape`` (same element count; on chip the partition dim is kept); no copy."""
        shape = tuple(int(s) for s in (shape if isinstance(shape, (tuple, list)) else (shape,)))
        if math.prod(shape) != self.size or any(s < 0 for s in shape):
            _violate("view.reshape.count", f"reshape of {self.name!r} from {self.shape} to {shape} changes the element count")
        if (self.is_on_chip or self._indirect is not None) and shape[0] != self.shape[0]:
            _violate("view.reshape.partition",
                     f"reshape of {self.buffer} tensor {self.name!r} from {self.shape} to {shape} must keep shape[0]")
        if self.is_on_chip or self._indirect is not None:
            free = _nocopy_strides(self.shape[1:], self._byte_strides[1:], shape[1:], self.dtype.itemsize)
            strides = None if free is None else [self._byte_strides[0]] + free
        else:
            strides = _nocopy_strides(self.shape, self._byte_strides, shape, self.dtype.itemsize)
        if strides is None:
            _violate("view.reshape.layout", f"reshape of {self.name!r} from {self.shape} (strides {self.strides}) to "
                                            f"{shape} needs a copy: the layout cannot express it")
        return self._derive(shape, strides, self._byte_offset, keeps_dim0=True, what="reshape")

    @_gated("0.5")
    def rearrange(self, src_pattern, dst_pattern, fixed_sizes=None):
        """einops-style: split grouped src dims, permute by name, merge grouped dst dims."""
        fixed = dict(fixed_sizes or {})
        src = [tuple(p) if isinstance(p, (tuple, list)) else (p,) for p in src_pattern]
        dst = [tuple(p) if isinstance(p, (tuple, list)) else (p,) for p in dst_pattern]
        names = [n for group in src for n in group]
        if len(src) != self.ndim or sorted(names) != sorted(n for g in dst for n in g) or len(set(names)) != len(names):
            _violate("view.rearrange.pattern", f".rearrange({src_pattern!r}, {dst_pattern!r}) on {self.name!r} "
                                               f"{self.shape}: the patterns must name each of the {self.ndim} dims once")
        view = self
        position = 0
        for group, n in zip(src, self.shape):
            if len(group) > 1:
                sizes = tuple(fixed.get(name, -1) for name in group)
                sizes = _infer_sizes(sizes, n, lambda: _violate(
                    "view.rearrange.pattern", f".rearrange on {self.name!r}: sizes {dict(zip(group, sizes))} do not "
                                              f"multiply to {n}"))
                view = view.reshape_dim(position, sizes)
            position += len(group)
        order = [names.index(n) for g in dst for n in g]
        if order != list(range(len(order))):
            view = view.permute(order)
        position = 0
        for group in dst:
            if len(group) > 1:
                view = view.flatten_dims(position, position + len(group) - 1)
            position += 1
        return view

    @_gated("0.5")
    def slice(self, dim, start, end, step=1):
        """Elements ``start:end:step`` of dim ``dim`` (``0 <= start < end <= shape[dim]``, ``step >= 1``)."""
        d = self._dim(dim, "slice")
        start, end, step = int(start), int(end), int(step)
        if step < 1:
            _violate("view.slice.step", f".slice({dim}, {start}, {end}, {step}) on {self.name!r}: step must be >= 1")
        if not 0 <= start < end <= self.shape[d]:
            _violate("view.slice.range", f".slice({dim}, {start}, {end}, {step}) on {self.name!r} {self.shape}: need "
                                         f"0 <= start < end <= {self.shape[d]}", OutOfBoundsError)
        shape, strides = list(self.shape), list(self._byte_strides)
        shape[d] = (end - start + step - 1) // step
        strides[d] *= step
        return self._derive(shape, strides, self._byte_offset + start * self._byte_strides[d], keeps_dim0=d != 0,
                            what=".slice")

    @_gated("0.5")
    def select(self, dim, index):
        """Pick one element of dim ``dim`` and drop the dim; an ``NkiTensor`` index selects at run time."""
        d = self._dim(dim, "select")
        if isinstance(index, NkiTensor) or not _is_int(index):
            return self._dynamic_select(d, index)
        i = int(index)
        if not 0 <= i < self.shape[d]:
            _violate("view.select.range", f".select({dim}, {i}) on {self.name!r} {self.shape}: need 0 <= index < "
                                          f"{self.shape[d]}", OutOfBoundsError)
        self._keeps_partition(d, "view.squeeze_dim.partition",
                              f".select(0, {i}) on {self.buffer} tensor {self.name!r}: the partition dim cannot be "
                              "removed (index it with t[i:i+1] instead)")
        shape, strides = list(self.shape), list(self._byte_strides)
        offset = self._byte_offset + i * strides[d]
        del shape[d], strides[d]
        return self._derive(shape, strides, offset, keeps_dim0=d != 0, what=".select")

    def _dynamic_select(self, d, index):
        if self._dynamic():
            _violate("view.indirect.chain", f".select({d}, <tensor>) on {self.name!r}: the view is already indirect")
        if self.is_on_chip and d == 0:
            _violate("view.select.partition", f".select(0, <tensor>) on {self.buffer} tensor {self.name!r}")
        _scalar_value(index)  # validates a 1x1 integer tensor or register
        shape, strides = list(self.shape), list(self._byte_strides)
        unit = strides[d]
        del shape[d], strides[d]
        view = self._derive(shape, strides, self._byte_offset, what=".select")
        view._scalar_offset = (index, unit)
        return view

    @_gated("0.5")
    def vector_select(self, dim, vector_offset):
        """Row ``p`` of the result starts at row ``vector_offset[p]`` of dim 0 (HBM only; a gather view)."""
        if int(dim) != 0:
            _violate("view.vector_select.dim", f".vector_select({dim}, ...) on {self.name!r}: dim must be 0")
        if self.buffer not in HBM_BUFFERS:
            _violate("view.vector_select.hbm", f".vector_select on {self.buffer} tensor {self.name!r}: HBM tensors only")
        if self._dynamic():
            _violate("view.indirect.chain", f".vector_select on {self.name!r}: the view is already indirect")
        rows = vector_offset.shape[0] if isinstance(vector_offset, NkiTensor) else None
        _check_index_tensor(vector_offset, rows, self.name, "view.vector_select.index", ".vector_select")
        indirect = _Indirect(vector_offset, self._byte_strides[0], self.shape[0])
        return NkiTensor(self.storage, (rows,) + self.shape[1:], (0,) + self._byte_strides[1:], self._byte_offset,
                         self.dtype, None, indirect)

    @_gated("0.5")
    def indirect(self, index, num_elem=None):
        """Tensor indirection for compute operands: NeuronCore-v4 (trn3) only, refused on trn1/trn2."""
        from . import runtime

        _violate("view.indirect.trn3-only", f"{self.name!r}.indirect(...) on {runtime.current().target}: tensor "
                                            "indirection exists on NeuronCore-v4 (trn3) and later")

    def view(self, dtype):
        """Reinterpret the bits as ``dtype``; the last dim is rescaled by the itemsize ratio."""
        dtype = dt.as_dtype(dtype)
        if self._dynamic():
            _violate("view.view.indirect", f".view({dtype.name}) on indirect view {self.name!r}")
        old, new = self.dtype.itemsize, dtype.itemsize
        if old == new:
            return self._derive(self.shape, self._byte_strides, self._byte_offset, dtype, what=".view")
        if self._byte_strides[-1] != old and self.shape[-1] != 1:
            _violate("view.view.contiguous", f".view({dtype.name}) of {self.name!r}: the last dim has stride "
                                             f"{self.strides[-1]}, not 1")
        last_bytes = self.shape[-1] * old
        if last_bytes % new or self._byte_offset % new:
            _violate("view.view.divisible", f".view({dtype.name}) of {self.name!r}: last dim of {self.shape[-1]} x "
                                            f"{old} B is not a multiple of {new} B")
        shape = self.shape[:-1] + (last_bytes // new,)
        strides = self._byte_strides[:-1] + (new,)
        return self._derive(shape, strides, self._byte_offset, dtype, what=".view")

    # the stub's ``reinterpret_cast = ...`` next to ``view`` (language L544; release notes 0.5 name the method)
    reinterpret_cast = view

    def ap(self, pattern, offset=None, scalar_offset=None, vector_offset=None, indirect_dim=0, dtype=None):
        """Explicit access pattern ``[[stride, count], ...]`` (elements of ``dtype``) over this view's storage.

        ``offset`` is added to the view's storage offset (``None``: the view's offset unchanged).
        On SBUF/PSUM the first stride is the partition step, the per-partition element count.
        ``scalar_offset`` (int, register or 1x1 integer tensor) adds ``s * strides[indirect_dim]``
        elements; ``vector_offset`` (an SBUF ``[P, 1]`` int32/uint32 tile, HBM base only,
        ``indirect_dim=0`` only) makes row ``p`` start at row ``idx[p]`` of the base tensor.
        """
        storage = self.storage
        dtype = self.dtype if dtype is None else dt.as_dtype(dtype)
        item = dtype.itemsize
        try:
            pattern = [(int(s), int(c)) for s, c in pattern]
        except (TypeError, ValueError):
            _violate("view.ap.pattern", f".ap pattern on {self.name!r} must be a list of [stride, count] pairs, got {pattern!r}")
        if not pattern or len(pattern) > 5:
            _violate("view.ap.pattern", f".ap pattern on {self.name!r} must have 1 to 5 [stride, count] pairs, got {len(pattern)}")
        strides = [s * item for s, _ in pattern]
        shape = [c for _, c in pattern]
        if storage.buffer in ON_CHIP:
            per_partition = storage.bytes_per_partition // item
            if pattern[0][0] != per_partition and pattern[0][1] > 1:
                _violate("view.ap.pattern", f".ap on {storage.buffer} tensor {self.name!r}: the first stride must be the "
                                            f"per-partition element count {per_partition}, got {pattern[0][0]}")
        byte_offset = self._byte_offset + (0 if offset is None else int(offset) * item)
        if self._dynamic() and (scalar_offset is not None or vector_offset is not None):
            _violate("view.indirect.chain", f".ap with a dynamic offset on {self.name!r}: the view is already indirect")
        scalar = self._scalar_offset
        if scalar_offset is not None:
            # "the dimension is relative to the base tensor, not relative to the pattern specified" (nki-aps.rst);
            # "indirect_dim: dimension in self.shape" (NkiTensor.ap): AWS's attention_block_tkg offsets dim 2 of a
            # 3-D cache under a 2-entry pattern
            if not 0 <= int(indirect_dim) < max(len(self.shape), 1):
                _violate("view.ap.pattern", f".ap(indirect_dim={indirect_dim}) on {self.name!r}: the tensor has "
                                            f"{len(self.shape)} dims (shape {self.shape})", OutOfBoundsError)
            _scalar_value(scalar_offset)  # validate now
            scalar = (scalar_offset, self._indirect_unit(int(indirect_dim)))
        indirect = None
        if vector_offset is not None:
            if storage.buffer not in HBM_BUFFERS:
                _violate("view.ap.vector-offset", f".ap(vector_offset=...) on {self.name!r}: indirect access needs an "
                                                  f"HBM base tensor, not {storage.buffer}")
            if indirect_dim != 0:
                _violate("view.ap.vector-offset", f".ap(vector_offset=..., indirect_dim={indirect_dim}) on "
                                                  f"{self.name!r}: only indirect_dim=0")
            _check_index_tensor(vector_offset, shape[0], self.name, "view.ap.vector-offset", ".ap(vector_offset=...)",
                                columns_allowed=True)
            # the rows an index may name are those of the tensor .ap is called on ("the dimension is relative to the
            # base tensor", nki-aps.rst), whose dim-0 stride is also the unit: a reshaped view has its own rows
            indirect = _Indirect(vector_offset, self._indirect_unit(0), self.shape[0] if self.shape else 1)
            strides[0] = 0
        # no bounds check here: an access pattern "does not do any computation directly ... The engines will consume
        # data when the AP is passed into a nki.isa instruction" (nki-aps.rst), so the instruction that reads or
        # writes it checks (NkiTensor.array); AWS's output_projection_tkg builds a padding view it never uses
        return NkiTensor(storage, shape, strides, byte_offset, dtype, scalar, indirect)

    def _indirect_unit(self, dim):
        """Bytes one unit of a dynamic offset moves: the stride of ``dim`` of this view, the tensor ``.ap`` is called
        on ("indirect_dim: dimension in self.shape whose stride scales the indirect scalar/vector offset", NkiTensor.ap
        docstring). On a tensor as allocated that is its row pitch; on a reshaped view, the reshaped dim's stride."""
        if dim >= len(self.shape):
            return self.dtype.itemsize
        return abs(int(self._byte_strides[dim]))


_UNOFFICIAL_METHODS = {
    "broadcast_to": "use .broadcast(dim, size) for a stride-0 view, or nl.broadcast_to(x, shape) for a new tile",
    "expand_dims": "use .expand_dim(dim)",
    "squeeze": "use .squeeze_dim(dim)",
    "transpose": "use .permute(dims) (free dims) or nl.transpose / nisa.nc_transpose",
    "astype": "cast with an instruction (nisa.tensor_copy into a tile of the new dtype)",
    "flatten": "use .flatten_dims(start_dim, end_dim) or .reshape(shape)",
}


def _infer_sizes(sizes, total, fail):
    """Fill one -1 in ``sizes`` so that they multiply to ``total``; ``fail()`` raises otherwise."""
    if sizes.count(-1) > 1 or any(s < -1 or s == 0 for s in sizes):
        fail()
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if known == 0 or total % known:
            fail()
        sizes = tuple(total // known if s == -1 else s for s in sizes)
    if math.prod(sizes) != total:
        fail()
    return sizes


def _nocopy_strides(old_shape, old_strides, new_shape, itemsize):
    """Byte strides that give ``new_shape`` over the same elements without a copy, or None (NumPy's rule)."""
    if math.prod(old_shape) == 0:
        return _contiguous_strides(new_shape, itemsize)
    probe = np.lib.stride_tricks.as_strided(np.zeros(1, dtype=np.uint8), shape=tuple(old_shape),
                                            strides=tuple(old_strides), writeable=False)
    try:
        return list(probe.reshape(tuple(new_shape), copy=False).strides)
    except ValueError:
        return None


def _is_int(k):
    return isinstance(k, (int, np.integer)) and not isinstance(k, bool)


def _is_register(k):
    from .isa_misc import VirtualRegister  # isa_misc imports this module

    return isinstance(k, VirtualRegister)


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
            _violate("view.slice.step", f"slice step must be positive, got {step} on axis {axis} of {tensor.name!r}")
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


def _check_index_tensor(index, rows, name, rule, what, columns_allowed=False):
    if not isinstance(index, NkiTensor):
        _violate(rule, f"{what} on {name!r} needs an SBUF NkiTensor of indices, got {type(index).__name__}")
    if index.buffer != "sbuf":
        _violate(rule, f"{what} on {name!r}: the index tensor must be in SBUF, not {index.buffer}")
    if index.dtype not in (dt.int32, dt.uint32):
        _violate(rule, f"{what} on {name!r}: index dtype must be int32 or uint32, got {index.dtype.name}")
    # one index per partition: (P, 1), or (P, 1, 1) as AWS's router_topk builds it; or, for the DMA indirect
    # transpose, (128, N) read column by column (isa dma_transpose: "When indices.shape[1] > 1: indices.shape[0] must
    # be exactly 128", flat_indices = indices.T.flatten()[:src.shape[0]]; dma_copy checks it has one column)
    one_per_partition = index.ndim >= 2 and all(n == 1 for n in index.shape[1:]) and (
        rows is None or index.shape[0] == rows)
    columns = columns_allowed and index.ndim == 2 and index.shape[1] > 1 and index.shape[0] == 128 and (
        rows is None or index.size >= rows)
    if not (one_per_partition or columns):
        _violate(rule, f"{what} on {name!r}: index shape must be ({rows}, 1)"
                 + (" (or (128, N) with 128 * N >= the rows, for nisa.dma_transpose)" if columns_allowed else "")
                 + f", got {index.shape}")


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
    from .isa_misc import VirtualRegister  # isa_misc imports this module

    if isinstance(source, VirtualRegister):  # a register or a fori_loop index: its value at run time
        return source.read()
    value = getattr(source, "value", None)
    if _is_int(value):
        return int(value)
    if hasattr(source, "__index__") and not isinstance(source, (bool, float)):
        return int(source.__index__())
    raise ConstraintError(f"scalar_offset must be an int or a 1x1 integer tensor, got {type(source).__name__}")


def allocate(shape, dtype, buffer, name="", fill=True, psum_banks=None, sbuf_start=None):
    """A new tensor over fresh storage (contiguous, partition-major); ``psum_banks``: the PSUM banks an explicit
    address places it on (``MemoryTracker.allocate``)."""
    from . import runtime

    shape = tuple(int(s) for s in (shape if isinstance(shape, (tuple, list)) else (shape,)))
    dtype = dt.as_dtype(dtype)
    if any(s <= 0 for s in shape):
        raise ConstraintError(f"allocation {name!r}: every dim must be positive, got shape {shape}")
    if buffer in ON_CHIP:
        # assumption: the register_load / register_store examples allocate one-element SBUF tensors of shape [1]
        # ("shape [1] or [1, 1]", isa L3123-3124, L3139, L3147-3148, L3165) although the language guide (L286) says
        # SBUF and PSUM tensors are at least 2-D: an SBUF [1] tensor is allowed, as an operand of those two only
        # (rule isa.on_chip_1d)
        if len(shape) < 2 and not (buffer == "sbuf" and shape == (1,)):
            raise ConstraintError(f"{buffer} allocation {name!r} needs a partition dim and a free dim, got shape {shape}")
        if shape[0] > MAX_PARTITIONS:
            raise ConstraintError(
                f"{buffer} allocation {name!r}: partition dim {shape[0]} exceeds the {MAX_PARTITIONS} partitions (pmax)"
            )
    context = runtime.current()
    storage = Storage(shape, dtype, buffer, name or f"{buffer}_tensor")
    context.memory.allocate(storage, psum_banks, sbuf_start)
    if context.loop_body_allocations:
        context.loop_body_allocations[-1].append(storage)
    if fill:
        storage.fill_uninitialised()
    return NkiTensor(storage, shape, _contiguous_strides(shape, dtype.itemsize), 0, dtype)


def from_numpy(array, buffer="private_hbm", name="input"):
    """An HBM tensor holding a copy of ``array``."""
    array = np.ascontiguousarray(array)
    dtype = dt.as_dtype(array.dtype)
    tensor = allocate(array.shape if array.ndim else (1,), dtype, buffer, name, fill=False)
    tensor.array()[...] = array.astype(dtype, copy=False).reshape(tensor.shape)
    return tensor
