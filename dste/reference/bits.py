"""Keep-mask bit layout of the DSTE format, computed independently of ``dste.format.bits``.

Per docs/CONTRACTS.md (``keep_bits``): window slot r of a tile column (or entry r of an entry
tile) is bit ``r % 32`` (bit 0 = least significant) of uint32 word ``r // 32``. Packing here is a
weighted sum of the 32 bits of each word, unpacking a shift-and-mask, so a slip in the byte/word
order of the format's ``packbits`` path would show up as a mismatch.
"""

import numpy as np

from .layout import MASK_WORD_BITS, MASK_WORDS, WINDOW_ROWS

_BIT_WEIGHTS = np.left_shift(np.uint64(1), np.arange(MASK_WORD_BITS, dtype=np.uint64))
_BIT_SHIFTS = np.arange(MASK_WORD_BITS, dtype=np.uint32)


def pack_mask(mask) -> np.ndarray:
    """Pack ``bool [..., 128]`` into ``uint32 [..., 4]`` (slot r -> word r // 32, bit r % 32)."""
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        raise TypeError(f"reference pack_mask: mask must be a bool array, got dtype {mask.dtype}")
    if mask.ndim < 1 or mask.shape[-1] != WINDOW_ROWS:
        raise ValueError(f"reference pack_mask: mask must have shape [..., {WINDOW_ROWS}], got {mask.shape}")
    by_word = mask.reshape(mask.shape[:-1] + (MASK_WORDS, MASK_WORD_BITS)).astype(np.uint64)
    return np.ascontiguousarray((by_word * _BIT_WEIGHTS).sum(axis=-1, dtype=np.uint64).astype(np.uint32))


def unpack_mask(words) -> np.ndarray:
    """Unpack ``uint32 [..., 4]`` into ``bool [..., 128]``; inverse of :func:`pack_mask`."""
    words = np.asarray(words)
    if words.dtype != np.uint32:
        raise TypeError(f"reference unpack_mask: words must be a uint32 array, got dtype {words.dtype}")
    if words.ndim < 1 or words.shape[-1] != MASK_WORDS:
        raise ValueError(f"reference unpack_mask: words must have shape [..., {MASK_WORDS}], got {words.shape}")
    bits = (words[..., None] >> _BIT_SHIFTS) & np.uint32(1)
    return bits.reshape(words.shape[:-1] + (WINDOW_ROWS,)).astype(np.bool_)


# Independent versions of ``dste.format.bits.popcount`` and ``set_bits`` (bit by bit), for parity tests.
def popcount(words) -> np.ndarray:
    """Number of set bits of each uint32 word (int64, same shape as ``words``)."""
    return np.bitwise_count(np.asarray(words, dtype=np.uint32)).astype(np.int64)


def set_bit_positions(words):
    """Yield ``(flat_word_index, bit)`` arrays of every set bit of a flat uint32 array, bit by bit."""
    words = np.asarray(words, dtype=np.uint32).reshape(-1)
    live = np.flatnonzero(words)
    live_words = words[live]
    for bit in range(MASK_WORD_BITS):
        hit = ((live_words >> np.uint32(bit)) & np.uint32(1)).astype(bool)
        if hit.any():
            yield live[hit], bit
