"""ALU operators and activation functions (``nl.add``, ``nl.right_shift``, ``nl.exp``, ...).

An :class:`AluOp` is arithmetic (fp32 math), a comparison (fp32 math giving
1.0 / 0.0), or bitvec (raw integer bits, logical shifts). An
:class:`ActivationFunction` is a ScalarE function applied in fp32. Both are
also callable as the high-level ``nl`` functions (``nl.add(a, b)``,
``nl.exp(x)``), which allocate an SBUF result and issue one instruction.
"""

import numpy as np
from scipy import special

ARITH, COMPARE, BITVEC = "arithmetic", "comparison", "bitvec"


def _shift_left(a, b):
    b = b.astype(np.uint32)
    return np.where(b >= 32, np.uint32(0), np.left_shift(a, np.minimum(b, 31)))


def _shift_right(a, b):
    b = b.astype(np.uint32)
    return np.where(b >= 32, np.uint32(0), np.right_shift(a, np.minimum(b, 31)))


class AluOp:
    def __init__(self, name, kind, fp32=None, bits=None, exact_int=None, unary=False):
        self.name, self.kind = name, kind
        self.fp32, self.bits, self.exact_int, self.unary = fp32, bits, exact_int, unary

    @property
    def is_bitvec(self):
        return self.kind == BITVEC

    def __repr__(self):
        return f"nl.{self.name}"

    def __call__(self, x, y=None, dtype=None):
        from . import language

        return language.binary_op(self, x, y, dtype)


class ActivationFunction:
    def __init__(self, name, fn):
        self.name, self.fn = name, fn

    def __repr__(self):
        return f"nl.{self.name}"

    def __call__(self, x, dtype=None):
        from . import language

        return language.unary_activation(self, x, dtype)


class AluActivation(AluOp):
    """A name that is both an ALU operator and an activation function (e.g. ``nl.abs``)."""

    def __init__(self, name, kind, fp32, act_fn, bits=None, unary=True):
        super().__init__(name, kind, fp32, bits, unary=unary)
        self.fn = act_fn

    def __call__(self, x, y=None, dtype=None):
        from . import language

        if y is None:
            return language.unary_activation(self, x, dtype)
        return language.binary_op(self, x, y, dtype)


def _cmp(fn):
    return lambda a, b: fn(a, b).astype(np.float32)


def _logical(fn):
    return lambda a, b: fn(a != 0, b != 0).astype(np.float32)


add = AluOp("add", ARITH, np.add, exact_int=np.add)
subtract = AluOp("subtract", ARITH, np.subtract, exact_int=np.subtract)
multiply = AluOp("multiply", ARITH, np.multiply, exact_int=np.multiply)
divide = AluOp("divide", ARITH, np.divide)
maximum = AluOp("maximum", ARITH, np.maximum, exact_int=np.maximum)
minimum = AluOp("minimum", ARITH, np.minimum, exact_int=np.minimum)
max = AluOp("max", ARITH, np.maximum, exact_int=np.maximum)  # noqa: A001 - NKI's name
min = AluOp("min", ARITH, np.minimum, exact_int=np.minimum)  # noqa: A001 - NKI's name
power = AluOp("power", ARITH, np.power)
mod = AluOp("mod", ARITH, np.fmod)
abs_max = AluOp("abs_max", ARITH, lambda a, b: np.maximum(np.abs(a), np.abs(b)))
equal = AluOp("equal", COMPARE, _cmp(np.equal))
not_equal = AluOp("not_equal", COMPARE, _cmp(np.not_equal))
greater = AluOp("greater", COMPARE, _cmp(np.greater))
greater_equal = AluOp("greater_equal", COMPARE, _cmp(np.greater_equal))
less = AluOp("less", COMPARE, _cmp(np.less))
less_equal = AluOp("less_equal", COMPARE, _cmp(np.less_equal))
logical_and = AluOp("logical_and", COMPARE, _logical(np.logical_and))
logical_or = AluOp("logical_or", COMPARE, _logical(np.logical_or))
logical_xor = AluOp("logical_xor", COMPARE, _logical(np.logical_xor))
bitwise_and = AluOp("bitwise_and", BITVEC, bits=np.bitwise_and)
bitwise_or = AluOp("bitwise_or", BITVEC, bits=np.bitwise_or)
bitwise_xor = AluOp("bitwise_xor", BITVEC, bits=np.bitwise_xor)
invert = AluOp("invert", BITVEC, bits=lambda a, b: np.invert(a), unary=True)
left_shift = AluOp("left_shift", BITVEC, bits=_shift_left)
right_shift = AluOp("right_shift", BITVEC, bits=_shift_right)


def _gelu(x):
    return 0.5 * x * (1.0 + special.erf(x / np.sqrt(2.0)))


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def _sigmoid(x):
    return special.expit(x)


copy = ActivationFunction("copy", lambda x: x)
identity = ActivationFunction("identity", lambda x: x)
exp = ActivationFunction("exp", np.exp)
log = ActivationFunction("log", np.log)
relu = ActivationFunction("relu", lambda x: np.maximum(x, 0))
sigmoid = ActivationFunction("sigmoid", _sigmoid)
tanh = ActivationFunction("tanh", np.tanh)
gelu = ActivationFunction("gelu", _gelu)
gelu_apprx_tanh = ActivationFunction("gelu_apprx_tanh", _gelu_tanh)
silu = ActivationFunction("silu", lambda x: x * _sigmoid(x))
sqrt = ActivationFunction("sqrt", np.sqrt)
rsqrt = ActivationFunction("rsqrt", lambda x: 1.0 / np.sqrt(x))
reciprocal = ActivationFunction("reciprocal", lambda x: 1.0 / x)
square = ActivationFunction("square", np.square)
sin = ActivationFunction("sin", np.sin)
cos = ActivationFunction("cos", np.cos)
sign = ActivationFunction("sign", np.sign)
softplus = ActivationFunction("softplus", lambda x: np.logaddexp(0, x))
erf = ActivationFunction("erf", special.erf)
abs = AluActivation("abs", ARITH, lambda a, b: np.abs(a), np.abs)  # noqa: A001 - NKI's name

ALU_OPS = {op.name: op for op in globals().values() if isinstance(op, AluOp)}
ACTIVATIONS = {f.name: f for f in globals().values() if isinstance(f, (ActivationFunction, AluActivation))}
