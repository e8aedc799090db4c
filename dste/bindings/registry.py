"""Integer handles for host objects that must reach a kernel backend through a torch op.

A torch custom op only takes tensors and scalars. The ``cpu`` backend needs nothing else: the matrix's
effective CSR crosses the boundary as tensors. The kernel backends (``nkisim``, ``neuron``) need the encoded
``DSTEMatrix`` (tiles, kinds, masks) and, for hybrid-row activations, the ``HybridRows`` object; those are
registered here and named in the op call by an int handle. Handle -1 means "none".

Entries are held weakly when the object supports weak references, so registering never extends a matrix's
life; otherwise the entry lives until :func:`release` is called.

Why a module-level table: ``torch.library`` custom ops accept only tensors and scalars, so a Python object can
reach the op's kernel-backend implementation only through a key the op receives as an int. This is the one
such table in DSTE; it holds no data of its own (it is not a cache) and never keeps an object alive.
"""

from __future__ import annotations

import itertools
import threading
import weakref

__all__ = ["NO_HANDLE", "register", "lookup", "release"]

NO_HANDLE = -1

_lock = threading.Lock()
_next_handle = itertools.count(1)
_entries: dict[int, object] = {}


def register(obj) -> int:
    """Register ``obj`` and return a fresh positive handle for it."""
    if obj is None:
        raise ValueError("cannot register None")
    with _lock:
        handle = next(_next_handle)
        try:
            _entries[handle] = weakref.ref(obj, lambda _ref, h=handle: _entries.pop(h, None))
        except TypeError:  # not weak-referenceable: hold it until released
            _entries[handle] = lambda obj=obj: obj
    return handle


def lookup(handle: int):
    """The object registered under ``handle``; ``LookupError`` if it was released or collected."""
    entry = _entries.get(int(handle))
    obj = entry() if entry is not None else None
    if obj is None:
        raise LookupError(
            f"DSTE handle {int(handle)} names no live object (released or garbage-collected); "
            "kernel backends need the encoded matrix, so call through dste.spmm / DSTETensor"
        )
    return obj


def release(handle: int) -> None:
    """Forget ``handle`` (no error if it is already gone)."""
    with _lock:
        _entries.pop(int(handle), None)
