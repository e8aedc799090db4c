"""NKI data types as NumPy dtypes, and the conversions the engines apply.

Every NKI dtype is a ``numpy.dtype``; the 16- and 8-bit floats come from
``ml_dtypes``. ``tfloat32`` is stored as float32 (its narrower mantissa only
matters inside TensorE, which rounds tfloat32 operands to it: ``round_to_tf32``). ``bool_`` is stored as uint8 (`nki/api/nki.api.shared.rst`, data types table:
"boolean stored as uint8").

Conversions follow the documented hardware rules: arithmetic happens in fp32,
float -> int rounds half to even and saturates, NaN -> int gives 0 (the NaN
case is not documented; 0 is this simulator's choice).
"""

import ml_dtypes
import numpy as np

uint8 = np.dtype(np.uint8)
int8 = np.dtype(np.int8)
uint16 = np.dtype(np.uint16)
int16 = np.dtype(np.int16)
uint32 = np.dtype(np.uint32)
int32 = np.dtype(np.int32)
float8_e4m3 = np.dtype(ml_dtypes.float8_e4m3)
float8_e5m2 = np.dtype(ml_dtypes.float8_e5m2)
float8_e4m3fn = np.dtype(ml_dtypes.float8_e4m3fn)
float8_e8m0fnu = np.dtype(ml_dtypes.float8_e8m0fnu)
float16 = np.dtype(np.float16)
bfloat16 = np.dtype(ml_dtypes.bfloat16)
# 32-bit storage with TensorE reading 10 mantissa bits (nki/api/nki.api.shared.rst, tbl-dtype: 1S,8E,10M). A float32
# NumPy dtype tagged by metadata: equal to float32 wherever dtypes are compared, told apart by is_tfloat32.
tfloat32 = np.dtype(np.float32, metadata={"nki": "tfloat32"})
float32 = np.dtype(np.float32)
bool_ = np.dtype(np.uint8)

FLOAT_DTYPES = frozenset(
    [float8_e4m3, float8_e5m2, float8_e4m3fn, float8_e8m0fnu, float16, bfloat16, float32]
)
INT_DTYPES = frozenset([uint8, int8, uint16, int16, uint32, int32])
ALL_DTYPES = FLOAT_DTYPES | INT_DTYPES
FP8_DTYPES = frozenset([float8_e4m3, float8_e5m2, float8_e4m3fn, float8_e8m0fnu])

_UNSIGNED_OF_WIDTH = {1: np.dtype(np.uint8), 2: np.dtype(np.uint16), 4: np.dtype(np.uint32)}


def as_dtype(dtype):
    """Normalise a dtype-like (NKI dtype, NumPy dtype, torch dtype, string) to a supported NumPy dtype."""
    if dtype is None:
        raise TypeError("dtype is required; allowed: " + ", ".join(sorted(d.name for d in ALL_DTYPES)))
    if hasattr(dtype, "is_floating_point") and not isinstance(dtype, np.dtype):
        dtype = _torch_dtype_to_numpy(dtype)
    if isinstance(dtype, str) and dtype.endswith("_x4"):  # nl.float8_e4m3fn_x4 and the other packed MX dtypes
        raise TypeError(f"nl.{dtype} is a packed MX dtype of NeuronCore-v4 (trn3), used by nisa.nc_matmul_mx and "
                        "nisa.quantize_mx (nki/api/nki.api.shared.rst, the dtype table); it does not exist on the "
                        "trn1/trn2 targets the simulator runs")
    try:
        result = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"unsupported dtype {dtype!r}") from exc
    if result == np.dtype(np.bool_):
        return bool_
    if result not in ALL_DTYPES:
        raise TypeError(
            f"unsupported dtype {result.name}; allowed: "
            + ", ".join(sorted(d.name for d in ALL_DTYPES))
        )
    return result


def _torch_dtype_to_numpy(dtype):
    import torch

    table = {
        torch.float32: float32, torch.float16: float16, torch.bfloat16: bfloat16,
        torch.int8: int8, torch.uint8: uint8, torch.int16: int16, torch.int32: int32,
        torch.uint16: uint16, torch.uint32: uint32, torch.bool: bool_,
        torch.float8_e4m3fn: float8_e4m3fn, torch.float8_e5m2: float8_e5m2,
    }
    if dtype not in table:
        raise TypeError(f"torch dtype {dtype} has no NKI equivalent")
    return table[dtype]


def is_tfloat32(dtype) -> bool:
    """Whether ``dtype`` is NKI's tfloat32 (equal to float32 under ``==``, so this is the only way to tell)."""
    metadata = getattr(dtype, "metadata", None)
    return bool(metadata) and metadata.get("nki") == "tfloat32"


def name(dtype) -> str:
    """The NKI name of ``dtype`` (``tfloat32`` where NumPy says float32)."""
    return "tfloat32" if is_tfloat32(dtype) else np.dtype(dtype).name


def round_to_tf32(values):
    """float32 values rounded to tfloat32's 10-bit mantissa, round half to even (assumption: the docs give the
    width, not the rounding); NaN and Inf pass through."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    finite = (bits & 0x7F800000) != 0x7F800000
    rounded = (bits + np.uint32(0x0FFF) + ((bits >> np.uint32(13)) & np.uint32(1))) & np.uint32(0xFFFFE000)
    return np.where(finite, rounded, bits).view(np.float32)


def is_float(dtype):
    return np.dtype(dtype) in FLOAT_DTYPES


def is_int(dtype):
    return np.dtype(dtype) in INT_DTYPES


def unsigned_view_dtype(dtype):
    """The unsigned integer dtype of the same width (for raw-bit operations)."""
    return _UNSIGNED_OF_WIDTH[np.dtype(dtype).itemsize]


def to_fp32(values):
    """Engine input conversion: every element becomes fp32."""
    return np.asarray(values).astype(np.float32, copy=False)


def cast(values, dtype):
    """Engine output conversion to ``dtype``.

    Floats: round to nearest even (NumPy / ml_dtypes behaviour). Integers: round
    half to even, saturate to the dtype's range, NaN -> 0.
    """
    dtype = np.dtype(dtype)
    values = np.asarray(values)
    if values.dtype == dtype:
        return values
    if dtype in INT_DTYPES:
        if values.dtype.kind in "iu":
            info = np.iinfo(dtype)
            return np.clip(values.astype(np.int64), info.min, info.max).astype(dtype)
        wide = values.astype(np.float64)
        wide = np.rint(wide)
        info = np.iinfo(dtype)
        wide = np.clip(wide, info.min, info.max)
        wide = np.where(np.isnan(wide), 0.0, wide)
        return wide.astype(dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        return values.astype(dtype)
