"""Offline reader for the gnn-benchmark `.npz` layout: the files of Shchur et al.'s "Pitfalls of Graph Neural
Network Evaluation" (2018), which PyG's `Amazon`, `Coauthor` and `CitationFull` datasets read as they come
(``amazon_electronics_photo.npz``, ``ms_academic_cs.npz``, ``cora_full.npz``, ...).

Keys read, and no others (the files' pickled name maps, e.g. ``idx_to_node``, are never unpickled):

    adj_data, adj_indices, adj_indptr, adj_shape       the adjacency as CSR; directed, weighted or looped edges
                                                       are symmetrised and binarised, as every loader here does
    attr_data, attr_indices, attr_indptr, attr_shape   node features as CSR, kept as stored (PyG's Amazon and
      or attr_matrix                                   Coauthor classes set every nonzero to 1; DSTE does not)
    labels                                             one class id per node,
      or labels_data, labels_indices, labels_indptr,   or a CSR one-hot matrix (a node with two classes or none
      labels_shape                                     is refused: multi-label tasks are not supported)

The files carry no split. One is drawn as Planetoid's public splits are built: 20 labelled nodes per class, then
500 validation and 1,000 test nodes at random (seeded, so every run of the same file sees the same split). A graph
too small for those sizes gets Cora's share of the nodes left (``dste.data.splits.PLANETOID_SPLIT_SHARE``), as a
generated graph does; a class of fewer than 40 nodes gives half of them (rounded down) to training, so it keeps
nodes for the evaluation (a class of one node gets no labelled node). Class ids that no node carries are dropped and the rest renumbered in order
(``meta["class_ids"]`` keeps the file's ids).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .graph import Graph, canonical_adjacency
from .npz import csr_from_arrays, read_array, whole_numbers
from .splits import planetoid_split, split_sizes_that_fit

__all__ = ["is_gnn_benchmark", "read_gnn_benchmark", "benchmark_split", "ADJACENCY_KEYS", "FEATURE_KEYS",
           "LABEL_KEYS", "TRAIN_PER_CLASS", "NUM_VAL", "NUM_TEST"]

ADJACENCY_KEYS = ("adj_data", "adj_indices", "adj_indptr", "adj_shape")
FEATURE_KEYS = (("attr_data", "attr_indices", "attr_indptr", "attr_shape"), ("attr_matrix",))
LABEL_KEYS = (("labels",), ("labels_data", "labels_indices", "labels_indptr", "labels_shape"))

TRAIN_PER_CLASS = 20  # Planetoid's public splits (Yang et al., 2016)
NUM_VAL = 500
NUM_TEST = 1000


def _has_one_of(files, layouts) -> bool:
    return any(all(key in files for key in layout) for layout in layouts)


def is_gnn_benchmark(files) -> bool:
    """Whether an archive holding the keys ``files`` is in the gnn-benchmark layout."""
    files = set(files)
    return (all(key in files for key in ADJACENCY_KEYS) and _has_one_of(files, FEATURE_KEYS)
            and _has_one_of(files, LABEL_KEYS))


def benchmark_split(y: np.ndarray, num_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train_mask, val_mask, test_mask) of the module docstring's split for labels ``y`` in [0, num_classes)."""
    y = np.asarray(y)
    counts = np.bincount(y, minlength=num_classes)
    left = y.size - int(np.minimum(TRAIN_PER_CLASS, counts // 2).sum())
    num_val, num_test = split_sizes_that_fit(left, NUM_VAL, NUM_TEST)
    if num_val < 1 or num_test < 1:
        raise ValueError(f"{y.size} nodes leave {left} after the training picks: too few for a validation and a "
                         "test node")
    return planetoid_split(y, num_classes, np.random.default_rng(seed), TRAIN_PER_CLASS, num_val, num_test,
                           small_classes="half")


def _labels(bundle, path, read) -> np.ndarray:
    if "labels" in bundle.files:
        labels = np.asarray(read("labels"))
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.ndim != 1:
            raise ValueError(f"{path}: labels must hold one class id per node, got shape {labels.shape} (multi-label "
                             "tasks are not supported)")
        labels = whole_numbers(path, "labels", labels)
    else:
        one_hot = csr_from_arrays(path, "labels", read, "label")
        one_hot.eliminate_zeros()
        per_node = np.diff(one_hot.indptr)
        if (per_node != 1).any():
            node = int(np.flatnonzero(per_node != 1)[0])
            raise ValueError(f"{path}: the CSR labels give node {node} {per_node[node]} classes; one per node is "
                             "needed (multi-label tasks and unlabelled nodes are not supported)")
        labels = one_hot.indices.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise ValueError(f"{path}: labels must be class ids >= 0, got {labels.min()} (unlabelled nodes are not "
                         "supported)")
    return labels


def _features(bundle, path, read) -> np.ndarray:
    if "attr_matrix" in bundle.files:
        x = np.asarray(read("attr_matrix"))
        if x.ndim != 2:
            raise ValueError(f"{path}: attr_matrix must be 2-D [nodes, features], got shape {x.shape}")
    else:
        x = csr_from_arrays(path, "attr", read, "feature").toarray()
    if x.dtype.kind not in "biuf":
        raise ValueError(f"{path}: node features must be numbers, got {x.dtype}")
    return x.astype(np.float32)


def read_gnn_benchmark(bundle, path, name: str | None = None, split_seed: int = 0) -> Graph:
    """The `Graph` of an open ``np.load(path, allow_pickle=False)`` archive in the gnn-benchmark layout, with the
    module docstring's split drawn by ``split_seed``."""
    path = Path(path)

    def read(key):
        return read_array(bundle, path, key)

    adj = csr_from_arrays(path, "adj", read, "adjacency")
    x = _features(bundle, path, read)
    labels = _labels(bundle, path, read)
    n = adj.shape[0]
    if n == 0:
        raise ValueError(f"{path}: the graph has no nodes")
    if x.shape[0] != n or labels.size != n:
        raise ValueError(f"{path}: {n} nodes in the adjacency, but {x.shape[0]} feature rows and {labels.size} labels")
    class_ids, y = np.unique(labels, return_inverse=True)
    try:
        adj = canonical_adjacency(adj)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    train, val, test = benchmark_split(y, class_ids.size, split_seed)
    return Graph(
        adj=adj, x=x, y=y.astype(np.int64), train_mask=train, val_mask=val, test_mask=test,
        num_classes=int(class_ids.size), name=name or path.stem,
        meta={"source": "gnn-benchmark npz", "path": str(path), "split_seed": int(split_seed),
              "class_ids": class_ids.tolist()},
    )
