"""Exceptions raised by the DSTE format."""


class DSTEFormatError(ValueError):
    """An encoded matrix, its input or its file is invalid; the message says what and what is allowed."""


class DSTEFileError(DSTEFormatError):
    """A saved DSTE file is corrupt, truncated, of another version, or not a DSTE file."""
