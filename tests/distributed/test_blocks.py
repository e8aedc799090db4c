"""In-process checks of the partition, the shards, the local halo layout and the exchange model."""

import threading

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import dste
from dste.distributed import encode_block, partition_nodes, shard_graph
from dste.distributed.gcn import DistributedGCN, GCNWeights
from dste.distributed.halo import build_halo_plan, refresh_halo_plan
from dste.distributed.partition import check_adjacency, symmetric_structure
from dste.distributed.sizing import HOP_LATENCY_US, exchange_us
from tests.distributed.graphs import shuffled_graph


@pytest.fixture(scope="module")
def graph():
    return shuffled_graph(seed=0)


def _cut_edges(adj, owner):
    coo = sp.triu(symmetric_structure(adj)).tocoo()
    return int(np.sum(owner[coo.row] != owner[coo.col]))


@pytest.mark.parametrize("method", ["metis", "blocks", "contiguous"])
def test_partition_is_balanced_and_covers_every_rank(graph, method):
    adj, _ = graph
    owner = partition_nodes(adj, 4, method=method)
    counts = np.bincount(owner, minlength=4)
    assert owner.shape == (adj.shape[0],) and counts.size == 4
    assert counts.min() > 0 and counts.max() <= 1.05 * adj.shape[0] / 4


def test_metis_cuts_fewer_edges_than_the_fallbacks_on_shuffled_ids(graph):
    adj, _ = graph
    cuts = {m: _cut_edges(adj, partition_nodes(adj, 4, method=m)) for m in ("metis", "blocks", "contiguous")}
    # shuffled ids: cutting them as given crosses ~3/4 of the edges; METIS keeps most communities whole
    assert cuts["metis"] < cuts["blocks"] < cuts["contiguous"]
    assert cuts["metis"] < 0.35 * cuts["contiguous"]


def test_partition_refuses_more_ranks_than_nodes():
    adj = sp.csr_matrix(np.ones((3, 3), dtype=np.float32) - np.eye(3, dtype=np.float32))
    with pytest.raises(ValueError, match=r"world_size must be in \[1, 3\]"):
        partition_nodes(adj, 4)
    with pytest.raises(ValueError, match="method must be one of"):
        partition_nodes(adj, 2, method="random")


def test_each_block_times_its_local_x_equals_the_rows_of_a_hat_x(graph):
    adj, x = graph
    n = adj.shape[0]
    structure = (adj + sp.identity(n, format="csr")).tocsr()
    structure.data[:] = 1.0
    dinv = np.asarray(structure.sum(axis=1)).ravel() ** -0.5
    expected = (sp.diags(dinv) @ structure @ sp.diags(dinv)) @ x.astype(np.float64)
    owner = partition_nodes(adj, 3)
    for shard in shard_graph(adj, owner):
        block = encode_block(shard)
        neighbours = np.unique(adj[shard.owned].indices)
        remote = neighbours[owner[neighbours] != shard.rank]
        assert np.array_equal(np.sort(block.halo_ids), remote)  # exactly the remote neighbours, once each
        assert np.all(np.diff(owner[block.halo_ids]) >= 0)  # grouped by owning rank, in rank order
        assert np.array_equal(block.halo_counts, np.bincount(owner[remote], minlength=3) * (np.arange(3) != shard.rank))
        local_x = np.concatenate([x[shard.owned], x[block.halo_ids]])
        local_dinv = np.concatenate([dinv[shard.owned], dinv[block.halo_ids]]).astype(np.float32)
        got = dste.spmm(block.matrix, torch.from_numpy(local_x * local_dinv[:, None])).numpy()
        # fp32 inputs and sums of ~5 terms of O(1): 1e-5 absolute is ~100 ulps; a wrong column moves ~1e-1
        np.testing.assert_allclose(got, expected[shard.owned], rtol=0, atol=1e-5)
        assert block.matrix.stats()["bitmap_tiles"]["INT8"] == 0  # structure only: BIN tiles, exact


def test_shard_refuses_inconsistent_ownership(graph):
    adj, _ = graph
    shard = shard_graph(adj, partition_nodes(adj, 2))[0]
    with pytest.raises(ValueError, match="not owned by this rank"):
        shard.local_index(np.flatnonzero(shard.owner == 1)[:1])
    with pytest.raises(ValueError, match="must keep the node set"):
        shard.with_rows(sp.csr_matrix((adj.shape[0] + 1, adj.shape[0] + 1), dtype=np.float32))


def test_exchange_model_grows_with_bytes_and_peers():
    assert exchange_us(1e6, 1e6, 1) == 0.0
    small, large = exchange_us(1e3, 1e3, 4), exchange_us(1e8, 1e8, 4)
    assert small == pytest.approx(3 * HOP_LATENCY_US, rel=0.01)  # latency-bound: one hop per peer
    # bandwidth-bound: 100 MB at a quarter of the chip's 1,024 GB/s NeuronLink (4 ranks per chip)
    assert large == pytest.approx(3 * HOP_LATENCY_US + 1e8 / 256e9 * 1e6, rel=1e-6)
    # past one instance (64 ranks) part of the traffic moves at the EFA rate, which is slower
    assert exchange_us(1e8, 1e8, 128) > exchange_us(1e8, 1e8, 64)


def test_gcn_weights_refuse_shapes_that_would_broadcast_or_not_chain():
    from dste.distributed import GCNWeights

    good = GCNWeights.random(16, 8, 4)
    with pytest.raises(ValueError, match=r"need b1 \[8\] and b2 \[4\]; got b1 \(1,\), b2 \(300, 1\)"):
        GCNWeights(good.w1, torch.zeros(1), good.w2, torch.zeros(300, 1))  # broadcast silently before
    with pytest.raises(ValueError, match="all sizes >= 1"):
        GCNWeights.random(16, 0, 4)
    with pytest.raises(ValueError, match=r"w1 \[in, hidden\] and w2 \[hidden, classes\]"):
        GCNWeights(good.w1, good.b1, torch.zeros(5, 4), good.b2)


def test_partition_and_spawn_refuse_arguments_they_would_misread():
    from dste.distributed import spawn

    adj, _ = shuffled_graph(seed=0)
    with pytest.raises(TypeError, match="world_size must be an int"):
        partition_nodes(adj, 2.7)  # ran as 2 ranks
    with pytest.raises(ValueError, match="world_size must be an int >= 1"):
        spawn(np.sum, 2.0)
    with pytest.raises(ValueError, match="module-level function"):
        spawn(lambda comm: 0, 1)  # a pickling error from the rank before
    with pytest.raises(ValueError, match="timeout_s must be a number > 0"):
        spawn(np.sum, 1, timeout_s=0)  # c10d's stack trace before


def test_shard_refuses_owners_that_would_drop_or_truncate_nodes():
    # a negative owner left its node in no shard (no logits, no error), a float owner was truncated to a rank
    adj = sp.csr_matrix(np.array([[0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]], np.float32))
    for owner in ([0, 0, 1, -1], [0, 0, 2, 2], [0.0, 0.7, 1.2, 1.9]):
        with pytest.raises(ValueError, match="owner must"):
            shard_graph(adj, np.array(owner))


def test_shard_refuses_a_non_finite_adjacency_as_the_single_process_path_does():
    adj = sp.csr_matrix(np.array([[0, 1], [1, 0]], np.float32))
    adj.data[0] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        shard_graph(adj, np.array([0, 1]))


def test_scatter_graph_refuses_features_that_do_not_match_the_nodes():
    from dste.distributed.jobs import scatter_graph

    class OneRank:  # rank 0 refuses before any message is sent
        rank, world_size = 0, 1

    adj = sp.identity(4, dtype=np.float32, format="csr")
    for x in (np.ones((7, 2)), np.ones((3, 2)), np.ones(4)):
        with pytest.raises(ValueError, match="one row per node"):
            scatter_graph(OneRank(), adj, x)


@pytest.mark.parametrize("world_size", [1, 2])
def test_partition_checks_the_adjacency_for_any_number_of_ranks(world_size):
    # one rank returned before the checks, so a non-square adjacency was accepted there and refused with two
    with pytest.raises(ValueError, match="square"):
        partition_nodes(sp.csr_matrix((3, 4), dtype=np.float32), world_size)
    with pytest.raises(TypeError, match="SciPy sparse"):
        partition_nodes(np.ones((3, 3), np.float32), world_size)


def test_gcn_weights_refuse_dtypes_the_spmm_cannot_take():
    from dste.distributed import GCNWeights

    good = GCNWeights.random(6, 4, 2)
    with pytest.raises(TypeError, match="share one dtype, float32 or float64"):
        GCNWeights(good.w1.double(), good.b1, good.w2, good.b2)  # failed inside torch's matmul
    with pytest.raises(TypeError, match="share one dtype, float32 or float64"):
        GCNWeights(*(t.half() for t in (good.w1, good.b1, good.w2, good.b2)))  # failed inside dste.spmm
    assert GCNWeights(*(t.double() for t in (good.w1, good.b1, good.w2, good.b2))).w1.dtype == torch.float64


@pytest.mark.parametrize("kwargs, match", [
    (dict(rank=0, world_size=0), "world_size must be an int >= 1"),  # "rank must be in [0, 0)" before
    (dict(rank=2, world_size=2), r"rank must be an int in \[0, 2\)"),
    (dict(rank=0, world_size=1, timeout_s=0), "timeout_s must be a finite number of seconds > 0"),
    (dict(rank=0, world_size=1, timeout_s=-5.0), "timeout_s must be"),  # the store's "timed out after -5000ms"
    (dict(rank=0, world_size=1, heartbeat_s=0), "heartbeat_s must be"),
])
def test_init_distributed_refuses_a_job_it_cannot_join(kwargs, match):
    from dste.distributed import init_distributed

    with pytest.raises(ValueError, match=match):  # refused before any connection
        init_distributed(master_addr="127.0.0.1", master_port=1, **kwargs)


@pytest.mark.parametrize("world_size", [1, 2])
def test_an_adjacency_with_ids_outside_its_shape_is_refused_by_name(world_size):
    """A CSR built with an index past its shape, or a negative one, failed with SciPy's or NumPy's words, and on
    one rank as "node ids [-1] are not owned by this rank"."""
    n = 30
    ring = sp.csr_matrix((np.ones(n, np.float32), (np.arange(n), (np.arange(n) + 1) % n)), shape=(n, n))
    for bad_id in (n + 7, -1):
        indices = ring.indices.copy()
        indices[3] = bad_id
        broken = sp.csr_matrix((ring.data, indices, ring.indptr), shape=(n, n))
        with pytest.raises(ValueError, match=rf"partition_nodes: adj has indices outside its shape \({n}, {n}\)"):
            partition_nodes(broken, world_size)
    coo = sp.coo_matrix((np.ones(2, np.float32), (np.array([0, 1]), np.array([1, 0]))), shape=(n, n))
    coo.col[1] = -4
    with pytest.raises(ValueError, match="outside"):
        check_adjacency(coo, "adj")
    with pytest.raises(ValueError, match=r"snapshot 2 must be square, got shape \(35, 30\)"):
        check_adjacency(sp.vstack([ring, ring[:5]]).tocsr(), "snapshot 2", nodes=n)
    with pytest.raises(ValueError, match=r"snapshot 0 must keep the node set: expected \[30, 30\]"):
        check_adjacency(sp.csr_matrix((n + 1, n + 1), dtype=np.float32), "snapshot 0", nodes=n)
    check_adjacency(ring, "adj", nodes=n)  # a valid one passes


class _ThreadRoom:
    """In-process collectives for ranks run as threads (all_to_all_single and all_gather_ints of ``Comm``)."""

    def __init__(self, world_size):
        self.world_size, self.box, self.barrier = world_size, {}, threading.Barrier(world_size)

    def comm(self, rank):
        room = self

        class _Comm:
            world_size = room.world_size

            def all_to_all_single(self, output, send, output_splits, input_splits, what):
                starts = np.concatenate([[0], np.cumsum(input_splits)]).astype(int)
                room.box[rank] = [send[starts[d]:starts[d + 1]].clone() for d in range(room.world_size)]
                room.barrier.wait()
                pieces = [room.box[src][rank] for src in range(room.world_size)]
                room.barrier.wait()
                for src, (piece, want) in enumerate(zip(pieces, output_splits)):
                    if piece.shape[0] != int(want):
                        raise RuntimeError(f"{what}: rank {src} sent {piece.shape[0]} rows to rank {rank}, "
                                           f"expected {want}")
                output.copy_(torch.cat(pieces).reshape(output.shape))
                return output

            def all_gather_ints(self, values, what):
                room.box[("gather", rank)] = torch.as_tensor(values, dtype=torch.int64).reshape(-1)
                room.barrier.wait()
                out = torch.stack([room.box[("gather", r)] for r in range(room.world_size)])
                room.barrier.wait()
                return out

        _Comm.rank = rank
        return _Comm()

    def run(self, work):
        """``work(rank, comm)`` on every rank in its own thread; the results by rank (the first error re-raised)."""
        results, errors = {}, []

        def worker(rank):
            try:
                results[rank] = work(rank, self.comm(rank))
            except Exception as error:  # noqa: BLE001 - re-raised below, after the other ranks stop
                errors.append(error)
                self.barrier.abort()

        threads = [threading.Thread(target=worker, args=(r,)) for r in range(self.world_size)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        if errors:
            raise errors[0]
        return results


def test_refreshing_the_halo_when_only_one_rank_changed_sends_each_rank_the_rows_it_asks_for():
    # refresh_halo_plan: "The plan after some ranks' halos changed; only those ranks' requests travel" -- a rank
    # that changed gets its new halo's rows, the others keep receiving their old halo. Reference: X[halo ids].
    world, n, f = 3, 9, 2
    owner = np.repeat(np.arange(world), n // world).astype(np.int32)
    shards = shard_graph(sp.csr_matrix(np.ones((n, n))), owner)
    x = np.arange(n * f, dtype=np.float32).reshape(n, f)

    def halo(ids):
        ids = np.array(sorted(ids, key=lambda g: (owner[g], g)), dtype=np.int64)
        return ids, np.bincount(owner[ids], minlength=world).astype(np.int64)

    old = {0: [3, 6], 1: [0, 7], 2: [1, 4, 5]}
    new = {0: [4, 5, 8]}  # only rank 0's halo changes (and grows)

    def work(rank, comm):
        shard = shards[rank]
        ids, counts = halo(old[rank])
        plan = build_halo_plan(comm, shard, ids, counts)
        changed = rank in new
        if changed:
            ids, counts = halo(new[rank])
        plan = refresh_halo_plan(comm, shard, plan, changed, ids if changed else None, counts if changed else None)
        return ids, plan.exchange(comm, torch.from_numpy(x[shard.owned])).numpy()

    for rank, (ids, rows) in _ThreadRoom(world).run(work).items():
        np.testing.assert_array_equal(rows, x[ids], err_msg=f"rank {rank}")


def test_a_halo_that_changes_ids_at_the_same_size_is_refreshed_by_apply_snapshot():
    # apply_snapshot must re-plan the exchange whenever a rank's halo ids change, also when their number does not.
    # Reference: the dense GCN D^-1/2 (A+I) D^-1/2 on the new snapshot in NumPy.
    world, n = 2, 8
    owner = np.repeat(np.arange(world), n // world).astype(np.int32)

    def graph(edges):
        r, c = zip(*edges)
        a = sp.coo_matrix((np.ones(len(r)), (r, c)), shape=(n, n)).tocsr()
        return sp.csr_matrix(((a + a.T) > 0).astype(np.float64))

    old = graph([(0, 4), (1, 2), (5, 6), (3, 7), (2, 3)])
    new = graph([(0, 5), (1, 2), (5, 6), (3, 7), (2, 3)])  # rank 0's halo {4, 7} becomes {5, 7}
    x = np.random.default_rng(0).normal(size=(n, 3))
    wt = GCNWeights.random(3, 4, 2, seed=0)
    wt = GCNWeights(*(t.double() for t in (wt.w1, wt.b1, wt.w2, wt.b2)))
    a = new.toarray() + np.eye(n)
    d = a.sum(1) ** -0.5
    a_hat = d[:, None] * a * d[None, :]
    w1, b1, w2, b2 = (t.numpy() for t in (wt.w1, wt.b1, wt.w2, wt.b2))
    expected = a_hat @ np.maximum(a_hat @ x @ w1 + b1, 0) @ w2 + b2
    shards = shard_graph(old, owner)

    def work(rank, comm):
        with torch.no_grad():
            model = DistributedGCN(comm, shards[rank], wt)
            model.apply_snapshot(new)
            return model.forward(x[shards[rank].owned]).numpy()

    got = np.zeros((n, 2))
    for rank, rows in _ThreadRoom(world).run(work).items():
        got[shards[rank].owned] = rows
    np.testing.assert_allclose(got, expected, atol=1e-9)
