"""The cross-fitted best static plan: chosen on half the held-out test nodes, scored on the other half.

Checked on synthetic per-node outcomes whose truth is known: plans that are all equally good in truth (where choosing
on the scored labels alone makes a lead), a plan truly better than the rest (which the cross-fitted choice must still
find), a plan that overspends its budget (never chosen), and the in-sample figures against a plain NumPy argmax.
"""

from __future__ import annotations

import numpy as np
import pytest

from dste.controller import RewardConfig
from dste.controller.baselines import PolicyResult
from dste.controller.crossfit import cross_fitted_static
from dste.controller.env import EpisodeOutcome
from tests.controller.toy_env import ToyEnv

SNAPSHOTS = [16, 17, 18]  # ToyEnv's held-out snapshots (16 training ones before them)
NODES = 600
REFERENCE_US = 4.0  # ToyEnv's reference latency
REWARD = RewardConfig(lambda_latency=0.05, budget=1.0, budget_penalty=5.0)


def _result(name, correct_per_snapshot, latency_us=3.0, nodes=None) -> PolicyResult:
    """``latency_us``: one latency for every snapshot, or one per snapshot."""
    ids = np.arange(NODES) if nodes is None else nodes
    latencies = np.broadcast_to(np.asarray(latency_us, dtype=np.float64), (len(SNAPSHOTS),))
    return PolicyResult(name, [
        EpisodeOutcome(snapshot=s, accuracy=float(c.mean()), latency_us=float(us), nbytes=1,
                       reference_latency_us=REFERENCE_US, correct=c, nodes=ids)
        for s, c, us in zip(SNAPSHOTS, correct_per_snapshot, latencies)
    ])


def _coin_flips(rng, rate=0.7):
    return [rng.random(NODES) < rate for _ in SNAPSHOTS]


def test_equally_good_plans_lead_in_sample_but_not_cross_fitted():
    """Sixty plans and the controller, every one right on each node with probability 0.7: the plan best on all
    labels leads by the luck of those labels; chosen on half and scored on the other, it leads by nothing."""
    rng = np.random.default_rng(0)
    plans = {(k, 0): _result("plan", _coin_flips(rng)) for k in range(60)}
    controller = _result("controller", _coin_flips(rng))
    fit = cross_fitted_static(ToyEnv(), REWARD, SNAPSHOTS, plans, controller, splits=40, seed=1)
    # A plan's accuracy over 1,800 node-snapshots has a standard deviation of sqrt(0.21 / 1800) = 1.1 points and the
    # best of 60 sits about 2.3 of those above the truth, 0.7. Over 60 draws of this test: in-sample 2.4 +/- 0.5
    # points above 0.7, cross-fitted 0.0 +/- 0.6, their leads 2.5 +/- 0.2 points apart; the bounds sit 3-4 standard
    # deviations out.
    assert fit.in_sample_accuracy - 0.7 > 0.01
    assert abs(fit.cross_fitted_accuracy - 0.7) < 0.02
    assert fit.in_sample_lead - fit.cross_fitted_lead > 0.015  # the controller's own luck cancels
    assert fit.distinct_choices > 5  # the choice follows the half's noise
    assert fit.plans == 60


def test_a_truly_better_plan_is_found_on_half_the_labels():
    rng = np.random.default_rng(2)
    plans = {(k, 0): _result("plan", _coin_flips(rng)) for k in range(20)}
    better = _coin_flips(rng, rate=0.8)
    plans[(7, 3)] = _result("better", better)
    controller = _result("controller", _coin_flips(rng))
    fit = cross_fitted_static(ToyEnv(), REWARD, SNAPSHOTS, plans, controller, splits=30, seed=3)
    assert fit.distinct_choices == 1 and fit.in_sample_plan == [7, 3]
    true_lead = np.mean([b.mean() for b in better]) - controller.accuracy  # same latency, same price
    assert fit.cross_fitted_lead == pytest.approx(true_lead, abs=0.01)
    assert fit.share_halves_static_ahead == 1.0


def test_a_plan_over_its_budget_is_never_chosen_and_in_sample_is_the_numpy_argmax():
    rng = np.random.default_rng(4)
    plans = {(k, 1): _result("plan", _coin_flips(rng), latency_us=2.0 + 0.1 * k) for k in range(10)}
    plans[(9, 9)] = _result("over", _coin_flips(rng, rate=0.95), latency_us=REFERENCE_US * 1.01)  # budget 4 us
    controller = _result("controller", _coin_flips(rng))
    fit = cross_fitted_static(ToyEnv(), REWARD, SNAPSHOTS, plans, controller, splits=10)
    assert fit.plans == 10 and fit.in_sample_plan != [9, 9]
    names = sorted(k for k in plans if k != (9, 9))
    rewards = [np.mean([o.accuracy - 0.05 * o.latency_us / REFERENCE_US for o in plans[k].outcomes]) for k in names]
    best = names[int(np.argmax(rewards))]
    assert fit.in_sample_plan == list(best)
    assert fit.in_sample_reward == pytest.approx(max(rewards), abs=1e-12)
    assert fit.in_sample_accuracy == pytest.approx(plans[best].accuracy, abs=1e-12)
    assert fit.controller_reward == pytest.approx(controller.accuracy - 0.05 * 3.0 / REFERENCE_US, abs=1e-12)


def test_no_plan_within_every_budget_gives_none():
    rng = np.random.default_rng(5)
    plans = {(0, 0): _result("over", _coin_flips(rng), latency_us=5.0)}
    assert cross_fitted_static(ToyEnv(), REWARD, SNAPSHOTS, plans, _result("c", _coin_flips(rng))) is None


def test_bad_inputs_say_what_is_wrong():
    rng = np.random.default_rng(6)
    plans = {(0, 0): _result("plan", _coin_flips(rng))}
    controller = _result("controller", _coin_flips(rng))
    env = ToyEnv()
    with pytest.raises(ValueError, match="splits must be >= 1"):
        cross_fitted_static(env, REWARD, SNAPSHOTS, plans, controller, splits=0)
    with pytest.raises(ValueError, match="one outcome per held-out snapshot"):
        cross_fitted_static(env, REWARD, SNAPSHOTS[:2], plans, controller)
    unlabelled = _result("controller", _coin_flips(rng))
    for outcome in unlabelled.outcomes:
        outcome.correct = None
    with pytest.raises(ValueError, match="per-node correctness"):
        cross_fitted_static(env, REWARD, SNAPSHOTS, plans, unlabelled)
    shifted = {(0, 0): _result("plan", _coin_flips(rng), nodes=np.arange(NODES) + 1)}
    with pytest.raises(ValueError, match="other nodes"):
        cross_fitted_static(env, REWARD, SNAPSHOTS, shifted, controller)
    few = np.arange(10)
    tiny = {(0, 0): PolicyResult("plan", [
        EpisodeOutcome(snapshot=s, accuracy=0.5, latency_us=3.0, nbytes=1, reference_latency_us=REFERENCE_US,
                       correct=np.arange(10) % 2 == 0, nodes=few) for s in SNAPSHOTS])}
    with pytest.raises(ValueError, match="at least 20"):
        cross_fitted_static(env, REWARD, SNAPSHOTS, tiny, tiny[(0, 0)])


def _halves_reference(plans, controller, splits, seed):
    """Module docstring re-stated in NumPy: over ``splits`` halvings (``rng.permutation(ids)[:n // 2]``), choose the
    plan on one half and score it AND the controller on the other, both ways round."""
    price = -REWARD.lambda_latency * 3.0 / REFERENCE_US
    rows = [[np.asarray(o.correct, dtype=np.float64) for o in plans[p].outcomes] for p in sorted(plans)]
    rows.append([np.asarray(o.correct, dtype=np.float64) for o in controller.outcomes])
    ids = np.arange(NODES)
    rng = np.random.default_rng(seed)
    chosen, ours = [], []

    def rewards(mask):
        per = np.array([[r[s][mask].sum() / mask.sum() for s in range(len(SNAPSHOTS))] for r in rows])
        return (per + price).mean(axis=1)

    for _ in range(splits):
        first = np.isin(ids, rng.permutation(ids)[: ids.size // 2])
        for choose, score in ((first, ~first), (~first, first)):
            on_choose, on_score = rewards(choose), rewards(score)
            chosen.append(on_score[int(np.argmax(on_choose[:-1]))])
            ours.append(on_score[-1])
    return float(np.mean(np.array(chosen) > np.array(ours))), float(np.mean(ours))


def test_a_controller_identical_to_the_only_plan_is_never_behind_it():
    # share_halves_static_ahead counts the halves where the chosen plan's reward is above the controller's: a tie
    # (the controller ran that very plan) is not "ahead".
    rng = np.random.default_rng(0)
    same = _coin_flips(rng)
    plans = {(0, 0): _result("plan", same)}
    controller = _result("controller", [c.copy() for c in same])
    fit = cross_fitted_static(ToyEnv(), REWARD, SNAPSHOTS, plans, controller, splits=10, seed=1)
    assert fit.share_halves_static_ahead == 0.0


def test_the_share_ahead_compares_plan_and_controller_on_the_same_scored_half():
    # The controller is scored on the half the chosen plan is scored on (not the half that chose it); reference:
    # _halves_reference above.
    rng = np.random.default_rng(5)
    plans = {(k, 0): _result("plan", _coin_flips(rng)) for k in range(8)}
    controller = _result("controller", _coin_flips(rng))
    fit = cross_fitted_static(ToyEnv(), REWARD, SNAPSHOTS, plans, controller, splits=30, seed=2)
    share, controller_half = _halves_reference(plans, controller, 30, 2)
    assert 0.0 < share < 1.0
    assert fit.share_halves_static_ahead == pytest.approx(share, abs=1e-12)
    assert fit.controller_half_reward == pytest.approx(controller_half, abs=1e-9)


def test_a_plan_better_on_the_one_snapshot_whose_budget_it_keeps_is_worth_adapting_to():
    """Twelve plans right with probability 0.7 everywhere, and one right with probability 0.9 that keeps the budget
    (4 us) only on the first held-out snapshot: no static plan may take it, a plan chosen per snapshot does there,
    and the cross-fitted gain of adapting is what that one snapshot adds to the mean, a third of 0.2."""
    rng = np.random.default_rng(7)
    plans = {(k, 0): _result("plan", _coin_flips(rng)) for k in range(12)}
    sharp = [rng.random(NODES) < 0.9] + _coin_flips(rng)[1:]
    plans[(20, 1)] = _result("sharp", sharp, latency_us=[3.0, 4.5, 4.5])
    controller = _result("controller", _coin_flips(rng))
    fit = cross_fitted_static(ToyEnv(), REWARD, SNAPSHOTS, plans, controller, splits=30, seed=4)
    assert fit.plans == 12 and fit.in_sample_plan != [20, 1]
    # Over 8 draws of this test the gain was 0.058-0.085 (0.2 / 3 = 0.067 from the sharp plan's first snapshot, plus
    # the noise of choosing among the equal plans per snapshot on 300 nodes against over 900)
    assert fit.per_snapshot_cross_fitted_accuracy - fit.cross_fitted_accuracy == pytest.approx(0.2 / 3, abs=0.02)
    assert fit.cross_fitted_adaptivity_gain == pytest.approx(0.2 / 3, abs=0.02)  # same 3 us price on that snapshot
    assert fit.to_dict()["cross_fitted_adaptivity_gain"] == fit.cross_fitted_adaptivity_gain


def test_adapting_among_equally_good_plans_gains_in_sample_only():
    """Forty plans right with probability 0.7 on every node: the best plan per snapshot leads in sample (each
    snapshot's own luck); chosen on one half and scored on the other it is worth 0.7, what every plan is."""
    rng = np.random.default_rng(8)
    plans = {(k, 0): _result("plan", _coin_flips(rng)) for k in range(40)}
    fit = cross_fitted_static(ToyEnv(), REWARD, SNAPSHOTS, plans, _result("c", _coin_flips(rng)), splits=30, seed=2)
    # per snapshot the choice ranges over a superset of the static plans: never behind in sample
    assert fit.per_snapshot_in_sample_reward >= fit.in_sample_reward
    # Over 30 draws of this test: in sample 3.8 points above 0.7 (least 3.0), cross-fitted 0.0 +/- 0.7 (at most 2.0
    # off): the bounds sit 1.0 point and 3.7 standard deviations out.
    assert fit.per_snapshot_in_sample_accuracy - 0.7 > 0.02
    assert abs(fit.per_snapshot_cross_fitted_accuracy - 0.7) < 0.025


def test_the_per_snapshot_choice_matches_a_numpy_restatement():
    """Per snapshot, the plan within that snapshot's budget best on one half, scored on the other, over the same
    halvings as the static choice (``rng.permutation(ids)[:n // 2]``); in sample, the per-snapshot argmax."""
    rng = np.random.default_rng(9)
    # the last plan is the most accurate and only just over the first snapshot's 4 us: its reward there, penalty
    # and all, is the best, so only the budget keeps the per-snapshot choice off it
    latencies = [[3.0, 3.0, 3.0], [2.0, 4.5, 3.5], [4.5, 2.5, 3.0], [3.5, 3.5, 4.5], [4.05, 3.0, 3.0]]
    plans = {(k, 0): _result("plan", _coin_flips(rng, rate=0.6 + 0.05 * k), latency_us=us)
             for k, us in enumerate(latencies)}
    plans[(4, 0)] = _result("plan", _coin_flips(rng, rate=0.95), latency_us=latencies[4])
    controller = _result("controller", _coin_flips(rng))
    fit = cross_fitted_static(ToyEnv(), REWARD, SNAPSHOTS, plans, controller, splits=12, seed=6)
    assert fit.plans == 1  # only (0, 0) keeps every budget
    names = sorted(plans)
    correct = np.array([[o.correct for o in plans[p].outcomes] for p in names], dtype=np.float64)  # plan, snap, node
    latency = np.array([[o.latency_us for o in plans[p].outcomes] for p in names])
    price = -REWARD.lambda_latency * latency / REFERENCE_US
    fits = latency <= REFERENCE_US * REWARD.budget + 1e-9
    columns = np.arange(len(SNAPSHOTS))

    def best_per_snapshot(mask):
        rewards = correct[:, :, mask].mean(axis=2) + price
        return np.argmax(np.where(fits, rewards, -np.inf), axis=0)

    every = np.ones(NODES, dtype=bool)
    rows = best_per_snapshot(every)
    in_sample = (correct[:, :, every].mean(axis=2) + price)[rows, columns].mean()
    assert fit.per_snapshot_in_sample_reward == pytest.approx(in_sample, abs=1e-12)
    ids = np.arange(NODES)
    split_rng = np.random.default_rng(6)
    scored = []
    for _ in range(12):
        first = np.isin(ids, split_rng.permutation(ids)[: ids.size // 2])
        for choose, score in ((first, ~first), (~first, first)):
            rows = best_per_snapshot(choose)
            scored.append((correct[:, :, score].mean(axis=2) + price)[rows, columns].mean())
    assert fit.per_snapshot_cross_fitted_reward == pytest.approx(np.mean(scored), abs=1e-9)
