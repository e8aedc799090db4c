"""The controller's state features, action space and checkpoints refuse what they cannot read, in their own words
(a bool taken as a layer index, NaN features read as zeros, strings read as numbers were all accepted or failed in
NumPy's words before)."""

import fractions

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from dste.controller.actions import ActionSpace
from dste.controller.dqn import CheckpointError, DQNAgent
from dste.controller.state import MaskSummary, activation_features, graph_features, layer_features, mask_features


def _graph(n=40, seed=0):
    rng = np.random.default_rng(seed)
    adj = sp.random(n, n, density=0.1, random_state=seed, format="csr")
    adj = ((adj + adj.T) > 0).astype(np.float32)
    return sp.csr_matrix(adj), rng.normal(size=(n, 3)).astype(np.float32)


def test_layer_features_is_the_one_hot_of_an_integer_layer():
    np.testing.assert_array_equal(layer_features(np.int64(1), 2), np.eye(8, dtype=np.float32)[1])
    with pytest.raises(TypeError, match="layer must be an integer"):
        layer_features(True, 2)  # set every element of the one-hot before
    with pytest.raises(TypeError, match="layer must be an integer"):
        layer_features(0.5, 2)
    with pytest.raises(TypeError, match="num_layers must be an integer"):
        layer_features(0, "2")
    with pytest.raises(ValueError, match=r"layer must lie in \[0, 1\], got 2"):
        layer_features(2, 2)


@pytest.mark.parametrize("which", ["x", "prev_x"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_graph_features_refuse_non_finite_node_features(which, bad):
    adj, x = _graph()
    broken = x.copy()
    broken[3, 1] = bad
    args = {"x": broken, "prev_x": x} if which == "x" else {"x": x, "prev_x": broken}
    with pytest.raises(ValueError, match="features contain NaN or Inf"):
        graph_features(adj, args["x"], adj, args["prev_x"])


def test_graph_features_refuse_features_that_are_not_numbers():
    adj, x = _graph()
    with pytest.raises(TypeError, match="features must be a real-valued"):
        graph_features(adj, np.full(x.shape, "a"))
    with pytest.raises(TypeError, match="previous features must be a real-valued"):
        graph_features(adj, x, adj, x.astype(complex))


def test_activation_features_refuse_complex_and_missing_activations_and_read_tensors():
    h = np.random.default_rng(1).normal(size=(30, 5)).astype(np.float32)
    with pytest.raises(TypeError, match="activations must be a real-valued"):
        activation_features(h.astype(np.complex64))  # dropped the imaginary part with a warning before
    with pytest.raises(TypeError, match="activations must be a real-valued"):
        activation_features(None)
    tensor = torch.from_numpy(h).requires_grad_(True)
    np.testing.assert_array_equal(activation_features(tensor), activation_features(h))


def test_mask_features_refuse_strings_for_fractions_and_indices():
    space = ActionSpace()
    with pytest.raises(TypeError, match="budget_fraction must be a real number"):
        mask_features(MaskSummary(), space, -1, 0.0, budget_fraction="1")
    with pytest.raises(TypeError, match="upstream_latency_fraction must be a real number"):
        mask_features(MaskSummary(), space, -1, "0.1")
    with pytest.raises(TypeError, match="upstream_action must be an integer"):
        mask_features(MaskSummary(), space, True)


@pytest.mark.parametrize("levels, error", [
    ("0.5", "sparsity_levels must be a sequence of numbers"),
    (None, "sparsity_levels must be a sequence of numbers"),
    (0.5, "sparsity_levels must be a sequence of numbers"),
    (["0.0", "0.5"], "sparsity_levels entry must be a real number"),
    ([False, True], "sparsity_levels entry must be a real number"),
])
def test_action_space_levels_must_be_sequences_of_numbers(levels, error):
    with pytest.raises(TypeError, match=error):
        ActionSpace(sparsity_levels=levels)


def test_action_space_takes_numpy_levels():
    space = ActionSpace(sparsity_levels=np.array([0.0, 0.5]))
    assert space.sparsity_levels == (0.0, 0.5)


def test_a_checkpoint_holding_other_python_objects_is_refused_without_advising_to_unpickle_it(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"value": fractions.Fraction(1, 3)}, path)
    with pytest.raises(CheckpointError, match="holds Python objects beyond tensors") as refused:
        DQNAgent.load(path)
    assert "weights_only" not in str(refused.value)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="truncated or not a torch file"):
        DQNAgent.load(truncated)
