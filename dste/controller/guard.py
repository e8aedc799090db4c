"""Keeping the controller inside its latency budget: masking the actions that cannot fit.

The reward prices latency above the budget with a steep penalty, and a Q-network learns that kink poorly:
whether an action fits depends on the snapshot's budget and on what the earlier layers already spent, to a
fraction of a percent, and a few training snapshots where a usually-fitting action does not teach the
network to fear it everywhere. The modelled latency, though, is known before an action runs (the cost model
is label-free), so the controller need not guess. ``BudgetGuard.allowed(layer)`` marks the actions of
``layer`` that leave room for the remaining layers at their cheapest; the agent then chooses, explores and
bootstraps only among those. This is the hard-budget rule of AMC (limit the action space so the budget can
still be met) applied as an action mask; the reward keeps its penalty for what the estimate misses.

    allowed(l, a) = spent + latency_l(a) + sum_{k > l} min_b latency_k(b)  <=  budget * reference_latency

If no action fits (the earlier layers already overspent), only the cheapest is allowed.

``latency_table`` may estimate some actions (on the GNN environment, a partly-FP16 action after a compressed
layer: which rows are FP16 depends on that layer's output). ``BudgetGuard.fits`` checks one action at its exact
price (``CompressionEnv.action_latency``) by the same rule, and ``choose`` takes a policy's pick only if it fits,
picking again without it otherwise: a guarded policy (``DQNPolicy``) stays within the budget whatever the table's
error, unless no allowed action fits.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from dste.controller.env import CompressionEnv
from dste.controller.reward import RewardConfig

__all__ = ["BudgetGuard", "budget_slack_us"]

# Relative slack when comparing modelled latencies, so float rounding never turns "equal" into "over".
LATENCY_TOLERANCE = 1e-9


def budget_slack_us(budget_us: float) -> float:
    """Microseconds a latency may exceed ``budget_us`` by and still count as within it (float rounding only)."""
    return LATENCY_TOLERANCE * max(budget_us, 1.0)


class BudgetGuard:
    """Action masks that keep each episode of ``env`` within its latency budget (``reward.budget`` or the
    environment's per-snapshot one)."""

    def __init__(self, env: CompressionEnv, reward: RewardConfig) -> None:
        if not isinstance(env, CompressionEnv):
            raise TypeError(f"env must be a CompressionEnv, got {type(env).__name__}")
        if not isinstance(reward, RewardConfig):
            raise TypeError(f"reward must be a RewardConfig, got {type(reward).__name__}")
        self.env, self.reward = env, reward

    def budget_us(self, snapshot: int) -> float | None:
        """The latency ceiling of ``snapshot`` in microseconds (None when there is no budget)."""
        fraction = self.reward.budget_for(self.env.budget_fraction(snapshot))
        return None if fraction is None else fraction * self.env.reference_latency(snapshot)

    def allowed(self, layer: int) -> np.ndarray | None:
        """bool [n_actions]: the actions of ``layer`` that fit the current episode's budget (None: no budget)."""
        if not 0 <= layer < self.env.num_layers:
            raise ValueError(f"layer must lie in [0, {self.env.num_layers}), got {layer}")
        snapshot = self.env.current_snapshot()
        budget = self.budget_us(snapshot)
        if budget is None:
            return None
        latency = self._table(snapshot, layer)
        mask = latency <= self._room(snapshot, layer, budget)
        if not mask.any():
            mask[int(np.argmin(latency))] = True
        return mask

    def fits(self, layer: int, action: int) -> bool:
        """Whether ``action`` at ``layer`` keeps the current episode within its budget at the action's exact price
        (``CompressionEnv.action_latency``), the later layers at their cheapest; True without a budget."""
        snapshot = self.env.current_snapshot()
        budget = self.budget_us(snapshot)
        if budget is None:
            return True
        return self.env.action_latency(layer, action) <= self._room(snapshot, layer, budget)

    def choose(self, layer: int, pick: Callable[[np.ndarray | None], int]) -> int:
        """``pick(allowed)`` (an action index among the ``allowed`` mask, or any without a budget), confirmed by
        :meth:`fits`: an action that does not fit at its exact price is masked out and ``pick`` asked again. When
        the last allowed action does not fit either, it is taken (as :meth:`allowed` keeps the cheapest when
        nothing fits)."""
        allowed = self.allowed(layer)
        while True:
            action = int(pick(allowed))
            if allowed is None or allowed.sum() <= 1 or self.fits(layer, action):
                return action
            if not allowed[action]:
                raise ValueError(f"pick returned action {action}, which the guard does not allow at layer {layer}")
            allowed = allowed.copy()
            allowed[action] = False

    def cheapest_us(self, snapshot: int, first_layer: int = 0) -> float:
        """The modelled latency of every layer from ``first_layer`` on at its cheapest action on ``snapshot``: with
        ``first_layer`` 0, the least any plan can spend there."""
        return sum(float(self._table(snapshot, k).min()) for k in range(first_layer, self.env.num_layers))

    def _room(self, snapshot: int, layer: int, budget: float) -> float:
        """Microseconds ``layer`` may spend: the budget (with its rounding slack), less what the episode spent and
        the later layers' cheapest actions."""
        return budget - self.env.spent_latency() - self.cheapest_us(snapshot, layer + 1) + budget_slack_us(budget)

    def _table(self, snapshot: int, layer: int) -> np.ndarray:
        try:
            table = np.asarray(self.env.latency_table(snapshot, layer), dtype=np.float64)
        except NotImplementedError as error:
            raise NotImplementedError(
                f"{error}: the budget guard needs CompressionEnv.latency_table; implement it, or train with "
                f"TrainConfig(budget_guard=False)"
            ) from None
        # a NaN price would make every plan unfit (the cheapest action alone allowed), a negative one fit anything
        if table.shape != (len(self.env.action_space),) or not (np.isfinite(table).all() and (table >= 0).all()):
            raise ValueError(
                f"latency_table({snapshot}, {layer}) must hold one finite latency >= 0 per action "
                f"({len(self.env.action_space)}), got shape {table.shape}"
                + ("" if table.shape != (len(self.env.action_space),) else
                   f" with {int((~np.isfinite(table)).sum())} non-finite and {int((table < 0).sum())} negative")
            )
        return table
