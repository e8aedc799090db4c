"""Register the simulator as ``nki`` / ``nki.language`` / ``nki.isa`` when the real SDK is absent.

The registered modules hold exactly the public names of the official NKI 0.6 stubs (``official_names``), looked up
on the simulator's own modules, which also hold the simulator's helpers: a kernel that uses a name the SDK does not
have fails here as it would on a device.
"""

import importlib
import sys
import types


def _is_ours(module):
    return getattr(module, "__dste_nkisim__", False)


class OfficialModule(types.ModuleType):
    """A module with only the official public names of an NKI module (and its submodules), each looked up on the
    simulator module that implements it when read, so a release-gated name is checked at use (``version``)."""

    def __init__(self, name, implementation, names, submodules=None):
        super().__init__(name, implementation.__doc__)
        self.__dict__.update(_implementation=implementation, _official=frozenset(names), __dste_nkisim__=True,
                             **(submodules or {}))
        if hasattr(implementation, "__version__"):
            self.__dict__["__version__"] = implementation.__version__

    def __getattr__(self, name):
        if name in self._official:
            return getattr(self._implementation, name)
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}: it is not in the public API of "
                             "NKI 0.6 (dste.nkisim.official_names lists what is)")

    def __dir__(self):
        implemented = [n for n in self._official if hasattr(self._implementation, n)]
        return sorted(implemented + [n for n, v in self.__dict__.items() if isinstance(v, types.ModuleType)])


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
    """Put the simulator in ``sys.modules`` as ``nki``, ``nki.language``, ``nki.isa``, ``nki.collectives``.

    A working real ``nki`` is left alone unless ``force=True``. Returns True if
    the simulator is (now) what ``import nki`` gives.
    """
    if not force and real_nki_available():
        return False
    for name in [n for n in sys.modules if n == "nki" or n.startswith("nki.")]:
        del sys.modules[name]
    sys.modules.update(official_modules())
    return True


def official_modules() -> dict:
    """``{"nki", "nki.language", "nki.isa", "nki.collectives", "nki.typing"}`` -> the simulator's modules as a kernel
    sees them: only the official public names (``install`` registers these; DSTE's own launchers load their kernel
    files against them without registering anything, ``dste.kernels.device``)."""
    from . import collectives, isa, language, nki, nki_typing, official_names

    public_language = OfficialModule("nki.language", language, official_names.LANGUAGE)
    public_isa = OfficialModule("nki.isa", isa, official_names.ISA)
    public_collectives = OfficialModule("nki.collectives", collectives, official_names.COLLECTIVES)
    public_nki = OfficialModule("nki", nki, official_names.NKI, {
        "language": public_language, "isa": public_isa, "collectives": public_collectives, "typing": nki_typing})
    return {"nki": public_nki, "nki.language": public_language, "nki.isa": public_isa,
            "nki.collectives": public_collectives, "nki.typing": nki_typing}


def uninstall():
    """Remove the simulator's ``nki`` entries from ``sys.modules`` (no-op for a real nki)."""
    module = sys.modules.get("nki")
    if module is not None and _is_ours(module):
        for name in ("nki", "nki.language", "nki.isa", "nki.collectives", "nki.typing"):
            sys.modules.pop(name, None)
