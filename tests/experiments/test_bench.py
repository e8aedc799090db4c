"""Smoke tests of ``dste bench`` (dste.experiments.bench) on the small preset graph.

No timing is asserted (speed goals live in bench/); the tests check that every contender computes the
same product, that the report and the files are complete, and that bad options are refused.
"""

import argparse
import io
import json

import numpy as np
import pytest
import scipy.sparse as sp

from dste.experiments import bench
from tests.experiments.bench_threads import restore_threads  # noqa: F401  (autouse)


def _args(tmp_path, *extra):
    parser = bench.add_bench_arguments(argparse.ArgumentParser())
    widths = [] if "--quick" in extra else ["--features", "8", "16"]  # --quick chooses its own width
    return parser.parse_args(
        ["--graph", "cora-like", *widths, "--repeats", "1", "--threads", "1", "--no-progress", "--out", str(tmp_path),
         *extra]
    )


@pytest.fixture(scope="module")
def cora_workloads():
    return bench.prepare_workloads("cora-like")


@pytest.mark.integration
def test_run_bench_writes_json_plot_and_report(tmp_path):
    out = io.StringIO()
    results = bench.run_bench(_args(tmp_path), stream=out)
    text = out.getvalue()

    saved = json.loads((tmp_path / "bench.json").read_text())
    assert (tmp_path / "bench.png").stat().st_size > 10_000
    assert saved["threads"]["torch_num_threads"] == 1
    assert saved["threads"]["env"]["OMP_NUM_THREADS"] == "1"
    # 2 orders x 2 widths, each with DSTE, the three peers and the two proposed paths
    assert len(saved["cpu_spmm"]) == 4
    for row in saved["cpu_spmm"]:
        assert set(row["contenders"]) == {bench.DSTE_NAME, *bench.PEERS, *bench.PROPOSED}
        assert row["contenders"][bench.DSTE_NAME]["dste_speedup_min"] == pytest.approx(1.0)
    # 2 orders x 2 widths x 1 target (trn2: the kernel needs NeuronCore-v3+) x 3 X configurations (bf16,
    # INT8 rows with 0 % and 1 % FP16 rows)
    assert len(saved["modelled"]) == 12
    assert {(r["x_mode"], r["hi_fraction"]) for r in saved["modelled"]} == {
        ("bf16", 0.0), ("int8-hybrid", 0.0), ("int8-hybrid", 0.01)}
    assert all(r["label"] == f"modelled, {r['target']}" for r in saved["modelled"])
    assert all(r["dste"]["n_tiles"] > 0 and r["block"]["dma_bytes"] > 0 for r in saved["modelled"])
    # the descriptor-bound DMA model never beats the optimistic one on the same launches
    assert all(r["dste"]["latency_us"] >= r["dste"]["latency_optimistic_us"] for r in saved["modelled"])
    assert [snap["scenario"] for snap in saved["encode"][0]["snapshots"]] == list(bench.STREAM_SCENARIOS)
    assert all(snap["changed_rows"] > 0 for snap in saved["encode"][0]["snapshots"])
    assert saved["simulator"]["relative_error_vs_scipy"] < 1e-2  # bf16 products inside the kernel
    assert "modelled, trn2" in text and "modelled, trn1" not in text and "MODELLED" in text
    assert "x vs torch-sparse-csr" in text
    assert results["plot_path"].endswith("bench.png")


def test_quick_limits_the_run(tmp_path):
    # one order is enough here: --quick limits widths, targets and X modes, not orders
    results = bench.run_bench(
        _args(tmp_path, "--quick", "--no-plot", "--no-simulator", "--no-proposals", "--orders", "reordered"),
        stream=io.StringIO())
    assert {r["order"] for r in results["modelled"]} == {"reordered"}
    assert {r["features"] for r in results["cpu_spmm"]} == {128}
    assert {(r["target"], r["x_mode"]) for r in results["modelled"]} == {("trn2", "int8-hybrid")}
    assert {r["hi_fraction"] for r in results["modelled"]} == set(bench.DEFAULT_HI_FRACTIONS)
    assert results["simulator"] is None and not (tmp_path / "bench.png").exists()
    assert not set(bench.PROPOSED) & set(results["cpu_spmm"][0]["contenders"])


def test_contenders_agree_with_an_independent_float64_product(cora_workloads):
    for workload in cora_workloads:
        contenders, x = bench.cpu_contenders(workload, 5)
        # float64 reference from the unnormalised adjacency, independent of the DSTE encoding
        adj = sp.csr_matrix(workload.adjacency, dtype=np.float64)
        adj.data[:] = 1.0
        a_hat = (adj + sp.eye(adj.shape[0])).tocsr()
        a_hat.data[:] = 1.0
        dinv = 1.0 / np.sqrt(np.asarray(a_hat.sum(axis=1)).ravel())
        expected = dinv[:, None] * (a_hat @ (dinv[:, None] * x.astype(np.float64)))
        for name, run in contenders.items():
            y = bench._as_numpy(run())
            # float32 values and sums against float64: relative error well under 1e-5 of max|Y|
            assert np.abs(y - expected).max() <= 1e-5 * np.abs(expected).max(), name


def test_reordered_workload_is_a_relabelling(cora_workloads):
    random_order, reordered = cora_workloads
    perm = np.asarray(random_order.matrix.row_perm)
    assert reordered.adjacency.nnz == random_order.adjacency.nnz
    assert (reordered.adjacency != random_order.adjacency[perm][:, perm]).nnz == 0


def test_bytes_per_edge_matches_the_format_arithmetic(cora_workloads):
    workload = cora_workloads[0]
    per_edge = bench.format_bytes_per_edge(workload)
    n, nnz = workload.csr.shape[0], workload.nnz
    assert per_edge["coo-int64-fp32"] == 20.0
    assert per_edge["csr-fp32-int32"] == pytest.approx(8 + 4 * (n + 1) / nnz)
    assert per_edge["torch-csr-int64"] == pytest.approx(12 + 8 * (n + 1) / nnz)
    assert per_edge["dste-device"] == pytest.approx(workload.matrix.nbytes()["device_total"] / nnz)
    # the op keeps the encoded matrix plus at least the effective CSR values it multiplies (4 B per edge)
    assert per_edge["dste-cpu-op-resident"] >= per_edge["dste-device+host"] + 4


def test_parity_check_catches_a_wrong_contender():
    reference = np.ones((4, 2), np.float32)
    with pytest.raises(AssertionError, match="wrong"):
        bench.check_parity({"wrong": lambda: reference * 1.01}, reference)


def test_timing_reports_every_round():
    calls = []
    timings = bench.time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3, warmup=2)
    assert calls == ["a", "a", "b", "b"] + ["a", "b"] * 3
    assert len(timings["a"]["samples_s"]) == 3 and timings["a"]["min_s"] <= timings["a"]["median_s"]


@pytest.mark.parametrize(
    "extra, message",
    [(["--features", "0"], "--features"), (["--repeats", "0"], "--repeats"), (["--hi-fraction", "2"], "--hi-fraction"),
     (["--seed", "-1"], "--seed must be >= 0"),  # ran, wrote empty tables, exited 1
     (["--quick", "--features", "8"], "--quick runs F = 128 only")],  # the widths given were ignored
)
def test_bad_options_are_refused(tmp_path, extra, message):
    with pytest.raises(ValueError, match=message):
        bench.run_bench(_args(tmp_path, *extra), stream=io.StringIO())


def test_unknown_graph_and_threads_are_refused():
    with pytest.raises(SystemExit):
        bench.add_bench_arguments(argparse.ArgumentParser()).parse_args(["--graph", "no-such-graph"])
    with pytest.raises(ValueError, match="threads"):
        bench.pin_threads(0)
    with pytest.raises(ValueError, match="orders"):
        bench.prepare_workloads("cora-like", orders=("sideways",))


def test_a_failing_step_is_reported_and_the_rest_still_runs(tmp_path, monkeypatch, capsys):
    def broken(**_):
        raise RuntimeError("simulator exploded")

    monkeypatch.setattr(bench, "simulator_speed", broken)
    # one order and one FP16 share keep every step running, each on less work
    args = _args(tmp_path, "--quick", "--no-plot", "--no-proposals", "--orders", "reordered", "--hi-fraction", "0.01")
    assert bench.main(args) == 1
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["errors"] == [{"step": "simulator speed", "error": "RuntimeError: simulator exploded"}]
    assert saved["simulator"] is None and saved["cpu_spmm"] and saved["modelled"]
    out = capsys.readouterr().out
    assert out.startswith("FAILED step simulator speed")


def test_a_failing_plot_is_among_the_json_errors(tmp_path, monkeypatch):
    """The JSON was written before the plot step ran, so a failed plot was on the screen but not in the file."""
    def broken(results, path):
        raise OSError("disk full")

    monkeypatch.setattr(bench, "plot", broken)
    args = _args(tmp_path, "--quick", "--no-simulator", "--no-proposals", "--orders", "reordered", "--hi-fraction", "0")
    assert bench.main(args) == 1
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["errors"] == [{"step": "plot", "error": "OSError: disk full"}]


def test_resident_bytes_count_the_shared_permutations_once(monkeypatch):
    # past ORIGINAL_ORDER_MAX_COLS columns the op runs in encoded order and its wrapper holds row_perm/col_perm
    # tensors that are views of the matrix's own arrays; those bytes are already in matrix.nbytes()["total"]
    from dste.bindings import encoded_csr
    from dste.bindings.encoded_csr import ORIGINAL_ORDER_MAX_COLS
    from dste.format import gcn_normalized

    monkeypatch.setattr(encoded_csr, "REORDER_MIN_REUSE_GAIN", 0.0)  # a random graph: keep its order anyway

    n = ORIGINAL_ORDER_MAX_COLS + 808
    rng = np.random.default_rng(0)
    rows = np.concatenate([np.arange(n), rng.integers(0, n, 4 * n)])
    cols = np.concatenate([(np.arange(n) + 1) % n, rng.integers(0, n, 4 * n)])
    adjacency = sp.coo_matrix((np.ones(rows.size, np.float32), (rows, cols)), shape=(n, n)).tocsr()
    adjacency = ((adjacency + adjacency.T) > 0).astype(np.float32)
    matrix = gcn_normalized(adjacency)
    assert matrix.row_perm is not None and matrix.col_perm is not None
    nnz = bench._shared_csr(matrix).nnz
    # the op's own CSR in encoded order: int32 row pointers and column ids, float32 values; and the inverse row
    # order the wrapper keeps (int64 per row)
    expected = matrix.nbytes()["total"] + 4 * (n + 1) + nnz * (4 + 4) + 8 * n
    assert bench.cpu_op_resident_bytes(matrix) == expected
