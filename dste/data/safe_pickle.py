"""A restricted unpickler for the Python-2 pickles of the Planetoid datasets.

`pickle.load` runs whatever callable a file names. The Planetoid files only need NumPy arrays
and dtypes, SciPy CSR/CSC matrices and `collections.defaultdict(list)` (plus latin1 `_codecs.encode`, which protocol-2 pickles written by
Python 3 use for bytes), so `SafeUnpickler`
resolves only those names and refuses every other global with `UnsafePickleError`.
Sparse matrices are not rebuilt through SciPy's own unpickling: they come back as
`SparseState` records (the pickled attribute dict) and `sparse_from_state` checks and
assembles them, so the result does not depend on the SciPy version that wrote the file.
"""

from __future__ import annotations

import collections
import io
import pickle

import numpy as np
import scipy.sparse as sp

from .graph import is_integer

__all__ = ["UnsafePickleError", "SafeUnpickler", "SparseState", "safe_load", "sparse_from_state"]


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """A pickle named a global outside the allow-list (or tried to change one). A ``ValueError`` too: bad input."""


class SparseState:
    """Placeholder for a pickled SciPy sparse matrix: keeps its attribute dict, runs nothing."""

    format = "csr"

    def __init__(self, *args, **kwargs):
        self.state: dict = {}

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"sparse matrix state must be a dict, got {type(state).__name__}")
        self.state = state


class CsrState(SparseState):
    format = "csr"


class CscState(SparseState):
    format = "csc"


ARRAY_KINDS = "biuf"
"""dtype kinds a pickled array may have: bool, signed and unsigned integers, floats (never objects)."""


class DtypeSpec:
    """Placeholder for a pickled ``numpy.dtype``: numpy's own ``__setstate__`` never sees the file's state.

    The spec must name a plain bool/int/uint/float type; the state may only set the byte order.
    """

    def __init__(self, spec, align=False, copy=False):
        if not isinstance(spec, str):
            raise UnsafePickleError(f"dtype spec must be a type string, got {type(spec).__name__}")
        try:
            dtype = np.dtype(spec)
        except TypeError as err:
            raise UnsafePickleError(f"unknown dtype {spec!r}") from err
        if dtype.kind not in ARRAY_KINDS or dtype.fields is not None or dtype.subdtype is not None:
            raise UnsafePickleError(f"dtype {spec!r} is not allowed; allowed kinds: bool, int, uint, float")
        self.dtype = dtype

    def __setstate__(self, state):
        # numpy's state: (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata])
        if not isinstance(state, tuple) or len(state) not in (8, 9) or state[0] not in (3, 4):
            raise pickle.UnpicklingError(f"malformed dtype state {state!r:.80}")
        _, byteorder, subarray, names, fields, elsize, alignment, flags = state[:8]
        if byteorder not in ("<", ">", "|", "=") or subarray is not None or names is not None or fields is not None:
            raise pickle.UnpicklingError(f"dtype state describes a non-plain dtype: {state!r:.80}")
        if elsize not in (-1, self.dtype.itemsize) or alignment not in (-1, self.dtype.alignment):
            raise pickle.UnpicklingError(f"dtype state sizes {elsize}/{alignment} do not match {self.dtype}")
        if byteorder in "<>":
            self.dtype = self.dtype.newbyteorder(byteorder)


class ArraySpec:
    """Placeholder for a pickled ``numpy.ndarray``: the array is built by :meth:`to_array` from a checked
    state (shape, plain dtype, raw bytes of exactly the right length), never by numpy's ``__setstate__``."""

    def __init__(self, shape, dtype):
        self.shape, self.dtype, self.fortran, self.data = None, None, False, None

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) != 5:
            raise pickle.UnpicklingError(f"malformed array state {str(state)[:80]}")
        _, shape, dtype, fortran, data = state
        if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise pickle.UnpicklingError(f"array shape must be a tuple of non-negative ints, got {shape!r:.80}")
        if not isinstance(dtype, DtypeSpec):
            raise pickle.UnpicklingError(f"array dtype must be a pickled numpy.dtype, got {type(dtype).__name__}")
        if isinstance(data, str):  # a Python-2 byte string, decoded as latin1
            data = data.encode("latin1")
        if not isinstance(data, (bytes, bytearray)):
            raise pickle.UnpicklingError(f"array data must be raw bytes, got {type(data).__name__}")
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.dtype.itemsize
        if len(data) != expected:
            raise pickle.UnpicklingError(f"array of shape {shape} and dtype {dtype.dtype} needs {expected} bytes, "
                                         f"the file holds {len(data)}")
        self.shape, self.dtype, self.fortran, self.data = shape, dtype.dtype, bool(fortran), bytes(data)

    def to_array(self) -> np.ndarray:
        if self.shape is None:
            raise pickle.UnpicklingError("array without state")
        flat = np.frombuffer(self.data, dtype=self.dtype)
        return flat.reshape(self.shape, order="F" if self.fortran else "C").copy()


def _refuse_build(*_args):
    # BUILD on a global sets its attributes when it has no __setstate__ (the allow-list's own stand-ins and
    # functions), changing what every later load in the process resolves
    raise UnsafePickleError("a pickle may not set the state of an allowed global (BUILD on a class or function)")


class NdarrayName:
    """Stands for the global ``numpy.ndarray``, which a pickled array names only as the type argument of
    ``_reconstruct``. The real class is never handed out: called by a pickle, ``numpy.ndarray(shape, "O")`` builds
    an object array of uninitialised pointers (reading it crashed the interpreter) and ``numpy.ndarray(shape)`` an
    array of uninitialised memory, so calling this stand-in is refused."""

    __setstate__ = staticmethod(_refuse_build)

    def __new__(cls, *args, **kwargs):
        raise UnsafePickleError("numpy.ndarray may only be named as the type of a pickled array, not called")


class _GuardedFunction:
    """An allow-listed function as a pickle sees it: callable, but BUILD cannot set its attributes (a function's
    ``__defaults__`` or ``__code__`` would otherwise be the file's to choose)."""

    __slots__ = ("_fn",)

    def __init__(self, fn):
        object.__setattr__(self, "_fn", fn)

    def __call__(self, *args, **kwargs):
        return self._fn(*args, **kwargs)

    def __setattr__(self, name, value):
        _refuse_build()

    __setstate__ = _refuse_build


def _reconstruct_ndarray(subtype, shape, dtype):
    """numpy's array reconstructor, limited to plain ndarrays (an :class:`ArraySpec` until checked)."""
    if subtype is not NdarrayName:
        raise UnsafePickleError(f"array reconstruction is allowed only for numpy.ndarray, got {subtype!r}")
    return ArraySpec(shape, dtype)


def _materialize(obj, depth=0):
    """Replace every placeholder in a loaded object by the checked array or dtype it stands for."""
    if depth > 64:
        raise pickle.UnpicklingError("pickle nests deeper than 64 levels")
    if isinstance(obj, ArraySpec):
        return obj.to_array()
    if isinstance(obj, DtypeSpec):
        return obj.dtype
    if isinstance(obj, SparseState):
        obj.state = {key: _materialize(value, depth + 1) for key, value in obj.state.items()}
        return obj
    if isinstance(obj, collections.defaultdict):
        out = collections.defaultdict(obj.default_factory)
        out.update((key, _materialize(value, depth + 1)) for key, value in obj.items())
        return out
    if isinstance(obj, dict):
        return {key: _materialize(value, depth + 1) for key, value in obj.items()}
    if isinstance(obj, list):
        return [_materialize(value, depth + 1) for value in obj]
    if isinstance(obj, tuple):
        return tuple(_materialize(value, depth + 1) for value in obj)
    return obj


def _latin1_bytes(text, encoding="latin1"):
    """The `_codecs.encode` that Python 3 protocol-2 pickles use for bytes, latin1 only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"_codecs.encode is allowed only as encode(str, 'latin1'), got encoding {encoding!r}")
    return text.encode("latin1")


_CSR_NAMES = ("scipy.sparse.csr", "scipy.sparse._csr")
_CSC_NAMES = ("scipy.sparse.csc", "scipy.sparse._csc")
_NUMPY_CORE = ("numpy.core.multiarray", "numpy._core.multiarray")

ALLOWED_GLOBALS: dict[tuple[str, str], object] = {
    **{(module, "_reconstruct"): _GuardedFunction(_reconstruct_ndarray) for module in _NUMPY_CORE},
    **{(module, "csr_matrix"): CsrState for module in _CSR_NAMES},
    **{(module, "csc_matrix"): CscState for module in _CSC_NAMES},
    ("numpy", "ndarray"): NdarrayName,
    ("numpy", "dtype"): DtypeSpec,
    ("collections", "defaultdict"): collections.defaultdict,
    ("__builtin__", "list"): list,
    ("builtins", "list"): list,
    ("_codecs", "encode"): _GuardedFunction(_latin1_bytes),
}


class SafeUnpickler(pickle.Unpickler):
    """Unpickler that resolves only `ALLOWED_GLOBALS` and refuses anything else."""

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            allowed = sorted(f"{m}.{n}" for m, n in ALLOWED_GLOBALS)
            hint = ""
            if (module, name) in {(core, "scalar") for core in _NUMPY_CORE}:
                hint = ("; this one is a NumPy scalar (e.g. a numpy.int64 dict key or list entry): write Python ints "
                        "(int(v)) into the file instead")
            raise UnsafePickleError(
                f"refusing to load global {module}.{name}: only these are allowed: {', '.join(allowed)}{hint}"
            ) from None


def safe_load(data: bytes, source: str = "<bytes>"):
    """Unpickle `data` (Python-2 pickles decoded as latin1) with the allow-list.

    Raises UnsafePickleError for a forbidden global and ValueError for a corrupt stream.
    """
    try:
        return _materialize(SafeUnpickler(io.BytesIO(data), encoding="latin1").load())
    except UnsafePickleError as err:
        raise UnsafePickleError(f"{source}: {err}") from None
    except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError, IndexError, KeyError,
            RecursionError, OverflowError) as err:
        raise ValueError(f"{source}: corrupt or unsupported pickle ({type(err).__name__}: {err})") from err
    except MemoryError:
        # one flipped bit can make a memo index 2^31 in a file of kilobytes: the unpickler's bare MemoryError
        # named neither the file nor the cause
        raise ValueError(f"{source}: corrupt or unsupported pickle: its {len(data):,} bytes ask the unpickler for "
                         "more memory than this machine has (a corrupted memo index or length)") from None


def _is_count(value) -> bool:
    return is_integer(value) and value >= 0


def sparse_from_state(obj, source: str = "<pickle>") -> sp.csr_matrix:
    """Checked CSR matrix from a `SparseState`; dense 2-D arrays pass through as CSR too."""
    if isinstance(obj, np.ndarray):
        if obj.ndim != 2:
            raise ValueError(f"{source}: expected a 2-D matrix, got an array of shape {obj.shape}")
        return sp.csr_matrix(obj.astype(obj.dtype.newbyteorder("="), copy=False))  # SciPy refuses big-endian
    if not isinstance(obj, SparseState):
        raise ValueError(f"{source}: expected a sparse matrix, got {type(obj).__name__}")
    state = obj.state
    shape = state.get("_shape", state.get("shape"))
    missing = [key for key in ("data", "indices", "indptr") if not isinstance(state.get(key), np.ndarray)]
    if missing or shape is None:
        raise ValueError(f"{source}: sparse matrix state lacks {missing or ['shape']}")
    if not isinstance(shape, tuple) or len(shape) != 2 or not all(_is_count(s) for s in shape):
        # int() would floor a corrupt 2.7 to 2 rows
        raise ValueError(f"{source}: bad sparse matrix shape {shape!r:.80}; expected a pair of integers >= 0")
    shape = tuple(int(s) for s in shape)
    data, indices, indptr = state["data"], state["indices"], state["indptr"]
    for key, array in (("indices", indices), ("indptr", indptr)):
        if array.dtype.kind not in "iu":  # SciPy casts float ids to int, flooring a corrupt 1.7 to column 1
            raise ValueError(f"{source}: sparse {key} must be integers, got {array.dtype}")
    major, minor = shape if obj.format == "csr" else shape[::-1]
    if indices.shape != data.shape or indices.ndim != 1:
        raise ValueError(f"{source}: sparse indices {indices.shape} and data {data.shape} must be 1-D of one length")
    if indptr.shape != (major + 1,) or indptr[0] != 0 or indptr[-1] != indices.shape[0] or np.any(np.diff(indptr) < 0):
        raise ValueError(f"{source}: inconsistent sparse index pointer for shape {shape}")
    if indices.size and (indices.min() < 0 or indices.max() >= minor):
        raise ValueError(f"{source}: sparse indices outside [0, {minor})")
    cls = sp.csr_matrix if obj.format == "csr" else sp.csc_matrix
    return sp.csr_matrix(cls((data, indices, indptr), shape=shape))
