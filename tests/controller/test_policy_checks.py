"""run_policy refuses a policy that cannot act on the environment, before the first episode."""

import numpy as np
import pytest

from dste.controller import ActionSpace, DQNAgent
from dste.controller.baselines import DQNPolicy, StaticPolicy, run_policy
from tests.controller.toy_env import ToyEnv


def test_a_static_policy_needs_one_int_action_per_layer():
    env = ToyEnv()
    with pytest.raises(ValueError, match="has 5 actions; the environment has 2 layers"):
        run_policy(env, StaticPolicy("five", [1, 2, 3, 0, 0]), [0])  # the extra three were ignored
    with pytest.raises(TypeError, match="int action indices"):
        StaticPolicy("floats", [1.9, 2.7])  # ran as [1, 2]
    assert run_policy(env, StaticPolicy("two", [np.int64(1), 2]), [0]).outcomes[0].actions == [1, 2]


def test_a_dqn_policy_acts_only_on_the_grid_its_agent_was_trained_on():
    """Index 1 is "FP16 5 %" on one 4-action grid and "FP16 100 %" on another: the same size is not the same grid."""
    grid = ActionSpace((0.0, 0.5), (0.0, 1.0), (0.0,))
    other = ActionSpace((0.0, 0.75), (0.0, 0.05), (0.0,))
    assert len(grid) == len(other)
    env = ToyEnv(action_space=grid)
    with pytest.raises(ValueError, match="trained on .* the environment acts on"):
        run_policy(env, DQNPolicy(DQNAgent(other)), [0])
    assert len(run_policy(env, DQNPolicy(DQNAgent(grid)), [0]).outcomes) == 1
    with pytest.raises(ValueError, match="has 1 actions; the environment has 2 layers"):
        run_policy(env, DQNPolicy(DQNAgent(grid), fallback=StaticPolicy("one", [0])), [0])


def test_inputs_that_gave_a_quiet_default_are_refused():
    """Each was accepted with a quiet answer: a NaN level matched level 0, a True budget counted as 1.0, a lone NaN
    point sat on the front, an empty result kept every budget and scored NaN, no pairs divided by zero, and one
    correctness flag for three nodes paired as a difference of 0."""
    from dste.controller import BudgetGuard, RewardConfig
    from dste.controller.baselines import PolicyResult, fits_every_budget
    from dste.controller.env import EpisodeOutcome
    from dste.controller.evidence import node_error
    from dste.controller.oracle import pareto_front

    with pytest.raises(ValueError, match="finite"):
        ActionSpace().nearest(float("nan"), 0.0)
    with pytest.raises(ValueError, match="budget must be a positive fraction"):
        RewardConfig().terminal_reward(0.8, 10.0, 10.0, budget=True)
    with pytest.raises(ValueError, match="finite"):
        pareto_front([(float("nan"), 0.5)])
    with pytest.raises(ValueError, match="cost_tie"):
        pareto_front([(1.0, 0.5)], cost_tie=float("nan"))
    empty = PolicyResult("nothing run")
    with pytest.raises(ValueError, match="no episodes"):
        fits_every_budget(empty, BudgetGuard(ToyEnv(), RewardConfig(budget=0.8)))
    with pytest.raises(ValueError, match="no episodes"):
        empty.mean_reward(RewardConfig())
    with pytest.raises(ValueError, match="at least one snapshot"):
        node_error([])
    with pytest.raises(ValueError, match="one flag per evaluation node"):
        EpisodeOutcome(0, 1.0, 10.0, 100, 10.0, correct=np.ones(1, bool), nodes=np.arange(3))


def test_greedy_search_keeps_ascending_while_any_layer_moves(monkeypatch):
    # three layers: the first round moves the middle layer only, which makes a move of the first layer pay; the
    # ascent must run its second round (it stopped when the last layer had not moved)
    import dste.controller.baselines as baselines
    from dste.controller.reward import RewardConfig

    space = ActionSpace()
    n, start = len(space), space.nearest(0.0, 0.0)
    first, second = [a for a in range(n) if a != start][:2]
    score = -np.ones((n, n, n))
    score[start, start, start], score[start, first, start], score[second, first, start] = 0.0, 1.0, 2.0

    class Measured:
        def __init__(self, plan):
            self.plan = plan

        def mean_reward(self, reward, weights=None):
            return float(score[tuple(self.plan)])

    class ThreeLayers:
        action_space, num_layers = space, 3

    monkeypatch.setattr(baselines, "run_policy", lambda env, policy, snapshots: Measured(list(policy.actions)))
    plan = baselines.greedy_search(ThreeLayers(), RewardConfig(), [0], rounds=2).actions
    assert list(plan) == [second, first, start]
