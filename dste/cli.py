"""The ``dste`` console script.

Subcommands are registered in ``SUBCOMMANDS``: each entry names a function that adds its options to an
``argparse`` sub-parser and a function that runs it. A new subcommand (e.g. ``dste bench`` from
``dste.experiments.bench``) is one more entry; if its module is not present the subcommand is simply not
offered.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from dste.argparsing import ArgumentParser

__all__ = ["main", "build_parser", "SUBCOMMANDS"]


def _integer_or_word(word: str, word_value, minimum: int, wanted: str):
    """An argparse type: ``word`` (parsed as ``word_value``) or an integer >= ``minimum``; else the message that
    the option ``must be {wanted} or '{word}'``."""

    def parse(text: str):
        if text == word:
            return word_value
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {wanted} or '{word}', got {text!r}")
        return value

    return parse


# --stream-seed / --model-seed: 'per-seed' (None) lets each seed draw its own.
_seed_or_per_seed = _integer_or_word("per-seed", None, 0, "an integer >= 0")
# --jobs: 'auto' is resolved per graph by dste.experiments.sizing.schedule_for.
_jobs = _integer_or_word("auto", "auto", 1, "a positive integer")


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset", default="cora-like",
        help="graph to run on: 'cora-like' (default; the embedded CSBM preset, generated), 'citeseer-like' / "
             "'pubmed-like' (generated, CiteSeer's / PubMed's size: 3,327 / 19,717 nodes), 'arxiv-scale' "
             "/ 'arxiv-scale-local' (generated, 169,343 nodes, 85 %% / 95 %% of edges inside a community), "
             "'csbm:key=value,...' (a generated CSBM graph: cora-like with the named fields of "
             "dste.data.CSBMParams changed, e.g. csbm:num_nodes=5000,locality=0.6,community_size=16-64, and "
             "edge_shortfall_limit=<fraction> to accept a block model short of num_edges; a graph too "
             "small for 500 validation and 1,000 test nodes gets Cora's share of its nodes unless num_val/num_test "
             "are named), 'cora'/'citeseer'/'pubmed' (raw Planetoid files under --root), 'planetoid:<name>' (your own "
             "ind.<name>.* files in the Planetoid layout under --root), 'ogbn-<name>' (an unpacked OGB node-property folder under "
             "--root), or a path to a .npz file: a DSTE CSR bundle, or a gnn-benchmark file as PyG's Amazon, Coauthor "
             "and CitationFull read it (e.g. amazon_electronics_photo.npz; a Planetoid-style split is drawn: 20 "
             "labelled nodes per class, 500 validation, 1,000 test)",
    )
    parser.add_argument(
        "--root", default=None,
        help="directory holding on-disk datasets (Planetoid raw files, OGB folders); defaults to $DSTE_DATA_ROOT. "
             "Nothing is ever downloaded",
    )
    parser.add_argument("--seeds", type=int, default=3,
                        help="number of seeds (0..N-1); each seed trains its own FP32 model and controller on the "
                             "same snapshot stream (see --stream-seed); accuracy is reported as mean +/- std over "
                             "seeds (default 3)")
    parser.add_argument("--snapshots", type=int, default=None,
                        help="snapshots in the dynamic stream (>= 4); the last quarter is held out for judging "
                             "(default 16; 6 on graphs above 50,000 nodes)")
    parser.add_argument("--episodes", type=int, default=None,
                        help="controller training episodes (one training snapshot compressed layer by layer "
                             "each) per seed (default 1500; 200 on graphs above 50,000 nodes)")
    parser.add_argument("--model", choices=("gcn", "sage"), default="gcn",
                        help="two-layer GCN or GraphSAGE (mean) (default gcn)")
    parser.add_argument("--hidden", type=int, default=64, help="hidden width of the model (default 64)")
    parser.add_argument("--epochs", type=int, default=200, help="max FP32 training epochs (early stopping; default 200)")
    parser.add_argument("--lambda", dest="lambda_latency", type=float, default=0.05,
                        help="latency price in the reward: accuracy - lambda * latency / uniform-INT8 latency "
                             "(default 0.05: 1%% of latency is worth 0.05 accuracy points; with the default "
                             "budget the controller mostly buys accuracy within the budget)")
    parser.add_argument("--budget", default="static50",
                        help="latency ceiling of the reward, as a fraction of the uniform-INT8 latency; each unit "
                             "over it costs --budget-penalty. 'static50' (default) = per snapshot, the modelled latency "
                             "static 50%% sparse INT8 would spend on it; '<x>fp32' (e.g. 0.33fp32) = per snapshot, x "
                             "times the FP32 model's modelled latency; 'none' = no ceiling. A stream with its own "
                             "budget (--stream budget-shift, bursty, growing) overrides every choice but '<x>fp32'")
    parser.add_argument("--stream", default="steady",
                        help="how the graph changes between snapshots, a preset of dste.data.stream.STREAM_PRESETS: "
                             "steady (default), bursty, drift, growing, budget-shift")
    parser.add_argument("--stream-seed", type=_seed_or_per_seed, default=0,
                        help="which random stream of snapshots every seed sees (an integer >= 0, default 0), or "
                             "'per-seed': seed s draws stream s, so the spread over seeds also holds the streams' own")
    parser.add_argument("--model-seed", type=_seed_or_per_seed, default=None,
                        help="which FP32 model every seed's controller compresses: 'per-seed' (default: seed s "
                             "trains its own model s, so the spread over seeds holds the models' own), or an "
                             "integer >= 0: one model trained with that seed, so the spread is the controller's")
    parser.add_argument("--no-fallback", action="store_true",
                        help="judge the plain DQNs, without their conservative fallbacks where the Q-values do not "
                             "separate (budgeted: greedy search's plan on recency-weighted training rewards, fitted to "
                             "each snapshot's latency budget; accuracy first: greedy search's plan on its reward)")
    parser.add_argument("--no-probe", action="store_true",
                        help="fit the fallback plan to each snapshot's budget by the training snapshots' values alone: "
                             "without it, a plan the summed values rate higher but never measured as it is replaces "
                             "the fitted plan where it agrees with the FP32 model's predictions on more of the "
                             "snapshot's nodes (label-free)")
    parser.add_argument("--oracle", action="store_true",
                        help="also report the best static policy in hindsight (greedy search on the held-out "
                             "snapshots), the best static plan within every held-out snapshot's latency budget "
                             "(exhaustive over every plan of a two-layer model), that plan chosen on half "
                             "the held-out test nodes and scored on the other half (dste.controller.crossfit), and the "
                             "per-snapshot best static actions (greedy search per snapshot; slower)")
    parser.add_argument("--no-frontier", action="store_true",
                        help="skip the sweep of every static uniform action (frontier.png and the frontier section)")
    parser.add_argument("--budget-penalty", type=float, default=5.0,
                        help="reward lost per unit of normalised latency above the budget (default 5: 1%% over "
                             "the budget costs 5 accuracy points)")
    parser.add_argument("--target", choices=("trn2",), default="trn2",  # run_config.RUN_TARGETS (kept light)
                        help="NeuronCore whose latency is modelled (default trn2, the only one the kernel runs on: "
                             "it gathers rows with indirect DMAs, NeuronCore-v3 and newer); never measured")
    parser.add_argument("--out", default=None,
                        help="output directory for results.json, table.txt, accuracy_vs_latency.png, frontier.png, "
                             "snapshots.png and the controller checkpoint (default ./runs/<timestamp>)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 1 seed, 6 snapshots (7 on the bursty stream, so that a held-out snapshot "
                             "is a burst), at most 100 episodes and 60 epochs")
    parser.add_argument("--jobs", type=_jobs, default="auto",
                        help="seeds run in this many worker processes at once; 'auto' (default): as many as the "
                             "available memory holds (a worker's peak modelled from the graph's nodes, features, "
                             "edges and snapshots), at most one per seed, and of those the count that finishes the "
                             "seeds soonest on the cores this process may use (3 seeds on 2 cores: 3 workers sharing "
                             "them). The figures do not change, only the wall time, the memory (one job's worth per "
                             "worker) and the measured CPU times (the workers share the cores)")
    parser.add_argument("--fp32-snapshots", choices=("first", "training"), default="first",
                        help="what each seed's FP32 model trains on: the stream's first snapshot (default) or every "
                             "training snapshot in turn (one step per epoch each, the epoch kept by their mean "
                             "validation accuracy)")
    parser.add_argument("--fp32-teachers", type=int, default=None,
                        help="distil each seed's FP32 model from this many independently trained teachers (the KL "
                             "divergence from their mean softmax on every node, beside the labelled loss; "
                             "dste.gnn.train_fp32_distilled): the seeds' models land closer together and, on the "
                             "streams measured, more accurate (default 4; 0 with --fp32-snapshots training); 0: plain "
                             "training, the published GCN recipe")
    parser.add_argument("--overwrite", action="store_true",
                        help="write over the outputs of an earlier run in --out (refused without it)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def _run_main(args: argparse.Namespace) -> int:
    from dste.experiments.pipeline import RunConfig, format_table, run

    config = RunConfig(
        dataset=args.dataset, root=args.root, seeds=args.seeds, snapshots=args.snapshots, episodes=args.episodes,
        model=args.model, hidden=args.hidden, epochs=args.epochs, lambda_latency=args.lambda_latency,
        budget=args.budget, budget_penalty=args.budget_penalty, target=args.target, out=args.out, quick=args.quick, progress=not args.no_progress,
        stream=args.stream, stream_seed=args.stream_seed, model_seed=args.model_seed, fallback=not args.no_fallback, probe=not args.no_probe, oracle=args.oracle, frontier=not args.no_frontier,
        jobs=args.jobs, fp32_snapshots=args.fp32_snapshots, fp32_teachers=args.fp32_teachers, overwrite=args.overwrite,
    )
    report = run(config)
    print(format_table(report["summary"], config.target, quick=config.quick, note=report["table_note"],
                       fp32_teachers=config.fp32_teachers))
    print()
    acceptance = report["acceptance"]
    print("acceptance on held-out snapshots:")
    for key, value in acceptance.items():
        print(f"  {key}: {value}")
    frontier = report.get("frontier")
    if frontier:
        print("frontier (static uniform actions and the controllers, held-out snapshots):")
        for key, value in frontier.items():
            if key != "points":
                print(f"  {key}: {value}")
    oracle = report.get("oracle")
    if oracle:
        print("per-snapshot oracle (held-out snapshots, with their labels):")
        for key, value in oracle.items():
            if key != "cross_fit":
                print(f"  {key}: {value}")
        fit = oracle.get("cross_fit")
        if fit:
            print("best static plan within every budget, chosen on half the held-out test nodes and scored on the other "
                  "half (reward minus the controller's; mean over seeds):")
            print(f"  in sample {fit['in_sample_lead']:+.4f}, cross-fitted {fit['cross_fitted_lead']:+.4f} "
                  f"(ahead on {100 * fit['share_halves_static_ahead']:.0f} % of scored halves; plans per seed "
                  f"{fit['plans']}, distinct choices {fit['distinct_choices']})")
    print(f"\nlatency: {report['latency_label']}")
    print(f"wall time: {report['wall_time_s']:.1f} s; outputs in {report['out_dir']}")
    return 0


def _bench_options(parser: argparse.ArgumentParser) -> None:
    from dste.experiments.bench import add_bench_arguments

    add_bench_arguments(parser)


def _bench_main(args: argparse.Namespace) -> int:
    from dste.experiments.bench import main as bench_main

    return int(bench_main(args) or 0)


# name -> (help, add-options function, run function)
SUBCOMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "run": (
        "the main job: train the FP32 model and the DQN controller, report FP32 / INT8 / static sparse INT8 / "
        "DSTE on held-out snapshots (table, JSON, plot)",
        _add_run_options, _run_main,
    ),
    "bench": ("benchmarks of the kernels and format", _bench_options, _bench_main),
}


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="dste",
        description="DSTE: Dynamic Sparse Tensor Encoding for GNN inference on AWS NeuronCores. "
                    "Every NeuronCore latency printed is modelled, not measured.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add_options, run_function) in SUBCOMMANDS.items():
        child = sub.add_parser(name, help=help_text, description=help_text)
        add_options(child)
        child.set_defaults(handler=run_function)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 2
    try:
        return args.handler(args)
    except (ValueError, OSError, MemoryError) as error:
        # bad options, unusable paths (missing dataset, --out naming a file, no permission) or a run this machine's
        # memory cannot hold (refused before it starts): a usage error; anything else is a fault in DSTE and keeps
        # its traceback
        parser.exit(2, f"dste {args.command}: error: {error}\n")


if __name__ == "__main__":
    sys.exit(main())
