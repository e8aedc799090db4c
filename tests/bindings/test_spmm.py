"""The user-facing ``dste.bindings.spmm``, ``DSTETensor`` and backend selection."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import dste
import dste.bindings as db

from dste.format import DSTEMatrix
from dste.reference import reference_matrix

from .conftest import StandInMatrix, random_sparse

# fp32 products summed over <= 200 terms of magnitude <= 1 against a float64 SciPy product: rounding is
# below 200 * 2^-24 * max|partial sum| ~ 1e-5 relative, so rtol=atol=1e-5 is tight without being flaky.
TOL = dict(rtol=1e-5, atol=1e-5)


def _expected(matrix, x):
    """float64 A @ x, A from the matrix's public arrays by the independent reference (not the decode the cpu op
    multiplies by); a stand-in matrix (no tile arrays) is its own CSR."""
    a = reference_matrix(matrix) if isinstance(matrix, DSTEMatrix) else sp.csr_matrix(matrix.effective_csr())
    return sp.csr_matrix(a, dtype=np.float64) @ np.asarray(x, dtype=np.float64)


def test_cpu_matches_scipy_for_every_x_form(small_matrix):
    a = db.DSTETensor(small_matrix)
    x = np.random.default_rng(3).standard_normal((a.shape[1], 9)).astype(np.float32)
    expected = _expected(small_matrix, x)
    for operand in (torch.from_numpy(x), x, x.astype(np.float64), torch.from_numpy(x).double()):
        y = db.spmm(small_matrix, operand, backend="cpu")
        assert isinstance(y, torch.Tensor) and y.shape == (a.shape[0], 9)
        np.testing.assert_allclose(y.double().numpy(), expected, **TOL)
    np.testing.assert_allclose((a @ torch.from_numpy(x)).numpy(), expected, **TOL)


def test_float64_x_gives_float64_result(small_matrix):
    y = db.spmm(small_matrix, torch.ones(small_matrix.shape[1], 2, dtype=torch.float64), backend="cpu")
    assert y.dtype == torch.float64


def test_empty_matrix_and_zero_width():
    a = db.DSTETensor(StandInMatrix(sp.csr_matrix((5, 4), dtype=np.float32)))
    assert torch.equal(db.spmm(a, torch.ones(4, 3), backend="cpu"), torch.zeros(5, 3))
    assert db.spmm(a, torch.ones(4, 0), backend="cpu").shape == (5, 0)


def test_wrapper_metadata(small_matrix):
    a = db.DSTETensor(small_matrix)
    assert a.shape == torch.Size(small_matrix.shape)
    assert a.dtype == torch.float32 and a.device == torch.device("cpu") and a.dim() == 2
    assert a.nnz == small_matrix.effective_csr().nnz
    np.testing.assert_array_equal(a.to_dense().numpy(), reference_matrix(small_matrix).toarray().astype(np.float32))
    assert db.DSTETensor(a).matrix is small_matrix
    # the wrapper owns its operands: wrapping the wrapper shares them, a new wrapper builds its own
    again = db.DSTETensor(a)
    assert again.values is a.values and again.handle == a.handle
    other = db.DSTETensor(small_matrix)
    assert other.values is not a.values and torch.equal(other.values, a.values)
    assert "DSTETensor(shape=(300, 200)" in repr(a)


def test_backend_resolution(monkeypatch):
    monkeypatch.delenv(db.BACKEND_ENV_VAR, raising=False)
    assert db.resolve_backend(None) == "cpu"  # the default, whatever the host has
    assert db.resolve_backend("auto") == ("neuron" if db.neuron_available() else "cpu")
    monkeypatch.setenv(db.BACKEND_ENV_VAR, "nkisim")
    assert db.resolve_backend(None) == "nkisim"
    assert db.resolve_backend("CPU") == "cpu"
    monkeypatch.setenv(db.BACKEND_ENV_VAR, "gpu")
    with pytest.raises(ValueError, match="unknown DSTE backend 'gpu' from environment variable DSTE_BACKEND"):
        db.resolve_backend(None)
    with pytest.raises(ValueError, match="allowed: cpu, nkisim, neuron, auto"):
        db.resolve_backend("cuda")
    with pytest.raises(TypeError, match="backend must be a str"):
        db.resolve_backend(3)


@pytest.mark.skipif(db.neuron_available(), reason="a Neuron device is present")
def test_neuron_backend_is_a_clear_error_without_the_sdk(small_matrix):
    with pytest.raises(db.BackendUnavailableError, match="AWS Neuron SDK"):
        db.spmm(small_matrix, torch.ones(small_matrix.shape[1], 2), backend="neuron")


def test_env_var_selects_backend(monkeypatch, small_matrix):
    monkeypatch.setenv(db.BACKEND_ENV_VAR, "cpu")
    y = db.spmm(small_matrix, torch.ones(small_matrix.shape[1], 2))
    np.testing.assert_allclose(y.numpy(), _expected(small_matrix, np.ones((small_matrix.shape[1], 2))), **TOL)


@pytest.mark.parametrize(
    "make_x, error, message",
    [
        (lambda m: torch.ones(m + 1, 2), ValueError, "shape mismatch: A is"),
        (lambda m: torch.ones(m), ValueError, "X must be 2-D"),
        (lambda m: torch.ones(m, 2, dtype=torch.int64), TypeError, "float32 or float64"),
        (lambda m: torch.ones(m, 2, dtype=torch.float16), TypeError, "float32 or float64"),
        (lambda m: np.ones((m, 2), dtype=np.int32), TypeError, "float32 or float64"),
        (lambda m: torch.full((m, 2), float("nan")), ValueError, "NaN or Inf"),
        (lambda m: np.full((m, 2), np.inf, dtype=np.float32), ValueError, "NaN or Inf"),
        (lambda m: [[1.0]] * m, TypeError, "X must be a torch tensor"),
        (lambda m: torch.ones(m, 2).to_sparse(), TypeError, "dense"),
        (lambda m: torch.ones(m, 2, device="meta"), ValueError, "device"),
    ],
)
def test_spmm_rejects_bad_x(small_matrix, make_x, error, message):
    with pytest.raises(error, match=message):
        db.spmm(small_matrix, make_x(small_matrix.shape[1]), backend="cpu")


def test_the_kernel_backend_names_float64_values_beyond_float32_as_such():
    """The kernel's X is float32: 1e300 is finite but does not fit; the CPU op (float64 throughout) computes it."""
    A = dste.encode(sp.eye(8, format="csr"))
    x = np.full((8, 2), 1e300)
    with pytest.raises(ValueError, match="beyond float32's range"):
        db.spmm(A, x, backend="nkisim")
    np.testing.assert_array_equal(db.spmm(A, x, backend="cpu").numpy(), x)


def test_gcn_normalized_takes_a_bool_for_add_self_loops():
    with pytest.raises(TypeError, match="add_self_loops must be a bool, got str"):
        dste.gcn_normalized(sp.eye(4, format="csr"), add_self_loops="no")


@pytest.mark.parametrize("bad_a", [np.ones((3, 3)), sp.eye(3, format="csr"), torch.eye(3), "matrix", None])
def test_spmm_rejects_non_dste_a(bad_a):
    with pytest.raises(TypeError, match="DSTEMatrix or a DSTETensor"):
        db.spmm(bad_a, torch.ones(3, 1), backend="cpu")


def test_wrapper_rejects_bad_input():
    with pytest.raises(TypeError, match="wraps a dste.format.DSTEMatrix"):
        db.DSTETensor(sp.eye(3, format="csr"))
    bad = sp.csr_matrix(np.array([[np.nan, 1.0]], dtype=np.float32))
    with pytest.raises(ValueError, match="NaN or Inf"):
        db.DSTETensor(StandInMatrix(bad))
    a = db.DSTETensor(StandInMatrix(random_sparse(4, 4, 0.5, seed=0)))
    with pytest.raises(ValueError, match="lives on the host"):
        a.to("meta")
    with pytest.raises(TypeError, match="float32"):
        a.to(dtype=torch.float64)


@pytest.mark.parametrize(
    "args, error, message",
    [
        ((np.ones((2, 128, 64), np.float32), np.ones((2, 128, 64), bool), np.ones(2, np.float32), 1.0), ValueError, r"\[T, 128, 128\]"),
        ((np.ones((2, 128, 128), np.float64), np.ones((2, 128, 128), bool), np.ones(2, np.float32), 1.0), TypeError, "values must have dtype"),
        ((np.ones((2, 128, 128), np.float32), np.ones((1, 128, 128), bool), np.ones(2, np.float32), 1.0), ValueError, "keep must have the shape"),
        ((np.ones((2, 128, 128), np.float32), np.ones((2, 128, 128), bool), np.ones(3, np.float32), 1.0), ValueError, "sensitivity must be"),
        ((np.ones((2, 128, 128), np.float32), np.ones((2, 128, 128), bool), np.ones(2, np.float32), "x"), TypeError, "threshold"),
        ((np.full((2, 128, 128), np.nan, np.float32), np.ones((2, 128, 128), bool), np.ones(2, np.float32), 1.0), ValueError, "NaN or Inf"),
    ],
)
def test_masked_quant_rejects_bad_input(args, error, message):
    with pytest.raises(error, match=message):
        db.masked_quant(*args, backend="cpu")


def test_a_duck_typed_hybrid_rows_x_runs_on_the_kernel_backend_as_on_cpu():
    # dste.spmm takes any object with HybridRows' fields; the kernel launchers take only HybridRows, so the nkisim
    # backend failed on dste.reference's ReferenceHybridRows with "X must be 2-D, got shape ()"
    from dste.reference.masked_quant import quantize_rows_reference

    rng = np.random.default_rng(2)
    n = 200
    adjacency = (sp.random(n, n, density=0.03, random_state=3, format="csr", dtype=np.float32)
                 + sp.eye(n, dtype=np.float32, format="csr")).tocsr()
    adjacency.data[:] = 1
    matrix = dste.encode(adjacency)
    sensitivity = np.zeros(n)
    sensitivity[[3, 50, 199]] = 1
    rows = quantize_rows_reference(rng.standard_normal((n, 8)).astype(np.float32), sensitivity, 0.5)
    expected = adjacency @ rows.dequantize()
    kernel = dste.spmm(matrix, rows, backend="nkisim").numpy()
    # the kernel accumulates bf16-rounded products of INT8 and FP16 operands: a few parts in 1,000 of the output scale
    np.testing.assert_allclose(kernel, expected, atol=4e-3 * np.abs(expected).max())


def test_estimate_spmm_says_when_x_does_not_match_the_x_mode():
    from dste.kernels import estimate_spmm

    matrix = dste.encode(sp.identity(256, dtype=np.float32, format="csr"))
    x = np.ones((256, 16), np.float32)
    with pytest.raises(ValueError, match="X must be HybridRows .* exactly when x_mode is 'int8-hybrid'"):
        estimate_spmm(matrix, 16, "int8-hybrid", X=x)
    with pytest.raises(ValueError, match="X must be HybridRows .* exactly when x_mode is 'int8-hybrid'"):
        estimate_spmm(matrix, 16, "fp32", X=dste.quantize_rows(x))


@pytest.mark.parametrize("backend", ["cpu", "nkisim"])
def test_an_edited_hybrid_rows_x_is_refused_on_every_backend(backend):
    # the cpu backend dequantized an edited HybridRows without validating it (an FP16 row's nonzero q was ignored),
    # while the kernel launchers refused it: the same X must get the same answer on both
    from dste.format import DSTEFormatError

    n = 256
    matrix = dste.encode(sp.identity(n, dtype=np.float32, format="csr"))
    sensitivity = np.zeros(n)
    sensitivity[7] = 1
    rows = dste.quantize_rows(np.random.default_rng(0).standard_normal((n, 4)).astype(np.float32),
                              sensitivity=sensitivity, threshold=0.5)
    assert rows.hi_rows.tolist() == [7]
    dste.spmm(matrix, rows, backend=backend)  # valid as built
    rows.q[7] = 5
    with pytest.raises(DSTEFormatError, match="FP16 rows must have scale 0 and all-zero q"):
        dste.spmm(matrix, rows, backend=backend)


def test_numpy_x_whatever_its_layout_or_byte_order_gives_scipys_bits():
    """A size-1 axis kept a negative stride through np.ascontiguousarray, and torch.from_numpy refused it with its
    own error; a big-endian float32 X was refused as if it were not float32."""
    rng = np.random.default_rng(0)
    matrix = dste.encode(sp.random(50, 40, density=0.1, random_state=1, format="csr"), kinds="fp16")
    reference = reference_matrix(matrix).astype(np.float32)  # FP16 values: exact in float32
    column = rng.standard_normal((40, 1)).astype(np.float32)
    for x in (column[:, ::-1], rng.standard_normal((40, 3)).astype(">f4")):
        expected = reference @ np.asarray(x, dtype=np.float32)
        assert np.array_equal(dste.spmm(matrix, x).numpy(), expected)
