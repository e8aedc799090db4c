"""Argument checks shared by every room: a scalar that must be a number, an integer or a flag, and an array of
scores that must be real and finite.

Python's ``bool`` is an ``int`` and NumPy turns strings and booleans into numbers on request, so without these a
``True`` passed as a threshold, a ``"0.5"`` passed as a sparsity or a boolean mask passed as scores would run as
some number the caller never meant. Each check returns the value converted (``float``, ``int``, ``bool`` or a
float64 array) and raises ``TypeError`` for the wrong kind and ``ValueError`` for a value out of range, naming
the argument and what is allowed. ``error`` replaces ``ValueError`` where a room has its own (e.g.
``DSTEFormatError``).
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["real_number", "integer", "flag", "real_scores"]


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
