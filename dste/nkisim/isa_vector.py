"""nki.isa instructions (placeholder signatures)."""

from . import ops  # noqa: F401
from .isa_common import dge_mode, dma_engine, engine, not_simulated, oob_mode, reduce_cmd  # noqa: F401

@not_simulated
def bn_aggr(dst, data, name=None):
    """Not simulated."""


@not_simulated
def bn_stats(dst, data, name=None):
    """Not simulated."""


@not_simulated
def dropout(dst, data, prob, name=None):
    """Not simulated."""


@not_simulated
def exponential(dst, src, max_value=0.0, reduce_res=None, reduce_cmd=reduce_cmd.idle, reduce_init=0.0, name=None):
    """Not simulated."""


@not_simulated
def max8(dst, src, name=None):
    """Not simulated."""


@not_simulated
def nc_find_index8(dst, data, vals, name=None):
    """Not simulated."""


@not_simulated
def nc_match_replace8(dst, data, vals, imm, dst_idx=None, name=None):
    """Not simulated."""


@not_simulated
def nc_stream_shuffle(dst, src, shuffle_mask, name=None):
    """Not simulated."""


@not_simulated
def rand2(dst, min, max, name=None):
    """Not simulated."""


@not_simulated
def rand_get_state(dst, engine=engine.gpsimd, name=None):
    """Not simulated."""


@not_simulated
def rand_set_state(src_seeds, engine=engine.gpsimd, name=None):
    """Not simulated."""


@not_simulated
def range_select(dst, on_true_tile, comp_op0, comp_op1, bound0, bound1, reduce_cmd=reduce_cmd.reset_reduce, reduce_res=None, reduce_op=ops.maximum, range_start=0, on_false_value=..., name=None):
    """Not simulated."""


@not_simulated
def reciprocal(dst, data, name=None):
    """Not simulated."""


@not_simulated
def rng(dst, engine=engine.vector, name=None):
    """Not simulated."""


@not_simulated
def scalar_tensor_tensor(dst, data, op0, operand0, op1, operand1, reverse0=False, reverse1=False, name=None):
    """Not simulated."""


@not_simulated
def select_reduce(dst, predicate, on_true, on_false, reduce_res=None, reduce_cmd=reduce_cmd.idle, reduce_op=ops.maximum, reverse_pred=False, name=None):
    """Not simulated."""


@not_simulated
def set_rng_seed(src_seeds, name=None):
    """Not simulated."""


@not_simulated
def tensor_scalar_cumulative(dst, src, op0, op1, imm0, imm1=None, reduce_cmd=reduce_cmd.reset_reduce, name=None):
    """Not simulated."""


@not_simulated
def tensor_scalar_reduce(dst, data, op0, operand0, reduce_op, reduce_res=None, reverse0=False, reduce_cmd=reduce_cmd.reset_reduce, reduce_init=None, reduce_res_negate=False, name=None):
    """Not simulated."""
