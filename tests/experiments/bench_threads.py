"""The fixture the bench tests share: run_bench pins the process's threads (torch's and the BLAS environment
variables), and the rest of the test session gets its own setting back."""

import os

import pytest
import torch

from dste.experiments import bench


@pytest.fixture(autouse=True)
def restore_threads():
    """Torch's thread count and the BLAS thread variables as they were before the test."""
    threads = torch.get_num_threads()
    env = {name: os.environ.get(name) for name in bench.THREAD_ENV_VARS}
    yield
    torch.set_num_threads(threads)
    for name, value in env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
