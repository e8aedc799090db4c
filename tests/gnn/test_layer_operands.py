"""A layer's modelled latency from its operands alone (no layer run) equals the price of the run itself, on a
graph large enough that FP16 rows are priced by their count.

"Large enough" is ``dste.gnn.latency.SHARE_PRICED_NODES``, read at every pricing through
``prices_fp16_rows_by_count``. The module lowers it to 1,200 nodes and prices a 1,500-node graph: the same
code path as above the real threshold (8,192), where a graph costs several times more to run and price; the
claim (both prices are the same number) does not depend on the node count.
"""

import pytest

from dste.data import make_graph
from dste.gnn import CompressedModel, GraphInference, LatencyModel, LayerSetting, make_model
from dste.gnn import latency

LOWERED_SHARE_PRICED_NODES = 1_200

SETTINGS = [
    LayerSetting(fp32=True),
    LayerSetting(edge_sparsity=0.5, fp16_fraction=0.05),
    LayerSetting(edge_sparsity=0.25, channel_sparsity=0.5, fp16_fraction=0.2),
    LayerSetting(fp16_fraction=1.0),
]


@pytest.fixture(scope="module")
def large_graph():
    # the real graph's 12,000 edges over 8,492 nodes, scaled to the node count: the same sparse degree mix
    graph = make_graph("cora-like", seed=3, num_nodes=LOWERED_SHARE_PRICED_NODES + 300, num_edges=2120,
                       num_features=24, num_val=300, num_test=600)
    assert graph.num_nodes > LOWERED_SHARE_PRICED_NODES
    return graph


@pytest.fixture
def share_priced_above_1200_nodes(monkeypatch):
    monkeypatch.setattr(latency, "SHARE_PRICED_NODES", LOWERED_SHARE_PRICED_NODES)
    assert latency.prices_fp16_rows_by_count(LOWERED_SHARE_PRICED_NODES + 1)
    assert not latency.prices_fp16_rows_by_count(LOWERED_SHARE_PRICED_NODES)


@pytest.mark.parametrize("kind", ["gcn", "sage"])
def test_operands_price_equals_the_run_price(large_graph, kind, share_priced_above_1200_nodes):
    inference = GraphInference(CompressedModel(make_model(large_graph, kind, hidden=8, seed=0)), large_graph)
    h = inference.features()
    for layer in range(2):
        for setting in SETTINGS:
            run = inference.run_layer(layer, h, setting)
            operands = inference.layer_operands(layer, setting)
            assert operands.spmm_width == run.spmm_width
            assert operands.n_fp16_rows == (None if run.spmm_rows is None else run.spmm_rows.hi_rows.size)
            # separate models: neither price is read from the other's memo
            assert LatencyModel().layer_latency(operands) == LatencyModel().layer_latency(run)
        h = inference.run_layer(layer, h, SETTINGS[1]).output


def test_operands_of_a_small_graph_with_hybrid_x_are_refused():
    graph = make_graph("cora-like", seed=0)
    inference = GraphInference(CompressedModel(make_model(graph, "gcn", hidden=16, seed=0)), graph)
    with pytest.raises(ValueError, match="exact FP16 rows"):
        LatencyModel().layer_latency(inference.layer_operands(0, LayerSetting(fp16_fraction=0.05)))
