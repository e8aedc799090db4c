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
* ``feasible_static_search`` -- the static plan of best mean reward among those whose measured latency fits every
  snapshot's budget (the budget ``BudgetGuard`` enforces; exhaustive over the two-layer plans); run on the
  held-out snapshots, the budget-feasible best static policy in hindsight.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from dste.controller.env import FP32_ACTION, CompressionEnv, EpisodeOutcome
from dste.controller.evidence import node_error, snapshot_error
from dste.controller.guard import BudgetGuard, budget_slack_us
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
    "recency_weights",
    "feasible_static_search",
    "fits_every_budget",
    "kept_budget",
    "EXHAUSTIVE_PLAN_LIMIT",
]


class Policy:
    """Chooses an action index per (snapshot, layer) from the state. ``begin()`` starts a stream."""

    name = "policy"

    def begin(self) -> None:
        pass

    def begin_scored(self) -> None:
        """Called by ``run_policy`` after the unscored lead-in snapshots: counts a policy reports (decisions,
        fallback share) start over, its state (masks, caches) carries on."""

    def check(self, env: CompressionEnv) -> None:
        """Refuse ``env`` if this policy cannot act on it (``run_policy`` asks before the first episode)."""

    def choose(self, state: np.ndarray, layer: int) -> int:
        raise NotImplementedError

    def observe(self, layer: int, action: int) -> None:
        """Told the action that ran at ``layer`` where another policy chose it with this one's advice (``DQNPolicy``
        with this policy as its fallback): a policy that reasons from the episode's earlier actions keeps these."""


class StaticPolicy(Policy):
    """The same action index for a layer on every snapshot (``FP32_ACTION`` allowed)."""

    def __init__(self, name: str, actions_per_layer: Sequence[int]) -> None:
        if not actions_per_layer:
            raise ValueError("a static policy needs one action per layer")
        if any(isinstance(a, (bool, np.bool_)) or not isinstance(a, (int, np.integer)) for a in actions_per_layer):
            raise TypeError(f"static policy {name!r}: actions must be int action indices (or FP32_ACTION), got "
                            f"{list(actions_per_layer)}")
        self.name = name
        self.actions = [int(a) for a in actions_per_layer]

    def check(self, env: CompressionEnv) -> None:
        if len(self.actions) != env.num_layers:
            raise ValueError(f"static policy {self.name!r} has {len(self.actions)} actions; the environment has "
                             f"{env.num_layers} layers, one action each")

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

    def check(self, env: CompressionEnv) -> None:
        if self.n_actions != len(env.action_space):
            raise ValueError(f"random policy {self.name!r} draws from {self.n_actions} actions; the environment has "
                             f"{len(env.action_space)} (RandomPolicy(len(env.action_space)))")

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

    With a guard, the action taken is confirmed at its exact price (``BudgetGuard.choose``): where the guard's
    latency table underestimated it and it would overspend, the policy chooses again without it.
    """

    def __init__(self, agent, name: str = "dste_dqn", guard=None, fallback=None, margin: float = 0.0) -> None:
        if fallback is not None and not isinstance(fallback, Policy):
            actions = [int(a) for a in fallback]
            if any(not 0 <= a < len(agent.action_space) for a in actions):
                raise ValueError(
                    f"DQNPolicy: fallback actions {actions} must be action indices in [0, {len(agent.action_space)})"
                    + (" (FP32_ACTION lies outside the network's grid, so its Q-values cannot weigh it; run "
                       "StaticPolicy for the uncompressed model)" if FP32_ACTION in actions else "")
                )
            fallback = StaticPolicy("fallback", actions)
        if not (margin >= 0):  # also refuses NaN
            raise ValueError(f"DQNPolicy: margin must be >= 0 (inf allowed), got {margin!r}")
        self.agent, self.name, self.guard = agent, name, guard
        self.fallback, self.margin = fallback, float(margin)
        self.fallback_taken = 0
        self.decisions = 0

    @property
    def fallback_share(self) -> float:
        """Share of the decisions since ``begin`` (in ``run_policy``, since the lead-in) where the fallback's action
        replaced the network's (0 if none)."""
        return self.fallback_taken / max(self.decisions, 1)

    def begin(self) -> None:
        self.fallback_taken = self.decisions = 0
        if self.fallback is not None:
            self.fallback.begin()

    def begin_scored(self) -> None:
        self.fallback_taken = self.decisions = 0

    def check(self, env: CompressionEnv) -> None:
        # an index means an action only within one grid: another grid of the same size would run other actions
        if self.agent.action_space != env.action_space:
            raise ValueError(f"DQNPolicy {self.name!r}: the agent was trained on {self.agent.action_space}, the "
                             f"environment acts on {env.action_space}; build both on the same ActionSpace")
        guarded = getattr(self.guard, "env", env)
        if guarded is not env:
            # its budgets and prices are that environment's: another one (a variant with another goal) would be
            # held to them silently
            raise ValueError(f"DQNPolicy {self.name!r}: its guard is bound to another environment; build the guard on "
                             "the environment the policy runs on (BudgetGuard(env, reward))")
        if self.fallback is not None:
            self.fallback.check(env)

    def choose(self, state: np.ndarray, layer: int) -> int:
        took_fallback = False

        def pick(allowed):
            nonlocal took_fallback
            took_fallback, action = self._choose_among(state, layer, allowed)
            return action

        action = pick(None) if self.guard is None else self.guard.choose(layer, pick)
        self.decisions += 1
        self.fallback_taken += int(took_fallback)
        if self.fallback is not None:
            self.fallback.observe(layer, action)  # the fallback's later layers reason from what ran, not its advice
        return action

    def _choose_among(self, state: np.ndarray, layer: int, allowed) -> tuple[bool, int]:
        """(whether the fallback's action replaced the network's, the action) among ``allowed`` (None: all)."""
        chosen = self.agent.act(state, epsilon=0.0, allowed=allowed)
        if self.fallback is None:
            return False, chosen
        conservative = self.fallback.choose(state, layer)
        if not 0 <= conservative < len(self.agent.action_space):
            return False, chosen  # e.g. FP32_ACTION: outside the network's grid, nothing to compare
        if allowed is not None and not allowed[conservative]:
            return False, chosen
        q = self.agent.q_values(state)
        if q[chosen] - q[conservative] <= self.margin:
            return chosen != conservative, conservative
        return False, chosen


@dataclass
class PolicyResult:
    name: str
    outcomes: list[EpisodeOutcome] = field(default_factory=list)

    def require_episodes(self, where: str = "") -> None:
        """Refuse a result without episodes: its means were NaN with only a warning, and it 'kept every budget'."""
        if not self.outcomes:
            raise ValueError(f"{where + ': ' if where else ''}policy {self.name!r} has no episodes: run it on at "
                             "least one snapshot")

    def _values(self, attribute: str) -> np.ndarray:
        self.require_episodes()
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
        self.require_episodes()
        return np.array(
            [
                reward.episode_reward(
                    o.accuracy, o.latency_us, o.reference_latency_us, o.budget_fraction, o.nbytes, o.reference_nbytes
                )
                for o in self.outcomes
            ]
        )

    def mean_reward(self, reward: RewardConfig, weights: np.ndarray | None = None) -> float:
        """The episodes' mean reward; ``weights``: one per episode, in order (e.g. ``recency_weights``)."""
        rewards = self.rewards(reward)
        if weights is None:
            return float(rewards.mean())
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != rewards.shape:
            raise ValueError(f"weights must hold one value per episode ({len(rewards)}), got shape {weights.shape}")
        if not np.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"weights must be finite and >= 0 with a positive sum, got {weights.tolist()}")
        return float(np.average(rewards, weights=weights))


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
    policy.check(env)
    env.begin_stream()
    policy.begin()
    for snapshot in lead_in:
        run_episode(env, policy, snapshot)
    policy.begin_scored()
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


def recency_weights(count: int, half_life: float) -> np.ndarray:
    """float64 [count]: the weight ``2 ** (-age / half_life)`` of each of ``count`` snapshots in stream order (the last
    has age 0), normalised to sum to 1; ``half_life`` in snapshots, ``inf`` for equal weights."""
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise ValueError(f"count must be an int >= 1, got {count!r}")
    if not (half_life > 0):
        raise ValueError(f"half_life must be > 0 snapshots (inf: equal weights), got {half_life!r}")
    ages = np.arange(count - 1, -1, -1, dtype=np.float64)
    weights = np.exp2(-ages / half_life)
    return weights / weights.sum()


RECENCY_MIN_GAIN_Z = 1.0
"""Standard errors by which the recency-weighted plan must beat the plain-mean one on the training snapshots."""


@dataclass(frozen=True)
class RecencyChoice:
    """Which plan :func:`prefer_recent_plan` kept, and the evidence: the recency-weighted mean of the per-snapshot
    reward differences (recent minus plain), the standard error it was judged by (the larger of the next two), and
    that mean's standard errors over snapshots and over evaluation nodes (``dste.controller.evidence``)."""

    recent_kept: bool
    gain: float
    standard_error: float
    snapshot_error: float = 0.0
    node_error: float = 0.0


def prefer_recent_plan(
    recent: StaticPolicy,
    plain: StaticPolicy,
    reward: RewardConfig,
    weights: np.ndarray,
    min_gain_z: float = RECENCY_MIN_GAIN_Z,
) -> tuple[StaticPolicy, RecencyChoice]:
    """``recent`` (greedy search under recency ``weights``) where it beats ``plain`` (the same search on the plain
    mean) by more than ``min_gain_z`` standard errors on the training snapshots, else ``plain``.

    Recency weights trust about ``1 / sum(w^2)`` snapshots of evidence instead of all of them; a plan they prefer by
    less than the noise of that smaller sample is a coin flip with a cost (one seed of the default graph pruned 75 %
    of a layer's edges for a weighted gain of 0.0007 +/- 0.0056 and lost 3.2 points on every held-out snapshot).
    The standard error is the larger of that of a weighted mean of the paired differences over snapshots and its
    error over the snapshots' evaluation nodes (``dste.controller.evidence.node_error``). Both plans
    must have been measured (``trials``) on the same snapshots. Where both searches found the same plan it is
    returned as ``recent`` (kept, gain 0).
    """
    if not (np.isfinite(min_gain_z) and min_gain_z >= 0):
        raise ValueError(f"min_gain_z must be a finite number >= 0, got {min_gain_z!r}")
    measured = {**plain.trials, **recent.trials}
    missing = [plan for plan in (tuple(recent.actions), tuple(plain.actions)) if plan not in measured]
    if missing:
        raise ValueError(f"plans {missing} were not measured on the training snapshots (their policies' trials)")
    weights = np.asarray(weights, dtype=np.float64)
    if not np.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"weights must be finite and >= 0 with a positive sum, got {weights.tolist()}")
    if tuple(recent.actions) == tuple(plain.actions):
        return recent, RecencyChoice(True, 0.0, 0.0)  # one plan: nothing to choose
    recent_result, plain_result = measured[tuple(recent.actions)], measured[tuple(plain.actions)]
    differences = recent_result.rewards(reward) - plain_result.rewards(reward)
    if differences.shape != weights.shape:
        raise ValueError(f"weights must hold one value per snapshot ({differences.size}), got shape {weights.shape}")
    weights = weights / weights.sum()
    gain = float(np.sum(weights * differences))
    over_snapshots = snapshot_error(differences, weights)
    over_nodes = node_error(list(zip(recent_result.outcomes, plain_result.outcomes)), weights)
    standard_error = max(over_snapshots, over_nodes)
    recent_kept = bool(gain > min_gain_z * standard_error)
    choice = RecencyChoice(recent_kept, gain, standard_error, over_snapshots, over_nodes)
    return (recent if recent_kept else plain), choice


def check_measured_on(measured: Mapping[tuple[int, ...], PolicyResult] | None, snapshots: Sequence[int],
                      where: str) -> None:
    """Refuse results of plans already run (``measured``) that are not one episode per snapshot of ``snapshots``, in
    order: a search reusing them would score plans on other snapshots than the ones it searches on."""
    wanted = [int(n) for n in snapshots]
    for plan, result in (measured or {}).items():
        ran = [outcome.snapshot for outcome in result.outcomes]
        if ran != wanted:
            raise ValueError(f"{where}: the measured plan {list(plan)} ran snapshots {ran}, not {wanted}: pass results "
                             "of the same snapshots, in the same order")


def greedy_search(
    env: CompressionEnv,
    reward: RewardConfig,
    snapshots: Sequence[int],
    rounds: int = 2,
    progress: bool = False,
    weights: np.ndarray | None = None,
    measured: Mapping[tuple[int, ...], PolicyResult] | None = None,
    allowed: Sequence[np.ndarray] | None = None,
) -> StaticPolicy:
    """Coordinate ascent over per-layer static actions, maximising the mean reward on ``snapshots``.

    ``weights``: one per snapshot (``recency_weights``), for a weighted mean instead. ``measured``: results of plans
    already run on the same ``snapshots`` (another search's ``trials``), reused instead of run again. ``allowed``:
    per layer, a bool mask over the actions the search may take (e.g. not ``costless_pruning``); uniform INT8, where
    it starts, must be allowed.

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
    if weights is not None and len(weights) != len(snapshots):
        raise ValueError(f"weights must hold one value per snapshot ({len(snapshots)}), got {len(weights)}")
    start = actions[0]
    if allowed is not None:
        allowed = [np.asarray(mask, dtype=bool) for mask in allowed]
        if len(allowed) != env.num_layers or any(mask.shape != (len(space),) for mask in allowed):
            raise ValueError(f"allowed must hold {env.num_layers} bool masks of {len(space)} actions")
        if not all(mask[start] for mask in allowed):
            raise ValueError(f"allowed must allow uniform INT8 (action {start}) at every layer: the search starts there")
    check_measured_on(measured, snapshots, "greedy_search")
    trials: dict[tuple[int, ...], PolicyResult] = dict(measured or {})
    with tqdm(total=total, desc="greedy search", disable=not progress, leave=False) as bar:
        for _ in range(rounds):
            changed = False
            for layer in range(env.num_layers):
                scores = []
                for candidate in range(len(space)):
                    if allowed is not None and not allowed[layer][candidate]:
                        scores.append(-np.inf)
                        bar.update()
                        continue
                    trial = list(actions)
                    trial[layer] = candidate
                    if tuple(trial) not in trials:
                        trials[tuple(trial)] = run_policy(env, StaticPolicy("trial", trial), snapshots)
                    scores.append(trials[tuple(trial)].mean_reward(reward, weights))
                    bar.update()
                best = int(np.argmax(scores))
                changed |= best != actions[layer]
                actions[layer] = best
            if not changed:
                break
    policy = StaticPolicy("greedy", actions)
    policy.trials = trials
    return policy


def fits_every_budget(result: PolicyResult, guard: BudgetGuard) -> bool:
    """Whether every episode of ``result`` stayed within its snapshot's latency budget as ``guard`` resolves it
    (``RewardConfig.budget_for`` of the environment's per-snapshot budget), judged on the measured latency
    with the guard's float tolerance only. True where a snapshot has no budget."""
    result.require_episodes("fits_every_budget")
    return all(kept_budget(outcome, guard) for outcome in result.outcomes)


def kept_budget(outcome: EpisodeOutcome, guard: BudgetGuard) -> bool:
    """Whether one episode stayed within its snapshot's latency budget (``fits_every_budget``'s test)."""
    budget = guard.budget_us(outcome.snapshot)
    return budget is None or outcome.latency_us <= budget + budget_slack_us(budget)


EXHAUSTIVE_PLAN_LIMIT = 48 * 48
"""Most plans ``feasible_static_search`` runs one by one (every two-layer plan on the 48-action grid). On cora-like
(3 held-out snapshots, trn2 cost model) all 2,304 took 33 s against 11 s for the unconstrained greedy search: the
first layer's 48 outputs per snapshot are cached, so each further plan costs one second-layer run."""


def feasible_static_search(
    env: CompressionEnv,
    reward: RewardConfig,
    snapshots: Sequence[int],
    unconstrained: StaticPolicy,
    rounds: int = 2,
    name: str = "static_hindsight_feasible",
    plan_limit: int = EXHAUSTIVE_PLAN_LIMIT,
) -> StaticPolicy | None:
    """The best static plan on ``snapshots`` among those within every snapshot's latency budget, or None.

    ``unconstrained``: ``greedy_search(env, reward, snapshots)`` (its ``trials`` are reused, never run again).
    A plan is *feasible* when its measured modelled latency fits the budget ``BudgetGuard`` enforces on every
    one of ``snapshots`` (``fits_every_budget``); on a feasible plan the reward's soft budget penalty is zero,
    so its mean reward is the plain accuracy-minus-latency-price the controller is judged on. Feasibility is
    judged on what was measured, never on ``env.latency_table``: the tables are estimates for some actions
    (``GNNCompressionEnv.latency_table``; on cora-like's drift stream they missed by up to 0.99 us on a third of
    the plan-snapshot pairs), and a plan within a budget by the tables could overspend.

    * With at most ``plan_limit`` plans (every two-layer plan): **exhaustive** -- every plan is run (those the
      unconstrained search measured are reused) and the feasible plan of best mean reward is returned (ties: the
      smaller action tuple). This is exact, also where the unconstrained plan fits: greedy search is a local search,
      and on GraphSAGE's ``drift`` stream a plan it never reached fitted every budget at 1.24 points more reward
      (mean of three seeds, another plan on each; revision 000b458).
    * Beyond ``plan_limit`` plans, if the unconstrained plan is feasible it is returned (under ``name``).
    * Otherwise, beyond ``plan_limit`` plans: a coordinate ascent like ``greedy_search``'s among feasible plans only, from
      the best feasible plan measured (or, if none, the plan of each layer's cheapest action by the latency
      tables summed over ``snapshots``), keeping per layer the best feasible action (ties: lower index). It is a
      local search: where the budget binds, a better plan may need two layers to change at once (on the toy
      environment of the tests it fell 0.09 of reward short of the exhaustive optimum).
    * None when no plan is feasible: exhaustively, none fits; in the ascent, no measured plan fits and neither
      does the cheapest plan by the tables.

    The returned policy's ``trials`` holds every plan measured, ``feasible_trials`` the feasible ones and
    ``search`` which of "unconstrained", "exhaustive" or "ascent" decided.
    """
    if rounds < 1:
        raise ValueError(f"feasible_static_search: rounds must be >= 1, got {rounds}")
    if len(snapshots) == 0:
        raise ValueError("feasible_static_search needs at least one snapshot")
    plan = tuple(int(a) for a in unconstrained.actions)
    trials: dict[tuple[int, ...], PolicyResult] = dict(getattr(unconstrained, "trials", {}) or {})
    check_measured_on(trials, snapshots, "feasible_static_search")
    n_actions = len(env.action_space)
    if len(plan) != env.num_layers or any(not 0 <= a < n_actions for a in plan):
        raise ValueError(
            f"feasible_static_search: the unconstrained plan {list(plan)} must hold {env.num_layers} action "
            f"indices in [0, {n_actions})"
        )
    guard = BudgetGuard(env, reward)

    def measured(trial: tuple[int, ...]) -> PolicyResult:
        if trial not in trials:
            trials[trial] = run_policy(env, StaticPolicy("trial", trial), snapshots)
        return trials[trial]

    def finish(actions: tuple[int, ...] | None, search: str) -> StaticPolicy | None:
        if actions is None:
            return None
        policy = StaticPolicy(name, actions)
        policy.trials = trials
        policy.feasible_trials = {t: r for t, r in trials.items() if fits_every_budget(r, guard)}
        policy.search = search
        return policy

    def best_feasible(candidates) -> tuple[int, ...] | None:
        feasible = [t for t in candidates if fits_every_budget(measured(t), guard)]
        if not feasible:
            return None
        # best mean reward; ties to the smaller plan tuple, so the answer does not depend on the visiting order
        return max(feasible, key=lambda t: (trials[t].mean_reward(reward), tuple(-a for a in t)))

    if n_actions ** env.num_layers <= plan_limit:
        every_plan = itertools.product(range(n_actions), repeat=env.num_layers)
        return finish(best_feasible(list(every_plan)), "exhaustive")
    if fits_every_budget(measured(plan), guard):
        return finish(plan, "unconstrained")
    current = best_feasible(list(trials))
    if current is None:
        cheapest = _cheapest_plan(env, snapshots)
        if cheapest is None or not fits_every_budget(measured(cheapest), guard):
            return None
        current = cheapest
    actions = list(current)
    for _ in range(rounds):
        changed = False
        for layer in range(env.num_layers):
            best_action, best_score = actions[layer], measured(tuple(actions)).mean_reward(reward)
            for candidate in range(n_actions):
                trial = list(actions)
                trial[layer] = candidate
                result = measured(tuple(trial))
                if not fits_every_budget(result, guard):
                    continue
                score = result.mean_reward(reward)
                if score > best_score or (score == best_score and candidate < best_action):
                    best_action, best_score = candidate, score
            changed |= best_action != actions[layer]
            actions[layer] = best_action
        if not changed:
            break
    return finish(tuple(actions), "ascent")


def _cheapest_plan(env: CompressionEnv, snapshots: Sequence[int]) -> tuple[int, ...] | None:
    """Per layer, the action of least modelled latency summed over ``snapshots`` by the label-free latency
    tables; None if the environment cannot price actions before running them."""
    try:
        return tuple(
            int(np.argmin(sum(np.asarray(env.latency_table(n, layer), dtype=np.float64) for n in snapshots)))
            for layer in range(env.num_layers)
        )
    except NotImplementedError:
        return None
