"""Standard errors a gain between two plans is judged by: over snapshots and over the snapshots' evaluation nodes.

Each error is checked against ``scipy.stats.sem`` of what it should be the standard error of: the per-node
differences in correctness on one snapshot, the nodes' mean differences over snapshots that share their nodes, the
per-snapshot differences over snapshots.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import sem

from dste.controller import RewardConfig, StaticPolicy
from dste.controller.baselines import PolicyResult, prefer_recent_plan
from dste.controller.env import EpisodeOutcome
from dste.controller.evidence import node_error, snapshot_error

NODES = 500


def _outcome(snapshot, correct, nodes=None, accuracy=None) -> EpisodeOutcome:
    accuracy = float(correct.mean()) if accuracy is None else accuracy
    return EpisodeOutcome(snapshot=snapshot, accuracy=accuracy, latency_us=1.0, nbytes=1, reference_latency_us=1.0,
                          correct=correct, nodes=nodes)


def _flip(correct: np.ndarray, gained: int, lost: int, rng) -> np.ndarray:
    """``correct`` with ``gained`` wrong nodes made right and ``lost`` right nodes made wrong."""
    changed = correct.copy()
    changed[rng.choice(np.flatnonzero(~correct), gained, replace=False)] = True
    changed[rng.choice(np.flatnonzero(correct), lost, replace=False)] = False
    return changed


def _pairs(firsts, seconds, nodes):
    return [(_outcome(s, a, nodes[s]), _outcome(s, b, nodes[s])) for s, (a, b) in enumerate(zip(firsts, seconds))]


def _difference(a, b):
    return a.astype(float) - b.astype(float)


def test_on_one_snapshot_the_node_error_is_the_standard_error_of_the_paired_differences():
    rng = np.random.default_rng(0)
    base = rng.random(NODES) < 0.7
    other = _flip(base, 20, 12, rng)
    ids = np.arange(NODES)
    assert node_error(_pairs([other], [base], [ids])) == pytest.approx(sem(_difference(other, base)), rel=1e-12)
    assert node_error(_pairs([other], [base], [None])) == pytest.approx(sem(_difference(other, base)), rel=1e-12)


def test_snapshots_that_part_on_the_same_nodes_do_not_shrink_the_error():
    """Nine snapshots of the same nodes where the two plans differ on the same nodes every time: the error is one
    snapshot's, as if the nine were one."""
    rng = np.random.default_rng(1)
    base = rng.random(NODES) < 0.7
    other = _flip(base, 20, 17, rng)
    ids = np.arange(NODES)
    error = node_error(_pairs([other] * 9, [base] * 9, [ids] * 9))
    assert error == pytest.approx(sem(_difference(other, base)), rel=1e-12)


def test_snapshots_of_the_same_nodes_give_the_error_of_the_nodes_mean_differences():
    rng = np.random.default_rng(2)
    ids = rng.permutation(3 * NODES)[:NODES]  # any ids, in any order, the same on every snapshot
    bases = [rng.random(NODES) < 0.7 for _ in range(5)]
    others = [_flip(b, 15 + i, 10, rng) for i, b in enumerate(bases)]
    differences = np.array([_difference(o, b) for o, b in zip(others, bases)])  # [snapshots, nodes]
    weights = np.array([1.0, 2.0, 1.0, 4.0, 2.0])
    expected = sem(np.average(differences, axis=0, weights=weights))
    assert node_error(_pairs(others, bases, [ids] * 5), weights) == pytest.approx(expected, rel=1e-12)
    # far below the bound that ignores which nodes the snapshots share: the plans part on different nodes each time
    bound = node_error(_pairs(others, bases, [None] * 5), weights)
    assert bound == pytest.approx(np.average([sem(d) for d in differences], weights=weights), rel=1e-12)
    assert node_error(_pairs(others, bases, [ids] * 5), weights) < 0.6 * bound


def test_snapshots_of_different_nodes_give_the_independent_error():
    rng = np.random.default_rng(3)
    bases = [rng.random(NODES) < 0.7, rng.random(2 * NODES) < 0.6]
    others = [_flip(bases[0], 30, 10, rng), _flip(bases[1], 25, 30, rng)]
    ids = [np.arange(NODES), NODES + np.arange(2 * NODES)]
    independent = np.sqrt(0.25 * sem(_difference(others[0], bases[0])) ** 2
                          + 0.25 * sem(_difference(others[1], bases[1])) ** 2)
    assert node_error(_pairs(others, bases, ids)) == pytest.approx(independent, rel=0.01)


def test_identical_plans_and_missing_correctness_have_no_node_error():
    correct = np.random.default_rng(4).random(NODES) < 0.5
    ids = np.arange(NODES)
    assert node_error(_pairs([correct], [correct.copy()], [ids])) == 0.0
    assert node_error([None, None]) == 0.0
    assert node_error([(_outcome(0, None, accuracy=0.7), _outcome(0, correct))]) == 0.0


def test_outcomes_of_different_snapshots_or_node_sets_are_refused():
    correct = np.ones(10, dtype=bool)
    with pytest.raises(ValueError, match="snapshots 1 and 2"):
        node_error([(_outcome(1, correct), _outcome(2, correct))])
    with pytest.raises(ValueError, match="10 and 9 nodes"):
        node_error([(_outcome(0, correct), _outcome(0, correct[:9]))])
    with pytest.raises(ValueError, match="different evaluation nodes"):
        node_error([(_outcome(0, correct, np.arange(10)), _outcome(0, correct, np.arange(1, 11)))])
    with pytest.raises(ValueError, match="one value per snapshot"):
        node_error([None, None], np.ones(3))


def test_the_snapshot_error_with_equal_weights_is_the_plain_standard_error():
    differences = np.random.default_rng(5).normal(0.01, 0.02, 9)
    assert snapshot_error(differences) == pytest.approx(sem(differences), rel=1e-12)
    assert snapshot_error(differences, np.r_[np.ones(5), np.zeros(4)]) == pytest.approx(sem(differences[:5]), rel=1e-12)
    assert snapshot_error(differences[:1]) == np.inf
    with pytest.raises(ValueError, match="positive sum"):
        snapshot_error(np.ones(3), np.zeros(3))
    with pytest.raises(ValueError, match="differences must be"):
        snapshot_error(np.array([np.nan, 1.0]))


def _policies_on_shared_nodes(gained: int, lost: int, snapshots: int = 9):
    """A recent plan and a plain one scored on ``snapshots`` snapshots that share their 500 evaluation nodes; the
    recent plan gets the same ``gained`` nodes right and ``lost`` wrong on every one of them."""
    rng = np.random.default_rng(6)
    plain_correct = rng.random(NODES) < 0.7
    recent_correct = _flip(plain_correct, gained, lost, rng)
    ids = np.arange(NODES)
    recent, plain = StaticPolicy("greedy", [1, 0]), StaticPolicy("greedy", [0, 0])
    recent.trials = {(1, 0): PolicyResult("t", [_outcome(s, recent_correct, ids) for s in range(snapshots)])}
    plain.trials = {(0, 0): PolicyResult("t", [_outcome(s, plain_correct, ids) for s in range(snapshots)]),
                    **recent.trials}
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


def test_a_negative_snapshot_weight_is_refused():
    # _normalised: "weights must be finite and >= 0 with a positive sum"; a negative weight is refused, not folded
    # into a standard error.
    with pytest.raises(ValueError, match=">= 0"):
        snapshot_error(np.array([0.01, 0.03, 0.02]), weights=np.array([1.0, -0.5, 1.0]))
