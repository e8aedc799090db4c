"""The controller ``dste run`` fits, in one call: the DQN, greedy search's plan fitted to each budget as its
conservative fallback, and the margin by which the Q-values must separate from that plan.

    fitted = fit_controller(env, RewardConfig(budget=0.6))
    run_policy(env, fitted.policy, env.snapshots("heldout"))

Steps, each on the training snapshots only (their labels; the held-out ones are never read):

1. ``train_controller``: a DQN trained with ``dste run``'s schedule (``run_train_config``);
2. ``greedy_search``: the best static plan by coordinate ascent (a baseline, and rule 5's reference);
3. the fallback's plan: greedy search again with the later snapshots weighing more (``RECENCY_HALF_LIFE``), kept
   only where it beats the plain-mean plan by more than a standard error (``prefer_recent_plan``); optionally
   without pruning the cost model calls costless (``costless_pruning``);
4. ``BudgetProjectedPlan``: that plan fitted to each snapshot's budget (label-free), with its one-layer moves' gains
   and their noise (``plan_values``, ``plan_node_errors``);
5. ``calibrate_margin``: the Q-value margin over the fallback with the best training reward (inf: the Q-network never
   overrides it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from dste.controller.actions import costless_pruning
from dste.controller.baselines import (
    DQNPolicy, RecencyChoice, StaticPolicy, greedy_search, prefer_recent_plan, recency_weights,
)
from dste.controller.dqn import DQNConfig
from dste.controller.env import CompressionEnv
from dste.controller.guard import BudgetGuard
from dste.controller.oracle import calibrate_margin
from dste.controller.projection import BudgetProjectedPlan, one_layer_trials, plan_node_errors, plan_values
from dste.controller.reward import RewardConfig
from dste.controller.trainer import TrainConfig, TrainResult, train_controller

__all__ = ["FittedController", "RECENCY_HALF_LIFE", "fit_controller", "run_train_config"]

RECENCY_HALF_LIFE = 4.0
"""Snapshots over which a training snapshot's weight halves when the fallback's plan is chosen (the last weighs most).
Where features drift the held-out snapshots resemble the latest training ones more than the first; where the stream
is steady the weights cost little (about 9 of 12 snapshots' worth of evidence). Measured: bench/README.md, "Controller:
the fitted plan's rules, measured" (guarding the recency-weighted plan)."""


def run_train_config(reward: RewardConfig, episodes: int = 1500, seed: int = 0) -> TrainConfig:
    """``dste run``'s DQN schedule for ``episodes`` episodes."""
    return TrainConfig(
        episodes=episodes,
        normalizer_episodes=min(32, episodes),
        select_every=max(5, episodes // 40),
        # Checkpoints are scored on every training snapshot: with the budget guard in place, holding a quarter
        # of them out of the updates cost more in what the agent learns than it gained in selection.
        selection_snapshots=0,
        dqn=DQNConfig(seed=seed, updates_per_step=2),
        reward=reward,
    )


@dataclass
class FittedController:
    """What ``fit_controller`` built. ``policy`` is the controller; the rest is how it got there."""

    policy: DQNPolicy
    trained: TrainResult
    guard: BudgetGuard
    greedy: StaticPolicy
    recent: StaticPolicy
    plain: StaticPolicy
    plan: StaticPolicy
    recency_choice: RecencyChoice
    projected: BudgetProjectedPlan
    allowed: list | None
    margin: float
    margin_scores: dict


def fit_controller(
    env: CompressionEnv,
    reward: RewardConfig,
    train_ids: Sequence[int] | None = None,
    *,
    episodes: int = 1500,
    seed: int = 0,
    leave_out_costless_pruning: bool = True,
    probe: bool = True,
    fallback: bool = True,
    progress: bool = False,
    stage: Callable[[str], None] | None = None,
) -> FittedController:
    """The controller ``dste run`` reports as "DSTE (DQN)", fitted on ``train_ids`` (default: the environment's
    training snapshots). ``leave_out_costless_pruning``: ``dste run`` sets it for GCN only (measured: it lost on
    GraphSAGE). ``fallback=False``: the plain DQN with the guard (no fallback, margin 0). ``stage``: called with
    each step's name (progress reports)."""
    if not isinstance(reward, RewardConfig):
        raise TypeError(f"reward must be a RewardConfig, got {type(reward).__name__}")
    train_ids = [int(i) for i in (env.snapshots("train") if train_ids is None else train_ids)]
    stage = stage or (lambda _name: None)
    stage("controller training")
    trained = train_controller(env, run_train_config(reward, episodes, seed), progress=progress, snapshots=train_ids)

    stage("greedy search and its fitted plan")
    greedy = greedy_search(env, reward, train_ids, progress=progress)
    guard = BudgetGuard(env, reward)
    # The fallback's plan: greedy search again with the later training snapshots weighing more, since the held-out
    # ones continue the stream (RECENCY_HALF_LIFE); it reuses every plan the search above ran.
    recency = recency_weights(len(train_ids), RECENCY_HALF_LIFE)
    # Leaving out pruning the cost model says saves (next to) nothing on the training snapshots: such an action can
    # only cost accuracy, and the gains it showed there were noise that lost on held-out snapshots (on GCN).
    allowed = None
    if leave_out_costless_pruning:
        allowed = [~costless_pruning(env.action_space, [env.latency_table(s, layer) for s in train_ids])
                   for layer in range(env.num_layers)]
    recent = greedy_search(env, reward, train_ids, weights=recency, measured=greedy.trials, allowed=allowed)
    # The weights trust fewer snapshots than the plain mean does: their plan is kept only where it beats the
    # plain-mean plan (same rule) by more than a standard error on the training snapshots (prefer_recent_plan).
    plain = greedy_search(env, reward, train_ids, measured=recent.trials, allowed=allowed)
    plan, recency_choice = prefer_recent_plan(recent, plain, reward, recency)
    plan_weights = recency if recency_choice.recent_kept else None
    # That plan fitted to each snapshot's budget (label-free): a baseline, and the DQN's fallback.
    neighbours = one_layer_trials(env, plan.actions, train_ids, measured=plain.trials)  # each run once, shared
    values, samples = plan_values(
        env, reward, plan.actions, train_ids, measured=neighbours, per_snapshot=True, weights=plan_weights
    )
    # The node-level noise of each move's gain: the training snapshots share their validation nodes, so a gain over
    # snapshots can be the luck of those few hundred nodes (dste.controller.evidence).
    node_errors = plan_node_errors(env, plan.actions, train_ids, measured=neighbours)
    # Where that plan costs what greedy search's own does and greedy's keeps the budget, greedy's runs: a departure
    # at the same latency only bets on accuracy, and where it loses the baseline dominates (projection, rule 5).
    projected = BudgetProjectedPlan(
        plan.actions, values, guard, samples=samples, probe=probe, node_errors=node_errors,
        baseline_plan=greedy.actions,
    )
    # Whether the check also runs where greedy's plan fits, decided on the labelled training snapshots.
    projected.validate_check(train_ids)
    margin, margin_scores = 0.0, {}
    if fallback:
        # Conservative fallback: keep the projected plan's action unless the Q-values separate from it by more
        # than a margin chosen on the training snapshots (see DQNPolicy and calibrate_margin).
        margin, margin_scores = calibrate_margin(env, trained.agent, guard, projected, reward, train_ids)
    policy = DQNPolicy(trained.agent, guard=guard, fallback=projected if fallback else None, margin=margin)
    return FittedController(
        policy=policy, trained=trained, guard=guard, greedy=greedy, recent=recent, plain=plain, plan=plan,
        recency_choice=recency_choice, projected=projected, allowed=allowed, margin=margin,
        margin_scores=margin_scores,
    )
