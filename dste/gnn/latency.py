"""Modelled NeuronCore latency of a compressed layer (never measured: ``dste.kernels.cost`` is a model).

A layer costs its SpMM over the (pruned) propagation matrix, priced by ``dste.kernels.estimate_spmm`` on the
exact matrix and hybrid rows it ran with, plus its weight product(s) ``h @ W``, priced as the dense GEMM a
NeuronCore runs for it (W stationary, the nodes moving; :mod:`dste.gnn.dense_cost`): the layer input in its
stored form (INT8 hybrid rows, FP16 rows, or FP32 for the uncompressed layer) and the weight's device bytes.
"""

from __future__ import annotations

import hashlib

import numpy as np

from dste.kernels.cost import TraceBook, estimate_spmm
from dste.kernels.launch_spmm import feature_blocks, max_features_of
from dste.kernels.plan import plan_launches

from .dense_cost import dense_matmul_latency_us
from .execution import CompressedModel, LayerOperands, LayerRun

__all__ = ["LatencyModel", "prices_fp16_rows_by_count"]


SHARE_PRICED_NODES = 8192
"""Above this many nodes the FP16-row correction pass of a hybrid X is priced for its *share* of FP16 rows
(``estimate_spmm(hi_fraction=...)``: that share of the columns drawn at random, seed 0), not for the rows
the run chose. Which rows are FP16 changes with every earlier layer's action, so exact pricing traced the
kernel again for almost every run of a second layer: on a PubMed-sized graph that was most of the job. On
smaller graphs (Cora-sized: every default-run figure) the exact rows are priced, as before."""


def prices_fp16_rows_by_count(num_nodes: int) -> bool:
    """Whether a hybrid X on a graph of ``num_nodes`` nodes is priced for its share of FP16 rows (so a layer
    can be priced from :class:`LayerOperands`) rather than for the rows its run chose."""
    return num_nodes > SHARE_PRICED_NODES


class LatencyModel:
    """Modelled latency (µs, ``target`` trn2: the kernel's gathers need NeuronCore-v3) of layer runs; keeps the
    launch plans and the weight
    prices it derives, keyed by the object they belong to (held, so an id is never reused while cached),
    and one :class:`~dste.kernels.cost.TraceBook` for all its matrices: the pruned matrices of every action
    and snapshot share few launch shapes, each traced once."""

    def __init__(self, target: str = "trn2"):
        if target not in ("trn1", "trn2"):
            raise ValueError(f"target must be 'trn2', got {target!r}")
        from dste.kernels.launch_spmm import require_indirect_dma

        require_indirect_dma(target, "spmm_hybrid_kernel")  # refused here, not at the first latency asked for
        self.target = target
        self._plans: dict[tuple, tuple[object, object]] = {}
        self._weight_prices: dict[tuple, float] = {}
        self._spmm_prices: dict[tuple, tuple[object, float]] = {}
        self._traces = TraceBook()

    def launch_plan(self, matrix, width: int, x_mode: str):
        """The kernel's launch plan for ``matrix`` at ``width`` / ``x_mode`` (one plan serves every X of a mode);
        for a width wider than one launch (a GraphSAGE layer aggregating a wide input), the plans of its column
        blocks in order, as ``estimate_spmm`` takes them."""
        key = (id(matrix), width, x_mode)
        held = self._plans.get(key)
        if held is None or held[0] is not matrix:
            blocks = feature_blocks(width, max_features_of(matrix))
            plans = [plan_launches(matrix, block, x_mode, target=self.target) for _, block in blocks]
            held = self._plans[key] = (matrix, plans[0] if len(plans) == 1 else tuple(plans))
        return held[1]

    def weight_latency(self, run: LayerRun) -> float:
        """Modelled µs of the weight product(s) of ``run`` (see :mod:`dste.gnn.dense_cost`)."""
        setting = run.setting
        input_mode = "fp32" if setting.fp32 else "fp16" if setting.fp16_fraction == 1.0 else "int8-hybrid"
        total = 0.0
        for compressed, effective in run.weights:
            in_features, out_features = effective.shape
            weight_bytes = compressed.nbytes() if compressed is not None else 4 * effective.size
            key = (run.num_nodes, in_features, out_features, int(weight_bytes), input_mode)
            if key not in self._weight_prices:
                self._weight_prices[key] = dense_matmul_latency_us(
                    run.num_nodes, int(in_features), int(out_features), int(weight_bytes), input_mode, self.target
                )
            total += self._weight_prices[key]
        return total

    def layer_latency(self, run: LayerRun | LayerOperands, model: CompressedModel | None = None) -> float:
        """Modelled latency (µs) of ``run``: SpMM plus weight product(s). ``model`` is not needed (kept for
        callers that pass it).

        ``run`` may be a :class:`LayerOperands` (``GraphInference.layer_operands``: the layer not run) on a
        graph above ``SHARE_PRICED_NODES`` nodes, or one whose SpMM has no hybrid X: its price is then the
        same as the run's, since only the count of FP16 rows enters it."""
        return self.spmm_latency(run) + self.weight_latency(run)

    def spmm_latency(self, run: LayerRun | LayerOperands) -> float:
        """Modelled µs of the SpMM of ``run``, kept per (matrix, width, X mode, FP16 rows of X).

        The estimate reads X only for which rows are FP16 (``dste.kernels.cost``: values do not change the
        modelled cost), so runs that differ only in X's values share one estimate: the controller prices the
        same pruned matrix under the same precision thousands of times.
        """
        x_mode = run.setting.x_mode
        matrix = run.adjacency
        if isinstance(run, LayerOperands):
            rows, n_hi = None, run.n_fp16_rows
            if n_hi is not None and not prices_fp16_rows_by_count(run.num_nodes):
                raise ValueError(
                    f"a hybrid-X SpMM on {run.num_nodes} nodes (<= SHARE_PRICED_NODES = {SHARE_PRICED_NODES}) is "
                    "priced for the exact FP16 rows of its run: pass the LayerRun, not LayerOperands"
                )
        else:
            rows = run.spmm_rows
            n_hi = None if rows is None else int(rows.hi_rows.size)
        by_share = n_hi is not None and prices_fp16_rows_by_count(run.num_nodes)
        if n_hi is None:
            hi_key = None
        elif by_share:
            hi_key = ("share", n_hi)
        else:
            hi_key = hashlib.blake2b(np.ascontiguousarray(rows.hi_rows).tobytes()).hexdigest()
        key = (id(matrix), run.spmm_width, x_mode, hi_key)
        held = self._spmm_prices.get(key)
        if held is None or held[0] is not matrix:
            plan = self.launch_plan(matrix, run.spmm_width, x_mode)
            if by_share:
                share = n_hi / max(run.num_nodes, 1)
                estimate = estimate_spmm(matrix, run.spmm_width, x_mode, self.target, hi_fraction=share, plan=plan,
                                         traces=self._traces)
            else:
                estimate = estimate_spmm(matrix, run.spmm_width, x_mode, self.target, X=rows, plan=plan,
                                         traces=self._traces)
            held = self._spmm_prices[key] = (matrix, float(estimate.latency_us))
        return held[1]
