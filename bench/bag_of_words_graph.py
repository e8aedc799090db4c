"""A generated graph with wide 0/1 bag-of-words features, written in the gnn-benchmark ``.npz`` layout.

    python bench/bag_of_words_graph.py OUT.npz [--nodes 18333] [--edges 81894] [--classes 15] [--features 6805]
                                       [--words 9] [--seed 5]

The defaults have Coauthor CS's size (Shchur et al., 2018: 18,333 nodes, 81,894 edges, 15 classes, 6,805 keyword
features); the real file is not part of this project and nothing downloads it. Each node draws a class, about
``--words`` distinct words (Poisson), 60 % of them from its class's 400 topic words, and its edges, 80 % of them
inside its class. ``dste run --dataset OUT.npz`` reads it as it reads PyG's Amazon and Coauthor files (a
Planetoid-style split drawn from the run's seed): the graph on which ``bench/README.md``, "Wide inputs", measures
the time and memory of a run whose features are thousands of columns wide and sparse.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import scipy.sparse as sp

TOPIC_WORDS = 400
"""Words each class favours."""
OWN_TOPIC_SHARE, OWN_CLASS_EDGE_SHARE = 0.6, 0.8


def bag_of_words_graph(nodes: int, edges: int, classes: int, features: int, words: int, seed: int):
    """``(adjacency, features, labels)``: the upper triangle of a symmetric 0/1 adjacency with ``edges`` edges
    (CSR), 0/1 features (CSR, float32) and int64 labels."""
    for name, value in (("nodes", nodes), ("edges", edges), ("classes", classes), ("features", features),
                        ("words", words)):
        if value < 1:
            raise ValueError(f"--{name} must be >= 1, got {value}")
    if features < TOPIC_WORDS:
        raise ValueError(f"--features must be >= {TOPIC_WORDS} (each class favours {TOPIC_WORDS} words), got {features}")
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, nodes)
    members = [np.flatnonzero(labels == c) for c in range(classes)]
    if any(m.size == 0 for m in members):
        raise ValueError(f"a class drew no node: give more --nodes than {nodes} for {classes} classes")
    drawn = 3 * edges  # a surplus: duplicates, self-loops and both directions of a pair are dropped below
    sources = rng.integers(0, nodes, drawn)
    same_class = rng.random(drawn) < OWN_CLASS_EDGE_SHARE
    targets = np.where(same_class, [members[labels[s]][rng.integers(len(members[labels[s]]))] for s in sources],
                       rng.integers(0, nodes, drawn))
    adjacency = sp.coo_matrix((np.ones(drawn), (sources, targets)), shape=(nodes, nodes)).tocsr()
    adjacency = ((adjacency + adjacency.T) > 0).astype(np.float32)
    adjacency.setdiag(0)
    adjacency.eliminate_zeros()
    upper = sp.triu(adjacency, 1).tocoo()
    if upper.nnz < edges:
        raise ValueError(f"only {upper.nnz} distinct edges drawn for --edges {edges}: the graph is too dense")
    keep = rng.permutation(upper.nnz)[:edges]
    adjacency = sp.coo_matrix((np.ones(edges, np.float32), (upper.row[keep], upper.col[keep])),
                              shape=(nodes, nodes)).tocsr()
    topics = rng.integers(0, features, (classes, TOPIC_WORDS))
    rows, columns = [], []
    for node in range(nodes):
        count = max(1, rng.poisson(words))
        own = rng.random(count) < OWN_TOPIC_SHARE
        chosen = np.unique(np.where(own, topics[labels[node]][rng.integers(0, TOPIC_WORDS, count)],
                                    rng.integers(0, features, count)))
        rows.extend([node] * chosen.size)
        columns.extend(chosen.tolist())
    x = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, columns)), shape=(nodes, features))
    return adjacency, x, labels


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="the .npz file to write")
    parser.add_argument("--nodes", type=int, default=18_333)
    parser.add_argument("--edges", type=int, default=81_894)
    parser.add_argument("--classes", type=int, default=15)
    parser.add_argument("--features", type=int, default=6_805)
    parser.add_argument("--words", type=int, default=9, help="mean distinct words per node")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args(argv)
    adjacency, x, labels = bag_of_words_graph(args.nodes, args.edges, args.classes, args.features, args.words,
                                              args.seed)
    np.savez(args.out, adj_data=adjacency.data, adj_indices=adjacency.indices, adj_indptr=adjacency.indptr,
             adj_shape=np.array(adjacency.shape), attr_data=x.data, attr_indices=x.indices, attr_indptr=x.indptr,
             attr_shape=np.array(x.shape), labels=labels)
    print(f"{args.out}: {args.nodes:,} nodes, {adjacency.nnz:,} edges, {x.nnz / args.nodes:.2f} words per node")
    return 0


if __name__ == "__main__":
    sys.exit(main())
