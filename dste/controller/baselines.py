"""Policies and the one harness that runs them all on an environment's snapshot stream.

Every policy -- the DQN and the baselines -- goes through ``run_policy``, so they are judged on the same
snapshots, the same accuracy measure and the same modelled latency. Baselines:

* ``fp32``            -- no compression (``FP32_ACTION`` on every layer).
* ``int8``            -- uniform INT8, no pruning.
* ``static_sparse50_int8`` -- 50 % importance pruning, uniform INT8 (the seed paper's static sparse row).
* ``fp16``            -- uniform FP16, no pruning.
* ``random``          -- a uniformly random action per layer and snapshot (seeded).
* ``greedy``          -- a static per-layer action found by coordinate ascent on the training snapshots'
  mean reward (a search baseline that sees the same reward as the DQN but cannot adapt per snapshot).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from dste.controller.env import FP32_ACTION, CompressionEnv, EpisodeOutcome
from dste.controller.reward import RewardConfig

__all__ = [
    "Policy",
    "StaticPolicy",
    "RandomPolicy",
    "DQNPolicy",
    "PolicyResult",
    "run_policy",
    "static_baselines",
    "greedy_search",
]


class Policy:
    """Chooses an action index per (snapshot, layer) from the state. ``begin()`` starts a stream."""

    name = "policy"

    def begin(self) -> None:
        pass

    def choose(self, state: np.ndarray, layer: int) -> int:
        raise NotImplementedError


class StaticPolicy(Policy):
    """The same action index for a layer on every snapshot (``FP32_ACTION`` allowed)."""

    def __init__(self, name: str, actions_per_layer: Sequence[int]) -> None:
        if not actions_per_layer:
            raise ValueError("a static policy needs one action per layer")
        self.name = name
        self.actions = [int(a) for a in actions_per_layer]

    def choose(self, state: np.ndarray, layer: int) -> int:
        if not 0 <= layer < len(self.actions):
            raise ValueError(f"static policy {self.name!r} has {len(self.actions)} layers, asked for layer {layer}")
        return self.actions[layer]


class RandomPolicy(Policy):
    """Uniform over the action space; ``begin()`` reseeds, so each stream sees the same draws."""

    def __init__(self, n_actions: int, seed: int = 0, name: str = "random") -> None:
        if n_actions < 1:
            raise ValueError(f"n_actions must be >= 1, got {n_actions}")
        self.name, self.n_actions, self.seed = name, n_actions, seed
        self.begin()

    def begin(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    def choose(self, state: np.ndarray, layer: int) -> int:
        return int(self._rng.integers(self.n_actions))


class DQNPolicy(Policy):
    """The trained controller, acting greedily on its Q-values, among the actions ``guard`` allows if given
    a ``dste.controller.guard.BudgetGuard`` (bound to the environment the policy runs on).

    ``fallback`` (a policy, e.g. greedy search's plan fitted to each snapshot's budget by
    ``dste.controller.projection.BudgetProjectedPlan``; a list of action indices means that static plan) makes
    it conservative: where the fallback's action is allowed and the best allowed Q-value exceeds the fallback's
    by no more than ``margin``, the fallback's action is taken. The Q-values of a network trained on a dozen
    snapshots are estimates; a gap smaller than their noise is no evidence that leaving a plan that was
    measured to work will pay. ``margin = inf`` acts like the fallback wherever its action fits the budget;
    ``margin = 0`` is the plain greedy DQN (ties go to the fallback).
    """

    def __init__(self, agent, name: str = "dste_dqn", guard=None, fallback=None, margin: float = 0.0) -> None:
        if fallback is not None and not isinstance(fallback, Policy):
            actions = [int(a) for a in fallback]
            if any(not 0 <= a < len(agent.action_space) for a in actions):
                raise ValueError(
                    f"DQNPolicy: fallback actions {actions} must be action indices in [0, {len(agent.action_space)})"
                )
            fallback = StaticPolicy("fallback", actions)
        if not (margin >= 0):  # also refuses NaN
            raise ValueError(f"DQNPolicy: margin must be >= 0 (inf allowed), got {margin!r}")
        self.agent, self.name, self.guard = agent, name, guard
        self.fallback, self.margin = fallback, float(margin)
        self.fallback_taken = 0
        self.decisions = 0

    def begin(self) -> None:
        self.fallback_taken = self.decisions = 0
        if self.fallback is not None:
            self.fallback.begin()

    def choose(self, state: np.ndarray, layer: int) -> int:
        allowed = None if self.guard is None else self.guard.allowed(layer)
        chosen = self.agent.act(state, epsilon=0.0, allowed=allowed)
        self.decisions += 1
        if self.fallback is None:
            return chosen
        conservative = self.fallback.choose(state, layer)
        if not 0 <= conservative < len(self.agent.action_space):
            return chosen  # e.g. FP32_ACTION: outside the network's grid, nothing to compare
        if allowed is not None and not allowed[conservative]:
            return chosen
        q = self.agent.q_values(state)
        if q[chosen] - q[conservative] <= self.margin:
            self.fallback_taken += int(chosen != conservative)
            return conservative
        return chosen


@dataclass
class PolicyResult:
    name: str
    outcomes: list[EpisodeOutcome] = field(default_factory=list)

    def _values(self, attribute: str) -> np.ndarray:
        return np.array([getattr(o, attribute) for o in self.outcomes], dtype=np.float64)

    @property
    def accuracy(self) -> float:
        return float(self._values("accuracy").mean())

    @property
    def latency_us(self) -> float:
        return float(self._values("latency_us").mean())

    @property
    def nbytes(self) -> float:
        return float(self._values("nbytes").mean())

    def rewards(self, reward: RewardConfig) -> np.ndarray:
        return np.array(
            [
                reward.episode_reward(
                    o.accuracy, o.latency_us, o.reference_latency_us, o.budget_fraction, o.nbytes, o.reference_nbytes
                )
                for o in self.outcomes
            ]
        )

    def mean_reward(self, reward: RewardConfig) -> float:
        return float(self.rewards(reward).mean())

    def action_histogram(self, num_layers: int) -> list[dict[int, int]]:
        histogram: list[dict[int, int]] = [{} for _ in range(num_layers)]
        for outcome in self.outcomes:
            for layer, action in enumerate(outcome.actions):
                histogram[layer][action] = histogram[layer].get(action, 0) + 1
        return histogram


def run_episode(env: CompressionEnv, policy: Policy, snapshot: int) -> EpisodeOutcome:
    env.reset(snapshot)
    for layer in range(env.num_layers):
        env.step(layer, policy.choose(env.state(layer), layer))
    return env.outcome()


def run_policy(
    env: CompressionEnv,
    policy: Policy,
    snapshots: Sequence[int],
    progress: bool = False,
    lead_in: Sequence[int] = (),
) -> PolicyResult:
    """Run ``policy`` over ``snapshots`` in order, as one stream (previous masks carried between them).

    ``lead_in``: snapshots the stream passes through first, unscored, so the first scored snapshot sees the
    masks the policy chose on the snapshot before it (the held-out part of a stream continues its training
    part) rather than a cold start. Static policies ignore masks, so it changes only adaptive ones.
    """
    if len(snapshots) == 0:
        raise ValueError("run_policy needs at least one snapshot")
    env.begin_stream()
    policy.begin()
    for snapshot in lead_in:
        run_episode(env, policy, snapshot)
    result = PolicyResult(policy.name)
    for snapshot in tqdm(snapshots, desc=f"eval {policy.name}", disable=not progress, leave=False):
        result.outcomes.append(run_episode(env, policy, snapshot))
    return result


def static_baselines(env: CompressionEnv) -> list[StaticPolicy]:
    """FP32, uniform INT8, static 50 % sparse INT8 and uniform FP16 on this environment's action grid."""
    space, layers = env.action_space, env.num_layers
    return [
        StaticPolicy("fp32", [FP32_ACTION] * layers),
        StaticPolicy("int8", [space.nearest(0.0, 0.0)] * layers),
        StaticPolicy("static_sparse50_int8", [space.nearest(0.5, 0.0)] * layers),
        StaticPolicy("fp16", [space.nearest(0.0, 1.0)] * layers),
    ]


def greedy_search(
    env: CompressionEnv,
    reward: RewardConfig,
    snapshots: Sequence[int],
    rounds: int = 2,
    progress: bool = False,
) -> StaticPolicy:
    """Coordinate ascent over per-layer static actions, maximising the mean reward on ``snapshots``.

    Starts from uniform INT8; each round tries every action for each layer with the others fixed and keeps
    the best (on ties the lower action index wins, so the search is deterministic). The returned policy's
    ``trials`` maps every plan tried (a tuple of actions) to its ``PolicyResult`` on ``snapshots``, so what was
    measured here need not be run again (``dste.controller.projection.plan_values``).
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    space = env.action_space
    actions = [space.nearest(0.0, 0.0)] * env.num_layers
    total = rounds * env.num_layers * len(space)
    trials: dict[tuple[int, ...], PolicyResult] = {}
    with tqdm(total=total, desc="greedy search", disable=not progress, leave=False) as bar:
        for _ in range(rounds):
            changed = False
            for layer in range(env.num_layers):
                scores = []
                for candidate in range(len(space)):
                    trial = list(actions)
                    trial[layer] = candidate
                    if tuple(trial) not in trials:
                        trials[tuple(trial)] = run_policy(env, StaticPolicy("trial", trial), snapshots)
                    scores.append(trials[tuple(trial)].mean_reward(reward))
                    bar.update()
                best = int(np.argmax(scores))
                changed |= best != actions[layer]
                actions[layer] = best
            if not changed:
                break
    policy = StaticPolicy("greedy", actions)
    policy.trials = trials
    return policy
