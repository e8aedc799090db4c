"""Register the simulator as ``nki`` / ``nki.language`` / ``nki.isa`` when the real SDK is absent."""

import importlib
import sys


def _is_ours(module):
    return getattr(module, "IS_DSTE_NKISIM", False)


def real_nki_available():
    """True if ``import nki`` gives a working package other than this simulator."""
    existing = sys.modules.get("nki")
    if existing is not None:
        return not _is_ours(existing)
    try:
        module = importlib.import_module("nki")
        importlib.import_module("nki.language")
        importlib.import_module("nki.isa")
    except Exception:  # the PyPI placeholder raises ImportError; a broken install may raise anything
        for name in [n for n in sys.modules if n == "nki" or n.startswith("nki.")]:
            del sys.modules[name]
        return False
    return not _is_ours(module)


def install(force=False):
    """Put the simulator in ``sys.modules`` as ``nki``, ``nki.language``, ``nki.isa``.

    A working real ``nki`` is left alone unless ``force=True``. Returns True if
    the simulator is (now) what ``import nki`` gives.
    """
    from . import isa, language, nki, nki_typing

    if not force and real_nki_available():
        return False
    for name in [n for n in sys.modules if n == "nki" or n.startswith("nki.")]:
        del sys.modules[name]
    sys.modules["nki"] = nki
    sys.modules["nki.language"] = language
    sys.modules["nki.isa"] = isa
    sys.modules["nki.typing"] = nki_typing
    return True


def uninstall():
    """Remove the simulator's ``nki`` entries from ``sys.modules`` (no-op for a real nki)."""
    module = sys.modules.get("nki")
    if module is not None and _is_ours(module):
        for name in ("nki", "nki.language", "nki.isa", "nki.typing"):
            sys.modules.pop(name, None)
