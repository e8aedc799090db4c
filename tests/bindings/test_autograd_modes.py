"""Gradients of ``dste.spmm`` outside plain reverse mode, and the state a wrapper carries across processes.

Every expected value is the float64 SciPy matrix ``dste.reference.reference_matrix(A)`` (rebuilt from the
matrix's public arrays, not from the bindings' operands) times a float64 operand; the product is linear in X,
so its forward-mode tangent is ``A @ T`` and its gradient ``A^T @ G``. A float64 X multiplies the matrix's
float32 effective values (``dste.spmm``'s docstring), which stand within float32's half ulp (2^-24) of the
reference's float64 values: with |A| |X| summed per element under 60 here, 1e-5 absolute bounds that with room.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.autograd.forward_ad as fwAD

import dste.bindings as db
from dste.format.encoder import encode
from dste.reference.spmm import reference_matrix

from .conftest import random_sparse

ATOL_FLOAT64_X = 1e-5  # float32 values against float64 ones (module docstring)


@pytest.fixture(scope="module")
def int8_matrix():
    """INT8 tiles, so the float32 effective values differ from the reference's float64 ones."""
    return encode(random_sparse(40, 30, 0.2, seed=11), kinds="int8")


@pytest.mark.parametrize("backend", ["cpu", "nkisim"])
@pytest.mark.parametrize("requires_grad", [False, True])
def test_forward_mode_tangent_is_a_times_tangent(int8_matrix, backend, requires_grad):
    """A dual X without requires_grad came back without a tangent (forward-mode AD read it as zero), one with it
    raised torch's NotImplementedError from inside the op; the tangent of A @ X is A @ T."""
    reference = reference_matrix(int8_matrix)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((30, 3)))
    tangent = torch.from_numpy(rng.standard_normal((30, 3)))
    with fwAD.dual_level():
        dual = fwAD.make_dual(x.clone().requires_grad_(requires_grad), tangent)
        y_primal, y_tangent = fwAD.unpack_dual(db.spmm(int8_matrix, dual, backend=backend))
    assert y_tangent is not None
    # nkisim rounds both operands to bf16: (2^-7 + 2^-16) per term |a||t| (tests/kernels/error_bounds.py)
    bound = (2.0**-7 + 2.0**-16) * (abs(reference) @ np.abs(tangent.numpy())) + ATOL_FLOAT64_X
    np.testing.assert_array_less(np.abs(y_tangent.detach().numpy() - reference @ tangent.numpy()),
                                 bound if backend == "nkisim" else ATOL_FLOAT64_X)
    assert y_primal.shape == (40, 3)


def test_forward_mode_tangent_of_a_reverse_mode_graph(int8_matrix):
    """A dual X that also requires grad: the tangent is A @ T and the reverse-mode gradient still A^T @ G."""
    reference = reference_matrix(int8_matrix)
    x = torch.randn(30, 2, dtype=torch.float64, requires_grad=True)
    tangent = torch.randn(30, 2, dtype=torch.float64)
    grad_out = torch.randn(40, 2, dtype=torch.float64)
    with fwAD.dual_level():
        y = db.spmm(int8_matrix, fwAD.make_dual(x, tangent))
        y_tangent = fwAD.unpack_dual(y).tangent
        y.backward(grad_out)
    np.testing.assert_allclose(y_tangent.detach().numpy(), reference @ tangent.numpy(), rtol=0, atol=ATOL_FLOAT64_X)
    np.testing.assert_allclose(x.grad.numpy(), reference.T @ grad_out.numpy(), rtol=0, atol=ATOL_FLOAT64_X)


def test_op_refuses_a_dual_operand(int8_matrix):
    """Called directly, the op has no forward-mode formula: a dual X is refused instead of losing its tangent."""
    a = db.DSTETensor(int8_matrix)
    with fwAD.dual_level():
        dual = fwAD.make_dual(torch.randn(30, 2), torch.randn(30, 2))
        with pytest.raises(NotImplementedError, match="forward-mode"):
            torch.ops.dste.spmm_hybrid(*a.op_operands, dual, a.handle, -1, "cpu")
        grad = fwAD.make_dual(torch.randn(40, 2), torch.randn(40, 2))
        with pytest.raises(NotImplementedError, match="forward-mode"):
            torch.ops.dste.spmm_transpose(*a.op_operands, grad, 30)


def test_func_transforms_match_the_dense_reference(int8_matrix):
    """torch.func.vmap, jvp and jacfwd: the finiteness check of X read a functorch-wrapped tensor through NumPy
    (and a first call on a bare matrix built its operands as wrapped tensors) and raised 'Cannot access data
    pointer of Tensor that doesn't have storage'."""
    fresh = int8_matrix.replace()  # nothing kept yet: the first call builds the operands inside the transform
    reference = reference_matrix(int8_matrix)
    batch = torch.randn(4, 30, 3, dtype=torch.float64)
    got = torch.vmap(lambda t: db.spmm(fresh, t))(batch)
    np.testing.assert_allclose(got.numpy(), np.stack([reference @ b for b in batch.numpy()]), rtol=0,
                               atol=ATOL_FLOAT64_X)
    x, tangent = torch.randn(30, 3, dtype=torch.float64), torch.randn(30, 3, dtype=torch.float64)
    _, got = torch.func.jvp(lambda t: db.spmm(int8_matrix, t), (x,), (tangent,))
    np.testing.assert_allclose(got.numpy(), reference @ tangent.numpy(), rtol=0, atol=ATOL_FLOAT64_X)
    got = torch.func.jacfwd(lambda t: db.spmm(int8_matrix, t))(x[:, :1])
    np.testing.assert_allclose(got[:, 0, :, 0].numpy(), reference.toarray(), rtol=0, atol=ATOL_FLOAT64_X)


def test_vmap_under_reverse_mode_autograd(int8_matrix):
    reference = reference_matrix(int8_matrix)
    batch = torch.randn(3, 30, 2, dtype=torch.float64, requires_grad=True)
    y = torch.vmap(lambda t: db.spmm(int8_matrix, t))(batch)
    grad_out = torch.randn_like(y)
    y.backward(grad_out)
    np.testing.assert_allclose(batch.grad.numpy(), np.stack([reference.T @ g for g in grad_out.numpy()]), rtol=0,
                               atol=ATOL_FLOAT64_X)


@pytest.mark.parametrize("transform", [torch.func.grad, torch.func.jacrev])
def test_func_reverse_mode_transforms_are_refused(int8_matrix, transform):
    """torch's custom ops have no rule for torch.func's reverse-mode transforms: a clear refusal, not torch's
    message about an internal autograd.Function."""
    with pytest.raises(NotImplementedError, match="torch.autograd"):
        transform(lambda t: db.spmm(int8_matrix, t).sum())(torch.randn(30, 2, dtype=torch.float64))


def test_func_transforms_refuse_a_non_finite_x(int8_matrix):
    x = torch.randn(30, 3, dtype=torch.float64)
    x[4, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        torch.func.jvp(lambda t: db.spmm(int8_matrix, t), (x,), (torch.ones_like(x),))
    with pytest.raises(ValueError, match="NaN or Inf"):
        torch.vmap(lambda t: db.spmm(int8_matrix, t))(x[None].expand(2, -1, -1))


def test_gradient_with_respect_to_values_is_refused(int8_matrix):
    """The op has no gradient for the matrix's values: one asked for came back None (an optimizer skipped it
    silently); now the forward refuses it."""
    a = db.DSTETensor(int8_matrix)
    crow, col, values, row_perm, col_perm = a.op_operands
    learned = values.clone().requires_grad_(True)
    x = torch.randn(30, 2)
    with pytest.raises(NotImplementedError, match="values"):
        torch.ops.dste.spmm_hybrid(crow, col, learned, row_perm, col_perm, x, a.handle, -1, "cpu")
    with pytest.raises(NotImplementedError, match="values"):
        torch.ops.dste.spmm_transpose(crow, col, learned, row_perm, col_perm, torch.randn(40, 2), 30)
    with torch.no_grad():  # nothing recorded: the values' flag asks for nothing
        torch.ops.dste.spmm_hybrid(crow, col, learned, row_perm, col_perm, x, a.handle, -1, "cpu")


def test_op_refuses_non_finite_x_on_every_path(int8_matrix):
    """The op refused NaN/Inf X on the kernel backends but multiplied it on the cpu backend, where only the
    eager dste.spmm checked; compiled and autograd-recording calls reach the op itself."""
    a = db.DSTETensor(int8_matrix)
    x = torch.randn(30, 2)
    x[3, 1] = float("inf")
    for backend in ("cpu", "nkisim"):
        with pytest.raises(ValueError, match="NaN or Inf"):
            torch.ops.dste.spmm_hybrid(*a.op_operands, x, a.handle, -1, backend)
    compiled = torch.compile(lambda t: db.spmm(a, t, backend="cpu"), backend="aot_eager", fullgraph=True)
    with pytest.raises(ValueError, match="NaN or Inf"):
        compiled(x)


_UNPICKLE_ELSEWHERE = textwrap.dedent("""
    import pickle, sys
    import numpy as np, torch
    import dste.bindings as db
    from dste.format.encoder import encode
    from dste.reference.spmm import reference_matrix
    # other wrappers made first take every handle up to the one the pickled wrapper had in its own process
    other = encode(np.eye(30, dtype=np.float32) * 3)
    others = [db.DSTETensor(other) for _ in range(int(sys.argv[1]))]
    wrapper = pickle.loads(sys.stdin.buffer.read())
    x = np.random.default_rng(0).standard_normal((30, 4)).astype(np.float32)
    y = db.spmm(wrapper, torch.from_numpy(x), backend="nkisim").numpy()
    print(float(np.abs(y - reference_matrix(wrapper.matrix) @ x).max()))
""")


def test_unpickled_wrapper_runs_its_own_matrix_on_the_kernel_backend():
    """A pickled DSTETensor kept its registry handle, a key valid only in the process that made it: unpickled
    in another process, the nkisim backend ran whatever matrix held that number there (an error of 7.6 on a
    product of size ~3). The error is now the kernel's: bf16 operands, (2^-7 + 2^-16) per term |a||x| with
    |a| <= 1 and 20-30 entries per row of a 40 x 30 INT8 matrix of density 0.2 gives < 0.5."""
    matrix = encode(random_sparse(40, 30, 0.2, seed=12), kinds="int8")
    wrapper = db.DSTETensor(matrix)
    result = subprocess.run([sys.executable, "-c", _UNPICKLE_ELSEWHERE, str(wrapper.handle)], input=pickle.dumps(wrapper),
                            capture_output=True, check=True, timeout=300)
    assert float(result.stdout.decode().split()[-1]) < 0.5


def test_unpickled_wrapper_names_its_own_matrix():
    matrix = encode(random_sparse(40, 30, 0.2, seed=13), kinds="int8")
    wrapper = db.DSTETensor(matrix)
    copy = pickle.loads(pickle.dumps(wrapper))
    assert copy.handle != wrapper.handle
    assert db.registry.lookup(copy.handle) is copy.matrix
    del wrapper, matrix  # the copy does not depend on the original's registration
    x = torch.randn(30, 3)
    expected = reference_matrix(copy.matrix) @ x.numpy().astype(np.float64)
    y = db.spmm(copy, x, backend="nkisim").numpy()
    bound = (2.0**-7 + 2.0**-16) * (abs(reference_matrix(copy.matrix)) @ np.abs(x.numpy())) + 1e-6
    assert (np.abs(y - expected) <= bound).all()


def test_masked_quant_takes_values_that_require_grad(monkeypatch):
    """values requiring grad with an FP16 tile: the range check read them through NumPy and raised torch's
    'Can't call numpy() on Tensor that requires grad'."""
    values = torch.randn(2, 128, 128, requires_grad=True)
    keep = torch.ones(2, 128, 128, dtype=torch.bool)
    got = db.masked_quant(values, keep, torch.tensor([0.1, 5.0]), 1.0, backend="cpu")
    expected = db.masked_quant(values.detach(), keep, torch.tensor([0.1, 5.0]), 1.0, backend="cpu")
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)


def test_compiled_first_call_on_a_bare_matrix(int8_matrix):
    """A compiled function's first dste.spmm on a DSTEMatrix traced the operands' NumPy build and failed inside the
    fake-tensor machinery ('self.stride(-1) must be 1 to view UInt32 as Byte'); now the build runs eagerly (a graph
    break), fullgraph=True refuses it by name, and a matrix whose operands were built compiles whole."""
    reference = reference_matrix(int8_matrix)
    x = torch.randn(30, 3)
    expected = reference @ x.numpy().astype(np.float64)
    fresh = int8_matrix.replace()
    got = torch.compile(lambda t: db.spmm(fresh, t, backend="cpu"), backend="aot_eager")(x)
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-5)  # float32 sums of ~10 terms of size ~1
    unbuilt = int8_matrix.replace()
    whole = torch.compile(lambda t: db.spmm(unbuilt, t, backend="cpu"), backend="aot_eager", fullgraph=True)
    with pytest.raises(Exception, match="operands are not built yet"):
        whole(x)
    db.spmm(unbuilt, x, backend="cpu")
    torch._dynamo.reset()
    np.testing.assert_allclose(whole(x).numpy(), expected, rtol=0, atol=1e-5)


def test_kernel_backend_refuses_a_handle_of_another_matrix(int8_matrix):
    """The kernel multiplies the matrix its handle names, the backward the CSR operands: with the handle of
    another matrix (here: the same matrix under a new mask, same shape) the forward was that matrix's product
    and the gradient this one's."""
    a = db.DSTETensor(int8_matrix)
    other = db.DSTETensor(int8_matrix.with_mask(sp.eye(40, 30, dtype=bool)))
    x = torch.randn(30, 2)
    with pytest.raises(ValueError, match="handle"):
        torch.ops.dste.spmm_hybrid(*a.op_operands, x, other.handle, -1, "nkisim")
    y = torch.ops.dste.spmm_hybrid(*other.op_operands, x, other.handle, -1, "nkisim")
    assert y.shape == (40, 2)


def test_kernel_backend_refuses_x_that_bf16_rounds_to_inf():
    """A finite float32 X from half a bf16 step past bf16's largest value on (3.3961775e38) became Inf in the
    kernel's bf16 gather, and the product NaN, where the cpu backend gives 0.5 x 3.4e38; the value just below
    rounds to bf16's largest finite value and stays finite."""
    matrix = encode(sp.csr_matrix(np.eye(4, dtype=np.float32) * 0.5))
    overflowing = np.float32(2.0**127 * (2 - 2.0**-8))
    with pytest.raises(ValueError, match="bf16"):
        db.spmm(matrix, torch.full((4, 2), float(overflowing)), backend="nkisim")
    largest_kept = np.nextafter(overflowing, np.float32(0))
    y = db.spmm(matrix, torch.full((4, 2), float(largest_kept)), backend="nkisim").numpy()
    # the gather rounds to bf16's largest finite value (2 - 2^-7) 2^127; 0.5 times it is exact in float32
    np.testing.assert_array_equal(y[:, 0], np.float32(0.5 * 2.0**127 * (2 - 2.0**-7)))
    np.testing.assert_array_equal(db.spmm(matrix, torch.full((4, 2), float(overflowing)), backend="cpu").numpy(),
                                  np.float32(0.5) * overflowing)


@pytest.mark.parametrize("backend", ["cpu", "nkisim"])
def test_mask_change_between_forward_and_backward(backend):
    """A new keep-mask (``with_mask``, no re-quantization) after a forward: the pending backward still uses the
    forward's matrix, and every later product -- bare matrix (operands kept on it), wrapper, registry handle --
    is the new mask's, against SciPy on the reference decode of each matrix."""
    rng = np.random.default_rng(22)  # not the matrix's seed: its mask would hold the matrix's own pattern
    matrix = encode(random_sparse(140, 150, 0.1, seed=21), kinds="int8")
    wrapper = db.DSTETensor(matrix)
    x = torch.randn(150, 4, dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(140, 4, dtype=torch.float64)
    y_old = db.spmm(matrix, x, backend=backend)
    masked = matrix.with_mask(sp.random(140, 150, density=0.5, random_state=rng, format="csr") != 0)
    old, new = reference_matrix(matrix), reference_matrix(masked)
    assert (old != new).nnz > 0
    y_old.backward(grad_out)
    np.testing.assert_allclose(x.grad.numpy(), old.T @ grad_out.numpy(), rtol=0, atol=ATOL_FLOAT64_X)
    x_values = x.detach().numpy()
    # cpu: float32 values against float64 ones; nkisim: bf16 operands, (2^-7 + 2^-16) per term |a||x|
    bound = ATOL_FLOAT64_X + (0 if backend == "cpu" else (2.0**-7 + 2.0**-16) * (abs(new) @ np.abs(x_values)))
    for operand in (masked, wrapper.with_mask(masked.keep_bits if not masked.n_etiles else
                                              (masked.keep_bits, masked.etile_keep_bits)), db.DSTETensor(masked)):
        y_new = db.spmm(operand, x, backend=backend).detach().numpy()
        assert (np.abs(y_new - new @ x_values) <= bound).all()
    y_again = db.spmm(matrix, x.detach(), backend=backend).numpy()  # the old matrix keeps its own operands
    bound_old = ATOL_FLOAT64_X + (0 if backend == "cpu" else (2.0**-7 + 2.0**-16) * (abs(old) @ np.abs(x_values)))
    assert (np.abs(y_again - old @ x_values) <= bound_old).all()


@pytest.mark.parametrize("backend", ["cpu", "nkisim"])
def test_a_first_call_under_inference_mode_leaves_the_matrix_usable_with_autograd(backend):
    """The first call builds the matrix's operands and keeps them on it; built under torch.inference_mode they were
    inference tensors, and every later call with autograd failed ("Inference tensors cannot be saved for
    backward"). The gradient is then A^T @ G against the float64 reference."""
    A = encode(random_sparse(40, 30, 0.2, seed=12), kinds="int8")
    with torch.inference_mode():
        db.spmm(A, torch.ones(30, 3), backend=backend)
    x = torch.randn(30, 3, dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(40, 3, dtype=torch.float64)
    db.spmm(A, x, backend=backend).backward(grad_out)
    expected = reference_matrix(A).T @ grad_out.numpy()
    np.testing.assert_allclose(x.grad.numpy(), expected, atol=ATOL_FLOAT64_X, rtol=0)


def test_vectorized_forward_mode_jacobian_is_refused_with_the_ways_that_work(int8_matrix):
    # jacobian(vectorize=True, strategy="forward-mode") vmaps dual tensors with torch's legacy vmap, which cannot
    # unpack them; jacfwd computes the same Jacobian, which for a linear map is the matrix itself
    def column(v):
        return db.spmm(int8_matrix, v[:, None], backend="cpu")[:, 0]

    v = torch.randn(30, dtype=torch.float64)
    with pytest.raises(NotImplementedError, match="jacfwd"):
        torch.autograd.functional.jacobian(column, v, vectorize=True, strategy="forward-mode")
    np.testing.assert_allclose(torch.func.jacfwd(column)(v).numpy(), reference_matrix(int8_matrix).toarray(),
                               atol=ATOL_FLOAT64_X)
