"""Values the simulator computes where the NKI docs state them exactly, against NumPy or the docs' own numbers.

Each case is one the simulator once got wrong without a word: int32 compares and powers on GpSimd rounded through
fp32, ``reduce_cmd=idle`` zeroed the activation accumulator, ScalarE copies rounded int32 through fp32, TensorE's
transpose mode spread NaN, out-of-range Scalar Engine inputs gave exact results, and an add/add scan summed in
float64.
"""

import warnings

import numpy as np
import pytest

from dste.nkisim import isa as nisa
from dste.nkisim import language as nl
from dste.nkisim.errors import ConstraintError, InvalidActivationInputWarning

from .kernel_bodies import empty, run, tile

BIG = 2**24 + 1  # the first integer float32 cannot hold


@pytest.mark.parametrize("op, expected", [
    (nl.equal, np.equal), (nl.not_equal, np.not_equal), (nl.greater, np.greater), (nl.less_equal, np.less_equal),
])
def test_int32_compares_on_gpsimd_are_exact(op, expected):
    # "When all input/output tiles are int32 or uint32, the operation defaults to GpSimd Engine, which uses native
    # integer arithmetic" (nisa.tensor_tensor): 2^24 + 1 and 2^24 are one float32 apart from each other's rounding
    a = np.array([[BIG, 2**24, -BIG, 7]], np.int32)
    b = np.array([[2**24, 2**24, -2**24, 7]], np.int32)

    def body(o):
        dst = empty(a.shape, nl.int32)
        nisa.tensor_tensor(dst=dst, data1=tile(a, nl.int32), data2=tile(b, nl.int32), op=op)
        o["y"] = dst.numpy()

    np.testing.assert_array_equal(run(body)["y"], expected(a, b).astype(np.int32))


def test_int32_power_on_gpsimd_is_exact():
    a, b = np.array([[5, 3, -7, 2]], np.int32), np.array([[11, 2, 3, 30]], np.int32)

    def body(o):
        dst = empty(a.shape, nl.int32)
        nisa.tensor_tensor(dst=dst, data1=tile(a, nl.int32), data2=tile(b, nl.int32), op=nl.power)
        o["y"] = dst.numpy()

    np.testing.assert_array_equal(run(body)["y"], [[48828125, 9, -343, 2**30]])


def test_activation_idle_with_reduce_res_reads_the_accumulator_without_changing_it():
    first, second = np.array([[1.0, 2.0]], np.float32), np.array([[10.0, 20.0]], np.float32)

    def body(o):
        y, r1, r2 = empty((1, 2)), empty((1, 1)), empty((1, 1))
        nisa.activation(dst=y, op=nl.copy, data=tile(first), reduce_op=nl.add, reduce_res=r1,
                        reduce_cmd=nisa.reduce_cmd.reset_reduce)
        nisa.activation(dst=y, op=nl.copy, data=tile(second), reduce_res=r2)  # reduce_cmd defaults to idle
        o.update(r1=r1.numpy(), r2=r2.numpy(), y=y.numpy())

    out = run(body)
    assert out["r1"][0, 0] == 3.0
    assert out["r2"][0, 0] == 3.0  # idle: "Do not modify reduce_regs"; reduce_res reads them out
    np.testing.assert_array_equal(out["y"], second)


def test_scalar_engine_copy_of_equal_dtypes_is_bit_accurate_from_neuroncore_v3():
    x = np.array([[BIG, -BIG, 2**31 - 1]], np.int32)

    def body(o):
        dst = empty(x.shape, nl.int32)
        nisa.tensor_copy(dst=dst, src=tile(x, nl.int32), engine=nisa.engine.scalar)
        o["y"] = dst.numpy()

    np.testing.assert_array_equal(run(body)["y"], x)


def _matmul_transpose(stationary, moving, target="trn2", dst_dtype=nl.float32, in_dtype=nl.float32):
    def body(o):
        dst = empty((stationary.shape[1], moving.shape[1]), dst_dtype, buffer=nl.psum)
        nisa.nc_matmul(dst=dst, stationary=tile(stationary, in_dtype), moving=tile(moving, in_dtype),
                       is_transpose=True)
        o["y"] = dst.numpy()

    return run(body, target=target)["y"]


def test_matmul_transpose_mode_moves_nan_and_inf_bit_for_bit_from_neuroncore_v3():
    data = np.array([[1.0, np.nan, 3.0], [np.inf, 4.0, -0.0]], np.float32)
    eye = np.eye(2, dtype=np.float32)
    y = _matmul_transpose(data, eye)
    np.testing.assert_array_equal(y, data.T)  # NaN where NaN was, nowhere else
    assert np.signbit(y[2, 1])
    # on NeuronCore-v2 the flag only labels the matmul: NaN * 0 spreads along the contraction
    assert np.isnan(_matmul_transpose(data, eye, target="trn1")).sum() > 1


def test_matmul_transpose_mode_writes_bf16_for_bf16_input_and_needs_an_identity_moving_tile():
    data = np.array([[1.5, -2.0], [0.25, 8.0]], np.float32)
    eye = np.eye(2, dtype=np.float32)
    y = _matmul_transpose(data, eye, dst_dtype=nl.bfloat16, in_dtype=nl.bfloat16)
    np.testing.assert_array_equal(np.asarray(y, np.float32), data.T)
    with pytest.raises(ConstraintError, match="nc_matmul.transpose_identity"):
        _matmul_transpose(data, 2 * eye)
    with pytest.raises(ConstraintError, match="nc_matmul.dst_dtype"):
        _matmul_transpose(data, eye, target="trn1", dst_dtype=nl.bfloat16, in_dtype=nl.bfloat16)


@pytest.mark.parametrize("op, inside, outside", [
    (nl.sin, 3.0, 9.0), (nl.reciprocal, -1e-3, 0.0), (nl.log, 1e-10, -1.0), (nl.arctan, 1.5, 2.0),
])
def test_scalar_engine_inputs_outside_the_valid_range_give_nan_and_a_warning(op, inside, outside):
    # tbl-act-func: outside a function's Valid Input Range "the Scalar Engine will generate invalid output results"
    x = np.array([[inside, outside]], np.float32)

    def body(o):
        dst = empty(x.shape)
        nisa.activation(dst=dst, op=op, data=tile(x))
        o["y"] = dst.numpy()

    with pytest.warns(InvalidActivationInputWarning, match="Valid Input Range"):
        y = run(body)["y"]
    assert np.isnan(y[0, 1])
    numpy_fn = {"sin": np.sin, "reciprocal": np.reciprocal, "log": np.log, "arctan": np.arctan}[op.name]
    np.testing.assert_allclose(y[0, 0], numpy_fn(np.float32(inside)), rtol=1e-6)


def test_language_sin_stays_accurate_outside_minus_pi_to_pi():
    # nl.sin reduces the argument before the activation (nki.api.shared.rst, the note under tbl-act-func)
    x = np.array([[9.0, -20.0]], np.float32)

    def body(o):
        o["y"] = nl.sin(tile(x)).numpy()

    with warnings.catch_warnings():
        warnings.simplefilter("error", InvalidActivationInputWarning)
        y = run(body)["y"]
    np.testing.assert_allclose(y, np.sin(x), rtol=1e-6)


def test_add_add_scan_rounds_each_step_to_fp32():
    # r[i] = (data0[i] + r[i-1]) + data1[i] in float32 math: 1e8 + 1 rounds back to 1e8 at every step
    data0 = np.array([[1e8] + [1.0] * 8, [1.0, 1e8, -1e8, 1.0] + [0.0] * 5], np.float32)
    data1 = np.zeros_like(data0)

    def body(o):
        dst = empty(data0.shape)
        nisa.tensor_tensor_scan(dst=dst, data0=tile(data0), data1=tile(data1), initial=0.0, op0=nl.add, op1=nl.add)
        o["y"] = dst.numpy()

    expected = np.zeros_like(data0)
    for row in range(data0.shape[0]):
        running = np.float32(0.0)
        for i in range(data0.shape[1]):
            running = np.float32(np.float32(data0[row, i] + running) + data1[row, i])
            expected[row, i] = running
    y = run(body)["y"]
    np.testing.assert_array_equal(y, expected)
    assert y[0, -1] == np.float32(1e8) and y[1, 2] == 0.0


def test_tensor_engine_reads_tfloat32_operands_with_a_ten_bit_mantissa():
    # tbl-dtype: tfloat32 is 1S,8E,10M; 1 + 2^-20 is 1 in it, 1 + 2^-9 stays (round half to even assumed)
    stationary = np.array([[1.0 + 2.0**-20], [1.0 + 2.0**-9]], np.float32)
    moving = np.ones((2, 1), np.float32)

    def body(o):
        for dtype, key in ((nl.tfloat32, "tf32"), (nl.float32, "fp32")):
            dst = empty((1, 1), buffer=nl.psum)
            nisa.nc_matmul(dst=dst, stationary=tile(stationary, dtype), moving=tile(moving, dtype))
            o[key] = dst.numpy()

    out = run(body)
    assert out["tf32"][0, 0] == np.float32(2.0 + 2.0**-9)
    assert out["fp32"][0, 0] == np.float32(2.0 + 2.0**-20 + 2.0**-9)


def test_tfloat32_is_refused_where_the_docs_except_it():
    x = np.ones((4, 2), np.float32)

    def bias_tf32(o):
        nisa.activation(dst=empty((4, 2)), op=nl.copy, data=tile(x), bias=tile(np.ones((4, 1)), nl.tfloat32))

    def on_true_tf32(o):
        nisa.select_reduce(dst=empty((4, 2)), predicate=tile(np.ones((4, 2)), nl.uint8),
                           on_true=tile(x, nl.tfloat32), on_false=0.0)

    with pytest.raises(ConstraintError, match="activation.bias"):
        run(bias_tf32)
    with pytest.raises(ConstraintError, match="select_reduce.operands"):
        run(on_true_tf32)


def test_select_reduce_takes_an_on_false_vector_of_any_dtype():
    # "on_false dtype must be float32 if on_false is a scalar" (nisa.select_reduce): a [P, 1] vector may be bf16
    x = np.arange(8, dtype=np.float32).reshape(4, 2)
    predicate = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], np.uint8)
    fallback = np.array([[-1.0], [-2.0], [-3.0], [-4.0]], np.float32)

    def body(o):
        dst = empty((4, 2))
        nisa.select_reduce(dst=dst, predicate=tile(predicate, nl.uint8), on_true=tile(x),
                           on_false=tile(fallback, nl.bfloat16))
        o["y"] = dst.numpy()

    np.testing.assert_array_equal(run(body)["y"], np.where(predicate != 0, x, fallback))


def test_iota_wraps_in_32_bit_integer_arithmetic():
    # "The generated values are computed in 32-bit integer arithmetic" (nki/api/nki/isa/__init__.py L1743): offset
    # 2^31 - 1 plus one step of 1 wraps, two's complement, to -2^31
    def body(o):
        dst = empty((1, 3), nl.int32)
        nisa.iota(dst=dst, pattern=[[1, 3]], offset=2**31 - 1)
        o["y"] = dst.numpy()

    assert run(body)["y"].tolist() == [[2**31 - 1, -2**31, -2**31 + 1]]


def test_tensor_engine_rounds_tfloat32_ties_to_even():
    # tbl-dtype: tfloat32 keeps 10 mantissa bits, so its ulp at 1 is 2^-10; the rounding is round half to even
    # (README, "What it models": an assumption). 1 + 2^-11 is a tie between 1 (even) and 1 + 2^-10: 1;
    # 1 + 3 * 2^-11 is a tie between 1 + 2^-10 (odd) and 1 + 2^-9 (even): 1 + 2^-9. Half away from zero would give
    # 1 + 2^-10 for the first.
    stationary = np.array([[1.0 + 2.0**-11, 1.0 + 3 * 2.0**-11]], np.float32)

    def body(o):
        dst = empty((2, 1), buffer=nl.psum)
        nisa.nc_matmul(dst=dst, stationary=tile(stationary, nl.tfloat32), moving=tile([[1.0]], nl.tfloat32))
        o["y"] = dst.numpy()

    assert run(body)["y"].reshape(-1).tolist() == [1.0, 1.0 + 2.0**-9]


def test_logical_shift_by_32_or_more_gives_zero():
    # tbl-aluop (nki/api/nki.api.shared.rst L88-90): left_shift / right_shift are logical shifts of 32-bit values;
    # every bit is shifted out at 32, so the result is 0 (computed in 64 bits and masked to 32 by hand)
    a = np.array([[1, 3, 0xFFFFFFFF]], np.uint32)

    def body(o):
        for op, key in ((nl.left_shift, "left"), (nl.right_shift, "right")):
            for amount in (31, 32, 33):
                dst = empty(a.shape, nl.uint32)
                nisa.tensor_scalar(dst=dst, data=tile(a, nl.uint32), op0=op, operand0=amount)
                o[key, amount] = dst.numpy()

    out = run(body)
    wide = a.astype(np.uint64)
    np.testing.assert_array_equal(out["left", 31], (wide << np.uint64(31)) & np.uint64(0xFFFFFFFF))
    np.testing.assert_array_equal(out["right", 31], wide >> np.uint64(31))
    for key in ("left", "right"):
        np.testing.assert_array_equal(out[key, 32], [[0, 0, 0]])
        np.testing.assert_array_equal(out[key, 33], [[0, 0, 0]])


def test_reciprocal_valid_range_ends_at_2_to_the_42():
    # tbl-act-func (nki/api/nki.api.shared.rst L200): Reciprocal's Valid Input Range is +-[2^-42, 2^42]; inside it
    # the result is 1/x, outside it the output is invalid: NaN and a warning here
    x = np.array([[2.0**42, -(2.0**42), 2.0**42.5, -(2.0**42.5)]], np.float32)

    def body(o):
        dst = empty(x.shape)
        nisa.activation(dst=dst, op=nl.reciprocal, data=tile(x))
        o["y"] = dst.numpy()

    with pytest.warns(InvalidActivationInputWarning, match="Valid Input Range"):
        y = run(body)["y"]
    assert y[0, :2].tolist() == [2.0**-42, -(2.0**-42)]
    assert np.isnan(y[0, 2:]).all()
