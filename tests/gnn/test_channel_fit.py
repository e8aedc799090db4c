"""The least-squares re-fit of a layer's kept input channels (dste.gnn.channel_fit), against NumPy's lstsq on the
stacked ridge system, and its effect on a compressed model's output."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dste.data.graph import Graph, adjacency_from_pairs
from dste.gnn import CompressedModel, GraphInference, LayerSetting, make_model, train_fp32
from dste.gnn.channel_fit import CHANNEL_FIT_MAX_CHANNELS, CHANNEL_FIT_RIDGE, compensated_rows, gram_matrix


def _stacked_ridge(weight, kept, h, ridge):
    """Independent reference: argmin ||h_K W' - h W||^2 + lam ||W' - W_K||^2 as one least-squares problem,
    [h_K; sqrt(lam) I] W' = [h W; sqrt(lam) W_K], solved by NumPy's SVD-based lstsq in float64."""
    h = h.astype(np.float64)
    weight = weight.astype(np.float64)
    h_kept = h[:, kept]
    lam = ridge * float(np.mean(np.sum(h_kept**2, axis=0)))
    lhs = np.vstack([h_kept, np.sqrt(lam) * np.eye(kept.size)])
    rhs = np.vstack([h @ weight, np.sqrt(lam) * weight[kept]])
    return np.linalg.lstsq(lhs, rhs, rcond=None)[0]


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(8, 60),
    width=st.integers(2, 24),
    out=st.integers(1, 6),
    keep_share=st.floats(0.1, 0.9),
    ridge=st.sampled_from([1e-3, CHANNEL_FIT_RIDGE, 1.0]),
    seed=st.integers(0, 2**31 - 1),
)
def test_matches_the_stacked_least_squares_reference(n, width, out, keep_share, ridge, seed):
    rng = np.random.default_rng(seed)
    # correlated columns (a low-rank part plus noise), some all-zero, as bag-of-words inputs have
    h = (rng.standard_normal((n, 3)) @ rng.standard_normal((3, width)) + 0.3 * rng.standard_normal((n, width)))
    h[:, rng.random(width) < 0.15] = 0.0
    weight = rng.standard_normal((width, out)).astype(np.float32)
    kept = np.sort(rng.choice(width, size=max(1, int(keep_share * width)), replace=False))
    fitted = compensated_rows(weight, kept, gram_matrix(h.astype(np.float32)), ridge=ridge)
    assert fitted.dtype == np.float32 and fitted.shape == (kept.size, out)
    if not np.any(h[:, kept]):
        np.testing.assert_array_equal(fitted, weight[kept])  # nothing to fit on: the trained rows
        return
    reference = _stacked_ridge(weight, kept, h.astype(np.float32), ridge)
    # float32 output of a float64 solve; the normal equations square the condition number the ridge bounds by
    # (1 + 1/ridge) times the kept energy's spread, so compare on the scale of the reference
    np.testing.assert_allclose(fitted, reference, rtol=0, atol=2e-3 * max(1.0, float(np.abs(reference).max())))


def test_recovers_a_dropped_channel_that_is_a_combination_of_kept_ones():
    rng = np.random.default_rng(0)
    kept_part = rng.standard_normal((200, 5))
    h = np.hstack([kept_part, kept_part @ np.array([[1.0], [-2.0], [0.5], [0.0], [0.0]])]).astype(np.float32)
    weight = rng.standard_normal((6, 3)).astype(np.float32)
    kept = np.arange(5)
    plain_error = np.abs(h[:, kept] @ weight[kept] - h @ weight).max()
    fitted_error = np.abs(h[:, kept] @ compensated_rows(weight, kept, gram_matrix(h), ridge=1e-8) - h @ weight).max()
    assert plain_error > 1.0  # the dropped channel carried real signal
    assert fitted_error < 1e-4 * plain_error


def test_zero_kept_channels_and_every_channel_kept_give_the_trained_rows():
    rng = np.random.default_rng(1)
    h = rng.standard_normal((30, 6)).astype(np.float32)
    h[:, 2] = 0.0
    weight = rng.standard_normal((6, 4)).astype(np.float32)
    fitted = compensated_rows(weight, np.array([0, 2, 4]), gram_matrix(h))
    np.testing.assert_array_equal(fitted[1], weight[2])  # a channel the graph never sets cannot absorb anything
    assert not np.array_equal(fitted[0], weight[0])
    np.testing.assert_array_equal(compensated_rows(weight, np.arange(6), gram_matrix(h)), weight)
    zeros = gram_matrix(np.zeros_like(h))
    np.testing.assert_array_equal(compensated_rows(weight, np.array([1, 3]), zeros), weight[[1, 3]])


def test_layers_wider_than_the_limit_keep_their_trained_rows(monkeypatch):
    import dste.gnn.execution as execution

    graph = _graph(features=12)
    model = make_model(graph, "gcn", hidden=8, seed=0)
    monkeypatch.setattr(execution, "CHANNEL_FIT_MAX_CHANNELS", 11)
    setting = LayerSetting(channel_sparsity=0.5)
    inference = GraphInference(CompressedModel(model), graph)
    kept = inference.kept_channels(0, 0.5)
    np.testing.assert_array_equal(inference.weight(0, 0, setting, kept)[1],
                                  CompressedModel(model).weight(0, 0, setting, kept)[1])


def test_the_gram_matrix_is_the_float64_product_on_both_paths():
    rng = np.random.default_rng(4)
    dense = rng.standard_normal((50, 9)).astype(np.float32)
    sparse = np.where(rng.random((50, 9)) < 0.05, dense, 0).astype(np.float32)
    for h in (dense, sparse):
        reference = h.astype(np.float64).T @ h.astype(np.float64)
        got = gram_matrix(h)
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, reference, rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(got, got.T)
    with pytest.raises(ValueError, match=r"\[n, in\]"):
        gram_matrix(np.ones(3, np.float32))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kept": np.array([2, 1])}, "sorted, distinct"),
        ({"kept": np.array([0, 9])}, "sorted, distinct"),
        ({"kept": np.array([], np.int64)}, "at least one"),
        ({"gram": np.ones((3, 3))}, "Gram matrix"),
        ({"ridge": 0.0}, "ridge must be > 0"),
        ({"ridge": float("nan")}, "ridge must be > 0"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, message):
    arguments = {"weight": np.ones((4, 2), np.float32), "kept": np.array([0, 2]), "gram": np.eye(4)}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        compensated_rows(**arguments)


def _graph(n=300, features=48, seed=0):
    """Two classes whose signal sits in a few latent factors spread over many correlated feature columns."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(np.int64)
    latent = rng.standard_normal((n, 4)) + 1.0 * (2 * y[:, None] - 1)
    x = (latent @ rng.standard_normal((4, features)) + 0.5 * rng.standard_normal((n, features))).astype(np.float32)
    rows, cols = rng.integers(0, n, 5 * n), rng.integers(0, n, 5 * n)
    kept = (y[rows] == y[cols]) | (rng.random(rows.size) < 0.1)
    split = rng.permutation(n)
    masks = [np.zeros(n, bool) for _ in range(3)]
    masks[0][split[:60]], masks[1][split[60:120]], masks[2][split[120:]] = True, True, True
    return Graph(adjacency_from_pairs(rows[kept], cols[kept], n), x, y, *masks, num_classes=2, name="latent")


@pytest.mark.parametrize("kind", ["gcn", "sage"])
def test_the_fit_brings_a_channel_pruned_model_closer_to_fp32(kind):
    graph = _graph()
    model = make_model(graph, kind, hidden=16, seed=0)
    train_fp32(model, graph, epochs=60, lr=0.05, seed=0, patience=20)
    with torch.no_grad():
        reference = model(torch.from_numpy(graph.x), graph.adj).numpy()
    compressed = CompressedModel(model)
    setting = [LayerSetting(channel_sparsity=0.75, fp16_fraction=1.0)] * 2
    errors = {}
    for fit in (False, True):
        inference = GraphInference(compressed, graph, channel_fit=fit)
        logits = inference.run(setting)[-1].output
        errors[fit] = float(np.sqrt(np.mean((logits - reference) ** 2)))
        # the torch-op execution carries the same re-fitted weights
        np.testing.assert_allclose(inference.forward(setting).numpy(), logits, rtol=0,
                                   atol=1e-3 * float(np.abs(logits).max()))
    assert errors[True] < 0.5 * errors[False]


def test_sparse_bag_of_words_inputs_take_the_sparse_products_and_fit_alike():
    rng = np.random.default_rng(3)
    h = (rng.random((400, 60)) < 0.04).astype(np.float32)  # binary, 4 % set: below SPARSE_INPUT_DENSITY
    h[:, 7] = h[:, 3]  # a dropped word that always co-occurs with a kept one
    weight = rng.standard_normal((60, 5)).astype(np.float32)
    kept = np.setdiff1d(np.arange(60), [7, 11, 12, 40])
    fitted = compensated_rows(weight, kept, gram_matrix(h))
    np.testing.assert_allclose(fitted, _stacked_ridge(weight, kept, h, CHANNEL_FIT_RIDGE), rtol=0, atol=1e-4)


def test_graphs_with_the_same_layer_input_share_one_fit(monkeypatch):
    import dste.gnn.execution as execution

    graph = _graph()
    model = make_model(graph, "gcn", hidden=16, seed=0)
    calls = []
    original = execution.compensated_rows
    monkeypatch.setattr(execution, "compensated_rows", lambda *a, **k: calls.append(1) or original(*a, **k))
    compressed = CompressedModel(model)
    setting = [LayerSetting(channel_sparsity=0.5), LayerSetting()]
    first = GraphInference(compressed, graph).run(setting)[-1].output
    assert len(calls) == 1
    again = GraphInference(compressed, graph).run(setting)[-1].output  # another snapshot, same features
    assert len(calls) == 1
    np.testing.assert_array_equal(again, first)
    moved = Graph(graph.adj, graph.x * 1.5, graph.y, graph.train_mask, graph.val_mask, graph.test_mask,
                  num_classes=2, name="moved")
    GraphInference(compressed, moved).run(setting)
    assert len(calls) == 2  # other features: fitted on their own
