"""The bitmap-column / entry-tile split: cost optimality per window against a brute force, edge cases, policy."""

import numpy as np
import pytest
import scipy.sparse as sp

from dste.format import DSTEFormatError, EncodePolicy, encode, gcn_normalized
from dste.format.constants import COLUMN_BAND_ROWS, COLUMN_ID_BYTES
from tests.format.graphs import community_graph
from tests.format.value_checks import check_int8_tiles_against_input


def _tile_device_bytes(E, prefix):
    """Device bytes of one tile of a layout, from the arrays' own shapes and dtypes (values included); column
    ids count as the device's 16-bit offsets (these graphs have fewer than 65,536 columns: no band plane)."""
    names = {
        "tile": ("tile_window", "tile_kind", "tile_ncols", "tile_slot", "tile_cols", "keep_bits"),
        "etile": ("etile_window", "etile_kind", "etile_nentries", "etile_slot", "etile_cols", "etile_rows", "etile_keep_bits"),
    }[prefix]
    assert E.shape[1] < COLUMN_BAND_ROWS

    def itemsize(n):
        return COLUMN_ID_BYTES if n.endswith("cols") else getattr(E, n).itemsize

    per_tile = sum(itemsize(n) * int(np.prod(getattr(E, n).shape[1:])) for n in names)
    values = {"tile": ("int8_values", "int8_scale", "fp16_values"), "etile": ("etile_int8_values", "etile_int8_scale", "etile_fp16_values")}[prefix]
    count = getattr(E, f"{prefix}_window").size
    value_bytes = sum(getattr(E, n).nbytes for n in values)
    assert value_bytes % max(count, 1) == 0, "every tile of this matrix must carry the same value bytes"
    return per_tile + value_bytes // max(count, 1)


def _window_column_counts(E, structure, w):
    """{column id: entries} of window w, counted in the input matrix (independent of the tiles)."""
    N = E.shape[0]
    rows = E.window_rows[w][E.window_rows[w] < N]
    counts = np.asarray((structure[rows] != 0).sum(axis=0)).ravel()
    cols = np.flatnonzero(counts)
    return dict(zip(cols.tolist(), counts[cols].tolist()))


def _check_cost_optimal(E, structure, x_row, transfer, floor):
    bitmap_cost = _tile_device_bytes(E, "tile") + transfer
    entry_cost = _tile_device_bytes(E, "etile") + transfer
    for w in range(E.n_windows):
        counts = _window_column_counts(E, structure, w)
        tiles = range(E.window_ptr[w], E.window_ptr[w + 1])
        etiles = range(E.ewindow_ptr[w], E.ewindow_ptr[w + 1])
        bitmap_cols = [int(c) for t in tiles for c in E.tile_cols[t, : E.tile_ncols[t]]]
        entry_cols = {int(c) for t in etiles for c in E.etile_cols[t, : E.etile_nentries[t]]}
        assert len(bitmap_cols) == len(set(bitmap_cols)) and not entry_cols & set(bitmap_cols)
        for t in tiles:  # columns ascending inside a tile (gather addresses in order)
            positions = E.tile_cols[t, : E.tile_ncols[t]]
            if E.col_perm is not None:
                positions = np.argsort(E.col_perm)[positions]
            assert (np.diff(positions) > 0).all()
        n = sum(counts.values())
        chosen = sorted((counts[c] for c in bitmap_cols), reverse=True)
        others = [v for c, v in counts.items() if c not in set(bitmap_cols) and v >= floor]
        assert all(v >= floor for v in chosen)
        if chosen and others:
            assert chosen[-1] >= max(others), "bitmap columns must be the densest eligible ones"
        eligible = sorted([v for v in counts.values() if v >= floor], reverse=True)
        absorbed = np.concatenate([[0], np.cumsum(eligible)]).astype(np.int64)
        k = np.arange(len(eligible) + 1)
        rest = n - absorbed
        brute = -(-k // 128) * bitmap_cost + -(-rest // 128) * entry_cost + x_row * (k + rest)
        gathered = sum(E.tile_ncols[t] for t in tiles) + sum(E.etile_nentries[t] for t in etiles)
        encoded = len(tiles) * bitmap_cost + len(etiles) * entry_cost + x_row * gathered
        assert encoded == brute.min(), f"window {w}: encoded cost {encoded} > optimum {brute.min()}"


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"bitmap_min_entries": 3},
        {"x_row_bytes": 0, "gather_transfer_bytes": 0},
        {"x_row_bytes": 512, "gather_transfer_bytes": 1000},
    ],
)
def test_gcn_split_is_cost_optimal_per_window(fields):
    adj, _ = community_graph(2500, p_intra=0.8, seed=11)
    G = gcn_normalized(adj, **fields)
    G.validate(deep=True)
    structure = (adj != 0) + sp.eye(2500, format="csr")
    policy = EncodePolicy(**fields)
    _check_cost_optimal(G, structure.tocsr(), policy.x_row_bytes, policy.gather_transfer_bytes, G.encode_policy["bitmap_min_entries"])


@pytest.mark.parametrize("list_tiles", [False, True])
def test_split_in_blocks_of_windows_is_the_split_in_one(monkeypatch, list_tiles):
    """The cost split works on blocks of whole windows (``COST_SPLIT_BLOCK_GROUPS`` groups, for its memory): blocks
    of a few windows (and of one window, when a window alone has more groups than a block) give the same tiles as
    one block, and the brute force above still holds."""
    import dste.format.encoder as encoder

    adj, _ = community_graph(2500, p_intra=0.8, seed=11)
    whole = gcn_normalized(adj, list_tiles=list_tiles)
    for block in (5000, 300):
        monkeypatch.setattr(encoder, "COST_SPLIT_BLOCK_GROUPS", block)
        blocked = gcn_normalized(adj, list_tiles=list_tiles)
        for name in ("tile_window", "tile_cols", "tile_ncols", "keep_bits", "etile_window", "etile_cols", "etile_rows",
                     "ltile_window", "ltile_cols", "ltile_rows"):
            np.testing.assert_array_equal(getattr(blocked, name), getattr(whole, name), err_msg=f"{name}, block {block}")
    if not list_tiles:
        structure = ((adj != 0) + sp.eye(2500, format="csr")).tocsr()
        policy = EncodePolicy()
        _check_cost_optimal(blocked, structure, policy.x_row_bytes, policy.gather_transfer_bytes,
                            blocked.encode_policy["bitmap_min_entries"])


def test_valued_split_counts_value_bytes():
    adj, _ = community_graph(1200, p_intra=0.9, seed=12)
    weighted = adj.tocsr().copy()
    weighted.data = np.random.default_rng(0).standard_normal(weighted.nnz)
    E = encode(weighted, kinds="int8", reorder="community")
    assert E.encode_policy["value_bytes"] == 1 and E.encode_policy["bitmap_min_entries"] == 4
    _check_cost_optimal(E, weighted, 136, 29_900, 4)
    assert check_int8_tiles_against_input(E, weighted) == E.n_tiles + E.n_etiles + E.n_ltiles  # INT8: half a step


def _one_window(col_counts):
    """A 128-row binary matrix whose column j holds col_counts[j] entries (rows 0..count-1)."""
    rows = np.concatenate([np.arange(c) for c in col_counts])
    cols = np.repeat(np.arange(len(col_counts)), col_counts)
    return sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(128, len(col_counts)))


def test_partly_filled_last_bitmap_tile_is_demoted():
    # 129 columns of 2: a second bitmap tile for one column costs a transfer + 2.5 KB; its 2
    # entries fit one entry tile for about the same, and the X rows gathered barely change
    A = _one_window([2] * 129)
    E = encode(A)
    assert (E.n_tiles, E.n_etiles) == (1, 1)
    assert E.tile_ncols.tolist() == [128] and E.etile_nentries.tolist() == [2]
    old = encode(A, bitmap_split="count")
    assert (old.n_tiles, old.n_etiles) == (2, 0) and old.tile_ncols.tolist() == [128, 1]
    np.testing.assert_array_equal(E.to_dense(), A.toarray())


def test_entry_slack_filled_by_single_entry_columns():
    # 100 columns of 3 and 28 of 1: the 28 fill the bitmap tile's free slots, saving an entry tile
    A = _one_window([3] * 100 + [1] * 28)
    E = encode(A)
    assert (E.n_tiles, E.n_etiles) == (1, 0) and E.tile_ncols.tolist() == [128]
    np.testing.assert_array_equal(E.to_dense(), A.toarray())
    floored = encode(A, bitmap_min_entries=2)  # the floor keeps single-entry columns out of bitmaps
    assert (floored.n_tiles, floored.n_etiles) == (1, 1) and floored.etile_nentries.tolist() == [28]


def test_densest_columns_fill_the_bitmap_tiles():
    # 130 columns: 128 of 1 entry (in column order first) and 2 of 30; the two dense ones must be bitmap columns
    counts = [1] * 128 + [30, 30]
    A = _one_window(counts)
    E = encode(A)
    bitmap_cols = set(E.tile_cols[0, : E.tile_ncols[0]].tolist())
    assert {128, 129} <= bitmap_cols
    assert E.n_tiles == 1 and E.n_etiles <= 1
    np.testing.assert_array_equal(E.to_dense(), A.toarray())


def test_cost_split_beats_count_split_on_a_community_graph():
    adj, _ = community_graph(6000, p_intra=0.9, seed=13)
    new = gcn_normalized(adj).stats()
    old = gcn_normalized(adj, bitmap_split="count", bitmap_min_entries=2).stats()
    assert new["nnz_stored"] == old["nnz_stored"]
    assert new["n_tiles"] + new["n_entry_tiles"] < old["n_tiles"] + old["n_entry_tiles"]
    assert new["bytes_device"] <= old["bytes_device"]


def test_split_policy_fields_and_metadata():
    with pytest.raises(DSTEFormatError, match="bitmap_split"):
        EncodePolicy(bitmap_split="greedy")
    for name in ("x_row_bytes", "gather_transfer_bytes"):
        with pytest.raises(DSTEFormatError, match=name):
            EncodePolicy(**{name: -1})
        with pytest.raises(DSTEFormatError, match=name):
            EncodePolicy(**{name: 1.5})
    with pytest.raises(DSTEFormatError, match="value_bytes"):
        EncodePolicy(value_bytes=4)
    policy = EncodePolicy(bitmap_split="count", x_row_bytes=264, gather_transfer_bytes=22_100, value_bytes=2)
    again = EncodePolicy.from_metadata(policy.metadata())
    assert again.metadata() == policy.metadata()
    legacy = policy.metadata()
    del legacy["bitmap_split"], legacy["x_row_bytes"], legacy["gather_transfer_bytes"], legacy["value_bytes"]
    assert EncodePolicy.from_metadata(legacy).bitmap_split == "count"  # records from before the cost split


def test_resolved_split_recorded():
    adj, _ = community_graph(600, seed=14)
    assert gcn_normalized(adj).encode_policy["bitmap_min_entries"] == 1
    assert gcn_normalized(adj).encode_policy["value_bytes"] == 0
    assert gcn_normalized(adj, bitmap_split="count").encode_policy["bitmap_min_entries"] == 2
    assert encode(adj, kinds="fp16").encode_policy["value_bytes"] == 2
