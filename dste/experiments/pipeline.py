"""The main job, ``dste run``: train the FP32 model, train the controller, judge every policy on held-out
snapshots, over several seeds, and report the table, a JSON file and a plot.

Per seed s:
  1. a dynamic stream of snapshots over the dataset (edge churn, feature drift), the last quarter held out: the
     same stream for every seed (``stream_seed``, default 0), so that the spread over seeds is the spread of what
     a seed trains; ``stream_seed=None`` (``--stream-seed per-seed``) draws stream s for seed s instead;
  2. the FP32 two-layer model trained on the first snapshot (seed s), by default distilled from four teachers
     trained there too (``--fp32-teachers``, ``dste.gnn.train_fp32_distilled``);
  3. the DQN controller trained on the training snapshots (reward: validation accuracy minus lambda times
     modelled latency, minus a penalty above the per-snapshot budget = what static 50 % sparse INT8 would
     spend; see ``dste.controller.reward``), acting only among the actions that fit that budget
     (``dste.controller.guard``), the checkpoint chosen by its reward on the training snapshots;
  4. the same controller trained accuracy-first: no latency budget, a memory ceiling of uniform INT8's
     footprint, and agreement with the FP32 predictions as its (label-free) accuracy term; its conservative
     fallback is greedy search's plan on that reward (static: there is no budget to fit it to);
  5. every policy -- FP32, uniform INT8, static 50 % sparse INT8, uniform FP16, random, greedy search, a
     greedy plan fitted to each snapshot's budget (greedy search again, on GCN never pruning what saves no modelled
     latency, ``dste.controller.actions.costless_pruning``, with the later training snapshots weighing more,
     ``RECENCY_HALF_LIFE``, since the held-out ones continue the stream, where that plan beats the plain mean's by
     more than a standard error, ``dste.controller.baselines.prefer_recent_plan``; fitted by
     ``dste.controller.projection``, which takes a more valuable plan never measured as it is where it agrees more
     with the FP32 predictions on the snapshot; also the budgeted DQN's conservative fallback) and both DQN
     controllers -- run by the same harness on the held-out snapshots (which continue the stream: each policy first
     passes, unscored, through the last training snapshot):
     test accuracy, modelled latency (trn2), memory footprint (graph, features, weights, activations), and
     measured CPU time of one inference through the DSTE torch ops. ``oracle`` adds the best static policy in
     hindsight (greedy search on the held-out snapshots with their labels) and its budget-feasible variant
     (``dste.controller.baselines.feasible_static_search``: the best static plan within every held-out
     snapshot's budget, the budget the controller's guard enforces), the best plan within every budget chosen on
     half the held-out test nodes and scored on the other half (``dste.controller.crossfit``: how much of the
     hindsight plan's lead is its choice on the labels it is scored with; the same halves choose a plan per
     snapshot within its budget, what adapting is worth cross-fitted), and per held-out snapshot the best plan
     greedy search finds on it alone and the best plan within its budget (``dste.controller.snapshot_oracle``).
The job runs on one thread (BLAS and torch), so its numbers do not depend on the number of cores, and every encoding
is the same on every CPU (``dste.format.rcm``); torch's and NumPy's float kernels still differ in their last bits
between CPU instruction sets (AVX2, AVX-512), which can move what a seed trains.
Accuracies are reported as mean +/- std over seeds of the per-seed mean over held-out snapshots. Each seed trains
its own FP32 model, so part of that spread is the FP32 model's own; the paired gap to FP32 (per seed, a policy's
accuracy minus that seed's FP32 accuracy; mean +/- std over seeds) is reported beside it as what the policy adds.
"""

from __future__ import annotations

import sys
import platform
import time
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from dste.controller import (
    FP32_ACTION,
    ActionSpace,
    BudgetScheduleEnv,
    int8_multiple_budget,
    microsecond_budget,
    calibrate_margin,
    cross_fitted_static,
    snapshot_oracle,
    snapshot_oracles,
    static_sweep,
    DQNPolicy,
    FALLBACK_MARGINS,
    RandomPolicy,
    RewardConfig,
    greedy_search,
    run_policy,
    static_baselines,
    train_controller,
)
from dste.controller.baselines import feasible_static_search
from dste.controller.fit import RECENCY_HALF_LIFE, fit_controller, run_train_config
from dste.data.stream import heldout_count, snapshots_with_heldout_burst, stream_params
from dste.experiments import strict_json
from dste.experiments.memory import freed_memory_kept
from dste.experiments.plots import plot_accuracy, plot_frontier, plot_snapshots
from dste.experiments.report import (
    SMOKE_RUN_NOTE,
    acceptance,
    budget_note,
    budget_out_of_reach,
    chance_note,
    fp32_against_chance,
    format_table,
    frontier_summary,
    oracle_summary,
    summarise,
)
from dste.experiments.out_dir import check_out_dir, new_stamped_dir
from dste.experiments.run_config import CSBM_PREFIX, RunConfig, csbm_spec, fp32_budget_fraction
from dste.experiments.sizing import GraphSize, memory_check, schedule_for

__all__ = ["run", "RunConfig", "format_table"]  # the last two re-exported: the job's options and its table

ACCURACY_FIRST_MEMORY_BUDGET = 1.0
"""The accuracy-first controller's memory ceiling, as a fraction of uniform INT8's footprint."""

FEW_TEST_NODES = 100
"""Below this many test nodes ``dste run`` says how coarse its accuracies are (one node is over 1 point)."""

COSTLESS_PRUNING_RULE_MODELS = ("gcn",)
"""Models whose fallback plans leave out pruning the cost model calls costless (``costless_pruning``). Measured with
3 seeds per run (bench/README.md, "the costless-pruning rule by model"): on GCN leaving it out gained on all nine runs
where it decides, and lost on the two Planetoid-file default jobs of the fourth round (9 of 11, +0.96 points summed,
where greedy search then dominated by 0.16 and 0.03); on GraphSAGE it lost on seven of ten (1.11 points summed), and there it let greedy search dominate
the controller. On four GraphSAGE runs of graphs measured afterwards it gained on three and lost 0.02 points summed.
Probed offline, the move's held-out gain on GraphSAGE is the channel re-fit's (``dste.gnn.channel_fit``) on its
neighbour map: without the re-fit the move loses on both models. That the GraphSAGE result holds beyond the fourteen
graphs and streams measured is an assumption. Since 0113ddc a fitted plan that costs what greedy search's plan costs
runs greedy's plan wherever that keeps the budget (``dste.controller.projection``, rule 5), so the rule now decides
only where the budget or another rule makes the two plans' latencies differ."""


def _load_base(config: RunConfig):
    """The job's graph: loaded or generated, its features scaled by a power of two where their magnitude is outside
    what FP32 training and FP16 storage work with (``dste.experiments.feature_range``; a line on stderr says so)."""
    from dste.data import load_dataset, make_graph
    from dste.experiments.feature_range import FEATURE_MAGNITUDE_RANGE, features_in_range

    if config.dataset.startswith(CSBM_PREFIX):
        knobs = csbm_spec(config.dataset)
        knobs.setdefault("name", config.dataset)
        graph = make_graph("cora-like", seed=0, **knobs)
    else:
        try:
            graph = load_dataset(config.dataset, root=config.root, seed=0)
        except ValueError as error:
            if str(error).startswith("unknown dataset"):  # the job also generates graphs the loaders do not know
                raise ValueError(f"{error}; or '{CSBM_PREFIX}key=value,...', a generated CSBM graph "
                                 "(dste run --help)") from None
            raise
    splits = {"training": graph.train_mask, "validation": graph.val_mask, "test": graph.test_mask}
    empty = [name for name, mask in splits.items() if not mask.any()]
    if empty:
        raise ValueError(
            f"{graph.name}: no {' and no '.join(empty)} nodes (split {int(graph.train_mask.sum())} / "
            f"{int(graph.val_mask.sum())} / {int(graph.test_mask.sum())}): the job trains on the training nodes, "
            "stops training and fits the controller on the validation nodes and reports accuracy on the test nodes, "
            "so each needs at least one (a gnn-benchmark file, a generated graph and the Planetoid files get a split "
            "drawn; a DSTE bundle carries its own)"
        )
    labelled = np.unique(graph.y[graph.train_mask | graph.val_mask | graph.test_mask])
    if graph.num_classes < 2 or labelled.size < 2:
        # every policy scored 100 %: no accuracy to trade for latency, nothing for the controller to learn
        raise ValueError(f"{graph.name}: {graph.num_classes} class(es), {labelled.size} among its split's labelled "
                         "nodes; node classification needs at least two")
    test_nodes = int(graph.test_mask.sum())
    if test_nodes < FEW_TEST_NODES:
        print(f"dste run: {graph.name} has {test_nodes} test node{'s' if test_nodes > 1 else ''}: one node is "
              f"{100 / test_nodes:.3g} points of every accuracy below, so differences smaller than that are not "
              "resolved (a Planetoid split tests 1,000)", file=sys.stderr, flush=True)
    if graph.num_edges == 0:
        print(f"dste run: {graph.name} has no edges: no node has a neighbour to aggregate, and pruning "
              "edges changes nothing", file=sys.stderr, flush=True)
    scaled, exponent = features_in_range(graph)
    if exponent:
        low, high = FEATURE_MAGNITUDE_RANGE
        largest = float(np.abs(graph.x).max())  # taken only here: ordinary features are not scaled
        print(f"dste run: the node features' largest magnitude is {largest:.4g}, outside [{low:g}, {high:g}]: every "
              f"policy runs on them times 2^{exponent} (FP16 saturates above 65504; FP32 training stalls on tiny "
              "inputs)", file=sys.stderr, flush=True)
    return scaled


def _notice_quiet_heldout(config: RunConfig) -> None:
    """Say so when a bursty stream's held-out snapshots, as ``--snapshots`` sets them, hold no burst."""
    params = stream_params(config.stream)
    enough = snapshots_with_heldout_burst(params, config.snapshots)
    if enough != config.snapshots:
        held_out = heldout_count(config.snapshots, params.heldout_fraction)
        print(f"dste run: with --snapshots {config.snapshots} the held-out snapshots ({held_out}, the last) hold "
              f"no burst (every {params.burst_every}th step), so the tables judge quiet snapshots only; "
              f"--snapshots {enough} holds one out", file=sys.stderr, flush=True)


def _cpu_times_ms(env, snapshot: int, plans: dict, repeats: int) -> dict:
    """Per plan (name -> per-layer actions), the shortest wall time of one inference through the DSTE torch ops (CPU
    backend) in milliseconds: one untimed call each (its encodings and weights are built and cached), then ``repeats``
    rounds that run every plan once, in reverse order every other round, so a slow spell of the machine falls on all
    plans alike rather than on whichever was timed during it (timed one after another, the same plan measured 21
    and 47 ms in one smoke run on a 20k-node graph)."""
    for actions in plans.values():
        env.forward_ops(snapshot, actions)
    times = {name: [] for name in plans}
    order = list(plans)
    for round_index in range(repeats):
        for name in (order if round_index % 2 == 0 else order[::-1]):
            start = time.perf_counter()
            env.forward_ops(snapshot, plans[name])
            times[name].append(time.perf_counter() - start)
    return {name: float(min(values) * 1e3) for name, values in times.items()}


class _StageClock:
    """Wall seconds of each stage of one seed's job (``stage_seconds`` per seed in ``results.json``); each stage is
    also shown on the progress bar. Calling it ends the running stage and starts the named one."""

    def __init__(self, bar, seed: int):
        self.bar, self.seed = bar, seed
        self.seconds: dict[str, float] = {}
        self._name, self._start = None, time.perf_counter()

    def __call__(self, name: str | None) -> None:
        now = time.perf_counter()
        if self._name is not None:
            self.seconds[self._name] = self.seconds.get(self._name, 0.0) + now - self._start
        self._name, self._start = name, now
        if name is not None:
            self.bar.set_postfix_str(f"seed {self.seed}: {name}")


def _run_seed(config: RunConfig, base, seed: int, bar) -> dict:
    """One seed's job (the module docstring's steps 1-5): its record in ``results.json["per_seed"]``."""
    params = stream_params(config.stream, config.snapshots)
    stream, snapshots = _draw_stream(config, base, params, seed)
    graphs = [snapshot.graph for snapshot in snapshots]
    train_ids = [int(i) for i in stream.train_indices]
    heldout_ids = [int(i) for i in stream.heldout_indices]
    stage = _StageClock(bar, seed)
    stage("FP32 training")
    # With --model-seed every seed compresses the same FP32 model, so the spread over seeds is the controller's.
    model_seed = seed if config.model_seed is None else config.model_seed
    model, fp32_fit = _train_fp32_model(config, graphs, train_ids, model_seed)
    env, reward, budgeted = _budgeted_env(config, params, model, graphs, snapshots, train_ids, heldout_ids)
    # The controller (dste.controller.fit): the DQN, greedy search's plan fitted to each budget as its fallback, and
    # the margin the Q-values must clear to override it, all on the training snapshots.
    fitted = fit_controller(
        env, reward, train_ids, episodes=config.episodes, seed=seed,
        leave_out_costless_pruning=config.model in COSTLESS_PRUNING_RULE_MODELS, probe=config.probe,
        fallback=config.fallback, progress=show_progress(config), stage=stage,
    )
    policies = static_baselines(env) + [
        RandomPolicy(len(env.action_space), seed=seed), fitted.greedy, fitted.projected, fitted.policy
    ]
    hindsight, feasible = None, None
    if config.oracle:
        stage("best static policy in hindsight")
        hindsight, feasible = _hindsight_policies(env, reward, heldout_ids)
        policies += [policy for policy in (hindsight, feasible) if policy is not None]
    # The held-out snapshots continue the stream: each policy first passes (unscored) through the last
    # training snapshot, so an adaptive policy meets the first held-out one with its own previous masks.
    lead_in = train_ids[-1:]
    stage("policies on held-out snapshots")
    judged = tqdm(policies, desc="policies on held-out snapshots", disable=not show_progress(config), leave=False)
    outcomes = {policy.name: run_policy(env, policy, heldout_ids, lead_in=lead_in) for policy in judged}
    # the held-out episodes' checks (not the lead-in's), before any diagnostic below runs more
    fallback_record = _fallback_record(fitted, env.num_layers, heldout_ids)
    accuracy_first_fallback = None
    if budgeted:
        outcomes["dste_dqn_unbudgeted"], accuracy_first_fallback = _accuracy_first(
            config, env, reward, fitted, train_ids, heldout_ids, lead_in, seed, stage
        )
    stage("CPU time of each policy")
    first_actions = {name: outcome.outcomes[0].actions for name, outcome in outcomes.items()}
    cpu_ms = _cpu_times_ms(env, heldout_ids[0], first_actions, config.timing_repeats)
    results = {name: _policy_row(env, outcome, reward, fitted.guard, cpu_ms[name])
               for name, outcome in outcomes.items()}
    extras = {}
    stage_start = time.perf_counter()
    if config.frontier and seed == 0:
        stage("static sweep (frontier)")
        # One seed's sweep draws the frontier: 49 static policies on every seed would cost more than the rest
        # of the job, and the static points move little between seeds (the table's std says how much).
        extras["static_sweep"] = static_sweep(env, heldout_ids, reward, lead_in=lead_in)
        extras["static_sweep_seconds"] = time.perf_counter() - stage_start
    if config.oracle:
        extras.update(_oracle_extras(
            config, env, reward, fitted, hindsight, feasible, outcomes["dste_dqn"], train_ids, heldout_ids, lead_in,
            seed, stage,
        ))
    stage(None)
    trained = fitted.trained
    return {
        **extras,
        "stage_seconds": stage.seconds,
        "seed": seed,
        "stream": config.stream,
        "stream_seed": stream.seed,
        "model_seed": model_seed,
        "fp32_latency_us": [_fp32_latency_of(env)(n) for n in heldout_ids],
        # what always predicting one class scores on the nodes each held-out snapshot's accuracy averages (its test
        # nodes), for the best such class
        "majority_class_share": [_majority_share(graphs[n].y[env.evaluated_nodes(n)]) for n in heldout_ids],
        "test_nodes": [int(env.evaluated_nodes(n).size) for n in heldout_ids],
        # the least any plan can spend on each held-out snapshot (latency_table is exact for actions without a
        # partial FP16 share, which the cheapest never has)
        "cheapest_latency_us": [fitted.guard.cheapest_us(n) for n in heldout_ids],
        "budget_of_fp32": [env.budget_of_fp32(n) for n in heldout_ids] if isinstance(env, BudgetScheduleEnv) else None,
        "fallback": fallback_record,
        "accuracy_first_fallback": accuracy_first_fallback,
        "reward": reward.to_dict(),
        "train_snapshots": train_ids,
        "heldout_snapshots": heldout_ids,
        "fp32_training": fp32_fit,
        "controller": {
            "best_episode": trained.best_episode,
            "selection_scores": trained.selection_scores,
            "reward_first_20": float(np.mean(trained.episode_rewards[:20])),
            "reward_last_20": float(np.mean(trained.episode_rewards[-20:])),
        },
        "policies": results,
        "agent": trained.agent,
    }


def _draw_stream(config: RunConfig, base, params, seed: int):
    """(the stream, its snapshots) of seed ``seed``: the stream ``config.stream_seed`` names, or the seed's own."""
    from dste.data import SnapshotStream

    stream = SnapshotStream(base, params, seed=seed if config.stream_seed is None else config.stream_seed)
    try:
        return stream, list(stream)
    except ValueError as error:
        if "edge_shortfall_limit" not in str(error):
            raise
        # the knobs the message names are the preset's, which dste run does not expose
        raise ValueError(f"{error}. With dste run, whose streams are presets: give --stream {config.stream} a larger "
                         "or sparser graph, or choose another --stream (dste.data.SnapshotStream takes the knobs "
                         "themselves)") from None


def _train_fp32_model(config: RunConfig, graphs, train_ids, model_seed: int):
    """(the FP32 model, its training record): trained on the training snapshots with ``--fp32-snapshots training``,
    else on the first snapshot (by default distilled from ``--fp32-teachers`` teachers)."""
    from dste.gnn import make_model, train_fp32_on_snapshots, train_new_fp32_model

    settings = dict(epochs=config.epochs, patience=min(50, config.epochs), progress=show_progress(config))
    if config.fp32_snapshots == "training":
        model = make_model(graphs[0], config.model, hidden=config.hidden, seed=model_seed)
        return model, train_fp32_on_snapshots(model, [graphs[i] for i in train_ids], seed=model_seed, **settings)
    return train_new_fp32_model(graphs[0], config.model, config.hidden, model_seed,
                                teachers=config.fp32_teachers, **settings)


def _budgeted_env(config: RunConfig, params, model, graphs, snapshots, train_ids, heldout_ids):
    """(environment, reward, whether a latency budget is set) of one seed: the GNN environment over the stream,
    wrapped in ``BudgetScheduleEnv`` where the budget is per snapshot in microseconds ('<x>fp32' or the stream's
    own), else budgeted by the ``static50`` actions or the reward's numeric ceiling."""
    from dste.experiments.env_layers import LayerEvaluator, run_bytes_budget
    from dste.experiments.gnn_env import GNNCompressionEnv

    space = ActionSpace()  # one grid: the budget's actions are indices into the environment's
    budget_actions = None
    numeric_budget = None if isinstance(config.budget, str) else config.budget
    schedule = None
    if isinstance(config.budget, str) and config.budget.endswith("fp32"):
        fraction = fp32_budget_fraction(config.budget)
        schedule = lambda n: fraction  # noqa: E731
    elif params.budget_cycle or params.budget_slo:
        # The stream sets the budget (the option's is unused) in multiples of uniform INT8's latency: each snapshot's
        # own (budget_cycle) or its latency at the last re-provisioning, StreamParams.slo_anchor (budget_slo); set
        # below, once the environment prices INT8.
        schedule = _STREAM_BUDGET
        numeric_budget = None
    if schedule is None and config.budget == "static50":
        # Each snapshot's budget is what static 50 % sparse INT8 would spend on it (modelled, label-free):
        # the controller is asked for more accuracy at no more latency than the static policy it replaces.
        budget_actions = [space.nearest(0.5, 0.0)] * len(model.convs)
    # Every seed's job keeps as many layer outputs as its share of the machine's memory allows (only the time
    # depends on it: an evicted run is recomputed bit for bit).
    layers = LayerEvaluator(
        model, graphs, space, config.target, run_bytes_kept=run_bytes_budget(min(config.jobs, config.seeds))
    )
    env = GNNCompressionEnv(
        model, graphs, train_ids, heldout_ids, target=config.target, budget_actions=budget_actions, layers=layers
    )
    if schedule is not None:
        fp32_latency = _fp32_latency_of(env)
        if schedule is _STREAM_BUDGET and params.budget_slo:
            # INT8's latency at the last re-provisioning (snapshot 0 for all when the objective is never refreshed)
            objective = lambda n: params.budget_slo * env.reference_latency(params.slo_anchor(n))  # noqa: E731
            schedule = microsecond_budget(objective, fp32_latency)
        elif schedule is _STREAM_BUDGET:
            cycle = lambda n: snapshots[n].latency_budget  # noqa: E731
            schedule = int8_multiple_budget(cycle, env.reference_latency, fp32_latency)
        env = BudgetScheduleEnv(env, schedule, fp32_latency)
    reward = RewardConfig(config.lambda_latency, numeric_budget, config.budget_penalty)
    return env, reward, budget_actions is not None or schedule is not None


def _hindsight_policies(env, reward, heldout_ids):
    """(best static policy in hindsight, the same within every held-out budget or None where no plan fits them)."""
    # The best static policy in hindsight: greedy search on the held-out snapshots themselves.
    hindsight = greedy_search(env, reward, heldout_ids)
    hindsight.name = "static_hindsight"
    # The same within every held-out snapshot's budget (the guard's), as the controller must stay: the soft
    # penalty lets the plan above overspend by a little and keep its accuracy.
    return hindsight, feasible_static_search(env, reward, heldout_ids, hindsight)


def _fallback_record(fitted, num_layers: int, heldout_ids) -> dict:
    """The budgeted controller's fallback as ``results.json`` reports it; its counters over the held-out
    snapshots only (the fitted plan also counts the training snapshots it ran on)."""
    projected, choice, allowed = fitted.projected, fitted.recency_choice, fitted.allowed
    return {
        "margin": fitted.margin, "margin_scores": fitted.margin_scores, "greedy_actions": list(fitted.greedy.actions),
        "plan_actions": list(fitted.plan.actions), "recency_half_life": RECENCY_HALF_LIFE,
        "recency_plan_actions": list(fitted.recent.actions), "plain_plan_actions": list(fitted.plain.actions),
        "recency_plan_kept": choice.recent_kept, "recency_gain": choice.gain,
        "recency_gain_standard_error": choice.standard_error,
        "recency_gain_errors": {"snapshots": choice.snapshot_error, "nodes": choice.node_error},
        "costless_pruning_rule": allowed is not None,
        "costless_pruning_left_out": [0] * num_layers if allowed is None else [int((~mask).sum()) for mask in allowed],
        "share_of_held_out_decisions_taken": fitted.policy.fallback_share,
        "probe": projected.probe,
        "plans_probed": sum(projected.probes_by_snapshot.get(n, 0) for n in heldout_ids),
        "check_where_greedy_fits": projected.check_where_greedy_fits,
        "check_validation_gains": projected.check_gains.tolist(),
        "greedy_plan_at_same_latency": sorted(projected.baseline_snapshots & set(heldout_ids)),
    }


def _accuracy_first(config: RunConfig, env, reward, fitted, train_ids, heldout_ids, lead_in, seed: int, stage):
    """(held-out outcome, fallback record or None) of the accuracy-first controller: the same controller trained
    with no latency budget but a memory ceiling (uniform INT8's footprint), the operating point reported beside
    the budgeted one."""
    # Its accuracy term is agreement with the FP32 model's predictions on every node of the training snapshot
    # (label-free), not the 500-odd validation labels: staying within a fraction of a point of FP32 is below what
    # those labels resolve (one node is 0.2 pt). The ceiling stops it buying that agreement with FP16 bytes that
    # pruning does not pay for.
    stage("accuracy-first controller training")
    accuracy_first_env = env.variant(budget_actions=None, train_accuracy="agreement")
    accuracy_first = replace(
        run_train_config(reward, config.episodes, seed),
        reward=replace(reward, memory_budget=ACCURACY_FIRST_MEMORY_BUDGET, memory_penalty=1.0),
    )
    unbudgeted = train_controller(accuracy_first_env, accuracy_first, progress=show_progress(config))
    # Its conservative fallback, as the budgeted controller's: greedy search's plan on the same reward, on GCN
    # without costless pruning (a pruned layer that saves no latency cut agreement for memory on held-out
    # snapshots), kept unless the Q-values separate from it by a margin calibrated on the training snapshots. No
    # budget to fit it to: the plan is static.
    first_plan, first_margin, first_margin_scores = None, 0.0, {}
    if config.fallback:
        stage("accuracy-first fallback")
        first_plan = greedy_search(
            accuracy_first_env, accuracy_first.reward, train_ids, allowed=fitted.allowed
        ).actions
        first_margin, first_margin_scores = calibrate_margin(
            accuracy_first_env, unbudgeted.agent, None, first_plan, accuracy_first.reward, train_ids
        )
    first_policy = DQNPolicy(unbudgeted.agent, "dste_dqn_unbudgeted", fallback=first_plan, margin=first_margin)
    outcome = run_policy(env.variant(budget_actions=None), first_policy, heldout_ids, lead_in=lead_in)
    for episode in outcome.outcomes:
        episode.budget_fraction = env.budget_fraction(episode.snapshot)
    if first_plan is None:
        return outcome, None
    return outcome, {"margin": first_margin, "margin_scores": first_margin_scores, "plan_actions": list(first_plan),
                     "share_of_held_out_decisions_taken": first_policy.fallback_share}


def _policy_row(env, outcome, reward, guard, cpu_ms: float) -> dict:
    """One policy's row of ``results.json["per_seed"][s]["policies"]``: held-out means and per-snapshot figures."""
    episodes = outcome.outcomes
    return {
        "accuracy": outcome.accuracy,
        "latency_us": outcome.latency_us,
        "bytes": float(np.mean([o.nbytes for o in episodes])),
        "bytes_by_kind": {key: float(np.mean([o.bytes_by_kind[key] for o in episodes]))
                          for key in episodes[0].bytes_by_kind},
        "reward": outcome.mean_reward(reward),  # judged with the budget of the main reward
        "cpu_ms": cpu_ms,
        "actions": [["fp32" if a < 0 else env.action_space[a].label() for a in o.actions] for o in episodes],
        "per_snapshot_accuracy": [o.accuracy for o in episodes],
        "per_snapshot_latency_us": [o.latency_us for o in episodes],
        # the main reward's ceiling on each snapshot (None: no latency budget), as the guard enforces it
        "per_snapshot_budget_us": [guard.budget_us(o.snapshot) for o in episodes],
    }


def _oracle_extras(config: RunConfig, env, reward, fitted, hindsight, feasible, controller_outcome, train_ids,
                   heldout_ids, lead_in, seed: int, stage) -> dict:
    """``--oracle``'s diagnostics, chosen with the held-out labels and never used to choose: the feasible hindsight
    search, what each margin would have scored, the cross-fitted static plan and the per-snapshot oracles."""
    extras = {
        "feasible_hindsight": (
            {"search": None, "note": "no static plan fits every held-out snapshot's budget"} if feasible is None else
            {"search": feasible.search, "actions": list(feasible.actions), "plans_measured": len(feasible.trials),
             "feasible_plans": len(feasible.feasible_trials)}
        )
    }
    if config.fallback:
        # What each candidate margin would have scored on the held-out snapshots (their labels: a diagnostic of
        # the calibration on the training snapshots, never used to choose).
        extras["oracle_margin_scores"] = _heldout_margin_scores(
            env, fitted.trained.agent, fitted.guard, fitted.projected, reward, heldout_ids, lead_in
        )
    stage("cross-fitted static plan")
    # How much of the hindsight plan's lead is its choice on the labels it is scored with (dste.controller.crossfit).
    # It ranges over the plans the within-budget search ran (every plan of a two-layer model); none fits: None.
    cross_fit = None if feasible is None else cross_fitted_static(
        env, reward, heldout_ids, feasible.trials, controller_outcome, seed=seed
    )
    extras["cross_fit"] = None if cross_fit is None else cross_fit.to_dict()
    stage("per-snapshot oracle")
    # Each snapshot's searches reuse the episodes the searches above ran on it.
    train_choices = snapshot_oracle(env, reward, train_ids, measured=fitted.plain.trials)
    extras["oracle_train"] = [asdict(c) for c in train_choices]
    budgeted = any(fitted.guard.budget_us(n) is not None for n in heldout_ids)
    heldout_trials = (hindsight if feasible is None else feasible).trials
    greedy_choices, fitting_choices = snapshot_oracles(
        env, reward, heldout_ids, within_budget=budgeted, measured=heldout_trials
    )
    extras["oracle_heldout"] = [asdict(c) for c in greedy_choices]
    if budgeted:
        extras["oracle_heldout_within_budget"] = [None if c is None else asdict(c) for c in fitting_choices]
    return extras


def _heldout_margin_scores(env, agent, guard, fallback, reward, heldout_ids, lead_in) -> dict:
    """Per candidate margin of ``calibrate_margin`` (as its keys), the reward and accuracy the DQN with that margin
    over ``fallback`` scores on the held-out snapshots."""
    scores = {}
    for margin in FALLBACK_MARGINS:
        policy = DQNPolicy(agent, guard=guard, fallback=fallback, margin=margin)
        outcome = run_policy(env, policy, heldout_ids, lead_in=lead_in)
        scores[float(margin)] = {"reward": outcome.mean_reward(reward), "accuracy": outcome.accuracy,
                                 "share_of_decisions_to_fallback": policy.fallback_share}
    return scores


_STREAM_BUDGET = object()
"""Marks a stream's own budget (``StreamParams.budget_cycle`` or ``budget_slo``) until uniform INT8's latency, its
unit, is known."""


def _fp32_latency_of(env):
    """snapshot -> modelled latency (us) of the uncompressed model on it (the FP32 row of the table)."""
    layers = env.layers

    def fp32_latency(n: int) -> float:
        return float(sum(r.latency_us for r in layers.static_reports(int(n), [FP32_ACTION] * layers.num_layers)))

    return fp32_latency


def show_progress(config: "RunConfig", stream=None) -> bool:
    """Progress bars only when asked for and the output is a terminal (not a log file or a pipe)."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(config.progress and callable(isatty) and isatty())


def default_out_dir() -> Path:
    """A new directory ``runs/<timestamp>`` (``new_stamped_dir``): two runs never share one."""
    return new_stamped_dir(Path("runs"))


@contextmanager
def _single_threaded():
    """BLAS and torch on one thread for the whole job, restored afterwards.

    Multi-threaded BLAS sums in an order that depends on the thread count; the controller's training reacts
    to last-bit differences in the activations it quantizes, so the job's numbers would depend on the machine's
    core count. On one thread they are the same for every core count (and the small products lose little); they
    still differ between CPU instruction sets, whose float kernels round differently (the module docstring).
    """
    from dste.nkisim.blas import single_threaded

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with single_threaded():
            yield
    finally:
        torch.set_num_threads(threads)


def _majority_share(labels: np.ndarray) -> float:
    """Share of ``labels`` held by their most frequent class (0.0 for no labels)."""
    return float(np.bincount(labels).max() / labels.size) if labels.size else 0.0


def _run_seed_in_worker(config: RunConfig, base, seed: int) -> dict:
    with _single_threaded(), freed_memory_kept(), tqdm(disable=True) as no_bar:
        return _run_seed(config, base, seed, no_bar)


def _run_seeds(config: RunConfig, base) -> list[dict]:
    """Per seed, ``_run_seed``'s result, in seed order.

    With ``jobs > 1`` the seeds run in that many worker processes (spawned: a fresh interpreter each), each on
    one thread as the sequential job is, so the numbers do not depend on ``jobs``; only the measured CPU times
    do, since the workers share the machine's cores.
    """
    jobs = min(config.jobs, config.seeds)
    with tqdm(total=config.seeds, desc="dste run (seeds)", disable=not show_progress(config)) as bar:
        if jobs == 1:
            results = []
            with _single_threaded():
                for seed in range(config.seeds):
                    results.append(_run_seed(config, base, seed, bar))
                    bar.update()
            return results
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        worker_config = replace(config, progress=False)
        bar.set_postfix_str(f"{jobs} worker processes")
        by_seed = {}
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(_run_seed_in_worker, worker_config, base, seed): seed for seed in range(config.seeds)}
            for future in as_completed(futures):
                by_seed[futures[future]] = future.result()
                bar.update()
        return [by_seed[seed] for seed in range(config.seeds)]


RUN_OUTPUTS = ("results.json", "table.txt", "accuracy_vs_latency.png", "frontier.png", "snapshots.png",
               "controller_seed0.pt")
"""What a run writes to its ``--out`` directory (``frontier.png`` only with the frontier)."""


def run(config: RunConfig) -> dict:
    """Run the main job; writes ``results.json``, ``accuracy_vs_latency.png``, ``frontier.png``, ``snapshots.png``
    (with a latency budget), ``table.txt`` and the DQN checkpoint of the first seed to the output directory, and
    returns the JSON-able report."""
    start = time.perf_counter()
    out = Path(config.out) if config.out else default_out_dir()
    # an interrupted run's outputs (a checkpoint, plots without results.json) are kept too
    check_out_dir(out, RUN_OUTPUTS, config.overwrite, "run")
    try:
        base = _load_base(config)
        size = GraphSize.of(base)
        config = schedule_for(config, size)
        workers = min(config.jobs, config.seeds)
        warning = memory_check(size, config.snapshots, workers, config.hidden)
    except BaseException:
        if not config.out and not any(out.iterdir()):  # the new runs/<timestamp> of a run refused before any work
            out.rmdir()
        raise
    if warning:
        print(warning, file=sys.stderr, flush=True)
    _notice_quiet_heldout(config)
    try:
        out.mkdir(parents=True, exist_ok=True)  # after the checks: a refused run leaves no empty directory behind
    except OSError as error:
        raise ValueError(f"--out {out}: the directory cannot be created ({error.strerror}); give a writable "
                         "directory") from None
    with freed_memory_kept():
        per_seed = _run_seeds(config, base)
    checkpoint = per_seed[0].pop("agent").save(out / "controller_seed0.pt")
    for entry in per_seed[1:]:
        entry.pop("agent")
    summary = summarise(per_seed)
    if config.budget is None and "dste_dqn" in summary:  # RunConfig reads --budget none as None
        summary["dste_dqn"]["label"] = "DSTE (DQN, no budget)"  # the reward prices latency; nothing caps it
    report = {
        "config": asdict(config),
        "dataset": {**base.summary(), "feature_scale_exponent": int(base.meta.get("feature_scale_exponent", 0))},
        "latency_label": f"modelled NeuronCore latency ({config.target}), not measured",
        "cpu_time_label": (f"measured CPU wall time per inference through dste.spmm (cpu backend), shortest of "
                           f"{config.timing_repeats} rounds interleaving the policies, "
                           f"{platform.processor() or platform.machine()}"
                           + (f", {workers} worker processes sharing the cores" if workers > 1 else "")),
        "summary": summary,
        "acceptance": acceptance(summary),
        "frontier": frontier_summary(per_seed, summary),
        "oracle": oracle_summary(per_seed, summary),
        "budget_out_of_reach": budget_out_of_reach(per_seed),
        "fp32_against_chance": fp32_against_chance(per_seed, summary),
        "per_seed": per_seed,
        "controller_checkpoint": str(Path(checkpoint).resolve()),  # readable from any working directory
        "wall_time_s": None,
    }
    if config.quick:
        report["smoke_run"] = True
        report["smoke_run_note"] = SMOKE_RUN_NOTE
    report["budget_note"] = budget_note(report["budget_out_of_reach"])
    report["chance_note"] = chance_note(report["fp32_against_chance"], base.edge_homophily())
    # the lines the table opens with (after the smoke-run note): what makes its numbers mean less than they seem
    report["table_note"] = "\n".join(note for note in (report["chance_note"], report["budget_note"]) if note) or None
    table = format_table(summary, config.target, quick=config.quick, note=report["table_note"],
                         fp32_teachers=config.fp32_teachers)
    report["wall_time_s"] = time.perf_counter() - start
    from dste.format.io import atomic_write

    atomic_write(out / "table.txt", lambda handle: handle.write(table + "\n"), mode="w")
    text = strict_json.dumps(report, indent=2)  # NumPy scalars and arrays become plain values; anything else raises
    atomic_write(out / "results.json", lambda handle: handle.write(text), mode="w")
    title = f"{config.dataset}, stream {config.stream}, {config.model.upper()}, {config.seeds} seed(s)"
    if config.fp32_snapshots == "training":
        title += ", FP32 on every training snapshot"
    if config.fp32_teachers:
        title += f", FP32 distilled from {config.fp32_teachers} teachers"
    plot_accuracy(summary, out / "accuracy_vs_latency.png", config.target, title)
    if report["frontier"] is not None:
        swept = ", ".join(str(seed) for seed in report["frontier"]["seeds"])
        plot_frontier(report["frontier"], out / "frontier.png", config.target, f"{title}; frontier on seed {swept}")
    plot_snapshots(per_seed[0], out / "snapshots.png", config.target, title)
    if report["frontier"] is None:  # under --overwrite, an earlier run's frontier would sit beside these results
        (out / "frontier.png").unlink(missing_ok=True)
    report["out_dir"] = str(out)
    return report
