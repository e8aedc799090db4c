"""``nki.collectives``: the official multi-rank collective API, present with its official signatures but not
simulated.

A kernel that imports ``nki.collectives`` (or builds a ``ReplicaGroup``) loads; calling a collective raises
``NotImplementedError`` naming it (rule ``isa.not_simulated``). The official CPU
simulator does not implement them either: "nki.collectives APIs are not implemented in the simulator"
(nki/guides/nki_simulator.rst, Simulation Limitations). Signatures follow ``nki/api/nki/collectives/__init__.py``.
"""

import functools
import inspect

from .lang_buffers import NKIObject


class ReplicaGroup(NKIObject):
    """Defines a group of ranks that participate in a collective operation (an ``NKIObject`` dataclass in the
    stubs, which do not show its fields: it keeps the arguments it is built with, as ``args`` and attributes)."""

    def __init__(self, *args, **kwargs):
        super().__init__(**kwargs)
        self.args = args


def _not_simulated(fn):
    """An official collective: keeps the signature (a wrong call is a TypeError), raises NotImplementedError."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        signature.bind(*args, **kwargs)
        raise NotImplementedError(
            f"nki.collectives.{fn.__name__} is part of the official nki.collectives API but is not simulated by "
            "dste.nkisim (nor by the official simulator: nki/guides/nki_simulator.rst, Simulation Limitations) "
            "[rule isa.not_simulated]"
        )

    wrapper.is_simulated = False
    return wrapper


@_not_simulated
def all_reduce(srcs, dsts, replica_group, op, priority=None, name=None):
    """All-reduce over ``replica_group``."""


@_not_simulated
def all_gather(srcs, dsts, replica_group, collective_dim, priority=None, name=None):
    """All-gather over ``replica_group`` along ``collective_dim``."""


@_not_simulated
def all_gather_v(srcs, dsts, replica_group, metadata_tensor, recv_counts_known=False, has_rdispls=False,
                 priority=None, name=None):
    """Variable-length all-gather."""


@_not_simulated
def reduce_scatter(srcs, dsts, replica_group, collective_dim, op, priority=None, name=None):
    """Reduce-scatter over ``replica_group`` along ``collective_dim``."""


@_not_simulated
def all_to_all(srcs, dsts, replica_group, collective_dim, priority=None, name=None):
    """All-to-all over ``replica_group`` along ``collective_dim``."""


@_not_simulated
def all_to_all_v(srcs, dsts, replica_group, metadata_tensor, recv_counts_known=False, has_rdispls=False,
                 priority=None, name=None):
    """Variable-length all-to-all."""


@_not_simulated
def collective_permute(srcs, dsts, source_target_pairs, priority=None, name=None):
    """Send to and receive from the ranks of ``source_target_pairs``."""


@_not_simulated
def collective_permute_implicit(srcs_by_channel, dsts_by_channel, replica_group, channel_ids=[0],  # noqa: B006
                                priority=None, name=None):
    """Collective permute with implicit source and target ranks (the stub's default ``channel_ids=[0]``)."""


@_not_simulated
def collective_permute_implicit_reduce(srcs0_by_channel, srcs1_by_channel, dsts_by_channel, replica_group, op,
                                       channel_ids=[0], priority=None, name=None):  # noqa: B006
    """Collective permute with implicit ranks, reducing two sources."""


@_not_simulated
def collective_permute_implicit_current_processing_rank_id(iteration_id, replica_group, channel_id=0, name=None):
    """The rank whose data an implicit collective permute processes at ``iteration_id``."""


@_not_simulated
def rank_id(name=None):
    """This rank's id."""
