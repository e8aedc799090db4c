"""``train_fp32_distilled``: the labelled loss plus the KL divergence from an ensemble of teachers on every node."""

from __future__ import annotations

import pytest
import torch

from dste.gnn import make_model, teacher_seeds, train_fp32, train_fp32_distilled, train_new_fp32_model
from dste.gnn.train import graph_tensors
from tests.gnn.test_compressed import _graph
from tests.gnn.test_train_keep import _every_epoch


def _independent_student(graph, teachers, epochs, seed):
    """The same steps written out: teachers as train_fp32 trains them, their mean softmax, then the plain Adam loop of
    test_train_keep with KL(teachers' mean || model) over all nodes added to the labelled loss; per epoch the
    validation (accuracy, loss) and the weights after it."""
    x, _ = graph_tensors(graph)
    probabilities = []
    for teacher_seed in teacher_seeds(seed, teachers):
        teacher = make_model(graph, "gcn", hidden=16, seed=teacher_seed)
        train_fp32(teacher, graph, epochs=epochs, patience=epochs, seed=teacher_seed)
        with torch.no_grad():
            probabilities.append(torch.softmax(teacher(x, graph.adj, backend="cpu"), dim=1))
    target = sum(probabilities) / len(probabilities)

    def kl(logits):
        return (target * (torch.log(target) - torch.log_softmax(logits, dim=1))).sum(dim=1).mean()

    return _every_epoch(graph, epochs, lr=0.01, seed=seed, model_seed=seed, extra_loss=kl)


def _best_epoch(history) -> int:
    """Index of the epoch a trainer keeps: the best validation accuracy, then the lower validation loss."""
    return max(range(len(history)), key=lambda k: (history[k][0], -history[k][1]))


def test_the_distilled_model_is_the_best_validation_epoch_of_labels_plus_the_ensembles_kl():
    graph, epochs, seed = _graph(), 25, 3
    model = make_model(graph, "gcn", hidden=16, seed=seed)
    metrics = train_fp32_distilled(
        model, graph, lambda teacher_seed: make_model(graph, "gcn", hidden=16, seed=teacher_seed), teachers=2,
        epochs=epochs, patience=epochs, seed=seed)
    history = _independent_student(graph, 2, epochs, seed)
    best = _best_epoch(history)
    assert metrics["best_epoch"] == best + 1 and metrics["teachers"] == 2
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, history[best][2][name], rtol=1e-5, atol=1e-6)
    assert 0.0 <= metrics["teacher_test_acc"] <= 1.0


@pytest.mark.parametrize("teachers", [0, 2])
def test_a_new_model_is_built_with_its_seed_and_trained_plainly_or_distilled(teachers):
    graph, epochs, seed = _graph(), 20, 1
    model, metrics = train_new_fp32_model(graph, "gcn", 16, seed, teachers=teachers, epochs=epochs, patience=epochs)
    history = (_independent_student(graph, teachers, epochs, seed) if teachers
               else _every_epoch(graph, epochs, lr=0.01, seed=seed, model_seed=seed))
    best = _best_epoch(history)
    assert metrics["best_epoch"] == best + 1 and metrics.get("teachers", 0) == teachers
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, history[best][2][name], rtol=1e-5, atol=1e-6)
    for bad in (-1, True, 1.0):
        with pytest.raises(ValueError, match="teachers must be an int >= 0"):
            train_new_fp32_model(graph, "gcn", 16, seed, teachers=bad)


def test_teacher_seeds_are_nobody_elses():
    seen = set()
    for seed in range(50):
        seeds = teacher_seeds(seed, 8)
        assert len(set(seeds)) == 8 and min(seeds) >= 1000 and not seen & set(seeds)
        seen |= set(seeds)
    for bad in (0, -1, True, 2.0):
        with pytest.raises(ValueError, match="teachers"):
            teacher_seeds(0, bad)


def test_the_job_refuses_teachers_it_cannot_use():
    from dste.experiments.pipeline import RunConfig

    with pytest.raises(ValueError, match="fp32-teachers must be an integer >= 0"):
        RunConfig(fp32_teachers=-1)
    with pytest.raises(ValueError, match="does not combine with --fp32-snapshots training"):
        RunConfig(fp32_teachers=2, fp32_snapshots="training")
    assert RunConfig(fp32_teachers=3).fp32_teachers == 3


def test_the_job_distils_by_default_where_it_can():
    from dste.experiments.run_config import DEFAULT_FP32_TEACHERS, RunConfig

    assert DEFAULT_FP32_TEACHERS == 4 and RunConfig().fp32_teachers == DEFAULT_FP32_TEACHERS
    assert RunConfig(fp32_teachers=0).fp32_teachers == 0  # the published recipe, asked for
    # trained on every training snapshot in turn there is no single graph to distil on: plain training, not a refusal
    assert RunConfig(fp32_snapshots="training").fp32_teachers == 0
