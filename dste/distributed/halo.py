"""Halo exchange: each rank receives exactly the X rows its block's columns need from other ranks.

A :class:`HaloPlan` is built collectively from every rank's ``halo_counts`` / ``halo_ids``
(:class:`dste.distributed.block.LocalBlock`): ranks send each owner the ids they need
(``all_to_all_single`` of counts, then of ids), and each owner keeps, per requester, the local rows
to send. One exchange is then one ``all_to_all_single`` with split sizes, whose output is the
halo section of the local X in column order (halo columns are grouped by owner).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dste.distributed.runtime import Comm
from dste.distributed.shard import GraphShard


@dataclass
class HaloPlan:
    """Who sends which owned rows to whom.

    recv_counts: int64 ``[world_size]`` halo rows received from each rank (this rank's halo_counts).
    send_counts: int64 ``[world_size]`` owned rows sent to each rank.
    send_rows: int64 ``[sum(send_counts)]`` local owned rows to send, grouped by destination rank.
    """

    recv_counts: np.ndarray
    send_counts: np.ndarray
    send_rows: np.ndarray

    @property
    def rows_received(self) -> int:
        return int(self.recv_counts.sum())

    @property
    def rows_sent(self) -> int:
        return int(self.send_counts.sum())

    def exchange(self, comm: Comm, x_owned: torch.Tensor, what: str = "halo rows") -> torch.Tensor:
        """The halo rows ``[rows_received, F]`` (in halo column order) for this rank's owned rows ``x_owned``."""
        send = x_owned.index_select(0, torch.from_numpy(self.send_rows)).contiguous()
        out = torch.empty((self.rows_received, x_owned.shape[1]), dtype=x_owned.dtype)
        return comm.all_to_all_single(out, send, self.recv_counts.tolist(), self.send_counts.tolist(), what)


def _exchange_requests(comm: Comm, shard: GraphShard, halo_ids: np.ndarray, halo_counts: np.ndarray):
    """Send each owner the global ids this rank needs; return the ids every requester asks of us."""
    want = torch.from_numpy(np.ascontiguousarray(halo_counts, dtype=np.int64))
    asked_counts = torch.empty(comm.world_size, dtype=torch.int64)
    comm.all_to_all_single(asked_counts, want, [1] * comm.world_size, [1] * comm.world_size, "halo request counts")
    asked = torch.empty(int(asked_counts.sum()), dtype=torch.int64)
    comm.all_to_all_single(asked, torch.from_numpy(np.ascontiguousarray(halo_ids, dtype=np.int64)),
                           asked_counts.tolist(), halo_counts.tolist(), "halo request ids")
    return asked_counts.numpy(), asked.numpy()


def build_halo_plan(comm: Comm, shard: GraphShard, halo_ids: np.ndarray, halo_counts: np.ndarray) -> HaloPlan:
    """Build the plan collectively (every rank calls this with its own block's halo)."""
    asked_counts, asked = _exchange_requests(comm, shard, halo_ids, halo_counts)
    return HaloPlan(np.asarray(halo_counts, dtype=np.int64).copy(), asked_counts.astype(np.int64), shard.local_index(asked))


def refresh_halo_plan(comm: Comm, shard: GraphShard, plan: HaloPlan, changed: bool,
                      halo_ids: np.ndarray | None = None, halo_counts: np.ndarray | None = None) -> HaloPlan:
    """The plan after some ranks' halos changed; only those ranks' requests travel.

    ``changed``: whether this rank's halo changed (then ``halo_ids``/``halo_counts`` are the new ones).
    Every rank calls this; when no rank changed it costs one small all_gather.
    """
    flags = comm.all_gather_ints([int(bool(changed))], "halo change flags")[:, 0].numpy().astype(bool)
    if not flags.any():
        return plan
    if changed:
        recv_counts = np.asarray(halo_counts, dtype=np.int64).copy()
        request_counts, request_ids = recv_counts, halo_ids
    else:
        recv_counts = plan.recv_counts
        request_counts, request_ids = np.zeros(comm.world_size, dtype=np.int64), np.zeros(0, dtype=np.int64)
    asked_counts, asked = _exchange_requests(comm, shard, request_ids, request_counts)
    # per destination: the new request if that rank changed, else the rows we sent it before
    old_starts = np.concatenate([[0], np.cumsum(plan.send_counts)])
    new_starts = np.concatenate([[0], np.cumsum(asked_counts)])
    new_rows = shard.local_index(asked)
    pieces, counts = [], np.empty(comm.world_size, dtype=np.int64)
    for dst in range(comm.world_size):
        if flags[dst]:
            piece = new_rows[new_starts[dst]:new_starts[dst + 1]]
        else:
            piece = plan.send_rows[old_starts[dst]:old_starts[dst + 1]]
        pieces.append(piece)
        counts[dst] = piece.size
    return HaloPlan(recv_counts, counts, np.concatenate(pieces).astype(np.int64))
