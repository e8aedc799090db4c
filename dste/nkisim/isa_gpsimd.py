"""nki.isa instructions (placeholder signatures)."""

from . import ops  # noqa: F401
from .isa_common import dge_mode, dma_engine, engine, not_simulated, oob_mode, reduce_cmd  # noqa: F401

@not_simulated
def affine_select(dst, pattern, channel_multiplier, on_true_tile, on_false_value, cmp_op=ops.equal, offset=0, name=None):
    """Not simulated."""


@not_simulated
def local_gather(dst, src_buffer, index, num_elem_per_idx=1, num_valid_indices=None, name=None):
    """Not simulated."""


@not_simulated
def nc_n_gather(dst, data, indices, name=None):
    """Not simulated."""


@not_simulated
def nonzero_with_count(dst, src, index_offset=0, padding_val=-1, name=None):
    """Not simulated."""


@not_simulated
def sequence_bounds(dst, segment_ids, name=None):
    """Not simulated."""


@not_simulated
def tensor_partition_reduce(dst, op, data, name=None):
    """Not simulated."""


@not_simulated
def topk(val_dst, idx_dst, src, n, name=None):
    """Not simulated."""
