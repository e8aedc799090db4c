"""A rank that dies or stalls ends the job on every rank with an error naming it, within a bound."""

import time

import numpy as np
import pytest

from dste.distributed import DistributedJobError, spawn
from tests.distributed.graphs import shuffled_graph
from tests.distributed.workers import DIED_EXIT_CODE, gcn_then_die, stall_before_any_collective, stall_then_continue

pytestmark = pytest.mark.multiprocess  # every test here spawns a process group

FAILURE_BOUND_S = 60.0
COLLECTIVE_TIMEOUT_S = 20.0
# A live rank beats every 0.25 s, so the probe that tells dead ranks from stuck ones takes 2 * 0.25 + 1 = 1.5 s
# instead of the default 3 s (a beat missed for 1.5 s still means a dead process, even on a busy machine).
HEARTBEAT_S = 0.25


def test_a_dead_rank_makes_every_other_rank_fail_naming_it():
    adj, x = shuffled_graph(seed=0)
    start = time.monotonic()
    with pytest.raises(DistributedJobError) as info:
        spawn(gcn_then_die, 3, (adj, x, 1, 50), timeout_s=COLLECTIVE_TIMEOUT_S, heartbeat_s=HEARTBEAT_S)
    elapsed = time.monotonic() - start
    outcomes = {o.rank: o for o in info.value.outcomes}
    assert outcomes[1].status == "died" and outcomes[1].exitcode == DIED_EXIT_CODE
    for rank in (0, 2):
        o = outcomes[rank]
        assert o.status == "error" and o.error_type == "RankFailure", o
        assert "rank(s) [1] stopped" in o.message, o.message  # the dead rank is named
        assert "restart every rank" in o.message  # and what to do
        # from the rank's own start; the dead rank lived a few seconds before dying
        assert o.seconds < FAILURE_BOUND_S
    assert elapsed < FAILURE_BOUND_S + 15  # process start-up and shutdown on a shared 2-core machine


def test_a_stalled_rank_times_out_the_others_naming_it():
    stall_s = 4.5  # past the other rank's 2 s collective timeout plus its 1.5 s diagnosis probe
    with pytest.raises(DistributedJobError) as info:
        spawn(stall_then_continue, 2, (1, stall_s), timeout_s=2.0, heartbeat_s=HEARTBEAT_S)
    outcomes = {o.rank: o for o in info.value.outcomes}
    assert outcomes[0].status == "error" and outcomes[0].error_type == "RankFailure"
    assert "rank(s) [1] are alive but did not reach this collective within the 2 s timeout" in outcomes[0].message
    assert outcomes[0].seconds < FAILURE_BOUND_S


def test_a_rank_stalled_before_its_first_collective_is_named():
    # a live rank that had not entered any collective yet (no step key) was counted neither dead nor stuck:
    # the others said "no other rank was found dead or stuck" and named no rank
    with pytest.raises(DistributedJobError) as info:
        spawn(stall_before_any_collective, 2, (1, 4.5), timeout_s=2.0, heartbeat_s=HEARTBEAT_S)
    outcome = {o.rank: o for o in info.value.outcomes}[0]
    assert outcome.error_type == "RankFailure", outcome
    assert "rank(s) [1] are alive but did not reach this collective within the 2 s timeout" in outcome.message


def test_a_result_that_cannot_be_pickled_is_reported_as_such():
    from tests.distributed.workers import return_a_lock

    # the queue's feeder thread dropped it and printed to the rank's stderr: "died: exited without a result"
    with pytest.raises(DistributedJobError) as info:
        spawn(return_a_lock, np.int64(2), timeout_s=COLLECTIVE_TIMEOUT_S, heartbeat_s=HEARTBEAT_S)
    for outcome in info.value.outcomes:  # np.int64(2) was refused as a world size
        assert outcome.status == "error" and outcome.error_type == "TypeError", outcome
        assert "returned a lock that cannot be pickled to the parent" in outcome.message
