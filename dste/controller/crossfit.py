"""How much of the best static plan's lead in hindsight is choosing it on the labels it is scored with.

The best static plan within every budget "in hindsight" (``feasible_static_search`` on the held-out snapshots) is
chosen and scored on the same held-out test labels: among a few thousand plans, the one that suits those labels best
also suits their noise best, so its score is optimistic. ``cross_fitted_static`` splits the held-out test nodes in
two halves (by node id, so a node is in the same half on every snapshot), chooses the best plan within every budget
on one half, scores it on the other, and compares it with the controller scored on the same half; then the halves
swap, over many random splits. A plan chosen on half the labels is chosen less well than one chosen on all, so the
cross-fitted figure understates what the best static plan is truly worth, as the in-sample figure overstates it: the
truth lies between the two.

The same halves also choose a plan per held-out snapshot, among the plans within that snapshot's budget, and score
it on the other half (``per_snapshot_cross_fitted_*``): what adapting the plan to each snapshot is worth once its
choice no longer sees the labels it is scored with, beside the static plan chosen the same way
(``cross_fitted_adaptivity_gain``). Each snapshot's choice sees a third of the labels a static choice over three
snapshots sees, so it is the noisier of the two, and the gain is understated rather than overstated.

The accuracy term is the only part of the reward the labels set (``RewardConfig.episode_reward``: accuracy plus
latency, budget and memory terms), so a plan's reward on a half is its accuracy there plus the same price it pays on
all nodes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import numpy as np

from dste.controller.baselines import PolicyResult, kept_budget
from dste.controller.env import CompressionEnv, EpisodeOutcome
from dste.controller.guard import BudgetGuard
from dste.controller.reward import RewardConfig

__all__ = ["CROSS_FIT_SPLITS", "CrossFit", "cross_fitted_static"]

CROSS_FIT_SPLITS = 50
"""Random halvings of the held-out test nodes; each is scored both ways, so 100 choices per seed."""

MIN_NODES_PER_SNAPSHOT = 20
"""Fewest evaluated nodes a held-out snapshot must have for its halves to hold an accuracy each."""


@dataclass
class CrossFit:
    """Mean reward and accuracy over held-out snapshots (accuracies as fractions)."""

    plans: int  # plans within every budget the choice ranged over
    splits: int  # random halvings scored, each both ways (a halving that left a snapshot's nodes in one half is not)
    in_sample_plan: list[int]  # the best plan within every budget, chosen and scored on every test node
    in_sample_reward: float
    in_sample_accuracy: float
    controller_reward: float  # the controller on every test node
    controller_accuracy: float
    cross_fitted_reward: float  # chosen on one half, scored on the other; mean over splits and halves
    cross_fitted_accuracy: float
    controller_half_reward: float  # the controller on the same scored halves
    controller_half_accuracy: float
    share_halves_static_ahead: float  # of the scored halves, where the chosen plan's reward beats the controller's
    distinct_choices: int  # different plans chosen over all halves
    # the best plan within each snapshot's own budget, chosen per snapshot: on every test node (in sample), and on one
    # half, scored on the other (cross-fitted, the same halves as above); means over the held-out snapshots
    per_snapshot_in_sample_reward: float
    per_snapshot_in_sample_accuracy: float
    per_snapshot_cross_fitted_reward: float
    per_snapshot_cross_fitted_accuracy: float

    @property
    def in_sample_lead(self) -> float:
        return self.in_sample_reward - self.controller_reward

    @property
    def cross_fitted_lead(self) -> float:
        return self.cross_fitted_reward - self.controller_half_reward

    @property
    def cross_fitted_adaptivity_gain(self) -> float:
        """Cross-fitted, the plan chosen per snapshot within its budget minus the static plan within every budget."""
        return self.per_snapshot_cross_fitted_reward - self.cross_fitted_reward

    def to_dict(self) -> dict:
        return {**asdict(self), "in_sample_lead": self.in_sample_lead, "cross_fitted_lead": self.cross_fitted_lead,
                "cross_fitted_adaptivity_gain": self.cross_fitted_adaptivity_gain}


def _checked_outcomes(name: str, result: PolicyResult, snapshots: Sequence[int]) -> list[EpisodeOutcome]:
    outcomes = list(result.outcomes)
    if [o.snapshot for o in outcomes] != [int(n) for n in snapshots]:
        raise ValueError(
            f"cross_fitted_static: {name} must hold one outcome per held-out snapshot {list(snapshots)}, in order; "
            f"got {[o.snapshot for o in outcomes]}"
        )
    for outcome in outcomes:
        if outcome.correct is None or outcome.nodes is None:
            raise ValueError(f"cross_fitted_static: {name}'s outcomes lack the per-node correctness it needs")
    return outcomes


def _price(reward: RewardConfig, outcome: EpisodeOutcome) -> float:
    """The outcome's reward minus its accuracy: what its latency, budget and memory cost it."""
    full = reward.episode_reward(
        outcome.accuracy, outcome.latency_us, outcome.reference_latency_us, outcome.budget_fraction,
        outcome.nbytes, outcome.reference_nbytes,
    )
    return full - float(outcome.accuracy)


def cross_fitted_static(
    env: CompressionEnv,
    reward: RewardConfig,
    snapshots: Sequence[int],
    plans: Mapping[tuple[int, ...], PolicyResult],
    controller: PolicyResult,
    splits: int = CROSS_FIT_SPLITS,
    seed: int = 0,
) -> CrossFit | None:
    """The best static plan within every budget of ``snapshots``, chosen on half the test nodes and scored on the
    other half, against ``controller`` scored on the same half, and the best plan per snapshot within its budget
    chosen the same way (module docstring). ``plans``: static plans run on ``snapshots``; the static choice ranges
    over those within every budget, the per-snapshot one over those within that snapshot's
    (``feasible_static_search(...).trials``: every plan of a two-layer model); ``controller``: the controller's result
    on them. None where no plan fits every budget. Ties in the choice go to the smaller plan tuple, as in
    ``feasible_static_search``."""
    if splits < 1:
        raise ValueError(f"cross_fitted_static: splits must be >= 1, got {splits}")
    snapshots = [int(n) for n in snapshots]
    guard = BudgetGuard(env, reward)
    candidates = sorted(plans)
    ours = _checked_outcomes("the controller's result", controller, snapshots)
    per_plan = [_checked_outcomes(f"plan {list(plan)}", plans[plan], snapshots) for plan in candidates]
    # [plan, snapshot]: whether the plan kept that snapshot's budget; a static choice needs every one
    fits = np.array([[kept_budget(o, guard) for o in outcomes] for outcomes in per_plan], dtype=bool)
    static_rows = np.flatnonzero(fits.all(axis=1))
    if static_rows.size == 0:
        return None
    feasible = [candidates[row] for row in static_rows]
    nodes = [outcome.nodes for outcome in ours]
    for s, snapshot_nodes in enumerate(nodes):
        if snapshot_nodes.size < MIN_NODES_PER_SNAPSHOT:
            raise ValueError(
                f"cross_fitted_static: held-out snapshot {snapshots[s]} evaluates {snapshot_nodes.size} nodes; "
                f"halving needs at least {MIN_NODES_PER_SNAPSHOT}"
            )
        if any(not np.array_equal(outcomes[s].nodes, snapshot_nodes) for outcomes in per_plan):
            raise ValueError(f"cross_fitted_static: the plans evaluate other nodes than the controller on snapshot "
                             f"{snapshots[s]}")
    # [plan, node] correctness per snapshot, the controller as one more row (the last), in float32: a product with a
    # 0/1 mask counts the correct nodes exactly below 2**24 nodes, at half float64's memory (2,305 rows x 48k test
    # nodes is 0.4 GB a snapshot at arxiv scale)
    correct = [np.stack([o[s].correct for o in per_plan] + [ours[s].correct]).astype(np.float32)
               for s in range(len(snapshots))]
    price = np.array([[_price(reward, o[s]) for s in range(len(snapshots))] for o in per_plan]
                     + [[_price(reward, o) for o in ours]])

    def per_snapshot(masks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """[plan + 1, snapshot] (reward, accuracy) on the masked nodes of each snapshot."""
        accuracy = np.stack(
            [(c @ m.astype(np.float32)).astype(np.float64) / np.count_nonzero(m) for c, m in zip(correct, masks)],
            axis=1,
        )
        return accuracy + price, accuracy

    def static_choice(rewards: np.ndarray) -> int:
        """Row of the plan within every budget with the best mean reward (ties: the smaller plan tuple)."""
        return int(static_rows[np.argmax(rewards[static_rows].mean(axis=1))])

    def adaptive_choices(rewards: np.ndarray) -> np.ndarray:
        """Per snapshot, the row of the plan within that snapshot's budget with the best reward there."""
        return np.argmax(np.where(fits, rewards[:-1], -np.inf), axis=0)

    columns = np.arange(len(snapshots))
    full_reward, full_accuracy = per_snapshot([np.ones(n.size, dtype=bool) for n in nodes])
    best = static_choice(full_reward)
    adaptive = adaptive_choices(full_reward)
    every_id = np.unique(np.concatenate(nodes))
    rng = np.random.default_rng(seed)
    chosen_rewards, chosen_accuracies, our_rewards, our_accuracies, choices = [], [], [], [], set()
    adaptive_rewards, adaptive_accuracies = [], []
    for _ in range(splits):
        first_half = rng.permutation(every_id)[: every_id.size // 2]
        in_first = [np.isin(n, first_half) for n in nodes]
        in_second = [~m for m in in_first]
        if any(not m.any() for m in in_first + in_second):
            continue  # a snapshot whose nodes all fell in one half: no accuracy on the other
        first, second = per_snapshot(in_first), per_snapshot(in_second)
        for (reward_chosen_on, _), (reward_scored, accuracy_scored) in ((first, second), (second, first)):
            choice = static_choice(reward_chosen_on)
            chosen_rewards.append(reward_scored[choice].mean())
            chosen_accuracies.append(accuracy_scored[choice].mean())
            our_rewards.append(reward_scored[-1].mean())
            our_accuracies.append(accuracy_scored[-1].mean())
            choices.add(candidates[choice])
            rows = adaptive_choices(reward_chosen_on)
            adaptive_rewards.append(reward_scored[rows, columns].mean())
            adaptive_accuracies.append(accuracy_scored[rows, columns].mean())
    if not chosen_rewards:
        raise ValueError("cross_fitted_static: no split left nodes of every held-out snapshot in both halves")
    chosen, ours_scored = np.array(chosen_rewards), np.array(our_rewards)
    return CrossFit(
        plans=len(feasible),
        splits=len(chosen_rewards) // 2,
        in_sample_plan=list(candidates[best]),
        in_sample_reward=float(full_reward[best].mean()),
        in_sample_accuracy=float(full_accuracy[best].mean()),
        controller_reward=float(full_reward[-1].mean()),
        controller_accuracy=float(full_accuracy[-1].mean()),
        cross_fitted_reward=float(chosen.mean()),
        cross_fitted_accuracy=float(np.mean(chosen_accuracies)),
        controller_half_reward=float(ours_scored.mean()),
        controller_half_accuracy=float(np.mean(our_accuracies)),
        share_halves_static_ahead=float(np.mean(chosen > ours_scored)),
        distinct_choices=len(choices),
        per_snapshot_in_sample_reward=float(full_reward[adaptive, columns].mean()),
        per_snapshot_in_sample_accuracy=float(full_accuracy[adaptive, columns].mean()),
        per_snapshot_cross_fitted_reward=float(np.mean(adaptive_rewards)),
        per_snapshot_cross_fitted_accuracy=float(np.mean(adaptive_accuracies)),
    )
