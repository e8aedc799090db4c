"""Training helper, the compressed forward pass (both executions, both pruning policies), memory footprint and
modelled latency on a small two-community graph."""

from __future__ import annotations

import types

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from dste.data.graph import Graph, adjacency_from_pairs
from dste.reference import gcn_normalization
from dste.gnn import (
    FP32_SETTING,
    CompressedModel,
    GatherAwarePruning,
    GraphInference,
    LatencyModel,
    LayerSetting,
    MagnitudeMaskPruning,
    accuracy,
    compressed_forward,
    make_model,
    memory_footprint,
    train_fp32,
)


def _graph(n=256, features=32, seed=0):
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(np.int64)
    rows, cols = rng.integers(0, n, 6 * n), rng.integers(0, n, 6 * n)
    same = y[rows] == y[cols]
    kept = same | (rng.random(rows.size) < 0.1)  # mostly within-class edges: homophilous
    rows, cols = rows[kept], cols[kept]
    x = (rng.standard_normal((n, features)) + 0.5 * (2 * y[:, None] - 1)).astype(np.float32)
    split = rng.permutation(n)
    masks = [np.zeros(n, bool) for _ in range(3)]
    masks[0][split[:60]], masks[1][split[60:120]], masks[2][split[120:]] = True, True, True
    return Graph(adjacency_from_pairs(rows, cols, n), x, y, *masks, num_classes=2, name="two-communities")


@pytest.fixture(scope="module")
def trained():
    graph = _graph()
    model = make_model(graph, "gcn", hidden=16, seed=0)
    metrics = train_fp32(model, graph, epochs=60, lr=0.05, seed=0, patience=20)
    return graph, model, metrics


def test_training_learns_and_is_reproducible(trained):
    graph, model, metrics = trained
    assert metrics["test_acc"] > 0.8  # two separable communities: chance is 0.5
    again = make_model(graph, "gcn", hidden=16, seed=0)
    assert train_fp32(again, graph, epochs=60, lr=0.05, seed=0, patience=20) == metrics


POLICIES = [GatherAwarePruning(), MagnitudeMaskPruning()]


@pytest.fixture(scope="module", params=["gcn", "sage"])
def trained_kind(request):
    graph = _graph(seed=1)
    model = make_model(graph, request.param, hidden=16, seed=1)
    metrics = train_fp32(model, graph, epochs=40, lr=0.05, seed=1, patience=20)
    return graph, model, metrics


def test_fp32_setting_reproduces_the_fp32_model(trained_kind):
    graph, model, _ = trained_kind
    with torch.no_grad():
        reference = model(torch.from_numpy(graph.x), graph.adj)
    # Same operands and ops; x @ W^T and nn.Linear may take different BLAS paths: float32 rounding only.
    logits = compressed_forward(model, graph, FP32_SETTING)
    torch.testing.assert_close(logits, reference, rtol=1e-5, atol=1e-5 * float(reference.abs().max()))


def _int8_error_bound(model, graph) -> np.ndarray:
    """float64 ``[n, classes]``: how far the INT8 setting's logits can lie from the FP32 model's, propagated in NumPy
    through both layers from each operand's rounding, first order plus the products of errors. Every INT8 operand is
    off by at most half its step, max|v| / 254 over its group: a row of the layer input and (GCN) of its message,
    a 128 x 128 tile of each weight (an FP16 tile is closer: 2^-11 |w| < max|w| / 254); the propagation matrix is the
    reference's (GCN: ``dste.reference.gcn_normalization``; SAGE: the mean over each node's neighbours), its float32
    rounding and the sums' are covered by ``FLOAT32_SLACK`` of each term's magnitude. ReLU is 1-Lipschitz."""
    half_step = (1 + 1e-6) / 254

    def row_steps(values):  # per element: half the INT8 step of its row
        return np.abs(values).max(axis=1, keepdims=True) * half_step

    def tile_steps(weight):  # weight [in, out]: half the INT8 step of its 128 x 128 tile of W^T
        steps = np.empty_like(weight)
        for i in range(0, weight.shape[0], 128):
            for j in range(0, weight.shape[1], 128):
                steps[i:i + 128, j:j + 128] = np.abs(weight[i:i + 128, j:j + 128]).max() * half_step
        return steps

    binary = (sp.csr_matrix(graph.adj) != 0).astype(np.float64)
    if model.conv_kind == "gcn":
        propagation = abs(gcn_normalization(graph.adj))
    else:
        degree = np.maximum(np.asarray(binary.sum(axis=1)).ravel(), 1.0)
        propagation = sp.diags(1.0 / degree) @ binary
    h = torch.from_numpy(graph.x)
    error = np.zeros(graph.x.shape)  # |compressed input - FP32 input|, per element
    with torch.no_grad():
        for layer, conv in enumerate(model.convs):
            x = h.double().numpy()
            x_error = error + row_steps(np.abs(x) + error)  # quantized input against the FP32 input
            x_size = np.abs(x) + x_error
            if model.conv_kind == "gcn":
                w = conv.lin.weight.double().numpy().T
                message_error = x_error @ np.abs(w) + x_size @ tile_steps(w)
                message_error += row_steps(np.abs(x @ w) + message_error)  # the message is quantized again
                out_error = propagation @ message_error
                magnitude = propagation @ (x_size @ np.abs(w))
            else:
                wl, wr = conv.lin_l.weight.double().numpy().T, conv.lin_r.weight.double().numpy().T
                aggregated_error, aggregated_size = propagation @ x_error, propagation @ x_size
                out_error = (aggregated_error @ np.abs(wl) + aggregated_size @ tile_steps(wl)
                             + x_error @ np.abs(wr) + x_size @ tile_steps(wr))
                magnitude = aggregated_size @ np.abs(wl) + x_size @ np.abs(wr)
            error = out_error + FLOAT32_SLACK * magnitude
            h = conv(h, graph.adj)
            if layer < len(model.convs) - 1:
                h = torch.relu(h)
    return error


FLOAT32_SLACK = 2.0**-16
"""Float32 rounding of the products, the sums (at most a few hundred terms) and the propagation matrix, relative to
the magnitude |A| |x| |W| of a layer's terms: about 100 float32 ulps."""


def test_int8_inference_stays_close_to_fp32(trained_kind):
    graph, model, fp32 = trained_kind
    logits = compressed_forward(model, graph, LayerSetting(fp16_fraction=0.0))
    assert abs(accuracy(logits, graph) - fp32["test_acc"]) <= 0.02
    with torch.no_grad():
        reference = model(torch.from_numpy(graph.x), graph.adj)
    # every logit within the error its operands' INT8 rounding can propagate to it: a worst case (every rounding
    # error of a sum taken with the same sign), 9-14 % of the largest logit here, where the errors measured are under
    # 5 % of the bound (0.6 % of the largest logit); per logit, not a fixed share of the largest. How close the INT8 bits are is held elsewhere (the
    # quantizers bit for bit against dste.reference, test_cpu_forward)
    bound = _int8_error_bound(model, graph)
    assert ((logits - reference).abs().double().numpy() <= bound).all()
    assert bound.max() <= 0.25 * float(reference.abs().max())  # the bound itself is not vacuous


SETTINGS = [
    LayerSetting(),
    LayerSetting(fp16_fraction=1.0),
    LayerSetting(edge_sparsity=0.5, fp16_fraction=0.2),
    LayerSetting(channel_sparsity=0.5, edge_sparsity=0.25, fp16_fraction=0.05),
    LayerSetting(weight_sparsity=0.5),
]


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.name)
@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: f"s{s.edge_sparsity}c{s.channel_sparsity}w{s.weight_sparsity}f{s.fp16_fraction}")
def test_numpy_execution_matches_the_torch_ops(trained_kind, policy, setting):
    graph, model, _ = trained_kind
    inference = GraphInference(CompressedModel(model), graph, policy)
    fast = inference.run([setting, setting])[-1].output
    ops = inference.forward([setting, setting]).numpy()
    # Same dequantized values and masks, float32 summation order differs; a re-quantized intermediate on an
    # INT8 rounding boundary can move by one level (row max / 127): a fraction of a level bounds the error.
    assert np.abs(ops - fast).max() <= 1e-2 * np.abs(fast).max()
    assert np.mean(ops.argmax(1) == fast.argmax(1)) >= 0.99


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.name)
def test_pruned_propagation_reads_an_edge_listed_twice_or_a_stored_zero_as_the_graph_does(trained_kind, policy):
    """The mean aggregator's pruned matrices were built from the raw COO: an edge stored twice counted twice in its
    row's degree (rows summing to 0.5) and a stored zero became an edge, while the unpruned matrix and the layers
    read one edge and none. The same graph in either form must give the same logits under pruning."""
    import scipy.sparse as sp

    graph, model, _ = trained_kind
    coo = graph.adj.tocoo()
    twice = np.arange(0, coo.nnz, 7)
    rows = np.concatenate([coo.row, coo.row[twice], [0, 1]])
    cols = np.concatenate([coo.col, coo.col[twice], [5, 7]])
    data = np.concatenate([coo.data, coo.data[twice], [0.0, 0.0]]).astype(np.float32)
    assert graph.adj[0, 5] == 0 and graph.adj[1, 7] == 0
    order = np.argsort(rows, kind="stable")  # CSR arrays built by hand: SciPy's conversions would sum the repeats
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=graph.num_nodes))])
    raw = sp.csr_matrix((data[order], cols[order], indptr), shape=graph.adj.shape)
    assert raw.nnz == graph.adj.nnz + twice.size + 2
    setting = LayerSetting(edge_sparsity=0.3)
    expected = GraphInference(CompressedModel(model), graph, policy).forward([setting, setting]).numpy()
    messy = types.SimpleNamespace(adj=raw, x=graph.x)
    got = GraphInference(CompressedModel(model), messy, policy).forward([setting, setting]).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.name)
@pytest.mark.parametrize("sparsity", [0.1, 0.5, 0.9])
def test_both_policies_drop_the_requested_share_and_keep_self_loops(trained, policy, sparsity):
    graph, model, _ = trained
    inference = GraphInference(CompressedModel(model), graph, policy)
    plan = inference.plan
    full = plan.base.decode(effective=True)
    pruned = inference.adjacency(0, sparsity).decode(effective=True)
    n = graph.x.shape[0]
    off_diagonal = full.nnz - n
    assert pruned.nnz == full.nnz - int(np.floor(sparsity * off_diagonal))
    assert np.all(pruned.diagonal() > 0)
    assert inference.adjacency(0, sparsity) is inference.adjacency(0, sparsity)  # kept by the inference


def test_magnitude_policy_drops_the_smallest_values_through_the_mask(trained):
    graph, model, _ = trained
    inference = GraphInference(CompressedModel(model), graph, MagnitudeMaskPruning())
    base = inference.plan.base
    half = inference.adjacency(0, 0.5)
    assert half.int8_values is base.int8_values and half.keep_bits is not base.keep_bits  # only the mask changed
    # ranked on the float32 values the op multiplies by (ties there are broken by storage order)
    full, kept = base.decode(effective=True, dtype=np.float32).tocoo(), half.decode(effective=True)
    off = full.row != full.col
    dropped = off & (np.asarray(kept[full.row, full.col]).ravel() == 0)
    assert np.abs(full.data[dropped]).max() <= np.abs(full.data[off & ~dropped]).min()


def test_memory_footprint_uses_real_bytes(trained):
    graph, model, _ = trained
    report = memory_footprint(model, graph, LayerSetting())
    assert report["fp32"]["features"] == graph.x.nbytes
    assert report["fp32"]["weights"] == sum(p.numel() * 4 for p in model.parameters())
    n, nnz = graph.x.shape[0], GraphInference(CompressedModel(model), graph).plan.base.nnz_kept
    assert report["fp32"]["graph"] == 4 * (n + 1) + 8 * nnz  # int32 CSR + float32 values, stored once
    assert report["compressed"]["features"] < report["fp32"]["features"] / 3  # INT8 rows + per-row scale
    for part in ("fp32", "compressed"):
        assert report[part]["total"] == sum(v for k, v in report[part].items() if k != "total")
    assert report["ratio"] == pytest.approx(report["fp32"]["total"] / report["compressed"]["total"])


def test_modelled_latency_orders_the_precisions(trained):
    graph, model, _ = trained
    compressed = CompressedModel(model)
    inference, latency = GraphInference(compressed, graph), LatencyModel("trn2")
    int8, fp16 = (inference.run(LayerSetting(fp16_fraction=f))[0] for f in (0.0, 1.0))
    pruned = inference.run(LayerSetting(edge_sparsity=0.75))[0]
    int8_us, fp16_us = latency.layer_latency(int8, compressed), latency.layer_latency(fp16, compressed)
    assert 0 < int8_us < fp16_us  # FP16 rows move twice the bytes of INT8 rows
    assert latency.layer_latency(pruned, compressed) <= int8_us
    assert latency.layer_latency(int8, compressed) == int8_us  # deterministic, and cached per matrix
    with pytest.raises(ValueError, match="target"):
        LatencyModel("trn3")


def test_graphsage_on_an_input_wider_than_one_launch_is_priced_as_column_blocks():
    """GraphSAGE aggregates its layer input, so the first layer's SpMM is as wide as the features; above one
    launch's 4096 columns it is priced as the kernel runs it, column blocks in sequence."""
    from dste.kernels import estimate_spmm

    graph = _graph(n=160, features=4100)
    model = make_model(graph, "sage", hidden=8, seed=0)
    compressed = CompressedModel(model)
    run = GraphInference(compressed, graph).run(LayerSetting(fp16_fraction=1.0))[0]
    assert run.spmm_width == 4100
    latency = LatencyModel("trn2")
    assert isinstance(latency.launch_plan(run.adjacency, 4100, "fp16"), tuple)
    expected = estimate_spmm(run.adjacency, 4100, "fp16", "trn2").latency_us + latency.weight_latency(run)
    assert latency.layer_latency(run) == pytest.approx(expected, rel=1e-12)
    narrow = GraphInference(CompressedModel(make_model(_graph(n=160, features=2048), "sage", hidden=8, seed=0)),
                            _graph(n=160, features=2048)).run(LayerSetting(fp16_fraction=1.0))[0]
    assert LatencyModel("trn2").spmm_latency(narrow) < latency.spmm_latency(run)  # half the columns gathered


def test_bad_settings_and_arguments_are_clear_errors(trained):
    graph, model, _ = trained
    with pytest.raises(ValueError, match="edge_sparsity must lie in"):
        LayerSetting(edge_sparsity=1.0)
    with pytest.raises(ValueError, match="fp16_fraction must lie in"):
        LayerSetting(fp16_fraction=float("nan"))
    with pytest.raises(ValueError, match="fp32=True"):
        LayerSetting(fp32=True, fp16_fraction=0.5)
    with pytest.raises(TypeError, match="channel_sparsity must be a real number"):
        LayerSetting(channel_sparsity="0.5")
    # a NumPy scalar in range is a number like any other, and the setting equals (and hashes as) the float one
    assert LayerSetting(edge_sparsity=np.float32(0.5), fp16_fraction=np.float64(0.05)) == LayerSetting(edge_sparsity=0.5, fp16_fraction=0.05)
    assert isinstance(LayerSetting(edge_sparsity=np.float32(0.5)).edge_sparsity, float)
    with pytest.raises(ValueError, match="list of 2"):
        compressed_forward(model, graph, [LayerSetting()])
    narrower = types.SimpleNamespace(adj=graph.adj, x=graph.x[:, :5])
    with pytest.raises(ValueError, match=r"first layer takes \d+ input features; the graph's x has shape \(\d+, 5\)"):
        compressed_forward(model, narrower, LayerSetting())
    with pytest.raises(TypeError, match="TwoLayerGNN"):
        compressed_forward(torch.nn.Linear(2, 2), graph, LayerSetting())
    with pytest.raises(TypeError, match="dste.data.Graph"):
        train_fp32(model, object())
    with pytest.raises(ValueError, match="epochs must be"):
        train_fp32(model, graph, epochs=0)


def test_magnitude_sparsity_drops_exactly_its_share_of_tied_weights():
    # a cut by value dropped every weight tied with the cut-off: sparsity 0.1 of an all-ones weight dropped all 32
    from dste.gnn import CompressedWeight, magnitude_keep_mask

    keep = magnitude_keep_mask(np.array([1.0, -1.0, 1.0, 1.0, 2.0, 3.0, 1.0, 1.0]), 0.25)
    np.testing.assert_array_equal(keep, [False, False, True, True, True, True, True, True])
    values = np.random.default_rng(0).standard_normal((20, 7))
    keep = magnitude_keep_mask(values, 0.3)
    assert keep.sum() == 140 - 42 and np.abs(values[~keep]).max() <= np.abs(values[keep]).min()
    weight = CompressedWeight(torch.ones(8, 4), sparsity=0.1)
    kept = weight.matrix.decode().toarray()
    assert np.count_nonzero(kept) == 32 - 3


def test_magnitude_sparsity_drops_ties_in_row_major_order():
    from dste.gnn import magnitude_keep_mask

    W = np.random.default_rng(0).integers(-2, 3, size=(64, 32)).astype(np.float32)  # magnitudes 0, 1, 2: many ties
    magnitude = np.abs(W).ravel()
    order = sorted(range(magnitude.size), key=lambda i: (magnitude[i], i))
    want = np.ones(magnitude.size, bool)
    want[order[:int(np.floor(0.4 * magnitude.size))]] = False
    np.testing.assert_array_equal(magnitude_keep_mask(W, 0.4), want.reshape(W.shape))


def test_compressed_sage_layer_keeps_a_nonzero_bias():
    # trained biases are not zero: the compressed eval-mode linear must add it (PyG SAGEConv formula, float64)
    from dste.gnn import SAGEConv

    torch.manual_seed(0)
    rows, cols = np.array([0, 1, 1, 2, 3, 4, 5, 5]), np.array([1, 0, 2, 1, 4, 3, 0, 4])
    adj = sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(6, 6))
    x = torch.randn(6, 4)
    layer = SAGEConv(4, 3)
    with torch.no_grad():
        layer.lin_l.bias.copy_(torch.tensor([5.0, -3.0, 2.0]))
    layer.compress_weights().eval()
    A = adj.toarray()
    mean = A / np.maximum(A.sum(1, keepdims=True), 1)
    X = x.double().numpy()
    w_l, w_r, b = (t.detach().double().numpy() for t in (layer.lin_l.weight, layer.lin_r.weight, layer.lin_l.bias))
    # INT8 weights: each of 4 terms off by at most half a step of max|w| / 127, far below the bias
    np.testing.assert_allclose(layer(x, adj).detach().numpy(), mean @ X @ w_l.T + b + X @ w_r.T, atol=0.05)
