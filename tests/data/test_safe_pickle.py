"""The restricted unpickler builds arrays and dtypes from checked state only (numpy's own __setstate__
never sees a file's bytes), so a corrupted array or dtype is a clear error, not a broken numpy object."""

import pickle

import numpy as np
import pytest

from dste.data.safe_pickle import UnsafePickleError, safe_load


@pytest.mark.parametrize("array", [
    np.arange(12, dtype=np.int64).reshape(3, 4),
    np.asfortranarray(np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3)),
    np.array([True, False, True]),
    np.arange(5, dtype=">i4"),
])
@pytest.mark.parametrize("protocol", [2, 4])
def test_plain_arrays_round_trip(array, protocol):
    loaded = safe_load(pickle.dumps({"a": [array]}, protocol=protocol))["a"][0]
    assert isinstance(loaded, np.ndarray) and loaded.dtype == array.dtype and loaded.shape == array.shape
    np.testing.assert_array_equal(loaded, array)


def test_object_arrays_are_refused():
    with pytest.raises(UnsafePickleError, match="not allowed"):
        safe_load(pickle.dumps(np.array([1, "x"], dtype=object), protocol=2))


def test_structured_dtypes_are_refused():
    with pytest.raises((UnsafePickleError, ValueError)):
        safe_load(pickle.dumps(np.zeros(2, dtype=[("a", "<i4"), ("b", "<f8")]), protocol=2))


def test_array_whose_bytes_do_not_match_its_shape_is_refused():
    payload = pickle.dumps(np.arange(6, dtype=np.int32), protocol=2)
    state_head = b"K\x01K\x06\x85"  # the array state's version 1 and its shape (6,)
    assert payload.count(state_head) == 1
    corrupted = payload.replace(state_head, b"K\x01K\x07\x85")
    with pytest.raises(ValueError, match="needs 28 bytes"):
        safe_load(corrupted)


def test_dtype_state_with_a_bad_byte_order_is_refused():
    payload = pickle.dumps(np.arange(3, dtype="<i8"), protocol=2)
    assert payload.count(b"X\x01\x00\x00\x00<") == 1  # the dtype state's byte order string
    corrupted = payload.replace(b"X\x01\x00\x00\x00<", b"X\x01\x00\x00\x00?")
    with pytest.raises(ValueError, match="non-plain dtype"):
        safe_load(corrupted)


def _loaded_sparse(matrix):
    return safe_load(pickle.dumps(matrix, protocol=2))


def test_a_sparse_state_whose_pointer_disagrees_with_its_entries_is_refused():
    import scipy.sparse as sp

    from dste.data.safe_pickle import sparse_from_state

    matrix = sp.csr_matrix(np.array([[0, 1.0, 0], [2.0, 0, 3.0]]))
    loaded = _loaded_sparse(matrix)
    assert (sparse_from_state(loaded) != matrix).nnz == 0
    loaded.state["indptr"] = np.array([0, 1, 2], dtype=matrix.indptr.dtype)  # ends at 2, three entries stored
    with pytest.raises(ValueError, match="inconsistent sparse index pointer"):
        sparse_from_state(loaded)
    loaded = _loaded_sparse(matrix)
    loaded.state["data"] = loaded.state["data"][:2]
    with pytest.raises(ValueError, match="indices .* and data .* must be 1-D of one length"):
        sparse_from_state(loaded)
