"""Offline loader for the raw Planetoid citation datasets (Cora, CiteSeer, PubMed).

Reads the eight files `ind.<name>.{x, allx, tx, y, ally, ty, graph, test.index}` with the
restricted unpickler of `safe_pickle` (no arbitrary code runs) and applies the standard
processing of the public split:

    features = vstack(allx, tx);  labels = argmax(vstack(ally, ty))
    rows at the shuffled test positions take the rows of the sorted test positions
    citeseer: test ids span a range with gaps (isolated nodes missing from tx/ty); tx/ty are
              padded with zero rows so every id in the range exists (their label becomes 0,
              and they are in no split)
    adjacency from the adjacency-list dict: symmetrised, self loops and duplicates removed
    split: train = the first len(y) nodes (20 per class), val = the next 500 (fewer if allx is
           shorter),
           test = the 1,000 listed test ids

Files are looked up in `root`, `root/<name>`, `root/<name>/raw` and `root/<Name>/raw` (the
layout PyTorch Geometric leaves after downloading).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .graph import Graph, adjacency_from_pairs
from .safe_pickle import safe_load, sparse_from_state
from .splits import masks_from_indices

__all__ = ["PLANETOID_NAMES", "load_planetoid", "find_planetoid_dir"]

PLANETOID_NAMES = ("cora", "citeseer", "pubmed")
PICKLED_PARTS = ("x", "y", "tx", "ty", "allx", "ally", "graph")
NUM_VAL = 500


def _candidate_dirs(root: Path, name: str) -> list[Path]:
    display = {"cora": "Cora", "citeseer": "CiteSeer", "pubmed": "PubMed"}[name]
    return [root, root / name, root / name / "raw", root / display, root / display / "raw"]


def find_planetoid_dir(name: str, root: str | Path) -> Path:
    """The directory under `root` holding all `ind.<name>.*` files; FileNotFoundError otherwise."""
    name = _check_name(name)
    root = Path(root)
    needed = [f"ind.{name}.{part}" for part in PICKLED_PARTS + ("test.index",)]
    for folder in _candidate_dirs(root, name):
        if all((folder / file).is_file() for file in needed):
            return folder
    tried = ", ".join(str(folder) for folder in _candidate_dirs(root, name))
    raise FileNotFoundError(f"Planetoid files {needed} not all found; looked in: {tried}")


def _check_name(name: str) -> str:
    if not isinstance(name, str) or name.lower() not in PLANETOID_NAMES:
        raise ValueError(f"unknown Planetoid dataset {name!r}; allowed: {list(PLANETOID_NAMES)}")
    return name.lower()


def _read_test_index(path: Path) -> np.ndarray:
    try:
        text = path.read_text(encoding="ascii").split()
        index = np.array([int(token) for token in text], dtype=np.int64)
    except (UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{path}: expected one integer node id per line ({err})") from err
    if index.size == 0 or index.min() < 0:
        raise ValueError(f"{path}: test index must list non-negative node ids, got {index.size} entries")
    if np.unique(index).size != index.size:
        raise ValueError(f"{path}: test index lists a node twice")
    return index


def _one_hot(obj, source: str, width: int | None = None) -> np.ndarray:
    if not isinstance(obj, np.ndarray) or obj.ndim != 2:
        raise ValueError(f"{source}: expected a 2-D one-hot label array, got {type(obj).__name__}")
    if width is not None and obj.shape[1] != width:
        raise ValueError(f"{source}: has {obj.shape[1]} label columns, expected {width}")
    return obj


def _adjacency_list(obj, num_nodes: int, source: str) -> sp.csr_matrix:
    if not isinstance(obj, dict):
        raise ValueError(f"{source}: expected a dict of adjacency lists, got {type(obj).__name__}")
    counts = []
    sources, targets = [], []
    for node, neighbours in obj.items():
        if not isinstance(neighbours, (list, tuple)):
            raise ValueError(f"{source}: neighbours of node {node!r} are {type(neighbours).__name__}, not a list")
        sources.append(node)
        counts.append(len(neighbours))
        targets.extend(neighbours)
    try:
        rows = np.repeat(np.asarray(sources, dtype=np.int64), counts)
        cols = np.asarray(targets, dtype=np.int64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{source}: node ids must be integers ({err})") from err
    if rows.size and (min(rows.min(), cols.min()) < 0 or max(rows.max(), cols.max()) >= num_nodes):
        raise ValueError(f"{source}: node ids must lie in [0, {num_nodes})")
    return adjacency_from_pairs(rows, cols, num_nodes)


def load_planetoid(name: str, root: str | Path, normalize_features: bool = False) -> Graph:
    """Load Cora / CiteSeer / PubMed from raw Planetoid files under `root` (never downloads).

    normalize_features: divide each feature row by its sum (the usual GCN preprocessing).
    """
    name = _check_name(name)
    folder = find_planetoid_dir(name, root)
    parts = {}
    for part in PICKLED_PARTS:
        path = folder / f"ind.{name}.{part}"
        parts[part] = safe_load(path.read_bytes(), str(path))
    test_index = _read_test_index(folder / f"ind.{name}.test.index")

    x = sparse_from_state(parts["x"], f"ind.{name}.x")
    allx = sparse_from_state(parts["allx"], f"ind.{name}.allx")
    tx = sparse_from_state(parts["tx"], f"ind.{name}.tx")
    ally = _one_hot(parts["ally"], f"ind.{name}.ally")
    num_classes = ally.shape[1]
    y = _one_hot(parts["y"], f"ind.{name}.y", num_classes)
    ty = _one_hot(parts["ty"], f"ind.{name}.ty", num_classes)
    num_features = allx.shape[1]
    for label, matrix in (("x", x), ("tx", tx)):
        if matrix.shape[1] != num_features:
            raise ValueError(f"ind.{name}.{label} has {matrix.shape[1]} features, allx has {num_features}")
    for label, feats, labels in (("x/y", x, y), ("allx/ally", allx, ally), ("tx/ty", tx, ty)):
        if feats.shape[0] != labels.shape[0]:
            raise ValueError(f"ind.{name}.{label}: {feats.shape[0]} feature rows but {labels.shape[0]} label rows")
    if test_index.size != tx.shape[0]:
        raise ValueError(f"ind.{name}.test.index lists {test_index.size} nodes but tx has {tx.shape[0]} rows")

    sorted_test = np.sort(test_index)
    first_test = allx.shape[0]
    # Some test ids may be missing from the files (CiteSeer's isolated nodes): pad the test block
    # so it covers the whole id range, with zero features and zero labels.
    test_span = int(sorted_test[-1]) - int(sorted_test[0]) + 1
    if sorted_test[0] != first_test:
        raise ValueError(f"ind.{name}.test.index: test ids must start right after allx ({first_test}), got {sorted_test[0]}")
    tx_padded = sp.lil_matrix((test_span, num_features), dtype=tx.dtype)
    ty_padded = np.zeros((test_span, num_classes), dtype=ty.dtype)
    tx_padded[sorted_test - first_test] = tx
    ty_padded[sorted_test - first_test] = ty

    features = sp.vstack([allx, tx_padded.tocsr()]).tolil()
    labels_onehot = np.vstack([ally, ty_padded])
    # The standard reorder: node test_index[i] takes the row stored at sorted position i.
    features[test_index] = features[sorted_test]
    labels_onehot[test_index] = labels_onehot[sorted_test]
    features = features.tocsr()
    num_nodes = features.shape[0]

    adj = _adjacency_list(parts["graph"], num_nodes, f"ind.{name}.graph")
    x_dense = np.asarray(features.todense(), dtype=np.float32)
    if normalize_features:
        row_sum = x_dense.sum(axis=1, keepdims=True)
        x_dense = np.divide(x_dense, row_sum, out=np.zeros_like(x_dense), where=row_sum != 0)
    labels = labels_onehot.argmax(axis=1).astype(np.int64)

    num_train = y.shape[0]
    train, val, test = masks_from_indices(
        num_nodes, np.arange(num_train), np.arange(num_train, min(num_train + NUM_VAL, first_test)), sorted_test
    )
    return Graph(
        adj=adj, x=x_dense, y=labels, train_mask=train, val_mask=val, test_mask=test,
        num_classes=num_classes, name=name, meta={"source": "planetoid", "folder": str(folder)},
    )
