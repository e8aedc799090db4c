"""Balanced graph partitioning through METIS (the ``pymetis`` binding), for the community order.

One job: split a symmetric graph into ``n_parts`` parts of near-equal node count with few
edges between them, by METIS's multilevel recursive bisection (``METIS_PartGraphRecursive``).
Recursive bisection numbers its parts along the bisection tree: parts ``[0, k/2)`` come from
one half of the first cut and ``[k/2, k)`` from the other, and so on down, so sorting nodes by
part id gives a nested order in which any run of consecutive parts is itself a well-cut piece
of the graph. That is what lets fixed 128-row windows, which need not fall on part boundaries,
still hold nodes that share neighbours.

On large graphs the top of the tree is cut on edge samples and METIS cuts the pieces below
(:func:`recursive_bisection_parts`): METIS keeps every coarsened level of the graph it is given
(its own 8-byte copies of indices and edge weights), about 55 B per edge of that graph at the
top of a call, which made it the pipeline's peak of resident memory when it saw the whole graph.
Three levels are cut on samples (eight pieces), each METIS call sees an eighth of the edges, and a
forked helper process cuts half of the pieces beside this one (METIS holds the GIL, so threads
would not run it in parallel).

METIS is single-threaded and, for a fixed ``seed``, deterministic; the samples are seeded hashes;
the parts do not depend on which process cut them.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
from typing import NamedTuple

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
"""From this many parts on, the top of the bisection tree is cut on edge samples and the pieces by
METIS calls of their own (see :func:`recursive_bisection_parts`)."""

SAMPLED_FIRST_CUT_MIN_ENTRIES = 1 << 18
"""Stored entries of the symmetric graph (two per edge) from which :func:`recursive_bisection_parts` makes its
first cut on an edge sample by default. Below it METIS cuts the whole graph in one call: its copies then take at
most about 7 MB (55 B per edge), and the order stays METIS's own, as on every generated preset up to PubMed's size
(the sampled cut moves a graph's order, and with it every figure measured on it, for no memory worth saving)."""

SAMPLE_EDGES_PER_NODE = 3
"""Edges each node keeps, about, in the samples the top bisections are made on (:func:`sampled_edges`).
On ``arxiv-scale`` (shuffled ids) 3 keeps 31 % of the edges; METIS's cut of the sample, counted on
the full graph, has 106k edges against 81k for METIS's own bisection of the full graph (4: 39 %,
89k; 6: 53 %, 82k), and two passes of :func:`refined_bisection` bring it to 80k (``arxiv-scale-local``:
41k, then 27.4k against 27.4k). So the smallest sample costs no cut, and METIS's memory on the whole
graph's sample (about 13 B per stored entry) stays well below the encode's own peak."""

REFINEMENT_PASSES = 2
"""Balanced exchange passes on the full graph after each sampled bisection (:func:`refined_bisection`);
the first pass recovers nearly all of the cut (numbers at ``SAMPLE_EDGES_PER_NODE``), 25-35 ms each at arxiv size."""

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
    graph: sp.csr_matrix, n_parts: int, seed: int = 0, sampled_first_cut: bool | None = None
) -> np.ndarray:
    """Part id (int64 ``[n]``, in ``[0, n_parts)``) of each node of a symmetric graph.

    ``graph``: CSR, symmetric, no self loops (METIS requires both; values are ignored).
    ``n_parts`` is clipped to ``[1, n]``. Part ids follow the bisection tree (see module docstring).

    From ``SPLIT_MIN_PARTS`` parts on (and with ``sampled_first_cut``), the three top levels of the
    tree are cut on edge samples (:func:`sampled_bisection`, ``SAMPLE_EDGES_PER_NODE``), and each of
    the eight pieces is cut into its share of the parts by one METIS call, the second half of them in
    a forked helper process (:func:`_cut_quarters`): METIS's resident memory (its coarsened copies of
    the graph) scales with the edges of the graph it is given, and two concurrent calls see about a
    quarter of them. Every split follows METIS's own numbering (the first side gets ``n_parts // 2``
    parts, the same share of the nodes), so the part ids still follow one bisection tree.
    ``sampled_first_cut``: None (default) samples from ``SAMPLED_FIRST_CUT_MIN_ENTRIES`` stored entries
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
    if sampled_first_cut is None:
        sampled_first_cut = graph.nnz >= SAMPLED_FIRST_CUT_MIN_ENTRIES
    if n_parts < SPLIT_MIN_PARTS or not sampled_first_cut:
        return metis_recursive_parts(graph.indptr.astype(_index_dtype()), graph.indices.astype(_index_dtype()), n_parts, seed)
    # levels of the tree cut on edge samples: two here (four quarters), one more in each process before METIS
    quarters = [piece for half in _split(graph, Piece(np.arange(n), n_parts, 0), seed) for piece in _split(graph, half, seed)]
    parts = np.empty(n, dtype=np.int64)
    for quarter, quarter_parts in zip(quarters, _cut_quarters(graph, quarters, seed)):
        parts[quarter.nodes] = quarter.offset + quarter_parts
    return parts


class Piece(NamedTuple):
    """A subtree of the bisection tree: its nodes (ids in the whole graph), its parts and its first part id."""

    nodes: np.ndarray
    n_parts: int
    offset: int


def _split(graph: sp.csr_matrix, piece: Piece, seed: int) -> list:
    """``piece`` cut in two by :func:`sampled_bisection` of its subgraph, its parts shared as METIS shares them
    (the first side gets ``n_parts // 2``, the same share of the nodes); a piece of one part stays whole."""
    if piece.n_parts < 2:
        return [piece]
    inner = piece.n_parts // 2
    member = np.zeros(graph.shape[0], dtype=bool)
    member[piece.nodes] = True
    nodes, indptr, indices = _induced_subgraph(graph, member)
    subgraph = sp.csr_matrix((np.ones(indices.size, dtype=bool), indices, indptr), shape=(nodes.size, nodes.size))
    del indptr, indices
    side = sampled_bisection(subgraph, inner / piece.n_parts, seed)
    return [Piece(nodes[side == 0], inner, piece.offset), Piece(nodes[side == 1], piece.n_parts - inner, piece.offset + inner)]


def _cut_quarter(graph: sp.csr_matrix, quarter: Piece, seed: int) -> np.ndarray:
    """Part ids (in ``[0, quarter.n_parts)``, aligned with ``quarter.nodes``): the quarter cut in two on a sample,
    then each half by one METIS call into its parts (the calls see an eighth of the graph's edges each)."""
    where = np.empty(graph.shape[0], dtype=np.int64)
    where[quarter.nodes] = np.arange(quarter.nodes.size)
    parts = np.empty(quarter.nodes.size, dtype=np.int64)
    for eighth in _split(graph, quarter, seed):
        member = np.zeros(graph.shape[0], dtype=bool)
        member[eighth.nodes] = True
        _, indptr, indices = _induced_subgraph(graph, member)
        parts[where[eighth.nodes]] = eighth.offset - quarter.offset + metis_recursive_parts(indptr, indices, eighth.n_parts, seed)
        del indptr, indices  # before the next METIS call
    return parts


def _cut_quarters(graph: sp.csr_matrix, quarters: list, seed: int) -> list:
    """Each quarter cut into its parts (:func:`_cut_quarter`); the second side's two in a forked process.

    METIS holds the GIL (pymetis) and its random generator is process-global (concurrent calls
    in threads of one process give other parts), so the second process is a fork: it reads the
    graph from the pages it shares with this one and sends its parts back through a pipe. Each
    METIS call seeds the generator itself and the samples are seeded hashes, so the parts are the
    same whichever process cuts a quarter, and the same as :data:`PARTITION_PROCESSES` = 1 gives
    (tested). Where ``fork`` is missing, only one CPU is usable, this is a daemonic process (a
    pool's worker) or the helper dies, this process cuts all four.
    """
    global HELPER_PEAK_BYTES
    HELPER_PEAK_BYTES = None
    if graph.nnz < HELPER_MIN_ENTRIES or all(quarter.n_parts <= 1 for quarter in quarters[2:]) or not _can_fork_a_helper():
        return [_cut_quarter(graph, quarter, seed) for quarter in quarters]
    # the helper's allocations then take fresh pages (counted in its peak) instead of the free heap it inherits
    release_free_heap()
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    helper = context.Process(target=_helper_cuts, args=(sender, graph, quarters[2:], seed), daemon=True)
    helper.start()
    sender.close()
    own = [_cut_quarter(graph, quarter, seed) for quarter in quarters[:2]]
    try:
        theirs, peak = receiver.recv()
    except EOFError:  # the helper died before sending (killed, out of memory): cut its quarters here
        theirs, peak = [_cut_quarter(graph, quarter, seed) for quarter in quarters[2:]], None
    finally:
        receiver.close()
        helper.join()
    HELPER_PEAK_BYTES = peak
    return own + theirs


PARTITION_PROCESSES = 2
"""Processes that cut the four quarters of a sampled-first-cut partition (:func:`_cut_quarters`): 2 (this
one and a forked helper) or 1 (this one alone: the same parts, about 0.4-0.7 s slower at ogbn-arxiv size)."""

HELPER_MIN_ENTRIES = 1 << 20
"""Stored entries of the symmetric graph from which :func:`_cut_quarters` forks its helper. The fork and the
helper's own interpreter state cost a few MB and tens of milliseconds, which only pays on graphs whose METIS calls
take a few hundred (about 1 M entries: ogbn-arxiv's graph has 2.3 M)."""

HELPER_PEAK_BYTES: int | None = None
"""Resident memory the forked helper of the last :func:`_cut_quarters` added at its peak (its peak resident set
minus its resident set when it started, both from ``/proc/self/status``), for memory accounting; None where no
helper ran or it could not tell."""


def _can_fork_a_helper() -> bool:
    if PARTITION_PROCESSES < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return False
    if multiprocessing.current_process().daemon:  # a pool's worker: daemonic processes may not start children
        return False
    return len(os.sched_getaffinity(0)) >= 2 if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1) >= 2


def _helper_cuts(sender, graph: sp.csr_matrix, quarters: list, seed: int) -> None:
    start = _resident_bytes("VmRSS")
    _reset_peak_resident()
    cut = [_cut_quarter(graph, quarter, seed) for quarter in quarters]
    peak = _resident_bytes("VmHWM")
    sender.send((cut, None if start is None or peak is None else max(peak - start, 0)))
    sender.close()


def _resident_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak_resident() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # VmHWM := VmRSS
    except OSError:
        pass


def sampled_bisection(graph: sp.csr_matrix, first_share: float, seed: int = 0) -> np.ndarray:
    """Side (int8 0/1 per node) of a balanced bisection of ``graph``, side 0 holding ``first_share`` of the nodes:
    METIS's 2-way cut of an edge sample (:func:`sampled_edges`), refined on the full graph (:func:`refined_bisection`)."""
    sample_indptr, sample_indices = sampled_edges(graph, seed)
    side = metis_recursive_parts(sample_indptr, sample_indices, 2, seed, target_shares=[first_share, 1 - first_share])
    del sample_indptr, sample_indices
    return refined_bisection(graph, side.astype(np.int8), REFINEMENT_PASSES)


def sampled_edges(graph: sp.csr_matrix, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(indptr, indices)`` (METIS's index type) of a symmetric edge sample of ``graph`` for a sampled bisection.

    Edge ``{u, v}`` is kept with probability ``min(1, SAMPLE_EDGES_PER_NODE / min(deg u, deg v))``,
    decided by a seeded hash of the unordered pair, so both directions agree and the sample is
    symmetric. Every node thus keeps about ``SAMPLE_EDGES_PER_NODE`` edges or all of them: nodes of
    low degree stay attached to their community (a uniform sample would leave many isolated, free
    to land on either side, and their edges cut). Built in chunks of ``SAMPLE_CHUNK`` edges so the
    hash temporaries stay small.
    """
    n = graph.shape[0]
    degree = np.diff(graph.indptr).astype(np.uint64)
    row_of_edge = np.repeat(np.arange(n, dtype=np.int32), np.diff(graph.indptr))
    keep = np.empty(graph.nnz, dtype=bool)
    salt = np.uint64((int(seed) * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) % 2**64)
    threshold = np.uint64(SAMPLE_EDGES_PER_NODE * 2**32)
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
    options = pymetis.Options(seed=int(seed))
    if REFINEMENT_ITERATIONS is not None:
        options.niter = REFINEMENT_ITERATIONS
    adjacency = pymetis.CSRAdjacency(adj_starts=indptr, adjacent=indices)
    _, parts = pymetis.part_graph(n_parts, adjacency, options=options, recursive=True, tpwgts=target_shares)
    return np.asarray(parts, dtype=np.int64)
