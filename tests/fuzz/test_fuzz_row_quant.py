"""Fuzz: the cpu forward pass's compiled row quantization gives the reference quantizer's bits, or its error."""

import warnings

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dste.gnn.execution import fake_quantized_rows
from dste.gnn.settings import quantize_rows_by_fraction

from .strategies import examples

SPECIAL = [0.0, -0.0, 1e-45, -1e-45, 1e-38, 2e-36, 1e-30, 65504.0, 65505.0, 1e5, 1e30, 3e38, np.inf, -np.inf, np.nan]


@st.composite
def activations(draw):
    n, width = draw(st.integers(1, 80)), draw(st.integers(1, 140))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    x = rng.standard_normal((n, width)) * 10.0 ** draw(st.sampled_from([-30.0, -6.0, -1.0, 0.0, 2.0, 4.0, 30.0]))
    if draw(st.booleans()):
        x = np.maximum(x, 0.0)  # a ReLU's output
    if draw(st.booleans()):
        x[rng.random((n, width)) < 0.3] = 0.0
    if draw(st.booleans()):
        x = np.round(x)  # ties on the INT8 grid
    if draw(st.booleans()):
        x[rng.integers(0, n)] = x[rng.integers(0, n)]  # a copied row: tied scores
    x = x.astype(np.float32)
    for _ in range(draw(st.integers(0, 2))):
        x[rng.integers(0, n), rng.integers(0, width)] = draw(st.sampled_from(SPECIAL))
    return x


@settings(max_examples=examples(400), deadline=None)
@given(x=activations(), fraction=st.sampled_from([0.0, 0.01, 0.05, 0.3, 0.5, 0.99, 1.0]))
def test_fake_quantized_rows_are_the_quantizers_bits_or_its_error(x, fraction):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the reference's own NumPy warnings on NaN/Inf
        try:
            reference, expected_error = quantize_rows_by_fraction(x, fraction).dequantize(), None
        except Exception as error:  # noqa: BLE001 - compared below
            reference, expected_error = None, type(error)
        try:
            got, error = fake_quantized_rows(torch.from_numpy(x), fraction).numpy(), None
        except Exception as raised:  # noqa: BLE001
            got, error = None, type(raised)
    assert error == expected_error
    if reference is not None:
        assert np.array_equal(np.asarray(reference, np.float32).view(np.uint32), got.view(np.uint32))
