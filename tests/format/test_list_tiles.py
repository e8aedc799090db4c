"""List tiles: the cost split's choice, semantics against the input and the reference, masks, files, validation."""

import json

import numpy as np
import pytest
import scipy.sparse as sp

from dste.format import DSTEFormatError, encode, gcn_normalized, load
from dste.format.constants import LIST_TILE_COLS, TileKind
from dste.format.encoder import LIST_TILE_DEVICE_BYTES, LIST_TILE_PACK
from dste.format.io import _checksum, _header_checksum
from dste.format.matrix import LIST_ARRAY_FIELDS, column_band_bits
from dste.reference import spmm_reference
from tests.format.graphs import community_graph

# Prices that make list tiles win for columns of fewer than ~7 entries (no per-transfer price: only
# device bytes and gathered rows count), so every path of the list-tile code is exercised.
LIST_FRIENDLY = dict(gather_transfer_bytes=0, x_row_bytes=136)


def _window_of_shared_columns(columns=40, per_column=3, singles=2):
    """One 128-row window: ``columns`` columns of ``per_column`` entries each, plus ``singles``
    columns of one entry."""
    rows, cols = [], []
    for c in range(columns):
        rows += [(c * 7 + i * 41) % 128 for i in range(per_column)]
        cols += [c] * per_column
    for s in range(singles):
        rows.append(s)
        cols.append(columns + s)
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(128, columns + singles))


def test_default_split_picks_list_tile_where_cheaper():
    A_in = _window_of_shared_columns(singles=0)
    with_lists = encode(A_in, list_tiles=True)
    # per call, default prices: bitmap tile 2,317 + 29,900 B + 40 rows x 136 B = 37,657; list tile
    # 417 + 29,900 + 40 x 136 = 35,757; entry tiles 413 + 29,900 + 120 x 136 = 46,633
    assert (with_lists.n_tiles, with_lists.n_ltiles, with_lists.n_etiles) == (0, 1, 0)
    assert int(with_lists.ltile_ncols[0]) == 40 and int(with_lists.ltile_nentries[0]) == 120
    without = encode(A_in)
    assert without.n_ltiles == 0 and without.n_tiles == 1
    assert abs(with_lists.decode() - A_in).max() == 0
    assert with_lists.stats()["x_rows_gathered"] == 40 == without.stats()["x_rows_gathered"]
    assert with_lists.nbytes()["device_total"] < without.nbytes()["device_total"]
    # two single-entry columns more: a list tile would need an entry tile beside it (a second
    # transfer), so one bitmap tile holding all 42 columns is cheaper at the default prices ...
    A_in = _window_of_shared_columns(singles=2)
    A = encode(A_in, list_tiles=True)
    assert (A.n_tiles, A.n_ltiles, A.n_etiles) == (1, 0, 0)
    # ... and without a per-transfer price the list tile wins, the single-entry columns staying entries
    A = encode(A_in, list_tiles=True, **LIST_FRIENDLY)
    assert (A.n_tiles, A.n_ltiles, A.n_etiles) == (0, 1, 1)
    assert int(A.etile_nentries[0]) == 2 and abs(A.decode() - A_in).max() == 0


def test_dense_columns_stay_bitmap_columns():
    A_in = _window_of_shared_columns(columns=100, per_column=60, singles=0)
    A = encode(A_in, list_tiles=True)
    assert A.n_ltiles == 0 and A.n_tiles == 1


@pytest.mark.parametrize("kinds", ["bin", "int8", "fp16"])
def test_list_tiles_of_each_kind_match_input_and_reference(kinds):
    adj, _ = community_graph(1500, seed=3)
    rng = np.random.default_rng(7)
    valued = adj.tocsr().astype(np.float64)
    valued.data = rng.uniform(0.5, 2.0, valued.nnz)
    A = encode(valued, kinds=kinds, reorder="community", list_tiles=True, bitmap_min_entries=1, **LIST_FRIENDLY)
    A.validate(deep=True)
    assert A.n_ltiles > 0 and set(np.unique(A.ltile_kind)) == {int(TileKind[kinds.upper()])}
    assert A.stats()["nnz_stored"] == valued.nnz
    expected = valued if kinds != "bin" else (valued != 0).astype(np.float64)
    # INT8: half a step of the tile's scale, max|v| / 254 <= 2 / 254; FP16: 2^-11 relative; BIN exact
    tolerance = {"bin": 0.0, "int8": 2.0 / 254 * (1 + 2.0**-15), "fp16": 2.0 * 2.0**-11}[kinds]
    assert abs(A.decode() - expected).max() <= tolerance
    X = rng.standard_normal((adj.shape[1], 16))
    # the reference rebuilds A from the public arrays with its own code: it must agree with decode to
    # float64 rounding of the same products
    np.testing.assert_allclose(spmm_reference(A, X), A.decode() @ X, rtol=1e-12, atol=1e-12)


def test_list_tile_layout_invariants():
    adj, _ = community_graph(2000, seed=5)
    A = gcn_normalized(adj, reorder="community", list_tiles=True, **LIST_FRIENDLY)
    assert A.n_ltiles > 0
    assert A.ltile_nentries.max() <= LIST_TILE_PACK and A.ltile_ncols.max() <= LIST_TILE_COLS
    # one gathered row per listed column: stretch counts ltile_ncols
    st = A.stats()
    assert st["x_rows_gathered"] == int(A.tile_ncols.sum() + A.etile_nentries.sum() + A.ltile_ncols.sum())
    assert st["nnz_in_list_tiles"] == int(A.ltile_nentries.sum())
    reference = gcn_normalized(adj, reorder="community")
    assert abs(A.decode() - reference.decode()).max() == 0
    np.testing.assert_allclose(spmm_reference(A, np.eye(adj.shape[1])[:, :8]),
                               reference.decode()[:, :8].toarray(), rtol=0, atol=1e-15)


def test_nbytes_counts_list_tiles_and_band_plane():
    n = 70_000  # M > 65,536: one band bit per column-id slot
    rows = np.repeat(np.arange(128), 3)
    cols = (np.arange(rows.size) % 100) * 700 + 5  # 100 columns of 3-4 entries, ids up to 69,305
    A_in = sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(128, n))
    A = encode(A_in, list_tiles=True, **LIST_FRIENDLY)
    assert A.n_ltiles == -(-rows.size // LIST_TILE_PACK) and column_band_bits(n) == 1
    with_ids = A.nbytes()
    L = A.n_ltiles
    # a list tile's columns are listed in column order, here the ids' order, so each tile's bands take one start
    # byte (dste.format.matrix.band_starts) instead of a 64-bit plane
    assert (np.diff(A.ltile_cols // 65536, axis=1) >= 0).all()
    list_ids = L * LIST_TILE_COLS * 2 + L * 1 + A.ltile_colslot.nbytes
    etile_ids = A.n_etiles * 128 * 2 + A.n_etiles * 1
    assert with_ids["device"]["column_ids"] == list_ids + etile_ids
    assert with_ids["host_only"]["ltile_cols"] == A.ltile_cols.nbytes
    # LIST_TILE_DEVICE_BYTES (the split's price) = every device byte of a list tile without values
    per_tile = (A.ltile_cols.shape[1] * 2 + A.ltile_colslot.nbytes // L + A.ltile_rows.nbytes // L
                + A.ltile_keep_bits.nbytes // L + 4 + 1 + 4 + 4 + 4)
    assert per_tile == LIST_TILE_DEVICE_BYTES
    assert abs(A.decode() - A_in).max() == 0


def test_with_mask_on_list_tiles():
    adj, _ = community_graph(1500, seed=9)
    A = gcn_normalized(adj, reorder="community", list_tiles=True, **LIST_FRIENDLY)
    assert A.n_ltiles > 0
    rng = np.random.default_rng(1)
    dense_mask = rng.random(adj.shape) < 0.5
    masked = A.with_mask(sp.csr_matrix(dense_mask))
    full = A.decode(effective=False).toarray()
    np.testing.assert_array_equal(masked.decode().toarray(), np.where(dense_mask, full, 0))
    assert 0 < masked.nnz_kept < A.nnz_stored
    by_bits = A.with_mask((masked.keep_bits, masked.etile_keep_bits, masked.ltile_keep_bits))
    np.testing.assert_array_equal(by_bits.ltile_keep_bits, masked.ltile_keep_bits)
    with pytest.raises(DSTEFormatError, match="list tiles"):
        A.with_mask((masked.keep_bits, masked.etile_keep_bits))
    # masked-out entries can be re-admitted (the nz bits are kept), and empty list tiles compact away
    assert A.with_mask(np.ones(adj.shape, bool)).nnz_kept == A.nnz_stored
    none_kept = A.with_mask(np.zeros(adj.shape, bool))
    compacted = none_kept.compact()
    assert compacted.n_ltiles == 0 and compacted.nnz_kept == 0
    partial = masked.compact()
    assert abs(partial.decode() - masked.decode()).max() == 0


def test_update_windows_keeps_list_tiles_of_other_windows():
    adj, _ = community_graph(1500, seed=11)
    A = gcn_normalized(adj, reorder="community", list_tiles=True, **LIST_FRIENDLY)
    new = adj.tolil()
    changed = [3, 700]
    for r in changed:
        new[r, (r * 13) % adj.shape[0]] = 1
        new[(r * 13) % adj.shape[0], r] = 1
    new = new.tocsr()
    from dste.format import gcn_update

    updated = gcn_update(A, new, changed_rows=np.array(changed + [(r * 13) % adj.shape[0] for r in changed]))
    full = gcn_normalized(new, row_perm=A.row_perm, col_perm=A.col_perm, list_tiles=True, **LIST_FRIENDLY)
    assert updated.n_ltiles > 0
    assert abs(updated.decode() - full.decode()).max() < 1e-7


def test_round_trip_and_version_one_files(tmp_path):
    adj, _ = community_graph(800, seed=2)
    A = gcn_normalized(adj, reorder="community", list_tiles=True, **LIST_FRIENDLY)
    assert A.n_ltiles > 0
    path = tmp_path / "m.npz"
    A.save(path)
    B = load(path)
    for name in LIST_ARRAY_FIELDS:
        assert np.array_equal(getattr(A, name), getattr(B, name)) and getattr(A, name).dtype == getattr(B, name).dtype
    assert B.encode_policy["list_tiles"] is True
    # a version-1 file (written before the list tiles) is read with none
    plain = gcn_normalized(adj, reorder="community")
    old = tmp_path / "v1.npz"
    plain.save(old)
    with np.load(old, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    meta = json.loads(bytes(arrays.pop("__meta__")).decode())
    for name in LIST_ARRAY_FIELDS:
        arrays.pop(name)
        meta["fields"].pop(name)
    meta["format_version"] = 1
    meta["encode_policy"].pop("list_tiles")
    meta["sha256"] = _checksum(arrays)
    meta["header_sha256"] = _header_checksum(meta)
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with open(old, "wb") as handle:
        np.savez(handle, **arrays)
    read = load(old)
    assert read.n_ltiles == 0 and abs(read.decode() - plain.decode()).max() == 0


def _bad(A, **changes):
    with pytest.raises(DSTEFormatError) as info:
        A.replace(**changes).validate(deep=True)
    return str(info.value)


def test_validation_names_the_list_field():
    A_in = _window_of_shared_columns(singles=0)
    A_in.resize((128, 50))  # empty columns 40..49: valid ids no entry uses
    A = encode(A_in, list_tiles=True)
    colslot = A.ltile_colslot.copy()
    colslot[0, 0] = 45  # past ltile_ncols (40)
    assert "ltile_colslot" in _bad(A, ltile_colslot=colslot)
    cols = A.ltile_cols.copy()
    cols[0, 1] = cols[0, 0]
    assert "same column twice" in _bad(A, ltile_cols=cols)
    ncols = A.ltile_ncols.copy()
    ncols[0] = 41
    cols = A.ltile_cols.copy()
    cols[0, 40] = 41
    assert "used by one of its entries" in _bad(A, ltile_ncols=ncols, ltile_cols=cols)
    keep = A.ltile_keep_bits.copy()
    keep[0, 3] = 1  # entry 96 < 120 exists; entry past nentries: set bit of word 3 beyond 120
    keep[0, 3] |= np.uint32(1 << 31)
    assert "subset" in _bad(A, ltile_keep_bits=keep)
    assert "all together" in str(pytest.raises(DSTEFormatError, A.replace, ltile_rows=None).value)
    kind = A.ltile_kind.copy()
    kind[0] = TileKind.INT8
    assert "ltile_slot" in _bad(A, ltile_kind=kind)


def test_policy_refuses_list_tiles_without_the_cost_split():
    with pytest.raises(DSTEFormatError, match="list_tiles"):
        encode(_window_of_shared_columns(), list_tiles=True, bitmap_split="count")
    with pytest.raises(DSTEFormatError, match="list_tiles"):
        encode(_window_of_shared_columns(), list_tiles="yes")


def test_two_list_tiles_of_a_window_are_priced_one_gather():
    # 84 columns of 3 entries: two list tiles (127 + 125 entries). The spmm_hybrid kernel gathers both tiles'
    # listed rows in one transfer, so at the default prices the pair costs 2 x 417 + 29,900 + 84 x 136 = 42,158
    # against one bitmap tile's 2,317 + 29,900 + 84 x 136 = 43,641 (with a transfer per list tile: 72,058)
    A_in = _window_of_shared_columns(columns=84, per_column=3, singles=0)
    A = encode(A_in, list_tiles=True)
    assert (A.n_tiles, A.n_ltiles, A.n_etiles) == (0, 2, 0)
    assert abs(A.decode() - A_in).max() == 0
