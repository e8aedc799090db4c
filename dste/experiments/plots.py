"""The plots ``dste run`` writes: ``accuracy_vs_latency.png``, ``frontier.png`` and ``snapshots.png`` (matplotlib,
Agg backend, each written atomically)."""

from __future__ import annotations

from pathlib import Path

from dste.experiments.report import POLICY_LABELS

__all__ = ["plot_accuracy", "plot_frontier", "plot_snapshots", "PLOT_MARKERS", "SNAPSHOT_PLOT_POLICIES"]


def plot_frontier(frontier: dict, path: Path, target: str, title: str) -> None:
    """Accuracy against modelled latency and against memory: every static uniform action (grey), the Pareto front
    of the points a user can run (line; the hindsight rows, chosen with the held-out labels, are drawn but not on
    it), greedy search and the controllers (labelled). Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    points = frontier["points"]
    for ax, key, label, front in (
        (axes[0], "latency_us", f"modelled NeuronCore latency per inference (us, {target}; modelled, not measured)",
         "pareto_latency"),
        (axes[1], "bytes", "memory footprint (bytes)", "pareto_memory"),
    ):
        static = [p for p in points if p["kind"] == "static"]
        ax.scatter([p[key] for p in static], [100 * p["accuracy"] for p in static], s=14, color="0.6",
                   label="static uniform actions (and FP32)")
        by_name = {p["name"]: p for p in points}
        line = sorted((by_name[n] for n in frontier[front]), key=lambda p: p[key])
        ax.plot([p[key] for p in line], [100 * p["accuracy"] for p in line], color="0.3", lw=1,
                label="Pareto front (without hindsight rows)")
        for i, p in enumerate(q for q in points if q["kind"] != "static" or q["name"] == "fp32"):
            ax.scatter(p[key], 100 * p["accuracy"], s=60, marker=PLOT_MARKERS[i % len(PLOT_MARKERS)],
                       facecolors="none", edgecolors=f"C{i % 10}", linewidths=1.6,
                       label=POLICY_LABELS.get(p["name"], p["name"]), zorder=4)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    _save_two_panels(fig, axes, title, path)


PLOT_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")


SNAPSHOT_PLOT_POLICIES = ("dste_dqn", "static_hindsight", "greedy", "int8")
"""The policies ``snapshots.png`` follows over the held-out snapshots (those the run has)."""


def plot_snapshots(seed_result: dict, path: Path, target: str, title: str) -> bool:
    """One seed's held-out snapshots in order: each policy's modelled latency against the snapshot's budget, and
    its accuracy; the controller's plan is written at its latency points, so a change of plan is visible. Skipped
    (False) when the run has no latency budget. Written atomically."""
    policies = seed_result["policies"]
    budgets = policies["dste_dqn"]["per_snapshot_budget_us"]
    if any(budget is None for budget in budgets):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    snapshots = seed_result["heldout_snapshots"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharex=True)
    axes[0].step(snapshots, budgets, where="mid", color="k", lw=1.5, label="latency budget")
    for i, name in enumerate(n for n in SNAPSHOT_PLOT_POLICIES if n in policies):
        # the controller is drawn on top: where a baseline takes the same plan, its line hides the baseline's
        row, style = policies[name], dict(marker=PLOT_MARKERS[i % len(PLOT_MARKERS)], color=f"C{i}", lw=1.2,
                                          zorder=4 if name == "dste_dqn" else 3)
        label = POLICY_LABELS.get(name, name)
        axes[0].plot(snapshots, row["per_snapshot_latency_us"], label=label, **style)
        axes[1].plot(snapshots, [100 * a for a in row["per_snapshot_accuracy"]], label=label, **style)
        if name == "dste_dqn":
            for n, latency, plan in zip(snapshots, row["per_snapshot_latency_us"], row["actions"]):
                axes[0].annotate(" | ".join(plan), (n, latency), textcoords="offset points", xytext=(0, -14),
                                 ha="center", fontsize=7, color=style["color"])
    axes[0].set_ylabel(f"latency per inference (us, {target}; modelled, not measured)")
    axes[1].set_ylabel("held-out test accuracy (%)")
    for ax in axes:
        ax.set_xlabel("held-out snapshot")
        ax.set_xticks(snapshots)
        ax.set_xlim(min(snapshots) - 0.6, max(snapshots) + 0.6)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    _write_figure(fig, f"{title}: seed {seed_result['seed']}, snapshot by snapshot", path)
    return True


def plot_accuracy(summary: dict, path: Path, target: str, title: str) -> None:
    """Two panels, accuracy against modelled latency and against memory; every series visible.

    Series that land on the same point (e.g. INT8 and DSTE accuracy-first, greedy search and DSTE budgeted)
    get distinct hollow markers of decreasing size, drawn largest first, and their labels are stacked at
    growing vertical offsets, so none hides another. Written atomically.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    panels = (
        (axes[0], "latency_us_mean", "latency_us_std", f"modelled NeuronCore latency per inference (us, {target}; modelled, not measured)"),
        (axes[1], "bytes_mean", None, "memory footprint (bytes: graph + features + weights + activations)"),
    )
    names = list(summary)
    for ax, x_key, x_err, x_label in panels:
        seen: dict[tuple, int] = {}
        for i, name in enumerate(names):
            s = summary[name]
            x, y = float(s[x_key]), 100 * float(s["accuracy_mean"])
            point = (round(x, 6), round(y, 6))
            stacked = seen.get(point, 0)
            seen[point] = stacked + 1
            ax.errorbar(
                x, y, yerr=100 * s["accuracy_std"], xerr=s[x_err] if x_err else None,
                fmt=PLOT_MARKERS[i % len(PLOT_MARKERS)], markersize=max(14 - 4 * stacked, 4), capsize=3,
                markerfacecolor="none", markeredgewidth=1.6, color=f"C{i % 10}", label=s["label"], zorder=3 + stacked,
            )
            ax.annotate(
                s["label"], (x, y), textcoords="offset points", xytext=(8, 6 + 11 * stacked), fontsize=7,
                color=f"C{i % 10}",
            )
        ax.set_xlabel(x_label)
        ax.grid(alpha=0.3)
    _save_two_panels(fig, axes, title, path)


def _save_two_panels(fig, axes, title, path):
    """Label, lay out and write (atomically) a figure of two accuracy panels, then free it."""
    axes[0].set_ylabel("held-out test accuracy (%)")
    axes[1].legend(fontsize=7, loc="best")
    _write_figure(fig, title, path)


def _write_figure(fig, title, path):
    """Title, lay out and write (atomically) a figure as PNG, then free it."""
    import matplotlib.pyplot as plt

    from dste.format.io import atomic_write

    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda handle: fig.savefig(handle, dpi=120, format="png"))
    plt.close(fig)
