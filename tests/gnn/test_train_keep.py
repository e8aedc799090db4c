"""Which validation epoch ``train_fp32`` keeps: best accuracy (the default) or lowest loss (``keep="loss"``)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from dste.gnn import make_model, train_fp32, train_fp32_on_snapshots
from dste.gnn.train import KEEP_CRITERIA, graph_tensors
from tests.gnn.test_compressed import _graph


def _every_epoch(graph, epochs, lr, seed, model_seed=0, extra_loss=None):
    """A plain Adam loop of the same steps, independent of the trainer: per epoch the validation (accuracy, loss)
    and the weights after it. ``extra_loss(logits)`` (None: nothing) is added to the labelled loss."""
    model = make_model(graph, "gcn", hidden=16, seed=model_seed)
    x, y = graph_tensors(graph)
    train, val = torch.from_numpy(graph.train_mask), torch.from_numpy(graph.val_mask)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=5e-4)
    history = []
    torch.manual_seed(seed)
    for _ in range(epochs):
        model.train()
        optimizer.zero_grad()
        logits = model(x, graph.adj, backend="cpu")
        loss = F.cross_entropy(logits[train], y[train])
        (loss if extra_loss is None else loss + extra_loss(logits)).backward()
        optimizer.step()
        model.eval()
        with torch.no_grad():
            logits = model(x, graph.adj, backend="cpu")
        correct = (logits[val].argmax(dim=1) == y[val]).double().mean().item()
        history.append((correct, F.cross_entropy(logits[val], y[val]).item(), copy.deepcopy(model.state_dict())))
    return history


@pytest.mark.parametrize("keep", KEEP_CRITERIA)
def test_the_kept_epoch_is_the_best_by_its_criterion(keep):
    graph = _graph(seed=5)
    epochs = 25
    history = _every_epoch(graph, epochs, lr=0.05, seed=3)
    model = make_model(graph, "gcn", hidden=16, seed=0)
    metrics = train_fp32(model, graph, epochs=epochs, lr=0.05, seed=3, patience=epochs, keep=keep)
    accs, losses = np.array([h[0] for h in history]), np.array([h[1] for h in history])
    if keep == "loss":
        expected = int(np.argmin(losses))
    else:  # the first epoch of the best accuracy, ties to the lower loss
        best = np.flatnonzero(accs == accs.max())
        expected = int(best[np.argmin(losses[best])])
    assert metrics["best_epoch"] == expected + 1
    assert metrics["val_loss"] == pytest.approx(losses[expected], rel=1e-5)
    for name, value in history[expected][2].items():
        torch.testing.assert_close(model.state_dict()[name], value)


def test_the_two_criteria_keep_different_epochs_here():
    """Accuracy peaks before the loss bottoms out on this graph: the option changes what is kept."""
    graph = _graph(seed=5)
    kept = {keep: train_fp32(make_model(graph, "gcn", hidden=16, seed=0), graph, epochs=25, lr=0.05, seed=3,
                             patience=25, keep=keep)["best_epoch"] for keep in KEEP_CRITERIA}
    assert kept["accuracy"] != kept["loss"]


def test_without_validation_nodes_a_first_epoch_is_always_kept():
    """Without validation nodes the epochs are ranked by training loss; a loss above 1 on every epoch (seven
    classes, three epochs) once left no epoch kept and failed on restoring the weights."""
    graph = _graph(seed=2)
    y = np.arange(graph.num_nodes) % 7
    no_val = graph.__class__(graph.adj, graph.x, y, graph.train_mask, np.zeros_like(graph.val_mask), graph.test_mask,
                             num_classes=7, name="seven classes, no validation")
    for keep in KEEP_CRITERIA:
        metrics = train_fp32(make_model(no_val, "gcn", hidden=8, seed=0), no_val, epochs=3, lr=1e-4, keep=keep)
        assert 1 <= metrics["best_epoch"] <= 3 and metrics["val_loss"] > 1


def test_an_unknown_criterion_is_refused():
    graph = _graph(seed=1)
    for train in (train_fp32, lambda model, g, **kw: train_fp32_on_snapshots(model, [g], **kw)):
        with pytest.raises(ValueError, match="keep must be one of"):
            train(make_model(graph, "gcn", hidden=8, seed=0), graph, keep="val_acc")
