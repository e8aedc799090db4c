"""nki.language functions: legal uses match NumPy; documented-illegal uses are refused naming their rule."""

import warnings

import numpy as np
import pytest
from scipy import special

import dste.nkisim as sim
import dste.nkisim.rules  # noqa: F401 - sim.rules in the doc test
from dste.nkisim import language as nl
from dste.nkisim import version
from dste.nkisim.errors import ConstraintError, KernelSignatureError

RNG = np.random.default_rng(7)


def run(kernel, *arrays):
    return sim.simulate(kernel)(*arrays)


def unary_kernel(function, dtype=None):
    def kernel(x):
        out = nl.ndarray(x.shape, nl.float32, buffer=nl.shared_hbm)
        nl.store(out, function(nl.load(x), dtype=dtype) if dtype else function(nl.load(x)))
        return out

    return kernel


@pytest.mark.parametrize("name, reference", [
    ("exp", np.exp), ("log", np.log), ("sqrt", np.sqrt), ("rsqrt", lambda v: 1 / np.sqrt(v)),
    ("tanh", np.tanh), ("sigmoid", special.expit), ("relu", lambda v: np.maximum(v, 0)),
    ("square", np.square), ("abs", np.abs), ("reciprocal", lambda v: 1 / v), ("sign", np.sign),
    ("negative", np.negative), ("floor", np.floor), ("ceil", np.ceil), ("trunc", np.trunc), ("cos", np.cos),
    ("sin", np.sin), ("arctan", np.arctan), ("erf", special.erf), ("silu", lambda v: v * special.expit(v)),
    ("softplus", lambda v: np.logaddexp(0, v)), ("copy", lambda v: v),
])
def test_unary_functions_match_numpy(name, reference):
    x = RNG.uniform(0.1, 3.0, (128, 64)).astype(np.float32)
    out = run(unary_kernel(getattr(nl, name)), x)
    # fp32 in and out, exact NumPy functions inside: a few ulp of the float32 result.
    np.testing.assert_allclose(out, reference(x.astype(np.float64)), rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("name, reference", [
    ("add", np.add), ("subtract", np.subtract), ("multiply", np.multiply), ("maximum", np.maximum),
    ("minimum", np.minimum), ("power", np.power), ("greater", np.greater), ("less_equal", np.less_equal),
    ("equal", np.equal), ("logical_and", lambda a, b: np.logical_and(a > 1, b > 1)),
])
def test_binary_functions_on_two_tiles_match_numpy(name, reference):
    a = RNG.uniform(0.5, 2.0, (64, 32)).astype(np.float32)
    b = RNG.uniform(0.5, 2.0, (64, 32)).astype(np.float32)
    if name == "logical_and":
        a, b = (a > 1).astype(np.float32) * 2, (b > 1).astype(np.float32) * 2

    def kernel(x, y):
        out = nl.ndarray(x.shape, nl.float32, buffer=nl.shared_hbm)
        nl.store(out, getattr(nl, name)(nl.load(x), nl.load(y)))
        return out

    np.testing.assert_allclose(run(kernel, a, b), reference(a, b).astype(np.float32), rtol=1e-6)


def test_scalar_operand_first_is_reversed():
    a = RNG.uniform(1, 2, (32, 16)).astype(np.float32)

    def kernel(x):
        out = nl.ndarray(x.shape, nl.float32, buffer=nl.shared_hbm)
        nl.store(out, nl.subtract(10.0, nl.load(x)))
        return out

    np.testing.assert_allclose(run(kernel, a), 10.0 - a, rtol=1e-6)


def test_bitwise_and_invert_on_integers():
    a = RNG.integers(0, 2**31, (16, 8)).astype(np.int32)

    def kernel(x):
        out = nl.ndarray(x.shape, nl.int32, buffer=nl.shared_hbm)
        t = nl.load(x)
        nl.store(out, nl.invert(nl.right_shift(t, 3)))
        return out

    np.testing.assert_array_equal(run(kernel, a), np.invert(a >> 3))


@pytest.mark.parametrize("name, reference", [("sum", np.sum), ("max", np.max), ("min", np.min), ("prod", np.prod),
                                             ("mean", np.mean)])
def test_reductions_over_trailing_axes(name, reference):
    x = RNG.uniform(0.9, 1.1, (32, 4, 8)).astype(np.float32)

    def kernel(t):
        out = nl.ndarray((32, 1), nl.float32, buffer=nl.shared_hbm)
        nl.store(out, getattr(nl, name)(nl.load(t), axis=[1, 2]))
        return out

    np.testing.assert_allclose(run(kernel, x)[:, 0], reference(x.astype(np.float64), axis=(1, 2)), rtol=1e-5)


def test_var_keeps_dims_and_all():
    x = RNG.standard_normal((16, 40)).astype(np.float32)
    x[3, 5] = 0.0

    def kernel(t):
        tile = nl.load(t)
        v = nl.var(tile, axis=1)
        a = nl.all(tile, axis=1)
        out_v = nl.ndarray(v.shape, nl.float32, buffer=nl.shared_hbm)
        out_a = nl.ndarray(a.shape, nl.float32, buffer=nl.shared_hbm)
        nl.store(out_v, v)
        nl.store(out_a, a)
        return out_v, out_a

    v, a = run(kernel, x)
    assert v.shape == (16, 1)
    np.testing.assert_allclose(v[:, 0], x.astype(np.float64).var(axis=1), rtol=1e-5)
    np.testing.assert_array_equal(a[:, 0], np.all(x != 0, axis=1).astype(np.float32))


def test_softmax_and_rms_norm_match_numpy():
    x = RNG.standard_normal((64, 96)).astype(np.float32)
    w = RNG.standard_normal((64, 96)).astype(np.float32)

    def kernel(t, weight):
        tile, wt = nl.load(t), nl.load(weight)
        out_s = nl.ndarray(t.shape, nl.float32, buffer=nl.shared_hbm)
        out_r = nl.ndarray(t.shape, nl.float32, buffer=nl.shared_hbm)
        nl.store(out_s, nl.softmax(tile, axis=1))
        nl.store(out_r, nl.rms_norm(tile, wt, axis=1, n=96))
        return out_s, out_r

    s, r = run(kernel, x, w)
    x64 = x.astype(np.float64)
    e = np.exp(x64 - x64.max(axis=1, keepdims=True))
    np.testing.assert_allclose(s, e / e.sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(r, x64 / np.sqrt((x64**2).mean(axis=1, keepdims=True) + 1e-6) * w, rtol=1e-5, atol=1e-6)


def test_matmul_transpose_where_broadcast_identity():
    a = RNG.standard_normal((128, 64)).astype(np.float32)
    b = RNG.standard_normal((128, 32)).astype(np.float32)
    row = RNG.standard_normal((1, 32)).astype(np.float32)

    def kernel(x, y, r):
        tx, ty = nl.load(x), nl.load(y)
        prod = nl.copy(nl.matmul(tx, ty, transpose_x=True))
        trans = nl.copy(nl.transpose(ty))
        wide = nl.broadcast_to(nl.load(r), (128, 32))
        chosen = nl.where(nl.greater(ty, 0.0), ty, wide)
        ident = nl.shared_identity_matrix(n=8, dtype=nl.float32)
        outs = [nl.ndarray(t.shape, nl.float32, buffer=nl.shared_hbm) for t in (prod, trans, chosen, ident)]
        for o, t in zip(outs, (prod, trans, chosen, ident)):
            nl.store(o, t)
        return tuple(outs)

    prod, trans, chosen, ident = run(kernel, a, b, row)
    np.testing.assert_allclose(prod, a.T.astype(np.float64) @ b, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(trans, b.T)
    np.testing.assert_array_equal(chosen, np.where(b > 0, b, np.broadcast_to(row, b.shape)))
    np.testing.assert_array_equal(ident, np.eye(8, dtype=np.float32))


@pytest.mark.parametrize("index_dtype", [np.uint32, np.int32])
def test_creation_and_gather_flattened(index_dtype):
    # nl.gather_flattened states no index dtype (nki/api/nki/language/__init__.py L2283-2312): int32 indices too
    data = RNG.standard_normal((16, 20)).astype(np.float32)
    idx = RNG.integers(0, 20, (16, 5)).astype(index_dtype)

    def kernel(d, i):
        full = nl.full((16, 4), 2.5, nl.float32)
        ones = nl.ones((16, 4), nl.int32)
        g = nl.gather_flattened(nl.load(d), nl.load(i))
        outs = [nl.ndarray(t.shape, t.dtype, buffer=nl.shared_hbm) for t in (full, ones, g)]
        for o, t in zip(outs, (full, ones, g)):
            nl.store(o, t)
        return tuple(outs)

    full, ones, g = run(kernel, data, idx)
    np.testing.assert_array_equal(full, np.full((16, 4), 2.5, np.float32))
    np.testing.assert_array_equal(ones, np.ones((16, 4), np.int32))
    np.testing.assert_array_equal(g, np.take_along_axis(data, idx, axis=1))


def test_loops_and_buffer_queries():
    seen = []
    for i in nl.affine_range(3):
        seen.append(i)
    nl.fori_loop(0, 4, lambda index: seen.append(index.value), step=2)  # a read-only register: .value is ours
    counter = {"n": 3}

    def body(r):
        counter["n"] -= 1
        return counter["n"]

    nl.while_loop(3, body)
    assert seen == [0, 1, 2, 0, 2] and counter["n"] == 0
    with pytest.warns(DeprecationWarning, match="dynamic_range"):
        assert [i.value for i in nl.dynamic_range(2)] == [0, 1]  # read-only registers: .value is ours
    assert nl.is_sbuf(nl.sbuf) and nl.is_psum(nl.psum) and nl.is_hbm(nl.shared_hbm) and nl.is_on_chip(nl.psum)
    assert not nl.is_hbm(nl.sbuf)


# -- refusals -------------------------------------------------------------------------------------------------
def _refused(rule, fn, *arrays, error=ConstraintError):
    with pytest.raises(error, match=rf"rule {rule};"):
        run(fn, *arrays)


X = np.ones((8, 4), np.float32)


@pytest.mark.parametrize("name, rule", [("divide", "nl.divide.not-hardware"), ("mod", "nl.mod.not-hardware"),
                                        ("fmod", "nl.fmod.not-hardware"), ("abs_max", "nl.abs_max.trn3-only"),
                                        ("abs_min", "nl.abs_min.trn3-only")])
def test_not_hardware_and_trn3_functions_are_refused(name, rule):
    _refused(rule, lambda x: getattr(nl, name)(nl.load(x), nl.load(x)), X)


def test_documented_limits_of_binary_functions():
    _refused("nl.power.scalar-exponent", lambda x: nl.power(nl.load(x), 2.0), X)
    _refused("nl.binary.no-broadcast", lambda x: nl.add(nl.load(x), nl.load(x)[:, 0:1]), X)
    _refused("nl.binary.tile-operand", lambda x: nl.add(1.0, 2.0), X)
    _refused("nl.elementwise.on-chip", lambda x: nl.exp(x), X)


def test_documented_limits_of_other_functions():
    _refused("nl.matmul.transpose-x", lambda x: nl.matmul(nl.load(x), nl.load(x)), X)
    _refused("nl.reduce.axis", lambda x: nl.sum(nl.load(x), axis=0), X)
    _refused("nl.reduce.axis", lambda x: nl.sum(nl.ndarray((8, 2, 2), nl.float32), axis=1), X)
    _refused("nl.buffer.object", lambda x: nl.ndarray((8, 4), nl.float32, buffer="sbuf"), X)
    _refused("nl.load.src-hbm", lambda x: nl.load(nl.load(x)), X)
    _refused("nl.store.dst-hbm", lambda x: nl.store(nl.load(x), nl.load(x)), X)
    _refused("nl.random_seed.tensor", lambda x: nl.random_seed(42), X)
    _refused("nl.broadcast_to.rank", lambda x: nl.broadcast_to(nl.load(x), (8, 4, 2)), X)

    def fori_in_no_reorder(x):
        with nl.no_reorder():
            nl.fori_loop(0, 2, lambda i: None)

    _refused("nl.no_reorder.dynamic-loop", fori_in_no_reorder, X)

    def dynamic_range_in_no_reorder(x):  # nki-dynamic-loops.rst: "is NOT supported and will error"
        with nl.no_reorder(), pytest.warns(DeprecationWarning, match="dynamic_range"):
            for _ in nl.dynamic_range(2):
                pass

    _refused("nl.no_reorder.dynamic-loop", dynamic_range_in_no_reorder, X)


def test_wrong_keyword_is_a_signature_error():
    with pytest.raises(KernelSignatureError, match=r"nl.add\(x, y, dtype=None\)"):
        nl.add(x=None, z=1)


def test_undocumented_operator_raises_not_implemented_naming_it():
    with pytest.raises(NotImplementedError, match="nl.average"):
        nl.average.fp32(1.0, 2.0)


def test_version_gate_refuses_newer_apis():
    previous = version.set_version("0.3")
    try:
        with pytest.raises(ConstraintError, match="introduced in NKI 0.4"):
            nl.tile_size.psum_bank_fmax
        with pytest.raises(ConstraintError, match="introduced in NKI 0.5"):
            nl.tile_size.psum_num_banks
        with pytest.raises(ConstraintError, match="introduced in NKI 0.5"):
            nl.float8_e8m0fnu
        with pytest.raises(ConstraintError, match="introduced in NKI 0.6"):
            nl.fori_loop(0, 1, lambda i: None)
        assert nl.tile_size.pmax == 128
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert nl.tile_size.psum_fmax == 512  # not yet deprecated in 0.3
    finally:
        version.set_version(previous)
    with pytest.warns(DeprecationWarning, match="psum_fmax"):
        assert nl.tile_size.psum_fmax == 512
    with pytest.raises(ConstraintError, match="rule nl.tile_size.undocumented"):
        nl.tile_size.psum_min_align


def test_rule_doc_matches_the_table_and_sources_exist():
    import os
    from pathlib import Path

    from dste.nkisim import rules_language

    doc = Path(__file__).parents[2] / "docs" / "NKI_RULES_LANGUAGE.md"
    assert doc.read_text() == rules_language.markdown()
    sdk = Path(os.environ.get("DSTE_NKI_SDK", Path(__file__).resolve().parents[3] / "aws-neuron-sdk"))
    for rule_id in rules_language.IDS:
        source = sim.rules.RULES[rule_id].source
        if source.startswith("assumption"):
            continue
        path = source.split(",")[0].split(" ")[0]
        if sdk.is_dir():
            assert (sdk / path).exists(), f"{rule_id}: {path} is not in the sdk"


def test_transpose_of_integer_tiles_on_trn1():
    # nl.transpose states no dtype limit (language L2183-2208); nc_transpose takes "any valid NKI data type" (isa
    # L850-851). On trn1 an int32 [16, 8] tile (values fp32 cannot hold) and an int16 [64, 40] tile transpose exactly.
    from .kernel_bodies import run, tile

    big = (np.arange(128, dtype=np.int64).reshape(16, 8) + 2**30 + 1).astype(np.int32)
    small = np.arange(64 * 40, dtype=np.int64).reshape(64, 40).astype(np.int16) - 1000

    def body(o):
        a, b = nl.transpose(tile(big, nl.int32)), nl.transpose(tile(small, nl.int16))
        o.update(a=a.numpy(), b=b.numpy(), dtypes=(a.dtype, b.dtype))

    out = run(body, target="trn1")
    np.testing.assert_array_equal(out["a"], big.T)
    np.testing.assert_array_equal(out["b"], small.T)
    assert out["dtypes"] == (nl.int32, nl.int16)
