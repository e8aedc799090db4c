"""FP16-row correction pass of ``spmm_hybrid``: host-side listing, packing and shape choice.

A hybrid X stores its FP16 rows with int8 values 0 and scale 0, so the kernel's main (INT8) pass
contributes exactly 0 for them. Their contribution is added by a correction pass over the few
entries (r, c) of A whose column c is an FP16 row (about the FP16 fraction of all entries):

- ``correction_entries`` lists them per call from the encoded tiles (vectorised over the tile
  arrays): bitmap tiles' kept bits and entry and list tiles' kept entries whose column is an FP16 row, with
  their launch, window slot in the launch, window row, FP16-table position and effective weight
  ``value * column scale`` (the row scale is applied with the main pass at PSUM evacuation).
- A launch's windows are cut into groups of ``group_windows`` consecutive windows; each group's
  entries (in window order) fill ``tiles_per_group`` *correction tiles* of up to 128 entries
  (fixed per launch, rounded up the plan's slot ladder; missing entries are padding with an
  out-of-range position and weight 0). Per correction tile the kernel issues one gather of up to
  128 FP16 rows; per window of its group one two-op ``tensor_scalar`` builds
  ``S[e, r] = (r == row[e]) * weight[e, window]`` (weights of the group's other windows are 0 in
  that window's column) and one matmul per PSUM chunk adds it to the window's accumulator before
  evacuation.
- ``balanced_window_order``: a group's tile count is set by the busiest group, so for each group
  size the launch's windows may also be reordered (per call; the kernel is unchanged) such that
  consecutive groups carry about the same number of entries.
- ``_fit`` prices every power-of-two group size, in launch order and in balanced order, with the
  modelled cost (``dste.kernels.cost``) and keeps the fastest that fits the instruction and SBUF
  limits.
- ``pack_correction`` writes the per-launch correction blob ``int32 [128, L]`` (regions
  ``hi_pos int32 [n]``, ``rows float32 [n]``, ``weight float32 [n, G]``; n = groups x tiles).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from dste.format.constants import MASK_WORD_BITS, TILE_COLS, TileKind
from dste.kernels.plan import LADDER, WORD_BYTES, kernel_module, pack_metadata

CORRECTION_SBUF_BYTES = 16 * 1024
"""Per-partition SBUF a launch's correction pass may use (gathered FP16 rows, blob, stationary
buffers): it comes on top of the planner's ``SBUF_BUDGET_BYTES`` (together 176 KiB, within
trn1's 180,224 B)."""
CORRECTION_STATIONARY_BUFFERS = 4
"""Correction stationaries in flight (the builds rotate over them)."""
MAX_TILES_PER_GROUP = int(LADDER[-1])


@dataclass(frozen=True)
class CorrectionShape:
    """Compile-time shape of one launch's correction pass (``tiles_per_group == 0``: none)."""

    group_windows: int = 1
    tiles_per_group: int = 0

    def groups(self, n_windows: int) -> int:
        return -(-n_windows // self.group_windows) if self.tiles_per_group else 0

    def n_tiles(self, n_windows: int) -> int:
        return self.groups(n_windows) * self.tiles_per_group


NO_CORRECTION = CorrectionShape()


@dataclass
class CorrectionEntries:
    """The entries of A whose column is an FP16 row of X, sorted by (launch, window slot)."""

    launch: np.ndarray  # int64 [n] launch index in the plan
    window: np.ndarray  # int64 [n] window slot within the launch
    row: np.ndarray  # int64 [n] window row (0..127)
    hi_pos: np.ndarray  # int32 [n] position in the FP16 table
    weight: np.ndarray  # float32 [n] keep * value * column scale

    def of_launch(self, i: int, bounds: np.ndarray) -> "CorrectionEntries":
        s = slice(int(bounds[i]), int(bounds[i + 1]))
        return CorrectionEntries(self.launch[s], self.window[s], self.row[s], self.hi_pos[s], self.weight[s])

    def __len__(self) -> int:
        return int(self.row.shape[0])


def correction_layout(n_tiles: int, group_windows: int) -> dict:
    """Word offsets of the correction blob's regions ``{name: (start, words)}`` and ``"total"``
    (the kernel's ``correction_layout``)."""
    return kernel_module().correction_layout(n_tiles, group_windows)


def _tile_owner(plan, n_tiles: int, ptr_attr: str):
    """(launch index, window slot in the launch) of every tile of one layout (or of every window: ``"windows"``), -1
    where unplanned."""
    launch_of = np.full(n_tiles, -1, dtype=np.int64)
    window_of = np.full(n_tiles, -1, dtype=np.int64)
    for i, launch in enumerate(plan.launches):
        tiles = getattr(launch, ptr_attr).reshape(len(launch.windows), -1)
        w_idx = np.broadcast_to(np.arange(tiles.shape[0])[:, None], tiles.shape)
        ok = tiles >= 0
        launch_of[tiles[ok]] = i
        window_of[tiles[ok]] = w_idx[ok]
    return launch_of, window_of


def correction_entries(A, plan, hi_index: np.ndarray, n_hi: int) -> CorrectionEntries:
    """All kept entries of A whose column is an FP16 row (``hi_index[c] < n_hi``), in launch order."""
    M = int(A.shape[1])
    pos_of = np.append(np.asarray(hi_index, dtype=np.int64), n_hi)  # column M (padding) -> not FP16
    col_scale = np.ones(M + 1, dtype=np.float32)
    if A.col_scale is not None:
        col_scale[:M] = A.col_scale
    parts = []
    if plan.correction_owners is None:
        plan.correction_owners = (
            _tile_owner(plan, A.n_tiles, "bitmap_tiles"), _tile_owner(plan, A.n_etiles, "entry_tiles"),
            _tile_owner(plan, A.n_ltiles, "list_tiles"), _tile_owner(plan, A.n_windows, "windows"))
    (b_launch, b_window), (e_launch, e_window), (l_launch, l_window), (w_launch, w_window) = plan.correction_owners

    if A.n_tiles:
        cols = np.minimum(A.tile_cols, M)
        t, k = np.nonzero(pos_of[cols] < n_hi)  # bitmap tile columns that are FP16 rows
        if t.size:
            words = A.keep_bits[t, k]  # [n, 4]
            r_all = np.arange(TILE_COLS)
            bits = (words[:, r_all // MASK_WORD_BITS] >> (r_all % MASK_WORD_BITS).astype(np.uint32)) & 1
            i, r = np.nonzero(bits)
            t, k = t[i], k[i]
            value = np.ones(t.size, dtype=np.float32)
            kind, slot = A.tile_kind[t], A.tile_slot[t]
            is8, is16 = kind == TileKind.INT8, kind == TileKind.FP16
            value[is8] = A.int8_values[slot[is8], k[is8], r[is8]].astype(np.float32) * A.int8_scale[slot[is8]]
            value[is16] = A.fp16_values[slot[is16], k[is16], r[is16]].astype(np.float32)
            c = cols[t, k]
            parts.append((b_launch[t], b_window[t], r, pos_of[c], value * col_scale[c]))
    if A.n_etiles:
        cols = np.minimum(A.etile_cols, M)
        parts += _per_entry_corrections(A, "etile", cols, e_launch, e_window, pos_of, n_hi, col_scale)
    if A.n_ltiles:
        # entry e of list tile t has column ltile_cols[t, ltile_colslot[t, e]]
        cols = np.minimum(np.take_along_axis(A.ltile_cols, A.ltile_colslot.astype(np.int64), axis=1), M)
        parts += _per_entry_corrections(A, "ltile", cols, l_launch, l_window, pos_of, n_hi, col_scale)
    if getattr(A, "unit_diagonal", False):
        parts += _diagonal_corrections(A, w_launch, w_window, pos_of, n_hi, col_scale)
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return CorrectionEntries(empty, empty, empty, empty.astype(np.int32), empty.astype(np.float32))
    launch, window, row, hi_pos, weight = (np.concatenate(p) for p in zip(*parts))
    keep = (launch >= 0) & (weight != 0)  # a zero weight adds nothing (and unplanned tiles cannot occur)
    order = np.lexsort((window[keep], launch[keep]))  # stable: entries of a window keep their order
    return CorrectionEntries(launch[keep][order], window[keep][order], row[keep][order],
                             hi_pos[keep][order].astype(np.int32), weight[keep][order].astype(np.float32))


def _per_entry_corrections(A, prefix, cols, launch_of, window_of, pos_of, n_hi, col_scale) -> list:
    """The correction part of a per-entry tile layout (``prefix`` "etile": entry tiles, "ltile": list tiles, whose
    arrays have the same form): its kept entries whose column (``cols [tiles, 128]``) is an FP16 row, as
    ``[(launch, window, window row, position in x_hi, weight)]``, or ``[]`` if none."""
    e_all = np.arange(TILE_COLS)
    keep_bits = getattr(A, f"{prefix}_keep_bits")
    kept = (keep_bits[:, e_all // MASK_WORD_BITS] >> (e_all % MASK_WORD_BITS).astype(np.uint32)) & 1
    live = (e_all[None, :] < getattr(A, f"{prefix}_nentries")[:, None]) & (kept == 1)
    t, e = np.nonzero(live & (pos_of[cols] < n_hi))
    if not t.size:
        return []
    value = np.ones(t.size, dtype=np.float32)
    kind, slot = getattr(A, f"{prefix}_kind")[t], getattr(A, f"{prefix}_slot")[t]
    is8, is16 = kind == TileKind.INT8, kind == TileKind.FP16
    int8_values, int8_scale = getattr(A, f"{prefix}_int8_values"), getattr(A, f"{prefix}_int8_scale")
    value[is8] = int8_values[slot[is8], e[is8]].astype(np.float32) * int8_scale[slot[is8]]
    value[is16] = getattr(A, f"{prefix}_fp16_values")[slot[is16], e[is16]].astype(np.float32)
    c = cols[t, e]
    rows = getattr(A, f"{prefix}_rows")[t, e].astype(np.int64)
    return [(launch_of[t], window_of[t], rows, pos_of[c], value * col_scale[c])]


def _diagonal_corrections(A, launch_of, window_of, pos_of, n_hi, col_scale) -> list:
    """The correction part of the unit diagonal: entry (i, i) of every row i that is an FP16 row of X (A is
    square), weight ``col_scale[i]`` (value 1), at the window slot holding row i."""
    N = int(A.shape[0])
    w, r = np.nonzero((A.window_rows < N) & (pos_of[np.minimum(A.window_rows, N)] < n_hi))
    if not w.size:
        return []
    i = A.window_rows[w, r].astype(np.int64)
    return [(launch_of[w], window_of[w], r.astype(np.int64), pos_of[i], col_scale[i])]


def launch_bounds(entries: CorrectionEntries, n_launches: int) -> np.ndarray:
    """``[n_launches + 1]`` offsets of each launch's entries."""
    return np.searchsorted(entries.launch, np.arange(n_launches + 1), side="left")


def _tiles_needed(entries: CorrectionEntries, n_windows: int, group_windows: int) -> int:
    """Correction tiles per group the busiest group needs (before rounding up the ladder)."""
    if not len(entries):
        return 0
    per_group = np.bincount(entries.window // group_windows, minlength=-(-n_windows // group_windows))
    return int(-(-per_group.max() // TILE_COLS))


def balanced_window_order(per_window: np.ndarray, group_windows: int) -> np.ndarray:
    """Window order of a launch whose consecutive groups of ``group_windows`` windows carry about the
    same number of correction entries (greedy, busiest window first into the least loaded group
    with a free place); within a group the windows keep their launch order."""
    per_window = np.asarray(per_window, dtype=np.int64)
    W, G = int(per_window.shape[0]), int(group_windows)
    n_groups = -(-W // G)
    places = np.full(n_groups, G, dtype=np.int64)
    places[-1] = W - (n_groups - 1) * G
    load = np.zeros(n_groups, dtype=np.int64)
    group_of = np.empty(W, dtype=np.int64)
    for w in np.argsort(-per_window, kind="stable"):
        open_groups = np.flatnonzero(places)
        g = open_groups[np.argmin(load[open_groups])]
        group_of[w] = g
        load[g] += per_window[w]
        places[g] -= 1
    return np.lexsort((np.arange(W), group_of))


def reorder_windows(launch, entries: CorrectionEntries, order: np.ndarray):
    """The launch with its windows in ``order`` (slot i runs window ``order[i]``) and its entries
    renumbered to the new window slots (entries of one window keep their order)."""
    from dste.kernels.plan import Launch

    moved = Launch(launch.bucket, launch.windows[order], launch.bitmap_tiles[order], launch.entry_tiles[order],
                   launch.list_tiles[order])
    slot_of = np.empty_like(order)
    slot_of[order] = np.arange(order.shape[0])
    window = slot_of[entries.window]
    keep = np.argsort(window, kind="stable")
    return moved, CorrectionEntries(entries.launch[keep], window[keep], entries.row[keep], entries.hi_pos[keep],
                                    entries.weight[keep])


def round_up_tiles(n: int) -> int:
    if n > MAX_TILES_PER_GROUP:
        return n  # beyond the ladder: exact (the caller checks the limits)
    return int(LADDER[np.searchsorted(LADDER, n, side="left")])


def correction_buffer_tiles(shape: CorrectionShape, n_features: int) -> int:
    """Gathered correction tiles resident at once: a group's tiles, or as many as the budget holds
    (the kernel's ``correction_buffer_tiles``)."""
    return int(kernel_module().correction_buffer_tiles(shape.tiles_per_group, n_features))


def correction_sbuf_bytes(shape: CorrectionShape, n_windows: int, n_features: int) -> int:
    """Per-partition SBUF of a launch's correction pass (blob, gathered rows, stationaries)."""
    if not shape.tiles_per_group:
        return 0
    blob = WORD_BYTES * correction_layout(shape.n_tiles(n_windows), shape.group_windows)["total"]
    rows = correction_buffer_tiles(shape, n_features) * 2 * n_features
    return blob + rows + CORRECTION_STATIONARY_BUFFERS * TILE_COLS * 2 + TILE_COLS * 2


def correction_shapes(entries: CorrectionEntries, n_windows: int):
    """Candidate shapes: every power-of-two group size up to the launch (one per distinct tile need)."""
    if not len(entries):
        return [NO_CORRECTION]
    shapes = []
    for g in (1 << b for b in range(int(math.log2(max(1, n_windows))) + 2)):
        g = min(g, n_windows)
        shape = CorrectionShape(g, round_up_tiles(_tiles_needed(entries, n_windows, g)))
        if shape not in shapes:
            shapes.append(shape)
        if g == n_windows:
            break
    return shapes


def pack_correction(entries: CorrectionEntries, n_windows: int, shape: CorrectionShape):
    """(tile, partition) of each entry: a group's entries fill its tiles in window order."""
    G, C = shape.group_windows, shape.tiles_per_group
    group = entries.window // G
    # rank of each entry inside its group (entries are sorted by window)
    starts = np.searchsorted(group, np.arange(shape.groups(n_windows) + 1), side="left")
    rank = np.arange(len(entries)) - starts[group]
    if len(entries) and rank.max() >= C * TILE_COLS:
        raise ValueError(f"a correction group holds {int(rank.max()) + 1} entries; the shape holds {C * TILE_COLS}")
    tile = group * C + rank // TILE_COLS
    part = rank % TILE_COLS
    return tile, part


def correction_blob(entries: CorrectionEntries, n_windows: int, shape: CorrectionShape, n_hi: int) -> np.ndarray:
    """``int32 [128, L]``: FP16 position (padding ``n_hi``: skipped), window row and per-window weight
    of each correction entry, partition = entry slot in its tile."""
    G = shape.group_windows
    n = shape.n_tiles(n_windows)
    tile, part = pack_correction(entries, n_windows, shape)
    hi_pos = np.full((TILE_COLS, n), n_hi, dtype=np.int32)
    rows = np.zeros((TILE_COLS, n), dtype=np.float32)
    weight = np.zeros((TILE_COLS, n, G), dtype=np.float32)
    hi_pos[part, tile] = entries.hi_pos
    rows[part, tile] = entries.row
    weight[part, tile, entries.window % G] = entries.weight
    return pack_metadata(correction_layout(n, G), {"hi_pos": hi_pos, "rows": rows, "weight": weight})


def tile_valid_counts(entries: CorrectionEntries, n_windows: int, shape: CorrectionShape) -> np.ndarray:
    """In-range FP16 positions per correction tile (the rows its gather moves)."""
    n = shape.n_tiles(n_windows)
    if not n:
        return np.zeros(0, dtype=np.int64)
    tile, _ = pack_correction(entries, n_windows, shape)
    return np.bincount(tile, minlength=n)


def correction_instructions(shape: CorrectionShape, n_windows: int, n_features: int, has_entries: bool) -> int:
    """Unrolled instructions of a launch's correction pass (blob load, memset, iota, gathers, builds, matmuls)."""
    if not shape.tiles_per_group:
        return 0
    C = shape.tiles_per_group
    n_chunks = -(-n_features // 512)
    resident = correction_buffer_tiles(shape, n_features)
    gathers = shape.groups(n_windows) * C if resident >= C else n_windows * C
    return 2 + (0 if has_entries else 1) + gathers + n_windows * C * (1 + n_chunks)


@dataclass
class CorrectionJob:
    """One kernel launch of a call with a hybrid X: the plan's launch (or a part of it, when its
    correction pass did not fit one launch), its correction shape, entries and per-tile row counts."""

    launch: object  # dste.kernels.plan.Launch
    plan_index: int | None  # index in plan.launches (its packed metadata is cached); None for a part
    shape: CorrectionShape
    entries: CorrectionEntries
    valid: np.ndarray

    def blob(self, n_hi: int) -> np.ndarray:
        return correction_blob(self.entries, self.launch.bucket.windows, self.shape, n_hi)


def plan_corrections(A, plan, hi_index, n_hi: int, target: str = "trn2") -> list[CorrectionJob]:
    """The launches of one call with a hybrid X whose FP16 rows are given by ``hi_index`` / ``n_hi``.

    The programs of one LNC launch (``plan.programs`` consecutive launches of a ``program_plan``) get one
    correction shape, priced together (the slower program's time), so they still run side by side
    (``launch_spmm.program_groups`` pairs jobs of one shape); a program without entries runs the shape over
    padding entries."""
    entries = correction_entries(A, plan, hi_index, n_hi) if n_hi else None
    bounds = launch_bounds(entries, len(plan.launches)) if entries is not None else None
    lnc = int(plan.programs)
    if len(plan.launches) % lnc:
        raise ValueError(f"plan_corrections: a plan cut for {lnc} programs per launch holds {len(plan.launches)} "
                         f"launches, not a multiple of {lnc}")
    jobs = []
    for first in range(0, len(plan.launches), lnc):
        members = range(first, first + lnc)
        if entries is None or bounds[first] == bounds[first + lnc]:
            jobs.extend(CorrectionJob(plan.launches[i], i, NO_CORRECTION, empty_entries(), np.zeros(0, np.int64))
                        for i in members)
            continue
        launches = [plan.launches[i] for i in members]
        per_program = [entries.of_launch(i, bounds) for i in members]
        fitted = _fit_programs(A, launches, list(members), per_program, target)
        if fitted is None:  # no shape fits: each program is fitted (and if need be split) on its own
            fitted = []
            for i, launch, own in zip(members, launches, per_program):
                fitted.extend(_fit(A, launch, i, own, target))
        jobs.extend(fitted)
    return jobs


def empty_entries() -> CorrectionEntries:
    empty = np.zeros(0, dtype=np.int64)
    return CorrectionEntries(empty, empty, empty, empty.astype(np.int32), empty.astype(np.float32))


def _candidates(programs_entries, W: int) -> list[tuple[CorrectionShape, list]]:
    """``[(shape, [window order per program, None: launch order])]`` for programs of ``W`` windows each: per
    power-of-two group size, the tiles every program needs in launch order, then (after all of those) the fewer
    tiles needed when the programs that need more in launch order take their balanced order."""
    in_order, balanced = [], []
    sizes = []
    for g in (1 << b for b in range(int(math.log2(max(1, W))) + 2)):
        sizes.append(min(g, W))
        if sizes[-1] == W:
            break
    n = len(programs_entries)
    for G in sizes:
        need = [round_up_tiles(_tiles_needed(e, W, G)) if len(e) else 0 for e in programs_entries]
        in_order.append((CorrectionShape(G, max(need)), [None] * n))
        if not 1 < G < W:
            continue
        orders, best_need = [], []
        for e, own in zip(programs_entries, need):
            order = None
            if len(e):
                order = balanced_window_order(np.bincount(e.window, minlength=W), G)
                reordered = CorrectionEntries(e.launch, np.argsort(order)[e.window], e.row, e.hi_pos, e.weight)
                own = min(own, round_up_tiles(_tiles_needed(reordered, W, G)))
            orders.append(order)
            best_need.append(own)
        tiles = max(best_need)
        if tiles < max(need):
            balanced.append((CorrectionShape(G, tiles), [order if own > tiles else None
                                                         for order, own in zip(orders, need)]))
    return in_order + balanced


def _fit_programs(A, launches, plan_indices, programs_entries, target) -> list[CorrectionJob] | None:
    """One correction shape (and per program a window order) for programs of one bucket that run side by side:
    the fastest, by the slower program's modelled time, within the instruction and SBUF limits; None if no
    shape fits."""
    import copy

    from dste.kernels.mirror import CorrectionCost, launch_cost
    from dste.kernels.plan import MAX_INSTRUCTIONS_PER_LAUNCH, launch_instructions

    b = launches[0].bucket
    W, F = b.windows, b.features
    has_entry_slots = bool(b.entry_slots or b.list_slots or b.diagonal)
    bases = [launch_cost(A, launch, target, planning=True) for launch in launches]
    main_instructions = launch_instructions(b)
    best = None
    for shape, orders in _candidates(programs_entries, W):
        if main_instructions + correction_instructions(shape, W, F, has_entry_slots) > MAX_INSTRUCTIONS_PER_LAUNCH:
            continue
        if correction_sbuf_bytes(shape, W, F) > CORRECTION_SBUF_BYTES:
            continue
        ns, valids = 0.0, []
        for launch, entries, order, base in zip(launches, programs_entries, orders, bases):
            placed = entries if order is None else reorder_windows(launch, entries, order)[1]
            valid = tile_valid_counts(placed, W, shape)
            c = copy.deepcopy(base)
            corr = CorrectionCost(shape, valid, F, has_entry_slots)
            corr.setup(c, W)
            for w in range(W):
                corr.window(c, w)
            ns = max(ns, max(c.busy_ns().values()))
            valids.append(valid)
        if best is None or ns < best[0]:
            best = (ns, shape, orders, valids)
    if best is None:
        return None
    _, shape, orders, valids = best
    jobs = []
    for launch, plan_index, entries, order, valid in zip(launches, plan_indices, programs_entries, orders, valids):
        if order is None:
            jobs.append(CorrectionJob(launch, plan_index, shape, entries, valid))
        else:
            moved, placed = reorder_windows(launch, entries, order)
            jobs.append(CorrectionJob(moved, None, shape, placed, valid))
    return jobs


def _fit(A, launch, plan_index, entries, target) -> list[CorrectionJob]:
    """The fastest correction shape (and window order) for this launch alone within the instruction and SBUF
    limits; a launch whose correction fits no shape is split into halves (a window too dense for one launch is
    an error)."""
    from dste.kernels.plan import MAX_INSTRUCTIONS_PER_LAUNCH

    jobs = _fit_programs(A, [launch], [plan_index], [entries], target)
    if jobs is not None:
        return jobs
    if launch.bucket.windows == 1:
        raise ValueError(
            f"window {int(launch.windows[0])} has {len(entries)} entries in FP16 rows of X: their correction pass "
            f"exceeds one launch ({MAX_INSTRUCTIONS_PER_LAUNCH} instructions, {CORRECTION_SBUF_BYTES} B of SBUF per "
            f"partition); use fewer FP16 rows"
        )
    jobs = []
    for part, sel, offset in _halves(launch, entries):
        jobs.extend(_fit(A, part, None, sel, target))
    return jobs


def _halves(launch, entries):
    """The launch cut into two launches of half its windows, with their entries."""
    from dste.kernels.plan import Launch

    b = launch.bucket
    h = b.windows // 2
    for lo, hi in ((0, h), (h, b.windows)):
        bucket = dataclasses.replace(b, windows=hi - lo)
        part = Launch(bucket, launch.windows[lo:hi], launch.bitmap_tiles[lo:hi], launch.entry_tiles[lo:hi],
                      launch.list_tiles[lo:hi])
        mask = (entries.window >= lo) & (entries.window < hi)
        sel = CorrectionEntries(entries.launch[mask], entries.window[mask] - lo, entries.row[mask],
                                entries.hi_pos[mask], entries.weight[mask])
        yield part, sel, lo
