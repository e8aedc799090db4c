"""How much a measured gain between two plans can be trusted: standard errors over snapshots and over nodes.

The controller's fallback (``dste.controller.baselines.prefer_recent_plan``, ``dste.controller.projection``) leaves a
plan that was measured to work only for a gain larger than its noise. Two sources of noise bound what the training
snapshots can show:

* **Between snapshots.** The per-snapshot reward differences of the two plans vary; the standard error of their
  (weighted) mean is the usual one.
* **Between nodes.** Every training snapshot is scored on labelled nodes that are mostly *the same nodes* (the
  validation split of one graph as it changes). A plan that happens to suit those few hundred nodes gains on every
  snapshot alike, so the differences between snapshots are small while the gain says nothing about other nodes: on
  one seed of citeseer-like's steady stream the fallback left its plan for a gain of about half a point, a few
  standard errors over snapshots, and lost 2.2 points on every held-out snapshot. The paired standard error over
  nodes sees it: per snapshot, the nodes' differences in correctness (+1, 0, -1) have a standard error
  ``sqrt(var / n_nodes)``, of the order of ``sqrt(share of nodes the plans disagree on / n_nodes)``.

Where the snapshots share their nodes the node errors of the snapshots do not average down, and where they share
none they do; ``node_error_bound`` takes their weighted mean, which bounds the error of the weighted mean gain
whatever the correlation (the standard deviation of a sum is at most the sum of the standard deviations). The
evidence a gain needs is the larger of the two errors (``gain_error``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from dste.controller.env import EpisodeOutcome

__all__ = ["paired_node_errors", "node_error_bound", "snapshot_error", "gain_error"]


def paired_node_errors(first: Sequence[EpisodeOutcome], second: Sequence[EpisodeOutcome]) -> np.ndarray:
    """float64 [snapshots]: per pair of outcomes (the same snapshot, in the same order), the standard error over the
    snapshot's evaluation nodes of the accuracy difference first - second, paired node by node. 0 for a pair whose
    outcomes carry no per-node correctness (an environment that does not give it): the snapshot error then decides.
    """
    if len(first) != len(second):
        raise ValueError(f"paired_node_errors needs outcomes on the same snapshots; got {len(first)} and {len(second)}")
    errors = np.zeros(len(first))
    for position, (a, b) in enumerate(zip(first, second)):
        if a.snapshot != b.snapshot:
            raise ValueError(f"outcome {position} is on snapshot {a.snapshot} in one result and {b.snapshot} in the "
                             "other: pair outcomes of the same snapshots, in the same order")
        if a.correct is None or b.correct is None:
            continue
        if a.correct.shape != b.correct.shape:
            raise ValueError(f"snapshot {a.snapshot}: per-node correctness of {a.correct.shape[0]} and "
                             f"{b.correct.shape[0]} nodes; an environment must score a snapshot on the same nodes")
        nodes = a.correct.size
        if nodes < 2:
            continue
        difference = a.correct.astype(np.int8) - b.correct.astype(np.int8)
        errors[position] = np.sqrt(difference.var(ddof=1) / nodes)
    return errors


def _normalised(weights: np.ndarray | None, count: int) -> np.ndarray:
    if weights is None:
        return np.full(count, 1.0 / count)
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (count,):
        raise ValueError(f"weights must hold one value per snapshot ({count}), got shape {weights.shape}")
    if not np.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"weights must be finite and >= 0 with a positive sum, got {weights.tolist()}")
    return weights / weights.sum()


def node_error_bound(errors: np.ndarray, weights: np.ndarray | None = None) -> float:
    """The node-level standard error of a (``weights``-) weighted mean over snapshots of per-snapshot gains whose own
    node errors are ``errors``, bounded for any correlation between snapshots: their weighted mean."""
    errors = np.asarray(errors, dtype=np.float64)
    if errors.ndim != 1 or errors.size == 0 or not np.isfinite(errors).all() or (errors < 0).any():
        raise ValueError(f"errors must be a non-empty vector of finite values >= 0, got {errors!r}")
    return float(np.sum(_normalised(weights, errors.size) * errors))


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


def gain_error(differences: np.ndarray, node_errors: np.ndarray, weights: np.ndarray | None = None) -> float:
    """The standard error a gain with per-snapshot ``differences`` and per-snapshot ``node_errors`` is judged by: the
    larger of the snapshot error and the node error bound (module docstring)."""
    return max(snapshot_error(differences, weights), node_error_bound(node_errors, weights))
