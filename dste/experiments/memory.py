"""Freed memory kept in the process for reuse while a job runs (glibc's malloc; elsewhere nothing changes).

A job allocates and frees arrays of tens of MB thousands of times (at ogbn-arxiv's size one layer input is 87 MB
of float32). By default glibc serves every allocation above 32 MB with a mapping of its own and returns it to
the kernel when it is freed, so the next such array is fresh memory that the kernel clears page by page. In
``dste run --dataset arxiv-scale`` on this project's 2-core virtual machines 29 % of the job's CPU time was
system time, and ``perf`` put most of it in the kernel's page clearing under page faults. With mappings of their
own off and the heap's trim threshold raised, freed arrays return to malloc's heap and the next allocation
reuses them: measured on the arxiv-sized graph, 8 FP32 training epochs 24.4 -> 17.3 s, pricing every action of
two snapshots' layers 77 -> 67-78 s.

What changes is where memory comes from, never a value: reused memory is written before it is read, as fresh
memory must be (``np.empty`` promises nothing about its contents either way).
"""

from __future__ import annotations

import ctypes
import platform
from contextlib import contextmanager

__all__ = ["freed_memory_kept", "HEAP_TRIM_BYTES"]

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
_M_MMAP_MAX = -4
_DEFAULT_TRIM_THRESHOLD = 128 * 1024  # glibc's defaults, restored afterwards
_DEFAULT_MMAP_MAX = 65536

HEAP_TRIM_BYTES = 1 << 30
"""Free memory at the top of the heap kept before glibc returns it to the kernel: more than one layer run's
temporaries at ogbn-arxiv's size, little beside the job's 15 GB peak there."""


def _mallopt():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None


@contextmanager
def freed_memory_kept():
    """Within the block, large allocations come from malloc's heap and freed memory stays there (up to
    ``HEAP_TRIM_BYTES`` at its top); glibc's static defaults are restored afterwards. Yields whether the setting
    took effect (False off glibc)."""
    mallopt = _mallopt()
    applied = bool(mallopt) and bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, HEAP_TRIM_BYTES))
    try:
        yield applied
    finally:
        if mallopt:
            mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
            mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
