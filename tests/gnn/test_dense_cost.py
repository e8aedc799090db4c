"""The weight product's latency model (dste.gnn.dense_cost) and the CPU weight path."""

import math

import numpy as np
import pytest
import torch

from dste.gnn import CompressedWeight, quantize_rows_by_fraction
from dste.gnn.dense_cost import MOVING_MAX, PARTITIONS, dense_matmul_latency_us
from dste.gnn.settings import row_sensitivity
from dste.format import quantize_rows
from dste.nkisim import cost


def test_large_products_are_tensor_engine_bound_at_the_documented_rate():
    # 100k nodes, K = O = 128: the matmuls dominate; FP32 runs at 1/4 of the bf16 rate (matmul_fp32_factor).
    n, k, o = 100_352, 128, 128
    bf16 = dense_matmul_latency_us(n, k, o, k * o, "int8-hybrid")
    fp32 = dense_matmul_latency_us(n, k, o, 4 * k * o, "fp32")
    blocks = n // PARTITIONS
    tensor_cycles = (n // MOVING_MAX) * MOVING_MAX + blocks * PARTITIONS + blocks * o  # product + 2 transposes
    expected_bf16 = cost.cycles_to_ns(tensor_cycles, "tensor", "trn2") / 1e3 + cost.constant("dma_fixed_ns", "trn2") / 1e3
    assert bf16 == pytest.approx(expected_bf16, rel=1e-9)
    assert fp32 / bf16 == pytest.approx(4.0, rel=0.01)


def test_latency_grows_linearly_in_the_node_count_not_with_it_as_a_width():
    small = dense_matmul_latency_us(20_000, 500, 64, 32_000, "int8-hybrid")
    large = dense_matmul_latency_us(200_000, 500, 64, 32_000, "int8-hybrid")
    assert 9.0 < large / small < 10.5  # linear in N, a fixed fill cost aside


def test_bad_arguments_name_the_operand():
    with pytest.raises(ValueError, match="input_mode"):
        dense_matmul_latency_us(10, 4, 4, 16, "int4")
    with pytest.raises(ValueError, match="num_nodes"):
        dense_matmul_latency_us(-1, 4, 4, 16, "fp32")
    assert dense_matmul_latency_us(0, 4, 4, 16, "fp32") == 0.0


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_quantize_by_fraction_skips_scores_only_where_they_cannot_matter(fraction):
    x = np.random.default_rng(0).standard_normal((300, 40)).astype(np.float32)
    x[7, 3] = 500.0  # an outlier row, which a threshold rule would send to FP16
    fast = quantize_rows_by_fraction(x, fraction)
    full = quantize_rows(x, sensitivity=row_sensitivity(x), fp16_fraction=fraction)
    np.testing.assert_array_equal(fast.dequantize(), full.dequantize())
    np.testing.assert_array_equal(fast.hi_rows, full.hi_rows)


def test_cpu_weight_product_equals_the_kernel_operand_product():
    rng = np.random.default_rng(1)
    w = torch.from_numpy(rng.standard_normal((70, 30)).astype(np.float32))
    h = torch.from_numpy(rng.standard_normal((200, 70)).astype(np.float32))
    weight = CompressedWeight(w, sparsity=0.3)
    dense = weight(h, backend="cpu")
    through_csr = (weight.tensor.to_scipy() @ h.numpy().T).T
    # float32 sums of 70 terms in two orders: |error| <= 70 * eps * sum|h w| ~ 1e-4 of the magnitudes here
    np.testing.assert_allclose(dense.numpy(), through_csr, rtol=1e-4, atol=1e-4)
    assert not np.allclose(dense.numpy(), (h @ w).numpy(), atol=1e-3)  # the mask and INT8 values are applied
