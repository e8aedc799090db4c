"""pytest-benchmark suite of DSTE; run on its own (the default test run collects only ``tests/``)::

    python -m pytest bench --benchmark-json=bench-results/pytest-benchmark.json
    python -m pytest bench/test_cpu_spmm.py bench/test_modelled.py --bench-graphs cora-like --bench-features 128
                                                                                # a short run

Threads are pinned here, before NumPy, SciPy or torch is imported, to the same count for every contender:
``DSTE_BENCH_THREADS`` (default: all cores) goes to OMP/MKL/OPENBLAS_NUM_THREADS and ``torch.set_num_threads``.
The setting and the versions are written into the JSON's ``machine_info``.
"""

import os
import sys

BENCH_THREADS = int(os.environ.get("DSTE_BENCH_THREADS", os.cpu_count() or 1))
_NUMPY_LOADED_BEFORE_PINNING = "numpy" in sys.modules
for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_name] = str(BENCH_THREADS)

import pytest  # noqa: E402

from dste.experiments import bench  # noqa: E402

THREADS = bench.pin_threads(BENCH_THREADS)
THREADS["numpy_loaded_before_pinning"] = _NUMPY_LOADED_BEFORE_PINNING


def pytest_addoption(parser):
    group = parser.getgroup("dste-bench")
    group.addoption("--bench-graphs", default=",".join(bench.DEFAULT_GRAPHS),
                    help="comma-separated graph presets (default: cora-like,arxiv-scale)")
    group.addoption("--bench-features", default=",".join(map(str, bench.DEFAULT_FEATURES)),
                    help="comma-separated feature widths (default: 64,128,256)")
    group.addoption("--bench-rounds", type=int, default=5, help="timed rounds per CPU SpMM benchmark (default: 5)")


def _csv(config, name):
    return [item.strip() for item in config.getoption(name).split(",") if item.strip()]


def pytest_generate_tests(metafunc):
    config = metafunc.config
    if "graph_name" in metafunc.fixturenames:
        metafunc.parametrize("graph_name", _csv(config, "--bench-graphs"), scope="session")
    if "order" in metafunc.fixturenames:
        metafunc.parametrize("order", bench.ORDERS, scope="session")
    if "features" in metafunc.fixturenames:
        metafunc.parametrize("features", [int(f) for f in _csv(config, "--bench-features")])


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["dste"] = bench.machine_info()
    machine_info["dste_threads"] = THREADS


_WORKLOADS = {}


@pytest.fixture(scope="session")
def workloads_of():
    """graph name -> {order: Workload}, built once per session."""

    def get(graph_name):
        if graph_name not in _WORKLOADS:
            _WORKLOADS.clear()  # keep one graph's matrices in memory at a time
            _WORKLOADS[graph_name] = {w.order: w for w in bench.prepare_workloads(graph_name)}
        return _WORKLOADS[graph_name]

    return get


@pytest.fixture
def workload(workloads_of, graph_name, order):
    return workloads_of(graph_name)[order]


@pytest.fixture
def rounds(request):
    return request.config.getoption("--bench-rounds")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """Benchmarks run in one process: pytest.ini's ``-n auto`` (for the test suite) would spread them over
    workers that time each other, and pytest-benchmark turns itself off under xdist."""
    if getattr(config.option, "dist", "no") != "no" or getattr(config.option, "numprocesses", None):
        config.option.dist = "no"
        config.option.numprocesses = 0
    # pytest-benchmark writes --benchmark-json only after every benchmark ran, and failed there where the directory
    # was missing (on a fresh checkout bench-results/ is): it is created before the first one runs
    path = config.getoption("benchmark_json", None)
    if path is not None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
