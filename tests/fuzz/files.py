"""Scratch folders of the fuzz examples, which rewrite the same few files hundreds of times per run."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

MEMORY_FILESYSTEM = Path("/dev/shm")


@contextmanager
def scratch_folder(tmp_path_factory, name: str):
    """A folder for the examples' files: in memory (the tmpfs at /dev/shm) where the machine has one, else under
    pytest's temporary folder; removed afterwards.

    On a disk every example waits for it: ext4 (``auto_da_alloc``, on by default) flushes a file that is truncated
    and rewritten when it is closed, and ``DSTEMatrix.save`` fsyncs the file and its folder (measured here:
    ~3 ms per rewritten file, ~10 ms per save, seconds per run over the examples; on tmpfs 0.03 and 0.07 ms).
    The loaders read back the same bytes wherever the folder is, and no test can observe a flush."""
    if MEMORY_FILESYSTEM.is_dir() and os.access(MEMORY_FILESYSTEM, os.W_OK):
        folder = Path(tempfile.mkdtemp(prefix=f"dste-{name}-", dir=MEMORY_FILESYSTEM))
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    else:
        yield tmp_path_factory.mktemp(name)
