"""The controller's discrete action space: per layer, an edge sparsity level, an input-channel sparsity
level and an FP16 threshold.

An action compresses one GNN layer for one snapshot:

* ``sparsity`` -- the fraction of the layer's propagation edges (the adjacency's off-diagonal entries) that
  are dropped. What is pruned is decided by importance, never at random: an edge by its normalised weight
  times the norm of the feature row it carries.
* ``channel_sparsity`` -- the fraction of the layer's input channels (rows of its weight matrix, columns of
  its input) that are dropped, least important first: a channel scores the norm of its weight row times the
  root-mean-square of the input column on the snapshot. The weight's DSTE tiles then hold only the kept
  channels, so the weight product gathers fewer rows and the layer's input needs fewer stored columns; the kept
  rows are re-fitted, by least squares on the snapshot's FP32 layer input, to carry the dropped channels' share
  of the product (``dste.gnn.channel_fit``).
* ``fp16_fraction`` -- the FP16 threshold, expressed as the fraction of the layer's most sensitive rows/tiles
  kept in FP16 (the rest are INT8). Expressing the threshold T as a quantile of the sensitivity score S makes
  the same action mean the same precision mix on every snapshot, whatever the scale of S.

The default grid is edges {0, 0.25, 0.5, 0.75} x channels {0, 0.25, 0.5, 0.75} x FP16 {0, 0.05, 1.0}:
48 actions, indexed edge-major, then channel, then FP16. ``fp16_fraction = 0`` is uniform INT8, ``1.0`` is
uniform FP16. Edges and channels are separate levers because they cost different things: on a sparse,
low-degree graph every edge carries signal, while bag-of-words features carry many channels a trained
layer barely reads.
"""

from __future__ import annotations

from collections import abc
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from dste.checks import real_number

__all__ = [
    "Action",
    "ActionSpace",
    "DEFAULT_SPARSITY_LEVELS",
    "DEFAULT_CHANNEL_LEVELS",
    "DEFAULT_FP16_FRACTIONS",
    "COSTLESS_MIN_SAVING",
    "compresses_at_least",
    "costless_pruning",
]

DEFAULT_SPARSITY_LEVELS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75)
DEFAULT_CHANNEL_LEVELS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75)
DEFAULT_FP16_FRACTIONS: tuple[float, ...] = (0.0, 0.05, 1.0)


@dataclass(frozen=True)
class Action:
    """One layer's compression choice.

    sparsity:          fraction of the propagation edges dropped, in [0, 1).
    fp16_fraction:     fraction of the most sensitive rows/tiles stored in FP16, in [0, 1]; the rest are INT8.
    channel_sparsity:  fraction of the layer's input channels dropped, in [0, 1).
    """

    sparsity: float
    fp16_fraction: float
    channel_sparsity: float = 0.0

    def __post_init__(self) -> None:
        if not (0.0 <= float(self.sparsity) < 1.0):
            raise ValueError(f"sparsity must lie in [0, 1), got {self.sparsity!r}")
        if not (0.0 <= float(self.channel_sparsity) < 1.0):
            raise ValueError(f"channel_sparsity must lie in [0, 1), got {self.channel_sparsity!r}")
        if not (0.0 <= float(self.fp16_fraction) <= 1.0):
            raise ValueError(f"fp16_fraction must lie in [0, 1], got {self.fp16_fraction!r}")

    def label(self) -> str:
        return f"s{self.sparsity:g}/c{self.channel_sparsity:g}/fp16:{self.fp16_fraction:g}"


def _levels(values, name: str) -> tuple[float, ...]:
    """A sequence of real numbers as a tuple of floats (a string or a single number is not a sequence of levels)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, (abc.Sequence, np.ndarray)):
        raise TypeError(f"{name} must be a sequence of numbers, got {type(values).__name__} {values!r}")
    return tuple(real_number(value, f"{name} entry") for value in values)


class ActionSpace:
    """The Cartesian grid of edge sparsity levels, channel sparsity levels and FP16 fractions, indexed 0..n-1
    (edge-major, then channel, then FP16)."""

    def __init__(
        self,
        sparsity_levels: Sequence[float] = DEFAULT_SPARSITY_LEVELS,
        fp16_fractions: Sequence[float] = DEFAULT_FP16_FRACTIONS,
        channel_levels: Sequence[float] = DEFAULT_CHANNEL_LEVELS,
    ) -> None:
        sparsity_levels = _levels(sparsity_levels, "sparsity_levels")
        fp16_fractions = _levels(fp16_fractions, "fp16_fractions")
        channel_levels = _levels(channel_levels, "channel_levels")
        if not sparsity_levels or not fp16_fractions or not channel_levels:
            raise ValueError(
                "an action space needs at least one sparsity level, one channel level and one FP16 fraction"
            )
        for name, values in (
            ("sparsity_levels", sparsity_levels),
            ("channel_levels", channel_levels),
            ("fp16_fractions", fp16_fractions),
        ):
            if len(set(values)) != len(values):
                raise ValueError(f"{name} must not repeat values, got {values}")
            if list(values) != sorted(values):
                raise ValueError(f"{name} must be ascending, got {values}")
        self.sparsity_levels = sparsity_levels
        self.channel_levels = channel_levels
        self.fp16_fractions = fp16_fractions
        # Validates every combination once, so an index always maps to a legal Action.
        self._actions = tuple(
            Action(s, f, c) for s in sparsity_levels for c in channel_levels for f in fp16_fractions
        )

    def __len__(self) -> int:
        return len(self._actions)

    def __getitem__(self, index: int) -> Action:
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"action index must be an int, got {type(index).__name__}")
        if not 0 <= int(index) < len(self._actions):
            raise IndexError(f"action index must lie in [0, {len(self._actions)}), got {index}")
        return self._actions[int(index)]

    def __iter__(self):
        return iter(self._actions)

    def index(self, action: Action) -> int:
        """Index of `action`; ValueError when the grid does not contain it."""
        try:
            return self._actions.index(action)
        except ValueError:
            raise ValueError(
                f"{action} is not in this action space (sparsity {self.sparsity_levels}, "
                f"channels {self.channel_levels}, fp16 {self.fp16_fractions})"
            ) from None

    def axes(self) -> tuple[int, int, int]:
        """Grid sizes (edge levels, channel levels, FP16 levels), in index order."""
        return len(self.sparsity_levels), len(self.channel_levels), len(self.fp16_fractions)

    def level_indices(self, index: int) -> tuple[int, int, int]:
        """(edge level, channel level, FP16 level) positions of action ``index`` in their grids."""
        self[index]  # validates
        n_c, n_f = len(self.channel_levels), len(self.fp16_fractions)
        return int(index) // (n_c * n_f), (int(index) // n_f) % n_c, int(index) % n_f

    def nearest(self, sparsity: float, fp16_fraction: float, channel_sparsity: float = 0.0) -> int:
        """Index of the grid action closest to the requested levels (used by static baselines)."""
        if not all(np.isfinite(v) for v in (sparsity, fp16_fraction, channel_sparsity)):  # NaN is nearest to nothing
            raise ValueError(f"nearest: levels must be finite numbers, got sparsity={sparsity!r}, "
                             f"fp16_fraction={fp16_fraction!r}, channel_sparsity={channel_sparsity!r}")
        s = int(np.argmin([abs(level - sparsity) for level in self.sparsity_levels]))
        c = int(np.argmin([abs(level - channel_sparsity) for level in self.channel_levels]))
        f = int(np.argmin([abs(level - fp16_fraction) for level in self.fp16_fractions]))
        return (s * len(self.channel_levels) + c) * len(self.fp16_fractions) + f

    def to_dict(self) -> dict:
        return {
            "sparsity_levels": list(self.sparsity_levels),
            "channel_levels": list(self.channel_levels),
            "fp16_fractions": list(self.fp16_fractions),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "ActionSpace":
        try:
            return cls(data["sparsity_levels"], data["fp16_fractions"], data["channel_levels"])
        except KeyError as missing:
            raise ValueError(f"action space description lacks {missing}") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActionSpace) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return (
            f"ActionSpace(sparsity={self.sparsity_levels}, channels={self.channel_levels}, "
            f"fp16={self.fp16_fractions})"
        )


COSTLESS_MIN_SAVING = 0.005
"""Least share of a less-pruned action's modelled latency, on average over the snapshots, that pruning must save not to
be ``costless_pruning``. Where a layer keeps 5 % of its rows in FP16, which rows the sensitivity picks moves with the
kept channels, and with it the price: on Cora's second GCN layer (``drift`` stream) by -0.55 to +0.22 % for channel
pruning that frees no weight tile, against 0.86 % and more for the smallest edge pruning on either layer."""


def compresses_at_least(space: ActionSpace, candidate: int, reference: int) -> bool:
    """Whether action ``candidate`` keeps nothing action ``reference`` drops: at least its edge and channel sparsity,
    at most its FP16 share. Such an action can be more accurate than ``reference`` only by luck or by what its
    re-fitted rows make up, never by keeping more of the layer."""
    a, b = space[candidate], space[reference]
    return a.sparsity >= b.sparsity and a.channel_sparsity >= b.channel_sparsity and a.fp16_fraction <= b.fp16_fraction


def costless_pruning(space: ActionSpace, prices: np.ndarray, min_saving: float = COSTLESS_MIN_SAVING) -> np.ndarray:
    """bool [actions]: the actions whose pruning the cost model says saves nothing. An action is marked where another
    of the same FP16 fraction that prunes no more edges and no more channels (and fewer of one) costs, on average over
    the rows of ``prices`` (float [snapshots, actions] or [actions]: one layer's ``latency_table`` per snapshot), less
    than a ``min_saving`` share more. Tile-granular prices make this common: with a 64-wide hidden layer, dropping a
    quarter of the second layer's input channels leaves its weight product in one tile. Such an action can only cost
    accuracy, so a gain it shows on training snapshots is taken for noise (``greedy_search``'s ``allowed``)."""
    prices = np.atleast_2d(np.asarray(prices, dtype=np.float64))
    if prices.ndim != 2 or prices.shape[1] != len(space):
        raise ValueError(f"prices must have shape (snapshots, {len(space)}) or ({len(space)},), got {prices.shape}")
    if prices.shape[0] == 0 or not np.isfinite(prices).all() or (prices <= 0).any():
        raise ValueError("prices must be finite and > 0, with at least one snapshot")
    if not (np.isfinite(min_saving) and 0 <= min_saving < 1):
        raise ValueError(f"min_saving must be a share in [0, 1), got {min_saving!r}")
    levels = np.array([space.level_indices(a) for a in range(len(space))])
    edges, channels, precision = levels[:, 0], levels[:, 1], levels[:, 2]
    prunes_less = (
        (precision[:, None] == precision[None, :])
        & (edges[:, None] <= edges[None, :])
        & (channels[:, None] <= channels[None, :])
        & ~np.eye(len(space), dtype=bool)
    )  # [other, action]: ``other`` keeps everything ``action`` keeps, and more
    mean = prices.mean(axis=0)
    saves_too_little = mean[None, :] > mean[:, None] * (1.0 - min_saving)  # [other, action]
    return (prunes_less & saves_too_little).any(axis=0)
