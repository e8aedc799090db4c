"""A small deterministic environment for controller tests.

Each snapshot has a hidden difficulty d in [0, 1] that the state exposes (graph feature 0). Pruning a layer
cuts its latency but costs accuracy in proportion to d, FP16 costs latency and recovers a little accuracy on
difficult snapshots. The best action therefore depends on the snapshot: a policy that reads the state can
beat every static one.
"""

from __future__ import annotations

import numpy as np

from dste.controller.actions import ActionSpace
from dste.controller.env import FP32_ACTION, CompressionEnv, EpisodeOutcome, LayerReport, check_split
from dste.controller.state import MaskSummary, build_state, layer_features, mask_features

LAYER_BASE_US = (3.0, 1.0)
LAYER_SENSITIVITY = (0.4, 0.2)


class ToyEnv(CompressionEnv):
    def __init__(self, n_train: int = 16, n_heldout: int = 8, seed: int = 0, action_space: ActionSpace | None = None) -> None:
        self.action_space = ActionSpace() if action_space is None else action_space
        self.num_layers = 2
        rng = np.random.default_rng(seed)
        self.difficulty = rng.random(n_train + n_heldout)
        self.noise = rng.normal(size=(n_train + n_heldout, 8)).astype(np.float32) * 0.1
        self._train = list(range(n_train))
        self._heldout = list(range(n_train, n_train + n_heldout))
        self.begin_stream()

    def snapshots(self, split):
        return self._train if check_split(split) == "train" else self._heldout

    def begin_stream(self):
        self._previous = [-1] * self.num_layers

    def reset(self, snapshot):
        self._snapshot, self._reports = int(snapshot), []

    def state(self, layer):
        if layer != len(self._reports):
            raise ValueError(f"state({layer}) asked before layer {len(self._reports)} was stepped")
        graph = np.zeros(24, np.float32)
        graph[0] = self.difficulty[self._snapshot]
        graph[1:9] = self.noise[self._snapshot]
        previous = MaskSummary(action_index=self._previous[layer])
        upstream = self._reports[-1].action_index if self._reports else -1
        spent = sum(r.latency_us for r in self._reports) / self.reference_latency(self._snapshot)
        return build_state(
            graph,
            np.zeros(16, np.float32),
            mask_features(previous, self.action_space, max(upstream, -1), spent),
            layer_features(layer, self.num_layers),
        )

    def _latency(self, layer, action):
        if action == FP32_ACTION:
            return LAYER_BASE_US[layer] * 2.0
        a = self.action_space[action]
        return LAYER_BASE_US[layer] * (1 - 0.8 * a.sparsity) * (1 + 0.5 * a.fp16_fraction)

    def step(self, layer, action):
        if layer != len(self._reports):
            raise ValueError(f"step({layer}) out of order")
        report = LayerReport(action, self._latency(layer, action), 1000)
        self._reports.append(report)
        self._previous[layer] = action
        return report

    def outcome(self):
        d = self.difficulty[self._snapshot]
        accuracy = 0.9
        for layer, report in enumerate(self._reports):
            if report.action_index == FP32_ACTION:
                continue
            a = self.action_space[report.action_index]
            accuracy -= LAYER_SENSITIVITY[layer] * d**2 * a.sparsity**2 * 4
            accuracy -= 0.01 * (1 - a.fp16_fraction) * d
        return EpisodeOutcome(
            snapshot=self._snapshot,
            accuracy=float(np.clip(accuracy, 0, 1)),
            latency_us=sum(r.latency_us for r in self._reports),
            nbytes=sum(r.nbytes for r in self._reports),
            reference_latency_us=self.reference_latency(self._snapshot),
            actions=[r.action_index for r in self._reports],
            layers=list(self._reports),
        )

    def reference_latency(self, snapshot):
        return float(sum(LAYER_BASE_US))

    def current_snapshot(self):
        return self._snapshot

    def spent_latency(self):
        return float(sum(r.latency_us for r in self._reports))

    def latency_table(self, snapshot, layer):
        return np.array([self._latency(layer, a) for a in range(len(self.action_space))])
