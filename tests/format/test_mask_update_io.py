"""Dynamic masks, incremental window updates, and save/load validation."""

import json
import zipfile

import numpy as np
import pytest
import scipy.sparse as sp

from dste.format import (
    DSTEFileError,
    DSTEFormatError,
    DSTEMatrix,
    encode,
    gcn_normalized,
    gcn_update,
    load,
)
from dste.format.matrix import ARRAY_FIELDS, OPTIONAL_ARRAY_FIELDS
from dste.format.permutation import inverse_permutation
from tests.format.graphs import community_graph


def _assert_same(a: DSTEMatrix, b: DSTEMatrix):
    assert a.shape == b.shape and a.layout == b.layout
    for name in ARRAY_FIELDS + OPTIONAL_ARRAY_FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and np.array_equal(x, y), name


def test_with_mask_refuses_a_non_finite_mask_and_names_the_bits_dtype():
    """nonzero = keep, and NaN != 0: a NaN mask would keep entries nobody asked for."""
    E = gcn_normalized(sp.random(200, 200, density=0.03, format="csr", random_state=0) != 0)
    nan_mask = np.where(np.random.default_rng(0).random((200, 200)) < 0.5, np.nan, 0.0)
    for mask in (nan_mask, sp.csr_matrix(nan_mask)):
        with pytest.raises(DSTEFormatError, match="NaN or Inf"):
            E.with_mask(mask)
    with pytest.raises(DSTEFormatError, match=r"tile bits must be uint32 \[T, 128, 4\], got int64"):
        E.with_mask(np.zeros((E.n_tiles, 128, 4), np.int64))


def test_with_mask_forms_agree_and_compact():
    adj, _ = community_graph(1200, seed=0)
    E = gcn_normalized(adj)
    rng = np.random.default_rng(0)
    dense_mask = rng.random(adj.shape) < 0.4
    by_dense = E.with_mask(dense_mask)
    by_sparse = E.with_mask(sp.csr_matrix(dense_mask))
    by_bits = E.with_mask((by_dense.keep_bits, by_dense.etile_keep_bits))
    for other in (by_sparse, by_bits):
        np.testing.assert_array_equal(other.keep_bits, by_dense.keep_bits)
        np.testing.assert_array_equal(other.etile_keep_bits, by_dense.etile_keep_bits)
    expected = E.decode().multiply(dense_mask)
    assert abs(by_dense.decode() - expected).max() == 0
    empty = E.with_mask(np.zeros(adj.shape, bool))
    assert empty.nnz_kept == 0 and empty.stats()["live_tiles"] == 0
    compacted = empty.compact()
    assert compacted.n_tiles == 0 and compacted.n_etiles == 0
    partial = by_dense.compact()
    assert abs(partial.decode() - expected).max() == 0
    with pytest.raises(DSTEFormatError, match="shape"):
        E.with_mask(np.ones((3, 3), bool))
    with pytest.raises(DSTEFormatError, match="entry tiles"):
        E.with_mask(E.keep_bits)


def test_a_sparse_mask_keeps_what_its_summed_values_keep():
    """A COO mask with duplicate coordinates means what SciPy means: the sum (here +1 -1 = 0 drops the entry)."""
    adj, _ = community_graph(400, seed=1)
    E = gcn_normalized(adj)
    rows, cols = E.decode().nonzero()
    dense_mask = np.zeros(adj.shape)
    dense_mask[rows[::2], cols[::2]] = 1.0
    duplicated = sp.coo_matrix(
        (np.r_[np.ones(rows.size // 2 + rows.size % 2), np.ones(3), -np.ones(3), [2.0, -1.0]],
         (np.r_[rows[::2], rows[1:7:2], rows[1:7:2], rows[1], rows[1]],
          np.r_[cols[::2], cols[1:7:2], cols[1:7:2], cols[1], cols[1]])),
        shape=adj.shape,
    )
    dense_mask[rows[1], cols[1]] = 1.0  # 2 - 1 = 1: kept
    order = np.argsort(duplicated.row, kind="stable")
    unsummed_csr = sp.csr_matrix(  # a CSR that still holds the duplicates (SciPy sums them on conversion)
        (duplicated.data[order], duplicated.col[order],
         np.r_[0, np.cumsum(np.bincount(duplicated.row, minlength=adj.shape[0]))]),
        shape=adj.shape,
    )
    assert not unsummed_csr.has_canonical_format
    expected = E.with_mask(dense_mask != 0)
    for mask in (duplicated, unsummed_csr):
        got = E.with_mask(mask)
        np.testing.assert_array_equal(got.keep_bits, expected.keep_bits)
        np.testing.assert_array_equal(got.etile_keep_bits, expected.etile_keep_bits)
        assert got.nnz_kept == int((dense_mask != 0).sum())


def _flip_edges(adj, pairs):
    """Symmetric add/remove of the edge at each (i, j) pair."""
    lil = adj.tolil()
    for i, j in pairs:
        value = 0.0 if lil[i, j] else 1.0
        lil[i, j] = value
        lil[j, i] = value
    new_adj = lil.tocsr()
    new_adj.eliminate_zeros()
    return new_adj


@pytest.fixture
def path_spy(monkeypatch):
    """Records which path ``gcn_update`` took ("incremental" or "full")."""
    import dste.format.gcn as gcn_module

    taken = []
    incremental, full = gcn_module.reencode_windows, gcn_module.encode_coo

    def spy_incremental(*args, **kwargs):
        taken.append("incremental")
        return incremental(*args, **kwargs)

    def spy_full(*args, **kwargs):
        taken.append("full")
        return full(*args, **kwargs)

    monkeypatch.setattr(gcn_module, "reencode_windows", spy_incremental)
    monkeypatch.setattr(gcn_module, "encode_coo", spy_full)
    return taken


@pytest.mark.parametrize("reorder", ["none", "community"])
@pytest.mark.parametrize("churn", ["small", "wide"])
@pytest.mark.parametrize("given_rows", [False, True])
def test_gcn_incremental_update_equals_full_reencode(reorder, churn, given_rows, path_spy):
    adj, _ = community_graph(3000, seed=1)
    E = gcn_normalized(adj, reorder=reorder)
    rng = np.random.default_rng(1)
    if churn == "small":  # one edge inside one window: most windows untouched
        i = int(E.window_rows[3, 0])
        pairs = [(i, int(E.window_rows[3, 1]))]
    else:  # 400 random flips touch nearly every window
        pairs = rng.integers(0, 3000, size=(400, 2))
        pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    new_adj = _flip_edges(adj, pairs)
    changed = np.unique(np.asarray(pairs).ravel()) if given_rows else None
    path_spy.clear()
    updated = gcn_update(E, new_adj, changed_rows=changed)
    assert path_spy == (["incremental"] if churn == "small" else ["full"])
    full = gcn_normalized(new_adj, row_perm=E.row_perm, col_perm=E.col_perm, reorder=reorder)
    _assert_same(updated, full)
    assert not np.array_equal(updated.row_scale, E.row_scale)  # degrees moved


def test_gcn_update_forced_paths_agree(monkeypatch, path_spy):
    import dste.format.gcn as gcn_module

    adj, _ = community_graph(2000, seed=6)
    E = gcn_normalized(adj)
    new_adj = _flip_edges(adj, np.random.default_rng(6).integers(0, 2000, size=(60, 2)))
    results = {}
    for fraction in (2.0, -1.0):  # never / always fall back to the full encode
        monkeypatch.setattr(gcn_module, "FULL_REENCODE_ENTRY_FRACTION", fraction)
        path_spy.clear()
        results[fraction] = gcn_update(E, new_adj)
        assert path_spy == (["incremental"] if fraction > 1 else ["full"])
    _assert_same(results[2.0], results[-1.0])
    full = gcn_normalized(new_adj, row_perm=E.row_perm, col_perm=E.col_perm)
    _assert_same(results[2.0], full)


def test_gcn_update_keeps_masks_of_untouched_windows(path_spy):
    adj, _ = community_graph(3000, seed=2)
    E = gcn_normalized(adj)
    masked = E.with_mask(np.random.default_rng(2).random(adj.shape) < 0.5)
    first_rows = E.window_rows[:, 0]  # one row in every window but the last: wide churn
    pairs = np.stack([first_rows[:-2], first_rows[1:-1]], axis=1)
    new_adj = _flip_edges(adj, pairs)
    path_spy.clear()
    updated = gcn_update(masked, new_adj)
    assert path_spy == ["incremental"]  # the full encode would drop the mask
    full = gcn_normalized(new_adj, row_perm=E.row_perm, col_perm=E.col_perm)
    assert abs(updated.decode(effective=False) - full.decode(effective=False)).max() == 0
    last = E.n_windows - 1
    np.testing.assert_array_equal(updated.keep_bits[updated.tile_window == last], masked.keep_bits[masked.tile_window == last])
    np.testing.assert_array_equal(
        updated.etile_keep_bits[updated.etile_window == last], masked.etile_keep_bits[masked.etile_window == last]
    )


def test_gcn_update_rejects_bad_input():
    adj, _ = community_graph(500, seed=3)
    E = gcn_normalized(adj)
    with pytest.raises(DSTEFormatError, match="shape"):
        gcn_update(E, sp.csr_matrix((400, 400)))
    with pytest.raises(DSTEFormatError, match="changed_rows"):
        gcn_update(E, adj, changed_rows=[500])
    with pytest.raises(DSTEFormatError, match="DSTEMatrix"):
        gcn_update(adj, adj)


def test_valued_update_windows_equals_full_reencode():
    rng = np.random.default_rng(2)
    A = sp.random(700, 500, density=0.03, random_state=2, format="lil")
    E = encode(A.tocsr(), reorder="rcm")
    changed = np.array([3, 400, 699])
    for r in changed:
        A[r, :] = 0
        A[r, rng.integers(0, 500, size=7)] = rng.normal(size=7)
    new = A.tocsr()
    updated = E.update_windows(new, changed)
    full = encode(new, row_perm=E.row_perm, col_perm=E.col_perm, reorder="rcm")
    _assert_same(updated, full)
    with pytest.raises(DSTEFormatError, match="changed_rows"):
        E.update_windows(new, [700])
    with pytest.raises(DSTEFormatError, match="shape"):
        E.update_windows(sp.csr_matrix((10, 10)), [0])


@pytest.mark.parametrize("layout, unit_diagonal, list_tiles", [("condensed", False, False), ("condensed", True, False),
                                                               ("condensed", False, True), ("block", False, False)])
def test_update_windows_refuses_changed_rows_that_leave_out_a_changed_window(layout, unit_diagonal, list_tiles):
    rng = np.random.default_rng(5)
    A = sp.random(600, 600, density=0.02, random_state=5, format="lil")
    A.setdiag(1.0)
    E = encode(A.tocsr(), reorder="rcm", layout=layout, unit_diagonal=unit_diagonal, list_tiles=list_tiles)
    window_of = inverse_permutation(E.row_perm) // 128
    listed, unlisted = 10, int(np.flatnonzero(window_of != window_of[10])[0])
    for row in (listed, unlisted):  # one more entry in each row, off the diagonal
        A[row, int(rng.choice([c for c in range(600) if c != row and A[row, c] == 0]))] = 0.25
    new = A.tocsr()
    with pytest.raises(DSTEFormatError, match=f"changed_rows leaves out .* rows \\[.*{unlisted}"):
        E.update_windows(new, [listed])
    # listed in full, or with a superset, the update equals a full re-encode
    full = encode(new, row_perm=E.row_perm, col_perm=E.col_perm, reorder="rcm", layout=layout,
                  unit_diagonal=unit_diagonal, list_tiles=list_tiles)
    _assert_same(E.update_windows(new, [listed, unlisted]), full)
    _assert_same(E.update_windows(new, [listed, unlisted, 0, 599]), full)


@pytest.fixture
def saved(tmp_path):
    adj, _ = community_graph(900, seed=3)
    A = adj.copy()
    A.data = np.random.default_rng(0).normal(size=A.nnz)
    E = encode(A, reorder="community").with_mask(np.random.default_rng(1).random(adj.shape) < 0.7)
    path = tmp_path / "m.dste"
    E.save(path)
    return E, path


def test_save_load_roundtrip(saved, tmp_path):
    E, path = saved
    L = load(path)
    _assert_same(E, L)
    assert L.encode_policy == E.encode_policy
    assert abs(L.decode() - E.decode()).max() == 0
    G = gcn_normalized(community_graph(500, seed=4)[0], reorder="none")
    G.save(tmp_path / "g.npz")
    _assert_same(G, DSTEMatrix.load(tmp_path / "g.npz"))


def test_truncated_file_raises(saved):
    _, path = saved
    data = path.read_bytes()
    for cut in (10, len(data) // 2, len(data) - 30):
        path.write_bytes(data[:cut])
        with pytest.raises(DSTEFileError):
            load(path)


def test_corrupt_payload_raises(saved, tmp_path):
    E, path = saved
    # flip one byte inside an array (stored uncompressed): the checksum or the zip CRC catches it
    data = bytearray(path.read_bytes())
    offset = data.find(E.keep_bits.tobytes()[:64])
    assert offset > 0
    data[offset + 5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DSTEFileError):
        load(path)


def _rewrite(path, out, edit_meta=None, edit_arrays=None):
    with np.load(path, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    meta = json.loads(bytes(arrays.pop("__meta__")).decode())
    if edit_arrays:
        edit_arrays(arrays)
    if edit_meta:
        edit_meta(meta)
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with open(out, "wb") as handle:
        np.savez(handle, **arrays)
    return out


def test_version_mismatch_raises(saved, tmp_path):
    _, path = saved
    bad = _rewrite(path, tmp_path / "v.npz", edit_meta=lambda m: m.update(format_version=99))
    with pytest.raises(DSTEFileError, match="version 99"):
        load(bad)


def test_tampered_array_with_fixed_checksum_still_invalid(saved, tmp_path):
    E, path = saved
    from dste.format.io import _checksum

    def tamper(arrays):
        arrays["tile_ncols"] = arrays["tile_ncols"].copy()
        arrays["tile_ncols"][0] = 0

    out = _rewrite(path, tmp_path / "t.npz", edit_arrays=tamper)
    with pytest.raises(DSTEFileError, match="checksum"):
        load(out)
    with np.load(out, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files if k != "__meta__"}
    out2 = _rewrite(out, tmp_path / "t2.npz", edit_meta=lambda m: m.update(sha256=_checksum(arrays)))
    with pytest.raises(DSTEFileError, match="tile_ncols"):
        load(out2)


def test_not_a_dste_file(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, a=np.zeros(3))
    with pytest.raises(DSTEFileError, match="not a DSTE file"):
        load(path)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(DSTEFileError):
        load(junk)
    missing_field = _rewrite(
        _save_small(tmp_path), tmp_path / "m.npz", edit_arrays=lambda a: a.pop("etile_rows")
    )
    with pytest.raises(DSTEFileError, match="field list"):
        load(missing_field)
    assert zipfile.is_zipfile(missing_field)


def _save_small(tmp_path):
    path = tmp_path / "small.npz"
    encode(np.eye(5)).save(path)
    return path


def test_gcn_update_keeps_a_mask_that_lives_on_list_tiles_only():
    """The mask check that decides between the incremental path and a full re-encode (which starts fully kept)
    looked at bitmap and entry tiles only: a mask on list tiles alone was dropped by a large update."""
    rng = np.random.default_rng(0)
    n = 1280  # 10 windows
    pairs = rng.integers(0, n, (4 * n, 2))
    a = sp.csr_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    a = ((a + a.T) > 0).astype(np.float32)
    a.setdiag(0)
    a.eliminate_zeros()
    E = gcn_normalized(a, reorder="none", list_tiles=True, gather_transfer_bytes=0, x_row_bytes=0)
    list_bits = E.ltile_nz_bits.copy()
    list_bits[E.ltile_window == 9] = 0  # window 9's list-tile entries dropped
    masked = E.with_mask((E.nz_bits, E.etile_nz_bits, list_bits))
    dropped = masked.nnz_stored - masked.nnz_kept
    assert dropped > 0
    new_pairs = rng.integers(0, 9 * 128, (20000, 2))  # most entries change, none in window 9's rows
    b = a + sp.csr_matrix((np.ones(len(new_pairs)), (new_pairs[:, 0], new_pairs[:, 1])), shape=(n, n))
    b = ((b + b.T) > 0).astype(np.float32)
    b.setdiag(0)
    updated = gcn_update(masked, b.tocsr())
    assert updated.nnz_stored - updated.nnz_kept == dropped


def test_gcn_update_refuses_a_matrix_gcn_normalized_did_not_make():
    """A weighted encode has the same metadata fields; updating it as a GCN matrix returned A + I unnormalised."""
    n = 256
    a = sp.diags([np.ones(n - 1), np.ones(n - 1)], [1, -1], format="csr", dtype=np.float32)
    with pytest.raises(DSTEFormatError, match="made by gcn_normalized"):
        gcn_update(encode(a * 0.5), a)


def test_update_windows_refuses_new_scales_on_a_scaled_input_matrix():
    """Its stored values are A / (r c): new scales would apply to the untouched windows' old quotients (a diagonal of
    3 came back as 6 there and 3 in the re-encoded window)."""
    W = sp.identity(256, format="csr", dtype=np.float32) * 3.0
    E = encode(W, row_scale=np.ones(256), col_scale=np.ones(256))
    with pytest.raises(DSTEFormatError, match="new scales on a matrix encoded from scaled input"):
        E.update_windows(W, changed_rows=[0], row_scale=np.full(256, 2.0))
    same = E.update_windows(W, changed_rows=[0], row_scale=np.ones(256))  # unchanged scales: fine
    np.testing.assert_array_equal(same.to_dense(), W.toarray())
    unscaled = encode(sp.identity(256, format="csr", dtype=np.float32), row_scale=np.ones(256), scaled_input=False)
    rescaled = unscaled.update_windows(sp.identity(256, format="csr"), changed_rows=[0], row_scale=np.full(256, 2.0))
    np.testing.assert_array_equal(np.diag(rescaled.to_dense()), np.full(256, 2.0))


def test_update_windows_refuses_new_scales_that_take_a_kept_window_out_of_float32():
    """New scales meet the stored values of the windows update_windows keeps: 1e20 times a row scale of 1e20 is
    beyond float32 (encode refuses it; the kept window had passed unchecked, and decode gave Inf)."""
    n = 256
    A = sp.csr_matrix((np.array([1e20, 1.0], np.float32), ([5, 200], [5, 200])), shape=(n, n))  # windows 0 and 1
    E = encode(A, row_scale=np.ones(n), scaled_input=False)
    big = np.ones(n)
    big[5] = 1e20
    with pytest.raises(DSTEFormatError, match=r"update_windows: the stored value of a window it keeps at \(5, 5\)"):
        E.update_windows(A, changed_rows=[200], row_scale=big)
    with pytest.raises(DSTEFormatError, match="outside float32's normal range"):
        encode(A, row_scale=big, scaled_input=False)  # what a full re-encode says
    fine = E.update_windows(A, changed_rows=[200], row_scale=np.full(n, 2.0))  # within range: taken
    np.testing.assert_allclose(fine.decode().diagonal()[[5, 200]], [2e20, 2.0], rtol=1e-3)


def test_a_matrix_refuses_edits_in_place_and_leaves_the_callers_arrays_alone():
    # Products cached on the matrix (the torch operands, decodes) are keyed on the object: an array edited in place
    # would be answered from a stale cache, so the matrix's arrays are read-only views.
    adj, _ = community_graph(300, seed=3)
    matrix = gcn_normalized(adj)
    for name in ("row_scale", "nz_bits", "keep_bits", "tile_cols"):
        array = getattr(matrix, name)
        if array is None or array.size == 0:
            continue
        with pytest.raises(ValueError, match="read-only"):
            array[...] = 0
    assert matrix.col_scale is matrix.row_scale  # one vector in two fields stays one object (stored once)
    # a matrix built from the caller's arrays: the caller's own arrays stay writeable
    fields = {f: getattr(matrix, f) for f in ARRAY_FIELDS + OPTIONAL_ARRAY_FIELDS}
    own = {f: np.array(v) for f, v in fields.items() if isinstance(v, np.ndarray)}
    rebuilt = matrix.replace(**own)
    assert all(a.flags.writeable for a in own.values())
    assert not rebuilt.row_scale.flags.writeable
    _assert_same(rebuilt, matrix)


@pytest.mark.parametrize("scales", ["float32", "float16"])
def test_gcn_update_refuses_changed_rows_that_leave_out_a_row_whose_degree_changed(scales):
    # The windows of unlisted rows keep their tiles while every scale is replaced: a row left out whose degree
    # changed would silently keep its old edges. Found from the stored scales, without decoding.
    adj, _ = community_graph(600, seed=2)
    E = gcn_normalized(adj)
    if scales == "float16":
        from dste.format.gcn import with_float16_scales

        E = with_float16_scales(E)
    source = int(E.window_rows[0, 0])
    far = int(E.window_rows[-1, 0])  # another window than source's
    new_adj = _flip_edges(adj, [(source, far)])
    with pytest.raises(DSTEFormatError, match=rf"leaves out 1 row\(s\) whose degree changed \(e.g. rows \[{far}\]\)"):
        gcn_update(E, new_adj, changed_rows=[source])
    listed = gcn_update(E, new_adj, changed_rows=[source, far])
    _assert_same(listed, gcn_update(E, new_adj))  # every changed row listed: the comparison's result


def test_gcn_update_refuses_a_left_out_hub_whose_float16_scale_did_not_change():
    # float16 rounds 1/sqrt(d) of neighbouring degrees from ~660 up to one value, so the scale check cannot see a
    # hub that lost an edge; its window's stored entry count can. Accepted before, the hub kept the removed edge.
    from dste.format.gcn import with_float16_scales

    n, hub, lost = 4000, 0, 2900
    spokes = np.arange(1, 3001)
    ring = np.arange(n)
    rows, cols = np.r_[np.full(spokes.size, hub), ring], np.r_[spokes, (ring + 1) % n]
    adj = sp.coo_matrix((np.ones(rows.size, np.float32), (rows, cols)), shape=(n, n)).tocsr()
    adj = ((adj + adj.T) != 0).astype(np.float32)
    new_adj = _flip_edges(adj, [(hub, lost)])
    degrees = np.asarray((adj != 0).sum(axis=1)).ravel() + 1
    assert np.float16(1 / np.sqrt(degrees[hub])) == np.float16(1 / np.sqrt(degrees[hub] - 1))  # the premise
    E = with_float16_scales(gcn_normalized(adj, reorder="none"))
    with pytest.raises(DSTEFormatError, match=r"leaves out rows whose degree changed: 1 row window\(s\).*rows \[0, 1,"):
        gcn_update(E, new_adj, changed_rows=[lost])
    listed = gcn_update(E, new_adj, changed_rows=[hub, lost])
    assert listed.decode()[hub, lost] == 0 and listed.decode()[hub, 1] > 0


def test_a_matrix_refuses_a_field_reassigned_and_its_product_stays_the_matrix_it_was_built_as():
    # Reassigning a field left the cached CSR operands of the old mask in place: the cpu product answered for the
    # old keep-mask (off by 5.6 on a test matrix) while the kernel backend read the new one.
    import dste

    adj, _ = community_graph(300, seed=3)
    matrix = gcn_normalized(adj)
    x = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)
    before = np.asarray(dste.spmm(matrix, x))
    emptied = matrix.with_mask(sp.csr_matrix(matrix.shape, dtype=bool))  # every entry dropped
    for name, value in (("keep_bits", emptied.keep_bits), ("col_scale", None), ("shape", (1, 1))):
        with pytest.raises(AttributeError, match=rf"DSTEMatrix\.{name} cannot be reassigned.*with_mask"):
            setattr(matrix, name, value)
    np.testing.assert_array_equal(np.asarray(dste.spmm(matrix, x)), before)
    np.testing.assert_allclose(np.asarray(dste.spmm(matrix, x)), matrix.decode() @ x, rtol=1e-5, atol=1e-5)
    # a new matrix is the way to another mask, and its product is that mask's
    np.testing.assert_array_equal(np.asarray(dste.spmm(emptied, x)), np.zeros_like(x))
