"""Snapshot streams: changed_rows equals a direct adjacency diff, churn and drift behave, seeds reproduce."""

import numpy as np
import pytest
import scipy.sparse as sp

from dste.data import SnapshotStream, StreamParams, make_graph, make_stream
from dste.data.planetoid import load_planetoid


def rows_that_differ(previous: sp.csr_matrix, current: sp.csr_matrix) -> np.ndarray:
    """Independent diff: pad the previous adjacency to the new size and list rows with any difference."""
    n_prev, n = previous.shape[0], current.shape[0]
    padded = np.pad(previous.toarray(), ((0, n - n_prev), (0, n - n_prev)))
    differing = np.flatnonzero((current.toarray() != padded).any(axis=1))
    return np.union1d(differing, np.arange(n_prev, n))


@pytest.mark.parametrize("growth", [0.0, 0.03])
def test_changed_rows_are_exactly_the_rows_whose_adjacency_changed(growth):
    stream = make_stream("cora-like", num_snapshots=4, seed=5, growth=growth, edge_churn=0.08)
    snapshots = list(stream)
    np.testing.assert_array_equal(snapshots[0].changed_rows, np.arange(snapshots[0].graph.num_nodes))
    for previous, current in zip(snapshots, snapshots[1:]):
        expected = rows_that_differ(previous.graph.adj, current.graph.adj)
        np.testing.assert_array_equal(current.changed_rows, expected)
        assert 0 < current.changed_rows.size < current.graph.num_nodes


def test_churn_replaces_the_requested_fraction_with_new_pairs():
    stream = make_stream("cora-like", num_snapshots=3, seed=0, edge_churn=0.1)
    first, second = stream[0], stream[1]
    removed = first.graph.num_undirected_edges * 0.1
    assert abs(second.removed_edges.shape[1] - removed) <= 1
    assert second.added_edges.shape[1] == second.removed_edges.shape[1]
    previous = first.graph.adj
    # Removed pairs existed before and are gone; added pairs are new.
    assert np.all(previous[second.removed_edges[0], second.removed_edges[1]] == 1)
    assert np.all(second.graph.adj[second.removed_edges[0], second.removed_edges[1]] == 0)
    assert np.all(previous[second.added_edges[0], second.added_edges[1]] == 0)
    assert np.all(second.graph.adj[second.added_edges[0], second.added_edges[1]] == 1)
    # New edges follow the same block model, so homophily and locality stay near their knobs.
    assert abs(second.graph.edge_homophily() - first.graph.edge_homophily()) < 0.02
    assert abs(second.graph.community_locality() - first.graph.community_locality()) < 0.02


def test_growth_adds_nodes_outside_every_split():
    stream = make_stream("cora-like", num_snapshots=2, seed=0, growth=0.05)
    base, grown = stream[0].graph, stream[1].graph
    new = stream[1].new_nodes
    assert grown.num_nodes == base.num_nodes + round(0.05 * base.num_nodes) == base.num_nodes + new.size
    assert not (grown.train_mask[new] | grown.val_mask[new] | grown.test_mask[new]).any()
    assert grown.degrees()[new].min() >= 0 and grown.degrees()[new].mean() > 1


def test_feature_pull_moves_nodes_toward_or_away_from_class_means():
    base = make_graph("cora-like", seed=0)

    def distance_to_means(graph):
        means = np.stack([graph.x[graph.y == c].mean(0) for c in range(graph.num_classes)])
        return np.linalg.norm(graph.x - means[graph.y], axis=1).mean()

    start = distance_to_means(base)
    toward = SnapshotStream(base, StreamParams(num_snapshots=3, feature_pull=0.2, feature_noise=0.0), seed=1)
    away = SnapshotStream(base, StreamParams(num_snapshots=3, feature_pull=-0.2, feature_noise=0.0), seed=1)
    # Two steps of pull 0.2 scale the residual by 0.8^2 = 0.64 (or 1.2^2 = 1.44).
    assert distance_to_means(toward[2].graph) == pytest.approx(0.64 * start, rel=0.02)
    assert distance_to_means(away[2].graph) == pytest.approx(1.44 * start, rel=0.02)


def test_stream_is_reproducible_and_indexable_without_caching():
    cached = make_stream("cora-like", num_snapshots=4, seed=9)
    replayed = make_stream("cora-like", num_snapshots=4, seed=9, keep_all=False)
    other = make_stream("cora-like", num_snapshots=4, seed=10)
    for t in (3, 1):
        assert (cached[t].graph.adj != replayed[t].graph.adj).nnz == 0
        np.testing.assert_array_equal(cached[t].graph.x, replayed[t].graph.x)
        np.testing.assert_array_equal(cached[t].changed_rows, replayed[t].changed_rows)
    assert (cached[2].graph.adj != other[2].graph.adj).nnz > 0
    assert cached[-1].index == 3


def test_train_and_heldout_indices_partition_the_stream():
    stream = make_stream("cora-like", num_snapshots=8, seed=0, heldout_fraction=0.25)
    np.testing.assert_array_equal(stream.train_indices, np.arange(6))
    np.testing.assert_array_equal(stream.heldout_indices, [6, 7])


def test_stream_over_a_loaded_graph_uses_labels_as_blocks(planetoid_root):
    cora = load_planetoid("cora", planetoid_root)
    stream = SnapshotStream(cora, StreamParams(num_snapshots=2, edge_churn=0.05), seed=0)
    step = stream[1]
    np.testing.assert_array_equal(step.changed_rows, rows_that_differ(cora.adj, step.graph.adj))
    assert abs(step.graph.edge_homophily() - cora.edge_homophily()) < 0.02


def test_stream_over_a_saved_graph_with_communities(tmp_path):
    """A generated graph saved and loaded back keeps its communities but not the generator's block model: the
    stream fits one from labels and communities (this used to raise a NameError)."""
    from dste.data import load_npz, save_npz

    graph = make_graph("cora-like", seed=0, num_nodes=900, num_edges=2400, num_features=32, num_val=200, num_test=300)
    loaded = load_npz(save_npz(graph, tmp_path / "small.npz"))
    assert loaded.communities is not None and "block_model" not in loaded.meta
    step = SnapshotStream(loaded, StreamParams(num_snapshots=2, edge_churn=0.05), seed=0)[1]
    np.testing.assert_array_equal(step.changed_rows, rows_that_differ(loaded.adj, step.graph.adj))
    assert step.graph.num_nodes == loaded.num_nodes


@pytest.mark.parametrize(
    "knobs, message",
    [
        ({"edge_churn": 1.0}, "edge_churn"),
        ({"num_snapshots": 0}, "num_snapshots"),
        ({"feature_pull": 1.0}, "feature_pull"),
        ({"heldout_fraction": -0.1}, "heldout_fraction"),
        ({"growth": 2.0}, "growth"),
        ({"feature_noise": float("nan")}, "feature_noise must be finite"),  # failed at s[1], naming x
        ({"burst_drift": float("nan")}, "burst_drift must be finite"),  # ignored
    ],
)
def test_bad_stream_knobs_are_refused(knobs, message):
    with pytest.raises(ValueError, match=message):
        make_stream("cora-like", num_snapshots=knobs.pop("num_snapshots", 2), seed=0, **knobs)


def test_bad_stream_inputs_are_refused():
    with pytest.raises(TypeError, match="Graph"):
        SnapshotStream("cora-like")
    stream = make_stream("cora-like", num_snapshots=2)
    with pytest.raises(IndexError, match="out of range"):
        stream[2]
    with pytest.raises(IndexError, match="index -5 out of range"):
        stream[-5]
    with pytest.raises(ValueError, match="seed must be >= 0"):
        make_stream("cora-like", num_snapshots=2, seed=-1)


def test_changed_windows_follow_the_encoder_row_order():
    stream = make_stream("cora-like", num_snapshots=2, seed=0, edge_churn=0.01)
    snap = stream[1]
    n = snap.graph.num_nodes
    np.testing.assert_array_equal(snap.changed_windows(window_rows=128), np.unique(snap.changed_rows // 128))
    # An order that puts the changed rows first packs them into the leading windows.
    unchanged = np.setdiff1d(np.arange(n), snap.changed_rows)
    order = np.concatenate([snap.changed_rows, unchanged])
    expected = np.arange(-(-snap.changed_rows.size // 128))
    np.testing.assert_array_equal(snap.changed_windows(order, window_rows=128), expected)
    with pytest.raises(ValueError, match="permutation"):
        snap.changed_windows(np.zeros(n, dtype=np.int64))
    with pytest.raises(ValueError, match="row_perm must hold integer node ids, got float64"):  # was an IndexError
        snap.changed_windows(order.astype(np.float64))


def test_active_fraction_keeps_churn_inside_few_communities():
    full = make_stream("cora-like", num_snapshots=2, seed=0, edge_churn=0.02)
    local = make_stream("cora-like", num_snapshots=2, seed=0, edge_churn=0.02, active_fraction=0.1)
    base, step = local[0].graph, local[1]
    assert step.removed_edges.shape[1] == full[1].removed_edges.shape[1]
    active = step.graph.meta["active_communities"]
    assert 0 < active.size < 0.2 * np.unique(base.communities).size
    is_active = np.isin(base.communities, active)
    # Every removed and every added edge has at least one end in an active community.
    assert is_active[step.removed_edges].any(axis=0).all()
    assert is_active[step.added_edges].any(axis=0).all()
    np.testing.assert_array_equal(step.changed_rows, rows_that_differ(base.adj, step.graph.adj))
    # So at least about half the changed rows are active, against ~10 % when churn is global.
    assert is_active[step.changed_rows].mean() > 0.5 > 0.25 > is_active[full[1].changed_rows].mean()


# ---------------------------------------------------------------- stream presets
from dste.data.stream import STREAM_PRESETS, stream_params  # noqa: E402


def test_every_preset_is_documented_and_valid():
    for name, (params, description) in STREAM_PRESETS.items():
        params.validate()
        assert len(description) > 40, name
    with pytest.raises(ValueError, match="unknown stream preset"):
        stream_params("no-such-stream")


def test_bursty_stream_adds_a_flash_crowd_at_each_burst_and_removes_it_at_the_next_step():
    stream = make_stream("cora-like", num_snapshots=8, seed=2, preset="bursty")
    snapshots = list(stream)
    edges = [s.graph.num_undirected_edges for s in snapshots]
    base = edges[0]
    for t in (3, 6):  # burst steps: 60 % more edges for one step
        assert abs(edges[t] - 1.6 * base) <= 0.01 * base
        assert edges[t + 1] == base
    for t in (1, 2, 5):
        assert edges[t] == base
    # the burst's own edges, drawn at step 3, are all gone at step 4 and were all new at step 3
    flash = snapshots[3].graph.meta["burst_keys"]
    n = snapshots[3].graph.num_nodes
    rows, cols = flash // n, flash % n
    assert abs(flash.size - 0.6 * base) <= 0.01 * base  # the block model may fall a few pairs short
    assert edges[3] == edges[2] + flash.size
    assert np.all(snapshots[2].graph.adj[rows, cols] == 0)
    assert np.all(snapshots[3].graph.adj[rows, cols] == 1)
    assert np.all(snapshots[4].graph.adj[rows, cols] == 0)
    # one end of every burst edge lies in a community active at that step
    meta = snapshots[3].graph.meta
    active = np.isin(meta["block_model"].node_community, meta["active_communities"])
    assert np.all(active[rows] | active[cols])
    changed = [s.changed_rows.size for s in snapshots]
    assert min(changed[3], changed[4]) > 4 * max(changed[1], changed[2], changed[5])


def test_flash_crowds_of_consecutive_bursts_do_not_compound():
    # With a burst every step, each flash crowd was sized on an edge count still holding the one leaving at that
    # step: +60 %, +96 %, +118 % ... over the quiet graph instead of +60 % each time.
    stream = make_stream("cora-like", num_snapshots=6, seed=2, edge_churn=0.01, burst_every=1, burst_churn=0.01,
                         burst_edges=0.6)
    snapshots = list(stream)
    quiet = snapshots[0].graph.num_undirected_edges
    for snap in snapshots[1:]:
        assert abs(snap.graph.num_undirected_edges - 1.6 * quiet) <= 0.01 * quiet, snap.index


def test_a_stream_over_another_streams_burst_snapshot_does_not_remove_that_flash_crowd():
    # The base graph's meta still named the earlier stream's flash crowd, which a steady stream then removed at its
    # first step (42 % of the edges instead of 5 %).
    burst = make_stream("cora-like", num_snapshots=4, seed=2, preset="bursty")[3].graph
    assert burst.meta["burst_keys"].size
    steady = list(make_stream(burst, num_snapshots=2, seed=0, preset="steady"))
    removed = steady[1].removed_edges.shape[1]
    assert removed == round(0.05 * burst.num_undirected_edges)


def test_a_flash_crowd_or_churn_the_block_model_cannot_hold_is_refused():
    """On a 400-node graph a burst of 100 % more edges asks for more new pairs than the block model holds: the
    snapshot held 515 of its 900 flash edges, with no word. A step more than edge_shortfall_limit (10 %) short is
    refused, naming the knob; a caller may allow more and gets what is drawn. Confined to 5 % of the communities,
    the crowd's shortfall is drawn with one end anywhere in the graph first."""
    small = make_graph("cora-like", seed=1, num_nodes=400, num_edges=900, edge_shortfall_limit=0.5)
    base = small.num_undirected_edges  # 666: every class is one community, so no same-class edge could be drawn
    flash = dict(edge_churn=0.0, burst_every=2, burst_edges=1.0, active_fraction=1.0)
    with pytest.raises(ValueError, match=rf"snapshot 2: its flash crowd asks for {base} new edges, but only \d+ .*"
                                         r"Lower burst_edges.*edge_shortfall_limit"):
        list(make_stream(small, num_snapshots=4, seed=1, **flash))
    with pytest.raises(ValueError, match=r"snapshot 1: its churn asks for \d+ new edges.*Lower edge_churn"):
        list(make_stream(small, num_snapshots=4, seed=1, edge_churn=0.3))
    allowed = [s.graph.num_undirected_edges for s in make_stream(small, num_snapshots=4, seed=1, edge_shortfall_limit=0.5,
                                                                  **flash)]
    assert allowed[0] == allowed[1] == allowed[3] == base and 0.5 * base <= allowed[2] - base < 0.9 * base
    local = dict(flash, active_fraction=0.05)
    spilled = [s.graph.num_undirected_edges for s in make_stream(small, num_snapshots=4, seed=1, **local)]
    assert spilled[0] == spilled[1] == spilled[3] == base and 0.9 * base <= spilled[2] - base <= base


@pytest.mark.parametrize("limit", [-0.1, 1.0, float("nan")])
def test_a_bad_edge_shortfall_limit_is_refused(limit):
    with pytest.raises(ValueError, match="edge_shortfall_limit"):
        StreamParams(edge_shortfall_limit=limit).validate()


def test_a_stream_without_burst_edges_draws_the_same_snapshots_as_before_the_knob():
    # burst_edges = 0 draws nothing more: a stream's snapshots depend only on the knobs it sets
    plain = make_stream("cora-like", num_snapshots=5, seed=3, edge_churn=0.02, burst_every=2, burst_churn=0.3)
    again = make_stream("cora-like", num_snapshots=5, seed=3, edge_churn=0.02, burst_every=2, burst_churn=0.3,
                        burst_edges=0.0, budget_slo=0.7)
    for a, b in zip(plain, again):
        assert (a.graph.adj != b.graph.adj).nnz == 0
        assert a.graph.meta.get("burst_keys") is None


def test_growing_stream_grows_by_the_preset_rate():
    stream = make_stream("cora-like", num_snapshots=4, seed=1, preset="growing")
    sizes = [snapshot.graph.num_nodes for snapshot in stream]
    for before, after in zip(sizes, sizes[1:]):
        assert after - before == round(0.06 * before)


def test_budget_shift_carries_the_cycle_and_leaves_the_graph_as_steady():
    shifting = list(make_stream("cora-like", num_snapshots=6, seed=4, preset="budget-shift"))
    steady = list(make_stream("cora-like", num_snapshots=6, seed=4, preset="steady"))
    cycle = STREAM_PRESETS["budget-shift"][0].budget_cycle
    assert [s.latency_budget for s in shifting] == [cycle[t % len(cycle)] for t in range(6)]
    assert all(s.latency_budget is None for s in steady)
    for a, b in zip(shifting, steady):
        assert (a.graph.adj != b.graph.adj).nnz == 0
        np.testing.assert_array_equal(a.graph.x, b.graph.x)


@pytest.mark.parametrize("knobs, message", [
    ({"burst_every": -1}, "burst_every"),
    ({"burst_churn": 1.0}, "burst_churn"),
    ({"burst_drift": -0.1}, "burst_drift"),
    ({"budget_cycle": (1.0, 0.0)}, "budget_cycle"),
    ({"burst_edges": 0.5}, "burst_every"),
    ({"burst_edges": 1.5, "burst_every": 2}, "burst_edges"),
    ({"burst_edges": float("nan"), "burst_every": 2}, "burst_edges must be finite"),
    ({"budget_slo": -0.1}, "budget_slo"),
    ({"budget_slo": 0.7, "budget_cycle": (0.5,)}, "not both"),
    ({"slo_refresh_every": 3}, "set budget_slo > 0 too"),
    ({"budget_slo": 1.0, "slo_refresh_every": -1}, "slo_refresh_every must be an int >= 0"),
    ({"budget_slo": 1.0, "slo_refresh_every": 1.5}, "slo_refresh_every must be an int >= 0"),
    # True counted as 1: one snapshot, a burst every step, a re-provisioning every snapshot
    ({"num_snapshots": True}, "num_snapshots must be an int >= 1"),
    ({"burst_every": True}, "burst_every must be an int >= 0"),
    ({"budget_slo": 1.0, "slo_refresh_every": True}, "slo_refresh_every must be an int >= 0"),
])
def test_bad_burst_and_budget_knobs_are_refused(knobs, message):
    with pytest.raises(ValueError, match=message):
        StreamParams(**knobs).validate()


def test_a_refreshed_objective_is_anchored_at_the_last_re_provisioning():
    every_third = StreamParams(budget_slo=1.0, slo_refresh_every=3)
    assert [every_third.slo_anchor(t) for t in range(8)] == [0, 0, 0, 3, 3, 3, 6, 6]
    assert [StreamParams(budget_slo=1.0).slo_anchor(t) for t in (0, 5, 11)] == [0, 0, 0]


def test_flash_crowd_edges_leave_by_their_own_ids_while_the_graph_grows():
    # new nodes shift the pair keys' base (i * n + j): the edges of a burst must still be the ones that leave
    stream = make_stream("cora-like", num_snapshots=4, seed=7, edge_churn=0.01, growth=0.05, burst_every=2,
                         burst_churn=0.01, burst_edges=0.3, active_fraction=0.5)
    snapshots = list(stream)
    burst, after = snapshots[2], snapshots[3]
    flash = burst.graph.meta["burst_keys"]
    n = burst.graph.num_nodes
    rows, cols = flash // n, flash % n
    assert after.graph.num_nodes > n and flash.size > 0
    assert np.all(burst.graph.adj[rows, cols] == 1)
    assert np.all(after.graph.adj[rows, cols] == 0)
    removed = set(map(tuple, after.removed_edges.T.tolist()))
    assert set(zip(rows.tolist(), cols.tolist())) <= removed


def test_feature_unit_is_the_rms_of_nonzero_features_capped_at_one():
    from dste.data.stream import feature_unit

    indicators = (np.random.default_rng(0).random((50, 40)) < 0.1).astype(np.float32)
    assert feature_unit(indicators) == 1.0  # 0/1 word indicators: the presets' own scale
    assert feature_unit(0.05 * indicators) == pytest.approx(0.05)  # TF-IDF-like magnitudes
    rows = indicators / np.maximum(indicators.sum(axis=1, keepdims=True), 1)
    nonzero = rows[rows != 0]
    assert feature_unit(rows) == pytest.approx(np.sqrt((nonzero.astype(np.float64) ** 2).mean()))
    assert feature_unit(30.0 * indicators) == 1.0  # a larger scale keeps the presets' absolute noise
    assert feature_unit(np.zeros((4, 3), dtype=np.float32)) == 1.0


@pytest.mark.parametrize("preset", ["steady", "drift", "growing"])
def test_a_stream_over_features_scaled_down_is_the_same_stream_scaled_down(preset):
    """Drift and noise follow the features' scale: the stream of c * x is c times the stream of x (same edges),
    so scaled-down features (TF-IDF, row-normalised) are not drowned by noise set for 0/1 indicators."""
    from dste.data import Graph
    from dste.data.stream import stream_params

    base = make_graph("cora-like", seed=1, num_nodes=600, num_edges=1500, num_features=64, num_val=100,
                      num_test=200, community_size=(16, 64))
    indicators = (base.x > 1.0).astype(np.float32)  # 0/1 features with a class signal, unit 1
    scale = 0.04

    def graph_with(x):
        return Graph(adj=base.adj, x=x, y=base.y, train_mask=base.train_mask, val_mask=base.val_mask,
                     test_mask=base.test_mask, num_classes=base.num_classes, communities=base.communities)

    params = stream_params(preset, 4)
    plain = SnapshotStream(graph_with(indicators), params, seed=2)
    scaled = SnapshotStream(graph_with(scale * indicators), params, seed=2)
    assert plain.feature_unit == 1.0 and scaled.feature_unit == pytest.approx(scale)
    for a, b in zip(plain, scaled):
        assert (a.graph.adj != b.graph.adj).nnz == 0
        np.testing.assert_allclose(b.graph.x, scale * a.graph.x, rtol=1e-5, atol=1e-7)
    assert np.abs(plain[3].graph.x[:600] - indicators).mean() > 0.01  # the features did move


@pytest.mark.parametrize("fraction, total, expected", [(0.07, 100, 7), (0.25, 12, 3), (0.1, 30, 3), (0.34, 12, 5)])
def test_heldout_count_is_the_ceiling_of_the_exact_product(fraction, total, expected):
    # 0.07 * 100 is 7.000000000000001 in binary: its ceiling held out an eighth snapshot
    stream = SnapshotStream(make_graph("cora-like", seed=1, num_nodes=600, num_edges=1500, num_features=16,
                                       num_val=100, num_test=200, community_size=(16, 64)),
                            StreamParams(num_snapshots=total, heldout_fraction=fraction), seed=0)
    assert stream.heldout_indices.size == expected


def test_a_csbm_graph_with_shuffled_node_ids_keeps_its_communities_through_the_stream():
    """A graph rebuilt from a CSBM graph in another node order keeps the old meta, whose block model is in the old
    order: the first step rewrote the communities from it (no longer class-pure) and drew edges between the wrong
    nodes (locality 0.40 -> 0.10). The stream now fits a model to the graph it is given."""
    import dataclasses

    graph = make_graph("cora-like", seed=3, num_nodes=900, num_edges=2600, num_classes=4, homophily=0.7, locality=0.4,
                       community_size=(16, 48))
    order = np.random.default_rng(0).permutation(graph.num_nodes)  # new id i is old node order[i]
    shuffled = dataclasses.replace(
        graph, adj=graph.adj[order][:, order].tocsr(), x=graph.x[order], y=graph.y[order],
        train_mask=graph.train_mask[order], val_mask=graph.val_mask[order], test_mask=graph.test_mask[order],
        communities=graph.communities[order])
    assert shuffled.meta["block_model"] is graph.meta["block_model"]
    step = SnapshotStream(shuffled, StreamParams(num_snapshots=2, edge_churn=0.2), seed=0)[1].graph
    np.testing.assert_array_equal(step.communities, shuffled.communities)
    # 20 % of the edges are redrawn from the model, whose locality is the graph's 0.40; the old order drew 0.10
    assert abs(step.community_locality() - shuffled.community_locality()) < 0.03
    # the generator's own model is still used where it describes the graph: a stream is unchanged by the check
    assert SnapshotStream(graph, StreamParams(num_snapshots=2), seed=0)[1].graph.meta["block_model"].theta[0] == \
        graph.meta["block_model"].theta[0]


def test_snapshot_zero_is_no_burst_step():
    from dste.data.stream import burst_steps

    params = StreamParams(burst_every=3, burst_churn=0.5)
    assert burst_steps(params, 10) == [3, 6, 9]
    assert params.churn_at(0) == params.edge_churn and params.churn_at(3) == 0.5


def test_a_flash_crowd_larger_than_its_active_communities_spills_over_the_graph():
    # communities of 8-24 nodes hold too few pairs for bursty's flash crowd (60 % more edges, one end in 30 % of
    # the communities): the rest is drawn with one end anywhere, and the burst step still carries its crowd
    from dste.data.stream import burst_steps

    graph = make_graph(dict(num_nodes=1500, num_edges=7500, num_classes=8, num_features=32, homophily=0.75,
                            locality=0.55, community_size=(8, 24), mu=1.2, num_val=300, num_test=500), seed=0)
    stream = make_stream(graph, 5, preset="bursty")
    edges = [snapshot.graph.num_edges for snapshot in stream]
    burst = burst_steps(stream.params, 5)
    assert burst == [3]
    crowd = (edges[3] - edges[2]) / 2  # undirected pairs added on top of the churn's one-for-one swap
    wanted = stream.params.burst_edges * edges[2] / 2
    assert wanted * (1 - stream.params.edge_shortfall_limit) <= crowd <= wanted + 1
    assert abs(edges[4] - edges[2]) <= 0.01 * edges[2]  # the crowd leaves at the next step


def test_heldout_count_never_holds_out_every_snapshot():
    # heldout_count: "the ceiling of the product (at least one when total >= 2 and the fraction > 0), never every
    # snapshot". Brute force over T = 2..20 and fractions k / 100: min(ceil(f * T), T - 1) (exact in Fractions).
    from fractions import Fraction

    from dste.data.stream import heldout_count

    for total in range(2, 21):
        for k in range(100):
            expected = min(-(-Fraction(k, 100) * total // 1), total - 1)
            assert heldout_count(total, k / 100) == expected, (total, k)
    assert heldout_count(2, 0.51) == 1
