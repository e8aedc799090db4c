"""Recency-weighted plan choice: ``recency_weights``, and greedy search and plan values on a weighted mean."""

from __future__ import annotations

import numpy as np
import pytest

from dste.controller import RewardConfig, StaticPolicy, greedy_search, plan_values, recency_weights, run_policy

from .toy_env import ToyEnv


def test_recency_weights_halve_every_half_life_and_sum_to_one():
    weights = recency_weights(9, 4.0)
    assert weights.shape == (9,) and weights.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.all(np.diff(weights) > 0)  # the last snapshot weighs most
    assert weights[-1] / weights[-5] == pytest.approx(2.0, rel=1e-12)
    assert weights[-1] / weights[0] == pytest.approx(4.0, rel=1e-12)  # eight snapshots older: two half-lives
    np.testing.assert_allclose(recency_weights(5, float("inf")), np.full(5, 0.2), rtol=0, atol=1e-15)
    assert recency_weights(1, 0.5).tolist() == [1.0]


@pytest.mark.parametrize("count, half_life", [(0, 4.0), (3.0, 4.0), (True, 4.0), (3, 0.0), (3, -1.0), (3, float("nan"))])
def test_recency_weights_refuse_bad_settings(count, half_life):
    with pytest.raises(ValueError, match="count|half_life"):
        recency_weights(count, half_life)


def _snapshots_with_different_best_plans(env, reward):
    """Training snapshots [easiest, hardest] of the toy, whose greedy plans differ."""
    order = np.argsort(env.difficulty[env.snapshots("train")])
    easy, hard = int(order[0]), int(order[-1])
    assert greedy_search(env, reward, [easy]).actions != greedy_search(env, reward, [hard]).actions
    return easy, hard


def test_greedy_search_on_weights_follows_the_snapshot_they_favour():
    env = ToyEnv(n_train=8, n_heldout=1, seed=3)
    reward = RewardConfig(lambda_latency=0.05)
    easy, hard = _snapshots_with_different_best_plans(env, reward)
    for favoured in (easy, hard):
        weights = np.array([1.0 if s == favoured else 0.0 for s in (easy, hard)])
        weighted = greedy_search(env, reward, [easy, hard], weights=weights)
        assert weighted.actions == greedy_search(env, reward, [favoured]).actions


def test_greedy_search_reuses_measured_plans_and_finds_the_same_plan():
    env = ToyEnv(n_train=4, n_heldout=1)
    reward = RewardConfig(lambda_latency=0.05, budget=0.5, budget_penalty=5.0)
    first = greedy_search(env, reward, [0, 1, 2, 3])
    again = greedy_search(env, reward, [0, 1, 2, 3], measured=first.trials)
    assert again.actions == first.actions
    assert all(again.trials[plan] is result for plan, result in first.trials.items())
    # a result handed in is read, not run again: a deliberately wrong one for every plan steers the search
    wrong = {plan: run_policy(env, StaticPolicy("t", [0, 0]), [0, 1, 2, 3]) for plan in first.trials}
    wrong[(0, 0)] = run_policy(env, StaticPolicy("t", [47, 47]), [0, 1, 2, 3])
    assert greedy_search(env, reward, [0, 1, 2, 3], measured=wrong).trials[(0, 0)] is wrong[(0, 0)]


def test_weights_must_match_the_snapshots():
    env = ToyEnv(n_train=3, n_heldout=1)
    reward = RewardConfig(lambda_latency=0.05)
    with pytest.raises(ValueError, match="one value per snapshot"):
        greedy_search(env, reward, [0, 1, 2], weights=np.ones(2))
    result = run_policy(env, StaticPolicy("t", [3, 9]), [0, 1, 2])
    with pytest.raises(ValueError, match="one value per episode"):
        result.mean_reward(reward, np.ones(4))
    for bad in ([1.0, -0.5, 1.0], [0.0, 0.0, 0.0], [1.0, np.nan, 1.0]):
        with pytest.raises(ValueError, match="finite and >= 0 with a positive sum"):
            result.mean_reward(reward, np.array(bad))


def test_plan_values_on_weights_are_the_weighted_mean_of_each_snapshots_reward():
    env = ToyEnv(n_train=5, n_heldout=1)
    reward = RewardConfig(lambda_latency=0.05, budget=0.5, budget_penalty=5.0)
    unbudgeted = RewardConfig(lambda_latency=0.05)
    snapshots, plan = [0, 1, 2, 3, 4], [3, 9]
    weights = recency_weights(len(snapshots), 2.0)
    values = plan_values(env, reward, plan, snapshots, weights=weights)
    for layer, action in [(0, 0), (0, 30), (1, 9), (1, 47)]:
        trial = list(plan)
        trial[layer] = action
        per_snapshot = [
            run_policy(env, StaticPolicy("t", trial), [s]).mean_reward(unbudgeted) for s in snapshots
        ]
        expected = sum(w * r for w, r in zip(weights, per_snapshot))
        assert values[layer, action] == pytest.approx(expected, abs=1e-12)
        assert values[layer, action] != pytest.approx(np.mean(per_snapshot), abs=1e-9)
