"""``spawn(fn, world_size)``: run ``fn(comm, *args)`` on ``world_size`` local processes (tests, notebooks).

The parent hosts the job's TCP store on 127.0.0.1 (port chosen by the OS, so concurrent jobs
never collide) and outlives every rank, so a rank's death is always visible to the others
through it. Children start through ``torch.multiprocessing``'s ``forkserver`` context with torch
preloaded, so each rank costs one fork instead of one interpreter start and torch import.

Unlike ``torch.multiprocessing.spawn``, one rank's death does not kill the others: each rank must
end on its own (with its result or its own error), which is what shows that the job's failure
handling works. ``spawn`` waits for all of them (bounded by ``job_timeout_s``; ranks still running
then are terminated) and raises :class:`DistributedJobError` with every rank's outcome if any failed.
"""

from __future__ import annotations

import queue as queue_module
import time
import traceback
from dataclasses import dataclass
from multiprocessing.reduction import ForkingPickler

import numpy as np
import torch.distributed as dist
import torch.multiprocessing as mp

from dste.checks import real_number
from dste.distributed.runtime import DEFAULT_HEARTBEAT_S, DEFAULT_TIMEOUT_S, check_seconds, init_distributed

LOOPBACK = "127.0.0.1"
PRELOAD = ["torch", "torch.distributed", "numpy", "scipy.sparse", "dste.distributed"]


@dataclass
class RankOutcome:
    """How one rank ended: ``status`` is "ok", "error" (raised), "died" (exited without a result) or "killed" (over time)."""

    rank: int
    status: str
    seconds: float
    error_type: str = ""
    message: str = ""
    exitcode: int | None = None


class DistributedJobError(RuntimeError):
    """At least one rank of a :func:`spawn` job did not return; ``outcomes`` has every rank's ending."""

    def __init__(self, outcomes: list[RankOutcome]):
        self.outcomes = outcomes
        lines = [f"rank {o.rank}: {o.status}" + (f" (exit code {o.exitcode})" if o.exitcode not in (None, 0) else "")
                 + (f" after {o.seconds:.1f} s: {o.error_type}: {o.message}" if o.message else f" after {o.seconds:.1f} s")
                 for o in outcomes]
        super().__init__("DSTE distributed job failed:\n  " + "\n  ".join(lines))


def _rank_main(rank, world_size, port, fn, args, results, timeout_s, heartbeat_s):
    start = time.monotonic()
    comm = None
    try:
        comm = init_distributed(rank, world_size, LOOPBACK, port, timeout_s=timeout_s, heartbeat_s=heartbeat_s)
        value = fn(comm, *args)
        try:
            # pickled here, not in the queue's feeder thread, which prints a pickling error to this rank's
            # stderr and drops the result: the parent then saw only "died: exited without a result"
            payload = bytes(ForkingPickler.dumps(value))
        except Exception as exc:
            raise TypeError(f"rank {rank}: fn returned a {type(value).__name__} that cannot be pickled to the parent "
                            f"({type(exc).__name__}: {exc}); return plain data (arrays, numbers, dataclasses)") from exc
        results.put((rank, "ok", payload, "", "", time.monotonic() - start))
    except BaseException as exc:  # every ending is reported to the parent, including KeyboardInterrupt
        if comm is not None:
            comm.report_failure(exc)
        results.put((rank, "error", None, type(exc).__name__, f"{exc}\n{traceback.format_exc()}", time.monotonic() - start))
    finally:
        if comm is not None:
            comm.close()


def spawn(fn, world_size: int, args: tuple = (), *, timeout_s: float = DEFAULT_TIMEOUT_S,
          heartbeat_s: float = DEFAULT_HEARTBEAT_S, job_timeout_s: float | None = None,
          start_method: str = "forkserver") -> list:
    """Run ``fn(comm, *args)`` on ranks ``0..world_size-1``; return their results in rank order.

    ``fn`` must be importable by name (a module-level function). ``timeout_s`` bounds each
    collective; ``job_timeout_s`` (default ``4 * timeout_s + 60``) bounds the whole job.
    """
    if isinstance(world_size, bool) or not isinstance(world_size, (int, np.integer)) or world_size < 1:
        raise ValueError(f"spawn: world_size must be an int >= 1, got {world_size!r}")  # np.int64(2) was refused
    world_size = int(world_size)
    timeout_s = check_seconds(timeout_s, "spawn: timeout_s", "a number > 0 (seconds per collective)")
    # checked here, not by every rank after it started
    heartbeat_s = check_seconds(heartbeat_s, "spawn: heartbeat_s", "a number > 0 (seconds between heartbeats)")
    if job_timeout_s is not None:
        # -1 or NaN ran the job and then reported every rank "killed: still running after the -1 s job timeout"
        job_timeout_s = real_number(job_timeout_s, "spawn: job_timeout_s (seconds for the whole job)", finite=False)
        if not job_timeout_s > 0:
            raise ValueError(f"spawn: job_timeout_s must be > 0 seconds for the whole job (or None for "
                             f"4 * timeout_s + 60), got {job_timeout_s!r}")
    start_methods = mp.get_all_start_methods()
    if start_method not in start_methods:
        raise ValueError(f"spawn: start_method must be one of {start_methods} (this platform's), got {start_method!r}")
    if getattr(fn, "__qualname__", "").count("<") or not hasattr(fn, "__module__"):
        raise ValueError(f"spawn: fn must be a module-level function (each rank imports it by name), got {fn!r}")
    job_timeout_s = 4 * timeout_s + 60 if job_timeout_s is None else job_timeout_s
    store = dist.TCPStore(LOOPBACK, 0, None, True, wait_for_workers=False)
    ctx = mp.get_context(start_method)
    if start_method == "forkserver":
        ctx.set_forkserver_preload(PRELOAD)
    results = ctx.Queue()
    start = time.monotonic()
    procs = [ctx.Process(target=_rank_main, args=(r, world_size, store.port, fn, args, results, timeout_s, heartbeat_s),
                         name=f"dste-rank-{r}") for r in range(world_size)]
    for proc in procs:
        proc.start()
    outcomes: dict[int, RankOutcome] = {}
    values: dict[int, object] = {}
    exited_at: dict[int, float] = {}
    while len(outcomes) < world_size and time.monotonic() - start < job_timeout_s:
        try:
            rank, status, payload, error_type, message, seconds = results.get(timeout=0.2)
            if status == "ok":
                try:
                    values[rank] = ForkingPickler.loads(payload)
                except Exception as exc:  # e.g. a class this process cannot import
                    status, error_type = "error", type(exc).__name__
                    message = f"the parent could not unpickle this rank's result: {exc}"
            outcomes[rank] = RankOutcome(rank, status, seconds, error_type, message)
        except queue_module.Empty:
            pass
        now = time.monotonic()
        for rank, proc in enumerate(procs):
            if rank in outcomes or proc.is_alive():
                continue
            # a rank that exited may still have its result in flight: give the queue 2 s before calling it dead
            exited_at.setdefault(rank, now)
            if now - exited_at[rank] > 2.0:
                outcomes[rank] = RankOutcome(rank, "died", exited_at[rank] - start, "", "exited without a result", proc.exitcode)
    for rank, proc in enumerate(procs):
        if rank not in outcomes:
            proc.terminate()
            outcomes[rank] = RankOutcome(rank, "killed", time.monotonic() - start, "", f"still running after the {job_timeout_s:.0f} s job timeout")
    for proc in procs:
        proc.join(timeout=10)
        if outcomes[procs.index(proc)].exitcode is None:
            outcomes[procs.index(proc)].exitcode = proc.exitcode
    ordered = [outcomes[r] for r in range(world_size)]
    if any(o.status != "ok" for o in ordered):
        raise DistributedJobError(ordered)
    return [values[r] for r in range(world_size)]
