"""``torchrun --standalone --nproc-per-node P -m dste.distributed [options]``: distributed GCN inference.

Reads RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT as torchrun sets them. Rank 0 loads the
dataset (``dste.data.load_dataset``), partitions it and hands every rank its rows; every rank
encodes its block and the 2-layer GCN runs; rank 0 prints one line per rank (rows, halo rows,
device bytes, measured CPU seconds) and, with ``--check``, compares the result with a
single-process run and exits with status 1 when any logit differs by more than ``--check-atol``
(by default a per-backend tolerance times the largest |logit| where that exceeds 1), or is not finite. With torchrun's agent, the rendezvous store lives in the agent
(TORCHELASTIC_USE_AGENT_STORE), so it outlives any rank.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


PROG = "python -m dste.distributed"


def _env_int(name: str, low: int, high: int, meaning: str) -> int:
    """Environment variable ``name`` as an integer in [``low``, ``high``]; ``ValueError`` naming it otherwise."""
    value = os.environ.get(name)
    if value is None:
        raise ValueError(f"environment variable {name} is not set; launch with "
                         "`torchrun --standalone --nproc-per-node P -m dste.distributed ...` (or set RANK, WORLD_SIZE, "
                         "MASTER_ADDR, MASTER_PORT yourself)")
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None
    if not low <= number <= high:
        raise ValueError(f"environment variable {name} ({meaning}) must be an integer in [{low}, {high}], got {number}")
    return number


def job_environment() -> tuple[int, int, str, int]:
    """``(rank, world_size, master_addr, master_port)`` from the variables torchrun sets, each checked by name
    (init_distributed's own messages name its arguments, not the variables, and a port past 65535 failed inside
    the store's binding)."""
    world_size = _env_int("WORLD_SIZE", 1, 2**31 - 1, "the number of ranks")
    rank = _env_int("RANK", 0, world_size - 1, f"this process's rank among WORLD_SIZE={world_size}")
    port = _env_int("MASTER_PORT", 1, 65535, "the rendezvous store's TCP port")
    return rank, world_size, os.environ.get("MASTER_ADDR", "127.0.0.1"), port


def check_dataset(name: str, root) -> None:
    """Refuse a ``--dataset`` that ``dste.data.load_dataset`` cannot read, as far as that is known without reading
    it (``dste.data.locate_dataset``: an unknown name, an on-disk dataset without a data root, files that are not
    there). Every rank runs it, before joining the job: only rank 0 loads, and before, the others joined and waited
    for it to fail."""
    from dste.data import locate_dataset

    try:
        locate_dataset(name, root)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"--dataset: {error}") from None
    except (ValueError, TypeError) as error:  # an empty name is a TypeError to the API, a bad option value here
        raise ValueError(f"--dataset: {error}") from None


# --check's default tolerance per backend, for logits of magnitude 1 or less and scaled by the largest |logit| above
# it (a 4,000-node star graph's logits reach 245, and its two correct runs differ by 2.9e-4). cpu: both runs sum the
# same float32 products in another order (a few ulps; arxiv-scale differs by 1.9e-6). Kernel backends round X to bf16
# on the way in (2^-8 relative): cora-like's logits move by up to 8e-3 on nkisim.
CHECK_ATOL = {"cpu": 1e-4}
KERNEL_CHECK_ATOL = 2e-2


def _at_least(low: float, kind=float, strict: bool = False):
    def parse(text: str):
        value = kind(text)
        if not (value > low if strict else value >= low) or value != value or value == float("inf"):
            finite = " and finite" if kind is float else ""
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {low:g}{finite}, got {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its "invalid ... value" message
    return parse


def _seconds(text: str) -> float:
    """--timeout: ``runtime.check_seconds``' range, refused here by the option's name (1e308 overflowed Python's
    timedelta, 1e-6 timed out after 0 ms)."""
    from dste.distributed.runtime import check_seconds

    value = float(text)  # not a number: argparse's "invalid float value"
    try:
        return check_seconds(value, "a timeout", "> 0 seconds")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


_seconds.__name__ = "float"  # argparse names the type in its "invalid ... value" message


def parse_args(argv=None):
    from dste.argparsing import ArgumentParser

    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="cora-like", help="a dste.data.load_dataset name (default: cora-like)")
    p.add_argument("--root", default=None, help="data root for on-disk datasets")
    p.add_argument("--hidden", type=_at_least(1, int), default=64)
    p.add_argument("--classes", type=_at_least(0, int), default=0, help="output width (default: the dataset's classes)")
    p.add_argument("--backend", default="cpu", choices=["cpu", "nkisim", "neuron"],
                   help="dste.spmm backend: cpu | nkisim | neuron")  # refused here, not by every rank after the load
    p.add_argument("--partition", default="metis", choices=["metis", "blocks", "contiguous"])
    p.add_argument("--timeout", type=_seconds, default=120.0,
                   help="seconds any collective may take before the job fails (0.001 to 604800, a week)")
    p.add_argument("--check", action="store_true",
                   help="rank 0 also runs one process and compares; exit status 1 when they differ")
    p.add_argument("--check-atol", type=_at_least(0), default=None,
                   help=f"largest |distributed - single process| --check accepts (default "
                        f"{CHECK_ATOL['cpu']:g} on cpu, "
                        f"{KERNEL_CHECK_ATOL:g} on the kernel backends, times the largest |logit| where it "
                        "exceeds 1)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    """The job; a bad option, environment variable or dataset is printed as one line (no traceback) with exit
    status 2, and a failure of another rank (``RankFailure``) with status 1, as ``dste run`` reports its errors."""
    args = parse_args(argv)
    from dste.bindings.backends import BackendUnavailableError
    from dste.distributed.runtime import RankFailure

    try:
        return _run(args)
    except (ValueError, OSError, MemoryError, BackendUnavailableError, RankFailure) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1 if isinstance(error, RankFailure) else 2


def _run(args) -> int:
    rank, world_size, addr, port = job_environment()
    check_dataset(args.dataset, args.root)
    from dste.bindings.backends import resolve_backend

    resolve_backend(args.backend)  # before joining: an unavailable backend failed on every rank after the rendezvous
    from dste.distributed.jobs import run_gcn_inference
    from dste.distributed.runtime import init_distributed

    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"
    comm = init_distributed(rank, world_size, addr, port, timeout_s=args.timeout, host_store=(rank == 0 and not agent_store))
    status = 0
    try:
        graph = None
        if rank == 0:
            from dste.data import load_dataset

            graph = load_dataset(args.dataset, root=args.root)
        classes = comm.broadcast_object(args.classes or (graph.num_classes if graph is not None else 0), "classes")
        start = time.perf_counter()
        result = run_gcn_inference(comm, None if graph is None else graph.adj, None if graph is None else graph.x,
                                   hidden=args.hidden, classes=classes, method=args.partition, backend=args.backend)
        seconds = time.perf_counter() - start
        nbytes = int(result["block"].matrix.nbytes()["device_total"])
        summary = (rank, result["block"].n_own, result["block"].n_halo, nbytes, result["setup_seconds"], seconds)
        rows = comm.gather_objects((summary, result["owned"], result["logits"][0]), "results")
        if rank == 0:
            print(f"dste.distributed: {args.dataset}, {world_size} ranks, backend {args.backend} (CPU times measured)")
            print("rank  owned rows  halo rows  matrix bytes  encode+plan s  total s")
            for (r, own, halo, nb, setup, total), _, _ in rows:
                print(f"{r:4d}  {own:10d}  {halo:9d}  {nb:12d}  {setup:13.2f}  {total:7.2f}")
            if args.check:
                from dste.distributed.gcn import GCNWeights, gcn_reference

                weights = GCNWeights.random(graph.x.shape[1], args.hidden, classes, seed=0)
                ref = gcn_reference(graph.adj, graph.x, weights, backend=args.backend).numpy()
                err = max(float(np.abs(logits - ref[owned]).max()) for _, owned, logits in rows)
                atol = args.check_atol
                if atol is None:
                    scale = max(1.0, float(np.abs(ref).max(initial=0.0)))
                    atol = CHECK_ATOL.get(args.backend, KERNEL_CHECK_ATOL) * scale
                print(f"max |distributed - single process| = {err:.3g}")
                if not err <= atol:  # a NaN logit fails too
                    print(f"dste.distributed: check FAILED: the distributed logits differ from the single-process "
                          f"ones by {err:.3g}, more than --check-atol {atol:g}", file=sys.stderr)
                    status = 1
        comm.barrier("end of job")
    except BaseException as exc:
        comm.report_failure(exc)
        raise
    finally:
        comm.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
