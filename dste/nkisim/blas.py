"""Run NumPy's bundled OpenBLAS single-threaded while a kernel is simulated.

Each simulated matmul is at most 128x128x512: far too small to gain from BLAS
threads, and on a loaded machine OpenBLAS's thread hand-off makes it ~50x
slower. The previous thread count is restored afterwards. If the library
cannot be found this does nothing.
"""

import contextlib
import ctypes
import glob
import os

import numpy as np


def _find_numpy_openblas():
    """NumPy's bundled OpenBLAS (the ``numpy.libs`` copy NumPy already loaded), or None when absent."""
    libs_dir = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    for path in sorted(glob.glob(os.path.join(libs_dir, "libscipy_openblas*.so*"))):
        try:
            lib = ctypes.CDLL(path)
            lib.scipy_openblas_get_num_threads64_.restype = ctypes.c_int
            lib.scipy_openblas_set_num_threads64_.argtypes = [ctypes.c_int]
        except (OSError, AttributeError):
            continue
        return lib
    return None


#: The installed NumPy's OpenBLAS, looked up once at import (a property of the installation).
NUMPY_OPENBLAS = _find_numpy_openblas()


@contextlib.contextmanager
def single_threaded():
    lib = NUMPY_OPENBLAS
    if lib is None:
        yield
        return
    previous = lib.scipy_openblas_get_num_threads64_()
    lib.scipy_openblas_set_num_threads64_(1)
    try:
        yield
    finally:
        lib.scipy_openblas_set_num_threads64_(previous)
