"""``nl`` operator objects: each is an official ``nki.language`` function *and* an ISA operator.

``nl.add`` is passed to ``nisa.tensor_tensor(op=nl.add)`` as an ALU operator, and called as
``nl.add(x, y, dtype=None)`` as a high-level function; ``nl.exp`` likewise is an activation
function for ``nisa.activation(op=nl.exp)`` and the function ``nl.exp(x, dtype=None)``. Every
object carries the official signature of its function (``inspect.signature(nl.add)`` gives
``(x, y, dtype=None)``, as in ``nki/api/nki/language/__init__.py``) and binds its arguments
against it, so an unknown keyword fails the way it would for the real function.

An :class:`AluOp` is arithmetic (fp32 math), a comparison (fp32 math giving 1.0 / 0.0) or bitvec
(raw integer bits, logical shifts); the flags ``in_alu_table`` and ``reducible`` mirror the
operator table of ``nki/api/nki.api.shared.rst`` (section "Supported Math Operators for NKI
ISA"), ``in_activation_table`` its activation table. What each function *does* when called lives
in the ``lang_*`` modules (imported lazily: they import this module).
"""

import inspect

import numpy as np
from scipy import special

ARITH, COMPARE, BITVEC = "arithmetic", "comparison", "bitvec"

_P = inspect.Parameter


def _signature(*names, **defaults):
    """A positional-or-keyword signature: ``names`` without defaults, then ``defaults`` in order."""
    params = [_P(n, _P.POSITIONAL_OR_KEYWORD) for n in names]
    params += [_P(n, _P.POSITIONAL_OR_KEYWORD, default=v) for n, v in defaults.items()]
    return inspect.Signature(params)


BINARY = _signature("x", "y", dtype=None)
UNARY = _signature("x", dtype=None)
REDUCTION = _signature("x", "axis", dtype=None, keepdims=False)


def _shift_left(a, b):
    b = b.astype(np.uint32)
    return np.where(b >= 32, np.uint32(0), np.left_shift(a, np.minimum(b, 31)))


def _shift_right(a, b):
    b = b.astype(np.uint32)
    return np.where(b >= 32, np.uint32(0), np.right_shift(a, np.minimum(b, 31)))


class NlFunction:
    """An official ``nl`` function: its signature, its docs name, and the code that runs it."""

    def __init__(self, name, signature, call=None):
        self.name = self.__name__ = self.__qualname__ = name
        self.__signature__ = signature
        self.__module__ = "nki.language"
        self._call = call

    def __repr__(self):
        return f"nl.{self.name}"

    def __call__(self, *args, **kwargs):
        from .errors import KernelSignatureError

        try:
            bound = self.__signature__.bind(*args, **kwargs)
        except TypeError as exc:
            raise KernelSignatureError(f"nl.{self.name}{self.__signature__}: {exc}") from None
        bound.apply_defaults()
        if self._call is None:
            raise NotImplementedError(f"nl.{self.name} is an official nki.language function the simulator does not simulate")
        return self._call(self, **bound.arguments)


class AluOp(NlFunction):
    def __init__(self, name, kind, fp32=None, bits=None, unary=False, signature=BINARY, call=None,
                 in_alu_table=True, reducible=False):
        super().__init__(name, signature, call)
        self.kind = kind
        self.fp32, self.bits, self.unary = fp32, bits, unary
        self.in_alu_table, self.reducible = in_alu_table, reducible
        self.in_activation_table = False

    @property
    def is_bitvec(self):
        return self.kind == BITVEC


class ActivationFunction(NlFunction):
    def __init__(self, name, fn, call=None, in_activation_table=True):
        super().__init__(name, UNARY, call)
        self.fn = fn
        self.in_activation_table = in_activation_table


class AluActivation(AluOp):
    """A name that is both an ALU operator and an activation function (e.g. ``nl.abs``)."""

    def __init__(self, name, kind, fp32, act_fn, bits=None, unary=True, call=None):
        super().__init__(name, kind, fp32, bits, unary=unary, signature=UNARY, call=call)
        self.fn = act_fn
        self.in_activation_table = True


def _lang(module, function):
    """Call ``dste.nkisim.<module>.<function>(op, **arguments)`` (imported at call time)."""

    def call(op, **arguments):
        import importlib

        return getattr(importlib.import_module(f"dste.nkisim.{module}"), function)(op, **arguments)

    return call


_binary = _lang("lang_elementwise", "binary")
_unary = _lang("lang_elementwise", "unary")
_reduce = _lang("lang_reduce", "reduce")


def _cmp(fn):
    return lambda a, b: fn(a, b).astype(np.float32)


def _logical(fn):
    return lambda a, b: fn(a != 0, b != 0).astype(np.float32)


def _abs_pick(bigger):
    """abs_max / abs_min: the signed input with the larger (smaller) magnitude; ties give y (stub docstring)."""

    def pick(a, b):
        a, b = np.broadcast_arrays(a, b)
        take_a = np.abs(a) > np.abs(b) if bigger else np.abs(a) < np.abs(b)
        return np.where(take_a, a, b)

    return pick


# -- binary ALU operators (tbl-aluop) ----------------------------------------------------------------
add = AluOp("add", ARITH, np.add, call=_binary, reducible=True)
subtract = AluOp("subtract", ARITH, np.subtract, call=_binary, reducible=True)
multiply = AluOp("multiply", ARITH, np.multiply, call=_binary, reducible=True)
maximum = AluOp("maximum", ARITH, np.maximum, call=_binary, reducible=True)
minimum = AluOp("minimum", ARITH, np.minimum, call=_binary, reducible=True)
power = AluOp("power", ARITH, np.power, call=_binary)
abs_max = AluOp("abs_max", ARITH, _abs_pick(True), call=_binary)
abs_min = AluOp("abs_min", ARITH, _abs_pick(False), call=_binary)
equal = AluOp("equal", COMPARE, _cmp(np.equal), call=_binary)
not_equal = AluOp("not_equal", COMPARE, _cmp(np.not_equal), call=_binary)
greater = AluOp("greater", COMPARE, _cmp(np.greater), call=_binary)
greater_equal = AluOp("greater_equal", COMPARE, _cmp(np.greater_equal), call=_binary)
less = AluOp("less", COMPARE, _cmp(np.less), call=_binary)
less_equal = AluOp("less_equal", COMPARE, _cmp(np.less_equal), call=_binary)
logical_and = AluOp("logical_and", COMPARE, _logical(np.logical_and), call=_binary, reducible=True)
logical_or = AluOp("logical_or", COMPARE, _logical(np.logical_or), call=_binary, reducible=True)
logical_xor = AluOp("logical_xor", COMPARE, _logical(np.logical_xor), call=_binary, reducible=True)
bitwise_and = AluOp("bitwise_and", BITVEC, bits=np.bitwise_and, call=_binary, reducible=True)
bitwise_or = AluOp("bitwise_or", BITVEC, bits=np.bitwise_or, call=_binary, reducible=True)
bitwise_xor = AluOp("bitwise_xor", BITVEC, bits=np.bitwise_xor, call=_binary, reducible=True)
left_shift = AluOp("left_shift", BITVEC, bits=_shift_left, call=_binary)
right_shift = AluOp("right_shift", BITVEC, bits=_shift_right, call=_binary)
invert = AluOp("invert", BITVEC, bits=lambda a, b: np.invert(a), unary=True, signature=UNARY, call=_unary)

# -- not in the ALU table: division and modulo are no hardware instruction (release notes) --------------
divide = AluOp("divide", ARITH, np.divide, call=_binary, in_alu_table=False)
mod = AluOp("mod", ARITH, np.mod, call=_binary, in_alu_table=False)
fmod = AluOp("fmod", ARITH, np.fmod, call=_binary, in_alu_table=False)

# -- reductions: nl.max / nl.min are also accepted as reduce ops (nki.isa docstrings, e.g. reduce_op) ----
max = AluOp("max", ARITH, np.maximum, signature=REDUCTION, call=_reduce,  # noqa: A001
            in_alu_table=False, reducible=True)
min = AluOp("min", ARITH, np.minimum, signature=REDUCTION, call=_reduce,  # noqa: A001
            in_alu_table=False, reducible=True)
sum = NlFunction("sum", REDUCTION, _reduce)  # noqa: A001 - NKI's name
prod = NlFunction("prod", REDUCTION, _reduce)
mean = NlFunction("mean", REDUCTION, _reduce)
var = NlFunction("var", REDUCTION, _reduce)
all = NlFunction("all", _signature("x", "axis", dtype=None), _reduce)  # noqa: A001 - NKI's name


# -- activation functions (tbl-act-func) -----------------------------------------------------------------
def _gelu(x):
    return 0.5 * x * (1.0 + special.erf(x / np.sqrt(2.0)))


def _gelu_dx(x):
    return 0.5 * (1.0 + special.erf(x / np.sqrt(2.0))) + x * np.exp(-0.5 * x * x) / np.sqrt(2.0 * np.pi)


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


# The sigmoid form of GELU is x * sigmoid(1.702 x) (Hendrycks & Gimpel); the constant is not on the NKI page.
_GELU_SIGMOID_K = 1.702


def _gelu_sigmoid(x):
    return x * special.expit(_GELU_SIGMOID_K * x)


def _gelu_sigmoid_dx(x):
    s = special.expit(_GELU_SIGMOID_K * x)
    return s + _GELU_SIGMOID_K * x * s * (1.0 - s)


def _silu_dx(x):
    s = special.expit(x)
    return s * (1.0 + x * (1.0 - s))


def _mish(x):
    return x * np.tanh(np.logaddexp(0, x))


copy = ActivationFunction("copy", lambda x: x, _lang("lang_tile", "copy"))
exp = ActivationFunction("exp", np.exp, _unary)
log = ActivationFunction("log", np.log, _unary)
sigmoid = ActivationFunction("sigmoid", special.expit, _unary)
tanh = ActivationFunction("tanh", np.tanh, _unary)
gelu = ActivationFunction("gelu", _gelu, _unary)
gelu_dx = ActivationFunction("gelu_dx", _gelu_dx, _unary)
gelu_apprx_tanh = ActivationFunction("gelu_apprx_tanh", _gelu_tanh, _unary)
gelu_apprx_sigmoid = ActivationFunction("gelu_apprx_sigmoid", _gelu_sigmoid, _unary)
gelu_apprx_sigmoid_dx = ActivationFunction("gelu_apprx_sigmoid_dx", _gelu_sigmoid_dx, _unary)
silu = ActivationFunction("silu", lambda x: x * special.expit(x), _unary)
silu_dx = ActivationFunction("silu_dx", _silu_dx, _unary)
softplus = ActivationFunction("softplus", lambda x: np.logaddexp(0, x), _unary)
mish = ActivationFunction("mish", _mish, _unary)
erf = ActivationFunction("erf", special.erf, _unary)
erf_dx = ActivationFunction("erf_dx", lambda x: 2.0 / np.sqrt(np.pi) * np.exp(-x * x), _unary)
sin = ActivationFunction("sin", np.sin, _unary)
arctan = ActivationFunction("arctan", np.arctan, _unary)
sqrt = ActivationFunction("sqrt", np.sqrt, _unary)
sign = ActivationFunction("sign", np.sign, _unary)
# Both an ALU unary operator and an activation function (tbl-aluop "Arithmetic Unary" and tbl-act-func).
abs = AluActivation("abs", ARITH, lambda a, b: np.abs(a), np.abs, call=_unary)  # noqa: A001 - NKI's name
square = AluActivation("square", ARITH, lambda a, b: np.square(a), np.square, call=_unary)
relu = AluActivation("relu", ARITH, lambda a, b: np.maximum(a, 0), lambda x: np.maximum(x, 0), call=_unary)
rsqrt = AluActivation("rsqrt", ARITH, lambda a, b: 1.0 / np.sqrt(a), lambda x: 1.0 / np.sqrt(x), call=_unary)
reciprocal = AluActivation("reciprocal", ARITH, lambda a, b: 1.0 / a, lambda x: 1.0 / x, call=_unary)

# -- element-wise functions outside both tables (lowering not documented; see lang_elementwise) ---------
cos = ActivationFunction("cos", np.cos, _unary, in_activation_table=False)
tan = ActivationFunction("tan", np.tan, _unary, in_activation_table=False)
ceil = ActivationFunction("ceil", np.ceil, _unary, in_activation_table=False)
floor = ActivationFunction("floor", np.floor, _unary, in_activation_table=False)
trunc = ActivationFunction("trunc", np.trunc, _unary, in_activation_table=False)
negative = ActivationFunction("negative", np.negative, _unary, in_activation_table=False)
logical_not = ActivationFunction("logical_not", lambda x: (x == 0).astype(np.float32), _unary, in_activation_table=False)


# -- module-level operator constants without a function signature in the stub -----------------------------
def _prelu(x, alpha=0.0):
    return np.where(x > 0, x, alpha * x)


def _average_not_documented(a, b):
    raise NotImplementedError("nl.average has no documented semantics in the NKI 0.6 stubs; the simulator does not simulate it")


# nl.prelu: activation for nisa.activate2 (slope from relu_param); nl.bypass: pass-through operator.
prelu = ActivationFunction("prelu", _prelu)
bypass = AluOp("bypass", ARITH, lambda a, b: a, in_alu_table=False)
average = AluOp("average", ARITH, _average_not_documented, in_alu_table=False)

ALU_OPS = {op.name: op for op in globals().values() if isinstance(op, AluOp)}
ACTIVATIONS = {f.name: f for f in globals().values() if isinstance(f, ActivationFunction) or isinstance(f, AluActivation)}
FUNCTIONS = {f.name: f for f in globals().values() if isinstance(f, NlFunction)}
