"""Where the CPU time of ``dste.spmm`` goes, and what the alternatives cost (stand-alone script, not a test).

    python bench/cpu_paths.py [--graph arxiv-scale] [--features 128] [--threads 2] [--repeats 7]

Times, interleaved like ``dste bench`` (min and median of the repeats, same threads for all):

- ``dste.spmm`` (cpu backend) and the finiteness check of X as the op does it (one thread: a finite torch sum;
  more: NumPy ``x.min()`` and ``x.max()`` both finite), beside the check it replaced
  (``torch.isfinite(x).all()``) and two other equivalents, and SciPy's CSR product in original node order;
- ``torch.sparse.mm`` on the fp32 CSR with int64 (torch's default) and int32 indices;
- the effective CSR executed in DSTE's encoded (reordered) order: X rows gathered in column order, one
  CSR product whose X accesses stay local, Y rows scattered back; on one thread and split by rows
  (balanced by nonzeros) over ``--threads`` threads (SciPy's kernel releases the GIL), with and without
  the two permutations (the latter is the cost when the caller keeps features in encoded order).

Every variant is checked against SciPy's product first.
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--graph", default="arxiv-scale")
    parser.add_argument("--features", type=int, default=128)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(args.threads)

    import numpy as np
    import scipy.sparse as sp
    import torch

    import dste
    from dste.experiments import bench

    threads = bench.pin_threads(args.threads)
    workload = bench.prepare_workloads(args.graph, orders=("random",))[0]
    matrix, csr = workload.matrix, workload.csr
    n, m = csr.shape
    x = np.random.default_rng(0).standard_normal((m, args.features)).astype(np.float32)
    x_torch = torch.from_numpy(x)

    row_perm = np.asarray(matrix.row_perm, dtype=np.int64)
    col_perm = np.asarray(matrix.col_perm, dtype=np.int64)
    col_position = np.empty(m, dtype=np.int64)
    col_position[col_perm] = np.arange(m)
    rows_first = csr[row_perm].tocsr()
    encoded = sp.csr_matrix((rows_first.data, col_position[rows_first.indices].astype(np.int32), rows_first.indptr),
                            shape=(n, m))
    encoded.sort_indices()
    bounds = [int(np.searchsorted(encoded.indptr, encoded.nnz * k // args.threads)) for k in range(args.threads + 1)]
    bounds[-1] = n
    blocks = [encoded[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])]
    pool = ThreadPoolExecutor(args.threads)
    x_encoded = np.ascontiguousarray(x[col_perm])

    def product_parallel(xe):
        parts = [pool.submit(block.__matmul__, xe) for block in blocks]
        return np.vstack([p.result() for p in parts])

    def with_permutations(product):
        def run():
            y_encoded = product(np.take(x, col_perm, axis=0))
            y = np.empty_like(y_encoded)
            y[row_perm] = y_encoded
            return y
        return run

    dste_tensor = dste.DSTETensor(matrix)
    torch64 = bench._torch_csr(csr, np.int64)
    torch32 = bench._torch_csr(csr, np.int32)
    products = {
        "dste.spmm (cpu)": lambda: dste.spmm(dste_tensor, x_torch, backend="cpu"),
        "  its check on one thread: torch sum finite": lambda: bool(np.isfinite(x_torch.sum().item())),
        "  its check on more threads: np.isfinite(x.min()), np.isfinite(x.max())":
            lambda: bool(np.isfinite(x.min()) and np.isfinite(x.max())),
        "  replaced check: torch.isfinite(x).all()": lambda: bool(torch.isfinite(x_torch).all()),
        "  alternative: np.isfinite(x).all()": lambda: bool(np.isfinite(x).all()),
        "  alternative: torch.aminmax(x) finite": lambda: all(map(torch.isfinite, torch.aminmax(x_torch))),
        "scipy csr @ x, original order": lambda: csr @ x,
        "torch.sparse.mm int64 CSR": lambda: torch.sparse.mm(torch64, x_torch),
        "torch.sparse.mm int32 CSR": lambda: torch.sparse.mm(torch32, x_torch),
        "encoded order, 1 thread, with perms": with_permutations(encoded.__matmul__),
        f"encoded order, {args.threads} threads, with perms": with_permutations(product_parallel),
        "encoded order, 1 thread, X/Y kept encoded": lambda: encoded @ x_encoded,
        f"encoded order, {args.threads} threads, X/Y kept encoded": lambda: product_parallel(x_encoded),
    }
    reference = csr @ x
    scale = float(np.abs(reference).max())
    for name, run in products.items():
        if "check" in name or "alternative" in name:  # booleans, not products
            continue
        y = bench._as_numpy(run())
        if "kept encoded" in name:
            y = y[np.argsort(row_perm)]
        error = float(np.abs(y - reference).max()) / scale
        if error > bench.PARITY_RTOL:
            raise AssertionError(f"{name} differs from SciPy by {error:.2e} of max|Y|")
    timings = bench.time_interleaved(products, args.repeats, warmup=1)
    torch_min = timings["torch.sparse.mm int64 CSR"]["min_s"]
    print(f"{args.graph}, F={args.features}, nnz={csr.nnz}, threads={threads['torch_num_threads']} "
          f"({os.cpu_count()} x {bench.machine_info()['cpu_model']}); min/median of {args.repeats}, interleaved")
    print(f"{'path':58s} {'min ms':>8s} {'median ms':>10s} {'torch64 / path':>15s}")
    for name, t in timings.items():
        print(f"{name:58s} {t['min_s'] * 1e3:8.1f} {t['median_s'] * 1e3:10.1f} {torch_min / t['min_s']:15.2f}")
    pool.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
