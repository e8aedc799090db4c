"""Fuzz: dste.spmm (cpu, nkisim), the masked_quant launcher, save/load round trips and corrupted files."""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import dste
from dste.format import DSTEFileError, DSTEFormatError, encode, gcn_normalized, load
from dste.reference.masked_quant import masked_quant_reference

from .files import scratch_folder
from .strategies import examples, sparse_values


def _encoded(A, kinds):
    try:
        return encode(A, kinds=kinds)
    except DSTEFormatError as error:
        assert len(str(error)) > 20
        return None


@settings(max_examples=examples(150))
@given(A=sparse_values(max_n=60, max_m=60), f=st.integers(1, 9), seed=st.integers(0, 2**31 - 1),
       kinds=st.sampled_from(["faithful", "auto", "bin"]))
def test_cpu_spmm_matches_scipy_on_the_encoded_values(A, f, seed, kinds):
    E = _encoded(A, kinds)
    if E is None:
        return
    x = np.random.default_rng(seed).standard_normal((A.shape[1], f)).astype(np.float32)
    y = dste.spmm(E, x, backend="cpu").numpy()
    decoded = E.decode().astype(np.float64)
    expected = decoded @ x.astype(np.float64)
    # fp32 products and sums of exact float32 values: a few ulps of the absolute sum per output
    scale = abs(decoded) @ np.abs(x.astype(np.float64))
    assert np.isfinite(y).all()
    assert (np.abs(y - expected) <= 2e-6 * scale + 1e-30).all()


@settings(max_examples=examples(150))
@given(A=sparse_values(max_n=40, max_m=40), f=st.integers(0, 5))
def test_cpu_spmm_refuses_mismatched_or_bad_operands(A, f):
    E = _encoded(A, "faithful")
    if E is None:
        return
    with pytest.raises((ValueError, TypeError, RuntimeError)) as info:
        dste.spmm(E, np.ones((A.shape[1] + 1, f), np.float32), backend="cpu")
    assert str(info.value)
    if A.shape[1] and f:
        x = np.ones((A.shape[1], f), np.float32)
        x[0, 0] = np.nan
        try:
            y = dste.spmm(E, x, backend="cpu").numpy()
        except (ValueError, TypeError) as error:
            assert str(error)
        else:  # NaN input may propagate, but only where the NaN row is used
            used = np.asarray(abs(E.decode())[:, 0].todense()).ravel() > 0
            assert np.isfinite(y[~used]).all()


@settings(max_examples=examples(6))
@given(A=sparse_values(max_n=40, max_m=40), f=st.integers(1, 4), seed=st.integers(0, 2**31 - 1))
def test_nkisim_spmm_within_the_kernel_bound(A, f, seed):
    E = _encoded(A, "faithful")
    if E is None or E.nnz_kept == 0:
        return
    x = np.random.default_rng(seed).standard_normal((A.shape[1], f)).astype(np.float32)
    y = dste.spmm(E, x, backend="nkisim").numpy()
    decoded = E.decode().astype(np.float64)
    expected = decoded @ x.astype(np.float64)
    # the kernel's documented bound for fp32 X (tests/kernels/error_bounds.py): (2^-7 + 2^-16) sum |a||x|
    bound = (2.0**-7 + 2.0**-16) * (abs(decoded) @ np.abs(x.astype(np.float64)))
    assert (np.abs(y - expected) <= bound + 1e-30).all()


@settings(max_examples=examples(6))
@given(A=sparse_values(max_n=300, max_m=300), f=st.integers(1, 4), seed=st.integers(0, 2**31 - 1))
def test_nkisim_spmm_with_a_unit_diagonal_within_the_kernel_bound(A, f, seed):
    """The diagonal added per window by the kernel, against SciPy's D^-1/2 (A + I) D^-1/2 built apart."""
    n = min(A.shape)
    if n == 0:
        return
    adj = (abs(A[:n, :n]) + abs(A[:n, :n]).T).tocsr() != 0  # the 0/1 pattern gcn_normalized reads
    E = gcn_normalized(adj, unit_diagonal=True)
    structure = ((adj != 0) + sp.eye(n, format="csr")).astype(np.float64)
    structure.data[:] = 1.0
    d = 1.0 / np.sqrt(np.asarray(structure.sum(axis=1)).ravel())
    expected_matrix = sp.diags(d) @ structure @ sp.diags(d)
    x = np.random.default_rng(seed).standard_normal((n, f)).astype(np.float32)
    y = dste.spmm(E, x, backend="nkisim").numpy()
    expected = expected_matrix @ x.astype(np.float64)
    bound = (2.0**-7 + 2.0**-16) * (abs(expected_matrix) @ np.abs(x.astype(np.float64))) + 4 * 2.0**-24 * np.abs(expected)
    assert (np.abs(y - expected) <= bound + 1e-30).all()


@settings(max_examples=examples(5))
@given(seed=st.integers(0, 2**31 - 1), tiles=st.integers(1, 3), keep_fraction=st.sampled_from([0.0, 0.5, 1.0]),
       magnitude=st.sampled_from([1e-3, 1.0, 1e4]))
def test_masked_quant_launcher_matches_its_reference(seed, tiles, keep_fraction, magnitude):
    from dste.kernels import launch_masked_quant as masked_quant

    rng = np.random.default_rng(seed)
    values = (rng.standard_normal((tiles, 128, 128)) * magnitude).astype(np.float32)
    keep = rng.random(values.shape) < keep_fraction
    sensitivity = rng.random(tiles).astype(np.float32) * 0.04
    got = masked_quant(values, keep, sensitivity, 0.02)
    want = masked_quant_reference(values, keep, sensitivity, 0.02)
    for name, g, w in zip(("keep_bits", "kind", "int8_values", "int8_scale", "fp16_values"), got, want):
        g, w = np.asarray(g), np.asarray(w)
        assert g.shape == w.shape and g.dtype == w.dtype, name
        if name == "int8_values":  # a reciprocal multiply may differ by one step at exact ties
            assert np.abs(g.astype(np.int16) - w.astype(np.int16)).max(initial=0) <= 1, name
        elif name == "int8_scale":
            np.testing.assert_allclose(g, w, rtol=2.0**-23, err_msg=name)
        else:
            np.testing.assert_array_equal(g, w, err_msg=name)


@settings(max_examples=examples(40))
@given(seed=st.integers(0, 2**31 - 1), bad=st.sampled_from(["nan", "shape", "keep", "sensitivity", "threshold"]))
def test_masked_quant_launcher_refuses_bad_input(seed, bad):
    from dste.kernels import launch_masked_quant as masked_quant

    rng = np.random.default_rng(seed)
    values = rng.standard_normal((1, 128, 128)).astype(np.float32)
    keep, sensitivity, threshold = values != 0, np.zeros(1, np.float32), 0.02
    if bad == "nan":
        values[0, rng.integers(128), rng.integers(128)] = np.nan
    elif bad == "shape":
        values = values[:, :, :100]
    elif bad == "keep":
        keep = keep.astype(np.uint8)
    elif bad == "sensitivity":
        sensitivity = np.zeros(2, np.float32)
    else:
        threshold = float("nan")
    with pytest.raises(ValueError) as info:
        masked_quant(values, keep, sensitivity, threshold)
    assert len(str(info.value)) > 15


@pytest.fixture(scope="module")
def saved_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    A = sp.random(150, 140, density=0.05, random_state=rng, format="csr")
    E = encode(A, kinds="auto")
    path = tmp_path_factory.mktemp("io") / "m.dste.npz"
    E.save(path)
    return E, path.read_bytes()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """One folder for every example's file, overwritten by each example (a folder per example left hundreds
    of folders per run to create and later delete); a stale file would not equal the example's matrix."""
    with scratch_folder(tmp_path_factory, "fuzz-scratch") as folder:  # in memory where possible (tests/fuzz/files.py)
        yield folder


@settings(max_examples=examples(100))
@given(A=sparse_values(max_n=50, max_m=50), kinds=st.sampled_from(["faithful", "auto", "bin", "int8"]))
def test_save_load_round_trip_is_exact(A, kinds, scratch):
    E = _encoded(A, kinds)
    if E is None:
        return
    path = scratch / "round-trip.npz"
    E.save(path)
    L = load(path)
    assert L.shape == E.shape and L.encode_policy == E.encode_policy
    np.testing.assert_array_equal(L.to_dense(), E.to_dense())


@settings(max_examples=examples(40))
@given(A=sparse_values(max_n=50, max_m=50))
def test_a_unit_diagonal_survives_the_round_trip(A, scratch):
    n = min(A.shape)
    adj = (abs(A[:n, :n]) + abs(A[:n, :n]).T).tocsr() != 0  # the 0/1 pattern gcn_normalized reads
    E = gcn_normalized(adj, unit_diagonal=True)
    path = scratch / "unit-diagonal.npz"
    E.save(path)
    L = load(path)
    assert L.unit_diagonal and L.nnz_stored == E.nnz_stored
    np.testing.assert_array_equal(L.to_dense(), E.to_dense())


@settings(max_examples=examples(150))
@given(data=st.data())
def test_a_corrupted_file_is_refused_or_loads_unchanged(saved_file, data, scratch):
    E, original = saved_file
    corrupt = bytearray(original)
    how = data.draw(st.sampled_from(["flip", "truncate", "zero"]))
    if how == "truncate":
        corrupt = corrupt[: data.draw(st.integers(0, len(original) - 1))]
    else:
        for _ in range(data.draw(st.integers(1, 4))):
            offset = data.draw(st.integers(0, len(original) - 1))
            corrupt[offset] = 0 if how == "zero" else corrupt[offset] ^ data.draw(st.integers(1, 255))
    path = scratch / "corrupted.npz"
    path.write_bytes(bytes(corrupt))
    try:
        L = load(path)
    except DSTEFileError as error:
        assert str(path) in str(error)
        return
    np.testing.assert_array_equal(L.to_dense(), E.to_dense())  # bytes the archive does not use
    assert L.encode_policy == E.encode_policy
