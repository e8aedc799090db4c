"""Memory footprint of a compressed forward pass, from the ``nbytes`` of the arrays each layer used.

Per layer (:func:`layer_bytes`): ``graph`` -- the propagation matrix's device bytes (the FP32 layer stores it as
CSR: int32 indices, float32 values); ``features`` / ``activations`` -- the layer input (hybrid rows, or FP32),
counted as features for the first layer and activations after; ``weights`` -- the encoded weights (FP32 ones at
4 bytes each) plus the float32 bias. Over a pass (:func:`pass_bytes`) the kinds add up, except that layers
which all propagate over the same unpruned matrix store it once.
"""

from __future__ import annotations

from typing import Sequence

from .execution import CompressedModel, GraphInference, LayerRun, settings_for
from .settings import FP32_SETTING

__all__ = ["BYTE_KINDS", "fp32_csr_bytes", "layer_bytes", "pass_bytes", "memory_footprint"]

BYTE_KINDS = ("graph", "features", "weights", "activations")


def fp32_csr_bytes(num_rows: int, nnz: int) -> int:
    """Bytes of a CSR matrix with int32 row pointers and column ids and float32 values."""
    return 4 * (num_rows + 1) + 8 * int(nnz)


def layer_bytes(run: LayerRun) -> dict:
    """Bytes by kind (``BYTE_KINDS``) of one layer run."""
    fp32 = run.setting.fp32
    weight_bytes = sum(w[0].nbytes() if w[0] is not None else w[1].size * 4 for w in run.weights)
    weight_bytes += 4 * run.bias.size if run.bias is not None else 0
    input_bytes = run.input_rows.nbytes()["total"] if not fp32 else int(run.layer_input.nbytes)
    graph_bytes = int(run.adjacency.nbytes()["device_total"])
    if fp32:
        graph_bytes = fp32_csr_bytes(run.num_nodes, run.adjacency.nnz_kept)
    return {
        "graph": graph_bytes,
        "features": input_bytes if run.layer == 0 else 0,
        "weights": int(weight_bytes),
        "activations": input_bytes if run.layer > 0 else 0,
    }


def pass_bytes(per_layer: Sequence[dict], edge_sparsities: Sequence[float]) -> dict:
    """Bytes by kind of a whole pass from its layers' :func:`layer_bytes` and edge sparsities."""
    breakdown = {key: sum(layer[key] for layer in per_layer) for key in per_layer[0]}
    if all(s == 0.0 for s in edge_sparsities):
        # every layer propagates over the same unpruned matrix: it is stored once
        breakdown["graph"] = per_layer[0]["graph"]
    return breakdown


def memory_footprint(model, graph, settings, *, pruning=None) -> dict:
    """Bytes by kind (plus ``total``) of ``model`` on ``graph``: FP32 against ``settings`` (one per layer, or
    one for all), and their ratio. ``pruning``: the edge-pruning policy (default gather-aware)."""
    inference = GraphInference(CompressedModel(model), graph, pruning)
    report = {}
    for name, chosen in (("fp32", FP32_SETTING), ("compressed", settings)):
        runs = inference.run(settings_for(inference.model, chosen))
        breakdown = pass_bytes([layer_bytes(run) for run in runs], [run.setting.edge_sparsity for run in runs])
        breakdown["total"] = sum(breakdown.values())
        report[name] = breakdown
    report["ratio"] = report["fp32"]["total"] / max(report["compressed"]["total"], 1)
    return report
