"""Balanced graph partitioning through METIS (the ``pymetis`` binding), for the community order.

One job: split a symmetric graph into ``n_parts`` parts of near-equal node count with few
edges between them, by METIS's multilevel recursive bisection (``METIS_PartGraphRecursive``).
Recursive bisection numbers its parts along the bisection tree: parts ``[0, k/2)`` come from
one half of the first cut and ``[k/2, k)`` from the other, and so on down, so sorting nodes by
part id gives a nested order in which any run of consecutive parts is itself a well-cut piece
of the graph. That is what lets fixed 128-row windows, which need not fall on part boundaries,
still hold nodes that share neighbours.

On large graphs the top two levels of the tree are cut on samples of the edges, each cut refined on
the graph it cuts, and each of the four pieces is then cut by its own METIS call
(:func:`recursive_bisection_parts`): METIS keeps every coarsened level of the graph it is given (its own
8-byte copies of indices and edge weights), about 55-60 B per edge of that graph at the top of a call,
which made it the pipeline's peak of resident memory when it saw the whole graph, and on graphs of
little locality when it saw half of it (55-58 B per stored entry at ogbn-arxiv's size, 5,000-node
communities, against 43 B with quarters).

METIS is single-threaded and, for a fixed ``seed``, deterministic; the sample is a seeded hash.
"""

from __future__ import annotations

import ctypes

import numpy as np
import scipy.sparse as sp

from dste.format.errors import DSTEFormatError


REFINEMENT_ITERATIONS: int | None = 1
"""METIS's refinement iterations per uncoarsening level (``METIS_OPTION_NITER``; None: METIS's
default, 10). One pass takes 0.2-0.3 s (a fifth) off a METIS call at ogbn-arxiv's size; measured
on the 14 graphs of ``bench/test_reorder.py``, the community order's stretch moves by -0.9 % to
+2.5 % against 10 passes on 13 of them, +6.7 % on the 84k-node, 128-node-community, 95 %-local one
(still 2.5 % below the earlier two-METIS-call order there); +0.5 % on ``arxiv-scale`` (bench/README.md,
"Encode time and memory")."""


SPLIT_MIN_PARTS = 4
"""From this many parts on (one per quarter at least), the top two levels are cut on an edge sample and
each quarter by its own METIS call (see :func:`recursive_bisection_parts`)."""

SAMPLED_TOP_LEVELS_MIN_ENTRIES = 1 << 18
"""Stored entries of the symmetric graph (two per edge) from which :func:`recursive_bisection_parts` cuts the top
two levels on edge samples by default. Below it METIS cuts the whole graph in one call: its copies then take at
most about 7 MB (55 B per edge), and the order stays METIS's own, as on every generated preset up to PubMed's size
(the sampled cuts move a graph's order, and with it every figure measured on it, for no memory worth saving)."""

SAMPLE_EDGES_PER_NODE = 3
"""Edges each node keeps, about, in the sample the top bisection is made on (:func:`sampled_edges`).
On ``arxiv-scale`` (shuffled ids) 3 keeps 31 % of the edges; METIS's cut of the sample, counted on
the full graph, has 106k edges against 81k for METIS's own bisection of the full graph (4: 39 %,
89k; 6: 53 %, 82k), and two passes of :func:`refined_bisection` bring it to 80k (``arxiv-scale-local``:
41k, then 27.4k against 27.4k). So the smallest sample costs no cut, and METIS's memory on it
(about 13 B per stored entry) stays below that of the calls on the quarters."""

HALF_SAMPLE_EDGES_PER_NODE = 6
"""Edges each node keeps, about, in the sample each half's cut is made on (:func:`sampled_quarters`): 51-58 % of a
half's edges at ogbn-arxiv's degree (77 % on a uniform random graph). METIS's cut of it, refined, against METIS's own
bisection of the half (cut edges, both halves, ids shuffled): 1.11 / 1.06 on a 30k-node community graph; at
ogbn-arxiv's size 0.99 / 1.00 on ``arxiv-scale``, 1.03 / 0.86 and 1.00 / 1.01 on graphs of 5,000- and 1,000-node
communities, 1.05 / 1.06 uniform. 3 per node (28-37 %) gave 0.98-1.66, and a 4-way cut of the top sample with each
level refined 0.82-1.61. METIS on it holds about 15 B per stored entry of the whole graph, less than the quarters'
calls."""

REFINEMENT_PASSES = 2
"""Balanced exchange passes after each sampled cut, on the graph it cuts (:func:`refined_bisection`); the first pass
recovers nearly all of the cut (numbers at ``SAMPLE_EDGES_PER_NODE``), 25-35 ms each on the whole graph at arxiv
size."""

SAMPLE_CHUNK = 1 << 16
"""Edges hashed at a time by :func:`sampled_edges` (its 64-bit temporaries stay a few MB)."""


def release_free_heap() -> None:
    """Return the C heap's free pages to the OS (glibc ``malloc_trim(3)``; elsewhere a no-op).

    METIS frees its coarsened copies of the graph into the C heap, and SciPy its temporaries of
    medium size, where glibc keeps them resident (about 25 B per stored entry at ogbn-arxiv size
    after the community order); the encoder's large NumPy arrays come from fresh ``mmap``
    regions, which cannot reuse that heap, so without this the two add up in the encode's peak
    of resident memory.
    """
    if MALLOC_TRIM is not None:
        MALLOC_TRIM(0)


def _find_malloc_trim():
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the C library already loaded into the process
    except (OSError, AttributeError):  # not glibc: nothing to release this way
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


MALLOC_TRIM = _find_malloc_trim()
"""glibc's ``malloc_trim`` of this process's C library, looked up once at import; None elsewhere."""


def _index_dtype():
    """METIS's index type in the installed pymetis (int64 in the pinned build): arrays of another
    type are copied by the binding, element by element, 8 B per edge more during the call."""
    return np.dtype(_pymetis().zero_copy_dtype())


def _pymetis():
    try:
        import pymetis
    except ImportError as exc:  # pinned in requirements.txt; a clear message if an install skipped it
        raise DSTEFormatError(
            "reorder='community' needs the METIS binding 'pymetis' (pinned in requirements.txt); "
            f"it could not be imported: {exc}"
        ) from exc
    return pymetis


def recursive_bisection_parts(
    graph: sp.csr_matrix, n_parts: int, seed: int = 0, sampled_top_levels: bool | None = None
) -> np.ndarray:
    """Part id (int64 ``[n]``, in ``[0, n_parts)``) of each node of a symmetric graph.

    ``graph``: CSR, symmetric, no self loops (METIS requires both; values are ignored).
    ``n_parts`` is clipped to ``[1, n]``. Part ids follow the bisection tree (see module docstring).

    From ``SPLIT_MIN_PARTS`` parts on, the top two levels of the tree are cut on a sample of the
    edges (``SAMPLE_EDGES_PER_NODE``; :func:`sampled_quarters`) and METIS then cuts each quarter at
    full resolution into its share of the parts: METIS's resident memory (its coarsened copies of the
    graph) scales with the edges of the graph it is given, and no call sees more than about a quarter
    of them. Every split follows METIS's own numbering (the first side of a cut gets ``parts // 2`` of
    its parts, the same share of its nodes), so the part ids still follow one bisection tree.
    ``sampled_top_levels``: None (default) samples from ``SAMPLED_TOP_LEVELS_MIN_ENTRIES`` stored entries
    on; True / False force either way.
    """
    n = graph.shape[0]
    if graph.shape[0] != graph.shape[1]:
        raise DSTEFormatError(f"recursive_bisection_parts: graph must be square, got shape {graph.shape}")
    n_parts = int(min(max(n_parts, 1), n))
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if n_parts == 1:
        return np.zeros(n, dtype=np.int64)
    if sampled_top_levels is None:
        sampled_top_levels = graph.nnz >= SAMPLED_TOP_LEVELS_MIN_ENTRIES
    if n_parts < SPLIT_MIN_PARTS or not sampled_top_levels:
        return metis_recursive_parts(graph.indptr.astype(_index_dtype()), graph.indices.astype(_index_dtype()), n_parts, seed)
    parts = np.empty(n, dtype=np.int64)
    first_part = 0
    for half_nodes, half_graph, quarter_side, quarter_parts in sampled_quarters(graph, n_parts, seed):
        for side_id in (0, 1):
            nodes, indptr, indices = _induced_subgraph(half_graph, quarter_side == side_id)
            parts[half_nodes[nodes]] = first_part + metis_recursive_parts(indptr, indices, quarter_parts[side_id], seed)
            del indptr, indices  # before the next quarter's METIS call
            first_part += quarter_parts[side_id]
    return parts


def _tree_shares(n_parts: int) -> list:
    """Parts of the four quarters of a recursive bisection into ``n_parts``, as METIS numbers them."""
    first = n_parts // 2
    return [first // 2, first - first // 2, (n_parts - first) // 2, n_parts - first - (n_parts - first) // 2]


def sampled_quarters(graph: sp.csr_matrix, n_parts: int, seed: int = 0):
    """The top two levels of the bisection tree of ``graph`` into ``n_parts`` (>= 4), each cut on an edge sample.

    Each cut is :func:`sampled_bisection`: METIS's 2-way cut of a sample of the graph being cut, refined
    on that graph. The top cut samples ``SAMPLE_EDGES_PER_NODE`` edges per node of the whole graph, each
    half's cut ``HALF_SAMPLE_EDGES_PER_NODE`` of the half's own graph. Yields, for each half in tree
    order, ``(nodes, half_graph, quarter_side, quarter_parts)``: the half's node ids (in ``graph``), its
    induced graph (CSR, METIS's index type), the quarter (0/1) of each of its nodes and the parts of its
    two quarters. Each half's graph is made when its turn comes, so only one is held at a time.
    """
    shares = _tree_shares(n_parts)
    first = shares[0] + shares[1]
    half = sampled_bisection(graph, first / n_parts, SAMPLE_EDGES_PER_NODE, seed)
    for half_id in (0, 1):
        nodes, indptr, indices = _induced_subgraph(graph, half == half_id)
        half_graph = sp.csr_matrix((np.ones(indices.size, dtype=bool), indices, indptr), shape=(nodes.size, nodes.size))
        del indptr, indices
        quarter_parts = shares[2 * half_id: 2 * half_id + 2]
        side = sampled_bisection(half_graph, quarter_parts[0] / sum(quarter_parts), HALF_SAMPLE_EDGES_PER_NODE, seed)
        yield nodes, half_graph, side, quarter_parts
        del half_graph


def sampled_bisection(graph: sp.csr_matrix, first_share: float, edges_per_node: int, seed: int = 0) -> np.ndarray:
    """Side (int8 0/1 per node) of a balanced bisection of ``graph``, side 0 holding ``first_share`` of the nodes:
    METIS's 2-way cut of an edge sample (:func:`sampled_edges`), refined on ``graph`` (:func:`refined_bisection`)."""
    sample_indptr, sample_indices = sampled_edges(graph, seed, edges_per_node)
    side = metis_recursive_parts(sample_indptr, sample_indices, 2, seed, target_shares=[first_share, 1 - first_share])
    del sample_indptr, sample_indices
    return refined_bisection(graph, side.astype(np.int8), REFINEMENT_PASSES)


def sampled_edges(graph: sp.csr_matrix, seed: int = 0, edges_per_node: int = SAMPLE_EDGES_PER_NODE) -> tuple[np.ndarray, np.ndarray]:
    """``(indptr, indices)`` (METIS's index type) of a symmetric edge sample of ``graph`` for a sampled cut.

    Edge ``{u, v}`` is kept with probability ``min(1, edges_per_node / min(deg u, deg v))``,
    decided by a seeded hash of the unordered pair, so both directions agree and the sample is
    symmetric. Every node thus keeps about ``edges_per_node`` edges or all of them: nodes of
    low degree stay attached to their community (a uniform sample would leave many isolated, free
    to land on either side, and their edges cut). Built in chunks of ``SAMPLE_CHUNK`` edges so the
    hash temporaries stay small.
    """
    n = graph.shape[0]
    degree = np.diff(graph.indptr).astype(np.uint64)
    row_of_edge = np.repeat(np.arange(n, dtype=np.int32), np.diff(graph.indptr))
    keep = np.empty(graph.nnz, dtype=bool)
    salt = np.uint64((int(seed) * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) % 2**64)
    threshold = np.uint64(edges_per_node * 2**32)
    for start in range(0, graph.nnz, SAMPLE_CHUNK):
        u = row_of_edge[start : start + SAMPLE_CHUNK]
        v = graph.indices[start : start + SAMPLE_CHUNK]
        lo, hi = np.minimum(u, v).astype(np.uint64), np.maximum(u, v).astype(np.uint64)
        mixed = _mix64((lo << np.uint64(32)) | hi ^ salt)
        # keep iff hash / 2^32 < k / min degree, in integers: (hash >> 32) * min degree < k * 2^32
        keep[start : start + SAMPLE_CHUNK] = (mixed >> np.uint64(32)) * np.minimum(degree[lo], degree[hi]) < threshold
    indptr = np.zeros(n + 1, dtype=_index_dtype())
    np.cumsum(np.bincount(row_of_edge[keep], minlength=n), out=indptr[1:])
    del row_of_edge
    return indptr, graph.indices[keep].astype(_index_dtype())


def refined_bisection(graph: sp.csr_matrix, side: np.ndarray, passes: int) -> np.ndarray:
    """``side`` (int8 0/1 per node) after ``passes`` balanced exchange passes on the full graph.

    A node's gain is the drop of the cut if it alone changed side: its neighbours across
    minus those on its side. Each pass moves the ``m`` highest-gain nodes of each side with a
    positive gain, ``m`` the smaller of the two counts, so the side sizes do not change. Nodes
    moving together may share edges, which makes a gain an estimate; a pass that does not
    lower the cut is undone and ends the refinement. The cut of a sampled bisection comes back
    to METIS's own on the full graph after one or two passes (``SAMPLE_EDGES_PER_NODE``).
    """
    n = graph.shape[0]
    row_of_edge = np.repeat(np.arange(n, dtype=np.int32), np.diff(graph.indptr))
    degree = np.diff(graph.indptr)

    def neighbours_across():
        return np.bincount(row_of_edge[side[row_of_edge] != side[graph.indices]], minlength=n)

    across = neighbours_across()
    cut = int(across.sum())
    for _ in range(passes):
        gain = 2 * across - degree
        movers = [np.flatnonzero((side == side_id) & (gain > 0)) for side_id in (0, 1)]
        count = min(m.size for m in movers)
        if count == 0:
            break
        movers = np.concatenate([m[np.argsort(-gain[m], kind="stable")[:count]] for m in movers])
        side[movers] ^= 1
        across = neighbours_across()
        if int(across.sum()) >= cut:
            side[movers] ^= 1
            break
        cut = int(across.sum())
    return side


def _mix64(x: np.ndarray) -> np.ndarray:
    """A 64-bit finaliser (splitmix64's): every input bit moves about half the output bits."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _induced_subgraph(graph: sp.csr_matrix, member: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(nodes, indptr, indices)``: the subgraph on the nodes where ``member``, renumbered 0.., METIS's index type."""
    nodes = np.flatnonzero(member)
    new_id = np.cumsum(member, dtype=_index_dtype()) - 1
    row_of_edge = np.repeat(np.arange(graph.shape[0], dtype=np.int32), np.diff(graph.indptr))
    inside = member[row_of_edge]
    inside &= member[graph.indices]
    kept_per_row = np.bincount(row_of_edge[inside], minlength=graph.shape[0])
    del row_of_edge
    indptr = np.zeros(nodes.size + 1, dtype=_index_dtype())
    np.cumsum(kept_per_row[nodes], out=indptr[1:])
    return nodes, indptr, new_id[graph.indices[inside]]


def metis_recursive_parts(indptr: np.ndarray, indices: np.ndarray, n_parts: int, seed: int, target_shares=None) -> np.ndarray:
    """One ``METIS_PartGraphRecursive`` call; arrays already of METIS's index type, so pymetis passes them without a copy."""
    n = indptr.size - 1
    if n_parts <= 1 or n <= 1:
        return np.zeros(n, dtype=np.int64)
    n_parts = int(min(n_parts, n))
    pymetis = _pymetis()
    # METIS draws the same numbers for seeds 0 and 1 (measured): seed s runs as METIS seed s + 1, so every seed of
    # ours is its own order and the default (0, METIS 1) keeps the order it always had
    options = pymetis.Options(seed=int(seed) + 1)
    if REFINEMENT_ITERATIONS is not None:
        options.niter = REFINEMENT_ITERATIONS
    adjacency = pymetis.CSRAdjacency(adj_starts=indptr, adjacent=indices)
    _, parts = pymetis.part_graph(n_parts, adjacency, options=options, recursive=True, tpwgts=target_shares)
    return np.asarray(parts, dtype=np.int64)
