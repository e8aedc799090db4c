"""Argument checks of the references: an oracle must refuse what the code it judges refuses, or a parity test
compares two answers to a question neither should have answered.

Restated here rather than imported (the references take nothing from ``dste``): a number that is a real, finite
number and not a bool or a string; an integer count; an array of real, finite scores. Each raises ``TypeError`` for
the wrong kind and ``ValueError`` for a value out of range (a dtype: ``ValueError``, as the format raises it), naming
the function and the argument.
"""

from __future__ import annotations

import numpy as np


def finite_number(value, what: str) -> float:
    """``value`` as a float: a real number (Python or NumPy; not a bool, a string or an array) that is finite."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{what} must be a real number, got {type(value).__name__} {value!r}")
    if not np.isfinite(float(value)):
        raise ValueError(f"{what} must be a finite number, got {float(value)!r}")
    return float(value)


def count(value, what: str) -> int:
    """``value`` as an int >= 0: an integer (Python or NumPy; not a bool and not a float such as 2.0)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{what} must be an integer, got {type(value).__name__} {value!r}")
    if value < 0:
        raise ValueError(f"{what} must be >= 0, got {int(value)}")
    return int(value)


def finite_scores(values, what: str, shape: tuple) -> np.ndarray:
    """``values`` as an array of ``shape`` holding real, finite numbers (integer or float dtype; not bool)."""
    array = np.asarray(values)
    if array.dtype.kind not in "iuf":
        raise TypeError(f"{what} must hold real numbers (an integer or float array), got dtype {array.dtype}")
    if array.shape != tuple(shape):
        raise ValueError(f"{what} must have shape {tuple(shape)}, got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{what} contains NaN or Inf; every score must be finite")
    return array


def float_dtype(dtype, what: str) -> np.dtype:
    """``dtype`` as float32 or float64 (the dtypes a decoded operand comes in; ``ValueError`` otherwise, as the
    format's ``decode`` and ``dequantize`` refuse it)."""
    try:
        resolved = np.dtype(dtype)
    except (TypeError, ValueError):
        resolved = None
    if resolved not in (np.float32, np.float64):
        raise ValueError(f"{what} must be float32 or float64, got {dtype!r}")
    return resolved
