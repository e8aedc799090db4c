"""Per-snapshot budgets relative to FP32 or INT8, the DQN's conservative fallback, the oracle helpers."""

import itertools

import numpy as np
import pytest

from dste.controller import (
    FEATURE_NAMES,
    ActionSpace,
    BudgetGuard,
    BudgetScheduleEnv,
    DQNPolicy,
    RewardConfig,
    StaticPolicy,
    calibrate_margin,
    dominates,
    feasible_static_search,
    fixed_budget,
    greedy_search,
    int8_multiple_budget,
    microsecond_budget,
    pareto_front,
    run_policy,
    snapshot_oracle,
    snapshot_oracles,
)
from dste.controller.env import FP32_ACTION

from .toy_env import ToyEnv

BUDGET_LEFT = FEATURE_NAMES.index("latency_budget_left")


def fp32_latency(env):
    return lambda n: float(sum(env._latency(layer, FP32_ACTION) for layer in range(env.num_layers)))


def test_schedule_budget_is_the_fraction_of_fp32_latency_in_reference_units():
    toy = ToyEnv(n_train=4, n_heldout=2)
    env = BudgetScheduleEnv(toy, lambda n: 0.5 + 0.1 * n, fp32_latency(toy))
    fp32 = 2.0 * sum((3.0, 1.0))  # the toy's FP32 latency doubles each layer's base
    for n in range(6):
        assert env.budget_of_fp32(n) == pytest.approx(0.5 + 0.1 * n)
        assert env.budget_fraction(n) == pytest.approx((0.5 + 0.1 * n) * fp32 / toy.reference_latency(n))


def test_fixed_budget_is_the_same_microseconds_on_every_snapshot_whatever_fp32_costs_there():
    toy = ToyEnv(n_train=4, n_heldout=2)
    growing_fp32 = lambda n: 8.0 * (1.0 + 0.25 * n)  # noqa: E731  (a graph whose FP32 latency grows)
    env = BudgetScheduleEnv(toy, fixed_budget(6.0, growing_fp32), growing_fp32)
    for n in range(6):
        assert env.budget_of_fp32(n) == pytest.approx(6.0 / growing_fp32(n))
        assert env.budget_fraction(n) * toy.reference_latency(n) == pytest.approx(6.0)


@pytest.mark.parametrize("bad", [0.0, -2.0, float("inf"), float("nan")])
def test_fixed_budget_refuses_a_budget_that_is_not_positive_microseconds(bad):
    with pytest.raises(ValueError, match="must be > 0 us"):
        fixed_budget(bad, lambda n: 8.0)


def test_int8_multiple_budget_is_that_multiple_of_each_snapshots_int8_latency():
    toy = ToyEnv(n_train=4, n_heldout=2)
    cycle = (1.05, 0.95, 0.88)
    int8 = lambda n: 3.0 + 0.5 * n  # noqa: E731  (INT8's latency grows with the snapshot...)
    fp32 = lambda n: 8.0 + 2.0 * n * n  # noqa: E731  (...and FP32's faster: their ratio moves)
    schedule = int8_multiple_budget(lambda n: cycle[n % 3], int8, fp32)
    env = BudgetScheduleEnv(toy, schedule, fp32)
    for n in range(6):
        assert env.budget_of_fp32(n) * fp32(n) == pytest.approx(cycle[n % 3] * int8(n))
    assert int8_multiple_budget(lambda n: None, int8, fp32)(2) is None  # no budget on that snapshot


def test_microsecond_budget_is_each_snapshots_microseconds_whatever_fp32_costs():
    toy = ToyEnv(n_train=4, n_heldout=2)
    budget = lambda n: 5.0 + (n // 3)  # noqa: E731  (re-provisioned every third snapshot)
    growing_fp32 = lambda n: 8.0 * (1.0 + 0.25 * n)  # noqa: E731
    env = BudgetScheduleEnv(toy, microsecond_budget(budget, growing_fp32), growing_fp32)
    for n in range(6):
        assert env.budget_fraction(n) * toy.reference_latency(n) == pytest.approx(budget(n))
    with pytest.raises(ValueError, match="snapshot 2's latency budget must be > 0 us"):
        microsecond_budget(lambda n: -1.0, growing_fp32)(2)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_int8_multiple_budget_refuses_a_multiple_that_is_not_positive(bad):
    with pytest.raises(ValueError, match="snapshot 1's multiple must be > 0"):
        int8_multiple_budget(lambda n: bad, lambda n: 3.0, lambda n: 8.0)(1)


def test_schedule_rewrites_the_budget_left_feature_and_the_outcome():
    toy = ToyEnv(n_train=4, n_heldout=2)
    env = BudgetScheduleEnv(toy, 0.4, fp32_latency(toy))
    env.begin_stream()
    env.reset(1)
    budget = env.budget_fraction(1)
    assert env.state(0)[BUDGET_LEFT] == pytest.approx(budget)
    report = env.step(0, 0)
    assert env.state(1)[BUDGET_LEFT] == pytest.approx(budget - report.latency_us / toy.reference_latency(1))
    env.step(1, 0)
    assert env.outcome().budget_fraction == pytest.approx(budget)


def test_guard_on_a_schedule_keeps_every_episode_inside_the_fp32_fraction():
    toy = ToyEnv(n_train=4, n_heldout=2)
    env = BudgetScheduleEnv(toy, 0.35, fp32_latency(toy))  # 0.35 * 8 us = 2.8 us, below uniform INT8's 4 us
    reward = RewardConfig(0.05, None, 5.0)
    guard = BudgetGuard(env, reward)
    result = run_policy(env, StaticPolicy("probe", [0, 0]), [0])  # prime current_snapshot
    assert result.outcomes[0].latency_us > 2.8
    env.reset(0)
    allowed = guard.allowed(0)
    cheapest_rest = toy.latency_table(0, 1).min()
    latencies = toy.latency_table(0, 0)
    np.testing.assert_array_equal(allowed, latencies + cheapest_rest <= 2.8 + 1e-9)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_schedule_refuses_non_positive_fractions(bad):
    toy = ToyEnv(n_train=2, n_heldout=1)
    with pytest.raises(ValueError, match="fraction"):
        BudgetScheduleEnv(toy, bad, fp32_latency(toy))


class FixedQ:
    """An agent stand-in whose Q-values are given per layer (the state's layer one-hot picks the row)."""

    def __init__(self, q_by_layer):
        self.action_space = ActionSpace()
        self.q = np.asarray(q_by_layer, dtype=np.float64)

    def _layer(self, state):
        return int(np.argmax(state[-8:]))

    def q_values(self, state):
        return self.q[self._layer(state)]

    def act(self, state, epsilon=0.0, allowed=None):
        q = self.q_values(state)
        return int(np.argmax(q if allowed is None else np.where(allowed, q, -np.inf)))


def layer_state(layer):
    state = np.zeros(64, np.float32)
    state[56 + layer] = 1.0
    return state


def test_fallback_keeps_the_static_action_unless_q_separates_by_more_than_the_margin():
    q = np.zeros((2, 48))
    q[0, 5], q[0, 7] = 0.010, 0.004  # layer 0: best 5, static 7, gap 0.006
    agent = FixedQ(q)
    assert DQNPolicy(agent, fallback=[7, 0], margin=0.005).choose(layer_state(0), 0) == 5
    assert DQNPolicy(agent, fallback=[7, 0], margin=0.01).choose(layer_state(0), 0) == 7
    assert DQNPolicy(agent, fallback=[7, 0], margin=float("inf")).choose(layer_state(0), 0) == 7
    assert DQNPolicy(agent).choose(layer_state(0), 0) == 5


class FixedGuard:
    def __init__(self, mask):
        self.mask = np.asarray(mask, bool)

    def allowed(self, layer):
        return self.mask

    def choose(self, layer, pick):  # every allowed action fits at its exact price here
        return pick(self.mask)


def test_a_fallback_action_over_the_budget_leaves_the_networks_allowed_choice():
    space = ActionSpace()
    static = space.nearest(0.0, 0.0, 0.0)
    one_step = space.nearest(0.25, 0.0, 0.0)
    far = space.nearest(0.75, 1.0, 0.75)
    mask = np.zeros(48, bool)
    mask[[one_step, far]] = True
    q = np.zeros((2, 48))
    q[0, far] = 0.001
    policy = DQNPolicy(FixedQ(q), guard=FixedGuard(mask), fallback=[static, static], margin=0.01)
    assert policy.choose(layer_state(0), 0) == far  # the static action does not fit: nothing to fall back to


@pytest.mark.parametrize("bad", [[48, 0], [-1, 0]])
def test_fallback_refuses_actions_outside_the_grid(bad):
    with pytest.raises(ValueError, match="fallback"):
        DQNPolicy(FixedQ(np.zeros((2, 48))), fallback=bad)


def test_pareto_front_matches_a_brute_force_check():
    rng = np.random.default_rng(3)
    points = [tuple(p) for p in rng.integers(0, 6, size=(40, 2)).astype(float)]
    expected = []
    for i, (c, a) in enumerate(points):
        beaten = any(c2 <= c and a2 >= a and (c2, a2) != (c, a) for c2, a2 in points)
        if not beaten:
            expected.append(i)
    assert sorted(pareto_front(points)) == sorted(expected)


def test_dominates_counts_a_latency_tie_and_not_an_identical_point():
    incumbent = (94.5593383910631, 0.60689)  # (modelled us, accuracy): a GraphSAGE stream's controller
    # the same tiles priced through another path: 6e-7 us apart, 0.07 points more accurate
    assert dominates((94.55933902326784, 0.60756), incumbent)
    assert not dominates(incumbent, incumbent)
    assert not dominates((94.5593383910631 + 6e-7, 0.60689), incumbent)  # a tie on both
    assert dominates((94.0, 0.60689), incumbent)  # faster, as accurate
    assert not dominates((94.0, 0.6068), incumbent)  # faster, less accurate: a trade
    # 0.7 ns slower is a tie (more accurate: dominates); 11 ns slower is a trade
    assert dominates((94.56, 0.61), incumbent) and not dominates((94.57, 0.61), incumbent)
    with pytest.raises(ValueError, match="cost_tie"):
        dominates((1.0, 1.0), (1.0, 1.0), cost_tie=-1.0)


def test_dominates_agrees_with_the_pareto_front_without_ties():
    rng = np.random.default_rng(5)
    points = [tuple(p) for p in rng.integers(0, 6, size=(40, 2)).astype(float)]
    front = set(pareto_front(points))
    for i, point in enumerate(points):
        beaten = any(dominates(other, point, cost_tie=0.0) for j, other in enumerate(points) if j != i)
        assert beaten == (i not in front)


def test_calibrate_margin_keeps_the_conservative_margin_when_nothing_gains():
    env = ToyEnv(n_train=4, n_heldout=2)
    reward = RewardConfig(0.05)
    space = env.action_space
    static = [space.nearest(0.0, 0.0)] * 2
    q = np.zeros((2, 48))
    q[:, static[0]] = 1.0  # the network agrees with the static policy everywhere
    margin, scores = calibrate_margin(env, FixedQ(q), None, static, reward, env.snapshots("train"))
    assert margin == float("inf")
    assert len(set(np.round(list(scores.values()), 12))) == 1


def test_snapshot_oracle_changes_with_the_toy_difficulty():
    # In the toy the best pruning level falls as the snapshot's hidden difficulty rises.
    env = ToyEnv(n_train=6, n_heldout=2, seed=1)
    reward = RewardConfig(0.3)
    easy, hard = int(np.argmin(env.difficulty)), int(np.argmax(env.difficulty))
    choices = {c.snapshot: c for c in snapshot_oracle(env, reward, [easy, hard])}
    sparsity = lambda c: sum(env.action_space[a].sparsity for a in c.actions)  # noqa: E731
    assert sparsity(choices[easy]) > sparsity(choices[hard])
    # each oracle choice is at least as good as every uniform action on its snapshot
    for snapshot, choice in choices.items():
        for action in range(len(env.action_space)):
            uniform = run_policy(env, StaticPolicy("u", [action, action]), [snapshot]).mean_reward(reward)
            assert choice.reward >= uniform - 1e-12


def test_snapshot_oracle_within_budget_is_the_best_plan_that_fits_each_snapshot():
    env = ToyEnv(n_train=2, n_heldout=2, seed=1)
    # a soft penalty so small that greedy's plan overspends where accuracy is worth more
    reward = RewardConfig(0.05, budget=0.45, budget_penalty=0.01)
    budget_us = 0.45 * env.reference_latency(0)
    snapshots = env.snapshots("heldout")
    soft = snapshot_oracle(env, reward, snapshots)
    assert any(c.latency_us > budget_us for c in soft)
    within = snapshot_oracle(env, reward, snapshots, within_budget=True)
    assert snapshot_oracles(env, reward, snapshots) == (soft, within)  # both from one search per snapshot
    assert snapshot_oracles(env, reward, snapshots, within_budget=False) == (soft, None)
    for snapshot, choice in zip(snapshots, within):
        assert choice.snapshot == snapshot and choice.latency_us <= budget_us + 1e-9
        best = max(
            run_policy(env, StaticPolicy("p", list(plan)), [snapshot]).mean_reward(reward)
            for plan in itertools.product(range(len(env.action_space)), repeat=2)
            if env._latency(0, plan[0]) + env._latency(1, plan[1]) <= budget_us
        )
        assert choice.reward == pytest.approx(best, abs=1e-12)
    assert snapshot_oracle(env, RewardConfig(budget=0.01), snapshots[:1], within_budget=True) == [None]


def test_snapshot_oracles_reuse_the_episodes_measured_over_the_stream():
    class CountingToy(ToyEnv):
        episodes = 0

        def reset(self, snapshot):
            CountingToy.episodes += 1
            super().reset(snapshot)

    env = CountingToy(n_train=2, n_heldout=3, seed=1)
    reward = RewardConfig(0.05, budget=0.45, budget_penalty=0.01)
    snapshots = env.snapshots("heldout")
    fresh = snapshot_oracles(env, reward, snapshots)
    hindsight = greedy_search(env, reward, snapshots)
    measured = feasible_static_search(env, reward, snapshots, hindsight).trials  # every plan, over the stream
    CountingToy.episodes = 0
    assert snapshot_oracles(env, reward, snapshots, measured=measured) == fresh
    assert CountingToy.episodes == 2 * len(snapshots)  # only each choice's own report episode
    with pytest.raises(ValueError, match="did not run snapshot"):
        snapshot_oracles(env, reward, snapshots[::-1], measured=measured)


def test_heldout_margin_scores_score_the_network_below_its_gap_and_the_fallback_above_it():
    from dste.experiments.pipeline import _heldout_margin_scores

    env = ToyEnv(n_train=4, n_heldout=2, seed=1)
    reward = RewardConfig(0.3)
    space = env.action_space
    static = [space.nearest(0.0, 0.0)] * 2
    pruned = space.nearest(0.75, 0.0)
    q = np.zeros((2, 48))
    q[0, pruned], q[0, static[0]] = 0.006, 0.0  # layer 0: the network prefers pruning by 0.006
    q[1, static[1]] = 1.0
    heldout, lead_in = env.snapshots("heldout"), env.snapshots("train")[-1:]
    scores = _heldout_margin_scores(env, FixedQ(q), None, static, reward, heldout, lead_in)
    as_static = run_policy(env, StaticPolicy("s", static), heldout, lead_in=lead_in)
    as_network = run_policy(env, StaticPolicy("n", [pruned, static[1]]), heldout, lead_in=lead_in)
    assert as_static.mean_reward(reward) != pytest.approx(as_network.mean_reward(reward))
    for margin, score in scores.items():
        expected = as_network if margin < 0.006 else as_static
        assert score["reward"] == pytest.approx(expected.mean_reward(reward))
        assert score["accuracy"] == pytest.approx(expected.accuracy)
        assert score["share_of_decisions_to_fallback"] == (0.0 if margin < 0.006 else 0.5)


def test_pareto_front_uses_the_latency_tie_of_dominates():
    # the front used no tie, so float rounding decided whether the controller was on it while dominates said it
    # was dominated: C4's hindsight plan was 8.5e-14 us slower and 0.044 points more accurate
    controller, hindsight = (152.48, 0.6581), (152.48 + 8.5e-14, 0.65854)
    assert dominates(hindsight, controller)
    assert pareto_front([controller, hindsight]) == [1]
    assert sorted(pareto_front([controller, hindsight], cost_tie=0.0)) == [0, 1]


def test_non_finite_points_are_refused():
    # a NaN compares False both ways: it was dominated by nothing and sat on every front
    with pytest.raises(ValueError, match="finite"):
        dominates((1.0, float("nan")), (1.0, 0.5))
    with pytest.raises(ValueError, match="finite"):
        pareto_front([(1.0, 0.5), (float("nan"), 0.4)])


def _stub_margin_scores(monkeypatch, scores):
    """calibrate_margin with each margin's mean reward set by hand (its policy runs are stubbed out)."""
    import dste.controller.oracle as oracle

    class Margin:
        def __init__(self, agent, guard=None, fallback=None, margin=0.0):
            self.margin = margin

    class Scored:
        def __init__(self, value):
            self.value = value

        def mean_reward(self, reward):
            return self.value

    monkeypatch.setattr(oracle, "DQNPolicy", Margin)
    monkeypatch.setattr(oracle, "run_policy", lambda env, policy, snapshots: Scored(scores[float(policy.margin)]))


def test_calibrate_margin_needs_a_gain_of_more_than_min_gain(monkeypatch):
    # Docstring: "unless some margin beats the most conservative one (the last) by more than min_gain, the most
    # conservative wins": a gain of exactly min_gain (0.75 - 0.5 = 0.25, exact in binary) keeps it.
    _stub_margin_scores(monkeypatch, {0.0: 0.75, float("inf"): 0.50})
    assert calibrate_margin(None, None, None, None, None, [0], margins=(0.0, float("inf")), min_gain=0.25)[0] == \
        float("inf")
    assert calibrate_margin(None, None, None, None, None, [0], margins=(0.0, float("inf")), min_gain=0.24)[0] == 0.0


def test_calibrate_margin_breaks_a_tie_between_margins_towards_the_more_conservative(monkeypatch):
    # The most conservative margin wins every near-tie (docstring); among margins with the same best score the larger
    # (more conservative) one is taken.
    margins = (0.0, 0.002, 0.005, 0.01, 0.02, float("inf"))
    _stub_margin_scores(monkeypatch, {0.0: 0.60, 0.002: 0.60, 0.005: 0.60, 0.01: 0.60, 0.02: 0.60, float("inf"): 0.50})
    margin, _ = calibrate_margin(None, None, None, None, None, [0], margins=margins, min_gain=0.02)
    assert margin == 0.02


@pytest.mark.parametrize("min_gain", [float("nan"), -0.01, float("inf"), True])
def test_calibrate_margin_refuses_a_min_gain_that_is_not_a_finite_share(monkeypatch, min_gain):
    # a NaN min_gain compared false with every gain, so the conservative margin was never kept
    _stub_margin_scores(monkeypatch, {0.0: 0.60, float("inf"): 0.50})
    with pytest.raises(ValueError, match="min_gain must be a finite number >= 0"):
        calibrate_margin(None, None, None, None, None, [0], margins=(0.0, float("inf")), min_gain=min_gain)
