"""Analytic cost of ``spmm_hybrid`` on a whole matrix, without simulating it (all figures *modelled*).

``estimate_spmm`` walks the launch plan and charges every instruction the kernel issues with the
same cost functions the simulator's profile uses (``dste.nkisim.cost``): TensorE, VectorE,
ScalarE and GpSimd cycles per instruction, and every DMA transfer (fixed cost + bytes / queue
bandwidth) on the 16 DMA lanes exactly as the profile does (``dste.nkisim.cost.dma_charge``). Gathers move bytes only for
in-range ids, as in the simulator. A launch takes as long as its busiest engine or queue (the
profile's "overlapped" bound); launches run one after another. So on any graph small enough to
simulate, the estimate equals the simulator's profile up to the bytes of FP16 rows, which the
estimate knows only when X is given.

Also:

- ``estimate_block_layout``: the same product with fixed 128x128 block columns (no column
  condensing), as block-sparse (BSR) Trainium kernels store it: each nonzero block holds dense
  bf16 values and multiplies 128 consecutive X rows.
- ``estimate_edge_gather``: a per-edge gather kernel (one X row per edge, 128 edges per matmul
  as a scatter-add through TensorE), i.e. the entry-tile path for every edge.
- ``roofline``: the format's own lower bound, max(DMA bytes / peak bandwidth, TensorE cycles), over the
  ``lnc`` NeuronCores a launch runs on (each with its own DMA queues and TensorE).

The two baselines run on as many cores as ``spmm_hybrid``'s launch (``lnc``, default ``default_lnc``: 2 on trn2),
their blocks, edges and windows split evenly between them: at LNC2 the kernel's latency is its slower core's, so a
baseline priced on one core would look twice as slow as it is (and the roofline twice as high).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np

from dste.kernels.correction import correction_buffer_tiles, plan_corrections
from dste.kernels.mirror import (
    BF16,
    F16,
    F32,
    X_ITEMSIZE,
    LaunchCost,
    list_valid_counts,
    output_rows,
    valid_counts,
)
from dste.kernels.plan import (
    LAUNCH_SETUP_INSTRUCTIONS,
    X_MODES,
    LaunchPlan,
    check_lnc,
    check_plan_matches,
    feature_chunks,
    launch_instructions,
    plan_launches,
    program_plan,
    record_width,
    uses_bands,
)
from dste.nkisim import cost as nc


@dataclass
class SpmmEstimate:
    """Modelled cost of one Y = A @ X (every time is modelled for ``target``, never measured)."""

    target: str
    layout: str
    x_mode: str
    features: int
    n_tiles: int
    n_slots: int
    launches: int
    instructions: int
    max_instructions_per_launch: int
    dma_transfers: int
    dma_bytes: int
    engine_busy_us: dict = field(default_factory=dict)
    latency_us: float = 0.0
    roofline_us: float = 0.0
    latency_optimistic_us: float = 0.0  # the same launches with every DMA byte at peak (modelled)
    traced_shapes: int = 0  # launch shapes simulated to derive this estimate (0: analytic baseline)
    dma_model: str = nc.DEFAULT_DMA_MODEL
    modelled: bool = True

    def to_dict(self) -> dict:
        d = asdict(self)
        d["label"] = f"modelled, {self.target}"
        return d

    def __str__(self) -> str:
        busy = ", ".join(f"{k} {v:.1f}" for k, v in self.engine_busy_us.items())
        return (
            f"{self.layout} spmm, F={self.features}, X {self.x_mode}: {self.latency_us:.1f} us modelled on {self.target} "
            f"(roofline {self.roofline_us:.1f} us; {self.n_tiles} tiles in {self.n_slots} slots, {self.launches} launches, "
            f"{self.instructions} instructions, {self.dma_transfers} DMA transfers, {self.dma_bytes / 1e6:.1f} MB; busy us: {busy})"
        )


def _summarise(launch_costs, target, layout, x_mode, F, n_tiles, n_slots, max_instr, roofline, parallel=False):
    """``launch_costs`` run one after another, or (``parallel``) as the programs of one launch, which takes as long
    as its slowest program."""
    busy_total = {e: 0.0 for e in nc.ENGINES + ("dma",)}
    latency_ns = 0.0
    for c in launch_costs:
        busy = c.busy_ns()
        latency_ns = max(latency_ns, max(busy.values())) if parallel else latency_ns + max(busy.values())
        for k, v in busy.items():
            busy_total[k] += v
    return SpmmEstimate(
        target=nc.normalize_target(target),
        layout=layout,
        x_mode=x_mode,
        features=int(F),
        n_tiles=int(n_tiles),
        n_slots=int(n_slots),
        launches=1 if parallel else len(launch_costs),
        instructions=int(sum(c.instructions for c in launch_costs)),
        max_instructions_per_launch=int(max_instr),
        dma_transfers=int(sum(c.transfers for c in launch_costs)),
        dma_bytes=int(sum(c.bytes for c in launch_costs)),
        engine_busy_us={k: v / 1000.0 for k, v in busy_total.items()},
        latency_us=latency_ns / 1000.0,
        roofline_us=roofline,
    )


def roofline_us(dma_bytes, matmul_cycles, target="trn2", cores: int = 1) -> float:
    """max(bytes / peak DMA bandwidth, TensorE cycles / clock) over ``cores`` NeuronCores sharing the work evenly, in
    microseconds (modelled)."""
    if isinstance(cores, bool) or not isinstance(cores, (int, np.integer)) or cores < 1:
        raise ValueError(f"cores must be an int >= 1, got {cores!r}")
    bw = nc.constant("dma_peak_gbps_per_nc", target)  # GB/s = B/ns
    return max(dma_bytes / bw, nc.cycles_to_ns(matmul_cycles, "tensor", target)) / 1000.0 / int(cores)


def estimate_spmm(A, F: int, x_mode: str = "fp32", target: str = "trn2", *, X=None, hi_fraction: float = 0.0,
                  plan=None, lnc: int | None = None, traces: TraceBook | None = None) -> SpmmEstimate:
    """Modelled cost of ``spmm_hybrid(A, X)`` on ``target``, derived by tracing the kernel itself.

    The launcher's own jobs (``plan_launches`` + ``plan_corrections``) are grouped by compile-time shape
    (bucket and correction shape); one job of each shape runs through ``spmm_hybrid(..., profile=True)``
    in the simulator (kept in ``traces``, a :class:`TraceBook`, else on ``plan``), and every other job of that shape
    is priced as its traced twin plus the bytes of the gathered rows in which they differ (padding ids
    are skipped and move no bytes). Launches of ``lnc`` programs (default: the launcher's
    ``default_lnc``) take their slowest program's time; launches run one after another.

    ``x_mode``: ``"fp32"``, ``"bf16"``, ``"fp16"`` or ``"int8-hybrid"``. For a hybrid X, pass ``X``
    (HybridRows) to price its FP16-row correction pass exactly, or ``hi_fraction`` (share of FP16
    rows): the pass is then priced for that share of A's columns drawn at random (seed 0), the
    same launches and correction shapes a call with such an X would use.

    ``plan``: a :func:`plan_launches` plan of A for ``F`` and ``x_mode`` to reuse; for F wider than one launch
    (``launch_spmm.max_features_of``), the sequence of plans of its column blocks (``launch_spmm.feature_blocks``)
    in order. Default: planned here.

    ``traces``: a :class:`TraceBook` shared by estimates of many matrices (a controller pricing every
    action on every snapshot); a launch shape is then traced once for all of them. Without it the traces
    are kept on ``plan``.

    ``latency_us`` is the descriptor-bound DMA model (the profile's default), ``latency_optimistic_us``
    the optimistic one (every byte at peak); both *modelled*.
    """
    from dste.format import DSTEMatrix
    from dste.kernels.launch_spmm import default_lnc, feature_blocks, max_features_of, program_groups

    if not isinstance(A, DSTEMatrix):
        wrapped = getattr(A, "matrix", None)  # a dste.DSTETensor prices the matrix it wraps
        if not isinstance(wrapped, DSTEMatrix):
            raise TypeError(f"A must be a DSTEMatrix (dste.encode or dste.gcn_normalized), got {type(A).__name__}")
        A = wrapped
    if x_mode not in X_MODES:
        raise ValueError(f"x_mode must be one of {X_MODES}, got {x_mode!r}")
    if isinstance(F, bool) or not isinstance(F, (int, np.integer)) or F < 1:
        raise ValueError(f"feature width F must be an int >= 1, got {F!r}")
    if not (isinstance(hi_fraction, (int, float, np.number)) and 0.0 <= hi_fraction <= 1.0):
        raise ValueError(f"hi_fraction (the share of FP16 rows) must lie in [0, 1], got {hi_fraction!r}")
    if hi_fraction and (x_mode != "int8-hybrid" or X is not None):
        raise ValueError("hi_fraction prices an int8-hybrid X without one: give it only with x_mode='int8-hybrid' "
                         "and no X")
    if lnc is not None:
        lnc = check_lnc(lnc)
    if X is not None:
        if (x_mode == "int8-hybrid") != hasattr(X, "hi_index"):
            raise ValueError(f"X must be HybridRows (dste.quantize_rows) exactly when x_mode is 'int8-hybrid'; got "
                             f"x_mode={x_mode!r} and X of type {type(X).__name__}")
        width = X.q.shape[1] if hasattr(X, "q") else np.shape(X)[1]
        if width != F:
            raise ValueError(f"X has {width} columns but F = {F}: pass F = X's width")
        if x_mode != "int8-hybrid":
            from dste.kernels.launch_spmm import x_mode_of

            if x_mode_of(X) != x_mode:  # it surfaced as a mismatch of a plan the caller never passed
                raise ValueError(f"X is {x_mode_of(X)} (dtype {X.dtype}) but x_mode={x_mode!r}: pass the x_mode of X")
    if F > max_features_of(A):
        return _column_block_estimate(A, F, x_mode, target, X=X, hi_fraction=hi_fraction, plan=plan, lnc=lnc,
                                      blocks=feature_blocks(F, max_features_of(A)), traces=traces)
    trace_x = _trace_operand(A, F, x_mode, X, hi_fraction)
    hi_index, n_hi = (trace_x.hi_index, int(trace_x.hi.shape[0])) if x_mode == "int8-hybrid" else (None, 0)
    lnc = default_lnc(target) if lnc is None else lnc
    if plan is None:
        plan = plan_launches(A, F, x_mode, target=target, lnc=lnc)
    check_plan_matches(plan, A)  # a plan of other tiles would price their jobs, not A's
    plan = program_plan(plan, lnc)
    jobs = plan_corrections(A, plan, hi_index, n_hi, target)
    traces = traced_shapes(A, plan, jobs, trace_x, target, book=traces)
    main_row, corr_row = _gathered_row_bytes(F, x_mode)
    priced = {}
    for job in jobs:
        trace = traces[_shape_key(job)]
        extra_main = (_main_rows(A, job.launch) - trace.main_rows) * main_row
        extra_corr = (_correction_rows(job, F) - trace.correction_rows) * corr_row
        extra_out = (_output_rows(A, job.launch) - trace.output_rows) * F * 4
        priced[id(job)] = trace.priced(extra_main, main_row, extra_corr, corr_row, extra_out, F * 4)
    latency = {m: 0.0 for m in nc.DMA_MODELS}
    busy_total = {e: 0.0 for e in nc.ENGINES + ("dma",)}
    idle = {"instructions": 0, "dma_transfers": 0, "dma_bytes": 0}
    for programs in program_groups(jobs, lnc):
        members = [priced[id(job)] for job in programs if job is not None]
        for m in nc.DMA_MODELS:
            latency[m] += max(p["latency_ns"][m] for p in members)
        n_idle = len(programs) - len(members)
        if n_idle:
            # an idle program (all padding windows) still issues its instructions and fixed transfers
            lead = traces[_shape_key(programs[0])]
            for name, value in lead.idle_counts(A, plan, programs[0], trace_x, target, lnc).items():
                idle[name] += n_idle * value
    for p in priced.values():
        for e, ns in p["busy_ns"].items():
            busy_total[e] += ns
    instr = [traces[_shape_key(job)].profile.total_instructions for job in jobs]
    tiles = plan.n_tiles
    hi_share = n_hi / max(int(A.shape[1]), 1)
    useful_bytes = _format_bytes(A, F, x_mode, hi_share, plan)
    target = nc.normalize_target(target)
    return SpmmEstimate(
        target=target, layout="dste", x_mode=x_mode, features=int(F), n_tiles=int(tiles),
        n_slots=int(plan.n_slots), launches=len(jobs), instructions=int(sum(instr)) + idle["instructions"],
        max_instructions_per_launch=int(max(instr)) if instr else 0,
        dma_transfers=int(sum(traces[_shape_key(job)].profile.dma_transfers for job in jobs)) + idle["dma_transfers"],
        dma_bytes=int(sum(p["dma_bytes"] for p in priced.values())) + idle["dma_bytes"],
        engine_busy_us={k: v / 1000.0 for k, v in busy_total.items()},
        latency_us=latency[nc.DEFAULT_DMA_MODEL] / 1000.0,
        roofline_us=roofline_us(useful_bytes, mm_cycles_of_tiles(tiles, F, target), target, cores=lnc),
        latency_optimistic_us=latency["optimistic"] / 1000.0,
        traced_shapes=len({_shape_key(job) for job in jobs}),
    )


@dataclass
class ShapeTrace:
    """The simulator's profile of one job of a launch shape, and the gathered rows it moved."""

    profile: object  # dste.nkisim.Profile of that one launch
    main_rows: int  # in-range X rows gathered by its bitmap and entry slots
    correction_rows: int  # in-range FP16 rows gathered by its correction pass
    output_rows: int = 0  # rows of Y its scatters write (window slots that hold a row)
    idle_program: dict = field(default_factory=dict)  # per lnc: counts an idle LNC partner program adds

    def idle_counts(self, A, plan, job, trace_x, target, lnc) -> dict:
        """Instructions, transfers and bytes of one idle program (all padding windows) beside a job of this
        shape in a ``kernel[lnc]`` launch: traced once, as that launch minus the job's own LNC1 trace."""
        if lnc not in self.idle_program:
            from dste.kernels.launch_spmm import launch_spmm_hybrid

            one = LaunchPlan(plan.shape, plan.features, plan.x_mode, [job.launch], programs=lnc)
            _, beside_idle = launch_spmm_hybrid(A, trace_x, target=target, profile=True, plan=one, lnc=lnc)
            prof, n_idle = self.profile, lnc - 1
            # the job's own bytes: the traced job's, plus the in-range rows this job gathers beyond it (the idle
            # program is all padding, so its figures are the shape's whatever the matrix)
            main_row, corr_row = _gathered_row_bytes(plan.features, plan.x_mode)
            own_bytes = (prof.dma_bytes + (_main_rows(A, job.launch) - self.main_rows) * main_row
                         + (_correction_rows(job, plan.features) - self.correction_rows) * corr_row
                         + (_output_rows(A, job.launch) - self.output_rows) * plan.features * 4)
            self.idle_program[lnc] = {
                "instructions": (beside_idle.total_instructions - prof.total_instructions) // n_idle,
                "dma_transfers": (beside_idle.dma_transfers - prof.dma_transfers) // n_idle,
                "dma_bytes": (beside_idle.dma_bytes - own_bytes) // n_idle,
            }
        return self.idle_program[lnc]

    def priced(self, extra_main_bytes, main_row_bytes, extra_corr_bytes, corr_row_bytes, extra_out_bytes=0,
               out_row_bytes=0) -> dict:
        """Figures of a job of this shape that gathers ``extra_*_bytes`` more (or fewer) in-range bytes.

        Gathers span all 128 partitions, so their bytes are split evenly over the 16 DMA engines; the
        transfers and their fixed costs are the traced job's, and their descriptor (GpSimd) time that of the traced
        job plus one descriptor per extra in-range row (descriptors count in-range rows). Compute engines are
        unchanged.
        """
        prof = self.profile
        n_lanes = len(prof.dma_queue_ns)
        moved = ((extra_main_bytes, main_row_bytes), (extra_corr_bytes, corr_row_bytes),
                 (extra_out_bytes, out_row_bytes))
        # every in-range row is one descriptor of its indirect transfer: software DGE builds as many more (or fewer)
        extra_rows = sum(nbytes // row for nbytes, row in moved if nbytes)
        extra_dge_ns = nc.cycles_to_ns(extra_rows * nc.constant("swdge_cycles_per_descriptor", prof.target), "gpsimd",
                                       prof.target)
        latency, busy = {}, {}
        for model in nc.DMA_MODELS:
            extra_ns = 0.0
            for nbytes, row in moved:
                if nbytes:
                    extra_ns += nc.dma_data_ns(abs(nbytes), prof.target, model, row) * (1 if nbytes > 0 else -1)
            engines = prof.engine_busy_ns(model)
            engines["dma"] = max(prof.dma_queue_ns_by_model[model]) + extra_ns / n_lanes
            if model == "descriptor":
                engines["gpsimd"] += extra_dge_ns
            latency[model] = max(engines.values())
            if model == nc.DEFAULT_DMA_MODEL:
                busy = engines
        return {"latency_ns": latency, "busy_ns": busy,
                "dma_bytes": prof.dma_bytes + extra_main_bytes + extra_corr_bytes + extra_out_bytes}


def _column_block_estimate(A, F, x_mode, target, *, X, hi_fraction, plan, lnc, blocks, traces) -> SpmmEstimate:
    """F wider than one launch runs as column blocks in sequence (``launch_spmm.feature_blocks``): their
    times, transfers, bytes and instructions add."""
    if plan is None:
        plans = [None] * len(blocks)
    elif isinstance(plan, (list, tuple)) and len(plan) == len(blocks):
        plans = list(plan)
        for block_plan, (_, width) in zip(plans, blocks):
            if getattr(block_plan, "features", None) != width:
                raise ValueError(f"F={F} is estimated as column blocks of widths {[w for _, w in blocks]}; a block "
                                 f"plan was made for F={getattr(block_plan, 'features', None)}")
    else:
        raise ValueError(f"F={F} is estimated as {len(blocks)} column blocks of widths {[w for _, w in blocks]}: pass "
                         "plan=None or one plan per block, in order")
    parts = []
    for (c0, width), block_plan in zip(blocks, plans):
        block_x = None
        if X is not None:
            from dste.format import HybridRows

            if isinstance(X, HybridRows):
                block_x = HybridRows(q=np.ascontiguousarray(X.q[:, c0:c0 + width]), scale=X.scale, hi_rows=X.hi_rows,
                                     hi=np.ascontiguousarray(X.hi[:, c0:c0 + width]), hi_index=X.hi_index)
            else:  # a dense X (fp32, bf16, fp16): its columns of this block
                block_x = X[:, c0:c0 + width]
        parts.append(estimate_spmm(A, width, x_mode, target, X=block_x, hi_fraction=hi_fraction, plan=block_plan,
                                   lnc=lnc, traces=traces))
    total = parts[0]
    add = ("launches", "instructions", "dma_transfers", "dma_bytes", "latency_us", "roofline_us",
           "latency_optimistic_us", "traced_shapes")
    fields = {name: sum(getattr(p, name) for p in parts) for name in add}
    fields["engine_busy_us"] = {k: sum(p.engine_busy_us.get(k, 0.0) for p in parts) for k in total.engine_busy_us}
    fields["max_instructions_per_launch"] = max(p.max_instructions_per_launch for p in parts)
    return replace(total, features=int(F), **fields)


class TraceBook:
    """Traced launch shapes, shared by the estimates of many matrices.

    A launch shape (its :class:`~dste.kernels.plan.Bucket`: windows, slot counts, features, X mode; and its
    correction shape) fixes the compiled kernel, so its instructions, transfers and compute-engine time are
    the same for every matrix; only the gathered rows differ, and :func:`estimate_spmm` prices those from
    each job's own rows. A controller that prices every action on every snapshot of a graph therefore
    traces each shape once instead of once per matrix. Owned by whoever makes the estimates (e.g.
    ``dste.gnn.LatencyModel``); it grows with the number of distinct shapes, not of matrices.
    """

    def __init__(self):
        self._traces: dict[str, dict] = {}

    def for_target(self, target) -> dict:
        """``{(bucket, correction shape): ShapeTrace}`` of one target (``trn1``/``trn2``)."""
        return self._traces.setdefault(nc.normalize_target(target), {})

    def __len__(self) -> int:
        return sum(len(shapes) for shapes in self._traces.values())


def traced_shapes(A, plan, jobs, trace_x, target, book: TraceBook | None = None) -> dict:
    """``{(bucket, correction shape): ShapeTrace}``: one simulated job per distinct launch shape.

    Runs the real kernel through the launcher (``spmm_hybrid`` on a one-launch plan, LNC1). Kept in
    ``book`` when given, else on ``plan`` (a plan reused for many estimates is traced once per shape).
    (The idle LNC partner programs are traced on demand, :meth:`ShapeTrace.idle_counts`.)
    """
    from dste.kernels.launch_spmm import launch_spmm_hybrid

    if book is None:
        if plan.trace_book is None:
            plan.trace_book = TraceBook()
        book = plan.trace_book
    traces = book.for_target(target)
    F = plan.features
    for job in jobs:
        key = _shape_key(job)
        if key in traces:
            continue
        one = LaunchPlan(plan.shape, plan.features, plan.x_mode, [job.launch])
        # the job itself, with its own correction shape (chosen for its LNC launch; planned alone it may differ)
        _, prof = launch_spmm_hybrid(A, trace_x, target=target, profile=True, plan=one, lnc=1,
                                     correction_jobs=[replace(job, plan_index=None)])
        traces[key] = ShapeTrace(prof, _main_rows(A, job.launch), _correction_rows(job, F),
                                 _output_rows(A, job.launch))
    return traces


def _shape_key(job):
    return job.launch.bucket, job.shape


def _main_rows(A, launch) -> int:
    """In-range X rows the launch's main pass gathers: its tiles' columns and entries, and with a unit diagonal each
    window's own rows."""
    bvalid, evalid = valid_counts(A, launch)
    diagonal = int(output_rows(A, launch).sum()) if launch.bucket.diagonal else 0
    return int(bvalid.sum() + evalid.sum() + list_valid_counts(A, launch).sum()) + diagonal


def _output_rows(A, launch) -> int:
    """Rows of Y the launch's scatters write."""
    return int(output_rows(A, launch).sum())


def _correction_rows(job, F) -> int:
    """In-range FP16 rows the correction pass gathers: each correction tile once, or once per window of
    its group when the tiles of a group do not all fit the resident buffer (``correction_buffer_tiles``)."""
    shape = job.shape
    if not shape.tiles_per_group or job.valid.size == 0:
        return 0
    times = 1 if correction_buffer_tiles(shape, F) >= shape.tiles_per_group else shape.group_windows
    return int(job.valid.sum()) * times


def _gathered_row_bytes(F, x_mode):
    """Bytes of one gathered X row (a hybrid record, or F values of X's dtype) and of one FP16 row."""
    main = record_width(F) if x_mode == "int8-hybrid" else F * X_ITEMSIZE[x_mode]
    return main, F * 2


def _trace_operand(A, F, x_mode, X, hi_fraction):
    """The X the traced launches run with: ``X`` itself, else zeros of ``x_mode``'s dtype (values do not
    change the modelled cost), with ``hi_fraction`` of the rows as FP16 rows (seed 0) for a hybrid X."""
    if X is not None:
        return X
    M = int(A.shape[1])
    if x_mode != "int8-hybrid":
        dtype = {"fp32": F32, "bf16": BF16, "fp16": F16}[x_mode]
        return np.zeros((M, F), dtype=dtype)
    from dste.format import HybridRows
    from dste.format.quant import hi_index_of

    n_hi = int(round(hi_fraction * M)) if hi_fraction > 0 else 0
    hi_rows = np.sort(np.random.default_rng(0).choice(M, size=n_hi, replace=False)).astype(np.int32)
    hi_index = hi_index_of(hi_rows, M)
    return HybridRows(np.zeros((M, F), np.int8), np.ones(M, np.float32) * (hi_index == n_hi), hi_rows,
                      np.zeros((n_hi, F), np.float16), hi_index)


def mm_cycles_of_tiles(n_tiles, F, target):
    return n_tiles * sum(nc.matmul_cycles(width, BF16, target) for _, width in feature_chunks(F))


def _format_bytes(A, F, x_mode, hi_fraction, plan):
    """Bytes the format must move: gathered X rows of every real tile, metadata, values, and Y."""
    M = A.shape[1]
    x_row = record_width(F) if x_mode == "int8-hybrid" else F * X_ITEMSIZE[x_mode]
    # a unit diagonal gathers each row's own X row and carries an fp32 factor per row in the blobs
    n_diagonal = int(getattr(A, "n_diagonal", 0))
    rows = int(A.tile_ncols.sum() + A.etile_nentries.sum() + A.ltile_ncols.sum()) + n_diagonal
    total = rows * x_row + int(rows * hi_fraction) * F * 2
    # per slot in the blobs: a uint16 column id (and a uint8 band past 65,535 X rows), keep bits, an fp32 factor
    id_bytes = 2 + (1 if uses_bands(M) else 0)
    total += A.n_tiles * 128 * (id_bytes + 16 + 4) + A.n_etiles * 128 * (id_bytes + 1 + 4 + 4)
    total += A.n_ltiles * 128 * (id_bytes + 1 + 1 + 4 + 4) + n_diagonal * 4
    total += A.int8_values.nbytes + A.fp16_values.nbytes + A.etile_int8_values.nbytes + A.etile_fp16_values.nbytes
    total += A.ltile_int8_values.nbytes + A.ltile_fp16_values.nbytes
    n_rows_out = int((A.window_rows < A.shape[0]).sum())
    total += n_rows_out * F * 4
    del plan
    return total


def block_count(A) -> int:
    """Nonzero 128x128 blocks of A in its encoded (reordered) row and column order."""
    coo = A.decode(effective=True).tocoo()
    N, M = A.shape
    row_pos = np.empty(N, dtype=np.int64)
    col_pos = np.empty(M, dtype=np.int64)
    row_pos[A.row_perm if A.row_perm is not None else np.arange(N)] = np.arange(N)
    col_pos[A.col_perm if A.col_perm is not None else np.arange(M)] = np.arange(M)
    keys = (row_pos[coo.row] // 128) * ((M + 127) // 128) + col_pos[coo.col] // 128
    return int(np.unique(keys).size)


def _baseline_x_row_bytes(F: int, x_mode: str) -> int:
    """Bytes a baseline kernel moves per gathered X row: a hybrid record, else F values of at least 2 B."""
    return record_width(F) if x_mode == "int8-hybrid" else F * max(X_ITEMSIZE[x_mode], 2)


def _baseline_output(c, n_windows: int, F: int, chunks) -> None:
    """Per window: PSUM evacuation on ScalarE, one chunk at a time, and the fp32 store."""
    for _ in range(n_windows):
        for _, width in chunks:
            c.scalar(width)
        c.dma(128 * F * 4)


def _program_shares(count: int, lnc: int) -> list[int]:
    """``count`` units (blocks, edge tiles, windows) split over ``lnc`` programs as evenly as whole units allow."""
    base, extra = divmod(int(count), lnc)
    return [base + (1 if p < extra else 0) for p in range(lnc)]


def _baseline_estimate(A, F: int, x_mode: str, target: str, lnc, layout: str, units: int, charge_unit
                       ) -> SpmmEstimate:
    """One launch of a baseline kernel: ``units`` (blocks, edge tiles) and A's windows split evenly over its ``lnc``
    programs (``default_lnc`` when None; module docstring), ``charge_unit(c)`` charging one unit to a program's
    ``LaunchCost``, then each of its windows' output; the launch takes its slowest program's time."""
    from dste.kernels.launch_spmm import default_lnc

    lnc = default_lnc(target) if lnc is None else check_lnc(lnc)
    chunks = feature_chunks(F)
    programs = []
    for count, windows in zip(_program_shares(units, lnc), _program_shares(A.window_rows.shape[0], lnc)):
        c = LaunchCost(target)
        for _ in range(count):
            charge_unit(c)
        _baseline_output(c, windows, F, chunks)
        programs.append(c)
    roofline = roofline_us(sum(c.bytes for c in programs), sum(c.cycles["tensor"] for c in programs), target, lnc)
    return _summarise(programs, target, layout, x_mode, F, units, units, 0, roofline, parallel=True)


def estimate_block_layout(A, F: int, x_mode: str = "fp32", target: str = "trn2", lnc: int | None = None
                          ) -> SpmmEstimate:
    """Modelled cost of a fixed-block-column (BSR) kernel on A's nonzero 128x128 blocks.

    Per nonzero block: one DMA of its dense bf16 values (32 KiB), one DMA of the 128 consecutive X
    rows it multiplies (hybrid X: int8 records, dequantized on ScalarE), one matmul per PSUM chunk.
    Per window: PSUM evacuation and the store. Metadata is taken as free (favouring the baseline). The blocks and
    windows are split evenly over the launch's ``lnc`` programs (module docstring).
    """
    x_row = _baseline_x_row_bytes(F, x_mode)
    chunks = feature_chunks(F)

    def charge_block(c):
        c.dma(128 * 128 * 2)
        c.dma(128 * x_row)
        if x_mode == "int8-hybrid":
            c.scalar(F)
        for _, width in chunks:
            c.matmul(width, BF16)

    return _baseline_estimate(A, F, x_mode, target, lnc, "block", block_count(A), charge_block)


def estimate_edge_gather(A, F: int, x_mode: str = "fp32", target: str = "trn2", lnc: int | None = None
                         ) -> SpmmEstimate:
    """Modelled cost of a per-edge gather kernel: every kept edge as an entry (128 per matmul), its one-hot built
    on VectorE as ``spmm_hybrid`` builds an entry slot's. The edge tiles and windows are split evenly over the
    launch's ``lnc`` programs (module docstring)."""
    nnz = int(A.decode(effective=True).nnz)
    x_row = _baseline_x_row_bytes(F, x_mode)
    chunks = feature_chunks(F)

    def charge_edge_tile(c):
        c.dma(128 * x_row)
        if x_mode == "int8-hybrid":
            c.scalar(F)
        # the one-hot row x weight on VectorE, as spmm_hybrid's entry slots (GpSimd's tensor_scalar is rsqrt only)
        c.vector(128, 1, BF16, "tensor_scalar")
        for _, width in chunks:
            c.matmul(width, BF16)

    return _baseline_estimate(A, F, x_mode, target, lnc, "edge-gather", -(-nnz // 128), charge_edge_tile)


__all__ = [
    "SpmmEstimate",
    "TraceBook",
    "estimate_spmm",
    "estimate_block_layout",
    "estimate_edge_gather",
    "roofline_us",
    "block_count",
    "LAUNCH_SETUP_INSTRUCTIONS",
    "launch_instructions",
]
