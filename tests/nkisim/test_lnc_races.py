"""Races between the two cores of a kernel[2] launch on shared HBM (rule kernel.lnc.shared-race).

On hardware the two programs run at the same time (nki/get-started/about/lnc.rst); the simulator runs them one after
the other between core_barriers, so a kernel whose answer depends on that order must be refused, not given the
answer of one order. The pattern the docs bless (nki/api/nki/isa/__init__.py, core_barrier): each core writes a
disjoint part of a shared tensor, and reads the other's part only after a core_barrier.
"""

import numpy as np
import pytest

import dste.nkisim as sim
from dste.nkisim import isa as nisa
from dste.nkisim import language as nl
from dste.nkisim.errors import ConstraintError

from .kernel_bodies import empty

RACE = "kernel.lnc.shared-race"
RNG = np.random.default_rng(0)


def _launch(body, *args, lnc=2):
    out, _ = sim.run_kernel(body, args, {}, lnc=lnc, target="trn2")
    return out


def _row_of_program(value_of_program, rows=1, dtype=nl.float32):
    mine = empty((rows, 8), dtype)
    nisa.memset(dst=mine, value=value_of_program(nl.program_id(0)))
    return mine


def _write_own_row_then_read_both(barrier):
    def body():
        shared = nl.ndarray((2, 8), dtype=nl.float32, buffer=nl.shared_hbm)
        out = nl.ndarray((2, 2, 8), dtype=nl.float32, buffer=nl.shared_hbm)
        me = nl.program_id(0)
        nisa.dma_copy(dst=shared[me:me + 1, :], src=_row_of_program(lambda p: float(p + 1)))
        if barrier:
            nisa.core_barrier(data=shared, cores=(0, 1))
        both = empty((2, 8))
        nisa.dma_copy(dst=both, src=shared)
        nisa.dma_copy(dst=out[me], src=both)
        return out

    return body


def test_reading_the_other_cores_row_needs_a_barrier_between():
    out = _launch(_write_own_row_then_read_both(barrier=True))
    np.testing.assert_array_equal(out, np.broadcast_to(np.repeat([[1.0], [2.0]], 8, axis=1), (2, 2, 8)))
    # without the barrier program 1 would read row 0 before or after program 0 wrote it, depending on timing
    # (program 0, run first, read row 1 before program 1 wrote it)
    with pytest.raises(ConstraintError, match=r"program 1 writes 32 byte\(s\) of shared HBM tensor .* that program 0 "
                                              r"read before the launch's first nisa.core_barrier.*" + RACE):
        _launch(_write_own_row_then_read_both(barrier=False))
    # one core has nothing to race with
    _launch(_write_own_row_then_read_both(barrier=False), lnc=1)


def test_both_cores_writing_the_same_bytes_race_unless_the_values_agree():
    def body(value_of_program):
        out = nl.ndarray((1, 8), dtype=nl.float32, buffer=nl.shared_hbm)
        nisa.dma_copy(dst=out, src=_row_of_program(value_of_program))
        return out

    # 0.0 and 1.0 differ in two of their four bytes
    with pytest.raises(ConstraintError, match=r"at its end: program 0 and program 1 both wrote 16 byte\(s\) of shared "
                                              r"HBM tensor .* their last values there differ.*" + RACE):
        _launch(lambda: body(lambda p: float(p)))
    # a kernel that does not split its work by program_id writes every output twice, with one answer
    np.testing.assert_array_equal(_launch(lambda: body(lambda p: 3.0)), np.full((1, 8), 3.0))


def test_a_write_over_bytes_the_other_core_read_races():
    x = np.arange(16, dtype=np.float32).reshape(2, 8)

    def body(x, row_written_by_program):
        out = nl.ndarray((2, 8), dtype=nl.float32, buffer=nl.shared_hbm)
        me = nl.program_id(0)
        seen = empty((1, 8))
        nisa.dma_copy(dst=seen, src=x[me:me + 1, :])
        nisa.dma_copy(dst=out[me:me + 1, :], src=seen)
        row = row_written_by_program[me]
        nisa.dma_copy(dst=x[row:row + 1, :], src=_row_of_program(lambda p: -1.0))
        return out

    np.testing.assert_array_equal(_launch(body, x.copy(), (0, 1)), x)  # each core overwrites only what it read
    # program 0 read row 0 in the same interval: it may have seen the old values or program 1's
    with pytest.raises(ConstraintError, match=r"program 1 writes 14 byte\(s\) of shared HBM tensor 'arg0' that "
                                              r"program 0 read.*" + RACE):
        _launch(body, x.copy(), (0, 0))


def test_a_race_after_a_barrier_names_its_interval():
    def body(row_of_program):
        shared = nl.ndarray((2, 8), dtype=nl.float32, buffer=nl.shared_hbm)
        out = nl.ndarray((2, 8), dtype=nl.float32, buffer=nl.shared_hbm)
        me = nl.program_id(0)
        nisa.dma_copy(dst=shared[me:me + 1, :], src=_row_of_program(lambda p: float(p)))
        nisa.core_barrier(data=shared, cores=(0, 1))
        # reading what the other core wrote before the barrier is the documented use
        both = empty((2, 8))
        nisa.dma_copy(dst=both, src=shared)
        row = row_of_program[me]
        nisa.dma_copy(dst=out[row:row + 1, :], src=both[me:me + 1, :])
        return out

    np.testing.assert_array_equal(_launch(lambda: body((0, 1))), np.repeat([[0.0], [1.0]], 8, axis=1))
    with pytest.raises(ConstraintError, match=r"both wrote 16 byte\(s\) .*since nisa.core_barrier 1, and their last "
                                              r"values there differ.*" + RACE):
        _launch(lambda: body((0, 0)))


def test_neighbouring_bytes_of_the_two_cores_do_not_race():
    def body():
        out = nl.ndarray((4, 16), dtype=nl.int8, buffer=nl.shared_hbm)
        me = nl.program_id(0)
        mine = empty((4, 8), nl.int8)
        nisa.memset(dst=mine, value=me + 1)
        nisa.dma_copy(dst=out[:, me:16:2], src=mine)  # interleaved columns: every other byte
        return out

    np.testing.assert_array_equal(_launch(body), np.tile([1, 2], (4, 8)))


@pytest.mark.parametrize("overlap", [False, True])
def test_scatters_of_the_two_cores_race_where_their_rows_meet(overlap):
    rows_of_program = {0: [0, 2], 1: [2, 3] if overlap else [1, 3]}

    def body(indices):
        out = nl.ndarray((4, 8), dtype=nl.float32, buffer=nl.shared_hbm)
        me = nl.program_id(0)
        index = empty((2, 1), nl.int32)
        nisa.dma_copy(dst=index, src=indices[me])
        nisa.dma_copy(dst=out.ap(pattern=[[8, 2], [1, 8]], offset=0, vector_offset=index, indirect_dim=0),
                      src=_row_of_program(lambda p: float(p + 1), rows=2))
        return out

    indices = np.array([rows_of_program[0], rows_of_program[1]], np.int32).reshape(2, 2, 1)
    if overlap:
        with pytest.raises(ConstraintError, match=r"both wrote 16 byte\(s\) of shared HBM tensor .* their last "
                                                  r"values there differ.*" + RACE):
            _launch(body, indices)
    else:
        want = np.repeat([[1.0], [2.0], [1.0], [2.0]], 8, axis=1)
        np.testing.assert_array_equal(_launch(body, indices), want)


def test_a_kernel_that_does_not_split_its_work_runs_on_two_cores():
    # AWS's dynamic_elementwise_add: both cores compute the whole result, store it and read it back (a fence copy);
    # every value either core can see is the one it sees here
    x = RNG.standard_normal((4, 8)).astype(np.float32)

    def body(x):
        out = nl.ndarray(x.shape, dtype=nl.float32, buffer=nl.shared_hbm)
        t = empty(x.shape)
        nisa.dma_copy(dst=t, src=x)
        nisa.dma_copy(dst=out, src=t)
        nisa.dma_copy(dst=out, src=out)
        back = empty(x.shape)
        nisa.dma_copy(dst=back, src=out)
        return out

    np.testing.assert_array_equal(_launch(body, x), x)


def test_zeroing_then_scattering_on_both_cores_races_only_if_read_between():
    # AWS's router_topk (no token sharding): both cores zero a shared tensor and scatter the same rows into it. The
    # last value each core leaves is the scattered one, so the result does not depend on the timing, but a read of
    # it between the two could see the other core's zeros.
    def body(read_back):
        out = nl.ndarray((4, 8), dtype=nl.float32, buffer=nl.shared_hbm)
        zeros = empty((4, 8))
        nisa.memset(dst=zeros, value=0.0)
        nisa.dma_copy(dst=out, src=zeros)
        index = empty((2, 1), nl.int32)
        nisa.iota(dst=index, pattern=[[0, 1]], offset=1, channel_multiplier=2)  # rows 1 and 3
        nisa.dma_copy(dst=out.ap(pattern=[[8, 2], [1, 8]], offset=0, vector_offset=index, indirect_dim=0),
                      src=_row_of_program(lambda p: 5.0, rows=2))
        if read_back:
            seen = empty((4, 8))
            nisa.dma_copy(dst=seen, src=out)
        return out

    np.testing.assert_array_equal(_launch(lambda: body(False)), np.repeat([[0.0], [5.0], [0.0], [5.0]], 8, axis=1))
    # (program 0, run first, read its own scattered rows; program 1's zeros may land before that read)
    with pytest.raises(ConstraintError, match=r"program 1 writes 32 byte\(s\) .* that program 0 read.*" + RACE):
        _launch(lambda: body(True))


def _exchange(send_to=(1, 0), receive_from=(1, 0), engine=nisa.dma_engine.dma, width=8):
    """The ISA stub's sendrecv example: each core sends its tile to the next core and receives the previous one's."""

    def body():
        out = nl.ndarray((2, 4, width), dtype=nl.float32, buffer=nl.shared_hbm)
        me = nl.program_id(0)
        mine = empty((4, width))
        nisa.memset(dst=mine, value=float(me + 1))
        got = empty((4, width))
        nisa.sendrecv(src=mine, dst=got, send_to_rank=send_to[me], recv_from_rank=receive_from[me], pipe_id=0,
                      dma_engine=engine)
        nisa.dma_copy(dst=out[me], src=got)
        return out

    return body


def test_sendrecv_swaps_the_two_cores_tiles():
    # nki/api/nki/isa/__init__.py, sendrecv: "The current NeuronCore sends its src tile to the dst location of the
    # target NeuronCore ... while simultaneously receiving data from recv_from_rank into its own dst tile"
    out = _launch(_exchange())
    np.testing.assert_array_equal(out[0], 2.0)
    np.testing.assert_array_equal(out[1], 1.0)
    # each core keeping its own tile is also an exchange both cores agree on
    out = _launch(_exchange(send_to=(0, 1), receive_from=(0, 1)))
    np.testing.assert_array_equal(out[0], 1.0)
    np.testing.assert_array_equal(out[1], 2.0)
    out = _launch(_exchange(engine=nisa.dma_engine.gpsimd_dma, width=256))  # 1024 B per partition of fp32
    np.testing.assert_array_equal(out[1], 1.0)


def test_sendrecv_is_refused_where_the_cores_disagree_or_the_engine_cannot():
    with pytest.raises(ConstraintError, match=r"program 0 sends to core 1 and receives from core 1, program 1 sends to "
                                              r"core 1 and receives from core 0.*sendrecv.operands"):
        _launch(_exchange(send_to=(1, 1), receive_from=(1, 0)))
    with pytest.raises(ConstraintError, match=r"at most 1024 bytes per partition of a 32-bit type with "
                                              r"dma_engine.gpsimd_dma \(got 1028\).*sendrecv.operands"):
        _launch(_exchange(engine=nisa.dma_engine.gpsimd_dma, width=257))
    with pytest.raises(ConstraintError, match=r"nisa.core_barrier: program 0 reached it as its meeting 1 with the other "
                                              r"core, where program 1 reached nisa.sendrecv \(pipe_id 0\)"):
        def one_core_meets_first():
            if nl.program_id(0) == 0:
                nisa.core_barrier(data=nl.ndarray((1, 1), nl.float32, buffer=nl.shared_hbm), cores=(0, 1))
            else:
                t = empty((1, 8))
                nisa.memset(dst=t, value=0.0)
                nisa.sendrecv(src=t, dst=empty((1, 8)), send_to_rank=0, recv_from_rank=0, pipe_id=0)

        _launch(one_core_meets_first)
    with pytest.raises(ConstraintError, match=r"nisa.sendrecv: needs an LNC2 launch"):
        _launch(_exchange(), lnc=1)


def test_sendrecv_orders_the_cores_hbm_accesses_as_a_barrier_does():
    # the default dma_engine "uses the standard DMA engine with CoreBarrier synchronization"
    def body():
        shared = nl.ndarray((2, 8), dtype=nl.float32, buffer=nl.shared_hbm)
        out = nl.ndarray((2, 2, 8), dtype=nl.float32, buffer=nl.shared_hbm)
        me = nl.program_id(0)
        nisa.dma_copy(dst=shared[me:me + 1, :], src=_row_of_program(lambda p: float(p + 1)))
        token = _row_of_program(lambda p: 0.0)
        nisa.sendrecv(src=token, dst=empty((1, 8)), send_to_rank=1 - me, recv_from_rank=1 - me, pipe_id=0)
        both = empty((2, 8))
        nisa.dma_copy(dst=both, src=shared)
        nisa.dma_copy(dst=out[me], src=both)
        return out

    np.testing.assert_array_equal(_launch(body)[1], np.repeat([[1.0], [2.0]], 8, axis=1))


def test_a_core_that_fails_first_does_not_leave_the_other_waiting_at_a_meeting():
    # program 0 fails after the first meeting; program 1 then reaches a second one, which program 0 never will. The
    # launch reports program 0's error (it used to wait for program 0 for ever).
    def body():
        me = nl.program_id(0)
        t = empty((1, 8))
        nisa.memset(dst=t, value=0.0)
        nisa.sendrecv(src=t, dst=empty((1, 8)), send_to_rank=1 - me, recv_from_rank=1 - me, pipe_id=0)
        if me == 0:
            nisa.memset(dst=empty((1, 8), nl.int32), value=1.5)  # a float into an int tile
        nisa.sendrecv(src=t, dst=empty((1, 8)), send_to_rank=1 - me, recv_from_rank=1 - me, pipe_id=0)

    with pytest.raises(ConstraintError, match="memset.value_type"):
        _launch(body)
