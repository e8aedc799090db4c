"""Training the DQN controller on an environment's training snapshots.

One episode = one training snapshot, compressed layer by layer; episodes walk the training snapshots in
stream order, pass after pass. Each layer step is a
transition (state, action, step reward, next layer's state, done); see ``dste.controller.reward`` for the
reward. The state normaliser is fitted first on states seen under random actions. Returns are learned
relative to a per-snapshot baseline, the reward uniform INT8 earns on the same snapshot: snapshots differ in
how hard they are by more than actions differ from each other, and subtracting a constant per snapshot
removes that spread from the Q-targets without changing which action is best. Every ``select_every``
episodes the greedy policy is scored on the training snapshots (or on the last ``selection_snapshots`` of them,
which are then kept out of the updates, so checkpoints are chosen for how they generalise rather than how well
they fit). The returned agent acts on the best checkpoint, or on the mean Q-values of every checkpoint within
``ensemble_tolerance`` of the best score, so it never depends on the last, possibly noisy, update nor on
which of several equally good checkpoints training happened to reach first. Held-out snapshots are never touched
here: they are for judging (``baselines.run_policy``).

With a latency budget (the reward's or the environment's per-snapshot one) and ``budget_guard`` on, the agent
acts, explores and bootstraps only among the actions ``BudgetGuard`` allows, and the selection runs it the
same way; judge it through ``DQNPolicy(agent, guard=BudgetGuard(env, reward))`` too. Environments that cannot
price an action before running it (``CompressionEnv.latency_table``) need ``budget_guard=False``.
"""

from __future__ import annotations

from typing import Sequence

import copy
import numbers
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from dste.controller.actions import ActionSpace
from dste.controller.baselines import DQNPolicy, StaticPolicy, run_policy
from dste.controller.dqn import DQNAgent, DQNConfig
from dste.controller.env import CompressionEnv
from dste.controller.guard import BudgetGuard
from dste.controller.reward import RewardConfig
from dste.controller.state import StateNormalizer

__all__ = ["TrainConfig", "TrainResult", "train_controller"]


@dataclass(frozen=True)
class TrainConfig:
    episodes: int = 400
    normalizer_episodes: int = 32
    select_every: int = 25
    selection_snapshots: int = 0  # the last k training snapshots only score checkpoints (0: score on all)
    per_snapshot_baseline: bool = True  # learn returns minus uniform INT8's reward on the same snapshot
    budget_guard: bool = True  # with a latency budget, act only among actions that fit it (dste.controller.guard)
    ensemble_tolerance: float = 0.001  # checkpoints within this of the best selection score act as one ensemble
    dqn: DQNConfig = field(default_factory=DQNConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)

    def __post_init__(self) -> None:
        for name in ("episodes", "normalizer_episodes", "select_every"):
            value = getattr(self, name)
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
            object.__setattr__(self, name, int(value))  # a NumPy integer (np.arange, a sweep) as the int it is
        if not isinstance(self.dqn, DQNConfig) or not isinstance(self.reward, RewardConfig):
            raise TypeError(f"dqn and reward must be a DQNConfig and a RewardConfig, got {type(self.dqn).__name__} "
                            f"and {type(self.reward).__name__}")
        if not (isinstance(self.ensemble_tolerance, (int, float)) and 0 <= self.ensemble_tolerance < 1):
            raise ValueError(f"ensemble_tolerance must lie in [0, 1), got {self.ensemble_tolerance!r}")
        if (isinstance(self.selection_snapshots, (bool, np.bool_)) or not isinstance(self.selection_snapshots, numbers.Integral)
                or self.selection_snapshots < 0):
            raise ValueError(f"selection_snapshots must be an int >= 0, got {self.selection_snapshots!r}")
        object.__setattr__(self, "selection_snapshots", int(self.selection_snapshots))


@dataclass
class TrainResult:
    agent: DQNAgent
    episode_rewards: list[float]
    selection_scores: list[tuple[int, float]]  # (episode, mean greedy reward on training snapshots)
    best_episode: int

    def reward_curve(self, window: int = 20) -> np.ndarray:
        """Moving average of the per-episode reward (exploration included)."""
        rewards = np.asarray(self.episode_rewards)
        if rewards.size < window:
            return rewards.copy()
        return np.convolve(rewards, np.ones(window) / window, mode="valid")


def _fit_normalizer(env: CompressionEnv, snapshots, episodes: int, seed: int) -> StateNormalizer:
    rng = np.random.default_rng(seed + 3)
    states = []
    for episode in range(episodes):
        if episode % len(snapshots) == 0:
            env.begin_stream()
        env.reset(int(snapshots[episode % len(snapshots)]))
        for layer in range(env.num_layers):
            states.append(env.state(layer))
            env.step(layer, int(rng.integers(len(env.action_space))))
        env.outcome()
    return StateNormalizer.fit(np.stack(states))


def train_controller(env: CompressionEnv, config: TrainConfig | None = None, progress: bool = False,
                     snapshots: Sequence[int] | None = None) -> TrainResult:
    """Train a DQN controller on ``snapshots`` (default ``env.snapshots("train")``), the last
    ``config.selection_snapshots`` of them kept for checkpoint selection; deterministic for a given config, env and
    snapshots."""
    config = config or TrainConfig()
    if not isinstance(config, TrainConfig):
        hint = " (a RewardConfig goes inside: TrainConfig(reward=RewardConfig(...)))" if isinstance(
            config, RewardConfig) else ""
        raise TypeError(f"train_controller takes a TrainConfig, got {type(config).__name__}{hint}")
    threads = torch.get_num_threads()
    # The Q-network is tiny: one thread is faster than two fighting over a shared machine, and the result
    # does not depend on the thread count.
    torch.set_num_threads(1)
    try:
        return _train(env, config, progress, snapshots)
    finally:
        torch.set_num_threads(threads)


def _train(env: CompressionEnv, config: TrainConfig, progress: bool, given: Sequence[int] | None) -> TrainResult:
    if not isinstance(env.action_space, ActionSpace):
        raise TypeError("env.action_space must be an ActionSpace")
    all_snapshots = [int(i) for i in (env.snapshots("train") if given is None else given)]
    k = config.selection_snapshots
    if len(all_snapshots) < k + 1:
        raise ValueError(
            f"the environment has {len(all_snapshots)} training snapshots; need at least {k + 1} "
            f"({k} reserved for checkpoint selection)"
        )
    snapshots = all_snapshots[: len(all_snapshots) - k]
    selection_set = all_snapshots[len(all_snapshots) - k:] if k else all_snapshots
    seed = config.dqn.seed
    normalizer = _fit_normalizer(env, snapshots, config.normalizer_episodes, seed)
    agent = DQNAgent(env.action_space, config.dqn, normalizer)
    reward = config.reward
    guard = BudgetGuard(env, reward) if config.budget_guard else None
    baseline = {snapshot: 0.0 for snapshot in snapshots}
    if config.per_snapshot_baseline:
        uniform_int8 = StaticPolicy("uniform int8", [env.action_space.nearest(0.0, 0.0)] * env.num_layers)
        rewards = run_policy(env, uniform_int8, snapshots).rewards(reward)
        baseline = {snapshot: float(r) for snapshot, r in zip(snapshots, rewards)}

    episode_rewards: list[float] = []
    selection: list[tuple[int, float]] = []
    best_score, best_episode = -np.inf, 0
    checkpoints: list[tuple[float, dict]] = []

    def select(episode: int) -> None:
        nonlocal best_score, best_episode
        lead_in = snapshots[-1:] if k else ()  # the selection snapshots continue the training stream
        score = run_policy(env, DQNPolicy(agent, guard=guard), selection_set, lead_in=lead_in).mean_reward(reward)
        selection.append((episode, score))
        checkpoints.append((score, copy.deepcopy(agent.q.state_dict())))
        if score > best_score:
            best_score, best_episode = score, episode

    for episode in tqdm(range(config.episodes), desc="train controller", disable=not progress, leave=False):
        epsilon = config.dqn.epsilon(episode, config.episodes)
        # Episodes walk the training stream in order, one pass after another, exactly as the policy is run
        # when judged: the previous-mask part of the state (M_n) is then the agent's own choice on the
        # previous snapshot, and a pass starts with no previous mask, as a judged stream does. Each pass
        # starts one snapshot later (wrapping around), so "no previous mask" is seen with every training
        # snapshot rather than only with the first one, as a judged stream meets it on an unseen snapshot. The price:
        # within a rotated pass the stream's first snapshots follow its last ones with their masks carried over,
        # a step back in time that a judged stream never takes.
        position = episode % len(snapshots)
        if position == 0:
            env.begin_stream()
        snapshot = int(snapshots[(position + episode // len(snapshots)) % len(snapshots)])
        env.reset(snapshot)
        reference = env.reference_latency(snapshot)
        state = env.state(0)
        allowed = guard.allowed(0) if guard else None
        total = 0.0
        for layer in range(env.num_layers):
            action = agent.act(state, epsilon, allowed)
            report = env.step(layer, action)
            step_reward = reward.layer_reward(report.latency_us, reference)
            last = layer == env.num_layers - 1
            if last:
                outcome = env.outcome()
                step_reward += reward.terminal_reward(
                    outcome.accuracy, outcome.latency_us, reference, outcome.budget_fraction,
                    outcome.nbytes, outcome.reference_nbytes,
                ) - baseline[snapshot]
                next_state, next_allowed = state, None  # ignored: done masks the bootstrap
            else:
                next_state = env.state(layer + 1)
                next_allowed = guard.allowed(layer + 1) if guard else None
            agent.remember(state, action, step_reward, next_state, last, next_allowed)
            agent.learn()
            total += step_reward
            state, allowed = next_state, next_allowed
        episode_rewards.append(total + baseline[snapshot])  # the true episode reward
        if (episode + 1) % config.select_every == 0 or episode + 1 == config.episodes:
            select(episode + 1)

    # Checkpoints whose scores differ by less than the tolerance are ones the selection snapshots cannot tell
    # apart (0.001 is half a node of a 500-node validation set). Rather than let the order of training pick
    # one of them, the agent acts on the mean of their Q-values: where one of them flips to another action
    # on a state unlike the training ones, the others outvote it.
    near_best = [weights for score, weights in checkpoints if score >= best_score - config.ensemble_tolerance]
    agent.use_checkpoints(near_best)
    return TrainResult(agent, episode_rewards, selection, best_episode)
