"""Contextual stochastic block model (CSBM) graphs with local community structure.

Nodes belong to classes; each class is split into small *communities* (tens to a few hundred
nodes), the way real citation graphs are locally clustered. Every undirected edge has one of
three kinds, drawn with fixed probabilities:

    local       both ends in the same community                      probability = locality
    same-class  same class, different community                      probability = homophily - locality
    cross-class different classes                                    probability = 1 - homophily

so the expected edge homophily is `homophily` and the expected community locality is `locality`
(communities are class-pure, hence homophily >= locality is required). A class of one community (any class
smaller than twice `community_size`'s minimum) holds no same-class pair outside its community, so same-class edges
start only at nodes of the other classes, and a node of such a class whose first edge (below) draws the same-class
kind gets a local one. Where no class holds two communities and homophily > locality, the same-class edges cannot
be drawn and `make_graph` refuses the graph as short of edges, naming the classes. Not refused: where `num_edges`
is close to `num_nodes`, the first-edge round can leave some kind above its share and the graph above `num_edges`
(2,133 nodes of 8 classes in communities of 116-177 nodes, asked for 2,330 edges at locality 0.001, got 3,050 at
0.24); measure `community_locality()` on graphs that sparse.

Endpoints are drawn in proportion to per-node propensities theta ~ lognormal(0, degree_sigma) (a degree-corrected
block model), so degrees are skewed. Every node first gets one edge of its own, so no node is isolated.

Features are Gaussian: x_i = mu * m_{y_i} + community_shift * s_{c_i} + N(0, I_f), with unit class
directions m and community directions s drawn at random. Node ids are randomly permuted at the
end, so neither class nor community can be read from the node order.

Sampling is vectorised: nodes are sorted by (class, community), the propensities are cumulated,
and a node in any contiguous group (one community, one class, everything) minus an excluded
sub-range is drawn by one uniform draw and a `searchsorted`. Duplicate pairs are merged and each
edge kind is topped up until its target count is met.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace

import numpy as np

from dste.checks import real_number

from .graph import Graph, adjacency_from_pairs, is_integer
from .splits import SplitTooLarge, planetoid_split, split_sizes_that_fit

__all__ = ["CSBMParams", "PRESETS", "make_graph", "preset_names"]

EDGE_LOCAL, EDGE_SAME_CLASS, EDGE_CROSS_CLASS = 0, 1, 2
TOP_UP_ROUNDS = 12
EDGE_SHORTFALL_LIMIT = 0.02  # make_graph refuses a graph more than 2 % short of its edge target
TOP_UP_TOLERANCE = 1e-3  # stop topping up once each edge kind is within 0.1 % of its target
MAX_PROPENSITY_RATIO = 1e3  # clip theta to [median / ratio, median * ratio] so no node swallows all edges


@dataclass(frozen=True)
class CSBMParams:
    """Knobs of the generator (see module docstring for the model).

    num_nodes, num_edges (undirected), num_classes, num_features: sizes.
    homophily:      expected fraction of edges inside a class, in [locality, 1].
    locality:       expected fraction of edges inside a community, in [0, homophily].
    community_size: (min, max) community sizes, drawn uniformly per community; min >= 2.
    degree_sigma:   lognormal sigma of the propensities; 0 gives a plain SBM.
    mu:             class signal strength of the features (distance of class means from 0).
    community_shift: strength of the per-community feature offset (0 disables it).
    class_concentration: Dirichlet concentration of the class proportions (large = balanced).
    train_per_class, num_val, num_test: Planetoid-style split sizes. Where neither split size is named and the
                    graph is too small for them (``resolve_params``), both shrink to fit (``split_that_fits``).
    """

    name: str = "csbm"
    num_nodes: int = 2708
    num_edges: int = 5278
    num_classes: int = 7
    num_features: int = 500
    homophily: float = 0.81
    locality: float = 0.55
    community_size: tuple[int, int] = (32, 256)
    degree_sigma: float = 0.9
    mu: float = 2.0
    community_shift: float = 0.0
    class_concentration: float = 8.0
    train_per_class: int = 20
    num_val: int = 500
    num_test: int = 1000

    def validate(self) -> None:
        counts = ("num_nodes", "num_edges", "num_classes", "num_features", "train_per_class", "num_val", "num_test")
        not_whole = [name for name in counts if not is_integer(getattr(self, name))]
        if not_whole:  # a float count was floored by the generator or failed deep inside NumPy
            raise ValueError(", ".join(f"{name} must be an integer, got {getattr(self, name)!r}" for name in not_whole))
        size = self.community_size
        if not (isinstance(size, (tuple, list)) and len(size) == 2 and all(is_integer(v) for v in size)):
            raise ValueError(f"community_size must be a pair of integers (min, max), got {size!r}")
        reals = ("homophily", "locality", "degree_sigma", "mu", "community_shift", "class_concentration")
        for name in reals:  # a bool or a string is not a rate: True read as 1.0
            real_number(getattr(self, name), name, finite=False)
        not_finite = [name for name in reals if not np.isfinite(getattr(self, name))]
        if not_finite:
            raise ValueError(", ".join(f"{name} must be finite, got {getattr(self, name)!r}" for name in not_finite))
        negative = [name for name in ("train_per_class", "num_val", "num_test") if getattr(self, name) < 0]
        if negative:  # a negative split size would slice from the end of the node list
            raise ValueError(f"{', '.join(negative)} must be >= 0")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if self.num_nodes < self.num_classes * max(2, self.community_size[0]):
            raise ValueError(
                f"num_nodes={self.num_nodes} too small for {self.num_classes} classes of communities "
                f"of at least {self.community_size[0]} nodes: give num_nodes >= "
                f"{self.num_classes * max(2, self.community_size[0])}, fewer num_classes or a smaller community_size"
            )
        if self.num_features < 1:
            raise ValueError(f"num_features must be >= 1, got {self.num_features}")
        if self.num_edges < self.num_nodes:
            raise ValueError(
                f"num_edges={self.num_edges} must be >= num_nodes={self.num_nodes} (every node gets an edge)"
            )
        max_edges = self.num_nodes * (self.num_nodes - 1) // 2
        if self.num_edges > max_edges // 4:
            raise ValueError(f"num_edges={self.num_edges} too dense for a sparse generator on num_nodes={self.num_nodes} "
                             f"(at most {max_edges // 4}: a quarter of all node pairs); give num_edges between "
                             f"{self.num_nodes} and {max_edges // 4}")
        if not 0.0 <= self.locality <= self.homophily <= 1.0:
            raise ValueError(
                f"need 0 <= locality <= homophily <= 1 (communities are class-pure), "
                f"got locality={self.locality}, homophily={self.homophily}"
            )
        lo, hi = self.community_size
        if not 2 <= lo <= hi:
            raise ValueError(f"community_size must be (min, max) with 2 <= min <= max, got {self.community_size}")
        if self.degree_sigma < 0 or self.mu < 0 or self.community_shift < 0:
            raise ValueError("degree_sigma, mu and community_shift must be >= 0")
        if self.class_concentration <= 0:
            raise ValueError(f"class_concentration must be > 0, got {self.class_concentration}")


PRESETS: dict[str, CSBMParams] = {
    # Cora-sized: 2,708 nodes, 5,278 undirected edges, 7 classes, Planetoid split 140/500/1000.
    "cora-like": CSBMParams(name="cora-like"),
    # ogbn-arxiv-sized: 169,343 nodes, ~1.17M undirected edges, 40 classes, 128 features.
    # Communities are class-pure, so locality 0.85 forces homophily >= 0.85 (arxiv's own is ~0.65).
    "arxiv-scale": CSBMParams(
        name="arxiv-scale",
        num_nodes=169_343,
        num_edges=1_166_243,
        num_classes=40,
        num_features=128,
        homophily=0.9,
        locality=0.85,
        community_size=(64, 128),
        degree_sigma=1.3,
        mu=0.8,
        community_shift=0.0,
        class_concentration=2.0,
        # An OGB-like labelled share (~24 % train) rather than Planetoid's 20 per class.
        train_per_class=1000,
        num_val=30000,
        num_test=48000,
    ),
}
# The same size with 95 % of edges inside a community: the locality a good partition gives a citation
# graph's topical clusters. Edges that leave their community are the ones no reordering can make share a
# gathered X row, so the two presets bracket what the format's stretch depends on.
PRESETS["arxiv-scale-local"] = replace(PRESETS["arxiv-scale"], name="arxiv-scale-local", locality=0.95, homophily=0.96)
# CiteSeer-sized: 3,327 nodes, 4,552 undirected edges, 6 classes, 3,703 features (the wide-feature case).
PRESETS["citeseer-like"] = replace(
    PRESETS["cora-like"], name="citeseer-like", num_nodes=3_327, num_edges=4_552, num_classes=6, num_features=3_703
)
# PubMed-sized: 19,717 nodes, 44,324 undirected edges, 3 classes, 500 features, Planetoid split 60/500/1000;
# every other knob as cora-like, so the two differ in size and class count only.
PRESETS["pubmed-like"] = replace(
    PRESETS["cora-like"], name="pubmed-like", num_nodes=19_717, num_edges=44_324, num_classes=3, num_features=500
)


def split_that_fits(params: CSBMParams) -> CSBMParams:
    """``params`` with ``num_val`` and ``num_test`` shrunk as ``split_sizes_that_fit`` shrinks them for the nodes left
    after the training picks; unchanged where they fit (every graph of 2,708 nodes or more with Planetoid's sizes) or
    where no node is left, which ``planetoid_split`` refuses."""
    left = params.num_nodes - params.train_per_class * params.num_classes
    num_val, num_test = split_sizes_that_fit(left, params.num_val, params.num_test)
    if (num_val, num_test) == (params.num_val, params.num_test):
        return params
    return replace(params, num_val=num_val, num_test=num_test)


def preset_names() -> list[str]:
    return sorted(PRESETS)


def resolve_params(preset_or_params: "str | CSBMParams | dict", **overrides) -> CSBMParams:
    """A CSBMParams from a preset name, a params object or a dict of fields, plus overrides. Where a preset or a dict
    is resized and names neither ``num_val`` nor ``num_test``, those shrink to fit a graph too small for them
    (``split_that_fits``); split sizes a caller names are kept, and refused by the split if they do not fit."""
    if isinstance(preset_or_params, CSBMParams):
        params = preset_or_params
    elif isinstance(preset_or_params, str):
        if preset_or_params not in PRESETS:
            raise ValueError(f"unknown CSBM preset {preset_or_params!r}; allowed: {preset_names()}")
        params = PRESETS[preset_or_params]
    elif isinstance(preset_or_params, dict):
        unknown = set(preset_or_params) - set(asdict(CSBMParams()))
        if unknown:
            raise ValueError(f"unknown CSBM parameters {sorted(unknown)}; allowed: {sorted(asdict(CSBMParams()))}")
        params = CSBMParams(**preset_or_params)
    else:
        raise TypeError(
            f"expected a preset name {preset_names()}, a CSBMParams or a dict, got {type(preset_or_params).__name__}"
        )
    named = set(overrides) | (set(preset_or_params) if isinstance(preset_or_params, dict) else set())
    if overrides:
        params = replace(params, **overrides)
    if not isinstance(preset_or_params, CSBMParams) and not named & {"num_val", "num_test"}:
        params = split_that_fits(params)
    params.validate()
    return params


@dataclass
class BlockModel:
    """The latent structure of a generated graph, in *sorted* node order (by class, community).

    Shared with `dste.data.stream`, which draws new edges from the same model.
    """

    node_class: np.ndarray  # int64 [n]
    node_community: np.ndarray  # int64 [n], community ids increase with class
    theta: np.ndarray  # float64 [n] degree propensities
    homophily: float
    locality: float

    def __post_init__(self) -> None:
        n = self.node_class.shape[0]
        order = np.lexsort((self.node_community, self.node_class))
        self.order = order  # sorted position -> node id
        sorted_theta = self.theta[order]
        self.cum = np.concatenate([[0.0], np.cumsum(sorted_theta)])
        self.position = np.empty(n, dtype=np.int64)
        self.position[order] = np.arange(n)
        self.class_lo, self.class_hi = _group_bounds(self.node_class[order])
        self.comm_lo, self.comm_hi = _group_bounds(self.node_community[order])
        # A class of one community holds no same-class pair outside it (communities increase with class, so a
        # class spans one community exactly when its first and last sorted nodes share it).
        sorted_community = self.node_community[order]
        class_has_room = sorted_community[self.class_lo] != sorted_community[np.maximum(self.class_hi - 1, 0)]
        self.same_class_room = class_has_room[self.node_class]  # bool [n], per node id

    def feasible_kinds(self, sources: np.ndarray, kinds: np.ndarray) -> np.ndarray:
        """``kinds`` with the same-class edges of sources whose class is one community made local: such a source
        has no same-class partner outside its community, and a same-class draw from it would land on a local pair
        (the community's last node, every time) while being counted as same-class."""
        blocked = (kinds == EDGE_SAME_CLASS) & ~self.same_class_room[sources]
        return np.where(blocked, EDGE_LOCAL, kinds) if blocked.any() else kinds

    @property
    def num_nodes(self) -> int:
        return int(self.node_class.shape[0])

    def draw_sources(self, rng: np.random.Generator, count: int, pool: np.ndarray | None = None) -> np.ndarray:
        """Node ids drawn in proportion to theta, from all nodes or from the ids in `pool`."""
        if pool is not None:
            cum = np.concatenate([[0.0], np.cumsum(self.theta[pool])])
            pos = np.clip(np.searchsorted(cum, rng.random(count) * cum[-1], side="right") - 1, 0, pool.size - 1)
            return pool[pos]
        r = rng.random(count) * self.cum[-1]
        pos = np.clip(np.searchsorted(self.cum, r, side="right") - 1, 0, self.num_nodes - 1)
        return self.order[pos]

    def draw_targets(self, rng: np.random.Generator, src: np.ndarray, kind: np.ndarray) -> np.ndarray:
        """For each source node and edge kind, a target node drawn in proportion to theta.

        local: inside the source's community, excluding the source itself;
        same-class: inside its class, excluding its community; cross-class: outside its class.
        """
        pos = self.position[src]
        cls, comm = self.node_class[src], self.node_community[src]
        cum = self.cum
        whole = np.zeros_like(pos)
        everything = np.full_like(pos, self.num_nodes)
        lo = np.where(kind == EDGE_CROSS_CLASS, whole, np.where(kind == EDGE_SAME_CLASS, self.class_lo[cls], self.comm_lo[comm]))
        hi = np.where(kind == EDGE_CROSS_CLASS, everything, np.where(kind == EDGE_SAME_CLASS, self.class_hi[cls], self.comm_hi[comm]))
        skip_lo = np.where(kind == EDGE_CROSS_CLASS, self.class_lo[cls], np.where(kind == EDGE_SAME_CLASS, self.comm_lo[comm], pos))
        skip_hi = np.where(kind == EDGE_CROSS_CLASS, self.class_hi[cls], np.where(kind == EDGE_SAME_CLASS, self.comm_hi[comm], pos + 1))
        skip_weight = cum[skip_hi] - cum[skip_lo]
        span = np.maximum(cum[hi] - cum[lo] - skip_weight, 0.0)
        r = cum[lo] + rng.random(src.shape[0]) * span
        r = np.where(r >= cum[skip_lo], r + skip_weight, r)
        target_pos = np.clip(np.searchsorted(cum, r, side="right") - 1, lo, hi - 1)
        return self.order[target_pos]

    def edge_kind(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        same_comm = self.node_community[a] == self.node_community[b]
        same_class = self.node_class[a] == self.node_class[b]
        return np.where(same_comm, EDGE_LOCAL, np.where(same_class, EDGE_SAME_CLASS, EDGE_CROSS_CLASS))

    def kind_probabilities(self) -> np.ndarray:
        return np.array([self.locality, self.homophily - self.locality, 1.0 - self.homophily])

    def permuted(self, perm: np.ndarray) -> "BlockModel":
        """The same model after relabelling node `old` as `perm[old]`."""
        inverse = np.empty_like(perm)
        inverse[perm] = np.arange(perm.shape[0])
        return BlockModel(
            self.node_class[inverse], self.node_community[inverse], self.theta[inverse], self.homophily, self.locality
        )


def _group_bounds(sorted_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[lo, hi) positions of each label value in a sorted label array (labels 0..L-1, all present)."""
    num_labels = int(sorted_labels.max()) + 1
    lo = np.searchsorted(sorted_labels, np.arange(num_labels), side="left")
    hi = np.searchsorted(sorted_labels, np.arange(num_labels), side="right")
    return lo.astype(np.int64), hi.astype(np.int64)


def sorted_unique(keys: np.ndarray) -> np.ndarray:
    """Sorted distinct values of an int64 array (sort-based; faster than hashing here)."""
    keys = np.sort(keys)
    if keys.size == 0:
        return keys
    return keys[np.concatenate([[True], keys[1:] != keys[:-1]])]


def drop_present(keys: np.ndarray, present: np.ndarray) -> np.ndarray:
    """`keys` without the values in sorted array `present`."""
    if present.size == 0 or keys.size == 0:
        return keys
    slot = np.clip(np.searchsorted(present, keys), 0, present.size - 1)
    return keys[present[slot] != keys]


def pair_keys(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """Order-free int64 key of each undirected pair."""
    return np.minimum(a, b) * np.int64(n) + np.maximum(a, b)


def sample_edges(
    model: BlockModel,
    rng: np.random.Generator,
    num_edges: int,
    every_node_once: bool,
    exclude_keys: np.ndarray | None = None,
    source_pool: np.ndarray | None = None,
) -> np.ndarray:
    """Up to `num_edges` distinct undirected pair keys drawn from the model (sorted, int64).

    Each edge kind is topped up separately so the kind fractions match the model's knobs. Fewer come back
    where the model holds too few distinct pairs within `TOP_UP_ROUNDS`; callers refuse a shortfall beyond
    their limit (`EDGE_SHORTFALL_LIMIT`).
    Keys in `exclude_keys` (already present edges) are never returned. With `source_pool`, one
    end of every edge is drawn from those node ids.
    """
    n = model.num_nodes
    probs = model.kind_probabilities()
    targets = np.floor(probs * num_edges).astype(np.int64)
    targets[np.argmax(probs)] += num_edges - targets.sum()
    exclude = np.zeros(0, dtype=np.int64) if exclude_keys is None else sorted_unique(np.asarray(exclude_keys, dtype=np.int64))

    def draw(sources: np.ndarray, kinds: np.ndarray) -> np.ndarray:
        targets_ = model.draw_targets(rng, sources, kinds)
        keep = targets_ != sources
        return pair_keys(sources[keep], targets_[keep], n)

    kept = [np.zeros(0, dtype=np.int64) for _ in range(3)]
    if every_node_once:
        sources = rng.permutation(n).astype(np.int64)
        kinds = model.feasible_kinds(sources, rng.choice(3, size=n, p=probs))
        first = drop_present(sorted_unique(draw(sources, kinds)), exclude)
        first_kinds = model.edge_kind(first // n, first % n)
        for kind in range(3):
            kept[kind] = first[first_kinds == kind]
    for _ in range(TOP_UP_ROUNDS):
        deficits = targets - np.array([k.size for k in kept])
        if np.all(deficits <= np.maximum(TOP_UP_TOLERANCE * targets, 0)):
            break
        for kind in range(3):
            deficit = int(deficits[kind])
            if deficit <= 0:
                continue
            pool = source_pool
            if kind == EDGE_SAME_CLASS and not model.same_class_room.all():
                # Same-class edges start only at nodes whose class holds another community.
                pool = np.flatnonzero(model.same_class_room) if pool is None else pool[model.same_class_room[pool]]
                if pool.size == 0:
                    continue  # no such pair exists: the caller's shortfall check names it
            sources = model.draw_sources(rng, deficit, pool)
            new_only = drop_present(sorted_unique(draw(sources, np.full(deficit, kind))), exclude)
            for already in kept:
                new_only = drop_present(new_only, already)
            if new_only.size > deficit:
                # Keep what we had and a random subset of the new keys, so the every-node-once
                # edges (which came first) are never dropped.
                new_only = new_only[np.sort(rng.choice(new_only.size, size=deficit, replace=False))]
            kept[kind] = np.sort(np.concatenate([kept[kind], new_only]))
    return np.sort(np.concatenate(kept))


def _community_assignment(class_sizes: np.ndarray, size_range: tuple[int, int], rng) -> np.ndarray:
    """Community id per node in sorted (class-major) order; sizes uniform in size_range."""
    lo, hi = size_range
    ids, next_id = [], 0
    for size in class_sizes:
        sizes = rng.integers(lo, hi + 1, size=int(size) // lo + 1)
        cut = int(np.searchsorted(np.cumsum(sizes), size))
        sizes = sizes[: cut + 1]
        sizes[-1] = size - sizes[:-1].sum()
        if sizes.size > 1 and sizes[-1] < lo:  # fold a short tail into its neighbour
            sizes[-2] += sizes[-1]
            sizes = sizes[:-1]
        ids.append(np.repeat(np.arange(next_id, next_id + sizes.size), sizes))
        next_id += sizes.size
    return np.concatenate(ids).astype(np.int64)


def _class_sizes(params: CSBMParams, rng: np.random.Generator) -> np.ndarray:
    min_size = max(params.community_size[0], params.train_per_class + 2)
    spare = params.num_nodes - min_size * params.num_classes
    if spare < 0:
        # (a community_size too large for the classes is refused before, by the parameters' own check)
        raise ValueError(
            f"num_nodes={params.num_nodes} cannot give each of the {params.num_classes} classes {min_size} nodes "
            f"(train_per_class={params.train_per_class} training nodes + 2 left to evaluate): give num_nodes >= "
            f"{min_size * params.num_classes}, fewer classes, or a smaller train_per_class")
    proportions = rng.dirichlet(np.full(params.num_classes, params.class_concentration))
    sizes = min_size + np.floor(proportions * spare).astype(np.int64)
    sizes[np.argmax(sizes)] += params.num_nodes - sizes.sum()
    return sizes


def checked_seed(seed) -> int:
    """``seed`` as an int, if it is an int >= 0 (what NumPy's generators take); ``TypeError``/``ValueError``
    otherwise."""
    if not is_integer(seed):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0 (NumPy's generators take non-negative seeds), got {seed}")
    return int(seed)


def make_graph(preset_or_params: "str | CSBMParams | dict" = "cora-like", seed: int = 0, *,
               edge_shortfall_limit: float = EDGE_SHORTFALL_LIMIT, **overrides) -> Graph:
    """Generate a CSBM `Graph` from a preset name, a `CSBMParams` or a dict of fields.

    Deterministic in `seed`. The returned graph carries `communities` and, in `meta`,
    the parameters, the latent `BlockModel` (in the returned node order) and the generation time. A block model
    that holds fewer distinct pairs than `num_edges` yields fewer edges; more than `edge_shortfall_limit` (a
    fraction, 2 % by default) short is refused, naming what was drawn.
    """
    params = resolve_params(preset_or_params, **overrides)
    seed = checked_seed(seed)
    if isinstance(edge_shortfall_limit, bool) or not isinstance(edge_shortfall_limit, (int, float)) or not (
            0.0 <= edge_shortfall_limit < 1.0):
        raise ValueError(f"edge_shortfall_limit must be a fraction in [0, 1), got {edge_shortfall_limit!r}")
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    n, k, f = params.num_nodes, params.num_classes, params.num_features

    class_sizes = _class_sizes(params, rng)
    node_class = np.repeat(np.arange(k), class_sizes).astype(np.int64)
    node_community = _community_assignment(class_sizes, params.community_size, rng)
    theta = rng.lognormal(0.0, params.degree_sigma, size=n) if params.degree_sigma > 0 else np.ones(n)
    median = np.median(theta)
    theta = np.clip(theta, median / MAX_PROPENSITY_RATIO, median * MAX_PROPENSITY_RATIO)

    # Relabel before sampling so the model, the edges and the features share one node order.
    perm = rng.permutation(n).astype(np.int64)
    model = BlockModel(node_class, node_community, theta, params.homophily, params.locality).permuted(perm)

    keys = sample_edges(model, rng, params.num_edges, every_node_once=True)
    if keys.size < (1.0 - edge_shortfall_limit) * params.num_edges:
        lonely = np.unique(model.node_class[~model.same_class_room]).size
        cause = "" if lonely == 0 else (
            f"; {lonely} of {k} classes are one community each, so their nodes start no same-class edge outside "
            "their community (smaller communities, or homophily closer to locality, give them room)"
        )
        raise ValueError(
            f"the block model holds too few distinct pairs for num_edges={params.num_edges} at locality="
            f"{params.locality}, homophily={params.homophily} with communities of {params.community_size} nodes: "
            f"{keys.size} drawn, more than {edge_shortfall_limit:.0%} short{cause}. Lower num_edges or locality"
            + ("" if cause else ", use larger communities") + ", or allow the shortfall (edge_shortfall_limit)"
        )
    adj = adjacency_from_pairs(keys // n, keys % n, n)

    class_dirs = rng.standard_normal((k, f))
    class_dirs /= np.linalg.norm(class_dirs, axis=1, keepdims=True)
    x = params.mu * class_dirs[model.node_class] + rng.standard_normal((n, f))
    if params.community_shift > 0:
        num_comms = int(model.node_community.max()) + 1
        comm_dirs = rng.standard_normal((num_comms, f))
        comm_dirs /= np.linalg.norm(comm_dirs, axis=1, keepdims=True)
        x += params.community_shift * comm_dirs[model.node_community]

    y = model.node_class.copy()
    try:
        train, val, test = planetoid_split(y, k, rng, params.train_per_class, params.num_val, params.num_test)
    except SplitTooLarge as error:
        # a named split size keeps the other at its default, which the message should say
        raise ValueError(f"{error} (num_val={params.num_val}, num_test={params.num_test}; a split size not named "
                         f"keeps its default): give num_val and num_test that sum to at most the nodes left") from None
    elapsed = time.perf_counter() - started
    return Graph(
        adj=adj,
        x=x.astype(np.float32),
        y=y,
        train_mask=train,
        val_mask=val,
        test_mask=test,
        num_classes=k,
        name=params.name,
        communities=model.node_community.copy(),
        meta={"source": "csbm", "params": asdict(params), "seed": int(seed), "block_model": model,
              "generation_seconds": elapsed},
    )
