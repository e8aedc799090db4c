import math

import pytest

from dste.controller.actions import Action, ActionSpace
from dste.controller.reward import RewardConfig


def test_default_grid_is_edge_major_then_channel_then_fp16_and_round_trips():
    space = ActionSpace()
    assert len(space) == 4 * 4 * 3 == 48
    assert space[0] == Action(0.0, 0.0, 0.0)
    assert space[1] == Action(0.0, 0.05, 0.0)  # FP16 varies fastest
    assert space[3] == Action(0.0, 0.0, 0.25)  # then channels
    assert space[12] == Action(0.25, 0.0, 0.0)  # then edges
    assert space[len(space) - 1] == Action(0.75, 1.0, 0.75)
    for i, action in enumerate(space):
        assert space.index(action) == i
        s, c, f = space.level_indices(i)
        assert (space.sparsity_levels[s], space.channel_levels[c], space.fp16_fractions[f]) == (
            action.sparsity, action.channel_sparsity, action.fp16_fraction)
    assert space[space.nearest(0.5, 0.0)] == Action(0.5, 0.0, 0.0)
    assert space[space.nearest(0.0, 0.0, channel_sparsity=0.6)] == Action(0.0, 0.0, 0.5)
    assert ActionSpace.from_dict(space.to_dict()) == space


def test_a_two_axis_grid_is_the_channel_free_special_case():
    space = ActionSpace((0.0, 0.5), (0.0, 1.0), channel_levels=(0.0,))
    assert [a.channel_sparsity for a in space] == [0.0] * 4
    assert [(a.sparsity, a.fp16_fraction) for a in space] == [(0.0, 0.0), (0.0, 1.0), (0.5, 0.0), (0.5, 1.0)]


@pytest.mark.parametrize("kwargs, message", [
    ({"sparsity_levels": (0.0, 1.0)}, "sparsity"),
    ({"sparsity_levels": (0.5, 0.25)}, "ascending"),
    ({"fp16_fractions": (0.0, 0.0)}, "repeat"),
    ({"fp16_fractions": ()}, "at least one"),
    ({"channel_levels": (0.0, 1.0)}, "channel_sparsity"),
    ({"channel_levels": (0.5, 0.0)}, "ascending"),
])
def test_bad_action_space_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ActionSpace(**kwargs)


def test_bad_action_index_is_refused():
    space = ActionSpace()
    with pytest.raises(IndexError, match=r"\[0, 48\)"):
        space[48]
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
    with pytest.raises(TypeError, match="budget must be a number or None, got True"):
        RewardConfig(budget=True)  # ran as a budget of 1.0
    with pytest.raises(TypeError, match="budget_penalty must be a number, got None"):
        RewardConfig(budget_penalty=None)
    with pytest.raises(ValueError, match="accuracy"):
        RewardConfig().terminal_reward(1.5, 1.0, 1.0)
    with pytest.raises(ValueError, match="reference latency"):
        RewardConfig().layer_reward(1.0, 0.0)


def test_memory_budget_charges_only_the_bytes_above_the_ceiling():
    reward = RewardConfig(lambda_latency=0.0, memory_budget=1.0, memory_penalty=2.0)
    under = reward.episode_reward(0.8, 5.0, 5.0, nbytes=900, reference_nbytes=1000)
    over = reward.episode_reward(0.8, 5.0, 5.0, nbytes=1250, reference_nbytes=1000)
    assert under == pytest.approx(0.8)
    assert over == pytest.approx(0.8 - 2.0 * 0.25)
    with pytest.raises(ValueError, match="nbytes"):
        reward.episode_reward(0.8, 5.0, 5.0)
    with pytest.raises(ValueError, match="memory_budget"):
        RewardConfig(memory_budget=0.0)


def test_a_snapshots_own_budget_overrides_the_configured_one():
    # terminal_reward: "budget overrides self.budget for this snapshot"; budget_for: "a snapshot's own, else
    # self.budget". Latency 0.7 of the reference is within a snapshot budget of 0.9 (no penalty) though over 0.5.
    reward = RewardConfig(lambda_latency=0.0, budget=0.5, budget_penalty=1.0)
    assert reward.budget_for(0.9) == 0.9 and reward.budget_for(None) == 0.5
    assert reward.terminal_reward(0.8, 0.7, 1.0, budget=0.9) == pytest.approx(0.8)
    assert reward.terminal_reward(0.8, 0.7, 1.0) == pytest.approx(0.8 - 1.0 * (0.7 - 0.5))
