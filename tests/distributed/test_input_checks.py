"""Inputs the distributed path used to misread, or refuse only after partitioning and encoding: each is refused (or
warned about) before any work, naming what is wrong and what is allowed. No process group is started here."""

import math
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from dste.distributed import jobs
from dste.distributed.gcn import DistributedGCN, GCNWeights, gcn_reference
from dste.distributed.shard import shard_graph
from dste.format import IgnoredEdgeWeightsWarning


class OneRank:
    """Stands in for a Comm of one rank: every check under test runs before the first collective."""

    rank, world_size = 0, 1


def _ring(n=6, value=1.0):
    rows = np.arange(n)
    adj = sp.coo_matrix((np.full(n, value, np.float32), (rows, (rows + 1) % n)), shape=(n, n)).tocsr()
    return (adj + adj.T).tocsr()


def _no_partition(*_args, **_kwargs):
    raise AssertionError("partitioned before the inputs were checked")


def test_edge_weights_other_than_1_are_warned_about_as_on_the_single_process_path():
    weighted = _ring(value=5.0)
    x = np.ones((6, 3), np.float32)
    with pytest.warns(IgnoredEdgeWeightsWarning, match="weights are ignored"):
        gcn_reference(weighted, x, GCNWeights.random(3, 4, 2))  # the single-process path warned already
    with pytest.warns(IgnoredEdgeWeightsWarning, match=r"shard_graph: adj: .* 12 of its 12 stored values are not 1"):
        shard_graph(weighted, np.zeros(6, np.int32))
    shard = shard_graph(_ring(), np.zeros(6, np.int32))[0]
    with pytest.warns(IgnoredEdgeWeightsWarning, match="rank 0: the new snapshot's"):
        shard.with_rows(weighted)
    duplicated = sp.csr_matrix((np.ones(3, np.float32), np.array([1, 1, 0]), np.array([0, 2, 3])), shape=(2, 2))
    with pytest.warns(IgnoredEdgeWeightsWarning, match="from 1 to 2"):  # a duplicate edge sums to 2
        shard_graph(duplicated, np.zeros(2, np.int32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the 0/1 pattern, and one with an explicit zero, are read as given
        shard_graph(_ring(), np.zeros(6, np.int32))
        shard.with_rows(_ring())
        explicit_zero = _ring()
        explicit_zero.data[0] = 0.0
        shard_graph(explicit_zero, np.zeros(6, np.int32))


@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e39])  # 1e39 overflows float32 to Inf
def test_scatter_graph_refuses_non_finite_features_before_partitioning(monkeypatch, bad):
    monkeypatch.setattr(jobs, "partition_nodes", _no_partition)
    x = np.ones((6, 3))
    x[4, 2] = bad
    with pytest.raises(ValueError, match=r"1 NaN or Inf value\(s\) .* node 4, feature 2\); every feature must be"):
        jobs.scatter_graph(OneRank(), _ring(), x)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(backend="bogus"), ValueError, "unknown DSTE backend 'bogus'.*allowed: cpu, nkisim, neuron, auto"),
    (dict(classes=2.5), TypeError, "run_gcn_inference: classes must be an integer, got float 2.5"),
    (dict(hidden=0), ValueError, r"run_gcn_inference: hidden must lie in \[1, inf\], got 0"),
])
def test_run_gcn_inference_checks_its_options_before_partitioning(monkeypatch, kwargs, error, match):
    monkeypatch.setattr(jobs, "partition_nodes", _no_partition)
    with pytest.raises(error, match=match):
        jobs.run_gcn_inference(OneRank(), _ring(), np.ones((6, 3), np.float32), **kwargs)


def test_distributed_gcn_refuses_an_unknown_backend_before_encoding(monkeypatch):
    import dste.distributed.gcn as gcn

    monkeypatch.setattr(gcn, "encode_block", _no_partition)
    shard = shard_graph(_ring(), np.zeros(6, np.int32))[0]
    with pytest.raises(ValueError, match="unknown DSTE backend 'bogus'"):
        DistributedGCN(OneRank(), shard, GCNWeights.random(3, 4, 2), backend="bogus")


@pytest.mark.parametrize("sizes, match", [
    ((2.5, 8, 4), "in_features must be an integer, got float 2.5"),  # torch.rand's argument error before
    ((3, 8.0, 4), "hidden must be an integer"),
    ((3, 8, True), "classes must be an integer, got bool"),
])
def test_random_weights_refuse_sizes_that_are_not_integers(sizes, match):
    with pytest.raises(TypeError, match=f"GCNWeights.random: {match}"):
        GCNWeights.random(*sizes)


def test_gcn_reference_names_the_widths_that_do_not_match():
    weights = GCNWeights.random(3, 4, 2)
    with pytest.raises(ValueError, match=r"x must be \[nodes, features\] = \[6, 3\] .* got \(6, 5\)"):
        gcn_reference(_ring(), np.ones((6, 5), np.float32), weights)  # "mat1 and mat2 shapes cannot be multiplied"
    with pytest.raises(ValueError, match=r"= \[6, 3\] .* got \(4, 3\)"):
        gcn_reference(_ring(), np.ones((4, 3), np.float32), weights)
    expected = gcn_reference(_ring(), np.ones((6, 3), np.float32), weights)  # the valid call is unchanged
    assert expected.shape == (6, 2) and torch.isfinite(expected).all()


@pytest.mark.parametrize("kwargs, match", [
    (dict(job_timeout_s=-1), "job_timeout_s must be > 0 seconds"),  # every rank "killed" after "-1 s" before
    (dict(job_timeout_s=0), "job_timeout_s must be > 0 seconds"),
    (dict(job_timeout_s=math.nan), "job_timeout_s .* must be finite"),
    (dict(start_method="bogus"), r"start_method must be one of \[.*'spawn'.*\] \(this platform's\), got 'bogus'"),
    (dict(timeout_s=1e308), r"timeout_s must be a number > 0 \(seconds per collective\), from 0.001 s .* to 604800 s"),
    (dict(timeout_s=1e-6), "timeout_s must be a number > 0"),
    (dict(heartbeat_s=-1), "heartbeat_s must be a number > 0"),
])
def test_spawn_refuses_timeouts_and_start_methods_before_starting_a_rank(kwargs, match):
    from dste.distributed import spawn

    with pytest.raises(ValueError, match=match):
        spawn(np.sum, 1, **kwargs)


@pytest.mark.parametrize("kwargs, match", [
    (dict(timeout_s=1e308), r"timeout_s must be a finite number of seconds > 0, from 0.001 s"),  # OverflowError
    (dict(timeout_s=1e-6), "timeout_s must be a finite number of seconds > 0"),  # "timed out after 0 ms"
    (dict(heartbeat_s=math.inf), "heartbeat_s must be"),
    (dict(master_port=99999), r"master_port must be an int in \[0, 65535\]"),  # the store binding's error
    (dict(master_port=-1), r"master_port must be an int in \[0, 65535\]"),
])
def test_init_distributed_refuses_timeouts_and_ports_out_of_range(kwargs, match):
    from dste.distributed import init_distributed

    kwargs = dict(dict(rank=0, world_size=1, master_addr="127.0.0.1", master_port=1), **kwargs)
    with pytest.raises(ValueError, match=match):
        init_distributed(**kwargs)


@pytest.mark.parametrize("method", ["metis", "blocks", "contiguous"])
@pytest.mark.parametrize("seed, error, match", [
    (1.5, TypeError, "seed must be an integer, got float 1.5"),  # ran as seed 1
    ("x", TypeError, "seed must be an integer, got str"),  # failed inside METIS
    (None, TypeError, "seed must be an integer, got NoneType"),
    (2**70, ValueError, r"seed must lie in \[0, 2147483647\]"),
    (-1, ValueError, r"seed must lie in \[0, 2147483647\]"),
])
def test_partition_nodes_checks_its_seed_for_every_method(method, seed, error, match):
    from dste.distributed import partition_nodes

    with pytest.raises(error, match=match):
        partition_nodes(_ring(), 2, method=method, seed=seed)


def test_unit_diagonal_is_refused_by_name_before_any_work(monkeypatch):
    # a rank's block is not square: the encode refused it with "needs a square matrix, got shape (30, 32)"
    monkeypatch.setattr(jobs, "partition_nodes", _no_partition)
    with pytest.raises(ValueError, match="unit_diagonal=True is not supported by the distributed GCN"):
        jobs.run_gcn_inference(OneRank(), _ring(), np.ones((6, 3), np.float32), unit_diagonal=True)
