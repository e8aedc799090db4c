"""File writing for the fuzz examples, which rewrite the same scratch files hundreds of times per run."""

from pathlib import Path


def write_fresh(path: Path, content: bytes) -> None:
    """Write ``content`` to ``path`` as a new file (the old one unlinked first), never by truncating it in place.

    ext4 (``auto_da_alloc``, on by default) flushes a file truncated to zero and rewritten to disk when it is
    closed, so every in-place rewrite waits for the disk: ~3 ms each here, seconds per run over the examples.
    A new file stays in the page cache. What the loader then reads is the same bytes either way."""
    path.unlink(missing_ok=True)
    path.write_bytes(content)
