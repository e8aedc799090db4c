"""The planners' fast pricing (``launch_cost(..., planning=True)``: one DMA model, memoized per-instruction and
per-transfer charges; ``_LaunchBuilder.program_ns``: each distinct program priced once) gives the figures and the
plans of the full mirror (``dste.nkisim.Profile`` accounting of both DMA models, every launch priced anew), and the
programs of one LNC launch share their correction shape.

Figures are compared for exact equality: the one-model profile adds the same floats in the same order as the
simulator's profile, so any difference is a bug, not rounding.
"""

import numpy as np
import pytest

import dste.kernels.mirror as mirror
from dste.data import make_graph
from dste.format import gcn_normalized, quantize_rows
from dste.kernels.correction import NO_CORRECTION, plan_corrections
from dste.kernels.launch_spmm import program_groups
from dste.kernels.plan import _LaunchBuilder, plan_launches, program_plan
from dste.reference.spmm import spmm_reference
from tests.kernels.error_bounds import BOUND_FP32_X, assert_within_bound
from tests.kernels.test_cost_mirror import ENTRY_CASES, _launch, _matrix, _x

_GRAPHS = {}


def _cora_like():
    if "cora" not in _GRAPHS:
        _GRAPHS["cora"] = gcn_normalized(make_graph("cora-like").adj, reorder="community")
    return _GRAPHS["cora"]


def _hybrid(A, F, fp16_fraction):
    X = np.random.default_rng(0).standard_normal((A.shape[1], F)).astype(np.float32)
    return quantize_rows(X, fp16_fraction=fp16_fraction)


@pytest.mark.parametrize("name,matrix,w0,n,size,F,x_mode,extra,with_bitmap", ENTRY_CASES, ids=[c[0] for c in ENTRY_CASES])
def test_one_model_profile_gives_the_full_profiles_figures(name, matrix, w0, n, size, F, x_mode, extra, with_bitmap):
    A = _matrix(matrix)
    launch = _launch(A, list(range(w0, w0 + n)), size, F, x_mode, extra, with_bitmap)
    corrections = [None]
    if x_mode == "int8-hybrid":
        X = _x(A, F, x_mode, fp16_fraction=0.1)
        plan = program_plan(plan_launches(A, F, x_mode, lnc=1), 1)
        plan.launches = [launch]
        jobs = plan_corrections(A, plan, X.hi_index, int(X.hi.shape[0]))
        corrections += [(job.shape, job.valid) for job in jobs if job.shape.tiles_per_group]
        assert len(corrections) > 1, "a hybrid case prices a correction pass too"
    for correction in corrections:
        full = mirror.launch_cost(A, launch, "trn2", correction)
        fast = mirror.launch_cost(A, launch, "trn2", correction, planning=True)
        assert fast.busy_ns() == full.busy_ns(mirror.PLANNER_DMA_MODEL)
        assert (fast.instructions, fast.transfers, fast.bytes) == (full.instructions, full.transfers, full.bytes)
    with pytest.raises(ValueError, match="optimistic"):
        fast.busy_ns("optimistic" if mirror.PLANNER_DMA_MODEL != "optimistic" else "descriptor")


def _use_the_full_mirror(monkeypatch):
    """Planners priced by the full, unmemoized mirror (what they priced before the fast path)."""
    full = mirror.launch_cost
    monkeypatch.setattr(mirror, "launch_cost",
                        lambda A, launch, target, correction=None, planning=False: full(A, launch, target, correction))
    monkeypatch.setattr(_LaunchBuilder, "program_ns",
                        lambda self, program: max(mirror.launch_cost(self.A, program, self.target).busy_ns().values()))


def _launch_arrays(plan):
    return [(l.bucket, l.windows.tolist(), l.bitmap_tiles.tolist(), l.entry_tiles.tolist(), l.list_tiles.tolist())
            for l in plan.launches]


def _job_arrays(jobs):
    return [(j.plan_index, j.shape, j.launch.windows.tolist(), j.valid.tolist(), j.entries.window.tolist(),
             j.entries.hi_pos.tolist()) for j in jobs]


@pytest.mark.parametrize("F,x_mode,lnc", [(64, "int8-hybrid", 2), (16, "int8-hybrid", 2), (64, "fp32", 1),
                                          (64, "int8-hybrid", 1)])
def test_fast_planning_makes_the_same_plans(monkeypatch, F, x_mode, lnc):
    A = _cora_like()
    X = _hybrid(A, F, 0.05) if x_mode == "int8-hybrid" else None

    def plans():
        plan = plan_launches(A, F, x_mode, lnc=lnc)
        jobs = plan_corrections(A, program_plan(plan, lnc), X.hi_index, int(X.hi.shape[0])) if X is not None else []
        return _launch_arrays(plan), _job_arrays(jobs)

    fast = plans()
    with monkeypatch.context() as m:
        _use_the_full_mirror(m)
        full = plans()
    assert fast == full
    if X is not None:
        assert any(shape.tiles_per_group for _, shape, *_ in fast[1]), "the FP16 rows need a correction pass"


def test_programs_of_one_launch_share_their_correction_shape():
    """cora-like, 5 % FP16 rows, LNC2: each launch's two programs get one correction shape (also a program whose
    windows hold no FP16-row entry), so every launch runs both programs and none beside an idle one."""
    A = _cora_like()
    X = _hybrid(A, 64, 0.05)
    plan = program_plan(plan_launches(A, 64, "int8-hybrid", lnc=2), 2)
    jobs = plan_corrections(A, plan, X.hi_index, int(X.hi.shape[0]))
    assert len(jobs) == len(plan.launches)  # no program was split
    for first in range(0, len(jobs), 2):
        assert jobs[first].shape == jobs[first + 1].shape
    assert any(job.shape != NO_CORRECTION for job in jobs)
    assert all(None not in group for group in program_groups(jobs, 2))


def test_the_launcher_plans_for_the_lnc_it_runs(monkeypatch):
    import dste.kernels.launch_spmm as launcher

    A = _matrix("three-kinds")
    X = _x(A, 16, "fp32")
    asked = []
    planner = launcher.plan_launches

    def recording(*args, **kwargs):
        asked.append(kwargs.get("lnc"))
        return planner(*args, **kwargs)

    monkeypatch.setattr(launcher, "plan_launches", recording)
    for lnc in (1, 2):
        Y = launcher.launch_spmm_hybrid(A, X, target="trn2", lnc=lnc)
        assert_within_bound(Y, spmm_reference(A, X), A, X, BOUND_FP32_X)
    assert asked == [1, 2]
