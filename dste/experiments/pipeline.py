"""The main job, ``dste run``: train the FP32 model, train the controller, judge every policy on held-out
snapshots, over several seeds, and report the table, a JSON file and a plot.

Per seed s:
  1. a dynamic stream of snapshots over the dataset (edge churn, feature drift), the last quarter held out: the
     same stream for every seed (``stream_seed``, default 0), so that the spread over seeds is the spread of what
     a seed trains; ``stream_seed=None`` (``--stream-seed per-seed``) draws stream s for seed s instead;
  2. the FP32 two-layer model trained on the first snapshot (seed s);
  3. the DQN controller trained on the training snapshots (reward: validation accuracy minus lambda times
     modelled latency, minus a penalty above the per-snapshot budget = what static 50 % sparse INT8 would
     spend; see ``dste.controller.reward``), acting only among the actions that fit that budget
     (``dste.controller.guard``), the checkpoint chosen by its reward on the training snapshots;
  4. the same controller trained accuracy-first: no latency budget, a memory ceiling of uniform INT8's
     footprint, and agreement with the FP32 predictions as its (label-free) accuracy term; its conservative
     fallback is greedy search's plan on that reward (static: there is no budget to fit it to);
  5. every policy -- FP32, uniform INT8, static 50 % sparse INT8, uniform FP16, random, greedy search, a
     greedy plan fitted to each snapshot's budget (greedy search again, on GCN never pruning what saves no modelled
     latency, ``dste.controller.actions.costless_pruning``, with the later training snapshots weighing more,
     ``RECENCY_HALF_LIFE``, since the held-out ones continue the stream, where that plan beats the plain mean's by
     more than a standard error, ``dste.controller.baselines.prefer_recent_plan``; fitted by
     ``dste.controller.projection``, which takes a more valuable plan never measured as it is where it agrees more
     with the FP32 predictions on the snapshot; also the budgeted DQN's conservative fallback) and both DQN
     controllers -- run by the same harness on the held-out snapshots (which continue the stream: each policy first
     passes, unscored, through the last training snapshot):
     test accuracy, modelled latency (trn2), memory footprint (graph, features, weights, activations), and
     measured CPU time of one inference through the DSTE torch ops. ``oracle`` adds the best static policy in
     hindsight (greedy search on the held-out snapshots with their labels) and its budget-feasible variant
     (``dste.controller.baselines.feasible_static_search``: the best static plan within every held-out
     snapshot's budget, the budget the controller's guard enforces), the best plan within every budget chosen on
     half the held-out test nodes and scored on the other half (``dste.controller.crossfit``: how much of the
     hindsight plan's lead is its choice on the labels it is scored with), and per held-out snapshot the best plan
     greedy search finds on it alone and the best plan within its budget (``dste.controller.snapshot_oracle``).
The job runs on one thread (BLAS and torch), so its numbers do not depend on the number of cores, and every encoding
is the same on every CPU (``dste.format.rcm``); torch's and NumPy's float kernels still differ in their last bits
between CPU instruction sets (AVX2, AVX-512), which can move what a seed trains.
Accuracies are reported as mean +/- std over seeds of the per-seed mean over held-out snapshots. Each seed trains
its own FP32 model, so part of that spread is the FP32 model's own; the paired gap to FP32 (per seed, a policy's
accuracy minus that seed's FP32 accuracy; mean +/- std over seeds) is reported beside it as what the policy adds.
"""

from __future__ import annotations

import os
import sys
import platform
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from dste.controller.guard import budget_slack_us
from dste.controller import (
    FP32_ACTION,
    ActionSpace,
    BudgetGuard,
    BudgetProjectedPlan,
    BudgetScheduleEnv,
    int8_multiple_budget,
    microsecond_budget,
    calibrate_margin,
    cross_fitted_static,
    one_layer_trials,
    plan_node_errors,
    plan_values,
    dominates,
    pareto_front,
    snapshot_oracle,
    snapshot_oracles,
    static_sweep,
    DQNConfig,
    DQNPolicy,
    FALLBACK_MARGINS,
    RandomPolicy,
    RewardConfig,
    TrainConfig,
    greedy_search,
    recency_weights,
    run_policy,
    static_baselines,
    train_controller,
)
from dste.controller.actions import costless_pruning
from dste.controller.baselines import feasible_static_search, prefer_recent_plan
from dste.experiments import strict_json
from dste.experiments.memory import freed_memory_kept

__all__ = ["RunConfig", "run", "format_table", "PAPER_ROWS", "POLICY_LABELS"]

POLICY_LABELS = {
    "fp32": "FP32",
    "int8": "INT8",
    "static_sparse50_int8": "static 50% sparse INT8",
    "fp16": "uniform FP16",
    "random": "random policy",
    "greedy": "greedy search",
    "greedy_projected": "greedy plan, fitted",
    "dste_dqn": "DSTE (DQN, latency budget)",
    "dste_dqn_unbudgeted": "DSTE (DQN, accuracy first)",
    "static_hindsight": "best static in hindsight",
    "static_hindsight_feasible": "hindsight static, in budget",
}
ACCURACY_FIRST_MEMORY_BUDGET = 1.0
"""The accuracy-first controller's memory ceiling, as a fraction of uniform INT8's footprint."""
PAPER_ROWS = ("fp32", "int8", "static_sparse50_int8", "dste_dqn", "dste_dqn_unbudgeted")
MODEL_KINDS = ("gcn", "sage")


MIN_SNAPSHOTS = 4
"""The fewest snapshots a run takes: at least one held out and several to train on."""


@dataclass
class RunConfig:
    dataset: str = "cora-like"
    root: str | None = None
    seeds: int = 3
    snapshots: int | None = None  # None: by graph size, see schedule_for
    episodes: int | None = None
    model: str = "gcn"
    hidden: int = 64
    epochs: int = 200
    lambda_latency: float = 0.05
    budget: float | str | None = "static50"
    budget_penalty: float = 5.0
    target: str = "trn2"
    timing_repeats: int = 3
    out: str | None = None
    quick: bool = False
    progress: bool = True
    stream: str = "steady"
    stream_seed: int | None = 0  # None: each seed s draws its own stream s
    model_seed: int | None = None  # None: each seed s trains its own FP32 model s; an int: one model for all
    fallback: bool = True
    probe: bool = True  # the fitted plan's more valuable unmeasured rivals are checked on each snapshot (projection)
    oracle: bool = False
    frontier: bool = True
    jobs: int | str = 1  # "auto": one worker per usable core, as many as the memory holds (auto_jobs)
    fp32_snapshots: str = "first"  # "first": FP32 trained on snapshot 0; "training": on every training snapshot
    # > 0: each seed's FP32 model is distilled from that many teachers (train_fp32_distilled); None: DEFAULT_FP32_TEACHERS
    # where the model trains on the first snapshot, 0 (plain training) with fp32_snapshots="training"
    fp32_teachers: int | None = None
    overwrite: bool = False  # True: an --out directory that holds an earlier run's results.json is written over

    def __post_init__(self) -> None:
        if self.quick:
            self.seeds, self.snapshots = min(self.seeds, 1), min(6 if self.snapshots is None else self.snapshots, 6)
            self.episodes = min(100 if self.episodes is None else self.episodes, 100)
            self.epochs = min(self.epochs, 60)
        for name in ("seeds", "episodes", "hidden", "epochs", "timing_repeats", "jobs"):
            value = getattr(self, name)
            if (name == "episodes" and value is None) or (name == "jobs" and value == "auto"):
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                also = " or 'auto'" if name == "jobs" else ""
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer{also}, got {value!r}")
        if self.snapshots is not None and (not isinstance(self.snapshots, int) or self.snapshots < MIN_SNAPSHOTS):
            raise ValueError(
                f"--snapshots must be an integer >= {MIN_SNAPSHOTS} (at least one held-out and several training "
                f"snapshots), got {self.snapshots!r}"
            )
        if self.model not in MODEL_KINDS:
            raise ValueError(f"--model must be one of {MODEL_KINDS}, got {self.model!r}")
        if self.target not in RUN_TARGETS:
            raise ValueError(f"target must be one of {RUN_TARGETS} (the kernel gathers rows with indirect DMAs, "
                             f"NeuronCore-v3 and newer), got {self.target!r}")
        from dste.data.stream import STREAM_PRESETS

        if not isinstance(self.dataset, str) or not self.dataset.strip():
            raise ValueError(f"--dataset must name a dataset, got {self.dataset!r}")
        from dste.data.csbm import PRESETS

        if self.root is not None and (self.dataset.lower() in PRESETS or self.dataset.startswith(CSBM_PREFIX)):
            # it was ignored, and results.json recorded it as where the graph came from
            raise ValueError(f"--root is read by datasets loaded from files (Planetoid, OGB, .npz); "
                             f"{self.dataset!r} is generated, so leave --root out")
        if self.out is not None and not str(self.out).strip():
            raise ValueError("--out must name a directory (leave it out for ./runs/<timestamp>), got ''")
        if self.fp32_snapshots not in FP32_SNAPSHOTS:
            raise ValueError(f"--fp32-snapshots must be one of {FP32_SNAPSHOTS}, got {self.fp32_snapshots!r}")
        if self.fp32_teachers is None:
            self.fp32_teachers = DEFAULT_FP32_TEACHERS if self.fp32_snapshots == "first" else 0
        if isinstance(self.fp32_teachers, bool) or not isinstance(self.fp32_teachers, int) or self.fp32_teachers < 0:
            raise ValueError(f"--fp32-teachers must be an integer >= 0 (0: no distillation), got {self.fp32_teachers!r}")
        if self.fp32_teachers and self.fp32_snapshots != "first":
            raise ValueError("--fp32-teachers distils a model trained on the first snapshot; it does not combine with "
                             f"--fp32-snapshots {self.fp32_snapshots}")
        if self.stream not in STREAM_PRESETS:
            raise ValueError(f"--stream must be one of {sorted(STREAM_PRESETS)}, got {self.stream!r}")
        for name in ("stream_seed", "model_seed"):  # None: 'per-seed'
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ValueError(f"--{name.replace('_', '-')} must be an integer >= 0 or 'per-seed', got {value!r}")
        if isinstance(self.budget, str):
            if self.budget.strip().lower() == "none":
                self.budget = None
            elif self.budget.lower().endswith("fp32"):
                fraction = fp32_budget_fraction(self.budget)
                # the shortest spelling that reads back as the same float: '{:g}' cut 0.1234567 to 0.123457
                self.budget = f"{np.format_float_positional(fraction, trim='-')}fp32"
            elif self.budget.lower() == "static50":
                self.budget = "static50"  # the job compares it as spelled here
            else:
                try:
                    self.budget = float(self.budget)
                except ValueError:
                    raise ValueError(
                        f"--budget must be 'static50', 'none', '<x>fp32' (a fraction of the FP32 latency, e.g. "
                        f"0.33fp32) or a positive fraction of the uniform-INT8 latency, got {self.budget!r}"
                    ) from None
        numeric_budget = None if isinstance(self.budget, str) else self.budget
        # validates lambda, budget and penalty with clear messages
        RewardConfig(self.lambda_latency, numeric_budget, self.budget_penalty)


FP32_SNAPSHOTS = ("first", "training")
"""What each seed's FP32 model trains on: the stream's first snapshot (the default, every table of the README), or
every training snapshot in turn (``dste.gnn.train_fp32_on_snapshots``; ``bench/fp32_stream_training.py`` measures
both)."""

DEFAULT_FP32_TEACHERS = 4
"""Teachers each seed's FP32 model is distilled from where ``--fp32-teachers`` is not given (0 is plain training, the
published GCN recipe). With 20 labelled nodes per class a plainly trained model lands where its initialisation puts
it, and the controller compressing it inherits that seed-to-seed spread; a model fitted to four others' mean
prediction lands closer to the next seed's (bench/README.md, "the FP32 model distilled from an ensemble")."""


def fp32_budget_fraction(budget: str) -> float:
    """The x of a '<x>fp32' budget (a latency ceiling of x times the FP32 model's modelled latency)."""
    text = str(budget).strip().lower()
    try:
        fraction = float(text[: -len("fp32")])
    except ValueError:
        raise ValueError(f"--budget '{budget}': expected '<x>fp32' with a number x > 0, e.g. 0.33fp32") from None
    if not (np.isfinite(fraction) and fraction > 0):
        raise ValueError(f"--budget '{budget}': the fraction of the FP32 latency must be > 0, got {fraction}")
    return fraction


CSBM_PREFIX = "csbm:"


CSBM_REAL_KNOBS = ("homophily", "locality", "mu", "degree_sigma", "community_shift", "class_concentration")
"""The fields of dste.data.CSBMParams a 'csbm:' spec reads as real numbers; the others (but ``name`` and
``community_size``) are whole numbers."""


def _csbm_spec(spec: str) -> dict:
    """Generator knobs of a 'csbm:key=value,...' dataset (keys of dste.data.CSBMParams; base = cora-like).
    ``community_size=MIN-MAX`` gives the range of community sizes."""
    from dste.data import CSBMParams

    allowed = list(CSBMParams.__dataclass_fields__)
    knobs: dict = {}
    body = spec[len(CSBM_PREFIX):]
    items = [part.strip() for part in body.split(",") if part.strip()]
    if not items:
        raise ValueError(f"--dataset {spec!r}: a 'csbm:' spec names at least one key=value (keys of CSBMParams: "
                         f"{', '.join(allowed)}); for the default graph use 'cora-like'")
    for item in items:
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or key not in allowed:
            raise ValueError(f"--dataset {spec!r}: {item!r} is not key=value with a key of CSBMParams "
                             f"({', '.join(allowed)})")
        if key in knobs:
            raise ValueError(f"--dataset {spec!r}: {key} is given twice")
        if key == "name":
            knobs[key] = value
        elif key == "community_size":
            low, dash, high = value.partition("-")
            if not (dash and low.isdigit() and high.isdigit()):
                raise ValueError(f"--dataset {spec!r}: community_size must be MIN-MAX in whole nodes (e.g. 16-64), "
                                 f"got {value!r}")
            knobs[key] = (int(low), int(high))
        else:
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"--dataset {spec!r}: {key} must be a number, got {value!r}") from None
            if key in CSBM_REAL_KNOBS:
                knobs[key] = number
            elif number.is_integer():
                knobs[key] = int(number)
            else:
                raise ValueError(f"--dataset {spec!r}: {key} must be a whole number, got {value!r}")
    return knobs


RUN_TARGETS = ("trn2",)
"""NeuronCores whose latency ``dste run`` models: those the kernel runs on (trn1 has no indirect DMA)."""

LARGE_GRAPH_NODES = 50_000
"""Graphs above this many nodes get the large-graph schedule of :func:`schedule_for` unless the run names its own."""

RECENCY_HALF_LIFE = 4.0
"""Snapshots over which a training snapshot's weight halves when the fallback's plan is chosen (the last weighs most).
Where features drift the held-out snapshots resemble the latest training ones more than the first; where the stream
is steady the weights cost little (about 9 of 12 snapshots' worth of evidence). See the README's drift section."""

COSTLESS_PRUNING_RULE_MODELS = ("gcn",)
"""Models whose fallback plans leave out pruning the cost model calls costless (``costless_pruning``). Measured with
3 seeds per run (bench/README.md, "the costless-pruning rule by model"): on GCN leaving it out gained on all nine runs
where it decides, and lost on the two Planetoid-file default jobs of the fourth round (9 of 11, +0.96 points summed,
where greedy search then dominated by 0.16 and 0.03); on GraphSAGE it lost on seven of ten (1.11 points summed), and there it let greedy search dominate
the controller. On four GraphSAGE runs of graphs measured afterwards it gained on three and lost 0.02 points summed.
Probed offline, the move's held-out gain on GraphSAGE is the channel re-fit's (``dste.gnn.channel_fit``) on its
neighbour map: without the re-fit the move loses on both models. That the GraphSAGE result holds beyond the fourteen
graphs and streams measured is an assumption. Since 0113ddc a fitted plan that costs what greedy search's plan costs
runs greedy's plan wherever that keeps the budget (``dste.controller.projection``, rule 5), so the rule now decides
only where the budget or another rule makes the two plans' latencies differ."""

SCHEDULES = {"default": (16, 1500), "large": (6, 200)}
"""(snapshots, controller episodes) per schedule. A layer run at ogbn-arxiv's size takes about a second (its
quantizations and SpMM over every node) and each snapshot adds 48 first-layer runs to greedy search and the
static sweep, so the large-graph schedule judges fewer snapshots (four training, two held out) and trains the
controller for fewer episodes; everything else about the method is unchanged."""


@dataclass(frozen=True)
class GraphSize:
    """What a run's memory depends on: nodes, feature width and stored adjacency entries (both directions)."""

    nodes: int
    features: int
    entries: int

    @classmethod
    def of(cls, graph) -> "GraphSize":
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


def auto_jobs(size: GraphSize, snapshots: int) -> int:
    """Workers ``--jobs auto`` runs for a graph of ``size`` over ``snapshots`` snapshots: one per usable core
    (``default_jobs``), as many as the available memory holds at :func:`worker_peak_bytes` each (times
    ``WORKER_PEAK_HEADROOM``); one where the memory cannot be read."""
    from dste.experiments.env_layers import available_memory_bytes

    available = available_memory_bytes()
    if available is None:
        return 1
    peak = WORKER_PEAK_HEADROOM * worker_peak_bytes(size, snapshots)
    return max(1, min(default_jobs(), int(available // peak)))


MEMORY_REFUSAL_FACTOR = 1.5
"""A run whose one worker is modelled at more than this multiple of the available memory is refused before it starts
(the model's largest miss is 12.4 %); between 1 and this multiple it starts with a warning."""


def memory_check(size: GraphSize, snapshots: int, jobs: int) -> str | None:
    """Before a run starts: None where its ``jobs`` workers fit the available memory at their modelled peak
    (:func:`worker_peak_bytes`), else a warning line; raises ``MemoryError`` where one worker alone is modelled past
    ``MEMORY_REFUSAL_FACTOR`` times the available memory, naming the snapshot count that fits. Without it such a run
    is found out by the kernel's out-of-memory killer, up to an hour in."""
    from dste.experiments.env_layers import available_memory_bytes

    available = available_memory_bytes()
    peak = worker_peak_bytes(size, snapshots)
    if available is None or jobs * peak <= available:
        return None
    per_snapshot = worker_peak_bytes(size, snapshots + 1) - peak
    fitting = int((available - worker_peak_bytes(size, 0)) // per_snapshot)
    hint = (f"--snapshots {fitting} fits" if fitting >= MIN_SNAPSHOTS else
            f"fewer than {MIN_SNAPSHOTS} snapshots would fit, the least a run takes")
    figures = (f"{size.label()}, {snapshots} snapshots: a worker is modelled at {peak / 1e9:.1f} GB at its peak "
               f"({per_snapshot / 1e9:.2f} GB per snapshot, whose features are held dense), and "
               f"{available / 1e9:.1f} GB is available")
    if peak > MEMORY_REFUSAL_FACTOR * available:
        raise MemoryError(f"this machine cannot hold the run: {figures}; {hint}")
    return f"warning: {jobs} worker(s) may not fit: {figures}; {hint}" + (", as does --jobs 1" if jobs > 1 else "")


def default_jobs() -> int:
    """Worker processes ``--jobs auto`` may use: one per core this process may run on (its CPU affinity, not the
    machine's count, which a container or ``taskset`` may restrict); ``_run_seeds`` caps it at the seeds."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)  # no affinity call on this platform (macOS, Windows)


def schedule_for(config: RunConfig, size: GraphSize) -> RunConfig:
    """``config`` with its snapshot count and episodes filled in for a graph of ``size``: the ``"large"`` schedule
    above ``LARGE_GRAPH_NODES`` nodes, else ``"default"``; values the run set are kept. ``jobs="auto"`` becomes
    ``auto_jobs(size, snapshots)``."""
    snapshots, episodes = SCHEDULES["large" if size.nodes > LARGE_GRAPH_NODES else "default"]
    snapshots = snapshots if config.snapshots is None else config.snapshots
    jobs = config.jobs
    if jobs == "auto":
        jobs = auto_jobs(size, snapshots)
    return replace(
        config,
        snapshots=snapshots,
        episodes=episodes if config.episodes is None else config.episodes,
        jobs=jobs,
    )


def _load_base(config: RunConfig):
    """The job's graph: loaded or generated, its features scaled by a power of two where their magnitude is outside
    what FP32 training and FP16 storage work with (``dste.experiments.feature_range``; a line on stderr says so)."""
    from dste.data import load_dataset, make_graph
    from dste.experiments.feature_range import FEATURE_MAGNITUDE_RANGE, features_in_range

    if config.dataset.startswith(CSBM_PREFIX):
        knobs = _csbm_spec(config.dataset)
        knobs.setdefault("name", config.dataset)
        graph = make_graph("cora-like", seed=0, **knobs)
    else:
        graph = load_dataset(config.dataset, root=config.root, seed=0)
    splits = {"training": graph.train_mask, "validation": graph.val_mask, "test": graph.test_mask}
    empty = [name for name, mask in splits.items() if not mask.any()]
    if empty:
        raise ValueError(
            f"{graph.name}: no {' and no '.join(empty)} nodes (split {int(graph.train_mask.sum())} / "
            f"{int(graph.val_mask.sum())} / {int(graph.test_mask.sum())}): the job trains on the training nodes, "
            "stops training and fits the controller on the validation nodes and reports accuracy on the test nodes, "
            "so each needs at least one (a gnn-benchmark file, a generated graph and the Planetoid files get a split "
            "drawn; a DSTE bundle carries its own)"
        )
    if graph.num_edges == 0:
        print(f"dste run: {graph.name} has no edges: no node has a neighbour to aggregate, and pruning "
              "edges changes nothing", file=sys.stderr, flush=True)
    scaled, exponent = features_in_range(graph)
    if exponent:
        low, high = FEATURE_MAGNITUDE_RANGE
        largest = float(np.abs(graph.x).max())  # taken only here: ordinary features are not scaled
        print(f"dste run: the node features' largest magnitude is {largest:.4g}, outside [{low:g}, {high:g}]: every "
              f"policy runs on them times 2^{exponent} (FP16 saturates above 65504; FP32 training stalls on tiny "
              "inputs)", file=sys.stderr, flush=True)
    return scaled


def _cpu_times_ms(env, snapshot: int, plans: dict, repeats: int) -> dict:
    """Per plan (name -> per-layer actions), the shortest wall time of one inference through the DSTE torch ops (CPU
    backend) in milliseconds: one untimed call each (its encodings and weights are built and cached), then ``repeats``
    rounds that run every plan once, in reverse order every other round, so a slow spell of the machine falls on all
    plans alike rather than on whichever was timed during it (timed one after another, the same plan measured 21
    and 47 ms in one smoke run on a 20k-node graph)."""
    for actions in plans.values():
        env.forward_ops(snapshot, actions)
    times = {name: [] for name in plans}
    order = list(plans)
    for round_index in range(repeats):
        for name in (order if round_index % 2 == 0 else order[::-1]):
            start = time.perf_counter()
            env.forward_ops(snapshot, plans[name])
            times[name].append(time.perf_counter() - start)
    return {name: float(min(values) * 1e3) for name, values in times.items()}


class _StageClock:
    """Wall seconds of each stage of one seed's job (``stage_seconds`` per seed in ``results.json``); each stage is
    also shown on the progress bar. Calling it ends the running stage and starts the named one."""

    def __init__(self, bar, seed: int):
        self.bar, self.seed = bar, seed
        self.seconds: dict[str, float] = {}
        self._name, self._start = None, time.perf_counter()

    def __call__(self, name: str | None) -> None:
        now = time.perf_counter()
        if self._name is not None:
            self.seconds[self._name] = self.seconds.get(self._name, 0.0) + now - self._start
        self._name, self._start = name, now
        if name is not None:
            self.bar.set_postfix_str(f"seed {self.seed}: {name}")


def _run_seed(config: RunConfig, base, seed: int, bar) -> dict:
    from dste.data import SnapshotStream
    from dste.experiments.env_layers import LayerEvaluator, run_bytes_budget
    from dste.experiments.gnn_env import GNNCompressionEnv
    from dste.gnn import make_model, train_fp32_on_snapshots, train_new_fp32_model

    from dste.data.stream import stream_params

    params = stream_params(config.stream, config.snapshots)
    stream = SnapshotStream(base, params, seed=seed if config.stream_seed is None else config.stream_seed)
    snapshots = list(stream)
    graphs = [snapshot.graph for snapshot in snapshots]
    train_ids = [int(i) for i in stream.train_indices]
    heldout_ids = [int(i) for i in stream.heldout_indices]
    stage = _StageClock(bar, seed)
    stage("FP32 training")
    # With --model-seed every seed compresses the same FP32 model, so the spread over seeds is the controller's.
    model_seed = seed if config.model_seed is None else config.model_seed
    settings = dict(epochs=config.epochs, patience=min(50, config.epochs), progress=show_progress(config))
    if config.fp32_snapshots == "training":
        model = make_model(graphs[0], config.model, hidden=config.hidden, seed=model_seed)
        fp32_fit = train_fp32_on_snapshots(model, [graphs[i] for i in train_ids], seed=model_seed, **settings)
    else:
        model, fp32_fit = train_new_fp32_model(graphs[0], config.model, config.hidden, model_seed,
                                               teachers=config.fp32_teachers, **settings)

    budget_actions = None
    numeric_budget = None if isinstance(config.budget, str) else config.budget
    schedule = None
    if isinstance(config.budget, str) and config.budget.endswith("fp32"):
        fraction = fp32_budget_fraction(config.budget)
        schedule = lambda n: fraction  # noqa: E731
    elif params.budget_cycle or params.budget_slo:
        # The stream sets the budget (the option's is unused) in multiples of uniform INT8's latency: each snapshot's
        # own (budget_cycle) or snapshot 0's for all (budget_slo); set below, once the environment prices INT8.
        schedule = _STREAM_BUDGET
        numeric_budget = None
    if schedule is None and config.budget == "static50":
        # Each snapshot's budget is what static 50 % sparse INT8 would spend on it (modelled, label-free):
        # the controller is asked for more accuracy at no more latency than the static policy it replaces.
        budget_actions = [ActionSpace().nearest(0.5, 0.0)] * len(model.convs)
    # Every seed's job keeps as many layer outputs as its share of the machine's memory allows (only the time
    # depends on it: an evicted run is recomputed bit for bit).
    layers = LayerEvaluator(
        model, graphs, ActionSpace(), config.target, run_bytes_kept=run_bytes_budget(min(config.jobs, config.seeds))
    )
    env = GNNCompressionEnv(
        model, graphs, train_ids, heldout_ids, target=config.target, budget_actions=budget_actions, layers=layers
    )
    if schedule is not None:
        fp32_latency = _fp32_latency_of(env)
        if schedule is _STREAM_BUDGET and params.budget_slo:
            # INT8's latency at the last re-provisioning (snapshot 0 for all when the objective is never refreshed)
            objective = lambda n: params.budget_slo * env.reference_latency(params.slo_anchor(n))  # noqa: E731
            schedule = microsecond_budget(objective, fp32_latency)
        elif schedule is _STREAM_BUDGET:
            cycle = lambda n: snapshots[n].latency_budget  # noqa: E731
            schedule = int8_multiple_budget(cycle, env.reference_latency, fp32_latency)
        env = BudgetScheduleEnv(env, schedule, fp32_latency)
    reward = RewardConfig(config.lambda_latency, numeric_budget, config.budget_penalty)
    stage("controller training")
    train_config = TrainConfig(
        episodes=config.episodes,
        normalizer_episodes=min(32, config.episodes),
        select_every=max(5, config.episodes // 40),
        # Checkpoints are scored on every training snapshot: with the budget guard in place, holding a quarter
        # of them out of the updates cost more in what the agent learns than it gained in selection.
        selection_snapshots=0,
        dqn=DQNConfig(seed=seed, updates_per_step=2),
        reward=reward,
    )
    trained = train_controller(env, train_config, progress=show_progress(config))

    stage("greedy search and its fitted plan")
    greedy = greedy_search(env, reward, train_ids, progress=show_progress(config))
    guard = BudgetGuard(env, reward)
    # The fallback's plan: greedy search again with the later training snapshots weighing more, since the held-out
    # ones continue the stream (RECENCY_HALF_LIFE); it reuses every plan the search above ran.
    recency = recency_weights(len(train_ids), RECENCY_HALF_LIFE)
    # On GCN it leaves out pruning the cost model says saves (next to) nothing on the training snapshots: such an
    # action can only cost accuracy, and the gains it showed there were noise that lost on held-out snapshots. On
    # GraphSAGE that pruning gained on held-out snapshots more often than not (COSTLESS_PRUNING_RULE_MODELS).
    allowed = None
    if config.model in COSTLESS_PRUNING_RULE_MODELS:
        allowed = [~costless_pruning(env.action_space, [env.latency_table(s, layer) for s in train_ids])
                   for layer in range(env.num_layers)]
    recent = greedy_search(env, reward, train_ids, weights=recency, measured=greedy.trials, allowed=allowed)
    # The weights trust fewer snapshots than the plain mean does: their plan is kept only where it beats the
    # plain-mean plan (same rule) by more than a standard error on the training snapshots (prefer_recent_plan).
    plain = greedy_search(env, reward, train_ids, measured=recent.trials, allowed=allowed)
    plan, recency_choice = prefer_recent_plan(recent, plain, reward, recency)
    plan_weights = recency if recency_choice.recent_kept else None
    # That plan fitted to each snapshot's budget (label-free): a baseline, and the DQN's fallback.
    neighbours = one_layer_trials(env, plan.actions, train_ids, measured=plain.trials)  # each run once, shared
    values, samples = plan_values(
        env, reward, plan.actions, train_ids, measured=neighbours, per_snapshot=True, weights=plan_weights
    )
    # The node-level noise of each move's gain: the training snapshots share their validation nodes, so a gain over
    # snapshots can be the luck of those few hundred nodes (dste.controller.evidence).
    node_errors = plan_node_errors(env, plan.actions, train_ids, measured=neighbours)
    # Where that plan costs what greedy search's own does and greedy's keeps the budget, greedy's runs: a departure
    # at the same latency only bets on accuracy, and where it loses the baseline dominates (projection, rule 5).
    projected = BudgetProjectedPlan(
        plan.actions, values, guard, samples=samples, probe=config.probe, node_errors=node_errors,
        baseline_plan=greedy.actions,
    )
    # Whether the check also runs where greedy's plan fits, decided on the labelled training snapshots.
    projected.validate_check(train_ids)
    margin, margin_scores = 0.0, {}
    if config.fallback:
        # Conservative fallback: keep the projected plan's action unless the Q-values separate from it by more
        # than a margin chosen on the training snapshots (see DQNPolicy and calibrate_margin).
        margin, margin_scores = calibrate_margin(env, trained.agent, guard, projected, reward, train_ids)
    dqn_policy = DQNPolicy(
        trained.agent, guard=guard, fallback=projected if config.fallback else None, margin=margin
    )
    policies = static_baselines(env) + [RandomPolicy(len(env.action_space), seed=seed), greedy, projected, dqn_policy]
    if config.oracle:
        stage("best static policy in hindsight")
        # The best static policy in hindsight: greedy search on the held-out snapshots themselves.
        hindsight = greedy_search(env, reward, heldout_ids)
        hindsight.name = "static_hindsight"
        policies.append(hindsight)
        # The same within every held-out snapshot's budget (the guard's), as the controller must stay: the soft
        # penalty lets the plan above overspend by a little and keep its accuracy.
        feasible = feasible_static_search(env, reward, heldout_ids, hindsight)
        if feasible is not None:
            policies.append(feasible)
    results = {}
    # The held-out snapshots continue the stream: each policy first passes (unscored) through the last
    # training snapshot, so an adaptive policy meets the first held-out one with its own previous masks.
    lead_in = train_ids[-1:]
    stage("policies on held-out snapshots")
    judged = tqdm(policies, desc="policies on held-out snapshots", disable=not show_progress(config), leave=False)
    outcomes = {policy.name: run_policy(env, policy, heldout_ids, lead_in=lead_in) for policy in judged}
    fallback_share = dqn_policy.fallback_share
    plans_probed = projected.plans_probed  # the held-out episodes' checks, before any diagnostic below runs more
    baseline_snapshots = sorted(projected.baseline_snapshots & set(heldout_ids))
    unbudgeted, accuracy_first_fallback = None, None
    if budget_actions is not None or schedule is not None:
        # The same controller trained with no latency budget but a memory ceiling (uniform INT8's footprint):
        # the accuracy-first operating point, reported beside the budgeted one. Its accuracy term is
        # agreement with the FP32 model's predictions on every node of the training snapshot (label-free),
        # not the 500-odd validation labels: staying within a fraction of a point of FP32 is below what those
        # labels resolve (one node is 0.2 pt). The ceiling stops it buying that agreement with FP16 bytes
        # that pruning does not pay for.
        stage("accuracy-first controller training")
        accuracy_first_env = env.variant(budget_actions=None, train_accuracy="agreement")
        accuracy_first = replace(
            train_config, reward=replace(reward, memory_budget=ACCURACY_FIRST_MEMORY_BUDGET, memory_penalty=1.0)
        )
        unbudgeted = train_controller(accuracy_first_env, accuracy_first, progress=show_progress(config))
        # Its conservative fallback, as the budgeted controller's: greedy search's plan on the same reward, on GCN
        # without costless pruning (a pruned layer that saves no latency cut agreement for memory on held-out
        # snapshots), kept unless the Q-values separate from it by a margin calibrated on the training snapshots. No
        # budget to fit it to: the plan is static.
        first_plan, first_margin, first_margin_scores = None, 0.0, {}
        if config.fallback:
            stage("accuracy-first fallback")
            first_plan = greedy_search(accuracy_first_env, accuracy_first.reward, train_ids, allowed=allowed).actions
            first_margin, first_margin_scores = calibrate_margin(
                accuracy_first_env, unbudgeted.agent, None, first_plan, accuracy_first.reward, train_ids
            )
        first_policy = DQNPolicy(unbudgeted.agent, "dste_dqn_unbudgeted", fallback=first_plan, margin=first_margin)
        outcomes["dste_dqn_unbudgeted"] = run_policy(
            env.variant(budget_actions=None), first_policy, heldout_ids, lead_in=lead_in
        )
        if first_plan is not None:
            accuracy_first_fallback = {"margin": first_margin, "margin_scores": first_margin_scores,
                                       "plan_actions": list(first_plan),
                                       "share_of_held_out_decisions_taken": first_policy.fallback_share}
        for episode in outcomes["dste_dqn_unbudgeted"].outcomes:
            episode.budget_fraction = env.budget_fraction(episode.snapshot)
    stage("CPU time of each policy")
    cpu_ms = _cpu_times_ms(env, heldout_ids[0], {name: outcome.outcomes[0].actions for name, outcome in outcomes.items()},
                           config.timing_repeats)
    for name, outcome in outcomes.items():
        first = outcome.outcomes[0]
        breakdown = {
            key: float(np.mean([o.bytes_by_kind[key] for o in outcome.outcomes])) for key in first.bytes_by_kind
        }
        results[name] = {
            "accuracy": outcome.accuracy,
            "latency_us": outcome.latency_us,
            "bytes": float(np.mean([o.nbytes for o in outcome.outcomes])),
            "bytes_by_kind": breakdown,
            "reward": outcome.mean_reward(reward),  # judged with the budget of the main reward
            "cpu_ms": cpu_ms[name],
            "actions": [
                ["fp32" if a < 0 else env.action_space[a].label() for a in o.actions] for o in outcome.outcomes
            ],
            "per_snapshot_accuracy": [o.accuracy for o in outcome.outcomes],
            "per_snapshot_latency_us": [o.latency_us for o in outcome.outcomes],
            # the main reward's ceiling on each snapshot (None: no latency budget), as the guard enforces it
            "per_snapshot_budget_us": [guard.budget_us(o.snapshot) for o in outcome.outcomes],
        }
    extras = {}
    stage_start = time.perf_counter()
    if config.frontier and seed == 0:
        stage("static sweep (frontier)")
        # One seed's sweep draws the frontier: 49 static policies on every seed would cost more than the rest
        # of the job, and the static points move little between seeds (the table's std says how much).
        extras["static_sweep"] = static_sweep(env, heldout_ids, reward, lead_in=lead_in)
        extras["static_sweep_seconds"] = time.perf_counter() - stage_start
    if config.oracle:
        extras["feasible_hindsight"] = (
            {"search": None, "note": "no static plan fits every held-out snapshot's budget"} if feasible is None else
            {"search": feasible.search, "actions": list(feasible.actions), "plans_measured": len(feasible.trials),
             "feasible_plans": len(feasible.feasible_trials)}
        )
        if config.fallback:
            # What each candidate margin would have scored on the held-out snapshots (their labels: a diagnostic of
            # the calibration on the training snapshots, never used to choose).
            extras["oracle_margin_scores"] = _heldout_margin_scores(
                env, trained.agent, guard, projected, reward, heldout_ids, lead_in
            )
        stage("cross-fitted static plan")
        # How much of the hindsight plan's lead is its choice on the labels it is scored with (dste.controller.crossfit).
        # It ranges over the plans the within-budget search ran (every plan of a two-layer model); none fits: None.
        cross_fit = None if feasible is None else cross_fitted_static(
            env, reward, heldout_ids, feasible.trials, outcomes["dste_dqn"], seed=seed
        )
        extras["cross_fit"] = None if cross_fit is None else cross_fit.to_dict()
        stage("per-snapshot oracle")
        # Each snapshot's searches reuse the episodes the searches above ran on it.
        train_choices = snapshot_oracle(env, reward, train_ids, measured=plain.trials)
        extras["oracle_train"] = [asdict(c) for c in train_choices]
        budgeted = any(guard.budget_us(n) is not None for n in heldout_ids)
        heldout_trials = (hindsight if feasible is None else feasible).trials
        greedy_choices, fitting_choices = snapshot_oracles(
            env, reward, heldout_ids, within_budget=budgeted, measured=heldout_trials
        )
        extras["oracle_heldout"] = [asdict(c) for c in greedy_choices]
        if budgeted:
            extras["oracle_heldout_within_budget"] = [None if c is None else asdict(c) for c in fitting_choices]
    stage(None)
    return {
        **extras,
        "stage_seconds": stage.seconds,
        "seed": seed,
        "stream": config.stream,
        "stream_seed": stream.seed,
        "model_seed": model_seed,
        "fp32_latency_us": [_fp32_latency_of(env)(n) for n in heldout_ids],
        # the least any plan can spend on each held-out snapshot (latency_table is exact for actions without a
        # partial FP16 share, which the cheapest never has)
        "cheapest_latency_us": [guard.cheapest_us(n) for n in heldout_ids],
        "budget_of_fp32": [env.budget_of_fp32(n) for n in heldout_ids] if schedule is not None else None,
        "fallback": {
            "margin": margin, "margin_scores": margin_scores, "greedy_actions": list(greedy.actions),
            "plan_actions": list(plan.actions), "recency_half_life": RECENCY_HALF_LIFE,
            "recency_plan_actions": list(recent.actions), "plain_plan_actions": list(plain.actions),
            "recency_plan_kept": recency_choice.recent_kept, "recency_gain": recency_choice.gain,
            "recency_gain_standard_error": recency_choice.standard_error,
            "recency_gain_errors": {"snapshots": recency_choice.snapshot_error, "nodes": recency_choice.node_error},
            "costless_pruning_rule": allowed is not None,
            "costless_pruning_left_out": (
                [0] * env.num_layers if allowed is None else [int((~mask).sum()) for mask in allowed]
            ),
            "share_of_held_out_decisions_taken": fallback_share,
            "probe": projected.probe,
            "plans_probed": plans_probed,
            "check_where_greedy_fits": projected.check_where_greedy_fits,
            "check_validation_gains": projected.check_gains.tolist(),
            "greedy_plan_at_same_latency": baseline_snapshots,
        },
        "accuracy_first_fallback": accuracy_first_fallback,
        "reward": reward.to_dict(),
        "train_snapshots": train_ids,
        "heldout_snapshots": heldout_ids,
        "fp32_training": fp32_fit,
        "controller": {
            "best_episode": trained.best_episode,
            "selection_scores": trained.selection_scores,
            "reward_first_20": float(np.mean(trained.episode_rewards[:20])),
            "reward_last_20": float(np.mean(trained.episode_rewards[-20:])),
        },
        "policies": results,
        "agent": trained.agent,
    }


def _heldout_margin_scores(env, agent, guard, fallback, reward, heldout_ids, lead_in) -> dict:
    """Per candidate margin of ``calibrate_margin`` (as its keys), the reward and accuracy the DQN with that margin
    over ``fallback`` scores on the held-out snapshots."""
    scores = {}
    for margin in FALLBACK_MARGINS:
        policy = DQNPolicy(agent, guard=guard, fallback=fallback, margin=margin)
        outcome = run_policy(env, policy, heldout_ids, lead_in=lead_in)
        scores[float(margin)] = {"reward": outcome.mean_reward(reward), "accuracy": outcome.accuracy,
                                 "share_of_decisions_to_fallback": policy.fallback_share}
    return scores


_STREAM_BUDGET = object()
"""Marks a stream's own budget (``StreamParams.budget_cycle`` or ``budget_slo``) until uniform INT8's latency, its
unit, is known."""


def _fp32_latency_of(env):
    """snapshot -> modelled latency (us) of the uncompressed model on it (the FP32 row of the table)."""
    layers = env.layers

    def fp32_latency(n: int) -> float:
        return float(sum(r.latency_us for r in layers.static_reports(int(n), [FP32_ACTION] * layers.num_layers)))

    return fp32_latency


def _summarise(per_seed: list[dict]) -> dict:
    # A policy some seed lacks (the budget-feasible hindsight plan where no static plan fits) is left out: a
    # mean over fewer seeds would not compare with the others.
    names = [name for name in per_seed[0]["policies"] if all(name in seed["policies"] for seed in per_seed)]
    fp32_accuracy = np.array([seed["policies"]["fp32"]["accuracy"] for seed in per_seed])
    summary = {}
    for name in names:
        rows = [seed["policies"][name] for seed in per_seed]
        acc = np.array([r["accuracy"] for r in rows])
        summary[name] = {
            "label": POLICY_LABELS.get(name, name),
            "accuracy_mean": float(acc.mean()),
            "accuracy_std": float(acc.std()),
            "latency_us_mean": float(np.mean([r["latency_us"] for r in rows])),
            "latency_us_std": float(np.std([r["latency_us"] for r in rows])),
            "bytes_mean": float(np.mean([r["bytes"] for r in rows])),
            "bytes_by_kind": {k: float(np.mean([r["bytes_by_kind"][k] for r in rows])) for k in rows[0]["bytes_by_kind"]},
            "reward_mean": float(np.mean([r["reward"] for r in rows])),
            "cpu_ms_mean": float(np.mean([r["cpu_ms"] for r in rows])),
            "share_within_budget": _share_within_budget(rows),
            # paired per seed (each seed trains its own FP32 model): what the policy costs against that model
            "accuracy_minus_fp32_mean": float((acc - fp32_accuracy).mean()),
            "accuracy_minus_fp32_std": float((acc - fp32_accuracy).std()),
        }
    return summary


def _share_within_budget(rows: list[dict]) -> float | None:
    """Share of a policy's held-out snapshots (all seeds) whose modelled latency fits the snapshot's budget
    (within the guard's float tolerance); None when the run has no latency budget."""
    pairs = [(latency, budget) for row in rows
             for latency, budget in zip(row["per_snapshot_latency_us"], row["per_snapshot_budget_us"])]
    if not pairs or any(budget is None for _, budget in pairs):
        return None
    return float(np.mean([latency <= budget + budget_slack_us(budget) for latency, budget in pairs]))


def budget_out_of_reach(per_seed: list[dict]) -> dict | None:
    """Where the latency budget asks for less than any plan can spend: the held-out snapshots (over all seeds) whose
    budget, as the guard enforces it, is below the cheapest plan's modelled latency, with the range of both and the
    cheapest plan's share of FP32's latency. The controller takes the cheapest plan there and its row overspends.
    None where every budget is within reach or the run has none."""
    budgets = [seed["policies"]["dste_dqn"]["per_snapshot_budget_us"] for seed in per_seed]
    cheapest = [seed.get("cheapest_latency_us") for seed in per_seed]
    if any(c is None for c in cheapest):
        return None
    fp32 = [seed["fp32_latency_us"] for seed in per_seed]
    missed = [(b, c, c / f) for bs, cs, fs in zip(budgets, cheapest, fp32) for b, c, f in zip(bs, cs, fs)
              if b is not None and b + budget_slack_us(b) < c]
    if not missed:
        return None
    budget, least, share = (np.array(column) for column in zip(*missed))
    return {
        "snapshots": len(missed), "of": sum(len(bs) for bs in budgets),
        "budget_us": [float(budget.min()), float(budget.max())],
        "cheapest_plan_us": [float(least.min()), float(least.max())],
        "cheapest_plan_share_of_fp32": [float(share.min()), float(share.max())],
    }


def budget_note(reach: dict | None) -> str | None:
    """The line the table opens with where ``budget_out_of_reach`` found snapshots, else None."""
    if reach is None:
        return None

    def span(bounds: list[float]) -> str:
        low, high = (f"{bound:.2f}" for bound in bounds)
        return low if low == high else f"{low}-{high}"

    reachable = np.ceil(reach["cheapest_plan_share_of_fp32"][1] * 100 + 1e-9) / 100
    return (f"LATENCY BUDGET OUT OF REACH on {reach['snapshots']} of {reach['of']} held-out snapshots: a budget of "
            f"{span(reach['budget_us'])} us, the cheapest plan {span(reach['cheapest_plan_us'])} us "
            f"({span(reach['cheapest_plan_share_of_fp32'])} of FP32's modelled latency); the controller takes the "
            f"cheapest plan there and overspends. --budget {reachable:.2f}fp32 or more is within reach there.")


def _acceptance(summary: dict) -> dict:
    dqn, static = summary["dste_dqn"], summary["static_sparse50_int8"]
    baselines = {k: v for k, v in summary.items() if not k.startswith("dste_")}
    best_name = max(baselines, key=lambda k: baselines[k]["reward_mean"])
    dominated_by = [
        k for k, v in baselines.items()
        if dominates((v["latency_us_mean"], v["accuracy_mean"]), (dqn["latency_us_mean"], dqn["accuracy_mean"]))
    ]
    # the controller keeps every budget; a baseline that overspends some snapshot dominates it only on the mean
    within_every_budget = [k for k in dominated_by if baselines[k].get("share_within_budget") in (None, 1.0)]
    fp32 = summary["fp32"]
    checks = {
        "dqn_beats_static50_accuracy": dqn["accuracy_mean"] > static["accuracy_mean"],
        "dqn_latency_not_above_static50": dqn["latency_us_mean"] <= static["latency_us_mean"] + 1e-9,
        "best_baseline_by_reward": best_name,
        "dqn_reward_minus_best_baseline": dqn["reward_mean"] - baselines[best_name]["reward_mean"],
        "baselines_dominating_dqn": dominated_by,
        "baselines_dominating_dqn_within_every_budget": within_every_budget,
        "dqn_accuracy_minus_fp32_pt": 100 * (dqn["accuracy_mean"] - fp32["accuracy_mean"]),
        "memory_ratio_fp32_over_dqn": fp32["bytes_mean"] / max(dqn["bytes_mean"], 1.0),
        "latency_ratio_fp32_over_dqn": fp32["latency_us_mean"] / max(dqn["latency_us_mean"], 1e-12),
        "dqn_reward_minus_greedy": dqn["reward_mean"] - summary["greedy"]["reward_mean"] if "greedy" in summary else None,
        "dqn_accuracy_std_pt": 100 * dqn["accuracy_std"],
        "fp32_accuracy_std_pt": 100 * fp32["accuracy_std"],
        "dqn_minus_fp32_std_pt": 100 * dqn["accuracy_minus_fp32_std"],
        "dqn_share_within_budget": dqn.get("share_within_budget"),
        "greedy_share_within_budget": summary["greedy"].get("share_within_budget") if "greedy" in summary else None,
    }
    if "dste_dqn_unbudgeted" in summary:
        free = summary["dste_dqn_unbudgeted"]
        checks["unbudgeted_dqn_accuracy_minus_fp32_pt"] = 100 * (free["accuracy_mean"] - fp32["accuracy_mean"])
        checks["memory_ratio_fp32_over_unbudgeted_dqn"] = fp32["bytes_mean"] / max(free["bytes_mean"], 1.0)
    return checks


def _oracle_summary(per_seed: list[dict], summary: dict) -> dict | None:
    """With ``--oracle``: the per-snapshot best plans on the held-out snapshots (greedy search's on each snapshot
    alone, which the soft budget penalty lets overspend, and the best within each snapshot's budget), their mean
    reward over snapshots and seeds, and the budgeted DQN's reward minus each. None without the oracle."""
    if not per_seed or not all("oracle_heldout" in seed for seed in per_seed):
        return None
    dqn = summary["dste_dqn"]["reward_mean"]
    best = float(np.mean([np.mean([c["reward"] for c in seed["oracle_heldout"]]) for seed in per_seed]))
    report = {
        "distinct_per_snapshot_best_plans": [len({tuple(c["actions"]) for c in seed["oracle_heldout"]})
                                             for seed in per_seed],
        "per_snapshot_best_reward": best,
        "dqn_reward_minus_per_snapshot_best": dqn - best,
    }
    within = [seed.get("oracle_heldout_within_budget") for seed in per_seed]
    if all(choices is not None for choices in within):
        if any(choice is None for choices in within for choice in choices):
            report["per_snapshot_best_within_budget"] = "no plan fits some held-out snapshot's budget"
        else:
            fitting = float(np.mean([np.mean([c["reward"] for c in choices]) for choices in within]))
            report["per_snapshot_best_within_budget_reward"] = fitting
            report["per_snapshot_best_within_budget_accuracy"] = float(
                np.mean([np.mean([c["accuracy"] for c in choices]) for choices in within])
            )
            report["dqn_reward_minus_per_snapshot_best_within_budget"] = dqn - fitting
    fits = [seed.get("cross_fit") for seed in per_seed]
    if fits and all(fit is not None for fit in fits):
        # the means over seeds of dste.controller.crossfit.CrossFit's figures
        report["cross_fit"] = {
            key: float(np.mean([fit[key] for fit in fits]))
            for key in ("in_sample_reward", "in_sample_accuracy", "controller_reward", "controller_accuracy",
                        "cross_fitted_reward", "cross_fitted_accuracy", "controller_half_reward",
                        "controller_half_accuracy", "share_halves_static_ahead", "in_sample_lead", "cross_fitted_lead")
        }
        report["cross_fit"]["plans"] = [fit["plans"] for fit in fits]
        report["cross_fit"]["distinct_choices"] = [fit["distinct_choices"] for fit in fits]
    return report


def _frontier_summary(per_seed: list[dict], summary: dict) -> dict | None:
    """The static points (FP32 and every uniform action, on the seeds that swept them) against the controllers
    (mean over seeds): which of them
    dominate the budgeted DQN, the Pareto fronts, and where the seed paper's operating point (>= 3x lower
    modelled latency than FP32 within 0.5 accuracy points) is reached, or how close the cheapest point gets."""
    sweeps = [seed["static_sweep"] for seed in per_seed if "static_sweep" in seed]
    if not sweeps:
        return None
    points = []
    for i, row in enumerate(sweeps[0]):
        rows = [sweep[i] for sweep in sweeps]
        points.append({
            "name": row["name"], "kind": "static",
            **{key: float(np.mean([r[key] for r in rows])) for key in ("accuracy", "latency_us", "bytes", "reward")},
        })
    for name in ("greedy", "greedy_projected", "dste_dqn", "dste_dqn_unbudgeted", "static_hindsight",
                 "static_hindsight_feasible"):
        if name in summary:
            s = summary[name]
            points.append({
                "name": name, "kind": "controller" if name.startswith("dste_") else "baseline",
                "accuracy": s["accuracy_mean"], "latency_us": s["latency_us_mean"], "bytes": s["bytes_mean"],
                "reward": s["reward_mean"],
            })
    fp32 = summary["fp32"]
    dqn = summary["dste_dqn"]
    dominating = [
        p["name"] for p in points if p["kind"] != "controller"
        and dominates((p["latency_us"], p["accuracy"]), (dqn["latency_us_mean"], dqn["accuracy_mean"]))
    ]
    dominating_memory = [
        p["name"] for p in points if p["kind"] != "controller"
        and dominates((p["bytes"], p["accuracy"]), (dqn["bytes_mean"], dqn["accuracy_mean"]), cost_tie=0.5)
    ]
    speedup = [fp32["latency_us_mean"] / max(p["latency_us"], 1e-12) for p in points]
    within = [i for i, p in enumerate(points) if 100 * (fp32["accuracy_mean"] - p["accuracy"]) <= 0.5]
    best_within = max(within, key=lambda i: speedup[i]) if within else None
    return {
        "points": points,
        "pareto_latency": [points[i]["name"] for i in pareto_front([(p["latency_us"], p["accuracy"]) for p in points])],
        "pareto_memory": [points[i]["name"]
                          for i in pareto_front([(p["bytes"], p["accuracy"]) for p in points], cost_tie=0.0)],
        "static_points_dominating_dqn_latency": dominating,
        "static_points_dominating_dqn_memory": dominating_memory,
        "max_fp32_speedup_any_point": float(max(speedup)),
        "max_fp32_speedup_within_0.5pt": None if best_within is None else float(speedup[best_within]),
        "point_of_max_speedup_within_0.5pt": None if best_within is None else points[best_within]["name"],
        "reaches_3x_within_0.5pt": bool(best_within is not None and speedup[best_within] >= 3.0),
    }


def _plot_frontier(frontier: dict, path: Path, target: str, title: str) -> None:
    """Accuracy against modelled latency and against memory: every static uniform action (grey), the Pareto front
    of all points (line), greedy search and the controllers (labelled). Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    points = frontier["points"]
    for ax, key, label, front in (
        (axes[0], "latency_us", f"modelled NeuronCore latency per inference (us, {target}; modelled, not measured)",
         "pareto_latency"),
        (axes[1], "bytes", "memory footprint (bytes)", "pareto_memory"),
    ):
        static = [p for p in points if p["kind"] == "static"]
        ax.scatter([p[key] for p in static], [100 * p["accuracy"] for p in static], s=14, color="0.6",
                   label="static uniform actions (and FP32)")
        by_name = {p["name"]: p for p in points}
        line = sorted((by_name[n] for n in frontier[front]), key=lambda p: p[key])
        ax.plot([p[key] for p in line], [100 * p["accuracy"] for p in line], color="0.3", lw=1, label="Pareto front")
        for i, p in enumerate(q for q in points if q["kind"] != "static" or q["name"] == "fp32"):
            ax.scatter(p[key], 100 * p["accuracy"], s=60, marker=PLOT_MARKERS[i % len(PLOT_MARKERS)],
                       facecolors="none", edgecolors=f"C{i % 10}", linewidths=1.6,
                       label=POLICY_LABELS.get(p["name"], p["name"]), zorder=4)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    _save_two_panels(fig, axes, title, path)


SMOKE_RUN_NOTE = (
    "SMOKE RUN (--quick: 1 seed, <= 6 snapshots, <= 100 episodes, <= 60 epochs): these numbers only show that "
    "the job runs; they are not results"
)


def fp32_training_note(teachers: int) -> str:
    """How the run's FP32 models were trained, for a reader comparing the FP32 row with published figures."""
    if teachers:
        return (f"FP32: each seed's model distilled from {teachers} teachers' mean prediction (--fp32-teachers 0: "
                f"plain training, the published GCN recipe)")
    return "FP32: plain training (the published GCN recipe)"


def format_table(summary: dict, target: str, names=None, quick: bool = False, note: str | None = None,
                 fp32_teachers: int | None = None) -> str:
    """The table ``dste run`` prints and writes to ``table.txt``; ``note``: a line it opens with (after the smoke-run
    note), such as ``budget_note``'s; ``fp32_teachers``: the run's, for a closing line on how FP32 was trained."""
    names = names or [n for n in PAPER_ROWS if n in summary] + [n for n in summary if n not in PAPER_ROWS]
    header = (
        f"{'policy':<28} {'accuracy (mean +/- std)':>24} {'memory bytes':>13} {'graph':>9} {'features':>10} "
        f"{'weights':>9} {'activ.':>9} {'latency us (modelled, ' + target + ')':>32} {'CPU ms':>8} {'reward':>8} "
        f"{'vs FP32 pt (paired)':>20}"
    )
    lines = ([SMOKE_RUN_NOTE] if quick else []) + ([note] if note else []) + [header, "-" * len(header)]
    paper_rows = sum(name in PAPER_ROWS for name in names)
    for i, name in enumerate(names):
        if i == paper_rows and len(names) > paper_rows:
            lines.append("  other baselines (same harness):")
        s = summary[name]
        b = s["bytes_by_kind"]
        lines.append(
            f"{s['label']:<28} {100 * s['accuracy_mean']:>15.2f} +/- {100 * s['accuracy_std']:<4.2f} "
            f"{s['bytes_mean']:>13,.0f} {b['graph']:>9,.0f} {b['features']:>10,.0f} {b['weights']:>9,.0f} "
            f"{b['activations']:>9,.0f} {s['latency_us_mean']:>32.2f} {s['cpu_ms_mean']:>8.2f} {s['reward_mean']:>8.4f} "
            f"{_paired_gap(s):>20}"
        )
    lines.append(PAIRED_GAP_NOTE)
    if fp32_teachers is not None:
        lines.append(fp32_training_note(fp32_teachers))
    return "\n".join(lines)


PAIRED_GAP_NOTE = (
    "vs FP32 pt (paired): per seed, the policy's accuracy minus that seed's FP32 accuracy, mean +/- std over seeds "
    "(the accuracy column's std also holds the FP32 models' own seed-to-seed spread)"
)


def _paired_gap(s: dict) -> str:
    if "accuracy_minus_fp32_mean" not in s:
        return "-"
    return f"{100 * s['accuracy_minus_fp32_mean']:+.2f} +/- {100 * s['accuracy_minus_fp32_std']:.2f}"


PLOT_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")


SNAPSHOT_PLOT_POLICIES = ("dste_dqn", "static_hindsight", "greedy", "int8")
"""The policies ``snapshots.png`` follows over the held-out snapshots (those the run has)."""


def _plot_snapshots(seed_result: dict, path: Path, target: str, title: str) -> bool:
    """One seed's held-out snapshots in order: each policy's modelled latency against the snapshot's budget, and
    its accuracy; the controller's plan is written at its latency points, so a change of plan is visible. Skipped
    (False) when the run has no latency budget. Written atomically."""
    policies = seed_result["policies"]
    budgets = policies["dste_dqn"]["per_snapshot_budget_us"]
    if any(budget is None for budget in budgets):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    snapshots = seed_result["heldout_snapshots"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharex=True)
    axes[0].step(snapshots, budgets, where="mid", color="k", lw=1.5, label="latency budget")
    for i, name in enumerate(n for n in SNAPSHOT_PLOT_POLICIES if n in policies):
        # the controller is drawn on top: where a baseline takes the same plan, its line hides the baseline's
        row, style = policies[name], dict(marker=PLOT_MARKERS[i % len(PLOT_MARKERS)], color=f"C{i}", lw=1.2,
                                          zorder=4 if name == "dste_dqn" else 3)
        label = POLICY_LABELS.get(name, name)
        axes[0].plot(snapshots, row["per_snapshot_latency_us"], label=label, **style)
        axes[1].plot(snapshots, [100 * a for a in row["per_snapshot_accuracy"]], label=label, **style)
        if name == "dste_dqn":
            for n, latency, plan in zip(snapshots, row["per_snapshot_latency_us"], row["actions"]):
                axes[0].annotate(" | ".join(plan), (n, latency), textcoords="offset points", xytext=(0, -14),
                                 ha="center", fontsize=7, color=style["color"])
    axes[0].set_ylabel(f"latency per inference (us, {target}; modelled, not measured)")
    axes[1].set_ylabel("held-out test accuracy (%)")
    for ax in axes:
        ax.set_xlabel("held-out snapshot")
        ax.set_xticks(snapshots)
        ax.set_xlim(min(snapshots) - 0.6, max(snapshots) + 0.6)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    _write_figure(fig, f"{title}: seed {seed_result['seed']}, snapshot by snapshot", path)
    return True


def _plot(summary: dict, path: Path, target: str, title: str) -> None:
    """Two panels, accuracy against modelled latency and against memory; every series visible.

    Series that land on the same point (e.g. INT8 and DSTE accuracy-first, greedy search and DSTE budgeted)
    get distinct hollow markers of decreasing size, drawn largest first, and their labels are stacked at
    growing vertical offsets, so none hides another. Written atomically.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    panels = (
        (axes[0], "latency_us_mean", "latency_us_std", f"modelled NeuronCore latency per inference (us, {target}; modelled, not measured)"),
        (axes[1], "bytes_mean", None, "memory footprint (bytes: graph + features + weights + activations)"),
    )
    names = list(summary)
    for ax, x_key, x_err, x_label in panels:
        seen: dict[tuple, int] = {}
        for i, name in enumerate(names):
            s = summary[name]
            x, y = float(s[x_key]), 100 * float(s["accuracy_mean"])
            point = (round(x, 6), round(y, 6))
            stacked = seen.get(point, 0)
            seen[point] = stacked + 1
            ax.errorbar(
                x, y, yerr=100 * s["accuracy_std"], xerr=s[x_err] if x_err else None,
                fmt=PLOT_MARKERS[i % len(PLOT_MARKERS)], markersize=max(14 - 4 * stacked, 4), capsize=3,
                markerfacecolor="none", markeredgewidth=1.6, color=f"C{i % 10}", label=s["label"], zorder=3 + stacked,
            )
            ax.annotate(
                s["label"], (x, y), textcoords="offset points", xytext=(8, 6 + 11 * stacked), fontsize=7,
                color=f"C{i % 10}",
            )
        ax.set_xlabel(x_label)
        ax.grid(alpha=0.3)
    _save_two_panels(fig, axes, title, path)


def show_progress(config: "RunConfig", stream=None) -> bool:
    """Progress bars only when asked for and the output is a terminal (not a log file or a pipe)."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(config.progress and callable(isatty) and isatty())


def default_out_dir() -> Path:
    """A new directory ``runs/<timestamp>`` (``-2``, ``-3``, ... after it where another run started in the same
    second), created here so that two runs never share one and write over each other's outputs."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for attempt in range(1, 10_000):
        path = Path("runs") / (stamp if attempt == 1 else f"{stamp}-{attempt}")
        try:
            path.mkdir(parents=True)
        except FileExistsError:
            continue
        return path
    raise OSError(f"could not create a new output directory runs/{stamp}-N; give one with --out")


@contextmanager
def _single_threaded():
    """BLAS and torch on one thread for the whole job, restored afterwards.

    Multi-threaded BLAS sums in an order that depends on the thread count; the controller's training reacts
    to last-bit differences in the activations it quantizes, so the job's numbers would depend on the machine's
    core count. On one thread they are the same on every machine (and the small products lose little).
    """
    from dste.nkisim.blas import single_threaded

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with single_threaded():
            yield
    finally:
        torch.set_num_threads(threads)


def _run_seed_in_worker(config: RunConfig, base, seed: int) -> dict:
    with _single_threaded(), freed_memory_kept(), tqdm(disable=True) as no_bar:
        return _run_seed(config, base, seed, no_bar)


def _run_seeds(config: RunConfig, base) -> list[dict]:
    """Per seed, ``_run_seed``'s result, in seed order.

    With ``jobs > 1`` the seeds run in that many worker processes (spawned: a fresh interpreter each), each on
    one thread as the sequential job is, so the numbers do not depend on ``jobs``; only the measured CPU times
    do, since the workers share the machine's cores.
    """
    jobs = min(config.jobs, config.seeds)
    with tqdm(total=config.seeds, desc="dste run (seeds)", disable=not show_progress(config)) as bar:
        if jobs == 1:
            results = []
            with _single_threaded():
                for seed in range(config.seeds):
                    results.append(_run_seed(config, base, seed, bar))
                    bar.update()
            return results
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        worker_config = replace(config, progress=False)
        bar.set_postfix_str(f"{jobs} worker processes")
        by_seed = {}
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(_run_seed_in_worker, worker_config, base, seed): seed for seed in range(config.seeds)}
            for future in as_completed(futures):
                by_seed[futures[future]] = future.result()
                bar.update()
        return [by_seed[seed] for seed in range(config.seeds)]


def run(config: RunConfig) -> dict:
    """Run the main job; writes ``results.json``, ``accuracy_vs_latency.png``, ``frontier.png``, ``snapshots.png``
    (with a latency budget), ``table.txt`` and the DQN checkpoint of the first seed to the output directory, and
    returns the JSON-able report."""
    start = time.perf_counter()
    out = Path(config.out) if config.out else default_out_dir()
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is an existing file; give a directory (it is created if missing)")
    if (out / "results.json").exists() and not config.overwrite:
        # checked before any work: an earlier run's outputs (some took a quarter of an hour) were written over
        raise ValueError(f"--out {out} already holds a run's results.json; give a new directory, or --overwrite to "
                         "replace that run's outputs")
    try:
        base = _load_base(config)
        size = GraphSize.of(base)
        config = schedule_for(config, size)
        workers = min(config.jobs, config.seeds)
        warning = memory_check(size, config.snapshots, workers)
    except BaseException:
        if not config.out and not any(out.iterdir()):  # the new runs/<timestamp> of a run refused before any work
            out.rmdir()
        raise
    if warning:
        print(warning, file=sys.stderr, flush=True)
    out.mkdir(parents=True, exist_ok=True)  # after the checks: a refused run leaves no empty directory behind
    with freed_memory_kept():
        per_seed = _run_seeds(config, base)
    checkpoint = per_seed[0].pop("agent").save(out / "controller_seed0.pt")
    for entry in per_seed[1:]:
        entry.pop("agent")
    summary = _summarise(per_seed)
    if config.budget == "none" and "dste_dqn" in summary:
        summary["dste_dqn"]["label"] = "DSTE (DQN, no budget)"  # the reward prices latency; nothing caps it
    report = {
        "config": asdict(config),
        "dataset": {**base.summary(), "feature_scale_exponent": int(base.meta.get("feature_scale_exponent", 0))},
        "latency_label": f"modelled NeuronCore latency ({config.target}), not measured",
        "cpu_time_label": (f"measured CPU wall time per inference through dste.spmm (cpu backend), shortest of "
                           f"{config.timing_repeats} rounds interleaving the policies, "
                           f"{platform.processor() or platform.machine()}"
                           + (f", {workers} worker processes sharing the cores" if workers > 1 else "")),
        "summary": summary,
        "acceptance": _acceptance(summary),
        "frontier": _frontier_summary(per_seed, summary),
        "oracle": _oracle_summary(per_seed, summary),
        "budget_out_of_reach": budget_out_of_reach(per_seed),
        "per_seed": per_seed,
        "controller_checkpoint": str(checkpoint),
        "wall_time_s": None,
    }
    if config.quick:
        report["smoke_run"] = True
        report["smoke_run_note"] = SMOKE_RUN_NOTE
    report["budget_note"] = budget_note(report["budget_out_of_reach"])
    table = format_table(summary, config.target, quick=config.quick, note=report["budget_note"],
                         fp32_teachers=config.fp32_teachers)
    report["wall_time_s"] = time.perf_counter() - start
    from dste.format.io import atomic_write

    atomic_write(out / "table.txt", lambda handle: handle.write(table + "\n"), mode="w")
    text = strict_json.dumps(report, indent=2, default=_json_default)
    atomic_write(out / "results.json", lambda handle: handle.write(text), mode="w")
    title = f"{config.dataset}, stream {config.stream}, {config.model.upper()}, {config.seeds} seed(s)"
    if config.fp32_snapshots == "training":
        title += ", FP32 on every training snapshot"
    if config.fp32_teachers:
        title += f", FP32 distilled from {config.fp32_teachers} teachers"
    _plot(summary, out / "accuracy_vs_latency.png", config.target, title)
    if report["frontier"] is not None:
        _plot_frontier(report["frontier"], out / "frontier.png", config.target, title)
    _plot_snapshots(per_seed[0], out / "snapshots.png", config.target, title)
    report["out_dir"] = str(out)
    return report


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _save_two_panels(fig, axes, title, path):
    """Label, lay out and write (atomically) a figure of two accuracy panels, then free it."""
    axes[0].set_ylabel("held-out test accuracy (%)")
    axes[1].legend(fontsize=7, loc="best")
    _write_figure(fig, title, path)


def _write_figure(fig, title, path):
    """Title, lay out and write (atomically) a figure as PNG, then free it."""
    import matplotlib.pyplot as plt

    from dste.format.io import atomic_write

    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda handle: fig.savefig(handle, dpi=120, format="png"))
    plt.close(fig)
