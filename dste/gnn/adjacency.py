"""Adjacency inputs of the GNN layers and their DSTE propagation matrices.

Accepted forms of ``adj`` (PyG conventions: row i of the propagation matrix aggregates over the neighbours
j of node i; an ``edge_index`` column ``(j, i)`` is a message from source j to target i):

* ``DSTEMatrix`` / ``DSTETensor`` -- used as the propagation matrix *as is* (already normalised).
* ``edge_index`` ``torch.long [2, E]`` -- needs ``num_nodes`` (the layers pass ``x.shape[0]``).
* a SciPy sparse matrix ``[n, n]`` or a torch sparse (COO/CSR) tensor ``[n, n]``, binary.

Edges are unweighted: duplicates collapse to one edge, and a stored value other than 1 is refused (a weighted
graph must be encoded by the caller). GCN uses ``D^-1/2 (A + I) D^-1/2`` with existing self loops replaced by
one loop of weight 1 (PyG's ``add_remaining_self_loops``), encoded as BIN tiles with row/column scales; SAGE
mean uses ``A`` with ``row_scale = 1/deg`` (0 for isolated nodes, whose mean is 0).

No cache here: encoding is the caller's to keep. The layers keep the propagation matrix of the last
adjacency object they saw while its content is unchanged (``cached=True``, PyG's flag; an adjacency edited in
place is encoded again), and :class:`dste.gnn.pruning.PropagationPlan` keeps its own encoding.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from dste.bindings import DSTETensor, as_dste_tensor, is_dste_matrix
from dste.checks import check_sparse_indices
from dste.format import EncodePolicy, encode, gcn_normalized

__all__ = ["NORMALIZATIONS", "to_scipy_adjacency", "encode_propagation", "propagation_matrix"]

NORMALIZATIONS = ("gcn", "mean")


def _binary_csr(rows: np.ndarray, cols: np.ndarray, n: int) -> sp.csr_matrix:
    matrix = sp.csr_matrix((np.ones(rows.shape[0], np.float32), (rows, cols)), shape=(n, n))
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    matrix.sort_indices()
    return matrix


def _check_binary(values: np.ndarray, what: str) -> None:
    if values.size and not np.all((values == 1) | (values == 0)):
        raise ValueError(
            f"{what} has stored values other than 0/1; the layers take unweighted graphs. Edges listed twice that "
            "SciPy or torch's coalesce() summed into a 2: pass (adj != 0) to count each edge once. A weighted graph: "
            "encode its propagation matrix yourself (dste.format.encode()) and pass the DSTEMatrix"
        )


def to_scipy_adjacency(adj, num_nodes: int | None = None) -> sp.csr_matrix:
    """Binary float32 CSR ``[n, n]`` (row = target, column = source) of an edge_index / SciPy / torch sparse
    adjacency; raises ``TypeError``/``ValueError`` naming what is wrong."""
    if isinstance(adj, torch.Tensor) and adj.layout == torch.strided:
        if num_nodes is None:
            raise ValueError("an edge_index needs num_nodes (the layers pass x.shape[0])")
        if adj.dtype != torch.long or adj.dim() != 2 or adj.shape[0] != 2:
            looks_transposed = adj.dim() == 2 and adj.shape[1] == 2 and adj.shape[0] != 2
            if looks_transposed:
                hint = "an edge list [E, 2]? pass edge_index.t() (PyG's [2, E], sources in row 0)"
            elif adj.dim() == 2 and adj.shape[0] == 2 and not adj.is_floating_point() and not adj.is_complex():
                hint = "pass edge_index.long()"
            else:
                hint = "a dense adjacency matrix is not accepted: convert with .to_sparse()"
            raise ValueError(f"edge_index must be a torch.long tensor [2, E], got {adj.dtype} {tuple(adj.shape)} "
                             f"({hint})")
        if adj.device.type != "cpu":
            raise ValueError(f"edge_index must be on the cpu, got {adj.device}")
        index = adj.numpy()
        if index.size and (index.min() < 0 or index.max() >= num_nodes):
            raise ValueError(
                f"edge_index entries must lie in [0, {num_nodes}) for {num_nodes} nodes, "
                f"got range [{index.min()}, {index.max()}]"
            )
        source, target = index[0], index[1]
        return _binary_csr(target, source, int(num_nodes))
    if isinstance(adj, torch.Tensor):
        if adj.layout not in (torch.sparse_coo, torch.sparse_csr):
            raise TypeError(f"torch sparse adjacency must be COO or CSR, got layout {adj.layout}")
        if adj.device.type != "cpu":
            raise ValueError(f"torch sparse adjacency must be on the cpu, got {adj.device}")
        if adj.dim() != 2 or adj.dense_dim() != 0:
            raise ValueError(
                f"torch sparse adjacency must be a 2-D [n, n] matrix with scalar values, got shape {tuple(adj.shape)} "
                f"with {adj.dense_dim()} dense dimension(s)"
            )
        if adj.is_complex():
            raise ValueError(f"adjacency values must be real (0/1), got {adj.dtype}")
        if adj.requires_grad:
            raise ValueError(
                "the adjacency's values require a gradient, which the layers (unweighted graphs) never give them; "
                "pass adj.detach(), or encode a weighted propagation matrix yourself (dste.format.encode())"
            )
        # the stored values as given: coalescing first would sum an edge listed twice into a 2 and refuse it as
        # weighted, where a SciPy matrix with the same duplicates collapses them to one edge
        coo = adj.to_sparse_coo() if adj.layout == torch.sparse_csr else adj
        values = coo._values().detach()
        if values.dtype in (torch.float16, torch.bfloat16):  # NumPy has no bfloat16; both widen to float32 exactly
            values = values.float()
        indices, values = coo._indices().numpy(), values.numpy()
        # torch builds a sparse tensor without checking its indices against its shape (check_invariants is off by
        # default); SciPy then refused them in its own words
        if indices.size and (indices.min() < 0 or (indices.max(axis=1) >= coo.shape).any()):
            raise ValueError(f"torch sparse adjacency has indices outside its shape {tuple(coo.shape)} (or negative): "
                             f"found {int(indices.min())} .. {int(indices.max())}, allowed 0 .. {coo.shape[0] - 1} "
                             f"(rows) and 0 .. {coo.shape[1] - 1} (columns)")
        # checked before any cast: float32 would round 1.00000001 to 1
        matrix = sp.coo_matrix((values, (indices[0], indices[1])), shape=tuple(coo.shape))
    elif sp.issparse(adj):
        # SciPy does not check a matrix's index arrays against its shape; converting one with a column id of -1 or
        # past the shape failed in SciPy's words
        check_sparse_indices(adj, "adjacency")
        matrix = sp.coo_matrix(adj)
    else:
        raise TypeError(
            f"adjacency must be a DSTEMatrix/DSTETensor, an edge_index torch.long [2, E], a SciPy sparse "
            f"matrix or a torch sparse tensor; got {type(adj).__name__}"
        )
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"adjacency must be square [n, n], got shape {matrix.shape}")
    if num_nodes is not None and matrix.shape[0] != num_nodes:
        raise ValueError(f"adjacency is {matrix.shape[0]} x {matrix.shape[1]} but x has {num_nodes} nodes")
    if not np.isfinite(matrix.data).all():
        raise ValueError("adjacency contains NaN or Inf values")
    _check_binary(matrix.data, "adjacency")
    keep = matrix.data != 0
    return _binary_csr(matrix.row[keep].astype(np.int64), matrix.col[keep].astype(np.int64), matrix.shape[0])


def mean_row_scale(adjacency: sp.csr_matrix) -> np.ndarray:
    """``1 / deg`` per row of a binary adjacency (0 for isolated nodes, whose mean is 0), float32."""
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    return np.where(degree > 0, 1.0 / np.maximum(degree, 1), 0.0).astype(np.float32)


def encode_propagation(adjacency: sp.csr_matrix, norm: str):
    """The ``DSTEMatrix`` of a binary CSR adjacency under ``gcn`` (``D^-1/2 (A + I) D^-1/2`` as BIN tiles with
    row/column scales, existing loops replaced by one) or ``mean`` (``A`` with ``row_scale = 1/deg``)."""
    if norm == "gcn":
        return gcn_normalized(adjacency, add_self_loops=True)
    if norm == "mean":
        policy = EncodePolicy(kinds="bin", reorder="community", row_scale=mean_row_scale(adjacency), scaled_input=False)
        return encode(adjacency, policy=policy)
    raise ValueError(f"norm must be one of {NORMALIZATIONS}, got {norm!r}")


def propagation_matrix(adj, num_nodes: int | None, norm: str) -> DSTETensor:
    """The DSTE propagation matrix for ``adj`` under ``norm`` (``gcn`` or ``mean``).

    A ``DSTEMatrix``/``DSTETensor`` is returned as is (wrapped; a ``DSTEMatrix`` keeps its wrapper's operands,
    ``dste.bindings.as_dste_tensor``); anything else is encoded on every call.
    """
    if norm not in NORMALIZATIONS:
        raise ValueError(f"norm must be one of {NORMALIZATIONS}, got {norm!r}")
    if isinstance(adj, DSTETensor) or is_dste_matrix(adj):
        a = as_dste_tensor(adj)
        if num_nodes is not None and tuple(a.shape) != (num_nodes, num_nodes):
            raise ValueError(f"DSTE adjacency has shape {tuple(a.shape)} but x has {num_nodes} nodes")
        return a
    return DSTETensor(encode_propagation(to_scipy_adjacency(adj, num_nodes), norm))
