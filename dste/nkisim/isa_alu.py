"""The ALU operator and activation-function tables of ``nki.isa``, with their NumPy semantics.

The official tables (``nki/api/nki.api.shared.rst``: ``tbl-aluop`` and ``tbl-act-func``) name the
operators an instruction's ``op`` field accepts, whether an operator is a legal reduction, and the
functions Scalar Engine approximates. An operator object (``nl.add``, ``nl.exp``, ...) is owned by
``nki.language``; here it is looked up by its name, so the ISA judges it only by what the docs list.
"""

from dataclasses import dataclass

import numpy as np
from scipy import special

BITVEC, ARITH, UNARY = "bitvec", "arithmetic", "arithmetic unary"


def op_name(op):
    """The NKI name of an operator/function object (``nl.add`` -> ``"add"``), or None."""
    name = getattr(op, "name", None)
    if isinstance(name, str):
        return name
    name = getattr(op, "__name__", None)
    return name if isinstance(name, str) else None


def _shift(fn):
    def apply(a, b):
        b = np.asarray(b).astype(np.uint32)
        return np.where(b >= 32, np.uint32(0), fn(np.asarray(a, dtype=np.uint32), np.minimum(b, 31)).astype(np.uint32))

    return apply


def _cmp(fn):
    return lambda a, b: fn(a, b).astype(np.float32)


def _logical(fn):
    return lambda a, b: fn(a != 0, b != 0).astype(np.float32)


def _int_cmp(fn):
    return lambda a, b: fn(a, b).astype(np.int64)


def _int_logical(fn):
    return lambda a, b: fn(a != 0, b != 0).astype(np.int64)


def _int_power(a, b):
    # Exact where the power fits int64; beyond that (and for negative exponents, whose integer meaning the docs do
    # not give: an assumption) the float64 value, which the int32 destination saturates.
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    approx = np.power(a.astype(np.float64), b.astype(np.float64))
    exact_ok = (b >= 0) & (np.abs(approx) < 2.0**62)
    with np.errstate(over="ignore"):
        exact = np.power(a, np.where(exact_ok, b, 0))
    return np.where(exact_ok, exact, approx)


def _abs_max(a, b):
    # nki.language.abs_max: the input with the larger magnitude keeps its sign; a tie returns y.
    return np.where(np.abs(a) > np.abs(b), a, b)


def _abs_min(a, b):
    return np.where(np.abs(a) < np.abs(b), a, b)


@dataclass(frozen=True)
class AluSpec:
    name: str
    kind: str
    legal_reduction: bool
    fp32: object = None  # binary fp32 function (unary ones ignore the second input)
    bits: object = None  # binary uint32 function for bitvec ops
    exact_int: object = None  # int64 function for GpSimd's native int32 arithmetic (every operator GpSimd runs on
    # int32/uint32 tiles: "exact results for all 32-bit integer values", nki/api/nki/isa/__init__.py, tensor_tensor)
    reduce_identity: float = None
    since_target: str = None  # the first target supporting it, when not all do

    @property
    def is_bitvec(self):
        return self.kind == BITVEC

    @property
    def is_unary(self):
        return self.kind == UNARY or self.name == "invert"


def _spec(name, kind, legal, **kw):
    return AluSpec(name, kind, legal, **kw)


# tbl-aluop, row by row (nki/api/nki.api.shared.rst, "Supported Math Operators for NKI ISA").
ALU_TABLE = {s.name: s for s in [
    _spec("invert", BITVEC, False, bits=lambda a, b: np.invert(np.asarray(a, dtype=np.uint32))),
    _spec("bitwise_and", BITVEC, True, bits=np.bitwise_and, reduce_identity=0xFFFFFFFF),
    _spec("bitwise_or", BITVEC, True, bits=np.bitwise_or, reduce_identity=0),
    _spec("bitwise_xor", BITVEC, True, bits=np.bitwise_xor, reduce_identity=0),
    _spec("left_shift", BITVEC, False, bits=_shift(np.left_shift)),
    _spec("right_shift", BITVEC, False, bits=_shift(np.right_shift)),
    _spec("add", ARITH, True, fp32=np.add, exact_int=np.add, reduce_identity=0.0),
    _spec("subtract", ARITH, True, fp32=np.subtract, exact_int=np.subtract, reduce_identity=0.0),
    _spec("multiply", ARITH, True, fp32=np.multiply, exact_int=np.multiply, reduce_identity=1.0),
    _spec("maximum", ARITH, True, fp32=np.maximum, exact_int=np.maximum, reduce_identity=-np.inf),
    _spec("minimum", ARITH, True, fp32=np.minimum, exact_int=np.minimum, reduce_identity=np.inf),
    _spec("equal", ARITH, False, fp32=_cmp(np.equal), exact_int=_int_cmp(np.equal)),
    _spec("not_equal", ARITH, False, fp32=_cmp(np.not_equal), exact_int=_int_cmp(np.not_equal)),
    _spec("greater_equal", ARITH, False, fp32=_cmp(np.greater_equal), exact_int=_int_cmp(np.greater_equal)),
    _spec("greater", ARITH, False, fp32=_cmp(np.greater), exact_int=_int_cmp(np.greater)),
    _spec("less_equal", ARITH, False, fp32=_cmp(np.less_equal), exact_int=_int_cmp(np.less_equal)),
    _spec("less", ARITH, False, fp32=_cmp(np.less), exact_int=_int_cmp(np.less)),
    _spec("logical_and", ARITH, True, fp32=_logical(np.logical_and), exact_int=_int_logical(np.logical_and), reduce_identity=1.0),
    _spec("logical_or", ARITH, True, fp32=_logical(np.logical_or), exact_int=_int_logical(np.logical_or), reduce_identity=0.0),
    _spec("logical_xor", ARITH, True, fp32=_logical(np.logical_xor), exact_int=_int_logical(np.logical_xor), reduce_identity=0.0),
    _spec("power", ARITH, False, fp32=np.power, exact_int=_int_power),
    # nki.language.abs_max / abs_min: trn3 only (release-notes/components/nki.rst, NKI 0.4.0).
    _spec("abs_max", ARITH, False, fp32=_abs_max, since_target="trn3"),
    _spec("abs_min", ARITH, False, fp32=_abs_min, since_target="trn3"),
    _spec("abs", UNARY, False, fp32=lambda a, b: np.abs(a)),
    # square and relu as tensor_scalar op0: trn3 only (release notes, NKI 0.4.0).
    _spec("square", UNARY, False, fp32=lambda a, b: np.square(a), since_target="trn3"),
    _spec("relu", UNARY, False, fp32=lambda a, b: np.maximum(a, 0), since_target="trn3"),
    _spec("rsqrt", UNARY, False, fp32=lambda a, b: 1.0 / np.sqrt(a)),
    _spec("reciprocal", UNARY, False, fp32=lambda a, b: 1.0 / a),
]}

# nl.bypass: the pass-through stage of activate2 (nki/api/nki/language/__init__.py, ``bypass``).
BYPASS = "bypass"


def _gelu(x):
    return 0.5 * x * (1.0 + special.erf(x / np.sqrt(2.0)))


def _gelu_dx(x):
    return 0.5 * (1.0 + special.erf(x / np.sqrt(2.0))) + x * np.exp(-0.5 * x * x) / np.sqrt(2.0 * np.pi)


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def _gelu_sigmoid(x):
    return x * special.expit(1.702 * x)


def _gelu_sigmoid_dx(x):
    s = special.expit(1.702 * x)
    return s + 1.702 * x * s * (1.0 - s)


def _silu_dx(x):
    s = special.expit(x)
    return s * (1.0 + x * (1.0 - s))


def _prelu(x, alpha):
    return np.where(x >= 0, x, alpha * x)


# tbl-act-func (nki/api/nki.api.shared.rst, "Supported Activation Functions for NKI ISA"): name -> fp32
# function of (x, relu_param). Scalar Engine evaluates piece-wise polynomials; the simulator uses the
# exact functions (the hardware's approximation error is not documented).
ACTIVATION_TABLE = {
    "copy": lambda x, a: x,
    "square": lambda x, a: np.square(x),
    "sigmoid": lambda x, a: special.expit(x),
    "relu": lambda x, a: np.maximum(x, 0),
    "prelu": _prelu,
    "gelu": lambda x, a: _gelu(x),
    "gelu_dx": lambda x, a: _gelu_dx(x),
    "gelu_apprx_tanh": lambda x, a: _gelu_tanh(x),
    "gelu_apprx_sigmoid": lambda x, a: _gelu_sigmoid(x),
    "gelu_apprx_sigmoid_dx": lambda x, a: _gelu_sigmoid_dx(x),
    "silu": lambda x, a: x * special.expit(x),
    "silu_dx": lambda x, a: _silu_dx(x),
    "tanh": lambda x, a: np.tanh(x),
    "softplus": lambda x, a: np.logaddexp(0, x),
    "mish": lambda x, a: x * np.tanh(np.logaddexp(0, x)),
    "erf": lambda x, a: special.erf(x),
    "erf_dx": lambda x, a: 2.0 / np.sqrt(np.pi) * np.exp(-x * x),
    "exp": lambda x, a: np.exp(x),
    "log": lambda x, a: np.log(x),
    "sin": lambda x, a: np.sin(x),
    "arctan": lambda x, a: np.arctan(x),
    "sqrt": lambda x, a: np.sqrt(x),
    "rsqrt": lambda x, a: 1.0 / np.sqrt(x),
    "reciprocal": lambda x, a: 1.0 / x,
    "sign": lambda x, a: np.sign(x),
    "abs": lambda x, a: np.abs(x),
}

# tbl-act-func's Valid Input Range of the functions whose range is narrower than [-inf, inf], as (lowest, highest)
# magnitude bounds and whether negative inputs share them (reciprocal: +-[2^-42, 2^42]). Outside it "the Scalar
# Engine will generate invalid output results"; sin there extrapolates its fitting polynomial (nki.api.shared.rst).
ACTIVATION_VALID_RANGE = {
    "log": (2.0**-64, 2.0**64, False),
    "sin": (-np.pi, np.pi, None),
    "arctan": (-np.pi / 2, np.pi / 2, None),
    "sqrt": (2.0**-116, 2.0**118, False),
    "rsqrt": (2.0**-87, 2.0**97, False),
    "reciprocal": (2.0**-42, 2.0**42, True),
}


def outside_valid_range(name, x):
    """bool array: where ``x`` lies outside tbl-act-func's Valid Input Range of activation ``name``, one of
    ``ACTIVATION_VALID_RANGE`` (NaN: never)."""
    low, high, signed = ACTIVATION_VALID_RANGE[name]
    with np.errstate(invalid="ignore"):
        if signed is None:  # a plain interval
            return (x < low) | (x > high)
        magnitude = np.abs(x) if signed else x
        return (magnitude < low) | (magnitude > high)


# ``identity`` is not in tbl-act-func; the simulator's nl.identity is treated as nl.copy (assumption).
ACTIVATION_ALIASES = {"identity": "copy"}
