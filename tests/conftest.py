"""Pins BLAS, OpenMP and torch to one thread for the whole test session.

The machines that run the suite have two cores shared with other jobs. Multi-threaded BLAS and torch hand small
products between threads, which on a busy machine costs more than the products themselves, and makes float
summation order depend on the core count. The BLAS/OpenMP thread counts are read once, when NumPy/torch load
their libraries, so they are set here, before any test module imports them; torch's intra-op pool is set after.
A variable already set in the environment is left as it is.
"""

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import torch  # noqa: E402  (after the thread variables, on purpose)

torch.set_num_threads(1)

# pytest's own in-process runner, for tests that check how the repository's pytest.ini selects tests
pytest_plugins = ["pytester"]
