"""Standard errors a gain between two plans is judged by: over snapshots and over the snapshots' evaluation nodes.

The node error is checked against ``scipy.stats.sem`` of the per-node differences in correctness, the snapshot error
against ``scipy.stats.sem`` of the per-snapshot differences; the bound over snapshots against a simulation of
snapshots that share their nodes.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import sem

from dste.controller import RewardConfig, StaticPolicy
from dste.controller.baselines import PolicyResult, prefer_recent_plan
from dste.controller.env import EpisodeOutcome
from dste.controller.evidence import gain_error, node_error_bound, paired_node_errors, snapshot_error

NODES = 500


def _outcome(snapshot: int, correct: np.ndarray | None, accuracy: float | None = None) -> EpisodeOutcome:
    accuracy = float(correct.mean()) if accuracy is None else accuracy
    return EpisodeOutcome(snapshot=snapshot, accuracy=accuracy, latency_us=1.0, nbytes=1, reference_latency_us=1.0,
                          correct=correct)


def _flip(correct: np.ndarray, gained: int, lost: int, rng) -> np.ndarray:
    """``correct`` with ``gained`` wrong nodes made right and ``lost`` right nodes made wrong."""
    changed = correct.copy()
    changed[rng.choice(np.flatnonzero(~correct), gained, replace=False)] = True
    changed[rng.choice(np.flatnonzero(correct), lost, replace=False)] = False
    return changed


def test_the_node_error_is_the_standard_error_of_the_paired_node_differences():
    rng = np.random.default_rng(0)
    base = [rng.random(NODES) < 0.7 for _ in range(3)]
    other = [_flip(b, 20 + 5 * i, 12, rng) for i, b in enumerate(base)]
    errors = paired_node_errors([_outcome(i, c) for i, c in enumerate(other)],
                                [_outcome(i, c) for i, c in enumerate(base)])
    expected = [sem(o.astype(float) - b.astype(float)) for o, b in zip(other, base)]
    np.testing.assert_allclose(errors, expected, rtol=1e-12)


def test_identical_predictions_and_missing_correctness_have_no_node_error():
    correct = np.random.default_rng(1).random(NODES) < 0.5
    assert paired_node_errors([_outcome(0, correct)], [_outcome(0, correct.copy())]).tolist() == [0.0]
    assert paired_node_errors([_outcome(0, None, 0.7)], [_outcome(0, correct)]).tolist() == [0.0]


def test_outcomes_of_different_snapshots_or_node_sets_are_refused():
    correct = np.ones(10, dtype=bool)
    with pytest.raises(ValueError, match="same snapshots"):
        paired_node_errors([_outcome(0, correct)], [])
    with pytest.raises(ValueError, match="snapshot 1 in one result and 2"):
        paired_node_errors([_outcome(1, correct)], [_outcome(2, correct)])
    with pytest.raises(ValueError, match="10 and 9 nodes"):
        paired_node_errors([_outcome(0, correct)], [_outcome(0, correct[:9])])


def test_the_snapshot_error_with_equal_weights_is_the_plain_standard_error():
    differences = np.random.default_rng(2).normal(0.01, 0.02, 9)
    assert snapshot_error(differences) == pytest.approx(sem(differences), rel=1e-12)
    assert snapshot_error(differences, np.r_[np.ones(5), np.zeros(4)]) == pytest.approx(sem(differences[:5]), rel=1e-12)
    assert snapshot_error(differences[:1]) == np.inf


def test_the_node_bound_holds_for_snapshots_that_share_their_nodes():
    """Nine snapshots scoring the same nodes: the real spread of the mean gain is that of one snapshot's, which the
    bound (the mean of the errors) matches and the independent-snapshot formula (divided by three) would not."""
    rng = np.random.default_rng(3)
    per_node = rng.choice([-1.0, 0.0, 1.0], size=NODES, p=[0.05, 0.9, 0.05])
    node_error = sem(per_node)
    # resample the nodes (the population a validation split is drawn from); every snapshot shares the draw
    draws = np.array([per_node[rng.integers(0, NODES, NODES)].mean() for _ in range(4000)])
    bound = node_error_bound(np.full(9, node_error))
    assert bound == pytest.approx(node_error)
    assert draws.std() == pytest.approx(bound, rel=0.1)
    assert draws.std() > 2 * node_error / 3


def test_bad_errors_and_weights_are_refused():
    with pytest.raises(ValueError, match="errors must be"):
        node_error_bound(np.array([0.1, -0.1]))
    with pytest.raises(ValueError, match="one value per snapshot"):
        node_error_bound(np.ones(3), np.ones(2))
    with pytest.raises(ValueError, match="positive sum"):
        snapshot_error(np.ones(3), np.zeros(3))
    with pytest.raises(ValueError, match="differences must be"):
        gain_error(np.array([np.nan, 1.0]), np.zeros(2))


def _policies_on_shared_nodes(gained: int, lost: int, snapshots: int = 9):
    """A recent plan and a plain one scored on ``snapshots`` snapshots that share their 500 evaluation nodes; the
    recent plan gets the same ``gained`` nodes right and ``lost`` wrong on every one of them."""
    rng = np.random.default_rng(4)
    plain_correct = rng.random(NODES) < 0.7
    recent_correct = _flip(plain_correct, gained, lost, rng)
    recent, plain = StaticPolicy("greedy", [1, 0]), StaticPolicy("greedy", [0, 0])
    recent.trials = {(1, 0): PolicyResult("t", [_outcome(s, recent_correct) for s in range(snapshots)])}
    plain.trials = {(0, 0): PolicyResult("t", [_outcome(s, plain_correct) for s in range(snapshots)]), **recent.trials}
    return recent, plain


def test_a_gain_on_the_same_few_nodes_of_every_snapshot_is_not_evidence():
    """Over snapshots the gain (3 nodes net of 37 that change) has no spread at all; over nodes it is a third of its
    standard error, so the plain plan is kept."""
    recent, plain = _policies_on_shared_nodes(gained=20, lost=17)
    chosen, choice = prefer_recent_plan(recent, plain, RewardConfig(lambda_latency=0.0), np.ones(9))
    assert choice.gain == pytest.approx(3 / NODES)
    assert choice.snapshot_error == pytest.approx(0.0, abs=1e-12)
    assert choice.node_error > choice.gain and choice.standard_error == choice.node_error
    assert chosen is plain and not choice.recent_kept


def test_a_gain_on_many_nodes_is_kept():
    recent, plain = _policies_on_shared_nodes(gained=40, lost=2)
    chosen, choice = prefer_recent_plan(recent, plain, RewardConfig(lambda_latency=0.0), np.ones(9))
    assert choice.gain == pytest.approx(38 / NODES)
    assert choice.gain > 3 * choice.node_error
    assert chosen is recent and choice.recent_kept
