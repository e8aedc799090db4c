"""AWS's own NKI documentation kernels run unmodified on the simulator and match NumPy.

The kernels are imported at run time from an aws-neuron-sdk checkout (``DSTE_NKI_SDK``, default
an ``aws-neuron-sdk`` checkout beside the repository); none of their code is copied here. Without the checkout every test skips.
"""

import importlib.util
import os
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import dste.nkisim
from dste.nkisim.errors import ConstraintError

EXAMPLES = Path(os.environ.get("DSTE_NKI_SDK", Path(__file__).resolve().parents[3] / "aws-neuron-sdk")) / "nki" / "examples"
RNG = np.random.default_rng(2024)


@pytest.fixture
def load_example(monkeypatch):
    """Import an example file as a fresh module (after installing the simulator as ``nki``)."""
    if not EXAMPLES.is_dir():
        pytest.skip(f"no aws-neuron-sdk examples at {EXAMPLES} (set DSTE_NKI_SDK)")
    dste.nkisim.install()
    # Some examples set NEURON_PLATFORM_TARGET_OVERRIDE at import; keep that inside the test.
    monkeypatch.setenv("NEURON_PLATFORM_TARGET_OVERRIDE", os.environ.get("NEURON_PLATFORM_TARGET_OVERRIDE", "trn2"))

    def load(relative):
        path = EXAMPLES / relative
        if not path.exists():
            pytest.skip(f"{path} is not in this checkout")
        name = "aws_example_" + relative.replace("/", "_").replace("-", "_").removesuffix(".py")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        finally:
            sys.modules.pop(name, None)
        return module

    return load


def _fp32_matmul_tolerance(k, expected):
    # fp32 inputs and fp32 PSUM accumulation over k products of |x| ~ 1: rounding ~ k * 2^-24 relative.
    return 1e-5 * max(1.0, k / 128) * np.abs(expected).max()


def test_tensor_addition(load_example):
    module = load_example("tensor_addition/tensor_addition_nki_kernels.py")
    a = RNG.standard_normal((256, 1024)).astype(np.float32)
    b = RNG.standard_normal((256, 1024)).astype(np.float32)
    # One fp32 addition per element: exactly NumPy's.
    np.testing.assert_array_equal(module.nki_tensor_add(a, b), a + b)


def test_transpose2d(load_example):
    module = load_example("transpose2d/transpose2d_nki_kernels.py")
    p, x, y = 5, 3, 4
    a = RNG.integers(-100, 100, size=(p, x * y)).astype(np.int8)
    out = module.tensor_transpose2D_kernel_(a, (x, y))
    np.testing.assert_array_equal(out, np.transpose(a.reshape(p, x, y), (0, 2, 1)).reshape(p, x * y))


@pytest.mark.parametrize("kernel, k, m, n, meta", [
    ("nki_matmul_basic_", 128, 64, 512, {}),
    ("nki_matmul_tiled_", 256, 256, 1024, {}),
    ("nki_matmul_hoist_load_", 256, 256, 1024, {}),
    ("nki_matmul_block_free_dimension_", 256, 256, 1024, {}),
    ("nki_matmul_fully_optimized_", 256, 256, 1024, {"TILES_IN_BLOCK_M": 2, "TILES_IN_BLOCK_N": 2, "TILES_IN_BLOCK_K": 2}),
])
def test_matrix_multiplication(load_example, kernel, k, m, n, meta):
    module = load_example("matrix_multiplication/matrix_multiplication_nki_kernels.py")
    lhs_t = RNG.standard_normal((k, m)).astype(np.float32)
    rhs = RNG.standard_normal((k, n)).astype(np.float32)
    out = getattr(module, kernel)(lhs_t, rhs, **meta)
    expected = lhs_t.astype(np.float64).T @ rhs.astype(np.float64)
    np.testing.assert_allclose(out, expected, atol=_fp32_matmul_tolerance(k, expected), rtol=0)


def test_average_pool2d(load_example):
    module = load_example("average_pool2d/average_pool2d_nki_kernels.py")  # imports nki.typing
    x = RNG.standard_normal((8, 12, 16)).astype(np.float32)
    out = module.tensor_avgpool_kernel(x, 2)
    expected = x.reshape(8, 6, 2, 8, 2).mean(axis=(2, 4))
    # fp32 sum of 4 values then one multiply by 1/4: within a few ulp of the float64 mean.
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)


def _mamba_reference(delta, u, A, B, C):
    batch, channels, seq_len = delta.shape
    out = np.zeros_like(delta, dtype=np.float64)
    for b in range(batch):
        for i in range(A.shape[1]):
            decay = np.exp(delta[b] * A[:, i:i + 1])
            drive = delta[b] * u[b] * B[b, i][None, :]
            state = np.zeros(channels)
            for t in range(seq_len):
                state = decay[:, t] * state + drive[:, t]
                out[b, :, t] += state * C[b, i, t]
    return out


@pytest.mark.parametrize("version", ["mamba_v1", "mamba_v2", "mamba_v3"])
def test_fused_mamba(load_example, version):
    module = load_example("fused_mamba/mamba_nki_kernels.py")
    batch, channels, seq_len, states = 1, 128, 512, 2
    delta = RNG.uniform(0.0, 0.5, (batch, channels, seq_len)).astype(np.float32)
    u = RNG.standard_normal((batch, channels, seq_len)).astype(np.float32)
    A = -RNG.uniform(0.5, 1.5, (channels, states)).astype(np.float32)
    B = RNG.standard_normal((batch, states, seq_len)).astype(np.float32)
    C = RNG.standard_normal((batch, states, seq_len)).astype(np.float32)
    out = getattr(module, version)(delta, u, A, B, C)
    expected = _mamba_reference(delta, u, A, B, C)
    # fp32 recurrences over 512 steps with decay < 1: errors stay near fp32 rounding of the running state.
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_getting_started_baremetal(load_example):
    module = load_example("getting_started_baremetal.py")
    a = RNG.standard_normal((4, 3)).astype(np.float16)
    b = RNG.standard_normal((4, 3)).astype(np.float16)
    # fp16 inputs, fp32 addition, one rounding to fp16: equal to NumPy's fp32 sum rounded to fp16.
    expected = (a.astype(np.float32) + b.astype(np.float32)).astype(np.float16)
    np.testing.assert_array_equal(module.nki_tensor_add_kernel(a, b), expected)


def test_simulate_example_runs_its_own_check(load_example):
    module = load_example("simulate/nki_simulate_example.py")  # asserts allclose(result, a + b) at import
    np.testing.assert_allclose(module.result, module.a + module.b, rtol=1e-5)


def test_index_case_1_splits_even_and_odd_columns(load_example):
    module = load_example("index-case-1.py")
    x = np.arange(4 * 5, dtype=np.float32).reshape(4, 5).astype(ml_dtypes.bfloat16)
    even, odd = module.tensor_split_kernel_(x)
    np.testing.assert_array_equal(even.view(np.uint16), x[:, 0::2].view(np.uint16))
    np.testing.assert_array_equal(odd.view(np.uint16), x[:, 1::2].view(np.uint16))


def test_index_case_3_maxpool(load_example):
    module = load_example("index-case-3.py")
    x = RNG.standard_normal((2, 6, 6)).astype(np.float32)
    out = module.tensor_maxpool_kernel_(x, 2)
    np.testing.assert_array_equal(out, x.reshape(2, 3, 2, 3, 2).max(axis=(2, 4)))


def test_layout_pass(load_example):
    module = load_example("layout-pass.py")
    x = RNG.uniform(-2, 2, (128, 512)).astype(np.float32)
    # ScalarE exp in fp32: NumPy's float32 exp within an ulp or two.
    np.testing.assert_allclose(module.tensor_exp_kernel_(x), np.exp(x), rtol=1e-6)


def test_layout_violation_is_refused(load_example):
    module = load_example("layout-violation.py")
    x = np.ones((256, 512), np.float32)
    with pytest.raises(ConstraintError, match="128"):
        module.tensor_exp_kernel_(x)


def test_layout_examples_that_are_not_kernels_are_skipped(load_example):
    for relative in ("layout-dynamic-loop.py", "layout-loop.py"):
        source = (EXAMPLES / relative).read_text()
        try:
            compile(source, relative, "exec")
        except SyntaxError:
            continue  # the page shows a fragment that is not valid Python (an unclosed call)
        assert "torch_neuronx" in source  # the legacy nki_jit namespace, not the current nki API
