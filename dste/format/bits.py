"""Bit packing of keep-masks in the DSTE layout (the format's own, used by the encoder and the matrix).

A tile column's 128 window slots are packed into four little-endian uint32 words:
slot r is bit ``r % 32`` (bit 0 = least significant) of word ``r // 32``. The same
layout packs the 128 entries of an entry tile (docs/CONTRACTS.md, ``keep_bits``).
"""

import numpy as np

from dste.format.constants import MASK_WORD_BITS, MASK_WORDS, WINDOW_ROWS


def pack_mask(mask) -> np.ndarray:
    """Pack ``bool [..., 128]`` into ``uint32 [..., 4]`` (slot r -> word r // 32, bit r % 32)."""
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        raise TypeError(f"pack_mask: mask must be a bool array, got dtype {mask.dtype}")
    if mask.ndim < 1 or mask.shape[-1] != WINDOW_ROWS:
        raise ValueError(f"pack_mask: mask must have shape [..., {WINDOW_ROWS}], got {mask.shape}")
    packed_bytes = np.packbits(mask, axis=-1, bitorder="little")  # [..., 16], byte b holds slots 8b..8b+7
    words = np.ascontiguousarray(packed_bytes).view("<u4")
    return np.ascontiguousarray(words.astype(np.uint32, copy=False))


def unpack_mask(words) -> np.ndarray:
    """Unpack ``uint32 [..., 4]`` into ``bool [..., 128]``; inverse of :func:`pack_mask`."""
    words = np.asarray(words)
    if words.dtype != np.uint32:
        raise TypeError(f"unpack_mask: words must be a uint32 array, got dtype {words.dtype}")
    if words.ndim < 1 or words.shape[-1] != MASK_WORDS:
        raise ValueError(f"unpack_mask: words must have shape [..., {MASK_WORDS}], got {words.shape}")
    as_bytes = np.ascontiguousarray(words.astype("<u4", copy=False)).view(np.uint8)
    bits = np.unpackbits(as_bytes, axis=-1, bitorder="little")
    return bits.astype(np.bool_)


def popcount(words) -> np.ndarray:
    """Number of set bits of each uint32 word (int64, same shape as ``words``)."""
    words = np.asarray(words, dtype=np.uint32)
    return np.bitwise_count(words).astype(np.int64)


def set_bits(words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat word index and bit (int64 arrays) of every set bit of a uint32 array.

    In ascending order of flat bit position ``word * 32 + bit``: for ``keep_bits [T, 128, 4]`` that is tile,
    then column slot, then window slot. One pass over the nonzero words (32 bytes of scratch per word).
    """
    words = np.asarray(words, dtype=np.uint32).reshape(-1)
    live = np.flatnonzero(words)
    as_bytes = np.ascontiguousarray(words[live].astype("<u4", copy=False)).view(np.uint8)
    position = np.flatnonzero(np.unpackbits(as_bytes, bitorder="little"))
    return live[position // MASK_WORD_BITS], position % MASK_WORD_BITS
