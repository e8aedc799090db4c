"""Latency budgets set per snapshot as a fraction of the FP32 model's modelled latency.

``BudgetScheduleEnv`` wraps any ``CompressionEnv`` and replaces its goal's latency ceiling by

    budget_us(n) = fraction(n) * fp32_latency_us(n)

expressed, as the reward and the guard expect, as a fraction of the environment's reference latency
(uniform INT8). ``fraction`` is a constant (``dste run --budget 0.33fp32``: the seed paper's "3x lower latency
than FP32" operating point), ``int8_multiple_budget``'s per-snapshot multiples of uniform INT8's latency
(``dste.data.stream``'s ``budget_cycle``: a service whose latency target moves with its load) or
``microsecond_budget``'s budget in microseconds per snapshot (``budget_slo``: a latency objective that a burst or
growth of the graph spends, re-provisioned every ``slo_refresh_every`` snapshots or never; ``fixed_budget`` is the
never-refreshed case). The budget is label-free: every latency comes from the cost model.

The wrapped environment's state carries its own budget; the wrapper rewrites the state's
``latency_budget_left`` feature so the controller sees the budget it is judged against.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from dste.controller.env import CompressionEnv, EpisodeOutcome, LayerReport
from dste.controller.state import FEATURE_CLIP, FEATURE_NAMES

__all__ = ["BudgetScheduleEnv", "fixed_budget", "int8_multiple_budget", "microsecond_budget"]

_BUDGET_LEFT = FEATURE_NAMES.index("latency_budget_left")


def fixed_budget(budget_us: float, fp32_latency_us: Callable[[int], float]) -> Callable[[int], float]:
    """The schedule of one latency budget of ``budget_us`` microseconds on every snapshot (a service's fixed
    latency objective, ``StreamParams.budget_slo``), as the fraction of each snapshot's FP32 latency it is."""
    budget_us = float(budget_us)
    if not (np.isfinite(budget_us) and budget_us > 0):
        raise ValueError(f"fixed_budget: the latency budget must be > 0 us, got {budget_us!r}")
    return microsecond_budget(lambda snapshot: budget_us, fp32_latency_us)


def microsecond_budget(
    budget_us: Callable[[int], float], fp32_latency_us: Callable[[int], float]
) -> Callable[[int], float]:
    """The schedule of a latency budget given in microseconds per snapshot (``StreamParams.budget_slo``, re-provisioned
    every ``slo_refresh_every`` snapshots or never), as the fraction of each snapshot's FP32 latency it is."""

    def fraction_of_fp32(snapshot: int) -> float:
        value = float(budget_us(snapshot))
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"microsecond_budget: snapshot {snapshot}'s latency budget must be > 0 us, got {value!r}")
        return value / float(fp32_latency_us(snapshot))

    return fraction_of_fp32


def int8_multiple_budget(
    multiple: Callable[[int], float | None],
    int8_latency_us: Callable[[int], float],
    fp32_latency_us: Callable[[int], float],
) -> Callable[[int], float | None]:
    """The schedule of a budget of ``multiple(n)`` times uniform INT8's modelled latency on each snapshot n (a
    service whose latency target moves with its load, ``StreamParams.budget_cycle``), as the fraction of the
    snapshot's FP32 latency it is. Set against INT8 rather than FP32, a multiple below 1 binds on every graph whose
    plans can cut below INT8's latency; a fraction of FP32 need not bind at all (on Cora 60 % of FP32 sits above
    uniform INT8's latency)."""

    def fraction_of_fp32(snapshot: int) -> float | None:
        factor = multiple(snapshot)
        if factor is None:
            return None
        factor = float(factor)
        if not (np.isfinite(factor) and factor > 0):
            raise ValueError(f"int8_multiple_budget: snapshot {snapshot}'s multiple must be > 0, got {factor!r}")
        return factor * float(int8_latency_us(snapshot)) / float(fp32_latency_us(snapshot))

    return fraction_of_fp32


class BudgetScheduleEnv(CompressionEnv):
    """``env`` with the latency budget of snapshot n = ``fraction_of_fp32(n)`` x ``fp32_latency_us(n)``.

    fraction_of_fp32: a positive float, or a callable snapshot -> positive float (or None: no budget there).
    fp32_latency_us:  callable snapshot -> modelled latency (us) of the uncompressed model on it.
    """

    def __init__(
        self,
        env: CompressionEnv,
        fraction_of_fp32: "float | Callable[[int], float | None]",
        fp32_latency_us: Callable[[int], float],
    ) -> None:
        if not isinstance(env, CompressionEnv):
            raise TypeError(f"BudgetScheduleEnv: env must be a CompressionEnv, got {type(env).__name__}")
        if not callable(fp32_latency_us):
            raise TypeError("BudgetScheduleEnv: fp32_latency_us must be a callable snapshot -> microseconds")
        if not callable(fraction_of_fp32):
            constant = float(fraction_of_fp32)
            if not (np.isfinite(constant) and constant > 0):
                raise ValueError(
                    f"BudgetScheduleEnv: fraction_of_fp32 must be a positive fraction of the FP32 latency, "
                    f"got {fraction_of_fp32!r}"
                )
            fraction_of_fp32 = lambda snapshot, value=constant: value  # noqa: E731
        self.env = env
        self.action_space = env.action_space
        self.num_layers = env.num_layers
        self._fraction = fraction_of_fp32
        self._fp32 = fp32_latency_us
        self._fp32_cache: dict[int, float] = {}

    def __getattr__(self, name):
        # Everything beyond the protocol (layers, graphs, forward_ops, variant, ...) is the wrapped env's.
        if name == "env":
            raise AttributeError(name)
        return getattr(self.env, name)

    # ------------------------------------------------------------------ the goal
    def fp32_latency(self, snapshot: int) -> float:
        if snapshot not in self._fp32_cache:
            value = float(self._fp32(snapshot))
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"BudgetScheduleEnv: FP32 latency of snapshot {snapshot} must be > 0 us, got {value}")
            self._fp32_cache[snapshot] = value
        return self._fp32_cache[snapshot]

    def budget_of_fp32(self, snapshot: int) -> float | None:
        """The budget of ``snapshot`` as a fraction of its FP32 latency (None: no budget on it)."""
        fraction = self._fraction(snapshot)
        if fraction is None:
            return None
        fraction = float(fraction)
        if not (np.isfinite(fraction) and fraction > 0):
            raise ValueError(f"BudgetScheduleEnv: budget of snapshot {snapshot} must be a positive fraction, got {fraction}")
        return fraction

    def budget_fraction(self, snapshot: int) -> float | None:
        fraction = self.budget_of_fp32(snapshot)
        if fraction is None:
            return None
        return fraction * self.fp32_latency(snapshot) / self.env.reference_latency(snapshot)

    # ------------------------------------------------------------------ protocol, delegated
    def snapshots(self, split: str):
        return self.env.snapshots(split)

    def begin_stream(self) -> None:
        self.env.begin_stream()

    def reset(self, snapshot: int) -> None:
        self.env.reset(snapshot)

    def state(self, layer: int) -> np.ndarray:
        state = np.array(self.env.state(layer), dtype=np.float32, copy=True)
        snapshot = self.env.current_snapshot()
        budget = self.budget_fraction(snapshot)
        spent = self.env.spent_latency() / self.env.reference_latency(snapshot)
        left = (1.0 if budget is None else budget) - spent
        state[_BUDGET_LEFT] = float(np.clip(left, -FEATURE_CLIP, FEATURE_CLIP))
        return state

    def step(self, layer: int, action: int) -> LayerReport:
        return self.env.step(layer, action)

    def outcome(self) -> EpisodeOutcome:
        outcome = self.env.outcome()
        outcome.budget_fraction = self.budget_fraction(outcome.snapshot)
        return outcome

    def reference_latency(self, snapshot: int) -> float:
        return self.env.reference_latency(snapshot)

    def current_snapshot(self) -> int:
        return self.env.current_snapshot()

    def spent_latency(self) -> float:
        return self.env.spent_latency()

    def latency_table(self, snapshot: int, layer: int) -> np.ndarray:
        return self.env.latency_table(snapshot, layer)

    def action_latency(self, layer: int, action: int) -> float:
        # the exact price where the wrapped env's table only estimates it: BudgetGuard.fits confirms actions with it
        return self.env.action_latency(layer, action)

    def agreement(self, snapshot: int, actions) -> float:
        return self.env.agreement(snapshot, actions)
