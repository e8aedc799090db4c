"""Atomic replacement (:func:`atomic_write`, used for every file DSTE replaces: matrices,
graph bundles, controller checkpoints, ``results.json``, plots): the bytes go to a hidden temporary file in
the target's directory (``.<name>.<pid>.<random>.dste-tmp``), which is flushed and fsynced,
then renamed over the target with ``os.replace`` (atomic on POSIX and Windows) and the
directory fsynced. A failure removes the temporary file and leaves the previous file intact.
A temporary file left by a killed process is never read (its name is not the target's) and
is removed by the next write to the same target once its process is gone.

It belongs to no room of the package and imports nothing from it, so every room may write through it.
"""

from __future__ import annotations

import os
import re
import secrets

TEMP_SUFFIX = ".dste-tmp"


def atomic_write(path, write, mode: str = "wb") -> None:
    """Replace ``path`` with what ``write(handle)`` writes, atomically (module docstring).

    ``write`` receives an open file object (binary for ``mode="wb"``, text for ``"w"``).
    Raises :class:`IsADirectoryError` / :class:`FileNotFoundError` naming the path when the
    target is a directory or its directory does not exist.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    if not name or os.path.isdir(path):
        raise IsADirectoryError(f"cannot write {path!r}: it is a directory, a file path is needed")
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot write {path!r}: directory {directory!r} does not exist")
    _remove_stale_temps(directory, name)
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
    try:
        with open(tmp, mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened; os.replace is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_stale_temps(directory: str, name: str) -> None:
    """Remove temporaries of ``name`` whose writing process no longer exists (killed mid-write)."""
    pattern = re.compile(rf"^\.{re.escape(name)}\.(\d+)\.[0-9a-f]+{re.escape(TEMP_SUFFIX)}$")
    try:
        entries = os.listdir(directory)
    except OSError:
        return
    for entry in entries:
        match = pattern.match(entry)
        if match and not _process_alive(int(match.group(1))):
            try:
                os.remove(os.path.join(directory, entry))
            except OSError:
                pass


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # another thread of this process may be writing the same target right now
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True
