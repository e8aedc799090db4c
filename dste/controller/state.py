"""The controller's 64-dimensional state: what the policy M_{n+1} = f(M_n, G_{n+1}, A_n) sees.

The state for layer l of snapshot n+1 concatenates four groups, each squashed by a fixed transform (log
scales, ratios, clipping to [-5, 5]) so that every feature is O(1) on any graph size; a
``StateNormalizer`` fitted on training states then centres them, and divides by each feature's spread where it is
above 1 (``STD_FLOOR``).

Graph G_{n+1} (24 features, ``graph_features``): node and edge counts, degree moments, the density of the
column-condensed 128-row windows the format builds (mean/std/min/max), churn against the previous snapshot
(edges added and removed, rows and windows touched, feature drift), and how the GCN-normalised edge weight
is distributed (the share of weight carried by the lightest 25/50/75 % of edges, i.e. what importance
pruning at those levels removes).

Activations A_n (16 features, ``activation_features``): statistics of the layer's input (the node features
for layer 0, the previous compressed layer's output after that): mean, std, max, outlier fraction, the INT8
quantization error per tensor and per row, the share of that error held by the top 5 % / 20 % rows
(what an FP16 threshold recovers), zeros, row-norm spread, kurtosis, width.

Mask and precision mix (16 features, ``mask_features``): what the layer ran with on the previous snapshot
(M_n: edge sparsity, channel sparsity, FP16 fraction, the BIN and FP16 shares of its tiles, its share of the
modelled latency), and what the model runs with so far on this snapshot: the modelled latency already spent
by the earlier layers and the latency budget left (both as fractions of the reference), and the preceding
layer's action (a one-hot of its edge sparsity level, a one-hot of its FP16 level, its channel sparsity). The latter keeps the decision process Markov: the accuracy paid at the end depends on
every layer's choice, so each layer must see the upstream ones.

Layer (8 features): a one-hot of the layer index (up to 8 layers).

``FEATURE_NAMES`` lists all 64 in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from dste.checks import check_sparse_indices, integer, real_number
from dste.controller.actions import ActionSpace

__all__ = [
    "STATE_DIM",
    "FEATURE_NAMES",
    "GRAPH_FEATURES",
    "ACTIVATION_FEATURES",
    "MASK_FEATURES",
    "MAX_LAYERS",
    "MaskSummary",
    "StateNormalizer",
    "graph_features",
    "activation_features",
    "mask_features",
    "layer_features",
    "build_state",
]

WINDOW_ROWS = 128  # matches dste.format.constants.WINDOW_ROWS; the state describes the tiles the format builds
MAX_LAYERS = 8
FEATURE_CLIP = 5.0
OUTLIER_SIGMAS = 6.0
STD_FLOOR = 1.0

GRAPH_FEATURES = (
    "log_nodes", "log_edges", "log_mean_degree", "degree_cv", "log_max_degree", "degree_skew",
    "isolated_fraction", "degree_gini",
    "window_density_mean", "window_density_std", "window_density_min", "window_density_max",
    "window_columns_fraction",
    "edges_added_fraction", "edges_removed_fraction", "rows_changed_fraction", "windows_changed_fraction",
    "feature_drift",
    "log_feature_norm", "feature_zero_fraction",
    "weight_share_lightest_25", "weight_share_lightest_50", "weight_share_lightest_75", "self_loop_share",
)
ACTIVATION_FEATURES = (
    "act_mean", "act_std", "act_log_max_abs", "act_outlier_fraction",
    "act_int8_error_tensor", "act_int8_error_row", "act_error_share_top5", "act_error_share_top20",
    "act_zero_fraction", "act_row_norm_cv", "act_log_kurtosis", "act_log_width",
    "act_log_mean_abs", "act_log_row_scale_spread", "act_negative_fraction", "act_row_max_share",
)
MASK_FEATURES = (
    "prev_sparsity", "prev_fp16_fraction", "prev_bin_tiles", "prev_channel_sparsity", "prev_fp16_tiles",
    "latency_budget_left", "prev_latency_share", "upstream_latency_fraction",
    "upstream_sparsity_level_0", "upstream_sparsity_level_1", "upstream_sparsity_level_2",
    "upstream_sparsity_level_3",
    "upstream_fp16_level_0", "upstream_fp16_level_1", "upstream_fp16_level_2", "upstream_channel_sparsity",
)
LAYER_FEATURES = tuple(f"layer_{i}" for i in range(MAX_LAYERS))
FEATURE_NAMES = GRAPH_FEATURES + ACTIVATION_FEATURES + MASK_FEATURES + LAYER_FEATURES
STATE_DIM = len(FEATURE_NAMES)
assert STATE_DIM == 64, f"the state must be 64-dimensional, got {STATE_DIM}"


@dataclass
class MaskSummary:
    """What one layer ran with on the previous snapshot (M_n). ``action_index`` is -1 before any snapshot."""

    action_index: int = -1
    sparsity: float = 0.0
    fp16_fraction: float = 0.0
    channel_sparsity: float = 0.0
    kind_mix: tuple[float, float, float] = (0.0, 1.0, 0.0)  # fractions of BIN, INT8, FP16 tiles
    n_tiles: int = 0
    latency_share: float = 0.0
    extra: dict = field(default_factory=dict)


def _clip(values) -> np.ndarray:
    out = np.asarray(values, dtype=np.float64)
    out = np.nan_to_num(out, nan=0.0, posinf=FEATURE_CLIP, neginf=-FEATURE_CLIP)
    return np.clip(out, -FEATURE_CLIP, FEATURE_CLIP).astype(np.float32)


def _real_array(values, name: str) -> np.ndarray:
    """``values`` as a NumPy array of finite real numbers (a torch tensor is read detached), else a clear error."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be a real-valued (integer or float) array, got dtype {array.dtype}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contain NaN or Inf")
    return array


def _check_adjacency(adj, name: str) -> sp.csr_matrix:
    """``adj`` as the CSR of its edges: square, indices inside its shape, finite values; a stored zero is no edge."""
    if not sp.issparse(adj):
        raise TypeError(f"{name} must be a scipy.sparse matrix, got {type(adj).__name__}")
    if adj.ndim != 2 or adj.shape[0] != adj.shape[1]:
        raise ValueError(f"{name} must be square [n, n], got shape {adj.shape}")
    check_sparse_indices(adj, name)
    csr = sp.csr_matrix(adj)
    if csr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real edge weights (bool, integer or float), got dtype {csr.dtype}")
    if not np.isfinite(csr.data).all():
        raise ValueError(f"{name} holds NaN or Inf edge weights; give the graph's 0/1 pattern or finite weights")
    if (csr.data == 0).any():  # a stored zero is no edge, as the encoder reads it
        csr = csr.copy()
        csr.eliminate_zeros()
    return csr


def _window_column_counts(adj: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Per 128-row window: stored entries and distinct columns (the condensed tile width before cutting)."""
    n = adj.shape[0]
    n_windows = max(1, -(-n // WINDOW_ROWS))
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(adj.indptr))
    windows = rows // WINDOW_ROWS
    entries = np.bincount(windows, minlength=n_windows)
    keys = np.unique(windows * np.int64(n) + adj.indices.astype(np.int64))
    columns = np.bincount(keys // n, minlength=n_windows)
    return entries, columns


def _gcn_edge_weights(adj: sp.csr_matrix) -> tuple[np.ndarray, float]:
    """Weights 1/sqrt(d_i d_j) of D^-1/2 (A+I) D^-1/2 on the off-diagonal entries, and the self-loop mass."""
    deg = np.diff(adj.indptr).astype(np.float64) + 1.0
    rows = np.repeat(np.arange(adj.shape[0]), np.diff(adj.indptr))
    weights = 1.0 / np.sqrt(deg[rows] * deg[adj.indices])
    return weights, float(np.sum(1.0 / deg))


def graph_features(adj, x: np.ndarray, prev_adj=None, prev_x: np.ndarray | None = None) -> np.ndarray:
    """The 24 graph features of a snapshot (see ``GRAPH_FEATURES``); churn is 0 without a previous snapshot."""
    adj = _check_adjacency(adj, "adj")
    x = _real_array(x, "features")
    if x.ndim != 2 or x.shape[0] != adj.shape[0]:
        raise ValueError(f"features must be [n, f] with n = {adj.shape[0]}, got shape {x.shape}")
    n, nnz = adj.shape[0], adj.nnz
    deg = np.diff(adj.indptr).astype(np.float64)
    mean_deg = deg.mean() if n else 0.0
    std_deg = deg.std() if n else 0.0
    skew = float(np.mean((deg - mean_deg) ** 3) / std_deg**3) if std_deg > 0 else 0.0
    sorted_deg = np.sort(deg)
    gini = (
        float((2 * np.arange(1, n + 1) - n - 1) @ sorted_deg / (n * sorted_deg.sum())) if sorted_deg.sum() else 0.0
    )

    entries, columns = _window_column_counts(adj)
    occupied = columns > 0
    density = entries[occupied] / (WINDOW_ROWS * columns[occupied]) if occupied.any() else np.zeros(1)
    columns_fraction = float(columns.mean() / max(n, 1))

    added = removed = rows_changed = windows_changed = drift = 0.0
    if prev_adj is not None:
        prev_adj = _check_adjacency(prev_adj, "prev_adj")
        if prev_adj.shape != adj.shape:
            raise ValueError(f"previous snapshot has shape {prev_adj.shape}, this one {adj.shape}")
        diff = (adj != prev_adj).tocsr()
        changed = diff.multiply(adj)
        added = changed.nnz / max(prev_adj.nnz, 1)
        removed = (diff.nnz - changed.nnz) / max(prev_adj.nnz, 1)
        touched_rows = np.flatnonzero(np.diff(diff.indptr))
        rows_changed = touched_rows.size / max(n, 1)
        windows_changed = np.unique(touched_rows // WINDOW_ROWS).size / max(1, -(-n // WINDOW_ROWS))
    if prev_x is not None:
        prev_x = _real_array(prev_x, "previous features")
        if prev_x.shape != x.shape:
            raise ValueError(f"previous features have shape {prev_x.shape}, these {x.shape}")
        drift = float(np.linalg.norm(x - prev_x) / max(np.linalg.norm(prev_x), 1e-12))

    weights, self_mass = _gcn_edge_weights(adj)
    shares = [0.0, 0.0, 0.0]
    total = weights.sum() + self_mass
    if weights.size:
        cumulative = np.cumsum(np.sort(weights))
        shares = [float(cumulative[max(int(q * weights.size) - 1, 0)] / total) for q in (0.25, 0.5, 0.75)]
    row_norms = np.linalg.norm(x, axis=1)
    return _clip([
        np.log10(max(n, 1)) / 6.0,
        np.log10(nnz + 1) / 8.0,
        np.log1p(mean_deg) / 5.0,
        std_deg / (mean_deg + 1.0),
        np.log1p(deg.max() if n else 0.0) / 10.0,
        skew / 10.0,
        float(np.mean(deg == 0)) if n else 0.0,
        gini,
        density.mean() * 10.0,
        density.std() * 10.0,
        density.min() * 10.0,
        density.max() * 10.0,
        columns_fraction,
        added * 10.0,
        removed * 10.0,
        rows_changed,
        windows_changed,
        drift * 10.0,
        np.log1p(row_norms.mean()) if n else 0.0,
        float(np.mean(x == 0)) if x.size else 0.0,
        shares[0] * 4.0,
        shares[1] * 2.0,
        shares[2] * 4.0 / 3.0,
        self_mass / total if total else 0.0,
    ])


def _int8_rows(h: np.ndarray) -> np.ndarray:
    scale = np.abs(h).max(axis=1, keepdims=True) / 127.0
    scale[scale == 0] = 1.0
    return np.clip(np.rint(h / scale), -127, 127) * scale


def activation_features(h: np.ndarray) -> np.ndarray:
    """The 16 statistics of a layer input (see ``ACTIVATION_FEATURES``)."""
    h = _real_array(h, "activations")
    h = h.astype(np.float32, copy=False)
    if h.ndim != 2 or h.shape[0] == 0 or h.shape[1] == 0:
        raise ValueError(f"activations must be a non-empty [n, f] array, got shape {h.shape}")
    h64 = h.astype(np.float64)
    mean, std = h64.mean(), h64.std()
    magnitude = np.abs(h64)  # each pass over the activations is taken once (same operations, same results)
    max_abs = magnitude.max()
    centred = h64 - mean
    outliers = float(np.mean(np.abs(centred) > OUTLIER_SIGMAS * std)) if std > 0 else 0.0
    norm = max(np.linalg.norm(h64), 1e-12)
    tensor_scale = max_abs / 127.0 if max_abs > 0 else 1.0
    tensor_error = np.linalg.norm(np.clip(np.rint(h64 / tensor_scale), -127, 127) * tensor_scale - h64) / norm
    row_error_sq = np.sum((_int8_rows(h64) - h64) ** 2, axis=1)
    row_error = np.sqrt(row_error_sq.sum()) / norm
    order = np.sort(row_error_sq)[::-1]
    total_sq = order.sum()
    share = [float(order[: max(1, int(round(q * order.size)))].sum() / total_sq) if total_sq > 0 else 0.0
             for q in (0.05, 0.2)]
    row_norms = np.linalg.norm(h64, axis=1)
    # (c^2)^2, not c ** 4: NumPy's power with exponent 4 calls pow() per element, 14 of the 21 ms of a 2708 x 64
    # call; the float64 mean can differ in its last place, the float32 feature did not in 300 random activations
    kurtosis = float(np.mean(np.square(np.square(centred))) / std**4) if std > 0 else 0.0
    row_max = magnitude.max(axis=1)
    positive_row_max = row_max[row_max > 0]
    spread = float(np.log10(positive_row_max.max() / np.median(positive_row_max))) if positive_row_max.size else 0.0
    return _clip([
        mean,
        std,
        np.log1p(max_abs),
        outliers * 100.0,
        tensor_error * 10.0,
        row_error * 100.0,
        share[0],
        share[1],
        float(np.mean(h64 == 0)),
        row_norms.std() / (row_norms.mean() + 1e-12),
        np.log1p(kurtosis) / 2.0,
        np.log2(h.shape[1]) / 11.0,
        np.log1p(magnitude.mean()),
        spread,
        float(np.mean(h64 < 0)),
        float(row_max.max() / (row_max.sum() + 1e-12)) * 100.0,
    ])


def _level_one_hot(index: int, n_levels: int, buckets: int = 4) -> list[float]:
    """One-hot over ``buckets`` buckets of a level index (more levels than buckets share them proportionally)."""
    hot = [0.0] * buckets
    if index >= 0:
        hot[min(buckets - 1, index * buckets // max(n_levels, 1))] = 1.0
    return hot


def mask_features(
    previous: MaskSummary,
    action_space: ActionSpace,
    upstream_action: int = -1,
    upstream_latency_fraction: float = 0.0,
    budget_fraction: float | None = None,
) -> np.ndarray:
    """The 16 mask / precision-mix features.

    previous:  what this layer ran with on the previous snapshot (``MaskSummary()`` for the first one).
    upstream_action: the action index the preceding layer took on this snapshot (-1 for layer 0).
    upstream_latency_fraction: modelled latency of the earlier layers on this snapshot / reference latency.
    budget_fraction: this snapshot's latency budget / reference latency (None: no budget, counted as 1).
    """
    if not isinstance(previous, MaskSummary):
        raise TypeError(f"previous must be a MaskSummary, got {type(previous).__name__}")
    upstream_action = integer(upstream_action, "upstream_action")
    for name, index in (("previous action index", previous.action_index), ("upstream action", upstream_action)):
        if not -1 <= index < len(action_space):
            raise ValueError(f"{name} {index} is outside the action space [-1, {len(action_space)})")
    upstream_latency_fraction = real_number(upstream_latency_fraction, "upstream_latency_fraction", low=0.0)
    if budget_fraction is not None:
        budget_fraction = real_number(budget_fraction, "budget_fraction")
    s_level, f_level, upstream_channels = -1, -1, 0.0
    if upstream_action >= 0:
        s_level, _, f_level = action_space.level_indices(upstream_action)
        upstream_channels = action_space[upstream_action].channel_sparsity
    bin_share, _, fp16_share = previous.kind_mix
    return _clip([
        previous.sparsity,
        previous.fp16_fraction,
        bin_share,
        previous.channel_sparsity,
        fp16_share,
        (1.0 if budget_fraction is None else budget_fraction) - upstream_latency_fraction,
        previous.latency_share,
        upstream_latency_fraction,
        *_level_one_hot(s_level, len(action_space.sparsity_levels)),
        *_level_one_hot(f_level, len(action_space.fp16_fractions), buckets=3),
        upstream_channels,
    ])


def layer_features(layer: int, num_layers: int) -> np.ndarray:
    """The one-hot of ``layer`` (an int in [0, num_layers)), padded to ``MAX_LAYERS``."""
    num_layers = integer(num_layers, "num_layers")
    if not 1 <= num_layers <= MAX_LAYERS:
        raise ValueError(f"the state encodes 1..{MAX_LAYERS} layers, got num_layers={num_layers}")
    layer = integer(layer, "layer", low=0, high=num_layers - 1)
    hot = np.zeros(MAX_LAYERS, dtype=np.float32)
    hot[layer] = 1.0
    return hot


def build_state(graph: np.ndarray, activations: np.ndarray, mask: np.ndarray, layer: np.ndarray) -> np.ndarray:
    """Concatenate the four groups into the float32 [64] state; raises if any group is malformed."""
    parts = [np.asarray(p, dtype=np.float32) for p in (graph, activations, mask, layer)]
    expected = (len(GRAPH_FEATURES), len(ACTIVATION_FEATURES), len(MASK_FEATURES), MAX_LAYERS)
    for part, size, name in zip(parts, expected, ("graph", "activation", "mask", "layer")):
        if part.shape != (size,):
            raise ValueError(f"{name} features must have shape ({size},), got {part.shape}")
    state = np.concatenate(parts)
    if not np.isfinite(state).all():
        raise ValueError("state contains NaN or Inf")
    return state


class StateNormalizer:
    """Per-feature centring fitted on training states, divided by the feature's std where that is above
    ``STD_FLOOR`` (1): most features are O(1) shares and ratios, which pass through only centred."""

    def __init__(self, mean: np.ndarray | None = None, std: np.ndarray | None = None) -> None:
        self.mean = np.zeros(STATE_DIM, np.float32) if mean is None else np.asarray(mean, np.float32)
        self.std = np.ones(STATE_DIM, np.float32) if std is None else np.asarray(std, np.float32)
        if self.mean.shape != (STATE_DIM,) or self.std.shape != (STATE_DIM,):
            raise ValueError(f"normalizer mean/std must have shape ({STATE_DIM},)")
        if not (np.isfinite(self.mean).all() and np.isfinite(self.std).all()) or (self.std <= 0).any():
            raise ValueError("normalizer mean must be finite and std finite and positive")

    @classmethod
    def fit(cls, states: np.ndarray) -> "StateNormalizer":
        states = np.asarray(states, dtype=np.float64)
        if states.ndim != 2 or states.shape[1] != STATE_DIM or states.shape[0] == 0:
            raise ValueError(f"fit needs a non-empty [k, {STATE_DIM}] array of states, got shape {states.shape}")
        # The fixed transforms already make every feature O(1). A floor on the spread stops features that
        # barely vary across training snapshots (a little drift, a little churn) from being blown up to unit
        # variance, which would let the Q-network memorise snapshots by noise and extrapolate wildly on
        # held-out ones.
        std = np.maximum(states.std(axis=0), STD_FLOOR)
        return cls(states.mean(axis=0), std)

    def __call__(self, state: np.ndarray) -> np.ndarray:
        state = np.asarray(state, dtype=np.float32)
        if state.shape[-1] != STATE_DIM:
            raise ValueError(f"state must have {STATE_DIM} features, got shape {state.shape}")
        return np.clip((state - self.mean) / self.std, -FEATURE_CLIP, FEATURE_CLIP).astype(np.float32)
