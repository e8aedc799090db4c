"""NKI kernels: the device-side DSTE encoder (``masked_quant_kernel``) and hybrid-row X quantization
(``quantize_rows_kernel``), producing exactly the arrays ``spmm_hybrid`` reads.

Both follow ``dste.reference.masked_quant`` bit for bit: float32 arithmetic, the scale
``s = max|v| * fp32(1/127)`` (1 for an all-zero group), values multiplied by the float32 reciprocal
``1/s`` (VectorE ``nisa.reciprocal``: NeuronCores have no division instruction), float->int8 and
float->fp16 casts that round to nearest even and saturate (fp16 explicitly clamped to +-65504 first).
Two assumptions the docs do not state, which the parity tests hold the kernel to: that the hardware
reciprocal is the correctly rounded fp32 reciprocal, and that engine fp32->fp16 casts round to nearest even
(the docs say only that results are cast to the dst dtype; fp32->int rounding and saturation is stated in
the NKI 0.6 release notes).
"""

import nki
import nki.isa as nisa
import nki.language as nl

TILE_COLS = nl.tile_size.pmax
"""Tile columns k = partitions of a value tile."""
WINDOW_ROWS = nl.tile_size.pmax
"""Window rows r = free elements of a value tile."""
ROWS_PER_TILE = nl.tile_size.pmax
MASK_WORDS = 4
MASK_WORD_BITS = 32
INT8_QMAX = 127.0
INV_INT8_QMAX = 1.0 / 127.0
FP16_MAX = 65504.0
KIND_INT8 = 1.0
TILES_PER_GROUP = 16
"""Tiles quantized together: values [128, 16, 128] fp32 = 8 KiB per partition per buffer."""


@nki.jit
def masked_quant_kernel(values, keep, sensitivity, threshold):
    """Masked per-tile INT8 / FP16 quantization and mask packing of T dense tiles.

    Args:
      values: ``float32 [T, 128, 128]`` tile values, layout [t, k, r] (tile column k, window row r).
      keep: ``uint8 [T, 128, 128]`` 0/1 keep mask, same layout.
      sensitivity: ``float32 [T]`` per-tile score S.
      threshold: ``float32 [1]`` T of the rule S >= T -> FP16.

    Returns:
      keep_bits ``uint32 [T, 128, 4]`` (bit r % 32 of word r // 32), kind ``uint8 [T]`` (1 INT8,
      2 FP16), int8_values ``int8 [T, 128, 128]``, int8_scale ``float32 [T]`` (0 for FP16 tiles),
      fp16_values ``float16 [T, 128, 128]`` (0 for INT8 tiles).

    Limits: T a multiple of 16 x the number of programs (the launcher pads with empty tiles). Under
      LNC2 (``kernel[2]``) program p quantizes tiles p*T/2 .. (p+1)*T/2 - 1.

    Pseudocode, per group of 16 tiles (partition = tile column k):
      m = values where keep else +0 (predicated copy)
      amax_k = max_r |m|  -> transpose (TensorE) -> amax_t = max_k amax_k   (one per tile)
      s = amax * (1/127) + (amax == 0);  fp16 = (S >= T)
      int8 = rne_sat((m * reciprocal(s)) * (1 - fp16));  fp16_values = clamp(m) where fp16 else +0
      scale = s * (1 - fp16)
      keep_bits = OR_b (keep << b) over each word's 32 rows
    """
    n_tiles = values.shape[0]
    assert values.shape[1:] == (TILE_COLS, WINDOW_ROWS), f"values must be [T, 128, 128], got {values.shape}"
    assert keep.shape == values.shape, f"keep must match values {values.shape}, got {keep.shape}"
    assert sensitivity.shape == (n_tiles,), f"sensitivity must be [{n_tiles}], got {sensitivity.shape}"
    n_programs = nl.num_programs()
    assert n_tiles % (TILES_PER_GROUP * n_programs) == 0, (
        f"T={n_tiles} must be a multiple of {TILES_PER_GROUP} x {n_programs} programs"
    )
    G = TILES_PER_GROUP
    tiles_per_program = n_tiles // n_programs
    first_tile = nl.program_id(0) * tiles_per_program
    tile_elems = TILE_COLS * WINDOW_ROWS

    keep_bits = nl.ndarray((n_tiles, TILE_COLS, MASK_WORDS), dtype=nl.uint32, buffer=nl.shared_hbm, name="keep_bits")
    kind = nl.ndarray((n_tiles, 1), dtype=nl.uint8, buffer=nl.shared_hbm, name="kind")
    int8_values = nl.ndarray((n_tiles, TILE_COLS, WINDOW_ROWS), dtype=nl.int8, buffer=nl.shared_hbm, name="int8_values")
    int8_scale = nl.ndarray((n_tiles, 1), dtype=nl.float32, buffer=nl.shared_hbm, name="int8_scale")
    fp16_values = nl.ndarray((n_tiles, TILE_COLS, WINDOW_ROWS), dtype=nl.float16, buffer=nl.shared_hbm, name="fp16_values")

    threshold_p = nl.ndarray((TILE_COLS, 1), dtype=nl.float32, buffer=nl.sbuf, name="threshold")
    nisa.dma_copy(dst=threshold_p, src=threshold.ap(pattern=[[0, TILE_COLS], [1, 1]], offset=0))
    bit_shift = nl.ndarray((TILE_COLS, MASK_WORDS, MASK_WORD_BITS), dtype=nl.uint32, buffer=nl.sbuf, name="bit_shift")
    nisa.iota(dst=bit_shift, pattern=[[0, MASK_WORDS], [1, MASK_WORD_BITS]], offset=0)
    ones = nl.ndarray((G, TILE_COLS), dtype=nl.float32, buffer=nl.sbuf, name="ones")
    nisa.memset(dst=ones, value=1.0)

    vals = nl.ndarray((TILE_COLS, G, WINDOW_ROWS), dtype=nl.float32, buffer=nl.sbuf, name="vals")
    mask = nl.ndarray((TILE_COLS, G, WINDOW_ROWS), dtype=nl.uint8, buffer=nl.sbuf, name="mask")
    work = nl.ndarray((TILE_COLS, G, WINDOW_ROWS), dtype=nl.float32, buffer=nl.sbuf, name="work")
    q = nl.ndarray((TILE_COLS, G, WINDOW_ROWS), dtype=nl.int8, buffer=nl.sbuf, name="q")
    half = nl.ndarray((TILE_COLS, G, WINDOW_ROWS), dtype=nl.float16, buffer=nl.sbuf, name="half")
    clamped = nl.ndarray((TILE_COLS, G, WINDOW_ROWS), dtype=nl.float16, buffer=nl.sbuf, name="clamped")
    shifted = nl.ndarray((TILE_COLS, G, MASK_WORDS, MASK_WORD_BITS), dtype=nl.uint32, buffer=nl.sbuf, name="shifted")
    words = nl.ndarray((TILE_COLS, G, MASK_WORDS), dtype=nl.uint32, buffer=nl.sbuf, name="words")
    col_max = nl.ndarray((TILE_COLS, G), dtype=nl.float32, buffer=nl.sbuf, name="col_max")
    col_max_t = nl.ndarray((G, TILE_COLS), dtype=nl.float32, buffer=nl.psum, name="col_max_t")
    tile_max = nl.ndarray((G, 1), dtype=nl.float32, buffer=nl.sbuf, name="tile_max")
    tile_scale = nl.ndarray((G, 1), dtype=nl.float32, buffer=nl.sbuf, name="tile_scale")
    sens = nl.ndarray((G, 1), dtype=nl.float32, buffer=nl.sbuf, name="sens")
    is_fp16 = nl.ndarray((G, 1), dtype=nl.float32, buffer=nl.sbuf, name="is_fp16")
    scale_out = nl.ndarray((G, 1), dtype=nl.float32, buffer=nl.sbuf, name="scale_out")
    kind_out = nl.ndarray((G, 1), dtype=nl.uint8, buffer=nl.sbuf, name="kind_out")
    spread = nl.ndarray((G, TILE_COLS), dtype=nl.float32, buffer=nl.sbuf, name="spread")
    spread_t = nl.ndarray((TILE_COLS, G), dtype=nl.float32, buffer=nl.psum, name="spread_t")
    scale_rep = nl.ndarray((TILE_COLS, G), dtype=nl.float32, buffer=nl.sbuf, name="scale_rep")
    inv_scale_rep = nl.ndarray((TILE_COLS, G), dtype=nl.float32, buffer=nl.sbuf, name="inv_scale_rep")
    sens_rep = nl.ndarray((TILE_COLS, G), dtype=nl.float32, buffer=nl.sbuf, name="sens_rep")
    fp16_rep = nl.ndarray((TILE_COLS, G), dtype=nl.float32, buffer=nl.sbuf, name="fp16_rep")
    int8_rep = nl.ndarray((TILE_COLS, G), dtype=nl.float32, buffer=nl.sbuf, name="int8_rep")
    fp16_flag = nl.ndarray((TILE_COLS, G), dtype=nl.uint8, buffer=nl.sbuf, name="fp16_flag")

    def by_tile(rep):
        """[128, G] per-tile column -> [128, G, 128] stride-0 view over the window rows."""
        return rep.expand_dim(2).broadcast(2, WINDOW_ROWS)

    for local_t0 in range(0, tiles_per_program, G):
        t0 = first_tile + local_t0
        # [t, k, r] in HBM -> [k (partition), t, r] in SBUF
        src_pattern = [[WINDOW_ROWS, TILE_COLS], [tile_elems, G], [1, WINDOW_ROWS]]
        nisa.dma_copy(dst=vals, src=values.ap(pattern=src_pattern, offset=t0 * tile_elems))
        nisa.dma_copy(dst=mask, src=keep.ap(pattern=src_pattern, offset=t0 * tile_elems))
        nisa.dma_copy(dst=sens, src=sensitivity.ap(pattern=[[1, G], [1, 1]], offset=t0))
        nisa.dma_copy(dst=sens_rep, src=sensitivity.ap(pattern=[[0, TILE_COLS], [1, G]], offset=t0))

        # FP16 decision, per tile (partition = tile) and replicated over the tile-column partitions
        nisa.tensor_scalar(dst=is_fp16, data=sens, op0=nl.greater_equal, operand0=threshold_p[0:G, :])
        nisa.tensor_scalar(dst=fp16_rep, data=sens_rep, op0=nl.greater_equal, operand0=threshold_p)
        nisa.tensor_scalar(dst=int8_rep, data=fp16_rep, op0=nl.multiply, operand0=-1.0, op1=nl.add, operand1=1.0)
        nisa.tensor_copy(dst=fp16_flag, src=fp16_rep)

        # masked values (a predicated copy over zeros keeps the sign of kept zeros, as np.where
        # does; a multiply by the mask would give -0.0 for dropped negative values)
        nisa.memset(dst=work, value=0.0)
        nisa.tensor_copy_predicated(dst=work, src=vals, predicate=mask)
        nisa.tensor_copy(dst=vals, src=work)
        nisa.tensor_scalar(dst=work, data=vals, op0=nl.abs, operand0=0.0, engine=nisa.engine.vector)
        nisa.tensor_reduce(dst=col_max, op=nl.maximum, data=work, axis=2)
        nisa.nc_transpose(dst=col_max_t, data=col_max)
        nisa.tensor_reduce(dst=tile_max, op=nl.maximum, data=col_max_t, axis=1)
        # s = amax * (1/127), or 1 for an all-zero tile
        nisa.tensor_scalar(dst=tile_scale, data=tile_max, op0=nl.multiply, operand0=INV_INT8_QMAX)
        nisa.tensor_scalar(dst=work[0:G, 0, 0:1], data=tile_max, op0=nl.equal, operand0=0.0)
        nisa.tensor_tensor(dst=tile_scale, data1=tile_scale, data2=work[0:G, 0, 0:1], op=nl.add)
        # replicate each tile's scale over the 128 tile-column partitions: transpose of a broadcast
        nisa.tensor_scalar(dst=spread, data=ones, op0=nl.multiply, operand0=tile_scale)
        nisa.nc_transpose(dst=spread_t, data=spread)
        nisa.tensor_copy(dst=scale_rep, src=spread_t)

        # INT8 values: rne_sat(m * (1 / s)), zero for FP16 tiles
        nisa.reciprocal(dst=inv_scale_rep, data=scale_rep)
        nisa.tensor_tensor(dst=work, data1=vals, data2=by_tile(inv_scale_rep), op=nl.multiply)
        nisa.tensor_tensor(dst=q, data1=work, data2=by_tile(int8_rep), op=nl.multiply)
        # FP16 values: clamp to the fp16 range, zero for INT8 tiles
        nisa.tensor_scalar(dst=clamped, data=vals, op0=nl.minimum, operand0=FP16_MAX, op1=nl.maximum,
                           operand1=-FP16_MAX)
        nisa.memset(dst=half, value=0.0)
        nisa.tensor_copy_predicated(dst=half, src=clamped, predicate=by_tile(fp16_flag))
        # scale (0 for FP16 tiles) and kind = 1 + is_fp16
        nisa.tensor_scalar(dst=scale_out, data=is_fp16, op0=nl.multiply, operand0=-1.0, op1=nl.add, operand1=1.0)
        nisa.tensor_tensor(dst=scale_out, data1=scale_out, data2=tile_scale, op=nl.multiply)
        nisa.tensor_scalar(dst=kind_out, data=is_fp16, op0=nl.add, operand0=KIND_INT8)

        # keep bits: OR of keep << (r % 32) over each word's 32 rows
        mask_words = mask.reshape((TILE_COLS, G, MASK_WORDS, MASK_WORD_BITS))
        nisa.tensor_copy(dst=shifted, src=mask_words)
        nisa.tensor_tensor(dst=shifted, data1=shifted,
                           data2=bit_shift.expand_dim(1).broadcast(1, G),
                           op=nl.left_shift, engine=nisa.engine.vector)
        nisa.tensor_reduce(dst=words, op=nl.bitwise_or, data=shifted, axis=3)

        dst_pattern = [[WINDOW_ROWS, TILE_COLS], [tile_elems, G], [1, WINDOW_ROWS]]
        nisa.dma_copy(dst=int8_values.ap(pattern=dst_pattern, offset=t0 * tile_elems), src=q)
        nisa.dma_copy(dst=fp16_values.ap(pattern=dst_pattern, offset=t0 * tile_elems), src=half)
        nisa.dma_copy(dst=keep_bits.ap(pattern=[[MASK_WORDS, TILE_COLS], [TILE_COLS * MASK_WORDS, G], [1, MASK_WORDS]],
                                       offset=t0 * TILE_COLS * MASK_WORDS), src=words)
        nisa.dma_copy(dst=int8_scale.ap(pattern=[[1, G], [1, 1]], offset=t0), src=scale_out)
        nisa.dma_copy(dst=kind.ap(pattern=[[1, G], [1, 1]], offset=t0), src=kind_out)
    return keep_bits, kind, int8_values, int8_scale, fp16_values


@nki.jit
def quantize_rows_kernel(x, sensitivity, threshold, hi_index, n_hi):
    """Hybrid-row quantization of X: per-row INT8 with a scale, FP16 rows for sensitive rows.

    Args:
      x: ``float32 [M, F]``; sensitivity: ``float32 [M]``; threshold: ``float32 [1]``.
      hi_index: ``int32 [M]`` position of each row among the FP16 rows (INT8 rows: max(n_hi, 1), past the
        FP16 table, so the scatter skips them),
        i.e. the prefix count of ``sensitivity >= threshold`` (computed by the launcher).
      n_hi: number of FP16 rows (compile-time; the FP16 table has max(n_hi, 1) rows).

    Returns:
      q ``int8 [M, F]`` (0 for FP16 rows), scale ``float32 [M, 1]`` (0 for FP16 rows),
      hi ``float16 [max(n_hi, 1), F]`` (the FP16 rows, scattered by hi_index).

    Limits: M a multiple of 128 x the number of programs (the launcher pads with zero rows). Under
      LNC2 (``kernel[2]``) program p quantizes rows p*M/2 .. (p+1)*M/2 - 1.

    Pseudocode, per 128-row tile (partition = row):
      amax = max_f |x|;  s = amax * (1/127) + (amax == 0);  fp16 = (S >= T)
      q = rne_sat((x * reciprocal(s)) * (1 - fp16));  scale = s * (1 - fp16)
      hi[hi_index] = clamp(x)   (scatter; INT8 rows have an out-of-range index and are skipped)
    """
    M, F = x.shape
    assert sensitivity.shape == (M,), f"sensitivity must be [{M}], got {sensitivity.shape}"
    assert hi_index.shape == (M,), f"hi_index must be [{M}], got {hi_index.shape}"
    n_programs = nl.num_programs()
    assert M % (ROWS_PER_TILE * n_programs) == 0, f"M={M} must be a multiple of {ROWS_PER_TILE} x {n_programs} programs"
    rows_per_program = M // n_programs
    first_row = nl.program_id(0) * rows_per_program
    q = nl.ndarray((M, F), dtype=nl.int8, buffer=nl.shared_hbm, name="q")
    scale = nl.ndarray((M, 1), dtype=nl.float32, buffer=nl.shared_hbm, name="scale")
    hi = nl.ndarray((max(n_hi, 1), F), dtype=nl.float16, buffer=nl.shared_hbm, name="hi")

    threshold_p = nl.ndarray((ROWS_PER_TILE, 1), dtype=nl.float32, buffer=nl.sbuf, name="threshold")
    nisa.dma_copy(dst=threshold_p, src=threshold.ap(pattern=[[0, ROWS_PER_TILE], [1, 1]], offset=0))
    rows = nl.ndarray((ROWS_PER_TILE, F), dtype=nl.float32, buffer=nl.sbuf, name="rows")
    work = nl.ndarray((ROWS_PER_TILE, F), dtype=nl.float32, buffer=nl.sbuf, name="work")
    q_tile = nl.ndarray((ROWS_PER_TILE, F), dtype=nl.int8, buffer=nl.sbuf, name="q_tile")
    hi_tile = nl.ndarray((ROWS_PER_TILE, F), dtype=nl.float16, buffer=nl.sbuf, name="hi_tile")
    amax = nl.ndarray((ROWS_PER_TILE, 1), dtype=nl.float32, buffer=nl.sbuf, name="amax")
    row_scale = nl.ndarray((ROWS_PER_TILE, 1), dtype=nl.float32, buffer=nl.sbuf, name="row_scale")
    inv_scale = nl.ndarray((ROWS_PER_TILE, 1), dtype=nl.float32, buffer=nl.sbuf, name="inv_scale")
    is_zero = nl.ndarray((ROWS_PER_TILE, 1), dtype=nl.float32, buffer=nl.sbuf, name="is_zero")
    sens = nl.ndarray((ROWS_PER_TILE, 1), dtype=nl.float32, buffer=nl.sbuf, name="sens")
    keep_int8 = nl.ndarray((ROWS_PER_TILE, 1), dtype=nl.float32, buffer=nl.sbuf, name="keep_int8")
    position = nl.ndarray((ROWS_PER_TILE, 1), dtype=nl.int32, buffer=nl.sbuf, name="position")

    p = ROWS_PER_TILE
    for local_r0 in range(0, rows_per_program, ROWS_PER_TILE):
        r0 = first_row + local_r0
        nisa.dma_copy(dst=rows[0:p, :], src=x.ap(pattern=[[F, p], [1, F]], offset=r0 * F))
        nisa.dma_copy(dst=sens[0:p, :], src=sensitivity.ap(pattern=[[1, p], [1, 1]], offset=r0))
        nisa.dma_copy(dst=position[0:p, :], src=hi_index.ap(pattern=[[1, p], [1, 1]], offset=r0))
        # 1 for INT8 rows, 0 for FP16 rows
        nisa.tensor_scalar(dst=keep_int8[0:p, :], data=sens[0:p, :], op0=nl.less, operand0=threshold_p[0:p, :])
        nisa.tensor_scalar(dst=work[0:p, :], data=rows[0:p, :], op0=nl.abs, operand0=0.0, engine=nisa.engine.vector)
        nisa.tensor_reduce(dst=amax[0:p, :], op=nl.maximum, data=work[0:p, :], axis=1)
        nisa.tensor_scalar(dst=row_scale[0:p, :], data=amax[0:p, :], op0=nl.multiply, operand0=INV_INT8_QMAX)
        nisa.tensor_scalar(dst=is_zero[0:p, :], data=amax[0:p, :], op0=nl.equal, operand0=0.0)
        nisa.tensor_tensor(dst=row_scale[0:p, :], data1=row_scale[0:p, :], data2=is_zero[0:p, :], op=nl.add)
        nisa.reciprocal(dst=inv_scale[0:p, :], data=row_scale[0:p, :])
        nisa.tensor_scalar(dst=q_tile[0:p, :], data=rows[0:p, :], op0=nl.multiply, operand0=inv_scale[0:p, :],
                           op1=nl.multiply, operand1=keep_int8[0:p, :])
        nisa.tensor_tensor(dst=row_scale[0:p, :], data1=row_scale[0:p, :], data2=keep_int8[0:p, :], op=nl.multiply)
        nisa.tensor_scalar(dst=hi_tile[0:p, :], data=rows[0:p, :], op0=nl.minimum, operand0=FP16_MAX,
                           op1=nl.maximum, operand1=-FP16_MAX)
        nisa.dma_copy(dst=q.ap(pattern=[[F, p], [1, F]], offset=r0 * F), src=q_tile[0:p, :])
        nisa.dma_copy(dst=scale.ap(pattern=[[1, p], [1, 1]], offset=r0), src=row_scale[0:p, :])
        nisa.dma_copy(dst=hi.ap(pattern=[[F, p], [1, F]], offset=0, vector_offset=position[0:p, :], indirect_dim=0),
                      src=hi_tile[0:p, :], oob_mode=nisa.oob_mode.skip)
    return q, scale, hi
