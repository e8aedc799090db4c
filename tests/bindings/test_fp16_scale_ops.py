"""The torch op on an encoding with float16 scale vectors (the byte-ceiling search's), against SciPy in float64.

Bound per output entry: each stored entry of D^-1/2 (A + I) D^-1/2 is the product of two float16 scales, within
2^-10 + 2^-21 of the exact value (tests/format/test_fp16_scales.py derives it), and the host CSR holds it in float32
(2^-24 more); summing in float64 adds far less. So |Y - Y_exact| <= (2^-10 + 2^-21 + 2^-24) (|A| |X|) entrywise,
and the same bound holds for the gradient A^T dY.
"""

import numpy as np
import pytest
import torch

import dste
from dste.data import make_graph
from dste.format import gcn_normalized
from dste.reference import gcn_normalization

ENTRY_RTOL = 2.0**-10 + 2.0**-21 + 2.0**-24


@pytest.fixture(scope="module")
def low_degree():
    """A shuffled 3,000-node CSBM of mean degree 2: float32 scales cannot meet its CSR ceiling, float16 ones can."""
    graph = make_graph("arxiv-scale", seed=3, num_nodes=3000, num_edges=3000, num_classes=40, num_features=2,
                       locality=0.6, homophily=0.65, community_size=(15, 25), train_per_class=1, num_val=10,
                       num_test=10)
    return gcn_normalized(graph.adj, max_bytes_per_edge="csr"), gcn_normalization(graph.adj)


def test_the_cpu_op_and_its_gradient_on_float16_scales_match_scipy(low_degree):
    matrix, exact = low_degree
    assert matrix.scale_dtype == "float16"
    a = dste.DSTETensor(matrix)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((matrix.shape[1], 8))).requires_grad_()
    y = dste.spmm(a, x, backend="cpu")
    y.backward(torch.ones_like(y))
    magnitude = abs(exact) @ np.abs(x.detach().numpy())
    error = np.abs(y.detach().numpy() - exact @ x.detach().numpy())
    assert (error <= ENTRY_RTOL * magnitude + 1e-12).all()
    # the bound is not loose: the float16 rounding of the scales shows
    assert error.max() > 2.0**-14 * magnitude.max()
    grad_bound = ENTRY_RTOL * (abs(exact).T @ np.ones((exact.shape[0], 8))) + 1e-12
    assert (np.abs(x.grad.numpy() - exact.T @ np.ones((exact.shape[0], 8))) <= grad_bound).all()
