"""SBUF / PSUM capacity accounting per target.

Each on-chip allocation reserves ``prod(shape[1:]) * itemsize`` bytes in every
partition it spans. An allocation stays live as long as its storage object is
alive: CPython frees a tile as soon as nothing refers to it any more (e.g. a
tile rebound in every loop iteration), which stands in for the compiler's
liveness analysis. Because the right-hand side of ``t = nl.ndarray(...)`` is
evaluated before the old ``t`` is released, the total is checked when the next
instruction runs (and any single allocation larger than the whole buffer is
refused at once).

PSUM is charged in whole banks: "the allocation for PSUM tensors must start at
the beginning of each bank" (aws-neuron-sdk, nki/migration/index.rst), so a
tile of 512 B per partition still takes one of the eight 2 KiB banks. A PSUM
tensor placed by ``nl.ndarray(address=...)`` occupies the banks its address
names; tensors placed on the same bank share it, so a bank is charged once
however many live tensors are placed on it. An SBUF tensor placed by address
occupies ``[start, start + its bytes per partition)`` of a partition; placed
SBUF tensors are charged the union of those ranges, so tensors placed at the
same address share their bytes. The migration guide (nki/migration/index.rst
L1093-1103) calls the free offset an element offset while its PSUM example
passes bytes: the union is taken under both readings (start = free_offset,
start = free_offset * itemsize) and the larger one charged (assumption: the
stricter reading, as the guide says nothing of capacity).
"""

import collections
import itertools
import weakref

from . import cost
from .errors import CapacityError

_LIMIT_CONSTANT = {"sbuf": "sbuf_bytes_per_partition", "psum": "psum_bytes_per_partition"}


def _union_length(ranges):
    total, end = 0, 0
    for lo, hi in sorted(ranges):
        lo = max(lo, end)
        if hi > lo:
            total += hi - lo
            end = hi
    return total


class MemoryTracker:
    def __init__(self, target):
        self.target = cost.normalize_target(target)
        self.limits = {buf: int(cost.constant(name, target)) for buf, name in _LIMIT_CONSTANT.items()}
        self.live = {buf: {} for buf in self.limits}
        self.totals = {buf: 0 for buf in self.limits}
        self.peaks = {buf: 0 for buf in self.limits}
        self._ids = itertools.count()
        self.psum_bank_bytes = int(cost.constant("psum_bank_bytes", target))
        # live PSUM tensors placed by address, per bank they occupy (charged once per bank in use, not per tensor)
        self.placed_psum_banks = collections.Counter()
        # live SBUF tensors placed by address: key -> ((first, end byte) with the free offset read as bytes,
        # (first, end byte) read as elements)
        self.placed_sbuf = {}

    def allocate(self, storage, psum_banks=None, sbuf_start=None):
        """Charge ``storage`` to its buffer; ``psum_banks``: the banks a PSUM tensor placed by address occupies;
        ``sbuf_start``: the free offset of an SBUF tensor placed by address (bytes or elements)."""
        buffer = storage.buffer
        if buffer not in self.limits:
            return
        nbytes = storage.bytes_per_partition
        if buffer == "psum":  # whole banks: every PSUM allocation starts on a bank boundary
            nbytes = -(-nbytes // self.psum_bank_bytes) * self.psum_bank_bytes
        limit = self.limits[buffer]
        if nbytes > limit:
            raise CapacityError(
                f"{buffer.upper()} allocation {storage.name!r} needs {nbytes} B per partition, "
                f"more than the {limit} B per partition of {buffer.upper()} on {self.target}"
            )
        key = next(self._ids)
        self.live[buffer][key] = (storage.name, nbytes)
        banks = tuple(psum_banks) if buffer == "psum" and psum_banks is not None else ()
        if banks:
            self.placed_psum_banks.update(banks)
        elif buffer == "sbuf" and sbuf_start is not None:
            starts = (int(sbuf_start), int(sbuf_start) * storage.dtype.itemsize)
            self.placed_sbuf[key] = tuple((start, start + nbytes) for start in starts)
        else:
            self.totals[buffer] += nbytes
        weakref.finalize(storage, self._free, buffer, key, banks)

    def _free(self, buffer, key, banks=()):
        entry = self.live[buffer].pop(key, None)
        if entry is None:
            return
        for bank in banks:
            self.placed_psum_banks[bank] -= 1
            if not self.placed_psum_banks[bank]:  # no live placed tensor occupies it any more
                del self.placed_psum_banks[bank]
        if buffer == "sbuf" and key in self.placed_sbuf:
            del self.placed_sbuf[key]
        elif not banks:
            self.totals[buffer] -= entry[1]

    def total(self, buffer):
        """Live bytes per partition of ``buffer``: its allocations, plus one bank per PSUM bank placed tensors use."""
        if buffer == "psum":
            placed = len(self.placed_psum_banks) * self.psum_bank_bytes
        elif not self.placed_sbuf:  # the usual case, checked at every instruction
            placed = 0
        else:  # the union of the byte ranges placed SBUF tensors occupy, under the stricter reading
            placed = max((_union_length(ranges[reading] for ranges in self.placed_sbuf.values()) for reading in (0, 1)),
                         default=0)
        return self.totals[buffer] + placed

    def check(self, instruction):
        """Raise :class:`CapacityError` if live allocations exceed a buffer; update the peaks."""
        for buffer in self.totals:
            total = self.total(buffer)
            limit = self.limits[buffer]
            if total > limit:
                entries = list(self.live[buffer].values())
                name, nbytes = entries[-1]
                biggest = sorted(entries, key=lambda e: -e[1])[:4]
                listing = ", ".join(f"{n!r} {b} B" for n, b in biggest)
                raise CapacityError(
                    f"{instruction}: live {buffer.upper()} allocations need {total} B per partition, "
                    f"more than the {limit} B per partition of {buffer.upper()} on {self.target} "
                    + (f"(PSUM is allocated in whole {self.psum_bank_bytes // 1024} KiB banks, "
                       f"{limit // self.psum_bank_bytes} per partition) " if buffer == "psum" else "")
                    + f"(latest allocation {name!r} requested {nbytes} B; largest live: {listing})"
                )
            self.peaks[buffer] = max(self.peaks[buffer], total)
