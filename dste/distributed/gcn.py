"""Row-partitioned GCN inference: H1 = relu(Â X W1 + b1), H2 = Â H1 W2 + b2, one row block per rank.

Each propagation Â Z on a rank: scale the owned rows of Z by their D^-1/2, exchange the halo rows
(scaled by their owners the same way), and multiply the rank's block (row scale = owned D^-1/2)
by [owned; halo] with ``dste.spmm`` on any backend. A layer multiplies by W before propagating
when that narrows the rows (``W`` has fewer columns than rows), so the halo exchange moves the
narrower rows; :func:`gcn_reference` uses the same order on one process.

``apply_snapshot`` moves to a new graph of the same node set: only ranks whose owned rows changed
re-encode their block, and only their halo requests travel (``refresh_halo_plan``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

import dste
from dste.checks import integer
from dste.distributed.block import LocalBlock, encode_block
from dste.distributed.halo import HaloPlan, build_halo_plan, refresh_halo_plan
from dste.distributed.runtime import Comm
from dste.distributed.shard import GraphShard


@dataclass
class GCNWeights:
    """Two GCN layers' weights and biases (torch tensors of one dtype, float32 or float64)."""

    w1: torch.Tensor
    b1: torch.Tensor
    w2: torch.Tensor
    b2: torch.Tensor

    def __post_init__(self) -> None:
        for name in ("w1", "b1", "w2", "b2"):
            if not isinstance(getattr(self, name), torch.Tensor) or not getattr(self, name).is_floating_point():
                raise TypeError(f"GCNWeights.{name} must be a floating-point torch tensor")
        w1, b1, w2, b2 = self.w1, self.b1, self.w2, self.b2
        dtypes = {t.dtype for t in (w1, b1, w2, b2)}
        if len(dtypes) != 1 or w1.dtype not in (torch.float32, torch.float64):
            # dste.spmm multiplies float32 or float64 rows; mixed dtypes failed inside torch's matmul
            raise TypeError(f"GCNWeights: w1, b1, w2, b2 must share one dtype, float32 or float64; got "
                            f"{[str(t.dtype) for t in (w1, b1, w2, b2)]}")
        if w1.dim() != 2 or w2.dim() != 2 or min(*w1.shape, *w2.shape) < 1 or w2.shape[0] != w1.shape[1]:
            raise ValueError(f"GCNWeights: need w1 [in, hidden] and w2 [hidden, classes], all sizes >= 1; got w1 "
                             f"{tuple(w1.shape)}, w2 {tuple(w2.shape)}")
        # a bias of another shape would broadcast silently (b1 of [1] added one value to every hidden unit)
        if tuple(b1.shape) != (w1.shape[1],) or tuple(b2.shape) != (w2.shape[1],):
            raise ValueError(f"GCNWeights: need b1 [{w1.shape[1]}] and b2 [{w2.shape[1]}]; got b1 {tuple(b1.shape)}, "
                             f"b2 {tuple(b2.shape)}")

    @classmethod
    def random(cls, in_features: int, hidden: int, classes: int, seed: int = 0) -> "GCNWeights":
        """Glorot-uniform weights, zero-mean small biases, from ``seed`` (same on every rank)."""
        # sizes below 1 reach __post_init__'s shape check ("all sizes >= 1"); a float size failed in torch.rand
        in_features, hidden, classes = (integer(value, f"GCNWeights.random: {name}")
                                        for name, value in (("in_features", in_features), ("hidden", hidden),
                                                            ("classes", classes)))
        gen = torch.Generator().manual_seed(integer(seed, "GCNWeights.random: seed"))

        def glorot(rows, cols):
            bound = (6.0 / (rows + cols)) ** 0.5
            return (torch.rand(rows, cols, generator=gen) * 2 - 1) * bound

        return cls(glorot(in_features, hidden), 0.01 * torch.randn(hidden, generator=gen),
                   glorot(hidden, classes), 0.01 * torch.randn(classes, generator=gen))


_NUMPY_DTYPE = {torch.float32: np.float32, torch.float64: np.float64}


def _transform_first(weight: torch.Tensor) -> bool:
    return weight.shape[1] < weight.shape[0]


def _layer(propagate, z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    if _transform_first(weight):
        return propagate(z @ weight) + bias
    return propagate(z) @ weight + bias


def gcn_forward(propagate, x: torch.Tensor, weights: GCNWeights) -> torch.Tensor:
    """The two layers around a ``propagate(Z) = Â Z`` function (shared by the distributed and single-process paths)."""
    h1 = torch.relu(_layer(propagate, x, weights.w1, weights.b1))
    return _layer(propagate, h1, weights.w2, weights.b2)


def gcn_reference(adj, x, weights: GCNWeights, backend: str = "cpu", **encode_fields) -> torch.Tensor:
    """The same inference on one process, with ``dste.gcn_normalized`` on the whole graph."""
    x = np.asarray(x, dtype=_NUMPY_DTYPE[weights.w1.dtype])
    in_features, adj_shape = int(weights.w1.shape[0]), tuple(np.shape(adj))
    nodes = adj_shape[1] if len(adj_shape) == 2 else None  # another shape is refused by gcn_normalized
    if x.ndim != 2 or x.shape[1] != in_features or (nodes is not None and x.shape[0] != nodes):
        # torch's "mat1 and mat2 shapes cannot be multiplied" before, after the encode
        raise ValueError(f"gcn_reference: x must be [nodes, features] = [{nodes}, {in_features}] (one row per node of "
                         f"the {adj_shape} adjacency, one column per row of w1), got {x.shape}")
    A = dste.gcn_normalized(adj, **encode_fields)
    x = torch.as_tensor(x)
    return gcn_forward(lambda z: dste.spmm(A, z.contiguous(), backend=backend), x, weights)


def _refuse_autograd(needs_grad: bool) -> None:
    # all_to_all_single carries no gradient: a backward pass through the model would drop every halo row's
    # share of the gradient (the sum over ranks came out about half the true one on a 2-rank graph)
    if needs_grad and torch.is_grad_enabled():
        raise RuntimeError("DistributedGCN runs inference only: its halo exchange carries no gradient, so a "
                           "backward pass would silently miss the halo rows' contributions. Call it under "
                           "torch.no_grad() (or with weights and features that do not require grad)")


@dataclass
class LayerTraffic:
    """What one propagation moved on this rank (rows and bytes are counted, never modelled)."""

    width: int
    rows_received: int
    rows_sent: int
    bytes_received: int
    exchange_seconds: float
    spmm_seconds: float


@dataclass
class SnapshotUpdate:
    """What ``apply_snapshot`` did on this rank."""

    reencoded: bool
    halo_changed: bool
    encode_seconds: float
    ranks_reencoded: list = field(default_factory=list)


class DistributedGCN:
    """This rank's part of a 2-layer GCN over a row-partitioned graph.

    ``comm``: from ``init_distributed`` / ``spawn``; ``shard``: this rank's rows; ``weights``: the
    same on every rank; ``backend``: the ``dste.spmm`` backend; ``encode_fields``: to ``dste.encode``.
    Construction is collective (builds the halo plan).
    """

    def __init__(self, comm: Comm, shard: GraphShard, weights: GCNWeights, *, backend: str = "cpu", **encode_fields):
        if shard.rank != comm.rank or shard.world_size != comm.world_size:
            raise ValueError(f"DistributedGCN: shard is for rank {shard.rank} of {shard.world_size}, "
                             f"but this process is rank {comm.rank} of {comm.world_size}")
        from dste.bindings.backends import resolve_backend

        resolve_backend(backend)  # an unknown name was refused by dste.spmm only after the encode and the halo plan
        self.comm, self.shard, self.weights, self.backend = comm, shard, weights, backend
        self.encode_fields = encode_fields
        self.block: LocalBlock = encode_block(shard, **encode_fields)
        self.plan: HaloPlan = build_halo_plan(comm, shard, self.block.halo_ids, self.block.halo_counts)
        self.traffic: list[LayerTraffic] = []

    def propagate(self, z_owned: torch.Tensor) -> torch.Tensor:
        """Â Z for this rank's rows, from this rank's rows of Z (collective). Inference only (no gradient)."""
        _refuse_autograd(z_owned.requires_grad)
        start = time.perf_counter()
        scaled = z_owned * torch.from_numpy(self.block.deg_inv_sqrt)[:, None].to(z_owned.dtype)
        halo = self.plan.exchange(self.comm, scaled, f"halo rows, width {z_owned.shape[1]}")
        mid = time.perf_counter()
        y = dste.spmm(self.block.matrix, torch.cat([scaled, halo]), backend=self.backend)
        self.traffic.append(LayerTraffic(int(z_owned.shape[1]), self.plan.rows_received, self.plan.rows_sent,
                                         int(halo.numel() * halo.element_size()), mid - start, time.perf_counter() - mid))
        return y

    def forward(self, x_owned) -> torch.Tensor:
        """Logits ``[n_own, classes]`` of the owned nodes (collective), in the weights' dtype.

        ``x_owned``: ``[n_own, in_features]``, read in the weights' dtype. Inference only: with autograd
        enabled, weights or features that require grad are refused (the exchange carries no gradient).
        """
        dtype = self.weights.w1.dtype
        if isinstance(x_owned, torch.Tensor):
            if x_owned.is_complex() or x_owned.dtype == torch.bool:
                raise TypeError(f"rank {self.comm.rank}: x_owned must hold real numbers, got {x_owned.dtype}")
            x = x_owned.to(dtype)  # as a NumPy x is read: an int or float16 x failed inside torch's matmul
        else:
            x = torch.as_tensor(np.asarray(x_owned, dtype=_NUMPY_DTYPE[dtype]))
        _refuse_autograd(x.requires_grad or any(t.requires_grad for t in (self.weights.w1, self.weights.b1,
                                                                            self.weights.w2, self.weights.b2)))
        if x.dim() != 2 or x.shape[0] != self.block.n_own:
            raise ValueError(f"rank {self.comm.rank}: x_owned must have {self.block.n_own} rows (owned nodes), got {tuple(x.shape)}")
        if x.shape[1] != self.weights.w1.shape[0]:
            raise ValueError(f"rank {self.comm.rank}: x_owned must have {self.weights.w1.shape[0]} features "
                             f"(rows of w1), got {x.shape[1]}")
        self.traffic = []
        return gcn_forward(self.propagate, x, self.weights)

    def apply_snapshot(self, adj, changed_rows=None) -> SnapshotUpdate:
        """Move to a new adjacency of the same node set (collective).

        ``adj``: the new adjacency, or only its rows owned here (any rows of other ranks are ignored).
        ``changed_rows``: global ids whose rows changed (a superset is fine); None compares this
        rank's rows with the stored ones. Ranks whose rows did not change keep their block. A list that leaves out
        a row whose degree changed is refused on every rank (ValueError); one that leaves out a row whose edges
        moved at the same degree cannot be told from a correct one.
        """
        new_shard = self.shard.with_rows(adj)
        if changed_rows is None:
            mine_changed = (new_shard.rows != self.shard.rows).nnz > 0
        else:
            changed = np.asarray(changed_rows).reshape(-1)
            if changed.size and (changed.dtype.kind not in "iu" or changed.min() < 0
                                 or changed.max() >= self.shard.n_nodes):
                # out-of-range ids were dropped and float ids truncated: a misnumbered change left blocks stale
                raise ValueError(f"rank {self.comm.rank}: changed_rows must be integer node ids in "
                                 f"[0, {self.shard.n_nodes}), got {changed.dtype} ids from {changed.min()} "
                                 f"to {changed.max()}")
            changed = changed.astype(np.int64)
            mine_changed = bool(np.any(self.shard.owner[changed] == self.comm.rank))
        # A list that names none of this rank's rows while one of them gained or lost an edge would keep this
        # rank's old block: refused on every rank at once (the counts are gathered before any other collective).
        missed = 0
        if changed_rows is not None and not mine_changed:
            missed = int(np.count_nonzero(np.diff(new_shard.rows.indptr) != np.diff(self.shard.rows.indptr)))
        flags = self.comm.all_gather_ints([int(mine_changed), missed], "re-encode flags").numpy()
        if flags[:, 1].any():
            ranks = np.flatnonzero(flags[:, 1]).tolist()
            raise ValueError(
                f"rank {self.comm.rank}: changed_rows leaves out {int(flags[:, 1].sum())} row(s) whose degree "
                f"changed, owned by rank(s) {ranks}: their blocks would be kept stale. List every changed row (a "
                "superset is fine) or pass changed_rows=None to compare each rank's rows with its stored ones"
            )
        seconds, halo_changed, new_block = 0.0, False, None
        if mine_changed:
            new_block = encode_block(new_shard, **self.encode_fields)
            seconds = new_block.encode_seconds
            halo_changed = not np.array_equal(new_block.halo_ids, self.block.halo_ids)
        self.plan = refresh_halo_plan(self.comm, new_shard, self.plan, halo_changed,
                                      None if new_block is None else new_block.halo_ids,
                                      None if new_block is None else new_block.halo_counts)
        if new_block is not None:
            self.block, self.shard = new_block, new_shard
        return SnapshotUpdate(mine_changed, halo_changed, seconds, np.flatnonzero(flags[:, 0]).tolist())
