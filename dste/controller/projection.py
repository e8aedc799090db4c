"""A static plan fitted to each snapshot's latency budget: the controller's conservative fallback.

A static per-layer plan (greedy search's) is chosen on the training snapshots' rewards, so it fits their budgets on
average, not every held-out snapshot's: when a later snapshot grows, the plan runs over its budget. The modelled
latency of every action is known before it runs (``CompressionEnv.latency_table``, label-free), so the plan is
re-fitted per snapshot without labels:

    choose a_1..a_L  maximising  sum_l value_l(a_l)
                     subject to  spent + sum_l latency_l(a_l) <= budget * reference_latency

``value_l(a)`` (``plan_values``) is the mean reward on the training snapshots of the plan with layer l changed to
``a``, the other layers at the plan, with the budget penalty left out: the constraint enforces the budget exactly, so
the value should say what an action is worth, not how often it happened to overspend on training snapshots. Summing
per-layer values ignores how a change in one layer alters what the next is worth, so the rules below trust the sum
only as far as a measurement backs it:

1. Measured plans first. While the episode follows the plan it moves only among plans whose value was measured as
   it is (the plan and the plans one layer away), takes the most valuable of those that fits, and leaves a plan that
   fits only for a gain that averages more than ``min_gain_z`` standard errors above zero over the training
   snapshots. A move to an action that compresses as much or more (``compresses_at_least``) must also beat the
   error over the snapshots' evaluation nodes (``dste.controller.evidence``): it can be more accurate than the plan
   only by what its re-fitted rows make up or by luck, and the training snapshots share their validation nodes, so
   luck repeats on every one of them. A move that keeps more of the layer is not held to it.
2. The sum where no measured plan fits. Where no plan one change away fits (or the episode already left the plan),
   the summed values choose; where nothing fits (the earlier layers already overspent), the cheapest action is
   taken, as ``BudgetGuard`` does. Without a budget the plan itself is returned.
3. A label-free check on the snapshot (``probe``). Rule 1 keeps out of reach the plans two changes away, whose value
   is only a sum; where a snapshot differs from the training ones, one of them can be what fits its budget best. On
   a snapshot whose budget greedy's plan overspends (by the latency tables), the plans within its budget that change
   two layers or more and whose summed values exceed the fitted plan's, or fall short of it by less than a standard
   error of the paired difference over the training snapshots (the ``probe_plans`` most valuable of them), are run
   on it, and the most valuable one whose predictions agree with the uncompressed model's on more of the snapshot's
   nodes than the fitted plan's, by over ``PROBE_MIN_AGREEMENT_GAIN``, replaces it (``CompressionEnv.agreement``
   compares predictions with predictions, no labels). The sum says the plan should be worth as much; the snapshot
   confirms that it departs less from the uncompressed model, where an interaction the sum ignores would show as
   more departure. On a device that is a handful of compressed inferences and one FP32 inference per snapshot. Where
   a later layer's exact price leaves the chosen plan out of budget, rules 1 and 2 decide.
4. The check where greedy's plan fits only where it has gained (``validate_check``). There greedy's plan was measured
   as a whole, and agreement with the uncompressed model points to more accurate plans for some models and streams
   and away from them for others. The check is replayed on each labelled training snapshot whose budget greedy's plan
   fits, with the other training snapshots' values (leave one out: a snapshot's own labels choose no candidate); it
   runs where greedy's plan fits only if the reward it gained there averages more than ``min_gain_z`` standard errors
   (over snapshots or over nodes, the larger) above zero.
5. At the same latency, greedy search's own plan (``baseline_plan``). The plan these rules start from is greedy
   search's under rules of the caller's (``dste.experiments.pipeline``: no pruning the cost model calls costless,
   recency weights), and on a snapshot where the plan they arrive at costs what greedy search's plan costs (within
   ``SAME_LATENCY_SHARE`` of its modelled latency) while that plan keeps the budget, the departure saves nothing and
   only bets on accuracy: where the bet loses, greedy search, a baseline anyone can run, is as fast and more
   accurate. There the episode runs greedy search's plan, so the controller leaves it only to save latency or to
   spend latency for accuracy the training snapshots back (rule 1). Replayed on the recorded held-out snapshots of
   70 runs, this gave up 1.39 points summed over the 21 it changed and left a budget-keeping baseline dominating 2
   runs instead of 6 (bench/README.md, "Controller: greedy search's plan at the same latency").

The measurements behind each rule (an exhaustive table of every plan against the summed values, and the runs where
each rule, left out or loosened, lost accuracy): ``bench/README.md``, "Controller: the fitted plan's rules, measured".
"""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Mapping, Sequence

import numpy as np

from dste.controller.baselines import Policy, PolicyResult, StaticPolicy, check_measured_on, run_policy
from dste.controller.actions import COSTLESS_MIN_SAVING, compresses_at_least
from dste.controller.env import CompressionEnv
from dste.controller.evidence import node_error, snapshot_error
from dste.controller.guard import BudgetGuard, budget_slack_us
from dste.controller.reward import RewardConfig

__all__ = [
    "BudgetProjectedPlan", "MOVE_MIN_GAIN_Z", "PROBE_MIN_AGREEMENT_GAIN", "PROBE_PLANS", "SAME_LATENCY_SHARE",
    "one_layer_trials", "plan_node_errors", "plan_values",
]

MOVE_MIN_GAIN_Z = 1.0
"""Standard errors (over the training snapshots) by which moving away from a plan that fits must gain."""

PROBE_MIN_AGREEMENT_GAIN = 0.01
"""Share of the snapshot's nodes by which a more valuable plan must agree with the uncompressed model more than the
fitted plan does to replace it (module docstring): two plans' agreements move by about a point between snapshots."""

PROBE_PLANS = 10
"""Most plans more valuable than the fitted one whose agreement is measured per snapshot."""

SAME_LATENCY_SHARE = COSTLESS_MIN_SAVING
"""Share of greedy search's plan's modelled latency within which another plan counts as costing the same (rule 5 of
the module docstring): the cost model's own noise floor for a move that saves nothing (``COSTLESS_MIN_SAVING``)."""

PROBE_ENUMERATION_LIMIT = 48 ** 3
"""Most plans enumerated to find the candidates (every plan of a model of up to three layers)."""


def one_layer_trials(
    env: CompressionEnv,
    plan: Sequence[int],
    snapshots: Sequence[int],
    measured: Mapping[tuple[int, ...], PolicyResult] | None = None,
) -> dict[tuple[int, ...], PolicyResult]:
    """``plan`` and every plan with one layer changed (a tuple of actions each), with its result on ``snapshots``:
    taken from ``measured`` (results of plans already run on the same ``snapshots``, e.g. ``greedy_search(...).trials``)
    where there, else run. On a graph whose layer outputs do not all fit the environment's run cache, running a plan
    again costs as much as the search did, so ``plan_values`` and ``plan_node_errors`` share one call's results."""
    plan = [int(a) for a in plan]
    if len(plan) != env.num_layers:
        raise ValueError(f"the plan has {len(plan)} actions, the environment {env.num_layers} layers")
    if not snapshots:
        raise ValueError("one_layer_trials needs at least one snapshot")
    check_measured_on(measured, snapshots, "one_layer_trials")
    trials: dict[tuple[int, ...], PolicyResult] = {}
    for layer in range(env.num_layers):
        for action in range(len(env.action_space)):
            trial = list(plan)
            trial[layer] = action
            key = tuple(trial)
            if key not in trials:
                result = (measured or {}).get(key)
                trials[key] = result if result is not None else run_policy(env, StaticPolicy("trial", trial), snapshots)
    return trials


def plan_values(
    env: CompressionEnv,
    reward: RewardConfig,
    plan: Sequence[int],
    snapshots: Sequence[int],
    measured: Mapping[tuple[int, ...], PolicyResult] | None = None,
    per_snapshot: bool = False,
    weights: np.ndarray | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """float64 [layers, actions]: the mean reward on ``snapshots``, budget penalty excluded, of ``plan`` with one
    layer changed to each action in turn (row l, column a: layer l runs ``a``, the others their plan action).
    ``per_snapshot``: also return those rewards per snapshot, float64 [snapshots, layers, actions].

    ``measured``: as in ``one_layer_trials`` (its result, or plans already run on the same ``snapshots``).
    ``weights``: one per snapshot, for a weighted mean (the per-snapshot rewards are returned as they are)."""
    plan = [int(a) for a in plan]
    trials = one_layer_trials(env, plan, snapshots, measured)
    unbudgeted = replace(reward, budget_penalty=0.0)
    values = np.empty((env.num_layers, len(env.action_space)))
    samples = np.empty((len(snapshots), env.num_layers, len(env.action_space)))
    for layer in range(env.num_layers):
        for action in range(len(env.action_space)):
            result = trials[tuple(plan[:layer] + [action] + plan[layer + 1:])]
            values[layer, action] = result.mean_reward(unbudgeted, weights)
            samples[:, layer, action] = result.rewards(unbudgeted)
    return (values, samples) if per_snapshot else values


def plan_node_errors(
    env: CompressionEnv,
    plan: Sequence[int],
    snapshots: Sequence[int],
    measured: Mapping[tuple[int, ...], PolicyResult] | None = None,
) -> np.ndarray:
    """float64 [layers, actions]: the standard error over the evaluation nodes of ``snapshots`` of the mean accuracy
    difference between ``plan`` with one layer changed (row l, column a: layer l runs ``a``) and ``plan`` itself
    (``dste.controller.evidence.node_error``; 0 where the environment gives no per-node correctness). ``measured``
    as in ``plan_values``."""
    plan = [int(a) for a in plan]
    trials = one_layer_trials(env, plan, snapshots, measured)
    base = trials[tuple(plan)].outcomes
    errors = np.empty((env.num_layers, len(env.action_space)))
    for layer in range(env.num_layers):
        for action in range(len(env.action_space)):
            changed = trials[tuple(plan[:layer] + [action] + plan[layer + 1:])].outcomes
            errors[layer, action] = node_error(list(zip(changed, base)))
    return errors


class BudgetProjectedPlan(Policy):
    """``plan`` re-fitted per snapshot to the latency budget ``guard`` enforces (see the module docstring).

    ``values``: float [layers, actions], e.g. ``plan_values(env, reward, plan, train_snapshots)``. The search is
    exhaustive over the remaining layers (48^(L - l) plans at layer l: instant for the two-layer models).
    ``samples``: the same values per training snapshot, float [snapshots, layers, actions]; with them the projection
    moves among measured plans (one layer changed) and leaves a plan that fits only for a gain ``min_gain_z``
    standard errors above zero (module docstring). Without them, the most valuable plan by summed values is taken.
    ``node_errors``: the node-level standard error of each of those moves' mean gains over the training snapshots
    (``plan_node_errors``, the shape of ``values``), which a move to an action that compresses as much or more
    (``compresses_at_least``) must beat too; without them the error over snapshots alone decides.
    ``probe`` and ``probe_plans``: the per-snapshot agreement check of the module docstring, where the environment
    implements ``agreement``; ``plans_probed`` counts the plans it ran.
    ``baseline_plan``: greedy search's plan as its baseline runs it, which an episode runs instead of the plan it
    would take where both cost the same within ``same_latency_share`` of the baseline's latency and the baseline keeps
    the budget (rule 5); ``baseline_snapshots`` holds the snapshots where it did.
    """

    def __init__(
        self, plan: Sequence[int], values: np.ndarray, guard: BudgetGuard, name: str = "greedy_projected",
        samples: np.ndarray | None = None, min_gain_z: float = MOVE_MIN_GAIN_Z,
        probe: bool = False, probe_plans: int = PROBE_PLANS, node_errors: np.ndarray | None = None,
        baseline_plan: Sequence[int] | None = None, same_latency_share: float = SAME_LATENCY_SHARE,
    ) -> None:
        if not isinstance(guard, BudgetGuard):
            raise TypeError(f"guard must be a BudgetGuard, got {type(guard).__name__}")
        env = guard.env
        values = np.asarray(values, dtype=np.float64)
        expected = (env.num_layers, len(env.action_space))
        if values.shape != expected:
            raise ValueError(f"values must have shape {expected} (layers, actions), got {values.shape}")
        if not np.isfinite(values).all():
            raise ValueError("values must be finite")
        plan = [int(a) for a in plan]
        if len(plan) != env.num_layers or any(not 0 <= a < len(env.action_space) for a in plan):
            raise ValueError(
                f"plan must hold {env.num_layers} action indices in [0, {len(env.action_space)}), got {plan}"
            )
        if samples is not None:
            samples = np.asarray(samples, dtype=np.float64)
            if samples.ndim != 3 or samples.shape[1:] != expected or not np.isfinite(samples).all():
                raise ValueError(f"samples must be finite with shape (snapshots, {expected[0]}, {expected[1]}), got "
                                 f"{samples.shape}")
        if node_errors is not None:
            node_errors = np.asarray(node_errors, dtype=np.float64)
            if samples is None or node_errors.shape != expected:
                raise ValueError(f"node_errors must come with samples and have the shape of values {expected}, got "
                                 f"{node_errors.shape}")
            if not np.isfinite(node_errors).all() or (node_errors < 0).any():
                raise ValueError("node_errors must be finite and >= 0")
        if baseline_plan is not None:
            baseline_plan = [int(a) for a in baseline_plan]
            if len(baseline_plan) != env.num_layers or any(not 0 <= a < len(env.action_space) for a in baseline_plan):
                raise ValueError(f"baseline_plan must hold {env.num_layers} action indices in "
                                 f"[0, {len(env.action_space)}), got {baseline_plan}")
        if not (np.isfinite(same_latency_share) and 0 <= same_latency_share < 1):
            raise ValueError(f"same_latency_share must be a share in [0, 1), got {same_latency_share!r}")
        if not (np.isfinite(min_gain_z) and min_gain_z >= 0):
            raise ValueError(f"min_gain_z must be a finite number >= 0, got {min_gain_z!r}")
        if not isinstance(probe, (bool, np.bool_)):
            raise ValueError(f"probe must be True or False, got {probe!r}")
        if isinstance(probe_plans, bool) or not isinstance(probe_plans, (int, np.integer)) or probe_plans < 1:
            raise ValueError(f"probe_plans must be an int >= 1, got {probe_plans!r}")
        self.plan, self.values, self.guard, self.name = plan, values, guard, name
        self.samples, self.min_gain_z = samples, float(min_gain_z)
        self.node_errors = node_errors
        self.probe = bool(probe)
        self.probe_plans = int(probe_plans)
        # plans whose agreement was measured, per snapshot (each snapshot's once); ``validate_check``'s own are not kept
        self.probes_by_snapshot: dict[int, int] = {}
        self._agreements: dict[tuple[int, tuple[int, ...]], float] = {}
        # this episode's actions so far (under DQNPolicy, ``observe``'s: the ones that ran), to tell whether the plan
        # was followed
        self._chosen: list[int] = []
        self._probed: list[int] | None = None  # this episode's plan after the check on its snapshot, if probing
        self._grids: tuple | None = None  # the check's per-plan grids, built on its first run (``_plan_grids``)
        self.check_where_greedy_fits = False  # set by ``validate_check``
        self.check_gains = np.zeros(0)  # the training snapshots' gains ``validate_check`` decided on
        self.baseline_plan, self.same_latency_share = baseline_plan, float(same_latency_share)
        self.baseline_snapshots: set[int] = set()  # where an episode ran ``baseline_plan`` by rule 5

    @property
    def plans_probed(self) -> int:
        """Plans whose agreement was measured on the episodes' snapshots (``validate_check``'s own left out)."""
        return sum(self.probes_by_snapshot.values())

    def choose(self, state: np.ndarray, layer: int) -> int:
        env = self.guard.env
        snapshot = env.current_snapshot()
        budget = self.guard.budget_us(snapshot)
        if layer == 0:
            self._chosen = []
            self._probed = None
            if budget is not None and self.probe:
                self._probed = self._probed_plan(env, snapshot, budget)
            self._probed = self._baseline_at_same_latency(env, snapshot, budget, self._probed)
        if budget is None:
            action = (self._probed or self.plan)[layer]
        else:
            action = self._decide_fitting(env, snapshot, budget, layer)
        self._chosen = self._chosen[:layer] + [action]
        return action

    def observe(self, layer: int, action: int) -> None:
        # under DQNPolicy the network's action may have run instead of this plan's
        self._chosen = self._chosen[:layer] + [int(action)]

    def _decide_fitting(self, env, snapshot: int, budget: float, layer: int) -> int:
        """``_decide``'s action, confirmed at its exact price (``BudgetGuard.fits``): the latency tables estimate
        actions with some FP16 rows, so an action they let through can overspend. Such an action is priced out of
        this layer's table and the rules decide again, as the module docstring says; the cheapest action left is
        taken whether it fits or not (where nothing fits, as ``BudgetGuard`` takes it). So the plan keeps the budget
        run on its own, and under ``DQNPolicy`` the guard never has to mask its action (the network's would take
        its place)."""
        tables = self._tables(env, snapshot)
        prefix = self._chosen[:layer] if len(self._chosen) >= layer else None
        spent = env.spent_latency()
        while True:
            action = self._decide(tables, prefix, spent, budget, layer, self._probed)
            priced_out = ~np.isfinite(tables[layer])
            if priced_out[action]:  # a rule kept to the plan's own action, already priced out: the summed values
                left = budget - spent + budget_slack_us(budget)
                worth, _ = self._best(tables[layer:], self.values[layer:], left)
                action = int(np.argmax(worth)) if np.isfinite(worth).any() else int(np.argmin(tables[layer]))
            if action == int(np.argmin(tables[layer])) or self.guard.fits(layer, action):
                return action  # the cheapest left is taken whether or not it fits: nothing cheaper could
            tables = list(tables)
            tables[layer] = tables[layer].copy()
            tables[layer][action] = np.inf

    def _baseline_at_same_latency(self, env, snapshot: int, budget: float | None, probed: list[int] | None):
        """The whole plan this episode follows (as ``_probed``): ``baseline_plan`` where rule 5 applies, else
        ``probed`` as it came. Priced by the latency tables, before any layer runs."""
        if self.baseline_plan is None:
            return probed
        tables = self._tables(env, snapshot)
        if budget is not None and not self._fits(tables, self.baseline_plan, budget):
            return probed  # the baseline overspends: the budget comes first
        if probed is not None:
            intended = probed
        else:
            intended = self.plan if budget is None else self._fitted_plan(tables, budget)
        if intended == self.baseline_plan:
            return probed
        baseline_us = self._plan_us(tables, self.baseline_plan)
        if abs(self._plan_us(tables, intended) - baseline_us) > self.same_latency_share * baseline_us:
            return probed
        self.baseline_snapshots.add(int(snapshot))
        return list(self.baseline_plan)

    def _tables(self, env, snapshot) -> list[np.ndarray]:
        return [np.asarray(env.latency_table(snapshot, k), dtype=np.float64) for k in range(env.num_layers)]

    def _decide(
        self, tables: list[np.ndarray], prefix: list[int] | None, spent: float, budget: float, layer: int,
        probed: list[int] | None = None,
    ) -> int:
        """This layer's action, given the episode's earlier actions (``prefix``; None if unknown), the latency they
        spent and the plan the check on the snapshot chose (``probed``; None: the fitted plan's rules alone)."""
        left = budget - spent + budget_slack_us(budget)
        known_prefix = prefix is not None and spent == sum(tables[k][prefix[k]] for k in range(layer))
        if probed is not None and known_prefix and prefix == probed[:layer]:
            if sum(tables[k][probed[k]] for k in range(layer, len(probed))) <= left:
                return probed[layer]
        worth, _ = self._best(tables[layer:], self.values[layer:], left)
        if not np.isfinite(worth).any():
            return int(np.argmin(tables[layer]))
        measured = self._best_measured(tables, prefix, left) if self.samples is not None and known_prefix else None
        if measured is None:  # no measured plan fits the rest of the episode: the summed values decide
            return int(np.argmax(worth))
        target, gains, error = measured
        if gains is not None and not gains.mean() > self.min_gain_z * max(snapshot_error(gains), error):
            return self.plan[layer]
        return target[layer]

    def _fitted_plan(self, tables: list[np.ndarray], budget: float) -> list[int]:
        """The whole plan ``_decide`` takes, without the check, on a snapshot whose layers spend what the tables say."""
        plan, spent = [], 0.0
        for layer in range(len(tables)):
            action = self._decide(tables, plan, spent, budget, layer)
            plan.append(action)
            spent += tables[layer][action]
        return plan

    def _probed_plan(self, env, snapshot: int, budget: float) -> list[int] | None:
        """The plan this episode follows (module docstring): the fitted plan, unless one of the ``probe_plans`` most
        valuable plans within the budget, two layers or more from greedy's plan, not worth less than it by the
        training snapshots (``_not_worth_less``), agrees with the uncompressed model on this snapshot by over
        ``PROBE_MIN_AGREEMENT_GAIN`` more; then the most valuable such plan. None (the fitted plan's rules alone)
        where greedy's plan fits the budget (unless ``validate_check`` found the check gains there too), the
        environment cannot compare predictions or the plans are too many to enumerate."""
        if len(env.action_space) ** env.num_layers > PROBE_ENUMERATION_LIMIT:
            return None
        tables = self._tables(env, snapshot)
        if self._greedy_fits(tables, budget) and not self.check_where_greedy_fits:
            return None  # greedy's plan fits: a plan measured as a whole is not overruled by agreement
        _, worth, _, per_snapshot = self._plan_grids()
        try:
            return self._check(env, snapshot, tables, budget, worth, per_snapshot)
        except NotImplementedError:
            return None

    def _greedy_fits(self, tables: list[np.ndarray], budget: float) -> bool:
        return self._fits(tables, self.plan, budget)

    @staticmethod
    def _plan_us(tables: list[np.ndarray], plan: Sequence[int]) -> float:
        """``plan``'s modelled latency by the latency ``tables`` (one per layer)."""
        return sum(table[action] for table, action in zip(tables, plan))

    @staticmethod
    def _fits(tables: list[np.ndarray], plan: Sequence[int], budget: float) -> bool:
        return BudgetProjectedPlan._plan_us(tables, plan) <= budget + budget_slack_us(budget)

    def _check(
        self, env, snapshot: int, tables: list[np.ndarray], budget: float, worth: np.ndarray,
        per_snapshot: np.ndarray | None,
    ) -> list[int]:
        """The check on ``snapshot`` with the plans' summed values ``worth`` (flat) and their sums per training
        snapshot ``per_snapshot`` ([snapshots, plans] or None): the fitted plan or the first candidate that agrees
        more. Raises NotImplementedError where the environment cannot compare predictions."""
        fitted = self._fitted_plan(tables, budget)
        fits = functools.reduce(np.add.outer, tables).ravel() <= budget + budget_slack_us(budget)
        shape, _, changed, _ = self._plan_grids()
        fitted_index = np.ravel_multi_index(fitted, shape)
        # greedy's plan and the plans one layer from it were measured, and the rules above judged them already
        richer = np.flatnonzero(fits & (changed >= 2) & _not_worth_less(worth, per_snapshot, fitted_index))
        richer = richer[np.argsort(-worth[richer], kind="stable")][: self.probe_plans]
        if len(richer) == 0:
            return fitted
        bar = self._agreement(env, snapshot, fitted) + PROBE_MIN_AGREEMENT_GAIN
        for index in richer:  # most valuable first
            plan = list(map(int, np.unravel_index(index, shape)))
            if self._agreement(env, snapshot, plan) > bar:
                return plan
        return fitted

    def validate_check(self, snapshots: Sequence[int]) -> np.ndarray:
        """Decide, on the labelled training ``snapshots`` (those ``samples`` was measured on, in its order), whether
        the check also runs where greedy's plan fits (``check_where_greedy_fits``); returns the gains it was decided
        on. On each training snapshot whose budget greedy's plan fits, the check is run as it would run on a held-out
        one, with the values of the other training snapshots (leave one out: the snapshot's own labels choose no
        candidate), and the reward (budget penalty left out) of the plan it takes is measured against the fitted
        plan's: 0 where it keeps the fitted plan. The check runs where greedy's plan fits only if those gains
        average more than ``min_gain_z`` standard errors above zero: whether agreement with the uncompressed model
        points to more accurate plans depends on the model and the stream (module docstring)."""
        self.check_where_greedy_fits = False
        self.check_gains = np.zeros(0)
        snapshots = [int(s) for s in snapshots]
        env = self.guard.env
        if not self.probe or self.samples is None or len(snapshots) != len(self.samples) or len(snapshots) < 3:
            return self.check_gains
        if len(env.action_space) ** env.num_layers > PROBE_ENUMERATION_LIMIT:
            return self.check_gains
        _, _, _, per_snapshot = self._plan_grids()
        unbudgeted = replace(self.guard.reward, budget_penalty=0.0)
        probed_before, gains, pairs = dict(self.probes_by_snapshot), [], []
        for position, snapshot in enumerate(snapshots):
            budget = self.guard.budget_us(snapshot)
            tables = self._tables(env, snapshot)
            if budget is None or not self._greedy_fits(tables, budget):
                continue
            others = np.delete(per_snapshot, position, axis=0)
            try:
                chosen = self._check(env, snapshot, tables, budget, others.mean(axis=0), others)
            except NotImplementedError:
                self.probes_by_snapshot = probed_before
                return self.check_gains
            fitted = self._fitted_plan(tables, budget)
            if chosen == fitted:
                gains.append(0.0)
                pairs.append(None)
                continue
            check, kept = (run_policy(env, StaticPolicy(name, plan), [snapshot]) for name, plan in
                           (("check", chosen), ("fitted", fitted)))
            gains.append(check.mean_reward(unbudgeted) - kept.mean_reward(unbudgeted))
            pairs.append((check.outcomes[0], kept.outcomes[0]))
        self.probes_by_snapshot = probed_before  # counts the held-out snapshots' checks only
        self.check_gains = np.asarray(gains, dtype=np.float64)
        if len(gains) >= 2:
            error = max(snapshot_error(self.check_gains), node_error(pairs))
            self.check_where_greedy_fits = bool(self.check_gains.mean() > self.min_gain_z * error)
        return self.check_gains

    def _plan_grids(self) -> tuple:
        """What the check needs of every plan that does not depend on the snapshot, built once: the plans' shape
        (actions per layer), and flat over the plans their summed value, how many layers they change from greedy's
        plan, and (with per-snapshot values from two snapshots or more; else None) their summed value on each
        training snapshot, [snapshots, plans]."""
        if self._grids is None:
            worth = functools.reduce(np.add.outer, list(self.values))
            actions = np.arange(self.values.shape[1])
            moved = [(actions != a).astype(np.int64) for a in self.plan]
            per_snapshot = None
            if self.samples is not None and len(self.samples) >= 2:
                per_snapshot = functools.reduce(
                    lambda acc, layer: (acc[..., None] + layer[:, None, :]).reshape(len(layer), -1),
                    [self.samples[:, k, :] for k in range(self.samples.shape[1])],
                )
            self._grids = (worth.shape, worth.ravel(), functools.reduce(np.add.outer, moved).ravel(), per_snapshot)
        return self._grids

    def _agreement(self, env, snapshot: int, plan: list[int]) -> float:
        key = (int(snapshot), tuple(plan))
        if key not in self._agreements:
            self._agreements[key] = float(env.agreement(snapshot, plan))
            self.probes_by_snapshot[int(snapshot)] = self.probes_by_snapshot.get(int(snapshot), 0) + 1
        return self._agreements[key]

    def _best_measured(self, tables: list[np.ndarray], prefix: list[int], left: float):
        """The most valuable plan whose remaining layers fit ``left``, among the plan and the plans with one layer
        changed (values measured as they are, not summed) that begin with this episode's ``prefix``. Returns:

        - None where none of them fits;
        - ``(plan, None, None)`` where the most valuable is the plan itself, or where the plan itself does not fit
          (then no evidence is asked for: the move is forced);
        - ``(plan, gains, error)`` for a move away from a plan that fits: its reward gain over the plan per training
          snapshot, and the node-level standard error their mean must beat too (0 without ``node_errors``, or where
          the move keeps more of the layer in some way)."""
        layer = len(prefix)
        candidates = [list(self.plan)] + [
            self.plan[:k] + [a] + self.plan[k + 1:]
            for k in range(len(self.plan)) for a in range(len(tables[k])) if a != self.plan[k]
        ]
        best, best_value, plan_fits = None, -np.inf, False
        for plan in candidates:
            if plan[:layer] != prefix or sum(tables[k][plan[k]] for k in range(layer, len(plan))) > left:
                continue
            changed = [k for k in range(len(plan)) if plan[k] != self.plan[k]]
            value = self.values[changed[0], plan[changed[0]]] if changed else self.values[0, self.plan[0]]
            plan_fits = plan_fits or not changed
            if value > best_value:
                best, best_value = (plan, changed), float(value)
        if best is None:
            return None
        plan, changed = best
        if not changed or not plan_fits:
            return plan, None, None
        k = changed[0]
        gains = self.samples[:, k, plan[k]] - self.samples[:, k, self.plan[k]]
        error = 0.0
        if self.node_errors is not None and compresses_at_least(self.guard.env.action_space, plan[k], self.plan[k]):
            error = float(self.node_errors[k, plan[k]])
        return plan, gains, error

    @staticmethod
    def _best(tables: list[np.ndarray], values: np.ndarray, left: float) -> tuple[np.ndarray, float]:
        """Per action of the first layer, the best total value of a plan for the remaining layers within ``left``
        microseconds (-inf where none fits), and the best overall."""
        if len(tables) == 1:
            worth = np.where(tables[0] <= left, values[0], -np.inf)
            return worth, float(worth.max())
        worth = np.full(tables[0].shape, -np.inf)
        for action in np.flatnonzero(tables[0] <= left):
            _, rest = BudgetProjectedPlan._best(tables[1:], values[1:], left - tables[0][action])
            worth[action] = values[0][action] + rest
        return worth, float(worth.max())


def _not_worth_less(worth: np.ndarray, per_snapshot: np.ndarray | None, fitted_index: int) -> np.ndarray:
    """bool over every plan (flat): worth more than the fitted plan by the summed values ``worth`` or, with their
    sums per training snapshot (``per_snapshot``, [snapshots, plans]), less by no more than a standard error of the
    difference over those snapshots (paired)."""
    richer = worth > worth[fitted_index]
    if per_snapshot is None:
        return richer
    gap = per_snapshot - per_snapshot[:, fitted_index][:, None]
    error = gap.std(axis=0, ddof=1) / np.sqrt(len(gap))
    close = gap.mean(axis=0) + error >= 0
    close[fitted_index] = False
    return richer | close
