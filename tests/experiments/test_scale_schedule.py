"""The main job's schedule and memory shares by graph size (what changes at ogbn-arxiv's scale, and what does not)."""

import numpy as np
import pytest

from dste.controller.actions import DEFAULT_CHANNEL_LEVELS, DEFAULT_FP16_FRACTIONS
from dste.data.stream import StreamParams, burst_steps, heldout_count, snapshots_with_heldout_burst, stream_params
from dste.experiments.env_layers import LAYER_RUN_BYTES_KEPT, RUN_BYTES_CEILING, run_bytes_budget
from dste.experiments.run_config import RunConfig
from dste.experiments.sizing import LARGE_GRAPH_NODES, SCHEDULES, GraphSize, schedule_for
from dste.format.hybrid_rows import quantize_rows
from dste.gnn.execution import STORED_FEATURE_BYTES


def _size(nodes):
    """A graph of ``nodes`` nodes, 128 features and mean degree 4."""
    return GraphSize(nodes, 128, 4 * nodes)


def test_graphs_above_the_threshold_get_the_large_schedule_unless_the_run_names_its_own():
    config = RunConfig()
    assert config.snapshots is None and config.episodes is None
    at_the_limit = schedule_for(config, _size(LARGE_GRAPH_NODES))
    assert (at_the_limit.snapshots, at_the_limit.episodes) == (
        SCHEDULES["default"]
    )
    large = schedule_for(config, _size(LARGE_GRAPH_NODES + 1))
    assert (large.snapshots, large.episodes) == SCHEDULES["large"] and SCHEDULES["large"][0] >= 4
    named = schedule_for(RunConfig(snapshots=8, episodes=50), _size(10 * LARGE_GRAPH_NODES))
    assert (named.snapshots, named.episodes) == (8, 50)
    quick = RunConfig(quick=True)
    assert (quick.snapshots, quick.episodes) == (6, 100)
    assert schedule_for(quick, _size(10 * LARGE_GRAPH_NODES)).snapshots == 6
    assert schedule_for(quick, _size(10)).episodes == 100


def test_a_bursty_stream_gets_a_schedule_that_holds_out_a_burst():
    bursty = stream_params("bursty")
    for config, size in ((RunConfig(quick=True, stream="bursty"), _size(10)),
                         (RunConfig(stream="bursty"), _size(LARGE_GRAPH_NODES + 1)),
                         (RunConfig(stream="bursty"), _size(10))):
        total = schedule_for(config, size).snapshots
        held_out = range(total - heldout_count(total, bursty.heldout_fraction), total)
        assert set(burst_steps(bursty, total)) & set(held_out), (config, total)
    # six snapshots hold out the fifth and sixth, both quiet with a burst every third step: a seventh is added
    assert RunConfig(quick=True, stream="bursty").snapshots == 7
    assert schedule_for(RunConfig(stream="bursty"), _size(LARGE_GRAPH_NODES + 1)).snapshots == 7
    # a count the run names is kept (the job says what it holds out instead), and streams without bursts keep theirs
    assert schedule_for(RunConfig(stream="bursty", snapshots=6), _size(10)).snapshots == 6
    assert RunConfig(quick=True, stream="growing").snapshots == 6


@pytest.mark.parametrize("every, fraction", [(2, 0.25), (3, 0.25), (5, 0.1), (7, 0.5), (3, 0.0), (0, 0.25)])
def test_snapshots_with_heldout_burst_is_the_fewest_that_hold_one_out(every, fraction):
    params = StreamParams(burst_every=every, heldout_fraction=fraction)

    def holds_burst(count):
        return any(t > 0 and t % every == 0 for t in range(count - heldout_count(count, fraction), count))

    for total in range(2, 40):
        found = snapshots_with_heldout_burst(params, total)
        if fraction == 0 or every == 0:  # nothing held out, or no bursts: the count stands
            assert found == total
            continue
        assert found >= total and holds_burst(found), total
        assert not any(holds_burst(count) for count in range(total, found)), total


@pytest.mark.parametrize("bad", [{"snapshots": 3}, {"episodes": 0}, {"snapshots": 2.5}])
def test_a_named_schedule_is_still_validated(bad):
    with pytest.raises(ValueError, match="snapshots|episodes"):
        RunConfig(**bad)


def test_the_layer_run_budget_is_a_bounded_share_of_memory_split_between_jobs():
    one, two = run_bytes_budget(1), run_bytes_budget(2)
    for budget in (one, two):
        assert LAYER_RUN_BYTES_KEPT <= budget <= RUN_BYTES_CEILING
    assert two <= one
    with pytest.raises(ValueError, match="jobs"):
        run_bytes_budget(0)


def test_every_feature_version_of_an_arxiv_sized_graph_fits_the_stored_feature_budget():
    # bytes of one HybridRows version, from a small quantization (q: 1 B per value, scale: 4 B per row, FP16 rows:
    # 2 B per value and a 4 B id), scaled to ogbn-arxiv's 169,343 x 128 features
    rows = quantize_rows(np.random.default_rng(0).standard_normal((200, 8)).astype(np.float32), fp16_fraction=0.05)
    n_hi = rows.hi_rows.size
    assert rows.nbytes()["total"] == 200 * 8 + 4 * 200 + n_hi * (2 * 8 + 4)
    n, width = 169_343, 128
    total = 0
    for channels in DEFAULT_CHANNEL_LEVELS:
        kept = width - int(round(channels * width))
        for fraction in DEFAULT_FP16_FRACTIONS:
            total += n * kept + 4 * n + int(round(fraction * n)) * (2 * kept + 4)
    assert total <= STORED_FEATURE_BYTES, (total, STORED_FEATURE_BYTES)


def test_over_its_budget_the_layer_run_cache_drops_last_layer_runs_first():
    import torch

    from dste.controller.actions import ActionSpace
    from dste.data import make_graph
    from dste.experiments.env_layers import LayerEvaluator
    from dste.gnn import make_model

    graph = make_graph("cora-like", seed=0)
    torch.manual_seed(0)
    layers = LayerEvaluator(make_model(graph, "gcn", hidden=16, seed=0), [graph], ActionSpace())
    first = [layers.run_layer(0, 0, (), a) for a in (0, 1)]
    last = layers.run_layer(0, 1, (0,), 0)[0].nbytes
    layers.run_layer(0, 1, (1,), 0)
    held = layers._run_bytes
    # the next first-layer run goes over the budget by less than one last-layer output
    layers.run_bytes_kept = held + first[0][0].nbytes - last
    layers.run_layer(0, 0, (), 2)
    kept = set(layers._runs)
    assert {(0, (), 0), (0, (), 1), (0, (), 2), (0, (1,), 0)} == kept  # the oldest last-layer run went, only it
    assert layers._run_bytes == sum(output.nbytes for output, _ in layers._runs.values()) <= layers.run_bytes_kept
    again = layers.run_layer(0, 1, (0,), 0)[0]  # recomputed, bit for bit
    assert again.shape == (graph.num_nodes, graph.num_classes)
    assert first[0][0].shape[0] == graph.num_nodes


def test_later_layers_reuse_their_stored_input_and_give_the_same_outputs_bit_for_bit():
    import torch

    from dste.controller.actions import ActionSpace
    from dste.data import make_graph
    from dste.experiments import env_layers
    from dste.experiments.env_layers import LayerEvaluator, setting_of
    from dste.gnn import make_model

    graph = make_graph("cora-like", seed=0)
    torch.manual_seed(0)
    space = ActionSpace()
    layers = LayerEvaluator(make_model(graph, "gcn", hidden=16, seed=0), [graph], space)
    prefix = (space.nearest(0.25, 0.05),)
    h = layers.layer_input(0, prefix)
    same_input = [a for a in range(len(space)) if space[a].channel_sparsity == space[5].channel_sparsity
                  and space[a].fp16_fraction == space[5].fp16_fraction]
    assert len(same_input) == 4  # the four edge-sparsity levels share one stored input
    for action in same_input:
        cached = layers.run_layer(0, 1, prefix, action)[0]
        direct = layers.inference(0).run_layer(1, h, setting_of(space, action)).output
        assert np.array_equal(cached, direct)
    assert len(layers._input_rows) == 1
    assert layers._input_rows.nbytes == sum(r.nbytes()["total"] for r in layers._input_rows.values())
    with pytest.raises(ValueError, match="input_rows"):
        layers.inference(0).run_layer(1, h, setting_of(space, same_input[0]), input_rows=layers.inference(0).input_rows(
            1, h[:, :3], setting_of(space, 0)))
    assert env_layers.INPUT_ROWS_BYTES_KEPT > 0


def test_stored_rows_keep_the_most_recent_within_their_bytes_and_never_drop_the_newest():
    from dste.format.hybrid_rows import quantize_rows
    from dste.gnn.execution import StoredRows

    def rows(n):
        return quantize_rows(np.ones((n, 4), dtype=np.float32))

    one = rows(10).nbytes()["total"]
    store = StoredRows(2 * one)
    made = []
    for key in ("a", "b", "a", "c"):
        store.get((key,), lambda key=key: made.append(key) or rows(10))
    assert made == ["a", "b", "c"]  # "a" was kept when asked again
    assert len(store) == 2 and store.nbytes == 2 * one  # "b", the least recently used, went
    big = store.get(("big",), lambda: rows(100))
    assert len(store) == 1 and store.nbytes == big.nbytes()["total"] > store.limit_bytes


def test_the_layer_run_budget_splits_forty_percent_of_available_memory_between_jobs(monkeypatch):
    # run_bytes_budget: "RUN_BYTES_MEMORY_SHARE of the available memory split between the jobs, at least
    # LAYER_RUN_BYTES_KEPT and at most RUN_BYTES_CEILING". With 32 GiB available: 0.4 * 32 / 4 = 3.2 GiB -> the 4 GiB
    # floor for 4 jobs; 0.4 * 32 / 2 = 6.4 GiB for 2; 12.8 GiB for 1.
    import dste.experiments.env_layers as env_layers

    monkeypatch.setattr(env_layers, "available_memory_bytes", lambda: 32 << 30)
    assert run_bytes_budget(4) == 4 << 30
    assert run_bytes_budget(2) == int(0.4 * (32 << 30) / 2)
    assert run_bytes_budget(1) == int(0.4 * (32 << 30))
