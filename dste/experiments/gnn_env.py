"""The controller's environment on the real layers: a trained two-layer GCN/SAGE over a snapshot stream.

What an action does to layer l on snapshot n (see ``dste.controller.actions``):

* **sparsity s** -- drops the fraction s of the layer's off-diagonal propagation entries, least important
  first, by ``dste.gnn.pruning.GatherAwarePruning``: an edge (i <- j) is scored by its propagation weight
  times the norm of the FP32 message it carries, divided by the number of edges sharing its gathered X row
  inside the 128-row window; the kept edges are re-encoded and each row keeps its aggregation mass. Self
  loops are never dropped.
* **channel sparsity c** -- drops the fraction c of the layer's input channels, least important first. A
  channel is scored by the norm of its row in the layer's weight(s) times the root-mean-square of the FP32
  layer input's column on this snapshot (label-free). The weight is encoded over the kept channels only, so
  its product gathers fewer rows, and only the kept columns of the layer input are quantized, stored and
  read (for SAGE the SpMM's dense operand narrows too). The action's sparsity level and channel level are
  independent: which one is cheap in accuracy depends on the graph and its features.
* **FP16 fraction f** -- the f most sensitive rows (``dste.format.quantize_rows``) of the layer input and of
  the SpMM's dense operand are FP16, the rest INT8 with a per-row scale; weight tiles are all INT8 for f = 0,
  all FP16 for f = 1 and chosen by the sensitivity rule (S >= T) in between.

The layer runs are the one compressed forward pass of ``dste.gnn`` (``dste.gnn.execution``), evaluated
and reported by ``dste.experiments.env_layers.LayerEvaluator``: latency modelled by ``dste.gnn.latency``
(``dste.kernels.estimate_spmm``, trn2 by default; never measured), bytes by ``dste.gnn.footprint``. Accuracy
is measured on the validation nodes of training snapshots and on the test nodes of held-out snapshots. All
numbers come from the NumPy execution of the dequantized values and masks; ``forward_ops`` runs the same
configuration through ``dste.spmm`` (the torch ops) and the tests check both agree.

An environment's goal (its latency budget and its training accuracy term) is fixed when it is built;
:meth:`GNNCompressionEnv.variant` builds another environment with another goal over the same layer runs.
"""


from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from dste.controller.actions import ActionSpace
from dste.controller.env import FP32_ACTION, CompressionEnv, EpisodeOutcome, LayerReport, check_split
from dste.controller.state import MaskSummary, build_state, layer_features, mask_features

from .env_layers import LayerEvaluator

__all__ = ["GNNCompressionEnv", "TRAIN_ACCURACY_TERMS"]

TRAIN_ACCURACY_TERMS = ("val", "agreement")
"""Accuracy term on training snapshots: "val" (default) = accuracy on the snapshot's validation labels;
"agreement" = share of all nodes whose prediction matches the FP32 model's on the same snapshot (label-free,
for streams without fresh labels)."""

_SAME = object()  # variant(): keep this field of the goal


def _share(correct: np.ndarray) -> float:
    """The share of True in a per-node correctness vector; 0 for a snapshot with no evaluation nodes."""
    return float(correct.mean()) if correct.size else 0.0


def _check_indices(name: str, values) -> None:
    """Snapshot and action indices are ints: ``int(1.5)`` would quietly make a held-out snapshot a training one."""
    bad = [v for v in values if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer))]
    if bad:
        raise TypeError(f"{name} must be int indices, got {bad}")


class GNNCompressionEnv(CompressionEnv):
    """A ``CompressionEnv`` over ``snapshots`` (``dste.data.Graph``) and a trained ``dste.gnn`` model.

    train_ids / heldout_ids: indices into ``snapshots``; the snapshot before each one in the list is its
    "previous" snapshot for churn features. ``target``: the modelled NeuronCore ("trn2"; the kernel's gathers need NeuronCore-v3, so "trn1" is refused).
    ``budget_actions``: one static action per layer whose modelled latency on each snapshot is that
    snapshot's budget (None: no budget). ``train_accuracy``: see ``TRAIN_ACCURACY_TERMS``.
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
        *,
        layers: LayerEvaluator | None = None,
    ) -> None:
        if len(snapshots) == 0:
            raise ValueError("the environment needs at least one snapshot")
        # a stream's own train_indices / heldout_indices are NumPy arrays, whose truth value is ambiguous
        # and a generator would be used up by the checks below, leaving no snapshot to train on
        train_ids, heldout_ids = (list(np.ravel(ids)) if isinstance(ids, np.ndarray) else list(ids)
                                  for ids in (train_ids, heldout_ids))
        for name, ids in (("train_ids", train_ids), ("heldout_ids", heldout_ids)):
            if not ids:
                raise ValueError(f"{name} must name at least one snapshot")
            _check_indices(name, ids)
            bad = [i for i in ids if not 0 <= int(i) < len(snapshots)]
            if bad:
                raise ValueError(f"{name} {bad} are outside the {len(snapshots)} snapshots")
        if set(train_ids) & set(heldout_ids):
            raise ValueError("train and held-out snapshots must be disjoint")
        if train_accuracy not in TRAIN_ACCURACY_TERMS:
            raise ValueError(f"train_accuracy must be one of {TRAIN_ACCURACY_TERMS}, got {train_accuracy!r}")
        self.layers = layers or LayerEvaluator(model, snapshots, action_space or ActionSpace(), target)
        self.action_space = self.layers.action_space
        self.num_layers = self.layers.num_layers
        self.graphs = self.layers.graphs
        self._train, self._heldout = [int(i) for i in train_ids], [int(i) for i in heldout_ids]
        if budget_actions is not None and len(budget_actions) != self.num_layers:
            raise ValueError(f"budget_actions needs one action per layer ({self.num_layers}), got {len(budget_actions)}")
        if budget_actions is not None:
            _check_indices("budget_actions", budget_actions)
            outside = [a for a in budget_actions if a != FP32_ACTION and not 0 <= a < len(self.action_space)]
            if outside:  # an IndexError came only where a budget was first read
                raise ValueError(f"budget_actions {outside} are outside the action space [0, "
                                 f"{len(self.action_space)}) (or FP32_ACTION, {FP32_ACTION}: the FP32 layer)")
        self.budget_actions = None if budget_actions is None else tuple(int(a) for a in budget_actions)
        self.train_accuracy = train_accuracy
        self._budget: dict[int, float] = {}
        self._evaluated_nodes: dict[int, np.ndarray] = {}
        self.begin_stream()

    def variant(self, *, budget_actions=_SAME, train_accuracy=_SAME) -> "GNNCompressionEnv":
        """A new environment over the same model, snapshots and layer runs with another goal (budget actions
        and/or training accuracy term); this one is unchanged."""
        return GNNCompressionEnv(
            self.layers.model.model,
            self.graphs,
            self._train,
            self._heldout,
            budget_actions=self.budget_actions if budget_actions is _SAME else budget_actions,
            train_accuracy=self.train_accuracy if train_accuracy is _SAME else train_accuracy,
            layers=self.layers,
        )

    @property
    def target(self) -> str:
        return self.layers.target

    # ------------------------------------------------------------------ protocol
    def snapshots(self, split: str) -> Sequence[int]:
        return self._train if check_split(split) == "train" else self._heldout

    def begin_stream(self) -> None:
        self._previous = [MaskSummary() for _ in range(self.num_layers)]
        self._snapshot = None

    def reset(self, snapshot: int) -> None:
        self._snapshot = self._checked_snapshot(snapshot)
        self._actions: list[int] = []
        self._reports: list[LayerReport] = []

    def state(self, layer: int) -> np.ndarray:
        self._check_turn(layer)
        n = self._snapshot
        spent = self.spent_latency() / self.reference_latency(n)
        upstream = self._actions[-1] if self._actions else -1
        return build_state(
            self.layers.graph_state(n),
            self.layers.activation_state(n, tuple(self._actions)),
            mask_features(self._previous[layer], self.action_space, max(upstream, -1), spent, self.budget_fraction(n)),
            layer_features(layer, self.num_layers),
        )

    def step(self, layer: int, action: int) -> LayerReport:
        self._check_turn(layer)
        if action != FP32_ACTION:
            self.action_space[action]  # raises a clear error for a bad index
        n = self._snapshot
        _, report = self.layers.run_layer(n, layer, tuple(self._actions), int(action))
        self._actions.append(int(action))
        self._reports.append(report)
        self._previous[layer] = MaskSummary(
            action_index=int(action),
            sparsity=report.sparsity,
            fp16_fraction=report.fp16_fraction,
            channel_sparsity=report.channel_sparsity,
            kind_mix=report.kind_mix,
            n_tiles=report.n_tiles,
            latency_share=report.latency_us / self.reference_latency(n),
        )
        return report

    def current_snapshot(self) -> int:
        if self._snapshot is None:
            raise RuntimeError("call reset(snapshot) first")
        return self._snapshot

    def spent_latency(self) -> float:
        return float(sum(r.latency_us for r in self._reports))

    def action_latency(self, layer: int, action: int) -> float:
        """The modelled latency ``step(layer, action)`` would report now: the layer run under this episode's
        earlier actions (kept, so the step that follows reuses it), exact where ``latency_table`` estimates."""
        self._check_turn(layer)
        if action != FP32_ACTION:
            self.action_space[action]  # raises a clear error for a bad index
        _, report = self.layers.run_layer(self._snapshot, layer, tuple(self._actions), int(action))
        return float(report.latency_us)

    def latency_table(self, snapshot: int, layer: int) -> np.ndarray:
        """Per action, the modelled latency of ``layer`` on ``snapshot``, the earlier layers at uniform INT8.

        Exact whatever the earlier layers ran with, except for actions with a 0 < FP16 fraction < 1: which
        rows of the layer's input are FP16 (and so the correction pass) depends slightly on the input.
        """
        return self.layers.latency_table(snapshot, layer)

    def agreement(self, snapshot: int, actions: Sequence[int]) -> float:
        """Share of all nodes of ``snapshot`` predicted as the FP32 model predicts them under ``actions`` (one action
        index per layer): the label-free accuracy term, for any snapshot, training or held out."""
        snapshot = self._checked_snapshot(snapshot)
        _check_indices("actions", actions)
        if len(actions) != self.num_layers or not all(0 <= a < len(self.action_space) for a in actions):
            raise ValueError(
                f"agreement needs {self.num_layers} action indices in [0, {len(self.action_space)}), "
                f"got {list(actions)}"
            )
        predicted = self.layers.layer_input(snapshot, tuple(int(a) for a in actions)).argmax(axis=1)
        return float(np.mean(predicted == self.layers.fp32_predictions(snapshot)))

    def outcome(self) -> EpisodeOutcome:
        if self._snapshot is None or len(self._actions) != self.num_layers:
            raise RuntimeError("outcome() needs every layer stepped first (reset, then state/step per layer)")
        n = self._snapshot
        logits = self.layers.layer_input(n, tuple(self._actions))
        breakdown = self.layers.footprint(self._reports, self._actions)
        correct = self.correct_of(n, logits)
        return EpisodeOutcome(
            snapshot=n,
            accuracy=_share(correct),
            latency_us=self.spent_latency(),
            nbytes=int(sum(breakdown.values())),
            bytes_by_kind=breakdown,
            reference_latency_us=self.reference_latency(n),
            actions=list(self._actions),
            layers=list(self._reports),
            budget_fraction=self.budget_fraction(n),
            reference_nbytes=self.reference_nbytes(n),
            correct=correct,
            nodes=self.evaluated_nodes(n),
        )

    # ------------------------------------------------------------------ the goal
    def accuracy_of(self, n: int, logits: np.ndarray) -> float:
        """The accuracy term of snapshot n: see ``TRAIN_ACCURACY_TERMS``; held-out snapshots use test labels."""
        return _share(self.correct_of(n, logits))

    def evaluated_nodes(self, n: int) -> np.ndarray:
        """int64 ids of the nodes the accuracy term of snapshot n averages, in the order of ``correct_of``. A stream
        appends new nodes and keeps the ids of the old ones, so the same id is the same node on every snapshot."""
        if n not in self._evaluated_nodes:
            graph = self.graphs[n]
            if n in self._train and self.train_accuracy == "agreement":
                nodes = np.arange(graph.num_nodes, dtype=np.int64)
            else:
                nodes = np.flatnonzero(graph.val_mask if n in self._train else graph.test_mask).astype(np.int64)
            nodes.flags.writeable = False  # one array shared by every outcome of the snapshot
            self._evaluated_nodes[n] = nodes
        return self._evaluated_nodes[n]

    def correct_of(self, n: int, logits: np.ndarray) -> np.ndarray:
        """bool per node the accuracy term of snapshot n averages (``accuracy_of``), in node order: whether the
        prediction matches the label (or, under the "agreement" term, the FP32 model's prediction)."""
        nodes = self.evaluated_nodes(n)
        predicted = logits.argmax(axis=1)[nodes]
        if n in self._train and self.train_accuracy == "agreement":
            return predicted == self.layers.fp32_predictions(n)[nodes]
        return predicted == self.graphs[n].y[nodes]

    def budget_fraction(self, snapshot: int) -> float | None:
        """Latency of ``budget_actions`` on ``snapshot`` / reference latency: a label-free, per-snapshot
        ceiling (the cost model needs only the graph and the activations, never the labels)."""
        if self.budget_actions is None:
            return None
        if snapshot not in self._budget:
            total = sum(r.latency_us for r in self.layers.static_reports(snapshot, self.budget_actions))
            self._budget[snapshot] = total / self.reference_latency(snapshot)
        return self._budget[snapshot]

    def reference_latency(self, snapshot: int) -> float:
        return self.layers.reference_run(snapshot)[0]

    def reference_nbytes(self, snapshot: int) -> int:
        """Footprint (bytes) of uniform INT8 on ``snapshot``: the scale of the reward's memory budget."""
        return self.layers.reference_run(snapshot)[1]

    def _checked_snapshot(self, snapshot) -> int:
        _check_indices("snapshot", [snapshot])
        if not 0 <= int(snapshot) < len(self.graphs):
            raise ValueError(f"snapshot {snapshot} is outside [0, {len(self.graphs)})")
        return int(snapshot)

    def _check_turn(self, layer: int) -> None:
        if self._snapshot is None:
            raise RuntimeError("call reset(snapshot) before state/step")
        if layer != len(self._actions):
            raise ValueError(f"layer {layer} is out of turn: layers are stepped in order, next is {len(self._actions)}")

    # ------------------------------------------------------------------ the torch-op path
    def forward_ops(self, n: int, actions: Sequence[int], backend: str = "cpu") -> torch.Tensor:
        """Logits of snapshot n under per-layer ``actions``, run through ``dste.spmm`` (the torch ops)."""
        return self.layers.forward_ops(n, actions, backend=backend)
