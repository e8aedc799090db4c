"""SBUF / PSUM capacity accounting per target.

Each on-chip allocation reserves ``prod(shape[1:]) * itemsize`` bytes in every partition it spans, from the first
instruction that reads or writes it to the last: the compiler "automatically recycles" a tile "when no longer
needed" (aws-neuron-sdk, nki/get-started/about/tiling-overview.rst), so what counts is each tile's live range, not
how long the kernel's Python keeps a reference to it (a list of tiles used once each, a variable still bound after
its last use). A tile never read or written takes no space. The instruction counter is this tracker's ``clock``
(one tick per instruction, ``check``); ``NkiTensor.array`` (every read and write of a tile's values) marks the tile
used at the current tick. The peak over all ticks is checked when the program ends (``finish``); any single
allocation larger than the whole buffer is refused at once.

PSUM is charged in whole banks: "the allocation for PSUM tensors must start at the beginning of each bank"
(aws-neuron-sdk, nki/migration/index.rst), so a tile of 512 B per partition still takes one of the eight 2 KiB
banks. Tensors placed by ``nl.ndarray(address=...)`` keep the place they were given for as long as the kernel holds
them (an assumption: the compiler does not move a placed tensor): a PSUM tensor occupies the banks its address
names, and tensors placed on the same bank share it, so a bank is charged once however many tensors are placed on
it; an SBUF tensor placed by address occupies ``[start, start + its bytes per partition)`` of a partition, and placed
SBUF tensors are charged the union of those ranges. The migration guide (nki/migration/index.rst L1093-1103) calls
the free offset an element offset while its PSUM example passes bytes: the union is taken under both readings
(start = free_offset, start = free_offset * itemsize) and the larger one charged (assumption: the stricter
reading, as the guide says nothing of capacity).
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
        self.peaks = {buf: 0 for buf in self.limits}
        self._ids = itertools.count()
        self.psum_bank_bytes = int(cost.constant("psum_bank_bytes", target))
        # the instruction counter, and the instruction issued at each tick (for the refusal's message)
        self.clock = 0
        self.instructions = [None]
        # tiles left to the compiler: key -> [buffer, name, bytes per partition, first tick used, last tick used]
        self.tiles = {}
        # tensors placed by address: key -> [buffer, name, first tick, last tick (None while held), banks, ranges];
        # banks: the PSUM banks it occupies; ranges: its SBUF (first, end byte) with the free offset read as bytes,
        # and read as elements
        self.placed = {}

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
        banks = tuple(psum_banks) if buffer == "psum" and psum_banks is not None else ()
        if banks or (buffer == "sbuf" and sbuf_start is not None):
            ranges = () if banks else tuple((start, start + nbytes) for start in
                                            (int(sbuf_start), int(sbuf_start) * storage.dtype.itemsize))
            self.placed[key] = [buffer, storage.name, self.clock, None, banks, ranges]
            weakref.finalize(storage, self._release, key)
        else:
            self.tiles[key] = [buffer, storage.name, nbytes, None, None]
            storage.memory_use = (self, key)

    def _release(self, key):
        entry = self.placed.get(key)
        if entry is not None and entry[3] is None:
            entry[3] = self.clock

    def use(self, key):
        """The tile ``key`` is read or written at the current tick."""
        entry = self.tiles[key]
        if entry[3] is None:
            entry[3] = self.clock
        entry[4] = self.clock

    def check(self, instruction):
        """One more instruction: advance the clock (the capacity itself is checked by ``finish``)."""
        self.clock += 1
        self.instructions.append(instruction)

    def _placed_bytes(self, buffer, tick):
        live = [entry for entry in self.placed.values() if entry[0] == buffer and entry[2] <= tick
                and (entry[3] is None or tick < entry[3])]
        if buffer == "psum":
            return len({bank for entry in live for bank in entry[4]}) * self.psum_bank_bytes
        return max((_union_length(entry[5][reading] for entry in live) for reading in (0, 1)), default=0)

    def finish(self):
        """Peak live bytes per partition of each buffer over the program; raise :class:`CapacityError` if one
        exceeds its buffer (naming the instruction at the peak and the largest tiles live there)."""
        for buffer, limit in self.limits.items():
            events = collections.defaultdict(int)
            for entry in self.tiles.values():
                if entry[0] == buffer and entry[3] is not None:
                    events[entry[3]] += entry[2]
                    events[entry[4] + 1] -= entry[2]
            ticks = sorted(set(events) | {entry[2] for entry in self.placed.values() if entry[0] == buffer})
            total, peak, peak_tick = 0, 0, None
            for tick in ticks:
                total += events.get(tick, 0)
                here = total + (self._placed_bytes(buffer, tick) if self.placed else 0)
                if here > peak:
                    peak, peak_tick = here, tick
            self.peaks[buffer] = peak
            if peak > limit:
                live = sorted((entry for entry in self.tiles.values() if entry[0] == buffer and entry[3] is not None
                               and entry[3] <= peak_tick <= entry[4]), key=lambda e: -e[2])
                listing = ", ".join(f"{e[1]!r} {e[2]} B" for e in live[:4])
                where = self.instructions[peak_tick] if peak_tick < len(self.instructions) else "the end"
                raise CapacityError(
                    f"{where} (instruction {peak_tick} of the program): live {buffer.upper()} allocations need {peak} "
                    f"B per partition, more than the {limit} B per partition of {buffer.upper()} on {self.target} "
                    + (f"(PSUM is allocated in whole {self.psum_bank_bytes // 1024} KiB banks, "
                       f"{limit // self.psum_bank_bytes} per partition) " if buffer == "psum" else "")
                    + f"(a tile counts from the first instruction that reads or writes it to the last; largest live "
                    f"there: {listing or 'tensors placed by address'})"
                )
