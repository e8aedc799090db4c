"""What the best static choice is, per snapshot and over a stream, and how far a conservative controller may
leave it.

* ``snapshot_oracle`` -- per snapshot, the static per-layer action greedy search finds on that snapshot alone
  (with the labels of the snapshot it is scored on: an oracle, not a policy), or the best plan within the
  snapshot's latency budget. Where its choice changes between snapshots, no single static action is best
  throughout, and an adaptive controller has room to win.
* ``static_sweep`` -- every uniform action (the same on every layer) and FP32, run on the same snapshots: the
  static points of the accuracy / latency / memory frontier.
* ``pareto_front`` -- the points no other point beats in accuracy and cost at once.
* ``calibrate_margin`` -- the fallback margin of ``DQNPolicy`` chosen by reward on the training snapshots.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from dste.controller.baselines import (
    DQNPolicy, PolicyResult, StaticPolicy, feasible_static_search, greedy_search, run_policy,
)
from dste.controller.env import FP32_ACTION, CompressionEnv
from dste.controller.reward import RewardConfig

__all__ = [
    "OracleChoice", "snapshot_oracle", "snapshot_oracles", "static_sweep", "pareto_front", "calibrate_margin",
    "FALLBACK_MARGINS",
]

FALLBACK_MARGINS = (0.0, 0.002, 0.005, 0.01, 0.02, float("inf"))
"""Candidate Q-value margins: 0.002 of reward is one validation node of 500 (0.2 accuracy points)."""


@dataclass
class OracleChoice:
    snapshot: int
    actions: list[int]
    labels: list[str]
    reward: float
    accuracy: float
    latency_us: float


def snapshot_oracle(
    env: CompressionEnv,
    reward: RewardConfig,
    snapshots: Sequence[int],
    rounds: int = 2,
    within_budget: bool = False,
    measured: Mapping[tuple[int, ...], PolicyResult] | None = None,
) -> list[OracleChoice | None]:
    """Per snapshot, the best static per-layer actions greedy search finds on that snapshot alone.

    ``within_budget``: instead, the best plan within the snapshot's latency budget as ``BudgetGuard`` enforces it
    (``feasible_static_search`` on that snapshot: every plan of a two-layer model), None where no plan fits. The
    reward's soft budget penalty lets greedy's plan overspend by a little where its accuracy is worth more; a
    controller that keeps every budget is bounded by this one. ``measured``: as in ``snapshot_oracles``."""
    greedy, fitting = snapshot_oracles(env, reward, snapshots, rounds, within_budget=within_budget, measured=measured)
    return fitting if within_budget else greedy


def snapshot_oracles(
    env: CompressionEnv,
    reward: RewardConfig,
    snapshots: Sequence[int],
    rounds: int = 2,
    within_budget: bool = True,
    measured: Mapping[tuple[int, ...], PolicyResult] | None = None,
) -> tuple[list[OracleChoice], list[OracleChoice | None] | None]:
    """Both of ``snapshot_oracle``'s choices per snapshot from one greedy search on it: greedy's plan, and (with
    ``within_budget``; else None) the best plan within the snapshot's budget, None where no plan fits.

    ``measured``: static plans already run on ``snapshots`` in this order (e.g. ``feasible_static_search(...).trials``
    on the same snapshots); each snapshot's searches take a plan's episode on it from there instead of running it
    again. A static plan's episode depends only on the snapshot and the plan, not on the stream around it."""
    greedy_choices: list[OracleChoice] = []
    fitting_choices: list[OracleChoice | None] | None = [] if within_budget else None
    for position, snapshot in enumerate(snapshots):
        reused = _episodes_on(measured or {}, position, int(snapshot))
        policy = greedy_search(env, reward, [int(snapshot)], rounds=rounds, measured=reused)
        greedy_choices.append(_oracle_choice(env, reward, int(snapshot), policy))
        if within_budget:
            fitting = feasible_static_search(env, reward, [int(snapshot)], policy, rounds=rounds)
            fitting_choices.append(None if fitting is None else _oracle_choice(env, reward, int(snapshot), fitting))
    return greedy_choices, fitting_choices


def _episodes_on(
    measured: Mapping[tuple[int, ...], PolicyResult], position: int, snapshot: int
) -> dict[tuple[int, ...], PolicyResult]:
    """Each plan of ``measured`` as a result of its one episode on ``snapshot``, the ``position``-th it ran."""
    episodes = {}
    for plan, result in measured.items():
        if position >= len(result.outcomes) or result.outcomes[position].snapshot != snapshot:
            raise ValueError(f"measured plan {list(plan)} did not run snapshot {snapshot} at position {position} of "
                             f"its episodes: pass results of the same snapshots, in the same order")
        episodes[plan] = PolicyResult(result.name, [result.outcomes[position]])
    return episodes


def _oracle_choice(env: CompressionEnv, reward: RewardConfig, snapshot: int, policy: StaticPolicy) -> OracleChoice:
    episode_result = run_policy(env, policy, [snapshot])
    episode = episode_result.outcomes[0]
    return OracleChoice(
        snapshot, list(policy.actions), [env.action_space[a].label() for a in policy.actions],
        float(episode_result.mean_reward(reward)), float(episode.accuracy), float(episode.latency_us),
    )


def static_sweep(env: CompressionEnv, snapshots: Sequence[int], reward: RewardConfig, lead_in=()) -> list[dict]:
    """FP32 and every uniform action on ``snapshots``: mean accuracy, modelled latency, bytes and reward."""
    rows = []
    for action in [FP32_ACTION, *range(len(env.action_space))]:
        policy = StaticPolicy("fp32" if action < 0 else env.action_space[action].label(), [action] * env.num_layers)
        result = run_policy(env, policy, snapshots, lead_in=lead_in)
        rows.append({
            "name": policy.name, "action": action, "accuracy": result.accuracy, "latency_us": result.latency_us,
            "bytes": result.nbytes, "reward": result.mean_reward(reward),
        })
    return rows


LATENCY_TIE_US = 1e-3
"""Modelled latencies closer than this (1 ns) are the same: plans that price the same tiles differ by float rounding
(6e-7 us between two GraphSAGE plans of one stream), which must neither make nor break a domination."""


def _check_front_inputs(where: str, points, cost_tie: float) -> None:
    """Refuse a cost tie that is not a finite number >= 0 and a point that is not finite: a NaN compares False both
    ways, so it would be dominated by nothing and sit on every front."""
    if not (np.isfinite(cost_tie) and cost_tie >= 0):
        raise ValueError(f"cost_tie must be a finite number >= 0, got {cost_tie!r}")
    if not all(np.isfinite(float(v)) for point in points for v in point):
        raise ValueError(f"{where}: points must be finite (cost, accuracy), got {list(points)!r}")


def dominates(
    challenger: tuple[float, float], incumbent: tuple[float, float], cost_tie: float = LATENCY_TIE_US
) -> bool:
    """Whether the (cost, accuracy) point ``challenger`` Pareto-dominates ``incumbent``: no costlier (within
    ``cost_tie``) and no less accurate, and either cheaper by more than ``cost_tie`` or more accurate. A plan at the
    same latency with 0.07 points more accuracy dominates; an identical one does not."""
    _check_front_inputs("dominates", [challenger, incumbent], cost_tie)
    cost, accuracy = (float(v) for v in challenger)
    cost_incumbent, accuracy_incumbent = (float(v) for v in incumbent)
    no_worse = cost <= cost_incumbent + cost_tie and accuracy >= accuracy_incumbent
    return bool(no_worse and (cost < cost_incumbent - cost_tie or accuracy > accuracy_incumbent))


def pareto_front(points: Sequence[tuple[float, float]], cost_tie: float = LATENCY_TIE_US) -> list[int]:
    """Indices of the (cost, accuracy) points no other point dominates (``dominates``, with the same ``cost_tie``:
    costs within it are equal, so float rounding cannot put a point on or off the front), sorted by cost."""
    points = [(float(c), float(a)) for c, a in points]
    _check_front_inputs("pareto_front", points, cost_tie)  # with fewer than two points dominates is never asked
    front = [i for i, point in enumerate(points)
             if not any(dominates(other, point, cost_tie=cost_tie) for j, other in enumerate(points) if j != i)]
    return sorted(front, key=lambda i: points[i])


def calibrate_margin(
    env: CompressionEnv,
    agent,
    guard,
    fallback,
    reward: RewardConfig,
    snapshots: Sequence[int],
    margins: Sequence[float] = FALLBACK_MARGINS,
    min_gain: float = 0.02,
) -> tuple[float, dict]:
    """The margin of ``DQNPolicy(agent, guard=guard, fallback=fallback, margin=...)`` with the best mean reward on
    ``snapshots``; unless some margin beats the most conservative one (the last) by more than ``min_gain``, the
    most conservative wins. Returns (margin, scores). ``fallback``: a policy or a list of static actions (see
    ``DQNPolicy``).

    Why 0.02 (10 validation nodes of 500): the snapshots scored here are the ones the agent trained on, so its
    gains on them are optimistic. Measured with ``dste run`` (3 seeds, 600 episodes, 12 snapshots; cora-like
    steady and bursty, a CiteSeer-sized CSBM; trn2 cost model), every seed whose training gain over the static
    fallback was 0.002-0.005 lost to greedy search on the held-out snapshots (by 0.002-0.032 of reward), and
    every seed that kept the fallback tied or beat it."""
    if not margins:
        raise ValueError("calibrate_margin: margins must name at least one candidate")
    if isinstance(min_gain, bool) or not (np.isfinite(min_gain) and min_gain >= 0):  # NaN never kept the fallback
        raise ValueError(f"calibrate_margin: min_gain must be a finite number >= 0, got {min_gain!r}")
    scores = {}
    for margin in margins:
        policy = DQNPolicy(agent, guard=guard, fallback=fallback, margin=margin)
        scores[float(margin)] = run_policy(env, policy, snapshots).mean_reward(reward)
    conservative = float(margins[-1])
    best = max(scores, key=lambda m: (scores[m], m))
    if scores[best] - scores[conservative] <= min_gain:
        best = conservative
    return best, scores
