"""Whether a controller that keeps every budget could have a seed spread within a point: per run, the spread over
seeds of the controller's held-out accuracy beside that of the best plan within each held-out snapshot's budget,
chosen per seed with the snapshot's labels (``oracle_heldout_within_budget``: the most any budget-keeping policy
could score on that seed), of the best static plan within every budget, and of the FP32 models.

Reads ``dste run --oracle`` outputs (one directory per run, each holding ``results.json``) and prints a markdown
table; ``--out FILE`` also writes it::

    python bench/oracle_seed_spread.py 'cora-like,drift=runs/cora_like_drift' 'Y,drift=runs/y_drift' ...

Spread as the README's tables give it: population std (ddof 0) over the seeds, in points.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

HEADER = ("| run | DSTE budgeted | per-snapshot best within its budget (held-out labels) | best static within every "
          "budget (held-out labels) | FP32 | DSTE − FP32, paired |\n|" + "---|" * 6)


def seed_accuracies(results: dict) -> dict[str, list[float]]:
    """Per seed, held-out accuracy in points of the controller, the per-snapshot oracle, the static plan, FP32."""
    columns = {"dste": [], "per_snapshot_best": [], "static_within_budget": [], "fp32": []}
    for seed in results["per_seed"]:
        policies = seed["policies"]
        choices = seed.get("oracle_heldout_within_budget")
        if not choices or any(choice is None for choice in choices):
            raise ValueError("the run has no per-snapshot best within each budget: run `dste run --oracle`, on a "
                             "stream whose budgets some plan fits")
        columns["dste"].append(100 * policies["dste_dqn"]["accuracy"])
        columns["per_snapshot_best"].append(100 * float(np.mean([choice["accuracy"] for choice in choices])))
        feasible = policies.get("static_hindsight_feasible")
        columns["static_within_budget"].append(np.nan if feasible is None else 100 * feasible["accuracy"])
        columns["fp32"].append(100 * policies["fp32"]["accuracy"])
    return columns


def row(label: str, columns: dict[str, list[float]]) -> str:
    def cell(values):
        return f"{np.mean(values):.2f} ± {np.std(values):.2f}"

    paired = np.array(columns["dste"]) - np.array(columns["fp32"])
    return (f"| {label} | {cell(columns['dste'])} | {cell(columns['per_snapshot_best'])} | "
            f"{cell(columns['static_within_budget'])} | {cell(columns['fp32'])} | {np.std(paired):.2f} |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="LABEL=DIR", help="a run's label and its dste run output directory")
    parser.add_argument("--out", type=Path, help="also write the table here")
    args = parser.parse_args(argv)
    lines = [HEADER]
    for item in args.runs:
        label, sep, directory = item.partition("=")
        if not sep or not label or not directory:
            parser.error(f"expected LABEL=DIR, got {item!r}")
        path = Path(directory) / "results.json"
        if not path.is_file():
            parser.error(f"{label}: no results.json in {directory}")
        try:
            lines.append(row(label, seed_accuracies(json.loads(path.read_text()))))
        except ValueError as err:
            parser.error(f"{label}: {err}")
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
