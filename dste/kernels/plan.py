"""Launch planning for ``spmm_hybrid``: fixed-shape buckets and the per-launch array layout.

One compiled kernel serves every launch of the same :class:`Bucket`. A bucket fixes the
windows per launch, the bitmap-tile slots per window by kind (BIN, INT8, FP16), the
entry-tile slots per window by kind, the list-tile slots per window (any kind: their values
ride in the per-entry factors; an even count, the kernel runs them in pairs), the feature width
and the X mode. A window's tile counts (list tiles: pairs) are rounded up the ladder
``0, 1, 2, 3, 4, 6, 8, 12, 16, 24, ...`` (steps of at most 1.5x), so few distinct buckets
cover a graph and all its snapshots; the missing slots are
padding whose column ids are out of range (``M``), so their gathers move no bytes.
Windows with the same rounded counts are grouped; a group is cut into launches of
power-of-two sizes, each at most the largest size whose unrolled instruction count and
SBUF footprint fit one launch. The windows left after a group's full launches are cut by
binary decomposition (no padded windows) or padded up to a power of two, and small
remainders of different groups share a common padded shape, whichever the modelled cost
(``dste.kernels.cost``, per target) finds faster; padding slots move no bytes but cost a
transfer and instructions each.

``pack_launch`` turns the windows of one launch into the one metadata blob the kernel reads
(a relayout of the DSTE arrays with the tile-column index on the partition axis, all regions
side by side in an ``int32 [128, L]`` array, so one DMA per launch brings them); it depends on
``A`` only, so it is computed once per matrix (and again only when the keep mask changes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from dste.format.constants import MASK_WORD_BITS, TILE_COLS, WINDOW_ROWS, TileKind

if TYPE_CHECKING:  # cost.py imports this module
    from dste.kernels.cost import TraceBook

X_MODES = ("fp32", "bf16", "fp16", "int8-hybrid")
MAX_FEATURES = 4096
"""Widest F per launch: one window's fp32 accumulator in the 8 PSUM banks of 512 fp32 each."""
PSUM_CHUNK = 512
MAX_INSTRUCTIONS_PER_LAUNCH = 16384
"""Bound on the unrolled instruction count of one launch (compile time and instruction memory)."""
MAX_WINDOWS_PER_LAUNCH = 256
MAX_SLOTS_PER_WINDOW = 384
"""Rounded tile slots (bitmap + entry) of one window; a denser window is an error (re-encode
with a reordering or raise the limit)."""
SBUF_BUDGET_BYTES = 160 * 1024
"""Per-partition SBUF the planner lets one launch use (of 212,984 B on trn2, 180,224 B on trn1)."""


def slot_ladder(limit: int = MAX_SLOTS_PER_WINDOW) -> np.ndarray:
    """0, 1, 2, 3, 4, 6, 8, 12, ...: each step at most 1.5x the previous."""
    values = [0, 1, 2, 3]
    while values[-1] < limit:
        values.append(values[-2] * 2)
    return np.array(values, dtype=np.int64)


LADDER = slot_ladder()


def round_up_slots(counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.int64)
    if counts.size and counts.max() > LADDER[-1]:
        raise ValueError(f"a window has {int(counts.max())} tiles of one kind; at most {int(LADDER[-1])} are supported")
    return LADDER[np.searchsorted(LADDER, counts, side="left")]


def feature_chunks(n_features: int) -> list[tuple[int, int]]:
    """(start, width) of each PSUM chunk of the feature dim (<= 512 fp32 per bank)."""
    return [(f0, min(PSUM_CHUNK, n_features - f0)) for f0 in range(0, n_features, PSUM_CHUNK)]


RECORD_TAIL_BYTES = 4
"""fp32 row scale after the int8 values of a hybrid record."""
STORE_BYTES_PER_PARTITION = 16384
"""Output rows of several windows collect in one SBUF buffer of up to this many bytes per partition, then leave by
one scatter per window (kernel's constant)."""


def kernel_module():
    """The ``spmm_hybrid`` kernel file as loaded for the simulator (``dste.kernels.device``). Its layout
    and grouping helpers are pure Python and the same on every backend; the planner calls them rather
    than keeping copies, so the blob it packs is the one the kernel reads."""
    from dste.kernels.device import kernel_module as load

    return load("spmm_hybrid", "nkisim")


def windows_per_step(n_windows: int, slots_per_window: int, n_features: int, group: int) -> int:
    """Windows whose slots share one set of working buffers (the kernel's ``windows_per_step``)."""
    return kernel_module().windows_per_step(n_windows, slots_per_window, n_features, group)


def windows_per_store(n_windows: int, step: int, n_features: int) -> int:
    """Windows whose output rows collect in one buffer before their scatters: whole steps, up to
    STORE_BYTES_PER_PARTITION (the kernel's ``windows_per_store``)."""
    return kernel_module().windows_per_store(n_windows, step, n_features)


WORD_BYTES = 4
"""The metadata blob is int32; byte and half-word regions are padded to whole words."""


def metadata_layout(n_windows: int, bitmap_counts, entry_counts, wide_ids: bool = False, n_list: int = 0,
                    wide_rows: bool = False, diagonal: bool = False) -> dict:
    """Word offsets of the metadata blob's regions ``{name: (start, words)}`` and ``"total"``
    (the kernel's ``metadata_layout``)."""
    return kernel_module().metadata_layout(n_windows, bitmap_counts, entry_counts, wide_ids, int(n_list), wide_rows,
                                           int(diagonal))


COLUMN_BAND_ROWS = 65536
"""X rows per column-id band (the kernel's constant): the blob holds each id as a uint16 offset in its band."""
PAD_OFFSET = 0xFFFF
"""uint16 offset of a padding slot: out of range on its own when M < 65536, else with band ``PAD_BAND``."""
PAD_BAND = 255
"""uint8 band of a padding slot (the kernel's constant); M is limited to ``PAD_BAND * COLUMN_BAND_ROWS``."""


def uses_bands(n_x_rows: int) -> bool:
    """Whether the blob carries a band per id (the kernel's ``uses_bands``)."""
    return int(n_x_rows) >= COLUMN_BAND_ROWS


def split_column_ids(cols: np.ndarray, M: int, wide_ids: bool):
    """``(uint16 offsets, uint8 bands or None)`` of int32 column ids; ids ``>= M`` (padding) become
    ``PAD_OFFSET`` / ``PAD_BAND``."""
    pad = cols >= M
    offsets = np.where(pad, PAD_OFFSET, cols % COLUMN_BAND_ROWS).astype(np.uint16)
    if not wide_ids:
        return offsets, None
    return offsets, np.where(pad, PAD_BAND, cols // COLUMN_BAND_ROWS).astype(np.uint8)


def record_width(n_features: int) -> int:
    """Bytes per row of the hybrid gather record: int8 values padded to 4 B, fp32 scale."""
    return 4 * math.ceil(n_features / 4) + RECORD_TAIL_BYTES


@dataclass(frozen=True)
class Bucket:
    """The compile-time shape of one launch."""

    windows: int
    bitmap: tuple[int, int, int]
    entry: tuple[int, int, int]
    features: int
    x_mode: str
    wide_ids: bool = False
    """X has at least COLUMN_BAND_ROWS rows: every column id carries a band (one more blob region per layout)."""
    lists: int = 0
    """List-tile slots per window, of any kind (their values are folded into the per-entry factors), an even
    count: the kernel runs them in pairs."""
    wide_rows: bool = False
    """Y has at least COLUMN_BAND_ROWS rows: every output row id carries a band (one more blob region)."""
    diagonal: bool = False
    """A's diagonal is implicit (``DSTEMatrix.unit_diagonal``): one more slot per window, the diagonal's."""

    @property
    def bitmap_slots(self) -> int:
        return sum(self.bitmap)

    @property
    def entry_slots(self) -> int:
        return sum(self.entry)

    @property
    def list_slots(self) -> int:
        return self.lists

    @property
    def list_pairs(self) -> int:
        """Gathers / stationaries of the list slots of a window: two list tiles per pair."""
        return -(-self.list_slots // 2)

    @property
    def slots_per_window(self) -> int:
        """Working-buffer positions per window: one per bitmap or entry slot, one per pair of list slots, one for
        the unit diagonal."""
        return self.bitmap_slots + self.entry_slots + self.list_pairs + int(self.diagonal)

    def group_size(self) -> int:
        """Slots processed together (one batched mask unpack, one set of gather buffers)."""
        per_slot = slot_sbuf_bytes(self.features, self.x_mode)
        return int(max(1, min(32, (SBUF_BUDGET_BYTES // 2) // per_slot)))


LIST_COLS = 64
"""Listed column ids per list tile (the kernel's constant; ``dste.format.constants.LIST_TILE_COLS``): a window's
list slots run in pairs, the second tile's columns on partitions 64..127."""
LIST_BUILD_BYTES = 4 * 2 * (TILE_COLS + WINDOW_ROWS)
"""Per-partition SBUF of the list stationaries' one-hot factors: 4 rotating bf16 pairs of [128] + [128]."""
MAX_FEATURES_WITH_LISTS = MAX_FEATURES - PSUM_CHUNK
"""Widest F of a launch with list slots: their stationaries are built in a PSUM bank beside the accumulator."""


def slot_sbuf_bytes(n_features: int, x_mode: str) -> int:
    """Per-partition SBUF of one slot's (or list pair's) working buffers: moving operand, stationary, unpacked
    mask (the one-hot factors of list stationaries are a fixed ``LIST_BUILD_BYTES``)."""
    moving = 2 * n_features
    record = record_width(n_features) if x_mode == "int8-hybrid" else 0
    return moving + record + 2 * WINDOW_ROWS + 4 * WINDOW_ROWS


def launch_metadata_bytes(windows: int, bitmap, entry, wide_ids: bool = False, lists: int = 0,
                          wide_rows: bool = False, diagonal: bool = False) -> int:
    """Per-partition SBUF of one launch's metadata: the blob, plus the fp32 entry rows, int32 entry
    keep bits, int32 widened column ids and int32 widened output row ids the kernel derives from it (and for
    list slots their fp32 rows, fp32 column slots, int32 keep bits and int32 ids)."""
    nb, ne, nl = sum(bitmap), sum(entry), int(lists)
    return (WORD_BYTES * metadata_layout(windows, bitmap, entry, wide_ids, lists, wide_rows, diagonal)["total"]
            + windows * ne * (4 + 4) + windows * (nb + ne) * 4 + windows * nl * (4 + 4 + 4 + 4) + windows * 4)


def step_instructions(bitmap, entry, n_features: int, x_mode: str, group: int, windows: int, lists: int = 0,
                      diagonal: bool = False) -> int:
    """Unrolled instructions of one window step of ``windows`` windows (must match the kernel's loops;
    the FP16-row correction pass is counted apart, ``dste.kernels.correction``)."""
    nb, ne, nl = sum(bitmap), sum(entry), int(lists)
    hybrid = x_mode == "int8-hybrid"
    fold = hybrid
    n_chunks = len(feature_chunks(n_features))
    per_slot = 1 + (1 if hybrid else 0) + n_chunks  # gather, dequantize, matmuls

    def bitmap_part(s0, n):
        count = n * per_slot + 1 + (1 if fold else n) + (1 if fold else 0)
        for w in range(s0 // nb, (s0 + n - 1) // nb + 1):
            g0, g1 = max(s0, w * nb) - w * nb, min(s0 + n, (w + 1) * nb) - w * nb
            for lo, hi in ((bitmap[0], bitmap[0] + bitmap[1]), (bitmap[0] + bitmap[1], nb)):
                if max(lo, g0) < min(hi, g1):
                    count += 1
        return count

    def entry_part(n):
        return n * (per_slot + 1)

    def list_part(n_pairs, n_slots):
        # per pair: gather, dequantize, evacuation, matmuls; per slot the two one-hot builds and their product
        return n_pairs * (per_slot + 1) + 3 * n_slots

    def diagonal_part(n):
        # per window: gather, (dequantize,) one-hot build, matmuls; a hybrid X's slot scales once per call
        return n * (per_slot + 1) + (1 if hybrid else 0)

    npairs = -(-nl // 2)
    total = windows * n_chunks  # evacuations (stores are counted per launch)
    if diagonal:
        total += diagonal_part(windows) if nb + ne + npairs + 1 <= group else windows * diagonal_part(1)
    total += list_part(windows * npairs, windows * nl) if nl else 0
    if nb + ne + npairs + int(diagonal) <= group:
        total += (bitmap_part(0, windows * nb) if nb else 0) + (entry_part(windows * ne) if ne else 0)
    else:
        total += sum(bitmap_part(g0, min(nb, g0 + group) - g0) for g0 in range(0, nb, group))
        total += sum(entry_part(min(ne, g0 + group) - g0) for g0 in range(0, ne, group))
    return total


def instructions_per_window(bitmap, entry, n_features: int, x_mode: str, group: int, lists: int = 0,
                            diagonal: bool = False) -> int:
    """Upper bound of the unrolled instructions per window (a step of one window and its own store;
    batching only saves)."""
    return step_instructions(bitmap, entry, n_features, x_mode, group, 1, lists, diagonal) + 1


LAUNCH_SETUP_INSTRUCTIONS = 20
"""Upper bound of the per-launch setup instructions (metadata load, constants, memsets)."""
LIST_SETUP_INSTRUCTIONS = 14
"""Upper bound of the setup instructions list slots add (id widening, rows, column slots, keep bits, weights, iotas)."""
DIAGONAL_SETUP_INSTRUCTIONS = 2
"""Setup instructions the unit diagonal adds: the partition iota, and the row iota when no entry or list slot built it."""


def setup_instructions(lists: int, diagonal: bool = False) -> int:
    return (LAUNCH_SETUP_INSTRUCTIONS + (LIST_SETUP_INSTRUCTIONS if lists else 0)
            + (DIAGONAL_SETUP_INSTRUCTIONS if diagonal else 0))


def launch_instructions(bucket: Bucket) -> int:
    b = bucket
    group = b.group_size()
    step = windows_per_step(b.windows, b.slots_per_window, b.features, group)
    total = setup_instructions(b.lists, b.diagonal) + launch_stores(bucket)
    for w0 in range(0, b.windows, step):
        k = min(b.windows, w0 + step) - w0
        total += step_instructions(b.bitmap, b.entry, b.features, b.x_mode, group, k, b.lists, b.diagonal)
    return total


def launch_stores(bucket: Bucket) -> int:
    """Output stores of one launch: one scatter per window (its 128 rows to their original rows of Y)."""
    return bucket.windows


@dataclass
class Launch:
    bucket: Bucket
    windows: np.ndarray  # window ids, [W]
    bitmap_tiles: np.ndarray  # [W, NB] tile id per slot, -1 = padding
    entry_tiles: np.ndarray  # [W, NE] entry-tile id per slot, -1 = padding
    list_tiles: np.ndarray | None = None  # [W, NL] list-tile id per slot, -1 = padding (None: no list slots)

    def __post_init__(self):
        if self.list_tiles is None:
            self.list_tiles = np.full((len(self.windows), self.bucket.list_slots), -1, dtype=np.int64)
        assert self.list_tiles.shape == (len(self.windows), self.bucket.list_slots), (
            f"list_tiles must be [{len(self.windows)}, {self.bucket.list_slots}] (windows x list slots of the bucket), "
            f"got {self.list_tiles.shape}"
        )


@dataclass
class LaunchPlan:
    """All launches of one ``spmm_hybrid`` call. Figures derived from it are exact counts."""

    shape: tuple[int, int]
    features: int
    x_mode: str
    launches: list[Launch] = field(default_factory=list)
    programs: int = 1
    """Programs per ``kernel[lnc]`` launch the launches were cut for (:func:`program_plan`): each launch
    here is one program's share."""

    structure: str | None = field(default=None, repr=False, compare=False)
    """Digest of the tile structure the launches index (:func:`tile_structure` of the matrix planned), ``None`` for
    a plan built by hand: the launcher refuses a matrix of other tiles, whose tile ids the launches do not name."""

    # Caches derived from this plan (not part of its value: excluded from init, repr and ==).
    # {lnc: this plan cut into lnc programs per launch}, filled by program_plan.
    program_plans: dict[int, LaunchPlan] = field(default_factory=dict, init=False, repr=False, compare=False)
    # Per-launch kernel arrays (one dict per launch) packed from A by launch_spmm.packed_launches, and a weak
    # reference to that A: a matrix of the same tiles with other keep bits or values (with_mask) is packed anew.
    packed_launch_arrays: list[dict] | None = field(default=None, init=False, repr=False, compare=False)
    packed_for: object = field(default=None, init=False, repr=False, compare=False)
    # ((launch, window) of every bitmap tile, (launch, window) of every entry tile), from correction_entries.
    correction_owners: tuple | None = field(default=None, init=False, repr=False, compare=False)
    # The cost.TraceBook of this plan's launch shapes, used by cost.traced_shapes when the caller passes none.
    trace_book: TraceBook | None = field(default=None, init=False, repr=False, compare=False)

    def __getstate__(self) -> dict:
        # the packed arrays are kept for one live matrix, named by a weak reference, which cannot be pickled; an
        # unpickled plan packs them again on its first launch
        state = dict(self.__dict__)
        state["packed_launch_arrays"], state["packed_for"] = None, None
        return state

    @property
    def buckets(self) -> list[Bucket]:
        return sorted({launch.bucket for launch in self.launches}, key=repr)

    @property
    def n_slots(self) -> int:
        return sum(l.bucket.windows * l.bucket.slots_per_window for l in self.launches)

    @property
    def n_tiles(self) -> int:
        return int(sum((l.bitmap_tiles >= 0).sum() + (l.entry_tiles >= 0).sum() + (l.list_tiles >= 0).sum()
                       for l in self.launches))

    def instructions(self) -> list[int]:
        return [launch_instructions(l.bucket) for l in self.launches]

    def summary(self) -> dict:
        inst = self.instructions()
        return {
            "launches": len(self.launches),
            "buckets": len(self.buckets),
            "tiles": self.n_tiles,
            "slots": self.n_slots,
            "padding_fraction": 1.0 - self.n_tiles / self.n_slots if self.n_slots else 0.0,
            "max_instructions_per_launch": max(inst) if inst else 0,
            "total_instructions": int(sum(inst)),
        }


def tile_structure(A) -> str:
    """Digest of what a plan's launches depend on in ``A``: its shape, unit diagonal and, per layout, the window
    pointer and tile kinds (so every slot's tile id names a tile of that kind in that window). Two matrices with
    the same digest (a matrix and its ``with_mask`` or ``replace(row_scale=...)`` copies) share their plans; their
    keep bits, values and scales are packed from each matrix itself."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr((tuple(int(s) for s in A.shape), bool(getattr(A, "unit_diagonal", False)))).encode())
    for name in ("window_ptr", "tile_kind", "ewindow_ptr", "etile_kind", "lwindow_ptr", "ltile_kind"):
        values = np.ascontiguousarray(getattr(A, name))
        digest.update(f"{name}:{values.dtype.str}:{values.shape}".encode())
        digest.update(values.tobytes())
    return digest.hexdigest()


def check_plan_matches(plan: LaunchPlan, A) -> None:
    """Refuse a plan whose launches were planned for a matrix of other tiles than ``A``'s (their tile ids would
    index ``A``'s arrays at the wrong tiles, or past them)."""
    if plan.structure is not None and plan.structure != tile_structure(A):
        raise ValueError("plan was made for a matrix with other tiles (window pointers or tile kinds differ from "
                         "this A's); plan this matrix with plan_launches(A, ...) or pass plan=None")


def check_lnc(lnc) -> int:
    """``lnc`` as an int, if it is 1 or 2 (a launch runs on one or two logical cores); ``ValueError`` otherwise."""
    if isinstance(lnc, bool) or not isinstance(lnc, (int, np.integer)) or lnc not in (1, 2):
        raise ValueError(f"lnc={lnc!r}: a launch runs on 1 or 2 logical cores (an int)")
    return int(lnc)


def _validate_features(n_features: int):
    if isinstance(n_features, bool) or not isinstance(n_features, (int, np.integer)):
        raise TypeError(f"feature width F must be an int, got {type(n_features).__name__}")
    if not 1 <= n_features <= MAX_FEATURES:
        raise ValueError(
            f"feature width F={n_features} is outside what one launch supports: 1 <= F <= {MAX_FEATURES} "
            f"(one window's fp32 accumulator must fit the 8 PSUM banks of {PSUM_CHUNK} fp32)"
        )


def _kind_slot_lists(ptr, kinds, window):
    tiles = np.arange(ptr[window], ptr[window + 1])
    return [tiles[kinds[tiles] == k] for k in (TileKind.BIN, TileKind.INT8, TileKind.FP16)]


def max_windows_per_launch(bitmap, entry, n_features, x_mode, wide_ids: bool = False, lists: int = 0,
                           wide_rows: bool = False, diagonal: bool = False) -> int:
    probe = Bucket(1, tuple(bitmap), tuple(entry), n_features, x_mode, wide_ids, int(lists), wide_rows, bool(diagonal))
    per_window = instructions_per_window(bitmap, entry, n_features, x_mode, probe.group_size(), lists, diagonal)
    by_instr = (MAX_INSTRUCTIONS_PER_LAUNCH - setup_instructions(lists, diagonal)) // max(per_window, 1)
    # working buffers, the output buffer (at most one store's rows) and small constants
    working = (probe.group_size() * slot_sbuf_bytes(n_features, x_mode)
               + max(STORE_BYTES_PER_PARTITION, 4 * n_features) + 1024 + (LIST_BUILD_BYTES if lists else 0))
    by_sbuf = (SBUF_BUDGET_BYTES - working) // max(launch_metadata_bytes(1, bitmap, entry, wide_ids, lists, wide_rows,
                                                                         diagonal), 1)
    limit = int(max(1, min(MAX_WINDOWS_PER_LAUNCH, by_instr, by_sbuf)))
    return 1 << (limit.bit_length() - 1)


def check_list_tiles(A, F: int, caller: str) -> None:
    """List tiles name at most ``LIST_COLS`` columns and 128 entries (``docs/CONTRACTS.md``, "List tiles"), and a
    launch holding them needs one PSUM bank beside its accumulator (F <= ``MAX_FEATURES_WITH_LISTS``)."""
    n_list = int(np.asarray(getattr(A, "ltile_window", np.zeros(0))).shape[0])
    if not n_list:
        return
    if int(A.ltile_ncols.max()) > LIST_COLS or int(A.ltile_nentries.max()) > TILE_COLS:
        raise ValueError(f"{caller}: a list tile lists {int(A.ltile_ncols.max())} columns / "
                         f"{int(A.ltile_nentries.max())} entries; at most {LIST_COLS} / {TILE_COLS} are allowed")
    if F > MAX_FEATURES_WITH_LISTS:
        raise ValueError(f"{caller}: F={F} with {n_list} list tiles; a launch with list slots takes at most "
                         f"{MAX_FEATURES_WITH_LISTS} features (their stationaries need a PSUM bank beside the "
                         "accumulator); the launcher splits a wider X into column blocks")


def plan_launches(A, F: int, x_mode: str = "fp32", *, target: str = "trn2", merge: bool = True,
                  lnc: int | None = None) -> LaunchPlan:
    """Group A's windows into fixed-shape launches for feature width ``F`` and X mode ``x_mode``.

    FP16 rows of a hybrid X are added by a per-call correction pass (``dste.kernels.correction``),
    so one plan serves every X of the mode. Windows with no tiles are skipped entirely (their output rows are zero),
    unless A has a unit diagonal: then every window has its diagonal slot and none is skipped.

    ``merge``: windows left over after a signature's full launches (fewer than one launch holds)
    are merged across signatures into a common padded shape, and a group's last launch may be
    padded up to the next power-of-two window count, whenever that lowers the modelled latency
    on ``target`` (see :class:`_LaunchBuilder`). ``merge=False`` gives the exact-signature plan.
    ``lnc``: the logical cores a launch will run on (default: the launcher's ``default_lnc(target)``); each launch is
    priced as it runs, its ``lnc`` programs side by side (``program_plan``).
    """
    if x_mode not in X_MODES:
        raise ValueError(f"x_mode must be one of {X_MODES}, got {x_mode!r}")
    from dste.kernels.launch_spmm import require_indirect_dma  # launch_spmm imports this module

    require_indirect_dma(target, "spmm_hybrid")  # a trn1 plan was made, then refused by the launcher and the estimate
    _validate_features(F)
    if lnc is not None:
        lnc = check_lnc(lnc)
    check_list_tiles(A, F, "plan_launches")
    if A.shape[0] > PAD_BAND * COLUMN_BAND_ROWS:
        raise ValueError(f"A has N = {A.shape[0]} rows; the kernel's 16-bit output row ids with a uint8 band reach "
                         f"at most {PAD_BAND * COLUMN_BAND_ROWS} rows of Y")
    if A.shape[1] > PAD_BAND * COLUMN_BAND_ROWS:
        raise ValueError(f"A has M = {A.shape[1]} columns; the kernel's 16-bit column ids with a uint8 band reach "
                         f"at most {PAD_BAND * COLUMN_BAND_ROWS} rows of X")
    n_windows = int(A.window_rows.shape[0])
    # per window: BIN, INT8, FP16 bitmap tiles, the same of entry tiles, list pairs, the unit diagonal (0 or 1)
    counts = np.zeros((n_windows, 8), dtype=np.int64)
    diagonal = int(bool(getattr(A, "unit_diagonal", False)))
    bitmap_lists, entry_lists, list_lists = [], [], []
    for w in range(n_windows):
        b = _kind_slot_lists(A.window_ptr, A.tile_kind, w)
        e = _kind_slot_lists(A.ewindow_ptr, A.etile_kind, w)
        li = [np.arange(A.lwindow_ptr[w], A.lwindow_ptr[w + 1])]  # every kind: values ride in the factors
        bitmap_lists.append(b)
        entry_lists.append(e)
        list_lists.append(li)
        counts[w] = [len(t) for t in b + e] + [-(-len(li[0]) // 2), diagonal]  # list slots count in pairs
    if n_windows and counts[:, :6].max() > LADDER[-1]:
        w, kind = (int(i) for i in np.unravel_index(np.argmax(counts[:, :6]), counts[:, :6].shape))
        raise ValueError(
            f"window {w} holds {int(counts[w, kind])} {('bitmap', 'entry')[kind // 3]} tiles of kind "
            f"{TileKind(kind % 3).name}; one launch's window holds at most {int(LADDER[-1])} of a kind: its "
            f"{WINDOW_ROWS} rows touch more than {int(LADDER[-1])} column tiles of {TILE_COLS} columns (a node of degree "
            f"above {int(LADDER[-1]) * TILE_COLS:,} always does; a reordering, dste.format.rcm, may gather the others' "
            "columns)"
        )
    rounded = round_up_slots(counts)
    rounded[:, 6] *= 2  # pairs -> list slots (even)
    if n_windows and rounded.sum(axis=1).max() > MAX_SLOTS_PER_WINDOW:
        w = int(np.argmax(rounded.sum(axis=1)))
        kinds = ("BIN", "INT8", "FP16", "entry BIN", "entry INT8", "entry FP16", "list", "diagonal")
        held = ", ".join(f"{name} {int(c)} -> {int(r)}" for name, c, r in zip(kinds, counts[w], rounded[w]) if c)
        raise ValueError(
            f"window {w} needs {int(rounded[w].sum())} tile slots ({held}: each kind's tiles rounded up the ladder "
            f"of compiled slot counts, {', '.join(str(int(v)) for v in LADDER[-5:])}); one launch supports at most "
            f"{MAX_SLOTS_PER_WINDOW} per window. A reordering (reorder='community' or 'rcm') may gather the "
            "window's columns into fewer tiles; a window holding a hub row keeps its tiles"
        )
    plan = LaunchPlan((int(A.shape[0]), int(A.shape[1])), int(F), x_mode, structure=tile_structure(A))
    nonempty = np.nonzero(counts.sum(axis=1) > 0)[0]
    signatures = {}
    for w in nonempty:
        signatures.setdefault(tuple(int(v) for v in rounded[w]), []).append(int(w))
    if lnc is None:
        from dste.kernels.launch_spmm import default_lnc

        lnc = default_lnc(target)
    builder = _LaunchBuilder(A, bitmap_lists, entry_lists, list_lists, int(F), x_mode, target, pad=merge, lnc=lnc)
    groups = sorted(signatures.items())
    if merge:
        groups = builder.merge_small_groups(groups)
    for sig, windows in groups:
        plan.launches.extend(builder.launches(sig, windows))
    return plan


SMALL_GROUP_WINDOWS = 32
"""Remainders of at most this many windows are candidates for merging across signatures (a
larger one has enough work per launch that its launch count hardly matters, and pricing its
merges would dominate the planning time)."""


class _LaunchBuilder:
    """Cuts groups of windows into launches and prices them with the modelled cost.

    A group (one bucket signature, its windows) becomes launches of the largest window count one
    launch holds (``max_windows_per_launch``, a power of two), then the remainder r. The remainder
    is cut into the power-of-two parts of r (no padding), or its top parts and one launch padded up
    to the next power of two, whichever has the lowest modelled latency. A padded window's slots are
    all padding: their gathers move no bytes but cost a transfer and the slot's instructions, and
    the modelled cost weighs that against one launch fewer.

    ``merge_small_groups`` merges the remainders of at most ``SMALL_GROUP_WINDOWS`` windows of
    different signatures greedily (the pair whose merge saves the most modelled time first) into the
    element-wise larger signature, while a merge saves time. Every choice is priced, and the
    unpadded cut is always among the options, so the plan's modelled latency never exceeds the
    exact-signature plan's (``merge=False``) on the planning target (default DMA model, each launch as its ``lnc``
    programs). Launch latencies come from ``dste.kernels.cost`` (the estimator the profile agrees
    with), imported lazily because that module imports this one.
    """

    def __init__(self, A, bitmap_lists, entry_lists, list_lists, F, x_mode, target, pad=True, lnc=1):
        self.A = A
        self.lnc = int(lnc)
        self.bitmap_lists = bitmap_lists
        self.entry_lists = entry_lists
        self.list_lists = list_lists
        self.F, self.x_mode, self.target = F, x_mode, target
        self.pad = pad
        self.wide_ids = uses_bands(A.shape[1])
        self.wide_rows = uses_bands(A.shape[0])
        self._cuts = {}
        self._program_ns = {}

    def launch(self, sig, windows, size):
        """One launch of bucket ``sig`` with ``size`` windows: ``windows`` then padding windows (-1)."""
        bitmap, entry, n_list = sig[:3], sig[3:6], sig[6]
        bucket = Bucket(size, bitmap, entry, self.F, self.x_mode, self.wide_ids, n_list, self.wide_rows, bool(sig[7]))
        bt = np.full((size, sum(bitmap)), -1, dtype=np.int64)
        et = np.full((size, sum(entry)), -1, dtype=np.int64)
        lt = np.full((size, n_list), -1, dtype=np.int64)
        for i, w in enumerate(windows):
            for lists, out, counts in ((self.bitmap_lists, bt, bitmap), (self.entry_lists, et, entry),
                                       (self.list_lists, lt, (n_list,))):
                offset = 0
                for k in range(len(counts)):
                    tiles = lists[w][k]
                    out[i, offset:offset + len(tiles)] = tiles
                    offset += counts[k]
        ids = np.full(size, -1, dtype=np.int64)
        ids[:len(windows)] = windows
        return Launch(bucket, ids, bt, et, lt)

    def latency_ns(self, launch):
        # the launch's programs run side by side on their own cores: it takes as long as the slowest
        programs = _split_launch(launch, self.lnc) if self.lnc > 1 else [launch]
        return max(self.program_ns(part) for part in programs)

    def program_ns(self, program):
        """Modelled ns of one program; memoized by its bucket and windows (which fix its tiles): the cut options of
        a group share their leading launches, and all-padding programs recur."""
        from dste.kernels.mirror import launch_cost

        key = (program.bucket, program.windows.tobytes())
        if key not in self._program_ns:
            self._program_ns[key] = max(launch_cost(self.A, program, self.target, planning=True).busy_ns().values())
        return self._program_ns[key]

    def launches(self, sig, windows):
        full, rest, _, _ = self._cut(sig, tuple(windows))
        return full + rest

    def cost(self, sig, windows):
        """Modelled latency (ns) of the group's launches."""
        _, _, rest_ns, full_ns = self._cut(sig, tuple(windows))
        return full_ns + rest_ns

    def _cut(self, sig, windows):
        """(full launches, the remainder's cheapest launches, their modelled ns, the full launches' modelled ns);
        memoized: the merge loop prices every remaining group again on each of its rounds."""
        key = (sig, windows)
        if key not in self._cuts:
            cap = max_windows_per_launch(sig[:3], sig[3:6], self.F, self.x_mode, self.wide_ids, sig[6], self.wide_rows,
                                         bool(sig[7]))
            n_full = len(windows) // cap * cap
            full = [self.launch(sig, windows[i:i + cap], cap) for i in range(0, n_full, cap)]
            rest = windows[n_full:]
            parts = [1 << b for b in range(len(rest).bit_length() - 1, -1, -1) if len(rest) >> b & 1]
            options = []
            # k exact power-of-two parts, then the rest in one padded launch (k = len(parts): no padding)
            for k in range(len(parts), -1, -1) if self.pad else (len(parts),):
                cut, start = [], 0
                for size in parts[:k]:
                    cut.append(self.launch(sig, rest[start:start + size], size))
                    start += size
                if start < len(rest):
                    tail = rest[start:]
                    cut.append(self.launch(sig, tail, 1 << (len(tail) - 1).bit_length()))
                if not self.pad:
                    options.append((0.0, cut))
                else:
                    options.append((sum(self.latency_ns(l) for l in cut), cut))
            rest_ns, rest_cut = min(options, key=lambda o: o[0])  # the first (least padding) on ties
            self._cuts[key] = (full, rest_cut, rest_ns, sum(self.latency_ns(l) for l in full))
        return self._cuts[key]

    def merge_small_groups(self, groups):
        """Keep each signature's full launches; merge the remainders while that saves modelled time."""
        fixed, small = [], []
        for sig, windows in groups:
            cap = max_windows_per_launch(sig[:3], sig[3:6], self.F, self.x_mode, self.wide_ids, sig[6], self.wide_rows,
                                         bool(sig[7]))
            n_full = len(windows) // cap * cap
            if len(windows) - n_full > SMALL_GROUP_WINDOWS:
                fixed.append((sig, list(windows)))
                continue
            if n_full:
                fixed.append((sig, list(windows[:n_full])))
            if n_full < len(windows):
                small.append((sig, list(windows[n_full:])))
        while len(small) > 1:
            best = None
            for i in range(len(small)):
                for j in range(i + 1, len(small)):
                    (sig_a, win_a), (sig_b, win_b) = small[i], small[j]
                    sig = tuple(max(a, b) for a, b in zip(sig_a, sig_b))
                    if sum(sig) > MAX_SLOTS_PER_WINDOW:
                        continue
                    merged = sorted(win_a + win_b)
                    saving = self.cost(sig_a, win_a) + self.cost(sig_b, win_b) - self.cost(sig, merged)
                    if saving > 0 and (best is None or saving > best[0]):
                        best = (saving, i, j, (sig, merged))
            if best is None:
                break
            _, i, j, merged_group = best
            small = [g for k, g in enumerate(small) if k not in (i, j)] + [merged_group]
        return fixed + sorted(small)


def program_plan(plan: LaunchPlan, lnc: int) -> LaunchPlan:
    """The plan as launches of one program each: every launch of ``plan`` cut into ``lnc`` consecutive parts of
    ``ceil(W / lnc)`` windows (the last padded with padding windows), one per program of a ``kernel[lnc]``
    launch. All parts of a launch share one bucket, so the launcher runs them side by side. Cached on ``plan``."""
    if plan.programs == lnc:
        return plan
    if plan.programs != 1:
        raise ValueError(f"this plan was cut for {plan.programs} programs per launch; a launch of {lnc} needs the whole plan")
    if lnc not in plan.program_plans:
        parts = []
        for launch in plan.launches:
            parts.extend(_split_launch(launch, lnc))
        plan.program_plans[lnc] = LaunchPlan(plan.shape, plan.features, plan.x_mode, parts, programs=lnc,
                                             structure=plan.structure)
    return plan.program_plans[lnc]


def _split_launch(launch: Launch, lnc: int) -> list[Launch]:
    b = launch.bucket
    per = -(-b.windows // lnc)
    pad = per * lnc - b.windows

    def padded(rows):
        return np.concatenate([rows, np.full((pad,) + rows.shape[1:], -1, dtype=rows.dtype)]) if pad else rows

    windows, bitmap, entry = padded(launch.windows), padded(launch.bitmap_tiles), padded(launch.entry_tiles)
    lists = padded(launch.list_tiles)
    bucket = dataclasses.replace(b, windows=per)
    return [Launch(bucket, windows[p * per:(p + 1) * per], bitmap[p * per:(p + 1) * per], entry[p * per:(p + 1) * per],
                   lists[p * per:(p + 1) * per])
            for p in range(lnc)]


def launch_rows(A, launch: Launch) -> np.ndarray:
    """``int32 [W, 128]`` original row of each window slot of the launch; ``N`` (skipped) for padding windows."""
    ids = launch.windows
    rows = A.window_rows[np.maximum(ids, 0)].copy()
    rows[ids < 0] = A.shape[0]
    return rows


def _gather_or(values, index, fill):
    out = np.full(index.shape + values.shape[1:], fill, dtype=values.dtype)
    valid = index >= 0
    out[valid] = values[index[valid]]
    return out


def _slot_factors(tiles, cols, M, col_scale, tile_kind, tile_slot, int8_scale):
    """``float32 [S, 128]`` factor of every slot's columns: 0 for padding (column id ``M``), else the
    column scale (1 without one) times the tile's INT8 scale for an INT8 tile."""
    factor = np.where(cols < M, 1.0, 0.0).astype(np.float32)
    if col_scale is not None:
        factor *= np.where(cols < M, col_scale[np.minimum(cols, M - 1)], 0.0).astype(np.float32)
    kinds = _gather_or(tile_kind, tiles, 0)
    slots = _gather_or(tile_slot, tiles, -1)
    is_int8 = (tiles >= 0) & (kinds == TileKind.INT8)
    factor[is_int8] *= int8_scale[slots[is_int8]][:, None]
    return factor


def pack_launch(A, launch: Launch) -> dict:
    """The kernel's per-launch metadata: ``{"metadata": int32 [128, L]}`` (layout in
    :func:`metadata_layout` and :mod:`dste.kernels.spmm_hybrid`)."""
    b = launch.bucket
    N, M = int(A.shape[0]), int(A.shape[1])
    nb, ne = b.bitmap_slots, b.entry_slots
    col_scale = A.col_scale.astype(np.float32) if A.col_scale is not None else None  # float16 too: exact upcast
    regions = {}

    # Bitmap slots, window-major: [W, NB] -> partition = tile column k.
    if nb:
        bt = launch.bitmap_tiles.reshape(-1)
        cols = _gather_or(A.tile_cols, bt, M)  # [S, 128]
        keep = _gather_or(A.keep_bits, bt, 0)  # [S, 128, 4]
        factor = _slot_factors(bt, cols, M, col_scale, A.tile_kind, A.tile_slot, A.int8_scale)
        regions["bm_cols"], bands = split_column_ids(cols.T, M, b.wide_ids)
        if bands is not None:
            regions["bm_band"] = bands
        regions["bm_keep"] = keep.transpose(1, 0, 2).astype(np.uint32)
        regions["bm_factor"] = factor.T
        if b.bitmap[1]:
            regions["bm_int8"] = _values_by_kind(A.int8_values, launch.bitmap_tiles, A.tile_slot, b.bitmap, 1, np.int8,
                                                 BITMAP_TILE_SHAPE)
        if b.bitmap[2]:
            regions["bm_fp16"] = _values_by_kind(A.fp16_values, launch.bitmap_tiles, A.tile_slot, b.bitmap, 2, np.float16,
                                                 BITMAP_TILE_SHAPE)

    # Entry slots: partition = entry e.
    if ne:
        et = launch.entry_tiles.reshape(-1)
        ecols = _gather_or(A.etile_cols, et, M)  # [S, 128]
        erows = _gather_or(A.etile_rows, et, 0)
        ekeep_words = _gather_or(A.etile_keep_bits, et, 0)  # [S, 4]
        word_of_entry = np.arange(TILE_COLS) // MASK_WORD_BITS
        ekeep = ekeep_words[:, word_of_entry]  # [S, 128]: the word holding entry e's bit
        efactor = _slot_factors(et, ecols, M, col_scale, A.etile_kind, A.etile_slot, A.etile_int8_scale)
        regions["en_cols"], bands = split_column_ids(ecols.T, M, b.wide_ids)
        if bands is not None:
            regions["en_band"] = bands
        regions["en_rows"] = erows.T.astype(np.uint8)
        regions["en_keep"] = ekeep.T.astype(np.uint32)
        regions["en_factor"] = efactor.T
        if b.entry[1]:
            regions["en_int8"] = _values_by_kind(A.etile_int8_values, launch.entry_tiles, A.etile_slot, b.entry, 1, np.int8,
                                                 ENTRY_TILE_SHAPE)
        if b.entry[2]:
            regions["en_fp16"] = _values_by_kind(A.etile_fp16_values, launch.entry_tiles, A.etile_slot, b.entry, 2, np.float16,
                                                 ENTRY_TILE_SHAPE)

    # List slots in pairs (slots 2j, 2j + 1 of a window): ids with partition = listed column k of the first tile or
    # 64 + k of the second; the other regions per slot, partition = entry e.
    if b.list_slots:
        nl = b.list_slots
        lt = launch.list_tiles.reshape(-1)
        listed = _gather_or(A.ltile_cols, lt, M)  # [S, 64]
        colslot = _gather_or(A.ltile_colslot, lt, 0)  # [S, 128]
        entry_cols = np.take_along_axis(listed, colslot.astype(np.int64), axis=1)  # column id of each entry
        live = np.arange(TILE_COLS)[None, :] < _gather_or(A.ltile_nentries, lt, 0)[:, None]
        entry_cols = np.where(live, entry_cols, M)
        lkeep_words = _gather_or(A.ltile_keep_bits, lt, 0)  # [S, 4]
        lkeep = lkeep_words[:, np.arange(TILE_COLS) // MASK_WORD_BITS]
        lfactor = _slot_factors(lt, entry_cols, M, col_scale, A.ltile_kind, A.ltile_slot, A.ltile_int8_scale)
        lfactor *= _list_entry_values(A, lt)
        second = (np.arange(lt.shape[0]) % nl) % 2 == 1  # the pair's second tile
        paired = np.full((b.windows, b.list_pairs * 2, LIST_COLS), M, dtype=np.int64)
        paired[:, :nl] = listed.reshape(b.windows, nl, LIST_COLS)
        paired = paired.reshape(b.windows * b.list_pairs, 2 * LIST_COLS)  # [W*NP, 128]
        regions["li_cols"], bands = split_column_ids(paired.T, M, b.wide_ids)
        if bands is not None:
            regions["li_band"] = bands
        regions["li_rows"] = _gather_or(A.ltile_rows, lt, 0).T.astype(np.uint8)
        regions["li_colslot"] = (colslot.astype(np.int64) + LIST_COLS * second[:, None]).T.astype(np.uint8)
        regions["li_keep"] = lkeep.T.astype(np.uint32)
        regions["li_factor"] = lfactor.T

    rows = launch_rows(A, launch)  # [W, 128]
    rscale = np.ones(rows.shape, dtype=np.float32)
    if A.row_scale is not None:
        valid = rows < N
        # a float16 scale vector (byte-ceiling encodes) is upcast exactly: the kernel reads fp32 factors either way
        rscale[valid] = A.row_scale[rows[valid]].astype(np.float32)
    regions["row_scale"] = rscale.T
    # the output row of each window slot in the form of the column ids (slots of no row: N -> 0xFFFF / band 255);
    # bands from N itself, as the kernel decides from Y's rows (a bucket built without wide_rows still packs right)
    wide_rows = uses_bands(N)
    regions["out_rows"], bands = split_column_ids(rows.T, N, wide_rows)
    if bands is not None:
        regions["out_band"] = bands
    if b.diagonal:
        # the diagonal entry of slot r's row i weighs col_scale[i] (its value 1; the row scale comes at evacuation)
        dfactor = np.zeros(rows.shape, dtype=np.float32)
        valid = rows < N
        dfactor[valid] = A.col_scale[rows[valid]].astype(np.float32) if A.col_scale is not None else 1.0
        regions["dg_factor"] = dfactor.T
    return {"metadata": pack_metadata(metadata_layout(b.windows, b.bitmap, b.entry, b.wide_ids, b.lists, wide_rows,
                                                      b.diagonal), regions)}


def _list_entry_values(A, tiles) -> np.ndarray:
    """``float32 [S, 128]`` value of every entry of the list slots ``tiles``: the INT8 value q (its tile scale is in
    the factor), the FP16 value, or 1 (BIN and padding)."""
    values = np.ones((tiles.shape[0], TILE_COLS), dtype=np.float32)
    kinds = _gather_or(A.ltile_kind, tiles, TileKind.BIN)
    slots = _gather_or(A.ltile_slot, tiles, -1)
    is8 = (tiles >= 0) & (kinds == TileKind.INT8)
    is16 = (tiles >= 0) & (kinds == TileKind.FP16)
    values[is8] = A.ltile_int8_values[slots[is8]].astype(np.float32)
    values[is16] = A.ltile_fp16_values[slots[is16]].astype(np.float32)
    return values


def pack_metadata(layout: dict, regions: dict) -> np.ndarray:
    """``int32 [128, layout["total"]]``: each region's bytes (partition-major) at its word offset."""
    blob = np.zeros((TILE_COLS, layout["total"]), dtype=np.int32)
    as_bytes = blob.view(np.uint8)
    for name, values in regions.items():
        start, words = layout[name]
        raw = np.ascontiguousarray(values).view(np.uint8).reshape(TILE_COLS, -1)
        if raw.shape[1] > WORD_BYTES * words:
            raise ValueError(f"metadata region {name!r} has {raw.shape[1]} B per partition; the layout holds {WORD_BYTES * words}")
        as_bytes[:, WORD_BYTES * start:WORD_BYTES * start + raw.shape[1]] = raw
    return blob


BITMAP_TILE_SHAPE = (TILE_COLS, WINDOW_ROWS)
ENTRY_TILE_SHAPE = (TILE_COLS,)


def _values_by_kind(values, tiles, tile_slot, counts, kind, dtype, tile_shape):
    """Values of the slots of one kind, zeros for padding: ``[128, W * count, *tile_shape[1:]]``, the
    tile's first axis (column k of a bitmap tile, entry e of an entry tile) on the partition axis."""
    W = tiles.shape[0]
    n = counts[kind]
    if n == 0:
        return np.zeros((tile_shape[0], 1, *tile_shape[1:]), dtype=dtype)
    start = sum(counts[:kind])
    sel = tiles[:, start:start + n].reshape(-1)
    out = np.zeros((W * n, *tile_shape), dtype=dtype)
    valid = sel >= 0
    out[valid] = values[tile_slot[sel[valid]]]
    return np.ascontiguousarray(np.swapaxes(out, 0, 1))
