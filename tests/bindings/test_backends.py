"""cpu and nkisim backends against ``dste.reference`` on small encoded graphs."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import dste.bindings as db

import dste.format as format_mod
from dste.kernels import launch_spmm_hybrid as spmm_hybrid
from dste.reference.spmm import spmm_reference as reference_spmm
from tests.kernels.error_bounds import assert_within_bound, error_bound


def _matrices():
    rng = np.random.default_rng(7)
    adj = sp.random(200, 200, density=0.03, random_state=rng, format="csr")
    adj = ((adj + adj.T) > 0).astype(np.float32)
    gcn = format_mod.gcn_normalized(adj)
    from dste.format.encoder import encode

    weights = sp.random(150, 130, density=0.2, random_state=rng, format="csr", dtype=np.float32)
    weights.data = (weights.data * 2 - 1).astype(np.float32)
    valued = encode(weights, fp16_threshold=0.02)
    return {"gcn_bin_scaled": gcn, "int8_fp16_valued": valued}


# cpu: the effective CSR is the exact encoded values rounded once to fp32, so against the float64 reference
# the only error is fp32 rounding of values and sums (~1e-6 relative). 1e-5 leaves headroom.
CPU_TOL = dict(rtol=1e-5, atol=1e-5)
# nkisim: the simulated kernel rounds its operands to 16 bits (bf16 stationary, bf16/fp16 moving), so it is
# held to the kernel's documented bound, derived in tests/kernels/error_bounds.py: per output element
# (2^-7 + 2^-16) * sum_k |a_ik| |x_kj| for fp32 X and (2^-8 + 2^-11 + 2^-18) * sum_k |a_ik| |x_kj| for
# hybrid-row X.


@pytest.mark.parametrize("name", ["gcn_bin_scaled", "int8_fp16_valued"])
def test_cpu_backend_matches_reference(name):
    matrix = _matrices()[name]
    x = np.random.default_rng(1).standard_normal((matrix.shape[1], 24)).astype(np.float32)
    expected = reference_spmm(matrix, x)
    got = db.spmm(matrix, torch.from_numpy(x), backend="cpu").double().numpy()
    np.testing.assert_allclose(got, expected, **CPU_TOL)


def test_cpu_backend_hybrid_rows_matches_reference():
    matrix = _matrices()["gcn_bin_scaled"]
    x = np.random.default_rng(2).standard_normal((matrix.shape[1], 16)).astype(np.float32)
    x[3] *= 50  # an outlier row goes FP16
    rows = format_mod.quantize_rows(x, threshold=0.02)
    expected = reference_spmm(matrix, rows)
    np.testing.assert_allclose(db.spmm(matrix, rows, backend="cpu").double().numpy(), expected, **CPU_TOL)


@pytest.mark.parametrize("name", ["gcn_bin_scaled", "int8_fp16_valued"])
def test_nkisim_backend_returns_the_kernel_result(name):
    """The op adds nothing to the simulated kernel: bit-identical to calling the launcher directly."""
    from dste import nkisim

    nkisim.install()
    matrix = _matrices()[name]
    x = np.random.default_rng(3).standard_normal((matrix.shape[1], 8)).astype(np.float32)
    direct = np.asarray(spmm_hybrid(matrix, x), dtype=np.float32)
    np.testing.assert_array_equal(db.spmm(matrix, torch.from_numpy(x), backend="nkisim").numpy(), direct)


@pytest.mark.parametrize("name", ["gcn_bin_scaled", "int8_fp16_valued"])
def test_nkisim_backend_matches_reference_and_cpu(name):
    matrix = _matrices()[name]
    x = np.random.default_rng(3).standard_normal((matrix.shape[1], 8)).astype(np.float32)
    expected = reference_spmm(matrix, x)
    simulated = db.spmm(matrix, torch.from_numpy(x), backend="nkisim").double().numpy()
    cpu = db.spmm(matrix, torch.from_numpy(x), backend="cpu").double().numpy()
    assert_within_bound(simulated, expected, matrix, x)
    # against the cpu backend: the kernel's bound plus the cpu backend's own tolerance (triangle inequality)
    np.testing.assert_allclose(cpu, expected, **CPU_TOL)
    cpu_slack = CPU_TOL["atol"] + CPU_TOL["rtol"] * np.abs(expected)
    assert_within_bound(simulated, cpu, matrix, x, slack=cpu_slack)
    # the bound is not vacuous: it stays far below the result's scale
    assert error_bound(matrix, x).max() < 0.02 * np.abs(expected).max()


def test_the_kernel_backend_leaves_sys_modules_alone_and_takes_x_of_no_columns(monkeypatch):
    """The launchers load the kernel files against the simulator themselves: a call registers no ``nki``
    (tests/nkisim's conftest installs it at collection, so it is taken out for this test and put back after)."""
    import sys

    for name in ("nki", "nki.language", "nki.isa", "nki.typing"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    matrix = format_mod.encode(sp.random(64, 64, density=0.1, format="csr", random_state=0))
    x = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    db.spmm(matrix, x, backend="nkisim")
    db.masked_quant(np.ones((1, 128, 128), np.float32), np.ones((1, 128, 128), bool), np.zeros(1, np.float32), 0.02,
                    backend="nkisim")
    assert "nki" not in sys.modules
    for backend in ("nkisim", "cpu"):  # Y = A @ X of no columns: [N, 0], as torch gives it
        assert db.spmm(matrix, np.zeros((64, 0), np.float32), backend=backend).shape == (64, 0)


def test_nkisim_backend_hybrid_rows():
    matrix = _matrices()["gcn_bin_scaled"]
    x = np.random.default_rng(4).standard_normal((matrix.shape[1], 8)).astype(np.float32)
    x[10] *= 40
    # the sensitivity is scale-free, so the outlier row alone does not cross T; ask for 5 % FP16 rows so
    # the kernel's FP16-row gathers run
    rows = format_mod.quantize_rows(x, fp16_fraction=0.05)
    assert rows.hi.shape[0] == 10, "expected 10 FP16 rows in the hybrid X"
    got = db.spmm(matrix, rows, backend="nkisim").double().numpy()
    assert_within_bound(got, reference_spmm(matrix, rows), matrix, rows)


def test_masked_quant_cpu_matches_reference():
    from dste.reference.masked_quant import masked_quant_reference as reference

    rng = np.random.default_rng(5)
    values = rng.standard_normal((3, 128, 128)).astype(np.float32)
    values[2, 0, 0] = 500.0  # an outlier: high sensitivity, FP16 tile
    keep = rng.random((3, 128, 128)) > 0.3
    sensitivity = np.array([0.001, 0.01, 0.5], np.float32)
    expected = reference(values, keep, sensitivity, 0.02)
    got = db.masked_quant(values, keep, sensitivity, 0.02, backend="cpu")
    bits, kind, int8_values, int8_scale, fp16_values = (np.asarray(e) for e in expected)
    int8_tiles, fp16_tiles = kind == 1, kind == 2  # the wrapper returns slot-compacted arrays
    for e, g in zip((bits, kind, int8_values[int8_tiles], int8_scale[int8_tiles], fp16_values[fp16_tiles]), got):
        np.testing.assert_array_equal(g, e)
    torch.library.opcheck(
        torch.ops.dste.masked_quant.default,
        (torch.from_numpy(values), torch.from_numpy(keep), torch.from_numpy(sensitivity), 0.02, "cpu"),
    )


def test_masked_quant_refuses_an_fp16_tile_value_beyond_float16_instead_of_saturating_it():
    rng = np.random.default_rng(6)
    values = rng.standard_normal((2, 128, 128)).astype(np.float32)
    values[1, 3, 4] = 1e6  # tile 1 is FP16 (sensitivity 0.5 > 0.02); float16 holds at most 65504
    keep = np.ones(values.shape, bool)
    sensitivity = np.array([0.001, 0.5], np.float32)
    with pytest.raises(ValueError, match=r"tile 1 becomes an FP16 tile .* magnitude 1e\+06, beyond float16"):
        db.masked_quant(values, keep, sensitivity, 0.02, backend="cpu")
    keep[1, 3, 4] = False  # a dropped entry is not stored: accepted
    assert db.masked_quant(values, keep, sensitivity, 0.02, backend="cpu")[1].tolist() == [1, 2]
    values[1, 3, 4], keep[1, 3, 4] = 1e6, True
    sensitivity[1] = 0.0  # an INT8 tile keeps 1e6 through its scale: accepted
    assert db.masked_quant(values, keep, sensitivity, 0.02, backend="cpu")[1].tolist() == [1, 1]


def test_backend_lookups_carry_the_marker_of_torchs_own_assume_constant_result(monkeypatch):
    """``dste.bindings.backends`` marks its lookups without importing Dynamo; the marking must be exactly what
    ``torch.compiler.assume_constant_result`` does, or compiled graphs would trace the lookups instead."""
    import sys

    from dste.bindings import backends

    def probe() -> str:
        return "cpu"

    def real_marked() -> str:
        return "cpu"

    def sentinel() -> str:
        return "cpu"

    torch.compiler.assume_constant_result(real_marked)
    with monkeypatch.context() as patch:  # the branch taken when dste is imported before Dynamo
        patch.delitem(sys.modules, "torch._dynamo")
        backends._assume_constant_result(probe)
    added_by_torch = set(vars(real_marked)) - set(vars(sentinel))
    assert added_by_torch and {name: getattr(real_marked, name) for name in added_by_torch} == {
        name: getattr(probe, name, None) for name in added_by_torch
    }
    for lookup in (backends._backend_from_environment, backends._auto_backend):
        assert {name: getattr(lookup, name, None) for name in added_by_torch} == {
            name: getattr(real_marked, name) for name in added_by_torch
        }
