"""``nl`` buffers (``nl.sbuf``, ``nl.psum``, ``nl.hbm``, ...), ``nl.tile_size`` and ``NKIObject``.

``MemoryRegion`` is a ``str`` enum, so ``t.buffer == nl.sbuf`` holds for a tensor whose buffer is
reported as the string ``"sbuf"``. ``nl.hbm`` is an alias of ``nl.private_hbm`` (stub docstring).
``nl.tile_size`` attributes added after NKI 0.3 are refused when an older release is followed.
"""

import dataclasses
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


class NKIObject:
    """Base class for NKI kernel classes. As the language guide's Class Support says, every such class is like a data
    class, ``@dataclass`` or not: where the class writes no ``__init__``, it gets the compiler's one, whose parameters
    are the class's fields in order (annotated or not; a field without a value defaults to None), and which calls
    ``__post_init__`` when the class has one."""

    def __init__(self, **kwargs):
        for key, value in kwargs.items():
            setattr(self, key, value)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__init__" not in cls.__dict__:  # set now, so a later @dataclass keeps it (it adds only missing methods)
            cls.__init__ = _generated_init(cls.__qualname__, _fields(cls))


def _fields(cls):
    """``{name: default}`` of the class's data attributes and annotated names, the base classes' first."""
    fields = {}
    for klass in reversed(cls.__mro__):
        if klass is object or klass is NKIObject or not issubclass(klass, NKIObject):
            continue
        own = klass.__dict__
        names = list(own.get("__annotations__", {})) + [name for name in own if name not in fields]
        for name in names:
            if name.startswith("__") or name in fields and name not in own:
                continue
            value = own.get(name)
            if isinstance(value, (staticmethod, classmethod, property)) or callable(value):
                continue
            fields[name] = value
    return fields


def _default(value):
    """A field's default: a ``dataclasses.field(...)``'s default or a fresh value of its default_factory."""
    if isinstance(value, dataclasses.Field):
        if value.default_factory is not dataclasses.MISSING:
            return value.default_factory()
        return None if value.default is dataclasses.MISSING else value.default
    return value


def _generated_init(qualname, fields):
    names = list(fields)

    def __init__(self, *args, **kwargs):
        if len(args) > len(names):
            raise TypeError(f"{qualname}() takes {len(names)} positional arguments ({', '.join(names)}), got "
                            f"{len(args)}")
        unknown = [key for key in kwargs if key not in fields]
        if unknown:
            raise TypeError(f"{qualname}() got unexpected keyword argument(s) {', '.join(unknown)}; its fields are "
                            f"{', '.join(names) or 'none'}")
        values = {name: _default(value) for name, value in fields.items()}
        for name, value in zip(names, args):
            if name in kwargs:
                raise TypeError(f"{qualname}() got multiple values for argument {name!r}")
            values[name] = value
        values.update(kwargs)
        for name, value in values.items():
            object.__setattr__(self, name, value)  # as a frozen dataclass's own __init__ does
        post_init = getattr(self, "__post_init__", None)
        if post_init is not None:
            post_init()

    __init__.__qualname__ = f"{qualname}.__init__"
    return __init__


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
