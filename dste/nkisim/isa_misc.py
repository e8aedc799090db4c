"""nki.isa instructions (placeholder signatures)."""

from . import ops  # noqa: F401
from .isa_common import dge_mode, dma_engine, engine, not_simulated, oob_mode, reduce_cmd  # noqa: F401

@not_simulated
def activate2(dst, op, data, imm0, imm1, op0, op1, relu_param=0.0, reverse0=False, reverse1=False, reduce_op=None, reduce_res=None, reduce_cmd=reduce_cmd.idle, name=None):
    """Not simulated."""


@not_simulated
def activation_reduce(dst, op, data, reduce_op, reduce_res, bias=None, scale=1.0, name=None):
    """Not simulated."""


@not_simulated
def core_barrier(data, cores, engine=engine.gpsimd, name=None):
    """Not simulated."""


@not_simulated
def dma_compute(dst, srcs, reduce_op, scales=None, unique_indices=True, oob_mode=oob_mode.error, name=None):
    """Not simulated."""


@not_simulated
def dma_transpose(dst, src, axes=None, priority=None, dge_mode=dge_mode.unknown, oob_mode=oob_mode.error, name=None):
    """Not simulated."""


@not_simulated
def nc_matmul_mx(dst, stationary, moving, stationary_scale, moving_scale, tile_position=None, tile_size=None, accumulate=None, name=None):
    """Not simulated."""


@not_simulated
def quantize_mx(dst, src, dst_scale, name=None):
    """Not simulated."""


@not_simulated
def register_alloc(x=None):
    """Not simulated."""


@not_simulated
def register_load(dst, src):
    """Not simulated."""


@not_simulated
def register_move(dst, src):
    """Not simulated."""


@not_simulated
def register_store(dst, src):
    """Not simulated."""


@not_simulated
def sendrecv(src, dst, send_to_rank, recv_from_rank, pipe_id, dma_engine=dma_engine.dma, name=None):
    """Not simulated."""


class VirtualRegister:
    def __init__(self, state=None, frozen=False):
        self.value = state
