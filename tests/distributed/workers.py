"""Rank functions for the fault tests (module level, so spawned ranks can import them)."""

import os
import time

import numpy as np
import torch

from dste.distributed.gcn import DistributedGCN, GCNWeights
from dste.distributed.jobs import scatter_graph

DIED_EXIT_CODE = 3


def gcn_then_die(comm, adj, x, die_rank: int, rounds: int):
    """Every rank runs GCN inference ``rounds`` times; ``die_rank`` exits abruptly after the first one.

    Returns ``(seconds from the death to this rank's return)``: never reached by a surviving rank when
    failure handling works, since its next collective must raise instead.
    """
    shard, x_owned = scatter_graph(comm, adj, x)
    model = DistributedGCN(comm, shard, GCNWeights.random(x_owned.shape[1], 16, 4, seed=0))
    with torch.no_grad():
        for i in range(rounds):
            model.forward(x_owned)
            if i == 0 and comm.rank == die_rank:
                os._exit(DIED_EXIT_CODE)  # no cleanup, no message: what a crash or an OOM kill looks like
    return "finished"


def stall_then_continue(comm, stall_rank: int, stall_s: float):
    """``stall_rank`` sleeps past the collective timeout before joining a barrier; the others must time out."""
    comm.barrier("warm-up barrier")
    if comm.rank == stall_rank:
        time.sleep(stall_s)
    comm.barrier("barrier after the stall")
    return np.zeros(1)
