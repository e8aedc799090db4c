"""Exceptions raised by the DSTE format."""


class DSTEFormatError(ValueError):
    """An encoded matrix, its input or its file is invalid; the message says what and what is allowed."""


class DSTEFileError(DSTEFormatError):
    """A saved DSTE file is corrupt, truncated, of another version, or not a DSTE file."""


def meta_tensor_error(what: str, needs: str) -> DSTEFormatError:
    """The error for a torch tensor on the meta device (shapes without values) where ``needs`` reads its values."""
    return DSTEFormatError(f"{what} is on the meta device (shapes without values); {needs} computes on host (cpu) "
                           "tensors: pass a cpu tensor or NumPy array holding the values")
