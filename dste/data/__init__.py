"""DSTE data room: graphs, generators, dynamic snapshot streams and offline dataset loaders.

`load_dataset(name, root=None, seed=0)` is the single entry point (`locate_dataset(name, root)` finds what it would
read, without reading it):

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
from .planetoid import PLANETOID_NAMES, find_planetoid_dir, load_planetoid
from .safe_pickle import UnsafePickleError
from .stream import Snapshot, SnapshotStream, StreamParams, make_stream

__all__ = [
    "Graph", "canonical_adjacency", "CSBMParams", "PRESETS", "make_graph", "preset_names",
    "StreamParams", "Snapshot", "SnapshotStream", "make_stream",
    "load_planetoid", "load_ogb_folder", "load_npz", "save_npz", "UnsafePickleError",
    "load_dataset", "locate_dataset", "dataset_names", "DATA_ROOT_ENV",
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
        raise ValueError(f"dataset {name!r} is read from disk: give its data root (root=..., --root DIR on the "
                         f"command line) or set {DATA_ROOT_ENV}")
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


def _dataset_kind(name) -> tuple[str, str]:
    """What kind of dataset ``name`` names, and the name its loader takes: ``("preset", key)``, ``("planetoid",
    name)``, ``("ogb", key)`` or ``("npz", path)``. The one place a dataset's name is read, so that checking a name
    (``locate_dataset``) and loading it cannot disagree."""
    if isinstance(name, os.PathLike):
        name = os.fspath(name)
    if not isinstance(name, str) or not name:
        raise TypeError(f"dataset name must be a non-empty string; allowed: {dataset_names()}")
    key = name.lower()
    if key in PRESETS:
        return "preset", key
    if key in PLANETOID_NAMES:
        return "planetoid", key
    if key.startswith(PLANETOID_PREFIX):
        return "planetoid", name[len(PLANETOID_PREFIX):]
    if key.startswith("ogbn-"):
        return "ogb", key
    if key.endswith(".npz"):
        return "npz", name
    raise ValueError(f"unknown dataset {name!r}; allowed: {dataset_names()}")


def locate_dataset(name: str, root: str | os.PathLike | None = None) -> Path | None:
    """Where ``load_dataset(name, root)`` reads from, found without reading it: None for a generated preset, else
    the Planetoid folder, the OGB folder or the .npz file. Refuses what ``load_dataset`` would refuse before
    reading a byte: an unknown name (ValueError), an on-disk dataset without a data root (ValueError), files that
    are not there (FileNotFoundError). For a job that must check its dataset before it starts work it cannot undo
    (the distributed ranks join before rank 0 loads)."""
    kind, arg = _dataset_kind(name)
    if kind == "preset":
        return None
    if kind == "npz":
        path = _npz_path(arg, root)
        if not path.is_file():
            raise FileNotFoundError(f"no .npz file at {path}" + (
                "" if path.is_absolute() else f" (a relative path is looked up under the data root, --root or "
                                              f"{DATA_ROOT_ENV}, and in the working directory)"))
        return path
    root = _root_for(os.fspath(name), root)
    if kind == "planetoid":
        return find_planetoid_dir(arg, root)
    return resolve_ogb_folder(arg, root)


def load_dataset(name: str, root: str | os.PathLike | None = None, seed: int = 0) -> Graph:
    """Load or generate a dataset by name (see the module docstring); never downloads."""
    kind, arg = _dataset_kind(name)
    name = os.fspath(name)
    if kind == "preset":
        return make_graph(arg, seed=seed)
    if kind == "planetoid":
        return load_planetoid(arg, _root_for(name, root))
    if kind == "ogb":
        return load_ogb_folder(resolve_ogb_folder(arg, _root_for(name, root)), name=arg)
    path = _npz_path(arg, root)
    try:
        return load_npz(path, split_seed=seed)
    except (ValueError, TypeError) as err:  # a Graph invariant the file breaks: name the file
        if str(path) in str(err):
            raise
        raise type(err)(f"{path}: {err}") from err
