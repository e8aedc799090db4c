"""The budget-projected plan: the most valuable plan that fits each snapshot's budget, and the DQN's fallback."""

import itertools

import numpy as np
import pytest
from scipy.stats import sem

from dste.controller import (
    BudgetGuard,
    BudgetProjectedPlan,
    BudgetScheduleEnv,
    DQNPolicy,
    RewardConfig,
    StaticPolicy,
    plan_node_errors,
    plan_values,
    run_policy,
)
from dste.controller.actions import Action, ActionSpace, compresses_at_least
from dste.controller.baselines import PolicyResult
from dste.controller.env import FP32_ACTION, EpisodeOutcome

from .toy_env import ToyEnv

BUDGET = 0.6  # of the toy's reference latency (4 us): the unpruned plan does not fit


def _brute_force_plan(env, values, budget_us):
    """The most valuable (a0, a1) whose latencies sum within the budget, by enumerating every pair."""
    n = len(env.action_space)
    best, best_value = None, -np.inf
    for a0, a1 in itertools.product(range(n), range(n)):
        if env._latency(0, a0) + env._latency(1, a1) <= budget_us + 1e-12:
            value = values[0, a0] + values[1, a1]
            if value > best_value:
                best, best_value = (a0, a1), value
    return best


@pytest.mark.parametrize("seed", range(5))
def test_projection_picks_the_most_valuable_plan_that_fits(seed):
    env = ToyEnv()
    guard = BudgetGuard(env, RewardConfig(budget=BUDGET))
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(2, len(env.action_space)))
    policy = BudgetProjectedPlan([0, 0], values, guard)
    result = run_policy(env, policy, [0])
    expected = _brute_force_plan(env, values, BUDGET * env.reference_latency(0))
    assert tuple(result.outcomes[0].actions) == expected
    assert result.outcomes[0].latency_us <= BUDGET * env.reference_latency(0) + 1e-9


def test_a_plan_that_fits_and_is_worth_most_is_kept():
    env = ToyEnv()
    space = env.action_space
    plan = [space.nearest(0.75, 0.0), space.nearest(0.25, 0.0)]
    values = np.zeros((2, len(space)))
    values[0, plan[0]] = values[1, plan[1]] = 1.0
    guard = BudgetGuard(env, RewardConfig(budget=BUDGET))
    assert env._latency(0, plan[0]) + env._latency(1, plan[1]) <= BUDGET * env.reference_latency(0)
    assert run_policy(env, BudgetProjectedPlan(plan, values, guard), [0, 1]).outcomes[1].actions == plan


def test_without_a_budget_the_plan_runs_unchanged_and_when_nothing_fits_the_cheapest_action_runs():
    env = ToyEnv()
    values = np.zeros((2, len(env.action_space)))
    free = BudgetProjectedPlan([5, 7], values, BudgetGuard(env, RewardConfig()))
    assert run_policy(env, free, [0]).outcomes[0].actions == [5, 7]
    impossible = BudgetProjectedPlan([5, 7], values, BudgetGuard(env, RewardConfig(budget=0.01)))
    cheapest = [int(np.argmin(env.latency_table(0, layer))) for layer in range(2)]
    assert run_policy(env, impossible, [0]).outcomes[0].actions == cheapest


def test_per_snapshot_budgets_move_the_projection():
    toy = ToyEnv(n_train=4, n_heldout=2)
    fp32_us = sum(toy._latency(layer, FP32_ACTION) for layer in range(2))
    env = BudgetScheduleEnv(toy, lambda n: 0.9 if n % 2 else 0.3, lambda n: fp32_us)
    values = -np.array([[toy.action_space[a].sparsity for a in range(len(toy.action_space))]] * 2)  # pruning costs
    policy = BudgetProjectedPlan([0, 0], values, BudgetGuard(env, RewardConfig()))
    loose, tight = run_policy(env, policy, [1, 2]).outcomes
    assert loose.latency_us > tight.latency_us
    for outcome in (loose, tight):
        budget_us = env.budget_fraction(outcome.snapshot) * env.reference_latency(outcome.snapshot)
        assert outcome.latency_us <= budget_us + 1e-9


def test_plan_values_score_one_changed_layer_without_the_budget_penalty():
    env = ToyEnv(n_train=3, n_heldout=1)
    reward = RewardConfig(lambda_latency=0.05, budget=0.3, budget_penalty=5.0)
    plan = [3, 9]
    values = plan_values(env, reward, plan, [0, 1, 2])
    unpenalized = RewardConfig(lambda_latency=0.05)
    for layer, action in ((0, 17), (1, 40), (0, plan[0])):
        trial = list(plan)
        trial[layer] = action
        expected = run_policy(env, StaticPolicy("t", trial), [0, 1, 2]).mean_reward(unpenalized)
        assert values[layer, action] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    "plan, values, message",
    [([0], np.zeros((2, 48)), "plan"), ([0, 48], np.zeros((2, 48)), "plan"), ([0, 0], np.zeros((2, 5)), "shape"),
     ([0, 0], np.full((2, 48), np.nan), "finite")],
)
def test_bad_plans_and_values_are_refused(plan, values, message):
    with pytest.raises(ValueError, match=message):
        BudgetProjectedPlan(plan, values, BudgetGuard(ToyEnv(), RewardConfig(budget=BUDGET)))


class FixedQ:
    """An agent stand-in with fixed Q-values per layer (state[0] carries the layer)."""

    def __init__(self, q):
        from dste.controller.actions import ActionSpace

        self.q, self.action_space = np.asarray(q, float), ActionSpace()

    def q_values(self, state):
        return self.q[int(state[0])]

    def act(self, state, epsilon=0.0, allowed=None):
        q = self.q_values(state).copy()
        if allowed is not None:
            q[~allowed] = -np.inf
        return int(np.argmax(q))


class ScriptedPolicy(StaticPolicy):
    def choose(self, state, layer):
        return self.actions[layer]


def test_dqn_takes_the_fallback_policy_action_unless_its_q_values_separate():
    q = np.zeros((2, 48))
    q[0, 5], q[0, 7] = 0.010, 0.004
    state = np.zeros(64)
    fallback = ScriptedPolicy("projected", [7, 0])
    assert DQNPolicy(FixedQ(q), fallback=fallback, margin=0.01).choose(state, 0) == 7
    assert DQNPolicy(FixedQ(q), fallback=fallback, margin=0.005).choose(state, 0) == 5
    assert DQNPolicy(FixedQ(q), fallback=[7, 0], margin=float("inf")).choose(state, 0) == 7


def test_plan_values_reuse_greedy_search_trials_and_equal_running_them_again():
    from dste.controller import greedy_search

    env = ToyEnv(n_train=3, n_heldout=1)
    reward = RewardConfig(lambda_latency=0.05, budget=0.5, budget_penalty=5.0)
    greedy = greedy_search(env, reward, [0, 1, 2])
    assert tuple(greedy.actions) in greedy.trials and len(greedy.trials) >= len(env.action_space)
    reused = plan_values(env, reward, greedy.actions, [0, 1, 2], measured=greedy.trials)
    np.testing.assert_array_equal(reused, plan_values(env, reward, greedy.actions, [0, 1, 2]))


def test_plan_values_read_a_measured_result_instead_of_running_the_plan():
    env = ToyEnv(n_train=2, n_heldout=1)
    reward = RewardConfig(lambda_latency=0.05)
    plan = [3, 9]
    trial = (7, 9)
    other = run_policy(env, StaticPolicy("other", [40, 40]), [0, 1])  # deliberately not trial's own result
    values = plan_values(env, reward, plan, [0, 1], measured={trial: other})
    assert values[0, 7] == pytest.approx(other.mean_reward(reward), abs=1e-12)
    assert values[0, 7] != pytest.approx(
        run_policy(env, StaticPolicy("t", list(trial)), [0, 1]).mean_reward(reward), abs=1e-6
    )


def _fitting_plan_and_a_better_one(env):
    """A plan that fits the budget, and a more valuable one, one layer changed, that also fits (per the values)."""
    space = env.action_space
    plan = [space.nearest(0.75, 0.0), space.nearest(0.25, 0.0)]
    better = [plan[0], space.nearest(0.5, 0.0)]
    budget_us = BUDGET * env.reference_latency(0)
    for actions in (plan, better):
        assert env._latency(0, actions[0]) + env._latency(1, actions[1]) <= budget_us
    values = np.full((2, len(space)), -1.0)  # every other change loses
    values[0, plan[0]] = values[1, plan[1]] = 0.0  # both entries are the plan's own value
    values[1, better[1]] = 1.0
    return plan, better, values


def _samples_around(values, gain_per_snapshot):
    """Per-snapshot values whose mean over snapshots is ``values`` and whose better-plan gain per snapshot is
    ``gain_per_snapshot``."""
    gains = np.asarray(gain_per_snapshot, dtype=np.float64)
    samples = np.repeat(values[None], len(gains), axis=0)
    samples[:, values > 0] = gains[:, None]  # the plan's own entries stay 0 on every snapshot
    return samples


@pytest.mark.parametrize("gain_per_snapshot, moves", [
    ([1.0, 0.9, 1.1, 1.0, 0.95, 1.05], True),      # mean 1.0, standard error ~0.03: a clear gain
    ([4.0, -3.0, 3.5, -2.5, 3.0, 1.0], False),     # mean 1.0, standard error ~1.2: noise
    ([-1.0, -1.0, -1.0, -1.0, -1.0, 6.0], False),  # mean 0.17 from one snapshot
])
def test_a_fitting_plan_is_left_only_for_a_gain_the_training_snapshots_agree_on(gain_per_snapshot, moves):
    env = ToyEnv()
    plan, better, values = _fitting_plan_and_a_better_one(env)
    samples = _samples_around(values, gain_per_snapshot)
    np.testing.assert_allclose(samples.mean(axis=0)[values > 0], np.mean(gain_per_snapshot))
    guard = BudgetGuard(env, RewardConfig(budget=BUDGET))
    policy = BudgetProjectedPlan(plan, samples.mean(axis=0), guard, samples=samples)
    actions = run_policy(env, policy, [0]).outcomes[0].actions
    assert actions == (better if moves else plan)
    # without per-snapshot values the most valuable fitting plan is taken, as before
    assert run_policy(env, BudgetProjectedPlan(plan, samples.mean(axis=0), guard), [0]).outcomes[0].actions == better


def test_while_the_plan_is_followed_only_measured_plans_are_chosen():
    """Summed values may favour changing both layers (a plan never measured); the projection keeps to the plans
    one change away from the plan, whose values are measured, and takes the best that fits."""
    env = ToyEnv()
    space = env.action_space
    plan = [space.nearest(0.75, 0.0), space.nearest(0.25, 0.0)]
    both = [space.nearest(0.5, 0.0), space.nearest(0.5, 0.0)]  # each change worth 0.6 alone by the values
    one = [plan[0], space.nearest(0.75, 0.0)]                    # a single change worth 1.0
    budget_us = BUDGET * env.reference_latency(0)
    for actions in (both, one):
        assert env._latency(0, actions[0]) + env._latency(1, actions[1]) <= budget_us
    values = np.full((2, len(space)), -1.0)
    values[0, plan[0]] = values[1, plan[1]] = 0.0
    values[0, both[0]], values[1, both[1]], values[1, one[1]] = 0.6, 0.6, 1.0
    samples = np.repeat(values[None], 5, axis=0)  # no noise: every gain is certain
    guard = BudgetGuard(env, RewardConfig(budget=BUDGET))
    summed = run_policy(env, BudgetProjectedPlan(plan, values, guard), [0]).outcomes[0].actions
    assert summed[0] != plan[0] and summed[1] != plan[1]  # the sum changes both layers (1.2 or 1.6)
    measured = run_policy(env, BudgetProjectedPlan(plan, values, guard, samples=samples), [0]).outcomes[0].actions
    assert measured == one


def test_a_plan_that_does_not_fit_moves_whatever_the_evidence():
    env = ToyEnv()
    values = np.random.default_rng(3).normal(size=(2, len(env.action_space)))
    samples = np.repeat(values[None], 4, axis=0) + np.array([3.0, -3.0, 3.0, -3.0])[:, None, None]
    guard = BudgetGuard(env, RewardConfig(budget=BUDGET))
    gated = run_policy(env, BudgetProjectedPlan([0, 0], values, guard, samples=samples), [0]).outcomes[0]
    budget_us = BUDGET * env.reference_latency(0)
    assert gated.latency_us <= budget_us + 1e-9 and gated.actions != [0, 0]
    # the best plan one change away that fits, by the values (or the summed search where none fits)
    single = [(values[k, a], k, a) for k in range(2) for a in range(len(env.action_space))
              if env._latency(k, a) + env._latency(1 - k, 0) <= budget_us + 1e-12]
    if single:
        _, k, a = max(single)
        expected = [0, 0]
        expected[k] = a
        assert gated.actions == expected
    else:
        assert tuple(gated.actions) == _brute_force_plan(env, values, budget_us)


@pytest.mark.parametrize("samples, message", [
    (np.zeros((4, 2, 5)), "samples must be"), (np.zeros((2, 48)), "samples must be"),
    (np.full((3, 2, 48), np.inf), "samples must be"),
])
def test_bad_samples_are_refused(samples, message):
    with pytest.raises(ValueError, match=message):
        BudgetProjectedPlan([0, 0], np.zeros((2, 48)), BudgetGuard(ToyEnv(), RewardConfig(budget=BUDGET)),
                            samples=samples)


def test_plan_values_per_snapshot_average_to_the_values():
    env = ToyEnv(n_train=3, n_heldout=1)
    reward = RewardConfig(lambda_latency=0.05, budget=0.3, budget_penalty=5.0)
    values, samples = plan_values(env, reward, [3, 9], [0, 1, 2], per_snapshot=True)
    assert samples.shape == (3, 2, 48)
    np.testing.assert_allclose(samples.mean(axis=0), values, rtol=0, atol=1e-12)
    assert np.array_equal(values, plan_values(env, reward, [3, 9], [0, 1, 2]))


class AgreeingToyEnv(ToyEnv):
    """The toy with a label-free agreement score per plan (a lookup; unlisted plans agree 0.5)."""

    def __init__(self, agreements=None, **kwargs):
        super().__init__(**kwargs)
        self.agreements, self.asked = dict(agreements or {}), []

    def agreement(self, snapshot, actions):
        self.asked.append(tuple(actions))
        return self.agreements.get(tuple(actions), 0.5)


def _probe_setting(env):
    """Greedy's plan G (unpruned) does not fit, so the fitted plan F prunes its first layer, the one measured plan
    that fits. Two plans never measured as they are fit too and are worth more by the summed values: R (0.02) and
    Q (0.01); T is worth as much as R but over the budget. Every other plan is worth far less."""
    space = env.action_space
    G = (space.nearest(0.0, 0.0), space.nearest(0.0, 0.0))
    F = (space.nearest(0.75, 0.0), G[1])
    light = space.nearest(0.25, 0.0)
    R = (F[0], light)
    Q = (space.nearest(0.75, 0.0, channel_sparsity=0.25), light)
    T = (G[0], light)
    values = np.full((2, len(space)), -1.0)
    values[0, G[0]] = values[1, G[1]] = values[0, F[0]] = 0.0
    values[1, light], values[0, Q[0]] = 0.02, -0.01
    samples = np.repeat(values[None], 4, axis=0)  # measured on four training snapshots
    budget_us = BUDGET * env.reference_latency(0)
    for plan, fits in ((G, False), (F, True), (R, True), (Q, True), (T, False)):
        assert (env._latency(0, plan[0]) + env._latency(1, plan[1]) <= budget_us) == fits
    return values, samples, G, F, R, Q, T


def _projected(env, **kwargs):
    values, samples, G, *_ = _probe_setting(env)
    return BudgetProjectedPlan(list(G), values, BudgetGuard(env, RewardConfig(budget=BUDGET)), samples=samples,
                               **kwargs)


def test_a_more_valuable_plan_never_measured_replaces_the_fitted_one_where_the_snapshot_confirms_it():
    env = AgreeingToyEnv()
    _, _, G, F, R, Q, T = _probe_setting(env)
    assert tuple(run_policy(env, _projected(env), [16]).outcomes[0].actions) == F  # no check: the fitted plan
    # R is the more valuable but agrees on only 0.5 % more of the nodes than F: within the noise; Q on 5 % more
    env.agreements = {F: 0.80, R: 0.805, Q: 0.85, T: 0.99}
    policy = _projected(env, probe=True)
    assert tuple(run_policy(env, policy, [16]).outcomes[0].actions) == Q
    assert env.asked == [F, R, Q] and policy.plans_probed == 3  # most valuable first; T, over the budget, never run
    run_policy(env, policy, [16])
    assert policy.plans_probed == 3 and len(env.asked) == 3  # each snapshot's agreements are kept
    env.agreements[R], env.asked = 0.82, []
    assert tuple(run_policy(env, _projected(env, probe=True), [16]).outcomes[0].actions) == R
    assert env.asked == [F, R]  # the most valuable confirmed plan ends the check
    env.agreements = {F: 0.80, R: 0.80, Q: 0.79}
    assert tuple(run_policy(env, _projected(env, probe=True), [16]).outcomes[0].actions) == F


def test_the_check_runs_at_most_probe_plans_rivals():
    env = AgreeingToyEnv()
    _, _, G, F, R, Q, T = _probe_setting(env)
    env.agreements = {F: 0.80, R: 0.80, Q: 0.85}
    assert tuple(run_policy(env, _projected(env, probe=True, probe_plans=1), [16]).outcomes[0].actions) == F
    assert env.asked == [F, R]


def test_without_agreement_the_probe_changes_nothing():
    env = ToyEnv()
    probed = run_policy(env, _projected(env, probe=True), [0, 1, 16])
    plain = run_policy(env, _projected(env), [0, 1, 16])
    assert [o.actions for o in probed.outcomes] == [o.actions for o in plain.outcomes]


@pytest.mark.parametrize("kwargs, message", [
    (dict(probe=1), "probe"), (dict(probe=None), "probe"),
    (dict(probe=True, probe_plans=0), "probe_plans"), (dict(probe_plans=2.5), "probe_plans"),
])
def test_bad_probe_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BudgetProjectedPlan([0, 0], np.zeros((2, 48)), BudgetGuard(ToyEnv(), RewardConfig(budget=BUDGET)), **kwargs)


def test_the_check_leaves_plans_one_layer_away_to_the_measured_rules():
    # a plan one layer from greedy's was measured, and its gain was within the training snapshots' noise: agreeing
    # more with FP32 on the snapshot (as pruning less does, accurate or not) does not overrule that
    env = AgreeingToyEnv()
    plan, better, values = _fitting_plan_and_a_better_one(env)
    samples = _samples_around(values, [4.0, -3.0, 3.5, -2.5, 3.0, 1.0])
    env.agreements = {tuple(plan): 0.80, tuple(better): 0.90}
    guard = BudgetGuard(env, RewardConfig(budget=BUDGET))
    policy = BudgetProjectedPlan(plan, samples.mean(axis=0), guard, samples=samples, probe=True)
    assert run_policy(env, policy, [16]).outcomes[0].actions == plan
    assert tuple(better) not in env.asked


def test_where_greedys_plan_fits_the_check_does_not_run():
    # greedy's plan was measured as a whole and fits this snapshot: agreeing more with FP32 (as plans that keep
    # more of what it computes do, accurate or not) does not overrule it, however valuable the sum says a plan
    # two layers away is
    env = AgreeingToyEnv()
    space = env.action_space
    plan = [space.nearest(0.75, 0.0), space.nearest(0.25, 0.0)]
    both = (space.nearest(0.5, 0.0), space.nearest(0.5, 0.0))
    budget_us = BUDGET * env.reference_latency(0)
    for actions in (plan, both):
        assert env._latency(0, actions[0]) + env._latency(1, actions[1]) <= budget_us
    values = np.full((2, len(space)), -1.0)
    values[0, plan[0]] = values[1, plan[1]] = 0.0
    values[0, both[0]] = values[1, both[1]] = 0.6
    samples = np.repeat(values[None], 4, axis=0)
    guard = BudgetGuard(env, RewardConfig(budget=BUDGET))
    fitted = run_policy(env, BudgetProjectedPlan(plan, values, guard, samples=samples), [16]).outcomes[0].actions
    env.agreements = {tuple(fitted): 0.60, both: 0.99}
    policy = BudgetProjectedPlan(plan, values, guard, samples=samples, probe=True)
    assert run_policy(env, policy, [16]).outcomes[0].actions == fitted
    assert env.asked == [] and policy.plans_probed == 0


@pytest.mark.parametrize("noise, expected", [(0.05, "Q"), (0.0, "F")])
def test_a_plan_the_training_snapshots_cannot_tell_from_the_fitted_one_is_checked_too(noise, expected):
    # Q's summed value falls 0.005 under the fitted plan's: where that gap is within a standard error over the
    # training snapshots (noise), Q is run after the more valuable R and, agreeing more, taken; where the
    # snapshots agree Q is worth less (no noise), it is never run
    env = AgreeingToyEnv()
    values, samples, G, F, R, Q, T = _probe_setting(env)
    values[0, Q[0]] = -0.025
    samples = np.repeat(values[None], 4, axis=0)
    samples[:, 0, Q[0]] += noise * np.array([1.0, -1.0, 1.0, -1.0])
    env.agreements = {F: 0.80, R: 0.80, Q: 0.90}
    policy = BudgetProjectedPlan(list(G), values, BudgetGuard(env, RewardConfig(budget=BUDGET)), samples=samples,
                                 probe=True)
    actions = tuple(run_policy(env, policy, [16]).outcomes[0].actions)
    assert actions == {"Q": Q, "F": F}[expected]
    assert env.asked == ([F, R, Q] if expected == "Q" else [F, R])


def _validation_setting(env):
    """Greedy's plan P fits; two plans two layers away fit too and are rated above it by the summed values: A, more
    rewarding than P on most training snapshots of the toy, and B, less. Each one-layer change's gain is within the
    training snapshots' noise, so the fitted plan stays P."""
    space = env.action_space
    P = [space.nearest(0.75, 0.0), space.nearest(0.25, 0.0)]
    A = (space.nearest(0.5, 0.0), space.nearest(0.75, 0.0))
    B = (space.nearest(0.75, 0.05), space.nearest(0.75, 0.05))
    budget_us = BUDGET * env.reference_latency(0)
    for actions in (P, A, B):
        assert env._latency(0, actions[0]) + env._latency(1, actions[1]) <= budget_us
    training = env.snapshots("train")
    values = np.full((2, len(space)), -1.0)
    values[0, P[0]] = values[1, P[1]] = 0.0
    for plan in (A, B):
        values[0, plan[0]] = values[1, plan[1]] = 0.3
    samples = np.repeat(values[None], len(training), axis=0)
    noise = 2.0 * np.where(np.arange(len(training)) % 2 == 0, 1.0, -1.0)
    samples[:, values > 0] += noise[:, None]
    return P, A, B, samples, training


def _toy_gains(env, plan, other, snapshots):
    unbudgeted = RewardConfig(budget=None)
    return (run_policy(env, StaticPolicy("a", list(other)), snapshots).rewards(unbudgeted)
            - run_policy(env, StaticPolicy("p", list(plan)), snapshots).rewards(unbudgeted))


@pytest.mark.parametrize("agreeing, runs_where_greedy_fits", [("A", True), ("B", False)])
def test_the_check_runs_where_greedys_plan_fits_only_where_it_gained_on_the_training_snapshots(
    agreeing, runs_where_greedy_fits
):
    # agreement with FP32 points to A (more rewarding on the training snapshots, by the toy's own outcomes) or to
    # B (less): the check, replayed on each training snapshot with the other snapshots' values, is kept where
    # greedy's plan fits only in the first case
    env = AgreeingToyEnv()
    P, A, B, samples, training = _validation_setting(env)
    picked = {"A": A, "B": B}[agreeing]
    env.agreements = {tuple(P): 0.60, picked: 0.90}
    policy = BudgetProjectedPlan(P, samples.mean(axis=0), BudgetGuard(env, RewardConfig(budget=BUDGET)),
                                 samples=samples, probe=True)
    assert run_policy(env, policy, [16]).outcomes[0].actions == P  # before validation: greedy's plan fits
    gains = policy.validate_check(training)
    expected = _toy_gains(env, P, picked, training)
    assert expected.mean() > 0 if runs_where_greedy_fits else expected.mean() < 0
    np.testing.assert_allclose(gains, expected, rtol=0, atol=1e-12)
    assert policy.check_where_greedy_fits is runs_where_greedy_fits
    env.asked, probed = [], policy.plans_probed
    actions = tuple(run_policy(env, policy, [16]).outcomes[0].actions)
    assert actions == (A if runs_where_greedy_fits else tuple(P))
    assert (env.asked != []) is runs_where_greedy_fits
    assert policy.plans_probed - probed == len(set(env.asked))  # the validation's own runs are not counted


def test_the_check_is_not_validated_without_enough_evidence():
    env = AgreeingToyEnv()
    P, A, B, samples, training = _validation_setting(env)
    env.agreements = {tuple(P): 0.60, A: 0.90}
    guard = BudgetGuard(env, RewardConfig(budget=BUDGET))
    for policy, snapshots in (
        (BudgetProjectedPlan(P, samples.mean(axis=0), guard, samples=samples), training),  # probe off
        (BudgetProjectedPlan(P, samples.mean(axis=0), guard, samples=samples[:2], probe=True), training[:2]),
        (BudgetProjectedPlan(P, samples.mean(axis=0), guard, probe=True), training),  # no per-snapshot values
    ):
        assert len(policy.validate_check(snapshots)) == 0 and not policy.check_where_greedy_fits
    # where the check never leaves the fitted plan, every gain is zero: no evidence for it
    policy = BudgetProjectedPlan(P, samples.mean(axis=0), guard, samples=samples, probe=True)
    env.agreements = {tuple(P): 0.60}
    assert not policy.validate_check(training).any() and not policy.check_where_greedy_fits


@pytest.mark.parametrize("node_error, moves", [(0.01, True), (2.0, False)])
def test_a_gain_the_snapshots_agree_on_still_needs_to_exceed_its_node_error(node_error, moves):
    """The gain of 1.0 agrees across snapshots (standard error ~0.03); where the snapshots share nodes on which it
    could be luck (a node-level error of 2.0), the plan that fits is kept."""
    env = ToyEnv()
    plan, better, values = _fitting_plan_and_a_better_one(env)
    samples = _samples_around(values, [1.0, 0.9, 1.1, 1.0, 0.95, 1.05])
    node_errors = np.full(values.shape, node_error)
    guard = BudgetGuard(env, RewardConfig(budget=BUDGET))
    policy = BudgetProjectedPlan(plan, samples.mean(axis=0), guard, samples=samples, node_errors=node_errors)
    assert run_policy(env, policy, [0]).outcomes[0].actions == (better if moves else plan)


def test_a_move_that_keeps_more_of_the_layer_is_not_held_to_the_node_error():
    """The same gain, but the better plan prunes fewer edges than the plan: the node-level error does not apply."""
    env = ToyEnv()
    space = env.action_space
    plan, _, values = _fitting_plan_and_a_better_one(env)
    keeps_more = [plan[0], space.nearest(0.0, 0.0)]
    values[1] = -1.0
    values[1, plan[1]], values[1, keeps_more[1]] = 0.0, 1.0
    budget_us = BUDGET * env.reference_latency(0)
    assert env._latency(0, keeps_more[0]) + env._latency(1, keeps_more[1]) <= budget_us
    samples = _samples_around(values, [1.0, 0.9, 1.1, 1.0, 0.95, 1.05])
    guard = BudgetGuard(env, RewardConfig(budget=BUDGET))
    policy = BudgetProjectedPlan(plan, samples.mean(axis=0), guard, samples=samples,
                                 node_errors=np.full(values.shape, 2.0))
    assert run_policy(env, policy, [0]).outcomes[0].actions == keeps_more


def test_compresses_at_least_orders_actions_by_what_they_keep():
    space = ActionSpace()
    int8, fp16 = space.nearest(0.0, 0.0), space.nearest(0.0, 1.0)
    pruned = space.nearest(0.5, 0.0, channel_sparsity=0.25)
    assert compresses_at_least(space, pruned, int8) and compresses_at_least(space, int8, fp16)
    assert compresses_at_least(space, int8, int8)
    assert not compresses_at_least(space, int8, pruned) and not compresses_at_least(space, fp16, int8)
    edges_only, channels_only = space.nearest(0.5, 0.0), space.nearest(0.0, 0.0, channel_sparsity=0.5)
    assert not compresses_at_least(space, edges_only, channels_only)
    assert not compresses_at_least(space, channels_only, edges_only)


@pytest.mark.parametrize("samples, node_errors, message", [
    (None, np.zeros((2, 48)), "must come with samples"),
    (np.zeros((3, 2, 48)), np.zeros((3, 2, 48)), "shape of values"),
    (np.zeros((3, 2, 48)), np.full((2, 48), -1.0), "finite and >= 0"),
])
def test_bad_node_errors_are_refused(samples, node_errors, message):
    with pytest.raises(ValueError, match=message):
        BudgetProjectedPlan([0, 0], np.zeros((2, 48)), BudgetGuard(ToyEnv(), RewardConfig(budget=BUDGET)),
                            samples=samples, node_errors=node_errors)


def test_plan_node_errors_pair_each_one_layer_change_with_the_plan():
    """On the toy (no per-node correctness) every error is 0; on outcomes that carry it, the error of a change is
    the standard error of the nodes' mean differences from the plan over the snapshots (they share their nodes)."""
    env = ToyEnv()
    errors = plan_node_errors(env, [3, 5], [0, 1, 2])
    assert errors.shape == (2, len(env.action_space)) and not errors.any()
    rng = np.random.default_rng(0)
    nodes = np.arange(200)
    measured = {}
    for layer, action in [(k, a) for k in range(2) for a in range(len(env.action_space))]:
        trial = [3, 5]
        trial[layer] = action
        measured[tuple(trial)] = PolicyResult("t", [
            EpisodeOutcome(snapshot=s, accuracy=0.5, latency_us=1.0, nbytes=1, reference_latency_us=1.0,
                           correct=rng.random(200) < 0.5, nodes=nodes) for s in (0, 1, 2)])
    errors = plan_node_errors(env, [3, 5], [0, 1, 2], measured=measured)
    assert errors[0, 3] == 0 and errors[1, 5] == 0  # the plan against itself
    per_node = np.mean([measured[(3, 7)].outcomes[s].correct.astype(float)
                        - measured[(3, 5)].outcomes[s].correct.astype(float) for s in range(3)], axis=0)
    assert errors[1, 7] == pytest.approx(sem(per_node))


# -- rule 5: greedy search's own plan at the same latency ---------------------------------------------------------


def _same_latency_pair(space):
    """Two plans the toy prices alike (its latency ignores channel pruning) that differ in the first layer's channels."""
    plan = [space.index(Action(0.75, 0.0, 0.0)), space.index(Action(0.0, 0.0, 0.0))]  # 1.2 + 1.0 us
    baseline = [space.index(Action(0.75, 0.0, 0.25)), plan[1]]
    return plan, baseline


def _worth(space, plan):
    """Values that make ``plan`` the most valuable plan one change away (it fits BUDGET on every toy snapshot)."""
    values = np.zeros((2, len(space)))
    values[0, plan[0]] = values[1, plan[1]] = 1.0
    return values


def test_at_the_same_latency_the_baseline_plan_runs_where_it_keeps_the_budget():
    env = ToyEnv()
    space = env.action_space
    plan, baseline = _same_latency_pair(space)
    guard = BudgetGuard(env, RewardConfig(budget=BUDGET))
    assert env._latency(0, plan[0]) == env._latency(0, baseline[0])
    without = run_policy(env, BudgetProjectedPlan(plan, _worth(space, plan), guard), [0, 1])
    assert [o.actions for o in without.outcomes] == [plan, plan]
    policy = BudgetProjectedPlan(plan, _worth(space, plan), guard, baseline_plan=baseline)
    result = run_policy(env, policy, [0, 1])
    assert [o.actions for o in result.outcomes] == [baseline, baseline]
    assert policy.baseline_snapshots == {0, 1}


def test_the_baseline_plan_does_not_run_where_it_overspends_or_costs_otherwise():
    env = ToyEnv()
    space = env.action_space
    plan, same = _same_latency_pair(space)
    budget_us = BUDGET * env.reference_latency(0)
    dearer = [space.index(Action(0.5, 0.0, 0.0)), space.index(Action(0.5, 0.0, 0.0))]  # 1.8 + 0.6 us: 9 % more
    over = [space.index(Action(0.0, 0.0, 0.0)), plan[1]]  # the unpruned first layer: over the budget
    assert env._latency(0, dearer[0]) + env._latency(1, dearer[1]) <= budget_us + 1e-9
    assert env._latency(0, over[0]) + env._latency(1, over[1]) > budget_us
    guard = BudgetGuard(env, RewardConfig(budget=BUDGET))
    for baseline in (dearer, over):
        policy = BudgetProjectedPlan(plan, _worth(space, plan), guard, baseline_plan=baseline)
        assert run_policy(env, policy, [0]).outcomes[0].actions == plan
        assert policy.baseline_snapshots == set()
    # a share wide enough to count the dearer plan as costing the same lets it run
    wide = BudgetProjectedPlan(plan, _worth(space, plan), guard, baseline_plan=dearer, same_latency_share=0.5)
    assert run_policy(env, wide, [0]).outcomes[0].actions == dearer
    # and the same plan as the baseline changes nothing
    itself = BudgetProjectedPlan(plan, _worth(space, plan), guard, baseline_plan=plan)
    assert run_policy(env, itself, [0]).outcomes[0].actions == plan and itself.baseline_snapshots == set()


def test_without_a_budget_the_baseline_plan_runs_at_the_same_latency():
    env = ToyEnv()
    space = env.action_space
    plan, baseline = _same_latency_pair(space)
    policy = BudgetProjectedPlan(plan, _worth(space, plan), BudgetGuard(env, RewardConfig()), baseline_plan=baseline)
    assert run_policy(env, policy, [0]).outcomes[0].actions == baseline


def test_a_move_that_spends_latency_is_not_undone_by_the_baseline():
    """Rule 1 may leave the plan for a dearer action the training snapshots back; the baseline, the plan itself, then
    costs less, not the same, and does not replace the move."""
    env = ToyEnv(n_train=6)
    space = env.action_space
    plan = [space.index(Action(0.75, 0.0, 0.0)), space.index(Action(0.5, 0.0, 0.0))]  # 1.2 + 0.6 us
    richer = space.index(Action(0.0, 0.0, 0.0))  # the second layer unpruned: 1.0 us, 22 % more in all, still fits
    samples = np.zeros((6, 2, len(space)))
    samples[:, 0, plan[0]] = samples[:, 1, plan[1]] = 0.5
    samples[:, 1, richer] = 0.6 + 0.01 * np.arange(6)  # a clear gain on every training snapshot
    guard = BudgetGuard(env, RewardConfig(budget=BUDGET))
    policy = BudgetProjectedPlan(plan, samples.mean(axis=0), guard, samples=samples, baseline_plan=plan)
    assert run_policy(env, policy, [0]).outcomes[0].actions == [plan[0], richer]
    assert policy.baseline_snapshots == set()


@pytest.mark.parametrize(
    "kwargs, message",
    [(dict(baseline_plan=[0]), "baseline_plan"), (dict(baseline_plan=[0, 48]), "baseline_plan"),
     (dict(same_latency_share=1.0), "same_latency_share"), (dict(same_latency_share=-0.1), "same_latency_share"),
     (dict(same_latency_share=float("nan")), "same_latency_share")],
)
def test_bad_baselines_and_shares_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BudgetProjectedPlan([0, 0], np.zeros((2, 48)), BudgetGuard(ToyEnv(), RewardConfig(budget=BUDGET)), **kwargs)


def test_the_check_leaves_plans_one_layer_from_greedys_to_rule_1():
    # Module docstring, rule 3: the check runs "the plans within its budget that change two layers or more"; a plan
    # one layer from greedy's was measured and judged by rule 1. X below changes one layer, fits, is within a standard
    # error of the fitted plan F and agrees far more with FP32: F must still be taken.
    env = AgreeingToyEnv()
    values, samples, G, F, R, Q, T = _probe_setting(env)
    space = env.action_space
    budget_us = BUDGET * env.reference_latency(0)
    X = next((space.nearest(s, 0.0, channel_sparsity=c), G[1])
             for s in (0.5, 0.25, 0.75) for c in (0.0, 0.25, 0.5)
             if space.nearest(s, 0.0, channel_sparsity=c) not in (G[0], F[0], Q[0])
             and env._latency(0, space.nearest(s, 0.0, channel_sparsity=c)) + env._latency(1, G[1]) <= budget_us)
    samples = samples.copy()
    samples[:, 0, X[0]] = [-0.011, 0.009, -0.011, 0.009]  # mean -0.001: within a standard error of F's 0
    env.agreements = {F: 0.80, X: 0.95}
    policy = BudgetProjectedPlan(list(G), samples.mean(axis=0), BudgetGuard(env, RewardConfig(budget=BUDGET)),
                                 samples=samples, probe=True)
    assert sum(a != g for a, g in zip(X, G)) == 1
    assert tuple(run_policy(env, policy, [16]).outcomes[0].actions) == F


def test_a_rival_agreeing_by_exactly_the_minimum_gain_does_not_replace_the_fitted_plan():
    # Rule 3: the rival replaces the fitted plan only where it agrees "by over PROBE_MIN_AGREEMENT_GAIN" (0.01) more;
    # 51/100 against 50/100 is exactly 0.01 more (in exact arithmetic), so F stays.
    env = AgreeingToyEnv()
    values, samples, G, F, R, Q, T = _probe_setting(env)
    env.agreements = {F: 50 / 100, R: 50 / 100, Q: 51 / 100}
    policy = BudgetProjectedPlan(list(G), values, BudgetGuard(env, RewardConfig(budget=BUDGET)), samples=samples,
                                 probe=True)
    assert tuple(run_policy(env, policy, [16]).outcomes[0].actions) == F
    env.agreements = {F: 50 / 100, R: 50 / 100, Q: 52 / 100}  # 0.02 more: Q replaces F
    assert tuple(run_policy(env, _projected(env, probe=True), [16]).outcomes[0].actions) == Q


def test_validate_check_chooses_with_the_other_training_snapshots_values():
    # validate_check: the check is run on each training snapshot "with the values of the other training snapshots
    # (leave one out: the snapshot's own labels choose no candidate)". Rival A is rated far above greedy's plan P by
    # training snapshot 0 alone, below it by every other: on snapshot 0 the check keeps P (gain 0). Reference: the
    # leave-one-out means in NumPy and the toy's own rewards of A and P.
    env = AgreeingToyEnv()
    P, A, B, _, training = _validation_setting(env)
    T, n = len(training), len(env.action_space)
    samples = np.full((T, 2, n), -1.0)
    samples[:, 0, P[0]] = samples[:, 1, P[1]] = 0.0
    samples[:, 1, A[1]] = 0.0
    samples[:, 0, A[0]] = -1.0
    samples[0, 0, A[0]] = 100.0
    env.agreements = {tuple(P): 0.60, A: 0.90}
    policy = BudgetProjectedPlan(P, samples.mean(axis=0), BudgetGuard(env, RewardConfig(budget=BUDGET)),
                                 samples=samples, probe=True)
    gains = policy.validate_check(training)
    unbudgeted = RewardConfig(budget=None)
    toy = (run_policy(env, StaticPolicy("a", list(A)), training).rewards(unbudgeted)
           - run_policy(env, StaticPolicy("p", list(P)), training).rewards(unbudgeted))
    expected = []
    for j in range(T):
        others = np.delete(samples, j, axis=0)
        a_minus_p = others[:, 0, A[0]] + others[:, 1, A[1]] - others[:, 0, P[0]] - others[:, 1, P[1]]
        candidate = a_minus_p.mean() > 0 or a_minus_p.mean() + sem(a_minus_p) >= 0
        expected.append(toy[j] if candidate else 0.0)
    assert expected[0] == 0.0 and toy[0] != 0.0
    np.testing.assert_allclose(gains, expected, atol=1e-12)
