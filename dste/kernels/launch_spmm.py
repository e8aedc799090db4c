"""Host launcher of the ``spmm_hybrid`` NKI kernel (``spmm_hybrid.py``): Y = A @ X for a DSTE matrix A.

``launch_spmm_hybrid(A, X)`` validates the inputs, plans fixed-shape launches (``plan_launches``),
packs each launch's arrays once per matrix (cached on the plan), runs the kernel once per
launch (on the real device when ``nki`` is importable, else in ``dste.nkisim``); each launch writes its
windows' output rows into one ``Y`` at their original row ids (the kernel scatters them, named by the
16-bit row ids of its metadata blob), windows with no tiles leaving zeros.

X is a dense ``[M, F]`` array (float32, bfloat16 or float16; float64 is taken as float32) or a
:class:`dste.format.HybridRows`. The kernel's relative error bound (2^-8 per bf16 rounding) holds for values at or
above float32's smallest normal, 1.18e-38: below it bf16 keeps fewer bits (the simulator rounds to bf16's subnormals;
whether the device flushes them to zero is an assumption not sourced in the NKI docs), and float64 values below
float32's range become 0 in the cast. Such values are accepted, off the bound, by an absolute 1.2e-38 x |a| per term.
A hybrid X is gathered as one record per row (``int8 values | fp32 scale``, built here from the HybridRows arrays)
so that one indirect DMA per tile brings both the values and their scale. FP16 rows (q = 0 and
scale 0 in their records) are added by the correction pass: per call, the entries of A whose column
is an FP16 row are listed and packed into correction tiles (``dste.kernels.correction``), one
correction blob per launch.
"""

from __future__ import annotations

import weakref

import numpy as np

from dste.kernels.correction import plan_corrections
from dste.kernels.plan import (
    MAX_FEATURES,
    MAX_FEATURES_WITH_LISTS,
    LaunchPlan,
    check_lnc,
    check_plan_matches,
    feature_chunks,
    pack_launch,
    plan_launches,
    program_plan,
    record_width,
)

__all__ = ["launch_spmm_hybrid", "plan_launches", "x_mode_of", "hybrid_records", "LaunchPlan"]


BF16_ROUNDS_TO_INF = 2.0**127 * (2 - 2.0**-8)
"""Smallest magnitude that rounds (to nearest even) to bf16 Inf: bf16's largest finite value plus half its ulp."""


def _kernel(backend):
    from dste.kernels.device import kernel_module as load

    return load("spmm_hybrid", backend).spmm_hybrid_kernel


def x_mode_of(X) -> str:
    """``"int8-hybrid"`` for HybridRows, else the dense dtype name (fp32 / bf16 / fp16)."""
    import ml_dtypes

    from dste.format import HybridRows

    if isinstance(X, HybridRows):
        return "int8-hybrid"
    dtype = np.dtype(str(X.dtype).replace("torch.", "")) if _is_torch(X) and "bfloat16" not in str(X.dtype) else (
        np.dtype(ml_dtypes.bfloat16) if _is_torch(X) else np.asarray(X).dtype
    )
    if dtype in (np.float32, np.float64):
        return "fp32"
    if dtype == np.dtype(ml_dtypes.bfloat16):
        return "bf16"
    if dtype == np.float16:
        return "fp16"
    raise TypeError(f"X dtype {dtype} is not supported; allowed: float32 (float64 is cast), bfloat16, float16, or HybridRows")


def _is_torch(value):
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")


def hybrid_records(X) -> np.ndarray:
    """``int8 [M, Fq + 4]``: each row's int8 values (padded to 4 B) and fp32 scale (0 for FP16 rows)."""
    M, F = X.q.shape
    width = record_width(F)
    fq = width - 4
    rec = np.zeros((M, width), dtype=np.int8)
    rec[:, :F] = X.q
    rec[:, fq:fq + 4] = np.ascontiguousarray(X.scale.astype(np.float32)).view(np.int8).reshape(M, 4)
    return rec


def _torch_to_numpy(t):
    import ml_dtypes

    t = t.detach().cpu()
    if "bfloat16" in str(t.dtype):
        return t.float().numpy().astype(ml_dtypes.bfloat16)
    return t.numpy()


def _validate(A, X):
    from dste.format import DSTEMatrix, HybridRows

    if not isinstance(A, DSTEMatrix):
        raise TypeError(f"A must be a DSTEMatrix, got {type(A).__name__}")
    N, M = A.shape
    if isinstance(X, HybridRows):
        X.validate()
        if X.q.shape[0] != M:
            raise ValueError(f"X has {X.q.shape[0]} rows; A of shape {A.shape} needs M = {M}")
        return X, X.q.shape[1]
    if _is_torch(X):
        X = _torch_to_numpy(X)
    X = np.asarray(X)
    if not X.dtype.isnative:  # big-endian data read from a file: the same values in this machine's byte order
        X = X.astype(X.dtype.newbyteorder("="))
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D [M, F], got shape {X.shape}")
    if X.shape[0] != M:
        raise ValueError(f"X has {X.shape[0]} rows; A of shape {A.shape} needs M = {M}")
    x_mode_of(X)
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or Inf; spmm_hybrid needs finite inputs")
    if X.dtype == np.float64:
        with np.errstate(over="ignore"):  # an overflow is refused below, as such
            X = X.astype(np.float32)
        if not np.isfinite(X).all():
            raise ValueError("X holds float64 values beyond float32's range (3.4e38), the kernel's X dtype; "
                             "rescale X")
    if X.dtype == np.float32 and X.size:
        largest = float(np.abs(X).max())
        if largest >= BF16_ROUNDS_TO_INF:
            # the gather rounds fp32 X to the bf16 moving operand: such a value becomes Inf, and Inf x the stationary's
            # zeros NaN in every row of each window that gathers it
            raise ValueError(f"X holds a value of magnitude {largest:.8g}, which the kernel's bf16 gather rounds to "
                             f"Inf (values from {BF16_ROUNDS_TO_INF:.8g} on; bf16's largest is 3.3895314e38); "
                             "rescale X")
    return np.ascontiguousarray(X), X.shape[1]


def _check_matrix_finite(A):
    for name in ("int8_scale", "etile_int8_scale", "ltile_int8_scale", "row_scale", "col_scale"):
        value = getattr(A, name)
        if value is not None and value.size and not np.isfinite(value).all():
            raise ValueError(f"A.{name} contains NaN or Inf")
    for name in ("fp16_values", "etile_fp16_values", "ltile_fp16_values"):
        value = getattr(A, name)
        if value.size and not np.isfinite(value).all():
            raise ValueError(f"A.{name} contains NaN or Inf")
    M = A.shape[1]
    for name, ncount in (("tile_cols", A.tile_ncols), ("etile_cols", A.etile_nentries), ("ltile_cols", A.ltile_ncols)):
        cols = getattr(A, name)
        if cols.size:
            used = np.arange(cols.shape[1])[None, :] < ncount[:, None]
            if (cols[used] < 0).any() or (cols[used] >= M).any():
                raise ValueError(f"A.{name} holds column ids outside [0, {M})")


def _check_stationary_range(A) -> None:
    """Refuse a stored value whose product with its column scale the kernel's bf16 stationary rounds to Inf (as
    ``_validate`` refuses such an X): Y would come back Inf, and NaN where that column's X row is 0. On a bound from
    the tiles' value arrays first; per entry only when the bound does not settle it."""
    from dste.format.encoder import stored_magnitude_bounds

    _, largest = stored_magnitude_bounds(A)
    column = 1.0 if A.col_scale is None or not A.col_scale.size else float(np.abs(A.col_scale.astype(np.float64)).max())
    if largest * column < BF16_ROUNDS_TO_INF:
        return
    stored = A.decode(effective=False, scaled=False)
    weight = np.abs(stored.data) * (1.0 if A.col_scale is None else np.abs(A.col_scale.astype(np.float64))[stored.indices])
    if weight.size and weight.max() >= BF16_ROUNDS_TO_INF:
        entry = int(np.argmax(weight))
        row = int(np.searchsorted(stored.indptr, entry, side="right") - 1)
        raise ValueError(
            f"A's entry ({row}, {int(stored.indices[entry])}) is {float(weight[entry]):.8g} in magnitude before its "
            f"row scale, which the kernel's bf16 stationary rounds to Inf (values from {BF16_ROUNDS_TO_INF:.8g} on; "
            "bf16's largest is 3.3895314e38); rescale A (a row scale is applied in fp32, after the product)"
        )


def packed_launches(A, plan: LaunchPlan) -> list[dict]:
    """Per-launch kernel arrays (the metadata blob), cached on the plan for the matrix they were packed from (they
    depend on A and the plan only): another matrix of the same tiles (a new keep-mask) is packed anew."""
    if plan.packed_launch_arrays is None or plan.packed_for is None or plan.packed_for() is not A:
        plan.packed_launch_arrays = [pack_launch(A, launch) for launch in plan.launches]
        plan.packed_for = weakref.ref(A)
    return plan.packed_launch_arrays


def require_indirect_dma(target: str, kernel: str) -> None:
    """Refuse targets without indirect DMA: the kernel gathers (or scatters) X rows with ``vector_offset``
    DMAs, which software DGE supports from NeuronCore-v3 (trn2) on (``nki/deep-dives/nki-dge.rst``, DGE
    mode table: swdge "Any (indirect: v3+)")."""
    from dste.nkisim import cost

    if cost.normalize_target(target) == "trn1":
        raise ValueError(
            f"{kernel} gathers rows with indirect (vector_offset) DMAs, which need NeuronCore-v3 or newer; "
            f"target {target!r} is NeuronCore-v2 (allowed: 'trn2')"
        )


def default_lnc(target: str) -> int:
    """Logical cores per launch: 2 on trn2, whose runtime defaults to LNC2 (a launch of another size is
    a runtime error there), 1 on trn1/inf2 (one physical core per logical core)."""
    from dste.nkisim import cost

    return 2 if cost.normalize_target(target) == "trn2" else 1


def program_groups(jobs, lnc: int) -> list[list]:
    """The jobs (of a :func:`~dste.kernels.plan.program_plan`) as launches of ``lnc`` programs each:
    consecutive jobs of one compile-time shape (bucket and correction shape) share a launch; a job left
    without a partner (its correction pass needed another shape) runs beside an idle program (``None``:
    all padding windows, no output rows)."""
    groups = []
    for job in jobs:
        key = (job.launch.bucket, job.shape)
        if groups and len(groups[-1][1]) < lnc and groups[-1][0] == key:
            groups[-1][1].append(job)
        else:
            groups.append((key, [job]))
    return [members + [None] * (lnc - len(members)) for _, members in groups]


def _idle_metadata(A, bucket) -> np.ndarray:
    """The metadata blob of a launch whose windows are all padding (every gather skipped, every factor 0)."""
    return pack_launch(A, _idle_launch(bucket))["metadata"]


def _idle_launch(bucket):
    from dste.kernels.plan import Launch

    return Launch(bucket, np.full(bucket.windows, -1, np.int64),
                  np.full((bucket.windows, bucket.bitmap_slots), -1, np.int64),
                  np.full((bucket.windows, bucket.entry_slots), -1, np.int64),
                  np.full((bucket.windows, bucket.list_slots), -1, np.int64))


def _idle_job(lead):
    """A correction job of ``lead``'s shape with no entries (its blob only pads)."""
    from dste.kernels.correction import CorrectionJob, empty_entries

    return CorrectionJob(_idle_launch(lead.launch.bucket), None, lead.shape, empty_entries(), np.zeros(0, np.int64))


def launch_spmm_hybrid(A, X, *, target: str = "trn2", profile: bool = False, plan: LaunchPlan | None = None,
                lnc: int | None = None, backend: str = "nkisim", correction_jobs=None):
    """Y = A @ X (float32 [N, F], original row order) computed by the NKI kernel, one launch per chunk.

    Args:
      A: a :class:`dste.format.DSTEMatrix` of shape [N, M].
      X: dense [M, F] float32/bfloat16/float16 (NumPy or CPU torch) or a ``HybridRows``.
      target: ``"trn2"`` (default); ``"trn1"``/``"inf2"`` are refused (no indirect DMA, see ``require_indirect_dma``).
      profile: also return the merged ``dste.nkisim`` profile (modelled figures).
      plan: a plan from :func:`plan_launches` to reuse (its packed arrays are cached on it); one plan
      serves every X of its feature width and mode, with or without FP16 rows.
      lnc: logical cores per launch, 1 or 2 (default :func:`default_lnc`: 2 on trn2). Under LNC2 each of
      the plan's launches runs as one ``kernel[2]`` launch whose two programs take half of its windows each
      (:func:`dste.kernels.plan.program_plan`; two physical cores: the profile takes the slower program's
      time).
      backend: ``"nkisim"`` (the simulator; ``profile`` is modelled) or ``"neuron"`` (the same kernel
      file through the real ``nki.jit`` on a Neuron device; ``profile`` is then the measured wall time,
      a :class:`dste.kernels.device.DeviceTiming`).
      correction_jobs: the launches to run, each with its correction shape (``plan_corrections`` jobs of ``plan``
      cut for ``lnc``, for this X); default: planned here. The cost model passes one job to trace its shape with
      the correction shape it was priced with (planned alone at LNC1 it may get another).
    """
    from dste.format import HybridRows
    from dste.nkisim import Profile

    require_indirect_dma(target, "spmm_hybrid_kernel")
    X, F = _validate(A, X)
    if F < 1:
        raise ValueError(f"X has no columns (F={F}); spmm_hybrid needs 1 <= F")
    widest = max_features_of(A)
    if F > widest:
        if plan is not None:
            raise ValueError(f"F={F} runs as column blocks of at most {widest}, each with its own plan; "
                             "pass plan=None")
        return _column_blocks(A, X, F, target=target, profile=profile, lnc=lnc, backend=backend)
    _check_matrix_finite(A)
    _check_stationary_range(A)
    hybrid = isinstance(X, HybridRows)
    mode = "int8-hybrid" if hybrid else x_mode_of(X)
    n_hi = int(X.hi.shape[0]) if hybrid else 0
    lnc = default_lnc(target) if lnc is None else check_lnc(lnc)
    if plan is None:
        plan = plan_launches(A, F, mode, target=target, lnc=lnc)  # priced as the launches will run
    elif not isinstance(plan, LaunchPlan):
        raise TypeError(f"plan must be a LaunchPlan from plan_launches(A, F, x_mode), got {type(plan).__name__}")
    elif (plan.features, plan.x_mode, plan.shape) != (F, mode, tuple(A.shape)):
        raise ValueError(
            f"plan was made for F={plan.features}, x_mode={plan.x_mode}, shape={plan.shape}; "
            f"this call needs F={F}, x_mode={mode}, shape={tuple(A.shape)}"
        )
    else:
        check_plan_matches(plan, A)
    from dste.kernels.device import launch

    kernel = _kernel(backend)
    N = A.shape[0]
    if hybrid:
        x_rows = hybrid_records(X)
        x_hi = np.ascontiguousarray(X.hi.astype(np.float16)) if n_hi else np.zeros((1, F), np.float16)
    else:
        x_rows = X
        x_hi = np.zeros((1, 1), np.float16)
    Y = np.zeros((N, F), dtype=np.float32)
    profiles = []
    plan = program_plan(plan, lnc)
    packed = packed_launches(A, plan)
    if correction_jobs is not None:
        jobs = list(correction_jobs)
    elif hybrid:
        jobs = plan_corrections(A, plan, X.hi_index, n_hi, target)
    else:
        jobs = plan_corrections(A, plan, None, 0, target)

    def metadata_of(job):
        if job is None:
            return None
        return packed[job.plan_index]["metadata"] if job.plan_index is not None else pack_launch(A, job.launch)["metadata"]

    for programs in program_groups(jobs, lnc):
        lead = programs[0]
        b, shape = lead.launch.bucket, lead.shape
        metadata = np.concatenate([metadata_of(job) if job is not None else _idle_metadata(A, b) for job in programs])
        if shape.tiles_per_group:
            corrections = np.concatenate([
                (job if job is not None else _idle_job(lead)).blob(n_hi) for job in programs])
        else:
            corrections = np.zeros((128 * lnc, 1), np.int32)
        args = (
            x_rows, x_hi, metadata, Y,
            b.windows, *b.bitmap, *b.entry, F, int(hybrid), b.group_size(),
            corrections, shape.group_windows, shape.tiles_per_group, b.lists, int(b.diagonal),
        )
        # the kernel writes its windows' rows into Y at their original rows (its blob names them); the simulator
        # updates Y in place and returns it, a device returns its copy
        written, prof = launch(kernel, args, lnc=lnc, target=target, backend=backend)
        if written is not Y:
            Y[...] = written
        profiles.append(prof)
    if not profile:
        return Y
    if backend == "neuron":
        timing = profiles[0]
        for other in profiles[1:]:
            timing = timing.merge(other)
        return Y, timing
    merged = Profile.merge_all(profiles) if profiles else Profile(target)
    if not profiles:
        merged.launches = 0
    return Y, merged


del feature_chunks


def max_features_of(A) -> int:
    """Widest F one launch takes for A: ``MAX_FEATURES``, or ``MAX_FEATURES_WITH_LISTS`` when A holds list tiles
    (their stationaries are built in a PSUM bank of their own)."""
    return MAX_FEATURES_WITH_LISTS if int(A.n_ltiles) else MAX_FEATURES


def feature_blocks(n_features: int, widest: int = MAX_FEATURES) -> list[tuple[int, int]]:
    """``[(first column, width)]``: X's columns in blocks of at most ``widest`` (one window's fp32
    accumulator must fit the 8 PSUM banks), as even as possible and each a multiple of 512 but the last."""
    n_blocks = -(-n_features // widest)
    width = -(-(-(-n_features // n_blocks)) // 512) * 512
    return [(c0, min(width, n_features - c0)) for c0 in range(0, n_features, width)]


def _column_blocks(A, X, F, **options):
    """Y = A @ X for F > MAX_FEATURES: one call per column block of X, results side by side, launches in
    sequence (their profiles add)."""
    from dste.format import HybridRows

    outputs, records = [], []
    for c0, width in feature_blocks(F, max_features_of(A)):
        if isinstance(X, HybridRows):
            block = HybridRows(q=np.ascontiguousarray(X.q[:, c0:c0 + width]), scale=X.scale, hi_rows=X.hi_rows,
                               hi=np.ascontiguousarray(X.hi[:, c0:c0 + width]), hi_index=X.hi_index)
        else:
            block = np.ascontiguousarray(X[:, c0:c0 + width])
        result = launch_spmm_hybrid(A, block, **options)
        if options.get("profile"):
            result, record = result
            records.append(record)
        outputs.append(result)
    Y = np.concatenate(outputs, axis=1)
    if not options.get("profile"):
        return Y
    merged = records[0]
    for record in records[1:]:
        merged = merged.merge(record)
    return Y, merged
