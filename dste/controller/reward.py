"""The controller's reward: accuracy minus a latency price, with optional latency and memory budgets.

For one snapshot compressed with per-layer actions a_1..a_L, the episode reward is

    R = accuracy - lambda_latency * (latency / reference_latency)
                 - budget_penalty * max(0, latency / reference_latency - budget)

* ``accuracy`` -- the fraction of labelled held-aside nodes (the validation split of the snapshot) the
  compressed model classifies correctly, in [0, 1].
* ``latency`` -- the modelled NeuronCore latency (trn2) of the layer's kernels under the chosen actions,
  summed over layers. It is a model, never a measurement; see ``dste.kernels.cost``.
* ``reference_latency`` -- the modelled latency of the same snapshot with no pruning and all-INT8 values
  (uniform INT8). Normalising by it makes lambda dimensionless and the same across graph sizes:
  ``lambda_latency = 0.05`` means "removing all of the uniform-INT8 latency is worth 5 accuracy points".
* ``budget`` (optional) -- a latency ceiling as a fraction of the reference; exceeding it costs
  ``budget_penalty`` per unit of normalised latency, the hard-budget mode of AMC/HAQ made soft so the
  Q-function stays smooth. An environment may instead give each snapshot its own budget
  (``CompressionEnv.budget_fraction``), e.g. what a static policy being replaced would spend on it; the
  controller sees the budget left in its state.
* ``memory_budget`` (optional) -- a ceiling on the footprint (graph, features, weights, activations) as a
  fraction of the reference footprint (uniform INT8 on the same snapshot); each unit above it costs
  ``memory_penalty``. With ``memory_budget = 1`` a policy may buy accuracy with FP16 only where pruning
  pays for the bytes.

    R -= memory_penalty * max(0, nbytes / reference_nbytes - memory_budget)

The reward is paid per layer so that credit lands where latency is spent: each layer step pays
``-lambda * layer_latency / reference`` and the last step adds ``accuracy`` and the budget penalty. With an
undiscounted return the sum is exactly R above.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["RewardConfig"]


@dataclass(frozen=True)
class RewardConfig:
    lambda_latency: float = 0.05
    budget: float | None = None
    budget_penalty: float = 1.0
    memory_budget: float | None = None
    memory_penalty: float = 1.0

    def __post_init__(self) -> None:
        for name in ("lambda_latency", "budget", "budget_penalty", "memory_budget", "memory_penalty"):
            value = getattr(self, name)
            optional = name in ("budget", "memory_budget")
            if isinstance(value, (bool, np.bool_)) or not ((optional and value is None) or isinstance(value, numbers.Real)):
                raise TypeError(f"{name} must be a number{' or None' if optional else ''}, got {value!r}")
            if isinstance(value, np.generic):
                object.__setattr__(self, name, float(value))  # a NumPy scalar as the float it is
        if not math.isfinite(self.lambda_latency) or self.lambda_latency < 0:
            raise ValueError(f"lambda_latency must be a finite number >= 0, got {self.lambda_latency!r}")
        if self.budget is not None and (not math.isfinite(self.budget) or self.budget <= 0):
            raise ValueError(f"budget must be None or a positive fraction of the reference, got {self.budget!r}")
        if not math.isfinite(self.budget_penalty) or self.budget_penalty < 0:
            raise ValueError(f"budget_penalty must be a finite number >= 0, got {self.budget_penalty!r}")
        if self.memory_budget is not None and (not math.isfinite(self.memory_budget) or self.memory_budget <= 0):
            raise ValueError(
                f"memory_budget must be None or a positive fraction of the reference footprint, got {self.memory_budget!r}"
            )
        if not math.isfinite(self.memory_penalty) or self.memory_penalty < 0:
            raise ValueError(f"memory_penalty must be a finite number >= 0, got {self.memory_penalty!r}")

    def layer_reward(self, layer_latency_us: float, reference_latency_us: float) -> float:
        """The latency price paid by one layer step."""
        _check_latencies(layer_latency_us, reference_latency_us)
        return -self.lambda_latency * layer_latency_us / reference_latency_us

    def budget_for(self, snapshot_budget: float | None) -> float | None:
        """The latency budget (fraction of the reference) that applies: a snapshot's own, else ``self.budget``."""
        budget = self.budget if snapshot_budget is None else snapshot_budget
        # a bool is refused by name: True passed the finite and positive checks as 1.0
        if budget is not None and (isinstance(budget, bool) or not math.isfinite(budget) or budget <= 0):
            raise ValueError(f"budget must be a positive fraction of the reference, got {budget!r}")
        return budget

    def terminal_reward(
        self,
        accuracy: float,
        latency_us: float,
        reference_latency_us: float,
        budget: float | None = None,
        nbytes: float | None = None,
        reference_nbytes: float | None = None,
    ) -> float:
        """Paid on the last layer step: the accuracy term and the budget penalties.

        ``budget`` overrides ``self.budget`` for this snapshot (an environment may set one per snapshot).
        ``nbytes`` / ``reference_nbytes``: the episode's footprint and the reference's, needed (only) when a
        memory budget is set.
        """
        if not (0.0 <= accuracy <= 1.0):
            raise ValueError(f"accuracy must lie in [0, 1], got {accuracy!r}")
        _check_latencies(latency_us, reference_latency_us)
        reward = float(accuracy)
        budget = self.budget_for(budget)
        if budget is not None:
            reward -= self.budget_penalty * max(0.0, latency_us / reference_latency_us - budget)
        if self.memory_budget is not None:
            if nbytes is None or reference_nbytes is None:
                raise ValueError("a memory budget needs the episode's nbytes and the reference_nbytes")
            if not (math.isfinite(nbytes) and nbytes >= 0 and math.isfinite(reference_nbytes) and reference_nbytes > 0):
                raise ValueError(
                    f"nbytes must be finite and >= 0 and reference_nbytes finite and > 0, got {nbytes!r}, "
                    f"{reference_nbytes!r}"
                )
            reward -= self.memory_penalty * max(0.0, nbytes / reference_nbytes - self.memory_budget)
        return reward

    def episode_reward(
        self,
        accuracy: float,
        latency_us: float,
        reference_latency_us: float,
        budget: float | None = None,
        nbytes: float | None = None,
        reference_nbytes: float | None = None,
    ) -> float:
        """R for a whole snapshot (the sum of the per-step rewards)."""
        terminal = self.terminal_reward(accuracy, latency_us, reference_latency_us, budget, nbytes, reference_nbytes)
        return terminal + self.layer_reward(latency_us, reference_latency_us)

    def to_dict(self) -> dict:
        return asdict(self)


def _check_latencies(latency_us: float, reference_latency_us: float) -> None:
    if not math.isfinite(latency_us) or latency_us < 0:
        raise ValueError(f"latency must be a finite number >= 0 microseconds, got {latency_us!r}")
    if not math.isfinite(reference_latency_us) or reference_latency_us <= 0:
        raise ValueError(f"reference latency must be a positive finite number, got {reference_latency_us!r}")
