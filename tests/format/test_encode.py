"""Encode/decode round trips against the input matrix (SciPy is the independent oracle)."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from dste.format import DSTEFormatError, DSTEMatrix, EncodePolicy, TileKind, encode, gcn_normalized
from tests.format.graphs import community_graph
from tests.format.value_checks import FP16_HALF_ULP, FP16_SUBNORMAL_HALF_SPACING, check_int8_tiles_against_input


def _fp16_exact(shape, density, seed):
    """Random sparse matrix whose values are exactly representable in float16 and INT8-unfriendly."""
    rng = np.random.default_rng(seed)
    A = sp.random(*shape, density=density, random_state=seed, format="csr")
    A.data = (rng.integers(-2048, 2048, size=A.nnz) / 64.0).astype(np.float64)
    A.data[A.data == 0] = 1.5
    return A


@pytest.mark.parametrize("shape", [(1, 1), (127, 129), (128, 128), (300, 70), (70, 300), (257, 513)])
@pytest.mark.parametrize("layout", ["condensed", "block"])
def test_fp16_roundtrip_exact(shape, layout):
    A = _fp16_exact(shape, 0.05 if shape[0] > 1 else 1.0, seed=sum(shape))
    E = encode(A, kinds="fp16", layout=layout)
    E.validate(deep=True)
    assert (E.tile_kind == TileKind.FP16).all() and (E.etile_kind == TileKind.FP16).all()
    np.testing.assert_array_equal(E.to_dense(), A.toarray())  # fp16-representable -> exact


@pytest.mark.parametrize("reorder", ["none", "rcm", "community"])
def test_binary_roundtrip_is_bin_and_exact(reorder):
    adj, _ = community_graph(900, seed=1)
    E = encode(adj, reorder=reorder)
    assert E.n_tiles + E.n_etiles > 0
    assert (E.tile_kind == TileKind.BIN).all() and (E.etile_kind == TileKind.BIN).all()
    assert E.int8_values.shape[0] == 0 and E.fp16_values.shape[0] == 0
    np.testing.assert_array_equal(E.to_dense(), adj.toarray())
    if reorder != "none":
        assert E.row_perm is not None and not np.array_equal(E.row_perm, np.arange(900))


def test_int8_error_within_half_step():
    A = sp.random(400, 300, density=0.1, random_state=3, format="csr")
    E = encode(A, kinds="int8")
    # each tile's scale recomputed from the input values it holds (the reference's max|v| / 127), each entry within
    # half of it: an encoder scale of max|v| / 63 kept every entry within half of its own step
    assert check_int8_tiles_against_input(E, A) == E.n_tiles + E.n_etiles + E.n_ltiles > 0
    assert E.n_etiles > 0  # both layouts were checked


def test_auto_kinds_mixed():
    rng = np.random.default_rng(0)
    dense = np.zeros((256, 256))
    dense[:128, :128] = 1.0  # BIN window block
    dense[128:, :128] = rng.normal(size=(128, 128))  # Gaussian: INT8 (S ~ 0.01)
    outliers = rng.normal(size=(128, 128)) * 0.01
    outliers[0, 0] = 1000.0
    dense[128:, 128:] = outliers  # outlier-stretched: FP16
    E = encode(dense, layout="block", kinds="auto")  # INT8 is an opt-in
    kinds = {(int(w), int(E.tile_cols[t, 0]) // 128): TileKind(k) for t, (w, k) in enumerate(zip(E.tile_window, E.tile_kind))}
    assert kinds == {(0, 0): TileKind.BIN, (1, 0): TileKind.INT8, (1, 1): TileKind.FP16}
    # the FP16 tile: each entry within half a float16 ulp of its own value (2^-11 relative, 2^-25 among subnormals)
    error = np.abs(E.to_dense()[128:, 128:].astype(np.float64) - outliers)
    assert (error <= np.maximum(FP16_HALF_ULP * np.abs(outliers), FP16_SUBNORMAL_HALF_SPACING)).all()


def test_block_layout_for_dense_weights():
    rng = np.random.default_rng(5)
    W = rng.normal(size=(200, 300)).astype(np.float32)
    E = encode(W, layout="block", kinds="int8")
    assert E.n_etiles == 0
    assert E.n_tiles == 2 * 3
    np.testing.assert_array_equal(E.tile_ncols, np.tile([128, 128, 44], 2))
    assert (E.tile_cols[E.tile_ncols == 44][:, 44:] == 300).all()
    assert check_int8_tiles_against_input(E, W) == 6
    # the block layout's tiles are W's 128 x 128 blocks: their scales from NumPy alone
    blocks = [W[i:i + 128, j:j + 128] for i in (0, 128) for j in (0, 128, 256)]
    expected = np.float32([np.abs(b).max() for b in blocks]) / np.float32(127)
    assert np.array_equal(np.sort(E.int8_scale), np.sort(expected))


def test_tile_order_and_padding_contract():
    adj, _ = community_graph(700, seed=2)
    A = adj
    E = encode(A, bitmap_min_entries=3)
    N, M = A.shape
    assert (E.window_rows[-1, N % 128 :] == N).all()
    key = E.tile_window.astype(np.int64) * 4 + E.tile_kind
    assert (np.diff(key) >= 0).all()
    # entries of a bitmap column: >= 3 stored; entry tiles hold the rest
    col_counts = np.bitwise_count(E.nz_bits).sum(axis=2)
    used = np.arange(128)[None, :] < E.tile_ncols[:, None]
    assert col_counts[used].min() >= 3


def test_empty_matrix_and_empty_rows():
    E = encode(sp.csr_matrix((300, 200)))
    assert E.n_tiles == 0 and E.n_etiles == 0 and E.n_windows == 3
    assert E.decode().nnz == 0 and E.decode().shape == (300, 200)
    E0 = encode(np.zeros((0, 5)))
    assert E0.n_windows == 0 and E0.decode().shape == (0, 5)
    A = sp.random(400, 400, density=0.02, random_state=1, format="lil")
    A[128:256, :] = 0  # an empty window
    A[5, :] = 0
    A = A.tocsr()
    A.eliminate_zeros()
    E = encode(A, kinds="fp16")
    assert E.window_ptr[2] == E.window_ptr[1] and E.ewindow_ptr[2] == E.ewindow_ptr[1]
    np.testing.assert_allclose(E.to_dense(), A.toarray(), rtol=2.0**-11)  # fp16 rounding only


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta state")
def test_input_kinds_agree():
    A = _fp16_exact((150, 140), 0.05, 7)
    dense = A.toarray()
    ref = encode(A, kinds="fp16").to_dense()
    for source in (A.tocoo(), A.tocsc(), sp.csr_array(A), dense, torch.tensor(dense), torch.tensor(dense).to_sparse(), torch.tensor(dense).to_sparse_csr()):
        np.testing.assert_array_equal(encode(source, kinds="fp16").to_dense(), ref)
    B = encode(dense != 0)
    np.testing.assert_array_equal(B.to_dense(), (dense != 0).astype(float))


def test_a_torch_sparse_tensor_with_a_dense_dimension_is_refused_by_name():
    # .to_sparse(1) keeps each row as a dense vector: encode failed inside SciPy with a bare IndexError
    with pytest.raises(DSTEFormatError, match=r"scalar values, got shape \(5, 4\) with 1 dense"):
        encode(torch.randn(5, 4).to_sparse(1))


def test_duplicates_summed():
    A = sp.coo_matrix((np.array([1.0, 2.0, 0.5]), (np.array([3, 3, 0]), np.array([4, 4, 1]))), shape=(10, 10))
    D = encode(A, kinds="fp16").to_dense()
    assert D[3, 4] == 3.0 and D[0, 1] == 0.5 and np.count_nonzero(D) == 2


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_unsorted_csr_with_duplicates_and_zeros_is_canonicalised_without_touching_the_input(dtype):
    # a CSR whose rows are unsorted, with a repeated column and an explicit zero, built directly from its arrays
    indptr = np.array([0, 4, 4, 7])
    indices = np.array([5, 1, 5, 3, 2, 0, 4], dtype=np.int32)
    data = np.array([1.0, 2.0, 0.5, 0.0, 4.0, 3.0, 7.0], dtype=dtype)
    A = sp.csr_matrix((data, indices, indptr), shape=(3, 6))
    before = [a.copy() for a in (A.data, A.indices, A.indptr)]
    expected = np.zeros((3, 6))
    np.add.at(expected, (np.repeat(np.arange(3), np.diff(indptr)), indices), data.astype(np.float64))
    np.testing.assert_array_equal(encode(A, kinds="fp16").to_dense(), expected)
    for kept, now in zip(before, (A.data, A.indices, A.indptr)):
        np.testing.assert_array_equal(now, kept)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.array([1.0, 2.0]), "2-D"),
        (np.array([[1.0, np.nan]]), "NaN or Inf"),
        (np.array([[1.0, np.inf]]), "NaN or Inf"),
        (np.array([["a", "b"]]), "unsupported dtype"),
        (np.array([[1 + 2j]]), "unsupported dtype"),
    ],
)
def test_bad_input(bad, message):
    with pytest.raises(DSTEFormatError, match=message):
        encode(bad)


def test_bad_sparse_indices():
    A = sp.coo_matrix((np.ones(2), (np.array([0, 1]), np.array([0, 1]))), shape=(3, 3))
    A.row[1] = -1
    with pytest.raises(DSTEFormatError, match="outside its shape"):
        encode(A)
    A.row[1] = 5
    with pytest.raises(DSTEFormatError, match="outside its shape"):
        encode(A)


def test_bad_policy_and_scales():
    with pytest.raises(DSTEFormatError, match="layout"):
        EncodePolicy(layout="diagonal")
    with pytest.raises(DSTEFormatError, match="reorder"):
        EncodePolicy(reorder="metis")
    with pytest.raises(DSTEFormatError, match="bitmap_min_entries"):
        EncodePolicy(bitmap_min_entries=0)
    with pytest.raises(DSTEFormatError, match="row_scale must have shape"):
        encode(np.eye(4), row_scale=np.ones(3))
    with pytest.raises(DSTEFormatError, match="cannot be factored"):
        encode(np.eye(4), row_scale=np.array([1.0, 0.0, 1.0, 1.0], dtype=np.float32))
    with pytest.raises(DSTEFormatError, match="float16 max"):
        encode(np.array([[1e6, 1.0]]), kinds="fp16")


def test_scales_factored_into_bin_tiles():
    rng = np.random.default_rng(0)
    pattern = (sp.random(300, 260, density=0.05, random_state=2, format="csr") != 0).astype(np.float64)
    rs = rng.uniform(0.1, 2, 300).astype(np.float32)
    cs = rng.uniform(0.1, 2, 260).astype(np.float32)
    scaled = sp.diags(rs.astype(np.float64)) @ pattern @ sp.diags(cs.astype(np.float64))
    E = encode(scaled, row_scale=rs, col_scale=cs)
    assert (E.tile_kind == TileKind.BIN).all() and (E.etile_kind == TileKind.BIN).all()
    np.testing.assert_allclose(E.to_dense(), scaled.toarray(), rtol=1e-15)  # same float64 products


def test_gcn_normalized_matches_scipy():
    adj, _ = community_graph(1000, seed=3)
    G = gcn_normalized(adj)
    a_hat = ((adj != 0) + sp.eye(1000)).astype(np.float64)
    a_hat.data[:] = 1.0
    deg = np.asarray(a_hat.sum(axis=1)).ravel()
    ref = sp.diags(deg**-0.5) @ a_hat @ sp.diags(deg**-0.5)
    # only rounding of D^-1/2 to float32 (relative 2^-24 each, two factors)
    np.testing.assert_allclose(G.to_dense(), ref.toarray(), rtol=2.5 * 2.0**-24, atol=0)
    assert (G.tile_kind == TileKind.BIN).all() and G.nbytes()["device"]["values"] == 0
    assert G.row_scale is G.col_scale


def test_gcn_normalized_warns_where_edge_weights_are_ignored_and_keeps_its_existing_self_loops_once():
    """It reads A as a 0/1 pattern: weights, signs and a duplicate's count used to vanish without a word. The result
    is that of the binary pattern either way; a 0/1 adjacency (self loops included) gives no warning."""
    import warnings

    from dste.format import IgnoredEdgeWeightsWarning

    pattern = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=np.float32))  # one loop already
    weighted = pattern.multiply(np.array([[1.0, 0.5, 0.0], [2.0, 0.0, -3.0], [0.0, 1.0, 0.0]])).tocsr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain = gcn_normalized(pattern, reorder="none").to_dense()
        gcn_normalized(pattern != 0, reorder="none")  # how to say the pattern is meant
    with pytest.warns(IgnoredEdgeWeightsWarning, match=r"3 of its 5 stored values are not 1 \(from -3 to 2"):
        from_weights = gcn_normalized(weighted, reorder="none").to_dense()
    np.testing.assert_array_equal(from_weights, plain)
    # D^-1/2 (A + I) D^-1/2 with A's own loop kept once: degrees 2, 3, 2 (PyG's add_remaining_self_loops)
    a_hat = np.array([[1, 1, 0], [1, 1, 1], [0, 1, 1]], dtype=np.float64)
    scale = 1 / np.sqrt(a_hat.sum(axis=1))
    np.testing.assert_allclose(plain, scale[:, None] * a_hat * scale[None, :], rtol=2.5 * 2.0**-24)
    coo = sp.coo_matrix(([1.0, 1.0, 1.0, 1.0], ([0, 0, 1, 1], [1, 1, 0, 0])), shape=(2, 2))  # an edge listed twice
    with pytest.warns(IgnoredEdgeWeightsWarning, match="a duplicate edge sums to 2"):
        gcn_normalized(coo, reorder="none")


def test_gcn_normalized_leaves_the_callers_policy_as_it_was():
    """gcn_normalized wrote this graph's D^-1/2 into the caller's policy, so the policy's next encode of another
    matrix came out scaled by it (diag(2, 3, 4) decoded as 0.67, 1.5, 2)."""
    adj = sp.csr_matrix(np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=np.float32))
    policy = EncodePolicy(reorder="none")
    gcn_normalized(adj, policy=policy)
    assert policy.row_scale is None and policy.col_scale is None and policy.scaled_input
    diagonal = sp.diags([2.0, 3.0, 4.0]).tocsr()
    np.testing.assert_array_equal(encode(diagonal, policy).to_dense(), diagonal.toarray())
    with pytest.raises(DSTEFormatError, match="either a policy or policy fields"):
        gcn_normalized(adj, policy=policy, reorder="rcm")  # the field was ignored
    with pytest.raises(DSTEFormatError, match="sets the row and column scales"):
        gcn_normalized(adj, policy=EncodePolicy(row_scale=np.ones(3)))  # the scales were overwritten


def test_gcn_community_order_beats_random_order():
    adj, _ = community_graph(6000, seed=4)
    plain = gcn_normalized(adj, reorder="none").stats()
    local = gcn_normalized(adj, reorder="community").stats()
    assert local["stretch"] < 0.6 * plain["stretch"]
    assert local["bytes_per_stored_edge"] < plain["bytes_per_stored_edge"]


def test_validation_catches_tampering():
    adj, _ = community_graph(500, seed=5)
    E = encode(adj, bitmap_min_entries=3)  # the floor keeps entry tiles to tamper with
    assert E.n_tiles and E.n_etiles
    fields = {f.name: getattr(E, f.name) for f in E.__dataclass_fields__.values() if f.init}
    broken = dict(fields, tile_ncols=np.zeros_like(E.tile_ncols))
    with pytest.raises(DSTEFormatError, match="tile_ncols"):
        DSTEMatrix(**broken)
    keep = E.keep_bits.copy()
    keep[0, 0, 0] |= ~E.nz_bits[0, 0, 0]
    with pytest.raises(DSTEFormatError, match="subset"):
        DSTEMatrix(**dict(fields, keep_bits=keep))
    with pytest.raises(DSTEFormatError, match="dtype"):
        DSTEMatrix(**dict(fields, tile_cols=E.tile_cols.astype(np.int64)))
    dup = E.etile_cols.copy()
    dup[0, 1] = dup[0, 0]
    rows = E.etile_rows.copy()
    rows[0, 1] = rows[0, 0]
    with pytest.raises(DSTEFormatError, match="two tiles"):
        DSTEMatrix(**dict(fields, etile_cols=dup, etile_rows=rows)).validate(deep=True)


def test_stats_and_nbytes_consistent():
    adj, _ = community_graph(2000, seed=6)
    G = gcn_normalized(adj)
    s, nb = G.stats(), G.nbytes()
    assert s["nnz_stored"] == adj.nnz + 2000
    assert s["x_rows_gathered"] == G.tile_ncols.sum() + G.etile_nentries.sum()
    assert nb["device"]["masks"] == G.keep_bits.nbytes + G.etile_keep_bits.nbytes
    assert nb["host_only"]["nz_bits"] == G.nz_bits.nbytes
    assert nb["device_total"] == sum(nb["device"].values())
    assert s["bytes_per_stored_edge"] == pytest.approx(nb["device_total"] / s["nnz_stored"])
    assert s["bitmap_tiles"]["BIN"] == G.n_tiles and s["entry_tiles"]["BIN"] == G.n_etiles


@pytest.mark.slow
def test_arxiv_scale_gcn_encoding():
    """ogbn-arxiv-sized community graph: exact structure, all BIN, compact and local."""
    adj, _ = community_graph(169_343, mean_degree=13.7, p_intra=0.95, min_size=40, max_size=150, seed=0)
    G = gcn_normalized(adj)
    s = G.stats()
    assert s["nnz_stored"] == adj.nnz + 169_343
    assert s["bitmap_tiles"]["BIN"] == s["n_tiles"] and s["entry_tiles"]["BIN"] == s["n_entry_tiles"]
    # measured 3.88 B/edge, stretch 2.37, 2668 + 1164 tiles with community order and the cost split
    # (the count split: 4.04, 2.37, 2729 + 1476); int32 structure-only CSR is 4.27
    assert s["bytes_per_stored_edge"] < 4.27 and s["stretch"] < 2.5
    csr = G.effective_csr()
    assert csr.dtype == np.float32 and csr.nnz == s["nnz_kept"]


def _non_canonical_copy(adj, rng):
    """The same matrix as a CSR with shuffled column order, split duplicates and explicit zeros."""
    coo = adj.tocoo()
    half = coo.data / 2
    rows = np.concatenate([coo.row, coo.row, coo.row[:50]])
    cols = np.concatenate([coo.col, coo.col, (coo.col[:50] + 1) % adj.shape[1]])
    vals = np.concatenate([half, half, np.zeros(50)])
    order = rng.permutation(rows.size)
    counts = np.bincount(rows, minlength=adj.shape[0])
    by_row = np.argsort(rows[order], kind="stable")  # rows grouped, columns left shuffled
    indptr = np.concatenate([[0], np.cumsum(counts)])
    messy = sp.csr_matrix((vals[order][by_row], cols[order][by_row], indptr), shape=adj.shape)
    assert not messy.has_canonical_format
    return messy


@pytest.mark.parametrize("add_self_loops", [True, False])
@pytest.mark.filterwarnings("ignore::dste.format.gcn.IgnoredEdgeWeightsWarning")  # values 3 and -1 are the point
def test_gcn_structure_matches_scipy_on_non_canonical_input(add_self_loops):
    from dste.format.gcn import gcn_structure

    rng = np.random.default_rng(7)
    adj, _ = community_graph(900, seed=7)
    adj = adj.tolil()
    adj[5, 5] = 3.0  # an existing self loop is counted once
    adj[6, 6] = -1.0  # cancelled by +1 of I in a value sum, but still an edge of the pattern
    adj = adj.tocsr()
    messy = _non_canonical_copy(adj, rng)
    rows, cols, ones, shape, dinv = gcn_structure(messy, add_self_loops)
    expected = (adj != 0).astype(np.float64)
    if add_self_loops:
        expected = ((expected + sp.eye(900)) != 0).astype(np.float64).tocsr()
    expected.sort_indices()
    exp_coo = expected.tocoo()
    np.testing.assert_array_equal(rows, exp_coo.row)
    np.testing.assert_array_equal(cols, exp_coo.col)
    assert shape == (900, 900) and (ones == 1).all()
    degree = np.asarray(expected.sum(axis=1)).ravel()
    np.testing.assert_array_equal(dinv, np.where(degree > 0, np.maximum(degree, 1) ** -0.5, 0).astype(np.float32))
    for a, b in ((gcn_normalized(messy, add_self_loops), gcn_normalized(adj, add_self_loops)), (encode(messy), encode(adj))):
        assert abs(a.decode() - b.decode()).max() == 0


def test_bad_csr_input_is_refused():
    good = sp.csr_matrix(np.eye(4))
    bad_indptr = sp.csr_matrix((good.data, good.indices, good.indptr), shape=(4, 4))
    bad_indptr.indptr = np.array([0, 2, 1, 3, 4], dtype=good.indptr.dtype)
    with pytest.raises(DSTEFormatError, match="indptr"):
        encode(bad_indptr)
    bad_index = good.copy()
    bad_index.indices = bad_index.indices.copy()
    bad_index.indices[2] = 9
    with pytest.raises(DSTEFormatError, match="outside its shape"):
        encode(bad_index)
    with pytest.raises(DSTEFormatError, match="NaN"):
        encode(sp.csr_matrix(np.array([[np.nan, 1.0]])))


@pytest.mark.parametrize("container", ["numpy", "torch"])
def test_the_matrix_keeps_its_own_copy_of_the_callers_scales_and_orders(container):
    # float32 scales and int64 orders were kept as views of the caller's buffers: editing them after the encode
    # rewrote the "immutable" matrix under the CPU op's cached operands (44.8 apart from the kernel on one matrix),
    # and an edited order no longer described the tiles, so gcn_update re-encoded the wrong windows.
    adj, _ = community_graph(300, seed=4)
    rng = np.random.default_rng(0)
    scales = rng.uniform(0.5, 2.0, 300).astype(np.float32)
    order = rng.permutation(300).astype(np.int64)
    wrap = torch.from_numpy if container == "torch" else (lambda a: a)
    row_scale, perm = wrap(scales.copy()), wrap(order.copy())
    E = encode(adj, row_scale=row_scale, row_perm=perm, col_perm=perm)
    row_scale[:] = 7.0
    perm[:] = wrap(np.arange(300))
    np.testing.assert_array_equal(E.row_scale, scales)
    np.testing.assert_array_equal(E.row_perm, order)
    np.testing.assert_array_equal(E.col_perm, order)
    x = rng.standard_normal((300, 4)).astype(np.float32)
    expected = adj.astype(np.float64) @ x  # scaled input: the scales are factored out of A and back in on decode
    # each entry is stored as FP16 (half an ulp, 2^-11 relative) and scaled back in float32 (2^-24 more)
    bound = 2.0 ** -11 * (1 + 2.0 ** -10) * (abs(adj).astype(np.float64) @ np.abs(x)) + 1e-12
    assert (np.abs(E.decode().toarray().astype(np.float64) @ x - expected) <= bound).all()
    G = gcn_normalized(adj, row_perm=perm, col_perm=perm)
    perm[:] = wrap(order)
    np.testing.assert_array_equal(G.row_perm, np.arange(300))


def test_a_matrix_whose_row_perm_does_not_describe_its_windows_is_refused():
    adj, _ = community_graph(300, seed=4)
    E = encode(adj, reorder="community")
    with pytest.raises(DSTEFormatError, match="window_rows must hold the rows in row_perm's order"):
        E.replace(row_perm=np.roll(E.row_perm, 1)).validate()


@pytest.mark.parametrize("dtype, values", [(torch.int8, [100, 100, 7]), (torch.uint8, [200, 100, 7]),
                                           (torch.int16, [30000, 30000, 7]), (torch.bool, [True, True, True])])
def test_duplicates_of_an_integer_torch_coo_are_summed_as_scipys_are(dtype, values):
    # torch's coalesce summed them in the tensor's own dtype: int8 100 + 100 came out -56, bool True + True 1
    index = torch.tensor([[0, 0, 1], [0, 0, 1]])
    given = torch.sparse_coo_tensor(index, torch.tensor(values, dtype=dtype), (2, 2))
    expected = np.diag([float(values[0]) + float(values[1]), float(values[2])])
    np.testing.assert_array_equal(encode(given, kinds="fp16").decode().toarray(), expected)


def test_a_torch_keep_mask_with_an_entry_listed_twice_keeps_it():
    # uint8 128 + 128 wrapped to 0 in the mask's own dtype, and the entry was dropped
    E = encode(sp.csr_matrix(np.array([[0.0, 3.0], [2.0, 0.0]], np.float32)))
    mask = torch.sparse_coo_tensor(torch.tensor([[0, 0, 1], [1, 1, 0]]), torch.tensor([128, 128, 1], dtype=torch.uint8),
                                   (2, 2))
    np.testing.assert_array_equal(E.with_mask(mask).decode().toarray(), [[0.0, 3.0], [2.0, 0.0]])


def test_numpy_bfloat16_input_is_read_as_torch_bfloat16_is():
    import ml_dtypes

    values = np.array([[1.5, 0.0], [0.0, -2.0]])
    given = values.astype(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(encode(given).decode().toarray(), values)
    np.testing.assert_array_equal(encode(torch.tensor(values, dtype=torch.bfloat16)).decode().toarray(), values)


def test_a_value_beyond_float32_is_refused_by_position_without_naming_absent_scales():
    with pytest.raises(DSTEFormatError, match=r"the value at \(1, 0\) is 1e\+39, beyond float32's range") as info:
        encode(np.array([[1.0, 0.0], [1e39, 2.0]]))
    assert "scales" not in str(info.value).split(";")[0]
