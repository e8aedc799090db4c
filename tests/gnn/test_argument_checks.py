"""Bad arguments to the gnn room's public functions are refused with errors that name the argument and what is
allowed, before any work: never a silent wrong answer (an integer input casting the weights to int, a NaN scored as
an ordinary row, a truthy string read as True), never an error in NumPy's, torch's or SciPy's own words."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from dste.data import make_graph
from dste.gnn import (
    FP32_SETTING,
    CompressedWeight,
    GCNConv,
    LayerSetting,
    PropagationPlan,
    SAGEConv,
    accuracy,
    make_model,
    quantize_rows_by_fraction,
    row_sensitivity,
    teacher_seeds,
    train_fp32,
    train_fp32_distilled,
    train_fp32_on_snapshots,
)


@pytest.fixture(scope="module")
def weight():
    return CompressedWeight(torch.from_numpy(np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)))


# ---------------------------------------------------------------------------------------------- CompressedWeight
@pytest.mark.parametrize("dtype", [torch.long, torch.int32, torch.bool, torch.complex64])
def test_compressed_weight_refuses_a_non_float_input(weight, dtype):
    # an int64 h ran as h @ W with W cast to int64 (weights truncated); a bool h failed in torch's words
    with pytest.raises(TypeError, match=r"input h must be a floating-point tensor \(float32, float64.*got torch\."):
        weight(torch.ones(2, 8, dtype=dtype))


def test_compressed_weight_refuses_a_numpy_input(weight):
    with pytest.raises(TypeError, match=r"input h must be a torch tensor \[N, 8\], got ndarray.*torch.from_numpy"):
        weight(np.ones((2, 8), np.float32))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_compressed_weight_refuses_non_finite_input_as_dste_spmm_does(weight, bad, layout):
    h = torch.ones(5, 8)
    h[3, 2] = bad
    if layout == "sparse":
        h = h.to_sparse()
    with pytest.raises(ValueError, match="h contains NaN or Inf; the DSTE ops take finite values only"):
        weight(h)


def test_compressed_weight_takes_finite_input_whose_sum_overflows(weight):
    # the one-thread check sums h: a sum that overflows to Inf falls back to the exact check instead of refusing.
    # The product itself overflows; where a CPU's float kernel sums +Inf and -Inf partial sums (AVX2 here, not
    # AVX-512) both sides hold NaN, which torch.equal never calls equal, so NaN positions are compared as positions.
    h = torch.full((4, 8), 3e38)
    torch.testing.assert_close(weight(h), h @ weight.dense_effective(torch.float32), rtol=0, atol=0, equal_nan=True)
    h[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        weight(h)


def test_compressed_weight_valid_inputs_are_unchanged(weight):
    rng = np.random.default_rng(1)
    h = torch.from_numpy(rng.standard_normal((6, 8)).astype(np.float32))
    assert torch.equal(weight(h), h @ weight.dense_effective(torch.float32))
    assert torch.equal(weight(h.double()), h.double() @ weight.dense_effective(torch.float64))
    assert torch.equal(weight(h.half()), h.half() @ weight.dense_effective(torch.float16))
    assert torch.equal(weight(h.to_sparse()), h.to_sparse() @ weight.dense_effective(torch.float32))


@pytest.mark.parametrize(
    "fields, error, message",
    [
        ({"fp16_threshold": True}, TypeError, "fp16_threshold must be a real number, got bool"),
        ({"fp16_threshold": "0.1"}, TypeError, "fp16_threshold must be a real number, got str"),
        ({"fp16_threshold": float("nan")}, ValueError, "fp16_threshold must be finite"),
        ({"sparsity": "0.5"}, TypeError, "sparsity must be a real number, got str"),
        ({"sparsity": True}, TypeError, "sparsity must be a real number, got bool"),
        ({"sparsity": 1.0}, ValueError, r"sparsity must lie in \[0, 1\)"),
        ({"sparsity": float("nan")}, ValueError, r"sparsity must lie in \[0, 1\)"),
    ],
)
def test_compressed_weight_settings_must_be_real_numbers(fields, error, message):
    with pytest.raises(error, match=message):
        CompressedWeight(torch.ones(8, 4), **fields)
    with pytest.raises(error, match=message):
        GCNConv(8, 4).compress_weights(**fields)


def test_magnitude_keep_mask_refuses_a_bool_sparsity():
    from dste.gnn import magnitude_keep_mask

    with pytest.raises(TypeError, match="sparsity must be a real number, got bool"):
        magnitude_keep_mask(np.ones((4, 4)), False)
    assert magnitude_keep_mask(np.ones((4, 4)), np.float32(0.25)).sum() == 12


# ---------------------------------------------------------------------------------------------- LayerSetting
@pytest.mark.parametrize("value", ["no", "", 1, 0, None])
def test_layer_setting_fp32_must_be_a_bool(value):
    # "no" is truthy: the layer ran in FP32
    with pytest.raises(TypeError, match="LayerSetting.fp32 must be True or False"):
        LayerSetting(fp32=value)


@pytest.mark.parametrize("name", ["edge_sparsity", "channel_sparsity", "weight_sparsity", "fp16_fraction"])
@pytest.mark.parametrize("value", [True, False, np.bool_(True), "0.5", None])
def test_layer_setting_fractions_must_be_real_numbers(name, value):
    # True ran as 1.0 (every row FP16), False as 0.0
    with pytest.raises(TypeError, match=f"LayerSetting.{name} must be a real number"):
        LayerSetting(**{name: value})


def test_layer_setting_valid_fields_are_unchanged():
    assert LayerSetting(fp32=np.bool_(True)) == FP32_SETTING
    assert LayerSetting(fp16_fraction=1, edge_sparsity=np.float64(0.25)) == LayerSetting(fp16_fraction=1.0,
                                                                                         edge_sparsity=0.25)
    with pytest.raises(ValueError, match=r"LayerSetting.weight_sparsity must lie in \[0, 1\)"):
        LayerSetting(weight_sparsity=1)
    with pytest.raises(ValueError, match=r"LayerSetting.fp16_fraction must lie in \[0, 1\]"):
        LayerSetting(fp16_fraction=-0.1)


# ---------------------------------------------------------------------------------------------- row sensitivity
@pytest.mark.filterwarnings("ignore:overflow encountered in cast")  # NumPy's, casting 1e300 to float32
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e300])
def test_row_sensitivity_refuses_non_finite_rows(bad):
    # a NaN row scored 0, as an all-zero row does, and so was never kept in FP16; 1e300 is Inf in float32
    x = np.ones((3, 4))
    x[1, 0] = bad
    with pytest.raises(ValueError, match="row_sensitivity: x contains NaN or Inf"):
        row_sensitivity(x)


@pytest.mark.parametrize("x", [np.ones(3), np.ones((2, 3, 4)), np.float32(1.0)])
def test_row_sensitivity_needs_a_2d_array(x):
    with pytest.raises(ValueError, match=r"row_sensitivity: x must be a 2-D array \[rows, features\], got shape"):
        row_sensitivity(x)


@pytest.mark.parametrize("x", [np.array([["a", "b"]]), np.ones((2, 2), bool), np.ones((2, 2), complex)])
def test_row_sensitivity_needs_real_numbers(x):
    with pytest.raises(TypeError, match="row_sensitivity: x must hold real numbers"):
        row_sensitivity(x)


def test_row_sensitivity_of_valid_rows_is_unchanged():
    # the documented rule, in float64 from the float32 values: rms INT8 error over the mean |x|
    x = np.random.default_rng(2).standard_normal((40, 9)).astype(np.float32)
    scale = np.abs(x).max(axis=1, keepdims=True) / np.float32(127)
    error = x.astype(np.float64) - np.clip(np.rint(x / scale), -128, 127) * scale
    expected = np.sqrt((error ** 2).mean(axis=1)) / np.abs(x.astype(np.float64)).mean(axis=1)
    np.testing.assert_allclose(row_sensitivity(x), expected, rtol=1e-12)  # same operations: float64 rounding only
    assert np.array_equal(row_sensitivity(x.astype(np.float64)), row_sensitivity(x))
    assert row_sensitivity(np.zeros((3, 0))).tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("fraction", [True, "0.5", None])
def test_quantize_rows_by_fraction_needs_a_real_fraction(fraction):
    with pytest.raises(TypeError, match="fraction must be a real number"):
        quantize_rows_by_fraction(np.ones((4, 3), np.float32), fraction)


# ---------------------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def graph():
    return make_graph("cora-like", seed=0, num_nodes=300, num_edges=600, num_features=20, num_val=40, num_test=60,
                      community_size=(16, 32))


@pytest.mark.parametrize(
    "logits, error, message",
    [
        (torch.full((300, 7), float("nan")), ValueError, "logits contain NaN or Inf"),
        (torch.zeros(300, 7).index_fill_(1, torch.tensor([3]), float("inf")), ValueError, "NaN or Inf"),
        # one column: every argmax is class 0, scored as that class's share
        (torch.zeros(300, 1), ValueError, r"logits must be \[num_nodes, num_classes\] = \[300, 7\].*got \[300, 1\]"),
        (torch.zeros(300, 8), ValueError, r"= \[300, 7\].*got \[300, 8\]"),
        (torch.zeros(299, 7), ValueError, r"= \[300, 7\].*got \[299, 7\]"),
        (torch.zeros(300), ValueError, r"= \[300, 7\].*got \[300\]"),
        (np.zeros((300, 7)), TypeError, r"logits must be a torch tensor \[num_nodes, num_classes\] = \[300, 7\]"),
        (torch.zeros(300, 7, dtype=torch.long), TypeError, "logits must be a floating-point tensor"),
    ],
)
def test_accuracy_refuses_logits_it_would_score_wrongly(graph, logits, error, message):
    with pytest.raises(error, match=message):
        accuracy(logits, graph)


def test_accuracy_of_valid_logits_is_unchanged(graph):
    logits = torch.from_numpy(np.random.default_rng(3).standard_normal((300, 7)).astype(np.float32))
    for split in ("train", "val", "test"):
        mask = getattr(graph, f"{split}_mask")
        expected = float(np.mean(logits.numpy()[mask].argmax(axis=1) == graph.y[mask]))
        assert accuracy(logits, graph, split) == pytest.approx(expected, abs=1e-7)  # float32 mean of 0/1 values
    with pytest.raises(TypeError, match="graph must be a dste.data.Graph"):
        accuracy(logits, object())


@pytest.mark.parametrize(
    "settings, error, message",
    [
        ({"epochs": True}, TypeError, "epochs must be an integer, got bool"),
        ({"epochs": 2.0}, TypeError, "epochs must be an integer, got float"),
        ({"patience": True}, TypeError, "patience must be an integer, got bool"),
        ({"patience": 0}, ValueError, "patience must be a positive int, got 0"),
        ({"lr": "0.01"}, TypeError, "lr must be a real number, got str"),
        ({"lr": float("inf")}, ValueError, "lr must be finite"),
        ({"lr": 0.0}, ValueError, "lr must be > 0"),
        ({"weight_decay": -1e-4}, ValueError, "weight_decay must lie in"),
        ({"weight_decay": True}, TypeError, "weight_decay must be a real number"),
        ({"seed": "a"}, TypeError, "seed must be an integer, got str"),
        ({"seed": 1.5}, TypeError, "seed must be an integer, got float"),
        ({"progress": "no"}, TypeError, "progress must be True or False"),
    ],
)
def test_trainers_refuse_arguments_of_the_wrong_kind(graph, settings, error, message):
    model = make_model(graph, hidden=8)
    with pytest.raises(error, match=message):
        train_fp32(model, graph, **settings)
    with pytest.raises(error, match=message):
        train_fp32_on_snapshots(model, [graph], **settings)
    with pytest.raises(error, match=message):  # refused before any teacher is trained
        train_fp32_distilled(model, graph, lambda seed: pytest.fail("a teacher was built"), teachers=1, **settings)


def test_trainers_and_make_model_need_a_model_and_a_graph(graph):
    with pytest.raises(TypeError, match=r"model must be a torch.nn.Module .*got NoneType"):
        train_fp32(None, graph)
    with pytest.raises(TypeError, match=r"model must be a torch.nn.Module .*got NoneType"):
        train_fp32_on_snapshots(None, [graph])
    with pytest.raises(TypeError, match=r"graph must be a dste.data.Graph \(missing .x\), got NoneType"):
        make_model(None)
    with pytest.raises(TypeError, match="seed must be an integer, got float 1.5"):
        make_model(graph, seed=1.5)
    with pytest.raises(TypeError, match="dropout must be a real number, got str"):
        make_model(graph, dropout="0.5")
    # an integer seed of any integer type draws the same weights
    same = make_model(graph, seed=np.int64(3)).state_dict()
    assert all(torch.equal(same[k], v) for k, v in make_model(graph, seed=3).state_dict().items())


def test_distilled_teacher_accuracy_takes_a_class_of_probability_zero(graph):
    # the ensemble's log-probability of a class no teacher gives any mass is -Inf, which accuracy refuses: the
    # trainer scores it as the lowest float instead, the same argmax
    class Confident(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.logits = torch.nn.Parameter(torch.zeros(7))

        def forward(self, x, adj, backend=None):
            never = torch.zeros(7)
            never[1] = -1e4  # exp underflows to 0
            return (self.logits + never).expand(x.shape[0], 7)

    metrics = train_fp32_distilled(make_model(graph, hidden=8), graph, lambda seed: Confident(), teachers=1,
                                   epochs=2, patience=2)
    teacher = Confident()
    train_fp32(teacher, graph, epochs=2, patience=2, seed=teacher_seeds(0, 1)[0])
    with torch.no_grad():
        predicted = teacher(torch.zeros(300, 20), graph.adj).argmax(1).numpy()
    for split in ("val", "test"):
        mask = getattr(graph, f"{split}_mask")
        assert metrics[f"teacher_{split}_acc"] == pytest.approx(float(np.mean(predicted[mask] == graph.y[mask])),
                                                                abs=1e-7)


# ---------------------------------------------------------------------------------------------- adjacency
def _corrupt(column: int, form: str):
    """A 30-node binary adjacency whose first stored column id is ``column``, in SciPy CSR or a torch sparse form."""
    adjacency = sp.random(30, 30, density=0.1, format="csr", random_state=0)
    adjacency.data[:] = 1.0
    adjacency.indices[0] = column
    if form == "scipy":
        return adjacency
    crow = torch.from_numpy(adjacency.indptr.astype(np.int64))
    col = torch.from_numpy(adjacency.indices.astype(np.int64))
    # torch checks no invariants unless asked: such a tensor is built without a word
    if form == "torch_csr":
        return torch.sparse_csr_tensor(crow, col, torch.ones(adjacency.nnz), (30, 30), check_invariants=False)
    rows = torch.repeat_interleave(torch.arange(30), crow.diff())
    return torch.sparse_coo_tensor(torch.stack([rows, col]), torch.ones(adjacency.nnz), (30, 30),
                                   check_invariants=False)


@pytest.mark.parametrize("form", ["scipy", "torch_csr", "torch_coo"])
@pytest.mark.parametrize("column", [-1, 30, 35])
@pytest.mark.parametrize("layer_class", [GCNConv, SAGEConv])
def test_layers_refuse_an_adjacency_with_ids_outside_its_shape(layer_class, column, form):
    # SciPy's "negative axis 1 index: -1" / "axis 1 index 35 exceeds matrix dimension 30" before
    with pytest.raises(ValueError, match=r"adjacency has indices outside its shape \(30, 30\) \(or negative\)"):
        layer_class(8, 4)(torch.randn(30, 8), _corrupt(column, form))
    with pytest.raises(ValueError, match=r"adjacency has indices outside its shape \(30, 30\)"):
        PropagationPlan.build(_corrupt(column, form), layer_class.norm)


def test_layers_refuse_an_adjacency_with_a_corrupt_indptr():
    adjacency = _corrupt(0, "scipy")
    adjacency.indptr[3] = adjacency.nnz + 5
    with pytest.raises(ValueError, match="adjacency: its CSR indptr"):
        GCNConv(8, 4)(torch.randn(30, 8), adjacency)


def test_a_non_finite_weight_product_is_blamed_on_what_made_it():
    # the sparse op's own message, "X contains NaN or Inf", named an operand the caller never passed
    from dste.gnn import GCNConv

    edges = torch.tensor([[0, 1, 2], [1, 2, 0]])
    layer = GCNConv(4, 2)
    with torch.no_grad():
        layer.lin.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="GCNConv: its weight holds NaN or Inf"):
        layer(torch.ones(3, 4), edges)
    with torch.no_grad():
        layer.lin.weight.fill_(1e30)
    with pytest.raises(ValueError, match=r"GCNConv: x @ weight.T is not finite"):
        layer(torch.full((3, 4), 1e30), edges)
    with torch.no_grad():
        layer.lin.weight.fill_(0.5)
    assert torch.isfinite(layer(torch.ones(3, 4), edges)).all()
