"""JSON that every parser reads: the job's reports without the non-standard ``Infinity`` and ``NaN`` tokens.

Python's ``json`` writes a float infinity as the bare token ``Infinity``, which RFC 8259 does not allow: ``jq``,
JavaScript's ``JSON.parse`` and most other readers reject the whole file. A run's report holds infinities on
purpose (a fallback margin of inf means the Q-network never overrides the fallback), so they are written as the
strings ``"inf"`` and ``"-inf"``, which ``float()`` reads back; a NaN, which no report field means to hold, is
written as ``null``. Dictionary keys are converted the same way (``json`` would write an infinite key as the string
``"Infinity"``, which ``float()`` also reads, but one spelling is easier to search for).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

__all__ = ["dumps", "finite_or_text"]


def finite_or_text(value: float) -> float | str | None:
    """A finite float as itself; +-inf as ``"inf"`` / ``"-inf"``; NaN as None."""
    if math.isnan(value):
        return None
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars and arrays, tuples and non-finite floats made plain JSON values."""
    if isinstance(value, dict):
        return {_key(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return finite_or_text(float(value))
    return value


def _key(key: Any) -> Any:
    if isinstance(key, (float, np.floating)) and not math.isfinite(float(key)):
        text = finite_or_text(float(key))
        return "nan" if text is None else text
    if isinstance(key, np.integer):
        return int(key)
    if isinstance(key, np.floating):
        return float(key)
    return key


def dumps(value: Any, *, default=None, **kwargs) -> str:
    """``json.dumps`` of ``value`` as strict JSON (module docstring); ``default`` serialises any other type, as in
    ``json.dumps``. Raises ValueError rather than write a non-standard token."""
    return json.dumps(_plain(value), default=default, allow_nan=False, **kwargs)
