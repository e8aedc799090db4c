"""float16 scale vectors: what the byte-ceiling search of ``gcn_normalized`` stores when float32 ones cannot meet it.

Tolerance of an fp16-scale decode against the float64 D^-1/2 (A + I) D^-1/2: each scale is D^-1/2 in float64,
rounded to float32 (relative error <= 2^-24) and then to float16 to nearest (<= 2^-11 in float16's normal range,
where every D^-1/2 of degree <= 2^28 lies). An entry is the product of two such scales times the stored 1,
computed in float64, so its relative error is at most (1 + 2^-11)^2 (1 + 2^-24)^2 - 1 < 2^-10 + 2^-21 (the
squares of 2^-11 and the 2^-24 terms stay below 2^-21); ``FP16_SCALE_ENTRY_RTOL`` adds the float32 rounding
of ``effective_csr`` (2^-24) where that is compared.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import scipy.sparse as sp

from dste.format import gcn_normalized
from dste.format.errors import DSTEFileError, DSTEFormatError
from dste.format.gcn import (
    csr_structure_bytes_per_edge,
    float16_holds_scales,
    gcn_update,
    with_float16_scales,
)
from dste.format.matrix import DSTEMatrix
from dste.reference import gcn_normalization

FP16_SCALE_ENTRY_RTOL = 2.0**-10 + 2.0**-21
"""Relative error of one decoded entry from two float16 scales (module docstring)."""


def _bytes(matrix):
    return matrix.nbytes()["bytes_per_stored_edge"]


@functools.lru_cache(maxsize=None)
def _low_degree_graph():
    """A shuffled CSBM of 5,000 nodes at mean degree 2 in communities of 15-25 (bench/test_device_bytes.py's
    ``5000/20/0.6/2``): its float32 floor stores ~0.5 B per entry more than its CSR, float16 scales ~0.17 B less."""
    from dste.data.csbm import make_graph

    graph = make_graph("arxiv-scale", seed=0, num_nodes=5000, num_edges=5000, num_classes=40, num_features=2,
                       locality=0.6, homophily=0.65, community_size=(15, 25), train_per_class=1, num_val=10,
                       num_test=10)
    return graph.adj


@functools.lru_cache(maxsize=None)
def _capped_low_degree():
    return gcn_normalized(_low_degree_graph(), max_bytes_per_edge="csr")


def _weight_zero(adj, list_tiles, order):
    return gcn_normalized(adj, list_tiles=list_tiles, gather_transfer_bytes=0, x_row_bytes=0, row_perm=order,
                          col_perm=order)


def test_the_csr_ceiling_is_met_with_float16_scales_where_float32_ones_are_refused():
    adj = _low_degree_graph()
    capped = _capped_low_degree()
    csr = csr_structure_bytes_per_edge(capped.shape[0], capped.nnz_stored)
    floors = [_weight_zero(adj, lists, capped.row_perm) for lists in (True, False)]
    assert all(floor.scale_dtype == "float32" for floor in floors)
    assert min(_bytes(floor) for floor in floors) > csr  # float32 scales cannot meet it at any weight
    assert capped.scale_dtype == "float16" and capped.stats()["scale_dtype"] == "float16"
    assert capped.row_scale.dtype == np.float16 and capped.col_scale is capped.row_scale
    assert capped.nbytes()["scale_dtype"] == "float16"
    assert capped.nbytes()["device"]["scales"] == 2 * capped.shape[0]  # one shared vector, 2 B per node
    # float16 scales save 2 N / entries = 0.66 B per entry here; the search then rides the ceiling at the largest
    # price weight that meets it, and its floor (weight 0) keeps a margin
    assert _bytes(capped) <= csr and min(_bytes(floor) for floor in floors) - 2 * capped.shape[0] / capped.nnz_stored < csr - 0.1


def test_a_float16_decode_matches_the_float64_normalisation_within_two_float16_roundings():
    adj = _low_degree_graph()
    capped = _capped_low_degree()
    exact = gcn_normalization(adj)
    for decoded, rtol in ((capped.decode(), FP16_SCALE_ENTRY_RTOL),
                          (capped.effective_csr(), FP16_SCALE_ENTRY_RTOL + 2.0**-24)):
        decoded = decoded.sorted_indices()
        # the same entries (canonical CSRs of one pattern), each within the bound of its exact value
        assert np.array_equal(decoded.indptr, exact.indptr) and np.array_equal(decoded.indices, exact.indices)
        relative = np.abs(decoded.data.astype(np.float64) - exact.data) / exact.data
        assert relative.max() <= rtol
    # the bound is not vacuous: float16 moves some entries by more than a float32 decode would
    assert relative.max() > 2.0**-13


def test_the_float16_scale_is_the_stored_value_of_every_consumer():
    capped = _capped_low_degree()
    rows, cols = capped.decode().nonzero()
    decoded = np.asarray(capped.decode()[rows, cols]).ravel()
    upcast = capped.row_scale.astype(np.float64)
    assert np.array_equal(decoded, upcast[rows] * upcast[cols])  # stored (BIN) value 1 times the upcast scales
    masked = capped.with_mask(sp.csr_matrix(capped.decode() > 0.3))
    assert masked.scale_dtype == "float16" and masked.row_scale is capped.row_scale
    kept = masked.decode()
    assert kept.nnz and np.array_equal(kept.data, capped.decode().multiply(capped.decode() > 0.3).tocsr().data)


def test_the_kernel_on_a_float16_scale_encoding_matches_scipy():
    from dste.kernels import launch_spmm_hybrid
    from dste.reference.spmm import spmm_reference
    from tests.kernels.error_bounds import BOUND_FP32_X, assert_within_bound

    rng = np.random.default_rng(3)
    n = 300
    upper = sp.triu(sp.random(n, n, density=2.0 / n, random_state=rng, format="csr"), k=1)
    adj = ((upper + upper.T) != 0).astype(np.float32)
    default = gcn_normalized(adj)
    floor = _weight_zero(adj, False, default.row_perm)
    fp16_floor = _bytes(floor) - 2 * n / floor.nnz_stored
    A = gcn_normalized(adj, max_bytes_per_edge=(_bytes(floor) + fp16_floor) / 2)  # only float16 scales meet it
    assert A.scale_dtype == "float16" and A.n_etiles > 0
    X = rng.standard_normal((n, 64)).astype(np.float32)
    Y = launch_spmm_hybrid(A, X)
    # the kernel's own bound against the reference of the matrix it was given (the upcast float16 scales)
    assert_within_bound(Y, spmm_reference(A, X), A, X, BOUND_FP32_X)
    # and against SciPy's float64 normalisation: the kernel bound plus the float16 scales' 2^-10 per entry
    exact = gcn_normalization(adj)
    S = abs(exact) @ np.abs(X.astype(np.float64))
    err = np.abs(Y.astype(np.float64) - exact @ X.astype(np.float64))
    assert (err <= (BOUND_FP32_X * (1 + 2.0**-9) + FP16_SCALE_ENTRY_RTOL) * S + 1e-30).all()


def test_a_float16_scale_encoding_round_trips_exactly(tmp_path):
    capped = _capped_low_degree()
    path = tmp_path / "capped.dste"
    capped.save(path)
    loaded = DSTEMatrix.load(path)
    assert loaded.row_scale.dtype == np.float16 and loaded.col_scale is loaded.row_scale
    assert np.array_equal(loaded.row_scale.view(np.uint16), capped.row_scale.view(np.uint16))
    assert loaded.nbytes() == capped.nbytes()
    assert abs(loaded.decode() - capped.decode()).max() == 0
    header = json.loads(bytes(np.load(path)["__meta__"]).decode())
    assert header["fields"]["row_scale"][0] == "<f2"


def test_a_float32_encoding_still_loads_with_its_shared_scale_counted_once(tmp_path):
    default = gcn_normalized(_low_degree_graph())
    default.save(tmp_path / "default.dste")
    loaded = DSTEMatrix.load(tmp_path / "default.dste")
    assert loaded.row_scale.dtype == np.float32 and loaded.nbytes() == default.nbytes()


def test_a_scale_of_another_dtype_is_refused_in_memory_and_on_disk(tmp_path):
    from dste.format.io import _checksum, _header_checksum

    capped = _capped_low_degree()
    with pytest.raises(DSTEFormatError, match=r"row_scale must have dtype float32 or float16 .*, got float64"):
        capped.replace(row_scale=capped.row_scale.astype(np.float64))
    capped.save(tmp_path / "capped.dste")
    with np.load(tmp_path / "capped.dste") as archive:
        arrays = {name: archive[name] for name in archive.files if name != "__meta__"}
        meta = json.loads(bytes(archive["__meta__"]).decode())
    arrays["col_scale"] = arrays["col_scale"].astype(np.float64)  # a well-sealed file of an odd dtype
    meta["fields"]["col_scale"] = [arrays["col_scale"].dtype.str, list(arrays["col_scale"].shape)]
    meta["sha256"] = _checksum(arrays)
    meta["header_sha256"] = _header_checksum(meta)
    with open(tmp_path / "odd.dste", "wb") as handle:
        np.savez(handle, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    with pytest.raises(DSTEFileError, match=r"col_scale must have dtype float32 or float16 .*, got float64"):
        DSTEMatrix.load(tmp_path / "odd.dste")


def test_scales_outside_float16s_normal_range_are_not_stored_as_float16():
    default = gcn_normalized(_low_degree_graph())
    assert float16_holds_scales(default)
    tiny = default.replace(row_scale=np.full(default.shape[0], 2.0**-15, np.float32), col_scale=None)
    large = default.replace(row_scale=np.full(default.shape[0], 7e4, np.float32), col_scale=None)
    for matrix in (tiny, large):
        assert not float16_holds_scales(matrix)
        with pytest.raises(DSTEFormatError, match="outside float16's normal range"):
            with_float16_scales(matrix)
    zeros = default.replace(row_scale=np.zeros(default.shape[0], np.float32), col_scale=None)
    assert float16_holds_scales(zeros)  # a degree-0 row's scale 0 is exact in float16


def test_gcn_update_keeps_float16_scales():
    adj = sp.csr_matrix(_low_degree_graph())
    capped = _capped_low_degree()
    changed = adj.tolil()
    changed[0, 1] = changed[1, 0] = 0 if adj[0, 1] else 1
    updated = gcn_update(capped, changed.tocsr(), changed_rows=np.array([0, 1]))
    assert updated.scale_dtype == "float16" and updated.col_scale is updated.row_scale
    decoded, exact = updated.decode(), gcn_normalization(changed.tocsr())
    assert abs(decoded - exact).max() <= FP16_SCALE_ENTRY_RTOL * abs(exact).max()


def _digest(matrix) -> str:
    """sha256 of every array (name, dtype, shape, bytes) and the encode policy: the encoding, bit for bit."""
    import hashlib

    from dste.format.matrix import ARRAY_FIELDS, OPTIONAL_ARRAY_FIELDS

    digest = hashlib.sha256()
    for name in ARRAY_FIELDS + OPTIONAL_ARRAY_FIELDS:
        value = getattr(matrix, name)
        digest.update(name.encode())
        if value is not None:
            digest.update(f"{value.dtype.str}{value.shape}".encode() + np.ascontiguousarray(value).tobytes())
    digest.update(repr(sorted(matrix.encode_policy.items())).encode())
    return digest.hexdigest()[:16]


DEFAULT_CORA_LIKE_DIGEST = "4a8757be5f6280f2"
"""``_digest`` of ``gcn_normalized(cora-like)``: first computed on the tree before float16 scales existed, computed
again when the community order changed (parts in their intra-part RCM order) and when RCM became the same on every
CPU (``dste.format.rcm``: SciPy's had moved it with NumPy's SIMD sort); the default encoding must not move with
anything the byte ceiling's search adds, nor with the machine."""


def test_the_default_encoding_keeps_float32_scales_bit_for_bit():
    from dste.data import load_dataset

    default = gcn_normalized(load_dataset("cora-like").adj, reorder="community")
    assert default.scale_dtype == "float32" and default.row_scale.dtype == np.float32
    assert _digest(default) == DEFAULT_CORA_LIKE_DIGEST
    # a ceiling float32 scales meet at weight 0 only: float16 ones meet it at a larger weight (a faster split)
    # and are kept; asked for float32 alone, the search keeps float32
    exact = gcn_normalized(load_dataset("cora-like").adj, max_bytes_per_edge="csr", scale_dtypes=("float32",))
    capped = gcn_normalized(load_dataset("cora-like").adj, max_bytes_per_edge="csr")
    assert exact.scale_dtype == "float32" and capped.scale_dtype == "float16"
    assert capped.encode_policy["gather_transfer_bytes"] > exact.encode_policy["gather_transfer_bytes"]
    csr = csr_structure_bytes_per_edge(capped.shape[0], capped.nnz_stored)
    assert max(exact.nbytes()["bytes_per_stored_edge"], capped.nbytes()["bytes_per_stored_edge"]) <= csr
    with pytest.raises(DSTEFormatError, match="scale_dtypes must name float32 and/or float16"):
        gcn_normalized(load_dataset("cora-like").adj, max_bytes_per_edge="csr", scale_dtypes=("bfloat16",))


@pytest.mark.parametrize("names", [("bfloat16",), ("no-such-dtype",), ("int8",), ("float32", "float32"), ()])
def test_scale_dtypes_outside_float32_and_float16_are_refused_whatever_numpy_knows(names):
    # ml_dtypes registers "bfloat16" with NumPy once imported: the refusal must not depend on that
    import ml_dtypes  # noqa: F401

    with pytest.raises(DSTEFormatError, match="scale_dtypes must name float32 and/or float16, each once"):
        gcn_normalized(sp.csr_matrix(np.ones((4, 4))), max_bytes_per_edge=1.0, scale_dtypes=names)
