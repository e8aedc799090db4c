"""Arguments of the format's public calls that were read as something else (a bool as a number, a string as a flag,
an integer dtype as a float one) or refused in NumPy's, SciPy's or torch's words: each refused, naming the argument
and what it takes; the valid forms beside them keep their results."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import dste
from dste.format import DSTEFormatError, HybridRows, gcn_normalized, load, save


@pytest.fixture(scope="module")
def pattern():
    A = sp.random(60, 50, density=0.1, format="csr", random_state=0)
    A.data[:] = 1.0
    return A


@pytest.fixture(scope="module")
def encoded(pattern):
    return dste.encode(pattern)


@pytest.fixture(scope="module")
def rows():
    return np.random.default_rng(0).standard_normal((40, 8)).astype(np.float32)


@pytest.mark.parametrize("scores", [np.ones(40, bool), ["a"] * 40, [None] * 40, np.ones(40, complex)])
def test_quantize_rows_refuses_scores_that_are_not_real_numbers(rows, scores):
    # a boolean mask was read as scores 0/1 (every True row FP16), strings and None failed in NumPy's words
    with pytest.raises(TypeError, match="sensitivity must hold real numbers"):
        dste.quantize_rows(rows, sensitivity=scores)


def test_quantize_rows_takes_integer_and_float_scores_as_before(rows):
    scores = np.arange(40)
    as_int = dste.quantize_rows(rows, sensitivity=scores, threshold=30)
    as_float = dste.quantize_rows(rows, sensitivity=scores.astype(np.float32), threshold=30.0)
    assert as_int.hi_rows.tolist() == list(range(30, 40))
    np.testing.assert_array_equal(as_int.dequantize(), as_float.dequantize())
    with pytest.raises(DSTEFormatError, match=r"one score per row of X\), got \(39,\)"):
        dste.quantize_rows(rows, sensitivity=scores[:39])


@pytest.mark.parametrize("dtype", [np.int32, np.int8, np.float16, "hello", bool])
def test_dequantize_takes_the_dtypes_decode_takes(rows, encoded, dtype):
    # an int32 dequantize truncated every value; decode has refused integer dtypes all along
    with pytest.raises(DSTEFormatError, match="dequantize dtype must be float32 or float64"):
        dste.quantize_rows(rows).dequantize(dtype=dtype)
    with pytest.raises(DSTEFormatError, match="decode dtype must be float32 or float64"):
        encoded.decode(dtype=dtype)


def test_dequantize_in_float64_is_the_float32_products_widened(rows):
    hybrid = dste.quantize_rows(rows)
    wide = hybrid.dequantize(np.float64)
    assert wide.dtype == np.float64
    np.testing.assert_allclose(wide, hybrid.dequantize(), rtol=2.0**-23)  # one float32 rounding apart


@pytest.mark.parametrize("value", ["no", 0, 1, None])
def test_decode_and_to_dense_take_flags_not_truthy_values(encoded, value):
    # effective="no" returned the effective matrix: any non-empty string is true
    with pytest.raises(TypeError, match="effective must be True or False"):
        encoded.to_dense(effective=value)
    with pytest.raises(TypeError, match="scaled must be True or False"):
        encoded.decode(scaled=value)
    assert np.array_equal(encoded.to_dense(effective=np.bool_(False)), encoded.to_dense(effective=False))


def test_a_boolean_scale_vector_is_refused(pattern):
    # a bool row_scale zeroed every row it marked False
    with pytest.raises(TypeError, match="row_scale must hold real numbers"):
        dste.encode(pattern, row_scale=np.ones(60, bool))
    with pytest.raises(TypeError, match="col_scale must hold real numbers"):
        dste.encode(pattern, policy=dste.EncodePolicy(col_scale=np.ones(50, bool)))
    scaled = dste.encode(pattern, row_scale=np.full(60, 2, np.int64), scaled_input=False)
    np.testing.assert_array_equal(scaled.to_dense(), 2 * pattern.toarray())


@pytest.mark.parametrize("keep", [None, "all", True, 3])
def test_with_mask_names_what_it_takes_for_a_scalar(encoded, keep):
    # each said "mask shape () != matrix shape (60, 50)"
    with pytest.raises(DSTEFormatError, match=rf"keep must be a \[N, M\] = \(60, 50\) mask.*got {type(keep).__name__}"):
        encoded.with_mask(keep)


def test_with_mask_of_every_stored_bit_keeps_every_entry(encoded):
    # the form the refusal above suggests for "keep all"
    full = encoded.with_mask((encoded.nz_bits, encoded.etile_nz_bits, encoded.ltile_nz_bits))
    np.testing.assert_array_equal(full.to_dense(), encoded.to_dense(effective=False))


def test_save_names_its_arguments(encoded, pattern, tmp_path):
    path = tmp_path / "a.npz"
    with pytest.raises(TypeError, match="save takes a DSTEMatrix and a path.*got csr_matrix.*dste.encode"):
        save(pattern, path)
    with pytest.raises(TypeError, match="got PosixPath as the matrix \\(the arguments look swapped\\)"):
        save(path, encoded)
    save(encoded, path)
    np.testing.assert_array_equal(load(path).to_dense(), encoded.to_dense())


@pytest.mark.parametrize("wrong", ["abc", None, 3.0, np.ones(4)])
def test_quantize_rows_asks_for_a_2d_array(wrong):
    # each said "X must be 2-D [M, F], got shape ()" (or (4,))
    expected = rf"X must be .*2-D.*NumPy array or torch tensor.*got {type(wrong).__name__}"
    with pytest.raises(DSTEFormatError, match=expected):
        dste.quantize_rows(wrong)


def test_hybrid_rows_names_the_row_count_mismatch(rows):
    hybrid = dste.quantize_rows(rows)
    with pytest.raises(DSTEFormatError, match="q has 10 rows but scale has 40 entries"):
        HybridRows(hybrid.q[:10].copy(), hybrid.scale, hybrid.hi_rows, hybrid.hi, hybrid.hi_index)
    with pytest.raises(DSTEFormatError, match="q has 40 rows but hi_index has 39 entries"):
        HybridRows(hybrid.q, hybrid.scale, hybrid.hi_rows, hybrid.hi, hybrid.hi_index[:39].copy())


def test_a_meta_tensor_is_refused_in_the_words_spmm_uses(pattern, encoded):
    # "Cannot copy out of meta tensor; no data!" from torch before
    meta = torch.ones(60, 50, device="meta")
    with pytest.raises(DSTEFormatError, match=r"on the meta device \(shapes without values\).*host \(cpu\) tensors"):
        dste.encode(meta)
    with pytest.raises(DSTEFormatError, match="on the meta device"):
        encoded.with_mask(meta)
    with pytest.raises(DSTEFormatError, match="X is on the meta device"):
        dste.quantize_rows(torch.ones(4, 4, device="meta"))


def test_encode_lists_its_keywords_for_an_unknown_one(pattern):
    for call in (lambda: dste.encode(pattern, foo=1), lambda: dste.encode(pattern, dste.EncodePolicy(), foo=1)):
        with pytest.raises(TypeError, match=r"encode got unknown keyword argument\(s\) \['foo'\]; allowed: .*kinds"):
            call()
    with pytest.raises(TypeError, match=r"gcn_normalized got unknown keyword.*\['foo'\]; allowed: add_self_loops"):
        gcn_normalized(sp.identity(4, format="csr"), foo=1)


def test_gcn_normalized_refuses_scales_it_would_replace():
    # EncodePolicy(row_scale=...) built from the keywords had its scales overwritten by D^-1/2 without a word
    with pytest.raises(DSTEFormatError, match="sets the row and column scales to D\\^-1/2 itself"):
        gcn_normalized(sp.identity(4, format="csr"), row_scale=np.ones(4))


@pytest.mark.parametrize("names", [("int8",), "float16", np.float16, 3, ()])
def test_scale_dtypes_are_checked_without_a_byte_ceiling_too(names):
    # without max_bytes_per_edge (or when the first encoding met it) they were never read
    with pytest.raises(DSTEFormatError, match="scale_dtypes must name float32 and/or float16, each once"):
        gcn_normalized(sp.identity(8, format="csr"), scale_dtypes=names)


def test_valid_scale_dtypes_without_a_ceiling_change_nothing():
    adj = sp.random(40, 40, density=0.1, format="csr", random_state=1)
    adj = ((adj + adj.T) != 0).astype(np.float64)
    plain = gcn_normalized(adj)
    for names in (("float32",), ("float16", "float32")):
        given = gcn_normalized(adj, scale_dtypes=names)
        assert given.scale_dtype == "float32"
        np.testing.assert_array_equal(given.to_dense(), plain.to_dense())


@pytest.mark.parametrize("flag", ["scaled_input", "list_tiles", "unit_diagonal"])
@pytest.mark.parametrize("value", ["False", 0, 0.5, None])
def test_encode_flags_take_only_true_or_false(pattern, flag, value):
    # "False" was read as True for scaled_input: the row scales divided out instead of applied, silently
    with pytest.raises(DSTEFormatError, match=f"{flag} must be True or False"):
        dste.encode(pattern, **{flag: value})


def test_scaled_input_false_applies_the_scales_against_scipy(pattern):
    scale = np.linspace(0.5, 2.0, pattern.shape[0])
    x = np.random.default_rng(1).standard_normal((pattern.shape[1], 3))
    got = dste.spmm(dste.encode(pattern, row_scale=scale, scaled_input=False), x).numpy()
    np.testing.assert_allclose(got, sp.diags(scale) @ pattern @ x, rtol=0, atol=1e-5)


@pytest.mark.parametrize("field,value", [("x_row_bytes", float("nan")), ("x_row_bytes", None),
                                         ("x_row_bytes", "128"), ("gather_transfer_bytes", float("inf")),
                                         ("bitmap_min_entries", float("nan"))])
def test_encode_counts_name_the_field_for_nan_none_and_strings(pattern, field, value):
    with pytest.raises(DSTEFormatError, match=f"{field} must be an integer"):
        dste.encode(pattern, **{field: value})


@pytest.mark.parametrize("shape", [(2**31 + 5, 3), (1, 2**40 + 1)])
def test_a_shape_past_int32_ids_is_refused_before_any_allocation(shape):
    # one stored entry: the CSR conversion alone would have allocated 16 GiB of row pointers for the first
    one_entry = sp.coo_matrix(([1.0], ([0], [0])), shape=shape)
    with pytest.raises(DSTEFormatError, match=r"each dimension must be at most 2,147,483,647"):
        dste.encode(one_entry)


def test_with_mask_names_a_wrong_dtype_among_bits_given_as_a_list():
    A = sp.random(300, 300, density=0.05, format="csr", random_state=3)
    encoded = dste.encode(A, bitmap_min_entries=4)
    assert encoded.n_tiles and encoded.n_etiles
    with pytest.raises(DSTEFormatError, match="entry-tile bits must be uint32"):
        encoded.with_mask([encoded.nz_bits, encoded.etile_nz_bits.astype(np.int64)])
