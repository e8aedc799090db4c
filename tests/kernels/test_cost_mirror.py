"""The planner's analytic mirror of the kernel (``dste.kernels.mirror.launch_cost``, which ``plan_launches`` and the
correction planner use to choose launches) charges each engine what the simulator's profile of the kernel charges.

Both are modelled figures under the optimistic DMA model (the mirror has no software-DGE descriptor time). The
mirror charges the kernel's instructions one by one with the same cost functions (``dste.nkisim.cost``); only
the order in which per-instruction figures are added can differ, so busy times agree to float rounding
(``rel=1e-9``, far below any figure's last printed digit) and instruction and transfer counts exactly.
"""

import numpy as np
import pytest
import scipy.sparse as sp

from dste.format import encode, gcn_normalized, quantize_rows
from dste.kernels.mirror import launch_cost
from dste.kernels.launch_spmm import launch_spmm_hybrid
from dste.kernels.plan import Bucket, Launch, LaunchPlan, program_plan, uses_bands

ENGINES = ("tensor", "vector", "scalar", "gpsimd", "dma")
WINDOW_ROWS = 128


def _three_kind_matrix(n_cols=1280):
    """Windows of BIN, then INT8-or-FP16, then wide-range (FP16-or-INT8) values in turn (rows in their own order,
    ``kinds="auto"``), so launches over consecutive windows hold bitmap and entry tiles of all three kinds."""
    rng = np.random.default_rng(0)
    n = 1280
    adj = sp.random(n, n_cols, density=0.01 * 1280 / n_cols, random_state=rng, format="coo")
    window = adj.row // WINDOW_ROWS
    values = np.where(window % 3 == 0, 1.0,
                      np.where(window % 3 == 1, rng.uniform(0.5, 1.0, adj.nnz), rng.lognormal(0, 2, adj.nnz)))
    matrix = sp.csr_matrix((values.astype(np.float32), (adj.row, adj.col)), shape=(n, n_cols))
    return encode(matrix, kinds="auto", bitmap_min_entries=3)


_MATRICES = {}


def _matrix(name):
    if name not in _MATRICES:
        if name == "three-kinds":
            _MATRICES[name] = _three_kind_matrix()
        elif name == "banded-ids":  # 70,000 X rows: every column id carries a band
            _MATRICES[name] = _three_kind_matrix(70_000)
        elif name == "lists":
            rng = np.random.default_rng(3)
            adj = sp.random(1024, 1024, density=0.012, random_state=rng, format="csr")
            _MATRICES[name] = gcn_normalized(((adj + adj.T) > 0).astype(np.float32), reorder="rcm", list_tiles=True)
    return _MATRICES[name]


def _window_tiles(ptr, kinds, w):
    """Tile ids of window ``w`` per kind (BIN, INT8, FP16)."""
    tiles = np.arange(ptr[w], ptr[w + 1])
    return [tiles[kinds[tiles] == k] for k in range(3)]


def _launch(A, windows, n_windows, F, x_mode, extra_entry=(0, 0, 0), with_bitmap=True):
    """A launch of ``windows`` (then padding windows up to ``n_windows``) whose slot counts are each kind's most
    per window, plus ``extra_entry`` padding entry slots per kind; bitmap slots dropped unless ``with_bitmap``."""
    bitmap = [_window_tiles(A.window_ptr, A.tile_kind, w) for w in windows]
    entry = [_window_tiles(A.ewindow_ptr, A.etile_kind, w) for w in windows]
    lists = [np.arange(A.lwindow_ptr[w], A.lwindow_ptr[w + 1]) for w in windows]
    nb = tuple(max(len(t[k]) for t in bitmap) if with_bitmap else 0 for k in range(3))
    ne = tuple(max(len(t[k]) for t in entry) + extra_entry[k] for k in range(3))
    nl = max(len(t) for t in lists)
    nl += nl % 2
    bucket = Bucket(n_windows, nb, ne, F, x_mode, uses_bands(A.shape[1]), nl)
    bt = np.full((n_windows, sum(nb)), -1, np.int64)
    et = np.full((n_windows, sum(ne)), -1, np.int64)
    lt = np.full((n_windows, nl), -1, np.int64)
    for i in range(len(windows)):
        for out, per_kind, counts in ((bt, bitmap[i], nb), (et, entry[i], ne)):
            offset = 0
            for k in range(3):
                tiles = per_kind[k][:counts[k]]
                out[i, offset:offset + len(tiles)] = tiles
                offset += counts[k]
        lt[i, :len(lists[i])] = lists[i]
    ids = np.full(n_windows, -1, np.int64)
    ids[:len(windows)] = windows
    return Launch(bucket, ids, bt, et, lt)


_OPERANDS = {}


def _x(A, F, x_mode, fp16_fraction=0.0):
    key = (A.shape[1], F, x_mode, fp16_fraction)
    if key not in _OPERANDS:
        _OPERANDS[key] = _new_x(A, F, x_mode, fp16_fraction)
    return _OPERANDS[key]


def _new_x(A, F, x_mode, fp16_fraction):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((A.shape[1], F)).astype(np.float32)
    if x_mode == "int8-hybrid":
        return quantize_rows(X, fp16_fraction=fp16_fraction)
    if x_mode == "bf16":
        import ml_dtypes

        return X.astype(ml_dtypes.bfloat16)
    return X.astype(np.float16) if x_mode == "fp16" else X


def _mirror_busy(costs, model):
    """Per-engine busy ns of the programs of one launch, added as the simulator merges programs run side by side
    (compute engines and each DMA lane add), and the slowest program's bound."""
    busy = {e: sum(c.busy_ns(model)[e] for c in costs) for e in ENGINES if e != "dma"}
    busy["dma"] = max(np.sum([c.profile.dma_queue_ns_by_model[model] for c in costs], axis=0))
    slowest = max(max(c.busy_ns(model).values()) for c in costs)
    return busy, slowest


def _assert_mirror_equals_trace(A, launch, X, lnc):
    plan = LaunchPlan(tuple(A.shape), launch.bucket.features, launch.bucket.x_mode, [launch])
    _, prof = launch_spmm_hybrid(A, X, target="trn2", profile=True, plan=plan, lnc=lnc)
    costs = [launch_cost(A, part, "trn2") for part in program_plan(plan, lnc).launches]
    for model in ("optimistic", "descriptor"):
        traced = prof.engine_busy_ns(model)
        busy, slowest = _mirror_busy(costs, model)
        for engine in ENGINES:
            assert busy[engine] == pytest.approx(traced[engine], rel=1e-9), (model, engine)
        assert slowest == pytest.approx(prof.latency_us(model) * 1000.0, rel=1e-9), model
    assert sum(c.instructions for c in costs) == prof.total_instructions
    assert sum(c.transfers for c in costs) == prof.dma_transfers
    assert sum(c.bytes for c in costs) == prof.dma_bytes


ENTRY_CASES = [
    # name, matrix, first window, windows, launch windows, F, X mode, extra entry slots, bitmap slots
    ("bin-entries-fp32", "three-kinds", 0, 1, 1, 64, "fp32", (0, 0, 0), True),
    ("int8-entries-hybrid", "three-kinds", 1, 1, 1, 64, "int8-hybrid", (0, 0, 0), True),
    ("fp16-entries-bf16", "three-kinds", 2, 1, 1, 32, "bf16", (0, 0, 0), True),
    ("all-kinds-fp32", "three-kinds", 0, 3, 4, 64, "fp32", (0, 0, 0), True),
    ("all-kinds-hybrid", "three-kinds", 0, 6, 8, 128, "int8-hybrid", (0, 0, 0), True),
    ("all-kinds-fp16-padded", "three-kinds", 3, 3, 3, 16, "fp16", (1, 2, 3), True),
    ("entries-only-hybrid", "three-kinds", 0, 4, 4, 64, "int8-hybrid", (2, 0, 1), False),
    ("entries-only-fp32-many", "three-kinds", 0, 2, 2, 64, "fp32", (8, 8, 8), False),
    ("groups-of-slots-hybrid", "three-kinds", 0, 3, 3, 1024, "int8-hybrid", (8, 8, 8), True),
    ("groups-of-slots-fp32", "three-kinds", 2, 3, 3, 1024, "fp32", (4, 4, 4), True),
    ("banded-ids-hybrid", "banded-ids", 0, 3, 4, 16, "int8-hybrid", (0, 0, 0), True),
    ("banded-ids-fp32", "banded-ids", 0, 3, 3, 32, "fp32", (1, 0, 0), True),
    ("lists-and-entries-hybrid", "lists", 0, 4, 4, 64, "int8-hybrid", (1, 0, 0), True),
    ("lists-and-entries-fp32", "lists", 2, 3, 4, 128, "fp32", (0, 0, 0), True),
]


@pytest.mark.parametrize("lnc", [1, 2])
@pytest.mark.parametrize("name,matrix,w0,n,size,F,x_mode,extra,with_bitmap", ENTRY_CASES, ids=[c[0] for c in ENTRY_CASES])
def test_mirror_equals_the_trace_per_engine(name, matrix, w0, n, size, F, x_mode, extra, with_bitmap, lnc):
    A = _matrix(matrix)
    launch = _launch(A, list(range(w0, w0 + n)), size, F, x_mode, extra, with_bitmap)
    b = launch.bucket
    assert b.entry_slots, "every case has entry slots"
    if name.startswith("all-kinds") or name.startswith("groups"):
        assert all(b.entry) and all(b.bitmap), b  # every kind of entry and bitmap slot
    if name.startswith("groups"):
        assert b.slots_per_window > b.group_size()  # a window's slots run in several groups
    if name.startswith("lists"):
        assert b.list_slots
    _assert_mirror_equals_trace(A, launch, _x(A, F, x_mode), lnc)


@pytest.mark.parametrize("x_mode_extra", [(0, 0, 0), (2, 1, 0)])
def test_mirror_with_the_fp16_row_correction_pass_equals_the_trace(x_mode_extra):
    """A hybrid X with FP16 rows adds the correction pass (``CorrectionCost``): its builds alternate between a
    VectorE tensor_scalar and two GpSimd tensor_tensor; launches run one after another (LNC1), so engine time,
    DMA lanes and the overlapped bound add over the call's jobs."""
    from dste.kernels.correction import plan_corrections

    A = _matrix("three-kinds")
    F = 64
    launch = _launch(A, list(range(0, 6)), 8, F, "int8-hybrid", x_mode_extra)
    X = _x(A, F, "int8-hybrid", fp16_fraction=0.1)
    plan = LaunchPlan(tuple(A.shape), F, "int8-hybrid", [launch])
    _, prof = launch_spmm_hybrid(A, X, target="trn2", profile=True, plan=plan, lnc=1)
    jobs = plan_corrections(A, plan, X.hi_index, int(X.hi.shape[0]), "trn2")
    assert any(job.shape.tiles_per_group for job in jobs)
    costs = [launch_cost(A, job.launch, "trn2", (job.shape, job.valid)) for job in jobs]
    for model in ("optimistic", "descriptor"):
        traced = prof.engine_busy_ns(model)
        busy = {e: sum(c.busy_ns(model)[e] for c in costs) for e in ENGINES if e != "dma"}
        busy["dma"] = max(np.sum([c.profile.dma_queue_ns_by_model[model] for c in costs], axis=0))
        for engine in ENGINES:
            assert busy[engine] == pytest.approx(traced[engine], rel=1e-9), (model, engine)
        total = sum(max(c.busy_ns(model).values()) for c in costs)
        assert total == pytest.approx(prof.latency_us(model) * 1000.0, rel=1e-9), model
    assert sum(c.instructions for c in costs) == prof.total_instructions
    assert sum(c.bytes for c in costs) == prof.dma_bytes
