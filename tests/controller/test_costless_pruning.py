"""Pruning the cost model says saves nothing: ``costless_pruning`` and greedy search's ``allowed`` masks."""

from __future__ import annotations

import numpy as np
import pytest

from dste.controller import ActionSpace, RewardConfig, greedy_search
from dste.controller.actions import costless_pruning

from .toy_env import ToyEnv


def _prices_by_kept_work(space: ActionSpace, channel_tiles: int) -> np.ndarray:
    """Modelled price per action: INT8 or FP16 bytes times the kept edges, times the weight tiles the kept channels
    fill (``channel_tiles`` tiles unpruned; a tile is charged whole, as the kernels' 128-row tiles are)."""
    prices = []
    for action in space:
        width = 1.0 + action.fp16_fraction
        edges = 1.0 - action.sparsity
        tiles = np.ceil(channel_tiles * (1.0 - action.channel_sparsity))
        prices.append(width * (edges + tiles))
    return np.array(prices)


def test_only_channel_pruning_that_frees_no_tile_is_marked():
    space = ActionSpace()
    # one tile of channels: no channel level frees it, every edge level saves edges
    marked = costless_pruning(space, _prices_by_kept_work(space, channel_tiles=1))
    for index, action in enumerate(space):
        assert marked[index] == (action.channel_sparsity > 0), action.label()
    # four tiles: every channel level frees one, nothing is marked
    assert not costless_pruning(space, _prices_by_kept_work(space, channel_tiles=4)).any()


def test_the_saving_is_judged_on_average_over_the_snapshots():
    space = ActionSpace()
    one_tile, four_tiles = (_prices_by_kept_work(space, t) for t in (1, 4))
    assert not costless_pruning(space, np.stack([one_tile, four_tiles])).any()
    np.testing.assert_array_equal(
        costless_pruning(space, np.stack([one_tile, one_tile * 1.5])), costless_pruning(space, one_tile)
    )


def test_a_saving_below_the_share_is_marked_and_one_above_it_is_not():
    space = ActionSpace()
    prices = np.full(len(space), 100.0)
    pruned, kept = space.nearest(0.0, 0.05, 0.25), space.nearest(0.0, 0.05, 0.0)
    prices[kept] = 100.0
    for saving, marked in ((0.004, True), (-0.006, True), (0.006, False)):
        prices[pruned] = 100.0 * (1.0 - saving)
        assert costless_pruning(space, prices, min_saving=0.005)[pruned] == marked, saving
    prices[pruned] = 99.0  # a 1 % saving: costless only for a share above it
    assert costless_pruning(space, prices, min_saving=0.02)[pruned]
    assert not costless_pruning(space, prices, min_saving=0.0)[pruned]


def test_a_cheaper_action_of_another_precision_does_not_mark_it():
    space = ActionSpace()
    prices = _prices_by_kept_work(space, channel_tiles=4)
    prices[[space.nearest(0.0, 0.0, 0.0)]] = 100.0  # uniform INT8 unpruned made dearer than everything
    marked = costless_pruning(space, prices)
    # FP16 and mixed actions prune no less than INT8's unpruned action, yet another precision never marks them
    assert not marked.any()


def test_refuses_prices_of_the_wrong_shape_or_not_finite():
    space = ActionSpace()
    with pytest.raises(ValueError, match="prices must have shape"):
        costless_pruning(space, np.ones(len(space) - 1))
    with pytest.raises(ValueError, match="finite"):
        costless_pruning(space, np.full(len(space), np.nan))
    with pytest.raises(ValueError, match="at least one snapshot"):
        costless_pruning(space, np.ones((0, len(space))))
    with pytest.raises(ValueError, match="> 0"):
        costless_pruning(space, np.zeros(len(space)))
    for share in (-0.1, 1.0, np.nan):
        with pytest.raises(ValueError, match="min_saving"):
            costless_pruning(space, np.ones(len(space)), min_saving=share)


def test_greedy_search_never_takes_an_action_it_is_not_allowed():
    env = ToyEnv(n_train=6, n_heldout=1, seed=2)
    reward = RewardConfig(lambda_latency=0.5)  # latency priced high enough that the toy's plan prunes both layers
    snapshots = env.snapshots("train")
    free = greedy_search(env, reward, snapshots)
    forbidden = free.actions[1]
    assert forbidden != env.action_space.nearest(0.0, 0.0)
    allowed = [np.ones(len(env.action_space), dtype=bool) for _ in range(env.num_layers)]
    allowed[1][forbidden] = False
    searched = greedy_search(env, reward, snapshots, measured=free.trials, allowed=allowed)
    assert searched.actions[1] != forbidden
    # the best allowed action for layer 1 with layer 0 at the search's choice: none of them beats the one taken
    best = max(
        (a for a in range(len(env.action_space)) if allowed[1][a]),
        key=lambda a: searched.trials.get((searched.actions[0], a)).mean_reward(reward)
        if (searched.actions[0], a) in searched.trials else -np.inf,
    )
    assert searched.actions[1] == best


def test_greedy_search_refuses_masks_that_forbid_its_start_or_do_not_match():
    env = ToyEnv(n_train=3, n_heldout=1)
    reward = RewardConfig(lambda_latency=0.05)
    every = np.ones(len(env.action_space), dtype=bool)
    with pytest.raises(ValueError, match="bool masks"):
        greedy_search(env, reward, [0, 1, 2], allowed=[every])
    no_int8 = every.copy()
    no_int8[env.action_space.nearest(0.0, 0.0)] = False
    with pytest.raises(ValueError, match="must allow uniform INT8"):
        greedy_search(env, reward, [0, 1, 2], allowed=[every, no_int8])
