"""The FP32 GCN of ``dste run`` trained on the first snapshot (as the job does) or on every training snapshot.

An exploration for the controller's seed-to-seed spread (issue 14), not a change of the job: for each stream preset,
``--seeds`` FP32 models are trained on the stream of ``--stream-seed`` (as ``dste run --stream-seed 0`` does) and
scored on the held-out snapshots (test accuracy, mean over them), by

    first        ``dste.gnn.train_fp32`` on snapshot 0 (the job's FP32 model)
    round-robin  one full-batch step per epoch on the training snapshots in turn, the epoch kept by the mean
                 validation accuracy over all training snapshots (ties: mean validation loss), patience 50

Each snapshot's propagation matrix is encoded once. Prints mean and std (ddof 1) over seeds per stream and
variant; writes ``bench/results/fp32_stream_training.json``. CPU only, one thread; a few minutes::

    python bench/fp32_stream_training.py --seeds 9
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from dste.data import SnapshotStream, load_dataset
from dste.data.stream import STREAM_PRESETS, stream_params
from dste.gnn import make_model, train_fp32
from dste.gnn.adjacency import propagation_matrix
from dste.gnn.train import accuracy, graph_tensors

RESULTS = Path(__file__).resolve().parent / "results"


def train_round_robin(model, graphs, *, seed, epochs=200, lr=0.01, weight_decay=5e-4, patience=50):
    """One step per epoch on ``graphs[epoch % k]``; keep the epoch of the best mean validation accuracy."""
    data = [(graph, *graph_tensors(graph), propagation_matrix(graph.adj, graph.adj.shape[0], "gcn"))
            for graph in graphs]
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    best, best_state, stale = (-1.0, float("inf")), None, 0
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for epoch in range(epochs):
            graph, x, y, a = data[epoch % len(data)]
            model.train()
            optimizer.zero_grad()
            train = torch.from_numpy(graph.train_mask)
            F.cross_entropy(model(x, a, backend="cpu")[train], y[train]).backward()
            optimizer.step()
            model.eval()
            accs, losses = [], []
            with torch.no_grad():
                for graph, x, y, a in data:
                    logits, val = model(x, a, backend="cpu"), torch.from_numpy(graph.val_mask)
                    accs.append(accuracy(logits, graph, "val"))
                    losses.append(float(F.cross_entropy(logits[val], y[val])))
            score = (float(np.mean(accs)), float(np.mean(losses)))
            if (score[0], -score[1]) > (best[0], -best[1]):
                best, best_state, stale = score, copy.deepcopy(model.state_dict()), 0
            else:
                stale += 1
                if stale >= patience:
                    break
    model.load_state_dict(best_state)
    model.eval()


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
            for seed in tqdm(range(args.seeds), desc=f"{name} {variant}", leave=False):
                model = make_model(graphs[0], "gcn", hidden=64, seed=seed)
                if variant == "first":
                    train_fp32(model, graphs[0], epochs=200, seed=seed, patience=50)
                else:
                    train_round_robin(model, training, seed=seed)
                scores.append(heldout_accuracy(model, heldout))
            rows.append({"stream": name, "variant": variant, "accuracy": [round(s, 2) for s in scores],
                         "mean": round(float(np.mean(scores)), 2), "std": round(float(np.std(scores, ddof=1)), 2)})
            print(f"{name:13s} {variant:12s} {rows[-1]['mean']:6.2f} +/- {rows[-1]['std']:.2f}", flush=True)
    Path(args.out).write_text(json.dumps({"dataset": args.dataset, "seeds": args.seeds, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
