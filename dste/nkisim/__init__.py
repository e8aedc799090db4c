"""``dste.nkisim``: a strict CPU simulator of the current NKI API (0.3-0.6 subset) with a cost model.

- ``nki``, ``language``, ``isa``: module objects standing in for ``nki``, ``nki.language``, ``nki.isa``.
- ``install(force=False)``: register them in ``sys.modules`` when the real ``nki`` cannot be imported.
- ``profile(kernel, *args, target="trn2", **kwargs) -> (outputs, Profile)``: run a kernel and return
  its modelled profile (instructions, DMA traffic, engine cycles, latency bounds).
- ``cost``: the model's constants table and per-instruction cost functions.

Strict checks raise :class:`ConstraintError` / :class:`CapacityError` (``ValueError``),
:class:`OutOfBoundsError` (``IndexError``) or :class:`KernelSignatureError` (``TypeError``). A Scalar Engine
activation fed inputs outside its function's Valid Input Range writes NaN there and warns
(:class:`InvalidActivationInputWarning`): the hardware's output there is invalid.
The rules and their sources: ``docs/NKI_RULES.md``, ``docs/NKI_RULES_LANGUAGE.md``; the cost model:
``docs/COST_MODEL.md``.
"""

from . import cost, isa, language, nki  # noqa: F401
from .errors import (  # noqa: F401
    CapacityError, ConstraintError, InvalidActivationInputWarning, KernelSignatureError, NkiSimError, OutOfBoundsError,
)
from .install import install, real_nki_available, uninstall  # noqa: F401
from .jit import Kernel, jit, run_kernel, simulate  # noqa: F401
from .profile import Profile  # noqa: F401
from .tensor import NkiTensor  # noqa: F401


def profile(kernel, *args, target="trn2", **kwargs):
    """Run ``kernel`` (a ``jit`` kernel, ``kernel[lnc]``, or a plain function) on ``target``.

    Returns ``(outputs, Profile)``; every time in the profile is modelled for ``target``.
    """
    lnc = getattr(kernel, "lnc", 1)
    fn = getattr(kernel, "fn", kernel)
    return run_kernel(fn, args, kwargs, lnc=lnc, target=target, bracketed=getattr(kernel, "bracketed", None))
