"""``train_fp32_on_snapshots``: the FP32 model trained on several snapshots in turn (``dste run --fp32-snapshots
training``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dste.experiments.pipeline import RunConfig
from dste.gnn import accuracy, make_model, train_fp32, train_fp32_on_snapshots
from dste.gnn.train import graph_tensors
from tests.gnn.test_compressed import _graph


@pytest.mark.parametrize("conv", ["gcn", "sage"])
def test_on_one_snapshot_it_is_the_single_graph_training(conv):
    graph = _graph(seed=3)
    one = make_model(graph, conv, hidden=16, seed=0)
    many = make_model(graph, conv, hidden=16, seed=0)
    expected = train_fp32(one, graph, epochs=40, lr=0.05, seed=0, patience=15)
    got = train_fp32_on_snapshots(many, [graph], epochs=40, lr=0.05, seed=0, patience=15)
    assert got["best_epoch"] == expected["best_epoch"] and got["epochs_run"] == expected["epochs_run"]
    for name, value in one.state_dict().items():
        torch.testing.assert_close(many.state_dict()[name], value, rtol=0, atol=0)


def test_a_model_trained_on_every_snapshot_scores_on_each():
    """Two snapshots whose features are flipped in sign: a model trained on the first alone fails the second, one
    trained on both in turn learns both (the classes stay linearly separable in each)."""
    first = _graph(seed=4)
    second = first.__class__(first.adj, -first.x, first.y, first.train_mask, first.val_mask, first.test_mask,
                             num_classes=2, name="flipped")
    alone = make_model(first, "gcn", hidden=16, seed=0)
    train_fp32(alone, first, epochs=80, lr=0.05, seed=0, patience=40)
    both = make_model(first, "gcn", hidden=16, seed=0)
    metrics = train_fp32_on_snapshots(both, [first, second], epochs=80, lr=0.05, seed=0, patience=40)

    def test_acc(model, graph):
        with torch.no_grad():
            return accuracy(model(graph_tensors(graph)[0], graph.adj, backend="cpu"), graph, "test")

    assert test_acc(alone, second) < 0.5 < 0.8 < test_acc(both, first) and test_acc(both, second) > 0.8
    assert metrics["test_acc"] == pytest.approx(np.mean([test_acc(both, first), test_acc(both, second)]))


def test_it_refuses_what_it_cannot_train_on():
    graph = _graph(seed=5)
    model = make_model(graph, "gcn", hidden=8, seed=0)
    with pytest.raises(ValueError, match="at least one snapshot"):
        train_fp32_on_snapshots(model, [])
    no_val = graph.__class__(graph.adj, graph.x, graph.y, graph.train_mask, np.zeros_like(graph.val_mask),
                             graph.test_mask, num_classes=2, name="no validation")
    with pytest.raises(ValueError, match="no snapshot has validation nodes"):
        train_fp32_on_snapshots(model, [no_val])
    with pytest.raises(ValueError, match="epochs"):
        train_fp32_on_snapshots(model, [graph], epochs=0)
    with pytest.raises(ValueError, match="fp32-snapshots"):
        RunConfig(fp32_snapshots="all")
