"""What a run needs from the machine: its schedule (snapshots and controller episodes by graph size), the memory of
one seed's worker process, and how many workers ``--jobs auto`` starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from dste.data.stream import snapshots_with_heldout_burst, stream_params
from dste.experiments.run_config import MIN_SNAPSHOTS, RunConfig

__all__ = ["GraphSize", "auto_jobs", "balanced_workers", "default_jobs", "memory_check", "schedule_for",
           "width_floor_bytes", "worker_peak_bytes", "WIDTH_FLOOR_BYTES",
           "LARGE_GRAPH_NODES", "MEMORY_REFUSAL_FACTOR", "SCHEDULES", "WORKER_PEAK_BYTES", "WORKER_PEAK_HEADROOM"]

LARGE_GRAPH_NODES = 50_000
"""Graphs above this many nodes get the large-graph schedule of :func:`schedule_for` unless the run names its own."""


SCHEDULES = {"default": (16, 1500), "large": (6, 200)}
"""(snapshots, controller episodes) per schedule. A layer run at ogbn-arxiv's size takes about a second (its
quantizations and SpMM over every node) and each snapshot adds 48 first-layer runs to greedy search and the
static sweep, so the large-graph schedule judges fewer snapshots (four training, two held out) and trains the
controller for fewer episodes; everything else about the method is unchanged. A bursty stream gets one snapshot
more where the count would hold out no burst (``dste.data.stream.snapshots_with_heldout_burst``)."""


@dataclass(frozen=True)
class GraphSize:
    """What a run's memory depends on: nodes, feature width and stored adjacency entries (both directions)."""

    nodes: int
    features: int
    entries: int

    @classmethod
    def of(cls, graph) -> "GraphSize":
        """The size of ``graph``, a ``dste.data.Graph`` (or anything with ``num_nodes``, ``x`` and ``adj``)."""
        if not all(hasattr(graph, name) for name in ("num_nodes", "x", "adj")):
            raise TypeError(f"GraphSize.of takes a dste.data.Graph (num_nodes, x, adj), got {type(graph).__name__}")
        return cls(int(graph.num_nodes), int(graph.x.shape[1]), int(graph.adj.nnz))

    def label(self) -> str:
        return f"{self.nodes:,} nodes x {self.features:,} features, {self.entries:,} adjacency entries"


WORKER_PEAK_BYTES = (1.64e9, 8.27e3, 7.33, 292.0)
"""A seed's worker process at its peak, modelled as fixed bytes plus, per snapshot, bytes per node, per node-feature
value and per stored adjacency entry, plus the stored quantized versions of each snapshot's features (about 12 bytes
per value, at most ``STORED_FEATURE_BYTES`` a graph). Every snapshot's features are dense (the streams' drift and
noise touch every value) and all of them are held. Fitted to seven peaks on the 24 GiB development machine, each
within 13 %: cora-like (2,708 nodes x 500 features, 10,556 entries, 16 snapshots) 2.3-2.4 GB and pubmed-like
(19,717 x 500, 88,644) 8.7-8.9 GB, each worker beside a second; alone, citeseer-like (3,327 x 3,703, 9,104) 6.1 GB,
a Coauthor-CS-sized graph (18,333 x 6,805, 163,788) 23.2 GB over 16 snapshots and 13.8 GB over 8, an Amazon-
Computers-sized one (13,752 x 767, 491,722) 9.7 GB, and arxiv-scale (169,343 x 128, 2.33 M, 6 snapshots) 15-16 GB.
The model before counted nodes only (fitted on the first two) and put the CS-sized worker at 8.4 GB: ``--jobs auto``
started two workers there, which the machine cannot hold."""

WORKER_PEAK_HEADROOM = 1.25
"""``--jobs auto`` counts each worker at this multiple of its modelled peak (the fit's largest miss is 12.4 %): a
worker too few costs time, one too many the whole run."""


def worker_peak_bytes(size: GraphSize, snapshots: int) -> float:
    """A seed's worker process at its peak, in bytes, as ``WORKER_PEAK_BYTES`` models it."""
    from dste.gnn.execution import STORED_FEATURE_BYTES

    fixed, per_node, per_value, per_entry = WORKER_PEAK_BYTES
    values = float(size.nodes) * float(size.features)
    stored = min(12.0 * values, float(STORED_FEATURE_BYTES))
    return fixed + snapshots * (per_node * size.nodes + per_value * values + per_entry * size.entries + stored)


def auto_jobs(size: GraphSize, snapshots: int, seeds: int | None = None) -> int:
    """Workers ``--jobs auto`` runs for ``seeds`` seeds on a graph of ``size`` over ``snapshots`` snapshots: as many
    as the available memory holds at :func:`worker_peak_bytes` each (times ``WORKER_PEAK_HEADROOM``), and of those
    the count :func:`balanced_workers` finishes the seeds soonest with on the usable cores (``default_jobs``);
    one per core where ``seeds`` is not given, one worker where the memory cannot be read."""
    from dste.experiments.env_layers import available_memory_bytes

    available = available_memory_bytes()
    if available is None:
        return 1
    peak = WORKER_PEAK_HEADROOM * worker_peak_bytes(size, snapshots)
    fitting = max(1, int(available // peak))
    if seeds is None:
        return min(default_jobs(), fitting)
    return balanced_workers(seeds, default_jobs(), fitting)


def balanced_workers(seeds: int, cores: int, most: int) -> int:
    """How many single-threaded workers (at most ``most``) finish ``seeds`` seeds of equal work soonest on ``cores``
    cores, the fewest where several tie.

    Seeds go to the workers in rounds of at most one each; a round of ``k`` workers takes ``max(1, k / cores)`` seeds'
    time, the cores shared among them. Three seeds on two cores: two workers take two seeds' time (the third seed
    runs alone on one core while the other idles), three take one and a half. Measured on the default job (2-core AMD
    EPYC, the same results.json but for the timings): 408 and 397 s with two workers, 327 and 355 s with three
    (``bench/README.md``, "`dste run`'s wall time: seeds over the cores")."""
    if min(seeds, cores, most) < 1:
        raise ValueError(f"seeds, cores and most must be >= 1, got {seeds}, {cores}, {most}")

    def makespan(workers: int) -> float:
        full, last = divmod(seeds, workers)
        rounds = [workers] * full + ([last] if last else [])
        return sum(max(1.0, k / cores) for k in rounds)

    candidates = range(1, min(seeds, most) + 1)
    return min(candidates, key=lambda workers: (makespan(workers), workers))


MEMORY_REFUSAL_FACTOR = 1.5
"""A run whose one worker is modelled at more than this multiple of the available memory is refused before it starts
(the model's largest miss is 12.4 %); between 1 and this multiple it starts with a warning."""


WIDTH_FLOOR_BYTES = (16.0, 12.0)
"""Bytes per first-layer weight (float32: the weight, its gradient and Adam's two moments) and per hidden value of
one layer output (float32: the output, its gradient and the input ReLU keeps) that FP32 training holds at once."""


def width_floor_bytes(size: GraphSize, hidden: int) -> float:
    """The least memory FP32 training of a model ``hidden`` wide holds at once on a graph of ``size``: its first
    layer's weights and one hidden layer output (``WIDTH_FLOOR_BYTES``). A floor, not the peak:
    ``WORKER_PEAK_BYTES`` was fitted at the default width, 64, and at larger widths the cached layer outputs grow
    until ``env_layers.run_bytes_budget`` bounds them."""
    per_weight, per_value = WIDTH_FLOOR_BYTES
    return float(hidden) * (per_weight * size.features + per_value * size.nodes)


def memory_check(size: GraphSize, snapshots: int, jobs: int, hidden: int = 64) -> str | None:
    """Before a run starts: None where its ``jobs`` workers fit the available memory at their modelled peak
    (:func:`worker_peak_bytes`), else a warning line; raises ``MemoryError`` where one worker alone is modelled past
    ``MEMORY_REFUSAL_FACTOR`` times the available memory, naming the snapshot count that fits, or where a model
    ``hidden`` wide cannot be trained in it at all (:func:`width_floor_bytes`), naming the widest that can. Without
    it such a run is found out by the kernel's out-of-memory killer, up to an hour in, or by torch's allocator."""
    from dste.experiments.env_layers import available_memory_bytes

    available = available_memory_bytes()
    floor = width_floor_bytes(size, hidden)
    if available is not None and floor > available:
        widest = int(available // width_floor_bytes(size, 1))
        raise MemoryError(f"--hidden {hidden}: FP32 training of a model that wide holds at least {floor / 1e9:,.1f} GB "
                          f"at once on {size.label()} (its first layer's weights, gradients and Adam moments and one "
                          f"hidden layer output), and {available / 1e9:.1f} GB is available; the widest whose floor "
                          f"fits is {widest:,}, and a run needs more than the floor (--hidden 64 is the default)")
    peak = worker_peak_bytes(size, snapshots)
    if available is None or jobs * peak <= available:
        return None
    per_snapshot = worker_peak_bytes(size, snapshots + 1) - peak

    def fitting(workers: int) -> str:  # the snapshots that fit ``workers`` workers side by side
        count = int((available / workers - worker_peak_bytes(size, 0)) // per_snapshot)
        return f"{count}" if count >= MIN_SNAPSHOTS else f"fewer than {MIN_SNAPSHOTS} (the least a run takes)"

    hint = f"--snapshots {fitting(1)} fits"
    if jobs > 1:
        hint += f" one worker (--jobs 1), {fitting(jobs)} fit {jobs}"
    figures = (f"{size.label()}, {snapshots} snapshots: a worker is modelled at {peak / 1e9:.1f} GB at its peak "
               f"({per_snapshot / 1e9:.2f} GB per snapshot, whose features are held dense), and "
               f"{available / 1e9:.1f} GB is available")
    if peak > MEMORY_REFUSAL_FACTOR * available:
        raise MemoryError(f"this machine cannot hold the run: {figures}; {hint}")
    return f"warning: {jobs} worker(s) may not fit: {figures}; {hint}"


def default_jobs() -> int:
    """Worker processes ``--jobs auto`` may use: one per core this process may run on (its CPU affinity, not the
    machine's count, which a container or ``taskset`` may restrict); ``pipeline._run_seeds`` caps it at the seeds."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)  # no affinity call on this platform (macOS, Windows)


def schedule_for(config: RunConfig, size: GraphSize) -> RunConfig:
    """``config`` with its snapshot count and episodes filled in for a graph of ``size``: the ``"large"`` schedule
    above ``LARGE_GRAPH_NODES`` nodes, else ``"default"``; values the run set are kept. ``jobs="auto"`` becomes
    ``auto_jobs(size, snapshots, config.seeds)``."""
    snapshots, episodes = SCHEDULES["large" if size.nodes > LARGE_GRAPH_NODES else "default"]
    if config.snapshots is None:  # the schedule's count, lengthened until a bursty stream holds out a burst
        snapshots = snapshots_with_heldout_burst(stream_params(config.stream), snapshots)
    else:
        snapshots = config.snapshots
    jobs = config.jobs
    if jobs == "auto":
        jobs = auto_jobs(size, snapshots, config.seeds)
    return replace(
        config,
        snapshots=snapshots,
        episodes=episodes if config.episodes is None else config.episodes,
        jobs=jobs,
    )
