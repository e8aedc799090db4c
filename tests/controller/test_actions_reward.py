import math

import pytest

from dste.controller.actions import Action, ActionSpace
from dste.controller.reward import RewardConfig


def test_default_grid_is_sparsity_major_and_round_trips():
    space = ActionSpace()
    assert len(space) == 16
    assert space[0] == Action(0.0, 0.0)
    assert space[len(space) - 1] == Action(0.75, 1.0)
    for i, action in enumerate(space):
        assert space.index(action) == i
    assert space[space.nearest(0.5, 0.0)] == Action(0.5, 0.0)
    assert ActionSpace.from_dict(space.to_dict()) == space


@pytest.mark.parametrize("kwargs, message", [
    ({"sparsity_levels": (0.0, 1.0)}, "sparsity"),
    ({"sparsity_levels": (0.5, 0.25)}, "ascending"),
    ({"fp16_fractions": (0.0, 0.0)}, "repeat"),
    ({"fp16_fractions": ()}, "at least one"),
])
def test_bad_action_space_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ActionSpace(**kwargs)


def test_bad_action_index_is_refused():
    space = ActionSpace()
    with pytest.raises(IndexError, match=r"\[0, 16\)"):
        space[16]
    with pytest.raises(TypeError, match="int"):
        space[1.0]
    with pytest.raises(ValueError, match="not in this action space"):
        space.index(Action(0.1, 0.0))


def test_episode_reward_is_the_sum_of_step_rewards():
    reward = RewardConfig(lambda_latency=0.1, budget=0.5, budget_penalty=2.0)
    layers = [3.0, 1.5]
    total = sum(reward.layer_reward(lat, 6.0) for lat in layers) + reward.terminal_reward(0.8, 4.5, 6.0)
    expected = 0.8 - 0.1 * 4.5 / 6.0 - 2.0 * (4.5 / 6.0 - 0.5)
    assert math.isclose(total, expected, rel_tol=1e-12)
    assert math.isclose(reward.episode_reward(0.8, 4.5, 6.0), expected, rel_tol=1e-12)


def test_reward_refuses_bad_numbers():
    with pytest.raises(ValueError, match="lambda_latency"):
        RewardConfig(lambda_latency=-1)
    with pytest.raises(ValueError, match="budget"):
        RewardConfig(budget=0.0)
    with pytest.raises(ValueError, match="accuracy"):
        RewardConfig().terminal_reward(1.5, 1.0, 1.0)
    with pytest.raises(ValueError, match="reference latency"):
        RewardConfig().layer_reward(1.0, 0.0)
