"""Races between the two cores of a kernel[2] launch on the shared HBM both of them address.

On hardware the two programs of a kernel[2] launch run at the same time on two NeuronCores that share HBM
(nki/get-started/about/lnc.rst). The simulator runs them one after the other between ``core_barrier`` s
(``runtime.Lockstep``), so a kernel in which one core reads what the other writes, with no barrier between the two
accesses, gets the answer of that one order here and a timing-dependent one on hardware. The documented pattern is
the one ``nisa.core_barrier`` exists for: "two NeuronCores both need to write to disjoint portions of a shared HBM
tensor ... and they both need to consume the tensor after both cores have finished writing into the tensor"
(nki/api/nki/isa/__init__.py, core_barrier).

:class:`SharedAccessLog` records, per program and per barrier interval, which bytes of each ``shared_hbm`` tensor
(the launch's arguments and its ``nl.shared_hbm`` allocations) a DMA instruction read or wrote, and the values it
saw or left. A conflict is refused (rule ``kernel.lnc.shared-race``) only where the answer could depend on the
timing, that is where some order of the two cores' accesses (each core keeping its own order) gives a value
different from the simulator's order:

- a read of bytes the other core writes in the interval, unless every value the read could see is the one it saw:
  the other core wrote one value throughout, equal to what the byte held before (or to what this core wrote there
  first);
- a write of bytes the other core read in the interval, unless it writes the value the other core read;
- both cores writing the same bytes, unless the last value each core writes there is the same (checked at the next
  barrier, or when the launch ends).

So reads of the same bytes by both cores are fine, and so is a kernel that does not split its work by
``nl.program_id`` and writes every output twice with equal values (wasteful, but one answer whatever the timing).
Granularity is the byte: a DMA writes whole bytes, so two cores writing neighbouring bytes do not race (an
assumption; the docs do not say).
"""

import contextlib

import numpy as np

from .rules_language import violate

SHARED_BUFFER = "shared_hbm"


class _Reads:
    """The bytes one program read of one storage in one barrier interval: the value it saw first, and whether a
    later read saw another."""

    __slots__ = ("interval", "mask", "first", "varied")

    def __init__(self, nbytes):
        self.interval = -1
        self.mask = np.zeros(nbytes, dtype=bool)
        self.first = np.zeros(nbytes, dtype=np.uint8)
        self.varied = np.zeros(nbytes, dtype=bool)

    def start(self, interval):
        if self.interval != interval:
            self.mask[...] = False
            self.varied[...] = False
            self.interval = interval


class _Writes(_Reads):
    """The bytes one program wrote of one storage in one barrier interval: what they held before its first write,
    its first and last values, and whether it ever wrote a value other than its first."""

    __slots__ = ("before", "last")

    def __init__(self, nbytes):
        super().__init__(nbytes)
        self.before = np.zeros(nbytes, dtype=np.uint8)
        self.last = np.zeros(nbytes, dtype=np.uint8)


class SharedAccessLog:
    """The shared-HBM accesses of the two programs of one kernel[2] launch (one log per launch).

    Within an interval the simulator runs program 0 to its barrier before program 1 starts it (``runtime.Lockstep``),
    so every conflicting pair is seen when its second access is recorded; writes of both programs to the same bytes
    are compared once program 1 ends the interval (``end_interval``)."""

    def __init__(self):
        # id(storage) -> (storage, {program: _Reads}, {program: _Writes}); the storage is kept so its id stays its own
        self._storages = {}

    def _entry(self, storage):
        return self._storages.setdefault(id(storage), (storage, {}, {}))

    def read(self, instr, program, interval, view, element_index=None):
        """``program`` (in barrier ``interval``) reads the bytes of ``view``, or, for an indirect access, the elements
        ``element_index`` of its storage in the view's dtype."""
        storage, reads, writes = self._entry(view.storage)
        region = _byte_region(view, element_index)
        seen = region(storage.data).copy()
        theirs = _in_interval(writes, 1 - program, interval)
        if theirs is not None:
            mine = _in_interval(writes, program, interval)
            # what the byte holds in every order without the other core's writes: this core's own write, else the old
            baseline = region(theirs.before) if mine is None else np.where(
                region(mine.mask), region(mine.last), region(theirs.before))
            at_risk = region(theirs.mask) & (region(theirs.varied) | (region(theirs.first) != baseline))
            if at_risk.any():
                _refuse(instr, program, "reads", 1 - program, "wrote", view, interval, at_risk)
        _remember(_own(reads, program, _Reads, storage.nbytes, interval), region, seen)

    @contextlib.contextmanager
    def write(self, instr, program, interval, view, element_index=None):
        """The block writes the bytes of ``view`` (or the elements ``element_index``) for ``program``."""
        storage, reads, writes = self._entry(view.storage)
        region = _byte_region(view, element_index)
        before = region(storage.data).copy()
        yield
        after = region(storage.data).copy()
        theirs = _in_interval(reads, 1 - program, interval)
        if theirs is not None:
            at_risk = region(theirs.mask) & (region(theirs.varied) | (region(theirs.first) != after))
            if at_risk.any():
                _refuse(instr, program, "writes", 1 - program, "read", view, interval, at_risk)
        log = _own(writes, program, _Writes, storage.nbytes, interval)
        fresh = ~region(log.mask)
        region(log.before, np.where(fresh, before, region(log.before)))
        _remember(log, region, after)
        region(log.last, after)

    def end_interval(self, interval, where):
        """Program 1 ends ``interval`` (at a barrier, or the end of the launch): bytes both programs wrote in it
        must end with the same value from each."""
        for storage, _, writes in self._storages.values():
            first, second = _in_interval(writes, 0, interval), _in_interval(writes, 1, interval)
            if first is None or second is None:
                continue
            differ = first.mask & second.mask & (first.last != second.last)
            if differ.any():
                violate("kernel.lnc.shared-race",
                        f"{where}: program 0 and program 1 both wrote {int(np.count_nonzero(differ))} byte(s) of shared "
                        f"HBM tensor {storage.name!r} {_interval_words(interval)}, and their last values there differ, "
                        "so the result depends on which core writes last. " + _ADVICE)


def _in_interval(logs, program, interval):
    """``program``'s log in ``logs`` if it is of ``interval``, else None."""
    log = logs.get(program)
    return log if log is not None and log.interval == interval else None


def _own(logs, program, kind, nbytes, interval):
    """``program``'s log in ``logs`` (a new ``kind`` if it has none), started on ``interval``."""
    log = logs.get(program)
    if log is None:
        log = logs[program] = kind(nbytes)
    log.start(interval)
    return log


def _remember(log, region, values):
    """Mark the bytes in ``log``: a byte new to it keeps ``values`` as its first, a known one notes a change."""
    fresh = ~region(log.mask)
    region(log.varied, region(log.varied) | (~fresh & (region(log.first) != values)))
    region(log.first, np.where(fresh, values, region(log.first)))
    region(log.mask, True)


def _byte_region(view, element_index):
    """A function ``region(array, values=None)`` over a byte-sized array of the view's storage: the array's entries
    at the bytes the access touches, or, given ``values``, stores them there."""
    item = view.dtype.itemsize
    if element_index is not None:
        byte_index = (np.asarray(element_index, dtype=np.int64).reshape(-1, 1) * item
                      + np.arange(item, dtype=np.int64)).reshape(-1)

        def indexed(array, values=None):
            if values is None:
                return array[byte_index]
            array[byte_index] = values
            return None

        return indexed
    shape = tuple(view.shape) + (item,)
    strides = tuple(view._byte_strides) + (1,)
    offset = view._resolved_offset()

    def strided(array, values=None):
        region = np.ndarray(shape, dtype=array.dtype, buffer=array, offset=offset, strides=strides)
        if values is None:
            return region
        region[...] = values
        return None

    return strided


_ADVICE = ("Give each core a disjoint part of a shared tensor, and read the other core's part only after a "
           "nisa.core_barrier on it")


def _interval_words(interval):
    return "before the launch's first nisa.core_barrier" if interval == 0 else f"since nisa.core_barrier {interval}"


def _refuse(instr, program, verb, other, other_verb, view, interval, at_risk):
    violate("kernel.lnc.shared-race",
            f"nisa.{instr}: program {program} {verb} {int(np.count_nonzero(at_risk))} byte(s) of shared HBM tensor "
            f"{view.name!r} that program {other} {other_verb} {_interval_words(interval)}, and what it "
            f"{'sees' if verb == 'reads' else 'leaves'} there depends on the two cores' timing. " + _ADVICE)
