"""NkiTensor view methods: legal views denote the NumPy view; documented-illegal views name their rule."""

import numpy as np
import pytest

from dste.nkisim import language as nl
from dste.nkisim import runtime, version
from dste.nkisim.errors import ConstraintError, OutOfBoundsError
from dste.nkisim.tensor import allocate, from_numpy


@pytest.fixture(autouse=True)
def fresh_run():
    with runtime.running(runtime.RunContext("trn2")):
        yield


def sbuf_with(values):
    t = allocate(values.shape, values.dtype, "sbuf", "t")
    t.array()[...] = values
    return t


A = np.arange(4 * 6 * 8, dtype=np.float32).reshape(4, 6, 8)


def test_views_match_numpy():
    t = sbuf_with(A)
    np.testing.assert_array_equal(t.slice(1, 1, 5, 2).numpy(), A[:, 1:5:2])
    np.testing.assert_array_equal(t.select(2, 3).numpy(), A[:, :, 3])
    np.testing.assert_array_equal(t.permute((0, 2, 1)).numpy(), A.transpose(0, 2, 1))
    np.testing.assert_array_equal(t[:, 0:1, :].broadcast(1, 5).numpy(), np.broadcast_to(A[:, 0:1], (4, 5, 8)))
    np.testing.assert_array_equal(t.expand_dim(1).numpy(), A[:, None])
    np.testing.assert_array_equal(t[:, 0:1, :].squeeze_dim(1).numpy(), A[:, 0])
    np.testing.assert_array_equal(t.reshape_dim(2, (2, -1)).numpy(), A.reshape(4, 6, 2, 4))
    np.testing.assert_array_equal(t.flatten_dims(1, 2).numpy(), A.reshape(4, 48))
    np.testing.assert_array_equal(t.reshape((4, 12, 4)).numpy(), A.reshape(4, 12, 4))
    np.testing.assert_array_equal(t.view(nl.uint8).numpy(), A.view(np.uint8))
    np.testing.assert_array_equal(t.rearrange(("p", "h", ("w", "c")), ("p", "c", "h", "w"), {"c": 2}).numpy(),
                                  A.reshape(4, 6, 4, 2).transpose(0, 3, 1, 2))
    assert t.get_pattern() == [[48, 4], [8, 6], [1, 8]]
    assert t.is_contiguous() and not t.permute((0, 2, 1)).is_contiguous()
    assert not t.is_indirect()


def test_strided_reshape_without_copy_and_ap_offset_composes():
    t = sbuf_with(A)
    # Splitting a strided dim needs no copy; merging a permuted pair does.
    np.testing.assert_array_equal(t[:, ::2, :].reshape((4, 3, 2, 4)).numpy(), A[:, ::2, :].reshape(4, 3, 2, 4))
    with pytest.raises(ConstraintError, match="rule view.reshape.layout;"):
        t.permute((0, 2, 1)).reshape((4, 48))
    # .ap(offset=N) adds N elements to the view's own storage offset (stub docstring of ap).
    view = t[:, 2:3, :].ap([[48, 4], [1, 8]], offset=1)
    np.testing.assert_array_equal(view.numpy(), A.reshape(4, 48)[:, 17:25])


def test_hbm_dynamic_select_and_vector_select():
    table = np.arange(10 * 3, dtype=np.float32).reshape(10, 3)
    h = from_numpy(table)
    idx = allocate((1, 1), nl.int32, "sbuf", "i")
    idx.array()[...] = 7
    np.testing.assert_array_equal(h.select(0, idx).numpy(), table[7])
    assert h.select(0, idx).is_indirect()
    rows = allocate((4, 1), nl.int32, "sbuf", "rows")
    rows.array()[...] = np.array([[3], [0], [9], [3]])
    gathered = h.vector_select(0, rows)
    assert gathered.shape == (4, 3) and gathered.is_indirect()
    with pytest.raises(ConstraintError, match="rule view.indirect.chain;"):
        h.select(0, idx).select(0, idx)
    with pytest.raises(ConstraintError, match="rule view.indirect.chain;"):
        gathered[1:2, :]


@pytest.mark.parametrize("make, rule", [
    (lambda t: t.broadcast(1, 3), "view.broadcast.size-one"),
    (lambda t: t[0:1].broadcast(0, 4), "view.broadcast.partition"),
    (lambda t: t.expand_dim(0), "view.expand_dim.partition"),
    (lambda t: t.squeeze_dim(1), "view.squeeze_dim.size-one"),
    (lambda t: t[0:1].squeeze_dim(0), "view.squeeze_dim.partition"),
    (lambda t: t.reshape_dim(1, (4, 2)), "view.reshape_dim.product"),
    (lambda t: t.reshape_dim(0, (2, 2)), "view.reshape_dim.partition"),
    (lambda t: t.flatten_dims(0, 1), "view.flatten_dims.partition"),
    (lambda t: t.permute((0, 2, 1)).flatten_dims(1, 2), "view.flatten_dims.contiguous"),
    (lambda t: t.reshape((8, 24)), "view.reshape.partition"),
    (lambda t: t.reshape((4, 47)), "view.reshape.count"),
    (lambda t: t.permute((1, 0, 2)), "view.permute.partition"),
    (lambda t: t.permute((0, 1, 1)), "view.permute.dims"),
    (lambda t: t.slice(1, 3, 2), "view.slice.range"),
    (lambda t: t.slice(1, 0, 4, 0), "view.slice.step"),
    (lambda t: t.select(1, 6), "view.select.range"),
    (lambda t: t[:, :, ::2].view(nl.uint8), "view.view.contiguous"),
    (lambda t: t.view(nl.uint8)[:, :, 0:6].view(nl.float32), "view.view.divisible"),
    (lambda t: t.vector_select(0, t), "view.vector_select.hbm"),
    (lambda t: t.indirect(t), "view.indirect.trn3-only"),
    (lambda t: t.ap([[7, 4], [1, 8]]), "view.ap.pattern"),
    (lambda t: t.broadcast_to((4, 6, 8)), "view.unofficial-method"),
])
def test_documented_view_constraints_name_their_rule(make, rule):
    t = sbuf_with(A)
    with pytest.raises((ConstraintError, OutOfBoundsError, AttributeError), match=rf"rule {rule};"):
        make(t)


def test_view_methods_are_gated_to_their_release():
    t = sbuf_with(A)
    previous = version.set_version("0.4")
    try:
        with pytest.raises(ConstraintError, match="NkiTensor.broadcast was introduced in NKI 0.5"):
            t[:, 0:1, :].broadcast(1, 2)
        with pytest.raises(ConstraintError, match="introduced in NKI 0.5"):
            t.is_contiguous()
        np.testing.assert_array_equal(t.reshape((4, 48)).numpy(), A.reshape(4, 48))  # reshape predates 0.5
    finally:
        version.set_version(previous)


def test_reinterpret_cast_is_view():
    # nki/api/nki/language/__init__.py L544: ``reinterpret_cast = ...`` beside view(dtype) (L516-541)
    from .kernel_bodies import run, tile

    def body(o):
        t = tile(np.array([[1.0, -2.0]], np.float32))
        o["u"] = t.reinterpret_cast(nl.uint8).numpy()
        o["i"] = t.reinterpret_cast(nl.int32).numpy()

    out = run(body)
    np.testing.assert_array_equal(out["u"], np.array([[1.0, -2.0]], np.float32).view(np.uint8))
    np.testing.assert_array_equal(out["i"], np.array([[1.0, -2.0]], np.float32).view(np.int32))
