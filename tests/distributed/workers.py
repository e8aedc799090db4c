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


def gcn_input_checks(comm, adj, x):
    """Each rank runs the checks of ``test_parity.test_forward_reads_inputs_as_documented`` and reports what happened.

    Every refusal happens before the first collective on every rank, so the job goes on after it.
    """
    from dste.distributed.shard import shard_graph

    shard = shard_graph(adj, np.arange(adj.shape[0]) % comm.world_size)[comm.rank]
    x_owned = x[shard.owned]
    outcome = {"owned": shard.owned}
    for hidden in (2, 8):  # 2: W1 before the exchange; 8: the exchange before W1 (x has 4 features)
        weights = GCNWeights.random(x.shape[1], hidden, 3, seed=0)
        model = DistributedGCN(comm, shard, weights)
        with torch.no_grad():
            outcome[hidden, "float32"] = model.forward(torch.from_numpy(x_owned)).numpy()
            for name, given in (("int64 tensor", torch.from_numpy(np.round(x_owned)).long()),
                                ("float64 tensor", torch.from_numpy(x_owned).double())):
                outcome[hidden, name] = model.forward(given).numpy()
        weights.w1.requires_grad_(True)
        try:
            model.forward(x_owned)
            outcome[hidden, "grad"] = "ran"
        except RuntimeError as exc:
            outcome[hidden, "grad"] = str(exc)
        weights.w1.requires_grad_(False)
        doubles = GCNWeights(*(t.double() for t in (weights.w1, weights.b1, weights.w2, weights.b2)))
        with torch.no_grad():
            outcome[hidden, "float64 weights"] = DistributedGCN(comm, shard, doubles).forward(x_owned).numpy()
    try:
        model.apply_snapshot(adj, changed_rows=[adj.shape[0]])
        outcome["changed_rows"] = "ran"
    except ValueError as exc:
        outcome["changed_rows"] = str(exc)
    # an edge between two of rank 1's nodes (owner = id % 2), with a list that names only a node of rank 0
    flipped = adj.tolil()
    flipped[1, 3] = flipped[3, 1] = 0.0 if adj[1, 3] else 1.0
    flipped = flipped.tocsr()
    for name, listed in (("left out", [0]), ("listed", [1, 3])):
        try:
            outcome[name] = model.apply_snapshot(flipped, changed_rows=listed).ranks_reencoded
        except ValueError as exc:
            outcome[name] = str(exc)
    return outcome


def stall_before_any_collective(comm, stall_rank: int, stall_s: float):
    """``stall_rank`` sleeps past the timeout before its first collective (a long load or encode)."""
    if comm.rank == stall_rank:
        time.sleep(stall_s)
    comm.barrier("first barrier")
    return np.zeros(1)


def return_a_lock(comm):
    """Returns what cannot be pickled to the parent."""
    import threading

    comm.barrier("before returning")
    return threading.Lock()
