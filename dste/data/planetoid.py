"""Offline loader for the raw Planetoid citation datasets (Cora, CiteSeer, PubMed), and for data of one's own
written in the same layout under another name (``load_planetoid("mygraph", root)`` reads ``ind.mygraph.*``; it
gets the checks below but none of CiteSeer's fix-ups or Cora's checksums).

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

Validation (a flipped byte must not load as a changed label or extra edges; every error names
the file and the problem):

* a file of the size of a release file whose SHA-256 is known (`KNOWN_SHA256`: the standard
  Cora files) must match that hash, unless `verify_known_hashes=False` (a deliberately edited
  copy): a flipped byte keeps the size, so no label or edge of the standard files changes
  silently;
* labels `y`, `ally`, `ty` are one-hot: entries 0 or 1, exactly one 1 per row. Assumption
  (the CiteSeer files are not on this machine to check): CiteSeer may hold all-zero rows in
  `ally` past the training rows and in `ty`, as it does in the rows this loader pads for its
  missing test ids; such nodes get label 0 and are left out of every split. The checked Cora
  files hold none;
* `x` and `y` are the first rows of `allx` and `ally` (Planetoid's convention);
* `test.index`: unique ids starting right after `allx`, contiguous except for CiteSeer (the
  only dataset whose gaps the standard fix-up pads);
* `graph`: integer keys and neighbour ids (not bool, not float) in [0, number of nodes);
* shapes agree between features and labels and between all feature blocks; features finite.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .graph import Graph, adjacency_from_pairs, is_integer
from .safe_pickle import safe_load, sparse_from_state
from .splits import masks_from_indices

__all__ = ["PLANETOID_NAMES", "load_planetoid", "find_planetoid_dir"]

PLANETOID_NAMES = ("cora", "citeseer", "pubmed")
KNOWN_SHA256 = {
    # file name: (size in bytes, sha256) of the standard Cora release (as distributed by the Planetoid and PyTorch Geometric repositories)
    "ind.cora.x": (22119, "23cfa55d91c6f624233f5eb7b6e3f141f1bd2b2ae39608a63cf5d084bb27baab"),
    "ind.cora.y": (4054, "94465c14eb53e04ca262198dcbb2521ee8af60fb3f3d546cd6ca24a511b0e7d1"),
    "ind.cora.tx": (148025, "b9afbaa4a400df991f6f02ef677e1e44da55ffc04801fd02f9e673987829226a"),
    "ind.cora.ty": (28135, "41f5ac76596a1699cc33f53084a2419e92961c42bb75f36fc38e616d348532ad"),
    "ind.cora.allx": (257305, "9419ba2f26f5c35243db64aba110e0f35a04851609e0dc5433450676ca6b8543"),
    "ind.cora.ally": (47959, "2b998f5cc7fedc86e7f97ca2498f47a1ffc1462c29e2d578b23bf3f62b6e7d71"),
    "ind.cora.graph": (59847, "58f13302f39dde8852dad6fe6d15b89b077b6d7f837626bce671ef80344b383d"),
    "ind.cora.test.index": (5000, "297ce89af2b51a6a194181c7dbe1796c6a1cf9cd9349a88383b1b1e227867875"),
}
PICKLED_PARTS = ("x", "y", "tx", "ty", "allx", "ally", "graph")
OWN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
NUM_VAL = 500


def _candidate_dirs(root: Path, name: str) -> list[Path]:
    display = {"cora": "Cora", "citeseer": "CiteSeer", "pubmed": "PubMed"}.get(name, name)
    folders = [root, root / name, root / name / "raw", root / display, root / display / "raw"]
    return list(dict.fromkeys(folders))


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
    """Cora, CiteSeer and PubMed by their lower-case names; any other name of letters, digits, '_' and '-' is a
    dataset of one's own in the Planetoid layout (``ind.<name>.*``), which gets none of the releases' own handling."""
    if not isinstance(name, str) or not OWN_NAME.fullmatch(name):
        raise ValueError(f"Planetoid dataset name must be one of {list(PLANETOID_NAMES)} or a name of letters, "
                         f"digits, '_' and '-' (the <name> of its ind.<name>.* files), got {name!r}")
    return name.lower() if name.lower() in PLANETOID_NAMES else name


def _read_test_index(path: Path) -> np.ndarray:
    try:
        text = path.read_text(encoding="ascii").split()
        # digits only: int() also reads "17_08" as 1708 and "+17" as 17, which no release file holds
        wrong = next((token for token in text if not token.isdigit()), None)
        if wrong is not None:
            raise ValueError(f"{wrong!r:.40} is not a node id")
        index = np.array([int(token) for token in text], dtype=np.int64)
    except (UnicodeDecodeError, ValueError, OverflowError) as err:  # OverflowError: an id past int64
        raise ValueError(f"{path}: expected one integer node id per line, each below 2^63 ({err})") from err
    if index.size == 0 or index.min() < 0:
        raise ValueError(f"{path}: test index must list non-negative node ids, got {index.size} entries")
    if np.unique(index).size != index.size:
        raise ValueError(f"{path}: test index lists a node twice")
    return index


def _one_hot(obj, source: str, width: int | None = None, allow_unlabelled: bool = False) -> np.ndarray:
    """The label array, checked one-hot; rows of all zeros only where ``allow_unlabelled``."""
    if not isinstance(obj, np.ndarray) or obj.ndim != 2:
        raise ValueError(f"{source}: expected a 2-D one-hot label array, got {type(obj).__name__}")
    if obj.dtype.kind not in "biuf":
        raise ValueError(f"{source}: label dtype must be numeric, got {obj.dtype}")
    if width is not None and obj.shape[1] != width:
        raise ValueError(f"{source}: has {obj.shape[1]} label columns, expected {width}")
    if obj.shape[1] == 0:
        raise ValueError(f"{source}: has no label columns")
    not_binary = (obj != 0) & (obj != 1)
    if not_binary.any():
        row, col = (int(i) for i in np.argwhere(not_binary)[0])
        raise ValueError(f"{source}: labels must be one-hot (0 or 1), row {row} column {col} holds {obj[row, col]!r}")
    ones = (obj == 1).sum(axis=1)
    bad = (ones > 1) | ((ones == 0) & (not allow_unlabelled))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{source}: labels must be one-hot, row {row} has {int(ones[row])} ones "
            f"({int(bad.sum())} such rows; all-zero rows are allowed only in CiteSeer's unlabelled rows)"
        )
    return obj


def _adjacency_list(obj, num_nodes: int, source: str) -> sp.csr_matrix:
    if not isinstance(obj, dict):
        raise ValueError(f"{source}: expected a dict of adjacency lists, got {type(obj).__name__}")
    for node, neighbours in obj.items():
        if not is_integer(node):
            raise ValueError(f"{source}: node key {node!r} is {type(node).__name__}, not an integer id")
        if isinstance(neighbours, (list, tuple)) and not all(is_integer(v) for v in neighbours):
            wrong = next(v for v in neighbours if not is_integer(v))
            raise ValueError(f"{source}: neighbour {wrong!r} of node {node} is {type(wrong).__name__}, not an integer id")
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
    except (TypeError, ValueError, OverflowError) as err:  # OverflowError: an id past int64
        raise ValueError(f"{source}: node ids must be integers below 2^63 ({err})") from err
    keys = np.asarray(sources, dtype=np.int64)
    if keys.size and (keys.min() < 0 or keys.max() >= num_nodes):
        raise ValueError(f"{source}: node key {int(keys[(keys < 0) | (keys >= num_nodes)][0])} outside [0, {num_nodes})")
    if cols.size and (cols.min() < 0 or cols.max() >= num_nodes):
        raise ValueError(f"{source}: neighbour id {int(cols[(cols < 0) | (cols >= num_nodes)][0])} outside [0, {num_nodes})")
    return adjacency_from_pairs(rows, cols, num_nodes)


def _check_known_hash(path: Path, data: bytes) -> None:
    known = KNOWN_SHA256.get(path.name)
    if known is None or len(data) != known[0]:
        return  # not a copy of that release (another file under the same name; a flipped byte keeps the size)
    expected = known[1]
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ValueError(
            f"{path}: has the size of the standard Cora release's file but not its content (sha256 {actual}, "
            f"expected {expected}): a copy of Cora that is corrupt or edited. Data of your own in the Planetoid "
            "layout: name its files ind.<name>.* and load 'planetoid:<name>' (dste run --dataset planetoid:<name> "
            "--root DIR); an edited copy of Cora: load_planetoid(..., verify_known_hashes=False)"
        )


def load_planetoid(name: str, root: str | Path, normalize_features: bool = False, verify_known_hashes: bool = True) -> Graph:
    """Load Cora / CiteSeer / PubMed from raw Planetoid files under `root` (never downloads).

    normalize_features: divide each feature row by its sum (the usual GCN preprocessing).
    verify_known_hashes: refuse files of a release with known checksums (Cora) that differ from it.
    Every inconsistency raises ValueError naming the file (module docstring).
    """
    name = _check_name(name)
    folder = find_planetoid_dir(name, root)
    parts = {}
    for part in PICKLED_PARTS + ("test.index",):
        path = folder / f"ind.{name}.{part}"
        data = path.read_bytes()
        if verify_known_hashes:
            _check_known_hash(path, data)
        if part != "test.index":
            parts[part] = safe_load(data, str(path))
    test_index = _read_test_index(folder / f"ind.{name}.test.index")
    citeseer = name == "citeseer"

    x = sparse_from_state(parts["x"], f"ind.{name}.x")
    allx = sparse_from_state(parts["allx"], f"ind.{name}.allx")
    tx = sparse_from_state(parts["tx"], f"ind.{name}.tx")
    ally = _one_hot(parts["ally"], f"ind.{name}.ally", allow_unlabelled=citeseer)
    num_classes = ally.shape[1]
    y = _one_hot(parts["y"], f"ind.{name}.y", num_classes)
    ty = _one_hot(parts["ty"], f"ind.{name}.ty", num_classes, allow_unlabelled=citeseer)
    num_features = allx.shape[1]
    for label, matrix in (("x", x), ("allx", allx), ("tx", tx)):
        if not np.isfinite(matrix.data).all():
            raise ValueError(f"ind.{name}.{label}: features contain NaN or Inf")
    for label, matrix in (("x", x), ("tx", tx)):
        if matrix.shape[1] != num_features:
            raise ValueError(f"ind.{name}.{label} has {matrix.shape[1]} features, allx has {num_features}")
    for label, feats, labels in (("x/y", x, y), ("allx/ally", allx, ally), ("tx/ty", tx, ty)):
        if feats.shape[0] != labels.shape[0]:
            raise ValueError(f"ind.{name}.{label}: {feats.shape[0]} feature rows but {labels.shape[0]} label rows")
    if y.shape[0] > ally.shape[0] or not np.array_equal(y, ally[: y.shape[0]]):
        raise ValueError(f"ind.{name}.y: its {y.shape[0]} rows must equal the first rows of ind.{name}.ally")
    if (y.sum(axis=1) != 1).any():
        raise ValueError(f"ind.{name}.y: every training node needs a label")
    if x.shape[0] != y.shape[0] or (x != allx[: x.shape[0]]).nnz:
        raise ValueError(f"ind.{name}.x: its {x.shape[0]} rows must equal the first rows of ind.{name}.allx")
    if test_index.size != tx.shape[0]:
        raise ValueError(f"ind.{name}.test.index lists {test_index.size} nodes but tx has {tx.shape[0]} rows")

    sorted_test = np.sort(test_index)
    first_test = allx.shape[0]
    # Some test ids may be missing from the files (CiteSeer's isolated nodes): pad the test block
    # so it covers the whole id range, with zero features and zero labels.
    test_span = int(sorted_test[-1]) - int(sorted_test[0]) + 1
    if sorted_test[0] != first_test:
        raise ValueError(f"ind.{name}.test.index: test ids must start right after allx ({first_test}), got {sorted_test[0]}")
    if test_span != sorted_test.size and not citeseer:
        raise ValueError(
            f"ind.{name}.test.index: test ids span {test_span} ids but list {sorted_test.size}: gaps are padded only "
            "for CiteSeer, whose files miss isolated test nodes; here a gap means a corrupt index file"
        )
    if test_span > 2 * sorted_test.size + 1000:
        raise ValueError(f"ind.{name}.test.index: test ids span {test_span} ids for {sorted_test.size} listed: corrupt")
    ty_padded = np.zeros((test_span, num_classes), dtype=ty.dtype)
    ty_padded[sorted_test - first_test] = ty
    num_nodes = first_test + test_span
    # The features end up dense, so they are assembled dense (in the dtype vstack(allx, tx) has): allx's rows, tx's
    # rows at their sorted test ids, zero rows at the ids the files miss. Row assignments into a LIL matrix took
    # ~10 ms per load of Cora; the values are the same numbers, moved.
    feature_dtype = np.result_type(allx.dtype, tx.dtype)
    try:
        features = np.zeros((num_nodes, num_features), dtype=feature_dtype)
    except MemoryError:
        raise MemoryError(
            f"ind.{name}.allx/tx: {num_nodes:,} nodes x {num_features:,} features of {feature_dtype} need "
            f"{num_nodes * num_features * feature_dtype.itemsize / 2**30:,.1f} GiB dense, more than this machine can "
            "allocate: check the feature width the files declare") from None
    features[:first_test] = allx.toarray()
    features[sorted_test] = tx.toarray()
    labels_onehot = np.vstack([ally, ty_padded])
    # The standard reorder: node test_index[i] takes the row stored at sorted position i.
    features[test_index] = features[sorted_test]
    labels_onehot[test_index] = labels_onehot[sorted_test]

    adj = _adjacency_list(parts["graph"], num_nodes, f"ind.{name}.graph")
    with np.errstate(over="ignore"):  # refused just below, naming the files
        x_dense = np.asarray(features, dtype=np.float32)
    if not np.isfinite(x_dense).all():  # finite float64 features beyond float32's range
        raise ValueError(f"ind.{name}.allx/tx: features exceed float32's range (largest magnitude "
                         f"{np.abs(features).max():.3g}); the graph's features are float32")
    if normalize_features:
        row_sum = x_dense.sum(axis=1, keepdims=True)
        x_dense = np.divide(x_dense, row_sum, out=np.zeros_like(x_dense), where=row_sum != 0)
    labels = labels_onehot.argmax(axis=1).astype(np.int64)
    labelled = labels_onehot.sum(axis=1) == 1

    num_train = y.shape[0]
    val_ids = np.arange(num_train, min(num_train + NUM_VAL, first_test))
    train, val, test = masks_from_indices(num_nodes, np.arange(num_train), val_ids[labelled[val_ids]], sorted_test[labelled[sorted_test]])
    return Graph(
        adj=adj, x=x_dense, y=labels, train_mask=train, val_mask=val, test_mask=test,
        num_classes=num_classes, name=name, meta={"source": "planetoid", "folder": str(folder)},
    )
