"""Training helper, compressed inference and memory footprint on a small two-community graph."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dste.data.graph import Graph, adjacency_from_pairs
from dste.gnn import CompressionConfig, accuracy, compressed_forward, make_model, memory_footprint, train_fp32


def _graph(n=256, features=32, seed=0):
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(np.int64)
    rows, cols = rng.integers(0, n, 6 * n), rng.integers(0, n, 6 * n)
    same = y[rows] == y[cols]
    kept = same | (rng.random(rows.size) < 0.1)  # mostly within-class edges: homophilous
    rows, cols = rows[kept], cols[kept]
    x = (rng.standard_normal((n, features)) + 0.5 * (2 * y[:, None] - 1)).astype(np.float32)
    split = rng.permutation(n)
    masks = [np.zeros(n, bool) for _ in range(3)]
    masks[0][split[:60]], masks[1][split[60:120]], masks[2][split[120:]] = True, True, True
    return Graph(adjacency_from_pairs(rows, cols, n), x, y, *masks, num_classes=2, name="two-communities")


@pytest.fixture(scope="module")
def trained():
    graph = _graph()
    model = make_model(graph, "gcn", hidden=16, seed=0)
    metrics = train_fp32(model, graph, epochs=60, lr=0.05, seed=0, patience=20)
    return graph, model, metrics


def test_training_learns_and_is_reproducible(trained):
    graph, model, metrics = trained
    assert metrics["test_acc"] > 0.8  # two separable communities: chance is 0.5
    again = make_model(graph, "gcn", hidden=16, seed=0)
    assert train_fp32(again, graph, epochs=60, lr=0.05, seed=0, patience=20) == metrics


def test_uncompressed_config_reproduces_the_fp32_model_exactly(trained):
    graph, model, _ = trained
    with torch.no_grad():
        reference = model(torch.from_numpy(graph.x), graph.adj)
    plain = CompressionConfig(compress_weights=False, x_hybrid=False)
    torch.testing.assert_close(compressed_forward(model, graph, [plain, plain]), reference, rtol=0, atol=0)


@pytest.mark.parametrize("conv", ["gcn", "sage"])
def test_int8_inference_stays_close_to_fp32(conv):
    graph = _graph(seed=1)
    model = make_model(graph, conv, hidden=16, seed=1)
    fp32 = train_fp32(model, graph, epochs=40, lr=0.05, seed=1, patience=20)
    int8 = CompressionConfig(fp16_threshold=float("inf"))
    logits = compressed_forward(model, graph, int8)
    assert abs(accuracy(logits, graph) - fp32["test_acc"]) <= 0.02
    with torch.no_grad():
        reference = model(torch.from_numpy(graph.x), graph.adj)
    # INT8 weights and activations: ~0.5% relative error per operand, a few % of the logit scale at most
    assert float((logits - reference).abs().max()) <= 0.05 * float(reference.abs().max())


def test_edge_sparsity_drops_edges_through_the_mask(trained):
    graph, model, _ = trained
    from dste.gnn.compressed import _masked_adjacency
    from dste.gnn import propagation_matrix

    full = propagation_matrix(graph.adj, graph.x.shape[0], "gcn")
    half = _masked_adjacency(full, 0.5)
    off_diagonal = full.nnz - graph.x.shape[0]
    assert half.nnz == full.nnz - off_diagonal // 2
    assert half.matrix.int8_values is full.matrix.int8_values  # values shared, only the mask changed


def test_memory_footprint_uses_real_bytes(trained):
    graph, model, _ = trained
    report = memory_footprint(model, graph, CompressionConfig())
    assert report["fp32"]["features"] == graph.x.nbytes
    assert report["fp32"]["weights"] == sum(p.numel() * 4 for p in model.parameters())
    assert report["compressed"]["features"] < report["fp32"]["features"] / 3  # INT8 rows + per-row scale
    for part in ("fp32", "compressed"):
        assert report[part]["total"] == sum(v for k, v in report[part].items() if k != "total")
    assert report["ratio"] == pytest.approx(report["fp32"]["total"] / report["compressed"]["total"])


def test_bad_configs_and_arguments_are_clear_errors(trained):
    graph, model, _ = trained
    with pytest.raises(ValueError, match="edge_sparsity must lie in"):
        CompressionConfig(edge_sparsity=1.0)
    with pytest.raises(ValueError, match="fp16_threshold must be a number"):
        CompressionConfig(fp16_threshold=float("nan"))
    with pytest.raises(ValueError, match="list of 2"):
        compressed_forward(model, graph, [CompressionConfig()])
    with pytest.raises(TypeError, match="TwoLayerGNN"):
        compressed_forward(torch.nn.Linear(2, 2), graph, CompressionConfig())
    with pytest.raises(TypeError, match="dste.data.Graph"):
        train_fp32(model, object())
    with pytest.raises(ValueError, match="epochs must be"):
        train_fp32(model, graph, epochs=0)
    with pytest.raises(ValueError, match="conv must be one of"):
        make_model(graph, "gat")
    with pytest.raises(ValueError, match="split must be"):
        accuracy(torch.zeros(graph.x.shape[0], 2), graph, "all")
