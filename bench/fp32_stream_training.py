"""The FP32 GCN of ``dste run`` trained on the first snapshot (as the job does) or on every training snapshot.

An exploration for the controller's seed-to-seed spread (issue 14), not a change of the job: for each stream preset,
``--seeds`` FP32 models are trained on the stream of ``--stream-seed`` (as ``dste run --stream-seed 0`` does) and
scored on the held-out snapshots (test accuracy, mean over them), by

    first        ``dste.gnn.train_fp32`` on snapshot 0 (the job's FP32 model)
    round-robin  ``dste.gnn.train_fp32_on_snapshots`` on the training snapshots (one full-batch step per epoch on
                 each in turn, the epoch kept by their mean validation accuracy; ``dste run --fp32-snapshots
                 training``)

Prints mean and std (ddof 1) over seeds per stream and variant; writes ``bench/results/fp32_stream_training.json``. CPU only, one thread; a few minutes::

    python bench/fp32_stream_training.py --seeds 9
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from dste.data import SnapshotStream, load_dataset
from dste.data.stream import STREAM_PRESETS, stream_params
from dste.gnn import make_model, train_fp32, train_fp32_on_snapshots
from dste.gnn.train import accuracy, graph_tensors

RESULTS = Path(__file__).resolve().parent / "results"


def heldout_accuracy(model, graphs) -> float:
    """Test accuracy (%) on each held-out snapshot, averaged."""
    scores = []
    with torch.no_grad():
        for graph in graphs:
            x, _ = graph_tensors(graph)
            scores.append(accuracy(model(x, graph.adj, backend="cpu"), graph, "test"))
    return 100.0 * float(np.mean(scores))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="cora-like")
    parser.add_argument("--streams", default=",".join(name for name in STREAM_PRESETS))
    parser.add_argument("--seeds", type=int, default=9)
    parser.add_argument("--snapshots", type=int, default=12)
    parser.add_argument("--stream-seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "fp32_stream_training.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    base = load_dataset(args.dataset, seed=0)
    rows = []
    for name in args.streams.split(","):
        stream = SnapshotStream(base, stream_params(name, args.snapshots), seed=args.stream_seed)
        graphs = [snapshot.graph for snapshot in stream]
        training = [graphs[i] for i in stream.train_indices]
        heldout = [graphs[i] for i in stream.heldout_indices]
        for variant in ("first", "round-robin"):
            scores = []
            for seed in tqdm(range(args.seeds), desc=f"{name} {variant}", leave=False, disable=None):  # tty only
                model = make_model(graphs[0], "gcn", hidden=64, seed=seed)
                if variant == "first":
                    train_fp32(model, graphs[0], epochs=200, seed=seed, patience=50)
                else:
                    train_fp32_on_snapshots(model, training, epochs=200, seed=seed, patience=50)
                scores.append(heldout_accuracy(model, heldout))
            rows.append({"stream": name, "variant": variant, "accuracy": [round(s, 2) for s in scores],
                         "mean": round(float(np.mean(scores)), 2),
                         # one seed has no spread: null, not NaN (which strict JSON has no word for)
                         "std": round(float(np.std(scores, ddof=1)), 2) if len(scores) > 1 else None})
            spread = "(1 seed)" if rows[-1]["std"] is None else f"+/- {rows[-1]['std']:.2f}"
            print(f"{name:13s} {variant:12s} {rows[-1]['mean']:6.2f} {spread}", flush=True)
    Path(args.out).write_text(json.dumps({"dataset": args.dataset, "seeds": args.seeds, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
