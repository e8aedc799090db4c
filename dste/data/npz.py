"""`.npz` bundles of a `Graph`: the adjacency as CSR arrays plus features, labels and masks.

Keys: adj_data, adj_indices, adj_indptr, adj_shape, x, y, train_mask, val_mask, test_mask,
and optionally num_classes, name, communities. Loading uses `allow_pickle=False`, so a bundle
can hold only plain arrays; the adjacency is canonicalised (symmetric, binary, loop-free) and
the graph validated.
"""

from __future__ import annotations

import struct
import tokenize
import zipfile
import zlib
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .graph import Graph, canonical_adjacency

__all__ = ["save_npz", "load_npz", "REQUIRED_KEYS"]

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
    if graph.communities is not None:
        arrays["communities"] = graph.communities
    with open(path, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    return path


def _whole_numbers(path, key: str, values) -> np.ndarray:
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
    raise ValueError(f"{path}: {key} must hold integers, got {values.dtype} values"
                     + (f" such as {values.ravel()[0].item()!r}" if values.size else ""))


def _bundle_name(path, value) -> str:
    """The bundle's ``name``: one string (``str()`` of a string array gave "['a' 'b']", of bytes "np.bytes_(b'a')")."""
    value = np.asarray(value)
    if value.ndim != 0:
        raise ValueError(f"{path}: name must be one string, got {value.dtype} of shape {value.shape}")
    item = value.item()
    return item.decode("utf-8", errors="replace") if isinstance(item, bytes) else str(item)


def load_npz(path: str | Path, name: str | None = None) -> Graph:
    """Read a bundle written by `save_npz` (or any bundle with the same keys)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no .npz bundle at {path}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a readable .npz archive (not a zip file)")
    try:
        with np.load(path, allow_pickle=False) as bundle:
            arrays = {key: bundle[key] for key in bundle.files}
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, struct.error, KeyError) as err:
        raise ValueError(f"{path}: not a readable .npz archive ({type(err).__name__}: {err})") from err
    except (SyntaxError, tokenize.TokenError) as err:  # a corrupted .npy header inside the archive
        raise ValueError(f"{path}: an array header in the archive is corrupted ({err})") from err
    except ValueError as err:  # object arrays need pickle, which is refused
        raise ValueError(f"{path}: bundle holds object arrays, which are not allowed ({err})") from err
    missing = [key for key in REQUIRED_KEYS if key not in arrays]
    if missing:
        raise ValueError(f"{path}: missing keys {missing}; a bundle needs {list(REQUIRED_KEYS)}")
    shape = tuple(int(s) for s in _whole_numbers(path, "adj_shape", arrays["adj_shape"]).ravel())
    if len(shape) != 2:
        raise ValueError(f"{path}: adj_shape must hold two numbers, got {shape}")
    # SciPy casts float ids to int: a column id of 1.7 would load as an edge to node 1
    indices = _whole_numbers(path, "adj_indices", arrays["adj_indices"])
    indptr = _whole_numbers(path, "adj_indptr", arrays["adj_indptr"])
    try:
        adj = sp.csr_matrix((arrays["adj_data"], indices, indptr), shape=shape)
        adj.check_format(full_check=True)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path}: adjacency CSR arrays are inconsistent ({err})") from err
    y = np.asarray(arrays["y"])
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{path}: y must hold integer class ids, got {y.dtype}")
    y = _whole_numbers(path, "y", y)
    if "num_classes" in arrays:
        count = _whole_numbers(path, "num_classes", arrays["num_classes"])
        if count.ndim != 0:
            raise ValueError(f"{path}: num_classes must be one integer, got an array of shape {count.shape}")
        num_classes = int(count)
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
        communities = _whole_numbers(path, "communities", communities)
    try:
        adj = canonical_adjacency(adj)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    return Graph(
        adj=adj,
        x=x.astype(np.float32),
        y=y.astype(np.int64),
        num_classes=num_classes,
        name=name or (_bundle_name(path, arrays["name"]) if "name" in arrays else path.stem),
        communities=None if communities is None else communities.astype(np.int64),
        meta={"source": "npz", "path": str(path)},
        **masks,
    )
