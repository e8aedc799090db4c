"""Conformance kernels (tests/nkisim/nki_kernels.py) against independent NumPy computations."""

import ml_dtypes
import numpy as np
import pytest
import torch

from dste.nkisim import isa as nisa
from dste.nkisim import language as nl
from tests.nkisim import nki_kernels as K
from tests.nkisim.kernel_bodies import empty, run, tile

RNG = np.random.default_rng(1234)


def test_tensor_add_matches_numpy():
    a = RNG.standard_normal((256, 96)).astype(np.float32)
    b = RNG.standard_normal((256, 96)).astype(np.float32)
    out = K.tensor_add_kernel(a, b)
    # fp32 inputs, fp32 math, fp32 output: a single rounding, identical to NumPy's.
    np.testing.assert_array_equal(out, a + b)


@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16])
def test_tiled_matmul_accumulates_in_psum(dtype):
    lhs_t = RNG.standard_normal((384, 256)).astype(dtype)
    rhs = RNG.standard_normal((384, 512)).astype(dtype)
    out = K.matmul_kernel(lhs_t, rhs)
    expected = lhs_t.astype(np.float64).T @ rhs.astype(np.float64)
    assert out.dtype == np.dtype(dtype)
    # fp32 accumulation of 384 products |x| ~ 1: error ~ 384 * 2^-24 * |sum| ≪ 1e-3 relative; the bf16
    # output rounding adds up to 2^-8 relative, hence 1e-2 of the largest magnitude.
    tol = 1e-4 if dtype == np.float32 else 1e-2
    np.testing.assert_allclose(out.astype(np.float64), expected, atol=tol * np.abs(expected).max(), rtol=0)


def test_transpose_is_exact():
    x = RNG.standard_normal((96, 128)).astype(ml_dtypes.bfloat16)
    out = K.transpose_kernel(x)
    assert out.dtype == x.dtype
    np.testing.assert_array_equal(out.view(np.uint16), x.T.view(np.uint16))


def test_row_gather_with_oob_skip():
    table = RNG.standard_normal((50, 64)).astype(np.float32)
    ids = RNG.integers(0, 50, size=(128, 1)).astype(np.int32)
    ids[[3, 77, 127], 0] = [50, 1000, -1]  # out of range: skipped, row keeps the memset zeros
    out = K.gather_rows_kernel(table, ids)
    valid = (ids[:, 0] >= 0) & (ids[:, 0] < 50)
    expected = np.zeros((128, 64), np.float32)
    expected[valid] = table[ids[valid, 0]]
    np.testing.assert_array_equal(out, expected)


def test_bit_unpacking_with_shifts_and_masks():
    words = RNG.integers(0, 2**32, size=(128, 4), dtype=np.uint64).astype(np.uint32)
    words[0, 0] = 0xFFFFFFFF
    words[1, 1] = 0x80000001
    out_scalar, out_tensor = K.unpack_bits_kernel(words)
    expected = ((words[:, :, None] >> np.arange(32, dtype=np.uint32)) & 1).reshape(128, 128).astype(np.float32)
    np.testing.assert_array_equal(out_scalar, expected)
    np.testing.assert_array_equal(out_tensor, expected)


@pytest.mark.parametrize("func_id,ref", [(0, lambda z: z), (1, np.exp), (2, lambda z: np.maximum(z, 0))])
def test_activation_with_scale_and_bias(func_id, ref):
    x = RNG.standard_normal((128, 40)).astype(np.float32)
    scale = RNG.uniform(0.5, 2.0, (128, 1)).astype(np.float32)
    bias = RNG.standard_normal((128, 1)).astype(np.float32)
    out = K.scale_bias_activation_kernel(x, scale, bias, func_id)
    expected = ref(x.astype(np.float64) * scale + bias)
    # fp32 math: a few ulps of the fp32 result.
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)


def test_reductions():
    x = RNG.standard_normal((64, 6, 10)).astype(np.float32)
    sums, maxes = K.reduce_kernel(x)
    # fp32 sums of 10 terms ~N(0,1): rounding below 1e-6 absolute.
    np.testing.assert_allclose(sums, x.astype(np.float64).sum(axis=2), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(maxes, x.max(axis=(1, 2))[:, None])


def test_casts_round_half_even_and_saturate():
    values = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.6, 127.5, 300.0, -128.5, -1000.0, 3.4999, np.nan, 1e10],
                      dtype=np.float32)
    x = np.tile(values, (8, 1))
    as_int8, as_bf16, as_fp16, as_int32 = K.cast_kernel(x)
    expected_int8 = np.array([0, 2, 2, 0, -2, -2, 127, 127, 127, -128, -128, 3, 0, 127], dtype=np.int8)
    np.testing.assert_array_equal(as_int8[0], expected_int8)
    assert as_int8.dtype == np.int8
    np.testing.assert_array_equal(as_int32[0, :12], [0, 2, 2, 0, -2, -2, 127, 128, 300, -128, -1000, 3])
    assert as_int32[0, 13] == np.iinfo(np.int32).max  # 1e10 saturates
    np.testing.assert_array_equal(as_bf16.view(np.uint16), x.astype(ml_dtypes.bfloat16).view(np.uint16))
    with np.errstate(over="ignore"):  # 1e10 overflows fp16 to inf on both sides
        np.testing.assert_array_equal(as_fp16, x.astype(np.float16))


@pytest.mark.parametrize("dtype", [nl.int8, nl.uint8, nl.int16, nl.uint16, nl.int32, nl.uint32])
def test_nan_casts_to_zero_in_every_integer_dtype(dtype):
    # README, "What it models": float->int "saturates (NaN->0, our choice)"; NumPy's own cast gives int32's minimum
    x = np.array([[np.nan, -np.nan, 1.0]], np.float32)

    def body(o):
        dst = empty(x.shape, dtype)
        nisa.tensor_copy(dst=dst, src=tile(x))
        o["y"] = dst.numpy()

    y = run(body)["y"]
    assert y.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(y, [[0, 0, 1]])


@pytest.mark.parametrize("dtype, expected", [(nl.int8, [127, -128, 5]), (nl.uint8, [255, 0, 5]),
                                             (nl.int16, [300, -300, 5])])
def test_integer_to_narrower_integer_casts_saturate(dtype, expected):
    # README, "What it models": integer outputs saturate to the dtype's range; iota computes its values "in 32-bit
    # integer arithmetic" (nki/api/nki/isa/__init__.py L1743) and casts them to dst's dtype: 300 and -300 are
    # clipped by hand to [-128, 127] / [0, 255], where a wrapping cast would give 44 / -44 (or 212)
    def body(o):
        dst = empty((1, 3), dtype)
        nisa.iota(dst=dst[:, 0:2], pattern=[[-600, 2]], offset=300)  # 300, -300
        nisa.iota(dst=dst[:, 2:3], pattern=[[1, 1]], offset=5)  # in range: unchanged
        o["y"] = dst.numpy()

    y = run(body)["y"]
    assert y.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(y, [expected])


def test_torch_in_torch_out_and_numpy_in_numpy_out():
    a = torch.randn(128, 16)
    b = torch.randn(128, 16)
    out = K.tensor_add_kernel(a, b)
    assert isinstance(out, torch.Tensor)
    torch.testing.assert_close(out, a + b, rtol=0, atol=0)
    out_bf16 = K.transpose_kernel(torch.randn(32, 64).to(torch.bfloat16))
    assert isinstance(out_bf16, torch.Tensor) and out_bf16.dtype == torch.bfloat16
    assert isinstance(K.tensor_add_kernel(a.numpy(), b.numpy()), np.ndarray)
