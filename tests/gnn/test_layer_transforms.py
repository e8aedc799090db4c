"""GCNConv / SAGEConv given an adjacency tensor under torch's transforms: ``torch.func``, ``torch.compile``,
``torch.autocast`` and ``torch.jit.trace``. The layers encode the adjacency on the host; each transform must either
see the right product or refuse, never keep a stale one.

References are dense float64 re-implementations of the layers from the adjacency alone (``_dense_gcn``,
``_dense_sage`` of test_layers.py, whose tolerance TOL bounds float32 rounding). Under bfloat16 autocast the
weight products round to bf16 (8 significant bits: 2^-8 relative per term); with O(1) inputs, 8-16 features and
a mean over at most ~20 neighbours, 0.1 absolute bounds that rounding, while a dropped edge or normalisation error
moves outputs by O(1).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from dste.gnn import GCN, GCNConv, SAGEConv

from .test_layers import TOL, _dense_gcn, _dense_sage, _graph

BF16_ATOL = 0.1  # module docstring


def _edge_index(adj):
    coo = adj.tocoo()
    return torch.tensor(np.vstack([coo.col, coo.row]), dtype=torch.long)


def _gcn_reference(layer, adj, x):
    return _dense_gcn(adj.toarray().astype(np.float64), x.double().numpy(),
                      layer.lin.weight.detach().double().numpy(), layer.bias.detach().double().numpy())


def test_jvp_through_a_layer_given_an_edge_index():
    adj = _graph(120, 0.04, seed=1)
    edge_index = _edge_index(adj)
    layer = GCNConv(8, 4)
    x, tangent = torch.randn(120, 8), torch.randn(120, 8)
    layer(x, edge_index)  # a warm cache too: its digest reads the adjacency under the transform
    out, out_tangent = torch.func.jvp(lambda v: layer(v, edge_index), (x,), (tangent,))
    np.testing.assert_allclose(out.detach().numpy(), _gcn_reference(layer, adj, x), **TOL)
    bias = layer.bias.detach().double().numpy()
    np.testing.assert_allclose(out_tangent.detach().numpy(), _gcn_reference(layer, adj, tangent) - bias, **TOL)


def test_func_grad_through_a_layer_given_an_edge_index_is_refused_plainly():
    adj = _graph(60, 0.05, seed=2)
    model = GCN(8, 16, 3)
    params = dict(model.named_parameters())
    with pytest.raises(NotImplementedError, match="torch.func.grad"):
        torch.func.grad(lambda p: torch.func.functional_call(model, p, (torch.randn(60, 8), _edge_index(adj))).sum())(
            params)


def test_compile_follows_each_calls_adjacency_tensor():
    torch.manual_seed(0)
    conv = GCNConv(8, 4).eval()
    compiled = torch.compile(conv, backend="aot_eager")
    x = torch.randn(80, 8)
    for seed in (3, 4):  # a second adjacency: encoded anew outside the graph, never the first one's product
        adj = _graph(80, 0.05, seed=seed)
        with torch.no_grad():
            got = compiled(x, _edge_index(adj))
        np.testing.assert_allclose(got.numpy(), _gcn_reference(conv, adj, x), **TOL)


@pytest.mark.parametrize("kind", ["gcn", "sage"])
def test_layers_under_bfloat16_autocast(kind):
    adj = _graph(100, 0.05, seed=5)
    torch.manual_seed(1)
    layer = GCNConv(8, 16) if kind == "gcn" else SAGEConv(8, 16)
    x = torch.randn(100, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = layer(x, _edge_index(adj))
        again = layer(hidden.to(torch.bfloat16)[:, :8], _edge_index(adj))  # a bf16 activation as a layer input
    assert again.shape == (100, 16)
    if kind == "gcn":
        want = _gcn_reference(layer, adj, x)
    else:
        want = _dense_sage(adj.toarray().astype(np.float64), x.double().numpy(),
                           layer.lin_l.weight.detach().double().numpy(), layer.lin_l.bias.detach().double().numpy(),
                           layer.lin_r.weight.detach().double().numpy())
    np.testing.assert_allclose(hidden.float().detach().numpy(), want, atol=BF16_ATOL)


@pytest.mark.parametrize("layer_class", [GCNConv, SAGEConv])
def test_jit_trace_of_a_layer_given_an_adjacency_tensor_is_refused(layer_class):
    # the trace would keep this adjacency's encoding as a constant and ignore the adjacency of later calls
    layer = layer_class(8, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match="jit.trace.*adjacency"):
            torch.jit.trace(layer, (torch.randn(60, 8), _edge_index(_graph(60, 0.05))))
