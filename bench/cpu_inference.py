"""CPU inference of the compressed model against FP32, and ``dste.spmm`` against ``torch.sparse.mm`` (stand-alone).

    python bench/cpu_inference.py [--threads 1] [--repeats 7] [--old-revision e85fa5c]
    python bench/cpu_inference.py --part spmm --threads 2 --sizes 5000,10000,20000,30000
    python bench/cpu_inference.py --old-revision 935e296 --repeats 15

Everything measured here is CPU wall time in this process, min of ``--repeats`` interleaved rounds (one call of
every contender per round; ``--part inference`` runs each action's old and new module back to back, the old one
first in every other round), after one warm-up call each. The tables are printed and written to
``--out``/cpu_inference.{txt,json} (default ``bench/results``).

* ``--part inference``: a two-layer GCN (hidden 64, trained 30 epochs) on ``cora-like``, ``citeseer-like``,
  ``pubmed-like`` and shuffled CSBM graphs (arxiv-scale's shape, ``bench/test_scaling.py``, at 10k and 30k
  nodes; and 20k nodes in communities of 200-400 with locality 0.6); ``--graphs small``: eight shuffled CSBM
  graphs of 1k-8k nodes (other seeds and community sizes, F = 128 and 500; ``CSBM_GRAPHS``); ``--graphs tiny``:
  six cora-like CSBM graphs of 300-800 nodes, F = 16-128 (``TINY_GRAPHS``); run through the
  torch ops (``GraphInference.forward``, cpu backend) under FP32, uniform INT8, 50 % edge-sparse INT8, FP16 5 %
  with 50 % of the input channels pruned, and FP16 5 % with every channel kept. "old" is
  ``dste/gnn/execution.py`` of ``--old-revision`` loaded beside the current one (same process, same bindings:
  its SpMM calls get the current bindings' speed, so old/new understates the whole change); the logits of both
  are compared bit for bit, and by their largest difference over the largest old logit and the share of nodes
  whose predicted class agrees.
* ``--part spmm``: ``Y = A @ X`` on shuffled CSBM graphs (arxiv-scale's shape) at each size and F = 32/64/128:
  ``dste.spmm`` through a kept ``DSTETensor``; ``torch.sparse.mm`` on the fp32 CSR with torch's default int64
  indices, and on the same CSR with int32 indices ("torch int32": what ``dste.spmm`` ran on graphs of up to 1,024
  nodes before its compiled kernel, without the finiteness check).
  ``--spmm-graph uniform``: uniform random graphs instead (mean degree 8, no community structure; the encoder
  still reorders them), where the encoded order has no locality to offer.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
DEFAULT_OLD_REVISION = "e85fa5c"  # the tree before the cpu-path changes of this script's table
GRAPHS = ("cora-like", "citeseer-like", "pubmed-like", "csbm-10k", "csbm-30k", "csbm-20k-c300-l0.6")
SMALL_GRAPHS = ("csbm-1k", "csbm-2k", "csbm-5k", "csbm-5k-seed1", "csbm-8k", "csbm-5k-c300-l0.6", "csbm-3k-f500",
                "csbm-6k-f500")
CSBM_GRAPHS = {
    # name: (nodes, graph seed, CSBM fields other than arxiv-scale's shape (bench/test_scaling.py)); ids shuffled
    "csbm-10k": (10_000, 0, {}),
    "csbm-30k": (30_000, 0, {}),
    "csbm-20k-c300-l0.6": (20_000, 0, {"community_size": (200, 400), "locality": 0.6}),
    "csbm-1k": (1_000, 0, {"num_val": 200, "num_test": 500}),  # 840 nodes left after the training picks
    "csbm-2k": (2_000, 0, {}),
    "csbm-5k": (5_000, 0, {}),
    "csbm-5k-seed1": (5_000, 1, {"community_size": (32, 96)}),
    "csbm-8k": (8_000, 0, {}),
    "csbm-5k-c300-l0.6": (5_000, 2, {"community_size": (200, 400), "locality": 0.6}),
    "csbm-3k-f500": (3_000, 0, {"num_features": 500}),
    "csbm-6k-f500": (6_000, 3, {"num_features": 500, "community_size": (100, 200)}),
}
TINY_GRAPHS = {
    # name: (nodes, input features, graph seed): cora-like CSBM graphs of mean degree 4, the sizes where a pass is
    # mostly fixed costs (FP32's whole pass 0.1-0.3 ms); 10 training nodes per class, 20 % validation, a third test
    "tiny-300-f16": (300, 16, 0),
    "tiny-300-f64": (300, 64, 1),
    "tiny-400-f32": (400, 32, 2),
    "tiny-500-f16": (500, 16, 3),
    "tiny-500-f64": (500, 64, 4),
    "tiny-800-f128": (800, 128, 5),
}
SIZES = (5_000, 10_000, 20_000, 30_000)
WIDTHS = (32, 64, 128)


def _module_at(revision: str, path: str, name: str):
    """``path`` as it was at ``revision``, imported as module ``name`` (relative imports made absolute)."""
    source = subprocess.run(["git", "-C", str(REPOSITORY), "show", f"{revision}:{path}"], check=True,
                            capture_output=True, text=True).stdout
    package = path.rsplit("/", 1)[0].replace("/", ".")
    source = source.replace("from .", f"from {package}.")
    folder = Path(tempfile.mkdtemp(prefix="dste-old-"))
    (folder / f"{name}.py").write_text(source)
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _graph(name: str):
    from dste.data import load_dataset, make_graph

    if name in TINY_GRAPHS:
        nodes, features, seed = TINY_GRAPHS[name]
        # So few nodes make every class one community, which holds no same-class edge outside it: homophily is
        # all locality (0.81, what these graphs measured before the generator refused the same-class share
        # it could not draw), and the block model may still run short of pairs: 20 % fewer edges are allowed.
        return make_graph("cora-like", seed=seed, name=name, num_nodes=nodes, num_features=features,
                          num_edges=2 * nodes, train_per_class=10, num_val=nodes // 5, num_test=nodes // 3,
                          locality=0.81,
                          edge_shortfall_limit=0.2)
    if name in CSBM_GRAPHS:
        sys.path.insert(0, str(REPOSITORY / "bench"))
        from test_scaling import scaled_graph

        nodes, seed, overrides = CSBM_GRAPHS[name]
        return scaled_graph(nodes, seed=seed, **overrides)
    return load_dataset(name)


def inference_rows(old_revision: str, repeats: int, graphs=GRAPHS) -> list[dict]:
    import numpy as np

    from dste.gnn import FP32_SETTING, CompressedModel, GraphInference, LayerSetting, make_model, train_fp32

    old = _module_at(old_revision, "dste/gnn/execution.py", "dste_old_execution")
    actions = {
        "FP32": FP32_SETTING,
        "INT8": LayerSetting(),
        "50% edges INT8": LayerSetting(edge_sparsity=0.5),
        "FP16 5% + 50% channels": LayerSetting(fp16_fraction=0.05, channel_sparsity=0.5),
        "FP16 5%": LayerSetting(fp16_fraction=0.05),  # every channel kept: the costliest FP16 share
    }
    rows = []
    for graph_name in graphs:
        graph = _graph(graph_name)
        model = make_model(graph, "gcn", hidden=64, seed=0)
        train_fp32(model, graph, epochs=30, seed=0, patience=30)
        new_inference = GraphInference(CompressedModel(model), graph)
        old_inference = old.GraphInference(old.CompressedModel(model), graph)
        contenders, identical, difference, agreement = {}, {}, {}, {}
        for label, setting in actions.items():
            settings = [setting, setting]
            new_logits = new_inference.forward(settings, backend="cpu").numpy()
            old_logits = old_inference.forward(settings, backend="cpu").numpy()
            identical[label] = bool(np.array_equal(new_logits.view(np.uint32), old_logits.view(np.uint32)))
            scale = float(np.abs(old_logits).max()) or 1.0
            difference[label] = float(np.abs(new_logits - old_logits).max()) / scale
            agreement[label] = float(np.mean(new_logits.argmax(1) == old_logits.argmax(1)))
            contenders[("old", label)] = lambda s=settings: old_inference.forward(s, backend="cpu")
            contenders[("new", label)] = lambda s=settings: new_inference.forward(s, backend="cpu")
        timings = _time_old_and_new_alternately(contenders, repeats)
        for label in actions:
            rows.append({
                "graph": graph_name, "nodes": graph.num_nodes, "features": int(graph.x.shape[1]), "action": label,
                "old_ms": timings[("old", label)]["min_s"] * 1e3, "new_ms": timings[("new", label)]["min_s"] * 1e3,
                "old_over_fp32": timings[("old", label)]["min_s"] / timings[("old", "FP32")]["min_s"],
                "new_over_fp32": timings[("new", label)]["min_s"] / timings[("new", "FP32")]["min_s"],
                "bit_identical": identical[label],
                "max_difference_over_max_logit": difference[label],  # new against old
                "same_argmax_share": agreement[label],
            })
    return rows


def _time_old_and_new_alternately(contenders: dict, repeats: int, warmup: int = 1) -> dict:
    """Seconds per call of ``contenders`` keyed ``("old" | "new", action)``: ``warmup`` untimed calls each, then
    ``repeats`` rounds running every action's two modules back to back, the old one first in even rounds and the
    new one first in odd rounds. The second of a pair runs on caches its twin warmed (the same features, weights
    and graph): in a fixed order the same FP32 code timed up to 12 % faster as "new" (``bench/README.md``)."""
    import time

    import numpy as np

    for run in contenders.values():
        for _ in range(warmup):
            run()
    samples = {name: [] for name in contenders}
    actions = list(dict.fromkeys(label for _, label in contenders))
    for round_index in range(repeats):
        for label in actions:
            for module in (("old", "new") if round_index % 2 == 0 else ("new", "old")):
                start = time.perf_counter()
                contenders[(module, label)]()
                samples[(module, label)].append(time.perf_counter() - start)
    return {name: {"min_s": float(min(ts)), "median_s": float(np.median(ts)), "samples_s": [float(t) for t in ts]}
            for name, ts in samples.items()}


def uniform_graph(n: int, degree: int = 8, seed: int = 0):
    """A uniform random undirected graph on ``n`` nodes of mean degree about ``degree`` (binary CSR, no loops)."""
    import numpy as np
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    rows, cols = rng.integers(0, n, degree * n // 2), rng.integers(0, n, degree * n // 2)
    keep = rows != cols
    adjacency = sp.coo_matrix((np.ones(int(keep.sum()), np.float32), (rows[keep], cols[keep])), shape=(n, n)).tocsr()
    return ((adjacency + adjacency.T) > 0).astype(np.float32)


def spmm_rows(sizes, repeats: int, graph: str = "csbm", widths=WIDTHS) -> list[dict]:
    import numpy as np
    import torch

    import dste
    from dste.experiments import bench

    sys.path.insert(0, str(REPOSITORY / "bench"))
    from test_scaling import scaled_graph

    rows = []
    for n in sizes:
        adjacency = uniform_graph(n) if graph == "uniform" else scaled_graph(n).adj
        matrix = dste.gcn_normalized(adjacency, reorder="community")
        wrapper = dste.DSTETensor(matrix)
        csr = wrapper.to_scipy()
        torch64, torch32 = bench._torch_csr(csr, np.int64), bench._torch_csr(csr, np.int32)
        for width in widths:
            x = torch.from_numpy(np.random.default_rng(0).standard_normal((n, width)).astype(np.float32))
            contenders = {
                "dste.spmm": lambda x=x: dste.spmm(wrapper, x, backend="cpu"),
                "torch int32": lambda x=x: torch.sparse.mm(torch32, x),
                "torch.sparse.mm": lambda x=x: torch.sparse.mm(torch64, x),
            }
            bench.check_parity(contenders, csr @ x.numpy())
            timings = bench.time_interleaved(contenders, repeats, warmup=1)
            ms = {name: t["min_s"] * 1e3 for name, t in timings.items()}
            rows.append({"nodes": n, "nnz": int(csr.nnz), "F": width, "threads": torch.get_num_threads(),
                         "form": "rows" if wrapper.col_perm.numel() == 0 and wrapper.row_perm.numel() else
                         "original" if wrapper.row_perm.numel() == 0 else "rows+columns",
                         **{f"{name}_ms": value for name, value in ms.items()},
                         "speedup": ms["torch.sparse.mm"] / ms["dste.spmm"],
                         "int32_speedup": ms["torch.sparse.mm"] / ms["torch int32"]})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("inference", "spmm", "both"), default="both")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES))
    parser.add_argument("--old-revision", default=DEFAULT_OLD_REVISION)
    parser.add_argument("--graphs", default=",".join(GRAPHS),
                        help="graphs of --part inference, comma-separated; 'table': the six default graphs, 'small': the 1k-8k "
                             "node CSBM graphs, 'tiny': the 300-800 node ones, 'all': all three")
    parser.add_argument("--widths", default=",".join(str(w) for w in WIDTHS), help="F of --part spmm, comma-separated")
    parser.add_argument("--spmm-graph", choices=("csbm", "uniform"), default="csbm",
                        help="graphs of --part spmm: shuffled CSBM graphs (arxiv-scale's shape) or uniform random ones")
    parser.add_argument("--out", default=str(REPOSITORY / "bench" / "results"),
                        help="directory for cpu_inference.{txt,json} (the printed tables and their rows); '' for none")
    args = parser.parse_args(argv)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(args.threads)
    import warnings

    from dste.experiments import bench

    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
    bench.pin_threads(args.threads)
    revision = subprocess.run(["git", "-C", str(REPOSITORY), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True).stdout.strip()
    lines = []

    def say(line: str = "") -> None:
        lines.append(line)
        print(line, flush=True)

    loads = [os.getloadavg()[0]]
    say(f"revision {revision} (old: {args.old_revision}), {args.threads} thread(s), min of {args.repeats} "
        f"interleaved, {os.cpu_count()} x {bench.machine_info()['cpu_model']}; load average before {loads[0]:.2f}")
    record = {"machine": bench.machine_info(), "revision": revision, "old_revision": args.old_revision,
              "threads": args.threads, "repeats": args.repeats}
    if args.part in ("inference", "both"):
        say()
        say(f"{'graph':<20} {'nodes':>6} {'action':<24} {'old ms':>8} {'new ms':>8} {'old xFP32':>9} "
            f"{'new xFP32':>9} {'bits':>5} {'max|new-old|/max|old|':>21} {'same argmax':>11}")
        sets = {"table": GRAPHS, "small": SMALL_GRAPHS, "tiny": tuple(TINY_GRAPHS),
                "all": GRAPHS + SMALL_GRAPHS + tuple(TINY_GRAPHS)}
        graphs = [name for token in args.graphs.split(",") for name in sets.get(token, (token,))]
        record["inference"] = inference_rows(args.old_revision, args.repeats, graphs)
        for r in record["inference"]:
            say(f"{r['graph']:<20} {r['nodes']:>6} {r['action']:<24} {r['old_ms']:>8.2f} {r['new_ms']:>8.2f} "
                f"{r['old_over_fp32']:>8.2f}x {r['new_over_fp32']:>8.2f}x {'same' if r['bit_identical'] else 'DIFF':>5} "
                f"{r['max_difference_over_max_logit']:>21.1e} {r['same_argmax_share']:>11.4f}")
        loads.append(os.getloadavg()[0])
    if args.part in ("spmm", "both"):
        say()
        say(f"{'nodes':>6} {'F':>4} {'thr':>3} {'form':<12} {'dste ms':>8} {'int32 ms':>8} {'torch ms':>9} "
            f"{'torch/dste':>10} {'torch/int32':>11}")
        record["spmm_graph"] = args.spmm_graph
        record["spmm"] = spmm_rows([int(s) for s in args.sizes.split(",")], args.repeats, args.spmm_graph,
                                   [int(w) for w in args.widths.split(",")])
        for r in record["spmm"]:
            say(f"{r['nodes']:>6} {r['F']:>4} {r['threads']:>3} {r['form']:<12} {r['dste.spmm_ms']:>8.2f} "
                f"{r['torch int32_ms']:>8.2f} {r['torch.sparse.mm_ms']:>9.2f} {r['speedup']:>10.2f} "
                f"{r['int32_speedup']:>11.2f}")
        loads.append(os.getloadavg()[0])
    say(f"load average (1 min) before and after each part: {', '.join(f'{v:.2f}' for v in loads)}")
    record["load_average_1min"] = loads
    if args.out:
        import json

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "cpu_inference.txt").write_text("\n".join(lines) + "\n")
        (out / "cpu_inference.json").write_text(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
