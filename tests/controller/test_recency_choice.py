"""``prefer_recent_plan``: the recency-weighted plan only where it beats the plain-mean plan by more than its noise.

With ``lambda_latency = 0`` and no budget a snapshot's reward is its accuracy, so the per-snapshot differences are
set directly; the standard error is checked against ``scipy.stats.sem`` where the weights make it the plain one
(equal weights on some snapshots, none on the rest).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import sem

from dste.controller import RewardConfig, StaticPolicy
from dste.controller.baselines import PolicyResult, RecencyChoice, prefer_recent_plan
from dste.controller.env import EpisodeOutcome

REWARD = RewardConfig(lambda_latency=0.0)
RECENT, PLAIN = (1, 0), (0, 0)


def _measured(accuracies) -> PolicyResult:
    outcomes = [EpisodeOutcome(snapshot=i, accuracy=float(a), latency_us=1.0, nbytes=1, reference_latency_us=1.0)
                for i, a in enumerate(accuracies)]
    return PolicyResult("trial", outcomes)


def _policies(recent_accuracy, plain_accuracy, recent_plan=RECENT, plain_plan=PLAIN):
    recent, plain = StaticPolicy("greedy", list(recent_plan)), StaticPolicy("greedy", list(plain_plan))
    recent.trials = {tuple(recent_plan): _measured(recent_accuracy)}
    plain.trials = {tuple(plain_plan): _measured(plain_accuracy), **recent.trials}
    return recent, plain


def test_equal_weights_give_the_plain_mean_and_its_standard_error():
    rng = np.random.default_rng(0)
    plain_accuracy = rng.uniform(0.6, 0.8, 9)
    differences = rng.normal(0.002, 0.01, 9)
    recent, plain = _policies(plain_accuracy + differences, plain_accuracy)
    chosen, choice = prefer_recent_plan(recent, plain, REWARD, np.full(9, 1 / 9))
    assert choice.gain == pytest.approx(differences.mean(), abs=1e-12)
    assert choice.standard_error == pytest.approx(sem(differences), rel=1e-9)
    assert choice.recent_kept == (differences.mean() > sem(differences))
    assert chosen is (recent if choice.recent_kept else plain)


def test_snapshots_without_weight_leave_the_estimate():
    differences = np.array([0.03, 0.01, 0.02, -0.4, 0.5])
    recent, plain = _policies(0.5 + differences, np.full(5, 0.5))
    _, choice = prefer_recent_plan(recent, plain, REWARD, np.array([1.0, 1.0, 1.0, 0.0, 0.0]))
    assert choice.gain == pytest.approx(0.02, abs=1e-12)
    assert choice.standard_error == pytest.approx(sem(differences[:3]), rel=1e-9)


def test_a_consistent_gain_keeps_the_recent_plan_and_a_noisy_one_does_not():
    weights = np.exp2(np.arange(8) / 4.0)
    steady, _ = prefer_recent_plan(*_policies(np.full(8, 0.71), np.full(8, 0.70)), REWARD, weights)
    assert steady.actions == list(RECENT)
    # the weighted mean still favours the recent plan (the last snapshots), by far less than the spread
    noisy_differences = np.array([-0.05, 0.04, -0.05, 0.04, -0.05, 0.05, -0.04, 0.05])
    assert np.average(noisy_differences, weights=weights) > 0
    chosen, choice = prefer_recent_plan(*_policies(0.7 + noisy_differences, np.full(8, 0.7)), REWARD, weights)
    assert chosen.actions == list(PLAIN) and not choice.recent_kept and choice.gain > 0
    # asked for no margin, any positive weighted gain keeps it
    assert prefer_recent_plan(*_policies(0.7 + noisy_differences, np.full(8, 0.7)), REWARD, weights,
                              min_gain_z=0.0)[0].actions == list(RECENT)


def test_one_plan_is_the_recent_plan():
    recent, plain = _policies(np.full(4, 0.7), np.full(4, 0.7), plain_plan=RECENT)
    chosen, choice = prefer_recent_plan(recent, plain, REWARD, np.ones(4))
    assert chosen is recent and choice == RecencyChoice(True, 0.0, 0.0)


def test_refusals():
    recent, plain = _policies(np.full(4, 0.7), np.full(4, 0.6))
    with pytest.raises(ValueError, match="min_gain_z must be a finite number >= 0"):
        prefer_recent_plan(recent, plain, REWARD, np.ones(4), min_gain_z=-1.0)
    with pytest.raises(ValueError, match="one value per snapshot \\(4\\)"):
        prefer_recent_plan(recent, plain, REWARD, np.ones(3))
    unmeasured = StaticPolicy("greedy", [5, 5])
    unmeasured.trials = {}
    with pytest.raises(ValueError, match=r"plans \[\(5, 5\)\] were not measured"):
        prefer_recent_plan(recent, unmeasured, REWARD, np.ones(4))
    with pytest.raises(ValueError, match="weights must be finite and >= 0 with a positive sum"):
        prefer_recent_plan(recent, plain, REWARD, np.zeros(4))
