"""Modelled NeuronCore latency of a compressed layer (never measured: ``dste.kernels.cost`` is a model).

A layer costs its SpMM over the (pruned) propagation matrix, priced by ``dste.kernels.estimate_spmm`` on the
exact matrix and hybrid rows it ran with, plus its weight product(s): the layers run ``h @ W`` as
``W^T_enc @ h^T`` with the (dequantized) activations as an FP32 operand; an FP32 weight is priced as the FP16
encoding of the same weight (the same block tiles).
"""

from __future__ import annotations

from dste.kernels.cost import estimate_spmm
from dste.kernels.plan import plan_launches

from .execution import CompressedModel, LayerRun
from .settings import LayerSetting

__all__ = ["LatencyModel"]

_FP16_PRICING = LayerSetting(fp16_fraction=1.0)


class LatencyModel:
    """Modelled latency (µs, ``target`` trn2 or trn1) of layer runs; keeps the launch plans and the weight
    prices it derives, keyed by the object they belong to (held, so an id is never reused while cached)."""

    def __init__(self, target: str = "trn2"):
        if target not in ("trn1", "trn2"):
            raise ValueError(f"target must be 'trn1' or 'trn2', got {target!r}")
        self.target = target
        self._plans: dict[tuple, tuple[object, object]] = {}
        self._weight_prices: dict[tuple, tuple[object, float]] = {}

    def launch_plan(self, matrix, width: int, x_mode: str):
        """The kernel's launch plan for ``matrix`` at ``width`` / ``x_mode`` (one plan serves every X of a mode)."""
        key = (id(matrix), width, x_mode)
        held = self._plans.get(key)
        if held is None or held[0] is not matrix:
            held = self._plans[key] = (matrix, plan_launches(matrix, width, x_mode, target=self.target))
        return held[1]

    def weight_latency(self, compressed, num_nodes: int) -> float:
        key = (id(compressed), num_nodes)
        held = self._weight_prices.get(key)
        if held is None or held[0] is not compressed:
            latency = float(estimate_spmm(compressed.matrix, num_nodes, "fp32", self.target).latency_us)
            held = self._weight_prices[key] = (compressed, latency)
        return held[1]

    def layer_latency(self, run: LayerRun, model: CompressedModel) -> float:
        """Modelled latency (µs) of ``run``: SpMM plus weight product(s)."""
        weight_latency = 0
        for index, (compressed, _) in enumerate(run.weights):
            if compressed is None:
                compressed = model.weight(run.layer, index, _FP16_PRICING)[0]
            weight_latency += self.weight_latency(compressed, run.num_nodes)
        x_mode = run.setting.x_mode
        plan = self.launch_plan(run.adjacency, run.spmm_width, x_mode)
        estimate = estimate_spmm(run.adjacency, run.spmm_width, x_mode, self.target, X=run.spmm_rows, plan=plan)
        return float(estimate.latency_us + weight_latency)
