"""Parity of the extra nki.isa instructions with independent NumPy computations (doc examples included)."""

import numpy as np
import pytest

from dste.nkisim import isa as nisa
from dste.nkisim import language as nl
from dste.nkisim.errors import ConstraintError

from .kernel_bodies import empty, run, tile

RNG = np.random.default_rng(11)


def test_bn_stats_then_bn_aggr_give_mean_and_variance():
    x = RNG.standard_normal((64, 1024)).astype(np.float32)

    def body(o):
        stats = empty((64, 12))
        nisa.bn_stats(dst=stats[:, 0:6], data=tile(x[:, :512]))
        nisa.bn_stats(dst=stats[:, 6:12], data=tile(x[:, 512:]))
        res = empty((64, 2))
        nisa.bn_aggr(dst=res, data=stats)
        o["r"] = res.numpy()

    r = run(body)["r"]
    # fp32 statistics of 1024 N(0,1) values against float64: ~1e-6 relative.
    np.testing.assert_allclose(r[:, 0], x.astype(np.float64).mean(axis=1), atol=1e-5)
    np.testing.assert_allclose(r[:, 1], x.astype(np.float64).var(axis=1), rtol=1e-5)


def test_max8_find_index8_and_match_replace8_doc_example():
    data = np.array([[1, 2, 3, 4, 8, 8, 8, 8, 8, 8, 8]], dtype=np.float32)
    vals = np.array([[3, 8, 8, 8, 8, 8, 8, 8]], dtype=np.float32)

    def body(o):
        top, idx, rep, ridx = empty((1, 8)), empty((1, 8), nl.uint32), empty((1, 11)), empty((1, 8), nl.uint32)
        nisa.max8(dst=top, src=tile(data))
        nisa.nc_find_index8(dst=idx, data=tile(data), vals=tile(vals))
        nisa.nc_match_replace8(dst=rep, data=tile(data), vals=tile(vals), imm=-1.0, dst_idx=ridx)
        o.update(top=top.numpy(), idx=idx.numpy(), rep=rep.numpy(), ridx=ridx.numpy())

    out = run(body)
    np.testing.assert_array_equal(out["top"][0], [8] * 7 + [4])
    np.testing.assert_array_equal(out["idx"][0], [2, 4, 5, 6, 7, 8, 9, 10])  # duplicates advance
    np.testing.assert_array_equal(out["ridx"][0], [2, 10, 9, 8, 7, 6, 5, 4])  # the docstring's example
    np.testing.assert_array_equal(out["rep"][0], [1, 2, -1, 4] + [-1] * 7)


def test_nonzero_with_count_doc_example_on_core_partitions():
    src = np.zeros((32, 8), dtype=np.float32)
    src[0] = [0, 1, 1, 0, 0, 1, 0, 0]
    src[1] = 1  # not a core's first partition: ignored

    def body(o):
        dst = tile(np.full((32, 9), 7), nl.int32)
        nisa.nonzero_with_count(dst=dst, src=tile(src), index_offset=16, padding_val=-1)
        o["d"] = dst.numpy()

    d = run(body)["d"]
    np.testing.assert_array_equal(d[0], [17, 18, 21, -1, -1, -1, -1, -1, 3])
    np.testing.assert_array_equal(d[1], 7)
    np.testing.assert_array_equal(d[16], [-1] * 8 + [0])


def test_gathers_partition_reduce_and_topk():
    data = RNG.standard_normal((16, 40)).astype(np.float32)
    idx = RNG.integers(0, 40, size=(16, 5)).astype(np.uint32)

    def body(o):
        g = empty((16, 5))
        nisa.nc_n_gather(dst=g, data=tile(data), indices=tile(idx, nl.uint32))
        s = empty((1, 40))
        nisa.tensor_partition_reduce(dst=s, op=nl.add, data=tile(data))
        vals, ids = empty((16, 4), nl.bfloat16), empty((16, 4), nl.uint32)
        nisa.topk(val_dst=vals, idx_dst=ids, src=tile(data[:, :3], nl.bfloat16), n=40)
        o.update(g=g.numpy(), s=s.numpy(), v=vals.numpy(), i=ids.numpy())

    out = run(body)
    np.testing.assert_array_equal(out["g"], np.take_along_axis(data, idx.astype(np.int64), axis=1))
    np.testing.assert_allclose(out["s"][0], data.sum(axis=0), rtol=1e-5, atol=1e-5)  # 16-term fp32 sums
    snake = data[:, :3].astype(nl.bfloat16).astype(np.float32).T.reshape(-1)[:40]
    expected = np.sort(snake)[-4:]
    np.testing.assert_array_equal(out["v"][0].astype(np.float32), expected)
    np.testing.assert_array_equal(snake[out["i"][0].astype(np.int64)], expected)


def test_local_gather_matches_the_sdk_numpy_semantics():
    # The SDK's own example and NumPy reference (nki/test/test_nki_isa_local_gather.py L43-84, NUMPY_SEMANTICS),
    # which the local_gather docstring links as its "equivalent numpy implementation" (nki/api/nki/isa/__init__.py
    # L1887-1888): every partition of a core gathers along its own free axis at the core's shared offsets.
    src = (RNG.random((128, 512, 4)) * 100).astype(np.float32)
    index = np.tile(RNG.integers(0, 512, size=(16, 4)).astype(np.uint16), (8, 1))  # one index set, all 8 cores
    index_hw = (index * 4).astype(np.uint16)  # element offsets of num_elem_per_idx = 4 contiguous elements

    def body(o):
        dst = empty((128, 4, 16, 4))
        nisa.local_gather(dst=dst, src_buffer=tile(src), index=tile(index_hw, nl.uint16), num_elem_per_idx=4,
                          num_valid_indices=64)
        o["y"] = dst.numpy()

    expected = np.empty((128, 64, 4), np.float32)
    for core in range(8):
        rows = slice(16 * core, 16 * core + 16)
        expected[rows] = np.take(src[rows], index[rows].flatten(order="F")[:64], axis=1)
    np.testing.assert_array_equal(run(body)["y"], expected.reshape(128, 4, 16, 4))


def test_local_gather_needs_a_dst_sized_to_what_it_gathers():
    # NKI 0.6.0 Known Issues: num_elem_per_idx "is currently ignored unless num_valid_indices * num_elem_per_idx ==
    # dst.size / dst.shape[0]": a larger dst gathers something else on a device, so it is refused here
    src = np.arange(128 * 64, dtype=np.float32).reshape(128, 64)
    index = np.zeros((128, 2), np.uint16)

    def body(free):
        nisa.local_gather(dst=empty((128, free)), src_buffer=tile(src), index=tile(index, nl.uint16),
                          num_elem_per_idx=2, num_valid_indices=8)

    run(lambda o: body(16))
    with pytest.raises(ConstraintError, match=r"dst holds 24 elements per partition, not the 16 each partition "
                                              r"gathers \(8 indices x 2\).*local_gather.dst-size"):
        run(lambda o: body(24))


def test_sequence_bounds_affine_select_and_iota():
    ids = np.array([[1, 1, 2, 2, 2, 0, 3]], dtype=np.int32)

    def body(o):
        b = empty((1, 2, 7), nl.int32)
        nisa.sequence_bounds(dst=b, segment_ids=tile(ids, nl.int32))
        causal = empty((8, 8))
        nisa.affine_select(dst=causal, pattern=[[-1, 8]], channel_multiplier=1, on_true_tile=tile(np.ones((8, 8))),
                           on_false_value=-9.0, cmp_op=nl.greater_equal)
        o.update(b=b.numpy(), c=causal.numpy())

    out = run(body)
    np.testing.assert_array_equal(out["b"][0, 0], [0, 0, 2, 2, 2, 7, 6])
    np.testing.assert_array_equal(out["b"][0, 1], [2, 2, 5, 5, 5, -1, 7])  # one past each segment's last element
    np.testing.assert_array_equal(out["c"], np.where(np.tril(np.ones((8, 8))) > 0, 1.0, -9.0))


@pytest.mark.parametrize("ids, start, end", [
    # the docstring example of the SDK test (nki/test/test_nki_isa_sequence_bounds.py L24-30)
    ([0, 1, 1, 2, 2, 2, 0, 3, 3], [9, 1, 1, 3, 3, 3, 9, 7, 7], [-1, 3, 3, 6, 6, 6, -1, 9, 9]),
    # its NumPy semantics (L55-92) compares neighbours: an id that comes back after another is a new segment
    ([1, 1, 0, 1, 2], [0, 0, 5, 3, 4], [2, 2, -1, 4, 5]),
])
def test_sequence_bounds_matches_the_sdk_example_and_numpy_semantics(ids, start, end):
    def body(o):
        b = empty((1, 2, len(ids)), nl.int32)
        nisa.sequence_bounds(dst=b, segment_ids=tile([ids], nl.int32))
        o["b"] = b.numpy()

    np.testing.assert_array_equal(run(body)["b"][0], [start, end])


def test_vector_accumulating_instructions():
    x = RNG.standard_normal((32, 16)).astype(np.float32)
    col = RNG.standard_normal((32, 1)).astype(np.float32)
    pred = (RNG.random((32, 16)) > 0.5).astype(np.uint8)

    def body(o):
        y, r = empty((32, 16)), empty((32, 1))
        nisa.tensor_scalar_reduce(dst=y, data=tile(x), op0=nl.multiply, operand0=tile(col), reduce_op=nl.add,
                                  reduce_res=r)
        s, sr = empty((32, 16)), empty((32, 1))
        nisa.select_reduce(dst=s, predicate=tile(pred, nl.uint8), on_true=tile(x), on_false=-5.0, reduce_res=sr,
                           reduce_cmd=nisa.reduce_cmd.reset_reduce)
        t = empty((32, 16))
        nisa.scalar_tensor_tensor(dst=t, data=tile(x), op0=nl.add, operand0=1.0, op1=nl.multiply, operand1=tile(x))
        c = empty((32, 16))
        nisa.tensor_scalar_cumulative(dst=c, src=tile(x), op0=nl.multiply, op1=nl.add, imm0=2.0)
        o.update(y=y.numpy(), r=r.numpy(), s=s.numpy(), sr=sr.numpy(), t=t.numpy(), c=c.numpy())

    out = run(body)
    np.testing.assert_allclose(out["y"], x * col, rtol=1e-6)
    np.testing.assert_allclose(out["r"], (x * col).sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-6)
    sel = np.where(pred != 0, x, -5.0)
    np.testing.assert_array_equal(out["s"], sel)
    np.testing.assert_array_equal(out["sr"], sel.max(axis=1, keepdims=True))
    np.testing.assert_allclose(out["t"], (x + 1) * x, rtol=1e-6)
    np.testing.assert_allclose(out["c"], np.cumsum(2 * x.astype(np.float64), axis=1), rtol=1e-5, atol=1e-5)


def test_registers_round_trip():
    def body(o):
        reg = nisa.register_alloc(5)
        other = nisa.register_alloc()
        nisa.register_move(other, reg)
        cell = tile([[41]], nl.int32)
        nisa.register_load(reg, cell)
        out, moved = empty((1, 1), nl.int32), empty((1, 1), nl.int32)
        nisa.register_store(out, reg)
        nisa.register_store(moved, other)
        o.update(a=moved.numpy()[0, 0], b=out.numpy()[0, 0])

    out = run(body)
    assert out == {"a": 5, "b": 41}
    assert nisa.get_nc_version() in (nisa.nc_version.gen2, nisa.nc_version.gen3)


def test_a_register_keeps_u32_values():
    # nki/get-started/nki-language-guide.rst L526: "Each register is 32-bit and supports ... u32": 0xFFFFFFFF loaded
    # from a uint32 tensor and the immediate 3,000,000,000 come back unchanged from uint32 tensors
    def body(o):
        out = empty((1, 3), nl.uint32)
        reg = nisa.register_alloc()
        nisa.register_load(reg, tile([[0xFFFFFFFF]], nl.uint32))
        nisa.register_store(out[:, 0:1], reg)
        nisa.register_store(out[:, 1:2], nisa.register_alloc(3000000000))
        nisa.register_store(out[:, 2:3], nisa.register_alloc(7))
        o["y"] = out.numpy()

    np.testing.assert_array_equal(run(body)["y"][0], np.array([0xFFFFFFFF, 3000000000, 7], np.uint32))


def test_a_register_keeps_an_fp32_value():
    # "Each register is 32-bit and supports multiple data types: u8, u16, u32, i8, i16, i32, and fp32"
    # (nki/get-started/nki-language-guide.rst L526): a float32 value loaded and stored back is unchanged
    values = np.array([2.5, -0.1, 3.0e38], np.float32)

    def body(o):
        out = empty((1, 3))
        for i, value in enumerate(values):
            reg = nisa.register_alloc()
            nisa.register_load(reg, tile([[value]]))
            nisa.register_store(out[:, i:i + 1], reg)
        o["y"] = out.numpy()

    np.testing.assert_array_equal(run(body)["y"][0], values)


@pytest.mark.parametrize("misuse", ["bf16 source", "fp32 into int32", "fp32 as a loop bound"])
def test_a_register_refuses_what_its_data_types_do_not_cover(misuse):
    def body(o):
        reg = nisa.register_alloc()
        if misuse == "bf16 source":  # bf16 is not one of the register's data types
            nisa.register_load(reg, tile([[2.0]], nl.bfloat16))
        nisa.register_load(reg, tile([[2.0]]))
        if misuse == "fp32 into int32":  # no conversion between data types is documented (assumption)
            nisa.register_store(empty((1, 1), nl.int32), reg)
        nl.fori_loop(0, reg, lambda i: None)  # a loop bound is an integer

    with pytest.raises(ConstraintError, match="rule register.operands"):
        run(body)


def test_dropout_and_rng_statistics():
    def body(o):
        x = tile(np.ones((128, 512)))
        y = empty((128, 512))
        nisa.dropout(dst=y, data=x, prob=0.25)
        bits = empty((128, 512), nl.uint16)
        nisa.rng(dst=bits)
        o.update(y=y.numpy(), bits=bits.numpy())

    out = run(body)
    # 65536 Bernoulli(0.75) draws: standard error 0.0017, so 0.01 is ~6 sigma.
    assert abs(out["y"].mean() - 0.75) < 0.01
    assert set(np.unique(out["y"])) <= {0.0, 1.0}
    # uniform 16-bit values: mean 32767.5, standard error ~73.
    assert abs(out["bits"].astype(np.float64).mean() - 32767.5) < 600


@pytest.mark.parametrize("op1, imm1, golden", [
    # sdk nki/test/test_nki_isa_tensor_scalar_cumulative.py L251-310 (load_reduce1/2/3); isa L1274-1276
    # (``elif reduce_cmd == load_reduce: reg = imm1``), also on the run's first accumulating instruction.
    (nl.add, 1.0, np.cumsum(np.full((128, 64), 2.0), axis=1) + 1.0),
    (nl.multiply, 0.0, np.zeros((128, 64))),
    (nl.min, 0.0, np.zeros((128, 64))),
])
def test_tensor_scalar_cumulative_load_reduce_starts_from_imm1(op1, imm1, golden):
    src = np.ones((128, 64), dtype=np.float32)

    def body(o):
        dst = empty((128, 64))
        nisa.tensor_scalar_cumulative(dst=dst, src=tile(src), op0=nl.add, op1=op1, imm0=tile(np.ones((128, 1))),
                                      imm1=tile(np.full((128, 1), imm1)), reduce_cmd=nisa.reduce_cmd.load_reduce)
        o["d"] = dst.numpy()

    np.testing.assert_array_equal(run(body)["d"], golden)


def test_tensor_scalar_cumulative_load_reduce_then_reduce_chain():
    # sdk test_nki_isa_tensor_scalar_cumulative.py L331-348 (chain2): cumsum(ones) + 65
    src = np.ones((128, 64), dtype=np.float32)

    def body(o):
        dst = empty((128, 64))
        nisa.tensor_scalar_cumulative(dst=dst, src=tile(src), op0=nl.add, op1=nl.add, imm0=np.float32(0.0),
                                      imm1=np.float32(1.0), reduce_cmd=nisa.reduce_cmd.load_reduce)
        nisa.tensor_scalar_cumulative(dst=dst, src=tile(src), op0=nl.add, op1=nl.add, imm0=np.float32(0.0),
                                      imm1=np.float32(1.0), reduce_cmd=nisa.reduce_cmd.reduce)
        o["d"] = dst.numpy()

    np.testing.assert_array_equal(run(body)["d"], np.cumsum(src, axis=1) + 65)


def test_core_barrier_makes_each_core_see_the_other_cores_writes():
    # isa L2601-2654: both cores write halves of a shared tensor, core_barrier, "Now both cores can safely read the
    # complete tensor"; nki_simulator.rst L207-210: kernel[2] runs two threads that core_barrier synchronises
    import dste.nkisim as sim

    def body(reach_barrier=(True, True)):
        shared = nl.ndarray((2, 8), dtype=nl.float32, buffer=nl.shared_hbm)
        out = nl.ndarray((2, 2, 8), dtype=nl.float32, buffer=nl.shared_hbm)
        me = nl.program_id(0)
        mine = empty((1, 8))
        nisa.memset(dst=mine, value=float(me + 1))
        nisa.dma_copy(dst=shared[me:me + 1, :], src=mine)
        if not reach_barrier[me]:  # this core ends here: reading the other's row would also be a race
            return out
        nisa.core_barrier(data=shared, cores=(0, 1))
        whole = empty((2, 8))
        nisa.dma_copy(dst=whole, src=shared)
        nisa.dma_copy(dst=out[me], src=whole)
        return out

    out, _ = sim.run_kernel(body, (), {}, lnc=2, target="trn2")
    want = np.stack([np.full(8, 1.0), np.full(8, 2.0)])
    np.testing.assert_array_equal(out[0], want)
    np.testing.assert_array_equal(out[1], want)
    with pytest.raises(ConstraintError, match="program 0 waits at barrier 1, but program 1 ended.*core_barrier.both"):
        sim.run_kernel(lambda: body((True, False)), (), {}, lnc=2, target="trn2")

    def failing():  # program 1 fails before the barrier: its error is the launch's, program 0 does not hang
        shared = nl.ndarray((2, 8), dtype=nl.float32, buffer=nl.shared_hbm)
        if nl.program_id(0) == 1:
            nisa.memset(dst=empty((1, 8), nl.int32), value=1.0)  # a float into an int tile
        nisa.core_barrier(data=shared, cores=(0, 1))

    with pytest.raises(ConstraintError, match="memset.value_type"):
        sim.run_kernel(failing, (), {}, lnc=2, target="trn2")


def test_a_loop_register_indexes_a_tensor():
    # about/index.rst L163-171: ``for i in nl.dynamic_range(lo, hi): process_tensor(t[i])``; language L200-209:
    # ``sb[nl.ds(i, 8), :]  # dynamic slice``. The index is read at run time, as .select(0, i) reads it.
    x = np.arange(32, dtype=np.float32).reshape(4, 8)

    def body(o):
        src = nl.ndarray((4, 8), nl.float32, buffer=nl.hbm)
        src.array()[...] = x
        rows = nl.ndarray((4, 8), nl.float32, buffer=nl.hbm)
        pairs = nl.ndarray((4, 8), nl.float32, buffer=nl.hbm)
        cols = empty((1, 8))

        def copy_row(i):
            nisa.dma_copy(dst=rows[nl.ds(i, 1), :], src=src[nl.ds(i, 1), :])

        nl.fori_loop(0, 4, copy_row)
        with pytest.warns(DeprecationWarning, match="dynamic_range"):
            for i in nl.dynamic_range(nisa.register_alloc(0), nisa.register_alloc(4)):
                nisa.dma_copy(dst=pairs[i], src=src[i])

        def copy_column_block(i):
            nisa.dma_copy(dst=cols, src=src[nl.ds(1, 1), nl.ds(i, 8)])

        nl.fori_loop(0, 1, copy_column_block)
        o.update(rows=rows.numpy(), pairs=pairs.numpy(), cols=cols.numpy())

    out = run(body)
    np.testing.assert_array_equal(out["rows"], x)
    np.testing.assert_array_equal(out["pairs"], x)

    def on_partitions(o, start):  # a register start partition is held to the start-partition rule when it is read
        sb, cols = tile(np.tile(np.arange(64, dtype=np.float32)[:, None], (1, 8))), empty((32, 8))

        def copy_block(i):
            nisa.tensor_copy(dst=cols, src=sb[nl.ds(i, 32), :])

        nl.fori_loop(start, start + 1, copy_block)
        o["c"] = cols.numpy()

    np.testing.assert_array_equal(run(lambda o: on_partitions(o, 32))["c"][:, 0], np.arange(32, 64))
    with pytest.raises(ConstraintError, match="starts at partition 16.*isa.start_partition"):
        run(lambda o: on_partitions(o, 16))
    np.testing.assert_array_equal(out["cols"], x[1:2])


def test_register_doc_examples_with_one_element_sbuf_tensors():
    # nki/api/nki/isa/__init__.py L3123-3124 ("shape [1] or [1, 1]"), L3139 (``nl.ones([1], dtype=nl.int32,
    # buffer=nl.sbuf)``), L3165 (``nl.ndarray([1], dtype=nl.int32, buffer=nl.sbuf)``). assumption: such a [1] SBUF
    # tensor serves register_load / register_store only (the language guide L286 says SBUF tensors are 2-D)
    def body(o):
        computed_bound = nl.ones([1], dtype=nl.int32, buffer=nl.sbuf)
        loop_reg = nisa.register_alloc()
        nisa.register_load(loop_reg, computed_bound)
        result_tensor = nl.ndarray([1], dtype=nl.int32, buffer=nl.sbuf)
        nisa.register_store(result_tensor, loop_reg)
        o["r"] = result_tensor.numpy()
        with pytest.raises(ConstraintError, match="rule isa.on_chip_1d"):
            nisa.tensor_copy(dst=empty((1, 1), nl.int32), src=result_tensor)

    assert run(body)["r"].tolist() == [1]


def test_indirect_dma_transpose_doc_example():
    # nki/api/nki/isa/__init__.py L889-939: "Indirect transpose effectively performs: flat_indices =
    # indices.T.flatten()[:src.shape[0]]; gathered = src[flat_indices, :]; dst = gathered.T" (the
    # gather_transpose_kernel example, indices [128, 1]); TRN2+ only
    src = (np.arange(256 * 128) % 251).astype(np.float32).reshape(256, 128)
    idx = (255 - 2 * np.arange(128)).astype(np.uint32).reshape(128, 1)

    def body(o, skip=False):
        src_hbm = nl.ndarray((256, 128), nl.bfloat16, buffer=nl.hbm)
        src_hbm.array()[...] = src.astype(nl.bfloat16)
        index = idx.copy()
        if skip:
            index[3, 0] = 999  # out of bounds: under oob_mode.skip its column keeps dst's value
        dst_sb = tile(np.full((128, 128), 7.0), nl.bfloat16)
        src_ap = src_hbm.ap(pattern=[[128, 128], [1, 128]], vector_offset=tile(index, nl.uint32), indirect_dim=0)
        nisa.dma_transpose(dst=dst_sb, src=src_ap, axes=(1, 0),
                           oob_mode=nisa.oob_mode.skip if skip else nisa.oob_mode.error)
        o["d"] = dst_sb.numpy().astype(np.float32)

    want = src[idx[:, 0], :].T
    np.testing.assert_array_equal(run(body)["d"], want)
    got = run(lambda o: body(o, skip=True))["d"]
    np.testing.assert_array_equal(np.delete(got, 3, axis=1), np.delete(want, 3, axis=1))
    assert (got[:, 3] == 7.0).all()
    with pytest.raises(ConstraintError, match="rule isa.target_only"):
        run(body, target="trn1")


def test_indirect_dma_transpose_reads_a_two_column_index_column_by_column():
    # isa L889-910 and its gather_transpose_2d_kernel example: indices [128, 2] for a 256-row src, "flat_indices =
    # indices.T.flatten()[:src.shape[0]]"; "When indices.shape[1] > 1: indices.shape[0] must be exactly 128"
    src = (np.arange(512 * 64) % 241).astype(np.float32).reshape(512, 64)
    idx = ((np.arange(256) * 37) % 512).astype(np.uint32).reshape(2, 128).T.copy()  # column c holds rows c*128..

    def body(o, copy=False):
        src_hbm = nl.ndarray((512, 64), nl.bfloat16, buffer=nl.hbm)
        src_hbm.array()[...] = src.astype(nl.bfloat16)
        src_ap = src_hbm.ap(pattern=[[64, 256], [1, 64]], vector_offset=tile(idx, nl.uint32), indirect_dim=0)
        if copy:  # dma_copy takes one index per partition
            nisa.dma_copy(dst=nl.ndarray((256, 64), nl.bfloat16, buffer=nl.hbm), src=src_ap)
            return
        dst_sb = empty((64, 256), nl.bfloat16)
        nisa.dma_transpose(dst=dst_sb, src=src_ap, axes=(1, 0))
        o["d"] = dst_sb.numpy().astype(np.float32)

    flat = idx.T.reshape(-1)[:256]
    np.testing.assert_array_equal(run(body)["d"], src[flat].T)
    with pytest.raises(ConstraintError, match=r"only nisa.dma_transpose reads a multi-column index"):
        run(lambda o: body(o, copy=True))


def test_indirect_dma_transpose_of_a_4d_src_gathers_then_permutes_3_1_2_0():
    # isa L889-910: a 4-D src is allowed when "len(src[1]) or len(src[2]) must be 1", and the permutation of a 4-D
    # transpose is [3, 1, 2, 0]; AWS's attention_tkg gathers KV-cache blocks this way. Reference: gather the rows,
    # then np.transpose with that permutation.
    blocks, one, rows, cols = 64, 1, 4, 32
    src = (np.arange(blocks * rows * cols) % 253).astype(np.float32).reshape(blocks, one, rows, cols)
    idx = ((7 * np.arange(32)) % blocks).astype(np.uint32).reshape(32, 1)

    def body(o, skip=False, shape=(blocks, one, rows, cols)):
        src_hbm = nl.ndarray(shape, nl.bfloat16, buffer=nl.hbm)
        src_hbm.array()[...] = src.reshape(shape).astype(nl.bfloat16)
        index = idx.copy()
        if skip:
            index[5, 0] = 999  # under oob_mode.skip its slice of dst keeps its value
        dst_sb = tile(np.full((cols, shape[1], shape[2], 32), 7.0), nl.bfloat16)
        pattern = [[shape[1] * shape[2] * cols, 32], [shape[2] * cols, shape[1]], [cols, shape[2]], [1, cols]]
        src_ap = src_hbm.ap(pattern=pattern, vector_offset=tile(index, nl.uint32), indirect_dim=0)
        nisa.dma_transpose(dst=dst_sb, src=src_ap, axes=(3, 1, 2, 0),
                           oob_mode=nisa.oob_mode.skip if skip else nisa.oob_mode.error)
        o["d"] = dst_sb.numpy().astype(np.float32)

    want = np.transpose(src[idx[:, 0]], (3, 1, 2, 0))
    np.testing.assert_array_equal(run(body)["d"], want)
    got = run(lambda o: body(o, skip=True))["d"]
    np.testing.assert_array_equal(np.delete(got, 5, axis=3), np.delete(want, 5, axis=3))
    assert (got[..., 5] == 7.0).all()
    with pytest.raises(ConstraintError, match=r"src.shape\[1\] or src.shape\[2\] of 1 for a 4-D src"):
        run(lambda o: body(o, shape=(blocks, 2, 2, cols)))


@pytest.mark.parametrize("mode", ["swdge", "unknown"])
def test_dma_transpose_with_a_scalar_offset_takes_any_dge_mode(mode):
    # nki/deep-dives/nki-dge.rst L186-204: with ``.ap()`` and ``scalar_offset``, dma_transpose takes "Any mode"
    x = np.arange(64, dtype=np.float32).reshape(4, 16)

    def body(o):
        a = nl.ndarray((4, 16), nl.bfloat16, buffer=nl.hbm)
        a.array()[...] = x.astype(nl.bfloat16)
        d = empty((16, 2), nl.bfloat16)
        nisa.dma_transpose(dst=d, src=a.ap([[16, 2], [1, 16]], scalar_offset=nisa.register_alloc(1), indirect_dim=0),
                           dge_mode=getattr(nisa.dge_mode, mode))
        o["d"] = d.numpy().astype(np.float32)

    np.testing.assert_array_equal(run(body)["d"], x[1:3].T)
