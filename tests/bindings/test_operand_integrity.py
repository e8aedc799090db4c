"""What ``dste.spmm`` refuses or follows so that a product never silently differs from the matrix's own arrays:
operands written in place, ``values`` asking for a gradient, ``torch.jit.trace``, ``torch.autocast``, meta X.

Expected values are float64 SciPy products of ``dste.reference.reference_matrix(A)`` (rebuilt from the matrix's
public arrays, not from the bindings' operands); the cpu backend multiplies the float32 effective values in float32,
so with |A| |X| under 40 per element here 1e-4 absolute bounds its rounding with room.
"""

from __future__ import annotations

import copy
import pickle
import warnings

import numpy as np
import pytest
import torch

import dste.bindings as db
from dste.format.encoder import encode
from dste.reference.spmm import reference_matrix

from .conftest import random_sparse

ATOL = 1e-4  # float32 products against float64 ones (module docstring)


def _matrix(seed=3):
    return encode(random_sparse(60, 50, 0.15, seed=seed), kinds="int8")


def _expected(A, x):
    return reference_matrix(A) @ x.double().numpy()


@pytest.mark.parametrize("edit", ["values", "col_indices", "row_perm_or_crow"])
def test_an_operand_written_in_place_is_refused_by_every_later_product(edit):
    A = _matrix()
    x = torch.randn(50, 4)
    wrapper = db.DSTETensor.kept_for(A)
    np.testing.assert_allclose(db.spmm(A, x).numpy(), _expected(A, x), atol=ATOL)
    with torch.no_grad():
        if edit == "values":
            wrapper.values.mul_(0.5)
        elif edit == "col_indices":
            wrapper.col_indices[:1] = wrapper.col_indices[:1]
        else:
            target = wrapper.row_perm if wrapper.row_perm.numel() else wrapper.crow_indices
            target[:1] = target[:1]
    for call in (lambda: db.spmm(A, x), lambda: db.spmm(wrapper, x), lambda: wrapper @ x.numpy()):
        with pytest.raises(RuntimeError, match="written in place"):
            call()
    with pytest.raises(RuntimeError, match="written in place"):
        pickle.dumps(wrapper)


def test_an_unedited_wrapper_survives_copies_and_pickling():
    A = _matrix()
    x = torch.randn(50, 3)
    wrapper = db.DSTETensor(A)
    for other in (pickle.loads(pickle.dumps(wrapper)), copy.deepcopy(wrapper), db.DSTETensor(wrapper)):
        np.testing.assert_allclose(db.spmm(other, x).numpy(), _expected(A, x), atol=ATOL)


@pytest.mark.parametrize("x_requires_grad", [False, True])
def test_values_requiring_grad_are_refused_whatever_x(x_requires_grad):
    # the products have no gradient with respect to the matrix's values: the flag must not be silently ignored
    wrapper = db.DSTETensor(_matrix())
    wrapper.values.requires_grad_()
    x = torch.randn(50, 2, requires_grad=x_requires_grad)
    with pytest.raises(NotImplementedError, match="values"):
        db.spmm(wrapper, x)
    with pytest.raises(NotImplementedError, match="values"):
        db.spmm(wrapper, x.detach().numpy())


def test_jit_trace_records_the_product_not_its_value():
    A = _matrix()
    wrapper = db.DSTETensor(A)

    def propagate(x):
        return db.spmm(wrapper, x, backend="cpu")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates jit.trace; users still call it
        traced = torch.jit.trace(propagate, (torch.randn(50, 3),))
    assert "dste::spmm_hybrid" in str(traced.graph)
    for seed in (1, 2):
        x = torch.randn(50, 3, generator=torch.Generator().manual_seed(seed))
        np.testing.assert_allclose(traced(x).numpy(), _expected(A, x), atol=ATOL)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_runs_the_product_in_float32(dtype):
    A = _matrix()
    x = torch.randn(50, 3).to(dtype)
    with torch.autocast("cpu", dtype=dtype):
        y = db.spmm(A, x)
    assert y.dtype == torch.float32
    np.testing.assert_allclose(y.numpy(), _expected(A, x.float()), atol=ATOL)
    with pytest.raises(TypeError, match="float32 or float64"):  # outside autocast a 16-bit X stays refused
        db.spmm(A, x)


def test_a_meta_x_is_refused_with_a_hint_that_can_work():
    with pytest.raises(ValueError, match="meta device.*shape \\[A.shape\\[0\\], X.shape\\[1\\]\\]"):
        db.spmm(_matrix(), torch.empty(50, 3, device="meta"))
