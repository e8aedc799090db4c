"""The NKI version the simulator follows, and the gate that refuses APIs newer (or older) than it.

The simulator follows one NKI release at a time: by default 0.6.0 (Neuron 2.32), the newest whose
API stubs the project has read (``nki/api/nki/`` at aws-neuron-sdk commit 81ce03ae). Set
``DSTE_NKI_VERSION`` (e.g. ``0.3``) or call :func:`set_version` to follow an older release: an API
introduced after it is then refused with a :class:`~dste.nkisim.errors.ConstraintError` naming the
release that introduced it (``release-notes/components/nki.rst``), and an API removed by it is
refused the same way.
"""

import os

from .errors import ConstraintError

SUPPORTED = ((0, 3), (0, 4), (0, 5), (0, 6))
DEFAULT = (0, 6)
NEURON_RELEASE = {(0, 3): "2.29", (0, 4): "2.30", (0, 5): "2.31", (0, 6): "2.32"}

_chosen = None


def parse(text):
    """``"0.6"`` / ``"0.6.0"`` / ``(0, 6)`` -> ``(0, 6)``; refuses versions the simulator does not follow."""
    if isinstance(text, tuple):
        version = tuple(int(v) for v in text[:2])
    else:
        try:
            version = tuple(int(part) for part in str(text).strip().split(".")[:2])
        except ValueError:
            version = ()
    if version not in SUPPORTED:
        allowed = ", ".join(f"{a}.{b}" for a, b in SUPPORTED)
        raise ValueError(f"NKI version {text!r} is not followed by the simulator; allowed: {allowed}")
    return version


def current():
    """The followed NKI version as ``(major, minor)``."""
    global _chosen
    if _chosen is None:
        _chosen = parse(os.environ.get("DSTE_NKI_VERSION", "0.6"))
    return _chosen


def set_version(text):
    """Follow another NKI release (returns the previous one, for restoring)."""
    global _chosen
    previous = current()
    _chosen = parse(text)
    return previous


def label(version=None):
    major, minor = version or current()
    return f"NKI {major}.{minor} (Neuron {NEURON_RELEASE[(major, minor)]})"


def require(api, introduced=None, removed=None, source="release-notes/components/nki.rst"):
    """Refuse ``api`` when the followed release predates ``introduced`` or has ``removed`` it."""
    now = current()
    if introduced is not None and now < parse(introduced):
        raise ConstraintError(
            f"{api} was introduced in NKI {introduced}; the simulator follows {label(now)} "
            f"(set DSTE_NKI_VERSION to {introduced} or later to use it; source: {source})"
        )
    if removed is not None and now >= parse(removed):
        raise ConstraintError(f"{api} was removed in NKI {removed}; the simulator follows {label(now)} (source: {source})")
