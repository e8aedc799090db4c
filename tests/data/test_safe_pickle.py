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


def _calls_numpy_ndarray(args_ops: bytes) -> bytes:
    """A protocol-2 pickle that calls the global numpy.ndarray with the pickled argument tuple ``args_ops``."""
    return b"\x80\x02cnumpy\nndarray\n" + args_ops + b"R."


@pytest.mark.parametrize("args_ops", [
    b"K\x04\x85X\x02\x00\x00\x00f8\x86",  # ndarray((4,), "f8"): uninitialised memory came back as the array
    b"K\x04\x85X\x01\x00\x00\x00O\x86",  # ndarray((4,), "O"): an object array of null pointers
    b"K\x01\x85X\x01\x00\x00\x00OC\x08AAAAAAAA\x87",  # ndarray((1,), "O", b"AAAAAAAA"): reading it crashed Python
])
def test_a_pickle_may_name_numpy_ndarray_but_not_call_it(args_ops):
    with pytest.raises(UnsafePickleError, match="numpy.ndarray may only be named as the type of a pickled array"):
        safe_load(_calls_numpy_ndarray(args_ops))


@pytest.mark.parametrize("key, value, message", [
    # SciPy cast float ids to int: 1.7 became column 1 and the matrix loaded with an entry moved
    ("indices", np.array([1.7, 0.0, 2.0]), "sparse indices must be integers, got float64"),
    ("indptr", np.array([0.0, 1.0, 3.0]), "sparse indptr must be integers, got float64"),
    ("_shape", (2.7, 3), "bad sparse matrix shape \\(2.7, 3\\)"),  # int() floored it to 2 rows
    ("_shape", (True, 3), "bad sparse matrix shape \\(True, 3\\)"),
])
def test_a_sparse_state_with_non_integer_ids_or_shape_is_refused(key, value, message):
    import scipy.sparse as sp

    from dste.data.safe_pickle import sparse_from_state

    loaded = _loaded_sparse(sp.csr_matrix(np.array([[0, 1.0, 0], [2.0, 0, 3.0]])))
    loaded.state[key] = value
    with pytest.raises(ValueError, match=message):
        sparse_from_state(loaded)


def _build_on_global(module, name, attribute, value):
    """GLOBAL module.name; state (None, {attribute: value}); BUILD; then a None result."""
    text = value.encode()
    return (b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\nN}X" + len(attribute).to_bytes(4, "little")
            + attribute.encode() + b"X" + len(text).to_bytes(4, "little") + text + b"s\x86b0N.")


@pytest.mark.parametrize("module, name, attribute", [
    ("numpy", "ndarray", "__new__"),
    ("_codecs", "encode", "__defaults__"),
    ("numpy.core.multiarray", "_reconstruct", "__code__"),
])
def test_a_pickle_cannot_change_an_allowed_global_for_later_loads(module, name, attribute):
    from dste.data import safe_pickle

    before = {key: (vars(value).copy() if hasattr(value, "__dict__") else None)
              for key, value in safe_pickle.ALLOWED_GLOBALS.items()}
    with pytest.raises(safe_pickle.UnsafePickleError, match="may not set the state"):
        safe_pickle.safe_load(_build_on_global(module, name, attribute, "x"))
    after = {key: (vars(value).copy() if hasattr(value, "__dict__") else None)
             for key, value in safe_pickle.ALLOWED_GLOBALS.items()}
    assert after == before


def test_a_refused_pickle_is_a_value_error_and_names_numpy_scalars():
    import numpy as np

    from dste.data import safe_pickle

    data = pickle.dumps({np.int64(3): [1]}, protocol=2)
    with pytest.raises(ValueError, match="Python ints"):
        safe_pickle.safe_load(data)


def test_a_memo_index_past_memory_is_a_corrupt_pickle_naming_the_file():
    # one flipped bit in a LONG_BINPUT: a 9-byte stream asks for a memo of 2^31 entries (a bare MemoryError before)
    import struct

    stream = b"\x80\x02]r" + struct.pack("<I", 2**31 + 755) + b"."
    with pytest.raises(ValueError, match="ind.own.graph: corrupt or unsupported pickle: its 9 bytes"):
        safe_load(stream, "ind.own.graph")
