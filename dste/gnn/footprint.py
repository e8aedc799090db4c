"""Memory footprint of a compressed forward pass, from the ``nbytes`` of the arrays each layer used.

Per layer (:func:`layer_bytes`): ``graph`` -- the propagation matrix's device bytes (the FP32 layer stores it as
CSR: int32 indices, float32 values); ``features`` / ``activations`` -- the layer input in the form the layer reads
it (:func:`stored_input_bytes`: hybrid rows, plain FP16 rows at an FP16 share of 1, or FP32), counted as features
for the first layer and activations after; ``weights`` -- the encoded weights (FP32 ones at 4 bytes each) plus the
float32 bias. Over a pass (:func:`pass_bytes`) the kinds add up, except that the unpruned matrix is stored once in
each form the layers read it in: once as DSTE tiles for every compressed layer at edge sparsity 0, once as FP32 CSR
for every FP32 layer (a pass mixing both stores both).
"""

from __future__ import annotations

import numbers
from typing import Sequence

from .execution import CompressedModel, GraphInference, LayerRun, settings_for
from .settings import FP32_SETTING, LayerSetting

__all__ = ["BYTE_KINDS", "fp32_csr_bytes", "stored_input_bytes", "layer_bytes", "pass_bytes", "memory_footprint"]

BYTE_KINDS = ("graph", "features", "weights", "activations")


def fp32_csr_bytes(num_rows: int, nnz: int) -> int:
    """Bytes of a CSR matrix with int32 row pointers and column ids and float32 values: ``4 (num_rows + 1)
    + 8 nnz``. Both counts must be integers >= 0 (a NumPy integer is taken as the Python int it equals)."""
    for name, value in (("num_rows", num_rows), ("nnz", nnz)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            raise ValueError(f"fp32_csr_bytes: {name} must be an integer >= 0, got {value!r}")
    return 4 * (int(num_rows) + 1) + 8 * int(nnz)


def stored_input_bytes(run: LayerRun) -> int:
    """Bytes of the layer input of ``run`` as the layer reads it (``LayerSetting.x_mode``): FP32 values, 4 B each;
    plain FP16 rows at an FP16 share of 1, 2 B per value (no INT8 rows, so no per-row scales, FP16 row ids or
    all-zero INT8 slots, which the hybrid rows built for the run hold); else the hybrid rows' device arrays
    (``HybridRows.nbytes()["total"]``: INT8 values and a float32 scale for every row, FP16 values and an int32 id for
    the FP16 rows)."""
    mode = run.setting.x_mode
    if mode == "fp32":
        return 4 * int(run.layer_input.size)
    if mode == "fp16":
        return 2 * int(run.input_rows.q.size)
    return int(run.input_rows.nbytes()["total"])


def layer_bytes(run: LayerRun) -> dict:
    """Bytes by kind (``BYTE_KINDS``) of one layer run."""
    fp32 = run.setting.fp32
    weight_bytes = sum(w[0].nbytes() if w[0] is not None else w[1].size * 4 for w in run.weights)
    weight_bytes += 4 * run.bias.size if run.bias is not None else 0
    input_bytes = stored_input_bytes(run)
    graph_bytes = int(run.adjacency.nbytes()["device_total"])
    if fp32:
        graph_bytes = fp32_csr_bytes(run.num_nodes, run.adjacency.nnz_kept)
    return {
        "graph": graph_bytes,
        "features": input_bytes if run.layer == 0 else 0,
        "weights": int(weight_bytes),
        "activations": input_bytes if run.layer > 0 else 0,
    }


def pass_bytes(per_layer: Sequence[dict], settings: Sequence[LayerSetting]) -> dict:
    """Bytes by kind of a whole pass from its layers' :func:`layer_bytes` and their settings (one per layer).

    A pruned matrix belongs to its layer; the unpruned one is stored once per form that reads it: the DSTE tiles
    for the compressed layers at edge sparsity 0, the FP32 CSR for the FP32 layers."""
    if not per_layer:
        raise ValueError("pass_bytes needs the bytes of at least one layer")
    if len(settings) != len(per_layer) or not all(isinstance(s, LayerSetting) for s in settings):
        raise ValueError(f"pass_bytes needs one LayerSetting per layer ({len(per_layer)}), got {list(settings)!r}")
    breakdown = {key: sum(layer[key] for layer in per_layer) for key in per_layer[0]}
    unpruned_forms = set()
    for layer, setting in zip(per_layer, settings):
        if setting.edge_sparsity == 0.0:
            form = "fp32-csr" if setting.fp32 else "dste"
            if form in unpruned_forms:  # the same matrix, already counted for an earlier layer
                breakdown["graph"] -= layer["graph"]
            unpruned_forms.add(form)
    return breakdown


def memory_footprint(model, graph, settings, *, pruning=None) -> dict:
    """Bytes by kind (plus ``total``) of ``model`` on ``graph``: FP32 against ``settings`` (one per layer, or
    one for all), and their ratio. ``pruning``: the edge-pruning policy (default gather-aware)."""
    inference = GraphInference(CompressedModel(model), graph, pruning)
    report = {}
    for name, chosen in (("fp32", FP32_SETTING), ("compressed", settings)):
        runs = inference.run(settings_for(inference.model, chosen))
        breakdown = pass_bytes([layer_bytes(run) for run in runs], [run.setting for run in runs])
        breakdown["total"] = sum(breakdown.values())
        report[name] = breakdown
    report["ratio"] = report["fp32"]["total"] / max(report["compressed"]["total"], 1)
    return report
