"""``dste bench``: DSTE side by side with the sparse-matrix paths a user would pick instead.

One process, one thread setting for every contender, the same matrices for all of them:

* **CPU SpMM** ``Y = A @ X`` with ``A = D^-1/2 (A + I) D^-1/2`` of a graph: ``dste.spmm`` (cpu backend)
  against SciPy CSR @ dense, ``torch.sparse.mm`` on an fp32 CSR tensor (int64 indices, torch's default)
  and dense ``torch.matmul`` where the dense matrix fits. Every contender multiplies the same float32
  values (DSTE's effective CSR). Node order ``random`` is the graph as generated (ids shuffled);
  ``reordered`` relabels the nodes by DSTE's community order before anything is built, so the peers get
  the locality too. Timing: ``warmup`` calls each, then ``repeats`` rounds in which every contender runs
  once (interleaved, so load from other processes hits all of them alike); min and median per contender.
  Two *proposed* CPU paths are timed next to them (marked ``proposed``; not peers): the effective CSR
  executed in DSTE's encoded (reordered) order with X gathered and Y scattered around it, and
  ``torch.sparse.mm`` with int32 indices.
* **Bytes per edge** of each format: DSTE device bytes, DSTE device + host, what the CPU op keeps resident
  (matrix + wrapper tensors + cached CSR), CSR fp32 + int32, torch CSR (int64), COO int64.
* **Encode** throughput (edges/s) of ``gcn_normalized`` and the incremental re-encode after one
  snapshot of a stream (``gcn_update`` on the changed rows) against a full re-encode in the same order,
  for a burst and a trickle of edge churn (``STREAM_SCENARIOS``).
* **Simulator speed**: simulated tiles per second of ``spmm_hybrid`` under ``dste.nkisim`` (small graph).
* **Modelled NeuronCore latency** of ``spmm_hybrid`` (``dste.kernels.cost``) on trn2 (LNC2; descriptor-bound and
  optimistic DMA models) next to a
  fixed 128x128 block-column layout and a per-edge gather kernel, with tile counts and DMA bytes. These
  are modelled figures, never measurements, and every printed one says so.

``run_bench(args)`` prints the tables and writes ``bench.json`` and ``bench.png`` to ``args.out`` (default: a new
``bench-results/<timestamp>``); a directory that holds an earlier bench's outputs is refused unless ``--overwrite``,
and a bench whose every step failed writes nothing. ``add_bench_arguments(parser)`` declares the options.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy
import scipy.sparse as sp

from dste.experiments import strict_json
from dste.experiments.out_dir import check_out_dir, new_stamped_dir

__all__ = [
    "add_bench_arguments",
    "run_bench",
    "pin_threads",
    "machine_info",
    "prepare_workloads",
    "cpu_contenders",
    "time_interleaved",
    "format_bytes_per_edge",
    "modelled_latencies",
    "encode_throughput",
    "simulator_speed",
]

THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
DEFAULT_GRAPHS = ("cora-like", "arxiv-scale")
DEFAULT_FEATURES = (64, 128, 256)
ORDERS = ("random", "reordered")
TARGETS = ("trn2",)  # the kernel gathers with vector_offset DMAs: NeuronCore-v3+ only (nki-dge.rst)
X_MODES = ("bf16", "int8-hybrid")
DENSE_LIMIT_BYTES = 256 * 2**20
"""Dense ``torch.matmul`` runs only when the dense A (float32) fits in this; arxiv-scale would need 115 GB."""
PARITY_RTOL = 1e-4
"""Every contender's Y must match SciPy's float32 result to 1e-4 of max|Y|: they sum the same float32
products in different orders, which moves a result by a few ulps per row (rows have < 1e4 entries)."""
SIMULATOR_GRAPH = "cora-like"
SIMULATOR_FEATURES = 64
DEFAULT_HI_FRACTIONS = (0.0, 0.01)
"""Shares of FP16 rows in the hybrid-row X of the modelled runs: all INT8, and the most sensitive 1 % in FP16."""
DEFAULT_HI_FRACTION = 0.01
"""FP16-row share of the hybrid X that the simulator-speed benchmark runs."""
STREAM_SCENARIOS = {
    "burst": {"edge_churn": 0.01, "active_fraction": 0.05},
    "trickle": {"edge_churn": 0.0002, "active_fraction": 0.01},
}
"""One snapshot step each: 1 % of the edges replaced around 5 % of the communities, or 0.02 % around 1 %."""
OUTPUT_FILES = ("bench.json", "bench.png")
"""What a bench writes to its --out directory; an earlier bench's are never written over without --overwrite."""
DEFAULT_OUT_PARENT = Path("bench-results")
"""Without --out, each bench writes to a new ``bench-results/<timestamp>``, so no run replaces another's results."""
DENSE_COPIES_PER_WIDTH = 10
"""Peak memory of one feature width, in dense float32 ``[nodes, F]`` arrays (X, the reference Y, each contender's
Y and its difference in the parity check, the modelled step's X in its forms): measured as the peak RSS growth on
cora-like at F = 8192, 5.6 such arrays over the CPU SpMM step and 8.7 over the modelled step; 10 leaves headroom."""
DSTE_NAME = "dste.spmm"
PEERS = ("scipy-csr", "torch-sparse-csr", "torch-dense")
PROPOSED = ("proposed:encoded-order", "proposed:torch-csr-int32")


# ------------------------------------------------------------------------------------------- environment
def pin_threads(threads: int) -> dict:
    """Use ``threads`` threads for every contender and return what was set.

    The OMP/MKL/OpenBLAS variables reach libraries that read them at load time (and any child
    process); torch's intra-op pool is set directly. SciPy's sparse @ dense is single-threaded
    whatever the setting (its ``csr_matvecs`` loop has no threading), which the record states.
    """
    import torch

    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    for name in THREAD_ENV_VARS:
        os.environ[name] = str(threads)
    torch.set_num_threads(threads)
    return {
        "requested": threads,
        "env": {name: os.environ.get(name) for name in THREAD_ENV_VARS},
        "torch_num_threads": torch.get_num_threads(),
        "scipy_sparse_matmul": "single-threaded",
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_revision() -> str:
    """HEAD of the source tree the run used, with ``+dirty`` when tracked files differ (``unknown`` outside git)."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def machine_info() -> dict:
    """nproc, CPU model, the versions of everything timed and the source revision."""
    import torch

    import dste

    return {
        "source_revision": _git_revision(),
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "torch": torch.__version__,
        "dste": dste.__version__,
    }


# --------------------------------------------------------------------------------------------- workloads
@dataclass
class Workload:
    """One graph in one node order: its adjacency, the DSTE encoding and the shared effective CSR."""

    graph: str
    order: str
    adjacency: sp.csr_matrix
    matrix: object  # DSTEMatrix
    csr: sp.csr_matrix  # float32 effective CSR: the values every contender multiplies
    encode_seconds: float
    extra: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.graph}/{self.order}"

    @property
    def nnz(self) -> int:
        return int(self.csr.nnz)


def _relabel(adjacency: sp.csr_matrix, order: np.ndarray) -> sp.csr_matrix:
    """Adjacency with node ``order[i]`` renamed ``i``."""
    relabelled = adjacency[order][:, order].tocsr()
    relabelled.sort_indices()
    return relabelled


def _shared_csr(matrix) -> sp.csr_matrix:
    """The effective CSR every contender multiplies, built without leaving a cached copy in the matrix (so the
    CPU op's resident bytes are not inflated by the benchmark's own copy)."""
    return matrix.decode(effective=True, dtype=np.float32)


def prepare_workloads(graph_name: str, orders=ORDERS, seed: int = 0) -> list[Workload]:
    """Generate ``graph_name`` and encode it (default ``gcn_normalized`` policy) in each node order."""
    from dste.data import make_graph
    from dste.format import gcn_normalized

    unknown = set(orders) - set(ORDERS)
    if unknown:
        raise ValueError(f"unknown node orders {sorted(unknown)}; allowed: {ORDERS}")
    graph = make_graph(graph_name, seed=seed)
    adjacency = sp.csr_matrix(graph.adj)
    start = time.perf_counter()
    matrix = gcn_normalized(adjacency)
    seconds = time.perf_counter() - start
    random_order = Workload(graph_name, "random", adjacency, matrix, _shared_csr(matrix), seconds,
                            extra={"graph": graph})
    workloads = []
    if "random" in orders:
        workloads.append(random_order)
    if "reordered" in orders:
        if matrix.row_perm is None:
            raise RuntimeError("gcn_normalized returned no row_perm; the reordered workload needs DSTE's order")
        relabelled = _relabel(adjacency, np.asarray(matrix.row_perm))
        start = time.perf_counter()
        matrix_r = gcn_normalized(relabelled)
        seconds_r = time.perf_counter() - start
        workloads.append(Workload(graph_name, "reordered", relabelled, matrix_r, _shared_csr(matrix_r), seconds_r))
    return workloads


# ---------------------------------------------------------------------------------------------- CPU SpMM
def _torch_csr(csr: sp.csr_matrix, index_dtype):
    import torch

    with warnings.catch_warnings():  # torch flags sparse CSR as beta on every construction
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(csr.indptr.astype(index_dtype)),
            torch.from_numpy(csr.indices.astype(index_dtype)),
            torch.from_numpy(np.ascontiguousarray(csr.data, dtype=np.float32)),
            size=csr.shape,
            check_invariants=False,
        )


def _encoded_order_executor(matrix, csr: sp.csr_matrix):
    """The proposed CPU path: multiply in DSTE's encoded row/column order, where neighbours are near.

    ``A = P_r^T B P_c`` with ``B`` the effective CSR permuted to encoded positions, so
    ``Y = A X = P_r^T (B (P_c X))``: gather X rows in column order, one CSR product with local
    accesses, scatter Y rows back. Permutations and B are built once per matrix.
    """
    n, m = csr.shape
    row_perm = np.arange(n) if matrix.row_perm is None else np.asarray(matrix.row_perm, dtype=np.int64)
    col_perm = np.arange(m) if matrix.col_perm is None else np.asarray(matrix.col_perm, dtype=np.int64)
    col_position = np.empty(m, dtype=np.int64)
    col_position[col_perm] = np.arange(m)
    permuted = csr[row_perm].tocsr()
    permuted = sp.csr_matrix(
        (permuted.data, col_position[permuted.indices].astype(np.int32), permuted.indptr), shape=(n, m)
    )
    permuted.sort_indices()

    def run(x: np.ndarray) -> np.ndarray:
        y_encoded = permuted @ np.take(x, col_perm, axis=0)
        y = np.empty_like(y_encoded)
        y[row_perm] = y_encoded
        return y

    return run


def cpu_contenders(workload: Workload, features: int, seed: int = 0, proposals: bool = True):
    """``(name -> zero-argument callable, X numpy)``: every contender computes A @ X on the same data."""
    import torch

    import dste

    m = workload.csr.shape[1]
    x = np.random.default_rng(seed).standard_normal((m, features)).astype(np.float32)
    x_torch = torch.from_numpy(x)
    csr = workload.csr
    dste_tensor = dste.DSTETensor(workload.matrix)
    torch_csr = _torch_csr(csr, np.int64)
    contenders = {
        DSTE_NAME: lambda: dste.spmm(dste_tensor, x_torch, backend="cpu"),
        "scipy-csr": lambda: csr @ x,
        "torch-sparse-csr": lambda: torch.sparse.mm(torch_csr, x_torch),
    }
    if csr.shape[0] * csr.shape[1] * 4 <= DENSE_LIMIT_BYTES:
        dense = torch.from_numpy(csr.toarray())
        contenders["torch-dense"] = lambda: torch.matmul(dense, x_torch)
    if proposals:
        encoded_order = _encoded_order_executor(workload.matrix, csr)
        torch_csr32 = _torch_csr(csr, np.int32)
        contenders["proposed:encoded-order"] = lambda: encoded_order(x)
        contenders["proposed:torch-csr-int32"] = lambda: torch.sparse.mm(torch_csr32, x_torch)
    return contenders, x


def _as_numpy(y) -> np.ndarray:
    return y.detach().numpy() if hasattr(y, "detach") else np.asarray(y)


def check_parity(contenders: dict, reference: np.ndarray) -> dict:
    """Run each contender once and compare with ``reference``; raise if any disagrees (see PARITY_RTOL)."""
    scale = float(np.abs(reference).max()) or 1.0
    errors = {}
    for name, run in contenders.items():
        y = _as_numpy(run())
        if y.shape != reference.shape:
            raise AssertionError(f"{name} returned shape {y.shape}, expected {reference.shape}")
        errors[name] = float(np.abs(y - reference).max() / scale)
        if not errors[name] <= PARITY_RTOL:
            raise AssertionError(f"{name} differs from SciPy by {errors[name]:.2e} of max|Y| (allowed {PARITY_RTOL})")
    return errors


def time_interleaved(contenders: dict, repeats: int, warmup: int = 1) -> dict:
    """Seconds per call: ``warmup`` untimed calls each, then ``repeats`` rounds running every contender once."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    for run in contenders.values():
        for _ in range(warmup):
            run()
    samples = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, run in contenders.items():
            start = time.perf_counter()
            run()
            samples[name].append(time.perf_counter() - start)
    return {
        name: {"min_s": float(min(ts)), "median_s": float(np.median(ts)), "samples_s": [float(t) for t in ts]}
        for name, ts in samples.items()
    }


def cpu_spmm(workload: Workload, features: int, repeats: int, warmup: int, proposals: bool = True) -> dict:
    """Timings, GFLOP/s (2 nnz F / t) and DSTE's speed-up over each peer (peer time / DSTE time)."""
    contenders, x = cpu_contenders(workload, features, proposals=proposals)
    errors = check_parity(contenders, workload.csr @ x)
    timings = time_interleaved(contenders, repeats, warmup)
    flops = 2.0 * workload.nnz * features
    dste_time = timings[DSTE_NAME]
    for name, t in timings.items():
        t["gflops_at_min"] = flops / t["min_s"] / 1e9
        t["parity_error"] = errors[name]
        t["proposed"] = name in PROPOSED
        t["dste_speedup_min"] = t["min_s"] / dste_time["min_s"]
        t["dste_speedup_median"] = t["median_s"] / dste_time["median_s"]
    return {"graph": workload.graph, "order": workload.order, "features": features, "nnz": workload.nnz,
            "repeats": repeats, "warmup": warmup, "contenders": timings}


# ------------------------------------------------------------------------------------------------- bytes
def _matrix_arrays(matrix) -> list[np.ndarray]:
    """The NumPy arrays a matrix object holds as attributes (what its ``nbytes()`` already counts)."""
    attributes = vars(matrix).values() if hasattr(matrix, "__dict__") else ()
    return [a for a in attributes if isinstance(a, np.ndarray)]


def cpu_op_resident_bytes(matrix) -> int:
    """Bytes the CPU op keeps for ``matrix``: the DSTEMatrix (device + host arrays), the tensors of its
    ``DSTETensor`` wrapper that do not share memory with the matrix's own arrays (the wrapper's permutations
    are views of the matrix's ``row_perm`` / ``col_perm`` and are counted once), and the SciPy effective CSR
    when the matrix has it cached (``_effective_csr``)."""
    import torch

    import dste

    wrapper = dste.DSTETensor(matrix)
    matrix_arrays = _matrix_arrays(matrix)
    total = matrix.nbytes()["total"]
    for tensor in vars(wrapper).values():
        if not isinstance(tensor, torch.Tensor) or tensor.numel() == 0:
            continue
        view = tensor.detach().numpy()
        if any(np.shares_memory(view, array) for array in matrix_arrays):
            continue
        total += tensor.numel() * tensor.element_size()
    cached = getattr(matrix, "_effective_csr", None)
    if cached is not None:
        total += cached.data.nbytes + cached.indices.nbytes + cached.indptr.nbytes
    return int(total)


def format_bytes_per_edge(workload: Workload) -> dict:
    """Bytes per stored edge of the sparse operand in each format (values fp32 unless said)."""
    n = workload.csr.shape[0]
    nnz = workload.nnz
    nb = workload.matrix.nbytes()
    return {
        "dste-device": nb["device_total"] / nnz,
        "dste-device+host": nb["total"] / nnz,
        "dste-cpu-op-resident": cpu_op_resident_bytes(workload.matrix) / nnz,
        "csr-fp32-int32": ((n + 1) * 4 + nnz * (4 + 4)) / nnz,
        "torch-csr-int64": ((n + 1) * 8 + nnz * (8 + 4)) / nnz,
        "coo-int64-fp32": nnz * (8 + 8 + 4) / nnz,
    }


# ------------------------------------------------------------------------------------------------ encode
def encode_throughput(workload: Workload, repeats: int, seed: int = 0) -> dict:
    """Full encode (min of ``repeats``; the workload's own encode counts as one) and one incremental update."""
    from dste.format import gcn_normalized

    if workload.order != "random" or "graph" not in workload.extra:
        raise ValueError("encode throughput is measured on the generated (random-order) workload")
    times = [workload.encode_seconds]
    for _ in range(max(repeats - 1, 0)):
        start = time.perf_counter()
        gcn_normalized(workload.adjacency)
        times.append(time.perf_counter() - start)
    nnz = workload.nnz
    snapshots = []
    for scenario, knobs in STREAM_SCENARIOS.items():
        snapshots.append({"scenario": scenario, **knobs, **_reencode_after_snapshot(workload, knobs, seed)})
    return {
        "graph": workload.graph,
        "nnz": nnz,
        "encode_min_s": float(min(times)),
        "encode_samples_s": [float(t) for t in times],
        "edges_per_s": nnz / min(times),
        "snapshots": snapshots,
    }


def _reencode_after_snapshot(workload: Workload, knobs: dict, seed: int) -> dict:
    """``gcn_update`` on the changed rows of snapshot 1 against a full encode in the same order (checked equal)."""
    from dste.data import make_stream
    from dste.format import gcn_normalized, gcn_update

    snapshot = make_stream(workload.extra["graph"], num_snapshots=2, seed=seed, **knobs)[1]
    new_adjacency = sp.csr_matrix(snapshot.graph.adj)
    start = time.perf_counter()
    updated = gcn_update(workload.matrix, new_adjacency, changed_rows=snapshot.changed_rows)
    incremental = time.perf_counter() - start
    start = time.perf_counter()
    full = gcn_normalized(new_adjacency, row_perm=workload.matrix.row_perm, col_perm=workload.matrix.col_perm)
    full_same_order = time.perf_counter() - start
    diff = abs(updated.effective_csr() - full.effective_csr())
    if diff.nnz and diff.max() > 1e-6:
        raise AssertionError(f"incremental re-encode differs from a full encode by {diff.max():.2e}")
    windows = snapshot.changed_windows(workload.matrix.row_perm)
    return {
        "changed_rows": int(snapshot.changed_rows.size),
        "changed_windows": int(windows.size),
        "windows": int(workload.matrix.n_windows),
        "incremental_s": incremental,
        "full_same_order_s": full_same_order,
        "speedup": full_same_order / incremental,
    }


# --------------------------------------------------------------------------------------------- simulator
def simulator_speed(features: int = SIMULATOR_FEATURES, seed: int = 0, target: str = "trn2", repeats: int = 3) -> dict:
    """Wall time of ``spmm_hybrid`` under the simulator on the small graph, as simulated tiles per second.

    The first call (which also plans the launches and packs their arrays) is reported apart; the rate is
    from the min of ``repeats`` further calls reusing that plan, i.e. the simulator's own speed.
    """
    from dste.data import make_graph
    from dste.format import gcn_normalized
    from dste.kernels import launch_spmm_hybrid, plan_launches
    from dste.nkisim import install

    install()
    graph = make_graph(SIMULATOR_GRAPH, seed=seed)
    matrix = gcn_normalized(sp.csr_matrix(graph.adj))
    x = np.random.default_rng(seed).standard_normal((matrix.shape[1], features)).astype(np.float32)
    start = time.perf_counter()
    plan = plan_launches(matrix, features, "fp32")
    y, prof = launch_spmm_hybrid(matrix, x, target=target, profile=True, plan=plan)
    first_call = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        launch_spmm_hybrid(matrix, x, target=target, plan=plan)
        times.append(time.perf_counter() - start)
    seconds = min(times)
    reference = matrix.effective_csr() @ x
    error = float(np.abs(y - reference).max() / max(np.abs(reference).max(), 1e-30))
    tiles = int(matrix.n_tiles + matrix.n_etiles)
    return {
        "graph": SIMULATOR_GRAPH,
        "features": features,
        "tiles": tiles,
        "launches": len(plan.launches),
        "first_call_s": first_call,
        "wall_s": seconds,
        "tiles_per_s": tiles / seconds,
        "instructions": int(sum(prof.instructions.values())),
        "instructions_per_s": sum(prof.instructions.values()) / seconds,
        "relative_error_vs_scipy": error,
    }


# ------------------------------------------------------------------------------------------------ models
def _hybrid_x(m: int, features: int, hi_fraction: float, seed: int):
    from dste.format import quantize_rows

    x = np.random.default_rng(seed).standard_normal((m, features)).astype(np.float32)
    return quantize_rows(x, fp16_fraction=hi_fraction)


def _estimate_record(est) -> dict:
    d = est.to_dict()
    return {
        "label": d["label"],
        "latency_us": float(est.latency_us),
        "latency_optimistic_us": float(est.latency_optimistic_us or est.latency_us),
        "dma_model": est.dma_model,
        "roofline_us": float(est.roofline_us),
        "n_tiles": int(est.n_tiles),
        "dma_bytes": int(est.dma_bytes),
        "dma_transfers": int(est.dma_transfers),
        "instructions": int(est.instructions),
        "engine_busy_us": {k: float(v) for k, v in est.engine_busy_us.items()},
    }


def x_configurations(x_modes=X_MODES, hi_fractions=DEFAULT_HI_FRACTIONS) -> list[tuple[str, float]]:
    """(x_mode, FP16-row share) pairs: one per dense mode, one per share for ``int8-hybrid``."""
    configs = []
    for mode in x_modes:
        configs += [(mode, float(h)) for h in hi_fractions] if mode == "int8-hybrid" else [(mode, 0.0)]
    return configs


def modelled_latencies(workload: Workload, features, targets=TARGETS, x_modes=X_MODES,
                       hi_fractions=DEFAULT_HI_FRACTIONS, seed: int = 0, progress=None) -> list[dict]:
    """Modelled ``spmm_hybrid`` next to the block-column and per-edge gather estimates, per configuration."""
    from dste.kernels.cost import estimate_block_layout, estimate_edge_gather, estimate_spmm

    if isinstance(hi_fractions, (int, float)):
        hi_fractions = (hi_fractions,)
    configs = x_configurations(x_modes, hi_fractions)
    rows = []
    for f in features:
        x_hybrid = {h: _hybrid_x(workload.matrix.shape[1], f, h, seed) for mode, h in configs if mode == "int8-hybrid"}
        for target in targets:
            for mode, hi_fraction in configs:
                kwargs = {"X": x_hybrid[hi_fraction]} if mode == "int8-hybrid" else {}
                dste_est = estimate_spmm(workload.matrix, f, mode, target, **kwargs)
                block = estimate_block_layout(workload.matrix, f, mode, target)
                edge = estimate_edge_gather(workload.matrix, f, mode, target)
                rows.append({
                    "graph": workload.graph, "order": workload.order, "features": f, "target": target,
                    "x_mode": mode, "hi_fraction": hi_fraction,
                    "label": f"modelled, {target}", "nnz": workload.nnz,
                    "dste": _estimate_record(dste_est), "block": _estimate_record(block),
                    "edge_gather": _estimate_record(edge),
                    # the two baselines are analytic under the optimistic DMA model: compare like with like
                    "block_over_dste": block.latency_us / dste_est.latency_optimistic_us,
                    "edge_over_dste": edge.latency_us / dste_est.latency_optimistic_us,
                })
                if progress is not None:
                    progress.update(1)
    return rows


# ----------------------------------------------------------------------------------------------- reports
def _table(header, rows) -> str:
    cells = [list(map(str, header))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3g}"


def cpu_table(cpu_rows) -> str:
    header = ["graph/order", "F", "dste ms (min/med)"]
    names = [n for n in PEERS + PROPOSED if any(n in r["contenders"] for r in cpu_rows)]
    header += [f"{n} ms" for n in names] + [f"x vs {n}" for n in names if n in PEERS]
    rows = []
    for r in cpu_rows:
        c = r["contenders"]
        row = [f"{r['graph']}/{r['order']}", r["features"], f"{_ms(c[DSTE_NAME]['min_s'])}/{_ms(c[DSTE_NAME]['median_s'])}"]
        row += [_ms(c[n]["min_s"]) if n in c else "-" for n in names]
        row += [f"{c[n]['dste_speedup_min']:.2f}" if n in c else "-" for n in names if n in PEERS]
        rows.append(row)
    return _table(header, rows)


def bytes_table(bytes_rows) -> str:
    names = list(next(iter(bytes_rows.values())).keys()) if bytes_rows else []
    return _table(["graph/order"] + names, [[k] + [f"{v[n]:.2f}" for n in names] for k, v in bytes_rows.items()])


def _x_label(row) -> str:
    return f"int8-hybrid {row['hi_fraction']:.0%} fp16" if row["x_mode"] == "int8-hybrid" else row["x_mode"]


def model_table(model_rows) -> str:
    header = ["graph/order", "F", "X", "target", "dste us (descriptor)", "dste us (optimistic)", "tiles", "DMA MB",
              "block us (opt.)", "blocks", "block MB", "edge us (opt.)", "block/dste", "edge/dste"]
    rows = [[f"{r['graph']}/{r['order']}", r["features"], _x_label(r), f"modelled, {r['target']}",
             f"{r['dste']['latency_us']:.0f}", f"{r['dste']['latency_optimistic_us']:.0f}", r["dste"]["n_tiles"],
             f"{r['dste']['dma_bytes']/1e6:.1f}",
             f"{r['block']['latency_us']:.0f}", r["block"]["n_tiles"], f"{r['block']['dma_bytes']/1e6:.0f}",
             f"{r['edge_gather']['latency_us']:.0f}", f"{r['block_over_dste']:.1f}", f"{r['edge_over_dste']:.2f}"]
            for r in model_rows]
    return _table(header, rows)


def encode_table(encode_rows) -> str:
    header = ["graph", "nnz", "encode s", "Medges/s", "snapshot", "changed rows", "windows", "update s", "full s",
              "speed-up"]
    rows = []
    for r in encode_rows:
        for snap in r["snapshots"]:
            rows.append([r["graph"], r["nnz"], f"{r['encode_min_s']:.3g}", f"{r['edges_per_s']/1e6:.2f}",
                         f"{snap['scenario']} (churn {snap['edge_churn']:.2%})", snap["changed_rows"],
                         f"{snap['changed_windows']}/{snap['windows']}", f"{snap['incremental_s']:.3g}",
                         f"{snap['full_same_order_s']:.3g}", f"{snap['speedup']:.2f}"])
    return _table(header, rows)


def plot(results: dict, path: Path) -> Path:
    """Time per call and bytes per edge against feature width, one row of panels per graph."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    graphs = sorted({r["graph"] for r in results["cpu_spmm"]} | {r["graph"] for r in results["modelled"]})
    features = sorted({r["features"] for r in results["cpu_spmm"]} | {r["features"] for r in results["modelled"]})
    fig, axes = plt.subplots(len(graphs), 2, figsize=(13, 4.6 * len(graphs)), squeeze=False)
    styles = {"random": "-", "reordered": "--"}
    colours = {name: f"C{i}" for i, name in enumerate((DSTE_NAME, *PEERS, *PROPOSED))}
    for row, graph in enumerate(graphs):
        ax_time, ax_bytes = axes[row]
        for order in ORDERS:
            cpu = sorted((r for r in results["cpu_spmm"] if r["graph"] == graph and r["order"] == order),
                         key=lambda r: r["features"])
            if not cpu:
                continue
            for name in cpu[0]["contenders"]:
                fs = [r["features"] for r in cpu if name in r["contenders"]]
                ts = [r["contenders"][name]["min_s"] * 1e3 for r in cpu if name in r["contenders"]]
                ax_time.plot(fs, ts, styles[order], marker="o", color=colours[name], label=f"{name} ({order})")
        ax_time.set(title=f"{graph}: CPU Y = A X, measured (min of repeats)", xlabel="feature width F",
                    ylabel="ms per call", yscale="log", xscale="log")
        ax_time.legend(fontsize=6)
        fmt = results["bytes_per_edge"]
        for i, (name, value) in enumerate(fmt.get(f"{graph}/random", {}).items()):
            ax_bytes.axhline(value, color=f"C{i}", lw=1, ls=":", label=f"format: {name} {value:.2f} B")
        for order in ORDERS:
            model = sorted((r for r in results["modelled"] if r["graph"] == graph and r["order"] == order
                            and r["target"] == "trn2" and r["x_mode"] == "int8-hybrid" and r["hi_fraction"] == 0.0),
                           key=lambda r: r["features"])
            if model:
                fs = [r["features"] for r in model]
                ax_bytes.plot(fs, [r["dste"]["dma_bytes"] / r["nnz"] for r in model], styles[order], marker="o",
                              color="k", label=f"DSTE spmm_hybrid ({order})")
                ax_bytes.plot(fs, [r["block"]["dma_bytes"] / r["nnz"] for r in model], styles[order], marker="s",
                              color="r", label=f"128x128 block columns ({order})")
        ax_bytes.set(title=f"{graph}: bytes per edge\n(dotted: format; lines: DMA traffic, modelled trn2, INT8 X)",
                     xlabel="feature width F", ylabel="bytes per edge", yscale="log", xscale="log")
        for ax in (ax_time, ax_bytes):
            ax.set_xticks(features, [str(f) for f in features])
            ax.minorticks_off()
        ax_bytes.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------- command
def add_bench_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Declare the ``dste bench`` options on ``parser``."""
    from dste.data import preset_names

    parser.add_argument("--graph", nargs="+", default=list(DEFAULT_GRAPHS), choices=preset_names(), metavar="NAME",
                        help=f"graph presets to run (default: {' '.join(DEFAULT_GRAPHS)}; allowed: {', '.join(preset_names())})")
    parser.add_argument("--features", nargs="+", type=int, default=list(DEFAULT_FEATURES), metavar="F",
                        help="feature widths F of X (default: 64 128 256)")
    parser.add_argument("--orders", nargs="+", default=list(ORDERS), choices=ORDERS,
                        help="node orders: 'random' (as generated) and/or 'reordered' (DSTE community order) "
                             "(default: both)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="threads for every contender: OMP/MKL/OPENBLAS_NUM_THREADS and torch.set_num_threads "
                             "(default: all cores)")
    parser.add_argument("--repeats", type=int, default=7,
                        help="timed rounds per configuration; min and median are reported (default: 7)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls per contender first (default: 1)")
    parser.add_argument("--quick", action="store_true",
                        help="short run: 3 repeats, F=128 only, modelled trn2 int8-hybrid only, two encodes "
                             "(the first is cold)")
    parser.add_argument("--hi-fraction", type=float, nargs="+", default=list(DEFAULT_HI_FRACTIONS), metavar="H",
                        help="shares of FP16 rows in the modelled hybrid-row X, one configuration each "
                             "(default: 0 0.01)")
    parser.add_argument("--no-proposals", action="store_true",
                        help="skip the proposed CPU paths (encoded-order CSR, int32 torch CSR)")
    parser.add_argument("--no-simulator", action="store_true", help="skip the simulator-speed step")
    parser.add_argument("--no-plot", action="store_true", help="do not write bench.png")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--seed", type=int, default=0, help="seed of the graphs and X (default: 0)")
    parser.add_argument("--out", type=Path, default=None,
                        help="directory for bench.json and bench.png, created if missing (default: a new "
                             "./bench-results/<timestamp>)")
    parser.add_argument("--overwrite", action="store_true",
                        help="write over the outputs of an earlier bench in --out (refused without it)")
    return parser


def check_memory(settings: dict) -> None:
    """Before any graph is generated: the widest ``--features`` fits the available memory on the largest graph, at
    ``DENSE_COPIES_PER_WIDTH`` dense float32 ``[nodes, F]`` arrays. Raises ``MemoryError`` naming the widest width
    that fits; nothing where the memory cannot be read."""
    from dste.data import PRESETS
    from dste.experiments.env_layers import available_memory_bytes

    available = available_memory_bytes()
    if available is None:
        return
    known = [name for name in settings["graphs"] if name in PRESETS]  # another name fails its own step
    if not known:
        return
    graph = max(known, key=lambda name: PRESETS[name].num_nodes)
    nodes, width = PRESETS[graph].num_nodes, max(settings["features"])
    needed = DENSE_COPIES_PER_WIDTH * 4.0 * nodes * width
    if needed > available:
        fitting = int(available // (DENSE_COPIES_PER_WIDTH * 4 * nodes))
        raise MemoryError(f"--features {width} on {graph} ({nodes:,} nodes) needs about {needed / 1e9:,.1f} GB (X, Y "
                          f"and their working copies: {DENSE_COPIES_PER_WIDTH} dense float32 arrays of nodes x F) and "
                          f"{available / 1e9:.1f} GB is available; the widest F that fits is {fitting:,}")


def _settings(args) -> dict:
    if not args.features or any(f < 1 for f in args.features):
        raise ValueError(f"--features needs positive widths, got {args.features}")
    if args.quick and list(args.features) != list(DEFAULT_FEATURES):
        raise ValueError("--quick runs F = 128 only; leave out --features, or drop --quick to choose widths")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    features = [128] if args.quick else list(args.features)
    if args.repeats < 1 or args.warmup < 0:
        raise ValueError(f"--repeats must be >= 1 and --warmup >= 0, got {args.repeats}, {args.warmup}")
    hi_fractions = [args.hi_fraction] if isinstance(args.hi_fraction, (int, float)) else list(args.hi_fraction)
    if not hi_fractions or not all(0.0 <= h <= 1.0 for h in hi_fractions):
        raise ValueError(f"--hi-fraction values must lie in [0, 1], got {hi_fractions}")
    return {
        "graphs": list(args.graph),
        "features": sorted(set(features)),
        "orders": list(dict.fromkeys(args.orders)),
        "threads": args.threads,
        "repeats": min(args.repeats, 3) if args.quick else args.repeats,
        "warmup": args.warmup,
        # two at least: the workload's own encode, one sample, is the process's first (its modules' first calls:
        # 0.27 s on cora-like against 0.01 s warm), and the minimum must not rest on it alone
        "encode_repeats": 2 if args.quick else 3,
        "targets": ["trn2"] if args.quick else list(TARGETS),
        "x_modes": ["int8-hybrid"] if args.quick else list(X_MODES),
        "hi_fractions": sorted(set(hi_fractions)),
        "proposals": not args.no_proposals,
        "seed": args.seed,
        "quick": bool(args.quick),
    }


def _guarded(results: dict, step: str, run, default=None, succeeded: list | None = None):
    """Run one step; a failure is recorded in ``results["errors"]``, printed, and the other steps still run.

    A failed step never contributes figures (its slot keeps ``default``); ``main`` exits non-zero when any
    step failed, and the report lists the failures first. A step that succeeds is appended to ``succeeded``.
    """
    try:
        value = run()
    except Exception as exc:  # one broken step must not discard the figures of the others
        message = f"{type(exc).__name__}: {exc}"
        results["errors"].append({"step": step, "error": message})
        print(f"dste bench: step {step!r} failed: {message}", file=sys.stderr)
        return default
    if succeeded is not None:
        succeeded.append(step)
    return value


def run_bench(args, stream=None) -> dict:
    """Run the comparison described in the module docstring; print tables; write JSON (and PNG) to ``args.out``."""
    stream = sys.stdout if stream is None else stream
    settings = _settings(args)
    check_memory(settings)
    overwrite = bool(getattr(args, "overwrite", False))
    if args.out is not None:
        out = Path(args.out)
        # an earlier bench's figures were replaced, even by a bench whose every step failed
        check_out_dir(out, OUTPUT_FILES, overwrite, "bench")
    threads = pin_threads(settings["threads"])
    if args.out is None:
        out = new_stamped_dir(DEFAULT_OUT_PARENT)
    try:
        return _run_steps(args, settings, threads, out, stream)
    finally:
        if args.out is None and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # the new directory of a bench that wrote nothing


def _run_steps(args, settings: dict, threads: dict, out: Path, stream) -> dict:
    from tqdm import tqdm

    succeeded: list[str] = []
    results = {"settings": settings, "machine": machine_info(), "threads": threads, "cpu_spmm": [],
               "bytes_per_edge": {}, "encode": [], "modelled": [], "simulator": None, "errors": []}
    disable = True if args.no_progress else None
    n_model = len(settings["features"]) * len(settings["targets"]) * len(
        x_configurations(settings["x_modes"], settings["hi_fractions"]))
    for graph in settings["graphs"]:
        with tqdm(total=1, desc=f"{graph}: generate + encode", disable=disable, leave=False) as bar:
            workloads = _guarded(results, f"{graph}: generate + encode",
                                 lambda: prepare_workloads(graph, settings["orders"], seed=settings["seed"]), [],
                                 succeeded)
            bar.update(1)
        for wl in workloads:
            results["bytes_per_edge"][wl.key] = format_bytes_per_edge(wl)
            for f in tqdm(settings["features"], desc=f"{wl.key}: CPU SpMM", disable=disable, leave=False):
                row = _guarded(results, f"{wl.key} F={f}: CPU SpMM",
                               lambda: cpu_spmm(wl, f, settings["repeats"], settings["warmup"], settings["proposals"]),
                               succeeded=succeeded)
                if row is not None:
                    results["cpu_spmm"].append(row)
            with tqdm(total=n_model, desc=f"{wl.key}: modelled", disable=disable, leave=False) as bar:
                results["modelled"] += _guarded(
                    results, f"{wl.key}: modelled latencies",
                    lambda: modelled_latencies(wl, settings["features"], settings["targets"], settings["x_modes"],
                                               settings["hi_fractions"], settings["seed"], progress=bar), [],
                    succeeded)
            if wl.order == "random":
                with tqdm(total=1, desc=f"{graph}: encode + snapshot", disable=disable, leave=False) as bar:
                    row = _guarded(results, f"{graph}: encode + snapshot",
                                   lambda: encode_throughput(wl, settings["encode_repeats"], settings["seed"]),
                                   succeeded=succeeded)
                    if row is not None:
                        results["encode"].append(row)
                    bar.update(1)
        del workloads
    if not args.no_simulator:
        with tqdm(total=1, desc="simulator speed", disable=disable, leave=False) as bar:
            results["simulator"] = _guarded(results, "simulator speed", lambda: simulator_speed(seed=settings["seed"]),
                                            succeeded=succeeded)
            bar.update(1)
    if not succeeded:
        # every step failed: no figures to keep, and an earlier bench's files (with --overwrite) are left as they are
        results["json_path"] = None
        print(report(results), file=stream)
        return results
    out.mkdir(parents=True, exist_ok=True)
    if not args.no_plot:  # before the JSON, so that a failed plot is among its errors
        results["plot_path"] = _guarded(results, "plot", lambda: str(plot(results, out / "bench.png")))
    json_path = out / "bench.json"
    # NumPy values become plain ones in strict_json; anything else (a path, a dtype) is written as its text
    json_path.write_text(strict_json.dumps(results, indent=1, default=str))
    results["json_path"] = str(json_path)
    print(report(results), file=stream)
    return results


def report(results: dict) -> str:
    """The printed summary: machine, threads, then one table per measurement."""
    m, t = results["machine"], results["threads"]
    failures = [f"FAILED step {e['step']}: {e['error']}" for e in results.get("errors", [])]
    parts = failures + [
        f"machine: {m['nproc']} x {m['cpu_model']}; python {m['python']}, numpy {m['numpy']}, scipy {m['scipy']}, "
        f"torch {m['torch']}, dste {m['dste']} at {m.get('source_revision', 'unknown')}",
        f"threads: {t['requested']} (torch {t['torch_num_threads']}, {', '.join(f'{k}={v}' for k, v in t['env'].items())}; "
        f"SciPy sparse @ dense is {t['scipy_sparse_matmul']})",
        "",
        "CPU Y = A @ X, measured (ms, min of repeats; 'x vs P' = P's time / dste.spmm's time, > 1 means DSTE is faster;"
        " 'proposed:' rows are candidate DSTE paths, not peers)",
        cpu_table(results["cpu_spmm"]),
        "",
        "Bytes per stored edge of the sparse operand",
        bytes_table(results["bytes_per_edge"]),
        "",
        "Encode (gcn_normalized, measured) and incremental re-encode after one snapshot",
        encode_table(results["encode"]),
        "",
        "NeuronCore latency of spmm_hybrid, MODELLED (dste.kernels.cost, not measured) vs fixed 128x128 block "
        "columns and a per-edge gather kernel",
        model_table(results["modelled"]),
    ]
    sim = results.get("simulator")
    if sim:
        parts += ["", f"simulator: spmm_hybrid on {sim['graph']} F={sim['features']}: {sim['tiles']} tiles in "
                      f"{sim['wall_s']:.3f} s = {sim['tiles_per_s']:.0f} simulated tiles/s "
                      f"({sim['instructions_per_s']:.0f} instructions/s; min of repeats, measured wall time; "
                      f"first call incl. planning {sim['first_call_s']:.3f} s)"]
    if results.get("json_path") is None and failures:
        parts += ["", "wrote nothing: every step failed"]
    else:
        parts += ["", f"wrote {results.get('json_path')}"
                  + (f" and {results['plot_path']}" if results.get("plot_path") else "")]
    if failures:
        parts.append(f"{len(failures)} step(s) failed; their figures are missing (see the top of this report)")
    return "\n".join(parts)


def main(argv=None) -> int:
    """Entry point: ``python -m dste.experiments.bench [options]``; also takes parsed ``dste bench`` options."""
    if not isinstance(argv, argparse.Namespace):
        from dste.argparsing import ArgumentParser

        parser = add_bench_arguments(ArgumentParser(prog="dste bench", description=__doc__.split("\n\n")[0]))
        argv = parser.parse_args(argv)
    return 1 if run_bench(argv)["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
