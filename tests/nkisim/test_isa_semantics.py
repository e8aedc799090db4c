"""Instruction semantics not covered by the conformance kernels, each against NumPy."""

import ml_dtypes
import numpy as np
import pytest

import dste.nkisim as sim
from dste.nkisim import isa as nisa
from dste.nkisim import language as nl
from dste.nkisim.errors import ConstraintError, NkiValidationError

RNG = np.random.default_rng(7)


def simulate(kernel, *args, **kwargs):
    return sim.simulate(kernel)(*args, **kwargs)


def test_uninitialised_memory_is_all_ones_bytes():
    def kernel():
        f = nl.ndarray((4, 3), nl.float32, buffer=nl.sbuf)
        i = nl.ndarray((4, 3), nl.int32, buffer=nl.sbuf)
        out_f = nl.ndarray((4, 3), nl.float32, buffer=nl.shared_hbm)
        out_i = nl.ndarray((4, 3), nl.int32, buffer=nl.shared_hbm)
        nisa.dma_copy(dst=out_f, src=f)
        nisa.dma_copy(dst=out_i, src=i)
        return out_f, out_i

    out_f, out_i = simulate(kernel)
    assert np.isnan(out_f).all()
    assert (out_i == -1).all()


@pytest.mark.parametrize("view_dtype", [nl.float32, nl.bfloat16, nl.float16])
def test_never_written_bytes_of_an_integer_tensor_read_as_float_are_nan(view_dtype):
    # language guide: "ndarray does not initialize memory"; an int8 buffer whose float-viewed bytes were never
    # written must not read as a harmless finite number (0 * it would then hide the bug)
    def kernel():
        raw = nl.ndarray((4, 8), nl.int8, buffer=nl.sbuf)
        as_float = raw.view(view_dtype)
        out = nl.ndarray(as_float.shape, nl.float32, buffer=nl.shared_hbm)
        nisa.dma_copy(dst=out, src=as_float)
        return out

    assert np.isnan(simulate(kernel)).all()


@pytest.mark.parametrize("vector_operand", [False, True])
def test_tensor_scalar_two_ops_arithmetic_and_comparison(vector_operand):
    x = RNG.standard_normal((128, 20)).astype(np.float32)
    col = RNG.standard_normal((128, 1)).astype(np.float32)

    def kernel(x, col):
        xt, ct = nl.load(x), nl.load(col)
        operand = ct if vector_operand else 0.25
        fused = nl.ndarray(x.shape, nl.float32)
        nisa.tensor_scalar(dst=fused, data=xt, op0=nl.subtract, operand0=operand, reverse0=True,
                           op1=nl.multiply, operand1=3.0)
        cmp = nl.ndarray(x.shape, nl.float32)
        nisa.tensor_scalar(dst=cmp, data=xt, op0=nl.greater, operand0=operand)
        out1 = nl.ndarray(x.shape, nl.float32, buffer=nl.shared_hbm)
        out2 = nl.ndarray(x.shape, nl.float32, buffer=nl.shared_hbm)
        nl.store(out1, fused)
        nl.store(out2, cmp)
        return out1, out2

    fused, cmp = simulate(kernel, x, col)
    operand = col if vector_operand else np.float32(0.25)
    np.testing.assert_array_equal(fused, ((operand - x) * np.float32(3.0)).astype(np.float32))
    np.testing.assert_array_equal(cmp, (x > operand).astype(np.float32))


def test_equal_produces_one_and_zero_and_int_compare_via_fp32():
    ids = RNG.integers(0, 5, (128, 16)).astype(np.int32)

    def kernel(ids):
        t = nl.load(ids)
        eq = nl.ndarray(ids.shape, nl.float32)
        nisa.tensor_scalar(dst=eq, data=t, op0=nl.equal, operand0=3)
        out = nl.ndarray(ids.shape, nl.float32, buffer=nl.shared_hbm)
        nl.store(out, eq)
        return out

    np.testing.assert_array_equal(simulate(kernel, ids), (ids == 3).astype(np.float32))


def test_iota_pattern_and_channel_multiplier():
    def kernel():
        t = nl.ndarray((8, 3, 4), nl.int32)
        nisa.iota(dst=t, pattern=[[10, 3], [2, 4]], offset=5, channel_multiplier=100)
        out = nl.ndarray((8, 3, 4), nl.int32, buffer=nl.shared_hbm)
        nl.store(out, t)
        return out

    p, i, j = np.meshgrid(np.arange(8), np.arange(3), np.arange(4), indexing="ij")
    np.testing.assert_array_equal(simulate(kernel), 5 + 100 * p + 10 * i + 2 * j)


def test_gpsimd_int32_math_is_exact_and_vector_is_fp32():
    a = np.full((4, 2), 2**24 + 1, np.int32)
    b = np.ones((4, 2), np.int32)

    def kernel(a, b):
        at, bt = nl.load(a), nl.load(b)
        exact = nl.ndarray(a.shape, nl.int32)
        nisa.tensor_tensor(dst=exact, data1=at, data2=bt, op=nl.add)  # default engine: GpSimd
        approx = nl.ndarray(a.shape, nl.int32)
        nisa.tensor_tensor(dst=approx, data1=at, data2=bt, op=nl.add, engine=nisa.engine.vector)
        o1 = nl.ndarray(a.shape, nl.int32, buffer=nl.shared_hbm)
        o2 = nl.ndarray(a.shape, nl.int32, buffer=nl.shared_hbm)
        nl.store(o1, exact)
        nl.store(o2, approx)
        return o1, o2

    exact, approx = simulate(kernel, a, b)
    assert (exact == 2**24 + 2).all()
    # fp32: 2^24 + 1 rounds to 2^24, plus 1 rounds (half to even) back to 2^24.
    assert (approx == 2**24).all()


def test_int32_default_engine_is_gpsimd_for_arithmetic_and_vector_for_bitvec():
    """The stub gives GpSimd as the default for int32 arithmetic and describes bitvec operators on VectorE."""
    a = np.arange(8, dtype=np.int32).reshape(4, 2)

    def kernel(a, op):
        at = nl.load(a)
        dst = nl.ndarray(a.shape, nl.int32)
        nisa.tensor_tensor(dst=dst, data1=at, data2=at, op=op)
        out = nl.ndarray(a.shape, nl.int32, buffer=nl.shared_hbm)
        nl.store(out, dst)
        return out

    for op, engine in ((nl.add, "gpsimd"), (nl.bitwise_xor, "vector")):
        _, prof = sim.run_kernel(kernel, (a, op), {}, target="trn2")
        assert prof.instructions[engine] == 1, (op, dict(prof.instructions))


def test_bitwise_ops_and_left_shift_on_uint32():
    a = RNG.integers(0, 2**32, (16, 8), dtype=np.uint64).astype(np.uint32)
    b = RNG.integers(0, 2**32, (16, 8), dtype=np.uint64).astype(np.uint32)

    def kernel(a, b):
        at, bt = nl.load(a), nl.load(b)
        outs = []
        for op in (nl.bitwise_and, nl.bitwise_or, nl.bitwise_xor):
            r = nl.ndarray(a.shape, nl.uint32)
            nisa.tensor_tensor(dst=r, data1=at, data2=bt, op=op)
            o = nl.ndarray(a.shape, nl.uint32, buffer=nl.shared_hbm)
            nl.store(o, r)
            outs.append(o)
        r = nl.ndarray(a.shape, nl.uint32)
        nisa.tensor_scalar(dst=r, data=at, op0=nl.left_shift, operand0=3, op1=nl.bitwise_or, operand1=5)
        o = nl.ndarray(a.shape, nl.uint32, buffer=nl.shared_hbm)
        nl.store(o, r)
        outs.append(o)
        return tuple(outs)

    and_, or_, xor_, shl = simulate(kernel, a, b)
    np.testing.assert_array_equal(and_, a & b)
    np.testing.assert_array_equal(or_, a | b)
    np.testing.assert_array_equal(xor_, a ^ b)
    np.testing.assert_array_equal(shl, (a << np.uint32(3)) | np.uint32(5))


def test_tensor_copy_predicated_keeps_dst_where_false():
    src = RNG.standard_normal((32, 10)).astype(np.float32)
    pred = RNG.integers(0, 2, (32, 10)).astype(np.uint8)

    def kernel(src, pred):
        s, p = nl.load(src), nl.load(pred)
        d = nl.ndarray(src.shape, nl.float32)
        nisa.memset(dst=d, value=-7.0)
        nisa.tensor_copy_predicated(dst=d, src=s, predicate=p)
        o = nl.ndarray(src.shape, nl.float32, buffer=nl.shared_hbm)
        nl.store(o, d)
        return o

    np.testing.assert_array_equal(simulate(kernel, src, pred), np.where(pred != 0, src, np.float32(-7.0)))


def test_tensor_tensor_scan_linear_recurrence():
    a = RNG.uniform(0.5, 1.0, (16, 12)).astype(np.float32)
    b = RNG.standard_normal((16, 12)).astype(np.float32)

    def kernel(a, b):
        at, bt = nl.load(a), nl.load(b)
        d = nl.ndarray(a.shape, nl.float32)
        nisa.tensor_tensor_scan(dst=d, data0=at, data1=bt, initial=0.5, op0=nl.multiply, op1=nl.add)
        o = nl.ndarray(a.shape, nl.float32, buffer=nl.shared_hbm)
        nl.store(o, d)
        return o

    expected = np.empty_like(a)
    prev = np.full(16, 0.5, np.float32)
    for i in range(12):
        prev = a[:, i] * prev + b[:, i]
        expected[:, i] = prev
    np.testing.assert_allclose(simulate(kernel, a, b), expected, rtol=1e-6)


def test_psum_accumulate_none_overwrites_first_then_adds():
    a = RNG.standard_normal((64, 32)).astype(np.float32)
    b = RNG.standard_normal((64, 16)).astype(np.float32)

    def kernel(a, b):
        at, bt = nl.load(a), nl.load(b)
        acc = nl.ndarray((32, 16), nl.float32, buffer=nl.psum)
        for _ in range(3):
            nisa.nc_matmul(dst=acc, stationary=at, moving=bt)
        nisa.nc_matmul(dst=acc, stationary=at, moving=bt, accumulate=True)
        once = nl.ndarray((32, 16), nl.float32, buffer=nl.psum)
        nisa.nc_matmul(dst=once, stationary=at, moving=bt, accumulate=False)
        r1, r2 = nl.ndarray((32, 16), nl.float32), nl.ndarray((32, 16), nl.float32)
        nisa.tensor_copy(dst=r1, src=acc)
        nisa.tensor_copy(dst=r2, src=once)
        o1 = nl.ndarray((32, 16), nl.float32, buffer=nl.shared_hbm)
        o2 = nl.ndarray((32, 16), nl.float32, buffer=nl.shared_hbm)
        nl.store(o1, r1)
        nl.store(o2, r2)
        return o1, o2

    four, once = simulate(kernel, a, b)
    ref = a.astype(np.float64).T @ b
    # fp32 accumulation of 64-term dot products: relative error well below 1e-5.
    np.testing.assert_allclose(once, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(four, 4 * ref, rtol=1e-5, atol=4e-5)


def test_psum_accumulate_none_decides_per_location():
    # accumulate=None: "first write overwrites, subsequent writes accumulate" per PSUM location (nki/api/nki/isa/
    # __init__.py L541-547; overlapping accumulation regions, release-notes/components/nki.rst L85): after a matmul
    # into columns 0-3, a matmul into columns 0-7 adds onto 0-3 and overwrites the never-written (NaN) 4-7
    st = np.arange(8.0, dtype=np.float32).reshape(2, 4) / 4  # multiples of 1/8: every product and sum is exact in fp32
    mv = np.arange(16.0, dtype=np.float32).reshape(2, 8) / 8

    def kernel(st, mv):
        s, m = nl.load(st), nl.load(mv)
        acc = nl.ndarray((4, 8), nl.float32, buffer=nl.psum)
        nisa.nc_matmul(dst=acc[:, 0:4], stationary=s, moving=m[:, 0:4])
        nisa.nc_matmul(dst=acc, stationary=s, moving=m)
        r = nl.ndarray((4, 8), nl.float32)
        nisa.tensor_copy(dst=r, src=acc)
        o = nl.ndarray((4, 8), nl.float32, buffer=nl.shared_hbm)
        nl.store(o, r)
        return o

    product = st.astype(np.float64).T @ mv
    expected = product.copy()
    expected[:, 0:4] *= 2
    np.testing.assert_array_equal(simulate(kernel, st, mv), expected)


def test_scatter_and_scalar_offset():
    table = np.zeros((20, 4), np.float32)
    rows = RNG.standard_normal((8, 4)).astype(np.float32)
    ids = np.array([[3], [19], [0], [7], [25], [11], [2], [5]], np.int32)  # 25: skipped
    start = np.array([[6]], np.int32)

    def kernel(table, rows, ids, start):
        idx, r = nl.load(ids), nl.load(rows)
        nisa.dma_copy(dst=table.ap(pattern=[[4, 8], [1, 4]], offset=0, vector_offset=idx, indirect_dim=0), src=r,
                      oob_mode=nisa.oob_mode.skip)
        s = nl.load(start)
        window = nl.ndarray((2, 4), nl.float32)
        nisa.dma_copy(dst=window, src=table.ap(pattern=[[4, 2], [1, 4]], offset=0, scalar_offset=s, indirect_dim=0))
        out = nl.ndarray((2, 4), nl.float32, buffer=nl.shared_hbm)
        nl.store(out, window)
        return out

    window = simulate(kernel, table, rows, ids, start)
    expected = np.zeros((20, 4), np.float32)
    for p, i in enumerate(ids[:, 0]):
        if i < 20:
            expected[i] = rows[p]
    np.testing.assert_array_equal(table, expected)  # the kernel's write to its input is copied back
    np.testing.assert_array_equal(window, expected[6:8])


def test_a_scatter_through_a_reshaped_view_indexes_the_views_rows():
    # "the dimension is relative to the base tensor" (nki-aps.rst): on table.reshape((32,)) an index names one of
    # 32 elements. Bounding it by the allocation's 8 rows skipped indices 10, 20, 31 under oob_mode.skip, silently.
    ids = np.array([[1], [10], [20], [31], [32]], np.int32)  # 32 is past the end: skipped
    values = np.arange(1.0, 6.0, dtype=np.float32).reshape(5, 1)

    def kernel(table, ids, values, mode):
        idx, v = nl.load(ids), nl.load(values)
        flat = table.reshape((32,))
        nisa.dma_copy(dst=flat.ap(pattern=[[1, 5], [1, 1]], offset=0, vector_offset=idx, indirect_dim=0), src=v,
                      oob_mode=mode)
        return table

    table = np.zeros((8, 4), np.float32)
    simulate(lambda t, i, v: kernel(t, i, v, nisa.oob_mode.skip), table, ids, values)
    expected = np.zeros(32, np.float32)
    expected[[1, 10, 20, 31]] = [1.0, 2.0, 3.0, 4.0]
    np.testing.assert_array_equal(table.reshape(-1), expected)
    with pytest.raises(IndexError, match=r"index 32 .* outside the allowed range \[0, 32\)"):
        simulate(lambda t, i, v: kernel(t, i, v, nisa.oob_mode.error), np.zeros((8, 4), np.float32), ids, values)


def test_a_scalar_offset_steps_a_dim_of_the_base_tensor_beyond_the_pattern():
    # "the dimension is relative to the base tensor, not relative to the pattern specified" (nki-aps.rst): AWS's
    # attention_block_tkg writes new tokens at position `pos` of dim 2 of a [B, d, S] cache with a 2-entry pattern
    cache = np.zeros((2, 4, 16), np.float32)
    new = np.arange(1.0, 13.0, dtype=np.float32).reshape(4, 3)

    def kernel(cache, new, pos):
        p = nl.load(pos)
        nisa.dma_copy(dst=cache.ap(pattern=[[16, 4], [1, 3]], offset=16 * 4, scalar_offset=p, indirect_dim=2),
                      src=nl.load(new))
        return cache

    out = simulate(kernel, cache, new, np.array([[5]], np.int32))
    expected = np.zeros((2, 4, 16), np.float32)
    expected[1, :, 5:8] = new
    np.testing.assert_array_equal(out, expected)
    with pytest.raises(IndexError, match=r"indirect_dim=3.* the tensor has 3 dims"):
        simulate(lambda c, n, p: nisa.dma_copy(dst=c.ap(pattern=[[16, 4], [1, 3]], scalar_offset=nl.load(p),
                                                        indirect_dim=3), src=nl.load(n)), cache, new,
                 np.array([[5]], np.int32))


def test_a_vector_offset_takes_one_index_per_partition():
    # a (P, 1) tile as the dma_copy docstring shows, or (P, 1, 1) as AWS's router_topk builds it; not (P, 2)
    table = np.arange(8 * 4, dtype=np.float32).reshape(8, 4)

    def kernel(table, ids):
        idx = nl.load(ids)
        rows = nl.ndarray((2, 4), nl.float32)
        nisa.dma_copy(dst=rows, src=table.ap(pattern=[[4, 2], [1, 4]], offset=0, vector_offset=idx, indirect_dim=0))
        out = nl.ndarray(rows.shape, nl.float32, buffer=nl.shared_hbm)
        nl.store(out, rows)
        return out

    np.testing.assert_array_equal(simulate(kernel, table, np.array([[[5]], [[2]]], np.int32)), table[[5, 2]])
    with pytest.raises(ConstraintError, match=r"index shape must be \(2, 1\).*got \(2, 2\)"):
        simulate(kernel, table, np.array([[5, 1], [2, 0]], np.int32))


def test_oob_skip_skips_a_gather_row_whose_pattern_runs_past_the_tensor():
    # index 7 of 8 rows is in range, but a two-row pattern (or an offset) from it addresses past the end: skip
    # skips that transfer "for a given dynamic address or index when it is out of bound" (nisa.dma_copy)
    table = np.arange(8 * 4, dtype=np.float32).reshape(8, 4)
    ids = np.array([[7], [1]], np.int32)

    def gather(pattern, offset, skip):
        return simulate(lambda table, ids: kernel(table, ids, pattern, offset, skip), table, ids)

    def kernel(table, ids, pattern, offset, skip):
        idx = nl.load(ids)
        rows = nl.ndarray((2, pattern[-1][1]), nl.float32)
        nisa.memset(dst=rows, value=-3.0)
        mode = nisa.oob_mode.skip if skip else nisa.oob_mode.error
        nisa.dma_copy(dst=rows, src=table.ap(pattern=pattern, offset=offset, vector_offset=idx, indirect_dim=0),
                      oob_mode=mode)
        out = nl.ndarray(rows.shape, nl.float32, buffer=nl.shared_hbm)
        nl.store(out, rows)
        return out

    wide = gather([[4, 2], [1, 8]], 0, True)
    np.testing.assert_array_equal(wide, [[-3.0] * 8, table[1:3].reshape(-1)])
    shifted = gather([[4, 2], [1, 4]], 2, True)
    np.testing.assert_array_equal(shifted, [[-3.0] * 4, np.r_[table[1, 2:], table[2, :2]]])
    with pytest.raises(IndexError, match="reach outside its storage"):
        gather([[4, 2], [1, 8]], 0, False)


def test_oob_skip_skips_a_transfer_whose_scalar_offset_is_out_of_bounds():
    table = np.arange(8 * 4, dtype=np.float32).reshape(8, 4)

    def kernel(table, start, skip):
        s = nl.load(start)
        window = nl.ndarray((2, 4), nl.float32)
        nisa.memset(dst=window, value=-3.0)
        mode = nisa.oob_mode.skip if skip else nisa.oob_mode.error
        nisa.dma_copy(dst=window, src=table.ap(pattern=[[4, 2], [1, 4]], offset=0, scalar_offset=s, indirect_dim=0),
                      oob_mode=mode)
        out = nl.ndarray((2, 4), nl.float32, buffer=nl.shared_hbm)
        nl.store(out, window)
        return out

    np.testing.assert_array_equal(simulate(kernel, table, np.array([[9]], np.int32), True), np.full((2, 4), -3.0))
    np.testing.assert_array_equal(simulate(kernel, table, np.array([[6]], np.int32), True), table[6:8])
    with pytest.raises(IndexError):
        simulate(kernel, table, np.array([[9]], np.int32), False)


def test_language_transpose_casts_to_the_dtype_asked_for():
    x = np.array([[1.00390625, 2.0], [3.0, 1e-3]], np.float32)

    def kernel(x):
        t = nl.transpose(nl.load(x), dtype=nl.bfloat16)
        assert t.dtype == nl.bfloat16
        wide = nl.ndarray(t.shape, nl.float32)
        nisa.tensor_copy(dst=wide, src=t)
        out = nl.ndarray(t.shape, nl.float32, buffer=nl.shared_hbm)
        nl.store(out, wide)
        return out

    np.testing.assert_array_equal(simulate(kernel, x), x.T.astype(ml_dtypes.bfloat16).astype(np.float32))


def test_oob_skip_moves_no_bytes_but_pays_the_transfer():
    table = RNG.standard_normal((10, 16)).astype(np.float32)
    ids = np.array([[0], [99], [99], [1]], np.int32)

    def kernel(table, ids):
        idx = nl.load(ids)
        rows = nl.ndarray((4, 16), nl.float32)
        nisa.dma_copy(dst=rows, src=table.ap(pattern=[[16, 4], [1, 16]], offset=0, vector_offset=idx),
                      oob_mode=nisa.oob_mode.skip)

    _, prof = sim.profile(kernel, table, ids)
    assert prof.dma_transfers == 2
    assert prof.dma_bytes == 4 * 4 + 2 * 16 * 4  # index load + two valid rows


def test_views_step_slices_view_dtype_broadcast_permute():
    x = np.arange(8 * 12, dtype=np.float32).reshape(8, 12)

    def kernel(x):
        t = nl.load(x)
        out_step = nl.ndarray((8, 4), nl.float32, buffer=nl.shared_hbm)
        nisa.dma_copy(dst=out_step, src=t[:, 1:12:3])
        bits = nl.ndarray((8, 12), nl.uint32, buffer=nl.shared_hbm)
        nisa.dma_copy(dst=bits, src=t.view(nl.uint32))
        col = t[:, 0:1]
        wide = nl.ndarray((8, 5), nl.float32)
        nisa.tensor_copy(dst=wide, src=col.broadcast(1, 5))
        out_b = nl.ndarray((8, 5), nl.float32, buffer=nl.shared_hbm)
        nl.store(out_b, wide)
        out_p = nl.ndarray((8, 4, 3), nl.float32, buffer=nl.shared_hbm)
        nisa.dma_copy(dst=out_p, src=t.reshape((8, 3, 4)).permute((0, 2, 1)))
        return out_step, bits, out_b, out_p

    step, bits, b, p = simulate(kernel, x)
    np.testing.assert_array_equal(step, x[:, 1:12:3])
    np.testing.assert_array_equal(bits, x.view(np.uint32))
    np.testing.assert_array_equal(b, np.repeat(x[:, :1], 5, axis=1))
    np.testing.assert_array_equal(p, x.reshape(8, 3, 4).transpose(0, 2, 1))


def test_dma_converts_dtypes_through_fp32():
    x = np.array([[1.5, -2.5, 3.25, 1000.0]], np.float32)

    def kernel(x):
        out_bf = nl.ndarray(x.shape, nl.bfloat16, buffer=nl.shared_hbm)
        out_i8 = nl.ndarray(x.shape, nl.int8, buffer=nl.shared_hbm)
        nisa.dma_copy(dst=out_bf, src=x)
        nisa.dma_copy(dst=out_i8, src=x)
        return out_bf, out_i8

    bf, i8 = simulate(kernel, x)
    np.testing.assert_array_equal(bf.view(np.uint16), x.astype(ml_dtypes.bfloat16).view(np.uint16))
    np.testing.assert_array_equal(i8, [[2, -2, 3, 127]])


def _lnc2_kernel(extra):
    """A kernel that doubles its program's half of x, running ``extra(program, doubled_tile, counts)`` before the
    store."""

    @sim.jit
    def kernel(x, counts):
        out = nl.ndarray(x.shape, nl.float32, buffer=nl.shared_hbm)
        half = x.shape[0] // nl.num_programs()
        rows = nl.ds(nl.program_id(0) * half, half)
        t = nl.load(x[rows, :])
        doubled = nl.ndarray(t.shape, nl.float32)
        nisa.tensor_scalar(dst=doubled, data=t, op0=nl.multiply, operand0=2.0)
        extra(nl.program_id(0), doubled, counts)
        nl.store(out[rows, :], doubled)
        return out

    return kernel


def _no_extra(program, tile, counts):
    pass


def _static_branch(program, tile, counts):
    if program == 1:
        nisa.memset(dst=tile, value=0.0)


def _clear(tile):
    def body(i):
        nisa.memset(dst=tile, value=0.0)
    return body


def _loop_turns_by_program(program, tile, counts):
    nl.fori_loop(0, program, _clear(tile))


def _loop_turns_by_data(program, tile, counts):
    # each core reads its own trip count from HBM: dynamic control flow that differs between the cores
    trips = nisa.register_alloc()
    nisa.register_load(trips, counts[program:program + 1, :])
    nl.fori_loop(0, trips, _clear(tile))


def _register_condition_by_data(program, tile, counts):
    flag = nisa.register_alloc()
    nisa.register_load(flag, counts[program:program + 1, :])
    with pytest.warns(DeprecationWarning, match="deprecated"):
        if flag:
            nisa.memset(dst=tile, value=0.0)


def test_lnc2_program_ids_share_the_output():
    x = RNG.standard_normal((256, 8)).astype(np.float32)
    kernel = _lnc2_kernel(_no_extra)
    counts = np.zeros((2, 1), np.int32)
    np.testing.assert_array_equal(kernel[2](x, counts), 2 * x)
    assert kernel[2].fn is kernel.fn
    with pytest.raises(TypeError, match="1 or 2"):
        kernel[4]


@pytest.mark.parametrize("extra", [_loop_turns_by_program, _loop_turns_by_data, _register_condition_by_data])
def test_lnc2_programs_must_decide_dynamic_control_flow_alike(extra):
    # lnc.rst, Final Notes: "if you use dynamic control flow, and this control-flow is different on the different
    # cores, then the behavior is undefined"
    x = RNG.standard_normal((128, 8)).astype(np.float32)
    counts = np.array([[0], [1]], dtype=np.int32)
    with pytest.raises(NkiValidationError, match=r"decide dynamic control flow differently at .*test_isa_semantics"
                                                 r".*on program 0.*on program 1.*kernel.lnc.same-program"):
        _lnc2_kernel(extra)[2](x, counts)
    # one core on its own has nothing to differ from
    _lnc2_kernel(extra)[1](x, counts)
    # the same program with equal trip counts on both cores runs
    if extra is not _loop_turns_by_program:
        np.testing.assert_array_equal(_lnc2_kernel(extra)[2](x, np.array([[0], [0]], np.int32)), 2 * x)
    np.testing.assert_array_equal(_lnc2_kernel(_no_extra)[2](x, counts), 2 * x)


def test_lnc2_programs_may_differ_in_python_control_flow():
    # lnc.rst: the compiler satisfies "the same program" by itself except for dynamic control flow; the ISA stub's
    # core_barrier example branches on the core id in Python, as AWS's nki-library kernels do to split uneven work
    x = RNG.standard_normal((128, 8)).astype(np.float32)
    out = _lnc2_kernel(_static_branch)[2](x, np.zeros((2, 1), np.int32))
    np.testing.assert_array_equal(out[:64], 2 * x[:64])
    np.testing.assert_array_equal(out[64:], 0.0)

    def extra_turns(program, tile, counts):  # a Python loop whose length differs: the dynamic loop inside agrees
        for _ in range(program + 1):
            nl.fori_loop(0, 1, _clear(tile))

    np.testing.assert_array_equal(_lnc2_kernel(extra_turns)[2](x, np.zeros((2, 1), np.int32)), 0.0)


def test_a_kernels_arguments_report_an_official_memory_region():
    # MemoryRegion has sbuf, psum, private_hbm, shared_hbm; nl.hbm is "Alias of private_hbm" (language stub). A
    # one-core launch's arguments reported "hbm", equal to none of them, and AWS's attention_bwd took them for
    # on-chip tensors (its is_hbm_buffer tests `buffer in (nl.hbm, nl.shared_hbm, nl.private_hbm)`).
    seen = {}

    @sim.jit
    def kernel(x):
        seen[nl.num_programs()] = (x.buffer, x.buffer in (nl.hbm, nl.shared_hbm, nl.private_hbm), nl.is_hbm(x.buffer))
        out = nl.ndarray(x.shape, x.dtype, buffer=nl.shared_hbm)
        nl.store(out, nl.load(x))
        return out

    x = np.ones((128, 4), np.float32)
    kernel(x)
    kernel[2](x)
    assert seen == {1: ("private_hbm", True, True), 2: ("shared_hbm", True, True)}
    assert seen[1][0] == nl.hbm


def test_program_ndim_is_zero_without_a_launch_grid():
    # "the number of dimensions in the launch grid ... 0 if no grid" (nki/api/nki/language/__init__.py L2610-2613);
    # kernel(x) names no core count (nki/get-started/about/lnc.rst L44-52), kernel[n](x) a 1-D grid
    seen = []

    @sim.jit
    def kernel(x):
        seen.append(nl.program_ndim())

    x = np.zeros((1, 1), np.float32)
    kernel(x)
    kernel[1](x)
    kernel[2](x)
    sim.profile(kernel, x)
    sim.profile(kernel[1], x)
    assert seen == [0, 1, 1, 1, 0, 1]


def test_high_level_nl_functions():
    x = RNG.standard_normal((16, 8)).astype(np.float32)

    def kernel(x):
        t = nl.load(x)
        out = nl.ndarray(x.shape, nl.float32, buffer=nl.shared_hbm)
        nl.store(out, nl.add(nl.exp(t), t))
        return out

    np.testing.assert_allclose(simulate(kernel, x), np.exp(x) + x, rtol=1e-6)


def test_nl_zeros_and_range_helpers():
    assert list(nl.affine_range(3)) == [0, 1, 2]
    assert list(nl.sequential_range(1, 7, 2)) == [1, 3, 5]
    assert list(nl.static_range(2, 4)) == [2, 3]
    assert nl.tile_size.pmax == 128 and nl.tile_size.psum_bank_fmax == 512 and nl.tile_size.psum_num_banks == 8


def test_tensor_scalar_bitvec_with_vector_operands():
    words = RNG.integers(0, 2**32, (32, 6), dtype=np.uint64).astype(np.uint32)
    shifts = RNG.integers(0, 32, (32, 1)).astype(np.uint32)

    def kernel(words, shifts):
        w, s = nl.load(words), nl.load(shifts)
        r = nl.ndarray(words.shape, nl.uint32)
        nisa.tensor_scalar(dst=r, data=w, op0=nl.right_shift, operand0=s, op1=nl.bitwise_and, operand1=0xFF)
        o = nl.ndarray(words.shape, nl.uint32, buffer=nl.shared_hbm)
        nl.store(o, r)
        return o

    np.testing.assert_array_equal(simulate(kernel, words, shifts), (words >> shifts) & np.uint32(0xFF))


def test_dma_compute_scatter_and_gather_read_modify_write():
    table = np.arange(6 * 4, dtype=np.float32).reshape(6, 4)
    rows = np.full((3, 4), 0.5, np.float32) + np.arange(3, dtype=np.float32)[:, None]
    ids = np.array([[4], [9], [1]], np.int32)  # 9: past the table, skipped

    def scatter(table, rows, ids):
        idx, data = nl.load(ids), nl.load(rows)
        view = table.ap(pattern=[[4, 3], [1, 4]], offset=0, vector_offset=idx, indirect_dim=0)
        nisa.dma_compute(dst=view, srcs=[view, data], reduce_op=nl.add, oob_mode=nisa.oob_mode.skip)
        return table

    def gather(table, rows, ids):
        idx, acc = nl.load(ids), nl.load(rows)
        view = table.ap(pattern=[[4, 3], [1, 4]], offset=0, vector_offset=idx, indirect_dim=0)
        nisa.dma_compute(dst=acc, srcs=[view, acc], reduce_op=nl.add, oob_mode=nisa.oob_mode.skip)
        out = nl.ndarray(acc.shape, nl.float32, buffer=nl.shared_hbm)
        nl.store(out, acc)
        return out

    scattered = table.copy()
    simulate(scatter, scattered, rows, ids)
    expected = table.copy()
    expected[4] += rows[0]
    expected[1] += rows[2]
    np.testing.assert_array_equal(scattered, expected)
    gathered = simulate(gather, table.copy(), rows, ids)
    np.testing.assert_array_equal(gathered, [rows[0] + table[4], rows[1], rows[2] + table[1]])
    with pytest.raises(ValueError, match="dma_compute.rmw"):
        simulate(scatter, table.copy(), rows, np.array([[4], [4], [1]], np.int32))
