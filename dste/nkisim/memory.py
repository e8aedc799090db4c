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
tile of 512 B per partition still takes one of the eight 2 KiB banks.
"""

import itertools
import weakref

from . import cost
from .errors import CapacityError

_LIMIT_CONSTANT = {"sbuf": "sbuf_bytes_per_partition", "psum": "psum_bytes_per_partition"}


class MemoryTracker:
    def __init__(self, target):
        self.target = cost.normalize_target(target)
        self.limits = {buf: int(cost.constant(name, target)) for buf, name in _LIMIT_CONSTANT.items()}
        self.live = {buf: {} for buf in self.limits}
        self.totals = {buf: 0 for buf in self.limits}
        self.peaks = {buf: 0 for buf in self.limits}
        self._ids = itertools.count()
        self.psum_bank_bytes = int(cost.constant("psum_bank_bytes", target))

    def allocate(self, storage):
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
        self.totals[buffer] += nbytes
        weakref.finalize(storage, self._free, buffer, key)

    def _free(self, buffer, key):
        entry = self.live[buffer].pop(key, None)
        if entry is not None:
            self.totals[buffer] -= entry[1]

    def check(self, instruction):
        """Raise :class:`CapacityError` if live allocations exceed a buffer; update the peaks."""
        for buffer, total in self.totals.items():
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
