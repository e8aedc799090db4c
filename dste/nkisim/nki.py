"""The simulator's ``nki`` module: ``nki.jit``, ``nki.simulate``, ``nki.language``, ``nki.isa``.

:func:`dste.nkisim.install` registers it in ``sys.modules`` as ``nki`` when the
real package cannot be imported.
"""

from . import collectives, isa, language  # noqa: F401 - submodules of the nki namespace
from . import nki_typing as typing  # noqa: F401 - nki.typing
from .jit import Kernel, jit, simulate  # noqa: F401

__version__ = "0.6.0+dste.nkisim"
__dste_nkisim__ = True
