"""The README's stream tables, from `dste run --oracle` outputs: one markdown row per run, the counts behind the
"What holds, and what does not" list, the cross-fitted best static plan's lead where the runs measured it
(``dste.controller.crossfit``), what adapting the plan per snapshot is worth beside it, in sample and cross-fitted
(where the runs measured that too), and a plot of every run's accuracy against the static plans'.

    python bench/stream_summary.py --collect bench/results/streams.json 'Cora,bursty=runs/cora_bursty' ...
    python bench/stream_summary.py bench/results/streams.json --plot bench/results/streams.png
        (and bench/results/streams_cross_fit.png where the runs measured the cross-fitted static plan,
        bench/results/streams_adaptivity.png where they measured the plan chosen per snapshot too)

``--collect`` keeps, per run, what the tables read from its ``results.json`` (the summary, the oracle, the frontier's
headline figures, per-seed fallback margins), keyed by ``graph,stream`` labels in the order given; without it the
named file is read. A cell is accuracy %, mean modelled latency us and mean reward; *over n of N*: held-out
snapshots whose budget the policy overspends, of the run's N (seeds x held-out snapshots; 9 in the README's table).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dste.controller import dominates
from dste.controller.oracle import LATENCY_TIE_US
from dste.experiments import strict_json

BASELINES = {"greedy": "greedy search", "int8": "INT8", "fp16": "FP16", "static_sparse50_int8": "static 50 %",
             "fp32": "FP32", "random": "random"}
ADAPTIVITY_STREAMS = ("bursty", "budget-shift", "growing", "drift")
HEADER = ("| graph, stream | DSTE budgeted | greedy search | best static in hindsight (held-out labels) | best static "
          "within every budget (held-out labels) | it against DSTE | per-snapshot best within its budget | FP32 | "
          "DSTE − FP32, paired | baselines dominating DSTE |\n|" + "---|" * 10)


def collect(pairs: list[str]) -> dict:
    """``label=run_dir`` pairs -> {label: the parts of run_dir/results.json the tables read}."""
    runs = {}
    for pair in pairs:
        label, _, path = pair.partition("=")
        if not path:
            raise SystemExit(f"expected LABEL=RUN_DIR, got {pair!r}")
        result = json.loads((Path(path) / "results.json").read_text())
        if "oracle" not in result:
            raise SystemExit(f"{path}: not a `dste run --oracle` output (no oracle section)")
        runs[label] = {
            "config": result["config"], "summary": result["summary"], "oracle": result["oracle"],
            "frontier": {k: v for k, v in result["frontier"].items() if k != "points"},
            "margins": [seed["fallback"]["margin"] for seed in result["per_seed"]],
            "wall_time_s": result["wall_time_s"],
        }
    return runs


def _point(policy: dict) -> tuple[float, float]:
    return policy["latency_us_mean"], policy["accuracy_mean"]


def held_out_decisions(run: dict) -> int:
    """Held-out snapshots over every seed of a run (3 seeds x 3 in the README's table), from its configuration."""
    from dste.data.stream import heldout_count, stream_params

    config = run["config"]
    fraction = stream_params(config["stream"], config["snapshots"]).heldout_fraction
    return int(config["seeds"]) * heldout_count(int(config["snapshots"]), fraction)


def _over(policy: dict, total: int) -> int:
    return round(total * (1 - policy.get("share_within_budget", 1.0)))


def _cell(policy: dict, total: int, bold: bool = False) -> str:
    accuracy = 100 * policy["accuracy_mean"]
    text = f"**{accuracy:.2f} ± {100 * policy['accuracy_std']:.2f}**" if bold else f"{accuracy:.2f}"
    text += f", {policy['latency_us_mean']:.2f}, {policy['reward_mean']:.4f}"
    return text + (f" (over {_over(policy, total)} of {total})" if _over(policy, total) else "")


def _feasible_static(summary: dict) -> dict:
    """The best static plan within every budget; the unconstrained hindsight plan where a run has no such row."""
    return summary.get("static_hindsight_feasible", summary["static_hindsight"])


def _label(label: str) -> str:
    graph, _, stream = label.partition(",")
    return f"{graph}, `{stream}`" if stream else f"`{graph}`"


def row(label: str, run: dict) -> tuple[str, dict]:
    """One markdown row and the facts the summary counts."""
    summary, oracle = run["summary"], run["oracle"]
    total = held_out_decisions(run)
    dste = summary["dste_dqn"]
    feasible = _feasible_static(summary)
    if dominates(_point(feasible), _point(dste)):
        gain = f"+{100 * (feasible['accuracy_mean'] - dste['accuracy_mean']):.2f} pt"
        relation = f"**dominates** ({gain})"
    else:
        tie = (feasible["accuracy_mean"] == dste["accuracy_mean"]
               and abs(feasible["latency_us_mean"] - dste["latency_us_mean"]) <= LATENCY_TIE_US)
        relation = "dominated" if dominates(_point(dste), _point(feasible)) else "tie" if tie else "trade"
    dominating = [(name, _over(summary[key], total)) for key, name in BASELINES.items()
                  if key in summary and dominates(_point(summary[key]), _point(dste))]
    shown = ", ".join(f"{name} (over {over} of {total})" if over else f"**{name}**"
                      for name, over in dominating) or "none"
    cells = [
        _label(label), _cell(dste, total, bold=True), _cell(summary["greedy"], total),
        _cell(summary["static_hindsight"], total), _cell(feasible, total), relation,
        f"{100 * oracle['per_snapshot_best_within_budget_accuracy']:.2f}, "
        f"{oracle['per_snapshot_best_within_budget_reward']:.4f}",
        f"{100 * summary['fp32']['accuracy_mean']:.2f} ± {100 * summary['fp32']['accuracy_std']:.2f}",
        f"{100 * dste['accuracy_minus_fp32_mean']:+.2f} ± {100 * dste['accuracy_minus_fp32_std']:.2f}", shown,
    ]
    facts = {
        "adaptivity": any(stream in label for stream in ADAPTIVITY_STREAMS),
        "keeps_every_budget": dste.get("share_within_budget", 1.0) == 1.0,
        "beats_static_within_budgets": dste["reward_mean"] > feasible["reward_mean"],
        "per_snapshot_plans_differ": min(oracle["distinct_per_snapshot_best_plans"]) >= 2,
        "dominated_by_a_baseline_within_budgets": any(not over for _, over in dominating),
        "dominated_by_hindsight_within_budgets": relation.startswith("**dominates"),
        "spread_at_most_1pt": 100 * dste["accuracy_std"] <= 1.0,
        # results.json writes an infinite margin as "inf" (dste.experiments.strict_json); files collected before
        # hold the token Infinity, which json reads back as inf: float() takes both
        "margin_never_finite": all(float(m) == float("inf") for m in run["margins"]),
    }
    return "| " + " | ".join(cells) + " |", facts


CROSS_FIT_HEADER = (
    "| graph, stream | best static within every budget (the table's) − DSTE | the best of every plan within every "
    "budget, chosen and scored on all held-out test nodes − DSTE | chosen on half, scored on the other half − DSTE "
    "on that half | halves where it is ahead | plans chosen over 100 halves, per seed |\n|" + "---|" * 6
)


def cross_fit_row(label: str, run: dict) -> str | None:
    """One markdown row of the cross-fitted table (reward differences x 100, so in accuracy points where the latency
    prices match), or None where the run did not measure it."""
    fit = run["oracle"].get("cross_fit")
    if fit is None:
        return None
    summary = run["summary"]
    feasible = _feasible_static(summary)
    table_lead = feasible["reward_mean"] - summary["dste_dqn"]["reward_mean"]
    cells = [
        _label(label), f"{100 * table_lead:+.2f}", f"{100 * fit['in_sample_lead']:+.2f}",
        f"**{100 * fit['cross_fitted_lead']:+.2f}**", f"{100 * fit['share_halves_static_ahead']:.0f} %",
        ", ".join(str(n) for n in fit["distinct_choices"]),
    ]
    return "| " + " | ".join(cells) + " |"


ADAPTIVITY_HEADER = (
    "| graph, stream | the best plan per snapshot within its budget − the best static plan within every budget, "
    "in sample | the same, cross-fitted | DSTE − the cross-fitted static plan | DSTE − the plan per snapshot, "
    "cross-fitted |\n|" + "---|" * 5
)


def _per_snapshot_fits(runs: dict) -> dict:
    """{label: its cross-fit} of the runs that measured the plan chosen per snapshot."""
    return {label: run["oracle"]["cross_fit"] for label, run in runs.items()
            if "cross_fitted_adaptivity_gain" in (run["oracle"].get("cross_fit") or {})}


def adaptivity_row(label: str, run: dict) -> str | None:
    """One markdown row of what adapting the plan per snapshot is worth (reward differences x 100), in sample and
    cross-fitted (``dste.controller.crossfit``), or None where the run did not measure it."""
    fit = run["oracle"].get("cross_fit")
    if fit is None or "cross_fitted_adaptivity_gain" not in fit:
        return None
    in_sample = fit["per_snapshot_in_sample_reward"] - fit["in_sample_reward"]
    gain, lead = fit["cross_fitted_adaptivity_gain"], fit["cross_fitted_lead"]  # both against the same halves' static
    cells = [_label(label), f"{100 * in_sample:+.2f}", f"**{100 * gain:+.2f}**", f"{-100 * lead:+.2f}",
             f"{-100 * (lead + gain):+.2f}"]
    return "| " + " | ".join(cells) + " |"


def plot(runs: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(runs)
    fig, ax = plt.subplots(figsize=(12, 4.8))
    series = [("dste_dqn", "DSTE budgeted", "o", "C0"), ("static_hindsight_feasible", "best static within every "
              "budget (held-out labels)", "s", "C1"), ("greedy", "greedy search (hollow: overspends a budget)", "^", "C2")]
    for key, name, marker, color in series:
        for i, label in enumerate(labels):
            summary = runs[label]["summary"]
            policy = summary.get(key, summary["static_hindsight"])
            gap = 100 * (policy["accuracy_mean"] - summary["fp32"]["accuracy_mean"])
            hollow = _over(policy, held_out_decisions(runs[label])) > 0
            ax.plot(i, gap, marker, color=color, markerfacecolor="none" if hollow else color,
                    label=name if i == 0 else None)
    best = [100 * (runs[l]["oracle"]["per_snapshot_best_within_budget_accuracy"] - runs[l]["summary"]["fp32"]["accuracy_mean"])
            for l in labels]
    ax.plot(range(len(labels)), best, "_", color="k", markersize=14, label="per-snapshot best within its budget")
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xticks(range(len(labels)), [l.replace(",", " ") for l in labels], rotation=70, ha="right", fontsize=8)
    ax.set_ylabel("accuracy - FP32\n(points, mean over seeds)")
    ax.set_title(f"dste run --oracle on {len(labels)} graph/stream pairs: the controller against the static plans")
    low = min(min(map(float, line.get_ydata())) for line in ax.get_lines())
    ax.set_ylim(low - 7, max(best) + 2)  # room for the legend under the lowest point
    ax.legend(fontsize=8, loc="lower center", ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_cross_fit(runs: dict, path: str) -> None:
    """Per run that measured it, the best static plan within every budget against DSTE: as the table chose it, the
    exhaustive best chosen and scored on all held-out test nodes, and chosen on half of them, scored on the other."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [label for label, run in runs.items() if run["oracle"].get("cross_fit")]
    series = [
        (lambda run: _feasible_static(run["summary"])["reward_mean"] - run["summary"]["dste_dqn"]["reward_mean"],
         "the table's best static within every budget", "C1"),
        (lambda run: run["oracle"]["cross_fit"]["in_sample_lead"], "exhaustive, chosen and scored on all test nodes",
         "C3"),
        (lambda run: run["oracle"]["cross_fit"]["cross_fitted_lead"], "chosen on half, scored on the other half",
         "C0"),
    ]
    fig, ax = plt.subplots(figsize=(12, 4.8))
    width = 0.27
    for k, (lead, name, color) in enumerate(series):
        ax.bar([i + (k - 1) * width for i in range(len(labels))], [100 * lead(runs[l]) for l in labels], width,
               color=color, label=name)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_yscale("symlog", linthresh=1.0)  # linear within a point of DSTE, where the close calls are
    ax.set_xticks(range(len(labels)), [l.replace(",", " ") for l in labels], rotation=70, ha="right", fontsize=8)
    ax.set_ylabel("reward - DSTE's (x 100: accuracy points\nwhere the latency prices match; linear within 1)")
    ax.set_title("The best static plan within every budget, chosen with held-out labels, against DSTE "
                 "(above 0: it is ahead)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_adaptivity(runs: dict, path: str) -> None:
    """Per run that measured it, what the best plan per held-out snapshot within its budget adds over the best static
    plan within every budget: chosen and scored on all test nodes, and chosen on half, scored on the other half; and
    DSTE against that cross-fitted static plan."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = _per_snapshot_fits(runs)
    labels, fits = list(measured), list(measured.values())
    series = [
        ([f["per_snapshot_in_sample_reward"] - f["in_sample_reward"] for f in fits],
         "a plan per snapshot − static, chosen and scored on all test nodes", "C3"),
        ([f["cross_fitted_adaptivity_gain"] for f in fits], "the same, chosen on half, scored on the other half", "C0"),
        ([-f["cross_fitted_lead"] for f in fits], "DSTE − the cross-fitted static plan", "C2"),
    ]
    fig, ax = plt.subplots(figsize=(12, 4.8))
    width = 0.27
    for k, (values, name, color) in enumerate(series):
        ax.bar([i + (k - 1) * width for i in range(len(labels))], [100 * v for v in values], width, color=color,
               label=name)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_xticks(range(len(labels)), [label.replace(",", " ") for label in labels], rotation=70, ha="right",
                  fontsize=8)
    ax.set_ylabel("reward difference x 100 (accuracy points\nwhere the latency prices match; linear within 1)")
    ax.set_title("What choosing the plan per held-out snapshot adds over one static plan, within the budgets")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="+", help="a collected JSON file, or LABEL=RUN_DIR pairs with --collect")
    parser.add_argument("--collect", metavar="OUT", help="gather LABEL=RUN_DIR pairs into OUT first")
    parser.add_argument("--plot", metavar="PNG", help="also plot every run's accuracy against the static plans'")
    args = parser.parse_args(argv)
    if args.collect:
        runs = collect(args.source)
        Path(args.collect).write_text(strict_json.dumps(runs) + "\n")
    else:
        runs = json.loads(Path(args.source[0]).read_text())
    print(HEADER)
    facts = []
    for label, run in runs.items():
        line, fact = row(label, run)
        print(line)
        facts.append(fact)
    adaptivity = [f for f in facts if f["adaptivity"]]
    count = lambda items, key: f"{sum(f[key] for f in items)} of {len(items)}"
    print(f"\nruns: {len(facts)}, on adaptivity streams: {len(adaptivity)}", file=sys.stderr)
    for key in ("keeps_every_budget", "dominated_by_a_baseline_within_budgets", "dominated_by_hindsight_within_budgets",
                "spread_at_most_1pt", "margin_never_finite"):
        print(f"{key}: {count(facts, key)}", file=sys.stderr)
    for key in ("beats_static_within_budgets", "per_snapshot_plans_differ"):
        print(f"{key} (adaptivity streams): {count(adaptivity, key)}", file=sys.stderr)
    fitted = [line for line in (cross_fit_row(label, run) for label, run in runs.items()) if line]
    if fitted:
        print("\n" + CROSS_FIT_HEADER)
        print("\n".join(fitted))
        ahead = sum(run["oracle"]["cross_fit"]["cross_fitted_lead"] > 0 for run in runs.values()
                    if run["oracle"].get("cross_fit"))
        print(f"cross-fitted static plan ahead of DSTE: {ahead} of {len(fitted)}", file=sys.stderr)
    measured = _per_snapshot_fits(runs)
    if measured:
        print("\n" + ADAPTIVITY_HEADER)
        print("\n".join(adaptivity_row(label, runs[label]) for label in measured))
        fits = list(measured.values())
        gaining = [fit for fit in fits if fit["cross_fitted_adaptivity_gain"] > 0]
        print(f"a plan per snapshot ahead of the static plan, cross-fitted: {len(gaining)} of {len(fits)}; there, DSTE "
              f"at or above the plan per snapshot: "
              f"{sum(fit['cross_fitted_lead'] + fit['cross_fitted_adaptivity_gain'] <= 0 for fit in gaining)}",
              file=sys.stderr)
    if args.plot:
        plot(runs, args.plot)
        if fitted:
            plot_cross_fit(runs, str(Path(args.plot).with_name(Path(args.plot).stem + "_cross_fit.png")))
        if measured:
            plot_adaptivity(runs, str(Path(args.plot).with_name(Path(args.plot).stem + "_adaptivity.png")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
