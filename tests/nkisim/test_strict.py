"""One failing case per strict check: the exception type and that the message names the limit."""

import numpy as np
import pytest

import dste.nkisim as sim
from dste.nkisim import CapacityError, ConstraintError, KernelSignatureError, OutOfBoundsError
from dste.nkisim import isa as nisa
from dste.nkisim import language as nl


def run(body, *args, target="trn2"):
    """Run ``body`` as a kernel body whose return value is ignored."""

    def kernel(*a):
        body(*a)
        return None

    return sim.run_kernel(kernel, args, {}, target=target)


def test_partition_dim_over_128():
    with pytest.raises(ConstraintError, match="256 exceeds the 128 partitions"):
        run(lambda: nl.ndarray((256, 4), nl.float32, buffer=nl.sbuf))


def test_start_partition_rule():
    def body():
        t = nl.ndarray((128, 4), nl.float32, buffer=nl.sbuf)
        nisa.memset(dst=t[16:32, :], value=0.0)

    with pytest.raises(ConstraintError, match="starts at partition 16.*may start at 0, 32, 64, 96"):
        run(body)


def _matmul(st_shape, mv_shape, dst_shape, st_dtype=nl.bfloat16, mv_dtype=nl.bfloat16, st_buf=nl.sbuf,
            dst_buf=nl.psum, dst_dtype=nl.float32, **kwargs):
    def body():
        st = nl.zeros(st_shape, st_dtype, buffer=st_buf)
        mv = nl.zeros(mv_shape, mv_dtype, buffer=nl.sbuf)
        dst = nl.ndarray(dst_shape, dst_dtype, buffer=dst_buf)
        nisa.nc_matmul(dst=dst, stationary=st, moving=mv, **kwargs)

    run(body)


def test_matmul_m_limit():
    with pytest.raises(ConstraintError, match=r"M \(stationary free size\) = 256 exceeds the limit 128"):
        _matmul((128, 256), (128, 64), (128, 64))


def test_matmul_n_limit():
    with pytest.raises(ConstraintError, match=r"N \(moving free size\) = 1024 exceeds the limit 512"):
        _matmul((128, 128), (128, 1024), (128, 512))  # a [128, 1024] fp32 dst is refused first, by isa.psum_tile_fmax
    with pytest.raises(ConstraintError, match=r"dst .* spans 1024 elements per partition in PSUM.*psum_bank_fmax = 512"):
        _matmul((128, 128), (128, 1024), (128, 1024))


def test_matmul_k_mismatch():
    with pytest.raises(ConstraintError, match="contraction dims differ"):
        _matmul((128, 128), (64, 64), (128, 64))


def test_matmul_refuses_int8():
    with pytest.raises(ConstraintError, match="int8 is not a TensorE input type"):
        _matmul((128, 128), (128, 64), (128, 64), st_dtype=nl.int8)


def test_matmul_fp32_pairs_only_with_fp32():
    with pytest.raises(ConstraintError, match="fp32/tf32 only pairs with fp32/tf32"):
        _matmul((128, 128), (128, 64), (128, 64), st_dtype=nl.float32)


def test_matmul_stationary_must_be_in_sbuf():
    with pytest.raises(ConstraintError, match="stationary .* is in psum; allowed: sbuf"):
        _matmul((128, 128), (128, 64), (128, 64), st_dtype=nl.float32, mv_dtype=nl.float32, st_buf=nl.psum)


def test_matmul_dst_must_be_in_psum():
    with pytest.raises(ConstraintError, match="dst .* is in sbuf; allowed: psum"):
        _matmul((128, 128), (128, 64), (128, 64), dst_buf=nl.sbuf)


def test_matmul_dst_must_be_fp32():
    with pytest.raises(ConstraintError, match="dst must be float32"):
        _matmul((128, 128), (128, 64), (128, 64), dst_dtype=nl.bfloat16)


def test_matmul_output_must_fit_one_psum_bank():
    def body():
        st = nl.zeros((128, 128), nl.bfloat16)
        mv = nl.zeros((128, 512), nl.bfloat16)
        acc = nl.ndarray((128, 1024), nl.float32, buffer=nl.psum)  # two banks per partition
        nisa.nc_matmul(dst=acc[:, 256:768], stationary=st, moving=mv)

    with pytest.raises(ConstraintError, match="crossing a PSUM bank boundary.*2048 B"):
        run(body)


def test_matmul_accumulate_true_on_unwritten_psum():
    with pytest.raises(ConstraintError, match="accumulate=True .* undefined on hardware"):
        _matmul((128, 128), (128, 64), (128, 64), accumulate=True)


def test_dma_from_psum():
    def body():
        acc = nl.zeros((128, 64), nl.float32, buffer=nl.psum)
        out = nl.ndarray((128, 64), nl.float32, buffer=nl.hbm)
        nisa.dma_copy(dst=out, src=acc)

    with pytest.raises(ConstraintError, match="DMA cannot read PSUM"):
        run(body)


def test_dma_element_count_mismatch():
    def body():
        a = nl.ndarray((128, 64), nl.float32, buffer=nl.hbm)
        b = nl.ndarray((128, 32), nl.float32, buffer=nl.sbuf)
        nisa.dma_copy(dst=b, src=a)

    with pytest.raises(ConstraintError, match="element counts differ"):
        run(body)


def test_hwdge_needs_equal_dtypes_and_v3():
    def body():
        a = nl.zeros((128, 64), nl.float32, buffer=nl.hbm)
        b = nl.ndarray((128, 64), nl.bfloat16, buffer=nl.sbuf)
        nisa.dma_copy(dst=b, src=a, dge_mode=nisa.dge_mode.hwdge)

    with pytest.raises(ConstraintError, match="hwdge cannot convert dtypes"):
        run(body)
    with pytest.raises(ConstraintError, match="hwdge does not exist on NeuronCore-v2"):
        run(body, target="trn1")


def test_kernel_output_must_be_shared_hbm():
    def returns_sbuf(x):
        return nl.load(x)

    def returns_hbm(x):
        return nl.ndarray(x.shape, x.dtype, buffer=nl.hbm)

    def returns_numpy(x):
        return np.zeros(3)

    x = np.zeros((4, 4), np.float32)
    with pytest.raises(KernelSignatureError, match="from sbuf; outputs must be allocated in nl.shared_hbm"):
        sim.simulate(returns_sbuf)(x)
    with pytest.raises(KernelSignatureError, match="from (private_)?hbm; outputs must be allocated in nl.shared_hbm"):
        sim.simulate(returns_hbm)(x)
    with pytest.raises(KernelSignatureError, match="returned ndarray"):
        sim.simulate(returns_numpy)(x)


@pytest.mark.parametrize("layout", ["contiguous", "strided"])
def test_a_kernel_may_return_its_own_argument_written_in_place(layout):
    """As the ISA ``dma_copy`` scatter example: rows scattered into the ``output`` argument, which is returned.
    A C-contiguous argument is compared with HBM in place, any other through a copy: both are written back."""

    def scatter_rows(src_data, indices, output):
        src = nl.ndarray(src_data.shape, dtype=src_data.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=src, src=src_data)
        idx = nl.ndarray((src_data.shape[0], 1), dtype=nl.uint32, buffer=nl.sbuf)
        nisa.dma_copy(dst=idx, src=indices)
        P, F = src_data.shape
        nisa.dma_copy(dst=output.ap(pattern=[[F, P], [1, F]], vector_offset=idx, indirect_dim=0), src=src)
        return output

    rng = np.random.default_rng(0)
    src = rng.standard_normal((128, 8)).astype(np.float32)
    rows = rng.permutation(256)[:128].astype(np.uint32)
    output = np.zeros((256, 8), np.float32) if layout == "contiguous" else np.zeros((256, 16), np.float32)[:, ::2]
    src_bytes = src.tobytes()
    returned = sim.simulate(scatter_rows)(src, rows[:, None], output)
    expected = np.zeros((256, 8), np.float32)
    expected[rows] = src
    assert src.tobytes() == src_bytes  # an argument the kernel only read keeps its values
    np.testing.assert_array_equal(returned, expected)
    np.testing.assert_array_equal(output, expected)  # the argument itself is updated in place
    assert returned is output  # and returned as itself, not as a second copy


def test_list_kernel_argument_rejected():
    with pytest.raises(KernelSignatureError, match="cannot be lists"):
        sim.simulate(lambda xs: None)([np.zeros(3)])


def test_unknown_keyword_names_the_instruction():
    def body():
        t = nl.ndarray((128, 4), nl.float32)
        nisa.memset(dst=t, value=0.0, mask=None)

    with pytest.raises(TypeError, match=r"nisa.memset: unknown keyword argument\(s\) 'mask'; allowed: dst, value"):
        run(body)


def test_memset_value_type_must_match_dtype():
    def int_tile_float_value():
        nisa.memset(dst=nl.ndarray((128, 4), nl.int32), value=1.0)

    def float_tile_int_value(value, dtype, o):
        t = nl.ndarray((128, 4), dtype)
        nisa.memset(dst=t, value=value)
        o["t"] = t.numpy()

    with pytest.raises(ConstraintError, match="does not match dtype int32; use an int"):
        run(int_tile_float_value)
    # the ISA stub's dma_transpose example and AWS's kernels memset float tiles with value=0
    out = {}
    run(lambda: float_tile_int_value(0, nl.float32, out))
    np.testing.assert_array_equal(out["t"], 0.0)
    run(lambda: float_tile_int_value(256, nl.bfloat16, out))
    np.testing.assert_array_equal(out["t"].astype(np.float32), 256.0)
    with pytest.raises(ConstraintError, match="the int value 257 is not exactly a bfloat16; use a float"):
        run(lambda: float_tile_int_value(257, nl.bfloat16, out))
    with pytest.raises(ConstraintError, match="does not match dtype float32; use a float"):
        run(lambda: float_tile_int_value("0", nl.float32, out))


def test_indirect_index_out_of_range_names_index_and_range():
    table = np.zeros((10, 8), np.float32)
    ids = np.arange(16, dtype=np.int32).reshape(16, 1)  # 10..15 out of range

    def kernel(table, ids):
        idx = nl.load(ids)
        rows = nl.ndarray((16, 8), nl.float32)
        nisa.dma_copy(dst=rows, src=table.ap(pattern=[[8, 16], [1, 8]], offset=0, vector_offset=idx, indirect_dim=0))

    with pytest.raises(OutOfBoundsError, match=r"indirect index 10 \(partition 10.*allowed range \[0, 10\)"):
        sim.simulate(kernel)(table, ids)


def test_bitvec_needs_integer_dtypes_and_vector_engine():
    def float_data():
        t = nl.zeros((128, 4), nl.float32)
        nisa.tensor_scalar(dst=t, data=t, op0=nl.right_shift, operand0=1)

    def scalar_engine():
        t = nl.zeros((128, 4), nl.uint32)
        nisa.tensor_scalar(dst=t, data=t, op0=nl.right_shift, operand0=1, engine=nisa.engine.scalar)

    def mixed_ops():
        t = nl.zeros((128, 4), nl.uint32)
        nisa.tensor_scalar(dst=t, data=t, op0=nl.right_shift, operand0=1, op1=nl.add, operand1=1)

    with pytest.raises(ConstraintError, match="bitvec operators need integer data and dst"):
        run(float_data)
    with pytest.raises(ConstraintError, match="bitvec operators run on VectorE only"):
        run(scalar_engine)
    with pytest.raises(ConstraintError, match="must both be bitvec or both arithmetic"):
        run(mixed_ops)


def test_gpsimd_cannot_access_psum():
    def body():
        t = nl.ndarray((128, 4), nl.float32, buffer=nl.psum)
        nisa.memset(dst=t, value=0.0, engine=nisa.engine.gpsimd)

    with pytest.raises(ConstraintError, match="GpSimd cannot access PSUM"):
        run(body)


def test_scalar_engine_tensor_copy_not_on_v2_and_scalar_bias_not_on_v2():
    def copy_on_scalar():
        t = nl.zeros((128, 4), nl.float32)
        nisa.tensor_copy(dst=t, src=t, engine=nisa.engine.scalar)

    def scalar_bias():
        t = nl.zeros((128, 4), nl.float32)
        nisa.activation(dst=t, op=nl.exp, data=t, bias=1.0)

    run(copy_on_scalar, target="trn2")
    run(scalar_bias, target="trn2")
    with pytest.raises(ConstraintError, match="ScalarE cannot run tensor_copy on NeuronCore-v2"):
        run(copy_on_scalar, target="trn1")
    with pytest.raises(ConstraintError, match=r"bias must be a \[P, 1\] tile"):
        run(scalar_bias, target="trn1")


def test_transpose_limits_and_dtype():
    def too_big_for_vector():
        d = nl.zeros((64, 64), nl.float32)
        nisa.nc_transpose(dst=nl.ndarray((64, 64), nl.float32), data=d, engine=nisa.engine.vector)

    def dtype_mismatch():
        d = nl.zeros((64, 32), nl.bfloat16)
        nisa.nc_transpose(dst=nl.ndarray((32, 64), nl.float32, buffer=nl.psum), data=d)

    with pytest.raises(ConstraintError, match="exceeds 32x32 on the vector engine"):
        run(too_big_for_vector)
    with pytest.raises(ConstraintError, match="must equal data dtype"):
        run(dtype_mismatch)


def test_sbuf_capacity_single_allocation_names_buffer_bytes_limit():
    with pytest.raises(CapacityError, match=r"'big' needs 262144 B per partition, more than the 212984 B per partition of SBUF on trn2"):
        run(lambda: nl.ndarray((128, 65536), nl.float32, name="big"))


def test_sbuf_capacity_counts_the_tiles_live_at_one_instruction():
    # "automatically recycled by the compiler when no longer needed" (tiling-overview.rst): a tile counts from its
    # first use to its last, however long the kernel's Python holds it
    def body(reuse):
        keep = [nl.ndarray((128, 20000), nl.float32, name=f"t{i}") for i in range(3)]  # 3 x 80000 B
        for t in keep:
            nisa.memset(dst=t, value=0.0)
        if reuse:  # all three live from the first memset to this one
            nisa.tensor_tensor(dst=keep[0], data1=keep[1], data2=keep[2], op=nl.add)

    _, prof = run(lambda: body(False))
    assert prof.peak_sbuf_bytes_per_partition == 80000
    with pytest.raises(CapacityError, match=r"nisa.memset \(instruction 3 of the program\): live SBUF allocations "
                                            r"need 240000 B per partition, more than the 212984 B .*'t0' 80000 B"):
        run(lambda: body(True))


def test_sbuf_capacity_per_target():
    def body():
        t = nl.ndarray((128, 47500), nl.float32, name="tile190k")  # 190000 B: fits trn2, not trn1
        nisa.memset(dst=t, value=0.0)

    run(body, target="trn2")
    with pytest.raises(CapacityError, match="180224 B per partition of SBUF on trn1"):
        run(body, target="trn1")


def test_rebinding_a_tile_frees_the_previous_one():
    def body():
        for _ in range(4):
            t = nl.ndarray((128, 37500), nl.float32, name="loop_tile")  # 150000 B each
            nisa.memset(dst=t, value=0.0)

    _, prof = run(body)
    assert prof.peak_sbuf_bytes_per_partition == 150000


def test_psum_capacity():
    def body():
        tiles = [nl.ndarray((128, 512), nl.float32, buffer=nl.psum, name=f"acc{i}") for i in range(9)]
        for _ in range(2):
            for t in tiles:
                nisa.memset(dst=t, value=0.0)

    with pytest.raises(CapacityError, match="PSUM allocations need 18432 B per partition, more than the 16384 B"):
        run(body)


def test_psum_is_allocated_in_whole_banks():
    """Nine 1 KiB PSUM tiles fit 16 KiB by bytes but need nine of the eight banks (every PSUM allocation starts
    on a bank boundary: nki/migration/index.rst); eight of them fit."""

    def body(count):
        tiles = [nl.ndarray((128, 256), nl.float32, buffer=nl.psum, name=f"acc{i}") for i in range(count)]
        for _ in range(2):
            for t in tiles:
                nisa.memset(dst=t, value=0.0)

    _, prof = run(lambda: body(8))
    assert prof.peak_psum_bytes_per_partition == 16384
    with pytest.raises(CapacityError, match="need 18432 B per partition.*whole 2 KiB banks, 8 per partition"):
        run(lambda: body(9))


def test_psum_operand_of_any_instruction_holds_at_most_512_elements():
    def body(columns):
        t = nl.ndarray((128, columns), nl.float32, buffer=nl.psum, name="wide_psum")
        nisa.memset(dst=t, value=0.0)

    run(lambda: body(512))
    with pytest.raises(ConstraintError, match=r"spans 2048 elements per partition in PSUM.*rule isa.psum_tile_fmax"):
        run(lambda: body(2048))


def test_a_broadcast_of_a_psum_tile_spans_the_tile_not_the_broadcast():
    # "For tiles in PSUM, the F dimension size must not exceed 512" (tiling-overview.rst): a [128, 1] PSUM tile
    # broadcast over 4096 columns (AWS's layernorm_tkg subtracts its mean so) reads one element per partition
    def body(o):
        mean = nl.ndarray((128, 1), nl.float32, buffer=nl.psum, name="mean")
        nisa.memset(dst=mean, value=2.0)
        x = nl.ndarray((128, 4096), nl.float32, buffer=nl.sbuf)
        nisa.memset(dst=x, value=5.0)
        centred = nl.ndarray((128, 4096), nl.float32, buffer=nl.sbuf)
        nisa.tensor_tensor(dst=centred, data1=x, data2=mean.broadcast(1, 4096), op=nl.subtract)
        o["c"] = centred.numpy()

    out = {}
    run(lambda: body(out))
    np.testing.assert_array_equal(out["c"], 3.0)


def test_operand_access_pattern_has_at_most_four_free_dims():
    sizes = (2, 3, 5, 7, 4)

    def body(k):
        base = nl.ndarray((128,) + tuple(n + 1 for n in sizes[:k]), nl.float32, name="base")
        nisa.memset(dst=base, value=1.0)
        view = base[(slice(None),) + tuple(slice(0, n) for n in sizes[:k])]  # no two free dims merge
        out = nl.ndarray((128,) + sizes[:k], nl.float32, name="out")
        nisa.tensor_tensor(dst=out, data1=view, data2=view, op=nl.add)

    run(lambda: body(4))
    with pytest.raises(ConstraintError, match=r"data1 'base' .* needs 5 free dimensions.*at most 4.*rule isa.free_dims"):
        run(lambda: body(5))


def test_operand_access_pattern_strides_are_int16():
    """An F axis of an access pattern has a stride expressed in int16 elements (the architecture guide, Data
    streaming): a view that steps 40,000 elements along a free axis cannot be encoded."""
    def body(row):
        base = nl.ndarray((128, 2, row), nl.int8, name="wide")
        nisa.memset(dst=base, value=1, engine=nisa.engine.gpsimd)  # past VectorE's 64K elements at row=40000
        out = nl.ndarray((128, 2), nl.int8, name="out")
        nisa.tensor_copy(dst=out, src=base[:, :, 0])  # one element of each row: a stride of `row` elements

    run(lambda: body(32767))
    with pytest.raises(ConstraintError, match=r"src 'wide' .* steps 40000 elements.*int16.*rule isa.free_stride"):
        run(lambda: body(40000))


def test_vector_and_scalar_operands_hold_at_most_64k_sbuf_elements():
    """"the free dimension size can be up to 64K elements for SBUF" (architecture guide L335-336 VectorE, L429-430
    ScalarE): a uint8 [128, 70000] tile is too long for either engine, at any shape of its free axes."""
    def body(instruction, free):
        x = nl.ndarray((128,) + free, nl.uint8, name="long")
        nisa.memset(dst=x, value=0, engine=nisa.engine.gpsimd)  # GpSimd: no documented element limit
        y = nl.ndarray((128,) + free, nl.uint8, name="copy")
        if instruction == "tensor_copy":
            nisa.tensor_copy(dst=y, src=x, engine=nisa.engine.vector)
        elif instruction == "activation":
            nisa.activation(dst=y, op=nl.copy, data=x)
        else:
            nisa.memset(dst=y, value=0, engine=nisa.engine.vector)

    for instruction in ("tensor_copy", "activation", "memset"):
        run(lambda: body(instruction, (2, 32768)))  # 65536 elements: the limit
        with pytest.raises(ConstraintError, match=r"dst 'copy' .* holds 70000 elements per partition in SBUF.*at "
                                                  r"most 64K.*rule isa.engine_free_size"):
            run(lambda: body(instruction, (2, 35000)))


def test_operand_free_axes_are_uint16():
    """"At the ISA level, each F axis in the tensor can have a size expressed in uint16" (architecture guide
    L717-718), on every engine. The limit is on the access pattern, not the kernel's shape: a contiguous run of 70000
    elements is the pattern [4, 17500] whether declared (70000,) or (2, 35000); a prime 65537-element axis has no
    split into uint16 sizes and is refused."""
    def body(free):
        x = nl.ndarray((128,) + free, nl.uint8, name="long")
        nisa.memset(dst=x, value=0, engine=nisa.engine.gpsimd)

    run(lambda: body((2, 35000)))
    run(lambda: body((70000,)))
    with pytest.raises(ConstraintError, match=r"dst 'long' .* free axis of 65537 elements.*uint16.*rule "
                                              r"isa.free_axis_size"):
        run(lambda: body((65537,)))


def test_a_contiguous_64k_vector_operand_is_accepted():
    """architecture guide L335-336: a Vector Engine operand in SBUF may hold "up to 64K elements"; a contiguous
    [2, 65536] uint8 tile is that many, and its 65536-element axis is the ISA pattern [4, 16384] (L717-718)."""
    def body():
        x = nl.ndarray((2, 65536), nl.uint8, name="x")
        nisa.memset(dst=x, value=3, engine=nisa.engine.vector)
        y = nl.ndarray((2, 65536), nl.uint8, name="y")
        nisa.tensor_copy(dst=y, src=x, engine=nisa.engine.vector)
        assert (y.numpy() == 3).all()

    run(body)


def test_iota_takes_int32_offset_and_channel_multiplier():
    def body(offset, multiplier):
        t = nl.ndarray((8, 4), nl.float32, name="ramp")
        nisa.iota(dst=t, pattern=[[1, 4]], offset=offset, channel_multiplier=multiplier)

    run(lambda: body(2, 1))
    for offset, multiplier in ((2.5, 1), (2, 1.5), (2**31, 1), (True, 1)):
        with pytest.raises(ConstraintError, match=r"must be an int32.*rule iota.pattern"):  # 2.5 was truncated to 2
            run(lambda: body(offset, multiplier))


def test_static_out_of_range_slice_and_bad_reshape():
    def slice_body():
        t = nl.ndarray((128, 8), nl.float32)
        t[:, 4:12]

    def reshape_body():
        t = nl.ndarray((128, 8), nl.float32)
        t.reshape((128, 7))

    with pytest.raises(OutOfBoundsError, match=r"slice 4:12 out of range \[0, 8\]"):
        run(slice_body)
    with pytest.raises(ConstraintError, match="changes the element count"):
        run(reshape_body)


def test_matmul_refuses_int_inputs_even_int32():
    with pytest.raises(ConstraintError, match="int32 is not a TensorE input type"):
        _matmul((128, 128), (128, 64), (128, 64), st_dtype=nl.int32, mv_dtype=nl.int32)


def _psum_marks_case(between):
    """A matmul into the left half of a PSUM tile, ``between(acc)``, then accumulate=None over the whole tile."""

    def body():
        st = nl.zeros((64, 32), nl.bfloat16, buffer=nl.sbuf)
        mv = nl.zeros((64, 8), nl.bfloat16, buffer=nl.sbuf)
        acc = nl.ndarray((32, 16), nl.float32, buffer=nl.psum)
        nisa.nc_matmul(dst=acc[:, 0:8], stationary=st, moving=mv)
        between(acc)
        nisa.nc_matmul(dst=acc[:, 8:16], stationary=st, moving=mv, accumulate=True)

    run(body)


@pytest.mark.parametrize("between", ["nothing", "memset of the left half", "memset through a bf16 view"])
def test_matmul_marks_follow_every_view_of_a_psum_tile(between):
    # the right half was never written by a matmul: accumulating onto it is undefined whatever touched the left
    actions = {
        "nothing": lambda acc: None,
        "memset of the left half": lambda acc: nisa.memset(dst=acc[:, 0:8], value=0.0),
        # two bf16 halves per fp32 element: the marks are found element by element, not through a view
        "memset through a bf16 view": lambda acc: nisa.memset(dst=acc.view(nl.bfloat16)[:, 0:16], value=0.0),
    }
    with pytest.raises(ConstraintError, match="accumulate=True onto .* which no matmul has written"):
        _psum_marks_case(actions[between])


def test_a_memset_through_another_view_clears_the_matmul_mark():
    # accumulate=None is inferred per location (nc_matmul, "Accumulation mode"; overlapping regions are correct from
    # NKI 0.6): the memset columns start again, the others accumulate; accumulate=True onto them is refused
    product = np.full((32, 16), 64.0, np.float32)  # ones(64, 32).T @ ones(64, 16)
    out = {}

    def body(explicit):
        st = nl.ones((64, 32), nl.bfloat16, buffer=nl.sbuf)
        mv = nl.ones((64, 16), nl.bfloat16, buffer=nl.sbuf)
        acc = nl.ndarray((32, 16), nl.float32, buffer=nl.psum)
        nisa.nc_matmul(dst=acc, stationary=st, moving=mv)
        nisa.nc_matmul(dst=acc, stationary=st, moving=mv, accumulate=True)  # every element marked: allowed
        nisa.memset(dst=acc[:, 4:6], value=0.0)
        nisa.nc_matmul(dst=acc, stationary=st, moving=mv, accumulate=explicit)
        out["acc"] = acc.numpy()

    run(lambda: body(None))
    expected = 3 * product
    expected[:, 4:6] = product[:, 4:6]
    np.testing.assert_array_equal(out["acc"], expected)
    with pytest.raises(ConstraintError, match="which no matmul has written"):
        run(lambda: body(True))


def test_an_operand_of_33_to_64_partitions_starts_at_0_or_64_only():
    # "If 32 < num_partition <= 64, start_partition must be 0 or 64" (architecture guide L712): 32 is a legal start
    # for at most 32 partitions, not for 64
    def body(start):
        t = nl.ndarray((128, 4), nl.float32, name="t")
        nisa.memset(dst=t, value=1.0)
        nisa.tensor_copy(dst=nl.ndarray((64, 4), nl.float32, name="d"), src=t[start:start + 64, :])

    run(lambda: body(0))
    run(lambda: body(64))
    with pytest.raises(ConstraintError, match=r"src 't' starts at partition 32; an operand of 64 partitions may start "
                                              r"at 0, 64 \[rule isa.start_partition"):
        run(lambda: body(32))


def test_a_free_stride_of_32768_elements_is_one_past_int16():
    # each F axis has "a stride expressed in int16, measured in data elements" (architecture guide L717-718):
    # 32767 is the largest stride, 32768 the first one that cannot be encoded
    def body(row):
        base = nl.ndarray((1, 2, row), nl.uint8, name="rows")
        nisa.memset(dst=base, value=1)
        out = nl.ndarray((1, 2, 2), nl.uint8, name="out")
        nisa.tensor_copy(dst=out, src=base[:, :, 0:2])  # free axes (2, stride `row`), (2, stride 1)

    run(lambda: body(32767))
    with pytest.raises(ConstraintError, match=r"src 'rows' .* steps 32768 elements.*rule isa.free_stride"):
        run(lambda: body(32768))


def test_an_unsplittable_free_axis_of_65536_elements_is_one_past_uint16():
    # each F axis has "a size expressed in uint16" (architecture guide L717-718), so at most 65535 elements; with
    # four free axes already (two of them broadcast) the long axis cannot be split into two (isa.free_dims: at most 4)
    def body(n):
        t = nl.ndarray((1, n, 3), nl.uint8, name="long")  # 196608 B per partition at n = 65536 (trn2: 212984 B)
        nisa.memset(dst=t, value=0, engine=nisa.engine.gpsimd)
        view = t[:, :, 0:2].expand_dim(1).broadcast(1, 2).expand_dim(4).broadcast(4, 2)  # axes 2, n, 2, 2
        idx = nl.ndarray((1, 1), nl.uint32, name="idx")
        nisa.memset(dst=idx, value=0)
        nisa.nc_n_gather(dst=nl.ndarray((1, 1), nl.uint8, name="out"), data=view, indices=idx)

    run(lambda: body(65535))
    with pytest.raises(ConstraintError, match=r"data 'long' .* free axis of 65536 elements.*rule isa.free_axis_size"):
        run(lambda: body(65536))


def test_a_broadcast_dst_is_written_in_order_the_last_write_winning():
    # AWS's qkv_cte gives activation_reduce a stride-0 dummy dst; the docs say nothing of it (an assumption: elements
    # are written in access-pattern order)
    def body(o):
        src = nl.ndarray((128, 2), nl.float32, name="src")
        nisa.iota(dst=src, pattern=[[1, 2]], offset=1, channel_multiplier=0)  # [1, 2] on every partition
        dst = nl.ndarray((128, 1), nl.float32, name="dst")
        nisa.tensor_copy(dst=dst.broadcast(1, 2), src=src)
        o["d"] = dst.numpy()

    out = {}
    run(lambda: body(out))
    np.testing.assert_array_equal(out["d"], 2.0)


def test_an_access_pattern_is_bounds_checked_where_an_instruction_uses_it():
    # "The engines will consume data when the AP is passed into a nki.isa instruction" (nki-aps.rst): AWS's
    # output_projection_tkg builds a padding view past its tensor's end and never uses it
    def body(use):
        t = nl.ndarray((128, 8), nl.float32, name="t")
        past_the_end = t.ap(pattern=[[8, 128], [1, 8]], offset=4)
        if use:
            nisa.memset(dst=past_the_end, value=0.0)

    run(lambda: body(False))
    with pytest.raises(OutOfBoundsError, match=r"view of 't' .* reaches outside its 4096 B storage"):
        run(lambda: body(True))


def test_two_partitions_taken_with_step_2_are_not_consecutive():
    # "hardware does not allow P dimension striding ... a valid src/dst tensor of an instruction must occupy a
    # continuous number of partitions" (architecture guide L705-707): partitions 0 and 2 are two, but not adjacent
    def body(step):
        t = nl.ndarray((4, 4), nl.float32, name="t")
        nisa.memset(dst=t, value=1.0)
        nisa.tensor_copy(dst=nl.ndarray((2, 4), nl.float32, name="d"), src=t[0:2 * step:step, :])

    run(lambda: body(1))
    with pytest.raises(ConstraintError, match=r"src 't' must cover consecutive partitions \(partition step 2\).*"
                                              r"rule isa.consecutive_partitions"):
        run(lambda: body(2))


def test_a_packed_mx_dtype_is_refused_as_neuroncore_v4_only():
    # the x4 MX dtypes feed nc_matmul_mx / quantize_mx on NeuronCore-v4 (nki.api.shared.rst); on trn2 the error
    # says so instead of "unsupported dtype"
    with pytest.raises(TypeError, match=r"nl.float8_e4m3fn_x4 is a packed MX dtype of NeuronCore-v4 \(trn3\)"):
        run(lambda: nl.ndarray((128, 4), nl.float8_e4m3fn_x4))
