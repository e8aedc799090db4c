"""CPU ``Y = A @ X``: dste.spmm against SciPy CSR, torch.sparse.mm (fp32 CSR) and dense torch.matmul.

One benchmark group per (graph, order, F), so pytest-benchmark's table compares the contenders on the same
matrix and X. The proposed DSTE paths (see ``dste.experiments.bench``) are timed alongside, named
``proposed:...``.
"""

import pytest
import torch

from dste.experiments import bench

CONTENDERS = (bench.DSTE_NAME, *bench.PEERS, *bench.PROPOSED)


@pytest.mark.parametrize("contender", CONTENDERS)
def test_spmm(benchmark, workload, features, contender, rounds):
    contenders, x = bench.cpu_contenders(workload, features)
    if contender not in contenders:
        pytest.skip(f"{contender} does not fit: dense A of {workload.graph} exceeds {bench.DENSE_LIMIT_BYTES} bytes")
    run = contenders[contender]
    bench.check_parity({contender: run}, workload.csr @ x)
    benchmark.group = f"spmm {workload.key} F={features}"
    benchmark.extra_info.update(graph=workload.graph, order=workload.order, features=features, nnz=workload.nnz,
                                proposed=contender in bench.PROPOSED, torch_threads=torch.get_num_threads())
    benchmark.pedantic(run, rounds=rounds, warmup_rounds=1, iterations=1)
    benchmark.extra_info["gflops_at_min"] = 2 * workload.nnz * features / benchmark.stats.stats.min / 1e9


def test_bytes_per_edge(benchmark, workload):
    """Not a timing: records the bytes per stored edge of every format (the timing is of the accounting)."""
    benchmark.group = "bytes per edge"  # before the run: pytest-benchmark files the result under it as it runs
    per_edge = benchmark.pedantic(bench.format_bytes_per_edge, args=(workload,), rounds=1, iterations=1)
    benchmark.extra_info.update(graph=workload.graph, order=workload.order, bytes_per_edge=per_edge)
    assert per_edge["dste-device"] > 0
