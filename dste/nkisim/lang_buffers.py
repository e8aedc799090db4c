"""``nl`` buffers (``nl.sbuf``, ``nl.psum``, ``nl.hbm``, ...), ``nl.tile_size`` and ``NKIObject``.

``MemoryRegion`` is a ``str`` enum, so ``t.buffer == nl.sbuf`` holds for a tensor whose buffer is
reported as the string ``"sbuf"``. ``nl.hbm`` is an alias of ``nl.private_hbm`` (stub docstring).
``nl.tile_size`` attributes added after NKI 0.3 are refused when an older release is followed.
"""

import enum
import warnings

from . import cost, runtime, version
from .rules_language import violate

RN = "release-notes/components/nki.rst"


class MemoryRegion(str, enum.Enum):
    """Memory region constants for NKI tensors."""

    sbuf = "sbuf"
    psum = "psum"
    private_hbm = "private_hbm"
    shared_hbm = "shared_hbm"

    def __repr__(self):
        return f"nl.{self.value}"

    __str__ = __repr__


sbuf = MemoryRegion.sbuf
psum = MemoryRegion.psum
private_hbm = MemoryRegion.private_hbm
shared_hbm = MemoryRegion.shared_hbm
hbm = MemoryRegion.private_hbm


def buffer_name(buffer, function="ndarray"):
    """The storage name of a buffer object; plain strings are refused (NKI 0.3 breaking change)."""
    if isinstance(buffer, MemoryRegion):
        return buffer.value
    violate("nl.buffer.object", f"nl.{function}: buffer={buffer!r} is not a buffer object; use nl.sbuf, nl.psum, "
                                "nl.hbm, nl.shared_hbm or nl.private_hbm")


def region_of(name):
    """The MemoryRegion of a storage buffer name."""
    return MemoryRegion(name)


class NKIObject:
    """Base class for NKI kernel dataclasses and configuration objects (keyword fields become attributes)."""

    def __init__(self, **kwargs):
        for key, value in kwargs.items():
            setattr(self, key, value)


def _since(introduced, deprecated=None):
    """A tile_size property refused before ``introduced`` and warning from ``deprecated`` on."""

    def wrap(fn):
        def getter(self):
            api = f"nl.tile_size.{fn.__name__}"
            if introduced:
                version.require(api, introduced=introduced, source=RN)
            if deprecated and version.current() >= version.parse(deprecated):
                warnings.warn(f"{api} is deprecated since NKI {deprecated} ({RN})", DeprecationWarning, stacklevel=2)
            return fn(self)

        getter.__name__, getter.__doc__ = fn.__name__, fn.__doc__
        return property(getter)

    return wrap


def _per_partition_sbuf():
    return int(cost.constant("sbuf_bytes_per_partition", runtime.current().target))


class _TileSize(NKIObject):
    """Hardware tile size constants (``nki/api/nki.language.tile_size.rst``); SBUF figures follow the run's target."""

    @_since(None)
    def pmax(self):
        """Maximum partition dimension of a tile."""
        return 128

    @_since(None, deprecated="0.4")
    def psum_fmax(self):
        """PSUM bank free size in fp32 elements (deprecated name of psum_bank_fmax)."""
        return 512

    @_since("0.4")
    def psum_bank_fmax(self):
        """Maximum free dimension per PSUM bank per partition, in fp32 elements."""
        return 512

    @_since("0.4")
    def psum_bank_fmax_bytes(self):
        """Maximum free dimension per PSUM bank per partition, in bytes."""
        return 2048

    @_since(None)
    def gemm_stationary_fmax(self):
        """Maximum free dimension of the matmul stationary operand."""
        return 128

    @_since(None)
    def gemm_moving_fmax(self):
        """Maximum free dimension of the matmul moving operand."""
        return 512

    @_since("0.5")
    def psum_num_banks(self):
        """Usable PSUM banks per partition (8; 7 only with NKI_DMA_TRANSPOSE_AS_PE_TRANSPOSE, not simulated)."""
        return 8

    @_since("0.4")
    def sbuf_fmax_bytes(self):
        """Usable SBUF bytes per partition on the run's target."""
        return _per_partition_sbuf()

    @_since("0.4")
    def sbuf_fmax(self):
        """Usable SBUF free size per partition in fp32 elements."""
        return _per_partition_sbuf() // 4

    @_since("0.4")
    def sbuf_size_bytes(self):
        """SBUF bytes over all 128 partitions (128 x the usable per-partition bytes; assumption)."""
        return 128 * _per_partition_sbuf()

    @_since(None, deprecated="0.4")
    def total_available_sbuf_size(self):
        """Usable SBUF bytes per partition (deprecated name of sbuf_fmax_bytes)."""
        return _per_partition_sbuf()

    def _undocumented(name):  # noqa: N805 - builds properties at class creation
        def getter(self):
            violate("nl.tile_size.undocumented", f"nl.tile_size.{name} has no documented value")

        getter.__name__ = name
        return property(getter)

    @property
    def bn_stats_fmax(self):
        """The most elements per partition nisa.bn_stats reads: 512 (nki.isa bn_stats docstring)."""
        from .isa_vector import BN_STATS_FMAX

        return BN_STATS_FMAX

    psum_min_align = _undocumented("psum_min_align")
    sbuf_min_align = _undocumented("sbuf_min_align")
    del _undocumented

    def __repr__(self):
        return "nl.tile_size"


tile_size = _TileSize()
