"""The in-memory node-classification graph shared by generators, streams and loaders.

A `Graph` is an undirected, unweighted graph with node features, integer labels and a
train / validation / test split. The adjacency is a SciPy CSR matrix that is symmetric,
binary (float32 ones), has no self loops and no duplicate entries; every loader and
generator in `dste.data` produces exactly this form and `Graph` checks it on construction.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from dste.checks import check_sparse_indices

__all__ = ["CanonicalizedAdjacencyWarning", "Graph", "canonical_adjacency", "is_integer"]


def is_integer(value) -> bool:
    """An int or NumPy integer, and not a bool: True is no count, node id or class number."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def canonical_adjacency(adj, n: int | None = None) -> sp.csr_matrix:
    """Return the symmetric, binary, loop-free float32 CSR form of `adj`.

    Any nonzero (i, j) or (j, i) becomes a single 1 at both (i, j) and (j, i);
    diagonal entries are dropped; indices are sorted.
    """
    if not sp.issparse(adj):
        raise TypeError(f"adjacency must be a scipy.sparse matrix, got {type(adj).__name__}")
    if adj.ndim != 2 or adj.shape[0] != adj.shape[1]:
        raise ValueError(f"adjacency must be square [n, n], got shape {adj.shape}")
    if n is not None and adj.shape[0] != n:
        raise ValueError(f"adjacency has {adj.shape[0]} rows, expected {n}")
    check_sparse_indices(adj, "adjacency")
    coo = sp.coo_matrix(adj)
    if coo.data.dtype.kind in "fc" and not np.isfinite(coo.data).all():  # NaN != 0 would make an edge
        raise ValueError("adjacency values contain NaN or Inf; an edge is a finite nonzero value")
    nonzero = coo.data != 0
    rows, cols = coo.row[nonzero].astype(np.int64), coo.col[nonzero].astype(np.int64)
    canonical = adjacency_from_pairs(rows, cols, adj.shape[0])
    _warn_what_changed(coo.data[nonzero], rows, cols, canonical)
    return canonical


class CanonicalizedAdjacencyWarning(UserWarning):
    """An adjacency lost direction, weights or self loops on its way into a ``Graph`` (undirected, 0/1, loop-free)."""


def _warn_what_changed(values, rows, cols, canonical) -> None:
    """Warn what ``canonical`` changed of the given edges (``values`` at ``rows``, ``cols``, all nonzero)."""
    off_diagonal = rows != cols
    loops = int(rows.size - np.count_nonzero(off_diagonal))
    weighted = int(np.count_nonzero(values != 1))
    # the canonical form stores each edge both ways: beyond the distinct given pairs, one entry per one-way edge
    given_pairs = np.unique(rows[off_diagonal] * canonical.shape[1] + cols[off_diagonal]).size
    one_way = int(canonical.nnz - given_pairs)
    changes = [text for count, text in (
        (one_way, f"{one_way:,} one-way edges made two-way"), (weighted, f"{weighted:,} values other than 1 read as 1"),
        (loops, f"{loops:,} self loops dropped")) if count]
    if changes:
        warnings.warn(CanonicalizedAdjacencyWarning(
            "the adjacency was made undirected, unweighted and loop-free, as a Graph is: " + "; ".join(changes)),
            stacklevel=3)


def adjacency_from_pairs(rows: np.ndarray, cols: np.ndarray, n: int) -> sp.csr_matrix:
    """Symmetric binary loop-free CSR adjacency from (possibly duplicated) node pairs."""
    off_diagonal = rows != cols
    rows, cols = rows[off_diagonal], cols[off_diagonal]
    both_rows = np.concatenate([rows, cols])
    both_cols = np.concatenate([cols, rows])
    ones = np.ones(both_rows.shape[0], dtype=np.float32)
    adj = sp.csr_matrix((ones, (both_rows, both_cols)), shape=(n, n))
    adj.sum_duplicates()
    adj.data[:] = 1.0
    adj.sort_indices()
    return adj


@dataclass
class Graph:
    """An undirected node-classification graph.

    Fields:
        adj:        scipy CSR float32 [n, n], symmetric, entries 1, no self loops, no duplicates.
        x:          float32 [n, f] node features, finite.
        y:          int64 [n] labels in [0, num_classes).
        train_mask, val_mask, test_mask: bool [n], pairwise disjoint.
        num_classes: number of label values.
        name:       dataset name for reports.
        communities: optional int64 [n] local community id of each node (generated graphs).
        meta:       free-form provenance (generator parameters, source files).
    """

    adj: sp.csr_matrix
    x: np.ndarray
    y: np.ndarray
    train_mask: np.ndarray
    val_mask: np.ndarray
    test_mask: np.ndarray
    num_classes: int
    name: str = "graph"
    communities: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    # -- validation -------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ValueError/TypeError naming the first broken invariant."""
        if not sp.issparse(self.adj) or self.adj.format != "csr":
            raise TypeError(
                f"adj must be a scipy.sparse CSR matrix, got {type(self.adj).__name__}"
                " (use canonical_adjacency() to convert)"
            )
        if self.adj.dtype != np.float32:
            raise TypeError(f"adj must be float32, got {self.adj.dtype}")
        if self.adj.ndim != 2 or self.adj.shape[0] != self.adj.shape[1]:
            raise ValueError(f"adj must be square [n, n], got shape {self.adj.shape}")
        check_sparse_indices(self.adj, "adj")
        n = self.adj.shape[0]
        if n == 0:
            raise ValueError("graph must have at least one node")

        if not isinstance(self.x, np.ndarray) or self.x.dtype != np.float32 or self.x.ndim != 2:
            raise TypeError(
                f"x must be a float32 ndarray [n, f], got "
                f"{getattr(self.x, 'dtype', type(self.x).__name__)} with ndim {getattr(self.x, 'ndim', '?')}"
            )
        if self.x.shape[0] != n:
            raise ValueError(f"x has {self.x.shape[0]} rows but adj has {n} nodes")
        finite = np.isfinite(self.x)
        if not finite.all():
            node, feature = (int(i) for i in np.argwhere(~finite)[0])
            raise ValueError(f"node features (x) hold {int(finite.size - finite.sum())} NaN or Inf values, the first "
                             f"{self.x[node, feature]} at node {node}, feature {feature}; features must be finite")

        if not isinstance(self.y, np.ndarray) or self.y.dtype != np.int64 or self.y.shape != (n,):
            raise TypeError(
                f"y must be an int64 ndarray of shape ({n},), got "
                f"{getattr(self.y, 'dtype', type(self.y).__name__)} {getattr(self.y, 'shape', '')}"
            )
        if not is_integer(self.num_classes) or self.num_classes < 1:  # True passed as one class
            raise ValueError(f"num_classes must be a positive int, got {self.num_classes!r}")
        self.num_classes = int(self.num_classes)
        if self.y.min() < 0 or self.y.max() >= self.num_classes:
            raise ValueError(
                f"labels must lie in [0, num_classes) = [0, {self.num_classes}), got range "
                f"[{self.y.min()}, {self.y.max()}]"
            )

        for mask_name in ("train_mask", "val_mask", "test_mask"):
            mask = getattr(self, mask_name)
            if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.shape != (n,):
                raise TypeError(
                    f"{mask_name} must be a bool ndarray of shape ({n},), got "
                    f"{getattr(mask, 'dtype', type(mask).__name__)} {getattr(mask, 'shape', '')}"
                )
        overlap = (
            (self.train_mask & self.val_mask)
            | (self.train_mask & self.test_mask)
            | (self.val_mask & self.test_mask)
        )
        if overlap.any():
            raise ValueError(
                f"train/val/test masks must be disjoint; {int(overlap.sum())} nodes are in two splits"
            )

        if self.communities is not None:
            if (
                not isinstance(self.communities, np.ndarray)
                or self.communities.dtype != np.int64
                or self.communities.shape != (n,)
            ):
                raise TypeError(f"communities must be an int64 ndarray of shape ({n},) or None")

        self._validate_structure(n)

    def _validate_structure(self, n: int) -> None:
        adj = self.adj
        if adj.indptr.shape != (n + 1,) or adj.indptr[-1] != adj.indices.shape[0]:
            raise ValueError("adj CSR indptr is inconsistent with its indices")
        if adj.nnz and (adj.indices.min() < 0 or adj.indices.max() >= n):
            raise ValueError(f"adj column indices must lie in [0, {n})")
        if not adj.has_canonical_format:
            # has_canonical_format checks sorted and duplicate-free indices in one pass.
            probe = adj.copy()
            probe.sum_duplicates()
            if probe.nnz != adj.nnz:
                raise ValueError("adj has duplicate entries; build it with canonical_adjacency()")
            adj.sort_indices()
        if adj.nnz and not np.all(adj.data == 1.0):
            raise ValueError("adj must be binary: every stored value must be 1.0")
        if adj.diagonal().any():
            raise ValueError("adj must have no self loops")
        if (adj != adj.T).nnz != 0:
            raise ValueError("adj must be symmetric (undirected graph)")

    # -- derived views ------------------------------------------------------------------------
    @property
    def num_nodes(self) -> int:
        return int(self.adj.shape[0])

    @property
    def num_features(self) -> int:
        return int(self.x.shape[1])

    @property
    def num_edges(self) -> int:
        """Directed edge count: each undirected edge counts twice."""
        return int(self.adj.nnz)

    @property
    def num_undirected_edges(self) -> int:
        return int(self.adj.nnz // 2)

    def edge_index(self) -> np.ndarray:
        """int64 [2, E] (source, target) pairs in CSR order, both directions present."""
        rows = np.repeat(np.arange(self.num_nodes, dtype=np.int64), np.diff(self.adj.indptr))
        return np.stack([rows, self.adj.indices.astype(np.int64)])

    def degrees(self) -> np.ndarray:
        return np.diff(self.adj.indptr).astype(np.int64)

    def edge_homophily(self) -> float:
        """Fraction of edges whose endpoints share a label (NaN for an edgeless graph)."""
        src, dst = self.edge_index()
        if src.size == 0:
            return float("nan")
        return float(np.mean(self.y[src] == self.y[dst]))

    def community_locality(self) -> float:
        """Fraction of edges whose endpoints share a community (NaN without communities or edges)."""
        if self.communities is None:
            return float("nan")
        src, dst = self.edge_index()
        if src.size == 0:
            return float("nan")
        return float(np.mean(self.communities[src] == self.communities[dst]))

    def summary(self) -> dict:
        deg = self.degrees()
        return {
            "name": self.name,
            "nodes": self.num_nodes,
            "undirected_edges": self.num_undirected_edges,
            "directed_edges": self.num_edges,
            "features": self.num_features,
            "classes": self.num_classes,
            "train": int(self.train_mask.sum()),
            "val": int(self.val_mask.sum()),
            "test": int(self.test_mask.sum()),
            "mean_degree": float(deg.mean()),
            "max_degree": int(deg.max()) if deg.size else 0,
            "isolated_nodes": int((deg == 0).sum()),
            "edge_homophily": self.edge_homophily(),
            "community_locality": None if self.communities is None else self.community_locality(),  # JSON null
        }

    def __repr__(self) -> str:
        s = self.summary()
        return (
            f"Graph(name={s['name']!r}, nodes={s['nodes']}, undirected_edges={s['undirected_edges']}, "
            f"features={s['features']}, classes={s['classes']}, "
            f"split={s['train']}/{s['val']}/{s['test']})"
        )
