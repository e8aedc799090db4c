"""Races between the two cores of a kernel[2] launch on the shared HBM both of them address.

On hardware the two programs of a kernel[2] launch run at the same time on two NeuronCores that share HBM
(nki/get-started/about/lnc.rst). The simulator runs them one after the other between ``core_barrier`` s
(``runtime.Lockstep``), so a kernel in which one core reads what the other writes, with no barrier between the two
accesses, gets the answer of that one order here and a timing-dependent one on hardware. The documented pattern is
the one ``nisa.core_barrier`` exists for: "two NeuronCores both need to write to disjoint portions of a shared HBM
tensor ... and they both need to consume the tensor after both cores have finished writing into the tensor"
(nki/api/nki/isa/__init__.py, core_barrier).

:class:`SharedAccessLog` records, per program and per barrier interval, which bytes of each ``shared_hbm`` tensor
(the launch's arguments and its ``nl.shared_hbm`` allocations) a DMA instruction read or wrote. An access that
meets the other program's write in the same interval, or a write that meets the other program's read, is refused
(rule ``kernel.lnc.shared-race``). Reads of the same bytes by both cores are fine, and so are writes of the same
bytes with equal values (a kernel that does not split its work by ``nl.program_id`` writes every output twice,
which is wasteful but gives one answer whatever the timing). Granularity is the byte: a DMA writes whole bytes, so
two cores writing neighbouring bytes do not race (an assumption; the docs do not say).

A write is recorded after the instruction has stored its values, so that the values can be compared.
"""

import numpy as np

from .rules_language import violate

SHARED_BUFFER = "shared_hbm"


class _Marks:
    """The bytes one program read or wrote of one storage during one barrier interval (and, for writes, the values
    it left there)."""

    __slots__ = ("interval", "mask", "values")

    def __init__(self, nbytes, keeps_values):
        self.interval = -1
        self.mask = np.zeros(nbytes, dtype=bool)
        self.values = np.zeros(nbytes, dtype=np.uint8) if keeps_values else None

    def of(self, interval):
        """This program's marks for ``interval``, cleared when the program has moved on to a new one."""
        if self.interval != interval:
            self.mask[...] = False
            self.interval = interval
        return self.mask


class SharedAccessLog:
    """The shared-HBM accesses of the two programs of one kernel[2] launch (one log per launch).

    Within an interval the simulator runs program 0 to its barrier before program 1 starts it (``runtime.Lockstep``),
    so every conflicting pair is seen when its second access is recorded."""

    def __init__(self):
        # id(storage) -> (storage, {(program, "read" | "write"): _Marks}); the storage is kept so its id stays its own
        self._storages = {}

    def record(self, instr, program, interval, view, kind, element_index=None):
        """Record that ``program`` (in barrier ``interval``) read or wrote (``kind``) the bytes of ``view``, or, for
        an indirect access, the elements ``element_index`` of its storage in the view's dtype; refuse a race. A write
        is recorded once its values are stored."""
        storage = view.storage
        if storage.buffer != SHARED_BUFFER:
            return
        _, marks = self._storages.setdefault(id(storage), (storage, {}))
        region = _byte_region(view, element_index)
        other = 1 - program
        theirs = marks.get((other, "write"))
        if theirs is not None and theirs.interval == interval:
            overlap = region(theirs.mask)
            if kind == "write":  # equal values written by both cores give one answer whatever the timing
                overlap = overlap & (region(storage.data) != region(theirs.values))
            if overlap.any():
                _refuse(instr, program, kind, other, "write", view, interval, overlap)
        theirs = marks.get((other, "read"))
        if kind == "write" and theirs is not None and theirs.interval == interval:
            overlap = region(theirs.mask)
            if overlap.any():
                _refuse(instr, program, kind, other, "read", view, interval, overlap)
        mine = marks.get((program, kind))
        if mine is None:
            mine = marks[(program, kind)] = _Marks(storage.nbytes, keeps_values=kind == "write")
        region(mine.of(interval), mark=True)
        if kind == "write":
            region(mine.values, values=region(storage.data))


def _byte_region(view, element_index):
    """A function ``region(array, mark=False, values=None)`` over a byte-sized array of the view's storage: the
    entries at the bytes the access touches; ``mark`` sets them to True, ``values`` stores those values there."""
    item = view.dtype.itemsize
    if element_index is not None:
        byte_index = (np.asarray(element_index, dtype=np.int64).reshape(-1, 1) * item
                      + np.arange(item, dtype=np.int64)).reshape(-1)

        def indexed(array, mark=False, values=None):
            if mark or values is not None:
                array[byte_index] = True if mark else values
                return None
            return array[byte_index]

        return indexed
    shape = tuple(view.shape) + (item,)
    strides = tuple(view._byte_strides) + (1,)
    offset = view._resolved_offset()

    def strided(array, mark=False, values=None):
        region = np.ndarray(shape, dtype=array.dtype, buffer=array, offset=offset, strides=strides)
        if mark or values is not None:
            region[...] = True if mark else values
            return None
        return region

    return strided


def _refuse(instr, program, kind, other, other_kind, view, interval, overlap):
    where = "before the launch's first nisa.core_barrier" if interval == 0 else \
        f"between core_barrier {interval} and the next one"
    verb = {"read": "reads", "write": "writes"}[kind]
    if kind == "write" and other_kind == "write":
        verb = "writes other values into"
    other_verb = {"read": "read", "write": "wrote"}[other_kind]
    violate("kernel.lnc.shared-race",
            f"nisa.{instr}: program {program} {verb} {int(np.count_nonzero(overlap))} byte(s) of shared HBM tensor "
            f"{view.name!r} that program {other} {other_verb} {where}; the two cores run at the same time, so the "
            "result depends on their timing. Give each core a disjoint part of a shared tensor, and read the other "
            "core's part only after a nisa.core_barrier on it")
