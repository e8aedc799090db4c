"""The memory footprint (``dste.gnn.footprint``) against bytes recomputed by hand from the arrays' shapes and dtypes:
FP32 CSR and layer inputs, INT8 hybrid rows, plain FP16 rows at an FP16 share of 1, and the unpruned matrix stored
once per form a pass reads it in."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from dste.data.graph import Graph, adjacency_from_pairs
from dste.gnn import FP32_SETTING, CompressedModel, GraphInference, LayerSetting, make_model, memory_footprint
from dste.gnn.footprint import fp32_csr_bytes, layer_bytes, pass_bytes

NODES, FEATURES, HIDDEN, CLASSES = 200, 24, 12, 3


def _graph(seed=0):
    rng = np.random.default_rng(seed)
    rows, cols = rng.integers(0, NODES, 4 * NODES), rng.integers(0, NODES, 4 * NODES)
    x = rng.standard_normal((NODES, FEATURES)).astype(np.float32)
    y = (np.arange(NODES) % CLASSES).astype(np.int64)
    split = rng.permutation(NODES)
    masks = [np.zeros(NODES, bool) for _ in range(3)]
    masks[0][split[:50]], masks[1][split[50:100]], masks[2][split[100:]] = True, True, True
    return Graph(adjacency_from_pairs(rows, cols, NODES), x, y, *masks, num_classes=CLASSES, name="footprint")


@pytest.fixture(scope="module", params=["gcn", "sage"])
def case(request):
    graph = _graph()
    model = make_model(graph, request.param, hidden=HIDDEN, seed=0)  # bytes do not depend on training
    return request.param, graph, model


def _propagation_nnz(kind: str, graph) -> int:
    """Entries of the propagation matrix from the binary adjacency alone: GCN's A with every self loop replaced by
    one, SAGE's A as it is."""
    binary = sp.csr_matrix(graph.adj, dtype=np.float32)
    binary.sum_duplicates()
    if kind == "sage":
        return int(binary.nnz)
    off_diagonal = sp.coo_matrix(binary)
    return int(np.count_nonzero(off_diagonal.row != off_diagonal.col)) + NODES


def _fp32_weights(kind: str) -> int:
    maps = 1 if kind == "gcn" else 2  # SAGE: lin_l (bias) and lin_r (no bias)
    return 4 * (maps * (FEATURES * HIDDEN + HIDDEN * CLASSES) + HIDDEN + CLASSES)


def test_fp32_pass_counts_float32_csr_inputs_and_weights(case):
    kind, graph, model = case
    fp32 = memory_footprint(model, graph, FP32_SETTING)["fp32"]
    nnz = _propagation_nnz(kind, graph)
    assert fp32["graph"] == 4 * (NODES + 1) + (4 + 4) * nnz  # int32 row pointers and ids, float32 values; once
    assert fp32["features"] == 4 * NODES * FEATURES
    assert fp32["activations"] == 4 * NODES * HIDDEN
    assert fp32["weights"] == _fp32_weights(kind)
    assert fp32["total"] == fp32["graph"] + fp32["features"] + fp32["activations"] + fp32["weights"]


def test_int8_inputs_are_one_byte_per_value_and_a_float32_scale_per_row(case):
    _, graph, model = case
    report = memory_footprint(model, graph, LayerSetting(fp16_fraction=0.0))["compressed"]
    assert report["features"] == NODES * FEATURES + 4 * NODES
    assert report["activations"] == NODES * HIDDEN + 4 * NODES


def test_fp16_inputs_are_two_bytes_per_value(case):
    """At an FP16 share of 1 the layer reads plain FP16 rows (``LayerSetting.x_mode``, as the latency model prices
    them): no INT8 slots, per-row scales or FP16 row ids are stored."""
    _, graph, model = case
    report = memory_footprint(model, graph, LayerSetting(fp16_fraction=1.0))["compressed"]
    assert report["features"] == 2 * NODES * FEATURES
    assert report["activations"] == 2 * NODES * HIDDEN


def test_a_partial_fp16_share_adds_its_rows_to_the_int8_rows(case):
    _, graph, model = case
    report = memory_footprint(model, graph, LayerSetting(fp16_fraction=0.5))["compressed"]
    hi = round(0.5 * NODES)  # FP16 rows: 2 B per value and an int32 id, beside every row's INT8 slot and scale
    assert report["features"] == NODES * FEATURES + 4 * NODES + hi * (2 * FEATURES + 4)
    assert report["activations"] == NODES * HIDDEN + 4 * NODES + hi * (2 * HIDDEN + 4)


@pytest.mark.parametrize("fp32_layer", [0, 1])
def test_a_pass_mixing_fp32_and_compressed_layers_stores_both_forms_of_the_graph(case, fp32_layer):
    kind, graph, model = case
    settings = [LayerSetting(), LayerSetting()]
    settings[fp32_layer] = FP32_SETTING
    report = memory_footprint(model, graph, settings)["compressed"]
    csr = 4 * (NODES + 1) + 8 * _propagation_nnz(kind, graph)
    tiles = GraphInference(CompressedModel(model), graph).plan.base.nbytes()["device_total"]
    assert report["graph"] == csr + tiles


def test_the_unpruned_matrix_is_stored_once_and_pruned_ones_per_layer(case):
    _, graph, model = case
    inference = GraphInference(CompressedModel(model), graph)
    base = inference.plan.base.nbytes()["device_total"]
    runs = inference.run([LayerSetting(edge_sparsity=0.5), LayerSetting(edge_sparsity=0.5)])
    pruned = [run.adjacency.nbytes()["device_total"] for run in runs]
    assert runs[0].adjacency is not runs[1].adjacency  # each layer prunes by its own messages
    assert pass_bytes([layer_bytes(r) for r in runs], [r.setting for r in runs])["graph"] == sum(pruned)
    runs = inference.run([LayerSetting(), LayerSetting(edge_sparsity=0.5)])
    assert pass_bytes([layer_bytes(r) for r in runs], [r.setting for r in runs])["graph"] == base + pruned[1]
    runs = inference.run([LayerSetting(), LayerSetting(fp16_fraction=1.0)])
    assert pass_bytes([layer_bytes(r) for r in runs], [r.setting for r in runs])["graph"] == base


def test_pass_bytes_refuses_settings_that_do_not_match_the_layers():
    layer = {"graph": 10, "features": 1, "weights": 1, "activations": 0}
    with pytest.raises(ValueError, match="one LayerSetting per layer"):
        pass_bytes([layer, layer], [LayerSetting()])
    with pytest.raises(ValueError, match="one LayerSetting per layer"):
        pass_bytes([layer, layer], [0.0, 0.0])  # sparsities alone cannot tell an FP32 layer's CSR from the tiles
    with pytest.raises(ValueError, match="at least one layer"):
        pass_bytes([], [])


def test_fp32_csr_bytes_counts_int32_pointers_and_ids_and_float32_values():
    assert fp32_csr_bytes(3, 5) == 4 * 4 + 5 * (4 + 4)
    assert fp32_csr_bytes(0, 0) == 4  # the one row pointer of an empty matrix
    # NumPy integers as the Python ints they equal: 4 * (int32 rows + 1) must not wrap around in int32 arithmetic
    assert fp32_csr_bytes(np.int32(600_000_000), np.int32(7)) == 4 * 600_000_001 + 56
    for rows, nnz in ((-3, 5), (3, -1), (2.5, 1), (3, 1.7), (True, 1), (3, float("nan"))):
        with pytest.raises(ValueError, match="must be an integer >= 0"):
            fp32_csr_bytes(rows, nnz)
