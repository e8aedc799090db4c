"""Kernels of AWS's nki-library run unmodified on the simulator and match NumPy references written here.

The kernels are imported at run time from an nki-library checkout named by ``DSTE_NKI_LIBRARY`` (the directory
holding ``src/nkilib_src``); none of their code, tests or references is copied here. Every expected value below
is computed in float64 from the operation's definition, and every tolerance is derived from the dtypes the
kernel reads, computes in and writes. Without the checkout every test skips.
"""

import importlib
import os
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import dste.nkisim

BF16 = ml_dtypes.bfloat16
FP8 = ml_dtypes.float8_e4m3  # the library's fp8 output type (nl.float8_e4m3: 3 fraction bits, largest finite 240)

# Unit roundoff (half an ulp, relative) of each dtype: 2^-p for a p-bit significand.
U_FP32 = 2.0 ** -24
U_FP16 = 2.0 ** -11
U_BF16 = 2.0 ** -8  # bf16 has 8 significant bits
U_FP8 = 2.0 ** -4  # float8_e4m3 has 4 significant bits


def _library_src():
    root = os.environ.get("DSTE_NKI_LIBRARY")
    if not root:
        pytest.skip("DSTE_NKI_LIBRARY is not set (point it at an aws-neuron/nki-library checkout)")
    src = Path(root) / "src"
    if not (src / "nkilib_src").is_dir():
        pytest.skip(f"DSTE_NKI_LIBRARY={root} has no src/nkilib_src (not an nki-library checkout)")
    return src


@pytest.fixture(scope="module")
def nkilib():
    """``nkilib("core.cumsum")`` imports that module of the checkout's ``nkilib_src.nkilib`` package."""
    src = str(_library_src())
    dste.nkisim.install()
    sys.path.insert(0, src)
    try:
        yield lambda name: importlib.import_module(f"nkilib_src.nkilib.{name}")
    finally:
        sys.path.remove(src)
        for key in [k for k in sys.modules if k == "nkilib_src" or k.startswith("nkilib_src.")]:
            del sys.modules[key]


@pytest.fixture(autouse=True)
def _trn2(monkeypatch):
    monkeypatch.setenv("NEURON_PLATFORM_TARGET_OVERRIDE", os.environ.get("NEURON_PLATFORM_TARGET_OVERRIDE", "trn2"))


def _f64(a):
    return np.asarray(a).astype(np.float64)


def _assert_within(out, expected, bound):
    """Every element of ``out`` lies within ``bound`` (an array or scalar) of ``expected``."""
    out, expected = _f64(out), _f64(expected)
    assert out.shape == expected.shape
    err = np.abs(out - expected)
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    assert np.all(err <= bound), (f"{int((err > bound).sum())} of {err.size} elements out of bound; worst at "
                                  f"{worst}: got {out[worst]}, expected {expected[worst]}, bound {np.broadcast_to(bound, err.shape)[worst]}")


def _jit(nkilib_fn):
    import nki
    return nki.jit(nkilib_fn)


# ---------------------------------------------------------------------------------------------------------- cumsum

def _cumsum_bound(x, out_unit):
    # Running sums in fp32: the j-th prefix of a recursive sum is off by at most j * 2^-24 * sum_{i<=j} |x_i|
    # (Higham's bound for recursive summation), plus one rounding of the result to the output dtype.
    xa = np.abs(_f64(x))
    j = np.arange(1, x.shape[-1] + 1)
    return j * U_FP32 * np.cumsum(xa, -1) + out_unit * np.abs(np.cumsum(_f64(x), -1))


@pytest.mark.parametrize("shape, dtype, unit", [
    # 130 rows: a second partition tile of 2 rows; 4100 columns: three free tiles, so the carry between tiles is used.
    ((130, 4100), np.float32, U_FP32),
    # A 3-D input flattened by the kernel; bf16 in and out (the fp32 sum is rounded once to bf16).
    ((64, 4, 1024), BF16, U_BF16),
], ids=["fp32-2d", "bf16-3d"])
def test_cumsum(nkilib, shape, dtype, unit):
    cumsum = nkilib("core.cumsum").cumsum
    x = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    out = cumsum(x)
    assert np.asarray(out).dtype == np.dtype(dtype)
    _assert_within(out, np.cumsum(_f64(x), -1), _cumsum_bound(x, unit))


# ---------------------------------------------------------------------------------------------------- cascaded_max

def test_cascaded_max_two_cores(nkilib):
    cascaded_max = nkilib("core.max.cascaded_max").cascaded_max
    b, s, v = 8, 5, 4058
    x = np.random.default_rng(2).standard_normal((b, s, v)).astype(np.float32)
    rows = x.reshape(-1, v)
    assert np.all((rows == rows.max(-1, keepdims=True)).sum(-1) == 1)  # a unique maximum per row: the index is defined
    values, indices = cascaded_max[2](x)
    # A maximum is one of the inputs, selected and not computed: exact in value and index.
    np.testing.assert_array_equal(np.asarray(values).reshape(b, s), x.max(-1))
    np.testing.assert_array_equal(np.asarray(indices).astype(np.int64).reshape(b, s), x.argmax(-1))


# --------------------------------------------------------------------------------------------------------- rope_hf

def _rotate_half(x):
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], -1)


def _rotate_half_transposed(x):
    half = x.shape[-1] // 2
    return np.concatenate([x[..., half:], -x[..., :half]], -1)


def _rope_expected(x, cos, sin, backward):
    """HF rotary embedding y = x*cos + rotate_half(x)*sin; its backward applies the transposed rotation."""
    x, cos, sin = _f64(x), _f64(cos), _f64(sin)
    if backward:
        a, b = x * cos, _rotate_half_transposed(x * sin)
    else:
        a, b = x * cos, _rotate_half(x) * sin
    return a + b, np.abs(a) + np.abs(b)


@pytest.mark.parametrize("lnc, dtype, unit, packed, backward", [
    (2, BF16, U_BF16, False, False),   # kernel[2]: each core takes half the sequence
    (1, np.float32, U_FP32, True, True),  # packed [cos | sin] cache, backward rotation
], ids=["lnc2-bf16-cos-sin", "lnc1-fp32-cache-backward"])
def test_rope_hf(nkilib, lnc, dtype, unit, packed, backward):
    rope_hf = nkilib("core.embeddings.rope_hf").rope_hf
    batch, q_heads, k_heads, seq, dim = 1, 4, 2, 256, 128
    rng = np.random.default_rng(3)
    q = rng.standard_normal((batch, q_heads, seq, dim)).astype(dtype)
    k = rng.standard_normal((batch, k_heads, seq, dim)).astype(dtype)
    if packed:
        cache = rng.standard_normal((seq, 2 * dim)).astype(dtype)
        cos, sin = cache[None, :, :dim], cache[None, :, dim:]
        kwargs = dict(rope_cache=cache)
    else:
        cos = rng.standard_normal((batch, seq, dim)).astype(dtype)
        sin = rng.standard_normal((batch, seq, dim)).astype(dtype)
        kwargs = dict(cos=cos, sin=sin)
    kernel = rope_hf[lnc] if lnc > 1 else rope_hf
    q_out, k_out = kernel(q, k, np.zeros_like(q), np.zeros_like(k), backward=backward, **kwargs)
    for out, x in ((q_out, q), (k_out, k)):
        assert np.asarray(out).dtype == np.dtype(dtype)
        # Two products and one sum or difference, each rounded to the tensor dtype: |error| <= 2u(|a| + |b|)
        # to first order (x1.01 for the second-order terms).
        expected, magnitude = _rope_expected(x, cos[:, None], sin[:, None], backward)
        _assert_within(out, expected, 2.02 * unit * magnitude)


# ----------------------------------------------------------------------------------------------------- rmsnorm_tkg

def test_rmsnorm_tkg_transposed_hidden_two_cores(nkilib):
    rmsnorm_tkg = _jit(nkilib("core.subkernels.rmsnorm_tkg").rmsnorm_tkg)
    b, s, h, eps = 2, 8, 3072, 1e-6
    rng = np.random.default_rng(4)
    x = rng.standard_normal((b, s, h)).astype(np.float16)
    gamma = rng.standard_normal((1, h)).astype(np.float16)
    out = rmsnorm_tkg[2](x, gamma, np.zeros((128, b * s, h // 128), np.float16), eps=eps, hidden_dim_tp=True)
    rows = _f64(x).reshape(b * s, h)
    y = rows / np.sqrt((rows ** 2).mean(-1, keepdims=True) + eps) * _f64(gamma)
    # hidden_dim_tp: hidden index j*128 + p is written to partition p, column j of the token's block.
    expected = y.reshape(b * s, h // 128, 128).transpose(2, 0, 1)
    # fp16 in and out, fp32 inside: the mean of squares over h terms is within h*2^-24 relative (its square root
    # half that); then at most three roundings to fp16 (x*rstd, *gamma, the store), each 2^-11 relative or,
    # below fp16's smallest normal, 2^-25 absolute, an intermediate one scaled by up to max|gamma| afterwards.
    rtol = 3 * U_FP16 + h * U_FP32
    atol = 3 * 2.0 ** -25 * max(1.0, float(np.abs(_f64(gamma)).max()))
    _assert_within(out, expected, rtol * np.abs(expected) + atol)


# ----------------------------------------------------------------------------------------- cross_partition_copy

def _cross_partition_copy_kernel(nkilib):
    import nki
    import nki.isa as nisa
    import nki.language as nl
    copy = nkilib("core.utils.cross_partition_copy").cross_partition_copy

    @nki.jit
    def kernel(x, src_start, dst_start, count):
        rows, cols = x.shape
        result = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
        src = nl.ndarray((rows, cols), dtype=x.dtype, buffer=nl.sbuf)
        dst = nl.ndarray((rows, cols), dtype=x.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=src, src=x)
        nisa.memset(dst=dst, value=0.0)
        copy(src=src, dst=dst, src_start_partition=src_start, dst_start_partition=dst_start,
             num_partitions_to_copy=count, free_dim_size=cols)
        nisa.dma_copy(dst=result, src=dst)
        return result

    return kernel


def test_cross_partition_copy_two_cores(nkilib):
    kernel = _cross_partition_copy_kernel(nkilib)
    # Neither start is on a 32-partition quadrant boundary, and the rows cross from one quadrant into the next.
    src_start, dst_start, count = 5, 28, 20
    x = np.random.default_rng(5).standard_normal((128, 8)).astype(np.float32)
    out = kernel[2](x, src_start, dst_start, count)
    expected = np.zeros_like(x)
    expected[dst_start:dst_start + count] = x[src_start:src_start + count]
    np.testing.assert_array_equal(out, expected)  # a copy moves bits: exact


# ---------------------------------------------------------------------------------------------------- tp_broadcast

def test_tp_broadcast(nkilib):
    import nki
    import nki.isa as nisa
    import nki.language as nl
    tp_broadcast = nkilib("core.utils.tp_broadcast").tp_broadcast

    @nki.jit
    def kernel(x, column, copies):
        rows, cols = x.shape
        result = nl.ndarray((copies, rows), dtype=x.dtype, buffer=nl.shared_hbm)
        src = nl.ndarray((rows, cols), dtype=x.dtype, buffer=nl.sbuf)
        dst = nl.ndarray((copies, rows), dtype=x.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=src, src=x)
        tp_broadcast(src, dst, column)
        nisa.dma_copy(dst=result, src=dst)
        return result

    x = np.random.default_rng(6).standard_normal((8, 6)).astype(np.float32)
    out = kernel(x, 5, 7)
    # A transpose on the PE array multiplies by an identity: each output is one fp32 product by 1.0, exact.
    np.testing.assert_array_equal(out, np.repeat(x[None, :, 5], 7, axis=0))


# ------------------------------------------------------------------------------------------------- rotational_topk

def test_rotational_topk_two_cores(nkilib):
    nl = importlib.import_module("nki.language")
    topk = nkilib("core.topk.rotational_topk")
    rows, vocab, k = 2, 3168, 8
    x = np.random.default_rng(7).standard_normal((rows, vocab)).astype(np.float32)
    config = topk.create_rotational_topk_config(
        inp_shape=x.shape,
        topk_config=topk.create_topk_config(inp_shape=(rows, 1, vocab), inp_dtype=nl.float32, k=k, sorted=True,
                                            num_programs=2))
    config = topk.prepare_rotational_constants(config)
    try:
        values, indices = topk.rotational_topk[2](x, config)
    finally:
        topk.cleanup_rotational_constants()
    values = np.asarray(values).reshape(rows, k)
    indices = np.asarray(indices).astype(np.int64).reshape(rows, k)
    # Selection only: the k largest values exactly, sorted descending, each at the index reported.
    np.testing.assert_array_equal(values, -np.sort(-x, -1)[:, :k])
    np.testing.assert_array_equal(np.take_along_axis(x, indices, -1), values)


# ----------------------------------------------------------------------------------------------------------- conv1d

def _conv1d_expected(x, w, bias, stride, padding, dilation):
    """out[b, o, t] = bias[o] + sum_{k, c} xpad[b, c, t*stride + k*dilation] * w[k, c, o]; also sum of |terms|."""
    xp = np.pad(_f64(x), ((0, 0), (0, 0), padding))
    taps, _, _ = w.shape
    length = (xp.shape[-1] - dilation * (taps - 1) - 1) // stride + 1
    out = np.zeros((x.shape[0], w.shape[2], length)) + _f64(bias)[None, :, None]
    mag = np.zeros_like(out) + np.abs(_f64(bias))[None, :, None]
    for tap in range(taps):
        window = xp[:, :, tap * dilation: tap * dilation + stride * (length - 1) + 1: stride]
        out += np.einsum("bct,co->bot", window, _f64(w[tap]))
        mag += np.einsum("bct,co->bot", np.abs(window), np.abs(_f64(w[tap])))
    return out, mag


def test_conv1d_two_cores_silu(nkilib):
    conv1d = nkilib("experimental.conv.conv1d").conv1d
    act = nkilib("core.utils.common_types").ActFnType
    batch, c_in, c_out, length, taps, stride, padding, dilation = 2, 64, 256, 40, 5, 2, (2, 2), 2
    rng = np.random.default_rng(8)
    x = rng.standard_normal((batch, c_in, length)).astype(np.float32)
    w = rng.standard_normal((taps, c_in, c_out)).astype(np.float32)
    bias = rng.standard_normal((c_out,)).astype(np.float32)
    out = conv1d[2](x, w, bias, stride=stride, padding=padding, dilation=dilation, activation_fn=act.SiLU,
                    lnc_shard=True)
    z, mag = _conv1d_expected(x, w, bias, stride, padding, dilation)
    expected = z / (1 + np.exp(-z))  # SiLU
    # fp32 products accumulated in fp32 over n = taps*c_in + 1 terms: |error| <= n * 2^-24 * sum|terms|; SiLU's
    # slope is below 1.1 in magnitude, and SiLU itself is evaluated to a few fp32 ulps (allow 4 * 2^-24 relative).
    n = taps * c_in + 1
    _assert_within(out, expected, 1.1 * n * U_FP32 * mag + 4 * U_FP32 * np.abs(expected))


# ----------------------------------------------------------------------------------------------------- rmsnorm_quant

def test_rmsnorm_quant_row_two_cores(nkilib):
    rq = nkilib("core.rmsnorm.rmsnorm_quant")
    types = nkilib("core.utils.common_types")
    batch, seq, hidden, eps = 1, 160, 2048, 1e-6
    rng = np.random.default_rng(9)
    x = rng.standard_normal((batch, seq, hidden)).astype(BF16)
    gamma = rng.standard_normal((1, hidden)).astype(BF16)
    args = rq.RmsNormQuantKernelArgs(quantization_type=types.QuantizationType.ROW, norm_type=types.NormType.RMS_NORM,
                                     lower_bound=0.0, eps=eps)
    out = np.ascontiguousarray(rq.rmsnorm_quant_kernel[2](x, gamma, args))
    assert out.dtype == FP8 and out.shape == (batch, seq, hidden + 4)
    raw = out.view(np.uint8).reshape(batch * seq, hidden + 4)
    q = _f64(raw[:, :hidden].view(FP8))
    scale = _f64(np.ascontiguousarray(raw[:, hidden:]).view(np.float32))  # 4 fp8 slots hold one fp32 scale

    rows = _f64(x).reshape(batch * seq, hidden)
    norm = rows / np.sqrt((rows ** 2).mean(-1, keepdims=True) + eps) * _f64(gamma)
    expected_scale = np.abs(norm).max(-1, keepdims=True) / 240.0  # row max maps to fp8's largest finite value
    # The normalized rows are held in bf16 (the library's compute dtype): up to three bf16 roundings
    # (x*rstd, *gamma, and the reduction input) before the row maximum, 2^-8 relative each.
    _assert_within(scale, expected_scale, 3 * U_BF16 * expected_scale)
    # Quantized value norm/scale: numerator and denominator each within 3 bf16 roundings (6u relative for the
    # ratio), then one rounding to fp8 (2^-4 relative; below fp8's smallest normal 2^-6, 2^-10 absolute).
    value = norm / expected_scale
    _assert_within(q, value, (U_FP8 + 6 * U_BF16) * (1 + U_FP8) * np.abs(value) + 2.0 ** -10)


# -------------------------------------------------------------------------------------------------- dynamic shapes

def test_dynamic_elementwise_add_two_cores(nkilib):
    add = nkilib("experimental.dynamic_shapes").dynamic_elementwise_add
    m, h, tiles = 256, 1024, 1
    rng = np.random.default_rng(10)
    a = rng.standard_normal((m, h)).astype(BF16)
    b = rng.standard_normal((m, h)).astype(BF16)
    out = add[2](a, b, np.array([[tiles]], np.int32))
    rows = tiles * 128  # only the first num_m_tiles * 128 rows are defined
    expected = _f64(a[:rows]) + _f64(b[:rows])
    # One bf16 rounding of the sum (2^-8 relative; the fp32 sum before it adds at most 2^-24).
    _assert_within(np.asarray(out)[:rows], expected, (U_BF16 + U_FP32) * np.abs(expected))
