"""How much a measured gain between two plans can be trusted: standard errors over snapshots and over nodes.

The controller's fallback (``dste.controller.baselines.prefer_recent_plan``, ``dste.controller.projection``) leaves a
plan that was measured to work only for a gain larger than its noise. Two sources of noise bound what the training
snapshots can show:

* **Between snapshots.** The per-snapshot reward differences of the two plans vary; the standard error of their
  (weighted) mean is the usual one (``snapshot_error``).
* **Between nodes.** Every training snapshot of a stream is scored on the same labelled nodes (the validation split
  of one graph as it changes; new nodes come unlabelled). A plan that happens to suit those few hundred nodes gains
  on every snapshot alike, so the differences between snapshots are small while the gain says nothing about other
  nodes: on one seed of citeseer-like's steady stream the fallback left its plan for a gain of about half a point, a
  few standard errors over snapshots, and lost 2.2 points on every held-out snapshot. ``node_error`` sees it: it
  treats the nodes as the sampled units and each node's differences in correctness (+1, 0, -1) over the snapshots as
  one cluster, the cluster-robust (sandwich) standard error of the weighted mean gain. On snapshots that share their
  nodes it is the standard error of the nodes' mean differences, ``std(mean over snapshots) / sqrt(n_nodes)``, which
  does not shrink with more snapshots where two plans part on the same nodes every time and does where they part on
  different ones; on snapshots with disjoint nodes it is the independent snapshots' error.

Where outcomes do not name their nodes, ``node_error`` bounds the clustered error by the weighted mean of the
per-snapshot paired errors (the norm of a sum is at most the sum of the norms), whatever nodes the snapshots share.
The evidence a gain needs is the larger of the two errors.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from dste.controller.env import EpisodeOutcome

__all__ = ["node_error", "snapshot_error"]

Pair = tuple[EpisodeOutcome, EpisodeOutcome] | None  # two plans' outcomes on one snapshot; None: the same plan


def _normalised(weights: np.ndarray | None, count: int) -> np.ndarray:
    if count == 0:  # no pair, no mean: say so instead of dividing by zero
        raise ValueError("the standard error needs at least one snapshot's pair of outcomes, got none")
    if weights is None:
        return np.full(count, 1.0 / count)
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (count,):
        raise ValueError(f"weights must hold one value per snapshot ({count}), got shape {weights.shape}")
    if not np.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"weights must be finite and >= 0 with a positive sum, got {weights.tolist()}")
    return weights / weights.sum()


def _differences(first: EpisodeOutcome, second: EpisodeOutcome) -> np.ndarray | None:
    """int8 per evaluation node of one snapshot: first's correctness minus second's; None without per-node data."""
    if first.snapshot != second.snapshot:
        raise ValueError(f"outcomes of snapshots {first.snapshot} and {second.snapshot} paired: pair outcomes of the "
                         "same snapshot")
    if first.correct is None or second.correct is None:
        return None
    if first.correct.shape != second.correct.shape:
        raise ValueError(f"snapshot {first.snapshot}: per-node correctness of {first.correct.shape[0]} and "
                         f"{second.correct.shape[0]} nodes; an environment must score a snapshot on the same nodes")
    if first.nodes is not None and second.nodes is not None and not np.array_equal(first.nodes, second.nodes):
        raise ValueError(f"snapshot {first.snapshot}: the two outcomes name different evaluation nodes")
    return first.correct.astype(np.int8) - second.correct.astype(np.int8)


def node_error(pairs: Sequence[Pair], weights: np.ndarray | None = None) -> float:
    """The node-level standard error of the (``weights``-) weighted mean over snapshots of the accuracy difference of
    each pair ``(first, second)`` of outcomes on one snapshot (module docstring). A pair may be None: the two plans
    were the same there (no difference). Clustered by node where every outcome names its nodes (``nodes``); else the
    weighted mean of the per-snapshot errors, which bounds it. 0 where no outcome carries per-node correctness."""
    weights = _normalised(weights, len(pairs))
    measured = []  # (weight, first outcome, its per-node differences) of each snapshot that has some
    for w, pair in zip(weights, pairs):
        difference = None if pair is None else _differences(*pair)
        if difference is not None and difference.size > 0 and w > 0:
            measured.append((w, pair[0], difference))
    if not measured:
        return 0.0
    if all(a.nodes is not None for _, a, _ in measured):
        nodes = np.unique(np.concatenate([a.nodes for _, a, _ in measured]))
        if nodes.size < 2:
            return 0.0
        cluster = np.zeros(nodes.size)
        for w, a, d in measured:
            # each snapshot's differences about its own mean: the snapshot error covers how those means vary
            np.add.at(cluster, np.searchsorted(nodes, a.nodes), w * (d - d.mean()) / d.size)
        return float(np.sqrt(nodes.size / (nodes.size - 1) * np.sum(cluster**2)))
    return float(sum(w * (np.sqrt(d.var(ddof=1) / d.size) if d.size >= 2 else 0.0) for w, _, d in measured))


def snapshot_error(differences: np.ndarray, weights: np.ndarray | None = None) -> float:
    """The standard error of the (``weights``-) weighted mean of per-snapshot ``differences``: the unbiased weighted
    variance ``sum w (d - mean)^2 / (1 - sum w^2)`` times ``sum w^2`` (plain mean: ``std(ddof=1) / sqrt(n)``); inf
    from fewer than two snapshots of weight."""
    differences = np.asarray(differences, dtype=np.float64)
    if differences.ndim != 1 or differences.size == 0 or not np.isfinite(differences).all():
        raise ValueError(f"differences must be a non-empty vector of finite values, got {differences!r}")
    weights = _normalised(weights, differences.size)
    squared = float(np.sum(weights**2))
    if squared >= 1.0 - 1e-12:
        return float("inf")
    mean = float(np.sum(weights * differences))
    variance = float(np.sum(weights * (differences - mean) ** 2)) / (1.0 - squared)
    return float(np.sqrt(variance * squared))
