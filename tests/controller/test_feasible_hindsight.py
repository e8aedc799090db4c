"""The budget-feasible best static plan: coordinate ascent among plans that fit every snapshot's budget."""

import itertools

import numpy as np
import pytest

from dste.controller import ActionSpace, BudgetGuard, BudgetScheduleEnv, RewardConfig, StaticPolicy, greedy_search, run_policy
from dste.controller.baselines import feasible_static_search, fits_every_budget

from .toy_env import LAYER_BASE_US, ToyEnv

TOY_FP32_US = 2.0 * sum(LAYER_BASE_US)  # the toy runs an uncompressed layer at twice its base latency
# Per-snapshot budgets of 30-40 % of the FP32 latency (2.4-3.2 us): uniform INT8 (4 us) fits none of them.
BUDGET_CYCLE = (0.30, 0.35, 0.40)
# No soft penalty: the unconstrained search then ignores the budget, so its plan overspends and the test bites.
SOFT_REWARD = RewardConfig(lambda_latency=0.05, budget_penalty=0.0)


# The default grid's extremes on a coarser grid (18 actions): its 324 two-layer plans keep every search path of the
# tests (overspending greedy plan, exhaustive, ascent, nothing fits) at a seventh of the default grid's 2,304 runs.
SEARCH_SPACE = ActionSpace(sparsity_levels=(0.0, 0.5, 0.75), fp16_fractions=(0.0, 0.05, 1.0), channel_levels=(0.0, 0.75))


def _scheduled_toy(seed: int, n_heldout: int = 3, cycle=BUDGET_CYCLE) -> BudgetScheduleEnv:
    toy = ToyEnv(n_train=4, n_heldout=n_heldout, seed=seed, action_space=SEARCH_SPACE)
    return BudgetScheduleEnv(toy, lambda n: cycle[n % len(cycle)], lambda n: TOY_FP32_US)


def _exhaustive_best_feasible(env, reward, snapshots):
    """Every (a0, a1) run and judged on its measured latencies: the best mean reward among the plans that fit
    every snapshot's budget, or None if none fits. Independent of the search (no trials, no ascent)."""
    guard = BudgetGuard(env, reward)
    best, best_reward = None, -np.inf
    n = len(env.action_space)
    for plan in itertools.product(range(n), range(n)):
        result = run_policy(env, StaticPolicy("plan", plan), snapshots)
        budgets = [guard.budget_us(o.snapshot) for o in result.outcomes]
        if all(o.latency_us <= b * (1 + 1e-9) for o, b in zip(result.outcomes, budgets)):
            value = result.mean_reward(reward)
            if value > best_reward:
                best, best_reward = plan, value
    return best, best_reward


@pytest.mark.parametrize("seed", range(3))
def test_feasible_plan_never_exceeds_a_snapshot_budget(seed):
    env = _scheduled_toy(seed)
    snapshots = env.snapshots("heldout")
    guard = BudgetGuard(env, SOFT_REWARD)
    unconstrained = greedy_search(env, SOFT_REWARD, snapshots)
    assert not fits_every_budget(run_policy(env, unconstrained, snapshots), guard), "the test needs an overspending plan"
    feasible = feasible_static_search(env, SOFT_REWARD, snapshots, unconstrained)
    assert feasible is not None and feasible.name == "static_hindsight_feasible"
    result = run_policy(env, feasible, snapshots)
    for outcome in result.outcomes:
        budget = guard.budget_us(outcome.snapshot)
        assert budget == pytest.approx(BUDGET_CYCLE[outcome.snapshot % 3] * TOY_FP32_US)
        assert outcome.latency_us <= budget * (1 + 1e-9), (outcome.snapshot, outcome.latency_us, budget)
    # the best of every feasible plan it measured (the ascent keeps the best, never a worse one)
    best_measured = max(r.mean_reward(SOFT_REWARD) for r in feasible.feasible_trials.values())
    assert result.mean_reward(SOFT_REWARD) == pytest.approx(best_measured, abs=1e-12)
    assert tuple(feasible.actions) in feasible.feasible_trials


@pytest.mark.parametrize("seed", range(3))
def test_exhaustive_search_finds_the_best_feasible_plan(seed):
    env = _scheduled_toy(seed)
    snapshots = env.snapshots("heldout")
    feasible = feasible_static_search(env, SOFT_REWARD, snapshots, greedy_search(env, SOFT_REWARD, snapshots))
    assert feasible.search == "exhaustive"
    best_plan, best_reward = _exhaustive_best_feasible(env, SOFT_REWARD, snapshots)
    assert tuple(feasible.actions) == best_plan
    # the same plans on the same deterministic toy: equal up to float summation order
    assert run_policy(env, feasible, snapshots).mean_reward(SOFT_REWARD) == pytest.approx(best_reward, abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_ascent_beyond_the_plan_limit_stays_feasible_and_keeps_its_best(seed):
    """Above ``plan_limit`` plans the search is a local ascent: always feasible, the best of what it measured,
    never better than the exhaustive optimum (it may be worse: one layer at a time cannot trade between layers
    where the budget binds)."""
    env = _scheduled_toy(seed)
    snapshots = env.snapshots("heldout")
    guard = BudgetGuard(env, SOFT_REWARD)
    ascent = feasible_static_search(
        env, SOFT_REWARD, snapshots, greedy_search(env, SOFT_REWARD, snapshots), plan_limit=0
    )
    assert ascent.search == "ascent"
    result = run_policy(env, ascent, snapshots)
    assert fits_every_budget(result, guard)
    found = result.mean_reward(SOFT_REWARD)
    assert found == pytest.approx(max(r.mean_reward(SOFT_REWARD) for r in ascent.feasible_trials.values()), abs=1e-12)
    assert found <= _exhaustive_best_feasible(env, SOFT_REWARD, snapshots)[1] + 1e-12


@pytest.mark.parametrize("reward", [RewardConfig(), RewardConfig(budget=1.5, budget_penalty=5.0)])
def test_beyond_the_plan_limit_it_equals_the_unconstrained_plan_when_that_one_fits(reward):
    env = ToyEnv(n_train=4, n_heldout=3, seed=1)
    snapshots = env.snapshots("heldout")
    unconstrained = greedy_search(env, reward, snapshots)
    assert fits_every_budget(run_policy(env, unconstrained, snapshots), BudgetGuard(env, reward))
    feasible = feasible_static_search(env, reward, snapshots, unconstrained, plan_limit=0)
    assert feasible.actions == unconstrained.actions and feasible.search == "unconstrained"
    # nothing new was run: the unconstrained search's results are reused as they are
    assert all(feasible.trials[t] is r for t, r in unconstrained.trials.items())
    assert len(feasible.trials) == len(unconstrained.trials)


@pytest.mark.parametrize("seed", range(6))
def test_within_the_plan_limit_it_is_exhaustive_even_where_the_unconstrained_plan_fits(seed):
    """Greedy search is a local search: where its plan fits every budget a plan it never reached may still be
    better, and the exhaustive search must find it (the reference: every plan run and compared on its own)."""
    reward = RewardConfig(budget=10.0)  # every toy plan fits
    env = ToyEnv(n_train=4, n_heldout=3, seed=seed)
    snapshots = env.snapshots("heldout")
    # a search stuck on the most-pruned plan: it fits, and it is not the best one
    stuck = StaticPolicy("most_pruned", [len(env.action_space) - 1] * 2)
    stuck.trials = {}
    feasible = feasible_static_search(env, reward, snapshots, stuck)
    assert feasible.search == "exhaustive"
    best_plan, best_reward = _exhaustive_best_feasible(env, reward, snapshots)
    assert tuple(feasible.actions) == best_plan != tuple(stuck.actions)
    assert run_policy(env, feasible, snapshots).mean_reward(reward) == pytest.approx(best_reward, abs=1e-12)
    assert best_reward > run_policy(env, stuck, snapshots).mean_reward(reward)


def test_none_when_no_static_plan_fits():
    # 5 % of FP32 is 0.4 us; the cheapest toy plan (the most edges pruned, INT8, on both layers) costs 1.6 us
    env = _scheduled_toy(0, cycle=(0.05,))
    snapshots = env.snapshots("heldout")
    exhaustive, _ = _exhaustive_best_feasible(env, SOFT_REWARD, snapshots)
    assert exhaustive is None
    unconstrained = greedy_search(env, SOFT_REWARD, snapshots)
    assert feasible_static_search(env, SOFT_REWARD, snapshots, unconstrained) is None
    assert feasible_static_search(env, SOFT_REWARD, snapshots, unconstrained, plan_limit=0) is None


def test_starts_from_the_cheapest_plan_when_no_measured_plan_fits():
    """A budget only the most-pruned plans meet: the unconstrained search (starting from INT8) may measure none
    of them, and the search must still find one through the latency tables."""
    env = ToyEnv(n_train=4, n_heldout=3, seed=2)
    snapshots = env.snapshots("heldout")
    cheapest_us = min(env.latency_table(snapshots[0], 0)) + min(env.latency_table(snapshots[0], 1))
    reward = RewardConfig(budget=1.01 * cheapest_us / env.reference_latency(snapshots[0]), budget_penalty=0.0)
    unconstrained = StaticPolicy("int8_only", [env.action_space.nearest(0.0, 0.0)] * 2)
    unconstrained.trials = {}
    feasible = feasible_static_search(env, reward, snapshots, unconstrained, plan_limit=0)
    assert feasible is not None and feasible.search == "ascent"
    assert fits_every_budget(run_policy(env, feasible, snapshots), BudgetGuard(env, reward))


def test_refuses_bad_arguments():
    env = ToyEnv(n_train=4, n_heldout=3)
    snapshots = env.snapshots("heldout")
    plan = StaticPolicy("p", [0, 0])
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        feasible_static_search(env, SOFT_REWARD, snapshots, plan, rounds=0)
    with pytest.raises(ValueError, match="at least one snapshot"):
        feasible_static_search(env, SOFT_REWARD, [], plan)
    with pytest.raises(ValueError, match="2 action indices"):
        feasible_static_search(env, SOFT_REWARD, snapshots, StaticPolicy("p", [0]))


def test_results_measured_on_other_snapshots_are_refused():
    """greedy_search's trials on the training snapshots handed to a search on the held-out ones were reused as if run
    there: the plan came back judged on the wrong snapshots."""
    from dste.controller.projection import one_layer_trials

    env = ToyEnv(n_train=3, n_heldout=2)
    reward = RewardConfig(lambda_latency=0.05, budget=0.8)
    train, heldout = [0, 1, 2], [3, 4]
    on_train = greedy_search(env, reward, train)
    with pytest.raises(ValueError, match=r"ran snapshots \[0, 1, 2\], not \[3, 4\]"):
        feasible_static_search(env, reward, heldout, on_train)
    with pytest.raises(ValueError, match="not \\[3, 4\\]"):
        greedy_search(env, reward, heldout, measured=on_train.trials)
    with pytest.raises(ValueError, match="not \\[3, 4\\]"):
        one_layer_trials(env, on_train.actions, heldout, measured=on_train.trials)
    feasible_static_search(env, reward, train, on_train)  # the snapshots they ran: reused
