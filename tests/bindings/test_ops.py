"""The ``dste::spmm_hybrid`` and ``dste::masked_quant`` custom ops: opcheck, gradients, torch.compile."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dste.bindings as db
from dste.bindings import registry
from dste.reference import reference_matrix, spmm_error_bound, spmm_reference

from .conftest import StandInMatrix, random_sparse


def _operands(matrix):
    a = db.DSTETensor(matrix)
    return a, a.op_operands


def test_opcheck_spmm_hybrid(small_matrix):
    a, csr = _operands(small_matrix)
    x = torch.randn(a.shape[1], 5, requires_grad=True)
    torch.library.opcheck(
        torch.ops.dste.spmm_hybrid.default, (*csr, x, a.handle, registry.NO_HANDLE, "cpu")
    )


def test_opcheck_spmm_transpose(small_matrix):
    a, csr = _operands(small_matrix)
    grad = torch.randn(a.shape[0], 3, requires_grad=True)
    torch.library.opcheck(torch.ops.dste.spmm_transpose.default, (*csr, grad, a.shape[1]))


def test_opcheck_masked_quant():
    """The op's plumbing (schema, fake shapes/dtypes, slot expansion) on its cpu path (``masked_quant_host``); its
    values are checked against the reference in test_backends."""
    tiles = 3
    values = torch.randn(tiles, 128, 128)
    keep = torch.rand(tiles, 128, 128) > 0.5
    sensitivity = torch.tensor([0.1, 2.0, 0.5])
    torch.library.opcheck(torch.ops.dste.masked_quant.default, (values, keep, sensitivity, 1.0, "cpu"))


def _stand_in_encoder(values, keep, sensitivity, threshold, backend):
    kind = np.where(sensitivity > threshold, 2, 1).astype(np.uint8)
    kept = np.where(keep, values, 0.0)
    scale = np.abs(kept[kind == 1]).max(axis=(1, 2)) / 127
    q = np.clip(np.rint(kept[kind == 1] / scale[:, None, None]), -127, 127).astype(np.int8)
    bits = (keep.reshape(*keep.shape[:2], 4, 32).astype(np.uint64) << np.arange(32, dtype=np.uint64)).sum(-1)
    return bits.astype(np.uint32), kind, q, scale.astype(np.float32), kept[kind == 2].astype(np.float16)


def test_masked_quant_wrapper_compacts_slots(monkeypatch):
    monkeypatch.setattr(db.ops, "_run_masked_quant", _stand_in_encoder)
    values = np.random.default_rng(0).standard_normal((4, 128, 128)).astype(np.float32)
    keep = np.ones_like(values, dtype=bool)
    sens = np.array([0.0, 5.0, 0.0, 5.0], np.float32)
    expected = _stand_in_encoder(values, keep, sens, 1.0, "cpu")
    got = db.masked_quant(values, keep, sens, 1.0, backend="cpu")
    for e, g in zip(expected, got):
        assert g.dtype == e.dtype and g.shape == e.shape
        np.testing.assert_array_equal(g, e)


def test_gradcheck_x_float64():
    csr = random_sparse(40, 30, 0.2, seed=2)
    a = db.DSTETensor(StandInMatrix(csr))
    x = torch.randn(30, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: db.spmm(a, t, backend="cpu"), (x,))
    assert torch.autograd.gradgradcheck(lambda t: db.spmm(a, t, backend="cpu"), (x,))


def test_gradient_is_transpose_product(small_matrix):
    a = db.DSTETensor(small_matrix)
    x = torch.randn(a.shape[1], 6, requires_grad=True)
    grad_out = torch.randn(a.shape[0], 6)
    db.spmm(a, x, backend="cpu").backward(grad_out)
    # A from the matrix's public arrays by the independent reference, not the operands the backward multiplies by
    expected = reference_matrix(small_matrix).T @ grad_out.double().numpy()
    # fp32 sums of <= 200 terms of size O(1): 1e-5 relative is ~100 ulps of headroom.
    np.testing.assert_allclose(x.grad.double().numpy(), expected, rtol=1e-5, atol=1e-5)


def test_compile_fullgraph(small_matrix):
    a = db.DSTETensor(small_matrix)
    weight = torch.randn(16, 8)

    def layer(x):
        return torch.relu(db.spmm(a, x @ weight, backend="cpu")) + 1.0

    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    x = torch.randn(a.shape[1], 16, requires_grad=True)
    eager = layer(x)
    got = compiled(x)
    torch.testing.assert_close(got, eager)
    got.sum().backward()
    grad_compiled = x.grad.clone()
    x.grad = None
    eager.sum().backward()
    torch.testing.assert_close(grad_compiled, x.grad)


def test_compile_fullgraph_wrapper_argument_and_dynamic_shapes(small_matrix):
    """The wrapper passed as an argument; ``adj.spmm(x)`` (the ``@`` operator on a non-Tensor object is
    not traceable by Dynamo, so compiled code uses the method or ``dste.spmm``)."""
    a = db.DSTETensor(small_matrix)
    compiled = torch.compile(
        lambda adj, x: adj.spmm(x).sum(dim=1), fullgraph=True, backend="aot_eager", dynamic=True
    )
    for features in (3, 7):
        x = torch.randn(a.shape[1], features)
        # fp32, <= 200-term sums of O(1) values: 1e-5 covers summation-order differences.
        expected = torch.from_numpy((reference_matrix(small_matrix) @ x.double().numpy()).sum(axis=1)).float()
        torch.testing.assert_close(compiled(a, x), expected, rtol=1e-5, atol=1e-5)


def test_op_rejects_unresolved_backend(small_matrix):
    a, csr = _operands(small_matrix)
    with pytest.raises(ValueError, match="resolve 'auto'"):
        torch.ops.dste.spmm_hybrid(*csr, torch.zeros(a.shape[1], 2), a.handle, -1, "auto")


def test_raw_op_refuses_operands_its_backward_or_its_host_path_cannot_take(small_matrix):
    """Each passed the op's check and then crashed with torch's or SciPy's message (a bfloat16 values tensor, a
    sparse x), or ran a forward whose backward SciPy refused (crow_indices not starting at 0: the entries before its
    first value were silently left out)."""
    a, (crow, col, values, row_perm, col_perm) = _operands(small_matrix)
    x = torch.randn(a.shape[1], 2)
    with pytest.raises(ValueError, match="values must be a float16/float32/float64"):
        torch.ops.dste.spmm_hybrid(crow, col, values.bfloat16(), row_perm, col_perm, x, -1, -1, "cpu")
    for sparse in (x.to_sparse(), x.to_sparse_csr()):
        with pytest.raises(ValueError, match="x must be a dense \\(strided\\) tensor"):
            torch.ops.dste.spmm_hybrid(crow, col, values, row_perm, col_perm, sparse, -1, -1, "cpu")
    with pytest.raises(ValueError, match="grad must be a dense"):
        torch.ops.dste.spmm_transpose(crow, col, values, row_perm, col_perm, torch.randn(a.shape[0], 2).to_sparse(),
                                      a.shape[1])
    shifted = crow.clone()
    shifted[0] = 1
    with pytest.raises(ValueError, match="crow_indices must start at 0, got 1"):
        torch.ops.dste.spmm_hybrid(shifted, col, values, row_perm, col_perm, x, -1, -1, "cpu")
    # float64 values stay accepted (they hold the float32 ones exactly: the same product)
    expected = torch.ops.dste.spmm_hybrid(crow, col, values, row_perm, col_perm, x, -1, -1, "cpu")
    got = torch.ops.dste.spmm_hybrid(crow, col, values.double(), row_perm, col_perm, x, -1, -1, "cpu")
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def test_kernel_backend_needs_a_live_handle(small_matrix):
    a, csr = _operands(small_matrix)
    with pytest.raises(ValueError, match="needs the encoded DSTEMatrix"):
        torch.ops.dste.spmm_hybrid(*csr, torch.zeros(a.shape[1], 2), -1, -1, "nkisim")
    with pytest.raises(LookupError, match="names no live object"):
        torch.ops.dste.spmm_hybrid(*csr, torch.zeros(a.shape[1], 2), 10**9, -1, "nkisim")


def test_kernel_backend_refuses_a_handle_of_another_matrix_with_the_same_shape_and_count(small_matrix):
    # the kernel multiplies the handle's matrix, the backward the operands': a mismatch gives one product forward
    # and another's gradient, so equal shape and kept count are not enough
    dense = small_matrix.decode().toarray() != 0
    keep_first, keep_second = dense.copy(), dense.copy()
    rows, cols = np.nonzero(dense)
    keep_first[rows[0], cols[0]] = False
    keep_second[rows[-1], cols[-1]] = False
    first, second = db.DSTETensor(small_matrix.with_mask(keep_first)), db.DSTETensor(small_matrix.with_mask(keep_second))
    x = torch.randn(first.shape[1], 3)
    with pytest.raises(ValueError, match="col_indices differ|crow_indices differ|values differ"):
        torch.ops.dste.spmm_hybrid(*first.op_operands, x, second.handle, -1, "nkisim")
    # the handle of a second wrapper of the same matrix is accepted, its operands being equal
    y = torch.ops.dste.spmm_hybrid(*first.op_operands, x, db.DSTETensor(first.matrix).handle, -1, "nkisim")
    # against the independent reference of the first matrix, within the kernel's own error bound
    error = np.abs(y.numpy().astype(np.float64) - spmm_reference(first.matrix, x.numpy()))
    assert (error <= spmm_error_bound(first.matrix, x.numpy())).all()


def test_kernel_backend_refuses_an_x_handle_whose_rows_are_not_x(small_matrix):
    import dste

    a = db.DSTETensor(small_matrix)
    rng = np.random.default_rng(3)
    x_one, x_two = (rng.standard_normal((a.shape[1], 4)).astype(np.float32) for _ in range(2))
    other_rows = dste.quantize_rows(x_two)
    handle = registry.register(other_rows)
    try:
        with pytest.raises(ValueError, match="dequantize\\(\\) differs from the x passed"):
            torch.ops.dste.spmm_hybrid(*a.op_operands, torch.from_numpy(x_one), a.handle, handle, "nkisim")
    finally:
        registry.release(handle)


@pytest.mark.parametrize("backend", ["cpu", "nkisim"])
def test_masked_quant_refuses_a_tile_whose_int8_scale_would_be_subnormal(backend):
    # a tile of kept values near 1e-37 has scale amax / 127 below float32's smallest normal; the cpu path used to
    # return every entry as +-127 steps of that scale (1e-37 read back as 2e-37) where the kernel path refuses
    import dste

    values = np.zeros((1, 128, 128), np.float32)
    values[0, :, :3] = np.array([1e-37, 2e-37, -0.5e-37], np.float32)
    keep = np.zeros(values.shape, bool)
    keep[0, :, :3] = True
    with pytest.raises(ValueError, match="INT8 scale would be subnormal"):
        dste.masked_quant(values, keep, np.zeros(1, np.float32), 0.5, backend=backend)


@pytest.mark.parametrize("backend", ["cpu", "nkisim"])
def test_masked_quant_reads_a_huge_float64_sensitivity_as_above_every_threshold_and_refuses_an_infinite_one(backend):
    import dste

    values = np.random.default_rng(0).standard_normal((2, 128, 128)).astype(np.float32)
    keep = np.ones(values.shape, bool)
    # 1e300 is finite in float64 and beyond float32: above the threshold, as the kernel's launcher reads it
    _, kind, *_ = dste.masked_quant(values, keep, np.array([1e300, 0.0]), 0.5, backend=backend)
    assert kind.tolist() == [2, 1]  # FP16, INT8
    for threshold in (np.inf, -np.inf):
        with pytest.raises(ValueError, match="threshold must be finite"):
            dste.masked_quant(values, keep, np.zeros(2, np.float32), threshold, backend=backend)


def test_launch_quantize_rows_names_a_non_finite_threshold():
    from dste.kernels.launch_quant import launch_quantize_rows

    with pytest.raises(ValueError, match="threshold must be a finite number, got nan"):
        launch_quantize_rows(np.ones((4, 8), np.float32), np.zeros(4), threshold=float("nan"))
