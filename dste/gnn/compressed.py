"""Compressed inference of a trained two-layer model through the DSTE ops, and its memory footprint.

Per layer a :class:`CompressionConfig` sets
  * ``edge_sparsity``: fraction of the layer's off-diagonal propagation entries dropped through the dynamic
    keep-mask (smallest effective values first: edges between high-degree nodes); self loops are kept;
  * ``weight_sparsity``: fraction of the layer's weights dropped by magnitude (keep-mask over the encoded W);
  * ``fp16_threshold``: the sensitivity threshold T of weight tile kinds (S >= T -> FP16, else INT8);
    ``inf`` forces all-INT8, ``0`` all-FP16; ``compress_weights=False`` keeps FP32 weights;
  * ``x_hybrid``: hybrid-row quantization (INT8 rows + FP16 sensitive rows, threshold ``x_fp16_threshold``,
    default ``fp16_threshold``) of the layer input and of the SpMM's dense operand.

:func:`compressed_forward` runs eval-mode inference with those settings and returns logits;
:func:`memory_footprint` reports bytes of the FP32 model and of the compressed one from the ``nbytes`` of the
actual arrays.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from dste.bindings import DSTETensor, spmm

from .adjacency import propagation_matrix
from .train import graph_tensors
from .weights import CompressedWeight

__all__ = ["CompressionConfig", "compressed_forward", "memory_footprint", "edge_keep_mask"]

_INT8_ONLY_THRESHOLD = 1e30  # S never exceeds 1, so any T above 1 means all-INT8


@dataclass(frozen=True)
class CompressionConfig:
    edge_sparsity: float = 0.0
    weight_sparsity: float = 0.0
    fp16_threshold: float = 0.02
    x_hybrid: bool = True
    x_fp16_threshold: float | None = None
    compress_weights: bool = True

    def __post_init__(self):
        for name in ("edge_sparsity", "weight_sparsity"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"CompressionConfig.{name} must lie in [0, 1), got {value!r}")
        for name in ("fp16_threshold", "x_fp16_threshold"):
            value = getattr(self, name)
            if value is None and name == "x_fp16_threshold":
                continue
            if not isinstance(value, (int, float)) or math.isnan(value) or value < 0:
                raise ValueError(f"CompressionConfig.{name} must be a number >= 0 (inf = all INT8), got {value!r}")

    @property
    def row_threshold(self) -> float:
        return self.fp16_threshold if self.x_fp16_threshold is None else self.x_fp16_threshold


def edge_keep_mask(a: DSTETensor, sparsity: float) -> sp.csr_matrix:
    """Keep-mask dropping the ``sparsity`` fraction of off-diagonal entries with the smallest |value|."""
    csr = a.to_scipy().tocoo()
    off_diagonal = csr.row != csr.col
    magnitude = np.abs(csr.data[off_diagonal])
    n_drop = int(np.floor(sparsity * magnitude.size))
    keep = np.ones(csr.nnz, dtype=bool)
    if n_drop:
        order = np.argsort(magnitude, kind="stable")  # deterministic: ties dropped in storage order
        dropped = np.flatnonzero(off_diagonal)[order[:n_drop]]
        keep[dropped] = False
    return sp.csr_matrix((np.ones(int(keep.sum()), dtype=bool), (csr.row[keep], csr.col[keep])), shape=csr.shape)


# masked adjacencies and compressed weights, reused across calls (each a bounded LRU validated by identity)
_lock = threading.Lock()
_masked: OrderedDict[tuple, tuple[weakref.ref, DSTETensor]] = OrderedDict()
_weights: OrderedDict[tuple, tuple[weakref.ref, CompressedWeight]] = OrderedDict()
_CACHE_SIZE = 64


def _cached(store, key, owner, build):
    with _lock:
        entry = store.get(key)
        if entry is not None and entry[0]() is owner:
            store.move_to_end(key)
            return entry[1]
    value = build()
    with _lock:
        store[key] = (weakref.ref(owner), value)
        while len(store) > _CACHE_SIZE:
            store.popitem(last=False)
    return value


def _masked_adjacency(a: DSTETensor, sparsity: float) -> DSTETensor:
    if sparsity == 0.0:
        return a
    key = (id(a.matrix), sparsity)
    return _cached(_masked, key, a.matrix, lambda: DSTETensor(a.matrix.with_mask(edge_keep_mask(a, sparsity))))


def _compressed_weight(linear: torch.nn.Linear, config: CompressionConfig) -> CompressedWeight:
    threshold = _INT8_ONLY_THRESHOLD if math.isinf(config.fp16_threshold) else config.fp16_threshold
    param = linear.weight
    key = (id(param), param._version, config.weight_sparsity, threshold)
    return _cached(
        _weights,
        key,
        param,
        lambda: CompressedWeight(param.detach().t(), sparsity=config.weight_sparsity, fp16_threshold=threshold),
    )


def _hybrid(x: torch.Tensor, config: CompressionConfig):
    from dste.format import quantize_rows

    threshold = _INT8_ONLY_THRESHOLD if math.isinf(config.row_threshold) else config.row_threshold
    return quantize_rows(x.detach().numpy(), threshold=threshold)


class _Recorder:
    """Collects the encoded objects of one compressed forward (for :func:`memory_footprint`)."""

    def __init__(self):
        self.adjacency: list[DSTETensor] = []
        self.weights: list[tuple[object, torch.nn.Linear]] = []
        self.inputs: list[object] = []


def _linear(linear, h, config, recorder, backend):
    if not config.compress_weights:
        recorder.weights.append((None, linear))
        return torch.nn.functional.linear(h, linear.weight, linear.bias)
    weight = _compressed_weight(linear, config)
    recorder.weights.append((weight, linear))
    out = weight(h, backend=backend)
    return out + linear.bias if linear.bias is not None else out


def _spmm_operand(t: torch.Tensor, config: CompressionConfig):
    return _hybrid(t, config) if config.x_hybrid else t


def _layer(conv, x, adj, config, recorder, backend):
    from .layers import GCNConv, SAGEConv

    operand = _hybrid(x, config) if config.x_hybrid else None
    recorder.inputs.append(operand if operand is not None else x)
    x_used = torch.from_numpy(operand.dequantize()) if operand is not None else x
    if isinstance(conv, GCNConv):
        a = _masked_adjacency(propagation_matrix(adj, x.shape[0], "gcn"), config.edge_sparsity)
        recorder.adjacency.append(a)
        transformed = _linear(conv.lin, x_used, config, recorder, backend)
        out = spmm(a, _spmm_operand(transformed, config), backend=backend)
        return out + conv.bias if conv.bias is not None else out
    if isinstance(conv, SAGEConv):
        a = _masked_adjacency(propagation_matrix(adj, x.shape[0], "mean"), config.edge_sparsity)
        recorder.adjacency.append(a)
        aggregated = spmm(a, operand if operand is not None else x, backend=backend)
        return _linear(conv.lin_l, aggregated, config, recorder, backend) + _linear(
            conv.lin_r, x_used, config, recorder, backend
        )
    raise TypeError(f"unsupported layer {type(conv).__name__}; expected GCNConv or SAGEConv")


def _check_configs(model, configs):
    convs = getattr(model, "convs", None)
    if convs is None:
        raise TypeError(f"model must be a dste.gnn TwoLayerGNN (GCN/SAGE), got {type(model).__name__}")
    if isinstance(configs, CompressionConfig):
        configs = [configs] * len(convs)
    configs = list(configs)
    if len(configs) != len(convs) or not all(isinstance(c, CompressionConfig) for c in configs):
        raise ValueError(f"configs must be one CompressionConfig or a list of {len(convs)} of them")
    return convs, configs


def _run(model, graph, configs, backend, recorder):
    convs, configs = _check_configs(model, configs)
    x, _ = graph_tensors(graph)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            h = x
            for index, (conv, config) in enumerate(zip(convs, configs)):
                h = _layer(conv, h, graph.adj, config, recorder, backend)
                if index < len(convs) - 1:
                    h = torch.relu(h)
    finally:
        model.train(was_training)
    return h


def compressed_forward(model, graph, configs, backend: str | None = "cpu") -> torch.Tensor:
    """Eval-mode logits ``[n, classes]`` of ``model`` on ``graph`` under per-layer ``configs``."""
    return _run(model, graph, configs, backend, _Recorder())


def _fp32_csr_bytes(a: DSTETensor) -> int:
    # the FP32 baseline stores the normalised adjacency as CSR with int32 indices and float32 values
    n_rows, nnz = a.shape[0], a.nnz
    return 4 * (n_rows + 1) + 4 * nnz + 4 * nnz


def _operand_bytes(obj) -> int:
    if isinstance(obj, torch.Tensor):
        return int(obj.numel() * obj.element_size())
    return int(obj.nbytes()["total"])


def memory_footprint(model, graph, configs, backend: str | None = "cpu") -> dict:
    """Bytes of graph, features, weights and activations, FP32 vs compressed, plus totals and the ratio.

    FP32: the normalised adjacency as int32/float32 CSR, features and the hidden activation as float32, every
    parameter as float32. Compressed: the encoded adjacency's device bytes (a second layer with another mask
    adds only its keep bits), the hybrid-row (or FP32) layer inputs, the encoded weights plus float32 biases.
    """
    recorder = _Recorder()
    _run(model, graph, configs, backend, recorder)
    fp32 = {
        "graph": _fp32_csr_bytes(propagation_matrix(graph.adj, graph.x.shape[0], recorder_norm(model))),
        "features": int(graph.x.astype(np.float32).nbytes),
        "weights": int(sum(p.numel() * 4 for p in model.parameters())),
        "activations": int(sum(graph.x.shape[0] * conv.in_features * 4 for conv in model.convs[1:])),
    }
    graph_bytes, seen = 0, set()
    for a in recorder.adjacency:
        if id(a.matrix) in seen:
            continue
        usage = a.matrix.nbytes()
        graph_bytes += usage["device_total"] if not seen else usage["device"]["masks"]
        seen.add(id(a.matrix))
    weight_bytes = 0
    for weight, linear in recorder.weights:
        weight_bytes += weight.nbytes() if weight is not None else linear.weight.numel() * 4
        weight_bytes += linear.bias.numel() * 4 if linear.bias is not None else 0
    for conv in model.convs:
        if getattr(conv, "bias", None) is not None and isinstance(conv.bias, torch.nn.Parameter):
            weight_bytes += conv.bias.numel() * 4
    compressed = {
        "graph": int(graph_bytes),
        "features": _operand_bytes(recorder.inputs[0]),
        "weights": int(weight_bytes),
        "activations": int(sum(_operand_bytes(h) for h in recorder.inputs[1:])),
    }
    fp32["total"] = sum(fp32.values())
    compressed["total"] = sum(compressed.values())
    return {"fp32": fp32, "compressed": compressed, "ratio": fp32["total"] / max(compressed["total"], 1)}


def recorder_norm(model) -> str:
    return "gcn" if getattr(model, "conv_kind", "gcn") == "gcn" else "mean"
