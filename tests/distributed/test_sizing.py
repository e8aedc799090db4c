"""The cluster sizing figures recomputed by hand from their documented formulas (no process group)."""

import math

import numpy as np
import pytest
import scipy.sparse as sp

from dste.distributed import partition_nodes, sizing


def _hybrid_record_bytes(features):
    # the kernel's int8-hybrid X record (dste/kernels/plan.py, "int8 values padded to 4 B, fp32 scale"),
    # restated here: the sizing must count the rows the SpMM gathers, the same ones estimate_spmm prices
    return 4 * math.ceil(features / 4) + 4


@pytest.mark.parametrize("features", [1, 3, 128, 130])
def test_a_feature_row_is_the_kernels_hybrid_record(features):
    # the sizing counted F + 8 B (the record before its unused FP16 position was dropped): 136 B at F = 128
    # against the kernel's 132 B, so feature, halo and exchange figures were 3 % too large
    assert sizing.feature_row_bytes(features) == _hybrid_record_bytes(features)


def test_cluster_sizing_matches_a_hand_count_on_a_small_graph():
    n, world_size, features = 300, 3, 130
    adj = sp.random(n, n, density=0.02, random_state=1)
    adj = ((adj + adj.T) != 0).astype(np.float32).tocsr()
    ranks = sizing.cluster_sizing(adj, world_size, features, method="contiguous", estimate=False)
    owner = partition_nodes(adj, world_size, method="contiguous")
    record = _hybrid_record_bytes(features)
    a_plus_i = ((adj != 0) + sp.identity(n, format="csr")) != 0
    halos = []
    for r in range(world_size):
        neighbours = np.unique(adj[np.flatnonzero(owner == r)].indices)
        halos.append(neighbours[owner[neighbours] != r])
    for r, got in enumerate(ranks):
        owned = np.flatnonzero(owner == r)
        sent = sum(int(np.sum(owner[halos[q]] == r)) for q in range(world_size) if q != r)
        assert (got.owned_rows, got.halo_rows, got.rows_sent) == (owned.size, halos[r].size, sent)
        assert got.stored_entries == a_plus_i[owned].nnz
        assert got.feature_bytes == owned.size * record
        assert got.halo_buffer_bytes == halos[r].size * record
        assert got.output_bytes == owned.size * features * 4  # float32 output rows
        assert got.device_bytes == (got.matrix_device_bytes + got.feature_bytes + got.halo_buffer_bytes
                                    + got.output_bytes)
        # 2 peers x 2 us hop latency + max(bytes sent, bytes received) at 256 GB/s (1,024 GB/s per chip, 4 ranks)
        expected_us = 2 * 2.0 + max(sent, halos[r].size) * record / 256e9 * 1e6
        assert got.exchange_modelled_us == pytest.approx(expected_us, rel=1e-12)


def test_paper_sizing_by_hand():
    got = sizing.paper_sizing(1000, 4000, 128, 8, matrix_bytes_per_entry=4.0, spmm_us_per_entry=0.001,
                              halo_rows_per_owned_row=0.5)
    owned = 125  # ceil(1000 / 8)
    entries = 1125  # ceil((2 * 4000 + 1000) / 8)
    halo = 62  # 0.5 * 125 = 62.5 rows
    record = 132
    assert (got.owned_rows, got.stored_entries, got.halo_rows) == (owned, entries, halo)
    assert got.matrix_bytes == 4500 and got.feature_bytes == owned * record
    assert got.device_bytes == 4500 + owned * record + halo * record + owned * 128 * 4
    assert got.hbm_fill == pytest.approx(got.device_bytes / (24 * 2**30))  # 96 GiB per chip, 4 ranks
    assert (got.chips, got.instances) == (2, 1)
    assert got.spmm_modelled_us == pytest.approx(1.125)
    assert got.exchange_modelled_us == pytest.approx(7 * 2.0 + halo * record / 256e9 * 1e6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(ranks=0), "ranks must be an int >= 1"),  # ZeroDivisionError before
    (dict(ranks=2000), "ranks must not exceed the node count"),
    (dict(features=0), "features must be an int >= 1"),
    (dict(undirected_edges=-1), "undirected_edges must be an int >= 0"),
    (dict(matrix_bytes_per_entry=-4.0), "matrix_bytes_per_entry must be a finite number >= 0"),  # negative bytes
    (dict(halo_rows_per_owned_row=float("nan")), "halo_rows_per_owned_row must be a finite number"),
])
def test_paper_sizing_refuses_figures_it_would_misread(kwargs, match):
    args = dict(nodes=1000, undirected_edges=4000, features=128, ranks=8, matrix_bytes_per_entry=4.0,
                spmm_us_per_entry=0.001, halo_rows_per_owned_row=0.5)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        sizing.paper_sizing(args.pop("nodes"), args.pop("undirected_edges"), args.pop("features"), args.pop("ranks"),
                            **args)


def test_cluster_sizing_refuses_a_feature_width_below_one():
    adj = sp.csr_matrix(np.ones((4, 4), np.float32))
    with pytest.raises(ValueError, match="features must be an int >= 1"):
        sizing.cluster_sizing(adj, 2, 0, estimate=False)  # counted 8 B rows of nothing before


def test_exchange_past_one_instance_moves_the_remote_peers_share_at_the_efa_rate():
    # Module docstring: "past one instance, the share of peers on other instances moves at the EFA rate
    # (... 6.25 GB/s per rank) and adds the 15 us inter-server latency once". 65 ranks, 64 per trn2.48xlarge:
    # 1 of the 64 peers is remote.
    moved = 1e8
    remote = 1 / 64
    local = moved * (1 - remote) / 256e9  # NeuronLink 1,024 GB/s per chip over its 4 ranks
    efa = moved * remote / 6.25e9  # EFA 400 GB/s per instance over its 64 ranks
    expected = 64 * 2.0 + 15.0 + max(local, efa) * 1e6
    assert sizing.exchange_us(moved, moved, 65) == pytest.approx(expected, rel=1e-9)


def test_paper_sizing_caps_the_halo_at_the_nodes_a_rank_does_not_own():
    # A rank's halo rows are other ranks' nodes: with 2 ranks of 1,000 nodes a rank owns 500, so 3 halo rows per
    # owned row (1,500) is capped at the 500 nodes it does not own.
    got = sizing.paper_sizing(1000, 5000, 128, 2, matrix_bytes_per_entry=2.0, spmm_us_per_entry=0.001,
                              halo_rows_per_owned_row=3.0)
    assert (got.owned_rows, got.halo_rows) == (500, 500)
    assert got.exchange_modelled_us == pytest.approx(1 * 2.0 + 500 * 132 / 256e9 * 1e6)
