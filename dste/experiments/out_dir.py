"""The check of an ``--out`` directory that ``dste run`` and ``dste bench`` make before any work.

``check_out_dir(out, outputs, overwrite, kind)`` raises ``ValueError`` naming ``--out`` unless ``out`` is a
directory (or can be created as one) that this process can write in and that holds none of a ``kind``'s
``outputs`` unless ``overwrite``. An earlier run's outputs (some took a quarter of an hour) were written over, and a
directory that could not be written was found out only at the first write, after all the work.
``new_stamped_dir(parent)`` creates the default ``parent/<timestamp>`` of a command given no ``--out``.
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime
from pathlib import Path

__all__ = ["check_out_dir", "new_stamped_dir"]


def check_out_dir(out: Path, outputs: tuple[str, ...], overwrite: bool, kind: str) -> None:
    """Refuse ``out`` (see the module docstring); ``kind`` names what writes it ("run", "bench") in the message."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is an existing file, not a directory; give a directory (it is created if "
                         "missing)")
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"--out {out}: {parent} is not a directory; give a directory (it is created if missing)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: {parent} is not writable; give a writable directory")
    if out.is_dir():  # a permission bit is not enough (a read-only mount, /proc): try a write
        try:
            with tempfile.TemporaryFile(dir=out):
                pass
        except OSError as error:
            raise ValueError(f"--out {out}: a file cannot be written there ({error.strerror}); give a writable "
                             "directory") from None
    held = [name for name in outputs if (out / name).exists()]
    if held and not overwrite:
        raise ValueError(f"--out {out} already holds a {kind}'s {', '.join(held)}; give a new directory, or "
                         f"--overwrite to replace that {kind}'s outputs")


def new_stamped_dir(parent: Path) -> Path:
    """A new directory ``parent/<timestamp>`` (``-2``, ``-3``, ... after it where another command started in the
    same second), created here so that two commands never share one and write over each other's outputs."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for attempt in range(1, 10_000):
        path = parent / (stamp if attempt == 1 else f"{stamp}-{attempt}")
        try:
            path.mkdir(parents=True)
        except FileExistsError:
            continue
        return path
    raise OSError(f"could not create a new output directory {parent}/{stamp}-N; give one with --out")
