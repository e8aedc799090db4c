"""Permutation helpers shared by the encoder, the matrix's validation, the orders and the bindings.

A permutation here is an int array ``perm`` of length n holding every id of ``0..n - 1`` once;
``perm[position] = original id`` (the encoded position of each original id is its inverse).
"""

from __future__ import annotations

import numpy as np


def inverse_permutation(perm) -> np.ndarray:
    """``inverse[perm] = arange(len(perm))`` as int64: the encoded position of each original id (empty for an
    empty ``perm``)."""
    perm = np.asarray(perm)
    inverse = np.empty(perm.shape[0], dtype=np.int64)
    inverse[perm] = np.arange(perm.shape[0], dtype=np.int64)
    return inverse


def is_permutation(perm: np.ndarray, length: int) -> bool:
    """``perm`` (an integer array) holds every id of ``0..length - 1`` exactly once: a range check and one pass, no
    sort (a negative id would otherwise index from the end)."""
    perm = np.asarray(perm)
    if perm.shape != (length,) or (length and perm.dtype.kind not in "iu"):
        return False
    if length and (perm.min() < 0 or perm.max() >= length):
        return False
    seen = np.zeros(length, dtype=bool)
    seen[perm] = True
    return bool(seen.all())
