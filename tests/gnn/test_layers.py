"""GCNConv / SAGEConv against plain dense PyTorch layers on the same weights, and every adjacency form."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from dste.bindings import DSTETensor
from dste.gnn import GCNConv, SAGEConv, propagation_matrix, to_scipy_adjacency

# fp32 layers against a float64 dense reference; inputs O(1), sums of <= ~30 neighbour terms and 16-32
# features: rounding stays below 1e-5 absolute, so 1e-5 separates "exact" from any normalisation error.
TOL = dict(rtol=1e-5, atol=1e-5)


def _graph(n=300, density=0.02, seed=0):
    rng = np.random.default_rng(seed)
    a = sp.random(n, n, density=density, random_state=rng, format="csr")
    a = ((a + a.T) > 0).astype(np.float32).tolil()
    a.setdiag(0)
    a[5, :] = 0  # an isolated node
    a[:, 5] = 0
    return a.tocsr()


def _dense_gcn(adj: np.ndarray, x, weight, bias):
    a_hat = adj.copy()
    np.fill_diagonal(a_hat, 1.0)
    d = a_hat.sum(axis=1)
    norm = a_hat / np.sqrt(d)[:, None] / np.sqrt(d)[None, :]
    return norm @ (x @ weight.T) + bias


def _dense_sage(adj: np.ndarray, x, w_l, b_l, w_r):
    degree = adj.sum(axis=1, keepdims=True)
    mean = np.divide(adj @ x, degree, out=np.zeros((adj.shape[0], x.shape[1])), where=degree > 0)
    return mean @ w_l.T + b_l + x @ w_r.T


def _np(t):
    return t.detach().double().numpy()


def test_gcn_matches_dense_reference():
    adj = _graph()
    x = torch.randn(adj.shape[0], 16)
    layer = GCNConv(16, 8)
    torch.nn.init.normal_(layer.bias)
    expected = _dense_gcn(adj.toarray().astype(np.float64), _np(x), _np(layer.lin.weight), _np(layer.bias))
    np.testing.assert_allclose(_np(layer(x, adj, backend="cpu")), expected, **TOL)


def test_sage_matches_dense_reference():
    adj = _graph(seed=1)
    x = torch.randn(adj.shape[0], 16)
    layer = SAGEConv(16, 8)
    torch.nn.init.normal_(layer.lin_l.bias)
    expected = _dense_sage(
        adj.toarray().astype(np.float64), _np(x), _np(layer.lin_l.weight), _np(layer.lin_l.bias), _np(layer.lin_r.weight)
    )
    np.testing.assert_allclose(_np(layer(x, adj, backend="cpu")), expected, **TOL)


def test_layer_gradients_match_dense_reference():
    adj = _graph(n=150, density=0.05, seed=2)
    x = torch.randn(adj.shape[0], 6, requires_grad=True)
    layer = GCNConv(6, 4)
    layer(x, adj, backend="cpu").square().sum().backward()
    dense = torch.tensor(adj.toarray())
    a_hat = dense.clone().fill_diagonal_(1.0)
    d = a_hat.sum(1)
    norm = a_hat / d.sqrt()[:, None] / d.sqrt()[None, :]
    x_ref = x.detach().clone().requires_grad_(True)
    w_ref = layer.lin.weight.detach().clone().requires_grad_(True)
    (norm @ (x_ref @ w_ref.T) + layer.bias.detach()).square().sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(layer.lin.weight.grad, w_ref.grad, rtol=1e-4, atol=1e-5)


def _all_forms(adj: sp.csr_matrix):
    coo = adj.tocoo()
    edge_index = torch.tensor(np.stack([coo.col, coo.row]), dtype=torch.long)  # (source j, target i)
    duplicated = torch.cat([edge_index, edge_index[:, :10]], dim=1)
    dense = torch.tensor(adj.toarray())
    return {
        "scipy_csr": adj,
        "scipy_coo": coo,
        "edge_index": edge_index,
        "edge_index_with_duplicates": duplicated,
        "torch_coo": dense.to_sparse(),
        "torch_csr": dense.to_sparse_csr(),
    }


@pytest.mark.parametrize("layer_cls, norm", [(GCNConv, "gcn"), (SAGEConv, "mean")])
def test_every_adjacency_form_gives_the_same_result(layer_cls, norm):
    adj = _graph(n=200, density=0.03, seed=3)
    x = torch.randn(200, 12)
    layer = layer_cls(12, 5)
    reference = layer(x, adj, backend="cpu")
    encoded = propagation_matrix(adj, 200, norm)
    forms = _all_forms(adj) | {"dste_tensor": encoded, "dste_matrix": encoded.matrix}
    for name, form in forms.items():
        torch.testing.assert_close(layer(x, form, backend="cpu"), reference, rtol=1e-6, atol=1e-6, msg=name)


def test_directed_edge_index_follows_source_to_target():
    edge_index = torch.tensor([[0, 0], [1, 2]])  # messages 0 -> 1 and 0 -> 2
    adjacency = to_scipy_adjacency(edge_index, num_nodes=3).toarray()
    np.testing.assert_array_equal(adjacency, [[0, 0, 0], [1, 0, 0], [1, 0, 0]])


@pytest.mark.parametrize("layer_cls", [GCNConv, SAGEConv])
def test_a_layer_keeps_the_encoding_of_the_same_adjacency_object_only(layer_cls):
    adj = _graph(n=100, density=0.05, seed=4)
    x = torch.randn(100, 6)
    layer = layer_cls(6, 3)
    first = layer.propagation(x, adj)
    assert layer.propagation(x, adj) is first  # same object: reused
    copy = adj.copy()
    assert layer.propagation(x, copy) is not first  # identity, not value, is the key
    assert layer_cls(6, 3).propagation(x, adj) is not first  # the cache is the layer's, not global
    uncached = layer_cls(6, 3, cached=False)
    assert uncached.propagation(x, adj) is not uncached.propagation(x, adj)
    assert propagation_matrix(first, 100, "gcn") is first  # an encoded matrix passes through


@pytest.mark.parametrize(
    "adj, num_nodes, error, message",
    [
        (torch.tensor([[0, 1], [1, 0]], dtype=torch.int32), 2, ValueError, "torch.long"),
        (torch.tensor([[0, 5], [1, 0]]), 3, ValueError, r"lie in \[0, 3\)"),
        (torch.tensor([[0, -1], [1, 0]]), 3, ValueError, r"lie in \[0, 3\)"),
        (torch.tensor([[0, 1]]), 3, ValueError, r"\[2, E\]"),
        (torch.tensor([[0, 1], [1, 0]]), None, ValueError, "needs num_nodes"),
        (sp.csr_matrix(np.ones((2, 3), np.float32)), None, ValueError, "square"),
        (sp.csr_matrix(np.array([[0, 2.0], [2.0, 0]])), None, ValueError, "other than 0/1"),
        (sp.csr_matrix(np.array([[0, np.nan], [1.0, 0]])), None, ValueError, "NaN or Inf"),
        (sp.eye(4, format="csr"), 3, ValueError, "x has 3 nodes"),
        (np.ones((3, 3)), 3, TypeError, "adjacency must be"),
        ([[0, 1], [1, 0]], 3, TypeError, "adjacency must be"),
    ],
)
def test_bad_adjacency_is_a_clear_error(adj, num_nodes, error, message):
    with pytest.raises(error, match=message):
        to_scipy_adjacency(adj, num_nodes)


def test_an_edge_listed_twice_is_one_edge_in_scipy_and_torch_coo_alike():
    """Coalescing sums duplicates (1 + 1 = 2): a torch COO that lists an edge twice was refused as weighted, while
    SciPy's COO with the same list was one edge."""
    rows, cols = np.array([0, 0, 1, 2]), np.array([1, 1, 0, 1])
    once = sp.csr_matrix((np.ones(3, np.float32), ([0, 1, 2], [1, 0, 1])), shape=(3, 3)).toarray()
    forms = [
        sp.coo_matrix((np.ones(4, np.float32), (rows, cols)), shape=(3, 3)),
        torch.sparse_coo_tensor(torch.from_numpy(np.stack([rows, cols])), torch.ones(4), (3, 3), check_invariants=True),
    ]  # (torch's own .to_sparse_csr() coalesces: its CSR holds a 2, a weight, and is refused as one)
    for form in forms:
        np.testing.assert_array_equal(to_scipy_adjacency(form, 3).toarray(), once)
    weighted = torch.sparse_coo_tensor(torch.tensor([[0, 1], [1, 0]]), torch.tensor([2.0, 1.0]), (3, 3),
                                       check_invariants=True)
    with pytest.raises(ValueError, match="other than 0/1"):
        to_scipy_adjacency(weighted, 3)


def test_torch_sparse_adjacency_that_is_not_a_real_matrix_is_refused():
    """A dense dimension failed inside SciPy with an IndexError; complex values lost their imaginary part and passed
    as 0/1; a float64 1.00000001 was cast to float32's 1.0 before the 0/1 check."""
    index = torch.tensor([[0, 1], [1, 0]])
    hybrid = torch.sparse_coo_tensor(index, torch.ones(2, 3), (3, 3, 3), check_invariants=True)
    with pytest.raises(ValueError, match=r"2-D \[n, n\] matrix with scalar values.*1 dense"):
        to_scipy_adjacency(hybrid, 3)
    with pytest.raises(ValueError, match="real"):
        complex_values = torch.tensor([1 + 1j, 1 + 5j])
        to_scipy_adjacency(torch.sparse_coo_tensor(index, complex_values, (3, 3), check_invariants=True), 3)
    with pytest.raises(ValueError, match="other than 0/1"):
        to_scipy_adjacency(torch.sparse_coo_tensor(index, torch.tensor([1.00000001, 1.0], dtype=torch.float64),
                                                   (3, 3), check_invariants=True), 3)
    learnable = torch.sparse_coo_tensor(index, torch.ones(2), (3, 3), check_invariants=True).requires_grad_()
    with pytest.raises(ValueError, match="require a gradient"):  # they silently got none
        to_scipy_adjacency(learnable, 3)
    half = torch.sparse_coo_tensor(index, torch.ones(2, dtype=torch.bfloat16), (3, 3), check_invariants=True)
    np.testing.assert_array_equal(to_scipy_adjacency(half, 3).toarray(),
                                  [[0, 1, 0], [1, 0, 0], [0, 0, 0]])


def test_layers_reject_bad_input():
    adj = _graph(n=50, density=0.1, seed=5)
    for layer in (GCNConv(4, 2), SAGEConv(4, 2)):
        with pytest.raises(ValueError, match=r"x must be \[n, 4\]"):
            layer(torch.randn(50, 5), adj)
        with pytest.raises(TypeError, match="float32"):
            layer(torch.randn(50, 4, dtype=torch.float64), adj)
        with pytest.raises(TypeError, match="torch tensor"):
            layer(np.zeros((50, 4), np.float32), adj)
        with pytest.raises(ValueError, match="x has 49 nodes"):
            layer(torch.randn(49, 4), adj)
        with pytest.raises(ValueError, match="DSTE adjacency has shape"):
            layer(torch.randn(49, 4), propagation_matrix(adj, 50, "gcn"))
    with pytest.raises(ValueError, match="positive int"):
        GCNConv(0, 3)
    with pytest.raises(ValueError, match="positive int"):
        SAGEConv(3, 2.5)


def test_compressed_weights_used_in_eval_only():
    adj = _graph(n=120, density=0.05, seed=6)
    x = torch.randn(120, 32)
    layer = GCNConv(32, 8)
    exact = layer(x, adj).detach()
    layer.compress_weights(fp16_threshold=0.0)  # S >= 0 always: every weight tile FP16
    torch.testing.assert_close(layer(x, adj), exact)  # training mode: FP32 weights
    layer.eval()
    effective = layer.lin.compressed.effective()
    # FP16 weights: relative rounding 2^-11 per weight; outputs are sums of 32 products -> 1e-3 relative.
    torch.testing.assert_close(layer(x, adj).detach(), exact, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(effective, layer.lin.weight.detach().t().half().float())
    layer.compress_weights(sparsity=0.5, fp16_threshold=0.0)
    kept = (layer.lin.compressed.effective() != 0).float().mean()
    assert 0.45 <= float(kept) <= 0.55
    layer.decompress_weights()
    torch.testing.assert_close(layer(x, adj).detach(), exact)


def test_the_session_runs_torch_on_one_thread():
    # tests/conftest.py pins torch (and, before NumPy loads, BLAS/OpenMP) to one thread for the whole suite
    assert torch.get_num_threads() == 1


def test_layer_runs_multiply_by_the_propagation_matrix_with_scipys_bits():
    from dste.gnn.execution import _sparse_times

    rng = np.random.default_rng(5)
    matrix = sp.random(300, 300, density=0.03, format="csr", random_state=7, dtype=np.float32)
    for width in (1, 7, 40, 64, 130):
        dense = rng.standard_normal((300, width)).astype(np.float32)
        product = _sparse_times(matrix, dense)
        assert product.dtype == np.float32 and product.tobytes() == (matrix @ dense).tobytes(), width
    wide = rng.standard_normal((300, 5))  # float64: SciPy's own product
    assert np.array_equal(_sparse_times(matrix, wide), matrix @ wide)


def _edit_scipy_structure(adj):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sp.SparseEfficiencyWarning)
        missing = np.argwhere(adj.toarray() == 0)
        i, j = (int(v) for v in missing[len(missing) // 2])
        adj[i, j] = adj[j, i] = 1.0
    return adj


def _edit_scipy_values(adj):
    adj.data[: adj.nnz // 2] = 0.0  # explicit zeros: those edges are gone
    return adj


def _edit_edge_index(edge_index):
    edge_index[1, : edge_index.shape[1] // 3] = 0  # a third of the messages rerouted to node 0
    return edge_index


@pytest.mark.parametrize("layer_cls", [GCNConv, SAGEConv])
@pytest.mark.parametrize(
    "make, edit",
    [
        (lambda adj: adj.tocsr(), _edit_scipy_structure),
        (lambda adj: adj.tocsr(), _edit_scipy_values),
        (lambda adj: adj.tocoo(), _edit_scipy_values),
        (lambda adj: torch.from_numpy(np.vstack(adj.nonzero()).astype(np.int64)), _edit_edge_index),
        (lambda adj: adj.tolil(), _edit_scipy_structure),
    ],
    ids=["csr-structure", "csr-values", "coo-values", "edge_index", "lil-structure"],
)
def test_an_adjacency_edited_in_place_is_encoded_again(layer_cls, make, edit):
    # The layer's cache is keyed on the object; an edit in place between calls must not be answered from the old
    # encoding. The reference is a fresh layer with the same weights, which has never seen the object.
    adj = make(_graph(n=120, density=0.05, seed=7))
    x = torch.randn(120, 6)
    layer = layer_cls(6, 3).eval()
    before = layer(x, adj, backend="cpu")
    edit(adj)
    fresh = layer_cls(6, 3).eval()
    fresh.load_state_dict(layer.state_dict())
    after = layer(x, adj, backend="cpu")
    torch.testing.assert_close(after, fresh(x, adj, backend="cpu"), rtol=1e-6, atol=1e-6)
    assert not torch.allclose(after, before), "the edit should change the layer's output"


@pytest.mark.parametrize("layer_cls", [GCNConv, SAGEConv])
@pytest.mark.parametrize("copier", ["torch.save", "deepcopy", "pickle"])
def test_a_layer_that_has_run_can_be_saved_and_copied(layer_cls, copier):
    """The propagation cache names its adjacency by a weak reference, which pickle refuses: torch.save(model) and
    copy.deepcopy(model) failed after the first forward. A copy starts with an empty cache and computes the same."""
    import copy
    import io
    import pickle

    adj = _graph()
    x = torch.randn(adj.shape[0], 16)
    layer = layer_cls(16, 4)
    expected = layer(x, adj)
    if copier == "torch.save":
        buffer = io.BytesIO()
        torch.save(layer, buffer)
        buffer.seek(0)
        restored = torch.load(buffer, weights_only=False)
    elif copier == "deepcopy":
        restored = copy.deepcopy(layer)
    else:
        restored = pickle.loads(pickle.dumps(layer))
    assert torch.equal(restored(x, adj), expected)
    assert torch.equal(layer(x, adj), expected)  # the original keeps its cache


@pytest.mark.parametrize("layer_cls", [GCNConv, SAGEConv])
def test_a_layer_evaluated_under_inference_mode_trains_afterwards(layer_cls):
    """The first call builds the adjacency's operands and keeps them; built under torch.inference_mode they were
    inference tensors, and every later call with autograd failed ("Inference tensors cannot be saved for
    backward"). Its gradients are those of a twin that never ran under inference mode."""
    import copy

    adj = _graph()
    x = torch.randn(adj.shape[0], 16)
    layer = layer_cls(16, 4)
    twin = copy.deepcopy(layer)
    with torch.inference_mode():
        evaluated = layer(x, adj)
    trained = layer(x, adj)
    trained.sum().backward()
    twin(x, adj).sum().backward()
    assert torch.equal(evaluated, trained.detach())
    for name, parameter in layer.named_parameters():
        assert parameter.grad is not None and torch.equal(parameter.grad, dict(twin.named_parameters())[name].grad)
