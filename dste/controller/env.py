"""The environment interface the controller trains and is judged on.

An environment holds a stream of graph snapshots and a model with ``num_layers`` compressible layers. One
*episode* compresses one snapshot: for layer 0..L-1 the agent reads ``state(layer)`` (64 floats), picks an
action index, and ``step(layer, action)`` compresses and runs that layer on the snapshot, returning its
modelled latency and bytes. After the last layer ``outcome()`` gives the accuracy of the compressed model on
the snapshot's labelled evaluation nodes.

The environment remembers, per layer, what the previous episode ran with (M_n in
M_{n+1} = f(M_n, G_{n+1}, A_n)); ``begin_stream()`` forgets it, so a run over a snapshot sequence is a
deterministic function of the policy.

``dste.experiments.gnn_env.GNNCompressionEnv`` implements it on the real layers; the tests use a small toy.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from dste.controller.actions import ActionSpace

__all__ = ["FP32_ACTION", "LayerReport", "EpisodeOutcome", "CompressionEnv", "check_split"]

# Passed to ``step`` instead of an action index: run the layer uncompressed (the FP32 baseline).
FP32_ACTION = -1


@dataclass
class LayerReport:
    """One compressed layer on one snapshot. All latencies are modelled (trn2), never measured."""

    action_index: int
    latency_us: float
    nbytes: int
    sparsity: float = 0.0
    fp16_fraction: float = 0.0
    channel_sparsity: float = 0.0
    kind_mix: tuple[float, float, float] = (0.0, 1.0, 0.0)
    n_tiles: int = 0
    kept_fraction: float = 1.0
    bytes_by_kind: dict = field(default_factory=dict)  # e.g. graph / features / weights / activations


@dataclass
class EpisodeOutcome:
    """A whole snapshot: accuracy on its evaluation nodes, summed modelled latency and bytes."""

    snapshot: int
    accuracy: float
    latency_us: float
    nbytes: int
    reference_latency_us: float
    actions: list[int] = field(default_factory=list)
    layers: list[LayerReport] = field(default_factory=list)
    bytes_by_kind: dict = field(default_factory=dict)
    budget_fraction: float | None = None  # this snapshot's latency budget / reference, if the env sets one
    reference_nbytes: int | None = None  # footprint of the reference policy (uniform INT8), if the env gives it
    # bool per node the accuracy is the mean of, if the env gives it: the same nodes in the same order on every
    # episode of a snapshot, so two plans' outcomes pair node by node (``dste.controller.evidence``)
    correct: np.ndarray | None = field(default=None, repr=False)
    # the ids of those nodes, if the env gives them: the same id is the same node on every snapshot of the stream
    nodes: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # the pairing of two outcomes node by node (dste.controller.evidence) reads both arrays position by position
        if self.correct is not None and self.nodes is not None and np.shape(self.correct) != np.shape(self.nodes):
            raise ValueError(f"EpisodeOutcome: correct has shape {np.shape(self.correct)} but nodes "
                             f"{np.shape(self.nodes)}: one flag per evaluation node")


class CompressionEnv(ABC):
    """Abstract environment; see the module docstring for the protocol."""

    action_space: ActionSpace
    num_layers: int

    @abstractmethod
    def snapshots(self, split: str) -> Sequence[int]:
        """Snapshot ids of ``split`` ("train" or "heldout")."""

    @abstractmethod
    def begin_stream(self) -> None:
        """Forget the previous masks: the next episode starts a fresh stream."""

    @abstractmethod
    def reset(self, snapshot: int) -> None:
        """Start an episode on ``snapshot``."""

    @abstractmethod
    def state(self, layer: int) -> np.ndarray:
        """float32 [64] state of ``layer``; layers before it must already have been stepped."""

    @abstractmethod
    def step(self, layer: int, action: int) -> LayerReport:
        """Compress and run ``layer`` with action index ``action`` (or ``FP32_ACTION``: uncompressed)."""

    @abstractmethod
    def outcome(self) -> EpisodeOutcome:
        """Accuracy, latency and bytes of the episode once every layer has been stepped."""

    @abstractmethod
    def reference_latency(self, snapshot: int) -> float:
        """Modelled latency (us) of the uniform-INT8, unpruned policy on ``snapshot``: the reward's scale."""

    def budget_fraction(self, snapshot: int) -> float | None:
        """This snapshot's latency budget as a fraction of ``reference_latency`` (None: the reward's own)."""
        return None

    def current_snapshot(self) -> int:
        """The snapshot of the episode in progress (after ``reset``)."""
        raise NotImplementedError(f"{type(self).__name__} does not expose its episode's snapshot")

    def spent_latency(self) -> float:
        """Modelled latency (us) of the layers already stepped in this episode."""
        raise NotImplementedError(f"{type(self).__name__} does not expose the latency spent so far")

    def latency_table(self, snapshot: int, layer: int) -> np.ndarray:
        """Modelled latency (us) of every action index at ``layer`` on ``snapshot``, before running it.

        Label-free (the cost model needs the graph, the weights and the layer's input, never labels).
        Environments that provide it let the controller keep each episode inside its latency budget
        (``dste.controller.guard``).
        """
        raise NotImplementedError(f"{type(self).__name__} cannot price actions before running them")

    def agreement(self, snapshot: int, actions: Sequence[int]) -> float:
        """Share of ``snapshot``'s nodes whose predicted class under the per-layer ``actions`` is the uncompressed
        model's on the same snapshot. Label-free: it compares two predictions, never a prediction with a label,
        so a controller may read it on a snapshot whose labels it must not see (``dste.controller.projection``).
        """
        raise NotImplementedError(
            f"{type(self).__name__} cannot compare a plan's predictions with the uncompressed model's"
        )

    def action_latency(self, layer: int, action: int) -> float:
        """Modelled latency (us) that ``step(layer, action)`` would report now, after this episode's earlier steps.

        The default reads ``latency_table``. An environment whose table only estimates some actions (their price
        depends on what the earlier layers ran) returns the exact price here, so the budget guard can confirm the
        action it is about to take (``BudgetGuard.fits``).
        """
        return float(self.latency_table(self.current_snapshot(), layer)[action])


def check_split(split: str) -> str:
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    return split
