"""Dynamic graphs: a reproducible stream of snapshots G_1..G_T derived from a base graph.

Step t -> t+1 applies, in order:
    growth        (optional) new nodes join existing communities of their class and get edges
                  drawn from the block model; their features come from their class's mean;
    edge churn    a fraction of the current edges is removed uniformly at random and the same
                  number of *new* pairs (never present in G_t) is drawn from the block model;
    feature drift each class mean moves by a small Gaussian step and every node is pulled toward
                  (pull > 0) or pushed away from (pull < 0) its class mean, plus Gaussian noise.

The drift's step and the noise are in units of the base graph's features (`feature_unit`: the root mean
square of its nonzero features, at most 1), so a stream's "small" change stays small on TF-IDF or
row-normalised features, whose nonzero entries are a few hundredths: in absolute units the noise of a
dozen steps drowned them (row-normalised Cora's held-out `steady` snapshots: FP32 27 %, in these units 85 %).

Each `Snapshot` records `changed_rows`: the nodes whose adjacency row differs from the previous
snapshot (rows of new nodes count as changed), so an encoder re-encodes only the row windows that
hold them. For G_1 every row counts as changed.

Step t draws from `numpy.random.default_rng([seed, t])`, so snapshot t is the same whether the
stream is iterated, indexed, or rebuilt.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import scipy.sparse as sp

from .csbm import BlockModel, checked_seed, drop_present, make_graph, pair_keys, sample_edges, sorted_unique
from .graph import Graph, adjacency_from_pairs, is_integer

__all__ = [
    "StreamParams", "Snapshot", "SnapshotStream", "make_stream", "block_model_of", "STREAM_PRESETS", "stream_params",
    "feature_unit", "burst_steps", "snapshots_with_heldout_burst",
]


@dataclass(frozen=True)
class StreamParams:
    """Knobs of the stream.

    num_snapshots:  T >= 1.
    edge_churn:     fraction of the previous snapshot's edges replaced per step, in [0, 1) (after a burst step
                    that count includes the leaving flash crowd: with ``burst_edges=0.6`` the step after a burst
                    replaces 1.6 x ``edge_churn`` of the quiet graph's edges).
    growth:         fraction of new nodes per step (relative to the current size, rounded: none on graphs of
                    8 nodes or fewer at 0.06), >= 0. A new node takes the class and community of a random
                    node; its features are its class's current mean plus Gaussian noise with each feature's
                    spread over all nodes (classes' separation included, so new nodes sit farther from their
                    class mean than the old ones). It belongs to no split: accuracy is judged on the base
                    graph's nodes.
    feature_drift:  norm of the per-step Gaussian shift of each class mean (in ``feature_unit``s).
    feature_pull:   per-step rate pulling features toward (> 0) or pushing them away from (< 0)
                    their class mean, in (-1, 1).
    feature_noise:  per-step Gaussian noise std added to every feature (in ``feature_unit``s).
    heldout_fraction: share of the (last) snapshots held out for evaluation, in [0, 1).
    active_fraction: share of communities (classes for loaded graphs) where the step's churn
                    happens, in (0, 1]: removed edges touch an active node and added edges start at
                    one, so changes stay local the way activity bursts in real graphs do.
    burst_every:    every k-th step (k > 0) is a burst: its churn is ``burst_churn`` instead of
                    ``edge_churn`` and its class-mean drift ``burst_drift`` (when > 0); 0 = no bursts.
    burst_edges:    on a burst step, this fraction of the edges (those staying from the previous snapshot, so
                    flash crowds of consecutive bursts do not compound) is added on top of the churn (drawn from
                    the block model, one end in an active community) and removed again at the next step:
                    a flash crowd that raises the snapshot's edge count, and with it its latency, for one
                    step; 0 = none.
    budget_cycle:   per-snapshot latency budgets, as multiples of uniform INT8's modelled latency on
                    that snapshot, repeated cyclically (snapshot t gets entry t mod len); () = none.
                    Carried in ``Snapshot.latency_budget``; the stream itself ignores it (``dste run``
                    applies it through ``dste.controller.int8_multiple_budget``).
    budget_slo:     a latency objective in microseconds, set as this multiple of uniform INT8's modelled
                    latency on snapshot 0 (a service's fixed objective, set when the compressed model is
                    deployed: a burst or growth spends it); 0 = none. Excludes ``budget_cycle``; the stream
                    itself ignores it (``dste run`` applies it).
    slo_refresh_every: with ``budget_slo``, re-provision the objective every this many snapshots: snapshot t
                    is held to ``budget_slo`` times INT8's latency on snapshot ``t - t mod k``, the graph as
                    it was at the last re-provisioning (a growing graph outgrows it in between); 0 = never.
    edge_shortfall_limit: a step whose churn or flash crowd finds fewer new pairs in the block model than it asks
                    for (a small or dense graph, churn confined to few communities) adds what it finds; more than
                    this fraction (and more than one edge) short, its active communities' shortfall is drawn with
                    one end anywhere in the graph, and a step still short by more is refused, in [0, 1). The
                    shortfall is of the step's new edges, a small share of the graph's.
    """

    num_snapshots: int = 8
    edge_churn: float = 0.05
    growth: float = 0.0
    feature_drift: float = 0.1
    feature_pull: float = 0.0
    feature_noise: float = 0.05
    heldout_fraction: float = 0.25
    active_fraction: float = 1.0
    burst_every: int = 0
    burst_churn: float = 0.0
    burst_drift: float = 0.0
    burst_edges: float = 0.0
    budget_cycle: tuple[float, ...] = ()
    budget_slo: float = 0.0
    slo_refresh_every: int = 0
    edge_shortfall_limit: float = 0.1

    def churn_at(self, t: int) -> float:
        """Edge churn of step t: ``burst_churn`` on every ``burst_every``-th step (when bursts are on)."""
        return self.burst_churn if self._bursting(t) else self.edge_churn

    def drift_at(self, t: int) -> float:
        """Class-mean drift of step t: ``burst_drift`` on burst steps when set, else ``feature_drift``."""
        return self.burst_drift if self._bursting(t) and self.burst_drift > 0 else self.feature_drift

    def budget_at(self, t: int) -> float | None:
        """Latency budget of snapshot t as a multiple of uniform INT8's latency on it (None: no ``budget_cycle``)."""
        return float(self.budget_cycle[t % len(self.budget_cycle)]) if self.budget_cycle else None

    def slo_anchor(self, t: int) -> int:
        """The snapshot whose uniform-INT8 latency sets snapshot t's ``budget_slo`` objective."""
        return t - t % self.slo_refresh_every if self.slo_refresh_every else 0

    def _bursting(self, t: int) -> bool:
        return self.burst_every > 0 and t > 0 and t % self.burst_every == 0

    def validate(self) -> None:
        reals = ("edge_churn", "growth", "feature_drift", "feature_pull", "feature_noise", "heldout_fraction",
                 "active_fraction", "burst_churn", "burst_drift", "burst_edges", "budget_slo",
                 "edge_shortfall_limit")
        not_finite = [name for name in reals if not np.isfinite(getattr(self, name))]
        if not_finite:  # NaN passes every range check below (a NaN burst_drift was ignored, a NaN noise failed later)
            raise ValueError(", ".join(f"{name} must be finite, got {getattr(self, name)!r}" for name in not_finite))
        if isinstance(self.budget_cycle, (str, bytes)) or not hasattr(self.budget_cycle, "__iter__"):
            raise TypeError(f"budget_cycle must be a sequence of multiples (e.g. (1.0, 0.9)), got {self.budget_cycle!r}")
        if not is_integer(self.num_snapshots) or self.num_snapshots < 1:
            raise ValueError(f"num_snapshots must be an int >= 1, got {self.num_snapshots!r}")
        if not 0.0 <= self.edge_churn < 1.0:
            raise ValueError(f"edge_churn must lie in [0, 1), got {self.edge_churn}")
        if not 0.0 <= self.growth <= 1.0:
            raise ValueError(f"growth must lie in [0, 1], got {self.growth}")
        if self.feature_drift < 0 or self.feature_noise < 0:
            raise ValueError("feature_drift and feature_noise must be >= 0")
        if not -1.0 < self.feature_pull < 1.0:
            raise ValueError(f"feature_pull must lie in (-1, 1), got {self.feature_pull}")
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ValueError(f"heldout_fraction must lie in [0, 1), got {self.heldout_fraction}")
        if not 0.0 < self.active_fraction <= 1.0:
            raise ValueError(f"active_fraction must lie in (0, 1], got {self.active_fraction}")
        if not is_integer(self.burst_every) or self.burst_every < 0:
            raise ValueError(f"burst_every must be an int >= 0 (0: no bursts), got {self.burst_every!r}")
        if not 0.0 <= self.burst_churn < 1.0:
            raise ValueError(f"burst_churn must lie in [0, 1), got {self.burst_churn}")
        if self.burst_drift < 0:
            raise ValueError(f"burst_drift must be >= 0, got {self.burst_drift}")
        if not 0.0 <= self.burst_edges <= 1.0:
            raise ValueError(f"burst_edges must lie in [0, 1] (a fraction of the edges), got {self.burst_edges}")
        if not 0.0 <= self.edge_shortfall_limit < 1.0:
            raise ValueError(f"edge_shortfall_limit must lie in [0, 1) (a fraction of a step's new edges), got "
                             f"{self.edge_shortfall_limit}")
        if self.burst_edges > 0 and self.burst_every == 0:
            raise ValueError("burst_edges needs bursts: set burst_every > 0")
        if self.budget_slo < 0:
            raise ValueError(
                f"budget_slo must be >= 0 (a multiple of uniform INT8's latency on snapshot 0), got {self.budget_slo}"
            )
        if not is_integer(self.slo_refresh_every) or self.slo_refresh_every < 0:
            raise ValueError(f"slo_refresh_every must be an int >= 0 (0: never), got {self.slo_refresh_every!r}")
        if self.slo_refresh_every and not self.budget_slo:
            raise ValueError("slo_refresh_every re-provisions budget_slo: set budget_slo > 0 too")
        if self.budget_slo > 0 and self.budget_cycle:
            raise ValueError("set budget_slo (one budget for the stream) or budget_cycle (one per snapshot), not both")
        if any(not (np.isfinite(b) and b > 0) for b in self.budget_cycle):
            raise ValueError(f"budget_cycle must hold positive multiples of uniform INT8's latency, got {self.budget_cycle}")


@dataclass
class Snapshot:
    """One graph of the stream.

    index:        position t in the stream (0-based).
    graph:        the snapshot. From snapshot 1 on, ``graph.communities`` (where the base graph has them) are the
                  block model's: the base graph's communities split by class where one spans classes, renumbered
                  in class order; ``graph.meta["active_communities"]`` names the step's active ones in those ids.
    changed_rows: int64 sorted node ids whose adjacency row changed since snapshot t-1.
    added_edges, removed_edges: int64 [2, k] undirected pairs (i < j) added / removed at this step.
    new_nodes:    int64 ids of nodes that joined at this step.
    latency_budget: the snapshot's latency budget as a multiple of uniform INT8's latency on it (``budget_cycle``),
                    or None.
    """

    index: int
    graph: Graph
    changed_rows: np.ndarray
    added_edges: np.ndarray
    removed_edges: np.ndarray
    new_nodes: np.ndarray
    latency_budget: float | None = None

    def changed_windows(self, row_perm: np.ndarray | None = None, window_rows: int = 128) -> np.ndarray:
        """Sorted ids of the row windows holding a changed row.

        row_perm: the encoder's row order (encoded position -> node id, length = num_nodes), or
        None for the identity order; window w holds positions [w * window_rows, (w + 1) * window_rows).
        """
        n = self.graph.num_nodes
        if not is_integer(window_rows) or window_rows < 1:
            raise ValueError(f"window_rows must be a positive int, got {window_rows!r}")
        if row_perm is None:
            positions = self.changed_rows
        else:
            row_perm = np.asarray(row_perm)
            if row_perm.dtype.kind not in "iu":  # a float order passed the check below, then failed as an index
                raise ValueError(f"row_perm must hold integer node ids, got {row_perm.dtype}")
            if row_perm.shape != (n,) or not np.array_equal(np.sort(row_perm), np.arange(n)):
                raise ValueError(f"row_perm must be a permutation of the snapshot's {n} nodes")
            position_of = np.empty(n, dtype=np.int64)
            position_of[row_perm] = np.arange(n)
            positions = position_of[self.changed_rows]
        return np.unique(positions // window_rows)


def feature_unit(x: np.ndarray) -> float:
    """The scale of a stream's feature drift and noise: the root mean square of ``x``'s nonzero entries, at most 1.

    1 on 0/1 word indicators (Cora, CiteSeer) and on the generator's unit-variance Gaussian features, which the
    presets' magnitudes were set on; a few hundredths on TF-IDF or row-normalised features. Capped at 1 so features
    on a larger scale keep the presets' absolute noise (relatively weaker, never drowning); all-zero features: 1.
    """
    x = np.asarray(x)
    nonzero = x[x != 0]
    if nonzero.size == 0:
        return 1.0
    return min(1.0, float(np.sqrt(np.mean(np.square(nonzero, dtype=np.float64)))))


def block_model_of(graph: Graph) -> BlockModel:
    """The block model behind `graph`: the generator's own for CSBM graphs, else one fitted from labels.

    The generator's model (``meta["block_model"]``) is used only while it describes the graph: same nodes, the
    graph's labels and (where the graph has them) communities. A graph rebuilt from a CSBM graph with its node ids
    shuffled keeps the old ``meta``, whose model, in the old order, made the stream's first step rewrite the
    communities (no longer class-pure) and draw edges between the wrong nodes; such a graph gets a fitted model.
    For loaded graphs each class is one community, propensities are degree + 1 and the
    homophily is the measured edge homophily.
    """
    model = graph.meta.get("block_model")
    if _describes(model, graph):
        return model
    homophily = graph.edge_homophily()
    if not np.isfinite(homophily):
        homophily = 1.0
    model_communities = graph.y.astype(np.int64) if graph.communities is None else _renumber_by_class(graph.y, graph.communities)
    locality = homophily if graph.communities is None else min(graph.community_locality(), homophily)
    return BlockModel(graph.y.astype(np.int64), model_communities, graph.degrees() + 1.0, homophily, locality)


def _describes(model, graph: Graph) -> bool:
    """Whether `model` is a BlockModel of `graph`'s nodes, labels and communities."""
    if not isinstance(model, BlockModel) or model.num_nodes != graph.num_nodes:
        return False
    if not np.array_equal(model.node_class, graph.y):
        return False
    return graph.communities is None or np.array_equal(model.node_community, graph.communities)


def _renumber_by_class(y: np.ndarray, communities: np.ndarray) -> np.ndarray:
    """Community ids renumbered so they increase with class (what BlockModel's bounds assume)."""
    pairs = np.stack([y, communities], axis=1)
    _, renumbered = np.unique(pairs, axis=0, return_inverse=True)
    return renumbered.ravel().astype(np.int64)


def _upper_keys(adj: sp.csr_matrix) -> np.ndarray:
    """Sorted int64 keys i * n + j of the undirected edges (i < j)."""
    n = adj.shape[0]
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(adj.indptr))
    cols = adj.indices.astype(np.int64)
    upper = rows < cols
    return rows[upper] * n + cols[upper]


class SnapshotStream:
    """A seeded sequence of `Snapshot`s; `len`, iteration and indexing are all deterministic.

    With `keep_all=False` snapshots are not cached (for arxiv-scale graphs); indexing then
    replays the stream from the start.
    """

    def __init__(self, base: Graph, params: StreamParams | None = None, seed: int = 0, keep_all: bool = True, **overrides):
        if not isinstance(base, Graph):
            raise TypeError(f"base must be a dste.data.Graph, got {type(base).__name__}")
        if params is not None and not isinstance(params, StreamParams):
            hint = " (knobs as keywords: SnapshotStream(base, num_snapshots=...), or StreamParams(**knobs))" if (
                isinstance(params, dict)) else ""
            raise TypeError(f"params must be a StreamParams or None, got {type(params).__name__}{hint}")
        unknown = sorted(set(overrides) - {f.name for f in fields(StreamParams)})
        if unknown:
            raise TypeError(f"unknown stream knobs {unknown}; the knobs are StreamParams' fields: "
                            f"{', '.join(f.name for f in fields(StreamParams))}")
        params = replace(params or StreamParams(), **overrides)
        params.validate()
        self.base, self.params, self.seed, self.keep_all = base, params, checked_seed(seed), keep_all
        self._cache: list[Snapshot] = []
        classes = np.arange(base.num_classes)
        present = np.isin(classes, base.y)
        if not present.all():
            raise ValueError(
                f"{base.name}: declares {base.num_classes} classes but no node has class "
                f"{classes[~present].tolist()}; a stream moves every class's feature mean, so each class needs a node: "
                "give the graph num_classes = the classes its labels use (renumbered 0..k-1)")
        self._class_means0 = np.stack([base.x[base.y == c].mean(axis=0) for c in classes]).astype(np.float64)
        self.feature_unit = feature_unit(base.x)

    # -- split of snapshot indices ----------------------------------------------------------------
    def __len__(self) -> int:
        return self.params.num_snapshots

    @property
    def heldout_indices(self) -> np.ndarray:
        """The last ceil(heldout_fraction * T) snapshots (at least one when T >= 2 and fraction > 0)."""
        total = len(self)
        count = heldout_count(total, self.params.heldout_fraction)
        return np.arange(total - count, total, dtype=np.int64)

    @property
    def train_indices(self) -> np.ndarray:
        return np.arange(0, len(self) - self.heldout_indices.size, dtype=np.int64)

    # -- access ----------------------------------------------------------------------------------
    def __iter__(self):
        state = None
        for t in range(len(self)):
            if t < len(self._cache):
                snap = self._cache[t]
                state = self._state_after(snap)
            else:
                snap, state = self._step(t, state)
                if self.keep_all:
                    self._cache.append(snap)
            yield snap

    def __getitem__(self, t: int) -> Snapshot:
        if not is_integer(t):
            raise TypeError(f"snapshot index must be an int, got {type(t).__name__}")
        index = t + len(self) if t < 0 else t
        if not 0 <= index < len(self):
            raise IndexError(f"snapshot index {t} out of range for a stream of {len(self)}")
        t = index
        if t < len(self._cache):
            return self._cache[t]
        for i, snap in enumerate(self):
            if i == t:
                return snap
        raise AssertionError("unreachable")

    # -- one step ----------------------------------------------------------------------------------
    def _state_after(self, snap: Snapshot):
        return {"graph": snap.graph, "means": snap.graph.meta["class_means"]}

    def _step(self, t: int, state):
        if t == 0:
            graph = self.base
            # a base graph taken from another stream's snapshot must not hand that stream's flash crowd to step 1
            meta = {k: v for k, v in graph.meta.items() if k != "burst_keys"}
            meta.update(class_means=self._class_means0.copy(), snapshot=0)
            graph = replace(graph, meta=meta)
            n = graph.num_nodes
            empty = np.zeros((2, 0), dtype=np.int64)
            snap = Snapshot(
                0, graph, np.arange(n, dtype=np.int64), empty, empty, np.zeros(0, dtype=np.int64), self.params.budget_at(0)
            )
            return snap, self._state_after(snap)

        rng = np.random.default_rng([self.seed, t])
        prev: Graph = state["graph"]
        means = state["means"]
        p = self.params
        model = block_model_of(prev)
        n_prev = prev.num_nodes

        # Growth: new nodes, their block-model attributes and their first edges.
        num_new = int(round(p.growth * n_prev))
        y, communities, theta, x = prev.y, model.node_community, model.theta, prev.x.astype(np.float64)
        new_nodes = np.arange(n_prev, n_prev + num_new, dtype=np.int64)
        if num_new:
            anchors = rng.integers(0, n_prev, size=num_new)  # each joins the community of a random node
            y = np.concatenate([y, y[anchors]])
            communities = np.concatenate([communities, model.node_community[anchors]])
            theta = np.concatenate([theta, theta[rng.integers(0, n_prev, size=num_new)]])
            spread = x.std(axis=0)
            x = np.concatenate([x, means[y[new_nodes]] + rng.standard_normal((num_new, x.shape[1])) * spread])
        n = n_prev + num_new
        grown_model = BlockModel(y, communities, theta, model.homophily, model.locality)

        old_keys = _upper_keys(prev.adj)
        # Edge churn: remove a random fraction, then add the same number of fresh pairs.
        num_remove = int(round(p.churn_at(t) * old_keys.size))
        active_pool = None
        active_blocks = None
        candidates = old_keys
        if p.active_fraction < 1.0:
            blocks = np.unique(model.node_community)
            active_blocks = rng.choice(blocks, size=max(1, int(round(p.active_fraction * blocks.size))), replace=False)
            is_active = np.isin(communities, active_blocks)
            active_pool = np.flatnonzero(is_active)
            candidates = old_keys[is_active[old_keys // n_prev] | is_active[old_keys % n_prev]]
            # Churn is a fraction of all edges, capped by what the active region holds.
            num_remove = min(num_remove, candidates.size)
        # The last burst's extra edges leave now; churn draws from the other edges.
        flash_leaving = prev.meta.get("burst_keys")
        if flash_leaving is not None and flash_leaving.size:
            candidates = drop_present(candidates, flash_leaving)
            num_remove = min(num_remove, candidates.size)
        removed = np.sort(rng.choice(candidates, size=num_remove, replace=False)) if num_remove else old_keys[:0]
        if flash_leaving is not None and flash_leaving.size:
            removed = sorted_unique(np.concatenate([removed, flash_leaving]))
        kept_keys = drop_present(old_keys, removed)
        # Old keys are i * n_prev + j; re-key them for the grown size (j < n_prev keeps them sorted).
        kept_pairs = np.stack([kept_keys // n_prev, kept_keys % n_prev])
        exclude = pair_keys(*np.stack([old_keys // n_prev, old_keys % n_prev]), n)

        added_pairs = [np.zeros((2, 0), dtype=np.int64)]
        if num_new:
            # New nodes' own edges: one per node plus propensity-weighted extras, mean degree preserved.
            mean_degree = max(prev.num_edges / max(n_prev, 1), 1.0)
            extra = int(round(num_new * max(mean_degree / 2.0 - 1.0, 0.0)))
            sources = np.concatenate([new_nodes, rng.choice(new_nodes, size=extra)])
            kinds = grown_model.feasible_kinds(sources, rng.choice(3, size=sources.size, p=grown_model.kind_probabilities()))
            targets = grown_model.draw_targets(rng, sources, kinds)
            keys = drop_present(sorted_unique(pair_keys(sources, targets, n)[sources != targets]), exclude)
            added_pairs.append(np.stack([keys // n, keys % n]))
            exclude = sorted_unique(np.concatenate([exclude, keys]))
        churn_keys = old_keys[:0]
        if num_remove:
            churn_keys = _draw_new_edges(grown_model, rng, num_remove, exclude, active_pool, p.edge_shortfall_limit)
            _refuse_shortfall(t, "its churn", churn_keys.size, num_remove, p.edge_shortfall_limit,
                              "lower edge_churn (burst_churn on a burst)")
            added_pairs.append(np.stack([churn_keys // n, churn_keys % n]))
        flash_keys = None
        if p.burst_edges > 0 and p._bursting(t):
            # exclude already holds the old edges and the new nodes' ones; the churn's are added here
            staying = old_keys.size - (0 if flash_leaving is None else flash_leaving.size)
            flash_wanted = int(round(p.burst_edges * staying))
            taken = sorted_unique(np.concatenate([exclude, churn_keys]))
            flash_keys = _draw_new_edges(grown_model, rng, flash_wanted, taken, active_pool, p.edge_shortfall_limit)
            _refuse_shortfall(t, "its flash crowd", flash_keys.size, flash_wanted, p.edge_shortfall_limit,
                              "lower burst_edges")
            added_pairs.append(np.stack([flash_keys // n, flash_keys % n]))
        added = np.concatenate(added_pairs, axis=1)
        removed_pairs = np.stack([removed // n_prev, removed % n_prev])

        all_pairs = np.concatenate([kept_pairs, added], axis=1)
        adj = adjacency_from_pairs(all_pairs[0], all_pairs[1], n)

        # Feature drift.
        step = rng.standard_normal(means.shape)
        step *= p.drift_at(t) * self.feature_unit / np.sqrt(means.shape[1])
        means = means + step
        x = x + step[y]
        x = x + p.feature_pull * (means[y] - x)
        if p.feature_noise:
            x = x + p.feature_noise * self.feature_unit * rng.standard_normal(x.shape)

        changed = sorted_unique(np.concatenate([added.ravel(), removed_pairs.ravel(), new_nodes]))
        pad = np.zeros(num_new, dtype=bool)
        graph = Graph(
            adj=adj,
            x=x.astype(np.float32),
            y=y.astype(np.int64),
            train_mask=np.concatenate([prev.train_mask, pad]),
            val_mask=np.concatenate([prev.val_mask, pad]),
            test_mask=np.concatenate([prev.test_mask, pad]),
            num_classes=prev.num_classes,
            name=f"{self.base.name}@{t}",
            communities=None if prev.communities is None else grown_model.node_community.copy(),
            meta={"source": "stream", "snapshot": t, "class_means": means, "block_model": grown_model,
                  "base": self.base.name, "active_communities": active_blocks, "burst_keys": flash_keys},
        )
        snap = Snapshot(t, graph, changed.astype(np.int64), added, removed_pairs, new_nodes, p.budget_at(t))
        return snap, self._state_after(snap)


def heldout_count(total: int, fraction: float) -> int:
    """Snapshots a stream of ``total`` holds out at ``heldout_fraction``: the ceiling of the product (at least one
    when ``total >= 2`` and the fraction > 0), never every snapshot."""
    # rounded first: 0.07 * 100 is 7.000000000000001 in binary, whose ceil would hold out 8
    return min(int(np.ceil(round(fraction * total, 9))), total - 1)


def burst_steps(params: StreamParams, total: int) -> list[int]:
    """The burst steps among snapshots ``0 .. total - 1`` of a stream with ``params`` (none without bursts)."""
    return [t for t in range(total) if params._bursting(t)]


def snapshots_with_heldout_burst(params: StreamParams, at_least: int) -> int:
    """The fewest snapshots, at least ``at_least``, whose held-out part (``heldout_fraction``) holds a burst step of
    ``params``; ``at_least`` itself for a stream without bursts. A run that judges a bursty stream only on quiet
    snapshots never sees the situation the stream exists for: six snapshots hold out the fifth and sixth, and with
    a burst every third step both are quiet."""
    if params.burst_every <= 0 or params.heldout_fraction == 0:
        return at_least
    total = max(at_least, 2)
    while not any(params._bursting(t) for t in range(total - heldout_count(total, params.heldout_fraction), total)):
        total += 1  # ends within burst_every steps: the last snapshot, always held out, takes every index
    return total


def _too_short(drawn: int, wanted: int, limit: float) -> bool:
    """More than ``limit`` of ``wanted`` (and more than one edge) not drawn."""
    return wanted - drawn > max(limit * wanted, 1.0)


def _draw_new_edges(model, rng, wanted: int, exclude: np.ndarray, active_pool, limit: float) -> np.ndarray:
    """``wanted`` new pair keys from ``model`` (fewer where it holds too few), one end in ``active_pool`` (None:
    anywhere). Where the active communities hold too few pairs (``_too_short``: small communities, a large flash
    crowd), the rest is drawn with one end anywhere in the graph: the step is then less local, but keeps its size.
    A draw within the limit is kept as it is, so streams that never fall short draw what they always drew."""
    keys = sample_edges(model, rng, wanted, every_node_once=False, exclude_keys=exclude, source_pool=active_pool)
    if active_pool is not None and _too_short(keys.size, wanted, limit):
        rest = sample_edges(model, rng, wanted - keys.size, every_node_once=False,
                            exclude_keys=sorted_unique(np.concatenate([exclude, keys])), source_pool=None)
        keys = sorted_unique(np.concatenate([keys, rest]))
    return keys


def _refuse_shortfall(t: int, what: str, drawn: int, wanted: int, limit: float, remedy: str) -> None:
    """Refuse a step whose new edges fall more than `limit` (and more than one edge) short of what its knobs ask
    for: the block model (with churn confined to the active communities) holds too few pairs not yet in the graph,
    and the snapshot would hold far fewer edges than the stream says."""
    if _too_short(drawn, wanted, limit):
        raise ValueError(
            f"snapshot {t}: {what} asks for {wanted} new edges, but only {drawn} pairs not yet in the graph could "
            f"be drawn from the block model (more than edge_shortfall_limit={limit:.0%} short: the graph is too small "
            f"or too dense for the step). {remedy.capitalize()}, raise active_fraction, use a larger graph, or allow "
            "the shortfall (edge_shortfall_limit)"
        )


STREAM_PRESETS: dict[str, tuple[StreamParams, str]] = {
    "steady": (
        StreamParams(),
        "5 % of edges replaced and a small class-mean drift every step: the graph barely changes, so one static "
        "action is as good as any schedule (the default of `dste run`)",
    ),
    "bursty": (
        StreamParams(edge_churn=0.01, burst_every=3, burst_churn=0.01, burst_edges=0.6, active_fraction=0.3,
                     budget_slo=1.05),
        "quiet steps (1 % churn) broken every third step by a flash crowd: 60 % more edges for one step, one "
        "end of each in 30 % of the communities, under one latency objective for the whole stream (uniform "
        "INT8's modelled latency on the first snapshot plus 5 % headroom). On cora-like, Cora, citeseer-like "
        "and a 4,000-node CSBM (trn2 cost model) uniform INT8 fits the quiet snapshots and overspends a burst "
        "by 7-27 %; where edges are a large share of the cost, only pruning that is not worth it on a quiet "
        "snapshot fits a burst",
    ),
    "drift": (
        StreamParams(edge_churn=0.02, feature_drift=0.8, feature_noise=0.2, feature_pull=-0.05),
        "features drift away from what the model was trained on (class means move 8x faster than 'steady', "
        "noise grows and nodes spread away from their class mean): the layer input's outliers and the "
        "accuracy lost to INT8 and channel pruning grow over time",
    ),
    "growing": (
        StreamParams(edge_churn=0.02, growth=0.06, budget_slo=1.0, slo_refresh_every=3),
        "6 % new nodes per step (fresh, unlabelled by training) joining their class's communities, under a "
        "latency objective re-provisioned every third snapshot to uniform INT8's modelled latency on the graph as "
        "it is then: in between the graph outgrows it (on the held-out snapshots of cora-like, Cora and a "
        "3,500-node CSBM, trn2 cost model, uniform INT8 overspends it by 2-8 % one snapshot after a "
        "re-provisioning and 5-21 % two after), so each snapshot after one needs more pruning than the last",
    ),
    "budget-shift": (
        StreamParams(budget_cycle=(1.05, 0.95, 0.88, 1.0)),
        "the 'steady' graph with a latency budget that changes per snapshot (105/95/88/100 % of uniform INT8's "
        "modelled latency on the snapshot, cyclically), as a service under varying load would set it. Set "
        "against INT8, not FP32, the budgets bind on every graph: on Cora 60 % of FP32 is above INT8's latency. "
        "The cheapest action costs 60-84 % of INT8 on cora-like, Cora, citeseer-like and two CSBMs (trn2 cost "
        "model), so uniform INT8 fits two budgets of four and the others force pruning, by different amounts",
    ),
}
"""Named streams, ``name -> (StreamParams, what changes and why it matters)``; ``stream_params(name)``."""


def stream_params(name: str, num_snapshots: int | None = None) -> StreamParams:
    """The `StreamParams` of preset ``name`` (see ``STREAM_PRESETS``), with ``num_snapshots`` if given."""
    if name not in STREAM_PRESETS:
        raise ValueError(f"unknown stream preset {name!r}; choose one of {sorted(STREAM_PRESETS)}")
    params = STREAM_PRESETS[name][0]
    return params if num_snapshots is None else replace(params, num_snapshots=num_snapshots)


def make_stream(
    base: "Graph | str" = "cora-like", num_snapshots: int = 8, seed: int = 0, preset: str = "steady", **knobs
) -> SnapshotStream:
    """A `SnapshotStream` over a Graph or a CSBM preset name (generated with the same seed), following the
    stream preset ``preset`` (``STREAM_PRESETS``) with ``knobs`` overriding its fields."""
    graph = make_graph(base, seed=seed) if isinstance(base, str) else base
    return SnapshotStream(graph, stream_params(preset, num_snapshots), seed=seed, **knobs)
