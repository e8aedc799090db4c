"""The FP32 GCN on the Planetoid public splits (static graph) against the published figures.

    python bench/planetoid_fp32.py --root DIR [--datasets cora,citeseer,pubmed] [--seeds 10] [--hidden 64] [--model gcn]
                                   [--teachers K] [--sparse-input]

``DIR`` holds the raw Planetoid files (``ind.<name>.*``); datasets whose files are absent are skipped. Each seed
builds and trains the project's two-layer GCN (``dste.gnn.make_model``, ``train_fp32``: Adam, lr 0.01, weight decay
5e-4, up to 200 epochs, the weights of the best validation epoch) and scores the 1,000 test nodes, once with each
feature row divided by its sum (the GCN paper's preprocessing, ``load_planetoid(..., normalize_features=True)``) and
once on the files' raw values (what ``load_dataset`` and ``dste run`` use: the snapshot streams' feature drift and
noise are in those units). Published: Kipf & Welling, ICLR 2017, Table 2 (GCN only: ``--model sage`` trains the
project's GraphSAGE the same way, for which the table names no published figure). ``--teachers K`` distils each
seed's model from K others trained the same way (``train_fp32_distilled``, as ``dste run`` trains by default; the
published figure is of plain training, ``--teachers 0``, the default here). ``--sparse-input`` trains on the features
as a sparse tensor (``dste.gnn.train.SPARSE_INPUT_MIN_VALUES`` set to 0: input dropout over the nonzeros only, as
``dste run`` trains on Coauthor-CS-sized inputs; these graphs are below that size). Mean and population std (ddof 0, as the
README's tables) over the seeds. Prints a table and writes it to
``--out``/planetoid_fp32[_sage][_distilledK][_sparse_input].txt
(default ``bench/results``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
PUBLISHED_GCN_ACCURACY = {"cora": 81.5, "citeseer": 70.3, "pubmed": 79.0}


def accuracies_on_the_test_split(graph, seeds: int, hidden: int, progress, conv: str = "gcn",
                                 teachers: int = 0) -> list[float]:
    """Test accuracy (%) of the FP32 ``conv`` model (``"gcn"`` or ``"sage"``) trained on ``graph``'s public split with
    seeds ``0 .. seeds - 1``, distilled from ``teachers`` others where that is > 0."""
    from dste.gnn import train_new_fp32_model

    accuracies = []
    for seed in range(seeds):
        _, metrics = train_new_fp32_model(graph, conv, hidden, seed, teachers=teachers, epochs=200, patience=50)
        accuracies.append(100.0 * metrics["test_acc"])
        progress.update(1)
    return accuracies


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="directory of the raw Planetoid files")
    parser.add_argument("--datasets", default="cora,citeseer,pubmed")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--model", choices=("gcn", "sage"), default="gcn")
    parser.add_argument("--teachers", type=int, default=0,
                        help="distil each seed's model from this many others (0: plain training, the published recipe)")
    parser.add_argument("--sparse-input", action="store_true",
                        help="train on the features as a sparse tensor, whatever their size")
    parser.add_argument("--out", default=str(REPOSITORY / "bench" / "results"), help="'' for no file")
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from tqdm.auto import tqdm

    from dste.data import load_planetoid
    from dste.gnn import train as training

    torch.set_num_threads(1)
    if args.sparse_input:
        training.SPARSE_INPUT_MIN_VALUES = 0
    root = Path(args.root)
    requested = [name for name in args.datasets.split(",") if name]
    names = [name for name in requested if (root / f"ind.{name}.graph").is_file()]
    for name in sorted(set(requested) - set(names)):
        print(f"skipped {name}: no ind.{name}.graph under {root}", file=sys.stderr)
    if not names:  # it wrote an empty table over the committed result and exited 0
        parser.error(f"none of the datasets {requested} has its Planetoid files under --root {root}")
    model_name = {"gcn": "GCN", "sage": "GraphSAGE"}[args.model]
    if args.teachers < 0:
        parser.error(f"--teachers must be >= 0, got {args.teachers}")
    recipe = f", distilled from {args.teachers} teachers" if args.teachers else ""
    recipe += ", sparse input" if args.sparse_input else ""
    lines = [f"FP32 {model_name}{recipe}, hidden {args.hidden}, public split, static graph, {args.seeds} seeds; "
             "test accuracy %, mean and population std (ddof 0)",
             f"{'dataset':<10} {'features':<16} {'mean':>6} {'std':>5} {'published':>9} {'difference':>10}"]
    with tqdm(total=2 * args.seeds * len(names), desc="FP32 training runs", disable=None) as progress:  # None: tty only
        for name in names:
            for label, normalize in (("row-normalized", True), ("raw", False)):
                graph = load_planetoid(name, root, normalize_features=normalize)
                accuracies = accuracies_on_the_test_split(graph, args.seeds, args.hidden, progress, args.model,
                                                          args.teachers)
                mean, spread = float(np.mean(accuracies)), float(np.std(accuracies))
                published = PUBLISHED_GCN_ACCURACY[name] if args.model == "gcn" else None
                versus = ("-", "-") if published is None else (f"{published:.1f}", f"{mean - published:+.2f}")
                lines.append(f"{name:<10} {label:<16} {mean:>6.2f} {spread:>5.2f} {versus[0]:>9} {versus[1]:>10}")
    print("\n".join(lines))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        stem = "planetoid_fp32" + ("" if args.model == "gcn" else f"_{args.model}") + (
            f"_distilled{args.teachers}" if args.teachers else "") + ("_sparse_input" if args.sparse_input else "")
        (Path(args.out) / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
