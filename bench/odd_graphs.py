"""Four small graphs in the gnn-benchmark ``.npz`` layout, unlike the ones the project was tuned on.

    python bench/odd_graphs.py OUT_DIR [NAME ...]     # writes OUT_DIR/NAME.npz for each (default: all four)
    dste run --dataset OUT_DIR/NAME.npz

Each graph has 1,500 nodes in classes split into communities of 20-80 nodes (60 % of edges inside a community, 20 %
inside the class, 20 % anywhere) and is stored as the raw files are, not as a loader cleans it up: edges one way
only, with self loops and duplicate entries (``directed``, ``isolated``, ``forty_classes``). The graphs:

- ``directed``: 7 classes, bag-of-words features (500 words, about 8 per node), sparse attribute arrays.
- ``isolated``: the same kind, 30 % of the nodes without an edge.
- ``forty_classes``: 40 classes of 3 to about 60 nodes and one larger, 1,000 words.
- ``shuffled``: 7 classes, 100 Gaussian features around the class means, node ids in random order (no loops or
  duplicates).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import scipy.sparse as sp

NODES = 1500


def _communities(labels: np.ndarray, rng) -> np.ndarray:
    """Consecutive runs of 20-80 nodes inside each class."""
    community = np.empty(labels.size, np.int64)
    next_id = 0
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        start = 0
        while start < members.size:
            size = int(rng.integers(20, 81))
            community[members[start:start + size]] = next_id
            next_id += 1
            start += size
    return community


def _edges(labels, community, rng, mean_degree: float, isolated: float, loops: int, duplicates: int):
    """One-way (source, target) pairs: 60 % inside the source's community, 20 % inside its class, 20 % anywhere."""
    n = labels.size
    active = np.ones(n, bool)
    if isolated:
        active[rng.choice(n, int(isolated * n), replace=False)] = False
    nodes = np.flatnonzero(active)
    by_community = {c: np.flatnonzero((community == c) & active) for c in np.unique(community)}
    by_class = {c: np.flatnonzero((labels == c) & active) for c in np.unique(labels)}
    sources = rng.choice(nodes, int(mean_degree * nodes.size / 2))
    draw = rng.random(sources.size)
    targets = np.empty_like(sources)
    for i, source in enumerate(sources):
        pool = (by_community[community[source]] if draw[i] < 0.6 else
                by_class[labels[source]] if draw[i] < 0.8 else nodes)
        targets[i] = pool[rng.integers(pool.size)]
    looped = rng.choice(nodes, loops)
    sources, targets = np.concatenate([sources, looped]), np.concatenate([targets, looped])
    again = rng.integers(0, sources.size, duplicates)
    return np.concatenate([sources, sources[again]]), np.concatenate([targets, targets[again]])


def _bag_of_words(labels, words: int, rng) -> np.ndarray:
    """0/1 rows of about 8 words each, 60 % of them from the class's 100 topic words."""
    topics = rng.integers(0, words, (labels.max() + 1, min(words, 100)))
    x = np.zeros((labels.size, words), np.float32)
    for node, label in enumerate(labels):
        count = max(1, rng.poisson(8))
        own = rng.random(count) < 0.6
        x[node, np.where(own, topics[label][rng.integers(0, topics.shape[1], count)], rng.integers(0, words, count))] = 1
    return x


def _gaussian(labels, features: int, rng) -> np.ndarray:
    means = rng.normal(size=(labels.max() + 1, features))
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    return (means[labels] * np.sqrt(features) / 3 + rng.normal(size=(labels.size, features))).astype(np.float32)


def _class_labels(classes: int, rng) -> np.ndarray:
    """Sorted labels of ``NODES`` nodes, class sizes drawn around equal shares."""
    return np.sort(rng.choice(classes, NODES, p=rng.dirichlet(np.full(classes, 8.0))))


def _write(path: Path, sources, targets, x, labels, sparse_features: bool) -> Path:
    order = np.lexsort((targets, sources))  # CSR by hand: duplicates and loops stay as a raw file holds them
    indptr = np.searchsorted(sources[order], np.arange(NODES + 1)).astype(np.int32)
    arrays = {"adj_data": np.ones(order.size, np.float32), "adj_indices": targets[order].astype(np.int32),
              "adj_indptr": indptr, "adj_shape": np.array([NODES, NODES]), "labels": labels}
    if sparse_features:
        features = sp.csr_matrix(x)
        arrays.update(attr_data=features.data, attr_indices=features.indices, attr_indptr=features.indptr,
                      attr_shape=np.array(features.shape))
    else:
        arrays["attr_matrix"] = x
    np.savez(path, **arrays)
    return path


def make(name: str, out_dir: Path) -> Path:
    """Write graph ``name`` (see the module docstring) to ``out_dir/name.npz``."""
    if name == "directed":
        rng = np.random.default_rng(0)
        labels = _class_labels(7, rng)
        edges = _edges(labels, _communities(labels, rng), rng, 4.0, 0.0, 30, 200)
        return _write(out_dir / f"{name}.npz", *edges, _bag_of_words(labels, 500, rng), labels, True)
    if name == "isolated":
        rng = np.random.default_rng(2)
        labels = _class_labels(7, rng)
        edges = _edges(labels, _communities(labels, rng), rng, 4.0, 0.3, 30, 200)
        return _write(out_dir / f"{name}.npz", *edges, _bag_of_words(labels, 500, rng), labels, True)
    if name == "forty_classes":
        rng = np.random.default_rng(31)
        sizes = [3, 5, 8, 10, 12, 15, 18, 19] + list(rng.integers(25, 60, 31))
        labels = np.repeat(np.arange(40), sizes + [NODES - sum(sizes)])
        edges = _edges(labels, _communities(labels, rng), rng, 4.0, 0.0, 30, 200)
        return _write(out_dir / f"{name}.npz", *edges, _bag_of_words(labels, 1000, rng), labels, True)
    if name == "shuffled":
        rng = np.random.default_rng(7)
        labels = _class_labels(7, rng)
        sources, targets = _edges(labels, _communities(labels, rng), rng, 4.0, 0.0, 0, 0)
        x = _gaussian(labels, 100, rng)
        new_id = rng.permutation(NODES)
        old_of = np.argsort(new_id)
        return _write(out_dir / f"{name}.npz", new_id[sources], new_id[targets], x[old_of], labels[old_of], False)
    raise ValueError(f"unknown graph {name!r}; allowed: {', '.join(GRAPHS)}")


GRAPHS = ("directed", "isolated", "forty_classes", "shuffled")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"any of {', '.join(GRAPHS)} (default: all)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in GRAPHS]
    if unknown:
        parser.error(f"unknown graph {unknown[0]!r}; allowed: {', '.join(GRAPHS)}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name in args.names or GRAPHS:
        print(make(name, args.out_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
