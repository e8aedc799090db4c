"""`.npz` bundles of a `Graph`: the adjacency as CSR arrays plus features, labels and masks.

Keys: adj_data, adj_indices, adj_indptr, adj_shape, x, y, train_mask, val_mask, test_mask,
and optionally num_classes, name, communities. Loading uses `allow_pickle=False`, so a bundle
can hold only plain arrays; the adjacency is canonicalised (symmetric, binary, loop-free) and
the graph validated. `load_npz` also reads the gnn-benchmark layout (`dste.data.gnn_benchmark`).
"""

from __future__ import annotations

import struct
import tokenize
import zipfile
import zlib
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from dste.atomic_files import atomic_write

from .graph import Graph, canonical_adjacency

__all__ = ["save_npz", "load_npz", "read_array", "whole_numbers", "csr_from_arrays", "REQUIRED_KEYS"]

REQUIRED_KEYS = ("adj_data", "adj_indices", "adj_indptr", "adj_shape", "x", "y", "train_mask", "val_mask", "test_mask")


def save_npz(graph: Graph, path: str | Path) -> Path:
    """Write `graph` to `path` (compressed); returns the path written."""
    if not isinstance(graph, Graph):
        raise TypeError(f"expected a dste.data.Graph, got {type(graph).__name__}")
    path = Path(path)
    arrays = {
        "adj_data": graph.adj.data,
        "adj_indices": graph.adj.indices,
        "adj_indptr": graph.adj.indptr,
        "adj_shape": np.asarray(graph.adj.shape, dtype=np.int64),
        "x": graph.x,
        "y": graph.y,
        "train_mask": graph.train_mask,
        "val_mask": graph.val_mask,
        "test_mask": graph.test_mask,
        "num_classes": np.asarray(graph.num_classes, dtype=np.int64),
        "name": np.asarray(graph.name),
    }
    if arrays["name"].dtype.kind != "U":  # an object array: written, then refused by load_npz (no pickle)
        raise TypeError(f"graph.name must be a string to be saved, got {type(graph.name).__name__} {graph.name!r}")
    if graph.communities is not None:
        arrays["communities"] = graph.communities
    # a failed write (a full disk) keeps the previous bundle
    atomic_write(path, lambda handle: np.savez_compressed(handle, **arrays))
    return path


def whole_numbers(path, key: str, values) -> np.ndarray:
    """``values`` as an int64 array; a non-integer (2708.9 classes, a community id of 1.7) is refused, not
    truncated, and so is a whole number int64 cannot hold (a uint64 2^63, a float 1e30), not wrapped."""
    values = np.asarray(values)
    whole = values.dtype.kind in "iu" or (
        values.dtype.kind == "f" and np.isfinite(values).all() and (values == np.round(values)).all())
    if whole:
        if values.size and values.dtype.kind in "uf" and not (-(2**63) <= values.min() and values.max() < 2**63):
            raise ValueError(f"{path}: {key} must hold integers within int64's range, got range "
                             f"[{values.min().item()!r}, {values.max().item()!r}]")
        return values.astype(np.int64)
    if values.dtype.kind == "f":
        flat = values.ravel()
        bad = np.flatnonzero(~np.isfinite(flat) | (flat != np.round(flat)))
        raise ValueError(f"{path}: {key} must hold integers, got {values.dtype} values such as "
                         f"{flat[bad[0]].item()!r} (entry {int(bad[0])}, {bad.size} such)")
    raise ValueError(f"{path}: {key} must hold integers, got {values.dtype} values"
                     + (f" such as {values.ravel()[0].item()!r}" if values.size else ""))


def _bundle_name(path, value) -> str:
    """The bundle's ``name``: one string (``str()`` of a string array gave "['a' 'b']", of bytes "np.bytes_(b'a')")."""
    value = np.asarray(value)
    if value.ndim != 0:
        raise ValueError(f"{path}: name must be one string, got {value.dtype} of shape {value.shape}")
    item = value.item()
    return item.decode("utf-8", errors="replace") if isinstance(item, bytes) else str(item)


def read_array(bundle, path, key: str) -> np.ndarray:
    """``bundle[key]`` of an open ``np.load(path, allow_pickle=False)``, its failures as ValueErrors that name the
    file: a corrupted member, a corrupted array header, an object array (which would need pickle)."""
    try:
        return bundle[key]
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, struct.error, KeyError) as err:
        raise ValueError(f"{path}: not a readable .npz archive ({type(err).__name__}: {err})") from err
    except (SyntaxError, tokenize.TokenError) as err:  # a corrupted .npy header inside the archive
        raise ValueError(f"{path}: an array header in the archive is corrupted ({err})") from err
    except ValueError as err:
        if "allow_pickle" in str(err):  # object arrays need pickle, which is refused
            raise ValueError(f"{path}: {key} holds object arrays, which are not allowed ({err})") from err
        raise ValueError(f"{path}: the header or data of {key} in the archive is corrupted ({err})") from err


def csr_from_arrays(path, prefix: str, get, what: str) -> sp.csr_matrix:
    """The CSR matrix stored as ``{prefix}_data``, ``_indices``, ``_indptr`` and ``_shape`` (``get(key)`` reads
    one), checked in full: ids and the shape must be whole numbers and the arrays consistent."""
    shape = tuple(int(s) for s in whole_numbers(path, f"{prefix}_shape", get(f"{prefix}_shape")).ravel())
    if len(shape) != 2:
        raise ValueError(f"{path}: {prefix}_shape must hold two numbers, got {shape}")
    # SciPy casts float ids to int: a column id of 1.7 would load as an edge to node 1
    indices = whole_numbers(path, f"{prefix}_indices", get(f"{prefix}_indices"))
    indptr = whole_numbers(path, f"{prefix}_indptr", get(f"{prefix}_indptr"))
    try:
        matrix = sp.csr_matrix((get(f"{prefix}_data"), indices, indptr), shape=shape)
        matrix.check_format(full_check=True)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path}: {what} CSR arrays are inconsistent ({err})") from err
    return matrix


def load_npz(path: str | Path, name: str | None = None, split_seed: int = 0) -> Graph:
    """Read a bundle written by `save_npz` (or any bundle with the same keys), or a file in the gnn-benchmark
    layout (`dste.data.gnn_benchmark`: Amazon, Coauthor, CitationFull), which carries no split: ``split_seed``
    seeds the Planetoid-style split drawn for it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no .npz bundle at {path}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a readable .npz archive (not a zip file)")
    try:
        with np.load(path, allow_pickle=False) as bundle:
            files = set(bundle.files)
            if not all(key in files for key in REQUIRED_KEYS):
                from .gnn_benchmark import is_gnn_benchmark, read_gnn_benchmark

                if is_gnn_benchmark(files):
                    return read_gnn_benchmark(bundle, path, name=name, split_seed=split_seed)
            arrays = {key: read_array(bundle, path, key) for key in sorted(files)}
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, struct.error) as err:
        raise ValueError(f"{path}: not a readable .npz archive ({type(err).__name__}: {err})") from err
    missing = [key for key in REQUIRED_KEYS if key not in arrays]
    if missing:
        from .gnn_benchmark import ADJACENCY_KEYS, FEATURE_KEYS, LABEL_KEYS

        raise ValueError(
            f"{path}: missing keys {missing}; a DSTE bundle needs {list(REQUIRED_KEYS)}, a gnn-benchmark file "
            f"{list(ADJACENCY_KEYS)}, features as {list(FEATURE_KEYS[0])} or {list(FEATURE_KEYS[1])} and labels as "
            f"{list(LABEL_KEYS[0])} or {list(LABEL_KEYS[1])}")
    adj = csr_from_arrays(path, "adj", arrays.__getitem__, "adjacency")
    y = np.asarray(arrays["y"])
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{path}: y must hold integer class ids, got {y.dtype}")
    y = whole_numbers(path, "y", y)
    if "num_classes" in arrays:
        count = whole_numbers(path, "num_classes", arrays["num_classes"])
        if count.ndim != 0:
            raise ValueError(f"{path}: num_classes must be one integer, got an array of shape {count.shape}")
        num_classes = int(count)
        if num_classes > max(y.size, 1):  # the model's output layer is this wide: 2^40 would exhaust memory later
            raise ValueError(f"{path}: num_classes is {num_classes}, more than the bundle's {y.size} nodes; a class "
                             "count above the node count cannot label these nodes")
    elif y.size:
        num_classes = int(y.max()) + 1
    else:
        raise ValueError(f"{path}: the bundle has no nodes (y is empty) and no num_classes; a graph needs at least "
                         "one node")
    masks = {}
    for key in ("train_mask", "val_mask", "test_mask"):
        if arrays[key].dtype != np.bool_:
            raise ValueError(f"{path}: {key} must be a bool array, got {arrays[key].dtype}")
        masks[key] = arrays[key]
    x = np.asarray(arrays["x"])
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{path}: x must be a floating-point array, got {x.dtype}")
    communities = arrays.get("communities")
    if communities is not None:
        communities = whole_numbers(path, "communities", communities)
    if x.dtype.itemsize > 4 and x.size and np.isfinite(x).all() and np.abs(x).max() > np.finfo(np.float32).max:
        raise ValueError(f"{path}: x holds {x.dtype} values beyond float32's range (3.4e38), the features' dtype; "
                         "rescale x")
    try:  # the graph's own checks (labels, split masks, features) name the file they came from
        return Graph(
            adj=canonical_adjacency(adj),
            x=x.astype(np.float32),
            y=y.astype(np.int64),
            num_classes=num_classes,
            name=name or (_bundle_name(path, arrays["name"]) if "name" in arrays else path.stem),
            communities=None if communities is None else communities.astype(np.int64),
            meta={"source": "npz", "path": str(path)},
            **masks,
        )
    except (TypeError, ValueError) as err:  # a file's content, whatever the check's kind: a bad file
        raise ValueError(f"{path}: {err}") from None
