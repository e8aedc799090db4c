"""Conformance kernels in the current NKI API (0.3-0.6 subset).

This file imports only ``nki``, ``nki.language`` and ``nki.isa`` so that it runs
unchanged on the real SDK, under ``nki.simulate``, or on ``dste.nkisim`` after
``dste.nkisim.install()``. Each kernel's NumPy reference lives in the tests.
"""

import nki
import nki.isa as nisa
import nki.language as nl

PMAX = nl.tile_size.pmax
STATIONARY_FMAX = nl.tile_size.gemm_stationary_fmax
MOVING_FMAX = nl.tile_size.gemm_moving_fmax


@nki.jit
def tensor_add_kernel(a, b):
    """out = a + b for [N, F] inputs, N a multiple of 128, in [128, F] tiles."""
    n_rows, n_cols = a.shape
    assert n_rows % PMAX == 0, f"expected rows to be a multiple of {PMAX}, got {n_rows}"
    out = nl.ndarray((n_rows, n_cols), dtype=a.dtype, buffer=nl.shared_hbm)
    for i in nl.affine_range(n_rows // PMAX):
        rows = nl.ds(i * PMAX, PMAX)
        a_tile = nl.ndarray((PMAX, n_cols), dtype=a.dtype, buffer=nl.sbuf)
        b_tile = nl.ndarray((PMAX, n_cols), dtype=b.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=a_tile, src=a[rows, :])
        nisa.dma_copy(dst=b_tile, src=b[rows, :])
        sum_tile = nl.ndarray((PMAX, n_cols), dtype=a.dtype, buffer=nl.sbuf)
        nisa.tensor_tensor(dst=sum_tile, data1=a_tile, data2=b_tile, op=nl.add)
        nisa.dma_copy(dst=out[rows, :], src=sum_tile)
    return out


@nki.jit
def matmul_kernel(lhs_t, rhs):
    """out[M, N] = lhs_t[K, M].T @ rhs[K, N], tiled 128 x 128 x 512, accumulating K tiles in PSUM.

    Pseudocode: for each (m, n) output tile: psum = sum_k lhs_t[k, m].T @ rhs[k, n]; out[m, n] = psum.
    """
    k_size, m_size = lhs_t.shape
    k_size2, n_size = rhs.shape
    assert k_size == k_size2, f"contraction dims differ: {k_size} vs {k_size2}"
    tile_k, tile_m, tile_n = PMAX, STATIONARY_FMAX, min(MOVING_FMAX, n_size)
    out = nl.ndarray((m_size, n_size), dtype=lhs_t.dtype, buffer=nl.shared_hbm)
    for m in nl.affine_range(m_size // tile_m):
        for n in nl.affine_range(n_size // tile_n):
            acc = nl.ndarray((tile_m, tile_n), dtype=nl.float32, buffer=nl.psum)
            for k in nl.sequential_range(k_size // tile_k):
                lhs_tile = nl.ndarray((tile_k, tile_m), dtype=lhs_t.dtype, buffer=nl.sbuf)
                rhs_tile = nl.ndarray((tile_k, tile_n), dtype=rhs.dtype, buffer=nl.sbuf)
                nisa.dma_copy(dst=lhs_tile, src=lhs_t[k * tile_k:(k + 1) * tile_k, m * tile_m:(m + 1) * tile_m])
                nisa.dma_copy(dst=rhs_tile, src=rhs[k * tile_k:(k + 1) * tile_k, n * tile_n:(n + 1) * tile_n])
                nisa.nc_matmul(dst=acc, stationary=lhs_tile, moving=rhs_tile, accumulate=(k > 0))
            result = nl.ndarray((tile_m, tile_n), dtype=out.dtype, buffer=nl.sbuf)
            nisa.tensor_copy(dst=result, src=acc)
            nisa.dma_copy(dst=out[m * tile_m:(m + 1) * tile_m, n * tile_n:(n + 1) * tile_n], src=result)
    return out


@nki.jit
def transpose_kernel(x):
    """out = x.T for x [P <= 128, F <= 128] through TensorE (PSUM) and back to SBUF."""
    p, f = x.shape
    out = nl.ndarray((f, p), dtype=x.dtype, buffer=nl.shared_hbm)
    x_tile = nl.load(x)
    t_psum = nl.ndarray((f, p), dtype=x.dtype, buffer=nl.psum)
    nisa.nc_transpose(dst=t_psum, data=x_tile)
    t_sbuf = nl.ndarray((f, p), dtype=x.dtype, buffer=nl.sbuf)
    nisa.tensor_copy(dst=t_sbuf, src=t_psum)
    nl.store(out, t_sbuf)
    return out


@nki.jit
def gather_rows_kernel(table, row_ids):
    """out[p, :] = table[row_ids[p], :] by indirect DMA; out-of-range ids leave zeros.

    table [R, F] (HBM), row_ids int32 [P <= 128, 1].
    """
    n_rows, n_cols = table.shape
    p = row_ids.shape[0]
    out = nl.ndarray((p, n_cols), dtype=table.dtype, buffer=nl.shared_hbm)
    ids = nl.ndarray((p, 1), dtype=row_ids.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=ids, src=row_ids)
    rows = nl.ndarray((p, n_cols), dtype=table.dtype, buffer=nl.sbuf)
    nisa.memset(dst=rows, value=0.0)
    nisa.dma_copy(
        dst=rows,
        src=table.ap(pattern=[[n_cols, p], [1, n_cols]], offset=0, vector_offset=ids, indirect_dim=0),
        oob_mode=nisa.oob_mode.skip,
    )
    nisa.dma_copy(dst=out, src=rows)
    return out


@nki.jit
def unpack_bits_kernel(words):
    """out[p, w * 32 + b] = bit b (LSB first) of words[p, w], as float32 1.0 / 0.0.

    words uint32 [P <= 128, W]. Two ways, which must agree: tensor_scalar (shift, and) per bit,
    and one tensor_tensor right_shift against an iota of shift amounts with a stride-0 view of the words.
    """
    p, n_words = words.shape
    bits = 32
    out_scalar = nl.ndarray((p, n_words * bits), dtype=nl.float32, buffer=nl.shared_hbm)
    out_tensor = nl.ndarray((p, n_words * bits), dtype=nl.float32, buffer=nl.shared_hbm)
    packed = nl.ndarray((p, n_words), dtype=nl.uint32, buffer=nl.sbuf)
    nisa.dma_copy(dst=packed, src=words)

    unpacked = nl.ndarray((p, n_words, bits), dtype=nl.uint32, buffer=nl.sbuf)
    for b in nl.static_range(bits):
        nisa.tensor_scalar(dst=unpacked[:, :, b], data=packed, op0=nl.right_shift, operand0=b,
                           op1=nl.bitwise_and, operand1=1)
    as_float = nl.ndarray((p, n_words * bits), dtype=nl.float32, buffer=nl.sbuf)
    nisa.tensor_copy(dst=as_float, src=unpacked.reshape((p, n_words * bits)))
    nisa.dma_copy(dst=out_scalar, src=as_float)

    shifts = nl.ndarray((p, n_words, bits), dtype=nl.uint32, buffer=nl.sbuf)
    nisa.iota(dst=shifts, pattern=[[0, n_words], [1, bits]], offset=0, channel_multiplier=0)
    shifted = nl.ndarray((p, n_words, bits), dtype=nl.uint32, buffer=nl.sbuf)
    packed_3d = packed.reshape((p, n_words, 1)).broadcast(2, bits)
    nisa.tensor_tensor(dst=shifted, data1=packed_3d, data2=shifts, op=nl.right_shift)
    ones = nl.ndarray((p, n_words, bits), dtype=nl.uint32, buffer=nl.sbuf)
    nisa.memset(dst=ones, value=1)
    masked = nl.ndarray((p, n_words, bits), dtype=nl.uint32, buffer=nl.sbuf)
    nisa.tensor_tensor(dst=masked, data1=shifted, data2=ones, op=nl.bitwise_and)
    as_float2 = nl.ndarray((p, n_words * bits), dtype=nl.float32, buffer=nl.sbuf)
    nisa.tensor_copy(dst=as_float2, src=masked.reshape((p, n_words * bits)))
    nisa.dma_copy(dst=out_tensor, src=as_float2)
    return out_scalar, out_tensor


@nki.jit
def scale_bias_activation_kernel(x, scale, bias, func_id):
    """out = act(x * scale[p] + bias[p]) for x [P, F], scale and bias [P, 1]; act by id (0 copy, 1 exp, 2 relu)."""
    p, f = x.shape
    func = (nl.copy, nl.exp, nl.relu)[func_id]
    out = nl.ndarray((p, f), dtype=nl.float32, buffer=nl.shared_hbm)
    x_tile = nl.load(x)
    scale_tile = nl.load(scale)
    bias_tile = nl.load(bias)
    result = nl.ndarray((p, f), dtype=nl.float32, buffer=nl.sbuf)
    nisa.activation(dst=result, op=func, data=x_tile, bias=bias_tile, scale=scale_tile)
    nl.store(out, result)
    return out


@nki.jit
def reduce_kernel(x):
    """Row sums over the last axis, row max over the last two axes, of x [P, A, B] (float32)."""
    p, a, b = x.shape
    sums = nl.ndarray((p, a), dtype=nl.float32, buffer=nl.shared_hbm)
    maxes = nl.ndarray((p, 1), dtype=nl.float32, buffer=nl.shared_hbm)
    x_tile = nl.load(x)
    sum_tile = nl.ndarray((p, a), dtype=nl.float32, buffer=nl.sbuf)
    nisa.tensor_reduce(dst=sum_tile, op=nl.add, data=x_tile, axis=2)
    max_tile = nl.ndarray((p, 1), dtype=nl.float32, buffer=nl.sbuf)
    nisa.tensor_reduce(dst=max_tile, op=nl.maximum, data=x_tile, axis=[1, 2], keepdims=False)
    nl.store(sums, sum_tile)
    nl.store(maxes, max_tile)
    return sums, maxes


@nki.jit
def cast_kernel(x):
    """fp32 x [P, F] cast by tensor_copy to int8, bf16, fp16 and int32 (each returned)."""
    p, f = x.shape
    x_tile = nl.load(x)
    outs = []
    for dtype in (nl.int8, nl.bfloat16, nl.float16, nl.int32):
        tile = nl.ndarray((p, f), dtype=dtype, buffer=nl.sbuf)
        nisa.tensor_copy(dst=tile, src=x_tile)
        out = nl.ndarray((p, f), dtype=dtype, buffer=nl.shared_hbm)
        nl.store(out, tile)
        outs.append(out)
    return tuple(outs)
