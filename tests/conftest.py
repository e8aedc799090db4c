"""Pins BLAS, OpenMP and torch to one thread for the whole test session.

The machines that run the suite have two cores shared with other jobs. Multi-threaded BLAS and torch hand small
products between threads, which on a busy machine costs more than the products themselves, and makes float
summation order depend on the core count. The BLAS/OpenMP thread counts are read once, when NumPy/torch load
their libraries, so they are set here, before any test module imports them; torch's intra-op pool is set in
``pytest_configure``, before collection. A variable already set in the environment is left as it is.

torch is imported only by processes that run tests: the pytest-xdist controller (``-n 2``) collects and runs
nothing, and importing torch there (~1.5 s of CPU) would delay the start of every worker by as much.
"""

import gc
import os

import pytest

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


# Cyclic-collector thresholds for the test processes (CPython's default: 700, 10, 10). The tests allocate
# millions of short-lived containers (hypothesis examples, torch autograd graphs, simulator tiles) and keep few
# of them; at the default the collector ran ~2,200 times per worker and walked the survivors each time
# (2.2-3.1 s per worker, measured with gc.callbacks); at these thresholds 50-60 times (0.5-1.0 s). Objects in
# reference cycles are still freed, only in larger batches.
GC_THRESHOLDS = (20_000, 50, 100)


def pytest_collection_finish(session):
    """Move everything alive after collection (modules, their rewritten code, torch's and SciPy's objects) out of
    the cyclic garbage collector's reach: it never becomes garbage, and every full collection during the tests
    walked it again (-25 % of the collector's time in bindings/, controller/ and experiments/, ~0.3 s there).
    Then collect less often (``GC_THRESHOLDS``)."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


# Serial CPU seconds of the longest test modules (quiet 2-core machine, ``-n 0``), used only to order the
# modules for pytest-xdist (see ``pytest_collection_modifyitems``). A stale or missing figure costs some balance,
# never a test: every collected test still runs, and each module's tests keep their order. Modules grouped in
# one entry share a per-process cost and go to the same worker: the four that draw matplotlib figures (its
# import and font set-up, ~0.6 s, then paid by one worker only).
MODULE_GROUP_CPU_SECONDS = {
    ("tests/experiments/test_cli.py", "tests/experiments/test_bench.py", "tests/experiments/test_run_outputs.py",
     "tests/experiments/test_pipeline_frontier.py"): 1.7,
    ("tests/experiments/test_gnn_env.py",): 4.1,
    ("tests/bindings/test_encoded_order.py",): 2.4,
    ("tests/kernels/test_cost_mirror.py",): 2.3,
    ("tests/kernels/test_cost.py",): 2.0,
    ("tests/kernels/test_spmm_hybrid.py",): 1.7,
    ("tests/data/test_stream.py",): 1.7,
    ("tests/controller/test_feasible_hindsight.py",): 1.2,
    ("tests/bindings/test_backends.py",): 1.2,
    ("tests/format/test_byte_ceiling.py",): 1.0,
    ("tests/data/test_csbm.py",): 1.0,
    ("tests/kernels/test_list_tile_kernel.py",): 0.9,
    ("tests/bindings/test_ops.py",): 0.9,
    ("tests/format/test_encode_lean.py",): 0.9,
}


def _worker_lanes(items: list, lanes: int) -> list:
    """``items`` reordered for ``--dist worksteal`` over ``lanes`` workers.

    worksteal hands worker i the next ``remaining // (lanes - i)`` tests of the collection, then balances by
    moving the *last* half of the longest queue to an idle worker. In file order the long modules sat in the
    first half (bindings, controller, experiments), so the second worker stole the end of the first one's
    queue: test_gnn_env.py was split over both workers, each training its GNNs and filling its layer-run and
    latency caches (seconds each), and its long tests ran last. Here the long modules are spread over the
    lanes by their CPU time (largest first, to the lighter lane), each lane starts with its long modules and is
    topped up to its share with the other modules in file order, so what is stolen at the end is short tests.
    """
    modules: dict[str, list] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::")[0], []).append(item)
    load = [0.0] * lanes
    lane_modules: list[list[str]] = [[] for _ in range(lanes)]
    placed = set()
    for group, seconds in sorted(MODULE_GROUP_CPU_SECONDS.items(), key=lambda entry: -entry[1]):
        present = [module for module in group if module in modules]
        if present:
            lane = min(range(lanes), key=load.__getitem__)
            lane_modules[lane] += present
            load[lane] += seconds
            placed.update(present)
    short_items = [item for module, its in modules.items() if module not in placed for item in its]
    ordered, taken = [], 0
    for lane in range(lanes):
        share = (len(items) - len(ordered)) // (lanes - lane)
        lane_items = [item for module in lane_modules[lane] for item in modules[module]]
        top_up = max(0, share - len(lane_items))
        ordered += lane_items + short_items[taken:taken + top_up]
        taken += top_up
    return ordered + short_items[taken:]


@pytest.hookimpl(trylast=True)  # after -m/-k deselection: the shares count the tests that run
def pytest_collection_modifyitems(config, items):
    lanes = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))  # set in pytest-xdist workers only
    if lanes > 1:
        items[:] = _worker_lanes(items, lanes)
