"""NKI kernel: Y = A @ X for a DSTE-encoded sparse A (bitmap, entry and list tiles) and a dense or hybrid-row X.

One launch processes a fixed number of 128-row windows, each with a fixed number of tile slots
per kind (the launch's bucket, see ``dste.kernels.plan``). Per window, every tile becomes one
TensorE matmul accumulating into the window's fp32 PSUM accumulator:

    psum[r, f] += sum_k stationary[k, r] * moving[k, f]

- **bitmap tile**: k = tile column. moving = the X rows named by the tile's column ids (one
  indirect-DMA gather); stationary[k, r] = keep(k, r) * value(k, r) * factor[k], with the keep bits
  unpacked by two wide integer instructions (left shift by an iota of ``31 - bit``, batched over a
  group of tiles, so bit r of the word lands in the sign bit; then ``(v < 0) * factor`` per tile).
- **entry tile**: k = entry e (one kept value per partition). moving = the X row of each entry;
  stationary[e, r] = (r == row[e]) * weight[e], built by one two-op ``tensor_scalar``; TensorE
  performs the scatter-add.
- **list tiles**, two of a window per *pair*: k = listed column, the pair's first tile on partitions
  0..63 and its second on 64..127. moving = the X row of each listed column (one gather of up to 128
  rows per pair); the stationary ``S[k, r] = sum_e P[e, k] * R[e, r]`` with ``P[e, k] = (colslot[e] == k)``
  (the second tile's column slots carry +64; a GpSimd ``tensor_tensor``) and ``R[e, r] = (r == row[e]) *
  weight[e]`` (a VectorE ``tensor_scalar``), both over the tile's entry partitions, is one extra TensorE product per tile, the
  pair's two accumulating into one PSUM tile, evacuated by ScalarE into the bf16 stationary (times the
  gathered rows' INT8 scale for a hybrid X: partition k holds listed column k); then the usual matmul.
  A (row, column) pair is stored once, so each S[k, r] is one bf16 weight, exact in the fp32 PSUM.
- ``factor`` (per tile column / entry, prepared per matrix) folds the column scale and the INT8
  tile scale; the row scale is applied while evacuating PSUM.
- X modes: dense fp32/bf16/fp16 rows are gathered and converted by the DMA into the 16-bit moving
  dtype. Hybrid rows are gathered as one record per row (int8 values, fp32 row scale) and converted
  by ScalarE into the bf16 moving operand: for BIN and INT8 bitmap slots as ``q * scale * factor``
  (ScalarE's per-partition scale is free, and the stationary is then the bare mask, times the INT8
  value), for FP16 bitmap slots and entry slots unscaled (exact), the row scale then joining the
  column factor in the stationary (``keep * factor * scale * value``, rounded once to bf16). bf16 has
  fp32's range, so no on-chip value can overflow whatever the magnitude of X. FP16 rows have q = 0
  and scale = 0 there, so the main pass adds exactly 0 for them.
- LNC2 (``kernel[2]`` on trn2): each of the two programs runs one launch of its own. The inputs
  stack one metadata blob (and one correction blob) per program along the partition axis, and both
  write their own rows of the one output ``y``; ``nl.program_id(0)`` picks the program's blobs through
  DMA offsets only, so both programs trace to the same instruction stream.
- FP16-row correction (hybrid X with FP16 rows): the few entries whose column is an FP16 row are
  listed by the launcher in correction tiles of up to 128 entries, each serving a group of
  consecutive windows (``dste.kernels.correction``). Per correction tile one gather of its FP16
  rows; per window of the group one ``tensor_scalar`` builds
  ``stationary[e, r] = (r == row[e]) * weight[e, window]`` and one matmul per PSUM chunk adds it to
  the window's accumulator before evacuation. No per-slot FP16 transfer.
- Per launch, all metadata (column ids, keep words, factors, row scales, INT8/FP16 values, entry
  rows) arrives in one int32 blob by one DMA and is read through ``view(dtype)`` slices of the SBUF
  copy. Output rows collect in an SBUF buffer of up to ``STORE_BYTES_PER_PARTITION`` per partition and
  leave by one indirect (scatter) DMA per window into ``y`` at their original rows, named per window
  slot by the blob's 16-bit row ids.
- Unit diagonal (``unit_diagonal``, a ``DSTEMatrix`` whose diagonal no tile stores): one more slot per window,
  an entry slot whose ids need no bytes of their own: moving = the X rows of the window's own output rows (the
  ``out_ids`` the scatter uses: A is square, so row i of y and row i of X are one node), stationary[k, r] =
  (r == k) * dg_factor[k] (the column scale of slot k's row, 0 for a slot holding no row), one ``tensor_scalar``
  against a partition iota. FP16 rows of a hybrid X reach it through the correction pass, like any entry.
- Column ids travel as ``uint16`` offsets inside bands of ``COLUMN_BAND_ROWS`` X rows (plus a ``uint8``
  band number per id when X has more rows than one band holds). The indirect DMA takes int32/uint32
  indices only, so GpSimd widens them on chip once per region before the first gather: a
  ``tensor_copy`` (uint16 -> int32 through fp32, exact) or, with bands, ``band * 65536 + offset`` by
  two ``tensor_tensor`` (fp32 math, exact below 2^24). A padding slot holds offset 0xFFFF (and
  band 255), an index at or past M that ``oob_mode.skip`` skips. The output row ids travel and widen
  the same way (bands when y has at least ``COLUMN_BAND_ROWS`` rows); a window slot holding no row has
  an index at or past N, and its scatter row is skipped.

Assumptions the NKI 0.6 docs do not state (the simulator holds the kernel to them; hardware may not):
- Engine casts to bf16 / fp16 round to nearest even (the docs say only that results are cast to the dst dtype),
  and so does the DMA's cast of fp32 X rows to the bf16 moving operand (``dma_copy`` documents the conversion as
  src -> float32 -> dst without naming its rounding).
- The indirect DMA's index tile may be int32 (the kernel widens its 16-bit ids to int32): ``dma_copy`` gives the
  index as an SBUF (P, 1) tensor without a dtype; its examples use uint32 and the access-pattern guide int32.
- GpSimd runs ``tensor_tensor`` with ``equal`` / ``multiply`` / ``add`` on bf16, fp32 and 8-bit operands: the stub
  allows the GpSimd engine for "any binary operator that runs on the Vector Engine" and names no exception.
"""

import nki
import nki.isa as nisa
import nki.language as nl

WINDOW_ROWS = nl.tile_size.pmax
"""Rows per window = matmul output partitions (R)."""
TILE_COLS = nl.tile_size.pmax
"""Columns per bitmap tile / entries per entry tile = matmul contraction partitions (K)."""
PSUM_CHUNK = nl.tile_size.psum_bank_fmax
"""fp32 accumulator columns per PSUM bank (and the moving free-size limit)."""
MASK_WORDS = 4
"""uint32 words per tile column: window slot r is bit r % 32 of word r // 32."""
MASK_WORD_BITS = 32
MAX_PSUM_CHUNKS = nl.tile_size.psum_num_banks
RECORD_TAIL_BYTES = 4
"""Hybrid record = [int8 values padded to 4 B | fp32 row scale]."""
MAX_GROUP = 32
"""Tiles unpacked by one batched shift, and gather buffers in flight."""
STORE_BYTES_PER_PARTITION = 16384
"""Output rows of several windows collect in one SBUF buffer of up to this many bytes per partition, then leave
by one scatter per window."""
WORD_BYTES = 4
"""The metadata blob is int32; byte- and half-word regions are padded to whole words."""
CORRECTION_SBUF_BYTES = 16 * 1024
"""Per-partition SBUF of a launch's correction pass; half of it holds gathered FP16 rows."""
CORRECTION_STATIONARY_BUFFERS = 4
"""Correction stationaries in flight (the builds rotate over them)."""

COLUMN_BAND_ROWS = 65536
"""X rows per column-id band: a device column id is a uint16 offset inside its band."""
PAD_BAND = 255
"""Band number of a padding slot; also bounds M to PAD_BAND * COLUMN_BAND_ROWS rows."""

LIST_COLS = 64
"""Listed column ids per list tile: two list tiles of a window share one gather and one stationary, the first on
partitions 0..63, the second on 64..127."""
LIST_PSUM_TILES = 4
"""Paired list stationaries built in flight: [128, 128] fp32 products, four to the PSUM bank of ``list_psum``."""
LIST_BUILD_BUFFERS = 4
"""One-hot factors (per list tile) built in flight; the builds rotate over them."""

KIND_BIN, KIND_INT8, KIND_FP16 = 0, 1, 2


@nki.jit
def spmm_hybrid_kernel(
    x_rows,
    x_hi,
    metadata,
    y,
    n_windows,
    n_bin,
    n_int8,
    n_fp16,
    n_ebin,
    n_eint8,
    n_efp16,
    n_features,
    hybrid,
    group,
    corrections,
    corr_group_windows,
    corr_tiles_per_group,
    n_list=0,
    unit_diagonal=0,
):
    """DSTE sparse x dense product for one fixed-shape launch of ``n_windows`` row windows.

    Dimensions (W = n_windows, NB = n_bin + n_int8 + n_fp16 bitmap slots per window,
    NE = n_ebin + n_eint8 + n_efp16 entry slots per window, F = n_features, M = rows of X):

    Args:
      x_rows: dense X ``[M, F]`` (float32 / bfloat16 / float16) when ``hybrid == 0``; the hybrid
        record table ``int8 [M, Fq + 4]`` (Fq = F rounded up to 4) when ``hybrid == 1``.
      x_hi: ``float16 [M_hi, F]`` FP16 rows of a hybrid X (read by the correction pass only).
      metadata: ``int32 [128, L]``, one blob per launch (L = ``metadata_layout(...)["total"]`` words
        per partition); its regions, in this order, read through ``view(dtype)``:
        row_scale ``float32 [W]`` (partition = window slot r), output-row factor of slot r of window w;
        bm_cols ``uint16 [W*NB]`` column id of tile column k (partition) per slot, as its offset inside
        its band of COLUMN_BAND_ROWS rows; padding = 0xFFFF;
        bm_keep ``uint32 [W*NB, 4]`` keep words of tile column k;
        bm_factor ``float32 [W*NB]`` column scale x INT8 tile scale (0 for padding columns);
        en_cols ``uint16 [W*NE]`` column id of entry e (partition), as its offset in its band; padding = 0xFFFF;
        en_keep ``uint32 [W*NE]`` the keep word holding entry e's bit (bit e % 32);
        en_factor ``float32 [W*NE]`` column scale x INT8 tile scale (0 for padding);
        bm_int8 ``int8 [W*n_int8, 128]`` values [k, slot, r] of the INT8 slots;
        bm_fp16 ``float16 [W*n_fp16, 128]`` values of the FP16 slots;
        en_rows ``uint8 [W*NE]`` window slot of entry e;
        en_int8 ``int8 [W*n_eint8]``, en_fp16 ``float16 [W*n_efp16]`` entry values;
        only when M >= COLUMN_BAND_ROWS (``uses_bands``): bm_band ``uint8 [W*NB]`` and en_band ``uint8 [W*NE]``, the band
        of each id (PAD_BAND for padding);
        list slots (NL = n_list per window, any kind, paired: NP = ceil(NL / 2) pairs, slots 2j and
        2j + 1 of a window in pair j): li_cols ``uint16 [W*NP]`` band offset of listed column k of the pair's
        first tile (partition k < 64) or second tile (partition 64 + k), 0xFFFF for unused columns; li_keep
        ``uint32 [W*NL]`` the keep word of entry e (partition e); li_factor ``float32 [W*NL]`` column scale of
        entry e's column x the entry's value (INT8: q x tile scale; FP16: the value; BIN: 1), 0 for padding:
        the host folds the value in, so list slots of every kind share one count; li_rows ``uint8 [W*NL]``
        window slot of entry e; li_colslot ``uint8 [W*NL]`` list index of entry e, + 64 in a pair's second
        tile; li_band ``uint8 [W*NP]`` (bands only).
        Byte and half-word regions are padded to whole words; empty regions take no words.
        out_rows ``uint16 [W]`` (partition = window slot r) the row of y that slot r of window w writes, as its
        offset in its band of COLUMN_BAND_ROWS rows, 0xFFFF for a slot holding no row; out_band ``uint8 [W]`` its band
        (PAD_BAND for such a slot), only when N >= COLUMN_BAND_ROWS;
        dg_factor ``float32 [W]`` (partition = window slot r, only when ``unit_diagonal``) the column scale of slot r's
        row (the weight of its diagonal entry before the row scale), 0 for a slot holding no row.
      Slots are window-major; inside a window BIN, then INT8, then FP16 slots (per layout).
      corrections: ``int32 [128, Lc]`` correction blob (Lc = ``correction_layout(n, G)["total"]``, n =
        ceil(W / G) * C tiles, G = ``corr_group_windows``, C = ``corr_tiles_per_group``; read only when
        C > 0); partition = entry slot e of a tile, regions: hi_pos ``int32 [n]`` position in x_hi
        (padding = M_hi, skipped), rows ``float32 [n]`` window row, weight ``float32 [n, G]`` entry
        weight in each window of the tile's group (0 in the others and for padding).
        Tiles g*C .. g*C + C - 1 serve windows g*G .. g*G + G - 1.
      y: ``float32 [N, F]`` in HBM, the product's rows in their original order (N = rows of A), written in place:
        slot r of window w goes to row ``out_rows[r, w]`` by one indirect (scatter) DMA per window; rows no launch
        writes keep their contents (the launcher passes zeros). Under LNC2 both programs write into it (their rows
        are disjoint).
      n_list: list-tile slots per window, of any kind (0: the launch has none).
      unit_diagonal: 1 when A's diagonal is implicit (square A, N == M): every window adds its diagonal slot.

    Returns:
      ``y`` (written in place, returned as the ISA ``dma_copy`` scatter example returns its ``output`` argument).

    Limits: F <= 8 * 512 (one window's accumulator in the 8 PSUM banks), F <= 7 * 512 with list slots (their
      products take a bank); group <= 32; a list tile lists <= 64 columns and holds <= 128 entries;
      M <= PAD_BAND * COLUMN_BAND_ROWS (= 16,711,680) X rows;
      the blob, working buffers and output buffer must fit SBUF (the planner's budget); the
      correction pass holds at most CORRECTION_SBUF_BYTES per partition.

    Pseudocode:
      load the metadata blob of all slots (one DMA)
      ids = int32(band * 65536 + offset)  (or int32(offset) when M < 65536)  # GpSimd, once per region
      weight[e] = keep_bit(e) * factor[e] * value[e]                # all entry slots at once, all list slots at once
      for each step of S consecutive windows (all their slots fit the `group` buffers; S = 1 and
                                             groups of slots inside the window when they do not):
        for the step's bitmap slots s (contiguous, window-major):
          moving[s] = gather X rows bm_cols[:, s]   (hybrid: record -> q * scale * factor)
          shifted = keep_words << (31 - bit)                             # one instruction per step
          stationary[s] = (shifted < 0) * bm_factor[:, s]  (x values for INT8/FP16 slots)
        for the step's entry slots s:
          moving[s] = gather X rows en_cols[:, s]
          stationary[s] = (iota_r == en_rows[:, s]) * weight[:, s]
        for the step's list pairs q (slots s = 2j, 2j + 1 of window w):
          moving[q] = gather X rows li_cols[:, q]                     (hybrid: record -> q, unscaled)
          for each real slot s of the pair:
            P = (iota_k == li_colslot[:, s]);  R = (iota_r == li_rows[:, s]) * lweight[:, s]   # [128 entries, 128]
            product (+)= P.T @ R                                      # TensorE, PSUM [128, 128]
          stationary[q] = product  (x record scale of row k for a hybrid X)   # ScalarE evacuation
        for each window w of the step (unit diagonal):
          moving[d] = gather X rows out_ids[:, w];  stationary[d] = (iota_r == partition) * dg_factor[:, w]
        for each window w of the step:
          psum[chunk] = sum over w's slots, pairs (and diagonal slot) of stationary[s].T @ moving[s][:, chunk]
          if w starts its correction group g: hi_rows[i] = gather x_hi rows hi_pos[:, g*C + i], i < C
          for each correction tile t of w's group:
            psum[chunk] += ((iota_r == rows[:, t]) * weight[:, t, w % G]).T @ hi_rows[t][:, chunk]
          y_buf[:, w] = psum * row_scale[:, w]
        when y_buf holds the last window or STORE_BYTES_PER_PARTITION of rows:
          for each window w of it: y[out_rows[:, w]] <- y_buf[:, w]   # one scatter per window, slots of no row skipped
    """
    n_bitmap = n_bin + n_int8 + n_fp16
    n_entry = n_ebin + n_eint8 + n_efp16
    n_programs = nl.num_programs()
    program = nl.program_id(0)
    assert n_bitmap + n_entry + n_list + unit_diagonal >= 1, (
        "a launch needs at least one tile slot (or the unit diagonal's) per window")
    assert 1 <= n_features <= MAX_PSUM_CHUNKS * PSUM_CHUNK, (
        f"n_features={n_features}: expected 1..{MAX_PSUM_CHUNKS * PSUM_CHUNK} (8 PSUM banks of {PSUM_CHUNK} fp32)"
    )
    assert 1 <= group <= MAX_GROUP, f"group={group}: expected 1..{MAX_GROUP}"
    assert n_list == 0 or n_features <= (MAX_PSUM_CHUNKS - 1) * PSUM_CHUNK, (
        f"n_features={n_features} with list slots: expected 1..{(MAX_PSUM_CHUNKS - 1) * PSUM_CHUNK} (the list "
        f"stationaries are built in a PSUM bank of their own beside the window's accumulator)"
    )
    assert corr_tiles_per_group == 0 or hybrid, "the FP16-row correction pass needs a hybrid X"
    assert 1 <= corr_group_windows <= n_windows, (
        f"corr_group_windows={corr_group_windows}: expected 1..{n_windows} (windows of this launch)"
    )
    n_x_rows = x_rows.shape[0]
    assert n_x_rows <= PAD_BAND * COLUMN_BAND_ROWS, (
        f"X has {n_x_rows} rows; 16-bit column ids with a uint8 band reach at most {PAD_BAND * COLUMN_BAND_ROWS}"
    )
    # one band while the padding offset 0xFFFF is itself out of range (M <= 65535)
    wide_ids = uses_bands(n_x_rows)
    n_rows = y.shape[0]
    assert y.dtype == nl.float32 and len(y.shape) == 2 and y.shape[1] == n_features, (
        f"y must be float32 [N, {n_features}], got {y.dtype} {y.shape}"
    )
    assert n_rows <= PAD_BAND * COLUMN_BAND_ROWS, (
        f"y has {n_rows} rows; 16-bit row ids with a uint8 band reach at most {PAD_BAND * COLUMN_BAND_ROWS}"
    )
    wide_rows = uses_bands(n_rows)
    assert not unit_diagonal or n_rows == n_x_rows, (
        f"a unit diagonal needs a square A: y has {n_rows} rows and X {n_x_rows}, expected them equal")
    layout = metadata_layout(n_windows, (n_bin, n_int8, n_fp16), (n_ebin, n_eint8, n_efp16), wide_ids,
                             n_list, wide_rows, unit_diagonal)
    blob_words = layout["total"]
    assert metadata.dtype == nl.int32 and metadata.shape == (n_programs * TILE_COLS, blob_words), (
        f"metadata must be int32 [{n_programs} x 128, {blob_words}] (one blob per program) for this bucket, "
        f"got {metadata.dtype} {metadata.shape}"
    )
    if hybrid:
        assert x_rows.dtype == nl.int8, f"hybrid X records must be int8, got {x_rows.dtype}"
        record = x_rows.shape[1]
        feat_padded = record - RECORD_TAIL_BYTES
        assert feat_padded >= n_features and feat_padded % 4 == 0, (
            f"hybrid record width {record} must be 4-aligned F + {RECORD_TAIL_BYTES} for F={n_features}"
        )
        # int8 values are exact in bf16; the row scale travels in the stationary operand
        moving_dtype = nl.bfloat16
    else:
        assert x_rows.shape[1] == n_features, f"X must have {n_features} columns, got {x_rows.shape[1]}"
        moving_dtype = nl.float16 if x_rows.dtype == nl.float16 else nl.bfloat16
    chunks = []
    for f0 in range(0, n_features, PSUM_CHUNK):
        chunks.append((f0, min(PSUM_CHUNK, n_features - f0)))

    # ---- constants --------------------------------------------------------------------------
    # shift amount 31 - (r % 32) for window slot r = 32 * word + bit
    top_bit_shift = nl.ndarray((TILE_COLS, MASK_WORDS, MASK_WORD_BITS), dtype=nl.int32, buffer=nl.sbuf, name="shift")
    nisa.iota(dst=top_bit_shift, pattern=[[0, MASK_WORDS], [-1, MASK_WORD_BITS]], offset=MASK_WORD_BITS - 1)

    # ---- per-launch metadata: one DMA for the program's blob; regions are typed views of it ---
    blob = nl.ndarray((TILE_COLS, blob_words), dtype=nl.int32, buffer=nl.sbuf, name="metadata")
    nisa.dma_copy(dst=blob, src=metadata.ap(pattern=[[blob_words, TILE_COLS], [1, blob_words]],
                                            offset=program * TILE_COLS * blob_words))

    def region(name, dtype):
        start, words = layout[name]
        return blob[:, start:start + words].view(dtype)

    rscale = region("row_scale", nl.float32)
    # the output row of every window slot, widened like the column ids (the scatter takes int32 indices)
    out_ids = _widened_ids(region("out_rows", nl.uint16)[:, 0:n_windows],
                           region("out_band", nl.uint8)[:, 0:n_windows] if wide_rows else None, "out_ids")
    if n_bitmap:
        n_bslots = n_windows * n_bitmap
        bcols = _widened_ids(region("bm_cols", nl.uint16)[:, 0:n_bslots],
                             region("bm_band", nl.uint8)[:, 0:n_bslots] if wide_ids else None, "bm_ids")
        bkeep = region("bm_keep", nl.uint32).reshape((TILE_COLS, n_bslots, MASK_WORDS))
        bfactor = region("bm_factor", nl.float32)
        if n_int8:
            bvals8 = region("bm_int8", nl.int8).reshape((TILE_COLS, n_windows * n_int8, WINDOW_ROWS))
        if n_fp16:
            bvals16 = region("bm_fp16", nl.float16).reshape((TILE_COLS, n_windows * n_fp16, WINDOW_ROWS))
        shifted = nl.ndarray((TILE_COLS, group, WINDOW_ROWS), dtype=nl.int32, buffer=nl.sbuf, name="shifted")
    if n_entry:
        n_eslots = n_windows * n_entry
        ecols = _widened_ids(region("en_cols", nl.uint16)[:, 0:n_eslots],
                             region("en_band", nl.uint8)[:, 0:n_eslots] if wide_ids else None, "en_ids")
        ekeep = region("en_keep", nl.uint32)
        eweight = region("en_factor", nl.float32)
        # window slots travel as bytes; the row comparison takes an fp32 operand (converted on
        # GpSimd, which is less loaded than VectorE when X is dense)
        erows = nl.ndarray((TILE_COLS, n_eslots), dtype=nl.float32, buffer=nl.sbuf, name="en_rows")
        nisa.tensor_copy(dst=erows, src=region("en_rows", nl.uint8)[:, 0:n_eslots], engine=nisa.engine.gpsimd)
        entry_bit, low_bit = _entry_bit_constants()
        ebits = nl.ndarray((TILE_COLS, n_eslots), dtype=nl.int32, buffer=nl.sbuf, name="en_bits")
        nisa.tensor_scalar(dst=ebits, data=ekeep, op0=nl.right_shift, operand0=entry_bit, op1=nl.bitwise_and,
                           operand1=low_bit, engine=nisa.engine.vector)
        # the factors become the entry weights in place (the blob is this launch's own copy)
        nisa.tensor_tensor(dst=eweight, data1=eweight, data2=ebits, op=nl.multiply, engine=nisa.engine.vector)
        weight_by_window = eweight.reshape((TILE_COLS, n_windows, n_entry))
        if n_eint8:
            evals8 = region("en_int8", nl.int8)[:, 0:n_windows * n_eint8].reshape((TILE_COLS, n_windows, n_eint8))
            w8 = weight_by_window[:, :, n_ebin:n_ebin + n_eint8]
            nisa.tensor_tensor(dst=w8, data1=w8, data2=evals8, op=nl.multiply, engine=nisa.engine.vector)
        if n_efp16:
            evals16 = region("en_fp16", nl.float16)[:, 0:n_windows * n_efp16].reshape((TILE_COLS, n_windows, n_efp16))
            w16 = weight_by_window[:, :, n_ebin + n_eint8:n_entry]
            nisa.tensor_tensor(dst=w16, data1=w16, data2=evals16, op=nl.multiply, engine=nisa.engine.vector)
        row_iota = nl.ndarray((TILE_COLS, WINDOW_ROWS), dtype=nl.bfloat16, buffer=nl.sbuf, name="row_iota")
        nisa.iota(dst=row_iota, pattern=[[1, WINDOW_ROWS]], offset=0)
    n_pairs = list_pairs(n_list)
    if n_list:
        # list slots in pairs: ids with partition = listed column k of the pair's first tile (k < 64) or
        # 64 + k of its second; the other regions per slot with partition = entry e
        n_lslots = n_windows * n_list
        n_lpairs = n_windows * n_pairs
        lcols = _widened_ids(region("li_cols", nl.uint16)[:, 0:n_lpairs],
                             region("li_band", nl.uint8)[:, 0:n_lpairs] if wide_ids else None, "li_ids")
        lweight = region("li_factor", nl.float32)
        lrows = nl.ndarray((TILE_COLS, n_lslots), dtype=nl.float32, buffer=nl.sbuf, name="li_rows")
        nisa.tensor_copy(dst=lrows, src=region("li_rows", nl.uint8)[:, 0:n_lslots], engine=nisa.engine.gpsimd)
        lslots = nl.ndarray((TILE_COLS, n_lslots), dtype=nl.float32, buffer=nl.sbuf, name="li_colslot")
        nisa.tensor_copy(dst=lslots, src=region("li_colslot", nl.uint8)[:, 0:n_lslots], engine=nisa.engine.gpsimd)
        if not n_entry:
            entry_bit, low_bit = _entry_bit_constants()
        lbits = nl.ndarray((TILE_COLS, n_lslots), dtype=nl.int32, buffer=nl.sbuf, name="li_bits")
        nisa.tensor_scalar(dst=lbits, data=region("li_keep", nl.uint32), op0=nl.right_shift, operand0=entry_bit,
                           op1=nl.bitwise_and, operand1=low_bit, engine=nisa.engine.vector)
        # weight[e] = keep bit x (column scale x value), the same fp32 product as an entry tile's
        nisa.tensor_tensor(dst=lweight, data1=lweight, data2=lbits, op=nl.multiply, engine=nisa.engine.vector)
        # column k = 0..127 of a pair's stationary along the free dim of every partition (exact in bf16); the
        # blob's column slots of a pair's second tile are already offset by LIST_COLS
        col_iota = nl.ndarray((TILE_COLS, TILE_COLS), dtype=nl.bfloat16, buffer=nl.sbuf, name="col_iota")
        nisa.iota(dst=col_iota, pattern=[[1, TILE_COLS]], offset=0)
        if not n_entry:
            row_iota = nl.ndarray((TILE_COLS, WINDOW_ROWS), dtype=nl.bfloat16, buffer=nl.sbuf, name="row_iota")
            nisa.iota(dst=row_iota, pattern=[[1, WINDOW_ROWS]], offset=0)

    if unit_diagonal:
        # diagonal slot k of a window: its output row's own X row, weight dg_factor[k] on stationary row k
        dfactor = region("dg_factor", nl.float32)
        slot_index = nl.ndarray((TILE_COLS, 1), dtype=nl.float32, buffer=nl.sbuf, name="slot_index")
        nisa.iota(dst=slot_index, pattern=[[0, 1]], offset=0, channel_multiplier=1)
        if not (n_entry or n_list):
            row_iota = nl.ndarray((TILE_COLS, WINDOW_ROWS), dtype=nl.bfloat16, buffer=nl.sbuf, name="row_iota")
            nisa.iota(dst=row_iota, pattern=[[1, WINDOW_ROWS]], offset=0)

    # ---- window steps: all tile slots of `step` consecutive windows share one set of working
    # buffers, so the mask unpack and scale products run once per step. A window with more slots
    # than `group` is processed alone, in groups. Output rows collect over whole steps in y_buf
    # and leave, one scatter per window, every `store_windows` windows.
    slots_per_window = n_bitmap + n_entry + n_pairs + unit_diagonal
    step = windows_per_step(n_windows, slots_per_window, n_features, group)
    store_windows = windows_per_store(n_windows, step, n_features)

    # ---- FP16-row correction: its blob, gathered rows and stationaries --------------------------
    n_corr_groups = -(-n_windows // corr_group_windows) if corr_tiles_per_group else 0
    if n_corr_groups:
        n_corr = n_corr_groups * corr_tiles_per_group
        clayout = correction_layout(n_corr, corr_group_windows)
        corr_words = clayout["total"]
        assert corrections.dtype == nl.int32 and corrections.shape == (n_programs * TILE_COLS, corr_words), (
            f"corrections must be int32 [{n_programs} x 128, {corr_words}] (one blob per program) for {n_corr} tiles "
            f"in groups of {corr_group_windows} windows, got {corrections.dtype} {corrections.shape}"
        )
        assert x_hi.dtype == nl.float16 and x_hi.shape[1] == n_features, (
            f"x_hi must be float16 [M_hi, {n_features}], got {x_hi.dtype} {x_hi.shape}"
        )
        cblob = nl.ndarray((TILE_COLS, corr_words), dtype=nl.int32, buffer=nl.sbuf, name="corrections")
        nisa.dma_copy(dst=cblob, src=corrections.ap(pattern=[[corr_words, TILE_COLS], [1, corr_words]],
                                                    offset=program * TILE_COLS * corr_words))
        chi_pos = cblob[:, clayout["hi_pos"][0]:clayout["hi_pos"][0] + n_corr]
        crows = cblob[:, clayout["rows"][0]:clayout["rows"][0] + n_corr].view(nl.float32)
        w0c = clayout["weight"][0]
        cweight = cblob[:, w0c:w0c + n_corr * corr_group_windows].view(nl.float32).reshape(
            (TILE_COLS, n_corr, corr_group_windows))
        corr_resident = correction_buffer_tiles(corr_tiles_per_group, n_features)
        hi_rows = nl.ndarray((TILE_COLS, corr_resident, n_features), dtype=nl.float16, buffer=nl.sbuf, name="hi_rows")
        # padding positions are skipped and keep the buffer's bytes: they must be finite (weight 0)
        nisa.memset(dst=hi_rows, value=0.0, engine=nisa.engine.gpsimd)
        corr_stationary = nl.ndarray((TILE_COLS, CORRECTION_STATIONARY_BUFFERS, WINDOW_ROWS), dtype=nl.bfloat16,
                                     buffer=nl.sbuf, name="corr_stationary")
        if not (n_entry or n_list or unit_diagonal):
            row_iota = nl.ndarray((TILE_COLS, WINDOW_ROWS), dtype=nl.bfloat16, buffer=nl.sbuf, name="row_iota")
            nisa.iota(dst=row_iota, pattern=[[1, WINDOW_ROWS]], offset=0)

    # ---- working buffers (only the bytes a skipped gather could leave uninitialized are zeroed) ---
    moving = nl.ndarray((TILE_COLS, group, n_features), dtype=moving_dtype, buffer=nl.sbuf, name="moving")
    if not hybrid:
        nisa.memset(dst=moving, value=0.0)
    if hybrid:
        records = nl.ndarray((TILE_COLS, group, record), dtype=nl.int8, buffer=nl.sbuf, name="records")
        # int8 values are always finite; the fp32 scale bytes of a row never gathered must be too
        nisa.memset(dst=records[:, :, feat_padded:record], value=0, engine=nisa.engine.gpsimd)
        # per slot: the gathered rows' scale x the slot's column factor (or entry weight)
        slot_scale = nl.ndarray((TILE_COLS, group), dtype=nl.float32, buffer=nl.sbuf, name="slot_scale")
    stationary = nl.ndarray((TILE_COLS, group, WINDOW_ROWS), dtype=nl.bfloat16, buffer=nl.sbuf, name="stationary")
    if n_int8 + n_fp16:
        masked = nl.ndarray((TILE_COLS, group, WINDOW_ROWS), dtype=nl.float32, buffer=nl.sbuf, name="masked")
    if n_list:
        # the two one-hot factors of each list stationary, and the PSUM bank its product lands in
        col_onehot = nl.ndarray((TILE_COLS, LIST_BUILD_BUFFERS, TILE_COLS), dtype=nl.bfloat16, buffer=nl.sbuf,
                                name="col_onehot")
        row_weights = nl.ndarray((TILE_COLS, LIST_BUILD_BUFFERS, WINDOW_ROWS), dtype=nl.bfloat16, buffer=nl.sbuf,
                                 name="row_weights")
        list_psum = nl.ndarray((TILE_COLS, LIST_PSUM_TILES, WINDOW_ROWS), dtype=nl.float32, buffer=nl.psum,
                               name="list_psum")
    y_buf = nl.ndarray((WINDOW_ROWS, store_windows, n_features), dtype=nl.float32, buffer=nl.sbuf, name="y_buf")
    accum = []
    for c, (f0, width) in enumerate(chunks):
        accum.append(nl.ndarray((WINDOW_ROWS, width), dtype=nl.float32, buffer=nl.psum, name=f"accum{c}"))

    def per_slot(column, b0, n):
        """[128, n] per-slot scalars -> [128, n, 128] stride-0 view over the window rows."""
        return column[:, b0:b0 + n].expand_dim(2).broadcast(2, WINDOW_ROWS)

    def bitmap_slots(s0, n, b0):
        """Stationary and moving operands of bitmap slots s0..s0+n into buffer positions b0..b0+n."""
        buf = slice(b0, b0 + n)
        if hybrid:
            _gather_records(records, b0, n, x_rows, bcols, s0)
            nisa.tensor_tensor(dst=slot_scale[:, buf], data1=_record_scales(records, b0, n),
                               data2=bfactor[:, s0:s0 + n], op=nl.multiply, engine=nisa.engine.vector)
            # BIN and INT8 slots: the row scale x column factor rides on the int8 -> bf16 conversion
            # (ScalarE's free per-partition scale), so their stationary is the bare mask (x INT8 value,
            # exact in bf16); FP16 slots keep it in the stationary (one bf16 rounding of value x factor)
            for i in range(n):
                scaled = (s0 + i) % n_bitmap < n_bin + n_int8
                _int8_to_moving(moving, records, b0 + i, 1, n_features,
                                slot_scale[:, b0 + i:b0 + i + 1] if scaled else None)
            factors, f0 = slot_scale, b0
        else:
            for i in range(n):
                _gather_dense(moving, b0 + i, x_rows, bcols[:, s0 + i:s0 + i + 1], n_features)
            factors, f0 = bfactor, s0
        # keep bit r of a column -> the sign bit: one shift for all n slots
        nisa.tensor_tensor(
            dst=shifted[:, buf, :].reshape((TILE_COLS, n, MASK_WORDS, MASK_WORD_BITS)),
            data1=bkeep[:, s0:s0 + n, :].expand_dim(3).broadcast(3, MASK_WORD_BITS),
            data2=top_bit_shift.expand_dim(1).broadcast(1, n),
            op=nl.left_shift,
            engine=nisa.engine.vector,
        )
        # stationary = (keep bit set) * factor, per run of one kind: BIN runs straight into the bf16
        # stationary; valued runs stay fp32 until their values are applied, so each stationary
        # element is rounded to bf16 once
        for lo, hi, kind_lo, kind in _kind_runs(s0, n, n_bitmap, n_bin, n_int8):
            d = slice(b0 + lo - s0, b0 + hi - s0)
            w, k0 = divmod(lo, n_bitmap)
            if hybrid and kind == KIND_BIN:
                nisa.tensor_scalar(dst=stationary[:, d, :], data=shifted[:, d, :], op0=nl.less, operand0=0.0,
                                   engine=nisa.engine.vector)
                continue
            if hybrid and kind == KIND_INT8:
                v0 = w * n_int8 + (k0 - kind_lo)
                nisa.scalar_tensor_tensor(dst=stationary[:, d, :], data=shifted[:, d, :], op0=nl.less, operand0=0.0,
                                          op1=nl.multiply, operand1=bvals8[:, v0:v0 + (hi - lo), :])
                continue
            nisa.scalar_tensor_tensor(dst=(stationary if kind == KIND_BIN else masked)[:, d, :],
                                      data=shifted[:, d, :], op0=nl.less, operand0=0.0, op1=nl.multiply,
                                      operand1=per_slot(factors, f0 + lo - s0, hi - lo))
            if kind != KIND_BIN:
                count = n_int8 if kind == KIND_INT8 else n_fp16
                values = bvals8 if kind == KIND_INT8 else bvals16
                v0 = w * count + (k0 - kind_lo)
                nisa.tensor_tensor(dst=stationary[:, d, :], data1=masked[:, d, :],
                                   data2=values[:, v0:v0 + (hi - lo), :], op=nl.multiply,
                                   engine=nisa.engine.gpsimd)

    def one_hot_slots(ids, factors, i0, n, b0, row_of):
        """Stationary and moving operands of n entry-like slots into buffer positions b0..b0+n: slot i gathers the X
        rows ``ids[:, i0 + i]`` and weighs row k by ``factors[k, i0 + i]`` on stationary row ``row_of(i)[k]``."""
        if hybrid:
            _gather_records(records, b0, n, x_rows, ids, i0)
            nisa.tensor_tensor(dst=slot_scale[:, b0:b0 + n], data1=_record_scales(records, b0, n),
                               data2=factors[:, i0:i0 + n], op=nl.multiply, engine=nisa.engine.vector)
            _int8_to_moving(moving, records, b0, n, n_features)
            weights, w0 = slot_scale, b0
        else:
            for i in range(n):
                _gather_dense(moving, b0 + i, x_rows, ids[:, i0 + i:i0 + i + 1], n_features)
            weights, w0 = factors, i0
        for i in range(n):
            nisa.tensor_scalar(dst=stationary[:, b0 + i, :], data=row_iota, op0=nl.equal, operand0=row_of(i),
                               op1=nl.multiply, operand1=weights[:, w0 + i:w0 + i + 1], engine=nisa.engine.vector)

    def entry_slots(s0, n, b0):
        """Entry slots s0..s0+n: each entry's X row, one-hot on its window row, times its weight."""
        one_hot_slots(ecols, eweight, s0, n, b0, lambda i: erows[:, s0 + i:s0 + i + 1])

    def diagonal_slots(w0, n, b0):
        """The diagonal slots of windows w0..w0+n: the window's own X rows, each on its own stationary row."""
        one_hot_slots(out_ids, dfactor, w0, n, b0, lambda i: slot_index)

    list_builds = [0, 0]  # one-hot builds, paired products

    def list_slots(q0, n, b0):
        """Stationary and moving operands of list pairs q0..q0+n (two list slots of one window each) into buffer
        positions b0..b0+n: the pair's first tile on partitions 0..63, its second on 64..127."""
        if hybrid:
            _gather_records(records, b0, n, x_rows, lcols, q0)
            _int8_to_moving(moving, records, b0, n, n_features)
        else:
            for i in range(n):
                _gather_dense(moving, b0 + i, x_rows, lcols[:, q0 + i:q0 + i + 1], n_features)
        for i in range(n):
            w, j = divmod(q0 + i, n_pairs)
            product = list_psum[:, list_builds[1] % LIST_PSUM_TILES, :]
            list_builds[1] += 1
            for half in range(2):
                if 2 * j + half >= n_list:
                    break  # an odd window count: the pair's second half is padding (ids skipped, nothing built)
                s = w * n_list + 2 * j + half
                k = list_builds[0] % LIST_BUILD_BUFFERS
                list_builds[0] += 1
                # P[e, c] = (colslot[e] == c); R[e, r] = (row[e] == r) * weight[e]
                nisa.tensor_tensor(dst=col_onehot[:, k, :], data1=col_iota, data2=lslots[:, s:s + 1].broadcast(1, TILE_COLS),
                                   op=nl.equal, engine=nisa.engine.gpsimd)
                nisa.tensor_scalar(dst=row_weights[:, k, :], data=row_iota, op0=nl.equal, operand0=lrows[:, s:s + 1],
                                   op1=nl.multiply, operand1=lweight[:, s:s + 1], engine=nisa.engine.vector)
                # S[c, r] += sum_e P[e, c] R[e, r]: one weight per (c, r) at most, exact in fp32 PSUM
                nisa.nc_matmul(dst=product, stationary=col_onehot[:, k, :], moving=row_weights[:, k, :],
                               accumulate=half == 1)
            # evacuated to the bf16 stationary; a hybrid X's row scale (per listed column = partition) rides on it
            nisa.activation(dst=stationary[:, b0 + i, :], op=nl.copy, data=product,
                            scale=_record_scales(records, b0 + i, 1) if hybrid else 1.0)

    def accumulate(b0, n, first):
        for i in range(n):
            for c, (f0, width) in enumerate(chunks):
                nisa.nc_matmul(dst=accum[c], stationary=stationary[:, b0 + i, :], moving=moving[:, b0 + i, f0:f0 + width],
                               accumulate=not first)
            first = False
        return first

    corr_builds = [0]

    def correct(w):
        """Add the FP16-row correction tiles of window w's group to its accumulator."""
        g, j = divmod(w, corr_group_windows)
        for c0 in range(0, corr_tiles_per_group, corr_resident):
            n = min(corr_tiles_per_group, c0 + corr_resident) - c0
            if j == 0 or corr_resident < corr_tiles_per_group:
                # the group's tiles are gathered at its first window (or chunk by chunk when they do
                # not all fit the buffer)
                for i in range(n):
                    t = g * corr_tiles_per_group + c0 + i
                    nisa.dma_copy(dst=hi_rows[:, i, :],
                                  src=x_hi.ap(pattern=[[n_features, TILE_COLS], [1, n_features]], offset=0,
                                              vector_offset=chi_pos[:, t:t + 1], indirect_dim=0),
                                  oob_mode=nisa.oob_mode.skip)
            for i in range(n):
                t = g * corr_tiles_per_group + c0 + i
                k = corr_builds[0]
                corr_builds[0] += 1
                buf = corr_stationary[:, k % CORRECTION_STATIONARY_BUFFERS, :]
                if k % 2 == 0:
                    nisa.tensor_scalar(dst=buf, data=row_iota, op0=nl.equal, operand0=crows[:, t:t + 1],
                                       op1=nl.multiply, operand1=cweight[:, t, j:j + 1], engine=nisa.engine.vector)
                else:
                    # every other build on GpSimd, which takes tensor_tensor but no tensor_scalar beyond rsqrt:
                    # the per-entry row and weight as stride-0 broadcasts over the window rows
                    nisa.tensor_tensor(dst=buf, data1=row_iota, data2=crows[:, t:t + 1].broadcast(1, WINDOW_ROWS),
                                       op=nl.equal, engine=nisa.engine.gpsimd)
                    nisa.tensor_tensor(dst=buf, data1=buf, data2=cweight[:, t, j:j + 1].broadcast(1, WINDOW_ROWS),
                                       op=nl.multiply, engine=nisa.engine.gpsimd)
                for c, (f0, width) in enumerate(chunks):
                    nisa.nc_matmul(dst=accum[c], stationary=buf, moving=hi_rows[:, i, f0:f0 + width], accumulate=True)

    def evacuate(w, j):
        for c, (f0, width) in enumerate(chunks):
            nisa.activation(dst=y_buf[:, j, f0:f0 + width], op=nl.copy, data=accum[c], scale=rscale[:, w:w + 1])

    store_start = 0
    for w0 in range(0, n_windows, step):
        w1 = min(n_windows, w0 + step)
        k = w1 - w0
        j0 = w0 - store_start  # position of window w0 in y_buf
        if slots_per_window <= group:
            if n_bitmap:
                bitmap_slots(w0 * n_bitmap, k * n_bitmap, 0)
            if n_entry:
                entry_slots(w0 * n_entry, k * n_entry, k * n_bitmap)
            if n_list:
                list_slots(w0 * n_pairs, k * n_pairs, k * (n_bitmap + n_entry))
            if unit_diagonal:
                diagonal_slots(w0, k, k * (n_bitmap + n_entry + n_pairs))
            for w in range(w0, w1):
                first = accumulate((w - w0) * n_bitmap, n_bitmap, True)
                first = accumulate(k * n_bitmap + (w - w0) * n_entry, n_entry, first)
                first = accumulate(k * (n_bitmap + n_entry) + (w - w0) * n_pairs, n_pairs, first)
                if unit_diagonal:
                    accumulate(k * (n_bitmap + n_entry + n_pairs) + w - w0, 1, first)
                if n_corr_groups:
                    correct(w)
                evacuate(w, j0 + w - w0)
        else:
            w = w0
            first = True
            for g0 in range(0, n_bitmap, group):
                n = min(n_bitmap, g0 + group) - g0
                bitmap_slots(w * n_bitmap + g0, n, 0)
                first = accumulate(0, n, first)
            for g0 in range(0, n_entry, group):
                n = min(n_entry, g0 + group) - g0
                entry_slots(w * n_entry + g0, n, 0)
                first = accumulate(0, n, first)
            for g0 in range(0, n_pairs, group):
                n = min(n_pairs, g0 + group) - g0
                list_slots(w * n_pairs + g0, n, 0)
                first = accumulate(0, n, first)
            if unit_diagonal:
                diagonal_slots(w, 1, 0)
                first = accumulate(0, 1, first)
            if n_corr_groups:
                correct(w)
            evacuate(w, j0)
        if w1 - store_start == store_windows or w1 == n_windows:
            # each buffered window's rows go to their original rows of y: one scatter per window (the index is one
            # row per partition), slots of no row (index >= N) skipped
            for j in range(w1 - store_start):
                w = store_start + j
                nisa.dma_copy(dst=y.ap(pattern=[[n_features, WINDOW_ROWS], [1, n_features]], offset=0,
                                       vector_offset=out_ids[:, w:w + 1], indirect_dim=0),
                              src=y_buf[:, j, :], oob_mode=nisa.oob_mode.skip)
            store_start = w1
    return y


def _kind_runs(s0, n, n_bitmap, n_bin, n_int8):
    """Slots s0..s0+n split into runs of one kind: ``(lo, hi, first slot of the kind in the window, kind)``.

    Slots are window-major and, inside a window, BIN then INT8 then FP16.
    """
    runs = []
    s = s0
    while s < s0 + n:
        w, k = divmod(s, n_bitmap)
        if k < n_bin:
            kind_lo, kind_hi, kind = 0, n_bin, KIND_BIN
        elif k < n_bin + n_int8:
            kind_lo, kind_hi, kind = n_bin, n_bin + n_int8, KIND_INT8
        else:
            kind_lo, kind_hi, kind = n_bin + n_int8, n_bitmap, KIND_FP16
        hi = min(s0 + n, w * n_bitmap + kind_hi)
        runs.append((s, hi, kind_lo, kind))
        s = hi
    return runs


def _gather_dense(moving, slot, x_rows, cols, n_features):
    """moving[:, slot, :] = X rows ``cols``, converted by the DMA to the moving dtype (padding ids skipped)."""
    nisa.dma_copy(dst=moving[:, slot, :], src=x_rows.ap(pattern=[[n_features, TILE_COLS], [1, n_features]], offset=0,
                                                        vector_offset=cols, indirect_dim=0),
                  oob_mode=nisa.oob_mode.skip)


def _entry_bit_constants():
    """``(entry_bit, low_bit)``, both ``int32 [128, 1]``: e % 32 on partition e (the bit of entry e in its keep word),
    and 1 on every partition. The bitvec ``tensor_scalar`` calls take them as tile operands: the stub types a scalar
    immediate as ``float``, and no doc says how a float immediate becomes a bit pattern."""
    masks = nl.ndarray((TILE_COLS, 2), dtype=nl.int32, buffer=nl.sbuf, name="bit_masks")
    # column 0: 1, a keep word's low bit; column 1: 31, the bit positions of a 32-bit word
    nisa.iota(dst=masks, pattern=[[MASK_WORD_BITS - 2, 2]], offset=1, channel_multiplier=0)
    low_bit, bit_position_mask = masks[:, 0:1], masks[:, 1:2]
    entry_bit = nl.ndarray((TILE_COLS, 1), dtype=nl.int32, buffer=nl.sbuf, name="entry_bit")
    nisa.iota(dst=entry_bit, pattern=[[0, 1]], offset=0, channel_multiplier=1)
    nisa.tensor_scalar(dst=entry_bit, data=entry_bit, op0=nl.bitwise_and, operand0=bit_position_mask,
                       engine=nisa.engine.vector)
    return entry_bit, low_bit


def windows_per_step(n_windows, slots_per_window, n_features, group):
    """Windows whose slots share one set of working buffers (and one output store)."""
    if slots_per_window > group:
        return 1
    by_store = max(1, STORE_BYTES_PER_PARTITION // (4 * n_features))
    return max(1, min(n_windows, group // max(slots_per_window, 1), by_store))


def windows_per_store(n_windows, step, n_features):
    """Windows whose output rows collect in one buffer before their scatters: whole steps, up to
    STORE_BYTES_PER_PARTITION."""
    by_store = max(1, STORE_BYTES_PER_PARTITION // (4 * n_features))
    return min(n_windows, step * max(1, by_store // step))


def list_pairs(n_list):
    """Gathers / stationaries of a window's ``n_list`` list slots: two list tiles (<= 64 listed columns each) per pair."""
    return -(-n_list // 2)


def uses_bands(n_x_rows):
    """True when ids need a band number: the padding offset 0xFFFF would be an in-range row."""
    return n_x_rows >= COLUMN_BAND_ROWS


def _widened_ids(offsets, bands, name):
    """``int32 [128, S]`` gather indices from the blob's uint16 band offsets (and uint8 bands, or None).

    The indirect DMA's ``vector_offset`` must be an int32/uint32 ``[P, 1]`` tile, so the 16-bit ids are
    widened once per launch, on GpSimd (VectorE carries the stationaries): ``tensor_copy`` converts
    through fp32 (exact for 16-bit values); with bands, two ``tensor_tensor`` compute
    ``band * COLUMN_BAND_ROWS + offset`` in fp32 (exact below 2^24), cast to int32 on output.
    """
    ids = nl.ndarray(offsets.shape, dtype=nl.int32, buffer=nl.sbuf, name=name)
    if bands is None:
        nisa.tensor_copy(dst=ids, src=offsets, engine=nisa.engine.gpsimd)
        return ids
    band_rows = nl.ndarray((offsets.shape[0], 1), dtype=nl.float32, buffer=nl.sbuf, name=name + "_band_rows")
    nisa.memset(dst=band_rows, value=float(COLUMN_BAND_ROWS), engine=nisa.engine.gpsimd)
    nisa.tensor_tensor(dst=ids, data1=bands, data2=band_rows.broadcast(1, offsets.shape[1]), op=nl.multiply,
                       engine=nisa.engine.gpsimd)
    nisa.tensor_tensor(dst=ids, data1=ids, data2=offsets, op=nl.add, engine=nisa.engine.gpsimd)
    return ids


def metadata_layout(n_windows, bitmap_counts, entry_counts, wide_ids=False, n_list=0, wide_rows=False,
                    unit_diagonal=0):
    """Word offsets of the metadata blob's regions: ``{name: (start, words)}`` and ``"total"``.

    ``bitmap_counts`` / ``entry_counts`` are the (BIN, INT8, FP16) slots per window, ``n_list`` the list slots
    (any kind); ``wide_ids``: X has at least COLUMN_BAND_ROWS rows, so every column id also carries a uint8 band;
    ``wide_rows``: the same for the output row ids (y has at least COLUMN_BAND_ROWS rows); ``unit_diagonal``: the
    launch adds A's implicit diagonal (one fp32 factor per window slot).
    """
    n_bitmap, n_entry = sum(bitmap_counts), sum(entry_counts)
    bm_slots, en_slots, li_slots = n_windows * n_bitmap, n_windows * n_entry, n_windows * n_list
    li_pairs = n_windows * list_pairs(n_list)
    regions = (
        ("row_scale", n_windows),
        ("bm_cols", -(-(bm_slots * 2) // WORD_BYTES)),
        ("bm_keep", bm_slots * MASK_WORDS),
        ("bm_factor", bm_slots),
        ("en_cols", -(-(en_slots * 2) // WORD_BYTES)),
        ("en_keep", en_slots),
        ("en_factor", en_slots),
        ("bm_int8", n_windows * bitmap_counts[1] * WINDOW_ROWS // WORD_BYTES),
        ("bm_fp16", n_windows * bitmap_counts[2] * WINDOW_ROWS * 2 // WORD_BYTES),
        ("en_rows", -(-en_slots // WORD_BYTES)),
        ("en_int8", -(-(n_windows * entry_counts[1]) // WORD_BYTES)),
        ("en_fp16", -(-(n_windows * entry_counts[2] * 2) // WORD_BYTES)),
        ("bm_band", -(-bm_slots // WORD_BYTES) if wide_ids else 0),
        ("en_band", -(-en_slots // WORD_BYTES) if wide_ids else 0),
        ("li_cols", -(-(li_pairs * 2) // WORD_BYTES)),
        ("li_keep", li_slots),
        ("li_factor", li_slots),
        ("li_rows", -(-li_slots // WORD_BYTES)),
        ("li_colslot", -(-li_slots // WORD_BYTES)),
        ("li_band", -(-li_pairs // WORD_BYTES) if wide_ids else 0),
        ("out_rows", -(-(n_windows * 2) // WORD_BYTES)),
        ("out_band", -(-n_windows // WORD_BYTES) if wide_rows else 0),
        ("dg_factor", n_windows if unit_diagonal else 0),
    )
    layout = {}
    start = 0
    for name, words in regions:
        layout[name] = (start, words)
        start += words
    layout["total"] = start
    return layout


def correction_layout(n_tiles, group_windows):
    """Word offsets of the correction blob's regions ``{name: (start, words)}`` and ``"total"``."""
    layout, start = {}, 0
    for name, words in (("hi_pos", n_tiles), ("rows", n_tiles), ("weight", n_tiles * group_windows)):
        layout[name] = (start, words)
        start += words
    layout["total"] = start
    return layout


def correction_buffer_tiles(tiles_per_group, n_features):
    """Gathered correction tiles resident at once: a group's tiles, or as many as the budget holds."""
    by_sbuf = max(1, (CORRECTION_SBUF_BYTES // 2) // (2 * n_features))
    return min(tiles_per_group, by_sbuf)


def _gather_records(records, b0, n, x_rows, cols, s0):
    """records[:, b0 + i, :] = hybrid records of the rows ``cols[:, s0 + i]`` for i < n (one DMA each)."""
    record = x_rows.shape[1]
    for i in range(n):
        nisa.dma_copy(dst=records[:, b0 + i, :], src=x_rows.ap(pattern=[[record, TILE_COLS], [1, record]], offset=0,
                                                               vector_offset=cols[:, s0 + i:s0 + i + 1], indirect_dim=0),
                      oob_mode=nisa.oob_mode.skip)


def _record_scales(records, b0, n):
    """The fp32 row scales of records b0..b0+n, as a [128, n] strided view."""
    feat_padded = records.shape[2] - RECORD_TAIL_BYTES
    return records[:, b0:b0 + n, feat_padded:feat_padded + 4].view(nl.float32)


def _int8_to_moving(moving, records, b0, n, n_features, scale=None):
    """moving[:, b0 + i, :] = the int8 values of records b0..b0+n in bf16 (ScalarE copy): unscaled (exact),
    or times ``scale`` (an fp32 [128, 1] column: row scale x column factor, one bf16 rounding)."""
    for i in range(b0, b0 + n):
        if scale is None:
            nisa.activation(dst=moving[:, i, :], op=nl.copy, data=records[:, i, 0:n_features])
        else:
            nisa.activation(dst=moving[:, i, :], op=nl.copy, data=records[:, i, 0:n_features], scale=scale)
