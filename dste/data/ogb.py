"""Offline loader for an OGB node-property-prediction folder (e.g. ogbn-arxiv), no network.

Expected layout (what the OGB package leaves after download and unzip):

    <folder>/raw/edge.csv.gz          E lines "src,dst" (directed pairs; symmetrised here)
    <folder>/raw/node-feat.csv.gz     n lines of f comma-separated floats
    <folder>/raw/node-label.csv.gz    n lines, one integer class id each
    <folder>/split/<type>/train.csv.gz, valid.csv.gz, test.csv.gz   one node id per line

`<type>` is the only sub-folder of split/ (e.g. `time` for arxiv) unless `split_type` names one.
Multi-label tasks and unlabelled nodes are not supported and raise ValueError.
"""

from __future__ import annotations

import gzip
import itertools
import warnings
from pathlib import Path

import numpy as np

from .graph import Graph, adjacency_from_pairs
from .splits import masks_from_indices

__all__ = ["load_ogb_folder", "resolve_ogb_folder", "read_csv_gz"]

FLOAT64_EXACT_INTEGERS = 2.0 ** 53

SPLIT_FILES = {"train": "train.csv.gz", "val": "valid.csv.gz", "test": "test.csv.gz"}


def read_csv_gz(path: Path, dtype, num_columns: int | None = None) -> np.ndarray:
    """A gzip-compressed headerless CSV of numbers as a 2-D array [rows, columns].

    Raises FileNotFoundError when missing and ValueError when the file is not gzip, holds
    something other than numbers, or has ragged rows.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing OGB file {path}")
    try:
        with gzip.open(path, "rt", encoding="ascii") as handle:
            text = handle.read()
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a readable gzip-compressed ASCII CSV ({err})") from err
    lines = text.strip().splitlines()
    if not lines:
        return np.zeros((0, num_columns or 0), dtype=dtype)
    columns = lines[0].count(",") + 1
    if num_columns is not None and columns != num_columns:
        raise ValueError(f"{path}: expected {num_columns} column(s) per line, found {columns}")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            flat = np.fromstring(",".join(lines), dtype=np.float64, sep=",")
        except (DeprecationWarning, ValueError) as err:
            raise ValueError(f"{path}: contains a value that is not a number") from err
    ragged = [i for i, line in enumerate(lines) if line.count(",") != columns - 1]
    if ragged or flat.size != len(lines) * columns:
        where = f"; line {ragged[0] + 1} has {lines[ragged[0]].count(',') + 1}" if ragged else ""
        raise ValueError(f"{path}: ragged or malformed rows ({flat.size} values for {len(lines)} lines of {columns}"
                         f"{where})")
    table = flat.reshape(len(lines), columns)
    if np.issubdtype(np.dtype(dtype), np.integer):
        if not np.isfinite(table).all():
            raise ValueError(f"{path}: integer column holds NaN/Inf (unlabelled nodes are not supported)")
        if not np.array_equal(table, np.round(table)):
            raise ValueError(f"{path}: expected integers, found fractional values")
        # the text is parsed through float64, exact for integers up to 2^53: a larger id would load as another
        # number (2^63 - 1 wrapped to a negative one)
        if table.size and np.abs(table).max() > FLOAT64_EXACT_INTEGERS:
            value = table.flat[np.argmax(np.abs(table))]
            raise ValueError(f"{path}: integer {value:.0f} is beyond 2^53 in magnitude; ids and class ids must be "
                             "smaller")
    with np.errstate(over="ignore"):  # an overflow is refused below, naming the value
        converted = table.astype(dtype)
    if np.issubdtype(np.dtype(dtype), np.floating):
        overflowed = np.isinf(converted) & np.isfinite(table)
        if overflowed.any():
            raise ValueError(f"{path}: value {table[overflowed][0].item()!r} is beyond {np.dtype(dtype).name}'s range "
                             f"(largest {np.finfo(dtype).max:.4g})")
    return converted


def resolve_ogb_folder(name: str, root: str | Path) -> Path:
    """The dataset folder for `name` (e.g. 'ogbn-arxiv') under `root`, or `root` itself.

    `root` itself is taken unless its name is another OGB dataset's (``ogbn_products`` when 'ogbn-arxiv' is asked
    for): that folder was loaded under the name asked for."""
    root = Path(root)
    for folder in (root / name.replace("-", "_"), root / name):
        if (folder / "raw").is_dir():
            return folder
    candidates = [root / name.replace("-", "_"), root / name, root]
    if (root / "raw").is_dir():
        folder_name = _ogb_key(root.name)
        if folder_name.startswith("ogbn_") and folder_name != _ogb_key(name):
            raise FileNotFoundError(
                f"no OGB folder for {name!r} under {root}: {root} is itself the folder of {root.name!r}; ask for "
                f"that dataset, or pass the folder holding {name.replace('-', '_')}/ as root")
        return root
    raise FileNotFoundError(
        f"no OGB folder for {name!r}: none of {[str(c) for c in candidates]} contains raw/"
    )


def _ogb_key(name: str) -> str:
    return name.lower().replace("-", "_")


def _split_dir(folder: Path, split_type: str | None) -> Path:
    split_root = folder / "split"
    if split_type is not None:
        chosen = split_root / split_type
        if not chosen.is_dir():
            raise FileNotFoundError(f"split folder {chosen} not found")
        return chosen
    options = sorted(p for p in split_root.iterdir() if p.is_dir()) if split_root.is_dir() else []
    if len(options) != 1:
        raise FileNotFoundError(
            f"{split_root}: expected exactly one split type folder, found {[p.name for p in options]}; pass split_type"
        )
    return options[0]


def _split_masks(split: Path, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The training, validation and test masks of a split folder; an id out of range, or a node in two of its
    files, is refused naming the file(s)."""
    paths = [split / SPLIT_FILES[key] for key in ("train", "val", "test")]
    masks = []
    for path in paths:
        try:
            (mask,) = masks_from_indices(n, read_csv_gz(path, np.int64, num_columns=1)[:, 0])
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None
        masks.append(mask)
    for (first, first_path), (second, second_path) in itertools.combinations(zip(masks, paths), 2):
        both = np.flatnonzero(first & second)
        if both.size:
            raise ValueError(f"{first_path} and {second_path} both list node {int(both[0])} ({both.size} nodes in "
                             "all): the training, validation and test splits must be disjoint")
    return tuple(masks)


def load_ogb_folder(folder: str | Path, split_type: str | None = None, name: str | None = None) -> Graph:
    """Load an OGB node-property folder as a `Graph` (symmetrised, loops and duplicates removed)."""
    folder = Path(folder)
    raw = folder / "raw"
    if not raw.is_dir():
        raise FileNotFoundError(f"{folder}: no raw/ sub-folder (expected an unpacked OGB dataset)")
    x = read_csv_gz(raw / "node-feat.csv.gz", np.float32)
    n = x.shape[0]
    if n == 0:
        raise ValueError(f"{raw / 'node-feat.csv.gz'}: no nodes")
    if not np.isfinite(x).all():
        raise ValueError(f"{raw / 'node-feat.csv.gz'}: features contain NaN or Inf")
    labels = read_csv_gz(raw / "node-label.csv.gz", np.int64)
    if labels.shape[1] != 1:
        raise ValueError(f"{raw / 'node-label.csv.gz'}: {labels.shape[1]} label columns; only single-label tasks are supported")
    if labels.shape[0] != n:
        raise ValueError(f"{raw / 'node-label.csv.gz'}: {labels.shape[0]} labels for {n} nodes")
    y = labels[:, 0]
    if y.min() < 0:
        raise ValueError(f"{raw / 'node-label.csv.gz'}: negative class id {y.min()}")
    if y.max() >= n:  # classes are numbered 0 .. C-1 and C <= n: a larger id would size C past any graph
        raise ValueError(f"{raw / 'node-label.csv.gz'}: class id {y.max()} for {n} nodes; class ids must lie in "
                         f"[0, {n}) (0 .. C-1 for C classes)")
    edges = read_csv_gz(raw / "edge.csv.gz", np.int64, num_columns=2)
    if edges.size and (edges.min() < 0 or edges.max() >= n):
        raise ValueError(f"{raw / 'edge.csv.gz'}: node ids must lie in [0, {n})")
    adj = adjacency_from_pairs(edges[:, 0], edges[:, 1], n)

    split = _split_dir(folder, split_type)
    train, val, test = _split_masks(split, n)
    return Graph(
        adj=adj, x=x, y=y, train_mask=train, val_mask=val, test_mask=test,
        num_classes=int(y.max()) + 1, name=name or folder.name,
        meta={"source": "ogb", "folder": str(folder), "split": split.name},
    )
