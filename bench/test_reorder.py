"""Reordering: stretch, order time and peak memory of each node order, on generated graphs with shuffled ids.

Stretch = distinct (128-row window, column) pairs of A + I in the order / N: the X rows the kernel gathers per
node (lower is better). Graphs: ``dste.data.csbm`` (communities of a chosen size range, a chosen share of edges
inside them, ids shuffled by the generator), ogbn-arxiv's mean degree (13.8).

Orders compared, each computed in a forked child process so its peak memory can be read:

    none            the shuffled ids as generated
    rcm             reorder="rcm" (SciPy reverse Cuthill-McKee)
    community       reorder="community" (one METIS call into 128-node parts; the best of the parts and of their
                    RCM slices joined, see dste/format/reorder.py)
    label-prop      the former "community" order (hand-written label propagation + RCM), for comparison
    generator       every community contiguous: the generator's own order (best order known without search)
    metis-kway-128  METIS k-way into ceil(N/128) parts, nodes by part (a reference partition)
    metis-rec-128   METIS recursive bisection of the whole graph into ceil(N/128) parts (a reference partition)

Run (minutes; writes bench/results/reorder.{json,txt,png})::

    python bench/test_reorder.py                  # the whole grid + arxiv-scale end to end
    python bench/test_reorder.py --quick          # three small graphs, into ./bench-results
    python -m pytest bench/test_reorder.py -s     # the same grid as a pytest test
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from dste.data.csbm import make_graph
from dste.format.partition import metis_recursive_parts
from dste.format.reorder import _symmetric_graph, community_order, label_propagation_order, rcm_order

RESULTS = Path(__file__).resolve().parent / "results"
WINDOW = 128
MEAN_DEGREE = 13.8  # ogbn-arxiv: 2 x 1.166 M edges / 169,343 nodes
ORDERS = ("none", "rcm", "community", "label-prop", "generator", "metis-kway-128", "metis-rec-128")
REFERENCE_ORDERS = ("generator", "metis-kway-128", "metis-rec-128")

# (nodes, community size, locality): community sizes are drawn in [0.75, 1.25] x size
GRID = [
    (84_000, 64, 0.6), (84_000, 64, 0.95),
    (84_000, 128, 0.85), (84_000, 128, 0.95),
    (84_000, 1000, 0.6), (84_000, 1000, 0.8), (84_000, 1000, 0.95),
    (84_000, 5000, 0.9),
    (20_000, 128, 0.85), (20_000, 1000, 0.8),
    (300_000, 128, 0.85), (300_000, 1000, 0.8),
    ("arxiv-scale", 96, 0.85), ("arxiv-scale-local", 96, 0.95),  # the presets: communities of 64-128 nodes
]
QUICK_GRID = [(20_000, 128, 0.85), (20_000, 1000, 0.8), (20_000, 64, 0.95)]


def generated_graph(nodes, community: int, locality: float, seed: int = 0):
    """Adjacency and community ids; ``nodes`` may name a ``dste.data`` preset (its own knobs then apply)."""
    if isinstance(nodes, str):
        from dste.data import load_dataset

        graph = load_dataset(nodes, seed=seed)
        return graph.adj, graph.communities
    low, high = max(2, int(0.75 * community)), int(1.25 * community)
    classes = int(max(2, min(40, nodes // (4 * high))))
    graph = make_graph(
        "arxiv-scale", seed=seed, num_nodes=nodes, num_edges=int(nodes * MEAN_DEGREE / 2), num_classes=classes,
        num_features=2, locality=locality, homophily=min(1.0, locality + 0.05), community_size=(low, high),
        train_per_class=1, num_val=10, num_test=10,
        # communities of 26-43 nodes at locality 0.8 hold ~3 % fewer distinct pairs than arxiv's mean degree asks
        # (20000/35/0.8, 84000/35/0.8); the tables were measured on those graphs as drawn
        edge_shortfall_limit=0.05,
    )
    return graph.adj, graph.communities


def closed_structure(adj) -> sp.csr_matrix:
    closed = (adj + sp.eye(adj.shape[0], format="csr")).tocsr()
    closed.data[:] = 1
    return closed


def window_stretch(closed: sp.csr_matrix, order: np.ndarray) -> float:
    n = closed.shape[0]
    position = np.empty(n, dtype=np.int64)
    position[order] = np.arange(n)
    coo = closed.tocoo()
    return np.unique((position[coo.row] // WINDOW) * n + coo.col).size / n


def _order(name: str, graph: sp.csr_matrix, communities: np.ndarray) -> np.ndarray:
    n = graph.shape[0]
    if name == "none":
        return np.arange(n)
    if name == "rcm":
        return rcm_order(graph)
    if name == "community":
        return community_order(graph)
    if name == "label-prop":
        return label_propagation_order(graph)
    if name == "generator":
        return np.argsort(communities, kind="stable")
    if name in ("metis-kway-128", "metis-rec-128"):
        import pymetis

        adjacency = pymetis.CSRAdjacency(adj_starts=graph.indptr.astype(np.int32), adjacent=graph.indices.astype(np.int32))
        if name == "metis-rec-128":
            # METIS's own recursive bisection of the whole graph (the community order makes its
            # first cut on an edge sample instead), with the community order's refinement option
            index = pymetis.zero_copy_dtype()
            parts = metis_recursive_parts(graph.indptr.astype(index), graph.indices.astype(index), -(-n // WINDOW), seed=0)
            return np.argsort(parts, kind="stable")
        _, parts = pymetis.part_graph(-(-n // WINDOW), adjacency, options=pymetis.Options(seed=0))
        return np.argsort(np.asarray(parts), kind="stable")
    raise ValueError(f"unknown order {name!r}; allowed: {ORDERS}")


def _current_rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _child(connection, name, graph, communities):
    before = _current_rss_bytes()
    started = time.perf_counter()
    order = _order(name, graph, communities)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    connection.send((order, seconds, max(0, peak - before)))
    connection.close()


def measured_order(name, graph, communities):
    """(order, seconds, peak extra resident bytes) of one order, computed in a forked child.

    Peak extra = the child's peak resident set minus its resident set when it started (the fork
    inherits the parent's pages, so this is what computing the order added)."""
    context = multiprocessing.get_context("fork")
    parent, child = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(child, name, graph, communities))
    process.start()
    child.close()
    order, seconds, peak = parent.recv()
    process.join()
    return order, seconds, peak


def measure_graph(nodes, community, locality, seed=0):
    adj, communities = generated_graph(nodes, community, locality, seed)
    closed = closed_structure(adj)
    name, nodes = (nodes, adj.shape[0]) if isinstance(nodes, str) else ("csbm", nodes)
    graph, _ = _symmetric_graph(*closed.nonzero(), closed.shape)
    rows = {}
    for name in ORDERS:
        order, seconds, peak = measured_order(name, graph, communities)
        assert np.array_equal(np.sort(order), np.arange(nodes)), f"{name} is not a permutation"
        rows[name] = {"stretch": window_stretch(closed, order), "seconds": seconds, "peak_bytes": peak}
    best = min(rows[name]["stretch"] for name in REFERENCE_ORDERS)
    for row in rows.values():
        row["vs_best_reference"] = row["stretch"] / best
    return {"graph": name, "nodes": nodes, "community": community, "locality": locality, "stored": int(closed.nnz),
            "best_reference": best, "orders": rows}


def end_to_end(preset="arxiv-scale", repeats=3):
    """``gcn_normalized(adj, reorder="community")`` at ogbn-arxiv size, and where its time goes."""
    from dste.data import load_dataset
    from dste.format import gcn_normalized
    from dste.format.gcn import gcn_csr
    from dste.format.reorder import compute_order

    graph = load_dataset(preset)
    adj = graph.adj
    totals, orders, encodes = [], [], []
    for _ in range(repeats):
        started = time.perf_counter()
        matrix = gcn_normalized(adj, reorder="community")
        totals.append(time.perf_counter() - started)
        structure, _ = gcn_csr(adj, True)
        rows, cols = structure.nonzero()
        started = time.perf_counter()
        row_perm, col_perm = compute_order("community", rows, cols, structure.shape)
        orders.append(time.perf_counter() - started)
        started = time.perf_counter()
        gcn_normalized(adj, row_perm=row_perm, col_perm=col_perm)
        encodes.append(time.perf_counter() - started)
    closed = closed_structure(adj)
    return {
        "preset": preset, "nodes": adj.shape[0], "stored": int(closed.nnz),
        "total_s_min": min(totals), "order_s_min": min(orders), "encode_fixed_order_s_min": min(encodes),
        "stretch_stats": float(matrix.stats()["stretch"]),
        "stretch": window_stretch(closed, matrix.row_perm),
        "stretch_generator": window_stretch(closed, np.argsort(graph.communities, kind="stable")),
    }


def table(results) -> str:
    lines = ["nodes    comm  local  " + "  ".join(f"{name:>15s}" for name in ORDERS)]
    for result in results:
        cells = [f"{r['stretch']:6.3f} ({r['vs_best_reference']:4.2f})" for r in result["orders"].values()]
        lines.append(f"{result['nodes']:7d} {result['community']:5d}  {result['locality']:.2f}  " + "  ".join(f"{c:>15s}" for c in cells))
    lines.append("")
    lines.append("order seconds / peak extra MiB")
    for result in results:
        cells = [f"{r['seconds']:5.2f}/{r['peak_bytes'] / 2**20:5.0f}" for r in result["orders"].values()]
        lines.append(f"{result['nodes']:7d} {result['community']:5d}  {result['locality']:.2f}  " + "  ".join(f"{c:>15s}" for c in cells))
    return "\n".join(lines)


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r["graph"] if r["graph"] != "csbm" else f"{r['nodes'] // 1000}k/{r['community']}/{int(r['locality'] * 100)}%"
              for r in results]
    shown = [name for name in ORDERS if name != "none"]
    fig, axis = plt.subplots(figsize=(11, 4.5))
    width = 0.8 / len(shown)
    x = np.arange(len(results))
    for i, name in enumerate(shown):
        axis.bar(x + (i - len(shown) / 2 + 0.5) * width, [r["orders"][name]["vs_best_reference"] for r in results],
                 width, label=name)
    axis.axhline(1.05, color="black", linestyle="--", linewidth=0.8, label="target: 1.05")
    axis.set_xticks(x, labels, rotation=35, ha="right", fontsize=8)
    axis.set_ylabel("stretch / best reference order")
    axis.set_ylim(0.8, max(1.6, 0.0))
    axis.set_title("Stretch of each order relative to the best of generator / METIS-128 orders (shuffled ids; lower is better)",
                   fontsize=9)
    axis.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(grid, with_end_to_end=True, out=RESULTS):
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for nodes, community, locality in grid:
        results.append(measure_graph(nodes, community, locality))
        print(table(results[-1:]).splitlines()[1], flush=True)
    report = {"grid": results}
    if with_end_to_end:
        report["end_to_end"] = end_to_end()
    text = table(results)
    if with_end_to_end:
        e2e = report["end_to_end"]
        text += (f"\n\nend to end, {e2e['preset']} ({e2e['nodes']} nodes, {e2e['stored']} stored): "
                 f"gcn_normalized(reorder='community') {e2e['total_s_min']:.2f} s = order {e2e['order_s_min']:.2f} s "
                 f"+ encode in a fixed order {e2e['encode_fixed_order_s_min']:.2f} s (min of 3); stretch {e2e['stretch']:.3f} "
                 f"(generator order {e2e['stretch_generator']:.3f})")
    (out / "reorder.json").write_text(json.dumps(report, indent=1))
    (out / "reorder.txt").write_text(text + "\n")
    plot(results, out / "reorder.png")
    print(text)
    return report


def test_reorder_grid():
    report = run(GRID)
    for result in report["grid"]:
        ratio = result["orders"]["community"]["vs_best_reference"]
        # The target is 1.05; measured worst 1.09 (communities of 96-160 nodes, 95 % local), see README.
        assert ratio <= 1.10, (result["graph"], result["nodes"], result["community"], result["locality"], ratio)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="three 20k-node graphs, no end-to-end run")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: bench/results, or ./bench-results with --quick)")
    arguments = parser.parse_args()
    out = arguments.out or (Path("bench-results") if arguments.quick else RESULTS)
    run(QUICK_GRID if arguments.quick else GRID, with_end_to_end=not arguments.quick, out=out)
    sys.exit(0)
