"""Column bands stored as band starts: entry tiles in band order past 65,536 X rows, and the form's round trip.

Past one band of ``COLUMN_BAND_ROWS`` X rows a column id travels as a 16-bit offset plus its band. The encoder
orders each window's entry-tile entries by band, so a tile's bands are fixed by where each band starts
(``band_starts``: ``bands - 1`` bytes per tile) instead of a plane of bits per slot; layouts out of band order
keep the plane.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from dste.format import EncodePolicy, encode
from dste.format.constants import COLUMN_BAND_ROWS
from dste.format.matrix import band_starts, bands_from_starts, column_band_bits, layout_column_id_bytes
from tests.format.value_checks import assert_fp16_roundtrip

BAND = COLUMN_BAND_ROWS


def sparse_wide(n_rows=300, n_cols=4 * BAND + 30_000, per_row=3, seed=0):
    """Few entries per row at uniformly random columns over all five bands: entry tiles only."""
    rng = np.random.default_rng(seed)
    rows = np.repeat(np.arange(n_rows), per_row)
    cols = rng.integers(0, n_cols, rows.size)
    A = sp.csr_matrix((rng.standard_normal(rows.size), (rows, cols)), shape=(n_rows, n_cols))
    A.sum_duplicates()
    return A


@pytest.fixture(scope="module")
def shuffled():
    A = sparse_wide()
    col_perm = np.random.default_rng(1).permutation(A.shape[1])
    return A, encode(A, EncodePolicy(kinds="fp16"), col_perm=col_perm,
                     row_perm=np.random.default_rng(2).permutation(A.shape[0]))


def test_entry_tiles_hold_their_ids_in_band_order_and_decode_to_the_input(shuffled):
    A, E = shuffled
    assert E.n_etiles and not E.n_tiles
    used = np.arange(128) < E.etile_nentries[:, None]
    band = E.etile_cols // BAND
    assert not ((np.diff(band, axis=1) < 0) & used[:, 1:]).any()
    assert len(np.unique(band[used])) == 5
    assert_fp16_roundtrip(E, A)  # FP16 values; the structure exactly


def test_band_starts_round_trip_against_a_count_per_tile(shuffled):
    _, E = shuffled
    starts = band_starts(E.etile_cols, E.etile_nentries, E.shape[1])
    assert starts.shape == (E.n_etiles, 4) and starts.dtype == np.uint8
    for t in range(E.n_etiles):  # starts[t, b - 1]: used slots whose band is below b
        ids = E.etile_cols[t, : E.etile_nentries[t]]
        assert [int((ids // BAND < b).sum()) for b in range(1, 5)] == starts[t].tolist()
    used = np.arange(128) < E.etile_nentries[:, None]
    assert np.array_equal(bands_from_starts(starts, 128)[used], (E.etile_cols // BAND)[used])


def test_device_bytes_count_the_starts_not_the_plane(shuffled):
    _, E = shuffled
    M = E.shape[1]
    assert column_band_bits(M) == 3
    offsets = 2 * E.etile_cols.size
    assert E.nbytes()["device"]["column_ids"] == offsets + 4 * E.n_etiles  # against offsets + 48 B per tile
    assert layout_column_id_bytes(E.etile_cols, E.etile_nentries, M) < offsets + E.etile_cols.size * 3 // 8


def test_a_tile_out_of_band_order_keeps_the_plane():
    cols = np.full((1, 128), 2 * BAND, dtype=np.int32)  # padding id M
    cols[0, :3] = [5, BAND + 3, 2]  # bands 0, 1, 0: out of order
    assert band_starts(cols, np.array([3]), 2 * BAND) is None
    assert layout_column_id_bytes(cols, np.array([3]), 2 * BAND) == 128 * 2 + 16  # one plane bit per slot
    # padding past the used slots does not count: with two used slots the tile is in order, band 1 from slot 1
    assert band_starts(cols, np.array([2]), 2 * BAND).tolist() == [[1]]
    assert layout_column_id_bytes(cols, np.array([2]), 2 * BAND) == 128 * 2 + 1


def test_one_band_needs_no_band_and_many_bands_keep_the_smaller_plane():
    cols = np.arange(128, dtype=np.int32)[None, :]
    assert band_starts(cols, np.array([128]), BAND) is None
    assert layout_column_id_bytes(cols, np.array([128]), BAND) == 256
    many = 200 * BAND  # 200 bands: 199 start bytes per tile against a plane of 8 bits x 128 slots = 128 bytes
    assert band_starts(cols * BAND, np.array([128]), many) is None
    assert layout_column_id_bytes(cols * BAND, np.array([128]), many) == 256 + 128


def test_narrow_matrices_keep_entry_tiles_in_column_order():
    """At most one band, the encoder does not reorder: a window's entries stay by column position, then slot."""
    A = sparse_wide(n_cols=BAND)
    E = encode(A, EncodePolicy(kinds="fp16"))
    for t in range(E.n_etiles):
        ids = E.etile_cols[t, : E.etile_nentries[t]]
        assert (np.diff(ids) >= 0).all()


def test_past_one_band_of_rows_each_window_holds_its_rows_in_original_order():
    """The encoder sorts each 128-row window's rows by original id when N > 65,536 (the window's set of rows is the
    given order's): the slot map's bands then take band starts, and the matrix is the same."""
    n_rows = BAND + 3000
    rng = np.random.default_rng(4)
    rows = rng.integers(0, n_rows, 4000)
    cols = rng.integers(0, 200, 4000)
    A = sp.csr_matrix((rng.standard_normal(4000), (rows, cols)), shape=(n_rows, 200))
    A.sum_duplicates()
    given = rng.permutation(n_rows)
    E = encode(A, EncodePolicy(kinds="fp16"), row_perm=given)
    full = n_rows - n_rows % 128
    assert np.array_equal(np.sort(E.row_perm[:full].reshape(-1, 128), axis=1), np.sort(given[:full].reshape(-1, 128), axis=1))
    assert np.array_equal(np.sort(E.row_perm[full:]), np.sort(given[full:]))
    assert (np.diff(E.row_perm[:full].reshape(-1, 128), axis=1) > 0).all()
    assert_fp16_roundtrip(E, A)
    used = np.count_nonzero(E.window_rows < n_rows, axis=1)
    assert band_starts(E.window_rows, used, n_rows) is not None
    slot_map = 2 * E.window_rows.size + E.window_rows.shape[0] * 1  # 2 bands: one start byte per window
    assert E.nbytes()["device"]["row_ids"] == E.etile_rows.nbytes + E.ltile_rows.nbytes + slot_map
    narrow = encode(A[:BAND], EncodePolicy(kinds="fp16"), row_perm=given[given < BAND])
    assert np.array_equal(narrow.row_perm, given[given < BAND])  # at most one band: the order as given
