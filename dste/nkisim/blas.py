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

_lib = None
_searched = False


def _openblas():
    global _lib, _searched
    if not _searched:
        _searched = True
        libs_dir = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
        for path in glob.glob(os.path.join(libs_dir, "libscipy_openblas*.so*")):
            try:
                lib = ctypes.CDLL(path)
                lib.scipy_openblas_get_num_threads64_.restype = ctypes.c_int
                lib.scipy_openblas_set_num_threads64_.argtypes = [ctypes.c_int]
                _lib = lib
                break
            except (OSError, AttributeError):
                continue
    return _lib


@contextlib.contextmanager
def single_threaded():
    lib = _openblas()
    if lib is None:
        yield
        return
    previous = lib.scipy_openblas_get_num_threads64_()
    lib.scipy_openblas_set_num_threads64_(1)
    try:
        yield
    finally:
        lib.scipy_openblas_set_num_threads64_(previous)
