"""What every GNN environment over one model and one snapshot stream shares: layer runs and their reports.

:class:`LayerEvaluator` runs layer l of snapshot n under an action, after the earlier layers ran under a
prefix of actions, through the one compressed forward pass of ``dste.gnn`` (NumPy execution), and reports it
as the controller's :class:`~dste.controller.env.LayerReport`: modelled latency (``dste.gnn.latency``), bytes
(``dste.gnn.footprint``), tile mix. It also prices every action of a layer (the budget guard's table) and
runs the reference policy (uniform INT8). Environments that differ only in their goal (budget, accuracy
term) share one evaluator, so nothing is computed twice.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import numpy as np
import torch

from dste.controller.actions import ActionSpace
from dste.controller.env import FP32_ACTION, LayerReport
from dste.controller.state import activation_features, graph_features
from dste.gnn.execution import CompressedModel, GraphInference, LayerRun, StoredRows, check_graph_fits
from dste.gnn.footprint import layer_bytes, pass_bytes
from dste.gnn.latency import LatencyModel, prices_fp16_rows_by_count
from dste.gnn.settings import FP32_SETTING, LayerSetting

__all__ = [
    "LayerEvaluator", "setting_of", "state_rows", "run_bytes_budget", "available_memory_bytes", "LAYER_RUNS_KEPT", "LAYER_RUN_BYTES_KEPT", "STATE_ROWS",
]

LAYER_RUNS_KEPT = 4096
"""Layer runs (output + report) kept per evaluator, least recently used dropped: one per (snapshot, prefix of
actions, action); the outputs dominate the memory (n x width float32 each)."""
LAYER_RUN_BYTES_KEPT = 4 << 30
"""...and at most this many bytes of their outputs: on a Cora-sized graph the count mostly binds (4096 runs
of 2,708 x 64 float32 would be 2.8 GB; most are 2,708 x 7), on larger graphs the bytes do (one PubMed-sized output
is 5 MB, an arxiv-sized one 43 MB), so the cache never outgrows the machine. 4 GiB holds every first-layer run of
a PubMed-sized graph's twelve training snapshots (48 actions x 12 x 5 MB = 2.9 GB): with less, the controller's
random exploration keeps evicting runs it asks for again."""

INPUT_ROWS_BYTES_KEPT = 512 << 20
"""Bytes of quantized inputs of later layers kept per evaluator (least recently used dropped): one layer input has
twelve stored versions (channel level x FP16 share) shared by its 48 actions; at ogbn-arxiv's size they take
about 180 MB, and quantizing them for every action was a tenth of the main job."""

RUN_BYTES_MEMORY_SHARE = 0.4
"""Share of the machine's available memory :func:`run_bytes_budget` lets the layer runs of one job use."""
RUN_BYTES_CEILING = 16 << 30


def available_memory_bytes() -> int | None:
    """``MemAvailable`` of ``/proc/meminfo`` in bytes (Linux); None where it cannot be read."""
    try:
        with open("/proc/meminfo") as handle:
            fields = dict(line.split(":", 1) for line in handle)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def run_bytes_budget(jobs: int = 1) -> int:
    """Bytes of layer outputs an evaluator may keep when ``jobs`` evaluators run at once on this machine:
    ``RUN_BYTES_MEMORY_SHARE`` of the available memory split between the jobs, at least
    ``LAYER_RUN_BYTES_KEPT`` and at most ``RUN_BYTES_CEILING``.

    Only the time depends on it (an evicted run is recomputed, bit for bit). At ogbn-arxiv's size a first-layer
    output is 43 MB and greedy search alone asks for 48 per training snapshot twice: with the fixed 4 GiB its
    second round recomputed every first-layer run of the first. ``MemAvailable`` of ``/proc/meminfo`` (Linux);
    elsewhere the fixed default.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    available = available_memory_bytes()
    if available is None:
        return LAYER_RUN_BYTES_KEPT
    share = int(RUN_BYTES_MEMORY_SHARE * available / jobs)
    return int(min(max(share, LAYER_RUN_BYTES_KEPT), RUN_BYTES_CEILING))


STATE_ROWS = 4096
"""Nodes the activation statistics of the controller's state are computed over. They are means, spreads and
shares over rows, which 4,096 rows drawn at random estimate to about 1/64 of their spread, at a fixed cost:
on a PubMed-sized graph the statistics of every row took longer than the layer run itself. Graphs up to this
size use every node (their states are unchanged)."""


def state_rows(num_nodes: int) -> np.ndarray | None:
    """The sorted node sample of the activation statistics (seeded by the node count), None for all nodes."""
    if num_nodes <= STATE_ROWS:
        return None
    return np.sort(np.random.default_rng(num_nodes).choice(num_nodes, STATE_ROWS, replace=False))


def setting_of(action_space: ActionSpace, action: int) -> LayerSetting:
    """The layer setting of an action index (``FP32_ACTION``: the uncompressed layer)."""
    if action == FP32_ACTION:
        return FP32_SETTING
    chosen = action_space[action]
    return LayerSetting(
        edge_sparsity=chosen.sparsity, channel_sparsity=chosen.channel_sparsity, fp16_fraction=chosen.fp16_fraction
    )


class LayerEvaluator:
    """Layer runs of ``model`` over ``graphs`` under ``action_space`` actions, latency modelled for ``target``.

    ``run_bytes_kept``: bytes of layer outputs kept (least recently used dropped; see ``run_bytes_budget``).
    """

    def __init__(
        self, model, graphs: Sequence, action_space: ActionSpace, target: str = "trn2",
        run_bytes_kept: int = LAYER_RUN_BYTES_KEPT,
    ):
        if run_bytes_kept < 0:
            raise ValueError(f"run_bytes_kept must be >= 0, got {run_bytes_kept}")
        self.run_bytes_kept = int(run_bytes_kept)
        self.model = CompressedModel(model)
        self.graphs = list(graphs)
        for n, graph in enumerate(self.graphs):
            check_graph_fits(self.model, graph, f"snapshot {n}")
        self.action_space = action_space
        self.latency = LatencyModel(target)
        self._inference: dict[int, GraphInference] = {}
        self._runs: OrderedDict[tuple, tuple[np.ndarray, LayerReport]] = OrderedDict()
        self._run_bytes = 0
        self._graph_state: dict[int, np.ndarray] = {}
        self._activation_state: dict[tuple, np.ndarray] = {}
        self._latency_tables: dict[tuple[int, int], np.ndarray] = {}
        self._reference: dict[int, tuple[float, int]] = {}
        self._fp32_predictions: dict[int, np.ndarray] = {}
        self._input_rows = StoredRows(INPUT_ROWS_BYTES_KEPT)

    @property
    def num_layers(self) -> int:
        return self.model.num_layers

    @property
    def target(self) -> str:
        return self.latency.target

    def inference(self, n: int) -> GraphInference:
        """The compressed forward pass of the model on snapshot n (gather-aware edge pruning)."""
        if n not in self._inference:
            self._inference[n] = GraphInference(self.model, self.graphs[n])
        return self._inference[n]

    # ------------------------------------------------------------------ layer runs
    def layer_input(self, n: int, prefix: tuple) -> np.ndarray:
        """Input of layer ``len(prefix)`` on snapshot n after the earlier layers ran under ``prefix``."""
        if not prefix:
            return self.inference(n).features()
        output, _ = self.run_layer(n, len(prefix) - 1, prefix[:-1], prefix[-1])
        return output

    def run_layer(self, n: int, layer: int, prefix: tuple, action: int) -> tuple[np.ndarray, LayerReport]:
        """(output, report) of ``layer`` on snapshot n under ``action``, the earlier layers under ``prefix``."""
        key = (n, prefix, action)
        if key in self._runs:
            self._runs.move_to_end(key)
            return self._runs[key]
        h = self.layer_input(n, prefix)
        setting = setting_of(self.action_space, action)
        rows = self._stored_input(n, layer, prefix, h, setting) if prefix and not setting.fp32 else None
        run = self.inference(n).run_layer(layer, h, setting, input_rows=rows)
        value = (run.output, self._report(run, action))
        self._runs[key] = value
        self._run_bytes += run.output.nbytes
        while len(self._runs) > 1 and (len(self._runs) > LAYER_RUNS_KEPT or self._run_bytes > self.run_bytes_kept):
            dropped, _ = self._runs.pop(self._eviction_victim(key))
            self._run_bytes -= dropped.nbytes
        return value

    def _stored_input(self, n: int, layer: int, prefix: tuple, h: np.ndarray, setting: LayerSetting):
        """The quantized input of ``layer`` (after ``prefix``) for ``setting``, kept per (snapshot, prefix, channel
        level, FP16 share) within ``INPUT_ROWS_BYTES_KEPT``."""
        key = (n, prefix, setting.channel_sparsity, setting.fp16_fraction)
        return self._input_rows.get(key, lambda: self.inference(n).input_rows(layer, h, setting))

    def _eviction_victim(self, newest: tuple) -> tuple:
        """The least recently used run of the last layer (no later layer reads it, and its input is usually still
        kept, so it is the cheapest to recompute: at ogbn-arxiv's size 0.2 s against a second or more for a
        first-layer run), else the least recently used run of any layer; never ``newest``."""
        last = self.num_layers - 1
        for key in self._runs:
            if len(key[1]) == last and key != newest:
                return key
        return next(key for key in self._runs if key != newest)

    def _report(self, run: LayerRun, action: int) -> LayerReport:
        setting = run.setting
        breakdown = layer_bytes(run)
        adjacency = run.adjacency
        kinds = np.bincount(adjacency.tile_kind, minlength=3)[:3].astype(float) if adjacency.n_tiles else np.zeros(3)
        weight_kinds = sum(
            (np.bincount(w[0].matrix.tile_kind, minlength=3)[:3] for w in run.weights if w[0] is not None), np.zeros(3)
        )
        mix = kinds + weight_kinds
        return LayerReport(
            action_index=action,
            latency_us=self.latency.layer_latency(run, self.model),
            nbytes=int(sum(breakdown.values())),
            sparsity=setting.edge_sparsity,
            fp16_fraction=1.0 if setting.fp32 else setting.fp16_fraction,
            channel_sparsity=setting.channel_sparsity,
            kind_mix=tuple(float(v) for v in mix / max(mix.sum(), 1.0)),
            n_tiles=int(adjacency.n_tiles + adjacency.n_etiles),
            kept_fraction=float(adjacency.nnz_kept / max(run.base.nnz_kept, 1)),
            bytes_by_kind=breakdown,
        )

    def static_reports(self, n: int, actions: Sequence[int]) -> list[LayerReport]:
        """The layer reports of ``actions`` (one per layer) on snapshot n, outside any episode."""
        prefix: tuple = ()
        reports = []
        for layer, action in enumerate(actions):
            reports.append(self.run_layer(n, layer, prefix, action)[1])
            prefix = prefix + (action,)
        return reports

    def footprint(self, reports: Sequence[LayerReport], actions: Sequence[int]) -> dict:
        """Bytes by kind of an episode's layers (the unpruned matrix stored once per form its layers read it in:
        :func:`dste.gnn.footprint.pass_bytes`)."""
        return pass_bytes([r.bytes_by_kind for r in reports], [setting_of(self.action_space, a) for a in actions])

    # ------------------------------------------------------------------ prices and references
    def latency_table(self, n: int, layer: int) -> np.ndarray:
        """Per action, the modelled latency of ``layer`` on snapshot n, the earlier layers at uniform INT8."""
        if not 0 <= layer < self.num_layers:
            raise ValueError(f"layer must lie in [0, {self.num_layers}), got {layer}")
        key = (int(n), int(layer))
        if key not in self._latency_tables:
            if prices_fp16_rows_by_count(self.graphs[int(n)].num_nodes):
                # FP16 rows are priced by their count here, so the price needs the layer's operands only: no
                # layer is run (on a PubMed-sized graph running every action was most of the controller's time)
                inference = self.inference(int(n))
                prices = [self.latency.layer_latency(inference.layer_operands(layer, setting_of(self.action_space, a)))
                          for a in range(len(self.action_space))]
            else:
                prefix = (self.action_space.nearest(0.0, 0.0),) * layer
                prices = [self.run_layer(int(n), layer, prefix, a)[1].latency_us for a in range(len(self.action_space))]
            self._latency_tables[key] = np.array(prices)
        return self._latency_tables[key]

    def fp32_predictions(self, n: int) -> np.ndarray:
        """Predicted class of every node of snapshot n under the uncompressed model (kept per snapshot: the
        label-free accuracy term compares every episode with it, and the logits' run may have been dropped)."""
        if n not in self._fp32_predictions:
            self._fp32_predictions[n] = self.layer_input(n, (FP32_ACTION,) * self.num_layers).argmax(axis=1)
        return self._fp32_predictions[n]

    def reference_run(self, n: int) -> tuple[float, int]:
        """(latency µs, bytes) of uniform INT8 on snapshot n: the scale of the reward's latency and memory terms."""
        if n not in self._reference:
            actions = [self.action_space.nearest(0.0, 0.0)] * self.num_layers
            reports = self.static_reports(n, actions)
            footprint = self.footprint(reports, actions)
            self._reference[n] = (float(sum(r.latency_us for r in reports)), int(sum(footprint.values())))
        return self._reference[n]

    # ------------------------------------------------------------------ state features
    def graph_state(self, n: int) -> np.ndarray:
        if n not in self._graph_state:
            graph = self.graphs[n]
            previous = None
            if n - 1 >= 0 and self.graphs[n - 1].num_nodes == graph.num_nodes:
                previous = self.graphs[n - 1]
            self._graph_state[n] = graph_features(
                graph.adj, graph.x, previous.adj if previous else None, previous.x if previous else None
            )
        return self._graph_state[n]

    def activation_state(self, n: int, prefix: tuple) -> np.ndarray:
        """The controller's activation statistics of layer ``len(prefix)``'s input on snapshot n, over at most
        ``STATE_ROWS`` nodes (a fixed sample per snapshot size; every node of a smaller graph)."""
        key = (n, prefix)
        if key not in self._activation_state:
            h = self.layer_input(n, prefix)
            rows = state_rows(h.shape[0])
            self._activation_state[key] = activation_features(h if rows is None else h[rows])
        return self._activation_state[key]

    # ------------------------------------------------------------------ the torch-op path
    def forward_ops(self, n: int, actions: Sequence[int], backend: str = "cpu") -> torch.Tensor:
        """Logits of snapshot n under per-layer ``actions``, run through ``dste.spmm`` (the torch ops)."""
        if len(actions) != self.num_layers:
            raise ValueError(f"need one action per layer ({self.num_layers}), got {len(actions)}")
        settings = [setting_of(self.action_space, a) for a in actions]
        return self.inference(n).forward(settings, backend=backend)
