"""Encode throughput of ``gcn_normalized`` (edges per second) and the incremental re-encode after a snapshot."""

import pytest
import scipy.sparse as sp

from dste.data import make_stream
from dste.experiments import bench
from dste.format import gcn_normalized, gcn_update


def test_encode(benchmark, workloads_of, graph_name):
    workload = workloads_of(graph_name)["random"]
    benchmark.group = "encode"
    benchmark.pedantic(gcn_normalized, args=(workload.adjacency,), rounds=3, warmup_rounds=0, iterations=1)
    benchmark.extra_info.update(graph=graph_name, nnz=workload.nnz,
                                edges_per_s=workload.nnz / benchmark.stats.stats.min)


@pytest.mark.parametrize("scenario", sorted(bench.STREAM_SCENARIOS))
@pytest.mark.parametrize("update", ["incremental", "full-same-order"])
def test_reencode_after_snapshot(benchmark, workloads_of, graph_name, scenario, update):
    workload = workloads_of(graph_name)["random"]
    knobs = bench.STREAM_SCENARIOS[scenario]
    snapshot = make_stream(workload.extra["graph"], num_snapshots=2, **knobs)[1]
    new_adjacency = sp.csr_matrix(snapshot.graph.adj)
    matrix = workload.matrix
    if update == "incremental":
        def run():
            return gcn_update(matrix, new_adjacency, changed_rows=snapshot.changed_rows)
    else:
        def run():
            return gcn_normalized(new_adjacency, row_perm=matrix.row_perm, col_perm=matrix.col_perm)
    benchmark.group = f"re-encode {graph_name} {scenario}"
    benchmark.pedantic(run, rounds=3, warmup_rounds=0, iterations=1)
    benchmark.extra_info.update(graph=graph_name, changed_rows=int(snapshot.changed_rows.size),
                                changed_windows=int(snapshot.changed_windows(matrix.row_perm).size),
                                windows=int(matrix.n_windows), **knobs)
