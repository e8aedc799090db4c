"""Exceptions raised by the simulator's strict checks.

All of them are ``ValueError`` subclasses (or ``TypeError`` for call-signature
problems, ``IndexError`` for out-of-range indices) so that callers can catch
them with the built-in types as well.
"""


class NkiSimError(Exception):
    """Base class: something a kernel did would not compile or run on a NeuronCore."""


class ConstraintError(NkiSimError, ValueError):
    """An instruction violates a documented shape, dtype, buffer or engine limit."""


class CapacityError(ConstraintError):
    """Live SBUF or PSUM allocations exceed the per-partition bytes of the target."""


class OutOfBoundsError(NkiSimError, IndexError):
    """An index (static slice or indirect DMA index) falls outside its tensor."""


class KernelSignatureError(NkiSimError, TypeError):
    """Unknown keyword argument, bad argument type or bad kernel return value."""


class NkiValidationError(ConstraintError):
    """A documented hardware constraint is violated (``nki.isa.NkiValidationError``)."""


class LoopIndexWriteError(NkiValidationError, AssertionError):
    """An instruction writes a loop's index register. The NKI 0.4.0 release notes say such writes to an
    ``nl.dynamic_range`` index "now raise AssertionError at trace time", so this is one as well."""


class InvalidActivationInputWarning(RuntimeWarning):
    """A Scalar Engine activation read inputs outside its function's Valid Input Range (tbl-act-func), where the
    hardware's output is invalid; the simulator writes NaN there."""
