"""The controller's environment on the real layers: a trained two-layer GCN/SAGE over a snapshot stream.

What an action does to layer l on snapshot n (see ``dste.controller.actions``):

* **sparsity s** -- drops the fraction s of the layer's off-diagonal propagation entries, least important
  first. An edge (i <- j) is scored by its propagation weight times the norm of the row it carries
  (|A_ij| * ||z_j||, z = the FP32 message the layer aggregates on this snapshot), divided by the number of
  edges sharing its gathered X row inside the 128-row window: an edge that is alone in its window column
  costs one whole gathered row of DMA, so it is dropped before an equally weak edge that shares a row.
  The kept edges are re-encoded into the DSTE format (same row/column order, BIN tiles), so dropped edges
  really remove gathered rows and tiles from the kernel's plan; each row's scale is raised so the row keeps
  its aggregation mass (sum of kept weights = sum of all weights), which for mean aggregation is exactly the
  mean over the kept neighbours. Self loops are never dropped.
* **channel sparsity c** -- drops the fraction c of the layer's input channels, least important first. A
  channel is scored by the norm of its row in the layer's weight(s) times the root-mean-square of the FP32
  layer input's column on this snapshot (label-free). The weight is encoded over the kept channels only, so
  its product gathers fewer rows, and only the kept columns of the layer input are quantized, stored and
  read (for SAGE the SpMM's dense operand narrows too). The action's sparsity level and channel level are
  independent: which one is cheap in accuracy depends on the graph and its features.
* **FP16 fraction f** -- the f most sensitive rows (``dste.format.quantize_rows``) of the layer input and of
  the SpMM's dense operand are FP16, the rest INT8 with a per-row scale; weight tiles are all INT8 for f = 0,
  all FP16 for f = 1 and chosen by the sensitivity rule (S >= T) in between.

Latency is modelled with ``dste.kernels.cost.estimate_spmm`` (trn2) on the exact matrices and hybrid rows
the layer runs: the SpMM over the pruned propagation matrix plus the weight product(s) ``W^T h^T`` as the
layers run them. Accuracy is measured on the validation nodes of training snapshots and on the test nodes of
held-out snapshots. All numbers come from a fast NumPy execution of the same dequantized values and masks;
``forward_ops`` runs the same configuration through ``dste.spmm`` (the torch ops) and the tests check both
agree.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from dste.controller.actions import ActionSpace
from dste.controller.env import FP32_ACTION, CompressionEnv, EpisodeOutcome, LayerReport, check_split
from dste.controller.state import (
    MaskSummary,
    activation_features,
    build_state,
    graph_features,
    layer_features,
    mask_features,
)

__all__ = ["GNNCompressionEnv", "LayerPlan"]

TRAIN_ACCURACY_TERMS = ("val", "agreement")
"""Accuracy term on training snapshots: "val" (default) = accuracy on the snapshot's validation labels;
"agreement" = share of all nodes whose prediction matches the FP32 model's on the same snapshot (label-free,
for streams without fresh labels)."""
ALL_INT8_THRESHOLD = 1e30  # sensitivity S never exceeds 1: any T above it means all-INT8 weight tiles
CACHE_ENTRIES = 4096


@dataclass
class LayerPlan:
    """Everything the environment needs about one layer's propagation on one snapshot."""

    rows: np.ndarray  # int64 [nnz] of the binary structure (self loops included for GCN)
    cols: np.ndarray
    row_scale: np.ndarray  # float32 [n]: D^-1/2 (GCN) or 1/deg (mean)
    col_scale: np.ndarray | None  # float32 [n] (GCN) or None
    base: object  # the unpruned DSTEMatrix (its permutation is reused for every pruned version)


def _layer_kind(model) -> str:
    kind = getattr(model, "conv_kind", None)
    if kind not in ("gcn", "sage"):
        raise TypeError(f"model must be a dste.gnn TwoLayerGNN (gcn or sage), got {type(model).__name__}")
    return kind


class GNNCompressionEnv(CompressionEnv):
    """A ``CompressionEnv`` over ``snapshots`` (``dste.data.Graph``) and a trained ``dste.gnn`` model.

    train_ids / heldout_ids: indices into ``snapshots``; the snapshot before each one in the list is its
    "previous" snapshot for churn features. ``target``: the modelled NeuronCore ("trn2" or "trn1").
    """

    def __init__(
        self,
        model,
        snapshots: Sequence,
        train_ids: Sequence[int],
        heldout_ids: Sequence[int],
        action_space: ActionSpace | None = None,
        target: str = "trn2",
        budget_actions: Sequence[int] | None = None,
        train_accuracy: str = "val",
    ) -> None:
        self.kind = _layer_kind(model)
        if not snapshots:
            raise ValueError("the environment needs at least one snapshot")
        for name, ids in (("train_ids", train_ids), ("heldout_ids", heldout_ids)):
            if not ids:
                raise ValueError(f"{name} must name at least one snapshot")
            bad = [i for i in ids if not 0 <= int(i) < len(snapshots)]
            if bad:
                raise ValueError(f"{name} {bad} are outside the {len(snapshots)} snapshots")
        if set(train_ids) & set(heldout_ids):
            raise ValueError("train and held-out snapshots must be disjoint")
        self.model = model.eval()
        self.graphs = list(snapshots)
        self._train, self._heldout = [int(i) for i in train_ids], [int(i) for i in heldout_ids]
        self.action_space = action_space or ActionSpace()
        self.num_layers = len(model.convs)
        self.target = target
        self._weights = [self._layer_weights(conv) for conv in model.convs]
        self._plans: dict[int, list[LayerPlan]] = {}
        self._fp32: dict[int, list[np.ndarray]] = {}
        self._graph_state: dict[int, np.ndarray] = {}
        self._reference: dict[int, tuple[float, int]] = {}
        self._cache: OrderedDict = OrderedDict()
        if budget_actions is not None and len(budget_actions) != self.num_layers:
            raise ValueError(f"budget_actions needs one action per layer ({self.num_layers}), got {len(budget_actions)}")
        self.budget_actions = None if budget_actions is None else [int(a) for a in budget_actions]
        self._budget: dict[int, float] = {}
        self._latency_tables: dict[tuple[int, int], np.ndarray] = {}
        self.set_train_accuracy(train_accuracy)
        self.begin_stream()

    # ------------------------------------------------------------------ protocol
    def snapshots(self, split: str) -> Sequence[int]:
        return self._train if check_split(split) == "train" else self._heldout

    def begin_stream(self) -> None:
        self._previous = [MaskSummary() for _ in range(self.num_layers)]
        self._snapshot = None

    def reset(self, snapshot: int) -> None:
        if not 0 <= int(snapshot) < len(self.graphs):
            raise ValueError(f"snapshot {snapshot} is outside [0, {len(self.graphs)})")
        self._snapshot = int(snapshot)
        self._actions: list[int] = []
        self._reports: list[LayerReport] = []

    def state(self, layer: int) -> np.ndarray:
        self._check_turn(layer)
        n = self._snapshot
        h = self._layer_input(n, tuple(self._actions))
        spent = self.spent_latency() / self.reference_latency(n)
        upstream = self._actions[-1] if self._actions else -1
        return build_state(
            self._graph_features(n),
            self._cached(("act", n, tuple(self._actions)), lambda: activation_features(h)),
            mask_features(self._previous[layer], self.action_space, max(upstream, -1), spent, self.budget_fraction(n)),
            layer_features(layer, self.num_layers),
        )

    def step(self, layer: int, action: int) -> LayerReport:
        self._check_turn(layer)
        if action != FP32_ACTION:
            self.action_space[action]  # raises a clear error for a bad index
        n = self._snapshot
        prefix = tuple(self._actions)
        _, report = self._run_layer(n, layer, prefix, int(action))
        self._actions.append(int(action))
        self._reports.append(report)
        reference = self.reference_latency(n)
        self._previous[layer] = MaskSummary(
            action_index=int(action),
            sparsity=report.sparsity,
            fp16_fraction=report.fp16_fraction,
            kind_mix=report.kind_mix,
            n_tiles=report.n_tiles,
            latency_share=report.latency_us / reference,
        )
        return report

    def current_snapshot(self) -> int:
        if self._snapshot is None:
            raise RuntimeError("call reset(snapshot) first")
        return self._snapshot

    def spent_latency(self) -> float:
        return float(sum(r.latency_us for r in self._reports))

    def latency_table(self, snapshot: int, layer: int) -> np.ndarray:
        """Per action, the modelled latency of ``layer`` on ``snapshot``, the earlier layers at uniform INT8.

        Exact whatever the earlier layers ran with, except for actions with a 0 < FP16 fraction < 1: which
        rows of the layer's input are FP16 (and so the correction pass) depends slightly on the input.
        """
        if not 0 <= layer < self.num_layers:
            raise ValueError(f"layer must lie in [0, {self.num_layers}), got {layer}")
        key = (int(snapshot), int(layer))
        if key not in self._latency_tables:
            prefix = (self.action_space.nearest(0.0, 0.0),) * layer
            self._latency_tables[key] = np.array(
                [self._run_layer(int(snapshot), layer, prefix, a)[1].latency_us for a in range(len(self.action_space))]
            )
        return self._latency_tables[key]

    def outcome(self) -> EpisodeOutcome:
        if self._snapshot is None or len(self._actions) != self.num_layers:
            raise RuntimeError("outcome() needs every layer stepped first (reset, then state/step per layer)")
        n = self._snapshot
        logits = self._layer_input(n, tuple(self._actions))
        accuracy = self.accuracy_of(n, logits)
        breakdown = self._footprint(self._reports, self._actions)
        return EpisodeOutcome(
            snapshot=n,
            accuracy=accuracy,
            latency_us=self.spent_latency(),
            nbytes=int(sum(breakdown.values())),
            bytes_by_kind=breakdown,
            reference_latency_us=self.reference_latency(n),
            actions=list(self._actions),
            layers=list(self._reports),
            budget_fraction=self.budget_fraction(n),
            reference_nbytes=self.reference_nbytes(n),
        )

    def _footprint(self, reports: Sequence[LayerReport], actions: Sequence[int]) -> dict:
        """Bytes by kind (graph, features, weights, activations) of an episode's layers."""
        breakdown = {key: sum(r.bytes_by_kind[key] for r in reports) for key in reports[0].bytes_by_kind}
        if all(self.action_space_sparsity(a) == 0.0 for a in actions):
            # every layer propagates over the same unpruned matrix: it is stored once
            breakdown["graph"] = reports[0].bytes_by_kind["graph"]
        return breakdown

    def accuracy_of(self, n: int, logits: np.ndarray) -> float:
        """The accuracy term of snapshot n: see ``TRAIN_ACCURACY_TERMS``; held-out snapshots use test labels."""
        graph = self.graphs[n]
        predicted = logits.argmax(axis=1)
        if n in self._train and self.train_accuracy == "agreement":
            reference = self._layer_input(n, (FP32_ACTION,) * self.num_layers).argmax(axis=1)
            return float(np.mean(predicted == reference))
        mask = graph.val_mask if n in self._train else graph.test_mask
        return float(np.mean(predicted[mask] == graph.y[mask])) if mask.any() else 0.0

    def set_train_accuracy(self, term: str) -> None:
        """Change the accuracy term of training snapshots (see ``TRAIN_ACCURACY_TERMS``)."""
        if term not in TRAIN_ACCURACY_TERMS:
            raise ValueError(f"train_accuracy must be one of {TRAIN_ACCURACY_TERMS}, got {term!r}")
        self.train_accuracy = term

    def set_budget_actions(self, budget_actions: Sequence[int] | None) -> None:
        """Change (or remove, with None) the static actions whose latency sets each snapshot's budget."""
        if budget_actions is not None and len(budget_actions) != self.num_layers:
            raise ValueError(f"budget_actions needs one action per layer ({self.num_layers}), got {len(budget_actions)}")
        self.budget_actions = None if budget_actions is None else [int(a) for a in budget_actions]
        self._budget = {}

    def budget_fraction(self, snapshot: int) -> float | None:
        """Latency of ``budget_actions`` on ``snapshot`` / reference latency: a label-free, per-snapshot
        ceiling (the cost model needs only the graph and the activations, never the labels)."""
        if self.budget_actions is None:
            return None
        if snapshot not in self._budget:
            total = sum(r.latency_us for r in self._static_reports(snapshot, self.budget_actions))
            self._budget[snapshot] = total / self.reference_latency(snapshot)
        return self._budget[snapshot]

    def action_space_sparsity(self, action: int) -> float:
        return 0.0 if action == FP32_ACTION else self.action_space[action].sparsity

    def reference_latency(self, snapshot: int) -> float:
        return self._reference_run(snapshot)[0]

    def reference_nbytes(self, snapshot: int) -> int:
        """Footprint (bytes) of uniform INT8 on ``snapshot``: the scale of the reward's memory budget."""
        return self._reference_run(snapshot)[1]

    def _reference_run(self, snapshot: int) -> tuple[float, int]:
        if snapshot not in self._reference:
            actions = [self.action_space.nearest(0.0, 0.0)] * self.num_layers
            reports = self._static_reports(snapshot, actions)
            footprint = self._footprint(reports, actions)
            self._reference[snapshot] = (float(sum(r.latency_us for r in reports)), int(sum(footprint.values())))
        return self._reference[snapshot]

    def _static_reports(self, snapshot: int, actions: Sequence[int]) -> list[LayerReport]:
        """The layer reports of ``actions`` (one per layer) on ``snapshot``, outside any episode."""
        prefix: tuple = ()
        reports = []
        for layer, action in enumerate(actions):
            _, report = self._run_layer(snapshot, layer, prefix, action)
            reports.append(report)
            prefix = prefix + (action,)
        return reports

    # ------------------------------------------------------------------ layers
    def _check_turn(self, layer: int) -> None:
        if self._snapshot is None:
            raise RuntimeError("call reset(snapshot) before state/step")
        if layer != len(self._actions):
            raise ValueError(f"layer {layer} is out of turn: layers are stepped in order, next is {len(self._actions)}")

    @staticmethod
    def _layer_weights(conv):
        linears = [conv.lin] if hasattr(conv, "lin") else [conv.lin_l, conv.lin_r]
        bias = conv.bias if getattr(conv, "bias", None) is not None else getattr(conv.lin_l, "bias", None)
        return linears, (bias.detach().numpy().astype(np.float32) if bias is not None else None)

    def _cached(self, key, build):
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        value = build()
        self._store(key, value)
        return value

    def _store(self, key, value) -> None:
        self._cache[key] = value
        while len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)

    def _layer_input(self, n: int, prefix: tuple) -> np.ndarray:
        if not prefix:
            return np.ascontiguousarray(self.graphs[n].x, dtype=np.float32)
        output, _ = self._run_layer(n, len(prefix) - 1, prefix[:-1], prefix[-1])
        return output

    def _run_layer(self, n: int, layer: int, prefix: tuple, action: int):
        return self._cached(("layer", n, prefix, action), lambda: self._compute_layer(n, layer, prefix, action))

    def _compute_layer(self, n: int, layer: int, prefix: tuple, action: int):
        from dste.kernels.cost import estimate_spmm

        h = self._layer_input(n, prefix)
        plan = self._plan(n)[layer]
        linears, bias = self._weights[layer]
        num_nodes = h.shape[0]
        fp32 = action == FP32_ACTION
        chosen = None if fp32 else self.action_space[action]
        sparsity = 0.0 if fp32 else chosen.sparsity
        fraction = 0.0 if fp32 else chosen.fp16_fraction

        channel_sparsity = 0.0 if fp32 else chosen.channel_sparsity
        kept = self.kept_channels(n, layer, channel_sparsity)
        if kept is not None:
            h = np.ascontiguousarray(h[:, kept])

        adjacency = plan.base if sparsity == 0.0 else self._pruned(n, layer, sparsity)
        a_eff = self._cached(("csr", id(adjacency)), lambda: adjacency.decode(effective=True, dtype=np.float32))
        weights = [self._weight(lin, fraction, fp32, (n, layer, channel_sparsity), kept) for lin in linears]
        weight_latency = sum(self._weight_latency(lin, w, num_nodes) for lin, w in zip(linears, weights))

        # The SpMM's dense operand: FP32 for the uncompressed layer, plain FP16 rows for f = 1 (uniform FP16:
        # no INT8 rows, so no per-row scales or second gather), INT8 rows + FP16 outliers otherwise.
        x_mode = "fp32" if fp32 else "fp16" if fraction == 1.0 else "int8-hybrid"
        hybrid = None
        if fp32:
            h_used = h
        else:
            hybrid_in = _quantize_rows(h, fraction)
            h_used = hybrid_in.dequantize()
        if self.kind == "gcn":
            message = h_used @ weights[0][1]
            if not fp32:
                quantized = _quantize_rows(message, fraction)
                message = quantized.dequantize()
                hybrid = quantized if x_mode == "int8-hybrid" else None
            out = a_eff @ message
            spmm_width = message.shape[1]
        else:  # SAGE mean: lin_l(A h) + lin_r(h), the SpMM reads the (hybrid) layer input
            hybrid = hybrid_in if x_mode == "int8-hybrid" else None
            out = (a_eff @ h_used) @ weights[0][1] + h_used @ weights[1][1]
            spmm_width = h_used.shape[1]
        if bias is not None:
            out = out + bias
        if layer < self.num_layers - 1:
            out = np.maximum(out, 0.0)
        out = np.ascontiguousarray(out, dtype=np.float32)

        estimate = estimate_spmm(
            adjacency, spmm_width, x_mode, self.target, X=hybrid, plan=self._launch_plan(adjacency, spmm_width, x_mode)
        )
        weight_bytes = sum(w[0].nbytes() if w[0] is not None else w[1].size * 4 for w in weights)
        weight_bytes += 4 * bias.size if bias is not None else 0
        input_bytes = hybrid_in.nbytes()["total"] if not fp32 else int(h.nbytes)
        graph_bytes = int(adjacency.nbytes()["device_total"])
        if fp32:  # the FP32 reference stores the propagation matrix as CSR: int32 indices, float32 values
            graph_bytes = 4 * (num_nodes + 1) + 8 * int(adjacency.nnz_kept)
        breakdown = {
            "graph": graph_bytes,
            "features": input_bytes if layer == 0 else 0,
            "weights": int(weight_bytes),
            "activations": input_bytes if layer > 0 else 0,
        }
        kinds = np.bincount(adjacency.tile_kind, minlength=3)[:3].astype(float) if adjacency.n_tiles else np.zeros(3)
        weight_kinds = sum(
            (np.bincount(w[0].matrix.tile_kind, minlength=3)[:3] for w in weights if w[0] is not None), np.zeros(3)
        )
        mix = kinds + weight_kinds
        report = LayerReport(
            action_index=action,
            latency_us=float(estimate.latency_us + weight_latency),
            nbytes=int(sum(breakdown.values())),
            sparsity=sparsity,
            fp16_fraction=1.0 if fp32 else fraction,
            channel_sparsity=channel_sparsity,
            kind_mix=tuple(float(v) for v in mix / max(mix.sum(), 1.0)),
            n_tiles=int(adjacency.n_tiles + adjacency.n_etiles),
            kept_fraction=float(adjacency.nnz_kept / max(plan.base.nnz_kept, 1)),
            bytes_by_kind=breakdown,
        )
        return out, report

    def _weight(self, linear, fraction: float, fp32: bool, channels_key=None, kept=None):
        """(CompressedWeight or None, effective float32 [in, out]) over the ``kept`` input channels (all if None).

        ``channels_key`` names the kept set for the cache: (snapshot, layer, channel sparsity).
        """
        if fp32:
            return None, linear.weight.detach().numpy().T.astype(np.float32)
        threshold = ALL_INT8_THRESHOLD if fraction == 0.0 else 0.0 if fraction == 1.0 else None
        key = None if kept is None else channels_key

        def build():
            from dste.gnn import CompressedWeight

            full = linear.weight.detach().numpy().T.astype(np.float32)  # [in, out]
            selected = full if kept is None else full[kept]
            weight = CompressedWeight(torch.from_numpy(np.ascontiguousarray(selected)), fp16_threshold=threshold)
            return weight, weight.effective().numpy().astype(np.float32)

        return self._cached(("weight", id(linear), threshold, key), build)

    def _weight_latency(self, linear, weight, num_nodes: int) -> float:
        from dste.kernels.cost import estimate_spmm

        compressed, _ = weight
        if compressed is None:  # FP32: the same block tiles, priced as the FP16 encoding of the weight
            compressed = self._weight(linear, 1.0, False)[0]
        # The layers run h @ W as W^T_enc @ h^T with the (dequantized) activations as an FP32 operand.
        return self._cached(
            ("wlat", id(compressed), num_nodes),
            lambda: float(estimate_spmm(compressed.matrix, num_nodes, "fp32", self.target).latency_us),
        )

    def _launch_plan(self, matrix, width: int, x_mode: str):
        """The kernel's launch plan for ``matrix`` at ``width`` / ``x_mode`` (one plan serves every X of a mode,
        so it is built once per matrix and reused for every hybrid X the actions produce)."""
        from dste.kernels.plan import plan_launches

        key = ("launch-plan", id(matrix), width, x_mode)
        held = self._cached(key, lambda: (matrix, plan_launches(matrix, width, x_mode, target=self.target)))
        if held[0] is not matrix:  # the id belonged to a matrix evicted since
            held = (matrix, plan_launches(matrix, width, x_mode, target=self.target))
            self._store(key, held)
        return held[1]

    def kept_channels(self, n: int, layer: int, channel_sparsity: float) -> np.ndarray | None:
        """Sorted input channels layer ``layer`` keeps on snapshot n at ``channel_sparsity`` (None: all).

        Score of channel c = ||W[c, :]|| (summed in square over the layer's linear maps) times the
        root-mean-square of column c of the FP32 layer input; the lowest ``floor(c * F)`` are dropped, ties by
        channel index; at least one channel is kept.
        """
        if not 0.0 <= channel_sparsity < 1.0:
            raise ValueError(f"channel_sparsity must lie in [0, 1), got {channel_sparsity}")
        if channel_sparsity == 0.0:
            return None

        def build():
            h = self.fp32_inputs(n)[layer]
            linears, _ = self._weights[layer]
            weight_norm = np.sqrt(sum(np.square(lin.weight.detach().numpy()).sum(axis=0) for lin in linears))
            rms = np.sqrt(np.mean(np.square(h, dtype=np.float64), axis=0))
            score = weight_norm * rms
            n_drop = min(int(math.floor(channel_sparsity * score.size)), score.size - 1)
            order = np.argsort(score, kind="stable")
            return np.sort(order[n_drop:])

        return self._cached(("channels", n, layer, channel_sparsity), build)

    # ------------------------------------------------------------------ per-snapshot preparation
    def _plan(self, n: int) -> list[LayerPlan]:
        if n not in self._plans:
            from dste.gnn import propagation_matrix
            from dste.format.gcn import gcn_structure

            graph = self.graphs[n]
            norm = "gcn" if self.kind == "gcn" else "mean"
            base = propagation_matrix(graph.adj, graph.num_nodes, norm).matrix
            if self.kind == "gcn":
                rows, cols, _, _, dinv = gcn_structure(graph.adj)
                plan = LayerPlan(rows, cols, dinv, dinv, base)
            else:
                coo = graph.adj.tocoo()
                order = np.lexsort((coo.col, coo.row))
                rows, cols = coo.row[order].astype(np.int64), coo.col[order].astype(np.int64)
                degree = np.bincount(rows, minlength=graph.num_nodes).astype(np.float32)
                scale = np.where(degree > 0, 1.0 / np.maximum(degree, 1), 0.0).astype(np.float32)
                plan = LayerPlan(rows, cols, scale, None, base)
            self._plans[n] = [plan] * self.num_layers
        return self._plans[n]

    def fp32_inputs(self, n: int) -> list[np.ndarray]:
        """Per layer, the layer's input on snapshot n under the FP32 model (for channel importance)."""
        if n not in self._fp32:
            inputs, h = [], np.ascontiguousarray(self.graphs[n].x, dtype=np.float32)
            prefix: tuple = ()
            for layer in range(self.num_layers):
                inputs.append(h)
                h, _ = self._run_layer(n, layer, prefix, FP32_ACTION)
                prefix = prefix + (FP32_ACTION,)
            self._fp32[n] = inputs
        return self._fp32[n]

    def fp32_activations(self, n: int) -> list[np.ndarray]:
        """Per layer, the FP32 message the layer aggregates on snapshot n (for edge importance)."""

        def build():
            messages = []
            for layer, h in enumerate(self.fp32_inputs(n)):
                linears, _ = self._weights[layer]
                messages.append(h @ linears[0].weight.detach().numpy().T if self.kind == "gcn" else h)
            return messages

        return self._cached(("fp32-messages", n), build)

    def _pruned(self, n: int, layer: int, sparsity: float):
        return self._cached(("pruned", n, layer, sparsity), lambda: self._encode_pruned(n, layer, sparsity))

    def _encode_pruned(self, n: int, layer: int, sparsity: float):
        from dste.format import EncodePolicy
        from dste.format.encoder import encode_coo

        plan = self._plan(n)[layer]
        keep = edge_keep(plan, self.fp32_activations(n)[layer], sparsity, plan.base.row_perm)
        rows, cols = plan.rows[keep], plan.cols[keep]
        col_scale = plan.col_scale if plan.col_scale is not None else np.ones_like(plan.row_scale)
        full_mass = np.bincount(plan.rows, weights=col_scale[plan.cols], minlength=plan.row_scale.size)
        kept_mass = np.bincount(rows, weights=col_scale[cols], minlength=plan.row_scale.size)
        boost = np.where(kept_mass > 0, full_mass / np.maximum(kept_mass, 1e-30), 0.0)
        row_scale = (plan.row_scale * boost).astype(np.float32)
        policy = EncodePolicy(
            kinds="bin", row_scale=row_scale, col_scale=plan.col_scale, scaled_input=False
        )
        shape = (plan.row_scale.size, plan.row_scale.size)
        return encode_coo(
            rows, cols, np.ones(rows.size), shape, policy, row_perm=plan.base.row_perm, col_perm=plan.base.col_perm
        )

    def _graph_features(self, n: int) -> np.ndarray:
        if n not in self._graph_state:
            graph = self.graphs[n]
            previous = None
            if n - 1 >= 0 and self.graphs[n - 1].num_nodes == graph.num_nodes:
                previous = self.graphs[n - 1]
            self._graph_state[n] = graph_features(
                graph.adj, graph.x, previous.adj if previous else None, previous.x if previous else None
            )
        return self._graph_state[n]

    # ------------------------------------------------------------------ the torch-op path
    def forward_ops(self, n: int, actions: Sequence[int], backend: str = "cpu") -> torch.Tensor:
        """Logits of snapshot n under per-layer ``actions``, run through ``dste.spmm`` (the torch ops)."""
        from dste.bindings import DSTETensor, spmm

        if len(actions) != self.num_layers:
            raise ValueError(f"need one action per layer ({self.num_layers}), got {len(actions)}")
        h = torch.from_numpy(np.ascontiguousarray(self.graphs[n].x, dtype=np.float32))
        for layer, action in enumerate(actions):
            plan = self._plan(n)[layer]
            linears, bias = self._weights[layer]
            fp32 = action == FP32_ACTION
            chosen = None if fp32 else self.action_space[action]
            adjacency = plan.base if fp32 or chosen.sparsity == 0 else self._pruned(n, layer, chosen.sparsity)
            a = DSTETensor(adjacency)
            fraction = 0.0 if fp32 else chosen.fp16_fraction
            channel_sparsity = 0.0 if fp32 else chosen.channel_sparsity
            kept = self.kept_channels(n, layer, channel_sparsity)
            if kept is not None:
                h = h[:, torch.from_numpy(kept)].contiguous()
            key = (n, layer, channel_sparsity)
            weights = [self._weight(lin, fraction, fp32, key, kept)[0] for lin in linears]

            def linear(x, index):
                if weights[index] is None:
                    return x @ linears[index].weight.detach().t()
                return weights[index](x, backend=backend)

            if fp32:
                x_used, operand = h, None
            else:
                hybrid_in = _quantize_rows(h.numpy(), fraction)
                x_used = torch.from_numpy(hybrid_in.dequantize())
            if self.kind == "gcn":
                message = linear(x_used, 0)
                operand = message if fp32 else _quantize_rows(message.numpy(), fraction)
                out = spmm(a, operand, backend=backend)
            else:
                operand = x_used if fp32 else hybrid_in
                out = linear(spmm(a, operand, backend=backend), 0) + linear(x_used, 1)
            if bias is not None:
                out = out + torch.from_numpy(bias)
            h = torch.relu(out) if layer < self.num_layers - 1 else out
        return h


def row_sensitivity(x: np.ndarray) -> np.ndarray:
    """Per-row sensitivity S of ``dste.format.hybrid_rows.row_sensitivity`` computed on the 2-D array at once.

    Same formula (rms INT8 error over mean |x| with scale max|x| / 127, round half to even, float32 values);
    the group-by-id reference is general but slow on the [n, F] activations the environment quantizes
    thousands of times.
    """
    x = np.asarray(x, dtype=np.float32)
    amax = np.abs(x).max(axis=1, keepdims=True)
    scale = np.where(amax > 0, amax / np.float32(127.0), np.float32(1.0)).astype(np.float32)
    deq = np.clip(np.rint(x / scale), -128, 127).astype(np.float32) * scale
    error = x.astype(np.float64) - deq
    rms = np.sqrt(np.mean(error * error, axis=1))
    mean_abs = np.mean(np.abs(x.astype(np.float64)), axis=1)
    return np.where(mean_abs > 0, rms / np.where(mean_abs > 0, mean_abs, 1.0), 0.0)


def _quantize_rows(x: np.ndarray, fraction: float):
    from dste.format import quantize_rows

    return quantize_rows(x, sensitivity=row_sensitivity(x), fp16_fraction=fraction)


def edge_keep(plan: LayerPlan, message: np.ndarray, sparsity: float, row_perm=None) -> np.ndarray:
    """Boolean keep flags over ``plan``'s entries dropping the ``sparsity`` fraction of off-diagonal edges.

    Score = propagation weight * ||message_j|| / (edges sharing j's gathered row in the same window):
    lowest first, ties by storage order (deterministic). Self loops are always kept.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must lie in [0, 1), got {sparsity}")
    rows, cols = plan.rows, plan.cols
    keep = np.ones(rows.size, dtype=bool)
    off_diagonal = np.flatnonzero(rows != cols)
    n_drop = int(math.floor(sparsity * off_diagonal.size))
    if n_drop == 0:
        return keep
    n = plan.row_scale.size
    col_scale = plan.col_scale if plan.col_scale is not None else np.ones(n, np.float32)
    weight = plan.row_scale[rows] * col_scale[cols]
    norms = np.linalg.norm(message, axis=1)
    position = np.empty(n, dtype=np.int64)
    position[row_perm if row_perm is not None else np.arange(n)] = np.arange(n)
    window_column = (position[rows] // 128) * n + cols
    _, inverse, sharing = np.unique(window_column, return_inverse=True, return_counts=True)
    score = weight * norms[cols] / sharing[inverse]
    order = np.argsort(score[off_diagonal], kind="stable")
    keep[off_diagonal[order[:n_drop]]] = False
    return keep
