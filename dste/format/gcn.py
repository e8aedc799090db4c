"""GCN normalisation as a DSTE matrix: binary (A + I) in BIN tiles with D^-1/2 as row and column scales.

``D^-1/2 (A + I) D^-1/2`` then costs no value bytes at all: the tiles hold only the
structure (keep bitmaps / entries) and the two scale vectors carry the normalisation.
Because the stored values stay 1 when degrees change, a dynamic graph re-encodes only
the windows whose rows changed and swaps the scale vectors (:func:`gcn_update`).

Structure without a global sort
-------------------------------
The input is brought to canonical CSR (sorted column indices, no duplicates, no explicit
zeros; an already canonical SciPy CSR is only checked, in one vectorised pass). Its
binary pattern plus the identity is a merge of two canonical CSRs (SciPy's sparse
addition, linear in the entries), so (A + I) comes out row-sorted and the degree of a
row is its length in ``indptr``: no (row, column) sort of all entries is needed.

Incremental or full re-encode
-----------------------------
``gcn_update`` re-encodes only the windows holding a changed row: it slices those rows out
of the new CSR (work proportional to their entries) and merges the new tiles with the
kept ones (work proportional to the number of tiles). A full encode in the same order
sorts and tiles every entry. Measured on arxiv-scale (169,343 nodes, 2.5M entries, 1,323
windows, community order; min of 3 on 2 shared cores), forcing the incremental path on
random sets of windows against a full encode in the same order (0.40 s):

    windows re-encoded   5 %     20 %    50 %    70 %    90 %    100 %
    incremental          0.046   0.094   0.20    0.32    0.36    0.40 s

i.e. about 0.025 s + 0.37 s x (fraction of entries re-encoded): on that graph the incremental path is
never slower, and only above ~90 % of the entries do the two cost the same. On small graphs its fixed cost
dominates: at cora-like's size (2,708 nodes) a change of a dozen rows takes ~3.3 ms against ~2.7 ms for a full
encode (bench/README.md, "Encode and incremental re-encode"). Beyond
``FULL_REENCODE_ENTRY_FRACTION`` of the entries ``gcn_update`` therefore encodes
everything in the same order (same result, bit for bit; no second copy of the tiles to
merge), unless the matrix carries a keep-mask, which only the incremental path keeps.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp

from dste.format.constants import FP16_MAX, FP16_MIN_NORMAL, SCALE_DTYPES, WINDOW_ROWS, TileKind
from dste.format.encoder import encode_coo, encode_coo_owned, reencode_windows, to_csr, window_count_mismatches
from dste.format.errors import DSTEFormatError
from dste.format.matrix import DSTEMatrix
from dste.format.policy import EncodePolicy, check_policy_fields
from dste.format.permutation import inverse_permutation
from dste.format.reorder import order_of_graph, symmetric_graph_of

FULL_REENCODE_ENTRY_FRACTION = 0.9
"""``gcn_update`` re-encodes everything (same order) when the changed windows hold more
than this fraction of the new matrix's entries (where the measured costs meet; module docstring)."""


def gcn_csr(adj, add_self_loops: bool = True):
    """``(structure, deg_inv_sqrt)``: canonical binary CSR of (A + I) (float64 ones) and D^-1/2 float32.

    Without self loops the structure is the binary A itself (existing self loops kept).
    Rows of degree 0 get scale 0.
    """
    pattern, deg_inv_sqrt = gcn_pattern(adj, add_self_loops)
    structure = sp.csr_matrix((np.ones(pattern.nnz), pattern.indices, pattern.indptr), shape=pattern.shape, copy=False)
    structure.has_canonical_format = True
    return structure, deg_inv_sqrt


def gcn_pattern(adj, add_self_loops: bool = True):
    """:func:`gcn_csr` with a boolean structure (1 B per entry for its ones instead of 8)."""
    if not isinstance(add_self_loops, (bool, np.bool_)):  # "no" would be true
        raise TypeError(f"add_self_loops must be a bool, got {type(add_self_loops).__name__}")
    canon, shape = to_csr(adj)
    if shape[0] != shape[1]:
        hint = (" (an edge_index [2, E]? build the adjacency first: dste.gnn.to_scipy_adjacency(edge_index, "
                "num_nodes))" if shape[0] == 2 else "")
        raise DSTEFormatError(f"GCN normalisation needs a square adjacency, got shape {shape}{hint}")
    n = shape[0]
    warn_if_weighted(canon.data, "gcn_normalized reads A",
                     ", or encode your own weighted normalisation with dste.encode (row_scale=, col_scale=)")
    pattern = _pattern_of(canon)
    del canon  # to_csr's float64 values
    pattern.has_canonical_format = True  # to_csr checked or made it so
    if add_self_loops:
        # canonical + canonical merges in one linear pass; boolean sum is logical or, so an
        # existing self loop stays one entry
        pattern = (pattern + sp.identity(n, dtype=bool, format="csr")).tocsr()
        pattern.sort_indices()  # no-op unless the merge left a row unsorted
    degree = np.diff(pattern.indptr).astype(np.float64)
    deg_inv_sqrt = np.zeros(n, dtype=np.float64)
    # 1 / sqrt: both correctly rounded on every CPU, where float64 power may run a SIMD
    # library's approximation (NumPy dispatches it by CPU) and move a scale by one unit
    deg_inv_sqrt[degree > 0] = 1.0 / np.sqrt(degree[degree > 0])
    return pattern, deg_inv_sqrt.astype(np.float32)


class IgnoredEdgeWeightsWarning(UserWarning):
    """An adjacency given to the GCN normalisation holds values other than 1, which it does not read."""


def warn_if_weighted(values: np.ndarray, reader: str, remedy: str = "", stacklevel: int = 4) -> None:
    """Warn (``IgnoredEdgeWeightsWarning``) where an adjacency's stored values (duplicates summed, explicit zeros
    dropped) are not all 1: ``reader`` (e.g. "gcn_normalized reads A") reads only which entries are nonzero, so
    weights, signs and a duplicate edge's count are lost. ``remedy`` is appended to the advice."""
    other = values != 1.0
    if not other.any():
        return
    warnings.warn(
        f"{reader} as a 0/1 pattern (any nonzero is an edge of weight 1; self loops added once), but "
        f"{int(other.sum()):,} of its {values.size:,} stored values are not 1 (from {values.min():.4g} to "
        f"{values.max():.4g}; a duplicate edge sums to 2): those weights are ignored. Pass (A != 0) to say that is "
        f"meant{remedy}",
        IgnoredEdgeWeightsWarning, stacklevel=stacklevel,
    )


def gcn_structure(adj, add_self_loops: bool = True):
    """``(rows, cols, ones, shape, deg_inv_sqrt float32)`` of the binary (A + I), row-major."""
    structure, deg_inv_sqrt = gcn_csr(adj, add_self_loops)
    rows, cols = _coo_of(structure)
    return rows, cols, structure.data, structure.shape, deg_inv_sqrt


def gcn_normalized(
    adj,
    add_self_loops: bool = True,
    policy: EncodePolicy | None = None,
    *,
    row_perm=None,
    col_perm=None,
    max_bytes_per_edge: float | str | None = None,
    scale_dtypes=None,
    **policy_fields,
) -> DSTEMatrix:
    """Encode ``D^-1/2 (A + I) D^-1/2`` of a square adjacency (any nonzero = edge).

    D is the row degree of the binary (A + I) (self loops added once, existing ones not
    doubled). Default policy: community order, auto kinds (all tiles BIN). Rows of
    degree 0 (only without self loops) get scale 0. ``row_perm``/``col_perm`` impose an
    order (encoded position -> original id) instead of ``policy.reorder``.

    ``max_bytes_per_edge``: a ceiling on the device bytes per stored entry
    (``nbytes()["bytes_per_stored_edge"]``), a number or ``"csr"`` (this graph's structure-only
    int32 CSR: ``4 + 4 (N + 1) / entries``). When the policy's split stores more, the matrix is
    encoded again in the same order, with list tiles and without them (entry tiles alone), the
    split's transfer and X-row prices scaled down (device bytes priced up) to the largest weight
    found that meets the ceiling (:func:`within_byte_ceiling`); its ``encode_policy`` records the
    setting and prices used. The same search then runs with float16 scale vectors (D^-1/2 to within
    2^-11 relative; the matrix's ``scale_dtype`` is then ``"float16"``, its scales 2 B per node in
    ``nbytes()``), kept where they meet the ceiling at a larger weight (a faster split) or where float32
    ones cannot meet it at all. With self loops, where neither meets the ceiling, both searches run once more with
    the diagonal left implicit (``unit_diagonal=True``, ``BYTE_CEILING_DIAGONALS``). ``scale_dtypes``: the dtypes the
    search may use, in order (default ``SCALE_DTYPES_TRIED``; ``("float32",)`` keeps D^-1/2 exact to float32).
    ``None`` (default): no ceiling, float32 scales, the diagonal stored.

    ``unit_diagonal=True`` (a policy field): the diagonal of A + I is not stored in the tiles; the matrix records it
    as implicit (``DSTEMatrix.unit_diagonal``) and the kernel adds it per window. Needs ``add_self_loops``.
    """
    _check_gcn_policy_fields(policy_fields)
    checked_scale_dtypes(scale_dtypes)  # also where no search reads them: a wrong one is refused, not ignored
    if max_bytes_per_edge is not None:
        return within_byte_ceiling(adj, max_bytes_per_edge, add_self_loops, policy, row_perm=row_perm,
                                   col_perm=col_perm, scale_dtypes=scale_dtypes, **policy_fields)
    structure, dinv = gcn_pattern(adj, add_self_loops)
    if policy is None:
        policy_fields.setdefault("reorder", "community")
        policy = EncodePolicy(**policy_fields)
    elif policy_fields:
        raise DSTEFormatError(f"give either a policy or policy fields, not both: {sorted(policy_fields)}")
    elif policy.row_scale is not None or policy.col_scale is not None:
        raise DSTEFormatError(
            "gcn_normalized sets the row and column scales to D^-1/2 itself; give a policy without row_scale and "
            "col_scale (or encode D^-1/2 (A+I) D^-1/2 with your own scales through dste.encode)"
        )
    # a copy: the caller's policy must not carry this graph's D^-1/2 into its next encode
    policy = replace(policy, row_scale=dinv, col_scale=dinv, scaled_input=False)
    shape, nnz = structure.shape, structure.nnz
    if row_perm is None and col_perm is None and policy.reorder != "none":
        # the order's graph straight from the CSR: the same graph encode_coo would build from
        # COO arrays, without their int64 copies
        row_perm, col_perm = order_of_graph(policy.reorder, symmetric_graph_of(structure), shape, seed=policy.seed)
    entries = [*_coo_of(structure, np.int32 if max(shape) < 2**31 else np.int64)]
    del structure
    entries.append(np.broadcast_to(np.float32(1.0), (nnz,)))  # read-only view: no per-entry bytes
    # the encode empties ``entries`` once it has sorted them, freeing the COO arrays before its peak
    return encode_coo_owned(entries, shape, policy, row_perm=row_perm, col_perm=col_perm)


# Price weights tried by ``within_byte_ceiling``: halving from the policy's own prices down to 1/256,
# then device bytes alone; then this many geometric bisection steps between the first weight that meets the
# ceiling and the last that did not (about 9 % apart at the end).
BYTE_CEILING_WEIGHTS = tuple(2.0 ** -k for k in range(9)) + (0.0,)
BYTE_CEILING_REFINE_STEPS = 3


def csr_structure_bytes_per_edge(n_rows: int, entries: int) -> float:
    """Bytes per entry of a structure-only int32 CSR: one column id per entry, one row pointer per row + 1."""
    return 4.0 + 4.0 * (n_rows + 1) / max(entries, 1)


BYTE_CEILING_LIST_TILES = (True, False)
"""Settings ``within_byte_ceiling`` tries, in order: with list tiles, then entry tiles alone. Neither stores fewer
bytes on every graph: a list tile lists each of its columns once (2 B per listed column, plus 1 B per entry for its
column slot), which pays where a window's leftover columns hold several entries each; on small low-degree graphs most
leftover columns hold one entry, and an entry tile's 2-byte id per entry with no column list costs less."""


BYTE_CEILING_DIAGONALS = (False, True)
"""Diagonal settings ``within_byte_ceiling`` tries, in order, when the matrix has self loops: stored in the tiles
(every other setting's form), then implicit (``EncodePolicy.unit_diagonal``: no column id, row slot or keep bit per
diagonal entry, which saves most where the diagonal is a large share of the entries, as on graphs of mean degree 1
and below; the kernel adds it from each window's own rows). The unit diagonal is kept only where it meets the
ceiling where the stored diagonal cannot meet it at all (with either scale dtype or tile setting): every other
graph keeps the encoding it had before the unit diagonal existed. Ask for it anywhere with ``unit_diagonal=True``."""


SCALE_DTYPES_TRIED = tuple(np.dtype(name) for name in SCALE_DTYPES)
"""Scale-vector dtypes ``within_byte_ceiling`` tries, in order. float16 halves D^-1/2's 4 B per node (0.8-1.1 B per
entry on graphs of mean degree 4-5) at a relative rounding of at most 2^-11 per scale, below the bf16 rounding
(2^-8) of the kernel's TensorE operands; the launcher multiplies the upcast scales into fp32 factors on the host,
so the chip reads the same blob either way. Kept only where it meets the ceiling at a strictly larger price weight
than float32 does (a faster split, or any split where float32 cannot meet it); the default encoding always keeps
float32 scales."""


def within_byte_ceiling(adj, max_bytes_per_edge, add_self_loops: bool = True, policy: EncodePolicy | None = None,
                        *, row_perm=None, col_perm=None, scale_dtypes=None,
                        **policy_fields) -> DSTEMatrix:
    """:func:`gcn_normalized` whose device bytes per stored entry are at most ``max_bytes_per_edge``.

    Encodes with the policy first; if that stores more, searches, in the same order, each setting of
    ``BYTE_CEILING_LIST_TILES`` for the largest price weight that meets the ceiling
    (:func:`largest_price_weight_within`) and keeps the encoding of the largest weight found (the least re-priced
    split: the lowest modelled latency of those that meet the ceiling; on equal weights the earlier setting). A later
    setting only tries weights above the best one found so far. The search is then repeated with float16 scale
    vectors (``SCALE_DTYPES_TRIED``; the tiles do not depend on the scales, so the weights already encoded are only
    re-measured), which are kept only for a strictly larger weight, i.e. a faster split: their rounding (<= 2^-11
    relative) is below the kernel's bf16 operands' (2^-8) but not below the CPU path's float32. With self loops
    (and a policy that stores the diagonal), where no setting met the ceiling, all of it is repeated with the
    diagonal implicit (``BYTE_CEILING_DIAGONALS``). Float16 is tried
    only when every nonzero scale lies in its normal range [2^-14, 65504] (for D^-1/2: degree <= 2^28). Raises ``DSTEFormatError`` when even device bytes
    alone (weight 0) store more in every setting, naming the least any of them stores with each scale dtype tried.
    """
    refused = DSTEFormatError(f"max_bytes_per_edge must be a number > 0, 'csr' or None, got {max_bytes_per_edge!r}")
    if isinstance(max_bytes_per_edge, str):
        if max_bytes_per_edge != "csr":
            raise refused
    elif isinstance(max_bytes_per_edge, bool) or not isinstance(max_bytes_per_edge, (int, float, np.number)):
        raise refused
    elif not (np.isfinite(max_bytes_per_edge) and max_bytes_per_edge > 0):
        raise refused
    if policy is None:
        policy_fields.setdefault("reorder", "community")
        policy = EncodePolicy(**policy_fields)
    elif policy_fields:
        raise DSTEFormatError(f"give either a policy or policy fields, not both: {sorted(policy_fields)}")
    first = gcn_normalized(adj, add_self_loops, policy, row_perm=row_perm, col_perm=col_perm)
    if max_bytes_per_edge == "csr":
        ceiling = csr_structure_bytes_per_edge(first.shape[0], first.nnz_stored)
    else:
        ceiling = float(max_bytes_per_edge)
    if _bytes_per_stored_edge(first) <= ceiling:
        return first
    if policy.layout != "condensed" or policy.bitmap_split != "cost":
        raise DSTEFormatError(
            f"max_bytes_per_edge needs layout='condensed' and bitmap_split='cost' (it re-prices the cost split), "
            f"got {policy.layout!r} and {policy.bitmap_split!r}"
        )
    tried = checked_scale_dtypes(scale_dtypes)
    # with self loops, the diagonal may also be left implicit (a unit diagonal: no bytes per diagonal entry)
    diagonals = (policy.unit_diagonal,) if policy.unit_diagonal or not add_self_loops else BYTE_CEILING_DIAGONALS
    ledgers = {(unit, list_tiles): {} for unit in diagonals for list_tiles in BYTE_CEILING_LIST_TILES}
    least = {}
    best = None
    for unit_diagonal in diagonals:
        if best is not None:
            break  # a unit diagonal only where the stored one cannot meet the ceiling (BYTE_CEILING_DIAGONALS)
        setting = policy if unit_diagonal == policy.unit_diagonal else replace(policy, unit_diagonal=unit_diagonal)
        for scale_dtype in tried:
            if scale_dtype == np.float16 and not float16_holds_scales(first):
                continue  # a scale outside float16's normal range: float16 is not tried
            for list_tiles in BYTE_CEILING_LIST_TILES:
                own_first = setting is policy and policy.list_tiles == list_tiles
                weight, matrix = largest_price_weight_within(
                    adj, ceiling, setting, row_perm=first.row_perm, col_perm=first.col_perm, list_tiles=list_tiles,
                    add_self_loops=add_self_loops, at_weight_one=first if own_first else None,
                    above=None if best is None else best[0], scale_dtype=scale_dtype,
                    ledger=ledgers[unit_diagonal, list_tiles])
                if weight is not None:
                    best = (weight, matrix)
            if best is None:
                # no setting met the ceiling with any dtype so far: each searched down to weight 0
                name = np.dtype(scale_dtype).name + (" scale vectors and a unit diagonal" if unit_diagonal else
                                                     " scale vectors")
                least[name] = min(ledgers[unit_diagonal, lists][0.0].per_entry(scale_dtype)
                                  for lists in BYTE_CEILING_LIST_TILES)
    if best is not None:
        return best[1]
    quoted = ", ".join(f"{stored:.3f} B per stored entry at least with {name}" for name, stored in least.items())
    if not any(name.startswith("float16") for name in least):
        why = ("scale_dtypes leaves them out" if np.dtype(np.float16) not in tried else
               f"a nonzero scale lies outside float16's normal range [2^-14, {FP16_MAX:g}]")
        quoted += f" (float16 scale vectors were not tried: {why})"
    raise DSTEFormatError(
        f"max_bytes_per_edge={max_bytes_per_edge!r} ({ceiling:.3f} B) is below what this graph stores in this "
        f"order with device bytes alone priced, with or without list tiles: {quoted}"
    )


def checked_scale_dtypes(scale_dtypes) -> tuple:
    """The scale dtypes the byte-ceiling search tries, in order (``SCALE_DTYPES_TRIED`` for None); a
    :class:`DSTEFormatError` unless ``scale_dtypes`` is a sequence naming float32 and/or float16, each once (a bare
    name such as ``"float16"`` is a string, not a sequence of names)."""
    if scale_dtypes is None:
        return SCALE_DTYPES_TRIED
    given = (scale_dtypes,) if isinstance(scale_dtypes, (str, bytes, np.dtype, type)) else scale_dtypes
    try:
        tried = tuple(_scale_dtype(dtype) for dtype in given)
    except TypeError:  # not iterable
        tried = (None,)
    if isinstance(scale_dtypes, (str, bytes, np.dtype, type)) or not tried or None in tried \
            or len(set(tried)) < len(tried):
        raise DSTEFormatError(f"scale_dtypes must name float32 and/or float16, each once, in a tuple such as "
                              f"('float16', 'float32'), got {scale_dtypes!r}")
    return tried


def _check_gcn_policy_fields(policy_fields: dict) -> None:
    """Policy fields of ``gcn_normalized``: known ones only, and none of the scales it sets itself (an
    ``EncodePolicy(row_scale=...)`` built from them had its scales replaced by D^-1/2 without a word)."""
    own = sorted(set(policy_fields) & set(GCN_OWN_POLICY_FIELDS))
    if own:
        raise DSTEFormatError(
            f"gcn_normalized sets the row and column scales to D^-1/2 itself (and scaled_input=False); got {own}. "
            "Encode D^-1/2 (A+I) D^-1/2 with your own scales through dste.encode")
    check_policy_fields(policy_fields, "gcn_normalized", refused=GCN_OWN_POLICY_FIELDS, also_allowed=(
        "add_self_loops", "policy", "row_perm", "col_perm", "max_bytes_per_edge", "scale_dtypes"))


GCN_OWN_POLICY_FIELDS = ("row_scale", "col_scale", "scaled_input")
"""The policy fields ``gcn_normalized`` sets itself (D^-1/2 on both sides of the unscaled A + I)."""


def _scale_dtype(value) -> np.dtype | None:
    """``value`` as a NumPy dtype of ``SCALE_DTYPES``; None for anything else (including names NumPy does not know,
    or knows only once a package such as ml_dtypes has registered them)."""
    try:
        dtype = np.dtype(value)
    except TypeError:
        return None
    return dtype if dtype.name in SCALE_DTYPES else None


@dataclass(frozen=True)
class _MeasuredEncoding:
    """Device bytes of one encoding apart from its row/column scale vectors, and what those hold."""

    other_bytes: int
    scale_elements: int
    entries: int

    @classmethod
    def of(cls, matrix: DSTEMatrix) -> "_MeasuredEncoding":
        vectors = matrix.device_scale_vectors()
        scale_bytes = sum(int(vector.nbytes) for vector in vectors)
        return cls(matrix.nbytes()["device_total"] - scale_bytes, sum(vector.size for vector in vectors),
                   matrix.nnz_stored)

    def per_entry(self, scale_dtype) -> float:
        """Device bytes per stored entry with the scale vectors stored as ``scale_dtype``."""
        total = self.other_bytes + self.scale_elements * np.dtype(scale_dtype).itemsize
        return total / self.entries if self.entries else float("nan")


def float16_holds_scales(matrix: DSTEMatrix) -> bool:
    """True when every nonzero row/column scale lies in float16's normal range [2^-14, 65504], where a float16 holds
    it to within 2^-11 relative error (D^-1/2 of a graph: every degree <= 2^28; degree-0 rows' scale 0 is exact)."""
    for vector in matrix.device_scale_vectors():
        magnitude = np.abs(vector[vector != 0].astype(np.float64))
        if magnitude.size and (magnitude.min() < FP16_MIN_NORMAL or magnitude.max() > FP16_MAX):
            return False
    return True


def with_float16_scales(matrix: DSTEMatrix) -> DSTEMatrix:
    """``matrix`` with its row/column scales stored as float16 (rounded to nearest; a shared vector stays shared).

    Raises ``DSTEFormatError`` when a nonzero scale lies outside float16's normal range (:func:`float16_holds_scales`),
    where the rounding would exceed 2^-11 relative or overflow.
    """
    if not float16_holds_scales(matrix):
        raise DSTEFormatError(
            f"with_float16_scales: a nonzero row_scale/col_scale lies outside float16's normal range [2^-14, {FP16_MAX:g}] "
            "(it would lose more than 2^-11 relative or overflow); keep float32 scales"
        )
    row_scale = None if matrix.row_scale is None else matrix.row_scale.astype(np.float16)
    if matrix.col_scale is None:
        col_scale = None
    elif matrix.col_scale is matrix.row_scale:
        col_scale = row_scale
    else:
        col_scale = matrix.col_scale.astype(np.float16)
    return matrix.replace(row_scale=row_scale, col_scale=col_scale)


def largest_price_weight_within(adj, ceiling: float, policy: EncodePolicy, *, row_perm, col_perm,
                                list_tiles: bool = True, add_self_loops: bool = True,
                                at_weight_one: DSTEMatrix | None = None,
                                above: float | None = None, scale_dtype=np.float32,
                                ledger: dict | None = None) -> tuple[float | None, DSTEMatrix | None]:
    """``(weight, matrix)``: the largest weight found whose encoding, in the given order with ``list_tiles`` and
    the policy's ``gather_transfer_bytes`` and ``x_row_bytes`` multiplied by it, stores at most ``ceiling`` device
    bytes per stored entry with its scale vectors stored as ``scale_dtype`` (float32 or float16: the returned matrix
    carries them so); ``(None, the weight-0 encoding)`` when none does.

    Tries ``BYTE_CEILING_WEIGHTS`` in order (larger weights keep more bitmap columns: fewer gather transfers, a
    lower modelled latency), then ``BYTE_CEILING_REFINE_STEPS`` geometric bisection steps between the first weight
    that met the ceiling and the last that missed. ``at_weight_one``: the weight-1 encoding, if the caller has it.
    ``above``: only weights above it are of use to the caller (another setting met the ceiling there); the search
    stops at it, returning ``(None, None)`` when no larger weight meets the ceiling. ``ledger``: a dict, kept by the
    caller between searches of the same order and setting, of the bytes of each weight already encoded (weight ->
    measure); a weight found there is not encoded again unless it is the one returned (so a search that meets
    nothing returns ``(None, None)`` when its weight-0 encoding was only measured by an earlier one).
    """
    checked = _scale_dtype(scale_dtype)
    if checked is None:
        raise DSTEFormatError(f"scale_dtype must be float32 or float16, got {scale_dtype!r}")
    scale_dtype = checked
    ledger = {} if ledger is None else ledger
    encoded = {}  # weight -> encoding: the best met so far and the latest, no more (the search's memory)
    met, missed = None, None

    def encoding_at(weight):
        if weight not in encoded:
            for kept in [w for w in encoded if w != met]:
                del encoded[kept]
            if weight == 1.0 and at_weight_one is not None:
                encoded[weight] = at_weight_one
            else:
                encoded[weight] = encoded_at_price_weight(adj, policy, weight, list_tiles=list_tiles,
                                                          row_perm=row_perm, col_perm=col_perm,
                                                          add_self_loops=add_self_loops)
            ledger.setdefault(weight, _MeasuredEncoding.of(encoded[weight]))
        return encoded[weight]

    def meets(weight):
        if weight not in ledger:
            encoding_at(weight)
        return ledger[weight].per_entry(scale_dtype) <= ceiling

    for weight in BYTE_CEILING_WEIGHTS:
        if above is not None and weight <= above:
            break
        if meets(weight):
            met = weight
            break
        missed = weight
    if met is None:
        return None, None if above is not None else encoded.get(0.0)
    if met > 0 and missed is not None:
        for _ in range(BYTE_CEILING_REFINE_STEPS):
            weight = (met * missed) ** 0.5
            if meets(weight):
                met = weight
            else:
                missed = weight
    matrix = encoding_at(met)
    return met, with_float16_scales(matrix) if scale_dtype == np.float16 else matrix


def encoded_at_price_weight(adj, policy: EncodePolicy, weight: float, *, list_tiles: bool, row_perm, col_perm,
                            add_self_loops: bool = True) -> DSTEMatrix:
    """:func:`gcn_normalized` in the given order with ``list_tiles`` and the policy's ``gather_transfer_bytes`` and
    ``x_row_bytes`` multiplied by ``weight`` (0: device bytes alone priced)."""
    priced = replace(policy, list_tiles=list_tiles, row_scale=None, col_scale=None,
                     gather_transfer_bytes=int(round(policy.gather_transfer_bytes * weight)),
                     x_row_bytes=int(round(policy.x_row_bytes * weight)))
    return gcn_normalized(adj, add_self_loops, priced, row_perm=row_perm, col_perm=col_perm)


def _bytes_per_stored_edge(matrix: DSTEMatrix) -> float:
    return matrix.nbytes()["bytes_per_stored_edge"]


def gcn_update(encoded: DSTEMatrix, new_adj, add_self_loops: bool = True, changed_rows=None) -> DSTEMatrix:
    """Incremental :func:`gcn_normalized` for a changed adjacency (same node set, same order).

    Rows whose structure differs from ``encoded``'s are found by comparison unless
    ``changed_rows`` (original row ids; a superset is fine) is given; a list that leaves out a row whose
    degree changed is refused (``DSTEFormatError``), one that leaves out a row whose edges moved at the same
    degree cannot be told from a correct one. Only the windows
    holding them are re-encoded, from those rows of the new CSR alone, and the degree
    scales are replaced; the other windows' tiles (and keep-masks) are kept, since their
    stored values are 1 whatever the degrees. When the changed windows hold more than
    ``FULL_REENCODE_ENTRY_FRACTION`` of the entries and ``encoded`` has no keep-mask, the
    whole matrix is re-encoded in the same order instead, which is then cheaper. Either
    way the result equals ``gcn_normalized(new_adj)`` with the same permutations, array
    for array (re-encoded windows start fully kept).

    Measured on arxiv-scale, community order, one snapshot of ``dste.data.make_stream``
    with ``changed_rows`` given (2 shared cores; min of 3):

        changed rows / windows    path          gcn_update   full encode, same order
        686 / 118 of 1323         incremental   0.058 s      0.38 s
        11,661 / 1276 of 1323     full          0.39 s       0.38 s

    Without ``changed_rows`` the comparison with the stored pattern adds ~0.15 s.

    The scales keep ``encoded``'s dtype: float16 scale vectors (a byte-ceiling encode) stay float16, unless a new
    degree puts D^-1/2 outside float16's normal range (degree > 2^28), which raises ``DSTEFormatError``.
    """
    updated = _gcn_update(encoded, new_adj, add_self_loops, changed_rows)
    if encoded.scale_dtype == "float16":
        return with_float16_scales(updated)
    return updated


def _gcn_update(encoded: DSTEMatrix, new_adj, add_self_loops: bool, changed_rows) -> DSTEMatrix:
    if not isinstance(encoded, DSTEMatrix):
        raise DSTEFormatError(f"encoded must be a DSTEMatrix, got {type(encoded).__name__}")
    if encoded.encode_policy is None:
        raise DSTEFormatError("gcn_update needs the matrix's encode_policy (set by gcn_normalized)")
    all_bin = all(bool((kinds == TileKind.BIN).all()) for kinds in (encoded.tile_kind, encoded.etile_kind,
                                                                    encoded.ltile_kind))
    if encoded.encode_policy.get("scaled_input", True) or not all_bin or encoded.row_scale is None:
        raise DSTEFormatError(
            "gcn_update updates a matrix made by gcn_normalized (BIN tiles, D^-1/2 as row and column scales); this "
            "one was encoded otherwise (weighted or scaled values), so its update would not be D^-1/2 (A+I) D^-1/2. "
            "Encode the new matrix with dste.encode / gcn_normalized instead"
        )
    structure, dinv = gcn_csr(new_adj, add_self_loops)
    N = encoded.shape[0]
    if structure.shape != encoded.shape:
        raise DSTEFormatError(
            f"new adjacency shape {structure.shape} != encoded shape {encoded.shape}: gcn_update keeps the node set "
            "(a graph that grew or shrank needs a full encode: gcn_normalized(new_adj, ...))"
        )
    given = changed_rows is not None
    if not given:
        changed_rows = _rows_differing(encoded, structure)
    changed_rows = np.asarray(changed_rows)
    if changed_rows.size and (changed_rows.dtype.kind not in "iu" or changed_rows.min() < 0 or changed_rows.max() >= N):
        raise DSTEFormatError(f"changed_rows must be integer row ids in [0, {N})")
    policy = EncodePolicy.from_metadata(encoded.encode_policy)
    policy.row_scale = dinv
    policy.col_scale = dinv
    row_pos = np.arange(N) if encoded.row_perm is None else inverse_permutation(encoded.row_perm)
    redo = np.zeros(encoded.n_windows, dtype=bool)
    redo[row_pos[changed_rows.astype(np.int64)] // WINDOW_ROWS] = True
    if given:
        _check_changed_rows_cover_degrees(encoded, structure, dinv, redo, row_pos, add_self_loops)
    redo_rows = encoded.window_rows[redo].ravel()
    redo_rows = np.sort(redo_rows[redo_rows < N])
    redo_entries = int(np.diff(structure.indptr)[redo_rows].sum())
    if redo_entries > FULL_REENCODE_ENTRY_FRACTION * structure.nnz and not _has_mask(encoded):
        rows, cols = _coo_of(structure)
        return encode_coo(rows, cols, structure.data, structure.shape, policy, row_perm=encoded.row_perm, col_perm=encoded.col_perm)
    part = structure[redo_rows]
    rows = np.repeat(redo_rows.astype(np.int64), np.diff(part.indptr))
    return reencode_windows(encoded, rows, part.indices.astype(np.int64), part.data, redo, policy)


def _check_changed_rows_cover_degrees(encoded: DSTEMatrix, structure: sp.csr_matrix, dinv: np.ndarray,
                                      redo: np.ndarray, row_pos: np.ndarray, add_self_loops: bool) -> None:
    """Refuse a caller's ``changed_rows`` that leaves out a row whose degree changed: its window's tiles would be
    kept with the old structure under the new scales, a silently wrong matrix. Two checks, O(N) and O(tiles), no
    decode: a row's stored scale against its new D^-1/2 (the same computation, so an unchanged row matches exactly
    in float32; float16 scales round neighbouring degrees from ~660 up to one value), and each kept window's stored
    entry count against the new structure's. A row whose edges moved at the same degree, or two left-out rows of one
    window whose degrees changed by opposite amounts beyond float16's resolution, are not seen here: only the
    comparison (``changed_rows=None``) finds those."""
    old = encoded.row_scale
    degree_changed = np.flatnonzero(np.asarray(dinv, dtype=old.dtype) != old)
    missed = degree_changed[~redo[row_pos[degree_changed] // WINDOW_ROWS]]
    remedy = (f"list every changed row (a superset is fine) or pass changed_rows=None to find them by comparison (if "
              f"none changed, add_self_loops={add_self_loops} differs from the encode's)")
    if missed.size:
        raise DSTEFormatError(f"changed_rows leaves out {missed.size} row(s) whose degree changed (e.g. rows "
                              f"{missed[:5].tolist()}); {remedy}")
    entry_window = np.repeat(row_pos // WINDOW_ROWS, np.diff(structure.indptr))
    windows = window_count_mismatches(encoded, redo, entry_window)
    if windows.size:
        rows = encoded.window_rows[windows[0]]
        rows = rows[rows < encoded.shape[0]]
        raise DSTEFormatError(
            f"changed_rows leaves out rows whose degree changed: {windows.size} row window(s) it would keep hold a "
            f"different number of entries in new_adj (first: window {int(windows[0])}, rows {rows[:8].tolist()}"
            f"{' ...' if rows.size > 8 else ''}; float16 scales cannot tell neighbouring degrees from ~660 up); "
            f"{remedy}"
        )


def _pattern_of(structure: sp.csr_matrix) -> sp.csr_matrix:
    """The same CSR with boolean ones (1 B per entry instead of 8), index arrays shared."""
    return sp.csr_matrix(
        (np.ones(structure.nnz, dtype=bool), structure.indices, structure.indptr), shape=structure.shape, copy=False
    )


def _coo_of(structure: sp.csr_matrix, index_dtype=np.int64):
    rows = np.repeat(np.arange(structure.shape[0], dtype=index_dtype), np.diff(structure.indptr))
    return rows, structure.indices.astype(index_dtype, copy=False)


def _has_mask(matrix: DSTEMatrix) -> bool:
    return not (np.array_equal(matrix.keep_bits, matrix.nz_bits)
                and np.array_equal(matrix.etile_keep_bits, matrix.etile_nz_bits)
                and np.array_equal(matrix.ltile_keep_bits, matrix.ltile_nz_bits))


def _rows_differing(encoded: DSTEMatrix, structure: sp.csr_matrix) -> np.ndarray:
    """Original ids of the rows whose stored pattern differs from ``structure``'s (both canonical)."""
    old = encoded.decode(effective=False, scaled=False)
    old_len, new_len = np.diff(old.indptr), np.diff(structure.indptr)
    same_len = old_len == new_len
    # entries of equal-length rows line up one to one in both matrices
    mismatch = old.indices[np.repeat(same_len, old_len)] != structure.indices[np.repeat(same_len, new_len)]
    rows_of_entries = np.repeat(np.flatnonzero(same_len), new_len[same_len])
    changed = ~same_len
    changed[rows_of_entries[mismatch]] = True
    return np.flatnonzero(changed)
