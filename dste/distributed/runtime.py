"""The process group of a DSTE job on ``torch.distributed``, and what happens when a rank fails.

``init_distributed`` joins the job (gloo on CPU; the same calls run with the Neuron/XLA backend)
and returns a :class:`Comm`, through which every collective of ``dste.distributed`` goes.

Failure rules (why each part is here):

* Every collective is bounded by the process-group ``timeout`` (``init_process_group(timeout=)``):
  a peer that hangs, or one whose death its neighbours never see, ends the wait with an error
  instead of a hang.
* A rank that dies closes its sockets, so the peers talking to it fail at once; each rank that
  fails leaves the job (its sockets close too), so the failure reaches every rank within about one
  timeout, whatever the collective's communication pattern.
* The error must say *which* rank failed. The backend's message names a socket, not a rank, so
  each rank keeps two keys in the job's rendezvous store: a heartbeat written by a daemon thread
  every ``heartbeat_s`` seconds, and the sequence number of the collective it is entering. When a
  collective fails, the rank probes the heartbeats for ``2 * heartbeat_s + 1`` s: ranks whose beat
  did not advance are dead; live ranks behind this one's collective are stuck. A rank that
  catches an error also writes it under its own key (``report_failure``), so the others can
  quote it. The store lives in the launcher (``spawn``'s parent or torchrun's agent) when it can,
  so it outlives any rank.
"""

from __future__ import annotations

import datetime
import numbers
import threading
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

KEY_PREFIX = "dste/"
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_HEARTBEAT_S = 1.0
FOLLOWER_MARK = "left after"
MIN_TIMEOUT_S = 0.001
"""The shortest timeout or heartbeat period: the rendezvous store and gloo count whole milliseconds (1e-6 s timed
out after 0 ms)."""
MAX_TIMEOUT_S = 7 * 24 * 3600.0
"""The longest one: a week (1e308 s overflowed Python's timedelta)."""


def check_seconds(value, what: str, phrase: str = "a finite number of seconds > 0") -> float:
    """``value`` as a float of seconds in [``MIN_TIMEOUT_S``, ``MAX_TIMEOUT_S``]; ``ValueError`` naming ``what``
    (``phrase`` says what it must be) otherwise."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not MIN_TIMEOUT_S <= float(value) <= MAX_TIMEOUT_S):  # NaN fails the comparison too
        raise ValueError(f"{what} must be {phrase}, from {MIN_TIMEOUT_S:g} s (the rendezvous store counts "
                         f"milliseconds) to {MAX_TIMEOUT_S:g} s (a week); got {value!r}")
    return float(value)


class RankFailure(RuntimeError):
    """A collective could not complete because another rank of the job failed or stopped responding.

    ``failed_ranks``: the ranks found dead or stuck (may be empty when none could be identified);
    ``operation``: the collective that failed on this rank.
    """

    def __init__(self, message: str, *, rank: int, operation: str, failed_ranks: list[int]):
        super().__init__(message)
        self.rank = rank
        self.operation = operation
        self.failed_ranks = failed_ranks


@dataclass
class Comm:
    """This rank's handle on the job: rank, size, the store, and guarded collectives."""

    rank: int
    world_size: int
    store: object
    timeout_s: float
    heartbeat_s: float = DEFAULT_HEARTBEAT_S
    backend: str = "gloo"
    _seq: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _beat_thread: threading.Thread | None = None

    # ------------------------------------------------------------------ collectives
    def all_to_all_single(self, output: torch.Tensor, send: torch.Tensor, output_splits, input_splits, what: str):
        """``dist.all_to_all_single`` with split sizes (lists of ints), guarded."""
        self._guarded(f"all_to_all_single ({what})", lambda: dist.all_to_all_single(
            output, send, output_split_sizes=[int(v) for v in output_splits], input_split_sizes=[int(v) for v in input_splits]))
        return output

    def all_gather_ints(self, values, what: str) -> torch.Tensor:
        """Every rank's int64 vector (same length on all ranks) as ``[world_size, len]``."""
        mine = torch.as_tensor(values, dtype=torch.int64).reshape(-1)
        out = [torch.empty_like(mine) for _ in range(self.world_size)]
        self._guarded(f"all_gather ({what})", lambda: dist.all_gather(out, mine))
        return torch.stack(out)

    def scatter_objects(self, objects, what: str, src: int = 0):
        """Rank ``src`` hands ``objects[r]`` to rank r (pickled); returns this rank's object."""
        received = [None]
        self._guarded(f"scatter_object_list ({what})", lambda: dist.scatter_object_list(
            received, objects if self.rank == src else None, src=src))
        return received[0]

    def gather_objects(self, obj, what: str, dst: int = 0):
        """Every rank's ``obj`` as a list on ``dst`` (None elsewhere)."""
        out = [None] * self.world_size if self.rank == dst else None
        self._guarded(f"gather_object ({what})", lambda: dist.gather_object(obj, out, dst=dst))
        return out

    def broadcast_object(self, obj, what: str, src: int = 0):
        box = [obj]
        self._guarded(f"broadcast_object_list ({what})", lambda: dist.broadcast_object_list(box, src=src))
        return box[0]

    def barrier(self, what: str = "barrier"):
        self._guarded(what, lambda: dist.barrier())

    # ------------------------------------------------------------------ failure handling
    def _guarded(self, operation: str, run):
        self._seq += 1
        self._store_set(f"step/{self.rank}", str(self._seq))
        try:
            return run()
        except RankFailure:
            raise
        except Exception as exc:  # gloo raises RuntimeError / DistBackendError subclasses
            raise self._diagnose(operation, exc) from exc

    def _diagnose(self, operation: str, exc: BaseException) -> RankFailure:
        peers = [r for r in range(self.world_size) if r != self.rank]
        try:
            first = {r: self._store_get(f"heartbeat/{r}") for r in peers}
            time.sleep(2 * self.heartbeat_s + 1.0)
            second = {r: self._store_get(f"heartbeat/{r}") for r in peers}
            steps = {r: self._store_get(f"step/{r}") for r in peers}
            reports = {r: self._store_get(f"failed/{r}") for r in peers}
        except Exception as store_exc:  # the store's host is gone as well
            return RankFailure(
                f"DSTE distributed: rank {self.rank} of {self.world_size} could not complete {operation} "
                f"(collective #{self._seq}), and the job's rendezvous store is unreachable ({store_exc}); "
                "the launcher or the rank hosting the store has exited. Check the launcher's log, then restart "
                f"every rank of the job. Backend error: {exc}",
                rank=self.rank, operation=operation, failed_ranks=[],
            )
        followers = {r for r, msg in reports.items() if msg is not None and msg.startswith(FOLLOWER_MARK)}
        reported = {r: msg for r, msg in reports.items() if msg is not None and r not in followers}
        dead = [r for r in peers if first[r] == second[r] and r not in followers]
        # a live rank without a step key has entered no collective yet (a long load or encode): behind us too
        stuck = [r for r in peers if r not in dead and r not in followers and int(steps[r] or 0) < self._seq]
        failed = sorted(set(dead) | set(stuck) | set(reported))
        parts = []
        if dead:
            parts.append(f"rank(s) {dead} stopped (no heartbeat for over {2 * self.heartbeat_s + 1:.0f} s: the process exited or was killed)")
        if stuck:
            parts.append(f"rank(s) {stuck} are alive but did not reach this collective within the {self.timeout_s:.0f} s timeout")
        for r, msg in sorted(reported.items()):
            parts.append(f"rank {r} reported: {msg}")
        if followers:
            parts.append(f"rank(s) {sorted(followers)} already left after the failure")
        if not parts:
            parts.append("no other rank was found dead or stuck; the backend error below is the only evidence")
        return RankFailure(
            f"DSTE distributed: rank {self.rank} of {self.world_size} could not complete {operation} "
            f"(collective #{self._seq}): " + "; ".join(parts) + ". A job cannot continue without all its ranks: "
            f"read the failed rank's own log for the cause, then restart every rank of the job "
            f"(or let torchrun --max-restarts do it). Backend error: {type(exc).__name__}: {exc}",
            rank=self.rank, operation=operation, failed_ranks=failed,
        )

    def report_failure(self, exc: BaseException) -> None:
        """Leave this rank's error in the store for the other ranks to quote (best effort)."""
        message = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, RankFailure):
            message = f"{FOLLOWER_MARK} another rank's failure ({exc.operation})"
        try:
            self._store_set(f"failed/{self.rank}", message[:500])
        except Exception:
            pass

    # ------------------------------------------------------------------ store helpers
    def _store_set(self, key: str, value: str) -> None:
        self.store.set(KEY_PREFIX + key, value)

    def _store_get(self, key: str):
        full = KEY_PREFIX + key
        if not self.store.check([full]):
            return None
        return self.store.get(full).decode()

    def _beat(self) -> None:
        while not self._stop.is_set():
            try:
                self._store_set(f"heartbeat/{self.rank}", repr(time.time()))
            except Exception:
                return  # store gone: collectives will fail and report it
            self._stop.wait(self.heartbeat_s)

    def start_heartbeat(self) -> None:
        self._beat_thread = threading.Thread(target=self._beat, name=f"dste-heartbeat-{self.rank}", daemon=True)
        self._beat_thread.start()

    def close(self) -> None:
        """Stop the heartbeat and leave the process group (safe to call twice)."""
        self._stop.set()
        if dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception:
                pass


def init_distributed(rank: int, world_size: int, master_addr: str, master_port: int, *,
                     timeout_s: float = DEFAULT_TIMEOUT_S, heartbeat_s: float = DEFAULT_HEARTBEAT_S,
                     host_store: bool = False, backend: str = "gloo") -> Comm:
    """Join the job: connect to (or, with ``host_store``, host) the TCP store and init the process group.

    ``timeout_s`` bounds every collective and the rendezvous. ``host_store`` is for the rank that
    hosts the store when no launcher does (torchrun's agent and :func:`dste.distributed.spawn` do).
    """
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"init_distributed: world_size must be an int >= 1, got {world_size!r}")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"init_distributed: rank must be an int in [0, {world_size}), got {rank!r}")
    # 0 or a negative timeout failed in the store's connect ("timed out after -5000ms")
    timeout_s = check_seconds(timeout_s, "init_distributed: timeout_s")
    heartbeat_s = check_seconds(heartbeat_s, "init_distributed: heartbeat_s")
    if isinstance(master_port, bool) or not isinstance(master_port, numbers.Integral) or not 0 <= master_port <= 65535:
        # 99999 failed inside the store's C++ binding
        raise ValueError(f"init_distributed: master_port must be an int in [0, 65535] (0: the OS picks one, for a "
                         f"store hosted here), got {master_port!r}")
    timeout = datetime.timedelta(seconds=float(timeout_s))
    try:
        store = dist.TCPStore(master_addr, int(master_port), None, bool(host_store), timeout=timeout,
                              wait_for_workers=False)
    except (RuntimeError, OSError) as exc:  # torch's DistStoreError / DistNetworkError are RuntimeErrors
        where = f"{master_addr}:{master_port}"
        hint = ("is MASTER_PORT in use (0 lets the OS pick one), does MASTER_ADDR name this host, or is the timeout "
                "too short?" if host_store else "is rank 0 (or the launcher) running and reachable there, does "
                "MASTER_ADDR resolve, or is the timeout too short?")
        raise ConnectionError(f"init_distributed: rank {rank} could not {'host' if host_store else 'reach'} the "
                              f"job's TCP store at {where} within {timeout_s:g} s: {hint} "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    comm = Comm(rank, world_size, store, float(timeout_s), float(heartbeat_s), backend)
    comm.start_heartbeat()
    try:
        dist.init_process_group(backend, store=dist.PrefixStore("pg", store), rank=rank,
                                world_size=world_size, timeout=timeout)
    except Exception as exc:
        comm.close()
        joined = [r for r in range(world_size) if comm._store_get(f"heartbeat/{r}") is not None]
        missing = [r for r in range(world_size) if r not in joined]
        raise RankFailure(
            f"DSTE distributed: rank {rank} could not join the job of {world_size} ranks at "
            f"{master_addr}:{master_port} within {timeout_s:.0f} s; rank(s) {missing} never connected. "
            f"Start every rank (same MASTER_ADDR/MASTER_PORT/WORLD_SIZE) or check their logs. "
            f"Backend error: {type(exc).__name__}: {exc}",
            rank=rank, operation="init_process_group", failed_ranks=missing,
        ) from exc
    return comm
