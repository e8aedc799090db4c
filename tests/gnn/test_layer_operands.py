"""A layer's modelled latency from its operands alone (no layer run) equals the price of the run itself, on a
graph large enough that FP16 rows are priced by their count."""

import pytest

from dste.data import make_graph
from dste.gnn import CompressedModel, GraphInference, LatencyModel, LayerSetting, make_model
from dste.gnn.latency import SHARE_PRICED_NODES

SETTINGS = [
    LayerSetting(fp32=True),
    LayerSetting(edge_sparsity=0.5, fp16_fraction=0.05),
    LayerSetting(edge_sparsity=0.25, channel_sparsity=0.5, fp16_fraction=0.2),
    LayerSetting(fp16_fraction=1.0),
]


@pytest.fixture(scope="module")
def large_graph():
    graph = make_graph("cora-like", seed=3, num_nodes=SHARE_PRICED_NODES + 300, num_edges=12000, num_features=24)
    assert graph.num_nodes > SHARE_PRICED_NODES
    return graph


@pytest.mark.parametrize("kind", ["gcn", "sage"])
def test_operands_price_equals_the_run_price(large_graph, kind):
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
