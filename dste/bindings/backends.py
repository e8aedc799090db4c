"""Backend selection for the DSTE torch ops.

Backends:

* ``cpu``    -- SciPy sparse execution of the matrix's effective (decoded, masked, scaled) values. Fast;
  exact to fp32 summation order. The kernels multiply bf16 operands in fp32, so ``nkisim``/``neuron`` agree
  with it within 2^-7 (|A| |X|) per output (README, "Backends"), whatever X's dtype.
* ``nkisim`` -- runs the NKI kernels of ``dste.kernels`` in the ``dste.nkisim`` CPU simulator. Slow; for
  parity checks and profiles.
* ``neuron`` -- the same kernel files on a Neuron device through the real AWS Neuron SDK. Import-guarded:
  without ``torch_neuronx`` and a device it raises :class:`BackendUnavailableError`. This path has not been
  run on hardware by this project.
* ``auto``   -- ``neuron`` when a device is available, otherwise ``cpu``. Opt-in (per call or through
  ``DSTE_BACKEND=auto``): a default that changes with the host would make results depend on it.

The default is ``cpu``; the environment variable ``DSTE_BACKEND`` overrides it. Device detection is not
cached: ``neuron_available()`` asks again on every ``neuron``/``auto`` resolution (without the SDK that is one
module lookup).
"""

from __future__ import annotations

import importlib.util
import os
import sys

import torch

__all__ = [
    "BACKENDS",
    "BACKEND_ENV_VAR",
    "DEFAULT_BACKEND",
    "BackendUnavailableError",
    "neuron_available",
    "resolve_backend",
]

BACKENDS = ("cpu", "nkisim", "neuron", "auto")
BACKEND_ENV_VAR = "DSTE_BACKEND"
DEFAULT_BACKEND = "cpu"

# Backends that execute the NKI kernels and therefore need the encoded matrix object, not only its CSR.
KERNEL_BACKENDS = ("nkisim", "neuron")


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run on this host."""


def neuron_available() -> bool:
    """True when the Neuron PyTorch SDK is importable and reports at least one device.

    The ``nki`` module name alone proves nothing here: ``dste.nkisim.install()`` registers the simulator under
    that name on hosts without the SDK.
    """
    if importlib.util.find_spec("torch_neuronx") is None:
        return False
    try:
        import torch_neuronx  # noqa: F401  (import-guarded: absent on CPU hosts)
        import torch_xla.core.xla_model as xm

        return len(xm.get_xla_supported_devices("NEURON") or []) > 0
    except Exception:  # the SDK is present but broken or has no device: treat as unavailable
        return False


def _assume_constant_result(fn):
    """``torch.compiler.assume_constant_result(fn)`` without importing ``torch._dynamo`` at import time.

    That decorator imports Dynamo (about 1 s of CPU, most of ``import dste``'s time) only to set one marker
    attribute on ``fn`` (torch 2.13: ``torch._dynamo.decorators.assume_constant_result``), which Dynamo reads
    when it traces a call. Once Dynamo is loaded the real decorator is used; before, the same attribute is set
    directly, so a later ``torch.compile`` sees an identical function (checked by
    ``tests/bindings/test_backends.py`` against the real decorator).
    """
    if "torch._dynamo" in sys.modules:
        return torch.compiler.assume_constant_result(fn)
    fn._dynamo_marked_constant = True
    return fn


@_assume_constant_result
def _backend_from_environment() -> str:
    return os.environ.get(BACKEND_ENV_VAR, DEFAULT_BACKEND).strip().lower() or DEFAULT_BACKEND


@_assume_constant_result
def _auto_backend() -> str:
    return "neuron" if neuron_available() else "cpu"


def resolve_backend(backend: str | None) -> str:
    """Return the concrete backend (``cpu``, ``nkisim`` or ``neuron``) for a per-call choice.

    ``None`` reads ``DSTE_BACKEND`` (``cpu`` when unset); ``auto`` picks ``neuron`` when available, else ``cpu``. An unknown name
    raises ``ValueError`` listing the allowed ones; ``neuron`` without the SDK raises
    :class:`BackendUnavailableError`.
    """
    source = "backend argument"
    if backend is None:
        backend = _backend_from_environment()
        source = f"environment variable {BACKEND_ENV_VAR}"
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str (one of {BACKENDS}) or None, got {type(backend).__name__}")
    name = backend.strip().lower()
    if name not in BACKENDS:
        raise ValueError(f"unknown DSTE backend {backend!r} from {source}; allowed: {', '.join(BACKENDS)}")
    if name == "auto":
        return _auto_backend()
    if name == "neuron" and not neuron_available():
        raise BackendUnavailableError(
            "backend 'neuron' needs the AWS Neuron SDK (torch-neuronx, neuronx-cc) and a Neuron device; "
            "none was found on this host. Use backend='cpu' or 'nkisim' (the NKI simulator)."
        )
    return name
