"""Where a kernel launch runs: the CPU simulator (``nkisim``) or a Neuron device (``neuron``).

The kernel files import only ``nki``, ``nki.language`` and ``nki.isa``. :func:`kernel_module` loads a
kernel file once per backend, with those names bound to the backend's package while the file
executes: ``dste.nkisim`` for ``nkisim`` (without leaving the simulator in ``sys.modules`` as
``nki``), the real SDK for ``neuron``. The loaded modules live in ``sys.modules`` under
``dste.kernels.<backend>.<name>``, so each file is executed once per backend.

:func:`launch` runs one ``kernel[lnc]`` launch and returns ``(outputs, record)``: on ``nkisim`` the
record is the simulator's :class:`~dste.nkisim.Profile` (every time in it *modelled*); on ``neuron``
it is a :class:`DeviceTiming` with the *measured* wall time of the launch. The ``neuron`` backend needs
a real ``nki``, ``torch-neuronx`` and a Neuron device; none of them exists on the development
machines, so this path is written to the SDK's documented interface but has not run here.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BACKENDS = ("nkisim", "neuron")
_KERNEL_DIR = Path(__file__).resolve().parent


class NeuronUnavailableError(RuntimeError):
    """The ``neuron`` backend was asked for on a host without the Neuron SDK or a device."""


@dataclass
class DeviceTiming:
    """Measured (not modelled) wall time of launches on a Neuron device."""

    target: str
    wall_us: float
    launches: int = 1
    modelled: bool = False

    def merge(self, other):
        return DeviceTiming(self.target, self.wall_us + other.wall_us, self.launches + other.launches)


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} cannot run an NKI kernel; allowed: {', '.join(BACKENDS)}")
    return backend


def kernel_module(name: str, backend: str = "nkisim"):
    """The kernel file ``dste/kernels/<name>.py`` executed against ``backend``'s ``nki`` package."""
    check_backend(backend)
    module_name = f"dste.kernels.{backend}.{name}"
    loaded = sys.modules.get(module_name)
    if loaded is not None:
        return loaded
    packages = _nki_packages(backend)
    saved = {key: sys.modules.get(key) for key in packages}
    spec = importlib.util.spec_from_file_location(module_name, _KERNEL_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    try:
        sys.modules.update(packages)
        spec.loader.exec_module(module)
    finally:
        for key, value in saved.items():
            if value is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = value
    sys.modules[module_name] = module
    return module


def _nki_packages(backend):
    if backend == "nkisim":
        from dste.nkisim.install import official_modules

        return official_modules()  # the names a Neuron SDK has, and no simulator helper
    from dste.nkisim import real_nki_available

    if not real_nki_available():
        raise NeuronUnavailableError(
            "backend 'neuron' needs the Neuron SDK (a working `import nki`, plus torch-neuronx and a Neuron "
            "device); use backend='nkisim' to run the same kernels in the simulator"
        )
    return {key: importlib.import_module(key) for key in ("nki", "nki.language", "nki.isa")}


def launch(kernel, args, *, lnc: int, target: str, backend: str = "nkisim"):
    """Run ``kernel[lnc](*args)`` on ``backend``; returns ``(outputs as NumPy, Profile | DeviceTiming)``."""
    check_backend(backend)
    if backend == "nkisim":
        from dste.nkisim import profile

        return profile(kernel[lnc], *args, target=target)
    return _launch_on_device(kernel, args, lnc, target)


def _launch_on_device(kernel, args, lnc, target):
    try:
        import torch
        import torch_neuronx  # noqa: F401 - registers the Neuron device with torch-xla
        import torch_xla.core.xla_model as xm
    except ImportError as exc:
        raise NeuronUnavailableError(f"backend 'neuron' needs torch-neuronx and torch-xla: {exc}") from exc
    device = xm.xla_device()
    device_args = [_to_device(torch, value, device) for value in args]
    xm.wait_device_ops()
    start = time.perf_counter()
    outputs = kernel[lnc](*device_args)
    xm.mark_step()
    xm.wait_device_ops()
    wall_us = (time.perf_counter() - start) * 1e6
    items = outputs if isinstance(outputs, tuple) else (outputs,)
    arrays = tuple(_to_numpy(torch, t) for t in items)
    return (arrays if isinstance(outputs, tuple) else arrays[0]), DeviceTiming(target, wall_us)


def _to_device(torch, value, device):
    if not isinstance(value, np.ndarray):
        return value
    if value.dtype.name == "bfloat16":
        tensor = torch.from_numpy(np.ascontiguousarray(value).view(np.int16)).view(torch.bfloat16)
    else:
        tensor = torch.from_numpy(np.ascontiguousarray(value))
    return tensor.to(device)


def _to_numpy(torch, tensor):
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        import ml_dtypes

        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()
