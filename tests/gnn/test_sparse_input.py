"""Wide bag-of-words features as a sparse COO input: input dropout over the stored values, the layers' products on
the nonzeros, and the trainers' choice of that path (``dste.gnn.train.training_tensors``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dste.data import Graph
from dste.data.graph import adjacency_from_pairs
from dste.gnn import make_model, train_fp32
from dste.gnn import train as train_module
from dste.gnn.layers import GCNConv
from dste.gnn.models import input_dropout
from dste.gnn.train import graph_tensors, training_tensors
from tests.gnn.test_compressed import _graph


def _bag_of_words_graph(n=600, features=400, classes=4, words=10, seed=0):
    """A homophilous graph whose features are 0/1 word indicators, each class favouring its own 40 words."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    rows, cols = rng.integers(0, n, 8 * n), rng.integers(0, n, 8 * n)
    kept = (y[rows] == y[cols]) | (rng.random(rows.size) < 0.15)
    topics = rng.integers(0, features, (classes, 40))
    x = np.zeros((n, features), np.float32)
    for i in range(n):
        own = rng.random(words) < 0.6
        x[i, np.where(own, topics[y[i]][rng.integers(0, 40, words)], rng.integers(0, features, words))] = 1.0
    split = rng.permutation(n)
    masks = [np.zeros(n, bool) for _ in range(3)]
    masks[0][split[:80]], masks[1][split[80:280]], masks[2][split[280:]] = True, True, True
    return Graph(adjacency_from_pairs(rows[kept], cols[kept], n), x, y, *masks, num_classes=classes, name="words")


def test_input_dropout_draws_over_the_stored_values_only():
    rng = np.random.default_rng(1)
    dense = torch.from_numpy((rng.random((400, 300)) < 0.05) * rng.uniform(1, 2, (400, 300))).float()
    x = dense.to_sparse()
    torch.manual_seed(0)
    dropped = input_dropout(x, 0.5, True)
    assert dropped.is_sparse
    out, stored = dropped.to_dense(), dense != 0
    assert not out[~stored].any(), "a zero became nonzero"
    kept = out[stored] != 0
    assert torch.allclose(out[stored][kept], 2.0 * dense[stored][kept])  # scaled by 1 / (1 - p)
    share = float(kept.float().mean())
    tolerance = 5 * np.sqrt(0.25 / int(stored.sum()))
    assert abs(share - 0.5) < tolerance, f"kept {share:.4f} of the stored values, expected 0.5 +- {tolerance:.4f}"
    assert torch.equal(input_dropout(x, 0.5, False).to_dense(), dense)


@pytest.mark.parametrize("kind", ["gcn", "sage"])
def test_sparse_and_dense_inputs_give_the_same_logits_and_gradients(kind):
    graph = _bag_of_words_graph(n=300, features=200)
    x, y = graph_tensors(graph)
    grads = []
    for features in (x, x.to_sparse()):
        model = make_model(graph, kind, hidden=16, seed=3)
        model.dropout = 0.0  # the two paths draw dropout from different streams; without it they must agree
        model.train()
        logits = model(features, graph.adj, backend="cpu")
        torch.nn.functional.cross_entropy(logits, y).backward()
        grads.append((logits.detach(), [p.grad.clone() for p in model.parameters()]))
    (dense_logits, dense_grads), (sparse_logits, sparse_grads) = grads
    assert torch.allclose(sparse_logits, dense_logits, atol=1e-5)
    for a, b in zip(sparse_grads, dense_grads):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["gcn", "sage"])
def test_compressed_layers_take_a_sparse_input_densified(kind):
    graph = _graph()
    model = make_model(graph, kind, hidden=16, seed=0)
    for conv in model.convs:
        conv.compress_weights()
    model.eval()
    x, _ = graph_tensors(graph)
    with torch.no_grad():
        assert torch.equal(model(x.to_sparse(), graph.adj), model(x, graph.adj))


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta state")
def test_layers_refuse_other_sparse_layouts():
    layer = GCNConv(8, 4)
    x = torch.ones(5, 8).to_sparse_csr()
    with pytest.raises(TypeError, match="dense or sparse COO"):
        layer(x, np.zeros((2, 0), dtype=np.int64))


def test_the_trainers_take_the_sparse_path_only_for_wide_sparse_features(monkeypatch):
    words = _bag_of_words_graph(n=300, features=200)  # 300 x 200 = 60,000 values, 5 % of them nonzero at most
    assert not training_tensors(words)[0].is_sparse, "below SPARSE_INPUT_MIN_VALUES the dense path stays"
    monkeypatch.setattr(train_module, "SPARSE_INPUT_MIN_VALUES", 60_000)
    x, y = training_tensors(words)
    assert x.is_sparse and torch.equal(x.to_dense(), graph_tensors(words)[0])
    assert torch.equal(y, graph_tensors(words)[1])
    gaussian = _graph(n=2000, features=32)  # 64,000 values, all nonzero
    assert not training_tensors(gaussian)[0].is_sparse, "dense features stay dense whatever their size"


def test_training_on_the_sparse_path_reaches_the_dense_paths_accuracy(monkeypatch):
    graph = _bag_of_words_graph()
    scores = {}
    for path, threshold in (("dense", train_module.SPARSE_INPUT_MIN_VALUES), ("sparse", 1)):
        monkeypatch.setattr(train_module, "SPARSE_INPUT_MIN_VALUES", threshold)
        accuracies = []
        for seed in range(3):
            model = make_model(graph, "gcn", hidden=32, seed=seed)
            accuracies.append(train_fp32(model, graph, epochs=100, seed=seed, patience=30)["test_acc"])
        scores[path] = float(np.mean(accuracies))
    assert scores["dense"] > 0.6, f"the task should be learnable (4 classes): dense path {scores['dense']:.3f}"
    # 320 test nodes: one seed's accuracy varies by ~2.5 points; the mean of three by ~1.5 per path.
    assert abs(scores["sparse"] - scores["dense"]) < 0.05, scores
