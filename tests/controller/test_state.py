import numpy as np
import pytest
import scipy.sparse as sp

from dste.controller.actions import ActionSpace
from dste.controller.state import (
    FEATURE_NAMES, STATE_DIM, MaskSummary, StateNormalizer, activation_features, build_state,
    graph_features, layer_features, mask_features,
)


def _random_graph(n=300, p=0.02, seed=0):
    rng = np.random.default_rng(seed)
    upper = sp.triu(sp.random(n, n, density=p, random_state=rng, format="csr"), k=1)
    adj = ((upper + upper.T) > 0).astype(np.float32).tocsr()
    x = rng.normal(size=(n, 12)).astype(np.float32)
    return adj, x


def test_state_is_64_finite_and_named():
    adj, x = _random_graph()
    adj2, x2 = _random_graph(seed=1)
    state = build_state(
        graph_features(adj2, x2, adj, x),
        activation_features(x2),
        mask_features(MaskSummary(action_index=5, sparsity=0.25, fp16_fraction=0.05), ActionSpace(), 3, 0.4),
        layer_features(1, 2),
    )
    assert state.shape == (STATE_DIM,) == (64,)
    assert state.dtype == np.float32
    assert np.isfinite(state).all()
    assert len(set(FEATURE_NAMES)) == 64
    assert np.abs(state).max() <= 5.0


def test_churn_features_see_the_change_and_vanish_without_it():
    adj, x = _random_graph()
    same = graph_features(adj, x, adj, x)
    assert same[13:18].tolist() == [0.0] * 5
    changed = adj.tolil()
    changed[0, 1] = changed[1, 0] = 1.0 - changed[0, 1]
    after = graph_features(changed.tocsr(), x * 1.1, adj, x)
    names = FEATURE_NAMES[:24]
    assert after[names.index("rows_changed_fraction")] == pytest.approx(2 / 300)
    assert after[names.index("feature_drift")] == pytest.approx(1.0, rel=1e-5)  # 10 x relative drift of 0.1


def test_window_density_matches_a_direct_count():
    adj, x = _random_graph(n=256)
    feats = graph_features(adj, x)
    densities = []
    for w in range(2):
        block = adj[w * 128:(w + 1) * 128]
        densities.append(block.nnz / (128 * np.unique(block.indices).size))
    assert feats[FEATURE_NAMES.index("window_density_mean")] == pytest.approx(10 * np.mean(densities), rel=1e-5)


def test_activation_quantization_error_responds_to_outliers():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(200, 16)).astype(np.float32)
    spiky = h.copy()
    spiky[3, 2] = 500.0
    plain, with_outlier = activation_features(h), activation_features(spiky)
    index = FEATURE_NAMES.index("act_int8_error_tensor") - 24
    assert with_outlier[index] > 5 * plain[index]


@pytest.mark.parametrize("call, message", [
    (lambda: graph_features(np.eye(3), np.zeros((3, 2))), "scipy.sparse"),
    (lambda: graph_features(sp.eye(3, format="csr"), np.zeros((4, 2))), "features must be"),
    (lambda: activation_features(np.full((2, 2), np.nan)), "NaN"),
    (lambda: activation_features(np.zeros((0, 3))), "non-empty"),
    (lambda: layer_features(2, 2), "layer must lie"),
    (lambda: layer_features(0, 9), "1..8 layers"),
    (lambda: build_state(np.zeros(3), np.zeros(16), np.zeros(16), np.zeros(8)), "graph features"),
    (lambda: mask_features(MaskSummary(action_index=99), ActionSpace()), "outside the action space"),
])
def test_bad_inputs_raise_clear_errors(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


def test_normalizer_standardises_and_keeps_constant_features_bounded():
    rng = np.random.default_rng(0)
    states = rng.normal(3.0, 2.0, size=(500, 64)).astype(np.float32)
    states[:, 10] = 7.0
    states[:, 11] = 7.0 + 0.01 * rng.normal(size=500)
    norm = StateNormalizer.fit(states)
    out = norm(states)
    assert np.allclose(out[:, :10].mean(axis=0), 0, atol=1e-5)
    assert np.allclose(out[:, :10].std(axis=0), 1, atol=1e-3)
    assert np.allclose(out[:, 10], 0)
    assert np.abs(out[:, 11]).max() < 0.2  # a feature that barely varies is not blown up to unit variance


def test_edges_added_is_counted_against_the_previous_snapshots_entries():
    # graph_features: the churn feature is 10 * (entries of adj not in prev_adj) / nnz(prev_adj). A ring of 12 nodes
    # (24 stored entries) gains one chord (2 entries): 10 * 2 / 24, not 10 * 2 / 26.
    from dste.controller.state import GRAPH_FEATURES

    n = 12
    ring = {(i, (i + 1) % n) for i in range(n)} | {((i + 1) % n, i) for i in range(n)}
    chord = ring | {(0, 6), (6, 0)}

    def csr(pairs):
        r, c = zip(*sorted(pairs))
        return sp.csr_matrix((np.ones(len(r)), (r, c)), shape=(n, n))

    x = np.ones((n, 3), np.float32)
    features = graph_features(csr(chord), x, prev_adj=csr(ring), prev_x=x)
    assert features[list(GRAPH_FEATURES).index("edges_added_fraction")] == pytest.approx(10 * 2 / 24, rel=1e-6)
