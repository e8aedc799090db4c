"""Argument checks shared by every room: a scalar that must be a number, an integer or a flag, an array of
scores that must be real and finite, and a SciPy sparse matrix whose index arrays must fit its shape.

Python's ``bool`` is an ``int`` and NumPy turns strings and booleans into numbers on request, so without these a
``True`` passed as a threshold, a ``"0.5"`` passed as a sparsity or a boolean mask passed as scores would run as
some number the caller never meant. Each check returns the value converted (``float``, ``int``, ``bool`` or a
float64 array) and raises ``TypeError`` for the wrong kind and ``ValueError`` for a value out of range, naming
the argument and what is allowed. ``error`` replaces ``ValueError`` where a room has its own (e.g.
``DSTEFormatError``).

SciPy builds a CSR, CSC or COO matrix from index arrays without checking them against its shape, so a column id past
the shape, a negative one or a non-monotone ``indptr`` surfaced later in NumPy's words (or, for a negative id, as a
silently wrapped index): ``check_sparse_indices`` refuses such a matrix where it enters a room.
"""

from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse as sp

__all__ = ["real_number", "integer", "flag", "real_scores", "check_sparse_indices"]


def real_number(value, what: str, *, low: float | None = None, high: float | None = None,
                finite: bool = True, error: type[Exception] = ValueError) -> float:
    """``value`` as a float: a real number (not a bool, string or array), finite unless ``finite=False``, within
    ``[low, high]`` where given."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a real number, got {type(value).__name__} {value!r}")
    number = float(value)
    if np.isnan(number) or (finite and not np.isfinite(number)):
        raise error(f"{what} must be finite, got {number!r}")
    if (low is not None and number < low) or (high is not None and number > high):
        bounds = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
        raise error(f"{what} must lie in {bounds}, got {number!r}")
    return number


def integer(value, what: str, *, low: int | None = None, high: int | None = None,
            error: type[Exception] = ValueError) -> int:
    """``value`` as an int: an integer (Python or NumPy, not a bool and not a float such as 1.0), within
    ``[low, high]`` where given."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{what} must be an integer, got {type(value).__name__} {value!r}")
    number = int(value)
    if (low is not None and number < low) or (high is not None and number > high):
        bounds = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
        raise error(f"{what} must lie in {bounds}, got {number}")
    return number


def flag(value, what: str) -> bool:
    """``value`` as a bool: True or False (Python or NumPy), nothing that is merely truthy."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{what} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


def real_scores(values, what: str, shape: tuple | None = None, *, error: type[Exception] = ValueError) -> np.ndarray:
    """``values`` as a float64 array of real, finite numbers (integer and float dtypes; not bool, complex, strings
    or objects), of ``shape`` where given."""
    array = np.asarray(values)
    if array.dtype.kind not in "iuf":
        raise TypeError(f"{what} must hold real numbers (an integer or float array), got dtype {array.dtype}")
    if shape is not None and array.shape != tuple(shape):
        raise error(f"{what} must have shape {tuple(shape)}, got {array.shape}")
    array = array.astype(np.float64, copy=False)
    if not np.isfinite(array).all():
        raise error(f"{what} contains NaN or Inf; every value must be finite")
    return array


def check_sparse_indices(A, what: str, error: type[Exception] = ValueError) -> None:
    """Raise ``error`` unless the SciPy sparse matrix ``A`` (named ``what``) stores a valid ``indptr`` (CSR/CSC)
    and indices inside its shape. Other formats are checked through their COO form."""
    if not sp.issparse(A):
        raise TypeError(f"{what} must be a SciPy sparse matrix, got {type(A).__name__}")
    shape = tuple(int(s) for s in A.shape)
    if A.format in ("csr", "csc"):
        major, minor = shape if A.format == "csr" else shape[::-1]
        indptr = np.asarray(A.indptr)
        if (indptr.shape != (major + 1,) or indptr[0] != 0 or indptr[-1] > A.indices.size
                or (np.diff(indptr) < 0).any()):
            raise error(f"{what}: its {A.format.upper()} indptr (index pointer) is not one of a {shape} matrix: it "
                        f"must hold {major + 1} non-decreasing offsets from 0 to at most nnz ({A.indices.size})")
        groups = [(np.asarray(A.indices[: indptr[-1]]), minor)]
    else:
        coo = A.tocoo()
        groups = [(np.asarray(coo.row), shape[0]), (np.asarray(coo.col), shape[1])]
    for ids, bound in groups:
        if ids.size and (ids.min() < 0 or ids.max() >= bound):
            raise error(f"{what} has indices outside its shape {shape} (or negative): found {int(ids.min())} .. "
                        f"{int(ids.max())}, allowed 0 .. {bound - 1}")
