"""``nki.language`` for the simulator: every public function of the NKI 0.6 stub, by name and signature.

Register this module as ``nki.language`` with :func:`dste.nkisim.install`. The functions follow
``nki/api/nki/language/__init__.py`` (aws-neuron-sdk 81ce03ae) parameter by parameter; their
code lives in the ``lang_*`` modules and issues ``nki.isa`` instructions, so the ISA's engine and
dtype rules and the cost model apply. Refusals name a rule of ``dste/nkisim/rules_language.py``.
"""

from . import dtypes as _dtypes
from . import version as _version
from .lang_buffers import (  # noqa: F401 - re-exported buffers, tile sizes and classes
    MemoryRegion,
    NKIObject,
    hbm,
    private_hbm,
    psum,
    sbuf,
    shared_hbm,
    tile_size,
)
from .lang_control import (  # noqa: F401
    affine_range,
    device_print,
    dynamic_range,
    fori_loop,
    is_hbm,
    is_on_chip,
    is_psum,
    is_sbuf,
    no_reorder,
    num_programs,
    program_id,
    program_ndim,
    sequential_range,
    static_range,
    while_loop,
)
from .lang_create import (  # noqa: F401
    dropout,
    empty_like,
    full,
    ndarray,
    ones,
    rand,
    random_seed,
    shared_constant,
    zeros,
    zeros_like,
)
from .lang_create import shared_identity_matrix as _shared_identity_matrix
from .lang_reduce import rms_norm, softmax  # noqa: F401
from .lang_tile import (  # noqa: F401
    broadcast_to,
    expand_dims,
    gather_flattened,
    load,
    load_transpose2d,
    matmul,
    store,
    transpose,
    where,
)
from .ops import (  # noqa: F401 - operators / activation functions that are also nl functions
    abs,
    abs_max,
    abs_min,
    add,
    all,
    arctan,
    average,
    bitwise_and,
    bitwise_or,
    bitwise_xor,
    bypass,
    ceil,
    copy,
    cos,
    divide,
    equal,
    erf,
    erf_dx,
    exp,
    floor,
    fmod,
    gelu,
    gelu_apprx_sigmoid,
    gelu_apprx_sigmoid_dx,
    gelu_apprx_tanh,
    gelu_dx,
    greater,
    greater_equal,
    invert,
    left_shift,
    less,
    less_equal,
    log,
    logical_and,
    logical_not,
    logical_or,
    logical_xor,
    max,
    maximum,
    mean,
    min,
    minimum,
    mish,
    mod,
    multiply,
    negative,
    not_equal,
    power,
    prelu,
    prod,
    reciprocal,
    relu,
    right_shift,
    rsqrt,
    sigmoid,
    sign,
    silu,
    silu_dx,
    sin,
    softplus,
    sqrt,
    square,
    subtract,
    sum,
    tan,
    tanh,
    trunc,
    var,
)
from .tensor import DynSlice, NkiTensor  # noqa: F401

# The stub's type alias for dtypes (``DType = str``), kept for kernels' annotations: ``dtype: nl.DType = nl.bfloat16``.
# The simulator's dtypes are NumPy dtypes, so it is not a class they are instances of.
DType = str

bool_ = _dtypes.bool_
int8, int16, int32 = _dtypes.int8, _dtypes.int16, _dtypes.int32
uint8, uint16, uint32 = _dtypes.uint8, _dtypes.uint16, _dtypes.uint32
float16, float32, bfloat16, tfloat32 = _dtypes.float16, _dtypes.float32, _dtypes.bfloat16, _dtypes.tfloat32
float8_e4m3, float8_e4m3fn, float8_e5m2 = _dtypes.float8_e4m3, _dtypes.float8_e4m3fn, _dtypes.float8_e5m2


class _PackedDtype(str):
    """An NKI dtype the simulator names but cannot hold (the x4 MX types of NeuronCore-v4)."""

    def __repr__(self):
        return f"nl.{str(self)}"


# Packed MX dtypes exist for nisa.nc_matmul_mx on NeuronCore-v4 only (nki.api.shared.rst, tbl-dtype).
float8_e5m2_x4 = getattr(_dtypes, "float8_e5m2_x4", _PackedDtype("float8_e5m2_x4"))
float8_e4m3fn_x4 = getattr(_dtypes, "float8_e4m3fn_x4", _PackedDtype("float8_e4m3fn_x4"))
float4_e2m1fn_x4 = getattr(_dtypes, "float4_e2m1fn_x4", _PackedDtype("float4_e2m1fn_x4"))

_INTRODUCED = {"float8_e8m0fnu": "0.5"}


def __getattr__(name):
    """Module attributes added after NKI 0.3 are refused when an older release is followed."""
    if name in _INTRODUCED:
        _version.require(f"nl.{name}", introduced=_INTRODUCED[name])
        return getattr(_dtypes, name)
    raise AttributeError(f"module 'nki.language' has no attribute {name!r}")


def ds(start, size):
    """``size`` consecutive elements from ``start`` (a slice usable in ``t[...]``)."""
    return DynSlice(start, size)


def shared_identity_matrix(n, dtype=uint8, dst=None):
    """An n x n identity matrix in SBUF (``dst`` when given)."""
    return _shared_identity_matrix(n, dtype, dst)
