"""DSTE data room: graphs, generators, dynamic snapshot streams and offline dataset loaders.

`load_dataset(name, root=None, seed=0)` is the single entry point:

    "cora-like", "citeseer-like",       generated CSBM presets (seeded)
    "pubmed-like",
    "arxiv-scale", "arxiv-scale-local"
    "cora", "citeseer", "pubmed"        raw Planetoid files under `root`
    "planetoid:<name>"                  one's own data in the Planetoid layout (`ind.<name>.*` under `root`)
    "ogbn-<name>"                       an unpacked OGB node-property folder under `root`
    "<path>.npz"                        a CSR bundle written by `save_npz`, or a gnn-benchmark file (Amazon,
                                        Coauthor, CitationFull: `dste.data.gnn_benchmark`, split drawn by `seed`);
                                        a relative path is looked up under the data root and in the working
                                        directory (both holding it: refused as ambiguous)

Nothing here touches the network.
"""

from __future__ import annotations

import os
from pathlib import Path

from .csbm import PRESETS, CSBMParams, make_graph, preset_names
from .graph import Graph, canonical_adjacency
from .npz import load_npz, save_npz
from .ogb import load_ogb_folder, resolve_ogb_folder
from .planetoid import PLANETOID_NAMES, load_planetoid
from .safe_pickle import UnsafePickleError
from .stream import Snapshot, SnapshotStream, StreamParams, make_stream

__all__ = [
    "Graph", "canonical_adjacency", "CSBMParams", "PRESETS", "make_graph", "preset_names",
    "StreamParams", "Snapshot", "SnapshotStream", "make_stream",
    "load_planetoid", "load_ogb_folder", "load_npz", "save_npz", "UnsafePickleError",
    "load_dataset", "dataset_names", "DATA_ROOT_ENV",
]

DATA_ROOT_ENV = "DSTE_DATA_ROOT"
PLANETOID_PREFIX = "planetoid:"


def dataset_names() -> str:
    """Human-readable list of what `load_dataset` accepts."""
    return (
        f"presets {preset_names()}, Planetoid {list(PLANETOID_NAMES)} (needs root), 'planetoid:<name>' (your own "
        "ind.<name>.* files in the Planetoid layout, under root), "
        "'ogbn-<name>' (an unpacked OGB folder under root), or a path ending in .npz (a DSTE bundle or a "
        "gnn-benchmark file such as amazon_electronics_photo.npz)"
    )


def _data_root(root) -> Path | None:
    """``root``, else ``$DSTE_DATA_ROOT``; None without either."""
    root = root if root is not None else os.environ.get(DATA_ROOT_ENV)
    return None if root is None else Path(root)


def _root_for(name: str, root) -> Path:
    root = _data_root(root)
    if root is None:
        raise ValueError(f"dataset {name!r} is read from disk: pass root=... or set {DATA_ROOT_ENV}")
    return root


def _npz_path(name: str, root) -> Path:
    """A relative .npz path is looked up under the data root (``root``, else ``$DSTE_DATA_ROOT``) and in the working
    directory; a file found in both places is refused as ambiguous rather than one of them read silently."""
    path = Path(name)
    root = _data_root(root)
    if path.is_absolute() or root is None:
        return path
    under_root = root / path
    if under_root.is_file() and path.is_file() and under_root.resolve() != path.resolve():
        raise ValueError(f"{name!r} names two files: {under_root} (under the data root) and {path.resolve()} (in the "
                         "working directory); give an absolute path")
    return under_root if under_root.is_file() or not path.is_file() else path


def load_dataset(name: str, root: str | os.PathLike | None = None, seed: int = 0) -> Graph:
    """Load or generate a dataset by name (see the module docstring); never downloads."""
    if isinstance(name, os.PathLike):
        name = os.fspath(name)
    if not isinstance(name, str) or not name:
        raise TypeError(f"dataset name must be a non-empty string; allowed: {dataset_names()}")
    key = name.lower()
    if key in PRESETS:
        return make_graph(key, seed=seed)
    if key in PLANETOID_NAMES:
        return load_planetoid(key, _root_for(name, root))
    if key.startswith(PLANETOID_PREFIX):
        return load_planetoid(name[len(PLANETOID_PREFIX):], _root_for(name, root))
    if key.startswith("ogbn-"):
        return load_ogb_folder(resolve_ogb_folder(key, _root_for(name, root)), name=key)
    if key.endswith(".npz"):
        path = _npz_path(name, root)
        try:
            return load_npz(path, split_seed=seed)
        except (ValueError, TypeError) as err:  # a Graph invariant the file breaks: name the file
            if str(path) in str(err):
                raise
            raise type(err)(f"{path}: {err}") from err
    raise ValueError(f"unknown dataset {name!r}; allowed: {dataset_names()}")
