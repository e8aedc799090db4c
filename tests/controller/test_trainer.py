import pytest
import numpy as np
import torch

from dste.controller.baselines import (
    DQNPolicy, RandomPolicy, StaticPolicy, greedy_search, run_policy, static_baselines,
)
from dste.controller.dqn import DQNConfig
from dste.controller.reward import RewardConfig
from dste.controller.trainer import TrainConfig, train_controller
from tests.controller.toy_env import ToyEnv

REWARD = RewardConfig(lambda_latency=0.2)


def _train(seed=0, episodes=300, select_every=25):
    env = ToyEnv()
    config = TrainConfig(episodes=episodes, select_every=select_every, dqn=DQNConfig(seed=seed), reward=REWARD)
    return env, train_controller(env, config)


def test_training_is_reproducible_from_its_seed():
    # 80 episodes of 2 steps: past learn_starts (64 transitions) about 100 updates, so both runs draw
    # exploration, replay batches and gradient steps from the seed; the checkpoints' scores already move.
    env_a, a = _train(seed=7, episodes=80)
    env_b, b = _train(seed=7, episodes=80)
    for key, tensor in a.agent.q.state_dict().items():
        assert torch.equal(tensor, b.agent.q.state_dict()[key]), key
    assert a.episode_rewards == b.episode_rewards
    held = env_a.snapshots("heldout")
    actions_a = [o.actions for o in run_policy(env_a, DQNPolicy(a.agent), held).outcomes]
    actions_b = [o.actions for o in run_policy(env_b, DQNPolicy(b.agent), held).outcomes]
    assert actions_a == actions_b


@pytest.mark.integration
def test_training_improves_reward_and_beats_static_policies_on_heldout():
    # 250 episodes: the reward curve rises by ~0.19 (10x the bar) and the DQN beats the best static action on
    # the held-out snapshots by ~0.026, as after 600.
    env, result = _train(seed=0, episodes=250)
    curve = result.reward_curve(window=40)
    assert curve[-1] > curve[0] + 0.02  # exploration-included reward rises as epsilon decays and Q improves

    held = env.snapshots("heldout")
    dqn = run_policy(env, DQNPolicy(result.agent), held)
    static = {p.name: run_policy(env, p, held) for p in static_baselines(env)}
    rand = run_policy(env, RandomPolicy(len(env.action_space), seed=1), held)
    greedy = run_policy(env, greedy_search(env, REWARD, env.snapshots("train")), held)
    assert dqn.mean_reward(REWARD) > rand.mean_reward(REWARD)
    for name, res in static.items():
        assert dqn.mean_reward(REWARD) > res.mean_reward(REWARD), name
    # The snapshot-dependent optimum lets the adaptive controller match or beat the best static search.
    assert dqn.mean_reward(REWARD) >= greedy.mean_reward(REWARD) - 1e-3


def test_lead_in_snapshots_are_run_unscored_and_carry_their_masks():
    env = ToyEnv()
    heldout = list(env.snapshots("heldout"))
    lead_action = env.action_space.nearest(0.5, 0.0)

    class Recorder(StaticPolicy):
        def __init__(self):
            super().__init__("recorder", [lead_action] * env.num_layers)
            self.previous_seen = []

        def choose(self, state, layer):
            self.previous_seen.append(list(env._previous))
            return super().choose(state, layer)

    cold, warm = Recorder(), Recorder()
    cold_result = run_policy(env, cold, heldout)
    warm_result = run_policy(env, warm, heldout, lead_in=[env.snapshots("train")[-1]])
    assert [o.snapshot for o in warm_result.outcomes] == heldout  # the lead-in is not scored
    assert cold.previous_seen[0] == [-1] * env.num_layers  # a cold start
    # the first scored snapshot sees what the policy ran on the lead-in snapshot
    assert warm.previous_seen[env.num_layers] == [lead_action] * env.num_layers
    assert warm_result.mean_reward(RewardConfig()) == cold_result.mean_reward(RewardConfig())  # static: no effect


def test_training_reads_only_the_snapshots_it_is_given():
    # fit_controller(train_ids=...) trained the DQN on env.snapshots("train") whatever train_ids said
    from dste.controller.fit import fit_controller

    env = ToyEnv()
    visited = []
    reset = env.reset
    env.reset = lambda snapshot: (visited.append(int(snapshot)), reset(snapshot))[1]
    given = list(env.snapshots("train"))[:6]
    fit_controller(env, REWARD, train_ids=given, episodes=30, probe=False)
    assert set(visited) <= set(given), sorted(set(visited) - set(given))


def test_the_fallback_share_counts_the_scored_snapshots_only():
    # the lead-in snapshot's decisions were counted too: 6 decisions reported for 4 held-out ones
    env, result = _train(seed=3, episodes=20)
    heldout = list(env.snapshots("heldout"))
    fallback = StaticPolicy("fallback", [0] * env.num_layers)
    policy = DQNPolicy(result.agent, fallback=fallback, margin=float("inf"))
    run_policy(env, policy, heldout, lead_in=[env.snapshots("train")[-1]])
    assert policy.decisions == len(heldout) * env.num_layers


@pytest.mark.integration
def test_checkpoints_that_score_alike_form_the_returned_ensemble():
    # eight checkpoints, as with 200 episodes every 25, at 120 episodes every 15
    env, result = _train(seed=2, episodes=120, select_every=15)
    assert len(result.selection_scores) == 8
    best = max(score for _, score in result.selection_scores)
    tied = sum(score >= best - TrainConfig().ensemble_tolerance for _, score in result.selection_scores)
    assert result.agent.ensemble_size == tied
    env_b = ToyEnv()
    strict = train_controller(
        env_b, TrainConfig(episodes=120, select_every=15, dqn=DQNConfig(seed=2), reward=REWARD, ensemble_tolerance=0.0)
    )
    assert strict.agent.ensemble_size == sum(score == best for _, score in strict.selection_scores)
    with pytest.raises(ValueError, match="ensemble_tolerance"):
        TrainConfig(ensemble_tolerance=-0.1)


class _EpisodeRecordingToy(ToyEnv):
    """The toy recording the snapshots and outcomes of training episodes (not of policy runs: selection, baseline)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.resets, self.outcomes, self.in_policy_run = [], [], False

    def reset(self, snapshot):
        if not self.in_policy_run:
            self.resets.append(int(snapshot))
        super().reset(snapshot)

    def outcome(self):
        result = super().outcome()
        if not self.in_policy_run:
            self.outcomes.append(result)
        return result


def _mark_policy_runs(monkeypatch):
    import dste.controller.trainer as trainer

    original = trainer.run_policy

    def run_policy(env, policy, snapshots, **kwargs):
        env.in_policy_run = True
        try:
            return original(env, policy, snapshots, **kwargs)
        finally:
            env.in_policy_run = False

    monkeypatch.setattr(trainer, "run_policy", run_policy)


def test_selection_snapshots_are_kept_out_of_training(monkeypatch):
    # Module docstring: the last selection_snapshots training snapshots "are then kept out of the updates". With 6
    # training snapshots and 2 kept for selection, episodes (and the normaliser's) visit snapshots 0-3 only.
    _mark_policy_runs(monkeypatch)
    env = _EpisodeRecordingToy(n_train=6, n_heldout=2)
    config = TrainConfig(episodes=24, normalizer_episodes=6, select_every=24, selection_snapshots=2,
                         dqn=DQNConfig(seed=0), reward=RewardConfig())
    train_controller(env, config)
    assert sorted(set(env.resets)) == [0, 1, 2, 3]


def test_episode_rewards_are_the_true_rewards_with_the_int8_baseline_on(monkeypatch):
    # trainer: returns are learned relative to uniform INT8's reward, but episode_rewards holds "the true episode
    # reward": accuracy - lambda * latency / reference, recomputed here from each training episode's outcome.
    _mark_policy_runs(monkeypatch)
    env = _EpisodeRecordingToy(n_train=4, n_heldout=1)
    config = TrainConfig(episodes=12, normalizer_episodes=4, select_every=12, per_snapshot_baseline=True,
                         dqn=DQNConfig(seed=0), reward=RewardConfig(lambda_latency=0.05))
    result = train_controller(env, config)
    episodes = env.outcomes[4:]  # after the normaliser's 4 random episodes
    expected = [o.accuracy - 0.05 * o.latency_us / o.reference_latency_us for o in episodes]
    assert len(episodes) == 12
    np.testing.assert_allclose(result.episode_rewards, expected, atol=1e-9)


def test_a_tolerance_of_zero_keeps_exactly_the_checkpoints_at_the_best_score():
    # Module docstring: the agent acts on the mean of "every checkpoint within ensemble_tolerance of the best score",
    # the best one included also at tolerance 0. Reference: counted from selection_scores.
    config = TrainConfig(episodes=20, normalizer_episodes=4, select_every=5, ensemble_tolerance=0.0,
                         dqn=DQNConfig(seed=0), reward=RewardConfig())
    result = train_controller(ToyEnv(n_train=4, n_heldout=1), config)
    scores = [score for _, score in result.selection_scores]
    assert result.agent.ensemble_size == sum(score >= max(scores) for score in scores) >= 1
