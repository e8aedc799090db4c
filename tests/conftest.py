"""Pins BLAS, OpenMP and torch to one thread for the whole test session.

The machines that run the suite have two cores shared with other jobs. Multi-threaded BLAS and torch hand small
products between threads, which on a busy machine costs more than the products themselves, and makes float
summation order depend on the core count. The BLAS/OpenMP thread counts are read once, when NumPy/torch load
their libraries, so they are set here, before any test module imports them; torch's intra-op pool is set in
``pytest_configure``, before collection. A variable already set in the environment is left as it is.

torch is imported only by processes that run tests: the pytest-xdist controller (``-n 2``) collects and runs
nothing, and importing torch there (~1.5 s of CPU) would delay the start of every worker by as much.
"""

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

# pytest's own in-process runner, for tests that check how the repository's pytest.ini selects tests
pytest_plugins = ["pytester"]


def _is_xdist_controller(config) -> bool:
    """True in the process that only hands tests to pytest-xdist workers (a worker has ``workerinput``)."""
    return not hasattr(config, "workerinput") and bool(getattr(config.option, "numprocesses", None))


def pytest_configure(config):
    if _is_xdist_controller(config):
        return
    import torch

    torch.set_num_threads(1)
